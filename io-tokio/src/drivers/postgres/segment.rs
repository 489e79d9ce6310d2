//! The artifact that carries one WAL segment: a small header, then the segment's bytes as
//! PostgreSQL wrote them.
//!
//! ```text
//! "LBPGWAL\n"            8 bytes, magic
//! header length          u32, little endian
//! header                 JSON: format_version first, the WAL file name, timeline, segment
//!                        number and size, the LSN range, the replay target, the payload's
//!                        size and xxh3-64, and the timeline's `.history` file(s)
//! payload                the segment file, byte for byte (always a whole segment)
//! ```
//!
//! The manifest beside the artifact checksums the whole file; the header checksums the payload
//! again so `wal-fetch` can refuse a damaged copy even where no manifest travels with it. The
//! seed-convention artifact name says nothing about timelines: the header does.

use super::wal::{checked_segment_range, valid_segment_size, PgLsn, WalFile};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The segment artifact format this build writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// The first bytes of every segment artifact.
pub const MAGIC: &[u8; 8] = b"LBPGWAL\n";
/// A header larger than this is garbage (history files are small).
const MAX_HEADER: usize = 1 << 20;

/// A timeline history file travelling with the segments of its timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryFile {
    /// `TTTTTTTT.history`.
    pub name: String,
    pub text: String,
}

/// What a segment artifact says about its segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHeader {
    pub format_version: u32,
    /// The segment's file name (`%f`), which `wal-fetch` serves it under.
    pub wal_file: String,
    pub timeline: u32,
    pub segno: u64,
    pub segment_size: u64,
    /// `segno * segment_size`.
    pub lsn_start: u64,
    /// The segment's end, or for a final segment cut at a fence, where its valid WAL ends.
    pub lsn_end: u64,
    /// Replay has consumed the segment once `pg_last_wal_replay_lsn()` reaches this: the end of
    /// the last record that ends inside it. `None` when one record spans the whole segment.
    pub replay_target: Option<u64>,
    /// Where the record ending at `replay_target` starts. PostgreSQL reads one record ahead of
    /// replay: once it asks for the next segment it has read and checked every record of this
    /// one, and replay stands at least here.
    pub replay_floor: Option<u64>,
    /// Cut at the end of valid WAL (the fenced primary's last, incomplete segment).
    pub final_segment: bool,
    pub payload_size: u64,
    /// xxh3-64 of the payload, 16 lowercase hex digits.
    pub payload_xxh3: String,
    /// The `.history` file of the segment's timeline (none on timeline 1).
    pub history: Vec<HistoryFile>,
}

/// Why bytes are not a segment artifact (or not a consistent one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentError(pub String);

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(sum: u64) -> String {
    format!("{sum:016x}")
}

impl SegmentHeader {
    /// Structural checks: a segment size PostgreSQL can have; the file name is the segment's
    /// (it becomes a path under the serve directory) and every history file's name is a
    /// `.history` name; the range is the segment's (or a prefix of it, for a final segment);
    /// the replay target and floor lie inside it.
    pub fn check(&self) -> Result<(), SegmentError> {
        let bad = |why: String| Err(SegmentError(format!("segment {}: {why}", self.wal_file)));
        if self.format_version != SEGMENT_FORMAT_VERSION {
            return bad(format!(
                "format version {} (this lifeboat reads {SEGMENT_FORMAT_VERSION})",
                self.format_version
            ));
        }
        if !valid_segment_size(self.segment_size) {
            return bad(format!(
                "segment size {} is not a PostgreSQL segment size (a power of two, 1 MiB to 1 GiB)",
                self.segment_size
            ));
        }
        // Multiplying the received segment number unchecked overflowed.
        let Some((start, end)) = checked_segment_range(self.segno, self.segment_size) else {
            return bad(format!(
                "segment number {} of {}-byte segments lies beyond the end of the WAL",
                self.segno, self.segment_size
            ));
        };
        // wal-fetch serves the payload under this name and the standby writes it to
        // `<serve dir>/<wal_file>...`: anything but the segment's own name (`../x`) is refused.
        let own = WalFile::Segment {
            timeline: self.timeline,
            segno: self.segno,
        };
        // A segment PostgreSQL can have (timeline 0 cannot), under exactly the name PostgreSQL
        // asks for (upper-case hex: a lower-case spelling parses but would never be fetched).
        // Found by fuzzing: the exact-name check alone passed timeline 0.
        if WalFile::parse(&self.wal_file, self.segment_size) != Some(own.clone())
            || self.wal_file != own.name(self.segment_size)
        {
            return bad(format!(
                "the file name is not that of segment {} on timeline {}",
                self.segno, self.timeline
            ));
        }
        if let Some(h) = self.history.iter().find(|h| {
            !matches!(
                WalFile::parse(&h.name, self.segment_size),
                Some(f @ WalFile::History { .. }) if f.name(self.segment_size) == h.name
            )
        }) {
            return bad(format!(
                "history file name {:?} is not a `TTTTTTTT.history` name",
                h.name
            ));
        }
        if self.lsn_start != start {
            return bad(format!(
                "starts at {}, segment {} starts at {}",
                PgLsn(self.lsn_start),
                self.segno,
                PgLsn(start)
            ));
        }
        if self.lsn_end <= self.lsn_start || self.lsn_end > end {
            return bad(format!(
                "ends at {}, outside {}..{}",
                PgLsn(self.lsn_end),
                PgLsn(start),
                PgLsn(end)
            ));
        }
        if !self.final_segment && self.lsn_end != end {
            return bad("a complete segment must end at the segment's end".into());
        }
        if let Some(t) = self.replay_target {
            if t <= self.lsn_start || t > self.lsn_end {
                return bad(format!("replay target {} outside its range", PgLsn(t)));
            }
        }
        // The floor is where the record ending at the target starts: inside the segment,
        // before the target, and only with a target.
        if let Some(f) = self.replay_floor {
            let target = self.replay_target.unwrap_or(self.lsn_start);
            if f < self.lsn_start || f >= target {
                return bad(format!(
                    "replay floor {} outside {}..{}",
                    PgLsn(f),
                    PgLsn(self.lsn_start),
                    PgLsn(target)
                ));
            }
        }
        if self.payload_size != self.segment_size {
            return bad(format!(
                "payload is {} bytes, a segment is {}",
                self.payload_size, self.segment_size
            ));
        }
        Ok(())
    }
}

/// Encode a segment artifact. The payload's checksum and size are filled in here.
pub fn encode(header: SegmentHeader, payload: &[u8]) -> Vec<u8> {
    let (_, mut out) = encode_prefix(header, payload);
    out.reserve_exact(payload.len());
    out.extend_from_slice(payload);
    out
}

/// What comes before `payload` in its segment artifact (magic, header length, header with the
/// payload's size and checksum), and the header as written: the artifact is this prefix
/// followed by the payload, which can then be written from where it already is.
pub fn encode_prefix(header: SegmentHeader, payload: &[u8]) -> (SegmentHeader, Vec<u8>) {
    let sum = xxhash_rust::xxh3::xxh3_64(payload);
    prefix(header, payload.len() as u64, sum, None).expect("a prefix without padding fits")
}

/// Room for the prefix of `header`'s artifact whatever its walk finds and its payload hashes
/// to, in whole `align`-byte blocks: a writer can put the payload at this offset before the
/// header is known, then write the header before it with [`encode_prefix_in`].
pub fn prefix_room(header: &SegmentHeader, align: usize) -> usize {
    let widest = SegmentHeader {
        lsn_end: u64::MAX,
        replay_target: Some(u64::MAX),
        replay_floor: Some(u64::MAX),
        final_segment: false,
        payload_size: u64::MAX,
        payload_xxh3: hex(u64::MAX),
        ..header.clone()
    };
    let json = serde_json::to_vec(&widest).expect("a segment header always encodes");
    (MAGIC.len() + 4 + json.len()).div_ceil(align) * align
}

/// The prefix of `header`'s artifact (its payload of `payload_size` bytes hashing to
/// `payload_xxh3` follows) in exactly `room` bytes: the header is padded with spaces, which a
/// JSON reader passes over. `None` when it does not fit.
pub fn encode_prefix_in(
    header: SegmentHeader,
    payload_size: u64,
    payload_xxh3: u64,
    room: usize,
) -> Option<(SegmentHeader, Vec<u8>)> {
    prefix(header, payload_size, payload_xxh3, Some(room))
}

/// Magic, header length and header (with the payload's size and checksum), padded to `room`
/// bytes when it is given (`None` when the header does not fit it), else as long as it is.
fn prefix(
    mut header: SegmentHeader,
    payload_size: u64,
    payload_xxh3: u64,
    room: Option<usize>,
) -> Option<(SegmentHeader, Vec<u8>)> {
    header.payload_size = payload_size;
    header.payload_xxh3 = hex(payload_xxh3);
    let json = serde_json::to_vec(&header).expect("a segment header always encodes");
    let len = match room {
        Some(room) => room.checked_sub(MAGIC.len() + 4)?,
        None => json.len(),
    };
    if json.len() > len || (room.is_some() && len > MAX_HEADER) {
        return None;
    }
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(MAGIC.len() + 4 + len, b' ');
    Some((header, out))
}

/// Decode a segment artifact and check its payload against the header's checksum.
pub fn decode(bytes: &[u8]) -> Result<(SegmentHeader, &[u8]), SegmentError> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SegmentError(
            "not a lifeboat WAL segment artifact (bad magic)".into(),
        ));
    }
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_HEADER || 12 + len > bytes.len() {
        return Err(SegmentError(format!(
            "header length {len} does not fit the {} byte file",
            bytes.len()
        )));
    }
    let header: SegmentHeader = serde_json::from_slice(&bytes[12..12 + len])
        .map_err(|e| SegmentError(format!("header is not valid: {e}")))?;
    header.check()?;
    let payload = &bytes[12 + len..];
    if payload.len() as u64 != header.payload_size {
        return Err(SegmentError(format!(
            "segment {}: payload is {} bytes, the header says {}",
            header.wal_file,
            payload.len(),
            header.payload_size
        )));
    }
    let sum = hex(xxhash_rust::xxh3::xxh3_64(payload));
    if sum != header.payload_xxh3 {
        return Err(SegmentError(format!(
            "segment {}: payload checksum {sum}, the header says {}",
            header.wal_file, header.payload_xxh3
        )));
    }
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader {
            format_version: SEGMENT_FORMAT_VERSION,
            wal_file: "000000020000000000000003".into(),
            timeline: 2,
            segno: 3,
            segment_size: 1 << 20,
            lsn_start: 3 << 20,
            lsn_end: 4 << 20,
            replay_target: Some((4 << 20) - 80),
            replay_floor: Some((4 << 20) - 160),
            final_segment: false,
            payload_size: 0,
            payload_xxh3: String::new(),
            history: vec![HistoryFile {
                name: "00000002.history".into(),
                text: "1\t0/3000A0\tno recovery target specified\n".into(),
            }],
        }
    }

    #[test]
    fn a_segment_artifact_round_trips_with_its_history() {
        let payload = vec![7u8; 1 << 20];
        let bytes = encode(header(), &payload);
        let (h, p) = decode(&bytes).unwrap();
        assert_eq!(p, &payload[..]);
        assert_eq!(h.history.len(), 1);
        assert_eq!(h.payload_size, 1 << 20);
    }

    #[test]
    fn a_prefix_padded_into_its_room_decodes_like_a_tight_one() {
        let payload = vec![7u8; 1 << 20];
        let room = prefix_room(&header(), 4096);
        assert_eq!(room % 4096, 0);
        let sum = xxhash_rust::xxh3::xxh3_64(&payload);
        // The widest values the walk and the hash can give still fit.
        let widest = SegmentHeader {
            lsn_end: u64::MAX,
            replay_target: Some(u64::MAX),
            replay_floor: Some(u64::MAX),
            ..header()
        };
        assert!(encode_prefix_in(widest, u64::MAX, u64::MAX, room).is_some());
        let (h, mut bytes) = encode_prefix_in(header(), payload.len() as u64, sum, room).unwrap();
        assert_eq!(bytes.len(), room);
        bytes.extend_from_slice(&payload);
        let (decoded, p) = decode(&bytes).unwrap();
        assert_eq!((decoded, p), (h, &payload[..]));
        assert_eq!(
            decode(&encode(header(), &payload)).unwrap().0,
            decode(&bytes).unwrap().0
        );
        // Too little room is refused, never cut.
        assert!(encode_prefix_in(header(), payload.len() as u64, sum, 100).is_none());
        assert!(encode_prefix_in(header(), payload.len() as u64, sum, 4).is_none());
    }

    #[test]
    fn one_flipped_payload_byte_is_refused() {
        let mut bytes = encode(header(), &vec![7u8; 1 << 20]);
        let n = bytes.len();
        bytes[n - 100] ^= 1;
        let e = decode(&bytes).unwrap_err();
        assert!(e.0.contains("checksum"), "{e}");
    }

    /// Found by reading for the `pg_wal` fuzz target: `check` multiplied the received segment
    /// number unchecked (overflow), accepted any segment size, and accepted any `wal_file` and
    /// history names, which the standby joins to its serve directory (`../../x`).
    #[test]
    fn overflowing_sizes_and_names_that_are_paths_are_refused() {
        let mut h = header();
        h.segno = u64::MAX;
        assert!(h.check().unwrap_err().0.contains("beyond the end"));
        let mut h = header();
        h.segment_size = 3;
        assert!(h.check().unwrap_err().0.contains("segment size"));
        let mut h = header();
        h.wal_file = "../../../etc/cron.d/x".into();
        assert!(h.check().unwrap_err().0.contains("file name"));
        let mut h = header();
        h.wal_file = "000000010000000000000003".into(); // timeline 1, the header says 2
        assert!(h.check().is_err());
        let mut h = header();
        h.history[0].name = "/etc/passwd".into();
        assert!(h.check().unwrap_err().0.contains("history"));
        let mut h = header();
        h.replay_floor = h.replay_target;
        assert!(h.check().unwrap_err().0.contains("floor"));
        let mut h = header();
        h.payload_size = h.segment_size; // encode fills it in
        h.check().unwrap();
    }

    #[test]
    fn inconsistent_headers_are_refused() {
        let mut h = header();
        h.lsn_end = (4 << 20) - 8;
        assert!(decode(&encode(h.clone(), &vec![0u8; 1 << 20])).is_err());
        h.final_segment = true;
        h.replay_target = Some(h.lsn_end);
        assert!(decode(&encode(h, &vec![0u8; 1 << 20])).is_ok());
        assert!(decode(b"LBPGWAL\n\xff\xff\xff\x7f").is_err());
        assert!(decode(b"not a segment").is_err());
    }
}
