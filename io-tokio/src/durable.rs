//! Durable files, in one place: anything acknowledged is fsynced first. A file that must survive
//! a crash is written under a hidden temporary name beside it, fsynced, renamed into place, and
//! its directory fsynced (both directories for a move between two). A crash leaves either the
//! old file or the new one, never a part, and never a rename the directory forgot.
//!
//! Every helper returns the `io::Error` of the step that failed; callers name the file and what
//! the operator should do in their own error type.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A hidden temporary name beside `path`: `.<name>.<tag>.tmp`. Nothing that scans a directory
/// for work (discovery, the inbox, the spool) reads dot files. `tag` keeps two writers apart
/// (e.g. a process id where several processes write beside each other).
pub fn temp_beside(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.{tag}.tmp"))
}

/// fsync a directory, so creations, renames and removals in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// fsync a file's contents and metadata.
pub fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

/// Rename an already fsynced file into place and fsync the directory (both directories when it
/// moves between two).
pub fn rename_durably(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent_dir(to))?;
    if parent_dir(from) != parent_dir(to) {
        sync_dir(parent_dir(from))?;
    }
    Ok(())
}

/// Create (or truncate) `path` with `bytes` and fsync it; the caller renames it into place.
pub fn write_file_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_parts_synced(path, &[bytes])
}

/// [`write_file_synced`] of the concatenation of `parts`, without building it in memory.
fn write_parts_synced(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut f = File::create(path)?;
    for part in parts {
        f.write_all(part)?;
    }
    f.sync_all()
}

/// Write `bytes` as the whole of `path` under the temporary tag `tag`: temporary file, fsync,
/// rename, directory fsync. On failure the temporary file is removed and `path` is untouched.
pub fn write_durably_as(path: &Path, tag: &str, bytes: &[u8]) -> io::Result<()> {
    write_parts_durably_as(path, tag, &[bytes])
}

/// [`write_durably_as`] of the concatenation of `parts` (a header before a large payload, with
/// no copy of the payload).
pub fn write_parts_durably_as(path: &Path, tag: &str, parts: &[&[u8]]) -> io::Result<()> {
    replace(path, tag, parts)?;
    sync_dir(parent_dir(path))
}

/// Temporary file, fsync, rename over `path`; the directory is not synced. On failure the
/// temporary file is removed and `path` is untouched.
fn replace(path: &Path, tag: &str, parts: &[&[u8]]) -> io::Result<()> {
    let tmp = temp_beside(path, tag);
    let written = write_parts_synced(&tmp, parts);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

/// Write `bytes` to a temporary file beside `path`, fsync it and rename it over `path`, without
/// syncing the directory: for a caller that syncs it once after several renames.
pub fn replace_unsynced_dir(path: &Path, tag: &str, bytes: &[u8]) -> io::Result<()> {
    replace(path, tag, &[bytes])
}

/// [`write_durably_as`] with the tag `write`, for a file only one process writes.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_durably_as(path, "write", bytes)
}

/// Remove a file if it is there and fsync its directory. A missing file is not an error.
pub fn remove_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Append one line with a single `write` on an `O_APPEND` file (concurrent lines never
/// interleave), then fsync it, and its directory when this line created the file: a line that
/// was appended is on disk.
pub fn append_line_durably(path: &Path, line: &str) -> io::Result<()> {
    let new_file = !path.exists();
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let mut l = String::with_capacity(line.len() + 1);
    l.push_str(line);
    l.push('\n');
    f.write_all(l.as_bytes())?;
    f.sync_data()?;
    if new_file {
        sync_dir(parent_dir(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("lifeboat-durable-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_durable_write_replaces_the_whole_file_and_leaves_no_temporary_behind() {
        let d = scratch("write");
        let p = d.join("state.json");
        write_durably(&p, b"first, longer").unwrap();
        write_durably(&p, b"second").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_failed_durable_write_leaves_what_was_there_and_no_temporary() {
        let d = scratch("fail");
        // The rename cannot replace a non-empty directory of that name: the write fails after
        // its temporary file was written and fsynced.
        let blocked = d.join("blocked");
        fs::create_dir_all(blocked.join("inside")).unwrap();
        assert!(write_durably(&blocked, b"lost").is_err());
        assert!(!temp_beside(&blocked, "write").exists());
        assert!(blocked.join("inside").is_dir());
        // Into a missing directory: an error, not a panic.
        assert!(write_durably(&d.join("missing/x"), b"x").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temporaries_are_hidden_beside_their_file() {
        assert_eq!(
            temp_beside(Path::new("/a/b/seg"), "42"),
            PathBuf::from("/a/b/.seg.42.tmp")
        );
        assert_eq!(
            temp_beside(Path::new("seg"), "write"),
            PathBuf::from("./.seg.write.tmp")
        );
        assert_eq!(parent_dir(Path::new("seg")), Path::new("."));
    }

    #[test]
    fn a_move_between_directories_and_a_removal_are_durable_and_a_missing_file_is_fine() {
        let d = scratch("move");
        fs::create_dir_all(d.join("a")).unwrap();
        fs::create_dir_all(d.join("b")).unwrap();
        write_durably(&d.join("a/f"), b"x").unwrap();
        rename_durably(&d.join("a/f"), &d.join("b/f")).unwrap();
        assert!(!d.join("a/f").exists() && d.join("b/f").exists());
        remove_durably(&d.join("b/f")).unwrap();
        remove_durably(&d.join("b/f")).unwrap();
        assert!(!d.join("b/f").exists());
        append_line_durably(&d.join("log"), "one").unwrap();
        append_line_durably(&d.join("log"), "two").unwrap();
        assert_eq!(fs::read_to_string(d.join("log")).unwrap(), "one\ntwo\n");
        fs::remove_dir_all(&d).unwrap();
    }
}
