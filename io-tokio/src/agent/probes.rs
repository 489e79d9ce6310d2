//! Probes of the primary from this site: its service (TCP connect, HTTP status, SQL through the
//! driver, a command) and its site (the peer agent's transport port answers). The core decides
//! when to probe (`Command::Probe`); results go back as `Input::Probe`.
//!
//! [`Prober::run_all_now`] runs the same probes (and the driver's SQL probe and the arbiter's
//! transport) for an operator's `lifeboat probe`, with what each one saw; it feeds nothing to the
//! engine.

use crate::config::{ProbeConfig, SiteFile, DEFAULT_PROBE_TIMEOUT_MS};
use crate::drivers::Driver;
use crate::http;
use crate::transport::{ping, Listener, Transport, TransportConfig};
use crate::troubleshoot::probe::ProbeRun;
use lifeboat_core::{DbId, Peer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

#[derive(Clone)]
pub struct Prober {
    service: Vec<ProbeConfig>,
    peer: String,
    timeout: Duration,
    /// The control links to the peer: either one up means its agent is there.
    links: Option<(Arc<Transport>, Arc<Listener>, Peer)>,
    /// This site, and the arbiter's transport address (operator probes only).
    me: Peer,
    arbiter: Option<String>,
    /// HTTP to the peer's agent (its TLS; rebuilt when the keys are reloaded), and to anything
    /// else.
    tls: Option<Arc<crate::transport::Tls>>,
    agents: Arc<std::sync::Mutex<(u64, http::Client)>>,
    public: http::Client,
    peer_http: Option<String>,
}

impl Prober {
    pub fn new(file: &SiteFile, links: Option<(Arc<Transport>, Arc<Listener>, Peer)>) -> Prober {
        let timeout = Duration::from_millis(
            file.probes
                .timeout_ms
                .unwrap_or(DEFAULT_PROBE_TIMEOUT_MS)
                .min(file.engine.failover.probe_every_ms.max(100)),
        );
        // Default: the peer agent's /health, which answers from its driver's SQL probe.
        let tls = links
            .as_ref()
            .and_then(|(ship, _, _)| ship.config().tls.clone());
        let agents =
            http::Client::agents(tls.as_deref(), None).unwrap_or_else(|_| http::Client::public());
        let service = if file.probes.service.is_empty() {
            match &file.peer_http {
                Some(h) => vec![ProbeConfig::Http {
                    url: agents.agent_url(h, "/health"),
                    expect: Some(200),
                }],
                None => vec![ProbeConfig::Tcp {
                    addr: file.peer.clone(),
                }],
            }
        } else {
            file.probes.service.clone()
        };
        Prober {
            service,
            peer: file.peer.clone(),
            timeout,
            links,
            me: Peer::Site(file.site_id()),
            arbiter: file.arbiter.clone(),
            agents: Arc::new(std::sync::Mutex::new((
                tls.as_ref().map_or(0, |t| t.generation()),
                agents,
            ))),
            tls,
            public: http::Client::public(),
            peer_http: file.peer_http.clone(),
        }
    }

    /// The client to the peer's agent, made again from the current keys after a reload.
    fn agents(&self) -> http::Client {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tls) = &self.tls {
            if tls.generation() != agents.0 {
                if let Ok(fresh) = http::Client::agents(Some(tls), None) {
                    *agents = (tls.generation(), fresh);
                }
            }
        }
        agents.1.clone()
    }

    pub fn service_probes(&self) -> &[ProbeConfig] {
        &self.service
    }

    /// The peer site's agent is there: a control link to it is up, or its transport port
    /// accepts a connection.
    pub async fn site(&self) -> bool {
        self.site_seen().await.is_ok()
    }

    /// [`Prober::site`], saying how it was seen.
    async fn site_seen(&self) -> Result<String, String> {
        if let Some((dial, listener, peer)) = &self.links {
            if dial.remote().is_some() {
                return Ok("control link up (dialed by this site)".into());
            }
            if listener.connected_peers().contains(peer) {
                return Ok("control link up (dialed by the peer)".into());
            }
        }
        tcp(&self.peer, self.timeout)
            .await
            .map(|()| "no control link, but its transport port accepts connections".into())
    }

    /// One non-SQL service probe (SQL probes run through the driver, see the executor).
    pub async fn one(&self, p: &ProbeConfig) -> Option<bool> {
        self.check(p).await.map(|r| r.is_ok())
    }

    /// One non-SQL service probe, saying what it saw; `None` for SQL.
    async fn check(&self, p: &ProbeConfig) -> Option<Result<String, String>> {
        Some(match p {
            ProbeConfig::Tcp { addr } => tcp(addr, self.timeout).await.map(|()| "connected".into()),
            ProbeConfig::Http { url, expect } => {
                let want = expect.unwrap_or(200);
                // The peer's agent speaks the deployment's TLS; anything else public HTTPS.
                let to_peer = http::parse_url(url)
                    .is_some_and(|(hp, _)| self.peer_http.as_deref() == Some(hp.as_str()));
                let client = if to_peer {
                    self.agents()
                } else {
                    self.public.clone()
                };
                match client.request("GET", url, None, self.timeout).await {
                    Ok((s, _)) if s == want => Ok(format!("HTTP {s}")),
                    Ok((s, _)) => Err(format!("HTTP {s} (expected {want})")),
                    Err(e) => Err(e),
                }
            }
            ProbeConfig::Exec { command } => exec(command, self.timeout).await,
            ProbeConfig::Sql => return None,
        })
    }

    /// Every probe now, for an operator: each service probe of `[probes]`, the driver's SQL
    /// probe of every local database, the peer site, and the arbiter's transport (a ping link:
    /// handshake and one round trip). One after another, each within the probe time limit.
    pub async fn run_all_now(&self, driver: Arc<dyn Driver>) -> Vec<ProbeRun> {
        let mut runs = Vec::new();
        for p in &self.service {
            if let Some(target) = describe(p) {
                runs.push(
                    ProbeRun::timed("service", target, async {
                        self.check(p).await.unwrap_or(Ok(String::new()))
                    })
                    .await,
                );
            }
        }
        let sql_is_a_service_probe = self.service.iter().any(|p| matches!(p, ProbeConfig::Sql));
        let names: Vec<String> = driver.databases().iter().map(|d| d.name.clone()).collect();
        for (i, name) in names.into_iter().enumerate() {
            let d = driver.clone();
            let timeout = self.timeout.max(Duration::from_secs(1));
            let check = async move {
                let kind = d.kind();
                let probe = tokio::task::spawn_blocking(move || d.probe(DbId(i as u32)));
                match tokio::time::timeout(timeout, probe).await {
                    Ok(Ok(Ok(()))) => Ok(format!("{kind} driver probe answered")),
                    Ok(Ok(Err(e))) => Err(e.to_string()),
                    Ok(Err(e)) => Err(format!("the driver's probe task failed: {e}")),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            };
            let mut run = ProbeRun::timed("sql", name, check).await;
            if sql_is_a_service_probe {
                run.detail.push_str(" (also a service probe)");
            }
            runs.push(run);
        }
        runs.push(ProbeRun::timed("site", format!("peer {}", self.peer), self.site_seen()).await);
        if let Some(addr) = &self.arbiter {
            let me = self.me;
            let tls = self
                .links
                .as_ref()
                .and_then(|(ship, _, _)| ship.config().tls.clone());
            let cfg = TransportConfig {
                connect_timeout: self.timeout,
                handshake_timeout: self.timeout,
                io_timeout: self.timeout,
                tls,
                ..TransportConfig::default()
            };
            let check = async move {
                match ping::ping_path(addr, me, &cfg, 1, 0).await {
                    Ok(r) => Ok(format!(
                        "transport answers as {:?}: handshake {:.1}ms, round trip {:.1}ms",
                        r.peer,
                        crate::troubleshoot::probe::millis(r.handshake),
                        r.rtt()
                            .map_or(0.0, |t| crate::troubleshoot::probe::millis(t.0))
                    )),
                    Err(e) => Err(e.to_string()),
                }
            };
            runs.push(ProbeRun::timed("arbiter", addr.clone(), check).await);
        }
        runs
    }
}

/// A service probe's kind and target, as the table shows it (`None` for SQL, shown per
/// database).
fn describe(p: &ProbeConfig) -> Option<String> {
    Some(match p {
        ProbeConfig::Tcp { addr } => format!("tcp {addr}"),
        ProbeConfig::Http { url, .. } => format!("http {url}"),
        ProbeConfig::Exec { command } => format!("exec {}", command.join(" ")),
        ProbeConfig::Sql => return None,
    })
}

async fn tcp(addr: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot connect to {addr}: {e}")),
        Err(_) => Err(format!("no connection to {addr} within {timeout:?}")),
    }
}

async fn exec(command: &[String], timeout: Duration) -> Result<String, String> {
    let Some((prog, args)) = command.split_first() else {
        return Err("the probe's command is empty".into());
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(timeout, child).await {
        Ok(Ok(s)) if s.success() => Ok("exit 0".into()),
        Ok(Ok(s)) => Err(format!("{s}")),
        Ok(Err(e)) => Err(format!("cannot run {prog}: {e}")),
        Err(_) => Err(format!("still running after {timeout:?}; killed")),
    }
}
