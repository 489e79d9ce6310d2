//! cargo-fuzz target `sqlite_delta`: see `lifeboat_fuzz_targets::sqlite_delta` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::sqlite_delta(data));
