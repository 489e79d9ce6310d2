//! The simulated operator: answers a failover that waits for confirmation
//! (`world.confirm_answer` after `world.confirm_after`), and forces a failover at the recovery
//! site once it has had a critical `primary_down` active for `world.force_after`, when that is
//! safe by what the operator knows: `failover.fence_hook` is configured (the engine fences the
//! old primary before it promotes), or the primary site is gone and the schedule never brings
//! it back. (A forced failover without either accepts split brain by definition: scenarios
//! only.)

use crate::world::{Ev, World};
use lifeboat_core::alert::{AlertChange, AlertEvent, AlertId, Subject};
use lifeboat_core::engine::{Role, Step};
use lifeboat_core::protocol::{Input, OperatorRequest};
use lifeboat_core::{AlertKind, Millis, SiteId};
use lifeboat_scenarios::{ConfirmAnswer, FaultMode};

/// What the operator remembers.
#[derive(Clone, Debug, Default)]
pub struct Operator {
    /// The confirmation question each site asked last (its deadline), already answered.
    pub asked: [Option<Millis>; 2],
    /// When each site raised its current `primary_down` about its peer.
    pub peer_down_since: [Option<Millis>; 2],
}

impl World {
    /// After every input of a site: a failover that now waits for confirmation gets its answer
    /// scheduled (once per question).
    pub fn operator_look(&mut self, s: usize) {
        if !self.cfg.failover.confirm || s >= 2 {
            return;
        }
        let until = match self
            .site_engine(s)
            .state()
            .procedure
            .as_ref()
            .map(|p| &p.step)
        {
            Some(Step::Confirm { until }) => *until,
            _ => return,
        };
        if self.operator.asked[s] == Some(until) {
            return;
        }
        self.operator.asked[s] = Some(until);
        let req = match self.params.confirm_answer {
            ConfirmAnswer::Confirm => OperatorRequest::ConfirmFailover,
            ConfirmAnswer::Abort => OperatorRequest::AbortFailover,
            ConfirmAnswer::Silence => return,
        };
        let at = self.now + self.params.confirm_after.0.max(1);
        self.q.push(
            at,
            Ev::Operator {
                site: s,
                req,
                question: Some(until),
            },
        );
    }

    /// An alert from a site: a `primary_down` about its peer starts the operator's clock.
    pub fn operator_alert(&mut self, node: usize, a: &AlertEvent) {
        if node >= 2 || a.id.kind != AlertKind::PrimaryDown {
            return;
        }
        if a.id.subject != Subject::Site(SiteId((1 - node) as u16)) {
            return;
        }
        match a.change {
            AlertChange::Raised => {
                self.operator.peer_down_since[node] = Some(self.now);
                let after = self.params.force_after.0;
                if after > 0 {
                    let since = self.now;
                    self.q.push(
                        self.now + after,
                        Ev::Check(crate::oracle::Check::Force { site: node, since }),
                    );
                }
            }
            AlertChange::Cleared => self.operator.peer_down_since[node] = None,
            _ => {}
        }
    }

    /// `primary_down` has been active at `s` since `since`: force a failover there if safe.
    pub fn operator_force(&mut self, s: usize, since: Millis) {
        if self.operator.peer_down_since[s] != Some(since) {
            return;
        }
        let other = 1 - s;
        let id = AlertId {
            kind: AlertKind::PrimaryDown,
            db: None,
            subject: Subject::Site(SiteId(other as u16)),
        };
        if !self.oracle.active_sev.contains_key(&(s, id)) {
            return;
        }
        let gone_for_good = !self.sites[other].alive
            && !self
                .schedule
                .iter()
                .any(|f| f.mode == Some(FaultMode::OldPrimaryReturns));
        let safe = self.cfg.failover.fence_hook || gone_for_good;
        let ready = self.sites[s].alive
            && self.nodes[s].up
            && self.role(s) == Some(Role::Secondary)
            && self.site_engine(s).state().procedure.is_none();
        if !safe || !ready {
            return;
        }
        self.out.forced_failovers += 1;
        let name = self.node_name(s);
        self.trace
            .note(self.now, || format!("OPERATOR {name}: failover --force"));
        let req = self.forced_failover_request();
        self.feed(s, Input::Operator(req), None);
    }

    /// An operator's forced failover. A standby that lags on purpose is taken over, every
    /// other time, at a point inside its delay (`failover --until`): what came after is left
    /// out, and the loss bounds must still hold the truth.
    pub fn forced_failover_request(&self) -> OperatorRequest {
        let delay = self.cfg.restore.apply_delay_ms;
        if delay > 0 && (self.now / 1_000).is_multiple_of(2) {
            let until = crate::world::UTC_AT_START + self.now.saturating_sub(delay / 2) as i64;
            OperatorRequest::FailoverUntil {
                force: true,
                until: lifeboat_core::UtcMillis(until),
            }
        } else {
            OperatorRequest::Failover { force: true }
        }
    }

    /// A scheduled operator request; an answer to a confirmation question only while that
    /// question is still open.
    pub fn operator_request(&mut self, s: usize, req: OperatorRequest, question: Option<Millis>) {
        if let Some(until) = question {
            let open = matches!(
                self.site_engine(s).state().procedure.as_ref().map(|p| &p.step),
                Some(Step::Confirm { until: u }) if *u == until
            );
            if !open {
                return;
            }
        }
        if !self.sites[s].alive || !self.nodes[s].up {
            return;
        }
        let name = self.node_name(s);
        self.trace
            .note(self.now, || format!("OPERATOR {name}: {req:?}"));
        self.feed(s, Input::Operator(req), None);
    }
}
