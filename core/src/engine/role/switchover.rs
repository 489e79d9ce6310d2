//! Planned switchover and failback: final log, exact positions, epoch hand-off, reverse replication.

use super::*;
use crate::engine::{OpPurpose, SiteEngine, Timer};
use crate::ids::{DbId, Epoch, Lsn, Millis};
use crate::protocol::{Command, Message, Peer};

impl SiteEngine {
    pub(in crate::engine) fn start_switchover(&mut self, now: Millis) {
        if self.st.role != Role::Primary || self.st.procedure.is_some() {
            return self.audit(
                now,
                "switchover refused".into(),
                format!(
                    "this site is {} (must be a primary without a procedure in progress)",
                    self.st.role.as_str()
                ),
                vec![],
            );
        }
        // Writes stop first: never for a recovery site that is not there to take over.
        let silent = self
            .st
            .peer
            .last_heard
            .map_or(Millis::MAX, |t| now.saturating_sub(t));
        if silent > 3 * self.cfg.lease.heartbeat_every_ms {
            return self.audit(
                now,
                "switchover refused".into(),
                "the recovery site has not been heard from recently".into(),
                vec![Self::kv("silent_ms", silent)],
            );
        }
        self.st.role = Role::SwitchingOver;
        let op = self.issue(now, OpPurpose::Role, |op| Command::Fence { op });
        self.st.procedure = Some(Procedure::new(
            ProcKind::Switchover,
            Step::StopWrites { op },
            now,
            now,
        ));
        self.st.timers.set(
            Timer::RoleStep,
            now + self.cfg.failover.switchover_timeout_ms,
        );
        self.audit(
            now,
            "switchover".into(),
            "planned switchover requested by an operator".into(),
            vec![Self::kv("to", self.cfg.site_name(self.peer))],
        );
    }

    /// Primary side: once the final log is acknowledged, tell the target the final positions.
    pub(in crate::engine) fn switchover_progress(&mut self, now: Millis) {
        if !self
            .st
            .procedure
            .as_ref()
            .is_some_and(|p| p.step == Step::Shipping)
        {
            return;
        }
        if !self.st.outbox.is_empty() {
            return;
        }
        let positions: Vec<(DbId, Lsn)> = self
            .st
            .dbs
            .iter()
            .zip(&self.st.writes)
            .enumerate()
            .map(|(i, (d, w))| {
                let last = d.last_backup.map_or(Lsn(0), |b| b.lsn_end);
                (DbId(i as u32), w.lsn.max(last))
            })
            .collect();
        if let Some(p) = self.st.procedure.as_mut() {
            p.final_positions = positions.clone();
            p.step = Step::AwaitReady;
        }
        let epoch = self.st.epoch;
        self.send_peer(Message::SwitchoverFinal { epoch, positions });
        // Said again until the target answers (step_deadline), within the switchover timeout.
        let until = self.st.procedure.as_ref().map_or(now, |p| {
            p.started_at + self.cfg.failover.switchover_timeout_ms
        });
        self.st.timers.set(
            Timer::RoleStep,
            (now + self.cfg.lease.arbiter_timeout_ms).min(until),
        );
    }

    pub(in crate::engine) fn on_switchover_final(
        &mut self,
        now: Millis,
        epoch: Epoch,
        positions: Vec<(DbId, Lsn)>,
    ) {
        // A target that does not hear the arbiter would be handed the epoch (the arbiter hears
        // it) and never be granted its lease: writes stop until that lease lapses and the old
        // primary takes the epoch back by a failover (swarm seed 243276). Refused the same way.
        let deaf = self.cfg.arbiter
            && !self.cfg.planted("handoff_to_unheard_target")
            && self.st.alerts.is_active(&crate::alert::AlertId {
                kind: AlertKind::ArbiterUnreachable,
                db: None,
                subject: crate::alert::Subject::Site(self.me),
            });
        if epoch == self.st.epoch
            && (deaf || self.own_service_refuses(now))
            && (self.st.role == Role::Secondary
                || self
                    .st
                    .procedure
                    .as_ref()
                    .is_some_and(|p| p.step == Step::ReachFinal))
        {
            // A target whose own database answers its checks with errors would take the epoch
            // and never accept writes (swarm seeds 203783, 203830): refuse, the primary writes
            // on. Once it said ready the hand-off may be under way: it goes on.
            let (reason, why) = if deaf {
                (
                    "the recovery site cannot take over: it does not hear the arbiter (see its \
                     arbiter_unreachable alert); mend the link and ask again",
                    "this site does not hear the arbiter",
                )
            } else {
                (
                    "the recovery site cannot take over: its own database service answers its \
                     checks with errors (see its audit); mend it and ask again",
                    "this site's own database service does not answer",
                )
            };
            self.send_peer(Message::SwitchoverAborted {
                epoch,
                reason: reason.to_string(),
            });
            if self.st.role == Role::SwitchoverTarget {
                self.abandon_target(now, why);
            }
            return;
        }
        // A database behind a hole (a missing log, or waiting for a reseed) cannot reach its
        // final position: the switchover would wait out its timeout with writes stopped, and a
        // loss of the primary meanwhile leaves no writer (swarm seed 209123). Refuse at once.
        let blocked: Vec<String> = positions
            .iter()
            .filter(|(db, lsn)| {
                let behind = self
                    .st
                    .dbs
                    .get(db.0 as usize)
                    .is_some_and(|d| d.position.unwrap_or_default() < *lsn);
                let hole =
                    self.st.alerts.for_db(*db).any(|(id, _)| {
                        matches!(id.kind, AlertKind::MissingLog | AlertKind::Reseed)
                    });
                behind && hole
            })
            .map(|(db, _)| self.cfg.db_name(*db).to_string())
            .collect();
        if epoch == self.st.epoch
            && !blocked.is_empty()
            && matches!(self.st.role, Role::Secondary | Role::SwitchoverTarget)
        {
            let reason = format!(
                "the recovery site cannot reach the final position of {}: a log is missing or a \
                 reseed is pending (see its missing_log / reseed alerts); mend the chain \
                 (`lifeboat reseed <db>`) and ask again",
                blocked.join(", ")
            );
            self.send_peer(Message::SwitchoverAborted { epoch, reason });
            if self.st.role == Role::SwitchoverTarget {
                self.abandon_target(now, "a database cannot reach its final position");
            }
            return;
        }
        if epoch == self.st.epoch
            && !matches!(self.st.role, Role::Secondary | Role::SwitchoverTarget)
        {
            // Say so at once, or the primary keeps its writes stopped until its timeout.
            let reason = format!(
                "the recovery site cannot take over: it is {}",
                self.st.role.as_str()
            );
            self.send_peer(Message::SwitchoverAborted { epoch, reason });
            return;
        }
        if epoch != self.st.epoch
            || !matches!(self.st.role, Role::Secondary | Role::SwitchoverTarget)
        {
            return;
        }
        // The primary sends the final positions again until the target answers: a repeat
        // continues the switchover this site already follows, and its deadline runs from the
        // first. Restarting the clock at each repeat let a target whose primary died after
        // resending outlive the switchover timeout (swarm seed 9700163).
        let started = self
            .st
            .procedure
            .as_ref()
            .filter(|p| self.st.role == Role::SwitchoverTarget && p.kind == ProcKind::Switchover)
            .map_or(now, |p| p.started_at);
        self.st.role = Role::SwitchoverTarget;
        let mut p = Procedure::new(ProcKind::Switchover, Step::ReachFinal, started, started);
        for (db, lsn) in &positions {
            if let Some(d) = self.st.dbs.get_mut(db.0 as usize) {
                d.known_produced = d.known_produced.max(*lsn);
            }
        }
        p.final_positions = positions;
        self.st.procedure = Some(p);
        self.st.timers.set(
            Timer::RoleStep,
            started + self.cfg.failover.switchover_timeout_ms,
        );
        self.pump_all(now);
        self.switchover_target_check(now);
    }

    pub(in crate::engine) fn switchover_target_check(&mut self, now: Millis) {
        let Some(p) = self.st.procedure.as_ref() else {
            return;
        };
        if p.step != Step::ReachFinal {
            return;
        }
        let reached = p.final_positions.iter().all(|(db, lsn)| {
            self.st
                .dbs
                .get(db.0 as usize)
                .is_some_and(|d| d.position.unwrap_or_default() >= *lsn)
        });
        if !reached {
            return;
        }
        self.set_step(Step::AwaitEpoch);
        let epoch = self.st.epoch;
        self.send_peer(Message::SwitchoverReady { epoch });
        // The arbiter hands the epoch only to a site it hears from: say so now.
        if self.cfg.arbiter && self.st.peer.arbiter_query.is_none() {
            self.query_arbiter(now);
        }
        self.audit(
            now,
            "switchover ready".into(),
            "every final position is restored".into(),
            vec![],
        );
    }

    pub(in crate::engine) fn on_switchover_ready(&mut self, now: Millis, epoch: Epoch) {
        if self.st.role != Role::SwitchingOver || epoch != self.st.epoch {
            return;
        }
        if !self
            .st
            .procedure
            .as_ref()
            .is_some_and(|p| p.step == Step::AwaitReady)
        {
            return;
        }
        let req = self.new_req();
        self.set_step(Step::Handoff { req });
        let to = self.peer;
        if !self.cfg.arbiter {
            // No witness: the hand-off is between the two sites.
            let next = Epoch(epoch.0 + 1);
            self.send_peer(Message::EpochNotice {
                epoch: next,
                holder: to,
            });
            self.learn_epoch(now, next, to);
            return;
        }
        self.send(Peer::Arbiter, Message::Handoff { epoch, to, req });
        self.st
            .timers
            .set(Timer::RoleStep, now + self.cfg.lease.arbiter_timeout_ms);
    }

    /// Primary side: the arbiter gave the epoch to the target; this site is the secondary now,
    /// with exactly the target's data (no reseed).
    pub(in crate::engine) fn switchover_handed_off(&mut self, now: Millis) {
        if self.st.role != Role::SwitchingOver {
            return;
        }
        if let Some(p) = self.st.procedure.take() {
            for (db, lsn) in p.final_positions {
                if let Some(d) = self.st.dbs.get_mut(db.0 as usize) {
                    d.position = Some(lsn);
                    d.known_produced = lsn;
                    d.last_log_at = now;
                }
            }
        }
        self.st.role = Role::Secondary;
        self.st.backups_paused = false; // the pause was about this site's backups
        self.st.lease = LeaseState::default();
        self.st.timers.cancel(Timer::FenceDeadline);
        self.st.timers.cancel(Timer::RoleStep);
        self.st.peer.last_heartbeat_at = None;
        self.st.peer.watch_since = now;
        self.audit(
            now,
            "handed off".into(),
            "planned switchover: this site is the secondary now".into(),
            vec![Self::kv("epoch", self.st.epoch)],
        );
    }

    pub(in crate::engine) fn switchover_renew(&mut self, now: Millis) {
        if self.st.role != Role::SwitchoverTarget {
            return;
        }
        // Only before the promotion: a notice or a view arriving later must not start another.
        if !self.st.procedure.as_ref().is_some_and(|p| {
            matches!(
                p.step,
                Step::AwaitEpoch | Step::ReachFinal | Step::Renew { .. }
            )
        }) {
            return;
        }
        if !self.cfg.arbiter {
            // Without an arbiter only the old primary's notice of the new epoch makes this site
            // its holder; a message claiming more (no arbiter exists to send a view) is no
            // reason to write.
            if self.st.holder != self.me {
                return;
            }
            self.st.lease.unmanaged = true;
            return self.promote(now);
        }
        if self.renewals_paused(now) {
            let at = self.st.lease.quiet_until.unwrap_or(now);
            self.st.timers.set(Timer::RoleStep, at);
            return;
        }
        let req = self.new_req();
        self.st.lease.remember(req, now);
        self.set_step(Step::Renew { req });
        let epoch = self.st.epoch;
        self.send(Peer::Arbiter, Message::Renew { epoch, req });
        self.st
            .timers
            .set(Timer::RoleStep, now + self.cfg.lease.arbiter_timeout_ms);
    }

    pub(in crate::engine) fn abort_switchover(&mut self, now: Millis, why: &str) {
        if self.st.role != Role::SwitchingOver {
            return;
        }
        self.st.procedure = None;
        self.st.timers.cancel(Timer::RoleStep);
        let epoch = self.st.epoch;
        self.send_peer(Message::SwitchoverAborted {
            epoch,
            reason: why.to_string(),
        });
        self.audit(now, "switchover aborted".into(), why.into(), vec![]);
        self.st.role = Role::Fenced;
        if self.st.lease.valid_at(now) {
            self.allow_writes(now, "switchover aborted: writes resume");
        }
    }
}
