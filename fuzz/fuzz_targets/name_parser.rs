//! cargo-fuzz target `name_parser`: see `lifeboat_fuzz_targets::name_parser` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::name_parser(data));
