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
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub(super) const CHAIN_FILE: &str = "chain.json";
pub(super) const REFERENCE_FILE: &str = "lsn.json";
const STATE_FORMAT_VERSION: u32 = 1;

/// A set of page numbers, stored as inclusive ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct PageSet(pub BTreeSet<u32>);

impl PageSet {
    pub fn extend(&mut self, other: &PageSet) {
        self.0.extend(other.0.iter().copied());
    }

    /// The pages that exist in an image of `page_count` pages, in order, without the lock page.
    pub fn within(&self, page_count: u32, page_size: u32) -> Vec<u32> {
        let skip = lock_page(page_size);
        self.0
            .range(1..=page_count)
            .copied()
            .filter(|p| *p != skip)
            .collect()
    }

    fn ranges(&self) -> Vec<[u32; 2]> {
        let mut out: Vec<[u32; 2]> = Vec::new();
        for &p in &self.0 {
            match out.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(p) => r[1] = p,
                _ => out.push([p, p]),
            }
        }
        out
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
        let mut set = BTreeSet::new();
        for [a, b] in ranges {
            if a > b {
                return Err(serde::de::Error::custom(format!("page range {a}..={b}")));
            }
            set.extend(a..=b);
        }
        Ok(PageSet(set))
    }
}

/// The primary's chain state for one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChainState {
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
        let state: ChainState = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(db = db_name, path = %path.display(), error = %e,
                    "the chain state is garbled; the chain restarts");
                return None;
            }
        };
        let shadow_len = fs::metadata(state.shadow_path(dir)).map(|m| m.len()).ok();
        if state.format_version != STATE_FORMAT_VERSION || shadow_len != Some(state.image().len()) {
            tracing::warn!(db = db_name, path = %path.display(),
                "the chain state's version or shadow copy does not match; the chain restarts");
            return None;
        }
        Some(state)
    }

    /// Make this state current: move `staged_shadow` into place as its shadow, replace
    /// `chain.json` atomically, then remove older shadows.
    pub fn commit(&self, dir: &Path, staged_shadow: &Path) -> Result<(), DriverError> {
        let shadow = self.shadow_path(dir);
        durable::rename_durably(staged_shadow, &shadow)?;
        let json = serde_json::to_vec(self).map_err(|e| {
            DriverError::new(ErrorKind::Io, format!("encoding the chain state: {e}"))
        })?;
        durable::write_atomically(&dir.join(CHAIN_FILE), &json)?;
        remove_shadows(dir, Some(&shadow))
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
pub(super) fn changed_pages(
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
            set.0.insert(page);
            continue;
        }
        old.read_exact_at(&mut a, offset)?;
        new.read_exact_at(&mut b, offset)?;
        if a != b {
            set.0.insert(page);
        }
    }
    Ok(set)
}

/// The last position this driver knew for the database (after a snapshot or a restore); the
/// reference for widening the 32-bit change counter.
pub(super) fn load_reference(dir: &Path) -> Lsn {
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

pub(super) fn store_reference(dir: &Path, lsn: Lsn) -> Result<(), DriverError> {
    let json = format!(
        "{{\"format_version\":{STATE_FORMAT_VERSION},\"lsn\":{}}}",
        lsn.0
    );
    durable::write_atomically(&dir.join(REFERENCE_FILE), json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sets_are_stored_as_ranges() {
        let set = PageSet([1, 2, 3, 7, 9, 10].into_iter().collect());
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[[1,3],[7,7],[9,10]]");
        assert_eq!(serde_json::from_str::<PageSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<PageSet>("[[5,2]]").is_err());
        assert_eq!(set.within(9, 4096), vec![1, 2, 3, 7, 9]);
    }
}
