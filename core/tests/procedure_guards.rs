//! The guards of the probes, the failover and switchover procedures and the restore triggers,
//! one rule per test (issue 20). Every test drives one `SiteEngine` through a scripted world:
//! the primary's probes answer as the test says, the arbiter answers queries with the view the
//! test gives it (or not at all), commands complete a few milliseconds after they are issued.
//! Each test names the rule it guards and asserts on the engine's own outputs (messages, alerts,
//! commands, role), so that weakening the guard (`&&` to `||`, `<` to `<=`, a call deleted, a
//! timer re-armed at the wrong time) fails it.
//!
//! Timing (the defaults): probes every 1 000 ms ± 20 %, three failed probes over 3 000 ms make
//! the primary unhealthy, arbiter timeout 3 000 ms, lease 10 000 ms, renewals every 2 000 ms.

use lifeboat_core::alert::{AlertChange, AlertKind, Severity};
use lifeboat_core::artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
use lifeboat_core::engine::{OpEntry, OpPurpose, Role, SiteState, Step};
use lifeboat_core::protocol::{
    ArbiterView, Command, Failure, Heartbeat, Input, Message, OperatorRequest, Output, Peer,
};
use lifeboat_core::{Checksum, Config, DbId, Epoch, Lsn, Millis, OpId, UtcMillis};

mod guards;
use guards::*;

/// The arbiter sees the primary renewing.
fn renewing() -> ArbiterView {
    view(1, Some(A), true, false)
}

/// The arbiter reports the primary's lease lapsed.
fn lapsed() -> ArbiterView {
    view(1, Some(A), false, true)
}

fn heartbeat(epoch: u64, seq: u64, writable: bool) -> Message {
    Message::Heartbeat(Heartbeat {
        epoch: Epoch(epoch),
        seq,
        backups_paused: false,
        writable,
        positions: Vec::new(),
        write_rate_per_sec: 0,
    })
}

fn is_acquire(m: &Message) -> bool {
    matches!(m, Message::Acquire { .. })
}

fn art(kind: ArtifactKind, s: u64, e: u64, epoch: u64) -> ArtifactMeta {
    ArtifactMeta {
        key: ArtifactKey {
            db: DbId(0),
            epoch: Epoch(epoch),
            lsn_start: Lsn(s),
            lsn_end: Lsn(e),
            kind,
        },
        base_full: None,
        created_utc: UtcMillis(1_795_305_600_000 + e as i64 * 1_000),
        size: 1,
        checksum: Checksum(e * 31 + s),
        retry: 0,
    }
}

fn received(meta: ArtifactMeta) -> Input {
    Input::ArtifactReceived {
        meta,
        computed: meta.checksum,
        from: A,
    }
}

// ================================================================ probes

#[test]
fn a_primary_lost_while_the_arbiter_is_silent_raises_a_critical_primary_down() {
    let mut s = Site::secondary();
    s.run_until(5_000);
    assert!(s.raised(AlertKind::PrimaryDown).is_empty());
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.run(8_000);
    let down = s.raised(AlertKind::PrimaryDown);
    assert_eq!(down.len(), 1, "{down:#?}");
    assert_eq!(down[0].1.severity, Severity::Critical);
    // Without a fresh view nothing is decided: no failover, no dead link.
    assert!(s.to_arbiter(is_acquire).is_empty());
    assert_eq!(s.role(), Role::Secondary);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
}

#[test]
fn a_primary_lost_while_the_arbiter_reports_its_lease_lapsed_raises_a_critical_primary_down_and_fails_over(
) {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(5_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.arbiter = Some(lapsed());
    s.run(8_000);
    let down = s.raised(AlertKind::PrimaryDown);
    assert_eq!(down.len(), 1, "{down:#?}");
    assert_eq!(down[0].1.severity, Severity::Critical);
    assert!(!s.to_arbiter(is_acquire).is_empty());
    assert_eq!(s.role(), Role::Promoting);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
}

#[test]
fn an_arbiter_view_older_than_the_arbiter_timeout_plus_a_probe_is_not_used_to_decide() {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(5_000);
    // The arbiter goes silent, then the primary is lost: the last view (the primary renewing)
    // grows old. Read as fresh it would make this a dead link.
    s.arbiter = None;
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.run(15_000);
    assert!(
        s.raised(AlertKind::LinkDown).is_empty(),
        "a stale view that saw the primary renewing is no evidence of a dead link"
    );
    assert_eq!(s.raised(AlertKind::PrimaryDown).len(), 1);
    assert_eq!(s.raised(AlertKind::ArbiterUnreachable).len(), 1);
}

#[test]
fn a_stale_view_reporting_the_lease_lapsed_starts_no_failover_of_an_unhealthy_primary() {
    let mut s = Site::secondary();
    s.run_until(15_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    // The arbiter said "lapsed" long ago and has been silent since.
    let old = s.now - 10_000;
    s.edit(|st| {
        st.peer.arbiter_view = Some(lapsed());
        st.peer.arbiter_view_at = Some(old);
    });
    s.run(8_000);
    assert!(s.to_arbiter(is_acquire).is_empty(), "{:?}", s.log);
    assert_eq!(s.role(), Role::Secondary);
    assert!(s.e.state().procedure.is_none());
    // It is still reported: the primary is down, whatever the arbiter may think.
    assert_eq!(s.raised(AlertKind::PrimaryDown).len(), 1);
}

#[test]
fn a_stale_view_reporting_the_lease_lapsed_starts_no_takeover_of_a_primary_that_answers() {
    let mut s = Site::secondary();
    s.run_until(15_000);
    let old = s.now - 10_000;
    s.edit(|st| {
        st.peer.arbiter_view = Some(lapsed());
        st.peer.arbiter_view_at = Some(old);
    });
    s.run(8_000);
    assert!(s.to_arbiter(is_acquire).is_empty(), "{:?}", s.log);
    assert_eq!(s.role(), Role::Secondary);
    assert!(s.raised(AlertKind::PrimaryDown).is_empty());
}

#[test]
fn a_fresh_view_reporting_the_lease_lapsed_takes_over_from_a_primary_that_answers() {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(5_000);
    assert!(s.to_arbiter(is_acquire).is_empty());
    s.arbiter = Some(lapsed());
    s.run(3_000);
    assert!(!s.to_arbiter(is_acquire).is_empty());
    assert_eq!(s.role(), Role::Promoting);
    assert_eq!(s.raised(AlertKind::PrimaryDown).len(), 1);
}

#[test]
fn an_outstanding_arbiter_query_is_not_sent_again_before_the_arbiter_timeout() {
    let mut s = Site::secondary();
    s.run_until(12_000);
    let ticks = s.probe_ticks();
    let queries = s.queries();
    // As it starts the site tells the arbiter its epoch, without waiting for an answer.
    assert_eq!(queries[0], 0, "{queries:?}");
    let queries = queries[1..].to_vec();
    let timeout = s.cfg.lease.arbiter_timeout_ms;
    // The first query goes out with the first probe; it stays outstanding (unanswered) and
    // is asked again at the first probe tick at least `arbiter_timeout_ms` after it, and then
    // at every tick (the outstanding query counts from the first unanswered one).
    let first = ticks[0];
    let expected: Vec<Millis> = ticks
        .iter()
        .copied()
        .filter(|&t| t == first || t - first >= timeout)
        .collect();
    assert_eq!(queries, expected, "probe ticks {ticks:?}");
    assert!(ticks.iter().any(|&t| t > first && t - first < timeout));
}

#[test]
fn one_unanswered_query_is_no_outage_but_two_over_two_arbiter_timeouts_are() {
    let mut s = Site::secondary();
    s.run_until(12_000);
    // The first query after the one that tells the arbiter this site's epoch as it starts.
    let first = s.queries()[1];
    let raised = s.raised(AlertKind::ArbiterUnreachable);
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let at = raised[0].0;
    let timeout = s.cfg.lease.arbiter_timeout_ms;
    assert!(
        at - first >= 2 * timeout,
        "raised {} ms after the first query",
        at - first
    );
    // Raised at the first probe tick that satisfies both conditions.
    let ticks = s.probe_ticks();
    let due = ticks
        .iter()
        .copied()
        .find(|&t| t - first >= 2 * timeout)
        .unwrap();
    assert_eq!(at, due, "ticks {ticks:?}");
    // The arbiter answers again: the alert clears.
    s.arbiter = Some(renewing());
    s.run(3_000);
    assert!(s
        .alerts(AlertKind::ArbiterUnreachable)
        .iter()
        .any(|(_, a)| a.change == AlertChange::Cleared));
}

#[test]
fn the_secondary_learns_a_newer_epoch_and_its_holder_from_the_arbiters_view() {
    let mut s = Site::secondary();
    s.arbiter = Some(view(3, Some(A), true, false));
    s.run_until(2_500);
    assert_eq!(s.e.epoch(), Epoch(3));
    assert_eq!(s.e.state().holder, A);
    assert_eq!(s.audits("learn epoch").len(), 1);
}

#[test]
fn a_switchover_target_stays_on_a_heartbeat_saying_the_primary_still_refuses_writes() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(100))],
    });
    assert_eq!(s.role(), Role::SwitchoverTarget);
    s.hear_primary(heartbeat(1, 7, false));
    assert_eq!(s.role(), Role::SwitchoverTarget, "{:?}", s.log);
    assert!(s.audits("switchover aborted").is_empty());
    s.hear_primary(heartbeat(1, 8, true));
    assert_eq!(s.role(), Role::Secondary);
    assert_eq!(s.audits("switchover aborted").len(), 1);
}

#[test]
fn a_secondary_is_not_disturbed_by_a_heartbeat_saying_the_primary_writes() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    s.hear_primary(heartbeat(1, 7, true));
    assert_eq!(s.role(), Role::Secondary);
    assert!(s.audits("switchover aborted").is_empty());
}

// ================================================================ planned switchover

/// The initial primary, holding its lease, with the recovery site heard just now.
fn primary(cfg: Config) -> Site {
    let mut s = Site::unstarted(cfg, A);
    s.grants = true;
    s.input(Input::Tick);
    s.run_until(1_000);
    assert_eq!(s.role(), Role::Primary, "{:?}", s.log);
    s.message(Peer::Site(B), Message::HeartbeatAck { seq: 0 });
    s
}

fn is_final(m: &Message) -> bool {
    matches!(m, Message::SwitchoverFinal { .. })
}

/// A primary in a switchover, waiting for the target to restore the final positions.
fn awaiting_ready(cfg: Config) -> (Site, Millis) {
    let mut s = primary(cfg);
    let started = s.now;
    s.input(Input::Operator(OperatorRequest::Switchover));
    assert_eq!(s.role(), Role::SwitchingOver);
    s.run(100);
    assert_eq!(s.step(), Some(Step::AwaitReady), "{:?}", s.log);
    assert_eq!(s.to_peer(is_final).len(), 1);
    (s, started)
}

#[test]
fn a_lost_switchover_final_is_said_again_every_arbiter_timeout() {
    let (mut s, _) = awaiting_ready(cfg());
    let first = s.to_peer(is_final)[0].0;
    s.run(10_000);
    let times: Vec<Millis> = s.to_peer(is_final).iter().map(|(t, _)| *t).collect();
    let t = s.cfg.lease.arbiter_timeout_ms;
    assert_eq!(times, vec![first, first + t, first + 2 * t, first + 3 * t]);
    assert_eq!(s.role(), Role::SwitchingOver);
    assert!(s
        .to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
        .is_empty());
}

#[test]
fn a_switchover_the_target_never_answers_aborts_at_its_timeout_and_writes_resume() {
    let (mut s, started) = awaiting_ready(cfg());
    let until = started + s.cfg.failover.switchover_timeout_ms;
    s.run_until(until - 1);
    assert_eq!(s.role(), Role::SwitchingOver);
    assert!(s.audits("switchover aborted").is_empty());
    s.run_until(until + 50);
    assert_eq!(s.audits("switchover aborted"), vec![until]);
    let aborted = s.to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }));
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].0, until);
    assert_eq!(s.role(), Role::Primary);
    assert!(s.e.writable());
    // Said again until then, never after it.
    let last_final = s.to_peer(is_final).last().unwrap().0;
    assert!(last_final < until);
}

#[test]
fn the_final_positions_go_to_the_target_and_its_ready_starts_the_hand_off_at_the_arbiter() {
    let (mut s, _) = awaiting_ready(cfg());
    s.grants = false;
    s.message(Peer::Site(B), Message::SwitchoverReady { epoch: Epoch(1) });
    let handoffs = s.to_arbiter(|m| matches!(m, Message::Handoff { .. }));
    assert_eq!(handoffs.len(), 1);
    assert!(matches!(
        handoffs[0].1,
        Message::Handoff {
            epoch: Epoch(1),
            to: B,
            ..
        }
    ));
    // Unanswered: asked again every arbiter timeout, with a new request id.
    let at = s.now;
    s.run(3_000 * 2 + 10);
    let handoffs = s.to_arbiter(|m| matches!(m, Message::Handoff { .. }));
    let times: Vec<Millis> = handoffs.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![at, at + 3_000, at + 6_000]);
    let reqs: std::collections::BTreeSet<u64> = handoffs
        .iter()
        .map(|(_, m)| match m {
            Message::Handoff { req, .. } => *req,
            _ => 0,
        })
        .collect();
    assert_eq!(reqs.len(), 3);
}

#[test]
fn a_ready_for_another_epoch_or_before_the_final_positions_starts_no_hand_off() {
    let (mut s, _) = awaiting_ready(cfg());
    s.grants = false;
    s.message(Peer::Site(B), Message::SwitchoverReady { epoch: Epoch(2) });
    assert!(s
        .to_arbiter(|m| matches!(m, Message::Handoff { .. }))
        .is_empty());
    assert_eq!(s.step(), Some(Step::AwaitReady));
    // A primary not switching over ignores it.
    let mut p = primary(cfg());
    p.message(Peer::Site(B), Message::SwitchoverReady { epoch: Epoch(1) });
    assert!(p
        .to_arbiter(|m| matches!(m, Message::Handoff { .. }))
        .is_empty());
    assert_eq!(p.role(), Role::Primary);
}

#[test]
fn the_handed_off_primary_becomes_the_secondary_of_the_next_epoch() {
    let (mut s, _) = awaiting_ready(cfg());
    s.message(Peer::Site(B), Message::SwitchoverReady { epoch: Epoch(1) });
    s.run(100);
    assert_eq!(s.role(), Role::Secondary);
    assert_eq!(s.e.epoch(), Epoch(2));
    assert_eq!(s.e.state().holder, B);
    assert_eq!(s.audits("handed off").len(), 1);
    assert!(!s.e.writable());
}

#[test]
fn without_an_arbiter_the_hand_off_gives_the_target_the_next_epoch() {
    let mut c = cfg();
    c.arbiter = false;
    let mut s = Site::new(c, A);
    s.run_until(1_000);
    assert_eq!(s.role(), Role::Primary);
    s.message(Peer::Site(B), Message::HeartbeatAck { seq: 0 });
    s.input(Input::Operator(OperatorRequest::Switchover));
    s.run(100);
    assert_eq!(s.step(), Some(Step::AwaitReady), "{:?}", s.log);
    s.message(Peer::Site(B), Message::SwitchoverReady { epoch: Epoch(1) });
    let notices = s.to_peer(|m| matches!(m, Message::EpochNotice { .. }));
    assert_eq!(
        notices.last().map(|(_, m)| m.clone()),
        Some(Message::EpochNotice {
            epoch: Epoch(2),
            holder: B
        })
    );
    assert!(s.sent(Peer::Arbiter).is_empty());
    assert_eq!(s.e.epoch(), Epoch(2));
    assert_eq!(s.role(), Role::Secondary);
}

#[test]
fn a_target_that_is_rebuilding_refuses_the_switchover_at_once() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    s.edit(|st| st.role = Role::Rebuilding);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(0))],
    });
    let aborted = s.to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }));
    assert_eq!(aborted.len(), 1, "{:?}", s.log);
    assert!(matches!(
        &aborted[0].1,
        Message::SwitchoverAborted { epoch: Epoch(1), reason } if reason.contains("rebuilding")
    ));
    assert_eq!(s.role(), Role::Rebuilding);
}

#[test]
fn final_positions_of_another_epoch_are_ignored_without_an_answer() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    for role in [Role::Secondary, Role::Rebuilding] {
        s.edit(|st| st.role = role);
        s.hear_primary(Message::SwitchoverFinal {
            epoch: Epoch(2),
            positions: vec![(DbId(0), Lsn(0))],
        });
        assert_eq!(s.role(), role);
        assert!(s.e.state().procedure.is_none());
    }
    assert!(s
        .to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
        .is_empty());
}

#[test]
fn a_secondary_given_the_final_positions_becomes_the_target_and_says_ready_once_restored() {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    s.input(received(art(ArtifactKind::Log, 0, 50, 1)));
    s.run_until(2_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(80))],
    });
    assert_eq!(s.role(), Role::SwitchoverTarget);
    assert_eq!(s.step(), Some(Step::ReachFinal));
    s.run(1_000);
    assert!(s
        .to_peer(|m| matches!(m, Message::SwitchoverReady { .. }))
        .is_empty());
    s.input(received(art(ArtifactKind::Log, 50, 80, 1)));
    s.run(100);
    assert_eq!(s.step(), Some(Step::AwaitEpoch));
    let ready = s.to_peer(|m| matches!(m, Message::SwitchoverReady { .. }));
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].1, Message::SwitchoverReady { epoch: Epoch(1) });
}

// ================================================================ unplanned failover

/// A recovery site whose primary is lost while the arbiter reports its lease lapsed: the
/// failover starts at the next probe evaluation.
fn losing_the_primary(cfg: Config) -> Site {
    let mut s = Site::unstarted(cfg, B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.arbiter = Some(lapsed());
    s
}

fn run_to_step(s: &mut Site, ms: Millis, pred: impl Fn(&Step) -> bool) {
    let end = s.now + ms;
    while s.now < end {
        if s.step().as_ref().is_some_and(&pred) {
            return;
        }
        s.run(10);
    }
    panic!("step not reached: {:?}\n{:?}", s.step(), s.log);
}

fn promotes(s: &Site) -> usize {
    s.commands(|c| matches!(c, Command::Promote { .. })).len()
}

/// Put an operation of `cmd`'s kind that is not the step's own into the engine and complete it.
fn complete_a_stale(s: &mut Site, cmd: Command) {
    let op = cmd.op().unwrap();
    let now = s.now;
    s.edit(|st| {
        st.ops.insert(
            op,
            OpEntry {
                cmd,
                issued_at: now,
                purpose: OpPurpose::Role,
            },
        );
    });
    s.input(Input::Completed { op, result: Ok(()) });
}

#[test]
fn only_the_completion_of_the_current_external_fence_advances_to_the_promotion() {
    let mut c = cfg();
    c.failover.fence_hook = true;
    let mut s = losing_the_primary(c);
    s.grants = true;
    s.role_ops_complete = false;
    run_to_step(&mut s, 10_000, |st| {
        matches!(st, Step::ExternalFence { .. })
    });
    let Some(Step::ExternalFence { op }) = s.step() else {
        unreachable!()
    };
    complete_a_stale(
        &mut s,
        Command::ExternalFence {
            op: OpId(9_999),
            target: A,
            epoch: Epoch(2),
        },
    );
    assert_eq!(s.step(), Some(Step::ExternalFence { op }));
    assert_eq!(promotes(&s), 0);
    s.input(Input::Completed { op, result: Ok(()) });
    assert!(matches!(s.step(), Some(Step::Promote { .. })));
    assert_eq!(promotes(&s), 1);
}

#[test]
fn only_the_completion_of_the_current_promotion_makes_the_site_primary() {
    let mut s = losing_the_primary(cfg());
    s.grants = true;
    s.role_ops_complete = false;
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Promote { .. }));
    let Some(Step::Promote { op }) = s.step() else {
        unreachable!()
    };
    complete_a_stale(
        &mut s,
        Command::Promote {
            op: OpId(9_999),
            epoch: Epoch(2),
        },
    );
    assert_eq!(s.role(), Role::Promoting);
    assert_eq!(s.step(), Some(Step::Promote { op }));
    s.input(Input::Completed { op, result: Ok(()) });
    assert_eq!(s.role(), Role::Primary);
}

#[test]
fn only_the_completion_of_the_current_identity_switch_finishes_the_failover() {
    let mut s = losing_the_primary(cfg());
    assert!(s.cfg.failover.switch_identity);
    s.grants = true;
    s.role_ops_complete = false;
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Promote { .. }));
    let Some(Step::Promote { op }) = s.step() else {
        unreachable!()
    };
    s.input(Input::Completed { op, result: Ok(()) });
    let Some(Step::SwitchIdentity { op }) = s.step() else {
        panic!("{:?}", s.step())
    };
    complete_a_stale(
        &mut s,
        Command::SwitchIdentity {
            op: OpId(9_999),
            to: B,
            epoch: Epoch(2),
        },
    );
    assert_eq!(s.step(), Some(Step::SwitchIdentity { op }));
    assert!(s.e.state().procedure.is_some());
    s.input(Input::Completed { op, result: Ok(()) });
    assert!(s.e.state().procedure.is_none());
    assert_eq!(s.alerts(AlertKind::Failover).len(), 1);
}

#[test]
fn a_failed_promotion_is_issued_again_with_the_same_id() {
    let mut s = losing_the_primary(cfg());
    s.grants = true;
    s.role_ops_complete = false;
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Promote { .. }));
    let Some(Step::Promote { op }) = s.step() else {
        unreachable!()
    };
    s.input(Input::Completed {
        op,
        result: Err(Failure {
            code: 1,
            message: "busy".into(),
            permanent: false,
        }),
    });
    assert_eq!(s.role(), Role::Promoting);
    assert_eq!(s.step(), Some(Step::Promote { op }));
    s.run(2 * s.cfg.restore.op_timeout_ms);
    let again = s.commands(|c| matches!(c, Command::Promote { op: o, .. } if *o == op));
    assert!(again.len() >= 2, "{again:?}");
}

#[test]
fn a_confirmation_step_waits_until_its_deadline_and_not_a_moment_longer() {
    let mut c = cfg();
    c.failover.confirm = true;
    c.failover.on_confirm_timeout = lifeboat_core::config::OnConfirmTimeout::Proceed;
    let mut s = losing_the_primary(c);
    s.grants = true;
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Confirm { .. }));
    let Some(Step::Confirm { until }) = s.step() else {
        unreachable!()
    };
    let started = s.audits("failover")[0];
    assert_eq!(until, started + s.cfg.failover.confirm_timeout_ms);
    // A restart in the middle looks at the step at once: it keeps waiting for the deadline
    // (re-armed there, not at the start of time: that would spin).
    s.restart();
    s.run_until(until - 10);
    assert!(
        matches!(s.step(), Some(Step::Confirm { .. })),
        "{:?}",
        s.step()
    );
    assert!(s.to_arbiter(is_acquire).is_empty());
    s.run_until(until + 100);
    assert_eq!(s.audits("failover confirmation timed out"), vec![until]);
    assert!(!s.to_arbiter(is_acquire).is_empty());
}

// ================================================================ restore triggers

fn is_restore_of(c: &Command, key: ArtifactKey) -> bool {
    matches!(c, Command::Restore { artifact, .. } | Command::Reseed { full: artifact, .. } if artifact.key == key)
}

#[test]
fn after_a_restart_a_restore_waiting_for_its_retry_starts_at_once() {
    let mut s = Site::secondary();
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    s.run_until(1_000);
    let log = art(ArtifactKind::Log, 0, 50, 1);
    s.fail_restores = 1;
    s.input(received(log));
    s.run(100);
    assert_eq!(s.commands(|c| is_restore_of(c, log.key)).len(), 1);
    assert_eq!(s.e.db(DbId(0)).unwrap().position, Some(Lsn(0)));
    // Its retry is a minute away; the process restarts 5 s later.
    assert!(s.cfg.restore.retry_delay_ms >= 60_000);
    s.run(5_000);
    s.restart();
    let restarted = s.now;
    s.run(100);
    let tries = s.commands(|c| is_restore_of(c, log.key));
    assert_eq!(tries.len(), 2, "{tries:?}");
    assert_eq!(tries[1].0, restarted);
    assert_eq!(s.e.db(DbId(0)).unwrap().position, Some(Lsn(50)));
}

#[test]
fn no_restore_starts_while_the_epoch_is_asked_for_and_an_aborted_takeover_resumes_them_at_once() {
    let mut s = losing_the_primary(cfg());
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Acquire { .. }));
    let started = s.audits("failover")[0];
    // Received during the takeover, past the drain: held back.
    let log = art(ArtifactKind::Log, 0, 50, 1);
    s.input(received(log));
    s.run(1_000);
    assert!(s.commands(|c| is_restore_of(c, log.key)).is_empty());
    // The arbiter keeps refusing past its patience: the takeover is aborted.
    let patience = s.cfg.lease.lease_ms + s.cfg.drift_margin() + s.cfg.lease.arbiter_timeout_ms;
    s.run_until(started + patience + 10);
    assert!(s.commands(|c| is_restore_of(c, log.key)).is_empty());
    s.message(
        Peer::Arbiter,
        Message::Denied {
            view: renewing(),
            req: 0,
            reason: "the holder's lease has not expired".into(),
        },
    );
    assert_eq!(s.role(), Role::Secondary, "{:?}", s.step());
    assert_eq!(s.audits("abort").len(), 1);
    let tries = s.commands(|c| is_restore_of(c, log.key));
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].0, s.now);
}

#[test]
fn a_rebuild_restores_a_full_of_the_new_epoch_already_received_at_once() {
    let mut s = Site::unstarted(cfg(), A);
    s.input(Input::Tick);
    s.run_until(500);
    assert_eq!(s.role(), Role::Fenced);
    let full = art(ArtifactKind::Full, 100, 100, 2);
    s.edit(|st| {
        st.dbs[0].insert(full, 400);
    });
    s.message(
        Peer::Site(B),
        Message::EpochNotice {
            epoch: Epoch(2),
            holder: B,
        },
    );
    assert_eq!(s.role(), Role::Rebuilding);
    let at = s.now;
    let tries = s.commands(|c| is_restore_of(c, full.key));
    assert_eq!(tries.len(), 1, "{:?}", s.log);
    assert_eq!(tries[0].0, at);
}

// ================================================================ probes: dead site, dead link, dead service

fn renewing_since(since_renewal_ms: Millis) -> ArbiterView {
    ArbiterView {
        since_renewal_ms: Some(since_renewal_ms),
        ..renewing()
    }
}

/// A recovery site watching the primary with the arbiter answering `view`; from t = 5 s the
/// primary's probes fail as given.
fn watching(view: ArbiterView, site_ok: bool, service_ok: bool) -> Site {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.arbiter = Some(view);
    s.primary_site_ok = site_ok;
    s.primary_service_ok = service_ok;
    s
}

#[test]
fn a_primary_unreachable_from_here_that_the_arbiter_sees_renewing_is_a_dead_link() {
    let mut s = watching(renewing(), false, false);
    s.run(10_000);
    assert_eq!(s.raised(AlertKind::LinkDown).len(), 1);
    assert_eq!(s.audits("no failover").len(), 1);
    assert!(s.raised(AlertKind::PrimaryDown).is_empty());
    assert!(s.to_arbiter(is_acquire).is_empty());
    assert_eq!(s.role(), Role::Secondary);
}

#[test]
fn a_dead_service_on_a_reachable_primary_the_arbiter_sees_renewing_is_reported_without_a_failover()
{
    let mut s = watching(renewing(), true, false);
    s.run(10_000);
    let down = s.raised(AlertKind::PrimaryDown);
    assert_eq!(down.len(), 1);
    assert_eq!(down[0].1.severity, Severity::Critical);
    assert_eq!(s.audits("no failover").len(), 1);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
    assert!(s.to_arbiter(is_acquire).is_empty());
    assert!(s
        .to_peer(|m| matches!(m, Message::RestartRequest { .. }))
        .is_empty());
}

#[test]
fn with_local_restart_a_dead_service_on_a_reachable_renewing_primary_is_restarted_there_first() {
    let mut c = cfg();
    c.failover.local_restart = true;
    let mut s = Site::unstarted(c, B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.primary_service_ok = false;
    s.run(10_000);
    let asked = s.to_peer(|m| matches!(m, Message::RestartRequest { .. }));
    assert_eq!(asked.len(), 1, "one restart per outage");
    assert!(matches!(s.step(), Some(Step::LocalRestart { .. })));
    assert_eq!(s.role(), Role::Promoting);
    assert!(s.to_arbiter(is_acquire).is_empty());
}

#[test]
fn a_renewing_view_whose_last_renewal_is_over_two_renewal_periods_old_decides_nothing() {
    let every = cfg().lease.renew_every_ms;
    let mut s = watching(renewing_since(2 * every + 1_000), false, false);
    s.run(10_000);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
    assert!(s.raised(AlertKind::PrimaryDown).is_empty());
    assert!(s.to_arbiter(is_acquire).is_empty());
    // The same view with a recent renewal: a dead link.
    let mut s = watching(renewing_since(every / 2), false, false);
    s.run(10_000);
    assert_eq!(s.raised(AlertKind::LinkDown).len(), 1);
}

#[test]
fn a_view_neither_renewing_nor_lapsed_waits_for_the_lease_to_run_out() {
    let mut s = watching(view(1, Some(A), false, false), false, false);
    s.run(10_000);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
    assert!(s.raised(AlertKind::PrimaryDown).is_empty());
    assert!(s.to_arbiter(is_acquire).is_empty());
    s.arbiter = Some(lapsed());
    s.run(3_000);
    assert_eq!(s.raised(AlertKind::PrimaryDown).len(), 1);
    assert!(!s.to_arbiter(is_acquire).is_empty());
}

#[test]
fn a_renewing_view_naming_another_holder_is_no_evidence_of_a_dead_link() {
    let mut s = watching(view(1, Some(B), true, false), false, false);
    s.run(10_000);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
    assert!(s.to_arbiter(is_acquire).is_empty());
}

#[test]
fn without_automatic_failover_a_lost_primary_is_reported_and_nothing_more() {
    let mut c = cfg();
    c.failover.automatic = false;
    let mut s = Site::unstarted(c, B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.arbiter = Some(lapsed());
    s.run(10_000);
    assert_eq!(s.raised(AlertKind::PrimaryDown).len(), 1);
    assert!(s.to_arbiter(is_acquire).is_empty());
    assert_eq!(s.role(), Role::Secondary);
}

#[test]
fn a_lapsed_view_of_another_epoch_or_holder_starts_no_takeover_of_a_primary_that_answers() {
    for v in [view(1, None, false, true), view(1, Some(B), false, true)] {
        let mut s = watching(v.clone(), true, true);
        s.run(5_000);
        assert!(s.to_arbiter(is_acquire).is_empty(), "{v:?}");
        assert!(s.raised(AlertKind::PrimaryDown).is_empty(), "{v:?}");
    }
    // This site knows epoch 2 (held by A); the arbiter's record of epoch 1 lapsing is old news.
    let mut s = watching(renewing(), true, true);
    s.edit(|st| st.epoch = Epoch(2));
    s.arbiter = Some(lapsed());
    s.run(5_000);
    assert!(s.to_arbiter(is_acquire).is_empty());
    assert!(s.raised(AlertKind::PrimaryDown).is_empty());
}

#[test]
fn primary_down_clears_only_after_unhealthy_count_good_probes_in_a_row() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.run(8_000);
    assert_eq!(s.raised(AlertKind::PrimaryDown).len(), 1);
    s.primary_site_ok = true;
    s.primary_service_ok = true;
    let back = s.now;
    s.run(10_000);
    let cleared: Vec<Millis> = s
        .alerts(AlertKind::PrimaryDown)
        .iter()
        .filter(|(_, a)| a.change == AlertChange::Cleared)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(cleared.len(), 1);
    // The third good service probe after the primary came back.
    let good: Vec<Millis> = s
        .probe_ticks()
        .into_iter()
        .filter(|&t| t >= back)
        .map(|t| t + 10)
        .collect();
    assert_eq!(cleared[0], good[2], "probes answered at {good:?}");
}

#[test]
fn a_confirmation_is_abandoned_when_the_primary_answers_again() {
    let mut c = cfg();
    c.failover.confirm = true;
    let mut s = losing_the_primary(c);
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Confirm { .. }));
    s.arbiter = Some(renewing());
    s.primary_site_ok = true;
    s.primary_service_ok = true;
    s.run(3_000);
    assert_eq!(s.role(), Role::Secondary);
    assert!(s.e.state().procedure.is_none());
    assert_eq!(s.audits("abort").len(), 1);
}

#[test]
fn a_confirmation_is_kept_when_the_primary_answers_but_its_lease_is_gone() {
    let mut c = cfg();
    c.failover.confirm = true;
    let mut s = losing_the_primary(c);
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Confirm { .. }));
    s.primary_site_ok = true;
    s.primary_service_ok = true;
    s.run(3_000);
    assert_eq!(s.role(), Role::Promoting);
    assert!(matches!(s.step(), Some(Step::Confirm { .. })));
    assert!(s.audits("abort").is_empty());
}

#[test]
fn a_failover_an_operator_declined_is_not_started_again_in_the_same_outage() {
    let mut c = cfg();
    c.failover.confirm = true;
    let mut s = losing_the_primary(c);
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Confirm { .. }));
    s.input(Input::Operator(OperatorRequest::AbortFailover));
    assert_eq!(s.role(), Role::Secondary);
    s.run(10_000);
    assert_eq!(s.audits("failover").len(), 1, "declined for this outage");
    assert_eq!(s.role(), Role::Secondary);
    // The primary comes back, then is lost again: a new outage, a new failover.
    s.arbiter = Some(renewing());
    s.primary_site_ok = true;
    s.primary_service_ok = true;
    s.run(5_000);
    s.arbiter = Some(lapsed());
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.run(8_000);
    assert!(s.audits("failover").len() >= 2);
}

// ================================================================ heartbeats

#[test]
fn a_heartbeat_of_a_newer_epoch_asks_the_arbiter_at_once_unless_a_query_is_outstanding() {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(2_500);
    let before = s.queries().len();
    s.hear_primary(heartbeat(2, 1, true));
    assert_eq!(s.queries().len(), before + 1);
    // The arbiter goes silent: with a query outstanding another newer heartbeat asks nothing.
    s.arbiter = None;
    s.run(100);
    s.hear_primary(heartbeat(2, 2, true));
    assert_eq!(s.queries().len(), before + 2);
    s.hear_primary(heartbeat(2, 3, true));
    s.hear_primary(heartbeat(2, 4, true));
    assert_eq!(s.queries().len(), before + 2);
    // A heartbeat says which epoch the sender knows, not who holds it: nothing learned.
    assert_eq!(s.e.epoch(), Epoch(1));
}

#[test]
fn a_heartbeat_of_an_older_epoch_is_answered_with_the_current_epoch_and_holder() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    s.edit(|st| st.epoch = Epoch(3));
    s.hear_primary(heartbeat(2, 1, true));
    let notices = s.to_peer(|m| matches!(m, Message::EpochNotice { .. }));
    assert_eq!(
        notices.iter().map(|(_, m)| m.clone()).collect::<Vec<_>>(),
        vec![Message::EpochNotice {
            epoch: Epoch(3),
            holder: A
        }]
    );
    // In the current epoch: no notice.
    s.hear_primary(heartbeat(3, 2, true));
    assert_eq!(
        s.to_peer(|m| matches!(m, Message::EpochNotice { .. }))
            .len(),
        1
    );
}

#[test]
fn positions_in_a_heartbeat_are_learned_and_acknowledged_and_an_empty_one_is_not_acknowledged() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    s.hear_primary(heartbeat(1, 4, true));
    assert!(s
        .to_peer(|m| matches!(m, Message::HeartbeatAck { .. }))
        .is_empty());
    s.hear_primary(Message::Heartbeat(Heartbeat {
        epoch: Epoch(1),
        seq: 5,
        backups_paused: false,
        writable: true,
        positions: vec![(DbId(0), Lsn(70))],
        write_rate_per_sec: 40,
    }));
    let acks = s.to_peer(|m| matches!(m, Message::HeartbeatAck { .. }));
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].1, Message::HeartbeatAck { seq: 5 });
    assert_eq!(s.e.db(DbId(0)).unwrap().known_produced, Lsn(70));
    assert_eq!(s.e.state().peer.peak_rate, 40);
    // A smaller position never moves it back.
    s.hear_primary(Message::Heartbeat(Heartbeat {
        epoch: Epoch(1),
        seq: 6,
        backups_paused: false,
        writable: true,
        positions: vec![(DbId(0), Lsn(20))],
        write_rate_per_sec: 10,
    }));
    assert_eq!(s.e.db(DbId(0)).unwrap().known_produced, Lsn(70));
    assert_eq!(s.e.state().peer.peak_rate, 40);
}

#[test]
fn heartbeats_are_numbered_one_by_one() {
    let mut s = Site::secondary();
    s.run_until(5_500);
    let seqs: Vec<u64> = s
        .to_peer(|m| matches!(m, Message::Heartbeat(_)))
        .iter()
        .map(|(_, m)| match m {
            Message::Heartbeat(hb) => hb.seq,
            _ => 0,
        })
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 5);
}

#[test]
fn the_primary_reports_the_write_rate_per_second_since_its_last_heartbeat() {
    let mut s = primary(cfg());
    let every = s.cfg.lease.heartbeat_every_ms;
    s.run(every);
    s.input(Input::WritePosition {
        db: DbId(0),
        lsn: Lsn(300),
    });
    s.run(every);
    let rates: Vec<(u64, Vec<(DbId, Lsn)>)> = s
        .to_peer(|m| matches!(m, Message::Heartbeat(_)))
        .iter()
        .map(|(_, m)| match m {
            Message::Heartbeat(hb) => (hb.write_rate_per_sec, hb.positions.clone()),
            _ => (0, vec![]),
        })
        .collect();
    let last = rates.last().unwrap();
    assert_eq!(last.1, vec![(DbId(0), Lsn(300))]);
    assert_eq!(last.0, 300 * 1_000 / every);
}

#[test]
fn only_the_acknowledgement_of_the_latest_heartbeat_stops_a_position_being_sent() {
    let mut s = primary(cfg());
    s.input(Input::WritePosition {
        db: DbId(0),
        lsn: Lsn(300),
    });
    let every = s.cfg.lease.heartbeat_every_ms;
    s.run(every);
    s.run(every);
    let seq_now = s.e.state().heartbeat_seq;
    // An old heartbeat's acknowledgement: the position is still sent.
    s.message(Peer::Site(B), Message::HeartbeatAck { seq: seq_now - 1 });
    s.run(every);
    let last = |s: &Site| match s.to_peer(|m| matches!(m, Message::Heartbeat(_))).last() {
        Some((_, Message::Heartbeat(hb))) => hb.positions.clone(),
        _ => vec![],
    };
    assert_eq!(last(&s), vec![(DbId(0), Lsn(300))]);
    let seq_now = s.e.state().heartbeat_seq;
    s.message(Peer::Site(B), Message::HeartbeatAck { seq: seq_now });
    s.run(every);
    assert_eq!(last(&s), vec![]);
}

// ================================================================ failover steps: re-send and abandon

#[test]
fn an_unanswered_acquire_is_asked_again_every_arbiter_timeout() {
    let mut s = losing_the_primary(cfg());
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Acquire { .. }));
    s.run(7_000);
    let times: Vec<Millis> = s.to_arbiter(is_acquire).iter().map(|(t, _)| *t).collect();
    let t = s.cfg.lease.arbiter_timeout_ms;
    assert_eq!(times.len(), 3, "{times:?}");
    assert_eq!(times[1] - times[0], t);
    assert_eq!(times[2] - times[1], t);
}

#[test]
fn the_failover_report_bounds_the_loss_from_the_last_positions_and_the_peak_rate() {
    let mut s = losing_the_primary(cfg());
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    s.input(received(art(ArtifactKind::Log, 0, 50, 1)));
    s.run(100);
    let hb_at = s.now;
    s.hear_primary(Message::Heartbeat(Heartbeat {
        epoch: Epoch(1),
        seq: 9,
        backups_paused: false,
        writable: true,
        positions: vec![(DbId(0), Lsn(500))],
        write_rate_per_sec: 100,
    }));
    s.grants = true;
    s.run(10_000);
    assert_eq!(s.role(), Role::Primary, "{:?}", s.step());
    let promoted = s.commands(|c| matches!(c, Command::Promote { .. }))[0].0;
    let report = s
        .log
        .iter()
        .find_map(|(_, o)| match o {
            Output::Report(r @ lifeboat_core::report::Report::Failover { .. }) => Some(r.clone()),
            _ => None,
        })
        .expect("a failover report");
    let lifeboat_core::report::Report::Failover {
        rpo_lower,
        rpo_upper,
        losses,
        epoch,
        new_primary,
        forced,
        ..
    } = report
    else {
        unreachable!()
    };
    assert_eq!((epoch, new_primary, forced), (Epoch(2), B, false));
    // 500 produced, 50 restored.
    assert_eq!(rpo_lower, 450);
    // Plus twice the peak rate over the heartbeat's age and one heartbeat interval.
    let age = promoted - hb_at + s.cfg.lease.heartbeat_every_ms;
    let extra = (100 * 2 * age).div_ceil(1_000);
    assert_eq!(rpo_upper, Some(450 + extra));
    assert_eq!(losses.len(), 1);
    assert_eq!(losses[0].restored, Lsn(50));
    assert_eq!(losses[0].known_produced, Lsn(500));
    assert_eq!(losses[0].rpo_lower, 450);
    assert_eq!(losses[0].rpo_upper, Some(450 + extra));
}

#[test]
fn a_failover_without_any_heartbeat_reports_an_unknown_upper_bound() {
    let mut s = losing_the_primary(cfg());
    s.grants = true;
    s.run(10_000);
    assert_eq!(s.role(), Role::Primary);
    let report = s
        .log
        .iter()
        .find_map(|(_, o)| match o {
            Output::Report(lifeboat_core::report::Report::Failover {
                rpo_lower,
                rpo_upper,
                losses,
                ..
            }) => Some((*rpo_lower, *rpo_upper, losses.len())),
            _ => None,
        })
        .expect("a failover report");
    assert_eq!(report, (0, None, 1));
}

#[test]
fn a_target_overdue_abandons_the_switchover_once_the_arbiter_still_names_the_primary() {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(2_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(100))],
    });
    let started = s.now;
    assert_eq!(s.role(), Role::SwitchoverTarget);
    let t = s.cfg.lease.arbiter_timeout_ms;
    let overdue = started + s.cfg.failover.switchover_timeout_ms + 2 * t;
    s.run_until(overdue - 1);
    assert_eq!(s.role(), Role::SwitchoverTarget);
    assert!(s.audits("switchover aborted").is_empty());
    s.run_until(overdue + 100);
    assert_eq!(s.role(), Role::Secondary);
    assert_eq!(s.audits("switchover aborted"), vec![overdue]);
}

#[test]
fn a_target_overdue_keeps_waiting_while_it_has_no_fresh_word_from_the_arbiter() {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(2_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(100))],
    });
    let started = s.now;
    s.arbiter = None;
    s.run_until(started + s.cfg.failover.switchover_timeout_ms + 60_000);
    assert_eq!(s.role(), Role::SwitchoverTarget);
    // It keeps asking the arbiter every arbiter timeout.
    let late: Vec<Millis> = s
        .queries()
        .into_iter()
        .filter(|&q| q >= started + s.cfg.failover.switchover_timeout_ms)
        .collect();
    assert!(late.len() >= 15, "{late:?}");
}

#[test]
fn a_target_overdue_keeps_waiting_while_the_arbiter_names_someone_else() {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(2_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(100))],
    });
    let started = s.now;
    s.arbiter = Some(view(1, None, false, false));
    s.run_until(started + s.cfg.failover.switchover_timeout_ms + 60_000);
    assert_eq!(s.role(), Role::SwitchoverTarget);
}

#[test]
fn a_rebuilding_site_asks_for_the_fulls_again_every_operation_timeout() {
    let mut s = Site::unstarted(cfg(), A);
    s.input(Input::Tick);
    s.run_until(500);
    s.message(
        Peer::Site(B),
        Message::EpochNotice {
            epoch: Epoch(2),
            holder: B,
        },
    );
    assert_eq!(s.role(), Role::Rebuilding);
    let at = s.now;
    let every = s.cfg.restore.op_timeout_ms;
    s.run_until(at + 2 * every + 100);
    let asks: Vec<Millis> = s
        .to_peer(|m| matches!(m, Message::RequestFull { db: None }))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(asks, vec![at, at + every, at + 2 * every]);
}

#[test]
fn a_drain_aborts_when_this_sites_own_service_stopped_answering_unless_forced() {
    let mut c = cfg();
    c.failover.confirm = true;
    let mut s = losing_the_primary(c);
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Confirm { .. }));
    s.own_service_ok = false;
    s.run(5_000);
    s.input(Input::Operator(OperatorRequest::ConfirmFailover));
    assert_eq!(s.role(), Role::Secondary);
    assert_eq!(s.audits("abort").len(), 1);
    assert!(s.to_arbiter(is_acquire).is_empty());
}

#[test]
fn a_forced_failover_goes_on_although_this_sites_own_service_does_not_answer() {
    let mut s = losing_the_primary(cfg());
    s.own_service_ok = false;
    s.arbiter = Some(renewing());
    s.run(5_000);
    assert!(s.to_arbiter(is_acquire).is_empty());
    s.input(Input::Operator(OperatorRequest::Failover { force: true }));
    assert_eq!(s.role(), Role::Promoting);
    let acq = s.to_arbiter(is_acquire);
    assert_eq!(acq.len(), 1, "{:?}", s.step());
    assert!(matches!(acq[0].1, Message::Acquire { force: true, .. }));
}

// ================================================================ planned switchover, more guards

#[test]
fn a_switchover_is_refused_unless_the_recovery_site_was_heard_within_three_heartbeats() {
    let every = cfg().lease.heartbeat_every_ms;
    for (silent, accepted) in [
        (3 * every - 500, true),
        (3 * every, true),
        (3 * every + 10, false),
    ] {
        let mut s = primary(cfg());
        s.run(5_000);
        let heard = s.now - silent;
        s.edit(|st| st.peer.last_heard = Some(heard));
        s.input(Input::Operator(OperatorRequest::Switchover));
        assert_eq!(
            s.role() == Role::SwitchingOver,
            accepted,
            "silent for {silent} ms"
        );
        assert_eq!(s.audits("switchover refused").is_empty(), accepted);
    }
}

#[test]
fn a_switchover_is_refused_at_a_site_that_is_not_a_primary_or_already_in_a_procedure() {
    let (mut s, _) = awaiting_ready(cfg());
    s.message(Peer::Site(B), Message::SwitchoverRequest);
    assert_eq!(s.audits("switchover refused").len(), 1);
    assert_eq!(s.step(), Some(Step::AwaitReady));
    let mut b = Site::secondary();
    b.run_until(1_000);
    // It hears the primary: the only reason left to refuse is that it is not one.
    b.hear_primary(heartbeat(1, 1, true));
    b.hear_primary(Message::SwitchoverRequest);
    assert_eq!(b.role(), Role::Secondary);
    assert_eq!(b.audits("switchover refused").len(), 1);
}

#[test]
fn a_switchover_whose_fence_never_completes_aborts_at_its_timeout() {
    let mut s = primary(cfg());
    s.role_ops_complete = false;
    let started = s.now;
    s.input(Input::Operator(OperatorRequest::Switchover));
    assert!(matches!(s.step(), Some(Step::StopWrites { .. })));
    let until = started + s.cfg.failover.switchover_timeout_ms;
    s.run_until(until - 1);
    assert_eq!(s.role(), Role::SwitchingOver);
    s.run_until(until + 10);
    assert_eq!(s.audits("switchover aborted"), vec![until]);
}

/// A switchover at the primary with the final log's artifact not yet acknowledged.
fn shipping_the_final_log() -> (Site, Millis, ArtifactMeta) {
    let mut s = primary(cfg());
    s.role_ops_complete = false;
    let started = s.now;
    s.input(Input::Operator(OperatorRequest::Switchover));
    let Some(Step::StopWrites { op }) = s.step() else {
        panic!("{:?}", s.step())
    };
    s.input(Input::Completed { op, result: Ok(()) });
    let Some(Step::FinalLog { op }) = s.step() else {
        panic!("{:?}", s.step())
    };
    let log = art(ArtifactKind::Log, 0, 120, 1);
    s.input(Input::ArtifactDiscovered(log));
    s.input(Input::Completed { op, result: Ok(()) });
    assert_eq!(s.step(), Some(Step::Shipping));
    (s, started, log)
}

#[test]
fn the_final_positions_go_out_only_once_the_final_log_is_acknowledged() {
    let (mut s, _, log) = shipping_the_final_log();
    s.run(5_000);
    assert!(s.to_peer(is_final).is_empty());
    // The target says it is ready before it has the final positions: too early, ignored.
    s.message(Peer::Site(B), Message::SwitchoverReady { epoch: Epoch(1) });
    assert!(s
        .to_arbiter(|m| matches!(m, Message::Handoff { .. }))
        .is_empty());
    assert_eq!(s.step(), Some(Step::Shipping));
    s.message(Peer::Site(B), Message::Ack { key: log.key });
    let finals = s.to_peer(is_final);
    assert_eq!(finals.len(), 1);
    assert_eq!(
        finals[0].1,
        Message::SwitchoverFinal {
            epoch: Epoch(1),
            positions: vec![(DbId(0), Lsn(120))]
        }
    );
    assert_eq!(s.step(), Some(Step::AwaitReady));
}

#[test]
fn final_positions_sent_just_before_the_timeout_are_not_said_again_after_it() {
    let (mut s, started, log) = shipping_the_final_log();
    let until = started + s.cfg.failover.switchover_timeout_ms;
    s.run_until(until - 1_000);
    s.message(Peer::Site(B), Message::Ack { key: log.key });
    assert_eq!(s.to_peer(is_final).len(), 1);
    s.run_until(until + 5_000);
    assert_eq!(s.to_peer(is_final).len(), 1);
    assert_eq!(s.audits("switchover aborted"), vec![until]);
}

#[test]
fn a_target_whose_own_service_is_down_refuses_and_gives_up_a_switchover_under_way() {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(20_000);
    let failed = s.cfg.failover.unhealthy_count;
    let down_for = s.cfg.failover.unhealthy_for_ms;
    let answered = move |st: &mut SiteState| {
        st.own.failed = failed;
        st.own.answered_failures = failed;
        st.own.first_failure = Some(20_000 - down_for);
    };
    s.edit(answered);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(0))],
    });
    assert_eq!(s.role(), Role::Secondary);
    let refused = s.to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }));
    assert_eq!(refused.len(), 1);
    // Already the target when its service fails: it answers the same and steps back.
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(20_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(100))],
    });
    assert_eq!(s.role(), Role::SwitchoverTarget);
    s.edit(answered);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(100))],
    });
    assert_eq!(s.role(), Role::Secondary);
    assert_eq!(s.audits("switchover aborted").len(), 1);
    assert_eq!(
        s.to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
            .len(),
        1
    );
    // Of another epoch: not its business.
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(20_000);
    s.edit(answered);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(2),
        positions: vec![(DbId(0), Lsn(0))],
    });
    assert!(s
        .to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
        .is_empty());
}

/// Checks that only timed out (a loaded machine) or failed for less than `unhealthy_for_ms` are
/// no reason to refuse: a loaded recovery site refused a real switchover on them.
#[test]
fn a_target_whose_checks_only_timed_out_or_failed_briefly_takes_the_switchover() {
    for (answered, down_for) in [(0, 10_000), (3, 100)] {
        let mut s = Site::secondary();
        s.arbiter = Some(renewing());
        s.run_until(20_000);
        let failed = s.cfg.failover.unhealthy_count;
        s.edit(|st| {
            st.own.failed = failed;
            st.own.answered_failures = answered;
            st.own.first_failure = Some(20_000 - down_for);
        });
        s.hear_primary(Message::SwitchoverFinal {
            epoch: Epoch(1),
            positions: vec![(DbId(0), Lsn(100))],
        });
        assert_eq!(s.role(), Role::SwitchoverTarget, "{answered} {down_for}");
        assert!(s
            .to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
            .is_empty());
    }
}

/// A target that said ready may already hold the hand-off: its service failing then does not
/// make it step back.
#[test]
fn a_target_that_said_ready_goes_on_when_its_service_fails() {
    let mut s = awaiting_epoch(cfg());
    assert_eq!(s.step(), Some(Step::AwaitEpoch));
    let failed = s.cfg.failover.unhealthy_count;
    s.edit(|st| {
        st.own.failed = failed;
        st.own.answered_failures = failed;
        st.own.first_failure = Some(0);
    });
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(0))],
    });
    assert_eq!(s.role(), Role::SwitchoverTarget);
    assert_eq!(s.step(), Some(Step::AwaitEpoch));
}

/// A target that restored the final positions and waits for the epoch.
fn awaiting_epoch(cfg: Config) -> Site {
    let mut s = Site::unstarted(cfg, B);
    s.input(Input::Tick);
    s.run_until(2_000);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(0))],
    });
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    s.run(100);
    assert_eq!(s.step(), Some(Step::AwaitEpoch), "{:?}", s.log);
    s
}

#[test]
fn a_target_handed_the_epoch_renews_then_promotes() {
    let mut s = awaiting_epoch(cfg());
    s.grants = false;
    s.message(
        Peer::Arbiter,
        Message::View {
            view: view(2, Some(B), true, false),
            req: 0,
        },
    );
    assert_eq!(s.e.epoch(), Epoch(2));
    let renews = s.to_arbiter(|m| matches!(m, Message::Renew { .. }));
    assert_eq!(renews.len(), 1);
    assert!(matches!(
        renews[0].1,
        Message::Renew {
            epoch: Epoch(2),
            ..
        }
    ));
    assert!(matches!(s.step(), Some(Step::Renew { .. })));
    assert_eq!(promotes(&s), 0, "no promotion before the lease is ours");
    // Unanswered: renewed again every arbiter timeout.
    let at = s.now;
    s.run(6_100);
    let times: Vec<Millis> = s
        .to_arbiter(|m| matches!(m, Message::Renew { .. }))
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(times, vec![at, at + 3_000, at + 6_000]);
    s.grants = true;
    s.run(3_100);
    assert_eq!(promotes(&s), 1);
    s.run(100);
    assert_eq!(s.role(), Role::Primary);
}

#[test]
fn a_notice_naming_the_target_holder_after_its_promotion_starts_nothing_more() {
    let mut s = awaiting_epoch(cfg());
    s.grants = true;
    s.hear_primary(Message::EpochNotice {
        epoch: Epoch(2),
        holder: B,
    });
    s.run(200);
    assert_eq!(s.role(), Role::Primary);
    let renews = s.to_arbiter(|m| matches!(m, Message::Renew { .. })).len();
    s.message(
        Peer::Arbiter,
        Message::View {
            view: view(2, Some(B), true, false),
            req: 0,
        },
    );
    s.run(100);
    assert_eq!(promotes(&s), 1);
    assert!(s.to_arbiter(|m| matches!(m, Message::Renew { .. })).len() <= renews + 1);
}

#[test]
fn without_an_arbiter_a_target_handed_the_epoch_promotes_at_once() {
    let mut c = cfg();
    c.arbiter = false;
    let mut s = awaiting_epoch(c);
    s.hear_primary(Message::EpochNotice {
        epoch: Epoch(2),
        holder: B,
    });
    assert!(s.sent(Peer::Arbiter).is_empty());
    assert_eq!(promotes(&s), 1);
    s.run(100);
    assert_eq!(s.role(), Role::Primary);
    assert!(s.e.writable());
}

#[test]
fn an_abort_from_the_primary_returns_the_target_to_watching() {
    let mut s = awaiting_epoch(cfg());
    s.hear_primary(Message::SwitchoverAborted {
        epoch: Epoch(1),
        reason: "timeout".into(),
    });
    assert_eq!(s.role(), Role::Secondary);
    assert!(s.e.state().procedure.is_none());
}

#[test]
fn the_primary_stops_shipping_what_the_recovery_sites_heartbeat_says_it_restored_past() {
    let mut s = primary(cfg());
    let log = art(ArtifactKind::Log, 0, 50, 1);
    s.input(Input::ArtifactDiscovered(log));
    let ships = s.commands(|c| matches!(c, Command::Ship { .. }));
    assert_eq!(ships.len(), 1);
    let Command::Ship { op, .. } = ships[0].1.clone() else {
        unreachable!()
    };
    s.input(Input::ShipFailed {
        op,
        key: log.key,
        to: B,
        reason: "connection refused".into(),
    });
    assert_eq!(s.e.unacknowledged().count(), 1);
    // A recovery site's heartbeat of another epoch says nothing about this one's artifacts.
    s.message(
        Peer::Site(B),
        Message::Heartbeat(Heartbeat {
            epoch: Epoch(1),
            seq: 1,
            backups_paused: false,
            writable: false,
            positions: vec![(DbId(0), Lsn(40))],
            write_rate_per_sec: 0,
        }),
    );
    assert_eq!(s.e.unacknowledged().count(), 1, "40 has not passed 50");
    s.message(
        Peer::Site(B),
        Message::Heartbeat(Heartbeat {
            epoch: Epoch(1),
            seq: 2,
            backups_paused: false,
            writable: false,
            positions: vec![(DbId(0), Lsn(60))],
            write_rate_per_sec: 0,
        }),
    );
    assert_eq!(s.e.unacknowledged().count(), 0);
    assert_eq!(s.audits("not shipped: superseded").len(), 1);
    assert_eq!(
        s.commands(|c| matches!(c, Command::Discard { key } if *key == log.key))
            .len(),
        1
    );
}

/// A recovery site whose probes all succeed and whose arbiter sees the primary renewing hears
/// the primary's heartbeats every `gap` ms; returns whether it raised `link_down`.
fn heartbeats_every(gap: Millis) -> Site {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(2_000);
    for k in 0..8 {
        s.run_until(2_000 + k * gap);
        s.hear_primary(heartbeat(1, k + 1, true));
    }
    s
}

#[test]
fn heartbeats_that_stop_for_over_three_intervals_again_and_again_are_a_flapping_link() {
    let every = cfg().lease.heartbeat_every_ms;
    assert_eq!(3 * every, 3_000);
    let s = heartbeats_every(3_500);
    assert_eq!(
        s.raised(AlertKind::LinkDown).len(),
        1,
        "{:?}",
        s.audits("no failover")
    );
    assert!(s.to_arbiter(is_acquire).is_empty());
    for gap in [1_000, 2_500, 3_000] {
        let s = heartbeats_every(gap);
        assert!(
            s.raised(AlertKind::LinkDown).is_empty(),
            "heartbeats every {gap} ms are no trouble"
        );
    }
}

#[test]
fn heartbeat_gaps_separated_by_a_calm_minute_are_separate_troubles() {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.probes_answer = false;
    s.input(Input::Tick);
    let mut at = 2_000;
    let mut seq = 0;
    let mut beat = |s: &mut Site, at: Millis| {
        seq += 1;
        s.run_until(at);
        s.hear_primary(heartbeat(1, seq, true));
    };
    // Two gaps of 3.5 s: two troubles in a row.
    for _ in 0..3 {
        beat(&mut s, at);
        at += 3_500;
    }
    let last_trouble = at - 3_500;
    at = last_trouble + 1_000;
    // Then exactly a calm minute of regular heartbeats, and one more gap.
    let calm = lifeboat_core::defaults::LINK_DOWN_CLEAR_AFTER;
    while at < last_trouble + calm - 3_500 {
        beat(&mut s, at);
        at += 1_000;
    }
    beat(&mut s, last_trouble + calm - 3_500);
    beat(&mut s, last_trouble + calm);
    assert!(
        s.raised(AlertKind::LinkDown).is_empty(),
        "a minute of calm ended the first trouble: {:?}",
        s.e.state().peer.link_trouble
    );
    assert_eq!(s.e.state().peer.link_trouble.map(|(_, _, n)| n), Some(1));
}

#[test]
fn a_heartbeat_saying_backups_are_paused_or_resumed_is_taken_in_when_it_changes() {
    let mut s = Site::secondary();
    s.run_until(2_000);
    let paused = |on| {
        Message::Heartbeat(Heartbeat {
            epoch: Epoch(1),
            seq: 1,
            backups_paused: on,
            writable: true,
            positions: Vec::new(),
            write_rate_per_sec: 0,
        })
    };
    s.hear_primary(paused(true));
    let at = s.now;
    assert!(s.e.state().peer.backups_paused);
    assert_eq!(s.e.state().peer.paused_since, Some(at));
    s.run(500);
    s.hear_primary(paused(true));
    assert_eq!(s.e.state().peer.paused_since, Some(at), "unchanged: kept");
    s.hear_primary(paused(false));
    assert!(!s.e.state().peer.backups_paused);
    assert_eq!(s.e.state().peer.paused_since, None);
}

#[test]
fn a_primary_neither_probes_its_peer_nor_asks_the_arbiter_about_itself() {
    let mut s = primary(cfg());
    s.run(10_000);
    assert!(s.probe_ticks().is_empty());
    assert!(s.queries().is_empty());
}

#[test]
fn an_arbiter_query_outstanding_for_exactly_the_arbiter_timeout_is_asked_again() {
    let mut s = Site::secondary();
    s.run_until(2_500);
    let timeout = s.cfg.lease.arbiter_timeout_ms;
    // The next probe tick, and a query outstanding since exactly one arbiter timeout before it.
    let tick =
        s.e.state()
            .timers
            .get(lifeboat_core::engine::Timer::Probe)
            .unwrap();
    let before = s.queries().len();
    s.edit(|st| st.peer.arbiter_query = Some((99, tick - timeout)));
    s.run_until(tick);
    assert!(
        s.probe_ticks().contains(&tick),
        "{tick}: {:?}",
        s.probe_ticks()
    );
    assert_eq!(s.queries().len(), before + 1);
    assert_eq!(*s.queries().last().unwrap(), tick);
}

#[test]
fn failed_reachability_probes_separated_by_a_calm_minute_are_separate_troubles() {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(2_000);
    // The site probe fails (the service probe answers: no outage, only trouble on the link).
    s.primary_site_ok = false;
    s.run(1_500);
    let (since, last, n) = s.e.state().peer.link_trouble.expect("trouble");
    assert!(n >= 1 && since <= last);
    // No probe answers for over a minute, then one more failure.
    s.probes_answer = false;
    s.run_until(last + lifeboat_core::defaults::LINK_DOWN_CLEAR_AFTER + 100);
    s.probes_answer = true;
    let before = s.probe_ticks().len();
    while s.probe_ticks().len() == before {
        s.run(10);
    }
    s.run(20);
    let (since2, _, n) = s.e.state().peer.link_trouble.expect("trouble");
    assert_eq!(n, 1, "a new trouble");
    assert!(since2 > last);
    assert!(s.raised(AlertKind::LinkDown).is_empty());
}

/// A dead link (the arbiter sees the primary renewing) that heals at `heal`; the primary's
/// heartbeats arrive every `hb_every` ms from then on (`None`: they do not arrive).
fn healed_link(hb_every: Option<Millis>) -> (Site, Millis) {
    let mut s = watching(renewing(), false, false);
    s.run(10_000);
    assert_eq!(s.raised(AlertKind::LinkDown).len(), 1);
    s.primary_site_ok = true;
    s.primary_service_ok = true;
    let heal = s.now;
    let mut seq = 0;
    while s.now < heal + 120_000 {
        match hb_every {
            Some(every) => {
                s.run(every);
                seq += 1;
                s.hear_primary(heartbeat(1, seq, true));
            }
            None => s.run(1_000),
        }
    }
    (s, heal)
}

fn link_down_cleared(s: &Site) -> Vec<Millis> {
    s.alerts(AlertKind::LinkDown)
        .iter()
        .filter(|(_, a)| a.change == AlertChange::Cleared)
        .map(|(t, _)| *t)
        .collect()
}

#[test]
fn link_down_clears_after_a_calm_minute_of_good_probes_with_heartbeats_flowing() {
    let calm = lifeboat_core::defaults::LINK_DOWN_CLEAR_AFTER;
    for every in [1_000, 2_500] {
        let (s, heal) = healed_link(Some(every));
        let cleared = link_down_cleared(&s);
        assert_eq!(cleared.len(), 1, "heartbeats every {every} ms");
        assert!(
            cleared[0] >= heal + calm && cleared[0] <= heal + calm + 2_000,
            "cleared {} ms after the link healed",
            cleared[0] - heal
        );
    }
}

#[test]
fn link_down_stays_while_no_heartbeat_arrives_even_if_the_probes_answer() {
    let (s, _) = healed_link(None);
    assert!(link_down_cleared(&s).is_empty());
}

/// A recovery site with `local_restart` (and `confirm` if asked) whose primary's service died:
/// in the local-restart step, and when that step ends.
fn at_local_restart(confirm: bool) -> (Site, Millis) {
    let mut c = cfg();
    c.failover.local_restart = true;
    c.failover.confirm = confirm;
    let mut s = Site::unstarted(c, B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.primary_service_ok = false;
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::LocalRestart { .. }));
    let Some(Step::LocalRestart { until }) = s.step() else {
        unreachable!()
    };
    (s, until)
}

#[test]
fn a_local_restart_step_waits_for_its_deadline_across_a_restart() {
    let (mut s, until) = at_local_restart(false);
    let started = s.audits("failover")[0];
    assert_eq!(until, started + s.cfg.failover.local_restart_wait_ms);
    s.run(1_000);
    s.restart();
    s.run_until(until - 10);
    assert!(
        matches!(s.step(), Some(Step::LocalRestart { .. })),
        "{:?}",
        s.step()
    );
    assert!(s.to_arbiter(is_acquire).is_empty());
}

#[test]
fn a_view_younger_than_the_arbiter_timeout_plus_a_probe_interval_still_decides() {
    let mut s = Site::secondary();
    s.run_until(15_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.run(6_000);
    assert!(s.to_arbiter(is_acquire).is_empty());
    // The arbiter said "lapsed" 3.5 s before the next probe's answer (3 s timeout + 1 s probe
    // interval is the freshness bound), and nothing since.
    let tick =
        s.e.state()
            .timers
            .get(lifeboat_core::engine::Timer::Probe)
            .unwrap();
    let at = tick + 10 - 3_500;
    s.edit(|st| {
        st.peer.arbiter_view = Some(lapsed());
        st.peer.arbiter_view_at = Some(at);
    });
    s.run_until(tick + 20);
    assert!(!s.to_arbiter(is_acquire).is_empty(), "{:?}", s.step());
    assert_eq!(s.role(), Role::Promoting);
}

/// With both `local_restart` and `confirm`, the restart's wait ends in the confirmation step,
/// whose deadline is `confirm_timeout_ms` after it: no epoch is asked for in between.
#[test]
fn a_local_restart_that_runs_out_asks_for_confirmation_for_the_confirm_timeout() {
    let (mut s, until) = at_local_restart(true);
    s.run_until(until + 10);
    let Some(Step::Confirm { until: confirm }) = s.step() else {
        panic!("{:?}", s.step())
    };
    let timeout = s.cfg.failover.confirm_timeout_ms;
    assert!(
        confirm >= until + timeout && confirm <= until + 10 + timeout,
        "confirmation until {confirm}, the restart's wait ended at {until}"
    );
    s.run_until(confirm - 10);
    assert!(matches!(s.step(), Some(Step::Confirm { .. })));
    assert!(s.to_arbiter(is_acquire).is_empty());
}

/// Swarm seed 243276: a target that did not hear the arbiter (its queries unanswered, its
/// `arbiter_unreachable` raised) was handed the epoch, never got its lease, and writes stopped
/// until the old primary failed back. It refuses instead, and the primary writes on.
#[test]
fn a_target_that_does_not_hear_the_arbiter_refuses_the_switchover() {
    let mut s = Site::secondary();
    s.arbiter = None;
    s.run_until(30_000);
    assert_eq!(s.raised(AlertKind::ArbiterUnreachable).len(), 1);
    s.hear_primary(Message::SwitchoverFinal {
        epoch: Epoch(1),
        positions: vec![(DbId(0), Lsn(0))],
    });
    assert_eq!(s.role(), Role::Secondary);
    assert_eq!(
        s.to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
            .len(),
        1
    );
}

// ================================================================ which failover steps run

/// A failover started and asked for the epoch without asking the primary to restart.
fn went_on_to_the_epoch_without_a_restart(s: &Site) {
    assert_eq!(s.role(), Role::Promoting, "{:?}", s.step());
    assert_eq!(restart_requests(s), 0);
    assert!(!s.to_arbiter(is_acquire).is_empty());
}

fn restart_requests(s: &Site) -> usize {
    s.to_peer(|m| matches!(m, Message::RestartRequest { .. }))
        .len()
}

/// Without `local_restart` the primary's site is never asked to restart its service, even
/// when it still answers: the failover goes straight on to the epoch.
#[test]
fn without_local_restart_a_reachable_primary_whose_service_died_is_not_asked_to_restart() {
    let mut s = Site::unstarted(cfg(), B);
    assert!(!s.cfg.failover.local_restart);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.primary_service_ok = false;
    // Unhealthy from here while the primary still renews, then its lease lapses.
    s.run(5_000);
    assert_eq!(s.role(), Role::Secondary);
    s.arbiter = Some(lapsed());
    s.run(10_000);
    went_on_to_the_epoch_without_a_restart(&s);
}

/// A local restart is tried only by an automatic failover of a primary whose site still
/// answers: not for a site that is gone, not when an operator forces the failover.
#[test]
fn a_local_restart_is_tried_only_automatically_and_only_on_a_reachable_site() {
    let mut c = cfg();
    c.failover.local_restart = true;
    // The whole primary site is gone.
    let mut s = losing_the_primary(c.clone());
    s.run(10_000);
    went_on_to_the_epoch_without_a_restart(&s);
    // The site answers, its service does not, and an operator forces the failover at once.
    let mut s = Site::unstarted(c, B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(5_000);
    s.primary_service_ok = false;
    s.input(Input::Operator(OperatorRequest::Failover { force: true }));
    s.run(100);
    went_on_to_the_epoch_without_a_restart(&s);
}

/// Without `confirm`, a local restart that runs out goes on to the drain and the epoch, with
/// no confirmation step in between.
#[test]
fn without_confirm_a_local_restart_that_runs_out_goes_on_to_the_epoch() {
    let (mut s, until) = at_local_restart(false);
    s.arbiter = Some(lapsed());
    s.run_until(until + 100);
    assert!(
        !matches!(s.step(), Some(Step::Confirm { .. }) | None),
        "{:?}",
        s.step()
    );
    assert!(!s.to_arbiter(is_acquire).is_empty());
}

// ================================================================ a step found after a restart

/// Whatever step a restarted engine finds its procedure in, it takes that step's next action
/// at once: the event that would have woken it (a restore's or a ship's completion) may have
/// been handled by the process that died. Each case puts the procedure in the step with nothing
/// left to wait for, as that process left it.
fn restarted_in(s: &mut Site, step: Step) -> usize {
    s.edit(|st| {
        if let Some(p) = st.procedure.as_mut() {
            p.step = step;
        }
    });
    let before = s.log.len();
    s.restart();
    s.run(500);
    before
}

#[test]
fn a_drain_found_after_a_restart_goes_on_to_the_epoch_at_once() {
    let mut s = losing_the_primary(cfg());
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Acquire { .. }));
    let before = restarted_in(&mut s, Step::Drain);
    let asked = s.log[before..]
        .iter()
        .filter(|(_, o)| matches!(o, Output::Send { to: Peer::Arbiter, msg } if is_acquire(msg)))
        .count();
    assert!(asked >= 1, "{:?}", &s.log[before..]);
    assert!(
        matches!(s.step(), Some(Step::Acquire { .. })),
        "{:?}",
        s.step()
    );
}

#[test]
fn a_settling_promotion_found_after_a_restart_promotes_at_once() {
    let mut s = losing_the_primary(cfg());
    s.grants = true;
    s.role_ops_complete = false;
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Promote { .. }));
    s.role_ops_complete = true;
    s.edit(|st| st.ops.clear());
    let before = restarted_in(&mut s, Step::Settle);
    let promoted = s.log[before..]
        .iter()
        .filter(|(_, o)| matches!(o, Output::Command(Command::Promote { .. })))
        .count();
    assert_eq!(promoted, 1, "{:?}", &s.log[before..]);
    assert_ne!(s.step(), Some(Step::Settle));
}

#[test]
fn a_switchover_found_shipping_after_a_restart_sends_its_final_positions_at_once() {
    let (mut s, _, _) = shipping_the_final_log();
    s.role_ops_complete = true;
    s.edit(|st| st.outbox.clear());
    let before = restarted_in(&mut s, Step::Shipping);
    let finals = s.log[before..]
        .iter()
        .filter(|(_, o)| matches!(o, Output::Send { msg, .. } if is_final(msg)))
        .count();
    assert_eq!(finals, 1, "{:?}", &s.log[before..]);
    assert_eq!(s.step(), Some(Step::AwaitReady));
}

/// An operator's failover request is the confirmation: with `confirm` on it is not asked for
/// again, the failover goes on to the epoch.
#[test]
fn an_operators_failover_is_not_held_for_confirmation() {
    let mut c = cfg();
    c.failover.confirm = true;
    c.failover.automatic = false;
    let mut s = Site::unstarted(c, B);
    s.arbiter = Some(lapsed());
    s.input(Input::Tick);
    s.run_until(2_000);
    s.input(Input::Operator(OperatorRequest::Failover { force: false }));
    s.run(100);
    assert_eq!(s.role(), Role::Promoting, "{:?}", s.log);
    assert!(
        !matches!(s.step(), Some(Step::Confirm { .. })),
        "{:?}",
        s.step()
    );
    assert!(!s.to_arbiter(is_acquire).is_empty());
}

// ================================================================ the drain's retries

/// A recovery site that restored a full and holds two logs after it: the first fails every
/// restore (it waits for its retry), the second waits behind it. Then its primary is lost.
fn draining_behind_a_failing_log() -> (Site, ArtifactMeta) {
    let mut s = Site::unstarted(cfg(), B);
    s.arbiter = Some(renewing());
    s.input(Input::Tick);
    s.run_until(1_000);
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    s.run(500);
    s.fail_restores = 1_000;
    let failing = art(ArtifactKind::Log, 0, 120, 1);
    s.input(received(failing));
    s.input(received(art(ArtifactKind::Log, 120, 240, 1)));
    s.run_until(5_000);
    s.primary_site_ok = false;
    s.primary_service_ok = false;
    s.arbiter = Some(lapsed());
    (s, failing)
}

fn restores_of(s: &Site, key: ArtifactKey, after: Millis) -> usize {
    s.commands(|c| matches!(c, Command::Restore { artifact, .. } if artifact.key == key))
        .iter()
        .filter(|(t, _)| *t >= after)
        .count()
}

/// The drain gives an artifact that waits for its retry `DRAIN_RETRIES` retries at once, then
/// gives up on it and names it (and only it, not the log waiting behind it) in the audit.
#[test]
fn the_drain_retries_a_failing_log_at_once_then_names_it_given_up() {
    let (mut s, failing) = draining_behind_a_failing_log();
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Acquire { .. }));
    let started = s.audits("failover")[0];
    assert_eq!(
        restores_of(&s, failing.key, started),
        lifeboat_core::defaults::DRAIN_RETRIES as usize
    );
    let gave_up: Vec<_> = s
        .log
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Audit(a) if a.what == "drain gave up on failing restores" => {
                Some(a.inputs.clone())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        gave_up,
        vec![vec![("db0".to_string(), "0..120".to_string())]]
    );
}

/// An artifact given up for good (`retry_at` = never: unreadable, quarantined) is not retried
/// by the drain.
#[test]
fn the_drain_does_not_retry_an_artifact_given_up_for_good() {
    let (mut s, failing) = draining_behind_a_failing_log();
    s.edit(|st| {
        for p in st.dbs[0].pending.iter_mut() {
            if p.meta.key == failing.key {
                p.retry_at = Some(Millis::MAX);
            }
        }
    });
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Acquire { .. }));
    let started = s.audits("failover")[0];
    assert_eq!(restores_of(&s, failing.key, started), 0);
}

/// Without a failing restore the drain has nothing to give up and says nothing about it.
#[test]
fn a_drain_with_nothing_failing_writes_no_give_up_audit() {
    let mut s = losing_the_primary(cfg());
    run_to_step(&mut s, 10_000, |st| matches!(st, Step::Acquire { .. }));
    assert!(s.audits("drain gave up on failing restores").is_empty());
}

// ================================================================ completions at the primary

fn log_backups(s: &Site, after: Millis) -> usize {
    s.commands(|c| {
        matches!(
            c,
            Command::TakeBackup {
                kind: ArtifactKind::Log,
                ..
            }
        )
    })
    .iter()
    .filter(|(t, _)| *t >= after)
    .count()
}

/// A primary that loses the arbiter fences itself, and once writes are stopped cuts one log of
/// everything acknowledged before (so it can reach the recovery site): one log, not one per
/// completion that follows.
#[test]
fn a_primary_that_fenced_itself_cuts_one_log_of_what_it_acknowledged() {
    let mut s = primary(cfg());
    s.run(5_000);
    s.grants = false;
    let lost = s.now;
    s.run(20_000);
    assert_eq!(s.role(), Role::Fenced, "{:?}", s.log);
    let fenced = s.commands(|c| matches!(c, Command::Fence { .. }));
    let fenced_at = fenced.last().map(|(t, _)| *t).unwrap();
    assert!(fenced_at > lost);
    // The fence completes 5 ms later; the log follows it and nothing cuts another.
    assert_eq!(log_backups(&s, fenced_at), 1, "{:?}", s.log);
    // The arbiter answers again (renewals resume after their pause): writes resume, and
    // that cuts no log either.
    s.grants = true;
    let back = s.now;
    s.run(20_000);
    assert_eq!(s.role(), Role::Primary, "{:?}", s.log);
    assert_eq!(log_backups(&s, back), 0, "{:?}", s.log);
}

/// While writes are being stopped for a switchover, only its own fence's completion moves it
/// on; in the final-log step, only its own log's.
#[test]
fn only_a_switchovers_own_fence_and_final_log_move_it_on() {
    let mut s = primary(cfg());
    s.role_ops_complete = false;
    s.input(Input::Operator(OperatorRequest::Switchover));
    let Some(Step::StopWrites { op }) = s.step() else {
        panic!("{:?}", s.step())
    };
    complete_a_stale(&mut s, Command::Fence { op: OpId(9_998) });
    assert_eq!(s.step(), Some(Step::StopWrites { op }));
    s.input(Input::Completed { op, result: Ok(()) });
    let Some(Step::FinalLog { op }) = s.step() else {
        panic!("{:?}", s.step())
    };
    complete_a_stale(
        &mut s,
        Command::TakeBackup {
            op: OpId(9_999),
            db: None,
            kind: ArtifactKind::Log,
        },
    );
    assert_eq!(s.step(), Some(Step::FinalLog { op }));
    // The switchover's own fence cut no log besides the final one.
    let started = s.audits("switchover")[0];
    assert_eq!(log_backups(&s, started), 1, "{:?}", s.log);
}

// ================================================================ the failover report's list

fn two_databases() -> Config {
    let mut c = cfg();
    c.databases = vec!["db0".into(), "db1".into()];
    c
}

fn art_of(db: u32, kind: ArtifactKind, s: u64, e: u64) -> ArtifactMeta {
    let mut m = art(kind, s, e, 1);
    m.key.db = DbId(db);
    m
}

/// db0 restored to `restored.0`, db1 to `restored.1`; the primary's last heartbeat reports
/// `produced` and `rate`; then the failover runs to its report.
fn report_after(
    restored: (u64, u64),
    produced: (u64, u64),
    rate: u64,
) -> (Site, lifeboat_core::report::Report) {
    let mut s = losing_the_primary(two_databases());
    for (db, end) in [(0, restored.0), (1, restored.1)] {
        s.input(received(art_of(db, ArtifactKind::Full, 0, 0)));
        if end > 0 {
            s.input(received(art_of(db, ArtifactKind::Log, 0, end)));
        }
    }
    s.run(100);
    s.hear_primary(Message::Heartbeat(Heartbeat {
        epoch: Epoch(1),
        seq: 9,
        backups_paused: false,
        writable: true,
        positions: vec![(DbId(0), Lsn(produced.0)), (DbId(1), Lsn(produced.1))],
        write_rate_per_sec: rate,
    }));
    s.grants = true;
    s.run(10_000);
    assert_eq!(s.role(), Role::Primary, "{:?}", s.step());
    let report = s
        .log
        .iter()
        .find_map(|(_, o)| match o {
            Output::Report(r @ lifeboat_core::report::Report::Failover { .. }) => Some(r.clone()),
            _ => None,
        })
        .expect("a failover report");
    (s, report)
}

fn listed(r: &lifeboat_core::report::Report) -> Vec<(DbId, u64, Option<u64>)> {
    let lifeboat_core::report::Report::Failover { losses, .. } = r else {
        unreachable!()
    };
    losses
        .iter()
        .map(|l| (l.db, l.rpo_lower, l.rpo_upper))
        .collect()
}

/// The report lists every database that may have lost writes: one behind what the primary
/// produced, and, when the primary was writing, every one (its last writes may be in no
/// heartbeat). A database fully restored from a primary that wrote nothing is not listed.
#[test]
fn a_failover_report_lists_exactly_the_databases_that_may_have_lost_writes() {
    let (s, r) = report_after((500, 50), (500, 500), 0);
    assert_eq!(listed(&r), vec![(DbId(1), 450, Some(450))]);
    assert!(s.audits("rpo upper bound unknown").is_empty());
    let (_, r) = report_after((500, 50), (500, 500), 100);
    let dbs: Vec<DbId> = listed(&r).iter().map(|l| l.0).collect();
    assert_eq!(dbs, vec![DbId(0), DbId(1)]);
    assert_eq!(listed(&r)[0].1, 0);
    assert!(listed(&r)[0].2.is_some_and(|u| u > 0));
}

/// An upper bound beyond 2^64 is reported unknown, and the audit names the databases whose
/// own bound overflowed (and only those) with the peak rate.
#[test]
fn an_overflowing_upper_bound_is_unknown_and_its_audit_names_the_database() {
    let (s, r) = report_after((0, 50), (u64::MAX, 500), 100);
    let lifeboat_core::report::Report::Failover {
        rpo_lower,
        rpo_upper,
        ..
    } = &r
    else {
        unreachable!()
    };
    assert_eq!((*rpo_lower, *rpo_upper), (u64::MAX, None));
    let l = listed(&r);
    assert_eq!((l[0].0, l[0].2), (DbId(0), None));
    assert_eq!((l[1].0, l[1].1), (DbId(1), 450));
    assert!(l[1].2.is_some());
    let audits: Vec<_> = s
        .log
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Audit(a) if a.what == "rpo upper bound unknown" => Some(a.inputs.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        audits,
        vec![vec![
            ("db0".to_string(), format!("restored 0 of {}", u64::MAX)),
            ("peak_rate_per_sec".to_string(), "100".to_string()),
        ]]
    );
}

/// A forced failover takes the next epoch itself only when the arbiter has been silent for
/// longer than its timeout plus a probe interval; up to that it asks the arbiter.
#[test]
fn a_forced_failover_assigns_its_own_epoch_only_past_the_arbiters_silence_bound() {
    let bound = cfg().lease.arbiter_timeout_ms + cfg().failover.probe_every_ms;
    for (age, own) in [(bound - 1_500, false), (bound, false), (bound + 1, true)] {
        let mut s = losing_the_primary(cfg());
        s.arbiter = None;
        let at = s.now - age;
        s.edit(|st| {
            st.peer.arbiter_view = Some(lapsed());
            st.peer.arbiter_view_at = Some(at);
        });
        s.input(Input::Operator(OperatorRequest::Failover { force: true }));
        assert_eq!(
            s.audits("self-assigned epoch").len(),
            usize::from(own),
            "view {age} ms old"
        );
        assert_eq!(
            s.to_arbiter(is_acquire).is_empty(),
            own,
            "view {age} ms old"
        );
    }
}

/// After giving itself the epoch, a forced failover keeps telling the arbiter (so that it
/// adopts the epoch once it answers) at the renewal period, starting one period later.
#[test]
fn a_self_assigned_epoch_is_told_to_the_arbiter_every_renewal_period() {
    let mut s = losing_the_primary(cfg());
    s.arbiter = None;
    s.edit(|st| st.peer.arbiter_view_at = None);
    s.input(Input::Operator(OperatorRequest::Failover { force: true }));
    let at = s.audits("self-assigned epoch")[0];
    s.run(10_000);
    let renews: Vec<Millis> = s
        .to_arbiter(|m| matches!(m, Message::Renew { .. }))
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t >= at)
        .collect();
    let every = s.cfg.lease.renew_every_ms;
    assert!(!renews.is_empty());
    assert_eq!(renews[0], at + every, "{renews:?}");
}

// ================================================================ a promotion held for the lease

/// A promotion under way goes out once: the renewals granted while it runs do not issue it
/// again. After a restart it waits for the lease and then goes out again with the same id,
/// at a failover's new primary and at a switchover's target alike.
#[test]
fn a_promotion_goes_out_once_and_again_with_its_id_after_a_restart() {
    // Failover.
    let mut s = losing_the_primary(cfg());
    s.grants = true;
    s.role_ops_complete = false;
    promotes_once_then_again_after_a_restart(&mut s, 10_000);
    // Switchover target.
    let mut s = awaiting_epoch(cfg());
    s.grants = true;
    s.role_ops_complete = false;
    s.message(
        Peer::Arbiter,
        Message::View {
            view: view(2, Some(B), true, false),
            req: 0,
        },
    );
    promotes_once_then_again_after_a_restart(&mut s, 5_000);
}

/// The promotion is reached within `within`, renewals granted for 10 s do not repeat it, and
/// a restart repeats it once, with its id.
fn promotes_once_then_again_after_a_restart(s: &mut Site, within: Millis) {
    run_to_step(s, within, |st| matches!(st, Step::Promote { .. }));
    let Some(Step::Promote { op }) = s.step() else {
        unreachable!()
    };
    s.run(10_000);
    assert_eq!(promotes(s), 1, "renewals re-issued the promotion");
    s.restart();
    s.run(1_000);
    let again = s.commands(|c| matches!(c, Command::Promote { .. }));
    assert_eq!(again.len(), 2);
    assert_eq!(again[1].1.op(), Some(op));
}

// ================================================================ a target behind a hole

/// A recovery site holding a full and a log after a hole (`missing_log` raised): at position
/// 0, with the next log starting at 120.
fn behind_a_hole() -> Site {
    let mut s = Site::secondary();
    s.arbiter = Some(renewing());
    s.run_until(1_000);
    s.input(received(art(ArtifactKind::Full, 0, 0, 1)));
    s.input(received(art(ArtifactKind::Log, 120, 240, 1)));
    s.run(30 * 60_000);
    assert!(!s.raised(AlertKind::MissingLog).is_empty(), "{:?}", s.log);
    s
}

fn aborted(s: &Site) -> usize {
    s.to_peer(|m| matches!(m, Message::SwitchoverAborted { .. }))
        .len()
}

/// Behind its final position with a hole in the way, the target refuses at once (swarm seed
/// 209123), and steps back if it was already the target; at its final position the hole does
/// not matter; a final position of another epoch is not its business.
#[test]
fn a_target_behind_a_hole_refuses_only_when_the_hole_keeps_it_from_the_final_position() {
    let fin = |epoch: u64, lsn: u64| Message::SwitchoverFinal {
        epoch: Epoch(epoch),
        positions: vec![(DbId(0), Lsn(lsn))],
    };
    // Behind: refused.
    let mut s = behind_a_hole();
    s.hear_primary(fin(1, 240));
    assert_eq!((s.role(), aborted(&s)), (Role::Secondary, 1));
    // At the final position: taken.
    let mut s = behind_a_hole();
    s.hear_primary(fin(1, 0));
    assert_eq!((s.role(), aborted(&s)), (Role::SwitchoverTarget, 0));
    // Said again with a final position it cannot reach: it steps back.
    s.hear_primary(fin(1, 240));
    assert_eq!((s.role(), aborted(&s)), (Role::Secondary, 1));
    assert_eq!(s.audits("switchover aborted").len(), 1);
    // Another epoch's final positions.
    let mut s = behind_a_hole();
    s.hear_primary(fin(2, 240));
    assert_eq!(aborted(&s), 0);
}

/// Auto Pilot asks the primary's site for one local restart an outage: a restart asked for at
/// or after the outage's first failed probe belongs to this outage and is not asked for again;
/// one asked for before it belonged to an earlier outage.
#[test]
fn a_local_restart_is_asked_for_once_an_outage_counted_from_its_first_failed_probe() {
    for (earlier_by, restarts) in [(0, 0), (1, 1)] {
        let mut c = cfg();
        c.failover.local_restart = true;
        let mut s = Site::unstarted(c, B);
        s.arbiter = Some(renewing());
        s.input(Input::Tick);
        s.run_until(5_000);
        s.primary_service_ok = false;
        s.run(1_500);
        let first = s.e.state().peer.first_failure.expect("a failed probe");
        s.edit(|st| st.peer.local_restart_at = Some(first - earlier_by));
        s.run(10_000);
        assert_eq!(
            restart_requests(&s),
            restarts,
            "asked {earlier_by} ms before the outage"
        );
    }
}

// ================================================================ a new arbiter

/// A new arbiter presumes the initial primary holds epoch 1 and tells it to wait until it heard
/// every site: the primary asks again 100 ms later, not a renewal period later, so its service
/// takes writes as soon as the arbiter may grant. Any other refusal keeps the renewal period.
#[test]
fn a_primary_told_to_wait_by_a_new_arbiter_asks_again_soon() {
    let renewals = |s: &Site| -> Vec<Millis> {
        s.sent(Peer::Arbiter)
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::Renew { .. }))
            .map(|(t, _)| t)
            .collect()
    };
    let denied = |holder| Message::Denied {
        view: view(1, Some(holder), true, false),
        req: 0,
        reason: "wait".into(),
    };
    let mut s = Site::new(cfg(), A);
    assert_eq!(renewals(&s), vec![0], "a starting primary renews at once");
    s.run_until(50);
    s.message(Peer::Arbiter, denied(A));
    s.run_until(1_000);
    assert_eq!(renewals(&s), vec![0, 150]);
    // Not presumed (another holder): the next renewal keeps its period.
    s.message(Peer::Arbiter, denied(B));
    s.run_until(1_900);
    assert_eq!(renewals(&s), vec![0, 150]);
    assert_eq!(s.e.state().role, Role::Fenced);
}

/// The recovery site tells the arbiter its epoch as it starts (a new arbiter waits for it to
/// grant the primary's first lease), without waiting for an answer.
#[test]
fn a_starting_recovery_site_tells_the_arbiter_its_epoch() {
    let s = Site::secondary();
    assert_eq!(
        s.sent(Peer::Arbiter),
        vec![(
            0,
            Message::QueryAt {
                epoch: Epoch(1),
                req: 1
            }
        )]
    );
    assert_eq!(s.e.state().peer.arbiter_query, None);
}
