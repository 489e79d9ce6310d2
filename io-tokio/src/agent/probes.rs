//! Probes of the primary from this site: its service (TCP connect, HTTP status, SQL through the
//! driver, a command) and its site (the peer agent's transport port answers). The core decides
//! when to probe (`Command::Probe`); results go back as `Input::Probe`.

use crate::config::{ProbeConfig, SiteFile, DEFAULT_PROBE_TIMEOUT_MS};
use crate::http;
use crate::transport::{Listener, Transport};
use lifeboat_core::Peer;
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
        let service = if file.probes.service.is_empty() {
            match &file.peer_http {
                Some(h) => vec![ProbeConfig::Http {
                    url: format!("http://{h}/health"),
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
        }
    }

    pub fn service_probes(&self) -> &[ProbeConfig] {
        &self.service
    }

    /// The peer site's agent is there: a control link to it is up, or its transport port
    /// accepts a connection.
    pub async fn site(&self) -> bool {
        if let Some((dial, listener, peer)) = &self.links {
            if dial.remote().is_some() || listener.connected_peers().contains(peer) {
                return true;
            }
        }
        tcp(&self.peer, self.timeout).await
    }

    /// One non-SQL service probe (SQL probes run through the driver, see the executor).
    pub async fn one(&self, p: &ProbeConfig) -> Option<bool> {
        Some(match p {
            ProbeConfig::Tcp { addr } => tcp(addr, self.timeout).await,
            ProbeConfig::Http { url, expect } => {
                matches!(http::request("GET", url, None, self.timeout).await,
                    Ok((s, _)) if s == expect.unwrap_or(200))
            }
            ProbeConfig::Exec { command } => exec(command, self.timeout).await,
            ProbeConfig::Sql => return None,
        })
    }
}

async fn tcp(addr: &str, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

async fn exec(command: &[String], timeout: Duration) -> bool {
    let Some((prog, args)) = command.split_first() else {
        return false;
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(tokio::time::timeout(timeout, child).await, Ok(Ok(s)) if s.success())
}
