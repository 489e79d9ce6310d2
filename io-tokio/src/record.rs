//! A small record replaced in place: the file holds two slots, and each write goes into the slot
//! that does not hold the newest valid record, followed by one `fdatasync`. A write torn by a
//! crash fails its checksum and the reader takes the other slot, the record before it.
//!
//! Compared with a whole-file replacement ([`crate::durable::write_durably`]: a temporary file
//! created, written and fsynced, renamed, the directory fsynced), a write costs one positioned
//! write and one data sync of a file whose size does not change. Only when the record outgrows
//! its slot (or the file is missing or damaged) is the file replaced whole, with slots twice the
//! record's size, so that happens a logarithmic number of times.
//!
//! Layout: two slots of `S` bytes (the file is `2 S` long, `S` a multiple of 4 KiB). A slot is
//! a 20-byte header, `LBR1`, the record's sequence number (u64), its length (u32) and a CRC-32 of
//! the header's first 16 bytes and the payload (u32), all little-endian, then the payload.
//!
//! One writer at a time (the caller's lock); readers may run beside it and see the record before
//! a write that is under way.

use crate::durable;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 4] = b"LBR1";
const HEADER: usize = 20;
const MIN_SLOT: usize = 4096;

/// How a [`write`] stored the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Into a slot of the existing file.
    InPlace,
    /// The file was created or replaced whole (missing, damaged, or the record outgrew a slot).
    Replaced,
}

/// One slot's record, if its header and checksum are valid.
struct Slot<'a> {
    seq: u64,
    payload: &'a [u8],
}

fn slot_size(file_len: usize) -> Option<usize> {
    (file_len >= 2 * MIN_SLOT && file_len.is_multiple_of(2 * MIN_SLOT)).then_some(file_len / 2)
}

fn checksum(head: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(payload);
    h.finalize()
}

fn parse_slot(bytes: &[u8]) -> Option<Slot<'_>> {
    let head = bytes.get(..HEADER)?;
    if &head[..4] != MAGIC {
        return None;
    }
    let seq = u64::from_le_bytes(head[4..12].try_into().ok()?);
    let len = u32::from_le_bytes(head[12..16].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[16..20].try_into().ok()?);
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    (checksum(&head[..16], payload) == crc).then_some(Slot { seq, payload })
}

fn encode_slot(seq: u64, payload: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record too large"))?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    let crc = checksum(&out, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// The valid slots of a file's bytes: (slot index, record), newest first.
#[cfg(test)]
fn valid_slots(bytes: &[u8]) -> Vec<(usize, Slot<'_>)> {
    let Some(s) = slot_size(bytes.len()) else {
        return Vec::new();
    };
    let mut slots: Vec<(usize, Slot<'_>)> = (0..2)
        .filter_map(|i| parse_slot(&bytes[i * s..(i + 1) * s]).map(|r| (i, r)))
        .collect();
    slots.sort_by_key(|s| std::cmp::Reverse(s.1.seq));
    slots
}

/// The newest valid record of an open file of slot size `s`: (slot index, sequence number,
/// payload). Reads the two headers, then only the payload of the newest slot whose header is
/// whole (and of the other one if that payload fails its checksum), not both slots.
fn newest(file: &File, s: usize) -> io::Result<Option<(usize, u64, Vec<u8>)>> {
    let mut heads: Vec<(usize, u64, usize)> = Vec::with_capacity(2);
    for i in 0..2 {
        let mut head = [0u8; HEADER];
        file.read_exact_at(&mut head, (i * s) as u64)?;
        let seq = u64::from_le_bytes(head[4..12].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default()) as usize;
        if &head[..4] == MAGIC && len <= s - HEADER {
            heads.push((i, seq, len));
        }
    }
    heads.sort_by_key(|h| std::cmp::Reverse(h.1));
    for (i, _, len) in heads {
        let mut bytes = vec![0u8; HEADER + len];
        file.read_exact_at(&mut bytes, (i * s) as u64)?;
        if let Some(r) = parse_slot(&bytes) {
            return Ok(Some((i, r.seq, r.payload.to_vec())));
        }
    }
    Ok(None)
}

/// The slot size of an open record file, if its length is one a record file has.
fn file_slot_size(file: &File) -> io::Result<Option<usize>> {
    Ok(usize::try_from(file.metadata()?.len())
        .ok()
        .and_then(slot_size))
}

/// The newest valid record of `path`. `NotFound` when the file is missing; `InvalidData` when
/// neither slot holds a valid record.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let found = match file_slot_size(&file)? {
        Some(s) => newest(&file, s)?,
        None => None,
    };
    match found {
        Some((_, _, payload)) => Ok(payload),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds no record with a valid checksum ({} bytes)",
                path.display(),
                file.metadata()?.len()
            ),
        )),
    }
}

/// Make `payload` the newest record of `path`, durably: once this returns, a crash leaves it
/// readable; a crash before leaves the record before it (or this one).
pub fn write(path: &Path, payload: &[u8]) -> io::Result<Written> {
    let need = HEADER + payload.len();
    let mut next_seq = 1;
    if let Ok(file) = OpenOptions::new().read(true).write(true).open(path) {
        if let Some(s) = file_slot_size(&file)? {
            if let Some((newest, seq, _)) = newest(&file, s)? {
                next_seq = seq + 1;
                if need <= s {
                    // Never over the newest valid record: a torn write leaves it readable.
                    let target = 1 - newest;
                    file.write_all_at(&encode_slot(next_seq, payload)?, (target * s) as u64)?;
                    file.sync_data()?;
                    return Ok(Written::InPlace);
                }
            }
        }
    }
    let s = (2 * need).next_power_of_two().max(MIN_SLOT);
    let mut bytes = encode_slot(next_seq, payload)?;
    bytes.resize(2 * s, 0);
    durable::write_durably(path, &bytes)?;
    Ok(Written::Replaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn writes_alternate_slots_in_place_and_the_newest_is_read() {
        let d = scratch();
        let p = d.path().join("state");
        assert_eq!(read(&p).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(write(&p, b"one").unwrap(), Written::Replaced);
        assert_eq!(read(&p).unwrap(), b"one");
        let len = fs::metadata(&p).unwrap().len();
        for (i, text) in ["two", "three, longer", "four"].iter().enumerate() {
            assert_eq!(write(&p, text.as_bytes()).unwrap(), Written::InPlace, "{i}");
            assert_eq!(read(&p).unwrap(), text.as_bytes());
        }
        assert_eq!(fs::metadata(&p).unwrap().len(), len, "written in place");
        // Both slots hold a record: the newest and the one before it.
        let bytes = fs::read(&p).unwrap();
        let slots = valid_slots(&bytes);
        assert_eq!(slots.len(), 2);
        assert_eq!((slots[0].1.seq, slots[0].1.payload), (4, &b"four"[..]));
        assert_eq!(slots[1].1.payload, b"three, longer");
    }

    #[test]
    fn a_torn_write_leaves_the_record_before_it() {
        let d = scratch();
        let p = d.path().join("state");
        write(&p, b"old").unwrap();
        write(&p, b"new").unwrap();
        let mut bytes = fs::read(&p).unwrap();
        let s = bytes.len() / 2;
        let newest = valid_slots(&bytes)[0].0;
        // A crash in the middle of the newest slot's write: its payload is half new.
        bytes[newest * s + HEADER + 1] ^= 0xff;
        fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p).unwrap(), b"old");
        // The next write goes into the damaged slot, not over the record that is still good.
        write(&p, b"newer").unwrap();
        assert_eq!(read(&p).unwrap(), b"newer");
        let bytes = fs::read(&p).unwrap();
        let slots = valid_slots(&bytes);
        assert_eq!(slots[1].1.payload, b"old");
        assert!(slots[0].1.seq > slots[1].1.seq);
        // A header torn too (its length beyond the slot): the other slot is read.
        let mut bytes = fs::read(&p).unwrap();
        let newest = valid_slots(&bytes)[0].0;
        bytes[newest * s + 12..newest * s + 16].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p).unwrap(), b"old");
    }

    #[test]
    fn a_record_that_outgrows_its_slot_replaces_the_file_and_keeps_counting() {
        let d = scratch();
        let p = d.path().join("state");
        write(&p, b"small").unwrap();
        let big = vec![7u8; 10_000];
        assert_eq!(write(&p, &big).unwrap(), Written::Replaced);
        assert_eq!(read(&p).unwrap(), big);
        assert!(fs::metadata(&p).unwrap().len() >= 2 * 10_020);
        assert_eq!(write(&p, b"small again").unwrap(), Written::InPlace);
        let bytes = fs::read(&p).unwrap();
        assert_eq!(valid_slots(&bytes)[0].1.seq, 3);
        assert_eq!(read(&p).unwrap(), b"small again");
    }

    #[test]
    fn garbage_is_an_error_that_names_the_file_and_a_write_starts_over() {
        let d = scratch();
        let p = d.path().join("state");
        for garbage in [&b""[..], b"LBR1", &[0u8; 8192][..], &[0xffu8; 8193][..]] {
            fs::write(&p, garbage).unwrap();
            let e = read(&p).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("state"), "{e}");
        }
        // A header that claims more bytes than the slot holds is refused, not read past.
        let mut bytes = encode_slot(1, b"x").unwrap();
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        bytes.resize(2 * MIN_SLOT, 0);
        fs::write(&p, &bytes).unwrap();
        assert_eq!(read(&p).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(write(&p, b"fresh").unwrap(), Written::Replaced);
        assert_eq!(read(&p).unwrap(), b"fresh");
    }
}
