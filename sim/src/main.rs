//! `lifeboat-sim`: run seeds of the simulated world, replay one bit for bit, shrink a failing
//! schedule, list the fault modes, measure speed.
//!
//! ```text
//! lifeboat-sim run --seeds 0..200 --hours 24 [--faults LIST | --swarm LIST] [--scenario FILE] [--witness arbiter|etcd|both] [--json]
//! lifeboat-sim run --seeds random:500 --hours 24      # 500 seeds from OS entropy, printed first
//! lifeboat-sim replay --seed 17 --hours 24 --faults partition,loss [--trace]
//! lifeboat-sim shrink --seed 17 --hours 24 --faults partition,loss > shrunk.toml
//! lifeboat-sim faults
//! lifeboat-sim bench
//! ```

use clap::{Args, Parser, Subcommand};
use lifeboat_scenarios::{parse_modes, FaultMode, Scenario, Witness};
use lifeboat_sim::spec::{FaultChoice, RunSpec, WitnessChoice};
use lifeboat_sim::sweep::{
    default_jobs, describe_violation, parse_seeds, run_seed_list, stderr_progress, Seeds, Summary,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "lifeboat-sim",
    version,
    about = "Deterministic simulator of lifeboat: faults, oracles, swarm seeds"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a range of seeds and check every oracle.
    Run {
        /// Half-open seed range `A..B`, one seed `A`, or `random:N` (N seeds drawn from OS
        /// entropy outside the fixed ranges, printed first so any of them can be replayed).
        #[arg(long, default_value = "0..100")]
        seeds: String,
        #[command(flatten)]
        world: WorldArgs,
        /// End with one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// Worker threads (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run one seed again, bit for bit, and print its trace hash (and every event with --trace).
    Replay {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        world: WorldArgs,
        /// Print every event.
        #[arg(long)]
        trace: bool,
    },
    /// Reduce a failing seed's fault schedule to a minimal one; print it as a scenario file.
    Shrink {
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        world: WorldArgs,
    },
    /// List the canonical fault-mode names `--faults` takes.
    Faults,
    /// Measure the simulator: `bench sim_speedup` and `bench sim_seeds_per_minute`.
    Bench {
        /// Seeds for the seeds-per-minute figure.
        #[arg(long, default_value_t = 0)]
        seeds: u64,
    },
}

#[derive(Args, Clone)]
struct WorldArgs {
    /// Simulated hours per seed (default 24, or the scenario's).
    #[arg(long)]
    hours: Option<f64>,
    /// Exactly these fault modes on every seed (comma-separated; `none` for a clean run).
    #[arg(long, conflicts_with_all = ["swarm", "scenario"])]
    faults: Option<String>,
    /// Each seed enables a random subset of these modes (default: every mode).
    #[arg(long, conflicts_with = "scenario")]
    swarm: Option<String>,
    /// A scenario file: its configuration, world, fault timeline and expectations.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Plant a known bug in the engines (test builds with the `planted-bugs` feature).
    #[arg(long)]
    planted: Option<String>,
    /// The witness: `arbiter` (the built-in arbiter process), `etcd` (an etcd cluster through
    /// the Sans-IO translation) or `both` (half the seeds each, drawn per seed). Default: both
    /// for generated seeds, the file's `world.witness` for a scenario.
    #[arg(long)]
    witness: Option<String>,
}

impl WorldArgs {
    fn spec(&self) -> Result<RunSpec, String> {
        let mut spec = match &self.scenario {
            Some(path) => {
                let sc = Scenario::load(path).map_err(|e| e.to_string())?;
                RunSpec::from_scenario(&sc, Some(path.display().to_string()))
            }
            None => RunSpec::swarm(24.0),
        };
        if let Some(h) = self.hours {
            if h.is_nan() || h <= 0.0 {
                return Err("--hours must be above 0".into());
            }
            spec.world.hours = h;
        }
        if let Some(list) = &self.faults {
            spec.faults = FaultChoice::Exact(parse_modes(list)?);
        }
        if let Some(list) = &self.swarm {
            spec.faults = FaultChoice::Swarm(parse_modes(list)?);
        }
        if let Some(bug) = &self.planted {
            plant(&mut spec, bug)?;
        }
        match self.witness.as_deref() {
            None => {}
            Some("both") => spec.witness = WitnessChoice::Both,
            Some(name) => {
                spec.world.witness = Witness::from_name(name)
                    .ok_or_else(|| format!("--witness {name:?}: expected arbiter, etcd or both"))?;
                spec.witness = WitnessChoice::World;
            }
        }
        Ok(spec)
    }
}

#[cfg(feature = "planted-bugs")]
fn plant(spec: &mut RunSpec, bug: &str) -> Result<(), String> {
    let b = serde_json::from_value(serde_json::Value::String(bug.to_string())).map_err(|_| {
        format!(
            "unknown planted bug {bug:?}; known: skip_self_fence, restore_unverified, \
             ignore_drift_margin, accept_stale_epoch, forget_retry_count, delta_positions, \
             drain_ignores_retries, handoff_to_unheard_target, archive_keeps_window_only, \
             presumed_holder_granted"
        )
    })?;
    spec.config.planted_bug = Some(b);
    Ok(())
}
#[cfg(not(feature = "planted-bugs"))]
fn plant(_spec: &mut RunSpec, _bug: &str) -> Result<(), String> {
    Err("--planted needs a build with the `planted-bugs` feature \
         (cargo run -p lifeboat-sim --features planted-bugs -- ...)"
        .into())
}

/// Print to stdout; a closed pipe (`lifeboat-sim faults | head`) is not an error.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lifeboat-sim: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Faults => {
            for m in FaultMode::ALL {
                outln!("{:<24} {}", m.as_str(), m.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run {
            seeds,
            world,
            json,
            jobs,
        } => {
            let spec = world.spec()?;
            let seeds = parse_seeds(&seeds)?;
            let list = seeds.list();
            if let Seeds::Random(drawn) = &seeds {
                // First, on one line: every drawn seed can be replayed from here.
                let all: Vec<String> = drawn.iter().map(u64::to_string).collect();
                outln!("random seeds ({}): {}", drawn.len(), all.join(" "));
            }
            let started = Instant::now();
            eprintln!(
                "lifeboat-sim: {} seeds {} x {} h ({}), {} jobs",
                list.len(),
                seeds.describe(),
                spec.world.hours,
                spec.name,
                jobs.unwrap_or_else(default_jobs)
            );
            let outcomes = run_seed_list(
                &spec,
                &list,
                jobs.unwrap_or_else(default_jobs),
                &stderr_progress,
            );
            let summary = Summary::of(&outcomes, started.elapsed());
            for o in outcomes.iter().filter(|o| !o.ok()) {
                out!("{}", describe_violation(&spec, o));
            }
            out!("{}", summary.text());
            // The figures a sweep is judged by (issue 13's proof): every seed clean, and how fast.
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            outln!(
                "bench swarm_seeds_clean {}",
                if summary.violations == 0 {
                    list.len()
                } else {
                    0
                }
            );
            outln!(
                "bench swarm_seeds_per_minute {:.0}",
                list.len() as f64 / minutes.max(1e-9)
            );
            if json {
                outln!("{}", summary.json());
            }
            Ok(if summary.violations > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Replay { seed, world, trace } => {
            let spec = world.spec()?;
            let started = Instant::now();
            let out = if trace {
                lifeboat_sim::spec::run_traced(&spec, seed, &mut |line| outln!("{line}"))
            } else {
                spec.run_seed(seed)
            };
            let wall = started.elapsed();
            outln!(
                "seed {seed}: {} events, {} simulated, trace hash {:016x}, {} failovers, {} \
                 switchovers ({:.2}s wall)",
                out.events,
                lifeboat_scenarios::format_span(out.simulated_ms),
                out.trace_hash,
                out.failovers,
                out.switchovers,
                wall.as_secs_f64()
            );
            if out.ok() {
                outln!("no violation");
                Ok(ExitCode::SUCCESS)
            } else {
                out!("{}", describe_violation(&spec, &out));
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Shrink { seed, world } => {
            let spec = world.spec()?;
            let first = spec.run_once(seed, false);
            if first.ok() {
                eprintln!("seed {seed} finds no violation: nothing to shrink");
                return Ok(ExitCode::SUCCESS);
            }
            let repro = spec.repro(&first);
            eprintln!(
                "shrinking seed {seed}: {} faults, {} violation",
                first.schedule.len(),
                first.violations[0].oracle
            );
            let shrunk = lifeboat_sim::shrink::shrink(&spec, seed, &mut |l| eprintln!("  {l}"))
                .ok_or("the violation did not reproduce with the explicit schedule")?;
            eprintln!(
                "shrunk to {} faults in {} runs: {}",
                shrunk.schedule.len(),
                shrunk.runs,
                shrunk.outcome.violations[0].message
            );
            out!(
                "{}",
                lifeboat_sim::shrink::as_scenario(&spec, seed, &shrunk, &repro)
            );
            Ok(ExitCode::from(1))
        }
        Cmd::Bench { seeds } => {
            bench(seeds);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bench sim_speedup`: simulated seconds per wall second of the default world (two sites, the
/// arbiter, ten databases) without faults, one core. `bench sim_seeds_per_minute`: swarm seeds
/// of 24 simulated hours per wall minute, every core.
fn bench(seeds: u64) {
    let mut clean = RunSpec::swarm(24.0);
    clean.faults = FaultChoice::Exact(Vec::new());
    let started = Instant::now();
    let mut simulated = 0u64;
    let mut seed = 0;
    while seed < 2 || started.elapsed().as_secs_f64() < 3.0 {
        simulated += clean.run_once(seed, false).simulated_ms;
        seed += 1;
    }
    let speedup = simulated as f64 / (started.elapsed().as_secs_f64() * 1000.0);
    outln!("bench sim_speedup {speedup:.0}");
    let swarm = RunSpec::swarm(24.0);
    let jobs = default_jobs();
    let n = if seeds > 0 {
        seeds
    } else {
        (jobs as u64 * 8).max(16)
    };
    let started = Instant::now();
    let seeds: Vec<u64> = (1_000_000..1_000_000 + n).collect();
    let outs = run_seed_list(&swarm, &seeds, jobs, &|_| {});
    let per_minute = outs.len() as f64 / (started.elapsed().as_secs_f64() / 60.0);
    outln!("bench sim_seeds_per_minute {per_minute:.0}");
}
