//! SQLite in WAL mode, side by side with Litestream (issue 18). Real processes on loopback, the
//! same writer, the same databases, the tools one after the other for each size.
//!
//! Run with `cargo bench -p lifeboat-io-tokio --bench sqlite_peers` (about 3 to 4 minutes a
//! size; not run in CI). Settings:
//! - `LIFEBOAT_BENCH_SQLITE_SIZES`: database sizes in MiB, comma separated (default
//!   `10,200,1024`);
//! - `LIFEBOAT_BENCH_SQLITE_RUN_S`: seconds of steady writes measured per size and tool once
//!   protection is established (default 60);
//! - `LIFEBOAT_BENCH_SQLITE_TIGHT_S`: seconds of each tight-loop writer measure (default 10);
//! - `LIFEBOAT_BENCH_SQLITE_ROUNDS`: rounds per size (default 1); the tools alternate, each
//!   round's figures go to stderr and each printed figure is the median over the rounds (this
//!   machine's per-minute CPU figures vary by a third between runs);
//! - `LIFEBOAT_BENCH_SQLITE_LOG`: the agents' log filter (default `warn`; logs go to files in the
//!   run's temporary directory); `LIFEBOAT_BENCH_SQLITE_KEEP=1` keeps that directory.
//!
//! **Databases.** Generated under the temporary directory: a `filler` table of 1 MiB random
//! blobs (written in a few big transactions with `journal_mode=OFF` and `synchronous=OFF`) up to
//! the size, an empty table `t(seq INTEGER PRIMARY KEY, ts INTEGER)`, then `journal_mode=WAL`.
//! Each tool gets a fresh copy of the same file, fsynced before the writer starts (else the
//! first checkpoint's fsync writes the whole copy back and stalls a commit).
//!
//! **The writer.** One row per transaction into `t` at 100 tx/s (a fixed schedule that does not
//! catch up in bursts), `synchronous=NORMAL` (what WAL applications and Litestream's docs use),
//! `busy_timeout` 5 s; each row carries its sequence number and its commit timestamp. The bench
//! keeps each commit's instant and duration in memory. It runs before the tool starts, so the
//! time to protection is measured under load.
//!
//! **lifeboat.** An arbiter, a primary agent and a recovery agent (the demo's loopback settings:
//! a log every second; `full_every_ms` raised to a day, so that the steady window sees only
//! logs, as in production). Printed, with `<size>` such as `10mib` or `1gib`:
//! - `sqlite_protected_s_<size>`: from the agents' start to the recovery site's status showing
//!   `databases[0].restored_lsn` (the first full restored), with the writer already running;
//! - `sqlite_lag_p50_ms_<size>` / `sqlite_lag_p99_ms_<size>`: commit to visible in the recovery
//!   copy, over every row of the steady window. The recovery database is opened read-only every
//!   20 ms and `max(seq)` read; a row's lag is the first poll that saw it minus the instant its
//!   commit returned;
//! - `sqlite_primary_cpu_s_per_min_<size>`: the primary agent's CPU (utime + stime of
//!   `/proc/<pid>/stat`, in `getconf CLK_TCK` ticks) over the steady window, per minute;
//! - `sqlite_primary_write_mib_per_min_<size>`: the primary agent's `write_bytes` of
//!   `/proc/<pid>/io` over the window (`wchar` when `write_bytes` is missing; stderr says which);
//! - `sqlite_primary_wchar_mib_per_min_<size>`: the same window's `wchar` (bytes passed to
//!   write calls): `write_bytes` counts every page-cache page a write dirties, so many small
//!   synced appends (the engine journal's) weigh far more there than their size;
//! - `sqlite_worst_commit_ms_<size>`: the slowest commit of the 100 tx/s writer in the window;
//! - `sqlite_writer_ratio_<size>`: after the window, a tight-loop writer (same settings, no
//!   sleep) for `TIGHT_S` with lifeboat running, over the same writer on another fresh copy with
//!   no replication measured just before (baseline, tool, baseline, tool: alternating).
//!
//! **Litestream** (when `litestream` is on the PATH; otherwise `bench litestream_skipped
//! <reason>`): `litestream replicate <db> file://<dir>` with its defaults (1 s sync). The window
//! starts once the replica holds its first level-0 file and its level-9 snapshot (printed as
//! `litestream_protected_s_<size>`, for reference). Printed: `litestream_lag_p50_ms_<size>`,
//! `litestream_lag_p99_ms_<size>`, `litestream_cpu_s_per_min_<size>`,
//! `litestream_write_mib_per_min_<size>`, `litestream_wchar_mib_per_min_<size>`,
//! `litestream_worst_commit_ms_<size>`,
//! `litestream_writer_ratio_<size>`, measured as above except for visibility:
//!
//! *Litestream's lag, without restores.* A `litestream restore` every 20 ms is not possible (it
//! takes longer than that, and for 1 GiB seconds). Instead, the point at which a restore would
//! include a row: the replica's level-0 LTX files (`<replica>/ltx/0/*.ltx`, written to a `.tmp`
//! name and renamed, so a visible name is a complete file) each carry in their header the range
//! of the SQLite WAL they hold: `WALOffset` (u64 at byte 48), `WALSize` (u64 at 56) and the WAL's
//! salts (u32 at 64 and 68), all big-endian. After each commit the writer reads the WAL index
//! header of the `-shm` file (`mxFrame`, the last valid frame, at byte 16; the salts at byte 32,
//! copied raw from the WAL header): the commit ends at `32 + mxFrame × (24 + page size)` in the
//! WAL generation of those salts. A row is visible at the replica when the bench's poll (every
//! 20 ms) first finds a level-0 file of the same generation whose `WALOffset + WALSize` reaches
//! that end, or a file of a later generation (SQLite adds one to salt-1 at each WAL restart).
//! This measures arrival of the bytes in the replica, not an applied copy, so it favours
//! Litestream: lifeboat's figure includes applying the log and seeing it through SQLite.
//!
//! **Ratios** (lifeboat over Litestream): `sqlite_lag_p50_vs_litestream_<size>`,
//! `sqlite_lag_p99_vs_litestream_<size>`, `sqlite_cpu_vs_litestream_<size>`,
//! `sqlite_write_vs_litestream_<size>`, `sqlite_writer_ratio_vs_litestream_<size>`.
//!
//! **Targets** (issue 18): the primary's CPU and bytes written per minute at 100 tx/s within 2×
//! between 10 MiB and 1 GiB, and at most Litestream's; lag p50 ≤ 0.6 s and p99 ≤ 1.1 s at every
//! size; the writer at ≥ 0.8× of unreplicated WAL; no commit stall over 100 ms; 1 GiB protected
//! within 60 s.

mod common;

use common::{status, Procs};
use lifeboat_io_tokio::demo::{arbiter_toml, site_toml, SitePorts};
use lifeboat_io_tokio::status::doc::quantile;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
/// The steady writer's period: 100 tx/s.
const PERIOD: Duration = Duration::from_millis(10);
/// How often the copies are looked at.
const POLL: Duration = Duration::from_millis(20);
/// Longest wait for the rows of the window to show at the copy after the writer stopped.
const DRAIN: Duration = Duration::from_secs(15);
/// Longest wait for protection.
const PROTECT_WITHIN: Duration = Duration::from_secs(600);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn label(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}gib", mib / 1024)
    } else {
        format!("{mib}mib")
    }
}

fn bench(name: &str, value: impl std::fmt::Display) {
    println!("bench {name} {value}");
}

/// The figures of one tool at one size. `cpu`/`write` name the CPU and bytes-written figures
/// (`sqlite_primary_cpu_...`, `litestream_cpu_...`, `litestream_write_mib_...`).
fn print_figures(tool: &str, cpu: &str, write: &str, size: &str, f: &Figures) {
    let written = if write.is_empty() {
        "primary_write_"
    } else {
        write
    };
    bench(
        &format!("{tool}_protected_s_{size}"),
        format!("{:.1}", f.protected_s),
    );
    bench(&format!("{tool}_lag_p50_ms_{size}"), f.lag_p50);
    bench(&format!("{tool}_lag_p99_ms_{size}"), f.lag_p99);
    bench(
        &format!("{tool}_{cpu}cpu_s_per_min_{size}"),
        format!("{:.2}", f.cpu_per_min),
    );
    bench(
        &format!("{tool}_{written}mib_per_min_{size}"),
        format!("{:.2}", f.write_mib_per_min),
    );
    bench(
        &format!("{tool}_{cpu}wchar_mib_per_min_{size}"),
        format!("{:.2}", f.wchar_mib_per_min),
    );
    bench(
        &format!("{tool}_writer_ratio_{size}"),
        format!("{:.2}", f.writer_ratio),
    );
    bench(
        &format!("{tool}_worst_commit_ms_{size}"),
        format!("{:.1}", f.worst_commit_ms),
    );
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "inf".into()
    }
}

// ---- databases ----

/// A database of about `mib` MiB in WAL mode: 1 MiB random blobs and the writer's empty table.
fn generate(path: &Path, mib: u64) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    c.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;
         CREATE TABLE filler(id INTEGER PRIMARY KEY, b BLOB NOT NULL);
         CREATE TABLE t(seq INTEGER PRIMARY KEY, ts INTEGER NOT NULL);",
    )?;
    let mut left = mib.saturating_sub(1).max(1);
    while left > 0 {
        let n = left.min(64);
        c.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1)
             INSERT INTO filler(b) SELECT randomblob(1048576) FROM c",
            [n as i64],
        )?;
        left -= n;
    }
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    Ok(())
}

// ---- the writers ----

/// One commit of the steady writer.
#[derive(Clone, Copy)]
struct Commit {
    seq: i64,
    at: Instant,
    took: Duration,
    /// Salt-1 of the WAL generation and the byte offset in the WAL where the commit ends.
    wal: Option<(u32, u64)>,
}

fn open_writer(db: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(db)?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.execute_batch("PRAGMA synchronous=NORMAL;")?;
    Ok(c)
}

/// The WAL index header of `-shm`: (salt-1, end of the last valid frame in the WAL).
fn wal_end(shm: &File, page_size: u64) -> Option<(u32, u64)> {
    let mut h = [0u8; 48];
    shm.read_exact_at(&mut h, 0).ok()?;
    let mx = u32::from_ne_bytes(h[16..20].try_into().ok()?) as u64;
    let salt1 = u32::from_be_bytes(h[32..36].try_into().ok()?);
    Some((salt1, 32 + mx * (24 + page_size)))
}

struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<Mutex<Vec<Commit>>>,
    errors: Arc<Mutex<u64>>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(db: &Path) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(0u64));
        let handle = {
            let (db, stop, commits, errors) = (
                db.to_path_buf(),
                stop.clone(),
                commits.clone(),
                errors.clone(),
            );
            std::thread::spawn(move || {
                let c = open_writer(&db).expect("the writer opens the database");
                let page_size: u64 = c
                    .query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0))
                    .unwrap() as u64;
                let mut seq: i64 = c
                    .query_row("SELECT coalesce(max(seq), 0) FROM t", [], |r| r.get(0))
                    .unwrap();
                let mut shm: Option<File> = None;
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next = next.max(Instant::now() - PERIOD) + PERIOD;
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    let t0 = Instant::now();
                    match c.execute(
                        "INSERT INTO t(seq, ts) VALUES (?1, ?2)",
                        rusqlite::params![seq + 1, ts],
                    ) {
                        Ok(_) => {
                            let at = Instant::now();
                            seq += 1;
                            if shm.is_none() {
                                shm = File::open(format!("{}-shm", db.display())).ok();
                            }
                            let wal = shm.as_ref().and_then(|f| wal_end(f, page_size));
                            commits.lock().unwrap().push(Commit {
                                seq,
                                at,
                                took: at - t0,
                                wal,
                            });
                        }
                        Err(e) => {
                            let mut n = errors.lock().unwrap();
                            if *n == 0 {
                                eprintln!("  writer: a commit failed: {e}");
                            }
                            *n += 1;
                        }
                    }
                }
            })
        };
        Writer {
            stop,
            commits,
            errors,
            handle: Some(handle),
        }
    }

    fn stop(&mut self) -> Vec<Commit> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let n = *self.errors.lock().unwrap();
        if n > 0 {
            eprintln!("  writer: {n} commits failed");
        }
        std::mem::take(&mut *self.commits.lock().unwrap())
    }

    fn since(&self, from: Instant) -> usize {
        let c = self.commits.lock().unwrap();
        c.partition_point(|x| x.at < from)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Transactions a second of a writer without pause for `dur`.
fn tight(db: &Path, dur: Duration) -> f64 {
    let c = open_writer(db).expect("the tight writer opens the database");
    let mut stmt = c
        .prepare("INSERT INTO t(ts) VALUES (?1)")
        .expect("prepare the insert");
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < dur {
        if stmt.execute([n as i64]).is_ok() {
            n += 1;
        }
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

// ---- visibility ----

/// Polls something every `POLL` and records (when, key) each time the key grows.
struct Watch<K: Copy + Send + 'static> {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, K)>>>,
    handle: Option<JoinHandle<()>>,
}

impl<K: Copy + Send + 'static> Watch<K> {
    fn start(mut look: impl FnMut() -> Vec<K> + Send + 'static) -> Watch<K> {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handle = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let keys = look();
                    let now = Instant::now();
                    seen.lock()
                        .unwrap()
                        .extend(keys.into_iter().map(|k| (now, k)));
                    std::thread::sleep(POLL);
                }
            })
        };
        Watch {
            stop,
            seen,
            handle: Some(handle),
        }
    }

    fn seen(&self) -> Vec<(Instant, K)> {
        self.seen.lock().unwrap().clone()
    }
}

impl<K: Copy + Send + 'static> Drop for Watch<K> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The highest sequence number in the recovery copy, read-only, each time it grows.
fn watch_copy(db: PathBuf) -> Watch<i64> {
    let mut best = 0i64;
    Watch::start(move || {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let Ok(c) = Connection::open_with_flags(&db, flags) else {
            return Vec::new();
        };
        match c.query_row("SELECT coalesce(max(seq), 0) FROM t", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(m) if m > best => {
                best = m;
                vec![m]
            }
            _ => Vec::new(),
        }
    })
}

/// A WAL position (salt-1, end offset) covers another when it is further in the same
/// generation or in a later one.
fn covers(file: (u32, u64), row: (u32, u64)) -> bool {
    if file.0 == row.0 {
        file.1 >= row.1
    } else {
        (file.0.wrapping_sub(row.0) as i32) > 0
    }
}

/// The WAL range of a level-0 LTX file's header: (salt-1, WALOffset + WALSize).
fn ltx_wal_end(path: &Path) -> Option<(u32, u64)> {
    let mut h = [0u8; 100];
    File::open(path).ok()?.read_exact(&mut h).ok()?;
    if &h[0..4] != b"LTX1" {
        return None;
    }
    let off = u64::from_be_bytes(h[48..56].try_into().ok()?);
    let size = u64::from_be_bytes(h[56..64].try_into().ok()?);
    let salt1 = u32::from_be_bytes(h[64..68].try_into().ok()?);
    (size > 0).then_some((salt1, off + size))
}

/// New level-0 files of a Litestream file replica, in TXID order (their names).
fn watch_replica(dir: PathBuf) -> Watch<(u32, u64)> {
    let mut known = BTreeSet::new();
    let mut best: Option<(u32, u64)> = None;
    Watch::start(move || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".ltx") && !known.contains(n))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            let Some(k) = ltx_wal_end(&dir.join(&n)) else {
                continue; // not readable yet: next poll
            };
            known.insert(n);
            if best.is_none_or(|b| covers(k, b) && k != b) {
                best = Some(k);
                out.push(k);
            }
        }
        out
    })
}

/// Lags (ms) of `rows` given when each key was first seen; rows never seen are counted apart.
fn lags<K: Copy>(
    rows: &[Commit],
    seen: &[(Instant, K)],
    key: impl Fn(&Commit) -> Option<K>,
    covers: impl Fn(K, K) -> bool,
) -> (Vec<u64>, usize) {
    let mut out = Vec::with_capacity(rows.len());
    let mut missing = 0;
    let mut j = 0;
    for r in rows {
        let Some(k) = key(r) else {
            missing += 1;
            continue;
        };
        while j < seen.len() && !covers(seen[j].1, k) {
            j += 1;
        }
        match seen.get(j) {
            Some((t, _)) => out.push(t.saturating_duration_since(r.at).as_millis() as u64),
            None => missing += 1,
        }
    }
    (out, missing)
}

// ---- processes ----

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) of a process so far.
fn cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clk_tck())
}

/// Bytes written by a process so far, and which counter: `write_bytes` (what reached the block
/// layer) or, without it, `wchar` (what it passed to write calls).
fn written(pid: u32) -> Option<(u64, &'static str)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    field("write_bytes")
        .map(|v| (v, "write_bytes"))
        .or_else(|| field("wchar").map(|v| (v, "wchar")))
}

/// Bytes a process passed to write calls so far (`wchar` of `/proc/<pid>/io`).
fn wchar(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("wchar:")?.trim().parse().ok())
}

/// What one tool did in its steady window.
#[derive(Debug)]
struct Figures {
    protected_s: f64,
    lag_p50: u64,
    lag_p99: u64,
    cpu_per_min: f64,
    write_mib_per_min: f64,
    wchar_mib_per_min: f64,
    worst_commit_ms: f64,
    writer_ratio: f64,
}

/// Each figure's median over `runs` (the upper middle of an even count); `None` for none.
fn median(runs: &[Figures]) -> Option<Figures> {
    fn mid<T: Copy + PartialOrd>(runs: &[Figures], f: impl Fn(&Figures) -> T) -> T {
        let mut v: Vec<T> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        v[v.len() / 2]
    }
    (!runs.is_empty()).then(|| Figures {
        protected_s: mid(runs, |f| f.protected_s),
        lag_p50: mid(runs, |f| f.lag_p50),
        lag_p99: mid(runs, |f| f.lag_p99),
        cpu_per_min: mid(runs, |f| f.cpu_per_min),
        write_mib_per_min: mid(runs, |f| f.write_mib_per_min),
        wchar_mib_per_min: mid(runs, |f| f.wchar_mib_per_min),
        worst_commit_ms: mid(runs, |f| f.worst_commit_ms),
        writer_ratio: mid(runs, |f| f.writer_ratio),
    })
}

/// CPU and bytes of `pid` over a window of steady writes; the window's commits.
struct Window {
    cpu_per_min: f64,
    write_mib_per_min: f64,
    wchar_mib_per_min: f64,
    rows: Vec<Commit>,
    worst_commit_ms: f64,
}

fn steady(pid: u32, writer: &mut Writer, run: Duration) -> Window {
    let (c0, w0, x0) = (cpu_s(pid).unwrap_or(0.0), written(pid), wchar(pid));
    let t0 = Instant::now();
    let from = writer.since(t0);
    std::thread::sleep(run);
    let (c1, w1, x1) = (cpu_s(pid).unwrap_or(0.0), written(pid), wchar(pid));
    let mins = t0.elapsed().as_secs_f64() / 60.0;
    let rows: Vec<Commit> = writer.stop().split_off(from);
    let bytes = match (w0, w1) {
        (Some((a, which)), Some((b, _))) => {
            eprintln!("  bytes written from /proc/{pid}/io {which}");
            b.saturating_sub(a)
        }
        _ => {
            eprintln!("  /proc/{pid}/io unreadable: bytes written unknown");
            0
        }
    };
    let worst = rows.iter().map(|c| c.took).max().unwrap_or_default();
    if let Some(w) = rows.iter().max_by_key(|c| c.took) {
        let slow = rows
            .iter()
            .filter(|c| c.took > Duration::from_millis(100))
            .count();
        eprintln!(
            "  slowest commit {:.1} ms at {:.2} s into the window; {slow} over 100 ms",
            w.took.as_secs_f64() * 1000.0,
            w.at.saturating_duration_since(t0).as_secs_f64()
        );
    }
    Window {
        cpu_per_min: (c1 - c0) / mins,
        write_mib_per_min: bytes as f64 / 1048576.0 / mins,
        wchar_mib_per_min: x1.unwrap_or(0).saturating_sub(x0.unwrap_or(0)) as f64
            / 1048576.0
            / mins,
        rows,
        worst_commit_ms: worst.as_secs_f64() * 1000.0,
    }
}

fn wait_rows<K: Copy + Send + 'static>(
    w: &Watch<K>,
    last: Option<&Commit>,
    key: impl Fn(&Commit) -> Option<K>,
    covers: impl Fn(K, K) -> bool,
) {
    let Some(k) = last.and_then(&key) else {
        return;
    };
    let t = Instant::now();
    while t.elapsed() < DRAIN {
        if w.seen().last().is_some_and(|(_, s)| covers(*s, k)) {
            return;
        }
        std::thread::sleep(POLL);
    }
    eprintln!("  the last rows did not show within {DRAIN:?}");
}

fn summarize(rows: &[Commit], l: (Vec<u64>, usize)) -> (u64, u64) {
    let (mut v, missing) = l;
    if missing > 0 {
        eprintln!("  {missing} of {} rows never seen at the copy", rows.len());
    }
    v.sort_unstable();
    eprintln!(
        "  lag over {} rows: min {:?} max {:?} ms",
        v.len(),
        v.first(),
        v.last()
    );
    (
        quantile(&v, 0.5).unwrap_or(u64::MAX),
        quantile(&v, 0.99).unwrap_or(u64::MAX),
    )
}

fn free_ports(n: usize) -> Vec<u16> {
    lifeboat_io_tokio::ports::free_loopback_ports(n).unwrap()
}

fn tail(path: &Path) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let l: Vec<&str> = t.lines().collect();
    l[l.len().saturating_sub(20)..].join("\n")
}

struct Settings {
    run: Duration,
    tight: Duration,
    log: String,
}

/// The demo's engine settings with its short lease, heartbeat and probe timers taken out, so
/// the engine's defaults apply (as in a deployment); `LIFEBOAT_BENCH_SQLITE_TIMERS=demo` keeps
/// them. The demo renews a lease every 400 ms and heartbeats every 300 ms: each is a journal
/// append with its fsync, which a per-minute bytes figure of a quiet database would measure.
fn production_timers(toml: String) -> String {
    if std::env::var("LIFEBOAT_BENCH_SQLITE_TIMERS").as_deref() == Ok("demo") {
        return toml;
    }
    let mut out = String::new();
    let mut skipping = false;
    for line in toml.lines() {
        if line.starts_with('[') {
            skipping = line == "[engine.lease]" || line == "[engine.failover]";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// One tool's run on a fresh copy: [`run_lifeboat`] or [`run_litestream`].
type Runner = fn(&Path, &Path, &Settings) -> Result<Figures, String>;

fn run_lifeboat(d: &Path, db: &Path, s: &Settings) -> Result<Figures, String> {
    let p = free_ports(6);
    let rec_db = d.join("rdb/app.db");
    std::fs::create_dir_all(rec_db.parent().unwrap()).unwrap();
    lifeboat_io_tokio::demo::write_certs(&d.join("certs")).unwrap();
    let slow_fulls = |t: String| {
        production_timers(t.replace("full_every_ms = 4000", "full_every_ms = 86400000"))
    };
    let files = [
        (
            "arbiter",
            "arbiter",
            arbiter_toml(p[0], p[1], &d.join("arbiter"), &d.join("certs")),
        ),
        (
            "primary",
            "agent",
            site_toml(
                "primary",
                SitePorts {
                    listen: p[2],
                    peer: p[4],
                    arbiter: p[0],
                    http: p[3],
                    peer_http: p[5],
                },
                &d.join("primary"),
                db,
                &d.join("certs"),
            ),
        ),
        (
            "recovery",
            "agent",
            site_toml(
                "recovery",
                SitePorts {
                    listen: p[4],
                    peer: p[2],
                    arbiter: p[0],
                    http: p[5],
                    peer_http: p[3],
                },
                &d.join("recovery"),
                &rec_db,
                &d.join("certs"),
            ),
        ),
    ];
    let mut writer = Writer::start(db);
    std::thread::sleep(Duration::from_secs(1));
    let mut procs = Procs(Vec::new());
    let mut started = Instant::now();
    for (name, sub, text) in files {
        let cfg = d.join(format!("{name}.toml"));
        std::fs::write(&cfg, slow_fulls(text)).unwrap();
        if name == "primary" {
            started = Instant::now();
        }
        procs.0.push(
            Command::new(BIN)
                .arg(sub)
                .arg("--config")
                .arg(&cfg)
                .env("LIFEBOAT_LOG", &s.log)
                .stdout(Stdio::null())
                .stderr(File::create(d.join(format!("{name}.log"))).unwrap())
                .spawn()
                .map_err(|e| format!("starting lifeboat {sub}: {e}"))?,
        );
    }
    let pid = procs.0[1].id();
    let watch = watch_copy(rec_db.clone());
    loop {
        let restored = status(p[5])
            .map(|v| !v["databases"][0]["restored_lsn"].is_null())
            .unwrap_or(false);
        if restored {
            break;
        }
        if started.elapsed() > PROTECT_WITHIN {
            return Err(format!(
                "no full restored at the recovery site within {PROTECT_WITHIN:?}\n{}",
                tail(&d.join("recovery.log"))
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let protected_s = started.elapsed().as_secs_f64();
    eprintln!(
        "  protected after {protected_s:.1} s; steady writes for {:?}",
        s.run
    );
    let w = steady(pid, &mut writer, s.run);
    let key = |c: &Commit| Some(c.seq);
    let cov = |seen: i64, row: i64| seen >= row;
    wait_rows(&watch, w.rows.last(), key, cov);
    let (lag_p50, lag_p99) = summarize(&w.rows, lags(&w.rows, &watch.seen(), key, cov));
    drop(watch);
    let tps = tight(db, s.tight);
    eprintln!("  tight writer with lifeboat: {tps:.0} tx/s");
    Ok(Figures {
        protected_s,
        lag_p50,
        lag_p99,
        cpu_per_min: w.cpu_per_min,
        write_mib_per_min: w.write_mib_per_min,
        wchar_mib_per_min: w.wchar_mib_per_min,
        worst_commit_ms: w.worst_commit_ms,
        writer_ratio: tps,
    })
}

fn run_litestream(d: &Path, db: &Path, s: &Settings) -> Result<Figures, String> {
    let replica = d.join("replica");
    let mut writer = Writer::start(db);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let child = Command::new("litestream")
        .arg("replicate")
        .arg(db)
        .arg(format!("file://{}", replica.display()))
        .stdout(Stdio::null())
        .stderr(File::create(d.join("litestream.log")).unwrap())
        .spawn()
        .map_err(|e| format!("starting litestream: {e}"))?;
    let pid = child.id();
    let _procs = Procs(vec![child]);
    let watch = watch_replica(replica.join("ltx/0"));
    let has = |level: &str| {
        std::fs::read_dir(replica.join("ltx").join(level))
            .map(|mut rd| {
                rd.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ltx")))
            })
            .unwrap_or(false)
    };
    while !(has("0") && has("9")) {
        if started.elapsed() > PROTECT_WITHIN {
            return Err(format!(
                "no replica within {PROTECT_WITHIN:?}\n{}",
                tail(&d.join("litestream.log"))
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let protected_s = started.elapsed().as_secs_f64();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    eprintln!(
        "  replica holds a snapshot after {protected_s:.1} s (process {pid}: {}); steady writes for {:?}",
        comm.trim(),
        s.run
    );
    let w = steady(pid, &mut writer, s.run);
    let key = |c: &Commit| c.wal;
    wait_rows(&watch, w.rows.last(), key, covers);
    let (lag_p50, lag_p99) = summarize(&w.rows, lags(&w.rows, &watch.seen(), key, covers));
    drop(watch);
    let tps = tight(db, s.tight);
    eprintln!("  tight writer with litestream: {tps:.0} tx/s");
    Ok(Figures {
        protected_s,
        lag_p50,
        lag_p99,
        cpu_per_min: w.cpu_per_min,
        write_mib_per_min: w.write_mib_per_min,
        wchar_mib_per_min: w.wchar_mib_per_min,
        worst_commit_ms: w.worst_commit_ms,
        writer_ratio: tps,
    })
}

/// The tight writer on a fresh copy with no replication.
fn baseline(pristine: &Path, d: &Path, s: &Settings) -> f64 {
    let db = d.join("baseline.db");
    std::fs::copy(pristine, &db).expect("copy the database");
    let tps = tight(&db, s.tight);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    eprintln!("  tight writer without replication: {tps:.0} tx/s");
    tps
}

/// A fresh directory holding a fresh copy of the database.
fn fresh(root: &Path, name: &str, pristine: &Path) -> (PathBuf, PathBuf) {
    let d = root.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("pdb")).unwrap();
    let db = d.join("pdb/app.db");
    std::fs::copy(pristine, &db).expect("copy the database");
    // On disk before any tool starts, as an application's database is: otherwise the first
    // checkpoint's fsync writes the whole copy back and stalls a commit for a few hundred ms.
    std::fs::File::open(&db)
        .and_then(|f| f.sync_all())
        .expect("fsync the copy");
    (d, db)
}

fn main() {
    let sizes: Vec<u64> = std::env::var("LIFEBOAT_BENCH_SQLITE_SIZES")
        .unwrap_or_else(|_| "10,200,1024".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let s = Settings {
        run: Duration::from_secs(env_u64("LIFEBOAT_BENCH_SQLITE_RUN_S", 60).max(1)),
        tight: Duration::from_secs(env_u64("LIFEBOAT_BENCH_SQLITE_TIGHT_S", 10).max(1)),
        log: std::env::var("LIFEBOAT_BENCH_SQLITE_LOG").unwrap_or_else(|_| "warn".into()),
    };
    let litestream = match Command::new("litestream").arg("version").output() {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
            eprintln!("litestream {v}");
            true
        }
        Ok(o) => {
            bench(
                "litestream_skipped",
                format!("litestream version exited with {}", o.status),
            );
            false
        }
        Err(e) => {
            bench(
                "litestream_skipped",
                format!("no litestream on the PATH ({e})"),
            );
            false
        }
    };
    let root = tempfile::Builder::new()
        .prefix("lifeboat-sqlite-peers-")
        .tempdir_in("/tmp")
        .expect("a temporary directory");
    eprintln!("working in {}", root.path().display());
    let keep = std::env::var_os("LIFEBOAT_BENCH_SQLITE_KEEP").is_some();
    let rounds = env_u64("LIFEBOAT_BENCH_SQLITE_ROUNDS", 1).max(1);
    for mib in sizes {
        let size = label(mib);
        let pristine = root.path().join(format!("pristine-{size}.db"));
        let t = Instant::now();
        generate(&pristine, mib).expect("generate the database");
        eprintln!(
            "[{size}] generated {} bytes in {:.1} s",
            std::fs::metadata(&pristine).map(|m| m.len()).unwrap_or(0),
            t.elapsed().as_secs_f64()
        );

        // Rounds alternate the tools, so that a slow period of the machine weighs on both;
        // each figure printed is the median over the rounds.
        let mut lbs = Vec::new();
        let mut lss = Vec::new();
        for round in 1..=rounds {
            let one = |tool: &str, run: Runner| -> Option<Figures> {
                eprintln!("[{size}] {tool}, round {round} of {rounds}");
                let base = baseline(&pristine, root.path(), &s);
                let (d, db) = fresh(root.path(), tool, &pristine);
                let got = run(&d, &db, &s);
                if !keep {
                    let _ = std::fs::remove_dir_all(&d);
                }
                match got {
                    Ok(mut f) => {
                        f.writer_ratio /= base;
                        eprintln!("[{size}] {tool} round {round}: {f:?}");
                        Some(f)
                    }
                    Err(e) => {
                        eprintln!("[{size}] {tool} failed: {e}");
                        None
                    }
                }
            };
            lbs.extend(one("lifeboat", run_lifeboat));
            if litestream {
                lss.extend(one("litestream", run_litestream));
            }
        }
        let lb = median(&lbs);
        if let Some(f) = &lb {
            print_figures("sqlite", "primary_", "", &size, f);
        }
        if let Some(f) = median(&lss) {
            print_figures("litestream", "", "write_", &size, &f);
            if let Some(l) = &lb {
                let pairs = [
                    ("lag_p50", l.lag_p50 as f64, f.lag_p50 as f64),
                    ("lag_p99", l.lag_p99 as f64, f.lag_p99 as f64),
                    ("cpu", l.cpu_per_min, f.cpu_per_min),
                    ("write", l.write_mib_per_min, f.write_mib_per_min),
                    ("writer_ratio", l.writer_ratio, f.writer_ratio),
                ];
                for (name, a, b) in pairs {
                    bench(&format!("sqlite_{name}_vs_litestream_{size}"), ratio(a, b));
                }
            }
        }
        let _ = std::fs::remove_file(&pristine);
    }
    if keep {
        eprintln!("kept {}", root.keep().display());
    }
}
