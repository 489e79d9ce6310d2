//! The process's logging: stderr (human or JSON) and the in-memory ring, behind one filter that
//! an operator can change while the process runs (`lifeboat log-level`).
//!
//! ```text
//! registry ─ reload(EnvFilter) ─┬─ fmt to stderr
//!                               └─ RingLayer (last lines, for `lifeboat logs`)
//! ```
//!
//! The subscriber is global to the process, so the handles to it are too: [`init`] installs
//! them once, [`installed`] finds them (the agent's HTTP requests).

use super::filter::LogFilter;
use super::ring::{LogRing, RingLayer, RING_BYTES, RING_LINES};
use std::sync::{Arc, OnceLock};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The ring and the filter of this process's logging.
pub struct Logging {
    pub ring: Arc<LogRing>,
    pub filter: Arc<LogFilter>,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();

/// The logging [`init`] set up, if it did (not in library tests).
pub fn installed() -> Option<&'static Logging> {
    LOGGING.get()
}

/// Log to stderr through `filter` (an invalid one is reported and `info` used) and keep the last
/// lines in the ring. Once per process; a second call changes nothing.
pub fn init(json: bool, filter: &str) {
    let (parsed, configured) = match super::filter::validate(filter) {
        Ok(f) => (f, filter.to_string()),
        Err(e) => {
            eprintln!("lifeboat: {e}; logging at `info` instead");
            (EnvFilter::new("info"), "info".to_string())
        }
    };
    let (filter_layer, handle) = reload::Layer::<EnvFilter, Registry>::new(parsed);
    let ring = Arc::new(LogRing::new(RING_LINES, RING_BYTES));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let base = tracing_subscriber::registry()
        .with(filter_layer)
        .with(RingLayer(ring.clone()));
    let started = if json {
        base.with(stderr.json()).try_init()
    } else {
        base.with(stderr).try_init()
    };
    if started.is_err() {
        return;
    }
    let filter = LogFilter::new(
        configured,
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string())),
    );
    let _ = LOGGING.set(Logging { ring, filter });
}
