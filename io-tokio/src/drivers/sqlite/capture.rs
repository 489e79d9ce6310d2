//! Change capture from SQLite's write-ahead log, for databases the application runs in WAL
//! mode (the driver never changes the mode).
//!
//! **What a log costs.** The committed frames since the last capture are read from the `-wal`
//! file ([`super::wal`]), their newest page images written into the private shadow copy in
//! place, and the log is cut from the shadow: what changed is read and written once, whatever
//! the database's size. The live database file is never read except to start a chain.
//!
//! **Positions** count committed transactions: a capture adds the number of commit frames it
//! read. The shadow's page 1 carries the position as its change counter (and rollback-journal
//! mode in bytes 18-19), so every artifact is a rollback-journal image at its position, exactly
//! what the recovery site restores and checks, unchanged.
//!
//! **Checkpoints.** SQLite may restart the WAL (write new frames from its start) once every
//! frame is in the database file and no reader uses the log. The driver keeps a read
//! transaction open at all times on one of two connections (the *pin*): a capture pins the
//! newest snapshot on the other connection before it releases the old pin. Checkpoints (the
//! application's automatic ones, and the driver's own once the log is 1000 frames long) then stop
//! at the pin's snapshot, or, when the log was empty or fully backfilled as the pin began (a pin
//! on SQLite's read slot 0), cannot run at all; either way a restart can only drop frames the
//! driver already captured. The driver does not checkpoint every capture: that would write the
//! application's hot pages into the database file every second instead of once per 1000 frames.
//! Once the log is 1000 frames long, after the capture's artifacts are published, the driver
//! starts it over ([`reset`]): the write lock for the length of one small checkpoint, taken
//! between two of the application's transactions. A pin must not stay on slot 0 while the
//! application writes: SQLite's automatic checkpoint (after every commit once the log holds 1000
//! frames) would sort the whole new log and give up because of it, commit after commit; the
//! pin leaves it as soon as the log has started over (`leave_slot_zero`).
//!
//! Frames committed while the agent was not running may be gone: a restart the driver did not
//! see is read past where the new log has not overwritten the old one, else healed by comparing
//! the shadow with a snapshot of the live database (one full read; the log's transaction count
//! is then a lower bound, and the driver says so in its log).
//!
//! **Crash safety.** Page images go into the shadow in place after its page 1 says the new
//! position (stamped and synced before the first other write; `chain.state` records the position
//! once per capture, after the log it cut is in the outbox, or before the driver's own checkpoint
//! when it resets the WAL). After a crash a page 1 that says another position than `chain.state`
//! means the shadow may hold images newer than its position: reading the same frames from the
//! saved cursor again
//! writes the same images and repairs it (a log already published is cut again, the same
//! artifact); if SQLite restarted the WAL meanwhile, the healing comparison carries every page.
//!
//! **Page cache.** The shadow is dropped from the page cache after every whole-file copy and the
//! live database is read without readahead (see `durable::drop_cached`): a capture then costs
//! the pages it writes, not the large folios they would sit in.

use super::super::durable;
use super::super::error::{DriverError, ErrorKind};
use super::super::Progress;
use super::chain::{self, ChainState, PageSet, Unsynced};
use super::header::{lock_page, read_image, widen, Image};
use super::lock::open_existing;
use super::slot::Slot;
use super::wal::{self, AfterRestart, Committed, WalCursor, WalRead};
use lifeboat_core::Lsn;
use rusqlite::Connection;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a WAL reset's first checkpoint (no lock held) waits for the application's automatic
/// checkpoint to release SQLite's checkpoint lock.
const CATCH_UP_WAIT: Duration = Duration::from_millis(500);
/// How long the checkpoint under the write lock waits for the application's automatic
/// checkpoint (which started before the lock was taken) to finish; the reset is then given up
/// until the next capture.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(20);
const CHECKPOINT_RETRY: Duration = Duration::from_micros(200);
/// How long a reset waits for the application's next write to start the log over.
const RESTART_WAIT: Duration = Duration::from_millis(100);
/// A WAL this many frames long is started over after the capture (SQLite's own automatic
/// checkpoint starts at 1000 pages).
const RESET_FRAMES: u64 = 1000;
/// How long a WAL reset tries for the write lock between the application's transactions.
const WRITE_LOCK_WAIT: Duration = Duration::from_millis(20);
/// A restart in the middle of a snapshot is retried this many times.
const SNAPSHOT_TRIES: usize = 5;
pub const DIRTY_FILE: &str = "shadow.dirty";

/// Two connections of which one always holds a read transaction, and raw handles on the
/// database and its WAL opened while a pin holds SQLite's locks (closing a raw handle of a file
/// drops this process's POSIX locks on it: see `lock.rs`), closed only after the connections.
pub(super) struct Pin {
    conns: [Connection; 2],
    active: usize,
    /// No capture has renewed this pin yet: the WAL may have restarted before it was taken
    /// (the agent was not running), and frames the driver never read may be gone.
    fresh: bool,
    db: File,
    wal: File,
    shm: File,
    /// What position sampling last counted: see [`position`].
    counted: Option<Counted>,
    /// The first capture under this pin checked that the shadow's file holds every image the
    /// chain says it does (see [`resync`]).
    checked: bool,
}

/// Transactions counted in the WAL past a chain's cursor, up to `at`: the next sample reads
/// only the frames after `at` (samples come every heartbeat; reading from the chain's cursor
/// each time read up to a second of the WAL again and again).
#[derive(Copy, Clone, Debug)]
struct Counted {
    /// The chain the count is relative to (its position and WAL cursor).
    from: (Lsn, Option<WalCursor>),
    at: WalCursor,
    commits: u64,
}

impl Pin {
    /// Open the pin of a database in WAL mode; `None` when the database is not in WAL mode.
    pub(super) fn open(slot: &Slot) -> Result<Option<Pin>, DriverError> {
        let open = || open_existing(slot.path(), slot.name(), slot.busy, false);
        let first = open()?;
        let mode: String = first
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| DriverError::sqlite(slot.what("reading the journal mode of"), &e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Ok(None);
        }
        begin(&first, slot)?;
        let second = open()?;
        let raw = |p: &Path| {
            File::open(p).map_err(|e| DriverError::io(format!("opening {}", p.display()), &e))
        };
        let db = raw(slot.path())?;
        durable::read_without_readahead(&db);
        let wal = raw(&wal_path(slot.path()))?;
        let shm = raw(&shm_path(slot.path()))?;
        Ok(Some(Pin {
            conns: [first, second],
            active: 0,
            fresh: true,
            db,
            wal,
            shm,
            counted: None,
            checked: false,
        }))
    }

    /// Pin the newest snapshot on the other connection and release the old pin: checkpoints
    /// (the application's automatic ones, and the driver's when the WAL is long, see [`reset`])
    /// may now copy everything captured so far.
    ///
    /// No checkpoint runs here: one a second would write the application's hot pages into the
    /// database file every second instead of once per reset.
    fn renew(&mut self, slot: &Slot) -> Result<(), DriverError> {
        self.swap(slot)?;
        self.fresh = false;
        Ok(())
    }

    /// Pin the newest snapshot on the other connection, then release the old pin.
    fn swap(&mut self, slot: &Slot) -> Result<(), DriverError> {
        let next = 1 - self.active;
        begin(&self.conns[next], slot)?;
        let old = &self.conns[self.active];
        // A reset that failed half-way may have left the old connection without its
        // transaction.
        if !old.is_autocommit() {
            old.prepare_cached("COMMIT")
                .and_then(|mut c| c.execute([]).map(|_| ()))
                .map_err(|e| DriverError::sqlite(slot.what("releasing the old pin of"), &e))?;
        }
        self.active = next;
        Ok(())
    }
}

fn begin(conn: &Connection, slot: &Slot) -> Result<(), DriverError> {
    // Cached statements: a pin moves at every capture.
    conn.prepare_cached("BEGIN DEFERRED")
        .and_then(|mut b| b.execute([]).map(|_| ()))
        .and_then(|()| {
            conn.prepare_cached("SELECT count(*) FROM sqlite_schema")
                .and_then(|mut q| q.query_row([], |_| Ok(())))
        })
        .map_err(|e| DriverError::sqlite(slot.what("pinning a read snapshot of"), &e))
}

fn shm_path(db: &Path) -> PathBuf {
    beside(db, "-shm")
}

pub(super) fn wal_path(db: &Path) -> PathBuf {
    beside(db, "-wal")
}

/// SQLite's name for a file beside the database: its path with `suffix` appended.
fn beside(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> DriverError {
    move |e| DriverError::io(what, &e)
}

/// Stamp a shadow's page 1: rollback-journal mode, the position as change counter and
/// version-valid-for, and the page count (valid because the two match).
fn stamp_page1(file: &File, position: Lsn, page_count: u32) -> io::Result<()> {
    let counter = (position.0 as u32).to_be_bytes();
    file.write_all_at(&[1, 1], 18)?;
    file.write_all_at(&counter, 24)?;
    file.write_all_at(&page_count.to_be_bytes(), 28)?;
    file.write_all_at(&counter, 92)
}

/// Write the newest images of `new` (read from the WAL) into `file`, then size it to the last
/// commit's page count. Page 1 is written with `stamp` (position, page count), when given,
/// already in it.
fn write_frames(
    wal: &File,
    new: &Committed,
    page_size: u32,
    file: &File,
    stamp: Option<(Lsn, u32)>,
) -> io::Result<()> {
    let skip = lock_page(page_size);
    for (&page, &offset) in &new.pages {
        if page == skip || new.db_pages.is_some_and(|n| page > n) {
            continue;
        }
        let mut image = wal::read_page(wal, offset, page_size)?;
        if let Some((position, page_count)) = stamp.filter(|_| page == 1 && image.len() >= 96) {
            let counter = (position.0 as u32).to_be_bytes();
            image[18..20].copy_from_slice(&[1, 1]);
            image[24..28].copy_from_slice(&counter);
            image[28..32].copy_from_slice(&page_count.to_be_bytes());
            image[92..96].copy_from_slice(&counter);
        }
        file.write_all_at(&image, u64::from(page - 1) * u64::from(page_size))?;
    }
    if let Some(n) = new.db_pages {
        // Only when the size changes: a truncate to the same size still updates the file's
        // times, an inode write at the next sync.
        let len = u64::from(n) * u64::from(page_size);
        if file.metadata()?.len() != len {
            file.set_len(len)?;
        }
    }
    Ok(())
}

/// A consistent copy of the live database at `dest` (rollback-journal image, counter not yet
/// stamped), taken under the pin: the file, then every frame committed in the WAL. Returns its
/// shape, the WAL cursor it corresponds to (`None` while the WAL is empty) and the number of
/// transactions committed in the WAL.
fn snapshot(
    pin: &Pin,
    dest: &Path,
    progress: &Progress,
) -> Result<(Image, Option<WalCursor>, u64), DriverError> {
    for _ in 0..SNAPSHOT_TRIES {
        let read = wal::read_committed(&pin.wal, None)
            .map_err(io_err("reading the WAL for a snapshot".into()))?;
        let (cursor, new) = match read {
            WalRead::Empty => (None, Committed::default()),
            WalRead::Continued { cursor, new } | WalRead::Restarted { cursor, new } => {
                (Some(cursor), new)
            }
        };
        let copied = (|| {
            let out = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .read(true)
                .open(dest)?;
            let len = pin.db.metadata()?.len();
            let mut w = &out;
            durable::copy_prefix_counted(&pin.db, &mut w, len, Some(progress))?;
            let page_size = match &cursor {
                Some(c) => c.page_size,
                None => header_page_size(&out)?,
            };
            write_frames(&pin.wal, &new, page_size, &out, None)?;
            out.write_all_at(&[1, 1], 18)?;
            out.sync_all()?;
            durable::drop_cached(&out);
            Ok::<_, io::Error>(out)
        })()
        .map_err(io_err(format!("copying a snapshot to {}", dest.display())))?;
        // A restart during the copy (possible only before the first pin) changes the salts.
        let again = wal::read_header(&pin.wal).map_err(io_err("reading the WAL header".into()))?;
        if again.map(|h| h.salts) == cursor.map(|c| c.salts) {
            let image = read_image(&copied).map_err(|e| {
                DriverError::new(
                    ErrorKind::CheckFailed,
                    format!("the snapshot copy {} is not usable: {e}", dest.display()),
                )
            })?;
            return Ok((image, cursor, new.commits));
        }
    }
    Err(DriverError::new(
        ErrorKind::Busy,
        format!("the WAL restarted during {SNAPSHOT_TRIES} snapshots in a row; try again"),
    ))
}

fn header_page_size(file: &File) -> io::Result<u32> {
    let mut h = [0u8; 2];
    file.read_exact_at(&mut h, 16)?;
    let raw = u32::from(u16::from_be_bytes(h));
    Ok(if raw == 1 { 65_536 } else { raw })
}

/// How a capture continued the chain.
pub(super) enum Captured {
    /// The chain goes on: the shadow is at the new position, pages touched recorded.
    Continues,
    /// No usable chain: it starts (or restarts) at a new snapshot, which needs a full backup.
    Starts(Option<String>),
}

/// Bring the chain of a WAL-mode database up to date with the WAL and return it, its shadow
/// at the chain's position.
pub(super) fn capture(
    slot: &Slot,
    pin: &mut Pin,
    progress: &Progress,
) -> Result<(ChainState, Captured), DriverError> {
    let dir = &slot.dir;
    let previous = ChainState::load(dir, slot.name());
    // A crash while page images went into the shadow: pages may be newer than its position.
    // Reading the same frames again repairs it; if they are gone, every page is carried.
    let suspect = previous.as_ref().is_some_and(|p| shadow_suspect(dir, p));
    let (prev, cursor) = match previous {
        Some(mut p) if p.wal_mode => {
            if !pin.checked && !resync(slot, pin, &mut p)? {
                return heal(
                    slot,
                    pin,
                    p,
                    true,
                    "the machine restarted before the shadow copy's newest page images were \
                     synced, and the WAL no longer holds them",
                    progress,
                );
            }
            pin.checked = true;
            let c = p.wal;
            (p, c)
        }
        // The application switched the database to WAL mode: its chain goes on from the
        // shadow of the last rollback-journal snapshot (as after a promotion, when the
        // application opens the copy and sets WAL mode).
        Some(p) => {
            return heal(
                slot,
                pin,
                p,
                suspect,
                "the database is now in WAL mode",
                progress,
            )
        }
        // No chain, or one that could not be used (its file is there): a chain that restarts
        // needs a full backup before logs can follow, so logs fail until one is taken.
        None => {
            let why =
                chain::state_exists(dir).then(|| "its chain state could not be used".to_string());
            return start(slot, pin, why.clone(), progress).map(|c| (c, Captured::Starts(why)));
        }
    };
    let read = wal::read_committed(&pin.wal, cursor.as_ref()).map_err(io_err(format!(
        "reading the WAL of database {}",
        slot.name()
    )))?;
    let steps: Vec<(Committed, WalCursor)> = match (read, cursor) {
        (WalRead::Continued { cursor, new }, _) => vec![(new, cursor)],
        // Under a pin held since the last capture, SQLite restarts the WAL only once every
        // frame in it was read (see the module documentation): the new log is all there is.
        (WalRead::Restarted { cursor, new }, Some(_)) if !pin.fresh => vec![(new, cursor)],
        (WalRead::Restarted { .. }, Some(old)) => {
            match wal::read_after_restart(&pin.wal, &old).map_err(io_err(format!(
                "reading the WAL of database {}",
                slot.name()
            )))? {
                AfterRestart::Complete {
                    old_tail,
                    cursor: new_cursor,
                    new,
                } => vec![(old_tail, old), (new, new_cursor)],
                AfterRestart::Unknown => {
                    return heal(
                        slot,
                        pin,
                        prev,
                        suspect,
                        "its WAL restarted while the agent was not running",
                        progress,
                    )
                }
            }
        }
        (WalRead::Restarted { cursor, new }, None) => vec![(new, cursor)],
        (WalRead::Empty, None) => vec![],
        (WalRead::Empty, Some(c)) if c.frames == 0 || !pin.fresh => vec![],
        (WalRead::Empty, Some(_)) => {
            return heal(
                slot,
                pin,
                prev,
                suspect,
                "its WAL was emptied while the agent was not running",
                progress,
            )
        }
    };
    let next = apply(slot, &pin.wal, prev, &steps, false)?;
    pin.renew(slot)?;
    Ok((next, Captured::Continues))
}

/// After a capture's artifacts are published and its state persisted: start the WAL over when
/// it is long (see [`reset`]), so that the log's latency does not include the reset. A reset
/// that fails leaves the pin marked fresh (the next capture checks for a restart it did not
/// see) and is only logged: what was published stands.
pub(super) fn start_over_if_long(slot: &Slot, pin: &mut Pin, state: ChainState) -> ChainState {
    if state.wal.map_or(0, |c| c.frames) < RESET_FRAMES {
        return state;
    }
    let saved = state.clone();
    match reset(slot, pin, state) {
        Ok(next) => next,
        Err(e) => {
            pin.fresh = true;
            tracing::warn!(db = slot.name(), error = %e, "the WAL reset failed; the next capture reads the WAL again");
            saved
        }
    }
}

/// Write the captured frames into the shadow and record the new position and cursor.
///
/// The shadow's page 1 is its own marker: it is stamped with the new position (and page count)
/// before any other page is written, every image of page 1 written is stamped the same, and
/// `chain.state` records the position only after the capture. So a shadow whose page 1 says
/// another position than `chain.state` may be ahead of it (a crash in between), and one that
/// says the same is exactly at it (see [`shadow_suspect`]).
///
/// **Syncs.** The images are not synced at every capture: the page cache keeps them across a
/// crash of the agent, and only a crash of the machine can lose them. The file is synced when
/// `sync` asks (the driver's WAL reset, before SQLite may start the log over and drop the
/// frames), when the WAL started over since the last sync (frames written since are no longer
/// all in it), and the first time after a sync also right after page 1 is stamped (so that on
/// disk too, the stamp precedes every image of the update). Meanwhile `chain.state` records where
/// the file was last synced and in which boot ([`Unsynced`]); after a new boot the first capture
/// writes those frames again ([`resync`]). One sync every WAL reset (a thousand frames) instead
/// of two per capture.
fn apply(
    slot: &Slot,
    wal: &File,
    prev: ChainState,
    steps: &[(Committed, WalCursor)],
    sync: bool,
) -> Result<ChainState, DriverError> {
    let dir = &slot.dir;
    let mut next = prev;
    let mut changed = PageSet::default();
    let shadow = next.shadow_path(dir);
    let updating =
        |e: io::Error| DriverError::io(format!("updating the shadow {}", shadow.display()), &e);
    let commits: u64 = steps.iter().map(|(c, _)| c.commits).sum();
    let synced_at = match &next.unsynced {
        Some(u) => u.since,
        None => next.wal,
    };
    let mut file = None;
    if commits > 0 {
        let page_count = steps
            .iter()
            .filter_map(|(c, _)| c.db_pages)
            .next_back()
            .unwrap_or(next.page_count);
        let position = Lsn(next.position.0 + commits);
        let f = durable::open_rw(&shadow).map_err(updating)?;
        stamp_page1(&f, position, page_count).map_err(updating)?;
        if next.unsynced.is_none() {
            f.sync_data().map_err(updating)?;
            next.unsynced = Some(Unsynced {
                since: synced_at,
                boot: boot_id(),
            });
        }
        for (new, _) in steps {
            write_frames(wal, new, next.page_size, &f, Some((position, page_count)))
                .map_err(updating)?;
            changed.extend(&new.pages.keys().copied().collect::<PageSet>());
        }
        next.position = position;
        next.page_count = page_count;
        changed.insert(1);
        crate::crash::point("capture_mid_shadow");
        file = Some(f);
    }
    let restarted = steps
        .iter()
        .any(|(_, c)| synced_at.map(|s| s.salts) != Some(c.salts));
    if next.unsynced.is_some() && (sync || restarted) {
        let f = match file {
            Some(f) => f,
            None => durable::open_rw(&shadow).map_err(updating)?,
        };
        f.sync_all().map_err(updating)?;
        next.unsynced = None;
    }
    if let Some((_, last)) = steps.last() {
        next.wal = Some(*last);
    }
    next.wal_mode = true;
    next.log_touched.extend(&changed);
    next.incr_touched.extend(&changed);
    Ok(next)
}

/// This boot of the machine (empty when it cannot be read: then every start counts as a new
/// boot).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// At the first capture of a chain whose shadow file holds images not yet synced, written in
/// another boot of the machine (see [`apply`]): write again every frame committed since the
/// file was last synced, from the WAL (the newest image of each page, which the capture that
/// follows may write once more), stamp page 1 with the chain's position and sync. `false` when
/// the WAL no longer holds those frames: the caller compares the whole database instead.
fn resync(slot: &Slot, pin: &Pin, state: &mut ChainState) -> Result<bool, DriverError> {
    let Some(u) = state.unsynced.clone() else {
        return Ok(true);
    };
    if !u.boot.is_empty() && u.boot == boot_id() {
        return Ok(true);
    }
    let read_err = || io_err(format!("reading the WAL of database {}", slot.name()));
    let steps = match (
        wal::read_committed(&pin.wal, u.since.as_ref()).map_err(read_err())?,
        u.since,
    ) {
        (WalRead::Continued { new, .. }, _) => vec![new],
        (WalRead::Restarted { .. }, Some(old)) => {
            match wal::read_after_restart(&pin.wal, &old).map_err(read_err())? {
                AfterRestart::Complete { old_tail, new, .. } => vec![old_tail, new],
                AfterRestart::Unknown => return Ok(false),
            }
        }
        _ => return Ok(false),
    };
    let shadow = state.shadow_path(&slot.dir);
    (|| {
        let file = durable::open_rw(&shadow)?;
        for new in &steps {
            write_frames(
                &pin.wal,
                new,
                state.page_size,
                &file,
                Some((state.position, state.page_count)),
            )?;
        }
        stamp_page1(&file, state.position, state.page_count)?;
        file.sync_all()
    })()
    .map_err(|e| DriverError::io(format!("writing again the shadow {}", shadow.display()), &e))?;
    tracing::info!(db = slot.name(), "the machine restarted: the shadow copy's images written since its last sync are written again from the WAL");
    state.unsynced = None;
    Ok(true)
}

/// Whether the shadow of `state` may hold pages newer than its position: its page 1 says another
/// position (an update the crash interrupted, see [`apply`]), or an older version's marker file
/// is there. A shadow that cannot be read is suspect too.
pub(super) fn shadow_suspect(dir: &Path, state: &ChainState) -> bool {
    if dir.join(DIRTY_FILE).exists() {
        return true;
    }
    let mut counter = [0u8; 4];
    match File::open(state.shadow_path(dir)).and_then(|f| f.read_exact_at(&mut counter, 24)) {
        Ok(()) => u32::from_be_bytes(counter) != state.position.0 as u32,
        Err(_) => true,
    }
}

/// Record a capture's state once what it published is in the outbox: `chain.state` (when it
/// changed since `before`) and the position reference, one write of each per capture. A crash
/// before this reads the same frames again (the shadow's page 1 says it may be ahead of
/// `chain.state`); a log published twice is the same artifact.
pub(super) fn persist(
    slot: &Slot,
    before: Option<&ChainState>,
    state: &ChainState,
) -> Result<(), DriverError> {
    let dir = &slot.dir;
    if before != Some(state) {
        state.save(dir)?;
    }
    // A marker an older version left (none is written now: see [`shadow_suspect`]).
    durable::remove_durably(&dir.join(DIRTY_FILE))
}

/// Let SQLite start the WAL over once it is long: with the pins alone the log would grow for
/// ever under a steady writer (a pin on a snapshot inside the log forbids a restart).
///
/// `state` is persisted. The pin moves to the newest snapshot and a passive checkpoint copies
/// what it allows, without blocking anyone. Then the driver takes the write lock between two of
/// the application's transactions (tried without waiting, over and over for up to
/// [`WRITE_LOCK_WAIT`]: SQLite's busy handler sleeps a millisecond or more between tries and
/// almost never finds a busy writer's lock free) and, while no frame can be added, writes the
/// frames committed since `state` into the shadow and records them, releases the pin,
/// checkpoints the few frames left and pins again on a log that is fully copied (SQLite's read
/// slot 0, which lets the next writer restart the log): no crash can leave frames that are gone
/// from the WAL and not in `chain.state`.
fn reset(slot: &Slot, pin: &mut Pin, state: ChainState) -> Result<ChainState, DriverError> {
    pin.renew(slot)?;
    let other = 1 - pin.active;
    if let Err(e) = checkpoint(&pin.conns[other], CATCH_UP_WAIT, false) {
        tracing::debug!(db = slot.name(), error = %e, "checkpoint before the WAL reset");
    }
    // The shadow's images since its last sync are synced before the write lock is taken: under
    // it, only the last few frames' are (see [`apply`]), and the application's writer does not
    // wait for every page it touched since the last reset to reach the disk.
    let mut state = state;
    if state.unsynced.is_some() {
        let shadow = state.shadow_path(&slot.dir);
        durable::open_rw(&shadow)
            .and_then(|f| f.sync_all())
            .map_err(|e| DriverError::io(format!("syncing the shadow {}", shadow.display()), &e))?;
        state.unsynced = None;
    }
    if let Err(e) = take_write_lock(&pin.conns[other], slot) {
        tracing::debug!(db = slot.name(), error = %e, "WAL reset skipped: the application writes");
        return Ok(state);
    }
    let under_lock = (|| -> Result<Option<(ChainState, [u32; 2], bool)>, DriverError> {
        let read_err = || io_err(format!("reading the WAL of database {}", slot.name()));
        let (new, cursor) =
            match wal::read_committed(&pin.wal, state.wal.as_ref()).map_err(read_err())? {
                WalRead::Continued { cursor, new } => (new, cursor),
                // Impossible under the pin and the write lock; read again at the next capture.
                _ => return Ok(None),
            };
        // Recorded before the checkpoint lets SQLite start the log over: no crash can leave
        // frames that are gone from the WAL and not in `chain.state`.
        let next = apply(slot, &pin.wal, state.clone(), &[(new, cursor)], true)?;
        persist(slot, Some(&state), &next)?;
        let held = &pin.conns[pin.active];
        held.execute_batch("COMMIT")
            .map_err(|e| DriverError::sqlite(slot.what("releasing the pin of"), &e))?;
        let copied = checkpoint(held, CHECKPOINT_WAIT, true);
        begin(held, slot)?;
        if let Err(e) = &copied {
            tracing::debug!(db = slot.name(), error = %e, "checkpoint under the write lock");
        }
        Ok(Some((next, cursor.salts, copied.is_ok())))
    })();
    let released = pin.conns[other].execute_batch("COMMIT");
    let done = under_lock?;
    released.map_err(|e| DriverError::sqlite(slot.what("releasing the write lock of"), &e))?;
    let Some((next, salts, emptied)) = done else {
        return Ok(state);
    };
    if emptied {
        if let Err(e) = leave_slot_zero(slot, pin, salts) {
            // The pin stays where it is: correct, only slower for the application until the
            // next capture moves it.
            tracing::warn!(db = slot.name(), error = %e, "the pin could not move into the new WAL");
        }
    }
    Ok(next)
}

/// After a reset the pin sits on a fully copied log (SQLite's read slot 0): the next writer may
/// start the log over, but no checkpoint can copy anything while it stays there, and SQLite's
/// automatic checkpoint after each commit would sort every frame of the growing new log and
/// give up, commit after commit (under a busy writer, most of the application's time). So once
/// the WAL index shows the log started over and a commit in the new one (waited for up to
/// [`RESTART_WAIT`]), the pin moves to the newest snapshot: a frame committed and none copied
/// (nothing can be copied while the old pin holds slot 0) puts it on a slot that forbids the
/// next restart and lets checkpoints copy up to it. Safe without a capture for the same reason:
/// the log cannot have started over twice.
fn leave_slot_zero(slot: &Slot, pin: &mut Pin, old_salts: [u32; 2]) -> Result<(), DriverError> {
    let deadline = Instant::now() + RESTART_WAIT;
    loop {
        let index = wal::read_index(&pin.shm).map_err(io_err(format!(
            "reading the WAL index of database {}",
            slot.name()
        )))?;
        if index.is_some_and(|i| i.salts != old_salts && i.max_frame > i.backfilled) {
            return pin.swap(slot);
        }
        if Instant::now() >= deadline {
            return Ok(());
        }
        std::thread::sleep(CHECKPOINT_RETRY);
    }
}

/// A passive checkpoint on `conn` (which holds no transaction), tried again while another one
/// (the application's automatic checkpoint) holds SQLite's checkpoint lock, for up to `within`.
/// `Ok` once one ran, and, with `all`, only if it left every frame in the database file (a
/// reader of an older snapshot can stop it short: that is not retried).
fn checkpoint(conn: &Connection, within: Duration, all: bool) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match done {
            Ok((0, log, copied)) if !all || copied == log => return Ok(()),
            Ok((0, log, copied)) => {
                return Err(format!(
                "{copied} of {log} frames in the database file: a reader holds an older snapshot"
            ))
            }
            Ok(_) if Instant::now() < deadline => std::thread::sleep(CHECKPOINT_RETRY),
            Ok(_) => return Err("another checkpoint kept the checkpoint lock".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `BEGIN IMMEDIATE` on `conn`, tried without waiting until it succeeds or [`WRITE_LOCK_WAIT`]
/// has passed.
fn take_write_lock(conn: &Connection, slot: &Slot) -> Result<(), rusqlite::Error> {
    let _ = conn.busy_timeout(Duration::ZERO);
    let deadline = Instant::now() + WRITE_LOCK_WAIT;
    let taken = loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => break Ok(()),
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
                if !busy || Instant::now() >= deadline {
                    break Err(e);
                }
                std::thread::yield_now();
            }
        }
    };
    let _ = conn.busy_timeout(slot.busy);
    taken
}

/// Start a chain at a fresh snapshot of the live database.
fn start(
    slot: &Slot,
    pin: &mut Pin,
    why: Option<String>,
    progress: &Progress,
) -> Result<ChainState, DriverError> {
    let staged = slot.staged_shadow();
    let (image, cursor, _) = snapshot(pin, &staged, progress)?;
    let previous = ChainState::load(&slot.dir, slot.name());
    let reference =
        chain::load_reference(&slot.dir).max(previous.as_ref().map_or(Lsn(0), |c| c.position));
    // A new chain starts past every position handed out before, so positions never go back.
    let position = Lsn(widen(image.counter, reference).0.max(reference.0) + 1);
    stamp(&staged, position, image.page_count)?;
    let generation = previous.map_or(1, |c| c.generation + 1);
    let mut state = ChainState::start(
        generation,
        position,
        Image {
            counter: position.0 as u32,
            ..image
        },
    );
    state.wal_mode = true;
    state.wal = cursor;
    state.commit(&slot.dir, &staged)?;
    durable::remove_durably(&slot.dir.join(DIRTY_FILE))?;
    if let Some(why) = why {
        tracing::info!(db = slot.name(), %position, %why, "the WAL chain starts at a new snapshot");
    }
    pin.renew(slot)?;
    Ok(state)
}

fn stamp(path: &Path, position: Lsn, page_count: u32) -> Result<(), DriverError> {
    durable::open_rw(path)
        .and_then(|f| {
            stamp_page1(&f, position, page_count)?;
            f.sync_all()
        })
        .map_err(io_err(format!("stamping {}", path.display())))
}

/// The WAL lost frames the driver had not read (a restart or truncation while the agent was not
/// running): compare the shadow with a snapshot of the live database and carry every page that
/// differs. The count of transactions in between is unknown: the position moves by one.
fn heal(
    slot: &Slot,
    pin: &mut Pin,
    prev: ChainState,
    suspect: bool,
    why: &str,
    progress: &Progress,
) -> Result<(ChainState, Captured), DriverError> {
    let switched = !prev.wal_mode;
    if switched {
        tracing::info!(db = slot.name(), %why,
            "comparing the database with the shadow copy of its last snapshot once");
    } else {
        tracing::warn!(db = slot.name(), %why,
            "the WAL lost frames the driver had not read: comparing the whole database with \
             the shadow copy (the next log's transaction count is a lower bound)");
        slot.gaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!(
                "{why}, and frames the driver had not read are gone"
            ));
    }
    let staged = slot.staged_shadow();
    let (image, cursor, commits) = snapshot(pin, &staged, progress)?;
    if image.page_size != prev.page_size {
        let why = Some("its page size changed".to_string());
        return start(slot, pin, why.clone(), progress).map(|c| (c, Captured::Starts(why)));
    }
    let old = prev.shadow_path(&slot.dir);
    // A shadow a crash left half updated cannot be compared with: every page is carried.
    let touched = if suspect {
        PageSet::default()
    } else {
        File::open(&old)
            .and_then(|o| {
                let n = File::open(&staged)?;
                let touched = chain::changed_pages(&o, prev.image(), &n, image);
                durable::drop_cached(&o);
                durable::drop_cached(&n);
                touched
            })
            .map_err(io_err(format!(
                "comparing {} with a snapshot",
                old.display()
            )))?
    };
    let mut next = prev;
    next.generation += 1;
    next.unsynced = None;
    // Exact when the database switched to WAL mode right after the snapshot (every transaction
    // since is in the WAL); a lower bound when frames were lost.
    let moved = suspect || !touched.is_empty() || commits > 0;
    let counted = if switched { commits } else { commits.max(1) };
    next.position = Lsn(next.position.0 + if moved { counted.max(1) } else { 0 });
    next.page_count = image.page_count;
    next.wal_mode = true;
    stamp(&staged, next.position, image.page_count)?;
    let mut touched = touched;
    if moved {
        touched.insert(1);
    }
    if suspect {
        // Pages written into the shadow before a crash look unchanged: carry every page.
        touched.insert_range(1, image.page_count.max(1));
    }
    next.log_touched.extend(&touched);
    next.incr_touched.extend(&touched);
    next.wal = cursor;
    next.commit(&slot.dir, &staged)?;
    pin.renew(slot)?;
    Ok((next, Captured::Continues))
}

/// The position of a WAL-mode database now: its chain's position plus the transactions
/// committed in the WAL since (read-only: nothing is captured). Frames counted by the previous
/// sample of the same chain are not read again while the WAL has not started over.
pub(super) fn position(slot: &Slot, pin: &mut Pin) -> Result<Lsn, DriverError> {
    let Some(state) = ChainState::load(&slot.dir, slot.name()) else {
        return Ok(chain::load_reference(&slot.dir));
    };
    if !state.wal_mode {
        return Ok(state.position);
    }
    let read = |from: Option<&WalCursor>| {
        wal::read_committed(&pin.wal, from).map_err(io_err(format!(
            "reading the WAL of database {}",
            slot.name()
        )))
    };
    let from = (state.position, state.wal);
    let known = pin.counted.filter(|c| c.from == from);
    let (at, more) = match known.map(|c| (c, read(Some(&c.at)))) {
        Some((c, Ok(WalRead::Continued { cursor, new }))) => {
            (Some(cursor), c.commits + new.commits)
        }
        _ => match read(state.wal.as_ref())? {
            WalRead::Continued { cursor, new } | WalRead::Restarted { cursor, new } => {
                (Some(cursor), new.commits)
            }
            WalRead::Empty => (None, 0),
        },
    };
    pin.counted = at.map(|at| Counted {
        from,
        at,
        commits: more,
    });
    Ok(Lsn(state.position.0 + more))
}

/// The position a former WAL-mode primary is at, when a delta from the new primary is about to
/// be applied to it: counted by the driver (its chain plus the transactions committed in the
/// WAL since), to be stamped into page 1 once the file is in rollback-journal mode. `None` for a
/// database that is not, or no longer, a WAL-mode primary's. Drops the pin.
pub(super) fn demotion_position(
    slot: &Slot,
    st: &mut super::slot::SlotState,
) -> Result<Option<Lsn>, DriverError> {
    let chain = ChainState::load(&slot.dir, slot.name()).filter(|c| c.wal_mode);
    if chain.is_none() {
        st.pin = None;
        return Ok(None);
    }
    if st.pin.is_none() && slot.path().is_file() {
        st.pin = Pin::open(slot)?;
    }
    let at = match st.pin.take() {
        Some(mut pin) => position(slot, &mut pin)?,
        // Already in rollback-journal mode (a crash after the switch): what the chain says.
        None => chain.map_or(Lsn(0), |c| c.position),
    };
    Ok(Some(at))
}

/// Stamp `position` into page 1 of a file just switched to rollback-journal mode (under the
/// exclusive lock whose handle `file` is), with its page count, and make it durable.
pub(super) fn stamp_demoted(file: &File, position: Lsn) -> io::Result<()> {
    let page_size = header_page_size(file)?;
    let pages = (file.metadata()?.len() / u64::from(page_size.max(512))) as u32;
    stamp_page1(file, position, pages)?;
    file.sync_all()
}
