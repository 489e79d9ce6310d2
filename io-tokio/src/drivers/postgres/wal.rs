//! PostgreSQL's write-ahead log as lifeboat sees it: positions, file names, segment ranges,
//! timelines, and a structural walk of a segment's records.
//!
//! **LSN.** lifeboat's `Lsn` *is* PostgreSQL's 64-bit WAL byte position (`0/3000028` is
//! `0x3000028`). Timelines share that space: a new timeline continues from its switch point, so
//! positions keep growing across promotions and the core's chain rule applies unchanged.
//!
//! **Segment ranges.** Segment number `n` of a cluster whose segment size is `s` covers
//! `[n*s, (n+1)*s)`. Its file name is `TTTTTTTT` (timeline) then `n / (2^32/s)` and
//! `n % (2^32/s)`, eight hex digits each.
//!
//! **Other archive files.** `TTTTTTTT.history` (a timeline's ancestry, written at promotion),
//! `<segment>.partial` (the last, incomplete segment of the old timeline, archived by a promoted
//! standby) and `<segment>.XXXXXXXX.backup` (a base backup's history file).

use std::fmt;

/// The WAL page size of stock PostgreSQL builds (`XLOG_BLCKSZ`).
pub const WAL_PAGE: u64 = 8192;
/// `XLOG_PAGE_MAGIC` of PostgreSQL 15: a page header with another value is not 15's WAL.
pub const PAGE_MAGIC_PG15: u16 = 0xD110;
/// Segment sizes PostgreSQL accepts (`initdb --wal-segsize`, in MiB: powers of two, 1..=1024).
pub const MIN_SEGMENT: u64 = 1 << 20;
pub const MAX_SEGMENT: u64 = 1 << 30;

const SHORT_HEADER: u64 = 24; // MAXALIGN(sizeof(XLogPageHeaderData))
const LONG_HEADER: u64 = 40; // MAXALIGN(sizeof(XLogLongPageHeaderData))
const RECORD_HEADER: u64 = 24; // sizeof(XLogRecord)
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;
const RM_XACT_ID: u8 = 1;
/// `XLOG_XACT_OPMASK` and the two operations that commit a transaction.
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
/// Record header block ids (`XLR_BLOCK_ID_*`) that can come before a commit's main data.
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
/// PostgreSQL's timestamps count microseconds from 2000-01-01 UTC; this is that instant in
/// milliseconds since the Unix epoch.
const PG_EPOCH_UNIX_MS: i64 = 946_684_800_000;

/// A WAL position printed the PostgreSQL way (`0/3000028`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgLsn(pub u64);

impl PgLsn {
    /// Parse `X/Y` (hex halves), as `pg_current_wal_lsn()` prints it.
    pub fn parse(text: &str) -> Option<PgLsn> {
        let (hi, lo) = text.trim().split_once('/')?;
        // Hex digits only: `from_str_radix` alone would also take a sign (`+1/+2`).
        let hex = |s: &str| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(hi) || !hex(lo) {
            return None;
        }
        let hi = u32::from_str_radix(hi, 16).ok()?;
        let lo = u32::from_str_radix(lo, 16).ok()?;
        Some(PgLsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for PgLsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Whether `size` is a segment size PostgreSQL can have.
pub fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_SEGMENT..=MAX_SEGMENT).contains(&size)
}

/// `[segno * size, (segno + 1) * size)`, saturating at `u64::MAX` for a segment beyond the end
/// of the WAL address space (see [`checked_segment_range`] to refuse those).
pub fn segment_range(segno: u64, segment_size: u64) -> (u64, u64) {
    (
        segno.saturating_mul(segment_size),
        segno.saturating_add(1).saturating_mul(segment_size),
    )
}

/// `[segno * size, (segno + 1) * size)`, or `None` when the segment does not fit in the 64-bit
/// WAL address space (a segment number from a received header, say).
pub fn checked_segment_range(segno: u64, segment_size: u64) -> Option<(u64, u64)> {
    let start = segno.checked_mul(segment_size)?;
    Some((start, start.checked_add(segment_size)?))
}

/// The segment holding position `lsn`.
pub fn segment_of(lsn: u64, segment_size: u64) -> u64 {
    lsn / segment_size
}

/// What a file in PostgreSQL's archive is, by its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A complete WAL segment.
    Segment { timeline: u32, segno: u64 },
    /// `TTTTTTTT.history`: the timeline's ancestry.
    History { timeline: u32 },
    /// `<segment>.partial`: the old timeline's last segment, archived at promotion.
    Partial { timeline: u32, segno: u64 },
    /// `<segment>.XXXXXXXX.backup`: a base backup's history file.
    BackupLabel {
        timeline: u32,
        segno: u64,
        offset: u32,
    },
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// Segments per 4 GiB "log id" (the middle eight hex digits of a segment name). At least 1, so
/// a size PostgreSQL cannot have (0, or over 4 GiB) names segments instead of dividing by zero.
fn segs_per_id(segment_size: u64) -> u64 {
    (0x1_0000_0000 / segment_size.max(1)).max(1)
}

fn parse_segment(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    // ASCII first: 24 bytes of multi-byte characters would not split at byte 8.
    if name.len() != 24 || !name.is_ascii() {
        return None;
    }
    let tli = hex8(&name[0..8])?;
    let hi = u64::from(hex8(&name[8..16])?);
    let lo = u64::from(hex8(&name[16..24])?);
    let per = segs_per_id(segment_size);
    if lo >= per || tli == 0 {
        return None;
    }
    Some((tli, hi * per + lo))
}

impl WalFile {
    /// Parse an archive file name (`%f`). Segment names depend on the segment size.
    pub fn parse(name: &str, segment_size: u64) -> Option<WalFile> {
        if let Some(tli) = name.strip_suffix(".history") {
            let timeline = hex8(tli)?;
            return (timeline > 0).then_some(WalFile::History { timeline });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            let (timeline, segno) = parse_segment(seg, segment_size)?;
            return Some(WalFile::Partial { timeline, segno });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.')?;
            let (timeline, segno) = parse_segment(seg, segment_size)?;
            let offset = hex8(off)?;
            return Some(WalFile::BackupLabel {
                timeline,
                segno,
                offset,
            });
        }
        let (timeline, segno) = parse_segment(name, segment_size)?;
        Some(WalFile::Segment { timeline, segno })
    }

    /// The file name PostgreSQL gives it.
    pub fn name(&self, segment_size: u64) -> String {
        let seg = |tli: u32, segno: u64| {
            let per = segs_per_id(segment_size);
            format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
        };
        match self {
            WalFile::Segment { timeline, segno } => seg(*timeline, *segno),
            WalFile::History { timeline } => format!("{timeline:08X}.history"),
            WalFile::Partial { timeline, segno } => format!("{}.partial", seg(*timeline, *segno)),
            WalFile::BackupLabel {
                timeline,
                segno,
                offset,
            } => format!("{}.{offset:08X}.backup", seg(*timeline, *segno)),
        }
    }
}

/// The name of segment `segno` on `timeline`.
pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    WalFile::Segment { timeline, segno }.name(segment_size)
}

/// What a structural walk of one segment found. Records are followed by their lengths across
/// page headers; CRCs are not checked (PostgreSQL does that when it replays).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentScan {
    /// The end (next record's start, as `pg_last_wal_replay_lsn()` reports it) of the last
    /// record that ends inside the segment; the segment's end after an `XLOG_SWITCH` record.
    /// `None` when no record ends in it (one record spans the whole segment).
    pub last_record_end: Option<u64>,
    /// Where that last record starts (`None` when it started in an earlier segment). A reader
    /// that has validated every record of the segment and already asks for the next segment has
    /// replayed at least up to here.
    pub last_record_start: Option<u64>,
    /// Where valid WAL in the file stops: the segment's end for a complete segment, the end of
    /// the last whole record for a segment still being written (or cut short).
    pub valid_end: u64,
    /// The segment ends with a switch record (`pg_switch_wal()`, `archive_timeout`).
    pub switched: bool,
    /// Records that start in the segment.
    pub records: u64,
}

/// Why a segment could not be walked at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanError {
    WrongSize {
        size: u64,
        expected: u64,
    },
    BadFirstPage(String),
    /// The segment size is not one PostgreSQL can have, or the segment lies beyond the end of
    /// the WAL address space.
    BadSegment(String),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::WrongSize { size, expected } => {
                write!(f, "the file is {size} bytes, a segment is {expected}")
            }
            ScanError::BadFirstPage(why) => write!(f, "its first page is not WAL: {why}"),
            ScanError::BadSegment(why) => write!(f, "{why}"),
        }
    }
}

struct Page {
    info: u16,
    rem_len: u32,
    header: u64,
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The page header at segment offset `off` if it is a valid PostgreSQL 15 header for position
/// `base + off`.
fn page_at(bytes: &[u8], base: u64, off: u64) -> Option<Page> {
    let o = off as usize;
    if o + SHORT_HEADER as usize > bytes.len() || le_u16(bytes, o) != PAGE_MAGIC_PG15 {
        return None;
    }
    if le_u64(bytes, o + 8) != base + off {
        return None;
    }
    let info = le_u16(bytes, o + 2);
    let header = if info & XLP_LONG_HEADER != 0 {
        LONG_HEADER
    } else {
        SHORT_HEADER
    };
    Some(Page {
        info,
        rem_len: le_u32(bytes, o + 16),
        header,
    })
}

fn maxalign(x: u64) -> u64 {
    (x + 7) & !7
}

/// Walk the records of segment `segno` (the file's bytes): find where the last record inside it
/// ends and where valid WAL stops. Works on complete segments and on files still being written.
pub fn scan_segment(bytes: &[u8], segno: u64, segment_size: u64) -> Result<SegmentScan, ScanError> {
    walk_segment(bytes, segno, segment_size, |_| {})
}

/// One record that starts in a segment, as [`walk_segment`] meets it.
pub struct Record<'a> {
    start: u64,
    rmid: u8,
    info: u8,
    /// The bytes from the record's start to the end of its page (all of its header when
    /// `rmid` is known).
    on_page: &'a [u8],
}

/// Commit records found by [`scan_commits`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Commits {
    /// Transactions committed (`COMMIT` and `COMMIT PREPARED` records).
    pub count: u64,
    /// The earliest and latest commit times read (ms since the Unix epoch); a commit whose
    /// header crosses a page is counted without its time.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// The latest commit time read before `from` (in this segment).
    pub before_ms: Option<i64>,
}

/// [`scan_segment`], also counting the transactions committed by records that start at or
/// after `from`.
pub fn scan_commits(
    bytes: &[u8],
    segno: u64,
    segment_size: u64,
    from: u64,
) -> Result<(SegmentScan, Commits), ScanError> {
    let mut c = Commits::default();
    let scan = walk_segment(bytes, segno, segment_size, |r| {
        if r.rmid != RM_XACT_ID {
            return;
        }
        let op = r.info & XLOG_XACT_OPMASK;
        if op != XLOG_XACT_COMMIT && op != XLOG_XACT_COMMIT_PREPARED {
            return;
        }
        if r.start < from {
            if let Some(t) = commit_time(r.on_page) {
                c.before_ms = Some(c.before_ms.map_or(t, |b| b.max(t)));
            }
            return;
        }
        c.count += 1;
        if let Some(t) = commit_time(r.on_page) {
            c.first_ms = Some(c.first_ms.map_or(t, |f| f.min(t)));
            c.last_ms = Some(c.last_ms.map_or(t, |l| l.max(t)));
        }
    })?;
    Ok((scan, c))
}

/// A commit record's time (`xl_xact_commit.xact_time`, the first field of its main data) when
/// the header up to it lies on the record's first page.
fn commit_time(rec: &[u8]) -> Option<i64> {
    let mut at = RECORD_HEADER as usize;
    loop {
        match *rec.get(at)? {
            XLR_BLOCK_ID_ORIGIN => at += 1 + 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => at += 1 + 4,
            XLR_BLOCK_ID_DATA_SHORT => {
                at += 1 + 1;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                at += 1 + 4;
                break;
            }
            _ => return None, // a block reference: no commit carries one
        }
    }
    let us = i64::from_le_bytes(rec.get(at..at + 8)?.try_into().ok()?);
    PG_EPOCH_UNIX_MS.checked_add(us.div_euclid(1000))
}

fn walk_segment(
    bytes: &[u8],
    segno: u64,
    segment_size: u64,
    mut visit: impl FnMut(Record<'_>),
) -> Result<SegmentScan, ScanError> {
    if bytes.len() as u64 != segment_size {
        return Err(ScanError::WrongSize {
            size: bytes.len() as u64,
            expected: segment_size,
        });
    }
    let mut walker = Walker::new(segno, segment_size)?;
    let done = walker.advance(bytes, bytes.len(), &mut visit)?;
    Ok(done.expect("a walk over the whole segment finishes"))
}

/// A walk over a segment that is still being read: [`Walker::advance`] follows the records as
/// far as the bytes read so far reach (whole WAL pages), so a reader can walk each chunk while
/// it is still in the cache, and the result is the same as one walk over the whole segment.
pub struct Walker {
    base: u64,
    seg_end: u64,
    /// `None` until the first page (and any continuation at its start) is walked.
    at: Option<(u64, SegmentScan)>,
    done: bool,
}

/// Where [`skip_data`] got to.
enum Skip {
    /// The position after the record's last byte (past the segment: it continues in the next).
    End(u64),
    /// A page it needs is not valid WAL (yet).
    Invalid,
    /// A page it needs is not read yet.
    NeedMore,
}

impl Walker {
    /// A walk of segment `segno` of `segment_size`-byte segments.
    pub fn new(segno: u64, segment_size: u64) -> Result<Walker, ScanError> {
        // The walk relies on whole WAL pages and on positions that cannot overflow.
        if !valid_segment_size(segment_size) {
            return Err(ScanError::BadSegment(format!(
                "{segment_size} bytes is not a PostgreSQL segment size (a power of two, 1 MiB to 1 GiB)"
            )));
        }
        let Some((base, seg_end)) = checked_segment_range(segno, segment_size) else {
            return Err(ScanError::BadSegment(format!(
                "segment {segno} of {segment_size}-byte segments lies beyond the end of the WAL"
            )));
        };
        Ok(Walker {
            base,
            seg_end,
            at: None,
            done: false,
        })
    }

    /// Walk on through `bytes[..avail]` (the segment's first `avail` bytes; `bytes` may be
    /// longer, but only that much is read). Returns the scan once the walk is over, which it
    /// always is when `avail` is the whole segment; `None` while it needs more bytes. After the
    /// scan was returned, later calls return it again without visiting anything.
    pub fn advance(
        &mut self,
        bytes: &[u8],
        avail: usize,
        visit: &mut impl FnMut(Record<'_>),
    ) -> Result<Option<SegmentScan>, ScanError> {
        let size = self.seg_end - self.base;
        let avail = avail.min(bytes.len());
        let (base, seg_end) = (self.base, self.seg_end);
        let whole = avail as u64 >= size;
        if whole && bytes.len() as u64 != size {
            return Err(ScanError::WrongSize {
                size: bytes.len() as u64,
                expected: size,
            });
        }
        // Whether the bytes up to segment position `end` are read.
        let have = |end: u64| whole || end <= base + avail as u64;
        if self.at.is_none() {
            if !have(base + WAL_PAGE) {
                return Ok(None);
            }
            let first = page_at(bytes, base, 0).ok_or_else(|| {
                ScanError::BadFirstPage(format!(
                    "no PostgreSQL 15 page header for {} at offset 0",
                    PgLsn(base)
                ))
            })?;
            if first.info & XLP_LONG_HEADER == 0 {
                return Err(ScanError::BadFirstPage("no long page header".into()));
            }
            let mut scan = SegmentScan {
                last_record_end: None,
                last_record_start: None,
                valid_end: base + first.header,
                switched: false,
                records: 0,
            };
            // Skip the tail of a record that started in an earlier segment.
            let mut ptr = base + first.header;
            if first.info & XLP_FIRST_IS_CONTRECORD != 0 {
                match skip_data(bytes, base, seg_end, ptr, u64::from(first.rem_len), &have) {
                    Skip::NeedMore => return Ok(None),
                    Skip::End(end) if end <= seg_end => {
                        ptr = maxalign(end);
                        scan.last_record_end = Some(ptr);
                        scan.valid_end = ptr;
                    }
                    Skip::End(_) => return Ok(Some(self.finish(scan_full(scan, seg_end), ptr))),
                    Skip::Invalid => return Ok(Some(self.finish(scan, ptr))),
                }
            }
            self.at = Some((ptr, scan));
        }
        let (mut ptr, mut scan) = self.at.clone().expect("set above");
        if self.done {
            return Ok(Some(scan));
        }
        let result = loop {
            // A record starts at a page boundary only after that page's header.
            if ptr >= seg_end {
                scan.valid_end = seg_end;
                break Ok(scan);
            }
            // The whole page the record starts on (its header is read from it).
            if !have((ptr / WAL_PAGE + 1) * WAL_PAGE) {
                break Err(scan);
            }
            let mut rec = ptr;
            if rec.is_multiple_of(WAL_PAGE) {
                match page_at(bytes, base, rec - base) {
                    Some(p) if p.info & XLP_FIRST_IS_CONTRECORD == 0 => rec += p.header,
                    _ => break Ok(scan),
                }
            }
            let o = (rec - base) as usize;
            let tot_len = u64::from(le_u32(bytes, o));
            if tot_len < RECORD_HEADER {
                break Ok(scan); // zeroes: the end of valid WAL
            }
            let page_left = WAL_PAGE - rec % WAL_PAGE;
            let (rmid, info) = if page_left >= RECORD_HEADER {
                (bytes[o + 17], bytes[o + 16])
            } else {
                (u8::MAX, 0) // a header split across pages is never a switch record's
            };
            let end = match skip_data(bytes, base, seg_end, rec, tot_len, &have) {
                Skip::End(end) => end,
                Skip::Invalid => break Ok(scan), // the rest of the record is not written yet
                Skip::NeedMore => break Err(scan),
            };
            scan.records += 1;
            visit(Record {
                start: rec,
                rmid,
                info,
                on_page: &bytes[o..o + page_left as usize],
            });
            if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
                scan.switched = true;
                scan.last_record_start = Some(rec);
                scan.last_record_end = Some(seg_end);
                scan.valid_end = seg_end;
                break Ok(scan);
            }
            if end > seg_end {
                break Ok(scan_full(scan, seg_end));
            }
            scan.last_record_start = Some(rec);
            ptr = maxalign(end);
            scan.last_record_end = Some(ptr);
            scan.valid_end = ptr;
        };
        // `Ok`: the walk is over; `Err`: it stopped where bytes are missing.
        match result {
            Ok(scan) => Ok(Some(self.finish(scan, ptr))),
            Err(scan) => {
                self.at = Some((ptr, scan));
                Ok(None)
            }
        }
    }

    fn finish(&mut self, scan: SegmentScan, ptr: u64) -> SegmentScan {
        self.at = Some((ptr, scan.clone()));
        self.done = true;
        scan
    }
}

/// A record runs past the segment's end: everything in the file is valid WAL.
fn scan_full(mut scan: SegmentScan, seg_end: u64) -> SegmentScan {
    scan.valid_end = seg_end;
    scan
}

/// Follow `len` bytes of record data starting at `ptr` (a record's start, or just after the
/// first page header for a continuation), crossing page headers: the position after the last
/// byte (past the segment's end `seg_end` when the record continues in the next segment), or
/// that a page it needs is not valid WAL yet, or not read yet (`have(page end)` is false).
fn skip_data(
    bytes: &[u8],
    base: u64,
    seg_end: u64,
    ptr: u64,
    len: u64,
    have: &impl Fn(u64) -> bool,
) -> Skip {
    let mut pos = ptr;
    let mut left = len;
    loop {
        let page_left = WAL_PAGE - pos % WAL_PAGE;
        if left <= page_left {
            return Skip::End(pos + left);
        }
        left -= page_left;
        pos += page_left; // the next page's start
        if pos >= seg_end {
            // Past the segment either way; saturating for the very last segment of the WAL.
            return Skip::End(seg_end.saturating_add(left));
        }
        if !have(pos + WAL_PAGE) {
            return Skip::NeedMore;
        }
        let Some(p) = page_at(bytes, base, pos - base) else {
            return Skip::Invalid;
        };
        if p.info & XLP_FIRST_IS_CONTRECORD == 0 || u64::from(p.rem_len) != left {
            return Skip::Invalid;
        }
        pos += p.header;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SEG: u64 = 1 << 20;

    #[test]
    fn lsn_parses_and_prints_the_postgresql_way() {
        assert_eq!(PgLsn::parse("0/3000028"), Some(PgLsn(0x300_0028)));
        assert_eq!(PgLsn::parse("1A/FF"), Some(PgLsn((0x1A << 32) | 0xFF)));
        assert_eq!(PgLsn(0x300_0028).to_string(), "0/3000028");
        for bad in ["", "0", "/1", "g/1", "123456789/0", "0/"] {
            assert_eq!(PgLsn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn segment_names_round_trip_for_every_kind_and_size() {
        for size in [SEG, 16 * SEG, 1 << 30] {
            for segno in [1, 255, 256, 4095, 4096, 70_000] {
                let f = WalFile::Segment { timeline: 3, segno };
                let name = f.name(size);
                assert_eq!(WalFile::parse(&name, size), Some(f), "{name}");
                let p = WalFile::Partial { timeline: 2, segno };
                assert_eq!(WalFile::parse(&p.name(size), size), Some(p));
            }
        }
        assert_eq!(
            segment_name(1, 0x10, 16 * SEG),
            "000000010000000000000010",
            "PostgreSQL's default 16 MiB segments"
        );
        // 1 MiB segments: 4096 per log id.
        assert_eq!(segment_name(1, 4096, SEG), "000000010000000100000000");
        assert_eq!(
            WalFile::parse("00000002.history", SEG),
            Some(WalFile::History { timeline: 2 })
        );
        assert_eq!(
            WalFile::parse("00000001000000000000000B.00000028.backup", SEG),
            Some(WalFile::BackupLabel {
                timeline: 1,
                segno: 11,
                offset: 0x28
            })
        );
        for bad in [
            "RECOVERYXLOG",
            "00000000.history",
            "000000010000000000001000",
            "00000001000000000000000",
            "000000010000000000000010.tmp",
        ] {
            assert_eq!(WalFile::parse(bad, SEG), None, "{bad}");
        }
    }

    /// Found by reading for the `pg_wal` fuzz target: a 24-byte name of multi-byte characters
    /// was sliced at byte 8, a segment size of 0 divided by zero, and ranges overflowed.
    #[test]
    fn odd_names_sizes_and_segment_numbers_are_refused_not_panicked_on() {
        assert_eq!(WalFile::parse("0000000é000000000000000", SEG), None);
        assert_eq!(WalFile::parse("00000001000000000000000é", SEG), None);
        let f = WalFile::Segment {
            timeline: 1,
            segno: 7,
        };
        for size in [0, 3, 1 << 40] {
            assert_eq!(WalFile::parse(&f.name(size), size), Some(f.clone()));
        }
        assert_eq!(checked_segment_range(u64::MAX, SEG), None);
        assert_eq!(segment_range(u64::MAX, SEG), (u64::MAX, u64::MAX));
        let last = u64::MAX / SEG - 1;
        assert_eq!(
            checked_segment_range(last, SEG),
            Some((last * SEG, last * SEG + SEG))
        );
        assert!(matches!(
            scan_segment(&[0u8; 3], 1, 3),
            Err(ScanError::BadSegment(_))
        ));
        assert!(matches!(
            scan_segment(&vec![0u8; SEG as usize], u64::MAX / SEG, SEG),
            Err(ScanError::BadSegment(_))
        ));
        assert_eq!(PgLsn::parse("+1/+2"), None);
    }

    #[test]
    fn segment_ranges_are_half_open_and_adjacent() {
        assert_eq!(segment_range(3, SEG), (3 * SEG, 4 * SEG));
        assert_eq!(segment_of(4 * SEG - 1, SEG), 3);
        assert_eq!(segment_of(4 * SEG, SEG), 4);
        assert!(valid_segment_size(SEG) && valid_segment_size(16 * SEG));
        assert!(!valid_segment_size(3 * SEG) && !valid_segment_size(SEG / 2));
    }

    /// Build a segment: long header, then records of the given total lengths (laid out across
    /// page headers the way PostgreSQL does), then zeroes.
    pub(crate) fn build(segno: u64, records: &[(u32, u8, u8)], first_cont: Option<u32>) -> Vec<u8> {
        let base = segno * SEG;
        let mut b = vec![0u8; SEG as usize];
        let header = |b: &mut Vec<u8>, off: u64, info: u16, rem: u32| {
            let o = off as usize;
            b[o..o + 2].copy_from_slice(&PAGE_MAGIC_PG15.to_le_bytes());
            b[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
            b[o + 4..o + 8].copy_from_slice(&1u32.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&(base + off).to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&rem.to_le_bytes());
        };
        let mut first_info = XLP_LONG_HEADER;
        if first_cont.is_some() {
            first_info |= XLP_FIRST_IS_CONTRECORD;
        }
        header(&mut b, 0, first_info, first_cont.unwrap_or(0));
        let mut pos = LONG_HEADER + maxalign(u64::from(first_cont.unwrap_or(0)));
        for &(len, rmid, info) in records {
            if pos.is_multiple_of(WAL_PAGE) {
                header(&mut b, pos, 0, 0);
                pos += SHORT_HEADER;
            }
            let o = pos as usize;
            b[o..o + 4].copy_from_slice(&len.to_le_bytes());
            b[o + 16] = info;
            b[o + 17] = rmid;
            let mut left = u64::from(len);
            let mut p = pos;
            loop {
                let page_left = WAL_PAGE - p % WAL_PAGE;
                if left <= page_left {
                    p += left;
                    break;
                }
                left -= page_left;
                p += page_left;
                if p >= SEG {
                    return b;
                }
                header(&mut b, p, XLP_FIRST_IS_CONTRECORD, left as u32);
                p += SHORT_HEADER;
            }
            pos = maxalign(p);
        }
        b
    }

    #[test]
    fn a_partly_written_segment_ends_where_its_last_whole_record_ends() {
        let b = build(5, &[(100, 10, 0), (30, 10, 0)], None);
        let s = scan_segment(&b, 5, SEG).unwrap();
        let end = 5 * SEG + LONG_HEADER + 104 + 32;
        assert_eq!(s.last_record_end, Some(end));
        assert_eq!(s.last_record_start, Some(5 * SEG + LONG_HEADER + 104));
        assert_eq!(s.valid_end, end);
        assert_eq!(s.records, 2);
        assert!(!s.switched);
    }

    #[test]
    fn records_cross_page_headers_and_a_switch_record_ends_the_segment() {
        let b = build(
            7,
            &[(20_000, 10, 0), (24, RM_XLOG_ID, XLOG_SWITCH)],
            Some(50),
        );
        let s = scan_segment(&b, 7, SEG).unwrap();
        assert!(s.switched);
        assert_eq!(s.last_record_end, Some(8 * SEG));
        assert_eq!(s.valid_end, 8 * SEG);
        assert_eq!(s.records, 2);
    }

    #[test]
    fn a_record_running_into_the_next_segment_leaves_the_last_end_before_it() {
        let mut recs = vec![(8000u32, 10u8, 0u8); 130];
        recs.push((60_000, 10, 0));
        let b = build(2, &recs, None);
        let s = scan_segment(&b, 2, SEG).unwrap();
        assert_eq!(s.records, 131, "the spanning record starts here too");
        assert_eq!(s.valid_end, 3 * SEG, "the file is full of valid WAL");
        let last = s.last_record_end.unwrap();
        assert!(last < 3 * SEG && last > 2 * SEG);
    }

    /// Every record a walk visits, and its scan.
    fn walk_in_chunks(b: &[u8], segno: u64, chunk: usize) -> (Vec<(u64, u8, u8)>, SegmentScan) {
        let mut seen = Vec::new();
        let mut visit = |r: Record<'_>| seen.push((r.start, r.rmid, r.info));
        let mut w = Walker::new(segno, SEG).unwrap();
        let mut avail = 0;
        let scan = loop {
            avail = (avail + chunk).min(b.len());
            // What is not read yet is not there: a walk that peeked would see zeroes.
            let mut partial = b[..avail].to_vec();
            partial.resize(b.len(), 0);
            if let Some(scan) = w.advance(&partial, avail, &mut visit).unwrap() {
                break scan;
            }
            assert!(avail < b.len(), "the whole segment always ends the walk");
        };
        // Done is done: nothing is visited again.
        assert_eq!(
            w.advance(b, b.len(), &mut |_| panic!("visited twice"))
                .unwrap(),
            Some(scan.clone())
        );
        (seen, scan)
    }

    #[test]
    fn a_walk_in_chunks_finds_what_one_walk_over_the_segment_finds() {
        let mut segments = vec![
            (5, build(5, &[(100, 10, 0), (30, 10, 0)], None)),
            (
                7,
                build(
                    7,
                    &[(20_000, 10, 0), (24, RM_XLOG_ID, XLOG_SWITCH)],
                    Some(50),
                ),
            ),
        ];
        let mut recs = vec![(8000u32, 10u8, 0u8); 130];
        recs.push((60_000, 10, 0));
        segments.push((2, build(2, &recs, None)));
        // Records of odd lengths, some spanning several pages; then the same with a page header
        // broken in the middle (WAL that is not valid from there on).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut odd = Vec::new();
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            odd.push(((24 + x % 30_000) as u32, (x >> 40) as u8 % 20, 0));
        }
        let whole = build(11, &odd, None);
        let mut broken = whole.clone();
        let at = (SEG / 2) as usize - (SEG / 2) as usize % WAL_PAGE as usize;
        broken[at] ^= 0xff;
        segments.push((11, whole));
        segments.push((11, broken));
        for (segno, b) in &segments {
            let mut one = Vec::new();
            let want =
                walk_segment(b, *segno, SEG, |r| one.push((r.start, r.rmid, r.info))).unwrap();
            for chunk in [4095usize, 8192, 10_000, 65_536, 300_001, SEG as usize] {
                let (seen, scan) = walk_in_chunks(b, *segno, chunk);
                assert_eq!(scan, want, "segment {segno}, chunks of {chunk}");
                assert_eq!(seen, one, "segment {segno}, chunks of {chunk}");
            }
        }
    }

    #[test]
    fn garbage_and_wrong_sizes_are_refused_not_misread() {
        assert!(matches!(
            scan_segment(&[0u8; 10], 1, SEG),
            Err(ScanError::WrongSize { .. })
        ));
        assert!(matches!(
            scan_segment(&vec![0u8; SEG as usize], 1, SEG),
            Err(ScanError::BadFirstPage(_))
        ));
        // A segment recycled from another position: its page address is wrong.
        let b = build(9, &[(100, 10, 0)], None);
        assert!(scan_segment(&b, 10, SEG).is_err());
    }

    #[test]
    fn commits_are_counted_from_a_position_with_their_times() {
        // An insert, a commit, an abort, a commit with an origin, a commit prepared.
        let recs = [
            (100, 10, 0),
            (40, RM_XACT_ID, XLOG_XACT_COMMIT),
            (40, RM_XACT_ID, 0x20),
            (48, RM_XACT_ID, XLOG_XACT_COMMIT | 0x80),
            (40, RM_XACT_ID, XLOG_XACT_COMMIT_PREPARED),
        ];
        let mut b = build(5, &recs, None);
        let starts: Vec<u64> = recs
            .iter()
            .scan(LONG_HEADER, |pos, r| {
                let at = *pos;
                *pos += maxalign(u64::from(r.0));
                Some(at)
            })
            .collect();
        // 2026-12-05T14:00:00Z is 849_794_400 s after PostgreSQL's epoch.
        let t0: i64 = 849_794_400_000_000;
        let put = |b: &mut Vec<u8>, rec: usize, header: &[u8], us: i64| {
            let o = starts[rec] as usize + RECORD_HEADER as usize;
            b[o..o + header.len()].copy_from_slice(header);
            let o = o + header.len();
            b[o..o + 8].copy_from_slice(&us.to_le_bytes());
        };
        put(&mut b, 1, &[XLR_BLOCK_ID_DATA_SHORT, 8], t0);
        put(&mut b, 2, &[XLR_BLOCK_ID_DATA_SHORT, 8], t0 + 1_000);
        put(
            &mut b,
            3,
            &[XLR_BLOCK_ID_ORIGIN, 1, 0, XLR_BLOCK_ID_DATA_SHORT, 8],
            t0 + 2_500,
        );
        put(&mut b, 4, &[XLR_BLOCK_ID_DATA_LONG, 8, 0, 0, 0], t0 + 7_000);
        let unix = PG_EPOCH_UNIX_MS + t0 / 1000;
        let (scan, all) = scan_commits(&b, 5, SEG, 0).unwrap();
        assert_eq!(scan, scan_segment(&b, 5, SEG).unwrap());
        assert_eq!(
            all,
            Commits {
                count: 3,
                first_ms: Some(unix),
                last_ms: Some(unix + 7),
                before_ms: None,
            }
        );
        let (_, later) = scan_commits(&b, 5, SEG, 5 * SEG + starts[2]).unwrap();
        assert_eq!(
            later,
            Commits {
                count: 2,
                first_ms: Some(unix + 2),
                last_ms: Some(unix + 7),
                before_ms: Some(unix),
            }
        );
        assert_eq!(
            lifeboat_core::utc::iso_ms(lifeboat_core::UtcMillis(unix)),
            "2026-12-05T14:00:00.000Z"
        );
        // A block reference where the main data should be: counted, without a time.
        put(&mut b, 1, &[0, 8], t0);
        let (_, c) = scan_commits(&b, 5, SEG, 0).unwrap();
        assert_eq!((c.count, c.first_ms), (3, Some(unix + 2)));
    }
}
