//! cargo-fuzz target `wire_frames`: see `lifeboat_fuzz_targets::wire_frames` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::wire_frames(data));
