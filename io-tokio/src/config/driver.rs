//! `[driver]` of a site file: which driver, where the databases are, and opening it.

use super::SiteFile;
use crate::drivers::postgres::{PostgresConfig, PostgresDriver};
use crate::drivers::{DatabaseSpec, Driver, ExecConfig, ExecDriver, SqliteConfig, SqliteDriver};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// `[driver]`: which driver and where the databases are. The databases must be listed in the
/// order of `engine.databases` (or left out: `<data_dir>/db/<name>.sqlite`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum DriverConfig {
    /// The embedded default: SQLite files, in WAL or rollback-journal mode.
    Sqlite {
        #[serde(default)]
        databases: Vec<DatabaseSpec>,
        /// The driver's private state (shadow copies, chain state); default `<data_dir>/driver`.
        #[serde(default)]
        state_dir: Option<PathBuf>,
        #[serde(default)]
        busy_timeout_ms: Option<u64>,
        #[serde(default)]
        probe_timeout_ms: Option<u64>,
        /// A query a drill runs on its scratch copy (it must return a row).
        #[serde(default)]
        drill_check_sql: Option<String>,
        /// How often the standby's `PRAGMA quick_check` runs after a log or incremental is
        /// applied (0: after every one).
        #[serde(default)]
        check_every_ms: Option<u64>,
    },
    /// Any database, through command templates (`[driver.commands]`).
    Exec {
        #[serde(default)]
        databases: Vec<DatabaseSpec>,
        #[serde(default)]
        commands: Box<ExecConfig>,
    },
    /// PostgreSQL clusters: WAL archiving, base backups, a warm standby (see the README's
    /// "Protect a PostgreSQL database in five steps").
    Postgres(PostgresConfig),
}

impl DriverConfig {
    /// The databases as the file lists them (empty: the defaults of the driver).
    pub fn listed(&self) -> Vec<DatabaseSpec> {
        match self {
            DriverConfig::Sqlite { databases, .. } | DriverConfig::Exec { databases, .. } => {
                databases.clone()
            }
            DriverConfig::Postgres(p) => p
                .databases
                .iter()
                .map(|d| DatabaseSpec {
                    name: d.name.clone(),
                    path: d.data_dir.clone(),
                })
                .collect(),
        }
    }

    /// Resolve every relative path against the directory of the site file.
    pub(super) fn resolve_paths(&mut self, resolve: impl Fn(&std::path::Path) -> PathBuf) {
        match self {
            DriverConfig::Sqlite {
                databases,
                state_dir,
                ..
            } => {
                for d in databases.iter_mut() {
                    d.path = resolve(&d.path);
                }
                if let Some(s) = state_dir {
                    *s = resolve(s);
                }
            }
            DriverConfig::Exec {
                databases,
                commands,
            } => {
                for d in databases.iter_mut() {
                    d.path = resolve(&d.path);
                }
                if let Some(s) = &mut commands.scratch_dir {
                    *s = resolve(s);
                }
            }
            DriverConfig::Postgres(p) => {
                p.bin_dir = resolve(&p.bin_dir);
                p.spool_dir = resolve(&p.spool_dir);
                p.lifeboat_bin = resolve(&p.lifeboat_bin);
                for d in p.databases.iter_mut() {
                    d.data_dir = resolve(&d.data_dir);
                    if let Some(l) = &mut d.log_file {
                        *l = resolve(l);
                    }
                }
            }
        }
    }
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig::Sqlite {
            databases: Vec::new(),
            state_dir: None,
            busy_timeout_ms: None,
            probe_timeout_ms: None,
            drill_check_sql: None,
            check_every_ms: None,
        }
    }
}

/// The databases of a site file's driver, defaults filled in.
pub fn database_specs(file: &SiteFile) -> Vec<DatabaseSpec> {
    let databases = file.driver.listed();
    if databases.is_empty() {
        file.engine
            .databases
            .iter()
            .map(|n| DatabaseSpec {
                name: n.clone(),
                path: file.data_dir.join("db").join(format!("{n}.sqlite")),
            })
            .collect()
    } else {
        databases
    }
}

/// Open the configured driver.
pub fn open_driver(file: &SiteFile) -> anyhow::Result<Arc<dyn Driver>> {
    let specs = database_specs(file);
    match &file.driver {
        DriverConfig::Sqlite {
            state_dir,
            busy_timeout_ms,
            probe_timeout_ms,
            drill_check_sql,
            check_every_ms,
            ..
        } => {
            let mut c = SqliteConfig::new(
                state_dir
                    .clone()
                    .unwrap_or_else(|| file.data_dir.join("driver")),
            );
            if let Some(v) = busy_timeout_ms {
                c.busy_timeout_ms = *v;
            }
            if let Some(v) = probe_timeout_ms {
                c.probe_timeout_ms = *v;
            }
            c.drill_check_sql = drill_check_sql.clone();
            if let Some(v) = check_every_ms {
                c.check_every_ms = *v;
            }
            for s in &specs {
                if let Some(dir) = s.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            Ok(Arc::new(SqliteDriver::open(c, specs)?))
        }
        DriverConfig::Exec { commands, .. } => {
            Ok(Arc::new(ExecDriver::new((**commands).clone(), specs)?))
        }
        DriverConfig::Postgres(p) => Ok(Arc::new(PostgresDriver::open(p.clone())?)),
    }
}
