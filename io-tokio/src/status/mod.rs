//! Observability of a site agent: the `/status` JSON document (the log-shipping monitor fields
//! per database, role, epoch, lease, peer, active alerts, procedure progress, recent reports),
//! `/metrics` in Prometheus text, `/health`, and operator requests over HTTP.

use crate::agent::Feed;
use crate::config::SiteFile;
use crate::http::{self, Request, Response};
use crate::journal_store::JournalStore;
use lifeboat_core::audit::AuditRecord;
use lifeboat_core::engine::{Role, Seen, ShipState, SiteEngine};
use lifeboat_core::report::Report;
use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::{Config, DbId, Input, Millis, UtcMillis};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Recent alert events and decisions kept for `/status`.
const RECENT: usize = 50;

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

#[derive(Default)]
struct Inner {
    doc: Value,
    alerts: VecDeque<Value>,
    audits: VecDeque<Value>,
    reports: Vec<Value>,
    health: Option<bool>,
    work: Vec<(String, Value)>,
    /// The transport's artifact transfers (sending and receiving), read live by `doc()`.
    transfers: Vec<crate::transport::Transfers>,
    /// How this process started: journal replay and any torn tail that was truncated.
    recovery: Value,
    /// Recent latencies from a log's creation at the primary to its verification here.
    log_verified_ms: VecDeque<u64>,
}

/// Latency samples kept for `/status` (log creation to verified at the recovery site).
const LATENCY_SAMPLES: usize = 1000;

/// The `q` quantile (0..=1) of samples, nearest rank.
pub fn quantile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// What the loop publishes and the HTTP server reads.
pub struct StatusBoard {
    cfg: Config,
    site: String,
    peer_http: Option<String>,
    reports_file: PathBuf,
    inner: Mutex<Inner>,
}

impl StatusBoard {
    pub fn new(file: &SiteFile) -> StatusBoard {
        let reports_file = file.data_dir.join("reports.jsonl");
        let reports = std::fs::read_to_string(&reports_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        StatusBoard {
            cfg: file.engine.clone(),
            site: file.site.clone(),
            peer_http: file.peer_http.clone(),
            reports_file,
            inner: Mutex::new(Inner {
                reports,
                ..Inner::default()
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The UTC time of engine time `t`, given engine time `now` is wall-clock now.
    pub fn utc_of(&self, t: Millis, now: Millis) -> String {
        iso(UtcMillis(utc_now().0 - now.saturating_sub(t) as i64))
    }

    pub fn alert(&self, doc: Value) {
        let mut i = self.inner();
        i.alerts.push_back(doc);
        if i.alerts.len() > RECENT {
            i.alerts.pop_front();
        }
    }

    pub fn audit(&self, a: &AuditRecord) {
        let mut i = self.inner();
        i.audits
            .push_back(json!({"at_ms": a.at, "epoch": a.epoch.0, "what": a.what, "why": a.why}));
        if i.audits.len() > RECENT {
            i.audits.pop_front();
        }
    }

    /// Keep a report (also in `reports.jsonl`, so it survives restarts).
    pub fn report(&self, mut doc: Value) {
        let mut i = self.inner();
        doc["seq"] = json!(i.reports.len() + 1);
        doc["utc"] = json!(iso(utc_now()));
        // A failover's RPO and RTO must not vanish: the file is synced (and its directory when
        // the file is new), and if it cannot be written the whole report goes to the log.
        if let Err(e) = crate::durable::append_line_durably(&self.reports_file, &doc.to_string()) {
            tracing::error!(
                path = %self.reports_file.display(),
                error = %e,
                report = %doc,
                "the report could not be kept in reports.jsonl; it is in this log line instead"
            );
        }
        i.reports.push(doc);
    }

    pub fn set_recovery(&self, doc: Value) {
        self.inner().recovery = doc;
    }

    pub fn log_verified(&self, ms: u64) {
        let mut i = self.inner();
        i.log_verified_ms.push_back(ms);
        if i.log_verified_ms.len() > LATENCY_SAMPLES {
            i.log_verified_ms.pop_front();
        }
    }

    pub fn set_health(&self, ok: bool) {
        self.inner().health = Some(ok);
    }

    /// Long work in progress (ships, restores), shown with its progress.
    pub fn work_start(&self, id: String, doc: Value) {
        self.inner().work.push((id, doc));
    }
    pub fn work_done(&self, id: &str) {
        self.inner().work.retain(|(w, _)| w != id);
    }

    /// Show these transfers' byte progress in the status document.
    pub fn watch_transfers(&self, t: crate::transport::Transfers) {
        self.inner().transfers.push(t);
    }

    /// The status document, with the transfers' byte progress as of now.
    pub fn doc(&self) -> Value {
        let i = self.inner();
        let mut doc = i.doc.clone();
        let transfers: Vec<Value> = i
            .transfers
            .iter()
            .flat_map(|t| t.snapshot())
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect();
        if let Some(o) = doc.as_object_mut() {
            o.insert("transfers".into(), Value::Array(transfers));
        }
        doc
    }

    pub fn health(&self) -> (bool, Value) {
        let i = self.inner();
        let ok = i.health.unwrap_or(true);
        (
            ok,
            json!({"ok": ok, "site": self.site, "role": i.doc["role"]}),
        )
    }

    /// Rebuild the status document from the engine.
    pub fn publish(&self, engine: &SiteEngine, now: Millis, store: &JournalStore) {
        let st = engine.state();
        let cfg = &self.cfg;
        let utc = utc_now();
        let ago = |t: Millis| now.saturating_sub(t);
        let art = |db: usize, s: &Seen| {
            json!({
                "file": s.name(cfg.db_name(DbId(db as u32))).to_string(),
                "kind": s.kind.name_word(),
                "lsn_start": s.lsn_start.0,
                "lsn_end": s.lsn_end.0,
                "epoch": s.epoch.0,
                "ago_ms": ago(s.at),
            })
        };
        let dbs: Vec<Value> = st
            .dbs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (backlog, oldest) = d.backlog(now);
                json!({
                    "name": cfg.databases.get(i).cloned().unwrap_or_default(),
                    "restored_lsn": d.position.map(|l| l.0),
                    "known_produced_lsn": d.known_produced.0,
                    "write_lsn": st.writes.get(i).map_or(0, |w| w.lsn.0),
                    "last_backup": d.last_backup.as_ref().map(|s| art(i, s)),
                    "last_copy": d.last_copy.as_ref().map(|s| art(i, s)),
                    "last_restore": d.last_restore.as_ref().map(|s| art(i, s)),
                    "restore_latency_ms": d.last_restore_latency,
                    "since_last_log_ms": ago(d.last_log_at),
                    "backlog": backlog,
                    "backlog_oldest_ms": oldest,
                    "restoring": d.in_flight.map(|(_, k)| json!({
                        "kind": k.kind.name_word(), "lsn_start": k.lsn_start.0, "lsn_end": k.lsn_end.0})),
                    "gap": d.gap.as_ref().map(|g| json!({"at": g.at.0, "next_lsn_start": g.next.key.lsn_start.0,
                        "open_ms": ago(g.since), "attempts": g.attempts})),
                    "reseeding_ms": d.reseed_since.map(ago),
                    "recopies": d.recopies,
                })
            })
            .collect();
        let alerts: Vec<Value> = st
            .alerts
            .iter()
            .map(|(id, a)| {
                json!({
                    "kind": id.kind.as_str(),
                    "db": id.db.map(|d| cfg.db_name(d).to_string()),
                    "severity": a.severity.as_str(),
                    "count": a.count,
                    "first_seen": self.utc_of(a.first_seen, now),
                    "last_seen": self.utc_of(a.last_seen, now),
                    "text": a.text,
                })
            })
            .collect();
        let in_flight: Vec<Value> = st
            .outbox
            .values()
            .filter_map(|e| match e.state {
                ShipState::InFlight { sent_at, .. } => Some(json!({
                    "file": crate::transport::inbox::artifact_file_name(&e.meta, cfg.db_name(e.meta.key.db)),
                    "size": e.meta.size, "since_ms": ago(sent_at), "attempts": e.attempts})),
                _ => None,
            })
            .collect();
        let procedure = st.procedure.as_ref().map(|p| {
            json!({
                "kind": p.kind.as_str(),
                "step": p.step.as_str(),
                "running_ms": ago(p.started_at),
                "new_epoch": p.new_epoch.map(|e| e.0),
            })
        });
        let view = st.peer.arbiter_view.as_ref().map(|v| {
            json!({
                "epoch": v.epoch.0,
                "holder": v.holder.map(|h| cfg.site_name(h).to_string()),
                "holder_renewing": v.holder_renewing,
                "lease_lapsed": v.lease_lapsed,
                "since_renewal_ms": v.since_renewal_ms,
                "age_ms": st.peer.arbiter_view_at.map(ago),
            })
        });
        let mut i = self.inner();
        let work: Vec<Value> = i.work.iter().map(|(_, d)| d.clone()).collect();
        let lat: Vec<u64> = i.log_verified_ms.iter().copied().collect();
        i.doc = json!({
            "site": self.site,
            "peer_http": self.peer_http,
            "utc": iso(utc),
            "now_ms": now,
            "role": engine.role().as_str(),
            "epoch": st.epoch.0,
            "holder": cfg.site_name(st.holder),
            "writable": engine.writable(),
            "lease": {
                "expires_in_ms": st.lease.expires.map(|e| e as i64 - now as i64),
                "unmanaged": st.lease.unmanaged,
            },
            "backups_paused": st.backups_paused,
            "peer": {
                "last_heard_ms": st.peer.last_heard.map(ago),
                "last_heartbeat_ms": st.peer.last_heartbeat_at.map(ago),
                "site_reachable": st.peer.site_reachable,
                "failed_probes": st.peer.failed_probes,
                "backups_paused": st.peer.backups_paused,
                "peak_write_rate": st.peer.peak_rate,
                "arbiter_view": view,
            },
            "thresholds": {
                "log_every_ms": cfg.schedule.log_every_ms,
                "no_new_logs_minutes": cfg.alerts.no_new_logs_minutes,
                "restore_alert_after_attempts": cfg.alerts.after_attempts,
                "restore_alert_after_minutes": cfg.alerts.after_minutes,
                "critical_after_minutes": cfg.alerts.critical_after_minutes,
                "backlog_count": cfg.alerts.backlog_count,
                "backlog_age_minutes": cfg.alerts.backlog_age_minutes,
                "min_free_mib": cfg.alerts.min_free_mib,
            },
            "databases": dbs,
            "alerts": alerts,
            "recent_alerts": i.alerts.iter().cloned().collect::<Vec<_>>(),
            "recent_decisions": i.audits.iter().cloned().collect::<Vec<_>>(),
            "outbox_unacknowledged": st.outbox.len(),
            "ships_in_flight": in_flight,
            "work": work,
            "procedure": procedure,
            "quarantined": st.quarantined,
            "reports": i.reports.iter().rev().take(10).cloned().collect::<Vec<_>>(),
            "log_to_verified_ms": {
                "count": lat.len(),
                "p50": quantile(&lat, 0.5),
                "p99": quantile(&lat, 0.99),
                "samples": lat,
            },
            "journal": {"records_since_snapshot": store.records_since_snapshot(), "bytes": store.bytes,
                        "at_start": i.recovery},
        });
    }
}

/// A report as JSON with names instead of ids.
pub fn report_json(cfg: &Config, r: &Report) -> Value {
    match r {
        Report::Failover {
            epoch,
            new_primary,
            forced,
            rpo_lower,
            rpo_upper,
            losses,
            rto_ms,
            detected_at,
            writable_at,
        } => json!({
            "kind": "failover",
            "epoch": epoch.0,
            "new_primary": cfg.site_name(*new_primary),
            "forced": forced,
            "rpo_lower": rpo_lower,
            "rpo_upper": rpo_upper,
            "rto_ms": rto_ms,
            "detected_at_ms": detected_at,
            "writable_at_ms": writable_at,
            "losses": losses.iter().map(|l| json!({
                "db": cfg.db_name(l.db), "restored_lsn": l.restored.0,
                "known_produced_lsn": l.known_produced.0,
                "rpo_lower": l.rpo_lower, "rpo_upper": l.rpo_upper})).collect::<Vec<_>>(),
        }),
        Report::Switchover {
            epoch,
            new_primary,
            rpo,
            duration_ms,
        } => json!({
            "kind": "switchover",
            "epoch": epoch.0,
            "new_primary": cfg.site_name(*new_primary),
            "rpo": rpo,
            "duration_ms": duration_ms,
        }),
        Report::Drill {
            db,
            upto,
            ok,
            message,
        } => json!({
            "kind": "drill", "db": cfg.db_name(*db), "upto_lsn": upto.0, "ok": ok, "message": message,
        }),
        Report::Reseeded { db, at } => json!({
            "kind": "reseeded", "db": cfg.db_name(*db), "at_lsn": at.0,
        }),
    }
}

/// Prometheus text from a status document.
pub fn metrics(doc: &Value) -> String {
    let mut out = String::new();
    let site = doc["site"].as_str().unwrap_or("?");
    let mut g = |name: &str, help: &str, labels: &str, v: Option<f64>| {
        if let Some(v) = v {
            if !out.contains(&format!("# HELP {name} ")) {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            }
            out.push_str(&format!("{name}{{site=\"{site}\"{labels}}} {v}\n"));
        }
    };
    let role = doc["role"].as_str().unwrap_or("?");
    for r in [
        Role::Primary,
        Role::Fenced,
        Role::Secondary,
        Role::Promoting,
        Role::SwitchingOver,
        Role::SwitchoverTarget,
        Role::Demoted,
        Role::Rebuilding,
    ] {
        let v = if r.as_str() == role { 1.0 } else { 0.0 };
        g(
            "lifeboat_role",
            "1 for the site's current role",
            &format!(",role=\"{}\"", r.as_str()),
            Some(v),
        );
    }
    g(
        "lifeboat_epoch",
        "highest epoch seen",
        "",
        doc["epoch"].as_f64(),
    );
    g(
        "lifeboat_writable",
        "1 when this site accepts writes",
        "",
        Some(if doc["writable"].as_bool() == Some(true) {
            1.0
        } else {
            0.0
        }),
    );
    g(
        "lifeboat_outbox_unacknowledged",
        "artifacts not yet acknowledged by the recovery site",
        "",
        doc["outbox_unacknowledged"].as_f64(),
    );
    g(
        "lifeboat_log_to_verified_p50_seconds",
        "from a log's creation at the primary to verified at this site, median of recent logs",
        "",
        doc["log_to_verified_ms"]["p50"]
            .as_f64()
            .map(|ms| ms / 1000.0),
    );
    g(
        "lifeboat_journal_records_since_snapshot",
        "journal records since the last snapshot",
        "",
        doc["journal"]["records_since_snapshot"].as_f64(),
    );
    for d in doc["databases"].as_array().into_iter().flatten() {
        let l = format!(",db=\"{}\"", d["name"].as_str().unwrap_or("?"));
        let secs = |v: &Value| v["ago_ms"].as_f64().map(|ms| ms / 1000.0);
        g(
            "lifeboat_restored_lsn",
            "restored position",
            &l,
            d["restored_lsn"].as_f64(),
        );
        g(
            "lifeboat_known_produced_lsn",
            "last position known produced at the primary",
            &l,
            d["known_produced_lsn"].as_f64(),
        );
        g(
            "lifeboat_write_lsn",
            "write position (primary)",
            &l,
            d["write_lsn"].as_f64(),
        );
        g(
            "lifeboat_backlog_artifacts",
            "received and not yet restored",
            &l,
            d["backlog"].as_f64(),
        );
        g(
            "lifeboat_seconds_since_last_backup",
            "time since the last backup",
            &l,
            secs(&d["last_backup"]),
        );
        g(
            "lifeboat_seconds_since_last_copy",
            "time since the last copy",
            &l,
            secs(&d["last_copy"]),
        );
        g(
            "lifeboat_seconds_since_last_restore",
            "time since the last restore",
            &l,
            secs(&d["last_restore"]),
        );
        g(
            "lifeboat_restore_latency_seconds",
            "from receipt to restored, last artifact",
            &l,
            d["restore_latency_ms"].as_f64().map(|ms| ms / 1000.0),
        );
    }
    for a in doc["alerts"].as_array().into_iter().flatten() {
        let l = format!(
            ",kind=\"{}\",severity=\"{}\"",
            a["kind"].as_str().unwrap_or("?"),
            a["severity"].as_str().unwrap_or("?")
        );
        g(
            "lifeboat_alert_active",
            "active alert conditions",
            &l,
            Some(1.0),
        );
    }
    out
}

/// Serve `/status`, `/metrics`, `/health` and `POST /operator/<request>`.
pub async fn serve(
    addr: &str,
    board: Arc<StatusBoard>,
    feed: Feed,
    tools: Arc<crate::troubleshoot::Troubleshoot>, // remote troubleshooting (issue 17)
) -> std::io::Result<()> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let cfg = board.cfg.clone();
    tokio::spawn(http::serve(
        l,
        Arc::new(move |r: Request| handle(&board, &cfg, &feed, &tools, r)),
    ));
    Ok(())
}

fn handle(
    board: &StatusBoard,
    cfg: &Config,
    feed: &Feed,
    tools: &crate::troubleshoot::Troubleshoot, // remote troubleshooting (issue 17)
    r: Request,
) -> Response {
    match (r.method.as_str(), r.path.as_str()) {
        // Remote troubleshooting (issue 17): /operator/{log-level,logs,probe,ping}.
        (_, p) if crate::troubleshoot::serves(p) => tools.handle(&r),
        ("GET", "/status") => Response::json(200, &board.doc()),
        ("GET", "/metrics") => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: metrics(&board.doc()).into_bytes(),
        },
        ("GET", "/health") => {
            let (ok, doc) = board.health();
            Response::json(if ok { 200 } else { 503 }, &doc)
        }
        ("POST", p) if p.starts_with("/operator/") => {
            let name = &p["/operator/".len()..];
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
            let Some(req) = crate::agent::operator_request(name, force, db) else {
                return Response::json(
                    400,
                    &json!({"error": format!("unknown request {name:?} (reseed needs db=<name>); allowed: \
                        switchover, failover, failback, drill, pause, resume, reseed, confirm, abort")}),
                );
            };
            if feed.try_send(Input::Operator(req)) {
                Response::json(202, &json!({"accepted": name, "site": board.site}))
            } else {
                Response::json(503, &json!({"error": "the agent is overloaded; try again"}))
            }
        }
        (_, "/status" | "/metrics" | "/health") => Response::text(405, "use GET\n"),
        _ => Response::text(
            404,
            "lifeboat agent: GET /status, /metrics, /health; POST /operator/<request>\n",
        ),
    }
}
