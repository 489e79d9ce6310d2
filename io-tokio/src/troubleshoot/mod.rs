//! Remote troubleshooting: what an operator at one site needs to look into either agent without
//! a shell on its machine. Served by the agent under `/operator/…`, beside (and authorised like)
//! the operator requests; the `lifeboat` commands of the same names are in `cli/troubleshoot.rs`.
//!
//! ```text
//! POST /operator/log-level {"filter": "lifeboat=debug", "for_s": 600}
//!                                           change the log filter for a while
//! GET  /operator/logs?n=200                 last log lines and recent decisions
//! POST /operator/probe {}                   every probe, now (display only)
//! POST /operator/ping {"count": 5, "bytes": N}
//!                                           this agent pings the other site's agent over the
//!                                           transport: RTT and throughput
//! ```
//!
//! ```text
//! logging.rs  the process's subscriber: reloadable filter, stderr, ring
//! filter.rs   the filter: validation, temporary change, revert
//! ring.rs     the last log lines, bounded in lines and bytes
//! probe.rs    probe results and their table (the probes themselves: agent/probes.rs)
//! ```
//! The path ping's frames and both its ends are in `transport/ping.rs`.

pub mod filter;
pub mod logging;
pub mod probe;
pub mod ring;

use crate::config::SiteFile;
use crate::http::{Request, Response};
use crate::status::StatusBoard;
use crate::transport::ping::{self, PathReport};
use crate::transport::TransportConfig;
use lifeboat_core::{Peer, SiteId};
use probe::{ProbeKit, ProbeRun};
use ring::{LogLine, RingUse, RING_LINES};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The paths served here.
pub const LOG_LEVEL: &str = "/operator/log-level";
pub const LOGS: &str = "/operator/logs";
pub const PROBE: &str = "/operator/probe";
pub const PING: &str = "/operator/ping";

/// Lines `lifeboat logs` shows unless told (`-n`).
pub const DEFAULT_LINES: usize = 200;
/// Round trips of `lifeboat ping` unless told (`--count`).
pub const DEFAULT_PING_COUNT: u32 = 5;
/// Throughput payload of `lifeboat ping` unless told (`--bytes`): 16 MiB.
pub const DEFAULT_PING_BYTES: u64 = 16 << 20;

/// Whether `path` is one of the troubleshooting requests.
pub fn serves(path: &str) -> bool {
    matches!(path, LOG_LEVEL | LOGS | PROBE | PING)
}

/// `POST /operator/log-level`: the filter now in force.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LevelAnswer {
    pub site: String,
    #[serde(flatten)]
    pub filter: filter::FilterState,
}

/// `GET /operator/logs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogsAnswer {
    pub site: String,
    pub lines: Vec<LogLine>,
    /// `None` when the process keeps no ring (its logging was not set up by the binary).
    pub ring: Option<RingUse>,
    pub filter: Option<filter::FilterState>,
    /// The audit records of the engine's recent decisions (the status document's
    /// `recent_decisions`), oldest first.
    pub decisions: Vec<crate::status::doc::DecisionDoc>,
}

/// `POST /operator/probe`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeAnswer {
    pub site: String,
    pub probes: Vec<ProbeRun>,
}

/// `POST /operator/ping`: what the agent measured to the other site's agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingAnswer {
    /// The agent that pinged.
    pub site: String,
    /// The site it pinged, and the transport address.
    pub to: String,
    pub addr: String,
    pub handshake_ms: f64,
    pub rtt_ms: Vec<f64>,
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    /// Payload bytes sent and acknowledged (0: no throughput test).
    pub bytes: u64,
    pub bytes_ms: Option<f64>,
    pub mib_per_s: Option<f64>,
}

impl PingAnswer {
    fn new(site: &str, to: &str, r: &PathReport) -> PingAnswer {
        let rtt = r.rtt();
        PingAnswer {
            site: site.into(),
            to: to.into(),
            addr: r.addr.clone(),
            handshake_ms: probe::millis(r.handshake),
            rtt_ms: r.rtts.iter().copied().map(probe::millis).collect(),
            rtt_min_ms: rtt.map(|t| probe::millis(t.0)),
            rtt_avg_ms: rtt.map(|t| probe::millis(t.1)),
            rtt_max_ms: rtt.map(|t| probe::millis(t.2)),
            bytes: r.bulk.map_or(0, |b| b.0),
            bytes_ms: r.bulk.map(|b| probe::millis(b.1)),
            mib_per_s: r.mib_per_s().map(|m| (m * 10.0).round() / 10.0),
        }
    }
}

/// The agent's side of remote troubleshooting: one per agent, shared by its HTTP requests.
pub struct Troubleshoot {
    site: String,
    me: Peer,
    peer_site: String,
    peer_addr: String,
    board: Arc<StatusBoard>,
    probes: ProbeKit,
    /// One probe run at a time: a second request is told to wait.
    probing: Arc<Semaphore>,
    /// One path ping at a time: the path is shared with shipping.
    pinging: Arc<Semaphore>,
    /// The transport's TLS, for path pings.
    tls: Option<Arc<crate::transport::Tls>>,
}

fn error(status: u16, message: impl Into<String>) -> Response {
    Response::json(status, &json!({ "error": message.into() }))
}

impl Troubleshoot {
    pub fn new(
        file: &SiteFile,
        board: Arc<StatusBoard>,
        probes: ProbeKit,
        tls: Option<Arc<crate::transport::Tls>>,
    ) -> Troubleshoot {
        let me = file.site_id();
        let peer = SiteId(1 - me.0.min(1));
        Troubleshoot {
            site: file.site.clone(),
            me: Peer::Site(me),
            peer_site: file.engine.site_name(peer).to_string(),
            peer_addr: file.peer.clone(),
            board,
            probes,
            probing: Arc::new(Semaphore::new(1)),
            pinging: Arc::new(Semaphore::new(1)),
            tls,
        }
    }

    /// Answer one of the paths [`serves`] names.
    pub async fn handle(&self, r: &Request) -> Response {
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", LOG_LEVEL) => self.log_level(r),
            ("GET", LOGS) => self.logs(r),
            ("POST", PROBE) => self.probe().await,
            ("POST", PING) => self.ping(r).await,
            (_, LOGS) => error(405, format!("use GET {LOGS}")),
            (_, path) => error(405, format!("use POST {path}")),
        }
    }

    fn log_level(&self, r: &Request) -> Response {
        let Some(logging) = logging::installed() else {
            return error(503, filter::FilterError::NotInstalled.to_string());
        };
        let hold = match r.param("for_s") {
            None => filter::DEFAULT_FOR,
            Some(s) => match filter::parse_duration(s) {
                Ok(d) => d,
                Err(e) => return error(400, e.to_string()),
            },
        };
        let Some(text) = r.param("filter") else {
            return error(
                400,
                "a log-level request names the filter: {\"filter\": \"lifeboat=debug\"}",
            );
        };
        match logging.filter.set(text.trim(), hold) {
            Ok(state) => Response::json(
                200,
                &json!(LevelAnswer {
                    site: self.site.clone(),
                    filter: state,
                }),
            ),
            Err(e @ filter::FilterError::Reload(_)) => error(500, e.to_string()),
            Err(e) => error(400, e.to_string()),
        }
    }

    fn logs(&self, r: &Request) -> Response {
        let n = match r.param("n").map(str::parse::<usize>) {
            None => DEFAULT_LINES,
            Some(Ok(n)) if (1..=RING_LINES).contains(&n) => n,
            Some(_) => {
                return error(
                    400,
                    format!("n must be a number of lines from 1 to {RING_LINES}"),
                )
            }
        };
        let logging = logging::installed();
        let decisions = self.board.recent_decisions();
        let answer = LogsAnswer {
            site: self.site.clone(),
            lines: logging.map(|l| l.ring.last(n)).unwrap_or_default(),
            ring: logging.map(|l| l.ring.usage()),
            filter: logging.map(|l| l.filter.state()),
            decisions,
        };
        Response::json(200, &json!(answer))
    }

    async fn probe(&self) -> Response {
        let Ok(permit) = self.probing.clone().try_acquire_owned() else {
            return error(
                429,
                "a probe run is already under way at this agent; try again",
            );
        };
        let probes = self.probes.clone();
        let site = self.site.clone();
        let runs = probes.run().await;
        drop(permit);
        Response::json(200, &json!(ProbeAnswer { site, probes: runs }))
    }

    async fn ping(&self, r: &Request) -> Response {
        let count = match r.param("count").map(str::parse::<u32>) {
            None => DEFAULT_PING_COUNT,
            Some(Ok(n)) => n,
            Some(Err(_)) => return error(400, "count must be a number of round trips"),
        };
        let bytes = match r.param("bytes").map(str::parse::<u64>) {
            None => DEFAULT_PING_BYTES,
            Some(Ok(n)) => n,
            Some(Err(_)) => return error(400, "bytes must be a number of bytes"),
        };
        if let Err(e) = ping::check_request(count, bytes) {
            return error(400, e.to_string());
        }
        let Ok(permit) = self.pinging.clone().try_acquire_owned() else {
            return error(429, "a ping is already under way at this agent; try again");
        };
        let (site, to, addr, me) = (
            self.site.clone(),
            self.peer_site.clone(),
            self.peer_addr.clone(),
            self.me,
        );
        let cfg = TransportConfig {
            tls: self.tls.clone(),
            ..TransportConfig::default()
        };
        let result = ping::ping_path(&addr, me, &cfg, count, bytes).await;
        drop(permit);
        match result {
            Ok(report) => Response::json(200, &json!(PingAnswer::new(&site, &to, &report))),
            Err(e) => error(502, format!("{site} pinging {to} at {addr}: {e}")),
        }
    }
}

/// How long the CLI waits for a slow answer: the server's own limit, and a margin.
pub const CLIENT_TIMEOUT: Duration =
    Duration::from_secs(crate::http::DEFERRED_TIMEOUT.as_secs() + 5);
