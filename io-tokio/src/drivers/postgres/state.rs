//! The driver's memory of one database (`<spool>/<db>/state.json`): what it restored, what it
//! published, and the epoch ↔ timeline pairs it saw.

use super::spool;
use crate::drivers::{DriverError, ErrorKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The state file format this build writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;
/// Published segments remembered (to drop a segment PostgreSQL pushed twice).
const PUBLISHED_KEPT: usize = 4096;

/// A segment artifact published into the outbox.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublishedSegment {
    pub timeline: u32,
    pub segno: u64,
    pub lsn_end: u64,
}

/// An epoch this site saw the database at, and PostgreSQL's timeline then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochTimeline {
    pub epoch: u64,
    pub timeline: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgState {
    pub format_version: u32,
    /// Secondary: the position the last successful restore reached (`None`: no chain yet).
    pub restored_to: Option<u64>,
    pub published: Vec<PublishedSegment>,
    pub timelines: Vec<EpochTimeline>,
    #[serde(skip)]
    pub path: PathBuf,
}

impl PgState {
    /// Load `<spool>/state.json`, or start empty.
    pub fn load(spool_dir: &Path) -> Result<PgState, DriverError> {
        let path = spool_dir.join("state.json");
        let mut st = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<PgState>(&bytes).map_err(|e| {
                DriverError::new(
                    ErrorKind::Config,
                    format!(
                        "the postgres driver's state {} is not valid ({e}); move it away to \
                         start over (the next restore then trusts the server's replay position)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PgState::default(),
            Err(e) => return Err(DriverError::io(format!("reading {}", path.display()), &e)),
        };
        st.format_version = STATE_FORMAT_VERSION;
        st.path = path;
        Ok(st)
    }

    pub fn save(&self) -> Result<(), DriverError> {
        let bytes = serde_json::to_vec_pretty(self).expect("state encodes");
        spool::write_durably(&self.path, &bytes)
            .map_err(|e| DriverError::io(format!("writing {}", self.path.display()), &e))
    }

    pub fn was_published(&self, s: &PublishedSegment) -> bool {
        self.published.iter().any(|p| p == s)
    }

    pub fn remember_published(&mut self, s: PublishedSegment) {
        self.published.push(s);
        if self.published.len() > PUBLISHED_KEPT {
            let drop = self.published.len() - PUBLISHED_KEPT;
            self.published.drain(..drop);
        }
    }

    /// Record that `epoch` runs on `timeline` (once per pair).
    pub fn saw(&mut self, epoch: u64, timeline: u32) -> bool {
        let pair = EpochTimeline { epoch, timeline };
        if self.timelines.last() == Some(&pair) || self.timelines.contains(&pair) {
            return false;
        }
        self.timelines.push(pair);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::PgState;

    #[test]
    fn a_state_file_with_fields_of_an_earlier_version_still_reads() {
        // `last_log_second` (creation seconds bumped to keep names apart) is gone: every
        // directory now finds a free name itself, and a segment keeps its true time.
        let old: PgState = serde_json::from_str(
            r#"{"format_version":1,"restored_to":7,"published":[],"timelines":[],"last_log_second":5}"#,
        )
        .unwrap();
        assert_eq!(old.restored_to, Some(7));
    }
}
