//! The recovery site's side: serving segments to the standby and watching it replay them,
//! reseeding from a base backup, promotion, drills.

use super::cli::SEGMENT_SUFFIX;
use super::config::WalConfig;
use super::segment::{self, SegmentHeader};
use super::server::Running;
use super::spool;
use super::state::PgState;
use super::wal::{PgLsn, WalFile};
use super::{primary, setup, PostgresDriver, Slot};
use crate::drivers::manifest::{self, ArtifactFile, Manifest};
use crate::drivers::{DriverError, ErrorKind};
use lifeboat_core::{ArtifactKind, DbId, Epoch, Lsn};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `requests.log` is started afresh past this size (PostgreSQL asks every retry interval).
const REQUEST_LOG_MAX: u64 = 4 << 20;
/// Served segments kept behind the newest (PostgreSQL may ask again for the one it is in).
const SERVED_KEPT: u64 = 4;
/// What PostgreSQL 15 logs when it will not replay WAL it was given.
const REJECTIONS: [&str; 16] = [
    "invalid record length",
    "invalid resource manager ID",
    "incorrect resource manager data checksum",
    "record with incorrect prev-link",
    "invalid magic number",
    "invalid info bits",
    "unexpected pageaddr",
    "out-of-sequence timeline ID",
    "contrecord",
    "too long",
    "WAL file is from different database system",
    "invalid xl_info",
    "invalid record offset",
    "is not a child of this server's history",
    "forked off current database system timeline",
    "has wrong size",
];

/// A segment made servable, waiting to be replayed.
#[derive(Clone, Debug)]
pub struct Served {
    pub db: DbId,
    pub header: SegmentHeader,
    pub artifact: PathBuf,
    /// Server log and request log lengths when it was served.
    log_from: u64,
    requests_from: u64,
    since: Instant,
}

fn not_found(slot: &Slot, what: &str) -> DriverError {
    DriverError::new(
        ErrorKind::NoBaseFull,
        format!(
            "database {} has no cluster at {} yet: {what}; restore a full backup first",
            slot.name(),
            slot.server.data_dir().display()
        ),
    )
}

/// Make sure the cluster runs as a standby: start it, and turn a cleanly stopped former primary
/// into one (planned switchover). A crashed former primary may hold WAL the other site never
/// had: it must be reseeded.
fn ensure_standby(d: &PostgresDriver, slot: &Slot, st: &mut PgState) -> Result<(), DriverError> {
    let signal = slot.server.data_dir().join("standby.signal");
    // The common case, once per segment: the standby answers on its session that it is in
    // recovery. `running()` runs `pg_ctl status` as the server's user (milliseconds), so it is
    // asked only when the session does not answer so.
    if slot.server.data_dir().join("PG_VERSION").exists()
        && matches!(slot.server.in_recovery(), Ok(true))
    {
        return Ok(());
    }
    match slot.server.running() {
        Running::NoCluster => Err(not_found(slot, "there is nothing to replay into")),
        Running::Yes => {
            if slot.server.in_recovery()? {
                Ok(())
            } else {
                Err(DriverError::new(
                    ErrorKind::OutOfOrder,
                    format!(
                        "database {} runs as a primary: it cannot replay another site's WAL \
                         until it is fenced (stopped) or reseeded",
                        slot.name()
                    ),
                ))
            }
        }
        Running::No => {
            if !signal.exists() {
                let cd = slot.server.controldata()?;
                let state = cd
                    .get("Database cluster state")
                    .cloned()
                    .unwrap_or_default();
                match state.as_str() {
                    "shut down" | "shut down in recovery" => {
                        tracing::info!(db = slot.name(), %state,
                            "the stopped cluster becomes a standby of the other site");
                        // Its own WAL ends with the shutdown checkpoint: the other site's chain
                        // must continue from there, or it is a hole.
                        if st.restored_to.is_none() {
                            st.restored_to = cd
                                .get("Latest checkpoint location")
                                .and_then(|v| PgLsn::parse(v))
                                .map(|l| l.0);
                            st.save()?;
                        }
                    }
                    other => {
                        return Err(DriverError::new(
                            ErrorKind::Diverged,
                            format!(
                                "database {} stopped in state {other:?} (not a clean shutdown): \
                                 it may hold WAL the other site never received; reseed it from \
                                 the new primary's full backup",
                                slot.name()
                            ),
                        ))
                    }
                }
                setup::touch(&signal, d.run_as.ids)?;
            }
            setup::write_cluster_conf(&d.cfg, slot, d.run_as.ids)?;
            slot.server.start()
        }
    }
}

pub(super) fn segment_path(wal: &WalConfig, name: &str) -> PathBuf {
    wal.serve_dir().join(format!("{name}{SEGMENT_SUFFIX}"))
}

/// Remove a served segment (manifest last, so wal-fetch never sees a file without one).
fn unserve(path: &Path) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(manifest::manifest_path(path));
}

/// Remove served segments older than `keep_from`.
fn prune_served(wal: &WalConfig, keep_from: u64, segment_size: u64) {
    let Ok(files) = spool::list(&wal.serve_dir()) else {
        return;
    };
    for (name, path) in files {
        let Some(seg) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if let Some(WalFile::Segment { segno, .. }) = WalFile::parse(seg, segment_size) {
            if segno < keep_from {
                unserve(&path);
            }
        }
    }
}

/// Make a verified segment servable to `wal-fetch`, after checking it continues the chain.
pub fn serve(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    artifact: &ArtifactFile,
) -> Result<Served, DriverError> {
    if artifact.manifest.kind != ArtifactKind::Log {
        return Err(DriverError::new(
            ErrorKind::Unsupported,
            format!("{} is not a WAL segment", artifact.describe()),
        ));
    }
    // The verification and the copy below share one read.
    let bytes = manifest::read_checked(artifact)?;
    let (header, _) = segment::decode(&bytes).map_err(|e| {
        DriverError::new(
            ErrorKind::ArtifactInvalid,
            format!("{}: {e}; re-copy it from the primary", artifact.describe()),
        )
    })?;
    if header.lsn_start != artifact.manifest.lsn_start.0
        || header.lsn_end != artifact.manifest.lsn_end.0
    {
        return Err(DriverError::new(
            ErrorKind::ArtifactInvalid,
            format!(
                "{}: it holds {} {}..{}, its manifest says otherwise",
                artifact.describe(),
                header.wal_file,
                PgLsn(header.lsn_start),
                PgLsn(header.lsn_end)
            ),
        ));
    }
    // The timeline's history first: a standby that starts now finds the new timeline at once.
    let wal = &slot.wal;
    for h in &header.history {
        let dest = wal.serve_dir().join(&h.name);
        if !dest.exists() {
            spool::write_durably(&dest, h.text.as_bytes())
                .and_then(|_| spool::give_to(&dest, d.run_as.ids))
                .map_err(|e| DriverError::io(format!("writing {}", dest.display()), &e))?;
        }
    }
    ensure_standby(d, slot, st)?;
    if let Some(p) = st.restored_to {
        if header.lsn_start > p {
            return Err(DriverError::new(
                ErrorKind::OutOfOrder,
                format!(
                    "database {}: WAL between {} and {} is missing (segment {} starts after the \
                     restored position): the chain has a hole; ship the missing segments or \
                     reseed from a new full backup",
                    slot.name(),
                    PgLsn(p),
                    PgLsn(header.lsn_start),
                    header.wal_file
                ),
            ));
        }
    }
    let dest = segment_path(wal, &header.wal_file);
    let requests = wal.request_log();
    if fs::metadata(&requests).map(|m| m.len()).unwrap_or(0) > REQUEST_LOG_MAX {
        let _ = fs::rename(&requests, requests.with_extension("log.old"));
    }
    let log_from = slot.server.log_len();
    let requests_from = fs::metadata(wal.request_log())
        .map(|m| m.len())
        .unwrap_or(0);
    unserve(&dest);
    // Manifest first: wal-fetch waits for the artifact file, which must find its manifest.
    // No fsync: after a crash the engine restores the segment again, which serves it again.
    let mpath = manifest::manifest_path(&dest);
    let m = Manifest {
        retry: 0,
        ..artifact.manifest.clone()
    };
    let json = serde_json::to_vec(&m).expect("a manifest encodes");
    spool::write_atomically(&mpath, &json)
        .and_then(|_| spool::give_to(&mpath, d.run_as.ids))
        .map_err(|e| DriverError::io(format!("writing {}", mpath.display()), &e))?;
    spool::write_atomically(&dest, &bytes)
        .and_then(|_| spool::give_to(&dest, d.run_as.ids))
        .map_err(|e| DriverError::io(format!("writing {}", dest.display()), &e))?;
    prune_served(
        wal,
        header.segno.saturating_sub(SERVED_KEPT),
        header.segment_size,
    );
    Ok(Served {
        db: slot.id,
        header,
        artifact: dest,
        log_from,
        requests_from,
        since: Instant::now(),
    })
}

/// LSNs (`X/Y`) mentioned in a log line.
fn lsns_in(line: &str) -> Vec<u64> {
    line.split(|c: char| !(c.is_ascii_hexdigit() || c == '/'))
        .filter_map(|w| PgLsn::parse(w).map(|l| l.0))
        .collect()
}

/// The server log lines that reject this segment: a known rejection at a position inside it or
/// naming its file.
fn rejection(lines: &[String], h: &SegmentHeader) -> Vec<String> {
    // Only what PostgreSQL says after it took the segment from us: before that it may be
    // reading an older copy in pg_wal.
    let taken = format!("restored log file \"{}\" from archive", h.wal_file);
    let Some(from) = lines.iter().position(|l| l.contains(&taken)) else {
        return Vec::new();
    };
    lines[from..]
        .iter()
        .filter(|l| REJECTIONS.iter().any(|r| l.contains(r)))
        .filter(|l| {
            l.contains(&h.wal_file)
                || lsns_in(l)
                    .iter()
                    .any(|&x| x >= h.lsn_start && x < h.lsn_end)
        })
        .cloned()
        .collect()
}

/// What `wal-fetch` recorded since the segment was served.
struct Requests {
    asked_again: usize,
    later_asked: bool,
    refused: Option<String>,
}

fn requests(served: &Served, wal: &WalConfig) -> Requests {
    let mut r = Requests {
        asked_again: 0,
        later_asked: false,
        refused: None,
    };
    // Only what was appended since the segment was served: the log grows to REQUEST_LOG_MAX.
    let Ok(mut f) = fs::File::open(wal.request_log()) else {
        return r;
    };
    let mut text = String::new();
    if f.seek(SeekFrom::Start(served.requests_from)).is_err()
        || f.read_to_string(&mut text).is_err()
    {
        return r;
    }
    let h = &served.header;
    for line in text.lines() {
        let mut words = line.splitn(4, ' ');
        let (_, name, outcome) = (
            words.next(),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        let rest = words.next().unwrap_or("");
        if name == h.wal_file {
            if outcome == "served" {
                r.asked_again += 1;
            } else if outcome == "refused" {
                r.refused = Some(rest.to_string());
            }
        } else if let Some(WalFile::Segment { segno, .. }) = WalFile::parse(name, h.segment_size) {
            if segno > h.segno {
                r.later_asked = true;
            }
        }
    }
    r
}

/// Wait until PostgreSQL replayed the served segment; fail with its own words if it rejected
/// it, with the refusal if `wal-fetch` found the servable copy damaged, or on stall or timeout.
pub fn await_replay(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    served: &Served,
) -> Result<Lsn, DriverError> {
    let h = &served.header;
    let s = &slot.server;
    let timeout = Duration::from_millis(d.cfg.replay_timeout_ms);
    let stall = Duration::from_millis(d.cfg.stall_ms);
    let mut last = 0u64;
    let mut moved_at = Instant::now();
    // Each poll is a round trip to the server that replays: polling at 1-2 ms took enough CPU
    // from its replay on two cores that the pg bench's backlog came in slower than at 2-4 ms.
    let mut nap = Duration::from_millis(2);
    let fail = |e: DriverError| {
        unserve(&served.artifact);
        Err(e)
    };
    loop {
        let replay = match s.query_lsn("select pg_last_wal_replay_lsn()") {
            Ok(r) => r.unwrap_or(0),
            Err(e) if s.running() != Running::Yes => {
                return fail(DriverError::new(
                    ErrorKind::CommandFailed,
                    format!(
                        "database {} stopped while replaying {} ({e}); its log says: {}",
                        slot.name(),
                        h.wal_file,
                        s.log_tail(800).replace('\n', " | ")
                    ),
                ))
            }
            Err(e) => return fail(e),
        };
        let req = requests(served, &slot.wal);
        // Replayed to the last record's end; or PostgreSQL, having read and checked every
        // record of the segment, already asks for the next one while it holds that last record
        // (it reads one record ahead of replay).
        let done = replay >= h.lsn_end
            || h.replay_target.is_some_and(|t| replay >= t)
            || (req.later_asked && replay >= h.replay_floor.unwrap_or(0));
        if done {
            st.restored_to = Some(h.lsn_end.max(st.restored_to.unwrap_or(0)));
            st.save()?;
            return Ok(Lsn(h.lsn_end));
        }
        if let Some(why) = req.refused {
            return fail(DriverError::new(
                ErrorKind::ChecksumMismatch,
                format!(
                    "database {}: wal-fetch refused the servable copy of {} ({why}); PostgreSQL \
                     never saw it; it is removed and must be restored again from a verified copy",
                    slot.name(),
                    h.wal_file
                ),
            ));
        }
        let rejected = rejection(&s.log_since(served.log_from), h);
        if !rejected.is_empty() {
            return fail(DriverError::new(
                ErrorKind::ArtifactInvalid,
                format!(
                    "PostgreSQL rejected WAL segment {} ({}..{}) of database {} at replay \
                     position {}: {}; the segment was withdrawn from the standby; re-ship it from \
                     the primary, or reseed if the primary's copy is bad too",
                    h.wal_file,
                    PgLsn(h.lsn_start),
                    PgLsn(h.lsn_end),
                    slot.name(),
                    PgLsn(replay),
                    rejected.join(" | ")
                ),
            ));
        }
        if replay > last {
            last = replay;
            moved_at = Instant::now();
        }
        if moved_at.elapsed() >= stall && req.asked_again >= 2 {
            return fail(DriverError::new(
                ErrorKind::ArtifactInvalid,
                format!(
                    "PostgreSQL took WAL segment {} of database {} {} times but replay stays at \
                     {} (the segment's records end at {}): it does not accept it; its log says: {}",
                    h.wal_file,
                    slot.name(),
                    req.asked_again,
                    PgLsn(replay),
                    PgLsn(h.replay_target.unwrap_or(h.lsn_end)),
                    s.log_tail(600).replace('\n', " | ")
                ),
            ));
        }
        if served.since.elapsed() >= timeout {
            return fail(DriverError::new(
                ErrorKind::Timeout,
                format!(
                    "database {}: replay did not pass {} within {} s (it is at {}); the standby \
                     may be slow or not asking for WAL; its log says: {}",
                    slot.name(),
                    h.wal_file,
                    timeout.as_secs(),
                    PgLsn(replay),
                    s.log_tail(600).replace('\n', " | ")
                ),
            ));
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(4));
    }
}

/// The database's position: the replay position of a standby, the write position of a primary,
/// the last restored position when the server is down.
pub fn position(slot: &Slot, st: &PgState) -> Result<Lsn, DriverError> {
    let s = &slot.server;
    match s.running() {
        Running::Yes => {
            let sql = if s.in_recovery()? {
                "select pg_last_wal_replay_lsn()"
            } else {
                "select pg_current_wal_lsn()"
            };
            Ok(Lsn(s.query_lsn(sql)?.unwrap_or(0)))
        }
        Running::No => {
            if let Some(p) = st.restored_to {
                return Ok(Lsn(p));
            }
            let cd = s.controldata()?;
            Ok(Lsn(cd
                .get("Latest checkpoint location")
                .and_then(|v| PgLsn::parse(v))
                .map_or(0, |l| l.0)))
        }
        Running::NoCluster => Ok(Lsn(0)),
    }
}

/// What a promotion does with the WAL the receiver streamed beyond the restored segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Replay it first: the failover loses only what the stream had not carried yet.
    Replay,
    /// Leave it out: a failover to a chosen point (`failover --until`) opens at the last
    /// segment the chain restored, before the stream's newer writes (the bad write the
    /// operator goes back before); it is cleared with the rest once promoted.
    Leave,
}

/// `pg_ctl promote`: the standby ends recovery and starts a new timeline. Returns the end of
/// the WAL it replayed before it opened (`pg_last_wal_replay_lsn()`, which stays put after
/// recovery): what the new primary holds of the old history, for the loss report. A primary
/// already is one: its write position.
pub fn promote(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    epoch: Epoch,
    stream: Stream,
) -> Result<Lsn, DriverError> {
    let s = &slot.server;
    match s.running() {
        Running::NoCluster => return Err(not_found(slot, "there is nothing to promote")),
        Running::No => {
            setup::write_cluster_conf(&d.cfg, slot, d.run_as.ids)?;
            s.start()?;
        }
        Running::Yes => {}
    }
    let mut replayed = None;
    if s.in_recovery()? {
        // Held until recovery ended: `wal-fetch` does not wait meanwhile. The stream is an
        // addition: when it cannot be used the promotion goes on with what the chain brought.
        let _marker = match &slot.receiver {
            Some(r) if stream == Stream::Leave => {
                // Stopped all the same: no receiver may add WAL from the old primary to a
                // server about to take writes of its own.
                r.stop_for_promotion(Duration::from_secs(10))?;
                tracing::info!(
                    db = slot.name(),
                    "promoting at the restored position: the streamed WAL is left out"
                );
                None
            }
            Some(r) => match replay_stream(d, slot, r) {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(db = slot.name(), error = %e,
                                   "the streamed WAL could not be handed over; promoting without it");
                    None
                }
            },
            None => None,
        };
        s.promote()?;
        let deadline = Instant::now() + Duration::from_secs(d.cfg.pg_ctl_timeout_s);
        while s.in_recovery()? {
            if Instant::now() >= deadline {
                return Err(DriverError::new(
                    ErrorKind::Timeout,
                    format!(
                        "database {} did not leave recovery after pg_ctl promote",
                        slot.name()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        replayed = s.query_lsn("select pg_last_wal_replay_lsn()")?;
        if let Ok(files) = spool::list(&slot.wal.serve_dir()) {
            for (name, path) in files {
                if name.ends_with(SEGMENT_SUFFIX) {
                    unserve(&path);
                }
            }
        }
        tracing::info!(db = slot.name(), %epoch, replayed = ?replayed, "promoted");
        if d.cfg.synchronous
            && d.cfg.on_synchronous_timeout == super::config::OnSynchronousTimeout::Degrade
        {
            // No recovery site receives from the new primary yet: its commits do not wait
            // for one until its receiver streams (the watch turns synchronous mode back on,
            // and raises `synchronous_degraded` if that takes longer than the timeout).
            slot.sync_degraded
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let applied = setup::write_cluster_conf(&d.cfg, slot, d.run_as.ids)
                .and_then(|()| s.query("select pg_reload_conf()").map(drop));
            if let Err(e) = applied {
                // The server is promoted: no reason to fail that. The watch asks again.
                slot.sync_degraded
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                tracing::warn!(db = slot.name(), error = %e,
                               "the promoted server could not be made asynchronous yet");
            }
        }
        if let Some(r) = &slot.receiver {
            super::stream::clear(r.dir());
            // When this site follows again, it looks for the slot the other site's receiver
            // will hold on it meanwhile.
            slot.stale_slot_checked
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if let Ok(t) = primary::current_timeline(slot) {
        st.saw(epoch.0, t);
    }
    // From now on this site writes: its old restored position means nothing any more.
    st.restored_to = None;
    st.save()?;
    match replayed {
        Some(lsn) => Ok(Lsn(lsn)),
        None => Ok(Lsn(s
            .query_lsn("select pg_current_wal_lsn()")?
            .unwrap_or(0))),
    }
}

/// Before `pg_ctl promote`: stop the receiver, hand the streamed WAL beyond replay to the
/// standby (`pg_wal`), and wait until it replayed it (or stopped moving: PostgreSQL stops at
/// the first record whose CRC fails, and the promotion opens there).
fn replay_stream(
    d: &PostgresDriver,
    slot: &Slot,
    receiver: &super::stream::Receiver,
) -> Result<HandingOver, DriverError> {
    let s = &slot.server;
    receiver.stop_for_promotion(Duration::from_secs(10))?;
    let marker = HandingOver::place(&slot.wal.serve_dir().join(super::cli::HANDING_OVER), d)?;
    let replayed = s.query_lsn("select pg_last_wal_replay_lsn()")?.unwrap_or(0);
    let handed = super::stream::hand_over(
        receiver.dir(),
        s.data_dir(),
        slot.segment_size(),
        replayed,
        d.run_as.ids,
    )?;
    if handed.end <= replayed {
        tracing::info!(db = slot.name(), replayed = %PgLsn(replayed), "nothing streamed beyond replay");
        return Ok(marker);
    }
    tracing::info!(db = slot.name(), files = handed.files, replayed = %PgLsn(replayed),
                   received = %PgLsn(handed.end), "replaying the streamed WAL before promotion");
    let deadline = Instant::now() + Duration::from_millis(d.cfg.replay_timeout_ms);
    // PostgreSQL reads pg_wal after restore_command said "not there" (fetch_wait_ms) and at
    // most one retry interval later: replay that has not moved for longer has stopped.
    let still = Duration::from_millis((d.cfg.fetch_wait_ms + d.cfg.retrieve_retry_ms) * 2 + 1_000);
    let (mut last, mut moved_at) = (replayed, Instant::now());
    loop {
        let now = s.query_lsn("select pg_last_wal_replay_lsn()")?.unwrap_or(0);
        if now >= handed.end {
            break;
        }
        if now > last {
            (last, moved_at) = (now, Instant::now());
        }
        if moved_at.elapsed() >= still || Instant::now() >= deadline {
            tracing::warn!(db = slot.name(), replayed = %PgLsn(now), received = %PgLsn(handed.end),
                           "replay of the streamed WAL stopped short of what was received; promoting where it stopped");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(marker)
}

/// The `wal-fetch` marker of a hand-over, removed when dropped.
struct HandingOver(std::path::PathBuf);

impl HandingOver {
    fn place(path: &std::path::Path, d: &PostgresDriver) -> Result<HandingOver, DriverError> {
        std::fs::write(path, b"")
            .and_then(|()| spool::give_to(path, d.run_as.ids))
            .map_err(|e| DriverError::io(format!("writing {}", path.display()), &e))?;
        Ok(HandingOver(path.to_path_buf()))
    }
}

impl Drop for HandingOver {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
