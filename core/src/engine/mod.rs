//! The site engine: one per site. As primary it ships artifacts and holds the lease; as secondary
//! it verifies, orders and restores them, watches the chain and fails over when the primary site
//! is lost. The role is decided by lease and epoch (see `role.rs`).

mod archive;
mod chain;
mod invariants;
mod monitor;
mod outbox;
mod restore;
mod role;
mod texts;
mod timers;

pub use chain::{DbState, Gap, Next, Pending, Seen, WritePosition};
pub use outbox::{OutEntry, ShipState};
pub use role::{LeaseState, OwnService, PeerView, Procedure, Role, Step};
pub use timers::{Timer, Timers};

use crate::alert::{AlertBook, AlertId, AlertKind, Severity, Subject};
use crate::artifact::{ArtifactKey, ArtifactMeta};
use crate::audit::AuditRecord;
use crate::config::Config;
use crate::ids::{DbId, Epoch, Millis, OpId, SiteId, MINUTE};
use crate::protocol::{Command, Failure, Input, Message, Output, Peer};
use crate::report::Report;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// What an outstanding operation is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpPurpose {
    Restore {
        db: DbId,
    },
    Backup,
    Role,
    Drill {
        db: DbId,
    },
    /// Auto Pilot's check of this site's own database service.
    SelfCheck,
    /// The scheduled verification of a point of the archive (`Command::ArchiveDrill`).
    ArchiveDrill {
        db: DbId,
    },
}

/// An operation issued and not yet completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpEntry {
    pub cmd: Command,
    pub issued_at: Millis,
    pub purpose: OpPurpose,
}

/// Everything the site engine remembers. Serializable: the adapter journals inputs and the
/// snapshot of this state bounds replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    /// The latest `now` seen; time never goes backwards inside the engine.
    pub now: Millis,
    pub started: bool,
    pub next_op: u64,
    pub next_req: u64,
    pub timers: Timers,
    pub role: Role,
    /// The highest epoch this site has seen, and who holds it.
    pub epoch: Epoch,
    pub holder: SiteId,
    pub lease: LeaseState,
    pub dbs: Vec<DbState>,
    /// Write positions, indexed like `dbs` (see [`WritePosition`]).
    pub writes: Vec<WritePosition>,
    /// Primary: artifacts not yet acknowledged by the recovery site.
    pub outbox: BTreeMap<ArtifactKey, OutEntry>,
    pub ship_queue: VecDeque<ArtifactKey>,
    pub ship_in_flight: u32,
    pub ops: BTreeMap<OpId, OpEntry>,
    /// Secondary: restores in progress, and databases waiting for a restore slot.
    pub restoring: u32,
    pub ready: VecDeque<DbId>,
    pub alerts: AlertBook,
    pub peer: PeerView,
    /// Backups paused for maintenance at this site.
    pub backups_paused: bool,
    /// Primary: databases whose write position the recovery site has not acknowledged yet
    /// (carried in every heartbeat until acknowledged: nothing is learned only once).
    pub dirty: Vec<DbId>,
    pub heartbeat_seq: u64,
    /// Primary: positions advanced since the last heartbeat (for the write rate).
    pub advanced_since_heartbeat: u64,
    pub procedure: Option<Procedure>,
    pub quarantined: u64,
    /// Added to the caller's `now`: monotonic time restarts with the process, and a restarted
    /// engine continues its own time scale from where it stopped (see `handle`).
    #[serde(default)]
    pub clock_base: Millis,
    /// Auto Pilot's view of this site's own database service, and the hold-down.
    #[serde(default)]
    pub own: role::OwnService,
    /// Secondary: the point-in-time archive of each database (empty without `cfg.archive`).
    #[serde(default)]
    pub archive: Vec<archive::ArchiveDb>,
}

/// The site engine.
#[derive(Clone, Debug)]
pub struct SiteEngine {
    cfg: Config,
    me: SiteId,
    peer: SiteId,
    st: SiteState,
    out: VecDeque<Output>,
    /// `st.timers.next()` as of the end of the last `handle` (only `handle` moves timers):
    /// `poll_timeout` answers from it instead of walking the timers again.
    deadline: Option<Millis>,
}

impl SiteEngine {
    /// A fresh engine for site `me`. The configuration must have passed [`Config::validate`].
    pub fn new(cfg: Config, me: SiteId) -> Self {
        let peer = SiteId(1 - me.0.min(1));
        let primary = cfg.initial_primary_id();
        let dbs = vec![DbState::default(); cfg.databases.len()];
        let writes = vec![WritePosition::default(); cfg.databases.len()];
        let role = if me == primary {
            Role::Fenced
        } else {
            Role::Secondary
        };
        SiteEngine {
            me,
            peer,
            st: SiteState {
                now: 0,
                started: false,
                next_op: 1,
                next_req: 1,
                timers: Timers::default(),
                role,
                epoch: Epoch(1),
                holder: primary,
                lease: LeaseState::default(),
                dbs,
                writes,
                outbox: BTreeMap::new(),
                ship_queue: VecDeque::new(),
                ship_in_flight: 0,
                ops: BTreeMap::new(),
                restoring: 0,
                ready: VecDeque::new(),
                alerts: AlertBook::default(),
                peer: PeerView::default(),
                backups_paused: false,
                dirty: Vec::new(),
                heartbeat_seq: 0,
                advanced_since_heartbeat: 0,
                procedure: None,
                quarantined: 0,
                clock_base: 0,
                own: role::OwnService::default(),
                archive: if cfg.archive.is_some() {
                    vec![archive::ArchiveDb::default(); cfg.databases.len()]
                } else {
                    Vec::new()
                },
            },
            out: VecDeque::new(),
            deadline: None,
            cfg,
        }
    }

    /// Rebuild an engine from a snapshot of its state.
    pub fn from_state(cfg: Config, me: SiteId, st: SiteState) -> Self {
        let mut e = SiteEngine::new(cfg, me);
        e.st = st;
        let n = e.cfg.databases.len();
        e.st.dbs.resize(n, DbState::default());
        e.st.writes.resize(n, WritePosition::default());
        e.deadline = e.st.timers.next();
        e
    }

    pub fn state(&self) -> &SiteState {
        &self.st
    }
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn site(&self) -> SiteId {
        self.me
    }
    pub fn role(&self) -> Role {
        self.st.role
    }
    pub fn epoch(&self) -> Epoch {
        self.st.epoch
    }
    /// Whether this site may accept writes now.
    pub fn writable(&self) -> bool {
        self.st.role == Role::Primary && self.st.lease.valid_at(self.st.now)
    }
    pub fn alerts(&self) -> &AlertBook {
        &self.st.alerts
    }
    pub fn db(&self, db: DbId) -> Option<&DbState> {
        self.st.dbs.get(db.0 as usize)
    }

    /// Feed one input. Never blocks, never panics on input.
    pub fn handle(&mut self, now: Millis, input: Input) {
        // Monotonic time restarts with the process (Contracts: Restart). Without a rebase the
        // engine's time would stand still until the new clock passed the old one, and a lease
        // granted meanwhile would look valid far past its real expiry.
        if matches!(input, Input::Restarted) {
            self.st.clock_base = self.st.now.saturating_sub(now);
        }
        let now = now.saturating_add(self.st.clock_base).max(self.st.now);
        self.st.now = now;
        if !self.st.started {
            self.st.started = true;
            self.start(now);
        }
        match input {
            Input::Tick => {}
            Input::Restarted => self.restarted(now),
            Input::ArtifactDiscovered(meta) => self.discovered(now, meta),
            Input::WritePosition { db, lsn } => self.write_position(db, lsn),
            Input::ShipFailed {
                op,
                key,
                to: _,
                reason,
            } => self.ship_failed(now, op, key, &reason),
            Input::ArtifactReceived {
                meta,
                computed,
                from,
            } => self.received(now, meta, computed, from),
            Input::Completed { op, result } => self.completed(now, op, result),
            Input::Probe { target, ok } => self.probe_result(now, target, ok),
            Input::Message { from, msg } => self.message(now, from, msg),
            Input::Operator(req) => self.operator(now, req),
            Input::DiskSpace { free_mib } => self.disk_space(now, free_mib),
            Input::UnreadableManifest {
                outbox,
                file,
                db,
                key,
                reason,
            } => self.unreadable_manifest(now, outbox, &file, db, key, &reason),
            Input::CaptureGap { db, what } => self.capture_gap(now, db, &what),
            Input::Promoted { op, positions } => self.promoted_at(now, op, &positions),
            Input::Archived { key, error } => self.archived(now, key, error),
            Input::StreamAlarm {
                db,
                alarm,
                active,
                what,
            } => self.stream_alarm(now, db, alarm, active, &what),
            Input::LostWrites(lost) => self.lost_writes_found(now, lost),
        }
        self.run_timers(now);
        if cfg!(debug_assertions) {
            self.check_invariants();
        }
    }

    /// The next output to execute, send or report.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the adapter must call `handle(now, Input::Tick)` at the latest (absolute, on the
    /// same scale as `now`).
    pub fn poll_timeout(&self) -> Option<Millis> {
        if !self.st.started {
            return Some(self.st.now.saturating_sub(self.st.clock_base));
        }
        self.deadline.map(|t| t.saturating_sub(self.st.clock_base))
    }

    // ---------------------------------------------------------------- plumbing

    fn start(&mut self, now: Millis) {
        for db in &mut self.st.dbs {
            db.last_log_at = now;
        }
        self.st.peer.watch_since = now;
        self.arm_periodic(now);
        self.role_start(now);
    }

    /// (Re-)arm the periodic timers from `now`.
    fn arm_periodic(&mut self, now: Millis) {
        let c = &self.cfg;
        let t = &mut self.st.timers;
        t.set(Timer::Monitor, now + c.alerts.check_every_ms);
        t.set(Timer::Heartbeat, now);
        t.set(
            Timer::ShipSweep,
            now + c.shipping.ack_timeout_ms.div_ceil(2).max(1),
        );
        t.set(
            Timer::OpSweep,
            now + c.restore.op_timeout_ms.div_ceil(2).max(1),
        );
        t.set(Timer::Probe, now + c.failover.probe_every_ms);
        t.set(Timer::LogBackup, now + c.schedule.log_every_ms);
        t.set(
            Timer::IncrementalBackup,
            now + c.schedule.incremental_every_ms,
        );
        t.set(Timer::FullBackup, now + c.schedule.full_every_ms);
    }

    fn restarted(&mut self, now: Millis) {
        // Timers of the previous process are meaningless now: re-arm from `now`.
        self.st.timers = Timers::default();
        self.arm_periodic(now);
        // Outstanding ships go out again; outstanding operations are re-issued with their ids.
        self.st.ship_in_flight = 0;
        self.st.ship_queue.clear();
        let keys: Vec<ArtifactKey> = self.st.outbox.keys().copied().collect();
        for k in keys {
            if let Some(e) = self.st.outbox.get_mut(&k) {
                e.state = ShipState::Queued;
            }
            self.st.ship_queue.push_back(k);
        }
        // A promotion waits for the lease to be renewed (role_restarted re-issues it then).
        let ops: Vec<Command> = self
            .st
            .ops
            .values()
            .filter(|o| !o.cmd.is_promote())
            .map(|o| o.cmd.clone())
            .collect();
        for op in self.st.ops.values_mut() {
            op.issued_at = now;
        }
        for cmd in ops {
            self.out.push_back(Output::Command(cmd));
        }
        for i in 0..self.st.dbs.len() {
            let d = &mut self.st.dbs[i];
            for p in &mut d.pending {
                // A dead artifact (`Millis::MAX`) stays dead: a restart does not make it readable.
                if p.retry_at.is_some_and(|t| t != Millis::MAX) {
                    p.retry_at = Some(now);
                }
            }
        }
        self.archive_restarted();
        self.role_restarted(now);
        self.try_ship(now);
        self.pump_all(now);
    }

    /// Fire the timers due at `now`, and remember the next deadline for `poll_timeout`.
    fn run_timers(&mut self, now: Millis) {
        // Finished logs are collected while this site accepts writes, from when it began.
        if self.st.timers.get(Timer::CollectLogs).is_none() && self.writable() {
            self.st.timers.set(
                Timer::CollectLogs,
                now + crate::defaults::COLLECT_LOGS_EVERY,
            );
        }
        self.deadline = self.st.timers.next();
        // Most inputs cross no deadline.
        if self.deadline.is_none_or(|t| t > now) {
            return;
        }
        self.fire_timers(now);
        self.deadline = self.st.timers.next();
    }

    fn fire_timers(&mut self, now: Millis) {
        // Bounded: each pass consumes due timers; a handful of passes covers chained timers.
        for _ in 0..4 {
            let mut fired = false;
            if self.st.timers.due(Timer::Monitor, now) {
                fired = true;
                self.st
                    .timers
                    .set(Timer::Monitor, now + self.cfg.alerts.check_every_ms);
                self.monitor(now);
                self.archive_tick(now);
            }
            if self.st.timers.due(Timer::ShipSweep, now) {
                fired = true;
                self.st.timers.set(
                    Timer::ShipSweep,
                    now + self.cfg.shipping.ack_timeout_ms.div_ceil(2).max(1),
                );
                self.ship_sweep(now);
            }
            if self.st.timers.due(Timer::OpSweep, now) {
                fired = true;
                self.st.timers.set(
                    Timer::OpSweep,
                    now + self.cfg.restore.op_timeout_ms.div_ceil(2).max(1),
                );
                self.op_sweep(now);
            }
            while let Some(key) = self.st.timers.pop_ship_backoff(now) {
                fired = true;
                if let Some(e) = self.st.outbox.get_mut(&key) {
                    if matches!(e.state, ShipState::Backoff { .. }) {
                        e.state = ShipState::Queued;
                        self.st.ship_queue.push_back(key);
                    }
                }
                self.try_ship(now);
            }
            while let Some(db) = self.st.timers.pop_restore_retry(now) {
                fired = true;
                self.pump(now, db);
            }
            for (t, kind) in [
                (Timer::LogBackup, crate::artifact::ArtifactKind::Log),
                (
                    Timer::IncrementalBackup,
                    crate::artifact::ArtifactKind::Incremental,
                ),
                (Timer::FullBackup, crate::artifact::ArtifactKind::Full),
            ] {
                if self.st.timers.due(t, now) {
                    fired = true;
                    let every = match kind {
                        crate::artifact::ArtifactKind::Log => self.cfg.schedule.log_every_ms,
                        crate::artifact::ArtifactKind::Incremental => {
                            self.cfg.schedule.incremental_every_ms
                        }
                        crate::artifact::ArtifactKind::Full => self.cfg.schedule.full_every_ms,
                    };
                    self.st.timers.set(t, now + every);
                    if self.st.role == Role::Primary && !self.st.backups_paused {
                        self.take_backup(now, None, kind);
                    }
                }
            }
            if self.st.timers.due(Timer::CollectLogs, now) {
                fired = true;
                // Not re-armed once writes stopped: `run_timers` arms it again when they resume.
                if self.writable() {
                    self.st.timers.set(
                        Timer::CollectLogs,
                        now + crate::defaults::COLLECT_LOGS_EVERY,
                    );
                    let epoch = self.st.epoch;
                    self.command(Command::CollectLogs { epoch });
                }
            }
            fired |= self.role_timers(now);
            if !fired {
                break;
            }
        }
    }

    fn new_op(&mut self) -> OpId {
        let op = OpId(self.st.next_op);
        self.st.next_op += 1;
        op
    }

    fn new_req(&mut self) -> u64 {
        let r = self.st.next_req;
        self.st.next_req += 1;
        r
    }

    /// Issue a command that completes with `Input::Completed`.
    fn issue(
        &mut self,
        now: Millis,
        purpose: OpPurpose,
        make: impl FnOnce(OpId) -> Command,
    ) -> OpId {
        let op = self.new_op();
        let cmd = make(op);
        self.st.ops.insert(
            op,
            OpEntry {
                cmd: cmd.clone(),
                issued_at: now,
                purpose,
            },
        );
        self.out.push_back(Output::Command(cmd));
        op
    }

    fn command(&mut self, cmd: Command) {
        self.out.push_back(Output::Command(cmd));
    }

    fn send(&mut self, to: Peer, msg: Message) {
        self.out.push_back(Output::Send { to, msg });
    }

    fn send_peer(&mut self, msg: Message) {
        let to = Peer::Site(self.peer);
        self.send(to, msg);
    }

    fn audit(&mut self, now: Millis, what: String, why: String, inputs: Vec<(String, String)>) {
        self.out.push_back(Output::Audit(AuditRecord {
            at: now,
            epoch: self.st.epoch,
            what,
            why,
            inputs,
        }));
    }

    fn report(&mut self, r: Report) {
        self.out.push_back(Output::Report(r));
    }

    // One call site per alert condition reads best with every field of the identity spelled out.
    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        now: Millis,
        kind: AlertKind,
        db: Option<DbId>,
        subject: Subject,
        severity: Severity,
        escalate: bool,
        text: String,
    ) {
        let after = escalate.then(|| self.cfg.alerts.critical_after_minutes * MINUTE);
        let ev = self
            .st
            .alerts
            .raise(now, AlertId { kind, db, subject }, severity, after, text);
        self.out.push_back(Output::Alert(ev));
    }

    #[inline]
    fn clear(&mut self, now: Millis, kind: AlertKind, db: Option<DbId>, subject: Subject) {
        // Nearly every clear is of a condition that is not active: answer that inline.
        if !self.st.alerts.may_be_active(kind, db) {
            return;
        }
        if let Some(ev) = self
            .st
            .alerts
            .clear(now, AlertId { kind, db, subject }, None)
        {
            self.out.push_back(Output::Alert(ev));
        }
    }

    fn notice(&mut self, now: Millis, kind: AlertKind, severity: Severity, text: String) {
        let id = AlertId {
            kind,
            db: None,
            subject: Subject::Site(self.me),
        };
        self.out
            .push_back(Output::Alert(crate::alert::notice(now, id, severity, text)));
    }

    fn db_name(&self, db: DbId) -> &str {
        self.cfg.db_name(db)
    }

    fn valid_db(&self, db: DbId) -> bool {
        (db.0 as usize) < self.st.dbs.len()
    }

    fn reject(&mut self, now: Millis, what: &str, why: String) {
        self.audit(now, format!("reject {what}"), why, Vec::new());
    }

    // ---------------------------------------------------------------- completions

    fn completed(&mut self, now: Millis, op: OpId, result: Result<(), Failure>) {
        let Some(entry) = self.st.ops.remove(&op) else {
            // Completed twice, or after a restart dropped it: harmless.
            return;
        };
        match entry.purpose {
            OpPurpose::Restore { db } => self.restore_done(now, db, op, &entry.cmd, result),
            OpPurpose::Backup => {
                if let Err(f) = result {
                    self.audit(
                        now,
                        "backup failed".into(),
                        format!("{} {}", f.code, f.message),
                        Vec::new(),
                    );
                }
            }
            OpPurpose::Drill { db } => self.drill_done(now, db, &entry.cmd, result),
            OpPurpose::Role => self.role_op_done(now, op, &entry.cmd, result),
            OpPurpose::SelfCheck => self.self_check_done(now, op, result),
            OpPurpose::ArchiveDrill { db } => self.archive_drill_done(now, db, &entry.cmd, result),
        }
    }

    /// Re-issue operations whose completion is overdue, with the same id.
    fn op_sweep(&mut self, now: Millis) {
        let timeout = self.cfg.restore.op_timeout_ms;
        let mut again = Vec::new();
        for e in self.st.ops.values_mut() {
            if now.saturating_sub(e.issued_at) >= timeout {
                e.issued_at = now;
                again.push(e.cmd.clone());
            }
        }
        for cmd in again {
            if let Command::ExternalFence { op, target, .. } = cmd {
                // Overdue: the hook hangs (or its completion was lost).
                self.fence_waits(now, op, target, None);
            }
            self.command(cmd);
        }
    }

    fn take_backup(&mut self, now: Millis, db: Option<DbId>, kind: crate::artifact::ArtifactKind) {
        self.issue(now, OpPurpose::Backup, |op| Command::TakeBackup {
            op,
            db,
            kind,
        });
    }

    fn write_position(&mut self, db: DbId, lsn: crate::ids::Lsn) {
        let Some(w) = self.st.writes.get_mut(db.0 as usize) else {
            return;
        };
        if lsn > w.lsn {
            // Saturating: positions come from outside and may be absurd (found by fuzzing).
            self.st.advanced_since_heartbeat = self
                .st
                .advanced_since_heartbeat
                .saturating_add(lsn.0 - w.lsn.0);
            w.lsn = lsn;
            if !w.dirty {
                w.dirty = true;
                self.st.dirty.push(db);
            }
        }
    }

    fn disk_space(&mut self, now: Millis, free_mib: u64) {
        let min = self.cfg.alerts.min_free_mib;
        let subject = Subject::Site(self.me);
        if free_mib < min {
            let archive = self.cfg.archive.is_some();
            let text = texts::disk_space(self.cfg.site_name(self.me), free_mib, min, archive);
            self.raise(
                now,
                AlertKind::DiskSpace,
                None,
                subject,
                Severity::Failure,
                false,
                text,
            );
        } else {
            self.clear(now, AlertKind::DiskSpace, None, subject);
        }
    }

    /// The newest write position known for a database at this site (for tests and status).
    pub fn write_position_of(&self, db: DbId) -> Option<crate::ids::Lsn> {
        self.st.writes.get(db.0 as usize).map(|w| w.lsn)
    }
    /// Outstanding operations (for status and tests).
    pub fn outstanding_ops(&self) -> usize {
        self.st.ops.len()
    }
    /// Artifacts not yet acknowledged by the recovery site.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &ArtifactMeta> {
        self.st.outbox.values().map(|e| &e.meta)
    }
}
