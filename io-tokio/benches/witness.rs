//! Failover time with the witness on etcd against the built-in arbiter (issue 16), at the
//! engine's default timers (8 s lease), on the same machine: two agents with a SQLite database
//! and a writer; the primary agent is killed; the time until the recovery site accepts writes.
//! etcd is a three-member cluster on loopback with TLS and client certificates.
//!
//! Run with `cargo bench -p lifeboat-io-tokio --bench witness` (not in CI; needs
//! `/usr/bin/etcd`, Debian etcd-server). `LIFEBOAT_BENCH_ROUNDS` (default 3) rounds of each,
//! alternating. Prints `bench witness_failover_s_arbiter`, `bench witness_failover_s_etcd`
//! (medians) and `bench witness_etcd_over_arbiter_ratio`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::etcd::{self, EtcdCluster};
use common::*;
use std::time::{Duration, Instant};

fn one(etcd: bool) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let cluster = etcd.then(|| {
        let certs = dir.path().join("certs");
        lifeboat_io_tokio::demo::write_certs(&certs).unwrap();
        EtcdCluster::start(3, dir.path(), &certs)
    });
    let mut c = Cluster::start(Opts {
        etcd: cluster
            .as_ref()
            .map(|e| (e.witness_toml("/lifeboat/bench"), dir.path().join("certs"))),
        default_timers: true,
        ..Opts::default()
    });
    let w = Writer::start(&c.pri_db, Duration::from_millis(10));
    wait_for("a first restore", Duration::from_secs(60), || {
        c.restored().is_some()
    });
    // Steady state: several renewals and probes.
    std::thread::sleep(Duration::from_secs(5));
    let rec = c.rec_http;
    let killed = Instant::now();
    c.kill("primary");
    wait_for(
        "the recovery site to accept writes",
        Duration::from_secs(60),
        || status(rec).is_some_and(|d| d["writable"] == true),
    );
    let s = killed.elapsed().as_secs_f64();
    w.stop();
    s
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if !std::path::Path::new(etcd::ETCD).exists() {
        println!(
            "witness bench skipped: {} is not installed (Debian etcd-server)",
            etcd::ETCD
        );
        return;
    }
    let rounds: usize = std::env::var("LIFEBOAT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (mut arbiter, mut etcd) = (Vec::new(), Vec::new());
    for r in 1..=rounds {
        let a = one(false);
        let e = one(true);
        println!("round {r}: kill to writable: arbiter {a:.2} s, etcd {e:.2} s");
        arbiter.push(a);
        etcd.push(e);
    }
    let (a, e) = (median(&mut arbiter), median(&mut etcd));
    println!("bench witness_failover_s_arbiter {a:.2}");
    println!("bench witness_failover_s_etcd {e:.2}");
    println!("bench witness_etcd_over_arbiter_ratio {:.2}", e / a);
}
