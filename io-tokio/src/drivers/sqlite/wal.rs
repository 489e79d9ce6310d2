//! Reading SQLite's write-ahead log: the committed frames after a position, validated the way
//! SQLite validates them on recovery.
//!
//! Format (<https://www.sqlite.org/fileformat2.html#walformat>), all fields big-endian:
//!
//! ```text
//! header, 32 bytes:  magic (0x377f0682 or 0x377f0683), version 3007000, page size,
//!                    checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2
//! frame, 24 bytes + one page:
//!                    page number, database size in pages after a commit (0 otherwise),
//!                    salt-1, salt-2, checksum-1, checksum-2, the page image
//! ```
//!
//! Checksums are cumulative: the header's covers its first 24 bytes; each frame's covers its
//! first 8 bytes and its page, continuing from the checksum before it. The words are read in
//! big-endian order when the magic ends in 3, little-endian when it ends in 2. A frame counts
//! when its salts are the header's and its checksum continues the chain; the WAL's committed
//! content ends at the last such frame that commits (database size non-zero). Frames after it
//! belong to a transaction that is not committed (or never will be) and are not read.
//!
//! A [`WalCursor`] is where a reader stopped: the header's salts, the frames consumed (all of
//! them committed) and the running checksum. Reading from a cursor continues the same chain; a
//! header with other salts means SQLite restarted the WAL since (a checkpoint copied every frame
//! into the database file, then a writer started the log over): [`WalRead::Restarted`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;

pub const HEADER_LEN: u64 = 32;
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;

/// A WAL header that SQLite would use.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salts: [u32; 2],
    big_endian: bool,
    checksum: [u32; 2],
}

impl WalHeader {
    /// A cursor at this WAL's start, before its first frame.
    fn start(&self) -> WalCursor {
        WalCursor {
            salts: self.salts,
            checkpoint_seq: self.checkpoint_seq,
            page_size: self.page_size,
            frames: 0,
            checksum: self.checksum,
            big_endian: self.big_endian,
        }
    }
}

/// Where a reader of one WAL stopped (after a commit frame, or at the header).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalCursor {
    pub salts: [u32; 2],
    pub checkpoint_seq: u32,
    pub page_size: u32,
    /// Frames consumed from the start of this WAL.
    pub frames: u64,
    /// The checksum after the last consumed frame (the header's with none).
    pub checksum: [u32; 2],
    big_endian: bool,
}

/// Committed frames read from a cursor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Commit frames read: transactions.
    pub commits: u64,
    /// Each page written, with the file offset of its newest image among the frames read.
    pub pages: BTreeMap<u32, u64>,
    /// The database's size in pages after the last commit read (none when no commit was read).
    pub db_pages: Option<u32>,
}

/// What reading the WAL found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRead {
    /// No WAL, or one whose header SQLite would ignore (empty, torn, bad checksum): nothing
    /// committed is in it.
    Empty,
    /// The same WAL as the cursor's (or a first read): what was committed after it.
    Continued { cursor: WalCursor, new: Committed },
    /// Another WAL than the cursor's: SQLite restarted it. `new` is everything committed in the
    /// new one, from its start.
    Restarted { cursor: WalCursor, new: Committed },
}

/// The WAL's header, if SQLite would use it.
pub fn read_header(file: &File) -> io::Result<Option<WalHeader>> {
    let mut buf = [0u8; HEADER_LEN as usize];
    match read_exact_at(file, 0, &mut buf)? {
        true => Ok(parse_header(&buf)),
        false => Ok(None),
    }
}

fn be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn parse_header(b: &[u8; HEADER_LEN as usize]) -> Option<WalHeader> {
    let magic = be(b, 0);
    let big_endian = match magic {
        MAGIC_BE => true,
        MAGIC_LE => false,
        _ => return None,
    };
    let page_size = be(b, 8);
    if be(b, 4) != VERSION || !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let checksum = [be(b, 24), be(b, 28)];
    if checksum_of(big_endian, [0, 0], &b[..24]) != checksum {
        return None;
    }
    Some(WalHeader {
        page_size,
        checkpoint_seq: be(b, 12),
        salts: [be(b, 16), be(b, 20)],
        big_endian,
        checksum,
    })
}

/// SQLite's WAL checksum of `data` (a multiple of 8 bytes) continuing from `s`.
fn checksum_of(big_endian: bool, s: [u32; 2], data: &[u8]) -> [u32; 2] {
    let (mut s0, mut s1) = (s[0], s[1]);
    for pair in data.chunks_exact(8) {
        let word = |i: usize| {
            let w = [pair[i], pair[i + 1], pair[i + 2], pair[i + 3]];
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        s0 = s0.wrapping_add(word(0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(4)).wrapping_add(s0);
    }
    [s0, s1]
}

/// Fill `buf` from `offset`; false when the file ends first.
fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
    Ok(read_up_to(file, offset, buf)? == buf.len())
}

/// The file offset of frame `i`'s header (0-based).
pub fn frame_offset(page_size: u32, i: u64) -> u64 {
    HEADER_LEN + i * (FRAME_HEADER_LEN + u64::from(page_size))
}

/// The committed frames of the WAL in `file` after `from` (from its start without a cursor).
/// Reads every frame it returns once, sequentially; stops at the first frame that does not
/// continue the chain, and returns only frames up to the last commit before it.
pub fn read_committed(file: &File, from: Option<&WalCursor>) -> io::Result<WalRead> {
    let Some(header) = read_header(file)? else {
        return Ok(WalRead::Empty);
    };
    let start = header.start();
    let (cursor, restarted) = match from {
        Some(c) if c.salts == header.salts && c.page_size == header.page_size => (*c, false),
        Some(_) => (start, true),
        None => (start, false),
    };
    let (cursor, new) = scan(file, cursor)?;
    Ok(if restarted {
        WalRead::Restarted { cursor, new }
    } else {
        WalRead::Continued { cursor, new }
    })
}

/// Frames read by the first request of a scan; each full request doubles the next, up to
/// [`MAX_READ_FRAMES`]. A scan usually finds a few new frames followed by the stale tail of an
/// earlier log (SQLite restarts the WAL in place without truncating it), so a large first read
/// would mostly read frames that do not continue the chain.
const FIRST_READ_FRAMES: usize = 4;
const MAX_READ_FRAMES: usize = 256;

/// Fill as much of `buf` from `offset` as the file holds; the bytes read.
fn read_up_to(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Frames from `cursor` on, up to the last commit of the valid chain.
fn scan(file: &File, cursor: WalCursor) -> io::Result<(WalCursor, Committed)> {
    let frame_len = (FRAME_HEADER_LEN + u64::from(cursor.page_size)) as usize;
    let (mut at, mut sum) = (cursor, cursor.checksum);
    let mut pending: Vec<(u32, u64)> = Vec::new();
    let mut out = Committed::default();
    let mut i = cursor.frames;
    let mut want = FIRST_READ_FRAMES;
    let mut buf = Vec::new();
    'read: loop {
        buf.resize(want * frame_len, 0);
        let whole = read_up_to(file, frame_offset(cursor.page_size, i), &mut buf)? / frame_len;
        for frame in buf.chunks_exact(frame_len).take(whole) {
            let Some(next) = continues(frame, &cursor, sum) else {
                break 'read;
            };
            sum = next;
            let (page, db_pages) = (be(frame, 0), be(frame, 4));
            pending.push((page, frame_offset(cursor.page_size, i) + FRAME_HEADER_LEN));
            i += 1;
            if db_pages != 0 {
                out.commits += 1;
                out.db_pages = Some(db_pages);
                out.pages.extend(pending.drain(..));
                at.frames = i;
                at.checksum = sum;
            }
        }
        if whole < want {
            break;
        }
        want = (want * 2).min(MAX_READ_FRAMES);
    }
    Ok((at, out))
}

/// After a restart: what the old WAL still holds past `old` (frames the new one has not
/// overwritten), and all of the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterRestart {
    /// Every frame the old WAL committed after `old` was read (`old_tail`), then the new WAL
    /// from its start (`new`, up to `cursor`).
    Complete {
        old_tail: Committed,
        cursor: WalCursor,
        new: Committed,
    },
    /// The new WAL overwrote the frame after `old`: whether the old one committed more after
    /// it cannot be known from the file.
    Unknown,
}

/// Read past a restart: continue the old WAL's chain from `old` where the new one has not
/// written over it, then read the new one. The old chain's end is known only when it lies at
/// or beyond every frame the new WAL wrote (valid frames of the new salts, committed or not)
/// and a frame that does not continue it is there to see (not the end of a truncated file).
pub fn read_after_restart(file: &File, old: &WalCursor) -> io::Result<AfterRestart> {
    let Some(header) = read_header(file)? else {
        return Ok(AfterRestart::Unknown);
    };
    if header.page_size != old.page_size {
        return Ok(AfterRestart::Unknown);
    }
    let start = header.start();
    let written = valid_frames(file, &start)?;
    if old.frames < written {
        return Ok(AfterRestart::Unknown);
    }
    // The old chain's end is seen only on a frame that is there and does not continue it; at
    // the end of the file, frames after it may have been truncated away.
    let stop = valid_frames(file, old)?;
    let len = file.metadata()?.len();
    if len < frame_offset(old.page_size, stop + 1) {
        return Ok(AfterRestart::Unknown);
    }
    let (_, old_tail) = scan(file, *old)?;
    let (cursor, new) = scan(file, start)?;
    Ok(AfterRestart::Complete {
        old_tail,
        cursor,
        new,
    })
}

/// The checksum after `frame` (header and page) when it continues the chain of `of` whose
/// checksum so far is `sum`: a page number, the log's salts, the checksum that follows.
fn continues(frame: &[u8], of: &WalCursor, sum: [u32; 2]) -> Option<[u32; 2]> {
    if be(frame, 0) == 0 || [be(frame, 8), be(frame, 12)] != of.salts {
        return None;
    }
    let sum = checksum_of(of.big_endian, sum, &frame[..8]);
    let sum = checksum_of(of.big_endian, sum, &frame[FRAME_HEADER_LEN as usize..]);
    ([be(frame, 16), be(frame, 20)] == sum).then_some(sum)
}

/// How many frames from `start` continue its chain (committed or not).
fn valid_frames(file: &File, start: &WalCursor) -> io::Result<u64> {
    let frame_len = FRAME_HEADER_LEN + u64::from(start.page_size);
    let mut frame = vec![0u8; frame_len as usize];
    let mut sum = start.checksum;
    let mut i = start.frames;
    while read_exact_at(file, frame_offset(start.page_size, i), &mut frame)? {
        match continues(&frame, start, sum) {
            Some(next) => sum = next,
            None => break,
        }
        i += 1;
    }
    Ok(i)
}

/// A WAL file as SQLite writes it: the header for `salts` and `page_size`, then each frame
/// `(page, database size after a commit or 0, image)` with its cumulative checksum. For tests
/// and the `sqlite_wal` fuzz target (images shorter than a page are padded with zeros).
pub fn encode(
    big_endian: bool,
    salts: [u32; 2],
    page_size: u32,
    frames: &[(u32, u32, &[u8])],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((if big_endian { MAGIC_BE } else { MAGIC_LE }).to_be_bytes());
    out.extend(VERSION.to_be_bytes());
    out.extend(page_size.to_be_bytes());
    out.extend(7u32.to_be_bytes());
    out.extend(salts[0].to_be_bytes());
    out.extend(salts[1].to_be_bytes());
    let mut sum = checksum_of(big_endian, [0, 0], &out);
    out.extend(sum[0].to_be_bytes());
    out.extend(sum[1].to_be_bytes());
    for &(page, commit, image) in frames {
        let mut head = Vec::with_capacity(FRAME_HEADER_LEN as usize);
        head.extend(page.to_be_bytes());
        head.extend(commit.to_be_bytes());
        head.extend(salts[0].to_be_bytes());
        head.extend(salts[1].to_be_bytes());
        let mut data = image[..image.len().min(page_size as usize)].to_vec();
        data.resize(page_size as usize, 0);
        sum = checksum_of(big_endian, sum, &head[..8]);
        sum = checksum_of(big_endian, sum, &data);
        head.extend(sum[0].to_be_bytes());
        head.extend(sum[1].to_be_bytes());
        out.extend(head);
        out.extend(data);
    }
    out
}

/// What the WAL index (the `-shm` file SQLite maps in every process using the database) says
/// now: the log's salts (as in the WAL header), its last committed frame and how many frames a
/// checkpoint has copied into the database file.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IndexState {
    pub salts: [u32; 2],
    pub max_frame: u32,
    pub backfilled: u32,
}

/// Read the WAL index header (`WalIndexHdr`, two 48-byte copies that SQLite writes second copy
/// first; a reader trusts them when they agree) and the checkpoint's progress (`nBackfill`, at
/// byte 96). Native byte order, except the salts, copied from the WAL header as they are there.
/// `None` when the two copies differ (a writer is updating them: read again) or the file is
/// shorter than the header.
pub fn read_index(shm: &File) -> io::Result<Option<IndexState>> {
    let mut buf = [0u8; 100];
    if !read_exact_at(shm, 0, &mut buf)? || buf[..48] != buf[48..96] {
        return Ok(None);
    }
    let native = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    Ok(Some(IndexState {
        salts: [be(&buf, 32), be(&buf, 36)],
        max_frame: native(16),
        backfilled: native(96),
    }))
}

/// The page image at `offset` (from [`Committed::pages`]).
pub fn read_page(file: &File, offset: u64, page_size: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; page_size as usize];
    if read_exact_at(file, offset, &mut buf)? {
        Ok(buf)
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the WAL ends inside the page image at offset {offset}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A WAL of 512-byte pages: `frames` of (page, commit size, fill byte of the image).
    fn wal(big_endian: bool, salts: [u32; 2], frames: &[(u32, u32, u8)]) -> Vec<u8> {
        let images: Vec<Vec<u8>> = frames.iter().map(|f| vec![f.2; 512]).collect();
        let frames: Vec<(u32, u32, &[u8])> = frames
            .iter()
            .zip(&images)
            .map(|(f, i)| (f.0, f.1, i.as_slice()))
            .collect();
        encode(big_endian, salts, 512, &frames)
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn continued(r: WalRead) -> (WalCursor, Committed) {
        match r {
            WalRead::Continued { cursor, new } => (cursor, new),
            other => panic!("expected Continued, got {other:?}"),
        }
    }

    #[test]
    fn committed_frames_end_at_the_last_commit_and_the_newest_image_wins() {
        for big_endian in [false, true] {
            let bytes = wal(
                big_endian,
                [1, 2],
                &[(1, 0, 1), (2, 3, 2), (2, 0, 3), (3, 3, 4), (4, 0, 5)],
            );
            let f = file_of(&bytes);
            let (cursor, new) = continued(read_committed(&f, None).unwrap());
            assert_eq!(new.commits, 2);
            assert_eq!(new.db_pages, Some(3));
            assert_eq!(
                cursor.frames, 4,
                "the uncommitted fifth frame is not consumed"
            );
            assert_eq!(new.pages.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
            // Page 2's newest image is the third frame's (fill 3).
            assert_eq!(read_page(&f, new.pages[&2], 512).unwrap()[0], 3);
            // Nothing more to read from there.
            let (again, none) = continued(read_committed(&f, Some(&cursor)).unwrap());
            assert_eq!((again, none), (cursor, Committed::default()));
        }
    }

    #[test]
    fn reading_continues_from_a_cursor_when_frames_are_appended() {
        let first = wal(false, [9, 9], &[(1, 1, 1)]);
        let f = file_of(&first);
        let (cursor, new) = continued(read_committed(&f, None).unwrap());
        assert_eq!(new.commits, 1);
        let longer = wal(false, [9, 9], &[(1, 1, 1), (2, 2, 2), (1, 2, 3)]);
        let f = file_of(&longer);
        let (end, new) = continued(read_committed(&f, Some(&cursor)).unwrap());
        assert_eq!((new.commits, end.frames), (2, 3));
        assert_eq!(new.pages.keys().copied().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn a_damaged_frame_or_a_stale_one_ends_the_chain() {
        let mut bytes = wal(false, [5, 6], &[(1, 1, 1), (2, 2, 2), (3, 3, 3)]);
        // Flip a byte in the second frame's page: its checksum no longer continues the chain.
        let at = frame_offset(512, 1) as usize + 24 + 100;
        bytes[at] ^= 0xff;
        let (cursor, new) = continued(read_committed(&file_of(&bytes), None).unwrap());
        assert_eq!((new.commits, cursor.frames), (1, 1));
        // A frame left over from an earlier WAL (other salts) after the valid ones is not read.
        let mut old = wal(false, [5, 6], &[(1, 1, 1)]);
        let stale = wal(false, [4, 4], &[(1, 1, 1), (2, 2, 2)]);
        old.extend_from_slice(&stale[frame_offset(512, 1) as usize..]);
        let (_, new) = continued(read_committed(&file_of(&old), None).unwrap());
        assert_eq!(new.commits, 1);
    }

    #[test]
    fn reads_in_growing_chunks_find_every_commit_before_a_stale_tail() {
        // 1,000 frames (several chunk sizes and the largest one), a commit every 7th frame
        // and the uncommitted rest, then an older WAL's frames left behind the valid ones.
        let n = 1_000u32;
        let frames: Vec<(u32, u32, u8)> = (0..n)
            .map(|i| (i % 50 + 1, if i % 7 == 6 { 50 } else { 0 }, (i % 251) as u8))
            .collect();
        let mut bytes = wal(false, [3, 4], &frames);
        let stale = wal(false, [2, 2], &frames[..400]);
        bytes.extend_from_slice(&stale[frame_offset(512, 0) as usize..]);
        let f = file_of(&bytes);
        let committed = u64::from(n / 7 * 7);
        let (cursor, new) = continued(read_committed(&f, None).unwrap());
        assert_eq!((new.commits, cursor.frames), (u64::from(n / 7), committed));
        // The newest image of page 1 is the last committed frame writing it.
        let last = (0..committed).filter(|i| i % 50 == 0).max().unwrap();
        assert_eq!(
            read_page(&f, new.pages[&1], 512).unwrap()[0],
            (last % 251) as u8
        );
        // From a cursor in the middle, only the commits after it.
        let (mid, _) =
            continued(read_committed(&file_of(&wal(false, [3, 4], &frames[..301])), None).unwrap());
        let (end, rest) = continued(read_committed(&f, Some(&mid)).unwrap());
        assert_eq!(end, cursor);
        assert_eq!(rest.commits, u64::from(n / 7) - 301 / 7);
    }

    #[test]
    fn a_new_salt_is_a_restart_and_garbage_is_no_wal() {
        let f = file_of(&wal(false, [1, 1], &[(1, 1, 1)]));
        let (cursor, _) = continued(read_committed(&f, None).unwrap());
        let g = file_of(&wal(false, [2, 1], &[(1, 1, 7), (2, 2, 8)]));
        match read_committed(&g, Some(&cursor)).unwrap() {
            WalRead::Restarted { cursor, new } => {
                assert_eq!((new.commits, cursor.frames, cursor.salts), (2, 2, [2, 1]))
            }
            other => panic!("expected a restart, got {other:?}"),
        }
        for junk in [&b""[..], b"short", &[0u8; 64]] {
            assert_eq!(
                read_committed(&file_of(junk), None).unwrap(),
                WalRead::Empty
            );
        }
        let mut bad = wal(false, [1, 1], &[(1, 1, 1)]);
        bad[27] ^= 1; // the header's checksum
        assert_eq!(
            read_committed(&file_of(&bad), None).unwrap(),
            WalRead::Empty
        );
    }

    #[test]
    fn after_a_restart_the_old_tail_is_read_where_the_new_log_has_not_overwritten_it() {
        // The old WAL committed five frames; the reader had consumed two.
        let old = wal(
            false,
            [1, 1],
            &[(1, 0, 1), (2, 1, 2), (3, 2, 3), (4, 0, 4), (5, 4, 5)],
        );
        let f = file_of(&old[..frame_offset(512, 2) as usize]);
        let (cursor, _) = continued(read_committed(&f, None).unwrap());
        assert_eq!(cursor.frames, 2);
        // Restarted: one new frame written over the old first frame; the old tail survives,
        // and a frame of another log after it shows where it ends.
        let new = wal(false, [2, 2], &[(9, 9, 9)]);
        let mut bytes = old.clone();
        bytes[..new.len()].copy_from_slice(&new);
        let stale = wal(false, [7, 7], &[(1, 1, 1)]);
        let mut with_end = bytes.clone();
        with_end.extend_from_slice(&stale[HEADER_LEN as usize..]);
        assert_eq!(
            read_after_restart(&file_of(&bytes), &cursor).unwrap(),
            AfterRestart::Unknown,
            "at the end of the file, more frames may have been truncated away"
        );
        let bytes = with_end;
        match read_after_restart(&file_of(&bytes), &cursor).unwrap() {
            AfterRestart::Complete { old_tail, new, .. } => {
                assert_eq!(old_tail.commits, 2);
                assert_eq!(
                    old_tail.pages.keys().copied().collect::<Vec<_>>(),
                    [3, 4, 5]
                );
                assert_eq!((new.commits, new.db_pages), (1, Some(9)));
            }
            other => panic!("expected the old tail, got {other:?}"),
        }
        // Three new frames reach past the reader's position: what followed it is gone.
        let new = wal(false, [2, 2], &[(9, 0, 9), (8, 0, 8), (7, 9, 7)]);
        let mut bytes = old.clone();
        bytes[..new.len()].copy_from_slice(&new);
        assert_eq!(
            read_after_restart(&file_of(&bytes), &cursor).unwrap(),
            AfterRestart::Unknown
        );
    }

    #[test]
    fn a_real_sqlite_wal_reads_one_commit_per_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
        let wal_path = dir.path().join("app.db-wal");
        let f = File::open(&wal_path).unwrap();
        let (cursor, new) = continued(read_committed(&f, None).unwrap());
        assert_eq!(new.commits, 1);
        for i in 0..50 {
            conn.execute(
                "INSERT INTO t(v) VALUES (?1)",
                [format!("row {i} {}", "x".repeat(300))],
            )
            .unwrap();
        }
        let f = File::open(&wal_path).unwrap();
        let (end, new) = continued(read_committed(&f, Some(&cursor)).unwrap());
        assert_eq!(new.commits, 50);
        let page_count: u32 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        assert_eq!(new.db_pages, Some(page_count));
        assert!(end.frames > cursor.frames);
        // A checkpoint that restarts the log: the next transaction starts a new WAL.
        conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
            .unwrap();
        conn.execute("INSERT INTO t(v) VALUES ('after')", [])
            .unwrap();
        let f = File::open(&wal_path).unwrap();
        match read_committed(&f, Some(&end)).unwrap() {
            WalRead::Restarted { new, .. } => assert_eq!(new.commits, 1),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    /// The WAL index as SQLite keeps it: the salts of the WAL header, the last frame, and the
    /// checkpoint's progress; a torn header (copies that differ) reads as `None`.
    #[test]
    fn the_wal_index_says_what_sqlite_wrote_and_copied() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("i.db");
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
            .unwrap();
        for i in 0..5 {
            conn.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let shm = File::open(dir.path().join("i.db-shm")).unwrap();
        let wal = File::open(dir.path().join("i.db-wal")).unwrap();
        let header = read_header(&wal).unwrap().unwrap();
        let index = read_index(&shm).unwrap().unwrap();
        assert_eq!(index.salts, header.salts);
        assert_eq!(
            u64::from(index.max_frame),
            valid_frames(&wal, &header.start()).unwrap()
        );
        assert_eq!(index.backfilled, 0);
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .unwrap();
        let index = read_index(&shm).unwrap().unwrap();
        assert_eq!(index.backfilled, index.max_frame);
        let mut torn = std::fs::read(dir.path().join("i.db-shm")).unwrap();
        torn[16] ^= 1;
        assert_eq!(read_index(&file_of(&torn[..200])).unwrap(), None);
        assert_eq!(read_index(&file_of(&[0u8; 40])).unwrap(), None);
    }
}
