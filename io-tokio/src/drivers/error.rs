//! The one error type of every driver. It carries what the core needs
//! (`lifeboat_core::protocol::Failure { code, message, permanent }`) plus a kind to branch on.

use lifeboat_core::protocol::Failure;
use std::fmt;
use std::io;

/// Codes for failures the drivers detect themselves. They sit above exit codes (0..=255),
/// errno values and SQLite's extended result codes (< 10 000), so a code never means two things.
pub const LIFEBOAT_CODE_BASE: i32 = 20_000;

/// What went wrong, for callers that branch on it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The driver's configuration (unknown database, bad template, unusable state directory).
    Config,
    /// A file operation failed (the code is the errno when there is one).
    Io,
    /// SQLite reported an error (the code is SQLite's extended result code).
    Sqlite,
    /// The database is locked by someone else; retrying later may succeed.
    Busy,
    /// A database file or artifact file does not exist.
    NotFound,
    /// The manifest beside an artifact is missing.
    ManifestMissing,
    /// The manifest is not valid JSON, misses fields or describes an impossible artifact.
    ManifestInvalid,
    /// The manifest was written by an unknown format version.
    ManifestVersion,
    /// The artifact file's size differs from its manifest.
    SizeMismatch,
    /// The artifact file's checksum differs from its manifest.
    ChecksumMismatch,
    /// The artifact's own bytes are malformed (magic, version, structure, header).
    ArtifactInvalid,
    /// The artifact's LSN range does not fit the database's position.
    OutOfOrder,
    /// The database says it is at the artifact's end, but its pages differ from the artifact's.
    Diverged,
    /// `PRAGMA quick_check` / `integrity_check` (or a drill's check) did not say `ok`.
    CheckFailed,
    /// An incremental was asked for before any full backup exists to base it on.
    NoBaseFull,
    /// The database or the configuration cannot do this (WAL mode, no command template...).
    Unsupported,
    /// An exec command exited with a non-zero status (the code is its exit status).
    CommandFailed,
    /// An exec command ran past its time limit and was killed.
    Timeout,
    /// A point-in-time restore's target lies after everything the chain it was given holds
    /// (a longer chain, or a later segment, may reach it).
    BeyondChain,
}

impl ErrorKind {
    /// Stable snake_case name, for logs and status output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Io => "io",
            ErrorKind::Sqlite => "sqlite",
            ErrorKind::Busy => "busy",
            ErrorKind::NotFound => "not_found",
            ErrorKind::ManifestMissing => "manifest_missing",
            ErrorKind::ManifestInvalid => "manifest_invalid",
            ErrorKind::ManifestVersion => "manifest_version",
            ErrorKind::SizeMismatch => "size_mismatch",
            ErrorKind::ChecksumMismatch => "checksum_mismatch",
            ErrorKind::ArtifactInvalid => "artifact_invalid",
            ErrorKind::OutOfOrder => "out_of_order",
            ErrorKind::Diverged => "diverged",
            ErrorKind::CheckFailed => "check_failed",
            ErrorKind::NoBaseFull => "no_base_full",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::CommandFailed => "command_failed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::BeyondChain => "beyond_chain",
        }
    }

    /// The code used when the failure has no native one (errno, SQLite code, exit status).
    pub fn code(self) -> i32 {
        LIFEBOAT_CODE_BASE
            + match self {
                ErrorKind::Config => 1,
                ErrorKind::Io => 2,
                ErrorKind::Sqlite => 3,
                ErrorKind::Busy => 4,
                ErrorKind::NotFound => 5,
                ErrorKind::ManifestMissing => 6,
                ErrorKind::ManifestInvalid => 7,
                ErrorKind::ManifestVersion => 8,
                ErrorKind::SizeMismatch => 9,
                ErrorKind::ChecksumMismatch => 10,
                ErrorKind::ArtifactInvalid => 11,
                ErrorKind::OutOfOrder => 12,
                ErrorKind::Diverged => 13,
                ErrorKind::CheckFailed => 14,
                ErrorKind::NoBaseFull => 15,
                ErrorKind::Unsupported => 16,
                ErrorKind::CommandFailed => 17,
                ErrorKind::Timeout => 18,
                ErrorKind::BeyondChain => 19,
            }
    }

    /// Whether retrying the same operation with the same inputs can never help.
    pub fn permanent_by_default(self) -> bool {
        match self {
            ErrorKind::Config
            | ErrorKind::ManifestMissing
            | ErrorKind::ManifestInvalid
            | ErrorKind::ManifestVersion
            | ErrorKind::SizeMismatch
            | ErrorKind::ChecksumMismatch
            | ErrorKind::ArtifactInvalid
            | ErrorKind::Diverged
            | ErrorKind::CheckFailed
            | ErrorKind::Unsupported => true,
            ErrorKind::Io
            | ErrorKind::Sqlite
            | ErrorKind::Busy
            | ErrorKind::NotFound
            | ErrorKind::OutOfOrder
            | ErrorKind::NoBaseFull
            | ErrorKind::CommandFailed
            | ErrorKind::Timeout
            | ErrorKind::BeyondChain => false,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A driver failure: a kind, a code, a message that names the file, the database and what to
/// do next, and whether retrying can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub kind: ErrorKind,
    /// Exit status, errno, SQLite extended result code, or `LIFEBOAT_CODE_BASE + n`.
    pub code: i32,
    pub message: String,
    pub permanent: bool,
}

impl DriverError {
    /// An error with the kind's own code and default permanence.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DriverError {
            kind,
            code: kind.code(),
            message: message.into(),
            permanent: kind.permanent_by_default(),
        }
    }

    pub fn with_code(mut self, code: i32) -> Self {
        self.code = code;
        self
    }

    pub fn with_permanent(mut self, permanent: bool) -> Self {
        self.permanent = permanent;
        self
    }

    /// A file operation failed: `context` says what was being done to which file.
    pub fn io(context: impl fmt::Display, err: &io::Error) -> Self {
        let kind = if err.kind() == io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        let e = DriverError::new(kind, format!("{context}: {err}"));
        match err.raw_os_error() {
            Some(errno) => e.with_code(errno),
            None => e,
        }
    }

    /// SQLite failed: `context` says what was being done to which database.
    pub fn sqlite(context: impl fmt::Display, err: &rusqlite::Error) -> Self {
        match err {
            rusqlite::Error::SqliteFailure(ffi, _) => {
                let kind = match ffi.code {
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                        ErrorKind::Busy
                    }
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase => {
                        ErrorKind::CheckFailed
                    }
                    rusqlite::ErrorCode::CannotOpen => ErrorKind::NotFound,
                    _ => ErrorKind::Sqlite,
                };
                let hint = if kind == ErrorKind::Busy {
                    "; another connection holds the lock, retry later"
                } else {
                    ""
                };
                DriverError::new(kind, format!("{context}: {err}{hint}"))
                    .with_code(ffi.extended_code)
            }
            other => DriverError::new(ErrorKind::Sqlite, format!("{context}: {other}")),
        }
    }

    /// Prefix the message with more context, keeping kind, code and permanence.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }

    /// The core's view of this failure.
    pub fn to_failure(&self) -> Failure {
        Failure {
            code: self.code,
            message: format!("[{}] {}", self.kind, self.message),
            permanent: self.permanent,
        }
    }
}

impl From<DriverError> for Failure {
    fn from(e: DriverError) -> Failure {
        e.to_failure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_error_maps_to_core_failure_with_code_message_and_permanence() {
        let e = DriverError::new(ErrorKind::ChecksumMismatch, "file x: checksum differs");
        let f = e.to_failure();
        assert_eq!(f.code, LIFEBOAT_CODE_BASE + 10);
        assert!(f.permanent);
        assert!(f.message.contains("checksum_mismatch") && f.message.contains("file x"));
        let io = io::Error::from_raw_os_error(28);
        let e = DriverError::io("writing /out/a", &io);
        assert_eq!((e.kind, e.code, e.permanent), (ErrorKind::Io, 28, false));
    }
}
