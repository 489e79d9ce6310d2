//! PostgreSQL 15 side by side with its peers (issue 14): lifeboat against pg_auto_failover for
//! an unplanned failover, lifeboat's planned switchover, and `lifeboat wal-push` against
//! pgBackRest's `archive-push`. Real processes on loopback, the same writer, the same kill.
//!
//! Run with `cargo bench -p lifeboat-io-tokio --bench pg_peers` (about 4 minutes; not run in
//! CI). Settings: `LIFEBOAT_BENCH_PG_PEERS_RUNS` (default 1) repeats the failover measurements,
//! lifeboat and pg_auto_failover alternating; a figure printed is the median of the runs, every
//! run is on stderr. `LIFEBOAT_KEEP_SCRATCH=1` keeps the scratch directories (their logs).
//!
//! **The writer.** One row per transaction, `insert into t(id) values (<n>)`, at 100 tx/s (a
//! fixed schedule that does not catch up in bursts) over one connection to the primary's
//! server on 127.0.0.1 (the `postgres` crate's synchronous client, without TLS, trust
//! authentication; each insert a simple query). A commit is acknowledged when the server
//! answered the insert without an error; the bench keeps every acknowledged id.
//!
//! **The kill.** After 8 s of writes the primary site dies: SIGKILL to its server's postmaster
//! (the pid in `postmaster.pid`; SIGSTOP first, so that it forks nothing meanwhile) and to every
//! child of it (PostgreSQL's children lead their own process groups and would otherwise linger
//! until they notice), and to the tool's process(es) there, back to back; the clock starts just
//! before. From then on the bench tries `insert into probe default values` at the other server
//! every 100 ms (a fresh connection each time) and stops the clock at the first that succeeds.
//! Rows lost are the acknowledged ids missing from `t` at that server then.
//!
//! **lifeboat** (always): two clusters, two `lifeboat agent` processes with the postgres driver
//! and a `lifeboat arbiter` on loopback, set up as `tests/pg_agent.rs` does, but with every
//! engine and driver timer at its default (lease 8 s renewed every 2 s, heartbeat and probes
//! every 1 s, 3 failed probes over 3 s, arbiter timeout 3 s, a log backup every 5 minutes,
//! `archive_timeout` 60 s) and default 16 MiB WAL segments. The one thing not left to the
//! defaults is the recovery site's first copy: `lifeboat reseed app --wait` asks for the first
//! base backup at once instead of at the weekly full. Printed:
//! - `pg_failover_s_default`: kill to the first insert accepted at the recovery site's server;
//! - `pg_rows_lost_default`, with `pg_acked_default` (the acknowledged total): the writer's
//!   8 s of rows sit in the unfinished WAL segment, which the recovery site streamed and
//!   replays before promotion;
//! - `pg_switchover_s` and `pg_switchover_rows_lost`: in a fresh pair, after 8 s of writes,
//!   `lifeboat switchover --wait` from the primary's configuration; the clock runs from the
//!   command's start to the first insert accepted at the other site's server (tried every
//!   100 ms from the start), the writer still writing to the old primary meanwhile.
//!
//! **pg_auto_failover** (when `pg_autoctl` is on the PATH or in PostgreSQL's bin directory:
//! Debian's `postgresql-15-auto-failover`; otherwise `bench pg_paf_skipped <reason>`): a
//! monitor and two nodes made by `pg_autoctl create monitor|postgres … --auth trust --no-ssl
//! --ssl-mode disable` (`--run`), each in its own process group, as PostgreSQL's user when the
//! bench runs as root, with its configuration under the scratch directory (`XDG_CONFIG_HOME`,
//! `XDG_DATA_HOME`); every setting at its default (it replicates synchronously with
//! `synchronous_standby_names = 'ANY 1 (…)'` once the secondary is in sync). The writer starts
//! once the monitor reports node 1 `primary` and node 2 `secondary`. The kill is SIGSTOP to the
//! primary node's process group (its `pg_autoctl` processes and its postmaster), the server's
//! kill as above, then SIGKILL to the group. Printed: `pg_paf_failover_s_default`,
//! `pg_paf_rows_lost_default` (with `pg_paf_acked_default`) and
//! `pg_paf_over_lifeboat_failover_ratio` (pg_auto_failover's seconds over lifeboat's; above 1
//! lifeboat is faster). Then, in a fresh formation, the switchover as lifeboat's (`pg_autoctl
//! perform switchover --wait` after 8 s of writes to node 1, inserts offered to node 2):
//! `pg_paf_switchover_s`, `pg_paf_switchover_rows_lost` and
//! `pg_paf_over_lifeboat_switchover_ratio`.
//!
//! **Streaming under load** (always): in a fresh pair, `pgbench -n -c 2 -j 2 -T
//! $LIFEBOAT_BENCH_PG_STREAM_S` (default 20) at a's server (scale 10) while the bench samples
//! every 50 ms a's `pg_current_wal_flush_lsn()` and the end of the valid WAL in b's stream
//! directory; a flush position's lag is the time until the stream held it. Printed:
//! `pg_stream_lag_p50_s`, `pg_stream_lag_p99_s`, `pg_stream_lag_max_s` and
//! `pg_stream_wal_mib_per_s` (the load's WAL rate).
//!
//! **Archiving a backlog** (when `pgbackrest` is on the PATH; otherwise `bench
//! pg_pgbackrest_skipped <reason>`): a third cluster with 16 MiB segments archives
//! `LIFEBOAT_BENCH_PG_PUSH_SEGMENTS` (default 20) finished segments with plain `cp`, as
//! `benches/pg.rs` does; then each of them is archived again the way PostgreSQL's archiver
//! does it, one process per segment (`sh -c`): `lifeboat wal-push <seg>` into a fresh spool
//! against `pgbackrest archive-push <seg>` into a fresh stanza of a local posix repository
//! (default compression: gzip), three rounds alternating, the best round of each. Printed:
//! `pg_archive_lifeboat_segments_per_sec`, `pg_archive_pgbackrest_segments_per_sec` and
//! `pg_archive_vs_pgbackrest_ratio` (lifeboat's rate over pgBackRest's; higher is better).
//!
//! Without PostgreSQL it prints `bench pg_peers_skipped <reason>` and nothing else. A part that
//! fails says why on stderr (with the end of the tools' logs) and prints no figure; the other
//! parts still run. Every process it started is killed and every scratch directory removed at
//! the end of each part, also when it fails (drop guards).

#[allow(dead_code)]
mod common;

#[path = "../tests/pgkit/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use cluster::{Cluster, ScratchDir};
use common::status;
use postgres::{Client, NoTls, SimpleQueryMessage};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");
/// The writer's period: 100 tx/s.
const PERIOD: Duration = Duration::from_millis(10);
/// Seconds of writes before the kill (and before the switchover).
const WRITES: Duration = Duration::from_secs(8);
/// How often the other server is offered an insert after the kill.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for a new primary.
const FAILOVER_WITHIN: Duration = Duration::from_secs(240);
/// Longest wait for a set-up step.
const SETUP_WITHIN: Duration = Duration::from_secs(180);
/// The tables every server gets before the writer starts.
const TABLES: &str = "create table t(id bigint primary key, at timestamptz default now()); \
                      create table probe(id bigserial primary key, at timestamptz default now())";

fn bench(name: &str, value: impl std::fmt::Display) {
    println!("bench {name} {value}");
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("timed out after {within:?} waiting for {what}"))
}

fn tail(path: &Path, n: usize) -> String {
    let t = std::fs::read_to_string(path).unwrap_or_default();
    let l: Vec<&str> = t.lines().collect();
    format!(
        "--- {} (last {n} lines) ---\n{}",
        path.display(),
        l[l.len().saturating_sub(n)..].join("\n")
    )
}

/// The postmaster's pid, from `<pgdata>/postmaster.pid`.
fn postmaster_pid(pgdata: &Path) -> Result<i32, String> {
    let f = pgdata.join("postmaster.pid");
    let text = std::fs::read_to_string(&f).map_err(|e| format!("reading {}: {e}", f.display()))?;
    let pid: i32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("{} names no pid", f.display()))?;
    // A pid file outlives a killed server: the pid must still be this server's postmaster.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let data = pgdata.as_os_str().as_encoded_bytes();
    if !cmdline.windows(data.len()).any(|w| w == data) {
        return Err(format!(
            "the server of {} (pid {pid}) is not running",
            pgdata.display()
        ));
    }
    Ok(pid)
}

/// The processes whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        // /proc/<pid>/stat: `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) of a process (or, negative, a process group) this bench started or
    // whose pid a server it started wrote; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGKILL a server, as when its machine dies: its postmaster and every child of it
/// (PostgreSQL's children each lead their own process group, so a group kill misses them).
/// The postmaster is stopped first so that it forks nothing while its children are listed.
fn kill_server(pgdata: &Path) -> Result<(), String> {
    let pm = postmaster_pid(pgdata)?;
    signal(pm, libc::SIGSTOP);
    for c in children(pm) {
        signal(c, libc::SIGKILL);
    }
    signal(pm, libc::SIGKILL);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A PostgreSQL client: the `postgres` crate's synchronous client, over TCP to 127.0.0.1 without
// TLS, as user `postgres` (the servers trust loopback).

/// A connection to database `db` of the server on `port`. `timeout` bounds the TCP connect, so
/// that polling a dead server does not hang.
fn connect(port: u16, db: &str, timeout: Duration) -> Result<Client, String> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(db)
        .connect_timeout(timeout)
        .connect(NoTls)
        .map_err(|e| pg_error(&format!("connecting to 127.0.0.1:{port} ({db})"), &e))
}

/// What failed, with the server's severity, code and message (or the client's error).
fn pg_error(what: &str, e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{what}: {} {} {}",
            db.severity(),
            db.code().code(),
            db.message()
        ),
        None => format!("{what}: {e}"),
    }
}

/// One statement (or several separated by `;`, one implicit transaction) over the simple query
/// protocol; the rows, each column as text (`None` for NULL).
fn simple_rows(c: &mut Client, q: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let failed = |e: postgres::Error| pg_error(&format!("{q:?}"), &e);
    let mut rows = Vec::new();
    for m in c.simple_query(q).map_err(failed)? {
        if let SimpleQueryMessage::Row(r) = m {
            let row = (0..r.len())
                .map(|i| r.try_get(i).map(|v| v.map(str::to_owned)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(failed)?;
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `q` (see `simple_rows`) on a fresh connection to database `postgres` at `port`.
fn sql(port: u16, q: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    simple_rows(&mut connect(port, "postgres", Duration::from_secs(5))?, q)
}

fn in_recovery(port: u16) -> Option<bool> {
    let mut c = connect(port, "postgres", Duration::from_secs(2)).ok()?;
    c.query_one("select pg_is_in_recovery()", &[])
        .ok()?
        .try_get(0)
        .ok()
}

// ---------------------------------------------------------------------------------------------
// The writer and the measurement

struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<i64>>>,
    handle: Option<JoinHandle<u64>>,
}

impl Writer {
    /// One row per transaction into the server on `port` at 100 tx/s.
    fn start(port: u16) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let handle = std::thread::spawn(move || {
            let mut conn: Option<Client> = None;
            let mut failed = 0u64;
            let mut id = 0i64;
            let mut next = Instant::now();
            while !s.load(Ordering::SeqCst) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                next = next.max(Instant::now() - PERIOD) + PERIOD;
                id += 1;
                if conn.is_none() {
                    conn = connect(port, "postgres", Duration::from_millis(200)).ok();
                }
                let done = conn
                    .as_mut()
                    .map(|c| c.batch_execute(&format!("insert into t(id) values ({id})")));
                match done {
                    Some(Ok(_)) => a.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                    Some(Err(_)) => {
                        conn = None;
                        failed += 1;
                    }
                    None => failed += 1,
                }
            }
            failed
        });
        Writer {
            stop,
            acked,
            handle: Some(handle),
        }
    }

    /// Stop; the acknowledged ids.
    fn stop(&mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            if let Ok(failed) = h.join() {
                if failed > 0 {
                    eprintln!("  writer: {failed} inserts not acknowledged");
                }
            }
        }
        std::mem::take(&mut *self.acked.lock().unwrap_or_else(|e| e.into_inner()))
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

/// Offer an insert to the server on `port` every 100 ms from `from` until one is accepted;
/// the seconds from `from`. `stop` ends the wait early (an error).
fn first_insert(port: u16, from: Instant, stop: Option<&AtomicBool>) -> Result<f64, String> {
    let mut next = from;
    let mut last;
    loop {
        let r = connect(port, "postgres", Duration::from_millis(500)).and_then(|mut c| {
            let q = "insert into probe default values";
            c.batch_execute(q).map_err(|e| pg_error(q, &e))
        });
        match r {
            Ok(_) => return Ok(from.elapsed().as_secs_f64()),
            Err(e) => last = e,
        }
        if from.elapsed() > FAILOVER_WITHIN || stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            return Err(format!(
                "no insert accepted on port {port} within {:?} (last: {last})",
                from.elapsed()
            ));
        }
        next += POLL;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

/// Acknowledged ids missing from `t` at the server on `port`.
fn rows_lost(port: u16, acked: &[i64]) -> Result<u64, String> {
    let q = "select id from t";
    let have = connect(port, "postgres", Duration::from_secs(5))?
        .query(q, &[])
        .map_err(|e| pg_error(q, &e))?
        .iter()
        .map(|r| r.try_get::<_, i64>(0))
        .collect::<Result<HashSet<i64>, _>>()
        .map_err(|e| pg_error(q, &e))?;
    Ok(acked.iter().filter(|i| !have.contains(i)).count() as u64)
}

/// What one unplanned failover measured.
struct Failover {
    secs: f64,
    lost: u64,
    acked: u64,
}

// ---------------------------------------------------------------------------------------------
// lifeboat: arbiter, site "a" (first primary) and "b", engine defaults

struct Site {
    name: &'static str,
    http: u16,
    pg: u16,
    pgdata: PathBuf,
    config: PathBuf,
}

struct LbWorld {
    procs: HashMap<&'static str, Child>,
    sites: [Site; 2],
    /// Last field: dropped after the processes are killed; stops every server under it.
    scratch: ScratchDir,
}

const ENGINE_DEFAULTS: &str = r#"
[engine]
sites = ["a", "b"]
initial_primary = "a"
databases = ["app"]
arbiter = true
"#;

fn lifeboat(args: &[&str]) -> Result<String, String> {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running lifeboat {args:?}: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("lifeboat {args:?} failed ({}): {text}", out.status))
    }
}

fn reports(http: u16, kind: &str) -> Vec<Value> {
    status(http)
        .and_then(|d| d["reports"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["kind"] == kind)
        .collect()
}

impl LbWorld {
    /// Both sites up, `t` and `probe` at a, b's standby seeded and replaying.
    fn start() -> Result<LbWorld, String> {
        let scratch = ScratchDir::new("peers-lb")?;
        // PostgreSQL's user runs archive_command / restore_command: a copy it may execute.
        let bin = scratch.dir("bin").join("lifeboat");
        std::fs::copy(BIN, &bin).map_err(|e| format!("copying {BIN}: {e}"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("chmod {}: {e}", bin.display()))?;
        }
        let p = free_ports(8);
        let (arb_listen, arb_http) = (p[0], p[1]);
        let mk = |name: &'static str, http, pg| {
            let root = scratch.dir(name);
            Site {
                name,
                http,
                pg,
                pgdata: root.join("pgdata"),
                config: root.join("site.toml"),
            }
        };
        let sites = [mk("a", p[3], p[4]), mk("b", p[6], p[7])];
        let listen = [p[2], p[5]];
        // a's cluster exists; b's is made by the first base backup the engine ships.
        let c = Cluster::initdb(&sites[0].pgdata, sites[0].pg, 16)?;
        std::mem::forget(c); // the scratch guard stops every server under it
        let certs = scratch.path.join("certs");
        lifeboat_io_tokio::certs::init(&certs, &["a".into(), "b".into()], "arbiter", 30)
            .map_err(|e| format!("certificates: {e:#}"))?;
        for (i, s) in sites.iter().enumerate() {
            let other = &sites[1 - i];
            let text = format!(
                "site = \"{name}\"\nlisten = \"127.0.0.1:{listen}\"\npeer = \"127.0.0.1:{peer}\"\n\
                 arbiter = \"127.0.0.1:{arb_listen}\"\nhttp = \"127.0.0.1:{http}\"\n\
                 peer_http = \"127.0.0.1:{peer_http}\"\ndata_dir = \"{data}\"\n\n\
                 [driver]\nkind = \"postgres\"\nbin_dir = \"{pgbin}\"\nspool_dir = \"{spool}\"\n\
                 lifeboat_bin = \"{bin}\"\n\n\
                 [[driver.databases]]\nname = \"app\"\ndata_dir = \"{pgdata}\"\nport = {pg}\n\
                 {tls}{ENGINE_DEFAULTS}",
                tls = lifeboat_io_tokio::demo::tls_toml(&certs, s.name),
                name = s.name,
                listen = listen[i],
                peer = listen[1 - i],
                http = s.http,
                peer_http = other.http,
                data = scratch.dir(&format!("{}/agent", s.name)).display(),
                pgbin = cluster::bin_dir().display(),
                spool = scratch.dir(&format!("{}/spool", s.name)).display(),
                bin = bin.display(),
                pgdata = s.pgdata.display(),
                pg = s.pg,
            );
            std::fs::write(&s.config, text).map_err(|e| format!("writing a site file: {e}"))?;
        }
        let arb = scratch.path.join("arbiter.toml");
        let text = lifeboat_io_tokio::demo::arbiter_toml_with(
            arb_listen,
            arb_http,
            &scratch.dir("arbiter"),
            &certs,
            ENGINE_DEFAULTS,
        );
        std::fs::write(&arb, text).map_err(|e| format!("writing the arbiter's file: {e}"))?;
        let mut w = LbWorld {
            procs: HashMap::new(),
            sites,
            scratch,
        };
        w.spawn("arbiter", "arbiter", &arb)?;
        for i in 0..2 {
            let (name, cfg) = (w.sites[i].name, w.sites[i].config.clone());
            w.spawn(name, "agent", &cfg)?;
        }
        let (a_http, a_pg) = (w.sites[0].http, w.sites[0].pg);
        w.step(wait_until("a to accept writes", SETUP_WITHIN, || {
            status(a_http).is_some_and(|d| d["writable"] == true)
        }))?;
        w.step(wait_until("a's server to answer", SETUP_WITHIN, || {
            in_recovery(a_pg) == Some(false)
        }))?;
        w.step(sql(a_pg, TABLES).map(drop))?;
        // The recovery site has no copy yet: ask for its first base backup now.
        let b_config = w.sites[1].config.display().to_string();
        w.step(lifeboat(&["reseed", "app", "--config", &b_config, "--wait", "180"]).map(drop))?;
        let b_pg = w.sites[1].pg;
        w.step(wait_until("b's standby to answer", SETUP_WITHIN, || {
            in_recovery(b_pg) == Some(true)
        }))?;
        Ok(w)
    }

    fn spawn(&mut self, name: &'static str, sub: &str, cfg: &Path) -> Result<(), String> {
        let path = self.scratch.path.join(format!("{name}.log"));
        let log = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let child = Command::new(BIN)
            .arg(sub)
            .arg("--config")
            .arg(cfg)
            .env("LIFEBOAT_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("starting lifeboat {sub}: {e}"))?;
        self.procs.insert(name, child);
        Ok(())
    }

    /// A step's error, with the end of every log.
    fn step<T>(&self, r: Result<T, String>) -> Result<T, String> {
        r.map_err(|e| {
            let mut out = e;
            for n in ["arbiter", "a", "b"] {
                out.push('\n');
                out.push_str(&tail(&self.scratch.path.join(format!("{n}.log")), 25));
            }
            for s in &self.sites {
                out.push('\n');
                out.push_str(&tail(
                    &self
                        .scratch
                        .path
                        .join(s.name)
                        .join("spool/app/postgresql.log"),
                    15,
                ));
            }
            out
        })
    }

    /// The primary site dies under the writer; b's engine fails over on its own.
    fn failover(mut self) -> Result<Failover, String> {
        let (a_pg, b_pg, b_http) = (self.sites[0].pg, self.sites[1].pg, self.sites[1].http);
        let mut writer = Writer::start(a_pg);
        std::thread::sleep(WRITES);
        let killed = Instant::now();
        let pm = kill_server(&self.sites[0].pgdata);
        if let Some(mut c) = self.procs.remove("a") {
            let _ = c.kill();
            let _ = c.wait();
        }
        let acked = writer.stop();
        self.step(pm)?;
        let secs = self.step(first_insert(b_pg, killed, None))?;
        let lost = self.step(rows_lost(b_pg, &acked))?;
        // For the record only (the clock stopped at the insert): the engine's own report.
        let mut report = None;
        let _ = wait_until("b's failover report", Duration::from_secs(10), || {
            report = reports(b_http, "failover").into_iter().next();
            report.is_some()
        });
        match report {
            Some(r) => eprintln!(
                "  lifeboat's failover report: rto_ms {} rpo [{}, {}] bytes",
                r["rto_ms"], r["rpo_lower"], r["rpo_upper"]
            ),
            None => eprintln!("  no failover report at b's /status within 10 s"),
        }
        Ok(Failover {
            secs,
            lost,
            acked: acked.len() as u64,
        })
    }

    /// A planned switchover under the writer.
    fn switchover(self) -> Result<Switchover, String> {
        let (a_pg, b_pg) = (self.sites[0].pg, self.sites[1].pg);
        let a_config = self.sites[0].config.display().to_string();
        let r = switchover_under_writer(a_pg, b_pg, || {
            lifeboat(&["switchover", "--config", &a_config, "--wait", "120"]).map(drop)
        });
        self.step(r)
    }
}

/// Streaming under a `pgbench` load at a's server for `secs`: every 50 ms the primary's flush
/// position and the end of the valid WAL in b's stream directory; a flush position's lag is
/// the time until the stream held it. Returns the lags (s), pgbench's tps and the WAL rate.
fn stream_lag(w: &LbWorld, secs: u64) -> Result<(Vec<f64>, f64, f64), String> {
    let a_pg = w.sites[0].pg;
    let dir = w.scratch.path.join("b/spool/app/stream");
    w.step(wait_until("b's receiver to stream", SETUP_WITHIN, || {
        sql(
            a_pg,
            "select count(*) from pg_stat_replication where application_name = 'lifeboat'",
        )
        .is_ok_and(|r| r.first().and_then(|r| r[0].as_deref()) == Some("1"))
    }))?;
    let pgbench = cluster::bin_dir().join("pgbench");
    let base = |c: &mut Command| {
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
            .arg(a_pg.to_string());
    };
    let mut init = Command::new(&pgbench);
    base(&mut init);
    let out = init
        .args(["-i", "-q", "-s", "10", "postgres"])
        .output()
        .map_err(|e| format!("pgbench -i: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pgbench -i: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let flushed = || -> Option<u64> {
        sql(a_pg, "select (pg_current_wal_flush_lsn() - '0/0')::bigint")
            .ok()?
            .first()?[0]
            .as_deref()?
            .parse()
            .ok()
    };
    let mut run = Command::new(&pgbench);
    base(&mut run);
    let child = run
        .args(["-n", "-c", "2", "-j", "2", "-T"])
        .arg(secs.to_string())
        .arg("postgres")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("pgbench: {e}"))?;
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    let t0 = Instant::now();
    let start_lsn = flushed().unwrap_or(0);
    while t0.elapsed() < Duration::from_secs(secs) {
        if let Some(f) = flushed() {
            sent.push((Instant::now(), f));
        }
        let r = lifeboat_io_tokio::drivers::postgres::stream::received_end(&dir, 16 << 20);
        got.push((Instant::now(), r.unwrap_or(0)));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The tail: until the stream holds the last flush position (at most 10 s more).
    let last = sent.last().map_or(0, |s| s.1);
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let r =
            lifeboat_io_tokio::drivers::postgres::stream::received_end(&dir, 16 << 20).unwrap_or(0);
        got.push((Instant::now(), r));
        if r >= last {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let rate = (last.saturating_sub(start_lsn)) as f64 / secs as f64;
    let lags = sent
        .iter()
        .map(|(t, lsn)| {
            got.iter()
                .find(|(u, r)| u >= t && r >= lsn)
                .map_or(f64::INFINITY, |(u, _)| (*u - *t).as_secs_f64())
        })
        .collect();
    Ok((lags, tps, rate))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// What one planned switchover measured.
struct Switchover {
    secs: f64,
    lost: u64,
    acked: u64,
}

/// The writer into `old` for 8 s, then `perform` (a switchover command that waits until it is
/// done) while inserts are offered to `new` every 100 ms from the command's start.
fn switchover_under_writer(
    old: u16,
    new: u16,
    perform: impl FnOnce() -> Result<(), String>,
) -> Result<Switchover, String> {
    let mut writer = Writer::start(old);
    std::thread::sleep(WRITES);
    let t = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || first_insert(new, t, Some(&stop)))
    };
    let done = perform();
    if done.is_err() {
        stop.store(true, Ordering::SeqCst);
    }
    let secs = poller
        .join()
        .map_err(|_| "the switchover's poller panicked".to_string())
        .and_then(|r| r);
    let acked = writer.stop();
    done?;
    let secs = secs?;
    Ok(Switchover {
        secs,
        lost: rows_lost(new, &acked)?,
        acked: acked.len() as u64,
    })
}

impl Drop for LbWorld {
    fn drop(&mut self) {
        for (_, mut c) in self.procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_ports(n: usize) -> Vec<u16> {
    lifeboat_io_tokio::ports::free_loopback_ports(n).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// pg_auto_failover: a monitor and two nodes

/// Where `pg_autoctl` is: PostgreSQL's bin directory, else the PATH.
fn find_program(name: &str, also: &Path) -> Option<PathBuf> {
    let p = also.join(name);
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

struct PafWorld {
    autoctl: PathBuf,
    root: PathBuf,
    /// Process groups of `pg_autoctl run` (monitor, node1, node2), killed when dropped.
    groups: Vec<(String, Child)>,
    ports: [u16; 3],
    /// Last field: dropped after the process groups are killed; stops every server under it.
    _scratch: ScratchDir,
}

impl PafWorld {
    fn command(&self, args: &[&str]) -> Command {
        let xdg = [
            format!("XDG_CONFIG_HOME={}", self.root.join("xdg/config").display()),
            format!("XDG_DATA_HOME={}", self.root.join("xdg/data").display()),
            format!("XDG_RUNTIME_DIR={}", self.root.join("xdg/run").display()),
        ];
        let mut c = match cluster::server_user() {
            Some((name, _)) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(name).arg("--");
                c
            }
            None => Command::new("/usr/bin/env"),
        };
        if cluster::server_user().is_some() {
            c.arg("env");
        }
        c.args(&xdg).arg(&self.autoctl).args(args);
        c.current_dir(&self.root).stdin(Stdio::null());
        c
    }

    /// Run `pg_autoctl …` in its own process group, its output in `<name>.log`.
    fn run(&mut self, name: &str, args: &[&str]) -> Result<(), String> {
        let path = self.root.join(format!("{name}.log"));
        let log = std::fs::File::create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let child = self
            .command(args)
            .process_group(0)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("starting pg_autoctl {args:?}: {e}"))?;
        self.groups.push((name.to_string(), child));
        Ok(())
    }

    fn step<T>(&self, r: Result<T, String>) -> Result<T, String> {
        r.map_err(|e| {
            let mut out = e;
            for n in ["monitor-create", "monitor", "node1", "node2"] {
                out.push('\n');
                out.push_str(&tail(&self.root.join(format!("{n}.log")), 20));
            }
            out
        })
    }

    fn node_states(&self) -> Vec<(String, String, String)> {
        let Ok(mut c) = connect(self.ports[0], "pg_auto_failover", Duration::from_secs(2)) else {
            return Vec::new();
        };
        c.query(
            "select nodename, reportedstate::text, goalstate::text from pgautofailover.node \
             order by nodeid",
            &[],
        )
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let col = |i| r.try_get::<_, Option<String>>(i).ok().flatten();
            (
                col(0).unwrap_or_default(),
                col(1).unwrap_or_default(),
                col(2).unwrap_or_default(),
            )
        })
        .collect()
    }

    fn settled(&self, want: &[(&str, &str)]) -> bool {
        let s = self.node_states();
        want.iter().all(|(n, st)| {
            s.iter()
                .any(|(name, rep, goal)| name == n && rep == st && goal == st)
        })
    }

    /// The monitor, node1 (primary) and node2 (secondary), `t` and `probe` at node1.
    fn start(autoctl: &Path) -> Result<PafWorld, String> {
        let scratch = ScratchDir::new("peers-paf")?;
        let root = scratch.path.join("paf");
        let user = cluster::server_user().map(|u| u.1);
        for d in ["", "xdg", "xdg/config", "xdg/data", "xdg/run"] {
            let p = root.join(d);
            lifeboat_io_tokio::drivers::postgres::spool::make_dir_for(&p, user)
                .map_err(|e| format!("creating {}: {e}", p.display()))?;
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let run = root.join("xdg/run");
            let _ = std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700));
        }
        let p = free_ports(3);
        let mut w = PafWorld {
            autoctl: autoctl.to_path_buf(),
            root: root.clone(),
            groups: Vec::new(),
            ports: [p[0], p[1], p[2]],
            _scratch: scratch,
        };
        let pg_ctl = cluster::bin_dir().join("pg_ctl").display().to_string();
        let flags = [
            "--hostname",
            "127.0.0.1",
            "--auth",
            "trust",
            "--no-ssl",
            "--ssl-mode",
            "disable",
            "--pgctl",
            pg_ctl.as_str(),
        ];
        let monitor = root.join("monitor").display().to_string();
        let mport = w.ports[0].to_string();
        let mut args = vec![
            "create", "monitor", "--pgdata", &monitor, "--pgport", &mport,
        ];
        args.extend(flags);
        let out = w
            .command(&args)
            .output()
            .map_err(|e| format!("pg_autoctl create monitor: {e}"))?;
        let _ = std::fs::write(
            root.join("monitor-create.log"),
            [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
        );
        if !out.status.success() {
            return w.step(Err(format!(
                "pg_autoctl create monitor failed ({})",
                out.status
            )));
        }
        w.run("monitor", &["run", "--pgdata", &monitor])?;
        w.step(wait_until("the monitor to answer", SETUP_WITHIN, || {
            connect(w.ports[0], "pg_auto_failover", Duration::from_secs(1)).is_ok()
        }))?;
        let uri = format!(
            "postgres://autoctl_node@127.0.0.1:{}/pg_auto_failover?sslmode=disable",
            w.ports[0]
        );
        for (i, name) in ["node1", "node2"].into_iter().enumerate() {
            let data = root.join(name).display().to_string();
            let port = w.ports[i + 1].to_string();
            let mut args = vec![
                "create",
                "postgres",
                "--pgdata",
                &data,
                "--pgport",
                &port,
                "--name",
                name,
                "--monitor",
                &uri,
                "--run",
            ];
            args.extend(flags);
            w.run(name, &args)?;
            let want: &[(&str, &str)] = if i == 0 {
                &[("node1", "single")]
            } else {
                &[("node1", "primary"), ("node2", "secondary")]
            };
            w.step(wait_until(
                &format!("the monitor to report {want:?}"),
                SETUP_WITHIN,
                || w.settled(want),
            ))?;
            if i == 0 {
                w.step(sql(w.ports[1], TABLES).map(drop))?;
            }
        }
        Ok(w)
    }

    fn failover(mut self) -> Result<Failover, String> {
        let (p1, p2) = (self.ports[1], self.ports[2]);
        let sync = sql(p1, "show synchronous_standby_names")
            .ok()
            .and_then(|r| r.into_iter().next()?.into_iter().next()?);
        eprintln!("  pg_auto_failover primary: synchronous_standby_names = {sync:?}");
        let mut writer = Writer::start(p1);
        std::thread::sleep(WRITES);
        let killed = Instant::now();
        let group = self.groups.iter().position(|(n, _)| n == "node1");
        let group = group.map(|i| self.groups.remove(i).1);
        if let Some(c) = &group {
            // pg_autoctl and the postmaster (its child) stop at once; nothing restarts.
            signal(-(c.id() as i32), libc::SIGSTOP);
        }
        let pm = kill_server(&self.root.join("node1"));
        if let Some(mut c) = group {
            signal(-(c.id() as i32), libc::SIGKILL);
            let _ = c.wait();
        }
        let acked = writer.stop();
        self.step(pm)?;
        let secs = self.step(first_insert(p2, killed, None))?;
        let lost = self.step(rows_lost(p2, &acked))?;
        eprintln!("  pg_auto_failover nodes then: {:?}", self.node_states());
        Ok(Failover {
            secs,
            lost,
            acked: acked.len() as u64,
        })
    }
}

impl PafWorld {
    /// `pg_autoctl perform switchover` under the writer.
    fn switchover(self) -> Result<Switchover, String> {
        let monitor = self.root.join("monitor").display().to_string();
        let r = switchover_under_writer(self.ports[1], self.ports[2], || {
            let c = self.command(&[
                "perform",
                "switchover",
                "--pgdata",
                &monitor,
                "--wait",
                "120",
            ]);
            cluster::check(c, "pg_autoctl perform switchover").map(drop)
        });
        eprintln!("  pg_auto_failover nodes then: {:?}", self.node_states());
        self.step(r)
    }
}

impl Drop for PafWorld {
    fn drop(&mut self) {
        // pg_autoctl stopped first (so nothing restarts a server), then the servers, then it.
        for (_, c) in &self.groups {
            signal(-(c.id() as i32), libc::SIGSTOP);
        }
        for n in ["monitor", "node1", "node2"] {
            let _ = kill_server(&self.root.join(n));
        }
        for (_, mut c) in self.groups.drain(..) {
            signal(-(c.id() as i32), libc::SIGKILL);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Archiving a backlog: lifeboat wal-push against pgbackrest archive-push

fn archive_backlog(pgbackrest: &Path, segments: u64) -> Result<(f64, f64), String> {
    let s = ScratchDir::new("peers-archive")?;
    let root = s.dir("push");
    let user = cluster::server_user().map(|u| u.1);
    let archive = root.join("archive");
    lifeboat_io_tokio::drivers::postgres::spool::make_dir_for(&archive, user)
        .map_err(|e| format!("creating {}: {e}", archive.display()))?;
    let port = cluster::free_port();
    let c = Cluster::initdb(&root.join("data"), port, 16)?;
    let conf = c.data.join("postgresql.conf");
    let mut text =
        std::fs::read_to_string(&conf).map_err(|e| format!("reading {}: {e}", conf.display()))?;
    text.push_str(&format!(
        "\narchive_mode = on\narchive_command = 'cp %p {}/%f'\n",
        archive.display()
    ));
    std::fs::write(&conf, text).map_err(|e| format!("writing {}: {e}", conf.display()))?;
    c.start()?;
    // The stanzas (one a round) are made while the server runs: pgBackRest asks it.
    let pb_conf = root.join("pgbackrest.conf");
    let run_dir = root.join(format!("pg-{port}"));
    let mut pb = format!(
        "[global]\nrepo1-path={}\nlog-path={}\nlock-path={}\nlog-level-console=warn\n\
         log-level-file=off\n",
        root.join("repo").display(),
        root.join("pb-log").display(),
        root.join("pb-lock").display(),
    );
    for round in 0..3 {
        pb.push_str(&format!(
            "\n[r{round}]\npg1-path={}\npg1-port={port}\npg1-socket-path={}\npg1-user=postgres\n",
            c.data.display(),
            run_dir.display()
        ));
    }
    std::fs::write(&pb_conf, pb).map_err(|e| format!("writing {}: {e}", pb_conf.display()))?;
    for round in 0..3 {
        let mut c = Command::new(pgbackrest);
        c.arg(format!("--config={}", pb_conf.display()))
            .arg(format!("--stanza=r{round}"))
            .arg("stanza-create");
        cluster::check(c, "pgbackrest stanza-create")?;
    }
    // About `segments` segments of WAL in one transaction, then a switch (as benches/pg.rs).
    cluster::psql(
        port,
        "create table if not exists w(id bigserial primary key, v text)",
    )?;
    cluster::psql(
        port,
        &format!(
            "insert into w(v) select md5(g::text) || repeat('x', 200) \
             from generate_series(1, {}) g",
            segments * 16 * 3300
        ),
    )?;
    cluster::psql(port, "select pg_switch_wal()")?;
    let names = |dir: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    wait_until(
        &format!("PostgreSQL to archive {segments} segments"),
        Duration::from_secs(300),
        || names(&archive).len() as u64 >= segments,
    )?;
    drop(c);
    let segs: Vec<PathBuf> = names(&archive)
        .into_iter()
        .take(segments as usize)
        .collect();
    let sh = |script: &str, args: &[&Path]| -> Result<(), String> {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).arg("sh").args(args);
        cluster::check(c, &format!("{script} {args:?}")).map(drop)
    };
    let (mut best_push, mut best_pb) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        let spool = root.join(format!("spool-{round}"));
        let config = common::wal_push_spool(&spool)?;
        let t = Instant::now();
        for seg in &segs {
            sh(
                r#""$1" wal-push "$2" --config "$3""#,
                &[Path::new(BIN), seg, &config],
            )?;
        }
        let push_s = t.elapsed().as_secs_f64();
        best_push = best_push.min(push_s);
        let pushed = std::fs::read_dir(spool.join("push"))
            .map(|rd| rd.count())
            .unwrap_or(0);
        if pushed != segs.len() {
            return Err(format!(
                "wal-push left {pushed} of {} segments in the spool",
                segs.len()
            ));
        }

        let stanza = PathBuf::from(format!("--stanza=r{round}"));
        let cfg = PathBuf::from(format!("--config={}", pb_conf.display()));
        let t = Instant::now();
        for seg in &segs {
            sh(
                r#""$1" "$3" "$4" archive-push "$2""#,
                &[pgbackrest, seg, &cfg, &stanza],
            )?;
        }
        let pb_s = t.elapsed().as_secs_f64();
        best_pb = best_pb.min(pb_s);
        eprintln!("  round {round}: wal-push {push_s:.2}s, pgbackrest archive-push {pb_s:.2}s");
    }
    let n = segs.len() as f64;
    eprintln!(
        "archiving {n} segments of 16 MiB, one process each: lifeboat wal-push {best_push:.2}s, \
         pgbackrest archive-push {best_pb:.2}s"
    );
    Ok((n / best_push, n / best_pb))
}

// ---------------------------------------------------------------------------------------------

/// One failover run of `tool`, started at `t`: said on stderr, and kept when it worked.
fn record(tool: &str, t: Instant, run: Result<Failover, String>, into: &mut Vec<Failover>) {
    match run {
        Ok(f) => {
            eprintln!(
                "  writable after {:.2}s; {} of {} acknowledged rows lost (run took {:.0}s)",
                f.secs,
                f.lost,
                f.acked,
                t.elapsed().as_secs_f64()
            );
            into.push(f);
        }
        Err(e) => eprintln!("  {tool} failover failed: {e}"),
    }
}

fn main() {
    if let Err(why) = cluster::available() {
        eprintln!("pg_peers bench skipped: {why}");
        println!("bench pg_peers_skipped {why}");
        return;
    }
    let runs = env_u64("LIFEBOAT_BENCH_PG_PEERS_RUNS", 1).max(1);
    let bin_dir = cluster::bin_dir();
    let paf = match find_program("pg_autoctl", &bin_dir) {
        Some(p) => {
            let v = Command::new(&p).arg("--version").output();
            match v {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout);
                    eprintln!("{}", text.lines().next().unwrap_or("pg_autoctl"));
                    Some(p)
                }
                _ => {
                    bench(
                        "pg_paf_skipped",
                        format!("{} --version failed", p.display()),
                    );
                    None
                }
            }
        }
        None => {
            bench(
                "pg_paf_skipped",
                "no pg_autoctl on the PATH or in PostgreSQL's bin directory \
                 (Debian package postgresql-15-auto-failover)",
            );
            None
        }
    };
    let pgbackrest = match find_program("pgbackrest", &bin_dir) {
        Some(p) => {
            if let Ok(o) = Command::new(&p).arg("version").output() {
                eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
            }
            Some(p)
        }
        None => {
            bench(
                "pg_pgbackrest_skipped",
                "no pgbackrest on the PATH (Debian package pgbackrest)",
            );
            None
        }
    };
    let started = Instant::now();

    let (mut lb, mut pf): (Vec<Failover>, Vec<Failover>) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        eprintln!("[run {run}/{runs}] lifeboat, unplanned failover with defaults");
        let t = Instant::now();
        record(
            "lifeboat",
            t,
            LbWorld::start().and_then(LbWorld::failover),
            &mut lb,
        );
        if let Some(autoctl) = &paf {
            eprintln!("[run {run}/{runs}] pg_auto_failover, unplanned failover with defaults");
            let t = Instant::now();
            let f = PafWorld::start(autoctl).and_then(PafWorld::failover);
            record("pg_auto_failover", t, f, &mut pf);
        }
    }
    let summary = |v: &[Failover]| {
        (
            median(&v.iter().map(|f| f.secs).collect::<Vec<_>>()),
            median(&v.iter().map(|f| f.lost as f64).collect::<Vec<_>>()),
            median(&v.iter().map(|f| f.acked as f64).collect::<Vec<_>>()),
        )
    };
    let lb_secs = (!lb.is_empty()).then(|| summary(&lb)).map(|(s, l, a)| {
        bench("pg_failover_s_default", format!("{s:.2}"));
        bench("pg_rows_lost_default", l);
        bench("pg_acked_default", a);
        s
    });
    if !pf.is_empty() {
        let (s, l, a) = summary(&pf);
        bench("pg_paf_failover_s_default", format!("{s:.2}"));
        bench("pg_paf_rows_lost_default", l);
        bench("pg_paf_acked_default", a);
        if let Some(lbs) = lb_secs {
            bench(
                "pg_paf_over_lifeboat_failover_ratio",
                format!("{:.2}", s / lbs),
            );
        }
    }

    eprintln!("lifeboat, planned switchover");
    let lb_switch = match LbWorld::start().and_then(LbWorld::switchover) {
        Ok(r) => {
            eprintln!(
                "  writable after {:.2}s; {} of {} acknowledged rows lost",
                r.secs, r.lost, r.acked
            );
            bench("pg_switchover_s", format!("{:.2}", r.secs));
            bench("pg_switchover_rows_lost", r.lost);
            Some(r.secs)
        }
        Err(e) => {
            eprintln!("  lifeboat switchover failed: {e}");
            None
        }
    };
    if let Some(autoctl) = &paf {
        eprintln!("pg_auto_failover, planned switchover");
        match PafWorld::start(autoctl).and_then(PafWorld::switchover) {
            Ok(r) => {
                eprintln!(
                    "  writable after {:.2}s; {} of {} acknowledged rows lost",
                    r.secs, r.lost, r.acked
                );
                bench("pg_paf_switchover_s", format!("{:.2}", r.secs));
                bench("pg_paf_switchover_rows_lost", r.lost);
                if let Some(l) = lb_switch {
                    bench(
                        "pg_paf_over_lifeboat_switchover_ratio",
                        format!("{:.2}", r.secs / l),
                    );
                }
            }
            Err(e) => eprintln!("  pg_auto_failover switchover failed: {e}"),
        }
    }

    let lag_secs = env_u64("LIFEBOAT_BENCH_PG_STREAM_S", 20).max(5);
    eprintln!("lifeboat, streaming under pgbench (-c 2 -j 2, scale 10) for {lag_secs}s");
    match LbWorld::start().and_then(|w| stream_lag(&w, lag_secs)) {
        Ok((mut lags, tps, rate)) => {
            let (p50, p99, max) = (
                percentile(&mut lags, 0.5),
                percentile(&mut lags, 0.99),
                percentile(&mut lags, 1.0),
            );
            eprintln!(
                "  {} flush positions sampled; pgbench {tps:.0} tps, WAL {:.1} MiB/s",
                lags.len(),
                rate / f64::from(1 << 20)
            );
            bench("pg_stream_lag_p50_s", format!("{p50:.3}"));
            bench("pg_stream_lag_p99_s", format!("{p99:.3}"));
            bench("pg_stream_lag_max_s", format!("{max:.3}"));
            bench(
                "pg_stream_wal_mib_per_s",
                format!("{:.1}", rate / f64::from(1 << 20)),
            );
        }
        Err(e) => eprintln!("  streaming under load failed: {e}"),
    }

    if let Some(pb) = &pgbackrest {
        let segments = env_u64("LIFEBOAT_BENCH_PG_PUSH_SEGMENTS", 20).max(1);
        eprintln!("archiving a backlog of {segments} segments");
        match archive_backlog(pb, segments) {
            Ok((lb_rate, pb_rate)) => {
                bench(
                    "pg_archive_lifeboat_segments_per_sec",
                    format!("{lb_rate:.2}"),
                );
                bench(
                    "pg_archive_pgbackrest_segments_per_sec",
                    format!("{pb_rate:.2}"),
                );
                bench(
                    "pg_archive_vs_pgbackrest_ratio",
                    format!("{:.2}", lb_rate / pb_rate),
                );
            }
            Err(e) => eprintln!("  archiving failed: {e}"),
        }
    }
    eprintln!("pg_peers ran {:.0}s", started.elapsed().as_secs_f64());
}
