//! Writing a received artifact around the page cache.
//!
//! An artifact is written once, fsynced, and read once later by a restore. Written through the
//! page cache, every byte is copied into freshly allocated cache pages and then written back by
//! the fsync; on the machines measured that copy was most of the CPU time of a receive, and the
//! write-back doubled the wait. With `O_DIRECT` (Linux) the bytes go from one staging buffer
//! straight to the device in large aligned writes, and the fsync only flushes the device cache
//! and the file's size.
//!
//! `O_DIRECT` wants the file offset and the length aligned to the device's block size
//! ([`ALIGN`] covers every common one), and the buffer's address aligned to what the device's
//! DMA takes: on most current devices a few bytes, on some a whole block. A chunk that arrives
//! while nothing is staged is written straight from the buffer it arrived in (no copy); the
//! first time the file system refuses that for the address (`EINVAL`), this writer stages every
//! later chunk in its aligned buffer instead. Writes start
//! at an aligned offset (a resumed partial file is cut back to one, see `ship.rs`); the tail of
//! the artifact that is not a whole block goes through the page cache like any other write. A
//! file system that refuses `O_DIRECT` (tmpfs, some network file systems) is written through
//! the page cache throughout. Either way the file is fsynced before the artifact is
//! acknowledged.

use super::buffers::Pool;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Alignment of direct writes: a multiple of the logical block size of every common device.
pub(crate) const ALIGN: usize = 4096;
/// Bytes staged before one direct write.
const STAGE: usize = 4 << 20;

/// Writes an artifact's bytes in order from an aligned offset on; see the module comment.
pub(crate) struct ArtifactWriter {
    /// The file as opened for the receive (buffered): the unaligned tail, the fallback, fsync.
    file: File,
    /// The same file opened with `O_DIRECT`, while direct writes work.
    direct: Option<File>,
    /// File offset of the first staged byte.
    pos: u64,
    /// The staged bytes are `buf[start..]`, at an aligned address; `buf` has room for `STAGE`
    /// of them, so it never moves.
    buf: Vec<u8>,
    start: usize,
    /// Whether a direct write from an unaligned address worked (`Some(true)`), was refused
    /// (`Some(false)`: stage everything), or was not tried yet.
    unaligned: Option<bool>,
}

impl ArtifactWriter {
    /// Continue `file` (at `path`) at offset `pos`, expecting `left` more bytes. Fewer than a
    /// staging buffer's worth go through the page cache: a direct write waits for the device,
    /// and for a small log one buffered write and the fsync are quicker.
    pub(crate) fn new(file: File, path: &Path, pos: u64, left: u64) -> ArtifactWriter {
        let direct = if pos.is_multiple_of(ALIGN as u64) && left >= STAGE as u64 {
            open_direct(path)
        } else {
            None
        };
        let mut buf = Vec::new();
        let mut start = 0;
        if direct.is_some() {
            buf = STAGES.take(STAGE + ALIGN);
            start = buf.as_ptr().align_offset(ALIGN);
            buf.resize(start, 0);
        }
        ArtifactWriter {
            file,
            direct,
            pos,
            buf,
            start,
            unaligned: None,
        }
    }

    /// Whether bytes currently bypass the page cache.
    #[cfg(test)]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn staged(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Append `bytes`.
    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.direct.is_none() {
            self.file.write_all_at(bytes, self.pos)?;
            self.pos += bytes.len() as u64;
            return Ok(());
        }
        if self.staged() == 0 && self.unaligned != Some(false) {
            bytes = self.write_in_place(bytes)?;
        }
        while !bytes.is_empty() {
            let n = (STAGE - self.staged()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.staged() == STAGE {
                self.flush_blocks()?;
            }
        }
        Ok(())
    }

    /// Nothing is staged: write the whole blocks of `bytes` directly from where they are.
    /// Returns what is left to stage (the tail, or everything when the address was refused).
    fn write_in_place<'a>(&mut self, bytes: &'a [u8]) -> io::Result<&'a [u8]> {
        let whole = bytes.len() - bytes.len() % ALIGN;
        let direct = self.direct.as_ref().expect("only while direct");
        let mut done = 0;
        while done < whole {
            match direct.write_at(&bytes[done..whole], self.pos) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    done += n;
                    self.pos += n as u64;
                    self.unaligned = Some(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Refused before a byte was written: this device wants aligned buffers.
                Err(e) if e.raw_os_error() == Some(EINVAL) && done == 0 => {
                    self.unaligned = Some(false);
                    return Ok(bytes);
                }
                Err(e) => return Err(e),
            }
        }
        // A short direct write may end inside a block: stage from there on.
        Ok(&bytes[done..])
    }

    /// Write every whole block staged; the rest stays staged (or, once direct writes are
    /// refused, goes through the page cache too).
    fn flush_blocks(&mut self) -> io::Result<()> {
        let whole = self.staged() - self.staged() % ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let block = &self.buf[self.start..self.start + whole];
        let direct = self.direct.as_ref().expect("staging only while direct");
        match direct.write_all_at(block, self.pos) {
            Ok(()) => {}
            // Refused after all (EINVAL: an alignment this file system does not take): the page
            // cache writes these bytes and every later one.
            Err(e) if e.raw_os_error() == Some(EINVAL) => {
                self.file.write_all_at(block, self.pos)?;
                self.direct = None;
            }
            Err(e) => return Err(e),
        }
        self.pos += whole as u64;
        let rest = self.buf.len() - whole;
        self.buf.copy_within(self.start + whole.., self.start);
        self.buf.truncate(rest);
        if self.direct.is_none() {
            self.write_staged_buffered()?;
        }
        Ok(())
    }

    /// Write whatever is staged through the page cache.
    fn write_staged_buffered(&mut self) -> io::Result<()> {
        let staged = &self.buf[self.start..];
        self.file.write_all_at(staged, self.pos)?;
        self.pos += staged.len() as u64;
        self.buf.truncate(self.start);
        Ok(())
    }

    /// Write what is staged and fsync the file; returns the file's length. Also called after
    /// an interrupted receive, so the prefix is durable for the resume.
    pub(crate) fn finish(mut self) -> io::Result<u64> {
        if self.direct.is_some() {
            self.flush_blocks()?;
        }
        self.write_staged_buffered()?;
        self.file.sync_all()?;
        Ok(self.pos)
    }
}

impl Drop for ArtifactWriter {
    fn drop(&mut self) {
        STAGES.give(std::mem::take(&mut self.buf));
    }
}

/// Staging buffers kept for the next receive (a fresh one is 4 MiB of new pages to fault in);
/// one per receive running at once is the common case.
static STAGES: Pool = Pool::new(8, STAGE + ALIGN, STAGE + ALIGN);

#[cfg(target_os = "linux")]
const EINVAL: i32 = libc::EINVAL;
#[cfg(not(target_os = "linux"))]
const EINVAL: i32 = 22;

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn open(path: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn odd_sized_writes_land_byte_for_byte_whatever_the_staging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.partial");
        let want = pattern(STAGE * 2 + ALIGN * 3 + 517, 7);
        let mut w = ArtifactWriter::new(open(&path), &path, 0, want.len() as u64);
        // Pieces that straddle blocks and the staging buffer's end.
        let mut rest = &want[..];
        for size in [1usize, 4095, 65_537, STAGE, 3, 1 << 20].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let n = (*size).min(rest.len());
            w.write(&rest[..n]).unwrap();
            rest = &rest[n..];
        }
        assert_eq!(w.finish().unwrap(), want.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    /// Write `want[from..]` through a writer that continues at `from` expecting `left` bytes,
    /// and check the file then holds exactly `want`. Returns whether the writer went direct.
    fn write_and_check(path: &Path, want: &[u8], from: usize, left: u64) -> bool {
        let mut w = ArtifactWriter::new(open(path), path, from as u64, left);
        let direct = w.is_direct();
        w.write(&want[from..]).unwrap();
        assert_eq!(w.finish().unwrap(), want.len() as u64);
        assert_eq!(std::fs::read(path).unwrap(), want);
        direct
    }

    #[test]
    fn a_resume_continues_after_the_prefix_and_an_unaligned_one_goes_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        for held in [ALIGN * 5, ALIGN * 5 + 100] {
            let path = dir.path().join(format!("b{held}.partial"));
            let want = pattern(held + STAGE + 999, 3);
            std::fs::write(&path, &want[..held]).unwrap();
            let direct = write_and_check(&path, &want, held, (want.len() - held) as u64);
            assert!(held.is_multiple_of(ALIGN) || !direct);
        }
    }

    #[test]
    fn whole_blocks_at_an_odd_address_land_byte_for_byte_in_place_or_staged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.partial");
        let want = pattern(STAGE * 2 + ALIGN + 33, 5);
        // One byte in front, so every chunk below starts at an odd address.
        let mut odd = vec![0u8];
        odd.extend_from_slice(&want);
        let mut w = ArtifactWriter::new(open(&path), &path, 0, want.len() as u64);
        for piece in odd[1..].chunks(1 << 20) {
            w.write(piece).unwrap();
        }
        // Either the device took the odd address, or it refused it once and all was staged.
        assert!(w.direct.is_none() || w.unaligned.is_some());
        assert_eq!(w.finish().unwrap(), want.len() as u64);
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn a_small_artifact_goes_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let want = pattern(ALIGN * 2 + 7, 9);
        let path = dir.path().join("d.partial");
        assert!(!write_and_check(&path, &want, 0, want.len() as u64));
    }

    #[test]
    fn an_interrupted_receive_keeps_every_byte_written_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let want = pattern(ALIGN * 3 + 10, 1);
        // As if a whole artifact were coming, so the direct path is taken where it exists;
        // nothing reaches a whole staging buffer, so finish writes the blocks and the tail.
        write_and_check(&dir.path().join("c.partial"), &want, 0, 2 * STAGE as u64);
    }
}
