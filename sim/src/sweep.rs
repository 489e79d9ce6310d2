//! Many seeds on every core, and the summary of a sweep.

use crate::outcome::{clock_text, SeedOutcome};
use crate::spec::RunSpec;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Progress of a sweep: seeds done, seeds in all, violating seeds so far.
#[derive(Copy, Clone, Debug)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub violating: u64,
}

/// Run every seed of `seeds` on `jobs` threads; outcomes come back in seed order.
pub fn run_seeds(
    spec: &RunSpec,
    seeds: Range<u64>,
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<SeedOutcome> {
    let list: Vec<u64> = seeds.collect();
    run_seed_list(spec, &list, jobs, progress)
}

/// Run every seed of `seeds` on `jobs` threads; outcomes come back in the list's order.
pub fn run_seed_list(
    spec: &RunSpec,
    seeds: &[u64],
    jobs: usize,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<SeedOutcome> {
    let total = seeds.len() as u64;
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let bad = AtomicU64::new(0);
    let results: Mutex<BTreeMap<usize, SeedOutcome>> = Mutex::new(BTreeMap::new());
    let jobs = jobs.clamp(1, seeds.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else {
                    break;
                };
                let out = spec.run_seed(seed);
                if !out.ok() {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                results
                    .lock()
                    .expect("no worker panics holding it")
                    .insert(i, out);
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(Progress {
                    done: d,
                    total,
                    violating: bad.load(Ordering::Relaxed),
                });
            });
        }
    });
    results
        .into_inner()
        .expect("no worker panics holding it")
        .into_values()
        .collect()
}

/// The seeds of a sweep: a half-open range, or seeds drawn from OS entropy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seeds {
    Range(Range<u64>),
    Random(Vec<u64>),
}

/// Random seeds are drawn from `[RANDOM_SEEDS_FROM, RANDOM_SEEDS_TO)`: far outside the fixed CI
/// ranges (`0..200`, the scenario seeds, the daily sweep's blocks from 10^9) and exact in JSON.
pub const RANDOM_SEEDS_FROM: u64 = 1 << 40;
pub const RANDOM_SEEDS_TO: u64 = 1 << 53;
/// The most seeds `random:N` draws at once.
pub const RANDOM_SEEDS_MAX: u64 = 10_000_000;

impl Seeds {
    pub fn list(&self) -> Vec<u64> {
        match self {
            Seeds::Range(r) => r.clone().collect(),
            Seeds::Random(v) => v.clone(),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Seeds::Range(r) => format!("{}..{}", r.start, r.end),
            Seeds::Random(v) => format!("random:{}", v.len()),
        }
    }
}

/// `A..B` (half-open), `A`, or `random:N`.
pub fn parse_seeds(s: &str) -> Result<Seeds, String> {
    let bad = || format!("--seeds {s:?}: expected A..B (half-open), a single seed or random:N");
    if let Some(n) = s.trim().strip_prefix("random:") {
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || n > RANDOM_SEEDS_MAX {
            return Err(format!(
                "--seeds {s:?}: random:N takes 1 to {RANDOM_SEEDS_MAX} seeds"
            ));
        }
        return Ok(Seeds::Random(draw_seeds(n)));
    }
    match s.split_once("..") {
        Some((a, b)) => {
            let a: u64 = a.trim().parse().map_err(|_| bad())?;
            let b: u64 = b.trim().parse().map_err(|_| bad())?;
            if b < a {
                return Err(bad());
            }
            Ok(Seeds::Range(a..b))
        }
        None => {
            let a: u64 = s.trim().parse().map_err(|_| bad())?;
            Ok(Seeds::Range(a..a.saturating_add(1)))
        }
    }
}

/// `n` distinct seeds from OS entropy, in `[RANDOM_SEEDS_FROM, RANDOM_SEEDS_TO)`, sorted.
pub fn draw_seeds(n: u64) -> Vec<u64> {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    let mut set = std::collections::BTreeSet::new();
    while (set.len() as u64) < n {
        set.insert(rng.gen_range(RANDOM_SEEDS_FROM..RANDOM_SEEDS_TO));
    }
    set.into_iter().collect()
}

/// How many threads to use by default.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

static PROGRESS_LAST: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Progress on stderr: a bar on a terminal, a line every tenth otherwise.
pub fn stderr_progress(p: Progress) {
    use std::io::{IsTerminal, Write};
    let err = std::io::stderr();
    if err.is_terminal() {
        let width = 30;
        let filled = (p.done * width / p.total.max(1)) as usize;
        let mut e = err.lock();
        let _ = write!(
            e,
            "\r[{}{}] {}/{} seeds, {} violating",
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            p.done,
            p.total,
            p.violating
        );
        if p.done == p.total {
            let _ = writeln!(e);
        }
    } else {
        let tenth = (p.done * 10 / p.total.max(1)) as usize;
        if PROGRESS_LAST.swap(tenth, Ordering::Relaxed) != tenth {
            eprintln!(
                "progress: {}/{} seeds, {} violating",
                p.done, p.total, p.violating
            );
        }
    }
}

/// The summary of a sweep.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub seeds: u64,
    pub violating_seeds: Vec<u64>,
    pub violations: u64,
    pub by_oracle: BTreeMap<&'static str, u64>,
    pub simulated_ms: u64,
    pub events: u64,
    pub failovers: u64,
    pub switchovers: u64,
    /// Failover requests the simulated operator forced (`world.force_after`).
    pub forced_failovers: u64,
    pub restarts: u64,
    pub transactions: u64,
    pub archive_removals: u64,
    pub archive_points_checked: u64,
    pub failovers_left_out: u64,
    pub clean_seeds: u64,
    /// Seeds by witness (`arbiter`, `etcd`, `none`), and the etcd seeds' calls and leader
    /// changes.
    pub witness: BTreeMap<&'static str, u64>,
    pub etcd_calls: u64,
    pub etcd_leader_changes: u64,
    pub alerts: BTreeMap<&'static str, u64>,
    pub modes: BTreeMap<&'static str, u64>,
    /// True losses of failovers, and how far the upper bound sat above them.
    pub rpo_true: Vec<u64>,
    pub rpo_slack: Vec<u64>,
    pub rpo_unknown: u64,
    pub wall: Duration,
    /// The slowest seeds: (wall, seed, events).
    pub slowest: Vec<(Duration, u64, u64)>,
    /// The longest time without a writable site in any seed, and the most severe alert.
    pub longest_writer_gap: u64,
    /// The seed of that longest gap.
    pub longest_writer_gap_seed: Option<u64>,
    pub max_severity: Option<lifeboat_core::Severity>,
    /// Per kind: the latest first raise, from the first fault, over the seeds that raised it.
    pub first_raise_after_fault: BTreeMap<&'static str, u64>,
}

fn percentiles(v: &mut [u64]) -> Option<(u64, u64, u64, u64)> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((v[0], at(0.5), at(0.9), v[v.len() - 1]))
}

impl Summary {
    pub fn of(outcomes: &[SeedOutcome], wall: Duration) -> Summary {
        let mut s = Summary {
            wall,
            ..Default::default()
        };
        for o in outcomes {
            s.slowest.push((o.wall, o.seed, o.events));
            s.seeds += 1;
            if !o.ok() {
                s.violating_seeds.push(o.seed);
            }
            s.violations += o.violations.len() as u64;
            for v in &o.violations {
                *s.by_oracle.entry(v.oracle).or_default() += 1;
            }
            s.simulated_ms += o.simulated_ms;
            s.events += o.events;
            s.failovers += u64::from(o.failovers);
            s.switchovers += u64::from(o.switchovers);
            s.forced_failovers += u64::from(o.forced_failovers);
            s.restarts += u64::from(o.restarts);
            s.transactions += o.transactions;
            s.archive_removals += u64::from(o.archive_removals);
            s.archive_points_checked += o.archive_points_checked;
            s.failovers_left_out += u64::from(o.failovers_left_out);
            if !o.witness.is_empty() {
                *s.witness.entry(o.witness).or_default() += 1;
            }
            s.etcd_calls += o.etcd_calls;
            s.etcd_leader_changes += o.etcd_leader_changes;
            let modes = o.modes();
            if modes.iter().all(|m| m.is_operation()) {
                s.clean_seeds += 1;
            }
            for m in modes {
                *s.modes.entry(m.as_str()).or_default() += 1;
            }
            for (k, n) in &o.alerts {
                *s.alerts.entry(k).or_default() += u64::from(*n);
            }
            if o.longest_writer_gap > s.longest_writer_gap {
                s.longest_writer_gap = o.longest_writer_gap;
                s.longest_writer_gap_seed = Some(o.seed);
            }
            s.max_severity = s.max_severity.max(o.max_severity);
            let first_fault = o.schedule.iter().map(|f| f.at.0).min().unwrap_or(0);
            for (k, t) in &o.first_raise {
                let e = s.first_raise_after_fault.entry(k).or_default();
                *e = (*e).max(t.saturating_sub(first_fault));
            }
            for r in &o.rpo {
                s.rpo_true.push(r.true_loss);
                match r.upper {
                    Some(u) => s.rpo_slack.push(u.saturating_sub(r.true_loss)),
                    None => s.rpo_unknown += 1,
                }
            }
        }
        s.slowest.sort_by(|a, b| b.cmp(a));
        s.slowest.truncate(3);
        s
    }

    pub fn simulated_hours(&self) -> f64 {
        self.simulated_ms as f64 / 3_600_000.0
    }

    pub fn speedup(&self) -> f64 {
        self.simulated_ms as f64 / (self.wall.as_secs_f64() * 1000.0).max(1e-9)
    }

    pub fn text(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!(
            "seeds: {} ({} without faults)\nsimulated hours: {:.1}\nviolations: {} in {} seeds\n",
            self.seeds,
            self.clean_seeds,
            self.simulated_hours(),
            self.violations,
            self.violating_seeds.len()
        ));
        for (k, n) in &self.by_oracle {
            t.push_str(&format!("  {k}: {n}\n"));
        }
        t.push_str(&format!(
            "failovers: {} (operator `failover --force` requests: {})  switchovers: {}  engine restarts: {}\n\
             transactions acknowledged: {}\n",
            self.failovers,
            self.forced_failovers,
            self.switchovers,
            self.restarts,
            self.transactions
        ));
        let kinds = |k: &str| self.witness.get(k).copied().unwrap_or(0);
        t.push_str(&format!(
            "witness: {} seeds arbiter, {} etcd ({} calls, {} leader changes), {} none\n",
            kinds("arbiter"),
            kinds("etcd"),
            self.etcd_calls,
            self.etcd_leader_changes,
            kinds("none")
        ));
        if self.failovers_left_out > 0 {
            t.push_str(&format!(
                "failovers to a chosen point that left artifacts out: {}\n",
                self.failovers_left_out
            ));
        }
        if self.archive_removals > 0 {
            t.push_str(&format!(
                "archive retention: {} removals judged, {} kept points restored\n",
                self.archive_removals, self.archive_points_checked
            ));
        }
        let mut v = self.rpo_true.clone();
        if let Some((min, med, p90, max)) = percentiles(&mut v) {
            t.push_str(&format!(
                "RPO true loss (transactions): min {min} median {med} p90 {p90} max {max}\n"
            ));
        }
        let mut v = self.rpo_slack.clone();
        if let Some((min, med, p90, max)) = percentiles(&mut v) {
            t.push_str(&format!(
                "RPO upper bound above the truth: min {min} median {med} p90 {p90} max {max}; \
                 unknown upper bounds: {}\n",
                self.rpo_unknown
            ));
        }
        if !self.alerts.is_empty() {
            let a: Vec<_> = self
                .alerts
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            t.push_str(&format!("alerts by kind: {}\n", a.join(", ")));
        }
        if !self.modes.is_empty() {
            let m: Vec<_> = self.modes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            t.push_str(&format!("seeds per fault mode: {}\n", m.join(", ")));
        }
        t.push_str(&format!(
            "longest time without a writable site: {}{}; most severe alert: {}\n",
            lifeboat_scenarios::format_span(self.longest_writer_gap),
            self.longest_writer_gap_seed
                .map_or(String::new(), |s| format!(" (seed {s})")),
            self.max_severity.map_or("none", |s| s.as_str())
        ));
        let slow: Vec<_> = self
            .slowest
            .iter()
            .map(|(w, seed, ev)| format!("seed {seed} {:.2}s ({ev} events)", w.as_secs_f64()))
            .collect();
        t.push_str(&format!("slowest: {}\n", slow.join(", ")));
        t.push_str(&format!(
            "events: {}  wall: {:.2}s  speedup: {:.0}x\n",
            self.events,
            self.wall.as_secs_f64(),
            self.speedup()
        ));
        t
    }

    pub fn json(&self) -> serde_json::Value {
        let mut v = self.rpo_true.clone();
        let rpo = percentiles(&mut v).map(|(min, med, p90, max)| {
            serde_json::json!({"min": min, "median": med, "p90": p90, "max": max})
        });
        serde_json::json!({
            "seeds": self.seeds,
            "violations": self.violations,
            "violating_seeds": self.violating_seeds,
            "violations_by_oracle": self.by_oracle,
            "simulated_hours": (self.simulated_hours() * 1000.0).round() / 1000.0,
            "failovers": self.failovers,
            "switchovers": self.switchovers,
            "forced_failovers": self.forced_failovers,
            "engine_restarts": self.restarts,
            "clean_seeds": self.clean_seeds,
            "witness": self.witness,
            "etcd_calls": self.etcd_calls,
            "etcd_leader_changes": self.etcd_leader_changes,
            "transactions": self.transactions,
            "rpo_true_loss": rpo,
            "rpo_unknown_upper": self.rpo_unknown,
            "alerts": self.alerts,
            "longest_writer_gap_ms": self.longest_writer_gap,
            "max_severity": self.max_severity.map(|s| s.as_str()),
            "first_raise_after_fault_ms": self.first_raise_after_fault,
            "events": self.events,
            "wall_seconds": (self.wall.as_secs_f64() * 1000.0).round() / 1000.0,
            "speedup": self.speedup().round(),
        })
    }
}

/// A violation, printed with everything needed to reproduce it.
pub fn describe_violation(spec: &RunSpec, o: &SeedOutcome) -> String {
    let mut t = String::new();
    for v in &o.violations {
        t.push_str(&format!(
            "VIOLATION seed {}: {} at {}\n  {}\n",
            o.seed,
            v.oracle,
            clock_text(v.at),
            v.message
        ));
    }
    let modes: Vec<_> = o.modes().iter().map(|m| m.as_str()).collect();
    t.push_str(&format!(
        "  fault modes: {}\n  schedule ({} faults):\n",
        if modes.is_empty() {
            "none".to_string()
        } else {
            modes.join(",")
        },
        o.schedule.len()
    ));
    for f in o.schedule.iter().take(40) {
        t.push_str(&format!("    {}\n", f.summary()));
    }
    if !o.drawn.is_empty() {
        t.push_str(&format!("  drawn for this seed: {}\n", o.drawn.join(", ")));
    }
    if !o.last_events.is_empty() {
        t.push_str("  last events:\n");
        for e in &o.last_events {
            t.push_str(&format!("    {e}\n"));
        }
    }
    t.push_str(&format!("  trace hash: {:016x}\n", o.trace_hash));
    t.push_str(&format!("  reproduce: {}\n", spec.repro(o)));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_ranges_single_seeds_and_random_draws() {
        assert_eq!(parse_seeds("3..7"), Ok(Seeds::Range(3..7)));
        assert_eq!(parse_seeds("9"), Ok(Seeds::Range(9..10)));
        assert!(parse_seeds("7..3").is_err());
        assert!(parse_seeds("random:").is_err());
        assert!(parse_seeds("random:0").is_err());
        assert!(parse_seeds("random:x").is_err());
        assert!(parse_seeds(&format!("random:{}", RANDOM_SEEDS_MAX + 1)).is_err());
        let Ok(Seeds::Random(a)) = parse_seeds("random:50") else {
            panic!("random:50 draws seeds");
        };
        assert_eq!(a.len(), 50);
        assert!(a.windows(2).all(|w| w[0] < w[1]), "distinct and sorted");
        assert!(a
            .iter()
            .all(|s| (RANDOM_SEEDS_FROM..RANDOM_SEEDS_TO).contains(s)));
        let Ok(Seeds::Random(b)) = parse_seeds("random:50") else {
            panic!("random:50 draws seeds");
        };
        assert_ne!(a, b, "every call draws anew");
    }
}
