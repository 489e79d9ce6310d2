//! Bodies of lifeboat's fuzz targets. Each takes arbitrary bytes and panics only when an
//! invariant is violated. `fuzz/` (cargo-fuzz) calls them for long runs; `tests/bounded.rs`
//! runs each over a deterministic pseudo-random corpus under `cargo test --workspace`.
//!
//! The bytes are decoded by a hand-rolled reader ([`bytes::Bytes`]) rather than `arbitrary`,
//! so this crate depends on nothing but the core.

pub mod bytes;
mod engine_inputs;
mod journal_decoder;
mod name_parser;

pub use engine_inputs::{engine_inputs, engine_inputs_coverage, engine_inputs_digest, Coverage};
pub use journal_decoder::{
    check_journal, check_site_snapshot, frame_journal, frame_snapshot, journal_decoder,
};
pub use name_parser::name_parser;
