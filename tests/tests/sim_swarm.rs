//! The swarm sweep: 200 seeds of 24 simulated hours, each with a random subset of the fault
//! modes at random intensities, checked by every oracle after every step.

use lifeboat_sim::sweep::{default_jobs, describe_violation, run_seeds, Summary};
use lifeboat_sim::RunSpec;
use std::time::Instant;

/// Seeds in the sweep that `cargo test` runs (the floor is 200 x 24 h).
const SEEDS: u64 = 200;
const HOURS: f64 = 24.0;

#[test]
fn swarm_of_200_seeds_over_24_hours_finds_no_violation() {
    let spec = RunSpec::swarm(HOURS);
    let started = Instant::now();
    let outcomes = run_seeds(&spec, 0..SEEDS, default_jobs(), &|_| {});
    let summary = Summary::of(&outcomes, started.elapsed());
    eprintln!("{}", summary.text());
    assert_eq!(summary.seeds, SEEDS);
    assert!(summary.simulated_hours() >= SEEDS as f64 * HOURS * 0.99);
    // The sweep exercises what it claims to: failovers, switchovers, restarts, clean seeds.
    assert!(summary.failovers > 0 && summary.switchovers > 0 && summary.restarts > 0);
    assert!(summary.clean_seeds > 0);
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| describe_violation(&spec, o))
        .collect();
    assert!(
        bad.is_empty(),
        "{} violating seeds:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
