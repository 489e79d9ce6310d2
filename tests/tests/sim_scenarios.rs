//! Every scenario file in `scenarios/` runs with its seeds and meets its expectations, and the
//! scenario README documents each one.

use lifeboat_scenarios::{scenario_files, scenarios_dir, Scenario};
use lifeboat_sim::sweep::{default_jobs, describe_violation, run_seeds};
use lifeboat_sim::RunSpec;

#[test]
fn every_scenario_file_runs_and_meets_its_expectations() {
    let files = scenario_files(&scenarios_dir()).expect("the scenarios directory is readable");
    assert!(
        files.len() >= 12,
        "expected at least 12 scenario files, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut seeds = 0;
    for path in &files {
        let sc = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        let spec = RunSpec::from_scenario(&sc, Some(path.display().to_string()));
        let outcomes = run_seeds(
            &spec,
            sc.first_seed..sc.first_seed + sc.seeds,
            default_jobs(),
            &|_| {},
        );
        seeds += outcomes.len();
        for o in outcomes.iter().filter(|o| !o.ok()) {
            failures.push(format!("{}:\n{}", sc.name, describe_violation(&spec, o)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {seeds} scenario runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_scenario_readme_documents_every_file() {
    let dir = scenarios_dir();
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("scenarios/README.md");
    for path in scenario_files(&dir).unwrap() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            readme.contains(&name),
            "scenarios/README.md does not mention {name}"
        );
    }
}
