//! Fuzz body for configuration: `site.toml` and `arbiter.toml` (`config::SiteFile::parse`,
//! `config::ArbiterFile::parse`), the engine's `lifeboat_core::Config::validate`, and the exec
//! driver's command templates (`driver::exec::CommandTemplate`).
//!
//! Checked:
//! - nothing panics on any text, value or template;
//! - a file that is refused says where: its error names the file and a line or a field, and
//!   carries a message;
//! - a file that parses holds an engine configuration that validates, and every duration in it
//!   (the engine's and the adapter's) is within `MAX_DURATION_MS`, so `now + interval`, sums of
//!   intervals and `minutes * MINUTE` cannot overflow: an engine (site and arbiter) built from
//!   it runs a few ticks, thirty years of uptime apart, without overflowing;
//! - the same for engine configurations built directly from the bytes (values TOML cannot
//!   write, up to `u64::MAX`);
//! - a template either is refused with a reason or renders: a template without braces renders
//!   to its own words, `{chain}` as a whole argument becomes one argument per item.

use crate::bytes::Bytes;
use lifeboat_core::arbiter::Arbiter;
use lifeboat_core::config::{MAX_DURATION_MINUTES, MAX_DURATION_MS};
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::{Config, Input, SiteId, MINUTE};
use lifeboat_io_tokio::config::{ArbiterFile, ConfigFileError, DriverConfig, SiteFile};
use lifeboat_io_tokio::drivers::CommandTemplate;
use std::path::Path;

/// A valid site file (the README's, with every table this body edits).
pub const SITE_TOML: &str = r#"site = "primary"
listen = "10.0.1.10:7401"
peer = "10.0.2.10:7401"
arbiter = "10.0.3.10:7400"
http = "127.0.0.1:7480"
peer_http = "10.0.2.10:7480"
data_dir = "/var/lib/lifeboat"

[engine]
sites = ["primary", "recovery"]
initial_primary = "primary"
databases = ["sales"]

[engine.schedule]
full_every_ms = 86400000
log_every_ms = 60000

[engine.lease]
lease_ms = 10000
renew_every_ms = 2000

[engine.alerts]
critical_after_minutes = 30

[driver]
kind = "sqlite"
busy_timeout_ms = 5000
[[driver.databases]]
name = "sales"
path = "/srv/app/sales.sqlite"

[probes]
service = [{ kind = "tcp", addr = "10.0.1.10:5432" }]

[hooks]
identity = ["/usr/local/sbin/move-vip", "{site}", "{epoch}"]

[[alerts]]
kind = "webhook"
url = "http://alerts.internal:9000/lifeboat"

[disk]
check_every_ms = 10000

[tls]
ca = "/etc/lifeboat/certs/ca.pem"
cert = "/etc/lifeboat/certs/primary.pem"
key = "/etc/lifeboat/certs/primary.key"
"#;

/// A valid arbiter file.
pub const ARBITER_TOML: &str = r#"listen = "10.0.3.10:7400"
http = "127.0.0.1:7490"
data_dir = "/var/lib/lifeboat-arbiter"

[engine]
sites = ["primary", "recovery"]
initial_primary = "primary"
databases = ["sales"]

[engine.restore]
op_timeout_ms = 600000
"#;

/// Every placeholder some exec operation offers.
const PLACEHOLDERS: &[&str] = &[
    "db",
    "db_id",
    "target",
    "path",
    "kind",
    "epoch",
    "lsn",
    "lsn_start",
    "lsn_end",
    "base_full",
    "chain",
    "scratch",
];

/// The first byte picks what the rest is:
/// - `0`: a site file and an arbiter file, as is;
/// - `1`: the valid site or arbiter file above with one value replaced: a number chosen from
///   the bytes (0, 1, huge, `i64::MAX`) or bytes spliced into the value;
/// - `2`: an engine configuration built field by field from the bytes, validated;
/// - else: a command template, as a line and as an argv, rendered.
pub fn site_config(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut r = Bytes::new(rest);
    match mode % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            check_site(&text);
            check_arbiter(&text);
        }
        1 => {
            let arbiter = r.chance(64);
            let text = edited(&mut r, if arbiter { ARBITER_TOML } else { SITE_TOML });
            if arbiter {
                check_arbiter(&text);
            } else {
                check_site(&text);
            }
        }
        2 => {
            let cfg = config_from(&mut r);
            if cfg.validate().is_ok() {
                check_runs(&cfg);
            }
        }
        _ => check_template(&mut r),
    }
}

/// The valid file with the value of one `key = value` line replaced or spliced.
pub(crate) fn edited(r: &mut Bytes<'_>, base: &str) -> String {
    let lines: Vec<&str> = base.lines().collect();
    let keyed: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].contains(" = "))
        .collect();
    let at = keyed[r.below(keyed.len())];
    let (key, value) = lines[at].split_once(" = ").unwrap_or((lines[at], ""));
    let new_value = match r.below(8) {
        0 => "0".to_string(),
        1 => "1".to_string(),
        2 => i64::MAX.to_string(),
        3 => (MAX_DURATION_MS + u64::from(r.u8() % 2)).to_string(),
        4 => r.u64().to_string(),
        5 => format!("\"{}\"", String::from_utf8_lossy(r.slice(24))),
        _ => {
            let mut v = value.as_bytes().to_vec();
            for _ in 0..1 + r.below(3) {
                let i = r.below(v.len() + 1);
                v.insert(i, r.u8());
            }
            String::from_utf8_lossy(&v).into_owned()
        }
    };
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[at] = format!("{key} = {new_value}");
    if r.chance(16) {
        // A key the file does not know, or a table header, in a random place.
        let i = r.below(out.len() + 1);
        out.insert(i, String::from_utf8_lossy(r.slice(24)).into_owned());
    }
    out.join("\n")
}

fn check_error(e: &ConfigFileError, file: &Path, text: &str) {
    let shown = e.to_string();
    assert!(
        shown.starts_with(&file.display().to_string()),
        "the error does not name the file: {shown}"
    );
    assert!(!e.message.is_empty(), "an error without a message");
    assert!(
        e.line.is_some() || e.field.is_some(),
        "the error names neither a line nor a field: {shown}"
    );
    if let Some(line) = e.line {
        assert!(
            line >= 1 && line <= text.lines().count() + 1,
            "line {line} of a {}-line file: {shown}",
            text.lines().count()
        );
    }
}

fn check_site(text: &str) {
    let path = Path::new("/etc/lifeboat/site.toml");
    match SiteFile::parse(path, text) {
        Err(e) => check_error(&e, path, text),
        Ok(f) => {
            assert_eq!(f.engine.validate(), Ok(()), "a parsed site file's engine");
            assert!(
                f.engine.site_id(&f.site).is_some(),
                "site {:?} accepted",
                f.site
            );
            assert!(f.data_dir.is_absolute(), "data_dir not resolved");
            let adapter = [
                Some(f.disk.check_every_ms),
                f.probes.timeout_ms,
                match &f.driver {
                    DriverConfig::Sqlite {
                        busy_timeout_ms, ..
                    } => *busy_timeout_ms,
                    _ => None,
                },
            ];
            for ms in adapter.into_iter().flatten() {
                assert!(
                    ms <= MAX_DURATION_MS,
                    "an adapter duration of {ms} ms passed"
                );
            }
            check_runs(&f.engine);
        }
    }
}

fn check_arbiter(text: &str) {
    let path = Path::new("/etc/lifeboat/arbiter.toml");
    match ArbiterFile::parse(path, text) {
        Err(e) => check_error(&e, path, text),
        Ok(f) => {
            assert_eq!(
                f.engine.validate(),
                Ok(()),
                "a parsed arbiter file's engine"
            );
            check_runs(&f.engine);
        }
    }
}

/// A configuration that validates cannot overflow the engine's arithmetic: every duration is
/// bounded, and engines built from it tick at 0 and after thirty years of uptime.
fn check_runs(cfg: &Config) {
    let c = cfg;
    let durations = [
        c.schedule.full_every_ms,
        c.schedule.incremental_every_ms,
        c.schedule.log_every_ms,
        c.shipping.ack_timeout_ms,
        c.shipping.retry_base_ms,
        c.shipping.retry_max_ms,
        c.restore.retry_delay_ms,
        c.restore.op_timeout_ms,
        c.alerts.check_every_ms,
        c.lease.lease_ms,
        c.lease.renew_every_ms,
        c.lease.fence_time_ms,
        c.lease.heartbeat_every_ms,
        c.lease.arbiter_timeout_ms,
        c.failover.probe_every_ms,
        c.failover.unhealthy_for_ms,
        c.failover.local_restart_wait_ms,
        c.failover.confirm_timeout_ms,
        c.failover.peer_lost_after_ms,
        c.failover.switchover_timeout_ms,
    ];
    for ms in durations {
        assert!(ms <= MAX_DURATION_MS, "a duration of {ms} ms validated");
    }
    for minutes in [
        c.restore.reseed_after_minutes,
        c.alerts.after_minutes,
        c.alerts.critical_after_minutes,
        c.alerts.no_new_logs_minutes,
        c.alerts.backlog_age_minutes,
    ] {
        assert!(
            minutes <= MAX_DURATION_MINUTES && minutes.checked_mul(MINUTE).is_some(),
            "{minutes} minutes validated"
        );
    }
    assert!(
        c.fence_margin()
            .checked_add(c.lease.renew_every_ms)
            .is_some(),
        "the lease margins overflow"
    );
    let later = 30 * 365 * 24 * 3_600_000;
    for site in 0..2u16 {
        let mut e = SiteEngine::new(c.clone(), SiteId(site));
        for now in [0, 1, later, later + MAX_DURATION_MS] {
            e.handle(now, Input::Tick);
            while e.poll_output().is_some() {}
        }
    }
    let mut a = Arbiter::new(c.clone());
    for now in [0, later] {
        a.handle(now, Input::Tick);
        while a.poll_output().is_some() {}
    }
}

/// A duration in milliseconds: mostly sensible, sometimes at or past the bounds.
fn millis(r: &mut Bytes<'_>, sensible: u64) -> u64 {
    match r.below(10) {
        0 => 0,
        1 => u64::MAX - u64::from(r.u8()),
        2 => MAX_DURATION_MS + u64::from(r.u8() % 2),
        3 => r.u64(),
        4 => u64::from(r.u32()),
        _ => sensible,
    }
}

fn minutes(r: &mut Bytes<'_>, sensible: u64) -> u64 {
    match r.below(8) {
        0 => u64::MAX / 1_000 + u64::from(r.u8()),
        1 => MAX_DURATION_MINUTES + u64::from(r.u8() % 2),
        2 => r.u64(),
        _ => sensible,
    }
}

/// An engine configuration with every number chosen from the bytes.
pub(crate) fn config_from(r: &mut Bytes<'_>) -> Config {
    let mut c = Config::default();
    c.schedule.full_every_ms = millis(r, c.schedule.full_every_ms);
    c.schedule.incremental_every_ms = millis(r, c.schedule.incremental_every_ms);
    c.schedule.log_every_ms = millis(r, c.schedule.log_every_ms);
    c.shipping.ack_timeout_ms = millis(r, c.shipping.ack_timeout_ms);
    c.shipping.retry_base_ms = millis(r, c.shipping.retry_base_ms);
    c.shipping.retry_max_ms = millis(r, c.shipping.retry_max_ms);
    c.shipping.max_in_flight = if r.chance(32) { r.u32() } else { 64 };
    c.restore.retry_delay_ms = millis(r, c.restore.retry_delay_ms);
    c.restore.op_timeout_ms = millis(r, c.restore.op_timeout_ms);
    c.restore.reseed_after_minutes = minutes(r, c.restore.reseed_after_minutes);
    c.alerts.after_minutes = minutes(r, c.alerts.after_minutes);
    c.alerts.critical_after_minutes = minutes(r, c.alerts.critical_after_minutes);
    c.alerts.no_new_logs_minutes = minutes(r, c.alerts.no_new_logs_minutes);
    c.alerts.backlog_age_minutes = minutes(r, c.alerts.backlog_age_minutes);
    c.alerts.check_every_ms = millis(r, c.alerts.check_every_ms);
    c.alerts.min_free_mib = if r.chance(32) { r.u64() } else { 1024 };
    c.lease.lease_ms = millis(r, c.lease.lease_ms);
    c.lease.renew_every_ms = millis(r, c.lease.renew_every_ms);
    c.lease.max_drift_ppm = if r.chance(32) { r.u64() } else { 50_000 };
    c.lease.fence_time_ms = millis(r, c.lease.fence_time_ms);
    c.lease.heartbeat_every_ms = millis(r, c.lease.heartbeat_every_ms);
    c.lease.arbiter_timeout_ms = millis(r, c.lease.arbiter_timeout_ms);
    c.failover.probe_every_ms = millis(r, c.failover.probe_every_ms);
    c.failover.unhealthy_for_ms = millis(r, c.failover.unhealthy_for_ms);
    c.failover.local_restart_wait_ms = millis(r, c.failover.local_restart_wait_ms);
    c.failover.confirm_timeout_ms = millis(r, c.failover.confirm_timeout_ms);
    c.failover.peer_lost_after_ms = millis(r, c.failover.peer_lost_after_ms);
    c.failover.switchover_timeout_ms = millis(r, c.failover.switchover_timeout_ms);
    c.failover.automatic = r.bool();
    c.failover.local_restart = r.bool();
    c.failover.confirm = r.bool();
    if r.chance(16) {
        c.databases = (0..r.below(4))
            .map(|_| String::from_utf8_lossy(r.slice(6)).into_owned())
            .collect();
    }
    c
}

fn check_template(r: &mut Bytes<'_>) {
    let line = String::from_utf8_lossy(r.slice(80)).into_owned();
    let argv: Vec<String> = (0..r.below(5))
        .map(|_| {
            let mut arg = String::from_utf8_lossy(r.slice(16)).into_owned();
            if r.chance(128) {
                // A placeholder (known or not) in the middle of the argument.
                let name = match r.below(4) {
                    0 => "lsn_ned",
                    _ => PLACEHOLDERS[r.below(PLACEHOLDERS.len())],
                };
                let at = (0..=arg.len())
                    .filter(|i| arg.is_char_boundary(*i))
                    .nth(r.below(4))
                    .unwrap_or(0);
                arg.insert_str(at, &format!("{{{name}}}"));
            }
            arg
        })
        .collect();
    let values: Vec<(&'static str, String)> = PLACEHOLDERS
        .iter()
        .map(|p| (*p, format!("<{p}>")))
        .collect();
    let chain: Vec<String> = (0..r.below(4)).map(|i| format!("a{i}")).collect();
    for template in [CommandTemplate::Line(line), CommandTemplate::Argv(argv)] {
        let allowed = &PLACEHOLDERS[..r.below(PLACEHOLDERS.len() + 1)];
        match template.expand(allowed, &values, &chain) {
            Err(why) => assert!(!why.is_empty(), "an empty reason for {template:?}"),
            Ok(out) => {
                if let CommandTemplate::Argv(words) = &template {
                    if words.iter().all(|w| !w.contains(['{', '}'])) {
                        assert_eq!(&out, words, "a template without braces changed");
                    }
                    let whole_chain = words.iter().filter(|w| w.as_str() == "{chain}").count();
                    if allowed.contains(&"chain") {
                        assert_eq!(
                            out.len(),
                            words.len() + whole_chain * chain.len() - whole_chain,
                            "{{chain}} did not expand to one argument per item: {out:?}"
                        );
                    }
                }
            }
        }
    }
}
