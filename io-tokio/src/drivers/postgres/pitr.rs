//! Point-in-time restore: a verified chain (a base backup, then WAL segment artifacts) rebuilt
//! into a NEW data directory, replayed to a time, a position or the end of the archived WAL,
//! checked, and stopped cleanly so the operator can start it. It reads only the chain's files:
//! no agent, no standby, no primary.
//!
//! ```text
//! chain: full.tar  seg 1  seg 2 … seg n        into/            (0700, PostgreSQL's user)
//!          │         └──────┴──── payloads ──>   pg_wal/<segment>, pg_wal/<TLI>.history
//!          └── tar -x (as PostgreSQL's user) ─>  base backup (backup_label, its own WAL)
//!                                                lifeboat.conf    targets, archive_mode = off
//!                                                recovery.signal  (Pause: still there)
//!                                                lifeboat-restore.log
//! ```
//!
//! **Where the WAL lives.** Every segment the copy needs is in its own `pg_wal`, as PostgreSQL
//! wrote it (the artifact's payload, checked against the manifest and the header's checksum),
//! with the timelines' `.history` files beside them: the layout PostgreSQL's documentation
//! gives for unarchived WAL. `restore_command = 'false'` finds nothing on purpose, so recovery
//! reads `pg_wal`; nothing points at a spool that could disappear, and the directory can be
//! moved. PostgreSQL removes the segments itself once a checkpoint no longer needs them.
//!
//! **A later start.** After `Promote` the copy is a primary on a new timeline; `lifeboat.conf`
//! is rewritten without the recovery settings, so `pg_ctl start` simply starts it. After `Pause`
//! the copy keeps `recovery.signal` and its targets: a start replays again from the last
//! restartpoint to the same target and pauses there (read-only queries allowed); `select
//! pg_wal_replay_resume()` then ends recovery and promotes it. Archiving stays off either way:
//! this copy must never push WAL into a lifeboat spool; turn it on yourself when it becomes a
//! protected primary. `fsync` is on: the copy is kept.
//!
//! **Targets.** `recovery_target_time` / `recovery_target_lsn` are inclusive: a time target
//! keeps every transaction committed at or before it, an LSN target stops after the first
//! record starting at or after it. `Latest` with `Promote` replays all the WAL and promotes;
//! `Latest` with `Pause` stops after the last record that starts in the last segment.
//! PostgreSQL itself says when a target lies beyond the archived WAL ("recovery ended before
//! configured recovery target was reached") or before the base backup's consistency point;
//! both become errors that say what to choose instead. A failed restore stops the server and
//! empties `into`, so the next attempt can use it.

use super::config::PostgresConfig;
use super::segment::{self, SegmentHeader};
use super::server::{tail_text, RunAs, Running, Server};
use super::setup;
use super::spool::{self, OsUser};
use super::wal::PgLsn;
use crate::drivers::manifest::ArtifactFile;
use crate::drivers::{DriverError, ErrorKind, Progress};
use lifeboat_core::utc::{iso_ms, UtcDateTime};
use lifeboat_core::{ArtifactKind, Lsn, UtcMillis};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where recovery stops.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The end of the archived WAL.
    Latest,
    /// Every transaction committed at or before this UTC time (`recovery_target_time`).
    Time(UtcMillis),
    /// Up to and including the first record that starts at or after this WAL position
    /// (`recovery_target_lsn`).
    Lsn(u64),
}

/// What the restored copy does at its target (`recovery_target_action`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stay in recovery, paused, read-only: look before you promote.
    Pause,
    /// End recovery and become a primary on a new timeline.
    Promote,
}

/// What a point-in-time restore reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// Where replay stopped (`pg_last_wal_replay_lsn()`, or the promoted server's insert
    /// position when it has none).
    pub position: Lsn,
    /// The commit time of the last transaction replayed (`pg_last_xact_replay_timestamp()`).
    pub replayed_to_utc: Option<UtcMillis>,
    /// Artifacts used: the full, and the segments that reach past its start.
    pub applied: usize,
    /// `ok`, or what the check query found.
    pub check: String,
}

/// The server log of a restored copy, inside it.
pub const LOG_FILE: &str = "lifeboat-restore.log";
/// PostgreSQL finds nothing through it: the WAL is in `pg_wal` (see the module documentation).
const RESTORE_COMMAND: &str = "false";
/// Settings lifeboat decides for a restored copy; `postgresql.auto.conf` is read after
/// `lifeboat.conf` and would override them (an `ALTER SYSTEM` archive_command on the primary
/// would make the copy push its WAL into a lifeboat spool).
const DECIDED: [&str; 12] = [
    "port",
    "archive_mode",
    "archive_command",
    "restore_command",
    "recovery_target",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_action",
    "primary_conninfo",
    "synchronous_standby_names",
];
/// How often the restored server is asked whether it reached its target.
const POLL: Duration = Duration::from_millis(50);
/// How much of the end of the server log is read to find why recovery stopped.
const LOG_WINDOW: u64 = 256 << 10;

/// Restore `chain` (a full first, then WAL segment artifacts in chain order, each checked with
/// [`crate::drivers::check_bytes`]) of database `db_name` into the new data directory `into`
/// (refused when it exists and is not empty), replay it to `target` on `port`, then `action`;
/// check it, stop it (`fast`) and leave it ready to start. `progress` counts the bytes of the
/// chain copied. `cfg.replay_timeout_ms` bounds the wait for the target. See the module
/// documentation for the directory's layout and how a later start behaves.
#[allow(clippy::too_many_arguments)] // the operator's whole request, spelled out for the CLI
pub fn restore_point(
    cfg: &PostgresConfig,
    db_name: &str,
    chain: &[ArtifactFile],
    target: &Target,
    action: Action,
    into: &Path,
    port: u16,
    progress: &Progress,
) -> Result<Restored, DriverError> {
    let what = format!(
        "point-in-time restore of database {db_name} to {} into {}",
        describe(target),
        into.display()
    );
    let Some(entry) = cfg.databases.iter().find(|d| d.name == db_name) else {
        return Err(DriverError::new(
            ErrorKind::Config,
            format!(
                "{what}: the postgres driver's configuration has no database {db_name:?} \
                 (it has {}); name one of its [[driver.databases]]",
                names(cfg)
            ),
        ));
    };
    let run_as = RunAs::from_config(cfg)?;
    let plan = Plan::of(db_name, chain, target, action).map_err(|e| e.context(&what))?;
    let created = claim(into, run_as.ids).map_err(|e| e.context(&what))?;
    // pg_ctl and the configuration get an absolute path, whatever the caller's directory.
    let into = &fs::canonicalize(into)
        .map_err(|e| DriverError::io(format!("{what}: resolving {}", into.display()), &e))?;
    let mut db = entry.clone();
    db.data_dir = into.to_path_buf();
    db.port = port;
    db.log_file = Some(into.join(LOG_FILE));
    let server = Server::new(cfg, &db, run_as.clone());
    let limit = Duration::from_millis(cfg.replay_timeout_ms);
    let result = (|| -> Result<Restored, DriverError> {
        build(&plan, &run_as, into, progress)?;
        configure(&plan, target, action, port, into, run_as.ids)?;
        replay(&server, &plan, target, action, limit)?;
        let restored = measure(&server, &plan)?;
        server.stop("fast")?;
        if action == Action::Promote {
            // A promoted copy is a primary: a later start must not find recovery settings.
            let header = format!(
                "# lifeboat point-in-time restore of database {db_name} to {}, promoted at {}.\n",
                describe(target),
                PgLsn(restored.position.0)
            );
            let text = conf_text(&header, port, None);
            write_owned(&into.join(setup::CONF_FILE), text.as_bytes(), run_as.ids)?;
        }
        Ok(restored)
    })();
    match result {
        Ok(r) => {
            tracing::info!(db = db_name, into = %into.display(), position = %PgLsn(r.position.0),
                applied = r.applied, "point-in-time restore done");
            Ok(r)
        }
        Err(e) => {
            // Nothing of the copy is worth keeping (the error carries PostgreSQL's words), but
            // a directory is never removed under a server that still runs.
            let mut e = e.context(&what);
            let left = match server.stop("immediate") {
                Err(se) => Some(format!("its server on port {port} did not stop ({se})")),
                Ok(()) => clear(into, created)
                    .err()
                    .map(|ce| format!("it could not be removed ({ce})")),
            };
            if let Some(why) = left {
                e.message.push_str(&format!(
                    "; the partial copy is left in {}: {why}; stop PostgreSQL there and remove \
                     it before trying again",
                    into.display()
                ));
            }
            Err(e)
        }
    }
}

/// The chain, checked for what a restore needs before anything is written, and where recovery
/// stops.
struct Plan<'a> {
    db: &'a str,
    full: &'a ArtifactFile,
    /// The segments that reach past the full's start (older ones are not needed).
    segments: Vec<&'a ArtifactFile>,
    /// The recovery target written in `lifeboat.conf` (`None`: the end of the WAL).
    stop: Option<Stop>,
}

impl<'a> Plan<'a> {
    fn of(
        db: &'a str,
        chain: &'a [ArtifactFile],
        target: &Target,
        action: Action,
    ) -> Result<Plan<'a>, DriverError> {
        let full = full_first(chain, db, "a point-in-time restore")?;
        for a in chain {
            if a.manifest.db != db {
                return Err(DriverError::new(
                    ErrorKind::Config,
                    format!(
                        "artifact {} is for database {:?}, not {db}: give the chain of {db} only",
                        a.describe(),
                        a.manifest.db
                    ),
                ));
            }
            crate::drivers::check_bytes(a)?;
        }
        let mut segments = Vec::new();
        let mut reached = full.manifest.lsn_end.0;
        for a in &chain[1..] {
            let m = &a.manifest;
            if m.kind != ArtifactKind::Log {
                return Err(DriverError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{}: after its full a PostgreSQL chain holds only WAL segments; start \
                         the chain at the newest full you want to restore from",
                        a.describe()
                    ),
                ));
            }
            if m.lsn_end <= full.manifest.lsn_start {
                continue;
            }
            // The base backup carries its own WAL up to its end point; from there every segment
            // must follow on, or replay would stop early without a word.
            if m.lsn_start.0 > reached {
                return Err(DriverError::new(
                    ErrorKind::OutOfOrder,
                    format!(
                        "the chain of database {db} has a hole: nothing covers {} before {}; \
                         a restore needs every segment after the full: fetch the missing ones",
                        PgLsn(reached),
                        a.describe()
                    ),
                ));
            }
            reached = reached.max(m.lsn_end.0);
            segments.push(a);
        }
        let mut plan = Plan {
            db,
            full,
            segments,
            stop: None,
        };
        plan.stop = match (*target, action) {
            (Target::Latest, Action::Promote) => None,
            (Target::Latest, Action::Pause) => Some(Stop::Lsn(plan.last_record_start()?)),
            (Target::Time(t), _) => Some(Stop::Time(t)),
            (Target::Lsn(lsn), _) if lsn < full.manifest.lsn_start.0 => {
                return Err(plan.before_full(target))
            }
            (Target::Lsn(lsn), _) if lsn >= reached => return Err(plan.beyond_wal(target, None)),
            (Target::Lsn(lsn), _) => Some(Stop::Lsn(lsn)),
        };
        Ok(plan)
    }

    fn applied(&self) -> usize {
        1 + self.segments.len()
    }

    fn bytes(&self) -> u64 {
        self.full.manifest.size + self.segments.iter().map(|a| a.manifest.size).sum::<u64>()
    }

    /// Where the last record that begins in the last segment starts: an inclusive LSN target
    /// there pauses at the end of the WAL (the record after it is not in the chain).
    fn last_record_start(&self) -> Result<u64, DriverError> {
        let Some(last) = self.segments.last() else {
            return Err(DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "the chain has no WAL after the full {}: pausing at its end needs at least \
                     one segment; promote instead, or add the segments",
                    self.full.describe()
                ),
            ));
        };
        read_segment(last, |h, _| {
            h.replay_floor.ok_or_else(|| {
                DriverError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "no record starts in the last segment {} ({}): pausing at the end of \
                         the WAL is not possible there; promote, or give an LSN target",
                        h.wal_file,
                        last.describe()
                    ),
                )
            })
        })
    }

    /// The target lies after everything the chain holds.
    fn beyond_wal(&self, target: &Target, postgres: Option<&str>) -> DriverError {
        let last = match self.segments.last() {
            Some(a) => format!(
                "{}, up to {}, archived {}",
                a.path.file_name().unwrap_or_default().to_string_lossy(),
                PgLsn(a.manifest.lsn_end.0),
                UtcDateTime::from_millis(a.manifest.created_utc)
            ),
            None => format!(
                "only the full's own WAL, up to {}",
                PgLsn(self.full.manifest.lsn_end.0)
            ),
        };
        let said = postgres
            .map(|s| format!("; PostgreSQL: {s}"))
            .unwrap_or_default();
        DriverError::new(
            ErrorKind::BeyondChain,
            format!(
                "the target {} is after the last archived WAL of database {} ({last}): choose an \
                 earlier target or wait for the next segment{said}",
                describe(target),
                self.db
            ),
        )
    }

    /// The target lies before the full backup is consistent.
    fn before_full(&self, target: &Target) -> DriverError {
        DriverError::new(
            ErrorKind::OutOfOrder,
            format!(
                "the target {} is before the full backup {} of database {} is consistent (at \
                 {}): choose a later target, or a chain that starts with an older full",
                describe(target),
                self.full.describe(),
                self.db,
                PgLsn(self.full.manifest.lsn_end.0)
            ),
        )
    }
}

/// The chain's first artifact when it is a full, else an error naming the database.
pub(super) fn full_first<'a>(
    chain: &'a [ArtifactFile],
    db: &str,
    what: &str,
) -> Result<&'a ArtifactFile, DriverError> {
    chain
        .first()
        .filter(|a| a.manifest.kind == ArtifactKind::Full)
        .ok_or_else(|| {
            DriverError::new(
                ErrorKind::NoBaseFull,
                format!("{what} of database {db} needs a full backup first in its chain"),
            )
        })
}

/// Read and decode a segment artifact, then hand its header and payload to `f`.
fn read_segment<T>(
    a: &ArtifactFile,
    f: impl FnOnce(&SegmentHeader, &[u8]) -> Result<T, DriverError>,
) -> Result<T, DriverError> {
    let bytes = fs::read(&a.path)
        .map_err(|e| DriverError::io(format!("reading {}", a.path.display()), &e))?;
    let (h, payload) = segment::decode(&bytes).map_err(|e| {
        DriverError::new(ErrorKind::ArtifactInvalid, format!("{}: {e}", a.describe()))
    })?;
    f(&h, payload)
}

/// Make `into` the empty directory of the copy (PostgreSQL's user, 0700). Returns whether it
/// was created here (a failure then removes it, else only empties it).
fn claim(into: &Path, user: Option<OsUser>) -> Result<bool, DriverError> {
    let created = match fs::read_dir(into) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(DriverError::new(
                    ErrorKind::Config,
                    format!(
                        "{} exists and is not empty: a point-in-time restore writes a new data \
                         directory; name an empty or absent directory",
                        into.display()
                    ),
                ));
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(DriverError::io(format!("reading {}", into.display()), &e)),
    };
    spool::make_dir_for(into, user)
        .map_err(|e| DriverError::io(format!("creating {}", into.display()), &e))?;
    Ok(created)
}

/// Undo [`claim`]: remove `into`, or empty it when it was there before.
fn clear(into: &Path, created: bool) -> std::io::Result<()> {
    if created {
        return match fs::remove_dir_all(into) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    for e in fs::read_dir(into)? {
        let p = e?.path();
        if p.is_dir() && !p.is_symlink() {
            fs::remove_dir_all(&p)?;
        } else {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Extract the full, then put every segment's payload and its timelines' history files into
/// `pg_wal`, counting the bytes in `progress`.
fn build(plan: &Plan, run_as: &RunAs, into: &Path, progress: &Progress) -> Result<(), DriverError> {
    progress.start(plan.bytes());
    extract(run_as, &plan.full.path, into, progress)?;
    for f in [
        "postmaster.pid",
        "postmaster.opts",
        "standby.signal",
        "recovery.signal",
    ] {
        let _ = fs::remove_file(into.join(f));
    }
    let pg_wal = into.join("pg_wal");
    if !pg_wal.is_dir() {
        spool::make_dir_for(&pg_wal, run_as.ids)
            .map_err(|e| DriverError::io(format!("creating {}", pg_wal.display()), &e))?;
    }
    for a in &plan.segments {
        read_segment(a, |h, payload| {
            for hist in &h.history {
                write_owned(&pg_wal.join(&hist.name), hist.text.as_bytes(), run_as.ids)?;
            }
            // A later copy of the same segment (a fenced primary's final cut, then the
            // complete segment) replaces the earlier one: the chain is in order.
            write_owned(&pg_wal.join(&h.wal_file), payload, run_as.ids)
        })?;
        progress.add(a.manifest.size);
    }
    Ok(())
}

/// Extract a base backup tar into `dir` as PostgreSQL's user (its files are then theirs),
/// streaming it through `tar` so that `progress` moves during a long extraction.
pub(super) fn extract(
    run_as: &RunAs,
    tar: &Path,
    dir: &Path,
    progress: &Progress,
) -> Result<(), DriverError> {
    let src = fs::File::open(tar)
        .map_err(|e| DriverError::io(format!("reading {}", tar.display()), &e))?;
    let mut c = run_as.command(Path::new("tar"));
    c.arg("-xf").arg("-").arg("-C").arg(dir);
    pipe_into(
        c,
        src,
        progress,
        &format!("extracting {} into {}", tar.display(), dir.display()),
    )
}

/// Run `c` with `src` as its standard input, counting the bytes fed in `progress`.
fn pipe_into(
    mut c: Command,
    mut src: impl Read,
    progress: &Progress,
    what: &str,
) -> Result<(), DriverError> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DriverError::io(format!("starting {what}"), &e))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    // Read concurrently: a command that fills its stderr pipe would stop reading its input.
    let said = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut buf = vec![0u8; 1 << 20];
    let fed = loop {
        match src.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => match stdin.write_all(&buf[..n]) {
                Ok(()) => progress.add(n as u64),
                Err(e) => break Err(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    drop(stdin);
    let status = child
        .wait()
        .map_err(|e| DriverError::io(format!("waiting for {what}"), &e))?;
    let said = said.join().unwrap_or_default();
    match fed {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(DriverError::io(what, &e))
        }
        _ => {}
    }
    if !status.success() {
        let code = status.code().unwrap_or(-1);
        return Err(DriverError::new(
            ErrorKind::CommandFailed,
            format!(
                "{what} failed (exit {code}): {}",
                tail_text(&said, 600).trim()
            ),
        )
        .with_code(code));
    }
    fed.map_err(|e| DriverError::io(what, &e))
}

/// Write the copy's `lifeboat.conf`, make `postgresql.conf` include it, keep
/// `postgresql.auto.conf` from overriding it, and ask for recovery (`recovery.signal`).
fn configure(
    plan: &Plan,
    target: &Target,
    action: Action,
    port: u16,
    into: &Path,
    user: Option<OsUser>,
) -> Result<(), DriverError> {
    let header = format!(
        "# lifeboat point-in-time restore of database {} to {}, then {}, from {} and {} WAL \
         segment(s).\n",
        plan.db,
        describe(target),
        action_word(action),
        plan.full.path.display(),
        plan.segments.len()
    );
    let text = conf_text(&header, port, Some((plan.stop, action)));
    write_owned(&into.join(setup::CONF_FILE), text.as_bytes(), user)?;
    include_lifeboat_conf(into, user)?;
    neutralise_auto_conf(into, user)?;
    setup::touch(&into.join("recovery.signal"), user)
}

/// A recovery target as written in `lifeboat.conf`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Stop {
    Time(UtcMillis),
    Lsn(u64),
}

/// `lifeboat.conf` of a restored copy: `recovery` is `None` once it was promoted.
fn conf_text(header: &str, port: u16, recovery: Option<(Option<Stop>, Action)>) -> String {
    let mut text = format!(
        "{header}# Not managed by a lifeboat agent. Its WAL is in pg_wal, copied from lifeboat's \
         archive.\n# Archiving is off: this copy must not push WAL into a lifeboat spool.\n\
         port = {port}\narchive_mode = off\nfsync = on\nrecovery_init_sync_method = syncfs\n\
         hot_standby = on\n\
         synchronous_standby_names = ''\n"
    );
    if let Some((stop, action)) = recovery {
        text.push_str(&format!(
            "# restore_command finds nothing on purpose: recovery reads pg_wal.\n\
             restore_command = '{RESTORE_COMMAND}'\nrecovery_target_timeline = 'latest'\n"
        ));
        match stop {
            Some(Stop::Time(t)) => {
                text.push_str(&format!("recovery_target_time = '{}'\n", pg_timestamp(t)))
            }
            Some(Stop::Lsn(l)) => text.push_str(&format!("recovery_target_lsn = '{}'\n", PgLsn(l))),
            None => {}
        }
        if stop.is_some() {
            text.push_str(&format!(
                "recovery_target_inclusive = on\nrecovery_target_action = '{}'\n",
                action_word(action)
            ));
        }
    }
    text
}

/// Make `postgresql.conf` include `lifeboat.conf` last (creating it when the backup has none:
/// Debian keeps it under /etc).
pub(super) fn include_lifeboat_conf(data: &Path, user: Option<OsUser>) -> Result<(), DriverError> {
    let main = data.join("postgresql.conf");
    let text = match fs::read_to_string(&main) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(DriverError::io(format!("reading {}", main.display()), &e)),
    };
    if text.lines().any(|l| l.trim() == setup::INCLUDE_LINE) {
        return Ok(());
    }
    write_owned(
        &main,
        format!("{text}\n{}\n", setup::INCLUDE_LINE).as_bytes(),
        user,
    )
}

/// Comment out what `postgresql.auto.conf` says about the settings lifeboat decides.
fn neutralise_auto_conf(data: &Path, user: Option<OsUser>) -> Result<(), DriverError> {
    let auto = data.join("postgresql.auto.conf");
    let Ok(text) = fs::read_to_string(&auto) else {
        return Ok(());
    };
    let (out, changed) = neutralised(&text);
    if changed {
        write_owned(&auto, out.as_bytes(), user)?;
    }
    Ok(())
}

fn neutralised(text: &str) -> (String, bool) {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if DECIDED.contains(&key.as_str()) {
            out.push_str("# overridden by lifeboat's point-in-time restore (lifeboat.conf): ");
            changed = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, changed)
}

/// Start the copy and wait until it reached its target (or failed, or ran out of time).
fn replay(
    server: &Server,
    plan: &Plan,
    target: &Target,
    action: Action,
    limit: Duration,
) -> Result<(), DriverError> {
    let goal = match action {
        Action::Pause => Goal::Paused,
        Action::Promote => Goal::Promoted,
    };
    start_and_await(server, goal, limit).map_err(|stopped| match stopped {
        Stopped::TargetBeyondWal(said) => plan.beyond_wal(target, Some(&said)),
        Stopped::TargetBeforeConsistency => plan.before_full(target),
        other => other.into_error(
            &format!("the restored copy of database {}", plan.db),
            server,
            limit,
        ),
    })
}

/// Where the copy stands, and whether it answers the check query.
fn measure(server: &Server, plan: &Plan) -> Result<Restored, DriverError> {
    let position = match server.query_lsn("select pg_last_wal_replay_lsn()")? {
        Some(p) => p,
        None => server
            .query_lsn("select pg_current_wal_insert_lsn()")?
            .unwrap_or(0),
    };
    let ts = server.query_one(
        "select coalesce((extract(epoch from pg_last_xact_replay_timestamp()) * 1000)\
         ::bigint::text, '')",
    )?;
    let n = server.query_one("select count(*) from pg_database")?;
    let check = if n.trim().parse::<u64>().unwrap_or(0) > 0 {
        "ok".to_string()
    } else {
        format!("pg_database has {} rows", n.trim())
    };
    Ok(Restored {
        position: Lsn(position),
        replayed_to_utc: ts.trim().parse::<i64>().ok().map(UtcMillis),
        applied: plan.applied(),
        check,
    })
}

/// What a restored server is waited for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Goal {
    /// Replay paused at its target.
    Paused,
    /// Recovery ended and the server is a primary.
    Promoted,
}

/// Why a restored server did not reach its [`Goal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Stopped {
    /// PostgreSQL ended recovery before the configured target (its words, and the last
    /// transaction it replayed when it said so).
    TargetBeyondWal(String),
    /// The target lies before the base backup's consistency point.
    TargetBeforeConsistency,
    /// The server stopped during recovery (PostgreSQL's words).
    Died(String),
    /// It paused when it was meant to promote, or promoted when it was meant to pause (a
    /// parameter the primary had larger than the copy's pauses replay too): its state.
    Unexpected(String),
    /// Not reached in time; replay stood here.
    TimedOut(Option<u64>),
    /// Starting it failed for a reason its log does not explain.
    Failed(DriverError),
}

impl Stopped {
    /// An error for `who` (e.g. "the drill's scratch copy of database sales").
    pub(super) fn into_error(self, who: &str, server: &Server, limit: Duration) -> DriverError {
        let log = server.log_file.display();
        match self {
            Stopped::TargetBeyondWal(said) => DriverError::new(
                ErrorKind::BeyondChain,
                format!("{who} ended recovery before its target: {said}"),
            ),
            Stopped::TargetBeforeConsistency => DriverError::new(
                ErrorKind::OutOfOrder,
                format!("{who}: the recovery target is before the base backup is consistent"),
            ),
            Stopped::Died(said) => DriverError::new(
                ErrorKind::CommandFailed,
                format!("{who} stopped during recovery; its log {log} says: {said}"),
            ),
            Stopped::Unexpected(state) => DriverError::new(
                ErrorKind::CommandFailed,
                format!(
                    "{who} is {state} instead of reaching its goal; its log {log} ends: {}",
                    server.log_tail(400).replace('\n', " | ")
                ),
            ),
            Stopped::TimedOut(at) => DriverError::new(
                ErrorKind::Timeout,
                format!(
                    "{who} did not finish recovery within {} ms (replay at {}): raise the \
                     driver's replay_timeout_ms for a long chain; its log {log} ends: {}",
                    limit.as_millis(),
                    at.map_or("an unknown position".to_string(), |p| PgLsn(p).to_string()),
                    server.log_tail(400).replace('\n', " | ")
                ),
            ),
            Stopped::Failed(e) => e.context(who),
        }
    }
}

/// Start `server` (recovery configured) and wait until it reached `goal`; PostgreSQL's reason
/// when it stops instead, from its log. Shared with the drill.
pub(super) fn start_and_await(server: &Server, goal: Goal, limit: Duration) -> Result<(), Stopped> {
    const STATE: &str = "select case when pg_is_in_recovery() \
                         then pg_get_wal_replay_pause_state() else 'promoted' end";
    let from = server.log_len();
    let deadline = Instant::now() + limit;
    let why = || {
        let len = server.log_len();
        diagnose(&server.log_since(from.max(len.saturating_sub(LOG_WINDOW))))
    };
    if let Err(e) = server.start() {
        return Err(why().unwrap_or(Stopped::Failed(e)));
    }
    loop {
        match server.query_one(STATE) {
            Ok(s) if s == "promoted" && goal == Goal::Promoted => return Ok(()),
            Ok(s) if s == "paused" && goal == Goal::Paused => return Ok(()),
            Ok(s) if s == "promoted" || s == "paused" => return Err(Stopped::Unexpected(s)),
            Ok(_) => {}
            // Not accepting connections yet, or gone: the log says which.
            Err(_) => {
                if let Some(stopped) = why() {
                    return Err(stopped);
                }
                if server.running() != Running::Yes {
                    return Err(why().unwrap_or_else(|| {
                        Stopped::Died(server.log_tail(600).replace('\n', " | "))
                    }));
                }
            }
        }
        if Instant::now() >= deadline {
            let at = server
                .query_lsn("select pg_last_wal_replay_lsn()")
                .ok()
                .flatten();
            return Err(Stopped::TimedOut(at));
        }
        std::thread::sleep(POLL);
    }
}

/// Why recovery stopped, from the server log's lines: `None` while nothing says it did.
fn diagnose(lines: &[String]) -> Option<Stopped> {
    let last_xact = lines
        .iter()
        .rev()
        .find_map(|l| l.split_once("last completed transaction was at log time "))
        .map(|(_, t)| format!(" (the last transaction replayed committed at {})", t.trim()));
    for l in lines.iter().rev() {
        if l.contains("recovery ended before configured recovery target was reached") {
            return Some(Stopped::TargetBeyondWal(format!(
                "recovery ended before configured recovery target was reached{}",
                last_xact.unwrap_or_default()
            )));
        }
        if l.contains("requested recovery stop point is before consistent recovery point") {
            return Some(Stopped::TargetBeforeConsistency);
        }
    }
    // The startup process's own end, not a refused connection while it was starting.
    let fatal: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("PANIC:") || l.contains("FATAL:"))
        .filter(|l| !NOISE.iter().any(|n| l.contains(n)))
        .map(String::as_str)
        .collect();
    let aborted = lines
        .iter()
        .any(|l| l.contains("aborting startup due to startup process failure"));
    (aborted || lines.iter().any(|l| l.contains("PANIC:")))
        .then(|| Stopped::Died(fatal[fatal.len().saturating_sub(3)..].join(" | ")))
}

/// FATAL lines that are about a client, not about recovery.
const NOISE: [&str; 5] = [
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "the database system is shutting down",
    "terminating connection due to administrator command",
    "the database system is not accepting connections",
];

/// Write `bytes` as the whole of `path` durably, owned by PostgreSQL's user.
pub(super) fn write_owned(
    path: &Path,
    bytes: &[u8],
    user: Option<OsUser>,
) -> Result<(), DriverError> {
    spool::write_durably(path, bytes)
        .and_then(|_| spool::give_to(path, user))
        .map_err(|e| DriverError::io(format!("writing {}", path.display()), &e))
}

fn describe(target: &Target) -> String {
    match *target {
        Target::Latest => "the end of the archived WAL".to_string(),
        Target::Time(t) => iso_ms(t),
        Target::Lsn(l) => PgLsn(l).to_string(),
    }
}

fn action_word(action: Action) -> &'static str {
    match action {
        Action::Pause => "pause",
        Action::Promote => "promote",
    }
}

fn names(cfg: &PostgresConfig) -> String {
    let n: Vec<&str> = cfg.databases.iter().map(|d| d.name.as_str()).collect();
    n.join(", ")
}

/// `2026-12-04 17:00:00.123+00`, for `recovery_target_time`.
fn pg_timestamp(t: UtcMillis) -> String {
    let iso = lifeboat_core::utc::iso_ms(t);
    format!("{}+00", iso.trim_end_matches('Z').replacen('T', " ", 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_target_is_written_to_the_millisecond_in_utc() {
        // 2026-12-04T17:00:00.042Z
        let t = UtcMillis(1_796_403_600_042);
        assert_eq!(iso_ms(t), "2026-12-04T17:00:00.042Z");
        assert_eq!(pg_timestamp(t), "2026-12-04 17:00:00.042+00");
        let text = conf_text("# h\n", 5433, Some((Some(Stop::Time(t)), Action::Pause)));
        assert!(text.contains("recovery_target_time = '2026-12-04 17:00:00.042+00'\n"));
        assert!(text.contains("recovery_target_action = 'pause'\n"));
        assert!(text.contains("recovery_target_inclusive = on\n"));
        assert!(text.contains("archive_mode = off\n") && text.contains("fsync = on\n"));
        assert!(text.contains("restore_command = 'false'\n"));
    }

    #[test]
    fn a_promoted_copy_keeps_no_recovery_settings_and_latest_promote_sets_no_target() {
        let done = conf_text("# h\n", 5433, None);
        assert!(done.contains("port = 5433\n") && done.contains("archive_mode = off\n"));
        assert!(!done.contains("restore_command") && !done.contains("recovery_target"));
        let latest = conf_text("# h\n", 5433, Some((None, Action::Promote)));
        assert!(latest.contains("restore_command") && latest.contains("'latest'"));
        assert!(!latest.contains("recovery_target_action"));
        let lsn = conf_text(
            "# h\n",
            1,
            Some((Some(Stop::Lsn(0x3_0000_0060)), Action::Promote)),
        );
        assert!(lsn.contains("recovery_target_lsn = '3/60'\n"));
    }

    #[test]
    fn auto_conf_settings_that_lifeboat_decides_are_commented_out() {
        let (out, changed) = neutralised(
            "# Do not edit this file manually!\narchive_command = 'x'\nwork_mem = '8MB'\n\
             Port=5432\n",
        );
        assert!(changed);
        assert!(out.contains("(lifeboat.conf): archive_command = 'x'\n"));
        assert!(out.contains("\nwork_mem = '8MB'\n"));
        assert!(out.contains("(lifeboat.conf): Port=5432\n"));
        assert!(!neutralised("work_mem = '8MB'\n").1);
    }

    #[test]
    fn the_log_says_whether_the_target_lies_beyond_the_wal_or_the_server_died() {
        let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
        let beyond = lines(
            "LOG:  redo done at 0/5000028\n\
             LOG:  last completed transaction was at log time 2026-12-04 16:59:58.1+00\n\
             FATAL:  recovery ended before configured recovery target was reached\n\
             LOG:  startup process (PID 1) exited with exit code 1\n\
             LOG:  aborting startup due to startup process failure\n",
        );
        match diagnose(&beyond) {
            Some(Stopped::TargetBeyondWal(s)) => {
                assert!(s.contains("2026-12-04 16:59:58.1+00"), "{s}")
            }
            other => panic!("{other:?}"),
        }
        let before =
            lines("FATAL:  requested recovery stop point is before consistent recovery point\n");
        assert_eq!(diagnose(&before), Some(Stopped::TargetBeforeConsistency));
        // A refused connection while it starts is not a failure.
        let starting = lines("FATAL:  the database system is starting up\nLOG:  redo starts\n");
        assert_eq!(diagnose(&starting), None);
        let died = lines(
            "FATAL:  the database system is starting up\n\
             FATAL:  could not locate required checkpoint record\n\
             LOG:  aborting startup due to startup process failure\n",
        );
        assert_eq!(
            diagnose(&died),
            Some(Stopped::Died(
                "FATAL:  could not locate required checkpoint record".into()
            ))
        );
    }
}
