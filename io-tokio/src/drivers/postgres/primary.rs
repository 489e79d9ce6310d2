//! The primary's side: publishing pushed WAL, the fenced primary's final segment, base backups,
//! fence and unfence.

use super::cli::{self, SEGMENT_SUFFIX};
use super::segment;
use super::server::{run, tail_text, Running};
use super::spool;
use super::state::{PgState, PublishedSegment};
use super::wal::{segment_of, PgLsn, WalFile};
use super::{setup, PostgresDriver, Slot};
use crate::drivers::manifest::{self, ArtifactFile, NewArtifact};
use crate::drivers::{BackupRequest, DriverError, ErrorKind};
use lifeboat_core::Checksum;
use lifeboat_core::{ArtifactKind, Epoch, Lsn, UtcMillis};
use std::fs::{self, File};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Take the WAL PostgreSQL archived since the last call into the outbox: switch the current
/// segment first when the server runs as primary (so everything committed so far is shipped),
/// or, when it was stopped cleanly (fenced), cut its last segment as a *final* segment.
pub fn ship_wal(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    req: &BackupRequest,
) -> Result<Vec<ArtifactFile>, DriverError> {
    let mut problem = None;
    match slot.server.running() {
        Running::Yes => {
            if !slot.server.in_recovery()? {
                problem = switch_and_wait(d, slot)?;
            }
        }
        Running::No => final_segment(slot, st)?,
        Running::NoCluster => {
            return Err(DriverError::new(
                ErrorKind::NotFound,
                format!(
                    "database {} has no cluster at {}",
                    slot.name(),
                    slot.server.data_dir().display()
                ),
            ))
        }
    }
    let out = publish_pushed(slot, st, req)?;
    match problem {
        Some(why) if out.is_empty() => {
            Err(DriverError::new(ErrorKind::CommandFailed, why).with_permanent(false))
        }
        _ => Ok(out),
    }
}

/// `pg_switch_wal()`, then wait (bounded) until the archiver pushed the switched segment.
fn switch_and_wait(d: &PostgresDriver, slot: &Slot) -> Result<Option<String>, DriverError> {
    let s = &slot.server;
    // WAL that is never archived never ships: say so instead of shipping nothing quietly.
    if s.query_one("show archive_mode")? == "off" {
        return Err(DriverError::new(
            ErrorKind::Config,
            format!(
                "database {}: archive_mode is off, so PostgreSQL archives nothing; restart it \
                 once so that {}/lifeboat.conf takes effect",
                slot.name(),
                s.data_dir().display()
            ),
        ));
    }
    let command = s.query_one("show archive_command")?;
    if !command.contains("wal-push") {
        return Err(DriverError::new(
            ErrorKind::Config,
            format!(
                "database {}: archive_command is {command:?}, not lifeboat's wal-push (is it \
                 overridden in postgresql.auto.conf?); remove the override and reload",
                slot.name()
            ),
        ));
    }
    let Some(end) = s.query_lsn("select pg_switch_wal()")? else {
        return Ok(None);
    };
    if end == 0 {
        return Ok(None);
    }
    let target = s.query_one(&format!("select pg_walfile_name('{}')", PgLsn(end - 1)))?;
    let deadline = Instant::now() + Duration::from_millis(d.cfg.archive_wait_ms);
    // Archived once PostgreSQL no longer marks it `.ready`, and it is `.done` or already
    // recycled. (`last_archived_wal` alone cannot say: after a base backup it names the
    // `.backup` file, after a promotion the `.history` file.)
    let status = |ext: &str| format!("pg_stat_file('pg_wal/archive_status/{target}.{ext}', true)");
    let archived_sql = format!(
        "select coalesce(last_failed_wal, '') || '|' || (coalesce(last_failed_time, 'epoch') > \
         coalesce(last_archived_time, 'epoch'))::text || '|' || (({ready}).size is null and \
         (({done}).size is not null or (pg_stat_file('pg_wal/{target}', true)).size is null))::text \
         from pg_stat_archiver",
        ready = status("ready"),
        done = status("done"),
    );
    loop {
        let row = s.query_one(&archived_sql)?;
        let mut f = row.split('|');
        let (failed, failing, archived) = (
            f.next().unwrap_or(""),
            f.next() == Some("true"),
            f.next() == Some("true"),
        );
        if archived {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            let problem = if failing {
                format!(
                    "database {}: archive_command fails (last failure: {failed}); WAL piles up \
                 in pg_wal and is not shipped; the server log {} says why",
                    slot.name(),
                    s.log_file.display()
                )
            } else {
                format!(
                    "database {}: the archiver has not pushed {target} within {} ms",
                    slot.name(),
                    d.cfg.archive_wait_ms
                )
            };
            tracing::warn!(db = slot.name(), segment = %target, "{problem}");
            return Ok(failing.then_some(problem));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fenced (cleanly stopped) primary: push what the archiver left, then its last segment up
/// to the end of valid WAL, as a final segment.
fn final_segment(slot: &Slot, st: &PgState) -> Result<(), DriverError> {
    let cd = slot.server.controldata()?;
    let field = |k: &str| cd.get(k).cloned().unwrap_or_default();
    if field("Database cluster state") != "shut down" {
        // A crashed primary, or a standby: nothing final to cut here.
        return Ok(());
    }
    let size: u64 = field("Bytes per WAL segment").parse().unwrap_or(0);
    let timeline: u32 = field("Latest checkpoint's TimeLineID").parse().unwrap_or(0);
    let Some(checkpoint) = PgLsn::parse(&field("Latest checkpoint location")) else {
        return Ok(());
    };
    if size == 0 || timeline == 0 {
        return Ok(());
    }
    let mut wal = slot.wal.clone();
    wal.segment_size = size;
    let pg_wal = slot.server.data_dir().join("pg_wal");
    // Complete segments the archiver did not get to before the stop.
    if let Ok(ready) = spool::list(&pg_wal.join("archive_status")) {
        for (name, _) in ready {
            if let Some(seg) = name.strip_suffix(".ready") {
                if let Err(e) = cli::wal_push(&pg_wal.join(seg), &wal) {
                    tracing::warn!(db = slot.name(), file = seg, error = %e,
                        "could not push a segment the archiver left");
                }
            }
        }
    }
    let segno = segment_of(checkpoint.0, size);
    let name = WalFile::Segment { timeline, segno }.name(size);
    let path = pg_wal.join(&name);
    let bytes =
        fs::read(&path).map_err(|e| DriverError::io(format!("reading {}", path.display()), &e))?;
    let (header, artifact) =
        cli::segment_artifact(&name, &bytes, size, &wal.history_dir(), true)
            .map_err(|e| DriverError::new(ErrorKind::ArtifactInvalid, e.to_string()))?;
    let key = PublishedSegment {
        timeline,
        segno,
        lsn_end: header.lsn_end,
    };
    let full = PublishedSegment {
        lsn_end: (segno + 1) * size,
        ..key.clone()
    };
    if st.was_published(&key) || st.was_published(&full) {
        return Ok(());
    }
    let dest = wal
        .push_dir()
        .join(format!("{name}.final-{:x}{SEGMENT_SUFFIX}", header.lsn_end));
    spool::write_durably(&dest, &artifact)
        .map_err(|e| DriverError::io(format!("writing {}", dest.display()), &e))?;
    tracing::info!(db = slot.name(), segment = %name, end = %PgLsn(header.lsn_end),
        "cut the fenced primary's final segment");
    Ok(())
}

/// Whether `wal-push` left a segment in the spool that is not published yet.
pub fn has_pushed(slot: &Slot) -> bool {
    spool::list(&slot.wal.push_dir())
        .map(|files| files.iter().any(|(n, _)| n.ends_with(SEGMENT_SUFFIX)))
        .unwrap_or(false)
}

/// Publish every pushed segment into the outbox, stamped with the request's epoch, oldest
/// first. A damaged spool file is moved aside (PostgreSQL already recycled the segment: the
/// chain gets a hole that the secondary reports).
pub fn publish_pushed(
    slot: &Slot,
    st: &mut PgState,
    req: &BackupRequest,
) -> Result<Vec<ArtifactFile>, DriverError> {
    let push = slot.wal.push_dir();
    let files = spool::list(&push)
        .map_err(|e| DriverError::io(format!("listing {}", push.display()), &e))?;
    let mut ready = Vec::new();
    for (name, path) in files {
        if !name.ends_with(SEGMENT_SUFFIX) {
            continue;
        }
        // One read: the header is checked and the whole file hashed for its manifest here.
        let decoded = fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
            segment::decode(&b)
                .map(|(h, _)| (h, b.len() as u64, Checksum(xxhash_rust::xxh3::xxh3_64(&b))))
                .map_err(|e| e.to_string())
        });
        match decoded {
            Ok((h, size, sum)) => ready.push((h, path, size, sum)),
            Err(why) => {
                let aside = slot.wal.aside_dir().join(format!("{name}.damaged"));
                tracing::error!(db = slot.name(), file = %path.display(), why = %why,
                    "a pushed segment is damaged in the spool; moved aside, not shipped");
                let _ = fs::rename(&path, &aside);
            }
        }
    }
    ready.sort_by_key(|(h, ..)| (h.lsn_start, h.lsn_end, h.timeline));
    let mut out = Vec::new();
    let published = publish_ready(slot, st, req, ready, &mut out);
    // The state once for the whole batch, before any of it is acknowledged (returned).
    if !out.is_empty() {
        st.save()?;
    }
    published.map(|()| out)
}

fn publish_ready(
    slot: &Slot,
    st: &mut PgState,
    req: &BackupRequest,
    ready: Vec<(segment::SegmentHeader, PathBuf, u64, Checksum)>,
    out: &mut Vec<ArtifactFile>,
) -> Result<(), DriverError> {
    for (h, path, size, sum) in ready {
        let key = PublishedSegment {
            timeline: h.timeline,
            segno: h.segno,
            lsn_end: h.lsn_end,
        };
        if st.was_published(&key) {
            let _ = fs::remove_file(&path);
            continue;
        }
        // When the segment was finished and copied: its true time, which a point-in-time
        // restore compares with its target (names stay apart by themselves: `free_name`).
        let created = fs::metadata(&path)
            .map(|m| m.mtime() * 1000 + m.mtime_nsec() / 1_000_000)
            .unwrap_or(req.created_utc.0);
        let staged = manifest::staging_path(&req.outbox, slot.name(), ArtifactKind::Log);
        let new = NewArtifact {
            db_name: slot.name(),
            db: slot.id,
            kind: ArtifactKind::Log,
            epoch: req.epoch,
            lsn_start: Lsn(h.lsn_start),
            lsn_end: Lsn(h.lsn_end),
            base_full: None,
            created_utc: UtcMillis(created),
        };
        // wal-push synced the file and nothing rewrites it: renamed, it is the file just
        // hashed. A copy to another file system is synced and hashed again.
        let a = if fs::rename(&path, &staged).is_ok() {
            manifest::publish_synced(&req.outbox, &staged, &new, size, sum)?
        } else {
            copy_across(&path, &staged)?;
            manifest::publish(&req.outbox, &staged, &new)?
        };
        st.remember_published(key);
        st.saw(req.epoch.0, h.timeline);
        out.push(a);
    }
    Ok(())
}

/// Copy `from` to `to` and fsync the copy, then remove `from` (different file systems).
fn copy_across(from: &Path, to: &Path) -> Result<(), DriverError> {
    let copied = (|| {
        let mut src = File::open(from)?;
        let mut dst = File::create(to)?;
        std::io::copy(&mut src, &mut dst)?;
        dst.sync_all()
    })();
    copied.map_err(|e| {
        DriverError::io(
            format!("copying {} to {}", from.display(), to.display()),
            &e,
        )
    })?;
    fs::remove_file(from).map_err(|e| DriverError::io(format!("removing {}", from.display()), &e))
}

/// `pg_basebackup` as one tar stream (WAL included: `-X fetch`) into the outbox. Its range is
/// the backup's WAL start and end points; a standby restored from it is consistent at the end.
pub fn base_backup(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    req: &BackupRequest,
) -> Result<ArtifactFile, DriverError> {
    let s = &slot.server;
    if s.running() != Running::Yes {
        return Err(DriverError::new(
            ErrorKind::Busy,
            format!(
                "database {}: a base backup needs the server running (it is stopped or \
                 fenced); it is taken when the primary runs",
                slot.name()
            ),
        ));
    }
    let staged = manifest::staging_path(&req.outbox, slot.name(), ArtifactKind::Full);
    let out = File::create(&staged)
        .map_err(|e| DriverError::io(format!("creating {}", staged.display()), &e))?;
    let mut c = std::process::Command::new(d.cfg.bin_dir.join("pg_basebackup"));
    c.arg("-h")
        .arg(&s.db.host)
        .arg("-p")
        .arg(s.db.port.to_string())
        .arg("-U")
        .arg(&s.db.user)
        .args([
            "-D", "-", "-F", "t", "-X", "fetch", "-c", "fast", "-v", "-w",
        ])
        .env("PGAPPNAME", "lifeboat-basebackup")
        .stdout(Stdio::from(out));
    let result = run(c, &format!("pg_basebackup of database {}", slot.name()));
    let output = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = fs::remove_file(&staged);
            return Err(e);
        }
    };
    let log = String::from_utf8_lossy(&output.stderr);
    let point = |what: &str| {
        log.lines()
            .find_map(|l| l.split_once(what).map(|(_, r)| r.trim().to_string()))
            .and_then(|r| PgLsn::parse(r.split_whitespace().next().unwrap_or("")))
    };
    let (Some(start), Some(end)) = (
        point("write-ahead log start point:"),
        point("write-ahead log end point:"),
    ) else {
        let _ = fs::remove_file(&staged);
        return Err(DriverError::new(
            ErrorKind::CommandFailed,
            format!(
                "pg_basebackup of database {} did not report its WAL start and end points: {}",
                slot.name(),
                tail_text(&log, 400)
            ),
        ));
    };
    let timeline = log
        .lines()
        .find_map(|l| {
            l.split_once(" on timeline ")
                .map(|(_, t)| t.trim().parse::<u32>())
        })
        .and_then(Result::ok);
    let a = manifest::publish(
        &req.outbox,
        &staged,
        &NewArtifact {
            db_name: slot.name(),
            db: slot.id,
            kind: ArtifactKind::Full,
            epoch: req.epoch,
            lsn_start: Lsn(start.0),
            lsn_end: Lsn(end.0),
            base_full: None,
            created_utc: req.created_utc,
        },
    )?;
    if let Some(t) = timeline {
        if st.saw(req.epoch.0, t) {
            st.save()?;
        }
    }
    tracing::info!(db = slot.name(), start = %start, end = %end, file = %a.path.display(),
        "base backup taken");
    Ok(a)
}

/// Stop the primary accepting writes: `pg_ctl stop -m fast` (or the configured command). A
/// standby takes no writes and keeps running.
pub fn fence(d: &PostgresDriver, slot: &Slot) -> Result<(), DriverError> {
    if let Some(cmd) = &d.cfg.fence_command {
        let cmd = cmd
            .replace("{data_dir}", &slot.server.data_dir().to_string_lossy())
            .replace("{port}", &slot.server.db.port.to_string());
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(&cmd);
        return run(c, &format!("fence command of database {}", slot.name())).map(drop);
    }
    match slot.server.running() {
        Running::Yes if !slot.server.in_recovery()? => slot.server.stop("fast"),
        _ => Ok(()),
    }
}

/// Accept writes again: start a stopped primary. A standby cannot: it must be promoted.
pub fn unfence(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    epoch: Epoch,
) -> Result<(), DriverError> {
    let standby_signal: PathBuf = slot.server.data_dir().join("standby.signal");
    let refuse = || {
        DriverError::new(
            ErrorKind::Unsupported,
            format!(
                "database {} is a standby ({} exists): it accepts writes only once promoted",
                slot.name(),
                standby_signal.display()
            ),
        )
    };
    match slot.server.running() {
        Running::NoCluster => {
            return Err(DriverError::new(
                ErrorKind::NotFound,
                format!(
                    "database {} has no cluster at {}",
                    slot.name(),
                    slot.server.data_dir().display()
                ),
            ))
        }
        Running::Yes => {
            if slot.server.in_recovery()? {
                return Err(refuse());
            }
        }
        Running::No => {
            if standby_signal.exists() {
                return Err(refuse());
            }
            setup::write_cluster_conf(&d.cfg, slot, d.run_as.ids)?;
            slot.server.start()?;
        }
    }
    // A primary has no restored position: if it follows another site again later, its chain
    // starts from what it wrote, not from what it once replayed.
    if st.restored_to.take().is_some() {
        st.save()?;
    }
    if let Ok(tli) = current_timeline(slot) {
        if st.saw(epoch.0, tli) {
            st.save()?;
        }
    }
    Ok(())
}

/// The timeline a running primary writes on.
pub fn current_timeline(slot: &Slot) -> Result<u32, DriverError> {
    let name = slot
        .server
        .query_one("select pg_walfile_name(pg_current_wal_lsn())")?;
    u32::from_str_radix(name.get(0..8).unwrap_or(""), 16).map_err(|_| {
        DriverError::new(
            ErrorKind::CommandFailed,
            format!("database {}: {name:?} is not a WAL file name", slot.name()),
        )
    })
}
