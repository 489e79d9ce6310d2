//! The engine journal on disk: `<dir>/journal` (the input log) and `<dir>/snapshot` (engine
//! state, bounding replay). The codec is `lifeboat_core::journal`; this file adds paths, fsync
//! and the order of renames.
//!
//! Every record is `(now, Input)`. The engine loop writes each batch ([`JournalStore::write`])
//! and fsyncs it ([`JournalStore::sync`]) before it acts on the first output the batch caused;
//! a batch that caused none (most timer ticks) waits for the next sync, so the journal costs one
//! fsync per batch that does something, not one per input. A snapshot is written to
//! a temporary file, fsynced and renamed; only then is a fresh journal started at the snapshot's
//! `next_seq` (header first, fsynced, renamed). A crash between the two leaves the old journal,
//! whose records before `next_seq` replay skips.
//!
//! Time: the engines need a monotonic `now` that never goes backwards across restarts. The
//! [`EngineClock`] starts at the newest `now` found in the snapshot and journal and adds the
//! monotonic time elapsed since this process started.

use crate::durable::write_durably;
use anyhow::{bail, Context};
use lifeboat_core::journal::{self, Decoded, JournalWriter, Tail};
use lifeboat_core::{Input, Millis};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One journaled input with the engine time it was handled at.
pub type Record = (Millis, Input);

/// What was found on disk at start.
pub struct Recovered<S> {
    /// The snapshot's state, if there was one.
    pub state: Option<S>,
    /// Records after the snapshot, to replay in order.
    pub records: Vec<Record>,
    /// A torn tail that was truncated: where and why (reported at start).
    pub torn: Option<String>,
}

pub struct JournalStore {
    dir: PathBuf,
    file: File,
    writer: JournalWriter,
    buf: Vec<u8>,
    records_since_snapshot: u64,
    /// Records were written since the last fsync.
    unsynced: bool,
    /// Bytes appended since the snapshot (status).
    pub bytes: u64,
}

impl JournalStore {
    pub fn journal_path(dir: &Path) -> PathBuf {
        dir.join("journal")
    }
    pub fn snapshot_path(dir: &Path) -> PathBuf {
        dir.join("snapshot")
    }

    /// Open the journal in `dir` (created when missing): read the snapshot, decode the journal,
    /// truncate a torn tail, and return what to replay. Every error names the file it is about.
    pub fn open<S: DeserializeOwned>(dir: &Path) -> anyhow::Result<(JournalStore, Recovered<S>)> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let snap_path = Self::snapshot_path(dir);
        let (state, next_seq) = match fs::read(&snap_path) {
            Ok(bytes) => {
                let (s, n) = journal::decode_snapshot::<S>(&bytes)
                    .with_context(|| format!("snapshot {}", snap_path.display()))?;
                (Some(s), n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, 0),
            Err(e) => return Err(e).with_context(|| format!("reading {}", snap_path.display())),
        };
        let jpath = Self::journal_path(dir);
        let bytes = match fs::read(&jpath) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", jpath.display())),
        };
        let Some(bytes) = bytes else {
            return Self::fresh(dir, next_seq, state, None);
        };
        let decoded: Decoded<Record> = journal::decode(&bytes)
            .with_context(|| format!("reading journal {}", jpath.display()))?;
        if decoded.base_seq > next_seq {
            bail!(
                "journal {} starts at record {} but the snapshot continues at {}: records are \
                 missing; restore the matching snapshot or reseed this site",
                jpath.display(),
                decoded.base_seq,
                next_seq
            );
        }
        if decoded.next_seq() < next_seq {
            // The snapshot holds every record of this journal (a crash between the snapshot's
            // rename and the fresh journal's, or a torn tail the snapshot covers). Appending
            // here would number new records below the snapshot's `next_seq`, and the next
            // replay would skip them: continue in a fresh journal at the snapshot instead.
            let note = format!(
                "journal {} ends at record {} and the snapshot continues at {next_seq}: every \
                 record is in the snapshot; started a fresh journal",
                jpath.display(),
                decoded.next_seq()
            );
            return Self::fresh(dir, next_seq, state, Some(note));
        }
        let torn = match decoded.tail {
            Tail::Clean => None,
            Tail::Torn { offset, reason } => {
                let truncate = || {
                    let f = OpenOptions::new().write(true).open(&jpath)?;
                    f.set_len(decoded.valid_len as u64)?;
                    f.sync_all()
                };
                truncate()
                    .with_context(|| format!("truncating the torn tail of {}", jpath.display()))?;
                Some(format!(
                    "journal {}: torn tail at byte {offset} ({reason}); truncated to {} bytes, \
                     {} intact record(s) kept",
                    jpath.display(),
                    decoded.valid_len,
                    decoded.records.len()
                ))
            }
        };
        let writer = JournalWriter::resume(&decoded);
        let records: Vec<Record> = decoded
            .records
            .into_iter()
            .filter(|(seq, _)| *seq >= next_seq)
            .map(|(_, r)| r)
            .collect();
        let file = OpenOptions::new()
            .append(true)
            .open(&jpath)
            .with_context(|| format!("opening {}", jpath.display()))?;
        Ok((
            JournalStore {
                dir: dir.to_path_buf(),
                file,
                writer,
                buf: Vec::new(),
                records_since_snapshot: records.len() as u64,
                // Replayed records may have reached only the page cache before a crash: they are
                // synced before the first new effect.
                unsynced: true,
                bytes: decoded.valid_len as u64,
            },
            Recovered {
                state,
                records,
                torn,
            },
        ))
    }

    /// A new, empty journal continuing at `next_seq` (nothing to replay after the snapshot).
    fn fresh<S>(
        dir: &Path,
        next_seq: u64,
        state: Option<S>,
        torn: Option<String>,
    ) -> anyhow::Result<(JournalStore, Recovered<S>)> {
        let jpath = Self::journal_path(dir);
        write_durably(&dir.join("journal"), &journal::encode_header(next_seq))
            .with_context(|| format!("creating {}", jpath.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&jpath)
            .with_context(|| format!("opening {}", jpath.display()))?;
        Ok((
            JournalStore {
                dir: dir.to_path_buf(),
                file,
                writer: JournalWriter::new(next_seq),
                buf: Vec::new(),
                records_since_snapshot: 0,
                unsynced: false,
                bytes: 0,
            },
            Recovered {
                state,
                records: Vec::new(),
                torn,
            },
        ))
    }

    /// Append records and fsync them. Returns once they are durable.
    pub fn append(&mut self, records: &[Record]) -> anyhow::Result<()> {
        self.write(records)?;
        self.sync()
    }

    /// fsync what [`Self::write`] appended since the last sync (nothing to do when nothing was).
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        self.file.sync_data().with_context(|| {
            format!(
                "syncing {} (check the disk)",
                Self::journal_path(&self.dir).display()
            )
        })?;
        self.unsynced = false;
        Ok(())
    }

    /// Append records without waiting for the disk: they are durable after the next
    /// [`Self::sync`] (or snapshot). The engine loop syncs before it acts on any output, so an
    /// unsynced tail lost in a crash held only inputs nobody outside saw an effect of.
    pub fn write(&mut self, records: &[Record]) -> anyhow::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        // Record number u64::MAX is never written (the decoder refuses it, and the writer's count
        // would overflow): only a damaged snapshot or journal gets a store this far.
        if self
            .writer
            .next_seq()
            .checked_add(records.len() as u64)
            .is_none()
        {
            bail!(
                "journal {} is at record {}, the end of the sequence space: its snapshot or \
                 journal was damaged; move both aside and reseed this site",
                Self::journal_path(&self.dir).display(),
                self.writer.next_seq()
            );
        }
        self.buf.clear();
        for r in records {
            self.writer.append(r, &mut self.buf)?;
        }
        self.unsynced = true;
        self.file.write_all(&self.buf).with_context(|| {
            format!(
                "appending to {} (check free space)",
                Self::journal_path(&self.dir).display()
            )
        })?;
        self.records_since_snapshot += records.len() as u64;
        self.bytes += self.buf.len() as u64;
        Ok(())
    }

    pub fn records_since_snapshot(&self) -> u64 {
        self.records_since_snapshot
    }

    /// Write a snapshot of `state` and start a fresh journal after it.
    pub fn snapshot<S: Serialize>(&mut self, state: &S) -> anyhow::Result<()> {
        let bytes = self.encode_snapshot(state)?;
        self.write_snapshot(&bytes)
    }

    /// The bytes of a snapshot of `state` taken now (cheap, in memory: the engine loop encodes
    /// on its own thread and writes with [`Self::write_snapshot`] on a blocking one).
    pub fn encode_snapshot<S: Serialize>(&self, state: &S) -> anyhow::Result<Vec<u8>> {
        Ok(journal::encode_snapshot(state, self.writer.next_seq())?)
    }

    /// Write snapshot bytes from [`Self::encode_snapshot`] (no record appended in between) and
    /// start a fresh journal after them.
    pub fn write_snapshot(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let next = self.writer.next_seq();
        write_durably(&self.dir.join("snapshot"), bytes).context("writing the snapshot")?;
        crate::crash::point("snapshot_before_journal");
        write_durably(&self.dir.join("journal"), &journal::encode_header(next))
            .context("starting a new journal")?;
        self.file = OpenOptions::new()
            .append(true)
            .open(Self::journal_path(&self.dir))?;
        self.writer = JournalWriter::new(next);
        // The snapshot holds the state of every record written so far.
        self.unsynced = false;
        self.records_since_snapshot = 0;
        self.bytes = 0;
        Ok(())
    }

    /// What `/status` shows of the journal.
    pub fn stats(&self) -> JournalStats {
        JournalStats {
            records_since_snapshot: self.records_since_snapshot,
            bytes: self.bytes,
        }
    }
}

/// The journal's size since its snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalStats {
    pub records_since_snapshot: u64,
    pub bytes: u64,
}

/// The engines' monotonic time: the newest journaled `now` plus the time elapsed since this
/// process started. Never goes backwards, also across restarts.
#[derive(Clone, Debug)]
pub struct EngineClock {
    base: Millis,
    started: Instant,
}

impl EngineClock {
    pub fn new(base: Millis) -> Self {
        EngineClock {
            base,
            started: Instant::now(),
        }
    }
    pub fn now(&self) -> Millis {
        self.base + self.started.elapsed().as_millis() as Millis
    }
    /// How long until engine time `at`.
    pub fn until(&self, at: Millis) -> std::time::Duration {
        std::time::Duration::from_millis(at.saturating_sub(self.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_truncated_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, rec) = JournalStore::open::<u64>(dir.path()).unwrap();
        assert!(rec.state.is_none() && rec.records.is_empty());
        j.append(&[(5, Input::Tick), (7, Input::Restarted)])
            .unwrap();
        drop(j);
        // A torn append: half a record.
        let mut f = OpenOptions::new()
            .append(true)
            .open(JournalStore::journal_path(dir.path()))
            .unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut j, rec) = JournalStore::open::<u64>(dir.path()).unwrap();
        assert_eq!(rec.records, vec![(5, Input::Tick), (7, Input::Restarted)]);
        assert!(rec.torn.unwrap().contains("torn tail"));
        j.append(&[(9, Input::Tick)]).unwrap();
        drop(j);
        let (_, rec) = JournalStore::open::<u64>(dir.path()).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert!(rec.torn.is_none());
    }

    #[test]
    fn a_snapshot_bounds_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = JournalStore::open::<u64>(dir.path()).unwrap();
        j.append(&[(1, Input::Tick), (2, Input::Tick)]).unwrap();
        j.snapshot(&42u64).unwrap();
        j.append(&[(3, Input::Tick)]).unwrap();
        drop(j);
        let (_, rec) = JournalStore::open::<u64>(dir.path()).unwrap();
        assert_eq!(rec.state, Some(42));
        assert_eq!(rec.records, vec![(3, Input::Tick)]);
    }

    #[test]
    fn a_site_engine_snapshot_and_replay_rebuild_the_same_state() {
        use lifeboat_core::engine::{SiteEngine, SiteState};
        use lifeboat_core::{Config, SiteId};
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::default();
        let mut e = SiteEngine::new(cfg.clone(), SiteId(0));
        let (mut j, _) = JournalStore::open::<SiteState>(dir.path()).unwrap();
        let inputs = [(10, Input::Tick), (20, Input::Tick), (3_000, Input::Tick)];
        for (i, (now, input)) in inputs.iter().enumerate() {
            j.append(&[(*now, input.clone())]).unwrap();
            e.handle(*now, input.clone());
            while e.poll_output().is_some() {}
            if i == 1 {
                j.snapshot(e.state()).unwrap();
            }
        }
        drop(j);
        let (_, rec) = JournalStore::open::<SiteState>(dir.path()).unwrap();
        let mut again = SiteEngine::from_state(cfg, SiteId(0), rec.state.unwrap());
        for (now, input) in rec.records {
            again.handle(now, input);
        }
        assert_eq!(again.state(), e.state());
    }

    #[test]
    fn the_clock_starts_at_its_base() {
        let c = EngineClock::new(1_000);
        assert!(c.now() >= 1_000);
    }
}
