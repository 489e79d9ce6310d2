//! What to run: the engine configuration, the world, where each seed's fault schedule comes
//! from, and the expectations of a scenario; plus the reproduction command of a finding.

use crate::outcome::{SeedOutcome, Violation};
use crate::world::World;
use lifeboat_core::config::OnConfirmTimeout;
use lifeboat_core::Config;
use lifeboat_scenarios::{
    world_config, ConfirmAnswer, Expect, FaultMode, FaultSpec, Hook, Scenario, Span, Witness,
    WorldParams,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What one seed runs with (see [`RunSpec::draws`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Draws {
    pub config: Config,
    pub world: WorldParams,
    /// Every drawn value, `key = value`.
    pub drawn: Vec<String>,
}

fn log_uniform(r: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    let (lo, hi) = (lo.max(1) as f64, hi.max(lo + 1) as f64);
    (lo * (hi / lo).powf(r.gen::<f64>())).round() as u64
}

/// Half the generated seeds draw their timings (stream 86) from ranges `Config::validate`
/// accepts: lease 6..60 s, renewal a third to an eighth of it, fence time 0.5..3 s, heartbeats
/// 1..10 s, arbiter timeout 2..20 s, probes 1..10 s, 2..5 failed probes over at least that many
/// periods, switchover timeout 2..10 min, hold-down 2..30 min.
fn draw_timings(seed: u64, cfg: &mut Config) {
    let mut r = crate::world::stream(seed, 86);
    if !r.gen_bool(0.5) {
        return;
    }
    let l = &mut cfg.lease;
    l.lease_ms = r.gen_range(6..=60) * 1_000;
    l.renew_every_ms = r.gen_range(l.lease_ms / 8..=l.lease_ms / 3);
    l.fence_time_ms = r.gen_range(5..=30) * 100;
    l.heartbeat_every_ms = r.gen_range(1..=10) * 1_000;
    l.arbiter_timeout_ms = r.gen_range(2..=20) * 1_000;
    let f = &mut cfg.failover;
    f.probe_every_ms = r.gen_range(1..=10) * 1_000;
    f.unhealthy_count = r.gen_range(2..=5);
    let least = f.probe_every_ms * u64::from(f.unhealthy_count - 1);
    f.unhealthy_for_ms = r.gen_range(least..=least + 20_000);
    f.switchover_timeout_ms = r.gen_range(2..=10) * 60_000;
    f.hold_down_ms = r.gen_range(2..=30) * 60_000;
}

/// Half the generated seeds keep a point-in-time archive at the recovery site (stream 88), with
/// a window of 10 minutes to 6 hours and up to 3 daily and 2 weekly points, so retention runs
/// many times a day.
fn draw_archive(seed: u64, cfg: &mut Config) {
    let mut r = crate::world::stream(seed, 88);
    if !r.gen_bool(0.5) {
        return;
    }
    cfg.archive = Some(lifeboat_core::archive::Policy {
        keep_ms: r.gen_range(10..=360) * 60_000,
        keep_daily: r.gen_range(0..=3),
        keep_weekly: r.gen_range(0..=2),
        verify_every_ms: r.gen_range(30..=360) * 60_000,
    });
}

/// A quarter of the generated seeds run a standby that lags on purpose (stream 89): artifacts
/// are applied 1 to 30 minutes after they arrive; failovers and switchovers catch up first.
fn draw_delay(seed: u64, cfg: &mut Config) {
    let mut r = crate::world::stream(seed, 89);
    if r.gen_bool(0.25) {
        cfg.restore.apply_delay_ms = r.gen_range(1..=30) * 60_000;
    }
}

/// `key = value` for every engine setting the draws changed.
fn config_diff(base: &Config, cfg: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(base), serde_json::to_value(cfg)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff_values("", &a, &b, &mut out);
    out
}

/// `world.key = value` for every world setting the draws changed.
fn world_diff(base: &WorldParams, w: &WorldParams) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(base), serde_json::to_value(w)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff_values("world.", &a, &b, &mut out);
    out
}

fn diff_values(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    match (a, b) {
        (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
            for (k, vb) in y {
                let key = format!("{prefix}{k}");
                match x.get(k) {
                    Some(va) if va == vb => {}
                    Some(va) if va.is_object() => diff_values(&format!("{key}."), va, vb, out),
                    _ => out.push(format!("{key} = {}", plain(vb))),
                }
            }
        }
        _ if a != b => out.push(format!("{} = {}", prefix.trim_end_matches('.'), plain(b))),
        _ => {}
    }
}

fn plain(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

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

/// Which witness each seed runs with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WitnessChoice {
    /// The world's (`world.witness`: a scenario's as written, or `--witness arbiter|etcd`).
    World,
    /// Each seed draws (stream 90): half the seeds run with etcd, half with the built-in
    /// arbiter; a schedule with an etcd-only fault (`FaultMode::is_etcd_only`) runs with etcd.
    Both,
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub name: String,
    pub config: Config,
    pub world: WorldParams,
    pub faults: FaultChoice,
    pub witness: WitnessChoice,
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
            witness: WitnessChoice::Both,
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
            witness: WitnessChoice::World,
            expect: Some(sc.expect.clone()),
            scenario_path: path,
        }
    }

    /// The witness of one seed: the world's, or (`WitnessChoice::Both`) etcd when the schedule
    /// has an etcd-only fault, else drawn from stream 90 (one seed in two), so a swarm seed and
    /// its reproduction (`--faults` with its modes) run with the same witness, and the arbiter
    /// seeds keep every other draw and their schedules.
    pub fn witness_for(&self, seed: u64) -> Witness {
        if self.witness == WitnessChoice::World {
            return self.world.witness;
        }
        let forced = match &self.faults {
            FaultChoice::Swarm(_) => false,
            FaultChoice::Exact(modes) => modes.iter().any(|m| m.is_etcd_only()),
            FaultChoice::Fixed(s) => s.iter().any(|f| f.mode.is_some_and(|m| m.is_etcd_only())),
        };
        if forced || crate::world::stream(seed, 90).gen_bool(0.5) {
            Witness::Etcd
        } else {
            Witness::Arbiter
        }
    }

    /// The fault schedule of one seed.
    /// Generated schedules are built for the seed's drawn configuration (the agent-crash bound
    /// and the clock faults follow its lease and drift margin).
    pub fn schedule(&self, seed: u64) -> Vec<FaultSpec> {
        match &self.faults {
            FaultChoice::Fixed(s) => s.clone(),
            FaultChoice::Exact(modes) => {
                let cfg = self.config_for(seed).0;
                crate::swarm::schedule(seed, modes, &cfg, &self.world)
            }
            FaultChoice::Swarm(pool) => {
                let pool = crate::swarm::pool_for(pool, self.witness_for(seed));
                let modes = crate::swarm::choose_modes(seed, &pool);
                let cfg = self.config_for(seed).0;
                crate::swarm::schedule(seed, &modes, &cfg, &self.world)
            }
        }
    }

    /// The fault modes of one seed (`None` for a fixed schedule).
    pub fn modes(&self, seed: u64) -> Option<Vec<FaultMode>> {
        match &self.faults {
            FaultChoice::Fixed(_) => None,
            FaultChoice::Exact(modes) => Some(modes.clone()),
            FaultChoice::Swarm(pool) => Some(crate::swarm::choose_modes(
                seed,
                &crate::swarm::pool_for(pool, self.witness_for(seed)),
            )),
        }
    }

    /// The engine configuration of one seed, and what it drew (`key = value`); see
    /// [`RunSpec::draws`].
    pub fn config_for(&self, seed: u64) -> (Config, Vec<String>) {
        let d = self.draws(seed);
        (d.config, d.drawn)
    }

    /// The world of one seed: the spec's world with the seed's drawn hooks and operator.
    pub fn world_for(&self, seed: u64) -> WorldParams {
        self.draws(seed).world
    }

    /// What a seed runs with: the engine configuration and the world, and every value it drew
    /// (`key = value`, printed with a violation). A scenario's configuration and world are used
    /// as written. A generated seed draws each concern from its own random stream, so its
    /// reproduction (`--faults` with the same modes) draws the same:
    /// - without faults (operator actions aside), three seeds in four run with a probe cadence
    ///   `failover.probe_every_ms` in 1 s..5 s: a fault-free run is quiet at any cadence;
    /// - with `service_down`, three seeds in four turn Auto Pilot on
    ///   (`failover.local_restart = true`), so its paths are exercised;
    /// - the deployment (stream 80): one seed in eight has no arbiter (`arbiter = false`);
    /// - confirmation (81): one seed in four waits for an operator (`failover.confirm`), with a
    ///   drawn timeout and `on_confirm_timeout`, and the operator's answer (`world.confirm_answer`:
    ///   confirm, abort or silence, after `world.confirm_after`);
    /// - Auto Pilot (82): `failover.local_restart` on in three seeds in ten more, a drawn
    ///   `local_restart_wait_ms`, and a restart hook that works, fails or hangs
    ///   (`world.restart_hook`);
    /// - the external fence (83): `failover.fence_hook` off in three seeds in ten; when on, a
    ///   fence hook that works, fails or hangs (`world.fence_hook`); misbehaving hooks work again
    ///   from `world.hooks_heal_at`, inside the fault window (84);
    /// - forced failovers (85): in three seeds in ten with faults, an operator forces a failover
    ///   once the recovery site has had `primary_down` active for `world.force_after`;
    /// - streaming (87): half the seeds receive the primary's changes continuously
    ///   (`world.stream_wal`), so promotions open databases beyond the last restore;
    /// - timings (86): half the seeds draw the lease, renewal, fence time, heartbeat, arbiter
    ///   timeout, probe cadence and thresholds, switchover timeout and hold-down from ranges
    ///   `Config::validate` accepts;
    /// - archive (88): half the seeds keep a point-in-time archive (see `draw_archive`);
    /// - apply delay (89): a quarter of the seeds apply artifacts 1..30 minutes late;
    /// - the witness (90, with `WitnessChoice::Both`): see [`RunSpec::witness_for`].
    pub fn draws(&self, seed: u64) -> Draws {
        let mut d = self.draws_but_the_witness(seed);
        let witness = self.witness_for(seed);
        if witness != d.world.witness {
            d.world.witness = witness;
            d.drawn
                .push(format!("world.witness = {}", witness.as_str()));
        }
        d
    }

    fn draws_but_the_witness(&self, seed: u64) -> Draws {
        let mut cfg = self.config.clone();
        let mut world = self.world.clone();
        let mut drawn = Vec::new();
        let Some(modes) = self.modes(seed) else {
            return Draws {
                config: cfg,
                world,
                drawn,
            };
        };
        let faulty = !modes.iter().all(|m| m.is_operation());
        let base = (cfg.clone(), world.clone());
        draw_timings(seed, &mut cfg);
        if !faulty {
            let mut r = crate::world::stream(seed, 97);
            if r.gen_bool(0.75) {
                cfg.failover.probe_every_ms = r.gen_range(1_000..=5_000);
                let f = &mut cfg.failover;
                f.unhealthy_for_ms = f
                    .unhealthy_for_ms
                    .max(f.probe_every_ms * u64::from(f.unhealthy_count.saturating_sub(1)));
            }
        }
        if modes.contains(&FaultMode::ServiceDown) {
            let mut r = crate::world::stream(seed, 96);
            if r.gen_bool(0.75) && !cfg.failover.local_restart {
                cfg.failover.local_restart = true;
            }
        }
        let run = world.run_ms();
        let window = ((run as f64) * world.fault_window) as u64;
        let mut r = crate::world::stream(seed, 80);
        if r.gen_bool(0.125) {
            cfg.arbiter = false;
        }
        let mut r = crate::world::stream(seed, 81);
        if r.gen_bool(0.25) {
            let f = &mut cfg.failover;
            f.confirm = true;
            f.confirm_timeout_ms = r.gen_range(1..=10) * 60_000;
            f.on_confirm_timeout = if r.gen_bool(0.5) {
                OnConfirmTimeout::Proceed
            } else {
                OnConfirmTimeout::Abort
            };
            let x: f64 = r.gen();
            world.confirm_answer = if x < 0.4 {
                ConfirmAnswer::Confirm
            } else if x < 0.7 {
                ConfirmAnswer::Abort
            } else {
                ConfirmAnswer::Silence
            };
            world.confirm_after = Span(log_uniform(&mut r, 5_000, 15 * 60_000));
        }
        let mut r = crate::world::stream(seed, 82);
        if r.gen_bool(0.3) {
            cfg.failover.local_restart = true;
        }
        if r.gen_bool(0.5) {
            cfg.failover.local_restart_wait_ms = r.gen_range(10..=120) * 1_000;
        }
        let hook = |r: &mut rand_chacha::ChaCha8Rng| {
            let x: f64 = r.gen();
            if x < 0.5 {
                Hook::Works
            } else if x < 0.75 {
                Hook::Fails
            } else {
                Hook::Hangs
            }
        };
        let restart = hook(&mut r);
        if cfg.failover.local_restart {
            world.restart_hook = restart;
        }
        let mut r = crate::world::stream(seed, 83);
        if r.gen_bool(0.3) {
            cfg.failover.fence_hook = false;
        }
        let fence = hook(&mut r);
        if cfg.failover.fence_hook && faulty {
            world.fence_hook = fence;
        }
        let mut r = crate::world::stream(seed, 84);
        let heal = r.gen_range(window / 10..=window.max(window / 10 + 1));
        if world.restart_hook != Hook::Works || world.fence_hook != Hook::Works {
            world.hooks_heal_at = Span(heal.max(1));
        }
        let mut r = crate::world::stream(seed, 85);
        if faulty && r.gen_bool(0.3) {
            world.force_after = Span(log_uniform(&mut r, 60_000, 30 * 60_000));
        }
        let mut r = crate::world::stream(seed, 87);
        if r.gen_bool(0.5) {
            world.stream_wal = true;
        }
        if cfg.validate().is_err() {
            // A scenario's own values may not admit the draw: keep them as written.
            return Draws {
                config: self.config.clone(),
                world: self.world.clone(),
                drawn: Vec::new(),
            };
        }
        draw_archive(seed, &mut cfg);
        draw_delay(seed, &mut cfg);
        drawn.extend(config_diff(&base.0, &cfg));
        // Not in the engine's serde form (the adapter sets it from `[archive]`).
        if let Some(a) = cfg.archive {
            drawn.push(format!(
                "archive = {{ keep_ms = {}, keep_daily = {}, keep_weekly = {}, verify_every_ms = {} }}",
                a.keep_ms, a.keep_daily, a.keep_weekly, a.verify_every_ms
            ));
        }
        drawn.extend(world_diff(&base.1, &world));
        Draws {
            config: cfg,
            world,
            drawn,
        }
    }

    /// Run one seed; `record` keeps the last events as text.
    pub fn run_once(&self, seed: u64, record: bool) -> SeedOutcome {
        let schedule = self.schedule(seed);
        let Draws {
            config,
            world,
            drawn,
        } = self.draws(seed);
        let w = World::new(config, world, seed, schedule, record);
        let mut out = w.run();
        out.drawn = drawn;
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
        match (self.witness, &self.faults) {
            // A scenario's witness is in its file (or given with --witness).
            (WitnessChoice::World, FaultChoice::Fixed(_))
                if self.world.witness == Witness::Arbiter => {}
            _ => {
                let w = self.witness_for(out.seed);
                cmd.push_str(&format!(" --witness {}", w.as_str()));
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
    if let Some(want) = e.left_out {
        if want != (out.failovers_left_out > 0) {
            found.push(format!(
                "expected {} failover that leaves artifacts out, saw {}",
                if want { "a" } else { "no" },
                out.failovers_left_out
            ));
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
    found.extend(check_counts_and_times(e, out));
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
    let Draws {
        config,
        world,
        drawn,
    } = spec.draws(seed);
    for d in &drawn {
        print(&format!("drawn for this seed: {d}"));
    }
    let mut w = World::new(config, world, seed, schedule, true);
    w.trace.live = true;
    let mut out = w.run();
    out.drawn = drawn;
    out.last_events.clear();
    if let Some(e) = &spec.expect {
        check_expectations(e, &mut out);
    }
    out
}

/// The `[expect]` fields about counts and times: `alert_count`, `max_alerts`, `alert_within`,
/// `max_severity` and `max_writer_gap`. One message per unmet expectation.
pub fn check_counts_and_times(e: &Expect, out: &SeedOutcome) -> Vec<String> {
    let mut found = Vec::new();
    let count = |k: &str| out.alerts.get(k).copied().unwrap_or(0);
    for (k, want) in &e.alert_count {
        let n = count(k);
        if n != *want {
            found.push(format!(
                "expected `{k}` raised exactly {want} times, saw {n}"
            ));
        }
    }
    if let Some(max) = e.max_alerts {
        let total: u32 = out.alerts.values().sum();
        if total > max {
            let all: Vec<_> = out.alerts.iter().map(|(k, n)| format!("{k}×{n}")).collect();
            found.push(format!(
                "expected at most {max} alerts, saw {total} ({})",
                all.join(", ")
            ));
        }
    }
    if !e.alert_within.is_empty() {
        let first_fault = out.schedule.iter().map(|f| f.at.0).min().unwrap_or(0);
        for (k, within) in &e.alert_within {
            match out.first_raise.get(k.as_str()) {
                None => found.push(format!(
                    "expected `{k}` within {within} of the first fault (at {}); it was never raised",
                    crate::outcome::clock_text(first_fault)
                )),
                Some(&t) if t.saturating_sub(first_fault) > within.0 => found.push(format!(
                    "expected `{k}` within {within} of the first fault (at {}); it was first \
                     raised at {} ({} after)",
                    crate::outcome::clock_text(first_fault),
                    crate::outcome::clock_text(t),
                    lifeboat_scenarios::format_span(t - first_fault)
                )),
                Some(_) => {}
            }
        }
    }
    if let Some(max) = e.max_severity {
        if let Some(seen) = out.max_severity.filter(|s| *s > max) {
            found.push(format!(
                "expected no alert more severe than {}, saw a {} one",
                max.as_str(),
                seen.as_str()
            ));
        }
    }
    if let Some(max) = e.max_writer_gap {
        if out.longest_writer_gap > max.0 {
            found.push(format!(
                "expected no site writable at most {max} at a time, saw {} without a writer",
                lifeboat_scenarios::format_span(out.longest_writer_gap)
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::Severity;
    use lifeboat_scenarios::Span;

    fn outcome() -> SeedOutcome {
        let mut o = SeedOutcome {
            schedule: vec![FaultSpec::new(FaultMode::Partition, 3_600_000, 600_000)],
            ..Default::default()
        };
        o.alerts.insert("link_down", 2);
        o.alerts.insert("switchover", 1);
        o.first_raise.insert("link_down", 3_600_000 + 25_000);
        o.first_raise.insert("switchover", 3_700_000);
        o.max_severity = Some(Severity::Failure);
        o.longest_writer_gap = 40_000;
        o
    }

    fn fails(e: Expect) -> Vec<String> {
        let mut o = outcome();
        check_expectations(&e, &mut o);
        o.violations.into_iter().map(|v| v.message).collect()
    }

    #[test]
    fn alert_count_is_an_exact_count_per_kind() {
        let want = |n| Expect {
            alert_count: [("link_down".to_string(), n)].into(),
            ..Default::default()
        };
        assert!(fails(want(2)).is_empty());
        let f = fails(want(1));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].contains("exactly 1 times, saw 2"), "{f:?}");
        assert_eq!(fails(want(3)).len(), 1);
        let none = Expect {
            alert_count: [("primary_down".to_string(), 1)].into(),
            ..Default::default()
        };
        assert!(fails(none)[0].contains("saw 0"));
    }

    #[test]
    fn max_alerts_counts_every_raise_and_notice() {
        let max = |n| Expect {
            max_alerts: Some(n),
            ..Default::default()
        };
        assert!(fails(max(3)).is_empty());
        let f = fails(max(2));
        assert!(f[0].contains("at most 2 alerts, saw 3"), "{f:?}");
    }

    #[test]
    fn alert_within_counts_from_the_first_fault() {
        let within = |k: &str, ms| Expect {
            alert_within: [(k.to_string(), Span(ms))].into(),
            ..Default::default()
        };
        assert!(fails(within("link_down", 30_000)).is_empty());
        let f = fails(within("link_down", 20_000));
        assert!(
            f[0].contains("first raised at 1h00m25.000s (25s after)"),
            "{f:?}"
        );
        let f = fails(within("primary_down", 20_000));
        assert!(f[0].contains("never raised"), "{f:?}");
    }

    #[test]
    fn max_severity_bounds_every_alert_event() {
        let max = |s| Expect {
            max_severity: Some(s),
            ..Default::default()
        };
        assert!(fails(max(Severity::Failure)).is_empty());
        assert!(fails(max(Severity::Critical)).is_empty());
        let f = fails(max(Severity::Warning));
        assert!(
            f[0].contains("more severe than warning, saw a failure one"),
            "{f:?}"
        );
    }

    #[test]
    fn max_writer_gap_bounds_the_longest_time_without_a_writer() {
        let max = |ms| Expect {
            max_writer_gap: Some(Span(ms)),
            ..Default::default()
        };
        assert!(fails(max(40_000)).is_empty());
        let f = fails(max(39_999));
        assert!(f[0].contains("saw 40s without a writer"), "{f:?}");
    }

    #[test]
    fn a_clean_generated_seed_draws_a_probe_cadence_its_replay_draws_again() {
        let mut spec = RunSpec::swarm(1.0);
        spec.faults = FaultChoice::Exact(Vec::new());
        let drew: Vec<_> = (0..40).map(|s| spec.config_for(s)).collect();
        let cadences: std::collections::BTreeSet<_> = drew
            .iter()
            .map(|(c, _)| c.failover.probe_every_ms)
            .collect();
        assert!(cadences.len() > 10, "{cadences:?}");
        // 1 s..5 s for a fault-free run (stream 97), or a drawn timing (1 s..10 s).
        assert!(cadences.iter().all(|c| (1_000..=10_000).contains(c)));
        for (s, d) in drew.iter().enumerate() {
            assert_eq!(&spec.config_for(s as u64), d);
        }
        // A scenario's configuration is used as written.
        spec.faults = FaultChoice::Fixed(Vec::new());
        assert_eq!(spec.config_for(3).0, spec.config);
    }

    /// Half the swarm's seeds run with etcd, drawn from their own stream: an arbiter seed draws
    /// the modes and schedule it drew before the etcd faults existed, an etcd seed never draws
    /// `arbiter_state_lost`, and a seed's exact list of modes runs with the same witness.
    #[test]
    fn the_swarm_runs_both_witnesses_and_each_draws_its_own_faults() {
        let spec = RunSpec::swarm(24.0);
        let old_pool: Vec<FaultMode> = FaultMode::swarm().filter(|m| !m.is_etcd_only()).collect();
        let mut etcd = 0;
        for seed in 0..200 {
            let w = spec.witness_for(seed);
            let modes = spec.modes(seed).unwrap_or_default();
            assert_eq!(spec.world_for(seed).witness, w);
            match w {
                Witness::Etcd => {
                    etcd += 1;
                    assert!(!modes.contains(&FaultMode::ArbiterStateLost), "seed {seed}");
                }
                Witness::Arbiter => {
                    assert_eq!(modes, crate::swarm::choose_modes(seed, &old_pool));
                    assert!(modes.iter().all(|m| !m.is_etcd_only()), "seed {seed}");
                }
            }
            let mut exact = spec.clone();
            exact.faults = FaultChoice::Exact(modes.clone());
            assert_eq!(exact.witness_for(seed), w, "seed {seed}");
            assert_eq!(exact.schedule(seed), spec.schedule(seed), "seed {seed}");
            assert!(spec
                .repro(&SeedOutcome {
                    seed,
                    ..Default::default()
                })
                .ends_with(&format!("--witness {}", w.as_str())));
        }
        assert!((70..=130).contains(&etcd), "{etcd} etcd seeds in 200");
        // An etcd-only fault runs with etcd; `--witness` decides for every seed.
        let mut exact = spec.clone();
        exact.faults = FaultChoice::Exact(vec![FaultMode::WitnessSlow]);
        assert!((0..50).all(|s| exact.witness_for(s) == Witness::Etcd));
        exact.witness = WitnessChoice::World;
        assert!((0..50).all(|s| exact.witness_for(s) == Witness::Arbiter));
    }

    /// Every drawn configuration is valid, its replay draws the same, every value it changed is
    /// in its `drawn` list, and the draws reach every branch the issue asks for.
    #[test]
    fn generated_seeds_draw_valid_configurations_and_worlds_and_print_them() {
        let spec = RunSpec::swarm(24.0);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..400 {
            let d = spec.draws(seed);
            d.config.validate().unwrap();
            assert_eq!(spec.draws(seed), d, "seed {seed} draws differently twice");
            for line in &d.drawn {
                let key = line.split(" = ").next().unwrap_or_default().to_string();
                seen.insert(if key.starts_with("world.") {
                    line.clone()
                } else {
                    key
                });
            }
            if d.config != spec.config || d.world != spec.world {
                assert!(!d.drawn.is_empty(), "seed {seed} drew without saying so");
            }
        }
        for want in [
            "arbiter",
            "failover.confirm",
            "failover.local_restart",
            "failover.fence_hook",
            "lease.lease_ms",
            "failover.switchover_timeout_ms",
            "world.confirm_answer = abort",
            "world.confirm_answer = silence",
            "world.restart_hook = hangs",
            "world.restart_hook = fails",
            "world.fence_hook = hangs",
            "world.fence_hook = fails",
            "world.witness = etcd",
        ] {
            assert!(seen.contains(want), "no seed drew {want}: {seen:?}");
        }
        assert!(seen.iter().any(|k| k.starts_with("world.force_after")));
    }
}
