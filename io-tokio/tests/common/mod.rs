//! End-to-end harness: real `lifeboat` processes on loopback in a temporary directory, a SQLite
//! writer that counts acknowledged commits, a blocking HTTP client, and a TCP proxy that can cut
//! a link or corrupt bytes in transit.
#![allow(dead_code)]

use lifeboat_io_tokio::demo::{arbiter_toml, site_toml, SitePorts};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

pub mod etcd;
mod https;
pub use https::https;

/// `n` loopback ports for processes started later, outside the ephemeral range (see
/// `lifeboat_io_tokio::ports`).
pub fn free_ports(n: usize) -> Vec<u16> {
    lifeboat_io_tokio::ports::free_loopback_ports(n).expect("free loopback ports")
}

/// GET or POST on loopback; (status, body).
pub fn http(method: &str, port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let json = (method == "POST").then_some("{}");
    https(method, port, path, json, None, None)
}

/// The agent's `/status` as JSON. Every document the tests read must also read as the typed
/// [`StatusDoc`](lifeboat_io_tokio::status::doc::StatusDoc) the CLI and the demo use.
pub fn status(port: u16) -> Option<Value> {
    let (code, body) = http("GET", port, "/status")?;
    if code != 200 {
        return None;
    }
    if let Err(e) = serde_json::from_slice::<lifeboat_io_tokio::status::doc::StatusDoc>(&body) {
        panic!(
            "the agent on port {port} answered a /status the typed document cannot read: {e}\n{}",
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body).ok()
}

pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {within:?} waiting for {what}");
}

/// A TCP proxy: forwards to `target`; `cut` closes every connection and refuses new ones until
/// `heal`; `corrupt_next` flips one byte of the next large write (an artifact chunk).
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    corrupt: Arc<AtomicBool>,
    pub corrupted: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(port: u16, target: u16) -> Proxy {
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let corrupt = Arc::new(AtomicBool::new(false));
        let corrupted = Arc::new(AtomicU64::new(0));
        let (c, cs, cr, cd) = (
            cut.clone(),
            conns.clone(),
            corrupt.clone(),
            corrupted.clone(),
        );
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            loop {
                if c.load(Ordering::SeqCst) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                if listener.is_none() {
                    match TcpListener::bind(("127.0.0.1", port)) {
                        Ok(l) => {
                            l.set_nonblocking(true).unwrap();
                            listener = Some(l);
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    }
                }
                match listener.as_ref().unwrap().accept() {
                    Ok((down, _)) => {
                        down.set_nonblocking(false).unwrap();
                        let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        cs.lock().unwrap().push(down.try_clone().unwrap());
                        cs.lock().unwrap().push(up.try_clone().unwrap());
                        pump(
                            down.try_clone().unwrap(),
                            up.try_clone().unwrap(),
                            cr.clone(),
                            cd.clone(),
                        );
                        pump(up, down, Arc::new(AtomicBool::new(false)), cd.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            cut,
            conns,
            corrupt,
            corrupted,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    pub fn corrupt_next(&self) {
        self.corrupt.store(true, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, corrupt: Arc<AtomicBool>, done: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if n > 2048 && corrupt.swap(false, Ordering::SeqCst) {
                buf[n / 2] ^= 0x5a;
                done.fetch_add(1, Ordering::SeqCst);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// Options of a cluster.
#[derive(Clone, Default)]
pub struct Opts {
    /// Lines added under `[engine.failover]`.
    pub failover: &'static str,
    /// Lines added under `[engine.restore]`.
    pub restore: &'static str,
    /// Text appended to both site files (e.g. `[[alerts]]` sinks).
    pub site_extra: String,
    /// Text appended to the recovery site's file only (e.g. its `[archive]`).
    pub recovery_extra: String,
    /// Route the recovery site's view of the primary (transport and http) through a proxy,
    /// and the primary's view of the recovery site through another.
    pub proxies: bool,
    /// The witness on etcd instead of the arbiter: the sites' `[witness]` table, and the
    /// certificates directory the etcd cluster uses (the cluster's parties use it too). No
    /// arbiter process runs; `lifeboat witness init` creates the keys before the agents start.
    pub etcd: Option<(String, PathBuf)>,
    /// The engine's default lease and failover timers instead of the demo's fast ones.
    pub default_timers: bool,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub arb_http: u16,
    pub pri_http: u16,
    pub rec_http: u16,
    pub arb_listen: u16,
    pub pri_listen: u16,
    pub rec_listen: u16,
    pub pri_db: PathBuf,
    pub rec_db: PathBuf,
    configs: HashMap<&'static str, (&'static str, PathBuf)>,
    procs: HashMap<&'static str, Child>,
    pub to_primary: Option<Proxy>,
    pub to_primary_http: Option<Proxy>,
    pub to_recovery: Option<Proxy>,
}

impl Cluster {
    pub fn start(opts: Opts) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let p = free_ports(10);
        let (arb_listen, arb_http, pri_listen, pri_http, rec_listen, rec_http) =
            (p[0], p[1], p[2], p[3], p[4], p[5]);
        let (to_primary, to_recovery) = if opts.proxies {
            (
                Some((Proxy::start(p[6], pri_listen), Proxy::start(p[7], pri_http))),
                Some(Proxy::start(p[8], rec_listen)),
            )
        } else {
            (None, None)
        };
        let pri_db = dir.path().join("primary-db/app.db");
        let rec_db = dir.path().join("recovery-db/app.db");
        std::fs::create_dir_all(pri_db.parent().unwrap()).unwrap();
        std::fs::create_dir_all(rec_db.parent().unwrap()).unwrap();
        let c = rusqlite::Connection::open(&pri_db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        )
        .unwrap();
        drop(c);
        // Frequent snapshots: restarts exercise snapshot + replay, not only replay.
        let tune = |s: String| {
            let s = s
                .replace("snapshot_every = 500", "snapshot_every = 50")
                .replace(
                    "unhealthy_for_ms = 600\n",
                    &format!("unhealthy_for_ms = 600\n{}\n", opts.failover),
                )
                .replace(
                    "op_timeout_ms = 5000\n",
                    &format!("op_timeout_ms = 5000\n{}\n", opts.restore),
                );
            if !opts.default_timers {
                return s;
            }
            s.replace(
                "lease_ms = 2000\nrenew_every_ms = 400\nfence_time_ms = 200\n\
                 heartbeat_every_ms = 300\narbiter_timeout_ms = 1000\n",
                "",
            )
            .replace(
                "probe_every_ms = 200\nunhealthy_count = 3\nunhealthy_for_ms = 600\n",
                "",
            )
        };
        let d = dir.path();
        if let Some((_, certs)) = &opts.etcd {
            std::fs::create_dir_all(d.join("certs")).unwrap();
            for e in std::fs::read_dir(certs).unwrap().flatten() {
                std::fs::copy(e.path(), d.join("certs").join(e.file_name())).unwrap();
            }
        }
        lifeboat_io_tokio::demo::write_certs(&d.join("certs")).unwrap();
        let (rec_peer, rec_peer_http) = match &to_primary {
            Some((t, h)) => (t.port, h.port),
            None => (pri_listen, pri_http),
        };
        let pri_peer = to_recovery.as_ref().map_or(rec_listen, |p| p.port);
        let write = |name: &str, text: String| {
            let path = d.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let arb = write(
            "arbiter.toml",
            tune(arbiter_toml(
                arb_listen,
                arb_http,
                &d.join("arbiter"),
                &d.join("certs"),
            )),
        );
        let pri = write(
            "primary.toml",
            tune(site_toml(
                "primary",
                SitePorts {
                    listen: pri_listen,
                    peer: pri_peer,
                    arbiter: arb_listen,
                    http: pri_http,
                    peer_http: rec_http,
                },
                &d.join("primary"),
                &pri_db,
                &d.join("certs"),
            )),
        );
        let rec = write(
            "recovery.toml",
            tune(site_toml(
                "recovery",
                SitePorts {
                    listen: rec_listen,
                    peer: rec_peer,
                    arbiter: arb_listen,
                    http: rec_http,
                    peer_http: rec_peer_http,
                },
                &d.join("recovery"),
                &rec_db,
                &d.join("certs"),
            )),
        );
        for f in [&pri, &rec] {
            let mut text = std::fs::read_to_string(f).unwrap();
            if let Some((witness, _)) = &opts.etcd {
                let line = format!("arbiter = \"127.0.0.1:{arb_listen}\"\n");
                assert!(text.contains(&line));
                text = text.replace(&line, "");
                text.push_str(witness);
            }
            text.push_str(&opts.site_extra);
            if f == &rec {
                text.push_str(&opts.recovery_extra);
            }
            std::fs::write(f, text).unwrap();
        }
        let mut configs = HashMap::new();
        configs.insert("arbiter", ("arbiter", arb));
        configs.insert("primary", ("agent", pri));
        configs.insert("recovery", ("agent", rec));
        let mut cl = Cluster {
            dir,
            arb_http,
            pri_http,
            rec_http,
            arb_listen,
            pri_listen,
            rec_listen,
            pri_db,
            rec_db,
            configs,
            procs: HashMap::new(),
            to_primary_http: to_primary.as_ref().map(|(_, h)| Proxy {
                port: h.port,
                cut: h.cut.clone(),
                conns: h.conns.clone(),
                corrupt: h.corrupt.clone(),
                corrupted: h.corrupted.clone(),
            }),
            to_primary: to_primary.map(|(t, _)| t),
            to_recovery,
        };
        if opts.etcd.is_some() {
            let pri = cl.path("primary").display().to_string();
            let (code, out, err) = lifeboat_cli(&["witness", "init", "-c", &pri]);
            assert_eq!(code, 0, "witness init: {out}{err}");
            cl.configs.remove("arbiter");
        }
        for n in ["arbiter", "primary", "recovery"] {
            if cl.configs.contains_key(n) {
                cl.spawn(n);
            }
        }
        let pri_http = cl.pri_http;
        wait_for(
            "the primary to accept writes",
            Duration::from_secs(20),
            || status(pri_http).is_some_and(|d| d["writable"] == true),
        );
        cl
    }

    pub fn path(&self, name: &str) -> &Path {
        &self.configs[name].1
    }

    pub fn spawn(&mut self, name: &'static str) {
        self.spawn_env(name, &[]);
    }

    /// Start a process with extra environment variables (e.g. an armed crash point).
    pub fn spawn_env(&mut self, name: &'static str, env: &[(&str, &str)]) {
        let (sub, cfg) = self.configs[name].clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .arg(sub)
            .arg("--config")
            .arg(&cfg)
            .env("LIFEBOAT_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.procs.insert(name, child);
    }

    /// Whether a process started by this cluster has exited (crashed) on its own.
    pub fn exited(&mut self, name: &str) -> bool {
        self.procs
            .get_mut(name)
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The process id of a process this cluster started.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.get(name).map(|c| c.id())
    }

    /// SIGTERM, then wait up to `within` for the process to exit; its exit code (`None`: it
    /// did not exit in time, and was killed).
    pub fn terminate(&mut self, name: &str, within: Duration) -> Option<i32> {
        let mut c = self.procs.remove(name)?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let t = std::time::Instant::now();
        while t.elapsed() < within {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// SIGKILL.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut c) = self.procs.remove(name) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    pub fn cut_link(&self) {
        self.to_primary.as_ref().unwrap().cut();
        self.to_primary_http.as_ref().unwrap().cut();
        self.to_recovery.as_ref().unwrap().cut();
    }

    pub fn restored(&self) -> Option<u64> {
        status(self.rec_http)?["databases"][0]["restored_lsn"].as_u64()
    }

    /// Rows at the primary now, read through SQLite (in WAL mode the file's header says
    /// nothing about the newest transactions).
    pub fn primary_rows(&self) -> Option<u64> {
        try_rows(&self.pri_db).map(|r| r.0)
    }

    /// Rows at the recovery site now (`None` while a restore holds its lock).
    pub fn recovery_rows(&self) -> Option<u64> {
        try_rows(&self.rec_db).map(|r| r.0)
    }

    /// The recovery copy holds exactly the rows the primary holds now.
    pub fn caught_up(&self) -> bool {
        match (try_rows(&self.pri_db), try_rows(&self.rec_db)) {
            (Some(p), Some(r)) => p.0 > 0 && p == r,
            _ => false,
        }
    }

    /// Dump the logs when a test fails (kept in the temp dir otherwise).
    pub fn dump_logs(&self) {
        for n in ["arbiter", "primary", "recovery"] {
            let l = self.log(n);
            let lines: Vec<&str> = l.lines().collect();
            eprintln!("--- {n} (last 40 lines) ---");
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        for (_, mut c) in self.procs.drain() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SQLite's locks are POSIX record locks, owned by the process: closing *any* descriptor of a
/// database file drops every lock this process holds on it. The [`Writer`]'s connection lives
/// in the test process, so a raw read of the primary's file that closed its descriptor while
/// the writer committed dropped the writer's EXCLUSIVE lock; the agent's next read transaction
/// then took the journal for a crashed writer's and rolled back a commit SQLite acknowledged (a
/// row lost at the primary itself). The writer holds this turn for each statement (its
/// connection holds no lock between statements) and raw reads of a database file take it too.
static SQLITE_TURN: Mutex<()> = Mutex::new(());

/// Take the turn (see [`SQLITE_TURN`]).
pub fn sqlite_turn() -> std::sync::MutexGuard<'static, ()> {
    SQLITE_TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// A database file's change counter (header offset 24), read from the file itself (in turn
/// with the writer's statements: see [`SQLITE_TURN`]).
pub fn change_counter(db: &Path) -> Option<u64> {
    let _turn = sqlite_turn();
    let mut header = [0u8; 28];
    std::fs::File::open(db)
        .and_then(|mut f| f.read_exact(&mut header))
        .ok()?;
    Some(u64::from(u32::from_be_bytes([
        header[24], header[25], header[26], header[27],
    ])))
}

/// A writer: one row per transaction, counting the commits SQLite acknowledged.
pub struct Writer {
    stop: Arc<AtomicBool>,
    pub committed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub fn start(db: &Path, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let (s, c, db) = (stop.clone(), committed.clone(), db.to_path_buf());
        let handle = std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_millis(50)).unwrap();
            while !s.load(Ordering::SeqCst) {
                let id = c.load(Ordering::SeqCst) + 1;
                let there = {
                    let _turn = sqlite_turn();
                    let inserted = conn.execute(
                        "INSERT INTO t(id, v) VALUES (?1, 'row ' || ?1)",
                        [id as i64],
                    );
                    // An error can still leave the row committed (a busy or I/O error reported
                    // after the commit, e.g. while an agent is killed): count what is there, so
                    // the acknowledged count and the rows agree.
                    inserted.is_ok()
                        || conn
                            .query_row("SELECT 1 FROM t WHERE id = ?1", [id as i64], |_| Ok(()))
                            .is_ok()
                };
                if there {
                    c.store(id, Ordering::SeqCst);
                }
                std::thread::sleep(every);
            }
        });
        Writer {
            stop,
            committed,
            handle: Some(handle),
        }
    }

    /// Stop and return how many commits were acknowledged.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.committed.load(Ordering::SeqCst)
    }
}

/// (count, min id, max id, rows with wrong contents) of a database's table.
/// [`rows`], or `None` while the database cannot be read (locked by a restore, not there yet).
pub fn try_rows(db: &Path) -> Option<(u64, u64, u64, u64)> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    let s = lifeboat_io_tokio::demo::table_summary(&c).ok()?;
    Some((s.count, s.min, s.max, s.wrong))
}

pub fn rows(db: &Path) -> (u64, u64, u64, u64) {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    let s = lifeboat_io_tokio::demo::table_summary(&c).unwrap();
    (s.count, s.min, s.max, s.wrong)
}

/// Assert the database holds exactly rows 1..=n with the right contents.
pub fn assert_prefix(db: &Path, n: u64) {
    let (count, min, max, wrong) = rows(db);
    assert_eq!(
        (count, max, wrong),
        (n, n, 0),
        "rows 1..={n} expected (min {min})"
    );
}

pub fn reports(port: u16, kind: &str) -> Vec<Value> {
    status(port)
        .map(|d| {
            d["reports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r["kind"] == kind)
                .collect()
        })
        .unwrap_or_default()
}

pub fn alert_kinds(port: u16) -> Vec<String> {
    let Some(d) = status(port) else {
        return Vec::new();
    };
    let mut out: Vec<String> = d["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(d["recent_alerts"].as_array().into_iter().flatten())
        .filter_map(|a| a["kind"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A webhook receiver: records the JSON body of every POST.
pub struct Webhook {
    pub port: u16,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let b = bodies.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut s = s;
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    while let Ok(n) = s.read(&mut chunk) {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..at]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= at + 4 + len {
                                if let Ok(v) = serde_json::from_slice(&buf[at + 4..at + 4 + len]) {
                                    b.lock().unwrap().push(v);
                                }
                                break;
                            }
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                });
            }
        });
        Webhook { port, bodies }
    }

    pub fn kinds(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|v| v["kind"].as_str().map(str::to_string))
            .collect()
    }
}

/// Now in UTC with milliseconds (`2026-12-04T17:05:00.250Z`): restore targets in the tests are
/// a second apart.
pub fn utc_now_ms() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    lifeboat_core::utc::iso_ms(lifeboat_core::UtcMillis(ms))
}

/// `lifeboat <args>`: its exit code, stdout and stderr.
pub fn lifeboat_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
