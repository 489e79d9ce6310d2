//! The `exec` driver: one command template per operation, for any database.
//!
//! Commands run directly (no shell unless the template is `sh -c ...`), stdin closed, within a
//! time limit. A non-zero exit is a failure whose code is the exit status and whose message
//! ends with the last lines of stderr. Placeholders are substituted per argument (a value with
//! spaces stays one argument); every value is also in the environment as `LIFEBOAT_<NAME>`
//! (`LIFEBOAT_PATH`, `LIFEBOAT_LSN_END`...), the safe way to use them inside `sh -c` scripts.
//!
//! | placeholder | value |
//! |---|---|
//! | `{db}`, `{db_id}` | the database's name and index |
//! | `{target}` | the database's configured `path` (data directory, file, connection string) |
//! | `{path}` | the artifact file: to write (backups) or to read (restore, reseed) |
//! | `{kind}` | `full`, `incr` or `tlog` |
//! | `{epoch}` | the epoch (backups, restore, reseed, promote, unfence) |
//! | `{lsn_start}`, `{lsn_end}`, `{lsn}` (= `lsn_end`), `{base_full}` | the artifact's range |
//! | `{chain}`, `{scratch}` | drill: the artifact files in order (one argument each), and an empty scratch directory |
//!
//! Output contracts (the last non-empty line of stdout):
//! - `backup_*`: write the artifact to `{path}` and print `<lsn_start> <lsn_end>` (a full may
//!   print one `<lsn>`), or `none` when nothing changed. An incremental's base is its
//!   `lsn_start`. lifeboat fsyncs, hashes, names the file and writes its manifest.
//! - `position` (required): print the current LSN.
//! - `restore`, `reseed`, `promote`, `drill`: may print the new position; otherwise `restore`
//!   and `reseed` report `lsn_end`, `promote` runs `position`.
//! - `fence`, `unfence`, `probe`: exit status only.
//!
//! A reseed command must itself keep the old database until the new one is verified; lifeboat
//! cannot see inside it.

#[cfg(test)]
mod tests;

pub use crate::process::template::CommandTemplate;
use crate::process::{group as process, template, STDERR_LINES};

use super::error::{DriverError, ErrorKind};
use super::manifest::{self, ArtifactFile, NewArtifact};
use super::{BackupRequest, DatabaseSpec, DrillOutcome, Driver};
use lifeboat_core::{ArtifactKind, DbId, Epoch, Lsn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use template::{Parsed, Vars};

/// Time limit of every command but the probe.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3_600;
/// Time limit of the probe: a probe that hangs is a failed probe.
pub const DEFAULT_PROBE_TIMEOUT_SECS: u64 = 10;

/// The exec driver's configuration: one template per operation (absent = unsupported).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecConfig {
    pub backup_full: Option<CommandTemplate>,
    pub backup_incremental: Option<CommandTemplate>,
    pub backup_log: Option<CommandTemplate>,
    /// Required: the current LSN, for RPO.
    pub position: Option<CommandTemplate>,
    pub restore: Option<CommandTemplate>,
    pub reseed: Option<CommandTemplate>,
    pub promote: Option<CommandTemplate>,
    pub fence: Option<CommandTemplate>,
    pub unfence: Option<CommandTemplate>,
    pub probe: Option<CommandTemplate>,
    pub drill: Option<CommandTemplate>,
    pub timeout_secs: u64,
    pub probe_timeout_secs: u64,
    /// Exit statuses that mean "retrying cannot help" (e.g. the artifact is unreadable).
    pub permanent_exit_codes: Vec<i32>,
    /// Where drills get their scratch directories (default: the system's temp directory).
    pub scratch_dir: Option<PathBuf>,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            backup_full: None,
            backup_incremental: None,
            backup_log: None,
            position: None,
            restore: None,
            reseed: None,
            promote: None,
            fence: None,
            unfence: None,
            probe: None,
            drill: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            probe_timeout_secs: DEFAULT_PROBE_TIMEOUT_SECS,
            permanent_exit_codes: Vec::new(),
            scratch_dir: None,
        }
    }
}

/// The operations, each with its configuration field and its placeholders.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    BackupFull,
    BackupIncremental,
    BackupLog,
    Position,
    Restore,
    Reseed,
    Promote,
    Fence,
    Unfence,
    Probe,
    Drill,
}

const COMMON: [&str; 3] = ["db", "db_id", "target"];

impl Op {
    const ALL: [Op; 11] = [
        Op::BackupFull,
        Op::BackupIncremental,
        Op::BackupLog,
        Op::Position,
        Op::Restore,
        Op::Reseed,
        Op::Promote,
        Op::Fence,
        Op::Unfence,
        Op::Probe,
        Op::Drill,
    ];

    fn field(self) -> &'static str {
        match self {
            Op::BackupFull => "backup_full",
            Op::BackupIncremental => "backup_incremental",
            Op::BackupLog => "backup_log",
            Op::Position => "position",
            Op::Restore => "restore",
            Op::Reseed => "reseed",
            Op::Promote => "promote",
            Op::Fence => "fence",
            Op::Unfence => "unfence",
            Op::Probe => "probe",
            Op::Drill => "drill",
        }
    }

    fn extra_placeholders(self) -> &'static [&'static str] {
        match self {
            Op::BackupFull | Op::BackupIncremental | Op::BackupLog => &["path", "kind", "epoch"],
            Op::Restore => &[
                "path",
                "kind",
                "epoch",
                "lsn",
                "lsn_start",
                "lsn_end",
                "base_full",
            ],
            Op::Reseed => &["path", "kind", "epoch", "lsn", "lsn_start", "lsn_end"],
            Op::Promote | Op::Unfence => &["epoch"],
            Op::Drill => &["chain", "scratch", "lsn"],
            Op::Position | Op::Fence | Op::Probe => &[],
        }
    }

    fn placeholders(self) -> Vec<&'static str> {
        COMMON
            .iter()
            .chain(self.extra_placeholders())
            .copied()
            .collect()
    }

    fn template(self, c: &ExecConfig) -> Option<&CommandTemplate> {
        match self {
            Op::BackupFull => c.backup_full.as_ref(),
            Op::BackupIncremental => c.backup_incremental.as_ref(),
            Op::BackupLog => c.backup_log.as_ref(),
            Op::Position => c.position.as_ref(),
            Op::Restore => c.restore.as_ref(),
            Op::Reseed => c.reseed.as_ref(),
            Op::Promote => c.promote.as_ref(),
            Op::Fence => c.fence.as_ref(),
            Op::Unfence => c.unfence.as_ref(),
            Op::Probe => c.probe.as_ref(),
            Op::Drill => c.drill.as_ref(),
        }
    }

    fn backup(kind: ArtifactKind) -> Op {
        match kind {
            ArtifactKind::Full => Op::BackupFull,
            ArtifactKind::Incremental => Op::BackupIncremental,
            ArtifactKind::Log => Op::BackupLog,
        }
    }
}

/// The exec driver. See the module documentation.
pub struct ExecDriver {
    config: ExecConfig,
    specs: Vec<DatabaseSpec>,
    templates: BTreeMap<Op, Parsed>,
    /// Serialises the commands of one database.
    locks: Vec<Mutex<()>>,
    drills: AtomicU64,
}

impl ExecDriver {
    /// A driver for `databases` (index = [`DbId`]). Every template is parsed and its
    /// placeholders checked now, so a typo fails at start, not at failover.
    pub fn new(
        config: ExecConfig,
        databases: Vec<DatabaseSpec>,
    ) -> Result<ExecDriver, DriverError> {
        super::check_specs(&databases, "exec")?;
        let mut templates = BTreeMap::new();
        for op in Op::ALL {
            if let Some(t) = op.template(&config) {
                let parsed = t.parse(&op.placeholders()).map_err(|why| {
                    DriverError::new(
                        ErrorKind::Config,
                        format!(
                            "exec driver: the `{}` command is invalid: {why}",
                            op.field()
                        ),
                    )
                })?;
                templates.insert(op, parsed);
            }
        }
        if !templates.contains_key(&Op::Position) {
            return Err(DriverError::new(
                ErrorKind::Config,
                "exec driver: a `position` command is required (it reports the LSN that RPO is \
                 measured in); add `position = [...]`",
            ));
        }
        if config.timeout_secs == 0 || config.probe_timeout_secs == 0 {
            return Err(DriverError::new(
                ErrorKind::Config,
                "exec driver: `timeout_secs` and `probe_timeout_secs` must be at least 1",
            ));
        }
        let locks = databases.iter().map(|_| Mutex::new(())).collect();
        Ok(ExecDriver {
            config,
            specs: databases,
            templates,
            locks,
            drills: AtomicU64::new(0),
        })
    }

    fn spec(&self, db: DbId) -> Result<(&DatabaseSpec, MutexGuard<'_, ()>), DriverError> {
        let spec = super::spec_of(&self.specs, db, "exec")?;
        let guard = self.locks[db.0 as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok((spec, guard))
    }

    fn vars(&self, db: DbId, spec: &DatabaseSpec) -> Vars {
        let mut vars = Vars::default();
        vars.set("db", &spec.name)
            .set("db_id", db.0)
            .set("target", spec.path.display());
        vars
    }

    /// Run one operation's command; its stdout on success.
    fn run(&self, op: Op, spec: &DatabaseSpec, vars: &Vars) -> Result<String, DriverError> {
        let template = self.templates.get(&op).ok_or_else(|| {
            DriverError::new(
                ErrorKind::Unsupported,
                format!(
                    "exec driver: no `{}` command is configured (database {}); add `{} = [...]` \
                     to the exec driver's configuration",
                    op.field(),
                    spec.name,
                    op.field()
                ),
            )
        })?;
        let argv = template.render(vars);
        let mut env: Vec<(String, String)> = vars
            .values
            .iter()
            .map(|(k, v)| (format!("LIFEBOAT_{}", k.to_ascii_uppercase()), v.clone()))
            .collect();
        if op == Op::Drill {
            env.push(("LIFEBOAT_CHAIN".into(), vars.chain.join("\n")));
        }
        let secs = if op == Op::Probe {
            self.config.probe_timeout_secs
        } else {
            self.config.timeout_secs
        };
        let program = &argv[0];
        tracing::debug!(op = op.field(), db = %spec.name, ?argv, "exec driver: running");
        let done = process::run(&argv, &env, Duration::from_secs(secs)).map_err(|e| {
            DriverError::io(
                format!(
                    "exec driver: starting `{program}` for `{}` of database {}",
                    op.field(),
                    spec.name
                ),
                &e,
            )
            .with_permanent(e.kind() == std::io::ErrorKind::NotFound)
        })?;
        let stderr = process::last_lines(&done.stderr, STDERR_LINES);
        let stderr = if stderr.is_empty() {
            "(no stderr)".to_string()
        } else {
            stderr
        };
        if done.timed_out {
            return Err(DriverError::new(
                ErrorKind::Timeout,
                format!(
                    "exec driver: `{program}` for `{}` of database {} ran longer than {secs} s \
                     and was killed; raise the time limit or fix the command; stderr: {stderr}",
                    op.field(),
                    spec.name
                ),
            ));
        }
        if done.status != 0 {
            return Err(DriverError::new(
                ErrorKind::CommandFailed,
                format!(
                    "exec driver: `{program}` for `{}` of database {} exited with status {}: \
                     {stderr}",
                    op.field(),
                    spec.name,
                    done.status
                ),
            )
            .with_code(done.status)
            .with_permanent(self.config.permanent_exit_codes.contains(&done.status)));
        }
        Ok(done.stdout)
    }

    fn bad_output(op: Op, spec: &DatabaseSpec, line: &str, expected: &str) -> DriverError {
        DriverError::new(
            ErrorKind::CommandFailed,
            format!(
                "exec driver: the `{}` command for database {} printed {line:?} as its last line; \
                 expected {expected}",
                op.field(),
                spec.name
            ),
        )
    }

    fn restore_like(&self, op: Op, artifact: &ArtifactFile) -> Result<Lsn, DriverError> {
        let m = &artifact.manifest;
        let (spec, _guard) = self.spec(m.db_id)?;
        super::check_artifact_db(spec, artifact)?;
        manifest::check_bytes(artifact)?;
        let mut vars = self.vars(m.db_id, spec);
        vars.set("path", artifact.path.display())
            .set("kind", m.kind.name_word())
            .set("epoch", m.epoch)
            .set("lsn", m.lsn_end)
            .set("lsn_start", m.lsn_start)
            .set("lsn_end", m.lsn_end)
            .set(
                "base_full",
                m.base_full.map(|l| l.to_string()).unwrap_or_default(),
            );
        let out = self.run(op, spec, &vars)?;
        Ok(optional_lsn(&out).unwrap_or(m.lsn_end))
    }

    fn position_locked(&self, db: DbId, spec: &DatabaseSpec) -> Result<Lsn, DriverError> {
        let out = self.run(Op::Position, spec, &self.vars(db, spec))?;
        let line = last_line(&out);
        line.parse::<u64>()
            .map(Lsn)
            .map_err(|_| Self::bad_output(Op::Position, spec, line, "a decimal LSN"))
    }
}

fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
}

/// The LSN a command printed as its last line, if it printed one.
fn optional_lsn(out: &str) -> Option<Lsn> {
    last_line(out).parse::<u64>().ok().map(Lsn)
}

impl Driver for ExecDriver {
    fn kind(&self) -> &'static str {
        "exec"
    }

    fn databases(&self) -> &[DatabaseSpec] {
        &self.specs
    }

    fn take_backup(&self, request: &BackupRequest) -> Result<Vec<ArtifactFile>, DriverError> {
        let op = Op::backup(request.kind);
        let (spec, _guard) = self.spec(request.db)?;
        fs::create_dir_all(&request.outbox).map_err(|e| {
            DriverError::io(
                format!("creating the outbox {}", request.outbox.display()),
                &e,
            )
        })?;
        let staging = manifest::staging_path(&request.outbox, &spec.name, request.kind);
        let _ = fs::remove_file(&staging);
        let mut vars = self.vars(request.db, spec);
        vars.set("path", staging.display())
            .set("kind", request.kind.name_word())
            .set("epoch", request.epoch);
        let out = self.run(op, spec, &vars)?;
        let line = last_line(&out);
        let expected = "`<lsn_start> <lsn_end>`, `<lsn>` (full) or `none`";
        if line.eq_ignore_ascii_case("none") {
            let _ = fs::remove_file(&staging);
            return Ok(Vec::new());
        }
        let numbers: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| Self::bad_output(op, spec, line, expected))?;
        let (start, end) = match (numbers.as_slice(), request.kind) {
            ([a, b], _) => (Lsn(*a), Lsn(*b)),
            ([a], ArtifactKind::Full) => (Lsn(*a), Lsn(*a)),
            _ => return Err(Self::bad_output(op, spec, line, expected)),
        };
        if !staging.is_file() {
            return Err(DriverError::new(
                ErrorKind::CommandFailed,
                format!(
                    "exec driver: the `{}` command for database {} printed {line:?} but wrote no \
                     file at {}",
                    op.field(),
                    spec.name,
                    staging.display()
                ),
            ));
        }
        let artifact = manifest::publish(
            &request.outbox,
            &staging,
            &NewArtifact {
                db_name: &spec.name,
                db: request.db,
                kind: request.kind,
                epoch: request.epoch,
                lsn_start: start,
                lsn_end: end,
                base_full: (request.kind == ArtifactKind::Incremental).then_some(start),
                created_utc: request.created_utc,
            },
        )?;
        tracing::info!(db = %spec.name, artifact = %artifact.describe(), "published");
        Ok(vec![artifact])
    }

    fn position(&self, db: DbId) -> Result<Lsn, DriverError> {
        let (spec, _guard) = self.spec(db)?;
        self.position_locked(db, spec)
    }

    fn restore(&self, artifact: &ArtifactFile) -> Result<Lsn, DriverError> {
        self.restore_like(Op::Restore, artifact)
    }

    fn reseed(&self, full: &ArtifactFile) -> Result<Lsn, DriverError> {
        if full.manifest.kind != ArtifactKind::Full {
            return Err(DriverError::new(
                ErrorKind::ArtifactInvalid,
                format!(
                    "cannot reseed from {}: a reseed needs a full backup",
                    full.describe()
                ),
            ));
        }
        self.restore_like(Op::Reseed, full)
    }

    fn promote(&self, db: DbId, epoch: Epoch) -> Result<Lsn, DriverError> {
        let (spec, _guard) = self.spec(db)?;
        let mut vars = self.vars(db, spec);
        vars.set("epoch", epoch);
        let out = self.run(Op::Promote, spec, &vars)?;
        match optional_lsn(&out) {
            Some(lsn) => Ok(lsn),
            None => self.position_locked(db, spec),
        }
    }

    fn fence(&self, db: DbId) -> Result<(), DriverError> {
        let (spec, _guard) = self.spec(db)?;
        self.run(Op::Fence, spec, &self.vars(db, spec)).map(|_| ())
    }

    fn unfence(&self, db: DbId, epoch: Epoch) -> Result<(), DriverError> {
        let (spec, _guard) = self.spec(db)?;
        let mut vars = self.vars(db, spec);
        vars.set("epoch", epoch);
        self.run(Op::Unfence, spec, &vars).map(|_| ())
    }

    fn probe(&self, db: DbId) -> Result<(), DriverError> {
        // Not serialised with the database's other commands: a probe answers during a restore.
        let spec = super::spec_of(&self.specs, db, "exec")?;
        self.run(Op::Probe, spec, &self.vars(db, spec)).map(|_| ())
    }

    fn drill(&self, db: DbId, chain: &[ArtifactFile]) -> Result<DrillOutcome, DriverError> {
        let (spec, _guard) = self.spec(db)?;
        for artifact in chain {
            super::check_artifact_db(spec, artifact)?;
            manifest::check_bytes(artifact)?;
        }
        let base = self
            .config
            .scratch_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let n = self.drills.fetch_add(1, Ordering::Relaxed);
        let scratch = base.join(format!(
            "lifeboat-drill-{}-{}-{n}",
            manifest::file_safe(&spec.name),
            std::process::id()
        ));
        fs::create_dir_all(&scratch)
            .map_err(|e| DriverError::io(format!("creating {}", scratch.display()), &e))?;
        let upto = chain.last().map(|a| a.manifest.lsn_end);
        let mut vars = self.vars(db, spec);
        vars.set("scratch", scratch.display())
            .set("lsn", upto.map(|l| l.to_string()).unwrap_or_default());
        vars.chain = chain.iter().map(|a| a.path.display().to_string()).collect();
        let out = self.run(Op::Drill, spec, &vars);
        if let Err(e) = fs::remove_dir_all(&scratch) {
            tracing::warn!(db = %spec.name, dir = %scratch.display(), error = %e,
                "could not remove a drill's scratch directory");
        }
        let out = out?;
        Ok(DrillOutcome {
            db,
            position: optional_lsn(&out).or(upto).unwrap_or_default(),
            applied: chain.len(),
            check: "ok".to_string(),
        })
    }
}
