//! One database's chain at the secondary: verified artifacts waiting to be restored, the restore
//! position, and the chain rule that picks what to restore next.

use crate::artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
use crate::ids::{Epoch, Lsn, Millis, OpId, UtcMillis};
use crate::name::ArtifactName;
use crate::protocol::Failure;
use serde::{Deserialize, Serialize};

/// A received, verified artifact that is not restored yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub meta: ArtifactMeta,
    pub received_at: Millis,
    /// Failed restore attempts so far.
    pub attempts: u32,
    /// Not to be tried again before this time (after a failure).
    pub retry_at: Option<Millis>,
    /// When it first failed.
    pub first_failure_at: Option<Millis>,
    pub last_error: Option<Failure>,
}

/// What the chain holds back (see [`DbState::next_at`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Hold {
    /// Artifacts wait this long after they arrive before they are applied.
    pub delay_ms: Millis,
    /// Artifacts created after this time are left out (a failover to a chosen point).
    pub until: Option<crate::ids::UtcMillis>,
}

impl Hold {
    pub const NONE: Hold = Hold {
        delay_ms: 0,
        until: None,
    };

    fn holds(&self, x: &Pending, now: Millis) -> bool {
        self.delay_ms > 0 && x.received_at.saturating_add(self.delay_ms) > now
    }

    pub fn leaves_out(&self, m: &ArtifactMeta) -> bool {
        self.until.is_some_and(|u| m.created_utc > u)
    }
}

/// A position no received artifact covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The restore position where the chain stops.
    pub at: Lsn,
    /// The first artifact after the gap.
    pub next: ArtifactMeta,
    pub since: Millis,
    /// Restore passes that found the gap still open (the seed counts each read of the log
    /// after the gap as an attempt).
    pub attempts: u32,
}

/// What the chain rule says to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing received is restorable now.
    Nothing,
    /// Restore this artifact (index into `pending`).
    Restore(usize),
    /// Only artifacts after a hole are available.
    Gap { first_after: usize },
    /// Only failed artifacts cover the position, and none may be retried yet.
    Waiting,
}

/// What the log-shipping monitor keeps of an artifact it saw (the last backup, copy and
/// restore of a database): where it sits in the chain, what its name is made of, and when this
/// site saw it. Under half the size of the manifest, and one cache line at most: each artifact
/// writes two of these.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub lsn_start: Lsn,
    pub lsn_end: Lsn,
    pub epoch: Epoch,
    pub created_utc: UtcMillis,
    /// When this site saw it (engine time).
    pub at: Millis,
    /// The name's retry field when it was seen.
    pub retry: u32,
    pub kind: ArtifactKind,
}

impl Seen {
    pub fn of(meta: &ArtifactMeta, at: Millis) -> Seen {
        Seen {
            lsn_start: meta.key.lsn_start,
            lsn_end: meta.key.lsn_end,
            epoch: meta.key.epoch,
            created_utc: meta.created_utc,
            at,
            retry: meta.retry,
            kind: meta.key.kind,
        }
    }

    /// The artifact's name (the seed's naming convention) for database `db`.
    pub fn name(&self, db: &str) -> ArtifactName {
        ArtifactName::new(db, self.created_utc, self.kind, self.retry)
    }
}

/// A database's replication state at one site. Kept small: 100,000 of them must fit in well
/// under a KiB each.
///
/// Laid out for the cache (`repr(C)`, line-aligned, offsets checked below): with many databases
/// each artifact finds its database's state in memory, not in the cache, so what an artifact
/// reads and writes shares as few cache lines as possible. Receiving touches lines 0-3,
/// completing a restore lines 0, 1 and 4, a backup at the primary line 2 only, and the
/// monitor's periodic pass lines 0 and 1.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C, align(64))]
pub struct DbState {
    // ---- line 0 (with line 1: what the monitor's pass over every database reads) ----
    /// Restored position; `None` before the first full backup was restored.
    pub position: Option<Lsn>,
    /// Received and verified, not yet restored, ordered by (lsn_start, lsn_end, kind).
    pub pending: Vec<Pending>,
    /// What the primary produced, as far as this site knows (RPO).
    pub known_produced: Lsn,
    /// When the last transaction log arrived (or the engine started watching).
    pub last_log_at: Millis,
    /// Copies that failed verification and were re-requested.
    pub recopies: u32,

    // ---- line 1 ----
    /// The restore in progress.
    pub in_flight: Option<(OpId, ArtifactKey)>,
    /// A reseed (drop and recreate from a new full) is under way since this time.
    pub reseed_since: Option<Millis>,
    /// The open gap, if any (boxed, like `retained_full`: rare or rarely changing, and kept out
    /// of the lines every artifact touches).
    pub gap: Option<Box<Gap>>,

    // ---- line 2 ----
    /// The newest verified full backup kept for drills and reseeds.
    pub retained_full: Option<Box<ArtifactMeta>>,
    /// Log-shipping monitor: the newest backup known (by creation time).
    pub last_backup: Option<Seen>,
    /// Waiting for a restore slot.
    pub queued: bool,
    /// The engine started the reseed itself (a hole, a dead artifact): an artifact that continues
    /// the chain cancels it. An operator's reseed or a rebuild is never cancelled.
    pub reseed_auto: bool,

    // ---- line 3 ----
    /// Log-shipping monitor: the last copy received and verified.
    pub last_copy: Option<Seen>,
    /// `lsn_end` of the full backup the current chain is based on (for incrementals).
    pub current_full: Option<Lsn>,

    // ---- line 4 ----
    /// Log-shipping monitor: the last restore that succeeded.
    pub last_restore: Option<Seen>,
    pub last_restore_latency: Option<Millis>,

    // ---- line 5 ----
    /// When this site last asked the primary for a full backup of the database (first copy or
    /// reseed); asked again every `restore.op_timeout_ms` until one arrives.
    #[serde(default)]
    pub full_asked_at: Option<Millis>,
    /// What a drill restores: a verified full at or below the position, then the restored
    /// artifacts that continue it by the chain rule, each reaching furthest, ending at the
    /// position. Empty when this site knows no such chain (nothing restored yet, or the
    /// position moved without a restore: a rebuild, a switchover). Bounded: it starts over at
    /// every full restored, an incremental replaces the logs it covers, and it moves to a newer
    /// retained full once the position passes it (the prune then drops what came before).
    #[serde(default)]
    pub drill_chain: Vec<ArtifactMeta>,
}

// The layout above, checked (64-bit targets).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Seen>() <= 48);
    assert!(offset_of!(DbState, in_flight) == 64);
    assert!(offset_of!(DbState, retained_full) == 128);
    assert!(offset_of!(DbState, reseed_auto) < 192);
    assert!(offset_of!(DbState, last_copy) == 192);
    assert!(offset_of!(DbState, last_restore) == 256);
    assert!(offset_of!(DbState, full_asked_at) == 320);
    // The drill chain shares line 5: only a restore's completion and a drill read it.
    assert!(offset_of!(DbState, drill_chain) == 336);
    assert!(size_of::<DbState>() == 384);
};

/// At the primary: a database's write position. Kept apart from [`DbState`] in a dense vector:
/// position samples arrive for random databases many times a second, and 24 bytes a database
/// stay in cache where a whole `DbState` would not.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritePosition {
    pub lsn: Lsn,
    /// Not yet acknowledged by the recovery site: carried in every heartbeat until one that
    /// carried this very position is acknowledged (`SiteState::dirty` lists these).
    pub dirty: bool,
    /// The position the latest heartbeat carried.
    pub sent: Lsn,
}

/// Chain order: by start, then end, then kind.
pub(super) fn order(m: &ArtifactMeta) -> (Lsn, Lsn, ArtifactKind) {
    (m.key.lsn_start, m.key.lsn_end, m.key.kind)
}

impl DbState {
    /// Whether `meta` is already restored past or already waiting.
    pub fn covers(&self, meta: &ArtifactMeta) -> bool {
        if let Some(p) = self.position {
            if meta.key.lsn_end <= p {
                return true;
            }
        }
        self.pending.iter().any(|x| x.meta.key == meta.key)
            || self.in_flight.is_some_and(|(_, k)| k == meta.key)
    }

    /// Insert a verified artifact in chain order. Returns false for a duplicate.
    pub fn insert(&mut self, meta: ArtifactMeta, now: Millis) -> bool {
        if self.pending.iter().any(|x| x.meta.key == meta.key) {
            return false;
        }
        if self.pending.capacity() == 0 {
            // Usually one artifact waits at a time: a vector's default first allocation (four)
            // would make the many databases' chains four times the memory they use.
            self.pending.reserve_exact(1);
        }
        let idx = self
            .pending
            .partition_point(|x| order(&x.meta) <= order(&meta));
        self.pending.insert(
            idx,
            Pending {
                meta,
                received_at: now,
                attempts: 0,
                retry_at: None,
                first_failure_at: None,
                last_error: None,
            },
        );
        true
    }

    /// Remove pending artifacts that the position already covers; returns them.
    pub fn drop_covered(&mut self) -> Vec<ArtifactMeta> {
        let Some(p) = self.position else {
            return Vec::new();
        };
        // Usually nothing is covered: answer without `retain`'s bookkeeping.
        if self.pending.iter().all(|x| x.meta.key.lsn_end > p) {
            return Vec::new();
        }
        let mut gone = Vec::new();
        self.pending.retain(|x| {
            let covered = x.meta.key.lsn_end <= p;
            if covered {
                gone.push(x.meta);
            }
            !covered
        });
        gone
    }

    /// Whether a pending artifact may be applied at the current position (the chain rule).
    pub fn applies(&self, m: &ArtifactMeta) -> bool {
        applies_at(
            self.position,
            self.current_full,
            self.retained_full.as_deref(),
            m,
        )
    }

    /// Where the drill chain ends (the position a drill of it reaches).
    pub fn drill_end(&self) -> Option<Lsn> {
        self.drill_chain.last().map(|m| m.key.lsn_end)
    }

    /// Whether `m` continues the drill chain by the chain rule: it applies at the chain's end on
    /// a copy restored from the chain's full.
    fn continues_drill(&self, chain: &[ArtifactMeta], m: &ArtifactMeta) -> bool {
        let (Some(full), Some(last)) = (chain.first(), chain.last()) else {
            return false;
        };
        m.key.kind != ArtifactKind::Full
            && applies_at(
                Some(last.key.lsn_end),
                Some(full.key.lsn_end),
                self.retained_full.as_deref(),
                m,
            )
    }

    /// Append a restored artifact that continues `chain`, dropping the artifacts it makes
    /// unnecessary (an incremental covers the logs since its base). False when it does not
    /// continue the chain.
    fn push_drill(&self, chain: &mut Vec<ArtifactMeta>, m: ArtifactMeta) -> bool {
        if !self.continues_drill(chain, &m) {
            return false;
        }
        while chain.len() >= 2 && self.continues_drill(&chain[..chain.len() - 1], &m) {
            chain.pop();
        }
        chain.push(m);
        true
    }

    /// A restore of `m` succeeded at a copy that was at `before`: keep the drill chain in step
    /// with the database. A full starts it over; an artifact that continues it is added; one
    /// that does not (the position moved without a restore) starts it from the retained full
    /// when it continues that, and leaves it empty otherwise.
    pub fn drill_restored(&mut self, m: ArtifactMeta, before: Option<Lsn>) {
        if m.key.kind == ArtifactKind::Full {
            self.drill_chain.clear();
            self.drill_chain.push(m);
            return;
        }
        let mut chain = std::mem::take(&mut self.drill_chain);
        let in_step = before.is_some() && chain.last().map(|l| l.key.lsn_end) == before;
        if !(in_step && self.push_drill(&mut chain, m)) {
            chain.clear();
            if let Some(f) = self.retained_full.as_deref() {
                chain.push(*f);
                if !self.push_drill(&mut chain, m) {
                    chain.clear();
                }
            }
        }
        self.drill_chain = chain;
    }

    /// Move the drill chain to the retained full once the position has passed it: the full
    /// and the restored artifacts after it, when they continue it. True when it moved (what
    /// came before it is no longer needed).
    pub fn drill_rebase(&mut self) -> bool {
        let (Some(f), Some(first), Some(end)) = (
            self.retained_full.as_deref().copied(),
            self.drill_chain.first(),
            self.drill_end(),
        ) else {
            return false;
        };
        if f.key.lsn_end <= first.key.lsn_end || end < f.key.lsn_end {
            return false;
        }
        let mut chain = vec![f];
        for m in self.drill_chain[1..].iter().copied() {
            if m.key.lsn_end > f.key.lsn_end && !self.push_drill(&mut chain, m) {
                return false;
            }
        }
        if chain.last().map(|l| l.key.lsn_end) != Some(end) {
            return false;
        }
        self.drill_chain = chain;
        true
    }

    /// What retention must keep of this database: waiting and in-flight restores, the retained
    /// full and the drill chain; sorted, without duplicates.
    pub fn keep_list(&self) -> Vec<ArtifactKey> {
        let mut keep: Vec<ArtifactKey> = self
            .pending
            .iter()
            .map(|p| p.meta.key)
            .chain(self.in_flight.map(|(_, k)| k))
            .chain(self.retained_full.as_deref().map(|m| m.key))
            .chain(self.drill_chain.iter().map(|m| m.key))
            .collect();
        keep.sort_unstable();
        keep.dedup();
        keep
    }
}

/// The chain rule: whether `m` may be applied to a copy at `position` whose chain started from
/// the full ending at `current_full`, with `retained_full` the newest verified full known.
/// Restores ask it of the database; drills of the scratch copy a drill chain builds.
pub fn applies_at(
    position: Option<Lsn>,
    current_full: Option<Lsn>,
    retained_full: Option<&ArtifactMeta>,
    m: &ArtifactMeta,
) -> bool {
    {
        match (position, m.key.kind) {
            (None, ArtifactKind::Full) => true,
            (None, _) => false,
            // A full is restored only to start a chain or to bridge a hole (see `next`).
            (Some(p), ArtifactKind::Full) => m.key.lsn_end > p,
            (Some(p), ArtifactKind::Log) => m.key.lsn_start <= p && p < m.key.lsn_end,
            // An incremental holds every page changed since its base full: it applies at any
            // position inside its range whose history contains that full. A full is identified
            // by its epoch and its position (two histories can both have a full at one
            // position), so the base is either
            // - the full this copy's chain started from, which was restored here: every
            //   position up to `p` was applied on it in order, and this copy is a prefix of the
            //   primary's history, so the primary's state at that position is this copy's; or
            // - a verified full of the incremental's own epoch that the position has passed
            //   (logs carried the copy over it; after a switchover, the new primary's fulls).
            // A full of another epoch at the same position is not enough (found by fuzzing: an
            // epoch-4 incremental was issued on an epoch-2 full after a forced failover, a
            // reseed and two switchovers).
            (Some(p), ArtifactKind::Incremental) => {
                let base_known = m.base_full == current_full
                    || retained_full.is_some_and(|f| {
                        m.base_full == Some(f.key.lsn_end)
                            && f.key.epoch == m.key.epoch
                            && f.key.lsn_end <= p
                    });
                m.base_full.is_some() && base_known && m.key.lsn_start <= p && p < m.key.lsn_end
            }
        }
    }
}

impl DbState {
    /// The chain rule: among artifacts that apply at the position, prefer one that has not
    /// failed, then the one reaching furthest (a later artifact covering a failed range bypasses
    /// it). Fulls are used only to start a chain or by a reseed (see `restore.rs`).
    pub fn next(&self, now: Millis) -> Next {
        self.next_at(now, &Hold::NONE)
    }

    /// [`DbState::next`] with artifacts held back: those received less than `hold.delay_ms`
    /// ago wait (a standby that lags on purpose, `restore.apply_delay_ms`), and those created
    /// after `hold.until` are left out as if they were not here (`failover --until`).
    pub fn next_at(&self, now: Millis, hold: &Hold) -> Next {
        if self.in_flight.is_some() || self.pending.is_empty() {
            return Next::Nothing;
        }
        let mut best: Option<(usize, (bool, Lsn, u8))> = None;
        let mut waiting = false;
        for (i, x) in self.pending.iter().enumerate() {
            if hold.leaves_out(&x.meta) || !self.applies(&x.meta) {
                continue;
            }
            if x.meta.key.kind == ArtifactKind::Full && self.position.is_some() {
                continue;
            }
            if x.retry_at.is_some_and(|t| t > now) || hold.holds(x, now) {
                waiting = true;
                continue;
            }
            let kind_rank = match x.meta.key.kind {
                ArtifactKind::Log => 0,
                ArtifactKind::Incremental => 1,
                ArtifactKind::Full => 2,
            };
            // Higher is better: not failed, reaches further, then logs before incrementals.
            let score = (x.attempts == 0, x.meta.key.lsn_end, u8::MAX - kind_rank);
            if best.as_ref().is_none_or(|(_, s)| score > *s) {
                best = Some((i, score));
            }
        }
        if self.position.is_none() {
            // Start the chain from the newest full received.
            return match self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, x)| x.meta.key.kind == ArtifactKind::Full)
                .filter(|(_, x)| !hold.leaves_out(&x.meta))
                .filter(|(_, x)| x.retry_at.is_none_or(|t| t <= now) && !hold.holds(x, now))
                .max_by_key(|(_, x)| (x.attempts == 0, x.meta.key.lsn_end))
            {
                Some((i, _)) => Next::Restore(i),
                None if self.pending.iter().any(|x| {
                    x.meta.key.kind == ArtifactKind::Full && !hold.leaves_out(&x.meta)
                }) =>
                {
                    Next::Waiting
                }
                None => Next::Nothing,
            };
        }
        if let Some((i, _)) = best {
            return Next::Restore(i);
        }
        if waiting {
            return Next::Waiting;
        }
        // Nothing applies (a hole, or an incremental on another base): the first log or
        // incremental that reaches beyond the position marks the gap. A newer full alone is no
        // hole: it only means the log that reaches it has not arrived yet (a false `missing_log`
        // after every scheduled full otherwise); a reseed bridges a real hole with it.
        let p = self.position.unwrap_or_default();
        match self.pending.iter().position(|x| {
            x.meta.key.lsn_end > p
                && x.meta.key.kind != ArtifactKind::Full
                && !hold.leaves_out(&x.meta)
        }) {
            Some(i) => Next::Gap { first_after: i },
            None => Next::Nothing,
        }
    }

    /// Received but unrestored artifacts, and the age of the oldest.
    pub fn backlog(&self, now: Millis) -> (u32, Millis) {
        self.backlog_after(now, 0)
    }

    /// The backlog of a standby that applies artifacts `delay_ms` after they arrive: what is
    /// due (received at least that long ago), and how long the oldest has been due.
    pub fn backlog_after(&self, now: Millis, delay_ms: Millis) -> (u32, Millis) {
        let due = |x: &&Pending| x.received_at.saturating_add(delay_ms) <= now;
        let n =
            self.pending.iter().filter(due).count() as u32 + u32::from(self.in_flight.is_some());
        let oldest = self
            .pending
            .iter()
            .filter(due)
            .map(|x| x.received_at.saturating_add(delay_ms))
            .min()
            .map_or(0, |t| now.saturating_sub(t));
        (n, oldest)
    }

    /// When the first artifact held back by `hold` that would apply now becomes due, if any.
    /// Only those: a held artifact that does not apply at the position must not keep the
    /// database waiting (a dead artifact at the position leads to a reseed, and a held one
    /// beyond it would postpone that forever: swarm seed 9980603).
    pub fn held_until(&self, now: Millis, hold: &Hold) -> Option<Millis> {
        self.pending
            .iter()
            .filter(|x| hold.holds(x, now) && !hold.leaves_out(&x.meta))
            .filter(|x| match self.position {
                None => x.meta.key.kind == ArtifactKind::Full,
                Some(_) => x.meta.key.kind != ArtifactKind::Full && self.applies(&x.meta),
            })
            .map(|x| x.received_at.saturating_add(hold.delay_ms))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Checksum, DbId, Epoch, OpId, UtcMillis};

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
            created_utc: UtcMillis(0),
            size: 1,
            checksum: Checksum(7),
            retry: 0,
        }
    }

    #[test]
    fn a_chain_starts_only_from_a_full_backup() {
        let mut d = DbState::default();
        d.insert(art(ArtifactKind::Log, 10, 20, None), 0);
        assert_eq!(d.next(0), Next::Nothing);
        d.insert(art(ArtifactKind::Full, 0, 10, None), 0);
        assert_eq!(d.next(0), Next::Restore(0));
    }

    #[test]
    fn logs_apply_only_when_they_cover_the_position() {
        let mut d = DbState {
            position: Some(Lsn(10)),
            current_full: Some(Lsn(10)),
            ..Default::default()
        };
        d.insert(art(ArtifactKind::Log, 20, 30, None), 0);
        assert!(matches!(d.next(0), Next::Gap { .. }));
        d.insert(art(ArtifactKind::Log, 10, 20, None), 0);
        assert_eq!(d.next(0), Next::Restore(0));
    }

    #[test]
    fn an_incremental_applies_only_on_its_base_full() {
        let mut d = DbState {
            position: Some(Lsn(15)),
            current_full: Some(Lsn(10)),
            ..Default::default()
        };
        d.insert(art(ArtifactKind::Incremental, 10, 40, Some(99)), 0);
        assert!(matches!(d.next(0), Next::Gap { .. }));
        d.insert(art(ArtifactKind::Incremental, 10, 30, Some(10)), 0);
        assert_eq!(d.pending[0].meta.key.lsn_end, Lsn(30));
        assert_eq!(d.next(0), Next::Restore(0));
    }

    /// Found by fuzzing (`fuzz/regressions/engine_inputs/incremental-on-full-of-another-epoch`):
    /// a full is identified by epoch and position, so a retained full of another epoch at the
    /// incremental's base position is not its base.
    #[test]
    fn an_incremental_does_not_apply_on_a_retained_full_of_another_epoch() {
        let mut full = art(ArtifactKind::Full, 532, 532, None);
        full.key.epoch = Epoch(2);
        let mut d = DbState {
            position: Some(Lsn(600)),
            current_full: Some(Lsn(100)),
            retained_full: Some(Box::new(full)),
            ..Default::default()
        };
        let mut incr = art(ArtifactKind::Incremental, 532, 700, Some(532));
        incr.key.epoch = Epoch(4);
        assert!(!d.applies(&incr), "epoch-4 incremental on an epoch-2 full");
        d.insert(incr, 0);
        assert!(matches!(d.next(0), Next::Gap { .. }));
        // The same incremental of the full's own epoch applies: the position passed the full.
        incr.key.epoch = Epoch(2);
        assert!(d.applies(&incr));
        // And so does one on the chain's own full, whatever its epoch: it was restored here.
        let mut own = art(ArtifactKind::Incremental, 100, 700, Some(100));
        own.key.epoch = Epoch(4);
        assert!(d.applies(&own));
    }

    #[test]
    fn a_later_artifact_covering_a_failed_one_is_preferred() {
        let mut d = DbState {
            position: Some(Lsn(10)),
            current_full: Some(Lsn(0)),
            ..Default::default()
        };
        d.insert(art(ArtifactKind::Log, 10, 20, None), 0);
        d.pending[0].attempts = 1;
        d.insert(art(ArtifactKind::Incremental, 0, 25, Some(0)), 0);
        match d.next(0) {
            Next::Restore(i) => assert_eq!(d.pending[i].meta.key.kind, ArtifactKind::Incremental),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_drill_chain_follows_restores_and_starts_over_from_the_retained_full_when_out_of_step() {
        let mut d = DbState::default();
        d.drill_restored(art(ArtifactKind::Full, 10, 10, None), None);
        d.drill_restored(art(ArtifactKind::Log, 10, 20, None), Some(Lsn(10)));
        assert_eq!(d.drill_end(), Some(Lsn(20)));
        // The copy moved to 50 without restores (a switchover): this log continues nothing.
        d.retained_full = Some(Box::new(art(ArtifactKind::Full, 40, 40, None)));
        d.drill_restored(art(ArtifactKind::Log, 50, 60, None), Some(Lsn(50)));
        assert!(d.drill_chain.is_empty());
        // One that continues the retained full starts the chain from it.
        let across = art(ArtifactKind::Log, 35, 70, None);
        d.drill_restored(across, Some(Lsn(60)));
        assert_eq!(
            d.drill_chain,
            vec![*d.retained_full.clone().unwrap(), across]
        );
        // The keep-list: the chain, the retained full, waiting and in-flight artifacts.
        d.insert(art(ArtifactKind::Log, 70, 80, None), 0);
        let keep = d.keep_list();
        assert_eq!(keep.len(), 3);
        assert!(keep.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn duplicates_are_harmless_and_covered_artifacts_are_dropped() {
        let mut d = DbState {
            position: Some(Lsn(20)),
            ..Default::default()
        };
        assert!(d.insert(art(ArtifactKind::Log, 10, 20, None), 0));
        assert!(!d.insert(art(ArtifactKind::Log, 10, 20, None), 0));
        assert_eq!(d.drop_covered().len(), 1);
        assert!(d.pending.is_empty());
    }

    fn log(s: u64, e: u64) -> ArtifactMeta {
        art(ArtifactKind::Log, s, e, None)
    }

    fn full(at: u64) -> ArtifactMeta {
        art(ArtifactKind::Full, at, at, None)
    }

    /// A database restored to `position` on the full ending at `full_at`.
    fn at(position: u64, full_at: u64) -> DbState {
        DbState {
            position: Some(Lsn(position)),
            current_full: Some(Lsn(full_at)),
            ..Default::default()
        }
    }

    #[test]
    fn an_artifact_waiting_or_in_flight_is_covered_even_before_the_position_reaches_it() {
        let mut d = at(10, 0);
        let waiting = log(10, 20);
        d.insert(waiting, 0);
        assert!(d.covers(&waiting), "waiting in the chain");
        let restoring = log(20, 30);
        d.in_flight = Some((OpId(1), restoring.key));
        assert!(d.covers(&restoring), "being restored");
        assert!(
            !d.covers(&log(30, 40)),
            "neither waiting, restoring nor passed"
        );
        assert!(d.covers(&log(0, 10)), "the position passed it");
    }

    #[test]
    fn a_database_with_one_artifact_waiting_holds_room_for_one() {
        let mut d = DbState::default();
        d.insert(log(10, 20), 0);
        // Many databases each hold a short chain: a vector's default first allocation (four)
        // would make every chain four times the memory it needs.
        assert_eq!(d.pending.len(), 1);
        assert!(
            d.pending.capacity() < 4,
            "capacity {}",
            d.pending.capacity()
        );
    }

    #[test]
    fn the_chain_rule_at_the_ends_of_a_range() {
        let p = Some(Lsn(20));
        let f = Some(Lsn(10));
        // A full applies only beyond the position (to bridge a hole).
        assert!(applies_at(p, f, None, &full(30)));
        assert!(!applies_at(p, f, None, &full(20)));
        assert!(!applies_at(p, f, None, &full(10)));
        // A log or incremental applies when the position is inside its range, not at its end.
        assert!(applies_at(p, f, None, &log(20, 30)));
        assert!(applies_at(p, f, None, &log(10, 30)));
        assert!(!applies_at(p, f, None, &log(10, 20)));
        assert!(!applies_at(p, f, None, &log(21, 30)));
        let incr = |s, e| art(ArtifactKind::Incremental, s, e, Some(10));
        assert!(applies_at(p, f, None, &incr(10, 30)));
        assert!(!applies_at(p, f, None, &incr(10, 20)));
        assert!(!applies_at(p, f, None, &incr(21, 30)));
    }

    #[test]
    fn nothing_new_starts_while_a_restore_is_in_flight() {
        let mut d = at(10, 0);
        d.insert(log(10, 20), 0);
        assert_eq!(d.next(0), Next::Restore(0));
        d.in_flight = Some((OpId(1), log(5, 10).key));
        assert_eq!(d.next(0), Next::Nothing);
    }

    #[test]
    fn of_the_artifacts_that_apply_the_one_reaching_furthest_is_restored() {
        let mut d = at(10, 0);
        d.insert(log(10, 20), 0);
        d.insert(log(10, 30), 0);
        d.insert(log(5, 25), 0);
        assert_eq!(d.pending[2].meta, log(10, 30));
        assert_eq!(d.next(0), Next::Restore(2));
    }

    #[test]
    fn a_failed_artifact_waits_until_its_retry_time_and_is_tried_at_it() {
        let mut d = at(10, 0);
        d.insert(log(10, 20), 0);
        d.pending[0].attempts = 1;
        d.pending[0].retry_at = Some(100);
        assert_eq!(d.next(50), Next::Waiting);
        assert_eq!(d.next(99), Next::Waiting);
        assert_eq!(d.next(100), Next::Restore(0));
        assert_eq!(d.next(150), Next::Restore(0));
    }

    #[test]
    fn a_delay_holds_artifacts_until_they_are_that_old_and_until_leaves_later_ones_out() {
        let mut d = at(10, 0);
        d.insert(log(10, 20), 100);
        let hold = Hold {
            delay_ms: 1_000,
            until: None,
        };
        assert_eq!(d.next_at(500, &hold), Next::Waiting);
        assert_eq!(d.held_until(500, &hold), Some(1_100));
        assert_eq!(d.next_at(1_100, &hold), Next::Restore(0));
        assert_eq!(d.next(500), Next::Restore(0), "no hold: at once");
        // Left out: as if it were not here (no gap either).
        let mut m = log(10, 20);
        m.created_utc = UtcMillis(5);
        let mut d = at(10, 0);
        d.insert(m, 0);
        let until = Hold {
            delay_ms: 0,
            until: Some(UtcMillis(4)),
        };
        assert_eq!(d.next_at(0, &until), Next::Nothing);
        // The backlog counts only what is due.
        let mut d = at(10, 0);
        d.insert(log(10, 20), 100);
        assert_eq!(d.backlog_after(500, 1_000), (0, 0));
        assert_eq!(d.backlog_after(1_600, 1_000), (1, 500));
    }

    /// A dead artifact at the position and a held one beyond it: nothing to wait for (the
    /// dead one leads to a reseed), whatever the held one (swarm seed 9980603).
    #[test]
    fn a_held_artifact_that_does_not_apply_keeps_nothing_waiting() {
        let mut d = at(10, 0);
        d.insert(log(10, 20), 0);
        d.insert(log(20, 30), 900);
        d.pending[0].attempts = 3;
        d.pending[0].retry_at = Some(Millis::MAX);
        let hold = Hold {
            delay_ms: 1_000,
            until: None,
        };
        assert_eq!(d.next_at(1_000, &hold), Next::Waiting);
        assert_eq!(d.held_until(1_000, &hold), None);
    }

    #[test]
    fn a_chain_starts_from_an_untried_full_before_a_newer_one_that_failed() {
        let mut d = DbState::default();
        d.insert(full(10), 0);
        d.insert(full(20), 0);
        d.pending[1].attempts = 1;
        d.pending[1].retry_at = Some(5);
        assert_eq!(d.next(10), Next::Restore(0), "the untried full");
        // Untried and equal otherwise: the newest.
        d.pending[1].attempts = 0;
        assert_eq!(d.next(10), Next::Restore(1));
    }

    #[test]
    fn a_chain_waits_for_a_full_that_may_be_retried_later_and_has_nothing_without_one() {
        let mut d = DbState::default();
        d.insert(full(10), 0);
        d.pending[0].attempts = 1;
        d.pending[0].retry_at = Some(100);
        assert_eq!(d.next(50), Next::Waiting);
        assert_eq!(d.next(100), Next::Restore(0));
        let mut d = DbState::default();
        d.insert(log(10, 20), 0);
        assert_eq!(d.next(50), Next::Nothing);
    }

    #[test]
    fn a_gap_is_marked_at_the_first_artifact_beyond_the_position() {
        let mut d = at(20, 0);
        // One that ends at the position is no part of the gap (a covered copy not yet dropped).
        d.insert(log(10, 20), 0);
        d.insert(log(30, 40), 0);
        assert_eq!(d.next(0), Next::Gap { first_after: 1 });
    }

    #[test]
    fn the_backlog_counts_waiting_and_in_flight_restores_and_the_oldest_arrival() {
        let mut d = at(10, 0);
        d.insert(log(10, 20), 100);
        d.insert(log(20, 30), 40);
        d.in_flight = Some((OpId(1), log(5, 10).key));
        assert_eq!(d.backlog(1_000), (3, 960));
        assert_eq!(DbState::default().backlog(1_000), (0, 0));
    }

    #[test]
    fn a_restore_out_of_step_with_the_drill_chain_does_not_extend_it() {
        let mut d = DbState::default();
        d.drill_restored(full(10), None);
        d.drill_restored(log(10, 20), Some(Lsn(10)));
        // The copy was at 25, not at the chain's end (20): the chain no longer describes it, and
        // without a retained full nothing can start it again.
        d.drill_restored(log(20, 30), Some(Lsn(25)));
        assert!(d.drill_chain.is_empty(), "{:?}", d.drill_chain);
    }

    #[test]
    fn the_drill_chain_moves_to_a_newer_retained_full_once_the_position_passed_it() {
        let mut d = DbState::default();
        d.drill_restored(full(10), None);
        d.drill_restored(log(10, 40), Some(Lsn(10)));
        d.drill_restored(log(40, 50), Some(Lsn(40)));
        // The retained full is the chain's own: nothing to move.
        d.retained_full = Some(Box::new(full(10)));
        assert!(!d.drill_rebase());
        // A full at 40, inside the chain: the chain restarts there, keeping what follows it.
        d.retained_full = Some(Box::new(full(40)));
        assert!(d.drill_rebase());
        assert_eq!(d.drill_chain, vec![full(40), log(40, 50)]);
        // A full exactly at the chain's end: the chain is that full alone.
        d.retained_full = Some(Box::new(full(50)));
        assert!(d.drill_rebase());
        assert_eq!(d.drill_chain, vec![full(50)]);
        // A full the position has not reached: the chain stays.
        d.retained_full = Some(Box::new(full(60)));
        assert!(!d.drill_rebase());
        assert_eq!(d.drill_chain, vec![full(50)]);
    }
}
