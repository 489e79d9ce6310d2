//! Scenario files (TOML) for the lifeboat simulator: topology and engine configuration, the
//! world around the engines, a timeline of faults and operator actions, and the expectations
//! the run must meet. `scenarios/README.md` documents the format and every file.
//!
//! ```toml
//! name = "corrupted_log_then_next_covers"
//! description = "A log is damaged on the wire; the re-copy restores it."
//! seeds = 2
//! [world]
//! hours = 3
//! [config]                       # lifeboat_core::Config, over the simulator's defaults
//! restore.retry_delay_ms = 30000
//! [[fault]]
//! mode = "corrupt_in_transit"
//! at = "1h"
//! duration = "10m"
//! probability = 0.5
//! [expect]
//! failover = false
//! alerts = ["checksum_mismatch"]
//! ```

#![forbid(unsafe_code)]

pub mod duration;
pub mod mode;
pub mod world;

pub use duration::{format_span, parse_span, Span};
pub use mode::{parse_modes, FaultMode};
pub use world::{world_config, ConfirmAnswer, Hook, Witness, WorldParams};

use lifeboat_core::alert::Severity;
use lifeboat_core::config::Config;
use lifeboat_core::{AlertKind, SiteId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A node named in a fault: a fixed site, the arbiter, or a role resolved when the fault starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeRef {
    /// Whichever site is the primary (the current writer) when the fault starts.
    CurrentPrimary,
    /// The other site.
    CurrentSecondary,
    Arbiter,
    /// A site by its configured name.
    Site(String),
}

impl NodeRef {
    pub fn parse(s: &str) -> NodeRef {
        match s {
            "current_primary" => NodeRef::CurrentPrimary,
            "current_secondary" => NodeRef::CurrentSecondary,
            "arbiter" => NodeRef::Arbiter,
            other => NodeRef::Site(other.to_string()),
        }
    }
    pub fn as_str(&self) -> &str {
        match self {
            NodeRef::CurrentPrimary => "current_primary",
            NodeRef::CurrentSecondary => "current_secondary",
            NodeRef::Arbiter => "arbiter",
            NodeRef::Site(s) => s,
        }
    }
    fn check(&self, cfg: &Config, field: &str) -> Result<(), String> {
        match self {
            NodeRef::Site(name) if cfg.site_id(name).is_none() => Err(format!(
                "{field} = {name:?} is not a site; use one of {}, current_primary, \
                 current_secondary or arbiter",
                cfg.sites.join(", ")
            )),
            _ => Ok(()),
        }
    }
    /// The site this names, given who is primary now (`None` for the arbiter).
    pub fn resolve(&self, cfg: &Config, primary: SiteId) -> Option<SiteId> {
        match self {
            NodeRef::CurrentPrimary => Some(primary),
            NodeRef::CurrentSecondary => Some(SiteId(1 - primary.0.min(1))),
            NodeRef::Arbiter => None,
            NodeRef::Site(name) => cfg.site_id(name),
        }
    }
}

impl Serialize for NodeRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for NodeRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(NodeRef::parse(&s))
    }
}

/// One fault (or operator action) of a schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub mode: Option<FaultMode>,
    /// When it starts, from the start of the run.
    #[serde(default)]
    pub at: Span,
    /// How long it lasts (0: an instant, or for the rest of the run where that is the meaning).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub duration: Span,
    /// The site (or `arbiter`) it hits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<NodeRef>,
    /// Links: one end (`partition`) or the sending end (`partition_one_way`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<NodeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<NodeRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Span>,
    /// `slow_restores`: how many times longer a restore takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `clock_drift`: the node's rate error in parts per million (signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_ppm: Option<i64>,
    /// `clock_step`: how far the clock jumps forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<Span>,
    /// The database it hits (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// How many artifacts it hits (`never_shipped`, `*_at_rest`, `restore_error_permanent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `flapping_link`: how long the link stays down each time (default 5 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Span>,
    /// `flapping_link`: the link goes down once every this long (default 7 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Span>,
}

/// `flapping_link` defaults: down 5 s out of every 7 s (the issue's report).
pub const FLAP_DOWN: u64 = 5_000;
pub const FLAP_EVERY: u64 = 7_000;
/// `service_down` default: the chance that a local restart of the service fails.
pub const SERVICE_RESTART_FAILS: f64 = 0.5;

fn is_zero(s: &Span) -> bool {
    s.0 == 0
}

impl FaultSpec {
    pub fn new(mode: FaultMode, at: u64, duration: u64) -> Self {
        FaultSpec {
            mode: Some(mode),
            at: Span(at),
            duration: Span(duration),
            ..Default::default()
        }
    }
    pub fn mode(&self) -> FaultMode {
        self.mode.unwrap_or(FaultMode::Drill)
    }

    /// One line: `partition(current_primary-arbiter) at 2h for 10m`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("site", self.site.as_ref().map(|n| n.as_str().to_string())),
            ("from", self.from.as_ref().map(|n| n.as_str().to_string())),
            ("to", self.to.as_ref().map(|n| n.as_str().to_string())),
            ("p", self.probability.map(|p| format!("{p:.3}"))),
            ("latency", self.latency.map(|s| s.to_string())),
            ("jitter", self.jitter.map(|s| s.to_string())),
            ("factor", self.factor.map(|f| format!("{f:.1}"))),
            ("drift_ppm", self.drift_ppm.map(|d| d.to_string())),
            ("step", self.step.map(|s| s.to_string())),
            ("db", self.db.clone()),
            ("count", self.count.map(|c| c.to_string())),
            ("down", self.down.map(|s| s.to_string())),
            ("every", self.every.map(|s| s.to_string())),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        let dur = if self.duration.0 > 0 {
            format!(" for {}", self.duration)
        } else {
            String::new()
        };
        format!(
            "{}({}) at {}{dur}",
            self.mode().as_str(),
            parts.join(" "),
            self.at
        )
    }

    fn check(&self, cfg: &Config, run_ms: u64) -> Result<(), String> {
        let Some(mode) = self.mode else {
            return Err("a fault needs a `mode`; `lifeboat-sim faults` lists them".into());
        };
        let name = mode.as_str();
        if self.at.0 > run_ms {
            return Err(format!(
                "{name}: at = {} is after the end of the run ({})",
                self.at,
                Span(run_ms)
            ));
        }
        for (field, node) in [("site", &self.site), ("from", &self.from), ("to", &self.to)] {
            if let Some(n) = node {
                n.check(cfg, field).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        if let Some(db) = &self.db {
            if cfg.db_id(db).is_none() {
                return Err(format!(
                    "{name}: db = {db:?} is not a configured database ({})",
                    cfg.databases.join(", ")
                ));
            }
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name}: probability must be in [0, 1], found {p}"));
            }
        }
        if let Some(f) = self.factor {
            if !(1.0..=100_000.0).contains(&f) {
                return Err(format!("{name}: factor must be in [1, 100000], found {f}"));
            }
        }
        let bound = cfg.lease.max_drift_ppm as i64;
        if let Some(d) = self.drift_ppm {
            if d.abs() > bound {
                return Err(format!(
                    "{name}: drift_ppm = {d} exceeds the configured bound lease.max_drift_ppm = \
                     {bound}; the simulator only injects drift the engines are built to survive"
                ));
            }
        }
        if let Some(s) = self.step {
            let budget = cfg.drift_margin() / 2;
            if s.0 > budget {
                return Err(format!(
                    "{name}: step = {s} exceeds half the drift margin ({}); steps within the \
                     bound only",
                    Span(budget)
                ));
            }
        }
        let needs_window = matches!(
            mode,
            FaultMode::Partition
                | FaultMode::PartitionOneWay
                | FaultMode::Isolate
                | FaultMode::BackupsPaused
                | FaultMode::BackupsStalled
                | FaultMode::SlowRestores
                | FaultMode::DiskPressure
                | FaultMode::ArbiterLoss
                | FaultMode::ArbiterStateLost
                | FaultMode::OldPrimaryReturns
                | FaultMode::FlappingLink
                | FaultMode::ServiceDown
                | FaultMode::WitnessSlow
                | FaultMode::WitnessAnswerLost
        );
        if needs_window && self.duration.0 == 0 {
            return Err(format!("{name}: needs a duration"));
        }
        let link = matches!(
            mode,
            FaultMode::Partition | FaultMode::PartitionOneWay | FaultMode::FlappingLink
        );
        if link && (self.from.is_none() || self.to.is_none()) {
            return Err(format!("{name}: needs `from` and `to` (the link)"));
        }
        if link && self.from == self.to {
            return Err(format!("{name}: `from` and `to` must differ"));
        }
        if self.down.is_some() || self.every.is_some() {
            if mode != FaultMode::FlappingLink {
                return Err(format!(
                    "{name}: `down` and `every` are for flapping_link only"
                ));
            }
            let down = self.down.map_or(FLAP_DOWN, |s| s.0);
            let every = self.every.map_or(FLAP_EVERY, |s| s.0);
            if down == 0 || down >= every {
                return Err(format!(
                    "{name}: needs 0 < down < every, found down = {} and every = {}",
                    Span(down),
                    Span(every)
                ));
            }
        }
        if matches!(
            mode,
            FaultMode::Loss
                | FaultMode::Duplication
                | FaultMode::Reorder
                | FaultMode::CorruptInTransit
                | FaultMode::TruncateInTransit
                | FaultMode::RestoreErrorTransient
                | FaultMode::WitnessAnswerLost
        ) && self.probability.is_none()
        {
            return Err(format!("{name}: needs a probability"));
        }
        if matches!(mode, FaultMode::Latency | FaultMode::WitnessSlow) && self.latency.is_none() {
            return Err(format!("{name}: needs a latency"));
        }
        if mode == FaultMode::ClockDrift && self.drift_ppm.is_none() {
            return Err(format!("{name}: needs drift_ppm"));
        }
        if mode == FaultMode::ClockStep && self.step.is_none() {
            return Err(format!("{name}: needs a step"));
        }
        if mode == FaultMode::EngineCrash && self.site.is_none() {
            return Err(format!("{name}: needs the site whose agent crashes"));
        }
        Ok(())
    }
}

/// What a scenario's runs must show. Every field is optional; an absent one is not checked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Whether at least one unplanned failover happens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<bool>,
    /// Exactly this many completed planned switchovers (failbacks count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switchovers: Option<u32>,
    /// The largest true data loss (transactions, summed over databases) of any failover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_data_loss: Option<u64>,
    /// From detection to the new primary being writable, at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rto: Option<Span>,
    /// Alert kinds that must be raised at least once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
    /// Alert kinds that must never be raised.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub no_alerts: Vec<String>,
    /// No alert at all may be raised (operator notices excepted).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub quiet: bool,
    /// The site (by name) that is the writable primary at the end of the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub final_primary: Option<String>,
    /// Whether at least one database is reseeded (dropped and recreated from a full).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reseed: Option<bool>,
    /// At least this many drills succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drills_ok: Option<u32>,
    /// Whether at least one failover stops at a chosen point and leaves artifacts out
    /// (`failover --until`, reported in `Report::Failover::left_out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<bool>,
    /// Whether the service identity moves at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_moves: Option<bool>,
    /// Whether at least one artifact of an old epoch is quarantined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_quarantined: Option<bool>,
    /// Exactly this many raises of each named kind (first raises and notices, every site).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub alert_count: BTreeMap<String, u32>,
    /// At most this many alerts raised in all (first raises and notices, every kind and site).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_alerts: Option<u32>,
    /// Each named kind is raised, within this time of the first fault (or operator action)
    /// starting (of the run's start when the timeline is empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub alert_within: BTreeMap<String, Span>,
    /// No alert event (raise, update, escalation or notice) is more severe than this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_severity: Option<Severity>,
    /// The longest time no site accepted writes, counted from the first time one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_writer_gap: Option<Span>,
    /// A planted bug this scenario is built to expose: the run must find a violation.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub violation: bool,
}

impl Expect {
    fn check(&self, cfg: &Config) -> Result<(), String> {
        for k in self
            .alerts
            .iter()
            .chain(&self.no_alerts)
            .chain(self.alert_count.keys())
            .chain(self.alert_within.keys())
        {
            if AlertKind::from_name(k).is_none() {
                return Err(format!(
                    "expect: unknown alert kind {k:?}; kinds are {}",
                    AlertKind::ALL.map(AlertKind::as_str).join(", ")
                ));
            }
        }
        if let Some(k) = self.alerts.iter().find(|k| self.no_alerts.contains(k)) {
            return Err(format!("expect: {k:?} is in both alerts and no_alerts"));
        }
        if let Some(k) = self
            .alert_within
            .keys()
            .find(|k| self.no_alerts.contains(*k) || self.alert_count.get(*k) == Some(&0))
        {
            return Err(format!(
                "expect: alert_within names {k:?}, which the scenario also expects never raised"
            ));
        }
        if let Some(site) = &self.final_primary {
            if cfg.site_id(site).is_none() {
                return Err(format!("expect.final_primary = {site:?} is not a site"));
            }
        }
        Ok(())
    }
}

/// The file as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: String,
    #[serde(default)]
    description: String,
    /// How many seeds the test suite runs this scenario with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seeds: Option<u64>,
    /// The first seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(default)]
    world: WorldParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<toml::Table>,
    #[serde(default, rename = "fault", skip_serializing_if = "Vec::is_empty")]
    faults: Vec<FaultSpec>,
    #[serde(default)]
    expect: Expect,
}

/// A parsed and validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seeds: u64,
    pub first_seed: u64,
    pub world: WorldParams,
    /// The engine configuration: the simulator's defaults with the file's `[config]` over them.
    pub config: Config,
    /// The `[config]` table as written (kept so a shrunk schedule can be written back).
    pub config_table: Option<toml::Table>,
    pub faults: Vec<FaultSpec>,
    pub expect: Expect,
}

/// Why a scenario file cannot run, naming the file and the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub problem: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scenario {}: {}", self.file, self.problem)
    }
}
impl std::error::Error for ScenarioError {}

/// Merge `over` into `base`, table by table.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// The engine configuration for a `[config]` table: the simulator's world defaults with the
/// table's keys over them. Unknown keys are rejected (the core's `deny_unknown_fields`).
pub fn resolve_config(table: Option<&toml::Table>) -> Result<Config, String> {
    let Some(over) = table else {
        return Ok(world_config());
    };
    let mut base = toml::Table::try_from(world_config()).map_err(|e| e.to_string())?;
    merge(&mut base, over);
    let cfg: Config = toml::Value::Table(base)
        .try_into()
        .map_err(|e: toml::de::Error| format!("[config]: {}", e.message()))?;
    cfg.validate().map_err(|e| format!("[config]: {e}"))?;
    Ok(cfg)
}

impl Scenario {
    /// Parse and validate a scenario; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let err = |problem: String| ScenarioError {
            file: file.to_string(),
            problem,
        };
        let f: ScenarioFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if f.name.trim().is_empty() {
            return Err(err("`name` is required".into()));
        }
        f.world.validate().map_err(err)?;
        let config = resolve_config(f.config.as_ref()).map_err(err)?;
        let run_ms = f.world.run_ms();
        for (i, fault) in f.faults.iter().enumerate() {
            fault
                .check(&config, run_ms)
                .map_err(|e| err(format!("fault #{}: {e}", i + 1)))?;
        }
        f.expect.check(&config).map_err(err)?;
        Ok(Scenario {
            name: f.name,
            description: f.description,
            seeds: f.seeds.unwrap_or(2).max(1),
            first_seed: f.seed.unwrap_or(0),
            world: f.world,
            config,
            config_table: f.config,
            faults: f.faults,
            expect: f.expect,
        })
    }

    /// Read and parse a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            problem: format!("cannot read it: {e}"),
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Write the scenario back as TOML (used by `lifeboat-sim shrink`).
    pub fn to_toml(&self) -> String {
        let f = ScenarioFile {
            name: self.name.clone(),
            description: self.description.clone(),
            seeds: Some(self.seeds),
            seed: Some(self.first_seed),
            world: self.world.clone(),
            config: self.config_table.clone(),
            faults: self.faults.clone(),
            expect: self.expect.clone(),
        };
        toml::to_string(&f).unwrap_or_else(|e| format!("# cannot write the scenario: {e}\n"))
    }

    /// Every fault mode the schedule uses.
    pub fn modes(&self) -> Vec<FaultMode> {
        let mut m: Vec<FaultMode> = self.faults.iter().filter_map(|f| f.mode).collect();
        m.sort();
        m.dedup();
        m
    }
}

/// Every scenario file (`*.toml`, the crate's own `Cargo.toml` aside) in a directory, sorted.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut out: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "Cargo.toml"))
        .collect();
    out.sort();
    Ok(out)
}

/// The directory of this crate's scenario files.
pub fn scenarios_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "t"
[world]
hours = 2
[config]
databases = ["a", "b"]
restore.retry_delay_ms = 30000
[[fault]]
mode = "partition"
at = "1h"
duration = "5m"
from = "current_primary"
to = "arbiter"
[expect]
failover = false
alerts = ["link_down"]
"#;

    #[test]
    fn a_scenario_overrides_the_world_defaults_and_round_trips() {
        let s = Scenario::parse(SMALL, "small.toml").unwrap();
        assert_eq!(s.config.databases, vec!["a", "b"]);
        assert_eq!(s.config.restore.retry_delay_ms, 30_000);
        assert_eq!(s.config.lease.lease_ms, world_config().lease.lease_ms);
        assert_eq!(s.faults[0].at, Span(3_600_000));
        let again = Scenario::parse(&s.to_toml(), "again.toml").unwrap();
        assert_eq!(again.faults, s.faults);
        assert_eq!(again.config, s.config);
        assert_eq!(again.expect, s.expect);
    }

    #[test]
    fn mistakes_name_the_field() {
        let bad = SMALL.replace("restore.retry_delay_ms", "restore.retry_dely_ms");
        let e = Scenario::parse(&bad, "bad.toml").unwrap_err();
        assert!(e.to_string().contains("retry_dely_ms"), "{e}");
        let bad = SMALL.replace("\"link_down\"", "\"link_dwn\"");
        assert!(Scenario::parse(&bad, "bad.toml").is_err());
        let bad = SMALL.replace("mode = \"partition\"", "mode = \"partiton\"");
        assert!(Scenario::parse(&bad, "bad.toml").is_err());
        let bad = SMALL.replace("to = \"arbiter\"", "to = \"nowhere\"");
        let e = Scenario::parse(&bad, "bad.toml").unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}
