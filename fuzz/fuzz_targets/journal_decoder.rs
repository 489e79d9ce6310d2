//! cargo-fuzz target `journal_decoder`: see `lifeboat_fuzz_targets::journal_decoder` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::journal_decoder(data));
