//! cargo-fuzz target `journal_dir`: see `lifeboat_fuzz_targets::journal_dir` for what it checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lifeboat_fuzz_targets::journal_dir(data));
