//! The point-in-time archive on disk: `<dir>/<database>/<artifact>` with its manifest beside it,
//! the same pair format as the inbox. The core decides what enters (`Command::Archive`) and
//! what leaves (`Command::ArchiveRemove`); this module executes, and serves `archive list` and
//! `restore --at`, which read the directory without a running agent.
//!
//! An artifact enters by a hard link of the inbox file when the archive is on the inbox's file
//! system (inbox files are never written after they are received, so the link is a copy that
//! costs nothing), else by a copy that is hashed as it is written and compared with the
//! manifest. Either way the file, then its manifest, then the directory are fsynced before the
//! core hears `Archived`. Crash points: a pair without its manifest is not an archived artifact
//! (scans skip it; the core issues the copy again and it replaces the leftover).

use crate::agent::files as af;
use crate::drivers::manifest as dm;
use crate::durable;
use crate::transport::inbox as ti;
use lifeboat_core::{ArtifactKey, ArtifactMeta, Checksum};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// An archive directory.
#[derive(Clone, Debug)]
pub struct Archive {
    pub root: PathBuf,
    /// Copy (hashed and compared) even where a hard link would do: the cost of an archive on
    /// its own disk, measured by the ship bench.
    pub force_copy: bool,
}

impl Archive {
    pub fn new(root: impl Into<PathBuf>) -> Archive {
        Archive {
            root: root.into(),
            force_copy: false,
        }
    }

    /// The directory of one database.
    pub fn db_dir(&self, db_name: &str) -> PathBuf {
        self.root.join(db_name)
    }

    /// Put the inbox artifact `src` (with its manifest beside it) into the archive, durably.
    /// Idempotent: an artifact already archived with this identity is left as it is.
    pub fn put(&self, src: &Path, meta: &ArtifactMeta, db_name: &str) -> io::Result<PathBuf> {
        let dir = self.db_dir(db_name);
        fs::create_dir_all(&dir)
            .map_err(|e| with_path(e, "creating the archive directory", &dir))?;
        let dst = ti::free_artifact_path(&dir, db_name, meta)?;
        let dst_manifest = dm::manifest_path(&dst);
        if af::read_any_manifest(&dst).is_some_and(|m| m.key == meta.key) && dst.is_file() {
            return Ok(dst);
        }
        for p in [&dst, &dst_manifest] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(with_path(e, "removing a leftover", p)),
            }
        }
        let src_manifest = dm::manifest_path(src);
        let linked = if self.force_copy {
            Err(io::Error::from_raw_os_error(18))
        } else {
            fs::hard_link(src, &dst)
        };
        match linked {
            // The inbox fsynced these very bytes before the core accepted them: the link only
            // needs its directory entry made durable (below).
            Ok(()) => {}
            // The copy is fsynced before its rename.
            Err(e) if linkable_error(&e) => copy_verified(src, &dst, meta)?,
            Err(e) => return Err(with_path(e, "linking into the archive", &dst)),
        }
        // The manifest goes last: an artifact is archived once its manifest is there.
        let manifest = fs::read(&src_manifest)
            .map_err(|e| with_path(e, "reading the manifest", &src_manifest))?;
        durable::write_file_synced(&dst_manifest, &manifest)
            .map_err(|e| with_path(e, "writing the manifest", &dst_manifest))?;
        durable::sync_dir(&dir).map_err(|e| with_path(e, "syncing the directory", &dir))?;
        Ok(dst)
    }

    /// Remove these artifacts of one database (manifest first: a pair without its manifest is
    /// not archived). Returns how many were removed; an artifact that is not there is skipped.
    pub fn remove(&self, db_name: &str, keys: &BTreeSet<ArtifactKey>) -> io::Result<usize> {
        let dir = self.db_dir(db_name);
        let mut n = 0;
        for (meta, path) in af::scan(&dir) {
            if !keys.contains(&meta.key) {
                continue;
            }
            for p in [dm::manifest_path(&path), path.clone()] {
                match fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(with_path(e, "removing", &p)),
                }
            }
            n += 1;
        }
        if n > 0 {
            durable::sync_dir(&dir).map_err(|e| with_path(e, "syncing the directory", &dir))?;
        }
        Ok(n)
    }

    /// Every archived artifact of one database, with its file.
    pub fn scan(&self, db_name: &str) -> Vec<(ArtifactMeta, PathBuf)> {
        af::scan(&self.db_dir(db_name))
    }

    /// Files and bytes under the archive.
    pub fn usage(&self) -> (usize, u64) {
        let mut total = (0, 0);
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                let (n, b) = af::ArtifactFiles::dir_usage(&e.path());
                total = (total.0 + n, total.1 + b);
            }
        }
        total
    }
}

/// A hard link is impossible across file systems (and on some that do not support it): copy.
fn linkable_error(e: &io::Error) -> bool {
    // EXDEV (another file system), EPERM and EOPNOTSUPP (no hard links there).
    matches!(e.raw_os_error(), Some(18 | 1 | 95))
}

/// Copy `src` to `dst`, hashing what is written, and compare with the manifest's checksum.
fn copy_verified(src: &Path, dst: &Path, meta: &ArtifactMeta) -> io::Result<()> {
    let mut from = File::open(src).map_err(|e| with_path(e, "opening", src))?;
    let tmp = durable::temp_beside(dst, "archive");
    let result = (|| {
        let mut to = File::create(&tmp)?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            to.write_all(&buf[..n])?;
        }
        to.sync_all()?;
        let got = Checksum(hasher.digest());
        if got != meta.checksum {
            return Err(io::Error::other(format!(
                "the copy's checksum {got} is not the manifest's {}",
                meta.checksum
            )));
        }
        fs::rename(&tmp, dst)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| with_path(e, "copying into the archive", dst))
}

fn with_path(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::{ArtifactKind, DbId, Epoch, Lsn, UtcMillis};

    fn meta(bytes: &[u8], a: u64, b: u64) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(0),
                epoch: Epoch(1),
                lsn_start: Lsn(a),
                lsn_end: Lsn(b),
                kind: if a == b {
                    ArtifactKind::Full
                } else {
                    ArtifactKind::Log
                },
            },
            base_full: None,
            created_utc: UtcMillis(1_795_392_000_000 + a as i64),
            size: bytes.len() as u64,
            checksum: Checksum(xxhash_rust::xxh3::xxh3_64(bytes)),
            retry: 0,
        }
    }

    fn inbox_pair(dir: &Path, m: &ArtifactMeta, bytes: &[u8]) -> PathBuf {
        let p = dir.join(ti::artifact_file_name(m, "app"));
        fs::write(&p, bytes).unwrap();
        dm::write_manifest(&p, &dm::Manifest::from_meta(m, "app")).unwrap();
        p
    }

    #[test]
    fn put_is_idempotent_scan_finds_it_and_remove_takes_it_out() {
        let t = tempfile::tempdir().unwrap();
        let inbox = t.path().join("inbox");
        fs::create_dir_all(&inbox).unwrap();
        let a = Archive::new(t.path().join("archive"));
        let m = meta(b"full bytes", 10, 10);
        let src = inbox_pair(&inbox, &m, b"full bytes");
        let p1 = a.put(&src, &m, "app").unwrap();
        let p2 = a.put(&src, &m, "app").unwrap();
        assert_eq!(p1, p2);
        assert_eq!(fs::read(&p1).unwrap(), b"full bytes");
        let found = a.scan("app");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.key, m.key);
        // The inbox copy may go; the archived one stays.
        fs::remove_file(&src).unwrap();
        assert_eq!(fs::read(&p1).unwrap(), b"full bytes");
        let keys: BTreeSet<ArtifactKey> = [m.key].into_iter().collect();
        assert_eq!(a.remove("app", &keys).unwrap(), 1);
        assert!(a.scan("app").is_empty());
        assert_eq!(a.remove("app", &keys).unwrap(), 0);
    }

    #[test]
    fn a_copy_that_does_not_match_its_manifest_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::write(&src, b"what arrived").unwrap();
        let m = meta(b"something else", 1, 2);
        let e = copy_verified(&src, &t.path().join("dst"), &m).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert!(!t.path().join("dst").exists());
    }
}
