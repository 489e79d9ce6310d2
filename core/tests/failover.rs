//! Failover specifications (issue 3), driven through the tiny deterministic harness: dead site
//! versus dead link, self-fencing, unplanned failover with RPO bounds, planned switchover,
//! re-protection and failback, forced failover, crashes mid-promotion, flapping links, restarts,
//! Auto Pilot, confirmation, drills, recovery-site loss and the audit trail.

mod common;
use common::*;
use lifeboat_core::alert::AlertChange;
use lifeboat_core::config::OnConfirmTimeout;
use lifeboat_core::engine::Role;
use lifeboat_core::protocol::{Command, Heartbeat, Input, Message, OperatorRequest, Peer};
use lifeboat_core::report::Report;
use lifeboat_core::{ArtifactKind, Config, DbId, Epoch, Millis, SiteId};

fn is_promote(c: &Command) -> bool {
    matches!(c, Command::Promote { .. })
}
fn is_fence(c: &Command) -> bool {
    matches!(c, Command::Fence { .. })
}
fn is_identity(c: &Command) -> bool {
    matches!(c, Command::SwitchIdentity { .. })
}

/// Real time of a site's first `Promote` command.
fn first_promote(h: &Harness, n: usize) -> Option<Millis> {
    h.commands_of(n, is_promote).first().map(|(t, _)| *t)
}

/// The longest a lost primary may take to be replaced (detection to promote): the lease runs
/// out, plus the drift margin, plus a probe and an arbiter query to notice it, plus slack for
/// the drain and the epoch round trip.
fn failover_bound(c: &Config) -> Millis {
    c.lease.lease_ms + c.drift_margin() + 2 * c.failover.probe_every_ms + 1_000
}

fn assert_no_failover(h: &Harness) {
    assert!(
        h.commands_of(B, is_promote).is_empty(),
        "the secondary was promoted:\n{}",
        h.trace()
    );
    assert_eq!(h.sites[B].role(), Role::Secondary, "{}", h.trace());
    assert_eq!(h.sites[A].role(), Role::Primary, "{}", h.trace());
    assert_eq!(h.sites[B].epoch(), Epoch(1));
    assert!(h.failover_report().is_none());
}

#[test]
fn steady_state_ships_and_restores_with_no_alerts() {
    let mut h = Harness::new(config(2));
    h.run(60_000);
    assert_eq!(h.sites[A].role(), Role::Primary, "{}", h.trace());
    assert_eq!(h.sites[B].role(), Role::Secondary);
    assert!(h.acked_at(A).len() > 500);
    assert!(h.db[B].pos(0) > 0, "nothing restored");
    let bad: Vec<_> = h
        .alerts
        .iter()
        .filter(|(_, _, a)| a.change != AlertChange::Cleared)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    h.assert_safe();
}

#[test]
fn link_cut_between_sites_while_arbiter_sees_primary_raises_one_link_alert_and_no_failover() {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    h.cut(A, B);
    h.run(50_000);
    assert_no_failover(&h);
    assert!(h.db[A].writable, "the primary must keep serving");
    let link: Vec<_> = h.alerts_of("link_down");
    assert_eq!(
        link.len(),
        1,
        "raised exactly once, never updated: {link:#?}"
    );
    assert_eq!(link[0].change, AlertChange::Raised);
    assert_eq!(link[0].id.subject, lifeboat_core::Subject::Site(SiteId(0)));
    let no = h.audits_of(B, "no failover");
    assert_eq!(no.len(), 1, "{}", h.trace());
    assert!(!no[0].inputs.is_empty());
    // The link heals: once it stayed up a while the alert clears; replication catches up
    // (shipping retries back off up to `shipping.retry_max_ms`).
    h.heal(A, B);
    h.run(lifeboat_core::defaults::LINK_DOWN_CLEAR_AFTER + 10_000);
    assert_eq!(h.alerts_of("link_down").len(), 2);
    assert_eq!(h.alerts_of("link_down")[1].change, AlertChange::Cleared);
    assert!(
        h.db[B].pos(0) + 60 >= h.db[A].pos(0),
        "{} vs {}",
        h.db[B].pos(0),
        h.db[A].pos(0)
    );
    h.assert_safe();
}

#[test]
fn primary_site_lost_fails_over_within_the_bound_and_reports_rpo_bounds_and_rto() {
    let cfg = config(2);
    let mut h = Harness::new(cfg.clone());
    h.run(30_000);
    h.kill(A);
    let killed_at = h.t;
    let last_hb = h.last_heartbeat_sent[A].unwrap();
    h.run(30_000);
    assert_eq!(h.sites[B].role(), Role::Primary, "{}", h.trace());
    assert_eq!(h.sites[B].epoch(), Epoch(2));
    assert_eq!(h.arbiter.epoch(), Epoch(2));
    let promoted = first_promote(&h, B).expect("promoted");
    assert!(
        promoted - killed_at <= failover_bound(&cfg),
        "promoted {} ms after the loss (bound {})",
        promoted - killed_at,
        failover_bound(&cfg)
    );
    let Some(Report::Failover {
        rpo_lower,
        rpo_upper,
        rto_ms,
        forced,
        detected_at,
        writable_at,
        ..
    }) = h.failover_report().cloned()
    else {
        panic!("no failover report:\n{}", h.trace())
    };
    assert!(!forced);
    // The true loss: acknowledged writes the new primary does not hold.
    let lost = h.missing_at(B).len() as u64;
    assert!(
        lost > 0,
        "the harness writes every 100 ms; some must be lost"
    );
    let upper = rpo_upper.expect("heartbeats were seen: the upper bound is known");
    assert!(
        rpo_lower <= lost && lost <= upper,
        "rpo [{rpo_lower}, {upper}] must contain the true loss {lost}"
    );
    assert!(rto_ms > 0 && writable_at > detected_at && rto_ms == writable_at - detected_at);
    assert_eq!(h.db[B].identity_switches, 1);
    assert_eq!(h.distinct_ops(B, is_identity).len(), 1);
    assert!(h.db[B].writable && h.acked_at(B).len() > 100);
    // A dead site is never reported as a dead link, not even while the arbiter's lease on the
    // dead primary runs out.
    assert_eq!(h.raised("link_down"), 0, "{}", h.trace());
    println!(
        "failover (default lease configuration): last primary heartbeat -> Promote = {} ms; \
         site loss -> Promote = {} ms; reported RTO {} ms; RPO [{rpo_lower}, {upper}] true {lost}",
        promoted - last_hb,
        promoted - killed_at,
        rto_ms
    );
    h.assert_safe();
}

/// The closing-note figure: failover time from the primary's last heartbeat to the `Promote`
/// command, with the default configuration, over site losses spread across a renewal period.
#[test]
fn failover_time_from_the_last_heartbeat_to_promote_with_the_default_configuration() {
    let cfg = Config::default();
    let mut times = Vec::new();
    for phase in (0..cfg.lease.renew_every_ms).step_by(100) {
        let mut h = Harness::new(cfg.clone());
        h.run(30_000 + phase);
        h.kill(A);
        let last_hb = h.last_heartbeat_sent[A].unwrap();
        let killed = h.t;
        assert!(h.run_until(30_000, |h| first_promote(h, B).is_some()));
        let promoted = first_promote(&h, B).unwrap();
        assert!(promoted - killed <= failover_bound(&cfg));
        times.push(promoted - last_hb);
        h.assert_safe();
    }
    times.sort_unstable();
    println!(
        "failover time, last primary heartbeat -> Promote (default configuration, {} runs): \
         min {} ms, median {} ms, max {} ms",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    assert!(times[times.len() - 1] <= failover_bound(&cfg) + cfg.lease.heartbeat_every_ms);
}

#[test]
fn primary_cut_from_the_arbiter_only_fences_itself_before_the_secondary_is_promoted() {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    h.cut(A, ARB);
    let cut_at = h.t;
    h.run(40_000);
    let fenced_at = h
        .commands_of(A, is_fence)
        .iter()
        .map(|(t, _)| *t)
        .find(|t| *t > cut_at)
        .expect("the primary fenced itself");
    let promoted = first_promote(&h, B).expect("the secondary took over");
    assert!(
        fenced_at < promoted,
        "fence {fenced_at} after promote {promoted}"
    );
    let fence = h.audits_of(A, "fence");
    assert!(fence.iter().any(|a| a.why.contains("fence deadline")));
    // Real times: the old primary's last acknowledged write precedes the new primary's first.
    let last_a = h.acked_at(A).last().unwrap().t;
    let first_b = h.acked_at(B).first().expect("writes at the new primary").t;
    assert!(
        last_a < first_b,
        "last write at A {last_a}, first at B {first_b}"
    );
    assert!(last_a <= fenced_at + h.fence_delay);
    assert_eq!(h.sites[B].role(), Role::Primary);
    // The old primary still reaches the new one: it learns the epoch and is rebuilt.
    assert_eq!(h.sites[A].role(), Role::Secondary, "{}", h.trace());
    assert!(!h.db[A].writable);
    h.assert_safe();
}

/// Primary slow and arbiter fast by the drift bound, a fence that takes the longest configured
/// time, the primary isolated: (last real time the old primary accepted writes, real time the
/// new epoch began).
fn isolate_primary_at_the_drift_bound(cfg: Config) -> (Millis, Millis, Harness) {
    let ppm = cfg.lease.max_drift_ppm as i64;
    let mut h = Harness::new(cfg.clone());
    h.clocks[A] = Clock::new(1_000, -ppm);
    h.clocks[ARB] = Clock::new(7_000, ppm);
    assert_eq!(h.fence_delay, cfg.lease.fence_time_ms);
    h.run(30_000);
    h.cut(A, ARB);
    h.cut(A, B);
    h.run(30_000);
    let (began, holder) = h.epoch_began[&2];
    assert_eq!(holder, B);
    (h.last_writable[A].unwrap(), began, h)
}

/// The secondary asks the arbiter often, so the new epoch begins as soon as it may.
fn eager_config() -> Config {
    let mut cfg = config(1);
    cfg.failover.probe_every_ms = 50;
    cfg
}

#[test]
fn the_new_epoch_begins_only_after_the_old_primary_stopped_writing_at_the_drift_bound() {
    let (last_a, began, h) = isolate_primary_at_the_drift_bound(eager_config());
    assert!(
        last_a < began,
        "the old primary accepted writes at {last_a}, the new epoch began at {began}"
    );
    println!("margin at the drift bound: {} ms", began - last_a);
    assert_eq!(h.sites[B].role(), Role::Primary);
    h.assert_safe();
}

/// The oracle is sharp: an arbiter that forgets the drift margin is caught.
#[cfg(feature = "planted-bugs")]
#[test]
fn an_arbiter_ignoring_the_drift_margin_lets_two_writers_overlap() {
    let mut cfg = eager_config();
    cfg.planted_bug = Some(lifeboat_core::planted::PlantedBug::IgnoreDriftMargin);
    let (last_a, began, h) = isolate_primary_at_the_drift_bound(cfg);
    assert!(last_a >= began, "{last_a} < {began}");
    assert!(!h.violations.is_empty());
}

#[test]
fn planned_switchover_loses_nothing_and_reverses_replication_without_a_reseed() {
    let mut h = Harness::new(config(2));
    h.run(30_000);
    h.operator(A, OperatorRequest::Switchover);
    assert!(
        h.run_until(30_000, |h| h.sites[B].state().procedure.is_none()
            && h.sites[B].role() == Role::Primary)
    );
    assert_eq!(h.sites[B].epoch(), Epoch(2));
    assert_eq!(h.arbiter.epoch(), Epoch(2));
    // Zero loss: every write the old primary acknowledged is at the new one.
    let missing = h.missing_at(B);
    assert!(missing.is_empty(), "lost {missing:?}");
    let Some(Report::Switchover { rpo, epoch, .. }) = h
        .reports_of(B)
        .into_iter()
        .find(|r| matches!(r, Report::Switchover { .. }))
        .cloned()
    else {
        panic!("no switchover report:\n{}", h.trace())
    };
    assert_eq!((rpo, epoch), (0, Epoch(2)));
    assert!(h.run_until(5_000, |h| h.sites[A].role() == Role::Secondary));
    let at_switch = h.db[A].pos(0);
    h.run(30_000);
    // Reverse replication: the old primary replays the new one's logs, no reseed.
    assert!(h.db[A].pos(0) > at_switch, "{}", h.trace());
    for db in 0..2 {
        let (a, b) = (&h.db[A].hist[db], &h.db[B].hist[db]);
        assert_eq!(
            a[..],
            b[..a.len()],
            "the old primary holds a prefix of the new one"
        );
    }
    assert!(h
        .commands_of(A, |c| matches!(c, Command::Reseed { .. }))
        .is_empty());
    assert!(h.audits_of(A, "rebuild").is_empty());
    assert_eq!(h.raised("reseed"), 0);
    assert_eq!(h.db[B].identity_switches, 1);
    h.assert_safe();
}

#[test]
fn old_primary_returning_is_fenced_quarantines_its_artifacts_is_rebuilt_and_fails_back() {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    // The link to the recovery site goes first: logs pile up unshipped at the primary.
    h.cut(A, B);
    h.run(12_000);
    let unshipped: Vec<_> = h.sites[A].unacknowledged().copied().collect();
    assert!(!unshipped.is_empty());
    h.kill(A);
    h.run(30_000);
    assert_eq!(h.sites[B].role(), Role::Primary, "{}", h.trace());
    let b_writes = h.acked_at(B).len();
    assert!(b_writes > 0);
    // The old primary comes back and reaches both the arbiter and the new primary.
    h.heal(A, B);
    h.revive(A);
    assert!(!h.sites[A].writable(), "comes back fenced");
    assert!(h.run_until(60_000, |h| h.sites[A].role() == Role::Secondary));
    assert_eq!(h.sites[A].epoch(), Epoch(2));
    // Its unshipped epoch-1 artifacts are kept aside (at the site that holds them when the
    // new epoch is known there), alerted, and never applied anywhere.
    let quarantine = |n| h.commands_of(n, |c| matches!(c, Command::Quarantine { .. }));
    let quarantined: Vec<_> = quarantine(A).into_iter().chain(quarantine(B)).collect();
    for m in &unshipped {
        assert!(
            quarantined.iter().any(
                |(_, c)| matches!(c, Command::Quarantine { artifact, .. } if artifact.key == m.key)
            ),
            "{m:?} not quarantined"
        );
        for n in [A, B] {
            assert!(h
                .commands_of(
                    n,
                    |c| matches!(c, Command::Restore { artifact, .. } if artifact.key == m.key)
                )
                .is_empty());
        }
    }
    assert!(h.raised("stale_epoch_artifact") >= 1);
    // Rebuilt from a full backup of the new primary's epoch.
    assert!(!h
        .commands_of(A, |c| matches!(c, Command::Restore { artifact, .. } | Command::Reseed { full: artifact, .. }
            if artifact.key.kind == ArtifactKind::Full && artifact.key.epoch == Epoch(2)))
        .is_empty());
    h.run(10_000);
    let (a, b) = (&h.db[A].hist[0], &h.db[B].hist[0]);
    assert_eq!(
        a[..],
        b[..a.len()],
        "rebuilt as a prefix of the new primary"
    );
    assert!(!h.db[A].writable);

    // Failback is a planned switchover back: zero loss, epoch 3.
    h.operator(A, OperatorRequest::Failback);
    assert!(
        h.run_until(30_000, |h| h.sites[A].role() == Role::Primary),
        "{}",
        h.trace()
    );
    assert_eq!(h.sites[A].epoch(), Epoch(3));
    let lost: Vec<_> = h
        .missing_at(A)
        .into_iter()
        .filter(|w| w.site == B)
        .collect();
    assert!(lost.is_empty(), "failback lost {lost:?}");
    assert!(h.run_until(5_000, |h| h.sites[B].role() == Role::Secondary));
    h.run(10_000);
    assert!(h.db[A].writable && !h.db[B].writable);
    h.assert_safe();
}

#[test]
fn arbiter_down_then_primary_lost_never_fails_over_automatically_but_a_forced_failover_works() {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    h.kill_arbiter();
    h.run(5_000);
    h.kill(A);
    h.run(60_000);
    assert!(h.commands_of(B, is_promote).is_empty(), "{}", h.trace());
    assert_eq!(h.sites[B].role(), Role::Secondary);
    assert!(h.raised("arbiter_unreachable") >= 1);
    assert!(h
        .alerts
        .iter()
        .any(|(n, _, a)| *n == B && a.id.kind.as_str() == "arbiter_unreachable"));
    // Without a force, the operator is refused.
    h.operator(B, OperatorRequest::Failover { force: false });
    h.run(5_000);
    assert!(h.commands_of(B, is_promote).is_empty());
    assert!(!h.audits_of(B, "reject failover").is_empty());
    // Forced: the site takes the next epoch itself and says what it risks.
    h.operator(B, OperatorRequest::Failover { force: true });
    assert!(h.run_until(10_000, |h| h.sites[B].role() == Role::Primary));
    assert_eq!(h.sites[B].epoch(), Epoch(2));
    let own = h.audits_of(B, "self-assigned epoch");
    assert_eq!(own.len(), 1);
    assert!(own[0].why.contains("split-brain risk"), "{}", own[0].why);
    h.run(1_000);
    let Some(Report::Failover { forced, .. }) = h.failover_report() else {
        panic!("no report:\n{}", h.trace())
    };
    assert!(forced);
    assert!(h.db[B].writable);
    // The arbiter returns; the epoch the forced failover took is not one it handed out, so it
    // grants it as a new epoch only once the old primary's lease (running again from the
    // arbiter's restart) has lapsed; the forced primary stays writable meanwhile...
    h.restart_arbiter();
    h.run(5_000);
    assert_eq!(h.arbiter.epoch(), Epoch(1));
    assert!(h.db[B].writable);
    h.run(10_000);
    assert_eq!(h.arbiter.epoch(), Epoch(2));
    assert_eq!(h.arbiter.holder(), Some(SiteId(1)));
    assert!(h.db[B].writable);
    // ...so the old primary, when it returns, is refused and rebuilt, never writable.
    h.revive(A);
    assert!(
        h.run_until(60_000, |h| h.sites[A].role() == Role::Secondary),
        "{}",
        h.trace()
    );
    assert!(h.db[B].writable);
    h.assert_safe();
}

/// Where the secondary crashes during the promotion.
#[derive(Copy, Clone, Debug)]
enum CrashPoint {
    /// The request for the new epoch is out, no answer yet.
    Acquire,
    /// Promote issued, not completed.
    Promote,
    /// SwitchIdentity issued, not completed.
    Identity,
}

fn crash_mid_promotion(point: CrashPoint, down_for: Millis) {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    h.kill(A);
    let reached = h.run_until(30_000, |h| match point {
        CrashPoint::Acquire => h.sites[B]
            .state()
            .procedure
            .as_ref()
            .is_some_and(|p| matches!(p.step, lifeboat_core::engine::Step::Acquire { .. })),
        CrashPoint::Promote => !h.commands_of(B, is_promote).is_empty(),
        CrashPoint::Identity => !h.commands_of(B, is_identity).is_empty(),
    });
    assert!(reached, "{point:?} never reached:\n{}", h.trace());
    h.crash(B);
    h.run(down_for);
    h.restart(B);
    h.run(30_000);
    assert_eq!(
        h.sites[B].role(),
        Role::Primary,
        "{point:?}:\n{}",
        h.trace()
    );
    assert!(h.sites[B].state().procedure.is_none());
    assert!(h.db[B].writable, "{point:?}: promoted but not writable");
    assert!(
        h.acked_at(B).iter().any(|w| w.t > h.t - 10_000),
        "{point:?}: writes flow"
    );
    assert_eq!(h.distinct_ops(B, is_identity).len(), 1, "{point:?}");
    assert_eq!(h.distinct_ops(B, is_promote).len(), 1, "{point:?}");
    let reports = h
        .reports
        .iter()
        .filter(|(_, _, r)| matches!(r, Report::Failover { .. }))
        .count();
    assert_eq!(reports, 1, "{point:?}: one failover report");
    assert_eq!(
        h.sites[B].epoch(),
        Epoch(2),
        "{point:?} down {down_for}:\n{}",
        h.trace()
    );
    h.assert_safe();
}

#[test]
fn secondary_crashing_mid_promotion_completes_it_once_and_switches_identity_once() {
    for point in [
        CrashPoint::Acquire,
        CrashPoint::Promote,
        CrashPoint::Identity,
    ] {
        for down_for in [0, 3_000, 20_000] {
            crash_mid_promotion(point, down_for);
        }
    }
}

#[test]
fn flapping_link_neither_fails_over_nor_storms_alerts() {
    // The default restore retry delay: a log delayed by shipping backoff is not a missing log.
    let mut cfg = config(1);
    cfg.restore.retry_delay_ms = Config::default().restore.retry_delay_ms;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    // Five minutes of a link that goes down and up at irregular intervals.
    let pattern = [1_500, 4_000, 6_000, 2_500, 9_000, 700, 3_300, 5_100];
    let mut i = 0;
    while h.t < 320_000 {
        h.cut(A, B);
        h.run(pattern[i % pattern.len()]);
        h.heal(A, B);
        h.run(pattern[(i + 3) % pattern.len()]);
        i += 1;
    }
    h.heal(A, B);
    h.run(20_000);
    assert_no_failover(&h);
    let link = h.alerts_of("link_down").len();
    assert!(
        link <= 4,
        "{link} link_down events in {i} flaps: {:#?}",
        h.alerts_of("link_down")
    );
    assert!(h.alerts.len() <= 10, "alert storm: {:#?}", h.counts());
    h.assert_safe();
}

#[test]
fn every_engine_comes_back_fenced_after_a_restart_and_writable_only_after_renewing() {
    let mut h = Harness::new(config(1));
    h.run(20_000);
    // The primary restarts while it cannot reach the arbiter: it stays fenced.
    h.cut(A, ARB);
    h.restart(A);
    assert_eq!(h.sites[A].role(), Role::Fenced);
    assert!(!h.sites[A].writable());
    let now = h.t;
    assert!(h.commands_of(A, is_fence).iter().any(|(t, _)| *t == now));
    h.run(3_000);
    assert!(!h.db[A].writable);
    h.heal(A, ARB);
    assert!(h.run_until(3_000, |h| h.db[A].writable));
    assert_eq!(h.sites[A].role(), Role::Primary);
    let allow = h.commands_of(A, |c| matches!(c, Command::AllowWrites { .. }));
    assert!(
        allow.last().unwrap().0 > 23_000,
        "writable only after renewing"
    );
    // The secondary restarts: it stays a secondary and is never writable.
    h.restart(B);
    h.run(5_000);
    assert_eq!(h.sites[B].role(), Role::Secondary);
    assert!(!h.db[B].writable);
    h.assert_safe();
}

#[test]
fn a_restarted_engine_refuses_an_older_epoch() {
    let mut h = Harness::new(config(1));
    h.run(20_000);
    h.operator(A, OperatorRequest::Switchover);
    assert!(h.run_until(30_000, |h| h.sites[A].role() == Role::Secondary));
    h.run(5_000);
    h.restart(A);
    h.restart(B);
    h.run(5_000);
    assert_eq!(
        (h.sites[A].epoch(), h.sites[B].epoch()),
        (Epoch(2), Epoch(2))
    );
    // A grant of the old epoch, a heartbeat of the old epoch and an artifact of the old epoch.
    for n in [A, B] {
        h.message(
            n,
            Peer::Arbiter,
            Message::Granted {
                epoch: Epoch(1),
                lease_ms: 10_000,
                req: 1,
            },
        );
    }
    h.message(
        B,
        Peer::Site(SiteId(0)),
        Message::Heartbeat(Heartbeat {
            epoch: Epoch(1),
            seq: 1,
            backups_paused: false,
            writable: true,
            positions: vec![],
            write_rate_per_sec: 0,
        }),
    );
    let pos = h.db[A].pos(0);
    let old = h.artifact(
        DbId(0),
        ArtifactKind::Log,
        pos,
        pos + 10,
        Epoch(1),
        vec![0; 10],
    );
    h.feed(
        A,
        Input::ArtifactReceived {
            meta: old,
            computed: old.checksum,
            from: SiteId(1),
        },
    );
    h.run(5_000);
    assert_eq!(
        (h.sites[A].epoch(), h.sites[B].epoch()),
        (Epoch(2), Epoch(2))
    );
    assert_eq!(h.sites[B].role(), Role::Primary);
    assert_eq!(h.sites[A].role(), Role::Secondary);
    assert!(!h
        .commands_of(
            A,
            |c| matches!(c, Command::Quarantine { artifact, .. } if artifact.key == old.key)
        )
        .is_empty());
    assert!(h
        .commands_of(
            A,
            |c| matches!(c, Command::Restore { artifact, .. } if artifact.key == old.key)
        )
        .is_empty());
    h.assert_safe();
}

#[test]
fn an_artifact_of_the_current_epoch_from_a_site_that_does_not_hold_it_is_never_restored() {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    assert_eq!(h.sites[A].role(), Role::Primary);
    // Site B claims an artifact of epoch 1, which site A holds, and sends it to A. Its key is
    // real (the link is authenticated), so the forgery reaches the engine.
    let pos = h.db[A].pos(0);
    let forged = h.artifact(
        DbId(0),
        ArtifactKind::Log,
        pos,
        pos + 10,
        h.sites[A].epoch(),
        vec![7; 10],
    );
    h.feed(
        A,
        Input::ArtifactReceived {
            meta: forged,
            computed: forged.checksum,
            from: SiteId(1),
        },
    );
    h.run(5_000);
    assert_eq!(h.raised("foreign_epoch_artifact"), 1);
    assert!(!h
        .commands_of(
            A,
            |c| matches!(c, Command::Quarantine { artifact, .. } if artifact.key == forged.key)
        )
        .is_empty());
    assert!(h
        .commands_of(
            A,
            |c| matches!(c, Command::Restore { artifact, .. } if artifact.key == forged.key)
        )
        .is_empty());
    assert_eq!(h.sites[A].role(), Role::Primary);
    h.assert_safe();
}

#[test]
fn a_restart_on_a_new_monotonic_clock_keeps_the_lease_safe() {
    let mut h = Harness::new(config(1));
    h.run(40_000);
    // The primary's process restarts and its monotonic clock starts again near zero.
    h.restart_with_clock(A, 0);
    assert!(h.run_until(3_000, |h| h.db[A].writable), "{}", h.trace());
    h.run(15_000);
    assert!(h.db[A].writable);
    // Then it is cut from everyone: it must fence in time, and the secondary takes over.
    h.cut(A, ARB);
    h.cut(A, B);
    h.run(30_000);
    assert!(!h.db[A].writable);
    assert_eq!(h.sites[B].role(), Role::Primary, "{}", h.trace());
    // The secondary restarts on a new clock too and keeps serving after renewing.
    h.restart_with_clock(B, 5);
    assert!(h.run_until(3_000, |h| h.db[B].writable), "{}", h.trace());
    h.run(30_000);
    assert!(h.db[B].writable);
    h.assert_safe();
}

#[test]
fn auto_pilot_restarts_the_primary_service_and_does_not_fail_over_when_it_recovers() {
    let mut cfg = config(1);
    cfg.failover.local_restart = true;
    let mut h = Harness::new(cfg);
    h.run(30_000);
    // The database service dies; the site and its agent stay up.
    h.db[A].service_up = false;
    h.run(60_000);
    let restarts = h.commands_of(A, |c| matches!(c, Command::RestartService { .. }));
    assert_eq!(restarts.len(), 1, "{}", h.trace());
    assert!(h.db[A].service_up);
    assert_no_failover(&h);
    assert!(h.acked_at(A).iter().any(|w| w.t > 80_000));
    assert_eq!(
        h.raised("link_down"),
        0,
        "the link is fine: the service was down"
    );
    h.assert_safe();
}

#[test]
fn auto_pilot_fails_over_when_the_local_restart_does_not_help() {
    let mut cfg = config(1);
    cfg.failover.local_restart = true;
    let wait = cfg.failover.local_restart_wait_ms;
    let mut h = Harness::new(cfg.clone());
    h.run(30_000);
    h.db[A].service_up = false;
    h.db[A].restart_fixes_service = false;
    let down_at = h.t;
    h.run(90_000);
    assert!(!h
        .commands_of(A, |c| matches!(c, Command::RestartService { .. }))
        .is_empty());
    let promoted = first_promote(&h, B).unwrap_or_else(|| panic!("{}", h.trace()));
    assert!(promoted - down_at >= wait, "waited for the local restart");
    assert!(
        promoted - down_at <= wait + failover_bound(&cfg) + cfg.failover.unhealthy_for_ms,
        "promoted {} ms after the service died",
        promoted - down_at
    );
    assert_eq!(h.sites[B].role(), Role::Primary);
    // The old primary's agent learns the new epoch and is rebuilt as the secondary.
    assert!(h.run_until(60_000, |h| h.sites[A].role() == Role::Secondary));
    h.assert_safe();
}

fn confirm_config(on_timeout: OnConfirmTimeout) -> Config {
    let mut cfg = config(1);
    cfg.failover.confirm = true;
    cfg.failover.confirm_timeout_ms = 40_000;
    cfg.failover.on_confirm_timeout = on_timeout;
    cfg
}

#[test]
fn failover_waits_for_confirmation_and_proceeds_once_confirmed() {
    let mut h = Harness::new(confirm_config(OnConfirmTimeout::Abort));
    h.run(30_000);
    h.kill(A);
    h.run(30_000);
    assert!(
        h.commands_of(B, is_promote).is_empty(),
        "waits for the operator"
    );
    assert_eq!(h.sites[B].role(), Role::Promoting);
    h.operator(B, OperatorRequest::ConfirmFailover);
    assert!(h.run_until(5_000, |h| h.sites[B].role() == Role::Primary));
    assert!(h.db[B].writable);
    h.assert_safe();
}

#[test]
fn unconfirmed_failover_proceeds_on_timeout_when_configured_to() {
    let mut h = Harness::new(confirm_config(OnConfirmTimeout::Proceed));
    h.run(30_000);
    h.kill(A);
    let killed = h.t;
    h.run(90_000);
    let promoted = first_promote(&h, B).unwrap_or_else(|| panic!("{}", h.trace()));
    assert!(
        promoted - killed >= 40_000,
        "waited the confirmation timeout"
    );
    assert_eq!(h.sites[B].role(), Role::Primary);
    assert_eq!(h.audits_of(B, "failover confirmation timed out").len(), 1);
    h.assert_safe();
}

#[test]
fn unconfirmed_failover_aborts_on_timeout_when_configured_to() {
    let mut h = Harness::new(confirm_config(OnConfirmTimeout::Abort));
    h.run(30_000);
    h.kill(A);
    h.run(150_000);
    assert!(h.commands_of(B, is_promote).is_empty(), "{}", h.trace());
    assert_eq!(h.sites[B].role(), Role::Secondary);
    let aborts = h.audits_of(B, "abort");
    assert_eq!(aborts.len(), 1, "aborted once, not asked again and again");
    assert!(aborts[0].why.contains("confirmation"));
    // The operator can still decide later.
    h.operator(B, OperatorRequest::Failover { force: false });
    assert!(h.run_until(10_000, |h| h.sites[B].role() == Role::Primary));
    h.assert_safe();
}

#[test]
fn drill_at_the_secondary_reports_and_the_primary_keeps_serving() {
    let mut h = Harness::new(config(2));
    h.run(30_000);
    let before = h.acked_at(A).len();
    h.operator(B, OperatorRequest::Drill { db: None });
    h.run(5_000);
    let drills = h.commands_of(B, |c| matches!(c, Command::Drill { .. }));
    assert_eq!(drills.len(), 2, "one per database");
    let ok = h
        .reports_of(B)
        .into_iter()
        .filter(|r| matches!(r, Report::Drill { ok: true, .. }))
        .count();
    assert_eq!(ok, 2);
    assert_eq!(h.db[B].identity_switches + h.db[A].identity_switches, 0);
    assert!(h.commands_of(B, is_promote).is_empty());
    assert_eq!(h.sites[A].role(), Role::Primary);
    assert_eq!(h.sites[B].role(), Role::Secondary);
    assert!(
        h.acked_at(A).len() >= before + 45,
        "the primary kept serving"
    );
    assert!(!h.db[B].writable);
    // A drill at the primary is refused.
    h.operator(A, OperatorRequest::Drill { db: None });
    h.run(1_000);
    assert!(h
        .commands_of(A, |c| matches!(c, Command::Drill { .. }))
        .is_empty());
    h.assert_safe();
}

#[test]
fn recovery_site_lost_raises_an_alert_at_the_primary_which_keeps_serving() {
    let cfg = config(1);
    let mut h = Harness::new(cfg.clone());
    h.run(20_000);
    h.kill(B);
    let killed = h.t;
    h.run(cfg.failover.peer_lost_after_ms + 40_000);
    let lost: Vec<_> = h
        .alerts
        .iter()
        .filter(|(n, _, a)| *n == A && a.id.kind.as_str() == "recovery_site_lost")
        .collect();
    assert_eq!(lost.len(), 1, "raised once: {lost:#?}");
    assert!(lost[0].1 >= killed + cfg.failover.peer_lost_after_ms);
    assert_eq!(h.sites[A].role(), Role::Primary);
    assert!(h.db[A].writable);
    assert!(h.acked_at(A).iter().any(|w| w.t > h.t - 1_000));
    h.assert_safe();
}

#[test]
fn every_decision_emits_an_audit_record_with_its_inputs() {
    // Dead link: "no failover".
    let mut h = Harness::new(config(1));
    h.run(20_000);
    h.cut(A, B);
    h.run(10_000);
    let no = h.audits_of(B, "no failover");
    assert!(no
        .iter()
        .any(|a| a.inputs.iter().any(|(k, _)| k == "failed_probes")));

    // Cut from the arbiter: fence, failover, new epoch (secondary and arbiter), promote.
    let mut h = Harness::new(config(1));
    h.run(20_000);
    h.cut(A, ARB);
    h.run(40_000);
    let need = [
        (A, "fence", "lease_expires"),
        (B, "failover", "arbiter_lease_lapsed"),
        (B, "new epoch", "epoch"),
        (B, "promoted", "epoch"),
        (ARB, "new epoch", "lease_expiry"),
    ];
    for (n, what, key) in need {
        let recs = h.audits_of(n, what);
        assert!(
            recs.iter()
                .any(|a| !a.why.is_empty() && a.inputs.iter().any(|(k, _)| k == key)),
            "node {n}: no `{what}` audit with input `{key}`:\n{}",
            h.trace()
        );
    }
    // Every audit record says why.
    assert!(h.audits.iter().all(|(_, _, a)| !a.why.is_empty()));
}

/// The oracles are sharp: each planted defect of the role machine is caught.
#[cfg(feature = "planted-bugs")]
mod planted {
    use super::*;
    use lifeboat_core::planted::PlantedBug;

    #[test]
    fn a_primary_that_skips_its_self_fence_is_caught() {
        let mut cfg = config(1);
        cfg.planted_bug = Some(PlantedBug::SkipSelfFence);
        let mut h = Harness::new(cfg);
        h.run(30_000);
        h.cut(A, ARB);
        h.cut(A, B);
        h.run(30_000);
        assert!(h.split_brain.is_some() && !h.violations.is_empty());
    }

    #[test]
    fn a_secondary_that_accepts_a_stale_epoch_is_caught() {
        let mut cfg = config(1);
        cfg.planted_bug = Some(PlantedBug::AcceptStaleEpoch);
        let mut h = Harness::new(cfg);
        h.run(20_000);
        h.operator(A, OperatorRequest::Switchover);
        assert!(h.run_until(30_000, |h| h.sites[A].role() == Role::Secondary));
        h.run(2_000);
        let pos = h.db[A].pos(0);
        let old = h.artifact(
            DbId(0),
            ArtifactKind::Log,
            pos,
            pos + 10,
            Epoch(1),
            vec![0; 10],
        );
        h.feed(
            A,
            Input::ArtifactReceived {
                meta: old,
                computed: old.checksum,
                from: SiteId(1),
            },
        );
        h.run(2_000);
        assert!(h
            .violations
            .iter()
            .any(|v| v.contains("of epoch 1 while at epoch 2")));
    }
}

/// Found by fuzzing (`fuzz/regressions/engine_inputs/rpo-sum-overflow-*`): positions are opaque
/// `u64`s from outside, so the per-database losses and the rate can sum past `u64::MAX`. The
/// report then keeps a true lower bound (saturated) and calls the upper bound unknown, never a
/// smaller number, and the audit trail says why.
#[test]
fn failover_report_with_positions_near_u64_max_keeps_true_bounds_and_says_the_upper_is_unknown() {
    let mut h = Harness::new(config(2));
    h.run(10_000);
    h.kill(A);
    let huge = lifeboat_core::Lsn(u64::MAX - 7);
    h.message(
        B,
        Peer::Site(SiteId(0)),
        Message::Heartbeat(Heartbeat {
            epoch: Epoch(1),
            seq: 1_000_000,
            backups_paused: false,
            writable: true,
            positions: vec![(DbId(0), huge), (DbId(1), huge)],
            write_rate_per_sec: u64::MAX / 3,
        }),
    );
    h.operator(B, OperatorRequest::Failover { force: true });
    assert!(
        h.run_until(30_000, |h| h.sites[B].role() == Role::Primary),
        "{}",
        h.trace()
    );
    h.run(1_000);
    let Some(Report::Failover {
        rpo_lower,
        rpo_upper,
        losses,
        ..
    }) = h.failover_report().cloned()
    else {
        panic!("no report:\n{}", h.trace())
    };
    assert_eq!(rpo_lower, u64::MAX, "two near-maximal losses saturate");
    assert_eq!(rpo_upper, None, "an overflowing upper bound is unknown");
    assert_eq!(losses.len(), 2);
    for l in &losses {
        assert!(l.rpo_lower > u64::MAX / 2, "{l:?}");
        assert_eq!(l.rpo_upper, None, "{l:?}");
    }
    let audit = h.audits_of(B, "rpo upper bound unknown");
    assert_eq!(audit.len(), 1, "{}", h.trace());
    assert!(audit[0].why.contains("2^64"), "{}", audit[0].why);
}

fn is_log_backup(c: &Command) -> bool {
    matches!(
        c,
        Command::TakeBackup {
            kind: ArtifactKind::Log,
            ..
        }
    )
}

/// Issue 13, bug 1: heartbeats carried only the positions that changed since the previous
/// heartbeat, so positions sent while the link was down were never sent again and the
/// failover report under-stated the loss. Every unacknowledged position is now carried until
/// the recovery site acknowledges a heartbeat that carried it.
#[test]
fn positions_sent_while_the_link_was_down_are_sent_again_until_acknowledged() {
    let mut h = Harness::new(config(2));
    h.run(20_000);
    // No logs either (maintenance): what the recovery site knows of the writes comes from the
    // heartbeats alone.
    h.operator(A, OperatorRequest::PauseBackups);
    h.run(1_000);
    h.cut(A, B);
    h.run(60_000);
    // The writes stop before the link heals (as when the primary fenced itself): no later
    // change carries the positions over on its own.
    h.write_every = Millis::MAX;
    h.run(5_000);
    let produced = |h: &Harness, db: u32| h.sites[A].write_position_of(DbId(db)).unwrap();
    let known = |h: &Harness, db: u32| h.sites[B].db(DbId(db)).unwrap().known_produced;
    let during = [produced(&h, 0), produced(&h, 1)];
    assert!(
        known(&h, 0) < during[0] && known(&h, 1) < during[1],
        "the recovery site cannot know positions reported while the link was down"
    );
    h.heal(A, B);
    let hb = h.cfg.lease.heartbeat_every_ms;
    h.run(3 * hb);
    for db in 0..2 {
        assert!(
            known(&h, db) >= during[db as usize],
            "db{db}: known {:?} after the heal, the primary had reached {:?} during the cut",
            known(&h, db),
            during[db as usize]
        );
    }
    // Acknowledged positions are not carried forever: with no new writes, heartbeats go empty.
    assert!(h.sites[A].state().dirty.len() <= 2);
    h.assert_safe();
}

/// Issue 13, bug 1: a primary that fenced itself (its lease could not be renewed) took no log
/// of the writes it had acknowledged before the fence, so they could not reach the recovery
/// site. Once the fence completes it cuts one.
#[test]
fn a_primary_that_fences_itself_takes_a_log_of_the_writes_it_acknowledged() {
    let mut h = Harness::new(config(1));
    h.run(30_000);
    h.cut(A, ARB);
    let cut_at = h.t;
    h.run(40_000);
    let fenced_at = h
        .commands_of(A, is_fence)
        .iter()
        .map(|(t, _)| *t)
        .find(|t| *t > cut_at)
        .expect("the primary fenced itself");
    let logs_after: Vec<Millis> = h
        .commands_of(A, is_log_backup)
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= fenced_at)
        .collect();
    assert!(
        !logs_after.is_empty() && logs_after[0] <= fenced_at + 5_000,
        "no log cut after the fence at {fenced_at}: {logs_after:?}\n{}",
        h.trace()
    );
    // Everything the old primary acknowledged is at the new primary.
    assert!(h.missing_at(B).is_empty(), "{:?}", h.missing_at(B));
    h.assert_safe();
}

fn is_restore(c: &Command) -> bool {
    matches!(c, Command::Restore { .. } | Command::Reseed { .. })
}

/// Run until the recovery site's next restore fails (its `Relabel` marks the retry), then lose
/// the primary site at once. The retry is a minute away, far past the failover. Returns the
/// failed artifact's key.
fn lose_primary_right_after_a_failed_restore(fails: u32) -> (Harness, lifeboat_core::ArtifactKey) {
    let mut cfg = config(1);
    cfg.restore.retry_delay_ms = 60_000;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    let relabels = |h: &Harness| h.commands_of(B, |c| matches!(c, Command::Relabel { .. }));
    let before = relabels(&h).len();
    h.db[B].fails_next_restores = fails;
    assert!(
        h.run_until(20_000, |h| relabels(h).len() > before),
        "no restore failed:\n{}",
        h.trace()
    );
    let Some((_, Command::Relabel { artifact })) = relabels(&h).pop() else {
        unreachable!()
    };
    h.kill(A);
    h.run(90_000);
    assert_eq!(h.sites[B].role(), Role::Primary, "{}", h.trace());
    (h, artifact.key)
}

/// Issue 13, bug 2 (seed 52687): the drain counted as finished while a received log only waited
/// for its retry; the epoch changed, and the retry then restored the older epoch's log into the
/// new primary (or the log was thrown away). The drain is a barrier: it retries at once.
#[test]
fn the_drain_retries_a_log_whose_restore_failed_and_restores_it_before_the_new_epoch() {
    let (h, key) = lose_primary_right_after_a_failed_restore(1);
    let promoted = first_promote(&h, B).expect("promoted");
    let restores = h.commands_of(B, is_restore);
    assert!(
        restores.iter().all(|(t, _)| *t < promoted),
        "a restore was issued after the promotion:\n{}",
        h.trace()
    );
    let held: std::collections::BTreeSet<u64> = h.db[B].hist[0].iter().copied().collect();
    let in_log = &h.contents[&key];
    assert!(
        !in_log.is_empty() && in_log.iter().all(|id| held.contains(id)),
        "the failed log's writes are not in the new primary:\n{}",
        h.trace()
    );
    assert!(
        h.audits_of(B, "drain gave up on failing restores")
            .is_empty(),
        "{}",
        h.trace()
    );
    h.assert_safe();
}

/// The other half of the barrier: a log that fails every retry the drain gives it is left out
/// (and counted in the loss), and its retry never restores it into the new primary.
#[test]
fn a_log_that_fails_every_drain_retry_is_counted_lost_and_never_restored_after_the_epoch() {
    let (h, key) =
        lose_primary_right_after_a_failed_restore(1 + lifeboat_core::defaults::DRAIN_RETRIES);
    let promoted = first_promote(&h, B).expect("promoted");
    let restores = h.commands_of(B, is_restore);
    assert!(
        restores.iter().all(|(t, _)| *t < promoted),
        "a restore was issued after the promotion:\n{}",
        h.trace()
    );
    assert_eq!(
        h.audits_of(B, "drain gave up on failing restores").len(),
        1,
        "{}",
        h.trace()
    );
    let held: std::collections::BTreeSet<u64> = h.db[B].hist[0].iter().copied().collect();
    assert!(h.contents[&key].iter().all(|id| !held.contains(id)));
    let Some(Report::Failover { rpo_lower, .. }) = h.failover_report().cloned() else {
        panic!("no failover report:\n{}", h.trace())
    };
    let lost = h.missing_at(B).len() as u64;
    assert!(
        h.contents[&key].len() as u64 <= rpo_lower && rpo_lower <= lost,
        "lower {rpo_lower} true {lost}"
    );
    h.assert_safe();
}

/// Issue 13, bug 3 (seed 50395): the arbiter accepted the hand-off to a recovery site it had not
/// heard from for minutes (that site could not reach it); the old primary stepped down and
/// nobody accepted writes until the partition healed. The arbiter now refuses a hand-off to a
/// site not heard within one lease; the switchover aborts within its timeout and the primary
/// writes again, so no writer gap exceeds `switchover_timeout_ms` + one lease.
#[test]
fn a_switchover_to_a_site_the_arbiter_does_not_hear_is_refused_and_the_primary_writes_again() {
    let mut cfg = config(1);
    cfg.failover.switchover_timeout_ms = 20_000;
    let bound = cfg.failover.switchover_timeout_ms + cfg.lease.lease_ms;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.cut(B, ARB);
    h.run(30_000);
    h.operator(A, OperatorRequest::Switchover);
    let (mut gap, mut longest) = (0, 0);
    for _ in 0..1_200 {
        h.run(100);
        if h.db[A].writable || h.db[B].writable {
            gap = 0;
        } else {
            gap += 100;
            longest = longest.max(gap);
        }
    }
    assert!(
        longest <= bound,
        "no writer for {longest} ms (bound {bound}):\n{}",
        h.trace()
    );
    assert_eq!(h.arbiter.epoch(), Epoch(1), "{}", h.trace());
    assert_eq!(h.sites[A].role(), Role::Primary, "{}", h.trace());
    assert!(h.db[A].writable);
    assert!(
        h.audits_of(A, "switchover aborted").len() == 1,
        "{}",
        h.trace()
    );
    // Refused by the target, which does not hear the arbiter either (it has no answer to its
    // queries), or, had it asked, by the arbiter's own guard (`arbiter_guards.rs`).
    assert!(h.commands_of(B, is_promote).is_empty(), "{}", h.trace());
    h.assert_safe();
}

/// Swarm seeds 203783 and 203830: a switchover (a failback) to a site whose own database
/// service had been down for minutes handed it the epoch; it never accepted writes, and the old
/// primary was held down. The target refuses while its own service answers its checks with
/// errors: the primary writes on.
#[test]
fn a_switchover_target_whose_own_service_is_down_refuses_and_the_primary_writes_on() {
    let mut h = Harness::new(config(1));
    h.run(20_000);
    h.db[B].service_up = false;
    h.run(30_000);
    h.operator(A, OperatorRequest::Switchover);
    assert!(
        h.run_until(30_000, |h| h.sites[A].role() == Role::Primary
            && h.sites[A].state().procedure.is_none()
            && h.db[A].writable),
        "{}",
        h.trace()
    );
    h.run(10_000);
    assert_eq!(h.arbiter.epoch(), Epoch(1), "{}", h.trace());
    assert!(h.commands_of(B, is_promote).is_empty(), "{}", h.trace());
    assert_eq!(
        h.audits_of(A, "switchover aborted").len(),
        1,
        "{}",
        h.trace()
    );
    // Its service answers again: the same request goes through.
    h.db[B].service_up = true;
    h.run(30_000);
    h.operator(A, OperatorRequest::Switchover);
    assert!(
        h.run_until(30_000, |h| h.sites[B].role() == Role::Primary
            && h.db[B].writable),
        "{}",
        h.trace()
    );
    assert_eq!(h.arbiter.epoch(), Epoch(2));
    h.assert_safe();
}

/// Swarm seeds 205950 and 205306: an old primary whose engine was down through the failover
/// came back, heard of the newer epoch in the arbiter's `Denied` and counted the hold-down from
/// that moment, as if it had just failed over; when the new primary was lost three minutes
/// later nobody took over. The hold-down counts only for a site that held a grant (or resigned)
/// since its engine started.
#[test]
fn an_old_primary_that_learns_of_a_past_failover_after_its_restart_is_not_held_down() {
    let mut cfg = config(1);
    cfg.failover.hold_down_ms = 600_000;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.kill(A);
    assert!(h.run_until(120_000, |h| h.db[B].writable), "{}", h.trace());
    h.run(60_000);
    // It comes back with the link between the sites down: the arbiter's `Denied` is how it
    // hears of epoch 2.
    h.cut(A, B);
    h.revive(A);
    h.run(5_000);
    h.heal(A, B);
    assert!(
        h.run_until(120_000, |h| h.sites[A].role() == Role::Secondary),
        "{}",
        h.trace()
    );
    assert!(
        h.sites[A].state().own.failover_at.is_none(),
        "{}",
        h.trace()
    );
    h.run(30_000);
    h.kill(B);
    assert!(h.run_until(120_000, |h| h.db[A].writable), "{}", h.trace());
    assert!(
        h.audits_of(A, "failover held back").is_empty(),
        "{}",
        h.trace()
    );
    h.assert_safe();
}

/// Run in steps; return the longest time with no writable site during which no critical alert
/// was active at either site.
fn longest_silent_writer_gap(h: &mut Harness, ms: Millis) -> Millis {
    let (mut gap, mut longest) = (0, 0);
    for _ in 0..ms / 100 {
        h.run(100);
        let writer = h.db[A].writable || h.db[B].writable;
        // Only a live site's alerts reach anyone.
        let critical = (0..2).any(|n| {
            h.db[n].site_up
                && h.db[n].agent_up
                && h.sites[n]
                    .state()
                    .alerts
                    .iter()
                    .any(|(_, a)| a.severity == lifeboat_core::alert::Severity::Critical)
        });
        if writer || critical {
            gap = 0;
        } else {
            gap += 100;
            longest = longest.max(gap);
        }
    }
    longest
}

/// Issue 13, bug 4(a): the local restart fails, the primary resigns its lease; the service then
/// comes back by itself. The resigned primary checks its own service and takes the lease up
/// again: a site accepts writes, and there is never a writerless stretch without a critical
/// alert.
#[test]
fn a_resigned_primary_takes_its_lease_up_again_when_its_service_comes_back() {
    let mut cfg = config(1);
    cfg.failover.local_restart = true;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.db[A].service_up = false;
    h.db[A].restart_fixes_service = false;
    assert!(
        h.run_until(60_000, |h| !h.audits_of(A, "resign").is_empty()),
        "{}",
        h.trace()
    );
    h.db[A].service_up = true;
    let silent = longest_silent_writer_gap(&mut h, 60_000);
    assert_eq!(
        silent,
        0,
        "no writer and no critical alert for {silent} ms:\n{}",
        h.trace()
    );
    assert!(h.db[A].writable || h.db[B].writable, "{}", h.trace());
    let writer = if h.db[A].writable { A } else { B };
    assert!(h.acked_at(writer).iter().any(|w| w.t + 1_000 >= h.t));
    h.assert_safe();
}

/// Issue 13, bug 4(c): with the defaults (no local restart), a dead database service on a live
/// primary site is failed over: the primary checks its own service and gives its lease up once
/// it has been down for `local_restart_wait_ms`; the recovery site takes over after the lapse.
#[test]
fn with_the_defaults_a_dead_service_on_a_live_primary_site_is_failed_over() {
    let cfg = config(1);
    assert!(!cfg.failover.local_restart);
    let wait = cfg.failover.local_restart_wait_ms;
    let mut h = Harness::new(cfg.clone());
    h.run(20_000);
    h.db[A].service_up = false;
    let down_at = h.t;
    h.run(wait + 60_000);
    let promoted = first_promote(&h, B).unwrap_or_else(|| panic!("{}", h.trace()));
    assert!(promoted - down_at >= wait, "resigned before the wait");
    assert!(
        promoted - down_at <= wait + cfg.failover.unhealthy_for_ms + failover_bound(&cfg),
        "promoted {} ms after the service died",
        promoted - down_at
    );
    assert_eq!(h.audits_of(A, "resign").len(), 1, "{}", h.trace());
    assert!(h.raised("primary_down") >= 1);
    assert!(h.db[B].writable);
    h.assert_safe();
}

/// Issue 13, bug 4(b): a service probe that fails wherever the primary is (a wrong probe) never
/// moves the primary: its own checks pass, so it keeps its lease, and the recovery site's Auto
/// Pilot finds no lapse. At most the critical alert says the probe fails.
#[test]
fn a_probe_that_fails_wherever_the_primary_is_moves_nothing() {
    let mut cfg = config(1);
    cfg.failover.local_restart = true;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.probe_broken = true;
    h.run(300_000);
    assert!(h.commands_of(B, is_promote).is_empty(), "{}", h.trace());
    assert!(h.commands_of(A, is_promote).is_empty(), "{}", h.trace());
    assert_eq!(h.sites[A].role(), Role::Primary, "{}", h.trace());
    assert!(h.db[A].writable);
    assert!(h.raised("primary_down") >= 1);
    h.assert_safe();
}

/// No more than one automatic failover per `failover.hold_down_ms`: the primary's service dies
/// and it gives its lease up, the recovery site takes over; soon after, the new primary's site
/// is lost. The old primary (rebuilt, its service back) raises its critical alert but waits for
/// the hold-down to pass before it takes over again. An operator could force it earlier.
#[test]
fn a_second_automatic_failover_waits_for_the_hold_down() {
    let mut cfg = config(1);
    cfg.failover.hold_down_ms = 180_000;
    let hold = cfg.failover.hold_down_ms;
    let mut h = Harness::new(cfg.clone());
    h.run(20_000);
    h.db[A].service_up = false;
    assert!(h.run_until(120_000, |h| h.db[B].writable), "{}", h.trace());
    h.db[A].service_up = true;
    assert!(
        h.run_until(120_000, |h| h.sites[A].role() == Role::Secondary
            && h.sites[A].state().dbs[0].position.is_some()),
        "{}",
        h.trace()
    );
    let demoted_at = h.sites[A]
        .state()
        .own
        .failover_at
        .expect("the hold-down started");
    let _ = demoted_at;
    let first = first_promote(&h, B).expect("first failover");
    h.kill(B);
    let silent = longest_silent_writer_gap(&mut h, hold + 60_000);
    // Detection takes up to the failover bound; after it the critical alert is raised.
    assert!(
        silent <= failover_bound(&cfg),
        "no writer and no critical alert for {silent} ms:\n{}",
        h.trace()
    );
    let again = first_promote(&h, A).unwrap_or_else(|| panic!("{}", h.trace()));
    assert!(
        again >= first + hold - 1_000,
        "{} ms after the first",
        again - first
    );
    assert!(
        !h.audits_of(A, "failover held back").is_empty(),
        "{}",
        h.trace()
    );
    assert!(h.db[A].writable, "{}", h.trace());
    h.assert_safe();
}

/// A site about to take over checks its own service first: with its own database down, the
/// recovery site does not fail over (the critical alert stays raised).
#[test]
fn a_site_whose_own_service_is_down_does_not_take_over() {
    let mut h = Harness::new(config(1));
    h.run(20_000);
    h.db[B].service_up = false;
    h.run(5_000);
    h.kill(A);
    h.run(60_000);
    assert!(h.commands_of(B, is_promote).is_empty(), "{}", h.trace());
    assert!(
        !h.audits_of(B, "failover held back").is_empty(),
        "{}",
        h.trace()
    );
    assert!(h.raised("primary_down") >= 1);
    // Its service comes back: the takeover follows.
    h.db[B].service_up = true;
    assert!(h.run_until(60_000, |h| h.db[B].writable), "{}", h.trace());
    h.assert_safe();
}

/// Issue 13, bug 5: a plain link cut between the sites made the primary raise a *critical*
/// `recovery_site_lost` although the arbiter still heard the recovery site. The primary asks
/// the arbiter: a cut link is a failure (protection paused), a silent recovery site critical.
#[test]
fn a_cut_link_is_not_a_lost_recovery_site_but_a_dead_recovery_site_is() {
    let cfg = config(1);
    let after = cfg.failover.peer_lost_after_ms;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.cut(A, B);
    h.run(after + 10_000);
    let lost = h.alerts_of("recovery_site_lost");
    assert_eq!(lost.len(), 1, "{}", h.trace());
    assert_eq!(lost[0].severity, lifeboat_core::alert::Severity::Failure);
    assert!(
        lost[0].text.contains("arbiter still hears it"),
        "{}",
        lost[0].text
    );
    h.heal(A, B);
    h.run(10_000);
    assert!(h
        .alerts_of("recovery_site_lost")
        .iter()
        .any(|a| a.change == AlertChange::Cleared));
    // The recovery site itself is lost: critical.
    h.kill(B);
    h.run(after + 10_000);
    let raised: Vec<_> = h
        .alerts_of("recovery_site_lost")
        .into_iter()
        .filter(|a| a.change == AlertChange::Raised)
        .collect();
    assert_eq!(raised.len(), 2, "{}", h.trace());
    assert_eq!(raised[1].severity, lifeboat_core::alert::Severity::Critical);
    h.assert_safe();
}

/// Issue 13, bug 5: with probes every 3 s a single lost arbiter query raised
/// `arbiter_unreachable` (the next query already counted it as timed out). Two unanswered
/// queries in a row, over two arbiter timeouts, are needed; a real outage still raises it.
#[test]
fn one_lost_arbiter_query_is_no_outage_at_any_probe_cadence_but_a_real_one_is_reported() {
    for every in [1_000, 3_000, 5_000] {
        let mut cfg = config(1);
        cfg.failover.probe_every_ms = every;
        let mut h = Harness::new(cfg);
        h.run(20_000);
        // Exactly one query from the recovery site is lost.
        let before = h.commands.len();
        h.cut_one_way(B, ARB);
        h.run(every);
        h.heal_all();
        let _ = before;
        h.run(60_000);
        assert_eq!(
            h.raised("arbiter_unreachable"),
            0,
            "probes every {every} ms:\n{}",
            h.trace()
        );
        h.cut(B, ARB);
        h.run(30_000);
        assert_eq!(
            h.raised("arbiter_unreachable"),
            1,
            "probes every {every} ms:\n{}",
            h.trace()
        );
        h.assert_safe();
    }
}

/// Issue 13, bug 5: the rebuild's `reseed` alert was one warning "For database [every
/// database]"; the catalogue says one failure per database. Each clears with its database.
#[test]
fn a_rebuild_raises_one_reseed_failure_per_database_and_clears_each() {
    let mut h = Harness::new(config(2));
    h.run(20_000);
    h.kill(A);
    assert!(h.run_until(60_000, |h| h.db[B].writable), "{}", h.trace());
    h.revive(A);
    assert!(
        h.run_until(120_000, |h| h.sites[A].role() == Role::Secondary),
        "{}",
        h.trace()
    );
    let reseeds: Vec<_> = h
        .alerts
        .iter()
        .filter(|(n, _, a)| *n == A && a.id.kind.as_str() == "reseed")
        .map(|(_, _, a)| a)
        .collect();
    let raised: Vec<_> = reseeds
        .iter()
        .filter(|a| a.change == AlertChange::Raised)
        .collect();
    assert_eq!(raised.len(), 2, "{reseeds:?}");
    for (i, a) in raised.iter().enumerate() {
        assert_eq!(a.id.db, Some(DbId(i as u32)));
        assert_eq!(a.severity, lifeboat_core::alert::Severity::Failure);
        assert!(
            a.text.starts_with(&format!("For database [db{i}]")),
            "{}",
            a.text
        );
    }
    assert_eq!(
        reseeds
            .iter()
            .filter(|a| a.change == AlertChange::Cleared)
            .count(),
        2,
        "{reseeds:?}"
    );
    h.assert_safe();
}

/// Issue 13, bug 6: a log damaged at the source was re-shipped every minute to the end of the
/// run although a later full had already carried the recovery site past it. The recovery site
/// says how far it restored; the primary stops shipping what it passed.
#[test]
fn a_damaged_log_a_later_full_superseded_is_no_longer_shipped() {
    let mut cfg = config(1);
    cfg.restore.reseed_after_minutes = 1;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.db[A].damage_next_log = true;
    h.run(10_000);
    let key = *h.damaged.iter().next().expect("a log was damaged");
    let past = |h: &Harness| {
        h.sites[B].state().dbs[0]
            .position
            .is_some_and(|p| p >= key.lsn_end)
    };
    assert!(
        h.run_until(600_000, past),
        "the recovery site never got past it:\n{}",
        h.trace()
    );
    let passed_at = h.t;
    h.run(600_000);
    let ships_of = |h: &Harness| {
        h.commands_of(
            A,
            |c| matches!(c, Command::Ship { artifact, .. } if artifact.key == key),
        )
    };
    let late: Vec<_> = ships_of(&h)
        .into_iter()
        .filter(|(t, _)| *t > passed_at + 5_000)
        .collect();
    assert!(
        late.is_empty(),
        "still shipped {} times:\n{}",
        late.len(),
        h.trace()
    );
    assert!(ships_of(&h).len() >= 2, "it was re-shipped while needed");
    assert_eq!(
        h.audits_of(A, "not shipped: superseded").len(),
        1,
        "{}",
        h.trace()
    );
    h.assert_safe();
}

/// Issue 13, bug 5: a link down 5 s of every 7 s for an hour raised nothing (one good probe
/// reset the count). A flapping link is reported once, whatever the probe cadence, and the
/// alert stays active while it flaps.
#[test]
fn a_link_down_five_seconds_of_every_seven_is_reported_once_and_kept_while_it_flaps() {
    // With probes every 2 s and five failures needed, every 2 s up-window holds one good probe:
    // no run of failures ever makes the primary look unhealthy.
    for (every, count) in [(1_000, 3), (2_000, 5)] {
        let mut cfg = config(1);
        cfg.failover.probe_every_ms = every;
        cfg.failover.unhealthy_count = count;
        let mut h = Harness::new(cfg);
        h.run(20_000);
        let start = h.t;
        let mut raised_at = None;
        while h.t < start + 600_000 {
            h.cut(A, B);
            h.run(5_000);
            h.heal(A, B);
            h.run(2_000);
            let active = h.sites[B]
                .state()
                .alerts
                .iter()
                .any(|(id, _)| id.kind.as_str() == "link_down");
            if active && raised_at.is_none() {
                raised_at = Some(h.t);
            }
            if raised_at.is_some() {
                assert!(
                    active,
                    "cleared while flapping at {} (probes {every} ms)",
                    h.t
                );
            }
        }
        let raised = raised_at.unwrap_or_else(|| panic!("never raised (probes {every} ms)"));
        assert!(
            raised - start <= 120_000,
            "raised {} ms after the flapping began",
            raised - start
        );
        let raises = h
            .alerts_of("link_down")
            .iter()
            .filter(|a| a.change == AlertChange::Raised)
            .count();
        assert_eq!(raises, 1, "probes every {every} ms");
        assert_no_failover(&h);
        h.assert_safe();
    }
}

/// Swarm seeds 207718 and 207814: a link flapping at nearly the probe period let every probe of
/// a whole minute land in its up windows, `link_down` cleared, and was raised again a minute
/// later. A link that was in trouble for minutes must stay up as long (up to ten minutes)
/// before its alert clears; a short outage still clears after a minute.
#[test]
fn a_link_that_flapped_for_minutes_needs_as_long_a_calm_before_link_down_clears() {
    let link_down_active = |h: &Harness| {
        h.sites[B]
            .state()
            .alerts
            .iter()
            .any(|(id, _)| id.kind.as_str() == "link_down")
    };
    let flap = |h: &mut Harness, ms: Millis| {
        let start = h.t;
        while h.t < start + ms {
            h.cut(A, B);
            h.run(5_000);
            h.heal(A, B);
            h.run(2_000);
        }
    };
    let mut h = Harness::new(config(1));
    h.run(20_000);
    flap(&mut h, 8 * 60_000);
    assert!(link_down_active(&h), "{}", h.trace());
    // Seventy seconds in which every probe gets through, then the flapping goes on.
    h.run(70_000);
    assert!(
        link_down_active(&h),
        "cleared after 70 s of calm:\n{}",
        h.trace()
    );
    flap(&mut h, 3 * 60_000);
    let raises = h
        .alerts_of("link_down")
        .iter()
        .filter(|a| a.change == AlertChange::Raised)
        .count();
    assert_eq!(raises, 1, "{}", h.trace());
    // Once it stays up as long as it flapped, the alert clears.
    h.run(12 * 60_000);
    assert!(!link_down_active(&h), "{}", h.trace());
    assert_no_failover(&h);
    h.assert_safe();
}

/// Swarm seed 210385: the new primary of a switchover was cut off a second after it took the
/// writes and wrote on until its lease ran out; the old primary failed over and reported a loss
/// within [0, 0], because the new primary had not reported a write rate yet. The upper bound
/// uses the highest rate either site saw as primary: the same application writes to both.
#[test]
fn a_failover_right_after_a_switchover_bounds_the_loss_by_the_rate_seen_before_it() {
    let mut h = Harness::new(config(1));
    h.run(60_000);
    h.operator(A, OperatorRequest::Switchover);
    assert!(h.run_until(30_000, |h| h.db[B].writable), "{}", h.trace());
    h.run(1_000);
    // The new primary is cut off from everyone and writes until its lease runs out.
    h.cut(B, A);
    h.cut(B, ARB);
    assert!(h.run_until(180_000, |h| h.db[A].writable), "{}", h.trace());
    h.run(30_000);
    let missing = h.missing_at(A).len() as u64;
    assert!(
        missing > 0,
        "the test needs writes lost at B:\n{}",
        h.trace()
    );
    let Some(Report::Failover {
        rpo_lower,
        rpo_upper,
        ..
    }) = h.failover_report().cloned()
    else {
        panic!("no failover report:\n{}", h.trace())
    };
    assert!(rpo_lower <= missing, "lower {rpo_lower} > {missing} lost");
    assert!(
        rpo_upper.is_none_or(|u| u >= missing),
        "reported at most {rpo_upper:?} lost, but {missing} acknowledged writes are missing"
    );
    h.assert_safe();
}

/// Swarm seeds 235 and 222: a primary that takes its lease up again after resigning it raised
/// `arbiter_unreachable` with its first renewal, counting the arbiter's silence from its last
/// grant before the resign, although it had asked nothing meanwhile.
#[test]
fn a_primary_taking_its_lease_up_again_does_not_call_a_silent_arbiter_unreachable() {
    let mut cfg = config(1);
    cfg.failover.local_restart = true;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    h.db[A].service_up = false;
    h.db[A].restart_fixes_service = false;
    assert!(
        h.run_until(60_000, |h| !h.audits_of(A, "resign").is_empty()),
        "{}",
        h.trace()
    );
    h.run(20_000);
    h.db[A].service_up = true;
    h.run(30_000);
    assert_eq!(h.raised("arbiter_unreachable"), 0, "{}", h.trace());
    // A real silence is still reported.
    h.kill_arbiter();
    h.run(60_000);
    assert!(h.raised("arbiter_unreachable") >= 1, "{}", h.trace());
}

/// Swarm seed 7291: a forced failover computed its loss bounds when it gave itself the epoch,
/// but the old primary (its lease never ran out) wrote on until the external fence took hold
/// minutes later; the report said [5110, 9993] while 13,911 were lost. The bounds of a forced
/// failover count up to the fence.
#[test]
fn a_forced_failover_bounds_the_loss_up_to_its_external_fence() {
    let mut cfg = config(1);
    cfg.failover.fence_hook = true;
    let mut h = Harness::new(cfg);
    h.fence_delay = 120_000;
    h.run(30_000);
    // The recovery site loses the primary and the arbiter; the primary keeps its arbiter.
    h.cut(B, A);
    h.cut(B, ARB);
    h.run(60_000);
    h.operator(B, OperatorRequest::Failover { force: true });
    assert!(h.run_until(300_000, |h| h.db[B].writable), "{}", h.trace());
    h.run(10_000);
    let missing = h.missing_at(B).len() as u64;
    let Some(Report::Failover {
        rpo_upper, forced, ..
    }) = h.failover_report().cloned()
    else {
        panic!("no failover report:\n{}", h.trace())
    };
    assert!(forced);
    assert!(
        rpo_upper.is_none_or(|u| u >= missing),
        "reported at most {rpo_upper:?} lost, but {missing} acknowledged writes are missing"
    );
}

/// Swarm seed 60335: a failover's external fence hook that failed or hung held the failover,
/// with no site accepting writes, for 22 hours and no alert said why. Each failed or overdue
/// attempt raises (then updates) a critical `failover` alert about the site to fence; the
/// hook's success clears it and the failover completes.
#[test]
fn a_failing_fence_hook_raises_a_critical_alert_until_it_works() {
    let mut cfg = config(1);
    cfg.failover.fence_hook = true;
    let mut h = Harness::new(cfg);
    h.fence_hook_fails = 3;
    h.run(30_000);
    h.kill(A);
    assert!(
        h.run_until(3_600_000, |h| h.db[B].writable),
        "{}",
        h.trace()
    );
    h.run(10_000);
    let events = h.alerts_of("failover");
    let about_a: Vec<_> = events
        .iter()
        .filter(|a| a.id.subject == lifeboat_core::alert::Subject::Site(SiteId(0)))
        .collect();
    assert_eq!(
        about_a
            .iter()
            .filter(|a| a.change == lifeboat_core::alert::AlertChange::Raised)
            .count(),
        1,
        "{about_a:?}"
    );
    let raised = about_a[0];
    assert_eq!(raised.severity, lifeboat_core::alert::Severity::Critical);
    assert!(
        raised
            .text
            .contains("waits for the external fence of site [primary]")
            && raised.text.contains("exited with status 7"),
        "{}",
        raised.text
    );
    assert!(about_a.len() >= 3, "updated at each attempt: {about_a:?}");
    assert_eq!(
        about_a.last().map(|a| a.change),
        Some(lifeboat_core::alert::AlertChange::Cleared),
        "{about_a:?}"
    );
    assert!(h.failover_report().is_some());
}

/// Swarm seed 232301: the arbiter came up 4 s after the primary, just after the primary's
/// second renewal; the primary raised `arbiter_unreachable` as it sent its third, a renewal
/// period later, and the arbiter answered it 24 ms after. The primary asks again once a
/// renewal goes unanswered and judges by that answer; a real silence is still reported.
#[test]
fn an_arbiter_that_comes_up_after_the_primary_is_not_called_unreachable() {
    let mut cfg = config(1);
    cfg.lease.renew_every_ms = 4_000;
    cfg.lease.arbiter_timeout_ms = 3_000;
    let mut h = Harness::new(cfg);
    h.kill_arbiter();
    h.run(4_100);
    h.restart_arbiter();
    h.run(30_000);
    assert_eq!(h.raised("arbiter_unreachable"), 0, "{}", h.trace());
    assert!(h.db[A].writable, "{}", h.trace());
    h.kill_arbiter();
    h.run(30_000);
    assert!(h.raised("arbiter_unreachable") >= 1, "{}", h.trace());
}

/// A primary whose grants stop coming back (the arbiter-to-primary direction cut) pauses its
/// renewals so the lease lapses and the recovery site can take over. With confirmation on, that
/// takeover waits for an operator: the pause must outlast the question, or the primary renews
/// again, the takeover ends as "healthy again", and a confirmation near the end of the window
/// finds nothing to confirm (swarm seed 92380).
#[test]
fn a_primary_cut_off_from_its_grants_stays_quiet_while_the_operator_is_asked() {
    let mut h = Harness::new(confirm_config(OnConfirmTimeout::Abort));
    h.run(30_000);
    h.cut_one_way(ARB, A);
    assert!(
        h.run_until(120_000, |h| h.sites[B].role() == Role::Promoting),
        "{}",
        h.trace()
    );
    // The operator answers late in the window (40 s).
    h.run(35_000);
    assert_eq!(h.sites[B].role(), Role::Promoting, "{}", h.trace());
    h.operator(B, OperatorRequest::ConfirmFailover);
    assert!(
        h.run_until(30_000, |h| h.sites[B].role() == Role::Primary),
        "{}",
        h.trace()
    );
    assert!(h.db[B].writable);
    h.assert_safe();
}

/// The same cut with nobody answering: the question times out (configured to abort) and is not
/// asked again while the primary's lease stays lapsed, though its service answers every probe.
#[test]
fn an_unanswered_question_about_a_primary_cut_off_from_its_grants_is_not_asked_again_at_once() {
    let mut h = Harness::new(confirm_config(OnConfirmTimeout::Abort));
    h.fenced_service_answers = true;
    h.run(30_000);
    h.cut_one_way(ARB, A);
    assert!(
        h.run_until(120_000, |h| h.sites[B].role() == Role::Promoting),
        "{}",
        h.trace()
    );
    let asked = h.t;
    assert!(h.run_until(60_000, |h| h.sites[B].role() == Role::Secondary));
    let aborts = h.audits_of(B, "abort");
    assert_eq!(aborts.len(), 1, "{}", h.trace());
    assert!(aborts[0].why.contains("confirmation"), "{}", aborts[0].why);
    assert!(
        h.audits_of(B, "failover")[0]
            .why
            .contains("although its service answers here"),
        "{}",
        h.trace()
    );
    // The primary stays quiet a while longer: no second question in that time.
    h.run(20_000);
    assert_eq!(
        h.audits_of(B, "failover").len(),
        1,
        "asked again at once after the question at {asked}:\n{}",
        h.trace()
    );
    assert!(h.commands_of(B, is_promote).is_empty());
    h.assert_safe();
}
