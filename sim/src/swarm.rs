//! Swarm testing: every seed turns on a random subset of the fault modes, each at random
//! intensities and times. A mode's schedule comes from its own random stream, so a seed with
//! an exact list of modes (`--faults a,b`) builds the same schedule as the swarm run that
//! enabled exactly those modes: reproduction commands name the modes, never a schedule.

use crate::world::stream;
use lifeboat_core::{Config, Millis, MINUTE};
use lifeboat_scenarios::{FaultMode, FaultSpec, NodeRef, Span, Witness, WorldParams};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// The chance that a swarm seed runs with no fault at all (and must stay quiet).
pub const CLEAN_SEEDS: f64 = 0.08;

/// The modes a swarm seed enables, from `pool`.
pub fn choose_modes(seed: u64, pool: &[FaultMode]) -> Vec<FaultMode> {
    let mut r = stream(seed, 99);
    if r.gen_bool(CLEAN_SEEDS) {
        return Vec::new();
    }
    let p = r.gen_range(0.12..0.45);
    let mut out: Vec<FaultMode> = pool.iter().copied().filter(|_| r.gen_bool(p)).collect();
    if out.is_empty() && !pool.is_empty() {
        out.push(pool[r.gen_range(0..pool.len())]);
    }
    out.sort();
    out
}

/// The modes a seed with this witness draws from: the etcd-only faults only with etcd, and
/// `arbiter_state_lost` only with the built-in arbiter (etcd keeps its state by quorum). An
/// arbiter seed draws from the same pool as before the etcd faults existed, so it keeps its
/// modes and schedule.
pub fn pool_for(pool: &[FaultMode], witness: Witness) -> Vec<FaultMode> {
    pool.iter()
        .copied()
        .filter(|m| match witness {
            Witness::Arbiter => !m.is_etcd_only(),
            Witness::Etcd => *m != FaultMode::ArbiterStateLost,
        })
        .collect()
}

fn log_uniform(r: &mut ChaCha8Rng, lo: Millis, hi: Millis) -> Millis {
    let (lo, hi) = (lo.max(1) as f64, hi.max(lo + 1) as f64);
    (lo * (hi / lo).powf(r.gen::<f64>())).round() as Millis
}

fn p_log(r: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    let v = lo * (hi / lo).powf(r.gen::<f64>());
    (v * 10_000.0).round() / 10_000.0
}

/// The whole schedule of a seed for these modes.
pub fn schedule(
    seed: u64,
    modes: &[FaultMode],
    cfg: &Config,
    world: &WorldParams,
) -> Vec<FaultSpec> {
    let mut out = Vec::new();
    for &m in modes {
        let idx = FaultMode::ALL.iter().position(|x| *x == m).unwrap_or(0) as u64;
        let mut r = stream(seed, 100 + idx);
        out.extend(generate(&mut r, m, modes, cfg, world));
    }
    out.sort_by_key(|f| (f.at, f.mode));
    out
}

fn generate(
    r: &mut ChaCha8Rng,
    mode: FaultMode,
    modes: &[FaultMode],
    cfg: &Config,
    world: &WorldParams,
) -> Vec<FaultSpec> {
    let run = world.run_ms();
    let window = ((run as f64) * world.fault_window) as Millis;
    let first = (5 * MINUTE).min(run / 20);
    let at = |r: &mut ChaCha8Rng| r.gen_range(first..window.max(first + 1));
    let cp = || Some(NodeRef::CurrentPrimary);
    let cs = || Some(NodeRef::CurrentSecondary);
    let primary_or_secondary = |r: &mut ChaCha8Rng, p_primary: f64| {
        if r.gen_bool(p_primary) {
            cp()
        } else {
            cs()
        }
    };
    let spec = |at: Millis, dur: Millis| FaultSpec::new(mode, at, dur);
    let clip = |a: Millis, d: Millis| d.min(window.saturating_sub(a)).max(1_000);
    let mut v = Vec::new();
    match mode {
        FaultMode::Partition | FaultMode::PartitionOneWay => {
            for _ in 0..r.gen_range(1..=3) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, 10_000, 30 * MINUTE)));
                let links = [
                    (cp(), Some(NodeRef::Arbiter)),
                    (cs(), Some(NodeRef::Arbiter)),
                    (cp(), cs()),
                ];
                let (x, y) = links[r.gen_range(0..links.len())].clone();
                if r.gen_bool(0.5) {
                    f.from = x;
                    f.to = y;
                } else {
                    f.from = y;
                    f.to = x;
                }
                v.push(f);
            }
        }
        FaultMode::Isolate => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, 30_000, 20 * MINUTE)));
                let x: f64 = r.gen();
                f.site = if x < 0.5 {
                    cp()
                } else if x < 0.8 {
                    cs()
                } else {
                    Some(NodeRef::Arbiter)
                };
                v.push(f);
            }
        }
        FaultMode::Latency => {
            let a = at(r);
            let mut f = spec(a, clip(a, log_uniform(r, 10 * MINUTE, window)));
            let lat = log_uniform(r, 1, 400);
            f.latency = Some(Span(lat));
            f.jitter = Some(Span(r.gen_range(0..=lat)));
            v.push(f);
        }
        FaultMode::Loss
        | FaultMode::Duplication
        | FaultMode::CorruptInTransit
        | FaultMode::TruncateInTransit => {
            let (lo, hi) = match mode {
                FaultMode::Loss => (0.001, 0.2),
                FaultMode::Duplication => (0.001, 0.1),
                _ => (0.01, 0.3),
            };
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, MINUTE, 3 * 60 * MINUTE)));
                f.probability = Some(p_log(r, lo, hi));
                v.push(f);
            }
        }
        FaultMode::Reorder => {
            let a = at(r);
            let mut f = spec(a, clip(a, log_uniform(r, 10 * MINUTE, window)));
            f.probability = Some(p_log(r, 0.01, 0.3));
            f.latency = Some(Span(log_uniform(r, 10, 2_000)));
            v.push(f);
        }
        FaultMode::CorruptAtRest | FaultMode::TruncateAtRest => {
            for _ in 0..r.gen_range(1..=3) {
                let mut f = spec(at(r), 0);
                f.site = primary_or_secondary(r, 0.5);
                f.count = Some(r.gen_range(1..=2));
                v.push(f);
            }
        }
        FaultMode::NeverShipped => {
            for _ in 0..r.gen_range(1..=3) {
                let mut f = spec(at(r), 0);
                f.count = Some(1);
                if r.gen_bool(0.7) {
                    f.db = Some(cfg.databases[r.gen_range(0..cfg.databases.len())].clone());
                }
                v.push(f);
            }
        }
        FaultMode::BackupsPaused => {
            let a = at(r);
            v.push(spec(
                a,
                clip(a, log_uniform(r, 10 * MINUTE, 3 * 60 * MINUTE)),
            ));
        }
        FaultMode::BackupsStalled => {
            let a = at(r);
            v.push(spec(
                a,
                clip(a, log_uniform(r, 20 * MINUTE, 2 * 60 * MINUTE)),
            ));
        }
        FaultMode::RestoreErrorTransient => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, 10 * MINUTE, 3 * 60 * MINUTE)));
                f.probability = Some(p_log(r, 0.05, 0.6));
                v.push(f);
            }
        }
        FaultMode::RestoreErrorPermanent => {
            for _ in 0..r.gen_range(1..=2) {
                let mut f = spec(at(r), 0);
                f.count = Some(1);
                v.push(f);
            }
        }
        FaultMode::SlowRestores => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, 10 * MINUTE, 3 * 60 * MINUTE)));
                f.factor = Some(log_uniform(r, 5, 300) as f64);
                v.push(f);
            }
        }
        FaultMode::DiskPressure => {
            let a = at(r);
            v.push(spec(a, clip(a, log_uniform(r, 5 * MINUTE, 60 * MINUTE))));
        }
        FaultMode::EngineCrash => {
            // The primary's agent is restarted by its supervisor before its lease could lapse:
            // a dead agent cannot fence its database (README: residual risk without
            // fence_hook), so longer outages of the primary's agent are not a safety test.
            let safe = cfg
                .lease
                .lease_ms
                .saturating_sub(
                    cfg.lease.renew_every_ms
                        + cfg.lease.fence_time_ms
                        + 2 * cfg.drift_margin()
                        + 1_000,
                )
                .max(200);
            for _ in 0..r.gen_range(1..=4) {
                let mut f = spec(at(r), 0);
                if r.gen_bool(0.5) {
                    f.site = cp();
                    f.duration = Span(r.gen_range(100..=safe));
                } else {
                    f.site = cs();
                    f.duration = Span(log_uniform(r, 100, 10 * MINUTE));
                }
                v.push(f);
            }
        }
        FaultMode::ClockDrift => {
            let bound = cfg.lease.max_drift_ppm as i64;
            let bound = if modes.contains(&FaultMode::ClockStep) {
                bound / 2
            } else {
                bound
            };
            let mut nodes: Vec<NodeRef> =
                cfg.sites.iter().map(|s| NodeRef::Site(s.clone())).collect();
            nodes.push(NodeRef::Arbiter);
            for n in nodes {
                let mut f = spec(0, 0);
                f.site = Some(n);
                // Often at the bound, where the margins are thinnest.
                let d = if r.gen_bool(0.5) {
                    bound
                } else {
                    r.gen_range(0..=bound)
                };
                f.drift_ppm = Some(if r.gen_bool(0.5) { d } else { -d });
                v.push(f);
            }
        }
        FaultMode::ClockStep => {
            let budget = (cfg.drift_margin() / 2).max(1);
            let mut t = first;
            for _ in 0..r.gen_range(1..=5) {
                t += r.gen_range(
                    2 * cfg.lease.lease_ms..=(window / 5).max(2 * cfg.lease.lease_ms + 1),
                );
                if t >= window {
                    break;
                }
                let mut f = spec(t, 0);
                let x: f64 = r.gen();
                f.site = Some(if x < 0.5 {
                    NodeRef::Arbiter
                } else {
                    NodeRef::Site(cfg.sites[usize::from(x < 0.75)].clone())
                });
                f.step = Some(Span(r.gen_range(1..=budget)));
                v.push(f);
            }
        }
        FaultMode::SiteLoss => {
            // Late in the fault window: after a site is gone, the survivor retries every
            // unacknowledged artifact on its own schedule, and that load grows with the outage.
            let mut f = spec(
                r.gen_range(window * 3 / 4..window.max(window * 3 / 4 + 1)),
                0,
            );
            f.site = primary_or_secondary(r, 0.8);
            v.push(f);
        }
        FaultMode::OldPrimaryReturns => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, MINUTE, 3 * 60 * MINUTE)));
                f.site = cp();
                v.push(f);
            }
        }
        FaultMode::ArbiterLoss | FaultMode::ArbiterStateLost => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                v.push(spec(a, clip(a, log_uniform(r, 30_000, 60 * MINUTE))));
            }
        }
        FaultMode::Switchover | FaultMode::Failback => {
            for _ in 0..r.gen_range(1..=2) {
                v.push(spec(at(r), 0));
            }
        }
        FaultMode::Drill => {
            for _ in 0..r.gen_range(1..=3) {
                let mut f = spec(at(r), 0);
                if r.gen_bool(0.5) {
                    f.db = Some(cfg.databases[r.gen_range(0..cfg.databases.len())].clone());
                }
                v.push(f);
            }
        }
        FaultMode::ForcedFailover => v.push(spec(at(r), 0)),
        FaultMode::FlappingLink => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, 5 * MINUTE, 90 * MINUTE)));
                // Mostly the inter-site link (the `flapping_link` oracle judges that one).
                let (x, y) = if r.gen_bool(0.75) {
                    (cp(), cs())
                } else {
                    (primary_or_secondary(r, 0.5), Some(NodeRef::Arbiter))
                };
                f.from = x;
                f.to = y;
                let down = log_uniform(r, 1_000, 8_000);
                f.down = Some(Span(down));
                f.every = Some(Span(down + log_uniform(r, 1_000, 8_000)));
                v.push(f);
            }
        }
        FaultMode::EtcdLeaderChange => {
            // Elections of 100 ms to 2 s, a few a day.
            for _ in 0..r.gen_range(1..=6) {
                v.push(spec(at(r), log_uniform(r, 100, 2_000)));
            }
        }
        FaultMode::WitnessSlow => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, MINUTE, 2 * 60 * MINUTE)));
                f.latency = Some(Span(log_uniform(r, 200, 8_000)));
                v.push(f);
            }
        }
        FaultMode::WitnessAnswerLost => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, MINUTE, 3 * 60 * MINUTE)));
                f.probability = Some(p_log(r, 0.01, 0.5));
                v.push(f);
            }
        }
        FaultMode::ServiceDown => {
            for _ in 0..r.gen_range(1..=2) {
                let a = at(r);
                let mut f = spec(a, clip(a, log_uniform(r, MINUTE, 60 * MINUTE)));
                f.site = cp();
                f.probability = Some([0.0, 0.5, 1.0][r.gen_range(0..3)]);
                v.push(f);
            }
        }
    }
    v
}
