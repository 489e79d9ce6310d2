//! What one seed's run found, and how it is reported.

use lifeboat_core::Millis;
use lifeboat_scenarios::FaultSpec;
use std::collections::BTreeMap;

/// An oracle's finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The oracle's stable name (`one_writer`, `prefix`, ...).
    pub oracle: &'static str,
    /// Simulated time of the finding.
    pub at: Millis,
    pub message: String,
}

/// One failover's data loss: the engine's reported bounds and the truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpoSample {
    pub lower: u64,
    pub upper: Option<u64>,
    pub true_loss: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SeedOutcome {
    pub seed: u64,
    pub schedule: Vec<FaultSpec>,
    pub violations: Vec<Violation>,
    pub trace_hash: u64,
    pub events: u64,
    pub simulated_ms: Millis,
    pub failovers: u32,
    pub switchovers: u32,
    /// Failovers an operator forced (`failover --force`, `world.force_after`).
    pub forced_failovers: u32,
    pub drills_ok: u32,
    pub reseeds: u32,
    pub identity_moves: u32,
    pub stale_quarantined: u32,
    pub restarts: u32,
    pub torn_tails: u32,
    /// Archive retention: removals the oracle judged, and kept points it restored.
    pub archive_removals: u32,
    pub archive_points_checked: u64,
    /// Failovers to a chosen point that left received artifacts out (`failover --until`).
    pub failovers_left_out: u32,
    pub transactions: u64,
    pub rpo: Vec<RpoSample>,
    pub rto_ms: Vec<Millis>,
    /// Alerts raised (first raises and notices), by kind.
    pub alerts: BTreeMap<&'static str, u32>,
    /// When each kind was first raised (or first noticed).
    pub first_raise: BTreeMap<&'static str, Millis>,
    /// The most severe alert event (raise, update or notice) of the run.
    pub max_severity: Option<lifeboat_core::Severity>,
    /// The longest time no site accepted writes, counted from the first time one did.
    pub longest_writer_gap: Millis,
    /// Configuration values this seed drew (`key = value`), printed with a violation.
    pub drawn: Vec<String>,
    /// The site writable at the end (by name), if any.
    pub final_primary: Option<String>,
    /// The witness the run had: `arbiter`, `etcd` or `none` (`arbiter = false`).
    pub witness: &'static str,
    /// With etcd: calls the sites sent, leader changes (elections, quorum back).
    pub etcd_calls: u64,
    pub etcd_leader_changes: u64,
    /// The last events before the first violation (filled by a recording re-run).
    pub last_events: Vec<String>,
    /// Wall-clock time the run took (not part of the trace).
    pub wall: std::time::Duration,
}

impl SeedOutcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
    /// Fault modes the schedule used.
    pub fn modes(&self) -> Vec<lifeboat_scenarios::FaultMode> {
        let mut m: Vec<_> = self.schedule.iter().filter_map(|f| f.mode).collect();
        m.sort();
        m.dedup();
        m
    }
}

/// `3h05m07.250s`.
pub fn clock_text(ms: Millis) -> String {
    let h = ms / 3_600_000;
    let m = ms / 60_000 % 60;
    let s = ms / 1000 % 60;
    format!("{h}h{m:02}m{s:02}.{:03}s", ms % 1000)
}
