//! The journal codec: an append-only log of engine *inputs* (event sourcing) and the snapshots
//! that bound its replay. Pure code over bytes: the adapter writes them to files, the simulator
//! to its simulated disk; neither format knows about paths, clocks or fsync.
//!
//! # Formats
//!
//! Every integer is little-endian; every checksum is CRC-32 (IEEE, `crc32fast`).
//!
//! ```text
//! journal  = header record*
//! header   = magic "LBJRNL\0\0" (8) | version u16 | base_seq u64
//!            | crc u32 over the 18 bytes before it
//! record   = len u32 | crc u32 over seq+payload | seq u64 | payload (len bytes)
//! snapshot = magic "LBSNAP\0\0" (8) | version u16 | next_seq u64 | len u64
//!            | crc u32 over every other byte of the snapshot | payload (len bytes)
//! ```
//!
//! Magic and version are the same first 10 bytes in every format version, so a reader can tell
//! which version it holds before it parses anything else. `base_seq` is the sequence number of
//! the journal's first record, so a journal can start where a snapshot's `next_seq` left off;
//! sequence numbers are consecutive, and `u64::MAX` is never one. Payloads are bincode with
//! fixed-width little-endian integers (what `bincode::serialize` writes), trailing bytes
//! rejected. Bincode is not self-describing: a change to the serde shape of the journaled type
//! that old bytes cannot decode needs a new format version.
//!
//! # Recovery
//!
//! A crash can tear the last appends. [`decode`] returns every record up to the first one that
//! is incomplete, fails its checksum, is out of sequence or claims an absurd length, and reports
//! where that happened ([`Tail::Torn`]); the adapter truncates the file to
//! [`Decoded::valid_len`] before appending again. That is safe because the adapter fsyncs a
//! record before it executes the commands the input caused: a record that did not survive had
//! no effect on the world. A record whose checksum *matches* but whose payload does not decode
//! is not a torn write; it is an error ([`JournalError::UndecodableRecord`]), because truncating
//! it would destroy an intact input (most likely written by another lifeboat version).
//!
//! A torn append can only be the end of the file. Damage followed anywhere by an intact record
//! (a flipped byte, a length field set to a huge value, in the middle of the journal) is
//! corruption of records that were already acknowledged, and truncating there would silently
//! drop every later record: [`decode`] returns [`JournalError::CorruptRecord`], naming the byte
//! offset, the record and the intact record that follows, and the operator chooses.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;

/// The first 8 bytes of every journal file.
pub const JOURNAL_MAGIC: [u8; 8] = *b"LBJRNL\0\0";
/// The first 8 bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"LBSNAP\0\0";
/// The journal format this build writes and reads.
pub const JOURNAL_FORMAT_VERSION: u16 = 1;
/// The snapshot format this build writes and reads. Version 5: the site state holds the
/// point-in-time archive's index (what is archived, what waits to be). Version 4: each database remembers its
/// drill chain, drills and prunes carry the core's choice, and a primary collects finished logs
/// on a named timer (bincode is not self-describing: `#[serde(default)]` alone does not let a
/// version 3 snapshot load). Version 3: each write position remembers
/// the position the latest heartbeat carried (heartbeat positions are acknowledged). Version 2:
/// the engine state's layout for the cache (dense write positions, compact monitor records of
/// the last backup, copy and restore); earlier versions were written by earlier builds.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 5;
/// Bytes in a journal header: magic, version, base_seq, crc.
pub const JOURNAL_HEADER_LEN: usize = 8 + 2 + 8 + 4;
/// Bytes in front of each record's payload: len, crc, seq.
pub const RECORD_HEADER_LEN: usize = 4 + 4 + 8;
/// Bytes in a snapshot header: magic, version, next_seq, len, crc.
pub const SNAPSHOT_HEADER_LEN: usize = 8 + 2 + 8 + 8 + 4;
/// The largest record payload, in bytes. An engine input is a few hundred bytes; the bound
/// exists so a corrupted length reads as a torn tail instead of a 4 GiB allocation.
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// The largest snapshot payload, in bytes. Engine state is metadata (chains, alerts, leases),
/// never artifact bytes; a state this large means something is leaking into it.
pub const MAX_SNAPSHOT_LEN: u64 = 1 << 30;

/// Magic plus version: the part of a header that every format version shares.
const PREAMBLE_LEN: usize = 8 + 2;

/// The payload encoding, spelled out so it never changes under us with a bincode default.
fn payload_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Which persisted format an error is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    Journal,
    Snapshot,
}

impl FileKind {
    fn magic(self) -> [u8; 8] {
        match self {
            FileKind::Journal => JOURNAL_MAGIC,
            FileKind::Snapshot => SNAPSHOT_MAGIC,
        }
    }
    fn version(self) -> u16 {
        match self {
            FileKind::Journal => JOURNAL_FORMAT_VERSION,
            FileKind::Snapshot => SNAPSHOT_FORMAT_VERSION,
        }
    }
    fn header_len(self) -> usize {
        match self {
            FileKind::Journal => JOURNAL_HEADER_LEN,
            FileKind::Snapshot => SNAPSHOT_HEADER_LEN,
        }
    }
    fn other(self) -> FileKind {
        match self {
            FileKind::Journal => FileKind::Snapshot,
            FileKind::Snapshot => FileKind::Journal,
        }
    }
    /// What an operator does when this file is unusable.
    fn remedy(self) -> &'static str {
        match self {
            FileKind::Journal => "move the journal aside and restart from the latest snapshot",
            // Only one snapshot is kept and the journal holds only the records after it, so
            // there is no earlier state on disk to fall back to.
            FileKind::Snapshot => {
                "restore the snapshot and the journal beside it from a copy, or move both aside \
                 and restart with no state: a site then has to be rebuilt from its peer \
                 (`lifeboat reseed`)"
            }
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Journal => "journal",
            FileKind::Snapshot => "snapshot",
        })
    }
}

/// Why a journal or snapshot cannot be written or read. Torn journal tails are not errors (see
/// [`Tail`]); these are the cases where carrying on would lose or invent state. The adapter adds
/// the file's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalError {
    /// The file does not start with the magic of its kind (`found` holds up to 8 bytes).
    BadMagic { kind: FileKind, found: Vec<u8> },
    /// The file ends inside its header.
    TruncatedHeader {
        kind: FileKind,
        found: usize,
        needed: usize,
    },
    /// The header names a format version this build does not read.
    UnsupportedVersion {
        kind: FileKind,
        found: u16,
        supported: u16,
    },
    /// The journal header's checksum does not match: its base sequence cannot be trusted.
    HeaderChecksumMismatch { stored: u32, computed: u32 },
    /// A record is intact (checksum and sequence match) but its payload does not decode.
    UndecodableRecord {
        seq: u64,
        offset: usize,
        detail: String,
    },
    /// The snapshot's declared payload length differs from the bytes that follow its header.
    SnapshotLengthMismatch { declared: u64, actual: u64 },
    /// The snapshot's checksum does not match.
    SnapshotChecksumMismatch { stored: u32, computed: u32 },
    /// The snapshot is intact but its payload does not decode.
    UndecodableSnapshot { detail: String },
    /// The value's `Serialize` implementation failed; nothing was written.
    Encode { kind: FileKind, detail: String },
    /// A record payload would exceed [`MAX_RECORD_LEN`]; nothing was written.
    RecordTooLarge { seq: u64, len: usize, max: usize },
    /// A snapshot payload would exceed [`MAX_SNAPSHOT_LEN`]; nothing was written.
    SnapshotTooLarge { len: u64, max: u64 },
    /// A record was asked to carry sequence `u64::MAX`, which no record may have.
    SequenceExhausted,
    /// Record `seq` at byte `offset` is damaged, but an intact record (`intact_seq`, at byte
    /// `intact_at`) follows it: corruption, not a torn tail (which can only be the end).
    CorruptRecord {
        seq: u64,
        offset: usize,
        reason: TornReason,
        intact_at: usize,
        intact_seq: u64,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::BadMagic { kind, found } => {
                let hint = if found[..] == kind.other().magic()[..] {
                    format!(" (that is a lifeboat {})", kind.other())
                } else {
                    String::new()
                };
                write!(
                    f,
                    "not a lifeboat {kind}: it starts with b\"{}\"{hint} where a {kind} starts \
                     with b\"{}\"; check that the path points at a {kind} file",
                    found.escape_ascii(),
                    kind.magic().escape_ascii(),
                )
            }
            JournalError::TruncatedHeader {
                kind: FileKind::Journal,
                found,
                needed,
            } => write!(
                f,
                "the journal is {found} bytes, shorter than its {needed}-byte header: it was cut \
                 off while being created and holds no records; {}",
                FileKind::Journal.remedy()
            ),
            JournalError::TruncatedHeader {
                kind: FileKind::Snapshot,
                found,
                needed,
            } => write!(
                f,
                "the snapshot is {found} bytes, shorter than its {needed}-byte header: it is \
                 damaged; {}",
                FileKind::Snapshot.remedy()
            ),
            JournalError::UnsupportedVersion {
                kind,
                found,
                supported,
            } => write!(
                f,
                "{kind} format version {found} is not supported by this build, which reads \
                 version {supported}: run the lifeboat release that wrote it; if no release \
                 writes version {found}, the header is damaged: {}",
                kind.remedy()
            ),
            JournalError::HeaderChecksumMismatch { stored, computed } => write!(
                f,
                "the journal header is damaged (checksum {stored:08x} stored, {computed:08x} \
                 computed), so its base sequence and every record after it cannot be trusted; {}",
                FileKind::Journal.remedy()
            ),
            JournalError::UndecodableRecord {
                seq,
                offset,
                detail,
            } => write!(
                f,
                "journal record {seq} at byte {offset} is intact (its checksum matches) but this \
                 build cannot decode it ({detail}); it was most likely written by another \
                 lifeboat version: run that version to replay it. The journal was left as it is: \
                 this is not a torn write, and truncating it would lose inputs"
            ),
            JournalError::SnapshotLengthMismatch { declared, actual } => write!(
                f,
                "the snapshot declares {declared} bytes of state but {actual} follow its header: \
                 it was truncated or appended to after it was written; {}",
                FileKind::Snapshot.remedy()
            ),
            JournalError::SnapshotChecksumMismatch { stored, computed } => write!(
                f,
                "the snapshot is damaged (checksum {stored:08x} stored, {computed:08x} \
                 computed); {}",
                FileKind::Snapshot.remedy()
            ),
            JournalError::UndecodableSnapshot { detail } => write!(
                f,
                "the snapshot is intact (its checksum matches) but this build cannot decode it \
                 ({detail}); it was most likely written by another lifeboat version: run that \
                 version, or {}",
                FileKind::Snapshot.remedy()
            ),
            JournalError::Encode { kind, detail } => write!(
                f,
                "could not encode a {kind} entry ({detail}); nothing was written. The value's \
                 Serialize implementation failed, which is a bug: report it"
            ),
            JournalError::RecordTooLarge { seq, len, max } => write!(
                f,
                "journal record {seq} would carry {len} bytes, more than the {max}-byte limit; \
                 nothing was written. An engine input this large is a bug: report it"
            ),
            JournalError::SnapshotTooLarge { len, max } => write!(
                f,
                "the snapshot state is {len} bytes, more than the {max}-byte limit; nothing was \
                 written and the previous snapshot still stands. State this large means something \
                 leaks into it: report it"
            ),
            JournalError::CorruptRecord {
                seq,
                offset,
                reason,
                intact_at,
                intact_seq,
            } => write!(
                f,
                "journal record {seq} at byte {offset} is damaged ({reason}), but an intact \
                 record ({intact_seq}) follows at byte {intact_at}: this is corruption of \
                 acknowledged records, not a torn tail, and the journal was left as it is. \
                 Choose one: restore the journal from a copy and restart; or accept losing \
                 record {seq} and every record after it by cutting the file to {offset} bytes \
                 (`truncate -s {offset} <journal>`) and restarting, then check the recovery \
                 site with `lifeboat status`; or move the data directory aside and rebuild this \
                 site from its peer (`lifeboat reseed`)"
            ),
            JournalError::SequenceExhausted => write!(
                f,
                "the journal sequence reached u64::MAX, which no record may carry; this cannot \
                 happen by counting inputs, so the sequence was corrupted: report it"
            ),
        }
    }
}

impl std::error::Error for JournalError {}

/// How a decoded journal ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// The last record ends exactly at the end of the bytes.
    Clean,
    /// The bytes from `offset` on are not a valid record (a torn append, zeroed or stale blocks);
    /// `offset` equals [`Decoded::valid_len`], where the adapter truncates.
    Torn { offset: usize, reason: TornReason },
}

/// What is wrong with the first bytes that are not a valid record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TornReason {
    /// Fewer than [`RECORD_HEADER_LEN`] bytes remain.
    IncompleteRecordHeader { available: usize },
    /// The length field exceeds [`MAX_RECORD_LEN`].
    LengthTooLarge { len: u32 },
    /// The payload is cut short.
    IncompletePayload { len: u32, available: usize },
    /// The checksum over sequence and payload does not match.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// An intact record with the wrong sequence: a gap, a repeat, or stale bytes from an
    /// earlier journal.
    UnexpectedSequence { expected: u64, found: u64 },
}

impl fmt::Display for TornReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TornReason::IncompleteRecordHeader { available } => write!(
                f,
                "only {available} of a record's {RECORD_HEADER_LEN} header bytes are present"
            ),
            TornReason::LengthTooLarge { len } => write!(
                f,
                "the record claims {len} bytes, more than the {MAX_RECORD_LEN}-byte limit"
            ),
            TornReason::IncompletePayload { len, available } => write!(
                f,
                "only {available} of the record's {len} payload bytes are present"
            ),
            TornReason::ChecksumMismatch { stored, computed } => write!(
                f,
                "the record's checksum does not match ({stored:08x} stored, {computed:08x} \
                 computed)"
            ),
            TornReason::UnexpectedSequence { expected, found } => write!(
                f,
                "the record has sequence {found} where {expected} was expected"
            ),
        }
    }
}

/// A decoded journal: the records that are intact and in sequence, and how the bytes end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<T> {
    /// The sequence number of the journal's first record (from its header).
    pub base_seq: u64,
    /// `(seq, value)` in order; the sequences are `base_seq`, `base_seq + 1`, ...
    pub records: Vec<(u64, T)>,
    /// Bytes that hold the header and `records`: where to truncate before appending.
    pub valid_len: usize,
    /// Whether anything follows the last intact record.
    pub tail: Tail,
}

impl<T> Decoded<T> {
    /// The sequence number the next appended record must carry.
    pub fn next_seq(&self) -> u64 {
        // Cannot overflow: every accepted record's sequence is below u64::MAX.
        self.base_seq + self.records.len() as u64
    }
}

/// The header that starts a journal whose first record will carry `base_seq`. Write it (to a
/// temporary file, fsynced and renamed) before any record, so a journal never exists without it.
pub fn encode_header(base_seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(JOURNAL_HEADER_LEN);
    out.extend_from_slice(&JOURNAL_MAGIC);
    out.extend_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&base_seq.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Append one record carrying `value` as sequence `seq` to `out`. On error `out` is unchanged.
pub fn encode_record<T: Serialize>(
    seq: u64,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), JournalError> {
    if seq == u64::MAX {
        return Err(JournalError::SequenceExhausted);
    }
    let start = out.len();
    // Serialize in place behind a placeholder header, so a record costs no extra allocation.
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    if let Err(e) = payload_options().serialize_into(&mut *out, value) {
        out.truncate(start);
        return Err(JournalError::Encode {
            kind: FileKind::Journal,
            detail: e.to_string(),
        });
    }
    let len = out.len() - start - RECORD_HEADER_LEN;
    if len > MAX_RECORD_LEN {
        out.truncate(start);
        return Err(JournalError::RecordTooLarge {
            seq,
            len,
            max: MAX_RECORD_LEN,
        });
    }
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 8..]);
    // `len <= MAX_RECORD_LEN`, so it fits in a u32.
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Decode a whole journal. A damaged header is an error; a damaged tail is reported in
/// [`Decoded::tail`] with everything before it returned. Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<Decoded<T>, JournalError> {
    check_preamble(bytes, FileKind::Journal)?;
    let stored = u32_at(bytes, 18);
    let computed = crc32fast::hash(&bytes[..18]);
    if stored != computed {
        return Err(JournalError::HeaderChecksumMismatch { stored, computed });
    }
    let base_seq = u64_at(bytes, 10);
    let mut records = Vec::new();
    let mut offset = JOURNAL_HEADER_LEN;
    let mut expected = base_seq;
    let tail = loop {
        match frame_at(&bytes[offset..], expected) {
            Ok(None) => break Tail::Clean,
            Err(reason) => {
                if let Some((intact_at, intact_seq)) = intact_after(bytes, offset, expected) {
                    return Err(JournalError::CorruptRecord {
                        seq: expected,
                        offset,
                        reason,
                        intact_at,
                        intact_seq,
                    });
                }
                break Tail::Torn { offset, reason };
            }
            Ok(Some(frame)) => {
                let value = payload_options()
                    .with_limit(frame.payload.len() as u64)
                    .deserialize(frame.payload)
                    .map_err(|e| JournalError::UndecodableRecord {
                        seq: frame.seq,
                        offset,
                        detail: e.to_string(),
                    })?;
                records.push((frame.seq, value));
                offset += frame.len;
                expected = frame.seq + 1;
            }
        }
    };
    Ok(Decoded {
        base_seq,
        records,
        valid_len: offset,
        tail,
    })
}

/// After damage at `offset`, where record `expected` should start: the first intact record
/// further on (its offset and sequence), if any. A record's sequence is checked for
/// plausibility before its checksum, so damaged or random bytes cost one pass and a rare CRC.
fn intact_after(bytes: &[u8], offset: usize, expected: u64) -> Option<(usize, u64)> {
    // No later record can carry a sequence beyond what the remaining bytes could number.
    let most = ((bytes.len() - offset) / RECORD_HEADER_LEN) as u64 + 1;
    let last = bytes.len().checked_sub(RECORD_HEADER_LEN)?;
    (offset + 1..=last).find_map(|o| {
        let rest = &bytes[o..];
        let seq = u64_at(rest, 8);
        if seq < expected || seq - expected > most {
            return None;
        }
        match frame_at(rest, seq) {
            Ok(Some(f)) => Some((o, f.seq)),
            _ => None,
        }
    })
}

/// One intact, in-sequence record in the journal bytes.
struct Frame<'a> {
    seq: u64,
    payload: &'a [u8],
    /// Bytes the whole record occupies.
    len: usize,
}

/// The record at the start of `rest`, `None` at the end of the bytes, or why the bytes there
/// are not a record. Checks go from cheapest to the ones that need the whole record, and the
/// sequence only once the checksum vouches for it.
fn frame_at(rest: &[u8], expected_seq: u64) -> Result<Option<Frame<'_>>, TornReason> {
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < RECORD_HEADER_LEN {
        return Err(TornReason::IncompleteRecordHeader {
            available: rest.len(),
        });
    }
    let len = u32_at(rest, 0);
    if len as usize > MAX_RECORD_LEN {
        return Err(TornReason::LengthTooLarge { len });
    }
    let end = RECORD_HEADER_LEN + len as usize;
    if rest.len() < end {
        return Err(TornReason::IncompletePayload {
            len,
            available: rest.len() - RECORD_HEADER_LEN,
        });
    }
    let stored = u32_at(rest, 4);
    let computed = crc32fast::hash(&rest[8..end]);
    if stored != computed {
        return Err(TornReason::ChecksumMismatch { stored, computed });
    }
    let seq = u64_at(rest, 8);
    // u64::MAX is never written, so `seq + 1` below cannot overflow.
    if seq != expected_seq || seq == u64::MAX {
        return Err(TornReason::UnexpectedSequence {
            expected: expected_seq,
            found: seq,
        });
    }
    Ok(Some(Frame {
        seq,
        payload: &rest[RECORD_HEADER_LEN..end],
        len: end,
    }))
}

/// Appends records to a journal, numbering them consecutively. I/O free: it encodes into the
/// caller's buffer, which the adapter writes and fsyncs before executing the input's commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalWriter {
    next_seq: u64,
}

impl JournalWriter {
    /// A writer for a new journal that starts at `base_seq` (write [`encode_header`] first).
    pub fn new(base_seq: u64) -> Self {
        JournalWriter { next_seq: base_seq }
    }

    /// A writer that continues a decoded journal, after the adapter truncated it to
    /// [`Decoded::valid_len`].
    pub fn resume<T>(decoded: &Decoded<T>) -> Self {
        JournalWriter {
            next_seq: decoded.next_seq(),
        }
    }

    /// The sequence number the next record will carry (a snapshot taken now records it).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Encode `value` as the next record into `out` and return its sequence number. On error
    /// neither `out` nor the sequence changes.
    pub fn append<T: Serialize>(
        &mut self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<u64, JournalError> {
        let seq = self.next_seq;
        encode_record(seq, value, out)?;
        self.next_seq = seq + 1;
        Ok(seq)
    }
}

/// Encode a snapshot of `state`, taken when the journal's next record would carry `next_seq`
/// (replay continues from the journal whose `base_seq` is `next_seq`).
pub fn encode_snapshot<S: Serialize>(state: &S, next_seq: u64) -> Result<Vec<u8>, JournalError> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + 256);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(&[0; 8 + 4]); // len and crc, filled in below
    payload_options()
        .serialize_into(&mut out, state)
        .map_err(|e| JournalError::Encode {
            kind: FileKind::Snapshot,
            detail: e.to_string(),
        })?;
    let len = (out.len() - SNAPSHOT_HEADER_LEN) as u64;
    if len > MAX_SNAPSHOT_LEN {
        return Err(JournalError::SnapshotTooLarge {
            len,
            max: MAX_SNAPSHOT_LEN,
        });
    }
    out[18..26].copy_from_slice(&len.to_le_bytes());
    let crc = snapshot_crc(&out);
    out[26..30].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decode a snapshot into its state and the `next_seq` replay continues from. Any damage is an
/// error, never a misread state.
pub fn decode_snapshot<S: DeserializeOwned>(bytes: &[u8]) -> Result<(S, u64), JournalError> {
    check_preamble(bytes, FileKind::Snapshot)?;
    let declared = u64_at(bytes, 18);
    let actual = (bytes.len() - SNAPSHOT_HEADER_LEN) as u64;
    // The payload is bounded by the bytes present, never by the declared length, so a damaged
    // length cannot cause a large allocation.
    if declared != actual {
        return Err(JournalError::SnapshotLengthMismatch { declared, actual });
    }
    let stored = u32_at(bytes, 26);
    let computed = snapshot_crc(bytes);
    if stored != computed {
        return Err(JournalError::SnapshotChecksumMismatch { stored, computed });
    }
    let state = payload_options()
        .with_limit(actual)
        .deserialize(&bytes[SNAPSHOT_HEADER_LEN..])
        .map_err(|e| JournalError::UndecodableSnapshot {
            detail: e.to_string(),
        })?;
    Ok((state, u64_at(bytes, 10)))
}

/// The snapshot checksum: every byte except the checksum field itself.
fn snapshot_crc(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..26]);
    hasher.update(&bytes[SNAPSHOT_HEADER_LEN..]);
    hasher.finalize()
}

/// Check magic and version, then that the whole header is present. The order matters: a file
/// of another kind says so, and a future version (whose header may differ) is named as such
/// instead of being parsed with this version's layout.
fn check_preamble(bytes: &[u8], kind: FileKind) -> Result<(), JournalError> {
    let magic = kind.magic();
    let n = bytes.len().min(magic.len());
    if bytes[..n] != magic[..n] {
        return Err(JournalError::BadMagic {
            kind,
            found: bytes[..n].to_vec(),
        });
    }
    let truncated = || JournalError::TruncatedHeader {
        kind,
        found: bytes.len(),
        needed: kind.header_len(),
    };
    if bytes.len() < PREAMBLE_LEN {
        return Err(truncated());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != kind.version() {
        return Err(JournalError::UnsupportedVersion {
            kind,
            found: version,
            supported: kind.version(),
        });
    }
    if bytes.len() < kind.header_len() {
        return Err(truncated());
    }
    Ok(())
}

// Little-endian reads at offsets the caller has already bounds-checked.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    /// A stand-in for the engine's input type, with the shapes that matter to bincode.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    enum Event {
        Tick,
        Note(String),
        Blob(Vec<u8>),
        Pair { a: u64, b: i32 },
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A journal and a snapshot written by an earlier build must decode in this one. These
    /// bytes change if bincode's encoding changes (an upgrade: see the note on bincode in the
    /// workspace's Cargo.toml) or an engine input's shape does (a reordered variant): either
    /// needs a new format version read beside the old one, not a silent change.
    #[test]
    fn the_bytes_of_a_journal_record_and_a_snapshot_are_pinned() {
        use crate::artifact::ArtifactKey;
        use crate::ids::{Checksum, DbId, Epoch, Lsn, OpId, SiteId};
        use crate::protocol::{Failure, Input};
        let mut out = encode_header(7);
        let inputs = [
            Input::Completed {
                op: OpId(5),
                result: Err(Failure {
                    code: 3013,
                    message: "x".into(),
                    permanent: true,
                }),
            },
            Input::Tick,
        ];
        for (i, input) in inputs.iter().enumerate() {
            encode_record(7 + i as u64, input, &mut out).unwrap();
        }
        assert_eq!(hex(&out), "4c424a524e4c00000100070000000000000067c2d5fc1e0000008ccbbbfb070000000000000006000000050000000000000001000000c50b0000010000000000000078010400000091b0d97d080000000000000000000000");
        let key = ArtifactKey {
            db: DbId(1),
            epoch: Epoch(2),
            lsn_start: Lsn(3),
            lsn_end: Lsn(4),
            kind: crate::artifact::ArtifactKind::Log,
        };
        let snap = encode_snapshot(&(key, Checksum(9), SiteId(1)), 11).unwrap();
        assert_eq!(hex(&snap), "4c42534e4150000005000b000000000000002a000000000000001960a2c2010000000200000000000000030000000000000004000000000000000200000009000000000000000100");
    }

    fn sample_events() -> Vec<Event> {
        vec![
            Event::Note("full backup of orders taken".into()),
            Event::Tick,
            Event::Blob(vec![0, 1, 2, 255]),
            Event::Pair { a: u64::MAX, b: -7 },
            Event::Note(String::new()),
            Event::Blob(Vec::new()),
            Event::Note("ünïcode ✓".into()),
        ]
    }

    /// A journal of `events` from `base_seq`, and the offset where each record starts plus the
    /// end of the bytes (the record boundaries).
    fn journal(base_seq: u64, events: &[Event]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = encode_header(base_seq);
        let mut writer = JournalWriter::new(base_seq);
        let mut boundaries = vec![bytes.len()];
        for e in events {
            writer.append(e, &mut bytes).unwrap();
            boundaries.push(bytes.len());
        }
        (bytes, boundaries)
    }

    fn numbered(base_seq: u64, events: &[Event]) -> Vec<(u64, Event)> {
        (base_seq..).zip(events.iter().cloned()).collect()
    }

    /// The one acceptable outcome of decoding a journal whose first damaged record is number
    /// `k`: when it is the last record, the records before it and a torn tail exactly where it
    /// starts; otherwise corruption naming it and the intact record after it.
    fn assert_damaged_at(bytes: &[u8], base: u64, events: &[Event], bounds: &[usize], k: usize) {
        if k + 1 == events.len() {
            let d = decode::<Event>(bytes).unwrap();
            assert_eq!(d.records, numbered(base, &events[..k]));
            assert_eq!(d.valid_len, bounds[k]);
            assert!(
                matches!(d.tail, Tail::Torn { offset, .. } if offset == bounds[k]),
                "{:?}",
                d.tail
            );
            return;
        }
        match decode::<Event>(bytes) {
            Err(JournalError::CorruptRecord {
                seq,
                offset,
                intact_at,
                intact_seq,
                ..
            }) => {
                assert_eq!((seq, offset), (base + k as u64, bounds[k]));
                assert_eq!(
                    (intact_seq, intact_at),
                    (base + k as u64 + 1, bounds[k + 1])
                );
            }
            other => panic!("record {k} of {} damaged: {other:?}", events.len()),
        }
    }

    #[test]
    fn round_trip_returns_every_record_with_consecutive_sequences() {
        let events: Vec<Event> = (0..200)
            .map(|i| match i % 4 {
                0 => Event::Tick,
                1 => Event::Note(format!("log {i}")),
                2 => Event::Blob(vec![i as u8; i]),
                _ => Event::Pair {
                    a: i as u64,
                    b: -(i as i32),
                },
            })
            .collect();
        let (bytes, _) = journal(0, &events);
        let d = decode::<Event>(&bytes).unwrap();
        assert_eq!(d.base_seq, 0);
        assert_eq!(d.records, numbered(0, &events));
        assert_eq!(d.valid_len, bytes.len());
        assert_eq!(d.tail, Tail::Clean);
        assert_eq!(d.next_seq(), 200);
    }

    #[test]
    fn empty_journal_is_clean_with_no_records() {
        let bytes = encode_header(0);
        assert_eq!(bytes.len(), JOURNAL_HEADER_LEN);
        let d = decode::<Event>(&bytes).unwrap();
        assert!(d.records.is_empty());
        assert_eq!(
            (d.valid_len, d.tail, d.next_seq()),
            (JOURNAL_HEADER_LEN, Tail::Clean, 0)
        );
    }

    #[test]
    fn journal_after_a_snapshot_starts_at_the_snapshot_next_seq() {
        let snapshot = encode_snapshot(&vec!["state".to_string()], 1_000).unwrap();
        let (_, next_seq) = decode_snapshot::<Vec<String>>(&snapshot).unwrap();
        let (bytes, _) = journal(next_seq, &sample_events());
        let d = decode::<Event>(&bytes).unwrap();
        assert_eq!(d.base_seq, 1_000);
        assert_eq!(d.records, numbered(1_000, &sample_events()));
        assert_eq!(d.next_seq(), 1_000 + sample_events().len() as u64);
    }

    #[test]
    fn format_layout_is_pinned() {
        // A change here changes what is on disk: bump the format version with it.
        let mut bytes = encode_header(7);
        encode_record(7, &Event::Tick, &mut bytes).unwrap();
        let mut expected = b"LBJRNL\0\0\x01\0\x07\0\0\0\0\0\0\0".to_vec();
        expected.extend_from_slice(&crc32fast::hash(&expected).to_le_bytes());
        let seq_and_payload = [7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        expected.extend_from_slice(&4u32.to_le_bytes());
        expected.extend_from_slice(&crc32fast::hash(&seq_and_payload).to_le_bytes());
        expected.extend_from_slice(&seq_and_payload);
        assert_eq!(bytes, expected);
        assert_eq!(
            bytes[JOURNAL_HEADER_LEN + RECORD_HEADER_LEN..],
            bincode::serialize(&Event::Tick).unwrap()[..],
            "payloads are plain bincode::serialize output"
        );
    }

    #[test]
    fn every_truncation_is_torn_or_clean_exactly_at_record_boundaries() {
        let events = sample_events();
        let (bytes, bounds) = journal(3, &events);
        for cut in 0..=bytes.len() {
            let result = decode::<Event>(&bytes[..cut]);
            if cut < JOURNAL_HEADER_LEN {
                let truncated = matches!(result, Err(JournalError::TruncatedHeader { found, .. })
                    if found == cut);
                assert!(truncated, "cut {cut}: {result:?}");
                continue;
            }
            let d = result.unwrap();
            let k = bounds.iter().rposition(|&b| b <= cut).unwrap();
            assert_eq!(d.records, numbered(3, &events[..k]), "cut {cut}");
            assert_eq!(d.valid_len, bounds[k], "cut {cut}");
            if cut == bounds[k] {
                assert_eq!(d.tail, Tail::Clean, "cut {cut}");
            } else {
                let cut_short = matches!(
                    d.tail,
                    Tail::Torn {
                        offset,
                        reason: TornReason::IncompleteRecordHeader { .. }
                            | TornReason::IncompletePayload { .. },
                    } if offset == bounds[k]
                );
                assert!(cut_short, "cut {cut}: {:?}", d.tail);
            }
        }
    }

    #[test]
    fn a_bit_flip_in_the_last_record_tears_it_and_in_an_earlier_one_is_corruption() {
        let events = sample_events();
        let (bytes, bounds) = journal(0, &events);
        for bit in JOURNAL_HEADER_LEN * 8..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let k = bounds.iter().rposition(|&b| b <= bit / 8).unwrap();
            assert_damaged_at(&damaged, 0, &events, &bounds, k);
        }
    }

    #[test]
    fn every_single_bit_flip_in_the_header_is_an_error_naming_the_field() {
        let bytes = encode_header(42);
        for bit in 0..JOURNAL_HEADER_LEN * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let err = decode::<Event>(&damaged).unwrap_err();
            match bit / 8 {
                0..=7 => assert!(matches!(err, JournalError::BadMagic { .. }), "{err:?}"),
                8..=9 => assert!(
                    matches!(err, JournalError::UnsupportedVersion { .. }),
                    "{err:?}"
                ),
                _ => assert!(
                    matches!(err, JournalError::HeaderChecksumMismatch { .. }),
                    "{err:?}"
                ),
            }
        }
    }

    #[test]
    fn wrong_magic_is_refused_and_a_snapshot_is_named_as_one() {
        let err = decode::<Event>(b"PGDMP\0\0\0 something else entirely").unwrap_err();
        assert_eq!(
            err,
            JournalError::BadMagic {
                kind: FileKind::Journal,
                found: b"PGDMP\0\0\0".to_vec()
            }
        );
        assert!(err.to_string().contains("not a lifeboat journal"), "{err}");

        let snapshot = encode_snapshot(&1u8, 0).unwrap();
        let err = decode::<Event>(&snapshot).unwrap_err();
        assert!(
            err.to_string().contains("that is a lifeboat snapshot"),
            "{err}"
        );
        let err = decode_snapshot::<u8>(&encode_header(0)).unwrap_err();
        assert!(
            err.to_string().contains("that is a lifeboat journal"),
            "{err}"
        );
    }

    #[test]
    fn unknown_version_is_refused_even_when_its_header_is_shorter() {
        let mut bytes = encode_header(0);
        bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
        let expected = JournalError::UnsupportedVersion {
            kind: FileKind::Journal,
            found: 2,
            supported: 1,
        };
        assert_eq!(decode::<Event>(&bytes).unwrap_err(), expected);
        assert_eq!(
            decode::<Event>(&bytes[..PREAMBLE_LEN]).unwrap_err(),
            expected
        );
        assert!(expected
            .to_string()
            .contains("run the lifeboat release that wrote it"));
    }

    #[test]
    fn header_checksum_mismatch_is_refused() {
        let mut bytes = encode_header(5);
        bytes[10] ^= 0x04; // base_seq 5 -> 1: the records after it would be renumbered
        let err = decode::<Event>(&bytes).unwrap_err();
        assert!(
            matches!(err, JournalError::HeaderChecksumMismatch { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("restart from the latest snapshot"),
            "{err}"
        );
    }

    #[test]
    fn sequence_gap_and_repeat_are_torn_tails() {
        for wrong in [3, 1, 0, u64::MAX - 1] {
            let mut bytes = encode_header(0);
            encode_record(0, &Event::Tick, &mut bytes).unwrap();
            encode_record(1, &Event::Tick, &mut bytes).unwrap();
            let valid = bytes.len();
            encode_record(wrong, &Event::Note("stale".into()), &mut bytes).unwrap();
            let d = decode::<Event>(&bytes).unwrap();
            assert_eq!(d.records.len(), 2);
            assert_eq!(d.valid_len, valid);
            assert_eq!(
                d.tail,
                Tail::Torn {
                    offset: valid,
                    reason: TornReason::UnexpectedSequence {
                        expected: 2,
                        found: wrong
                    }
                }
            );
        }
    }

    #[test]
    fn absurd_length_is_a_torn_tail_not_an_allocation() {
        let mut bytes = encode_header(0);
        let valid = bytes.len();
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&[0; 12]);
        let d = decode::<Event>(&bytes).unwrap();
        assert_eq!(
            d.tail,
            Tail::Torn {
                offset: valid,
                reason: TornReason::LengthTooLarge { len: u32::MAX }
            }
        );
    }

    /// The audit's case: a record length set to a huge value in the middle of the journal
    /// used to drop every later record as a "torn tail".
    #[test]
    fn a_huge_length_mid_journal_is_corruption_naming_the_offset_the_record_and_the_choices() {
        let events = sample_events();
        let (mut bytes, bounds) = journal(40, &events);
        bytes[bounds[2]..bounds[2] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode::<Event>(&bytes).unwrap_err();
        assert_eq!(
            err,
            JournalError::CorruptRecord {
                seq: 42,
                offset: bounds[2],
                reason: TornReason::LengthTooLarge { len: u32::MAX },
                intact_at: bounds[3],
                intact_seq: 43,
            }
        );
        let text = err.to_string();
        for needle in [
            "record 42",
            &format!("byte {}", bounds[2]),
            "not a torn tail",
            &format!("truncate -s {}", bounds[2]),
            "lifeboat reseed",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from: {text}");
        }
    }

    #[test]
    fn zero_filled_tail_after_a_crash_is_torn() {
        let (mut bytes, bounds) = journal(0, &sample_events());
        bytes.extend_from_slice(&[0; 4096]);
        let d = decode::<Event>(&bytes).unwrap();
        assert_eq!(d.records.len(), sample_events().len());
        assert_eq!(d.valid_len, *bounds.last().unwrap());
        assert!(matches!(
            d.tail,
            Tail::Torn {
                reason: TornReason::ChecksumMismatch { .. },
                ..
            }
        ));
    }

    #[test]
    fn intact_record_that_does_not_decode_is_an_error_not_a_truncation() {
        let mut bytes = encode_header(0);
        encode_record(0, &Event::Tick, &mut bytes).unwrap();
        let offset = bytes.len();
        encode_record(1, &99u32, &mut bytes).unwrap(); // an enum variant this build lacks
        let err = decode::<Event>(&bytes).unwrap_err();
        assert!(
            matches!(err, JournalError::UndecodableRecord { seq: 1, offset: o, .. } if o == offset),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("another lifeboat version"),
            "{err}"
        );

        // Trailing bytes inside an intact payload are not silently ignored either.
        let mut bytes = encode_header(0);
        encode_record(0, &(Event::Tick, 0u8), &mut bytes).unwrap();
        assert!(matches!(
            decode::<Event>(&bytes),
            Err(JournalError::UndecodableRecord { .. })
        ));
    }

    /// A value whose `Serialize` fails, to prove failed appends leave no trace.
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }

    #[test]
    fn failed_append_leaves_the_buffer_and_the_sequence_unchanged() {
        let mut writer = JournalWriter::new(10);
        let mut out = encode_header(10);
        writer.append(&Event::Tick, &mut out).unwrap();
        let before = out.clone();
        let err = writer.append(&Unserializable, &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::Encode {
                    kind: FileKind::Journal,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!((out, writer.next_seq()), (before, 11));
    }

    #[test]
    fn record_larger_than_the_maximum_is_refused_at_encode() {
        let big = Event::Blob(vec![0; MAX_RECORD_LEN]);
        let mut out = vec![1, 2, 3];
        let err = encode_record(0, &big, &mut out).unwrap_err();
        assert!(
            matches!(err, JournalError::RecordTooLarge { seq: 0, .. }),
            "{err:?}"
        );
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn sequence_u64_max_is_never_written() {
        let mut writer = JournalWriter::new(u64::MAX);
        let mut out = Vec::new();
        assert_eq!(
            writer.append(&Event::Tick, &mut out),
            Err(JournalError::SequenceExhausted)
        );
        assert!(out.is_empty());
    }

    #[test]
    fn writer_resumes_a_decoded_journal_where_it_ended() {
        let (bytes, bounds) = journal(5, &sample_events());
        let torn = &bytes[..bounds[3] + 2];
        let d = decode::<Event>(torn).unwrap();
        let mut repaired = torn[..d.valid_len].to_vec();
        let mut writer = JournalWriter::resume(&d);
        assert_eq!(writer.append(&Event::Tick, &mut repaired).unwrap(), 8);
        let d = decode::<Event>(&repaired).unwrap();
        assert_eq!(d.tail, Tail::Clean);
        assert_eq!(d.records.last(), Some(&(8, Event::Tick)));
    }

    #[test]
    fn snapshot_round_trip_keeps_the_state_and_next_seq() {
        let state = (sample_events(), "orders".to_string(), 17u64);
        let bytes = encode_snapshot(&state, 12_345).unwrap();
        assert_eq!(&bytes[..8], b"LBSNAP\0\0");
        assert_eq!(decode_snapshot(&bytes).unwrap(), (state, 12_345));
    }

    #[test]
    fn every_snapshot_truncation_and_bit_flip_is_an_error() {
        let bytes = encode_snapshot(&sample_events(), 9).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode_snapshot::<Vec<Event>>(&bytes[..cut]).is_err(),
                "cut {cut}"
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_snapshot::<Vec<Event>>(&damaged).is_err(),
                "bit {bit}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_snapshot::<Vec<Event>>(&longer).unwrap_err(),
            JournalError::SnapshotLengthMismatch {
                declared: (bytes.len() - SNAPSHOT_HEADER_LEN) as u64,
                actual: (longer.len() - SNAPSHOT_HEADER_LEN) as u64,
            }
        );
    }

    #[test]
    fn intact_snapshot_of_another_type_is_undecodable_not_misread() {
        let bytes = encode_snapshot(&"a string".to_string(), 0).unwrap();
        let err = decode_snapshot::<Vec<Event>>(&bytes).unwrap_err();
        assert!(
            matches!(err, JournalError::UndecodableSnapshot { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn error_messages_say_what_is_wrong_and_what_to_do() {
        let errors = [
            decode::<Event>(&encode_header(0)[..5]).unwrap_err(),
            decode_snapshot::<u8>(b"LBSNAP").unwrap_err(),
            JournalError::SnapshotChecksumMismatch {
                stored: 1,
                computed: 2,
            },
        ];
        assert!(
            errors[0]
                .to_string()
                .contains("cut off while being created"),
            "{}",
            errors[0]
        );
        assert!(
            errors[1].to_string().contains("lifeboat reseed")
                && !errors[1].to_string().contains("previous snapshot"),
            "{}",
            errors[1]
        );
        assert!(
            errors[2]
                .to_string()
                .contains("restore the snapshot and the journal"),
            "{}",
            errors[2]
        );
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Tick),
            ".{0,40}".prop_map(Event::Note),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Event::Blob),
            (any::<u64>(), any::<i32>()).prop_map(|(a, b)| Event::Pair { a, b }),
        ]
    }

    fn arb_journal() -> impl Strategy<Value = (u64, Vec<Event>)> {
        (
            0..u64::MAX / 2,
            proptest::collection::vec(arb_event(), 0..24),
        )
    }

    proptest! {
        #[test]
        fn random_journals_round_trip((base, events) in arb_journal()) {
            let (bytes, _) = journal(base, &events);
            let d = decode::<Event>(&bytes).unwrap();
            prop_assert_eq!(d.records, numbered(base, &events));
            prop_assert_eq!(d.tail, Tail::Clean);
        }

        #[test]
        fn random_truncation_returns_exactly_the_complete_records(
            (base, events) in arb_journal(), cut in any::<prop::sample::Index>()
        ) {
            let (bytes, bounds) = journal(base, &events);
            let cut = JOURNAL_HEADER_LEN + cut.index(bytes.len() - JOURNAL_HEADER_LEN + 1);
            let d = decode::<Event>(&bytes[..cut]).unwrap();
            let k = bounds.iter().rposition(|&b| b <= cut).unwrap();
            prop_assert_eq!(d.records, numbered(base, &events[..k]));
            prop_assert_eq!(d.valid_len, bounds[k]);
            prop_assert_eq!(d.tail == Tail::Clean, cut == bounds[k]);
        }

        #[test]
        fn random_bit_flip_is_detected_and_never_misread(
            (base, events) in arb_journal(), at in any::<prop::sample::Index>(), bit in 0..8u8
        ) {
            let (mut bytes, bounds) = journal(base, &events);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            if at < JOURNAL_HEADER_LEN {
                prop_assert!(decode::<Event>(&bytes).is_err());
            } else {
                let k = bounds.iter().rposition(|&b| b <= at).unwrap();
                assert_damaged_at(&bytes, base, &events, &bounds, k);
            }
        }

        #[test]
        fn arbitrary_bytes_after_a_header_never_panic_or_invent_sequences(
            base in any::<u64>(), garbage in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            let mut bytes = encode_header(base);
            bytes.extend_from_slice(&garbage);
            if let Ok(d) = decode::<Event>(&bytes) {
                prop_assert!(d.valid_len <= bytes.len());
                for (i, (seq, _)) in d.records.iter().enumerate() {
                    prop_assert_eq!(*seq, base + i as u64);
                }
            }
        }

        #[test]
        fn random_snapshot_damage_is_always_an_error(
            events in proptest::collection::vec(arb_event(), 0..24),
            next_seq in any::<u64>(),
            at in any::<prop::sample::Index>(),
            bit in 0..8u8,
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode_snapshot(&events, next_seq).unwrap();
            prop_assert_eq!(decode_snapshot::<Vec<Event>>(&bytes).unwrap(), (events, next_seq));
            let mut flipped = bytes.clone();
            flipped[at.index(bytes.len())] ^= 1 << bit;
            prop_assert!(decode_snapshot::<Vec<Event>>(&flipped).is_err());
            prop_assert!(decode_snapshot::<Vec<Event>>(&bytes[..cut.index(bytes.len())]).is_err());
        }
    }
}
