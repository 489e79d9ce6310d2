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
    let total = seeds.end.saturating_sub(seeds.start);
    let next = AtomicU64::new(seeds.start);
    let done = AtomicU64::new(0);
    let bad = AtomicU64::new(0);
    let results: Mutex<BTreeMap<u64, SeedOutcome>> = Mutex::new(BTreeMap::new());
    let jobs = jobs.clamp(1, total.max(1) as usize);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds.end {
                    break;
                }
                let out = spec.run_seed(seed);
                if !out.ok() {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                results
                    .lock()
                    .expect("no worker panics holding it")
                    .insert(seed, out);
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
    pub restarts: u64,
    pub transactions: u64,
    pub clean_seeds: u64,
    pub alerts: BTreeMap<&'static str, u64>,
    pub modes: BTreeMap<&'static str, u64>,
    /// True losses of failovers, and how far the upper bound sat above them.
    pub rpo_true: Vec<u64>,
    pub rpo_slack: Vec<u64>,
    pub rpo_unknown: u64,
    pub wall: Duration,
    /// The slowest seeds: (wall, seed, events).
    pub slowest: Vec<(Duration, u64, u64)>,
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
            s.restarts += u64::from(o.restarts);
            s.transactions += o.transactions;
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
            "failovers: {}  switchovers: {}  engine restarts: {}\ntransactions acknowledged: {}\n",
            self.failovers, self.switchovers, self.restarts, self.transactions
        ));
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
            "engine_restarts": self.restarts,
            "clean_seeds": self.clean_seeds,
            "transactions": self.transactions,
            "rpo_true_loss": rpo,
            "rpo_unknown_upper": self.rpo_unknown,
            "alerts": self.alerts,
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
