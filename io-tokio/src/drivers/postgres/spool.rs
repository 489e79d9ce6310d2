//! The spool: the directory the agent shares with PostgreSQL's user, one per database.
//!
//! ```text
//! <spool>/<db>/wal.toml        what wal-push / wal-fetch need (written by the driver)
//!              push/           segments wal-push made durable, waiting for take_backup(Log)
//!              history/        timeline .history files (they travel inside segment artifacts)
//!              aside/          .partial and .backup files: kept, never shipped
//!              serve/          segments the driver made servable, in chain order, and
//!                              requests.log (what PostgreSQL asked for, what it got)
//!              postgresql.log  the server log when the driver starts the server
//!              state.rec       the driver's memory (restored position, epoch ↔ timeline), a
//!                              record replaced in place (`crate::record`)
//! ```
//!
//! Every other file that must survive a crash is written to a temporary name, fsynced, renamed
//! into place, and its directory fsynced.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use crate::durable::sync_dir;

/// A hidden temporary name beside `path`, tagged with this process's id: `wal-push` and
/// `wal-fetch` run as PostgreSQL's processes beside the agent's (dot files are never served,
/// pushed or discovered).
pub fn temp_beside(path: &Path) -> PathBuf {
    crate::durable::temp_beside(path, &std::process::id().to_string())
}

/// Write `bytes` as the whole of `path` durably (see [`crate::durable`]), under this
/// process's temporary name.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::durable::write_durably_as(path, &std::process::id().to_string(), bytes)
}

/// [`write_durably`] of the concatenation of `parts`.
pub fn write_parts_durably(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    crate::durable::write_parts_durably_as(path, &std::process::id().to_string(), parts)
}

/// Write `bytes` as the whole of `path` atomically (temporary file, rename) but without fsync:
/// for copies that are rebuilt after a crash anyway (the servable segments).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_beside(path);
    let result = fs::write(&tmp, bytes).and_then(|_| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Append one line (a single `write` on an `O_APPEND` file: concurrent lines never interleave).
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut l = line.to_string();
    l.push('\n');
    f.write_all(l.as_bytes())
}

/// A local user's ids, from `/etc/passwd`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    pub uid: u32,
    pub gid: u32,
}

impl OsUser {
    /// Look a user up by name.
    pub fn lookup(name: &str) -> Option<OsUser> {
        let passwd = fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || f[0] != name {
                return None;
            }
            Some(OsUser {
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
    }
}

/// The effective uid of this process (the owner of `/proc/self`).
pub fn effective_uid() -> u32 {
    fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// Give `path` to `user` (when the agent runs as root and PostgreSQL as another user).
pub fn give_to(path: &Path, user: Option<OsUser>) -> io::Result<()> {
    match user {
        Some(u) => std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid)),
        None => Ok(()),
    }
}

/// Create `dir` (and parents) owned by `user`, mode 0700 for it.
pub fn make_dir_for(dir: &Path, user: Option<OsUser>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir)?;
    give_to(dir, user)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Files of a directory whose names do not start with `.`, sorted by name.
pub fn list(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.file_type()?.is_file() {
            out.push((name, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Milliseconds since the Unix epoch, for request logs and artifact creation times.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
