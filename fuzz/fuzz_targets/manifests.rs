//! cargo-fuzz target `manifests`: see `lifeboat_fuzz_targets::manifests` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::manifests(data));
