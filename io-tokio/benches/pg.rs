//! WAL shipping of real PostgreSQL 15 through lifeboat versus a plain `cp` archive, same run.
//!
//! Two primary/standby pairs on loopback (`initdb --wal-segsize=1`), the same workload on each:
//! - **cp**: `archive_command = 'cp %p <archive>/%f'`, the standby's
//!   `restore_command = 'cp <archive>/%f %p'`;
//! - **lifeboat**: `archive_command = 'lifeboat wal-push …'` (durable in the spool), the driver's
//!   `collect_logs` (what the agent runs every `COLLECT_LOGS_EVERY` while it takes writes; here
//!   as fast as the loop turns) publishing each segment into the outbox with its manifest, delivery to
//!   the standby's inbox and verification (checksum against the manifest), then `restore`
//!   (served through `lifeboat wal-fetch`, which checks it again, and waited for until
//!   `pg_last_wal_replay_lsn()` passes it), shipping and restoring concurrently as an agent does.
//!
//! Each pair's standby is seeded and running; archiving is paused while the workload writes
//! `LIFEBOAT_BENCH_PG_SEGMENTS` segments (default 64 × 1 MiB); then a `sync`, and the clock
//! runs from resuming archiving until the standby has replayed the last of them. Three rounds
//! per pair, the best of each.
//!
//! Prints `bench pg_wal_segments_per_sec <N>` (lifeboat, end to end) and
//! `bench pg_vs_cp_archive_ratio <R>` (lifeboat's segments per second / cp's; higher is better),
//! plus `bench pg_cp_wal_segments_per_sec <N>`. The cp pair's `archive_command` is
//! `cp %p <archive>/%f && sync <archive>/%f`, so both sides make each segment durable before
//! PostgreSQL may recycle it.
//!
//! **The archive command alone** (issue 14): a third cluster with the default 16 MiB segments
//! archives `LIFEBOAT_BENCH_PG_PUSH_SEGMENTS` segments (default 20) with plain `cp`; then each
//! of them is archived again the way PostgreSQL's archiver does it, one process per segment
//! (`sh -c`): `cp <seg> <dir>/ && sync <dir>/<seg>` against `lifeboat wal-push <seg>` into a
//! fresh spool, three rounds alternating, each after a `sync`, the best round of each. Prints
//! `bench pg_wal_push_segments_per_sec <N>`, `bench pg_cp_sync_segments_per_sec <N>` and
//! `bench pg_wal_push_vs_cp_sync_ratio <R>`.
//!
//! **The standby's state save** (once per segment, while PostgreSQL waits for the next): a
//! record replaced in place against a whole-file replacement, the same bytes. Prints
//! `bench pg_state_save_record_us <N>`, `bench pg_state_save_whole_file_us <N>` and their ratio.
//!
//! Without PostgreSQL it says so and prints nothing.

#[allow(dead_code)]
mod common;

#[path = "../tests/pgkit/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use cluster::{psql, Cluster, ScratchDir};
use lifeboat_core::{ArtifactKind, DbId, Epoch, UtcMillis};
use lifeboat_io_tokio::drivers::postgres::wal::PgLsn;
use lifeboat_io_tokio::drivers::postgres::{PgDatabase, PostgresConfig, PostgresDriver};
use lifeboat_io_tokio::drivers::{check_bytes, ArtifactFile, BackupRequest, Driver};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const DB: DbId = DbId(0);
/// Timed rounds per pair (the best counts): which side wins a race between a standby asking for
/// the next segment and its archive receiving it (a lost one costs `RETRY_MS`) varies by run.
const ROUNDS: usize = 3;
/// The standbys' `wal_retrieve_retry_interval`, the same for both pairs.
const RETRY_MS: u64 = 200;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // PostgreSQL runs this binary as `lifeboat wal-push|wal-fetch …`.
    if matches!(
        args.get(1).map(String::as_str),
        Some("wal-push" | "wal-fetch")
    ) {
        std::process::exit(lifeboat_io_tokio::drivers::postgres::cli::run(&args[1..]));
    }
    if let Err(why) = cluster::available() {
        eprintln!("pg bench skipped: {why}");
        return;
    }
    let segments: u64 = std::env::var("LIFEBOAT_BENCH_PG_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let scratch = ScratchDir::new("bench").expect("scratch directory");
    let bin = scratch.dir("bin").join("lifeboat");
    std::fs::copy(std::env::current_exe().unwrap(), &bin).unwrap();
    set_mode(&bin, 0o755);

    let cp_secs = cp_pair(&scratch, segments);
    eprintln!("cp: {segments} segments in {cp_secs:.2}s");
    let lb_secs = lifeboat_pair(&scratch, &bin, segments);
    eprintln!("lifeboat: {segments} segments in {lb_secs:.2}s");
    let lb_rate = segments as f64 / lb_secs;
    let cp_rate = segments as f64 / cp_secs;
    println!("bench pg_wal_segments_per_sec {lb_rate:.1}");
    println!("bench pg_cp_wal_segments_per_sec {cp_rate:.1}");
    println!("bench pg_vs_cp_archive_ratio {:.3}", lb_rate / cp_rate);

    let push_segments: u64 = std::env::var("LIFEBOAT_BENCH_PG_PUSH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    archive_command_alone(&scratch, &bin, push_segments);
    state_save(&scratch);
}

/// The standby's state saved after every segment: a record replaced in place (one positioned
/// write, one `fdatasync`) against the whole-file replacement it used before (temporary file,
/// fsync, rename, directory fsync), the same bytes, 300 saves a round, three rounds alternating,
/// the best of each.
fn state_save(s: &ScratchDir) {
    let dir = s.dir("state-save");
    let (rec, whole) = (dir.join("state.rec"), dir.join("state.json"));
    let bytes = |at: u64| {
        format!(
            r#"{{"format_version":1,"restored_to":{at},"published":[],"timelines":[{{"epoch":1,"timeline":1}}]}}"#
        )
    };
    const SAVES: u64 = 300;
    let (mut best_rec, mut best_whole) = (Duration::MAX, Duration::MAX);
    for round in 0..ROUNDS as u64 {
        let t = Instant::now();
        for i in 0..SAVES {
            lifeboat_io_tokio::record::write(&rec, bytes(round * SAVES + i).as_bytes()).unwrap();
        }
        best_rec = best_rec.min(t.elapsed() / SAVES as u32);
        let t = Instant::now();
        for i in 0..SAVES {
            lifeboat_io_tokio::durable::write_durably(&whole, bytes(round * SAVES + i).as_bytes())
                .unwrap();
        }
        best_whole = best_whole.min(t.elapsed() / SAVES as u32);
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("bench pg_state_save_record_us {:.0}", us(best_rec));
    println!("bench pg_state_save_whole_file_us {:.0}", us(best_whole));
    println!(
        "bench pg_state_save_whole_file_over_record_ratio {:.2}",
        us(best_whole) / us(best_rec)
    );
}

/// `cp && sync` against `lifeboat wal-push`, each segment in its own process (see the module
/// documentation).
fn archive_command_alone(s: &ScratchDir, bin: &Path, segments: u64) {
    let root = s.dir("push");
    let archive = archive_dir(&root);
    let port = cluster::free_port();
    let c = Cluster::initdb(&root.join("data"), port, 16).unwrap();
    append(
        &c.data.join("postgresql.conf"),
        &format!(
            "archive_mode = on\narchive_command = 'cp %p {}/%f'\n",
            archive.display()
        ),
    );
    c.start().unwrap();
    workload(port, segments * 16);
    let names = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
            })
            .collect();
        v.sort();
        v
    };
    let t = Instant::now();
    while (names(&archive).len() as u64) < segments {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "PostgreSQL did not archive {segments} segments"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    let segs: Vec<PathBuf> = names(&archive)
        .into_iter()
        .take(segments as usize)
        .collect();
    let sh = |script: &str, args: &[&Path]| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "{script} failed");
    };
    let (mut best_cp, mut best_push) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        let dest = root.join(format!("cp-{round}"));
        std::fs::create_dir_all(&dest).unwrap();
        settle();
        let t = Instant::now();
        for seg in &segs {
            sh(
                r#"cp "$1" "$2"/ && sync "$2/$(basename "$1")""#,
                &[seg, &dest],
            );
        }
        best_cp = best_cp.min(t.elapsed().as_secs_f64());

        let spool = root.join(format!("spool-{round}"));
        let config = common::wal_push_spool(&spool).unwrap();
        settle();
        let t = Instant::now();
        for seg in &segs {
            sh(r#""$1" wal-push "$2" --config "$3""#, &[bin, seg, &config]);
        }
        best_push = best_push.min(t.elapsed().as_secs_f64());
        assert_eq!(
            std::fs::read_dir(spool.join("push")).unwrap().count(),
            segs.len(),
            "wal-push archived every segment"
        );
    }
    let n = segs.len() as f64;
    eprintln!(
        "archive command alone, {n} segments of 16 MiB: cp && sync {best_cp:.2}s, wal-push {best_push:.2}s"
    );
    println!("bench pg_wal_push_segments_per_sec {:.1}", n / best_push);
    println!("bench pg_cp_sync_segments_per_sec {:.1}", n / best_cp);
    println!(
        "bench pg_wal_push_vs_cp_sync_ratio {:.3}",
        best_cp / best_push
    );
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn lsn(port: u16, sql: &str) -> u64 {
    PgLsn::parse(&psql(port, sql).unwrap()[0]).unwrap().0
}

/// Write about `segments` segments of WAL in one transaction, then switch: returns the end.
fn workload(port: u16, segments: u64) -> u64 {
    psql(
        port,
        "create table if not exists t(id bigserial primary key, v text)",
    )
    .unwrap();
    psql(
        port,
        &format!(
            "insert into t(v) select md5(g::text) || repeat('x', 200) \
             from generate_series(1, {}) g",
            segments * 3300
        ),
    )
    .unwrap();
    lsn(port, "select pg_switch_wal()")
}

fn pause_archiving(port: u16) {
    psql(port, "alter system set archive_command = 'false'").unwrap();
    psql(port, "select pg_reload_conf()").unwrap();
}

fn resume_archiving(port: u16) {
    psql(port, "alter system reset archive_command").unwrap();
    psql(port, "select pg_reload_conf()").unwrap();
}

fn wait_replayed(port: u16, end: u64, within: Duration) {
    let t = Instant::now();
    while lsn(port, "select coalesce(pg_last_wal_replay_lsn(), '0/0')") < end {
        assert!(
            t.elapsed() < within,
            "the standby on {port} did not catch up"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The baseline: `cp` to an archive directory and back.
fn cp_pair(s: &ScratchDir, segments: u64) -> f64 {
    let root = s.dir("cp");
    let archive = archive_dir(&root);
    let pport = cluster::free_port();
    let primary = Cluster::initdb(&root.join("primary"), pport, 1).unwrap();
    let conf = format!(
        "archive_mode = on\narchive_command = 'cp %p {a}/%f && sync {a}/%f'\n\
         restore_command = 'cp {a}/%f %p'\nwal_retrieve_retry_interval = {RETRY_MS}ms\n\
         recovery_prefetch = off\nrecovery_init_sync_method = syncfs\n",
        a = archive.display()
    );
    append(&primary.data.join("postgresql.conf"), &conf);
    primary.start().unwrap();
    // The standby: a base backup, standby.signal, its own port.
    let sport = cluster::free_port();
    let sdata = root.join("standby");
    let out = std::process::Command::new(cluster::bin_dir().join("pg_basebackup"))
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-X",
            "fetch",
            "-c",
            "fast",
        ])
        .arg("-p")
        .arg(pport.to_string())
        .arg("-D")
        .arg(&sdata)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    append(&sdata.join("postgresql.conf"), &format!("port = {sport}\n"));
    std::fs::write(sdata.join("standby.signal"), "").unwrap();
    if let Some((name, _)) = cluster::server_user() {
        let st = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{name}:"))
            .arg(&sdata)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let standby = Cluster::adopt(&sdata, sport).unwrap();
    standby.start().unwrap();
    best_round(pport, segments, |end| {
        wait_replayed(sport, end, Duration::from_secs(300))
    })
}

/// Nothing dirty before a timed round: a journal commit also writes back whatever else is
/// dirty (a build, the archive PostgreSQL just filled, the round or pair before), which
/// whichever side's fsyncs it lands on would pay.
fn settle() {
    let st = std::process::Command::new("sync").status().unwrap();
    assert!(st.success(), "sync failed");
}

/// `ROUNDS` times: archiving paused, the workload written, archiving resumed, and the time
/// until `catch_up(end)` returns; the best.
fn best_round(pport: u16, segments: u64, mut catch_up: impl FnMut(u64)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        pause_archiving(pport);
        let end = workload(pport, segments);
        settle();
        let t = Instant::now();
        resume_archiving(pport);
        catch_up(end);
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

/// `<root>/archive`, created and given to PostgreSQL's user (its `archive_command` writes there).
fn archive_dir(root: &Path) -> PathBuf {
    let archive = root.join("archive");
    std::fs::create_dir_all(&archive).unwrap();
    if let Some((_, u)) = cluster::server_user() {
        std::os::unix::fs::chown(&archive, Some(u.uid), Some(u.gid)).unwrap();
    }
    archive
}

fn append(path: &Path, text: &str) {
    let mut t = std::fs::read_to_string(path).unwrap();
    t.push('\n');
    t.push_str(text);
    std::fs::write(path, t).unwrap();
}

fn driver(root: &Path, port: u16, bin: &Path) -> PostgresDriver {
    let mut cfg = PostgresConfig::new(
        root.join("spool"),
        vec![PgDatabase::new("bench", root.join("data"), port)],
    );
    cfg.bin_dir = cluster::bin_dir();
    cfg.lifeboat_bin = bin.to_path_buf();
    cfg.retrieve_retry_ms = RETRY_MS;
    cfg.archive_wait_ms = 100;
    PostgresDriver::open(cfg).unwrap()
}

fn take(d: &PostgresDriver, kind: ArtifactKind, outbox: &Path) -> Vec<ArtifactFile> {
    d.take_backup(&BackupRequest {
        db: DB,
        kind,
        epoch: Epoch(1),
        created_utc: UtcMillis(1_795_316_700_000),
        outbox: outbox.to_path_buf(),
        progress: Default::default(),
    })
    .unwrap()
}

/// What the agent does every `COLLECT_LOGS_EVERY` while the primary takes writes: publish the
/// segments PostgreSQL archived (here as fast as the loop turns).
fn collect(d: &PostgresDriver, outbox: &Path) -> Vec<ArtifactFile> {
    d.collect_logs(&BackupRequest {
        db: DB,
        kind: ArtifactKind::Log,
        epoch: Epoch(1),
        created_utc: UtcMillis(1_795_316_700_000),
        outbox: outbox.to_path_buf(),
        progress: Default::default(),
    })
    .unwrap()
}

/// Deliver into the inbox and verify against the manifest (the transport's job).
fn ship(arts: &[ArtifactFile], inbox: &Path) -> Vec<ArtifactFile> {
    arts.iter()
        .map(|a| {
            let copy = cluster::deliver(a, inbox).unwrap();
            check_bytes(&copy).expect("verified");
            copy
        })
        .collect()
}

/// lifeboat: wal-push, collect_logs, deliver + verify, restore through wal-fetch.
fn lifeboat_pair(s: &ScratchDir, bin: &Path, segments: u64) -> f64 {
    let proot = s.dir("lb-primary");
    let sroot = s.dir("lb-standby");
    let pport = cluster::free_port();
    let c = Cluster::initdb(&proot.join("data"), pport, 1).unwrap();
    std::mem::forget(c); // the scratch guard stops it
    let pd = driver(&proot, pport, bin);
    pd.unfence(DB, Epoch(1)).unwrap();
    let sd = driver(&sroot, cluster::free_port(), bin);
    let outbox: PathBuf = s.dir("lb-primary/outbox");
    let inbox: PathBuf = s.dir("lb-standby/inbox");
    let full = ship(&take(&pd, ArtifactKind::Full, &outbox), &inbox);
    let mut position = sd.restore(&full[0]).unwrap().0;
    // Ship what the base backup left behind, so only the workload is timed.
    for a in ship(&take(&pd, ArtifactKind::Log, &outbox), &inbox) {
        if a.manifest.lsn_end.0 > position && a.manifest.lsn_start.0 <= position {
            position = sd.restore(&a).unwrap().0;
        }
    }
    let mut pd = Some(pd);
    best_round(pport, segments, |end| {
        let t = Instant::now();
        // Shipping and restoring run concurrently, as in an agent.
        let (tx, rx) = mpsc::channel::<ArtifactFile>();
        let (outbox, inbox, p) = (outbox.clone(), inbox.clone(), pd.take().unwrap());
        let shipper = std::thread::spawn(move || {
            let mut shipped_to = 0;
            while shipped_to < end {
                for a in ship(&collect(&p, &outbox), &inbox) {
                    shipped_to = shipped_to.max(a.manifest.lsn_end.0);
                    tx.send(a).unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            p
        });
        let mut pending: Vec<ArtifactFile> = Vec::new();
        while position < end {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "lifeboat did not catch up"
            );
            pending.extend(rx.recv_timeout(Duration::from_secs(60)));
            pending.sort_by_key(|a| a.manifest.lsn_start);
            while let Some(i) = pending
                .iter()
                .position(|a| a.manifest.lsn_start.0 <= position && position < a.manifest.lsn_end.0)
            {
                let a = pending.remove(i);
                position = sd.restore(&a).unwrap().0;
            }
            pending.retain(|a| a.manifest.lsn_end.0 > position);
        }
        pd = Some(shipper.join().unwrap());
    })
}
