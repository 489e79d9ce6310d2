//! The log filter of a running process: validated, changed for a while, then reverted to the
//! filter it started with (`--log`, `$LIFEBOAT_LOG` or `info`), so a `debug` left on by mistake
//! does not fill a disk for weeks.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tracing_subscriber::EnvFilter;

/// How long a changed filter holds when the operator does not say (`--for`).
pub const DEFAULT_FOR: Duration = Duration::from_secs(10 * 60);
/// The longest a changed filter may hold: a day, then the configured one is back.
pub const MAX_FOR: Duration = Duration::from_secs(24 * 3600);
/// The longest filter accepted.
pub const FILTER_MAX_LEN: usize = 1024;

/// What a valid filter looks like, for every refusal.
const FILTER_HELP: &str = "a filter is a level (error, warn, info, debug, trace, off) or \
comma-separated `target=level` directives, e.g. `debug`, `lifeboat=debug` or \
`info,lifeboat_io_tokio::transport=trace`";

/// A filter that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("invalid log filter {filter:?}: {reason}; {FILTER_HELP}")]
    Invalid { filter: String, reason: String },
    #[error("invalid duration {found:?}: {reason}; write e.g. `90s`, `10m` or `2h` (at most 24h)")]
    Duration { found: String, reason: String },
    #[error(
        "this process's log filter cannot be changed (its logging was not set up by the \
         `lifeboat` binary)"
    )]
    NotInstalled,
    #[error("the log filter could not be changed: {0}")]
    Reload(String),
}

/// Check a filter without applying it.
pub fn validate(filter: &str) -> Result<EnvFilter, FilterError> {
    let invalid = |reason: String| FilterError::Invalid {
        filter: filter.chars().take(100).collect(),
        reason,
    };
    if filter.trim().is_empty() {
        return Err(invalid("it is empty".into()));
    }
    if filter.len() > FILTER_MAX_LEN {
        return Err(invalid(format!("longer than {FILTER_MAX_LEN} bytes")));
    }
    EnvFilter::try_new(filter).map_err(|e| invalid(e.to_string()))
}

/// `90s`, `10m`, `2h` or a bare number of seconds; between one second and [`MAX_FOR`].
pub fn parse_duration(text: &str) -> Result<Duration, FilterError> {
    let bad = |reason: &str| FilterError::Duration {
        found: text.chars().take(40).collect(),
        reason: reason.into(),
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad("no number"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => Some(n),
        "m" | "min" | "mins" => n.checked_mul(60),
        "h" | "hour" | "hours" => n.checked_mul(3600),
        _ => return Err(bad("unknown unit (use s, m or h)")),
    }
    .ok_or_else(|| bad("too long"))?;
    let d = Duration::from_secs(secs);
    if d.is_zero() {
        return Err(bad("zero"));
    }
    if d > MAX_FOR {
        return Err(bad("longer than 24h"));
    }
    Ok(d)
}

/// Applies a filter to the process's subscriber (the reload handle, or a test's recorder).
pub type Apply = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The process's log filter: the configured one, and a temporary one with its end.
pub struct LogFilter {
    configured: String,
    apply: Apply,
    state: Mutex<Temporary>,
}

#[derive(Default)]
struct Temporary {
    /// The filter in force and when it reverts; `None` while the configured one is in force.
    current: Option<(String, SystemTime)>,
    /// Counts changes: a revert scheduled for an older change does nothing.
    generation: u64,
}

/// The filter in force, as the agent answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterState {
    /// In force now.
    pub filter: String,
    /// The filter the process started with; back in force at `reverts_at`.
    pub configured: String,
    /// UTC, ISO 8601; `None` while the configured filter is in force.
    pub reverts_at: Option<String>,
    /// Seconds until then.
    pub reverts_in_s: Option<u64>,
}

impl LogFilter {
    pub fn new(configured: impl Into<String>, apply: Apply) -> Arc<LogFilter> {
        Arc::new(LogFilter {
            configured: configured.into(),
            apply,
            state: Mutex::new(Temporary::default()),
        })
    }

    fn temporary(&self) -> std::sync::MutexGuard<'_, Temporary> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put `filter` in force for `hold` (at most [`MAX_FOR`]), then the configured one again.
    /// The revert is a tokio task: call inside the runtime.
    pub fn set(self: &Arc<Self>, filter: &str, hold: Duration) -> Result<FilterState, FilterError> {
        let parsed = validate(filter)?;
        let hold = hold.clamp(Duration::from_secs(1), MAX_FOR);
        let generation = {
            let mut t = self.temporary();
            (self.apply)(parsed).map_err(FilterError::Reload)?;
            t.generation += 1;
            t.current = Some((filter.to_string(), SystemTime::now() + hold));
            t.generation
        };
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            me.revert(generation);
        });
        tracing::warn!(filter, for_s = hold.as_secs(), configured = %self.configured, "log filter changed by an operator");
        Ok(self.state())
    }

    /// Back to the configured filter, unless the filter changed again since `generation`.
    fn revert(&self, generation: u64) {
        let mut t = self.temporary();
        if t.generation != generation || t.current.is_none() {
            return;
        }
        // The configured filter was valid at start (or replaced by `info` then).
        let configured = validate(&self.configured).unwrap_or_else(|_| EnvFilter::new("info"));
        match (self.apply)(configured) {
            Ok(()) => t.current = None,
            Err(e) => tracing::error!(error = %e, "the log filter could not be reverted"),
        }
        drop(t);
        tracing::info!(filter = %self.configured, "log filter reverted to the configured one");
    }

    pub fn state(&self) -> FilterState {
        let t = self.temporary();
        let now = SystemTime::now();
        match &t.current {
            None => FilterState {
                filter: self.configured.clone(),
                configured: self.configured.clone(),
                reverts_at: None,
                reverts_in_s: None,
            },
            Some((filter, until)) => FilterState {
                filter: filter.clone(),
                configured: self.configured.clone(),
                reverts_at: Some(utc(*until)),
                reverts_in_s: Some(until.duration_since(now).unwrap_or_default().as_secs()),
            },
        }
    }
}

fn utc(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    lifeboat_core::utc::UtcDateTime::from_millis(lifeboat_core::UtcMillis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_naming_it_and_what_a_valid_one_looks_like() {
        for bad in ["lifeboat=loud", "", "   ", "a=b=c=debug", &"x".repeat(2000)] {
            let err = validate(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid log filter"), "{bad:?}: {err}");
            assert!(err.contains("lifeboat=debug"), "{err}");
        }
        let err = validate("lifeboat=loud").unwrap_err().to_string();
        assert!(err.contains("\"lifeboat=loud\""), "{err}");
        for good in [
            "debug",
            "lifeboat=debug",
            "info,lifeboat_io_tokio::transport=trace",
            "off",
        ] {
            assert!(validate(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn durations_read_as_operators_write_them_and_stay_within_a_day() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in [
            "",
            "m",
            "0s",
            "25h",
            "10 fortnights",
            "99999999999999999999h",
            "-5m",
        ] {
            let err = parse_duration(bad).unwrap_err().to_string();
            assert!(err.contains("e.g. `90s`"), "{bad:?}: {err}");
        }
    }

    fn recorder() -> (Arc<LogFilter>, Arc<Mutex<Vec<String>>>) {
        let applied = Arc::new(Mutex::new(Vec::new()));
        let seen = applied.clone();
        let f = LogFilter::new(
            "info",
            Box::new(move |f: EnvFilter| {
                seen.lock().unwrap().push(f.to_string());
                Ok(())
            }),
        );
        (f, applied)
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_filter_reverts_to_the_configured_one_when_its_time_is_up() {
        let (f, applied) = recorder();
        let state = f.set("lifeboat=debug", Duration::from_secs(600)).unwrap();
        assert_eq!(state.filter, "lifeboat=debug");
        assert_eq!(state.configured, "info");
        assert!(state.reverts_at.is_some());
        assert!(matches!(state.reverts_in_s, Some(599 | 600)));
        tokio::time::sleep(Duration::from_secs(599)).await;
        assert_eq!(f.state().filter, "lifeboat=debug");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(f.state().filter, "info");
        assert_eq!(f.state().reverts_at, None);
        assert_eq!(*applied.lock().unwrap(), vec!["lifeboat=debug", "info"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_change_is_not_reverted_by_the_older_changes_timer() {
        let (f, applied) = recorder();
        f.set("debug", Duration::from_secs(60)).unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        f.set("trace", Duration::from_secs(600)).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(f.state().filter, "trace");
        assert_eq!(applied.lock().unwrap().len(), 2);
        let refused = f.set("lifeboat=loud", Duration::from_secs(60));
        assert!(matches!(refused, Err(FilterError::Invalid { .. })));
        assert_eq!(f.state().filter, "trace");
    }
}
