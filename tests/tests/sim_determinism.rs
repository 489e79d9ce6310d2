//! One seed is the whole world: the same seed gives the same trace hash, run after run, and the
//! reproduction command of a swarm seed (its modes as an exact list) rebuilds the same world.

use lifeboat_scenarios::FaultMode;
use lifeboat_sim::spec::FaultChoice;
use lifeboat_sim::RunSpec;

fn hash(spec: &RunSpec, seed: u64) -> (u64, u64) {
    let o = spec.run_once(seed, false);
    (o.trace_hash, o.events)
}

#[test]
fn the_same_seed_gives_the_same_trace_hash_twice() {
    let spec = RunSpec::swarm(6.0);
    for seed in [0, 7, 42] {
        let a = hash(&spec, seed);
        let b = hash(&spec, seed);
        assert_eq!(a, b, "seed {seed} is not deterministic");
    }
    assert_ne!(
        hash(&spec, 1).0,
        hash(&spec, 2).0,
        "different seeds, same world"
    );
}

#[test]
fn crashes_and_journal_replays_are_deterministic_too() {
    let mut spec = RunSpec::swarm(6.0);
    spec.faults = FaultChoice::Exact(vec![
        FaultMode::EngineCrash,
        FaultMode::ArbiterLoss,
        FaultMode::OldPrimaryReturns,
        FaultMode::Loss,
    ]);
    for seed in [3, 11] {
        let a = spec.run_once(seed, false);
        let b = spec.run_once(seed, true);
        assert!(a.restarts > 0, "seed {seed}: no restart happened");
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "recording changed seed {seed}'s world"
        );
        assert!(a.ok(), "{:?}", a.violations);
    }
}

#[test]
fn a_swarm_seed_replays_from_its_exact_list_of_modes() {
    let swarm = RunSpec::swarm(4.0);
    for seed in [5, 6, 9] {
        let original = swarm.run_once(seed, false);
        let mut exact = swarm.clone();
        exact.faults = FaultChoice::Exact(original.modes());
        let again = exact.run_once(seed, false);
        assert_eq!(original.schedule, again.schedule);
        assert_eq!(original.trace_hash, again.trace_hash);
        let repro = swarm.repro(&original);
        assert!(repro.starts_with(&format!("lifeboat-sim replay --seed {seed} --hours 4")));
    }
}
