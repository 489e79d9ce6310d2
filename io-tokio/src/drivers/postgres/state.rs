//! The driver's memory of one database (`<spool>/<db>/state.rec`): what it restored, what it
//! published, and the epoch ↔ timeline pairs it saw.

use crate::drivers::{DriverError, ErrorKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The state file format this build writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;
/// The state, a record replaced in place (`crate::record`).
const STATE_FILE: &str = "state.rec";
/// Where builds before the record kept it (read once, when no record exists yet).
const LEGACY_STATE_FILE: &str = "state.json";
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
    /// Load `<spool>/state.rec`; else the `state.json` an earlier build wrote; else start
    /// empty.
    pub fn load(spool_dir: &Path) -> Result<PgState, DriverError> {
        let path = spool_dir.join(STATE_FILE);
        let invalid = |p: &Path, e: &dyn std::fmt::Display| {
            DriverError::new(
                ErrorKind::Config,
                format!(
                    "the postgres driver's state {} is not valid ({e}); move it away to start \
                     over (the next restore then trusts the server's replay position)",
                    p.display()
                ),
            )
        };
        let mut st = match crate::record::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<PgState>(&bytes).map_err(|e| invalid(&path, &e))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let legacy = spool_dir.join(LEGACY_STATE_FILE);
                match std::fs::read(&legacy) {
                    Ok(bytes) => serde_json::from_slice::<PgState>(&bytes)
                        .map_err(|e| invalid(&legacy, &e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => PgState::default(),
                    Err(e) => {
                        return Err(DriverError::io(format!("reading {}", legacy.display()), &e))
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(invalid(&path, &e))
            }
            Err(e) => return Err(DriverError::io(format!("reading {}", path.display()), &e)),
        };
        st.format_version = STATE_FORMAT_VERSION;
        st.path = path;
        Ok(st)
    }

    /// Durably, in place: one positioned write and one `fdatasync` (`crate::record`). A standby
    /// saves its restored position after every segment, with PostgreSQL waiting for the next
    /// one; a whole-file replacement cost two fsyncs there.
    pub fn save(&self) -> Result<(), DriverError> {
        let bytes = serde_json::to_vec(self).expect("state encodes");
        crate::record::write(&self.path, &bytes)
            .map_err(|e| DriverError::io(format!("writing {}", self.path.display()), &e))?;
        // The record wins over an earlier build's file from now on; removing that one is tidy,
        // not needed.
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_file(dir.join(LEGACY_STATE_FILE));
        }
        Ok(())
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
    fn the_state_is_a_record_saved_in_place_and_an_earlier_json_file_still_loads() {
        let d = tempfile::tempdir().unwrap();
        // An earlier build's file, then the first save: the record takes over.
        std::fs::write(
            d.path().join("state.json"),
            r#"{"format_version":1,"restored_to":7,"published":[],"timelines":[]}"#,
        )
        .unwrap();
        let mut st = PgState::load(d.path()).unwrap();
        assert_eq!(st.restored_to, Some(7));
        st.restored_to = Some(9);
        st.save().unwrap();
        assert!(!d.path().join("state.json").exists());
        let rec = d.path().join("state.rec");
        let len = std::fs::metadata(&rec).unwrap().len();
        for at in 10..20 {
            st.restored_to = Some(at);
            st.save().unwrap();
            assert_eq!(PgState::load(d.path()).unwrap().restored_to, Some(at));
        }
        assert_eq!(
            std::fs::metadata(&rec).unwrap().len(),
            len,
            "saved in place"
        );
        // Both slots damaged: a clear error naming the file, not an empty state.
        std::fs::write(&rec, vec![0xAB; len as usize]).unwrap();
        let e = PgState::load(d.path()).unwrap_err();
        assert!(
            e.message.contains("state.rec") && e.message.contains("move it away"),
            "{e}"
        );
    }

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
