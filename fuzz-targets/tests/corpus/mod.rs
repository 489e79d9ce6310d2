//! What every bounded corpus test shares: the corpus scale, running one case (saving it on a
//! failure, with the replay command), random bytes and small mutations of valid inputs.

use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `LIFEBOAT_FUZZ_CASES` multiplies the corpus sizes (default 1) for a longer local run.
pub fn scale() -> usize {
    std::env::var("LIFEBOAT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Run `body` on `case`; on a panic, save the case and say how to replay it.
pub fn run_case(target: &str, i: usize, case: &[u8], body: fn(&[u8])) {
    if catch_unwind(AssertUnwindSafe(|| body(case))).is_err() {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{target}-case-{i}.bin"));
        let saved = std::fs::write(&path, case).is_ok();
        panic!(
            "fuzz target {target} failed on case {i} ({} bytes{}); replay with \
             `LIFEBOAT_FUZZ_TRACE=1 cargo run -p lifeboat-fuzz-targets --example replay -- \
             {target} {}`",
            case.len(),
            if saved { ", saved" } else { ", not saved" },
            path.display()
        );
    }
}

pub fn random_bytes(rng: &mut ChaCha8Rng, max: usize) -> Vec<u8> {
    let mut v = vec![0; rng.gen_range(0..=max)];
    rng.fill_bytes(&mut v);
    v
}

/// Flip, overwrite, insert, delete or truncate a few bytes.
pub fn mutate(rng: &mut ChaCha8Rng, mut v: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.gen_range(1..4) {
        let at = rng.gen_range(0..=v.len());
        match rng.gen_range(0..5) {
            0 if at < v.len() => v[at] ^= 1 << rng.gen_range(0..8),
            1 if at < v.len() => v[at] = rng.gen(),
            2 => v.insert(at, rng.gen()),
            3 if at < v.len() => {
                v.remove(at);
            }
            _ => v.truncate(at),
        }
    }
    v
}
