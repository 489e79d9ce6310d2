//! The canonical fault modes: every fault the simulator can inject has one stable snake_case
//! name, used by `lifeboat-sim --faults`, by scenario files and in reproduction commands.

use serde::{Deserialize, Serialize};

/// A named fault mode (TigerBeetle style: every mode is named, every bound written down).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    // ---- network ----
    /// Both directions of one link are cut for a while.
    Partition,
    /// One direction of one link is cut for a while.
    PartitionOneWay,
    /// One node (site or arbiter) is cut from both others for a while.
    Isolate,
    /// Extra latency and jitter on every link.
    Latency,
    /// Messages are dropped with a probability; artifact transfers fail.
    Loss,
    /// Messages and artifact transfers are delivered twice.
    Duplication,
    /// Messages are held back at random, so they overtake each other.
    Reorder,
    // ---- artifacts ----
    /// Artifact bytes are damaged on the wire (the copy fails verification).
    CorruptInTransit,
    /// Artifact transfers are cut short (the copy fails verification).
    TruncateInTransit,
    /// An artifact file is damaged on disk: in the primary's outbox before shipping (every copy
    /// fails verification) or in the secondary's inbox after verification (its restore fails).
    CorruptAtRest,
    /// Like `corrupt_at_rest`, the file is cut short.
    TruncateAtRest,
    /// A transaction log is produced but lost before it is ever shipped (a hole in the chain).
    NeverShipped,
    // ---- backups and restores ----
    /// An operator pauses the primary's backups for maintenance (lifeboat is told).
    BackupsPaused,
    /// The primary's backup job silently stops producing artifacts (lifeboat is not told).
    BackupsStalled,
    /// Restores fail with a transient error, with a probability.
    RestoreErrorTransient,
    /// An artifact can never be restored (permanent error from the database).
    RestoreErrorPermanent,
    /// Restores take far longer (a backlog builds up).
    SlowRestores,
    /// Free space for artifacts drops under the threshold.
    DiskPressure,
    // ---- processes, clocks, sites ----
    /// A site's agent (engine) crashes and is restarted by its supervisor from its journal; an
    /// unsynced journal tail may be lost. The database keeps running meanwhile.
    EngineCrash,
    /// Clocks run fast or slow, within the configured drift bound.
    ClockDrift,
    /// Clocks jump forward, within the configured drift bound.
    ClockStep,
    /// A whole site (database and agent) is lost for the rest of the run.
    SiteLoss,
    /// The primary site is lost, then comes back with its disk (and its unshipped writes).
    OldPrimaryReturns,
    /// The arbiter is down for a while, then restarts from its journal. With the witness on
    /// etcd: the cluster loses its quorum for a while (nothing is applied or answered, no lease
    /// expires), then a new leader runs every lease's TTL again in full.
    ArbiterLoss,
    // ---- operator actions (not faults, but part of a schedule) ----
    /// An operator asks for a planned switchover.
    Switchover,
    /// An operator asks for a failback (planned switchover back to the original primary).
    Failback,
    /// An operator runs a drill at the recovery site.
    Drill,
    /// An operator forces a failover (accepting the split-brain risk when the arbiter is away).
    ForcedFailover,
    // ---- added later: declared (and listed in `ALL`) last, so every older mode keeps its
    // random stream and its sort position, and old seeds keep their schedules ----
    /// One link goes down for `down` out of every `every` for a while (both directions).
    FlappingLink,
    /// The primary's database service stops (its agent still answers): writes stop until the
    /// agent restarts it (`RestartService`, Auto Pilot), which fails with a probability, or
    /// until the window ends.
    ServiceDown,
    /// The arbiter's machine is lost with its disk: a new arbiter starts later with an empty
    /// `data_dir` and must learn the epoch from the sites without ever granting it twice.
    /// etcd keeps its state by quorum: with the witness on etcd this acts as `arbiter_loss`
    /// (and the swarm does not draw it for etcd seeds).
    ArbiterStateLost,
    // ---- the witness on etcd (`world.witness = "etcd"`): no effect with the built-in
    // arbiter, and the swarm draws them only for etcd seeds ----
    /// The etcd cluster changes leader: for the election window (the fault's duration, a few
    /// hundred milliseconds) no request is applied or answered and no lease expires; the new
    /// leader then runs every lease's full TTL again from its start.
    EtcdLeaderChange,
    /// etcd is slow: every request waits up to `latency` (drawn per request) before it is
    /// applied and answered, for the fault's duration.
    WitnessSlow,
    /// etcd applies a request but its answer is lost, with a probability, for the fault's
    /// duration: the agent times out on a request that took effect.
    WitnessAnswerLost,
}

impl FaultMode {
    pub const ALL: [FaultMode; 34] = [
        FaultMode::Partition,
        FaultMode::PartitionOneWay,
        FaultMode::Isolate,
        FaultMode::Latency,
        FaultMode::Loss,
        FaultMode::Duplication,
        FaultMode::Reorder,
        FaultMode::CorruptInTransit,
        FaultMode::TruncateInTransit,
        FaultMode::CorruptAtRest,
        FaultMode::TruncateAtRest,
        FaultMode::NeverShipped,
        FaultMode::BackupsPaused,
        FaultMode::BackupsStalled,
        FaultMode::RestoreErrorTransient,
        FaultMode::RestoreErrorPermanent,
        FaultMode::SlowRestores,
        FaultMode::DiskPressure,
        FaultMode::EngineCrash,
        FaultMode::ClockDrift,
        FaultMode::ClockStep,
        FaultMode::SiteLoss,
        FaultMode::OldPrimaryReturns,
        FaultMode::ArbiterLoss,
        FaultMode::Switchover,
        FaultMode::Failback,
        FaultMode::Drill,
        FaultMode::ForcedFailover,
        FaultMode::FlappingLink,
        FaultMode::ServiceDown,
        FaultMode::ArbiterStateLost,
        FaultMode::EtcdLeaderChange,
        FaultMode::WitnessSlow,
        FaultMode::WitnessAnswerLost,
    ];

    /// The modes a swarm seed draws from. `forced_failover` is left out: it accepts a
    /// split-brain risk by definition, so only scenarios that expect it use it.
    pub fn swarm() -> impl Iterator<Item = FaultMode> {
        FaultMode::ALL
            .into_iter()
            .filter(|m| *m != FaultMode::ForcedFailover)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FaultMode::Partition => "partition",
            FaultMode::PartitionOneWay => "partition_one_way",
            FaultMode::Isolate => "isolate",
            FaultMode::Latency => "latency",
            FaultMode::Loss => "loss",
            FaultMode::Duplication => "duplication",
            FaultMode::Reorder => "reorder",
            FaultMode::CorruptInTransit => "corrupt_in_transit",
            FaultMode::TruncateInTransit => "truncate_in_transit",
            FaultMode::CorruptAtRest => "corrupt_at_rest",
            FaultMode::TruncateAtRest => "truncate_at_rest",
            FaultMode::NeverShipped => "never_shipped",
            FaultMode::BackupsPaused => "backups_paused",
            FaultMode::BackupsStalled => "backups_stalled",
            FaultMode::RestoreErrorTransient => "restore_error_transient",
            FaultMode::RestoreErrorPermanent => "restore_error_permanent",
            FaultMode::SlowRestores => "slow_restores",
            FaultMode::DiskPressure => "disk_pressure",
            FaultMode::EngineCrash => "engine_crash",
            FaultMode::ClockDrift => "clock_drift",
            FaultMode::ClockStep => "clock_step",
            FaultMode::SiteLoss => "site_loss",
            FaultMode::OldPrimaryReturns => "old_primary_returns",
            FaultMode::ArbiterLoss => "arbiter_loss",
            FaultMode::Switchover => "switchover",
            FaultMode::Failback => "failback",
            FaultMode::Drill => "drill",
            FaultMode::ForcedFailover => "forced_failover",
            FaultMode::FlappingLink => "flapping_link",
            FaultMode::ServiceDown => "service_down",
            FaultMode::ArbiterStateLost => "arbiter_state_lost",
            FaultMode::EtcdLeaderChange => "etcd_leader_change",
            FaultMode::WitnessSlow => "witness_slow",
            FaultMode::WitnessAnswerLost => "witness_answer_lost",
        }
    }

    pub fn from_name(name: &str) -> Option<FaultMode> {
        FaultMode::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Faults of the witness on etcd: they act only when the world's witness is etcd
    /// (`world.witness = "etcd"`), and a schedule with one runs with etcd.
    pub fn is_etcd_only(self) -> bool {
        matches!(
            self,
            FaultMode::EtcdLeaderChange | FaultMode::WitnessSlow | FaultMode::WitnessAnswerLost
        )
    }

    /// Operator actions are part of a schedule but are not faults: a run with only these is
    /// still a clean run.
    pub fn is_operation(self) -> bool {
        matches!(
            self,
            FaultMode::Switchover | FaultMode::Failback | FaultMode::Drill
        )
    }

    /// One line for `lifeboat-sim faults`.
    pub fn describe(self) -> &'static str {
        match self {
            FaultMode::Partition => "both directions of one link cut (link, duration)",
            FaultMode::PartitionOneWay => "one direction of one link cut (link from-to, duration)",
            FaultMode::Isolate => "one node cut from both others (site or arbiter, duration)",
            FaultMode::Latency => "extra latency and jitter on every link (latency_ms, jitter_ms)",
            FaultMode::Loss => "messages dropped, transfers failed (probability)",
            FaultMode::Duplication => "messages and transfers delivered twice (probability)",
            FaultMode::Reorder => "messages held back so they overtake (probability, latency_ms)",
            FaultMode::CorruptInTransit => "artifact bytes damaged on the wire (probability)",
            FaultMode::TruncateInTransit => "artifact transfers cut short (probability)",
            FaultMode::CorruptAtRest => "an artifact file damaged in an outbox or inbox (count)",
            FaultMode::TruncateAtRest => "an artifact file cut short in an outbox or inbox (count)",
            FaultMode::NeverShipped => "a transaction log lost before shipping: a hole (count, db)",
            FaultMode::BackupsPaused => "operator pauses backups for maintenance (duration)",
            FaultMode::BackupsStalled => "backup job silently stops producing (duration)",
            FaultMode::RestoreErrorTransient => "restores fail transiently (probability)",
            FaultMode::RestoreErrorPermanent => "an artifact can never be restored (count, db)",
            FaultMode::SlowRestores => "restores take longer: backlog (factor, duration)",
            FaultMode::DiskPressure => "free space for artifacts under the threshold (duration)",
            FaultMode::EngineCrash => {
                "an agent crashes, restarts from its journal (site, duration)"
            }
            FaultMode::ClockDrift => "clocks run fast or slow within the drift bound (drift_ppm)",
            FaultMode::ClockStep => "clocks jump forward within the drift bound (step_ms)",
            FaultMode::SiteLoss => "a whole site lost for the rest of the run (site)",
            FaultMode::OldPrimaryReturns => {
                "the primary site lost, then back with its disk (duration)"
            }
            FaultMode::ArbiterLoss => {
                "the arbiter down, then restarted from its journal (duration); with etcd: quorum \
                 lost for the duration"
            }
            FaultMode::Switchover => "operator: planned switchover",
            FaultMode::Failback => "operator: failback to the original primary",
            FaultMode::Drill => "operator: drill at the recovery site",
            FaultMode::ForcedFailover => "operator: forced failover (scenarios only)",
            FaultMode::FlappingLink => {
                "one link down `down` out of every `every` (link from-to, down, every, duration)"
            }
            FaultMode::ServiceDown => {
                "the primary's database service down, agent up (probability a restart fails, duration)"
            }
            FaultMode::ArbiterStateLost => {
                "the arbiter's machine lost with its disk, a fresh arbiter started later (duration); \
                 with etcd: quorum lost for the duration, state kept (like arbiter_loss)"
            }
            FaultMode::EtcdLeaderChange => {
                "etcd only: a leader election (duration: the window without answers), then every \
                 lease's TTL runs again in full"
            }
            FaultMode::WitnessSlow => {
                "etcd only: requests applied and answered up to `latency` late (latency, duration)"
            }
            FaultMode::WitnessAnswerLost => {
                "etcd only: a request applied but its answer lost (probability, duration)"
            }
        }
    }
}

impl std::fmt::Display for FaultMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parse a comma-separated list of mode names; `none` is the empty list.
pub fn parse_modes(list: &str) -> Result<Vec<FaultMode>, String> {
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if name == "none" {
            continue;
        }
        let mode = FaultMode::from_name(name).ok_or_else(|| {
            format!(
                "unknown fault mode {name:?}; `lifeboat-sim faults` lists them: {}",
                FaultMode::ALL.map(FaultMode::as_str).join(", ")
            )
        })?;
        if !out.contains(&mode) {
            out.push(mode);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip_and_are_unique() {
        let mut names: Vec<_> = FaultMode::ALL.iter().map(|m| m.as_str()).collect();
        for m in FaultMode::ALL {
            assert_eq!(FaultMode::from_name(m.as_str()), Some(m));
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FaultMode::ALL.len());
        assert_eq!(parse_modes("loss, partition,loss").unwrap().len(), 2);
        assert!(parse_modes("lose").is_err());
        assert!(parse_modes("none").unwrap().is_empty());
    }
}
