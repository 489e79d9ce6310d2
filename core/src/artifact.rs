//! Artifacts: full backups, incremental backups and transaction logs, and their identity.

use crate::ids::{Checksum, DbId, Epoch, Lsn, UtcMillis};
use serde::{Deserialize, Serialize};

/// What an artifact holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ArtifactKind {
    /// A consistent full backup: restoring it resets the database to `lsn_end`.
    Full,
    /// Changes since a base full backup (differential): applies at any position in
    /// `[lsn_start, lsn_end)` when its base is the database's current full.
    Incremental,
    /// A transaction log covering `[lsn_start, lsn_end)`.
    Log,
}

impl ArtifactKind {
    /// The kind's word in artifact names (`full`, `incr`, `tlog`).
    pub fn name_word(self) -> &'static str {
        match self {
            ArtifactKind::Full => "full",
            ArtifactKind::Incremental => "incr",
            ArtifactKind::Log => "tlog",
        }
    }

    /// The kind for a name word, if it is one.
    pub fn from_name_word(word: &str) -> Option<Self> {
        match word {
            "full" => Some(ArtifactKind::Full),
            "incr" => Some(ArtifactKind::Incremental),
            "tlog" => Some(ArtifactKind::Log),
            _ => None,
        }
    }

    /// Human word used in alert texts.
    pub fn text_word(self) -> &'static str {
        match self {
            ArtifactKind::Full => "full backup",
            ArtifactKind::Incremental => "incremental backup",
            ArtifactKind::Log => "transaction log",
        }
    }
}

/// The identity of an artifact. The file name is only a label: renaming on retry never changes
/// the key.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArtifactKey {
    pub db: DbId,
    pub epoch: Epoch,
    pub lsn_start: Lsn,
    pub lsn_end: Lsn,
    pub kind: ArtifactKind,
}

/// Everything the manifest beside an artifact file says about it. It is `Copy` and small: the
/// engine keeps many of them, and artifact bytes never pass through the core.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub key: ArtifactKey,
    /// For an incremental: the `lsn_end` of the full backup it is based on.
    pub base_full: Option<Lsn>,
    /// When the primary created it (UTC, as data).
    pub created_utc: UtcMillis,
    /// Size in bytes.
    pub size: u64,
    /// Checksum of the bytes, as recorded by the primary in the manifest.
    pub checksum: Checksum,
    /// How many times the secondary read it for restore and failed (the name's retry field).
    pub retry: u32,
}

impl ArtifactMeta {
    pub fn db(&self) -> DbId {
        self.key.db
    }
    pub fn kind(&self) -> ArtifactKind {
        self.key.kind
    }
    pub fn epoch(&self) -> Epoch {
        self.key.epoch
    }
    pub fn lsn_start(&self) -> Lsn {
        self.key.lsn_start
    }
    pub fn lsn_end(&self) -> Lsn {
        self.key.lsn_end
    }

    /// Structural sanity of a manifest, independent of any chain: the range is not backwards and
    /// only incrementals name a base.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.key.lsn_end < self.key.lsn_start {
            return Err("lsn_end is before lsn_start");
        }
        if self.key.kind != ArtifactKind::Full && self.key.lsn_end == self.key.lsn_start {
            return Err("an incremental or log must cover at least one position");
        }
        match (self.key.kind, self.base_full) {
            (ArtifactKind::Incremental, None) => Err("an incremental must name its base full"),
            (ArtifactKind::Full | ArtifactKind::Log, Some(_)) => {
                Err("only an incremental names a base full")
            }
            _ => Ok(()),
        }
    }
}
