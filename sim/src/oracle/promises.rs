//! What users are promised, judged from the world and from the arbiter's own outputs:
//!
//! - `primary_down_announced`: a lost primary site is announced by the recovery site (a
//!   critical `primary_down` about it) within the detection bound, when the arbiter is up and
//!   reachable from the recovery site and nothing else in the schedule is in the way.
//! - `arbiter_reachable`: no site raises `arbiter_unreachable` while the arbiter answers it:
//!   its process and the site's ran, both directions of their link were up and no network
//!   fault (loss, latency, reordering, duplication) was active, for long enough that every
//!   request of the site was answered within its timeout.
//! - `arbiter_epochs`: on the arbiter's own outputs (every `Granted`, `Denied`, `View` it
//!   sends), its epoch never goes backwards; an epoch has one holder (a grant or a view never
//!   names another site at the same epoch); a renewal is granted only to the holder, and only
//!   for the epoch it names; a hand-off comes only from the holder of the current epoch; a new
//!   epoch answers an `Acquire` only once the lease ran out plus the drift margin on the
//!   arbiter's own time (after its last grant, hand-off, adoption or start).
//! - `switchover_ends`: a planned switchover completes or aborts in time: the source leaves
//!   `switching_over` within `switchover_timeout_ms`, the target leaves `switchover_target`
//!   within it plus two arbiter timeouts unless it was handed the epoch (writes resuming on a
//!   site is `switchover_availability`); not judged when the source lost its path to the
//!   arbiter before the hand-off, or the target its path at any time.

use crate::net::ARBITER;
use crate::oracle::Check;
use crate::world::{Ev, World};
use lifeboat_core::alert::{AlertChange, AlertEvent, AlertId, Subject};
use lifeboat_core::engine::Role;
use lifeboat_core::protocol::{Message, Output, Peer};
use lifeboat_core::{AlertKind, Epoch, Millis, Severity, SiteId, MINUTE};

/// What the arbiter has said so far (oracle `arbiter_epochs`).
#[derive(Clone, Debug, Default)]
pub struct ArbiterWords {
    /// The newest epoch in any of its outputs, and its holder as the outputs named it.
    pub epoch: Epoch,
    pub holder: Option<usize>,
    /// Its own time of the last event that (re)started the lease: a grant, a hand-off, an
    /// adoption, its start.
    pub lease_from: Option<Millis>,
    /// The newest epoch it granted on a site's renewal of an epoch it had not handed out (taken
    /// by a forced failover without it, or held before the arbiter lost its state).
    pub adopted: Option<Epoch>,
    /// What the arbiter had said before it lost its state: the epoch and its holder. A fresh
    /// arbiter may grant that epoch again only to that holder.
    pub before_loss: Option<(Epoch, Option<usize>)>,
}

/// A switchover whose end is watched (oracle `switchover_ends`).
#[derive(Clone, Debug)]
pub struct SwitchEnd {
    pub source: usize,
    pub target: usize,
    pub started: Millis,
    pub epoch: Epoch,
    pub source_disturbed: bool,
    pub target_disturbed: bool,
}

impl World {
    // ------------------------------------------------------------------ arbiter_epochs

    /// The arbiter's machine was lost with its disk: the next arbiter starts from nothing, and
    /// its words are judged from its start, with what the lost one said as a floor.
    pub fn oracle_arbiter_state_lost(&mut self) {
        let w = &mut self.oracle.arbiter;
        let said = (w.epoch, w.holder);
        w.before_loss = Some(match w.before_loss {
            Some(b) if b.0 > said.0 => b,
            _ => said,
        });
        w.epoch = Epoch(0);
        w.holder = None;
        w.lease_from = None;
    }

    /// The arbiter handled `input` (a site's message, when `from` is set) at its own time
    /// `at` and emitted `out`.
    pub fn check_arbiter_outputs(
        &mut self,
        from: Option<(usize, Message)>,
        restarted: bool,
        at: Millis,
        out: &[Output],
    ) {
        let w = &mut self.oracle.arbiter;
        if restarted || w.lease_from.is_none() {
            w.lease_from = Some(at.max(w.lease_from.unwrap_or(0)));
        }
        if w.epoch == Epoch(0) {
            w.epoch = Epoch(1);
            w.holder = Some(self.cfg.initial_primary_id().0 as usize);
        }
        let name = |w: &World, s: usize| w.cfg.site_name(SiteId(s as u16)).to_string();
        for o in out {
            let Output::Send {
                to: Peer::Site(t),
                msg,
            } = o
            else {
                continue;
            };
            let t = t.0 as usize;
            let (epoch, named, granted) = match msg {
                Message::Granted { epoch, .. } => (*epoch, Some(t), true),
                Message::Denied { view, .. } | Message::View { view, .. } => {
                    (view.epoch, view.holder.map(|h| h.0 as usize), false)
                }
                _ => continue,
            };
            let known = self.oracle.arbiter.epoch;
            let holder = self.oracle.arbiter.holder;
            let input = from.as_ref().map(|(s, m)| (*s, m));
            if let (true, Some((e, Some(h)))) = (granted, self.oracle.arbiter.before_loss) {
                if epoch == e && t != h {
                    let msg = format!(
                        "the arbiter, started afresh, granted epoch {epoch} to site {}; the lost \
                         arbiter had given it to site {}",
                        name(self, t),
                        name(self, h)
                    );
                    return self.violation("arbiter_epochs", msg);
                }
            }
            if epoch < known {
                let msg = format!(
                    "the arbiter sent site {} epoch {epoch} after it had said epoch {known}: its \
                     epoch went backwards",
                    name(self, t)
                );
                return self.violation("arbiter_epochs", msg);
            }
            if epoch > known {
                let lease = self.cfg.lease.lease_ms + self.cfg.drift_margin();
                let problem = match (granted, input) {
                    (true, Some((_, Message::Acquire { .. } | Message::Renew { .. })))
                        if {
                            let from = self.oracle.arbiter.lease_from.unwrap_or(0);
                            at < from + lease
                        } =>
                    {
                        let from = self.oracle.arbiter.lease_from.unwrap_or(0);
                        Some(format!(
                            "granted epoch {epoch} to site {} {} ms after its lease last \
                             (re)started, before the lease ({} ms) plus the drift margin ({} ms) \
                             ran out",
                            name(self, t),
                            at.saturating_sub(from),
                            self.cfg.lease.lease_ms,
                            self.cfg.drift_margin()
                        ))
                    }
                    (true, Some((_, Message::Acquire { .. }))) => {
                        let from = self.oracle.arbiter.lease_from.unwrap_or(0);
                        (at < from + lease).then(|| {
                            format!(
                                "granted epoch {epoch} to site {} {} ms after its lease last \
                                 (re)started, before the lease ({} ms) plus the drift margin \
                                 ({} ms) ran out",
                                name(self, t),
                                at.saturating_sub(from),
                                self.cfg.lease.lease_ms,
                                self.cfg.drift_margin()
                            )
                        })
                    }
                    (true, Some((s, Message::Renew { epoch: e, .. }))) => (*e != epoch || s != t)
                        .then(|| {
                            format!(
                                "granted epoch {epoch} to site {} for a renewal of epoch {e} \
                                 by site {}",
                                name(self, t),
                                name(self, s)
                            )
                        }),
                    (false, Some((s, Message::Handoff { epoch: e, .. }))) => {
                        (*e != known || holder != Some(s)).then(|| {
                            format!(
                                "handed epoch {epoch} over for site {}, which asked at epoch {e} \
                                 while epoch {known} was held by {}",
                                name(self, s),
                                holder.map_or("nobody".into(), |h| name(self, h))
                            )
                        })
                    }
                    (false, Some((_, Message::Acquire { seen, .. }))) => Some(format!(
                        "moved to epoch {epoch} for an Acquire that saw {seen} without granting \
                         it: epochs come only from the arbiter's own rule"
                    )),
                    (true, _) => Some(format!(
                        "granted a new epoch {epoch} to site {} without an Acquire or a renewal",
                        name(self, t)
                    )),
                    (false, _) => Some(format!(
                        "said epoch {epoch} to site {} without a grant, hand-off or adoption",
                        name(self, t)
                    )),
                };
                if let Some(p) = problem {
                    return self.violation("arbiter_epochs", format!("the arbiter {p}"));
                }
                let adopted = matches!((granted, input), (true, Some((_, Message::Renew { .. }))));
                let w = &mut self.oracle.arbiter;
                w.epoch = epoch;
                w.holder = named;
                w.lease_from = Some(at);
                if adopted {
                    w.adopted = Some(epoch);
                }
                continue;
            }
            // The same epoch: one holder.
            if let (Some(h), Some(n)) = (holder, named) {
                if h != n {
                    let msg = format!(
                        "the arbiter {} site {} at epoch {epoch}, which site {} holds",
                        if granted {
                            "granted"
                        } else {
                            "named as holder"
                        },
                        name(self, n),
                        name(self, h)
                    );
                    return self.violation("arbiter_epochs", msg);
                }
            }
            if granted {
                if let Some((s, Message::Renew { epoch: e, .. })) = input {
                    if *e != epoch || s != t {
                        let msg = format!(
                            "the arbiter granted epoch {epoch} to site {} for a renewal of epoch \
                             {e} by site {}",
                            name(self, t),
                            name(self, s)
                        );
                        return self.violation("arbiter_epochs", msg);
                    }
                }
                self.oracle.arbiter.lease_from = Some(at);
            }
            if self.oracle.arbiter.holder.is_none() {
                self.oracle.arbiter.holder = named;
            }
        }
    }

    // ------------------------------------------------------------------ arbiter_reachable

    /// Whether site `s` and the arbiter answer each other now, with nothing on the way (with
    /// etcd: no election, slowness or lost answers either).
    fn arbiter_answers(&self, s: usize) -> bool {
        self.cfg.arbiter
            && self.sites[s].alive
            && self.nodes[s].up
            && self.nodes[ARBITER].up
            && self.witness_serving()
            && self.net.up(s, ARBITER)
            && self.net.up(ARBITER, s)
            && !self.net.faulty()
    }

    /// Links, processes or network faults changed: note since when each site and the arbiter
    /// answer each other.
    pub fn oracle_arbiter_paths(&mut self) {
        for s in 0..2 {
            let ok = self.arbiter_answers(s);
            let since = &mut self.oracle.arbiter_ok_since[s];
            match (ok, *since) {
                (true, None) => *since = Some(self.now),
                (false, _) => *since = None,
                _ => {}
            }
        }
    }

    /// How long the arbiter must have answered a site for an `arbiter_unreachable` to be
    /// false: two arbiter timeouts and two probe periods (the recovery site's rule), or an
    /// arbiter timeout and two renewals (the primary's), with the drift bound and a clock step.
    pub fn arbiter_quiet_bound(&self) -> Millis {
        let c = &self.cfg;
        let t = c.lease.arbiter_timeout_ms;
        let base = (2 * t + 2 * c.failover.probe_every_ms).max(t + 2 * c.lease.renew_every_ms);
        base + base * c.lease.max_drift_ppm * 2 / 1_000_000 + c.drift_margin() + 2_000
    }

    fn check_arbiter_unreachable(&mut self, node: usize) {
        if node >= 2 {
            return;
        }
        let Some(since) = self.oracle.arbiter_ok_since[node] else {
            return;
        };
        let bound = self.arbiter_quiet_bound();
        if self.now.saturating_sub(since) >= bound {
            let msg = format!(
                "{} raised `arbiter_unreachable`, but the arbiter has answered it since {} ({} \
                 ago: both processes up, both directions of the link up, no network fault), \
                 longer than {}",
                self.node_name(node),
                crate::outcome::clock_text(since),
                crate::lifeboat_scenarios_span(self.now - since),
                crate::lifeboat_scenarios_span(bound)
            );
            self.violation("arbiter_reachable", msg);
        }
    }

    // ------------------------------------------------------------------ primary_down_announced

    /// Alerts the promises look at: a false `arbiter_unreachable`; a critical `primary_down`
    /// about the peer.
    pub fn oracle_promised_alert(&mut self, node: usize, a: &AlertEvent) {
        if node >= 2 || !matches!(a.change, AlertChange::Raised | AlertChange::Updated) {
            return;
        }
        match a.id.kind {
            AlertKind::ArbiterUnreachable if a.change == AlertChange::Raised => {
                self.check_arbiter_unreachable(node)
            }
            AlertKind::PrimaryDown
                if a.severity == Severity::Critical
                    && a.id.subject == Subject::Site(SiteId((1 - node) as u16)) =>
            {
                self.oracle.peer_down_raised[node] = Some(self.now);
            }
            _ => {}
        }
    }

    /// How long the recovery site may take to announce a lost primary: the lease lapsing (with
    /// drift) or the probe thresholds, whichever is longer, a fresh arbiter view, two probe
    /// periods and 5 s.
    pub fn announce_bound(&self) -> Millis {
        let c = &self.cfg;
        let lease = c.lease.lease_ms;
        let lapse = lease
            + lease * c.lease.max_drift_ppm * 4 / 1_000_000
            + 2 * c.drift_margin()
            + c.lease.renew_every_ms;
        let f = &c.failover;
        let detect = (u64::from(f.unhealthy_count) * f.probe_every_ms * 6 / 5 + f.probe_every_ms)
            .max(f.unhealthy_for_ms)
            + 2 * f.probe_every_ms;
        lapse.max(detect) + c.lease.arbiter_timeout_ms + 3 * f.probe_every_ms + 5_000
    }

    /// The primary site `lost` was lost now: plan the announcement check when the recovery site
    /// watches it with the arbiter reachable and nothing else in the way.
    pub fn plan_announce_check(&mut self, lost: usize) {
        let s = 1 - lost;
        let ok = self.cfg.arbiter
            && self.arbiter_answers(s)
            && self.role(s) == Some(Role::Secondary)
            && self.oracle.role_since[s] + self.cfg.lease.lease_ms <= self.now;
        if !ok {
            return;
        }
        let bound = self.announce_bound();
        let (from, to) = (
            self.now.saturating_sub(self.cfg.lease.lease_ms),
            self.now + bound,
        );
        let disturbed = self.schedule.iter().any(|x| {
            let Some(m) = x.mode else { return false };
            if crate::oracle::liveness::benign_for_rto(m) {
                return false;
            }
            let this_one = matches!(
                m,
                lifeboat_scenarios::FaultMode::SiteLoss
                    | lifeboat_scenarios::FaultMode::OldPrimaryReturns
            ) && x.at.0 == self.now;
            let (a, b) = (x.at.0, x.at.0 + x.duration.0.max(10 * MINUTE));
            !this_one && a < to && b > from
        });
        if disturbed || to >= self.end {
            return;
        }
        let at = self.now;
        self.q.push(to, Ev::Check(Check::Announced { lost, at }));
    }

    pub fn check_announced(&mut self, lost: usize, at: Millis) {
        let s = 1 - lost;
        if self.sites[lost].alive || !self.sites[s].alive || !self.nodes[s].up {
            return; // it came back (a short outage), or the watcher is gone
        }
        if self.oracle.peer_down_raised[s].is_some_and(|t| t >= at) {
            return;
        }
        let id = AlertId {
            kind: AlertKind::PrimaryDown,
            db: None,
            subject: Subject::Site(SiteId(lost as u16)),
        };
        if self.oracle.active_sev.get(&(s, id)) == Some(&Severity::Critical) {
            return;
        }
        let msg = format!(
            "the primary site {} was lost at {} with the arbiter reachable from site {}, which \
             has not raised a critical `primary_down` {} later (bound {}) [{}]",
            self.cfg.site_name(SiteId(lost as u16)),
            crate::outcome::clock_text(at),
            self.cfg.site_name(SiteId(s as u16)),
            crate::lifeboat_scenarios_span(self.now - at),
            crate::lifeboat_scenarios_span(self.announce_bound()),
            self.roles_text()
        );
        self.violation("primary_down_announced", msg);
    }

    // ------------------------------------------------------------------ switchover_ends

    /// When the source must have left `switching_over` and the target `switchover_target`.
    pub fn switchover_end_bounds(&self) -> (Millis, Millis) {
        let c = &self.cfg;
        let t = c.failover.switchover_timeout_ms;
        let t = t + t * c.lease.max_drift_ppm * 2 / 1_000_000;
        let a = c.lease.arbiter_timeout_ms;
        let src = t + a + c.lease.fence_time_ms + 2_000;
        let tgt = t
            + 3 * a
            + a * c.lease.max_drift_ppm * 6 / 1_000_000
            + 2 * c.failover.probe_every_ms
            + 5_000;
        (src, tgt)
    }

    pub fn watch_switchover_end(&mut self, source: usize) {
        let (src, tgt) = self.switchover_end_bounds();
        let started = self.now;
        let w = SwitchEnd {
            source,
            target: 1 - source,
            started,
            epoch: self.truth.epoch,
            source_disturbed: false,
            target_disturbed: false,
        };
        self.oracle.switch_ends.push(w);
        self.switch_ends_paths();
        for (at, target) in [(started + src, false), (started + tgt, true)] {
            if at < self.end {
                self.q
                    .push(at, Ev::Check(Check::SwitchoverEnds { started, target }));
            }
        }
    }

    /// Paths changed: a watched switchover may have lost its way.
    pub fn switch_ends_paths(&mut self) {
        if self.oracle.switch_ends.is_empty() {
            return;
        }
        let mut ends = std::mem::take(&mut self.oracle.switch_ends);
        for w in ends.iter_mut() {
            let handed = self.truth.epoch > w.epoch;
            if !handed && !self.lease_path_ok(w.source) {
                w.source_disturbed = true;
            }
            if !self.lease_path_ok(w.target) {
                w.target_disturbed = true;
            }
        }
        self.oracle.switch_ends = ends;
    }

    pub fn check_switchover_ends(&mut self, started: Millis, target: bool) {
        let Some(i) = self
            .oracle
            .switch_ends
            .iter()
            .position(|w| w.started == started)
        else {
            return;
        };
        let w = self.oracle.switch_ends[i].clone();
        if target {
            self.oracle.switch_ends.remove(i);
        }
        let (site, role, disturbed) = if target {
            (w.target, Role::SwitchoverTarget, w.target_disturbed)
        } else {
            (w.source, Role::SwitchingOver, w.source_disturbed)
        };
        let handed = self.truth.epoch > w.epoch;
        if disturbed || (target && handed) || self.role(site) != Some(role) {
            return;
        }
        // The same procedure (not a later one of its own): the source's began with the
        // request, the target's once the final positions reached it.
        let latest = if target {
            started + self.switchover_end_bounds().0
        } else {
            started + 1_000
        };
        let same = self
            .site_engine(site)
            .state()
            .procedure
            .as_ref()
            .is_some_and(|p| p.started_at <= self.nodes[site].clock.local(latest));
        if !same {
            return;
        }
        let msg = format!(
            "a planned switchover from site {} to site {} began at {}; {} later site {} is still \
             {} (switchover_timeout_ms {}) [{}]",
            self.cfg.site_name(SiteId(w.source as u16)),
            self.cfg.site_name(SiteId(w.target as u16)),
            crate::outcome::clock_text(started),
            crate::lifeboat_scenarios_span(self.now - started),
            self.cfg.site_name(SiteId(site as u16)),
            role.as_str(),
            crate::lifeboat_scenarios_span(self.cfg.failover.switchover_timeout_ms),
            self.roles_text()
        );
        self.violation("switchover_ends", msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::protocol::ArbiterView;
    use lifeboat_scenarios::{world_config, WorldParams};

    fn world() -> World {
        let params = WorldParams {
            hours: 6.0,
            ..WorldParams::default()
        };
        World::new(world_config(), params, 1, Vec::new(), false)
    }

    fn oracles(w: &World) -> Vec<&'static str> {
        w.out.violations.iter().map(|v| v.oracle).collect()
    }

    fn send(to: u16, msg: Message) -> Output {
        Output::Send {
            to: Peer::Site(SiteId(to)),
            msg,
        }
    }

    fn granted(epoch: u64) -> Message {
        Message::Granted {
            epoch: Epoch(epoch),
            lease_ms: 30_000,
            req: 1,
        }
    }

    fn renew(epoch: u64) -> Message {
        Message::Renew {
            epoch: Epoch(epoch),
            req: 1,
        }
    }

    fn view(epoch: u64, holder: u16) -> Message {
        Message::View {
            view: ArbiterView {
                epoch: Epoch(epoch),
                holder: Some(SiteId(holder)),
                holder_renewing: true,
                lease_lapsed: false,
                since_renewal_ms: Some(0),
            },
            req: 0,
        }
    }

    #[test]
    fn arbiter_epochs_grants_a_renewal_only_to_the_holder_of_the_epoch_it_names() {
        let mut w = world();
        w.check_arbiter_outputs(None, false, 0, &[]);
        w.check_arbiter_outputs(Some((0, renew(1))), false, 5_000, &[send(0, granted(1))]);
        assert!(w.out.violations.is_empty());
        // The other site quotes the current epoch: not the holder.
        w.check_arbiter_outputs(Some((1, renew(1))), false, 6_000, &[send(1, granted(1))]);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // The holder renews a stale epoch and is granted the current one.
        let mut w = world();
        w.check_arbiter_outputs(None, false, 0, &[]);
        w.check_arbiter_outputs(Some((0, renew(0))), false, 5_000, &[send(0, granted(1))]);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }

    #[test]
    fn arbiter_epochs_never_go_backwards_and_hand_offs_come_from_the_holder() {
        let mut w = world();
        w.check_arbiter_outputs(None, false, 0, &[]);
        let handoff = |epoch| Message::Handoff {
            epoch: Epoch(epoch),
            to: SiteId(1),
            req: 2,
        };
        let out = [send(0, view(2, 1)), send(1, view(2, 1))];
        w.check_arbiter_outputs(Some((0, handoff(1))), false, 9_000, &out);
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        w.check_arbiter_outputs(Some((0, renew(1))), false, 9_500, &[send(0, granted(1))]);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        // A hand-off asked by the site that does not hold the epoch.
        let mut w = world();
        w.check_arbiter_outputs(None, false, 0, &[]);
        w.check_arbiter_outputs(Some((1, handoff(1))), false, 9_000, &[send(1, view(2, 0))]);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
    }

    #[test]
    fn arbiter_epochs_grants_a_new_epoch_only_after_the_lease_and_the_drift_margin() {
        let acquire = Message::Acquire {
            seen: Epoch(1),
            req: 3,
            force: false,
        };
        let lapse = |w: &World| w.cfg.lease.lease_ms + w.cfg.drift_margin();
        let mut w = world();
        w.check_arbiter_outputs(None, false, 0, &[]);
        w.check_arbiter_outputs(Some((0, renew(1))), false, 1_000, &[send(0, granted(1))]);
        let at = 1_000 + lapse(&w);
        w.check_arbiter_outputs(
            Some((1, acquire.clone())),
            false,
            at,
            &[send(1, granted(2))],
        );
        assert!(w.out.violations.is_empty(), "{:?}", w.out.violations);
        let mut w = world();
        w.check_arbiter_outputs(None, false, 0, &[]);
        w.check_arbiter_outputs(Some((0, renew(1))), false, 1_000, &[send(0, granted(1))]);
        let at = 1_000 + w.cfg.lease.lease_ms;
        w.check_arbiter_outputs(Some((1, acquire)), false, at, &[send(1, granted(2))]);
        assert_eq!(oracles(&w), ["arbiter_epochs"]);
        assert!(w.out.violations[0].message.contains("drift margin"));
    }

    #[test]
    fn arbiter_reachable_fires_only_after_the_arbiter_answered_long_enough() {
        let mut w = world();
        let bound = w.arbiter_quiet_bound();
        w.oracle.arbiter_ok_since[1] = Some(3_600_000);
        w.now = 3_600_000 + bound - 1;
        w.check_arbiter_unreachable(1);
        assert!(w.out.violations.is_empty());
        w.now = 3_600_000 + bound;
        w.check_arbiter_unreachable(1);
        assert_eq!(oracles(&w), ["arbiter_reachable"]);
        // A path that is not up says nothing.
        let mut w = world();
        w.now = 3_600_000 + bound;
        w.check_arbiter_unreachable(1);
        assert!(w.out.violations.is_empty());
    }

    #[test]
    fn primary_down_announced_wants_a_critical_primary_down_after_the_loss() {
        let at = 3_600_000;
        let mut w = world();
        w.sites[0].alive = false;
        w.nodes[1].up = true;
        w.now = at + w.announce_bound();
        w.check_announced(0, at);
        assert_eq!(oracles(&w), ["primary_down_announced"]);
        let mut w = world();
        w.sites[0].alive = false;
        w.nodes[1].up = true;
        w.oracle.peer_down_raised[1] = Some(at + 20_000);
        w.now = at + w.announce_bound();
        w.check_announced(0, at);
        assert!(w.out.violations.is_empty());
        // A raise before the loss (another outage) does not count; the site back does.
        w.oracle.peer_down_raised[1] = Some(at - 1);
        w.sites[0].alive = true;
        w.check_announced(0, at);
        assert!(w.out.violations.is_empty());
    }
}
