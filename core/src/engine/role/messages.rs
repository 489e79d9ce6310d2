//! Messages from the peer and the arbiter, and operator requests.

use super::*;
use crate::alert::{AlertKind, Severity, Subject};
use crate::artifact::ArtifactKind;
use crate::engine::{texts, OpPurpose, SiteEngine};
use crate::ids::{DbId, Millis};
use crate::protocol::{ArbiterView, Command, Message, OperatorRequest, Peer};

impl SiteEngine {
    /// A full backup of `db` is being taken (its command outstanding), or is in the outbox on
    /// its first ship (queued or in flight, no failure and no refusal yet). A full that failed
    /// or was refused does not count: the copy may be damaged, and a new one is taken.
    fn full_under_way(&self, db: DbId) -> bool {
        let taking = self.st.ops.values().any(|o| {
            matches!(o.cmd, Command::TakeBackup { db: d, kind: ArtifactKind::Full, .. }
                if d.is_none_or(|d| d == db))
        });
        taking
            || self.st.outbox.values().any(|e| {
                e.meta.key.db == db && e.meta.key.kind == ArtifactKind::Full && e.attempts == 0
            })
    }

    pub(in crate::engine) fn message(&mut self, now: Millis, from: Peer, msg: Message) {
        match (from, msg) {
            (Peer::Site(s), Message::Ack { key }) if s == self.peer => self.acked(now, key),
            (Peer::Site(s), Message::Resend { key }) if s == self.peer => self.resend(now, key),
            (Peer::Site(s), Message::Heartbeat(hb)) if s == self.peer => {
                self.on_heartbeat(now, s, hb)
            }
            (Peer::Site(s), Message::HeartbeatAck { seq }) if s == self.peer => {
                self.heartbeat_acked(now, seq)
            }
            (Peer::Site(s), Message::RequestFull { db }) if s == self.peer => {
                self.st.peer.last_heard = Some(now);
                // A fenced holder answers too (a backup needs no writes): the rebuild of the
                // peer must not wait for the next request because our lease was being renewed.
                if matches!(self.st.role, Role::Primary | Role::Fenced) {
                    let all: Vec<DbId> = (0..self.st.dbs.len() as u32).map(DbId).collect();
                    let asked = db.map_or(all, |d| vec![d]);
                    if !asked.is_empty() && asked.iter().all(|d| self.full_under_way(*d)) {
                        // The recovery site asks again while a large full is still being taken
                        // or shipped: a second one would only compete with the first.
                        self.audit(
                            now,
                            "no new full backup".into(),
                            "the recovery site asked again while a full backup is being taken \
                             or shipped"
                                .into(),
                            vec![Self::kv("db", format!("{db:?}"))],
                        );
                        return;
                    }
                    self.audit(
                        now,
                        "full backup".into(),
                        "the recovery site asked for one (reseed or rebuild)".into(),
                        vec![Self::kv("db", format!("{db:?}"))],
                    );
                    self.take_backup(now, db, ArtifactKind::Full);
                } else if matches!(
                    self.st.role,
                    Role::SwitchingOver | Role::Promoting | Role::SwitchoverTarget
                ) {
                    // Remembered until writes resume here: asking again would wait for the
                    // rebuild's long retry.
                    let merged = match self.st.peer.full_wanted {
                        Some(Some(d)) if Some(d) == db => db,
                        Some(_) => None,
                        None => db,
                    };
                    self.st.peer.full_wanted = Some(merged);
                }
            }
            (Peer::Site(s), Message::RestartRequest { .. }) if s == self.peer => {
                // One restart per outage: this site's own checks may have asked for it already.
                if self.holds_epoch() && self.st.own.restart_at.is_none() {
                    self.st.own.restart_at = Some(now);
                    self.issue(now, OpPurpose::Role, |op| Command::RestartService { op });
                    self.audit(now, "local restart".into(), "Auto Pilot: the recovery site sees the service down while this agent is reachable".into(), vec![]);
                }
            }
            (Peer::Site(s), Message::SwitchoverRequest) if s == self.peer => {
                self.start_switchover(now)
            }
            (Peer::Site(s), Message::SwitchoverFinal { epoch, positions }) if s == self.peer => {
                self.on_switchover_final(now, epoch, positions)
            }
            (Peer::Site(s), Message::SwitchoverReady { epoch }) if s == self.peer => {
                self.on_switchover_ready(now, epoch)
            }
            (Peer::Site(s), Message::SwitchoverAborted { epoch, reason }) if s == self.peer => {
                if self.st.role == Role::SwitchoverTarget && epoch == self.st.epoch {
                    self.st.procedure = None;
                    self.st.role = Role::Secondary;
                    self.audit(now, "switchover aborted".into(), reason, vec![]);
                } else if self.st.role == Role::SwitchingOver
                    && epoch == self.st.epoch
                    && !self
                        .st
                        .procedure
                        .as_ref()
                        .is_some_and(|p| matches!(p.step, Step::Handoff { .. }))
                {
                    // The target refused (it is rebuilding, or promoting itself).
                    self.abort_switchover(now, &reason);
                }
            }
            (Peer::Site(s), Message::EpochNotice { epoch, holder }) if s == self.peer => {
                self.learn_epoch(now, epoch, holder);
                if self.st.role == Role::SwitchoverTarget
                    && holder == self.me
                    && epoch == self.st.epoch
                {
                    self.switchover_renew(now);
                }
            }
            (
                Peer::Arbiter,
                Message::Granted {
                    epoch,
                    lease_ms,
                    req,
                },
            ) => self.granted(now, epoch, lease_ms, req),
            (Peer::Arbiter, Message::Denied { view, reason, .. }) => {
                self.denied(now, view, &reason)
            }
            (Peer::Arbiter, Message::View { view, .. }) => self.on_view(now, view),
            (
                Peer::Arbiter,
                Message::SiteSeen {
                    site, heard_ms_ago, ..
                },
            ) if site == self.peer => {
                self.st.peer.peer_seen = Some((now, heard_ms_ago));
                self.peer_lost_check(now);
            }
            (Peer::Site(s), Message::LostWrites(lost)) if s == self.peer => {
                self.lost_writes(now, s, lost);
            }
            (from, msg) => self.reject(now, "message", format!("unexpected {msg:?} from {from:?}")),
        }
    }

    /// An operator's failover, to the newest point or (`until`) to a chosen one.
    fn operator_failover(
        &mut self,
        now: Millis,
        force: bool,
        until: Option<crate::ids::UtcMillis>,
    ) {
        if self.st.role != Role::Secondary || self.st.procedure.is_some() {
            return self.reject(
                now,
                "failover",
                format!("this site is {}", self.st.role.as_str()),
            );
        }
        let view = self.st.peer.arbiter_view.clone().unwrap_or(ArbiterView {
            epoch: self.st.epoch,
            holder: None,
            holder_renewing: false,
            lease_lapsed: false,
            since_renewal_ms: None,
        });
        if !force && self.cfg.arbiter && !view.lease_lapsed {
            return self.reject(now, "failover", "the arbiter does not report the primary's lease lapsed; use --force to accept the risk".into());
        }
        if let Some(why) = until.and_then(|u| self.past_point(u)) {
            return self.reject(now, "failover", why);
        }
        let detected = p_first(&self.st.peer, now);
        let why = if force {
            "an operator forced a failover"
        } else {
            "an operator asked for a failover and the arbiter reports the lease lapsed"
        };
        self.start_failover_until(now, force, true, detected, &view, why, until);
    }

    pub(in crate::engine) fn operator(&mut self, now: Millis, req: OperatorRequest) {
        self.audit(
            now,
            "operator request".into(),
            format!("{req:?}"),
            vec![Self::kv("role", self.st.role.as_str())],
        );
        match req {
            OperatorRequest::Switchover => {
                if self.st.role == Role::Primary {
                    self.start_switchover(now);
                } else if self.st.role == Role::Secondary {
                    self.send_peer(Message::SwitchoverRequest);
                }
            }
            OperatorRequest::Failback => {
                let original = self.cfg.initial_primary_id();
                if self.st.holder == original {
                    self.reject(
                        now,
                        "failback",
                        "the original primary already holds the epoch".into(),
                    );
                } else if self.st.role == Role::Primary {
                    self.start_switchover(now);
                } else if self.st.role == Role::Secondary {
                    self.send_peer(Message::SwitchoverRequest);
                }
            }
            OperatorRequest::Failover { force } => self.operator_failover(now, force, None),
            OperatorRequest::FailoverUntil { force, until } => {
                self.operator_failover(now, force, Some(until))
            }
            OperatorRequest::ConfirmFailover => {
                if self
                    .st
                    .procedure
                    .as_ref()
                    .is_some_and(|p| matches!(p.step, Step::Confirm { .. }))
                {
                    self.set_step(Step::Drain);
                    self.drain_step(now);
                }
            }
            OperatorRequest::AbortFailover => {
                if self.st.procedure.as_ref().is_some_and(|p| {
                    matches!(
                        p.step,
                        Step::Confirm { .. } | Step::LocalRestart { .. } | Step::Drain
                    )
                }) {
                    self.st.peer.declined_at = Some(now);
                    self.abort_procedure(now, "aborted by an operator");
                }
            }
            OperatorRequest::Drill { db } => self.drill(now, db),
            OperatorRequest::PauseBackups => {
                self.st.backups_paused = true;
                self.pause_check(now);
            }
            OperatorRequest::ResumeBackups => {
                self.st.backups_paused = false;
                self.pause_check(now);
            }
            OperatorRequest::Reseed { db } => {
                if self.valid_db(db) && self.restores() {
                    self.start_reseed(now, db, "an operator asked for it");
                } else {
                    self.reject(
                        now,
                        "reseed",
                        format!(
                            "database {db} cannot be reseeded at a {} site",
                            self.st.role.as_str()
                        ),
                    );
                }
            }
        }
    }

    pub(in crate::engine) fn drill(&mut self, now: Millis, db: Option<DbId>) {
        if !self.restores() {
            return self.reject(now, "drill", "drills run at the recovery site".into());
        }
        let dbs: Vec<DbId> = match db {
            Some(d) if self.valid_db(d) => vec![d],
            Some(d) => return self.reject(now, "drill", format!("unknown database {d}")),
            None => (0..self.st.dbs.len() as u32).map(DbId).collect(),
        };
        for db in dbs {
            // The chain a drill restores is the engine's choice: the full and the restored
            // artifacts that continue it to the position (kept in step by every restore).
            let d = &self.st.dbs[db.0 as usize];
            let why = match d.position {
                None => Some("nothing restored yet".to_string()),
                Some(p) if d.drill_end() != Some(p) => Some(format!(
                    "no chain of retained artifacts from a full backup reaches the restored \
                     position {p} (the copy moved without a restore: a switchover or a \
                     rebuild); the next full backup restored or passed starts one"
                )),
                Some(_) => None,
            };
            if let Some(why) = why {
                let text = texts::drill_failed(self.db_name(db), None, &why);
                self.raise(
                    now,
                    AlertKind::DrillFailed,
                    Some(db),
                    Subject::None,
                    Severity::Failure,
                    false,
                    text,
                );
                continue;
            }
            let chain = self.st.dbs[db.0 as usize].drill_chain.clone();
            let upto = chain.last().map_or(crate::ids::Lsn(0), |m| m.key.lsn_end);
            self.issue(now, OpPurpose::Drill { db }, |op| Command::Drill {
                op,
                db,
                upto,
                chain,
            });
        }
    }
}
