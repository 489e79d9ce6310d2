//! Point-in-time archives: which archived artifacts make which points restorable, and what a
//! retention policy keeps. Pure code over manifests, shared by the engine (retention is the
//! core's decision, judged by the simulator) and the adapter's `archive list` and
//! `restore --at` (which chain a point needs).
//!
//! # Points and chains
//!
//! A *point* is a position a copy can be restored to from the archive alone: the end of a full,
//! or the end of an incremental or log that continues a chain from a full. Chains follow the
//! engine's chain rule ([`crate::engine::applies_at`]'s cases, restated for a copy that starts
//! from one full): a log applies at a position inside its range; an incremental applies at a
//! position inside its range when its base is that full (same epoch). Histories of two epochs
//! can share positions (a failover that lost writes), so an artifact never applies after one
//! of a later epoch, and an artifact of a later epoch than the chain's last applies only
//! exactly at the chain's end (where the new epoch's history began).
//!
//! # Time
//!
//! No clock: "now" is the creation time of the newest archived artifact. An archive therefore
//! never ages out while nothing new arrives (a primary that fell silent leaves its history
//! intact).
//!
//! # Retention
//!
//! [`kept`] keeps every artifact created within `keep_ms` of now, the chain of every point
//! from the one just before that window on (a time at the window's start is restorable), the
//! chain of one point of each of the last `keep_daily` UTC days and of the last
//! `keep_weekly` ISO weeks (Monday to Sunday, UTC): the point of that period with the smallest
//! chain (a full or an incremental when it has one, so an old day costs a backup, not a day of
//! logs), and always the newest point's chain.
//! Everything else may go. A kept point's chain is never removed (see the tests and the
//! simulator's archive oracle).

use crate::artifact::{ArtifactKey, ArtifactKind, ArtifactMeta};
use crate::ids::{Epoch, Lsn, Millis, UtcMillis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The archive's retention policy (`[archive]` in `site.toml`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Every artifact created within this long of the newest one is kept.
    pub keep_ms: Millis,
    /// A restorable point (its cheapest) for each of this many UTC days.
    pub keep_daily: u32,
    /// A restorable point (its cheapest) for each of this many ISO weeks.
    pub keep_weekly: u32,
    /// Restore a kept point chosen at random into scratch and check it this often (0: never).
    pub verify_every_ms: Millis,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            keep_ms: crate::defaults::ARCHIVE_KEEP_MS,
            keep_daily: crate::defaults::ARCHIVE_KEEP_DAILY,
            keep_weekly: crate::defaults::ARCHIVE_KEEP_WEEKLY,
            verify_every_ms: crate::defaults::ARCHIVE_VERIFY_EVERY_MS,
        }
    }
}

/// One restorable point. Its chain is kept by the [`Points`] it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub lsn: Lsn,
    /// When the artifact ending here was created (the state of the database at that time).
    pub utc: UtcMillis,
    pub epoch: Epoch,
    /// The full its chain starts from.
    pub full: ArtifactMeta,
    /// Artifacts and bytes of its chain.
    pub artifacts: u32,
    pub bytes: u64,
}

/// Where to restore to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum At {
    /// The newest point.
    Latest,
    /// The last point created at or before this time.
    Utc(UtcMillis),
    /// The last point at or before this position.
    Lsn(Lsn),
}

const DAY_MS: i64 = 86_400_000;

/// The UTC day of a time (days since 1970-01-01).
pub fn day_of(t: UtcMillis) -> i64 {
    t.0.div_euclid(DAY_MS)
}

/// The ISO week of a time (weeks start on Monday; 1970-01-01 was a Thursday).
pub fn week_of(t: UtcMillis) -> i64 {
    (day_of(t) + 3).div_euclid(7)
}

/// How a position was reached: by which artifact, from where.
#[derive(Copy, Clone, Debug)]
struct Step {
    /// Index into the sorted artifacts; `None` for a full's own position.
    by: Option<usize>,
    from: Lsn,
    full: usize,
    epoch: Epoch,
    utc: UtcMillis,
    depth: u32,
    bytes: u64,
}

/// Every restorable point of one database's archive, and the chain of each, in space linear in
/// the archive: each position keeps the one step that reached it, and a chain is the walk back
/// to its full.
///
/// A full serves the positions from its own up to the next full's: a point past a newer full
/// is restored from that full (the shortest chain), never from an older one. A position is
/// reached by the first artifact found in position order.
#[derive(Clone, Debug)]
pub struct Points {
    arts: Vec<ArtifactMeta>,
    steps: BTreeMap<Lsn, Step>,
    list: Vec<Point>,
}

/// [`Points::new`].
pub fn points(entries: &[ArtifactMeta]) -> Points {
    Points::new(entries)
}

impl Points {
    pub fn new(entries: &[ArtifactMeta]) -> Points {
        let mut arts: Vec<ArtifactMeta> = entries.to_vec();
        arts.sort_by_key(|m| (m.key.lsn_end, m.key.lsn_start, m.key));
        arts.dedup_by_key(|m| m.key);
        // One full per position: the last in key order (the newest epoch's).
        let fulls: Vec<usize> = (0..arts.len())
            .filter(|&i| arts[i].key.kind == ArtifactKind::Full)
            .filter(|&i| {
                !arts[i + 1..]
                    .iter()
                    .take_while(|m| m.key.lsn_end == arts[i].key.lsn_end)
                    .any(|m| m.key.kind == ArtifactKind::Full)
            })
            .collect();
        let mut steps: BTreeMap<Lsn, Step> = BTreeMap::new();
        for (n, &f) in fulls.iter().enumerate() {
            let full = arts[f];
            let floor = full.key.lsn_end;
            // Up to the next full at a higher position (which serves what lies past it).
            let ceiling = fulls[n + 1..]
                .iter()
                .map(|&g| arts[g].key.lsn_end)
                .find(|&l| l > floor);
            steps.insert(
                floor,
                Step {
                    by: None,
                    from: floor,
                    full: f,
                    epoch: full.key.epoch,
                    utc: full.created_utc,
                    depth: 1,
                    bytes: full.size,
                },
            );
            let first = arts.partition_point(|m| m.key.lsn_end <= floor);
            for (i, &m) in arts.iter().enumerate().skip(first) {
                let k = &m.key;
                if ceiling.is_some_and(|c| k.lsn_end > c) {
                    break;
                }
                if k.kind == ArtifactKind::Full
                    || k.epoch < full.key.epoch
                    || steps.contains_key(&k.lsn_end)
                    || (k.kind == ArtifactKind::Incremental
                        && (m.base_full != Some(floor) || k.epoch != full.key.epoch))
                {
                    continue;
                }
                let from = steps
                    .range(k.lsn_start.max(floor)..k.lsn_end)
                    .rev()
                    .find(|(r, s)| {
                        s.full == f
                            && (s.epoch == k.epoch || (s.epoch < k.epoch && **r == k.lsn_start))
                    })
                    .map(|(r, s)| (*r, *s));
                if let Some((r, s)) = from {
                    steps.insert(
                        k.lsn_end,
                        Step {
                            by: Some(i),
                            from: r,
                            full: f,
                            epoch: k.epoch,
                            utc: m.created_utc,
                            depth: s.depth + 1,
                            bytes: s.bytes.saturating_add(m.size),
                        },
                    );
                }
            }
        }
        let list = steps
            .iter()
            .map(|(&lsn, s)| Point {
                lsn,
                utc: s.utc,
                epoch: s.epoch,
                full: arts[s.full],
                artifacts: s.depth,
                bytes: s.bytes,
            })
            .collect();
        Points { arts, steps, list }
    }

    /// Every point, sorted by position.
    pub fn all(&self) -> &[Point] {
        &self.list
    }

    /// What restores `p`: its full first, then the artifacts that continue it, in order.
    pub fn chain(&self, p: &Point) -> Vec<ArtifactMeta> {
        let mut out = Vec::new();
        let mut at = p.lsn;
        while let Some(s) = self.steps.get(&at) {
            match s.by {
                Some(i) => {
                    out.push(self.arts[i]);
                    at = s.from;
                }
                None => {
                    out.push(self.arts[s.full]);
                    break;
                }
            }
        }
        out.reverse();
        out
    }

    /// Add the chain of the point at `lsn` to `keep`; `seen` holds the positions already
    /// walked (their chains are in `keep` already), so chains sharing a prefix cost it once.
    fn mark(&self, lsn: Lsn, keep: &mut BTreeSet<ArtifactKey>, seen: &mut BTreeSet<Lsn>) {
        let mut at = lsn;
        while seen.insert(at) {
            let Some(s) = self.steps.get(&at) else {
                return;
            };
            match s.by {
                Some(i) => {
                    keep.insert(self.arts[i].key);
                    at = s.from;
                }
                None => {
                    keep.insert(self.arts[s.full].key);
                    return;
                }
            }
        }
    }
}

/// The point `at` asks for among `points` (sorted by position, as [`Points::all`] gives them).
pub fn point_at(points: &[Point], at: At) -> Option<&Point> {
    match at {
        At::Latest => points.last(),
        At::Lsn(l) => points.iter().rev().find(|p| p.lsn <= l),
        At::Utc(t) => points
            .iter()
            .filter(|p| p.utc <= t)
            .max_by_key(|p| (p.utc, p.lsn)),
    }
}

/// For a restore that replays a log up to a target inside it (PostgreSQL's
/// `recovery_target_time` / `recovery_target_lsn`): among the points restorable from a full at
/// or before `at`, the first at or after `at`, `later` points further on, else the newest (the
/// target lies beyond what the archive holds); with its chain.
///
/// For a position the first point at or after it holds every byte up to the target. For a time
/// it may not: a log's creation time is when it was finished and copied, which can be after
/// commits that landed in the next log (a shipping backlog). The replay tells: PostgreSQL stops at the first commit after the
/// target, or says the WAL ended first; the caller then asks again with a larger `later`.
pub fn covering(
    entries: &[ArtifactMeta],
    at: At,
    later: usize,
) -> Option<(Point, Vec<ArtifactMeta>)> {
    let usable: Vec<ArtifactMeta> = entries
        .iter()
        .filter(|m| {
            m.key.kind != ArtifactKind::Full
                || match at {
                    At::Latest => true,
                    At::Utc(t) => m.created_utc <= t,
                    At::Lsn(l) => m.key.lsn_end <= l,
                }
        })
        .copied()
        .collect();
    let pts = Points::new(&usable);
    let after = |p: &&Point| match at {
        At::Latest => false,
        At::Utc(t) => p.utc >= t,
        At::Lsn(l) => p.lsn >= l,
    };
    let all = pts.all();
    let first = all.iter().position(|p| after(&p)).unwrap_or(all.len());
    let p = all.get(first.saturating_add(later)).or(all.last())?;
    Some((p.clone(), pts.chain(p)))
}

/// The points a policy keeps, as indexes into `pts.all()` (sorted, no duplicates): the newest;
/// every point created within `keep_ms` of the newest artifact and the one just before that
/// window; and for each of the last `keep_daily` UTC days and `keep_weekly` ISO weeks the point
/// of that period whose chain is smallest (a full or an incremental when the period has one:
/// old days cost little), the later one on a tie.
pub fn kept_points(pts: &Points, entries: &[ArtifactMeta], policy: &Policy) -> Vec<usize> {
    let points = pts.all();
    let Some(now) = entries.iter().map(|m| m.created_utc).max() else {
        return Vec::new();
    };
    let window = UtcMillis(now.0.saturating_sub(policy.keep_ms as i64));
    let mut keep = BTreeSet::new();
    if let Some(i) = (0..points.len()).max_by_key(|&i| (points[i].utc, points[i].lsn)) {
        keep.insert(i);
    }
    let mut before: Option<usize> = None;
    for (i, p) in points.iter().enumerate() {
        if p.utc >= window {
            keep.insert(i);
        } else if before.is_none_or(|b| (points[b].utc, points[b].lsn) < (p.utc, p.lsn)) {
            before = Some(i);
        }
    }
    keep.extend(before);
    let mut cheapest_of = |period: fn(UtcMillis) -> i64, count: u32| {
        if count == 0 {
            return;
        }
        let newest = period(now);
        let oldest = newest - i64::from(count) + 1;
        let mut best: BTreeMap<i64, usize> = BTreeMap::new();
        let rank = |p: &Point| (std::cmp::Reverse(p.bytes), p.utc, p.lsn);
        for (i, p) in points.iter().enumerate() {
            let k = period(p.utc);
            if k < oldest || k > newest {
                continue;
            }
            let e = best.entry(k).or_insert(i);
            if rank(&points[*e]) < rank(p) {
                *e = i;
            }
        }
        keep.extend(best.into_values());
    };
    cheapest_of(day_of, policy.keep_daily);
    cheapest_of(week_of, policy.keep_weekly);
    keep.into_iter().collect()
}

/// What a policy keeps of `entries` (one database's archive): every artifact in the window and
/// the chain of every kept point.
pub fn kept(entries: &[ArtifactMeta], policy: &Policy) -> BTreeSet<ArtifactKey> {
    let Some(now) = entries.iter().map(|m| m.created_utc).max() else {
        return BTreeSet::new();
    };
    let window = UtcMillis(now.0.saturating_sub(policy.keep_ms as i64));
    let pts = Points::new(entries);
    let mut keep: BTreeSet<ArtifactKey> = entries
        .iter()
        .filter(|m| m.created_utc >= window)
        .map(|m| m.key)
        .collect();
    let mut seen = BTreeSet::new();
    for i in kept_points(&pts, entries, policy) {
        pts.mark(pts.all()[i].lsn, &mut keep, &mut seen);
    }
    keep
}

/// What a policy lets go of `entries`: everything [`kept`] does not keep, sorted.
pub fn expired(entries: &[ArtifactMeta], policy: &Policy) -> Vec<ArtifactKey> {
    let keep = kept(entries, policy);
    let mut out: Vec<ArtifactKey> = entries
        .iter()
        .map(|m| m.key)
        .filter(|k| !keep.contains(k))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One restorable range for `archive list`: the points reachable from one full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub full: ArtifactMeta,
    pub first: (Lsn, UtcMillis),
    pub last: (Lsn, UtcMillis),
    /// Points in the range.
    pub points: usize,
    /// The artifacts behind the range (the full and every chain artifact), and their bytes.
    pub artifacts: usize,
    pub bytes: u64,
    /// Those artifacts, in position order.
    pub members: Vec<ArtifactMeta>,
}

/// The restorable ranges of `pts`, one per full, oldest first.
pub fn ranges(pts: &Points) -> Vec<Range> {
    let mut by_full: BTreeMap<usize, Range> = BTreeMap::new();
    for (p, s) in pts.all().iter().zip(pts.steps.values()) {
        let r = by_full.entry(s.full).or_insert_with(|| Range {
            full: p.full,
            first: (p.lsn, p.utc),
            last: (p.lsn, p.utc),
            points: 0,
            artifacts: 0,
            bytes: 0,
            members: Vec::new(),
        });
        r.points += 1;
        r.first = r.first.min((p.lsn, p.utc));
        r.last = r.last.max((p.lsn, p.utc));
        // Each step is one artifact of the range (the full's own step is the full).
        let m = pts.arts[s.by.unwrap_or(s.full)];
        r.artifacts += 1;
        r.bytes += m.size;
        r.members.push(m);
    }
    by_full.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Checksum, DbId};
    use proptest::prelude::*;

    const T0: i64 = 1_795_392_000_000; // 2026-11-23T00:00:00Z, a Monday
    const H: i64 = 3_600_000;

    fn meta(kind: ArtifactKind, epoch: u64, a: u64, b: u64, utc: i64) -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(0),
                epoch: Epoch(epoch),
                lsn_start: Lsn(a),
                lsn_end: Lsn(b),
                kind,
            },
            base_full: None,
            created_utc: UtcMillis(utc),
            size: 10,
            checksum: Checksum(a ^ b),
            retry: 0,
        }
    }
    fn full(at: u64, utc: i64) -> ArtifactMeta {
        meta(ArtifactKind::Full, 1, at, at, utc)
    }
    fn log(a: u64, b: u64, utc: i64) -> ArtifactMeta {
        meta(ArtifactKind::Log, 1, a, b, utc)
    }
    fn lsns(points: &Points) -> Vec<u64> {
        points.all().iter().map(|p| p.lsn.0).collect()
    }
    fn chain_at(points: &Points, i: usize) -> Vec<ArtifactMeta> {
        points.chain(&points.all()[i])
    }

    #[test]
    fn a_full_and_its_logs_make_a_point_at_each_log_end_and_a_hole_ends_them() {
        let e = vec![
            full(10, T0),
            log(10, 20, T0 + 1),
            log(20, 30, T0 + 2),
            log(40, 50, T0 + 4),
        ];
        let p = points(&e);
        assert_eq!(lsns(&p), vec![10, 20, 30]);
        assert_eq!(chain_at(&p, 2), vec![e[0], e[1], e[2]]);
        assert_eq!(p.all()[2].artifacts, 3);
        assert_eq!(p.all()[2].bytes, 30);
        let p = p.all();
        assert_eq!(
            point_at(p, At::Utc(UtcMillis(T0 + 1))).unwrap().lsn,
            Lsn(20)
        );
        assert_eq!(point_at(p, At::Lsn(Lsn(29))).unwrap().lsn, Lsn(20));
        assert!(point_at(p, At::Utc(UtcMillis(T0 - 1))).is_none());
    }

    #[test]
    fn covering_takes_the_first_point_past_the_target_from_a_full_before_it() {
        let e = vec![
            full(10, T0),
            log(10, 20, T0 + 100),
            log(20, 30, T0 + 200),
            full(30, T0 + 250),
            log(30, 40, T0 + 300),
        ];
        let c = |at| covering(&e, at, 0).map(|x| x.0.lsn.0);
        assert_eq!(c(At::Utc(UtcMillis(T0 + 150))), Some(30));
        assert_eq!(
            covering(&e, At::Utc(UtcMillis(T0 + 150)), 1).map(|x| x.0.lsn.0),
            Some(40),
            "one point further on, for a log finished after commits of the next"
        );
        assert_eq!(
            covering(&e, At::Utc(UtcMillis(T0 + 150)), 7).map(|x| x.0.lsn.0),
            Some(40),
            "never past the newest"
        );
        let x = covering(&e, At::Utc(UtcMillis(T0 + 150)), 0).unwrap();
        assert_eq!(
            x.1[0].key.lsn_end,
            Lsn(10),
            "from the full before the target"
        );
        assert_eq!(c(At::Utc(UtcMillis(T0 + 260))), Some(40));
        assert_eq!(
            c(At::Utc(UtcMillis(T0 + 900))),
            Some(40),
            "beyond: the newest"
        );
        assert_eq!(c(At::Utc(UtcMillis(T0 - 1))), None, "before every full");
        assert_eq!(c(At::Lsn(Lsn(15))), Some(20));
        assert_eq!(c(At::Latest), Some(40));
    }

    #[test]
    fn an_incremental_applies_only_on_its_own_base_and_a_newer_full_shortens_chains() {
        let mut inc = meta(ArtifactKind::Incremental, 1, 10, 40, T0 + 3);
        inc.base_full = Some(Lsn(10));
        let mut foreign = meta(ArtifactKind::Incremental, 1, 20, 60, T0 + 6);
        foreign.base_full = Some(Lsn(5));
        let e = vec![
            full(10, T0),
            log(10, 20, T0 + 1),
            inc,
            foreign,
            full(40, T0 + 4),
            log(40, 50, T0 + 5),
        ];
        let p = points(&e);
        assert_eq!(lsns(&p), vec![10, 20, 40, 50]);
        assert_eq!(chain_at(&p, 3), vec![e[4], e[5]], "from the newest full");
        assert_eq!(
            chain_at(&p, 2),
            vec![e[4]],
            "a newer full serves its own position"
        );
    }

    #[test]
    fn a_later_epoch_continues_only_exactly_where_its_history_began() {
        // Epoch 1 reached 30; epoch 2 began at 20 (a failover that lost 20..30).
        let e = vec![
            full(10, T0),
            log(10, 20, T0 + 1),
            log(20, 30, T0 + 2),
            meta(ArtifactKind::Log, 2, 20, 40, T0 + 3),
            meta(ArtifactKind::Log, 1, 30, 50, T0 + 4),
        ];
        let p = points(&e);
        assert_eq!(lsns(&p), vec![10, 20, 30, 40, 50]);
        let at40: Vec<_> = chain_at(&p, 3).iter().map(|m| m.key.lsn_end.0).collect();
        assert_eq!(at40, vec![10, 20, 40], "never through epoch 1's 20..30");
    }

    #[test]
    fn retention_keeps_the_window_the_point_before_it_and_the_cheapest_point_of_each_day() {
        let mut e = vec![full(0, T0)];
        // A log an hour for three days.
        for i in 0..72u64 {
            e.push(log(i * 10, i * 10 + 10, T0 + (i as i64 + 1) * H));
        }
        let policy = Policy {
            keep_ms: 6 * H as u64,
            keep_daily: 2,
            keep_weekly: 0,
            verify_every_ms: 0,
        };
        // One full at the start: every point needs every log, so nothing goes.
        assert!(expired(&e, &policy).is_empty());
        // A full every day: what only the first two days needed goes.
        e.push(full(240, T0 + 24 * H + 1));
        e.push(full(480, T0 + 48 * H + 1));
        let gone = expired(&e, &policy);
        let pts = points(&e);
        let keep = kept(&e, &policy);
        for k in &gone {
            assert!(!keep.contains(k));
        }
        // The first day is older than the two kept days (the newest is day 4, at T0 + 72h):
        // its full and logs go.
        assert!(gone.contains(&e[0].key));
        assert!(gone.contains(&e[1].key));
        // Day 3's kept point is its cheapest: the full taken that day, alone.
        let day2 = day_of(UtcMillis(T0 + 48 * H));
        let cheapest = pts
            .all()
            .iter()
            .filter(|p| day_of(p.utc) == day2)
            .min_by_key(|p| (p.bytes, std::cmp::Reverse((p.utc, p.lsn))))
            .unwrap();
        assert_eq!(cheapest.lsn, Lsn(480));
        assert_eq!(pts.chain(cheapest), vec![e[e.len() - 1]]);
        assert!(keep.contains(&e[e.len() - 1].key));
        // Day 2's logs that no kept point needs go: the day before the two kept days.
        assert!(gone.contains(&e[30].key), "{:?}", e[30].key);
        // The window's points too, and the one just before it.
        let now = T0 + 72 * H;
        for p in pts.all().iter().filter(|p| p.utc.0 >= now - 7 * H) {
            assert!(
                pts.chain(p).iter().all(|m| keep.contains(&m.key)),
                "{:?}",
                p.lsn
            );
        }
    }

    #[test]
    fn weeks_start_on_monday() {
        assert_eq!(week_of(UtcMillis(T0)), week_of(UtcMillis(T0 + 6 * 24 * H)));
        assert_ne!(week_of(UtcMillis(T0)), week_of(UtcMillis(T0 - 1)));
    }

    fn arb_archive() -> impl Strategy<Value = Vec<ArtifactMeta>> {
        // Steps: (kind 0..6, epoch bump, length, gap, hours).
        proptest::collection::vec((0u8..8, 0u8..10, 1u64..30, 0u8..12, 0i64..30), 1..60).prop_map(
            |steps| {
                let mut out = Vec::new();
                let (mut pos, mut epoch, mut t, mut base) = (0u64, 1u64, T0, None);
                for (k, bump, len, gap, hours) in steps {
                    t += hours * H / 4 + 1;
                    if bump == 0 {
                        epoch += 1;
                        pos = pos.saturating_sub(len / 2);
                    }
                    if gap == 0 {
                        pos += len;
                    }
                    match k {
                        0 => {
                            out.push(meta(ArtifactKind::Full, epoch, pos, pos, t));
                            base = Some((pos, epoch));
                        }
                        1 => {
                            if let Some((b, e)) = base {
                                let mut m = meta(ArtifactKind::Incremental, e, b, pos + len, t);
                                m.base_full = Some(Lsn(b));
                                out.push(m);
                                pos += len;
                            }
                        }
                        _ => {
                            out.push(meta(ArtifactKind::Log, epoch, pos, pos + len, t));
                            pos += len;
                        }
                    }
                }
                out
            },
        )
    }

    /// Whether `p` is restorable from `left` by an independent walk of its chain.
    fn chain_valid(chain: &[ArtifactMeta], left: &BTreeSet<ArtifactKey>) -> bool {
        let Some(f) = chain.first() else { return false };
        let mut pos = f.key.lsn_end;
        let mut epoch = f.key.epoch;
        f.key.kind == ArtifactKind::Full
            && left.contains(&f.key)
            && chain[1..].iter().all(|m| {
                let ok = left.contains(&m.key)
                    && m.key.kind != ArtifactKind::Full
                    && m.key.lsn_start <= pos
                    && pos < m.key.lsn_end
                    && m.key.epoch >= epoch
                    && (m.key.epoch == epoch || m.key.lsn_start == pos)
                    && (m.key.kind != ArtifactKind::Incremental
                        || (m.base_full == Some(f.key.lsn_end) && m.key.epoch == f.key.epoch));
                pos = m.key.lsn_end;
                epoch = m.key.epoch;
                ok
            })
    }

    proptest! {
        /// After removing what retention lets go, every kept point is still restorable, and
        /// its chain is valid by the chain rule.
        #[test]
        fn retention_never_removes_what_a_kept_point_needs(
            e in arb_archive(),
            keep_h in 0u64..40,
            daily in 0u32..4,
            weekly in 0u32..3,
        ) {
            let policy = Policy { keep_ms: keep_h * H as u64, keep_daily: daily, keep_weekly: weekly, verify_every_ms: 0 };
            let before = points(&e);
            let kept_idx = kept_points(&before, &e, &policy);
            let gone: BTreeSet<ArtifactKey> = expired(&e, &policy).into_iter().collect();
            let left: BTreeSet<ArtifactKey> =
                e.iter().map(|m| m.key).filter(|k| !gone.contains(k)).collect();
            for i in kept_idx {
                let p = &before.all()[i];
                let chain = before.chain(p);
                prop_assert!(chain_valid(&chain, &left), "point {:?} lost its chain", p.lsn);
            }
            // Every point's chain is valid before any removal, and its size is its chain's.
            let all: BTreeSet<ArtifactKey> = e.iter().map(|m| m.key).collect();
            for p in before.all() {
                let chain = before.chain(p);
                prop_assert!(chain_valid(&chain, &all));
                prop_assert_eq!(chain.last().unwrap().key.lsn_end, p.lsn);
                prop_assert_eq!(chain.len() as u32, p.artifacts);
                prop_assert_eq!(chain.iter().map(|m| m.size).sum::<u64>(), p.bytes);
                prop_assert_eq!(chain[0], p.full);
            }
            // Retention applied twice removes nothing more the second time... unless the
            // newest artifact went (it never does: it is in the window).
            let rest: Vec<ArtifactMeta> = e.iter().copied().filter(|m| left.contains(&m.key)).collect();
            prop_assert_eq!(rest.iter().map(|m| m.created_utc).max(), e.iter().map(|m| m.created_utc).max());
        }
    }
}
