//! Point-in-time restore (`drivers::postgres::pitr::restore_point`) against real PostgreSQL 15:
//! a primary made by `initdb --wal-segsize=1` writes batch A, then (after a noted UTC time T)
//! batch B, then deletes everything; the driver's own full and WAL artifacts are the chain. The
//! restores read only those files (the primary is stopped first) into new data directories,
//! which the tests then start as an operator would.
//!
//! Servers run as the `postgres` user when the tests run as root; `archive_command` runs a copy
//! of the `lifeboat` binary that user can execute. Without PostgreSQL the tests pass with a
//! message, except in CI (`CI=true`), where they fail.

#[path = "pgkit/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use cluster::{psql, psql_each, Cluster, ScratchDir};
use lifeboat_core::{ArtifactKind, DbId, Epoch, UtcMillis};
use lifeboat_io_tokio::drivers::postgres::pitr::{restore_point, Action, Restored, Target};
use lifeboat_io_tokio::drivers::postgres::segment;
use lifeboat_io_tokio::drivers::postgres::wal::PgLsn;
use lifeboat_io_tokio::drivers::postgres::{PgDatabase, PostgresConfig, PostgresDriver};
use lifeboat_io_tokio::drivers::{
    ArtifactFile, BackupRequest, Driver, DriverError, ErrorKind, Progress,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DB: DbId = DbId(0);
const ROWS_A: u32 = 40;
const ROWS_B: u32 = 25;

/// PostgreSQL is there, or the test is skipped (a failure in CI).
fn postgres_or_skip(test: &str) -> bool {
    if let Err(why) = cluster::available() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("PostgreSQL tests cannot run in CI: {why}");
        }
        eprintln!("skipping {test}: {why}");
        return false;
    }
    true
}

fn utc_now() -> UtcMillis {
    UtcMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    )
}

/// A primary's life, archived: batch A, the time T, batch B, everything deleted.
struct History {
    scratch: ScratchDir,
    cfg: PostgresConfig,
    /// The primary's driver (its server is stopped once the history is archived).
    driver: PostgresDriver,
    chain: Vec<ArtifactFile>,
    /// Just before batch A was written.
    before_a: UtcMillis,
    /// `pg_current_wal_lsn()` right after batch A committed.
    lsn_a: u64,
    /// After A's commit, before B's.
    t: UtcMillis,
}

impl History {
    fn make(tag: &str) -> History {
        let scratch = ScratchDir::new(tag).unwrap();
        let bin = scratch.dir("bin").join("lifeboat");
        std::fs::copy(env!("CARGO_BIN_EXE_lifeboat"), &bin).expect("copying lifeboat");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = scratch.dir("primary");
        let port = cluster::free_port();
        let c = Cluster::initdb(&root.join("data"), port, 1).expect("initdb");
        std::mem::forget(c); // the scratch guard stops it
        let mut cfg = PostgresConfig::new(
            root.join("spool"),
            vec![PgDatabase::new("app", root.join("data"), port)],
        );
        cfg.bin_dir = cluster::bin_dir();
        cfg.lifeboat_bin = bin;
        cfg.stream = false;
        cfg.replay_timeout_ms = 30_000;
        let driver = PostgresDriver::open(cfg.clone()).expect("opening the driver");
        driver.unfence(DB, Epoch(1)).expect("starting the primary");
        psql(
            port,
            "create table t(id serial primary key, batch text not null, v text not null)",
        )
        .unwrap();
        let take = |kind| take(&driver, &scratch, kind);
        let mut chain = take(ArtifactKind::Full);
        let before_a = utc_now();
        let out = psql_each(port, &[&insert("a", ROWS_A), "select pg_current_wal_lsn()"]).unwrap();
        let lsn_a = PgLsn::parse(out.last().unwrap()).unwrap().0;
        std::thread::sleep(Duration::from_millis(250));
        let t = utc_now();
        std::thread::sleep(Duration::from_millis(250));
        psql(port, &insert("b", ROWS_B)).unwrap();
        psql(port, "delete from t").unwrap();
        let logs = take(ArtifactKind::Log);
        assert!(!logs.is_empty(), "the switch archived WAL");
        chain.extend(logs);
        // The restores read only the chain's files.
        driver.fence(DB).expect("stopping the primary");
        History {
            scratch,
            cfg,
            driver,
            chain,
            before_a,
            lsn_a,
            t,
        }
    }

    fn restore(
        &self,
        target: Target,
        action: Action,
        into: &Path,
        port: u16,
        progress: &Progress,
    ) -> Result<Restored, DriverError> {
        restore_point(
            &self.cfg,
            "app",
            &self.chain,
            &target,
            action,
            into,
            port,
            progress,
        )
    }
}

/// The driver's backup of `kind` into the scratch outbox.
fn take(driver: &PostgresDriver, scratch: &ScratchDir, kind: ArtifactKind) -> Vec<ArtifactFile> {
    driver
        .take_backup(&BackupRequest {
            db: DB,
            kind,
            epoch: Epoch(1),
            created_utc: utc_now(),
            outbox: scratch.dir("outbox"),
            progress: Default::default(),
        })
        .unwrap_or_else(|e| panic!("take_backup({kind:?}): {e}"))
}

fn insert(batch: &str, rows: u32) -> String {
    format!(
        "insert into t(batch, v) select '{batch}', '{batch}-' || g from generate_series(1, {rows}) g"
    )
}

/// The rows of batch A, as the primary wrote them.
fn batch_a() -> Vec<String> {
    (1..=ROWS_A).map(|i| format!("a|a-{i}")).collect()
}

fn rows(port: u16) -> Vec<String> {
    psql(port, "select batch, v from t order by id").unwrap()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn stopped(data: &Path) -> bool {
    !data.join("postmaster.pid").exists()
}

#[test]
fn a_time_target_with_promote_keeps_exactly_the_rows_committed_before_it() {
    if !postgres_or_skip("a_time_target_with_promote_keeps_exactly_the_rows_committed_before_it") {
        return;
    }
    let h = History::make("pitr-time");
    let into: PathBuf = h.scratch.path.join("restored");
    let port = cluster::free_port();
    let progress = Progress::default();
    let r = h
        .restore(Target::Time(h.t), Action::Promote, &into, port, &progress)
        .unwrap_or_else(|e| panic!("restore_point: {e}"));
    assert_eq!(r.check, "ok");
    assert!(r.applied >= 2 && r.applied <= h.chain.len(), "{r:?}");
    assert!(r.position.0 >= h.lsn_a, "replay passed A's commit: {r:?}");
    let replayed = r.replayed_to_utc.expect("a transaction was replayed");
    assert!(
        h.before_a <= replayed && replayed <= h.t,
        "the last transaction replayed is batch A's: {replayed:?} in {:?}..{:?}",
        h.before_a,
        h.t
    );
    let (done, total) = progress.get();
    assert!(total > 0 && done == total, "progress {done}/{total}");
    assert!(stopped(&into), "the server is stopped cleanly");
    let conf = std::fs::read_to_string(into.join("lifeboat.conf")).unwrap();
    assert!(!conf.contains("recovery_target") && !conf.contains("restore_command"));
    assert!(conf.contains("archive_mode = off"));
    assert!(!into.join("recovery.signal").exists());

    // The operator starts it: a primary with batch A, nothing of B, its WAL its own.
    let c = Cluster::adopt(&into, port).unwrap();
    c.start().unwrap();
    assert_eq!(psql(port, "select pg_is_in_recovery()").unwrap(), ["f"]);
    assert_eq!(rows(port), batch_a());
    psql(port, "insert into t(batch, v) values ('c', 'after')").unwrap();
    c.stop("fast").unwrap();
}

#[test]
fn an_lsn_target_with_pause_pauses_there_again_at_each_start_and_promotes_on_resume() {
    if !postgres_or_skip(
        "an_lsn_target_with_pause_pauses_there_again_at_each_start_and_promotes_on_resume",
    ) {
        return;
    }
    let h = History::make("pitr-lsn");
    let into: PathBuf = h.scratch.path.join("restored");
    let port = cluster::free_port();
    let r = h
        .restore(
            Target::Lsn(h.lsn_a),
            Action::Pause,
            &into,
            port,
            &Progress::default(),
        )
        .unwrap_or_else(|e| panic!("restore_point: {e}"));
    assert_eq!(r.check, "ok");
    assert!(
        r.position.0 > h.lsn_a,
        "stopped after the record at the target: {r:?}"
    );
    assert!(stopped(&into));
    assert!(
        into.join("recovery.signal").exists(),
        "still a copy in recovery"
    );
    let conf = std::fs::read_to_string(into.join("lifeboat.conf")).unwrap();
    assert!(conf.contains(&format!("recovery_target_lsn = '{}'", PgLsn(h.lsn_a))));
    assert!(conf.contains("recovery_target_action = 'pause'"));

    // A later start replays to the same point and pauses there, read-only.
    let c = Cluster::adopt(&into, port).unwrap();
    c.start().unwrap();
    wait_until("the copy paused at its target", || {
        psql(port, "select pg_get_wal_replay_pause_state()").is_ok_and(|r| r == ["paused"])
    });
    assert_eq!(rows(port), batch_a());
    let at = psql(port, "select pg_last_wal_replay_lsn()").unwrap();
    assert_eq!(PgLsn::parse(&at[0]).unwrap().0, r.position.0);
    // Resuming ends recovery: a primary with batch A.
    psql(port, "select pg_wal_replay_resume()").unwrap();
    wait_until("the copy promoted", || {
        psql(port, "select pg_is_in_recovery()").is_ok_and(|r| r == ["f"])
    });
    assert_eq!(rows(port), batch_a());
    psql(port, "insert into t(batch, v) values ('c', 'after')").unwrap();
    c.stop("fast").unwrap();
}

#[test]
fn a_target_after_the_archived_wal_or_an_unusable_request_fails_clearly_instead_of_hanging() {
    if !postgres_or_skip(
        "a_target_after_the_archived_wal_or_an_unusable_request_fails_clearly_instead_of_hanging",
    ) {
        return;
    }
    let h = History::make("pitr-beyond");
    let into: PathBuf = h.scratch.path.join("restored");
    let port = cluster::free_port();
    // PostgreSQL replays everything, finds no commit after the target, and says so.
    let later = UtcMillis(h.t.0 + 3_600_000);
    let t0 = Instant::now();
    let e = h
        .restore(
            Target::Time(later),
            Action::Promote,
            &into,
            port,
            &Progress::default(),
        )
        .expect_err("a target after the WAL cannot be reached");
    let took = t0.elapsed();
    assert_eq!(e.kind, ErrorKind::BeyondChain, "{e}");
    eprintln!("a target after the WAL: {e}");
    let e = e.message;
    for part in [
        "database app",
        "is after the last archived WAL",
        "choose an earlier target or wait for the next segment",
        "recovery ended before configured recovery target was reached",
    ] {
        assert!(e.contains(part), "{part:?} missing from: {e}");
    }
    assert!(took < Duration::from_secs(20), "it took {took:?}");
    assert!(
        !into.exists(),
        "the failed copy is removed: a retry can use {into:?}"
    );

    // An LSN past the chain is refused before anything is written.
    let e = h
        .restore(
            Target::Lsn(h.lsn_a + (64 << 20)),
            Action::Pause,
            &into,
            port,
            &Progress::default(),
        )
        .expect_err("an LSN after the WAL cannot be reached")
        .message;
    assert!(
        e.contains("is after the last archived WAL of database app"),
        "{e}"
    );
    assert!(!into.exists());

    // A directory that holds something is never written into.
    std::fs::create_dir_all(&into).unwrap();
    std::fs::write(into.join("keep.txt"), "mine").unwrap();
    let e = h
        .restore(
            Target::Latest,
            Action::Promote,
            &into,
            port,
            &Progress::default(),
        )
        .expect_err("a non-empty directory is refused");
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("exists and is not empty"), "{e}");
    assert_eq!(
        std::fs::read_to_string(into.join("keep.txt")).unwrap(),
        "mine"
    );

    // A chain with a hole is refused before anything is written: replay would stop at it.
    let full_end = h.chain[0].manifest.lsn_end.0;
    let mut holed = h.chain.clone();
    let first = holed[1..]
        .iter()
        .position(|a| a.manifest.lsn_start.0 <= full_end && full_end < a.manifest.lsn_end.0)
        .expect("a segment continues the full")
        + 1;
    assert!(first + 1 < holed.len(), "more segments follow it");
    holed.remove(first);
    let hole = h.scratch.path.join("hole");
    let e = restore_point(
        &h.cfg,
        "app",
        &holed,
        &Target::Latest,
        Action::Promote,
        &hole,
        port,
        &Progress::default(),
    )
    .expect_err("a hole is refused");
    assert_eq!(e.kind, ErrorKind::OutOfOrder, "{e}");
    assert!(e.message.contains("has a hole"), "{e}");
    assert!(!hole.exists());
}

#[test]
fn a_chain_that_crosses_a_timeline_is_replayed_along_the_history_files_it_carries() {
    if !postgres_or_skip(
        "a_chain_that_crosses_a_timeline_is_replayed_along_the_history_files_it_carries",
    ) {
        return;
    }
    let mut h = History::make("pitr-timeline");
    // The stopped primary restarts as a standby of nothing and is promoted: timeline 2, whose
    // segments carry 00000002.history. Batch C is written there.
    let db = &h.cfg.databases[0];
    let signal = db.data_dir.join("standby.signal");
    std::fs::write(&signal, "").unwrap();
    let c = Cluster::adopt(&db.data_dir, db.port).unwrap();
    c.start().unwrap();
    wait_until("the old primary runs as a standby", || {
        psql(db.port, "select pg_is_in_recovery()").is_ok_and(|r| r == ["t"])
    });
    psql(db.port, "select pg_promote()").unwrap();
    wait_until("the promotion", || {
        psql(db.port, "select pg_is_in_recovery()").is_ok_and(|r| r == ["f"])
    });
    psql(db.port, &insert("c", 7)).unwrap();
    let logs = take(&h.driver, &h.scratch, ArtifactKind::Log);
    assert!(logs.iter().any(|a| {
        let bytes = std::fs::read(&a.path).unwrap();
        let (hdr, _) = segment::decode(&bytes).unwrap();
        hdr.timeline == 2 && hdr.history.iter().any(|f| f.name == "00000002.history")
    }));
    h.chain.extend(logs);
    c.stop("fast").unwrap();

    let into = h.scratch.path.join("restored");
    let port = cluster::free_port();
    let r = h
        .restore(
            Target::Latest,
            Action::Promote,
            &into,
            port,
            &Progress::default(),
        )
        .unwrap_or_else(|e| panic!("restore_point: {e}"));
    assert_eq!(r.check, "ok");
    assert!(into.join("pg_wal/00000002.history").exists());
    let copy = Cluster::adopt(&into, port).unwrap();
    copy.start().unwrap();
    let expected: Vec<String> = (1..=7).map(|i| format!("c|c-{i}")).collect();
    assert_eq!(
        rows(port),
        expected,
        "replay followed timeline 2 to its end"
    );
    assert_eq!(
        psql(port, "select timeline_id from pg_control_checkpoint()").unwrap(),
        ["3"],
        "the promoted copy starts a timeline after the ones it replayed"
    );
    copy.stop("fast").unwrap();
}

#[test]
fn latest_replays_every_archived_segment_and_pauses_after_the_last_record_or_promotes() {
    if !postgres_or_skip(
        "latest_replays_every_archived_segment_and_pauses_after_the_last_record_or_promotes",
    ) {
        return;
    }
    let h = History::make("pitr-latest");
    let port = cluster::free_port();
    // Pausing at the end of the WAL: after the last record of the last segment (the switch).
    let paused = h.scratch.path.join("paused");
    let r = h
        .restore(
            Target::Latest,
            Action::Pause,
            &paused,
            port,
            &Progress::default(),
        )
        .unwrap_or_else(|e| panic!("restore_point to the end, paused: {e}"));
    assert_eq!(r.position, h.chain.last().unwrap().manifest.lsn_end);
    assert!(paused.join("recovery.signal").exists());

    // Promoting at the end: everything replayed, the delete included.
    let fresh = h.scratch.path.join("latest");
    let r = h
        .restore(
            Target::Latest,
            Action::Promote,
            &fresh,
            port,
            &Progress::default(),
        )
        .unwrap_or_else(|e| panic!("restore_point to the end: {e}"));
    assert_eq!(r.check, "ok");
    let c = Cluster::adopt(&fresh, port).unwrap();
    c.start().unwrap();
    assert_eq!(
        rows(port),
        Vec::<String>::new(),
        "the history ends with a delete"
    );
    assert_eq!(psql(port, "select pg_is_in_recovery()").unwrap(), ["f"]);
    c.stop("fast").unwrap();
}
