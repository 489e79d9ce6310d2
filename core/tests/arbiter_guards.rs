//! The arbiter's guards, one condition at a time (issue 20). Every test drives
//! `lifeboat_core::arbiter::Arbiter` directly and checks the replies it sends and its state with
//! exact values, so that weakening any guard (`&&` to `||`, `==` to `!=`, `+` to `*` or `-` in a
//! lease expiry) fails at least one test here.
//!
//! Timing used throughout: a lease of 10 000 ms and a drift bound of 50 000 ppm, so the drift
//! margin is 500 ms. A fresh arbiter starts with site A (the initial primary) holding epoch 1;
//! its lease runs from the first input the arbiter sees.

mod common;
use common::audits;
use lifeboat_core::arbiter::{Arbiter, ArbiterState};
use lifeboat_core::protocol::{ArbiterView, Input, Message, Output, Peer};
use lifeboat_core::{Config, Epoch, Millis, SiteId};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// The initial primary.
const A: SiteId = SiteId(0);
/// The recovery site.
const B: SiteId = SiteId(1);
/// A site index that is not configured.
const NOWHERE: SiteId = SiteId(2);
const LEASE: Millis = 10_000;
const MARGIN: Millis = 500;

const NOT_HOLDER: &str = "not the holder of the current epoch";
const NOT_LAPSED: &str = "the holder's lease has not expired (plus the drift margin)";
const UNKNOWN_EPOCH_LIVE_LEASE: &str = "this arbiter did not hand out that epoch, and the holder's lease has not expired (plus the drift margin)";
const NEWER_CLAIMED: &str = "a newer epoch was claimed; only its holder can have it";
const TOO_FAR: &str = "that epoch is further ahead of the arbiter's than forced failovers can take it; an operator must check the sites' epochs";
const ONLY_HOLDER_HANDS_OFF: &str = "only the holder of the current epoch can hand it off";

fn cfg() -> Config {
    let mut c = Config::default();
    c.lease.lease_ms = LEASE;
    c.lease.max_drift_ppm = 50_000;
    assert_eq!(c.drift_margin(), MARGIN);
    assert_eq!(c.initial_primary_id(), A);
    assert_eq!(c.sites.len(), 2);
    c
}

/// A fresh arbiter whose first input arrives at `t`: A holds epoch 1, its lease runs to
/// `t + LEASE`, nobody has renewed yet; B has told it its epoch (1) at `t`, so the presumed
/// holder A may renew at once (see `presumed_holder_*` below for the wait without it).
fn started_at(t: Millis) -> Arbiter {
    let mut arb = Arbiter::new(cfg());
    arb.handle(t, Input::Tick);
    assert_eq!(arb.poll_output(), None);
    let answer = reply(&mut arb, t, B, query_at(1, 0));
    assert!(matches!(answer, Message::View { req: 0, .. }), "{answer:?}");
    assert_eq!(
        *arb.state(),
        ArbiterState {
            now: t,
            started: true,
            epoch: Epoch(1),
            holder: Some(A),
            lease_expiry: t + LEASE,
            last_renewal: None,
            clock_base: 0,
            last_heard: vec![None, Some(t)],
            claimed: None,
        }
    );
    arb
}

/// Deliver `msg` from `from` at `now` and return everything the arbiter put out.
fn send(arb: &mut Arbiter, now: Millis, from: SiteId, msg: Message) -> Vec<Output> {
    arb.handle(
        now,
        Input::Message {
            from: Peer::Site(from),
            msg,
        },
    );
    std::iter::from_fn(|| arb.poll_output()).collect()
}
/// The messages among `outs`, with their destination.
fn sent(outs: &[Output]) -> Vec<(Peer, Message)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg.clone())),
            Output::Audit(_) => None,
            other => panic!("the arbiter only sends and audits, got {other:?}"),
        })
        .collect()
}

/// Deliver `msg` and return the one reply, which must go back to the sender.
fn reply(arb: &mut Arbiter, now: Millis, from: SiteId, msg: Message) -> Message {
    let outs = send(arb, now, from, msg);
    let mut msgs = sent(&outs);
    assert_eq!(msgs.len(), 1, "exactly one reply expected: {outs:?}");
    let (to, msg) = msgs.remove(0);
    assert_eq!(to, Peer::Site(from));
    msg
}

fn renew(epoch: u64, req: u64) -> Message {
    Message::Renew {
        epoch: Epoch(epoch),
        req,
    }
}
fn acquire(seen: u64, req: u64) -> Message {
    Message::Acquire {
        seen: Epoch(seen),
        req,
        force: false,
    }
}
fn handoff(epoch: u64, to: SiteId, req: u64) -> Message {
    Message::Handoff {
        epoch: Epoch(epoch),
        to,
        req,
    }
}
fn query(req: u64) -> Message {
    Message::Query { req }
}
fn query_at(epoch: u64, req: u64) -> Message {
    Message::QueryAt {
        epoch: Epoch(epoch),
        req,
    }
}
fn granted(epoch: u64, req: u64) -> Message {
    Message::Granted {
        epoch: Epoch(epoch),
        lease_ms: LEASE,
        req,
    }
}
fn view(
    epoch: u64,
    holder: Option<SiteId>,
    holder_renewing: bool,
    lease_lapsed: bool,
    since_renewal_ms: Option<Millis>,
) -> ArbiterView {
    ArbiterView {
        epoch: Epoch(epoch),
        holder,
        holder_renewing,
        lease_lapsed,
        since_renewal_ms,
    }
}
fn denied(view: ArbiterView, req: u64, reason: &str) -> Message {
    Message::Denied {
        view,
        req,
        reason: reason.to_string(),
    }
}
fn answered(view: ArbiterView, req: u64) -> Message {
    Message::View { view, req }
}

/// `(epoch, holder, lease_expiry, last_renewal)`: the part of the state the guards protect.
fn lease_of(arb: &Arbiter) -> (Epoch, Option<SiteId>, Millis, Option<Millis>) {
    let st = arb.state();
    (st.epoch, st.holder, st.lease_expiry, st.last_renewal)
}

// ---- Renew ----

#[test]
fn renew_from_the_holder_quoting_the_current_epoch_is_granted_a_full_lease_from_now() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 3_000, A, renew(1, 7)), granted(1, 7));
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 13_000, Some(3_000)));
    // A renewal is not a new epoch and audits nothing.
    let outs = send(&mut arb, 4_000, A, renew(1, 8));
    assert_eq!(
        sent(&outs),
        vec![(Peer::Site(A), granted(1, 8))],
        "{outs:?}"
    );
    assert!(audits(&outs).is_empty());
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 14_000, Some(4_000)));
}

#[test]
fn renew_from_a_site_that_is_not_the_holder_is_refused_even_quoting_the_current_epoch() {
    let mut arb = started_at(0);
    assert_eq!(
        reply(&mut arb, 3_000, B, renew(1, 8)),
        denied(view(1, Some(A), true, false, None), 8, NOT_HOLDER)
    );
    // Nothing changed: no holder switch, no lease extension, no renewal recorded.
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_000, None));
    assert_eq!(arb.epoch(), Epoch(1));
    assert_eq!(arb.holder(), Some(A));
    // B's refused renewal did not extend A's lease: the next epoch goes out on A's schedule.
    assert_eq!(
        reply(&mut arb, 10_500, B, acquire(1, 9)),
        granted(2, 9),
        "B's refused renew must not have moved the lease"
    );
}

#[test]
fn renew_from_the_holder_quoting_an_old_epoch_is_refused() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 10_500, B, acquire(1, 1)), granted(2, 1));
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 20_500, Some(10_500)));
    // B holds epoch 2; quoting epoch 1 (its view before the grant) is refused.
    assert_eq!(
        reply(&mut arb, 11_000, B, renew(1, 2)),
        denied(view(2, Some(B), true, false, Some(500)), 2, NOT_HOLDER)
    );
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 20_500, Some(10_500)));
    // So is the old holder renewing its old epoch: it is demoted.
    assert_eq!(
        reply(&mut arb, 11_000, A, renew(1, 3)),
        denied(view(2, Some(B), true, false, Some(500)), 3, NOT_HOLDER)
    );
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 20_500, Some(10_500)));
}

#[test]
fn a_renew_of_an_epoch_the_arbiter_never_handed_out_changes_nothing_while_the_holder_renews() {
    // Epochs come only from the arbiter: a site quoting a newer epoch (a forced failover, or a
    // forged message from a holder of that site's key) cannot take the epoch from a live holder.
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 1_000, A, renew(1, 1)), granted(1, 1));
    for (t, claimed, req, why) in [
        (2_000, 2, 2, UNKNOWN_EPOCH_LIVE_LEASE),
        (3_000, 77, 3, UNKNOWN_EPOCH_LIVE_LEASE),
        (10_500, 2, 4, NEWER_CLAIMED),
    ] {
        let outs = send(&mut arb, t, B, renew(claimed, req));
        assert_eq!(
            sent(&outs),
            vec![(
                Peer::Site(B),
                denied(view(1, Some(A), true, false, Some(t - 1_000)), req, why)
            )]
        );
        assert!(audits(&outs).is_empty(), "{outs:?}");
        assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 11_000, Some(1_000)));
    }
    // The holder keeps renewing.
    assert_eq!(reply(&mut arb, 10_600, A, renew(1, 5)), granted(1, 5));
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 20_600, Some(10_600)));
}

#[test]
fn a_renew_of_an_unknown_epoch_is_granted_as_a_new_epoch_of_that_number_once_the_lease_lapsed() {
    // B took epoch 3 by a forced failover while the arbiter was unreachable; A is gone.
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 1_000, A, renew(1, 1)), granted(1, 1));
    assert_eq!(
        reply(&mut arb, 11_499, B, renew(3, 2)),
        denied(
            view(1, Some(A), false, false, Some(10_499)),
            2,
            UNKNOWN_EPOCH_LIVE_LEASE
        )
    );
    let outs = send(&mut arb, 11_500, B, renew(3, 3));
    assert_eq!(sent(&outs), vec![(Peer::Site(B), granted(3, 3))]);
    assert_eq!(audits(&outs), vec!["new epoch".to_string()]);
    assert_eq!(lease_of(&arb), (Epoch(3), Some(B), 21_500, Some(11_500)));
    // The old holder is refused from then on, and learns who holds the epoch.
    assert_eq!(
        reply(&mut arb, 12_000, A, renew(1, 4)),
        denied(view(3, Some(B), true, false, Some(500)), 4, NOT_HOLDER)
    );
    // And nobody else gets epoch 3 by quoting it.
    assert_eq!(
        reply(&mut arb, 40_000, A, renew(3, 5)),
        denied(view(3, Some(B), false, true, Some(28_500)), 5, NOT_HOLDER)
    );
}

#[test]
fn a_claim_further_ahead_than_forced_failovers_go_is_refused_even_after_the_lease_lapsed() {
    let mut arb = started_at(0);
    let far = 1 + lifeboat_core::arbiter::MAX_EPOCH_LEAD + 1;
    for (req, msg) in [
        (1, renew(far, 1)),
        (2, acquire(far, 2)),
        (3, acquire(u64::MAX, 3)),
    ] {
        let outs = send(&mut arb, 50_000, B, msg);
        assert_eq!(
            sent(&outs),
            vec![(
                Peer::Site(B),
                denied(view(1, Some(A), false, true, None), req, TOO_FAR)
            )]
        );
        assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_000, None));
    }
    // At the bound it is a number like any other.
    let near = 1 + lifeboat_core::arbiter::MAX_EPOCH_LEAD;
    assert_eq!(
        reply(&mut arb, 50_000, B, acquire(near, 4)),
        granted(near + 1, 4)
    );
}

#[test]
fn an_older_epoch_is_never_taken_back() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 20_000, B, acquire(4, 1)), granted(5, 1));
    assert_eq!(lease_of(&arb), (Epoch(5), Some(B), 30_000, Some(20_000)));
    for (site, old, req) in [(A, 4, 2), (B, 1, 3), (A, 0, 4)] {
        let outs = send(&mut arb, 21_000, site, renew(old, req));
        assert_eq!(
            sent(&outs),
            vec![(
                Peer::Site(site),
                denied(view(5, Some(B), true, false, Some(1_000)), req, NOT_HOLDER)
            )],
            "renewing epoch {old} must not be taken over epoch 5"
        );
        assert!(audits(&outs).is_empty(), "{outs:?}");
        assert_eq!(lease_of(&arb), (Epoch(5), Some(B), 30_000, Some(20_000)));
    }
    // Acquire reporting an older epoch does not move it back either.
    assert_eq!(
        reply(&mut arb, 21_000, A, acquire(2, 5)),
        denied(view(5, Some(B), true, false, Some(1_000)), 5, NOT_LAPSED)
    );
    // Also long after its lease lapsed, and quoting an older epoch: the next number.
    assert_eq!(reply(&mut arb, 80_000, A, acquire(0, 6)), granted(6, 6));
    assert_eq!(lease_of(&arb), (Epoch(6), Some(A), 90_000, Some(80_000)));
}

#[test]
fn the_first_lease_runs_from_the_arbiters_first_input() {
    let mut arb = Arbiter::new(cfg());
    // The first thing the arbiter ever hears, at 7 000, is B asking for the epoch: A may still
    // be writing, so its lease counts from now.
    assert_eq!(
        reply(&mut arb, 7_000, B, acquire(1, 1)),
        denied(view(1, Some(A), true, false, None), 1, NOT_LAPSED)
    );
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 17_000, None));
    assert_eq!(
        reply(&mut arb, 17_499, B, acquire(1, 2)),
        denied(view(1, Some(A), false, false, None), 2, NOT_LAPSED)
    );
    assert_eq!(reply(&mut arb, 17_500, B, acquire(1, 3)), granted(2, 3));
}

#[test]
fn acquire_is_refused_while_the_lease_plus_drift_margin_runs_and_granted_just_after() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 2_000, A, renew(1, 1)), granted(1, 1));
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 12_000, Some(2_000)));
    // While the lease runs.
    assert_eq!(
        reply(&mut arb, 11_999, B, acquire(1, 2)),
        denied(view(1, Some(A), true, false, Some(9_999)), 2, NOT_LAPSED)
    );
    // The lease itself ended, the drift margin has not.
    assert_eq!(
        reply(&mut arb, 12_000, B, acquire(1, 3)),
        denied(view(1, Some(A), false, false, Some(10_000)), 3, NOT_LAPSED)
    );
    // expiry + margin - 1.
    assert_eq!(
        reply(&mut arb, 12_499, B, acquire(1, 4)),
        denied(view(1, Some(A), false, false, Some(10_499)), 4, NOT_LAPSED)
    );
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 12_000, Some(2_000)));
    // expiry + margin: the next epoch, for a full lease from now.
    let outs = send(&mut arb, 12_500, B, acquire(1, 5));
    assert_eq!(sent(&outs), vec![(Peer::Site(B), granted(2, 5))]);
    assert_eq!(audits(&outs), vec!["new epoch".to_string()]);
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 22_500, Some(12_500)));
    assert_eq!(arb.epoch(), Epoch(2));
    assert_eq!(arb.holder(), Some(B));
}

#[test]
fn a_grants_lease_expiry_is_exactly_now_plus_lease_ms() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 4_321, A, renew(1, 1)), granted(1, 1));
    assert_eq!(arb.state().lease_expiry, 4_321 + LEASE);
    assert_eq!(
        reply(&mut arb, 14_320, B, query(2)),
        answered(view(1, Some(A), true, false, Some(9_999)), 2)
    );
    assert_eq!(
        reply(&mut arb, 14_321, B, query(3)),
        answered(view(1, Some(A), false, false, Some(10_000)), 3)
    );
    assert_eq!(
        reply(&mut arb, 14_820, B, acquire(1, 4)),
        denied(view(1, Some(A), false, false, Some(10_499)), 4, NOT_LAPSED)
    );
    assert_eq!(reply(&mut arb, 14_821, B, acquire(1, 5)), granted(2, 5));
    assert_eq!(arb.state().lease_expiry, 14_821 + LEASE);
    // A holder that renews after its own lease ran out (nobody took the epoch) gets a full
    // lease from now, not from its old expiry.
    assert_eq!(reply(&mut arb, 40_000, B, renew(2, 6)), granted(2, 6));
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 50_000, Some(40_000)));
    // The holder re-acquiring also gets exactly now + lease_ms.
    assert_eq!(reply(&mut arb, 41_234, B, acquire(2, 7)), granted(2, 7));
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 51_234, Some(41_234)));
}

#[test]
fn acquire_from_the_current_holder_is_granted_its_own_epoch_without_starting_a_new_one() {
    let mut arb = started_at(0);
    let outs = send(&mut arb, 1_000, A, acquire(1, 1));
    assert_eq!(sent(&outs), vec![(Peer::Site(A), granted(1, 1))]);
    assert!(audits(&outs).is_empty());
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 11_000, Some(1_000)));
    // Also long after its lease lapsed, and quoting an older epoch.
    assert_eq!(reply(&mut arb, 50_000, A, acquire(0, 2)), granted(1, 2));
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 60_000, Some(50_000)));
}

#[test]
fn acquire_reporting_a_newer_epoch_changes_nothing_until_the_lease_lapsed_then_gets_the_number_after_it(
) {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 5_000, A, renew(1, 1)), granted(1, 1));
    let outs = send(&mut arb, 6_000, B, acquire(4, 2));
    assert_eq!(
        sent(&outs),
        vec![(
            Peer::Site(B),
            denied(view(1, Some(A), true, false, Some(1_000)), 2, NOT_LAPSED)
        )]
    );
    assert!(audits(&outs).is_empty());
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 15_000, Some(5_000)));
    assert_eq!(
        reply(&mut arb, 15_499, B, acquire(4, 3)),
        denied(view(1, Some(A), false, false, Some(10_499)), 3, NOT_LAPSED)
    );
    // Past epoch 4, which a forced failover took without the arbiter: never the same number.
    assert_eq!(reply(&mut arb, 15_500, B, acquire(4, 4)), granted(5, 4));
    assert_eq!(lease_of(&arb), (Epoch(5), Some(B), 25_500, Some(15_500)));
}

// ---- Handoff ----

#[test]
fn handoff_from_the_holder_with_the_current_epoch_starts_the_next_epoch_for_the_target() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 1_000, A, renew(1, 1)), granted(1, 1));
    send(&mut arb, 3_500, B, query(77)); // the target reaches the arbiter
    let outs = send(&mut arb, 4_000, A, handoff(1, B, 9));
    let v = view(2, Some(B), true, false, Some(0));
    assert_eq!(
        sent(&outs),
        vec![
            (Peer::Site(A), answered(v.clone(), 9)),
            (Peer::Site(B), answered(v, 0)),
        ]
    );
    assert_eq!(audits(&outs), vec!["hand-off".to_string()]);
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 14_000, Some(4_000)));
    assert_eq!(arb.epoch(), Epoch(2));
    assert_eq!(arb.holder(), Some(B));
    // The new holder renews its epoch; the old one is refused.
    assert_eq!(reply(&mut arb, 5_000, B, renew(2, 2)), granted(2, 2));
    assert_eq!(
        reply(&mut arb, 5_000, A, renew(1, 3)),
        denied(view(2, Some(B), true, false, Some(0)), 3, NOT_HOLDER)
    );
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 15_000, Some(5_000)));
}

#[test]
fn handoff_from_a_non_holder_is_refused() {
    let mut arb = started_at(0);
    for (to, req) in [(B, 3), (A, 4)] {
        assert_eq!(
            reply(&mut arb, 1_000, B, handoff(1, to, req)),
            denied(
                view(1, Some(A), true, false, None),
                req,
                ONLY_HOLDER_HANDS_OFF
            )
        );
        assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_000, None));
    }
}

#[test]
fn handoff_with_a_stale_epoch_is_refused() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 10_500, B, acquire(1, 1)), granted(2, 1));
    // B holds epoch 2 and quotes epoch 1, then an epoch that does not exist yet.
    for (epoch, to, req) in [(1, A, 2), (1, B, 3), (3, A, 4)] {
        assert_eq!(
            reply(&mut arb, 11_000, B, handoff(epoch, to, req)),
            denied(
                view(2, Some(B), true, false, Some(500)),
                req,
                ONLY_HOLDER_HANDS_OFF
            ),
            "hand-off of epoch {epoch} while epoch 2 is current"
        );
        assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 20_500, Some(10_500)));
    }
}

#[test]
fn handoff_to_a_site_that_does_not_exist_is_refused() {
    let mut arb = started_at(0);
    assert_eq!(
        reply(&mut arb, 1_000, A, handoff(1, NOWHERE, 5)),
        denied(
            view(1, Some(A), true, false, None),
            5,
            ONLY_HOLDER_HANDS_OFF
        )
    );
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_000, None));
}

#[test]
fn after_a_handoff_the_new_holder_has_a_full_lease() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 9_000, A, renew(1, 1)), granted(1, 1));
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 19_000, Some(9_000)));
    send(&mut arb, 14_000, B, query_at(1, 77)); // the target reaches the arbiter
    let outs = send(&mut arb, 15_000, A, handoff(1, B, 2));
    let v = view(2, Some(B), true, false, Some(0));
    assert_eq!(
        sent(&outs),
        vec![
            (Peer::Site(A), answered(v.clone(), 2)),
            (Peer::Site(B), answered(v, 0)),
        ]
    );
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 25_000, Some(15_000)));
    assert_eq!(
        reply(&mut arb, 24_999, A, query(3)),
        answered(view(2, Some(B), true, false, Some(9_999)), 3)
    );
    assert_eq!(
        reply(&mut arb, 25_000, A, query(4)),
        answered(view(2, Some(B), false, false, Some(10_000)), 4)
    );
    // Nobody takes the next epoch before the new holder's lease plus the margin.
    assert_eq!(
        reply(&mut arb, 25_499, A, acquire(2, 5)),
        denied(view(2, Some(B), false, false, Some(10_499)), 5, NOT_LAPSED)
    );
    assert_eq!(reply(&mut arb, 25_500, A, acquire(2, 6)), granted(3, 6));
    assert_eq!(lease_of(&arb), (Epoch(3), Some(A), 35_500, Some(25_500)));
}

#[test]
fn after_an_early_handoff_the_new_holder_has_a_full_lease() {
    // A hand-off before one lease length has passed on the arbiter's clock.
    let mut arb = started_at(0);
    send(&mut arb, 2_000, B, query(77)); // the target reaches the arbiter
    let outs = send(&mut arb, 3_000, A, handoff(1, B, 1));
    let v = view(2, Some(B), true, false, Some(0));
    assert_eq!(
        sent(&outs),
        vec![
            (Peer::Site(A), answered(v.clone(), 1)),
            (Peer::Site(B), answered(v, 0)),
        ]
    );
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 13_000, Some(3_000)));
    assert_eq!(
        reply(&mut arb, 13_499, A, acquire(2, 2)),
        denied(view(2, Some(B), false, false, Some(10_499)), 2, NOT_LAPSED)
    );
    assert_eq!(reply(&mut arb, 13_500, A, acquire(2, 3)), granted(3, 3));
}

// ---- Query and the rest ----

#[test]
fn query_reports_holder_epoch_and_whether_the_lease_lapsed_truthfully() {
    let mut arb = started_at(0);
    assert_eq!(
        reply(&mut arb, 0, A, query(1)),
        answered(view(1, Some(A), true, false, None), 1)
    );
    assert_eq!(reply(&mut arb, 1_000, A, renew(1, 2)), granted(1, 2));
    let before = lease_of(&arb);
    for (t, renewing, lapsed) in [
        (10_999, true, false),
        (11_000, false, false),
        (11_499, false, false),
        (11_500, false, true),
        (99_000, false, true),
    ] {
        for (site, req) in [(A, t), (B, t + 1)] {
            let outs = send(&mut arb, t, site, query(req));
            assert_eq!(
                sent(&outs),
                vec![(
                    Peer::Site(site),
                    answered(view(1, Some(A), renewing, lapsed, Some(t - 1_000)), req)
                )],
                "query at {t}"
            );
            assert!(audits(&outs).is_empty());
        }
        // A query changes nothing but the arbiter's clock.
        assert_eq!(lease_of(&arb), before);
        assert_eq!(arb.state().now, t);
        assert_eq!(
            arb.view(t),
            view(1, Some(A), renewing, lapsed, Some(t - 1_000))
        );
    }
    // After a new epoch the view follows it.
    assert_eq!(reply(&mut arb, 100_000, B, acquire(1, 3)), granted(2, 3));
    assert_eq!(
        reply(&mut arb, 100_250, A, query(4)),
        answered(view(2, Some(B), true, false, Some(250)), 4)
    );
}

#[test]
fn messages_from_an_unconfigured_site_or_not_for_the_arbiter_are_ignored() {
    let mut arb = started_at(0);
    for msg in [
        renew(1, 1),
        renew(9, 2),
        acquire(9, 3),
        acquire(1, 4),
        handoff(1, NOWHERE, 5),
        query(6),
    ] {
        assert!(send(&mut arb, 50_000, NOWHERE, msg).is_empty());
        assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_000, None));
    }
    // The arbiter's own replies sent back to it, or anything from a non-site, do nothing.
    assert!(send(&mut arb, 50_000, B, granted(5, 7)).is_empty());
    arb.handle(
        50_000,
        Input::Message {
            from: Peer::Arbiter,
            msg: renew(1, 8),
        },
    );
    assert_eq!(arb.poll_output(), None);
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_000, None));
}

#[test]
fn the_arbiters_clock_never_runs_backwards() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 5_000, A, renew(1, 1)), granted(1, 1));
    assert_eq!(
        reply(&mut arb, 16_000, B, query(2)),
        answered(view(1, Some(A), false, true, Some(11_000)), 2)
    );
    // An input stamped earlier is handled at the latest time seen.
    assert_eq!(
        reply(&mut arb, 100, B, query(3)),
        answered(view(1, Some(A), false, true, Some(11_000)), 3)
    );
    assert_eq!(arb.state().now, 16_000);
    assert_eq!(reply(&mut arb, 100, B, acquire(1, 4)), granted(2, 4));
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 26_000, Some(16_000)));
}

#[test]
fn site_status_says_how_long_ago_the_arbiter_last_heard_the_site_asked_about() {
    let mut arb = Arbiter::new(cfg());
    arb.handle(0, Input::Tick);
    let seen = |site, heard_ms_ago, req| Message::SiteSeen {
        site,
        heard_ms_ago,
        req,
    };
    let status = |site, req| Message::SiteStatus { site, req };
    // Never heard: unknown.
    assert_eq!(reply(&mut arb, 500, A, status(B, 1)), seen(B, None, 1));
    let _ = reply(&mut arb, 1_000, B, query_at(1, 2));
    assert_eq!(
        reply(&mut arb, 4_000, A, status(B, 3)),
        seen(B, Some(3_000), 3)
    );
    // Asking is not being heard: a status question carries no epoch, and an arbiter that
    // presumes its holder counts only sites that told it theirs.
    assert_eq!(reply(&mut arb, 4_500, B, status(A, 4)), seen(A, None, 4));
    let _ = send(&mut arb, 5_000, A, renew(1, 5));
    assert_eq!(
        reply(&mut arb, 5_500, B, status(A, 6)),
        seen(A, Some(500), 6)
    );
    // Asking changes nothing of the lease (the renewal did).
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 15_000, Some(5_000)));
}

#[test]
fn the_arbiter_only_answers_and_never_asks_for_a_tick() {
    // An adapter ticks an engine at its `poll_timeout`: a deadline from the arbiter would make
    // it spin (a deadline of 0 is always due) for an engine that has nothing to do on its own.
    let mut arb = Arbiter::new(cfg());
    assert_eq!(arb.poll_timeout(), None);
    arb.handle(0, Input::Tick);
    assert_eq!(arb.poll_timeout(), None);
    let _ = send(&mut arb, 1_000, A, renew(1, 1));
    assert_eq!(arb.poll_timeout(), None);
    let _ = send(&mut arb, 12_000, B, acquire(1, 2));
    assert_eq!(arb.epoch(), Epoch(2));
    assert_eq!(arb.poll_timeout(), None);
    arb.handle(13_000, Input::Restarted);
    assert_eq!(arb.poll_timeout(), None);
    assert_eq!(arb.poll_output(), None);
}

#[test]
fn a_restarted_arbiter_grants_no_new_epoch_before_a_full_lease_plus_margin_from_the_restart() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 1_000, A, renew(1, 1)), granted(1, 1));
    assert_eq!(
        reply(&mut arb, 50_000, B, query(2)),
        answered(view(1, Some(A), false, true, Some(49_000)), 2)
    );
    // The process restarts with a new monotonic clock reading 100.
    let mut arb = Arbiter::from_state(cfg(), arb.state().clone());
    arb.handle(100, Input::Restarted);
    assert_eq!(arb.poll_output(), None);
    assert_eq!(arb.state().clock_base, 49_900);
    assert_eq!(arb.state().now, 50_000);
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 60_000, Some(1_000)));
    assert_eq!(
        reply(&mut arb, 10_599, B, acquire(1, 3)),
        denied(view(1, Some(A), false, false, Some(59_499)), 3, NOT_LAPSED)
    );
    assert_eq!(reply(&mut arb, 10_600, B, acquire(1, 4)), granted(2, 4));
    assert_eq!(lease_of(&arb), (Epoch(2), Some(B), 70_500, Some(60_500)));
}

/// Issue 13, bug 3: a hand-off goes only to a site the arbiter heard within one lease; one that
/// cannot reach the arbiter could never renew, and nobody would accept writes.
#[test]
fn a_handoff_to_a_target_not_heard_within_one_lease_is_refused_and_changes_nothing() {
    let mut arb = Arbiter::new(cfg());
    arb.handle(0, Input::Tick);
    // B never told the arbiter anything: the presumed holder A has its lease once the one
    // assumed at start lapsed.
    assert_eq!(
        reply(&mut arb, LEASE + MARGIN, A, renew(1, 1)),
        granted(1, 1)
    );
    // Never heard.
    let outs = send(&mut arb, 11_000, A, handoff(1, B, 2));
    assert_eq!(audits(&outs), vec!["hand-off refused".to_string()]);
    assert!(matches!(
        sent(&outs)[..],
        [(Peer::Site(A), Message::Denied { .. })]
    ));
    assert_eq!((arb.epoch(), arb.holder()), (Epoch(1), Some(A)));
    // Heard, but more than one lease ago.
    send(&mut arb, 12_000, B, query_at(1, 3));
    assert_eq!(reply(&mut arb, 20_000, A, renew(1, 4)), granted(1, 4));
    let outs = send(&mut arb, 12_000 + LEASE + 1, A, handoff(1, B, 5));
    assert_eq!(audits(&outs), vec!["hand-off refused".to_string()]);
    assert_eq!((arb.epoch(), arb.holder()), (Epoch(1), Some(A)));
    // Heard exactly one lease ago: accepted.
    send(&mut arb, 23_000, B, query_at(1, 6));
    let outs = send(&mut arb, 23_000 + LEASE, A, handoff(1, B, 7));
    assert_eq!(audits(&outs), vec!["hand-off".to_string()]);
    assert_eq!((arb.epoch(), arb.holder()), (Epoch(2), Some(B)));
}

/// An arbiter that never granted a lease presumes A holds epoch 1 (a new deployment and a lost
/// state look alike). Before the lease it assumed at start lapsed, it grants A only once every
/// site told it its epoch.
#[test]
fn a_fresh_arbiter_grants_the_presumed_holder_once_every_site_told_its_epoch_or_a_lease_passed() {
    const WAIT: &str = "this arbiter started without a record of who holds the epoch: it grants nothing until every site told it its epoch, or one lease plus the drift margin passed";
    let mut arb = Arbiter::new(cfg());
    arb.handle(0, Input::Tick);
    assert_eq!(
        reply(&mut arb, 100, A, renew(1, 1)),
        denied(view(1, Some(A), true, false, None), 1, WAIT)
    );
    // A status question is no epoch.
    let _ = reply(&mut arb, 150, B, Message::SiteStatus { site: A, req: 2 });
    assert_eq!(
        reply(&mut arb, 200, A, acquire(1, 3)),
        denied(view(1, Some(A), true, false, None), 3, WAIT)
    );
    let _ = reply(&mut arb, 300, B, query_at(1, 4));
    assert_eq!(reply(&mut arb, 400, A, renew(1, 5)), granted(1, 5));
    assert_eq!(lease_of(&arb), (Epoch(1), Some(A), 10_400, Some(400)));

    // Nobody else speaks: the lease assumed at start, plus the margin, is the wait.
    let mut arb = Arbiter::new(cfg());
    arb.handle(0, Input::Tick);
    assert_eq!(
        reply(&mut arb, LEASE + MARGIN - 1, A, renew(1, 1)),
        denied(view(1, Some(A), true, false, None), 1, WAIT)
    );
    assert_eq!(
        reply(&mut arb, LEASE + MARGIN, A, renew(1, 2)),
        granted(1, 2)
    );

    // Swarm seed 197: the recovery site's first query comes after the assumed lease lapsed.
    // The holder it held back asked within a lease: the view says it renews, so the recovery
    // site sees a live primary, not a lapsed lease (which would start a failover).
    let mut arb = Arbiter::new(cfg());
    arb.handle(0, Input::Tick);
    let _ = reply(&mut arb, 9_000, A, renew(1, 1));
    assert_eq!(
        reply(&mut arb, 11_000, B, query_at(1, 2)),
        answered(view(1, Some(A), true, false, None), 2)
    );
    assert_eq!(
        reply(&mut arb, 19_000 - 1, B, query_at(1, 3)),
        answered(view(1, Some(A), true, false, None), 3)
    );
    assert_eq!(reply(&mut arb, 19_000, A, renew(1, 4)), granted(1, 4));
    // Silent for a lease, it is reported lapsed like any holder.
    let mut arb = Arbiter::new(cfg());
    arb.handle(0, Input::Tick);
    let _ = reply(&mut arb, 9_000, A, renew(1, 1));
    assert_eq!(
        reply(&mut arb, 19_000, B, query_at(1, 2)),
        answered(view(1, Some(A), false, true, None), 2)
    );
}

/// Swarm seed 9994367: the arbiter lost its state while B held epoch 2; A, the old primary, came
/// back and renewed epoch 1 while B still wrote under the lost arbiter's lease. A fresh arbiter
/// grants its presumed holder nothing while a newer epoch is claimed (by a renewal or a query),
/// not even once the assumed lease lapsed; the claimant gets its epoch then.
#[test]
fn a_fresh_arbiter_never_grants_the_presumed_holder_while_a_site_claims_a_newer_epoch() {
    const NEWER: &str = "this arbiter started without a record of who holds the epoch, and a site claims a newer one: only that site can have it, once the lease lapsed";
    for claim in [renew(2, 1), query_at(2, 1)] {
        let mut arb = Arbiter::new(cfg());
        arb.handle(0, Input::Tick);
        let _ = reply(&mut arb, 100, B, claim.clone());
        assert_eq!(arb.state().claimed, Some(Epoch(2)), "{claim:?}");
        assert_eq!(
            reply(&mut arb, 200, A, renew(1, 2)),
            denied(view(1, Some(A), true, false, None), 2, NEWER)
        );
        assert_eq!(
            reply(&mut arb, 300, A, acquire(1, 3)),
            denied(view(1, Some(A), true, false, None), 3, NEWER)
        );
        let outs = send(&mut arb, 400, A, handoff(1, B, 4));
        assert!(audits(&outs).is_empty(), "{outs:?}");
        assert_eq!(
            sent(&outs),
            vec![(
                Peer::Site(A),
                denied(view(1, Some(A), true, false, None), 4, NEWER)
            )]
        );
        assert_eq!(
            reply(&mut arb, LEASE + MARGIN, A, renew(1, 5)),
            denied(view(1, Some(A), false, true, None), 5, NEWER)
        );
        assert_eq!(lease_of(&arb), (Epoch(1), Some(A), LEASE, None));
        // The claimant has its epoch once the assumed lease lapsed.
        assert_eq!(
            reply(&mut arb, LEASE + MARGIN + 1, B, renew(2, 6)),
            granted(2, 6)
        );
        assert_eq!(
            lease_of(&arb),
            (
                Epoch(2),
                Some(B),
                2 * LEASE + MARGIN + 1,
                Some(LEASE + MARGIN + 1)
            )
        );
    }
}

/// Once it granted a lease an arbiter trusts its own record: a query quoting a newer epoch
/// records no claim and holds nobody back.
#[test]
fn a_query_quoting_a_newer_epoch_changes_nothing_once_the_arbiter_granted_a_lease() {
    let mut arb = started_at(0);
    assert_eq!(reply(&mut arb, 1_000, A, renew(1, 1)), granted(1, 1));
    assert_eq!(
        reply(&mut arb, 2_000, B, query_at(7, 2)),
        answered(view(1, Some(A), true, false, Some(1_000)), 2)
    );
    assert_eq!(arb.state().claimed, None);
    assert_eq!(reply(&mut arb, 3_000, A, renew(1, 3)), granted(1, 3));
}

// ---- Any sequence ----

#[derive(Clone, Debug)]
enum Step {
    Renew {
        site: u16,
        delta: i64,
    },
    Acquire {
        site: u16,
        delta: i64,
        force: bool,
    },
    Handoff {
        site: u16,
        delta: i64,
        to: u16,
    },
    Query {
        site: u16,
    },
    QueryAt {
        site: u16,
        delta: i64,
    },
    /// The arbiter restarts from its state on a new monotonic clock.
    Restart {
        clock: Millis,
    },
}

fn steps() -> impl Strategy<Value = Vec<(Millis, Step)>> {
    // Sites 0 and 1 exist, 2 does not; epochs are quoted relative to the arbiter's current one
    // so that current, stale and newer epochs all come up often.
    let site = 0u16..3;
    let delta = prop_oneof![8 => -2i64..=2, 1 => Just(1_000i64), 1 => Just(1_001i64)];
    let step = prop_oneof![
        4 => (site.clone(), delta.clone()).prop_map(|(site, delta)| Step::Renew { site, delta }),
        4 => (site.clone(), delta.clone(), any::<bool>())
            .prop_map(|(site, delta, force)| Step::Acquire { site, delta, force }),
        3 => (site.clone(), delta.clone(), 0u16..3)
            .prop_map(|(site, delta, to)| Step::Handoff { site, delta, to }),
        1 => site.clone().prop_map(|site| Step::Query { site }),
        2 => (site.clone(), delta.clone()).prop_map(|(site, delta)| Step::QueryAt { site, delta }),
        1 => (0u64..100_000).prop_map(|clock| Step::Restart { clock }),
    ];
    prop::collection::vec((0u64..12_000, step), 1..80)
}

fn quoted(arb: &Arbiter, delta: i64) -> Epoch {
    Epoch(arb.epoch().0.saturating_add_signed(delta))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Over any sequence: the epoch and the clock never go backwards, the holder changes only
    /// with the epoch (or becomes known), no epoch is ever given to two sites, a grant is for
    /// exactly `now + lease_ms`, a new epoch is granted on request only after the lease plus the
    /// margin, and every view sent is the arbiter's view at that moment.
    #[test]
    fn the_epoch_never_goes_backwards_and_no_epoch_has_two_holders_over_any_sequence(
        steps in steps()
    ) {
        let cfg = cfg();
        let mut arb = Arbiter::new(cfg.clone());
        let mut clock: Millis = 0;
        let mut owners: BTreeMap<Epoch, SiteId> = BTreeMap::new();
        owners.insert(Epoch(1), A);
        for (i, (dt, step)) in steps.into_iter().enumerate() {
            let prev = arb.state().clone();
            let (from, msg) = match step {
                Step::Restart { clock: c } => {
                    clock = c;
                    arb = Arbiter::from_state(cfg.clone(), prev.clone());
                    arb.handle(clock, Input::Restarted);
                    prop_assert_eq!(arb.poll_output(), None);
                    let st = arb.state();
                    prop_assert_eq!(st.now, prev.now.max(clock));
                    prop_assert_eq!((st.epoch, st.holder), (prev.epoch, prev.holder));
                    prop_assert!(st.lease_expiry >= st.now + LEASE);
                    continue;
                }
                Step::Renew { site, delta } => (
                    SiteId(site),
                    Message::Renew { epoch: quoted(&arb, delta), req: i as u64 },
                ),
                Step::Acquire { site, delta, force } => (
                    SiteId(site),
                    Message::Acquire { seen: quoted(&arb, delta), req: i as u64, force },
                ),
                Step::Handoff { site, delta, to } => (
                    SiteId(site),
                    Message::Handoff { epoch: quoted(&arb, delta), to: SiteId(to), req: i as u64 },
                ),
                Step::Query { site } => (SiteId(site), Message::Query { req: i as u64 }),
                Step::QueryAt { site, delta } => (
                    SiteId(site),
                    Message::QueryAt { epoch: quoted(&arb, delta), req: i as u64 },
                ),
            };
            clock += dt;
            let outs = send(&mut arb, clock, from, msg.clone());
            let st = arb.state().clone();
            let ctx = format!("step {i}: {msg:?} from {from:?} at {clock}\nbefore {prev:?}\nafter {st:?}\nout {outs:?}");

            prop_assert!(st.now >= prev.now, "{}", ctx);
            prop_assert!(st.epoch >= prev.epoch, "epoch went backwards: {}", ctx);
            if st.epoch == prev.epoch {
                prop_assert!(st.holder == prev.holder, "holder changed within an epoch: {}", ctx);
            }
            if !sent(&outs).iter().any(|(_, m)| matches!(m, Message::Granted { .. }))
                && !matches!(msg, Message::Handoff { .. })
            {
                // A refusal or an answer changes no epoch and no holder.
                prop_assert_eq!((st.epoch, st.holder), (prev.epoch, prev.holder), "{}", ctx);
            }
            prop_assert!(st.lease_expiry >= prev.lease_expiry, "lease shortened: {}", ctx);
            prop_assert!(st.lease_expiry <= st.now + LEASE, "lease beyond one length: {}", ctx);

            if from == NOWHERE {
                prop_assert!(outs.is_empty(), "{}", ctx);
                // Only the clock moves (and, on the very first input, the starting lease).
                let expiry = if prev.started {
                    prev.lease_expiry
                } else {
                    prev.lease_expiry.max(st.now + LEASE)
                };
                prop_assert_eq!(
                    (st.epoch, st.holder, st.lease_expiry, st.last_renewal),
                    (prev.epoch, prev.holder, expiry, prev.last_renewal),
                    "{}",
                    ctx
                );
                continue;
            }

            let msgs = sent(&outs);
            if let Message::Handoff { to, .. } = msg {
                if st.epoch != prev.epoch {
                    prop_assert_eq!(st.epoch, Epoch(prev.epoch.0 + 1), "{}", ctx);
                    prop_assert_eq!(prev.holder, Some(from), "{}", ctx);
                    prop_assert_eq!(st.holder, Some(to), "{}", ctx);
                    prop_assert_eq!(st.lease_expiry, st.now + LEASE, "{}", ctx);
                    prop_assert_eq!(msgs.len(), 2, "{}", ctx);
                    prop_assert_eq!(msgs[1].0, Peer::Site(to), "{}", ctx);
                    prop_assert!(owners.insert(st.epoch, to).is_none(), "epoch reused: {}", ctx);
                }
            }
            if !matches!(msg, Message::Handoff { .. }) || st.epoch == prev.epoch {
                prop_assert_eq!(msgs.len(), 1, "{}", ctx);
            }
            for (to, reply) in &msgs {
                match reply {
                    Message::Granted { epoch, lease_ms, .. } => {
                        prop_assert_eq!(*to, Peer::Site(from), "{}", ctx);
                        prop_assert_eq!(*epoch, st.epoch, "{}", ctx);
                        prop_assert_eq!(st.holder, Some(from), "{}", ctx);
                        prop_assert_eq!(*lease_ms, LEASE, "{}", ctx);
                        prop_assert_eq!(st.lease_expiry, st.now + LEASE, "{}", ctx);
                        prop_assert_eq!(st.last_renewal, Some(st.now), "{}", ctx);
                        let owner = *owners.entry(*epoch).or_insert(from);
                        prop_assert_eq!(owner, from, "epoch given to two sites: {}", ctx);
                        if *epoch != prev.epoch {
                            // Only the arbiter's rule starts an epoch, whatever the site said.
                            prop_assert!(
                                st.now >= prev.lease_expiry + MARGIN,
                                "new epoch before the lease plus margin: {}", ctx
                            );
                            prop_assert!(
                                epoch.0 <= prev.epoch.0 + 1 + lifeboat_core::arbiter::MAX_EPOCH_LEAD,
                                "a claim beyond the bound raised the epoch: {}", ctx
                            );
                            match msg {
                                Message::Acquire { seen, .. } => {
                                    let newest = prev.claimed.map_or(0, |c| c.0);
                                    prop_assert_eq!(
                                        *epoch,
                                        Epoch(prev.epoch.0.max(seen.0).max(newest) + 1),
                                        "{}", ctx
                                    )
                                }
                                Message::Renew { epoch: claimed, .. } => {
                                    prop_assert_eq!(*epoch, claimed, "{}", ctx);
                                    // The newest claim wins: a stale holder never beats it.
                                    prop_assert!(
                                        prev.claimed.is_none_or(|c| claimed >= c), "{}", ctx
                                    );
                                }
                                _ => prop_assert!(false, "new epoch from {:?}: {}", msg, ctx),
                            }
                        }
                    }
                    Message::Denied { view, .. } | Message::View { view, .. } => {
                        prop_assert_eq!(view, &arb.view(st.now), "{}", ctx);
                        if matches!(reply, Message::Denied { .. }) {
                            prop_assert_eq!(*to, Peer::Site(from), "{}", ctx);
                        }
                    }
                    other => prop_assert!(false, "unexpected reply {:?}: {}", other, ctx),
                }
            }
            prop_assert_eq!(arb.epoch(), st.epoch);
            prop_assert_eq!(arb.holder(), st.holder);
        }
    }
}
