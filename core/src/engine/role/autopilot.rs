//! Auto Pilot at this site: its own database service is checked on every probe tick.
//!
//! The paths (README, "Auto Pilot"):
//! - The primary's service stops answering its own checks (`unhealthy_count` failures over
//!   `unhealthy_for_ms`): a critical `primary_down` alert names this site. With
//!   `failover.local_restart` the service is restarted once; if the restart fails, or the service
//!   is still down `local_restart_wait_ms` after it, the primary resigns its lease. Without a
//!   local restart it resigns once the service has been down for `local_restart_wait_ms`. A
//!   resigned lease lapses and the recovery site takes over (its probes fail and the arbiter
//!   reports the lapse).
//! - A resigned primary keeps checking: once its service answers again and it still holds the
//!   epoch, it takes the lease up again and writes resume. No path ends with no writable site and
//!   no active critical alert.
//! - A site about to take over checks its own service first: a failover is not started, and a
//!   drain does not ask for the epoch, while this site's own service does not answer.
//! - After a failover this site took part in, no other automatic failover for
//!   `failover.hold_down_ms` (an operator can still force one).

use super::*;
use crate::alert::{AlertKind, Subject};
use crate::engine::{OpPurpose, SiteEngine};
use crate::ids::{Millis, OpId};
use crate::protocol::{Command, Failure};

impl SiteEngine {
    /// Issue a check of the local service, unless one is in flight. One unanswered for two probe
    /// periods counts as failed (its late answer is ignored).
    pub(in crate::engine) fn self_check_tick(&mut self, now: Millis) {
        let patience = 2 * self.cfg.failover.probe_every_ms.max(1);
        if let Some((op, at)) = self.st.own.checking {
            if now.saturating_sub(at) < patience {
                return;
            }
            self.st.ops.remove(&op);
            self.st.own.checking = None;
            self.own_failed(now, "the check did not answer in time");
        }
        let op = self.issue(now, OpPurpose::SelfCheck, |op| Command::CheckService { op });
        self.st.own.checking = Some((op, now));
    }

    pub(in crate::engine) fn self_check_done(
        &mut self,
        now: Millis,
        op: OpId,
        result: Result<(), Failure>,
    ) {
        if self.st.own.checking.is_some_and(|(o, _)| o == op) {
            self.st.own.checking = None;
        }
        match result {
            Ok(()) => self.own_ok(now),
            Err(f) => {
                self.st.own.answered_failures = self.st.own.answered_failures.saturating_add(1);
                self.own_failed(now, &format!("{} {}", f.code, f.message))
            }
        }
    }

    /// This site's own service does not answer: its last `unhealthy_count` checks failed (one
    /// failed check, a busy database, is no outage).
    pub(in crate::engine) fn own_service_down(&self) -> bool {
        self.st.own.failed >= self.cfg.failover.unhealthy_count.max(1)
    }

    /// This site's own service has answered its last `unhealthy_count` checks with errors, over
    /// at least `unhealthy_for_ms`: the evidence a switchover target needs to refuse. Checks that
    /// only timed out do not count: a loaded recovery site refused a real switchover on them.
    pub(in crate::engine) fn own_service_refuses(&self, now: Millis) -> bool {
        let f = &self.cfg.failover;
        let o = &self.st.own;
        o.answered_failures >= f.unhealthy_count.max(1)
            && o.first_failure
                .is_some_and(|t| now.saturating_sub(t) >= f.unhealthy_for_ms)
    }

    /// Within the hold-down after a failover this site took part in.
    pub(in crate::engine) fn held_down(&self, now: Millis) -> bool {
        self.st
            .own
            .failover_at
            .is_some_and(|t| now.saturating_sub(t) < self.cfg.failover.hold_down_ms)
    }

    /// An automatic failover may start: not held down and this site's own service answers.
    /// Says why not once per outage (the caller keeps its critical alert raised).
    pub(in crate::engine) fn may_take_over(&mut self, now: Millis) -> bool {
        let why = if self.held_down(now) {
            format!(
                "a failover happened {} s ago; no automatic failover within failover.hold_down_ms \
                 ({} s): an operator can force one",
                self.st
                    .own
                    .failover_at
                    .map_or(0, |t| now.saturating_sub(t) / 1000),
                self.cfg.failover.hold_down_ms / 1000
            )
        } else if self.own_service_down() {
            "this site's own database service does not answer its checks: taking over would not \
             help"
                .to_string()
        } else {
            return true;
        };
        let this_outage = self
            .st
            .own
            .held_down_at
            .is_some_and(|t| self.st.peer.first_failure.is_some_and(|f| f <= t));
        if !this_outage {
            self.st.own.held_down_at = Some(now);
            self.audit(now, "failover held back".into(), why, vec![]);
        }
        false
    }

    fn own_ok(&mut self, now: Millis) {
        let o = &mut self.st.own;
        let was_down = o.failed > 0;
        o.failed = 0;
        o.answered_failures = 0;
        o.first_failure = None;
        o.last_ok = Some(now);
        o.restart_at = None;
        if was_down {
            self.clear(now, AlertKind::PrimaryDown, None, Subject::Site(self.me));
        }
        let holds =
            matches!(self.st.role, Role::Primary | Role::Fenced) && self.st.holder == self.me;
        if self.st.lease.resigned && holds {
            // The service is back and nobody took over: take the lease up again.
            self.st.lease.resigned = false;
            self.st.timers.set(crate::engine::Timer::LeaseRenew, now);
            self.audit(
                now,
                "lease taken up again".into(),
                "the database service answers again and this site still holds the epoch".into(),
                vec![Self::kv("epoch", self.st.epoch)],
            );
        }
    }

    fn own_failed(&mut self, now: Millis, why: &str) {
        let o = &mut self.st.own;
        o.failed = o.failed.saturating_add(1);
        let first = *o.first_failure.get_or_insert(now);
        let failed = o.failed;
        let f = self.cfg.failover.clone();
        let down_for = now.saturating_sub(first);
        let holds =
            matches!(self.st.role, Role::Primary | Role::Fenced) && self.st.holder == self.me;
        if !holds || failed < f.unhealthy_count || down_for < f.unhealthy_for_ms {
            return;
        }
        let text = crate::engine::texts::own_service_down(
            self.cfg.site_name(self.me),
            failed,
            down_for / 1000,
            why,
        );
        self.raise_primary_down(now, Subject::Site(self.me), text);
        if self.st.lease.resigned || !f.automatic || !self.cfg.arbiter {
            return;
        }
        if f.local_restart && self.st.own.restart_at.is_none() {
            self.st.own.restart_at = Some(now);
            self.issue(now, OpPurpose::Role, |op| Command::RestartService { op });
            self.audit(
                now,
                "local restart".into(),
                "Auto Pilot: this site's database service does not answer its own checks".into(),
                vec![Self::kv("failed_checks", failed)],
            );
            return;
        }
        let since = self.st.own.restart_at.unwrap_or(first);
        if now.saturating_sub(since) >= f.local_restart_wait_ms {
            let why = if f.local_restart {
                "Auto Pilot: the database service is still down after the local restart"
            } else {
                "the database service has been down for failover.local_restart_wait_ms \
                 (no local restart configured)"
            };
            self.resign(now, why);
        }
    }
}
