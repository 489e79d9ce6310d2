//! # lifeboat-core
//!
//! The deterministic, Sans-IO engines of lifeboat. Every engine has one shape:
//!
//! ```text
//! engine.handle(now, input);                  // never blocks, never does I/O, never panics
//! while let Some(out) = engine.poll_output() { /* execute commands, send messages, alert */ }
//! engine.poll_timeout()                       // when to call handle(now, Input::Tick)
//! ```
//!
//! Time comes only as `now: Millis`; wall-clock UTC only as data inside inputs. The same inputs
//! give the same outputs, byte for byte.

#![forbid(unsafe_code)]

pub mod alert;
pub mod arbiter;
pub mod archive;
pub mod artifact;
pub mod audit;
pub mod config;
pub mod defaults;
pub mod engine;
pub mod etcd;
pub mod ids;
pub mod journal;
pub mod name;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod protocol;
pub mod report;
pub mod utc;

pub use alert::{AlertEvent, AlertId, AlertKind, Severity, Subject};
pub use artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
pub use config::Config;
pub use ids::{Checksum, DbId, Epoch, Lsn, Millis, OpId, SiteId, UtcMillis, MINUTE};
pub use protocol::{Command, Failure, Input, Message, OperatorRequest, Output, Peer, ProbeTarget};
