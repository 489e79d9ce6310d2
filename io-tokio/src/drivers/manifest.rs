//! The manifest beside every artifact file, and the artifact files themselves: naming,
//! publishing into an outbox, discovery, verification and relabelling.
//!
//! An artifact `<dir>/<name>` has its manifest at `<dir>/<name>.manifest`: JSON, `format_version`
//! first, then the `ArtifactMeta` fields and the database's name:
//!
//! ```json
//! {"format_version":1,"db":"sales","db_id":0,"kind":"tlog","epoch":3,"lsn_start":41,
//!  "lsn_end":57,"base_full":null,"created_utc_ms":1795316700000,"size":16444,
//!  "checksum":"9c1e5f0a2b7d4e33","retry":0}
//! ```
//!
//! `kind` is the name word (`full`, `incr`, `tlog`); `checksum` is the xxh3-64 of the file's
//! bytes as 16 lowercase hex digits. The file name follows the seed convention
//! `<db>_<YYYY>_<MM>_<DD>_<hh>_<mm>_<ss>_<full|incr|tlog>_<retry>` (UTC); it is a label: when
//! two artifacts of one database and kind are created within the same second, the later one's
//! name carries a later second, while `created_utc_ms` keeps the true creation time.

use super::durable::{self, COPY_CHUNK};
use super::error::{DriverError, ErrorKind};
use lifeboat_core::name::ArtifactName;
use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, DbId, Epoch, Lsn, UtcMillis,
};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// A manifest's file name is its artifact's file name plus this suffix.
pub const MANIFEST_SUFFIX: &str = ".manifest";
/// Manifests are small; anything larger is garbage, not a manifest.
pub const MANIFEST_MAX_BYTES: u64 = 64 * 1024;

/// The manifest beside an artifact file. Field order is the JSON order: `format_version` first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    /// The database's name (names live at the edges; the core uses `db_id`).
    pub db: String,
    /// The database's index in the configured database list.
    pub db_id: DbId,
    #[serde(with = "kind_word")]
    pub kind: ArtifactKind,
    pub epoch: Epoch,
    pub lsn_start: Lsn,
    pub lsn_end: Lsn,
    /// For an incremental: the `lsn_end` of the full backup it is based on.
    pub base_full: Option<Lsn>,
    #[serde(rename = "created_utc_ms")]
    pub created_utc: UtcMillis,
    pub size: u64,
    #[serde(with = "checksum_hex")]
    pub checksum: Checksum,
    pub retry: u32,
}

impl Manifest {
    /// The manifest of an artifact described by `meta`, for the database called `db_name`.
    pub fn from_meta(meta: &ArtifactMeta, db_name: &str) -> Manifest {
        Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            db: db_name.to_string(),
            db_id: meta.key.db,
            kind: meta.key.kind,
            epoch: meta.key.epoch,
            lsn_start: meta.key.lsn_start,
            lsn_end: meta.key.lsn_end,
            base_full: meta.base_full,
            created_utc: meta.created_utc,
            size: meta.size,
            checksum: meta.checksum,
            retry: meta.retry,
        }
    }

    /// The core's view of the artifact.
    pub fn meta(&self) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: self.db_id,
                epoch: self.epoch,
                lsn_start: self.lsn_start,
                lsn_end: self.lsn_end,
                kind: self.kind,
            },
            base_full: self.base_full,
            created_utc: self.created_utc,
            size: self.size,
            checksum: self.checksum,
            retry: self.retry,
        }
    }
}

/// An artifact file and the manifest beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactFile {
    pub path: PathBuf,
    pub manifest: Manifest,
}

impl ArtifactFile {
    pub fn meta(&self) -> ArtifactMeta {
        self.manifest.meta()
    }
    pub fn db_name(&self) -> &str {
        &self.manifest.db
    }
    pub fn manifest_path(&self) -> PathBuf {
        manifest_path(&self.path)
    }
    /// `sales_2026_11_22_03_05_00_tlog_0 [tlog 41..57 epoch 3]`, for messages.
    pub fn describe(&self) -> String {
        let m = &self.manifest;
        format!(
            "{} [{} {}..{} epoch {}]",
            self.path.display(),
            m.kind.name_word(),
            m.lsn_start,
            m.lsn_end,
            m.epoch
        )
    }
}

/// What a scan of an outbox (or inbox) found: artifacts with a readable manifest, and the
/// problems with the others (garbled manifests, manifests whose file is gone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    pub artifacts: Vec<ArtifactFile>,
    pub problems: Vec<DriverError>,
}

/// Everything about a new artifact except what its bytes decide (size, checksum, name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewArtifact<'a> {
    pub db_name: &'a str,
    pub db: DbId,
    pub kind: ArtifactKind,
    pub epoch: Epoch,
    pub lsn_start: Lsn,
    pub lsn_end: Lsn,
    pub base_full: Option<Lsn>,
    pub created_utc: UtcMillis,
}

/// `<artifact>.manifest`.
pub fn manifest_path(artifact: &Path) -> PathBuf {
    let mut s = artifact.as_os_str().to_owned();
    s.push(MANIFEST_SUFFIX);
    PathBuf::from(s)
}

/// The artifact a path names: the path itself, or the artifact beside a `.manifest` path.
pub fn artifact_path(path: &Path) -> PathBuf {
    let s = path.to_string_lossy();
    match s.strip_suffix(MANIFEST_SUFFIX) {
        Some(stripped) if !stripped.is_empty() => PathBuf::from(stripped),
        _ => path.to_path_buf(),
    }
}

/// Size and xxh3-64 of a file's bytes, streamed.
pub fn hash_file(path: &Path) -> Result<(u64, Checksum), DriverError> {
    let result = (|| {
        let mut f = File::open(path)?;
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut buf = vec![0u8; COPY_CHUNK];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok::<_, io::Error>((size, Checksum(hasher.digest())))
    })();
    result.map_err(|e| DriverError::io(format!("reading artifact {}", path.display()), &e))
}

/// A manifest that cannot be read. Every error names the manifest's path.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "artifact {} has no manifest (expected {}): it was not published by lifeboat or its \
         copy is incomplete; re-copy both from the primary",
        artifact.display(),
        path.display()
    )]
    Missing { artifact: PathBuf, path: PathBuf },
    #[error("reading manifest {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "manifest {} is format version {found}; this lifeboat reads version \
         {MANIFEST_FORMAT_VERSION}: run the same lifeboat version on both sites",
        path.display()
    )]
    Version { path: PathBuf, found: u32 },
    /// Not JSON, too large, no format version, fields that describe no valid artifact, or a
    /// seed-convention file name that disagrees with it: damaged, not merely unreadable now.
    #[error(
        "manifest {} is not valid: {why}; re-copy the artifact and its manifest from the primary",
        path.display()
    )]
    Invalid { path: PathBuf, why: String },
}

impl ManifestError {
    /// The manifest file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ManifestError::Missing { path, .. }
            | ManifestError::Io { path, .. }
            | ManifestError::Version { path, .. }
            | ManifestError::Invalid { path, .. } => path,
        }
    }

    /// The manifest is there and damaged (set it aside), rather than missing, unreadable for
    /// now, or of another version.
    pub fn damaged(&self) -> bool {
        matches!(self, ManifestError::Invalid { .. })
    }
}

impl From<ManifestError> for DriverError {
    fn from(e: ManifestError) -> DriverError {
        let kind = match &e {
            ManifestError::Missing { .. } => ErrorKind::ManifestMissing,
            ManifestError::Version { .. } => ErrorKind::ManifestVersion,
            ManifestError::Invalid { .. } => ErrorKind::ManifestInvalid,
            ManifestError::Io { path, source } => {
                return DriverError::io(format!("reading {}", path.display()), source)
            }
        };
        DriverError::new(kind, e.to_string())
    }
}

/// Read and validate the manifest beside `artifact` (the artifact's path, or the manifest's):
/// the one manifest reader of the adapter (outbox, inbox, restores, `lifeboat verify`). Checks
/// the format version, the fields, the artifact's structural sanity and that a seed-convention
/// file name agrees with the manifest on database and kind. Reads at most
/// [`MANIFEST_MAX_BYTES`] (plus one, to notice more). Does not read the artifact's bytes:
/// [`verify_artifact`] does.
pub fn read_manifest(artifact: &Path) -> Result<ArtifactFile, ManifestError> {
    let artifact = artifact_path(artifact);
    let mpath = manifest_path(&artifact);
    let invalid = |why: String| ManifestError::Invalid {
        path: mpath.clone(),
        why,
    };
    // Read at most one byte past the limit, whatever size the file has by now.
    let mut bytes = Vec::new();
    match File::open(&mpath).and_then(|f| f.take(MANIFEST_MAX_BYTES + 1).read_to_end(&mut bytes)) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ManifestError::Missing {
                artifact,
                path: mpath,
            })
        }
        Err(source) => {
            return Err(ManifestError::Io {
                path: mpath,
                source,
            })
        }
    }
    if bytes.len() as u64 > MANIFEST_MAX_BYTES {
        return Err(invalid(format!(
            "it is over {MANIFEST_MAX_BYTES} bytes, a manifest is at most {MANIFEST_MAX_BYTES}"
        )));
    }

    #[derive(Deserialize)]
    struct VersionProbe {
        format_version: Option<u32>,
    }
    let probe: VersionProbe =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("not a JSON object ({e})")))?;
    match probe.format_version {
        None => return Err(invalid("it has no format_version field".to_string())),
        Some(MANIFEST_FORMAT_VERSION) => {}
        Some(found) => return Err(ManifestError::Version { path: mpath, found }),
    }
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    manifest
        .meta()
        .check()
        .map_err(|why| invalid(why.to_string()))?;
    if let Some(name) = artifact.file_name().map(|n| n.to_string_lossy()) {
        if let Ok(parsed) = ArtifactName::parse(&name) {
            if parsed.db != manifest.db || parsed.kind != manifest.kind {
                return Err(invalid(format!(
                    "the file name says database {:?} and kind {}, the manifest says database \
                     {:?} and kind {}",
                    parsed.db,
                    parsed.kind.name_word(),
                    manifest.db,
                    manifest.kind.name_word()
                )));
            }
        }
    }
    Ok(ArtifactFile {
        path: artifact,
        manifest,
    })
}

/// Read the manifest and check the artifact's bytes against it: the file exists, its size and
/// its xxh3-64 checksum match. This is what `lifeboat verify <file>` runs; `path` may name the
/// artifact or its manifest.
pub fn verify_artifact(path: &Path) -> Result<ArtifactFile, DriverError> {
    let artifact = read_manifest(path)?;
    check_bytes(&artifact)?;
    Ok(artifact)
}

/// Check an artifact's size and checksum against its manifest.
pub fn check_bytes(artifact: &ArtifactFile) -> Result<(), DriverError> {
    let path = &artifact.path;
    let on_disk = match fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) => return Err(missing_or_io(artifact, &e)),
    };
    check_sum(artifact, on_disk, None)?;
    let (size, sum) = hash_file(path)?;
    check_sum(artifact, size, Some(sum))
}

/// [`check_bytes`] that keeps what it read: the artifact whole, checked against its manifest
/// (one read, one hash), for a caller that goes on to use the bytes.
pub fn read_checked(artifact: &ArtifactFile) -> Result<Vec<u8>, DriverError> {
    let bytes = fs::read(&artifact.path).map_err(|e| missing_or_io(artifact, &e))?;
    check_read(artifact, &bytes)?;
    Ok(bytes)
}

/// A missing artifact (permanent: re-copy it), or the I/O error that reading it met.
fn missing_or_io(artifact: &ArtifactFile, e: &io::Error) -> DriverError {
    let path = &artifact.path;
    if e.kind() == io::ErrorKind::NotFound {
        return DriverError::new(
            ErrorKind::NotFound,
            format!(
                "artifact {} of database {} is missing although its manifest exists: re-copy it \
                 from the primary",
                path.display(),
                artifact.manifest.db
            ),
        )
        .with_permanent(true);
    }
    DriverError::io(format!("reading {}", path.display()), e)
}

/// [`check_bytes`] for an artifact already read whole into `bytes` (one read, one hash).
pub fn check_read(artifact: &ArtifactFile, bytes: &[u8]) -> Result<(), DriverError> {
    check_sum(
        artifact,
        bytes.len() as u64,
        Some(Checksum(xxhash_rust::xxh3::xxh3_64(bytes))),
    )
}

/// `size` bytes (and their checksum `sum`, when known) against the manifest.
fn check_sum(artifact: &ArtifactFile, size: u64, sum: Option<Checksum>) -> Result<(), DriverError> {
    let (path, m) = (&artifact.path, &artifact.manifest);
    if size != m.size {
        return Err(DriverError::new(
            ErrorKind::SizeMismatch,
            format!(
                "artifact {} of database {} is {size} bytes, its manifest says {}: the copy \
                 is truncated or damaged; re-copy it from the primary",
                path.display(),
                m.db,
                m.size
            ),
        ));
    }
    match sum {
        Some(sum) if sum != m.checksum => Err(DriverError::new(
            ErrorKind::ChecksumMismatch,
            format!(
                "artifact {} of database {} has checksum {sum}, its manifest says {}: the file \
                 is corrupt; re-copy it from the primary",
                path.display(),
                m.db,
                m.checksum
            ),
        )),
        _ => Ok(()),
    }
}

/// Where a driver stages a new artifact of `db_name` before publishing it: a hidden file in the
/// outbox, so the rename into place never crosses a file system.
pub fn staging_path(outbox: &Path, db_name: &str, kind: ArtifactKind) -> PathBuf {
    outbox.join(format!(
        ".lifeboat-staging-{}.{}.tmp",
        file_safe(db_name),
        kind.name_word()
    ))
}

/// A database name that can be part of an artifact's file name.
fn check_db_name(db_name: &str) -> Result<(), DriverError> {
    if db_name.is_empty() || db_name.contains(['/', '\0']) || db_name.starts_with('.') {
        return Err(DriverError::new(
            ErrorKind::Config,
            format!(
                "database name {db_name:?} cannot be part of an artifact file name (empty, starts \
                 with `.`, or contains `/`): rename the database in the configuration",
            ),
        ));
    }
    Ok(())
}

/// Publish a staged artifact file into `outbox`: fsync it, hash it, give it its seed-convention
/// name, rename it into place, then write its manifest (temp, fsync, rename) and fsync the
/// directory once for both. The manifest appears last, so a manifest always describes a
/// complete file.
pub fn publish(
    outbox: &Path,
    staged: &Path,
    new: &NewArtifact<'_>,
) -> Result<ArtifactFile, DriverError> {
    durable::sync_file(staged)?;
    let (size, checksum) = hash_file(staged)?;
    publish_synced(outbox, staged, new, size, checksum)
}

/// [`publish`] for a staged file its writer already synced, `size` bytes hashing to `checksum`
/// (measured while writing it): no second open to sync it, no second read to hash it.
pub fn publish_synced(
    outbox: &Path,
    staged: &Path,
    new: &NewArtifact<'_>,
    size: u64,
    checksum: Checksum,
) -> Result<ArtifactFile, DriverError> {
    check_db_name(new.db_name)?;
    let meta = ArtifactMeta {
        key: ArtifactKey {
            db: new.db,
            epoch: new.epoch,
            lsn_start: new.lsn_start,
            lsn_end: new.lsn_end,
            kind: new.kind,
        },
        base_full: new.base_full,
        created_utc: new.created_utc,
        size,
        checksum,
        retry: 0,
    };
    meta.check().map_err(|why| {
        DriverError::new(
            ErrorKind::ArtifactInvalid,
            format!(
                "refusing to publish a {} of database {} covering {}..{}: {why}",
                new.kind.text_word(),
                new.db_name,
                new.lsn_start,
                new.lsn_end
            ),
        )
    })?;
    let path = free_name(outbox, new.db_name, new.kind, new.created_utc)?;
    let manifest = Manifest::from_meta(&meta, new.db_name);
    // The artifact's name, then its manifest's (written and synced under a temporary name), then
    // one sync of the directory for both. A crash before it may leave either name without the
    // other: an artifact without a manifest is an incomplete copy and a manifest without its
    // artifact names nothing; scans pass over both, and nothing was acknowledged yet.
    std::fs::rename(staged, &path)
        .and_then(|()| {
            let json = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
            crate::durable::replace_unsynced_dir(&manifest_path(&path), "write", &json)
        })
        .and_then(|()| crate::durable::sync_dir(outbox))
        .map_err(|e| {
            DriverError::io(
                format!(
                    "publishing {} as {} with its manifest",
                    staged.display(),
                    path.display()
                ),
                &e,
            )
        })?;
    Ok(ArtifactFile { path, manifest })
}

/// Write (or rewrite) the manifest beside `artifact` durably: a temporary file, fsync,
/// rename, directory fsync.
pub fn write_manifest(artifact: &Path, manifest: &Manifest) -> io::Result<()> {
    let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
    crate::durable::write_durably(&manifest_path(artifact), &json)
}

/// [`write_manifest`] with the drivers' error naming the file.
fn put_manifest(artifact: &Path, manifest: &Manifest) -> Result<(), DriverError> {
    write_manifest(artifact, manifest).map_err(|e| {
        DriverError::io(
            format!("writing the manifest of {} durably", artifact.display()),
            &e,
        )
    })
}

/// The hidden temporary name a manifest is staged under before its rename.
pub fn staged_manifest_path(artifact: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(manifest_path(artifact).file_name().unwrap_or_default());
    name.push(".tmp");
    artifact.with_file_name(name)
}

/// Write and fsync `artifact`'s manifest under its staged name (see [`staged_manifest_path`]);
/// the caller renames it beside the artifact once the artifact is in place, and fsyncs the
/// directory (a received artifact and its manifest appear together).
pub fn stage_manifest(artifact: &Path, manifest: &Manifest) -> io::Result<PathBuf> {
    let tmp = staged_manifest_path(artifact);
    let json = serde_json::to_vec(manifest).map_err(io::Error::other)?;
    crate::durable::write_file_synced(&tmp, &json)?;
    Ok(tmp)
}

/// The first seed-convention name for this artifact that is free in `dir`, starting at the
/// creation second and moving one second later per taken name.
fn free_name(
    dir: &Path,
    db_name: &str,
    kind: ArtifactKind,
    created: UtcMillis,
) -> Result<PathBuf, DriverError> {
    const MAX_TRIES: i64 = 100_000;
    for bump in 0..MAX_TRIES {
        let created = UtcMillis(created.0.saturating_add(bump * 1000));
        let name = ArtifactName::new(db_name, created, kind, 0);
        let path = dir.join(name.to_string());
        if !path.exists() && !manifest_path(&path).exists() {
            return Ok(path);
        }
    }
    Err(DriverError::new(
        ErrorKind::Io,
        format!(
            "no free artifact name for database {db_name} in {}: it holds {MAX_TRIES} {} \
             artifacts in a row; clean the directory up",
            dir.display(),
            kind.text_word()
        ),
    ))
}

/// Scan a directory for artifacts: every `<name>.manifest` (dot files are temporaries and are
/// skipped) whose manifest reads and whose file exists. Does not hash the files. Sorted by
/// database, LSN range, kind and path, so the order never depends on the directory.
pub fn discover(dir: &Path) -> Result<Discovery, DriverError> {
    let entries = fs::read_dir(dir)
        .map_err(|e| DriverError::io(format!("listing artifacts in {}", dir.display()), &e))?;
    let mut out = Discovery::default();
    for entry in entries {
        let entry = entry.map_err(|e| DriverError::io(format!("listing {}", dir.display()), &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(MANIFEST_SUFFIX) {
            continue;
        }
        let artifact = artifact_path(&entry.path());
        match read_manifest(&artifact) {
            Ok(a) if a.path.is_file() => out.artifacts.push(a),
            Ok(a) => out.problems.push(
                DriverError::new(
                    ErrorKind::NotFound,
                    format!(
                        "manifest {} has no artifact file beside it: the copy is incomplete \
                         or the file was removed; re-copy it or remove the manifest",
                        a.manifest_path().display()
                    ),
                )
                .with_permanent(true),
            ),
            Err(e) => out.problems.push(e.into()),
        }
    }
    out.artifacts.sort_by(|a, b| {
        let (ma, mb) = (&a.manifest, &b.manifest);
        (
            ma.db_id,
            ma.lsn_start,
            ma.lsn_end,
            ma.kind,
            ma.epoch,
            &a.path,
        )
            .cmp(&(
                mb.db_id,
                mb.lsn_start,
                mb.lsn_end,
                mb.kind,
                mb.epoch,
                &b.path,
            ))
    });
    out.problems.sort_by(|a, b| a.message.cmp(&b.message));
    Ok(out)
}

/// Give an artifact a new retry count: its file name's retry field and its manifest's `retry`
/// change together. Crash-safe order: the new manifest first, then the file's rename, then the
/// old manifest's removal; an interrupted relabel leaves a valid pair and a stray manifest that
/// [`discover`] reports.
pub fn relabel(artifact: &ArtifactFile, retry: u32) -> Result<ArtifactFile, DriverError> {
    let mut manifest = artifact.manifest.clone();
    manifest.retry = retry;
    let file_name = artifact
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new_name = match ArtifactName::parse(&file_name) {
        Ok(mut n) => {
            n.retry = retry;
            n.to_string()
        }
        Err(_) => ArtifactName {
            db: manifest.db.clone(),
            created: UtcDateTime::from_millis(manifest.created_utc),
            kind: manifest.kind,
            retry,
        }
        .to_string(),
    };
    let new_path = durable::parent_dir(&artifact.path).join(new_name);
    if new_path == artifact.path {
        put_manifest(&new_path, &manifest)?;
        return Ok(ArtifactFile {
            path: new_path,
            manifest,
        });
    }
    if new_path.exists() {
        return Err(DriverError::new(
            ErrorKind::Io,
            format!(
                "cannot relabel {} to retry {retry}: {} already exists; remove the duplicate",
                artifact.path.display(),
                new_path.display()
            ),
        ));
    }
    put_manifest(&new_path, &manifest)?;
    durable::rename_durably(&artifact.path, &new_path)?;
    durable::remove_durably(&artifact.manifest_path())?;
    Ok(ArtifactFile {
        path: new_path,
        manifest,
    })
}

/// A database name as one safe file name component (for private state directories).
pub(crate) fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        let keep = c.is_ascii_alphanumeric() || c == '_' || c == '-' || (c == '.' && i > 0);
        if keep {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

mod kind_word {
    use lifeboat_core::ArtifactKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &ArtifactKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name_word())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ArtifactKind, D::Error> {
        let word = String::deserialize(d)?;
        ArtifactKind::from_name_word(&word).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "kind {word:?} is not one of \"full\", \"incr\", \"tlog\""
            ))
        })
    }
}

mod checksum_hex {
    use lifeboat_core::Checksum;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sum: &Checksum, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:016x}", sum.0))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Checksum, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "checksum {text:?} is not 16 hex digits"
            )));
        }
        u64::from_str_radix(&text, 16)
            .map(Checksum)
            .map_err(serde::de::Error::custom)
    }
}
