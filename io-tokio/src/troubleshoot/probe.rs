//! Every probe of an agent, run now for an operator (`lifeboat probe`): the service probes of
//! `[probes]`, the driver's SQL probe of each local database, the peer site and the arbiter. For
//! display only: the results are not fed to the engine, which keeps probing on its own schedule.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One probe's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeRun {
    /// `service`, `sql`, `site` or `arbiter`.
    pub probe: String,
    /// The kind and what it reaches: `tcp 10.0.1.10:5432`, `http http://…/health`, `sales`.
    pub target: String,
    pub ok: bool,
    /// What happened: `connected`, `HTTP 503 (expected 200)`, the error.
    pub detail: String,
    /// Wall time of the probe, in milliseconds.
    pub took_ms: f64,
}

impl ProbeRun {
    /// Time `check` and record what it says.
    pub async fn timed(
        probe: &str,
        target: String,
        check: impl Future<Output = Result<String, String>>,
    ) -> ProbeRun {
        let started = Instant::now();
        let result = check.await;
        let took_ms = millis(started.elapsed());
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        ProbeRun {
            probe: probe.into(),
            target,
            ok,
            detail,
            took_ms,
        }
    }
}

/// Milliseconds with a tenth.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

/// The probes of one agent, as the executor knows them (`Executor::probe_kit`).
pub type ProbeRuns = Pin<Box<dyn Future<Output = Vec<ProbeRun>> + Send>>;

/// Runs every probe of the agent, each time it is asked.
#[derive(Clone)]
pub struct ProbeKit(Arc<dyn Fn() -> ProbeRuns + Send + Sync>);

impl ProbeKit {
    pub fn new(run: impl Fn() -> ProbeRuns + Send + Sync + 'static) -> ProbeKit {
        ProbeKit(Arc::new(run))
    }

    pub async fn run(&self) -> Vec<ProbeRun> {
        (self.0)().await
    }
}

/// The probes as a table.
pub fn render(runs: &[ProbeRun]) -> String {
    let head = ["PROBE", "TARGET", "RESULT", "TIME", "DETAIL"];
    let rows: Vec<[String; 5]> = runs
        .iter()
        .map(|r| {
            [
                r.probe.clone(),
                r.target.clone(),
                if r.ok { "ok" } else { "FAILED" }.into(),
                format!("{:.1}ms", r.took_ms),
                r.detail.clone(),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i == 4 {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(head);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_probe_is_timed_and_its_table_row_says_what_happened() {
        let run = ProbeRun::timed("service", "tcp 127.0.0.1:1".into(), async {
            Err::<String, _>("connection refused".to_string())
        })
        .await;
        assert!(!run.ok);
        let table = render(&[run]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("PROBE"), "{table}");
        assert!(
            lines[1].contains("FAILED") && lines[1].ends_with("connection refused"),
            "{table}"
        );
    }
}
