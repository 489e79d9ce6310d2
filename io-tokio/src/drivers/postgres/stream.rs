//! Streaming: the recovery site receives the primary's WAL as PostgreSQL flushes it, so a
//! failover recovers what the primary wrote up to its last moment, not up to its last finished
//! segment.
//!
//! ```text
//! primary site                                     recovery site
//! PostgreSQL <--TCP-- Listener <==Tunnel link (mutual TLS)== LocalTunnel <--TCP-- pg_receivewal
//! (slot "lifeboat",      (tunnel target =                    127.0.0.1:p       --slot lifeboat
//!  max_slot_wal_keep_size) its server's address)                                -D <spool>/<db>/stream
//! ```
//!
//! The agent of the recovery site runs `pg_receivewal` (PostgreSQL's own receiver) per
//! database while it is the secondary, through a transport tunnel to the primary's server: the
//! replication connection uses lifeboat's authentication, and PostgreSQL's port never leaves
//! the primary's loopback. The receiver writes the segment being filled as `<name>.partial`
//! and renames it when the segment is complete; `--no-loop` makes it exit on any error, and
//! this module starts it again after `retry_ms` (so a restart follows the primary's address
//! and the slot). Finished segments still reach the standby through the chain (archived,
//! shipped, verified, restored); the stream is kept beside it, never applied while the
//! primary lives.
//!
//! **Promotion** ([`hand_over`]): the receiver is stopped; every streamed segment at or after
//! the standby's replay position is walked record by record ([`wal::scan_segment`]: lengths and
//! page headers) and copied into `pg_wal` under its segment name, a `.partial` cut at the end
//! of its last whole record and padded with zeros to the segment size. PostgreSQL in standby
//! mode reads `pg_wal` whenever `restore_command` has nothing: it replays the streamed WAL
//! (checking each record's CRC, stopping at the first invalid one) and the promotion opens at
//! the end of what it replayed, which the loss report then counts from (`Input::Promoted`).
//!
//! **The slot** (`lifeboat`, created by the receiver with `--create-slot --if-not-exists`)
//! keeps the primary from recycling WAL the receiver has not flushed. A recovery site that
//! stops receiving would make it keep WAL forever: `max_slot_wal_keep_size` bounds it (the
//! slot is then invalidated, and the receiver starts again from what the server still has),
//! and [`slot_health`] reports how close the slot is to the bound.

use super::config::PostgresConfig;
use super::spool::{self, OsUser};
use super::wal::{self, WalFile};
use crate::drivers::{DriverError, ErrorKind};
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The replication slot the receiver holds on the primary, and its `application_name` (which
/// `synchronous_standby_names` names in synchronous mode).
pub const SLOT: &str = "lifeboat";
/// How long a promotion keeps the receiver stopped for: the agent asks for it again once the
/// site is (still) the secondary after that.
const HOLD_AFTER_PROMOTION: Duration = Duration::from_secs(60);

/// What the receiver of one database is doing, for `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverState {
    /// The local tunnel end it receives through; `None`: not receiving.
    pub source: Option<SocketAddr>,
    /// A `pg_receivewal` is running.
    pub running: bool,
    /// Runs started since the agent started.
    pub starts: u64,
    /// Why the last run ended or could not start (the receiver's own words).
    pub last_error: Option<String>,
}

struct Ctl {
    state: ReceiverState,
    /// Bumped on every change of source: a run of an older generation stops.
    generation: u64,
    /// A promotion holds the receiver stopped until then.
    held_until: Option<Instant>,
    child: bool,
    thread: bool,
}

/// The supervised `pg_receivewal` of one database.
pub struct Receiver {
    db: String,
    program: PathBuf,
    user: String,
    dir: PathBuf,
    synchronous: bool,
    retry: Duration,
    ctl: Mutex<Ctl>,
    changed: Condvar,
}

impl Receiver {
    pub fn new(cfg: &PostgresConfig, db: &str, user: &str, dir: PathBuf) -> Arc<Receiver> {
        Arc::new(Receiver {
            db: db.to_string(),
            program: cfg.bin_dir.join("pg_receivewal"),
            user: user.to_string(),
            dir,
            synchronous: cfg.synchronous,
            retry: Duration::from_millis(cfg.receiver_retry_ms.max(50)),
            ctl: Mutex::new(Ctl {
                state: ReceiverState::default(),
                generation: 0,
                held_until: None,
                child: false,
                thread: false,
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ctl> {
        self.ctl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the streamed WAL is kept.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state(&self) -> ReceiverState {
        self.lock().state.clone()
    }

    /// Receive from `source`, or stop (`None`). Idempotent; a promotion's hold wins over a
    /// request to receive until it expires.
    pub fn set_source(self: &Arc<Self>, source: Option<SocketAddr>) {
        let mut c = self.lock();
        if source.is_some() && c.held_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if c.state.source == source {
            return;
        }
        c.state.source = source;
        c.generation += 1;
        if source.is_some() && !c.thread {
            c.thread = true;
            let me = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("receiver-{}", self.db))
                .spawn(move || me.supervise());
            if let Err(e) = spawned {
                c.thread = false;
                c.state.last_error = Some(format!("starting the receiver thread: {e}"));
            }
        }
        drop(c);
        self.changed.notify_all();
    }

    /// Stop receiving and wait until no `pg_receivewal` runs (at most `within`), holding the
    /// receiver stopped for a while: what a promotion does before it reads the stream.
    pub fn stop_for_promotion(&self, within: Duration) -> Result<(), DriverError> {
        let deadline = Instant::now() + within;
        let mut c = self.lock();
        c.held_until = Some(Instant::now() + HOLD_AFTER_PROMOTION);
        if c.state.source.is_some() {
            c.state.source = None;
            c.generation += 1;
        }
        self.changed.notify_all();
        while c.child {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the WAL receiver of database {} did not stop within {within:?}; the \
                         promotion goes on without the stream (check for a stuck \
                         pg_receivewal process)",
                        self.db
                    ),
                ));
            }
            c = self
                .changed
                .wait_timeout(c, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// The connection string of the receiver through the local tunnel end `source`.
    fn conninfo(&self, source: SocketAddr) -> String {
        format!(
            "host={} port={} user={} application_name={SLOT} connect_timeout=10",
            source.ip(),
            source.port(),
            self.user
        )
    }

    fn supervise(self: Arc<Self>) {
        loop {
            // Wait for a source.
            let (source, generation) = {
                let mut c = self.lock();
                loop {
                    if let Some(s) = c.state.source {
                        break (s, c.generation);
                    }
                    c = self
                        .changed
                        .wait_timeout(c, Duration::from_secs(1))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            };
            let ended = self.run_once(source, generation);
            let mut c = self.lock();
            if let Err(why) = ended {
                if c.generation == generation {
                    if c.state.last_error.as_deref() != Some(why.as_str()) {
                        warn!(db = %self.db, %source, %why, "the WAL receiver stopped; starting it again");
                    }
                    c.state.last_error = Some(why);
                }
            }
            // Back off before the next run (a change of source wakes us at once).
            let until = Instant::now() + self.retry;
            while c.generation == generation && Instant::now() < until {
                let left = until.saturating_duration_since(Instant::now());
                c = self
                    .changed
                    .wait_timeout(c, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    fn current(&self, generation: u64) -> bool {
        self.lock().generation == generation
    }

    /// Create the slot if needed, then run `pg_receivewal` until it exits or the source
    /// changes. `Err` is why it ended.
    fn run_once(&self, source: SocketAddr, generation: u64) -> Result<(), String> {
        fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let conn = self.conninfo(source);
        let mut create = Command::new(&self.program);
        create
            .args(["--create-slot", "--if-not-exists", "--slot", SLOT, "-d"])
            .arg(&conn)
            .arg("--no-password");
        super::server::run(create, "pg_receivewal --create-slot").map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.program);
        cmd.arg("-D")
            .arg(&self.dir)
            .args(["--slot", SLOT, "--no-loop", "--status-interval=1", "-d"])
            .arg(&conn)
            .arg("--no-password")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if self.synchronous {
            cmd.arg("--synchronous");
        }
        // Checked and published under one lock: a promotion that stops the receiver either
        // sees this run or this run sees the promotion.
        let mut child = {
            let mut c = self.lock();
            if c.generation != generation {
                return Ok(());
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", self.program.display()))?;
            c.child = true;
            c.state.running = true;
            c.state.starts += 1;
            c.state.last_error = None;
            child
        };
        info!(db = %self.db, %source, dir = %self.dir.display(), synchronous = self.synchronous,
              "WAL receiver started");
        // The receiver's last words before its final "disconnected", and whether any line said
        // the primary no longer has the WAL it asks for.
        let said = Arc::new(Mutex::new((String::new(), false)));
        let reader = child.stderr.take().map(|err| {
            let (db, said) = (self.db.clone(), said.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    debug!(db = %db, receiver = %line, "pg_receivewal");
                    let mut s = said.lock().unwrap_or_else(|e| e.into_inner());
                    if line.contains("has already been removed")
                        || line.contains("can no longer get changes")
                        || line.contains("this slot has been invalidated")
                    {
                        s.1 = true;
                    }
                    if !line.trim_end().ends_with("error: disconnected") || s.0.is_empty() {
                        s.0 = line;
                    }
                }
            })
        });
        let status = self.watch(&mut child, generation);
        if let Some(r) = reader {
            let _ = r.join();
        }
        let (last, behind) = said.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Cleanup before the run is published as ended: a promotion waits for it.
        if status.is_some() && behind && self.current(generation) {
            // The primary no longer has the WAL after what was received (the slot went over
            // `max_slot_wal_keep_size`, or it was dropped): start over from what it has. The
            // chain still brings every finished segment.
            warn!(db = %self.db, why = %last.trim(), "the stream fell behind what the primary keeps; starting it over");
            let mut drop_slot = Command::new(&self.program);
            drop_slot
                .args(["--drop-slot", "--slot", SLOT, "-d"])
                .arg(&conn)
                .arg("--no-password");
            if let Err(e) = super::server::run(drop_slot, "pg_receivewal --drop-slot") {
                warn!(db = %self.db, error = %e, "dropping the slot failed");
            }
            clear(&self.dir);
        }
        {
            let mut c = self.lock();
            c.child = false;
            c.state.running = false;
        }
        self.changed.notify_all();
        let Some(status) = status else {
            return Ok(()); // stopped on purpose
        };
        Err(format!("pg_receivewal exited ({status}): {}", last.trim()))
    }

    /// Wait for the child to exit (its status) or for the source to change (stop it: `None`).
    fn watch(&self, child: &mut Child, generation: u64) -> Option<std::process::ExitStatus> {
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            let c = self.lock();
            if c.generation != generation {
                drop(c);
                stop_child(child);
                return None;
            }
            let _ = self
                .changed
                .wait_timeout(c, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// SIGTERM (the receiver flushes what it has and exits), then SIGKILL after 5 s.
fn stop_child(child: &mut Child) {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH: it already exited, which is what we wanted.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One streamed file: a whole segment or the one being filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    pub timeline: u32,
    pub segno: u64,
    pub partial: bool,
    pub path: PathBuf,
}

/// The segment files of a stream directory, oldest first (anything else is left alone).
pub fn list(dir: &Path, segment_size: u64) -> Vec<Streamed> {
    let mut out: Vec<Streamed> = spool::list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, path)| match WalFile::parse(&name, segment_size)? {
            WalFile::Segment { timeline, segno } => Some(Streamed {
                timeline,
                segno,
                partial: false,
                path,
            }),
            WalFile::Partial { timeline, segno } => Some(Streamed {
                timeline,
                segno,
                partial: true,
                path,
            }),
            _ => None,
        })
        .collect();
    // Within a segment number the newest timeline first: it is the one being followed.
    out.sort_by_key(|s| (s.segno, std::cmp::Reverse(s.timeline), s.partial));
    out
}

/// The end of the valid WAL received (the end of the last whole record of the newest file),
/// or `None` when nothing was received.
pub fn received_end(dir: &Path, segment_size: u64) -> Option<u64> {
    let newest = list(dir, segment_size).pop()?;
    let bytes = fs::read(&newest.path).ok()?;
    wal::scan_segment(&bytes, newest.segno, segment_size)
        .ok()
        .map(|s| s.valid_end)
}

/// What [`hand_over`] put into `pg_wal`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandedOver {
    pub files: usize,
    /// The end of the valid WAL in them (0: nothing handed over).
    pub end: u64,
}

/// Copy the streamed segments from `replayed` on into `pg_wal` of `data_dir` (owned by
/// `user`), each cut at the end of its valid WAL and padded to the segment size, unless
/// `pg_wal` already holds as much of that segment (PostgreSQL keeps what it restored there,
/// and copies the last segment into the new timeline). A file whose walk fails is not handed
/// over, and nothing after it either (a hole would not replay); a stream that holds no more
/// than was replayed hands nothing over.
pub fn hand_over(
    dir: &Path,
    data_dir: &Path,
    segment_size: u64,
    replayed: u64,
    user: Option<OsUser>,
) -> Result<HandedOver, DriverError> {
    let mut out = HandedOver::default();
    if !wal::valid_segment_size(segment_size) {
        return Ok(out);
    }
    let from = wal::segment_of(replayed, segment_size);
    let pg_wal = data_dir.join("pg_wal");
    // The stream must go on from the segment being replayed, without a hole.
    let mut next = from;
    for s in list(dir, segment_size) {
        if s.segno < next {
            continue;
        }
        if s.segno > next {
            warn!(segment = s.segno, expected = next, "the stream does not reach back to the replay position; what follows is not handed over");
            break;
        }
        let bytes = fs::read(&s.path)
            .map_err(|e| DriverError::io(format!("reading {}", s.path.display()), &e))?;
        let scan = match wal::scan_segment(&bytes, s.segno, segment_size) {
            Ok(scan) => scan,
            Err(e) => {
                warn!(file = %s.path.display(), error = %e, "a streamed segment does not walk; it and later ones are not handed over");
                break;
            }
        };
        let (start, _) = wal::segment_range(s.segno, segment_size);
        if scan.valid_end <= start.max(replayed) {
            // The stream holds no more of this segment than the standby replayed: it lags
            // the chain, and nothing after it can be ahead either.
            break;
        }
        let target = pg_wal.join(wal::segment_name(s.timeline, s.segno, segment_size));
        // PostgreSQL keeps the segments it restored in pg_wal under their names, and copies
        // the last one into the new timeline at promotion: never replace one by less WAL.
        let existing = fs::read(&target)
            .ok()
            .and_then(|b| wal::scan_segment(&b, s.segno, segment_size).ok())
            .map_or(0, |e| e.valid_end);
        if existing < scan.valid_end {
            let keep = usize::try_from(scan.valid_end - start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let mut image = bytes[..keep].to_vec();
            image.resize(segment_size as usize, 0);
            write_segment(&target, &image, user)?;
            out.files += 1;
        }
        out.end = out.end.max(scan.valid_end);
        // A segment that is not complete ends the stream.
        if s.partial || (scan.valid_end < start + segment_size && !scan.switched) {
            break;
        }
        next = s.segno + 1;
    }
    Ok(out)
}

/// Remove the streamed segments before the one holding the last byte restored: the chain
/// brought them. (That one stays: replay reports the end of its last record, which lies in it,
/// and a promotion hands the stream over from there.)
pub fn prune(dir: &Path, segment_size: u64, restored: u64) {
    if segment_size == 0 {
        return;
    }
    let keep_from = wal::segment_of(restored.saturating_sub(1), segment_size);
    for s in list(dir, segment_size) {
        if s.segno < keep_from {
            let _ = fs::remove_file(&s.path);
        }
    }
}

fn write_segment(target: &Path, image: &[u8], user: Option<OsUser>) -> Result<(), DriverError> {
    spool::write_durably(target, image)
        .and_then(|()| spool::give_to(target, user))
        .map_err(|e| {
            DriverError::io(
                format!("writing the streamed segment {}", target.display()),
                &e,
            )
        })
}

/// Remove every streamed file (after a promotion used them; never under a running receiver,
/// which would go on writing into a removed file). A reseed leaves them: the hand-over starts
/// at the replay position and needs no older file.
pub fn clear(dir: &Path) {
    for (_, path) in spool::list(dir).unwrap_or_default() {
        let _ = fs::remove_file(path);
    }
    let _ = spool::sync_dir(dir);
}

/// How close the primary's slot is to `max_slot_wal_keep_size`: the SQL that asks, and how to
/// read its answer (`wal_status`, `safe_wal_size` in bytes; no row: no slot).
pub const SLOT_HEALTH_SQL: &str =
    "select coalesce(wal_status, 'reserved') || ' ' || coalesce(safe_wal_size::text, '-') \
     from pg_replication_slots where slot_name = 'lifeboat'";

/// The slot's state on the primary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotHealth {
    /// No slot (no receiver ever connected, or it was dropped).
    None,
    /// Within the bound: `left` more bytes may be kept before the slot is invalidated.
    Reserved { left: u64 },
    /// `unreserved` / `lost`: the receiver fell behind by more than the bound.
    Over { status: String },
}

/// Read an answer of [`SLOT_HEALTH_SQL`].
pub fn slot_health(rows: &[String]) -> SlotHealth {
    let Some(row) = rows.first() else {
        return SlotHealth::None;
    };
    let (status, left) = row.split_once(' ').unwrap_or((row.as_str(), "-"));
    match status {
        // No WAL reserved yet (a slot made before its first feedback): nothing kept.
        "" => SlotHealth::None,
        "reserved" | "extended" => SlotHealth::Reserved {
            left: left.parse().unwrap_or(u64::MAX),
        },
        other => SlotHealth::Over {
            status: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::wal::tests::{build, SEG};
    use super::*;

    fn name(segno: u64, partial: bool) -> String {
        let n = wal::segment_name(1, segno, SEG);
        if partial {
            format!("{n}.partial")
        } else {
            n
        }
    }

    /// A stream directory and a data directory with an empty `pg_wal`.
    fn dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let (stream, data) = (t.path().join("stream"), t.path().join("data"));
        fs::create_dir_all(&stream).unwrap();
        fs::create_dir_all(data.join("pg_wal")).unwrap();
        (t, stream, data)
    }

    /// Records that fill segment `segno` (its last one crosses into the next).
    fn full(segno: u64) -> Vec<u8> {
        build(segno, &vec![(8_000, 10, 0); 140], None)
    }

    #[test]
    fn the_stream_is_handed_over_from_the_replay_position_cut_at_its_last_whole_record() {
        let (_t, stream, data) = dirs();
        // Segment 4 was restored through the chain (older: not handed over), 5 is whole, 6
        // is being filled; garbage names are left alone.
        fs::write(stream.join(name(4, false)), full(4)).unwrap();
        fs::write(stream.join(name(5, false)), full(5)).unwrap();
        let mut partial = build(6, &[(100, 10, 0), (30, 10, 0)], Some(2_000));
        let end = wal::scan_segment(&partial, 6, SEG).unwrap().valid_end;
        // A torn tail after the last whole record: not handed over.
        let cut = (end - 6 * SEG) as usize;
        partial[cut..cut + 8].copy_from_slice(&[0xAB; 8]);
        fs::write(stream.join(name(6, true)), &partial).unwrap();
        fs::write(stream.join("receiver.log"), b"x").unwrap();
        fs::write(stream.join("00000001000000000000000Z"), b"x").unwrap();
        let replayed = 5 * SEG + 100;
        let h = hand_over(&stream, &data, SEG, replayed, None).unwrap();
        assert_eq!(h, HandedOver { files: 2, end });
        let pg_wal = data.join("pg_wal");
        assert!(!pg_wal.join(name(4, false)).exists());
        assert_eq!(fs::read(pg_wal.join(name(5, false))).unwrap(), full(5));
        let six = fs::read(pg_wal.join(name(6, false))).unwrap();
        assert_eq!(six.len() as u64, SEG, "padded to the segment size");
        assert_eq!(&six[..cut], &partial[..cut]);
        assert!(
            six[cut..].iter().all(|&b| b == 0),
            "cut at the last whole record"
        );
        assert_eq!(received_end(&stream, SEG), Some(end));

        // Again, with pg_wal holding all of segment 5 (restored from the chain) and a stream
        // copy of 5 cut short: 5 is left as it is, 6 is handed over.
        let (_t2, stream2, data2) = dirs();
        let whole = full(5);
        fs::write(data2.join("pg_wal").join(name(5, false)), &whole).unwrap();
        let mut short = whole.clone();
        short[300_000..].fill(0);
        fs::write(stream2.join(name(5, false)), &short).unwrap();
        fs::write(stream2.join(name(6, true)), &partial).unwrap();
        // (The short copy ends inside 5: the hand-over stops there, nothing else is written.)
        let h = hand_over(&stream2, &data2, SEG, replayed, None).unwrap();
        assert_eq!(h.files, 0);
        assert_eq!(
            fs::read(data2.join("pg_wal").join(name(5, false))).unwrap(),
            whole
        );
        // A stream that lags the replay position hands nothing over.
        let h = hand_over(&stream2, &data2, SEG, 5 * SEG + 600_000, None).unwrap();
        assert_eq!(h, HandedOver::default());
    }

    #[test]
    fn a_hole_or_a_segment_that_does_not_walk_ends_the_hand_over() {
        let (_t, stream, data) = dirs();
        // The stream starts after the segment being replayed: nothing to hand over.
        fs::write(stream.join(name(7, false)), full(7)).unwrap();
        let h = hand_over(&stream, &data, SEG, 5 * SEG + 100, None).unwrap();
        assert_eq!(h, HandedOver::default());
        // Segment 5 whole, 6 garbage, 7 whole: only 5.
        fs::write(stream.join(name(5, false)), full(5)).unwrap();
        fs::write(stream.join(name(6, false)), vec![0x5A; SEG as usize]).unwrap();
        let h = hand_over(&stream, &data, SEG, 5 * SEG + 100, None).unwrap();
        assert_eq!(h.files, 1);
        assert!(!data.join("pg_wal").join(name(7, false)).exists());
        // Truncated and empty files are no panic either.
        fs::write(stream.join(name(5, false)), &full(5)[..5_000]).unwrap();
        fs::write(stream.join(name(6, false)), b"").unwrap();
        let h = hand_over(&stream, &data, SEG, 5 * SEG + 100, None).unwrap();
        assert!(h.files <= 1);
        // An impossible segment size hands nothing over.
        assert_eq!(
            hand_over(&stream, &data, 12_345, 0, None).unwrap(),
            HandedOver::default()
        );
    }

    #[test]
    fn prune_keeps_the_segment_that_holds_the_last_restored_byte() {
        let (_t, stream, _data) = dirs();
        for segno in 3..=6 {
            fs::write(stream.join(name(segno, false)), b"x").unwrap();
        }
        // Restored up to the end of segment 4: 4 stays (replay reports a position in it).
        prune(&stream, SEG, 5 * SEG);
        let left: Vec<u64> = list(&stream, SEG).iter().map(|s| s.segno).collect();
        assert_eq!(left, vec![4, 5, 6]);
        prune(&stream, 0, 10 * SEG);
        assert_eq!(
            list(&stream, SEG).len(),
            3,
            "no segment size: nothing removed"
        );
        clear(&stream);
        assert!(list(&stream, SEG).is_empty());
    }

    #[test]
    fn slot_health_reads_the_servers_answer() {
        assert_eq!(slot_health(&[]), SlotHealth::None);
        assert_eq!(slot_health(&[" -".into()]), SlotHealth::None);
        assert_eq!(
            slot_health(&["reserved 1048576".into()]),
            SlotHealth::Reserved { left: 1 << 20 }
        );
        assert_eq!(
            slot_health(&["extended -".into()]),
            SlotHealth::Reserved { left: u64::MAX }
        );
        assert_eq!(
            slot_health(&["lost -".into()]),
            SlotHealth::Over {
                status: "lost".into()
            }
        );
    }
}

/// A standby drops the slot left from when it was the primary (unused, it keeps WAL).
pub const DROP_STALE_SLOT_SQL: &str = "select pg_drop_replication_slot(slot_name) \
     from pg_replication_slots where slot_name = 'lifeboat' and not active";

/// The primary's side of the stream of one database: the slot's distance to its bound and, in
/// synchronous mode, whether the recovery site confirms (`watch_streams` in `mod.rs` runs it).
#[derive(Debug, Default)]
pub struct Watch {
    /// The alarms as last reported (only changes are reported).
    near_bound: bool,
    degraded: bool,
    /// When the receiver was last seen streaming (synchronous mode).
    seen_at: Option<Instant>,
}

/// Whether the recovery site's receiver is connected and streaming.
pub const RECEIVER_SQL: &str = "select count(*) from pg_stat_replication \
     where application_name = 'lifeboat' and state = 'streaming'";

/// A change of an alarm: (alarm, active, what).
pub type AlarmChange = (lifeboat_core::protocol::StreamAlarm, bool, String);

impl Watch {
    /// This site is not (or no longer) a primary: clear what it raised and forget.
    pub fn reset(&mut self) -> Vec<AlarmChange> {
        use lifeboat_core::protocol::StreamAlarm;
        let mut out = Vec::new();
        if self.near_bound {
            out.push((StreamAlarm::SlotNearBound, false, "not the primary".into()));
        }
        if self.degraded {
            out.push((
                StreamAlarm::SynchronousDegraded,
                false,
                "not the primary".into(),
            ));
        }
        *self = Watch::default();
        out
    }

    /// Read the slot's answer ([`SLOT_HEALTH_SQL`]) against the bound: a change of the
    /// near-bound alarm, if any.
    pub fn slot(&mut self, health: &SlotHealth, bound_mb: u64) -> Option<AlarmChange> {
        let bound = bound_mb.saturating_mul(1 << 20);
        let warn_left = bound / 100 * super::config::SLOT_WARN_LEFT_PERCENT;
        let (near, what) = match health {
            SlotHealth::None => (false, String::new()),
            SlotHealth::Reserved { left } => (
                *left < warn_left,
                format!(
                    "{} MiB of the {bound_mb} MiB bound (max_slot_wal_keep_size) are left",
                    left / (1 << 20)
                ),
            ),
            SlotHealth::Over { status } => (
                true,
                format!(
                    "the slot is {status}: the recovery site fell more than {bound_mb} MiB behind"
                ),
            ),
        };
        if near == self.near_bound {
            return None;
        }
        self.near_bound = near;
        Some((
            lifeboat_core::protocol::StreamAlarm::SlotNearBound,
            near,
            what,
        ))
    }

    /// Synchronous mode: `streaming` says whether the receiver streams now, `conf_degraded`
    /// whether `synchronous_standby_names` is empty now. Returns the setting to write, if it
    /// must change (`Some(degraded)`), and the alarm change.
    pub fn synchronous(
        &mut self,
        streaming: bool,
        conf_degraded: bool,
        now: Instant,
        timeout: Duration,
        degrade: bool,
    ) -> (Option<bool>, Option<AlarmChange>) {
        use lifeboat_core::protocol::StreamAlarm::SynchronousDegraded;
        let seen = *self.seen_at.get_or_insert(now);
        if streaming {
            self.seen_at = Some(now);
            let alarm = std::mem::take(&mut self.degraded).then(|| {
                (
                    SynchronousDegraded,
                    false,
                    "the receiver streams again".into(),
                )
            });
            return (conf_degraded.then_some(false), alarm);
        }
        if now.saturating_duration_since(seen) < timeout {
            return (None, None);
        }
        let change = (degrade && !conf_degraded).then_some(true);
        if self.degraded {
            return (change, None);
        }
        self.degraded = true;
        let what = if degrade {
            format!(
                "the recovery site's receiver has not streamed for {} ms \
                 (synchronous_timeout_ms); on_synchronous_timeout = \"degrade\"",
                timeout.as_millis()
            )
        } else {
            format!(
                "the recovery site's receiver has not streamed for {} ms; commits wait for it \
                 (on_synchronous_timeout = \"wait\")",
                timeout.as_millis()
            )
        };
        (change, Some((SynchronousDegraded, true, what)))
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use lifeboat_core::protocol::StreamAlarm;

    #[test]
    fn the_slot_alarm_fires_below_a_fifth_of_the_bound_and_clears_once() {
        let mut w = Watch::default();
        let mib = 1u64 << 20;
        assert_eq!(
            w.slot(&SlotHealth::Reserved { left: 900 * mib }, 1000),
            None
        );
        let (a, on, what) = w
            .slot(&SlotHealth::Reserved { left: 150 * mib }, 1000)
            .unwrap();
        assert_eq!((a, on), (StreamAlarm::SlotNearBound, true));
        assert!(what.contains("150 MiB of the 1000 MiB"), "{what}");
        assert_eq!(
            w.slot(
                &SlotHealth::Over {
                    status: "lost".into()
                },
                1000
            ),
            None
        );
        let (_, on, _) = w.slot(&SlotHealth::None, 1000).unwrap();
        assert!(!on);
        // A site that stops being the primary clears what it raised, once.
        w.slot(
            &SlotHealth::Over {
                status: "lost".into(),
            },
            1000,
        );
        w.synchronous(false, false, Instant::now(), Duration::ZERO, true);
        let cleared = w.reset();
        assert_eq!(cleared.len(), 2);
        assert!(cleared.iter().all(|c| !c.1));
        assert!(w.reset().is_empty());
    }

    #[test]
    fn synchronous_mode_degrades_after_the_timeout_and_comes_back_with_the_receiver() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::default();
        assert_eq!(w.synchronous(true, false, t0, s(10), true), (None, None));
        assert_eq!(
            w.synchronous(false, false, t0 + s(9), s(10), true),
            (None, None)
        );
        let (change, alarm) = w.synchronous(false, false, t0 + s(11), s(10), true);
        assert_eq!(change, Some(true));
        assert!(alarm.unwrap().1);
        assert_eq!(
            w.synchronous(false, true, t0 + s(20), s(10), true),
            (None, None)
        );
        let (change, alarm) = w.synchronous(true, true, t0 + s(21), s(10), true);
        assert_eq!(change, Some(false));
        assert!(!alarm.unwrap().1);
        // "wait": never a configuration change, the alarm all the same.
        let mut w = Watch::default();
        w.synchronous(false, false, t0, s(10), false);
        let (change, alarm) = w.synchronous(false, false, t0 + s(10), s(10), false);
        assert_eq!(change, None);
        assert!(alarm.unwrap().2.contains("commits wait"));
    }

    /// A promoted primary starts degraded (no recovery site receives yet): the setting comes
    /// back when the receiver streams, with no alarm to clear if none was raised; raised if
    /// the receiver is still away after the timeout.
    #[test]
    fn a_promoted_primary_starts_degraded_and_turns_synchronous_with_its_receiver() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Watch::default();
        assert_eq!(w.synchronous(false, true, t0, s(10), true), (None, None));
        assert_eq!(
            w.synchronous(true, true, t0 + s(3), s(10), true),
            (Some(false), None)
        );
        let mut w = Watch::default();
        w.synchronous(false, true, t0, s(10), true);
        let (change, alarm) = w.synchronous(false, true, t0 + s(10), s(10), true);
        assert_eq!(change, None, "already degraded");
        assert!(alarm.unwrap().1);
    }
}
