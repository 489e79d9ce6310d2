//! The engines' protocol: what goes in (`Input`), what comes out (`Output`), the commands the
//! adapter executes and the messages engines send each other. Closed enums that read like a
//! protocol, in the manner of str0m and quinn-proto.

use crate::alert::AlertEvent;
use crate::artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
use crate::audit::AuditRecord;
use crate::ids::{Checksum, DbId, Epoch, Lsn, Millis, OpId, SiteId};
use crate::report::Report;
use serde::{Deserialize, Serialize};

/// Who a message goes to or comes from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Peer {
    Site(SiteId),
    Arbiter,
}

/// Why a command failed, as the executor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The driver's error code (exit code, SQLSTATE number, errno...).
    pub code: i32,
    pub message: String,
    /// The executor knows retrying cannot help (e.g. the artifact is unreadable by the database).
    pub permanent: bool,
}

/// What the secondary probes of the primary, from its own vantage point.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeTarget {
    /// The primary's database service (SQL, TCP or HTTP probe).
    Service,
    /// The primary site's agent.
    Site,
}

/// Requests from an operator (CLI or API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorRequest {
    /// Planned, zero-loss role swap.
    Switchover,
    /// Unplanned failover now; `force` accepts the risk that the arbiter cannot confirm the
    /// primary is gone.
    Failover {
        force: bool,
    },
    /// Planned switchover back to the original primary site once it is re-protected.
    Failback,
    /// Restore into a scratch copy, check, discard.
    Drill {
        db: Option<DbId>,
    },
    /// Maintenance: the primary's backups are paused (no-new-logs is then not a fault).
    PauseBackups,
    ResumeBackups,
    /// Drop and recreate a secondary database from a new full backup.
    Reseed {
        db: DbId,
    },
    /// Confirm a failover that waits for confirmation.
    ConfirmFailover,
    /// Abort a failover that waits for confirmation.
    AbortFailover,
    /// An unplanned failover that stops at a chosen point: artifacts created after `until`
    /// are left out (a delayed standby taken over before a bad write reached it). Appended:
    /// journals encode the variant's index.
    FailoverUntil {
        force: bool,
        until: crate::ids::UtcMillis,
    },
}

/// Everything that can happen to an engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A timer may be due (see `poll_timeout`).
    Tick,
    /// The process restarted and the engine was rebuilt from its journal: re-arm timers from
    /// `now`, come back fenced, re-issue outstanding operations.
    Restarted,
    /// Primary: a new artifact is in the outbox with its manifest.
    ArtifactDiscovered(ArtifactMeta),
    /// Primary: the current write position of a database (carried by heartbeats, for RPO).
    WritePosition { db: DbId, lsn: Lsn },
    /// Primary: one attempt of a ship failed (the transport tries each `Ship` once and reports
    /// every failure; only the core's backoff schedule ships again).
    ShipFailed {
        op: OpId,
        key: ArtifactKey,
        to: SiteId,
        reason: String,
    },
    /// Secondary: an artifact's file is fsynced and renamed into the inbox; the adapter computed
    /// its checksum, the core decides whether it matches the manifest.
    ArtifactReceived {
        meta: ArtifactMeta,
        computed: Checksum,
        from: SiteId,
    },
    /// A command finished.
    Completed {
        op: OpId,
        result: Result<(), Failure>,
    },
    /// A probe of the primary from this site.
    Probe { target: ProbeTarget, ok: bool },
    /// A message from another engine.
    Message { from: Peer, msg: Message },
    /// An operator's request.
    Operator(OperatorRequest),
    /// Free space where artifacts are kept.
    DiskSpace { free_mib: u64 },
    /// An artifact in this site's outbox (`outbox`) or inbox whose manifest cannot be read (not
    /// JSON, no valid artifact, too large). The adapter has already moved the pair (artifact and
    /// manifest) into the quarantine, so it reports each file once. `file` is the artifact's
    /// file name; `db` the database its name says, when the name parses and the database is
    /// configured; `key` the identity the adapter still knew for that file (its outbox index),
    /// if any.
    UnreadableManifest {
        outbox: bool,
        file: String,
        db: Option<DbId>,
        key: Option<ArtifactKey>,
        reason: String,
    },
    /// Primary: the driver's change capture of `db` found changes it could not read one by one
    /// (e.g. SQLite restarted its WAL while the agent was not running) and carried them by
    /// comparing the whole database instead. Nothing is missing from the chain; transaction
    /// counts across the gap are lower bounds. `what` says what happened, in the driver's words.
    CaptureGap { db: DbId, what: String },
    /// Secondary: the promotion `op` opened each database at this position, reported before
    /// its `Completed`. A driver that received changes beyond what it restored (PostgreSQL's
    /// streamed WAL) replays them before the database opens, so a position may be ahead of the
    /// last restored one; the loss bounds count from it. Last in the enum: journals encode the
    /// variant's index.
    Promoted {
        op: OpId,
        positions: Vec<(DbId, Lsn)>,
    },
    /// Primary: a condition of the continuous stream of `db` to the recovery site (PostgreSQL's
    /// streamed WAL) began (`active`) or ended. `what` says it in the driver's words. Appended
    /// after `Promoted`, as it.
    StreamAlarm {
        db: DbId,
        alarm: StreamAlarm,
        active: bool,
        what: String,
    },
    /// Secondary: the copy of an accepted artifact into the point-in-time archive
    /// (`Command::Archive`) is durable (`error` is `None`), or failed and says why. Appended:
    /// journals encode the variant's index.
    Archived {
        key: ArtifactKey,
        error: Option<String>,
    },
    /// A rebuild (`Command::Reseed`) found writes this site's old copy took that the new
    /// primary's history lacks: the exact loss of the failover that made this site stale, where
    /// the failover's report could only bound it. Reported before the reseed's `Completed`.
    /// Appended: journals encode the variant's index.
    LostWrites(LostWrites),
}

/// Writes a former primary took that the new primary never received, found by its driver when
/// it was rebuilt (PostgreSQL: the old timeline's WAL past the new timeline's switch point).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostWrites {
    pub db: DbId,
    /// Where the new primary's history left the old copy's: the new primary has everything
    /// before it.
    pub from: Lsn,
    /// The end of the old copy's valid log: `to - from` positions were lost.
    pub to: Lsn,
    /// Transactions committed in `[from, to)`, when the driver can count them.
    pub transactions: Option<u64>,
    /// The first and last of their commit times, when the driver can read them.
    pub first_commit: Option<crate::ids::UtcMillis>,
    pub last_commit: Option<crate::ids::UtcMillis>,
    /// The last commit time before `from` (the newest write the new primary holds), when the
    /// driver read one: `last_commit` minus it is the loss in time.
    pub last_kept_commit: Option<crate::ids::UtcMillis>,
    /// Where the driver kept them at the site that found them, for an operator to read.
    pub kept: String,
}

/// Conditions of a continuous stream that the primary's driver watches.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamAlarm {
    /// Synchronous mode gave up waiting for the recovery site: commits are acknowledged without
    /// it, and a failover may lose them.
    SynchronousDegraded,
    /// The primary keeps WAL for a recovery site that is not receiving it, close to the bound
    /// past which the stream breaks (and the chain alone carries the WAL).
    SlotNearBound,
}

/// Things the adapter must do. Every command that has an effect carries an operation id;
/// executors may run it twice; the core re-issues outstanding ones after a timeout or restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Send an artifact's bytes (and manifest) to a site.
    Ship {
        op: OpId,
        artifact: ArtifactMeta,
        to: SiteId,
    },
    /// Restore (apply) a verified artifact to the database.
    Restore { op: OpId, artifact: ArtifactMeta },
    /// Rename the artifact's file and manifest to carry its new retry count.
    Relabel { artifact: ArtifactMeta },
    /// Take a backup (all databases when `db` is `None`).
    TakeBackup {
        op: OpId,
        db: Option<DbId>,
        kind: ArtifactKind,
    },
    /// Drop and recreate a database from a full backup. The old copy is kept until the new one
    /// restored and verified.
    Reseed { op: OpId, full: ArtifactMeta },
    /// Remove an artifact file that is no longer needed (retention).
    Discard { key: ArtifactKey },
    /// Retention at the secondary: remove the database's artifacts that end before `before`,
    /// except those in `keep` (sorted, no duplicates). The core decides everything: `keep`
    /// names what it still needs (waiting and in-flight restores, the retained full, the chain
    /// a drill restores); the adapter deletes exactly the rest and reads nothing else.
    Prune {
        db: DbId,
        before: Lsn,
        keep: Vec<ArtifactKey>,
    },
    /// Keep an artifact aside, never restore it (stale epoch, failed verification).
    Quarantine {
        artifact: ArtifactMeta,
        reason: String,
    },
    /// Stop accepting writes on this site's databases.
    Fence { op: OpId },
    /// Accept writes again at this epoch (a primary that renewed or re-acquired its lease).
    AllowWrites { op: OpId, epoch: Epoch },
    /// Turn this site's standby databases into writable primaries at this epoch.
    Promote { op: OpId, epoch: Epoch },
    /// Run the configured external fence (power off, firewall, cloud API) against a site.
    ExternalFence {
        op: OpId,
        target: SiteId,
        epoch: Epoch,
    },
    /// Auto Pilot: restart the local database service.
    RestartService { op: OpId },
    /// Move the service identity (DNS/VIP/hook) to a site.
    SwitchIdentity { op: OpId, to: SiteId, epoch: Epoch },
    /// Restore `chain` into a scratch copy, run the check, discard it. The core chose the
    /// chain by the chain rule: a verified full first, then the restored artifacts that
    /// continue it, in order, up to `upto`. The adapter restores exactly these (each checked
    /// against its manifest) and fails the drill when one is missing; it chooses nothing.
    Drill {
        op: OpId,
        db: DbId,
        upto: Lsn,
        chain: Vec<ArtifactMeta>,
    },
    /// Probe the primary's service and site now (results come back as `Input::Probe`).
    Probe,
    /// Report the databases' write positions now (results come back as `Input::WritePosition`).
    SamplePositions,
    /// Check that this site's own database service answers (every database): `Completed` Ok
    /// when it does. Auto Pilot's view of the local service, not of the peer's.
    CheckService { op: OpId },
    /// Primary, while it accepts writes at `epoch` (issued on the core's `CollectLogs` timer):
    /// publish the logs the database finished on its own since the last time (PostgreSQL's
    /// `archive_timeout`), stamped with `epoch`, and report each as `ArtifactDiscovered`.
    /// Nothing to complete: a collection that fails is simply tried again next time.
    CollectLogs { epoch: Epoch },
    /// Secondary: copy an accepted artifact (file and manifest, from the inbox) into the
    /// point-in-time archive, fsynced, and report `Input::Archived`. Idempotent: an artifact
    /// already archived with this identity is reported archived again.
    Archive { artifact: ArtifactMeta },
    /// Archive retention: remove these artifacts of `db` from the archive (the core decided
    /// with [`crate::archive::expired`]; no kept point needs them). Sorted, no duplicates.
    ArchiveRemove { db: DbId, keys: Vec<ArtifactKey> },
    /// The archive's scheduled verification: restore `chain` (a point the retention policy
    /// keeps, the core's choice) from the archive into a scratch copy, check it, discard it;
    /// `Completed` like a `Drill`. The adapter takes every file from the archive, never from
    /// the inbox, and fails when one is missing.
    ArchiveDrill {
        op: OpId,
        db: DbId,
        upto: Lsn,
        chain: Vec<ArtifactMeta>,
    },
    /// [`Command::Promote`] for a failover to a chosen point (`lifeboat failover --until`):
    /// the database opens at the last position the chain restored, without WAL the driver
    /// holds beyond it (PostgreSQL's streamed WAL), which may have been written after `until`.
    /// Appended: snapshots encode the variant's index.
    PromoteUntil {
        op: OpId,
        epoch: Epoch,
        until: crate::ids::UtcMillis,
    },
}

impl Command {
    /// A promotion, to the newest point or to a chosen one.
    pub fn is_promote(&self) -> bool {
        matches!(self, Command::Promote { .. } | Command::PromoteUntil { .. })
    }

    pub fn op(&self) -> Option<OpId> {
        match self {
            Command::Ship { op, .. }
            | Command::Restore { op, .. }
            | Command::TakeBackup { op, .. }
            | Command::Reseed { op, .. }
            | Command::Fence { op }
            | Command::AllowWrites { op, .. }
            | Command::Promote { op, .. }
            | Command::PromoteUntil { op, .. }
            | Command::ExternalFence { op, .. }
            | Command::RestartService { op }
            | Command::SwitchIdentity { op, .. }
            | Command::Drill { op, .. }
            | Command::ArchiveDrill { op, .. }
            | Command::CheckService { op } => Some(*op),
            Command::Relabel { .. }
            | Command::Discard { .. }
            | Command::Prune { .. }
            | Command::Quarantine { .. }
            | Command::Probe
            | Command::SamplePositions
            | Command::CollectLogs { .. }
            | Command::Archive { .. }
            | Command::ArchiveRemove { .. } => None,
        }
    }
}

/// The primary's periodic word to the secondary: its epoch, whether backups are paused, and the
/// write positions that changed since the last heartbeat (for RPO).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub epoch: Epoch,
    pub seq: u64,
    pub backups_paused: bool,
    /// Whether the primary currently accepts writes.
    pub writable: bool,
    pub positions: Vec<(DbId, Lsn)>,
    /// Observed write rate, in positions per second summed over databases (for `rpo_upper`).
    pub write_rate_per_sec: u64,
}

/// What the arbiter sees of the lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbiterView {
    pub epoch: Epoch,
    pub holder: Option<SiteId>,
    /// The holder renewed within its lease (the arbiter still sees the primary).
    pub holder_renewing: bool,
    /// The lease has expired including the drift margin: a new epoch may be granted.
    pub lease_lapsed: bool,
    /// Milliseconds since the holder's last renewal, as the arbiter measures.
    pub since_renewal_ms: Option<Millis>,
}

/// Messages between engines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    // ---- site to site ----
    /// The artifact is durably received and verified at the sender.
    Ack {
        key: ArtifactKey,
    },
    /// Verification failed at the sender: ship it again.
    Resend {
        key: ArtifactKey,
    },
    Heartbeat(Heartbeat),
    /// Secondary to primary: take a new full backup of a database (reseed, rebuild).
    RequestFull {
        db: Option<DbId>,
    },
    /// Secondary to primary: Auto Pilot, restart your database service locally.
    RestartRequest {
        op: OpId,
    },
    /// Operator's planned switchover, forwarded to the primary.
    SwitchoverRequest,
    /// Primary to secondary: writes are stopped; these are the final positions, shipped.
    SwitchoverFinal {
        epoch: Epoch,
        positions: Vec<(DbId, Lsn)>,
    },
    /// Secondary to primary: every final position is restored.
    SwitchoverReady {
        epoch: Epoch,
    },
    /// Primary to secondary: the switchover was abandoned; writes resumed.
    SwitchoverAborted {
        epoch: Epoch,
        reason: String,
    },
    /// A site tells its peer about the epoch it holds (after promotion), so a returning old
    /// primary learns it is stale.
    EpochNotice {
        epoch: Epoch,
        holder: SiteId,
    },

    // ---- site to arbiter ----
    /// The holder renews its lease (`req` matches the answer to the request).
    Renew {
        epoch: Epoch,
        req: u64,
    },
    /// A site asks to hold the next epoch (failover), or re-acquire after restart.
    Acquire {
        seen: Epoch,
        req: u64,
        force: bool,
    },
    /// Planned switchover: the holder hands the next epoch to `to` and gives up its lease.
    Handoff {
        epoch: Epoch,
        to: SiteId,
        req: u64,
    },
    /// Ask for the arbiter's view (sites now send [`Message::QueryAt`]; read from old journals).
    Query {
        req: u64,
    },

    // ---- arbiter to site ----
    /// The lease is (re)granted: hold `epoch` for `lease_ms` from when you sent request `req`.
    Granted {
        epoch: Epoch,
        lease_ms: Millis,
        req: u64,
    },
    /// Not granted, with the arbiter's view.
    Denied {
        view: ArbiterView,
        req: u64,
        reason: String,
    },
    /// The arbiter's view, answering `QueryAt` (or pushed after an epoch change).
    View {
        view: ArbiterView,
        req: u64,
    },

    // ---- site to site (appended: the variant index is part of the journal and wire format) ----
    /// The recovery site received the primary's heartbeat `seq` and took in its positions. The
    /// primary carries a changed position in every heartbeat until one that carried it is
    /// acknowledged, so positions sent while the link was down are sent again (RPO bounds).
    HeartbeatAck {
        seq: u64,
    },
    // ---- site and arbiter (appended) ----
    /// A site asks the arbiter when it last heard another site: the primary, when the recovery
    /// site went silent, tells a lost recovery site from a cut link between the sites.
    SiteStatus {
        site: SiteId,
        req: u64,
    },
    /// The arbiter's answer: milliseconds since it last heard `site` (`None`: never).
    SiteSeen {
        site: SiteId,
        heard_ms_ago: Option<Millis>,
        req: u64,
    },
    /// Ask for the arbiter's view, saying the epoch this site knows (what sites send;
    /// `Query` stays for journals written before). An arbiter that lost its state grants
    /// nothing until every site told it its epoch (or a lease passed): see `arbiter.rs`.
    QueryAt {
        epoch: Epoch,
        req: u64,
    },
    // ---- site to site (appended) ----
    /// A rebuilt former primary tells the new primary what its old copy held that the new
    /// history lacks (`Input::LostWrites`): the failover's loss, exactly.
    LostWrites(LostWrites),
}

/// Everything an engine asks of its adapter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Command(Command),
    Send { to: Peer, msg: Message },
    Alert(AlertEvent),
    Audit(AuditRecord),
    Report(Report),
}

impl Output {
    /// Whether the inputs journaled so far must be durable before this output is acted on
    /// (Contracts: journal). Only observations need not: a probe, a position sample, a service
    /// check, a collection of finished logs. Each only feeds a later input (a result, or an
    /// artifact that the outbox holds and a restart discovers); none tells anyone of a state
    /// that a crash could take back, so an input whose only outputs are observations may sit in
    /// the journal's unsynced tail like one that caused nothing. A quiet primary issues three of
    /// them a second, each of which cost a journal fsync.
    pub fn needs_durable_inputs(&self) -> bool {
        !matches!(
            self,
            Output::Command(
                Command::Probe
                    | Command::SamplePositions
                    | Command::CheckService { .. }
                    | Command::CollectLogs { .. }
            )
        )
    }
}
