//! `lifeboat verify <artifact-file>`: check a file against its manifest (size and xxh3-64).
//! Outbox, inbox and quarantine share one manifest format, so any artifact file can be checked.

use super::exit;
use crate::drivers;
use std::path::Path;

pub fn run(path: &Path) -> i32 {
    match drivers::verify_artifact(path) {
        Ok(a) => {
            println!(
                "{}: ok ({} bytes, checksum {})",
                a.describe(),
                a.manifest.size,
                a.manifest.checksum
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("lifeboat verify: {e}");
            exit::FAILED
        }
    }
}
