//! Operator commands: they reach the local agent over its HTTP address (`http` in site.toml, or
//! `--agent host:port`), and `status` also asks the other site's agent (`peer_http`).

mod table;
pub mod troubleshoot;
pub mod verify;

use crate::config::SiteFile;
use crate::http;
use crate::status::doc::{KindName, ReportBody, ReportDoc, StatusDoc};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use table::render;

/// Exit codes of the `lifeboat` binary (documented in `--help` and the README).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// The request was refused or did not complete, a verification failed, the demo failed.
    pub const FAILED: i32 = 1;
    /// Bad usage or an invalid configuration file.
    pub const USAGE: i32 = 2;
    /// The agent could not be reached.
    pub const UNREACHABLE: i32 = 3;
    /// The agent or arbiter stopped on an error (journal, disk, bind).
    pub const RUNTIME: i32 = 4;
}

/// Where the local agent answers.
#[derive(Clone, Debug, clap::Args)]
pub struct Target {
    /// The local agent's site.toml (its `http` address is used).
    #[arg(long, short = 'c', conflicts_with = "agent")]
    pub config: Option<PathBuf>,
    /// The local agent's HTTP address (host:port); default $LIFEBOAT_AGENT or 127.0.0.1:7480.
    #[arg(long)]
    pub agent: Option<String>,
}

impl Target {
    pub fn addr(&self) -> Result<String, (i32, String)> {
        if let Some(a) = &self.agent {
            return Ok(a.clone());
        }
        if let Some(p) = &self.config {
            return SiteFile::load(p)
                .map(|f| f.http)
                .map_err(|e| (exit::USAGE, e.to_string()));
        }
        Ok(std::env::var("LIFEBOAT_AGENT").unwrap_or_else(|_| "127.0.0.1:7480".into()))
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn get_status(addr: &str) -> Result<StatusDoc, String> {
    let (code, body) =
        http::request("GET", &format!("http://{addr}/status"), None, TIMEOUT).await?;
    if code != 200 {
        return Err(format!("{addr} answered HTTP {code}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{addr}: not a status document: {e}"))
}

/// Status of the local site and, when it names one, the other site.
pub async fn all_status(addr: &str) -> Result<Vec<(String, Result<StatusDoc, String>)>, String> {
    let local = get_status(addr).await?;
    let mut out = vec![(addr.to_string(), Ok(local.clone()))];
    if let Some(peer) = &local.peer_http {
        out.push((peer.clone(), get_status(peer).await));
    }
    Ok(out)
}

pub async fn status(target: &Target, as_json: bool) -> i32 {
    let addr = match target.addr() {
        Ok(a) => a,
        Err((code, msg)) => {
            eprintln!("lifeboat status: {msg}");
            return code;
        }
    };
    match all_status(&addr).await {
        Ok(sites) => {
            if as_json {
                let docs: Vec<serde_json::Value> = sites
                    .iter()
                    .map(|(a, r)| match r {
                        Ok(d) => serde_json::to_value(d).unwrap_or_default(),
                        Err(e) => serde_json::json!({"http": a, "error": e}),
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "sites": docs }))
                        .unwrap_or_default()
                );
            } else {
                print!("{}", render(&sites));
            }
            exit::OK
        }
        Err(e) => {
            eprintln!(
                "lifeboat status: cannot reach the agent at {addr}: {e}\n\
                 is `lifeboat agent` running? pass --config site.toml or --agent host:port"
            );
            exit::UNREACHABLE
        }
    }
}

/// The reports of `kind` the sites hold, as (site, seq, report).
fn reports_of(
    sites: &[(String, Result<StatusDoc, String>)],
    kind: &str,
) -> Vec<(String, u64, ReportDoc)> {
    let mut out = Vec::new();
    for d in sites.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        for r in d.reports.iter().filter(|r| r.body.kind() == kind) {
            out.push((d.site.clone(), r.seq, r.clone()));
        }
    }
    out
}

/// While a command waits: the procedure step and the transfers of every site, on stderr, each
/// line printed again only when it changed (a large reseed copy shows its bar filling).
fn show_progress(
    sites: &[(String, Result<StatusDoc, String>)],
    before: Vec<String>,
) -> Vec<String> {
    let mut now = Vec::new();
    for d in sites.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        if let Some(p) = &d.procedure {
            now.push(format!("{}: {} step {}", d.site, p.kind, p.step));
        }
        now.extend(table::transfer_lines(&d.site, d));
    }
    for line in &now {
        if !before.contains(line) {
            eprintln!("  {line}");
        }
    }
    now
}

/// Send an operator request and, for role changes, wait for the report.
pub async fn operator(target: &Target, name: &str, query: &str, wait: u64) -> i32 {
    let addr = match target.addr() {
        Ok(a) => a,
        Err((code, msg)) => {
            eprintln!("lifeboat {name}: {msg}");
            return code;
        }
    };
    let report_kind = match name {
        "switchover" | "failback" => Some("switchover"),
        "failover" | "confirm" => Some("failover"),
        "drill" => Some("drill"),
        _ => None,
    };
    let reseed_db = query.strip_prefix("?db=").filter(|_| name == "reseed");
    let (before, full_before) = match all_status(&addr).await {
        Ok(s) => (
            report_kind.map_or_else(Vec::new, |k| reports_of(&s, k)),
            reseed_db.and_then(|db| last_full_restore(&s, db)),
        ),
        Err(e) => {
            eprintln!("lifeboat {name}: cannot reach the agent at {addr}: {e}");
            return exit::UNREACHABLE;
        }
    };
    let url = format!("http://{addr}/operator/{name}{query}");
    match http::request("POST", &url, None, TIMEOUT).await {
        Ok((202, _)) => println!("{name}: accepted by the agent at {addr}"),
        Ok((code, body)) => {
            eprintln!(
                "lifeboat {name}: refused (HTTP {code}): {}",
                String::from_utf8_lossy(&body).trim()
            );
            return exit::FAILED;
        }
        Err(e) => {
            eprintln!("lifeboat {name}: {e}");
            return exit::UNREACHABLE;
        }
    }
    if wait == 0 {
        return exit::OK;
    }
    let Some(kind) = report_kind else {
        return match reseed_db {
            Some(db) => wait_reseed(&addr, db, wait, full_before).await,
            None => exit::OK,
        };
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut shown = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(sites) = all_status(&addr).await {
            shown = show_progress(&sites, shown);
            let new = reports_of(&sites, kind)
                .into_iter()
                .find(|(site, seq, _)| !before.iter().any(|(s, q, _)| s == site && q == seq));
            if let Some((_, _, r)) = new {
                println!(
                    "{name}: done: {}",
                    serde_json::to_string(&r).unwrap_or_default()
                );
                let ok = !matches!(r.body, ReportBody::Drill { ok: false, .. });
                return if ok { exit::OK } else { exit::FAILED };
            }
        }
    }
    eprintln!(
        "lifeboat {name}: no {kind} report within {wait} s; the request may have been refused \
         (see `lifeboat status` and the agent's log: `recent_decisions`)"
    );
    exit::FAILED
}

/// The last full backup restored into database `db` at any site (file name and end position),
/// from the status documents.
fn last_full_restore(sites: &[(String, Result<StatusDoc, String>)], db: &str) -> Option<String> {
    sites
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter_map(|d| d.db(db)?.last_restore.as_ref())
        .find(|a| a.kind == KindName::Full)
        .map(|a| format!("{} {}", a.file, a.lsn_end))
}

/// Wait until the recovery site's database `db` went through its reseed (the new full backup
/// received, restored and verified), showing the copy's progress. Done when the reseed was
/// seen under way and is over, or when a full backup other than `full_before` is the last
/// restore and no reseed is under way (a quick reseed can finish before the first look).
async fn wait_reseed(addr: &str, db: &str, wait: u64, full_before: Option<String>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut shown = Vec::new();
    let mut seen = false;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(sites) = all_status(addr).await else {
            continue;
        };
        shown = show_progress(&sites, shown);
        let entry = sites
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .filter_map(|d| d.db(db))
            .find(|e| e.reseeding_ms.is_some());
        let restored_new_full = || {
            let now = last_full_restore(&sites, db);
            now.is_some() && now != full_before
        };
        match entry {
            Some(_) => seen = true,
            None if seen || restored_new_full() => {
                println!("reseed: done: {db} was rebuilt from a new full backup");
                return exit::OK;
            }
            None => {}
        }
    }
    eprintln!(
        "lifeboat reseed: {db} was not rebuilt within {wait} s (see `lifeboat status`; the \
         reseed goes on in the background)"
    );
    exit::FAILED
}
