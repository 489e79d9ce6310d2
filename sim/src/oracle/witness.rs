//! The witness's own word when it is etcd (`world.witness = "etcd"`): `arbiter_epochs` and
//! `handoff_heard` judged on the store and on the replies the sites' translations make of it,
//! from the world's view (the store before and after each call, which engine message the call
//! translates), never from the translation's reasoning.
//!
//! On every call applied to the store:
//! - the epoch record never goes backwards and an epoch never changes holder;
//! - only an `Acquire`, a `Renew` (adopting an epoch a forced failover took) or a `Handoff`
//!   changes the record; an `Acquire` or `Renew` only for the asking site, only while no
//!   liveness key exists, and only once the lease plus the drift margin ran out on the
//!   leader's clock since the liveness key was last written or kept alive; a `Renew` only to
//!   the epoch it names; a `Handoff` only from the holder of the current epoch while its
//!   liveness key runs, to the next epoch, and (`handoff_heard`) only to a site whose last call
//!   reached etcd within the presence TTL (counted from the last leader change when later).
//!
//! On every reply a site's translation hands its engine:
//! - a `Granted` names the epoch the record held right after the reply's last call applied,
//!   held by the asking site with its liveness key in place; a renewal's grant is for the epoch
//!   the renewal named;
//! - a `View` or `Denied` names a holder the record had at that epoch, and no epoch beyond the
//!   record's.

use crate::etcd::{CallEv, Snap};
use crate::world::World;
use lifeboat_core::etcd::{Answer, EtcdWitness, Op, Record};
use lifeboat_core::protocol::Message;
use lifeboat_core::{Epoch, Millis, SiteId};
use std::collections::BTreeMap;

/// What the oracles remember of the etcd store (times on the leader's clock).
#[derive(Clone, Debug, Default)]
pub struct EtcdWords {
    /// Every epoch record the store held: epoch -> holder.
    pub holders: BTreeMap<Epoch, usize>,
    /// When the liveness key was last written or kept alive.
    pub lease_from: Option<Millis>,
    /// When each site's last call applied.
    pub heard: [Option<Millis>; 2],
    /// The last leader change (every lease ran its full TTL again from there).
    pub leader_change: Option<Millis>,
}

fn rec_text(r: Option<Record>) -> String {
    r.map_or("none".into(), |r| {
        format!("epoch {} held by site index {}", r.epoch, r.holder.0)
    })
}

impl World {
    /// A call from `site` applied at the leader's time `at`: the store went from `before` to
    /// `after`.
    pub fn check_etcd_apply(
        &mut self,
        site: usize,
        call: &CallEv,
        answers: &Result<Vec<Answer>, String>,
        before: Snap,
        after: Snap,
        at: Millis,
    ) {
        let Some(words) = self.etcd.as_ref().map(|e| e.words.clone()) else {
            return;
        };
        let name = |w: &World, s: usize| w.cfg.site_name(SiteId(s as u16)).to_string();
        let lease = self.cfg.lease.lease_ms + self.cfg.drift_margin();
        let mut adopted = None;
        if let (Some(r0), Some(r1)) = (before.record, after.record) {
            if r1 != r0 {
                let problem = if r1.epoch < r0.epoch {
                    Some(format!(
                        "etcd's epoch record went back from {} to {}",
                        rec_text(Some(r0)),
                        rec_text(Some(r1))
                    ))
                } else if r1.epoch == r0.epoch {
                    Some(format!(
                        "epoch {} changed holder in etcd's record: {} then {}",
                        r0.epoch,
                        rec_text(Some(r0)),
                        rec_text(Some(r1))
                    ))
                } else {
                    self.new_epoch_problem(site, &call.origin, r0, r1, before, &words, at, lease)
                };
                if let Some(p) = problem {
                    return self.violation(
                        "arbiter_epochs",
                        format!(
                            "{p} (a call of site {} for {:?})",
                            name(self, site),
                            call.origin
                        ),
                    );
                }
                match call.origin {
                    Message::Renew { epoch, .. } => adopted = Some(epoch),
                    Message::Handoff { to, .. } => {
                        self.check_etcd_handoff_heard(to.0 as usize, at, call.chain_start);
                        if self.stop {
                            return;
                        }
                    }
                    _ => {}
                }
            }
        } else if before.record.is_some() {
            return self.violation(
                "arbiter_epochs",
                format!(
                    "etcd's epoch record vanished (a call of site {} for {:?})",
                    name(self, site),
                    call.origin
                ),
            );
        }
        // Bookkeeping: who was heard, when the liveness key (re)started.
        let kept = match (answers, after.alive) {
            (Ok(a), Some((_, lease_id, _))) => call.ops.iter().zip(a).any(|(op, ans)| {
                matches!((op, ans), (Op::KeepAlive { lease }, Answer::Alive { ttl_s })
                    if *lease == lease_id && *ttl_s > 0)
            }),
            _ => false,
        };
        let rewritten = after.alive.is_some() && after.alive != before.alive;
        if let Some(e) = self.etcd.as_mut() {
            e.words.heard[site] = Some(at);
            if kept || rewritten {
                e.words.lease_from = Some(at);
            }
            if let Some(r) = after.record {
                e.words
                    .holders
                    .entry(r.epoch)
                    .or_insert(r.holder.0 as usize);
            }
        }
        // The epoch exists from now (an adopted one from when its site opens its databases).
        if let Some(r) = after.record {
            if adopted == Some(r.epoch) && before.record.is_some_and(|b| b.epoch < r.epoch) {
                self.oracle.arbiter.adopted = Some(r.epoch);
            }
            self.arbiter_epoch(r.epoch);
        }
    }

    /// Why the record's move from `r0` to the newer `r1` by `site`'s call for `origin` is
    /// wrong, if it is.
    #[allow(clippy::too_many_arguments)]
    fn new_epoch_problem(
        &self,
        site: usize,
        origin: &Message,
        r0: Record,
        r1: Record,
        before: Snap,
        words: &EtcdWords,
        at: Millis,
        lease: Millis,
    ) -> Option<String> {
        let me = SiteId(site as u16);
        let lapsed = |what: &str| -> Option<String> {
            if let Some(a) = before.alive {
                return Some(format!(
                    "{what} moved etcd's record from {} to {} while the liveness key named {}",
                    rec_text(Some(r0)),
                    rec_text(Some(r1)),
                    rec_text(Some(a.0))
                ));
            }
            let from = words.lease_from?;
            (at < from + lease).then(|| {
                format!(
                    "{what} moved etcd's record from {} to {} {} ms after the liveness key was \
                     last written or kept alive, before the lease ({} ms) plus the drift margin \
                     ({} ms) ran out on the leader's clock",
                    rec_text(Some(r0)),
                    rec_text(Some(r1)),
                    at.saturating_sub(from),
                    self.cfg.lease.lease_ms,
                    self.cfg.drift_margin()
                )
            })
        };
        match origin {
            Message::Acquire { .. } => {
                if r1.holder != me {
                    return Some(format!(
                        "an Acquire moved etcd's record to {}, not to the asking site",
                        rec_text(Some(r1))
                    ));
                }
                lapsed("an Acquire")
            }
            Message::Renew { epoch, .. } => {
                if r1
                    != (Record {
                        epoch: *epoch,
                        holder: me,
                    })
                {
                    return Some(format!(
                        "a Renew of epoch {epoch} moved etcd's record to {}",
                        rec_text(Some(r1))
                    ));
                }
                lapsed("a Renew of an epoch etcd never handed out")
            }
            Message::Handoff { epoch, to, .. } => {
                let next = Record {
                    epoch: Epoch(epoch.0 + 1),
                    holder: *to,
                };
                if r0.holder != me || r0.epoch != *epoch || r1 != next {
                    return Some(format!(
                        "a Handoff at epoch {epoch} to site index {} moved etcd's record from {} \
                         to {}",
                        to.0,
                        rec_text(Some(r0)),
                        rec_text(Some(r1))
                    ));
                }
                if before.alive.map(|a| a.0) != Some(r0) {
                    return Some(format!(
                        "a Handoff moved etcd's record from {} without the holder's liveness key \
                         in place ({})",
                        rec_text(Some(r0)),
                        rec_text(before.alive.map(|a| a.0))
                    ));
                }
                None
            }
            other => Some(format!(
                "a {other:?} request moved etcd's record from {} to {}",
                rec_text(Some(r0)),
                rec_text(Some(r1))
            )),
        }
    }

    /// `handoff_heard`, with etcd: a hand-off's target reached etcd within the presence TTL
    /// before the hand-off's translation began (`chain_start`, real time: the translation read
    /// the target's presence after it), counted from the last leader change when later.
    fn check_etcd_handoff_heard(&mut self, target: usize, at: Millis, chain_start: Millis) {
        let Some(words) = self.etcd.as_ref().map(|e| &e.words) else {
            return;
        };
        let ttl = EtcdWitness::ttl_s(&self.cfg) * 1_000;
        // The hand-off's read and its write are this far apart at most (1 s for the clocks).
        let gap = self.now.saturating_sub(chain_start) + 1_000;
        let from = words.heard[target].max(words.leader_change);
        if from.is_none_or(|f| at >= f + ttl + gap) {
            let msg = format!(
                "etcd handed the epoch to site {}, whose last call reached etcd {} before (the \
                 presence TTL is {} ms, counted from the last leader change when later, and the \
                 hand-off's read came {} ms before its write): that site cannot renew",
                self.cfg.site_name(SiteId(target as u16)),
                words.heard[target]
                    .map_or("never".into(), |h| format!("{} ms", at.saturating_sub(h))),
                ttl,
                gap - 1_000
            );
            self.violation("handoff_heard", msg);
        }
    }

    /// A reply `msg` that `site`'s translation hands its engine for `origin`; `after`: the store
    /// right after the reply's last call applied.
    pub fn check_etcd_reply(
        &mut self,
        site: usize,
        origin: &Message,
        msg: &Message,
        after: Option<Snap>,
    ) {
        let Some(words) = self.etcd.as_ref().map(|e| e.words.clone()) else {
            return;
        };
        let me = SiteId(site as u16);
        let name = self.cfg.site_name(me).to_string();
        let problem = match msg {
            Message::Granted { epoch, .. } => {
                let want = Record {
                    epoch: *epoch,
                    holder: me,
                };
                match after {
                    None => Some(format!(
                        "granted epoch {epoch} to site {name} without an answer from etcd"
                    )),
                    Some(a) if a.record != Some(want) || a.alive.map(|x| x.0) != Some(want) => {
                        Some(format!(
                            "granted epoch {epoch} to site {name}, but right after its last call \
                             applied etcd's record was {} and its liveness key {}",
                            rec_text(a.record),
                            rec_text(a.alive.map(|x| x.0))
                        ))
                    }
                    Some(_) => match origin {
                        Message::Renew { epoch: e, .. } if e != epoch => Some(format!(
                            "granted epoch {epoch} to site {name} for a renewal of epoch {e}"
                        )),
                        _ => None,
                    },
                }
            }
            Message::View { view, .. } | Message::Denied { view, .. } => {
                let newest = words
                    .holders
                    .keys()
                    .next_back()
                    .copied()
                    .unwrap_or(Epoch(0));
                match view.holder {
                    _ if view.epoch > newest => Some(format!(
                        "told site {name} epoch {}, beyond every record etcd held (newest {newest})",
                        view.epoch
                    )),
                    Some(h) if words.holders.get(&view.epoch) != Some(&(h.0 as usize)) => {
                        Some(format!(
                            "told site {name} that site index {} holds epoch {}; etcd's record \
                             had {}",
                            h.0,
                            view.epoch,
                            words
                                .holders
                                .get(&view.epoch)
                                .map_or("no such epoch".into(), |x| format!(
                                    "site index {x} at that epoch"
                                ))
                        ))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(p) = problem {
            self.violation(
                "arbiter_epochs",
                format!("the witness on etcd {p} (the reply to {origin:?})"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::protocol::ArbiterView;
    use lifeboat_scenarios::{world_config, Witness, WorldParams};

    fn world() -> World {
        let params = WorldParams {
            hours: 6.0,
            witness: Witness::Etcd,
            ..WorldParams::default()
        };
        World::new(world_config(), params, 1, Vec::new(), false)
    }

    fn oracles(w: &World) -> Vec<&'static str> {
        w.out.violations.iter().map(|v| v.oracle).collect()
    }

    fn rec(epoch: u64, holder: u16) -> Record {
        Record {
            epoch: Epoch(epoch),
            holder: SiteId(holder),
        }
    }

    /// The store with this record and (`alive`: with this liveness key on lease `lease`).
    fn snap(r: Record, alive: Option<(Record, i64)>) -> Snap {
        Snap {
            record: Some(r),
            alive: alive.map(|(a, lease)| (a, lease, lease)),
        }
    }

    fn call(origin: Message) -> CallEv {
        CallEv {
            ops: Vec::new(),
            origin,
            chain_start: 0,
        }
    }

    fn renew(epoch: u64) -> Message {
        Message::Renew {
            epoch: Epoch(epoch),
            req: 1,
        }
    }

    fn acquire() -> Message {
        Message::Acquire {
            seen: Epoch(1),
            req: 2,
            force: false,
        }
    }

    fn granted(epoch: u64) -> Message {
        Message::Granted {
            epoch: Epoch(epoch),
            lease_ms: 30_000,
            req: 1,
        }
    }

    /// Site 0 renews epoch 1 at `at`: `alive` written on lease 7.
    fn renewed(w: &mut World, at: Millis) {
        let held = snap(rec(1, 0), Some((rec(1, 0), 7)));
        w.check_etcd_apply(
            0,
            &call(renew(1)),
            &Ok(Vec::new()),
            snap(rec(1, 0), None),
            held,
            at,
        );
    }

    #[test]
    fn an_acquire_takes_a_new_epoch_only_without_a_liveness_key_after_the_lease_and_margin() {
        let lapse = |w: &World| w.cfg.lease.lease_ms + w.cfg.drift_margin();
        let taken = snap(rec(2, 1), Some((rec(2, 1), 9)));
        // After the lease plus the drift margin on the leader's clock: fine.
        let mut w = world();
        renewed(&mut w, 1_000);
        let at = 1_000 + lapse(&w);
        let free = snap(rec(1, 0), None);
        w.check_etcd_apply(1, &call(acquire()), &Ok(Vec::new()), free, taken, at);
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        assert_eq!(w.truth.epoch, Epoch(2), "the new epoch began");
        // One millisecond earlier: too early.
        let mut w = world();
        renewed(&mut w, 1_000);
        let at = 1_000 + lapse(&w) - 1;
        w.check_etcd_apply(1, &call(acquire()), &Ok(Vec::new()), free, taken, at);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        assert!(w.out.violations[0].message.contains("drift margin"));
        // With the holder's liveness key still in place: never.
        let mut w = world();
        let held = snap(rec(1, 0), Some((rec(1, 0), 7)));
        w.check_etcd_apply(
            1,
            &call(acquire()),
            &Ok(Vec::new()),
            held,
            taken,
            10_000_000,
        );
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // A keep-alive of the liveness key restarts the lease too.
        let mut w = world();
        renewed(&mut w, 1_000);
        let keep = CallEv {
            ops: vec![Op::KeepAlive { lease: 7 }],
            origin: renew(1),
            chain_start: 0,
        };
        let held = snap(rec(1, 0), Some((rec(1, 0), 7)));
        let alive = Ok(vec![Answer::Alive { ttl_s: 40 }]);
        w.check_etcd_apply(0, &keep, &alive, held, held, 20_000);
        let at = 1_000 + lapse(&w) + 1;
        w.check_etcd_apply(1, &call(acquire()), &Ok(Vec::new()), free, taken, at);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }

    #[test]
    fn epochs_never_go_back_keep_one_holder_and_only_witness_requests_move_them() {
        let mut w = world();
        let a = snap(rec(3, 0), None);
        w.check_etcd_apply(
            0,
            &call(acquire()),
            &Ok(Vec::new()),
            a,
            snap(rec(2, 0), None),
            1,
        );
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        let mut w = world();
        w.check_etcd_apply(
            1,
            &call(acquire()),
            &Ok(Vec::new()),
            a,
            snap(rec(3, 1), None),
            1,
        );
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        let mut w = world();
        let query = Message::Query { req: 4 };
        w.check_etcd_apply(
            1,
            &call(query),
            &Ok(Vec::new()),
            a,
            snap(rec(4, 1), None),
            1,
        );
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // A Renew adopts only the epoch it names, for the asking site.
        let mut w = world();
        let to = snap(rec(5, 0), None);
        w.check_etcd_apply(1, &call(renew(5)), &Ok(Vec::new()), a, to, 1);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }

    #[test]
    fn a_hand_off_comes_from_the_holder_while_it_holds_and_goes_to_a_site_etcd_heard() {
        let handoff = |to: u16| Message::Handoff {
            epoch: Epoch(1),
            to: SiteId(to),
            req: 3,
        };
        let held = snap(rec(1, 0), Some((rec(1, 0), 7)));
        let handed = snap(rec(2, 1), Some((rec(2, 1), 8)));
        let mut w = world();
        w.check_etcd_apply(1, &call(renew(1)), &Ok(Vec::new()), held, held, 50_000);
        w.check_etcd_apply(0, &call(handoff(1)), &Ok(Vec::new()), held, handed, 60_000);
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        // The target was last heard longer than the presence TTL ago.
        let mut w = world();
        w.check_etcd_apply(1, &call(renew(1)), &Ok(Vec::new()), held, held, 50_000);
        let late = 50_000 + EtcdWitness::ttl_s(&w.cfg) * 1_000 + 1_000;
        w.check_etcd_apply(0, &call(handoff(1)), &Ok(Vec::new()), held, handed, late);
        assert_eq!(oracles(&w), ["handoff_heard"]);
        // ...unless a leader change ran the TTL again since.
        let mut w = world();
        w.check_etcd_apply(1, &call(renew(1)), &Ok(Vec::new()), held, held, 50_000);
        if let Some(e) = w.etcd.as_mut() {
            e.words.leader_change = Some(late - 10_000);
        }
        w.check_etcd_apply(0, &call(handoff(1)), &Ok(Vec::new()), held, handed, late);
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        // Asked by the site that does not hold the epoch, or without the holder's lease.
        let mut w = world();
        w.check_etcd_apply(1, &call(handoff(1)), &Ok(Vec::new()), held, handed, 60_000);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        let mut w = world();
        let lapsed = snap(rec(1, 0), None);
        w.check_etcd_apply(
            0,
            &call(handoff(1)),
            &Ok(Vec::new()),
            lapsed,
            handed,
            60_000,
        );
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }

    #[test]
    fn a_grant_names_the_record_after_its_last_call_and_a_renewal_its_own_epoch() {
        let held = snap(rec(1, 0), Some((rec(1, 0), 7)));
        let mut w = world();
        w.check_etcd_reply(0, &renew(1), &granted(1), Some(held));
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        // Granted to the site that does not hold it.
        w.check_etcd_reply(1, &acquire(), &granted(1), Some(held));
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // Granted without the liveness key in place.
        let mut w = world();
        w.check_etcd_reply(0, &renew(1), &granted(1), Some(snap(rec(1, 0), None)));
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // A renewal of epoch 1 granted epoch 2.
        let mut w = world();
        let two = snap(rec(2, 0), Some((rec(2, 0), 7)));
        w.check_etcd_reply(0, &renew(1), &granted(2), Some(two));
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // A grant that no call's answer backs.
        let mut w = world();
        w.check_etcd_reply(0, &renew(1), &granted(1), None);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }

    #[test]
    fn a_view_names_only_a_holder_and_an_epoch_the_record_had() {
        let view = |epoch: u64, holder: u16| Message::View {
            view: ArbiterView {
                epoch: Epoch(epoch),
                holder: Some(SiteId(holder)),
                holder_renewing: true,
                lease_lapsed: false,
                since_renewal_ms: None,
            },
            req: 5,
        };
        let q = Message::Query { req: 5 };
        let mut w = world();
        // `witness init` recorded epoch 1 held by the initial primary (site 0).
        w.check_etcd_reply(1, &q, &view(1, 0), None);
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        w.check_etcd_reply(1, &q, &view(1, 1), None);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        let mut w = world();
        w.check_etcd_reply(1, &q, &view(2, 0), None);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }
}
