//! Fuzz body for the PostgreSQL parsers: WAL segment artifacts (`pg::segment`: magic, JSON
//! header, payload checksum, `SegmentHeader::check`), the structural walk of a WAL segment
//! (`pg::wal::scan_segment`), archive file names (`WalFile::parse`) and LSN texts
//! (`PgLsn::parse`).
//!
//! Checked:
//! - nothing panics or overflows (the harness builds with debug assertions) on any bytes,
//!   header values, segment numbers or names (multi-byte characters included);
//! - an artifact that decodes has a header that passes `check`, a payload of the header's size
//!   and checksum, and re-encodes to an artifact that decodes to the same header and payload;
//! - a header that passes `check` has a PostgreSQL segment size, the segment's own file name,
//!   `.history` names only, and its range, replay target and floor inside the segment;
//! - a scan that succeeds reports positions inside the segment, in order;
//! - counting commits (`scan_commits`) scans the same way and counts no more commits than
//!   records; a walk in chunks (`Walker`, as `wal-push` walks while it reads) ends the same way;
//! - `WalFile::parse(f.name(size), size) == f`, and a name that parses is the name of what it
//!   parsed to (up to the case of the hex digits);
//! - `PgLsn` prints to a text that parses back to it, and a text that parses prints to a text
//!   that parses to the same position;
//! - segment ranges: the checked one is exact or `None`, the saturating one agrees with it.

use crate::bytes::Bytes;
use lifeboat_io_tokio::drivers::postgres::segment::{
    self, HistoryFile, SegmentHeader, SEGMENT_FORMAT_VERSION,
};
use lifeboat_io_tokio::drivers::postgres::wal::{
    checked_segment_range, scan_commits, scan_segment, segment_range, valid_segment_size, PgLsn,
    ScanError, WalFile, Walker, MIN_SEGMENT, PAGE_MAGIC_PG15, WAL_PAGE,
};

/// The segment size of the structured inputs: the smallest PostgreSQL allows, so a whole
/// segment costs 1 MiB per case.
const SEG: u64 = MIN_SEGMENT;
const LONG_HEADER: u64 = 40;
const SHORT_HEADER: u64 = 24;

/// The first byte picks what the rest is:
/// - `0`: a segment artifact as is;
/// - `1`: a segment header with fields from the bytes (mostly consistent, sometimes huge or
///   spliced), checked, and when it passes encoded around a generated segment and decoded;
/// - `2`: a WAL segment generated from the bytes (page headers, records across pages, switch
///   records, damage), scanned at a segment number and size from the bytes;
/// - `3`: archive file names: the bytes as text, then a well-formed name with bytes spliced in;
/// - else: LSN texts, the same way.
pub fn pg_wal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut r = Bytes::new(rest);
    match mode % 5 {
        0 => check_artifact(rest),
        1 => structured_artifact(&mut r),
        2 => {
            let segno = pick_segno(&mut r);
            let size = pick_size(&mut r);
            let wal = build_segment(&mut r, segno, SEG);
            check_scan(&wal, segno, size);
        }
        3 => check_names(&mut r, rest),
        _ => check_lsns(&mut r, rest),
    }
}

fn pick_segno(r: &mut Bytes<'_>) -> u64 {
    match r.below(6) {
        0 => r.u64(),
        1 => u64::MAX - u64::from(r.u8()),
        2 => (u64::MAX / SEG) - u64::from(r.u8() % 4),
        _ => u64::from(r.u16()),
    }
}

fn pick_size(r: &mut Bytes<'_>) -> u64 {
    match r.below(8) {
        0 => r.u64(),
        1 => 0,
        2 => 1 << r.below(64),
        _ => SEG,
    }
}

fn check_artifact(bytes: &[u8]) {
    match segment::decode(bytes) {
        Err(e) => assert!(!e.to_string().is_empty(), "an empty reason"),
        Ok((header, payload)) => {
            assert_eq!(header.check(), Ok(()), "a decoded header fails its check");
            assert_eq!(payload.len() as u64, header.payload_size);
            check_passing_header(&header);
            let again = segment::encode(header.clone(), payload);
            let (h2, p2) = segment::decode(&again)
                .unwrap_or_else(|e| panic!("a re-encoded artifact does not decode: {e}"));
            assert_eq!(h2, header, "artifact round trip changed the header");
            assert!(p2 == payload, "artifact round trip changed the payload");
        }
    }
}

/// What `check` promises about a header it passes.
fn check_passing_header(h: &SegmentHeader) {
    assert!(valid_segment_size(h.segment_size), "{h:?}");
    let (start, end) = checked_segment_range(h.segno, h.segment_size)
        .unwrap_or_else(|| panic!("a segment beyond the WAL passed: {h:?}"));
    assert_eq!(h.lsn_start, start);
    assert!(start < h.lsn_end && h.lsn_end <= end, "{h:?}");
    assert_eq!(
        WalFile::parse(&h.wal_file, h.segment_size),
        Some(WalFile::Segment {
            timeline: h.timeline,
            segno: h.segno
        }),
        "the file name is not the segment's"
    );
    for hist in &h.history {
        assert!(
            matches!(
                WalFile::parse(&hist.name, h.segment_size),
                Some(WalFile::History { .. })
            ),
            "history name {:?} passed",
            hist.name
        );
    }
    if let Some(t) = h.replay_target {
        assert!(start < t && t <= h.lsn_end, "{h:?}");
    }
    if let Some(f) = h.replay_floor {
        assert!(
            h.replay_target.is_some_and(|t| start <= f && f < t),
            "{h:?}"
        );
    }
}

/// Splice a few bytes (any, so multi-byte characters too) into a text.
fn splice(r: &mut Bytes<'_>, text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for _ in 0..r.below(4) {
        let at = r.below(bytes.len() + 1);
        match r.below(4) {
            0 => bytes.insert(at, r.u8()),
            1 => {
                // A multi-byte character, a separator, a dot.
                for (i, c) in "é/.".bytes().take(1 + r.below(4)).enumerate() {
                    bytes.insert(at + i, c);
                }
            }
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ if at < bytes.len() => bytes[at] = r.u8(),
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn structured_artifact(r: &mut Bytes<'_>) {
    let timeline = match r.below(4) {
        0 => r.u32(),
        _ => 1 + r.below(3) as u32,
    };
    let segno = pick_segno(r);
    let segment_size = pick_size(r);
    let (start, end) = segment_range(segno, segment_size);
    let final_segment = r.bool();
    let lsn_end = match r.below(4) {
        0 => r.u64(),
        1 if final_segment => start.saturating_add(LONG_HEADER + u64::from(r.u16())),
        _ => end,
    };
    let replay_target = match r.below(4) {
        0 => None,
        1 => Some(r.u64()),
        _ => Some(lsn_end.saturating_sub(u64::from(r.u8()))),
    };
    let replay_floor = match r.below(4) {
        0 => None,
        1 => Some(r.u64()),
        _ => replay_target.map(|t| t.saturating_sub(1 + u64::from(r.u8()))),
    };
    let mut wal_file = WalFile::Segment { timeline, segno }.name(segment_size);
    if r.chance(32) {
        wal_file = splice(r, &wal_file);
    }
    let mut history = Vec::new();
    for _ in 0..r.below(3) {
        let mut name = WalFile::History {
            timeline: timeline.max(1),
        }
        .name(segment_size);
        if r.chance(32) {
            name = splice(r, &name);
        }
        history.push(HistoryFile {
            name,
            text: String::from_utf8_lossy(r.slice(40)).into_owned(),
        });
    }
    let header = SegmentHeader {
        format_version: if r.chance(8) {
            r.u32()
        } else {
            SEGMENT_FORMAT_VERSION
        },
        wal_file,
        timeline,
        segno,
        segment_size,
        lsn_start: if r.chance(8) { r.u64() } else { start },
        lsn_end,
        replay_target,
        replay_floor,
        final_segment,
        payload_size: segment_size,
        payload_xxh3: String::new(),
        history,
    };
    match header.check() {
        Err(e) => assert!(!e.to_string().is_empty(), "an empty reason"),
        Ok(()) => {
            check_passing_header(&header);
            if segment_size != SEG {
                return; // a valid larger segment: not worth the memory per case
            }
            let payload = build_segment(r, segno, segment_size);
            let mut bytes = segment::encode(header.clone(), &payload);
            if r.chance(16) {
                let at = r.below(bytes.len());
                bytes[at] ^= 1 << r.below(8);
                check_artifact(&bytes);
                return;
            }
            let (h, p) = segment::decode(&bytes)
                .unwrap_or_else(|e| panic!("an encoded valid header does not decode: {e}"));
            assert!(p == &payload[..], "the payload changed");
            assert_eq!(h.wal_file, header.wal_file);
            check_scan(p, h.segno, h.segment_size);
        }
    }
}

/// A WAL segment as PostgreSQL 15 lays it out: a long page header, then records of lengths
/// from the bytes, continued across pages behind short headers, then zeroes; now and then a
/// switch record, a wrong page address or a flipped byte.
fn build_segment(r: &mut Bytes<'_>, segno: u64, size: u64) -> Vec<u8> {
    let base = segno.wrapping_mul(size);
    let mut b = vec![0u8; size as usize];
    let header = |b: &mut Vec<u8>, off: u64, info: u16, rem: u32| {
        let o = off as usize;
        b[o..o + 2].copy_from_slice(&PAGE_MAGIC_PG15.to_le_bytes());
        b[o + 2..o + 4].copy_from_slice(&info.to_le_bytes());
        b[o + 4..o + 8].copy_from_slice(&1u32.to_le_bytes());
        b[o + 8..o + 16].copy_from_slice(&base.wrapping_add(off).to_le_bytes());
        b[o + 16..o + 20].copy_from_slice(&rem.to_le_bytes());
    };
    let first_cont = r.chance(64).then(|| u32::from(r.u16()));
    let mut info = 0x0002; // XLP_LONG_HEADER
    if first_cont.is_some() {
        info |= 0x0001; // XLP_FIRST_IS_CONTRECORD
    }
    header(&mut b, 0, info, first_cont.unwrap_or(0));
    let mut pos = LONG_HEADER + u64::from(first_cont.unwrap_or(0)).next_multiple_of(8);
    'records: for _ in 0..r.below(24) {
        if pos >= size {
            break;
        }
        if pos.is_multiple_of(WAL_PAGE) {
            header(&mut b, pos, 0, 0);
            pos += SHORT_HEADER;
        }
        let len = match r.below(8) {
            0 => r.u32(),
            1 => u32::from(r.u16()) * 4,
            2 => 24,
            _ => 24 + u32::from(r.u8()),
        };
        let o = pos as usize;
        if o + 24 > b.len() {
            break;
        }
        b[o..o + 4].copy_from_slice(&len.to_le_bytes());
        let switch = r.chance(8);
        b[o + 16] = if switch { 0x40 } else { 0 };
        b[o + 17] = if switch { 0 } else { 10 };
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
            if p >= size {
                break 'records;
            }
            header(&mut b, p, 0x0001, left as u32);
            p += SHORT_HEADER;
        }
        pos = p.next_multiple_of(8);
    }
    for _ in 0..r.below(3) {
        // Damage inside the first pages, where the records are.
        let at = r.below(4 * WAL_PAGE as usize);
        b[at] ^= 1 << r.below(8);
    }
    b
}

fn check_scan(bytes: &[u8], segno: u64, size: u64) {
    // Counting commits walks the same records: the same scan, and a count no larger than the
    // records that start in the segment.
    let base = checked_segment_range(segno, size).map_or(0, |(b, _)| b);
    let from = base + (bytes.len() as u64 / 3);
    match (
        scan_segment(bytes, segno, size),
        scan_commits(bytes, segno, size, from),
    ) {
        (Ok(a), Ok((b, c))) => {
            assert_eq!(a, b, "the commit walk scanned differently");
            assert!(c.count <= a.records, "{c:?} of {a:?}");
            assert!(c.first_ms.is_some() || c.last_ms.is_none(), "{c:?}");
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("scan {a:?} but commit walk {b:?}"),
    }
    // A walk in chunks, as `wal-push` walks a segment while it reads it, ends the same way.
    if bytes.len() as u64 == size {
        if let Ok(mut w) = Walker::new(segno, size) {
            let chunk = 3000 + (segno % 7) as usize * WAL_PAGE as usize;
            let mut avail = 0;
            let chunked = loop {
                avail = (avail + chunk).min(bytes.len());
                match w.advance(bytes, avail, &mut |_| {}) {
                    Ok(None) => assert!(avail < bytes.len(), "the whole segment ends the walk"),
                    Ok(Some(scan)) => break Ok(scan),
                    Err(e) => break Err(e),
                }
            };
            assert_eq!(
                chunked,
                scan_segment(bytes, segno, size),
                "the chunked walk differs"
            );
        }
    }
    match scan_segment(bytes, segno, size) {
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an empty reason");
            if let Some((_, _)) = checked_segment_range(segno, size) {
                if valid_segment_size(size) && bytes.len() as u64 == size {
                    assert!(
                        matches!(e, ScanError::BadFirstPage(_)),
                        "a scannable segment refused: {e}"
                    );
                }
            }
        }
        Ok(scan) => {
            let (base, end) = checked_segment_range(segno, size)
                .unwrap_or_else(|| panic!("segment {segno} of {size} bytes scanned"));
            assert!(
                base < scan.valid_end && scan.valid_end <= end,
                "valid end {} outside {base}..={end}",
                scan.valid_end
            );
            if let Some(e) = scan.last_record_end {
                assert!(base < e && e <= end && e <= scan.valid_end, "{scan:?}");
                if let Some(s) = scan.last_record_start {
                    assert!(base <= s && s < e, "{scan:?}");
                }
            } else {
                assert!(scan.last_record_start.is_none(), "{scan:?}");
            }
            if scan.switched {
                assert_eq!(scan.valid_end, end, "a switch record ends the segment");
            }
        }
    }
}

fn check_name(name: &str, size: u64) {
    if let Some(f) = WalFile::parse(name, size) {
        let again = f.name(size);
        assert!(
            again.eq_ignore_ascii_case(name),
            "{name:?} parsed to {f:?}, which is named {again:?}"
        );
        assert_eq!(WalFile::parse(&again, size), Some(f), "{again:?}");
    }
}

fn check_names(r: &mut Bytes<'_>, rest: &[u8]) {
    let sizes = [SEG, 16 * SEG, 1 << 30, pick_size(r)];
    let raw = String::from_utf8_lossy(rest);
    for size in sizes {
        check_name(&raw, size);
    }
    let size = sizes[r.below(sizes.len())];
    let timeline = match r.below(4) {
        0 => r.u32(),
        _ => 1 + u32::from(r.u8()),
    };
    let segno = pick_segno(r);
    let file = match r.below(4) {
        0 => WalFile::Segment { timeline, segno },
        1 => WalFile::History { timeline },
        2 => WalFile::Partial { timeline, segno },
        _ => WalFile::BackupLabel {
            timeline,
            segno,
            offset: r.u32(),
        },
    };
    let name = file.name(size);
    // A name round-trips when it is a name at all: timeline 0 is none, and a segment number
    // whose high part needs more than eight hex digits does not fit the format.
    let per = (0x1_0000_0000 / size.max(1)).max(1);
    let representable = timeline > 0
        && match file {
            WalFile::History { .. } => true,
            _ => segno / per <= u64::from(u32::MAX),
        };
    if representable {
        assert_eq!(
            WalFile::parse(&name, size),
            Some(file),
            "{name:?} does not parse back"
        );
    }
    check_name(&name, size);
    check_name(&splice(r, &name), size);
}

fn check_lsn(text: &str) {
    if let Some(l) = PgLsn::parse(text) {
        let printed = l.to_string();
        assert_eq!(
            PgLsn::parse(&printed),
            Some(l),
            "{text:?} -> {printed:?} does not parse back"
        );
    }
}

fn check_lsns(r: &mut Bytes<'_>, rest: &[u8]) {
    check_lsn(&String::from_utf8_lossy(rest));
    let l = PgLsn(match r.below(3) {
        0 => r.u64(),
        1 => u64::MAX - u64::from(r.u8()),
        _ => u64::from(r.u32()),
    });
    let text = l.to_string();
    assert_eq!(PgLsn::parse(&text), Some(l), "{text:?}");
    check_lsn(&splice(r, &text));
    // Segment arithmetic on values from the bytes.
    let (segno, size) = (r.u64(), pick_size(r));
    match checked_segment_range(segno, size) {
        Some((s, e)) => {
            assert_eq!(u128::from(s), u128::from(segno) * u128::from(size));
            assert_eq!(u128::from(e) - u128::from(s), u128::from(size));
            assert_eq!(segment_range(segno, size), (s, e));
        }
        None => assert!(
            u128::from(segno) * u128::from(size) + u128::from(size) > u128::from(u64::MAX),
            "a representable range refused"
        ),
    }
}
