//! The parts of the SQLite file header the driver relies on
//! (<https://www.sqlite.org/fileformat2.html#the_database_header>), and the LSN it derives.

use lifeboat_core::Lsn;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Every SQLite database file starts with these 16 bytes.
pub const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// The database header is the first 100 bytes of page 1.
pub const HEADER_LEN: usize = 100;
/// SQLite never stores data in the page that holds this byte offset (its locks live there).
const PENDING_BYTE: u64 = 0x4000_0000;

/// The header fields that matter here.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DbHeader {
    pub page_size: u32,
    /// The file change counter (offset 24): incremented by every committed write transaction in
    /// rollback-journal mode. The driver's LSN is this counter, widened to 64 bits.
    pub change_counter: u32,
    /// The in-header database size in pages (offset 28), valid only when `version_valid_for`
    /// equals `change_counter`.
    pub header_pages: u32,
    pub version_valid_for: u32,
    /// Offset 18/19: 1 = rollback journal, 2 = WAL.
    pub write_version: u8,
    pub read_version: u8,
}

/// Why a file is not a database the driver can use.
#[derive(Debug)]
pub enum ImageError {
    Io(io::Error),
    NotSqlite(String),
    Wal,
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageError::Io(e) => write!(f, "{e}"),
            ImageError::NotSqlite(why) => write!(f, "not a SQLite database: {why}"),
            ImageError::Wal => write!(f, "the database is in WAL mode"),
        }
    }
}

impl From<io::Error> for ImageError {
    fn from(e: io::Error) -> Self {
        ImageError::Io(e)
    }
}

/// The shape and position of a database image: page size, page count, change counter.
/// An empty (0-byte) file is a valid, empty database: all zero.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    pub page_size: u32,
    pub page_count: u32,
    pub counter: u32,
}

impl Image {
    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        u64::from(self.page_size) * u64::from(self.page_count)
    }

    /// Whether the image has no bytes (an empty file).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Parse the first 100 bytes of page 1.
pub fn parse_header(h: &[u8]) -> Result<DbHeader, ImageError> {
    if h.len() < HEADER_LEN {
        return Err(ImageError::NotSqlite(format!(
            "{} bytes, shorter than the 100-byte header",
            h.len()
        )));
    }
    if &h[..16] != SQLITE_MAGIC {
        return Err(ImageError::NotSqlite(
            "the header does not start with \"SQLite format 3\"".into(),
        ));
    }
    let be32 = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let raw_size = u32::from(u16::from_be_bytes([h[16], h[17]]));
    let page_size = if raw_size == 1 { 65_536 } else { raw_size };
    if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(ImageError::NotSqlite(format!(
            "page size {raw_size} is invalid"
        )));
    }
    let header = DbHeader {
        page_size,
        change_counter: be32(24),
        header_pages: be32(28),
        version_valid_for: be32(92),
        write_version: h[18],
        read_version: h[19],
    };
    if header.write_version == 2 || header.read_version == 2 {
        return Err(ImageError::Wal);
    }
    Ok(header)
}

/// Read the image's shape from a database file through positional reads (the handle's cursor
/// is left alone). The page count is the in-header size when SQLite marks it valid, else the
/// file length; a file shorter than its page count is refused.
pub fn read_image(file: &File) -> Result<Image, ImageError> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Image::default());
    }
    let mut h = [0u8; HEADER_LEN];
    if len < HEADER_LEN as u64 {
        return Err(ImageError::NotSqlite(format!(
            "{len} bytes, shorter than the 100-byte header"
        )));
    }
    file.read_exact_at(&mut h, 0)?;
    let header = parse_header(&h)?;
    let ps = u64::from(header.page_size);
    let page_count = if header.version_valid_for == header.change_counter && header.header_pages > 0
    {
        header.header_pages
    } else {
        u32::try_from(len / ps).map_err(|_| ImageError::NotSqlite("too many pages".into()))?
    };
    if u64::from(page_count) * ps > len {
        return Err(ImageError::NotSqlite(format!(
            "the header says {page_count} pages of {ps} bytes but the file has only {len} bytes"
        )));
    }
    Ok(Image {
        page_size: header.page_size,
        page_count,
        counter: header.change_counter,
    })
}

/// The page SQLite never uses (it holds the lock bytes); deltas skip it.
pub fn lock_page(page_size: u32) -> u32 {
    if page_size == 0 {
        return 0;
    }
    (PENDING_BYTE / u64::from(page_size)) as u32 + 1
}

/// The 64-bit LSN whose low 32 bits are `counter`, nearest to `near`. The header's counter is 32
/// bits and wraps after 2^32 transactions; widening against the last known position keeps LSNs
/// growing across the wrap, as long as fewer than 2^31 transactions happen between two looks.
pub fn widen(counter: u32, near: Lsn) -> Lsn {
    const SPAN: i128 = 1 << 32;
    let near = i128::from(near.0);
    let base = near - near.rem_euclid(SPAN) + i128::from(counter);
    let best = [base - SPAN, base, base + SPAN]
        .into_iter()
        .filter(|v| *v >= 0 && *v <= i128::from(u64::MAX))
        .min_by_key(|v| (v - near).abs())
        .unwrap_or(i128::from(counter));
    Lsn(best as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_keeps_lsns_growing_across_the_32_bit_wrap() {
        assert_eq!(widen(5, Lsn(0)), Lsn(5));
        assert_eq!(widen(7, Lsn(5)), Lsn(7));
        assert_eq!(widen(3, Lsn(0xFFFF_FFF0)), Lsn(0x1_0000_0003));
        assert_eq!(widen(0xFFFF_FFF0, Lsn(0x1_0000_0003)), Lsn(0xFFFF_FFF0));
        assert_eq!(widen(9, Lsn(0x5_0000_0001)), Lsn(0x5_0000_0009));
        assert_eq!(widen(u32::MAX, Lsn(0)), Lsn(u64::from(u32::MAX)));
    }

    #[test]
    fn lock_page_is_the_page_holding_the_pending_byte() {
        assert_eq!(lock_page(4096), 262_145);
        assert_eq!(lock_page(65_536), 16_385);
        assert_eq!(lock_page(0), 0);
    }
}
