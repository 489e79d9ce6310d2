//! One database of the sqlite driver: its spec, its state, and the steps every operation is
//! made of (consistent reads of the live file, the fence, exclusive application of deltas,
//! verified replacement by a full backup).

use super::super::durable;
use super::super::error::{DriverError, ErrorKind};
use super::super::manifest::{self, ArtifactFile, NewArtifact};
use super::super::{BackupRequest, DatabaseSpec};
use super::apply::{self, Applied, Target};
use super::chain::PageSet;
use super::header::{read_image, widen, Image, ImageError};
use super::lock::{open_existing, HeldLock, LockLevel};
use super::pages::{self, DeltaHeader, DeltaKind};
use lifeboat_core::{ArtifactKind, DbId, Lsn};
use rusqlite::Connection;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// One database: its spec, its state directory and its in-memory state behind a mutex that
/// serialises every operation on it (but probes).
pub(super) struct Slot {
    pub(super) id: DbId,
    pub(super) spec: DatabaseSpec,
    pub(super) dir: PathBuf,
    /// How long other connections' locks are waited for.
    pub(super) busy: Duration,
    /// How long the fence waits for the application's write transaction.
    pub(super) fence_wait: Duration,
    /// The quick check after an applied delta runs at most this often.
    pub(super) check_every: Duration,
    pub(super) state: Mutex<SlotState>,
    /// Gaps the change capture healed since the agent last asked (`Driver::capture_gaps`).
    pub(super) gaps: Mutex<Vec<String>>,
    /// The probe's read-only connection, kept between probes (see [`Slot::probe_connection`]).
    pub(super) probe: Mutex<Option<ProbeConnection>>,
}

/// A kept probe connection and the file (device, inode) it was opened on.
pub(super) struct ProbeConnection {
    conn: rusqlite::Connection,
    file: (u64, u64),
}

#[derive(Default)]
pub(super) struct SlotState {
    /// The site wants this database fenced (held again after operations that must drop it).
    pub(super) fence_wanted: bool,
    pub(super) fence: Option<HeldLock>,
    /// A WAL-mode primary's pinned read snapshots (`capture.rs`); dropped before the file is
    /// replaced or promoted.
    pub(super) pin: Option<super::capture::Pin>,
    /// When the standby last passed `PRAGMA quick_check` (a full restore or an applied delta).
    pub(super) checked: Option<std::time::Instant>,
}

impl Slot {
    pub(super) fn lock(&self) -> MutexGuard<'_, SlotState> {
        // A panic while holding the lock leaves nothing half-done in memory that matters: the
        // files are crash-safe, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The probe's connection: the kept one while the database file is the one it was opened
    /// on, else a new one. Opening a connection (and parsing the schema) every probe was 7 % of
    /// a quiet primary's CPU.
    pub(super) fn probe_connection(
        &self,
        busy: Duration,
    ) -> Result<(rusqlite::Connection, (u64, u64)), DriverError> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::metadata(self.path())
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or_default();
        let kept = self
            .probe
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .filter(|k| k.file == file && file != (0, 0));
        match kept {
            Some(k) => Ok((k.conn, k.file)),
            None => Ok((open_existing(self.path(), self.name(), busy, true)?, file)),
        }
    }

    /// Keep a connection that answered a probe, unless an operation holds the slot (it may be
    /// about to replace the file or change its journal mode, which another connection of this
    /// process would stop: it drops a kept one with [`Slot::drop_probe`] once it holds the slot).
    pub(super) fn keep_probe(&self, conn: rusqlite::Connection, file: (u64, u64)) {
        let Ok(_idle) = self.state.try_lock() else {
            return;
        };
        *self.probe.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(ProbeConnection { conn, file });
    }

    /// Close the kept probe connection (the caller holds the slot).
    pub(super) fn drop_probe(&self) {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub(super) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(super) fn path(&self) -> &Path {
        &self.spec.path
    }

    pub(super) fn target(&self) -> Target<'_> {
        Target {
            db_name: &self.spec.name,
            path: &self.spec.path,
        }
    }

    pub(super) fn undo_path(&self) -> PathBuf {
        self.dir.join("apply.undo")
    }

    pub(super) fn staged_shadow(&self) -> PathBuf {
        self.dir.join("shadow.next.tmp")
    }

    /// `{doing} database <name> (<path>)`, for messages.
    pub(super) fn what(&self, doing: &str) -> String {
        format!(
            "{doing} database {} ({})",
            self.name(),
            self.path().display()
        )
    }

    pub(super) fn missing(&self, advice: &str) -> DriverError {
        DriverError::new(
            ErrorKind::NotFound,
            format!(
                "database {}: file {} does not exist; {advice}",
                self.name(),
                self.path().display()
            ),
        )
    }

    /// Read the live file's image, consistently: under the fence when it is held, else under a
    /// short read transaction. With `copy_to`, also copy the image there (fsynced).
    pub(super) fn read_live(
        &self,
        st: &SlotState,
        copy_to: Option<&Path>,
    ) -> Result<Image, DriverError> {
        let read = |file: &File| -> Result<Image, DriverError> {
            let image = apply::target_image(file, &self.target())?;
            if let Some(dest) = copy_to {
                let copied = File::create(dest).and_then(|mut out| {
                    durable::copy_prefix(file, &mut out, image.len())?;
                    out.sync_all()?;
                    durable::drop_cached(&out);
                    Ok(())
                });
                copied.map_err(|e| {
                    DriverError::io(
                        format!(
                            "copying a snapshot of database {} ({}) to {}",
                            self.name(),
                            self.path().display(),
                            dest.display()
                        ),
                        &e,
                    )
                })?;
            }
            Ok(image)
        };
        match &st.fence {
            Some(fence) => read(fence.file()),
            None => {
                let lock =
                    HeldLock::acquire(self.path(), self.name(), LockLevel::Shared, self.busy)?;
                let image = read(lock.file())?;
                lock.release()?;
                Ok(image)
            }
        }
    }

    /// Take the fence again if the site wants it and the file exists.
    pub(super) fn refence(&self, st: &mut SlotState) -> Result<(), DriverError> {
        if st.fence_wanted && st.fence.is_none() && self.path().is_file() {
            let fence = HeldLock::acquire(
                self.path(),
                self.name(),
                LockLevel::Reserved,
                self.fence_wait,
            )
            .map_err(|e| match e.kind {
                ErrorKind::Busy => e.context(format!(
                    "fencing database {}: an application write transaction held the lock \
                     longer than {} ms",
                    self.name(),
                    self.fence_wait.as_millis()
                )),
                _ => e,
            })?;
            st.fence = Some(fence);
        }
        Ok(())
    }

    /// Run `f` under an exclusive lock (dropping the fence meanwhile and taking it back after).
    pub(super) fn with_exclusive<T>(
        &self,
        st: &mut SlotState,
        f: impl FnOnce(&mut HeldLock) -> Result<T, DriverError>,
    ) -> Result<T, DriverError> {
        st.fence = None;
        let result = HeldLock::acquire(self.path(), self.name(), LockLevel::Exclusive, self.busy)
            .and_then(|mut lock| {
                let outcome = f(&mut lock);
                let released = lock.release();
                outcome.and_then(|v| released.map(|_| v))
            });
        let refenced = self.refence(st);
        match (result, refenced) {
            (Ok(v), Ok(())) => Ok(v),
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(e.context(format!(
                "database {}: the operation completed but the fence could not be taken again",
                self.name()
            ))),
        }
    }

    /// Roll back a delta a crash interrupted (its undo file is still there).
    pub(super) fn recover(&self, st: &mut SlotState) -> Result<(), DriverError> {
        let undo = self.undo_path();
        if !undo.exists() {
            return Ok(());
        }
        self.drop_probe();
        if self.path().is_file() {
            tracing::warn!(db = self.name(), path = %self.path().display(),
                "rolling back a restore that was interrupted; it will be applied again");
            st.fence = None;
            let target = self.target();
            let rolled = match HeldLock::acquire(
                self.path(),
                self.name(),
                LockLevel::Exclusive,
                self.busy,
            ) {
                Ok(lock) => {
                    let r = apply::roll_back(lock.file(), &target, &undo);
                    let released = lock.release();
                    r.and_then(|p| released.map(|_| p))
                }
                // A torn page 1 keeps SQLite from locking the file; nobody can read it either.
                Err(e) if e.kind == ErrorKind::CheckFailed => durable::open_rw(self.path())
                    .map_err(|e| DriverError::io(format!("opening {}", self.path().display()), &e))
                    .and_then(|file| apply::roll_back(&file, &target, &undo)),
                Err(e) => Err(e),
            };
            let refenced = self.refence(st);
            rolled?;
            refenced?;
        }
        durable::remove_durably(&undo)
    }

    /// Apply an incremental or log to the live standby, verify, roll back on a failed check.
    pub(super) fn apply_live(
        &self,
        st: &mut SlotState,
        artifact: &ArtifactFile,
        demoted: Option<Lsn>,
    ) -> Result<Lsn, DriverError> {
        if !self.path().is_file() {
            return Err(self.missing("restore a full backup of it first"));
        }
        let undo = self.undo_path();
        let target = self.target();
        let mut last_check = st.checked;
        let checked = &mut last_check;
        let out = self.with_exclusive(st, |lock| {
            if let Some(at) = demoted {
                super::capture::stamp_demoted(lock.file(), at).map_err(|e| {
                    DriverError::io(
                        format!(
                            "stamping position {at} into database {} ({}), a former WAL-mode \
                             primary",
                            target.db_name,
                            target.path.display()
                        ),
                        &e,
                    )
                })?;
            }
            let (applied, lsn) = apply::apply_delta(lock.file(), &target, artifact, Some(&undo))?;
            if applied == Applied::AlreadyThere {
                return Ok(lsn);
            }
            // The pages were checked against the artifact's checksum before they were written;
            // the quick check reads the whole database, so it runs on a schedule, not per log.
            if checked.is_some_and(|t| t.elapsed() < self.check_every) {
                durable::remove_durably(&undo)?;
                return Ok(lsn);
            }
            let verdict = lock
                .renew()
                .and_then(|_| run_check(lock.conn(), "quick_check", &target, &artifact.describe()));
            match verdict {
                Ok(()) => {
                    durable::remove_durably(&undo)?;
                    *checked = Some(std::time::Instant::now());
                    Ok(lsn)
                }
                Err(e) if e.kind == ErrorKind::CheckFailed => {
                    let back = apply::roll_back(lock.file(), &target, &undo)?;
                    durable::remove_durably(&undo)?;
                    Err(DriverError {
                        message: format!(
                            "{}; the pages were rolled back and database {} stays at position \
                             {back}",
                            e.message, target.db_name
                        ),
                        ..e
                    })
                }
                // Not verified either way (e.g. busy): the undo file stays, and the next
                // operation on this database rolls back before anything else.
                Err(e) => Err(e),
            }
        });
        st.checked = last_check;
        out
    }

    /// Replace the live file with a verified copy of a full backup.
    pub(super) fn install_full(
        &self,
        st: &mut SlotState,
        artifact: &ArtifactFile,
        check: &str,
    ) -> Result<Lsn, DriverError> {
        let lsn = check_full(artifact, self.name())?;
        let path = self.path();
        let parent = durable::parent_dir(path);
        fs::create_dir_all(parent)
            .map_err(|e| DriverError::io(format!("creating {}", parent.display()), &e))?;
        let tmp = durable::temp_beside(path, "restore");
        let staged = durable::copy_and_sync(&artifact.path, &tmp).and_then(|_| {
            let conn = open_existing(&tmp, self.name(), self.busy, true)?;
            run_check(&conn, check, &self.target(), &artifact.describe())
        });
        if let Err(e) = staged {
            let _ = fs::remove_file(&tmp);
            return Err(e.context(format!("database {} was not touched", self.name())));
        }
        st.fence = None;
        let swapped = (|| {
            let lock = if path.is_file() {
                match HeldLock::acquire(path, self.name(), LockLevel::Exclusive, self.busy) {
                    Ok(lock) => Some(lock),
                    // A damaged standby cannot be locked; it is being replaced anyway.
                    Err(e) if e.kind == ErrorKind::CheckFailed => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
            for suffix in ["-journal", "-wal", "-shm"] {
                let mut sibling = path.as_os_str().to_owned();
                sibling.push(suffix);
                durable::remove_durably(Path::new(&sibling))?;
            }
            durable::rename_durably(&tmp, path)?;
            if let Some(lock) = lock {
                if let Err(e) = lock.release() {
                    tracing::warn!(db = self.name(), error = %e, "unlocking the replaced file");
                }
            }
            Ok(())
        })();
        if swapped.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let refenced = self.refence(st);
        swapped?;
        refenced?;
        st.checked = Some(std::time::Instant::now());
        Ok(lsn)
    }

    /// Publish a page delta of `pages` from the staged snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_delta(
        &self,
        request: &BackupRequest,
        staged: &Path,
        image: Image,
        kind: ArtifactKind,
        from: Lsn,
        to: Lsn,
        touched: &PageSet,
    ) -> Result<ArtifactFile, DriverError> {
        let pages = touched.within(image.page_count, image.page_size);
        let (delta_kind, base_full) = match kind {
            ArtifactKind::Incremental => (DeltaKind::Incremental, Some(from)),
            _ => (DeltaKind::Log, None),
        };
        let header = DeltaHeader {
            kind: delta_kind,
            page_size: image.page_size,
            page_count: image.page_count,
            lsn_start: from.0,
            lsn_end: to.0,
            base_full: base_full.map(|l| l.0),
            entries: pages.len() as u32,
        };
        let staging = manifest::staging_path(&request.outbox, self.name(), kind);
        let (size, checksum) = File::open(staged)
            .and_then(|source| pages::write_delta_hashed(&staging, &header, &pages, &source))
            .map_err(|e| {
                DriverError::io(
                    format!(
                        "writing the {} of database {} to {}",
                        kind.text_word(),
                        self.name(),
                        staging.display()
                    ),
                    &e,
                )
            })?;
        manifest::publish_synced(
            &request.outbox,
            &staging,
            &self.new_artifact(request, kind, from, to, base_full),
            size,
            checksum,
        )
    }

    pub(super) fn new_artifact(
        &self,
        request: &BackupRequest,
        kind: ArtifactKind,
        lsn_start: Lsn,
        lsn_end: Lsn,
        base_full: Option<Lsn>,
    ) -> NewArtifact<'_> {
        NewArtifact {
            db_name: self.name(),
            db: self.id,
            kind,
            epoch: request.epoch,
            lsn_start,
            lsn_end,
            base_full,
            created_utc: request.created_utc,
        }
    }
}

/// Check a full backup's own bytes: a rollback-journal SQLite file of exactly its pages, whose
/// change counter is the manifest's position. Returns that position.
pub(super) fn check_full(artifact: &ArtifactFile, db_name: &str) -> Result<Lsn, DriverError> {
    let m = &artifact.manifest;
    let invalid = |why: String| {
        DriverError::new(
            ErrorKind::ArtifactInvalid,
            format!(
                "full backup {} of database {db_name} is unusable: {why}; request a new full \
                 backup",
                artifact.path.display()
            ),
        )
    };
    let file = File::open(&artifact.path)
        .map_err(|e| DriverError::io(format!("opening {}", artifact.path.display()), &e))?;
    let image = read_image(&file).map_err(|e| match e {
        ImageError::Io(e) => DriverError::io(format!("reading {}", artifact.path.display()), &e),
        other => invalid(other.to_string()),
    })?;
    let len = file
        .metadata()
        .map_err(|e| DriverError::io(format!("reading {}", artifact.path.display()), &e))?
        .len();
    if len != image.len() {
        return Err(invalid(format!(
            "it is {len} bytes, its header says {} pages of {} bytes",
            image.page_count, image.page_size
        )));
    }
    let position = widen(image.counter, m.lsn_end);
    if position != m.lsn_end || m.lsn_start != m.lsn_end {
        return Err(invalid(format!(
            "its change counter says position {position}, its manifest says {}..{}",
            m.lsn_start, m.lsn_end
        )));
    }
    Ok(position)
}

/// Run `PRAGMA quick_check` / `integrity_check`; anything but a single `ok` is a failed check.
pub(super) fn run_check(
    conn: &Connection,
    pragma: &str,
    target: &Target<'_>,
    after: &str,
) -> Result<(), DriverError> {
    let what = || {
        format!(
            "PRAGMA {pragma} of database {} ({}) after {after}",
            target.db_name,
            target.path.display(),
        )
    };
    let fail = |e: rusqlite::Error| {
        let e = DriverError::sqlite(what(), &e);
        if e.kind == ErrorKind::Sqlite {
            // The check itself could not run over these pages: that is a failed check too.
            DriverError::new(ErrorKind::CheckFailed, e.message).with_code(e.code)
        } else {
            e
        }
    };
    const SHOWN: usize = 10;
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}")).map_err(fail)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(fail)?
        .take(SHOWN)
        .collect::<Result<Vec<String>, _>>()
        .map_err(fail)?;
    if rows.len() == 1 && rows[0] == "ok" {
        return Ok(());
    }
    Err(DriverError::new(
        ErrorKind::CheckFailed,
        format!("{} reported: {}", what(), rows.join("; ")),
    ))
}
