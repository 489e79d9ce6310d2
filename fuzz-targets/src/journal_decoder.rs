//! Fuzz body for the journal and snapshot codec (`lifeboat_core::journal`).

use lifeboat_core::arbiter::ArbiterState;
use lifeboat_core::engine::SiteState;
use lifeboat_core::journal::{
    self, decode_snapshot, encode_header, encode_record, encode_snapshot, Tail,
    JOURNAL_FORMAT_VERSION, JOURNAL_MAGIC, SNAPSHOT_FORMAT_VERSION, SNAPSHOT_HEADER_LEN,
    SNAPSHOT_MAGIC,
};
use lifeboat_core::Input;

use crate::bytes::Bytes;

/// The first byte picks what the rest is:
/// - `0`: a journal of engine inputs, as is;
/// - `1`: a journal whose header and record frames are made valid (correct magic, version,
///   checksums and sequence numbers) around payloads taken from the bytes, so the fuzzer
///   reaches the payload decoder instead of bouncing off checksums;
/// - `2`: a snapshot (of a site engine or the arbiter), as is;
/// - `3`: a snapshot with a valid header and checksum around a payload taken from the bytes.
///
/// Checked: nothing panics; a journal decodes to records that re-encode to exactly the valid
/// prefix of the bytes, and the tail is reported where the records stop; a snapshot that
/// decodes re-encodes to a snapshot that decodes to the same state and re-encodes identically
/// (maps may reorder the first time: bincode does not forbid unsorted keys).
pub fn journal_decoder(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => check_journal(rest),
        1 => check_journal(&frame_journal(rest)),
        2 => check_any_snapshot(mode, rest),
        _ => {
            let (seq, payload) = split_seq(rest);
            check_any_snapshot(mode, &frame_snapshot(seq, payload));
        }
    }
}

/// Decode a journal of inputs and check everything that decoded.
pub fn check_journal(bytes: &[u8]) {
    let decoded = match journal::decode::<Input>(bytes) {
        Ok(d) => d,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(decoded.valid_len <= bytes.len());
    match decoded.tail {
        Tail::Clean => assert_eq!(decoded.valid_len, bytes.len(), "clean tail, bytes left"),
        Tail::Torn { offset, reason } => {
            assert_eq!(offset, decoded.valid_len, "torn at {offset}: {reason}");
            assert!(offset < bytes.len(), "torn tail at the end of the bytes");
            let _ = reason.to_string();
        }
    }
    let mut again = encode_header(decoded.base_seq);
    for (i, (seq, input)) in decoded.records.iter().enumerate() {
        assert_eq!(
            *seq,
            decoded.base_seq + i as u64,
            "sequence numbers are consecutive"
        );
        encode_record(*seq, input, &mut again).expect("a decoded input re-encodes");
    }
    assert!(
        again == bytes[..decoded.valid_len],
        "decoded records do not re-encode to the bytes they came from ({} records)",
        decoded.records.len()
    );
    assert_eq!(
        decoded.next_seq(),
        decoded.base_seq + decoded.records.len() as u64
    );
    // The valid prefix alone is a clean journal with the same records.
    let prefix = journal::decode::<Input>(&bytes[..decoded.valid_len])
        .expect("the valid prefix of a journal decodes");
    assert_eq!(prefix.tail, Tail::Clean);
    assert_eq!(prefix.records, decoded.records);
}

/// Decode a snapshot of a state type and check that whatever decodes round-trips. (A macro,
/// not a generic function, so this crate needs no serde dependency of its own.)
macro_rules! check_snapshot {
    ($state:ty, $bytes:expr) => {{
        let bytes: &[u8] = $bytes;
        match decode_snapshot::<$state>(bytes) {
            Err(e) => {
                let _ = e.to_string();
            }
            Ok((state, next_seq)) => {
                let first = encode_snapshot(&state, next_seq).expect("a decoded state re-encodes");
                let (again, seq) =
                    decode_snapshot::<$state>(&first).expect("a re-encoded snapshot decodes");
                assert_eq!(seq, next_seq);
                assert!(again == state, "snapshot round trip changed the state");
                let second = encode_snapshot(&again, seq).expect("re-encodes");
                assert!(first == second, "snapshot encoding is not a fixed point");
            }
        }
    }};
}

fn check_any_snapshot(mode: u8, bytes: &[u8]) {
    if mode & 4 == 0 {
        check_snapshot!(SiteState, bytes);
    } else {
        check_snapshot!(ArbiterState, bytes);
    }
}

/// Decode a snapshot of a site engine's state and check the round trip.
pub fn check_site_snapshot(bytes: &[u8]) {
    check_snapshot!(SiteState, bytes);
}

fn split_seq(rest: &[u8]) -> (u64, &[u8]) {
    let mut r = Bytes::new(rest);
    let seq = r.u64();
    (seq, r.rest())
}

/// A journal with a valid header and valid record frames around payloads from the bytes; a
/// trailing remainder (possibly a torn record) is appended as is.
pub fn frame_journal(rest: &[u8]) -> Vec<u8> {
    let mut r = Bytes::new(rest);
    // Small base sequences mostly; sometimes near the end of the sequence space.
    let base = match r.below(4) {
        0 => u64::MAX - u64::from(r.u8()),
        _ => u64::from(r.u16()),
    };
    let mut out = Vec::with_capacity(rest.len() + 64);
    out.extend_from_slice(&JOURNAL_MAGIC);
    out.extend_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&base.to_le_bytes());
    let crc = crc32(&[&out]);
    out.extend_from_slice(&crc.to_le_bytes());
    let mut seq = base;
    while !r.is_empty() {
        if r.chance(8) {
            // Stop framing: the rest is a raw (probably torn) tail.
            out.extend_from_slice(r.rest());
            break;
        }
        let payload = r.slice(96);
        // Now and then a wrong sequence number, an intact frame out of order.
        let s = if r.chance(4) {
            seq.wrapping_add(2)
        } else {
            seq
        };
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32(&[&s.to_le_bytes(), payload]).to_le_bytes());
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(payload);
        seq = seq.wrapping_add(1);
    }
    out
}

/// A snapshot with a valid header (length and checksum) around `payload`.
pub fn frame_snapshot(next_seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + payload.len());
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&next_seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32(&[&out, payload]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// CRC-32 (IEEE, reflected), what the codec uses (`crc32fast`), over several slices in turn.
fn crc32(parts: &[&[u8]]) -> u32 {
    let mut crc = !0u32;
    for part in parts {
        for &b in *part {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
            }
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_journals_and_snapshots_pass_the_codec_checks() {
        // A valid frame around an encoded input must decode: proves the hand-rolled CRC and
        // header layout match the codec's.
        let mut payload = Vec::new();
        encode_record(7, &Input::Tick, &mut payload).unwrap();
        let body = &payload[journal::RECORD_HEADER_LEN..];
        let mut framed = encode_header(7);
        framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32(&[&7u64.to_le_bytes(), body]).to_le_bytes());
        framed.extend_from_slice(&7u64.to_le_bytes());
        framed.extend_from_slice(body);
        assert_eq!(framed, [encode_header(7), payload].concat());
        let d = journal::decode::<Input>(&framed).unwrap();
        assert_eq!(d.records, vec![(7, Input::Tick)]);

        let st = lifeboat_core::arbiter::Arbiter::new(lifeboat_core::Config::default())
            .state()
            .clone();
        let snap = encode_snapshot(&st, 42).unwrap();
        assert_eq!(frame_snapshot(42, &snap[SNAPSHOT_HEADER_LEN..]), snap);
    }
}
