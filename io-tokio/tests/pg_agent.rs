//! PostgreSQL 15 through the real agents: two clusters made by `initdb --wal-segsize=1`, two
//! `lifeboat agent` processes with the postgres driver and a `lifeboat arbiter`, a SQL write
//! workload. The engines decide (failover, reseed, re-copy); the tests only write, kill, corrupt,
//! lose a segment, ask for a switchover, and check rows against WAL positions.
//!
//! Ground truth: every batch of rows the writer commits is recorded with `pg_current_wal_lsn()`
//! just before and just after it, so its commit record ends in `(before, after]`. A standby
//! replayed to `r` holds every batch with `after <= r` and none with `before >= r`.
//!
//! Servers run as the `postgres` user when the tests run as root (CI); `archive_command` and
//! `restore_command` run a copy of the `lifeboat` binary that user can execute. Without
//! PostgreSQL the tests pass with a message, except in CI (`CI=true`), where they fail.

mod common;

#[path = "pgkit/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use cluster::{psql, psql_each, ScratchDir};
use common::{
    alert_kinds, free_ports, lifeboat_cli, reports, status, utc_now_ms, wait_for, Proxy, BIN,
};
use lifeboat_io_tokio::drivers::postgres::wal::{self, PgLsn};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One PostgreSQL world at a time: two servers and three agents fill a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

const ROWS_PER_BATCH: u64 = 20;
const SEGMENT: u64 = 1 << 20;

/// PostgreSQL is there, or the test is skipped (a failure in CI).
fn postgres_or_skip(test: &str) -> Option<MutexGuard<'static, ()>> {
    if let Err(why) = cluster::available() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("PostgreSQL tests cannot run in CI: {why}");
        }
        eprintln!("skipping {test}: {why}");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

// ---------------------------------------------------------------------------------------------
// The world: arbiter, sites "a" (first primary) and "b"

#[derive(Clone, Default)]
struct Opts {
    /// Lines added under `[engine.schedule]` (replacing the defaults named there).
    log_every_ms: Option<u64>,
    /// `archive_timeout_s` of both drivers.
    archive_timeout_s: Option<u64>,
    /// Lines added under `[engine.restore]`.
    restore: &'static str,
    /// Lines added under `[engine.alerts]`.
    alerts: &'static str,
    /// Lines added under `[engine.failover]`.
    failover: &'static str,
    /// Route a's shipping to b through a proxy that can corrupt bytes in transit.
    proxy_to_b: bool,
    /// Lines added under both sites' `[driver]`.
    driver: &'static str,
    /// Text appended to the recovery site's (b's) site.toml only, after every section (an
    /// `[archive]` table, say).
    recovery_extra: &'static str,
}

struct Site {
    name: &'static str,
    listen: u16,
    http: u16,
    pg: u16,
    pgdata: PathBuf,
    config: PathBuf,
    data_dir: PathBuf,
}

struct World {
    scratch: ScratchDir,
    sites: [Site; 2],
    configs: HashMap<&'static str, (&'static str, PathBuf)>,
    procs: HashMap<&'static str, Child>,
    proxy: Option<Proxy>,
    started: Instant,
}

fn engine_toml(o: &Opts) -> String {
    format!(
        r#"
[engine]
sites = ["a", "b"]
initial_primary = "a"
databases = ["app"]
arbiter = true

[engine.schedule]
log_every_ms = {log}
full_every_ms = 3600000
incremental_every_ms = 3600000

[engine.shipping]
ack_timeout_ms = 10000
retry_base_ms = 200
retry_max_ms = 2000

[engine.restore]
retry_delay_ms = 500
op_timeout_ms = 60000
{restore}

[engine.alerts]
check_every_ms = 1000
min_free_mib = 16
{alerts}

[engine.lease]
lease_ms = 3000
renew_every_ms = 500
fence_time_ms = 500
heartbeat_every_ms = 300
arbiter_timeout_ms = 1000

[engine.failover]
probe_every_ms = 250
unhealthy_count = 3
unhealthy_for_ms = 1000
{failover}
"#,
        log = o.log_every_ms.unwrap_or(1000),
        restore = o.restore,
        alerts = o.alerts,
        failover = o.failover,
    )
}

impl World {
    fn start(o: Opts) -> World {
        let scratch = ScratchDir::new("agents").expect("a scratch directory");
        // PostgreSQL's user runs archive_command / restore_command: a copy it may execute.
        let bin = scratch.dir("bin").join("lifeboat");
        std::fs::copy(BIN, &bin).expect("copying the lifeboat binary");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let p = free_ports(10);
        let (arb_listen, arb_http) = (p[0], p[1]);
        let mk = |name: &'static str, listen, http, pg| {
            let root = scratch.dir(name);
            Site {
                name,
                listen,
                http,
                pg,
                pgdata: root.join("pgdata"),
                config: root.join("site.toml"),
                data_dir: root.join("agent"),
            }
        };
        let sites = [mk("a", p[2], p[3], p[4]), mk("b", p[5], p[6], p[7])];
        let proxy = o.proxy_to_b.then(|| Proxy::start(p[8], sites[1].listen));
        // a's cluster exists; b's is made by the first base backup the engine ships.
        let c = cluster::Cluster::initdb(&sites[0].pgdata, sites[0].pg, 1).expect("initdb");
        std::mem::forget(c); // the scratch guard stops every server under it
        let engine = engine_toml(&o);
        let certs = scratch.path.join("certs");
        lifeboat_io_tokio::certs::init(&certs, &["a".into(), "b".into()], "arbiter", 30).unwrap();
        for (i, s) in sites.iter().enumerate() {
            let other = &sites[1 - i];
            let peer = match (&proxy, i) {
                (Some(px), 0) => px.port,
                _ => other.listen,
            };
            let text = format!(
                "site = \"{name}\"\nlisten = \"127.0.0.1:{listen}\"\npeer = \"127.0.0.1:{peer}\"\n\
                 arbiter = \"127.0.0.1:{arb_listen}\"\nhttp = \"127.0.0.1:{http}\"\n\
                 peer_http = \"127.0.0.1:{peer_http}\"\ndata_dir = \"{data}\"\n\n\
                 [driver]\nkind = \"postgres\"\nbin_dir = \"{pgbin}\"\nspool_dir = \"{spool}\"\n\
                 lifeboat_bin = \"{bin}\"\narchive_timeout_s = {at}\nretrieve_retry_ms = 200\n\
                 replay_timeout_ms = 30000\nstall_ms = 5000\n{driver}\n\
                 [[driver.databases]]\nname = \"app\"\ndata_dir = \"{pgdata}\"\nport = {pg}\n\
                 {tls}{engine}",
                tls = lifeboat_io_tokio::demo::tls_toml(&certs, s.name),
                name = s.name,
                listen = s.listen,
                http = s.http,
                peer_http = other.http,
                data = s.data_dir.display(),
                pgbin = cluster::bin_dir().display(),
                spool = scratch.dir(&format!("{}/spool", s.name)).display(),
                bin = bin.display(),
                at = o.archive_timeout_s.unwrap_or(60),
                pgdata = s.pgdata.display(),
                pg = s.pg,
                driver = o.driver,
            );
            let text = if s.name == "b" {
                format!("{text}{}", o.recovery_extra)
            } else {
                text
            };
            std::fs::write(&s.config, text).unwrap();
        }
        let arb = scratch.path.join("arbiter.toml");
        std::fs::write(
            &arb,
            lifeboat_io_tokio::demo::arbiter_toml_with(
                arb_listen,
                arb_http,
                &scratch.dir("arbiter"),
                &certs,
                &engine,
            ),
        )
        .unwrap();
        let mut configs = HashMap::new();
        configs.insert("arbiter", ("arbiter", arb));
        configs.insert("a", ("agent", sites[0].config.clone()));
        configs.insert("b", ("agent", sites[1].config.clone()));
        let mut w = World {
            scratch,
            sites,
            configs,
            procs: HashMap::new(),
            proxy,
            started: Instant::now(),
        };
        for n in ["arbiter", "a", "b"] {
            w.spawn(n);
        }
        let a = w.site("a").http;
        wait_for("a to accept writes", Duration::from_secs(30), || {
            status(a).is_some_and(|d| d["writable"] == true)
        });
        let pg = w.site("a").pg;
        wait_for("a's server to answer", Duration::from_secs(30), || {
            psql(pg, "select 1").is_ok()
        });
        psql(
            pg,
            "create table t(id bigserial primary key, batch int not null, v text not null)",
        )
        .unwrap();
        // The recovery site has no copy yet: ask for its first base backup (README step 5).
        let (ok, out) = lifeboat(&[
            "reseed",
            "app",
            "--config",
            w.site("b").config.to_str().unwrap(),
            "--wait",
            "120",
        ]);
        assert!(ok, "the first reseed of b: {out}");
        let b = w.site("b").pg;
        wait_for("b's standby to answer", Duration::from_secs(60), || {
            in_recovery(b) == Some(true)
        });
        w
    }

    fn site(&self, name: &str) -> &Site {
        self.sites.iter().find(|s| s.name == name).unwrap()
    }

    fn spawn(&mut self, name: &'static str) {
        let (sub, cfg) = self.configs[name].clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.path.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .arg(sub)
            .arg("--config")
            .arg(&cfg)
            .env("LIFEBOAT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.procs.insert(name, child);
    }

    /// SIGKILL an agent or the arbiter.
    fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.procs.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.scratch.path.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The restored position b's (or a's) agent reports.
    fn restored(&self, site: &str) -> Option<u64> {
        status(self.site(site).http)?["databases"][0]["restored_lsn"].as_u64()
    }

    /// Wait until `site`'s standby holds exactly `rows` rows and its agent reports a restored
    /// position at or past `lsn`.
    fn converge(&self, site: &str, rows: u64, lsn: u64, within: Duration) {
        let s = self.site(site);
        wait_for(
            &format!("{site} to replay {rows} rows up to {}", PgLsn(lsn)),
            within,
            || count(s.pg) == Some(rows) && self.restored(site).is_some_and(|r| r >= lsn),
        );
    }

    fn dump(&self) {
        for n in ["arbiter", "a", "b"] {
            let l = self.log(n);
            let lines: Vec<&str> = l.lines().collect();
            eprintln!("--- {n} (last 60 lines) ---");
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
        for s in &self.sites {
            let log = self
                .scratch
                .path
                .join(s.name)
                .join("spool/app/postgresql.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- PostgreSQL at {} (last 30 lines) ---", s.name);
            for line in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        for (_, mut c) in self.procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
        eprintln!("    world ran {:.1}s", self.started.elapsed().as_secs_f64());
    }
}

// ---------------------------------------------------------------------------------------------
// SQL helpers and the writer

fn count(port: u16) -> Option<u64> {
    psql(port, "select count(*) from t")
        .ok()?
        .first()?
        .parse()
        .ok()
}

fn lsn(port: u16, sql: &str) -> Option<u64> {
    PgLsn::parse(psql(port, sql).ok()?.first()?).map(|l| l.0)
}

fn replay_lsn(port: u16) -> Option<u64> {
    lsn(port, "select pg_last_wal_replay_lsn()")
}

fn in_recovery(port: u16) -> Option<bool> {
    Some(psql(port, "select pg_is_in_recovery()").ok()?.first()? == "t")
}

/// Batch ids present at a server, with their row counts.
fn batches_at(port: u16) -> BTreeMap<u64, u64> {
    psql(
        port,
        "select batch, count(*) from t group by batch order by batch",
    )
    .unwrap()
    .iter()
    .filter_map(|l| {
        let (b, n) = l.split_once('|')?;
        Some((b.parse().ok()?, n.parse().ok()?))
    })
    .collect()
}

#[derive(Clone, Debug)]
struct Batch {
    /// The `batch` column of its rows.
    #[allow(dead_code)] // shown by Debug in failure messages
    id: u64,
    /// `pg_current_wal_lsn()` before the insert: its commit record ends after this.
    before: u64,
    /// After the commit was acknowledged: the commit record ends at or before this. `None` when
    /// the insert was attempted but not acknowledged (the server died): it may or may not exist.
    after: Option<u64>,
    /// When the commit was acknowledged.
    acked_at: Option<Instant>,
}

#[derive(Default)]
struct Log {
    batches: Vec<Batch>,
}

impl Log {
    fn acked(&self) -> impl Iterator<Item = &Batch> {
        self.batches.iter().filter(|b| b.after.is_some())
    }
    fn rows_acked(&self) -> u64 {
        self.acked().count() as u64 * ROWS_PER_BATCH
    }
    /// Rows that a replica replayed to `r` must hold.
    fn rows_surely_at(&self, r: u64) -> u64 {
        self.acked().filter(|b| b.after.unwrap() <= r).count() as u64 * ROWS_PER_BATCH
    }
    /// Rows that a replica replayed to `r` may hold.
    fn rows_maybe_at(&self, r: u64) -> u64 {
        self.batches.iter().filter(|b| b.before < r).count() as u64 * ROWS_PER_BATCH
    }
    fn last_after(&self) -> u64 {
        self.acked().map(|b| b.after.unwrap()).max().unwrap_or(0)
    }
}

/// One batch of rows in its own transaction, with the write position before and after.
fn write_batch(port: u16, log: &Mutex<Log>) -> bool {
    let id = log.lock().unwrap().batches.len() as u64 + 1;
    let Some(before) = lsn(port, "select pg_current_wal_lsn()") else {
        return false;
    };
    log.lock().unwrap().batches.push(Batch {
        id,
        before,
        after: None,
        acked_at: None,
    });
    let out = psql_each(
        port,
        &[
            &format!(
                "insert into t(batch, v) select {id}, md5(g::text) || repeat('x', 200) \
                 from generate_series(1, {ROWS_PER_BATCH}) g"
            ),
            "select pg_current_wal_lsn()",
        ],
    );
    let after = out
        .ok()
        .and_then(|o| o.last().and_then(|l| PgLsn::parse(l)).map(|l| l.0));
    match after {
        Some(a) => {
            let mut l = log.lock().unwrap();
            let b = l.batches.last_mut().unwrap();
            b.after = Some(a);
            b.acked_at = Some(Instant::now());
            true
        }
        None => false,
    }
}

/// A writer thread: a batch every `every` into the server on `port` until stopped or until the
/// server refuses (then it keeps trying: a fenced or killed primary takes nothing).
struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(port: u16, log: Arc<Mutex<Log>>, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, l) = (stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                // An insert attempted but not acknowledged may or may not exist: keep it, and
                // write no more to a server that failed.
                if !write_batch(port, &l)
                    && l.lock()
                        .unwrap()
                        .batches
                        .last()
                        .is_some_and(|b| b.after.is_none())
                {
                    break;
                }
                std::thread::sleep(every);
            }
        });
        Writer {
            stop,
            log,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> Arc<Mutex<Log>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.log.clone()
    }
}

/// The replica on `port` holds a prefix of the batches consistent with having replayed WAL to
/// somewhere in `[r1, r2]`: every batch acknowledged by `r1`, none begun after `r2`, no hole,
/// no partial batch. Returns its row count.
fn check_prefix(port: u16, log: &Log, r1: u64, r2: u64) -> u64 {
    check_batches(&batches_at(port), log, r1, r2)
}

/// `check_prefix` of batches read while the replica's replay position was between `r1` and
/// `r2` (read the rows between the two positions, not after: replay goes on meanwhile).
fn check_batches(got: &BTreeMap<u64, u64>, log: &Log, r1: u64, r2: u64) -> u64 {
    let rows: u64 = got.values().sum();
    let ids: Vec<u64> = got.keys().copied().collect();
    let n = ids.len() as u64;
    assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "batches form a prefix");
    assert!(
        got.values().all(|&c| c == ROWS_PER_BATCH),
        "whole batches only"
    );
    assert!(
        rows >= log.rows_surely_at(r1) && rows <= log.rows_maybe_at(r2),
        "{rows} rows at the replica replayed to {}..{}: expected {}..={}",
        PgLsn(r1),
        PgLsn(r2),
        log.rows_surely_at(r1),
        log.rows_maybe_at(r2)
    );
    rows
}

/// Where valid WAL ends in a (crashed) cluster's pg_wal: the highest segment that holds WAL.
fn wal_end(pgdata: &Path) -> u64 {
    let mut best = 0;
    for e in std::fs::read_dir(pgdata.join("pg_wal")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(wal::WalFile::Segment { segno, .. }) = wal::WalFile::parse(&name, SEGMENT) else {
            continue;
        };
        let Ok(bytes) = std::fs::read(e.path()) else {
            continue;
        };
        if let Ok(scan) = wal::scan_segment(&bytes, segno, SEGMENT) {
            if scan.valid_end > segno * SEGMENT {
                best = best.max(scan.valid_end);
            }
        }
    }
    best
}

fn lifeboat(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Tests

/// 1. Steady shipping through the agents: the standby's rows always match the primary's at the
///    replayed position, and everything committed arrives.
#[test]
fn agents_ship_postgres_wal_and_the_standby_matches_the_primary_at_the_shipped_lsn() {
    let Some(_serial) = postgres_or_skip("steady") else {
        return;
    };
    let w = World::start(Opts::default());
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let log = Arc::new(Mutex::new(Log::default()));
    let writer = Writer::start(a, log.clone(), Duration::from_millis(20));
    wait_for("b's standby to answer", Duration::from_secs(60), || {
        in_recovery(b) == Some(true)
    });
    let mut samples = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(700));
        let (Some(r1), Some(_)) = (replay_lsn(b), count(b)) else {
            continue;
        };
        let snapshot = Log {
            batches: log.lock().unwrap().batches.clone(),
        };
        let got = batches_at(b);
        let r2 = replay_lsn(b).unwrap();
        let rows = check_batches(&got, &snapshot, r1, r2.max(r1));
        eprintln!(
            "    standby at {}..{}: {rows} rows of {} acknowledged",
            PgLsn(r1),
            PgLsn(r2),
            snapshot.rows_acked()
        );
        samples += u64::from(rows > 0);
    }
    let log = writer.stop();
    let log = log.lock().unwrap();
    assert!(log.acked().count() > 50, "the writer committed too little");
    assert!(samples > 3, "the standby showed rows while the writer ran");
    let total = count(a).unwrap();
    assert_eq!(total, log.rows_acked());
    w.converge("b", total, log.last_after(), Duration::from_secs(30));
    check_prefix(b, &log, log.last_after(), log.last_after());
    let d = status(w.site("b").http).unwrap();
    assert_eq!(d["role"], "secondary");
    assert!(d["databases"][0]["last_restore"]["file"]
        .as_str()
        .is_some_and(|f| f.starts_with("app_")));
    let kinds = alert_kinds(w.site("b").http);
    assert!(
        !kinds.iter().any(|k| k == "restore_error"
            || k == "missing_log"
            || k == "primary_down"
            || k == "checksum_mismatch"),
        "a clean run raises nothing: {kinds:?}"
    );
}

/// 2. The primary's server and agent are killed under a write load: b's engine fails over on
///    its own (arbiter lease lapsed, probes failing), the promoted standby holds every row
///    committed up to the restored position, accepts writes, and the WAL really lost lies
///    within the reported RPO bounds. Then a's agent returns: a is rebuilt from b's base backup
///    and replays b's WAL (protection in reverse).
#[test]
fn killed_postgres_primary_fails_over_and_the_true_loss_lies_within_the_reported_rpo() {
    let Some(_serial) = postgres_or_skip("failover") else {
        return;
    };
    let mut w = World::start(Opts::default());
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let b_http = w.site("b").http;
    let log = Arc::new(Mutex::new(Log::default()));
    let writer = Writer::start(a, log.clone(), Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(4));
    assert!(w.restored("b").is_some_and(|r| r > 0));
    // The site dies: its agent, then its server, while the writer writes.
    w.kill("a");
    cluster::stop_immediately(&w.site("a").pgdata);
    let killed = Instant::now();
    let log = writer.stop();
    let log = log.lock().unwrap();
    let end = wal_end(&w.site("a").pgdata);
    assert!(
        end >= log.last_after(),
        "the crashed primary's WAL holds every commit"
    );
    wait_for("b's engine to fail over", Duration::from_secs(60), || {
        !reports(b_http, "failover").is_empty()
    });
    let detected = killed.elapsed();
    let r = reports(b_http, "failover").remove(0);
    eprintln!("    failover report: {r}");
    let d = status(b_http).unwrap();
    assert_eq!(d["role"], "primary");
    assert_eq!(d["writable"], true);
    assert_eq!(r["forced"], false, "the engine decided");
    wait_for(
        "b's server to leave recovery",
        Duration::from_secs(30),
        || in_recovery(b) == Some(false),
    );
    // Where b's replay ended: the switch point its new timeline's history records.
    let history = psql(b, "select pg_read_file('pg_wal/00000002.history')").unwrap();
    let restored = history
        .iter()
        .find_map(|l| l.split('\t').nth(1).and_then(PgLsn::parse))
        .unwrap_or_else(|| panic!("no switch point in {history:?}"))
        .0;
    if let Some(l) = r["losses"].as_array().and_then(|l| l.first()) {
        // The engine's restored position is the end of the last segment restored.
        assert!(l["restored_lsn"].as_u64().unwrap() >= restored, "{l}");
    }
    let kept = check_prefix(b, &log, restored, restored);
    let lost_rows = log.rows_acked().saturating_sub(kept);
    let true_loss = end.saturating_sub(restored);
    let lower = r["rpo_lower"].as_u64().unwrap();
    let upper = r["rpo_upper"].as_u64();
    eprintln!(
        "    restored {} of a's WAL ending at {}: {true_loss} bytes ({lost_rows} acknowledged \
         rows) lost; reported RPO [{lower}, {upper:?}]; report after {detected:?}, rto_ms {}",
        PgLsn(restored),
        PgLsn(end),
        r["rto_ms"]
    );
    assert!(
        lower <= true_loss && upper.is_none_or(|u| true_loss <= u),
        "true loss {true_loss} outside [{lower}, {upper:?}]"
    );
    // Every acknowledged row lost was committed in the reported window (restored, end].
    for bt in log.acked() {
        if bt.after.unwrap() > restored {
            assert!(bt.before < end, "{bt:?} ends after the crashed WAL");
        }
    }
    // The promoted standby accepts writes.
    let after = Mutex::new(Log::default());
    for _ in 0..3 {
        assert!(write_batch(b, &after), "b takes writes");
    }
    assert_eq!(count(b), Some(kept + 3 * ROWS_PER_BATCH));

    // a returns: rebuilt from b's base backup, then it replays b's WAL.
    w.spawn("a");
    wait_for(
        "a to be rebuilt as b's standby",
        Duration::from_secs(120),
        || in_recovery(a) == Some(true) && count(a) == count(b),
    );
    // Its rebuild compared the old copy with b's history.
    check_lost_writes(&w, &log, restored, end);
    for _ in 0..3 {
        assert!(write_batch(b, &after));
    }
    let n = count(b).unwrap();
    wait_for("a to replay b's new rows", Duration::from_secs(60), || {
        count(a) == Some(n)
    });
    assert_eq!(
        status(w.site("a").http).unwrap()["role"],
        "secondary",
        "protection continues in reverse"
    );
}

/// After a's rebuild (following a kill of its site and a failover to b): the exact loss, which
/// the failover report could only bound, is reported by both sites with the true figures, and
/// the lost WAL is kept at a; nothing when nothing was lost. a reports it before its reseed
/// completes, so before it replays b's rows.
fn check_lost_writes(w: &World, log: &Log, restored: u64, end: u64) {
    let true_loss = end.saturating_sub(restored);
    // The server runs (and counts b's rows) a moment before the agent has taken the reseed's
    // outcome: the lost writes come in just before the `reseeded` report.
    wait_for("a to report its reseed", Duration::from_secs(10), || {
        !reports(w.site("a").http, "reseeded").is_empty()
    });
    let at_a = reports(w.site("a").http, "lost_writes");
    if true_loss == 0 {
        assert!(at_a.is_empty(), "nothing was lost, yet a reports {at_a:?}");
        return;
    }
    assert_eq!(at_a.len(), 1, "a reports what it found: {at_a:?}");
    wait_for("b to hear of the loss", Duration::from_secs(10), || {
        !reports(w.site("b").http, "lost_writes").is_empty()
    });
    let found = reports(w.site("b").http, "lost_writes").remove(0);
    eprintln!("    lost writes: {found}");
    assert_eq!(found["site"], "a");
    assert_eq!(found["from_lsn"].as_u64(), Some(restored), "{found}");
    assert_eq!(found["to_lsn"].as_u64(), Some(end), "{found}");
    assert_eq!(found["lost"].as_u64(), Some(true_loss));
    // Each batch is one transaction: every acknowledged batch that began after the switch
    // point was lost, and at most every batch whose commit may lie after it (the one in
    // flight at the kill included).
    let surely = log.acked().filter(|bt| bt.before >= restored).count() as u64;
    let maybe = log
        .batches
        .iter()
        .filter(|bt| bt.after.is_none_or(|a| a > restored))
        .count() as u64;
    let tx = found["transactions"].as_u64().unwrap();
    assert!(
        surely <= tx && tx <= maybe,
        "{tx} lost transactions counted, {surely}..={maybe} batches lost"
    );
    if tx > 0 {
        assert!(found["first_commit"].is_string() && found["last_commit"].is_string());
    }
    let kept = PathBuf::from(found["kept"].as_str().unwrap());
    assert!(kept.join("loss.json").is_file(), "{}", kept.display());
    // The loss in time, from the newest commit b holds to the newest a lost: what the
    // writer's acknowledgements span (commits are acknowledged within milliseconds).
    let kept_ack = log
        .acked()
        .filter(|bt| bt.after.unwrap() <= restored)
        .filter_map(|bt| bt.acked_at)
        .max();
    let lost_ack = log
        .acked()
        .filter(|bt| bt.before >= restored)
        .filter_map(|bt| bt.acked_at)
        .max();
    if let (Some(k), Some(l), Some(s)) = (kept_ack, lost_ack, found["lost_s"].as_f64()) {
        let acks = l.duration_since(k).as_secs_f64();
        assert!(
            (s - acks).abs() <= 0.25,
            "lost_s {s} against {acks} s between the acknowledgements: {found}"
        );
    }
}

/// 2b. Streaming, with the default schedule (a log every 5 minutes, `archive_timeout` 60 s):
///    the primary site dies under a writer and the recovery site, which received the WAL
///    through the tunnel as it was flushed, promotes with every row acknowledged more than a
///    second before the kill; the reported bounds contain the true loss.
#[test]
fn streamed_postgres_failover_keeps_every_row_acknowledged_a_second_before_the_kill() {
    let Some(_serial) = postgres_or_skip("streamed failover") else {
        return;
    };
    let mut w = World::start(Opts {
        log_every_ms: Some(300_000),
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let b_http = w.site("b").http;
    await_receiver(a, false);
    let log = Arc::new(Mutex::new(Log::default()));
    let writer = Writer::start(a, log.clone(), Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(8));
    w.kill("a");
    cluster::stop_immediately(&w.site("a").pgdata);
    let killed = Instant::now();
    let log = writer.stop();
    let log = log.lock().unwrap();
    let end = wal_end(&w.site("a").pgdata);
    wait_for("b's engine to fail over", Duration::from_secs(60), || {
        !reports(b_http, "failover").is_empty()
    });
    let r = reports(b_http, "failover").remove(0);
    eprintln!("    failover report: {r}");
    wait_for("b to accept writes", Duration::from_secs(30), || {
        in_recovery(b) == Some(false)
    });
    let writable = killed.elapsed();
    let history = psql(b, "select pg_read_file('pg_wal/00000002.history')").unwrap();
    let restored = history
        .iter()
        .find_map(|l| l.split('\t').nth(1).and_then(PgLsn::parse))
        .unwrap_or_else(|| panic!("no switch point in {history:?}"))
        .0;
    let kept = check_prefix(b, &log, restored, restored);
    let lost: Vec<&Batch> = log.acked().skip((kept / ROWS_PER_BATCH) as usize).collect();
    let oldest_lost = lost
        .iter()
        .filter_map(|bt| bt.acked_at)
        .min()
        .map(|t| killed.saturating_duration_since(t));
    let true_loss = end.saturating_sub(restored);
    let lower = r["rpo_lower"].as_u64().unwrap();
    let upper = r["rpo_upper"].as_u64();
    eprintln!(
        "    kept {kept} of {} acknowledged rows; {} batches lost, the oldest acknowledged \
         {oldest_lost:?} before the kill; {true_loss} bytes of WAL lost, reported [{lower}, \
         {upper:?}] ({} to {} s of writes at {} bytes/s); writable {writable:?} after the kill",
        log.rows_acked(),
        lost.len(),
        r["rpo_lower_s"],
        r["rpo_upper_s"],
        r["write_rate_per_s"],
    );
    let rate = r["write_rate_per_s"].as_u64().unwrap_or(0);
    assert!(rate > 0, "the primary reported a write rate: {r}");
    assert_eq!(
        r["rpo_upper_s"].as_f64(),
        upper.map(|u| (u as f64 / rate as f64 * 1000.0).round() / 1000.0),
        "the upper bound in seconds of writes"
    );
    assert!(
        oldest_lost.is_none_or(|d| d <= Duration::from_secs(1)),
        "rows acknowledged more than a second before the kill were lost"
    );
    assert!(
        lower <= true_loss && upper.is_none_or(|u| true_loss <= u),
        "true loss {true_loss} outside [{lower}, {upper:?}]"
    );
    assert!(
        w.log("b")
            .contains("replaying the streamed WAL before promotion"),
        "the promotion used the stream"
    );
}

/// A standby that lags on purpose (`restore.apply_delay_ms`) while it streams: a bad `DELETE`
/// reaches the recovery site twice (in its finished segment, held back by the delay, and in the
/// stream) before the primary site is lost. `lifeboat failover --until` a time noted before the
/// delete promotes the standby with every row: the held segment is left out and reported, and
/// the streamed WAL, which carries the delete too, is not replayed. The loss bounds count the
/// delete as lost.
#[test]
fn a_streaming_delayed_postgres_standby_failed_over_until_before_a_delete_keeps_every_row() {
    let Some(_serial) = postgres_or_skip("delayed failover until") else {
        return;
    };
    let mut w = World::start(Opts {
        restore: "apply_delay_ms = 8000",
        failover: "automatic = false",
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let b_http = w.site("b").http;
    let rec = w.site("b").config.to_str().unwrap().to_string();
    await_receiver(a, false);
    psql(a, "create table pitr(id int primary key, v text not null)").unwrap();
    pitr_insert(a, 1..=50);
    psql(a, "select pg_switch_wal()").unwrap();
    wait_for("batch A at b's standby", Duration::from_secs(60), || {
        psql(b, "select count(*) from pitr").is_ok_and(|r| r == ["50"])
    });
    std::thread::sleep(Duration::from_secs(1));
    let noted = utc_now_ms();
    std::thread::sleep(Duration::from_secs(1));
    let out = psql_each(a, &["delete from pitr", "select pg_current_wal_lsn()"]).unwrap();
    let deleted_at = PgLsn::parse(out.last().unwrap()).unwrap().0;
    psql(a, "select pg_switch_wal()").unwrap();
    // Received both ways, applied neither: the stream holds the delete, and so does the
    // finished segment the delay holds back.
    wait_for("the delete streamed to b", Duration::from_secs(20), || {
        status(b_http).is_some_and(|d| d["streams"][0]["received_lsn"].as_u64() >= Some(deleted_at))
    });
    wait_for(
        "the delete's segment received at b",
        Duration::from_secs(20),
        || {
            status(b_http).is_some_and(|d| {
                d["databases"][0]["known_produced_lsn"].as_u64() >= Some(deleted_at)
            })
        },
    );
    assert_eq!(
        psql(b, "select count(*) from pitr").unwrap(),
        ["50"],
        "the delay holds the delete back"
    );
    w.kill("a");
    cluster::stop_immediately(&w.site("a").pgdata);
    let (code, out, err) = lifeboat_cli(&[
        "failover", "-c", &rec, "--force", "--until", &noted, "--wait", "90",
    ]);
    assert_eq!(code, 0, "failover --until failed: {out}{err}");
    let r = reports(b_http, "failover")
        .into_iter()
        .next()
        .expect("a failover report");
    eprintln!("    failover report: {r}");
    let left = &r["left_out"][0];
    assert_eq!(left["db"], "app", "{r}");
    assert!(left["artifacts"].as_u64() >= Some(1), "{r}");
    assert!(
        r["rpo_lower"].as_u64() >= Some(1),
        "the delete is counted as lost: {r}"
    );
    wait_for("b to accept writes", Duration::from_secs(30), || {
        in_recovery(b) == Some(false)
    });
    assert_eq!(
        pitr_rows(b),
        pitr_expected(1..=50),
        "every row committed before the noted time, none deleted"
    );
    assert!(
        w.log("b").contains("the streamed WAL is left out"),
        "the promotion left the stream out"
    );
    psql(b, "insert into pitr(id, v) values (51, 'after')").expect("b takes writes");
}

/// The server on `port` has the other site's receiver streaming from it (`sync`: as its
/// synchronous standby).
fn streaming_from(port: u16, sync: bool) -> bool {
    let sql = if sync {
        "select count(*) from pg_stat_replication where application_name = 'lifeboat' \
         and sync_state = 'sync'"
    } else {
        "select count(*) from pg_stat_replication where application_name = 'lifeboat'"
    };
    psql(port, sql).is_ok_and(|r| r.first().is_some_and(|n| n == "1"))
}

/// Wait until a's server has b's receiver streaming (`sync`: as its synchronous standby).
fn await_receiver(a: u16, sync: bool) {
    wait_for(
        "b's receiver to stream from a",
        Duration::from_secs(30),
        || streaming_from(a, sync),
    );
}

/// The agent on `http` has an active alert of `kind`.
fn alert_active(http: u16, kind: &str) -> bool {
    status(http).is_some_and(|d| {
        d["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|al| al["kind"] == kind)
    })
}

/// Per-commit time of `n` one-row commits in one session on `port`, with `synchronous_commit`
/// as given.
fn commit_time(port: u16, n: usize, synchronous_commit: &str) -> Duration {
    let set = format!("set synchronous_commit = {synchronous_commit}");
    let insert = "insert into lat(v) values ('x')";
    let mut sqls = vec![set.as_str()];
    sqls.extend(std::iter::repeat_n(insert, n));
    let t = Instant::now();
    psql_each(port, &sqls).expect("the commits");
    t.elapsed() / n as u32
}

/// 2c. Synchronous mode: a commit returns once the recovery site flushed its WAL, so a kill -9
///    of the primary site under a writer loses no acknowledged row. Prints what a commit costs
///    (the same session with `synchronous_commit = local`, interleaved).
#[test]
fn synchronous_postgres_failover_loses_no_acknowledged_row() {
    let Some(_serial) = postgres_or_skip("synchronous failover") else {
        return;
    };
    let mut w = World::start(Opts {
        log_every_ms: Some(300_000),
        driver: "synchronous = true",
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let b_http = w.site("b").http;
    await_receiver(a, true);
    psql(a, "create table lat(id bigserial primary key, v text)").unwrap();
    let (mut sync, mut local) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        sync.push(commit_time(a, 200, "on"));
        local.push(commit_time(a, 200, "local"));
    }
    sync.sort();
    local.sort();
    eprintln!(
        "    commit latency, median of 3 x 200 one-row commits: synchronous {:?}, local {:?} \
         (+{:?} per commit)",
        sync[1],
        local[1],
        sync[1].saturating_sub(local[1])
    );
    let log = Arc::new(Mutex::new(Log::default()));
    let writer = Writer::start(a, log.clone(), Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(6));
    w.kill("a");
    cluster::stop_immediately(&w.site("a").pgdata);
    let log = writer.stop();
    let log = log.lock().unwrap();
    wait_for("b's engine to fail over", Duration::from_secs(60), || {
        !reports(b_http, "failover").is_empty()
    });
    let r = reports(b_http, "failover").remove(0);
    eprintln!("    failover report: {r}");
    wait_for("b to accept writes", Duration::from_secs(30), || {
        in_recovery(b) == Some(false)
    });
    let got = batches_at(b);
    let acked: Vec<u64> = log.acked().map(|bt| bt.id).collect();
    let missing: Vec<&u64> = acked.iter().filter(|id| !got.contains_key(id)).collect();
    eprintln!(
        "    {} batches acknowledged, {} at b, {} missing",
        acked.len(),
        got.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged batches lost: {missing:?}");
    check_prefix(b, &log, log.last_after(), u64::MAX);
    // The promoted site does not wait for a recovery site that is not there (it starts
    // degraded until a receiver streams from it).
    let t = Instant::now();
    let after = Mutex::new(Log::default());
    assert!(write_batch(b, &after), "b takes writes");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a commit at the promoted site waited {:?}",
        t.elapsed()
    );
}

/// 2d. Synchronous mode with the recovery site away: commits wait at most
///    `synchronous_timeout_ms`, then the primary degrades to asynchronous with a critical
///    `synchronous_degraded` alert; the receiver back, synchronous mode and the alert clear.
#[test]
fn synchronous_postgres_degrades_while_the_recovery_site_is_away_and_recovers() {
    let Some(_serial) = postgres_or_skip("synchronous degrade") else {
        return;
    };
    let mut w = World::start(Opts {
        driver: "synchronous = true\nsynchronous_timeout_ms = 3000",
        ..Opts::default()
    });
    let a = w.site("a").pg;
    let a_http = w.site("a").http;
    await_receiver(a, true);
    // The recovery site's agent (and so its receiver) goes away.
    w.kill("b");
    let t = Instant::now();
    let log = Mutex::new(Log::default());
    assert!(write_batch(a, &log), "the commit returns once degraded");
    let waited = t.elapsed();
    eprintln!("    a commit with the recovery site away returned after {waited:?}");
    assert!(
        waited >= Duration::from_secs(2),
        "the commit did not wait for the recovery site: {waited:?}"
    );
    wait_for(
        "the synchronous_degraded alert",
        Duration::from_secs(10),
        || alert_kinds(a_http).contains(&"synchronous_degraded".to_string()),
    );
    let active = |http| alert_active(http, "synchronous_degraded");
    assert!(active(a_http));
    // Commits go on at once now.
    let t = Instant::now();
    assert!(write_batch(a, &log));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // The recovery site returns: synchronous again, the alert cleared.
    w.spawn("b");
    await_receiver(a, true);
    wait_for("the alert to clear", Duration::from_secs(20), || {
        !active(a_http)
    });
}

/// 2e. A recovery site that stops receiving does not fill the primary's disk: its slot keeps at
///    most `max_slot_wal_keep_mb` of WAL (a `slot_near_bound` warning before the bound), is
///    then given up by PostgreSQL, and the receiver, back, starts the stream over.
#[test]
fn a_recovery_site_that_stops_receiving_holds_at_most_the_slot_bound_of_the_primarys_wal() {
    let Some(_serial) = postgres_or_skip("slot bound") else {
        return;
    };
    let mut w = World::start(Opts {
        driver: "max_slot_wal_keep_mb = 8",
        ..Opts::default()
    });
    let a = w.site("a").pg;
    let a_http = w.site("a").http;
    await_receiver(a, false);
    let slot = || {
        psql(
            a,
            "select wal_status from pg_replication_slots where slot_name = 'lifeboat'",
        )
        .ok()
        .and_then(|r| r.first().cloned())
        .unwrap_or_default()
    };
    assert_eq!(slot(), "reserved");
    w.kill("b");
    psql(a, "create table fill(v text)").unwrap();
    let fill = "insert into fill select repeat(md5(g::text), 32) from generate_series(1, 1000) g";
    let mut mib = 0;
    while !alert_kinds(a_http).contains(&"slot_near_bound".to_string()) {
        assert!(mib < 64, "no slot_near_bound alert after {mib} MiB of WAL");
        psql(a, fill).unwrap();
        mib += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("    slot_near_bound raised after about {mib} MiB of WAL with the receiver away");
    // Past the bound, a checkpoint gives the slot up instead of keeping WAL for it.
    for _ in 0..12 {
        psql(a, fill).unwrap();
    }
    psql(a, "checkpoint").unwrap();
    let given_up = slot();
    assert!(
        given_up == "lost" || given_up == "unreserved",
        "the slot still keeps WAL past its bound: {given_up}"
    );
    eprintln!("    past the bound the slot is {given_up}");
    // The receiver returns: the stream starts over from what a keeps; the alert clears.
    w.spawn("b");
    wait_for("the stream to start over", Duration::from_secs(60), || {
        slot() == "reserved" && streaming_from(a, false)
    });
    wait_for("the alert to clear", Duration::from_secs(20), || {
        !alert_active(a_http, "slot_near_bound")
    });
}

/// 3. Planned switchover under a write load: zero acknowledged rows lost; the old primary
///    becomes b's standby and replays b's timeline without a reseed.
#[test]
fn postgres_switchover_loses_no_committed_row_and_the_old_primary_follows_the_new_one() {
    let Some(_serial) = postgres_or_skip("switchover") else {
        return;
    };
    let w = World::start(Opts::default());
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let log = Arc::new(Mutex::new(Log::default()));
    let writer = Writer::start(a, log.clone(), Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let (ok, out) = lifeboat(&[
        "switchover",
        "--config",
        w.site("a").config.to_str().unwrap(),
        "--wait",
        "90",
    ]);
    let took = t.elapsed();
    let log = writer.stop();
    let log = log.lock().unwrap();
    assert!(ok, "switchover: {out}");
    let r = reports(w.site("b").http, "switchover");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["rpo"], 0, "{r:?}");
    eprintln!("    switchover in {took:?}: {}", r[0]);
    assert_eq!(status(w.site("b").http).unwrap()["role"], "primary");
    assert_eq!(in_recovery(b), Some(false));
    // Zero loss: every acknowledged batch is at b (the one cut off by the fence may be too).
    let kept = check_prefix(b, &log, u64::MAX, u64::MAX);
    assert!(kept >= log.rows_acked());
    assert!(log.rows_acked() > 0);
    wait_for("a to become the secondary", Duration::from_secs(30), || {
        status(w.site("a").http).is_some_and(|d| d["role"] == "secondary")
    });
    let after = Mutex::new(Log::default());
    for _ in 0..3 {
        assert!(write_batch(b, &after), "b takes writes");
    }
    let n = count(b).unwrap();
    wait_for("a to replay b's rows", Duration::from_secs(60), || {
        count(a) == Some(n)
    });
    assert_eq!(in_recovery(a), Some(true));
    let kinds = alert_kinds(w.site("a").http);
    assert!(
        !kinds.iter().any(|k| k == "reseed"),
        "no reseed after a switchover: {kinds:?}"
    );
    // Streaming follows the roles: a's receiver streams from b, and a no longer keeps the
    // slot b's receiver held on it (unused, it would keep WAL at a up to its bound).
    wait_for(
        "a's receiver to stream from b",
        Duration::from_secs(30),
        || streaming_from(b, false),
    );
    wait_for("the stale slot at a to go", Duration::from_secs(30), || {
        psql(a, "select count(*) from pg_replication_slots")
            .is_ok_and(|r| r.first().is_some_and(|n| n == "0"))
    });
}

/// 4. Segments corrupted in transit: the damage is detected, the segment copied again, and
///    PostgreSQL never sees a damaged byte (no rejection in its log, every row arrives).
#[test]
fn postgres_segments_corrupted_in_transit_are_copied_again_and_never_replayed() {
    let Some(_serial) = postgres_or_skip("corrupt") else {
        return;
    };
    let w = World::start(Opts {
        proxy_to_b: true,
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let log = Arc::new(Mutex::new(Log::default()));
    let writer = Writer::start(a, log.clone(), Duration::from_millis(20));
    let proxy = w.proxy.as_ref().unwrap();
    for i in 1..=3 {
        proxy.corrupt_next();
        wait_for("a corrupted transfer", Duration::from_secs(20), || {
            proxy.corrupted.load(Ordering::SeqCst) >= i
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    let log = writer.stop();
    let log = log.lock().unwrap();
    w.converge(
        "b",
        log.rows_acked(),
        log.last_after(),
        Duration::from_secs(60),
    );
    check_prefix(b, &log, log.last_after(), log.last_after());
    let pglog = std::fs::read_to_string(w.scratch.path.join("b/spool/app/postgresql.log"))
        .unwrap_or_default();
    for bad in [
        "incorrect resource manager",
        "invalid record",
        "invalid magic",
    ] {
        assert!(!pglog.contains(bad), "PostgreSQL saw damaged WAL: {bad}");
    }
    let kinds = alert_kinds(w.site("b").http);
    assert!(!kinds.iter().any(|k| k == "restore_error"), "{kinds:?}");
    let caught = w
        .log("b")
        .lines()
        .filter(|l| {
            // Over TLS a flipped byte fails the record's authentication before any frame
            // checksum sees it; over plain TCP the frame or artifact checksum catches it.
            l.contains("fails its checksum")
                || l.contains("checksum_mismatch")
                || l.contains("cannot decrypt peer's message")
        })
        .count();
    assert!(caught >= 1, "b's agent says what it caught");
    eprintln!(
        "    alerts at b: {kinds:?}; {} transfers damaged",
        proxy.corrupted.load(Ordering::SeqCst)
    );
}

/// 5. A segment lost for good (removed from the primary's outbox before it could ship): b's
///    engine sees the hole, alerts `missing_log`, reseeds from a new base backup, and replay
///    resumes after it.
#[test]
fn a_hole_in_the_postgres_wal_chain_alerts_then_reseeds_and_replay_resumes() {
    let Some(_serial) = postgres_or_skip("hole") else {
        return;
    };
    let mut w = World::start(Opts {
        restore: "reseed_after_minutes = 0",
        alerts: "after_attempts = 1",
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let log = Mutex::new(Log::default());
    write_batch(a, &log);
    w.converge("b", ROWS_PER_BATCH, 0, Duration::from_secs(30));
    // b's agent is down: a's segments wait in its outbox.
    w.kill("b");
    let outbox = w.site("a").data_dir.join("outbox");
    let logs_in_outbox = || -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&outbox)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().to_string();
                n.contains("_tlog_") && !n.ends_with(".manifest")
            })
            .collect();
        v.sort();
        v
    };
    let before = logs_in_outbox().len();
    for _ in 0..4 {
        write_batch(a, &log);
        std::thread::sleep(Duration::from_millis(1200));
    }
    wait_for(
        "three new segments in a's outbox",
        Duration::from_secs(20),
        || logs_in_outbox().len() >= before + 3,
    );
    // Lose the second-newest for good (PostgreSQL recycled its own copy long ago).
    let v = logs_in_outbox();
    let lost = &v[v.len() - 2];
    let manifest = PathBuf::from(format!("{}.manifest", lost.display()));
    std::fs::remove_file(lost).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    w.spawn("b");
    let b_http = w.site("b").http;
    wait_for("a missing_log alert at b", Duration::from_secs(60), || {
        alert_kinds(b_http).contains(&"missing_log".to_string())
    });
    // The first reseed seeded b at the start; the second one heals the hole.
    wait_for("b to be reseeded", Duration::from_secs(90), || {
        reports(b_http, "reseeded").len() >= 2 && in_recovery(b) == Some(true)
    });
    let r = reports(b_http, "reseeded");
    eprintln!("    reseeds at b: {r:?}");
    let kinds = alert_kinds(b_http);
    assert!(kinds.contains(&"reseed".to_string()), "{kinds:?}");
    // Replay resumes after the new base backup.
    for _ in 0..3 {
        write_batch(a, &log);
    }
    let log = log.lock().unwrap();
    w.converge(
        "b",
        log.rows_acked(),
        log.last_after(),
        Duration::from_secs(60),
    );
    check_prefix(b, &log, log.last_after(), log.last_after());
}

/// `archive_timeout` bounds the RPO when writes are rare: with scheduled log backups far
/// apart, one row written is at the standby within `archive_timeout` and a little slack.
#[test]
fn archive_timeout_ships_a_lone_row_within_the_timeout() {
    let Some(_serial) = postgres_or_skip("archive_timeout") else {
        return;
    };
    let w = World::start(Opts {
        log_every_ms: Some(600_000),
        archive_timeout_s: Some(2),
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let log = Mutex::new(Log::default());
    // Quiet first: whatever the start wrote is shipped.
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    assert!(write_batch(a, &log));
    wait_for(
        "the lone row at the standby",
        Duration::from_secs(30),
        || count(b) == Some(ROWS_PER_BATCH),
    );
    let took = t.elapsed();
    eprintln!("    a lone row reached the standby in {took:?} (archive_timeout 2 s)");
    assert!(
        took < Duration::from_secs(2 + 4),
        "archive_timeout did not bound the RPO: {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The point-in-time archive at the recovery site

/// `lifeboat archive list --json` of the site file `config`.
fn archive_listing(config: &str) -> serde_json::Value {
    let (code, out, err) = lifeboat_cli(&["archive", "list", "-c", config, "--json"]);
    assert_eq!(code, 0, "archive list failed: {out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("archive list --json: {e}: {out}"))
}

/// The newest archived position of the first database, if it has a restorable point.
fn archive_last_position(config: &str) -> Option<u64> {
    archive_listing(config)["databases"][0]["ranges"]
        .as_array()?
        .iter()
        .filter_map(|r| r["last_position"].as_u64())
        .max()
}

/// `lifeboat restore` of database `app` from the recovery site's archive (`config`) to `at`,
/// then `action`, into `into`, checked on `port`: exit code, stdout, stderr.
fn restore_cli(
    config: &str,
    at: &str,
    action: &str,
    into: &Path,
    port: u16,
) -> (i32, String, String) {
    lifeboat_cli(&[
        "restore",
        "-c",
        config,
        "--db",
        "app",
        "--at",
        at,
        "--action",
        action,
        "--into",
        into.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ])
}

/// Make the newest archived WAL segment of `db_dir` finished before `noted` (an ISO time) look
/// copied 1 ms after it, as a backlog would: rewrite its manifest's creation time.
fn late_copy(db_dir: &str, noted: &str) {
    let t = lifeboat_core::utc::parse_iso(noted).unwrap().0;
    let mut newest: Option<(i64, PathBuf, serde_json::Value)> = None;
    for e in std::fs::read_dir(db_dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_none_or(|x| x != "manifest") {
            continue;
        }
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let created = m["created_utc_ms"].as_i64().unwrap();
        if m["kind"] == "tlog" && created < t && newest.as_ref().is_none_or(|n| n.0 < created) {
            newest = Some((created, path, m));
        }
    }
    let (_, path, mut m) = newest.expect("a segment archived before the noted time");
    m["created_utc_ms"] = serde_json::json!(t + 1);
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

/// `(id, v)` of every row of `pitr` at the server on `port`, as `id|v`.
fn pitr_rows(port: u16) -> Vec<String> {
    psql(port, "select id, v from pitr order by id").unwrap()
}

fn pitr_expected(ids: std::ops::RangeInclusive<u32>) -> Vec<String> {
    ids.map(|i| format!("{i}|row {i}")).collect()
}

/// Each row its own commit.
fn pitr_insert(port: u16, ids: std::ops::RangeInclusive<u32>) {
    let sqls: Vec<String> = ids
        .map(|i| format!("insert into pitr(id, v) values ({i}, 'row {i}')"))
        .collect();
    let refs: Vec<&str> = sqls.iter().map(String::as_str).collect();
    psql_each(port, &refs).expect("the inserts");
}

/// 6. The recovery site's `[archive]` keeps the base backup and every WAL segment it accepts;
///    after a bad `DELETE` reached the standby, `lifeboat restore --at` builds new data
///    directories from the archive alone: promoted at a noted time (exactly the rows committed
///    before it), paused just before the delete (every row, read-only). A time before the
///    archive is refused, a drill of the noted time passes, and the standby is untouched.
#[test]
fn a_restore_from_the_archive_to_a_noted_time_brings_back_exactly_the_rows_committed_before_it() {
    let Some(_serial) = postgres_or_skip("archive restore") else {
        return;
    };
    let t0 = Instant::now();
    let w = World::start(Opts {
        recovery_extra: "\n[archive]\ndir = \"archive\"\nkeep = \"1h\"\n",
        ..Opts::default()
    });
    let (a, b) = (w.site("a").pg, w.site("b").pg);
    let b_http = w.site("b").http;
    let rec = w.site("b").config.to_str().unwrap().to_string();
    let started = t0.elapsed();
    psql(a, "create table pitr(id int primary key, v text not null)").unwrap();
    wait_for(
        "the first full in b's archive",
        Duration::from_secs(30),
        || archive_last_position(&rec).is_some(),
    );

    // Batch A; a noted time T a second after its last commit; batch B a second later.
    pitr_insert(a, 1..=50);
    std::thread::sleep(Duration::from_secs(1));
    let noted = utc_now_ms();
    std::thread::sleep(Duration::from_secs(1));
    pitr_insert(a, 51..=100);
    psql(a, "select pg_switch_wal()").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let before_delete = utc_now_ms();
    std::thread::sleep(Duration::from_secs(1));
    // The bad write, and the position just after it.
    let out = psql_each(a, &["delete from pitr", "select pg_current_wal_lsn()"]).unwrap();
    let deleted_at = PgLsn::parse(out.last().unwrap()).unwrap().0;
    psql(a, "select pg_switch_wal()").unwrap();
    eprintln!(
        "    noted {noted}, before the delete {before_delete}, delete ends at {}",
        PgLsn(deleted_at)
    );
    let waited = Instant::now();
    while archive_last_position(&rec).is_none_or(|p| p < deleted_at) {
        // Once seen in CI and not since: say what the archive and the agent held.
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "timed out after 30s waiting for the delete in b's archive: archive {}; status {}",
            archive_listing(&rec),
            status(b_http).map_or_else(String::new, |d| format!(
                "databases {} alerts {} decisions {}",
                d["databases"], d["alerts"], d["recent_decisions"]
            ))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("the delete at b's standby", Duration::from_secs(30), || {
        psql(b, "select count(*) from pitr").is_ok_and(|r| r == ["0"])
    });
    let doc = archive_listing(&rec);
    eprintln!("    archive: {doc}");
    let ranges = doc["databases"][0]["ranges"].as_array().unwrap();
    assert!(
        ranges.iter().all(|r| r["bytes"].as_u64() > Some(0)
            && r["artifacts"].as_u64() >= Some(2)
            && r["full"].is_object()),
        "{doc}"
    );
    let restores = w.scratch.dir("restores");

    // 1. To T, promoted: batch A, none of B; a later plain start is a writable primary.
    let noted_dir = restores.join("noted");
    let port = cluster::free_port();
    let t = Instant::now();
    let (code, out, err) = restore_cli(&rec, &noted, "promote", &noted_dir, port);
    eprintln!(
        "    restore --at {noted} (promote) in {:?}: {out}{err}",
        t.elapsed()
    );
    assert_eq!(code, 0, "restore to T: {out}{err}");
    assert!(
        out.contains("restored database app") && out.contains("checked ok"),
        "{out}"
    );
    let c = cluster::Cluster::adopt(&noted_dir, port).unwrap();
    c.start().unwrap();
    assert_eq!(in_recovery(port), Some(false), "a primary");
    assert_eq!(pitr_rows(port), pitr_expected(1..=50), "batch A, none of B");
    psql(port, "insert into pitr(id, v) values (1000, 'after')").expect("it takes writes");
    c.stop("fast").unwrap();

    // 1b. The segment holding batch A copied late (a shipping backlog): its archived time is
    //     after T although batch B's commits came later still. The first segment finished
    //     "at or after T" then ends before any commit after T; PostgreSQL says so and the
    //     restore takes more segments, with the same rows.
    late_copy(doc["databases"][0]["dir"].as_str().unwrap(), &noted);
    let late_dir = restores.join("late");
    let port = cluster::free_port();
    let (code, out, err) = restore_cli(&rec, &noted, "promote", &late_dir, port);
    eprintln!("    restore --at {noted} after a late copy: {out}{err}");
    assert_eq!(code, 0, "restore to T past a late copy: {out}{err}");
    let c = cluster::Cluster::adopt(&late_dir, port).unwrap();
    c.start().unwrap();
    assert_eq!(pitr_rows(port), pitr_expected(1..=50), "batch A, none of B");
    c.stop("fast").unwrap();

    // 2. Just before the delete, paused: both batches, read-only, paused at the target.
    let before_dir = restores.join("before");
    let port = cluster::free_port();
    let t = Instant::now();
    let (code, out, err) = restore_cli(&rec, &before_delete, "pause", &before_dir, port);
    eprintln!(
        "    restore --at {before_delete} (pause) in {:?}: {out}{err}",
        t.elapsed()
    );
    assert_eq!(code, 0, "restore before the delete: {out}{err}");
    assert!(out.contains("checked ok"), "{out}");
    let c = cluster::Cluster::adopt(&before_dir, port).unwrap();
    c.start().unwrap();
    wait_for(
        "the copy to pause at its target",
        Duration::from_secs(30),
        || psql(port, "select pg_get_wal_replay_pause_state()").is_ok_and(|r| r == ["paused"]),
    );
    assert_eq!(in_recovery(port), Some(true), "still in recovery");
    assert_eq!(pitr_rows(port), pitr_expected(1..=100), "both batches");
    let refused = psql(port, "insert into pitr(id, v) values (1000, 'after')")
        .expect_err("a paused copy is read-only");
    assert!(refused.contains("read-only"), "{refused}");
    c.stop("fast").unwrap();

    // 3. A time before anything archived: no point, nothing written.
    let early = restores.join("early");
    let (code, out, err) = lifeboat_cli(&[
        "restore",
        "-c",
        &rec,
        "--db",
        "app",
        "--at",
        "2001-01-01T00:00:00Z",
        "--action",
        "promote",
        "--into",
        early.to_str().unwrap(),
        "--port",
        &cluster::free_port().to_string(),
    ]);
    eprintln!("    restore --at 2001-01-01T00:00:00Z: exit {code}: {err}");
    assert_eq!(code, 1, "a time before the archive: {out}{err}");
    assert!(err.contains("no point at or before"), "{err}");
    assert!(!early.exists());

    // 4. A drill of T from the archive.
    let t = Instant::now();
    let (code, out, err) = lifeboat_cli(&[
        "drill",
        "-c",
        &rec,
        "--at",
        &noted,
        "--port",
        &cluster::free_port().to_string(),
    ]);
    eprintln!("    drill --at {noted} in {:?}: {out}{err}", t.elapsed());
    assert_eq!(code, 0, "drill --at T: {out}{err}");
    assert!(
        out.contains("drill of app at") && out.contains(": ok"),
        "{out}"
    );

    // 5. The standby is untouched: still in recovery with the delete, and it still follows.
    assert_eq!(in_recovery(b), Some(true));
    assert_eq!(psql(b, "select count(*) from pitr").unwrap(), ["0"]);
    assert_eq!(status(b_http).unwrap()["role"], "secondary");
    psql(a, "insert into pitr(id, v) values (2000, 'later')").unwrap();
    wait_for("b to follow a's next row", Duration::from_secs(30), || {
        psql(b, "select id from pitr").is_ok_and(|r| r == ["2000"])
    });
    eprintln!(
        "    world up in {started:?}, the whole test {:?}",
        t0.elapsed()
    );
}
