//! Roles, leases and epochs: the primary renews its lease and fences itself in time; the
//! secondary tells a dead site from a dead link and fails over; planned switchover, rebuild of a
//! returning old primary, drills. Every decision emits an audit record.
//!
//! One rule holds every path together: a database is made writable (`AllowWrites`, `Promote`)
//! only under a lease that outlives the fence deadline (`lease_ok`), and the fence deadline
//! timer is armed whenever it is. A restart, a lapse or a lost grant therefore never leaves a
//! writable database behind; the procedure waits for the renewal and re-issues the same
//! operation. The proof is `tests/failover.rs` and `tests/failover_props.rs`.

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
    /// The primary gave its lease up (its database service could not be restarted): it does
    /// not renew, so the lease lapses and the recovery site can take over.
    #[serde(default)]
    pub resigned: bool,
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
    /// The first good service probe of the current good streak (alert hysteresis).
    #[serde(default)]
    pub healthy_since: Option<Millis>,
    /// When Auto Pilot last asked the primary's agent for a local restart.
    #[serde(default)]
    pub local_restart_at: Option<Millis>,
    /// When an operator (or an unanswered confirmation) declined a failover: not asked again
    /// until the primary has been seen healthy.
    #[serde(default)]
    pub declined_at: Option<Millis>,
    /// The recovery site asked for a full backup while this site could not take one (in the
    /// middle of a switchover or a takeover): `Some(None)` = every database. Taken once this
    /// site accepts writes.
    #[serde(default)]
    pub full_wanted: Option<Option<DbId>>,
}

/// A step of a role procedure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    LocalRestart {
        until: Millis,
    },
    Confirm {
        until: Millis,
    },
    Drain,
    Acquire {
        req: u64,
        sent_at: Millis,
    },
    ExternalFence {
        op: OpId,
    },
    /// The new epoch is ours; restores issued before it are still running.
    Settle,
    /// The promotion's operation; issued only while the lease is valid (after a restart or a
    /// lapse it waits for the renewal and goes out again with the same id).
    Promote {
        op: OpId,
    },
    SwitchIdentity {
        op: OpId,
    },
    // planned switchover, primary side
    StopWrites {
        op: OpId,
    },
    FinalLog {
        op: OpId,
    },
    Shipping,
    AwaitReady,
    Handoff {
        req: u64,
    },
    // planned switchover, target side
    ReachFinal,
    AwaitEpoch,
    Renew {
        req: u64,
    },
    // rebuild
    AwaitFulls {
        asked_at: Millis,
    },
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
        // A promotion never goes out again before the lease is renewed (Contracts: Restart:
        // writable only after renewing). `restarted` held it back; the renewal re-issues it
        // with the same id (see `resume_promotion`).
        self.st
            .ops
            .retain(|_, e| !matches!(e.cmd, Command::Promote { .. }));
        let promoting = self
            .st
            .procedure
            .as_ref()
            .is_some_and(|p| p.new_epoch.is_some() || matches!(p.step, Step::Promote { .. }));
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
                self.become_fenced(now, "restarted: every engine comes back fenced");
                self.st.timers.set(Timer::LeaseRenew, now);
            }
            Role::Promoting | Role::SwitchoverTarget => {
                // Its database may have been promoted before the crash: fenced until renewed.
                self.become_fenced(
                    now,
                    "restarted in the middle of a takeover: fenced until renewed",
                );
                if promoting {
                    // The epoch is ours, but the lease timing died with the process: renew.
                    self.st.timers.set(Timer::LeaseRenew, now);
                }
            }
            Role::Secondary | Role::Rebuilding => {}
        }
        if self.st.procedure.is_some() {
            // The procedure's deadline died with the old process: look at it again now.
            self.st.timers.set(Timer::RoleStep, now);
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

    /// Whether this site may let its database accept writes now: it holds a lease that is
    /// valid until past the fence deadline (Contracts: Safety model), or no arbiter manages it.
    fn lease_ok(&self, now: Millis) -> bool {
        if self.st.lease.resigned {
            return false;
        }
        self.st.lease.unmanaged
            || self
                .st
                .lease
                .expires
                .is_some_and(|e| now < e.saturating_sub(self.cfg.fence_margin()))
    }

    fn arm_fence_deadline(&mut self) {
        if let Some(e) = self.st.lease.expires {
            let deadline = e.saturating_sub(self.cfg.fence_margin());
            self.st.timers.set(Timer::FenceDeadline, deadline);
        }
    }

    fn allow_writes(&mut self, now: Millis, why: &str) {
        if !self.lease_ok(now) {
            // Every path to writable goes through here: never without a lease that outlives
            // the fence deadline, or a primary could write after the arbiter moved on.
            return;
        }
        let op = self.new_op_id();
        let epoch = self.st.epoch;
        self.command(Command::AllowWrites { op, epoch });
        self.st.role = Role::Primary;
        self.arm_fence_deadline();
        if let Some(db) = self.st.peer.full_wanted.take() {
            self.take_backup(now, db, ArtifactKind::Full);
        }
        for d in &mut self.st.dbs {
            if let Some(p) = d.position {
                d.write_position = d.write_position.max(p);
            }
        }
        self.audit(
            now,
            "allow writes".into(),
            why.into(),
            vec![
                Self::kv("epoch", epoch),
                Self::kv("lease_expires", format!("{:?}", self.st.lease.expires)),
            ],
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
        if !self.cfg.arbiter || self.st.lease.resigned {
            return false;
        }
        let step = self.st.procedure.as_ref().map(|p| &p.step);
        match self.st.role {
            Role::Primary | Role::Fenced | Role::SwitchingOver => true,
            Role::Promoting => self
                .st
                .procedure
                .as_ref()
                .is_some_and(|p| p.new_epoch.is_some()),
            Role::SwitchoverTarget => matches!(
                step,
                Some(Step::Renew { .. } | Step::Promote { .. } | Step::SwitchIdentity { .. })
            ),
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
        if epoch > self.st.epoch || self.st.holder != self.me {
            // Only an Acquire (failover) or a hand-off gives us an epoch: the grant itself is
            // the arbiter's word that we hold it, whatever we heard before.
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
        if self.cfg.arbiter {
            // The arbiter manages this lease (again, after a forced failover it adopted).
            self.st.lease.unmanaged = false;
        }
        let expires = sent_at + lease_ms;
        self.st.lease.expires = Some(self.st.lease.expires.map_or(expires, |e| e.max(expires)));
        let deadline = expires.saturating_sub(self.cfg.fence_margin());
        self.st.timers.set(Timer::FenceDeadline, deadline);
        if self
            .st
            .timers
            .get(Timer::LeaseRenew)
            .is_none_or(|t| t <= now)
        {
            self.st
                .timers
                .set(Timer::LeaseRenew, now + self.cfg.lease.renew_every_ms);
        }
        match self.st.role {
            Role::Fenced if self.lease_ok(now) => {
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
        if self.cfg.planted("skip_self_fence") {
            return;
        }
        match self.st.role {
            Role::Primary => self.become_fenced(
                now,
                "the lease could not be renewed before the fence deadline",
            ),
            Role::Promoting | Role::SwitchoverTarget => {
                // A promotion in flight may already have made the database writable: fence it
                // and hold the promotion until the lease is renewed (`resume_promotion`).
                if let Some(Step::Promote { op }) = self.st.procedure.as_ref().map(|p| &p.step) {
                    let op = *op;
                    if self.st.ops.remove(&op).is_some() {
                        self.become_fenced(
                            now,
                            "the lease ran out while the promotion was in flight",
                        );
                    }
                }
            }
            _ => {}
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
                let at_acquire = self
                    .st
                    .procedure
                    .as_ref()
                    .filter(|p| matches!(p.step, Step::Acquire { .. }))
                    .map(|p| p.started_at);
                // A lease that is about to lapse (a race with our view, or an operator who
                // knows the site is gone) is worth waiting for, for at most one lease period;
                // a primary still renewing after that is alive.
                let patience = self.cfg.lease.lease_ms
                    + self.cfg.drift_margin()
                    + self.cfg.lease.arbiter_timeout_ms;
                match at_acquire {
                    Some(started) if now.saturating_sub(started) < patience => {
                        let retry = now + self.cfg.failover.probe_every_ms;
                        self.st.timers.set(Timer::RoleStep, retry);
                    }
                    _ => self.abort_procedure(
                        now,
                        &format!("the arbiter refused a new epoch: {reason}"),
                    ),
                }
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
        let was_holder = self.st.holder == self.me;
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
            // Ours (the grant itself was lost, a notice told us): what is older is stale now.
            self.quarantine_older(now);
            if self.st.role == Role::Secondary {
                self.claim_handoff(now);
            }
            return;
        }
        match self.st.role {
            Role::Primary | Role::Fenced | Role::Demoted => self.demote(now),
            Role::SwitchingOver
                if epoch.0 == old.0 + 1
                    && self
                        .st
                        .procedure
                        .as_ref()
                        .is_some_and(|p| matches!(p.step, Step::Handoff { .. })) =>
            {
                // We asked for the hand-off only after the target restored every final
                // position, and wrote nothing since: its history contains ours, no rebuild.
                self.switchover_handed_off(now)
            }
            Role::SwitchingOver => {
                // The epoch moved on before our hand-off (a failover while the switchover was
                // stuck): the new primary may lack our last writes and we may have diverged.
                self.st.procedure = None;
                self.demote(now);
            }
            Role::Promoting | Role::SwitchoverTarget if was_holder => {
                // It held the older epoch and may have promoted already: a stale primary.
                self.st.procedure = None;
                self.demote(now);
            }
            Role::Promoting => {
                // Nothing of ours was promoted: stand down, whatever step it was at.
                if let Some(p) = self.st.procedure.as_mut() {
                    p.new_epoch = None;
                }
                self.abort_procedure(now, "another site holds a newer epoch");
                self.quarantine_older(now);
            }
            Role::SwitchoverTarget => {
                self.abandon_target(now, "another site holds a newer epoch");
                self.quarantine_older(now);
            }
            Role::Secondary | Role::Rebuilding => {
                self.quarantine_older(now);
            }
        }
    }

    /// The arbiter handed this secondary the epoch (a hand-off it stopped waiting for): take
    /// it the way a switchover target does, renewing before it promotes.
    fn claim_handoff(&mut self, now: Millis) {
        self.st.role = Role::SwitchoverTarget;
        self.st.procedure = Some(Procedure::new(
            ProcKind::Switchover,
            Step::AwaitEpoch,
            now,
            now,
        ));
        self.audit(
            now,
            "take over".into(),
            "the arbiter handed this site the epoch".into(),
            vec![Self::kv("epoch", self.st.epoch)],
        );
        self.switchover_renew(now);
    }

    /// Secondary side of a switchover that will not complete: back to watching the primary.
    fn abandon_target(&mut self, now: Millis, why: &str) {
        if self.st.role != Role::SwitchoverTarget {
            return;
        }
        self.st.procedure = None;
        self.st.timers.cancel(Timer::RoleStep);
        self.st.role = Role::Secondary;
        self.audit(now, "switchover aborted".into(), why.into(), vec![]);
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
        // Its maintenance pause was about its own backups; as a secondary it must hear the new
        // primary's, or a stale pause would silence `no_new_logs`.
        self.st.backups_paused = false;
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
            return;
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
        self.evaluate(now);
    }

    pub(super) fn probe_result(&mut self, now: Millis, target: ProbeTarget, ok: bool) {
        if !self.watches_primary() {
            return;
        }
        let p = &mut self.st.peer;
        match (target, ok) {
            (ProbeTarget::Site, ok) => {
                // Reachability only qualifies the service probes; deciding on it alone would
                // see a healed link with a stale failure count as a dead service.
                p.site_reachable = ok;
                return;
            }
            (ProbeTarget::Service, true) => {
                p.failed_probes = 0;
                p.first_failure = None;
                p.declined_at = None;
                p.ok_streak = p.ok_streak.saturating_add(1);
                let healthy_since = *p.healthy_since.get_or_insert(now);
                if p.ok_streak >= self.cfg.failover.unhealthy_count {
                    let subject = Subject::Site(self.st.holder);
                    self.clear(now, AlertKind::PrimaryDown, None, subject);
                    // Hysteresis: a link that flaps keeps its one alert instead of raising and
                    // clearing it with every flap; it clears once the link stayed up a while.
                    if now.saturating_sub(healthy_since) >= crate::defaults::LINK_DOWN_CLEAR_AFTER {
                        self.clear(now, AlertKind::LinkDown, None, subject);
                    }
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
                p.healthy_since = None;
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
                if self.cfg.failover.automatic
                    && self.st.procedure.is_none()
                    && !self.declined_this_episode()
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

    /// An operator (or an unanswered confirmation) declined a failover during this outage.
    fn declined_this_episode(&self) -> bool {
        let p = &self.st.peer;
        p.declined_at
            .is_some_and(|d| p.first_failure.is_some_and(|f| f <= d))
    }

    /// Auto Pilot already asked for a local restart during this outage.
    fn restart_tried_this_episode(&self) -> bool {
        let p = &self.st.peer;
        p.local_restart_at
            .is_some_and(|t| p.first_failure.is_some_and(|f| f <= t))
    }

    /// The primary's agent answers and still renews, but its database service does not: not a
    /// dead link and not a dead site. Auto Pilot (when configured) asks the agent to restart
    /// the service; if that fails the agent gives up its lease and the failover follows.
    fn service_down(&mut self, now: Millis, v: &ArbiterView) {
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
    fn resign(&mut self, now: Millis, why: &str) {
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

    // ------------------------------------------------------------ unplanned failover

    /// `by_operator`: an operator asked for it, which is the confirmation (and skips Auto Pilot).
    fn start_failover(
        &mut self,
        now: Millis,
        forced: bool,
        by_operator: bool,
        detected_at: Millis,
        view: &ArbiterView,
        why: &str,
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
        self.st.procedure = Some(Procedure::new(
            ProcKind::Failover { forced },
            step.clone(),
            now,
            detected_at,
        ));
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
                if overdue && fresh && peer_holds {
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
        if self.restores_in_flight() {
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
        self.acquire(now);
    }

    fn restores_in_flight(&self) -> bool {
        self.st.restoring > 0
            || self
                .st
                .dbs
                .iter()
                .any(|d| d.in_flight.is_some() || d.queued)
    }

    fn compute_rpo(&mut self, now: Millis) {
        let mut lower = 0u64;
        let mut losses = Vec::new();
        // Writes that could have happened since the last heartbeat: its age (plus one heartbeat
        // of sampling lag) at twice the peak observed rate. Unknown without any heartbeat.
        let extra = self.st.peer.last_heartbeat_at.map(|t| {
            let age = now.saturating_sub(t) + self.cfg.lease.heartbeat_every_ms;
            (self.st.peer.peak_rate.saturating_mul(2).saturating_mul(age)).div_ceil(1000)
        });
        for (i, d) in self.st.dbs.iter().enumerate() {
            let restored = d.position.unwrap_or_default();
            let known = d.known_produced.max(restored);
            let l = known.0 - restored.0;
            lower += l;
            // Every database that may have lost something is listed: a known loss, or an upper
            // bound above zero (or unknown).
            if l > 0 || extra.is_none_or(|x| x > 0) {
                losses.push(DbLoss {
                    db: DbId(i as u32),
                    restored,
                    known_produced: known,
                    rpo_lower: l,
                    rpo_upper: None,
                });
            }
        }
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
    fn resume_promotion(&mut self, now: Millis) {
        let step = self.st.procedure.as_ref().map(|p| p.step.clone());
        match step {
            Some(Step::Acquire { .. }) => self.after_epoch(now),
            Some(Step::Promote { op }) if !self.st.ops.contains_key(&op) => {
                self.issue_promote(now, op)
            }
            _ => {}
        }
    }

    fn after_epoch(&mut self, now: Millis) {
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

    fn promote(&mut self, now: Millis) {
        let op = self.new_op_id();
        self.set_step(Step::Promote { op });
        self.issue_promote(now, op);
    }

    /// Issue (or re-issue, same id) the promotion, only under a valid lease.
    fn issue_promote(&mut self, now: Millis, op: OpId) {
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
        let cmd = Command::Promote { op, epoch };
        self.st.ops.insert(
            op,
            super::OpEntry {
                cmd: cmd.clone(),
                issued_at: now,
                purpose: OpPurpose::Role,
            },
        );
        self.command(cmd);
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
            if matches!(cmd, Command::RestartService { .. }) {
                self.resign(
                    now,
                    "Auto Pilot: the local restart of the database service failed",
                );
            } else {
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
        if matches!(cmd, Command::RestartService { .. }) && self.st.lease.resigned {
            // The service is back: take the lease up again.
            self.st.lease.resigned = false;
            self.st.timers.set(Timer::LeaseRenew, now);
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
        if let Some(db) = self.st.peer.full_wanted.take() {
            self.take_backup(now, db, ArtifactKind::Full);
        }
        if self.lease_ok(now) {
            self.arm_fence_deadline();
        } else {
            // The lease ran out while the promotion completed: fenced until renewed.
            self.become_fenced(now, "promoted, but the lease must be renewed first");
        }
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
            Some((ProcKind::Failover { .. }, Step::Settle)) => self.after_epoch(now),
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
    pub(super) fn switchover_progress(&mut self, now: Millis) {
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
        // Said again until the target answers (step_deadline), within the switchover timeout.
        let until = self.st.procedure.as_ref().map_or(now, |p| {
            p.started_at + self.cfg.failover.switchover_timeout_ms
        });
        self.st.timers.set(
            Timer::RoleStep,
            (now + self.cfg.lease.arbiter_timeout_ms).min(until),
        );
    }

    fn on_switchover_final(&mut self, now: Millis, epoch: Epoch, positions: Vec<(DbId, Lsn)>) {
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

    fn switchover_renew(&mut self, now: Millis) {
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
            self.st.lease.unmanaged = true;
            return self.promote(now);
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
                // A fenced holder answers too (a backup needs no writes): the rebuild of the
                // peer must not wait for the next request because our lease was being renewed.
                if matches!(self.st.role, Role::Primary | Role::Fenced) {
                    self.audit(
                        now,
                        "full backup".into(),
                        "the recovery site asked for one (reseed or rebuild)".into(),
                        vec![Self::kv("db", format!("{db:?}"))],
                    );
                    self.take_backup(now, db, ArtifactKind::Full);
                } else if matches!(
                    self.st.role,
                    Role::SwitchingOver | Role::Promoting | Role::SwitchoverTarget
                ) {
                    // Remembered until writes resume here: asking again would wait for the
                    // rebuild's long retry.
                    let merged = match self.st.peer.full_wanted {
                        Some(Some(d)) if Some(d) == db => db,
                        Some(_) => None,
                        None => db,
                    };
                    self.st.peer.full_wanted = Some(merged);
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
                } else if self.st.role == Role::SwitchingOver
                    && epoch == self.st.epoch
                    && !self
                        .st
                        .procedure
                        .as_ref()
                        .is_some_and(|p| matches!(p.step, Step::Handoff { .. }))
                {
                    // The target refused (it is rebuilding, or promoting itself).
                    self.abort_switchover(now, &reason);
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
                let why = if force {
                    "an operator forced a failover"
                } else {
                    "an operator asked for a failover and the arbiter reports the lease lapsed"
                };
                self.start_failover(now, force, true, detected, &view, why);
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
                    self.st.peer.declined_at = Some(now);
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
