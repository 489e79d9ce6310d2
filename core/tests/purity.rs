//! The core's purity, checked on its source as well as by `core/clippy.toml`: no module of
//! `core/src` names the standard library's file system, network, process, environment or
//! thread modules, so a new call cannot slip past a list of disallowed methods.

// A test reads the source tree; the purity rules are for `core/src`.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;

const FORBIDDEN: [&str; 6] = [
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread",
    "tokio",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_of_the_core_names_io_threads_processes_or_the_environment() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    assert!(files.len() > 10, "core/src not found at {}", root.display());
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in FORBIDDEN {
                if code.contains(bad) {
                    found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the core must stay Sans-IO:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_source_check_sees_a_forbidden_name() {
    // The check above must be able to fail: the same scan over a line that names one.
    let line = "    let t = std::thread::spawn(|| ());";
    let code = line.split("//").next().unwrap_or("");
    assert!(FORBIDDEN.iter().any(|b| code.contains(b)));
}
