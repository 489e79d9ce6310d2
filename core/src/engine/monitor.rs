//! The periodic look at every database: staleness, gaps, retry thresholds, backlog, pause.

use super::{texts, Role, SiteEngine};
use crate::alert::{AlertId, AlertKind, Severity, Subject};
use crate::artifact::ArtifactKind;
use crate::ids::{DbId, Millis, MINUTE};
use crate::protocol::Message;

impl SiteEngine {
    pub(super) fn monitor(&mut self, now: Millis) {
        if !self.restores() {
            return;
        }
        self.pause_check(now);
        let a = self.cfg.alerts.clone();
        // One pass over the databases: with many of them, each pass reads their state from
        // memory, not from the cache.
        let asking = self.st.role == Role::Secondary; // a rebuild asks on its own step timer
        let mut wanted = Vec::new();
        let paused = self.st.peer.backups_paused || self.st.backups_paused;
        let heartbeat_fresh = self
            .st
            .peer
            .last_heartbeat_at
            .is_some_and(|t| now.saturating_sub(t) < a.no_new_logs_minutes * MINUTE);
        for i in 0..self.st.dbs.len() {
            let db = DbId(i as u32);
            let d = &self.st.dbs[i];
            if asking && self.wants_full(now, d) {
                wanted.push(i);
            }
            // No new transaction logs, unless paused, or the primary says nothing new was written.
            let quiet = now.saturating_sub(d.last_log_at);
            let received_end = d
                .pending
                .iter()
                .map(|p| p.meta.key.lsn_end)
                .chain(d.position)
                .max()
                .unwrap_or_default();
            let idle = heartbeat_fresh && d.known_produced <= received_end;
            if quiet >= a.no_new_logs_minutes * MINUTE && !paused && !idle {
                let id = AlertId {
                    kind: AlertKind::NoNewLogs,
                    db: Some(db),
                    subject: Subject::None,
                };
                let minutes = quiet / MINUTE;
                // Re-raise once per threshold period, not every check.
                let due = self.st.alerts.get(&id).is_none_or(|x| {
                    now.saturating_sub(x.last_seen) >= a.no_new_logs_minutes * MINUTE
                });
                if due {
                    let text = texts::no_new_logs(self.db_name(db), minutes);
                    self.raise(
                        now,
                        AlertKind::NoNewLogs,
                        Some(db),
                        Subject::None,
                        Severity::Failure,
                        true,
                        text,
                    );
                }
            } else if paused || idle {
                self.clear(now, AlertKind::NoNewLogs, Some(db), Subject::None);
            }
            // Backlog.
            // A standby that lags on purpose has a backlog of what is due, not of what waits.
            let delay = self.hold().delay_ms;
            let (count, oldest) = self.st.dbs[i].backlog_after(now, delay);
            let id = AlertId {
                kind: AlertKind::Backlog,
                db: Some(db),
                subject: Subject::None,
            };
            if count > a.backlog_count || (count > 0 && oldest >= a.backlog_age_minutes * MINUTE) {
                let text = texts::backlog(self.db_name(db), count, oldest / MINUTE);
                let changed = self.st.alerts.get(&id).is_none_or(|x| x.text != text);
                if changed {
                    self.raise(
                        now,
                        AlertKind::Backlog,
                        Some(db),
                        Subject::None,
                        Severity::Warning,
                        false,
                        text,
                    );
                }
            } else {
                self.clear(now, AlertKind::Backlog, Some(db), Subject::None);
            }
            // Time-based thresholds of a failing restore and escalation to critical.
            // (Indexed: escalating raises alerts and leaves `pending` as it is.)
            for j in 0..self.st.dbs[i].pending.len() {
                if self.st.dbs[i].pending[j].first_failure_at.is_some() {
                    self.escalate_restore_error(now, db, j);
                }
            }
            if self.st.dbs[i].gap.is_some() {
                self.pump(now, db);
                self.gap_escalate(now, db);
            }
        }
        self.ask_for_fulls(now, wanted);
    }

    /// Raise the restore-error alert on time, and escalate it to critical on time, even when no
    /// new attempt happens.
    fn escalate_restore_error(&mut self, now: Millis, db: DbId, j: usize) {
        let d = &self.st.dbs[db.0 as usize];
        let p = &d.pending[j];
        let id = AlertId {
            kind: AlertKind::RestoreError,
            db: Some(db),
            subject: Subject::Artifact(p.meta.key),
        };
        let crit = self.cfg.alerts.critical_after_minutes * MINUTE;
        match self.st.alerts.get(&id) {
            None => self.restore_error_check(now, db, j),
            Some(x)
                if x.severity != Severity::Critical && now.saturating_sub(x.first_seen) >= crit =>
            {
                self.restore_error_check(now, db, j)
            }
            _ => {}
        }
    }

    fn gap_escalate(&mut self, now: Millis, db: DbId) {
        let id = AlertId {
            kind: AlertKind::MissingLog,
            db: Some(db),
            subject: Subject::None,
        };
        let crit = self.cfg.alerts.critical_after_minutes * MINUTE;
        if let Some(x) = self.st.alerts.get(&id) {
            if x.severity != Severity::Critical && now.saturating_sub(x.first_seen) >= crit {
                let text = x.text.clone();
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
        }
    }

    /// A secondary database that needs a full backup — it has none yet (a new recovery site
    /// must not wait for the primary's weekly full), or a reseed waits for one — asks the
    /// primary, and asks again every `restore.op_timeout_ms` until one arrives: the request, or
    /// the backup it asked for, may have been lost or failed.
    fn wants_full(&self, now: Millis, d: &super::DbState) -> bool {
        let needs = d.position.is_none() || d.reseed_since.is_some();
        if !needs {
            return false;
        }
        let full_here = d
            .pending
            .iter()
            .any(|p| p.meta.key.kind == ArtifactKind::Full && p.retry_at.is_none())
            || d.in_flight
                .is_some_and(|(_, k)| k.kind == ArtifactKind::Full);
        let every = self.cfg.restore.op_timeout_ms;
        let due = d
            .full_asked_at
            .is_none_or(|t| now.saturating_sub(t) >= every);
        !full_here && due
    }

    /// Ask for the full backups `wanted` (see `wants_full`); when every database needs one, a
    /// single request asks for all of them.
    fn ask_for_fulls(&mut self, now: Millis, wanted: Vec<usize>) {
        if wanted.is_empty() {
            return;
        }
        for &i in &wanted {
            self.st.dbs[i].full_asked_at = Some(now);
        }
        if wanted.len() == self.st.dbs.len() && wanted.len() > 1 {
            self.send_peer(Message::RequestFull { db: None });
        } else {
            for i in wanted {
                self.send_peer(Message::RequestFull {
                    db: Some(DbId(i as u32)),
                });
            }
        }
    }

    /// Backups paused at the primary: one site-level `backups_paused`, no `no_new_logs`.
    pub(super) fn pause_check(&mut self, now: Millis) {
        let site = if self.st.role == Role::Primary {
            self.me
        } else {
            self.peer
        };
        let subject = Subject::Site(site);
        let paused = self.st.peer.backups_paused || self.st.backups_paused;
        if paused {
            let since = self.st.peer.paused_since.unwrap_or(now);
            let id = AlertId {
                kind: AlertKind::BackupsPaused,
                db: None,
                subject,
            };
            if !self.st.alerts.is_active(&id) {
                let text = texts::backups_paused(
                    self.cfg.site_name(site),
                    now.saturating_sub(since) / MINUTE,
                );
                self.raise(
                    now,
                    AlertKind::BackupsPaused,
                    None,
                    subject,
                    Severity::Warning,
                    false,
                    text,
                );
            }
        } else {
            let id = AlertId {
                kind: AlertKind::BackupsPaused,
                db: None,
                subject,
            };
            if self.st.alerts.is_active(&id) {
                // Backups resumed: logs are due from now on, not overdue since before the pause
                // (else `no_new_logs` fires at once after every maintenance window).
                for d in &mut self.st.dbs {
                    d.last_log_at = d.last_log_at.max(now);
                }
            }
            self.clear(now, AlertKind::BackupsPaused, None, subject);
        }
    }
}
