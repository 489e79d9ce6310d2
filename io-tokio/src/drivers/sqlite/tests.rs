//! The sqlite driver's specification, as tests: a primary under writes, its artifacts, and a
//! standby that follows them.

use super::apply::Target;
use super::*;
use crate::drivers::manifest::{read_manifest, verify_artifact, write_manifest};
use lifeboat_core::name::ArtifactName;
use lifeboat_core::UtcMillis;
use rusqlite::{params, Connection};
use std::path::Path;
use tempfile::TempDir;

mod wal;

/// 2026-11-22T03:05:00Z.
const T0: i64 = 1_795_316_700_000;
const SALES: DbId = DbId(0);

/// One site: a driver for one database called `sales`, and an outbox.
struct Site {
    dir: TempDir,
    driver: SqliteDriver,
    db: PathBuf,
    outbox: PathBuf,
    clock: std::cell::Cell<i64>,
}

thread_local! {
    /// The tests run again with the application in WAL mode (see [`in_wal_mode`]).
    static WAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run a test body with every site's application in WAL mode: the driver captures from the WAL
/// instead of snapshots, and every claim of the test must still hold.
fn in_wal_mode(body: fn()) {
    WAL.with(|w| w.set(true));
    body();
}

/// WAL-mode runs of tests written for either mode.
macro_rules! in_wal_mode_too {
    ($($test:ident => $wal:ident),* $(,)?) => {
        $(#[test]
        fn $wal() {
            in_wal_mode($test);
        })*
    };
}

in_wal_mode_too! {
    reapplying_the_same_log_twice_leaves_the_same_file => wal_reapplying_the_same_log_twice_leaves_the_same_file,
    log_applied_out_of_order_is_refused_with_the_gap_named => wal_log_applied_out_of_order_is_refused_with_the_gap_named,
    incremental_differential_applies_over_the_full_with_or_without_logs_between => wal_incremental_differential_applies_over_the_full_with_or_without_logs_between,
    log_spanning_a_later_full_applies_after_that_full => wal_log_spanning_a_later_full_applies_after_that_full,
    no_changes_means_no_log_and_no_incremental => wal_no_changes_means_no_log_and_no_incremental,
    fence_makes_another_connections_write_fail_with_busy_and_unfence_allows_it => wal_fence_makes_another_connections_write_fail_with_busy_and_unfence_allows_it,
    final_log_taken_while_fenced_keeps_the_fence => wal_final_log_taken_while_fenced_keeps_the_fence,
    drill_restores_the_chain_into_a_scratch_copy_and_discards_it => wal_drill_restores_the_chain_into_a_scratch_copy_and_discards_it,
    promoted_standby_starts_a_chain_the_fenced_old_primary_can_follow => wal_promoted_standby_starts_a_chain_the_fenced_old_primary_can_follow,
    reseed_keeps_the_old_copy_until_the_new_one_verified => wal_reseed_keeps_the_old_copy_until_the_new_one_verified,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data").join("sales.db");
    fs::create_dir_all(db.parent().unwrap()).unwrap();
    let driver = open_driver(dir.path(), &db);
    let outbox = dir.path().join("outbox");
    Site {
        dir,
        driver,
        db,
        outbox,
        clock: std::cell::Cell::new(T0),
    }
}

fn open_driver(root: &Path, db: &Path) -> SqliteDriver {
    open_driver_with(root, db, SqliteConfig::new(root.join("state")))
}

fn open_driver_with(_root: &Path, db: &Path, config: SqliteConfig) -> SqliteDriver {
    SqliteDriver::open(
        config,
        vec![DatabaseSpec {
            name: "sales".into(),
            path: db.to_path_buf(),
        }],
    )
    .unwrap()
}

/// A site whose standby runs `PRAGMA quick_check` after a delta at most every `ms`.
fn site_checking_every(ms: u64) -> Site {
    let mut s = site();
    let mut config = SqliteConfig::new(s.dir.path().join("state"));
    config.check_every_ms = ms;
    s.driver = open_driver_with(s.dir.path(), &s.db, config);
    s
}

impl Site {
    /// The application's connection (it creates the database).
    fn app(&self) -> Connection {
        let conn = Connection::open(&self.db).unwrap();
        if WAL.with(|w| w.get()) {
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        conn.execute_batch(
            "PRAGMA synchronous=OFF;
             CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB);",
        )
        .unwrap();
        conn
    }

    fn backup(&self, kind: ArtifactKind) -> Vec<ArtifactFile> {
        self.try_backup(kind).unwrap()
    }

    fn try_backup(&self, kind: ArtifactKind) -> Result<Vec<ArtifactFile>, DriverError> {
        let now = self.clock.get();
        self.clock.set(now + 1_000);
        self.driver.take_backup(&BackupRequest {
            db: SALES,
            kind,
            epoch: Epoch(1),
            created_utc: UtcMillis(now),
            outbox: self.outbox.clone(),
            progress: Default::default(),
        })
    }

    fn one(&self, kind: ArtifactKind) -> ArtifactFile {
        let mut v = self.backup(kind);
        assert_eq!(v.len(), 1, "expected one {kind:?}");
        v.remove(0)
    }

    fn rows(&self) -> Vec<(i64, String, Option<Vec<u8>>)> {
        rows_of(&self.db)
    }

    fn bytes(&self) -> Vec<u8> {
        fs::read(&self.db).unwrap()
    }

    fn position(&self) -> Lsn {
        self.driver.position(SALES).unwrap()
    }
}

fn rows_of(path: &Path) -> Vec<(i64, String, Option<Vec<u8>>)> {
    let conn =
        Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = conn.prepare("SELECT id, v, b FROM t ORDER BY id").unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

fn counter_of(path: &Path) -> u32 {
    let b = fs::read(path).unwrap();
    u32::from_be_bytes([b[24], b[25], b[26], b[27]])
}

/// `count` inserts, each its own transaction, with blobs of varied size so pages split.
fn insert(conn: &Connection, from: i64, count: i64) {
    for i in from..from + count {
        let blob = vec![(i % 251) as u8; 200 + (i as usize * 37) % 1500];
        conn.execute(
            "INSERT INTO t(id, v, b) VALUES (?1, ?2, ?3)",
            params![i, format!("row {i}"), blob],
        )
        .unwrap();
    }
}

fn update(conn: &Connection, ids: std::ops::Range<i64>, tag: &str) {
    for i in ids {
        conn.execute(
            "UPDATE t SET v = ?2 WHERE id = ?1",
            params![i, format!("{tag} {i}")],
        )
        .unwrap();
    }
}

fn kinds(v: &[ArtifactFile]) -> Vec<ArtifactKind> {
    v.iter().map(|a| a.manifest.kind).collect()
}

/// Rewrite an artifact's manifest to match its (tampered) bytes, as a bad primary would.
fn reseal(artifact: &ArtifactFile) -> ArtifactFile {
    let (size, checksum) = crate::drivers::hash_file(&artifact.path).unwrap();
    let mut m = artifact.manifest.clone();
    m.size = size;
    m.checksum = checksum;
    write_manifest(&artifact.path, &m).unwrap();
    read_manifest(&artifact.path).unwrap()
}

/// Overwrite every page image but page 1 in a delta file with garbage.
fn garble_delta_pages(artifact: &ArtifactFile) {
    let (reader, pages) = pages::DeltaReader::open(&artifact.path).unwrap();
    let ps = u64::from(reader.header.page_size);
    let mut bytes = fs::read(&artifact.path).unwrap();
    assert!(pages.len() > 1, "the delta must carry more than page 1");
    for i in 1..pages.len() as u64 {
        let at = (pages::HEADER_LEN + i * (4 + ps) + 4) as usize;
        for b in &mut bytes[at..at + ps as usize] {
            *b = 0xA5;
        }
    }
    fs::write(&artifact.path, bytes).unwrap();
}

#[test]
fn primary_under_writes_full_then_logs_restore_identical_rows_and_counter() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 40);
    let full = primary.one(ArtifactKind::Full);
    assert_eq!(full.manifest.lsn_start, full.manifest.lsn_end);
    assert_eq!(
        full.manifest.lsn_end,
        Lsn(u64::from(counter_of(&primary.db)))
    );

    insert(&app, 40, 60);
    let log1 = primary.one(ArtifactKind::Log);
    update(&app, 10..30, "changed");
    app.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
    let log2 = primary.one(ArtifactKind::Log);
    // Shrink the file: the standby must truncate too.
    app.execute("DELETE FROM t WHERE id > 20", []).unwrap();
    app.execute_batch("VACUUM").unwrap();
    let log3 = primary.one(ArtifactKind::Log);

    // Logs chain without gaps, and each covers exactly the transactions in between.
    assert_eq!(log1.manifest.lsn_start, full.manifest.lsn_end);
    assert_eq!(log1.manifest.lsn_end.0 - log1.manifest.lsn_start.0, 60);
    assert_eq!(log2.manifest.lsn_start, log1.manifest.lsn_end);
    assert_eq!(log3.manifest.lsn_start, log2.manifest.lsn_end);
    assert_eq!(primary.position(), log3.manifest.lsn_end);

    for a in [&full, &log1, &log2, &log3] {
        let at = standby.driver.restore(a).unwrap();
        assert_eq!(at, a.manifest.lsn_end, "{}", a.describe());
    }
    assert_eq!(standby.rows(), primary.rows());
    assert_eq!(counter_of(&standby.db), counter_of(&primary.db));
    assert_eq!(standby.position(), primary.position());
    assert_eq!(
        standby.bytes(),
        primary.bytes(),
        "the standby is byte-identical"
    );
    assert!(!standby.dir.path().join("state/sales/apply.undo").exists());
}

#[test]
fn reapplying_the_same_log_twice_leaves_the_same_file() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 10);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 10, 25);
    let log = primary.one(ArtifactKind::Log);

    standby.driver.restore(&full).unwrap();
    let end = standby.driver.restore(&log).unwrap();
    let once = standby.bytes();
    assert_eq!(standby.driver.restore(&log).unwrap(), end);
    assert_eq!(standby.bytes(), once);
    // A full restored twice is the same too.
    assert_eq!(
        standby.driver.restore(&full).unwrap(),
        full.manifest.lsn_end
    );
    standby.driver.restore(&log).unwrap();
    assert_eq!(standby.bytes(), once);
}

#[test]
fn log_applied_out_of_order_is_refused_with_the_gap_named() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 5);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 5, 5);
    let log1 = primary.one(ArtifactKind::Log);
    insert(&app, 10, 5);
    let log2 = primary.one(ArtifactKind::Log);

    standby.driver.restore(&full).unwrap();
    let before = standby.bytes();
    let e = standby.driver.restore(&log2).unwrap_err();
    assert_eq!(e.kind, ErrorKind::OutOfOrder, "{e}");
    assert!(!e.permanent);
    let gap = format!("{}..{}", full.manifest.lsn_end, log2.manifest.lsn_start);
    assert!(
        e.message.contains(&gap),
        "names the missing range {gap}: {e}"
    );
    assert!(e.message.contains("sales"), "{e}");
    assert_eq!(standby.bytes(), before, "nothing was written");

    standby.driver.restore(&log1).unwrap();
    standby.driver.restore(&log2).unwrap();
    // Now behind the standby: also refused, as already past.
    let e = standby.driver.restore(&log1).unwrap_err();
    assert_eq!(e.kind, ErrorKind::OutOfOrder);
    assert!(e.message.contains("already past"), "{e}");
    assert_eq!(standby.rows(), primary.rows());
}

#[test]
fn corrupted_artifact_file_is_caught_by_manifest_verification() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 5);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 5, 5);
    let log = primary.one(ArtifactKind::Log);
    assert_eq!(verify_artifact(&log.path).unwrap(), log);
    assert_eq!(verify_artifact(&log.manifest_path()).unwrap(), log);
    standby.driver.restore(&full).unwrap();

    let good = fs::read(&log.path).unwrap();
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    fs::write(&log.path, &flipped).unwrap();
    let e = verify_artifact(&log.path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ChecksumMismatch, "{e}");
    assert!(e.message.contains(&log.path.display().to_string()) && e.message.contains("re-copy"));
    let e = standby.driver.restore(&log).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ChecksumMismatch);
    assert!(e.permanent);

    fs::write(&log.path, &good[..good.len() - 10]).unwrap();
    assert_eq!(
        verify_artifact(&log.path).unwrap_err().kind,
        ErrorKind::SizeMismatch
    );
    fs::write(&log.path, &good).unwrap();

    let manifest_text = fs::read_to_string(log.manifest_path()).unwrap();
    fs::write(
        log.manifest_path(),
        &manifest_text[..manifest_text.len() / 2],
    )
    .unwrap();
    assert_eq!(
        verify_artifact(&log.path).unwrap_err().kind,
        ErrorKind::ManifestInvalid
    );
    fs::write(
        log.manifest_path(),
        manifest_text.replace("\"format_version\":1", "\"format_version\":7"),
    )
    .unwrap();
    let e = verify_artifact(&log.path).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ManifestVersion, "{e}");
    assert!(e.message.contains("version 7"));
    fs::remove_file(log.manifest_path()).unwrap();
    assert_eq!(
        verify_artifact(&log.path).unwrap_err().kind,
        ErrorKind::ManifestMissing
    );
    fs::write(log.manifest_path(), &manifest_text).unwrap();
    assert_eq!(standby.driver.restore(&log).unwrap(), log.manifest.lsn_end);
}

#[test]
fn quick_check_failure_becomes_a_restore_error_and_rolls_the_pages_back() {
    let primary = site();
    let standby = site_checking_every(0);
    let app = primary.app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 30, 30);
    let log = primary.one(ArtifactKind::Log);
    standby.driver.restore(&full).unwrap();
    let before = standby.bytes();

    let good = fs::read(&log.path).unwrap();
    garble_delta_pages(&log);
    let bad = reseal(&log);
    let e = standby.driver.restore(&bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CheckFailed, "{e}");
    assert!(e.permanent);
    assert!(
        e.message.contains("quick_check") && e.message.contains("rolled back"),
        "{e}"
    );
    assert_eq!(standby.bytes(), before, "the standby is back where it was");
    assert_eq!(standby.position(), full.manifest.lsn_end);

    fs::write(&log.path, good).unwrap();
    let good = reseal(&log);
    standby.driver.restore(&good).unwrap();
    assert_eq!(standby.rows(), primary.rows());
}

/// Applying a log costs what changed: the quick check (a read of the whole database) runs on a
/// schedule. Within it, a delta whose bytes match their checksum is applied unchecked; the
/// first apply after the interval checks, rolls back what fails and says so.
#[test]
fn the_standby_quick_check_runs_on_a_schedule_not_after_every_log() {
    let primary = site();
    let standby = site_checking_every(200);
    let app = primary.app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 30, 30);
    let log1 = primary.one(ArtifactKind::Log);
    insert(&app, 60, 30);
    let log2 = primary.one(ArtifactKind::Log);
    standby.driver.restore(&full).unwrap();
    // Within the interval after the full's check: a garbled (resealed) log is not read back.
    let good = fs::read(&log1.path).unwrap();
    garble_delta_pages(&log1);
    let bad = reseal(&log1);
    assert_eq!(standby.driver.restore(&bad).unwrap(), log1.manifest.lsn_end);
    // After it, the next apply checks the whole database and finds the damage.
    std::thread::sleep(Duration::from_millis(250));
    let e = standby.driver.restore(&log2).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CheckFailed, "{e}");
    assert_eq!(
        standby.position(),
        log1.manifest.lsn_end,
        "log2 was rolled back"
    );
    fs::write(&log1.path, good).unwrap();
}

#[test]
fn fence_makes_another_connections_write_fail_with_busy_and_unfence_allows_it() {
    let primary = site();
    let app = primary.app();
    insert(&app, 0, 3);
    primary.driver.fence(SALES).unwrap();
    assert!(primary.driver.is_fenced(SALES).unwrap());
    app.busy_timeout(Duration::from_millis(0)).unwrap();
    let e = app
        .execute("INSERT INTO t(id, v) VALUES (100, 'x')", [])
        .unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy)
    );
    // Readers are not fenced, and probes still pass.
    assert_eq!(primary.rows().len(), 3);
    primary.driver.probe(SALES).unwrap();

    primary.driver.unfence(SALES, Epoch(2)).unwrap();
    app.execute("INSERT INTO t(id, v) VALUES (100, 'x')", [])
        .unwrap();
    assert_eq!(primary.rows().len(), 4);
}

#[test]
fn final_log_taken_while_fenced_keeps_the_fence() {
    // A planned switchover fences the primary, then takes its final log.
    let primary = site();
    let app = primary.app();
    insert(&app, 0, 5);
    primary.one(ArtifactKind::Full);
    insert(&app, 5, 5);
    primary.driver.fence(SALES).unwrap();
    let last = primary.one(ArtifactKind::Log);
    assert_eq!(last.manifest.lsn_end, primary.position());
    app.busy_timeout(Duration::from_millis(0)).unwrap();
    let e = app
        .execute("INSERT INTO t(id, v) VALUES (100, 'x')", [])
        .unwrap_err();
    assert_eq!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy),
        "closing the snapshot's file handle must not drop the fence's lock"
    );
}

#[test]
fn reseed_keeps_the_old_copy_until_the_new_one_verified() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    standby.driver.restore(&full).unwrap();
    let old = standby.bytes();

    // A full backup that carries its checksum but whose b-tree pages are garbage.
    insert(&app, 30, 30);
    let fresh = primary.one(ArtifactKind::Full);
    let bad_dir = primary.dir.path().join("bad");
    fs::create_dir_all(&bad_dir).unwrap();
    let bad_path = bad_dir.join(fresh.path.file_name().unwrap());
    let mut bytes = fs::read(&fresh.path).unwrap();
    let ps = 4096;
    for b in &mut bytes[ps..2 * ps] {
        *b = 0x5A;
    }
    fs::write(&bad_path, bytes).unwrap();
    write_manifest(&bad_path, &fresh.manifest).unwrap();
    let bad = reseal(&read_manifest(&bad_path).unwrap());

    let e = standby.driver.reseed(&bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CheckFailed, "{e}");
    assert!(
        e.message.contains("integrity_check") && e.message.contains("not touched"),
        "{e}"
    );
    assert_eq!(standby.bytes(), old, "the old copy is still in service");
    let leftovers: Vec<_> = fs::read_dir(standby.db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("sales.db")]);

    assert_eq!(
        standby.driver.reseed(&fresh).unwrap(),
        fresh.manifest.lsn_end
    );
    assert_eq!(standby.rows(), primary.rows());
}

#[test]
fn incremental_differential_applies_over_the_full_with_or_without_logs_between() {
    let primary = site();
    let only_incr = site();
    let with_log = site();
    let app = primary.app();
    insert(&app, 0, 20);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 20, 20);
    let log1 = primary.one(ArtifactKind::Log);
    update(&app, 0..20, "second");
    let incr1 = primary.one(ArtifactKind::Incremental);
    update(&app, 0..20, "third");
    app.execute("DELETE FROM t WHERE id BETWEEN 5 AND 9", [])
        .unwrap();
    let incr2 = primary.one(ArtifactKind::Incremental);
    assert_eq!(incr2.manifest.base_full, Some(full.manifest.lsn_end));
    assert_eq!(incr2.manifest.lsn_start, full.manifest.lsn_end);
    assert_eq!(incr2.manifest.lsn_end, primary.position());
    assert!(incr2.manifest.lsn_end > incr1.manifest.lsn_end);

    only_incr.driver.restore(&full).unwrap();
    only_incr.driver.restore(&incr2).unwrap();
    assert_eq!(only_incr.rows(), primary.rows());

    with_log.driver.restore(&full).unwrap();
    with_log.driver.restore(&log1).unwrap();
    with_log.driver.restore(&incr2).unwrap();
    assert_eq!(with_log.rows(), primary.rows());
    if !WAL.with(|w| w.get()) {
        // In WAL mode the primary's newest pages are in its -wal file, not its main file.
        assert_eq!(with_log.bytes(), primary.bytes());
    }
}

#[test]
fn log_spanning_a_later_full_applies_after_that_full() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 10);
    primary.one(ArtifactKind::Full);
    insert(&app, 10, 10);
    let full2 = primary.one(ArtifactKind::Full);
    insert(&app, 20, 10);
    let log = primary.one(ArtifactKind::Log);
    assert!(log.manifest.lsn_start < full2.manifest.lsn_end);
    standby.driver.restore(&full2).unwrap();
    standby.driver.restore(&log).unwrap();
    assert_eq!(standby.rows(), primary.rows());
}

#[test]
fn no_changes_means_no_log_and_no_incremental() {
    let primary = site();
    let app = primary.app();
    insert(&app, 0, 3);
    // The first log only starts the chain: a standby needs a full first anyway.
    assert!(primary.backup(ArtifactKind::Log).is_empty());
    let e = primary.try_backup(ArtifactKind::Incremental).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoBaseFull);
    primary.one(ArtifactKind::Full);
    assert!(primary.backup(ArtifactKind::Log).is_empty());
    assert!(primary.backup(ArtifactKind::Incremental).is_empty());
    insert(&app, 3, 1);
    assert_eq!(
        kinds(&primary.backup(ArtifactKind::Log)),
        vec![ArtifactKind::Log]
    );
    assert!(primary.backup(ArtifactKind::Log).is_empty());
}

#[test]
fn manifest_is_json_version_first_beside_a_seed_convention_name() {
    let primary = site();
    let app = primary.app();
    insert(&app, 0, 3);
    primary.one(ArtifactKind::Full);
    insert(&app, 3, 1);
    let a = primary.one(ArtifactKind::Log);
    primary.clock.set(primary.clock.get() - 1_000);
    insert(&app, 4, 1);
    let b = primary.one(ArtifactKind::Log);

    let bytes = fs::read(&a.path).unwrap();
    assert_eq!(
        a.manifest.checksum,
        lifeboat_core::Checksum(xxhash_rust::xxh3::xxh3_64(&bytes)),
        "the checksum is xxh3-64 of the file's bytes"
    );
    assert_eq!(a.manifest.size, bytes.len() as u64);
    let text = fs::read_to_string(a.manifest_path()).unwrap();
    assert!(
        text.starts_with("{\"format_version\":1,\"db\":\"sales\",\"db_id\":0,\"kind\":\"tlog\"")
    );
    let name = ArtifactName::parse(&a.path.file_name().unwrap().to_string_lossy()).unwrap();
    assert_eq!(
        (name.db.as_str(), name.kind, name.retry),
        ("sales", ArtifactKind::Log, 0)
    );
    assert_eq!(name.created.to_string(), "2026-11-22T03:05:01Z");
    // Same second, same kind: the later one's name moves a second on; its manifest keeps the truth.
    assert_ne!(a.path, b.path);
    assert_eq!(b.manifest.created_utc, a.manifest.created_utc);

    let relabelled = crate::drivers::relabel(&a, 3).unwrap();
    assert!(relabelled.path.to_string_lossy().ends_with("_tlog_3"));
    assert_eq!(relabelled.manifest.retry, 3);
    assert!(!a.path.exists() && !a.manifest_path().exists());
    assert_eq!(verify_artifact(&relabelled.path).unwrap(), relabelled);

    let found = primary.driver.discover(&primary.outbox).unwrap();
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    assert_eq!(
        kinds(&found.artifacts),
        vec![ArtifactKind::Full, ArtifactKind::Log, ArtifactKind::Log]
    );
}

#[test]
fn drill_restores_the_chain_into_a_scratch_copy_and_discards_it() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 10);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 10, 10);
    let log1 = primary.one(ArtifactKind::Log);
    insert(&app, 20, 10);
    let log2 = primary.one(ArtifactKind::Log);

    let outcome = standby
        .driver
        .drill(SALES, &[full.clone(), log1.clone(), log2.clone()])
        .unwrap();
    assert_eq!(outcome.position, log2.manifest.lsn_end);
    assert_eq!((outcome.applied, outcome.check.as_str()), (3, "ok"));
    assert!(!standby.db.exists(), "the drill never touches the database");
    let state = standby.dir.path().join("state/sales");
    assert!(fs::read_dir(&state).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("drill")));

    // From the standby as it is, plus a delta.
    standby.driver.restore(&full).unwrap();
    standby.driver.restore(&log1).unwrap();
    let before = standby.bytes();
    let outcome = standby
        .driver
        .drill(SALES, std::slice::from_ref(&log2))
        .unwrap();
    assert_eq!(outcome.position, log2.manifest.lsn_end);
    assert_eq!(standby.bytes(), before);

    let picky = SqliteDriver::open(
        SqliteConfig {
            drill_check_sql: Some("SELECT 1 FROM t WHERE id = 999".into()),
            ..SqliteConfig::new(standby.dir.path().join("state2"))
        },
        vec![DatabaseSpec {
            name: "sales".into(),
            path: standby.db.clone(),
        }],
    )
    .unwrap();
    let e = picky.drill(SALES, &[full, log1, log2]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::CheckFailed);
    assert!(e.message.contains("returned no row"), "{e}");
}

#[test]
fn promoted_standby_starts_a_chain_the_fenced_old_primary_can_follow() {
    let a = site();
    let b = site();
    let app = a.app();
    insert(&app, 0, 10);
    b.driver.restore(&a.one(ArtifactKind::Full)).unwrap();
    insert(&app, 10, 10);
    b.driver.restore(&a.one(ArtifactKind::Log)).unwrap();

    // Planned switchover: fence A, ship its final log, promote B.
    insert(&app, 20, 5);
    drop(app);
    a.driver.fence(SALES).unwrap();
    b.driver.restore(&a.one(ArtifactKind::Log)).unwrap();
    let start = b.driver.promote(SALES, Epoch(2)).unwrap();
    assert_eq!(start, a.position());
    let app_b = b.app();
    insert(&app_b, 100, 15);
    let reverse = b.one(ArtifactKind::Log);
    assert_eq!(reverse.manifest.lsn_start, start);

    // A, still fenced, follows B without a reseed.
    a.driver.restore(&reverse).unwrap();
    assert_eq!(a.rows(), b.rows());
    assert!(a.driver.is_fenced(SALES).unwrap());
}

#[test]
fn interrupted_apply_is_rolled_back_when_the_driver_opens() {
    let primary = site();
    let standby = site();
    let app = primary.app();
    insert(&app, 0, 10);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 10, 30);
    let log = primary.one(ArtifactKind::Log);
    standby.driver.restore(&full).unwrap();
    let before = standby.bytes();

    // Apply without the verification step, as if the agent died right after the writes.
    let undo = standby.dir.path().join("state/sales/apply.undo");
    let file = durable::open_rw(&standby.db).unwrap();
    let target = Target {
        db_name: "sales",
        path: &standby.db,
    };
    apply::apply_delta(&file, &target, &log, Some(&undo)).unwrap();
    drop(file);
    assert!(undo.exists());
    assert_ne!(standby.bytes(), before);

    let reopened = open_driver(standby.dir.path(), &standby.db);
    assert!(!undo.exists());
    assert_eq!(standby.bytes(), before);
    assert_eq!(reopened.restore(&log).unwrap(), log.manifest.lsn_end);
    assert_eq!(standby.rows(), primary.rows());
}

#[test]
fn artifacts_of_another_database_are_refused() {
    let primary = site();
    let app = primary.app();
    insert(&app, 0, 3);
    let full = primary.one(ArtifactKind::Full);
    let other = tempfile::tempdir().unwrap();
    let driver = SqliteDriver::open(
        SqliteConfig::new(other.path().join("state")),
        vec![DatabaseSpec {
            name: "orders".into(),
            path: other.path().join("orders.db"),
        }],
    )
    .unwrap();
    let e = driver.restore(&full).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(
        e.message.contains("\"sales\"") && e.message.contains("\"orders\""),
        "{e}"
    );
    let e = driver.position(DbId(4)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
}

#[test]
fn a_database_locked_by_a_live_writer_answers_the_probe_and_a_missing_one_does_not() {
    let primary = site();
    let app = primary.app();
    app.execute("INSERT INTO t(id, v) VALUES (1, 'a')", [])
        .unwrap();
    // A restore or a long write holds the exclusive lock past the probe's timeout: the
    // database is busy, not down.
    app.execute_batch("BEGIN EXCLUSIVE; INSERT INTO t(id, v) VALUES (2, 'b');")
        .unwrap();
    primary.driver.probe(SALES).unwrap();
    app.execute_batch("COMMIT").unwrap();
    primary.driver.probe(SALES).unwrap();
    // A database file that is gone does not answer.
    fs::remove_file(&primary.db).unwrap();
    let e = primary.driver.probe(SALES).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}
