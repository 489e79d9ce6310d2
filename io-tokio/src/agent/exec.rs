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
use crate::driver::{self, ArtifactFile, BackupRequest, Driver, Manifest};
use crate::status::StatusBoard;
use crate::transport::Transport;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{Command, Failure, Input, ProbeTarget};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Config, DbId, Epoch, Lsn, OpId, SiteId,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Time limit of a hook command (fence, identity, restart).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

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
    /// The epoch while this site is the writable primary, else 0: logs the database finishes
    /// on its own are collected and announced only then.
    writable_epoch: Arc<AtomicU64>,
}

/// How often the driver is asked for logs the database finished on its own.
const COLLECT_LOGS_EVERY: Duration = Duration::from_millis(500);

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
            writable_epoch: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The site's artifact files (the agent's start-up scans).
    pub fn files(&self) -> &Arc<ArtifactFiles> {
        &self.files
    }

    /// The engine's role after a batch of inputs: the epoch when it is the writable primary.
    pub fn set_writable_epoch(&self, epoch: Option<Epoch>) {
        self.writable_epoch
            .store(epoch.map_or(0, |e| e.0), Ordering::SeqCst);
    }

    /// Periodic work that feeds the engine facts: free disk space, local health.
    pub fn start_background(self: &Arc<Self>, file: &SiteFile) {
        let me = self.clone();
        let every = Duration::from_millis(file.disk.check_every_ms);
        let dir = file.data_dir.clone();
        tokio::spawn(async move {
            loop {
                if let Some(free_mib) = free_mib(&dir).await {
                    me.feed.send(Input::DiskSpace { free_mib }).await;
                }
                tokio::time::sleep(every).await;
            }
        });
        // Logs the database finished by itself (PostgreSQL's archive_timeout) ship at once,
        // not at the next scheduled log backup.
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(COLLECT_LOGS_EVERY).await;
                let epoch = me.writable_epoch.load(Ordering::SeqCst);
                if epoch == 0 {
                    continue;
                }
                let (d, outbox) = (me.driver.clone(), me.files.outbox.clone());
                let made = tokio::task::spawn_blocking(move || {
                    let mut out = Vec::new();
                    for i in 0..d.databases().len() as u32 {
                        let req = BackupRequest {
                            db: DbId(i),
                            kind: ArtifactKind::Log,
                            epoch: Epoch(epoch),
                            created_utc: crate::status::utc_now(),
                            outbox: outbox.clone(),
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
                    me.files.remember_outbox(meta.key, a.path.clone());
                    me.feed.send(Input::ArtifactDiscovered(meta)).await;
                }
            }
        });
        let me = self.clone();
        let every = Duration::from_millis(file.engine.failover.probe_every_ms.max(100));
        tokio::spawn(async move {
            loop {
                let d = me.driver.clone();
                let ok = tokio::task::spawn_blocking(move || probe_all(&*d))
                    .await
                    .unwrap_or(false);
                me.board.set_health(ok);
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Execute one command; never blocks the engine loop.
    pub fn execute(&self, cmd: Command, engine: &SiteEngine) {
        let epoch = engine.epoch();
        match cmd {
            Command::Ship { op, artifact, to } => self.ship(op, artifact, to),
            Command::TakeBackup { .. }
            | Command::Restore { .. }
            | Command::Reseed { .. }
            | Command::Drill { .. } => {
                let _ = self.data_q.send(Job { cmd, epoch });
            }
            Command::Fence { .. }
            | Command::AllowWrites { .. }
            | Command::Promote { .. }
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
            Command::Prune { db, before } => {
                // Keep what the engine still needs: pending and in-flight artifacts.
                let mut keep: BTreeSet<ArtifactKey> = BTreeSet::new();
                if let Some(d) = engine.db(db) {
                    keep.extend(d.pending.iter().map(|p| p.meta.key));
                    keep.extend(d.in_flight.map(|(_, k)| k));
                    keep.extend(d.retained_full.as_deref().map(|m| m.key));
                }
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
            Command::SamplePositions => {
                let d = self.driver.clone();
                let feed = self.feed.clone();
                tokio::spawn(async move {
                    let n = d.databases().len() as u32;
                    let got = tokio::task::spawn_blocking(move || {
                        (0..n)
                            .filter_map(|i| d.position(DbId(i)).ok().map(|l| (DbId(i), l)))
                            .collect::<Vec<_>>()
                    })
                    .await;
                    for (db, lsn) in got.unwrap_or_default() {
                        feed.send(Input::WritePosition { db, lsn }).await;
                    }
                });
            }
        }
    }

    fn ship(&self, op: OpId, meta: ArtifactMeta, to: SiteId) {
        let feed = self.feed.clone();
        let files = self.files.clone();
        let transport = self.ship.clone();
        let name =
            crate::transport::inbox::artifact_file_name(&meta, self.cfg.db_name(meta.key.db));
        let _ = self.me;
        tokio::spawn(async move {
            let key = meta.key;
            let Some(path) = files.outbox_path(&key) else {
                let reason = format!(
                    "{name} is not in the outbox {} (removed by hand?); a new backup will \
                     replace it",
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
            let result = transport.ship(meta, &path).await;
            match result {
                Ok(s) => debug!(file = %name, resumed_from = s.resumed_from, "shipped"),
                Err(e) => {
                    debug!(error = %e, "ship failed");
                    feed.send(Input::ShipFailed {
                        op,
                        key,
                        to,
                        reason: e.to_string(),
                    })
                    .await;
                }
            }
        });
    }

    fn probe(&self) {
        let prober = self.prober.clone();
        let feed = self.feed.clone();
        let driver = self.driver.clone();
        tokio::spawn(async move {
            let site = prober.site();
            let service = async {
                for p in prober.service_probes() {
                    let ok = match prober.one(p).await {
                        Some(ok) => ok,
                        None => {
                            debug_assert!(matches!(p, ProbeConfig::Sql));
                            let d = driver.clone();
                            tokio::task::spawn_blocking(move || probe_all(&*d))
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
    f: impl FnOnce() -> Result<T, driver::DriverError> + Send + 'static,
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
                })
                .collect();
            let made = blocking(move || {
                let mut out = Vec::new();
                for req in &reqs {
                    out.extend(d.take_backup(req)?);
                }
                Ok(out)
            })
            .await?;
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
                    driver::ErrorKind::NotFound.code(),
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
                json!({"work": if reseed {"reseed"} else {"restore"}, "db": name,
                       "lsn_start": artifact.key.lsn_start.0, "lsn_end": artifact.key.lsn_end.0,
                       "size": artifact.size}),
            );
            let r = blocking(move || {
                let file = ArtifactFile {
                    path,
                    manifest: Manifest::from_meta(&artifact, &name),
                };
                // Never apply bytes that differ from the manifest, whatever happened on disk.
                driver::check_bytes(&file)?;
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
            }
            r
        }
        Command::Drill { db, upto, .. } => {
            let chain = drill_chain(&ctx.files, db, upto, ctx.cfg.db_name(db))?;
            let out = blocking(move || d.drill(db, &chain)).await?;
            info!(db = ctx.cfg.db_name(db), position = out.position.0, applied = out.applied,
                  check = %out.check, "drill done");
            Ok(())
        }
        Command::Fence { .. } => blocking(move || each_db(&*d, |db| d.fence(db))).await,
        Command::AllowWrites { epoch, .. } => {
            blocking(move || each_db(&*d, |db| d.unfence(db, epoch))).await
        }
        Command::Promote { epoch, .. } => {
            let r = blocking(move || each_db(&*d, |db| d.promote(db, epoch).map(drop))).await;
            if r.is_ok() {
                crate::crash::point("promote_before_report");
            }
            r
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
            run_hook(cmd, &vars, HOOK_TIMEOUT)
                .await
                .map_err(|(code, msg)| failure(code, msg, false))
        }
        Command::SwitchIdentity { to, epoch, .. } => match &ctx.hooks.identity {
            Some(cmd) => {
                let vars = [
                    ("site", ctx.cfg.site_name(to).to_string()),
                    ("epoch", epoch.0.to_string()),
                ];
                run_hook(cmd, &vars, HOOK_TIMEOUT)
                    .await
                    .map_err(|(code, msg)| failure(code, msg, false))
            }
            None => {
                info!(site = %ctx.site_name, "no identity hook configured: nothing to move");
                Ok(())
            }
        },
        Command::RestartService { .. } => match &ctx.hooks.restart {
            Some(cmd) => run_hook(cmd, &[("site", ctx.site_name.clone())], HOOK_TIMEOUT)
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
    mut f: impl FnMut(DbId) -> Result<(), driver::DriverError>,
) -> Result<(), driver::DriverError> {
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

/// The chain a drill restores: the newest full at or below `upto` in the inbox, then the
/// artifacts that continue it, each reaching furthest, up to `upto`.
fn drill_chain(
    files: &ArtifactFiles,
    db: DbId,
    upto: Lsn,
    db_name: &str,
) -> Result<Vec<ArtifactFile>, Failure> {
    let all: Vec<(ArtifactMeta, std::path::PathBuf)> = files
        .scan(false)
        .into_iter()
        .filter(|(m, _)| m.key.db == db && m.key.lsn_end <= upto)
        .collect();
    let Some((full, path)) = all
        .iter()
        .filter(|(m, _)| m.key.kind == ArtifactKind::Full)
        .max_by_key(|(m, _)| m.key.lsn_end)
        .cloned()
    else {
        return Err(failure(
            driver::ErrorKind::NotFound.code(),
            format!("no full backup of {db_name} up to {upto} in the inbox to drill from"),
            false,
        ));
    };
    let as_file = |m: &ArtifactMeta, p: &std::path::PathBuf| ArtifactFile {
        path: p.clone(),
        manifest: Manifest::from_meta(m, db_name),
    };
    let mut chain = vec![as_file(&full, &path)];
    let mut pos = full.key.lsn_end;
    while pos < upto {
        let next = all
            .iter()
            .filter(|(m, _)| m.key.kind != ArtifactKind::Full)
            .filter(|(m, _)| m.key.lsn_start <= pos && pos < m.key.lsn_end)
            .filter(|(m, _)| {
                m.key.kind == ArtifactKind::Log || m.base_full == Some(full.key.lsn_end)
            })
            .max_by_key(|(m, _)| m.key.lsn_end);
        let Some((m, p)) = next else { break };
        chain.push(as_file(m, p));
        pos = m.key.lsn_end;
    }
    Ok(chain)
}

/// Free space of the file system holding `dir`, in MiB (`df -Pm`, no unsafe statvfs).
async fn free_mib(dir: &std::path::Path) -> Option<u64> {
    let out = tokio::process::Command::new("df")
        .arg("-Pm")
        .arg(dir)
        .output()
        .await
        .ok()?;
    parse_df(&String::from_utf8_lossy(&out.stdout))
}

/// The "Available" column of `df -P` output's second line.
pub fn parse_df(text: &str) -> Option<u64> {
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn df_output_gives_the_available_mebibytes() {
        let t = "Filesystem 1048576-blocks Used Available Capacity Mounted on\n\
                 /dev/sda1 100000 40000 60000 40% /\n";
        assert_eq!(super::parse_df(t), Some(60000));
        assert_eq!(super::parse_df("garbage"), None);
    }
}
