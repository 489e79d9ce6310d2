//! The artifact files an agent keeps: the outbox (what this site produced, until the recovery
//! site acknowledges it), the inbox (what it received, until restored and pruned) and the
//! quarantine (kept aside, never restored). Every change is durable (fsync, rename, fsync dir).

use crate::driver::manifest as dm;
use crate::transport::inbox as ti;
use lifeboat_core::{ArtifactKey, ArtifactMeta, DbId, Lsn};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The three directories under the data dir.
pub struct ArtifactFiles {
    pub outbox: PathBuf,
    pub inbox: PathBuf,
    pub quarantine: PathBuf,
    /// Outbox files by identity (filled by backups and by a scan at start).
    outbox_index: Mutex<HashMap<ArtifactKey, PathBuf>>,
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Read the manifest beside an artifact (the inbox and the outbox share one format).
pub fn read_any_manifest(artifact: &Path) -> Option<ArtifactMeta> {
    ti::read_manifest(&ti::manifest_path(artifact)).ok()
}

impl ArtifactFiles {
    pub fn open(data_dir: &Path) -> io::Result<ArtifactFiles> {
        let f = ArtifactFiles {
            outbox: data_dir.join("outbox"),
            inbox: data_dir.join("inbox"),
            quarantine: data_dir.join("quarantine"),
            outbox_index: Mutex::new(HashMap::new()),
        };
        for d in [&f.outbox, &f.inbox, &f.quarantine] {
            fs::create_dir_all(d)?;
        }
        f.rescan_outbox();
        Ok(f)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<ArtifactKey, PathBuf>> {
        self.outbox_index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Index what the outbox holds (after a restart).
    pub fn rescan_outbox(&self) {
        let mut idx = self.index();
        for (meta, path) in scan(&self.outbox) {
            idx.insert(meta.key, path);
        }
    }

    pub fn remember_outbox(&self, key: ArtifactKey, path: PathBuf) {
        self.index().insert(key, path);
    }

    /// The outbox file of an artifact.
    pub fn outbox_path(&self, key: &ArtifactKey) -> Option<PathBuf> {
        if let Some(p) = self.index().get(key) {
            if p.exists() {
                return Some(p.clone());
            }
        }
        self.rescan_outbox();
        self.index().get(key).cloned()
    }

    /// The inbox file of an artifact: by its name first, else by scanning manifests.
    pub fn inbox_path(&self, meta: &ArtifactMeta, db_name: &str) -> Option<PathBuf> {
        let p = self.inbox.join(ti::artifact_file_name(meta, db_name));
        if p.exists() && read_any_manifest(&p).is_some_and(|m| m.key == meta.key) {
            return Some(p);
        }
        find(&self.inbox, &meta.key)
    }

    /// Remove an artifact's file and manifest from the outbox (acknowledged).
    pub fn discard(&self, key: &ArtifactKey) -> io::Result<()> {
        let path = self.index().remove(key).or_else(|| find(&self.outbox, key));
        if let Some(p) = path {
            remove_pair(&p)?;
        }
        Ok(())
    }

    /// Rename an inbox artifact (and its manifest) to carry its new retry count.
    pub fn relabel(&self, meta: &ArtifactMeta, db_name: &str) -> io::Result<()> {
        let Some(old) = find(&self.inbox, &meta.key) else {
            return Ok(()); // restored and pruned already, or never here
        };
        let new = self.inbox.join(ti::artifact_file_name(meta, db_name));
        if new != old {
            if new.exists() {
                return Err(io::Error::other(format!(
                    "cannot relabel {} to {}: the name is taken",
                    old.display(),
                    new.display()
                )));
            }
            ti::write_manifest(&new, meta, db_name)?;
            fs::rename(&old, &new)?;
            fsync_dir(&self.inbox)?;
            let _ = fs::remove_file(ti::manifest_path(&old));
            fsync_dir(&self.inbox)?;
        } else {
            ti::write_manifest(&new, meta, db_name)?;
        }
        Ok(())
    }

    /// Retention at the secondary: remove the database's inbox artifacts that end before
    /// `before`, except those still pending. Returns how many were removed.
    pub fn prune(&self, db: DbId, before: Lsn, keep: &BTreeSet<ArtifactKey>) -> io::Result<usize> {
        let mut n = 0;
        for (meta, path) in scan(&self.inbox) {
            if meta.key.db == db && meta.key.lsn_end < before && !keep.contains(&meta.key) {
                remove_pair(&path)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Move an artifact (from the inbox or the outbox) into the quarantine, with its reason.
    pub fn quarantine(&self, key: &ArtifactKey, reason: &str) -> io::Result<Option<PathBuf>> {
        let src = find(&self.inbox, key).or_else(|| {
            let p = self.index().remove(key);
            p.or_else(|| find(&self.outbox, key))
        });
        let Some(src) = src else { return Ok(None) };
        let name = src.file_name().unwrap_or_default().to_os_string();
        let mut dst = self.quarantine.join(&name);
        let mut i = 1;
        while dst.exists() {
            let mut n = name.clone();
            n.push(format!(".{i}"));
            dst = self.quarantine.join(n);
            i += 1;
        }
        let msrc = ti::manifest_path(&src);
        let mdst = ti::manifest_path(&dst);
        fs::rename(&src, &dst)?;
        if msrc.exists() {
            fs::rename(&msrc, &mdst)?;
        }
        let mut why = dst.as_os_str().to_owned();
        why.push(".reason");
        fs::write(PathBuf::from(why), format!("{reason}\n"))?;
        fsync_dir(&self.quarantine)?;
        fsync_dir(parent(&src))?;
        Ok(Some(dst))
    }

    /// Bytes held in a directory (status).
    pub fn dir_usage(dir: &Path) -> (usize, u64) {
        let mut n = 0;
        let mut bytes = 0;
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    if m.is_file() {
                        n += 1;
                        bytes += m.len();
                    }
                }
            }
        }
        (n, bytes)
    }
}

/// Every artifact in a directory with a readable manifest (either format).
pub fn scan(dir: &Path) -> Vec<(ArtifactMeta, PathBuf)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".manifest") {
            continue;
        }
        let artifact = dm::artifact_path(&e.path());
        if !artifact.is_file() {
            continue;
        }
        match ti::read_manifest(&ti::manifest_path(&artifact)) {
            Ok(meta) => out.push((meta, artifact)),
            // Never skipped in silence: the artifact it describes is stuck until someone acts.
            Err(e) => tracing::warn!(
                file = %e.path().display(),
                error = %e,
                "unreadable manifest: its artifact is not shipped or restored; move the pair \
                 aside (a primary takes the next backup, a recovery site asks again or reseeds)"
            ),
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

fn find(dir: &Path, key: &ArtifactKey) -> Option<PathBuf> {
    scan(dir)
        .into_iter()
        .find(|(m, _)| m.key == *key)
        .map(|(_, p)| p)
}

fn remove_pair(path: &Path) -> io::Result<()> {
    let m = ti::manifest_path(path);
    // Manifest first: a file without a manifest is an incomplete copy, never a valid artifact.
    match fs::remove_file(&m) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fsync_dir(parent(path))
}

/// The database name in an artifact's seed-convention file name (`?` when it does not parse).
pub fn db_label(artifact: &Path) -> String {
    artifact
        .file_name()
        .and_then(|n| lifeboat_core::name::ArtifactName::parse(&n.to_string_lossy()).ok())
        .map_or_else(|| "?".to_string(), |n| n.db)
}
