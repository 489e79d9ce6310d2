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

/// `lifeboat config check --connect FILE` (after the file checked): reach the witness.
pub async fn connect(path: &Path) -> i32 {
    let Ok(file) = SiteFile::load(path) else {
        // An arbiter file: the arbiter is the witness itself.
        println!("an arbiter file: nothing to connect to");
        return exit::OK;
    };
    if !file.witness.is_etcd() {
        let Some(addr) = &file.arbiter else {
            println!("no witness configured: nothing to connect to");
            return exit::OK;
        };
        let reached = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await;
        return match reached {
            Ok(Ok(_)) => {
                println!("arbiter {addr}: reachable (TCP)");
                exit::OK
            }
            Ok(Err(e)) => {
                println!("arbiter {addr}: not reachable: {e}");
                exit::UNREACHABLE
            }
            Err(_) => {
                println!("arbiter {addr}: no answer within 3 s");
                exit::UNREACHABLE
            }
        };
    }
    let health = match witness::endpoint_health(&file).await {
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
    match witness::deployment(&file).await {
        Ok(Some(true)) => {
            println!("this deployment's keys are under {}", file.witness.prefix());
            exit::OK
        }
        Ok(Some(false)) => {
            println!(
                "{} holds another deployment's keys: choose another [witness] prefix",
                file.witness.prefix()
            );
            exit::FAILED
        }
        Ok(None) => {
            println!(
                "no keys under {} yet: run `lifeboat witness init -c {}` once",
                file.witness.prefix(),
                path.display()
            );
            exit::FAILED
        }
        Err(e) => {
            println!("reading {}: {e:#}", file.witness.prefix());
            exit::UNREACHABLE
        }
    }
}
