//! The drivers' file steps: the durable steps of [`crate::durable`] with errors that name the
//! file, and the streaming copies and hashes the drivers share.

use super::error::DriverError;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Copy buffer size for streaming copies and hashing.
pub(crate) const COPY_CHUNK: usize = 1 << 20;

pub(crate) use crate::durable::{parent_dir, temp_beside};

// The steps of [`crate::durable`], with the drivers' error type naming the file.

/// fsync a file's contents and metadata.
pub(crate) fn sync_file(path: &Path) -> Result<(), DriverError> {
    crate::durable::sync_file(path)
        .map_err(|e| DriverError::io(format!("fsync of {}", path.display()), &e))
}

/// Rename an already fsynced file into place and fsync the directory (or both directories).
pub(crate) fn rename_durably(from: &Path, to: &Path) -> Result<(), DriverError> {
    crate::durable::rename_durably(from, to).map_err(|e| {
        DriverError::io(
            format!("renaming {} to {} durably", from.display(), to.display()),
            &e,
        )
    })
}

/// Remove a file if it exists and fsync its directory. Missing is fine.
pub(crate) fn remove_durably(path: &Path) -> Result<(), DriverError> {
    crate::durable::remove_durably(path)
        .map_err(|e| DriverError::io(format!("removing {}", path.display()), &e))
}

/// Copy `from` into a new file `to` (truncating it) and fsync `to`. Returns the bytes copied.
pub(crate) fn copy_and_sync(from: &Path, to: &Path) -> Result<u64, DriverError> {
    copy_and_sync_counted(from, to, &super::Progress::default())
}

/// Copy `len` bytes from the start of `src` (positional reads: the handle's cursor is not used,
/// so a long-lived handle can be read many times) to the end of `dst`.
pub(crate) fn copy_prefix(src: &File, dst: &mut impl Write, len: u64) -> io::Result<()> {
    copy_prefix_counted(src, dst, len, None)
}

/// [`copy_prefix`], counting the bytes copied in `progress` (a pass of `len` bytes).
pub(crate) fn copy_prefix_counted(
    src: &File,
    dst: &mut impl Write,
    len: u64,
    progress: Option<&super::Progress>,
) -> io::Result<()> {
    if let Some(p) = progress {
        p.start(len);
    }
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(COPY_CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..n], offset)?;
        dst.write_all(&buf[..n])?;
        offset += n as u64;
        if let Some(p) = progress {
            p.add(n as u64);
        }
    }
    Ok(())
}

/// Copy the whole of `from` into a new file `to` and fsync it, counting the bytes in
/// `progress`. Returns the bytes copied.
pub(crate) fn copy_and_sync_counted(
    from: &Path,
    to: &Path,
    progress: &super::Progress,
) -> Result<u64, DriverError> {
    let result = (|| {
        let src = File::open(from)?;
        let len = src.metadata()?.len();
        let mut dst = File::create(to)?;
        copy_prefix_counted(&src, &mut dst, len, Some(progress))?;
        dst.sync_all()?;
        Ok::<u64, io::Error>(len)
    })();
    result.map_err(|e| {
        DriverError::io(
            format!("copying {} to {}", from.display(), to.display()),
            &e,
        )
    })
}

/// Drop a file's clean pages from the page cache (best effort; call after an fsync).
///
/// The kernel caches a file that was written or read in large chunks in large folios (up to
/// 2 MiB on this kernel), and a later write of one page dirties, and is charged for, the whole
/// folio: the primary's shadow, updated a few pages a second, would cost a megabyte of writes a
/// second. Pages the shadow's updates then bring back into the cache are page-sized.
pub(crate) fn drop_cached(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed);
}

/// Read `file` without readahead: its pages enter the cache page-sized (see [`drop_cached`]).
/// For handles on a live database whose pages SQLite's checkpoints write one at a time.
pub(crate) fn read_without_readahead(file: &File) {
    let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Random);
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
