//! Unplanned failover: detection, Auto Pilot, confirmation, drain, the new epoch, fence, promote, identity, the report.

use super::*;
use crate::alert::{AlertKind, Severity, Subject};
use crate::artifact::ArtifactKind;
use crate::engine::{texts, OpPurpose, SiteEngine, Timer};
use crate::ids::{DbId, Epoch, Millis, OpId};
use crate::protocol::{ArbiterView, Command, Failure, LostWrites, Message, Peer};
use crate::report::{DbLoss, Report};

impl SiteEngine {
    /// `by_operator`: an operator asked for it, which is the confirmation (and skips Auto Pilot).
    pub(in crate::engine) fn start_failover(
        &mut self,
        now: Millis,
        forced: bool,
        by_operator: bool,
        detected_at: Millis,
        view: &ArbiterView,
        why: &str,
    ) {
        self.start_failover_until(now, forced, by_operator, detected_at, view, why, None)
    }

    /// [`Self::start_failover`] that stops at a chosen point (`until`, an operator's).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::engine) fn start_failover_until(
        &mut self,
        now: Millis,
        forced: bool,
        by_operator: bool,
        detected_at: Millis,
        view: &ArbiterView,
        why: &str,
        until: Option<crate::ids::UtcMillis>,
    ) {
        self.st.role = Role::Promoting;
        let f = self.cfg.failover.clone();
        let automatic = !forced && !by_operator;
        let step = if f.local_restart
            && self.st.peer.site_reachable
            && automatic
            && !self.restart_tried_this_episode()
        {
            let op = self.new_op_id();
            self.st.peer.local_restart_at = Some(now);
            self.send_peer(Message::RestartRequest { op });
            Step::LocalRestart {
                until: now + f.local_restart_wait_ms,
            }
        } else if f.confirm && automatic {
            Step::Confirm {
                until: now + f.confirm_timeout_ms,
            }
        } else {
            Step::Drain
        };
        let mut procedure = Procedure::new(
            ProcKind::Failover { forced },
            step.clone(),
            now,
            detected_at,
        );
        procedure.until = until;
        self.st.procedure = Some(procedure);
        self.audit(
            now,
            "failover".into(),
            why.into(),
            vec![
                Self::kv("failed_probes", self.st.peer.failed_probes),
                Self::kv(
                    "first_failure_at",
                    format!("{:?}", self.st.peer.first_failure),
                ),
                Self::kv("arbiter_epoch", view.epoch),
                Self::kv("arbiter_lease_lapsed", view.lease_lapsed),
                Self::kv("arbiter_holder_renewing", view.holder_renewing),
                Self::kv("forced", forced),
                Self::kv("site_reachable", self.st.peer.site_reachable),
                Self::kv("step", format!("{step:?}")),
                Self::kv(
                    "until",
                    until.map_or_else(|| "the newest point".to_string(), |u| u.to_string()),
                ),
            ],
        );
        match step {
            Step::LocalRestart { until } | Step::Confirm { until } => {
                self.st.timers.set(Timer::RoleStep, until)
            }
            _ => self.drain_step(now),
        }
    }

    pub(in crate::engine) fn step_deadline(&mut self, now: Millis) {
        let Some(p) = self.st.procedure.clone() else {
            return;
        };
        let arbiter_timeout = self.cfg.lease.arbiter_timeout_ms;
        match (&p.kind, &p.step) {
            (_, Step::LocalRestart { until }) if now >= *until => {
                let f = &self.cfg.failover;
                let forced = matches!(p.kind, ProcKind::Failover { forced: true });
                if f.confirm && !forced {
                    let until = now + f.confirm_timeout_ms;
                    self.set_step(Step::Confirm { until });
                    self.st.timers.set(Timer::RoleStep, until);
                } else {
                    self.set_step(Step::Drain);
                    self.drain_step(now);
                }
            }
            (_, Step::Confirm { until }) if now >= *until => {
                match self.cfg.failover.on_confirm_timeout {
                    crate::config::OnConfirmTimeout::Proceed => {
                        self.audit(
                            now,
                            "failover confirmation timed out".into(),
                            "configured to proceed".into(),
                            vec![Self::kv(
                                "confirm_timeout_ms",
                                self.cfg.failover.confirm_timeout_ms,
                            )],
                        );
                        self.set_step(Step::Drain);
                        self.drain_step(now);
                    }
                    crate::config::OnConfirmTimeout::Abort => {
                        // Declined: not asked again until the primary has been seen healthy.
                        self.st.peer.declined_at = Some(now);
                        self.abort_procedure(
                            now,
                            "no operator confirmation in time (configured to abort)",
                        )
                    }
                }
            }
            (_, Step::Drain) => self.drain_step(now),
            (_, Step::Acquire { .. }) => self.acquire(now),
            (_, Step::Settle) => self.after_epoch(now),
            (
                ProcKind::Switchover,
                Step::AwaitReady | Step::Shipping | Step::StopWrites { .. } | Step::FinalLog { .. },
            ) => {
                let until = p.started_at + self.cfg.failover.switchover_timeout_ms;
                if now >= until {
                    self.abort_switchover(now, "the switchover did not complete in time");
                    return;
                }
                match p.step {
                    // The final positions or the target's answer may have been lost.
                    Step::AwaitReady => {
                        let epoch = self.st.epoch;
                        self.send_peer(Message::SwitchoverFinal {
                            epoch,
                            positions: p.final_positions.clone(),
                        });
                    }
                    Step::Shipping => self.switchover_progress(now),
                    _ => {}
                }
                self.st
                    .timers
                    .set(Timer::RoleStep, (now + arbiter_timeout).min(until));
            }
            (_, Step::Handoff { .. }) => {
                // No answer from the arbiter: ask again (hand-off is idempotent there).
                let req = self.new_req();
                let epoch = self.st.epoch;
                let to = self.peer;
                self.set_step(Step::Handoff { req });
                self.send(Peer::Arbiter, Message::Handoff { epoch, to, req });
                self.st.timers.set(Timer::RoleStep, now + arbiter_timeout);
            }
            (ProcKind::Rebuild, Step::AwaitFulls { .. }) => {
                // Ask again: the request or the fulls may have been lost.
                self.send_peer(Message::RequestFull { db: None });
                self.set_step(Step::AwaitFulls { asked_at: now });
                self.st
                    .timers
                    .set(Timer::RoleStep, now + self.cfg.restore.op_timeout_ms);
            }
            (_, Step::AwaitEpoch | Step::ReachFinal) => {
                // The primary may have died or abandoned the switchover without a word: once
                // it is overdue and the arbiter still names the primary, watch it again.
                let overdue = now.saturating_sub(p.started_at)
                    >= self.cfg.failover.switchover_timeout_ms + 2 * arbiter_timeout;
                let fresh = self
                    .st
                    .peer
                    .arbiter_view_at
                    .is_some_and(|t| now.saturating_sub(t) <= 2 * arbiter_timeout);
                let peer_holds = self
                    .st
                    .peer
                    .arbiter_view
                    .as_ref()
                    .is_some_and(|v| v.epoch == self.st.epoch && v.holder == Some(self.peer));
                // Without an arbiter nobody can say who holds the epoch; a target that has not
                // said it is ready yet cannot have been handed it, so it gives up on its own
                // (a standby catching up a long delay while its primary died: swarm seed
                // 9990562 waited forever).
                let unready_alone = !self.cfg.arbiter && p.step == Step::ReachFinal;
                if overdue && ((fresh && peer_holds) || unready_alone) {
                    return self.abandon_target(now, "the switchover did not complete in time");
                }
                if self.cfg.arbiter {
                    self.query_arbiter(now);
                }
                self.st.timers.set(Timer::RoleStep, now + arbiter_timeout);
            }
            (_, Step::Renew { .. }) => {
                self.switchover_renew(now);
            }
            _ => {
                if let Some(at) = self.step_until(&p.step) {
                    self.st.timers.set(Timer::RoleStep, at);
                }
            }
        }
    }

    pub(in crate::engine) fn step_until(&self, s: &Step) -> Option<Millis> {
        match s {
            Step::LocalRestart { until } | Step::Confirm { until } => Some(*until),
            _ => None,
        }
    }

    pub(in crate::engine) fn set_step(&mut self, step: Step) {
        if let Some(p) = self.st.procedure.as_mut() {
            p.step = step;
        }
    }

    pub(in crate::engine) fn abort_procedure(&mut self, now: Millis, why: &str) {
        let Some(p) = self.st.procedure.take() else {
            return;
        };
        self.st.timers.cancel(Timer::RoleStep);
        if let ProcKind::Failover { .. } = p.kind {
            if p.new_epoch.is_some() {
                // We already hold the new epoch: promotion must finish, not abort.
                self.st.procedure = Some(p);
                return;
            }
            self.st.role = Role::Secondary;
        }
        self.audit(
            now,
            "abort".into(),
            why.into(),
            vec![Self::kv("procedure", format!("{:?}", p.kind))],
        );
        // Restores stopped at the drain's barrier go on.
        if p.past_drain() {
            self.pump_all(now);
        }
    }

    /// Drain: restore everything received and verified before taking over. The drain is a
    /// barrier: an artifact whose restore failed and waits for its retry is retried now (up to
    /// [`crate::defaults::DRAIN_RETRIES`] times), not left behind to be thrown away or, worse,
    /// restored into the new primary when its retry comes due. What still fails is counted in
    /// the report's loss (the position stays short of it).
    pub(in crate::engine) fn drain_step(&mut self, now: Millis) {
        if !self
            .st
            .procedure
            .as_ref()
            .is_some_and(|p| p.step == Step::Drain)
        {
            return;
        }
        self.drain_retry_waiting(now);
        self.pump_all(now);
        if self.restores_in_flight() {
            return; // role_progress comes back when restores finish
        }
        let hold = self.hold();
        if self
            .st
            .dbs
            .iter()
            .any(|d| matches!(d.next_at(now, &hold), crate::engine::Next::Restore(_)))
        {
            return;
        }
        let given_up: Vec<(String, String)> = self
            .st
            .dbs
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d.next_at(now, &hold), crate::engine::Next::Waiting))
            .map(|(i, d)| {
                let name = self.cfg.databases.get(i).cloned().unwrap_or_default();
                let keys = d
                    .pending
                    .iter()
                    .filter(|x| x.retry_at.is_some_and(|t| t > now) && d.applies(&x.meta))
                    .map(|x| format!("{}..{}", x.meta.key.lsn_start.0, x.meta.key.lsn_end.0))
                    .collect::<Vec<_>>()
                    .join(" ");
                (name, keys)
            })
            .collect();
        let forced = matches!(
            self.st.procedure.as_ref().map(|p| &p.kind),
            Some(ProcKind::Failover { forced: true })
        );
        if !forced && self.own_service_down() {
            return self.abort_procedure(
                now,
                "this site's own database service does not answer its checks: taking over would \
                 not help (an operator can force the failover)",
            );
        }
        if !given_up.is_empty() {
            self.audit(
                now,
                "drain gave up on failing restores".into(),
                "these received artifacts failed every retry the drain gave them; their writes \
                 count as lost in the report"
                    .into(),
                given_up,
            );
        }
        // A restore that was running when the point was chosen may have passed it.
        if let Some(why) = self
            .st
            .procedure
            .as_ref()
            .and_then(|p| p.until)
            .and_then(|u| self.past_point(u))
        {
            return self.abort_procedure(now, &why);
        }
        self.note_left_out();
        self.acquire(now);
    }

    /// Why a failover here cannot stop at `until`: a database already holds an artifact made
    /// after it (a standby without an apply delay, a delay shorter than the point's age, or a
    /// reseed or rebuild, which restores its full at once). A database cannot be rewound in
    /// place, so promoting it would open writes the operator chose to leave out. `None` when
    /// every database's last restore was made at or before the point.
    pub(in crate::engine) fn past_point(&self, until: crate::ids::UtcMillis) -> Option<String> {
        let past: Vec<(usize, &crate::engine::chain::Seen)> = self
            .st
            .dbs
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.last_restore.as_ref().map(|s| (i, s)))
            .filter(|(_, s)| s.created_utc > until)
            .collect();
        let (i, first) = past.first()?;
        let newest = past.iter().map(|(_, s)| s.created_utc).max()?;
        Some(format!(
            "{} of {} databases already hold writes made after the chosen point {until}: \
             [{}] restored the {} ending at position {}, made at {}. A database cannot be \
             rewound in place, so this site cannot stop at that point. Fail over without a \
             point, or choose one at or after {newest}",
            past.len(),
            self.st.dbs.len(),
            self.db_name(DbId(*i as u32)),
            first.kind.text_word(),
            first.lsn_end.0,
            first.created_utc,
        ))
    }

    /// What a failover to a chosen point leaves out, per database, as the drain ends (before
    /// the new epoch makes the older epoch's waiting artifacts stale).
    fn note_left_out(&mut self) {
        let until = self.st.procedure.as_ref().and_then(|p| p.until);
        let left_out: Vec<crate::report::LeftOut> = until
            .map(|until| {
                let hold = crate::engine::chain::Hold {
                    delay_ms: 0,
                    until: Some(until),
                };
                self.st
                    .dbs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| {
                        // What the database holds already is not left out, even where an
                        // artifact made after the point overlaps it.
                        let at = d.position.unwrap_or_default();
                        let out: Vec<_> = d
                            .pending
                            .iter()
                            .filter(|x| hold.leaves_out(&x.meta) && x.meta.key.lsn_end > at)
                            .collect();
                        Some(crate::report::LeftOut {
                            db: DbId(i as u32),
                            until,
                            artifacts: out.len() as u32,
                            from: out.iter().map(|x| x.meta.key.lsn_start).min()?.max(at),
                            to: out.iter().map(|x| x.meta.key.lsn_end).max()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(p) = self.st.procedure.as_mut() {
            p.left_out = left_out;
        }
    }

    /// Make every artifact that waits for a retry due now, if the drain has not yet given it
    /// its retries. Artifacts given up for good (`retry_at` = never) are not retried.
    fn drain_retry_waiting(&mut self, now: Millis) {
        if self.cfg.planted("drain_ignores_retries") {
            return;
        }
        let Some(p) = self.st.procedure.as_mut() else {
            return;
        };
        for d in self.st.dbs.iter_mut() {
            for x in d.pending.iter_mut() {
                let waiting = x.retry_at.is_some_and(|t| t > now && t != Millis::MAX);
                if !waiting {
                    continue;
                }
                let i = match p.drain_retries.iter().position(|(k, _)| *k == x.meta.key) {
                    Some(i) => i,
                    None => {
                        p.drain_retries.push((x.meta.key, 0));
                        p.drain_retries.len() - 1
                    }
                };
                if p.drain_retries[i].1 < crate::defaults::DRAIN_RETRIES {
                    p.drain_retries[i].1 += 1;
                    x.retry_at = Some(now);
                }
            }
        }
    }

    pub(in crate::engine) fn restores_in_flight(&self) -> bool {
        self.st.restoring > 0
            || self
                .st
                .dbs
                .iter()
                .any(|d| d.in_flight.is_some() || d.queued)
    }

    /// The loss bounds of a failover (Contracts: RPO). Positions come from outside (the
    /// driver's write positions, the primary's heartbeats) and are opaque: any `u64` is a
    /// possible LSN, so none is rejected. Sums are therefore exact (`u128`): a lower bound
    /// beyond `u64::MAX` is reported as `u64::MAX` (still a true lower bound), and an upper
    /// bound beyond it as unknown, never as a smaller number, with an audit record that names
    /// the positions. Found by fuzzing: the plain sums overflowed.
    pub(in crate::engine) fn compute_rpo(&mut self, now: Millis) {
        let mut lower = 0u128;
        let mut losses = Vec::new();
        // Writes that could have happened since the last heartbeat: its age (plus one heartbeat
        // of sampling lag) at twice the peak observed rate. Unknown without any heartbeat. The
        // peak is the primary's reported one or this site's own while it was the primary: a
        // primary lost seconds after a switchover has reported no rate yet, and its writes of
        // those seconds counted as none (swarm seed 210385).
        let peak = self.st.peer.peak_rate.max(self.st.own.peak_rate);
        let extra: Option<u128> = self.st.peer.last_heartbeat_at.map(|t| {
            let age = u128::from(now.saturating_sub(t) + self.cfg.lease.heartbeat_every_ms);
            (u128::from(peak) * 2 * age).div_ceil(1000)
        });
        let bound = |x: u128| u64::try_from(x).ok();
        let mut overflow = Vec::new();
        for (i, d) in self.st.dbs.iter().enumerate() {
            let restored = d.position.unwrap_or_default();
            let known = d.known_produced.max(restored);
            let l = known.0 - restored.0;
            lower += u128::from(l);
            let upper = extra.map(|x| bound(u128::from(l) + x));
            if upper == Some(None) {
                let name = self.cfg.databases.get(i).cloned().unwrap_or_default();
                overflow.push((name, format!("restored {} of {}", restored.0, known.0)));
            }
            // Every database that may have lost something is listed: a known loss, or an upper
            // bound above zero (or unknown).
            if l > 0 || extra.is_none_or(|x| x > 0) {
                losses.push(DbLoss {
                    db: DbId(i as u32),
                    restored,
                    known_produced: known,
                    rpo_lower: l,
                    rpo_upper: upper.flatten(),
                });
            }
        }
        let upper = extra.and_then(|x| bound(lower + x));
        if extra.is_some() && upper.is_none() {
            overflow.push(("peak_rate_per_sec".into(), peak.to_string()));
            self.audit(
                now,
                "rpo upper bound unknown".into(),
                "the reported write positions and rate imply more than 2^64 positions lost; \
                 the upper bound is reported as unknown rather than as a smaller number"
                    .into(),
                overflow,
            );
        }
        let lower = u64::try_from(lower).unwrap_or(u64::MAX);
        if let Some(p) = self.st.procedure.as_mut() {
            p.rpo = Some((lower, upper, losses));
        }
    }

    /// `Input::LostWrites`: this site's rebuild found what its old copy wrote that the new
    /// primary's history lacks. Reported here and told to the new primary, whose failover
    /// report could only bound the loss.
    pub(in crate::engine) fn lost_writes_found(&mut self, now: Millis, lost: LostWrites) {
        let me = self.me;
        if self.lost_writes(now, me, lost.clone()) {
            self.send_peer(Message::LostWrites(lost));
        }
    }

    /// Record a failover's exact loss found at `site` (this one or the peer). False when the
    /// description is not one (an unknown database, an end before the start).
    pub(in crate::engine) fn lost_writes(
        &mut self,
        now: Millis,
        site: SiteId,
        lost: LostWrites,
    ) -> bool {
        if !self.valid_db(lost.db) || lost.to < lost.from {
            let why = format!("not a loss of a configured database: {lost:?}");
            self.reject(now, "lost writes", why);
            return false;
        }
        let tx = lost
            .transactions
            .map_or_else(|| "uncounted".to_string(), |t| t.to_string());
        self.audit(
            now,
            "writes lost in a failover".into(),
            format!(
                "{}'s old copy of {} held {} positions the new primary's history lacks                  ({tx} transactions), kept in {} there",
                self.cfg.site_name(site),
                self.db_name(lost.db),
                lost.to.0 - lost.from.0,
                lost.kept
            ),
            vec![
                Self::kv("from", lost.from),
                Self::kv("to", lost.to),
                Self::kv("transactions", tx),
            ],
        );
        let epoch = self.st.epoch;
        self.report(Report::LostWrites { site, epoch, lost });
        true
    }

    pub(in crate::engine) fn acquire(&mut self, now: Millis) {
        let forced = matches!(
            self.st.procedure.as_ref().map(|p| &p.kind),
            Some(ProcKind::Failover { forced: true })
        );
        let arbiter_silent = self.st.peer.arbiter_view_at.is_none_or(|t| {
            now.saturating_sub(t)
                > self.cfg.lease.arbiter_timeout_ms + self.cfg.failover.probe_every_ms
        });
        if !self.cfg.arbiter || (forced && arbiter_silent) {
            // No witness to ask: the operator accepted the risk. Take the next epoch ourselves.
            let epoch = Epoch(self.st.epoch.0 + 1);
            self.audit(now, "self-assigned epoch".into(), "forced failover without a reachable arbiter: the old primary may still be serving (split-brain risk accepted by the operator)".into(), vec![
                Self::kv("epoch", epoch),
            ]);
            self.st.epoch = epoch;
            self.st.holder = self.me;
            self.st.lease.unmanaged = true;
            if let Some(p) = self.st.procedure.as_mut() {
                p.new_epoch = Some(epoch);
            }
            if self.cfg.arbiter {
                // Keep telling the arbiter: once it answers it adopts this epoch, and the old
                // primary, should it come back, is refused instead of re-granted.
                self.st
                    .timers
                    .set(Timer::LeaseRenew, now + self.cfg.lease.renew_every_ms);
            }
            self.quarantine_older(now);
            return self.after_epoch(now);
        }
        let req = self.new_req();
        self.st.lease.remember(req, now);
        self.set_step(Step::Acquire { req, sent_at: now });
        let seen = self.st.epoch;
        self.send(
            Peer::Arbiter,
            Message::Acquire {
                seen,
                req,
                force: forced,
            },
        );
        self.st
            .timers
            .set(Timer::RoleStep, now + self.cfg.lease.arbiter_timeout_ms);
    }

    pub(in crate::engine) fn procedure_granted(&mut self, now: Millis, epoch: Epoch, _req: u64) {
        let Some(p) = self.st.procedure.as_mut() else {
            return;
        };
        match (&p.kind, &p.step) {
            (ProcKind::Failover { .. }, Step::Acquire { .. }) => {
                p.new_epoch = Some(epoch);
                self.st.timers.cancel(Timer::RoleStep);
                self.audit(
                    now,
                    "new epoch".into(),
                    "the arbiter granted the next epoch".into(),
                    vec![
                        Self::kv("epoch", epoch),
                        Self::kv("lease_expires", format!("{:?}", self.st.lease.expires)),
                    ],
                );
                self.quarantine_older(now);
                self.after_epoch(now);
            }
            (ProcKind::Failover { .. }, _) if p.new_epoch.is_some() => {
                // Lease renewed after a restart or a lapse mid-promotion: resume where we were.
                self.resume_promotion(now);
            }
            (ProcKind::Switchover, Step::Renew { .. }) => {
                self.st.timers.cancel(Timer::RoleStep);
                self.quarantine_older(now);
                self.promote(now);
            }
            (ProcKind::Switchover, Step::Promote { .. }) => self.resume_promotion(now),
            _ => {}
        }
    }

    /// The lease is (again) valid: a promotion held back for it goes out, with its id.
    pub(in crate::engine) fn resume_promotion(&mut self, now: Millis) {
        let step = self.st.procedure.as_ref().map(|p| p.step.clone());
        match step {
            Some(Step::Acquire { .. }) => self.after_epoch(now),
            Some(Step::Promote { op }) if !self.st.ops.contains_key(&op) => {
                self.issue_promote(now, op)
            }
            _ => {}
        }
    }

    pub(in crate::engine) fn after_epoch(&mut self, now: Millis) {
        if self.restores_in_flight() {
            // Restores issued before the epoch was ours finish first: nothing is ever restored
            // into a database that accepts writes. role_progress comes back when one finishes;
            // the timer too, for a restore whose artifact was quarantined meanwhile.
            self.set_step(Step::Settle);
            self.st
                .timers
                .set(Timer::RoleStep, now + self.cfg.failover.probe_every_ms);
            return;
        }
        // The data-loss bounds as of the promotion: nothing is restored after this point.
        self.compute_rpo(now);
        let epoch = self.st.epoch;
        if self.cfg.failover.fence_hook {
            let target = self.peer;
            let op = self.issue(now, OpPurpose::Role, |op| Command::ExternalFence {
                op,
                target,
                epoch,
            });
            self.set_step(Step::ExternalFence { op });
        } else {
            self.promote(now);
        }
    }

    /// The external fence of a failover failed or did not finish in time: a critical alert
    /// about the fenced site, raised again at each attempt (the alert counts them) until the
    /// hook succeeds.
    /// Without it a failing hook held the failover silently (swarm seed 60335: 22 hours
    /// without a writable site and no alert saying why).
    pub(in crate::engine) fn fence_waits(
        &mut self,
        now: Millis,
        op: OpId,
        target: SiteId,
        error: Option<&str>,
    ) {
        let Some(p) = self.st.procedure.as_ref() else {
            return;
        };
        if !matches!(p.step, Step::ExternalFence { op: o } if o == op) {
            return;
        }
        let text = texts::fence_waits(
            self.cfg.site_name(self.me),
            self.cfg.site_name(target),
            now.saturating_sub(p.started_at) / 60_000,
            error,
        );
        let subject = crate::alert::Subject::Site(target);
        self.raise(
            now,
            AlertKind::Failover,
            None,
            subject,
            Severity::Critical,
            false,
            text,
        );
    }

    pub(in crate::engine) fn promote(&mut self, now: Millis) {
        let op = self.new_op_id();
        self.set_step(Step::Promote { op });
        self.issue_promote(now, op);
    }

    /// Issue (or re-issue, same id) the promotion, only under a valid lease.
    pub(in crate::engine) fn issue_promote(&mut self, now: Millis, op: OpId) {
        if !self.lease_ok(now) {
            return self.audit(
                now,
                "promotion waits".into(),
                "the lease must be renewed before the database may accept writes".into(),
                vec![
                    Self::kv("epoch", self.st.epoch),
                    Self::kv("lease_expires", format!("{:?}", self.st.lease.expires)),
                ],
            );
        }
        let epoch = self.st.epoch;
        let cmd = match self.st.procedure.as_ref().and_then(|p| p.until) {
            Some(until) => Command::PromoteUntil { op, epoch, until },
            None => Command::Promote { op, epoch },
        };
        self.st.ops.insert(
            op,
            crate::engine::OpEntry {
                cmd: cmd.clone(),
                issued_at: now,
                purpose: OpPurpose::Role,
            },
        );
        self.command(cmd);
    }

    pub(in crate::engine) fn role_op_done(
        &mut self,
        now: Millis,
        op: OpId,
        cmd: &Command,
        result: Result<(), Failure>,
    ) {
        if let Err(f) = &result {
            if let Command::ExternalFence { target, .. } = cmd {
                self.fence_waits(now, op, *target, Some(&f.message));
            }
            // Retry the same operation (same id) after the op timeout.
            self.audit(
                now,
                "operation failed".into(),
                format!("{} {}", f.code, f.message),
                vec![Self::kv("command", format!("{cmd:?}"))],
            );
            if matches!(cmd, Command::RestartService { .. }) {
                self.resign(
                    now,
                    "Auto Pilot: the local restart of the database service failed",
                );
            } else {
                self.st.ops.insert(
                    op,
                    crate::engine::OpEntry {
                        cmd: cmd.clone(),
                        issued_at: now,
                        purpose: OpPurpose::Role,
                    },
                );
            }
            if let (Command::Fence { .. }, Some(Step::StopWrites { .. })) =
                (cmd, self.st.procedure.as_ref().map(|p| &p.step))
            {
                // Writes could not be stopped: a switchover cannot go on safely.
                self.st.ops.remove(&op);
                self.abort_switchover(now, "writes could not be stopped");
            }
            return;
        }
        if matches!(cmd, Command::Fence { .. })
            && self.st.procedure.is_none()
            && self.st.role == Role::Fenced
            && self.st.holder == self.me
        {
            // Writes are stopped: cut a log of everything acknowledged before, so it can reach
            // the recovery site (and, if this site is lost now, the report's bounds hold it)
            // instead of waiting for writes to resume. A switchover's own fence has its final
            // log already.
            self.take_backup(now, None, ArtifactKind::Log);
        }
        if matches!(cmd, Command::RestartService { .. }) && self.st.lease.resigned {
            // The service is back: take the lease up again.
            self.st.lease.resigned = false;
            self.st.timers.set(Timer::LeaseRenew, now);
        }
        let Some(p) = self.st.procedure.clone() else {
            return;
        };
        match (&p.step, cmd) {
            (Step::ExternalFence { op: o }, Command::ExternalFence { target, .. }) if *o == op => {
                let subject = crate::alert::Subject::Site(*target);
                self.clear(now, AlertKind::Failover, None, subject);
                // A forced failover gave itself the epoch without the old primary's lease
                // running out: that primary may have written until this fence took hold
                // (a failing fence hook kept it writing for six minutes: swarm seed 7291).
                // The loss bounds count up to now.
                if matches!(p.kind, ProcKind::Failover { forced: true }) {
                    self.compute_rpo(now);
                }
                self.promote(now)
            }
            (Step::Promote { op: o }, c) if c.is_promote() && *o == op => self.promoted(now),
            (Step::SwitchIdentity { op: o }, Command::SwitchIdentity { .. }) if *o == op => {
                self.finish(now)
            }
            (Step::StopWrites { op: o }, Command::Fence { .. }) if *o == op => {
                let op = self.issue(now, OpPurpose::Role, |op| Command::TakeBackup {
                    op,
                    db: None,
                    kind: ArtifactKind::Log,
                });
                self.set_step(Step::FinalLog { op });
            }
            (Step::FinalLog { op: o }, Command::TakeBackup { .. }) if *o == op => {
                self.set_step(Step::Shipping);
                self.switchover_progress(now);
            }
            _ => {}
        }
    }

    /// The positions the promotion under way opened the databases at (`Input::Promoted`). A
    /// position only rises (a driver that replayed received changes beyond the last restored
    /// artifact); a report for another operation, or a position below the restored one, changes
    /// nothing. A failover's loss bounds, computed before the promotion, count from the new
    /// positions.
    pub(in crate::engine) fn promoted_at(
        &mut self,
        now: Millis,
        op: OpId,
        positions: &[(DbId, Lsn)],
    ) {
        let ours = self
            .st
            .procedure
            .as_ref()
            .is_some_and(|p| matches!(p.step, Step::Promote { op: o } if o == op));
        if !ours {
            return;
        }
        let mut raised = Vec::new();
        for &(db, lsn) in positions {
            let Some(d) = self.st.dbs.get_mut(db.0 as usize) else {
                continue;
            };
            let before = d.position.unwrap_or_default();
            if d.position.is_none_or(|p| p < lsn) {
                d.position = Some(lsn);
                let name = self
                    .cfg
                    .databases
                    .get(db.0 as usize)
                    .cloned()
                    .unwrap_or_default();
                raised.push((name, format!("{} -> {}", before.0, lsn.0)));
            }
        }
        if raised.is_empty() {
            return;
        }
        self.audit(
            now,
            "promoted beyond the last restore".into(),
            "the promotion replayed changes received beyond the last restored artifact; the \
             loss bounds count from the positions it reached"
                .into(),
            raised,
        );
        if self.st.procedure.as_ref().is_some_and(|p| p.rpo.is_some()) {
            self.compute_rpo(now);
        }
    }

    pub(in crate::engine) fn promoted(&mut self, now: Millis) {
        if matches!(
            self.st.procedure.as_ref().map(|p| &p.kind),
            Some(ProcKind::Failover { .. })
        ) {
            self.st.own.failover_at = Some(now);
        }
        self.st.role = Role::Primary;
        if let Some(db) = self.st.peer.full_wanted.take() {
            self.take_backup(now, db, ArtifactKind::Full);
        }
        if self.lease_ok(now) {
            self.arm_fence_deadline();
        } else {
            // The lease ran out while the promotion completed: fenced until renewed.
            self.become_fenced(now, "promoted, but the lease must be renewed first");
        }
        // Positions from an older history (this site's own writes as a primary before it was
        // rebuilt, or what an earlier primary reported) mean nothing now: the database is at its
        // restored position, and that is what its heartbeats start from (a stale higher one
        // overstated a later failover's loss: swarm seed 202662).
        for (d, w) in self.st.dbs.iter_mut().zip(&mut self.st.writes) {
            if let Some(p) = d.position {
                w.lsn = p;
                d.known_produced = p;
            }
        }
        if let Some(p) = self.st.procedure.as_mut() {
            p.writable_at = Some(now);
        }
        self.audit(
            now,
            "promoted".into(),
            "this site accepts writes".into(),
            vec![Self::kv("epoch", self.st.epoch)],
        );
        if self.cfg.failover.switch_identity {
            let epoch = self.st.epoch;
            let to = self.me;
            let op = self.issue(now, OpPurpose::Role, |op| Command::SwitchIdentity {
                op,
                to,
                epoch,
            });
            self.set_step(Step::SwitchIdentity { op });
        } else {
            self.finish(now);
        }
    }

    pub(in crate::engine) fn finish(&mut self, now: Millis) {
        let Some(p) = self.st.procedure.take() else {
            return;
        };
        self.st.timers.cancel(Timer::RoleStep);
        let epoch = self.st.epoch;
        let site = self.cfg.site_name(self.me).to_string();
        match p.kind {
            ProcKind::Failover { forced } => {
                let (lower, upper, losses) = p.rpo.unwrap_or((0, None, Vec::new()));
                let writable_at = p.writable_at.unwrap_or(now);
                let rto = writable_at.saturating_sub(p.detected_at);
                let text = texts::failover(&site, epoch, lower, upper, rto, forced);
                self.notice(now, AlertKind::Failover, Severity::Critical, text);
                let subject = Subject::Site(self.peer);
                self.clear(now, AlertKind::PrimaryDown, None, subject);
                self.clear(now, AlertKind::LinkDown, None, subject);
                self.st.peer.link_flapping = false;
                self.report(Report::Failover {
                    epoch,
                    new_primary: self.me,
                    forced,
                    rpo_lower: lower,
                    rpo_upper: upper,
                    losses,
                    write_rate: self.st.peer.peak_rate.max(self.st.own.peak_rate),
                    left_out: p.left_out.clone(),
                    rto_ms: rto,
                    detected_at: p.detected_at,
                    writable_at,
                });
            }
            ProcKind::Switchover => {
                let duration = now.saturating_sub(p.started_at);
                let text = texts::switchover(&site, epoch, duration);
                self.notice(now, AlertKind::Switchover, Severity::Warning, text);
                self.report(Report::Switchover {
                    epoch,
                    new_primary: self.me,
                    rpo: 0,
                    duration_ms: duration,
                });
            }
            ProcKind::Rebuild => {}
        }
        // Protection in reverse: the peer learns who holds the epoch now.
        let holder = self.me;
        self.send_peer(Message::EpochNotice { epoch, holder });
        self.st.peer.last_heard = None;
        self.st.peer.watch_since = now;
        self.st.peer.last_heartbeat_at = None;
        self.st.peer.failed_probes = 0;
        self.st.peer.first_failure = None;
    }

    /// Called when restores complete: procedures waiting on restores move on.
    pub(in crate::engine) fn role_progress(&mut self, now: Millis) {
        match self.st.procedure.as_ref().map(|p| (&p.kind, &p.step)) {
            Some((ProcKind::Failover { .. }, Step::Drain)) => self.drain_step(now),
            Some((ProcKind::Failover { .. }, Step::Settle)) => self.after_epoch(now),
            Some((ProcKind::Switchover, Step::ReachFinal)) => self.switchover_target_check(now),
            Some((ProcKind::Rebuild, _)) => self.rebuild_progress(now),
            _ => {}
        }
    }
}
