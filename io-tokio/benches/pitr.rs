//! Point-in-time restore of SQLite from the archive (issue 15): the time to build a point of a
//! 1 GiB database from its full and 1,000 logs, next to `cp` + `sync` of the database file (the
//! least a restore of a full copy costs).
//!
//! Run with `cargo bench -p lifeboat-io-tokio --bench pitr` (not in CI). Settings:
//! `LIFEBOAT_BENCH_PITR_MIB` (default 1024), `LIFEBOAT_BENCH_PITR_LOGS` (default 1000),
//! `LIFEBOAT_BENCH_ROUNDS` (default 3; best of each), `LIFEBOAT_BENCH_DIR` (where the files go;
//! default the system temp directory).
//!
//! The database is generated in WAL mode: a table of 1 MiB random blobs up to the size, then a
//! table of small rows. The SQLite driver takes a full backup, then each of the logs follows one
//! transaction that inserts ten rows and rewrites a 64 KiB blob (about 20 pages per log). The
//! artifacts are put into an archive directory as the agent does; the restore picks the point
//! with the core's rule (`archive::points`) and builds it with `sqlite::restore_point`, the code
//! behind `lifeboat restore --at` (every artifact checked against its manifest, the page images
//! written, `PRAGMA integrity_check` on the result). Prints:
//! - `bench pitr_restore_s_<size>_<logs>logs` and `bench pitr_cp_s_<size>`;
//! - `bench pitr_vs_cp_ratio` (cp time / restore time; higher is better);
//! - `bench pitr_integrity_check_s` (the check's share, timed on the result alone).

use anyhow::{ensure, Context, Result};
use lifeboat_core::archive::{self as ca, At};
use lifeboat_core::{ArtifactKind, DbId, Epoch, UtcMillis};
use lifeboat_io_tokio::archive::Archive;
use lifeboat_io_tokio::drivers::manifest as dm;
use lifeboat_io_tokio::drivers::{
    sqlite, BackupRequest, DatabaseSpec, Driver, Progress, SqliteConfig, SqliteDriver,
};
use rand::{RngCore, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn env_or(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn sync() -> Result<()> {
    ensure!(Command::new("sync").status()?.success(), "sync failed");
    Ok(())
}

/// Drop the page cache where allowed (root), so reads come from the disk as in a real restore.
fn drop_caches() {
    let _ = sync();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn generate(db: &Path, mib: usize) -> Result<()> {
    let c = rusqlite::Connection::open(db)?;
    c.execute_batch(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
         CREATE TABLE filler(id INTEGER PRIMARY KEY, b BLOB NOT NULL);
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut blob = vec![0u8; 1 << 20];
    for chunk in 0..mib.div_ceil(64) {
        c.execute_batch("BEGIN")?;
        for i in 0..64.min(mib - chunk * 64) {
            rng.fill_bytes(&mut blob);
            c.execute(
                "INSERT INTO filler(id, b) VALUES (?1, ?2)",
                rusqlite::params![(chunk * 64 + i) as i64, blob],
            )?;
        }
        c.execute_batch("COMMIT")?;
    }
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")?;
    Ok(())
}

fn main() -> Result<()> {
    let mib = env_or("LIFEBOAT_BENCH_PITR_MIB", 1024)?;
    let logs = env_or("LIFEBOAT_BENCH_PITR_LOGS", 1000)?;
    ensure!(mib >= 1 && logs >= 1, "need at least 1 MiB and 1 log");
    let base = match std::env::var_os("LIFEBOAT_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let d = base.path();
    let db = d.join("bench.db");
    eprintln!("generating a {mib} MiB database in {}", db.display());
    generate(&db, mib)?;
    let driver = SqliteDriver::open(
        SqliteConfig::new(d.join("state")),
        vec![DatabaseSpec {
            name: "bench".into(),
            path: db.clone(),
        }],
    )?;
    let outbox = d.join("outbox");
    std::fs::create_dir_all(&outbox)?;
    let mut t = 1_795_392_000_000i64;
    let mut backup = |kind: ArtifactKind| -> Result<()> {
        t += 1_000;
        let out = driver.take_backup(&BackupRequest {
            db: DbId(0),
            kind,
            epoch: Epoch(1),
            created_utc: UtcMillis(t),
            outbox: outbox.clone(),
            progress: Progress::default(),
        })?;
        ensure!(
            !out.is_empty(),
            "the driver published nothing for a {kind:?}"
        );
        Ok(())
    };
    let full_at = Instant::now();
    backup(ArtifactKind::Full)?;
    eprintln!("full backup: {:.1} s", full_at.elapsed().as_secs_f64());
    let w = rusqlite::Connection::open(&db)?;
    w.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut small = vec![0u8; 64 << 10];
    let logs_at = Instant::now();
    for i in 0..logs {
        rng.fill_bytes(&mut small);
        w.execute_batch("BEGIN")?;
        for j in 0..10 {
            w.execute(
                "INSERT INTO t(id, v) VALUES (?1, 'row ' || ?1)",
                [(i * 10 + j) as i64],
            )?;
        }
        w.execute(
            "UPDATE filler SET b = ?1 WHERE id = ?2",
            rusqlite::params![small, (i % mib.max(1)) as i64],
        )?;
        w.execute_batch("COMMIT")?;
        backup(ArtifactKind::Log)?;
    }
    drop(w);
    eprintln!("{logs} logs: {:.1} s", logs_at.elapsed().as_secs_f64());
    // Into an archive, as the recovery site's agent puts them.
    let archive = Archive::new(d.join("archive"));
    let found = lifeboat_io_tokio::agent::files::scan(&outbox);
    for (meta, path) in &found {
        archive.put(path, meta, "bench")?;
    }
    let entries: Vec<_> = archive.scan("bench").into_iter().map(|(m, _)| m).collect();
    let files: std::collections::BTreeMap<_, _> = archive
        .scan("bench")
        .into_iter()
        .map(|(m, p)| (m.key, p))
        .collect();
    let points = ca::points(&entries);
    let point = ca::point_at(points.all(), At::Latest).context("no point")?;
    let point_chain = points.chain(point);
    ensure!(
        point_chain.len() == logs + 1,
        "the newest point's chain has {} artifacts, expected the full and {logs} logs",
        point_chain.len()
    );
    let size_label = if mib >= 1024 && mib % 1024 == 0 {
        format!("{}gib", mib / 1024)
    } else {
        format!("{mib}mib")
    };

    let chain: Vec<_> = point_chain
        .iter()
        .map(|m| dm::read_manifest(&files[&m.key]).map_err(anyhow::Error::from))
        .collect::<Result<_>>()?;
    // The two alternate, best of each (the machine's other work hits both alike); caches are
    // dropped before each where that is allowed.
    let rounds = env_or("LIFEBOAT_BENCH_ROUNDS", 3)?.max(1);
    let (cp_to, into) = (d.join("cp.db"), d.join("restored.db"));
    let (mut cp_s, mut restore_s) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        let _ = std::fs::remove_file(&cp_to);
        let _ = std::fs::remove_file(&into);
        drop_caches();
        let at = Instant::now();
        ensure!(
            Command::new("cp").arg(&db).arg(&cp_to).status()?.success(),
            "cp failed"
        );
        sync()?;
        let cp = at.elapsed().as_secs_f64();
        drop_caches();
        let at = Instant::now();
        let r = sqlite::restore_point("bench", &chain, &into, None, &Progress::default())?;
        let restore = at.elapsed().as_secs_f64();
        ensure!(r.applied == logs + 1);
        eprintln!("round {round}: cp + sync {cp:.2} s, restore {restore:.2} s");
        cp_s = cp_s.min(cp);
        restore_s = restore_s.min(restore);
    }
    // The rows match the primary's.
    let count = |p: &Path| -> Result<i64> {
        let c = rusqlite::Connection::open(p)?;
        Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
    };
    ensure!(count(&into)? == count(&db)?, "the restored copy differs");
    // The integrity check's share, on the result alone.
    let at = Instant::now();
    let c = rusqlite::Connection::open(&into)?;
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    ensure!(ok == "ok");
    let check_s = at.elapsed().as_secs_f64();
    eprintln!(
        "{size_label}, {logs} logs: restore {restore_s:.2} s (check {check_s:.2} s), cp + sync \
         {cp_s:.2} s"
    );
    println!("bench pitr_restore_s_{size_label}_{logs}logs {restore_s:.3}");
    println!("bench pitr_cp_s_{size_label} {cp_s:.3}");
    println!("bench pitr_vs_cp_ratio {:.3}", cp_s / restore_s);
    println!("bench pitr_integrity_check_s {check_s:.3}");
    Ok(())
}
