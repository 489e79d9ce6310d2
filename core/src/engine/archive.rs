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
    /// When the last scheduled verification was issued, and how many were.
    pub verified_at: Option<Millis>,
    pub verifications: u64,
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
            self.verify_due(now, DbId(db as u32));
        }
    }

    /// The scheduled verification (`verify_every_ms`): a kept point chosen at random (by a
    /// counter mixed with the time: the same inputs choose the same point) is restored from
    /// the archive into scratch and checked. One at a time per database; the first one
    /// `verify_every_ms` after the archive's first entry.
    fn verify_due(&mut self, now: Millis, db: DbId) {
        let Some(policy) = self.cfg.archive else {
            return;
        };
        let every = policy.verify_every_ms;
        let running = self
            .st
            .ops
            .values()
            .any(|e| matches!(e.purpose, super::OpPurpose::ArchiveDrill { db: x } if x == db));
        let Some(a) = self.st.archive.get_mut(db.0 as usize) else {
            return;
        };
        if every == 0 || running || a.entries.is_empty() {
            return;
        }
        let Some(last) = a.verified_at else {
            a.verified_at = Some(now);
            return;
        };
        if now.saturating_sub(last) < every {
            return;
        }
        a.verified_at = Some(now);
        a.verifications += 1;
        let points = crate::archive::points(&a.entries);
        let kept = crate::archive::kept_points(&points, &a.entries, &policy);
        if kept.is_empty() {
            return;
        }
        let pick = mix(a.verifications ^ now.rotate_left(17)) as usize % kept.len();
        let p = &points.all()[kept[pick]];
        let (upto, chain) = (p.lsn, points.chain(p));
        self.issue(now, super::OpPurpose::ArchiveDrill { db }, |op| {
            Command::ArchiveDrill {
                op,
                db,
                upto,
                chain,
            }
        });
    }

    /// A scheduled verification of the archive finished: a drill report, and `archive_failed`
    /// (about the archive as a whole) raised on failure, cleared on success.
    pub(super) fn archive_drill_done(
        &mut self,
        now: Millis,
        db: DbId,
        cmd: &Command,
        result: Result<(), crate::protocol::Failure>,
    ) {
        let (upto, when) = match cmd {
            Command::ArchiveDrill { upto, chain, .. } => (
                *upto,
                chain
                    .last()
                    .map(|m| m.created_utc.to_string())
                    .unwrap_or_default(),
            ),
            _ => return,
        };
        match result {
            Ok(()) => {
                self.clear(now, AlertKind::ArchiveFailed, Some(db), Subject::None);
                self.report(crate::report::Report::Drill {
                    db,
                    upto,
                    ok: true,
                    message: format!("archive point {when} restored and checked"),
                });
            }
            Err(f) => {
                let text = texts::archive_verify_failed(
                    self.cfg.site_name(self.me),
                    self.db_name(db),
                    &when,
                    upto.0,
                    &f.message,
                );
                self.raise(
                    now,
                    AlertKind::ArchiveFailed,
                    Some(db),
                    Subject::None,
                    Severity::Failure,
                    false,
                    text,
                );
                self.report(crate::report::Report::Drill {
                    db,
                    upto,
                    ok: false,
                    message: format!("archive point {when}: {}", f.message),
                });
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

/// A 64-bit mix (SplitMix64's finalizer): the verification's "random" choice, deterministic.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
