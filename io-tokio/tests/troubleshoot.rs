//! Remote troubleshooting with real agents: from the primary's site.toml an operator changes the
//! recovery agent's log filter, reads its log and decisions, runs the primary's probes and pings
//! the path between the sites over the transport.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

fn lifeboat(args: &[&str]) -> Output {
    std::process::Command::new(BIN).args(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn config(c: &Cluster, site: &str) -> String {
    let p: &Path = c.path(site);
    p.display().to_string()
}

#[test]
fn an_operator_at_one_site_changes_reads_probes_and_pings_both_agents() {
    let c = Cluster::start(Opts::default());
    let pri = config(&c, "primary");

    // log-level: the recovery agent logs at debug for a while; a bad filter is refused by name.
    let out = lifeboat(&[
        "log-level",
        "lifeboat=debug",
        "--for",
        "10m",
        "--config",
        &pri,
        "--site",
        "recovery",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("recovery: log filter is now `lifeboat=debug` until ")
            && stdout.contains("then back to `info`"),
        "{stdout}"
    );
    let out = lifeboat(&["log-level", "lifeboat=loud", "--config", &pri]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid log filter \"lifeboat=loud\"")
            && stderr.contains("lifeboat=debug"),
        "{stderr}"
    );

    // ping: from the primary's agent to the recovery site's, over the transport.
    // The defaults: 5 round trips and 16 MiB (printed: `--nocapture` shows the figures).
    let out = lifeboat(&["ping", "--config", &pri]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    eprint!("{stdout}");
    assert!(stdout.contains("primary -> recovery"), "{stdout}");
    assert!(stdout.contains("over 5 pings"), "{stdout}");
    assert!(
        stdout.contains("16.0 MiB in") && stdout.contains("MiB/s"),
        "{stdout}"
    );
    let out = lifeboat(&["ping", "--config", &pri, "--bytes", "1GiB"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("256 MiB"), "{stderr}");

    // logs of the other site: its debug lines (the ping's link accepted), its info lines and
    // its decisions, from the primary's configuration.
    let out = lifeboat(&["logs", "--config", &pri, "--site", "recovery", "-n", "2000"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("== recovery: last "), "{stdout}");
    assert!(stdout.contains("agent starting"), "{stdout}");
    assert!(stdout.contains("path ping served"), "{stdout}");
    assert!(
        stdout.contains("DEBUG") && stdout.contains("link=Ping"),
        "no debug line of the ping link: {stdout}"
    );
    assert!(stdout.contains("== recovery: recent decisions"), "{stdout}");
    let out = lifeboat(&["logs", "--config", &pri, "--site", "north"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown site \"north\"") && stderr.contains("primary, recovery"),
        "{stderr}"
    );

    // probe: every probe of the primary's agent, now.
    let out = lifeboat(&["probe", "--config", &pri]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let row = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} row: {stdout}"))
            .to_string()
    };
    // The default service probe is the other agent's /health: 503 until its copy is restored.
    assert!(
        row("service").contains(&format!("https://127.0.0.1:{}/health", c.rec_http)),
        "{stdout}"
    );
    assert!(
        row("sql").contains("app") && row("sql").contains(" ok "),
        "{stdout}"
    );
    assert!(row("site").contains("control link up"), "{stdout}");
    assert!(row("arbiter").contains("Arbiter"), "{stdout}");
    assert!(stdout.contains("display only"), "{stdout}");
    eprint!("{stdout}");

    // The changed filter goes back to the configured one when its time is up.
    let out = lifeboat(&[
        "log-level",
        "debug",
        "--for",
        "1s",
        "--config",
        &pri,
        "--site",
        "recovery",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    wait_for(
        "the recovery agent's filter to revert",
        Duration::from_secs(10),
        || {
            let out = lifeboat(&[
                "logs", "--json", "-n", "1", "--config", &pri, "--site", "recovery",
            ]);
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            doc["filter"]["filter"] == "info" && doc["filter"]["reverts_at"].is_null()
        },
    );
}
