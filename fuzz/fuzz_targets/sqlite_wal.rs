//! cargo-fuzz target `sqlite_wal`: see `lifeboat_fuzz_targets::sqlite_wal` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::sqlite_wal(data));
