//! Every committed input runs under `cargo test`: the seed corpus of each target
//! (`fuzz/seeds/<target>/`) and the reproducers of every crash the fuzzers found
//! (`fuzz/regressions/<target>/`, kept after the fix so the bug stays fixed).

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn run_dir(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind);
    let mut ran = 0;
    for entry in files_or_dirs(&root) {
        let target = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let body = lifeboat_fuzz_targets::target(target).unwrap_or_else(|| {
            panic!(
                "{} is not named after a fuzz target; rename it to one of {:?}",
                entry.display(),
                lifeboat_fuzz_targets::TARGETS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
            )
        });
        for file in files(&entry) {
            let data = std::fs::read(&file).expect("committed input is readable");
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(
                outcome.is_ok(),
                "fuzz target {target} fails on {}; replay with `cargo run -p \
                 lifeboat-fuzz-targets --example replay -- {target} {}`",
                file.display(),
                file.display()
            );
            ran += 1;
        }
    }
    ran
}

fn files_or_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn every_target_has_a_committed_seed_corpus_that_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (name, _) in lifeboat_fuzz_targets::TARGETS {
        assert!(
            !files(&root.join(name)).is_empty(),
            "fuzz/seeds/{name}/ holds no seed input; commit a few small valid inputs"
        );
    }
    let ran = run_dir("seeds");
    eprintln!("{ran} seed inputs ran clean");
}

#[test]
fn committed_crash_reproducers_stay_fixed() {
    let ran = run_dir("regressions");
    eprintln!("{ran} crash reproducers ran clean");
}
