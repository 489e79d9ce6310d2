//! `lifeboat log-level`, `logs`, `probe` and `ping`: remote troubleshooting of either agent from
//! one place. `--site NAME` picks the agent from site.toml (`http` for this site, `peer_http` for
//! the other); the agent does the work (see `crate::troubleshoot`).

use super::{exit, table::human_ms, Target, TIMEOUT};
use crate::config::SiteFile;
use crate::transport::ping;
use crate::troubleshoot::{
    self as ts, filter, probe, LevelAnswer, LogsAnswer, PingAnswer, ProbeAnswer,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// Which agent a troubleshooting command asks.
#[derive(Clone, Debug, clap::Args)]
pub struct SiteTarget {
    #[command(flatten)]
    pub target: Target,
    /// Ask this site's agent, a name from `engine.sites` (default: this site's). Needs
    /// --config: `http` is this site's agent, `peer_http` the other's.
    #[arg(long)]
    pub site: Option<String>,
}

/// The agent that answers for site `name`: this site's `http`, or `peer_http` for the other
/// site of `sites`; any other name is refused, listing the valid ones.
pub fn agent_of(
    own: &str,
    sites: &[String],
    http: &str,
    peer_http: Option<&str>,
    name: &str,
) -> Result<String, String> {
    if name == own {
        return Ok(http.to_string());
    }
    if sites.iter().any(|s| s == name) {
        return peer_http.map(str::to_string).ok_or_else(|| {
            format!(
                "site {name:?} is the other site, but site.toml has no `peer_http` (its agent's \
                 HTTP address): add it, or pass --agent host:port"
            )
        });
    }
    Err(format!(
        "unknown site {name:?}; the sites of this configuration are: {}",
        sites.join(", ")
    ))
}

impl SiteTarget {
    fn agent(&self) -> Result<super::Agent, (i32, String)> {
        let Some(name) = &self.site else {
            return self.target.agent();
        };
        let Some(path) = &self.target.config else {
            return Err((
                exit::USAGE,
                "--site needs --config site.toml (the site names and agent addresses come from \
                 it)"
                .into(),
            ));
        };
        let file = SiteFile::load(path).map_err(|e| (exit::USAGE, e.to_string()))?;
        let addr = agent_of(
            &file.site,
            &file.engine.sites,
            &file.http,
            file.peer_http.as_deref(),
            name,
        )
        .map_err(|e| (exit::USAGE, e))?;
        Ok(super::Agent {
            addr,
            client: self.target.client(Some(&file))?,
        })
    }
}

/// `16MiB`, `512KiB`, `1GiB`, `4096` (bytes); `K`, `M`, `G` are the binary units too.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = |why: &str| {
        format!("invalid size {text:?}: {why}; write e.g. `16MiB`, `512KiB` or `4096` (bytes)")
    };
    let n: u64 = digits.parse().map_err(|_| bad("no number"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(bad("unknown unit (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| bad("too large"))
}

/// A request to the agent; its typed answer, or the exit code and the message to print.
async fn call<T: DeserializeOwned>(
    agent: &super::Agent,
    method: &str,
    path_query: &str,
    params: Option<Value>,
    timeout: Duration,
) -> Result<T, (i32, String)> {
    let addr = &agent.addr;
    let url = agent.url(path_query);
    let (code, bytes) = agent
        .client
        .request(method, &url, params.as_ref(), timeout)
        .await
        .map_err(|e| {
            (
                exit::UNREACHABLE,
                format!("cannot reach the agent at {addr}: {e}"),
            )
        })?;
    if code != 200 {
        let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let why = doc["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        let hint = if code == 404 {
            " (an agent that predates remote troubleshooting? upgrade it)"
        } else {
            ""
        };
        return Err((exit::FAILED, format!("refused (HTTP {code}): {why}{hint}")));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        (
            exit::FAILED,
            format!("the agent at {addr} answered something unexpected: {e}"),
        )
    })
}

/// Run a command body; print its error as `lifeboat <name>: …` and return the exit code.
async fn run<F: std::future::Future<Output = Result<(), (i32, String)>>>(
    name: &str,
    body: F,
) -> i32 {
    match body.await {
        Ok(()) => exit::OK,
        Err((code, msg)) => {
            eprintln!("lifeboat {name}: {msg}");
            code
        }
    }
}

/// `lifeboat log-level <filter> [--for 10m]`.
pub async fn log_level(t: &SiteTarget, filter_text: &str, hold: &str) -> i32 {
    run("log-level", async {
        filter::validate(filter_text).map_err(|e| (exit::USAGE, e.to_string()))?;
        let hold = filter::parse_duration(hold).map_err(|e| (exit::USAGE, e.to_string()))?;
        let agent = t.agent()?;
        let params = serde_json::json!({ "filter": filter_text, "for_s": hold.as_secs() });
        let a: LevelAnswer = call(&agent, "POST", ts::LOG_LEVEL, Some(params), TIMEOUT).await?;
        let until = a.filter.reverts_at.as_deref().unwrap_or("-");
        let secs = a.filter.reverts_in_s.unwrap_or(0);
        println!(
            "{}: log filter is now `{}` until {until} (in {}), then back to `{}`",
            a.site,
            a.filter.filter,
            human_ms(secs * 1000),
            a.filter.configured
        );
        Ok(())
    })
    .await
}

/// `lifeboat logs [-n 200] [--json]`.
pub async fn logs(t: &SiteTarget, n: usize, as_json: bool) -> i32 {
    run("logs", async {
        if n == 0 || n > ts::ring::RING_LINES {
            return Err((
                exit::USAGE,
                format!("-n {n}: ask for 1 to {} lines", ts::ring::RING_LINES),
            ));
        }
        let agent = t.agent()?;
        let a: LogsAnswer =
            call(&agent, "GET", &format!("{}?n={n}", ts::LOGS), None, TIMEOUT).await?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
            return Ok(());
        }
        print!("{}", render_logs(&a));
        Ok(())
    })
    .await
}

fn render_logs(a: &LogsAnswer) -> String {
    let mut out = String::new();
    match (&a.ring, &a.filter) {
        (Some(r), Some(f)) => out.push_str(&format!(
            "== {}: last {} log lines ({} logged since start; filter `{}`) ==\n",
            a.site,
            a.lines.len(),
            r.logged,
            f.filter
        )),
        _ => out.push_str(&format!(
            "== {}: this agent keeps no log lines in memory ==\n",
            a.site
        )),
    }
    for l in &a.lines {
        out.push_str(&format!(
            "{} {:>5} {}: {}\n",
            l.utc, l.level, l.target, l.text
        ));
    }
    out.push_str(&format!(
        "== {}: recent decisions ({}) ==\n",
        a.site,
        a.decisions.len()
    ));
    for d in &a.decisions {
        out.push_str(&format!(
            "epoch {} at {} ms: {} ({})\n",
            d.epoch, d.at_ms, d.what, d.why
        ));
    }
    out
}

/// `lifeboat probe [--json]`.
pub async fn probe(t: &SiteTarget, as_json: bool) -> i32 {
    run("probe", async {
        let agent = t.agent()?;
        let a: ProbeAnswer = call(&agent, "POST", ts::PROBE, None, ts::CLIENT_TIMEOUT).await?;
        if as_json {
            println!("{}", serde_json::to_string_pretty(&a).unwrap_or_default());
            return Ok(());
        }
        println!("{}: every probe, run now", a.site);
        print!("{}", probe::render(&a.probes));
        println!(
            "(display only: these results are not fed to the engine, which probes on its own \
             schedule)"
        );
        Ok(())
    })
    .await
}

/// `lifeboat ping [--bytes 16MiB] [--count 5]`.
pub async fn ping(t: &SiteTarget, bytes: &str, count: u32) -> i32 {
    run("ping", async {
        let bytes = parse_bytes(bytes).map_err(|e| (exit::USAGE, e))?;
        ping::check_request(count, bytes).map_err(|e| (exit::USAGE, e.to_string()))?;
        let agent = t.agent()?;
        let params = serde_json::json!({ "count": count, "bytes": bytes });
        let a: PingAnswer =
            call(&agent, "POST", ts::PING, Some(params), ts::CLIENT_TIMEOUT).await?;
        print!("{}", render_ping(&a));
        Ok(())
    })
    .await
}

fn render_ping(a: &PingAnswer) -> String {
    let mut out = format!(
        "{} -> {} ({}) over the lifeboat transport\n  handshake   {:.1} ms\n",
        a.site, a.to, a.addr, a.handshake_ms
    );
    if let (Some(min), Some(avg), Some(max)) = (a.rtt_min_ms, a.rtt_avg_ms, a.rtt_max_ms) {
        out.push_str(&format!(
            "  round trip  min {min:.1} / avg {avg:.1} / max {max:.1} ms over {} pings\n",
            a.rtt_ms.len()
        ));
    }
    match (a.bytes_ms, a.mib_per_s) {
        (Some(ms), Some(rate)) => out.push_str(&format!(
            "  throughput  {:.1} MiB in {ms:.1} ms = {rate:.1} MiB/s (sent and acknowledged)\n",
            a.bytes as f64 / (1 << 20) as f64
        )),
        _ => out.push_str("  throughput  not measured (--bytes 0)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<String> {
        vec!["east".into(), "west".into()]
    }

    #[test]
    fn a_site_name_picks_this_agent_or_the_other_and_anything_else_is_refused() {
        let pick = |name| {
            agent_of(
                "east",
                &sites(),
                "10.0.0.1:7401",
                Some("10.0.0.2:7401"),
                name,
            )
        };
        assert_eq!(pick("east"), Ok("10.0.0.1:7401".into()));
        assert_eq!(pick("west"), Ok("10.0.0.2:7401".into()));
        let err = pick("north").unwrap_err();
        assert!(
            err.contains("\"north\"") && err.contains("east, west"),
            "{err}"
        );
        let err = agent_of("east", &sites(), "h:1", None, "west").unwrap_err();
        assert!(err.contains("peer_http"), "{err}");
    }

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "MiB", "16 furlongs", "99999999999999999999GiB", "-1"] {
            assert!(
                parse_bytes(bad).unwrap_err().contains("e.g. `16MiB`"),
                "{bad}"
            );
        }
        // Parsed, but more than a ping may send: refused before anything is asked.
        let huge = parse_bytes("1GiB").unwrap();
        assert!(ping::check_request(5, huge).is_err());
    }
}
