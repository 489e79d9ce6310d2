//! The embedded default driver: SQLite databases, bundled SQLite, no external tools.
//!
//! **Two modes.** A database the application runs in WAL mode is captured from its WAL
//! (`sqlite/capture.rs`: each log costs what changed; positions count committed transactions;
//! the application keeps WAL mode). A database in rollback-journal mode is captured by snapshots
//! as below. `locking_mode=EXCLUSIVE` in the application is not supported (the driver could
//! never read).
//!
//! **LSN in rollback-journal mode.** The database header's *file change counter* (offset 24,
//! big-endian u32), which SQLite increments once per committed write transaction in
//! rollback-journal mode. So the LSN counts committed transactions and an RPO in transactions is
//! exact. The counter is 32 bits; the driver widens it to 64 against the last position it knew
//! (the reference in `chain.state`), so LSNs keep growing across the wrap. In WAL mode the
//! shadow's counter is stamped with the position, so every artifact carries it the same way.
//!
//! **Snapshots in rollback-journal mode.** A consistent image of the live file is read while
//! holding a SQLite read transaction (a SHARED lock: in rollback-journal mode no writer can
//! change the file under it), or, while fenced, under the fence. The online backup API is not
//! used: its destination commit rewrites the copy's change counter and schema cookie, so the
//! copy would not carry the primary's LSN nor be a byte-exact base for page deltas. Cost: every
//! backup copies the whole file once (into the private shadow) and compares it with the previous
//! shadow, and application commits wait while the copy holds the read lock: their
//! `busy_timeout` must cover the time it takes to copy the database. WAL mode has none of these
//! costs.
//!
//! **Artifacts.**
//! - *Full*: the image itself, a plain SQLite database file (open it with `sqlite3`), covering
//!   `[c, c)` where `c` is its change counter.
//! - *Log* `[a, b)`: a page delta (format in `sqlite/pages.rs`) holding the images at `b` of every page
//!   changed between the snapshots at `a` and `b`. The driver keeps the previous snapshot as a
//!   private shadow copy; with nothing changed, no log.
//! - *Incremental* `[f, b)` with `base_full = f`: a differential page delta holding every page
//!   changed since the full backup at `f`.
//!
//!   Deltas carry every page touched over their whole range (see `sqlite/chain.rs`), so each applies at
//!   any snapshot position inside its range: a log may span a full taken in between, and an
//!   incremental applies over its full whether or not logs were applied after it.
//!
//! **Restore.** A full replaces the standby's file: copied beside it, fsynced, checked with
//! `PRAGMA quick_check`, renamed over it, directory fsynced. A delta is applied in place under an
//! exclusive lock after checking `lsn_start <= position < lsn_end` (at `position == lsn_end` it
//! is a verified no-op), with an undo file of pre-images; `PRAGMA quick_check` (a read of the
//! whole database) then runs at most every `check_every_ms`, and a failure rolls the pages back
//! and fails the restore. The standby is kept in rollback-journal mode. A reseed is a full restore verified with
//! `PRAGMA integrity_check`; the old copy stays in service until the atomic swap. Connections
//! that other processes keep open on a replaced file keep seeing the old file: standby readers
//! must reconnect after a full restore or reseed.
//!
//! **Fence.** The driver holds `BEGIN IMMEDIATE` on a dedicated connection: every other writer
//! gets SQLITE_BUSY, readers continue. Taking it waits at most `fence_timeout_ms` for an open
//! application write transaction (default: the core's fence time), then fails busy. Residual
//! risk: the lock lives in the agent process; if the agent dies the operating system releases
//! it and the database accepts writes again, so a dead agent cannot fence (configure the
//! external `fence_hook` for that case). Applying pages to a fenced standby briefly trades the
//! fence for an exclusive lock and takes it back after.
//!
//! **State directory** (`state_dir/<db>/`): `chain.state` (the primary's chain and the last
//! known position, one record written in place) and `shadow-<n>.db`, `apply.undo` (present
//! only while a delta is being applied), `drill-*` (scratch copies, removed after each drill).

// Public for the `sqlite_delta` fuzz target (they parse bytes the driver did not write).
pub mod apply;
mod capture;
pub mod chain;
mod drill;
pub use drill::{restore_point, Restored};
pub mod header;
mod lock;
pub mod pages;
mod slot;
#[cfg(test)]
mod tests;
pub mod wal;

use super::durable;
use super::error::{DriverError, ErrorKind};
use super::manifest::{self, ArtifactFile};
use super::{BackupRequest, DatabaseSpec, DrillOutcome, Driver};
use chain::{ChainState, PageSet};
use header::widen;
use lifeboat_core::{ArtifactKind, DbId, Epoch, Lsn};
use serde::{Deserialize, Serialize};
use slot::{Slot, SlotState};
use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long the driver waits for other connections' locks (snapshot, fence, apply).
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5_000;
/// How long a probe waits for a lock before calling the database unhealthy.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 1_000;
/// How long a fence waits for the application's write transaction to end: the core's
/// "longest time a fence takes" (`lifeboat_core::defaults::FENCE_TIME`), which its fence
/// deadline accounts for. A fence that cannot get the lock in time fails (busy) and is retried.
pub const DEFAULT_FENCE_TIMEOUT_MS: u64 = lifeboat_core::defaults::FENCE_TIME;

/// The sqlite driver's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// Private state: shadow copies, chain state, undo files, drill scratch copies. Needs room
    /// for one extra copy of each primary database.
    pub state_dir: PathBuf,
    #[serde(default = "default_busy_timeout_ms")]
    pub busy_timeout_ms: u64,
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
    #[serde(default = "default_fence_timeout_ms")]
    pub fence_timeout_ms: u64,
    /// A query a drill runs on the scratch copy after `PRAGMA integrity_check`; the drill fails
    /// if it errors or returns no row (e.g. `SELECT 1 FROM orders LIMIT 1`).
    #[serde(default)]
    pub drill_check_sql: Option<String>,
    /// The standby's `PRAGMA quick_check` after an applied delta runs at most this often (it
    /// reads the whole database); 0 runs it after every delta. Fulls, reseeds and drills are
    /// always checked.
    #[serde(default = "default_check_every_ms")]
    pub check_every_ms: u64,
}

/// A quick check of the standby at most every 10 minutes.
pub const DEFAULT_CHECK_EVERY_MS: u64 = 600_000;

fn default_check_every_ms() -> u64 {
    DEFAULT_CHECK_EVERY_MS
}

fn default_busy_timeout_ms() -> u64 {
    DEFAULT_BUSY_TIMEOUT_MS
}
fn default_probe_timeout_ms() -> u64 {
    DEFAULT_PROBE_TIMEOUT_MS
}
fn default_fence_timeout_ms() -> u64 {
    DEFAULT_FENCE_TIMEOUT_MS
}

impl SqliteConfig {
    /// Defaults for everything but the state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            state_dir: state_dir.into(),
            busy_timeout_ms: DEFAULT_BUSY_TIMEOUT_MS,
            probe_timeout_ms: DEFAULT_PROBE_TIMEOUT_MS,
            fence_timeout_ms: DEFAULT_FENCE_TIMEOUT_MS,
            drill_check_sql: None,
            check_every_ms: DEFAULT_CHECK_EVERY_MS,
        }
    }
}

/// The sqlite driver. See the module documentation.
pub struct SqliteDriver {
    config: SqliteConfig,
    specs: Vec<DatabaseSpec>,
    slots: Vec<Slot>,
    drills: AtomicU64,
}

impl SqliteDriver {
    /// A driver for `databases` (index = [`DbId`]). Creates the state directories and rolls back
    /// any delta a crash interrupted. Holds no fence: the agent fences after a restart.
    pub fn open(
        config: SqliteConfig,
        databases: Vec<DatabaseSpec>,
    ) -> Result<SqliteDriver, DriverError> {
        super::check_specs(&databases, "sqlite")?;
        let busy = Duration::from_millis(config.busy_timeout_ms);
        let mut slots = Vec::with_capacity(databases.len());
        for (i, spec) in databases.iter().enumerate() {
            let dir = config.state_dir.join(manifest::file_safe(&spec.name));
            fs::create_dir_all(&dir).map_err(|e| {
                DriverError::io(
                    format!(
                        "creating the sqlite driver's state directory {} for database {}",
                        dir.display(),
                        spec.name
                    ),
                    &e,
                )
            })?;
            slots.push(Slot {
                id: DbId(i as u32),
                spec: spec.clone(),
                dir,
                busy,
                fence_wait: Duration::from_millis(config.fence_timeout_ms),
                check_every: Duration::from_millis(config.check_every_ms),
                state: Mutex::new(SlotState::default()),
                gaps: Mutex::new(Vec::new()),
                probe: Mutex::new(None),
            });
        }
        let driver = SqliteDriver {
            config,
            specs: databases,
            slots,
            drills: AtomicU64::new(0),
        };
        for slot in &driver.slots {
            // Every operation recovers first too, so a failure here (say, busy) is not fatal.
            if let Err(e) = slot.recover(&mut slot.lock()) {
                tracing::warn!(db = slot.name(), error = %e,
                    "could not roll back an interrupted restore yet; will retry");
            }
        }
        Ok(driver)
    }

    /// Whether the driver currently holds the fence of `db`.
    pub fn is_fenced(&self, db: DbId) -> Result<bool, DriverError> {
        Ok(self.slot(db)?.lock().fence.is_some())
    }

    fn slot(&self, db: DbId) -> Result<&Slot, DriverError> {
        super::spec_of(&self.specs, db, "sqlite")?;
        Ok(&self.slots[db.0 as usize])
    }

    fn slot_for(&self, artifact: &ArtifactFile) -> Result<&Slot, DriverError> {
        let slot = self.slot(artifact.manifest.db_id)?;
        super::check_artifact_db(&slot.spec, artifact)?;
        Ok(slot)
    }
}

/// Where a chain stands after a snapshot.
enum Continuity {
    /// The snapshot follows the shadow: deltas can be cut.
    Continues,
    /// No chain existed: it starts at this snapshot.
    Starts,
    /// The chain broke (counter went back, page size changed): it restarts here.
    Restarts(String),
}

impl Driver for SqliteDriver {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn databases(&self) -> &[DatabaseSpec] {
        &self.specs
    }

    fn capture_gaps(&self) -> Vec<(DbId, String)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let mut gaps = slot.gaps.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(gaps.drain(..).map(|g| (slot.id, g)));
        }
        out
    }

    fn take_backup(&self, request: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError> {
        let slot = self.slot(request.db)?;
        let mut st = slot.lock();
        slot.recover(&mut st)?;
        if !slot.path().is_file() {
            return Err(slot.missing("create it or fix its path in the configuration"));
        }
        fs::create_dir_all(&request.outbox).map_err(|e| {
            DriverError::io(
                format!("creating the outbox {}", request.outbox.display()),
                &e,
            )
        })?;
        if st.pin.is_none() {
            st.pin = capture::Pin::open(slot)?;
        }
        if let Some(pin) = st.pin.as_mut() {
            return take_backup_wal(slot, pin, request);
        }
        let previous = ChainState::load(&slot.dir, slot.name());
        let staged = slot.staged_shadow();
        let image = slot.read_live(&st, Some(&staged))?;
        let reference = previous
            .as_ref()
            .map(|c| c.position)
            .unwrap_or_else(|| chain::load_reference(&slot.dir));
        let position = widen(image.counter, reference);
        let generation = previous.as_ref().map_or(1, |c| c.generation + 1);

        let (mut next, continuity) = match previous {
            None => (
                ChainState::start(generation, position, image),
                Continuity::Starts,
            ),
            Some(prev) => {
                let broken = if position < prev.position {
                    Some(format!(
                        "its change counter went back from {} to {position} (the file was \
                         replaced outside lifeboat)",
                        prev.position
                    ))
                } else if prev.page_count > 0
                    && image.page_count > 0
                    && prev.page_size != image.page_size
                {
                    Some(format!(
                        "its page size changed from {} to {}",
                        prev.page_size, image.page_size
                    ))
                } else {
                    None
                };
                match broken {
                    Some(why) => (
                        ChainState::start(generation, position, image),
                        Continuity::Restarts(why),
                    ),
                    None => {
                        let shadow = prev.shadow_path(&slot.dir);
                        let touched = File::open(&shadow)
                            .and_then(|old| {
                                let new = File::open(&staged)?;
                                chain::changed_pages(&old, prev.image(), &new, image)
                            })
                            .map_err(|e| {
                                DriverError::io(
                                    format!(
                                        "comparing the snapshot of database {} with its shadow \
                                         copy {}",
                                        slot.name(),
                                        shadow.display()
                                    ),
                                    &e,
                                )
                            })?;
                        let mut next = prev;
                        next.generation = generation;
                        next.position = position;
                        next.page_size = image.page_size;
                        next.page_count = image.page_count;
                        next.log_touched.extend(&touched);
                        next.incr_touched.extend(&touched);
                        (next, Continuity::Continues)
                    }
                }
            }
        };

        let continues = matches!(continuity, Continuity::Continues) && image.page_count > 0;
        let out = publish_requested(slot, request, &mut next, &staged, image, continues)?;
        next.commit(&slot.dir, &staged)?;
        for a in &out {
            tracing::info!(db = slot.name(), artifact = %a.describe(), "published");
        }

        continuity_result(slot, request, continuity, &next)?;
        Ok(out)
    }

    fn position(&self, db: DbId) -> Result<Lsn, DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        slot.recover(&mut st)?;
        if !slot.path().is_file() {
            return Err(slot.missing("restore a full backup into it or fix its path"));
        }
        if st.pin.is_none() {
            st.pin = capture::Pin::open(slot)?;
        }
        if let Some(pin) = &mut st.pin {
            return capture::position(slot, pin);
        }
        let image = slot.read_live(&st, None)?;
        Ok(widen(image.counter, chain::load_reference(&slot.dir)))
    }

    fn restore(&self, artifact: &ArtifactFile) -> Result<Lsn, DriverError> {
        let slot = self.slot_for(artifact)?;
        manifest::check_bytes(artifact)?;
        let mut st = slot.lock();
        // The file is replaced, applied to or switched out of WAL mode: no probe connection
        // of this process may stay open through that.
        slot.drop_probe();
        slot.recover(&mut st)?;
        let lsn = match artifact.manifest.kind {
            ArtifactKind::Full => {
                st.pin = None;
                slot.install_full(&mut st, artifact, "quick_check")?
            }
            ArtifactKind::Incremental | ArtifactKind::Log => {
                // A former WAL-mode primary follows the new one: its file is switched to
                // rollback-journal mode for the apply, and its page 1 must say the position the
                // driver counted (SQLite's own counter means nothing in WAL mode).
                let demoted = capture::demotion_position(slot, &mut st)?;
                slot.apply_live(&mut st, artifact, demoted)?
            }
        };
        // This copy now follows the other site's history: a chain it kept as a primary is void.
        ChainState::clear(&slot.dir, lsn)?;
        tracing::info!(db = slot.name(), artifact = %artifact.describe(), %lsn, "restored");
        Ok(lsn)
    }

    fn reseed(&self, full: &ArtifactFile) -> Result<Lsn, DriverError> {
        let slot = self.slot_for(full)?;
        if full.manifest.kind != ArtifactKind::Full {
            return Err(DriverError::new(
                ErrorKind::ArtifactInvalid,
                format!(
                    "cannot reseed database {} from {}: a reseed needs a full backup",
                    slot.name(),
                    full.describe()
                ),
            ));
        }
        manifest::check_bytes(full)?;
        let mut st = slot.lock();
        // The file is replaced, applied to or switched out of WAL mode: no probe connection
        // of this process may stay open through that.
        slot.drop_probe();
        slot.recover(&mut st)?;
        st.pin = None;
        let lsn = slot.install_full(&mut st, full, "integrity_check")?;
        crate::crash::point("mid_reseed");
        ChainState::clear(&slot.dir, lsn)?;
        tracing::info!(db = slot.name(), artifact = %full.describe(), %lsn, "reseeded");
        Ok(lsn)
    }

    fn promote(&self, db: DbId, epoch: Epoch) -> Result<Lsn, DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        // The file is replaced, applied to or switched out of WAL mode: no probe connection
        // of this process may stay open through that.
        slot.drop_probe();
        slot.recover(&mut st)?;
        if !slot.path().is_file() {
            return Err(slot.missing("nothing to promote: restore a full backup into it first"));
        }
        st.pin = None;
        // Start this site's chain before the first write: everything written after promotion
        // is in its first log, so the old primary can follow without a reseed.
        let generation = ChainState::load(&slot.dir, slot.name()).map_or(1, |c| c.generation + 1);
        let staged = slot.staged_shadow();
        let image = slot.read_live(&st, Some(&staged))?;
        let position = widen(image.counter, chain::load_reference(&slot.dir));
        ChainState::start(generation, position, image).commit(&slot.dir, &staged)?;
        st.fence_wanted = false;
        st.fence = None;
        tracing::info!(db = slot.name(), %epoch, %position, "promoted: writable");
        Ok(position)
    }

    fn fence(&self, db: DbId) -> Result<(), DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        st.fence_wanted = true;
        if st.fence.is_some() {
            return Ok(());
        }
        slot.recover(&mut st)?;
        slot.refence(&mut st)
    }

    fn unfence(&self, db: DbId, _epoch: Epoch) -> Result<(), DriverError> {
        let slot = self.slot(db)?;
        let mut st = slot.lock();
        st.fence_wanted = false;
        st.fence = None;
        Ok(())
    }

    fn probe(&self, db: DbId) -> Result<(), DriverError> {
        // No slot lock: a probe must answer while a long backup or restore runs. Its SQLite
        // connection holds a lock only for one query, and SQLite defers closing its descriptor
        // while the driver's other connections hold locks, so it cannot drop theirs.
        //
        // A database locked beyond the probe's timeout answers: a live process holds that lock
        // (SQLite's locks die with their process), e.g. a restore applying a log at the recovery
        // site or a long write of the application. A probe that failed on `busy` made a busy
        // standby look dead and a loaded primary look down.
        let slot = self.slot(db)?;
        let timeout = Duration::from_millis(self.config.probe_timeout_ms);
        let (conn, file) = slot.probe_connection(timeout)?;
        // Cached: parsing the statement again cost more than running it, every second.
        let answered = conn
            .prepare_cached("SELECT count(*) FROM sqlite_schema")
            .and_then(|mut q| q.query_row([], |r| r.get::<_, i64>(0)));
        match &answered {
            Ok(_) => {
                slot.keep_probe(conn, file);
                return Ok(());
            }
            Err(rusqlite::Error::SqliteFailure(ffi, _))
                if matches!(
                    ffi.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                tracing::debug!(
                    db = slot.name(),
                    "probe: the database is locked by a live process"
                );
                return Ok(());
            }
            Err(_) => {}
        }
        answered.map(|_| ()).map_err(|e| {
            DriverError::sqlite(
                format!(
                    "probing database {} ({})",
                    slot.name(),
                    slot.path().display()
                ),
                &e,
            )
        })
    }

    fn drill(&self, db: DbId, chain: &[ArtifactFile]) -> Result<DrillOutcome, DriverError> {
        let slot = self.slot(db)?;
        for artifact in chain {
            let owner = self.slot_for(artifact)?;
            if owner.id != slot.id {
                return Err(DriverError::new(
                    ErrorKind::Config,
                    format!(
                        "drill of database {}: artifact {} belongs to database {}",
                        slot.name(),
                        artifact.describe(),
                        owner.name()
                    ),
                ));
            }
            manifest::check_bytes(artifact)?;
        }
        let n = self.drills.fetch_add(1, Ordering::Relaxed);
        let scratch_dir = slot.dir.join(format!("drill-{}-{n}", std::process::id()));
        fs::create_dir_all(&scratch_dir)
            .map_err(|e| DriverError::io(format!("creating {}", scratch_dir.display()), &e))?;
        let outcome = self.drill_in(slot, chain, &scratch_dir.join("scratch.db"));
        if let Err(e) = fs::remove_dir_all(&scratch_dir) {
            tracing::warn!(db = slot.name(), dir = %scratch_dir.display(), error = %e,
                "could not remove a drill's scratch copy");
        }
        outcome
    }
}

/// Publish what `request` asks for from `source`, the snapshot at `next.position`, and move the
/// chain past it.
fn publish_requested(
    slot: &Slot,
    request: &BackupRequest,
    next: &mut ChainState,
    source: &std::path::Path,
    image: header::Image,
    continues: bool,
) -> Result<Vec<ArtifactFile>, DriverError> {
    let position = next.position;
    let staged = source;
    let mut out = Vec::new();
    match request.kind {
        ArtifactKind::Full => {
            let staging = manifest::staging_path(&request.outbox, slot.name(), request.kind);
            durable::copy_and_sync_counted(staged, &staging, &request.progress)?;
            // The copy read the shadow in large chunks: see `durable::drop_cached`.
            if let Ok(f) = std::fs::File::open(staged) {
                durable::drop_cached(&f);
            }
            out.push(manifest::publish(
                &request.outbox,
                &staging,
                &slot.new_artifact(request, ArtifactKind::Full, position, position, None),
            )?);
            next.base_full = Some(position);
            next.incr_touched = PageSet::default();
        }
        ArtifactKind::Log => {
            if continues && position > next.log_from {
                out.push(slot.publish_delta(
                    request,
                    staged,
                    image,
                    ArtifactKind::Log,
                    next.log_from,
                    position,
                    &next.log_touched,
                )?);
                next.log_from = position;
                next.log_touched = PageSet::default();
            }
        }
        ArtifactKind::Incremental => {
            if let (true, Some(base)) = (continues, next.base_full) {
                if position > base {
                    out.push(slot.publish_delta(
                        request,
                        staged,
                        image,
                        ArtifactKind::Incremental,
                        base,
                        position,
                        &next.incr_touched,
                    )?);
                }
            }
        }
    }
    Ok(out)
}

/// What a backup's continuity means for the request: a restarted chain fails logs and
/// incrementals with `NoBaseFull` (the standby needs a new full first).
fn continuity_result(
    slot: &Slot,
    request: &BackupRequest,
    continuity: Continuity,
    next: &ChainState,
) -> Result<(), DriverError> {
    let position = next.position;
    match (request.kind, continuity) {
        (ArtifactKind::Full, _) => {}
        (_, Continuity::Restarts(why)) => {
            return Err(DriverError::new(
                ErrorKind::NoBaseFull,
                format!(
                    "database {}: {why}; its chain restarted at position {position}: take a \
                     full backup, the standby needs it before further {}s apply",
                    slot.name(),
                    request.kind.text_word()
                ),
            ))
        }
        (ArtifactKind::Log, Continuity::Starts) => {
            tracing::info!(db = slot.name(), %position,
                "the transaction log chain starts here; the standby needs a full backup taken \
                 at or after this position");
        }
        (ArtifactKind::Incremental, _) if next.base_full.is_none() => {
            return Err(DriverError::new(
                ErrorKind::NoBaseFull,
                format!(
                    "database {} has no full backup yet, and an incremental is based on one: \
                     take a full backup first",
                    slot.name()
                ),
            ))
        }
        _ => {}
    }
    Ok(())
}

/// A backup of a WAL-mode database: capture the WAL into the shadow, then cut what was asked
/// from the shadow (no lock on the live database beyond the capture's pins).
fn take_backup_wal(
    slot: &Slot,
    pin: &mut capture::Pin,
    request: &BackupRequest,
) -> Result<Vec<ArtifactFile>, DriverError> {
    let (mut next, captured) = capture::capture(slot, pin, &request.progress)?;
    let continuity = match captured {
        capture::Captured::Continues => Continuity::Continues,
        capture::Captured::Starts(None) => Continuity::Starts,
        capture::Captured::Starts(Some(why)) => Continuity::Restarts(why),
    };
    let image = next.image();
    let shadow = next.shadow_path(&slot.dir);
    let continues = matches!(continuity, Continuity::Continues) && image.page_count > 0;
    let out = publish_requested(slot, request, &mut next, &shadow, image, continues)?;
    let saved = ChainState::load(&slot.dir, slot.name());
    capture::persist(slot, saved.as_ref(), &next)?;
    let next = capture::start_over_if_long(slot, pin, next);
    for a in &out {
        tracing::info!(db = slot.name(), artifact = %a.describe(), "published");
    }
    continuity_result(slot, request, continuity, &next)?;
    Ok(out)
}
