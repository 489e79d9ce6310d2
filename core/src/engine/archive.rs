//! The point-in-time archive at the recovery site: every accepted artifact is copied into it
//! (`Command::Archive`, confirmed by `Input::Archived`), and retention
//! ([`crate::archive::expired`]) decides what leaves it (`Command::ArchiveRemove`). The inbox
//! keeps an artifact until its copy is archived (see `prune`), so nothing accepted skips the
//! archive; a copy that fails raises `archive_failed` and is tried again.
//!
//! Crash safety: the index lives in the engine state (journaled inputs, snapshots). An
//! `Archive` whose `Archived` was lost is issued again after a restart and the adapter's copy is
//! idempotent; an `ArchiveRemove` the adapter did not finish leaves files the index no longer
//! names (disk only, never a point that claims more than it has).

use super::texts;
use super::SiteEngine;
use crate::alert::{AlertKind, Severity, Subject};
use crate::artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
use crate::defaults::{ARCHIVE_RETAIN_EVERY, ARCHIVE_RETRY_MS};
use crate::ids::{DbId, Millis};
use crate::protocol::Command;
use serde::{Deserialize, Serialize};

/// One database's archive, as the core knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveDb {
    /// What the adapter reported archived, sorted by key.
    pub entries: Vec<ArtifactMeta>,
    /// Accepted and not archived yet, with when to try again (`None`: a copy is under way).
    pub waiting: Vec<(ArtifactMeta, Option<Millis>)>,
    /// When retention last ran.
    pub retained_at: Millis,
    /// A full was archived since retention last ran (a new full may free a whole chain).
    pub full_since: bool,
    /// Bytes of `entries`.
    pub bytes: u64,
}

impl ArchiveDb {
    fn has(&self, key: &ArtifactKey) -> bool {
        self.entries.binary_search_by_key(key, |m| m.key).is_ok()
            || self.waiting.iter().any(|(m, _)| m.key == *key)
    }

    /// The keys the inbox must keep until they are archived.
    pub fn waiting_keys(&self) -> impl Iterator<Item = ArtifactKey> + '_ {
        self.waiting.iter().map(|(m, _)| m.key)
    }
}

impl SiteEngine {
    /// Secondary: an artifact was accepted into the inbox; it goes into the archive too.
    pub(super) fn archive_accepted(&mut self, meta: ArtifactMeta) {
        if self.cfg.archive.is_none() {
            return;
        }
        let Some(a) = self.st.archive.get_mut(meta.key.db.0 as usize) else {
            return;
        };
        if a.has(&meta.key) {
            return;
        }
        a.waiting.push((meta, None));
        self.command(Command::Archive { artifact: meta });
    }

    /// `Input::Archived`: the copy of `key` is durable, or failed.
    pub(super) fn archived(&mut self, now: Millis, key: ArtifactKey, error: Option<String>) {
        if !self.valid_db(key.db) {
            return;
        }
        let Some(a) = self.st.archive.get_mut(key.db.0 as usize) else {
            return;
        };
        let Some(i) = a.waiting.iter().position(|(m, _)| m.key == key) else {
            // Reported twice (a copy issued again after a restart): nothing more to do.
            return;
        };
        let subject = Subject::Artifact(key);
        match error {
            None => {
                let (meta, _) = a.waiting.remove(i);
                if let Err(at) = a.entries.binary_search_by_key(&key, |m| m.key) {
                    a.entries.insert(at, meta);
                    a.bytes = a.bytes.saturating_add(meta.size);
                }
                a.full_since |= key.kind == ArtifactKind::Full;
                let retain = a.full_since;
                self.clear(now, AlertKind::ArchiveFailed, Some(key.db), subject);
                if retain {
                    self.retain(now, key.db);
                }
            }
            Some(why) => {
                let meta = a.waiting[i].0;
                a.waiting[i].1 = Some(now.saturating_add(ARCHIVE_RETRY_MS));
                let text = texts::archive_failed(
                    self.cfg.site_name(self.me),
                    self.db_name(key.db),
                    &self.label(&meta),
                    &why,
                );
                self.raise(
                    now,
                    AlertKind::ArchiveFailed,
                    Some(key.db),
                    subject,
                    Severity::Failure,
                    true,
                    text,
                );
            }
        }
    }

    /// On the monitor's tick: copies that failed are tried again; retention runs every
    /// [`ARCHIVE_RETAIN_EVERY`].
    pub(super) fn archive_tick(&mut self, now: Millis) {
        if self.cfg.archive.is_none() {
            return;
        }
        for db in 0..self.st.archive.len() {
            let mut again = Vec::new();
            for (m, retry_at) in &mut self.st.archive[db].waiting {
                if retry_at.is_some_and(|t| t <= now) {
                    *retry_at = None;
                    again.push(*m);
                }
            }
            for artifact in again {
                self.command(Command::Archive { artifact });
            }
            let a = &self.st.archive[db];
            if a.full_since || now.saturating_sub(a.retained_at) >= ARCHIVE_RETAIN_EVERY {
                self.retain(now, DbId(db as u32));
            }
        }
    }

    /// After a restart: every copy not confirmed is issued again (the adapter's copy is
    /// idempotent).
    pub(super) fn archive_restarted(&mut self) {
        let mut again = Vec::new();
        for a in &mut self.st.archive {
            for (m, retry_at) in &mut a.waiting {
                *retry_at = None;
                again.push(*m);
            }
        }
        for artifact in again {
            self.command(Command::Archive { artifact });
        }
    }

    /// Retention of one database's archive: remove what no kept point needs.
    fn retain(&mut self, now: Millis, db: DbId) {
        let Some(policy) = self.cfg.archive else {
            return;
        };
        let Some(a) = self.st.archive.get_mut(db.0 as usize) else {
            return;
        };
        a.retained_at = now;
        a.full_since = false;
        let mut gone = crate::archive::expired(&a.entries, &policy);
        if self.cfg.planted("archive_keeps_window_only") {
            let newest = a.entries.iter().map(|m| m.created_utc.0).max().unwrap_or(0);
            let window = newest.saturating_sub(policy.keep_ms as i64);
            gone = a
                .entries
                .iter()
                .filter(|m| m.created_utc.0 < window)
                .map(|m| m.key)
                .collect();
        }
        if gone.is_empty() {
            return;
        }
        let mut freed = 0u64;
        a.entries.retain(|m| {
            let keep = gone.binary_search(&m.key).is_err();
            if !keep {
                freed = freed.saturating_add(m.size);
            }
            keep
        });
        a.bytes = a.bytes.saturating_sub(freed);
        self.command(Command::ArchiveRemove { db, keys: gone });
    }
}
