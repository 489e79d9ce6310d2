//! End-to-end tests with real `lifeboat` processes on loopback: the arbiter and two site agents,
//! a SQLite database under a write load, kill -9, a TCP proxy that cuts or corrupts a link.

mod common;

use common::*;
use std::time::{Duration, Instant};

const WRITE_EVERY: Duration = Duration::from_millis(10);

/// Wait until the recovery site holds every row the primary holds, after the writer stopped.
fn converge(c: &Cluster, within: Duration) {
    wait_for(
        "the recovery site to restore the primary's last position",
        within,
        || c.caught_up(),
    );
}

#[test]
fn steady_shipping_replays_every_committed_row_at_the_recovery_site() {
    let c = Cluster::start(Opts::default());
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    std::thread::sleep(Duration::from_secs(6));
    let committed = w.stop();
    assert!(
        committed > 100,
        "the writer committed only {committed} rows"
    );
    converge(&c, Duration::from_secs(20));
    assert_prefix(&c.rec_db, committed);
    let d = status(c.rec_http).unwrap();
    assert_eq!(d["role"], "secondary");
    let db = &d["databases"][0];
    assert!(db["last_restore"]["file"]
        .as_str()
        .unwrap()
        .starts_with("app_"));
    assert!(db["restore_latency_ms"].as_u64().is_some());
    // Observability: metrics and the status table.
    let (code, body) = http("GET", c.rec_http, "/metrics").unwrap();
    assert_eq!(code, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("lifeboat_restored_lsn{site=\"recovery\",db=\"app\"}"),
        "{text}"
    );
    let out = std::process::Command::new(BIN)
        .args(["status", "--config", c.path("recovery").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    // The table of the real agents' documents: one row per site, every monitor cell filled.
    let row = |site: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{site} ")))
            .unwrap_or_else(|| panic!("no row for {site}:\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let (rec, pri) = (row("recovery"), row("primary"));
    assert_eq!(rec.len(), 16, "{table}");
    assert_eq!(&rec[1..5], ["secondary", "1", "no", "app"], "{table}");
    assert!(rec[5].parse::<u64>().is_ok(), "RESTORED: {table}");
    for (i, what) in [(8, "LAST BACKUP"), (10, "LAST COPY"), (12, "LAST RESTORE")] {
        assert!(rec[i].starts_with("app_"), "{what}: {table}");
    }
    assert!(
        rec[13].ends_with("ms") || rec[13].ends_with('s'),
        "LATENCY: {table}"
    );
    assert_eq!(&pri[1..5], ["primary", "1", "yes", "app"], "{table}");
    assert!(pri[6].parse::<u64>().unwrap() > 0, "PRODUCED: {table}");
    assert!(
        table.contains("recovery: thresholds: logs every"),
        "{table}"
    );
    assert!(!alert_kinds(c.rec_http)
        .iter()
        .any(|k| k == "primary_down" || k == "restore_error"));
    // The arbiter's document: the holder and its connected sites by name.
    let (code, body) = http("GET", c.arb_http, "/status").unwrap();
    assert_eq!(code, 200);
    let a: lifeboat_io_tokio::status::doc::ArbiterStatusDoc =
        serde_json::from_slice(&body).unwrap();
    assert_eq!((a.role.as_str(), a.epoch), ("arbiter", 1));
    assert_eq!(a.holder.as_deref(), Some("primary"));
    assert!(a.holder_renewing && !a.lease_lapsed, "{a:?}");
    assert!(a.connected.iter().any(|n| n == "primary"), "{a:?}");
}

#[test]
fn primary_site_killed_fails_over_and_the_true_loss_lies_within_the_reported_rpo() {
    let mut c = Cluster::start(Opts::default());
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    let rec = c.rec_http;
    wait_for("a first restore", Duration::from_secs(20), || {
        c.restored().is_some()
    });
    std::thread::sleep(Duration::from_secs(2));
    let committed = w.stop();
    c.kill("primary");
    wait_for("the failover report", Duration::from_secs(20), || {
        !reports(rec, "failover").is_empty()
    });
    let r = reports(rec, "failover").remove(0);
    let d = status(rec).unwrap();
    assert_eq!(d["role"], "primary");
    assert_eq!(d["writable"], true);
    assert_eq!(d["epoch"], 2);
    let (count, _, max, wrong) = rows(&c.rec_db);
    assert_eq!((count, wrong), (max, 0), "a prefix with no hole");
    let loss = committed - max;
    let lower = r["rpo_lower"].as_u64().unwrap();
    let upper = r["rpo_upper"].as_u64().unwrap();
    assert!(
        lower <= loss && loss <= upper,
        "loss {loss} outside [{lower}, {upper}]: {r}"
    );
    assert!(r["rto_ms"].as_u64().unwrap() < 10_000, "{r}");
    assert!(alert_kinds(rec).contains(&"primary_down".to_string()));
}

#[test]
fn a_cut_link_while_the_arbiter_sees_the_primary_raises_link_down_and_never_fails_over() {
    let hook = Webhook::start();
    let c = Cluster::start(Opts {
        proxies: true,
        site_extra: format!(
            "\n[[alerts]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/alerts\"\n",
            hook.port
        ),
        ..Opts::default()
    });
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(20), || {
        c.restored().is_some()
    });
    c.cut_link();
    let at_cut = w.committed.load(std::sync::atomic::Ordering::SeqCst);
    let rec = c.rec_http;
    wait_for("a link_down alert", Duration::from_secs(15), || {
        alert_kinds(rec).contains(&"link_down".to_string())
    });
    // Several lease periods later: still no failover, the primary still serves.
    std::thread::sleep(Duration::from_secs(6));
    let committed = w.stop();
    let d = status(rec).unwrap();
    assert_eq!(d["role"], "secondary", "{d}");
    assert_eq!(d["epoch"], 1);
    assert!(reports(rec, "failover").is_empty());
    let p = status(c.pri_http).unwrap();
    assert_eq!(p["role"], "primary");
    assert_eq!(p["writable"], true);
    assert!(
        committed > at_cut + 50,
        "the primary kept accepting writes ({at_cut} at the cut, {committed} at the end)"
    );
    assert!(d["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["kind"] == "link_down"));
}

#[test]
fn planned_switchover_loses_nothing_and_swaps_the_roles() {
    let c = Cluster::start(Opts::default());
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(20), || {
        c.restored().is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    let out = std::process::Command::new(BIN)
        .args([
            "switchover",
            "--config",
            c.path("primary").to_str().unwrap(),
            "--wait",
            "30",
        ])
        .output()
        .unwrap();
    let committed = w.stop();
    assert!(
        out.status.success(),
        "switchover: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reports(c.rec_http, "switchover");
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["rpo"], 0);
    let d = status(c.rec_http).unwrap();
    assert_eq!(d["role"], "primary");
    wait_for(
        "the old primary to become the secondary",
        Duration::from_secs(10),
        || status(c.pri_http).is_some_and(|p| p["role"] == "secondary"),
    );
    // Every acknowledged commit is at the new primary: zero loss.
    assert_prefix(&c.rec_db, committed);
}

#[test]
fn kill9_of_each_process_at_random_moments_loses_nothing_acknowledged() {
    use rand::{Rng, SeedableRng};
    // Automatic failover off: the test is about journals and restarts, not roles.
    let mut c = Cluster::start(Opts {
        failover: "automatic = false",
        ..Opts::default()
    });
    let seed: u64 = std::env::var("LIFEBOAT_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill9 seed {seed} (LIFEBOAT_E2E_SEED={seed} to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    let names = ["primary", "recovery", "arbiter"];
    for round in 0..21 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..700)));
        let victim = names[round % 3];
        c.kill(victim);
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..300)));
        c.spawn(victim);
    }
    std::thread::sleep(Duration::from_secs(2));
    let committed = w.stop();
    let pri = c.pri_http;
    // The primary takes a last log once it holds the lease again; then the recovery catches up.
    wait_for(
        "the primary to hold the lease again",
        Duration::from_secs(20),
        || status(pri).is_some_and(|d| d["writable"] == true),
    );
    converge(&c, Duration::from_secs(30));
    assert_prefix(&c.rec_db, committed);
    // Restarts resumed from the journal: the primary is still at epoch 1.
    assert_eq!(status(pri).unwrap()["epoch"], 1);
    assert!(c.log("primary").contains("agent starting"));
}

#[test]
fn an_artifact_corrupted_in_transit_is_copied_again_and_never_restored_corrupt() {
    let c = Cluster::start(Opts {
        proxies: true,
        ..Opts::default()
    });
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(20), || {
        c.restored().is_some()
    });
    let proxy = c.to_recovery.as_ref().unwrap();
    proxy.corrupt_next();
    wait_for("a corrupted transfer", Duration::from_secs(15), || {
        proxy.corrupted.load(std::sync::atomic::Ordering::SeqCst) > 0
    });
    std::thread::sleep(Duration::from_secs(2));
    let committed = w.stop();
    converge(&c, Duration::from_secs(30));
    assert_prefix(&c.rec_db, committed);
}

#[test]
fn an_artifact_corrupted_on_disk_before_shipping_is_detected_and_never_restored() {
    // A hole reseeds at once here, so the test does not wait the default 30 minutes.
    let mut c = Cluster::start(Opts {
        restore: "reseed_after_minutes = 0",
        ..Opts::default()
    });
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(20), || {
        c.restored().is_some()
    });
    // The recovery site goes away; logs pile up in the primary's outbox.
    c.kill("recovery");
    let outbox = c.dir.path().join("primary/outbox");
    let logs = || -> std::collections::BTreeSet<std::path::PathBuf> {
        std::fs::read_dir(&outbox)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.to_string_lossy().contains("_tlog_")
                    && !p.to_string_lossy().ends_with(".manifest")
            })
            .collect()
    };
    // A log made after the recovery site went away: one there before may be acknowledged
    // already (its removal waits for the primary's next journal sync).
    let before = logs();
    let mut victim = None;
    wait_for("a new log in the outbox", Duration::from_secs(10), || {
        victim = logs().difference(&before).next().cloned();
        victim.is_some()
    });
    let victim = victim.unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    c.spawn("recovery");
    let rec = c.rec_http;
    wait_for("a checksum_mismatch alert", Duration::from_secs(20), || {
        alert_kinds(rec).contains(&"checksum_mismatch".to_string())
    });
    std::thread::sleep(Duration::from_secs(1));
    let committed = w.stop();
    // The hole is bridged by a new full backup; the corrupt copy is quarantined, never applied.
    converge(&c, Duration::from_secs(40));
    assert_prefix(&c.rec_db, committed);
    let q = std::fs::read_dir(c.dir.path().join("recovery/quarantine"))
        .unwrap()
        .count();
    assert!(q > 0, "the corrupt copy is kept in the quarantine");
}

#[test]
fn a_bad_configuration_is_refused_with_file_line_field_and_allowed_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.toml");
    std::fs::write(
        &path,
        "site = \"primary\"\nlisten = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\narbiter = \"127.0.0.1:3\"\nhttp = \"127.0.0.1:4\"\ndata_dir = \"d\"\n[engine]\ndatabses = [\"a\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site.toml:8") && err.contains("databses") && err.contains("databases"),
        "{err}"
    );
    // A value that parses but cannot run: the field, its line and what to do.
    std::fs::write(
        &path,
        "site = \"paris\"\nlisten = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\narbiter = \"127.0.0.1:3\"\nhttp = \"127.0.0.1:4\"\ndata_dir = \"d\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("site.toml:1") && err.contains("`site`") && err.contains("primary, recovery"),
        "{err}"
    );
}

#[test]
fn garbage_frames_close_that_connection_with_a_reason_and_the_agent_carries_on() {
    use std::io::{Read, Write};
    let c = Cluster::start(Opts::default());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.rec_listen)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nthis is not a lifeboat frame at all\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf); // closed by the agent (with a Close frame, or just EOF)
    wait_for("the reason in the log", Duration::from_secs(5), || {
        let log = c.log("recovery");
        // Not TLS at all: refused before a frame is read.
        log.contains("connection refused") && log.contains("tls handshake failed")
    });
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    std::thread::sleep(Duration::from_secs(3));
    let committed = w.stop();
    converge(&c, Duration::from_secs(20));
    assert_prefix(&c.rec_db, committed);
}

#[test]
fn the_demo_runs_end_to_end_and_ends_with_the_verified_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .arg("demo")
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("demo: rpo_txns=") && last.ends_with(" verified=yes"),
        "{last}"
    );
    assert!(text.contains("FAILOVER done"), "{text}");
}

#[test]
fn without_the_arbiter_only_a_forced_failover_promotes_the_recovery_site() {
    let mut c = Cluster::start(Opts::default());
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(20), || {
        c.restored().is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    let committed = w.stop();
    c.kill("arbiter");
    c.kill("primary");
    let rec = c.rec_http;
    // Nobody can confirm the primary is gone: no automatic failover, an alert instead.
    wait_for("primary_down", Duration::from_secs(15), || {
        alert_kinds(rec).contains(&"primary_down".to_string())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(rec).unwrap()["role"], "secondary");
    // A refused (unforced) request fails with exit code 1 and a pointer to the reason.
    let out = std::process::Command::new(BIN)
        .args([
            "failover",
            "--config",
            c.path("recovery").to_str().unwrap(),
            "--wait",
            "3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = std::process::Command::new(BIN)
        .args([
            "failover",
            "--force",
            "--config",
            c.path("recovery").to_str().unwrap(),
            "--wait",
            "30",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reports(rec, "failover").remove(0);
    assert_eq!(r["forced"], true);
    let d = status(rec).unwrap();
    assert_eq!(
        (d["role"].as_str(), d["writable"].as_bool()),
        (Some("primary"), Some(true))
    );
    let (count, _, max, wrong) = rows(&c.rec_db);
    assert_eq!((count, wrong), (max, 0));
    assert!(max <= committed);
}

/// Run the agent of site `name` and wait (bounded) for it to exit on its own.
fn agent_exit(c: &Cluster, name: &str, within: Duration) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(BIN)
        .args(["agent", "--config"])
        .arg(c.path(name))
        .env("LIFEBOAT_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if t.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (code, err)
}

/// Damage followed by intact records is corruption of acknowledged inputs, never a torn tail:
/// the agent stops (exit 4) and says where and what the operator can do, and the journal is
/// left as it was.
#[test]
fn a_journal_damaged_in_the_middle_stops_the_agent_with_exit_4_naming_the_record_and_choices() {
    let mut c = Cluster::start(Opts::default());
    let journal = c.dir.path().join("recovery/journal/journal");
    wait_for(
        "the recovery site's journal to hold a few records",
        Duration::from_secs(20),
        || std::fs::metadata(&journal).is_ok_and(|m| m.len() > 400),
    );
    c.kill("recovery");
    let mut bytes = std::fs::read(&journal).unwrap();
    // Inside the first record (the header is 22 bytes, a record header 16): records follow.
    bytes[22 + 20] ^= 0xff;
    std::fs::write(&journal, &bytes).unwrap();
    let (code, err) = agent_exit(&c, "recovery", Duration::from_secs(20));
    assert_eq!(code, Some(4), "{err}");
    for needle in [
        "journal record",
        "at byte 22",
        "not a torn tail",
        "truncate -s 22",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        bytes,
        "the damaged journal must be left as it is"
    );
}

/// A deleted journal beside artifacts or a snapshot is said loudly, not started over in silence.
#[test]
fn a_deleted_journal_is_reported_loudly_at_start() {
    let mut c = Cluster::start(Opts::default());
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(60), || {
        c.restored().is_some()
    });
    w.stop();
    c.kill("primary");
    std::fs::remove_file(c.dir.path().join("primary/journal/journal")).unwrap();
    c.spawn("primary");
    let t = std::time::Instant::now();
    while !c.log("primary").contains("holds files but no journal") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no warning about the missing journal:\n{}",
            c.log("primary")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A second agent started by accident on a running agent's data_dir (and a second arbiter on
/// the arbiter's) exits with code 4 and names the process that holds it; the running cluster
/// goes on unharmed: the primary still accepts writes.
#[test]
fn a_second_agent_on_the_same_data_dir_exits_4() {
    let c = Cluster::start(Opts::default());
    for (sub, name) in [("agent", "primary"), ("arbiter", "arbiter")] {
        let out = std::process::Command::new(BIN)
            .arg(sub)
            .arg("--config")
            .arg(c.path(name))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{sub}: {err}");
        assert!(
            err.contains("in use by another lifeboat process")
                && err.contains(&format!("{sub} pid")),
            "{sub}: {err}"
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(status(c.pri_http).is_some_and(|d| d["writable"] == true));
}

/// `SIGTERM` stops an agent and the arbiter cleanly: exit 0 within seconds, saying so; started
/// again, the primary takes its lease up and accepts writes.
#[test]
fn sigterm_stops_the_agents_and_the_arbiter_cleanly_and_they_resume() {
    let mut c = Cluster::start(Opts::default());
    for name in ["recovery", "primary", "arbiter"] {
        assert_eq!(
            c.terminate(name, Duration::from_secs(10)),
            Some(0),
            "{name}: {}",
            c.log(name)
        );
        assert!(c.log(name).contains("stopping"), "{}", c.log(name));
    }
    for name in ["arbiter", "primary", "recovery"] {
        c.spawn(name);
    }
    let pri = c.pri_http;
    wait_for(
        "the primary to accept writes again",
        Duration::from_secs(30),
        || status(pri).is_some_and(|d| d["writable"] == true),
    );
}

#[test]
fn operator_requests_without_credentials_get_401_and_change_nothing() {
    let c = Cluster::start(Opts::default());
    let before = status(c.pri_http).unwrap();
    for req in [
        "pause",
        "resume",
        "reseed",
        "switchover",
        "failover",
        "drill",
    ] {
        let (code, body) = https(
            "POST",
            c.pri_http,
            &format!("/operator/{req}"),
            Some("{\"db\": \"app\"}"),
            None,
            None,
        )
        .unwrap();
        assert_eq!(code, 401, "{req}: {}", String::from_utf8_lossy(&body));
    }
    let (code, _) = https("GET", c.pri_http, "/operator/logs", None, None, None).unwrap();
    assert_eq!(code, 401, "the logs are an agent's inside");
    let (code, _) = https(
        "POST",
        c.pri_http,
        "/operator/pause",
        Some("{}"),
        Some("x"),
        None,
    )
    .unwrap();
    assert_eq!(code, 401, "a made-up token is no credential");
    // A browser page of another origin is refused whatever it sends.
    let (code, _) = https(
        "POST",
        c.pri_http,
        "/operator/pause",
        Some("{}"),
        None,
        Some("https://evil.example"),
    )
    .unwrap();
    assert_eq!(code, 403);
    std::thread::sleep(Duration::from_secs(1));
    let after = status(c.pri_http).unwrap();
    for key in ["role", "epoch", "backups_paused"] {
        assert_eq!(after[key], before[key], "{key} changed");
    }
    assert_eq!(after["backups_paused"], false);
    // The same request with the site's certificate (what the CLI presents) is taken.
    let out = std::process::Command::new(BIN)
        .args(["pause", "--config", c.path("primary").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the pause", Duration::from_secs(5), || {
        status(c.pri_http).is_some_and(|d| d["backups_paused"] == true)
    });
}

#[test]
fn a_refused_operator_request_answers_409_with_the_reason() {
    let c = Cluster::start(Opts::default());
    let t = Instant::now();
    let out = std::process::Command::new(BIN)
        .args([
            "failover",
            "--config",
            c.path("primary").to_str().unwrap(),
            "--wait",
            "120",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("HTTP 409") && err.contains("this site is primary"),
        "{err}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "the refusal is the answer, not a wait for a report that never comes"
    );
    assert_eq!(status(c.pri_http).unwrap()["role"], "primary");
}

/// Certificates rotated on disk (a new CA and new keys for every party) and `SIGHUP`: the
/// agents and the arbiter keep running and present the new certificates on new connections.
/// Before the signal, a CLI that trusts only the new CA cannot read the agents; after it, it
/// can, and the sites still replicate over links made with the new keys.
#[test]
fn sighup_loads_rotated_certificates_without_a_restart() {
    let mut c = Cluster::start(Opts {
        proxies: true,
        ..Opts::default()
    });
    let certs = c.dir.path().join("certs");
    let fresh = c.dir.path().join("rotated");
    lifeboat_io_tokio::demo::write_certs(&fresh).unwrap();
    for entry in std::fs::read_dir(&fresh).unwrap() {
        let from = entry.unwrap().path();
        std::fs::copy(&from, certs.join(from.file_name().unwrap())).unwrap();
    }
    let cli_reads = |c: &Cluster| {
        let out = std::process::Command::new(BIN)
            .args(["status", "--config", c.path("recovery").to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        out.status.success() && text.lines().any(|l| l.starts_with("primary "))
    };
    assert!(
        !cli_reads(&c),
        "the agents still present the old certificates"
    );
    for name in ["arbiter", "primary", "recovery"] {
        let pid = c.pid(name).unwrap().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    }
    wait_for(
        "the CLI with the new CA to read both agents",
        Duration::from_secs(10),
        || cli_reads(&c),
    );
    for name in ["arbiter", "primary", "recovery"] {
        assert!(!c.exited(name), "{name} stopped on SIGHUP: {}", c.log(name));
        assert!(
            c.log(name).contains("certificates loaded again"),
            "{name}: {}",
            c.log(name)
        );
    }
    // The sites' links are made again, now with the new keys on both ends.
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    c.cut_link();
    std::thread::sleep(Duration::from_secs(2));
    for p in [&c.to_primary, &c.to_primary_http, &c.to_recovery] {
        p.as_ref().unwrap().heal();
    }
    std::thread::sleep(Duration::from_secs(2));
    let written = w.stop();
    assert!(written > 0);
    converge(&c, Duration::from_secs(60));
}

/// A plain HTTP request on loopback (no TLS): (status, body).
fn plain_http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// `http_open`: a plain bind a scraper without the CA can read `/health` and `/metrics` on,
/// and nothing else; the TLS address is unchanged.
#[test]
fn the_open_bind_serves_health_and_metrics_only() {
    let mut c = Cluster::start(Opts::default());
    let port = free_ports(1)[0];
    assert_eq!(c.terminate("primary", Duration::from_secs(10)), Some(0));
    let path = c.path("primary").to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("http_open = \"127.0.0.1:{port}\"\n{text}")).unwrap();
    c.spawn("primary");
    wait_for("the open bind", Duration::from_secs(20), || {
        plain_http(port, "GET", "/health").is_some_and(|(code, _)| code == 200)
    });
    let (code, body) = plain_http(port, "GET", "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("lifeboat_"), "{body}");
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/operator/logs"),
        ("POST", "/operator/pause"),
        ("POST", "/operator/failover"),
    ] {
        // Not served here: 404, or 401 where the credential check answers first.
        let (code, body) = plain_http(port, method, path).unwrap();
        assert!(code == 404 || code == 401, "{method} {path}: {body}");
    }
    let d = status(c.pri_http).unwrap();
    assert_eq!(d["backups_paused"], false, "the open bind changed nothing");
    // The TLS address still answers the full API.
    assert!(status(c.pri_http).is_some());
}
