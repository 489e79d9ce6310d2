//! Operator commands: they reach the local agent over its HTTP address (`http` in site.toml, or
//! `--agent host:port`), and `status` also asks the other site's agent (`peer_http`).

pub mod archive;
mod table;
pub mod troubleshoot;
pub mod verify;
pub mod witness;

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

/// Where the local agent answers, and with what credentials.
#[derive(Clone, Debug, clap::Args)]
pub struct Target {
    /// The local agent's site.toml: its `http` address, and its `[tls]` files (the CA to verify
    /// the agent, this site's certificate as the operator's credential).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The agent's HTTP address (host:port), instead of site.toml's; default $LIFEBOAT_AGENT or
    /// 127.0.0.1:7480.
    #[arg(long)]
    pub agent: Option<String>,
    /// A file holding the API token (`[tls] api_token` of the agent), sent as a bearer token;
    /// default $LIFEBOAT_API_TOKEN_FILE.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// An agent to talk to: its address and a client that speaks its TLS.
#[derive(Clone)]
pub struct Agent {
    pub addr: String,
    pub client: http::Client,
}

impl Agent {
    pub fn url(&self, path: &str) -> String {
        self.client.agent_url(&self.addr, path)
    }
    /// Another agent of the same deployment (the peer site), with the same credentials.
    pub fn at(&self, addr: &str) -> Agent {
        Agent {
            addr: addr.to_string(),
            client: self.client.clone(),
        }
    }
}

impl Target {
    /// The site file, when one was named.
    pub fn file(&self) -> Result<Option<SiteFile>, (i32, String)> {
        self.config
            .as_ref()
            .map(|p| SiteFile::load(p).map_err(|e| (exit::USAGE, e.to_string())))
            .transpose()
    }

    pub fn agent(&self) -> Result<Agent, (i32, String)> {
        let file = self.file()?;
        let addr = match (&self.agent, &file) {
            (Some(a), _) => a.clone(),
            (None, Some(f)) => f.http.clone(),
            (None, None) => {
                std::env::var("LIFEBOAT_AGENT").unwrap_or_else(|_| "127.0.0.1:7480".into())
            }
        };
        Ok(Agent {
            addr,
            client: self.client(file.as_ref())?,
        })
    }

    /// A client with the site's TLS (from `--config`) and the token (from `--token-file`).
    pub fn client(&self, file: Option<&SiteFile>) -> Result<http::Client, (i32, String)> {
        let tls = match file {
            Some(f) => f
                .tls
                .load(&f.engine, lifeboat_core::Peer::Site(f.site_id()))
                .map_err(|e| {
                    (
                        exit::USAGE,
                        format!("{e} (the CLI uses the site's [tls] files: run it as a user who can read them)"),
                    )
                })?,
            None => None,
        };
        let token_file = self
            .token_file
            .clone()
            .or_else(|| std::env::var_os("LIFEBOAT_API_TOKEN_FILE").map(PathBuf::from));
        let token = token_file
            .map(|p| http::Token::load(&p).map_err(|e| (exit::USAGE, e)))
            .transpose()?;
        http::Client::agents(tls.as_deref(), token).map_err(|e| (exit::USAGE, e))
    }
}

pub const TIMEOUT: Duration = Duration::from_secs(5);

pub async fn get_status(agent: &Agent) -> Result<StatusDoc, String> {
    let addr = &agent.addr;
    let (code, body) = agent
        .client
        .request("GET", &agent.url("/status"), None, TIMEOUT)
        .await?;
    if code != 200 {
        return Err(format!("{addr} answered HTTP {code}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{addr}: not a status document: {e}"))
}

/// Status of the local site and, when it names one, the other site.
pub async fn all_status(agent: &Agent) -> Result<Vec<(String, Result<StatusDoc, String>)>, String> {
    let local = get_status(agent).await?;
    let mut out = vec![(agent.addr.clone(), Ok(local.clone()))];
    if let Some(peer) = &local.peer_http {
        out.push((peer.clone(), get_status(&agent.at(peer)).await));
    }
    Ok(out)
}

pub async fn status(target: &Target, as_json: bool) -> i32 {
    let agent = match target.agent() {
        Ok(a) => a,
        Err((code, msg)) => {
            eprintln!("lifeboat status: {msg}");
            return code;
        }
    };
    let addr = &agent.addr;
    match all_status(&agent).await {
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

/// Send an operator request (`params`: a JSON object) and, for role changes, wait for the
/// report.
pub async fn operator(target: &Target, name: &str, params: serde_json::Value, wait: u64) -> i32 {
    let agent = match target.agent() {
        Ok(a) => a,
        Err((code, msg)) => {
            eprintln!("lifeboat {name}: {msg}");
            return code;
        }
    };
    let addr = &agent.addr;
    let report_kind = match name {
        "switchover" | "failback" => Some("switchover"),
        "failover" | "confirm" => Some("failover"),
        "drill" => Some("drill"),
        _ => None,
    };
    let reseed_db = params["db"].as_str().filter(|_| name == "reseed");
    let (before, full_before) = match all_status(&agent).await {
        Ok(s) => (
            report_kind.map_or_else(Vec::new, |k| reports_of(&s, k)),
            reseed_db.and_then(|db| last_full_restore(&s, db)),
        ),
        Err(e) => {
            eprintln!("lifeboat {name}: cannot reach the agent at {addr}: {e}");
            return exit::UNREACHABLE;
        }
    };
    let url = agent.url(&format!("/operator/{name}"));
    match agent
        .client
        .request("POST", &url, Some(&params), TIMEOUT)
        .await
    {
        Ok((202, _)) => println!("{name}: accepted by the agent at {addr}"),
        Ok((code, body)) => {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let why = doc["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            eprintln!("lifeboat {name}: refused (HTTP {code}): {why}");
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
            Some(db) => wait_reseed(&agent, db, wait, full_before).await,
            None => exit::OK,
        };
    };
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut shown = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(sites) = all_status(&agent).await {
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
async fn wait_reseed(agent: &Agent, db: &str, wait: u64, full_before: Option<String>) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(wait);
    let mut shown = Vec::new();
    let mut seen = false;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(sites) = all_status(agent).await else {
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
