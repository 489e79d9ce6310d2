//! The primary's outbox: every artifact discovered is shipped to the recovery site and kept
//! until that site acknowledges it as durably received and verified.

use super::{Role, SiteEngine};
use crate::alert::{AlertKind, Severity, Subject};
use crate::artifact::{ArtifactKey, ArtifactMeta};
use crate::ids::{DbId, Millis, OpId};
use crate::protocol::{Command, Message, Peer};
use serde::{Deserialize, Serialize};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipState {
    /// Waiting for a shipping slot.
    Queued,
    /// Handed to the transport; waiting for the acknowledgement.
    InFlight { op: OpId, sent_at: Millis },
    /// Failed; shipped again after the backoff.
    Backoff { until: Millis },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutEntry {
    pub meta: ArtifactMeta,
    pub state: ShipState,
    /// Failed or timed-out ships so far.
    pub attempts: u32,
}

impl SiteEngine {
    pub(super) fn discovered(&mut self, now: Millis, meta: ArtifactMeta) {
        if !self.valid_db(meta.key.db) {
            return self.reject(now, "artifact", format!("unknown database {}", meta.key.db));
        }
        if let Err(why) = meta.check() {
            return self.reject(now, "artifact", format!("malformed manifest: {why}"));
        }
        if meta.key.epoch != self.st.epoch || self.st.holder != self.me {
            // Produced under an epoch this site no longer holds: keep it aside, never ship it.
            return self.stale_artifact(now, meta);
        }
        // An artifact announced again after a restart may be older than the newest backup.
        let d = &mut self.st.dbs[meta.key.db.0 as usize];
        if d.last_backup
            .is_none_or(|b| b.created_utc <= meta.created_utc)
        {
            d.last_backup = Some(super::Seen::of(&meta, now));
        }
        self.write_position(meta.key.db, meta.key.lsn_end);
        match self.st.outbox.entry(meta.key) {
            std::collections::btree_map::Entry::Occupied(_) => return,
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(OutEntry {
                    meta,
                    state: ShipState::Queued,
                    attempts: 0,
                });
            }
        }
        self.st.ship_queue.push_back(meta.key);
        self.try_ship(now);
    }

    fn ships(&self) -> bool {
        matches!(
            self.st.role,
            Role::Primary | Role::Fenced | Role::SwitchingOver
        )
    }

    pub(super) fn try_ship(&mut self, now: Millis) {
        if !self.ships() {
            return;
        }
        while self.st.ship_in_flight < self.cfg.shipping.max_in_flight {
            let Some(key) = self.st.ship_queue.pop_front() else {
                break;
            };
            let Some(e) = self.st.outbox.get_mut(&key) else {
                continue;
            };
            if e.state != ShipState::Queued {
                continue;
            }
            let meta = e.meta;
            let op = OpId(self.st.next_op);
            self.st.next_op += 1;
            e.state = ShipState::InFlight { op, sent_at: now };
            self.st.ship_in_flight += 1;
            let to = self.peer;
            self.command(Command::Ship {
                op,
                artifact: meta,
                to,
            });
        }
    }

    /// The recovery site has the artifact, durably and verified: forget it here.
    pub(super) fn acked(&mut self, now: Millis, key: ArtifactKey) {
        self.st.peer.last_heard = Some(now);
        let Some(e) = self.st.outbox.remove(&key) else {
            return;
        };
        if matches!(e.state, ShipState::InFlight { .. }) {
            self.st.ship_in_flight -= 1;
        }
        if let ShipState::Backoff { until } = e.state {
            self.st.timers.remove_ship_backoff(until, key);
        }
        self.command(Command::Discard { key });
        self.try_ship(now);
        self.switchover_progress(now);
    }

    /// The recovery site restored each database up to these positions: what it has passed is no
    /// longer shipped (an artifact in flight finishes its ship).
    pub(super) fn superseded(&mut self, now: Millis, restored: &[(DbId, crate::ids::Lsn)]) {
        let gone: Vec<(ArtifactKey, ShipState, u32)> = self
            .st
            .outbox
            .iter()
            .filter(|(k, e)| {
                !matches!(e.state, ShipState::InFlight { .. })
                    && restored
                        .iter()
                        .any(|(db, lsn)| *db == k.db && k.lsn_end <= *lsn)
            })
            .map(|(k, e)| (*k, e.state, e.attempts))
            .collect();
        for (key, state, attempts) in gone {
            self.st.outbox.remove(&key);
            self.st.ship_queue.retain(|k| *k != key);
            if let ShipState::Backoff { until } = state {
                self.st.timers.remove_ship_backoff(until, key);
            }
            self.command(Command::Discard { key });
            self.audit(
                now,
                "not shipped: superseded".into(),
                format!(
                    "the recovery site already restored {} past this artifact",
                    self.db_name(key.db)
                ),
                vec![
                    (
                        "artifact".into(),
                        format!("{}..{}", key.lsn_start.0, key.lsn_end.0),
                    ),
                    ("failed_ships".into(), attempts.to_string()),
                ],
            );
        }
        self.switchover_progress(now);
    }

    /// The recovery site's copy failed verification: ship it again. The first re-copy goes at
    /// once (damage in transit is usually a one-off); later ones wait out the same backoff as a
    /// failed ship, so a copy damaged at the source cannot turn into a ship storm, and a
    /// duplicated request while one is pending changes nothing.
    pub(super) fn resend(&mut self, now: Millis, key: ArtifactKey) {
        self.st.peer.last_heard = Some(now);
        let Some(e) = self.st.outbox.get_mut(&key) else {
            return;
        };
        match e.state {
            ShipState::InFlight { .. } => self.st.ship_in_flight -= 1,
            ShipState::Backoff { .. } | ShipState::Queued => return,
        }
        if e.attempts == 0 {
            e.attempts = 1;
            e.state = ShipState::Queued;
            self.st.ship_queue.push_back(key);
        } else {
            self.backoff(now, key);
        }
        self.audit_ship_retries(now, key, |n| {
            format!(
                "the recovery site refused {n} copies of {key:?}: the primary's copy may be \
                 damaged; re-copies now wait out the ship backoff"
            )
        });
        self.try_ship(now);
    }

    pub(super) fn ship_failed(&mut self, now: Millis, op: OpId, key: ArtifactKey, reason: &str) {
        let Some(e) = self.st.outbox.get(&key) else {
            return;
        };
        if !matches!(e.state, ShipState::InFlight { op: o, .. } if o == op) {
            return;
        }
        self.st.ship_in_flight -= 1;
        self.backoff(now, key);
        self.audit_ship_retries(now, key, |n| {
            format!("shipping {key:?} failed {n} times: {reason}")
        });
        self.try_ship(now);
    }

    /// One audit record when an artifact's failed ships reach the alert threshold.
    fn audit_ship_retries(
        &mut self,
        now: Millis,
        key: ArtifactKey,
        why: impl FnOnce(u32) -> String,
    ) {
        let attempts = self.st.outbox.get(&key).map_or(0, |e| e.attempts);
        if attempts == self.cfg.alerts.after_attempts {
            self.audit(now, "ship retry".into(), why(attempts), Vec::new());
        }
    }

    fn backoff(&mut self, now: Millis, key: ArtifactKey) {
        let Some(e) = self.st.outbox.get_mut(&key) else {
            return;
        };
        e.attempts = e.attempts.saturating_add(1);
        let c = &self.cfg.shipping;
        let shift = e.attempts.saturating_sub(1).min(20);
        let delay = c
            .retry_base_ms
            .saturating_mul(1 << shift)
            .min(c.retry_max_ms);
        let until = now + delay;
        e.state = ShipState::Backoff { until };
        self.st.timers.add_ship_backoff(until, key);
    }

    /// Ships whose acknowledgement is overdue are retried.
    pub(super) fn ship_sweep(&mut self, now: Millis) {
        let timeout = self.cfg.shipping.ack_timeout_ms;
        let overdue: Vec<ArtifactKey> = self
            .st
            .outbox
            .iter()
            .filter(|(_, e)| {
                matches!(e.state, ShipState::InFlight { sent_at, .. } if now.saturating_sub(sent_at) >= timeout)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in overdue {
            self.st.ship_in_flight -= 1;
            self.backoff(now, key);
        }
        self.try_ship(now);
        self.peer_lost_check(now);
    }

    /// At the primary: raise `recovery_site_lost` when the recovery site has been silent. The
    /// arbiter is asked first whether it still hears the recovery site: if it does, only the link
    /// between the sites is down (severity failure, protection is paused); if it does not, or
    /// does not answer, the recovery site may be lost (critical).
    pub(super) fn peer_lost_check(&mut self, now: Millis) {
        if !matches!(self.st.role, Role::Primary | Role::Fenced) {
            return;
        }
        let since = self.st.peer.last_heard.unwrap_or(self.st.peer.watch_since);
        let silent = now.saturating_sub(since);
        let subject = Subject::Site(self.peer);
        if silent < self.cfg.failover.peer_lost_after_ms {
            self.st.peer.peer_status_asked = None;
            self.st.peer.peer_seen = None;
            self.clear(now, AlertKind::RecoverySiteLost, None, subject);
            return;
        }
        let wait = self.cfg.lease.arbiter_timeout_ms;
        let asked = self.st.peer.peer_status_asked;
        let answer = self
            .st
            .peer
            .peer_seen
            .filter(|(at, _)| asked.is_some_and(|a| *at >= a));
        if self.cfg.arbiter {
            let ask = match (asked, answer) {
                (None, _) => true,
                // The answer is due: it decides (see `site_seen`).
                (Some(a), None) if now.saturating_sub(a) < wait => return,
                (Some(_), None) => true,
                (Some(a), Some(_)) => now.saturating_sub(a) >= 2 * wait,
            };
            if ask {
                let req = self.new_req();
                self.st.peer.peer_status_asked = Some(now);
                let site = self.peer;
                self.send(Peer::Arbiter, Message::SiteStatus { site, req });
                if asked.is_none() {
                    return; // decide on the answer (or its absence)
                }
            }
        }
        let recent = 2 * wait + self.cfg.failover.probe_every_ms;
        let link_only = self
            .st
            .peer
            .peer_seen
            .is_some_and(|(_, h)| h.is_some_and(|ms| ms <= recent));
        let (severity, text) = if link_only {
            (
                Severity::Failure,
                super::texts::recovery_site_unreachable(
                    self.cfg.site_name(self.peer),
                    silent / crate::ids::MINUTE,
                    self.st.outbox.len(),
                ),
            )
        } else {
            (
                Severity::Critical,
                super::texts::recovery_site_lost(
                    self.cfg.site_name(self.peer),
                    silent / crate::ids::MINUTE,
                    self.st.outbox.len(),
                ),
            )
        };
        let id = crate::alert::AlertId {
            kind: AlertKind::RecoverySiteLost,
            db: None,
            subject,
        };
        match self.st.alerts.get(&id).map(|a| a.severity) {
            Some(s) if s == severity => {}
            Some(_) => {
                // The witness changed its answer: the alert says what is true now.
                self.clear(now, AlertKind::RecoverySiteLost, None, subject);
                self.raise(
                    now,
                    AlertKind::RecoverySiteLost,
                    None,
                    subject,
                    severity,
                    false,
                    text,
                );
            }
            None => {
                self.raise(
                    now,
                    AlertKind::RecoverySiteLost,
                    None,
                    subject,
                    severity,
                    false,
                    text,
                );
            }
        }
    }
}

impl SiteEngine {
    /// An artifact of this site's outbox or inbox had a manifest that cannot be read, and the
    /// adapter moved the pair into the quarantine (`Input::UnreadableManifest`).
    ///
    /// Alerted as a one-off `unreadable_manifest` notice (severity failure), the way `failover`
    /// and `switchover` are, not as a condition: when the engine hears of it the file is already
    /// aside and the recovery below is already under way, so nothing is left that could later
    /// clear. What can persist has conditions of its own that clear themselves: the hole the
    /// lost artifact may leave at the recovery site (`missing_log`, then `reseed`), a backup
    /// that fails (audited). A condition would instead wait for some later artifact of the
    /// database to be acknowledged or restored, and with a name that does not parse there is
    /// no database whose artifact could ever clear it.
    pub(super) fn unreadable_manifest(
        &mut self,
        now: Millis,
        outbox: bool,
        file: &str,
        db: Option<DbId>,
        key: Option<ArtifactKey>,
        reason: &str,
    ) {
        self.st.quarantined += 1;
        let key = key.filter(|k| self.valid_db(k.db));
        // The identity the adapter knew is surer than the database the file name says.
        let db = key.map(|k| k.db).or(db.filter(|d| self.valid_db(*d)));
        let which = match db {
            Some(d) => format!("database [{}]", self.db_name(d)),
            None => "every database (the file name names none configured)".to_string(),
        };
        let next = if !outbox {
            // Nothing to ask for: this engine acknowledges only what it was told it received
            // (`ArtifactReceived`), never a file a scan finds, and the primary ships again every
            // artifact it holds no acknowledgement for. One that was acknowledged already and
            // is still needed leaves a hole that `missing_log` reports and a reseed bridges.
            "Nothing is acknowledged for it: the primary ships again every artifact it has no \
             acknowledgement for; if it was acknowledged already and the chain needs it, the \
             hole raises missing_log and is bridged by a reseed from a new full backup."
                .to_string()
        } else if self.st.holder == self.me
            && matches!(
                self.st.role,
                Role::Primary | Role::Fenced | Role::SwitchingOver
            )
        {
            self.forget_unshippable(now, file, key);
            self.full_after_loss(now, db, &which)
        } else {
            "This site does not hold the epoch and ships nothing from its outbox: nothing else \
             is needed."
                .to_string()
        };
        let site = self.cfg.site_name(self.me);
        let text = super::texts::unreadable_manifest(site, file, outbox, reason, &next);
        let id = crate::alert::AlertId {
            kind: AlertKind::UnreadableManifest,
            db,
            subject: Subject::Site(self.me),
        };
        self.out
            .push_back(crate::protocol::Output::Alert(crate::alert::notice(
                now,
                id,
                Severity::Failure,
                text,
            )));
        self.audit(
            now,
            "unreadable manifest".into(),
            format!("{reason}; moved to the quarantine. {next}"),
            vec![
                ("file".into(), file.to_string()),
                (
                    "place".into(),
                    if outbox { "outbox" } else { "inbox" }.to_string(),
                ),
                ("db".into(), format!("{:?}", db.map(|d| d.0))),
            ],
        );
    }

    /// The driver healed a gap in the change capture of `db` (`Input::CaptureGap`): a one-off
    /// `capture_gap` warning, like `unreadable_manifest` a notice (the gap is already healed when
    /// the engine hears of it, nothing is left that could later clear), and an audit record.
    pub(super) fn capture_gap(&mut self, now: Millis, db: DbId, what: &str) {
        if !self.valid_db(db) {
            return;
        }
        let site = self.cfg.site_name(self.me);
        let text = super::texts::capture_gap(site, self.db_name(db), what);
        let id = crate::alert::AlertId {
            kind: AlertKind::CaptureGap,
            db: Some(db),
            subject: Subject::Site(self.me),
        };
        self.out
            .push_back(crate::protocol::Output::Alert(crate::alert::notice(
                now,
                id,
                Severity::Warning,
                text,
            )));
        self.audit(
            now,
            "capture gap".into(),
            format!("{what}; healed by a whole-database comparison"),
            vec![("db".into(), self.db_name(db).to_string())],
        );
    }

    /// A condition of `db`'s stream to the recovery site began or ended (`Input::StreamAlarm`):
    /// an alert raised or cleared. Synchronous mode degraded is critical (acknowledged commits
    /// may now be lost in a failover); a slot near its bound is a warning.
    pub(super) fn stream_alarm(
        &mut self,
        now: Millis,
        db: DbId,
        alarm: crate::protocol::StreamAlarm,
        active: bool,
        what: &str,
    ) {
        use crate::protocol::StreamAlarm;
        if !self.valid_db(db) {
            return;
        }
        let (kind, severity) = match alarm {
            StreamAlarm::SynchronousDegraded => {
                (AlertKind::SynchronousDegraded, Severity::Critical)
            }
            StreamAlarm::SlotNearBound => (AlertKind::SlotNearBound, Severity::Warning),
        };
        let subject = Subject::Site(self.me);
        if !active {
            self.clear(now, kind, Some(db), subject);
            return;
        }
        let site = self.cfg.site_name(self.me);
        let text = super::texts::stream_alarm(alarm, site, self.db_name(db), what);
        self.raise(now, kind, Some(db), subject, severity, false, text);
    }

    /// The outbox entry of a file that left the outbox (its identity from the adapter, else the
    /// entry whose seed-convention name is the file's): it can never be shipped, and would be
    /// retried forever. Forgotten without a `Discard` (the file is in the quarantine).
    fn forget_unshippable(&mut self, now: Millis, file: &str, key: Option<ArtifactKey>) {
        let key = key.filter(|k| self.st.outbox.contains_key(k)).or_else(|| {
            self.st
                .outbox
                .values()
                .find(|e| self.label(&e.meta) == file)
                .map(|e| e.meta.key)
        });
        let Some(e) = key.and_then(|k| self.st.outbox.remove(&k)) else {
            return;
        };
        match e.state {
            ShipState::InFlight { .. } => self.st.ship_in_flight -= 1,
            ShipState::Backoff { until } => self.st.timers.remove_ship_backoff(until, e.meta.key),
            ShipState::Queued => {}
        }
        self.try_ship(now);
        // A switchover waiting for the outbox to drain goes on; the target then cannot reach
        // the final positions across the hole, and the switchover is abandoned, not lossy.
        self.switchover_progress(now);
    }

    /// At the holder of the epoch: a new full backup, so that the chain continues past the lost
    /// artifact (the same decision as a `RequestFull` from the recovery site, and like it taken
    /// even while backups are paused or the lease is being renewed: a backup needs no writes).
    /// Returns what the alert says happens next.
    fn full_after_loss(&mut self, now: Millis, db: Option<DbId>, which: &str) -> String {
        if matches!(self.st.role, Role::Primary | Role::Fenced) {
            self.take_backup(now, db, crate::artifact::ArtifactKind::Full);
            format!(
                "A new full backup of {which} was started, so that the chain continues past the \
                 lost artifact at the recovery site."
            )
        } else {
            // Switching over: writes are stopped; taken once this site accepts writes again.
            let merged = match self.st.peer.full_wanted {
                Some(Some(d)) if Some(d) == db => db,
                Some(_) => None,
                None => db,
            };
            self.st.peer.full_wanted = Some(merged);
            format!(
                "A new full backup of {which} is taken once this site accepts writes again (a \
                 switchover is under way)."
            )
        }
    }
}
