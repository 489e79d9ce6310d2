//! The `postgres` driver: WAL archiving, base backups, a warm standby, promotion and reseed of
//! real PostgreSQL (15) clusters.
//!
//! ```text
//! primary site                                   recovery site
//! PostgreSQL --archive_command--> wal-push       wal-fetch <--restore_command-- PostgreSQL
//!                                   | spool/push          ^ spool/serve         (standby.signal)
//!            take_backup(Log) ------+                     |
//!            take_backup(Full): pg_basebackup             +---- restore(artifact): serve, then
//!                                   v outbox                    wait for pg_last_wal_replay_lsn()
//!                        ship + verify (transport) ----> inbox
//! ```
//!
//! **Positions.** lifeboat's `Lsn` is PostgreSQL's WAL position ([`wal`]); segment `n` covers
//! `[n*s, (n+1)*s)`; a full backup covers `[start, end)` of `pg_basebackup`'s WAL start and end
//! points (its backup label and manifest say the same), and restoring it brings a standby to
//! `end` (the consistency point).
//!
//! **Timelines and epochs.** An artifact carries lifeboat's epoch in its manifest (the epoch the
//! primary held when `take_backup` published it; the core quarantines older ones) and
//! PostgreSQL's timeline in its own header ([`segment`]), with the timeline's `.history` file.
//! Every promotion (failover or switchover) happens at a new epoch and starts a new timeline;
//! not every new epoch starts a timeline (a primary that re-acquires its lease keeps its own).
//! The driver records each `(epoch, timeline)` pair it sees in its state file. Positions never
//! go back across timelines, so the chain rule needs no timeline: the first segment of timeline
//! `t+1` covers the same range as the last of `t` with a newer epoch, and `restore` serves it
//! with its `.history` file so the standby follows the switch.
//!
//! **`.partial` and `.backup` files** are made durable (PostgreSQL may then recycle them) and
//! kept aside, never shipped: a `.partial` is the old timeline's tail that the promoted site
//! itself replayed. The fenced primary's last, incomplete segment *is* shipped, as a *final*
//! segment covering `[n*s, end of valid WAL)`; if writes resume, the complete segment covers
//! more and has a different key.
//!
//! **Restore of a segment** makes it servable (manifest, then artifact, into `serve/`), then
//! waits until `pg_last_wal_replay_lsn()` reaches the end of the last record inside the segment
//! (found by walking its records when it was pushed), or until PostgreSQL, which reads one
//! record ahead of replay, asks for the next segment with replay at that last record's start:
//! it has then read and CRC-checked every record of the segment. (`recovery_prefetch = off`
//! keeps the read-ahead to that one record.) The driver remembers the position reached and
//! refuses a segment that starts beyond it: a hole is never served. PostgreSQL never tells `restore_command`
//! that it rejected a segment: the driver reads the server log for a rejection at a position
//! inside the segment (`incorrect resource manager data checksum in record at 0/3000A50`,
//! `invalid magic number`, …), and calls replay that stalls while PostgreSQL keeps asking for
//! the same segment a rejection too. Either fails the restore with PostgreSQL's own words and
//! removes the segment from `serve/`. A damaged servable copy is refused by `wal-fetch` before
//! PostgreSQL sees it, and the restore fails as a checksum mismatch.
//!
//! **Fence** = `pg_ctl stop -m fast` (or `fence_command`); a standby is not stopped. **Promote**
//! = `pg_ctl promote -w`. **Reseed** = stop, move the old data directory aside, extract the base
//! backup, keep the site's own configuration files, write `standby.signal`, start, wait for
//! consistency, then remove the old copy (or put it back on failure). A cleanly stopped former
//! primary asked to restore a segment becomes a standby by itself (planned switchover: it
//! replays the new primary's timeline without a reseed); a crashed one may have diverged and
//! must be reseeded.

pub mod cli;
pub mod config;
pub mod segment;
pub mod spool;
pub mod wal;

mod diverged;
mod drill;
pub mod pitr;
mod primary;
mod reseed;
mod server;
mod setup;
mod standby;
mod state;
pub mod stream;

pub use cli::{wal_fetch, wal_push, Fetched, Pushed, WalError};
pub use config::{PgDatabase, PostgresConfig, WalConfig};
pub use server::{Running, Server};
pub use standby::Served;

use crate::drivers::{
    ArtifactFile, BackupRequest, DatabaseSpec, Discovery, DrillOutcome, Driver, DriverError,
    ErrorKind,
};
use lifeboat_core::{ArtifactKind, DbId, Epoch, Lsn};
use server::RunAs;
use state::PgState;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// One cluster the driver manages.
struct Slot {
    id: DbId,
    server: Server,
    wal: WalConfig,
    wal_toml: PathBuf,
    /// Serialises the operations on this database and holds its persistent state.
    state: Mutex<PgState>,
    /// The WAL receiver while this site is the secondary (`stream = true`).
    receiver: Option<std::sync::Arc<stream::Receiver>>,
    /// Synchronous mode degraded after `synchronous_timeout_ms` without the recovery site.
    sync_degraded: std::sync::atomic::AtomicBool,
    /// The cluster's segment size once known (a recovery site may have no cluster at start).
    seg_size: std::sync::atomic::AtomicU64,
    /// The primary's watch over the stream (slot bound, synchronous mode).
    watch: Mutex<stream::Watch>,
    /// A standby looked for a slot left from when it was the primary (once per start).
    stale_slot_checked: std::sync::atomic::AtomicBool,
}

impl Slot {
    fn name(&self) -> &str {
        &self.server.db.name
    }
    /// The cluster's WAL segment size (`pg_controldata` once), 0 without a cluster.
    fn segment_size(&self) -> u64 {
        use std::sync::atomic::Ordering;
        if self.wal.segment_size > 0 {
            return self.wal.segment_size;
        }
        let known = self.seg_size.load(Ordering::Relaxed);
        if known > 0 {
            return known;
        }
        let size = setup::segment_size(&self.server).unwrap_or(0);
        self.seg_size.store(size, Ordering::Relaxed);
        size
    }
    fn lock(&self) -> MutexGuard<'_, PgState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The postgres driver. See the module documentation.
pub struct PostgresDriver {
    cfg: PostgresConfig,
    specs: Vec<DatabaseSpec>,
    run_as: RunAs,
    slots: Vec<Slot>,
    /// Lost writes the reseeds found, until the agent takes them.
    lost: Mutex<Vec<lifeboat_core::protocol::LostWrites>>,
}

impl PostgresDriver {
    /// A driver for the configured clusters (index = [`DbId`]). Creates each database's spool
    /// (owned by PostgreSQL's user), writes its `wal.toml` and the cluster's `lifeboat.conf`
    /// when the cluster exists. Starts and stops nothing.
    pub fn open(cfg: PostgresConfig) -> Result<PostgresDriver, DriverError> {
        let run_as = RunAs::from_config(&cfg)?;
        let specs: Vec<DatabaseSpec> = cfg
            .databases
            .iter()
            .map(|d| DatabaseSpec {
                name: d.name.clone(),
                path: d.data_dir.clone(),
            })
            .collect();
        check_names(&specs)?;
        let mut slots = Vec::new();
        for (i, db) in cfg.databases.iter().enumerate() {
            let server = Server::new(&cfg, db, run_as.clone());
            let spool_dir = cfg.db_spool(&db.name);
            let wal = WalConfig {
                format_version: config::WAL_CONFIG_VERSION,
                db: db.name.clone(),
                spool: spool_dir.clone(),
                segment_size: 0,
                fetch_wait_ms: cfg.fetch_wait_ms,
            };
            let state = PgState::load(&spool_dir)?;
            let receiver = cfg
                .stream
                .then(|| stream::Receiver::new(&cfg, &db.name, &db.user, spool_dir.join("stream")));
            let slot = Slot {
                id: DbId(i as u32),
                server,
                wal,
                wal_toml: spool_dir.join("wal.toml"),
                state: Mutex::new(state),
                receiver,
                sync_degraded: Default::default(),
                seg_size: Default::default(),
                watch: Default::default(),
                stale_slot_checked: Default::default(),
            };
            setup::prepare_spool(&slot.wal, run_as.ids)?;
            let mut slot = slot;
            if let Some(size) = setup::segment_size(&slot.server) {
                slot.wal.segment_size = size;
            }
            setup::write_wal_toml(&slot.wal, &slot.wal_toml, run_as.ids)?;
            if slot.server.running() != Running::NoCluster {
                setup::write_cluster_conf(&cfg, &slot, run_as.ids)?;
            }
            slots.push(slot);
        }
        Ok(PostgresDriver {
            cfg,
            specs,
            run_as,
            slots,
            lost: Mutex::default(),
        })
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &PostgresConfig {
        &self.cfg
    }

    /// The server of `db` (for tests, tools and the status page).
    pub fn server(&self, db: DbId) -> Result<&Server, DriverError> {
        Ok(&self.slot(db)?.server)
    }

    /// The `wal.toml` that `archive_command` / `restore_command` name for `db`.
    pub fn wal_config_path(&self, db: DbId) -> Result<&Path, DriverError> {
        Ok(&self.slot(db)?.wal_toml)
    }

    /// The `wal-push` / `wal-fetch` configuration of `db`.
    pub fn wal_config(&self, db: DbId) -> Result<&WalConfig, DriverError> {
        Ok(&self.slot(db)?.wal)
    }

    /// `archive_command` and `restore_command` exactly as `lifeboat.conf` sets them.
    pub fn commands(&self, db: DbId) -> Result<(String, String), DriverError> {
        let slot = self.slot(db)?;
        Ok(setup::commands(&self.cfg, &slot.wal_toml))
    }

    /// (Re)write `lifeboat.conf` of `db` and make `postgresql.conf` include it. A running
    /// server reloads it (`archive_mode` itself needs a restart).
    pub fn configure(&self, db: DbId) -> Result<(), DriverError> {
        let slot = self.slot(db)?;
        setup::write_cluster_conf(&self.cfg, slot, self.run_as.ids)?;
        if slot.server.running() == Running::Yes {
            slot.server.query("select pg_reload_conf()")?;
        }
        Ok(())
    }

    /// The `(epoch, timeline)` pairs this site has seen for `db`, oldest first.
    pub fn timelines(&self, db: DbId) -> Result<Vec<(Epoch, u32)>, DriverError> {
        Ok(self
            .slot(db)?
            .lock()
            .timelines
            .iter()
            .map(|t| (Epoch(t.epoch), t.timeline))
            .collect())
    }

    /// Secondary, in two steps (what `restore` does for a segment): make a segment servable…
    pub fn serve(&self, artifact: &ArtifactFile) -> Result<Served, DriverError> {
        let slot = self.slot_for(artifact)?;
        let mut st = slot.lock();
        standby::serve(self, slot, &mut st, artifact)
    }

    /// …then wait until PostgreSQL replayed it (or rejected it).
    pub fn await_replay(&self, served: &Served) -> Result<Lsn, DriverError> {
        let slot = self.slot(served.db)?;
        let mut st = slot.lock();
        standby::await_replay(self, slot, &mut st, served)
    }

    fn slot(&self, db: DbId) -> Result<&Slot, DriverError> {
        self.slots.get(db.0 as usize).ok_or_else(|| {
            DriverError::new(
                ErrorKind::Config,
                format!(
                    "the postgres driver has no database {db} (it knows {}): the driver's \
                     database list must match the configuration's `databases`",
                    self.slots.len()
                ),
            )
        })
    }

    fn slot_for(&self, artifact: &ArtifactFile) -> Result<&Slot, DriverError> {
        let slot = self.slot(artifact.manifest.db_id)?;
        if artifact.manifest.db != slot.name() {
            return Err(DriverError::new(
                ErrorKind::Config,
                format!(
                    "artifact {} is for database {:?}, but {} on this site is {:?}: both sites \
                     must list the same databases in the same order",
                    artifact.path.display(),
                    artifact.manifest.db,
                    artifact.manifest.db_id,
                    slot.name()
                ),
            ));
        }
        Ok(slot)
    }
}

fn check_names(specs: &[DatabaseSpec]) -> Result<(), DriverError> {
    for (i, spec) in specs.iter().enumerate() {
        if spec.name.is_empty() || spec.name.contains(['/', '\0']) || spec.name.starts_with('.') {
            return Err(DriverError::new(
                ErrorKind::Config,
                format!(
                    "postgres driver: database name {:?} is empty, starts with `.` or contains \
                     `/`; it must be usable in artifact file names",
                    spec.name
                ),
            ));
        }
        if specs[..i].iter().any(|o| o.name == spec.name) {
            return Err(DriverError::new(
                ErrorKind::Config,
                format!("postgres driver: database {:?} is listed twice", spec.name),
            ));
        }
    }
    Ok(())
}

impl Driver for PostgresDriver {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn databases(&self) -> &[DatabaseSpec] {
        &self.specs
    }

    fn take_backup(&self, request: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError> {
        let slot = self.slot(request.db)?;
        let mut st = slot.lock();
        match request.kind {
            ArtifactKind::Full => {
                primary::base_backup(self, slot, &mut st, request).map(|a| vec![a])
            }
            // PostgreSQL 15 has no incremental backups: WAL is the increment.
            ArtifactKind::Log | ArtifactKind::Incremental => {
                primary::ship_wal(self, slot, &mut st, request)
            }
        }
    }

    fn collects_logs(&self) -> bool {
        true
    }

    fn collect_logs(&self, request: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError> {
        let slot = self.slot(request.db)?;
        // Cheap when PostgreSQL archived nothing: one directory listing, no server round trip.
        if !primary::has_pushed(slot) {
            return Ok(Vec::new());
        }
        // A backup or a restore holds the database: the next call publishes.
        let Ok(mut st) = slot.state.try_lock() else {
            return Ok(Vec::new());
        };
        primary::publish_pushed(slot, &mut st, request)
    }

    fn discover(&self, dir: &Path) -> Result<Discovery, DriverError> {
        crate::drivers::manifest::discover(dir)
    }

    fn position(&self, db: DbId) -> Result<Lsn, DriverError> {
        let slot = self.slot(db)?;
        // A restore may hold the database for a while: the server answers for itself then.
        match slot.state.try_lock() {
            Ok(st) => standby::position(slot, &st),
            Err(_) => standby::position(slot, &PgState::default()),
        }
    }

    fn restore(&self, artifact: &ArtifactFile) -> Result<Lsn, DriverError> {
        let slot = self.slot_for(artifact)?;
        let mut st = slot.lock();
        // A segment is checked against its manifest by `serve`, on the bytes it copies.
        if artifact.manifest.kind != ArtifactKind::Log {
            crate::drivers::check_bytes(artifact)?;
        }
        match artifact.manifest.kind {
            ArtifactKind::Full => reseed::reseed(self, slot, &mut st, artifact),
            ArtifactKind::Log => {
                let served = standby::serve(self, slot, &mut st, artifact)?;
                let reached = standby::await_replay(self, slot, &mut st, &served)?;
                if let Some(r) = &slot.receiver {
                    stream::prune(r.dir(), slot.segment_size(), reached.0);
                    if !slot
                        .stale_slot_checked
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        // A former primary that follows without a reseed (switchover) keeps
                        // the slot the other site's receiver held on it: unused, it would
                        // keep WAL here up to its bound.
                        if let Err(e) = slot.server.query(stream::DROP_STALE_SLOT_SQL) {
                            tracing::warn!(db = slot.name(), error = %e, "dropping a stale slot failed");
                        }
                    }
                }
                Ok(reached)
            }
            ArtifactKind::Incremental => Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "{}: PostgreSQL 15 has no incremental backups; the postgres driver never \
                     makes one (was it shipped by another driver?)",
                    artifact.describe()
                ),
            )),
        }
    }

    fn reseed(&self, full: &ArtifactFile) -> Result<Lsn, DriverError> {
        let slot = self.slot_for(full)?;
        let mut st = slot.lock();
        crate::drivers::check_bytes(full)?;
        reseed::reseed(self, slot, &mut st, full)
    }

    fn take_lost_writes(&self) -> Vec<lifeboat_core::protocol::LostWrites> {
        std::mem::take(&mut *self.lost.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn promote(&self, db: DbId, epoch: Epoch) -> Result<Lsn, DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        standby::promote(self, slot, &mut st, epoch, standby::Stream::Replay)
    }

    fn promote_restored(&self, db: DbId, epoch: Epoch) -> Result<Lsn, DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        standby::promote(self, slot, &mut st, epoch, standby::Stream::Leave)
    }

    fn fence(&self, db: DbId) -> Result<(), DriverError> {
        let slot = self.slot(db)?;
        let _st = slot.lock();
        primary::fence(self, slot)
    }

    fn unfence(&self, db: DbId, epoch: Epoch) -> Result<(), DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        primary::unfence(self, slot, &mut st, epoch)
    }

    fn probe(&self, db: DbId) -> Result<(), DriverError> {
        let slot = self.slot(db)?;
        slot.server.query_one("select 1").map(drop)
    }

    fn tunnel_targets(&self) -> Vec<Option<String>> {
        self.slots
            .iter()
            .map(|s| {
                s.receiver.as_ref()?;
                // A socket directory is not reachable by TCP: the server's loopback then.
                let db = &s.server.db;
                let host = if db.host.starts_with('/') {
                    "127.0.0.1"
                } else {
                    db.host.as_str()
                };
                Some(format!("{host}:{}", db.port))
            })
            .collect()
    }

    fn watch_streams(&self) -> Vec<(DbId, lifeboat_core::protocol::StreamAlarm, bool, String)> {
        let mut out = Vec::new();
        if !self.cfg.stream {
            return out;
        }
        for slot in &self.slots {
            let s = &slot.server;
            let mut w = slot.watch.lock().unwrap_or_else(|e| e.into_inner());
            // Only a primary keeps a slot and waits for confirmations.
            if s.running() != Running::Yes || s.in_recovery().unwrap_or(true) {
                out.extend(
                    w.reset()
                        .into_iter()
                        .map(|(a, on, what)| (slot.id, a, on, what)),
                );
                continue;
            }
            if let Ok(rows) = s.query(stream::SLOT_HEALTH_SQL) {
                let health = stream::slot_health(&rows);
                if let Some((a, on, what)) = w.slot(&health, self.cfg.max_slot_wal_keep_mb) {
                    out.push((slot.id, a, on, what));
                }
            }
            if !self.cfg.synchronous {
                continue;
            }
            let streaming = s
                .query_one(stream::RECEIVER_SQL)
                .is_ok_and(|n| n.trim() != "0");
            let (change, alarm) = w.synchronous(
                streaming,
                slot.sync_degraded.load(std::sync::atomic::Ordering::SeqCst),
                std::time::Instant::now(),
                std::time::Duration::from_millis(self.cfg.synchronous_timeout_ms),
                self.cfg.on_synchronous_timeout == config::OnSynchronousTimeout::Degrade,
            );
            if let Some(degraded) = change {
                use std::sync::atomic::Ordering;
                slot.sync_degraded.store(degraded, Ordering::SeqCst);
                let applied = setup::write_cluster_conf(&self.cfg, slot, self.run_as.ids)
                    .and_then(|()| s.query("select pg_reload_conf()").map(drop));
                match applied {
                    Ok(()) => {
                        tracing::warn!(db = slot.name(), degraded, "synchronous mode changed")
                    }
                    Err(e) => {
                        // Asked again at the next look (the watch compares with the flag).
                        slot.sync_degraded.store(!degraded, Ordering::SeqCst);
                        let _ = setup::write_cluster_conf(&self.cfg, slot, self.run_as.ids);
                        tracing::warn!(db = slot.name(), degraded, error = %e,
                                       "synchronous mode could not be changed; trying again")
                    }
                }
            }
            if let Some((a, on, what)) = alarm {
                out.push((slot.id, a, on, what));
            }
        }
        out
    }

    fn stream_reports(&self) -> Vec<crate::drivers::StreamReport> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let r = slot.receiver.as_ref()?;
                let st = r.state();
                Some(crate::drivers::StreamReport {
                    db: slot.id,
                    receiving: st.source.is_some(),
                    running: st.running,
                    starts: st.starts,
                    received: stream::received_end(r.dir(), slot.segment_size()),
                    last_error: st.last_error,
                })
            })
            .collect()
    }

    fn receive_from(&self, db: DbId, source: Option<std::net::SocketAddr>) {
        if let Some(r) = self
            .slots
            .get(db.0 as usize)
            .and_then(|s| s.receiver.as_ref())
        {
            r.set_source(source);
        }
    }

    fn drill(&self, db: DbId, chain: &[ArtifactFile]) -> Result<DrillOutcome, DriverError> {
        let slot = self.slot(db)?;
        drill::drill(self, slot, chain)
    }
}
