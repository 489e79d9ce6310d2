//! Roles, leases and epochs: the primary renews its lease and fences itself in time; the
//! secondary tells a dead site from a dead link and fails over; planned switchover, rebuild of a
//! returning old primary, drills. Every decision emits an audit record.
//!
//! One rule holds every path together: a database is made writable (`AllowWrites`, `Promote`)
//! only under a lease that outlives the fence deadline (`lease_ok`), and the fence deadline
//! timer is armed whenever it is. A restart, a lapse or a lost grant therefore never leaves a
//! writable database behind; the procedure waits for the renewal and re-issues the same
//! operation. The proof is `tests/failover.rs` and `tests/failover_props.rs`.

use super::{texts, SiteEngine, Timer};
use crate::alert::{AlertId, AlertKind, Severity, Subject};
use crate::artifact::{ArtifactKey, ArtifactKind};
use crate::ids::{DbId, Epoch, Lsn, Millis, OpId, SiteId};
use crate::protocol::{ArbiterView, Command, Message, Peer};
use crate::report::DbLoss;
use serde::{Deserialize, Serialize};

/// How soon a fenced site that a new arbiter presumes to hold the epoch asks again after being
/// told to wait (see `Role::Fenced` in `denied`).
const PRESUMED_RETRY: Millis = 100;

mod autopilot;
mod failover;
mod messages;
mod probes;
mod switchover;

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
    /// The first renewal still unanswered by a grant, and (while renewals pause) when they
    /// resume: see `renewals_paused`.
    #[serde(default)]
    pub asking_since: Option<Millis>,
    #[serde(default)]
    pub quiet_until: Option<Millis>,
    /// When an unanswered renewal was asked again at once (see `arbiter_silence`).
    #[serde(default)]
    pub retried_at: Option<Millis>,
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

/// Auto Pilot's view of this site's own database service (checked on every probe tick), and
/// when this site last took part in a failover (the hold-down).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnService {
    /// The check in flight: (op, issued at).
    pub checking: Option<(OpId, Millis)>,
    /// Consecutive failed checks, and when the first of them failed.
    pub failed: u32,
    pub first_failure: Option<Millis>,
    /// When the service last answered.
    pub last_ok: Option<Millis>,
    /// When Auto Pilot restarted the service during this outage.
    pub restart_at: Option<Millis>,
    /// When this site last took part in a failover: promoted by one, or demoted by one.
    pub failover_at: Option<Millis>,
    /// An automatic failover was held down (audited once per outage).
    pub held_down_at: Option<Millis>,
    /// Highest write rate this site saw while it was the primary (positions per second over
    /// all databases): the same application writes wherever the primary is.
    #[serde(default)]
    pub peak_rate: u64,
    /// Of the consecutive failed checks, those the service answered with an error (a check that
    /// timed out on a loaded machine is not counted here).
    #[serde(default)]
    pub answered_failures: u32,
}

/// What this site sees of its peer, the primary's health and the arbiter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    pub watch_since: Millis,
    pub last_heard: Option<Millis>,
    pub last_heartbeat_at: Option<Millis>,
    /// The epoch and sequence number of the last heartbeat from the primary: a gap in the
    /// sequence is a heartbeat the link lost.
    #[serde(default)]
    pub last_heartbeat_seq: Option<(Epoch, u64)>,
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
    /// Primary: when it asked the arbiter whether it hears the silent recovery site, and the
    /// answer (when it came, and how long before that the arbiter had heard the site).
    #[serde(default)]
    pub peer_status_asked: Option<Millis>,
    #[serde(default)]
    pub peer_seen: Option<(Millis, Option<Millis>)>,
    /// A troubled link to the primary: (first failed reachability probe, last one, failures).
    /// It ends only once the link stayed calm (`defaults::link_calm_after`), so a link that flaps
    /// (down 5 s of every 7 s) is one trouble, not a series of short ones each reset by a good
    /// probe.
    #[serde(default)]
    pub link_trouble: Option<(Millis, Millis, u32)>,
    /// `link_down` was raised because the link kept failing intermittently (flapping): it
    /// clears only after the longest calm (`defaults::LINK_DOWN_CLEAR_MAX`). Probes and
    /// heartbeats at a period near the flaps' land in their up windows for minutes at a time,
    /// so a calm as long as the trouble seen so far is no proof the flapping stopped.
    #[serde(default)]
    pub link_flapping: bool,
    /// Arbiter queries that went unanswered in a row (`arbiter_unreachable` needs two).
    #[serde(default)]
    pub arbiter_misses: u32,
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

impl PeerView {
    /// How long a link whose trouble ran from `since` to `last` must stay up before it is calm:
    /// `defaults::link_calm_after`, or the longest calm after flapping.
    pub fn calm_needed(&self, since: Millis, last: Millis) -> Millis {
        if self.link_flapping {
            crate::defaults::LINK_DOWN_CLEAR_MAX
        } else {
            crate::defaults::link_calm_after(since, last)
        }
    }
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

impl ProcKind {
    /// The procedure's name in status documents and the CLI (snake_case, stable).
    pub fn as_str(&self) -> &'static str {
        match self {
            ProcKind::Failover { forced: false } => "failover",
            ProcKind::Failover { forced: true } => "forced_failover",
            ProcKind::Switchover => "switchover",
            ProcKind::Rebuild => "rebuild",
        }
    }
}

impl Step {
    /// The step's name in status documents and the CLI (snake_case, stable; the step's
    /// bookkeeping fields stay inside the engine).
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::LocalRestart { .. } => "local_restart",
            Step::Confirm { .. } => "confirm",
            Step::Drain => "drain",
            Step::Acquire { .. } => "acquire",
            Step::ExternalFence { .. } => "external_fence",
            Step::Settle => "settle",
            Step::Promote { .. } => "promote",
            Step::SwitchIdentity { .. } => "switch_identity",
            Step::StopWrites { .. } => "stop_writes",
            Step::FinalLog { .. } => "final_log",
            Step::Shipping => "shipping",
            Step::AwaitReady => "await_ready",
            Step::Handoff { .. } => "handoff",
            Step::ReachFinal => "reach_final",
            Step::AwaitEpoch => "await_epoch",
            Step::Renew { .. } => "renew",
            Step::AwaitFulls { .. } => "await_fulls",
        }
    }
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
    /// Retries the drain gave each artifact that waited for one (at most
    /// [`crate::defaults::DRAIN_RETRIES`] each).
    #[serde(default)]
    pub drain_retries: Vec<(ArtifactKey, u32)>,
    /// A failover to a chosen point (`failover --until`): artifacts created after it are left
    /// out of the drain, and the report names them.
    #[serde(default)]
    pub until: Option<crate::ids::UtcMillis>,
    /// What the drain left out because of `until`, per database.
    #[serde(default)]
    pub left_out: Vec<crate::report::LeftOut>,
}

impl Procedure {
    /// Past the takeover's barrier: the new epoch is being asked for or is ours, so no restore
    /// of an older epoch's artifact may start (it would land in the database about to accept
    /// writes).
    pub fn past_drain(&self) -> bool {
        self.new_epoch.is_some()
            || matches!(
                self.step,
                Step::Acquire { .. }
                    | Step::ExternalFence { .. }
                    | Step::Settle
                    | Step::Promote { .. }
                    | Step::SwitchIdentity { .. }
                    | Step::Renew { .. }
            )
    }
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
            drain_retries: Vec::new(),
            until: None,
            left_out: Vec::new(),
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
        } else if self.cfg.arbiter && self.watches_primary() {
            // Tell the arbiter this site's epoch at once: a new arbiter grants the primary its
            // first lease only once it heard every site (see `arbiter.rs`). Not an outstanding
            // query: an arbiter not up yet must not delay the first probe's query.
            let (epoch, req) = (self.st.epoch, self.new_req());
            self.send(Peer::Arbiter, Message::QueryAt { epoch, req });
        }
    }

    pub(super) fn role_restarted(&mut self, now: Millis) {
        let unmanaged = self.st.lease.unmanaged && !self.cfg.arbiter;
        self.st.lease = LeaseState {
            unmanaged,
            ..LeaseState::default()
        };
        self.st.peer.arbiter_query = None;
        self.st.peer.arbiter_misses = 0;
        self.st.peer.failed_probes = 0;
        self.st.peer.first_failure = None;
        self.st.peer.watch_since = now;
        for d in &mut self.st.dbs {
            d.last_log_at = d.last_log_at.max(now.saturating_sub(0));
        }
        // A promotion never goes out again before the lease is renewed (Contracts: Restart:
        // writable only after renewing). `restarted` held it back; the renewal re-issues it
        // with the same id (see `resume_promotion`).
        self.st.ops.retain(|_, e| !e.cmd.is_promote());
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
        // Tracked, so its completion takes a log of the writes acknowledged before it (see
        // `role_op_done`).
        self.issue(now, crate::engine::OpPurpose::Role, |op| Command::Fence {
            op,
        });
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
        for (d, w) in self.st.dbs.iter().zip(&mut self.st.writes) {
            if let Some(p) = d.position {
                w.lsn = w.lsn.max(p);
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
                .set(Timer::Probe, now + self.probe_interval(now));
            self.self_check_tick(now);
            self.probe_tick(now);
            self.arbiter_silence(now);
        }
        if self.st.timers.due(Timer::RoleStep, now) {
            fired = true;
            self.step_deadline(now);
        }
        fired
    }

    /// The next probe's interval: `probe_every_ms` ± 20 %, spread by a hash of the time (no
    /// randomness: the same inputs give the same outputs). Probes at a fixed period alias with
    /// a link that flaps at nearly that period: every probe lands in an up window for minutes,
    /// and the flapping is never seen.
    fn probe_interval(&self, now: Millis) -> Millis {
        let every = self.cfg.failover.probe_every_ms.max(1);
        let mut x = now ^ (u64::from(self.me.0) << 56) ^ 0x9e37_79b9_7f4a_7c15;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let spread = every / 5;
        if spread == 0 {
            return every;
        }
        every - spread + x % (2 * spread + 1)
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

    /// A holder whose renewals reach the arbiter but whose grants never come back (the
    /// arbiter-to-site direction cut) keeps the arbiter's lease alive while it cannot write:
    /// nobody would accept writes until the cut heals. After one lease plus two arbiter timeouts
    /// without a grant it stops renewing for a lease plus the drift margin plus an arbiter
    /// timeout, so the lease lapses and a site that reaches the arbiter takes over; then it asks
    /// again. The pause also covers what that takeover waits for before it asks the arbiter: an
    /// Auto Pilot restart and an operator's confirmation, when configured. Renewing again before
    /// then would end the takeover as "the primary is healthy again", and a confirmation given
    /// in time would find nothing to confirm (swarm seed 92380). It costs nothing while the cut
    /// lasts (no grant comes back, so this site cannot write); when the cut heals sooner, this
    /// site waits out the pause before it asks again.
    pub(super) fn renewals_paused(&mut self, now: Millis) -> bool {
        let lease = self.cfg.lease.lease_ms;
        let timeout = self.cfg.lease.arbiter_timeout_ms;
        if let Some(until) = self.st.lease.quiet_until {
            if now < until {
                return true;
            }
            self.st.lease.quiet_until = None;
            self.st.lease.asking_since = None;
            self.st.lease.retried_at = None;
        }
        let since = *self.st.lease.asking_since.get_or_insert(now);
        if now.saturating_sub(since) < lease + 2 * timeout {
            return false;
        }
        let f = &self.cfg.failover;
        let takeover = if f.local_restart {
            f.local_restart_wait_ms
        } else {
            0
        } + if f.confirm { f.confirm_timeout_ms } else { 0 };
        let until = now + lease + self.cfg.drift_margin() + timeout + takeover;
        self.st.lease.quiet_until = Some(until);
        self.audit(
            now,
            "renewals paused".into(),
            "no grant came back for a lease plus two arbiter timeouts: the lease is left to lapse \
             so that a site which reaches the arbiter can take over (and the pause outlasts its \
             Auto Pilot restart and confirmation, when configured)"
                .into(),
            vec![
                Self::kv("asking_since", since),
                Self::kv("resume_at", until),
            ],
        );
        true
    }

    fn renew(&mut self, now: Millis) {
        if !self.renews() {
            return;
        }
        if self.renewals_paused(now) {
            let at = self.st.lease.quiet_until.unwrap_or(now);
            self.st.timers.set(Timer::LeaseRenew, at);
            return;
        }
        self.st
            .timers
            .set(Timer::LeaseRenew, now + self.cfg.lease.renew_every_ms);
        let req = self.new_req();
        self.st.lease.remember(req, now);
        let epoch = self.st.epoch;
        self.send(Peer::Arbiter, Message::Renew { epoch, req });
    }

    /// The arbiter has not answered for too long: say so (the fence deadline acts alone).
    /// Checked on every probe tick. The first time the silence is long enough the renewal is
    /// asked again at once, and the alert waits an arbiter timeout for that request too: sites
    /// and the arbiter start in any order, and a primary whose last renewal went to an arbiter
    /// not yet up raised the alert as it sent the renewal answered 24 ms later (seed 232301).
    /// Silence counts from the last answer, but never from before the renewals that go
    /// unanswered now began (one renewal period before the first of them): a primary that takes
    /// its lease up again after resigning it asked nothing meanwhile, and its last answer dates
    /// from before the resign (false `arbiter_unreachable`: swarm seed 235).
    fn arbiter_silence(&mut self, now: Millis) {
        let Some(asking_since) = self.st.lease.asking_since else {
            return;
        };
        // Renewals paused on purpose (`renewals_paused`) leave nothing to answer.
        let paused = self.st.lease.quiet_until.is_some_and(|u| now < u);
        if !self.renews() || paused {
            return;
        }
        let timeout = self.cfg.lease.arbiter_timeout_ms;
        let every = self.cfg.lease.renew_every_ms;
        let last = self
            .st
            .lease
            .last_grant_at
            .unwrap_or(self.st.peer.watch_since)
            .max(asking_since.saturating_sub(every));
        if now.saturating_sub(last) < timeout + every {
            return;
        }
        match self.st.lease.retried_at {
            Some(at) if now.saturating_sub(at) >= timeout => self.arbiter_unreachable(now),
            Some(_) => {}
            None => {
                // Judge by a request sent now that the silence is long: the unanswered ones may
                // have gone to an arbiter that was not up yet. A renewal sent within the
                // timeout serves; otherwise ask again at once.
                let latest = self.st.lease.requests.last().map_or(0, |(_, t)| *t);
                if now.saturating_sub(latest) < timeout {
                    self.st.lease.retried_at = Some(latest);
                } else {
                    self.st.lease.retried_at = Some(now);
                    self.renew(now);
                }
            }
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
        self.st.lease.asking_since = None;
        self.st.lease.retried_at = None;
        self.st.lease.quiet_until = None;
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
        self.st.lease.asking_since = None;
        self.st.lease.retried_at = None;
        self.st.lease.quiet_until = None;
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
            Role::Fenced | Role::Primary
                if view.holder == Some(self.me) && view.epoch == self.st.epoch =>
            {
                // A new arbiter presumes this site holds the epoch and waits to hear every
                // site (or a claim to pass): ask again soon, not a renewal period later, so
                // the service takes writes as soon as it may.
                let retry = now + self.cfg.lease.renew_every_ms.min(PRESUMED_RETRY);
                self.st.timers.set_earliest(Timer::LeaseRenew, retry);
            }
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
        // The hold-down counts from the failover, which this site saw happen if its engine ran
        // through it (it held a grant since its last start, or resigned). An old primary whose
        // engine comes back after an outage (the restart resets its lease state) may learn of a
        // failover long past. A grant, not any answer: the `Denied` that tells a restarted
        // engine of the newer epoch is an answer too (swarm seed 205950).
        let live = self.st.lease.resigned || self.st.lease.expires.is_some();
        if live {
            self.st.own.failover_at = Some(now);
        }
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
        self.st.timers.clear_ship_backoff();
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
            // Positions it knew belong to the old history: the new primary's heartbeats say
            // what is produced now (a stale one overstated a later failover's loss).
            d.known_produced = Lsn(0);
            // It receives logs only from now on: `no_new_logs` counts from here, not from
            // the last log it received before it was a primary (a false alert per database
            // half a minute after every rebuild otherwise).
            d.last_log_at = now;
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
        // One `reseed` per database, as the catalogue says (severity failure): each clears when
        // its database is recreated.
        for i in 0..self.st.dbs.len() {
            let db = DbId(i as u32);
            let text = texts::reseed(
                self.db_name(db),
                "this site was the primary of an older epoch and may have diverged; rebuilding \
                 from the new primary",
            );
            self.raise(
                now,
                AlertKind::Reseed,
                Some(db),
                Subject::None,
                Severity::Failure,
                false,
                text,
            );
        }
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
        for i in 0..self.st.dbs.len() {
            self.clear(now, AlertKind::Reseed, Some(DbId(i as u32)), Subject::None);
        }
        self.audit(
            now,
            "rebuilt".into(),
            "every database was recreated; this site is the secondary now".into(),
            vec![Self::kv("epoch", self.st.epoch)],
        );
    }
}

fn p_first(p: &PeerView, now: Millis) -> Millis {
    p.first_failure.unwrap_or(now)
}

#[cfg(test)]
mod name_tests {
    use super::{ProcKind, Step};
    use crate::ids::OpId;

    /// The names reach `/status` and the CLI: snake_case, one per variant, no Rust `Debug` text.
    #[test]
    fn procedure_and_step_names_are_distinct_snake_case_words() {
        let op = OpId(1);
        let steps = [
            Step::LocalRestart { until: 1 },
            Step::Confirm { until: 1 },
            Step::Drain,
            Step::Acquire { req: 1, sent_at: 1 },
            Step::ExternalFence { op },
            Step::Settle,
            Step::Promote { op },
            Step::SwitchIdentity { op },
            Step::StopWrites { op },
            Step::FinalLog { op },
            Step::Shipping,
            Step::AwaitReady,
            Step::Handoff { req: 1 },
            Step::ReachFinal,
            Step::AwaitEpoch,
            Step::Renew { req: 1 },
            Step::AwaitFulls { asked_at: 1 },
        ];
        let kinds = [
            ProcKind::Failover { forced: false },
            ProcKind::Failover { forced: true },
            ProcKind::Switchover,
            ProcKind::Rebuild,
        ];
        let mut names: Vec<&str> = steps.iter().map(Step::as_str).collect();
        let mut kind_names: Vec<&str> = kinds.iter().map(ProcKind::as_str).collect();
        for n in names.iter().chain(&kind_names) {
            assert!(
                !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{n}"
            );
        }
        names.sort_unstable();
        names.dedup();
        kind_names.sort_unstable();
        kind_names.dedup();
        assert_eq!((names.len(), kind_names.len()), (steps.len(), kinds.len()));
    }
}
