//! The swarm sweeps: 200 fixed seeds of 24 simulated hours, each with a random subset of the
//! fault modes at random intensities and one of the two witnesses (the built-in arbiter or etcd
//! through the core's translation, half the seeds each), checked by every oracle after every
//! step; and a daily sweep of fresh seeds whose base changes with the UTC date (printed, with its
//! replay command).

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
    // Both witnesses, and etcd with its own faults.
    let seeds_with = |w: &str| summary.witness.get(w).copied().unwrap_or(0);
    assert!(
        seeds_with("arbiter") > 50 && seeds_with("etcd") > 50,
        "{:?}",
        summary.witness
    );
    assert!(summary.etcd_calls > 0 && summary.etcd_leader_changes > 0);
    assert!(summary
        .modes
        .get("witness_answer_lost")
        .is_some_and(|n| *n > 0));
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

/// The daily sweep: seeds the fixed range never reaches. Its base seed changes every UTC day
/// (a fresh block of [`DAILY_SEEDS`] seeds per day from 10^9 on, never overlapping another
/// day's), and is printed with the commands that replay it; `LIFEBOAT_DAILY_BASE=<seed>` runs a
/// given block again.
const DAILY_SEEDS: u64 = 48;
const DAILY_FROM: u64 = 1_000_000_000;

fn daily_base() -> (u64, String) {
    if let Some(base) = std::env::var("LIFEBOAT_DAILY_BASE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return (base, "LIFEBOAT_DAILY_BASE".into());
    }
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    (DAILY_FROM + days * DAILY_SEEDS, format!("UTC day {days}"))
}

#[test]
fn daily_swarm_from_a_base_seed_that_changes_every_day_finds_no_violation() {
    let (base, why) = daily_base();
    let seeds = base..base + DAILY_SEEDS;
    println!(
        "daily swarm ({why}): seeds {}..{} x {HOURS} h; replay them all with \
         `lifeboat-sim run --seeds {}..{} --hours {HOURS}` or this test with \
         `LIFEBOAT_DAILY_BASE={base} cargo test -p lifeboat-tests --test sim_swarm daily`",
        seeds.start, seeds.end, seeds.start, seeds.end
    );
    let spec = RunSpec::swarm(HOURS);
    let started = Instant::now();
    let outcomes = run_seeds(&spec, seeds, default_jobs(), &|_| {});
    let summary = Summary::of(&outcomes, started.elapsed());
    eprintln!("{}", summary.text());
    assert_eq!(summary.seeds, DAILY_SEEDS);
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| {
            println!("replay: {}", spec.repro(o));
            describe_violation(&spec, o)
        })
        .collect();
    assert!(
        bad.is_empty(),
        "daily swarm from base seed {base} ({why}): {} violating seeds:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
