//! Alerts: stable kinds, one identity per condition, severity, count, first/last seen, text.
//! A retry re-raises the same identity as an update; sinks see the update, never a new alert.

use crate::artifact::ArtifactKey;
use crate::ids::{DbId, Millis, SiteId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stable alert kinds (Contracts: Alerts). Their snake_case names are the wire names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    MissingLog,
    NoNewLogs,
    BackupsPaused,
    RestoreError,
    ChecksumMismatch,
    Backlog,
    Reseed,
    LinkDown,
    PrimaryDown,
    ArbiterUnreachable,
    RecoverySiteLost,
    StaleEpochArtifact,
    Failover,
    Switchover,
    DrillFailed,
    DiskSpace,
    /// A one-off notice: an artifact's manifest could not be read; the pair was quarantined.
    UnreadableManifest,
    /// A one-off notice: the primary's change capture healed a gap by comparing the database.
    CaptureGap,
    /// A site sent an artifact of an epoch another site holds; quarantined, never restored.
    ForeignEpochArtifact,
    /// Synchronous mode degraded to asynchronous (`Input::StreamAlarm`).
    SynchronousDegraded,
    /// The stream's slot keeps WAL close to its bound (`Input::StreamAlarm`).
    SlotNearBound,
    /// An artifact could not be copied into the point-in-time archive (`Input::Archived`).
    ArchiveFailed,
}

impl AlertKind {
    pub const ALL: [AlertKind; 22] = [
        AlertKind::MissingLog,
        AlertKind::NoNewLogs,
        AlertKind::BackupsPaused,
        AlertKind::RestoreError,
        AlertKind::ChecksumMismatch,
        AlertKind::Backlog,
        AlertKind::Reseed,
        AlertKind::LinkDown,
        AlertKind::PrimaryDown,
        AlertKind::ArbiterUnreachable,
        AlertKind::RecoverySiteLost,
        AlertKind::StaleEpochArtifact,
        AlertKind::Failover,
        AlertKind::Switchover,
        AlertKind::DrillFailed,
        AlertKind::DiskSpace,
        AlertKind::UnreadableManifest,
        AlertKind::CaptureGap,
        AlertKind::ForeignEpochArtifact,
        AlertKind::SynchronousDegraded,
        AlertKind::SlotNearBound,
        AlertKind::ArchiveFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::MissingLog => "missing_log",
            AlertKind::NoNewLogs => "no_new_logs",
            AlertKind::BackupsPaused => "backups_paused",
            AlertKind::RestoreError => "restore_error",
            AlertKind::ChecksumMismatch => "checksum_mismatch",
            AlertKind::Backlog => "backlog",
            AlertKind::Reseed => "reseed",
            AlertKind::LinkDown => "link_down",
            AlertKind::PrimaryDown => "primary_down",
            AlertKind::ArbiterUnreachable => "arbiter_unreachable",
            AlertKind::RecoverySiteLost => "recovery_site_lost",
            AlertKind::StaleEpochArtifact => "stale_epoch_artifact",
            AlertKind::Failover => "failover",
            AlertKind::Switchover => "switchover",
            AlertKind::DrillFailed => "drill_failed",
            AlertKind::DiskSpace => "disk_space",
            AlertKind::UnreadableManifest => "unreadable_manifest",
            AlertKind::CaptureGap => "capture_gap",
            AlertKind::ForeignEpochArtifact => "foreign_epoch_artifact",
            AlertKind::SynchronousDegraded => "synchronous_degraded",
            AlertKind::SlotNearBound => "slot_near_bound",
            AlertKind::ArchiveFailed => "archive_failed",
        }
    }

    pub fn from_name(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Failure,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Failure => "failure",
            Severity::Critical => "critical",
        }
    }
}

/// What an alert is about, beyond its kind and database.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    None,
    Artifact(ArtifactKey),
    Site(SiteId),
}

/// One condition: kind + database + subject.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertId {
    pub kind: AlertKind,
    pub db: Option<DbId>,
    pub subject: Subject,
}

/// How an alert event changes the condition.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertChange {
    /// First raise of this identity.
    Raised,
    /// The same identity raised again (a retry, an escalation, a new figure in the text).
    Updated,
    /// The condition is resolved.
    Cleared,
    /// A one-off event (failover done, switchover done): not kept as a condition.
    Notice,
}

impl AlertChange {
    /// Stable snake_case name (traces, sinks).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertChange::Raised => "raised",
            AlertChange::Updated => "updated",
            AlertChange::Cleared => "cleared",
            AlertChange::Notice => "notice",
        }
    }
}

/// What sinks receive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub id: AlertId,
    pub change: AlertChange,
    pub severity: Severity,
    pub count: u32,
    /// Monotonic times (the adapter turns them into UTC for display).
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub text: String,
}

/// An active condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub severity: Severity,
    pub count: u32,
    pub first_seen: Millis,
    pub last_seen: Millis,
    pub text: String,
}

/// The set of active conditions, ordered by identity so iteration is deterministic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AlertBookState", into = "AlertBookState")]
pub struct AlertBook {
    active: BTreeMap<AlertId, ActiveAlert>,
    /// Active conditions per kind: most clears and lookups on the hot path are of kinds with
    /// none active, and answer without searching the map. Derived from `active`, never stored.
    kinds: [u32; AlertKind::ALL.len()],
    /// Active conditions of a database, by `db % DB_BUCKETS`: with 100,000 databases the map
    /// is cold in the cache, and a clear for a database with none active (nearly every clear)
    /// answers here. Derived, never stored.
    dbs: Box<[u32; DB_BUCKETS]>,
}

const DB_BUCKETS: usize = 4096;

fn bucket(db: DbId) -> usize {
    db.0 as usize % DB_BUCKETS
}

/// What an [`AlertBook`] stores (the per-kind counts are rebuilt on load).
#[derive(Clone, Serialize, Deserialize)]
struct AlertBookState {
    active: BTreeMap<AlertId, ActiveAlert>,
}

impl From<AlertBookState> for AlertBook {
    fn from(s: AlertBookState) -> AlertBook {
        let mut b = AlertBook {
            active: BTreeMap::new(),
            kinds: [0; AlertKind::ALL.len()],
            dbs: Box::new([0; DB_BUCKETS]),
        };
        for id in s.active.keys() {
            b.count(id, true);
        }
        b.active = s.active;
        b
    }
}

impl From<AlertBook> for AlertBookState {
    fn from(b: AlertBook) -> AlertBookState {
        AlertBookState { active: b.active }
    }
}

impl std::fmt::Debug for AlertBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBook")
            .field("active", &self.active)
            .finish()
    }
}

impl Default for AlertBook {
    fn default() -> Self {
        AlertBook::from(AlertBookState {
            active: BTreeMap::new(),
        })
    }
}

impl AlertBook {
    fn count(&mut self, id: &AlertId, up: bool) {
        let k = &mut self.kinds[id.kind as usize];
        *k = if up { *k + 1 } else { k.saturating_sub(1) };
        if let Some(db) = id.db {
            let b = &mut self.dbs[bucket(db)];
            *b = if up { *b + 1 } else { b.saturating_sub(1) };
        }
    }

    /// Whether `id` may be active: false is certain, true needs a look in the map.
    fn maybe_active(&self, id: &AlertId) -> bool {
        self.may_be_active(id.kind, id.db)
    }

    /// Whether a condition of `kind` for `db` may be active: false is certain, true needs a
    /// look in the map (a cheap test before building an identity).
    #[inline]
    pub fn may_be_active(&self, kind: AlertKind, db: Option<DbId>) -> bool {
        self.kinds[kind as usize] != 0 && db.is_none_or(|db| self.dbs[bucket(db)] != 0)
    }

    /// Raise (or re-raise as an update) a condition. The severity never goes down while the
    /// condition lasts; `critical_after` escalates to critical counted from the first raise.
    pub fn raise(
        &mut self,
        now: Millis,
        id: AlertId,
        severity: Severity,
        critical_after: Option<Millis>,
        text: String,
    ) -> AlertEvent {
        let (change, entry) = match self.active.get_mut(&id) {
            Some(a) => {
                a.count = a.count.saturating_add(1);
                a.last_seen = now;
                a.severity = a.severity.max(severity);
                a.text = text;
                (AlertChange::Updated, a)
            }
            None => {
                self.count(&id, true);
                let a = self.active.entry(id).or_insert(ActiveAlert {
                    severity,
                    count: 1,
                    first_seen: now,
                    last_seen: now,
                    text,
                });
                (AlertChange::Raised, a)
            }
        };
        if let Some(after) = critical_after {
            if now.saturating_sub(entry.first_seen) >= after {
                entry.severity = Severity::Critical;
            }
        }
        AlertEvent {
            id,
            change,
            severity: entry.severity,
            count: entry.count,
            first_seen: entry.first_seen,
            last_seen: entry.last_seen,
            text: entry.text.clone(),
        }
    }

    /// Clear a condition; `None` when it was not active.
    pub fn clear(&mut self, now: Millis, id: AlertId, text: Option<String>) -> Option<AlertEvent> {
        if !self.maybe_active(&id) {
            return None;
        }
        let a = self.active.remove(&id)?;
        self.count(&id, false);
        Some(AlertEvent {
            id,
            change: AlertChange::Cleared,
            severity: a.severity,
            count: a.count,
            first_seen: a.first_seen,
            last_seen: now,
            text: text.unwrap_or(a.text),
        })
    }

    pub fn get(&self, id: &AlertId) -> Option<&ActiveAlert> {
        if !self.maybe_active(id) {
            return None;
        }
        self.active.get(id)
    }
    pub fn is_active(&self, id: &AlertId) -> bool {
        self.maybe_active(id) && self.active.contains_key(id)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&AlertId, &ActiveAlert)> {
        self.active.iter()
    }
    pub fn len(&self) -> usize {
        self.active.len()
    }
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
    /// Active conditions of one database (ids sort by kind first, so this scans; it is only
    /// used by status queries, never on the hot path).
    pub fn for_db(&self, db: DbId) -> impl Iterator<Item = (&AlertId, &ActiveAlert)> {
        self.active.iter().filter(move |(id, _)| id.db == Some(db))
    }
}

/// A one-off notice event (not kept in the book).
pub fn notice(now: Millis, id: AlertId, severity: Severity, text: String) -> AlertEvent {
    AlertEvent {
        id,
        change: AlertChange::Notice,
        severity,
        count: 1,
        first_seen: now,
        last_seen: now,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> AlertId {
        AlertId {
            kind: AlertKind::RestoreError,
            db: Some(DbId(1)),
            subject: Subject::None,
        }
    }

    #[test]
    fn databases_sharing_a_count_bucket_clear_independently_and_survive_a_reload() {
        let at = |db: u32| AlertId {
            kind: AlertKind::RestoreError,
            db: Some(DbId(db)),
            subject: Subject::None,
        };
        // 1 and 1 + DB_BUCKETS share a bucket; 2 does not.
        let (a, b, other) = (at(1), at(1 + DB_BUCKETS as u32), at(2));
        let mut book = AlertBook::default();
        book.raise(0, a, Severity::Failure, None, "a".into());
        book.raise(0, b, Severity::Failure, None, "b".into());
        assert!(!book.may_be_active(AlertKind::RestoreError, Some(DbId(2))));
        assert!(book.clear(1, other, None).is_none());
        assert!(book.clear(1, a, None).is_some());
        assert!(
            book.is_active(&b),
            "the other database in the bucket is still active"
        );
        let reloaded: AlertBook =
            bincode::deserialize(&bincode::serialize(&book).unwrap()).unwrap();
        assert_eq!(reloaded, book, "the counts are rebuilt on load");
        let mut book = reloaded;
        assert!(book.clear(2, b, None).is_some());
        assert!(!book.may_be_active(AlertKind::RestoreError, Some(DbId(1))));
        assert!(book.is_empty());
    }

    #[test]
    fn a_retry_updates_the_same_identity_and_escalates_from_the_first_raise() {
        let mut b = AlertBook::default();
        let e1 = b.raise(0, id(), Severity::Failure, Some(30 * 60_000), "a".into());
        assert_eq!(e1.change, AlertChange::Raised);
        let e2 = b.raise(
            29 * 60_000,
            id(),
            Severity::Failure,
            Some(30 * 60_000),
            "b".into(),
        );
        assert_eq!(
            (e2.change, e2.count, e2.severity),
            (AlertChange::Updated, 2, Severity::Failure)
        );
        let e3 = b.raise(
            30 * 60_000,
            id(),
            Severity::Failure,
            Some(30 * 60_000),
            "c".into(),
        );
        assert_eq!((e3.severity, e3.first_seen), (Severity::Critical, 0));
        assert_eq!(b.len(), 1);
        let c = b.clear(31 * 60_000, id(), None).unwrap();
        assert_eq!(c.change, AlertChange::Cleared);
        assert!(b.is_empty());
        assert!(b.clear(32 * 60_000, id(), None).is_none());
    }

    #[test]
    fn kind_names_round_trip() {
        for k in AlertKind::ALL {
            assert_eq!(AlertKind::from_name(k.as_str()), Some(k));
        }
    }

    #[test]
    fn a_book_loaded_from_its_bytes_still_finds_and_clears_its_alerts() {
        let mut b = AlertBook::default();
        b.raise(0, id(), Severity::Failure, None, "x".into());
        let other = AlertId {
            kind: AlertKind::Backlog,
            ..id()
        };
        assert!(
            b.clear(1, other, None).is_none(),
            "a kind with nothing active"
        );
        let bytes = bincode::serialize(&b).unwrap();
        let mut loaded: AlertBook = bincode::deserialize(&bytes).unwrap();
        assert_eq!(loaded, b);
        assert!(loaded.is_active(&id()));
        assert!(loaded.clear(2, id(), None).is_some());
        assert!(!loaded.is_active(&id()) && loaded.is_empty());
        assert!(loaded.clear(3, id(), None).is_none());
    }
}
