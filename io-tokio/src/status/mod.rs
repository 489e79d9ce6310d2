//! Observability of a site agent: the `/status` document ([`doc::StatusDoc`]: the log-shipping
//! monitor fields per database, role, epoch, lease, peer, active alerts, procedure progress,
//! recent reports), `/metrics` in Prometheus text, `/health`, and operator requests over HTTP.
//!
//! The board keeps what the engine does not (recent alert events and decisions, reports, work
//! under way, latencies); the document is built on demand, between two batches of the engine
//! loop, when someone asks.

pub mod doc;
pub mod metrics;

use crate::config::SiteFile;
use crate::engine_loop::{Feed, Peeker, Started};
use crate::http::{self, Request, Response};
use crate::journal_store::JournalStats;
use doc::{
    AlertDoc, DecisionDoc, Extras, ReportBody, ReportDoc, RoleName, StartDoc, StatusDoc, WorkDoc,
};
use lifeboat_core::alert::AlertEvent;
use lifeboat_core::audit::AuditRecord;
use lifeboat_core::engine::{Role, SiteEngine};
use lifeboat_core::protocol::OperatorRequest;
use lifeboat_core::report::Report;
use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::{ArtifactKind, Config, DbId, Input, Millis, UtcMillis};
use serde_json::json;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Recent alert events and decisions kept for `/status`.
const RECENT: usize = 50;
/// Latency samples kept for `/status` (log creation to verified at the recovery site).
const LATENCY_SAMPLES: usize = 1000;

/// Wall-clock UTC now, in milliseconds.
pub fn utc_now() -> UtcMillis {
    UtcMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

/// `2026-11-22T03:05:00Z`.
pub fn iso(t: UtcMillis) -> String {
    UtcDateTime::from_millis(t).to_string()
}

/// The UTC time of engine time `t`, given engine time `now` is wall-clock now.
/// A work entry with the bytes its driver counted so far (a pass of known size replaces the
/// estimate it started with).
fn counted(doc: &WorkDoc, progress: Option<&crate::drivers::Progress>) -> WorkDoc {
    let mut doc = doc.clone();
    if let Some((done, total)) = progress.map(|p| p.get()) {
        doc.done = Some(done);
        if total > 0 {
            doc.size = total;
        }
    }
    doc
}

/// Record a report made outside the agent (`lifeboat drill --at`) in `reports.jsonl` of
/// `data_dir`, synced, where the agent's `/status` shows it with its own.
pub fn append_report(data_dir: &std::path::Path, body: ReportBody) -> std::io::Result<()> {
    let path = data_dir.join("reports.jsonl");
    let mut known = Vec::new();
    read_reports(&path, 0, &mut known);
    let doc = ReportDoc {
        seq: known.len() as u64 + 1,
        utc: iso(utc_now()),
        body,
    };
    let line = serde_json::to_string(&doc).map_err(std::io::Error::other)?;
    crate::durable::append_line_durably(&path, &line)
}

/// Append the whole lines of `path` from byte `from` on to `out`; returns where the next read
/// starts (after the last whole line: a line being appended is read once it is complete). A
/// line that is not a report stays in the file and is not shown.
pub(crate) fn read_reports(path: &std::path::Path, from: u64, out: &mut Vec<ReportDoc>) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(from))?;
        f.read_to_end(&mut bytes)
    });
    if read.is_err() {
        return from;
    }
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    for l in String::from_utf8_lossy(&bytes[..whole]).lines() {
        if l.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(l) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, line = l,
                    "a line of reports.jsonl is not a report; it stays in the file and is not shown");
            }
        }
    }
    from + whole as u64
}

fn utc_of(t: Millis, now: Millis) -> String {
    iso(UtcMillis(utc_now().0 - now.saturating_sub(t) as i64))
}

#[derive(Default)]
struct Inner {
    alerts: VecDeque<AlertDoc>,
    audits: VecDeque<DecisionDoc>,
    reports: Vec<ReportDoc>,
    /// Bytes of `reports.jsonl` read into `reports` (other processes append to it too:
    /// `lifeboat drill --at` records its result there).
    reports_read: u64,
    health: Option<bool>,
    /// The role and writability after the last output (for `/health`, without the loop).
    role: Option<(RoleName, bool)>,
    work: Vec<(String, WorkDoc, Option<crate::drivers::Progress>)>,
    /// The transport's artifact transfers (sending and receiving), read live.
    transfers: Vec<crate::transport::Transfers>,
    /// How this process started: journal replay and any torn tail that was truncated.
    at_start: StartDoc,
    /// Recent latencies from a log's creation at the primary to its verification here.
    log_verified_ms: VecDeque<u64>,
    skipped: doc::SkippedDoc,
    streams: Vec<doc::StreamDoc>,
}

/// What the agent keeps for `/status` beside the engine.
pub struct StatusBoard {
    cfg: Config,
    site: String,
    peer_http: Option<String>,
    reports_file: PathBuf,
    inner: Mutex<Inner>,
    /// The witness as configured, and the etcd client whose health it reports.
    witness: doc::WitnessDoc,
    etcd: Mutex<Option<crate::witness::EtcdWitnessClient>>,
}

impl StatusBoard {
    pub fn new(file: &SiteFile) -> StatusBoard {
        let reports_file = file.data_dir.join("reports.jsonl");
        let mut reports = Vec::new();
        let read = read_reports(&reports_file, 0, &mut reports);
        let w = &file.witness;
        let witness = match (&file.arbiter, w.is_etcd()) {
            (_, true) => doc::WitnessDoc {
                kind: "etcd".into(),
                endpoints: w.endpoints.clone(),
                prefix: w.prefix.clone(),
                ..doc::WitnessDoc::default()
            },
            (Some(a), false) => doc::WitnessDoc {
                kind: "arbiter".into(),
                endpoints: vec![a.clone()],
                ..doc::WitnessDoc::default()
            },
            (None, false) => doc::WitnessDoc {
                kind: "none".into(),
                ..doc::WitnessDoc::default()
            },
        };
        StatusBoard {
            witness,
            etcd: Mutex::new(None),
            cfg: file.engine.clone(),
            site: file.site.clone(),
            peer_http: file.peer_http.clone(),
            reports_file,
            inner: Mutex::new(Inner {
                reports,
                reports_read: read,
                ..Inner::default()
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An input the engine is about to handle: a verified log's latency from its creation at
    /// the primary (wall clock).
    pub fn input(&self, input: &Input) {
        if let Input::ArtifactReceived { meta, computed, .. } = input {
            if meta.checksum == *computed && meta.key.kind == ArtifactKind::Log {
                let ms = utc_now().0.saturating_sub(meta.created_utc.0).max(0) as u64;
                let mut i = self.inner();
                i.log_verified_ms.push_back(ms);
                if i.log_verified_ms.len() > LATENCY_SAMPLES {
                    i.log_verified_ms.pop_front();
                }
            }
        }
    }

    /// Keep an alert event; returns its document for the sinks.
    pub fn alert(&self, ev: &AlertEvent, now: Millis) -> AlertDoc {
        let doc = AlertDoc::of(&self.cfg, &self.site, ev, |t| utc_of(t, now));
        let mut i = self.inner();
        i.alerts.push_back(doc.clone());
        if i.alerts.len() > RECENT {
            i.alerts.pop_front();
        }
        doc
    }

    /// The last decisions of the engine, oldest first.
    pub fn recent_decisions(&self) -> Vec<DecisionDoc> {
        self.inner().audits.iter().cloned().collect()
    }

    pub fn audit(&self, a: &AuditRecord) {
        let mut i = self.inner();
        i.audits.push_back(DecisionDoc::of(a));
        if i.audits.len() > RECENT {
            i.audits.pop_front();
        }
    }

    /// Keep a report (also in `reports.jsonl`, so it survives restarts) and log it.
    pub fn report(&self, r: &Report) {
        let mut i = self.inner();
        self.read_new_reports(&mut i);
        let doc = ReportDoc {
            seq: i.reports.len() as u64 + 1,
            utc: iso(utc_now()),
            body: ReportBody::of(&self.cfg, r),
        };
        let line = serde_json::to_string(&doc).unwrap_or_default();
        tracing::info!(report = %line, "report");
        // A failover's RPO and RTO must not vanish: the file is synced (and its directory when
        // the file is new), and if it cannot be written the whole report goes to the log.
        match crate::durable::append_line_durably(&self.reports_file, &line) {
            // Read back from the file, with anything another process appended meanwhile.
            Ok(()) => self.read_new_reports(&mut i),
            Err(e) => {
                tracing::error!(
                    path = %self.reports_file.display(),
                    error = %e,
                    report = %line,
                    "the report could not be kept in reports.jsonl; it is in this log line instead"
                );
                i.reports.push(doc);
            }
        }
    }

    /// Reports other processes appended to `reports.jsonl` since the last read.
    fn read_new_reports(&self, i: &mut Inner) {
        let len = std::fs::metadata(&self.reports_file).map_or(0, |m| m.len());
        if len > i.reports_read {
            i.reports_read = read_reports(&self.reports_file, i.reports_read, &mut i.reports);
        }
    }

    pub fn set_recovery(&self, s: &Started) {
        self.inner().at_start = StartDoc {
            resumed: s.resumed,
            replayed_records: s.replayed,
            torn_tail: s.torn.clone(),
        };
    }

    pub fn set_health(&self, ok: bool) {
        self.inner().health = Some(ok);
    }

    /// Position samples and SQL probes skipped because the last one was still running.
    pub fn set_skipped(&self, samples: u64, probes: u64) {
        self.inner().skipped = doc::SkippedDoc { samples, probes };
    }

    /// The receivers of the other site's continuous streams, by database.
    pub fn set_streams(&self, streams: Vec<doc::StreamDoc>) {
        self.inner().streams = streams;
    }

    pub fn set_role(&self, role: Role, writable: bool) {
        self.inner().role = Some((role.into(), writable));
    }

    /// Long work in progress (restores, reseeds), shown until [`Self::work_done`].
    pub fn work_start(&self, id: String, doc: WorkDoc) {
        self.inner().work.push((id, doc, None));
    }
    /// Work whose bytes the driver counts in `progress` (shown as `done` of `size`).
    pub fn work_start_counted(&self, id: String, doc: WorkDoc, progress: crate::drivers::Progress) {
        self.inner().work.push((id, doc, Some(progress)));
    }
    pub fn work_done(&self, id: &str) {
        self.inner().work.retain(|(w, _, _)| w != id);
    }

    /// Show these transfers' byte progress in the status document.
    pub fn watch_transfers(&self, t: crate::transport::Transfers) {
        self.inner().transfers.push(t);
    }

    /// The status document of `engine` now.
    pub fn doc(&self, engine: &SiteEngine, now: Millis, journal: JournalStats) -> StatusDoc {
        let mut i = self.inner();
        self.read_new_reports(&mut i);
        let x = Extras {
            site: &self.site,
            peer_http: self.peer_http.as_deref(),
            utc: iso(utc_now()),
            utc_of: &|t| utc_of(t, now),
            recent_alerts: i.alerts.iter().cloned().collect(),
            recent_decisions: i.audits.iter().cloned().collect(),
            work: i
                .work
                .iter()
                .map(|(_, d, p)| counted(d, p.as_ref()))
                .collect(),
            reports: i.reports.iter().rev().take(10).cloned().collect(),
            latencies: i.log_verified_ms.iter().copied().collect(),
            journal,
            at_start: i.at_start.clone(),
            transfers: i.transfers.iter().flat_map(|t| t.snapshot()).collect(),
            skipped: i.skipped.clone(),
            streams: i.streams.clone(),
            witness: self.witness_doc(),
        };
        StatusDoc::build(&self.cfg, engine, now, x)
    }

    /// The etcd witness whose health `/status` reports.
    pub fn set_witness(&self, client: crate::witness::EtcdWitnessClient) {
        *self.etcd.lock().unwrap_or_else(|e| e.into_inner()) = Some(client);
    }

    fn witness_doc(&self) -> doc::WitnessDoc {
        let mut d = self.witness.clone();
        if let Some(c) = self.etcd.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let h = c.health();
            d.reachable = h.reachable;
            d.last_ok_ms_ago = h.last_ok_ms_ago;
            d.last_error = h.last_error;
            d.members = h
                .endpoints
                .into_iter()
                .map(|(endpoint, r)| doc::WitnessMemberDoc {
                    endpoint,
                    healthy: r.is_ok(),
                    leader: r.as_ref().is_ok_and(|l| *l),
                    error: r.err(),
                })
                .collect();
        }
        d
    }

    /// `/health`: 200 while the database answers its probe (or before the first probe).
    pub fn health(&self) -> (bool, serde_json::Value) {
        let i = self.inner();
        let ok = i.health.unwrap_or(true);
        let role = i.role.map(|(r, _)| r.as_str());
        (ok, json!({"ok": ok, "site": self.site, "role": role}))
    }
}

/// Parse an operator request path (`/operator/<name>`) and its parameters.
pub fn operator_request(name: &str, force: bool, db: Option<DbId>) -> Option<OperatorRequest> {
    Some(match name {
        "switchover" => OperatorRequest::Switchover,
        "failover" => OperatorRequest::Failover { force },
        "failback" => OperatorRequest::Failback,
        "drill" => OperatorRequest::Drill { db },
        "pause" => OperatorRequest::PauseBackups,
        "resume" => OperatorRequest::ResumeBackups,
        "reseed" => OperatorRequest::Reseed { db: db? },
        "confirm" => OperatorRequest::ConfirmFailover,
        "abort" => OperatorRequest::AbortFailover,
        _ => return None,
    })
}

/// Serve `/status`, `/metrics`, `/health` and `POST /operator/<request>`.
pub async fn serve(
    addr: &str,
    board: Arc<StatusBoard>,
    feed: Feed,
    peeker: Peeker<SiteEngine>,
    tools: Arc<crate::troubleshoot::Troubleshoot>,
    access: http::Access,
    open: Option<&str>,
) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let open =
        match open {
            Some(a) => Some(tokio::net::TcpListener::bind(a).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("{e} (`http_open` = {a:?})"))
            })?),
            None => None,
        };
    let api = Arc::new(Api {
        board,
        feed,
        peeker,
        tools,
    });
    let full = api.clone();
    tokio::spawn(http::serve(
        l,
        Arc::new(move |r: Request| {
            let api = full.clone();
            async move { api.handle(r).await }
        }),
        access,
    ));
    // The open bind: plain HTTP, no credentials, and nothing but the two read-only documents a
    // monitoring system scrapes.
    if let Some(l) = open {
        let none = http::Access {
            tls: None,
            token: None,
        };
        tokio::spawn(http::serve(
            l,
            Arc::new(move |r: Request| {
                let api = api.clone();
                async move {
                    match (r.method.as_str(), r.path.as_str()) {
                        ("GET", "/health" | "/metrics") => api.handle(r).await,
                        _ => Response::text(
                            404,
                            "lifeboat agent, open bind: GET /health and /metrics only; \
                             everything else is on the TLS address (`http`)\n",
                        ),
                    }
                }
            }),
            none,
        ));
    }
    Ok(())
}

struct Api {
    board: Arc<StatusBoard>,
    feed: Feed,
    peeker: Peeker<SiteEngine>,
    /// Remote troubleshooting: `/operator/{log-level,logs,probe,ping}`.
    tools: Arc<crate::troubleshoot::Troubleshoot>,
}

impl Api {
    /// The document as of now, built between two batches of the engine loop.
    async fn doc(&self) -> Option<StatusDoc> {
        let board = self.board.clone();
        self.peeker
            .peek(move |engine, now, journal| board.doc(engine, now, journal))
            .await
    }

    async fn handle(&self, r: Request) -> Response {
        let busy = || Response::text(503, "the agent is stopping or overloaded; try again\n");
        match (r.method.as_str(), r.path.as_str()) {
            (_, p) if crate::troubleshoot::serves(p) => self.tools.handle(&r).await,
            ("GET", "/status") => match self.doc().await {
                Some(d) => Response::json(200, &d),
                None => busy(),
            },
            ("GET", "/metrics") => match self.doc().await {
                Some(d) => Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body: metrics::render(&d).into_bytes(),
                },
                None => busy(),
            },
            ("GET", "/health") => {
                let (ok, doc) = self.board.health();
                Response::json(if ok { 200 } else { 503 }, &doc)
            }
            ("POST", p) if p.starts_with("/operator/") => {
                self.operator(&p["/operator/".len()..], &r).await
            }
            (_, "/status" | "/metrics" | "/health") => Response::text(405, "use GET\n"),
            _ => Response::text(
                404,
                "lifeboat agent: GET /status, /metrics, /health; POST /operator/<request>\n",
            ),
        }
    }

    async fn operator(&self, name: &str, r: &Request) -> Response {
        let cfg = &self.board.cfg;
        let force = matches!(r.param("force"), Some("1" | "true" | "yes"));
        let db = match r.param("db") {
            None | Some("") => None,
            Some(n) => match cfg.db_id(n) {
                Some(d) => Some(d),
                None => {
                    return Response::json(
                        400,
                        &json!({"error": format!("unknown database {n:?}; allowed values: {}",
                            cfg.databases.join(", "))}),
                    )
                }
            },
        };
        let until = match (name, r.param("until")) {
            ("failover", Some(u)) if !u.is_empty() => match lifeboat_core::utc::parse_iso(u) {
                Ok(t) => Some(t),
                Err(e) => return Response::json(400, &json!({ "error": format!("until: {e}") })),
            },
            _ => None,
        };
        let req = match (operator_request(name, force, db), until) {
            (Some(OperatorRequest::Failover { force }), Some(until)) => {
                Some(OperatorRequest::FailoverUntil { force, until })
            }
            (req, _) => req,
        };
        let Some(req) = req else {
            return Response::json(
                400,
                &json!({"error": format!("unknown request {name:?} (reseed needs db=<name>); allowed: \
                    switchover, failover, failback, drill, pause, resume, reseed, confirm, abort")}),
            );
        };
        // The engine's answer, known before anything changes: the request run on a copy of the
        // engine as it is now (pure, so the copy decides exactly as the engine will, unless an
        // input slips in between).
        let tried = req.clone();
        let refused = self
            .peeker
            .peek(move |engine, now, _| {
                let mut e = engine.clone();
                e.handle(now, Input::Operator(tried));
                std::iter::from_fn(|| e.poll_output()).find_map(|o| match o {
                    lifeboat_core::Output::Audit(a) if a.what.starts_with("reject ") => Some(a.why),
                    _ => None,
                })
            })
            .await;
        let refused = match refused {
            None => {
                return Response::json(
                    503,
                    &json!({"error": "the agent is stopping or overloaded; try again"}),
                )
            }
            Some(r) => r,
        };
        if let Some(reason) = refused {
            return Response::json(
                409,
                &json!({"error": reason, "request": name, "site": self.board.site}),
            );
        }
        if self.feed.try_send(Input::Operator(req)) {
            let by = match &r.caller {
                http::Caller::Certificate(n) => format!("certificate {n}"),
                http::Caller::Token => "API token".into(),
                http::Caller::Anonymous => "anonymous (insecure)".into(),
            };
            tracing::info!(request = name, by = %by, "operator request accepted");
            Response::json(202, &json!({"accepted": name, "site": self.board.site}))
        } else {
            Response::json(503, &json!({"error": "the agent is overloaded; try again"}))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(db: &str, ok: bool) -> ReportBody {
        ReportBody::Drill {
            db: db.into(),
            upto_lsn: 7,
            ok,
            message: format!("drill of {db}"),
        }
    }

    #[test]
    fn reports_appended_by_another_process_are_read_whole_lines_at_a_time() {
        let dir = std::env::temp_dir().join(format!("lifeboat-reports-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reports.jsonl");
        append_report(&dir, drill("app", true)).unwrap();
        let mut seen = Vec::new();
        let at = read_reports(&path, 0, &mut seen);
        assert_eq!(seen.len(), 1);
        assert_eq!((seen[0].seq, &seen[0].body), (1, &drill("app", true)));
        // A line still being written is left for the next read; garbage is skipped.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"not a report\n{\"seq\":2,\"kind\":\"drill\"")
            .unwrap();
        let at2 = read_reports(&path, at, &mut seen);
        assert_eq!(seen.len(), 1);
        assert_eq!(at2, at + "not a report\n".len() as u64);
        f.write_all(b",\"db\":\"b\",\"upto_lsn\":1,\"ok\":false,\"message\":\"x\"}\n")
            .unwrap();
        let at3 = read_reports(&path, at2, &mut seen);
        assert_eq!(at3, std::fs::metadata(&path).unwrap().len());
        assert_eq!(seen.len(), 2);
        assert!(matches!(&seen[1].body, ReportBody::Drill { db, ok: false, .. } if db == "b"));
        // The next report made outside the agent is numbered after every report in the file.
        append_report(&dir, drill("app", false)).unwrap();
        read_reports(&path, at3, &mut seen);
        assert_eq!(seen.last().map(|r| r.seq), Some(3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
