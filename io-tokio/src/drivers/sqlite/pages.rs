//! The page-delta file format of SQLite incrementals, logs and the driver's undo files.
//!
//! All integers little-endian. A 56-byte header, then `entries` page images:
//!
//! ```text
//! offset size field
//!      0    8 magic            "LBSQPAGE"
//!      8    4 format_version   1
//!     12    1 kind             1 = incremental, 2 = log, 3 = undo (private to the driver)
//!     13    1 has_base_full    1 when base_full is set (incrementals), else 0
//!     14    2 reserved         0
//!     16    4 page_size        bytes per page (512..=65536, a power of two)
//!     20    4 page_count       the database's size in pages once applied (truncate/extend)
//!     24    8 lsn_start        the range covered, [lsn_start, lsn_end)
//!     32    8 lsn_end          page 1 of the images carries lsn_end's low 32 bits as its counter
//!     40    8 base_full        the base full's lsn_end (incrementals), else 0
//!     48    4 entries          number of page images that follow
//!     52    4 reserved         0
//!     56      entries × { page_number: u32 (1-based, strictly increasing), bytes[page_size] }
//! ```
//!
//! The file's length is exactly `56 + entries × (4 + page_size)`. Page images are absolute (the
//! page as it is at `lsn_end`), so applying a delta twice gives the same file.

use super::header::lock_page;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"LBSQPAGE";
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: u64 = 56;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeltaKind {
    Incremental = 1,
    Log = 2,
    Undo = 3,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DeltaHeader {
    pub kind: DeltaKind,
    pub page_size: u32,
    pub page_count: u32,
    pub lsn_start: u64,
    pub lsn_end: u64,
    pub base_full: Option<u64>,
    pub entries: u32,
}

impl DeltaHeader {
    fn entry_len(&self) -> u64 {
        4 + u64::from(self.page_size)
    }

    /// The exact length of a file with this header.
    pub fn file_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.entries) * self.entry_len()
    }

    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12] = self.kind as u8;
        h[13] = u8::from(self.base_full.is_some());
        h[16..20].copy_from_slice(&self.page_size.to_le_bytes());
        h[20..24].copy_from_slice(&self.page_count.to_le_bytes());
        h[24..32].copy_from_slice(&self.lsn_start.to_le_bytes());
        h[32..40].copy_from_slice(&self.lsn_end.to_le_bytes());
        h[40..48].copy_from_slice(&self.base_full.unwrap_or(0).to_le_bytes());
        h[48..52].copy_from_slice(&self.entries.to_le_bytes());
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN as usize]) -> Result<DeltaHeader, String> {
        let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&h[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if &h[0..8] != MAGIC {
            return Err("it does not start with the page-delta magic \"LBSQPAGE\"".into());
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "it is page-delta format version {version}; this lifeboat reads version \
                 {FORMAT_VERSION}"
            ));
        }
        let kind = match h[12] {
            1 => DeltaKind::Incremental,
            2 => DeltaKind::Log,
            3 => DeltaKind::Undo,
            other => return Err(format!("kind byte {other} is not 1, 2 or 3")),
        };
        let base_full = match h[13] {
            0 => None,
            1 => Some(u64_at(40)),
            other => return Err(format!("base flag byte {other} is not 0 or 1")),
        };
        let page_size = u32_at(16);
        if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(format!("page size {page_size} is invalid"));
        }
        let header = DeltaHeader {
            kind,
            page_size,
            page_count: u32_at(20),
            lsn_start: u64_at(24),
            lsn_end: u64_at(32),
            base_full,
            entries: u32_at(48),
        };
        if header.lsn_end < header.lsn_start {
            return Err(format!(
                "its range {}..{} runs backwards",
                header.lsn_start, header.lsn_end
            ));
        }
        if header.entries > header.page_count {
            return Err(format!(
                "it has {} page images for a database of {} pages",
                header.entries, header.page_count
            ));
        }
        Ok(header)
    }
}

/// Write a delta file holding the images of `pages` (sorted, 1-based) read from `source`, a
/// database image. The file is fsynced.
pub fn write_delta(
    path: &Path,
    header: &DeltaHeader,
    pages: &[u32],
    source: &File,
) -> io::Result<()> {
    write_delta_hashed(path, header, pages, source).map(|_| ())
}

/// [`write_delta`], returning the file's size and checksum, hashed as it was written (what
/// `manifest::publish_synced` needs without reading the file again).
pub fn write_delta_hashed(
    path: &Path,
    header: &DeltaHeader,
    pages: &[u32],
    source: &File,
) -> io::Result<(u64, lifeboat_core::Checksum)> {
    debug_assert_eq!(pages.len(), header.entries as usize);
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, &file);
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut size = 0u64;
    let mut put = |out: &mut BufWriter<&File>, bytes: &[u8]| {
        hasher.update(bytes);
        size += bytes.len() as u64;
        out.write_all(bytes)
    };
    put(&mut out, &header.encode())?;
    let mut buf = vec![0u8; header.page_size as usize];
    for &page in pages {
        source.read_exact_at(&mut buf, u64::from(page - 1) * u64::from(header.page_size))?;
        put(&mut out, &page.to_le_bytes())?;
        put(&mut out, &buf)?;
    }
    out.flush()?;
    drop(out);
    file.sync_all()?;
    Ok((size, lifeboat_core::Checksum(hasher.digest())))
}

/// A delta file opened for reading, its structure checked.
pub struct DeltaReader {
    file: File,
    pub header: DeltaHeader,
}

impl DeltaReader {
    /// Open and check a delta: magic, version, header fields, exact length, and page numbers
    /// (strictly increasing, within the page count, never SQLite's lock page).
    pub fn open(path: &Path) -> Result<(DeltaReader, Vec<u32>), String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < HEADER_LEN {
            return Err(format!(
                "it is {len} bytes, shorter than the 56-byte header"
            ));
        }
        let mut h = [0u8; HEADER_LEN as usize];
        file.read_exact_at(&mut h, 0).map_err(|e| e.to_string())?;
        let header = DeltaHeader::decode(&h)?;
        if len != header.file_len() {
            return Err(format!(
                "it is {len} bytes but its header announces {} page images of {} bytes ({} \
                 bytes in all): the file is truncated or padded",
                header.entries,
                header.page_size,
                header.file_len()
            ));
        }
        let reader = DeltaReader { file, header };
        let forbidden = lock_page(header.page_size);
        let mut pages = Vec::with_capacity(header.entries as usize);
        let mut previous = 0u32;
        for i in 0..header.entries {
            let mut b = [0u8; 4];
            reader
                .file
                .read_exact_at(&mut b, reader.entry_offset(i))
                .map_err(|e| e.to_string())?;
            let page = u32::from_le_bytes(b);
            if page <= previous || page > header.page_count || page == forbidden {
                return Err(format!(
                    "page image {i} names page {page}, which is out of order or outside the \
                     database's {} pages",
                    header.page_count
                ));
            }
            previous = page;
            pages.push(page);
        }
        Ok((reader, pages))
    }

    fn entry_offset(&self, index: u32) -> u64 {
        HEADER_LEN + u64::from(index) * self.header.entry_len()
    }

    /// The bytes of the `index`-th page image.
    pub fn read_image(&self, index: u32, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, self.entry_offset(index) + 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_header_round_trips_and_rejects_garbage() {
        let h = DeltaHeader {
            kind: DeltaKind::Incremental,
            page_size: 4096,
            page_count: 10,
            lsn_start: 7,
            lsn_end: 19,
            base_full: Some(7),
            entries: 3,
        };
        assert_eq!(DeltaHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(DeltaHeader::decode(&bad).unwrap_err().contains("magic"));
        let mut bad = h.encode();
        bad[8] = 9;
        assert!(DeltaHeader::decode(&bad).unwrap_err().contains("version 9"));
        let mut bad = h.encode();
        bad[16..20].copy_from_slice(&1000u32.to_le_bytes());
        assert!(DeltaHeader::decode(&bad).unwrap_err().contains("page size"));
    }

    #[test]
    fn a_delta_written_hashed_reports_the_size_and_checksum_of_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let source_path = dir.path().join("source.db");
        let image: Vec<u8> = (0..4u32 * 512).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&source_path, &image).unwrap();
        let source = File::open(&source_path).unwrap();
        let header = DeltaHeader {
            kind: DeltaKind::Log,
            page_size: 512,
            page_count: 4,
            lsn_start: 3,
            lsn_end: 5,
            base_full: None,
            entries: 2,
        };
        let out = dir.path().join("delta");
        let (size, checksum) = write_delta_hashed(&out, &header, &[2, 4], &source).unwrap();
        assert_eq!(size, header.file_len());
        assert_eq!(
            crate::drivers::manifest::hash_file(&out).unwrap(),
            (size, checksum)
        );
        let (reader, pages) = DeltaReader::open(&out).unwrap();
        assert_eq!(pages, [2, 4]);
        let mut buf = vec![0u8; 512];
        reader.read_image(1, &mut buf).unwrap();
        assert_eq!(buf, image[3 * 512..]);
    }
}
