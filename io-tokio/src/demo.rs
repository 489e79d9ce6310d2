//! `lifeboat demo`: the README's first command. On loopback, in a temporary directory:
//! the arbiter, a primary agent and a recovery-site agent as separate processes, a SQLite
//! database at the primary under a steady write load (one row per transaction, counting the
//! commits SQLite acknowledged), live status; then the primary site is lost (its writer stops,
//! its agent is killed with SIGKILL), the recovery site detects it, fails over and reports
//! RPO/RTO; the demo checks that the new primary holds exactly the committed prefix and that
//! the true loss lies within the reported bounds. The last line is
//! `demo: rpo_txns=<true loss> rto_ms=<N> verified=yes`.

use crate::cli::{self, exit};
use crate::status::doc::{AlertDoc, DbDoc, ReportBody, StatusDoc};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One row per transaction, this often.
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// Steady state shipping before the primary site is lost.
const STEADY: Duration = Duration::from_secs(8);
/// Longest wait for the first restored position at the recovery site.
const FIRST_RESTORE_WITHIN: Duration = Duration::from_secs(25);
/// Longest wait for the failover report.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);

struct Procs {
    children: Vec<(String, Child)>,
}

impl Procs {
    fn kill(&mut self, name: &str) {
        if let Some((_, c)) = self.children.iter_mut().find(|(n, _)| n == name) {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The engine settings of the demo: short timers so everything happens in seconds.
pub const ENGINE: &str = r#"
[engine]
sites = ["primary", "recovery"]
initial_primary = "primary"
databases = ["app"]
arbiter = true

[engine.schedule]
log_every_ms = 1000
full_every_ms = 4000
incremental_every_ms = 3600000

[engine.shipping]
ack_timeout_ms = 3000
retry_base_ms = 200
retry_max_ms = 2000

[engine.restore]
retry_delay_ms = 500
op_timeout_ms = 5000

[engine.alerts]
check_every_ms = 1000
min_free_mib = 16

[engine.lease]
lease_ms = 2000
renew_every_ms = 400
fence_time_ms = 200
heartbeat_every_ms = 300
arbiter_timeout_ms = 1000

[engine.failover]
probe_every_ms = 200
unhealthy_count = 3
unhealthy_for_ms = 600
"#;

/// The ports of one site agent: its own, its peer's and the arbiter's.
#[derive(Copy, Clone, Debug)]
pub struct SitePorts {
    pub listen: u16,
    pub peer: u16,
    pub arbiter: u16,
    pub http: u16,
    pub peer_http: u16,
}

/// The demo's sites and arbiter, by the names their certificates carry.
pub const NAMES: [&str; 3] = ["primary", "recovery", "arbiter"];

/// A throw-away CA and a key pair per party in `dir` (made once; kept if `dir/ca.pem` exists).
pub fn write_certs(dir: &Path) -> Result<(), String> {
    if dir.join("ca.pem").exists() {
        return Ok(());
    }
    let sites = [NAMES[0].to_string(), NAMES[1].to_string()];
    crate::certs::init(dir, &sites, NAMES[2], crate::certs::PARTY_DAYS)
        .map(|_| ())
        .map_err(|e| format!("making the demo's certificates in {}: {e:#}", dir.display()))
}

/// `[tls]` for party `name` with the certificates of [`write_certs`] in `certs`.
pub fn tls_toml(certs: &Path, name: &str) -> String {
    let c = certs.display();
    format!("\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/{name}.pem\"\nkey = \"{c}/{name}.key\"\n")
}

/// A site file on loopback with the demo's engine settings; its certificates in `certs`.
pub fn site_toml(site: &str, ports: SitePorts, data_dir: &Path, db: &Path, certs: &Path) -> String {
    let SitePorts {
        listen,
        peer,
        arbiter,
        http,
        peer_http,
    } = ports;
    format!(
        "site = \"{site}\"\nlisten = \"127.0.0.1:{listen}\"\npeer = \"127.0.0.1:{peer}\"\n\
         arbiter = \"127.0.0.1:{arbiter}\"\nhttp = \"127.0.0.1:{http}\"\n\
         peer_http = \"127.0.0.1:{peer_http}\"\ndata_dir = \"{}\"\n\n[journal]\nsnapshot_every = 500\n\n\
         [disk]\ncheck_every_ms = 2000\n\n[driver]\nkind = \"sqlite\"\nbusy_timeout_ms = 1000\n\
         [[driver.databases]]\nname = \"app\"\npath = \"{}\"\n{}{ENGINE}",
        data_dir.display(),
        db.display(),
        tls_toml(certs, site),
    )
}

/// The arbiter's file on loopback; its certificates in `certs`.
pub fn arbiter_toml(listen: u16, http: u16, data_dir: &Path, certs: &Path) -> String {
    arbiter_toml_with(listen, http, data_dir, certs, ENGINE)
}

/// [`arbiter_toml`] with another `[engine]` section (tests and benches with their own timers).
pub fn arbiter_toml_with(
    listen: u16,
    http: u16,
    data_dir: &Path,
    certs: &Path,
    engine: &str,
) -> String {
    format!(
        "listen = \"127.0.0.1:{listen}\"\nhttp = \"127.0.0.1:{http}\"\ndata_dir = \"{}\"\n{}{engine}",
        data_dir.display(),
        tls_toml(certs, NAMES[2]),
    )
}

fn spawn(dir: &Path, name: &str, sub: &str, config: &Path) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let log = fs::File::create(dir.join(format!("{name}.log")))?;
    Command::new(exe)
        .arg(sub)
        .arg("--config")
        .arg(config)
        .env("LIFEBOAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
}

/// The writer: one row per transaction into the primary's database; `committed` counts the
/// commits SQLite acknowledged (rows 1..=committed exist at the primary).
fn writer(db: PathBuf, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>, refused: Arc<AtomicU64>) {
    let conn = match rusqlite::Connection::open(&db) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo: writer cannot open {}: {e}", db.display());
            return;
        }
    };
    let _ = conn.busy_timeout(Duration::from_millis(50));
    while !stop.load(Ordering::SeqCst) {
        let id = committed.load(Ordering::SeqCst) + 1;
        match conn.execute(
            "INSERT INTO t(id, v) VALUES (?1, 'row ' || ?1)",
            rusqlite::params![id as i64],
        ) {
            Ok(_) => committed.store(id, Ordering::SeqCst),
            Err(_) => {
                // Fenced (SQLITE_BUSY while the agent holds the write lock) or busy: not acked.
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }
        std::thread::sleep(WRITE_EVERY);
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The demo's operator credentials: the primary site's certificate.
fn demo_client(certs: &Path) -> Result<crate::http::Client, String> {
    use crate::transport::{Names, Tls, TlsFiles};
    let files = TlsFiles {
        ca: certs.join("ca.pem"),
        cert: certs.join(format!("{}.pem", NAMES[0])),
        key: certs.join(format!("{}.key", NAMES[0])),
    };
    let names = Names {
        sites: vec![NAMES[0].into(), NAMES[1].into()],
        arbiter: NAMES[2].into(),
    };
    let tls = Tls::load(
        &files,
        names,
        lifeboat_core::Peer::Site(lifeboat_core::SiteId(0)),
    )
    .map_err(|e| e.to_string())?;
    crate::http::Client::agents(Some(&tls), None)
}

fn demo_agent(client: &crate::http::Client, http: u16) -> cli::Agent {
    cli::Agent {
        addr: format!("127.0.0.1:{http}"),
        client: client.clone(),
    }
}

async fn status(client: &crate::http::Client, http: u16) -> Option<StatusDoc> {
    cli::get_status(&demo_agent(client, http)).await.ok()
}

/// The demo's one database in a status document.
fn db0(d: &StatusDoc) -> Option<&DbDoc> {
    d.databases.first()
}

pub async fn run(keep: bool, dir: Option<PathBuf>) -> i32 {
    let started = Instant::now();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("lifeboat-demo-{}", std::process::id()))
    });
    let code = match demo(&dir, started).await {
        Ok(line) => {
            println!("{line}");
            exit::OK
        }
        Err(e) => {
            println!("demo: failed: {e}");
            for n in ["arbiter", "primary", "recovery"] {
                let p = dir.join(format!("{n}.log"));
                if p.exists() {
                    println!("--- last lines of {} ---\n{}", p.display(), tail(&p, 15));
                }
            }
            println!("demo: rpo_txns=unknown rto_ms=unknown verified=no");
            exit::FAILED
        }
    };
    if keep || code != exit::OK {
        println!("(demo files kept in {})", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    code
}

async fn demo(dir: &Path, started: Instant) -> Result<String, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: std::io::Error| format!("{what}: {err}")
    };
    fs::create_dir_all(dir).map_err(e("creating the demo directory"))?;
    let p = crate::ports::free_loopback_ports(6).map_err(e("finding free loopback ports"))?;
    let (arb_listen, arb_http, pri_listen, pri_http, rec_listen, rec_http) =
        (p[0], p[1], p[2], p[3], p[4], p[5]);
    let pri_db = dir.join("primary-db").join("app.db");
    let rec_db = dir.join("recovery-db").join("app.db");
    for d in [dir.join("primary-db"), dir.join("recovery-db")] {
        fs::create_dir_all(d).map_err(e("creating database directories"))?;
    }
    {
        let c = rusqlite::Connection::open(&pri_db).map_err(|x| x.to_string())?;
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
        )
        .map_err(|x| format!("creating the demo table: {x}"))?;
    }
    write_certs(&dir.join("certs"))?;
    let client = demo_client(&dir.join("certs"))?;
    let write = |name: &str, text: String| -> Result<PathBuf, String> {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|x| format!("writing {}: {x}", path.display()))?;
        Ok(path)
    };
    let arb_cfg = write(
        "arbiter.toml",
        arbiter_toml(
            arb_listen,
            arb_http,
            &dir.join("arbiter"),
            &dir.join("certs"),
        ),
    )?;
    let pri_cfg = write(
        "primary.toml",
        site_toml(
            "primary",
            SitePorts {
                listen: pri_listen,
                peer: rec_listen,
                arbiter: arb_listen,
                http: pri_http,
                peer_http: rec_http,
            },
            &dir.join("primary"),
            &pri_db,
            &dir.join("certs"),
        ),
    )?;
    let rec_cfg = write(
        "recovery.toml",
        site_toml(
            "recovery",
            SitePorts {
                listen: rec_listen,
                peer: pri_listen,
                arbiter: arb_listen,
                http: rec_http,
                peer_http: pri_http,
            },
            &dir.join("recovery"),
            &rec_db,
            &dir.join("certs"),
        ),
    )?;

    println!("demo: directory {}", dir.display());
    println!(
        "demo: a throw-away CA and one key pair per party in {}; every link is mutually \
         authenticated TLS 1.3",
        dir.join("certs").display()
    );
    println!(
        "demo: starting the arbiter (:{arb_listen}), the primary agent (:{pri_listen}, http :{pri_http}) \
         and the recovery agent (:{rec_listen}, http :{rec_http}) as separate processes"
    );
    let mut procs = Procs {
        children: Vec::new(),
    };
    for (name, sub, cfg) in [
        ("arbiter", "arbiter", &arb_cfg),
        ("primary", "agent", &pri_cfg),
        ("recovery", "agent", &rec_cfg),
    ] {
        let child = spawn(dir, name, sub, cfg).map_err(e("starting a lifeboat process"))?;
        procs.children.push((name.to_string(), child));
    }

    // Wait for the primary to hold the lease and accept writes.
    let t0 = Instant::now();
    loop {
        if let Some(d) = status(&client, pri_http).await {
            if d.writable {
                break;
            }
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err("the primary did not become writable within 15 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "demo: the primary holds the lease (epoch 1) after {} ms; starting the writer: one row \
         per transaction every {} ms",
        t0.elapsed().as_millis(),
        WRITE_EVERY.as_millis()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let writer_thread = {
        let (db, s, c, r) = (
            pri_db.clone(),
            stop.clone(),
            committed.clone(),
            refused.clone(),
        );
        std::thread::spawn(move || writer(db, s, c, r))
    };

    // Live status until the recovery site restores and the steady period is over.
    let t1 = Instant::now();
    let mut restored_once = false;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (pd, rd) = (
            status(&client, pri_http).await,
            status(&client, rec_http).await,
        );
        if let (Some(pd), Some(rd)) = (&pd, &rd) {
            let (Some(p), Some(r)) = (db0(pd), db0(rd)) else {
                return Err("a status document without the database `app`".into());
            };
            restored_once |= r.restored_lsn.is_some();
            println!(
                "  t={:>5.1}s committed={:<5} primary[{} epoch {} lsn {}]  recovery[{} restored {} backlog {} latency {} last copy {}]",
                started.elapsed().as_secs_f64(),
                committed.load(Ordering::SeqCst),
                pd.role.as_str(),
                pd.epoch,
                p.write_lsn,
                rd.role.as_str(),
                r.restored_lsn.map_or("-".to_string(), |l| l.to_string()),
                r.backlog,
                r.restore_latency_ms
                    .map_or("-".to_string(), |ms| format!("{ms}ms")),
                r.last_copy.as_ref().map_or("-", |a| a.file.as_str()),
            );
        }
        if restored_once && t1.elapsed() >= STEADY {
            break;
        }
        if !restored_once && t1.elapsed() > FIRST_RESTORE_WITHIN {
            stop.store(true, Ordering::SeqCst);
            return Err("the recovery site restored nothing within 25 s".into());
        }
    }
    if let Ok(sites) = cli::all_status(&demo_agent(&client, rec_http)).await {
        println!("demo: `lifeboat status` before the disaster:");
        for line in cli::render(&sites).lines() {
            println!("  {line}");
        }
    }

    // The disaster: the primary site is lost at once (writer and agent).
    stop.store(true, Ordering::SeqCst);
    let _ = writer_thread.join();
    procs.kill("primary");
    let killed_at = Instant::now();
    let committed = committed.load(Ordering::SeqCst);
    println!(
        "demo: DISASTER at t={:.1}s: the primary site is lost (writer stopped, agent killed with \
         SIGKILL); {committed} transactions were acknowledged by SQLite ({} attempts refused while \
         fenced or busy)",
        started.elapsed().as_secs_f64(),
        refused.load(Ordering::Relaxed)
    );

    // Detection and failover, as the recovery site sees them.
    let mut last_role = None;
    let mut printed_alerts = std::collections::BTreeSet::new();
    let alert_key = |a: &AlertDoc| format!("{}/{}/{}", a.kind.as_str(), a.change.as_str(), a.count);
    if let Some(rd) = status(&client, rec_http).await {
        for a in &rd.recent_alerts {
            printed_alerts.insert(alert_key(a));
        }
    }
    let report = loop {
        if killed_at.elapsed() > FAILOVER_WITHIN {
            return Err("no failover report within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(rd) = status(&client, rec_http).await else {
            continue;
        };
        for a in &rd.recent_alerts {
            if printed_alerts.insert(alert_key(a)) {
                println!(
                    "  +{:>4} ms alert {} {} [{}]: {}",
                    killed_at.elapsed().as_millis(),
                    a.kind.as_str(),
                    a.change.as_str(),
                    a.severity.as_str(),
                    a.text
                );
            }
        }
        if last_role != Some(rd.role) {
            println!(
                "  +{:>4} ms recovery site: {} (epoch {}){}",
                killed_at.elapsed().as_millis(),
                rd.role.as_str(),
                rd.epoch,
                rd.procedure
                    .as_ref()
                    .map(|p| format!(", step {}", p.step))
                    .unwrap_or_default()
            );
            last_role = Some(rd.role);
        }
        let failover = rd.reports.iter().find_map(|r| match &r.body {
            ReportBody::Failover {
                epoch,
                new_primary,
                rpo_lower,
                rpo_upper,
                rto_ms,
                ..
            } => Some((*epoch, new_primary.clone(), *rpo_lower, *rpo_upper, *rto_ms)),
            _ => None,
        });
        if let Some(f) = failover {
            break f;
        }
    };
    let (epoch, new_primary, rpo_lower, rpo_upper, rto_ms) = report;
    println!(
        "demo: FAILOVER done: {new_primary} is the primary at epoch {epoch}; reported RPO between {rpo_lower} and {} \
         transactions, RTO {rto_ms} ms (detection to writable); {} ms after the kill",
        rpo_upper.map_or("unknown".to_string(), |u| u.to_string()),
        killed_at.elapsed().as_millis()
    );

    // Verify the new primary's database: exactly the committed prefix, rows 1..k.
    let conn =
        rusqlite::Connection::open_with_flags(&rec_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|x| {
                format!(
                    "opening the new primary's database {}: {x}",
                    rec_db.display()
                )
            })?;
    let TableSummary {
        count,
        min,
        max,
        wrong,
    } = table_summary(&conn).map_err(|x| format!("reading the new primary's database: {x}"))?;
    drop(conn);
    let k = max;
    let prefix = count == k && (k == 0 || min == 1) && wrong == 0 && k <= committed;
    let loss = committed.saturating_sub(k);
    let within = loss >= rpo_lower && rpo_upper.is_none_or(|u| loss <= u);
    println!(
        "demo: the new primary holds rows 1..{k} ({count} rows, {wrong} with wrong contents); \
         {committed} were committed: {loss} transactions lost, {} the reported bounds [{rpo_lower}, {}]",
        if within { "within" } else { "OUTSIDE" },
        rpo_upper.map_or("unknown".to_string(), |u| u.to_string())
    );
    if !prefix {
        return Err(format!(
            "the new primary does not hold a committed prefix (count {count}, min {min}, max {max}, \
             wrong {wrong}, committed {committed})"
        ));
    }
    if !within {
        return Err(format!(
            "the true loss {loss} lies outside the reported RPO bounds [{rpo_lower}, {rpo_upper:?}]"
        ));
    }
    // The new primary accepts writes.
    if let Some(d) = status(&client, rec_http).await {
        println!(
            "demo: the recovery site is {} and {}accepting writes; total demo time {:.1}s",
            d.role.as_str(),
            if d.writable { "" } else { "not yet " },
            started.elapsed().as_secs_f64()
        );
    }
    drop(procs);
    Ok(format!(
        "demo: rpo_txns={loss} rto_ms={rto_ms} verified=yes"
    ))
}

/// What the demo's table `t` holds: the workload writes row `i` as `(i, 'row i')`, so the
/// committed prefix 1..=k is `count == max == k`, `min == 1`, `wrong == 0`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    pub count: u64,
    pub min: u64,
    pub max: u64,
    /// Rows whose contents are not what the workload wrote.
    pub wrong: u64,
}

/// Read the [`TableSummary`] of table `t`.
pub fn table_summary(conn: &rusqlite::Connection) -> rusqlite::Result<TableSummary> {
    conn.query_row(
        "SELECT count(*), coalesce(min(id),0), coalesce(max(id),0), \
         coalesce(sum(v != 'row ' || id),0) FROM t",
        [],
        |r| {
            Ok(TableSummary {
                count: r.get::<_, i64>(0)? as u64,
                min: r.get::<_, i64>(1)? as u64,
                max: r.get::<_, i64>(2)? as u64,
                wrong: r.get::<_, i64>(3)? as u64,
            })
        },
    )
}
