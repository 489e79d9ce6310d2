//! The oracles bite: with a known bug planted in the core (feature `planted-bugs`, see
//! `core/src/planted.rs`), a sweep finds it within a bounded number of seeds, and the same seed
//! without the bug is clean (so the finding is the bug's, not the world's).
//!
//! Three bugs are found by the ordinary swarm. Two sit behind the engines' defence in depth and
//! need a sweep aimed at them (still random seeds, a fixed fault schedule):
//! - `ignore_drift_margin`: only clocks at the drift bound in the worst directions (primary slow,
//!   arbiter fast) leave a window between the old primary's fence and the early grant;
//! - `accept_stale_epoch`: only an old-epoch artifact still waiting for a restore retry when the
//!   new epoch is granted, retried while the promotion is still running, reaches a restore.

use lifeboat_core::planted::PlantedBug;
use lifeboat_scenarios::{FaultMode, FaultSpec, NodeRef, Span, WorldParams};
use lifeboat_sim::spec::FaultChoice;
use lifeboat_sim::sweep::{default_jobs, describe_violation, run_seeds};
use lifeboat_sim::{RunSpec, SeedOutcome};

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;

struct Found {
    seeds_run: u64,
    outcome: SeedOutcome,
}

/// Sweep seeds from 0 until one violates with the bug and is clean without it.
fn hunt(spec: &RunSpec, bug: PlantedBug, max_seeds: u64) -> Option<Found> {
    let mut planted = spec.clone();
    planted.config.planted_bug = Some(bug);
    let jobs = default_jobs() as u64;
    let mut next = 0;
    while next < max_seeds {
        let batch = next..(next + jobs).min(max_seeds);
        let outcomes = run_seeds(&planted, batch.clone(), jobs as usize, &|_| {});
        for o in outcomes.into_iter().filter(|o| !o.ok()) {
            let baseline = spec.run_once(o.seed, false);
            if baseline.ok() {
                return Some(Found {
                    seeds_run: o.seed + 1,
                    outcome: o,
                });
            }
        }
        next = batch.end;
    }
    None
}

fn report(bug: PlantedBug, spec: &RunSpec, max: u64, found: Option<Found>) {
    let Some(f) = found else {
        panic!(
            "planted bug {bug:?} was not found in {max} seeds of {}",
            spec.name
        );
    };
    let v = &f.outcome.violations[0];
    eprintln!(
        "planted {bug:?}: found by `{}` after {} seeds ({}; seed {})\n{}",
        v.oracle,
        f.seeds_run,
        spec.name,
        f.outcome.seed,
        describe_violation(spec, &f.outcome)
    );
}

fn swarm() -> RunSpec {
    RunSpec::swarm(24.0)
}

#[test]
fn the_swarm_finds_a_primary_that_skips_its_self_fence() {
    let (spec, max) = (swarm(), 60);
    report(
        PlantedBug::SkipSelfFence,
        &spec,
        max,
        hunt(&spec, PlantedBug::SkipSelfFence, max),
    );
}

#[test]
fn the_swarm_finds_a_restore_without_verification() {
    let (spec, max) = (swarm(), 60);
    let bug = PlantedBug::RestoreUnverified;
    report(bug, &spec, max, hunt(&spec, bug, max));
}

#[test]
fn the_swarm_finds_a_forgotten_retry_count() {
    let (spec, max) = (swarm(), 60);
    let bug = PlantedBug::ForgetRetryCount;
    report(bug, &spec, max, hunt(&spec, bug, max));
}

fn at(mode: FaultMode, at: u64, duration: u64) -> FaultSpec {
    FaultSpec::new(mode, at, duration)
}

/// Clocks at the bound in the worst directions, and the primary isolated once an hour.
fn drift_sweep() -> RunSpec {
    let mut spec = swarm();
    spec.name = "drift-bound sweep".into();
    spec.world = WorldParams {
        hours: 6.0,
        ..spec.world
    };
    let bound = spec.config.lease.max_drift_ppm as i64;
    let mut faults = Vec::new();
    for (node, ppm) in [
        (NodeRef::Site("primary".into()), -bound),
        (NodeRef::Site("recovery".into()), -bound),
        (NodeRef::Arbiter, bound),
    ] {
        let mut f = at(FaultMode::ClockDrift, 0, 0);
        f.site = Some(node);
        f.drift_ppm = Some(ppm);
        faults.push(f);
    }
    for h in 1..=4 {
        let mut f = at(FaultMode::Isolate, h * HOUR, 3 * MINUTE);
        f.site = Some(NodeRef::CurrentPrimary);
        faults.push(f);
    }
    spec.faults = FaultChoice::Fixed(faults);
    spec
}

#[test]
fn a_sweep_at_the_drift_bound_finds_an_arbiter_that_ignores_the_drift_margin() {
    let (spec, max) = (drift_sweep(), 40);
    let bug = PlantedBug::IgnoreDriftMargin;
    report(bug, &spec, max, hunt(&spec, bug, max));
}

/// Restores failing half the time, slow promotions (an external fence through a cloud API),
/// and the primary isolated just after a log arrived, once an hour.
fn stale_sweep() -> RunSpec {
    let mut spec = swarm();
    spec.name = "stale-epoch sweep".into();
    spec.world = WorldParams {
        hours: 5.0,
        role_op_time: Span(30_000),
        ..spec.world
    };
    let mut errors = at(
        FaultMode::RestoreErrorTransient,
        10 * MINUTE,
        4 * HOUR + 50 * MINUTE,
    );
    errors.probability = Some(0.5);
    let mut faults = vec![errors];
    for h in 1..=4 {
        let mut f = at(FaultMode::Isolate, h * HOUR + MINUTE, 3 * MINUTE);
        f.site = Some(NodeRef::CurrentPrimary);
        faults.push(f);
    }
    spec.faults = FaultChoice::Fixed(faults);
    spec
}

#[test]
fn a_sweep_of_failovers_with_failing_restores_finds_a_restore_of_a_stale_epoch() {
    let (spec, max) = (stale_sweep(), 40);
    let bug = PlantedBug::AcceptStaleEpoch;
    report(bug, &spec, max, hunt(&spec, bug, max));
}

#[test]
fn the_aimed_sweeps_are_clean_without_planted_bugs() {
    for spec in [drift_sweep(), stale_sweep()] {
        let outcomes = run_seeds(&spec, 0..6, default_jobs(), &|_| {});
        assert!(
            outcomes.iter().all(|o| o.failovers > 0),
            "{}: no failover",
            spec.name
        );
        let bad: Vec<_> = outcomes
            .iter()
            .filter(|o| !o.ok())
            .map(|o| describe_violation(&spec, o))
            .collect();
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
