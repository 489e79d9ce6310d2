//! The witness on etcd (issue 16): the pure translation `lifeboat_core::etcd::EtcdWitness`
//! driven against the etcd model `etcd::model::Store`, with exact replies. The last test runs
//! both sites' requests interleaved operation by operation, with lost answers and leader
//! changes, and checks that no two sites ever hold a grant at the same time.
//!
//! Timing: a lease of 10 000 ms and a drift bound of 50 000 ppm (margin 500 ms), so etcd's
//! lease TTL is 11 s (10.5 s rounded up to whole seconds).

use lifeboat_core::etcd::model::Store;
use lifeboat_core::etcd::{init_ops, Answer, Call, EtcdWitness, Keys, Next, Op, Record};
use lifeboat_core::protocol::{ArbiterView, Message};
use lifeboat_core::{Config, Epoch, Millis, SiteId};
use proptest::prelude::*;

const A: SiteId = SiteId(0);
const B: SiteId = SiteId(1);
const LEASE: Millis = 10_000;
const TTL_MS: Millis = 11_000;
const PREFIX: &str = "/lifeboat/test";

fn cfg() -> Config {
    let mut c = Config::default();
    c.lease.lease_ms = LEASE;
    c.lease.max_drift_ppm = 50_000;
    assert_eq!(c.drift_margin(), 500);
    assert_eq!(c.initial_primary_id(), A);
    c
}

/// Two sites' translations and one etcd.
struct World {
    store: Store,
    sites: [EtcdWitness; 2],
}

impl World {
    fn new() -> World {
        let cfg = cfg();
        assert_eq!(EtcdWitness::ttl_s(&cfg), 11);
        let mut store = Store::new();
        let init = store
            .run(0, &init_ops(&cfg, &Keys::new(PREFIX), 99))
            .unwrap();
        assert_eq!(init, vec![Answer::Granted, Answer::Txn { succeeded: true }]);
        World {
            store,
            sites: [
                EtcdWitness::new(&cfg, A, PREFIX, 11),
                EtcdWitness::new(&cfg, B, PREFIX, 22),
            ],
        }
    }

    /// One request, every call applied at `now`; the reply.
    fn ask(&mut self, site: SiteId, now: Millis, msg: Message) -> Next {
        let w = &mut self.sites[usize::from(site.0)];
        let mut call = w.request(msg).expect("a witness request");
        loop {
            let answers = self.store.run(now, &call.ops);
            match w.answer(call, answers) {
                Next::Call(c) => call = c,
                other => return other,
            }
        }
    }

    fn reply(&mut self, site: SiteId, now: Millis, msg: Message) -> Message {
        match self.ask(site, now, msg) {
            Next::Reply(m) => m,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn record(&self) -> Record {
        Record::decode(&self.store.get(&format!("{PREFIX}/epoch")).unwrap().value).unwrap()
    }
}

fn granted(epoch: u64, req: u64) -> Message {
    Message::Granted {
        epoch: Epoch(epoch),
        lease_ms: LEASE,
        req,
    }
}

fn denied_reason(m: &Message) -> (&str, &ArbiterView) {
    match m {
        Message::Denied { reason, view, .. } => (reason.as_str(), view),
        other => panic!("expected a denial, got {other:?}"),
    }
}

fn view_of(m: &Message) -> &ArbiterView {
    match m {
        Message::View { view, .. } => view,
        other => panic!("expected a view, got {other:?}"),
    }
}

#[test]
fn a_prefix_without_keys_is_answered_nothing_and_the_reason_names_witness_init() {
    let cfg = cfg();
    let mut store = Store::new();
    let mut w = EtcdWitness::new(&cfg, A, PREFIX, 1);
    let call = w
        .request(Message::Renew {
            epoch: Epoch(1),
            req: 1,
        })
        .unwrap();
    let answers = store.run(0, &call.ops);
    match w.answer(call, answers) {
        Next::Nothing(why) => {
            assert!(why.contains("lifeboat witness init"), "{why}");
            assert!(why.contains("/lifeboat/test/epoch"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_value_that_is_not_an_epoch_record_is_refused_by_name() {
    let cfg = cfg();
    let mut store = Store::new();
    store
        .apply(
            0,
            &Op::Txn {
                when: vec![],
                then: vec![lifeboat_core::etcd::Put {
                    key: format!("{PREFIX}/epoch"),
                    value: b"leader=x".to_vec(),
                    lease: 0,
                }],
            },
        )
        .unwrap();
    let mut w = EtcdWitness::new(&cfg, B, PREFIX, 1);
    let call = w
        .request(Message::QueryAt {
            epoch: Epoch(1),
            req: 3,
        })
        .unwrap();
    let answers = store.run(0, &call.ops);
    match w.answer(call, answers) {
        Next::Nothing(why) => assert!(why.contains("not a lifeboat epoch record"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn init_never_overwrites_a_prefix_that_has_keys() {
    let cfg = cfg();
    let keys = Keys::new(PREFIX);
    let mut store = Store::new();
    assert_eq!(
        store.run(0, &init_ops(&cfg, &keys, 5)),
        Ok(vec![Answer::Granted, Answer::Txn { succeeded: true }])
    );
    assert_eq!(
        store.run(1, &init_ops(&cfg, &keys, 6)),
        Ok(vec![Answer::Granted, Answer::Txn { succeeded: false }])
    );
    assert_eq!(
        Record::decode(&store.get(&keys.epoch()).unwrap().value),
        Some(Record {
            epoch: Epoch(1),
            holder: A
        })
    );
    assert_eq!(
        store.get(&keys.deployment()).unwrap().value,
        b"sites=primary,recovery".to_vec()
    );
}

#[test]
fn the_initial_primary_renews_and_the_recovery_site_is_denied_until_the_ttl_ran_out() {
    let mut w = World::new();
    let renew = Message::Renew {
        epoch: Epoch(1),
        req: 1,
    };
    assert_eq!(w.reply(A, 1_000, renew.clone()), granted(1, 1));
    // Kept alive at 3 000: the TTL runs from there.
    assert_eq!(w.reply(A, 3_000, renew), granted(1, 1));
    let acquire = |req| Message::Acquire {
        seen: Epoch(1),
        req,
        force: false,
    };
    let m = w.reply(B, 3_000 + TTL_MS - 1, acquire(2));
    let (why, view) = denied_reason(&m);
    assert_eq!(
        why,
        "the holder's lease has not expired (plus the drift margin)"
    );
    assert!(view.holder_renewing && !view.lease_lapsed);
    assert_eq!(view.holder, Some(A));
    assert_eq!(w.reply(B, 3_000 + TTL_MS, acquire(3)), granted(2, 3));
    assert_eq!(
        w.record(),
        Record {
            epoch: Epoch(2),
            holder: B
        }
    );
    // The old primary is back: its epoch is gone.
    let m = w.reply(
        A,
        3_000 + TTL_MS + 1,
        Message::Renew {
            epoch: Epoch(1),
            req: 4,
        },
    );
    let (why, view) = denied_reason(&m);
    assert_eq!(why, "not the holder of the current epoch");
    assert_eq!((view.epoch, view.holder), (Epoch(2), Some(B)));
}

#[test]
fn an_acquire_applied_but_unanswered_is_granted_the_same_epoch_when_asked_again() {
    let mut w = World::new();
    // A never renewed: the lease `witness init` started for it ran out.
    let acquire = Message::Acquire {
        seen: Epoch(1),
        req: 7,
        force: false,
    };
    let wb = &mut w.sites[1];
    let call = wb.request(acquire.clone()).unwrap();
    let answers = w.store.run(TTL_MS + 100, &call.ops);
    let Next::Call(write) = wb.answer(call, answers) else {
        panic!("a write")
    };
    // Applied at etcd, but the answer is lost.
    let _ = w.store.run(TTL_MS + 100, &write.ops).unwrap();
    assert_eq!(
        wb.answer(write, Err("deadline exceeded".into())),
        Next::Nothing("etcd did not answer: deadline exceeded".into())
    );
    // Asked again: the record already names B; no epoch is burnt.
    assert_eq!(w.reply(B, TTL_MS + 200, acquire), granted(2, 7));
    assert_eq!(w.record().epoch, Epoch(2));
}

#[test]
fn two_acquisitions_interleaved_grant_one_epoch_to_one_site() {
    let mut w = World::new();
    let acquire = |req| Message::Acquire {
        seen: Epoch(1),
        req,
        force: true,
    };
    // Past the lease `witness init` started: both read an empty `alive` before either writes.
    let ca = w.sites[0].request(acquire(1)).unwrap();
    let cb = w.sites[1].request(acquire(2)).unwrap();
    let ra = w.store.run(TTL_MS + 10, &ca.ops);
    let rb = w.store.run(TTL_MS + 10, &cb.ops);
    let Next::Call(wa) = w.sites[0].answer(ca, ra) else {
        panic!()
    };
    let Next::Call(wb) = w.sites[1].answer(cb, rb) else {
        panic!()
    };
    let ra = w.store.run(TTL_MS + 11, &wb.ops);
    let rb = w.store.run(TTL_MS + 12, &wa.ops);
    assert_eq!(w.sites[1].answer(wb, ra), Next::Reply(granted(2, 2)));
    match w.sites[0].answer(wa, rb) {
        Next::Reply(m) => assert_eq!(
            denied_reason(&m).0,
            "another site changed the witness's record first"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_hand_off_needs_a_target_the_witness_heard_and_the_target_keeps_the_handed_lease() {
    let mut w = World::new();
    assert_eq!(
        w.reply(
            A,
            0,
            Message::Renew {
                epoch: Epoch(1),
                req: 1
            }
        ),
        granted(1, 1)
    );
    let handoff = |req| Message::Handoff {
        epoch: Epoch(1),
        to: B,
        req,
    };
    let m = w.reply(A, 10, handoff(2));
    assert_eq!(
        denied_reason(&m).0,
        "the target has not reached the witness within one lease"
    );
    // B's query makes it heard (its presence key, on its own lease).
    let v = w.reply(
        B,
        20,
        Message::QueryAt {
            epoch: Epoch(1),
            req: 3,
        },
    );
    assert_eq!(view_of(&v).holder, Some(A));
    let v = w.reply(A, 30, handoff(4));
    let v = view_of(&v);
    assert_eq!(
        (v.epoch, v.holder, v.holder_renewing),
        (Epoch(2), Some(B), true)
    );
    assert_eq!(
        w.record(),
        Record {
            epoch: Epoch(2),
            holder: B
        }
    );
    // B renews the lease A started for it, long after A's own lease would have run out.
    for t in [5_000, 15_000, 25_000] {
        assert_eq!(
            w.reply(
                B,
                t,
                Message::Renew {
                    epoch: Epoch(2),
                    req: t
                }
            ),
            granted(2, t)
        );
    }
    // A cannot take it back while B renews.
    let m = w.reply(
        A,
        25_001,
        Message::Acquire {
            seen: Epoch(2),
            req: 9,
            force: false,
        },
    );
    assert_eq!(
        denied_reason(&m).0,
        "the holder's lease has not expired (plus the drift margin)"
    );
}

#[test]
fn a_leader_change_extends_every_lease_and_never_shortens_one() {
    let mut w = World::new();
    let renew = Message::Renew {
        epoch: Epoch(1),
        req: 1,
    };
    assert_eq!(w.reply(A, 0, renew), granted(1, 1));
    // A new leader at 5 000: the lease runs a full TTL from there.
    w.store.leader_change(5_000);
    let acquire = |req| Message::Acquire {
        seen: Epoch(1),
        req,
        force: false,
    };
    let m = w.reply(B, TTL_MS + 1, acquire(2));
    assert!(denied_reason(&m).1.holder_renewing);
    assert_eq!(w.reply(B, 5_000 + TTL_MS, acquire(3)), granted(2, 3));
    // A leader change while a lease has more left than a TTL does not cut it.
    let mut store = Store::new();
    store
        .apply(
            0,
            &Op::Grant {
                lease: 5,
                ttl_s: 11,
            },
        )
        .unwrap();
    store.leader_change(0);
    assert_eq!(
        store.apply(10_999, &Op::TimeToLive { lease: 5 }),
        Ok(Answer::Ttl { remaining_s: 0 })
    );
    assert_eq!(
        store.apply(11_000, &Op::TimeToLive { lease: 5 }),
        Ok(Answer::Ttl { remaining_s: -1 })
    );
}

#[test]
fn a_view_counts_the_time_since_the_holders_last_renewal_from_the_lease_ttl() {
    let mut w = World::new();
    assert_eq!(
        w.reply(
            A,
            0,
            Message::Renew {
                epoch: Epoch(1),
                req: 1
            }
        ),
        granted(1, 1)
    );
    let q = |req| Message::QueryAt {
        epoch: Epoch(1),
        req,
    };
    let v = w.reply(B, 3_500, q(2));
    // 7.5 s remain, read as 7 (etcd truncates): 4 s since, never less than the truth.
    assert_eq!(view_of(&v).since_renewal_ms, Some(4_000));
    assert!(view_of(&v).holder_renewing && !view_of(&v).lease_lapsed);
    let v = w.reply(B, TTL_MS, q(3));
    let v = view_of(&v);
    assert_eq!(
        (v.holder_renewing, v.lease_lapsed, v.since_renewal_ms),
        (false, true, None)
    );
}

#[test]
fn the_primary_asks_when_it_last_heard_the_recovery_site() {
    let mut w = World::new();
    let ask = |req| Message::SiteStatus { site: B, req };
    assert_eq!(
        w.reply(A, 0, ask(1)),
        Message::SiteSeen {
            site: B,
            heard_ms_ago: None,
            req: 1
        }
    );
    let _ = w.reply(
        B,
        1_000,
        Message::QueryAt {
            epoch: Epoch(1),
            req: 2,
        },
    );
    assert_eq!(
        w.reply(A, 3_000, ask(3)),
        Message::SiteSeen {
            site: B,
            heard_ms_ago: Some(2_000),
            req: 3
        }
    );
    // B silent for a TTL: its presence is gone.
    assert_eq!(
        w.reply(A, 1_000 + TTL_MS, ask(4)),
        Message::SiteSeen {
            site: B,
            heard_ms_ago: None,
            req: 4
        }
    );
}

#[test]
fn a_forced_failovers_epoch_is_remembered_and_later_epochs_go_past_it() {
    let mut w = World::new();
    assert_eq!(
        w.reply(
            A,
            0,
            Message::Renew {
                epoch: Epoch(1),
                req: 1
            }
        ),
        granted(1, 1)
    );
    // B forced epoch 5 while cut off; A still renews.
    let m = w.reply(
        B,
        100,
        Message::Renew {
            epoch: Epoch(5),
            req: 2,
        },
    );
    assert_eq!(
        denied_reason(&m).0,
        "this witness did not hand out that epoch, and the holder's lease has not expired (plus \
         the drift margin)"
    );
    assert_eq!(
        w.store.get(&format!("{PREFIX}/claimed")).unwrap().value,
        b"epoch=5".to_vec()
    );
    // A stops; once its lease ran out, A itself acquires again: past the claim.
    assert_eq!(
        w.reply(
            A,
            TTL_MS,
            Message::Acquire {
                seen: Epoch(1),
                req: 3,
                force: false
            }
        ),
        granted(1, 3)
    );
    let t = 2 * TTL_MS;
    assert_eq!(
        w.reply(
            B,
            t,
            Message::Acquire {
                seen: Epoch(1),
                req: 4,
                force: false
            }
        ),
        granted(6, 4)
    );
    // A claim far beyond is refused outright.
    let m = w.reply(
        A,
        t + 1,
        Message::Renew {
            epoch: Epoch(5_000),
            req: 5,
        },
    );
    assert!(denied_reason(&m)
        .0
        .starts_with("that epoch is further ahead"));
}

#[test]
fn a_new_deployment_counts_its_initial_primary_as_holding_for_one_lease_from_init() {
    let mut w = World::new();
    let q = w.reply(
        B,
        TTL_MS - 1,
        Message::QueryAt {
            epoch: Epoch(1),
            req: 1,
        },
    );
    let v = view_of(&q);
    assert!(v.holder_renewing && !v.lease_lapsed, "{v:?}");
    let acquire = |req| Message::Acquire {
        seen: Epoch(1),
        req,
        force: false,
    };
    let m = w.reply(B, TTL_MS - 1, acquire(2));
    assert_eq!(
        denied_reason(&m).0,
        "the holder's lease has not expired (plus the drift margin)"
    );
    // The primary's first renewal keeps the lease init started.
    assert_eq!(
        w.reply(
            A,
            TTL_MS - 1,
            Message::Renew {
                epoch: Epoch(1),
                req: 3
            }
        ),
        granted(1, 3)
    );
    let m = w.reply(B, 2 * TTL_MS - 2, acquire(4));
    assert!(denied_reason(&m).1.holder_renewing);
    // A primary that never starts: its lease runs out and the recovery site takes over.
    let mut w = World::new();
    assert_eq!(w.reply(B, TTL_MS, acquire(5)), granted(2, 5));
}

#[test]
fn a_renewal_after_the_lease_lapsed_is_denied_and_the_next_one_takes_the_epoch_again() {
    let mut w = World::new();
    let renew = |req| Message::Renew {
        epoch: Epoch(1),
        req,
    };
    assert_eq!(w.reply(A, 0, renew(1)), granted(1, 1));
    // The read sees `alive`; the lease runs out before the keep-alive arrives.
    let wa = &mut w.sites[0];
    let call = wa.request(renew(2)).unwrap();
    let answers = w.store.run(TTL_MS - 1, &call.ops);
    let Next::Call(keep) = wa.answer(call, answers) else {
        panic!()
    };
    assert!(matches!(keep.ops[..], [Op::KeepAlive { .. }]));
    let answers = w.store.run(TTL_MS, &keep.ops);
    match wa.answer(keep, answers) {
        Next::Reply(m) => {
            let (why, view) = denied_reason(&m);
            assert!(why.starts_with("the lease lapsed at the witness"), "{why}");
            assert!(view.lease_lapsed && !view.holder_renewing);
        }
        other => panic!("{other:?}"),
    }
    // Nobody took it: the next renewal takes epoch 1 again, on a new lease.
    assert_eq!(w.reply(A, TTL_MS + 100, renew(3)), granted(1, 3));
}

/// One step of the interleaving test.
#[derive(Clone, Debug)]
enum Step {
    /// Site `0`/`1` sends a request (kind 0..4) at the current time.
    Send(usize, u8),
    /// Deliver the next call of a site's oldest request, maybe losing its answer.
    Deliver(usize, bool),
    Advance(Millis),
    LeaderChange,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize, 0..4u8).prop_map(|(s, k)| Step::Send(s, k)),
        (0..2usize, prop::bool::weighted(0.1)).prop_map(|(s, l)| Step::Deliver(s, l)),
        (0..4_000u64).prop_map(Step::Advance),
        Just(Step::LeaderChange),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the interleaving of both sites' operations, lost answers and leader changes: a
    /// site that got `Granted` holds until it sent its request plus the lease minus the fence
    /// margin, and no two sites' holds overlap; an epoch is granted to one site only.
    #[test]
    fn no_two_sites_hold_a_grant_at_once(steps in prop::collection::vec(step(), 1..120)) {
        let cfg = cfg();
        let mut w = World::new();
        let mut now: Millis = 0;
        // Per site: requests in flight (sent at, current call).
        let mut flight: [Vec<(Millis, u64, Call)>; 2] = [Vec::new(), Vec::new()];
        // Per site: the request number of its latest hand-off. A switchover stops writes before
        // it hands off, and a grant of a renewal sent before that does not resume them.
        let mut handed: [u64; 2] = [0, 0];
        // Per site: its epoch, and until when it may write.
        let mut epoch = [Epoch(1), Epoch(1)];
        let mut holds: [Option<(Epoch, Millis)>; 2] = [None, None];
        let mut owner: std::collections::BTreeMap<Epoch, usize> = Default::default();
        let mut req = 0;
        for s in steps {
            match s {
                Step::Send(site, kind) => {
                    req += 1;
                    let msg = match kind {
                        0 => Message::Renew { epoch: epoch[site], req },
                        1 => Message::Acquire { seen: epoch[site], req, force: false },
                        2 => Message::Handoff { epoch: epoch[site], to: SiteId(1 - site as u16), req },
                        _ => Message::QueryAt { epoch: epoch[site], req },
                    };
                    if kind == 2 {
                        holds[site] = None;
                        handed[site] = req;
                    }
                    if let Some(call) = w.sites[site].request(msg) {
                        flight[site].push((now, req, call));
                    }
                }
                Step::Deliver(site, lose) => {
                    if flight[site].is_empty() {
                        continue;
                    }
                    let (sent, n, call) = flight[site].remove(0);
                    let answers = w.store.run(now, &call.ops);
                    let answers = if lose { Err("lost".to_string()) } else { answers };
                    match w.sites[site].answer(call, answers) {
                        Next::Call(c) => flight[site].insert(0, (sent, n, c)),
                        Next::Reply(Message::Granted { epoch: e, lease_ms, .. }) => {
                            prop_assert!(e >= epoch[site] || holds[site].is_none());
                            let until = sent + lease_ms - cfg.fence_margin();
                            if let Some(&o) = owner.get(&e) {
                                prop_assert_eq!(o, site, "epoch {} granted to both sites", e);
                            }
                            owner.insert(e, site);
                            epoch[site] = e;
                            if until > now && n > handed[site] {
                                holds[site] = Some((e, until.max(holds[site].map_or(0, |h| h.1))));
                            }
                        }
                        Next::Reply(Message::View { view, .. }) => {
                            // A hand-off to this site: it holds once it renews. A view never
                            // ends a hold: a holder may learn nothing until its deadline.
                            if view.holder == Some(SiteId(site as u16)) && view.epoch > epoch[site] {
                                epoch[site] = view.epoch;
                            }
                        }
                        Next::Reply(_) | Next::Nothing(_) => {}
                    }
                }
                Step::Advance(ms) => now += ms,
                Step::LeaderChange => w.store.leader_change(now),
            }
            for h in &mut holds {
                if h.is_some_and(|(_, until)| until <= now) {
                    *h = None;
                }
            }
            if let (Some((ea, ua)), Some((eb, ub))) = (holds[0], holds[1]) {
                prop_assert!(false, "both sites hold at {}: A epoch {} until {}, B epoch {} until {}", now, ea, ua, eb, ub);
            }
        }
    }
}

#[test]
fn a_read_that_failed_starts_a_new_presence_lease_with_the_next_request() {
    let mut w = World::new();
    let q = |req| Message::QueryAt {
        epoch: Epoch(1),
        req,
    };
    let _ = w.reply(B, 0, q(1));
    let wb = &mut w.sites[1];
    let call = wb.request(q(2)).unwrap();
    assert!(
        matches!(call.ops[0], Op::KeepAlive { .. }),
        "{:?}",
        call.ops
    );
    assert!(matches!(
        wb.answer(call, Err("timeout".into())),
        Next::Nothing(_)
    ));
    // The keep-alive may or may not have reached etcd: a new lease, not a dead one kept.
    let call = wb.request(q(3)).unwrap();
    assert!(matches!(call.ops[0], Op::Grant { .. }), "{:?}", call.ops);
}
