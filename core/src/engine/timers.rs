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
    /// Primary, while it accepts writes: collect the logs the database finished on its own
    /// (`Command::CollectLogs`), every [`crate::defaults::COLLECT_LOGS_EVERY`].
    CollectLogs,
}

impl Timer {
    /// Every timer, in discriminant order.
    pub const ALL: [Timer; 12] = [
        Timer::Monitor,
        Timer::Heartbeat,
        Timer::LeaseRenew,
        Timer::FenceDeadline,
        Timer::Probe,
        Timer::ShipSweep,
        Timer::OpSweep,
        Timer::FullBackup,
        Timer::IncrementalBackup,
        Timer::LogBackup,
        Timer::RoleStep,
        Timer::CollectLogs,
    ];
}

/// The slots of [`Timers`]: one per entry of `ALL`, no longer counted by hand. A variant added
/// to `Timer` fails the exhaustive match below until it is named there, beside `ALL`; an entry
/// of `ALL` out of discriminant order fails the position check. The count is part of the
/// snapshot's layout (`SNAPSHOT_FORMAT_VERSION`).
const TIMER_COUNT: usize = Timer::ALL.len();
const _: () = {
    const fn listed(t: Timer) -> usize {
        match t {
            Timer::Monitor
            | Timer::Heartbeat
            | Timer::LeaseRenew
            | Timer::FenceDeadline
            | Timer::Probe
            | Timer::ShipSweep
            | Timer::OpSweep
            | Timer::FullBackup
            | Timer::IncrementalBackup
            | Timer::LogBackup
            | Timer::RoleStep
            | Timer::CollectLogs => t as usize,
        }
    }
    let mut i = 0;
    while i < TIMER_COUNT {
        assert!(
            listed(Timer::ALL[i]) == i,
            "Timer::ALL is in discriminant order"
        );
        i += 1;
    }
};

/// Fixed timers plus the two per-item schedules that need ordering (ship backoff, restore retry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "TimersState", into = "TimersState")]
pub struct Timers {
    at: [Option<Millis>; TIMER_COUNT],
    ship_backoff: BTreeSet<(Millis, ArtifactKey)>,
    restore_retry: BTreeSet<(Millis, DbId)>,
    /// The earliest deadline of the two schedules: `next` is asked after every input, and the
    /// trees are rarely touched, so walking them would miss the cache. Derived, never stored.
    first_item: Option<Millis>,
}

/// What a [`Timers`] stores (the cached earliest item is rebuilt on load).
#[derive(Clone, Serialize, Deserialize)]
struct TimersState {
    at: [Option<Millis>; TIMER_COUNT],
    ship_backoff: BTreeSet<(Millis, ArtifactKey)>,
    restore_retry: BTreeSet<(Millis, DbId)>,
}

impl From<TimersState> for Timers {
    fn from(s: TimersState) -> Timers {
        let mut t = Timers {
            at: s.at,
            ship_backoff: s.ship_backoff,
            restore_retry: s.restore_retry,
            first_item: None,
        };
        t.refresh();
        t
    }
}

impl From<Timers> for TimersState {
    fn from(t: Timers) -> TimersState {
        TimersState {
            at: t.at,
            ship_backoff: t.ship_backoff,
            restore_retry: t.restore_retry,
        }
    }
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
        let mut m = self.first_item.unwrap_or(Millis::MAX);
        for at in self.at {
            m = m.min(at.unwrap_or(Millis::MAX));
        }
        (m != Millis::MAX).then_some(m)
    }

    fn refresh(&mut self) {
        let a = self.ship_backoff.first().map(|e| e.0);
        let b = self.restore_retry.first().map(|e| e.0);
        self.first_item = match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn noted(&mut self, at: Millis) {
        self.first_item = Some(self.first_item.map_or(at, |m| m.min(at)));
    }

    /// Ship `key` again at `at` (after a failed ship).
    pub fn add_ship_backoff(&mut self, at: Millis, key: ArtifactKey) {
        self.ship_backoff.insert((at, key));
        self.noted(at);
    }
    pub fn remove_ship_backoff(&mut self, at: Millis, key: ArtifactKey) {
        if self.ship_backoff.remove(&(at, key)) {
            self.refresh();
        }
    }
    pub fn clear_ship_backoff(&mut self) {
        self.ship_backoff.clear();
        self.refresh();
    }
    /// The next artifact whose ship backoff is over at `now`, taken off the schedule.
    pub fn pop_ship_backoff(&mut self, now: Millis) -> Option<ArtifactKey> {
        let key = pop_due(&mut self.ship_backoff, now)?;
        self.refresh();
        Some(key)
    }
    /// Look at `db` again at `at` (a restore retry, or a gap's next attempt).
    pub fn add_restore_retry(&mut self, at: Millis, db: DbId) {
        self.restore_retry.insert((at, db));
        self.noted(at);
    }
    /// The next database whose retry is due at `now`, taken off the schedule.
    pub fn pop_restore_retry(&mut self, now: Millis) -> Option<DbId> {
        let db = pop_due(&mut self.restore_retry, now)?;
        self.refresh();
        Some(db)
    }
}

/// Take the earliest item of a schedule if it is due at `now`.
fn pop_due<T: Copy + Ord>(schedule: &mut BTreeSet<(Millis, T)>, now: Millis) -> Option<T> {
    let &(at, item) = schedule.first()?;
    if at > now {
        return None;
    }
    schedule.pop_first();
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::ArtifactKind;
    use crate::ids::{Epoch, Lsn};

    fn key(n: u64) -> ArtifactKey {
        ArtifactKey {
            db: DbId(0),
            epoch: Epoch(1),
            lsn_start: Lsn(n),
            lsn_end: Lsn(n + 1),
            kind: ArtifactKind::Log,
        }
    }

    #[test]
    fn the_earliest_deadline_follows_both_schedules_and_survives_a_reload() {
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Monitor, 500);
        t.add_restore_retry(300, DbId(4));
        t.add_ship_backoff(200, key(1));
        t.add_ship_backoff(400, key(2));
        assert_eq!(t.next(), Some(200));
        assert_eq!(t.pop_ship_backoff(199), None, "not due yet");
        assert_eq!(t.pop_ship_backoff(250), Some(key(1)));
        assert_eq!(t.next(), Some(300));
        let reloaded: Timers = bincode::deserialize(&bincode::serialize(&t).unwrap()).unwrap();
        assert_eq!(reloaded, t);
        assert_eq!(reloaded.next(), Some(300));
        assert_eq!(t.pop_restore_retry(300), Some(DbId(4)));
        t.remove_ship_backoff(400, key(2));
        assert_eq!(t.next(), Some(500), "only the fixed timer is left");
        t.add_ship_backoff(450, key(3));
        t.clear_ship_backoff();
        assert_eq!(t.next(), Some(500));
    }
}
