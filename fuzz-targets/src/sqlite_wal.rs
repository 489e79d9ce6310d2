//! Fuzz body for the SQLite WAL reader (`drivers::sqlite::wal`): the `-wal` file of a database
//! the application runs in WAL mode is written by SQLite, but the driver must survive whatever
//! is in it (a torn write, another tool's file, a disk error).
//!
//! The first byte picks: even, the rest is a WAL file as is; odd, a WAL built with valid
//! checksums from frames described by the bytes (page numbers, commit marks, images, salts,
//! byte order), then up to two bytes changed, so the reader's chain and commit logic is
//! reached.
//!
//! Checked:
//! - nothing panics;
//! - a file without a usable header reads as empty; a first read never reports a restart;
//! - what reads lies inside the file: the cursor's frames, every page image (which reads
//!   back), page numbers from 1; a database size exactly when a commit was read;
//! - reading again from the returned cursor finds nothing new, and reading a prefix of the
//!   file, then the whole file from the prefix's cursor, counts the same transactions as one
//!   read of the whole file;
//! - reading past a restart from any cursor stays inside the file.

use crate::bytes::Bytes;
use lifeboat_io_tokio::drivers::sqlite::wal::{
    encode, frame_offset, read_after_restart, read_committed, read_header, read_page, AfterRestart,
    Committed, WalRead,
};
use std::fs::{self, File};
use std::path::PathBuf;

pub fn sqlite_wal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        structured(&mut Bytes::new(rest))
    };
    let path = scratch("whole");
    fs::write(&path, &bytes).expect("scratch file");
    let file = File::open(&path).expect("scratch file");
    let len = bytes.len() as u64;
    let whole = read_committed(&file, None).expect("a regular file reads");
    let header = read_header(&file).expect("a regular file reads");
    let (cursor, new) = match whole {
        WalRead::Empty => {
            assert!(header.is_none(), "a usable header read as no WAL");
            return;
        }
        WalRead::Restarted { .. } => panic!("a first read reported a restart"),
        WalRead::Continued { cursor, new } => (cursor, new),
    };
    assert!(header.is_some());
    assert!(
        frame_offset(cursor.page_size, cursor.frames) <= len,
        "the cursor is past the end"
    );
    check_inside(&file, &new, cursor.page_size, len);
    match read_committed(&file, Some(&cursor)).expect("reads") {
        WalRead::Continued {
            cursor: again,
            new: more,
        } => {
            assert_eq!(
                (again, more.commits),
                (cursor, 0),
                "a second read found more"
            );
        }
        other => panic!("reading again from the cursor gave {other:?}"),
    }

    // A prefix (as the WAL was when an earlier capture read it), then the rest from there.
    let cut = if bytes.len() > 32 {
        32 + (bytes[bytes.len() / 2] as usize * 131) % (bytes.len() - 31)
    } else {
        bytes.len()
    };
    let prefix = scratch("prefix");
    fs::write(&prefix, &bytes[..cut]).expect("scratch file");
    let early = read_committed(&File::open(&prefix).expect("scratch"), None).expect("reads");
    if let WalRead::Continued {
        cursor: c1,
        new: n1,
    } = early
    {
        match read_committed(&file, Some(&c1)).expect("reads") {
            WalRead::Continued { new: n2, .. } => assert_eq!(
                n1.commits + n2.commits,
                new.commits,
                "a read in two steps counted other transactions than one read"
            ),
            other => panic!("the same WAL, longer, read as {other:?}"),
        }
        if let AfterRestart::Complete {
            old_tail,
            new,
            cursor,
        } = read_after_restart(&file, &c1).expect("reads")
        {
            check_inside(&file, &old_tail, c1.page_size, len);
            check_inside(&file, &new, cursor.page_size, len);
        }
    }
}

fn check_inside(file: &File, new: &Committed, page_size: u32, len: u64) {
    assert_eq!(
        new.commits > 0,
        new.db_pages.is_some(),
        "a size without a commit or back"
    );
    for (i, (&page, &offset)) in new.pages.iter().enumerate() {
        assert!(page >= 1, "page 0 read");
        assert!(
            offset + u64::from(page_size) <= len,
            "an image past the end"
        );
        if i < 8 {
            assert_eq!(
                read_page(file, offset, page_size).expect("reads").len(),
                page_size as usize
            );
        }
    }
}

/// A valid WAL from the bytes, then a byte or two changed.
fn structured(b: &mut Bytes<'_>) -> Vec<u8> {
    let big_endian = b.bool();
    let salts = [b.u32(), b.u32()];
    let page_size = 512u32 << b.below(2);
    let mut images = Vec::new();
    let mut frames = Vec::new();
    for _ in 0..b.below(12) {
        let page = if b.chance(20) {
            0
        } else {
            1 + b.below(8) as u32
        };
        let commit = if b.chance(100) {
            1 + b.below(9) as u32
        } else {
            0
        };
        images.push((page, commit, b.slice(64).to_vec()));
    }
    for (page, commit, image) in &images {
        frames.push((*page, *commit, image.as_slice()));
    }
    let mut out = encode(big_endian, salts, page_size, &frames);
    for _ in 0..b.below(3) {
        if out.is_empty() {
            break;
        }
        let at = b.below(out.len());
        out[at] ^= b.u8() | 1;
    }
    out.truncate(out.len().saturating_sub(b.below(3) * 100));
    out
}

/// A file in this thread's scratch directory (the reader reads files).
fn scratch(name: &str) -> PathBuf {
    crate::manifests::scratch("sqlite_wal").join(name)
}
