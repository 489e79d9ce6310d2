//! Property: whatever the interleaving of probe results, link cuts and heals (symmetric and
//! one-way), lost and delayed lease messages, clock drift within the bound and clock offsets,
//! engine crashes and restarts (also on a new monotonic clock), site losses, arbiter outages and
//! operator requests:
//! - never two sites accept writes at overlapping real times, and no write of an older epoch is
//!   acknowledged after one of a newer epoch;
//! - epochs only grow, at every site and at the arbiter;
//! - nothing from a stale epoch is restored, nothing is restored into a writable database, and
//!   no restore contradicts what the database already holds;
//! - once every fault is healed, some site accepts writes again and the other protects it.

mod common;
use common::*;
use lifeboat_core::config::OnConfirmTimeout;
use lifeboat_core::engine::Role;
use lifeboat_core::protocol::{Input, OperatorRequest, ProbeTarget};
use lifeboat_core::{Config, Millis};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Operator {
    Switchover,
    Failover,
    /// Only when the peer site is lost (and it then stays lost): the operator's word that it is
    /// gone. Forcing while the old primary may serve is the named risk, not a property.
    ForceFailover,
    Failback,
    Drill,
    Confirm,
    Abort,
    PauseBackups,
    ResumeBackups,
}

#[derive(Clone, Debug)]
enum Fault {
    Cut(usize, usize),
    /// A node cut from both others (TigerBeetle's `isolate_single`).
    Isolate(usize),
    CutOneWay(usize, usize),
    Heal(usize, usize),
    HealAll,
    /// Messages between engines lost, delayed (reordered) and duplicated.
    Lossy {
        loss_pct: u32,
        jitter: Millis,
        dup_pct: u32,
    },
    Drift {
        node: usize,
        ppm: i64,
    },
    /// The agent process dies for a while; with `db_survives` its database keeps running as it
    /// was (only safe with an external fence, see `run_case`).
    Crash {
        site: usize,
        db_survives: bool,
        down_for: Millis,
        new_clock: Option<Millis>,
    },
    Kill(usize),
    /// The link to the peer goes, artifacts pile up unshipped, then the site is lost (so that
    /// when it returns it carries artifacts of an old epoch).
    StrandAndKill(usize),
    Revive(usize),
    KillArbiter,
    RestartArbiter {
        new_clock: Option<Millis>,
    },
    ServiceDown(usize),
    ServiceUp(usize),
    /// A flaky prober: a probe result that does not match the world.
    FakeProbe {
        site: usize,
        service: bool,
        ok: bool,
    },
    Operator {
        site: usize,
        req: Operator,
    },
}

#[derive(Clone, Debug)]
struct Case {
    dbs: usize,
    fence_hook: bool,
    local_restart: bool,
    confirm: Option<OnConfirmTimeout>,
    offsets: [Millis; 3],
    drift: [i64; 3],
    schedule: Vec<(Millis, Fault)>,
}

fn node() -> impl Strategy<Value = usize> {
    0usize..3
}
fn site() -> impl Strategy<Value = usize> {
    0usize..2
}

fn operator() -> impl Strategy<Value = Operator> {
    prop_oneof![
        3 => Just(Operator::Switchover),
        2 => Just(Operator::Failover),
        1 => Just(Operator::ForceFailover),
        2 => Just(Operator::Failback),
        1 => Just(Operator::Drill),
        1 => Just(Operator::Confirm),
        1 => Just(Operator::Abort),
        1 => Just(Operator::PauseBackups),
        1 => Just(Operator::ResumeBackups),
    ]
}

/// Drift within the bound, often at its edges (where a missing margin shows).
fn drift(max_ppm: i64) -> impl Strategy<Value = i64> {
    prop_oneof![Just(-max_ppm), Just(max_ppm), Just(0), -max_ppm..=max_ppm,]
}

fn fault(max_ppm: i64) -> impl Strategy<Value = Fault> {
    prop_oneof![
        3 => node().prop_map(Fault::Isolate),
        4 => (node(), node()).prop_filter("two nodes", |(a, b)| a != b).prop_map(|(a, b)| Fault::Cut(a, b)),
        3 => (node(), node()).prop_filter("two nodes", |(a, b)| a != b).prop_map(|(a, b)| Fault::CutOneWay(a, b)),
        3 => (node(), node()).prop_filter("two nodes", |(a, b)| a != b).prop_map(|(a, b)| Fault::Heal(a, b)),
        2 => Just(Fault::HealAll),
        2 => (0u32..50, 0u64..400, 0u32..20).prop_map(|(loss_pct, jitter, dup_pct)| Fault::Lossy { loss_pct, jitter, dup_pct }),
        2 => (node(), drift(max_ppm)).prop_map(|(node, ppm)| Fault::Drift { node, ppm }),
        3 => (site(), any::<bool>(), 0u64..25_000, proptest::option::of(0u64..5_000)).prop_map(
            |(site, db_survives, down_for, new_clock)| Fault::Crash { site, db_survives, down_for, new_clock }
        ),
        2 => site().prop_map(Fault::Kill),
        2 => site().prop_map(Fault::StrandAndKill),
        2 => site().prop_map(Fault::Revive),
        1 => Just(Fault::KillArbiter),
        1 => proptest::option::of(0u64..5_000).prop_map(|new_clock| Fault::RestartArbiter { new_clock }),
        1 => site().prop_map(Fault::ServiceDown),
        1 => site().prop_map(Fault::ServiceUp),
        2 => (site(), any::<bool>(), any::<bool>()).prop_map(|(site, service, ok)| Fault::FakeProbe { site, service, ok }),
        4 => (site(), operator()).prop_map(|(site, req)| Fault::Operator { site, req }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let max_ppm = Config::default().lease.max_drift_ppm as i64;
    (
        1usize..=2,
        any::<bool>(),
        any::<bool>(),
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(OnConfirmTimeout::Proceed)),
            1 => Just(Some(OnConfirmTimeout::Abort)),
        ],
        [0u64..100_000, 0u64..100_000, 0u64..100_000],
        [drift(max_ppm), drift(max_ppm), drift(max_ppm)],
        proptest::collection::vec((0u64..15_000, fault(max_ppm)), 4..28),
    )
        .prop_map(
            |(dbs, fence_hook, local_restart, confirm, offsets, drift, schedule)| Case {
                dbs,
                fence_hook,
                local_restart,
                confirm,
                offsets,
                drift,
                schedule,
            },
        )
}

/// Run one case; returns the harness and the sites that stay lost.
fn run_case(c: &Case) -> (Harness, [bool; 2]) {
    let mut cfg = config(c.dbs);
    cfg.failover.fence_hook = c.fence_hook;
    cfg.failover.local_restart = c.local_restart;
    cfg.failover.local_restart_wait_ms = 8_000;
    if let Some(on) = c.confirm {
        cfg.failover.confirm = true;
        cfg.failover.confirm_timeout_ms = 20_000;
        cfg.failover.on_confirm_timeout = on;
    }
    cfg.failover.switchover_timeout_ms = 60_000;
    cfg.validate().unwrap();
    let seed = c.offsets[0] ^ (c.offsets[1] << 17) ^ (c.offsets[2] << 34);
    let mut h = Harness::with_seed(cfg, seed);
    for n in 0..3 {
        h.clocks[n] = Clock::new(c.offsets[n], c.drift[n]);
    }
    // A site the operator forced a failover away from stays lost.
    let mut gone = [false; 2];
    h.run(10_000);
    for (gap, f) in &c.schedule {
        h.run(*gap);
        match f.clone() {
            Fault::Cut(a, b) => h.cut(a, b),
            Fault::Isolate(n) => {
                for m in 0..3 {
                    if m != n {
                        h.cut(n, m);
                    }
                }
            }
            Fault::CutOneWay(a, b) => h.cut_one_way(a, b),
            Fault::Heal(a, b) => h.heal(a, b),
            Fault::HealAll => h.heal_all(),
            Fault::Lossy {
                loss_pct,
                jitter,
                dup_pct,
            } => {
                h.loss_pct = loss_pct;
                h.jitter = jitter;
                h.dup_pct = dup_pct;
            }
            Fault::Drift { node, ppm } => {
                let t = h.t;
                h.clocks[node].set_drift(t, ppm);
            }
            Fault::Crash {
                site,
                db_survives,
                down_for,
                new_clock,
            } => {
                if !h.db[site].site_up {
                    continue;
                }
                h.crash(site);
                // An agent that dies cannot fence its database: without an external fence the
                // database goes down with it (the safety model's stated residual risk). With
                // one, the database may outlive its agent; the external fence then stops it
                // before the takeover, but after the new epoch began: only the overlap oracle
                // applies.
                if db_survives && c.fence_hook {
                    h.strict_one_writer = false;
                } else {
                    h.db[site].writable = false;
                }
                h.run(down_for);
                if h.db[site].site_up {
                    match new_clock {
                        Some(local) => h.restart_with_clock(site, local),
                        None => h.restart(site),
                    }
                }
            }
            Fault::Kill(s) => h.kill(s),
            Fault::StrandAndKill(s) => {
                h.cut(s, 1 - s);
                h.run(12_000);
                h.kill(s);
            }
            Fault::Revive(s) => {
                if !h.db[s].site_up && !gone[s] {
                    h.revive(s);
                }
            }
            Fault::KillArbiter => h.kill_arbiter(),
            Fault::RestartArbiter { new_clock } => {
                if !h.arbiter_alive {
                    if let Some(local) = new_clock {
                        let t = h.t;
                        h.clocks[ARB].reset(t, local);
                    }
                    h.restart_arbiter();
                }
            }
            Fault::ServiceDown(s) => h.db[s].service_up = false,
            Fault::ServiceUp(s) => h.db[s].service_up = true,
            Fault::FakeProbe { site, service, ok } => {
                let target = if service {
                    ProbeTarget::Service
                } else {
                    ProbeTarget::Site
                };
                h.feed(site, Input::Probe { target, ok });
            }
            Fault::Operator { site, req } => {
                let req = match req {
                    Operator::Switchover => OperatorRequest::Switchover,
                    Operator::Failover => OperatorRequest::Failover { force: false },
                    Operator::ForceFailover => {
                        let peer = 1 - site;
                        if h.db[peer].site_up {
                            continue;
                        }
                        gone[peer] = true;
                        OperatorRequest::Failover { force: true }
                    }
                    Operator::Failback => OperatorRequest::Failback,
                    Operator::Drill => OperatorRequest::Drill { db: None },
                    Operator::Confirm => OperatorRequest::ConfirmFailover,
                    Operator::Abort => OperatorRequest::AbortFailover,
                    Operator::PauseBackups => OperatorRequest::PauseBackups,
                    Operator::ResumeBackups => OperatorRequest::ResumeBackups,
                };
                h.operator(site, req);
            }
        }
    }
    h.run(20_000);
    (h, gone)
}

/// Heal every fault and check that service resumes.
fn heal_everything(h: &mut Harness, gone: [bool; 2]) {
    h.heal_all();
    h.loss_pct = 0;
    h.jitter = 0;
    h.dup_pct = 0;
    if !h.arbiter_alive {
        h.restart_arbiter();
    }
    for (s, gone) in gone.into_iter().enumerate() {
        h.db[s].service_up = true;
        if !h.db[s].site_up && !gone {
            h.revive(s);
        } else if h.db[s].site_up && !h.db[s].agent_up {
            h.restart(s);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_split_brain_epochs_only_grow_and_nothing_stale_is_restored(c in case()) {
        let (mut h, gone) = run_case(&c);
        let declined = c.schedule.iter().any(|(_, f)| matches!(
            f,
            Fault::Operator { req: Operator::Abort, .. }
        ));
        heal_everything(&mut h, gone);
        // A site given up by the operator stays lost; if it held the newest epoch, the other
        // one waits for the operator too.
        let lost_for_good = gone.contains(&true) || (0..2).all(|s| !h.db[s].site_up);
        // Long enough for the slowest retry (a rebuild asks for full backups again after
        // `restore.op_timeout_ms`).
        h.run(2 * h.cfg.restore.op_timeout_ms);
        prop_assert!(
            h.split_brain.is_none() && h.violations.is_empty(),
            "split brain at {:?}, violations {:#?}\n{}",
            h.split_brain,
            h.violations,
            h.trace()
        );
        // Liveness, where nothing legitimately holds it back: an operator's abort or a confirm
        // that times out into an abort may keep a failover from happening, and a lost site
        // may take the newest epoch with it.
        let may_stall = declined
            || c.confirm == Some(OnConfirmTimeout::Abort)
            || lost_for_good;
        if !may_stall {
            let t = h.t;
            prop_assert!(
                h.acked.iter().any(|w| w.t + 10_000 > t),
                "nobody accepts writes after every fault healed:\n{}",
                h.trace()
            );
            // And the other site, when there is one, protects it again.
            if (0..2).all(|s| h.db[s].site_up) {
                let roles = [h.sites[0].role(), h.sites[1].role()];
                prop_assert!(
                    roles.contains(&Role::Primary) && roles.contains(&Role::Secondary),
                    "roles {roles:?} after every fault healed:\n{}",
                    h.trace()
                );
            }
        }
    }
}
