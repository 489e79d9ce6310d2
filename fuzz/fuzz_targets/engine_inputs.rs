//! cargo-fuzz target `engine_inputs`: see `lifeboat_fuzz_targets::engine_inputs` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::engine_inputs(data));
