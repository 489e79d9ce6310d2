//! What the driver writes for PostgreSQL: the spool directories, `wal.toml`, and the cluster's
//! `lifeboat.conf` (included from `postgresql.conf`).

use super::config::{PostgresConfig, WalConfig};
use super::server::Server;
use super::spool::{self, OsUser};
use super::Slot;
use crate::drivers::DriverError;
use std::fs;
use std::path::Path;

/// The file the driver owns inside each data directory.
pub const CONF_FILE: &str = "lifeboat.conf";
/// The line that makes `postgresql.conf` read it (last, so its settings win).
pub const INCLUDE_LINE: &str = "include_if_exists = 'lifeboat.conf'";

/// Create the spool directories of one database, owned by PostgreSQL's user.
pub fn prepare_spool(wal: &WalConfig, user: Option<OsUser>) -> Result<(), DriverError> {
    // A promotion's marker left by a crash would keep `wal-fetch` from waiting for good.
    let _ = fs::remove_file(wal.serve_dir().join(super::cli::HANDING_OVER));
    for dir in [
        wal.spool.clone(),
        wal.push_dir(),
        wal.history_dir(),
        wal.aside_dir(),
        wal.serve_dir(),
    ] {
        spool::make_dir_for(&dir, user).map_err(|e| {
            DriverError::io(
                format!(
                    "creating the spool directory {} for database {} (PostgreSQL's user must \
                     be able to reach it: every parent directory needs o+x)",
                    dir.display(),
                    wal.db
                ),
                &e,
            )
        })?;
    }
    Ok(())
}

/// The cluster's WAL segment size, from `pg_controldata` (`None` without a cluster).
pub fn segment_size(server: &Server) -> Option<u64> {
    if !server.data_dir().join("global/pg_control").exists() {
        return None;
    }
    server
        .controldata()
        .ok()?
        .get("Bytes per WAL segment")?
        .parse()
        .ok()
}

/// Write `wal.toml` (readable by PostgreSQL's user).
pub fn write_wal_toml(
    wal: &WalConfig,
    path: &Path,
    user: Option<OsUser>,
) -> Result<(), DriverError> {
    let text = toml::to_string(wal).expect("the wal configuration encodes");
    let text = format!(
        "# Written by lifeboat's postgres driver for `wal-push` / `wal-fetch`; do not edit.\n{text}"
    );
    spool::write_durably(path, text.as_bytes())
        .and_then(|_| spool::give_to(path, user))
        .map_err(|e| DriverError::io(format!("writing {}", path.display()), &e))
}

/// Quote a word for `sh -c` (PostgreSQL runs archive/restore commands through the shell).
fn sh_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// A value for `postgresql.conf`: single quotes, inner quotes doubled.
fn conf_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `archive_command` and `restore_command` for a database whose `wal.toml` is at `wal_toml`.
pub fn commands(cfg: &PostgresConfig, wal_toml: &Path) -> (String, String) {
    let bin = sh_quote(&cfg.lifeboat_bin.to_string_lossy());
    let conf = sh_quote(&wal_toml.to_string_lossy());
    (
        format!("{bin} wal-push %p --config {conf}"),
        format!("{bin} wal-fetch %f %p --config {conf}"),
    )
}

/// The text of `lifeboat.conf` for a slot.
pub fn cluster_conf(cfg: &PostgresConfig, slot: &Slot) -> String {
    let mut text = conf_text(
        cfg,
        &slot.server.db.name,
        slot.server.db.port,
        &slot.wal_toml,
    );
    if slot.sync_degraded.load(std::sync::atomic::Ordering::SeqCst) {
        // Synchronous mode degraded (`on_synchronous_timeout = "degrade"`): commits go on
        // without the recovery site until its receiver streams again.
        text.push_str("synchronous_standby_names = ''\n");
    }
    text
}

/// The text of `lifeboat.conf` for database `name` on `port` whose `wal.toml` is `wal_toml`.
pub fn conf_text(cfg: &PostgresConfig, name: &str, port: u16, wal_toml: &Path) -> String {
    let (archive, restore) = commands(cfg, wal_toml);
    let mut stream = String::new();
    if cfg.stream {
        stream.push_str(&format!(
            "max_slot_wal_keep_size = {}MB\n",
            cfg.max_slot_wal_keep_mb
        ));
    }
    if cfg.synchronous {
        stream.push_str(&format!(
            "synchronous_standby_names = {}\n",
            conf_string(super::stream::SLOT)
        ));
    }
    format!(
        "# Managed by lifeboat's postgres driver (database {name}); rewritten on start, reseed\n\
         # and promotion. postgresql.conf includes it last: {INCLUDE_LINE}\n\
         port = {port}\n\
         wal_level = replica\n\
         archive_mode = on\n\
         archive_command = {archive}\n\
         archive_timeout = {timeout}\n\
         restore_command = {restore}\n\
         recovery_target_timeline = 'latest'\n\
         wal_retrieve_retry_interval = {retry}\n\
         recovery_prefetch = off\n\
         recovery_init_sync_method = syncfs\n\
         hot_standby = on\n\
         {stream}",
        archive = conf_string(&archive),
        restore = conf_string(&restore),
        timeout = cfg.archive_timeout_s,
        retry = cfg.retrieve_retry_ms,
    )
}

/// Write `lifeboat.conf` into the data directory and make `postgresql.conf` include it.
pub fn write_cluster_conf(
    cfg: &PostgresConfig,
    slot: &Slot,
    user: Option<OsUser>,
) -> Result<(), DriverError> {
    let data = slot.server.data_dir();
    let conf = data.join(CONF_FILE);
    spool::write_durably(&conf, cluster_conf(cfg, slot).as_bytes())
        .and_then(|_| spool::give_to(&conf, user))
        .map_err(|e| DriverError::io(format!("writing {}", conf.display()), &e))?;
    let main = data.join("postgresql.conf");
    let text = fs::read_to_string(&main)
        .map_err(|e| DriverError::io(format!("reading {}", main.display()), &e))?;
    if !text.lines().any(|l| l.trim() == INCLUDE_LINE) {
        let mut text = text;
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(INCLUDE_LINE);
        text.push('\n');
        spool::write_durably(&main, text.as_bytes())
            .and_then(|_| spool::give_to(&main, user))
            .map_err(|e| DriverError::io(format!("writing {}", main.display()), &e))?;
    }
    Ok(())
}

/// Write an empty marker file (`standby.signal`) owned by PostgreSQL's user.
pub fn touch(path: &Path, user: Option<OsUser>) -> Result<(), DriverError> {
    spool::write_durably(path, b"")
        .and_then(|_| spool::give_to(path, user))
        .map_err(|e| DriverError::io(format!("writing {}", path.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's five steps show `lifeboat.conf` line for line.
    #[test]
    fn the_readme_shows_exactly_the_lines_the_driver_writes() {
        let mut cfg = PostgresConfig::new("/var/lib/lifeboat/pg-spool", Vec::new());
        cfg.lifeboat_bin = "/usr/local/bin/lifeboat".into();
        let text = conf_text(
            &cfg,
            "sales",
            5432,
            Path::new("/var/lib/lifeboat/pg-spool/sales/wal.toml"),
        );
        let readme = crate::drivers::postgres::config::readme_section();
        let start = readme
            .find("```ini\n")
            .expect("the README shows lifeboat.conf")
            + 7;
        let end = start + readme[start..].find("```").expect("the block ends");
        let shown: Vec<&str> = readme[start..end].lines().collect();
        let written: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(shown, written);
    }

    #[test]
    fn commands_are_quoted_for_the_shell_and_for_postgresql_conf() {
        assert_eq!(
            sh_quote("/usr/local/bin/lifeboat"),
            "/usr/local/bin/lifeboat"
        );
        assert_eq!(sh_quote("/a b/it's"), "'/a b/it'\\''s'");
        assert_eq!(conf_string("x 'y'"), "'x ''y'''");
    }
}
