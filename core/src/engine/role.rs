//! Roles, leases and epochs: the primary renews its lease and fences itself in time; the
//! secondary tells a dead site from a dead link and fails over; planned switchover, rebuild of a
//! returning old primary, drills. Every decision emits an audit record.

use super::{texts, OpPurpose, SiteEngine, Timer};
use crate::alert::{AlertId, AlertKind, Severity, Subject};
use crate::artifact::ArtifactKind;
use crate::ids::{DbId, Epoch, Lsn, Millis, OpId, SiteId};
use crate::protocol::{
    ArbiterView, Command, Failure, Heartbeat, Message, OperatorRequest, Peer, ProbeTarget,
};
use crate::report::{DbLoss, Report};
use serde::{Deserialize, Serialize};

/// A site's role. The README documents the state machine.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Holds the epoch and a valid lease; accepts writes.
    Primary,
    /// Holds the epoch but not a valid lease (after a restart, or it could not renew in time):
    /// not writable; renewing.
    Fenced,
    /// Receives, verifies and restores; watches the primary.
    Secondary,
    /// Unplanned failover in progress (see [`Procedure`]).
    Promoting,
    /// Primary side of a planned switchover: writes stopped, final log shipping, hand-off.
    SwitchingOver,
    /// Secondary side of a planned switchover: restoring to the final positions, taking over.
    SwitchoverTarget,
    /// An old primary that learned of a newer epoch: fenced, never writable again as is.
    Demoted,
    /// Re-protection: every database recreated from the new primary's full backups.
    Rebuilding,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Fenced => "fenced",
            Role::Secondary => "secondary",
            Role::Promoting => "promoting",
            Role::SwitchingOver => "switching_over",
            Role::SwitchoverTarget => "switchover_target",
            Role::Demoted => "demoted",
            Role::Rebuilding => "rebuilding",
        }
    }
}

/// The lease as this site knows it, on its own clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    /// Valid until (own clock), measured from when the granted request was *sent*.
    pub expires: Option<Millis>,
    /// Requests in flight: (req, sent at).
    pub requests: Vec<(u64, Millis)>,
    /// No arbiter manages the lease (two-site setup, or a forced failover without the arbiter).
    pub unmanaged: bool,
    pub last_grant_at: Option<Millis>,
}

impl LeaseState {
    pub fn valid_at(&self, now: Millis) -> bool {
        self.unmanaged || self.expires.is_some_and(|e| now < e)
    }
    fn sent_at(&self, req: u64) -> Option<Millis> {
        self.requests
            .iter()
            .find(|(r, _)| *r == req)
            .map(|(_, t)| *t)
    }
    fn remember(&mut self, req: u64, now: Millis) {
        self.requests.push((req, now));
        if self.requests.len() > 16 {
            self.requests.remove(0);
        }
    }
}

/// What this site sees of its peer, the primary's health and the arbiter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub watch_since: Millis,
    pub last_heard: Option<Millis>,
    pub last_heartbeat_at: Option<Millis>,
    pub backups_paused: bool,
    pub paused_since: Option<Millis>,
    /// Highest write rate the primary reported (positions per second over all databases).
    pub peak_rate: u64,
    pub failed_probes: u32,
    pub first_failure: Option<Millis>,
    pub ok_streak: u32,
    pub site_reachable: bool,
    pub arbiter_view: Option<ArbiterView>,
    pub arbiter_view_at: Option<Millis>,
    pub arbiter_query: Option<(u64, Millis)>,
}

/// A step of a role procedure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    LocalRestart { until: Millis },
    Confirm { until: Millis },
    Drain,
    Acquire { req: u64, sent_at: Millis },
    ExternalFence { op: OpId },
    Promote { op: OpId },
    SwitchIdentity { op: OpId },
    // planned switchover, primary side
    StopWrites { op: OpId },
    FinalLog { op: OpId },
    Shipping,
    AwaitReady,
    Handoff { req: u64 },
    // planned switchover, target side
    ReachFinal,
    AwaitEpoch,
    Renew { req: u64 },
    // rebuild
    AwaitFulls { asked_at: Millis },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcKind {
    Failover { forced: bool },
    Switchover,
    Rebuild,
}

/// A role procedure in progress. Persisted with the state, so a crash in the middle resumes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Procedure {
    pub kind: ProcKind,
    pub step: Step,
    pub started_at: Millis,
    pub detected_at: Millis,
    pub final_positions: Vec<(DbId, Lsn)>,
    pub new_epoch: Option<Epoch>,
    pub writable_at: Option<Millis>,
    pub rpo: Option<(u64, Option<u64>, Vec<DbLoss>)>,
}

impl Procedure {
    fn new(kind: ProcKind, step: Step, now: Millis, detected_at: Millis) -> Self {
        Procedure {
            kind,
            step,
            started_at: now,
            detected_at,
            final_positions: Vec::new(),
            new_epoch: None,
            writable_at: None,
            rpo: None,
        }
    }
}

impl SiteEngine {
    fn kv(k: &str, v: impl ToString) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    fn holds_epoch(&self) -> bool {
        matches!(
            self.st.role,
            Role::Primary | Role::Fenced | Role::SwitchingOver
        )
    }

    pub(super) fn role_start(&mut self, now: Millis) {
        if self.st.role == Role::Fenced || self.st.role == Role::Primary {
            self.become_fenced(now, "starting: every engine comes back fenced");
            if !self.cfg.arbiter {
                // Two sites, no witness: the lease is not managed; writable on start.
                self.st.lease.unmanaged = true;
                self.allow_writes(
                    now,
                    "no arbiter configured: the primary holds the epoch alone",
                );
            } else {
                self.st.timers.set(Timer::LeaseRenew, now);
            }
        }
    }

    pub(super) fn role_restarted(&mut self, now: Millis) {
        let unmanaged = self.st.lease.unmanaged && !self.cfg.arbiter;
        self.st.lease = LeaseState {
            unmanaged,
            ..LeaseState::default()
        };
        self.st.peer.arbiter_query = None;
        self.st.peer.failed_probes = 0;
        self.st.peer.first_failure = None;
        self.st.peer.watch_since = now;
        for d in &mut self.st.dbs {
            d.last_log_at = d.last_log_at.max(now.saturating_sub(0));
        }
        match self.st.role {
            Role::Primary | Role::Fenced => {
                self.st.role = Role::Primary; // so become_fenced audits the change
                self.become_fenced(now, "restarted: every engine comes back fenced");
                if unmanaged {
                    self.allow_writes(now, "no arbiter configured");
                } else {
                    self.st.timers.set(Timer::LeaseRenew, now);
                }
            }
            Role::SwitchingOver | Role::Demoted => {
                let op = self.new_op_id();
                self.command(Command::Fence { op });
                self.st.timers.set(Timer::LeaseRenew, now);
            }
            Role::Promoting => {
                let op = self.new_op_id();
                self.command(Command::Fence { op });
                if self
                    .st
                    .procedure
                    .as_ref()
                    .is_some_and(|p| p.new_epoch.is_some())
                {
                    // The epoch is ours, but the lease timing died with the process: renew.
                    self.st.timers.set(Timer::LeaseRenew, now);
                }
                self.st.timers.set(Timer::RoleStep, now);
            }
            Role::Secondary | Role::SwitchoverTarget | Role::Rebuilding => {}
        }
    }

    fn new_op_id(&mut self) -> OpId {
        let op = OpId(self.st.next_op);
        self.st.next_op += 1;
        op
    }

    fn become_fenced(&mut self, now: Millis, why: &str) {
        let op = self.new_op_id();
        self.command(Command::Fence { op });
        if self.st.role == Role::Primary {
            self.st.role = Role::Fenced;
        }
        self.audit(
            now,
            "fence".into(),
            why.into(),
            vec![
                Self::kv("epoch", self.st.epoch),
                Self::kv("lease_expires", format!("{:?}", self.st.lease.expires)),
            ],
        );
    }

    fn allow_writes(&mut self, now: Millis, why: &str) {
        let op = self.new_op_id();
        let epoch = self.st.epoch;
        self.command(Command::AllowWrites { op, epoch });
        self.st.role = Role::Primary;
        for d in &mut self.st.dbs {
            if let Some(p) = d.position {
                d.write_position = d.write_position.max(p);
            }
        }
        self.audit(
            now,
            "allow writes".into(),
            why.into(),
            vec![Self::kv("epoch", epoch)],
        );
    }

    /// Timers of the role machine; returns whether one fired.
    pub(super) fn role_timers(&mut self, now: Millis) -> bool {
        let mut fired = false;
        if self.st.timers.due(Timer::Heartbeat, now) {
            fired = true;
            self.st
                .timers
                .set(Timer::Heartbeat, now + self.cfg.lease.heartbeat_every_ms);
            self.heartbeat(now);
        }
        if self.st.timers.due(Timer::LeaseRenew, now) {
            fired = true;
            self.renew(now);
        }
        if self.st.timers.due(Timer::FenceDeadline, now) {
            fired = true;
            self.fence_deadline(now);
        }
        if self.st.timers.due(Timer::Probe, now) {
            fired = true;
            self.st
                .timers
                .set(Timer::Probe, now + self.cfg.failover.probe_every_ms);
            self.probe_tick(now);
        }
        if self.st.timers.due(Timer::RoleStep, now) {
            fired = true;
            self.step_deadline(now);
        }
        fired
    }

    // ------------------------------------------------------------ lease

    fn renews(&self) -> bool {
        if !self.cfg.arbiter || self.st.lease.unmanaged && !self.cfg.arbiter {
            return false;
        }
        match self.st.role {
            Role::Primary | Role::Fenced | Role::SwitchingOver => true,
            Role::Promoting => self
                .st
                .procedure
                .as_ref()
                .is_some_and(|p| p.new_epoch.is_some()),
            Role::SwitchoverTarget => self
                .st
                .procedure
                .as_ref()
                .is_some_and(|p| matches!(p.step, Step::Renew { .. })),
            _ => false,
        }
    }

    fn renew(&mut self, now: Millis) {
        if !self.renews() {
            return;
        }
        self.st
            .timers
            .set(Timer::LeaseRenew, now + self.cfg.lease.renew_every_ms);
        let req = self.new_req();
        self.st.lease.remember(req, now);
        let epoch = self.st.epoch;
        self.send(Peer::Arbiter, Message::Renew { epoch, req });
        // The arbiter has not answered for too long: say so (the fence deadline acts alone).
        let last = self
            .st
            .lease
            .last_grant_at
            .unwrap_or(self.st.peer.watch_since);
        if now.saturating_sub(last)
            >= self.cfg.lease.arbiter_timeout_ms + self.cfg.lease.renew_every_ms
        {
            self.arbiter_unreachable(now);
        }
    }

    fn arbiter_unreachable(&mut self, now: Millis) {
        let subject = Subject::Site(self.me);
        let id = AlertId {
            kind: AlertKind::ArbiterUnreachable,
            db: None,
            subject,
        };
        if !self.st.alerts.is_active(&id) {
            let text = texts::arbiter_unreachable(self.cfg.site_name(self.me));
            self.raise(
                now,
                AlertKind::ArbiterUnreachable,
                None,
                subject,
                Severity::Failure,
                false,
                text,
            );
        }
    }

    fn granted(&mut self, now: Millis, epoch: Epoch, lease_ms: Millis, req: u64) {
        let Some(sent_at) = self.st.lease.sent_at(req) else {
            // An answer to a request this process never sent (or forgot): ignore.
            return;
        };
        self.st.lease.last_grant_at = Some(now);
        self.clear(
            now,
            AlertKind::ArbiterUnreachable,
            None,
            Subject::Site(self.me),
        );
        if epoch < self.st.epoch {
            return;
        }
        if epoch > self.st.epoch {
            // Only an Acquire (failover) or a hand-off gives us a newer epoch.
            let expecting = matches!(self.st.role, Role::Promoting | Role::SwitchoverTarget);
            if !expecting {
                return;
            }
            self.st.epoch = epoch;
            self.st.holder = self.me;
        }
        if self.st.holder != self.me {
            return;
        }
        let expires = sent_at + lease_ms;
        self.st.lease.expires = Some(self.st.lease.expires.map_or(expires, |e| e.max(expires)));
        let deadline = expires.saturating_sub(self.cfg.fence_margin());
        self.st.timers.set(Timer::FenceDeadline, deadline);
        if !self
            .st
            .timers
            .get(Timer::LeaseRenew)
            .is_some_and(|t| t > now)
        {
            self.st
                .timers
                .set(Timer::LeaseRenew, now + self.cfg.lease.renew_every_ms);
        }
        match self.st.role {
            Role::Fenced if self.st.lease.valid_at(now) && now < deadline => {
                self.allow_writes(now, "lease renewed");
            }
            Role::Promoting | Role::SwitchoverTarget => self.procedure_granted(now, epoch, req),
            _ => {}
        }
    }

    fn fence_deadline(&mut self, now: Millis) {
        let margin = self.cfg.fence_margin();
        let deadline = self
            .st
            .lease
            .expires
            .map_or(0, |e| e.saturating_sub(margin));
        if self.st.lease.unmanaged || now < deadline {
            self.st.timers.set(Timer::FenceDeadline, deadline);
            return;
        }
        if self.st.role == Role::Primary {
            self.become_fenced(
                now,
                "the lease could not be renewed before the fence deadline",
            );
        }
    }

    fn denied(&mut self, now: Millis, view: ArbiterView, reason: &str) {
        self.st.lease.last_grant_at = Some(now);
        self.clear(
            now,
            AlertKind::ArbiterUnreachable,
            None,
            Subject::Site(self.me),
        );
        if let Some(holder) = view.holder {
            if view.epoch > self.st.epoch {
                self.learn_epoch(now, view.epoch, holder);
                return;
            }
        }
        match self.st.role {
            Role::Promoting => {
                self.abort_procedure(now, &format!("the arbiter refused a new epoch: {reason}"))
            }
            Role::SwitchingOver => {
                if let Some(p) = self.st.procedure.as_mut() {
                    if matches!(p.step, Step::Handoff { .. }) {
                        p.step = Step::AwaitReady;
                    }
                }
            }
            _ => {}
        }
        self.st.peer.arbiter_view = Some(view);
        self.st.peer.arbiter_view_at = Some(now);
    }

    /// A newer epoch exists: whoever held an older one is stale.
    pub(super) fn learn_epoch(&mut self, now: Millis, epoch: Epoch, holder: SiteId) {
        if epoch <= self.st.epoch {
            return;
        }
        let old = self.st.epoch;
        self.st.epoch = epoch;
        self.st.holder = holder;
        self.audit(
            now,
            "learn epoch".into(),
            format!("epoch {epoch} is held by {}", self.cfg.site_name(holder)),
            vec![
                Self::kv("old_epoch", old),
                Self::kv("role", self.st.role.as_str()),
            ],
        );
        if holder == self.me {
            return;
        }
        match self.st.role {
            Role::Primary | Role::Fenced | Role::Demoted => self.demote(now),
            Role::SwitchingOver => self.switchover_handed_off(now),
            Role::Promoting => self.abort_procedure(now, "another site holds a newer epoch"),
            Role::Secondary | Role::SwitchoverTarget | Role::Rebuilding => {
                self.quarantine_older(now);
            }
        }
    }

    /// Pending artifacts of an older epoch are quarantined: kept, never restored.
    fn quarantine_older(&mut self, now: Millis) {
        if self.cfg.planted("accept_stale_epoch") {
            return;
        }
        let epoch = self.st.epoch;
        for i in 0..self.st.dbs.len() {
            let stale: Vec<_> = self.st.dbs[i]
                .pending
                .iter()
                .filter(|p| p.meta.key.epoch < epoch)
                .map(|p| p.meta)
                .collect();
            if stale.is_empty() {
                continue;
            }
            self.st.dbs[i].pending.retain(|p| p.meta.key.epoch >= epoch);
            for m in stale {
                self.stale_artifact(now, m);
            }
        }
    }

    /// The old primary learned it is stale: fence, keep its unshipped artifacts aside, rebuild.
    fn demote(&mut self, now: Millis) {
        self.become_fenced(now, "a newer epoch exists: this site is a stale primary");
        self.st.role = Role::Demoted;
        self.st.timers.cancel(Timer::FenceDeadline);
        self.st.lease = LeaseState::default();
        let stale: Vec<_> = self.st.outbox.values().map(|e| e.meta).collect();
        self.st.outbox.clear();
        self.st.ship_queue.clear();
        self.st.ship_in_flight = 0;
        self.st.timers.ship_backoff.clear();
        for m in stale {
            self.stale_artifact(now, m);
        }
        self.start_rebuild(now);
    }

    fn start_rebuild(&mut self, now: Millis) {
        self.st.role = Role::Rebuilding;
        for d in &mut self.st.dbs {
            // It may have diverged: forget its position, recreate from the new primary's fulls.
            d.position = None;
            d.current_full = None;
            d.reseed_since = Some(now);
            d.gap = None;
            d.pending.retain(|p| p.meta.key.kind == ArtifactKind::Full);
        }
        self.st.procedure = Some(Procedure::new(
            ProcKind::Rebuild,
            Step::AwaitFulls { asked_at: now },
            now,
            now,
        ));
        self.send_peer(Message::RequestFull { db: None });
        self.st
            .timers
            .set(Timer::RoleStep, now + self.cfg.restore.op_timeout_ms);
        let subject = Subject::Site(self.me);
        let text = texts::reseed("every database", "this site was the primary of an older epoch and may have diverged; rebuilding from the new primary");
        self.raise(
            now,
            AlertKind::Reseed,
            None,
            subject,
            Severity::Warning,
            false,
            text,
        );
        self.audit(
            now,
            "rebuild".into(),
            "re-protection: recreate every database from the new primary's full backups".into(),
            vec![
                Self::kv("epoch", self.st.epoch),
                Self::kv("holder", self.cfg.site_name(self.st.holder)),
            ],
        );
        self.pump_all(now);
    }

    fn rebuild_progress(&mut self, now: Millis) {
        if self.st.role != Role::Rebuilding {
            return;
        }
        if self
            .st
            .dbs
            .iter()
            .any(|d| d.reseed_since.is_some() || d.position.is_none())
        {
            return;
        }
        self.st.role = Role::Secondary;
        self.st.procedure = None;
        self.st.timers.cancel(Timer::RoleStep);
        self.clear(now, AlertKind::Reseed, None, Subject::Site(self.me));
        self.audit(
            now,
            "rebuilt".into(),
            "every database was recreated; this site is the secondary now".into(),
            vec![Self::kv("epoch", self.st.epoch)],
        );
    }

    // ------------------------------------------------------------ heartbeats and probes

    fn heartbeat(&mut self, _now: Millis) {
        self.st.heartbeat_seq += 1;
        let primary = self.holds_epoch();
        if primary {
            self.command(Command::SamplePositions);
        }
        let positions: Vec<(DbId, Lsn)> = if primary {
            let dirty = std::mem::take(&mut self.st.dirty);
            dirty
                .into_iter()
                .filter_map(|db| {
                    let d = self.st.dbs.get_mut(db.0 as usize)?;
                    d.position_dirty = false;
                    Some((db, d.write_position))
                })
                .collect()
        } else {
            Vec::new()
        };
        let every = self.cfg.lease.heartbeat_every_ms.max(1);
        let rate =
            std::mem::take(&mut self.st.advanced_since_heartbeat).saturating_mul(1000) / every;
        let hb = Heartbeat {
            epoch: self.st.epoch,
            seq: self.st.heartbeat_seq,
            backups_paused: self.st.backups_paused,
            writable: self.writable(),
            positions,
            write_rate_per_sec: if primary { rate } else { 0 },
        };
        self.send_peer(Message::Heartbeat(hb));
    }

    fn on_heartbeat(&mut self, now: Millis, from: SiteId, hb: Heartbeat) {
        self.st.peer.last_heard = Some(now);
        if hb.epoch > self.st.epoch {
            // The sender holds a newer epoch only if the arbiter gave it one.
            self.learn_epoch(now, hb.epoch, from);
        }
        if hb.epoch < self.st.epoch {
            if hb.writable || !hb.positions.is_empty() {
                let holder = self.st.holder;
                self.send_peer(Message::EpochNotice {
                    epoch: self.st.epoch,
                    holder,
                });
            }
            return;
        }
        if from != self.st.holder {
            return;
        }
        self.st.peer.last_heartbeat_at = Some(now);
        if hb.backups_paused != self.st.peer.backups_paused {
            self.st.peer.backups_paused = hb.backups_paused;
            self.st.peer.paused_since = hb.backups_paused.then_some(now);
            self.pause_check(now);
        }
        self.st.peer.peak_rate = self.st.peer.peak_rate.max(hb.write_rate_per_sec);
        for (db, lsn) in hb.positions {
            if let Some(d) = self.st.dbs.get_mut(db.0 as usize) {
                d.known_produced = d.known_produced.max(lsn);
            }
        }
    }

    fn watches_primary(&self) -> bool {
        matches!(
            self.st.role,
            Role::Secondary | Role::SwitchoverTarget | Role::Promoting
        )
    }

    fn probe_tick(&mut self, now: Millis) {
        if !self.watches_primary() {
            return;
        }
        self.command(Command::Probe);
        if !self.cfg.arbiter {
            return;
        }
        match self.st.peer.arbiter_query {
            Some((_, sent)) if now.saturating_sub(sent) < self.cfg.lease.arbiter_timeout_ms => {}
            Some(_) => {
                self.arbiter_unreachable(now);
                self.query_arbiter(now);
            }
            None => self.query_arbiter(now),
        }
        self.evaluate(now);
    }

    fn query_arbiter(&mut self, now: Millis) {
        let req = self.new_req();
        let first = self.st.peer.arbiter_query.map_or(now, |(_, t)| t);
        self.st.peer.arbiter_query = Some((req, first));
        self.send(Peer::Arbiter, Message::Query { req });
    }

    fn on_view(&mut self, now: Millis, view: ArbiterView) {
        self.st.peer.arbiter_query = None;
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
        if self.st.role == Role::SwitchingOver
            && view.epoch > Epoch(0)
            && view.holder != Some(self.me)
        {
            self.switchover_handed_off(now);
        }
        self.evaluate(now);
    }

    pub(super) fn probe_result(&mut self, now: Millis, target: ProbeTarget, ok: bool) {
        if !self.watches_primary() {
            return;
        }
        let p = &mut self.st.peer;
        match (target, ok) {
            (ProbeTarget::Site, ok) => p.site_reachable = ok,
            (ProbeTarget::Service, true) => {
                p.failed_probes = 0;
                p.first_failure = None;
                p.ok_streak = p.ok_streak.saturating_add(1);
                if p.ok_streak >= self.cfg.failover.unhealthy_count {
                    let subject = Subject::Site(self.st.holder);
                    self.clear(now, AlertKind::LinkDown, None, subject);
                    self.clear(now, AlertKind::PrimaryDown, None, subject);
                }
                // Auto Pilot succeeded: the primary came back by itself.
                if self.st.procedure.as_ref().is_some_and(|p| {
                    matches!(p.step, Step::LocalRestart { .. } | Step::Confirm { .. })
                }) {
                    self.abort_procedure(now, "the primary is healthy again");
                }
            }
            (ProbeTarget::Service, false) => {
                p.ok_streak = 0;
                p.failed_probes = p.failed_probes.saturating_add(1);
                p.first_failure.get_or_insert(now);
            }
        }
        self.evaluate(now);
    }

    fn unhealthy(&self, now: Millis) -> bool {
        let p = &self.st.peer;
        let f = &self.cfg.failover;
        p.failed_probes >= f.unhealthy_count
            && p.first_failure
                .is_some_and(|t| now.saturating_sub(t) >= f.unhealthy_for_ms)
    }

    /// Dead site or dead link? Decide from our probes and the arbiter's view.
    fn evaluate(&mut self, now: Millis) {
        if self.st.role != Role::Secondary || !self.unhealthy(now) {
            return;
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
        let down_id = AlertId {
            kind: AlertKind::PrimaryDown,
            db: None,
            subject,
        };
        match view {
            Some(v) if v.holder_renewing && v.holder == Some(primary) => {
                let id = AlertId {
                    kind: AlertKind::LinkDown,
                    db: None,
                    subject,
                };
                if !self.st.alerts.is_active(&id) {
                    let text =
                        texts::link_down(self.cfg.site_name(self.me), self.cfg.site_name(primary));
                    self.raise(
                        now,
                        AlertKind::LinkDown,
                        None,
                        subject,
                        Severity::Failure,
                        false,
                        text,
                    );
                    self.audit(
                        now,
                        "no failover".into(),
                        "the arbiter still sees the primary renewing: dead link, not dead site"
                            .into(),
                        vec![
                            Self::kv("failed_probes", failed),
                            Self::kv(
                                "arbiter_since_renewal_ms",
                                format!("{:?}", v.since_renewal_ms),
                            ),
                        ],
                    );
                }
            }
            Some(v) if v.lease_lapsed => {
                self.clear(now, AlertKind::LinkDown, None, subject);
                if !self.st.alerts.is_active(&down_id) {
                    let text = texts::primary_down(self.cfg.site_name(primary), failed, secs, true);
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
                if self.cfg.failover.automatic && self.st.procedure.is_none() {
                    let detected = p_first(&self.st.peer, now);
                    self.start_failover(now, false, detected, &v);
                }
            }
            Some(_) => {} // not renewing, not lapsed yet: wait for the lease to run out
            None => {
                if !self.st.alerts.is_active(&down_id) {
                    let text =
                        texts::primary_down(self.cfg.site_name(primary), failed, secs, false);
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
                if self.cfg.arbiter {
                    self.arbiter_unreachable(now);
                }
            }
        }
    }

    // ------------------------------------------------------------ unplanned failover

    fn start_failover(
        &mut self,
        now: Millis,
        forced: bool,
        detected_at: Millis,
        view: &ArbiterView,
    ) {
        self.st.role = Role::Promoting;
        let f = self.cfg.failover.clone();
        let step = if f.local_restart && self.st.peer.site_reachable && !forced {
            let op = self.new_op_id();
            self.send_peer(Message::RestartRequest { op });
            Step::LocalRestart {
                until: now + f.local_restart_wait_ms,
            }
        } else if f.confirm && !forced {
            Step::Confirm {
                until: now + f.confirm_timeout_ms,
            }
        } else {
            Step::Drain
        };
        self.st.procedure = Some(Procedure::new(
            ProcKind::Failover { forced },
            step.clone(),
            now,
            detected_at,
        ));
        self.audit(
            now,
            "failover".into(),
            if forced {
                "an operator forced a failover".into()
            } else {
                "the primary is unhealthy from here and the arbiter reports its lease lapsed".into()
            },
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
            ],
        );
        match step {
            Step::LocalRestart { until } | Step::Confirm { until } => {
                self.st.timers.set(Timer::RoleStep, until)
            }
            _ => self.drain_step(now),
        }
    }

    fn step_deadline(&mut self, now: Millis) {
        let Some(p) = self.st.procedure.clone() else {
            return;
        };
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
                            vec![],
                        );
                        self.set_step(Step::Drain);
                        self.drain_step(now);
                    }
                    crate::config::OnConfirmTimeout::Abort => self.abort_procedure(
                        now,
                        "no operator confirmation in time (configured to abort)",
                    ),
                }
            }
            (_, Step::Drain) => self.drain_step(now),
            (_, Step::Acquire { .. }) => self.acquire(now),
            (
                _,
                Step::AwaitReady | Step::Shipping | Step::StopWrites { .. } | Step::FinalLog { .. },
            ) if now.saturating_sub(p.started_at) >= self.cfg.failover.switchover_timeout_ms => {
                self.abort_switchover(now, "the switchover did not complete in time");
            }
            (_, Step::Handoff { .. }) => {
                // No answer from the arbiter: ask again (hand-off is idempotent there).
                let req = self.new_req();
                let epoch = self.st.epoch;
                let to = self.peer;
                self.set_step(Step::Handoff { req });
                self.send(Peer::Arbiter, Message::Handoff { epoch, to, req });
                self.st
                    .timers
                    .set(Timer::RoleStep, now + self.cfg.lease.arbiter_timeout_ms);
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
                if self.cfg.arbiter {
                    self.query_arbiter(now);
                }
                self.st
                    .timers
                    .set(Timer::RoleStep, now + self.cfg.lease.arbiter_timeout_ms);
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

    fn step_until(&self, s: &Step) -> Option<Millis> {
        match s {
            Step::LocalRestart { until } | Step::Confirm { until } => Some(*until),
            _ => None,
        }
    }

    fn set_step(&mut self, step: Step) {
        if let Some(p) = self.st.procedure.as_mut() {
            p.step = step;
        }
    }

    fn abort_procedure(&mut self, now: Millis, why: &str) {
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
    }

    /// Drain: restore everything received and verified before taking over.
    fn drain_step(&mut self, now: Millis) {
        if !self
            .st
            .procedure
            .as_ref()
            .is_some_and(|p| p.step == Step::Drain)
        {
            return;
        }
        self.pump_all(now);
        if self.st.restoring > 0
            || self
                .st
                .dbs
                .iter()
                .any(|d| d.in_flight.is_some() || d.queued)
        {
            return; // role_progress comes back when restores finish
        }
        let now_ = now;
        if self
            .st
            .dbs
            .iter()
            .any(|d| matches!(d.next(now_), super::Next::Restore(_)))
        {
            return;
        }
        self.compute_rpo(now);
        self.acquire(now);
    }

    fn compute_rpo(&mut self, now: Millis) {
        let mut lower = 0u64;
        let mut losses = Vec::new();
        for (i, d) in self.st.dbs.iter().enumerate() {
            let restored = d.position.unwrap_or_default();
            let known = d.known_produced.max(restored);
            let l = known.0 - restored.0;
            lower += l;
            if l > 0 {
                losses.push(DbLoss {
                    db: DbId(i as u32),
                    restored,
                    known_produced: known,
                    rpo_lower: l,
                    rpo_upper: None,
                });
            }
        }
        // Writes that could have happened since the last heartbeat: its age (plus one heartbeat
        // of sampling lag) at twice the peak observed rate. Unknown without any heartbeat.
        let extra = self.st.peer.last_heartbeat_at.map(|t| {
            let age = now.saturating_sub(t) + self.cfg.lease.heartbeat_every_ms;
            (self.st.peer.peak_rate.saturating_mul(2).saturating_mul(age)).div_ceil(1000)
        });
        let upper = extra.map(|x| lower + x);
        for l in &mut losses {
            l.rpo_upper = extra.map(|x| l.rpo_lower + x);
        }
        if let Some(p) = self.st.procedure.as_mut() {
            p.rpo = Some((lower, upper, losses));
        }
    }

    fn acquire(&mut self, now: Millis) {
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

    fn procedure_granted(&mut self, now: Millis, epoch: Epoch, _req: u64) {
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
                    vec![Self::kv("epoch", epoch)],
                );
                self.quarantine_older(now);
                self.after_epoch(now);
            }
            (ProcKind::Failover { .. }, _) if p.new_epoch.is_some() => {
                // Lease renewed after a restart mid-promotion: resume where we were.
                self.st.timers.set(Timer::RoleStep, now);
                self.resume_promotion(now);
            }
            (ProcKind::Switchover, Step::Renew { .. }) => {
                let op = self.new_op_id();
                self.st.ops.insert(
                    op,
                    super::OpEntry {
                        cmd: Command::Promote { op, epoch },
                        issued_at: now,
                        purpose: OpPurpose::Role,
                    },
                );
                self.set_step(Step::Promote { op });
                self.command(Command::Promote { op, epoch });
            }
            _ => {}
        }
    }

    fn resume_promotion(&mut self, now: Millis) {
        // Outstanding role operations were re-issued with their ids on restart; nothing to do
        // unless the procedure was between steps.
        let step = self.st.procedure.as_ref().map(|p| p.step.clone());
        if let Some(Step::Acquire { .. }) = step {
            self.after_epoch(now);
        }
    }

    fn after_epoch(&mut self, now: Millis) {
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

    fn promote(&mut self, now: Millis) {
        let epoch = self.st.epoch;
        let op = self.issue(now, OpPurpose::Role, |op| Command::Promote { op, epoch });
        self.set_step(Step::Promote { op });
    }

    pub(super) fn role_op_done(
        &mut self,
        now: Millis,
        op: OpId,
        cmd: &Command,
        result: Result<(), Failure>,
    ) {
        if let Err(f) = &result {
            // Retry the same operation (same id) after the op timeout.
            self.audit(
                now,
                "operation failed".into(),
                format!("{} {}", f.code, f.message),
                vec![Self::kv("command", format!("{cmd:?}"))],
            );
            if !matches!(cmd, Command::RestartService { .. }) {
                self.st.ops.insert(
                    op,
                    super::OpEntry {
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
        let Some(p) = self.st.procedure.clone() else {
            return;
        };
        match (&p.step, cmd) {
            (Step::ExternalFence { op: o }, Command::ExternalFence { .. }) if *o == op => {
                self.promote(now)
            }
            (Step::Promote { op: o }, Command::Promote { .. }) if *o == op => self.promoted(now),
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

    fn promoted(&mut self, now: Millis) {
        self.st.role = Role::Primary;
        for d in &mut self.st.dbs {
            if let Some(p) = d.position {
                d.write_position = d.write_position.max(p);
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

    fn finish(&mut self, now: Millis) {
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
                self.report(Report::Failover {
                    epoch,
                    new_primary: self.me,
                    forced,
                    rpo_lower: lower,
                    rpo_upper: upper,
                    losses,
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
    pub(super) fn role_progress(&mut self, now: Millis) {
        match self.st.procedure.as_ref().map(|p| (&p.kind, &p.step)) {
            Some((ProcKind::Failover { .. }, Step::Drain)) => self.drain_step(now),
            Some((ProcKind::Switchover, Step::ReachFinal)) => self.switchover_target_check(now),
            Some((ProcKind::Rebuild, _)) => self.rebuild_progress(now),
            _ => {}
        }
    }

    // ------------------------------------------------------------ planned switchover

    fn start_switchover(&mut self, now: Millis) {
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
    pub(super) fn switchover_progress(&mut self, _now: Millis) {
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
            .enumerate()
            .map(|(i, d)| {
                let last = d.last_backup.map_or(Lsn(0), |(m, _)| m.key.lsn_end);
                (DbId(i as u32), d.write_position.max(last))
            })
            .collect();
        if let Some(p) = self.st.procedure.as_mut() {
            p.final_positions = positions.clone();
            p.step = Step::AwaitReady;
        }
        let epoch = self.st.epoch;
        self.send_peer(Message::SwitchoverFinal { epoch, positions });
    }

    fn on_switchover_final(&mut self, now: Millis, epoch: Epoch, positions: Vec<(DbId, Lsn)>) {
        if epoch != self.st.epoch
            || !matches!(self.st.role, Role::Secondary | Role::SwitchoverTarget)
        {
            return;
        }
        self.st.role = Role::SwitchoverTarget;
        let mut p = Procedure::new(ProcKind::Switchover, Step::ReachFinal, now, now);
        for (db, lsn) in &positions {
            if let Some(d) = self.st.dbs.get_mut(db.0 as usize) {
                d.known_produced = d.known_produced.max(*lsn);
            }
        }
        p.final_positions = positions;
        self.st.procedure = Some(p);
        self.st.timers.set(
            Timer::RoleStep,
            now + self.cfg.failover.switchover_timeout_ms,
        );
        self.pump_all(now);
        self.switchover_target_check(now);
    }

    fn switchover_target_check(&mut self, now: Millis) {
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
        self.audit(
            now,
            "switchover ready".into(),
            "every final position is restored".into(),
            vec![],
        );
    }

    fn on_switchover_ready(&mut self, now: Millis, epoch: Epoch) {
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
    fn switchover_handed_off(&mut self, now: Millis) {
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

    fn switchover_renew(&mut self, now: Millis) {
        if self.st.role != Role::SwitchoverTarget {
            return;
        }
        if !self.cfg.arbiter {
            self.st.lease.unmanaged = true;
            let epoch = self.st.epoch;
            let op = self.issue(now, OpPurpose::Role, |op| Command::Promote { op, epoch });
            self.set_step(Step::Promote { op });
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

    fn abort_switchover(&mut self, now: Millis, why: &str) {
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

    // ------------------------------------------------------------ messages and operators

    pub(super) fn message(&mut self, now: Millis, from: Peer, msg: Message) {
        match (from, msg) {
            (Peer::Site(s), Message::Ack { key }) if s == self.peer => self.acked(now, key),
            (Peer::Site(s), Message::Resend { key }) if s == self.peer => self.resend(now, key),
            (Peer::Site(s), Message::Heartbeat(hb)) if s == self.peer => {
                self.on_heartbeat(now, s, hb)
            }
            (Peer::Site(s), Message::RequestFull { db }) if s == self.peer => {
                self.st.peer.last_heard = Some(now);
                if self.st.role == Role::Primary {
                    self.audit(
                        now,
                        "full backup".into(),
                        "the recovery site asked for one (reseed or rebuild)".into(),
                        vec![Self::kv("db", format!("{db:?}"))],
                    );
                    self.take_backup(now, db, ArtifactKind::Full);
                }
            }
            (Peer::Site(s), Message::RestartRequest { .. }) if s == self.peer => {
                if self.holds_epoch() {
                    self.issue(now, OpPurpose::Role, |op| Command::RestartService { op });
                    self.audit(now, "local restart".into(), "Auto Pilot: the recovery site sees the service down while this agent is reachable".into(), vec![]);
                }
            }
            (Peer::Site(s), Message::SwitchoverRequest) if s == self.peer => {
                self.start_switchover(now)
            }
            (Peer::Site(s), Message::SwitchoverFinal { epoch, positions }) if s == self.peer => {
                self.on_switchover_final(now, epoch, positions)
            }
            (Peer::Site(s), Message::SwitchoverReady { epoch }) if s == self.peer => {
                self.on_switchover_ready(now, epoch)
            }
            (Peer::Site(s), Message::SwitchoverAborted { epoch, reason }) if s == self.peer => {
                if self.st.role == Role::SwitchoverTarget && epoch == self.st.epoch {
                    self.st.procedure = None;
                    self.st.role = Role::Secondary;
                    self.audit(now, "switchover aborted".into(), reason, vec![]);
                }
            }
            (Peer::Site(s), Message::EpochNotice { epoch, holder }) if s == self.peer => {
                self.learn_epoch(now, epoch, holder);
                if self.st.role == Role::SwitchoverTarget
                    && holder == self.me
                    && epoch == self.st.epoch
                {
                    self.switchover_renew(now);
                }
            }
            (
                Peer::Arbiter,
                Message::Granted {
                    epoch,
                    lease_ms,
                    req,
                },
            ) => self.granted(now, epoch, lease_ms, req),
            (Peer::Arbiter, Message::Denied { view, reason, .. }) => {
                self.denied(now, view, &reason)
            }
            (Peer::Arbiter, Message::View { view, .. }) => self.on_view(now, view),
            (from, msg) => self.reject(now, "message", format!("unexpected {msg:?} from {from:?}")),
        }
    }

    pub(super) fn operator(&mut self, now: Millis, req: OperatorRequest) {
        self.audit(
            now,
            "operator request".into(),
            format!("{req:?}"),
            vec![Self::kv("role", self.st.role.as_str())],
        );
        match req {
            OperatorRequest::Switchover => {
                if self.st.role == Role::Primary {
                    self.start_switchover(now);
                } else if self.st.role == Role::Secondary {
                    self.send_peer(Message::SwitchoverRequest);
                }
            }
            OperatorRequest::Failback => {
                let original = self.cfg.initial_primary_id();
                if self.st.holder == original {
                    self.reject(
                        now,
                        "failback",
                        "the original primary already holds the epoch".into(),
                    );
                } else if self.st.role == Role::Primary {
                    self.start_switchover(now);
                } else if self.st.role == Role::Secondary {
                    self.send_peer(Message::SwitchoverRequest);
                }
            }
            OperatorRequest::Failover { force } => {
                if self.st.role != Role::Secondary || self.st.procedure.is_some() {
                    return self.reject(
                        now,
                        "failover",
                        format!("this site is {}", self.st.role.as_str()),
                    );
                }
                let view = self.st.peer.arbiter_view.clone().unwrap_or(ArbiterView {
                    epoch: self.st.epoch,
                    holder: None,
                    holder_renewing: false,
                    lease_lapsed: false,
                    since_renewal_ms: None,
                });
                if !force && self.cfg.arbiter && !view.lease_lapsed {
                    return self.reject(now, "failover", "the arbiter does not report the primary's lease lapsed; use --force to accept the risk".into());
                }
                let detected = p_first(&self.st.peer, now);
                self.start_failover(now, force, detected, &view);
            }
            OperatorRequest::ConfirmFailover => {
                if self
                    .st
                    .procedure
                    .as_ref()
                    .is_some_and(|p| matches!(p.step, Step::Confirm { .. }))
                {
                    self.set_step(Step::Drain);
                    self.drain_step(now);
                }
            }
            OperatorRequest::AbortFailover => {
                if self.st.procedure.as_ref().is_some_and(|p| {
                    matches!(
                        p.step,
                        Step::Confirm { .. } | Step::LocalRestart { .. } | Step::Drain
                    )
                }) {
                    self.abort_procedure(now, "aborted by an operator");
                }
            }
            OperatorRequest::Drill { db } => self.drill(now, db),
            OperatorRequest::PauseBackups => {
                self.st.backups_paused = true;
                self.pause_check(now);
            }
            OperatorRequest::ResumeBackups => {
                self.st.backups_paused = false;
                self.pause_check(now);
            }
            OperatorRequest::Reseed { db } => {
                if self.valid_db(db) && self.restores() {
                    self.start_reseed(now, db, "an operator asked for it");
                } else {
                    self.reject(
                        now,
                        "reseed",
                        format!(
                            "database {db} cannot be reseeded at a {} site",
                            self.st.role.as_str()
                        ),
                    );
                }
            }
        }
    }

    fn drill(&mut self, now: Millis, db: Option<DbId>) {
        if !self.restores() {
            return self.reject(now, "drill", "drills run at the recovery site".into());
        }
        let dbs: Vec<DbId> = match db {
            Some(d) if self.valid_db(d) => vec![d],
            Some(d) => return self.reject(now, "drill", format!("unknown database {d}")),
            None => (0..self.st.dbs.len() as u32).map(DbId).collect(),
        };
        for db in dbs {
            let Some(upto) = self.st.dbs[db.0 as usize].position else {
                let text = texts::drill_failed(self.db_name(db), 0, "nothing restored yet");
                self.raise(
                    now,
                    AlertKind::DrillFailed,
                    Some(db),
                    Subject::None,
                    Severity::Failure,
                    false,
                    text,
                );
                continue;
            };
            self.issue(now, OpPurpose::Drill { db }, |op| Command::Drill {
                op,
                db,
                upto,
            });
        }
    }
}

fn p_first(p: &PeerView, now: Millis) -> Millis {
    p.first_failure.unwrap_or(now)
}
