//! The artifact files an agent keeps: the outbox (what this site produced, until the recovery
//! site acknowledges it), the inbox (what it received, until restored and pruned) and the
//! quarantine (kept aside, never restored). Every change is durable (fsync, rename, fsync dir).

use crate::drivers::manifest as dm;
use crate::transport::inbox as ti;
use lifeboat_core::{ArtifactKey, ArtifactMeta, DbId, Lsn};
use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// An artifact whose manifest could not be read, moved with its manifest into the quarantine
/// by a scan. Reported once: after the move a scan no longer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// Found in the outbox (else the inbox).
    pub outbox: bool,
    /// The artifact's file name.
    pub file: String,
    /// Why the manifest cannot be read.
    pub reason: String,
    /// The identity the outbox index still knew for the file, if any.
    pub key: Option<ArtifactKey>,
    /// Where the artifact is now.
    pub moved_to: PathBuf,
}

impl Unreadable {
    /// The database named by the artifact's seed-convention file name, if any.
    pub fn db_name(&self) -> Option<String> {
        lifeboat_core::name::ArtifactName::parse(&self.file)
            .ok()
            .map(|n| n.db)
    }
}

/// The three directories under the data dir.
pub struct ArtifactFiles {
    pub outbox: PathBuf,
    pub inbox: PathBuf,
    pub quarantine: PathBuf,
    /// Outbox files by identity (filled by backups and by a scan at start).
    outbox_index: Mutex<HashMap<ArtifactKey, PathBuf>>,
    /// Held while a scan moves unreadable pairs aside: two scans at once report a file once.
    sweeping: Mutex<()>,
    /// Unreadable pairs moved aside, for the engine (see [`ArtifactFiles::take_reports`]).
    reports: mpsc::UnboundedSender<Unreadable>,
    reports_rx: Mutex<Option<mpsc::UnboundedReceiver<Unreadable>>>,
}

use crate::durable::{parent_dir as parent, sync_dir as fsync_dir};

/// Read the manifest beside an artifact (the inbox and the outbox share one format).
pub fn read_any_manifest(artifact: &Path) -> Option<ArtifactMeta> {
    dm::read_manifest(artifact).ok().map(|f| f.meta())
}

impl ArtifactFiles {
    pub fn open(data_dir: &Path) -> io::Result<ArtifactFiles> {
        let (reports, rx) = mpsc::unbounded_channel();
        let f = ArtifactFiles {
            outbox: data_dir.join("outbox"),
            inbox: data_dir.join("inbox"),
            quarantine: data_dir.join("quarantine"),
            outbox_index: Mutex::new(HashMap::new()),
            sweeping: Mutex::new(()),
            reports,
            reports_rx: Mutex::new(Some(rx)),
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
        let found = self.scan(true);
        let mut idx = self.index();
        for (meta, path) in found {
            idx.insert(meta.key, path);
        }
    }

    /// Every artifact with a readable manifest in the outbox (`outbox`) or the inbox, sorted by
    /// path. An artifact whose manifest cannot be read is moved with it into the quarantine
    /// and reported to the engine (see [`ArtifactFiles::take_reports`]): left in place it would
    /// never be shipped or restored, and nothing would say so but a log line.
    pub fn scan(&self, outbox: bool) -> Vec<(ArtifactMeta, PathBuf)> {
        let dir = if outbox { &self.outbox } else { &self.inbox };
        let (found, unreadable) = scan_checked(dir);
        if unreadable.is_empty() {
            return found;
        }
        let _one_at_a_time = self.sweeping.lock().unwrap_or_else(|e| e.into_inner());
        for (artifact, error) in unreadable {
            // Looked at again under the lock: another scan may have moved it meanwhile, or it
            // was rewritten; and a manifest that vanished is a removal, not damage.
            let reason = match dm::read_manifest(&artifact) {
                Err(e) if artifact.is_file() && e.damaged() => e.to_string(),
                _ => continue,
            };
            let key = {
                let mut idx = self.index();
                let key = idx.iter().find(|(_, p)| **p == artifact).map(|(k, _)| *k);
                if let Some(k) = &key {
                    idx.remove(k);
                }
                key
            };
            let why = format!("unreadable manifest: {reason}");
            match self.move_to_quarantine(&artifact, &why) {
                Ok(moved_to) => {
                    tracing::warn!(
                        file = %artifact.display(),
                        quarantined = %moved_to.display(),
                        error = %error,
                        "unreadable manifest: the artifact and its manifest were moved to the \
                         quarantine; the engine is told (a primary takes a new full backup)"
                    );
                    let _ = self.reports.send(Unreadable {
                        outbox,
                        file: artifact
                            .file_name()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        reason,
                        key,
                        moved_to,
                    });
                }
                Err(e) => tracing::warn!(
                    file = %artifact.display(),
                    error = %e,
                    manifest_error = %error,
                    "unreadable manifest: moving the pair to the quarantine failed; it is not \
                     shipped or restored until it is moved aside"
                ),
            }
        }
        found
    }

    /// Scan both directories (at start): unreadable pairs are moved aside and reported.
    pub fn sweep(&self) {
        self.scan(true);
        self.scan(false);
    }

    /// The receiving end of the reports of unreadable manifests (taken once, by the agent).
    /// Reports made before it is taken wait in it.
    pub fn take_reports(&self) -> Option<mpsc::UnboundedReceiver<Unreadable>> {
        self.reports_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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
        self.find(false, &meta.key)
    }

    fn find(&self, outbox: bool, key: &ArtifactKey) -> Option<PathBuf> {
        self.scan(outbox)
            .into_iter()
            .find(|(m, _)| m.key == *key)
            .map(|(_, p)| p)
    }

    /// Remove an artifact's file and manifest from the outbox (acknowledged), without syncing
    /// the directory: the next artifact published there syncs it (`drivers/manifest.rs`
    /// `publish`, a second later at a one-second log interval). A removal that a crash of the
    /// machine takes back leaves an acknowledged artifact in the outbox; the restart finds it,
    /// ships it again and the recovery site takes it as a duplicate. One directory sync per log
    /// fewer.
    pub fn discard(&self, key: &ArtifactKey) -> io::Result<()> {
        let path = self.index().remove(key);
        let path = path.or_else(|| self.find(true, key));
        if let Some(p) = path {
            remove_pair_unsynced(&p)?;
        }
        Ok(())
    }

    /// Rename an inbox artifact (and its manifest) to carry its new retry count.
    pub fn relabel(&self, meta: &ArtifactMeta, db_name: &str) -> io::Result<()> {
        let Some(old) = self.find(false, &meta.key) else {
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
            dm::write_manifest(&new, &dm::Manifest::from_meta(meta, db_name))?;
            fs::rename(&old, &new)?;
            fsync_dir(&self.inbox)?;
            let _ = fs::remove_file(dm::manifest_path(&old));
            fsync_dir(&self.inbox)?;
        } else {
            dm::write_manifest(&new, &dm::Manifest::from_meta(meta, db_name))?;
        }
        Ok(())
    }

    /// Retention at the secondary: remove the database's inbox artifacts that end before
    /// `before`, except those still pending. Returns how many were removed.
    pub fn prune(&self, db: DbId, before: Lsn, keep: &BTreeSet<ArtifactKey>) -> io::Result<usize> {
        let mut n = 0;
        for (meta, path) in self.scan(false) {
            if meta.key.db == db && meta.key.lsn_end < before && !keep.contains(&meta.key) {
                remove_pair(&path)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Move an artifact (from the inbox or the outbox) into the quarantine, with its reason.
    pub fn quarantine(&self, key: &ArtifactKey, reason: &str) -> io::Result<Option<PathBuf>> {
        let src = self.find(false, key).or_else(|| {
            let p = self.index().remove(key);
            p.or_else(|| self.find(true, key))
        });
        let Some(src) = src else { return Ok(None) };
        self.move_to_quarantine(&src, reason).map(Some)
    }

    /// Move an artifact file and its manifest (when there is one) into the quarantine under a
    /// free name, with a `.reason` file beside them; durable (rename, fsync both directories).
    fn move_to_quarantine(&self, src: &Path, reason: &str) -> io::Result<PathBuf> {
        let name = src.file_name().unwrap_or_default().to_os_string();
        let mut dst = self.quarantine.join(&name);
        let mut i = 1;
        while dst.exists() {
            let mut n = name.clone();
            n.push(format!(".{i}"));
            dst = self.quarantine.join(n);
            i += 1;
        }
        let msrc = dm::manifest_path(src);
        let mdst = dm::manifest_path(&dst);
        fs::rename(src, &dst)?;
        if msrc.exists() {
            fs::rename(&msrc, &mdst)?;
        }
        let mut why = dst.as_os_str().to_owned();
        why.push(".reason");
        fs::write(PathBuf::from(why), format!("{reason}\n"))?;
        fsync_dir(&self.quarantine)?;
        fsync_dir(parent(src))?;
        Ok(dst)
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

/// Every artifact in a directory with a readable manifest (either format). Reads only: an
/// artifact whose manifest cannot be read is logged and skipped (the agent's
/// [`ArtifactFiles::scan`] moves it aside and tells the engine).
pub fn scan(dir: &Path) -> Vec<(ArtifactMeta, PathBuf)> {
    let (found, unreadable) = scan_checked(dir);
    for (artifact, e) in unreadable {
        // Never skipped in silence: the artifact it describes is stuck until someone acts.
        tracing::warn!(
            file = %artifact.display(),
            error = %e,
            "unreadable manifest: its artifact is not shipped or restored; move the pair aside \
             (a primary takes the next backup, a recovery site asks again or reseeds)"
        );
    }
    found
}

/// An artifact whose manifest is damaged, with the error.
type Damaged = (PathBuf, dm::ManifestError);

/// The artifacts of a directory with a readable manifest, sorted by path, and those (artifact
/// path, error) whose manifest is damaged (`ManifestError::damaged`: not JSON, no valid
/// artifact, too large; not an I/O error such as a file removed under the scan, nor a newer
/// format); other errors are logged.
fn scan_checked(dir: &Path) -> (Vec<(ArtifactMeta, PathBuf)>, Vec<Damaged>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return (out, bad);
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
        match dm::read_manifest(&artifact) {
            Ok(f) => out.push((f.meta(), artifact)),
            Err(e) if e.damaged() => bad.push((artifact, e)),
            Err(e) => tracing::warn!(
                file = %e.path().display(),
                error = %e,
                "manifest cannot be read now: its artifact is not shipped or restored until it can"
            ),
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    bad.sort_by(|a, b| a.0.cmp(&b.0));
    (out, bad)
}

fn remove_pair(path: &Path) -> io::Result<()> {
    remove_pair_unsynced(path)?;
    fsync_dir(parent(path))
}

/// [`remove_pair`] without the directory's sync.
fn remove_pair_unsynced(path: &Path) -> io::Result<()> {
    let m = dm::manifest_path(path);
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
    Ok(())
}

/// The database name in an artifact's seed-convention file name (`?` when it does not parse).
pub fn db_label(artifact: &Path) -> String {
    artifact
        .file_name()
        .and_then(|n| lifeboat_core::name::ArtifactName::parse(&n.to_string_lossy()).ok())
        .map_or_else(|| "?".to_string(), |n| n.db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::{ArtifactKind, Checksum, Epoch, UtcMillis};

    fn meta(lsn_start: u64, lsn_end: u64) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(0),
                epoch: Epoch(1),
                lsn_start: Lsn(lsn_start),
                lsn_end: Lsn(lsn_end),
                kind: ArtifactKind::Log,
            },
            base_full: None,
            created_utc: UtcMillis(1_795_000_000_000 + lsn_start as i64 * 1_000),
            size: 5,
            checksum: Checksum(7),
            retry: 0,
        }
    }

    /// A valid pair in `dir`; returns the artifact's path.
    fn good(dir: &Path, m: &ArtifactMeta) -> PathBuf {
        let p = dir.join(ti::artifact_file_name(m, "db0"));
        fs::write(&p, b"bytes").unwrap();
        dm::write_manifest(&p, &dm::Manifest::from_meta(m, "db0")).unwrap();
        p
    }

    /// An artifact whose manifest is garbage; returns the artifact's path.
    fn garbage(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, b"bytes").unwrap();
        fs::write(dm::manifest_path(&p), b"\x00not json at all").unwrap();
        p
    }

    #[test]
    fn a_scan_moves_an_artifact_with_a_garbage_manifest_to_the_quarantine_and_reports_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = ArtifactFiles::open(dir.path()).unwrap();
        let mut reports = files.take_reports().unwrap();
        let ok = good(&files.outbox, &meta(10, 20));
        let name = "db0_2026_11_22_03_05_00_tlog_0";
        let bad = garbage(&files.outbox, name);

        let found = files.scan(true);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1, ok);
        assert!(!bad.exists() && !dm::manifest_path(&bad).exists());
        let moved = files.quarantine.join(name);
        assert!(moved.is_file() && dm::manifest_path(&moved).is_file());
        let why = fs::read_to_string(files.quarantine.join(format!("{name}.reason"))).unwrap();
        assert!(why.contains("not a JSON object"), "{why}");

        let u = reports.try_recv().expect("no report");
        assert!(u.outbox);
        assert_eq!(u.file, name);
        assert_eq!(u.db_name().as_deref(), Some("db0"));
        assert_eq!(u.moved_to, moved);
        assert!(u.reason.contains("not a JSON object"), "{}", u.reason);
        assert_eq!(u.key, None);

        // Gone from the outbox: the next scans neither see nor report it again.
        assert_eq!(files.scan(true).len(), 1);
        files.sweep();
        assert!(reports.try_recv().is_err());
    }

    #[test]
    fn an_indexed_outbox_file_is_reported_with_its_identity_and_an_inbox_one_as_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let files = ArtifactFiles::open(dir.path()).unwrap();
        let mut reports = files.take_reports().unwrap();
        // Published and indexed, then its manifest was damaged.
        let m = meta(30, 40);
        let p = good(&files.outbox, &m);
        files.remember_outbox(m.key, p.clone());
        fs::write(dm::manifest_path(&p), vec![b' '; 2 << 20]).unwrap();
        let junk = garbage(&files.inbox, "not-even-a-name");

        files.sweep();
        let first = reports.try_recv().unwrap();
        assert!(first.outbox);
        assert_eq!(first.key, Some(m.key));
        assert!(
            first.reason.contains("over 65536 bytes"),
            "{}",
            first.reason
        );
        assert_eq!(files.outbox_path(&m.key), None);
        let second = reports.try_recv().unwrap();
        assert!(!second.outbox);
        assert_eq!(second.file, "not-even-a-name");
        assert_eq!(second.db_name(), None);
        assert!(!junk.exists());
        assert!(reports.try_recv().is_err());
    }

    #[test]
    fn what_the_start_up_scan_moves_aside_waits_for_the_agent_to_take_the_reports() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("outbox");
        fs::create_dir_all(&outbox).unwrap();
        garbage(&outbox, "db7_2026_11_22_03_05_00_full_0");
        // `open` indexes the outbox: the damaged pair is moved aside then, before anyone listens.
        let files = ArtifactFiles::open(dir.path()).unwrap();
        let mut reports = files.take_reports().unwrap();
        assert_eq!(
            reports.try_recv().unwrap().file,
            "db7_2026_11_22_03_05_00_full_0"
        );
        assert!(files.take_reports().is_none(), "taken twice");
    }
}
