//! The receiving site's inbox: where artifacts land, what they are called, their manifests, and
//! the durable-write steps (fsync the file, rename, fsync the directory).
//!
//! File naming (the recovery-location seed's convention, `lifeboat_core::name::ArtifactName`):
//!
//! ```text
//! <db>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>_<full|incr|tlog>_<retry>            the artifact's bytes
//! <db>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>_<full|incr|tlog>_<retry>.manifest   its manifest (JSON)
//! .<db#>_<epoch>_<kind>_<lsn_start>_<lsn_end>_<checksum>.partial            a transfer under way
//! .<artifact name>.manifest.tmp                                             a manifest being staged
//! ```
//!
//! `<db>` is the configured database name (`Config::databases[db]`), or `db<N>` when the inbox
//! does not know it; the time is `meta.created_utc` in UTC. The name is a label, as the contract
//! says: the manifest carries the identity. Two different artifacts that would get the same name
//! (same database, kind and second) are refused rather than overwritten. A partial file is named
//! by the artifact's identity and expected checksum instead, so a resumed transfer finds it
//! whatever the retry count, and never continues the bytes of a different artifact.

pub use crate::drivers::manifest::{manifest_path, read_manifest, ManifestError};
use lifeboat_core::name::ArtifactName;
use lifeboat_core::{ArtifactKey, ArtifactMeta, DbId};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, OwnedMutexGuard};

/// Extension of a transfer under way (hidden files, so directory scans skip them).
pub const PARTIAL_EXTENSION: &str = "partial";

/// The file name of an artifact, by the seed's convention (see the module doc).
pub fn artifact_file_name(meta: &ArtifactMeta, db_name: &str) -> String {
    ArtifactName::of(meta, db_name).to_string()
}

/// [`Inbox::free_artifact_path`] for an inbox directory `dir` (usable off the async runtime).
pub fn free_artifact_path(dir: &Path, db_name: &str, meta: &ArtifactMeta) -> io::Result<PathBuf> {
    const MAX_TRIES: i64 = 3_600;
    let mut m = *meta;
    for _ in 0..MAX_TRIES {
        let path = dir.join(artifact_file_name(&m, db_name));
        match read_manifest(&path) {
            Ok(other) if other.manifest.meta().key != meta.key => {
                m.created_utc = lifeboat_core::UtcMillis(m.created_utc.0.saturating_add(1_000));
            }
            // Free, or this very artifact (a re-ship replaces it).
            _ => return Ok(path),
        }
    }
    Err(io::Error::other(format!(
        "no free name for {} in {}: {MAX_TRIES} names in a row are taken; clean the inbox up",
        artifact_file_name(meta, db_name),
        dir.display()
    )))
}

/// The name of an artifact's partial file: its identity and expected checksum.
pub fn partial_file_name(meta: &ArtifactMeta) -> String {
    let k = &meta.key;
    format!(
        ".{}_{}_{}_{}_{}_{}.{PARTIAL_EXTENSION}",
        k.db.0,
        k.epoch.0,
        k.kind.name_word(),
        k.lsn_start.0,
        k.lsn_end.0,
        meta.checksum
    )
}

pub use crate::durable::sync_dir as fsync_dir;

/// The directory artifacts are received into.
pub struct Inbox {
    dir: PathBuf,
    db_names: Vec<String>,
    pub(crate) claims: Arc<Claims>,
    transfers: super::Transfers,
    /// Held while a received artifact takes its final name: two artifacts whose conventional
    /// names are equal never pick the same free name.
    pub(crate) naming: Arc<std::sync::Mutex<()>>,
}

impl Inbox {
    /// Open (create if needed) an inbox. `db_names[i]` names `DbId(i)` in file names; pass
    /// `Config::databases`.
    pub fn open(dir: impl Into<PathBuf>, db_names: Vec<String>) -> io::Result<Inbox> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        Ok(Inbox {
            dir,
            db_names,
            claims: Arc::new(Claims::default()),
            transfers: super::Transfers::default(),
            naming: Arc::default(),
        })
    }

    /// The artifacts being received now, with their byte progress.
    pub fn transfers(&self) -> &super::Transfers {
        &self.transfers
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name a database has in file names: its configured name when it is a plain file-name
    /// word, else `db<N>`.
    pub fn db_name(&self, db: DbId) -> String {
        match self.db_names.get(db.0 as usize) {
            Some(name)
                if !name.is_empty()
                    && !name.starts_with('.')
                    && !name.contains(['/', '\\', '\0']) =>
            {
                name.clone()
            }
            _ => format!("db{}", db.0),
        }
    }

    /// Where the artifact's bytes end up.
    pub fn artifact_path(&self, meta: &ArtifactMeta) -> PathBuf {
        self.dir
            .join(artifact_file_name(meta, &self.db_name(meta.db())))
    }

    /// The name a received artifact is kept under: its conventional name, or, when a
    /// *different* artifact already holds that name (two artifacts of one database and kind
    /// made in the same second, as after a restart), the same name one second later, and so
    /// on. The name is a label; the manifest beside it is the identity, and restores find the
    /// file by identity. Refusing the second artifact instead left a hole that nothing
    /// could fill (found by the kill -9 torture test). Call with `Inbox::naming` held.
    pub fn free_artifact_path(&self, meta: &ArtifactMeta) -> io::Result<PathBuf> {
        free_artifact_path(&self.dir, &self.db_name(meta.db()), meta)
    }

    /// Where the artifact's bytes accumulate while it is in transfer.
    pub fn partial_path(&self, meta: &ArtifactMeta) -> PathBuf {
        self.dir.join(partial_file_name(meta))
    }

    /// The identity of a *different* artifact that already holds this artifact's name, if any.
    /// A file with the same identity (a re-ship) may be replaced.
    pub fn name_taken_by(&self, meta: &ArtifactMeta) -> Option<ArtifactKey> {
        match read_manifest(&self.artifact_path(meta)) {
            Ok(other) if other.manifest.meta().key != meta.key => Some(other.manifest.meta().key),
            _ => None,
        }
    }
}

/// Who may write an artifact's partial file. The newest offer of an artifact wins: it tells the
/// current holder (a stale or half-open connection) to stop, waits until that one has flushed
/// and closed the file, then resumes from what it left. Without this, two connections could
/// append to the same partial file.
#[derive(Default)]
pub(crate) struct Claims {
    slots: Mutex<HashMap<ArtifactKey, Arc<Slot>>>,
}

struct Slot {
    turn: Arc<tokio::sync::Mutex<()>>,
    generation: watch::Sender<u64>,
}

/// The right to write one artifact's partial file, until dropped or superseded.
pub(crate) struct Claim {
    claims: Arc<Claims>,
    key: ArtifactKey,
    slot: Arc<Slot>,
    generation: u64,
    _turn: OwnedMutexGuard<()>,
}

impl Claims {
    /// Take the artifact over: supersede the current holder, then wait for its turn to end.
    pub(crate) async fn claim(self: &Arc<Self>, key: ArtifactKey) -> Claim {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(Slot {
                        turn: Arc::new(tokio::sync::Mutex::new(())),
                        generation: watch::Sender::new(0),
                    })
                })
                .clone()
        };
        let mut generation = 0;
        slot.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        let turn = slot.turn.clone().lock_owned().await;
        Claim {
            claims: self.clone(),
            key,
            slot,
            generation,
            _turn: turn,
        }
    }
}

impl Claim {
    /// Resolves when a newer offer of the same artifact wants the partial file.
    pub(crate) async fn superseded(&self) {
        let mut rx = self.slot.generation.subscribe();
        let mine = self.generation;
        let _ = rx.wait_for(|g| *g != mine).await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut slots = self.claims.slots.lock().unwrap_or_else(|e| e.into_inner());
        // The map and this claim hold the only references: nobody waits, forget the slot.
        if Arc::strong_count(&self.slot) == 2 {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::manifest::{staged_manifest_path, write_manifest, Manifest};
    use lifeboat_core::{ArtifactKind, Checksum, Epoch, Lsn, UtcMillis};
    use std::time::Duration;

    fn meta(kind: ArtifactKind, retry: u32) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(0),
                epoch: Epoch(2),
                lsn_start: Lsn(100),
                lsn_end: Lsn(250),
                kind,
            },
            base_full: (kind == ArtifactKind::Incremental).then_some(Lsn(50)),
            // 2026-11-22T03:05:00Z
            created_utc: UtcMillis(1_795_316_700_000),
            size: 10,
            checksum: Checksum(0xabc),
            retry,
        }
    }

    #[test]
    fn an_artifact_is_named_by_the_seed_convention_and_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), vec!["my_sales".into()]).unwrap();
        let m = meta(ArtifactKind::Log, 2);
        let path = inbox.artifact_path(&m);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "my_sales_2026_11_22_03_05_00_tlog_2");
        let parsed = ArtifactName::parse(name).unwrap();
        assert_eq!(parsed.db, "my_sales");
        assert_eq!(parsed.kind, ArtifactKind::Log);
        assert_eq!(parsed.retry, 2);
        assert_eq!(
            manifest_path(&path).file_name().unwrap(),
            "my_sales_2026_11_22_03_05_00_tlog_2.manifest"
        );
    }

    #[test]
    fn an_unknown_or_unsafe_database_name_falls_back_to_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), vec!["../etc".into()]).unwrap();
        assert_eq!(inbox.db_name(DbId(0)), "db0");
        assert_eq!(inbox.db_name(DbId(7)), "db7");
    }

    #[test]
    fn the_partial_name_ignores_the_retry_count_but_not_the_checksum() {
        let a = meta(ArtifactKind::Full, 0);
        let b = meta(ArtifactKind::Full, 3);
        assert_eq!(partial_file_name(&a), partial_file_name(&b));
        assert!(partial_file_name(&a).starts_with('.'));
        let mut c = a;
        c.checksum = Checksum(0xdef);
        assert_ne!(partial_file_name(&a), partial_file_name(&c));
    }

    #[test]
    fn a_manifest_round_trips_and_starts_with_its_format() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("app_2026_11_22_03_05_00_incr_0");
        let m = meta(ArtifactKind::Incremental, 0);
        write_manifest(&artifact, &Manifest::from_meta(&m, "app")).unwrap();
        let path = manifest_path(&artifact);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\"format_version\":1,\"db\":\"app\""),
            "{text}"
        );
        // Read by the artifact's path or the manifest's.
        assert_eq!(read_manifest(&artifact).unwrap().meta(), m);
        assert_eq!(read_manifest(&path).unwrap().meta(), m);
        assert!(!staged_manifest_path(&artifact).exists());
        assert_eq!(
            staged_manifest_path(&artifact).file_name().unwrap(),
            ".app_2026_11_22_03_05_00_incr_0.manifest.tmp"
        );
    }

    #[test]
    fn a_manifest_of_a_newer_format_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.manifest");
        fs::write(&path, br#"{"format_version": 2, "db": "whatever"}"#).unwrap();
        let err = read_manifest(&path).unwrap_err();
        assert!(
            matches!(err, ManifestError::Version { found: 2, .. }) && !err.damaged(),
            "{err}"
        );
    }

    #[test]
    fn a_name_held_by_a_different_artifact_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), vec!["app".into()]).unwrap();
        let m = meta(ArtifactKind::Log, 0);
        let mut other = m;
        other.key.lsn_start = Lsn(250);
        other.key.lsn_end = Lsn(300);
        assert_eq!(inbox.name_taken_by(&m), None);
        write_manifest(
            &inbox.artifact_path(&other),
            &Manifest::from_meta(&other, "app"),
        )
        .unwrap();
        assert_eq!(inbox.name_taken_by(&m), Some(other.key));
        assert_eq!(inbox.name_taken_by(&other), None);
    }

    #[tokio::test]
    async fn a_newer_claim_supersedes_the_holder_and_waits_for_it() {
        let claims = Arc::new(Claims::default());
        let key = meta(ArtifactKind::Log, 0).key;
        let first = claims.claim(key).await;
        let claims2 = claims.clone();
        let second = tokio::spawn(async move { claims2.claim(key).await.generation });
        tokio::time::timeout(Duration::from_secs(5), first.superseded())
            .await
            .expect("the holder learns it is superseded");
        assert!(!second.is_finished());
        drop(first);
        assert_eq!(second.await.unwrap(), 2);
        assert!(claims.slots.lock().unwrap().is_empty());
    }
}
