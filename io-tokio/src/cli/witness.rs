//! `lifeboat witness init` and `lifeboat config check --connect`: the witness from the
//! operator's side.

use super::exit;
use crate::config::SiteFile;
use crate::witness::{self, InitOutcome};
use std::path::Path;
use std::time::Duration;

/// `lifeboat witness init -c site.toml`.
pub async fn init(config: &Path) -> i32 {
    let file = match SiteFile::load(config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return exit::USAGE;
        }
    };
    match witness::init(&file).await {
        Ok(InitOutcome::Created) => {
            println!(
                "created the keys of this deployment ({}) under {} in etcd: epoch 1, held by {}",
                file.engine.sites.join(", "),
                file.witness.prefix(),
                file.engine.initial_primary
            );
            exit::OK
        }
        Ok(InitOutcome::AlreadyThis) => {
            println!(
                "the keys of this deployment are already under {} in etcd: nothing to do",
                file.witness.prefix()
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("witness init: {e:#}");
            exit::FAILED
        }
    }
}

/// `lifeboat config check --connect FILE` (after the file checked): reach the witness (every
/// etcd endpoint and this deployment's keys, or the arbiter) and the other site. The exit code
/// is the witness's first failure (`FAILED`: the prefix is not this deployment's;
/// `UNREACHABLE`: something does not answer), else the other site's.
pub async fn connect(path: &Path) -> i32 {
    let Ok(file) = SiteFile::load(path) else {
        // An arbiter file: the arbiter is the witness itself, and the sites dial it.
        println!("an arbiter file: nothing to connect to (the sites dial the arbiter)");
        return exit::OK;
    };
    let witness = if file.witness.is_etcd() {
        connect_etcd(&file, path).await
    } else if let Some(addr) = &file.arbiter {
        reach("arbiter", addr).await
    } else {
        println!("no witness configured (engine.arbiter = false): nothing to connect to");
        exit::OK
    };
    let mut other_site = reach("the other site's transport (peer)", &file.peer).await;
    if let Some(http) = &file.peer_http {
        other_site = other_site.max(reach("the other site's http (peer_http)", http).await);
    }
    if witness != exit::OK {
        witness
    } else {
        other_site
    }
}

/// A TCP connection to `addr` within [`REACH_WITHIN`]: whether something listens there (the
/// TLS and the party behind it are the transport's to check when the agents run).
async fn reach(what: &str, addr: &str) -> i32 {
    let reached = tokio::time::timeout(REACH_WITHIN, tokio::net::TcpStream::connect(addr)).await;
    match reached {
        Ok(Ok(_)) => {
            println!("{what} {addr}: reachable (TCP)");
            exit::OK
        }
        Ok(Err(e)) => {
            println!("{what} {addr}: NOT reachable: {e}");
            exit::UNREACHABLE
        }
        Err(_) => {
            println!(
                "{what} {addr}: NOT reachable: no answer within {} s",
                REACH_WITHIN.as_secs()
            );
            exit::UNREACHABLE
        }
    }
}

/// How long `config check --connect` waits for a TCP connection.
const REACH_WITHIN: Duration = Duration::from_secs(3);

/// Every etcd endpoint's status (healthy, the leader), then this deployment's key.
async fn connect_etcd(file: &SiteFile, path: &Path) -> i32 {
    let prefix = file.witness.prefix();
    let health = match witness::endpoint_health(file).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("[witness]: {e:#}");
            return exit::USAGE;
        }
    };
    let healthy = health.iter().filter(|(_, r)| r.is_ok()).count();
    for (endpoint, r) in &health {
        match r {
            Ok(true) => println!("etcd {endpoint}: healthy (leader)"),
            Ok(false) => println!("etcd {endpoint}: healthy"),
            Err(e) => println!("etcd {endpoint}: NOT healthy: {e}"),
        }
    }
    let quorum = health.len() / 2 + 1;
    if healthy < quorum {
        println!(
            "only {healthy} of {} endpoints answer: etcd may have lost its quorum; no failover \
             can be decided",
            health.len()
        );
        return exit::UNREACHABLE;
    }
    let want = lifeboat_core::etcd::deployment_value(&file.engine);
    match witness::deployment(file).await {
        Ok(Some(found)) if found == want => {
            println!(
                "{prefix}: initialised for this deployment ({})",
                text(&want)
            );
            exit::OK
        }
        Ok(Some(found)) => {
            println!(
                "{prefix}: holds another deployment's keys ({}; this one is {}): choose another \
                 [witness] prefix",
                text(&found),
                text(&want)
            );
            exit::FAILED
        }
        Ok(None) => {
            println!(
                "{prefix}: not initialised (no deployment key): run `lifeboat witness init -c {}` \
                 once, from either site",
                path.display()
            );
            exit::FAILED
        }
        Err(e) => {
            println!("{prefix}: could not be read: {e:#}");
            exit::UNREACHABLE
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
