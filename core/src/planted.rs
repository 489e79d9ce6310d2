//! Test-only planted bugs (feature `planted-bugs`): the simulator's sweep must find each one.
//! Without the feature this module is empty and the engines carry no trace of them.

use serde::{Deserialize, Serialize};

/// A deliberate defect to plant in the engines.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlantedBug {
    /// The primary keeps accepting writes past its fence deadline.
    SkipSelfFence,
    /// A received artifact is accepted without comparing its checksum.
    RestoreUnverified,
    /// The arbiter grants a new epoch as soon as the lease expires, without the drift margin.
    IgnoreDriftMargin,
    /// Artifacts from an older epoch are restored like current ones.
    AcceptStaleEpoch,
    /// A failed restore does not count as an attempt (alerts never reach their threshold).
    ForgetRetryCount,
    /// Heartbeats carry a write position once, acknowledged or not (issue 13, bug 1).
    DeltaPositions,
    /// The failover drain ignores restores waiting for their retry, and restores go on past
    /// it (issue 13, bug 2).
    DrainIgnoresRetries,
    /// The arbiter hands the epoch to a site it has not heard from (issue 13, bug 3), and that
    /// target does not refuse the switchover although it does not hear the arbiter either (the
    /// second defence, which alone would hide the first from the sweep).
    HandoffToUnheardTarget,
    /// Archive retention keeps only the artifacts created inside its window, not the chains
    /// of the points it keeps (a point's full is older than the window).
    ArchiveKeepsWindowOnly,
    /// An arbiter that never granted a lease (it lost its state) grants its presumed holder at
    /// once, even while another site claims a newer epoch (swarm seed 9994367).
    PresumedHolderGranted,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 10] = [
        PlantedBug::SkipSelfFence,
        PlantedBug::RestoreUnverified,
        PlantedBug::IgnoreDriftMargin,
        PlantedBug::AcceptStaleEpoch,
        PlantedBug::ForgetRetryCount,
        PlantedBug::DeltaPositions,
        PlantedBug::DrainIgnoresRetries,
        PlantedBug::HandoffToUnheardTarget,
        PlantedBug::ArchiveKeepsWindowOnly,
        PlantedBug::PresumedHolderGranted,
    ];
}
