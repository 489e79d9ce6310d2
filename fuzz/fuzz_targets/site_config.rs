//! cargo-fuzz target `site_config`: see `lifeboat_fuzz_targets::site_config` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::site_config(data));
