//! Applying page deltas to a database file (the standby, or a drill's scratch copy).
//!
//! Order of writes, so a crash never leaves a file that claims a position it does not hold:
//! the undo file (pre-images) is durable first; then every page but page 1; then the new
//! length; fsync; then page 1 (which carries the new change counter); fsync. Until page 1 is
//! written the file still says `lsn_start`; an interrupted apply is rolled back from the undo
//! file the next time the driver touches the database, and the core's re-issued restore
//! applies it again. Re-applying a delta whose end the file already holds is a verified no-op.

use super::super::durable;
use super::super::error::{DriverError, ErrorKind};
use super::super::manifest::ArtifactFile;
use super::header::{parse_header, read_image, widen, Image, ImageError};
use super::pages::{write_delta, DeltaHeader, DeltaKind, DeltaReader};
use lifeboat_core::{ArtifactKind, Lsn};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The database a delta is applied to, for messages.
pub struct Target<'a> {
    pub db_name: &'a str,
    pub path: &'a Path,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The pages were written; the file is now at the delta's end.
    Written,
    /// The file already held the delta's end with identical pages; nothing was written.
    AlreadyThere,
}

/// The current image of a target file, as a driver error when it is unusable.
pub fn target_image(file: &File, target: &Target<'_>) -> Result<Image, DriverError> {
    read_image(file).map_err(|e| match e {
        ImageError::Io(e) => DriverError::io(format!("reading {}", target.path.display()), &e),
        ImageError::Wal => DriverError::new(
            ErrorKind::Unsupported,
            format!(
                "database {} ({}) is in WAL mode; the sqlite driver needs rollback-journal mode \
                 (PRAGMA journal_mode=DELETE)",
                target.db_name,
                target.path.display()
            ),
        ),
        ImageError::NotSqlite(why) => DriverError::new(
            ErrorKind::CheckFailed,
            format!(
                "database {} ({}) is not a usable SQLite file ({why})",
                target.db_name,
                target.path.display()
            ),
        ),
    })
}

/// Check that a delta artifact fits the target file and apply it. With `undo`, the pre-images
/// of every page the delta overwrites or truncates away are written there first (durably) and
/// left in place: the caller removes the undo file once the result is verified, or rolls back.
pub fn apply_delta(
    file: &File,
    target: &Target<'_>,
    artifact: &ArtifactFile,
    undo: Option<&Path>,
) -> Result<(Applied, Lsn), DriverError> {
    apply_delta_synced(file, target, artifact, undo, true)
}

/// [`apply_delta`], with the two fsyncs that order its writes (pages, then page 1) only when
/// `sync`: a copy that nobody opens before it is complete (a point-in-time restore, built
/// under a temporary name and fsynced once at the end) needs neither.
pub fn apply_delta_synced(
    file: &File,
    target: &Target<'_>,
    artifact: &ArtifactFile,
    undo: Option<&Path>,
    sync: bool,
) -> Result<(Applied, Lsn), DriverError> {
    let sync_all = |f: &File| if sync { f.sync_all() } else { Ok(()) };
    let m = &artifact.manifest;
    let invalid = |why: String| {
        DriverError::new(
            ErrorKind::ArtifactInvalid,
            format!(
                "artifact {} for database {} is not a valid page delta: {why}; re-copy it, or \
                 request a new full backup if the primary wrote it this way",
                artifact.path.display(),
                target.db_name
            ),
        )
    };
    let (delta, pages) = DeltaReader::open(&artifact.path).map_err(invalid)?;
    let h = delta.header;
    let expected_kind = match m.kind {
        ArtifactKind::Incremental => DeltaKind::Incremental,
        ArtifactKind::Log => DeltaKind::Log,
        ArtifactKind::Full => {
            return Err(invalid(
                "a full backup is a database file, not a delta".into(),
            ))
        }
    };
    if h.kind != expected_kind
        || h.lsn_start != m.lsn_start.0
        || h.lsn_end != m.lsn_end.0
        || h.base_full != m.base_full.map(|l| l.0)
    {
        return Err(invalid(format!(
            "its header ({:?} {}..{} base {:?}) disagrees with its manifest ({} {}..{} base {:?})",
            h.kind,
            h.lsn_start,
            h.lsn_end,
            h.base_full,
            m.kind.name_word(),
            m.lsn_start,
            m.lsn_end,
            m.base_full.map(|l| l.0)
        )));
    }
    let ps = h.page_size as usize;
    // Page 1 must come with every delta: it carries the new change counter and page count.
    if pages.first() != Some(&1) {
        return Err(invalid("it does not carry page 1".into()));
    }
    let mut page1 = vec![0u8; ps];
    delta
        .read_image(0, &mut page1)
        .map_err(|e| invalid(e.to_string()))?;
    let header1 = parse_header(&page1).map_err(|e| invalid(format!("its page 1: {e}")))?;
    if header1.page_size != h.page_size || header1.change_counter != h.lsn_end as u32 {
        return Err(invalid(format!(
            "its page 1 says page size {} and change counter {}, the delta says {} and {}",
            header1.page_size, header1.change_counter, h.page_size, h.lsn_end as u32
        )));
    }

    let current = target_image(file, target)?;
    if current.page_count > 0 && current.page_size != h.page_size {
        return Err(DriverError::new(
            ErrorKind::Diverged,
            format!(
                "database {} ({}) has {}-byte pages, artifact {} has {}-byte pages (the primary \
                 changed its page size): reseed the standby from a new full backup",
                target.db_name,
                target.path.display(),
                current.page_size,
                artifact.describe(),
                h.page_size
            ),
        ));
    }
    let position = widen(current.counter, m.lsn_start);
    if position == m.lsn_end {
        return if same_pages(file, &delta, &pages, current)? {
            Ok((Applied::AlreadyThere, position))
        } else {
            Err(DriverError::new(
                ErrorKind::Diverged,
                format!(
                    "database {} ({}) is at position {position}, the end of artifact {}, but its \
                     pages differ from the artifact's: the standby diverged from the primary \
                     (written to outside lifeboat?); reseed it from a new full backup",
                    target.db_name,
                    target.path.display(),
                    artifact.describe()
                ),
            ))
        };
    }
    if position < m.lsn_start || position > m.lsn_end {
        let (gap, advice) = if position < m.lsn_start {
            (
                format!("the positions {position}..{} are missing", m.lsn_start),
                "restore the artifacts covering them first",
            )
        } else {
            (
                format!(
                    "the database is already past it by {}",
                    position.0 - m.lsn_end.0
                ),
                "skip this artifact",
            )
        };
        return Err(DriverError::new(
            ErrorKind::OutOfOrder,
            format!(
                "artifact {} does not apply to database {} ({}) at position {position}: it \
                 covers {}..{} and {gap}; {advice}",
                artifact.describe(),
                target.db_name,
                target.path.display(),
                m.lsn_start,
                m.lsn_end
            ),
        ));
    }

    // Every page a delta adds beyond the file's current end must come with it (a page is new,
    // hence touched, at the snapshot that first saw it). Without this check a delta of one page
    // whose header says 4294967295 pages grew the file to 256 TiB (sparse) on `set_len`: the
    // file can now grow only by the images the delta carries.
    let skip = super::header::lock_page(h.page_size);
    let added = pages.iter().filter(|p| **p > current.page_count).count() as u64;
    let lock_page_is_new = current.page_count < skip && skip <= h.page_count;
    let needed =
        u64::from(h.page_count.saturating_sub(current.page_count)) - u64::from(lock_page_is_new);
    if added != needed {
        return Err(DriverError::new(
            ErrorKind::Diverged,
            format!(
                "artifact {} grows database {} ({}) from {} to {} pages but carries {added} of \
                 the {needed} new pages: the artifact is damaged or the standby diverged from \
                 the primary; reseed it from a new full backup",
                artifact.describe(),
                target.db_name,
                target.path.display(),
                current.page_count,
                h.page_count
            ),
        ));
    }
    let write = |what: &str, e: io::Error| {
        DriverError::io(
            format!(
                "{what} database {} ({}) from {}",
                target.db_name,
                target.path.display(),
                artifact.path.display()
            ),
            &e,
        )
    };
    if let Some(undo) = undo {
        write_undo(file, current, position, &h, &pages, undo)
            .map_err(|e| write("saving pre-images of", e))?;
    }
    let mut buf = vec![0u8; ps];
    for (i, &page) in pages.iter().enumerate().skip(1) {
        delta
            .read_image(i as u32, &mut buf)
            .map_err(|e| write("reading a page for", e))?;
        file.write_all_at(&buf, page_offset(page, h.page_size))
            .map_err(|e| write("writing", e))?;
    }
    let len = u64::from(h.page_count) * u64::from(h.page_size);
    file.set_len(len)
        .and_then(|_| sync_all(file))
        .map_err(|e| write("resizing", e))?;
    file.write_all_at(&page1, 0)
        .and_then(|_| sync_all(file))
        .map_err(|e| write("writing page 1 of", e))?;
    Ok((Applied::Written, m.lsn_end))
}

/// Whether the file holds exactly the delta's pages and length.
fn same_pages(
    file: &File,
    delta: &DeltaReader,
    pages: &[u32],
    current: Image,
) -> Result<bool, DriverError> {
    let h = delta.header;
    if current.page_count != h.page_count {
        return Ok(false);
    }
    let mut want = vec![0u8; h.page_size as usize];
    let mut have = vec![0u8; h.page_size as usize];
    for (i, &page) in pages.iter().enumerate() {
        let read = delta
            .read_image(i as u32, &mut want)
            .and_then(|_| file.read_exact_at(&mut have, page_offset(page, h.page_size)));
        match read {
            Ok(()) if want == have => {}
            Ok(()) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(DriverError::io("comparing pages", &e)),
        }
    }
    Ok(true)
}

fn page_offset(page: u32, page_size: u32) -> u64 {
    u64::from(page - 1) * u64::from(page_size)
}

/// Save the pre-images of the pages a delta overwrites (those that exist now) and of those it
/// truncates away, with the current page count: everything needed to put the file back.
fn write_undo(
    file: &File,
    current: Image,
    position: Lsn,
    delta: &DeltaHeader,
    pages: &[u32],
    undo: &Path,
) -> io::Result<()> {
    let mut saved: Vec<u32> = pages
        .iter()
        .copied()
        .filter(|p| *p <= current.page_count)
        .collect();
    // `page_count + 1` would overflow for a delta of u32::MAX pages; the range is empty then.
    if delta.page_count < current.page_count {
        saved.extend(
            (delta.page_count + 1..=current.page_count)
                .filter(|p| *p != super::header::lock_page(delta.page_size)),
        );
    }
    saved.sort_unstable();
    saved.dedup();
    let header = DeltaHeader {
        kind: DeltaKind::Undo,
        page_size: delta.page_size,
        page_count: current.page_count,
        lsn_start: position.0,
        lsn_end: position.0,
        base_full: None,
        entries: saved.len() as u32,
    };
    let tmp = durable::temp_beside(undo, "write");
    write_delta(&tmp, &header, &saved, file)?;
    std::fs::rename(&tmp, undo)?;
    File::open(durable::parent_dir(undo))?.sync_all()
}

/// Put the file back as the undo file saved it, and fsync it. The caller removes the undo file.
pub fn roll_back(file: &File, target: &Target<'_>, undo: &Path) -> Result<Lsn, DriverError> {
    let (delta, pages) = DeltaReader::open(undo).map_err(|why| {
        DriverError::new(
            ErrorKind::CheckFailed,
            format!(
                "the undo file {} of database {} ({}) is unreadable ({why}); the standby may \
                 be half-applied: reseed it from a full backup",
                undo.display(),
                target.db_name,
                target.path.display()
            ),
        )
    })?;
    let h = delta.header;
    let io = |e: io::Error| {
        DriverError::io(
            format!(
                "rolling back database {} ({}) from {}",
                target.db_name,
                target.path.display(),
                undo.display()
            ),
            &e,
        )
    };
    let mut buf = vec![0u8; h.page_size as usize];
    for (i, &page) in pages.iter().enumerate() {
        delta.read_image(i as u32, &mut buf).map_err(io)?;
        file.write_all_at(&buf, page_offset(page, h.page_size))
            .map_err(io)?;
    }
    file.set_len(u64::from(h.page_count) * u64::from(h.page_size))
        .and_then(|_| file.sync_all())
        .map_err(io)?;
    Ok(Lsn(h.lsn_end))
}
