//! The postgres driver's configuration (`[driver]` with `kind = "postgres"` in site.toml) and
//! the small per-database file that `wal-push` / `wal-fetch` read (`<spool>/<db>/wal.toml`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Debian's PostgreSQL 15 binaries.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Where `archive_command` / `restore_command` find lifeboat: a copy every user may execute.
pub const DEFAULT_LIFEBOAT_BIN: &str = "/usr/local/bin/lifeboat";
/// `archive_timeout`: PostgreSQL is asked to finish (and so archive) a segment at least this
/// often while anything is written. The engine's scheduled log backups switch segments
/// themselves (`pg_switch_wal()` in `take_backup(Log)`), so the log interval bounds the RPO
/// even where `archive_timeout` does not fire.
pub const DEFAULT_ARCHIVE_TIMEOUT_S: u64 = 60;
/// `wal_retrieve_retry_interval`: how often the standby asks again for a segment that was not
/// there yet.
pub const DEFAULT_RETRIEVE_RETRY_MS: u64 = 1_000;
/// `wal-fetch` waits this long for the segment after the last one it served before it says
/// "not there yet": a backlog then replays back to back instead of one segment per retry.
pub const DEFAULT_FETCH_WAIT_MS: u64 = 1_000;
/// A restore waits at most this long for replay to pass the segment.
pub const DEFAULT_REPLAY_TIMEOUT_MS: u64 = 60_000;
/// Replay that has not moved for this long, while the segment was served and asked for again,
/// is a rejection even when the server log says nothing we recognise.
pub const DEFAULT_STALL_MS: u64 = 15_000;
/// `take_backup(Log)` waits this long for the archiver to push the segment it just switched.
pub const DEFAULT_ARCHIVE_WAIT_MS: u64 = 10_000;
/// `pg_ctl start/stop/promote -t`.
pub const DEFAULT_PG_CTL_TIMEOUT_S: u64 = 60;
/// `max_slot_wal_keep_size` of the streaming slot: the most WAL the primary keeps for a
/// recovery site that stopped receiving.
pub const DEFAULT_MAX_SLOT_WAL_KEEP_MB: u64 = 1024;
/// The slot alert fires when less than this share of the bound is left.
pub const SLOT_WARN_LEFT_PERCENT: u64 = 20;
/// A receiver that exited is started again after this long.
pub const DEFAULT_RECEIVER_RETRY_MS: u64 = 1_000;
/// Synchronous mode: how long commits may wait for an absent recovery site before the
/// `on_synchronous_timeout` policy applies.
pub const DEFAULT_SYNCHRONOUS_TIMEOUT_MS: u64 = 10_000;

fn default_bin_dir() -> PathBuf {
    PathBuf::from(DEFAULT_BIN_DIR)
}
fn default_lifeboat_bin() -> PathBuf {
    PathBuf::from(DEFAULT_LIFEBOAT_BIN)
}
fn default_archive_timeout() -> u64 {
    DEFAULT_ARCHIVE_TIMEOUT_S
}
fn default_retrieve_retry() -> u64 {
    DEFAULT_RETRIEVE_RETRY_MS
}
fn default_fetch_wait() -> u64 {
    DEFAULT_FETCH_WAIT_MS
}
fn default_replay_timeout() -> u64 {
    DEFAULT_REPLAY_TIMEOUT_MS
}
fn default_stall() -> u64 {
    DEFAULT_STALL_MS
}
fn default_archive_wait() -> u64 {
    DEFAULT_ARCHIVE_WAIT_MS
}
fn default_pg_ctl_timeout() -> u64 {
    DEFAULT_PG_CTL_TIMEOUT_S
}
fn default_true() -> bool {
    true
}
fn default_max_slot_wal_keep() -> u64 {
    DEFAULT_MAX_SLOT_WAL_KEEP_MB
}
fn default_receiver_retry() -> u64 {
    DEFAULT_RECEIVER_RETRY_MS
}
fn default_synchronous_timeout() -> u64 {
    DEFAULT_SYNCHRONOUS_TIMEOUT_MS
}

/// What a synchronous primary does when the recovery site has not confirmed WAL for
/// `synchronous_timeout_ms`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnSynchronousTimeout {
    /// Commits go on without the recovery site (asynchronous) and a critical alert says so;
    /// synchronous mode comes back when the receiver is streaming again. The default: losing
    /// the recovery site must not stop the service it protects.
    #[default]
    Degrade,
    /// Commits keep waiting until the recovery site confirms (no acknowledged write can be lost,
    /// and none can be made while the recovery site is away).
    Wait,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_user() -> String {
    "postgres".into()
}

/// The postgres driver: one PostgreSQL cluster per database entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// PostgreSQL's programs (`pg_ctl`, `pg_basebackup`, `pg_controldata`, `psql`).
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// Run `pg_ctl` as this user (PostgreSQL refuses root). Default: `postgres` when the agent
    /// runs as root, else the agent's own user.
    #[serde(default)]
    pub os_user: Option<String>,
    /// The directory shared with PostgreSQL: `wal-push` writes segments here, `wal-fetch` reads
    /// the segments the agent made servable. Owned by `os_user`; the agent reads and writes it.
    pub spool_dir: PathBuf,
    /// The `lifeboat` binary that `archive_command` and `restore_command` run; the `os_user`
    /// must be able to execute it (a checkout under a 0700 home is not).
    #[serde(default = "default_lifeboat_bin")]
    pub lifeboat_bin: PathBuf,
    #[serde(default = "default_archive_timeout")]
    pub archive_timeout_s: u64,
    #[serde(default = "default_retrieve_retry")]
    pub retrieve_retry_ms: u64,
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_ms: u64,
    #[serde(default = "default_replay_timeout")]
    pub replay_timeout_ms: u64,
    #[serde(default = "default_stall")]
    pub stall_ms: u64,
    #[serde(default = "default_archive_wait")]
    pub archive_wait_ms: u64,
    #[serde(default = "default_pg_ctl_timeout")]
    pub pg_ctl_timeout_s: u64,
    /// Instead of `pg_ctl stop -m fast`, fence with this command (`sh -c`; `{data_dir}` and
    /// `{port}` are replaced).
    #[serde(default)]
    pub fence_command: Option<String>,
    /// Stream WAL to the recovery site as PostgreSQL flushes it (`pg_receivewal` through a
    /// transport tunnel, see `stream.rs`); off: only finished segments travel.
    #[serde(default = "default_true")]
    pub stream: bool,
    /// `max_slot_wal_keep_size` (MiB) of the streaming slot on the primary.
    #[serde(default = "default_max_slot_wal_keep")]
    pub max_slot_wal_keep_mb: u64,
    #[serde(default = "default_receiver_retry")]
    pub receiver_retry_ms: u64,
    /// A commit returns only once the recovery site flushed its WAL (needs `stream`).
    #[serde(default)]
    pub synchronous: bool,
    #[serde(default = "default_synchronous_timeout")]
    pub synchronous_timeout_ms: u64,
    #[serde(default)]
    pub on_synchronous_timeout: OnSynchronousTimeout,
    pub databases: Vec<PgDatabase>,
}

/// One PostgreSQL cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PgDatabase {
    /// The database's name in lifeboat (artifact names, alerts).
    pub name: String,
    /// `PGDATA`: the cluster's data directory (with its configuration files).
    pub data_dir: PathBuf,
    pub port: u16,
    /// Where the agent connects (`psql -h`): an address or a socket directory.
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_user")]
    pub dbname: String,
    /// The server log the driver reads PostgreSQL's reasons from. Default:
    /// `<spool>/<db>/postgresql.log`, which the driver passes to `pg_ctl -l` when it starts the
    /// server itself.
    #[serde(default)]
    pub log_file: Option<PathBuf>,
}

impl PostgresConfig {
    /// A configuration with every default, for `databases` under `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>, databases: Vec<PgDatabase>) -> PostgresConfig {
        PostgresConfig {
            bin_dir: default_bin_dir(),
            os_user: None,
            spool_dir: spool_dir.into(),
            lifeboat_bin: default_lifeboat_bin(),
            archive_timeout_s: DEFAULT_ARCHIVE_TIMEOUT_S,
            retrieve_retry_ms: DEFAULT_RETRIEVE_RETRY_MS,
            fetch_wait_ms: DEFAULT_FETCH_WAIT_MS,
            replay_timeout_ms: DEFAULT_REPLAY_TIMEOUT_MS,
            stall_ms: DEFAULT_STALL_MS,
            archive_wait_ms: DEFAULT_ARCHIVE_WAIT_MS,
            pg_ctl_timeout_s: DEFAULT_PG_CTL_TIMEOUT_S,
            fence_command: None,
            stream: true,
            max_slot_wal_keep_mb: DEFAULT_MAX_SLOT_WAL_KEEP_MB,
            receiver_retry_ms: DEFAULT_RECEIVER_RETRY_MS,
            synchronous: false,
            synchronous_timeout_ms: DEFAULT_SYNCHRONOUS_TIMEOUT_MS,
            on_synchronous_timeout: OnSynchronousTimeout::Degrade,
            databases,
        }
    }

    /// The spool directory of one database.
    pub fn db_spool(&self, name: &str) -> PathBuf {
        self.spool_dir
            .join(crate::drivers::manifest::file_safe(name))
    }
}

impl PgDatabase {
    pub fn new(name: &str, data_dir: impl Into<PathBuf>, port: u16) -> PgDatabase {
        PgDatabase {
            name: name.into(),
            data_dir: data_dir.into(),
            port,
            host: default_host(),
            user: default_user(),
            dbname: default_user(),
            log_file: None,
        }
    }
}

/// What `wal-push` and `wal-fetch` need, written by the driver as `<spool>/<db>/wal.toml`
/// (readable by PostgreSQL's user) and named by `--config` in `archive_command` /
/// `restore_command`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    pub format_version: u32,
    /// The database's name in lifeboat.
    pub db: String,
    /// This database's spool directory (`push/`, `history/`, `aside/`, `serve/`).
    pub spool: PathBuf,
    /// The cluster's WAL segment size; 0 means "the size of the file being pushed".
    #[serde(default)]
    pub segment_size: u64,
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_ms: u64,
}

/// The `wal.toml` format this build writes and reads.
pub const WAL_CONFIG_VERSION: u32 = 1;

impl WalConfig {
    /// Read `wal.toml`.
    pub fn load(path: &Path) -> Result<WalConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let cfg: WalConfig =
            toml::from_str(&text).map_err(|e| format!("{} is not valid: {e}", path.display()))?;
        if cfg.format_version != WAL_CONFIG_VERSION {
            return Err(format!(
                "{} is format version {}, this lifeboat reads {WAL_CONFIG_VERSION}",
                path.display(),
                cfg.format_version
            ));
        }
        Ok(cfg)
    }

    pub fn push_dir(&self) -> PathBuf {
        self.spool.join("push")
    }
    pub fn history_dir(&self) -> PathBuf {
        self.spool.join("history")
    }
    pub fn aside_dir(&self) -> PathBuf {
        self.spool.join("aside")
    }
    pub fn serve_dir(&self) -> PathBuf {
        self.spool.join("serve")
    }
    /// `wal-fetch`'s record of what PostgreSQL asked for and what it got.
    pub fn request_log(&self) -> PathBuf {
        self.serve_dir().join("requests.log")
    }
}

/// The README's "Protect a PostgreSQL database in five steps" section, which tests hold to the
/// code (its configuration blocks must load, its `lifeboat.conf` must be what the driver writes).
#[cfg(test)]
pub(crate) fn readme_section() -> &'static str {
    let readme = include_str!("../../../../README.md");
    let start = readme
        .find("## Protect a PostgreSQL database in five steps")
        .expect("the README has the PostgreSQL section");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[driver]` table of the README's five steps, read the way site.toml's internally
    /// tagged `DriverConfig` reads a `kind = "postgres"` variant.
    #[test]
    fn the_readme_driver_table_parses_with_every_default() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
        enum Driver {
            Postgres(PostgresConfig),
        }
        #[derive(Debug, Deserialize)]
        struct Site {
            driver: Driver,
        }
        let readme = readme_section();
        let start = readme
            .find("[driver]")
            .expect("the README has a [driver] table");
        let end = start + readme[start..].find("```").expect("the block ends");
        let site: Site = toml::from_str(&readme[start..end]).expect("the README's table parses");
        let Driver::Postgres(cfg) = site.driver;
        assert_eq!(cfg.databases.len(), 1);
        assert_eq!(cfg.databases[0].name, "sales");
        assert_eq!(cfg.databases[0].port, 5432);
        assert_eq!(cfg.os_user.as_deref(), Some("postgres"));
        assert_eq!(cfg.fetch_wait_ms, DEFAULT_FETCH_WAIT_MS);
        assert_eq!(
            cfg.db_spool("sales"),
            PathBuf::from("/var/lib/lifeboat/pg-spool/sales")
        );
    }

    /// The README's `site.toml` and `arbiter.toml` load the way the agent and the arbiter load
    /// them, with the postgres driver and the same engine settings on both.
    #[test]
    fn the_readme_site_and_arbiter_files_load() {
        let readme = readme_section();
        let block = |first: &str| {
            let start = readme
                .find(&format!("```toml\n{first}"))
                .unwrap_or_else(|| panic!("a toml block starting with {first}"))
                + "```toml\n".len();
            let end = start + readme[start..].find("```").expect("the block ends");
            &readme[start..end]
        };
        let dir = Path::new("/etc/lifeboat");
        let site = crate::config::SiteFile::parse(&dir.join("site.toml"), block("site = "))
            .expect("the README's site.toml loads");
        let arbiter =
            crate::config::ArbiterFile::parse(&dir.join("arbiter.toml"), block("listen = "))
                .expect("the README's arbiter.toml loads");
        assert_eq!(site.engine, arbiter.engine);
        assert_eq!(site.engine.databases, vec!["sales".to_string()]);
        let crate::config::DriverConfig::Postgres(pg) = &site.driver else {
            panic!("the README's driver is postgres");
        };
        assert_eq!(pg.databases[0].name, site.engine.databases[0]);
        assert_eq!(pg.archive_timeout_s, 60);
    }

    #[test]
    fn wal_toml_round_trips() {
        let w = WalConfig {
            format_version: WAL_CONFIG_VERSION,
            db: "sales".into(),
            spool: "/var/lib/lifeboat/pg-spool/sales".into(),
            segment_size: 16 << 20,
            fetch_wait_ms: 1000,
        };
        let text = toml::to_string(&w).unwrap();
        assert_eq!(toml::from_str::<WalConfig>(&text).unwrap(), w);
    }
}
