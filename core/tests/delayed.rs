//! A standby that lags on purpose (issue 15, point 5): `restore.apply_delay_ms` applies each
//! artifact that long after it arrived; a failover catches up fully by default, or stops at a
//! chosen point (`OperatorRequest::FailoverUntil`) and reports what it left out, counted in
//! the loss bounds.

mod common;
use common::*;
use lifeboat_core::engine::Role;
use lifeboat_core::protocol::{Command, Input, OperatorRequest};
use lifeboat_core::report::Report;
use lifeboat_core::{Millis, UtcMillis};

const DELAY: Millis = 120_000;
/// The harness stamps artifacts `UTC0 + real time`.
const UTC0: i64 = 1_795_000_000_000;

fn delayed() -> Harness {
    let mut c = config(1);
    c.restore.apply_delay_ms = DELAY;
    Harness::new(c)
}

/// (real time, artifact) of every restore `n` issued.
fn restores(h: &Harness, n: usize) -> Vec<(Millis, lifeboat_core::ArtifactMeta)> {
    h.commands_of(n, |c| matches!(c, Command::Restore { .. }))
        .into_iter()
        .filter_map(|(t, c)| match c {
            Command::Restore { artifact, .. } => Some((t, artifact)),
            _ => None,
        })
        .collect()
}

/// When the harness made an artifact (real time).
fn made(m: &lifeboat_core::ArtifactMeta) -> Millis {
    (m.created_utc.0 - UTC0) as Millis
}

#[test]
fn a_delayed_standby_applies_each_artifact_only_once_it_is_that_old_and_raises_no_backlog() {
    let mut h = delayed();
    h.run(10 * 60_000);
    let r = restores(&h, B);
    assert!(r.len() > 20, "{}", h.trace());
    // An artifact arrives after it was made: every restore comes at least the delay later.
    for (t, m) in &r {
        assert!(
            *t >= made(m) + DELAY,
            "{:?} made at {} restored at {t}",
            m.key,
            made(m)
        );
    }
    // And not much later: the delay plus a log period or two.
    let (t, m) = r.last().unwrap();
    assert!(*t <= made(m) + DELAY + 3 * h.cfg.schedule.log_every_ms);
    let pos = h.sites[B].state().dbs[0].position.map_or(0, |l| l.0);
    assert!(
        pos < h.db[A].pos(0),
        "a delayed standby is behind the primary"
    );
    assert_eq!(h.raised("backlog"), 0, "{}", h.trace());
    assert_eq!(h.raised("restore_error"), 0);
    h.assert_safe();
}

#[test]
fn a_failover_of_a_delayed_standby_catches_up_fully_first() {
    let mut h = delayed();
    h.run(10 * 60_000);
    let d = &h.sites[B].state().dbs[0];
    let before = d.position.map_or(0, |l| l.0);
    let received = d
        .pending
        .iter()
        .map(|x| x.meta.key.lsn_end.0)
        .max()
        .unwrap_or(0);
    assert!(before < received, "the delay holds artifacts back");
    h.kill(A);
    assert!(
        h.run_until(120_000, |h| h.sites[B].role() == Role::Primary),
        "{}",
        h.trace()
    );
    h.run(2_000);
    let Some(Report::Failover {
        losses, left_out, ..
    }) = h.failover_report().cloned()
    else {
        panic!("no report:\n{}", h.trace())
    };
    assert!(left_out.is_empty());
    assert!(h
        .commands_of(B, |c| c.is_promote())
        .iter()
        .all(|(_, c)| matches!(c, Command::Promote { .. })));
    // Everything received was applied before the promotion.
    assert!(
        losses.iter().all(|l| l.restored.0 >= received),
        "{losses:?}"
    );
    let after = h.sites[B].state().dbs[0].position.map_or(0, |l| l.0);
    assert!(
        after >= received,
        "promoted at {after}, received up to {received}"
    );
    h.assert_safe();
}

#[test]
fn a_failover_until_a_chosen_time_leaves_out_what_came_after_it_and_counts_it_as_loss() {
    let mut h = delayed();
    h.run(10 * 60_000);
    // The chosen point: a minute ago (inside the delay: received, not applied yet).
    let until = UtcMillis(UTC0 + (h.t - 60_000) as i64);
    h.kill(A);
    h.run(1_000);
    h.operator(B, OperatorRequest::FailoverUntil { force: true, until });
    assert!(
        h.run_until(60_000, |h| h.sites[B].role() == Role::Primary),
        "{}",
        h.trace()
    );
    h.run(2_000);
    let Some(Report::Failover {
        rpo_lower,
        left_out,
        losses,
        ..
    }) = h.failover_report().cloned()
    else {
        panic!("no report:\n{}", h.trace())
    };
    // Nothing made after the chosen time was restored at B.
    for (_, m) in restores(&h, B) {
        assert!(
            m.created_utc <= until,
            "{:?} made after the chosen point was restored",
            m.key
        );
    }
    assert_eq!(left_out.len(), 1, "{left_out:?}");
    let l = &left_out[0];
    assert!(
        l.artifacts >= 1 && l.from < l.to && l.until == until,
        "{l:?}"
    );
    // The loss counts at least what was left out.
    assert!(
        rpo_lower >= l.to.0 - l.from.0,
        "lower {rpo_lower}, left out {l:?}"
    );
    assert!(losses[0].restored <= l.from);
    // The promotion carries the point, so a driver holding WAL beyond the restored position
    // (PostgreSQL's stream) leaves it out; a plain `Promote` would replay it.
    let promotions = h.commands_of(B, |c| c.is_promote());
    assert!(!promotions.is_empty(), "{}", h.trace());
    for (_, c) in &promotions {
        assert!(
            matches!(c, Command::PromoteUntil { until: u, .. } if *u == until),
            "{c:?}"
        );
    }
    let _ = Input::Tick;
    h.assert_safe();
}

/// A standby that already applied writes made after the chosen point cannot be rewound: the
/// request is refused with the reason, nothing is promoted, and a failover without a point
/// still works.
#[test]
fn a_failover_until_a_point_the_standby_already_passed_is_refused_and_a_plain_one_still_works() {
    let mut h = Harness::new(config(2)); // no apply delay: every artifact is applied at once
    h.run(10 * 60_000);
    let until = UtcMillis(UTC0 + (h.t - 60_000) as i64);
    let last = h.sites[B].state().dbs[0].last_restore.unwrap();
    assert!(last.created_utc > until, "{last:?}");
    // The arbiter goes too: only an operator's failover promotes B.
    h.kill(A);
    h.kill_arbiter();
    h.run(1_000);
    h.operator(B, OperatorRequest::FailoverUntil { force: true, until });
    h.run(30_000);
    assert_eq!(h.sites[B].role(), Role::Secondary, "{}", h.trace());
    assert!(h.commands_of(B, |c| c.is_promote()).is_empty());
    let refused = h.audits_of(B, "reject failover");
    assert_eq!(refused.len(), 1, "{}", h.trace());
    let why = &refused[0].why;
    assert!(
        why.starts_with("2 of 2 databases already hold writes made after the chosen point")
            && why.contains("[db0] restored the transaction log ending at position")
            && why.contains("Fail over without a point, or choose one at or after"),
        "{why}"
    );
    a_plain_forced_failover_promotes_b(&mut h);
}

/// A restore that was running when the point was chosen, of an artifact made after it, ends
/// the drain past the point: the failover is abandoned before it takes an epoch, with the
/// reason, and a failover without a point still works.
#[test]
fn a_failover_until_a_point_a_running_restore_passes_is_abandoned_before_the_epoch() {
    let mut h = delayed();
    h.run(10 * 60_000);
    // The arbiter goes too: only an operator's failover promotes B.
    h.kill(A);
    h.kill_arbiter();
    h.run(1_000);
    // Wait for a restore in flight whose artifact was made after everything restored so far.
    let ok = h.run_until(DELAY, |h| {
        let d = &h.sites[B].state().dbs[0];
        d.in_flight.is_some() && d.last_restore.is_some()
    });
    assert!(ok, "{}", h.trace());
    let d = &h.sites[B].state().dbs[0];
    let (_, key) = d.in_flight.unwrap();
    let running = d.pending.iter().find(|x| x.meta.key == key).unwrap().meta;
    let last = d.last_restore.unwrap();
    assert!(running.created_utc > last.created_utc);
    let until = UtcMillis(running.created_utc.0 - 1);
    h.operator(B, OperatorRequest::FailoverUntil { force: true, until });
    assert!(
        h.audits_of(B, "reject failover").is_empty(),
        "{}",
        h.trace()
    );
    h.run(30_000);
    assert_eq!(h.sites[B].role(), Role::Secondary, "{}", h.trace());
    assert!(h.commands_of(B, |c| c.is_promote()).is_empty());
    let aborted = h.audits_of(B, "abort");
    assert_eq!(aborted.len(), 1, "{}", h.trace());
    assert!(
        aborted[0]
            .why
            .contains("already hold writes made after the chosen point"),
        "{}",
        aborted[0].why
    );
    a_plain_forced_failover_promotes_b(&mut h);
}

/// After a refused or abandoned failover to a point: one without a point still promotes B.
fn a_plain_forced_failover_promotes_b(h: &mut Harness) {
    h.operator(B, OperatorRequest::Failover { force: true });
    assert!(
        h.run_until(60_000, |h| h.sites[B].role() == Role::Primary),
        "{}",
        h.trace()
    );
    h.assert_safe();
}
