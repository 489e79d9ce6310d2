//! The sqlite driver on a database the application runs in WAL mode: logs come from the WAL,
//! the application keeps its mode, and what SQLite does to the WAL (checkpoints, restarts)
//! loses nothing.

use super::*;

impl Site {
    /// The application's connection in WAL mode, with SQLite's default automatic checkpoints.
    fn wal_app(&self) -> Connection {
        let conn = self.app();
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn
    }

    fn journal_mode(&self) -> String {
        let conn = Connection::open(&self.db).unwrap();
        conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap()
    }

    fn restore_all(&self, artifacts: &[&ArtifactFile]) {
        for a in artifacts {
            let at = self.driver.restore(a).unwrap();
            assert_eq!(at, a.manifest.lsn_end, "{}", a.describe());
        }
    }

    fn integrity(&self) -> String {
        let conn = Connection::open(&self.db).unwrap();
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }
}

#[test]
fn a_wal_database_keeps_its_mode_and_its_logs_count_transactions_and_restore_identical_rows() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 40);
    let full = primary.one(ArtifactKind::Full);
    assert_eq!(full.manifest.lsn_start, full.manifest.lsn_end);

    insert(&app, 40, 60);
    let log1 = primary.one(ArtifactKind::Log);
    assert_eq!(log1.manifest.lsn_start, full.manifest.lsn_end);
    assert_eq!(log1.manifest.lsn_end.0 - log1.manifest.lsn_start.0, 60);
    update(&app, 10..30, "changed");
    app.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
    assert_eq!(primary.position().0 - log1.manifest.lsn_end.0, 21);
    let log2 = primary.one(ArtifactKind::Log);
    assert_eq!(log2.manifest.lsn_end.0 - log2.manifest.lsn_start.0, 21);
    // Shrink the file: the standby truncates too.
    app.execute("DELETE FROM t WHERE id > 20", []).unwrap();
    app.execute_batch("VACUUM").unwrap();
    let log3 = primary.one(ArtifactKind::Log);
    assert_eq!(log3.manifest.lsn_start, log2.manifest.lsn_end);
    assert!(
        primary.backup(ArtifactKind::Log).is_empty(),
        "nothing new, no log"
    );

    standby.restore_all(&[&full, &log1, &log2, &log3]);
    assert_eq!(standby.rows(), primary.rows());
    assert_eq!(standby.integrity(), "ok");
    assert_eq!(standby.position(), log3.manifest.lsn_end);
    assert_eq!(
        primary.journal_mode(),
        "wal",
        "the driver never changes the mode"
    );
}

#[test]
fn checkpoints_by_the_application_between_two_logs_lose_nothing() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    // Nothing else writes: a checkpoint that must wait for the pinned reader need not wait the
    // default 5 s to give up.
    app.busy_timeout(std::time::Duration::from_millis(100))
        .unwrap();
    insert(&app, 0, 20);
    let full = primary.one(ArtifactKind::Full);
    let mut logs = Vec::new();
    for (round, mode) in ["PASSIVE", "FULL", "RESTART", "TRUNCATE"]
        .iter()
        .enumerate()
    {
        let from = 20 + round as i64 * 30;
        let start = logs
            .last()
            .map_or(full.manifest.lsn_end, |l: &ArtifactFile| l.manifest.lsn_end);
        insert(&app, from, 15);
        // Position samples count from where the previous sample stopped reading.
        assert_eq!(primary.position().0 - start.0, 15, "{mode}");
        // The application checkpoints in the middle of the writes; a mode that must wait for
        // the driver's pinned reader gives up (busy) instead of blocking.
        app.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()))
            .unwrap();
        assert_eq!(primary.position().0 - start.0, 15, "{mode}");
        insert(&app, from + 15, 15);
        update(&app, 0..5, &format!("round {round}"));
        assert_eq!(primary.position().0 - start.0, 35, "{mode}");
        let log = primary.one(ArtifactKind::Log);
        assert_eq!(primary.position(), log.manifest.lsn_end, "{mode}");
        assert_eq!(
            log.manifest.lsn_end.0 - log.manifest.lsn_start.0,
            35,
            "{mode}"
        );
        logs.push(log);
    }
    let mut all: Vec<&ArtifactFile> = vec![&full];
    all.extend(logs.iter());
    standby.restore_all(&all);
    assert_eq!(standby.rows(), primary.rows());
    assert_eq!(standby.integrity(), "ok");
}

#[test]
fn a_wal_emptied_while_the_agent_was_stopped_is_healed_by_comparing_pages() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 30, 10);
    let log1 = primary.one(ArtifactKind::Log);
    // The agent stops: its pins go. The application writes, checkpoints the WAL away and
    // writes again into a new one.
    let state = primary.dir.path().to_path_buf();
    drop(drop_pins(&primary.driver));
    insert(&app, 40, 25);
    update(&app, 0..10, "while stopped");
    let (busy, _, _): (i64, i64, i64) = app
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(busy, 0, "nobody pins the WAL while the agent is stopped");
    insert(&app, 65, 5);
    // The agent starts again: the gap is healed and reported (the agent raises capture_gap).
    let (log2, gaps) = log_after_restart(&primary, &state);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].0, SALES);
    assert!(
        gaps[0]
            .1
            .contains("frames the driver had not read are gone"),
        "{}",
        gaps[0].1
    );
    assert_eq!(log2.manifest.lsn_start, log1.manifest.lsn_end);
    assert!(log2.manifest.lsn_end > log2.manifest.lsn_start);
    standby.restore_all(&[&full, &log1, &log2]);
    assert_eq!(standby.rows(), primary.rows());
    assert_eq!(standby.integrity(), "ok");
}

/// The one log a driver opened again on `primary`'s state (the agent restarted) takes, and the
/// capture gaps it reported.
fn log_after_restart(primary: &Site, state: &Path) -> (ArtifactFile, Vec<(DbId, String)>) {
    let restarted = open_driver(state, &primary.db);
    let mut v = restarted
        .take_backup(&BackupRequest {
            db: SALES,
            kind: ArtifactKind::Log,
            epoch: Epoch(1),
            created_utc: UtcMillis(T0 + 60_000),
            outbox: primary.outbox.clone(),
            progress: Default::default(),
        })
        .unwrap();
    assert_eq!(v.len(), 1);
    (v.remove(0), restarted.capture_gaps())
}

/// The driver's pins on a site's database, taken and closed (as when the agent stops).
fn drop_pins(driver: &SqliteDriver) -> Vec<Option<super::super::capture::Pin>> {
    driver.slots.iter().map(|s| s.lock().pin.take()).collect()
}

#[test]
fn a_crash_while_the_shadow_was_updated_is_repaired_from_the_same_frames() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 10);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 10, 10);
    let log1 = primary.one(ArtifactKind::Log);
    // A crash between page images written into the shadow and chain.json: the shadow's page 1
    // says the position it was being brought to (written and synced first), and the shadow
    // holds images newer than the position chain.json records.
    let state = primary.dir.path().join("state/sales");
    insert(&app, 20, 10);
    let chain = ChainState::load(&state, "sales").unwrap();
    let shadow = chain.shadow_path(&state);
    assert!(!super::super::capture::shadow_suspect(&state, &chain));
    let ahead = ((chain.position.0 + 10) as u32).to_be_bytes();
    let file = fs::OpenOptions::new().write(true).open(&shadow).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &ahead, 24).unwrap();
    assert!(super::super::capture::shadow_suspect(&state, &chain));
    // The crash came after the shadow was resized for the new pages (found by the
    // capture_mid_shadow crash point: the chain was dropped for its length).
    let len = fs::metadata(&shadow).unwrap().len();
    file.set_len(len + 3 * 4096).unwrap();
    drop(file);
    let log2 = primary.one(ArtifactKind::Log);
    let chain = ChainState::load(&state, "sales").unwrap();
    assert!(
        !super::super::capture::shadow_suspect(&state, &chain),
        "repaired: the shadow is at its recorded position again"
    );
    assert!(
        primary.driver.capture_gaps().is_empty(),
        "the same frames repaired it: no gap"
    );
    assert_eq!(log2.manifest.lsn_start, log1.manifest.lsn_end);
    assert_eq!(log2.manifest.lsn_end.0 - log2.manifest.lsn_start.0, 10);
    standby.restore_all(&[&full, &log1, &log2]);
    assert_eq!(standby.rows(), primary.rows());
}

#[test]
fn a_crash_mid_update_then_an_unseen_restart_carries_every_page() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    insert(&app, 30, 10);
    let log1 = primary.one(ArtifactKind::Log);
    let state = primary.dir.path().to_path_buf();
    drop(drop_pins(&primary.driver));
    // A crash left the marker file an older version wrote around shadow updates; while the
    // agent was down the WAL was emptied.
    fs::write(
        state
            .join("state/sales")
            .join(super::super::capture::DIRTY_FILE),
        b"x",
    )
    .unwrap();
    update(&app, 0..5, "down");
    app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    insert(&app, 40, 3);
    let (log2, gaps) = log_after_restart(&primary, &state);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (reader, pages) = pages::DeltaReader::open(&log2.path).unwrap();
    assert_eq!(
        pages.len() as u32,
        reader.header.page_count,
        "every page is carried"
    );
    standby.restore_all(&[&full, &log1, &log2]);
    assert_eq!(standby.rows(), primary.rows());
}

/// A crash of the machine loses what the shadow's file held only in the page cache: every image
/// written since its last sync (the driver syncs it at WAL resets, not at every capture).
/// `chain.state` names that sync and the boot; the first capture in a new boot writes those
/// frames again from the WAL, so the logs and a full cut from the shadow afterwards restore the
/// primary's rows exactly.
#[test]
fn a_machine_crash_that_loses_the_shadows_unsynced_images_is_repaired_from_the_wal() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    let dir = primary.dir.path().join("state/sales");
    let chain = ChainState::load(&dir, "sales").unwrap();
    assert_eq!(chain.unsynced, None, "a new shadow is synced");
    let synced_at = chain.wal;
    let shadow = chain.shadow_path(&dir);
    let on_disk = fs::read(&shadow).unwrap();
    insert(&app, 30, 20);
    update(&app, 0..10, "first");
    let log1 = primary.one(ArtifactKind::Log);
    insert(&app, 50, 20);
    let log2 = primary.one(ArtifactKind::Log);
    let mut chain = ChainState::load(&dir, "sales").unwrap();
    let unsynced = chain
        .unsynced
        .clone()
        .expect("captures leave the shadow unsynced");
    assert_eq!(unsynced.since, synced_at);
    assert!(!unsynced.boot.is_empty());
    // The machine crashes: the shadow's file is what was synced, the page cache is gone, and
    // the next start is another boot.
    drop(drop_pins(&primary.driver));
    fs::write(&shadow, &on_disk).unwrap();
    chain.unsynced = Some(chain::Unsynced {
        boot: "an earlier boot".into(),
        ..unsynced
    });
    chain.save(&dir).unwrap();
    update(&app, 20..25, "after");
    let (log3, gaps) = log_after_restart(&primary, primary.dir.path());
    assert!(gaps.is_empty(), "the WAL still held every frame: {gaps:?}");
    assert_eq!(log3.manifest.lsn_start, log2.manifest.lsn_end);
    assert_eq!(log3.manifest.lsn_end.0 - log3.manifest.lsn_start.0, 5);
    restore_and_compare(&primary, &standby, &full, &[log1, log2, log3]);
    // The shadow itself is whole again: a full cut from it restores the same rows.
    let restarted = open_driver(primary.dir.path(), &primary.db);
    let full2 = restarted
        .take_backup(&BackupRequest {
            db: SALES,
            kind: ArtifactKind::Full,
            epoch: Epoch(1),
            created_utc: UtcMillis(T0 + 120_000),
            outbox: primary.outbox.clone(),
            progress: Default::default(),
        })
        .unwrap()
        .remove(0);
    restore_and_compare(&primary, &site(), &full2, &[]);
}

/// The same crash, but the WAL started over while the machine was down: the frames are gone, so
/// the first capture compares the whole database and carries every page (the shadow's file
/// cannot be trusted), and says so.
#[test]
fn a_machine_crash_then_a_wal_restart_carries_every_page() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 30);
    let full = primary.one(ArtifactKind::Full);
    let dir = primary.dir.path().join("state/sales");
    let shadow = ChainState::load(&dir, "sales").unwrap().shadow_path(&dir);
    let on_disk = fs::read(&shadow).unwrap();
    insert(&app, 30, 20);
    let log1 = primary.one(ArtifactKind::Log);
    let mut chain = ChainState::load(&dir, "sales").unwrap();
    drop(drop_pins(&primary.driver));
    fs::write(&shadow, &on_disk).unwrap();
    let mut unsynced = chain.unsynced.clone().unwrap();
    unsynced.boot = "an earlier boot".into();
    chain.unsynced = Some(unsynced);
    chain.save(&dir).unwrap();
    update(&app, 0..5, "down");
    app.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    insert(&app, 50, 3);
    let (log2, gaps) = log_after_restart(&primary, primary.dir.path());
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(gaps[0].1.contains("machine restarted"), "{gaps:?}");
    let (reader, pages) = pages::DeltaReader::open(&log2.path).unwrap();
    assert_eq!(
        pages.len() as u32,
        reader.header.page_count,
        "every page is carried"
    );
    restore_and_compare(&primary, &standby, &full, &[log1, log2]);
}

/// The salts of the WAL header of `site`'s database (they change when SQLite starts the WAL
/// over).
fn wal_salts(site: &Site) -> Option<[u32; 2]> {
    let f = File::open(super::super::capture::wal_path(&site.db)).unwrap();
    super::super::wal::read_header(&f).unwrap().map(|h| h.salts)
}

/// Restore `full` then `logs` on `standby`, check that it holds `primary`'s rows and passes
/// `PRAGMA integrity_check`; returns the transactions the logs count.
fn restore_and_compare(
    primary: &Site,
    standby: &Site,
    full: &ArtifactFile,
    logs: &[ArtifactFile],
) -> u64 {
    let mut all: Vec<&ArtifactFile> = vec![full];
    all.extend(logs.iter());
    standby.restore_all(&all);
    assert_eq!(standby.rows(), primary.rows());
    assert_eq!(standby.integrity(), "ok");
    logs.iter()
        .map(|l| l.manifest.lsn_end.0 - l.manifest.lsn_start.0)
        .sum()
}

#[test]
fn under_a_steady_writer_the_wal_starts_over_instead_of_growing_for_ever() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 10);
    let full = primary.one(ArtifactKind::Full);
    let wal = super::super::capture::wal_path(&primary.db);
    let mut logs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut longest = 0;
    for round in 0..8 {
        insert(&app, 10 + round * 400, 400);
        seen.insert(wal_salts(&primary));
        longest = longest.max(fs::metadata(&wal).unwrap().len());
        logs.push(primary.one(ArtifactKind::Log));
    }
    assert!(seen.len() > 2, "the WAL never started over: {seen:?}");
    assert!(longest < 64 << 20, "the WAL grew to {longest} bytes");
    let total = restore_and_compare(&primary, &standby, &full, &logs);
    assert_eq!(total, 8 * 400, "every transaction counted once");
}

/// A writer that commits all the time on another connection while logs are cut: the resets
/// take the write lock between its commits, the WAL starts over under it, and every row reaches
/// the standby. (The writer pauses a millisecond every 20 rows so that a debug build's captures
/// keep up; the bench's tight loop measures the speed.)
#[test]
fn under_a_busy_writer_the_wal_starts_over_between_its_commits_and_nothing_is_lost() {
    let primary = site();
    let standby = site();
    let app = primary.wal_app();
    insert(&app, 0, 10);
    drop(app);
    let full = primary.one(ArtifactKind::Full);
    let wal = super::super::capture::wal_path(&primary.db);
    // The writer stops by itself after a few seconds or a bounded WAL, whatever the logs do.
    let writer = {
        let db = primary.db.clone();
        let wal = wal.clone();
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
            let started = std::time::Instant::now();
            let mut next = 10;
            while started.elapsed() < Duration::from_secs(3)
                && fs::metadata(&wal).map_or(0, |m| m.len()) < 512 << 20
            {
                insert(&conn, next, 1);
                next += 1;
                if next % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            next
        })
    };
    let mut logs = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    while !writer.is_finished() {
        std::thread::sleep(Duration::from_millis(100));
        logs.extend(primary.backup(ArtifactKind::Log));
        seen.insert(wal_salts(&primary));
    }
    let written = writer.join().unwrap();
    logs.extend(primary.backup(ArtifactKind::Log));
    assert!(
        seen.len() > 1,
        "the WAL never started over under the busy writer ({} rows): {seen:?}",
        written - 10
    );
    let total = restore_and_compare(&primary, &standby, &full, &logs);
    assert_eq!(
        standby.rows().len() as i64,
        written,
        "every row reached the standby"
    );
    assert_eq!(total, written as u64 - 10, "every transaction counted once");
}

/// A full backup counts its passes in the request's progress (what `/status` shows as `done`
/// of `size`): the snapshot of the live database at the chain's start, then the artifact.
#[test]
fn a_full_backup_counts_its_bytes_in_the_requests_progress() {
    let primary = site();
    let app = primary.wal_app();
    insert(&app, 0, 200);
    let progress = crate::drivers::Progress::default();
    assert_eq!(progress.get(), (0, 0));
    let made = primary
        .driver
        .take_backup(&BackupRequest {
            db: SALES,
            kind: ArtifactKind::Full,
            epoch: Epoch(1),
            created_utc: UtcMillis(T0),
            outbox: primary.outbox.clone(),
            progress: progress.clone(),
        })
        .unwrap();
    assert_eq!(made.len(), 1);
    let size = fs::metadata(&made[0].path).unwrap().len();
    assert!(size > 0);
    assert_eq!(
        progress.get(),
        (size, size),
        "the last pass, the artifact, is done"
    );
}

#[test]
fn a_probed_wal_primary_is_demoted_and_follows_the_new_one_with_its_probe_connection_kept() {
    // The probe keeps its connection between probes; the demotion switches the old primary's
    // file out of WAL mode, which any other open connection of this process would stop.
    let a = site();
    let b = site();
    let app = a.wal_app();
    insert(&app, 0, 10);
    a.driver.probe(SALES).unwrap();
    b.driver.restore(&a.one(ArtifactKind::Full)).unwrap();
    insert(&app, 10, 10);
    a.driver.probe(SALES).unwrap();
    b.driver.probe(SALES).unwrap();
    b.driver.restore(&a.one(ArtifactKind::Log)).unwrap();
    b.driver.probe(SALES).unwrap();

    insert(&app, 20, 5);
    drop(app);
    a.driver.fence(SALES).unwrap();
    a.driver.probe(SALES).unwrap();
    b.driver.restore(&a.one(ArtifactKind::Log)).unwrap();
    b.driver.promote(SALES, Epoch(2)).unwrap();
    b.driver.probe(SALES).unwrap();
    let app_b = b.wal_app();
    insert(&app_b, 100, 15);
    b.driver.probe(SALES).unwrap();
    let reverse = b.one(ArtifactKind::Log);

    a.driver.probe(SALES).unwrap();
    a.driver.restore(&reverse).unwrap();
    a.driver.probe(SALES).unwrap();
    assert_eq!(a.rows(), b.rows());
    assert_eq!(a.journal_mode(), "delete");
    assert_eq!(a.integrity(), "ok");
}

#[test]
fn a_kept_probe_connection_sees_a_database_file_replaced_behind_it() {
    let a = site();
    let app = a.wal_app();
    insert(&app, 0, 3);
    drop(app);
    a.driver.probe(SALES).unwrap();
    // Replaced by a file that is not a database: the kept connection was on the old one.
    let tmp = a.db.with_extension("new");
    std::fs::write(&tmp, vec![7u8; 8192]).unwrap();
    std::fs::rename(&tmp, &a.db).unwrap();
    let e = a.driver.probe(SALES).unwrap_err();
    assert!(e.message.contains("probing database sales"), "{e}");
    // Removed: named, not answered from the old file.
    std::fs::remove_file(&a.db).unwrap();
    let e = a.driver.probe(SALES).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
}
