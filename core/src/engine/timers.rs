//! Named timers. Every decision the engine takes on its own schedule hangs off one of these; the
//! adapter only calls `handle(now, Tick)` at `poll_timeout()`.

use crate::artifact::ArtifactKey;
use crate::ids::{DbId, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The engine's fixed timers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Timer {
    /// Look at every database: staleness, gaps, backlog, retry alerts.
    Monitor = 0,
    /// Send a heartbeat to the peer site.
    Heartbeat,
    /// Renew the lease at the arbiter.
    LeaseRenew,
    /// The primary must be fenced by now unless it renewed.
    FenceDeadline,
    /// Probe the primary and ask the arbiter for its view.
    Probe,
    /// Look for ships whose acknowledgement is overdue.
    ShipSweep,
    /// Look for operations whose completion is overdue, and re-issue them.
    OpSweep,
    FullBackup,
    IncrementalBackup,
    LogBackup,
    /// The current role procedure (failover, switchover, Auto Pilot wait, confirmation) has a
    /// deadline.
    RoleStep,
}

const TIMER_COUNT: usize = 11;

/// Fixed timers plus the two per-item schedules that need ordering (ship backoff, restore retry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    at: [Option<Millis>; TIMER_COUNT],
    pub ship_backoff: BTreeSet<(Millis, ArtifactKey)>,
    pub restore_retry: BTreeSet<(Millis, DbId)>,
}

impl Timers {
    pub fn set(&mut self, t: Timer, at: Millis) {
        self.at[t as usize] = Some(at);
    }
    /// Arm only if not armed, or armed later than `at`.
    pub fn set_earliest(&mut self, t: Timer, at: Millis) {
        let slot = &mut self.at[t as usize];
        if slot.is_none_or(|cur| at < cur) {
            *slot = Some(at);
        }
    }
    pub fn cancel(&mut self, t: Timer) {
        self.at[t as usize] = None;
    }
    pub fn get(&self, t: Timer) -> Option<Millis> {
        self.at[t as usize]
    }
    /// Take the timer if it is due.
    pub fn due(&mut self, t: Timer, now: Millis) -> bool {
        match self.at[t as usize] {
            Some(at) if at <= now => {
                self.at[t as usize] = None;
                true
            }
            _ => false,
        }
    }
    /// The earliest deadline of all.
    pub fn next(&self) -> Option<Millis> {
        // A plain loop: the adapter asks after every input, and the iterator chain costs ~4x.
        let mut m = Millis::MAX;
        for at in self.at {
            m = m.min(at.unwrap_or(Millis::MAX));
        }
        if let Some((t, _)) = self.ship_backoff.first() {
            m = m.min(*t);
        }
        if let Some((t, _)) = self.restore_retry.first() {
            m = m.min(*t);
        }
        (m != Millis::MAX).then_some(m)
    }
}
