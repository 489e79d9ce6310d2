//! The secondary's flow: receive -> verify -> order into the chain -> restore one at a time per
//! database, with retries, bypass of failed artifacts, gaps and reseeds.

use super::chain::{Gap, Next, Seen};
use super::role::{ProcKind, Step};
use super::texts;
use super::{OpPurpose, Role, SiteEngine, Timer};
use crate::alert::{AlertKind, Severity, Subject};
use crate::artifact::{ArtifactKind, ArtifactMeta};
use crate::ids::{Checksum, DbId, Lsn, Millis, OpId, SiteId, MINUTE};
use crate::protocol::{Command, Failure, Message, Peer};
use crate::report::Report;

impl SiteEngine {
    /// Whether this site restores what it receives.
    pub(super) fn restores(&self) -> bool {
        matches!(
            self.st.role,
            Role::Secondary | Role::Promoting | Role::SwitchoverTarget | Role::Rebuilding
        )
    }

    pub(super) fn received(
        &mut self,
        now: Millis,
        meta: ArtifactMeta,
        computed: Checksum,
        from: SiteId,
    ) {
        let db = meta.key.db;
        if !self.valid_db(db) {
            return self.reject(now, "received artifact", format!("unknown database {db}"));
        }
        if let Err(why) = meta.check() {
            self.command(Command::Quarantine {
                artifact: meta,
                reason: format!("malformed manifest: {why}"),
            });
            return self.reject(
                now,
                "received artifact",
                format!("malformed manifest: {why}"),
            );
        }
        if computed != meta.checksum && !self.cfg.planted("restore_unverified") {
            return self.checksum_mismatch(now, meta, computed, from);
        }
        if meta.key.epoch == self.st.epoch && self.st.holder != from {
            // Only the holder of an epoch writes its artifacts: this one is forged or misrouted.
            self.send(Peer::Site(from), Message::Ack { key: meta.key });
            return self.foreign_artifact(now, meta, from);
        }
        if meta.key.epoch < self.st.epoch
            && self.st.dbs[db.0 as usize]
                .drill_chain
                .iter()
                .any(|m| m.key == meta.key)
        {
            // Another copy of an artifact restored here before the epoch changed (its ack was
            // lost): the copy here is part of the drill chain, so nothing is set aside.
            self.send(Peer::Site(from), Message::Ack { key: meta.key });
            return;
        }
        if meta.key.epoch < self.st.epoch && !self.cfg.planted("accept_stale_epoch") {
            // Durable here, so acknowledge it; but it is from an older epoch: never restore it.
            self.send(Peer::Site(from), Message::Ack { key: meta.key });
            return self.stale_artifact(now, meta);
        }
        if meta.key.epoch > self.st.epoch {
            self.learn_epoch(now, meta.key.epoch, from);
        }
        let name_subject = Subject::Artifact(meta.key);
        self.clear(now, AlertKind::ChecksumMismatch, Some(db), name_subject);
        self.send(Peer::Site(from), Message::Ack { key: meta.key });
        self.st.peer.last_heard = Some(now);
        self.archive_accepted(meta);

        // The database's state is usually not in the cache: every read comes first and no
        // branch depends on one before all are issued, so the lines arrive together.
        let d = &mut self.st.dbs[db.0 as usize];
        let newest = d
            .last_backup
            .is_none_or(|b| b.created_utc <= meta.created_utc);
        d.known_produced = d.known_produced.max(meta.key.lsn_end);
        d.last_copy = Some(Seen::of(&meta, now));
        if meta.key.kind == ArtifactKind::Log {
            d.last_log_at = now;
        }
        if newest {
            d.last_backup = d.last_copy;
        }
        if meta.key.kind == ArtifactKind::Log {
            self.clear(now, AlertKind::NoNewLogs, Some(db), Subject::None);
        }
        let d = &mut self.st.dbs[db.0 as usize];
        if meta.key.kind == ArtifactKind::Full
            && d.retained_full
                .as_deref()
                .is_none_or(|f| f.key.lsn_end < meta.key.lsn_end)
        {
            d.retained_full = Some(Box::new(meta));
            match d.position {
                // No drill chain to keep (the copy moved without restores): what ends before
                // both the position and the new full is not needed.
                Some(p) if d.drill_chain.is_empty() => {
                    self.prune(db, p.min(meta.key.lsn_end));
                }
                // The position has passed it already: the drill chain moves to it.
                Some(_) => self.drill_rebase(db),
                // Otherwise it waits until the position passes it (restore_done).
                None => {}
            }
        }
        let d = &mut self.st.dbs[db.0 as usize];
        if d.covers(&meta) {
            return;
        }
        d.insert(meta, now);
        self.pump(now, db);
    }

    fn checksum_mismatch(
        &mut self,
        now: Millis,
        meta: ArtifactMeta,
        computed: Checksum,
        from: SiteId,
    ) {
        let db = meta.key.db;
        let d = &mut self.st.dbs[db.0 as usize];
        if d.covers(&meta) {
            // A verified copy is here, or the position is past it (the primary re-shipped after a
            // lost ack): a resend would go unanswered and its alert would never clear. Keep the
            // bad copy aside and let the primary forget the artifact.
            self.command(Command::Quarantine {
                artifact: meta,
                reason: format!(
                    "checksum mismatch on a duplicate: manifest {} computed {}",
                    meta.checksum, computed
                ),
            });
            self.send(Peer::Site(from), Message::Ack { key: meta.key });
            return;
        }
        d.recopies = d.recopies.saturating_add(1);
        let recopies = d.recopies;
        self.command(Command::Quarantine {
            artifact: meta,
            reason: format!(
                "checksum mismatch: manifest {} computed {}",
                meta.checksum, computed
            ),
        });
        self.send(Peer::Site(from), Message::Resend { key: meta.key });
        let text = texts::checksum_mismatch(
            self.db_name(db),
            &self.label(&meta),
            meta.checksum,
            computed,
            recopies,
        );
        self.raise(
            now,
            AlertKind::ChecksumMismatch,
            Some(db),
            Subject::Artifact(meta.key),
            Severity::Warning,
            false,
            text,
        );
    }

    /// An artifact from an epoch older than the current one: kept, never restored, alerted.
    pub(super) fn stale_artifact(&mut self, now: Millis, meta: ArtifactMeta) {
        self.st.quarantined += 1;
        self.command(Command::Quarantine {
            artifact: meta,
            reason: format!("stale epoch {} (current {})", meta.key.epoch, self.st.epoch),
        });
        let text = texts::stale_epoch(
            self.db_name(meta.key.db),
            &self.label(&meta),
            meta.key.epoch,
            self.st.epoch,
        );
        let db = meta.key.db;
        self.raise(
            now,
            AlertKind::StaleEpochArtifact,
            Some(db),
            Subject::None,
            Severity::Warning,
            false,
            text,
        );
    }

    /// An artifact of the current epoch from a site that does not hold it: set aside (kept for
    /// the operator, never restored), and said as a critical alert.
    fn foreign_artifact(&mut self, now: Millis, meta: ArtifactMeta, from: SiteId) {
        self.st.quarantined += 1;
        let holder = self.cfg.site_name(self.st.holder).to_string();
        self.command(Command::Quarantine {
            artifact: meta,
            reason: format!(
                "epoch {} is held by site {holder}, not by the sender",
                meta.key.epoch
            ),
        });
        let text = texts::foreign_epoch(
            self.db_name(meta.key.db),
            &self.label(&meta),
            meta.key.epoch,
            self.cfg.site_name(from),
            &holder,
        );
        self.raise(
            now,
            AlertKind::ForeignEpochArtifact,
            Some(meta.key.db),
            Subject::Site(from),
            Severity::Critical,
            false,
            text,
        );
    }

    /// The artifact's name label (the seed's naming convention).
    pub(super) fn label(&self, meta: &ArtifactMeta) -> String {
        crate::name::ArtifactName::of(meta, self.db_name(meta.key.db)).to_string()
    }

    pub(super) fn pump_all(&mut self, now: Millis) {
        for i in 0..self.st.dbs.len() {
            self.pump(now, DbId(i as u32));
        }
    }

    /// Whether a restore may start: at a site that restores, and not past a takeover's drain
    /// (the barrier: a retry of a failed log once restored an older epoch's writes into the
    /// new primary 45 ms after the epoch was granted).
    pub(super) fn restores_may_start(&self) -> bool {
        self.restores()
            && (self.cfg.planted("drain_ignores_retries")
                || self.cfg.planted("accept_stale_epoch")
                || !self.st.procedure.as_ref().is_some_and(|p| p.past_drain()))
    }

    /// What the chain holds back now: a standby that lags on purpose waits
    /// `restore.apply_delay_ms` until a failover reaches its drain or this site becomes a
    /// switchover's target (both catch up), and a failover to a chosen point leaves out what
    /// came after it.
    pub(super) fn hold(&self) -> super::chain::Hold {
        match &self.st.procedure {
            Some(p) => match p.kind {
                ProcKind::Failover { .. } if !(p.step == Step::Drain || p.past_drain()) => {
                    super::chain::Hold {
                        delay_ms: self.cfg.restore.apply_delay_ms,
                        until: None,
                    }
                }
                _ => super::chain::Hold {
                    delay_ms: 0,
                    until: p.until,
                },
            },
            // The target of a planned switchover (no procedure of its own here) must reach
            // the old primary's final position: it catches up too.
            None if self.st.role == Role::SwitchoverTarget => super::chain::Hold::NONE,
            None => super::chain::Hold {
                delay_ms: self.cfg.restore.apply_delay_ms,
                until: None,
            },
        }
    }

    /// Move one database forward as far as the chain rule allows.
    pub(super) fn pump(&mut self, now: Millis, db: DbId) {
        if !self.restores_may_start() {
            return;
        }
        let i = db.0 as usize;
        let Some(d) = self.st.dbs.get_mut(i) else {
            return;
        };
        let gone = d.drop_covered();
        // Covered by the position (the copy stays for the retained chain); a failure it had is
        // bypassed now, so its alert is resolved.
        for m in gone {
            let subject = Subject::Artifact(m.key);
            self.clear(now, AlertKind::RestoreError, Some(db), subject);
        }
        let d = &self.st.dbs[i];
        if d.in_flight.is_some() || d.queued {
            return;
        }
        let reseeding = d.reseed_since.is_some();
        let hold = self.hold();
        let d = &self.st.dbs[i];
        let next = match d.reseed_since {
            // The engine's own reseed still lets an untried log or incremental continue the
            // chain: restoring it is far cheaper than recreating the database.
            Some(_) if d.reseed_auto => match d.next_at(now, &hold) {
                Next::Restore(idx)
                    if d.pending[idx].attempts == 0
                        && d.pending[idx].meta.key.kind != ArtifactKind::Full =>
                {
                    Next::Restore(idx)
                }
                _ => reseed_candidate(d),
            },
            Some(_) => reseed_candidate(d),
            None => d.next_at(now, &hold),
        };
        match next {
            Next::Restore(idx) => {
                if self.st.restoring >= self.cfg.restore.parallelism {
                    self.st.dbs[i].queued = true;
                    self.st.ready.push_back(db);
                    return;
                }
                self.start_restore(now, db, idx);
            }
            Next::Gap { first_after } => {
                let d = &mut self.st.dbs[i];
                let at = d.position.unwrap_or_default();
                let next = d.pending[first_after].meta;
                if d.gap
                    .as_ref()
                    .is_none_or(|g| g.at != at || g.next.key != next.key)
                {
                    d.gap = Some(Box::new(Gap {
                        at,
                        next,
                        since: now,
                        attempts: 0,
                    }));
                }
                self.gap_check(now, db);
            }
            Next::Waiting => {
                let d = &self.st.dbs[i];
                match d
                    .pending
                    .iter()
                    .filter_map(|p| p.retry_at)
                    .filter(|t| *t > now && *t != Millis::MAX)
                    .chain(d.held_until(now, &hold))
                    .min()
                {
                    Some(t) => {
                        self.st.timers.add_restore_retry(t, db);
                    }
                    // Only dead artifacts stand at the position (e.g. a reseed's full left one in
                    // the way): without this the database would wait forever.
                    None => self.begin_reseed(now, db, "a restore failed permanently", true),
                }
            }
            Next::Nothing => {
                // A hole is not resolved by asking for a full: keep `missing_log` until the
                // reseed restores one.
                if !reseeding && self.st.dbs[i].gap.take().is_some() {
                    self.clear(now, AlertKind::MissingLog, Some(db), Subject::None);
                }
            }
        }
    }

    fn start_restore(&mut self, now: Millis, db: DbId, idx: usize) {
        let i = db.0 as usize;
        let d = &mut self.st.dbs[i];
        let meta = d.pending[idx].meta;
        let bridging = meta.key.kind == ArtifactKind::Full && d.position.is_some();
        let key = meta.key;
        self.st.restoring += 1;
        let op = self.issue(now, OpPurpose::Restore { db }, |op| {
            if bridging {
                Command::Reseed { op, full: meta }
            } else {
                Command::Restore { op, artifact: meta }
            }
        });
        self.st.dbs[i].in_flight = Some((op, key));
    }

    fn next_ready(&mut self, now: Millis) {
        while self.st.restoring < self.cfg.restore.parallelism {
            let Some(db) = self.st.ready.pop_front() else {
                break;
            };
            if let Some(d) = self.st.dbs.get_mut(db.0 as usize) {
                d.queued = false;
            }
            self.pump(now, db);
        }
    }

    /// A restore completed after its artifact left `pending` (an epoch change quarantined it
    /// while the database applied it). The database did change: the position says so, and the
    /// copy is rebuilt, since it now holds writes of an older epoch that may have diverged.
    fn restored_after_drop(&mut self, now: Millis, db: DbId, cmd: &Command) {
        let meta = match cmd {
            Command::Restore { artifact, .. } => *artifact,
            Command::Reseed { full, .. } => *full,
            _ => return,
        };
        let d = &mut self.st.dbs[db.0 as usize];
        if d.position.is_none_or(|p| p < meta.key.lsn_end) {
            let before = d.position;
            d.position = Some(meta.key.lsn_end);
            if meta.key.kind == ArtifactKind::Full {
                d.current_full = Some(meta.key.lsn_end);
            }
            self.drill_restored(db, meta, before);
        }
        if meta.key.epoch < self.st.epoch && self.st.role == Role::Secondary {
            self.begin_reseed(
                now,
                db,
                "a restore of an older epoch's artifact completed after the epoch changed",
                false,
            );
        }
    }

    pub(super) fn restore_done(
        &mut self,
        now: Millis,
        db: DbId,
        op: OpId,
        cmd: &Command,
        result: Result<(), Failure>,
    ) {
        self.st.restoring = self.st.restoring.saturating_sub(1);
        let i = db.0 as usize;
        let key = match cmd {
            Command::Restore { artifact, .. } => artifact.key,
            Command::Reseed { full, .. } => full.key,
            _ => return,
        };
        let d = &mut self.st.dbs[i];
        let ours = d.in_flight.is_some_and(|(o, _)| o == op);
        if ours {
            d.in_flight = None;
        }
        let Some(idx) = d.pending.iter().position(|p| p.meta.key == key) else {
            if ours && result.is_ok() {
                self.restored_after_drop(now, db, cmd);
            }
            self.next_ready(now);
            self.pump(now, db);
            self.next_ready(now);
            return self.role_progress(now);
        };
        match result {
            Ok(()) => {
                let p = d.pending.remove(idx);
                let meta = p.meta;
                let before = d.position;
                d.position = Some(meta.key.lsn_end);
                if meta.key.kind == ArtifactKind::Full {
                    d.current_full = Some(meta.key.lsn_end);
                    d.full_asked_at = None;
                }
                d.last_restore = Some(Seen::of(&meta, now));
                d.last_restore_latency = Some(now.saturating_sub(p.received_at));
                d.gap = None;
                self.drill_restored(db, meta, before);
                let d = &mut self.st.dbs[i];
                // Only a full ends a reseed: a log that was running when an operator asked for
                // one must not report the database recreated.
                let full = meta.key.kind == ArtifactKind::Full;
                let was_reseed =
                    full && (d.reseed_since.is_some() || matches!(cmd, Command::Reseed { .. }));
                let cancelled = !full && d.reseed_auto && d.reseed_since.is_some();
                if was_reseed || cancelled {
                    d.reseed_since = None;
                    d.reseed_auto = false;
                }
                // Its own failure is overcome; failures it bypassed clear in `pump`, once the
                // position covers them (not merely overlaps them).
                let own = Subject::Artifact(meta.key);
                self.clear(now, AlertKind::RestoreError, Some(db), own);
                self.clear(now, AlertKind::MissingLog, Some(db), Subject::None);
                if cancelled {
                    self.clear(now, AlertKind::Reseed, Some(db), Subject::None);
                    self.audit(
                        now,
                        format!("reseed of {} cancelled", self.db_name(db)),
                        "an artifact continued the chain before the new full backup arrived".into(),
                        vec![("position".into(), meta.key.lsn_end.0.to_string())],
                    );
                }
                if was_reseed {
                    self.clear(now, AlertKind::Reseed, Some(db), Subject::None);
                    self.report(Report::Reseeded {
                        db,
                        at: meta.key.lsn_end,
                    });
                    self.audit(
                        now,
                        format!("reseeded {}", self.db_name(db)),
                        "the database was dropped and recreated from a full backup".into(),
                        vec![
                            ("from".into(), format!("{:?}", before.map(|l| l.0))),
                            ("to".into(), meta.key.lsn_end.0.to_string()),
                        ],
                    );
                }
                // Databases waiting for a slot go first: one with a backlog must not hold the
                // slot it just freed until its whole backlog is restored.
                self.next_ready(now);
                self.pump(now, db);
                self.role_progress(now);
            }
            Err(f) => {
                let p = &mut d.pending[idx];
                if !self.cfg.planted("forget_retry_count") {
                    p.attempts = p.attempts.saturating_add(1);
                }
                p.meta.retry = p.meta.retry.saturating_add(1);
                let first = *p.first_failure_at.get_or_insert(now);
                // A transient failure is permanent only past both limits: with the defaults
                // (10 attempts a minute apart) it would otherwise recreate the database before
                // its alert could reach the seed's 15-minute and 30-minute points.
                let failing_for = now.saturating_sub(first);
                let dead = f.permanent && p.attempts >= self.cfg.alerts.after_attempts
                    || p.attempts >= self.cfg.restore.max_attempts
                        && failing_for >= self.cfg.restore.reseed_after_minutes * MINUTE;
                p.retry_at = Some(if dead {
                    Millis::MAX
                } else {
                    now + self.cfg.restore.retry_delay_ms
                });
                p.last_error = Some(f);
                let meta = p.meta;
                self.command(Command::Relabel { artifact: meta });
                if !dead {
                    self.st
                        .timers
                        .add_restore_retry(now + self.cfg.restore.retry_delay_ms, db);
                }
                self.restore_error_check(now, db, idx);
                if dead {
                    self.begin_reseed(now, db, "a restore failed permanently", true);
                }
                self.next_ready(now);
                self.pump(now, db);
                // A drain waits for this restore; its retry is the drain's decision.
                self.role_progress(now);
            }
        }
        self.next_ready(now);
    }

    /// Raise (or update) the restore-error alert once its threshold is reached.
    pub(super) fn restore_error_check(&mut self, now: Millis, db: DbId, idx: usize) {
        let d = &self.st.dbs[db.0 as usize];
        let Some(p) = d.pending.get(idx) else { return };
        let Some(first) = p.first_failure_at else {
            return;
        };
        let a = &self.cfg.alerts;
        if p.attempts < a.after_attempts && now.saturating_sub(first) < a.after_minutes * MINUTE {
            return;
        }
        let since = d.last_restore.map(|r| now.saturating_sub(r.at) / MINUTE);
        let (code, message) = p
            .last_error
            .as_ref()
            .map_or((0, ""), |e| (e.code, e.message.as_str()));
        let text =
            texts::restore_error(self.db_name(db), &self.label(&p.meta), since, code, message);
        let key = p.meta.key;
        self.raise(
            now,
            AlertKind::RestoreError,
            Some(db),
            Subject::Artifact(key),
            Severity::Failure,
            true,
            text,
        );
    }

    /// A hole stays open: count the attempt, alert past the thresholds, reseed past the limit.
    pub(super) fn gap_check(&mut self, now: Millis, db: DbId) {
        let i = db.0 as usize;
        let retry = self.cfg.restore.retry_delay_ms.max(1);
        let Some(g) = self.st.dbs[i].gap.as_mut() else {
            return;
        };
        let (attempts, next_rel) = gap_schedule(
            now.saturating_sub(g.since),
            retry,
            self.cfg.alerts.after_attempts,
        );
        let new_attempt = attempts > g.attempts;
        g.attempts = attempts;
        let g = Gap::clone(g);
        let a = self.cfg.alerts.clone();
        let open = now.saturating_sub(g.since);
        if new_attempt {
            let mut next = g.next;
            next.retry = attempts;
            if let Some(p) = self.st.dbs[i]
                .pending
                .iter_mut()
                .find(|p| p.meta.key == g.next.key)
            {
                p.meta.retry = attempts;
            }
            self.command(Command::Relabel { artifact: next });
        }
        if (attempts >= a.after_attempts || open >= a.after_minutes * MINUTE) && new_attempt {
            let d = &self.st.dbs[i];
            let after = d.last_restore.map(|r| r.created_utc);
            let since = d.last_restore.map(|r| now.saturating_sub(r.at) / MINUTE);
            let mut next = g.next;
            next.retry = attempts;
            let text = texts::missing_log(self.db_name(db), after, &self.label(&next), since);
            self.raise(
                now,
                AlertKind::MissingLog,
                Some(db),
                Subject::None,
                Severity::Failure,
                true,
                text,
            );
        }
        if open >= self.cfg.restore.reseed_after_minutes * MINUTE {
            self.begin_reseed(now, db, "a hole in the chain that no artifact covers", true);
        }
        // Count the next attempt on time even when nothing else happens, and reseed on time.
        let reseed_at = self.cfg.restore.reseed_after_minutes.saturating_mul(MINUTE);
        let next_rel = if open < reseed_at {
            next_rel.min(reseed_at)
        } else {
            next_rel
        };
        self.st
            .timers
            .add_restore_retry(g.since.saturating_add(next_rel), db);
    }

    /// An operator's reseed: request a new full backup at the primary; the next full received
    /// recreates the database, whatever else arrives meanwhile.
    pub(super) fn start_reseed(&mut self, now: Millis, db: DbId, why: &str) {
        self.begin_reseed(now, db, why, false);
    }

    /// Request a new full backup at the primary; the next full received recreates the database.
    /// `auto`: the engine decided it, and an artifact that continues the chain first cancels it.
    pub(super) fn begin_reseed(&mut self, now: Millis, db: DbId, why: &str, auto: bool) {
        let i = db.0 as usize;
        if self.st.dbs[i].reseed_since.is_some() {
            // An operator's request makes a running reseed one that nothing cancels.
            self.st.dbs[i].reseed_auto &= auto;
            return;
        }
        self.st.dbs[i].reseed_since = Some(now);
        self.st.dbs[i].reseed_auto = auto;
        self.st.dbs[i].full_asked_at = Some(now);
        self.send_peer(Message::RequestFull { db: Some(db) });
        let text = texts::reseed(self.db_name(db), why);
        self.raise(
            now,
            AlertKind::Reseed,
            Some(db),
            Subject::None,
            Severity::Failure,
            false,
            text,
        );
        self.audit(
            now,
            format!("reseed {}", self.db_name(db)),
            why.to_string(),
            vec![(
                "position".into(),
                format!("{:?}", self.st.dbs[i].position.map(|l| l.0)),
            )],
        );
        self.pump(now, db);
    }

    /// A restore succeeded: the drill chain follows the database. A new base full (a full
    /// restored, or the retained full the position passed) makes what ends before it
    /// unnecessary: prune it.
    fn drill_restored(&mut self, db: DbId, meta: ArtifactMeta, before: Option<Lsn>) {
        let d = &mut self.st.dbs[db.0 as usize];
        d.drill_restored(meta, before);
        if meta.key.kind == ArtifactKind::Full {
            self.prune(db, meta.key.lsn_end);
        } else {
            self.drill_rebase(db);
        }
    }

    /// Move the drill chain to the retained full when the position has passed it, and prune
    /// what ends before it.
    fn drill_rebase(&mut self, db: DbId) {
        let d = &mut self.st.dbs[db.0 as usize];
        if d.drill_rebase() {
            if let Some(f) = d.drill_chain.first() {
                let before = f.key.lsn_end;
                self.prune(db, before);
            }
        }
    }

    /// Retention: remove the database's artifacts that end before `before`, except what the
    /// engine still needs (see [`DbState::keep_list`](super::DbState::keep_list)) and the
    /// chains of drills still running.
    fn prune(&mut self, db: DbId, before: Lsn) {
        let Some(d) = self.st.dbs.get(db.0 as usize) else {
            return;
        };
        if before == Lsn(0) {
            return; // nothing ends before the first position
        }
        let mut keep = d.keep_list();
        let mut drills = false;
        for e in self.st.ops.values() {
            if let Command::Drill { db: x, chain, .. } = &e.cmd {
                if *x == db {
                    keep.extend(chain.iter().map(|m| m.key));
                    drills = true;
                }
            }
        }
        // What waits to be archived stays in the inbox until its copy is durable.
        let archiving = self
            .st
            .archive
            .get(db.0 as usize)
            .is_some_and(|a| !a.waiting.is_empty());
        if let Some(a) = self.st.archive.get(db.0 as usize) {
            keep.extend(a.waiting_keys());
        }
        if drills || archiving {
            keep.sort_unstable();
            keep.dedup();
        }
        self.command(Command::Prune { db, before, keep });
    }

    pub(super) fn drill_done(
        &mut self,
        now: Millis,
        db: DbId,
        cmd: &Command,
        result: Result<(), Failure>,
    ) {
        let upto = match cmd {
            Command::Drill { upto, .. } => *upto,
            _ => Lsn(0),
        };
        let subject = Subject::None;
        match result {
            Ok(()) => {
                self.clear(now, AlertKind::DrillFailed, Some(db), subject);
                self.report(Report::Drill {
                    db,
                    upto,
                    ok: true,
                    message: "restored and checked".into(),
                });
            }
            Err(f) => {
                let text = texts::drill_failed(self.db_name(db), Some(f.code), &f.message);
                self.raise(
                    now,
                    AlertKind::DrillFailed,
                    Some(db),
                    subject,
                    Severity::Failure,
                    false,
                    text,
                );
                self.report(Report::Drill {
                    db,
                    upto,
                    ok: false,
                    message: f.message,
                });
            }
        }
        let _ = Timer::Monitor;
    }
}

/// During a reseed only a full backup newer than the position helps.
fn reseed_candidate(d: &super::DbState) -> Next {
    let floor = d.position.unwrap_or_default();
    match d
        .pending
        .iter()
        .enumerate()
        .filter(|(_, p)| p.meta.key.kind == ArtifactKind::Full)
        .filter(|(_, p)| d.position.is_none() || p.meta.key.lsn_end > floor)
        .filter(|(_, p)| p.retry_at != Some(Millis::MAX))
        .max_by_key(|(_, p)| p.meta.key.lsn_end)
    {
        Some((i, _)) => Next::Restore(i),
        None => Next::Nothing,
    }
}

/// The checks of a hole open for `open` ms: `(checks so far, when the next is due, from the
/// hole's start)`. Every `retry` until the alert threshold (the seed's "alert after N
/// attempts", so `missing_log` comes exactly when it always did), then at intervals that double
/// up to [`crate::defaults::GAP_BACKOFF_FACTOR`] × `retry`: a hole that stays open is retried,
/// relabelled and re-reported with backoff, not on every pass (the audit saw the stuck artifact
/// renamed every 0.5 s, its retry number past 212).
pub(crate) fn gap_schedule(open: Millis, retry: Millis, threshold: u32) -> (u32, Millis) {
    let retry = retry.max(1);
    let linear = u64::from(threshold.max(1));
    let count = |k: u64| u32::try_from(k).unwrap_or(u32::MAX);
    // Check k (from 1) of the linear phase is due at (k - 1) × retry.
    let last_linear = (linear - 1).saturating_mul(retry);
    if open < last_linear {
        let k = open / retry + 1;
        return (count(k), k.saturating_mul(retry));
    }
    let cap = retry.saturating_mul(crate::defaults::GAP_BACKOFF_FACTOR);
    let (mut k, mut at, mut step) = (linear, last_linear, retry.saturating_mul(2));
    while step < cap {
        if at.saturating_add(step) > open {
            return (count(k), at.saturating_add(step));
        }
        at += step;
        k += 1;
        step = step.saturating_mul(2);
    }
    let more = (open - at) / cap;
    (
        count(k.saturating_add(more)),
        at.saturating_add(more.saturating_add(1).saturating_mul(cap)),
    )
}

#[cfg(test)]
mod tests {
    use super::gap_schedule;

    #[test]
    fn an_open_hole_is_checked_every_retry_until_the_alert_then_with_doubling_backoff() {
        let r = 500;
        // Linear up to the third check (the alert threshold): at 0, 500, 1000.
        assert_eq!(gap_schedule(0, r, 3), (1, 500));
        assert_eq!(gap_schedule(499, r, 3), (1, 500));
        assert_eq!(gap_schedule(500, r, 3), (2, 1_000));
        assert_eq!(gap_schedule(1_000, r, 3), (3, 2_000));
        // Then +1 s, +2 s, +4 s, and every 8 s (16 x 500 ms) from there on.
        assert_eq!(gap_schedule(2_000, r, 3), (4, 4_000));
        assert_eq!(gap_schedule(4_000, r, 3), (5, 8_000));
        assert_eq!(gap_schedule(8_000, r, 3), (6, 16_000));
        assert_eq!(gap_schedule(16_000, r, 3), (7, 24_000));
        assert_eq!(gap_schedule(24_000, r, 3), (8, 32_000));
        // The audit's four minutes of an open hole: 35 checks, not 480.
        assert_eq!(gap_schedule(240_000, r, 3).0, 35);
    }

    #[test]
    fn the_gap_schedule_never_goes_back_and_never_overflows() {
        let mut last = (0, 0);
        for open in (0..200_000u64).step_by(97) {
            let (k, next) = gap_schedule(open, 700, 4);
            assert!(
                k >= last.0 && next > open && next >= last.1,
                "{open}: {k} {next}"
            );
            last = (k, next);
        }
        let (k, next) = gap_schedule(u64::MAX - 1, u64::MAX / 2, u32::MAX);
        assert!(k >= 1 && next >= u64::MAX / 2);
        assert_eq!(gap_schedule(10, 0, 0), (3, 14));
    }
}

/// The core's retention and drill decisions, end to end through the engine: what a `Prune`
/// keeps and which chain a `Drill` names.
#[cfg(test)]
mod drill_tests {
    use crate::artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
    use crate::config::Config;
    use crate::engine::SiteEngine;
    use crate::ids::{Checksum, DbId, Epoch, Lsn, UtcMillis};
    use crate::protocol::{Command, Input, OperatorRequest, Output};
    use crate::SiteId;

    fn art(kind: ArtifactKind, s: u64, e: u64, base: Option<u64>) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(0),
                epoch: Epoch(1),
                lsn_start: Lsn(s),
                lsn_end: Lsn(e),
                kind,
            },
            base_full: base.map(Lsn),
            created_utc: UtcMillis(1_795_305_600_000 + e as i64 * 1_000),
            size: 1,
            checksum: Checksum(e * 31 + s),
            retry: 0,
        }
    }
    fn full(at: u64) -> ArtifactMeta {
        art(ArtifactKind::Full, at, at, None)
    }
    fn log(s: u64, e: u64) -> ArtifactMeta {
        art(ArtifactKind::Log, s, e, None)
    }

    /// A recovery site whose executor completes every restore at once; it records the prunes
    /// and drills the engine commands.
    struct Site {
        e: SiteEngine,
        now: u64,
        prunes: Vec<(Lsn, Vec<ArtifactKey>)>,
        drills: Vec<(Lsn, Vec<ArtifactMeta>)>,
    }

    impl Site {
        fn new() -> Site {
            let mut e = SiteEngine::new(Config::default(), SiteId(1));
            e.handle(0, Input::Tick);
            let mut s = Site {
                e,
                now: 0,
                prunes: Vec::new(),
                drills: Vec::new(),
            };
            s.drain();
            s
        }
        fn input(&mut self, i: Input) {
            self.now += 10;
            self.e.handle(self.now, i);
            self.drain();
        }
        fn drain(&mut self) {
            let mut done = Vec::new();
            while let Some(o) = self.e.poll_output() {
                match o {
                    Output::Command(Command::Restore { op, .. } | Command::Reseed { op, .. }) => {
                        done.push(op)
                    }
                    Output::Command(Command::Prune { before, keep, .. }) => {
                        self.prunes.push((before, keep))
                    }
                    Output::Command(Command::Drill { upto, chain, .. }) => {
                        self.drills.push((upto, chain))
                    }
                    _ => {}
                }
            }
            for op in done {
                self.input(Input::Completed { op, result: Ok(()) });
            }
        }
        fn receive(&mut self, m: ArtifactMeta) {
            self.input(Input::ArtifactReceived {
                meta: m,
                computed: m.checksum,
                from: SiteId(0),
            });
        }
        fn drill(&mut self) -> (Lsn, Vec<ArtifactMeta>) {
            self.input(Input::Operator(OperatorRequest::Drill {
                db: Some(DbId(0)),
            }));
            self.drills.pop().expect("a drill was issued")
        }
        fn position(&self) -> Option<Lsn> {
            self.e.db(DbId(0)).and_then(|d| d.position)
        }
    }

    /// What a prune leaves of `store`: everything not ending before `before`, and `keep`.
    fn pruned(store: &mut Vec<ArtifactMeta>, before: Lsn, keep: &[ArtifactKey]) {
        store.retain(|m| m.key.lsn_end >= before || keep.binary_search(&m.key).is_ok());
    }

    #[test]
    fn a_drill_names_the_full_and_the_restored_logs_that_continue_it() {
        let mut s = Site::new();
        for m in [full(100), log(100, 150), log(150, 200)] {
            s.receive(m);
        }
        assert_eq!(s.position(), Some(Lsn(200)));
        let (upto, chain) = s.drill();
        assert_eq!(upto, Lsn(200));
        assert_eq!(chain, vec![full(100), log(100, 150), log(150, 200)]);
    }

    /// A newer full that the position has passed takes over the chain; the prune then drops
    /// what came before it, and the drill after the prune names only what is still there.
    #[test]
    fn a_drill_after_a_prune_names_only_artifacts_the_prune_kept() {
        let mut s = Site::new();
        let mut store = vec![full(100), log(100, 150), log(150, 200)];
        for m in store.clone() {
            s.receive(m);
        }
        s.prunes.clear();
        store.push(full(180));
        s.receive(full(180));
        assert_eq!(s.prunes.len(), 1, "{:?}", s.prunes);
        let (before, keep) = s.prunes[0].clone();
        assert_eq!(before, Lsn(180));
        let mut sorted = keep.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keep, sorted, "sorted, without duplicates");
        assert_eq!(keep, vec![log(150, 200).key, full(180).key]);
        pruned(&mut store, before, &keep);
        assert_eq!(store, vec![log(150, 200), full(180)]);

        let (upto, chain) = s.drill();
        assert_eq!(upto, Lsn(200));
        assert_eq!(chain, vec![full(180), log(150, 200)]);
        assert!(chain.iter().all(|m| store.contains(m)));
    }

    /// A full that arrives ahead of the position changes nothing until the position passes it:
    /// the chain from the older full stays whole (a drill in between still works).
    #[test]
    fn a_newer_full_ahead_of_the_position_waits_until_the_restores_pass_it() {
        let mut s = Site::new();
        let mut store = vec![full(100), log(100, 150), full(250)];
        for m in store.clone() {
            s.receive(m);
        }
        let prunes = s.prunes.len();
        let (_, chain) = s.drill();
        assert_eq!(chain, vec![full(100), log(100, 150)]);
        assert_eq!(
            s.prunes.len(),
            prunes,
            "nothing pruned before the position passes 250"
        );

        store.push(log(150, 300));
        s.receive(log(150, 300));
        let (before, keep) = s.prunes.last().cloned().unwrap();
        assert_eq!(before, Lsn(250));
        pruned(&mut store, before, &keep);
        let (upto, chain) = s.drill();
        assert_eq!(
            (upto, chain.clone()),
            (Lsn(300), vec![full(250), log(150, 300)])
        );
        assert!(chain.iter().all(|m| store.contains(m)));
    }

    /// An incremental on the retained full (not the full the copy started from) applies by the
    /// chain rule, and the drill chain uses it instead of the logs it covers.
    #[test]
    fn a_drill_uses_an_incremental_on_the_retained_full() {
        let mut s = Site::new();
        for m in [full(100), log(100, 150), full(140)] {
            s.receive(m);
        }
        let incr = art(ArtifactKind::Incremental, 140, 220, Some(140));
        s.receive(incr);
        s.receive(log(220, 240));
        assert_eq!(s.position(), Some(Lsn(240)));
        let (upto, chain) = s.drill();
        assert_eq!(upto, Lsn(240));
        assert_eq!(chain, vec![full(140), incr, log(220, 240)]);
        // Every prune kept the chain.
        let mut store = vec![full(100), log(100, 150), full(140), incr, log(220, 240)];
        for (before, keep) in &s.prunes {
            pruned(&mut store, *before, keep);
        }
        assert!(chain.iter().all(|m| store.contains(m)), "{store:?}");
    }

    /// A drill still running keeps its chain through a prune that moves the chain on.
    #[test]
    fn a_prune_keeps_the_chain_of_a_drill_still_running() {
        let mut s = Site::new();
        for m in [full(100), log(100, 150), log(150, 200)] {
            s.receive(m);
        }
        let (_, running) = s.drill(); // never completed
        s.receive(full(180));
        let (before, keep) = s.prunes.last().cloned().unwrap();
        assert_eq!(before, Lsn(180));
        for m in &running {
            assert!(m.key.lsn_end >= before || keep.binary_search(&m.key).is_ok());
        }
    }

    /// A copy that moved without restores (a switchover, a rebuild) has no drill chain to keep:
    /// a newer full the position passed lets the prune drop what ends before it at once, and
    /// the same full shipped again changes nothing.
    #[test]
    fn a_newer_full_without_a_drill_chain_prunes_before_it_once() {
        let mut s = Site::new();
        for m in [full(100), log(100, 150), log(150, 200)] {
            s.receive(m);
        }
        s.e.st.dbs[0].drill_chain.clear();
        s.prunes.clear();
        s.receive(full(180));
        assert_eq!(s.prunes, vec![(Lsn(180), vec![full(180).key])]);
        s.receive(full(180));
        assert_eq!(s.prunes.len(), 1, "{:?}", s.prunes);
        // A full ahead of the position prunes only up to the position.
        s.receive(full(260));
        assert_eq!(s.prunes.last().map(|p| p.0), Some(Lsn(200)));
    }

    /// Nothing restored: the drill fails at once (`drill_failed`), without a command.
    #[test]
    fn a_drill_without_a_chain_to_the_position_fails_without_a_command() {
        let mut s = Site::new();
        s.input(Input::Operator(OperatorRequest::Drill {
            db: Some(DbId(0)),
        }));
        assert!(s.drills.is_empty());
        let texts: Vec<&str> =
            s.e.alerts()
                .iter()
                .filter(|(id, _)| id.kind == crate::alert::AlertKind::DrillFailed)
                .map(|(_, a)| a.text.as_str())
                .collect();
        // No error code: the database was never asked.
        assert_eq!(
            texts,
            vec![format!(
                "The drill for database [{}] failed: nothing restored yet.",
                s.e.cfg.databases[0]
            )]
        );
    }
}
