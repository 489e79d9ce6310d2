//! `lifeboat verify <artifact-file>`: check a file against its manifest (size and xxh3-64).
//! Reads both manifest formats: the driver's outbox manifests and the transport's inbox ones.

use super::exit;
use crate::driver::{self, ArtifactFile, ErrorKind, Manifest};
use std::path::Path;

pub fn run(path: &Path) -> i32 {
    match driver::verify_artifact(path) {
        Ok(a) => {
            println!(
                "{}: ok ({} bytes, checksum {})",
                a.describe(),
                a.manifest.size,
                a.manifest.checksum
            );
            exit::OK
        }
        Err(e) if e.kind == ErrorKind::ManifestInvalid => {
            // Perhaps an inbox manifest (transport format).
            let artifact = driver::manifest::artifact_path(path);
            let mpath = crate::transport::inbox::manifest_path(&artifact);
            match crate::transport::inbox::read_manifest(&mpath) {
                Ok(meta) => {
                    let name = crate::agent::files::db_label(&artifact);
                    let file = ArtifactFile {
                        path: artifact,
                        manifest: Manifest::from_meta(&meta, &name),
                    };
                    match driver::check_bytes(&file) {
                        Ok(()) => {
                            println!(
                                "{}: ok ({} bytes, checksum {})",
                                file.describe(),
                                meta.size,
                                meta.checksum
                            );
                            exit::OK
                        }
                        Err(e) => {
                            eprintln!("lifeboat verify: {e}");
                            exit::FAILED
                        }
                    }
                }
                Err(_) => {
                    eprintln!("lifeboat verify: {e}");
                    exit::FAILED
                }
            }
        }
        Err(e) => {
            eprintln!("lifeboat verify: {e}");
            exit::FAILED
        }
    }
}
