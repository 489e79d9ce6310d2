//! Drivers: how lifeboat talks to a database (backups, restore, promote, fence, probe).
//!
//! One trait, [`Driver`], and two implementations:
//! - [`sqlite::SqliteDriver`], the embedded default: full backups are consistent copies of the
//!   database file, incrementals and logs are page deltas, the LSN is the header's change
//!   counter (one per committed transaction), the fence is a held SQLite write lock;
//! - [`script::ExecDriver`]: one command template per operation, for any database.
//!
//! **Blocking.** Every method blocks on file and database I/O; the agent calls them through
//! `tokio::task::spawn_blocking` (a `Driver` is `Send + Sync`, share it as `Arc<dyn Driver>`).
//! Implementations serialise the operations on one database internally, so calls for different
//! databases may run in parallel and a call may safely be repeated (the core re-issues
//! operations after a timeout or a restart: a repeated restore is a verified no-op).
//!
//! **Artifacts.** A driver writes each backup into an outbox directory under its seed-convention
//! name with a manifest beside it ([`manifest`]), and returns it as an [`ArtifactFile`]
//! (path + [`Manifest`], whose [`Manifest::meta`] is the core's `ArtifactMeta`).
//! [`verify_artifact`] checks a file against its manifest (`lifeboat verify <file>`).
//!
//! **Errors.** [`DriverError`] carries a kind, a code, a message naming the file, the database
//! and what to do next, and whether retrying can help; [`DriverError::to_failure`] is the core's
//! `Failure`.

pub mod error;
pub mod manifest;
pub mod postgres;
pub mod script;
pub mod sqlite;

mod durable;

pub use error::{DriverError, ErrorKind, LIFEBOAT_CODE_BASE};
pub use manifest::{
    check_bytes, discover, hash_file, read_manifest, relabel, verify_artifact, ArtifactFile,
    Discovery, Manifest, MANIFEST_FORMAT_VERSION,
};
pub use script::{CommandTemplate, ExecConfig, ExecDriver};
pub use sqlite::{SqliteConfig, SqliteDriver};

use lifeboat_core::{ArtifactKind, DbId, Epoch, Lsn, UtcMillis};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One database a driver manages. Its [`DbId`] is its index in the list given to the driver,
/// which must be the order of the core configuration's `databases`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSpec {
    /// The database's name, as in the core configuration and in artifact names.
    pub name: String,
    /// Where the database lives: the SQLite file, or whatever the exec templates expect as
    /// `{target}` (a data directory, a connection string).
    pub path: PathBuf,
}

/// Take a backup of one database into `outbox`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRequest {
    pub db: DbId,
    pub kind: ArtifactKind,
    /// The epoch the primary holds; stamped on the artifact.
    pub epoch: Epoch,
    /// Wall-clock creation time (UTC), for the manifest and the file name.
    pub created_utc: UtcMillis,
    pub outbox: PathBuf,
    /// Where the driver counts the bytes of a long copy (a full backup), for `/status`.
    pub progress: Progress,
}

/// A long copy's progress, shared between the driver (on a blocking thread) and `/status`:
/// the bytes copied so far of the pass under way, and that pass's size. A full backup may make
/// more than one pass (a snapshot of the live database, then the artifact): each starts at 0.
#[derive(Clone, Debug, Default)]
pub struct Progress(std::sync::Arc<[std::sync::atomic::AtomicU64; 2]>);

/// Not part of what a request asks for: any two compare equal.
impl PartialEq for Progress {
    fn eq(&self, _: &Progress) -> bool {
        true
    }
}
impl Eq for Progress {}

impl Progress {
    /// A pass of `total` bytes starts.
    pub fn start(&self, total: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.0[0].store(0, Relaxed);
        self.0[1].store(total, Relaxed);
    }
    /// `n` more bytes were copied.
    pub fn add(&self, n: u64) {
        self.0[0].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
    /// `(done, total)` of the pass under way (`total` 0: none started yet).
    pub fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.0[0].load(Relaxed), self.0[1].load(Relaxed))
    }
}

/// What a drill found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillOutcome {
    pub db: DbId,
    /// The position the scratch copy reached.
    pub position: Lsn,
    /// How many artifacts were restored into the scratch copy.
    pub applied: usize,
    /// The check's verdict (`ok`).
    pub check: String,
}

/// One database's receiver of the other site's continuous stream ([`Driver::stream_reports`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamReport {
    pub db: DbId,
    pub receiving: bool,
    pub running: bool,
    pub starts: u64,
    pub received: Option<u64>,
    pub last_error: Option<String>,
}

/// How lifeboat talks to a database. See the module documentation for the blocking model.
pub trait Driver: Send + Sync {
    /// The driver's configuration name (`sqlite`, `exec`).
    fn kind(&self) -> &'static str;

    /// The databases this driver manages, indexed by [`DbId`].
    fn databases(&self) -> &[DatabaseSpec];

    /// Primary: take a backup and publish it in the outbox. Returns the new artifacts: none when
    /// nothing changed since the last artifact of that kind (logs, incrementals).
    fn take_backup(&self, request: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError>;

    /// Whether [`Driver::collect_logs`] can ever find something (the default finds nothing):
    /// when not, the agent answers the core's collection timer without a trip to a blocking
    /// thread.
    fn collects_logs(&self) -> bool {
        false
    }

    /// Primary: publish the logs the database finished on its own since the last call (e.g.
    /// PostgreSQL's `archive_timeout`), without forcing a new one. The agent calls it often
    /// while this site is the writable primary, so such logs ship at once instead of at the
    /// next scheduled log backup. Default: none.
    fn collect_logs(&self, request: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError> {
        let _ = request;
        Ok(Vec::new())
    }

    /// Primary: gaps the change capture healed since the last call, per database, in the
    /// driver's words (see `Input::CaptureGap`); the agent raises a `capture_gap` notice for
    /// each. Default: none.
    fn capture_gaps(&self) -> Vec<(DbId, String)> {
        Vec::new()
    }

    /// List the artifacts in a directory (an outbox after a restart, an inbox): those with a
    /// readable manifest and a file, plus the problems with the others. Does not hash files.
    fn discover(&self, dir: &Path) -> Result<Discovery, DriverError> {
        manifest::discover(dir)
    }

    /// The database's current position: its write position at a primary (for RPO), its restore
    /// position at a secondary.
    fn position(&self, db: DbId) -> Result<Lsn, DriverError>;

    /// Secondary: restore (apply) a received artifact to the database and return the new
    /// position. The artifact's bytes are checked against its manifest first; a full replaces
    /// the database, an incremental or log is applied in place and verified.
    fn restore(&self, artifact: &ArtifactFile) -> Result<Lsn, DriverError>;

    /// Secondary: drop and recreate the database from a full backup. The old copy stays in
    /// service until the new one is restored and verified, then they are swapped.
    fn reseed(&self, full: &ArtifactFile) -> Result<Lsn, DriverError>;

    /// Make this site's copy of the database the writable primary at `epoch`. Returns the
    /// position it starts from.
    fn promote(&self, db: DbId, epoch: Epoch) -> Result<Lsn, DriverError>;

    /// [`Driver::promote`] for a failover to a chosen point (`lifeboat failover --until`): open
    /// at the position the chain restored, without anything this site received beyond it
    /// (PostgreSQL's streamed WAL, which may hold writes from after the point). A driver that
    /// holds nothing beyond its restored position promotes as usual.
    fn promote_restored(&self, db: DbId, epoch: Epoch) -> Result<Lsn, DriverError> {
        self.promote(db, epoch)
    }

    /// What the last rebuilds ([`Driver::reseed`]) found that this site's old copy wrote and
    /// the new primary's history lacks (a former primary's writes lost in a failover), taken
    /// once. Default: the driver cannot tell.
    fn take_lost_writes(&self) -> Vec<lifeboat_core::protocol::LostWrites> {
        Vec::new()
    }

    /// Services of this site that the other site's receiver reaches through a transport
    /// tunnel, by database (PostgreSQL: its server, when streaming). Empty: none.
    fn tunnel_targets(&self) -> Vec<Option<String>> {
        Vec::new()
    }

    /// Primary: look at each database's stream to the recovery site (called every second) and
    /// say which alarms began (`true`) or ended since the last call, in the driver's words.
    fn watch_streams(&self) -> Vec<(DbId, lifeboat_core::protocol::StreamAlarm, bool, String)> {
        Vec::new()
    }

    /// What each receiver of the other site's stream is doing (for `/status`). Reading the
    /// received position may read the newest streamed file: called every few seconds.
    fn stream_reports(&self) -> Vec<StreamReport> {
        Vec::new()
    }

    /// Receive `db`'s changes continuously from `source` (the local end of a tunnel to the
    /// other site's service, see [`Driver::tunnel_targets`]), or stop (`None`). Called while
    /// the site's role says so; idempotent. Default: the driver does not stream.
    fn receive_from(&self, db: DbId, source: Option<std::net::SocketAddr>) {
        let _ = (db, source);
    }

    /// Stop the database accepting writes. Only a live agent can hold a fence: if the agent
    /// dies, the fence goes with it (the external fence hook covers that case).
    fn fence(&self, db: DbId) -> Result<(), DriverError>;

    /// Accept writes again (a primary that renewed or re-acquired its lease at `epoch`).
    fn unfence(&self, db: DbId, epoch: Epoch) -> Result<(), DriverError>;

    /// Is the database service healthy (it answers a trivial query)?
    fn probe(&self, db: DbId) -> Result<(), DriverError>;

    /// Restore `chain` (a full first, or deltas applied over a copy of the current database)
    /// into a scratch copy, run the check, discard the copy. The database is not touched.
    fn drill(&self, db: DbId, chain: &[ArtifactFile]) -> Result<DrillOutcome, DriverError>;
}

/// The spec of `db`, or a configuration error naming the driver.
fn spec_of<'a>(
    specs: &'a [DatabaseSpec],
    db: DbId,
    driver: &str,
) -> Result<&'a DatabaseSpec, DriverError> {
    specs.get(db.0 as usize).ok_or_else(|| {
        DriverError::new(
            ErrorKind::Config,
            format!(
                "the {driver} driver has no database {db} (it knows {}): the driver's database \
                 list must match the configuration's `databases`",
                specs.len()
            ),
        )
    })
}

/// An artifact must name the same database as this site's database of the same index.
fn check_artifact_db(spec: &DatabaseSpec, artifact: &ArtifactFile) -> Result<(), DriverError> {
    if artifact.manifest.db == spec.name {
        return Ok(());
    }
    Err(DriverError::new(
        ErrorKind::Config,
        format!(
            "artifact {} is for database {:?} ({}), but {} on this site is {:?}: both sites must \
             list the same databases in the same order",
            artifact.path.display(),
            artifact.manifest.db,
            artifact.manifest.db_id,
            artifact.manifest.db_id,
            spec.name
        ),
    ))
}

/// Database names must be usable in file names and unique.
fn check_specs(specs: &[DatabaseSpec], driver: &str) -> Result<(), DriverError> {
    for (i, spec) in specs.iter().enumerate() {
        if spec.name.is_empty() || spec.name.contains(['/', '\0']) || spec.name.starts_with('.') {
            return Err(DriverError::new(
                ErrorKind::Config,
                format!(
                    "{driver} driver: database name {:?} is empty, starts with `.` or contains \
                     `/`; it must be usable in artifact file names",
                    spec.name
                ),
            ));
        }
        if specs[..i].iter().any(|other| other.name == spec.name) {
            return Err(DriverError::new(
                ErrorKind::Config,
                format!("{driver} driver: database {:?} is listed twice", spec.name),
            ));
        }
    }
    Ok(())
}
