//! The `lifeboat-sim` command line: fault names, JSON summaries, exit codes, reproduction
//! commands that replay bit for bit, and shrinking to a scenario file.

use std::path::PathBuf;
use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lifeboat-sim"))
        .args(args)
        .output()
        .expect("lifeboat-sim runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lifeboat-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn faults_lists_every_canonical_mode() {
    let o = sim(&["faults"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for m in lifeboat_scenarios::FaultMode::ALL {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(m.as_str())),
            "`faults` does not list {m}"
        );
    }
}

#[test]
fn run_json_ends_with_one_object_and_exits_zero_without_violations() {
    let o = sim(&[
        "run", "--seeds", "0..2", "--hours", "1", "--faults", "none", "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let last = text.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(v["seeds"], 2);
    assert_eq!(v["violations"], 0);
    assert_eq!(v["simulated_hours"], 2.0);
    assert_eq!(v["failovers"], 0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("progress"));
}

#[test]
fn a_violation_exits_one_and_its_reproduction_replays_bit_for_bit() {
    // A clean world never fails over: expecting one is a violation the CLI must report.
    let file = temp_file(
        "expects_a_failover.toml",
        "name = \"expects_a_failover\"\n[world]\nhours = 0.5\n[expect]\nfailover = true\n",
    );
    let path = file.to_string_lossy().to_string();
    let o = sim(&["run", "--scenario", &path, "--seeds", "0..1"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("VIOLATION seed 0: expect"), "{text}");
    let repro = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("reproduce: "))
        .expect("a reproduction command");
    assert_eq!(
        repro,
        format!("lifeboat-sim replay --seed 0 --hours 0.5 --scenario {path}")
    );
    let hash = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("trace hash: "))
        .expect("a trace hash")
        .to_string();
    let args: Vec<&str> = repro.split_whitespace().skip(1).collect();
    let again = sim(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stdout(&again).contains(&format!("trace hash {hash}")),
        "{}",
        stdout(&again)
    );

    // Shrinking prints a scenario that reproduces it.
    let shrunk = sim(&["shrink", "--seed", "0", "--scenario", &path]);
    let toml = stdout(&shrunk);
    let sc = lifeboat_scenarios::Scenario::parse(&toml, "shrunk").expect("a scenario file");
    assert!(sc.expect.violation);
    let back = temp_file("shrunk.toml", &toml);
    let replayed = sim(&[
        "run",
        "--scenario",
        &back.to_string_lossy(),
        "--seeds",
        "0..1",
    ]);
    assert!(replayed.status.success(), "{}", stdout(&replayed));
}

#[test]
fn bad_arguments_name_the_problem() {
    let o = sim(&["run", "--faults", "partiton"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown fault mode \"partiton\""));
    let o = sim(&["run", "--seeds", "9..3"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn witness_chooses_etcd_for_every_seed_and_names_a_wrong_kind() {
    let o = sim(&[
        "run",
        "--seeds",
        "0..2",
        "--hours",
        "1",
        "--faults",
        "none",
        "--witness",
        "etcd",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = stdout(&o);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().expect("output")).expect("JSON");
    let n = |k: &str| v["witness"][k].as_u64().unwrap_or(0);
    assert_eq!(n("etcd") + n("none"), 2, "{}", v["witness"]);
    assert_eq!(n("arbiter"), 0);
    if n("etcd") > 0 {
        assert!(v["etcd_calls"].as_u64().unwrap_or(0) > 0);
    }
    let o = sim(&["run", "--witness", "zookeeper"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("zookeeper"));
}
