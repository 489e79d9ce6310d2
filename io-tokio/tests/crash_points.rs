//! Crash safety by construction, checked: a real agent is aborted at each named crash point
//! (`io-tokio/src/crash.rs`, `LIFEBOAT_CRASH_AT`) while a writer runs, then restarted. After
//! each: the recovery copy holds exactly the primary's acknowledged rows, no `missing_log` and
//! no reseed was raised, and the recovery site catches up within 30 s of the restart.

mod common;

use common::*;
use std::time::{Duration, Instant};

const WRITE_EVERY: Duration = Duration::from_millis(10);

/// Wait (up to 60 s) until `victim` aborted at its armed crash point.
fn wait_for_crash(c: &mut Cluster, victim: &str, point: &str) {
    let t = Instant::now();
    while !c.exited(victim) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{victim} never reached crash point {point}:\n{}",
            c.log(victim)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        c.log(victim)
            .contains(&format!("crash point {point} reached")),
        "{victim} exited, but not at {point}:\n{}",
        c.log(victim)
    );
}

/// A cluster under a write load whose recovery agent was restarted with `point` armed.
fn recovery_armed_at(point: &str) -> (Cluster, Writer) {
    let mut c = Cluster::start(Opts::default());
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(60), || {
        c.restored().is_some()
    });
    c.kill("recovery");
    let armed = format!("{point}:1");
    c.spawn_env("recovery", &[(lifeboat_io_tokio::crash::ENV, &armed)]);
    wait_for("the recovery agent back", Duration::from_secs(30), || {
        status(c.rec_http).is_some()
    });
    (c, w)
}

/// Run an operator command that only sends its request (`--wait 0`); it must be accepted.
fn operator(args: &[&str]) {
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["--wait", "0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Abort `victim` at the `nth` pass of `point`, restart it, and check the chain stayed whole.
fn crash_and_recover(victim: &'static str, point: &str, nth: u32) -> Duration {
    let mut c = Cluster::start(Opts {
        failover: "automatic = false",
        ..Opts::default()
    });
    let w = Writer::start(&c.pri_db, WRITE_EVERY);
    wait_for("a first restore", Duration::from_secs(60), || {
        c.restored().is_some()
    });
    c.kill(victim);
    let armed = format!("{point}:{nth}");
    c.spawn_env(victim, &[(lifeboat_io_tokio::crash::ENV, &armed)]);
    wait_for_crash(&mut c, victim, point);
    c.spawn(victim);
    let restarted = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let committed = w.stop();
    let pri = c.pri_http;
    wait_for(
        "the primary to hold the lease again",
        Duration::from_secs(30),
        || status(pri).is_some_and(|d| d["writable"] == true),
    );
    wait_for(
        "the recovery site to restore the primary's last position",
        Duration::from_secs(30),
        || c.caught_up(),
    );
    let caught_up = restarted.elapsed();
    assert_prefix(&c.rec_db, committed);
    let kinds = alert_kinds(c.rec_http);
    for bad in ["missing_log", "reseed"] {
        assert!(
            !kinds.iter().any(|k| k == bad),
            "{bad} raised after a crash of {victim} at {point}: {kinds:?}\n{}",
            c.log("recovery")
        );
    }
    caught_up
}

#[test]
fn a_crash_at_every_named_point_loses_nothing_and_opens_no_hole() {
    let cases: &[(&str, &str, u32)] = &[
        ("primary", "publish_before_journal", 2),
        ("primary", "journal_before_effects", 40),
        ("primary", "snapshot_before_journal", 1),
        ("primary", "capture_mid_shadow", 3),
        ("recovery", "journal_before_effects", 40),
        ("recovery", "receive_before_fsync", 2),
        ("recovery", "receive_before_rename", 2),
        ("recovery", "receive_before_report", 2),
        ("recovery", "restore_before_report", 2),
        ("recovery", "snapshot_before_journal", 1),
    ];
    let mut covered: Vec<&str> = cases.iter().map(|(_, p, _)| *p).collect();
    covered.push("promote_before_report");
    covered.push("mid_reseed");
    for p in lifeboat_io_tokio::crash::POINTS {
        assert!(covered.contains(p), "crash point {p} has no case here");
    }
    for (victim, point, nth) in cases {
        let took = crash_and_recover(victim, point, *nth);
        eprintln!("crash of {victim} at {point}: caught up {took:?} after the restart");
    }
}

/// The promotion crash point: a planned switchover whose target dies after promoting its
/// databases and before telling its engine. Restarted, it finishes the switchover with zero
/// loss.
#[test]
fn a_crash_mid_promotion_finishes_the_switchover_after_the_restart_with_zero_loss() {
    let (mut c, w) = recovery_armed_at("promote_before_report");
    // The primary refuses a switchover to a recovery site it has not heard from in three
    // heartbeats, and a just-restarted agent may not have been heard yet, or may not have
    // checked its own database service since it started (the switchover is then aborted at
    // once: "mend it and ask again"): ask until the recovery site reaches the crash point.
    let t = Instant::now();
    loop {
        operator(&[
            "switchover",
            "--config",
            c.path("primary").to_str().unwrap(),
        ]);
        let asked = Instant::now();
        while !c.exited("recovery") && asked.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if c.exited("recovery") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the switchover never reached the recovery site's promotion:\n{}",
            c.log("primary")
        );
        // A switchover still running is left to finish; one that was refused or aborted (the
        // primary is writable again) is asked for again.
        wait_for(
            "the primary to be primary again",
            Duration::from_secs(30),
            || c.exited("recovery") || status(c.pri_http).is_some_and(|d| d["role"] == "primary"),
        );
        if c.exited("recovery") {
            break;
        }
    }
    wait_for_crash(&mut c, "recovery", "promote_before_report");
    let committed = w.stop();
    c.spawn("recovery");
    wait_for(
        "the recovery site to become the writable primary",
        Duration::from_secs(60),
        || status(c.rec_http).is_some_and(|d| d["role"] == "primary" && d["writable"] == true),
    );
    assert_prefix(&c.rec_db, committed);
}

/// The reseed crash point: the recovery agent dies after installing the new full backup and
/// before resetting its chain state. Restarted, it finishes the reseed and follows the primary
/// with every acknowledged row.
#[test]
fn a_crash_mid_reseed_finishes_the_reseed_after_the_restart() {
    let (mut c, w) = recovery_armed_at("mid_reseed");
    operator(&[
        "reseed",
        "app",
        "--config",
        c.path("recovery").to_str().unwrap(),
    ]);
    wait_for_crash(&mut c, "recovery", "mid_reseed");
    c.spawn("recovery");
    std::thread::sleep(Duration::from_secs(1));
    let committed = w.stop();
    wait_for(
        "the recovery site to restore the primary's last position",
        Duration::from_secs(60),
        || c.caught_up(),
    );
    assert_prefix(&c.rec_db, committed);
    assert!(!alert_kinds(c.rec_http).iter().any(|k| k == "missing_log"));
}
