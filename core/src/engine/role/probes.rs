//! Heartbeats between the sites and probes of the primary: a dead site or a dead link.

use super::*;
use crate::alert::{AlertId, AlertKind, Severity, Subject};
use crate::engine::{texts, SiteEngine, Timer};
use crate::ids::{DbId, Lsn, Millis, SiteId};
use crate::protocol::{ArbiterView, Command, Heartbeat, Message, Peer, ProbeTarget};

impl SiteEngine {
    pub(in crate::engine) fn heartbeat(&mut self, now: Millis) {
        self.st.heartbeat_seq += 1;
        let primary = self.holds_epoch();
        if primary {
            self.command(Command::SamplePositions);
        }
        // Every position the recovery site has not acknowledged, not only those that changed
        // since the last heartbeat: one sent while the link was down is sent again, so the
        // failover report's bounds never rest on a position learned only once.
        let positions: Vec<(DbId, Lsn)> = if primary {
            let writes = &mut self.st.writes;
            self.st
                .dirty
                .iter()
                .filter_map(|db| {
                    let w = writes.get_mut(db.0 as usize)?;
                    w.sent = w.lsn;
                    Some((*db, w.lsn))
                })
                .collect()
        } else {
            // A recovery site says how far it restored: the primary stops shipping what the
            // recovery site has already passed (a damaged copy a later full superseded was
            // re-shipped every minute otherwise).
            self.st
                .dbs
                .iter()
                .enumerate()
                .filter_map(|(i, d)| Some((DbId(i as u32), d.position?)))
                .collect()
        };
        if self.cfg.planted("delta_positions") {
            for w in self.st.writes.iter_mut() {
                w.dirty = false;
            }
            self.st.dirty.clear();
        }
        let every = self.cfg.lease.heartbeat_every_ms.max(1);
        let rate =
            std::mem::take(&mut self.st.advanced_since_heartbeat).saturating_mul(1000) / every;
        if primary {
            self.st.own.peak_rate = self.st.own.peak_rate.max(rate);
        }
        let hb = Heartbeat {
            epoch: self.st.epoch,
            seq: self.st.heartbeat_seq,
            backups_paused: self.st.backups_paused,
            writable: self.writable(),
            positions,
            write_rate_per_sec: if primary { rate } else { 0 },
        };
        self.send_peer(Message::Heartbeat(hb));
        // Checked with every heartbeat, not only with the ship sweep: the alert comes when
        // the threshold passes, not up to a sweep period later.
        self.peer_lost_check(now);
    }

    pub(in crate::engine) fn on_heartbeat(&mut self, now: Millis, from: SiteId, hb: Heartbeat) {
        self.st.peer.last_heard = Some(now);
        if hb.epoch > self.st.epoch {
            // A heartbeat says which epoch the sender knows, not who holds it: a rebuilt old
            // primary knows the new epoch without holding it (and the holder may be this very
            // site, whose grant was lost). Learn it from the arbiter, or from the sender's
            // notice, which names the holder.
            if self.cfg.arbiter && self.st.peer.arbiter_query.is_none() {
                self.query_arbiter(now);
            }
            return;
        }
        if hb.epoch < self.st.epoch {
            // The sender is behind: tell it who holds the epoch now.
            let holder = self.st.holder;
            self.send_peer(Message::EpochNotice {
                epoch: self.st.epoch,
                holder,
            });
            return;
        }
        if from != self.st.holder {
            if self.holds_epoch() && hb.epoch == self.st.epoch {
                self.superseded(now, &hb.positions);
            }
            return;
        }
        // Heartbeats that stopped for a while, or that the link lost (a gap in their sequence),
        // are a troubled link too: probes every few seconds can keep landing in a flapping
        // link's up windows (a flap period close to the probe period; swarm seed 241494: probes
        // every 10.3 s on a link down 5.2 s of every 10.3 s, one heartbeat in three lost, gaps
        // of 23 s under three 8 s heartbeat periods).
        let every = self.cfg.lease.heartbeat_every_ms.max(1);
        let stopped = self
            .st
            .peer
            .last_heartbeat_at
            .is_some_and(|t| now.saturating_sub(t) > (3 * every).max(2_000));
        let lost = self
            .st
            .peer
            .last_heartbeat_seq
            .is_some_and(|(e, seq)| e == hb.epoch && hb.seq > seq.saturating_add(1));
        self.st.peer.last_heartbeat_seq = Some((hb.epoch, hb.seq));
        if self.watches_primary() && (stopped || lost) {
            let p = &mut self.st.peer;
            p.link_trouble = match p.link_trouble {
                Some((since, last, n)) if now.saturating_sub(last) < p.calm_needed(since, last) => {
                    Some((since, now, n.saturating_add(1)))
                }
                _ => Some((now, now, 1)),
            };
            self.flapping_check(now);
        }
        self.st.peer.last_heartbeat_at = Some(now);
        if self.st.role == Role::SwitchoverTarget && hb.writable && hb.epoch == self.st.epoch {
            // The primary accepts writes again: it abandoned the switchover (the notice was
            // lost). If it did not, it says the final positions again and we resume.
            self.abandon_target(now, "the primary accepts writes again");
        }
        if hb.backups_paused != self.st.peer.backups_paused {
            self.st.peer.backups_paused = hb.backups_paused;
            self.st.peer.paused_since = hb.backups_paused.then_some(now);
            self.pause_check(now);
        }
        self.st.peer.peak_rate = self.st.peer.peak_rate.max(hb.write_rate_per_sec);
        if hb.positions.is_empty() {
            return;
        }
        for (db, lsn) in hb.positions {
            if let Some(d) = self.st.dbs.get_mut(db.0 as usize) {
                d.known_produced = d.known_produced.max(lsn);
            }
        }
        self.send_peer(Message::HeartbeatAck { seq: hb.seq });
    }

    /// The recovery site took in heartbeat `seq`'s positions. Only the latest heartbeat's
    /// acknowledgement counts (every heartbeat carries every unacknowledged position, so it
    /// covers the earlier ones); a position that changed after it was sent stays listed.
    pub(in crate::engine) fn heartbeat_acked(&mut self, now: Millis, seq: u64) {
        self.st.peer.last_heard = Some(now);
        if seq != self.st.heartbeat_seq {
            return;
        }
        let writes = &mut self.st.writes;
        self.st.dirty.retain(|db| {
            let Some(w) = writes.get_mut(db.0 as usize) else {
                return false;
            };
            let unchanged = w.lsn == w.sent;
            if unchanged {
                w.dirty = false;
            }
            !unchanged
        });
    }

    pub(in crate::engine) fn watches_primary(&self) -> bool {
        matches!(
            self.st.role,
            Role::Secondary | Role::SwitchoverTarget | Role::Promoting
        )
    }

    pub(in crate::engine) fn probe_tick(&mut self, now: Millis) {
        if !self.watches_primary() {
            // Queries count only while this site watches the primary: one left unanswered
            // before it was primary or rebuilding would make its first query after that look
            // like a long silence (false `arbiter_unreachable`: swarm seed 230674).
            self.st.peer.arbiter_query = None;
            self.st.peer.arbiter_misses = 0;
            return;
        }
        self.command(Command::Probe);
        if !self.cfg.arbiter {
            return;
        }
        match self.st.peer.arbiter_query {
            Some((_, sent)) if now.saturating_sub(sent) < self.cfg.lease.arbiter_timeout_ms => {}
            Some(_) => {
                self.query_arbiter(now);
                if self.arbiter_silent(now) {
                    self.arbiter_unreachable(now);
                }
            }
            None => self.query_arbiter(now),
        }
        self.evaluate(now);
    }

    /// The arbiter is unreachable from here: at least two queries went unanswered in a row,
    /// the first of them two arbiter timeouts ago. One lost query (with probes every 3 s, the
    /// next query already counted it as a timeout) is no outage.
    pub(in crate::engine) fn arbiter_silent(&self, now: Millis) -> bool {
        let p = &self.st.peer;
        p.arbiter_misses >= 2
            && p.arbiter_query.is_some_and(|(_, first)| {
                now.saturating_sub(first) >= 2 * self.cfg.lease.arbiter_timeout_ms
            })
    }

    pub(in crate::engine) fn query_arbiter(&mut self, now: Millis) {
        if self.st.peer.arbiter_query.is_some() {
            self.st.peer.arbiter_misses = self.st.peer.arbiter_misses.saturating_add(1);
        }
        let req = self.new_req();
        let first = self.st.peer.arbiter_query.map_or(now, |(_, t)| t);
        self.st.peer.arbiter_query = Some((req, first));
        let epoch = self.st.epoch;
        self.send(Peer::Arbiter, Message::QueryAt { epoch, req });
    }

    pub(in crate::engine) fn on_view(&mut self, now: Millis, view: ArbiterView) {
        self.st.peer.arbiter_query = None;
        self.st.peer.arbiter_misses = 0;
        self.clear(
            now,
            AlertKind::ArbiterUnreachable,
            None,
            Subject::Site(self.me),
        );
        if let Some(holder) = view.holder {
            if view.epoch > self.st.epoch {
                self.learn_epoch(now, view.epoch, holder);
            }
        }
        self.st.peer.arbiter_view = Some(view.clone());
        self.st.peer.arbiter_view_at = Some(now);
        // A hand-off to us: renew to start our lease.
        if self.st.role == Role::SwitchoverTarget
            && view.holder == Some(self.me)
            && view.epoch == self.st.epoch
        {
            self.switchover_renew(now);
        }
        self.evaluate(now);
    }

    pub(in crate::engine) fn probe_result(&mut self, now: Millis, target: ProbeTarget, ok: bool) {
        if !self.watches_primary() {
            return;
        }
        let p = &mut self.st.peer;
        match (target, ok) {
            (ProbeTarget::Site, ok) => {
                // Reachability only qualifies the service probes; deciding on it alone would
                // see a healed link with a stale failure count as a dead service.
                p.site_reachable = ok;
                p.link_trouble = match (ok, p.link_trouble) {
                    (false, Some((since, last, n)))
                        if now.saturating_sub(last) < p.calm_needed(since, last) =>
                    {
                        Some((since, now, n.saturating_add(1)))
                    }
                    (false, _) => Some((now, now, 1)),
                    (true, Some((since, last, _)))
                        if now.saturating_sub(last) >= p.calm_needed(since, last) =>
                    {
                        None
                    }
                    (true, t) => t,
                };
                if !ok {
                    self.flapping_check(now);
                }
                return;
            }
            (ProbeTarget::Service, true) => {
                p.failed_probes = 0;
                p.first_failure = None;
                // A declined failover is asked again once the primary is seen healthy: its
                // service answering while the arbiter reports its lease lapsed is not that (it
                // cannot write), or an unanswered question would be asked again at once, every
                // time (swarm seed 92380).
                let lapsed_here = p
                    .arbiter_view
                    .as_ref()
                    .is_some_and(|v| v.lease_lapsed && v.epoch == self.st.epoch);
                if !lapsed_here {
                    p.declined_at = None;
                }
                p.ok_streak = p.ok_streak.saturating_add(1);
                let healthy_since = *p.healthy_since.get_or_insert(now);
                if p.ok_streak >= self.cfg.failover.unhealthy_count {
                    let subject = Subject::Site(self.st.holder);
                    self.clear(now, AlertKind::PrimaryDown, None, subject);
                    // Hysteresis: a link that flaps keeps its one alert instead of raising and
                    // clearing it with every flap; it clears once the link stayed up a while.
                    // Reachability failures count too: a service probe may keep landing in the
                    // flaps' up windows while the site probe still sees them.
                    let calm = crate::defaults::LINK_DOWN_CLEAR_AFTER;
                    let hb_every = self.cfg.lease.heartbeat_every_ms.max(1);
                    let heartbeats_flow = self
                        .st
                        .peer
                        .last_heartbeat_at
                        .is_some_and(|t| now.saturating_sub(t) <= (3 * hb_every).max(2_000));
                    let peer = &self.st.peer;
                    let link_calm = heartbeats_flow
                        && peer.link_trouble.is_none_or(|(since, last, _)| {
                            now.saturating_sub(last) >= peer.calm_needed(since, last)
                        });
                    if now.saturating_sub(healthy_since) >= calm && link_calm {
                        self.clear(now, AlertKind::LinkDown, None, subject);
                        self.st.peer.link_flapping = false;
                    }
                }
                // Auto Pilot succeeded: the primary came back by itself (unless its lease is
                // what is gone: then its service answering changes nothing).
                let lapsed = self
                    .st
                    .peer
                    .arbiter_view
                    .as_ref()
                    .is_some_and(|v| v.lease_lapsed && v.epoch == self.st.epoch);
                if !lapsed
                    && self.st.procedure.as_ref().is_some_and(|p| {
                        matches!(p.step, Step::LocalRestart { .. } | Step::Confirm { .. })
                    })
                {
                    self.abort_procedure(now, "the primary is healthy again");
                }
            }
            (ProbeTarget::Service, false) => {
                p.ok_streak = 0;
                p.healthy_since = None;
                p.failed_probes = p.failed_probes.saturating_add(1);
                p.first_failure.get_or_insert(now);
            }
        }
        self.evaluate(now);
    }

    /// A link that keeps failing (`unhealthy_count` failed reachability probes over
    /// `unhealthy_for_ms`, never calm in between: see `link_calm_after`) while the arbiter
    /// sees the primary renewing is a dead link even if no run of failures was long enough to
    /// make the primary look unhealthy: raise `link_down` once, kept while it flaps.
    fn flapping_check(&mut self, now: Millis) {
        if self.st.role != Role::Secondary || self.unhealthy(now) {
            return; // the steady-outage path decides
        }
        let f = &self.cfg.failover;
        let Some((since, _, n)) = self.st.peer.link_trouble else {
            return;
        };
        if n < f.unhealthy_count || now.saturating_sub(since) < f.unhealthy_for_ms {
            return;
        }
        let fresh_within = self.cfg.lease.arbiter_timeout_ms + f.probe_every_ms;
        let renewing = match (&self.st.peer.arbiter_view, self.st.peer.arbiter_view_at) {
            // Renewing as of now: a holder silent for over two renewal periods may be dead.
            (Some(v), Some(t)) if now.saturating_sub(t) <= fresh_within => {
                v.holder_renewing
                    && v.holder == Some(self.st.holder)
                    && v.since_renewal_ms.is_some_and(|s| {
                        s + now.saturating_sub(t) <= 2 * self.cfg.lease.renew_every_ms
                    })
            }
            _ => false,
        };
        if renewing {
            self.link_down(now, n, "the link fails again and again (flapping)");
            self.st.peer.link_flapping = true;
        }
    }

    /// Raise `link_down` (once: it clears only after the link stayed up a while).
    fn link_down(&mut self, now: Millis, failed: u32, why: &str) {
        let primary = self.st.holder;
        let subject = Subject::Site(primary);
        let id = AlertId {
            kind: AlertKind::LinkDown,
            db: None,
            subject,
        };
        if self.st.alerts.is_active(&id) {
            return;
        }
        let text = texts::link_down(self.cfg.site_name(self.me), self.cfg.site_name(primary));
        self.raise(
            now,
            AlertKind::LinkDown,
            None,
            subject,
            Severity::Failure,
            false,
            text,
        );
        let since_renewal = self
            .st
            .peer
            .arbiter_view
            .as_ref()
            .and_then(|v| v.since_renewal_ms);
        self.audit(
            now,
            "no failover".into(),
            format!(
                "the arbiter still sees the primary renewing: dead link, not dead site ({why})"
            ),
            vec![
                Self::kv("failed_probes", failed),
                Self::kv("arbiter_since_renewal_ms", format!("{since_renewal:?}")),
            ],
        );
    }

    pub(in crate::engine) fn unhealthy(&self, now: Millis) -> bool {
        let p = &self.st.peer;
        let f = &self.cfg.failover;
        p.failed_probes >= f.unhealthy_count
            && p.first_failure
                .is_some_and(|t| now.saturating_sub(t) >= f.unhealthy_for_ms)
    }

    /// Dead site or dead link? Decide from our probes and the arbiter's view.
    pub(in crate::engine) fn evaluate(&mut self, now: Millis) {
        if self.st.role != Role::Secondary {
            return;
        }
        if !self.unhealthy(now) {
            return self.lapsed_holder(now);
        }
        let primary = self.st.holder;
        let subject = Subject::Site(primary);
        let p = &self.st.peer;
        let failed = p.failed_probes;
        let secs = p.first_failure.map_or(0, |t| now.saturating_sub(t) / 1000);
        let fresh_within = self.cfg.lease.arbiter_timeout_ms + self.cfg.failover.probe_every_ms;
        let view = match (&p.arbiter_view, p.arbiter_view_at) {
            (Some(v), Some(t)) if now.saturating_sub(t) <= fresh_within => Some(v.clone()),
            _ => None,
        };
        let view_age = p.arbiter_view_at.map_or(0, |t| now.saturating_sub(t));
        let down_id = AlertId {
            kind: AlertKind::PrimaryDown,
            db: None,
            subject,
        };
        match view {
            Some(v)
                if v.holder_renewing
                    && v.holder == Some(primary)
                    && self.st.peer.site_reachable =>
            {
                self.service_down(now, &v);
            }
            // The arbiter's lease outlives a dead holder by up to a lease length. A holder whose
            // last renewal (as of now: the view's age counts) is over two renewal periods old
            // is not "seen renewing": neither a dead link nor (yet) a dead site; the lease
            // lapse decides.
            Some(v)
                if v.holder_renewing
                    && v.holder == Some(primary)
                    && v.since_renewal_ms
                        .is_some_and(|s| s + view_age > 2 * self.cfg.lease.renew_every_ms) => {}
            Some(v) if v.holder_renewing && v.holder == Some(primary) => {
                self.link_down(now, failed, "the primary is unreachable from here");
            }
            Some(v) if v.lease_lapsed => {
                self.clear(now, AlertKind::LinkDown, None, subject);
                self.st.peer.link_flapping = false;
                self.primary_down(now, &down_id, failed, secs, true);
                if self.cfg.failover.automatic
                    && self.st.procedure.is_none()
                    && !self.declined_this_episode()
                    && self.may_take_over(now)
                {
                    let detected = p_first(&self.st.peer, now);
                    self.start_failover(
                        now,
                        false,
                        false,
                        detected,
                        &v,
                        "the primary is unhealthy from here and the arbiter reports its lease lapsed",
                    );
                }
            }
            Some(_) => {} // not renewing, not lapsed yet: wait for the lease to run out
            None => {
                self.primary_down(now, &down_id, failed, secs, false);
                if self.cfg.arbiter && self.arbiter_silent(now) {
                    self.arbiter_unreachable(now);
                }
            }
        }
    }

    /// The primary answers probes from here, but the arbiter reports its lease lapsed: it
    /// cannot reach the arbiter (or gave its lease up) and has stopped writing, so nobody
    /// accepts writes. This site, which reaches the arbiter, takes over (a hand-off to a target
    /// that lost the arbiter right after it, or a primary cut from the arbiter only, would
    /// otherwise leave no writer until the partition heals).
    fn lapsed_holder(&mut self, now: Millis) {
        let fresh_within = self.cfg.lease.arbiter_timeout_ms + self.cfg.failover.probe_every_ms;
        let view = match (&self.st.peer.arbiter_view, self.st.peer.arbiter_view_at) {
            (Some(v), Some(t)) if now.saturating_sub(t) <= fresh_within => v.clone(),
            _ => return,
        };
        let primary = self.st.holder;
        if !(view.lease_lapsed && view.holder == Some(primary) && view.epoch == self.st.epoch) {
            return;
        }
        let text = texts::primary_lapsed(self.cfg.site_name(primary));
        self.raise_primary_down(now, Subject::Site(primary), text);
        // The service answers, so each probe ends the probes' outage: a decline stands until the
        // primary is seen healthy with its lease (the service probe clears it then).
        if self.cfg.failover.automatic
            && self.st.procedure.is_none()
            && self.st.peer.declined_at.is_none()
            && self.may_take_over(now)
        {
            // No local restart: the service answers; it is the lease that is gone.
            self.st.peer.local_restart_at = Some(now);
            self.st.peer.first_failure.get_or_insert(now);
            self.start_failover(
                now,
                false,
                false,
                now,
                &view,
                "the arbiter reports the primary's lease lapsed although its service answers here: \
                 it cannot reach the arbiter and has stopped writing",
            );
        }
    }

    /// Raise `primary_down` once for this outage (`lapsed`: the arbiter reports the lease gone).
    fn primary_down(&mut self, now: Millis, id: &AlertId, failed: u32, secs: u64, lapsed: bool) {
        let text = texts::primary_down(self.cfg.site_name(self.st.holder), failed, secs, lapsed);
        self.raise_primary_down(now, id.subject, text);
    }

    /// Raise the critical `primary_down` about `subject`, unless it is already active (the
    /// text of the first raise stands for the outage).
    pub(in crate::engine) fn raise_primary_down(
        &mut self,
        now: Millis,
        subject: Subject,
        text: String,
    ) {
        let id = AlertId {
            kind: AlertKind::PrimaryDown,
            db: None,
            subject,
        };
        if self.st.alerts.is_active(&id) {
            return;
        }
        self.raise(
            now,
            AlertKind::PrimaryDown,
            None,
            subject,
            Severity::Critical,
            false,
            text,
        );
    }

    /// An operator (or an unanswered confirmation) declined a failover during this outage.
    pub(in crate::engine) fn declined_this_episode(&self) -> bool {
        let p = &self.st.peer;
        p.declined_at
            .is_some_and(|d| p.first_failure.is_some_and(|f| f <= d))
    }

    /// Auto Pilot already asked for a local restart during this outage.
    pub(in crate::engine) fn restart_tried_this_episode(&self) -> bool {
        let p = &self.st.peer;
        p.local_restart_at
            .is_some_and(|t| p.first_failure.is_some_and(|f| f <= t))
    }

    /// The primary's agent answers and still renews, but its database service does not: not a
    /// dead link and not a dead site. Auto Pilot (when configured) asks the agent to restart
    /// the service; if that fails the agent gives up its lease and the failover follows.
    pub(in crate::engine) fn service_down(&mut self, now: Millis, v: &ArbiterView) {
        let primary = self.st.holder;
        let subject = Subject::Site(primary);
        let id = AlertId {
            kind: AlertKind::PrimaryDown,
            db: None,
            subject,
        };
        let failed = self.st.peer.failed_probes;
        if !self.st.alerts.is_active(&id) {
            let secs = self
                .st
                .peer
                .first_failure
                .map_or(0, |t| now.saturating_sub(t) / 1000);
            let text = texts::service_down(self.cfg.site_name(primary), failed, secs);
            self.raise(
                now,
                AlertKind::PrimaryDown,
                None,
                subject,
                Severity::Critical,
                false,
                text,
            );
            self.audit(
                now,
                "no failover".into(),
                "the primary's service is down but its agent answers and the arbiter sees it renewing".into(),
                vec![
                    Self::kv("failed_probes", failed),
                    Self::kv("site_reachable", true),
                    Self::kv("arbiter_holder_renewing", v.holder_renewing),
                    Self::kv("local_restart", self.cfg.failover.local_restart),
                ],
            );
        }
        if self.cfg.failover.automatic
            && self.cfg.failover.local_restart
            && self.st.procedure.is_none()
            && !self.restart_tried_this_episode()
            && !self.declined_this_episode()
            && self.may_take_over(now)
        {
            let detected = p_first(&self.st.peer, now);
            self.start_failover(
                now,
                false,
                false,
                detected,
                v,
                "Auto Pilot: the primary's service is down while its agent answers; a local restart comes first",
            );
        }
    }

    /// The primary's agent could not restart its database service (Auto Pilot): give the lease
    /// up so that it lapses and the recovery site takes over.
    pub(in crate::engine) fn resign(&mut self, now: Millis, why: &str) {
        if !self.cfg.arbiter || !matches!(self.st.role, Role::Primary | Role::Fenced) {
            return;
        }
        self.st.lease.resigned = true;
        self.st.timers.cancel(Timer::LeaseRenew);
        if self.st.role == Role::Primary {
            self.become_fenced(now, "resigning the lease: the database service is down");
        }
        self.audit(
            now,
            "resign".into(),
            format!("{why}: the lease is left to lapse so the recovery site can take over"),
            vec![
                Self::kv("epoch", self.st.epoch),
                Self::kv("lease_expires", format!("{:?}", self.st.lease.expires)),
            ],
        );
    }
}
