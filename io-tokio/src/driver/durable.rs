//! Durable file steps shared by the drivers: every file that must survive a crash is written to
//! a temporary name, fsynced, renamed into place, and its directory fsynced.

use super::error::DriverError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Copy buffer size for streaming copies and hashing.
pub(crate) const COPY_CHUNK: usize = 1 << 20;

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A hidden temporary name beside `path`: `.<name>.tmp`. Discovery ignores dot files.
pub(crate) fn temp_beside(path: &Path, tag: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_dir(path).join(format!(".{name}.{tag}.tmp"))
}

/// fsync a directory, so renames and removals in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), DriverError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| DriverError::io(format!("fsync of directory {}", dir.display()), &e))
}

/// fsync a file's contents and metadata.
pub(crate) fn sync_file(path: &Path) -> Result<(), DriverError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| DriverError::io(format!("fsync of {}", path.display()), &e))
}

/// Rename an already fsynced file into place and fsync the directory (or both directories).
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<(), DriverError> {
    fs::rename(from, to).map_err(|e| {
        DriverError::io(
            format!("renaming {} to {}", from.display(), to.display()),
            &e,
        )
    })?;
    sync_dir(parent_dir(to))?;
    if parent_dir(from) != parent_dir(to) {
        sync_dir(parent_dir(from))?;
    }
    Ok(())
}

/// Write `bytes` as the whole content of `path`: temp file, fsync, rename, directory fsync.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DriverError> {
    let tmp = temp_beside(path, "write");
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(DriverError::io(format!("writing {}", tmp.display()), &e));
    }
    rename_durably(&tmp, path)
}

/// Remove a file if it exists and fsync its directory. Missing is fine.
pub(crate) fn remove_durably(path: &Path) -> Result<(), DriverError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent_dir(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::io(format!("removing {}", path.display()), &e)),
    }
}

/// Copy `from` into a new file `to` (truncating it) and fsync `to`. Returns the bytes copied.
pub(crate) fn copy_and_sync(from: &Path, to: &Path) -> Result<u64, DriverError> {
    let result = (|| {
        let mut src = File::open(from)?;
        let mut dst = File::create(to)?;
        let n = io::copy(&mut src, &mut dst)?;
        dst.sync_all()?;
        Ok::<u64, io::Error>(n)
    })();
    result.map_err(|e| {
        DriverError::io(
            format!("copying {} to {}", from.display(), to.display()),
            &e,
        )
    })
}

/// Copy `len` bytes from the start of `src` (positional reads: the handle's cursor is not used,
/// so a long-lived handle can be read many times) to the end of `dst`.
pub(crate) fn copy_prefix(src: &File, dst: &mut impl Write, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(COPY_CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..n], offset)?;
        dst.write_all(&buf[..n])?;
        offset += n as u64;
    }
    Ok(())
}

/// Open a file for reading and writing without creating it.
pub(crate) fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Read a whole small file (manifests, state files).
pub(crate) fn read_small(path: &Path) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}
