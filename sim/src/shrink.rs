//! Shrinking: reduce a failing seed's fault schedule to a minimal one that still makes the same
//! oracle fail, then write it as a scenario file that replays it.

use crate::outcome::SeedOutcome;
use crate::spec::{FaultChoice, RunSpec};
use lifeboat_core::MINUTE;
use lifeboat_scenarios::{Expect, FaultSpec, Scenario, Span};

pub struct Shrunk {
    pub schedule: Vec<FaultSpec>,
    pub outcome: SeedOutcome,
    pub runs: u32,
    pub hours: f64,
}

fn fails_same(
    spec: &RunSpec,
    seed: u64,
    schedule: &[FaultSpec],
    hours: f64,
    oracle: &str,
) -> Option<SeedOutcome> {
    let mut s = spec.clone();
    // What a generated seed drew stays with its schedule.
    s.config = spec.config_for(seed).0;
    s.world = spec.world_for(seed);
    s.faults = FaultChoice::Fixed(schedule.to_vec());
    s.world.hours = hours;
    // The scenario's own expectations stay (a violated expectation is a finding too); a shrunk
    // file's `violation = true` does not.
    if let Some(e) = s.expect.as_mut() {
        e.violation = false;
    }
    let out = s.run_once(seed, false);
    out.violations
        .iter()
        .any(|v| v.oracle == oracle)
        .then_some(out)
}

/// Shrink the schedule of `seed`. `None` when the seed does not fail.
pub fn shrink(spec: &RunSpec, seed: u64, log: &mut dyn FnMut(&str)) -> Option<Shrunk> {
    let first = spec.run_once(seed, false);
    let v = first.violations.first()?.clone();
    let mut schedule = spec.schedule(seed);
    let mut runs = 1;
    let mut hours = spec.world.hours;
    // The run only needs to reach the violation.
    let needed = ((v.at + 30 * MINUTE) as f64 / 3_600_000.0 * 100.0).ceil() / 100.0;
    if needed < hours {
        let cut: Vec<FaultSpec> = schedule
            .iter()
            .filter(|f| f.at.0 <= v.at)
            .cloned()
            .collect();
        runs += 1;
        if fails_same(spec, seed, &cut, needed, v.oracle).is_some() {
            hours = needed;
            schedule = cut;
            log(&format!(
                "shorter run: {hours} h, {} faults",
                schedule.len()
            ));
        }
    }
    // Remove faults one at a time while the same oracle still fails (to a fixpoint).
    let mut changed = true;
    while changed {
        changed = false;
        let mut i = 0;
        while i < schedule.len() {
            let mut fewer = schedule.clone();
            let gone = fewer.remove(i);
            runs += 1;
            if fails_same(spec, seed, &fewer, hours, v.oracle).is_some() {
                log(&format!("removed {}", gone.summary()));
                schedule = fewer;
                changed = true;
            } else {
                i += 1;
            }
        }
    }
    // Shorten what remains.
    for i in 0..schedule.len() {
        while schedule[i].duration.0 > 2_000 {
            let mut shorter = schedule.clone();
            shorter[i].duration = Span(schedule[i].duration.0 / 2);
            runs += 1;
            if fails_same(spec, seed, &shorter, hours, v.oracle).is_some() {
                schedule = shorter;
            } else {
                break;
            }
        }
    }
    let outcome = fails_same(spec, seed, &schedule, hours, v.oracle)?;
    Some(Shrunk {
        schedule,
        outcome,
        runs: runs + 1,
        hours,
    })
}

/// The scenario file that replays a shrunk schedule.
pub fn as_scenario(spec: &RunSpec, seed: u64, s: &Shrunk, repro: &str) -> String {
    let v = &s.outcome.violations[0];
    let sc = Scenario {
        name: format!("shrunk_seed_{seed}_{}", v.oracle),
        description: format!(
            "Shrunk by `lifeboat-sim shrink` from: {repro}\nViolation ({}): {}",
            v.oracle, v.message
        ),
        seeds: 1,
        first_seed: seed,
        world: lifeboat_scenarios::WorldParams {
            hours: s.hours,
            ..spec.world_for(seed)
        },
        config: spec.config_for(seed).0,
        config_table: config_table(&spec.config_for(seed).0),
        faults: s.schedule.clone(),
        expect: Expect {
            violation: true,
            ..spec.expect.clone().unwrap_or_default()
        },
    };
    format!(
        "# Replay: lifeboat-sim run --scenario <this file> --seeds {seed}..{}\n{}",
        seed + 1,
        sc.to_toml()
    )
}

/// The configuration as a table of the keys that differ from the simulator's defaults.
fn config_table(config: &lifeboat_core::Config) -> Option<toml::Table> {
    let base = toml::Table::try_from(lifeboat_scenarios::world_config()).ok()?;
    let mine = toml::Table::try_from(config).ok()?;
    let diff = diff_tables(&base, &mine);
    (!diff.is_empty()).then_some(diff)
}

fn diff_tables(base: &toml::Table, mine: &toml::Table) -> toml::Table {
    let mut out = toml::Table::new();
    for (k, v) in mine {
        match (base.get(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(m)) => {
                let d = diff_tables(b, m);
                if !d.is_empty() {
                    out.insert(k.clone(), toml::Value::Table(d));
                }
            }
            (Some(b), m) if b == m => {}
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}
