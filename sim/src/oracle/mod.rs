//! The oracles: checkers separate from the engines they judge (TigerBeetle's `state_checker`
//! in spirit). They watch the world — databases, disks, links, what each engine emits — and
//! record a violation with the seed's time when an invariant breaks:
//!
//! | oracle | invariant |
//! |---|---|
//! | `one_writer` | at most one site accepts writes; no write is acknowledged at an epoch older than the newest (split brain) — `world.rs` |
//! | `prefix` | every secondary database is a prefix of the writer's history (`history.rs`) |
//! | `verified_restore` | nothing that failed verification is restored (`restores.rs`) |
//! | `stale_restore` | nothing from an epoch older than the newest is restored (`restores.rs`) |
//! | `epochs_grow` | no engine's epoch goes down, across restarts too — `world.rs`, `exec.rs` |
//! | `switchover_loss` | a planned switchover loses no acknowledged transaction (`history.rs`) |
//! | `rpo_bounds` | a failover's true loss lies within its reported `[rpo_lower, rpo_upper]` (`history.rs`) |
//! | `left_out` | a failover to a chosen point opens no database past the first artifact it reports left out (`history.rs`) |
//! | `archive_retention` | the archive never removes an artifact a kept point needs, and every archive verification restores a chain of the lineage it names (`exec.rs`) |
//! | `alert_threshold` | corruption, gaps, staleness, backlog, failing restores, disk pressure and a silent recovery site raise their alert within the threshold (`alerts.rs`) |
//! | `quiet` | a run without faults raises no alert (`alerts.rs`) |
//! | `catch_up` | after the faults heal, a writer exists and the secondary catches up within a bound (`liveness.rs`) |
//! | `rto` | with the arbiter reachable, a lost primary site is replaced within the RTO bound, unless it came back and wrote again (`liveness.rs`) |
//! | `switchover_availability` | a planned switchover leaves no site writable for at most `switchover_timeout_ms` + one lease (`availability.rs`) |
//! | `flapping_link` | a flapping inter-site link yields exactly one `link_down`, raised early and kept while it flaps (`availability.rs`) |
//! | `failover_hold_down` | at most one automatic failover per `failover.hold_down_ms` (`availability.rs`) |
//! | `auto_pilot` | every Auto Pilot path ends with a writable site or an active critical alert (`availability.rs`) |
//! | `drain_barrier` | a takeover asks for the epoch only after restoring every received, verified log that continues its chain (or after that log failed every drain retry) — `world.rs` |
//! | `handoff_heard` | the arbiter hands an epoch only to a site that reached it within one lease — `world.rs`; with etcd, only to a site whose calls reached etcd within the presence TTL (`witness.rs`) |
//! | `arbiter_epochs` | on the arbiter's own outputs: its epoch never goes backwards, one holder per epoch, renewals granted only to the holder, hand-offs only from it, a new epoch only after the lease plus the drift margin (`promises.rs`); with etcd, the same rules on the store's epoch record around every call and on every reply a site's translation makes (`witness.rs`) |
//! | `arbiter_reachable` | no `arbiter_unreachable` while the arbiter answers the site (`promises.rs`) |
//! | `primary_down_announced` | a lost primary is announced (critical `primary_down`) within the detection bound when the arbiter is reachable (`promises.rs`) |
//! | `switchover_ends` | a planned switchover completes or aborts within `switchover_timeout_ms` (`promises.rs`) |
//! | `journal_replay` | replaying a whole journal reproduces the engine's state (`exec.rs`) |
//! | `engine_panic`, `liveness` | engines never panic and never livelock — `world.rs` |

mod alerts;
mod availability;
mod history;
pub(crate) mod liveness;
mod promises;
mod restores;
mod witness;

pub use availability::{hold_down_ms, SwitchWatch, FLAP_REPORT_WITHIN, HOLD_DOWN_DEFAULT};
pub use liveness::Check;
pub use promises::{ArbiterWords, SwitchEnd};
pub use witness::EtcdWords;

use lifeboat_core::alert::AlertId;
use lifeboat_core::{
    AlertKind, ArtifactKey, ArtifactKind, ArtifactMeta, DbId, Millis, OpId, Severity,
};
use std::collections::BTreeMap;

/// More ships of one artifact than this within a simulated hour is a storm (a retry loop
/// without backoff): shipping once a second for an hour is already far beyond any backoff.
pub const SHIP_STORM: u32 = 3_600;

/// A restore that failed, as the world executed it.
#[derive(Clone, Debug)]
pub struct FailRec {
    /// Distinct operations that failed (an operation re-issued with the same id counts once,
    /// as the engine counts it).
    pub ops: Vec<OpId>,
    pub first: Millis,
}

/// What the oracles remember between events.
#[derive(Clone, Debug, Default)]
pub struct Oracles {
    /// The schedule has no fault (operator actions aside): nothing may be alerted.
    pub clean: bool,
    /// Last raise (or update) of (site, kind, database).
    pub last_raise: BTreeMap<(usize, AlertKind, Option<DbId>), Millis>,
    /// Active conditions per (site, kind, database): raises minus clears.
    pub active: BTreeMap<(usize, AlertKind, Option<DbId>), i32>,
    pub up_since: [Millis; 3],
    pub role_since: [Millis; 2],
    pub last_delivery: [[Millis; 3]; 3],
    /// The epoch at which each site's first `Acquire` was judged (oracle `drain_barrier`).
    pub drain_checked: [Option<lifeboat_core::Epoch>; 2],
    /// Per site and database: when the last good log arrived, and the furthest position
    /// received in a good copy.
    pub last_log: [Vec<Millis>; 2],
    pub received_end: [Vec<u64>; 2],
    /// The writer's positions at the previous tick.
    pub writer_prev: Vec<u64>,
    /// Per database: the last tick at which the writer had written nothing since the tick
    /// before (fenced, paused by its clients, or not the writer yet). "No new logs while the
    /// primary wrote on" is counted from there: a primary that resumes writes after a long
    /// fence owes no log for the time it wrote nothing.
    pub writer_still_at: Vec<Millis>,
    /// An open hole per site and database: (since, at position).
    pub gap_since: [Vec<Option<(Millis, u64)>>; 2],
    pub failures: [BTreeMap<ArtifactKey, FailRec>; 2],
    /// Operator pauses in effect, and when that last changed.
    pub pauses: u32,
    pub pause_changed: Option<Millis>,
    pub arbiter_down: bool,
    /// Logs produced and lost before shipping: (site, db, start, end).
    pub holes: Vec<(usize, usize, u64, u64)>,
    pub catch_up_mark: Option<(usize, Vec<u64>)>,
    /// Ships per (site, artifact) in the current simulated hour.
    pub ships: BTreeMap<(usize, ArtifactKey), (Millis, u32)>,
    /// Active alert identities per node, with the severity of their last raise or update.
    pub active_sev: BTreeMap<(usize, AlertId), Severity>,
    /// Every first raise of `link_down`: (when, node).
    pub link_down_raises: Vec<(Millis, usize)>,
    /// The last site whose databases were opened for writing, and when each site became that
    /// writer (took over from the other, or first started).
    pub last_writer: Option<usize>,
    pub writing_since: [Millis; 2],
    /// When each site last had its databases opened for writing (any `AllowWrites`/`Promote`).
    pub reopened_at: [Option<Millis>; 2],
    /// The first time any site accepted writes; since when none does (counted after the first).
    pub first_writer: Option<Millis>,
    pub no_writer_since: Option<Millis>,
    pub longest_gap: Millis,
    /// When each site last entered `promoting`.
    pub promoting_since: [Millis; 2],
    /// The start (entry into `promoting`) of the last automatic failover.
    pub last_auto_failover: Option<Millis>,
    /// When the last failover of any kind (forced ones too) started: the engine's hold-down
    /// counts from every failover a site took part in (README, Hold-down).
    pub last_failover: Option<Millis>,
    /// When each site last became the primary through a failover: its own hold-down counts
    /// from there as well (`promoted`), whatever failovers came after it.
    pub took_over_at: [Option<Millis>; 2],
    /// The last time the writer-gap bookkeeping saw a site accept writes.
    pub last_writer_at: Option<Millis>,
    /// `failover.hold_down_ms`, or [`HOLD_DOWN_DEFAULT`] while the configuration has no such key.
    pub hold_down: Millis,
    /// A planned switchover being watched for availability.
    pub switch_watch: Option<SwitchWatch>,
    /// Auto Pilot paths not yet ended by a writable site: when each began.
    pub auto_pilot: Vec<Millis>,
    /// What the arbiter has said (oracle `arbiter_epochs`).
    pub arbiter: ArbiterWords,
    /// Since when each site and the arbiter answer each other (oracle `arbiter_reachable`).
    pub arbiter_ok_since: [Option<Millis>; 2],
    /// The last raise (or update) of a critical `primary_down` about its peer at each site.
    pub peer_down_raised: [Option<Millis>; 2],
    /// Switchovers whose end is watched (oracle `switchover_ends`).
    pub switch_ends: Vec<SwitchEnd>,
}

impl Oracles {
    pub fn new(dbs: usize) -> Self {
        Oracles {
            last_log: [vec![0; dbs], vec![0; dbs]],
            received_end: [vec![0; dbs], vec![0; dbs]],
            writer_prev: vec![0; dbs],
            writer_still_at: vec![0; dbs],
            gap_since: [vec![None; dbs], vec![None; dbs]],
            ..Default::default()
        }
    }

    /// Count a ship; true when it makes a storm.
    pub fn shipped(&mut self, site: usize, key: ArtifactKey, now: Millis) -> bool {
        let hour = now / 3_600_000;
        if self.ships.len() > 100_000 {
            self.ships.retain(|_, v| v.0 == hour);
        }
        let e = self.ships.entry((site, key)).or_insert((hour, 0));
        if e.0 != hour {
            *e = (hour, 0);
        }
        e.1 += 1;
        e.1 > SHIP_STORM
    }

    pub fn delivered(&mut self, from: usize, to: usize, now: Millis) {
        self.last_delivery[from][to] = now;
    }
    pub fn role_changed(&mut self, site: usize, now: Millis) {
        self.role_since[site] = now;
    }
    pub fn node_down(&mut self, _n: usize, _now: Millis) {}
    pub fn node_up(&mut self, n: usize, now: Millis) {
        self.up_since[n] = now;
        if n < 2 {
            self.role_since[n] = now;
        }
    }
    pub fn site_lost(&mut self, _s: usize, _now: Millis) {}
    pub fn paused_changed(&mut self, paused: bool, now: Millis) {
        if paused {
            self.pauses += 1;
        } else {
            self.pauses = self.pauses.saturating_sub(1);
        }
        self.pause_changed = Some(now);
    }
    pub fn arbiter_lost(&mut self, _now: Millis) {
        self.arbiter_down = true;
    }
    pub fn arbiter_back(&mut self, _now: Millis) {
        self.arbiter_down = false;
    }
    pub fn never_shipped(&mut self, site: usize, db: usize, start: u64, end: u64) {
        self.holes.push((site, db, start, end));
    }
    pub fn received(&mut self, site: usize, meta: &ArtifactMeta, bad: bool, now: Millis) {
        let i = meta.key.db.0 as usize;
        if bad || i >= self.last_log[site].len() {
            return;
        }
        // A full backup is news from the writer as much as a log (a reseed's full ends a quiet
        // spell too).
        if matches!(meta.key.kind, ArtifactKind::Log | ArtifactKind::Full) {
            self.last_log[site][i] = now;
        }
        let e = &mut self.received_end[site][i];
        *e = (*e).max(meta.key.lsn_end.0);
    }

    /// Close or extend the writer-gap bookkeeping: `has` says whether any site accepts writes.
    pub fn writers_now(&mut self, has: bool, now: Millis) {
        if has {
            if let Some(g) = self.no_writer_since.take() {
                self.longest_gap = self.longest_gap.max(now.saturating_sub(g));
            }
            self.first_writer.get_or_insert(now);
            self.last_writer_at = Some(now);
        } else if self.first_writer.is_some() && self.no_writer_since.is_none() {
            self.no_writer_since = Some(now);
        }
    }

    /// The longest time without a writable site so far (an open gap counts up to `now`).
    pub fn longest_writer_gap(&self, now: Millis) -> Millis {
        let open = self.no_writer_since.map_or(0, |g| now.saturating_sub(g));
        self.longest_gap.max(open)
    }

    /// Some node has an active critical alert.
    pub fn critical_active(&self) -> bool {
        self.active_sev.values().any(|s| *s == Severity::Critical)
    }

    /// Raised or updated at or after `t`, or active now.
    pub fn raised_since(&self, site: usize, kind: AlertKind, db: Option<DbId>, t: Millis) -> bool {
        self.last_raise
            .get(&(site, kind, db))
            .is_some_and(|&at| at >= t)
            || self.active.get(&(site, kind, db)).is_some_and(|&n| n > 0)
    }
}
