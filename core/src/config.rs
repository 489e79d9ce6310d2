//! The engine configuration. One type, shared by `site.toml` (inside the adapter's own file) and
//! the scenario files. Every field has a default from [`crate::defaults`]; unknown keys are
//! rejected so a typo never silently falls back to a default.

use crate::defaults as d;
use crate::ids::{DbId, Millis, SiteId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Site names; a site's [`SiteId`] is its index. Exactly two: the primary location and the
    /// recovery location.
    pub sites: Vec<String>,
    /// The site that holds the first epoch.
    pub initial_primary: String,
    /// Database names; a database's [`DbId`] is its index.
    pub databases: Vec<String>,
    /// Whether an arbiter (witness) exists. Without one, automatic failover is off.
    pub arbiter: bool,
    pub schedule: Schedule,
    pub shipping: Shipping,
    pub restore: Restore,
    pub alerts: Alerts,
    pub lease: Lease,
    pub failover: Failover,
    /// The point-in-time archive's retention at the recovery site; `None` when this site keeps
    /// no archive. Set by the adapter from `site.toml`'s `[archive]` (and by the simulator),
    /// never read from `[engine]`.
    #[serde(skip)]
    pub archive: Option<crate::archive::Policy>,
    /// Test-only: a deliberate defect the simulator must find.
    #[cfg(feature = "planted-bugs")]
    pub planted_bug: Option<crate::planted::PlantedBug>,
}

/// When the primary takes backups (the recovery-location seed: weekly / daily / every 5 minutes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub full_every_ms: Millis,
    pub incremental_every_ms: Millis,
    pub log_every_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Shipping {
    pub ack_timeout_ms: Millis,
    pub retry_base_ms: Millis,
    pub retry_max_ms: Millis,
    pub max_in_flight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Restore {
    /// Databases restoring at the same time (each restores one artifact at a time).
    pub parallelism: u32,
    /// Attempts after which a failed restore is permanent (then a reseed, unless bypassed).
    pub max_attempts: u32,
    pub retry_delay_ms: Millis,
    /// A hole no artifact covers, open this long, leads to a reseed.
    pub reseed_after_minutes: u64,
    /// Outstanding commands (restores, fences, promotions) are re-issued after this long.
    pub op_timeout_ms: Millis,
    /// A standby that lags on purpose: artifacts are received and verified at once, applied
    /// only this long after they arrived (0: at once). A failover catches up fully first, or
    /// to the time an operator chose (`failover --until`); a switchover catches up fully.
    pub apply_delay_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    pub after_attempts: u32,
    pub after_minutes: u64,
    pub critical_after_minutes: u64,
    pub no_new_logs_minutes: u64,
    pub backlog_count: u32,
    pub backlog_age_minutes: u64,
    pub check_every_ms: Millis,
    /// `disk_space` is raised under this many free MiB.
    pub min_free_mib: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lease {
    pub lease_ms: Millis,
    pub renew_every_ms: Millis,
    /// Clock drift bound in parts per million of elapsed time.
    pub max_drift_ppm: u64,
    /// The longest time a fence (stop writes) takes.
    pub fence_time_ms: Millis,
    pub heartbeat_every_ms: Millis,
    pub arbiter_timeout_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Failover {
    /// Fail over automatically when the primary site is lost (needs an arbiter).
    pub automatic: bool,
    pub probe_every_ms: Millis,
    pub unhealthy_count: u32,
    pub unhealthy_for_ms: Millis,
    /// Auto Pilot: ask the primary's own agent for a local restart first, when it is reachable.
    pub local_restart: bool,
    pub local_restart_wait_ms: Millis,
    /// Wait for an operator's confirmation before failing over.
    pub confirm: bool,
    pub confirm_timeout_ms: Millis,
    /// What to do when the confirmation does not come in time.
    pub on_confirm_timeout: OnConfirmTimeout,
    /// Run the external fence (`fence_hook`) against the old primary before promoting.
    pub fence_hook: bool,
    /// The primary raises `recovery_site_lost` when it has not heard from the recovery site
    /// for this long.
    pub peer_lost_after_ms: Millis,
    /// A planned switchover that has not completed in this time is abandoned (writes resume).
    pub switchover_timeout_ms: Millis,
    /// Move the service identity (DNS/VIP/hook) after promotion.
    pub switch_identity: bool,
    /// After a failover this site took part in, no automatic failover for this long (an
    /// operator can still force one).
    pub hold_down_ms: Millis,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConfirmTimeout {
    Proceed,
    Abort,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sites: vec!["primary".into(), "recovery".into()],
            initial_primary: "primary".into(),
            databases: vec!["app".into()],
            arbiter: true,
            schedule: Schedule::default(),
            shipping: Shipping::default(),
            restore: Restore::default(),
            alerts: Alerts::default(),
            lease: Lease::default(),
            failover: Failover::default(),
            archive: None,
            #[cfg(feature = "planted-bugs")]
            planted_bug: None,
        }
    }
}
impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            full_every_ms: d::FULL_EVERY,
            incremental_every_ms: d::INCREMENTAL_EVERY,
            log_every_ms: d::LOG_EVERY,
        }
    }
}
impl Default for Shipping {
    fn default() -> Self {
        Shipping {
            ack_timeout_ms: d::SHIP_ACK_TIMEOUT,
            retry_base_ms: d::SHIP_RETRY_BASE,
            retry_max_ms: d::SHIP_RETRY_MAX,
            max_in_flight: d::SHIP_MAX_IN_FLIGHT,
        }
    }
}
impl Default for Restore {
    fn default() -> Self {
        Restore {
            parallelism: d::RESTORE_PARALLELISM,
            max_attempts: d::RESTORE_MAX_ATTEMPTS,
            retry_delay_ms: d::RESTORE_RETRY_DELAY,
            reseed_after_minutes: d::RESEED_AFTER_MINUTES,
            op_timeout_ms: d::OP_TIMEOUT,
            apply_delay_ms: 0,
        }
    }
}
impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            after_attempts: d::ALERT_AFTER_ATTEMPTS,
            after_minutes: d::ALERT_AFTER_MINUTES,
            critical_after_minutes: d::CRITICAL_AFTER_MINUTES,
            no_new_logs_minutes: d::NO_NEW_LOGS_MINUTES,
            backlog_count: d::BACKLOG_COUNT,
            backlog_age_minutes: d::BACKLOG_AGE_MINUTES,
            check_every_ms: d::MONITOR_EVERY,
            min_free_mib: 1024,
        }
    }
}
impl Default for Lease {
    fn default() -> Self {
        Lease {
            lease_ms: d::LEASE,
            renew_every_ms: d::LEASE_RENEW_EVERY,
            max_drift_ppm: d::MAX_DRIFT_PPM,
            fence_time_ms: d::FENCE_TIME,
            heartbeat_every_ms: d::HEARTBEAT_EVERY,
            arbiter_timeout_ms: d::ARBITER_TIMEOUT,
        }
    }
}
impl Default for Failover {
    fn default() -> Self {
        Failover {
            automatic: true,
            probe_every_ms: d::PROBE_EVERY,
            unhealthy_count: d::UNHEALTHY_COUNT,
            unhealthy_for_ms: d::UNHEALTHY_FOR,
            local_restart: false,
            local_restart_wait_ms: d::LOCAL_RESTART_WAIT,
            confirm: false,
            confirm_timeout_ms: d::CONFIRM_TIMEOUT,
            on_confirm_timeout: OnConfirmTimeout::Abort,
            fence_hook: false,
            peer_lost_after_ms: d::PEER_LOST_AFTER,
            switchover_timeout_ms: d::SWITCHOVER_TIMEOUT,
            switch_identity: true,
            hold_down_ms: d::HOLD_DOWN,
        }
    }
}

/// The longest duration a configuration may set (ten years). The engine adds intervals to `now`,
/// sums a few of them and multiplies minutes by 60 000 unchecked; with every duration under this
/// bound none of that can overflow.
pub const MAX_DURATION_MS: Millis = 10 * 365 * 24 * 3_600_000;
/// The same bound for the fields counted in minutes.
pub const MAX_DURATION_MINUTES: u64 = MAX_DURATION_MS / 60_000;

/// A configuration that cannot run, with the field and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: &'static str,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configuration field `{}`: {}", self.field, self.problem)
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    /// Check the values that serde cannot: relations between fields and ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, problem: String| Err(ConfigError { field, problem });
        if self.sites.len() != 2 {
            return err(
                "sites",
                format!(
                    "exactly two sites are supported (primary and recovery location), found {}",
                    self.sites.len()
                ),
            );
        }
        if self.sites[0] == self.sites[1] || self.sites.iter().any(|s| s.is_empty()) {
            return err("sites", "site names must be non-empty and distinct".into());
        }
        if self.site_id(&self.initial_primary).is_none() {
            return err(
                "initial_primary",
                format!(
                    "{:?} is not a site; allowed values: {}",
                    self.initial_primary,
                    self.sites.join(", ")
                ),
            );
        }
        if self.databases.is_empty() {
            return err("databases", "list at least one database".into());
        }
        if u32::try_from(self.databases.len()).is_err() {
            return err("databases", "too many databases".into());
        }
        let mut names: Vec<&String> = self.databases.iter().collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return err("databases", format!("database {:?} is listed twice", w[0]));
        }
        if let Some(bad) = self
            .databases
            .iter()
            .find(|n| n.is_empty() || n.contains('/'))
        {
            return err(
                "databases",
                format!("database name {bad:?} must be non-empty and contain no '/'"),
            );
        }
        for (field, v) in [
            ("schedule.log_every_ms", self.schedule.log_every_ms),
            ("schedule.full_every_ms", self.schedule.full_every_ms),
            (
                "schedule.incremental_every_ms",
                self.schedule.incremental_every_ms,
            ),
            ("shipping.ack_timeout_ms", self.shipping.ack_timeout_ms),
            ("shipping.retry_base_ms", self.shipping.retry_base_ms),
            ("restore.op_timeout_ms", self.restore.op_timeout_ms),
            ("alerts.check_every_ms", self.alerts.check_every_ms),
            ("lease.lease_ms", self.lease.lease_ms),
            ("lease.renew_every_ms", self.lease.renew_every_ms),
            ("lease.heartbeat_every_ms", self.lease.heartbeat_every_ms),
            ("lease.arbiter_timeout_ms", self.lease.arbiter_timeout_ms),
            ("failover.probe_every_ms", self.failover.probe_every_ms),
        ] {
            if v == 0 {
                return err(field, "must be greater than 0".into());
            }
        }
        // Upper bounds first: the checks below add durations, so must the engine.
        for (field, v) in [
            ("schedule.full_every_ms", self.schedule.full_every_ms),
            (
                "schedule.incremental_every_ms",
                self.schedule.incremental_every_ms,
            ),
            ("schedule.log_every_ms", self.schedule.log_every_ms),
            ("shipping.ack_timeout_ms", self.shipping.ack_timeout_ms),
            ("shipping.retry_base_ms", self.shipping.retry_base_ms),
            ("shipping.retry_max_ms", self.shipping.retry_max_ms),
            ("restore.retry_delay_ms", self.restore.retry_delay_ms),
            ("restore.op_timeout_ms", self.restore.op_timeout_ms),
            ("restore.apply_delay_ms", self.restore.apply_delay_ms),
            ("alerts.check_every_ms", self.alerts.check_every_ms),
            ("lease.lease_ms", self.lease.lease_ms),
            ("lease.renew_every_ms", self.lease.renew_every_ms),
            ("lease.fence_time_ms", self.lease.fence_time_ms),
            ("lease.heartbeat_every_ms", self.lease.heartbeat_every_ms),
            ("lease.arbiter_timeout_ms", self.lease.arbiter_timeout_ms),
            ("failover.probe_every_ms", self.failover.probe_every_ms),
            ("failover.unhealthy_for_ms", self.failover.unhealthy_for_ms),
            (
                "failover.local_restart_wait_ms",
                self.failover.local_restart_wait_ms,
            ),
            (
                "failover.confirm_timeout_ms",
                self.failover.confirm_timeout_ms,
            ),
            (
                "failover.peer_lost_after_ms",
                self.failover.peer_lost_after_ms,
            ),
            ("failover.hold_down_ms", self.failover.hold_down_ms),
            (
                "failover.switchover_timeout_ms",
                self.failover.switchover_timeout_ms,
            ),
        ] {
            if v > MAX_DURATION_MS {
                return err(
                    field,
                    format!("{v} ms is longer than ten years ({MAX_DURATION_MS} ms), the most it can be"),
                );
            }
        }
        for (field, v) in [
            (
                "restore.reseed_after_minutes",
                self.restore.reseed_after_minutes,
            ),
            ("alerts.after_minutes", self.alerts.after_minutes),
            (
                "alerts.critical_after_minutes",
                self.alerts.critical_after_minutes,
            ),
            (
                "alerts.no_new_logs_minutes",
                self.alerts.no_new_logs_minutes,
            ),
            (
                "alerts.backlog_age_minutes",
                self.alerts.backlog_age_minutes,
            ),
        ] {
            if v > MAX_DURATION_MINUTES {
                return err(
                    field,
                    format!(
                        "{v} minutes is longer than ten years ({MAX_DURATION_MINUTES} minutes), \
                         the most it can be"
                    ),
                );
            }
        }
        if self.shipping.max_in_flight == 0 {
            return err("shipping.max_in_flight", "must be at least 1".into());
        }
        if self.restore.parallelism == 0 {
            return err("restore.parallelism", "must be at least 1".into());
        }
        if self.restore.max_attempts == 0 {
            return err("restore.max_attempts", "must be at least 1".into());
        }
        if self.alerts.after_attempts == 0 {
            return err("alerts.after_attempts", "must be at least 1".into());
        }
        if self.lease.max_drift_ppm >= 500_000 {
            return err("lease.max_drift_ppm", "must be under 500000 (50%)".into());
        }
        if self.fence_margin() + self.lease.renew_every_ms >= self.lease.lease_ms {
            return err(
                "lease.lease_ms",
                format!(
                    "a lease of {} ms leaves no time to renew: it must exceed renew_every_ms ({}) + \
                     drift margin ({}) + fence_time_ms ({})",
                    self.lease.lease_ms,
                    self.lease.renew_every_ms,
                    self.drift_margin(),
                    self.lease.fence_time_ms
                ),
            );
        }
        Ok(())
    }

    pub fn site_id(&self, name: &str) -> Option<SiteId> {
        self.sites
            .iter()
            .position(|s| s == name)
            .map(|i| SiteId(i as u16))
    }
    pub fn site_name(&self, id: SiteId) -> &str {
        self.sites
            .get(usize::from(id.0))
            .map(String::as_str)
            .unwrap_or("?")
    }
    pub fn db_name(&self, id: DbId) -> &str {
        self.databases
            .get(id.0 as usize)
            .map(String::as_str)
            .unwrap_or("?")
    }
    pub fn db_id(&self, name: &str) -> Option<DbId> {
        self.databases
            .iter()
            .position(|s| s == name)
            .map(|i| DbId(i as u32))
    }
    pub fn db_count(&self) -> u32 {
        self.databases.len() as u32
    }
    pub fn initial_primary_id(&self) -> SiteId {
        self.site_id(&self.initial_primary).unwrap_or(SiteId(0))
    }
    /// Whether a planted bug is active (always false without the `planted-bugs` feature).
    #[allow(unused_variables)]
    pub fn planted(&self, bug: &str) -> bool {
        #[cfg(feature = "planted-bugs")]
        let on = self.planted_bug.is_some_and(|b| planted_name(b) == bug);
        #[cfg(not(feature = "planted-bugs"))]
        let on = false;
        on
    }

    /// The drift allowance over one lease: drift bound × lease length.
    pub fn drift_margin(&self) -> Millis {
        self.lease.lease_ms.saturating_mul(self.lease.max_drift_ppm) / 1_000_000
    }
    /// How long before its lease expiry (by its own clock) a primary must start fencing.
    pub fn fence_margin(&self) -> Millis {
        self.drift_margin() + self.lease.fence_time_ms
    }
}

#[cfg(feature = "planted-bugs")]
fn planted_name(b: crate::planted::PlantedBug) -> &'static str {
    use crate::planted::PlantedBug as P;
    match b {
        P::SkipSelfFence => "skip_self_fence",
        P::RestoreUnverified => "restore_unverified",
        P::IgnoreDriftMargin => "ignore_drift_margin",
        P::AcceptStaleEpoch => "accept_stale_epoch",
        P::ForgetRetryCount => "forget_retry_count",
        P::DeltaPositions => "delta_positions",
        P::DrainIgnoresRetries => "drain_ignores_retries",
        P::HandoffToUnheardTarget => "handoff_to_unheard_target",
        P::ArchiveKeepsWindowOnly => "archive_keeps_window_only",
        P::PresumedHolderGranted => "presumed_holder_granted",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_configuration_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = toml::from_str::<Config>("databses = [\"a\"]");
        assert!(e.is_err());
    }

    /// Found by the `site_config` fuzz target: `fence_time_ms = 18446744073709551615` overflowed
    /// in `validate` itself (`fence_margin() + renew_every_ms`), and a huge
    /// `critical_after_minutes` passed and overflowed `minutes * MINUTE` in the engine.
    #[test]
    fn durations_beyond_ten_years_are_rejected_before_they_can_overflow() {
        let mut c = Config::default();
        c.lease.fence_time_ms = u64::MAX;
        assert_eq!(c.validate().unwrap_err().field, "lease.fence_time_ms");
        let mut c = Config::default();
        c.alerts.critical_after_minutes = u64::MAX / 1000;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "alerts.critical_after_minutes", "{e}");
        let mut c = Config::default();
        c.failover.switchover_timeout_ms = MAX_DURATION_MS;
        c.validate().unwrap();
    }

    #[test]
    fn a_lease_too_short_to_renew_is_rejected_with_the_field() {
        let mut c = Config::default();
        c.lease.lease_ms = 2_500;
        assert_eq!(c.validate().unwrap_err().field, "lease.lease_ms");
    }
}
