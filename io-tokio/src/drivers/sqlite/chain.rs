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
//! Files in the database's state directory: `chain.json` (this state) names the shadow
//! `shadow-<generation>.db` it belongs to. A commit renames the new shadow into place under a
//! new generation, then replaces `chain.json` atomically; a crash anywhere leaves a state that
//! names a complete shadow. Artifacts are published before the commit, so a crash in between
//! only makes the next artifact overlap the last one, which the chain rule accepts.

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

pub const CHAIN_FILE: &str = "chain.json";
pub const REFERENCE_FILE: &str = "lsn.json";
const STATE_FORMAT_VERSION: u32 = 1;

/// A set of page numbers, kept (and stored) as disjoint inclusive ranges, so its size follows
/// the number of ranges, not of pages: a `chain.json` range `[1, 4294967295]` costs one entry,
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
        let path = dir.join(CHAIN_FILE);
        let bytes = match durable::read_small(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(db = db_name, path = %path.display(), error = %e,
                    "cannot read the chain state; the chain restarts");
                return None;
            }
        };
        let state = match ChainState::parse(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(db = db_name, path = %path.display(), error = %e,
                    "the chain state is garbled; the chain restarts");
                return None;
            }
        };
        let shadow_len = fs::metadata(state.shadow_path(dir)).map(|m| m.len()).ok();
        // A WAL capture that stopped while it updated the shadow in place (its page 1 says
        // another position) may have resized it: the next capture repairs or replaces it.
        let fits = shadow_len == Some(state.image().len())
            || (state.wal_mode
                && shadow_len.is_some()
                && super::capture::shadow_suspect(dir, &state));
        if state.format_version != STATE_FORMAT_VERSION || !fits {
            tracing::warn!(db = db_name, path = %path.display(),
                "the chain state's version or shadow copy does not match; the chain restarts");
            return None;
        }
        Some(state)
    }

    /// Decode `chain.json`'s bytes (no check against the shadow copy).
    pub fn parse(bytes: &[u8]) -> Result<ChainState, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The bytes of `chain.json` for this state.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Make this state current: move `staged_shadow` into place as its shadow, replace
    /// `chain.json` atomically, then remove older shadows.
    pub fn commit(&self, dir: &Path, staged_shadow: &Path) -> Result<(), DriverError> {
        let shadow = self.shadow_path(dir);
        durable::rename_durably(staged_shadow, &shadow)?;
        self.save(dir)?;
        remove_shadows(dir, Some(&shadow))
    }

    /// Record this state (its shadow already in place): replace `chain.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), DriverError> {
        durable::write_atomically(&dir.join(CHAIN_FILE), &self.encoded()?)
    }

    fn encoded(&self) -> Result<Vec<u8>, DriverError> {
        self.to_json()
            .map_err(|e| DriverError::new(ErrorKind::Io, format!("encoding the chain state: {e}")))
    }

    /// Record this state and its position as the reference (`lsn.json`) together: both files
    /// replaced with one directory fsync. A crash may keep either one old: an old `chain.json`
    /// reads its frames again (its shadow says it is behind, see `capture.rs`), a reference
    /// behind the chain only lowers the floor a restarted chain starts above, which the chain's
    /// own position raises again.
    pub fn save_with_reference(&self, dir: &Path) -> Result<(), DriverError> {
        let json = self.encoded()?;
        let (chain, reference) = (dir.join(CHAIN_FILE), dir.join(REFERENCE_FILE));
        let lsn = reference_json(self.position);
        crate::durable::write_all_durably(&[(&chain, &json), (&reference, lsn.as_bytes())]).map_err(
            |e| {
                DriverError::io(
                    format!(
                        "writing {} and {} durably",
                        chain.display(),
                        reference.display()
                    ),
                    &e,
                )
            },
        )
    }

    /// Forget the chain (this database now follows another site's history).
    pub fn clear(dir: &Path) -> Result<(), DriverError> {
        durable::remove_durably(&dir.join(CHAIN_FILE))?;
        remove_shadows(dir, None)
    }
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
/// reference for widening the 32-bit change counter.
pub fn load_reference(dir: &Path) -> Lsn {
    #[derive(Deserialize)]
    struct Reference {
        lsn: Lsn,
    }
    durable::read_small(&dir.join(REFERENCE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Reference>(&b).ok())
        .map(|r| r.lsn)
        .unwrap_or_default()
}

pub fn store_reference(dir: &Path, lsn: Lsn) -> Result<(), DriverError> {
    durable::write_atomically(&dir.join(REFERENCE_FILE), reference_json(lsn).as_bytes())
}

fn reference_json(lsn: Lsn) -> String {
    format!(
        "{{\"format_version\":{STATE_FORMAT_VERSION},\"lsn\":{}}}",
        lsn.0
    )
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
