//! End-to-end figures of the adapter on loopback, with real processes:
//! - `bench log_to_verified_p50_ms` / `bench log_to_verified_p99_ms`: from a transaction log's
//!   creation at the primary to its verification at the recovery site (received, fsynced,
//!   checksum compared), over `LIFEBOAT_BENCH_LOGS` logs (default 40, one per second) under a
//!   steady write load;
//! - `bench demo_rto_ms`: the RTO `lifeboat demo` reports (detection of the lost primary to the
//!   recovery site accepting writes), median of `LIFEBOAT_BENCH_DEMO_RUNS` runs (default 1).
//!
//! Run with `cargo bench -p lifeboat-io-tokio --bench adapter`.

mod common;

use common::{status, Procs};
use lifeboat_io_tokio::demo::{arbiter_toml, site_toml, SitePorts};
use lifeboat_io_tokio::status::doc::quantile;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lifeboat");

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn log_to_verified(logs: usize) -> Vec<u64> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p: Vec<u16> = lifeboat_io_tokio::ports::free_loopback_ports(6).unwrap();
    let pri_db = d.join("pdb/app.db");
    std::fs::create_dir_all(pri_db.parent().unwrap()).unwrap();
    std::fs::create_dir_all(d.join("rdb")).unwrap();
    lifeboat_io_tokio::demo::write_certs(&d.join("certs")).unwrap();
    rusqlite::Connection::open(&pri_db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=DELETE; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
        )
        .unwrap();
    let files = [
        (
            "arbiter",
            arbiter_toml(p[0], p[1], &d.join("arbiter"), &d.join("certs")),
        ),
        (
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
                &pri_db,
                &d.join("certs"),
            ),
        ),
        (
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
                &d.join("rdb/app.db"),
                &d.join("certs"),
            ),
        ),
    ];
    let mut procs = Procs(Vec::new());
    for (i, (sub, text)) in files.iter().enumerate() {
        let cfg = d.join(format!("{i}.toml"));
        std::fs::write(&cfg, text).unwrap();
        procs.0.push(
            Command::new(BIN)
                .arg(sub)
                .arg("--config")
                .arg(&cfg)
                .env("LIFEBOAT_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let t = Instant::now();
    while !status(p[3]).is_some_and(|s| s["writable"] == true) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the primary never became writable"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, db) = (stop.clone(), pri_db.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(db).unwrap();
            c.busy_timeout(Duration::from_millis(50)).unwrap();
            let mut id = 0i64;
            while !stop.load(Ordering::SeqCst) {
                if c.execute("INSERT INTO t(id, v) VALUES (?1, 'x')", [id + 1])
                    .is_ok()
                {
                    id += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let t = Instant::now();
    let samples = loop {
        std::thread::sleep(Duration::from_millis(500));
        let s = status(p[5]).map(|d| d["log_to_verified_ms"]["samples"].clone());
        let v: Vec<u64> = s
            .and_then(|s| s.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        if v.len() >= logs || t.elapsed() > Duration::from_secs(logs as u64 * 3 + 30) {
            break v;
        }
    };
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    samples
}

fn demo_rto() -> Option<u64> {
    let out = Command::new(BIN).arg("demo").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last()?;
    if !last.ends_with("verified=yes") {
        eprintln!("demo failed:\n{text}");
        return None;
    }
    last.split_whitespace()
        .find_map(|w| w.strip_prefix("rto_ms="))
        .and_then(|v| v.parse().ok())
}

fn main() {
    // `cargo bench` passes --bench; nothing to filter here.
    let logs = env_or("LIFEBOAT_BENCH_LOGS", 40);
    let samples = log_to_verified(logs);
    eprintln!("{} log latencies (ms): {samples:?}", samples.len());
    match (quantile(&samples, 0.5), quantile(&samples, 0.99)) {
        (Some(p50), Some(p99)) => {
            println!("bench log_to_verified_p50_ms {p50}");
            println!("bench log_to_verified_p99_ms {p99}");
        }
        _ => eprintln!("no log was verified at the recovery site"),
    }
    let runs = env_or("LIFEBOAT_BENCH_DEMO_RUNS", 1).max(1);
    let mut rtos: Vec<u64> = (0..runs).filter_map(|_| demo_rto()).collect();
    rtos.sort_unstable();
    if let Some(m) = rtos.get(rtos.len().saturating_sub(1) / 2) {
        println!("bench demo_rto_ms {m}");
    }
}
