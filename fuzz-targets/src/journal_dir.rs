//! Fuzz body for the choice of journal and snapshot in a data directory
//! (`lifeboat_io_tokio::journal_store::JournalStore::open`), what an agent or the arbiter finds
//! on disk after a crash, a full disk or an operator's copy.
//!
//! Each run fills a scratch directory of its own (see `manifests::scratch`) from the bytes:
//! - the first byte picks the state type (`SiteState`, the agent's, or `ArbiterState`, the
//!   arbiter's);
//! - the journal: absent, a real one (records of engine inputs from the bytes, a base sequence
//!   that is small or near the end of `u64`), cut short, with a flipped bit, garbage, or a
//!   directory in its place;
//! - the snapshot: absent, a real one whose `next_seq` is before, inside, at or after the
//!   journal's records (or at `u64::MAX`), cut short, with a flipped bit, garbage, a valid
//!   header and checksum around garbage, or a directory;
//! - a few extra files with names from the bytes (`journal.tmp`, `snapshot.tmp`, anything).
//!
//! Checked:
//! - `open` never panics; an error names the journal or the snapshot (its path is in the text);
//! - a store that opens recovered exactly what the codec says the files hold: the snapshot's
//!   state, the journal's intact records from the snapshot's `next_seq` on, a torn tail
//!   reported and truncated away (the journal is then its valid prefix);
//! - the store keeps working: a record appended after `open` is replayed, after the others, by
//!   the next `open`, with no torn tail and the same state.

use std::fs;
use std::path::Path;

use lifeboat_core::arbiter::{Arbiter, ArbiterState};
use lifeboat_core::engine::{SiteEngine, SiteState};
use lifeboat_core::journal::{self, encode_header, encode_snapshot, JournalWriter, Tail};
use lifeboat_core::{Config, DbId, Input, Lsn, Millis, SiteId};
use lifeboat_io_tokio::journal_store::{JournalStore, Record};

use crate::bytes::Bytes;
use crate::journal_decoder::frame_snapshot;
use crate::manifests::{put, scratch};

/// What was put in place of a file.
enum Placed {
    Absent,
    Bytes(Vec<u8>),
    Directory,
}

/// Open the store as `$state`, check the outcome against what the codec says the files hold,
/// append a record and reopen. (A macro, not a generic function, so this crate needs no serde
/// dependency of its own.)
macro_rules! check_open {
    ($state:ty, $dir:expr, $journal:expr, $snapshot:expr) => {{
        let dir: &Path = $dir;
        let jpath = JournalStore::journal_path(dir);
        let spath = JournalStore::snapshot_path(dir);
        let names_a_file = |text: &str| {
            text.contains(&jpath.display().to_string())
                || text.contains(&spath.display().to_string())
        };
        match JournalStore::open::<$state>(dir) {
            Err(e) => {
                let text = format!("{e:#}");
                assert!(names_a_file(&text), "the error names no file: {text}");
            }
            Ok((mut store, rec)) => {
                // The snapshot as the codec reads it.
                let (state, next) = match $snapshot {
                    Placed::Bytes(b) => {
                        let (s, n) = journal::decode_snapshot::<$state>(b)
                            .expect("a store opened on a snapshot the codec refuses");
                        (Some(s), n)
                    }
                    _ => (None, 0),
                };
                assert!(
                    rec.state == state,
                    "the recovered state is not the snapshot's"
                );
                let on_disk = fs::read(&jpath).expect("an opened journal is readable");
                let decoded = match $journal {
                    Placed::Bytes(b) => Some(
                        journal::decode::<Record>(b)
                            .expect("a store opened on a journal the codec refuses"),
                    ),
                    _ => None,
                };
                match decoded {
                    Some(d) if d.next_seq() >= next => {
                        let expected: Vec<Record> = d
                            .records
                            .iter()
                            .filter(|(seq, _)| *seq >= next)
                            .map(|(_, r)| r.clone())
                            .collect();
                        assert_eq!(rec.records, expected, "replay differs from the journal");
                        assert_eq!(
                            rec.torn.is_some(),
                            matches!(d.tail, Tail::Torn { .. }),
                            "torn tail reported wrongly: {:?}",
                            rec.torn
                        );
                        let original = match $journal {
                            Placed::Bytes(b) => &b[..d.valid_len],
                            _ => &[][..],
                        };
                        assert!(on_disk == original, "the journal is not its valid prefix");
                    }
                    // No journal, or one the snapshot covers: a fresh one at the snapshot.
                    _ => {
                        assert!(rec.records.is_empty());
                        assert_eq!(on_disk, encode_header(next), "not a fresh journal");
                    }
                }
                let appended: Record = (7, Input::Tick);
                // The journal on disk now is where the writer continues.
                let at_end = decoded_next_is_max(&on_disk);
                match store.append(std::slice::from_ref(&appended)) {
                    Ok(()) => assert!(!at_end, "a record numbered u64::MAX was written"),
                    Err(e) => {
                        // Only at the very end of the sequence space, and saying which file.
                        let text = format!("{e:#}");
                        assert!(at_end, "an opened store refuses a record: {text}");
                        assert!(names_a_file(&text), "the error names no file: {text}");
                        return;
                    }
                }
                drop(store);
                let (_, again) = JournalStore::open::<$state>(dir)
                    .unwrap_or_else(|e| panic!("a store does not reopen after an append: {e:#}"));
                let mut expected = rec.records.clone();
                expected.push(appended);
                assert_eq!(
                    again.records, expected,
                    "an appended record is not replayed"
                );
                assert!(again.torn.is_none(), "{:?}", again.torn);
                assert!(again.state == rec.state, "the state changed on reopen");
            }
        }
    }};
}

/// Whether the journal on disk continues at record `u64::MAX` (it can take no more records).
fn decoded_next_is_max(journal: &[u8]) -> bool {
    journal::decode::<Record>(journal).is_ok_and(|d| d.next_seq() == u64::MAX)
}

pub fn journal_dir(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = scratch("journal_dir");
    let mut r = Bytes::new(rest);
    let (journal, base, records) = place_journal(&mut r);
    // The snapshot's `next_seq`: mostly where the journal starts or inside its records.
    let next = match r.below(6) {
        0 | 1 => base,
        2 => base.saturating_add(r.below(records + 2) as u64),
        3 => base.saturating_sub(u64::from(r.u8())),
        4 => u64::MAX - u64::from(r.u8() % 2),
        _ => r.u64(),
    };
    let site = mode & 1 == 0;
    let snapshot = place_snapshot(&mut r, site, next);
    write(&dir.join("journal"), &journal);
    write(&dir.join("snapshot"), &snapshot);
    for _ in 0..r.below(4) {
        let name = match r.below(4) {
            0 => "journal.tmp".to_string(),
            1 => "snapshot.tmp".to_string(),
            _ => extra_name(r.slice(12)),
        };
        let path = dir.join(&name);
        if !path.exists() {
            put(&path, r.slice(64));
        }
    }
    if site {
        check_open!(SiteState, &dir, &journal, &snapshot);
    } else {
        check_open!(ArbiterState, &dir, &journal, &snapshot);
    }
}

fn write(path: &Path, what: &Placed) {
    match what {
        Placed::Absent => {}
        Placed::Bytes(b) => put(path, b),
        Placed::Directory => {
            fs::create_dir(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
        }
    }
}

/// A file name from the bytes that stays inside the directory and is not one of the store's.
fn extra_name(raw: &[u8]) -> String {
    let name: String = String::from_utf8_lossy(raw)
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." | "journal" | "snapshot" => format!("x{name}"),
        _ => name,
    }
}

/// A real input of the kinds a journal holds most.
fn input(r: &mut Bytes<'_>) -> Input {
    match r.below(3) {
        0 => Input::Tick,
        1 => Input::Restarted,
        _ => Input::WritePosition {
            db: DbId(u32::from(r.u8() % 4)),
            lsn: Lsn(r.u64()),
        },
    }
}

/// The journal, its base sequence and its number of records (as written, before damage).
fn place_journal(r: &mut Bytes<'_>) -> (Placed, u64, usize) {
    let base = match r.below(4) {
        0 => u64::MAX - 1 - u64::from(r.u8() % 8),
        _ => u64::from(r.u16()),
    };
    // Mostly a real journal, so that most runs get past it.
    let choice = r.below(9);
    if choice == 0 {
        return (Placed::Absent, base, 0);
    }
    if choice == 1 {
        return (Placed::Directory, base, 0);
    }
    if choice == 2 {
        return (Placed::Bytes(r.slice(200).to_vec()), base, 0);
    }
    let mut bytes = encode_header(base);
    let mut w = JournalWriter::new(base);
    let mut n = 0;
    for _ in 0..r.below(6) {
        // Record number u64::MAX never decodes (and the writer's count would overflow).
        if w.next_seq() == u64::MAX {
            break;
        }
        let record: Record = (Millis::from(r.u32()), input(r));
        w.append(&record, &mut bytes)
            .expect("a journal record encodes");
        n += 1;
    }
    match choice {
        3 if !bytes.is_empty() => {
            let cut = r.below(bytes.len());
            bytes.truncate(cut);
        }
        4 if !bytes.is_empty() => {
            let at = r.below(bytes.len());
            bytes[at] ^= 1 << r.below(8);
        }
        _ => {}
    }
    (Placed::Bytes(bytes), base, n)
}

fn place_snapshot(r: &mut Bytes<'_>, site: bool, next: u64) -> Placed {
    // Mostly absent or real, so that most runs get past it.
    let choice = r.below(10);
    match choice {
        0 | 1 => return Placed::Absent,
        2 => return Placed::Directory,
        3 => return Placed::Bytes(r.slice(200).to_vec()),
        4 => return Placed::Bytes(frame_snapshot(next, r.slice(200))),
        _ => {}
    }
    let cfg = Config::default();
    let mut bytes = if site {
        let mut e = SiteEngine::new(cfg, SiteId(r.u8() as u16 % 2));
        for t in 0..r.below(4) as u64 {
            e.handle(t * 1_000, input(r));
            while e.poll_output().is_some() {}
        }
        encode_snapshot(e.state(), next)
    } else {
        encode_snapshot(Arbiter::new(cfg).state(), next)
    }
    .expect("a state encodes");
    match choice {
        5 if !bytes.is_empty() => {
            let cut = r.below(bytes.len());
            bytes.truncate(cut);
        }
        6 if !bytes.is_empty() => {
            let at = r.below(bytes.len());
            bytes[at] ^= 1 << r.below(8);
        }
        _ => {}
    }
    Placed::Bytes(bytes)
}
