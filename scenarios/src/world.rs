//! The simulated world's defaults: the engine configuration the swarm runs with and the
//! parameters of the world around the engines (clients, databases, network, disks). Scenario
//! files override both.
//!
//! The engine configuration keeps the recovery-location seed's alert thresholds, restore
//! retries and 5-minute logs, and scales the slow cadences so a simulated day stays cheap: full
//! backups every 14 h and incrementals every 2 h (the seed's weekly / daily, divided by
//! [`BACKUP_SCALE`]), and leases, heartbeats and probes in seconds rather than per second.

use crate::duration::Span;
use lifeboat_core::config::Config;
use lifeboat_core::{Millis, MINUTE};
use serde::{Deserialize, Serialize};

/// The seed's weekly full and daily incremental backups are divided by this factor.
pub const BACKUP_SCALE: u64 = 12;
/// Databases in the default world.
pub const DATABASES: usize = 10;

/// The engine configuration of the default simulated world.
pub fn world_config() -> Config {
    let mut c = Config {
        sites: vec!["primary".into(), "recovery".into()],
        initial_primary: "primary".into(),
        databases: (0..DATABASES).map(|i| format!("db{i:02}")).collect(),
        arbiter: true,
        ..Config::default()
    };
    c.schedule.full_every_ms = 7 * 24 * 60 * MINUTE / BACKUP_SCALE;
    c.schedule.incremental_every_ms = 24 * 60 * MINUTE / BACKUP_SCALE;
    c.schedule.log_every_ms = 5 * MINUTE;
    c.lease.lease_ms = 30_000;
    c.lease.renew_every_ms = 5_000;
    c.lease.fence_time_ms = 2_000;
    c.lease.heartbeat_every_ms = 5_000;
    c.lease.arbiter_timeout_ms = 10_000;
    c.failover.probe_every_ms = 5_000;
    c.failover.unhealthy_count = 3;
    c.failover.unhealthy_for_ms = 15_000;
    c.failover.fence_hook = true;
    c.failover.peer_lost_after_ms = 2 * MINUTE;
    c
}

/// The world around the engines. Every bound is a named field with its default here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldParams {
    /// Simulated length of one seed's run.
    pub hours: f64,
    /// Transactions per second per database that the clients commit (each database's rate
    /// varies around it by up to ±50%).
    pub write_rate: f64,
    /// How often clients commit a batch.
    pub client_tick: Span,
    /// One-way latency of every link, before faults.
    pub latency: Span,
    /// Artifact transfer speed, in bytes per millisecond.
    pub bytes_per_ms: u64,
    /// Bytes per transaction in a log (sizes artifacts).
    pub bytes_per_tx: u64,
    /// Time a restore takes: a fixed part...
    pub restore_base: Span,
    /// ...plus this per 1000 transactions applied.
    pub restore_per_ktx: Span,
    /// Time a backup takes.
    pub backup_time: Span,
    /// Time a promotion or an external fence takes.
    pub role_op_time: Span,
    /// Disk capacity for artifacts at each site, in MiB.
    pub disk_mib: u64,
    /// How often each agent reports free space.
    pub disk_report_every: Span,
    /// Faults happen only inside this fraction of the run; the rest lets the world heal.
    pub fault_window: f64,
    /// Engines journal every input (needed only by crash and restart faults; turned on
    /// automatically when the schedule has one).
    pub journal: bool,
    /// Snapshot the engine state every this many journal records (bounds replay).
    pub snapshot_every: u64,
    /// The sending adapter checks an artifact file against its manifest before shipping it, and
    /// reports a damaged outbox copy as a failed ship instead of sending bad bytes.
    pub sender_verifies: bool,
    /// Time an identity switch (DNS / VIP) takes.
    pub identity_time: Span,
    /// How the local restart hook (`RestartService`, Auto Pilot) behaves until
    /// `hooks_heal_at`: it works, fails, or hangs (never completes); it works after.
    pub restart_hook: Hook,
    /// How the external fence hook (`ExternalFence`, `failover.fence_hook`) behaves until
    /// `hooks_heal_at`; it works after.
    pub fence_hook: Hook,
    /// When misbehaving hooks start working (from the start of the run). `0`: never.
    pub hooks_heal_at: Span,
    /// The operator's answer when a failover waits for confirmation (`failover.confirm`):
    /// `confirm` or `abort` after `confirm_after`, or `silence` (the timeout decides).
    pub confirm_answer: ConfirmAnswer,
    pub confirm_after: Span,
    /// An operator forces a failover (`failover --force`) at the recovery site once it has had
    /// a critical `primary_down` active this long, when that is safe: `fence_hook` is
    /// configured, or the primary site is gone and no schedule brings it back. `0`: never.
    pub force_after: Span,
    /// The recovery site receives the primary's changes continuously beyond what it restored
    /// (PostgreSQL's streamed WAL): each heartbeat that reaches it carries the primary's
    /// positions as of its sending, kept on the recovery site's disk, and a promotion opens the
    /// databases there when that continues their history (`Input::Promoted`).
    pub stream_wal: bool,
    /// The witness: the built-in `arbiter` (the third node runs `lifeboat_core::arbiter`), or
    /// `etcd` (the third node is an etcd cluster, `lifeboat_core::etcd::model::Store` on the
    /// leader's clock, and each site translates its witness messages with
    /// `lifeboat_core::etcd::EtcdWitness`).
    pub witness: Witness,
    /// With the witness on etcd: the recovery site's agent starts only once the initial primary
    /// holds its first grant (or a minute after its own start time), as an operator deploying
    /// would start them. `witness init` leaves no liveness key, and until the initial primary's
    /// first renewal creates one the translation reports its lease lapsed, so a recovery site
    /// that asks first fails over at once (the built-in arbiter presumes the initial holder for a
    /// lease after its start instead).
    pub etcd_primary_first: bool,
}

/// Which witness decides epochs.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Witness {
    /// The built-in arbiter process.
    #[default]
    Arbiter,
    /// An etcd cluster, through the Sans-IO translation.
    Etcd,
}

impl Witness {
    pub fn as_str(self) -> &'static str {
        match self {
            Witness::Arbiter => "arbiter",
            Witness::Etcd => "etcd",
        }
    }

    pub fn from_name(name: &str) -> Option<Witness> {
        match name {
            "arbiter" => Some(Witness::Arbiter),
            "etcd" => Some(Witness::Etcd),
            _ => None,
        }
    }
}

/// How a hook behaves while it misbehaves.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// It does what it is asked.
    #[default]
    Works,
    /// Every run fails (a non-zero exit).
    Fails,
    /// Every run hangs: it never completes, and a re-issue of the same operation while it
    /// hangs is not started again.
    Hangs,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Works => "works",
            Hook::Fails => "fails",
            Hook::Hangs => "hangs",
        }
    }
}

/// The operator's answer to a failover waiting for confirmation.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmAnswer {
    #[default]
    Confirm,
    Abort,
    /// No answer: `failover.on_confirm_timeout` decides.
    Silence,
}

impl ConfirmAnswer {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfirmAnswer::Confirm => "confirm",
            ConfirmAnswer::Abort => "abort",
            ConfirmAnswer::Silence => "silence",
        }
    }
}

impl Default for WorldParams {
    fn default() -> Self {
        WorldParams {
            hours: 24.0,
            write_rate: 2.0,
            client_tick: Span(5_000),
            latency: Span(20),
            bytes_per_ms: 100_000,
            bytes_per_tx: 2_000,
            restore_base: Span(500),
            restore_per_ktx: Span(1_000),
            backup_time: Span(2_000),
            role_op_time: Span(5_000),
            disk_mib: 1 << 20,
            disk_report_every: Span(10 * MINUTE),
            fault_window: 0.7,
            journal: false,
            snapshot_every: 4_096,
            sender_verifies: true,
            identity_time: Span(30_000),
            restart_hook: Hook::Works,
            fence_hook: Hook::Works,
            hooks_heal_at: Span(0),
            confirm_answer: ConfirmAnswer::Confirm,
            confirm_after: Span(60_000),
            force_after: Span(0),
            stream_wal: false,
            witness: Witness::Arbiter,
            etcd_primary_first: true,
        }
    }
}

impl WorldParams {
    pub fn run_ms(&self) -> Millis {
        (self.hours * 3_600_000.0).round() as Millis
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.hours > 0.0 && self.hours <= 24.0 * 365.0) {
            return Err(format!(
                "world.hours must be in (0, 8760], found {}",
                self.hours
            ));
        }
        if !(self.write_rate >= 0.0 && self.write_rate <= 1_000_000.0) {
            return Err("world.write_rate must be in [0, 1e6] transactions per second".into());
        }
        if self.client_tick.0 == 0 || self.bytes_per_ms == 0 || self.snapshot_every == 0 {
            return Err(
                "world.client_tick, world.bytes_per_ms and world.snapshot_every must be above 0"
                    .into(),
            );
        }
        if !(self.fault_window > 0.0 && self.fault_window <= 1.0) {
            return Err("world.fault_window must be in (0, 1]".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_world_configuration_is_valid() {
        world_config().validate().unwrap();
        WorldParams::default().validate().unwrap();
    }
}
