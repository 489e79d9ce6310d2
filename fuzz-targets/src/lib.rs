//! Bodies of lifeboat's fuzz targets. Each takes arbitrary bytes and panics only when an
//! invariant is violated. `fuzz/` (cargo-fuzz) calls them for long runs; `tests/bounded.rs`
//! runs each over a deterministic pseudo-random corpus under `cargo test --workspace`.
//!
//! The bytes are decoded by a hand-rolled reader ([`bytes::Bytes`]) rather than `arbitrary`,
//! so this crate depends on nothing but the core.

pub mod bytes;
mod engine_inputs;
mod http_request;
mod journal_decoder;
mod journal_dir;
mod manifests;
mod name_parser;
mod pg_wal;
mod site_config;
mod sqlite_delta;
mod sqlite_wal;
mod wire_frames;

pub use engine_inputs::{engine_inputs, engine_inputs_coverage, engine_inputs_digest, Coverage};
pub use http_request::http_request;
pub use journal_decoder::{
    check_journal, check_site_snapshot, frame_journal, frame_snapshot, journal_decoder,
};
pub use journal_dir::journal_dir;
pub use manifests::manifests;
pub use name_parser::name_parser;
pub use pg_wal::pg_wal;
pub use site_config::site_config;
pub use sqlite_delta::sqlite_delta;
pub use sqlite_wal::sqlite_wal;
pub use wire_frames::wire_frames;

/// A fuzz target's body: panics only when an invariant is violated.
pub type Body = fn(&[u8]);

/// Every target by name, in the order `fuzz/run-all` runs them: the cargo-fuzz harness, the
/// replay example and the regression test all go through this table.
pub const TARGETS: &[(&str, Body)] = &[
    ("name_parser", name_parser),
    ("journal_decoder", journal_decoder),
    ("engine_inputs", engine_inputs),
    ("wire_frames", wire_frames),
    ("http_request", http_request),
    ("manifests", manifests),
    ("journal_dir", journal_dir),
    ("sqlite_delta", sqlite_delta),
    ("sqlite_wal", sqlite_wal),
    ("pg_wal", pg_wal),
    ("site_config", site_config),
];

/// The body of the target called `name`.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
