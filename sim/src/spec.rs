//! What to run: the engine configuration, the world, where each seed's fault schedule comes
//! from, and the expectations of a scenario; plus the reproduction command of a finding.

use crate::outcome::{SeedOutcome, Violation};
use crate::world::World;
use lifeboat_core::Config;
use lifeboat_scenarios::{world_config, Expect, FaultMode, FaultSpec, Scenario, WorldParams};

/// Where a seed's fault schedule comes from.
#[derive(Clone, Debug)]
pub enum FaultChoice {
    /// Each seed enables a random subset of these modes (swarm testing).
    Swarm(Vec<FaultMode>),
    /// Each seed enables exactly these modes (their times and intensities vary by seed).
    Exact(Vec<FaultMode>),
    /// This schedule, as written (a scenario file).
    Fixed(Vec<FaultSpec>),
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub name: String,
    pub config: Config,
    pub world: WorldParams,
    pub faults: FaultChoice,
    pub expect: Option<Expect>,
    /// The scenario file, for reproduction commands.
    pub scenario_path: Option<String>,
}

impl RunSpec {
    /// The default world with swarm faults over every mode.
    pub fn swarm(hours: f64) -> RunSpec {
        RunSpec {
            name: "swarm".into(),
            config: world_config(),
            world: WorldParams {
                hours,
                ..WorldParams::default()
            },
            faults: FaultChoice::Swarm(FaultMode::swarm().collect()),
            expect: None,
            scenario_path: None,
        }
    }

    pub fn from_scenario(sc: &Scenario, path: Option<String>) -> RunSpec {
        RunSpec {
            name: sc.name.clone(),
            config: sc.config.clone(),
            world: sc.world.clone(),
            faults: FaultChoice::Fixed(sc.faults.clone()),
            expect: Some(sc.expect.clone()),
            scenario_path: path,
        }
    }

    /// The fault schedule of one seed.
    pub fn schedule(&self, seed: u64) -> Vec<FaultSpec> {
        match &self.faults {
            FaultChoice::Fixed(s) => s.clone(),
            FaultChoice::Exact(modes) => {
                crate::swarm::schedule(seed, modes, &self.config, &self.world)
            }
            FaultChoice::Swarm(pool) => {
                let modes = crate::swarm::choose_modes(seed, pool);
                crate::swarm::schedule(seed, &modes, &self.config, &self.world)
            }
        }
    }

    /// Run one seed; `record` keeps the last events as text.
    pub fn run_once(&self, seed: u64, record: bool) -> SeedOutcome {
        let schedule = self.schedule(seed);
        let w = World::new(
            self.config.clone(),
            self.world.clone(),
            seed,
            schedule,
            record,
        );
        let mut out = w.run();
        if let Some(e) = &self.expect {
            check_expectations(e, &mut out);
        }
        out
    }

    /// Run one seed; on a violation run it again recording, for the last events.
    pub fn run_seed(&self, seed: u64) -> SeedOutcome {
        let started = std::time::Instant::now();
        let mut out = self.run_once(seed, false);
        out.wall = started.elapsed();
        if out.ok() {
            return out;
        }
        let mut again = self.run_once(seed, true);
        again.wall = out.wall;
        if again.trace_hash != out.trace_hash {
            out.violations.push(Violation {
                oracle: "determinism",
                at: out.simulated_ms,
                message: format!(
                    "the recording re-run of seed {seed} diverged: trace hash {:016x} then {:016x}",
                    out.trace_hash, again.trace_hash
                ),
            });
            return out;
        }
        again
    }

    /// The command that reproduces a seed bit for bit.
    pub fn repro(&self, out: &SeedOutcome) -> String {
        let mut cmd = format!(
            "lifeboat-sim replay --seed {} --hours {}",
            out.seed, self.world.hours
        );
        match (&self.scenario_path, &self.faults) {
            (Some(path), FaultChoice::Fixed(_)) => cmd.push_str(&format!(" --scenario {path}")),
            (None, FaultChoice::Fixed(_)) => {
                // A schedule built in code: `shrink` writes it as a scenario file to replay.
                cmd.push_str(&format!(
                    " --scenario <the schedule above as a file> (built in code: {})",
                    self.name
                ));
            }
            _ => {
                let modes = out.modes();
                let list = if modes.is_empty() {
                    "none".to_string()
                } else {
                    modes
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                cmd.push_str(&format!(" --faults {list}"));
            }
        }
        if let Some(bug) = planted_name(&self.config) {
            cmd.push_str(&format!(" --planted {bug}"));
        }
        cmd
    }
}

#[cfg(feature = "planted-bugs")]
fn planted_name(cfg: &Config) -> Option<String> {
    cfg.planted_bug.map(|b| {
        serde_json::to_value(b)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    })
}
#[cfg(not(feature = "planted-bugs"))]
fn planted_name(_cfg: &Config) -> Option<String> {
    None
}

/// A scenario's expectations, checked after its run.
pub fn check_expectations(e: &Expect, out: &mut SeedOutcome) {
    let mut found: Vec<String> = Vec::new();
    if let Some(want) = e.failover {
        if want != (out.failovers > 0) {
            found.push(format!(
                "expected {} failover, saw {}",
                if want { "a" } else { "no" },
                out.failovers
            ));
        }
    }
    if let Some(n) = e.switchovers {
        if out.switchovers != n {
            found.push(format!("expected {n} switchovers, saw {}", out.switchovers));
        }
    }
    if let Some(max) = e.max_data_loss {
        if let Some(worst) = out.rpo.iter().map(|r| r.true_loss).max() {
            if worst > max {
                found.push(format!(
                    "a failover lost {worst} transactions (at most {max} expected)"
                ));
            }
        }
    }
    if let Some(max) = e.max_rto {
        if let Some(worst) = out.rto_ms.iter().max() {
            if *worst > max.0 {
                found.push(format!(
                    "a failover took {worst} ms (at most {} expected)",
                    max.0
                ));
            }
        }
    }
    for k in &e.alerts {
        if out.alerts.get(k.as_str()).copied().unwrap_or(0) == 0 {
            found.push(format!("expected a `{k}` alert; none was raised"));
        }
    }
    for k in &e.no_alerts {
        if let Some(n) = out.alerts.get(k.as_str()).filter(|n| **n > 0) {
            found.push(format!(
                "`{k}` was raised {n} times; the scenario expects none"
            ));
        }
    }
    if e.quiet {
        let noisy: Vec<_> = out
            .alerts
            .iter()
            .filter(|(k, n)| **n > 0 && **k != "switchover")
            .map(|(k, n)| format!("{k}×{n}"))
            .collect();
        if !noisy.is_empty() {
            found.push(format!("expected no alerts; saw {}", noisy.join(", ")));
        }
    }
    if let Some(site) = &e.final_primary {
        if out.final_primary.as_deref() != Some(site.as_str()) {
            found.push(format!(
                "expected site {site} to be the writable primary at the end; it is {}",
                out.final_primary.as_deref().unwrap_or("nobody")
            ));
        }
    }
    if let Some(want) = e.reseed {
        if want != (out.reseeds > 0) {
            found.push(format!(
                "expected reseed = {want}, saw {} reseeds",
                out.reseeds
            ));
        }
    }
    if let Some(n) = e.drills_ok {
        if out.drills_ok < n {
            found.push(format!(
                "expected {n} successful drills, saw {}",
                out.drills_ok
            ));
        }
    }
    if let Some(want) = e.identity_moves {
        if want != (out.identity_moves > 0) {
            found.push(format!(
                "expected identity_moves = {want}, the identity moved {} times",
                out.identity_moves
            ));
        }
    }
    if let Some(want) = e.stale_quarantined {
        if want != (out.stale_quarantined > 0) {
            found.push(format!(
                "expected stale_quarantined = {want}, saw {}",
                out.stale_quarantined
            ));
        }
    }
    for msg in found {
        out.violations.push(Violation {
            oracle: "expect",
            at: out.simulated_ms,
            message: msg,
        });
    }
    if e.violation {
        if out.violations.is_empty() {
            out.violations.push(Violation {
                oracle: "expect",
                at: out.simulated_ms,
                message: "the scenario expects the oracles to find a violation; none was found"
                    .into(),
            });
        } else {
            // Expected: finding it is the point of the scenario (a shrunk reproduction).
            out.violations.clear();
        }
    }
}

/// Run one seed printing every event as it happens.
pub fn run_traced(spec: &RunSpec, seed: u64, print: &mut dyn FnMut(&str)) -> SeedOutcome {
    let schedule = spec.schedule(seed);
    let mut w = World::new(
        spec.config.clone(),
        spec.world.clone(),
        seed,
        schedule,
        true,
    );
    w.trace.live = true;
    let _ = print;
    let mut out = w.run();
    out.last_events.clear();
    if let Some(e) = &spec.expect {
        check_expectations(e, &mut out);
    }
    out
}
