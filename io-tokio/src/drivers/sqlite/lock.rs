//! SQLite locks held by the driver, each with the raw file handle used under it.
//!
//! SQLite locks files with POSIX advisory locks, and POSIX drops *every* lock a process holds on
//! a file when the process closes *any* descriptor of that file. A raw handle opened and closed
//! next to a SQLite connection would therefore silently release that connection's lock (a fence
//! would vanish). So the driver opens raw handles on a live database only inside a [`HeldLock`],
//! after the lock is taken, and closes them only after the lock is released; while a fence is
//! held, every raw read goes through the fence's own handle. Other code in the agent process
//! must not keep SQLite transactions open on the same files.

use super::super::durable::open_rw;
use super::super::error::{DriverError, ErrorKind};
use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The SQLite lock level to hold.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum LockLevel {
    /// A read transaction: no writer can change the file (consistent snapshots).
    Shared,
    /// `BEGIN IMMEDIATE`: other writers get SQLITE_BUSY, readers continue (the fence).
    Reserved,
    /// `BEGIN EXCLUSIVE`: nobody else reads or writes (applying pages to a standby).
    Exclusive,
}

impl LockLevel {
    fn begin(self) -> &'static str {
        match self {
            LockLevel::Shared => "BEGIN DEFERRED",
            LockLevel::Reserved => "BEGIN IMMEDIATE",
            LockLevel::Exclusive => "BEGIN EXCLUSIVE",
        }
    }
}

/// A SQLite transaction holding a lock on a database file, and a raw handle on the same file
/// (read-only, or read-write for `Exclusive`). Dropping it ends the transaction first; the
/// raw handle closes after, when this process holds no lock on the file any more.
pub(super) struct HeldLock {
    // Field order is drop order: the connection (its transaction already ended) before the
    // raw handle.
    conn: Connection,
    file: File,
    level: LockLevel,
    path: PathBuf,
    db_name: String,
    active: bool,
}

impl HeldLock {
    /// Take `level` on the database at `path`, waiting up to `busy` for other holders.
    pub fn acquire(
        path: &Path,
        db_name: &str,
        level: LockLevel,
        busy: Duration,
    ) -> Result<HeldLock, DriverError> {
        let conn = open_existing(path, db_name, busy, false)?;
        // The fence works in either mode (BEGIN IMMEDIATE); raw reads and page writes need the
        // database file to hold every committed page, as in rollback-journal mode.
        if level != LockLevel::Reserved {
            ensure_rollback_journal(&conn, path, db_name)?;
        }
        let what = || format!("locking database {db_name} ({})", path.display());
        conn.execute_batch(level.begin())
            .map_err(|e| DriverError::sqlite(what(), &e))?;
        if level == LockLevel::Shared {
            // A deferred transaction takes its SHARED lock at the first read (rolling back a hot
            // journal first, if a writer crashed).
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| DriverError::sqlite(what(), &e))?;
        }
        let opened = if level == LockLevel::Exclusive {
            open_rw(path)
        } else {
            File::open(path)
        };
        let file =
            opened.map_err(|e| DriverError::io(format!("opening {}", path.display()), &e))?;
        Ok(HeldLock {
            conn,
            file,
            level,
            path: path.to_path_buf(),
            db_name: db_name.to_string(),
            active: true,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// End the transaction and begin it again at the same level. SQLite then re-reads the
    /// header, sees the change counter moved and drops its page cache, so queries through
    /// [`HeldLock::conn`] see what raw writes put into the file.
    pub fn renew(&mut self) -> Result<(), DriverError> {
        let what = || {
            format!(
                "re-locking database {} ({})",
                self.db_name,
                self.path.display()
            )
        };
        self.conn
            .execute_batch("ROLLBACK")
            .map_err(|e| DriverError::sqlite(what(), &e))?;
        self.active = false;
        self.conn
            .execute_batch(self.level.begin())
            .map_err(|e| DriverError::sqlite(what(), &e))?;
        self.active = true;
        Ok(())
    }

    /// End the transaction (releasing the lock), then close the handles.
    pub fn release(mut self) -> Result<(), DriverError> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        self.conn.execute_batch("ROLLBACK").map_err(|e| {
            DriverError::sqlite(
                format!(
                    "unlocking database {} ({})",
                    self.db_name,
                    self.path.display()
                ),
                &e,
            )
        })
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.active {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Open a connection to an existing database file (never create one).
pub(super) fn open_existing(
    path: &Path,
    db_name: &str,
    busy: Duration,
    read_only: bool,
) -> Result<Connection, DriverError> {
    if !path.is_file() {
        return Err(DriverError::new(
            ErrorKind::NotFound,
            format!(
                "database {db_name}: file {} does not exist; create it, restore a full backup \
                 into it, or fix its path in the configuration",
                path.display()
            ),
        ));
    }
    let mode = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    };
    let what = || format!("opening database {db_name} ({})", path.display());
    let conn = Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| DriverError::sqlite(what(), &e))?;
    conn.busy_timeout(busy)
        .map_err(|e| DriverError::sqlite(what(), &e))?;
    Ok(conn)
}

/// The driver's LSN is the header's change counter, which only rollback-journal mode keeps per
/// transaction: switch a WAL database back, or say why not.
pub(super) fn ensure_rollback_journal(
    conn: &Connection,
    path: &Path,
    db_name: &str,
) -> Result<(), DriverError> {
    let what = || {
        format!(
            "reading the journal mode of database {db_name} ({})",
            path.display()
        )
    };
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| DriverError::sqlite(what(), &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(());
    }
    let switched: Result<String, _> =
        conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0));
    match switched {
        Ok(m) if m.eq_ignore_ascii_case("delete") => {
            tracing::warn!(
                db = db_name,
                path = %path.display(),
                "switched the database from WAL to rollback-journal mode (journal_mode=DELETE), \
                 which the sqlite driver needs"
            );
            Ok(())
        }
        other => Err(DriverError::new(
            ErrorKind::Unsupported,
            format!(
                "database {db_name} ({}) is in WAL mode and could not be switched to \
                 rollback-journal mode ({}); the sqlite driver needs journal_mode=DELETE or \
                 TRUNCATE: stop the application, run `PRAGMA journal_mode=DELETE`, and configure \
                 the application not to enable WAL",
                path.display(),
                match other {
                    Ok(m) => format!("SQLite answered {m:?}"),
                    Err(e) => e.to_string(),
                }
            ),
        )),
    }
}
