//! The production adapter: it turns the world into engine inputs and executes engine outputs.
//!
//! ```text
//! agent/         the site agent: engine loop, command executor, probes, alert sinks, files
//! arbiter/       the arbiter process
//! journal_store  the engine journal and snapshots on disk; the engines' monotonic clock
//! durable        durable files: temporary name, fsync, rename, directory fsync
//! ports          free loopback ports, outside the ephemeral range, for processes started later
//! process/       commands and hooks: validated templates, process groups, time limits
//! config/        site.toml and arbiter.toml
//! crash          named crash points for the end-to-end tests (`LIFEBOAT_CRASH_AT`)
//! status/, http  /status, /metrics, /health, operator requests; a minimal HTTP/1.1
//! cli/           operator commands and the status table
//! demo           `lifeboat demo`
//! drivers/       databases: sqlite/, script (one command per operation), postgres/ (WAL
//!                archiving, base backups, standby, drills)
//! transport/     frames, links, artifact shipping, path pings
//! troubleshoot/  remote troubleshooting: log ring, log filter changes, probes now, path pings
//! ```

pub mod agent;
pub mod arbiter;
pub mod archive;
pub mod certs;
pub mod cli;
pub mod config;
pub mod crash;
pub mod datadir;
pub mod demo;
pub mod drivers;
pub mod durable;
pub mod engine_loop;
pub mod http;
pub mod journal_store;
pub mod ports;
pub mod process;
pub mod record;
pub mod status;
pub mod stop;
pub mod transport;
pub mod troubleshoot;
pub mod witness;
