//! Reports of finished procedures: failover, switchover, drill.

use crate::ids::{DbId, Epoch, Lsn, Millis, SiteId};
use serde::{Deserialize, Serialize};

/// Data loss of one database, as bounds (Contracts: RPO).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbLoss {
    pub db: DbId,
    pub restored: Lsn,
    /// The last position the secondary knows the primary produced.
    pub known_produced: Lsn,
    /// `known_produced - restored`.
    pub rpo_lower: u64,
    /// `rpo_lower` plus what could have been written since the last heartbeat; `None` = unknown.
    pub rpo_upper: Option<u64>,
}

/// What a failover to a chosen point (`failover --until`) left out of one database: the
/// received artifacts created after `until`, and the positions they covered (counted in the
/// loss bounds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOut {
    pub db: DbId,
    pub until: crate::ids::UtcMillis,
    pub artifacts: u32,
    pub from: Lsn,
    pub to: Lsn,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    Failover {
        epoch: Epoch,
        new_primary: SiteId,
        forced: bool,
        /// Sum over databases.
        rpo_lower: u64,
        rpo_upper: Option<u64>,
        /// Databases with a possible loss (others lost nothing).
        losses: Vec<DbLoss>,
        /// The peak write rate (positions per second) the upper bound counted with: the loss
        /// bounds divided by it are the seconds of writes lost at that rate. 0: none known.
        #[serde(default)]
        write_rate: u64,
        /// What a failover to a chosen point left out (empty otherwise).
        #[serde(default)]
        left_out: Vec<LeftOut>,
        /// From detection of the failure to the promoted site being writable.
        rto_ms: Millis,
        detected_at: Millis,
        writable_at: Millis,
    },
    Switchover {
        epoch: Epoch,
        new_primary: SiteId,
        /// Always zero for a completed switchover.
        rpo: u64,
        duration_ms: Millis,
    },
    Drill {
        db: DbId,
        upto: Lsn,
        ok: bool,
        message: String,
    },
    /// A database was rebuilt from a full backup.
    Reseeded { db: DbId, at: Lsn },
    /// The exact loss of a failover, known once the former primary (`site`) was rebuilt and
    /// its driver compared its old copy with the new primary's history (`Input::LostWrites`).
    /// `epoch`: the epoch the reporting site knew. Reported by both sites.
    LostWrites {
        site: SiteId,
        epoch: Epoch,
        lost: crate::protocol::LostWrites,
    },
}
