//! Executing the engine's commands. Driver work runs in two ordered queues so that a fence is
//! never overtaken by the writes it must stop (role: fence, allow writes, promote, hooks) and a
//! long backup or restore never delays a fence (data: backups, restores, reseeds, drills).
//! Ships and probes run as tasks. Every command with an operation id comes back as
//! `Input::Completed`; executors may see the same id twice and must be idempotent.

use super::files::ArtifactFiles;
use super::probes::Prober;
use super::sinks::run_hook;
use super::Feed;
use crate::config::{Hooks, ProbeConfig, SiteFile};
use crate::drivers::{self, ArtifactFile, BackupRequest, Driver, Manifest};
use crate::status::doc::{WorkDoc, WorkKind};
use crate::status::StatusBoard;
use crate::transport::Transport;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{Command, Failure, Input, ProbeTarget};
use lifeboat_core::{ArtifactKey, ArtifactKind, ArtifactMeta, Config, DbId, Epoch, OpId, SiteId};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Time limit of a hook command (fence, identity, restart).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a position sample or a SQL probe is waited for. The blocking call itself cannot be
/// cancelled: its gate stays closed until it returns, so calls never pile up behind a lock.
pub const SAMPLE_LIMIT: Duration = Duration::from_secs(2);

/// At most one blocking call of a kind in flight (a database's position sample, the SQL probe):
/// a call asked for while one runs is skipped and counted, never queued. Without this a
/// database lock held for minutes parked one thread per sample and probe (515 in one run).
#[derive(Default)]
pub struct Gate {
    busy: AtomicBool,
    skipped: std::sync::atomic::AtomicU64,
}

/// The open gate, closed again when dropped (wherever the blocking call ends).
pub struct Pass(Arc<Gate>);

impl Gate {
    /// Enter, or count a skip when a call is in flight.
    pub fn enter(self: &Arc<Self>) -> Option<Pass> {
        if self.busy.swap(true, Ordering::AcqRel) {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        } else {
            Some(Pass(self.clone()))
        }
    }
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Run `f` on a blocking thread through `gate`, waiting at most [`SAMPLE_LIMIT`]: `None` when
/// skipped (a call is in flight) or late (the call goes on and keeps the gate closed).
async fn gated<T: Send + 'static>(
    gate: &Arc<Gate>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    gated_within(gate, SAMPLE_LIMIT, f).await
}

async fn gated_within<T: Send + 'static>(
    gate: &Arc<Gate>,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let pass = gate.enter()?;
    let call = tokio::task::spawn_blocking(move || {
        let out = f();
        drop(pass);
        out
    });
    tokio::time::timeout(limit, call).await.ok()?.ok()
}

struct Job {
    cmd: Command,
    epoch: Epoch,
}

pub struct Executor {
    cfg: Config,
    me: SiteId,
    feed: Feed,
    files: Arc<ArtifactFiles>,
    driver: Arc<dyn Driver>,
    ship: Arc<Transport>,
    prober: Prober,
    board: Arc<StatusBoard>,
    role_q: mpsc::UnboundedSender<Job>,
    data_q: mpsc::UnboundedSender<Job>,
    /// A `CollectLogs` is running: the next one is skipped rather than queued behind it.
    collecting: Arc<AtomicBool>,
    /// One position sample in flight per database.
    sampling: Vec<Arc<Gate>>,
    /// One SQL probe in flight (the engine's probes, the service checks and `/health`).
    sql_probe: Arc<Gate>,
    /// Streaming: the local tunnel end to the other site's service of each database that
    /// streams, and the role the receivers last followed.
    streams: std::sync::Mutex<Streams>,
    /// The point-in-time archive (`[archive]`), when this site keeps one.
    archive: Option<Arc<crate::archive::Archive>>,
}

#[derive(Default)]
struct Streams {
    sources: Vec<(DbId, std::net::SocketAddr)>,
    role: Option<lifeboat_core::engine::Role>,
}

fn failure(code: i32, message: impl Into<String>, permanent: bool) -> Failure {
    Failure {
        code,
        message: message.into(),
        permanent,
    }
}

impl Executor {
    pub fn start(
        file: &SiteFile,
        feed: Feed,
        ship: Arc<Transport>,
        listener: Arc<crate::transport::Listener>,
        board: Arc<StatusBoard>,
    ) -> anyhow::Result<Executor> {
        let peer = lifeboat_core::Peer::Site(SiteId(1 - file.site_id().0.min(1)));
        let files = Arc::new(ArtifactFiles::open(&file.data_dir)?);
        let driver = crate::config::open_driver(file)?;
        let (role_q, role_rx) = mpsc::unbounded_channel();
        let (data_q, data_rx) = mpsc::unbounded_channel();
        let ctx = Arc::new(Ctx {
            cfg: file.engine.clone(),
            me: file.site_id(),
            hooks: file.hooks.clone(),
            site_name: file.site.clone(),
            feed: feed.clone(),
            files: files.clone(),
            driver: driver.clone(),
            board: board.clone(),
            archive: file
                .archive
                .as_ref()
                .map(|a| Arc::new(crate::archive::Archive::new(&a.dir))),
            named: std::sync::Mutex::new(files.scan(true).into_iter().fold(
                std::collections::HashMap::new(),
                |mut m, (meta, _)| {
                    let e = m.entry((meta.key.db, meta.key.kind)).or_insert(i64::MIN);
                    *e = (*e).max(meta.created_utc.0);
                    m
                },
            )),
        });
        tokio::spawn(worker(ctx.clone(), role_rx));
        tokio::spawn(worker(ctx, data_rx));
        let prober = Prober::new(file, Some((ship.clone(), listener, peer)));
        Ok(Executor {
            cfg: file.engine.clone(),
            me: file.site_id(),
            feed,
            files,
            driver,
            ship,
            prober,
            board,
            role_q,
            data_q,
            archive: file
                .archive
                .as_ref()
                .map(|a| Arc::new(crate::archive::Archive::new(&a.dir))),
            collecting: Arc::new(AtomicBool::new(false)),
            sampling: (0..file.engine.databases.len())
                .map(|_| Arc::default())
                .collect(),
            sql_probe: Arc::default(),
            streams: Default::default(),
        })
    }

    /// Every probe of this agent, run when an operator asks (`lifeboat probe`); display only,
    /// nothing reaches the engine.
    pub fn probe_kit(&self) -> crate::troubleshoot::probe::ProbeKit {
        let prober = self.prober.clone();
        let driver = self.driver.clone();
        crate::troubleshoot::probe::ProbeKit::new(move || {
            let (prober, driver) = (prober.clone(), driver.clone());
            Box::pin(async move { prober.run_all_now(driver).await })
        })
    }

    /// The site's artifact files (the agent's start-up scans).
    pub fn files(&self) -> &Arc<ArtifactFiles> {
        &self.files
    }

    /// Periodic work that feeds the engine facts: free disk space, local health.
    pub fn start_background(self: &Arc<Self>, file: &SiteFile) {
        if self.driver.tunnel_targets().iter().any(Option::is_some) {
            let me = self.clone();
            tokio::spawn(async move {
                for tick in 0u64.. {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let d = me.driver.clone();
                    // Every 5 s: the receivers' state for /status, and the role asked again
                    // (a failed promotion holds its receiver stopped for a while only).
                    let report = tick % 5 == 0;
                    if report {
                        let role = me.streams.lock().unwrap_or_else(|e| e.into_inner()).role;
                        if let Some(role) = role {
                            me.follow_role(role, true);
                        }
                    }
                    let Ok((changes, streams)) = tokio::task::spawn_blocking(move || {
                        let streams = report.then(|| d.stream_reports());
                        (d.watch_streams(), streams)
                    })
                    .await
                    else {
                        continue;
                    };
                    if let Some(streams) = streams {
                        me.board.set_streams(
                            streams
                                .into_iter()
                                .map(|r| crate::status::doc::StreamDoc {
                                    db: me.cfg.db_name(r.db).to_string(),
                                    receiving: r.receiving,
                                    running: r.running,
                                    starts: r.starts,
                                    received_lsn: r.received,
                                    last_error: r.last_error,
                                })
                                .collect(),
                        );
                    }
                    for (db, alarm, active, what) in changes {
                        warn!(db = me.cfg.db_name(db), ?alarm, active, %what, "stream alarm");
                        me.feed
                            .send(Input::StreamAlarm {
                                db,
                                alarm,
                                active,
                                what,
                            })
                            .await;
                    }
                }
            });
        }
        let me = self.clone();
        let every = Duration::from_millis(file.disk.check_every_ms);
        let dir = file.data_dir.clone();
        let archive_dir = file.archive.as_ref().map(|a| a.dir.clone());
        let min_free = file.engine.alerts.min_free_mib;
        tokio::spawn(async move {
            loop {
                // The archive counts too: the smaller of the two file systems' free space.
                let archive_free = match &archive_dir {
                    Some(a) if a.exists() => free_mib(a).await,
                    _ => None,
                };
                let inbox_free = free_mib(&dir).await;
                let free = match (inbox_free, archive_free) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                // The alert says "the fuller of the two": the log names which.
                for (path, f) in [
                    (Some(&dir), inbox_free),
                    (archive_dir.as_ref(), archive_free),
                ] {
                    if let (Some(path), Some(f)) = (path, f) {
                        if f < min_free {
                            tracing::warn!(path = %path.display(), free_mib = f, min_free_mib = min_free,
                                           "free space under the alert threshold");
                        }
                    }
                }
                if let Some(free_mib) = free {
                    me.feed.send(Input::DiskSpace { free_mib }).await;
                }
                tokio::time::sleep(every).await;
            }
        });
        let me = self.clone();
        let every = Duration::from_millis(file.engine.failover.probe_every_ms.max(100));
        tokio::spawn(async move {
            loop {
                let d = me.driver.clone();
                let ok = gated(&me.sql_probe, move || probe_all(&*d)).await;
                me.board.set_health(ok.unwrap_or(false));
                me.board.set_skipped(
                    me.sampling.iter().map(|g| g.skipped()).sum(),
                    me.sql_probe.skipped(),
                );
                tokio::time::sleep(every).await;
            }
        });
    }

    /// The driver's services the other site's receivers may reach through tunnels.
    pub fn tunnel_targets(&self) -> Vec<Option<String>> {
        self.driver.tunnel_targets()
    }

    /// Streaming: the local tunnel ends through which this site's receivers reach the other
    /// site's services, by database.
    pub fn set_stream_sources(&self, sources: Vec<(DbId, std::net::SocketAddr)>) {
        let mut st = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        st.sources = sources;
        st.role = None;
    }

    /// Receivers run while this site is the secondary, also while it prepares to take over
    /// (failover or switchover: the old primary may still be writing); the promotion stops
    /// them itself, just before it reads what they received. Cheap when nothing changed;
    /// `again` asks the driver even so (a promotion that failed holds its receiver stopped
    /// for a while only).
    pub fn follow_role(&self, role: lifeboat_core::engine::Role, again: bool) {
        let mut st = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if st.sources.is_empty() || (st.role == Some(role) && !again) {
            return;
        }
        st.role = Some(role);
        use lifeboat_core::engine::Role;
        let secondary = matches!(
            role,
            Role::Secondary | Role::Promoting | Role::SwitchoverTarget
        );
        for &(db, addr) in &st.sources {
            self.driver.receive_from(db, secondary.then_some(addr));
        }
    }

    /// Execute one command; never blocks the engine loop.
    pub fn execute(&self, cmd: Command, engine: &SiteEngine) {
        let epoch = engine.epoch();
        match cmd {
            Command::Ship { op, artifact, to } => self.ship(op, artifact, to),
            Command::TakeBackup { .. }
            | Command::Restore { .. }
            | Command::Reseed { .. }
            | Command::Drill { .. }
            | Command::ArchiveDrill { .. } => {
                let _ = self.data_q.send(Job { cmd, epoch });
            }
            Command::Fence { .. }
            | Command::AllowWrites { .. }
            | Command::Promote { .. }
            | Command::PromoteUntil { .. }
            | Command::ExternalFence { .. }
            | Command::RestartService { .. }
            | Command::SwitchIdentity { .. } => {
                let _ = self.role_q.send(Job { cmd, epoch });
            }
            Command::Relabel { artifact } => {
                let files = self.files.clone();
                let name = self.cfg.db_name(artifact.key.db).to_string();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = files.relabel(&artifact, &name) {
                        warn!(error = %e, "relabel failed");
                    }
                });
            }
            Command::Discard { key } => {
                let files = self.files.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = files.discard(&key) {
                        warn!(error = %e, ?key, "discard failed");
                    }
                });
            }
            Command::Prune { db, before, keep } => {
                // The core named everything it still needs; the rest before `before` goes.
                let keep: BTreeSet<ArtifactKey> = keep.into_iter().collect();
                let files = self.files.clone();
                tokio::task::spawn_blocking(move || match files.prune(db, before, &keep) {
                    Ok(n) if n > 0 => debug!(removed = n, ?db, "pruned restored artifacts"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "prune failed"),
                });
            }
            Command::Quarantine { artifact, reason } => {
                let files = self.files.clone();
                tokio::task::spawn_blocking(move || {
                    match files.quarantine(&artifact.key, &reason) {
                        Ok(Some(p)) => warn!(path = %p.display(), %reason, "artifact quarantined"),
                        Ok(None) => debug!(?artifact.key, "nothing to quarantine"),
                        Err(e) => warn!(error = %e, "quarantine failed"),
                    }
                });
            }
            Command::Probe => self.probe(),
            Command::CollectLogs { epoch } => self.collect_logs(epoch),
            Command::Archive { artifact } => self.archive(artifact),
            Command::ArchiveRemove { db, keys } => {
                let Some(archive) = self.archive.clone() else {
                    return;
                };
                let name = self.cfg.db_name(db).to_string();
                let keys: BTreeSet<ArtifactKey> = keys.into_iter().collect();
                tokio::task::spawn_blocking(move || match archive.remove(&name, &keys) {
                    Ok(n) => debug!(removed = n, db = %name, "archive retention"),
                    Err(e) => warn!(error = %e, db = %name, "archive retention failed"),
                });
            }
            Command::CheckService { op } => {
                // Auto Pilot's check of this site's own service: every database answers the
                // driver's probe. The result also feeds `/health`.
                let d = self.driver.clone();
                let feed = self.feed.clone();
                let board = self.board.clone();
                let names: Vec<String> = self.cfg.databases.clone();
                tokio::spawn(async move {
                    let res = tokio::task::spawn_blocking(move || {
                        for i in 0..d.databases().len() as u32 {
                            if let Err(e) = d.probe(DbId(i)) {
                                let name = names.get(i as usize).cloned().unwrap_or_default();
                                return Err(failure(
                                    e.kind.code(),
                                    format!("database {name} does not answer: {e}"),
                                    false,
                                ));
                            }
                        }
                        Ok(())
                    })
                    .await
                    .unwrap_or_else(|e| Err(failure(1, format!("the check panicked: {e}"), false)));
                    board.set_health(res.is_ok());
                    feed.send(Input::Completed { op, result: res }).await;
                });
            }
            Command::SamplePositions => {
                // One sample in flight per database: a database whose lock is held long is
                // skipped (and counted) while the others are sampled.
                for (i, gate) in self.sampling.iter().enumerate() {
                    let (d, feed, gate) = (self.driver.clone(), self.feed.clone(), gate.clone());
                    let db = DbId(i as u32);
                    tokio::spawn(async move {
                        if let Some(Ok(lsn)) = gated(&gate, move || d.position(db)).await {
                            feed.send(Input::WritePosition { db, lsn }).await;
                        }
                    });
                }
            }
        }
    }

    /// Copy an accepted artifact from the inbox into the archive and report `Archived`.
    fn archive(&self, artifact: ArtifactMeta) {
        let key = artifact.key;
        let feed = self.feed.clone();
        let Some(archive) = self.archive.clone() else {
            // The core archives only when `[archive]` is set: never here.
            return;
        };
        let files = self.files.clone();
        let name = self.cfg.db_name(key.db).to_string();
        tokio::spawn(async move {
            let res = tokio::task::spawn_blocking(move || {
                let src = files.inbox_path(&artifact, &name).ok_or_else(|| {
                    format!(
                        "the inbox no longer has {}",
                        crate::transport::inbox::artifact_file_name(&artifact, &name)
                    )
                })?;
                archive
                    .put(&src, &artifact, &name)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the copy panicked: {e}")));
            if let Err(e) = &res {
                warn!(error = %e, ?key, "archiving failed");
            }
            feed.send(Input::Archived {
                key,
                error: res.err(),
            })
            .await;
        });
    }

    /// Logs the database finished by itself (PostgreSQL's archive_timeout) ship at once, not at
    /// the next scheduled log backup. The core decides when (`Command::CollectLogs`, while it
    /// accepts writes) and at which epoch; a collection still running makes this one a no-op.
    fn collect_logs(&self, epoch: Epoch) {
        if !self.driver.collects_logs() || self.collecting.swap(true, Ordering::SeqCst) {
            return;
        }
        let (d, files, feed) = (self.driver.clone(), self.files.clone(), self.feed.clone());
        let collecting = self.collecting.clone();
        tokio::spawn(async move {
            let outbox = files.outbox.clone();
            let made = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                for i in 0..d.databases().len() as u32 {
                    let req = BackupRequest {
                        db: DbId(i),
                        kind: ArtifactKind::Log,
                        epoch,
                        created_utc: crate::status::utc_now(),
                        outbox: outbox.clone(),
                        progress: Default::default(),
                    };
                    match d.collect_logs(&req) {
                        Ok(a) => out.extend(a),
                        Err(e) => debug!(error = %e, "collecting finished logs failed"),
                    }
                }
                out
            })
            .await
            .unwrap_or_default();
            for a in made {
                let meta = a.meta();
                info!(file = %a.path.display(), lsn_start = meta.key.lsn_start.0,
                      lsn_end = meta.key.lsn_end.0, "log finished by the database");
                files.remember_outbox(meta.key, a.path.clone());
                feed.send(Input::ArtifactDiscovered(meta)).await;
            }
            collecting.store(false, Ordering::SeqCst);
        });
    }

    fn ship(&self, op: OpId, meta: ArtifactMeta, to: SiteId) {
        let feed = self.feed.clone();
        let files = self.files.clone();
        let transport = self.ship.clone();
        let name =
            crate::transport::inbox::artifact_file_name(&meta, self.cfg.db_name(meta.key.db));
        let _ = self.me;
        tokio::spawn(ship_once(feed, files, transport, op, meta, to, name));
    }

    fn probe(&self) {
        let prober = self.prober.clone();
        let feed = self.feed.clone();
        let driver = self.driver.clone();
        let sql_probe = self.sql_probe.clone();
        tokio::spawn(async move {
            let site = prober.site();
            let service = async {
                for p in prober.service_probes() {
                    let ok = match prober.one(p).await {
                        Some(ok) => ok,
                        None => {
                            debug_assert!(matches!(p, ProbeConfig::Sql));
                            let d = driver.clone();
                            // No answer within the limit (or the last probe still hangs) is a
                            // failed probe; a database merely locked answers (the driver's probe
                            // treats a lock held by a live process as an answer).
                            gated(&sql_probe, move || probe_all(&*d))
                                .await
                                .unwrap_or(false)
                        }
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            };
            let (site, service) = tokio::join!(site, service);
            feed.send(Input::Probe {
                target: ProbeTarget::Service,
                ok: service,
            })
            .await;
            feed.send(Input::Probe {
                target: ProbeTarget::Site,
                ok: site,
            })
            .await;
        });
    }
}

/// One attempt of a `Ship`: a failure is reported to the core once, as `ShipFailed`, and never
/// retried here (the core's backoff schedule decides when to ship again).
async fn ship_once(
    feed: Feed,
    files: Arc<ArtifactFiles>,
    transport: Arc<Transport>,
    op: OpId,
    meta: ArtifactMeta,
    to: SiteId,
    name: String,
) {
    let key = meta.key;
    let Some(path) = files.outbox_path(&key) else {
        let reason = format!(
            "{name} is not in the outbox {} (removed by hand?); a new backup will replace it",
            files.outbox.display()
        );
        feed.send(Input::ShipFailed {
            op,
            key,
            to,
            reason,
        })
        .await;
        return;
    };
    // Its byte progress shows in `/status` under `transfers`.
    match transport.ship(meta, &path).await {
        Ok(s) => debug!(file = %name, resumed_from = s.resumed_from, "shipped"),
        Err(e) => {
            debug!(error = %e, "ship attempt failed; the core schedules the next");
            feed.send(Input::ShipFailed {
                op,
                key,
                to,
                reason: e.to_string(),
            })
            .await;
        }
    }
}

/// What the queue workers need.
struct Ctx {
    cfg: Config,
    me: SiteId,
    hooks: Hooks,
    site_name: String,
    feed: Feed,
    files: Arc<ArtifactFiles>,
    driver: Arc<dyn Driver>,
    board: Arc<StatusBoard>,
    /// The point-in-time archive, when this site keeps one.
    archive: Option<Arc<crate::archive::Archive>>,
    /// The newest creation second used per database and kind: artifact names carry the second,
    /// so two artifacts of one kind never share one (the receiving inbox refuses a taken name).
    named: std::sync::Mutex<std::collections::HashMap<(DbId, ArtifactKind), i64>>,
}

impl Ctx {
    /// A creation time whose second no earlier artifact of this database and kind has.
    fn created_utc(&self, db: DbId, kind: ArtifactKind) -> lifeboat_core::UtcMillis {
        let now = crate::status::utc_now().0;
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        let last = named.get(&(db, kind)).copied();
        let t = match last {
            Some(l) if now.div_euclid(1000) <= l.div_euclid(1000) => {
                (l.div_euclid(1000) + 1) * 1000
            }
            _ => now,
        };
        named.insert((db, kind), t);
        lifeboat_core::UtcMillis(t)
    }
}

async fn worker(ctx: Arc<Ctx>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        let Some(op) = job.cmd.op() else { continue };
        let result = run(&ctx, job).await;
        if let Err(f) = &result {
            warn!(%op, code = f.code, message = %f.message, permanent = f.permanent, "command failed");
        }
        ctx.feed.send(Input::Completed { op, result }).await;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, drivers::DriverError> + Send + 'static,
) -> Result<T, Failure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_failure()),
        Err(e) => Err(failure(1, format!("driver task failed: {e}"), false)),
    }
}

async fn run(ctx: &Ctx, job: Job) -> Result<(), Failure> {
    let d = ctx.driver.clone();
    match job.cmd {
        Command::TakeBackup { op, db, kind } => {
            let epoch = job.epoch;
            let outbox = ctx.files.outbox.clone();
            let n = d.databases().len() as u32;
            let dbs: Vec<DbId> = match db {
                Some(x) => vec![x],
                None => (0..n).map(DbId).collect(),
            };
            let reqs: Vec<BackupRequest> = dbs
                .into_iter()
                .map(|db| BackupRequest {
                    db,
                    kind,
                    epoch,
                    created_utc: ctx.created_utc(db, kind),
                    outbox: outbox.clone(),
                    progress: Default::default(),
                })
                .collect();
            // A full backup reads the whole database: shown under way in /status.
            let id = format!("backup:{op}");
            if kind == ArtifactKind::Full {
                for r in &reqs {
                    let db_name = ctx.cfg.db_name(r.db).to_string();
                    let size = d
                        .databases()
                        .get(r.db.0 as usize)
                        .and_then(|s| std::fs::metadata(&s.path).ok())
                        .map_or(0, |m| m.len());
                    ctx.board.work_start_counted(
                        id.clone(),
                        WorkDoc {
                            work: WorkKind::Backup,
                            db: db_name,
                            lsn_start: 0,
                            lsn_end: 0,
                            size,
                            done: Some(0),
                        },
                        r.progress.clone(),
                    );
                }
            }
            let d2 = d.clone();
            let made = blocking(move || {
                let mut out = Vec::new();
                for req in &reqs {
                    out.extend(d.take_backup(req)?);
                }
                Ok(out)
            })
            .await;
            ctx.board.work_done(&id);
            for (db, what) in d2.capture_gaps() {
                warn!(db = ctx.cfg.db_name(db), %what, "the change capture healed a gap");
                ctx.feed.send(Input::CaptureGap { db, what }).await;
            }
            let made = made?;
            crate::crash::point("publish_before_journal");
            // Each artifact is announced before the completion (the core's contract).
            for a in made {
                let meta = a.meta();
                info!(file = %a.path.display(), kind = meta.key.kind.name_word(),
                      lsn_start = meta.key.lsn_start.0, lsn_end = meta.key.lsn_end.0, %op, "backup taken");
                ctx.files.remember_outbox(meta.key, a.path.clone());
                ctx.feed.send(Input::ArtifactDiscovered(meta)).await;
            }
            Ok(())
        }
        Command::Restore { op, artifact } | Command::Reseed { op, full: artifact } => {
            let reseed = matches!(job.cmd, Command::Reseed { .. });
            let name = ctx.cfg.db_name(artifact.key.db).to_string();
            let Some(path) = ctx.files.inbox_path(&artifact, &name) else {
                return Err(failure(
                    drivers::ErrorKind::NotFound.code(),
                    format!(
                        "the {} of {name} covering {}..{} is not in the inbox {}: it was removed \
                         by hand or lost; it must be shipped again",
                        artifact.key.kind.text_word(),
                        artifact.key.lsn_start,
                        artifact.key.lsn_end,
                        ctx.files.inbox.display()
                    ),
                    false,
                ));
            };
            let id = format!("restore:{op}");
            ctx.board.work_start(
                id.clone(),
                WorkDoc {
                    work: if reseed {
                        WorkKind::Reseed
                    } else {
                        WorkKind::Restore
                    },
                    db: name.clone(),
                    lsn_start: artifact.key.lsn_start.0,
                    lsn_end: artifact.key.lsn_end.0,
                    size: artifact.size,
                    done: None,
                },
            );
            let r = blocking(move || {
                let file = ArtifactFile {
                    path,
                    manifest: Manifest::from_meta(&artifact, &name),
                };
                // Never apply bytes that differ from the manifest, whatever happened on disk.
                drivers::check_bytes(&file)?;
                if reseed {
                    d.reseed(&file).map(drop)
                } else {
                    d.restore(&file).map(drop)
                }
            })
            .await;
            ctx.board.work_done(&id);
            if r.is_ok() {
                crate::crash::point("restore_before_report");
                // Before the completion, as a promotion's positions: what the rebuilt old
                // copy held beyond the new history (the driver kept it on disk already).
                // (The driver logged each one as it kept it.)
                for lost in ctx.driver.take_lost_writes() {
                    ctx.feed.send(Input::LostWrites(lost)).await;
                }
            }
            r
        }
        Command::Drill {
            db, upto, chain, ..
        } => {
            let name = ctx.cfg.db_name(db);
            let out = drill(&ctx.files, d, db, &chain, name).await?;
            info!(db = name, position = out.position.0, upto = upto.0, applied = out.applied,
                  check = %out.check, "drill done");
            Ok(())
        }
        Command::ArchiveDrill {
            db, upto, chain, ..
        } => {
            let name = ctx.cfg.db_name(db).to_string();
            let Some(archive) = ctx.archive.clone() else {
                return Err(failure(
                    drivers::ErrorKind::Config.code(),
                    "no [archive] is configured at this site",
                    true,
                ));
            };
            let files = blocking(move || {
                let found: std::collections::BTreeMap<ArtifactKey, std::path::PathBuf> = archive
                    .scan(&name)
                    .into_iter()
                    .map(|(m, p)| (m.key, p))
                    .collect();
                chain
                    .iter()
                    .map(|m| match found.get(&m.key) {
                        Some(p) => Ok(ArtifactFile {
                            path: p.clone(),
                            manifest: Manifest::from_meta(m, &name),
                        }),
                        None => Err(drivers::DriverError::new(
                            drivers::ErrorKind::NotFound,
                            format!(
                                "the {} of {name} covering {}..{} is not in the archive {}",
                                m.key.kind.text_word(),
                                m.key.lsn_start,
                                m.key.lsn_end,
                                archive.db_dir(&name).display()
                            ),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?;
            let out = blocking(move || d.drill(db, &files)).await?;
            info!(
                db = ctx.cfg.db_name(db),
                position = out.position.0,
                upto = upto.0,
                applied = out.applied,
                "archive verification done"
            );
            Ok(())
        }
        Command::Fence { .. } => blocking(move || each_db(&*d, |db| d.fence(db))).await,
        Command::AllowWrites { epoch, .. } => {
            blocking(move || each_db(&*d, |db| d.unfence(db, epoch))).await
        }
        Command::Promote { op, epoch } | Command::PromoteUntil { op, epoch, .. } => {
            // To a chosen point: what the chain restored is all the core let through.
            let restored = matches!(job.cmd, Command::PromoteUntil { .. });
            let r = blocking(move || {
                let mut reached = Vec::new();
                each_db(&*d, |db| {
                    let at = if restored {
                        d.promote_restored(db, epoch)?
                    } else {
                        d.promote(db, epoch)?
                    };
                    reached.push((db, at));
                    Ok(())
                })
                .map(|()| reached)
            })
            .await;
            let positions = r?;
            crate::crash::point("promote_before_report");
            // Before the completion: the loss bounds count from where each database opened
            // (PostgreSQL may have replayed received WAL beyond the last restored segment).
            ctx.feed.send(Input::Promoted { op, positions }).await;
            Ok(())
        }
        Command::ExternalFence { target, epoch, .. } => {
            let Some(cmd) = &ctx.hooks.fence else {
                return Err(failure(
                    1,
                    "engine.failover.fence_hook is on but [hooks] fence is not set",
                    false,
                ));
            };
            let vars = [
                ("target", ctx.cfg.site_name(target).to_string()),
                ("epoch", epoch.0.to_string()),
            ];
            run_hook(cmd, Hooks::FENCE_VARS, &vars, HOOK_TIMEOUT)
                .await
                .map_err(|(code, msg)| failure(code, msg, false))
        }
        Command::SwitchIdentity { to, epoch, .. } => match &ctx.hooks.identity {
            Some(cmd) => {
                let vars = [
                    ("site", ctx.cfg.site_name(to).to_string()),
                    ("epoch", epoch.0.to_string()),
                ];
                run_hook(cmd, Hooks::IDENTITY_VARS, &vars, HOOK_TIMEOUT)
                    .await
                    .map_err(|(code, msg)| failure(code, msg, false))
            }
            None => {
                info!(site = %ctx.site_name, "no identity hook configured: nothing to move");
                Ok(())
            }
        },
        Command::RestartService { .. } => match &ctx.hooks.restart {
            Some(cmd) => run_hook(
                cmd,
                Hooks::RESTART_VARS,
                &[("site", ctx.site_name.clone())],
                HOOK_TIMEOUT,
            )
            .await
            .map_err(|(code, msg)| failure(code, msg, false)),
            None => Err(failure(
                1,
                "no [hooks] restart command configured: the service cannot be restarted locally",
                true,
            )),
        },
        _ => {
            let _ = ctx.me;
            Ok(())
        }
    }
}

/// Run `f` for every database; the first failure wins (after trying all of them, so a fence
/// stops as many databases as it can).
fn each_db(
    d: &dyn Driver,
    mut f: impl FnMut(DbId) -> Result<(), drivers::DriverError>,
) -> Result<(), drivers::DriverError> {
    let mut first = None;
    for i in 0..d.databases().len() as u32 {
        if let Err(e) = f(DbId(i)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Every database answers the driver's probe.
fn probe_all(d: &dyn Driver) -> bool {
    (0..d.databases().len() as u32).all(|i| d.probe(DbId(i)).is_ok())
}

/// A drill: restore exactly the chain the core named into the driver's scratch place and check.
async fn drill(
    files: &ArtifactFiles,
    d: Arc<dyn Driver>,
    db: DbId,
    chain: &[ArtifactMeta],
    db_name: &str,
) -> Result<drivers::DrillOutcome, Failure> {
    let chain = drill_files(files, chain, db_name)?;
    blocking(move || d.drill(db, &chain)).await
}

/// The files of the chain a drill restores, exactly as the core named it, in its order. A
/// member missing from the inbox fails the drill (the check of each file's bytes against its
/// manifest is the driver's, before it applies anything).
fn drill_files(
    files: &ArtifactFiles,
    chain: &[ArtifactMeta],
    db_name: &str,
) -> Result<Vec<ArtifactFile>, Failure> {
    if chain.is_empty() {
        return Err(failure(
            drivers::ErrorKind::NotFound.code(),
            format!("the drill of {db_name} names no artifacts to restore"),
            false,
        ));
    }
    chain
        .iter()
        .map(|m| match files.inbox_path(m, db_name) {
            Some(path) => Ok(ArtifactFile {
                path,
                manifest: Manifest::from_meta(m, db_name),
            }),
            None => Err(failure(
                drivers::ErrorKind::NotFound.code(),
                format!(
                    "the {} of {db_name} covering {}..{} that the drill restores is not in the \
                     inbox {}: it was removed by hand or lost",
                    m.key.kind.text_word(),
                    m.key.lsn_start,
                    m.key.lsn_end,
                    files.inbox.display()
                ),
                false,
            )),
        })
        .collect()
}

/// Free space of the file system holding `dir`, in MiB: the blocks available to an
/// unprivileged writer (`statvfs`, what `df` reports as "Available").
async fn free_mib(dir: &std::path::Path) -> Option<u64> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || free_mib_now(&dir))
        .await
        .ok()
        .flatten()
}

pub fn free_mib_now(dir: &std::path::Path) -> Option<u64> {
    let v = rustix::fs::statvfs(dir).ok()?;
    let block = if v.f_frsize > 0 {
        v.f_frsize
    } else {
        v.f_bsize
    };
    Some(v.f_bavail.saturating_mul(block) / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blocking_call_that_hangs_closes_its_gate_and_later_calls_are_skipped_not_queued() {
        let gate: Arc<Gate> = Arc::default();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        // The first call outlives its limit: no answer, and the gate stays closed.
        let late = gated_within(&gate, Duration::from_millis(50), move || {
            let _ = wait.recv();
            7
        })
        .await;
        assert_eq!(late, None);
        let threads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for _ in 0..100 {
            let t = threads.clone();
            let got = gated_within(&gate, Duration::from_millis(50), move || {
                t.fetch_add(1, Ordering::SeqCst);
            })
            .await;
            assert_eq!(got, None);
        }
        assert_eq!(threads.load(Ordering::SeqCst), 0, "a skipped call ran");
        assert_eq!(gate.skipped(), 100);
        // Once the hung call returns, the next one runs.
        release.send(()).unwrap();
        let mut answered = None;
        for _ in 0..100 {
            answered = gated_within(&gate, Duration::from_secs(5), || 8).await;
            if answered.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(answered, Some(8));
    }
    use crate::drivers::{DatabaseSpec, DrillOutcome, DriverError};
    use crate::transport::testkit::{Fault, Proxy};
    use crate::transport::{inbox as ti, Event, Inbox, Listener, TransportConfig};
    use lifeboat_core::{Checksum, Lsn, Peer, UtcMillis};
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[test]
    fn free_space_agrees_with_df_and_a_missing_directory_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let ours = super::free_mib_now(dir.path()).unwrap();
        let out = std::process::Command::new("df")
            .arg("-Pm")
            .arg(dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let df: u64 = text
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap();
        // Other processes write meanwhile: the same figure within 1 % (or 64 MiB).
        let slack = (df / 100).max(64);
        assert!(
            ours.abs_diff(df) <= slack,
            "statvfs {ours} MiB, df {df} MiB"
        );
        assert_eq!(super::free_mib_now(&dir.path().join("missing")), None);
    }

    fn meta(kind: ArtifactKind, s: u64, e: u64, base: Option<u64>) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(0),
                epoch: Epoch(1),
                lsn_start: Lsn(s),
                lsn_end: Lsn(e),
                kind,
            },
            base_full: base.map(Lsn),
            created_utc: UtcMillis(1_795_000_000_000 + e as i64 * 1_000),
            size: 5,
            checksum: Checksum(7),
            retry: 0,
        }
    }

    /// An artifact and its manifest in `dir`.
    fn put(dir: &Path, m: &ArtifactMeta) -> PathBuf {
        let p = dir.join(ti::artifact_file_name(m, "db0"));
        std::fs::write(&p, b"bytes").unwrap();
        crate::drivers::manifest::write_manifest(&p, &Manifest::from_meta(m, "db0")).unwrap();
        p
    }

    /// A driver that only remembers the chains it was asked to drill.
    #[derive(Default)]
    struct Recorder {
        specs: Vec<DatabaseSpec>,
        drilled: Mutex<Vec<Vec<(ArtifactMeta, PathBuf)>>>,
    }

    fn unused<T>() -> Result<T, DriverError> {
        Err(DriverError::new(
            drivers::ErrorKind::Config,
            "not in this test",
        ))
    }

    impl Driver for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        fn databases(&self) -> &[DatabaseSpec] {
            &self.specs
        }
        fn take_backup(&self, _: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError> {
            unused()
        }
        fn position(&self, _: DbId) -> Result<Lsn, DriverError> {
            unused()
        }
        fn restore(&self, _: &ArtifactFile) -> Result<Lsn, DriverError> {
            unused()
        }
        fn reseed(&self, _: &ArtifactFile) -> Result<Lsn, DriverError> {
            unused()
        }
        fn promote(&self, _: DbId, _: Epoch) -> Result<Lsn, DriverError> {
            unused()
        }
        fn fence(&self, _: DbId) -> Result<(), DriverError> {
            unused()
        }
        fn unfence(&self, _: DbId, _: Epoch) -> Result<(), DriverError> {
            unused()
        }
        fn probe(&self, _: DbId) -> Result<(), DriverError> {
            unused()
        }
        fn drill(&self, db: DbId, chain: &[ArtifactFile]) -> Result<DrillOutcome, DriverError> {
            let got = chain
                .iter()
                .map(|f| (f.manifest.meta(), f.path.clone()))
                .collect();
            self.drilled.lock().unwrap().push(got);
            Ok(DrillOutcome {
                db,
                position: chain
                    .last()
                    .map_or(Lsn(0), |f| f.manifest.meta().key.lsn_end),
                applied: chain.len(),
                check: "ok".into(),
            })
        }
    }

    /// The adapter chooses nothing: the inbox holds an older full, a newer full the position
    /// has not reached, and logs on either side, and the drill restores exactly the full, the
    /// incremental and the log the command names, in its order.
    #[tokio::test]
    async fn a_drill_restores_exactly_the_chain_the_command_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = ArtifactFiles::open(dir.path()).unwrap();
        let old_full = meta(ArtifactKind::Full, 0, 0, None);
        let full = meta(ArtifactKind::Full, 100, 100, None);
        let covered = meta(ArtifactKind::Log, 100, 150, None);
        let incr = meta(ArtifactKind::Incremental, 100, 180, Some(100));
        let log = meta(ArtifactKind::Log, 180, 200, None);
        let later = meta(ArtifactKind::Log, 200, 260, None);
        let newer_full = meta(ArtifactKind::Full, 250, 250, None);
        let mut paths = BTreeMap::new();
        for m in [old_full, full, covered, incr, log, later, newer_full] {
            paths.insert(m.key, put(&files.inbox, &m));
        }
        let d = Arc::new(Recorder::default());
        let chain = vec![full, incr, log];
        let out = drill(&files, d.clone(), DbId(0), &chain, "db0")
            .await
            .unwrap();
        assert_eq!((out.position, out.applied), (Lsn(200), 3));
        let drilled = d.drilled.lock().unwrap().clone();
        assert_eq!(drilled.len(), 1);
        let want: Vec<(ArtifactMeta, PathBuf)> =
            chain.iter().map(|m| (*m, paths[&m.key].clone())).collect();
        assert_eq!(drilled[0], want);
    }

    /// A member of the chain missing from the inbox fails the drill (the core raises
    /// `drill_failed`) before the driver restores anything; no other file stands in for it.
    #[tokio::test]
    async fn a_drill_whose_chain_is_not_all_in_the_inbox_fails_before_restoring_anything() {
        let dir = tempfile::tempdir().unwrap();
        let files = ArtifactFiles::open(dir.path()).unwrap();
        let full = meta(ArtifactKind::Full, 100, 100, None);
        let gone = meta(ArtifactKind::Log, 100, 150, None);
        let log = meta(ArtifactKind::Log, 150, 200, None);
        // Another log covering the missing one's range is no substitute.
        let wider = meta(ArtifactKind::Log, 100, 160, None);
        for m in [full, log, wider] {
            put(&files.inbox, &m);
        }
        let d = Arc::new(Recorder::default());
        let err = drill(&files, d.clone(), DbId(0), &[full, gone, log], "db0")
            .await
            .unwrap_err();
        assert_eq!(err.code, drivers::ErrorKind::NotFound.code());
        assert!(err.message.contains("100..150"), "{}", err.message);
        assert!(d.drilled.lock().unwrap().is_empty());
    }

    /// The transport no longer retries a ship on its own: every `Ship` is one attempt, and each
    /// failed attempt reaches the core once, as `ShipFailed` with that command's operation id.
    /// The next `Ship` the core issues resumes where the receiver stopped.
    #[tokio::test]
    async fn every_failed_ship_attempt_is_reported_to_the_core_once() {
        const MIB: u64 = 1024 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let (tx, mut events) = mpsc::channel::<Event>(64);
        let inbox = Inbox::open(dir.path().join("peer-inbox"), vec!["db0".into()]).unwrap();
        let cfg = TransportConfig {
            chunk_size: 256 * 1024,
            ..TransportConfig::default()
        };
        let me = Peer::Site(SiteId(0));
        let listener = Listener::bind("127.0.0.1:0", Peer::Site(SiteId(1)), inbox, cfg.clone(), tx)
            .await
            .unwrap();
        // Every ship connection is cut after 1 MiB, twice in all.
        let proxy = Proxy::start(listener.local_addr(), Fault::CutAfter(MIB), 2).await;
        let (etx, _erx) = mpsc::channel(64);
        let transport = Arc::new(Transport::connect(proxy.addr.to_string(), me, cfg, etx));

        let files = Arc::new(ArtifactFiles::open(dir.path()).unwrap());
        let mut m = meta(ArtifactKind::Log, 100, 200, None);
        let path = files.outbox.join(ti::artifact_file_name(&m, "db0"));
        let bytes: Vec<u8> = (0..3 * MIB).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let (size, checksum) = crate::drivers::hash_file(&path).unwrap();
        (m.size, m.checksum) = (size, checksum);
        crate::drivers::manifest::write_manifest(&path, &Manifest::from_meta(&m, "db0")).unwrap();
        files.remember_outbox(m.key, path);

        let (ftx, mut inputs) = mpsc::channel(64);
        let feed = crate::engine_loop::Feed(ftx);
        let name = ti::artifact_file_name(&m, "db0");
        let to = SiteId(1);
        for attempt in 1..=2u64 {
            let op = OpId(attempt);
            ship_once(
                feed.clone(),
                files.clone(),
                transport.clone(),
                op,
                m,
                to,
                name.clone(),
            )
            .await;
            assert_eq!(proxy.fired(), attempt as u32, "one connection per attempt");
            match inputs.try_recv() {
                Ok(Input::ShipFailed { op: got, key, .. }) => {
                    assert_eq!((got, key), (op, m.key));
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
            assert!(inputs.try_recv().is_err(), "reported exactly once");
        }
        // The third attempt gets through, resuming, and reports nothing (the ack is the peer's).
        ship_once(feed, files, transport, OpId(3), m, to, name).await;
        assert_eq!(proxy.fired(), 2);
        assert!(inputs.try_recv().is_err());
        let received = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(Event::ArtifactReceived { meta, computed, .. }) = events.recv().await {
                    return (meta, computed);
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(received, (m, m.checksum));
    }
}
