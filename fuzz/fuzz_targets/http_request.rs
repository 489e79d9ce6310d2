//! cargo-fuzz target `http_request`: see `lifeboat_fuzz_targets::http_request` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::http_request(data));
