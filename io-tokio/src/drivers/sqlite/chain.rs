//! The primary's private chain state: the shadow copy of the last snapshot and which pages
//! changed since the last log and since the base full backup.
//!
//! Every snapshot is diffed against the shadow; the changed pages are added to both
//! "touched" sets. A log `[a, b)` carries the images at `b` of every page touched between the
//! snapshots at `a` and `b`; an incremental `[base, b)` those touched since the base full. So a
//! delta applies at *every* snapshot position inside its range, not only at its start: a page
//! changed A -> B -> A between two artifacts' ends is still carried, and a log may span a full
//! backup taken in between.
//!
//! Files in the database's state directory: `chain.state` holds this state and the reference
//! position (see [`load_reference`]) as one record, replaced in place (two slots, one
//! `fdatasync`: [`crate::record`]); the state names the shadow `shadow-<generation>.db` it
//! belongs to. A commit renames the new shadow into place under a new generation, then writes
//! the record; a crash anywhere leaves a state that names a complete shadow. Artifacts are
//! published before the commit, so a crash in between only makes the next artifact overlap the
//! last one, which the chain rule accepts. Older versions kept the state in `chain.json` and the
//! reference in `lsn.json`, each replaced through a temporary file; they are read while no
//! `chain.state` exists and removed once it does.

use super::super::durable;
use super::super::error::{DriverError, ErrorKind};
use super::header::{lock_page, Image};
use lifeboat_core::Lsn;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The state and the reference position, one record ([`crate::record`]).
pub const STATE_FILE: &str = "chain.state";
/// Where older versions kept the state and the reference; read while no `chain.state` exists.
pub const LEGACY_CHAIN_FILE: &str = "chain.json";
pub const LEGACY_REFERENCE_FILE: &str = "lsn.json";
const STATE_FORMAT_VERSION: u32 = 1;

/// A set of page numbers, kept (and stored) as disjoint inclusive ranges, so its size follows
/// the number of ranges, not of pages: a stored range `[1, 4294967295]` costs one entry,
/// not four billion (loading used to expand every range page by page).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    /// First page of each range -> its last page. Ranges neither overlap nor touch.
    ranges: BTreeMap<u32, u32>,
}

impl PageSet {
    /// Add one page.
    pub fn insert(&mut self, page: u32) {
        self.insert_range(page, page);
    }

    /// Add the pages `first..=last` (nothing when `first > last`), merging with the ranges they
    /// overlap or touch.
    pub fn insert_range(&mut self, first: u32, last: u32) {
        if first > last {
            return;
        }
        let (mut lo, mut hi) = (first, last);
        // A range that starts at or before `lo` and reaches it (or the page before it).
        if let Some((&a, &b)) = self.ranges.range(..=lo).next_back() {
            if b.checked_add(1).is_none_or(|next| next >= lo) {
                lo = a;
                hi = hi.max(b);
            }
        }
        // Ranges that start inside `lo..=hi + 1` are absorbed.
        let end = hi.saturating_add(1);
        let absorbed: Vec<(u32, u32)> =
            self.ranges.range(lo..=end).map(|(&a, &b)| (a, b)).collect();
        for (a, b) in absorbed {
            self.ranges.remove(&a);
            hi = hi.max(b);
        }
        self.ranges.insert(lo, hi);
    }

    pub fn extend(&mut self, other: &PageSet) {
        for (&a, &b) in &other.ranges {
            self.insert_range(a, b);
        }
    }

    pub fn contains(&self, page: u32) -> bool {
        self.ranges
            .range(..=page)
            .next_back()
            .is_some_and(|(_, &b)| b >= page)
    }

    /// How many pages the set holds.
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(&a, &b)| u64::from(b - a) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The pages that exist in an image of `page_count` pages, in order, without the lock page.
    /// At most `page_count` pages, whatever the set holds.
    pub fn within(&self, page_count: u32, page_size: u32) -> Vec<u32> {
        let skip = lock_page(page_size);
        let mut out = Vec::new();
        for (&a, &b) in self.ranges.range(..=page_count) {
            let (a, b) = (a.max(1), b.min(page_count));
            if a <= b {
                out.extend((a..=b).filter(|p| *p != skip));
            }
        }
        out
    }

    /// The set as inclusive ranges, in order (its stored form).
    pub fn ranges(&self) -> Vec<[u32; 2]> {
        self.ranges.iter().map(|(&a, &b)| [a, b]).collect()
    }
}

impl FromIterator<u32> for PageSet {
    fn from_iter<I: IntoIterator<Item = u32>>(pages: I) -> Self {
        let mut set = PageSet::default();
        for p in pages {
            set.insert(p);
        }
        set
    }
}

impl Serialize for PageSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.ranges().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PageSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ranges = Vec::<[u32; 2]>::deserialize(d)?;
        let mut set = PageSet::default();
        for [a, b] in ranges {
            if a > b || a == 0 {
                return Err(serde::de::Error::custom(format!(
                    "page range {a}..={b} (pages are numbered from 1, ranges run forwards)"
                )));
            }
            set.insert_range(a, b);
        }
        Ok(set)
    }
}

/// The primary's chain state for one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainState {
    pub format_version: u32,
    /// Names the shadow file; grows with every commit.
    pub generation: u64,
    /// The shadow's position (its change counter, widened).
    pub position: Lsn,
    pub page_size: u32,
    pub page_count: u32,
    /// Where the next log starts, and the pages touched since then.
    pub log_from: Lsn,
    pub log_touched: PageSet,
    /// The last full backup's `lsn_end`, and the pages touched since then.
    pub base_full: Option<Lsn>,
    pub incr_touched: PageSet,
    /// The database runs in WAL mode and this chain follows its WAL (`capture.rs`).
    #[serde(default)]
    pub wal_mode: bool,
    /// Where the last capture stopped in the WAL (none: read it from its start).
    #[serde(default)]
    pub wal: Option<super::wal::WalCursor>,
    /// The shadow's file has page images written since it was last synced (`capture.rs`):
    /// a crash of the machine may have lost them. `None`: the file is synced at `wal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsynced: Option<Unsynced>,
}

/// Page images in the shadow's file that are not yet synced: where it was last synced and in
/// which boot of the machine they were written. The page cache keeps them across a crash of the
/// agent; only a new boot can have lost them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unsynced {
    /// The WAL cursor the file was synced at (`None`: the start of the WAL).
    pub since: Option<super::wal::WalCursor>,
    /// The machine's boot id when the images were written (empty when it could not be read).
    pub boot: String,
}

impl ChainState {
    /// A chain that starts at a snapshot: nothing touched, no full yet.
    pub fn start(generation: u64, position: Lsn, image: Image) -> ChainState {
        ChainState {
            format_version: STATE_FORMAT_VERSION,
            generation,
            position,
            page_size: image.page_size,
            page_count: image.page_count,
            log_from: position,
            log_touched: PageSet::default(),
            base_full: None,
            incr_touched: PageSet::default(),
            wal_mode: false,
            wal: None,
            unsynced: None,
        }
    }

    pub fn image(&self) -> Image {
        Image {
            page_size: self.page_size,
            page_count: self.page_count,
            counter: self.position.0 as u32,
        }
    }

    pub fn shadow_path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("shadow-{:020}.db", self.generation))
    }

    /// The state in `dir`, if any. A state that cannot be read, or whose shadow is gone or has
    /// the wrong length, is reported and treated as absent: the chain restarts (a full backup is
    /// then needed before logs can follow).
    pub fn load(dir: &Path, db_name: &str) -> Option<ChainState> {
        let (path, state) = match read_record(dir) {
            Some((path, Ok(record))) => (path, record.chain?),
            Some((path, Err(e))) => {
                tracing::warn!(db = db_name, path = %path.display(), error = %e,
                    "cannot read the chain state; the chain restarts");
                return None;
            }
            None => {
                let path = dir.join(LEGACY_CHAIN_FILE);
                let bytes = match durable::read_small(&path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                    Err(e) => {
                        tracing::warn!(db = db_name, path = %path.display(), error = %e,
                            "cannot read the chain state; the chain restarts");
                        return None;
                    }
                };
                match ChainState::parse(&bytes) {
                    Ok(s) => (path, s),
                    Err(e) => {
                        tracing::warn!(db = db_name, path = %path.display(), error = %e,
                            "the chain state is garbled; the chain restarts");
                        return None;
                    }
                }
            }
        };
        let shadow_len = fs::metadata(state.shadow_path(dir)).map(|m| m.len()).ok();
        // A WAL capture that stopped while it updated the shadow in place (its page 1 says
        // another position) may have resized it: the next capture repairs or replaces it.
        // One not synced before the machine crashed may have lost its last resize too: the next
        // capture writes its frames again.
        let fits = shadow_len == Some(state.image().len())
            || (state.wal_mode
                && shadow_len.is_some()
                && (state.unsynced.is_some() || super::capture::shadow_suspect(dir, &state)));
        if state.format_version != STATE_FORMAT_VERSION || !fits {
            tracing::warn!(db = db_name, path = %path.display(),
                "the chain state's version or shadow copy does not match; the chain restarts");
            return None;
        }
        Some(state)
    }

    /// Decode a chain state's JSON (no check against the shadow copy).
    pub fn parse(bytes: &[u8]) -> Result<ChainState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// This state's JSON.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Make this state current: move `staged_shadow` into place as its shadow, record the state
    /// (and its position as the reference), then remove older shadows.
    pub fn commit(&self, dir: &Path, staged_shadow: &Path) -> Result<(), DriverError> {
        let shadow = self.shadow_path(dir);
        durable::rename_durably(staged_shadow, &shadow)?;
        self.save(dir)?;
        remove_shadows(dir, Some(&shadow))
    }

    /// Record this state (its shadow already in place) and its position as the reference: one
    /// record written in place.
    pub fn save(&self, dir: &Path) -> Result<(), DriverError> {
        write_record(
            dir,
            &RecordRef {
                format_version: STATE_FORMAT_VERSION,
                lsn: self.position,
                chain: Some(self),
            },
        )
    }

    /// Forget the chain (this database now follows another site's history); `lsn` is the
    /// position the database is at, the reference from now on.
    pub fn clear(dir: &Path, lsn: Lsn) -> Result<(), DriverError> {
        write_record(
            dir,
            &RecordRef {
                format_version: STATE_FORMAT_VERSION,
                lsn,
                chain: None,
            },
        )?;
        remove_shadows(dir, None)
    }
}

/// What `chain.state` holds: the chain (none while the database follows another site) and the
/// reference position.
#[derive(Deserialize)]
struct Record {
    format_version: u32,
    lsn: Lsn,
    chain: Option<ChainState>,
}

#[derive(Serialize)]
struct RecordRef<'a> {
    format_version: u32,
    lsn: Lsn,
    chain: Option<&'a ChainState>,
}

/// The record in `chain.state`, with its path; `None` when the file does not exist.
fn read_record(dir: &Path) -> Option<(PathBuf, Result<Record, String>)> {
    let path = dir.join(STATE_FILE);
    let record = match crate::record::read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => Err(e.to_string()),
        Ok(bytes) => match serde_json::from_slice::<Record>(&bytes) {
            Ok(r) if r.format_version == STATE_FORMAT_VERSION => Ok(r),
            Ok(r) => Err(format!(
                "format version {} (this version reads {STATE_FORMAT_VERSION})",
                r.format_version
            )),
            Err(e) => Err(e.to_string()),
        },
    };
    Some((path, record))
}

fn write_record(dir: &Path, record: &RecordRef<'_>) -> Result<(), DriverError> {
    let path = dir.join(STATE_FILE);
    let written = serde_json::to_vec(record)
        .map_err(|e| DriverError::new(ErrorKind::Io, format!("encoding the chain state: {e}")))
        .and_then(|bytes| {
            crate::record::write(&path, &bytes)
                .map_err(|e| DriverError::io(format!("writing {} durably", path.display()), &e))
        })?;
    if written == crate::record::Written::Replaced {
        // An older version's files: `chain.state` is read first from now on.
        durable::remove_durably(&dir.join(LEGACY_CHAIN_FILE))?;
        durable::remove_durably(&dir.join(LEGACY_REFERENCE_FILE))?;
    }
    Ok(())
}

/// Whether a chain state file is there (usable or not).
pub fn state_exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).exists() || dir.join(LEGACY_CHAIN_FILE).exists()
}

fn remove_shadows(dir: &Path, keep: Option<&Path>) -> Result<(), DriverError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DriverError::io(format!("listing {}", dir.display()), &e)),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("shadow-") && Some(path.as_path()) != keep {
            durable::remove_durably(&path)?;
        }
    }
    Ok(())
}

/// The pages of `new` that differ from `old`: a page counts as changed when it is new (beyond
/// the old page count) or its bytes differ. The lock page is never counted.
pub fn changed_pages(
    old: &File,
    old_image: Image,
    new: &File,
    new_image: Image,
) -> io::Result<PageSet> {
    let mut set = PageSet::default();
    let ps = new_image.page_size;
    if new_image.page_count == 0 {
        return Ok(set);
    }
    let skip = lock_page(ps);
    let comparable = old_image.page_size == ps;
    let mut a = vec![0u8; ps as usize];
    let mut b = vec![0u8; ps as usize];
    for page in 1..=new_image.page_count {
        if page == skip {
            continue;
        }
        let offset = u64::from(page - 1) * u64::from(ps);
        if !comparable || page > old_image.page_count {
            set.insert(page);
            continue;
        }
        old.read_exact_at(&mut a, offset)?;
        new.read_exact_at(&mut b, offset)?;
        if a != b {
            set.insert(page);
        }
    }
    Ok(set)
}

/// The last position this driver knew for the database (after a snapshot or a restore); the
/// reference for widening the 32-bit change counter, and the floor a restarted chain starts
/// above. 0 when none was recorded or it cannot be read.
pub fn load_reference(dir: &Path) -> Lsn {
    #[derive(Deserialize)]
    struct Reference {
        lsn: Lsn,
    }
    if let Some((_, Ok(record))) = read_record(dir) {
        return record.lsn;
    }
    durable::read_small(&dir.join(LEGACY_REFERENCE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Reference>(&b).ok())
        .map(|r| r.lsn)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sets_are_stored_as_ranges() {
        let set: PageSet = [1, 2, 3, 7, 9, 10].into_iter().collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[[1,3],[7,7],[9,10]]");
        assert_eq!(serde_json::from_str::<PageSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<PageSet>("[[5,2]]").is_err());
        assert_eq!(set.within(9, 4096), vec![1, 2, 3, 7, 9]);
        assert_eq!(set.len(), 6);
        assert!(serde_json::from_str::<PageSet>("[[0,3]]").is_err());
    }

    /// Found by reading for the `sqlite_delta` fuzz target: loading expanded every range page
    /// by page, so `[[1,4294967295]]` in a damaged `chain.json` inserted four billion pages.
    #[test]
    fn a_huge_range_costs_one_entry_and_within_stays_bounded_by_the_image() {
        let set: PageSet = serde_json::from_str("[[1,4294967295],[7,9]]").unwrap();
        assert_eq!(set.ranges(), vec![[1, u32::MAX]]);
        assert_eq!(set.len(), u64::from(u32::MAX));
        assert_eq!(set.within(3, 4096), vec![1, 2, 3]);
        assert_eq!(serde_json::to_string(&set).unwrap(), "[[1,4294967295]]");
    }

    fn state_with_shadow(dir: &Path, generation: u64, position: u64) -> ChainState {
        let image = Image {
            page_size: 4096,
            page_count: 2,
            counter: position as u32,
        };
        let state = ChainState::start(generation, Lsn(position), image);
        fs::write(state.shadow_path(dir), vec![0u8; 8192]).unwrap();
        state
    }

    /// An older version's `chain.json` and `lsn.json` are read until the first write, which
    /// records both in `chain.state` and removes them; later writes go in place.
    #[test]
    fn the_state_and_reference_move_from_the_legacy_files_into_one_record() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert_eq!(ChainState::load(dir, "db"), None);
        assert_eq!(load_reference(dir), Lsn(0));
        let old = state_with_shadow(dir, 3, 40);
        fs::write(dir.join(LEGACY_CHAIN_FILE), old.to_json().unwrap()).unwrap();
        fs::write(
            dir.join(LEGACY_REFERENCE_FILE),
            r#"{"format_version":1,"lsn":41}"#,
        )
        .unwrap();
        assert_eq!(ChainState::load(dir, "db"), Some(old.clone()));
        assert_eq!(load_reference(dir), Lsn(41));
        assert!(state_exists(dir));

        let mut next = old.clone();
        next.position = Lsn(45);
        next.log_touched.insert(2);
        next.save(dir).unwrap();
        assert!(!dir.join(LEGACY_CHAIN_FILE).exists() && !dir.join(LEGACY_REFERENCE_FILE).exists());
        assert_eq!(ChainState::load(dir, "db"), Some(next.clone()));
        assert_eq!(load_reference(dir), Lsn(45));
        let len = fs::metadata(dir.join(STATE_FILE)).unwrap().len();
        next.position = Lsn(46);
        next.save(dir).unwrap();
        assert_eq!(fs::metadata(dir.join(STATE_FILE)).unwrap().len(), len);
        assert_eq!(
            ChainState::load(dir, "db").map(|c| c.position),
            Some(Lsn(46))
        );

        // Following another site: no chain, the restored position is the reference.
        ChainState::clear(dir, Lsn(60)).unwrap();
        assert_eq!(ChainState::load(dir, "db"), None);
        assert_eq!(load_reference(dir), Lsn(60));
        assert!(!next.shadow_path(dir).exists());
    }

    /// A damaged record is reported as an unusable state (the chain restarts with a full
    /// backup), never as another state; the legacy files do not come back to life.
    #[test]
    fn a_damaged_record_is_no_state() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let state = state_with_shadow(dir, 1, 7);
        state.save(dir).unwrap();
        fs::write(dir.join(LEGACY_CHAIN_FILE), state.to_json().unwrap()).unwrap();
        fs::write(dir.join(STATE_FILE), vec![0xa5u8; 8192]).unwrap();
        assert_eq!(ChainState::load(dir, "db"), None);
        assert!(state_exists(dir));
        // A record of a future format is refused the same way.
        let future = br#"{"format_version":99,"lsn":7,"chain":null}"#;
        fs::remove_file(dir.join(STATE_FILE)).unwrap();
        crate::record::write(&dir.join(STATE_FILE), future).unwrap();
        assert_eq!(ChainState::load(dir, "db"), None);
    }

    #[test]
    fn ranges_merge_when_they_overlap_or_touch() {
        let mut set = PageSet::default();
        set.insert_range(10, 20);
        set.insert_range(1, 3);
        set.insert_range(4, 9);
        assert_eq!(set.ranges(), vec![[1, 20]]);
        set.insert_range(30, 40);
        set.insert_range(25, 35);
        set.insert_range(u32::MAX, u32::MAX);
        set.insert_range(u32::MAX - 1, u32::MAX);
        assert_eq!(
            set.ranges(),
            vec![[1, 20], [25, 40], [u32::MAX - 1, u32::MAX]]
        );
        assert!(set.contains(27) && !set.contains(21) && !set.contains(0));
    }
}
