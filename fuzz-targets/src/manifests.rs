//! Fuzz body for the artifact manifest reader, what a copied or received file on disk can hold:
//! `read_manifest` (the one reader, for the outbox, the inbox and restores), `verify_artifact`
//! and `check_bytes` (`drivers::manifest`) and the agent's `read_any_manifest` and `scan`
//! (`agent::files`).
//!
//! Each run writes a manifest and (usually) its artifact into a scratch directory of its own
//! (see [`scratch`]) and calls every reader on them. The first byte picks:
//! - bit 0 clear: the rest is the manifest's bytes, as is, beside a small artifact;
//! - bit 0 set: a valid manifest (the JSON the crate writes, with the artifact's real size and
//!   checksum) built from the bytes, then up to three splices: a field's value replaced by
//!   bytes from the input or by an edge value (out of range, negative, the wrong type), a field
//!   dropped, duplicated or an unknown one added;
//! - bit 1: also a garbage manifest without an artifact, a hidden one and a stray file, for
//!   `scan`;
//! - bit 2: the artifact file is missing.
//!
//! Checked:
//! - nothing panics;
//! - an error of the reader is a typed `ManifestError` that names the manifest's path, and as a
//!   driver error it names the artifact;
//! - a manifest that reads describes a well-formed artifact (`ArtifactMeta::check`), and reads
//!   the same through the artifact's path and the manifest's;
//! - `read_any_manifest` is the reader's result; `verify_artifact` succeeds only when the
//!   artifact exists with the manifest's size and checksum (per `hash_file`);
//! - `scan` lists only artifacts that exist, whose manifests read to the meta it reports.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lifeboat_core::name::ArtifactName;
use lifeboat_core::{ArtifactKey, ArtifactKind, ArtifactMeta, DbId, Epoch, Lsn, UtcMillis};
use lifeboat_io_tokio::agent::files;
use lifeboat_io_tokio::drivers::manifest as dm;

use crate::bytes::Bytes;

/// A directory of this thread's, removed when the thread ends.
struct ScratchRoot(PathBuf);

impl Drop for ScratchRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<ScratchRoot>> = const { RefCell::new(None) };
}

/// An empty directory for one run of `target`: `<temp>/lifeboat-fuzz-<pid>-<n>/<target>`, where
/// `<n>` numbers the threads of this process (the bounded tests run targets in parallel). The
/// root is created once per thread and reused; the target's directory is emptied on every
/// call, so a run never sees the files of the one before.
pub(crate) fn scratch(target: &str) -> PathBuf {
    static THREADS: AtomicUsize = AtomicUsize::new(0);
    let root = SCRATCH.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                let n = THREADS.fetch_add(1, Ordering::Relaxed);
                ScratchRoot(
                    std::env::temp_dir().join(format!("lifeboat-fuzz-{}-{n}", std::process::id())),
                )
            })
            .0
            .clone()
    });
    let dir = root.join(target);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("cannot empty the scratch directory {}: {e}", dir.display()),
    }
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create the scratch directory {}: {e}", dir.display()));
    dir
}

/// Write a file of the run's setup; failing to is the environment's fault, not the target's.
pub(crate) fn put(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

pub fn manifests(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch("manifests");
    let mut r = Bytes::new(rest);
    let artifact_bytes = r.slice(64).to_vec();
    let (name, manifest) = if mode & 1 == 0 {
        let name = if r.bool() {
            "sales_2026_11_22_03_05_00_tlog_0"
        } else {
            "artifact"
        };
        (name.to_string(), r.rest().to_vec())
    } else {
        structured(&mut r, &dir, &artifact_bytes)
    };
    let artifact = dir.join(&name);
    if mode & 4 == 0 {
        put(&artifact, &artifact_bytes);
    } else {
        let _ = fs::remove_file(&artifact);
    }
    let mpath = dm::manifest_path(&artifact);
    put(&mpath, &manifest);
    if mode & 2 != 0 {
        put(&dir.join("stray.manifest"), &manifest[..manifest.len() / 2]);
        put(&dir.join(".hidden.manifest"), &manifest);
        put(&dir.join(".hidden"), &artifact_bytes);
        put(&dir.join("not-a-manifest"), b"{}");
    }
    check(&dir, &artifact, &mpath);
}

fn check(dir: &Path, artifact: &Path, mpath: &Path) {
    let shown = artifact.display().to_string();

    let read = dm::read_manifest(artifact);
    match &read {
        Ok(file) => {
            check_meta(&file.meta());
            assert_eq!(file.path, artifact);
            assert_eq!(file.manifest.format_version, dm::MANIFEST_FORMAT_VERSION);
            // Reading through the manifest's path finds the same artifact.
            assert_eq!(dm::read_manifest(mpath).as_ref().ok(), Some(file));
        }
        Err(e) => {
            assert_eq!(e.path(), mpath, "the error is about another file: {e}");
            assert!(
                e.to_string().contains(&mpath.display().to_string()),
                "the error does not name the manifest: {e}"
            );
        }
    }
    assert_eq!(
        files::read_any_manifest(artifact),
        read.as_ref().ok().map(|f| f.meta()),
        "read_any_manifest is the manifest reader"
    );
    let driver = read.map_err(lifeboat_io_tokio::drivers::DriverError::from);
    if let Err(e) = &driver {
        assert!(
            e.message.contains(&shown),
            "the error does not name the file: {}",
            e.message
        );
    }

    match dm::verify_artifact(artifact) {
        Ok(file) => {
            let on_disk = dm::hash_file(artifact).expect("a verified artifact is readable");
            assert_eq!(
                on_disk,
                (file.manifest.size, file.manifest.checksum),
                "verified an artifact whose bytes differ from its manifest"
            );
        }
        Err(e) => {
            assert!(
                e.message.contains(&shown),
                "the error does not name the file: {}",
                e.message
            );
            if let Ok(file) = &driver {
                assert!(
                    dm::check_bytes(file).is_err(),
                    "verify failed but its byte check passes"
                );
            }
        }
    }

    let found = files::scan(dir);
    for (meta, path) in &found {
        check_meta(meta);
        assert!(
            path.is_file(),
            "scan lists a missing file {}",
            path.display()
        );
        assert_eq!(
            dm::read_manifest(path).ok().map(|f| f.meta()).as_ref(),
            Some(meta)
        );
    }
    assert!(found.len() <= 2, "scan found {} artifacts", found.len());
}

fn check_meta(meta: &ArtifactMeta) {
    if let Err(why) = meta.check() {
        panic!("a manifest that reads describes an invalid artifact ({why}): {meta:?}");
    }
}

/// A JSON string literal of `s`.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The fields of a manifest as the crate writes them (`driver::Manifest`, serde_json, fields in
/// declaration order), each with its JSON value text.
pub(crate) fn manifest_fields(meta: &ArtifactMeta, db: &str) -> Vec<(&'static str, Vec<u8>)> {
    let k = &meta.key;
    let text = |s: String| s.into_bytes();
    vec![
        (
            "format_version",
            text(dm::MANIFEST_FORMAT_VERSION.to_string()),
        ),
        ("db", text(json_string(db))),
        ("db_id", text(k.db.0.to_string())),
        ("kind", text(json_string(k.kind.name_word()))),
        ("epoch", text(k.epoch.0.to_string())),
        ("lsn_start", text(k.lsn_start.0.to_string())),
        ("lsn_end", text(k.lsn_end.0.to_string())),
        (
            "base_full",
            text(meta.base_full.map_or("null".into(), |l| l.0.to_string())),
        ),
        ("created_utc_ms", text(meta.created_utc.0.to_string())),
        ("size", text(meta.size.to_string())),
        (
            "checksum",
            text(json_string(&format!("{:016x}", meta.checksum.0))),
        ),
        ("retry", text(meta.retry.to_string())),
    ]
}

/// `{"field":value,...}`.
pub(crate) fn manifest_json(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(json_string(key).as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    }
    out.push(b'}');
    out
}

/// A database name usable in a file name (the seed convention puts it first).
fn file_safe_db(raw: &[u8]) -> String {
    let mut db: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if db.is_empty() || db.starts_with('.') {
        db.insert(0, 'd');
    }
    db
}

/// A valid manifest of the artifact bytes, then spliced; and the artifact's file name.
fn structured(r: &mut Bytes<'_>, dir: &Path, artifact_bytes: &[u8]) -> (String, Vec<u8>) {
    // Hash the artifact with the crate's own hasher: write it first, the caller rewrites it.
    let probe = dir.join(".probe");
    put(&probe, artifact_bytes);
    let (size, checksum) = dm::hash_file(&probe).expect("a file just written hashes");
    let _ = fs::remove_file(&probe);

    let db = file_safe_db(r.slice(16));
    let kind = [
        ArtifactKind::Full,
        ArtifactKind::Incremental,
        ArtifactKind::Log,
    ][r.below(3)];
    let start = u64::from(r.u16());
    let meta = ArtifactMeta {
        key: ArtifactKey {
            db: DbId(u32::from(r.u8() % 4)),
            epoch: Epoch(u64::from(r.u8())),
            lsn_start: Lsn(start),
            lsn_end: Lsn(start + u64::from(r.u8())),
            kind,
        },
        base_full: (kind == ArtifactKind::Incremental).then_some(Lsn(start / 2)),
        created_utc: UtcMillis(1_795_316_700_000 + i64::from(r.u32())),
        size,
        checksum,
        retry: u32::from(r.u8() % 4),
    };
    // The file name mostly agrees with the manifest; sometimes another database or kind.
    let name_db = if r.chance(24) {
        format!("{db}x")
    } else {
        db.clone()
    };
    let name_kind = if r.chance(24) {
        ArtifactKind::Full
    } else {
        kind
    };
    let name = ArtifactName::new(&name_db, meta.created_utc, name_kind, meta.retry).to_string();

    let mut fields = manifest_fields(&meta, &db);
    for _ in 0..r.below(4) {
        let i = r.below(fields.len());
        match r.below(6) {
            0 => fields[i].1 = r.slice(24).to_vec(),
            1 => {
                const EDGES: [&str; 12] = [
                    "-1",
                    "0",
                    "18446744073709551615",
                    "18446744073709551616",
                    "4294967296",
                    "9223372036854775808",
                    "1e3",
                    "null",
                    "true",
                    "\"x\"",
                    "[]",
                    "{}",
                ];
                fields[i].1 = EDGES[r.below(EDGES.len())].as_bytes().to_vec();
            }
            2 => {
                fields.remove(i);
                if fields.is_empty() {
                    break;
                }
            }
            3 => {
                let dup = fields[i].clone();
                fields.push(dup);
            }
            4 => fields.push(("extra", b"1".to_vec())),
            _ => {
                // A field's value from a different field (a swapped or retyped value).
                let j = r.below(fields.len());
                fields[i].1 = fields[j].1.clone();
            }
        }
    }
    (name, manifest_json(&fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::Checksum;

    #[test]
    fn the_structured_layout_is_the_crate_encoding() {
        let dir = scratch("manifests-layout");
        let artifact = dir.join("sa\"les_2026_11_22_03_05_00_incr_1");
        let meta = ArtifactMeta {
            key: ArtifactKey {
                db: DbId(3),
                epoch: Epoch(2),
                lsn_start: Lsn(100),
                lsn_end: Lsn(250),
                kind: ArtifactKind::Incremental,
            },
            base_full: Some(Lsn(50)),
            created_utc: UtcMillis(-1),
            size: u64::MAX,
            checksum: Checksum(0xabc),
            retry: 1,
        };
        let manifest = lifeboat_io_tokio::drivers::Manifest::from_meta(&meta, "sa\"les\u{1}é");
        dm::write_manifest(&artifact, &manifest).unwrap();
        let written = fs::read(dm::manifest_path(&artifact)).unwrap();
        let ours = manifest_json(&manifest_fields(&meta, "sa\"les\u{1}é"));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&written)
        );
    }
}
