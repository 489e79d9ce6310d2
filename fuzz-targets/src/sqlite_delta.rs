//! Fuzz body for the sqlite driver's parsers of bytes it did not write itself: the page-delta
//! format of incrementals and logs (`driver::sqlite::pages`), applying a delta to a database
//! (`driver::sqlite::apply`), the SQLite database header (`driver::sqlite::header`) and the
//! primary's chain state with its page sets (`driver::sqlite::chain`: the `chain.state` record
//! file, `record.rs`, and an older version's `chain.json`).
//!
//! Checked:
//! - nothing panics, whatever the bytes;
//! - a delta header that decodes re-encodes to a header that decodes to the same value, and
//!   holds a valid page size, a forward range and no more images than pages;
//! - a delta file that opens has exactly the announced length, and its page numbers are
//!   strictly increasing, within the page count, never the lock page, and every image reads;
//! - applying a delta to a scratch copy of a real SQLite database either fails before touching
//!   the file or writes only that file (and its undo file), leaves it exactly `page_count`
//!   pages long, grows it by no more than the images the delta carries (plus the lock page),
//!   and the undo file rolls it back to the original bytes;
//! - a database header that parses has a valid page size and is not in WAL mode; an image read
//!   from a file is no longer than the file;
//! - a `chain.json` that parses re-encodes to one that parses to the same state; its page sets
//!   stay ranges (a range of four billion pages costs one entry), `within` returns sorted pages
//!   inside the image without the lock page, and a union holds exactly the pages of both sets;
//! - the same bytes as a `chain.state` record file read without a panic, a record is shorter
//!   than its file, and no state loads without its shadow copy.
//!
//! Files: the bytes are written into a per-process, per-thread directory under the system
//! temporary directory, created once and reused (the functions under test read files).

use crate::bytes::Bytes;
use lifeboat_core::{ArtifactKind, Checksum, DbId, Epoch, Lsn, UtcMillis};
use lifeboat_io_tokio::drivers::sqlite::apply::{apply_delta, roll_back, Applied, Target};
use lifeboat_io_tokio::drivers::sqlite::chain::{ChainState, PageSet};
use lifeboat_io_tokio::drivers::sqlite::header::{lock_page, parse_header, read_image, widen};
use lifeboat_io_tokio::drivers::sqlite::pages::{DeltaHeader, DeltaKind, DeltaReader, HEADER_LEN};
use lifeboat_io_tokio::drivers::{ArtifactFile, ErrorKind, Manifest, MANIFEST_FORMAT_VERSION};
use std::cell::OnceCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The change counter of the scratch database (its position: LSN 5).
const DB_COUNTER: u32 = 5;
/// Images read back per opened delta (the rest only have their page numbers checked).
const MAX_IMAGES_READ: u32 = 8;
/// `within` is asked about at most this many pages (the driver asks with a real image's
/// page count; a fuzzed page count of four billion would only measure the allocator).
const MAX_WITHIN: u32 = 4096;

/// The first byte picks what the rest is:
/// - `0`: a delta file as is (decoded, opened and applied to the scratch database);
/// - `1`: a valid delta built with the crate's encoder from fields and images taken from the
///   bytes (sometimes off by a little), so the fuzzer gets past the header checks and reaches
///   the applier;
/// - `2`: a `chain.json` as is;
/// - `3`: a well-formed `chain.json` with fields and page ranges from the bytes (including
///   `[1, 4294967295]`), then page-set operations;
/// - else: a database file as is (header and image checks).
pub fn sqlite_delta(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => check_delta(rest),
        1 => check_delta(&structured_delta(rest)),
        2 => check_chain(rest),
        3 => check_chain(&structured_chain(&mut Bytes::new(rest))),
        _ => check_database(rest),
    }
}

/// This thread's scratch directory: `<tmp>/lifeboat-fuzz-sqlite-<pid>/<n>`. Threads get their
/// own (tests run bodies in parallel); each keeps it for its lifetime.
fn scratch_dir() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static DIR: OnceCell<PathBuf> = const { OnceCell::new() };
    }
    let root = ROOT.get_or_init(|| {
        remove_stale_scratch();
        std::env::temp_dir().join(format!("lifeboat-fuzz-sqlite-{}", std::process::id()))
    });
    DIR.with(|d| {
        d.get_or_init(|| {
            let dir = root.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
            fs::create_dir_all(&dir).expect("the scratch directory can be created");
            dir
        })
        .clone()
    })
}

/// A process keeps its scratch directory until it exits (a fuzzer runs for hours), so each test
/// run left one behind: remove those of processes that are gone (Linux: no `/proc/<pid>`).
fn remove_stale_scratch() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("lifeboat-fuzz-sqlite-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).expect("the scratch directory is writable");
}

/// A real SQLite database (rollback-journal mode, `CREATE TABLE t(x)`, empty): page 1 holds
/// the header and the schema, page 2 the table's empty leaf. Built by hand because this crate
/// does not depend on rusqlite; SQLite 3.40's `PRAGMA integrity_check` says `ok` for it at
/// every page size.
pub(crate) fn scratch_database(page_size: u32, counter: u32) -> Vec<u8> {
    let ps = page_size as usize;
    let sql = b"CREATE TABLE t(x)";
    let mut payload = vec![6, 13 + 2 * 5, 13 + 2, 13 + 2, 1, 13 + 2 * sql.len() as u8];
    payload.extend_from_slice(b"tablett");
    payload.push(2);
    payload.extend_from_slice(sql);
    let mut cell = vec![payload.len() as u8, 1];
    cell.extend_from_slice(&payload);
    let mut db = vec![0u8; 2 * ps];
    db[0..16].copy_from_slice(b"SQLite format 3\0");
    let raw_size = if page_size == 65_536 {
        1
    } else {
        page_size as u16
    };
    db[16..18].copy_from_slice(&raw_size.to_be_bytes());
    db[18..24].copy_from_slice(&[1, 1, 0, 64, 32, 32]);
    db[24..28].copy_from_slice(&counter.to_be_bytes());
    db[28..32].copy_from_slice(&2u32.to_be_bytes());
    db[40..44].copy_from_slice(&1u32.to_be_bytes()); // schema cookie
    db[44..48].copy_from_slice(&4u32.to_be_bytes()); // schema format
    db[56..60].copy_from_slice(&1u32.to_be_bytes()); // UTF-8
    db[92..96].copy_from_slice(&counter.to_be_bytes()); // the page count above is valid
    db[96..100].copy_from_slice(&3_045_000u32.to_be_bytes());
    let start = ps - cell.len();
    db[100] = 0x0D; // table leaf
    db[103..105].copy_from_slice(&1u16.to_be_bytes());
    db[105..107].copy_from_slice(&(start as u16).to_be_bytes());
    db[108..110].copy_from_slice(&(start as u16).to_be_bytes());
    db[start..ps].copy_from_slice(&cell);
    db[ps] = 0x0D;
    db[ps + 5..ps + 7].copy_from_slice(&(page_size as u16).to_be_bytes());
    db
}

/// A delta file built with the crate's own encoder: header fields from the bytes (valid by
/// default, sometimes off by a little), page 1 taken from the scratch database with the new
/// change counter (as the driver writes it), other pages from the bytes.
pub(crate) fn structured_delta(rest: &[u8]) -> Vec<u8> {
    let mut r = Bytes::new(rest);
    let page_size = match r.below(8) {
        0 => 1u32 << (9 + r.below(8)), // any valid size, mostly not the database's
        1 => u32::from(r.u16()),       // usually invalid
        _ => 512,
    };
    let page_count = match r.below(8) {
        0 => r.u32(),
        1 => u32::MAX - u32::from(r.u8()),
        _ => 1 + r.below(5) as u32,
    };
    let lsn_start = match r.below(6) {
        0 => r.u64(),
        _ => u64::from(DB_COUNTER) - r.below(3) as u64,
    };
    let lsn_end = match r.below(6) {
        0 => r.u64(),
        _ => lsn_start.saturating_add(1 + r.below(4) as u64),
    };
    let kind = if r.bool() {
        DeltaKind::Log
    } else {
        DeltaKind::Incremental
    };
    let base_full = (kind == DeltaKind::Incremental).then_some(lsn_start);
    // Pages: page 1 mostly, then increasing page numbers (sometimes out of order or beyond
    // the page count).
    let mut pages = Vec::new();
    let mut next = if r.chance(240) { 1u32 } else { r.u32() };
    for _ in 0..r.below(6) + 1 {
        pages.push(next);
        next = match r.below(8) {
            0 => r.u32(),
            1 => next,
            _ => next.saturating_add(1 + r.below(2) as u32),
        };
    }
    if r.chance(240) {
        pages.retain(|p| *p <= page_count);
    }
    let entries = match r.below(16) {
        0 => r.u32(),
        _ => pages.len() as u32,
    };
    let header = DeltaHeader {
        kind,
        page_size,
        page_count,
        lsn_start,
        lsn_end,
        base_full,
        entries,
    };
    let mut out = header.encode().to_vec();
    if r.chance(16) {
        // One header byte damaged: the decoder's checks, one at a time.
        let at = r.below(HEADER_LEN as usize);
        out[at] = r.u8();
    }
    let ps = page_size.clamp(1, 1 << 16) as usize;
    let database = scratch_database(512, DB_COUNTER);
    for page in pages {
        out.extend_from_slice(&page.to_le_bytes());
        let mut image = vec![0u8; ps];
        if page == 1 {
            // The database's page 1 at the delta's end: the counter is lsn_end's low 32 bits,
            // and the page size and page count are the delta's.
            let n = ps.min(database.len() / 2);
            image[..n].copy_from_slice(&database[..n]);
            if ps >= 100 {
                let raw = if page_size == 65_536 {
                    1
                } else {
                    page_size as u16
                };
                image[16..18].copy_from_slice(&raw.to_be_bytes());
                image[24..28].copy_from_slice(&(lsn_end as u32).to_be_bytes());
                image[28..32].copy_from_slice(&page_count.to_be_bytes());
                image[92..96].copy_from_slice(&(lsn_end as u32).to_be_bytes());
            }
        } else {
            let fill = r.slice(64);
            let at = r.below(ps);
            let n = fill.len().min(ps - at);
            image[at..at + n].copy_from_slice(&fill[..n]);
        }
        out.extend_from_slice(&image);
    }
    if r.chance(16) {
        // Truncated or padded.
        if r.bool() {
            out.truncate(r.below(out.len() + 1));
        } else {
            out.extend_from_slice(r.slice(16));
        }
    }
    out
}

/// Decode, open and apply a delta file.
fn check_delta(bytes: &[u8]) {
    if let Some(h) = bytes.get(..HEADER_LEN as usize) {
        let mut raw = [0u8; HEADER_LEN as usize];
        raw.copy_from_slice(h);
        check_header(&raw);
    }
    let dir = scratch_dir();
    let delta_path = dir.join("delta.lbsq");
    write(&delta_path, bytes);
    let header = match DeltaReader::open(&delta_path) {
        Err(why) => {
            assert!(!why.is_empty(), "an empty reason for refusing a delta");
            None
        }
        Ok((reader, pages)) => {
            let h = reader.header;
            assert_eq!(
                h.file_len(),
                bytes.len() as u64,
                "an opened delta's length is not the announced one"
            );
            assert_eq!(pages.len(), h.entries as usize, "one page number per image");
            let forbidden = lock_page(h.page_size);
            for w in pages.windows(2) {
                assert!(w[0] < w[1], "page numbers out of order: {pages:?}");
            }
            for p in &pages {
                assert!(
                    (1..=h.page_count).contains(p) && *p != forbidden,
                    "page {p} accepted in a delta of {} pages (lock page {forbidden})",
                    h.page_count
                );
            }
            let mut buf = vec![0u8; h.page_size as usize];
            for i in 0..h.entries.min(MAX_IMAGES_READ) {
                reader
                    .read_image(i, &mut buf)
                    .unwrap_or_else(|e| panic!("image {i} of an opened delta: {e}"));
            }
            Some(h)
        }
    };
    // A delta that does not open is refused by the applier's first step, which that
    // already checked: only deltas that open are applied (each apply fsyncs several times).
    if let Some(h) = header {
        check_apply(&dir, &delta_path, h);
    }
}

fn check_header(raw: &[u8; HEADER_LEN as usize]) {
    let Ok(h) = DeltaHeader::decode(raw) else {
        return;
    };
    assert!(
        (512..=65_536).contains(&h.page_size) && h.page_size.is_power_of_two(),
        "page size {} accepted",
        h.page_size
    );
    assert!(h.lsn_start <= h.lsn_end, "a backwards range accepted");
    assert!(h.entries <= h.page_count, "more images than pages accepted");
    assert_eq!(
        DeltaHeader::decode(&h.encode()),
        Ok(h),
        "a decoded header does not round-trip"
    );
}

/// Apply the delta at `delta_path` to a fresh scratch database and check what happened to
/// the directory. `header` is the header of the delta, which opened.
fn check_apply(dir: &Path, delta_path: &Path, header: DeltaHeader) {
    let db_path = dir.join("scratch.db");
    let undo_path = dir.join("apply.undo");
    let _ = fs::remove_file(&undo_path);
    let h = header;
    let page_size = h.page_size;
    let original = scratch_database(page_size, DB_COUNTER);
    write(&db_path, &original);
    // The manifest agrees with the header, so the applier's own checks are what is fuzzed.
    let kind = match h.kind {
        DeltaKind::Incremental => ArtifactKind::Incremental,
        _ => ArtifactKind::Log,
    };
    let artifact = ArtifactFile {
        path: delta_path.to_path_buf(),
        manifest: Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            db: "fuzz".into(),
            db_id: DbId(0),
            kind,
            epoch: Epoch(1),
            lsn_start: Lsn(h.lsn_start),
            lsn_end: Lsn(h.lsn_end),
            base_full: h.base_full.map(Lsn),
            created_utc: UtcMillis(0),
            size: 0,
            checksum: Checksum(0),
            retry: 0,
        },
    };
    let target = Target {
        db_name: "fuzz",
        path: &db_path,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&db_path)
        .expect("the scratch database opens");
    let outcome = apply_delta(&file, &target, &artifact, Some(&undo_path));
    let after = fs::read(&db_path).expect("the scratch database reads");
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("the scratch directory lists")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for n in &names {
        assert!(
            ["apply.undo", "chain.json", "delta.lbsq", "scratch.db"].contains(&n.as_str()),
            "applying a delta wrote {n} beside the database"
        );
    }
    match outcome {
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message");
            if e.kind != ErrorKind::Io {
                assert!(
                    after == original,
                    "a refused delta ({}) changed the database",
                    e.message
                );
            }
        }
        Ok((applied, lsn)) => {
            assert_eq!(
                lsn,
                Lsn(h.lsn_end),
                "the applied position is the delta's end"
            );
            let ps = u64::from(h.page_size);
            if applied == Applied::Written {
                assert_eq!(
                    after.len() as u64,
                    u64::from(h.page_count) * ps,
                    "the database is not page_count pages long after the apply"
                );
            }
            // Growth is bounded by what the delta carries (the lock page is not carried).
            assert!(
                after.len() as u64 <= original.len() as u64 + (u64::from(h.entries) + 1) * ps,
                "a delta of {} images grew the database from {} to {} bytes",
                h.entries,
                original.len(),
                after.len()
            );
            if applied == Applied::Written {
                let rolled = roll_back(&file, &target, &undo_path)
                    .unwrap_or_else(|e| panic!("the undo file does not roll back: {e}"));
                // The driver's positions are the 32-bit change counter widened near the
                // artifact's start (found by fuzzing: a delta far up the position space).
                assert_eq!(
                    rolled,
                    widen(DB_COUNTER, Lsn(h.lsn_start)),
                    "rolled back to where?"
                );
                let back = fs::read(&db_path).expect("the scratch database reads");
                assert!(back == original, "the rollback did not restore the bytes");
            }
        }
    }
}

/// A database file as is: its header and its image.
fn check_database(bytes: &[u8]) {
    if let Ok(h) = parse_header(bytes) {
        assert!(
            (512..=65_536).contains(&h.page_size) && h.page_size.is_power_of_two(),
            "page size {} accepted",
            h.page_size
        );
        assert!(
            h.write_version != 2 && h.read_version != 2,
            "a WAL-mode header accepted"
        );
    }
    let path = scratch_dir().join("scratch.db");
    write(&path, bytes);
    let file = fs::File::open(&path).expect("the scratch database opens");
    if let Ok(image) = read_image(&file) {
        assert!(
            image.len() <= bytes.len() as u64,
            "an image of {} bytes read from a {}-byte file",
            image.len(),
            bytes.len()
        );
    }
}

/// A `chain.json` that names its fields right, with values from the bytes.
pub(crate) fn structured_chain(r: &mut Bytes<'_>) -> Vec<u8> {
    let ranges = |r: &mut Bytes<'_>| -> String {
        let mut parts = Vec::new();
        for _ in 0..r.below(5) {
            let (a, b) = match r.below(6) {
                0 => (1, u32::MAX),
                1 => (0, u32::from(r.u8())),
                2 => (r.u32(), r.u32()),
                _ => {
                    let a = 1 + u32::from(r.u16());
                    (a, a + u32::from(r.u8()))
                }
            };
            parts.push(format!("[{a},{b}]"));
        }
        format!("[{}]", parts.join(","))
    };
    let page_size = match r.below(4) {
        0 => r.u32(),
        _ => 512 << r.below(8),
    };
    let page_count = match r.below(4) {
        0 => r.u32(),
        _ => u32::from(r.u16()),
    };
    let log = ranges(r);
    let incr = ranges(r);
    let base = if r.bool() {
        "null".to_string()
    } else {
        r.u64().to_string()
    };
    let version = if r.chance(8) { u32::from(r.u8()) } else { 1 };
    format!(
        "{{\"format_version\":{version},\"generation\":{},\"position\":{},\"page_size\":\
         {page_size},\"page_count\":{page_count},\"log_from\":{},\"log_touched\":{log},\
         \"base_full\":{base},\"incr_touched\":{incr}}}",
        r.u16(),
        r.u64(),
        r.u64()
    )
    .into_bytes()
}

fn check_chain(bytes: &[u8]) {
    let dir = scratch_dir();
    // The same bytes as a `chain.state` record file (what a damaged disk could hold): read
    // without a panic, and no state without its shadow copy, valid record or not.
    let state_file = dir.join("chain.state");
    write(&state_file, bytes);
    if let Ok(payload) = lifeboat_io_tokio::record::read(&state_file) {
        assert!(payload.len() < bytes.len(), "a record larger than its file");
    }
    assert!(
        ChainState::load(&dir, "fuzz").is_none(),
        "a chain state loaded from a record file without a shadow copy"
    );
    let _ = lifeboat_io_tokio::drivers::sqlite::chain::load_reference(&dir);
    fs::remove_file(&state_file).expect("remove the record file");
    write(&dir.join("chain.json"), bytes);
    let parsed = ChainState::parse(bytes);
    // `load` refuses what does not parse (no shadow copy exists: it refuses the rest too).
    let loaded = ChainState::load(&dir, "fuzz");
    assert!(
        loaded.is_none() || parsed.is_ok(),
        "load accepted a state that does not parse"
    );
    let Ok(state) = parsed else {
        return;
    };
    let json = state.to_json().expect("a parsed state encodes");
    let again = ChainState::parse(&json)
        .unwrap_or_else(|e| panic!("a re-encoded chain state does not parse: {e}"));
    assert!(again == state, "chain state round trip changed it");
    for set in [&state.log_touched, &state.incr_touched] {
        check_page_set(set, state.page_count.min(MAX_WITHIN), state.page_size);
    }
    let mut union = state.log_touched.clone();
    union.extend(&state.incr_touched);
    let (a, b) = (state.log_touched.len(), state.incr_touched.len());
    assert!(
        union.len() >= a.max(b) && union.len() <= a + b,
        "a union of {a} and {b} pages holds {}",
        union.len()
    );
    for r in union.ranges() {
        for p in [r[0], r[1]] {
            assert!(
                state.log_touched.contains(p) || state.incr_touched.contains(p),
                "the union holds page {p}, neither set does"
            );
        }
    }
    check_page_set(&union, state.page_count.min(MAX_WITHIN), state.page_size);
}

fn check_page_set(set: &PageSet, page_count: u32, page_size: u32) {
    let ranges = set.ranges();
    for w in ranges.windows(2) {
        assert!(
            w[0][1].checked_add(1).is_some_and(|next| next < w[1][0]),
            "page ranges overlap or touch: {ranges:?}"
        );
    }
    assert!(
        ranges.iter().all(|r| r[0] >= 1 && r[0] <= r[1]),
        "an empty or page-0 range: {ranges:?}"
    );
    let pages = set.within(page_count, page_size);
    let skip = lock_page(page_size);
    assert!(
        pages.len() <= page_count as usize,
        "within returned too much"
    );
    for w in pages.windows(2) {
        assert!(w[0] < w[1], "within is not sorted");
    }
    for p in &pages {
        assert!(
            (1..=page_count).contains(p) && *p != skip && set.contains(*p),
            "within returned page {p}"
        );
    }
}
