//! The point-in-time archive at the recovery site (issue 15): every accepted artifact is
//! archived (`Command::Archive`), the inbox keeps it until the copy is durable, a copy that
//! fails raises `archive_failed` and is tried again, and retention removes only what no kept
//! point needs (`Command::ArchiveRemove`).

mod common;
use common::config;
use lifeboat_core::alert::AlertChange;
use lifeboat_core::archive::Policy;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{Command, Input, Output};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, DbId, Epoch, Lsn, Severity, SiteId,
    UtcMillis, MINUTE,
};

const T0: i64 = 1_795_392_000_000; // 2026-11-23T00:00:00Z
const HOUR: i64 = 3_600_000;

fn meta(kind: ArtifactKind, a: u64, b: u64, utc: i64) -> ArtifactMeta {
    ArtifactMeta {
        key: ArtifactKey {
            db: DbId(0),
            epoch: Epoch(1),
            lsn_start: Lsn(a),
            lsn_end: Lsn(b),
            kind,
        },
        base_full: None,
        created_utc: UtcMillis(utc),
        size: 100,
        checksum: Checksum(a * 1_000 + b),
        retry: 0,
    }
}

/// A started recovery site with an archive keeping one hour and no daily or weekly points.
fn site() -> SiteEngine {
    let mut cfg = config(1);
    cfg.archive = Some(Policy {
        keep_ms: HOUR as u64,
        keep_daily: 0,
        keep_weekly: 0,
        verify_every_ms: 0,
    });
    let mut e = SiteEngine::new(cfg, SiteId(1));
    e.handle(1_000, Input::Tick);
    while e.poll_output().is_some() {}
    e
}

fn drain(e: &mut SiteEngine) -> Vec<Output> {
    std::iter::from_fn(|| e.poll_output()).collect()
}

fn receive(e: &mut SiteEngine, now: u64, m: ArtifactMeta) -> Vec<Output> {
    e.handle(
        now,
        Input::ArtifactReceived {
            meta: m,
            computed: m.checksum,
            from: SiteId(0),
        },
    );
    drain(e)
}

fn archives(out: &[Output]) -> Vec<ArtifactKey> {
    out.iter()
        .filter_map(|o| match o {
            Output::Command(Command::Archive { artifact }) => Some(artifact.key),
            _ => None,
        })
        .collect()
}

fn removals(out: &[Output]) -> Vec<ArtifactKey> {
    out.iter()
        .flat_map(|o| match o {
            Output::Command(Command::ArchiveRemove { keys, .. }) => keys.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn prune_keeps(out: &[Output]) -> Option<Vec<ArtifactKey>> {
    out.iter().find_map(|o| match o {
        Output::Command(Command::Prune { keep, .. }) => Some(keep.clone()),
        _ => None,
    })
}

#[test]
fn every_accepted_artifact_is_archived_once_and_the_inbox_keeps_it_until_then() {
    let mut e = site();
    let full = meta(ArtifactKind::Full, 10, 10, T0);
    let out = receive(&mut e, 2_000, full);
    assert_eq!(archives(&out), vec![full.key]);
    // The same artifact again (a duplicate ship) is not archived twice.
    assert!(archives(&receive(&mut e, 2_100, full)).is_empty());
    let log = meta(ArtifactKind::Log, 10, 20, T0 + 60_000);
    assert_eq!(archives(&receive(&mut e, 2_200, log)), vec![log.key]);
    // A newer full makes the recovery site prune its inbox: what waits to be archived stays.
    let full2 = meta(ArtifactKind::Full, 20, 20, T0 + 120_000);
    let mut out = receive(&mut e, 2_300, full2);
    for op in out.clone().iter().filter_map(|o| match o {
        Output::Command(c @ Command::Restore { .. }) => c.op(),
        _ => None,
    }) {
        e.handle(2_400, Input::Completed { op, result: Ok(()) });
        out.extend(drain(&mut e));
    }
    // Restores complete until the position passes the new full; then the inbox is pruned.
    for _ in 0..10 {
        let ops: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Command(c @ Command::Restore { .. }) => c.op(),
                _ => None,
            })
            .collect();
        out.clear();
        for op in ops {
            e.handle(2_500, Input::Completed { op, result: Ok(()) });
            out.extend(drain(&mut e));
        }
        if let Some(keep) = prune_keeps(&out) {
            for k in [full.key, log.key, full2.key] {
                assert!(keep.contains(&k), "{k:?} is not archived yet: {keep:?}");
            }
            break;
        }
    }
    let st = e.state();
    assert_eq!(st.archive[0].waiting.len(), 3);
    // Each copy confirmed: archived, nothing waits.
    for k in [full.key, log.key, full2.key] {
        e.handle(
            3_000,
            Input::Archived {
                key: k,
                error: None,
            },
        );
    }
    drain(&mut e);
    let st = e.state();
    assert!(st.archive[0].waiting.is_empty());
    assert_eq!(st.archive[0].entries.len(), 3);
    assert_eq!(st.archive[0].bytes, 300);
}

#[test]
fn a_copy_that_fails_raises_archive_failed_and_is_tried_again_until_it_is_archived() {
    let mut e = site();
    let full = meta(ArtifactKind::Full, 10, 10, T0);
    receive(&mut e, 2_000, full);
    e.handle(
        2_100,
        Input::Archived {
            key: full.key,
            error: Some("No space left on device (os error 28)".into()),
        },
    );
    let out = drain(&mut e);
    let alert = out
        .iter()
        .find_map(|o| match o {
            Output::Alert(a) => Some(a.clone()),
            _ => None,
        })
        .expect("an alert");
    assert_eq!(alert.id.kind.as_str(), "archive_failed");
    assert_eq!(alert.severity, Severity::Failure);
    assert!(alert.text.contains("No space left"), "{}", alert.text);
    // Not before a minute; then on the monitor's tick.
    e.handle(30_000, Input::Tick);
    assert!(archives(&drain(&mut e)).is_empty());
    e.handle(2_100 + MINUTE + 20_000, Input::Tick);
    assert_eq!(archives(&drain(&mut e)), vec![full.key]);
    e.handle(
        2_100 + MINUTE + 21_000,
        Input::Archived {
            key: full.key,
            error: None,
        },
    );
    let out = drain(&mut e);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Alert(a) if a.change == AlertChange::Cleared && a.id.kind.as_str() == "archive_failed"
    )));
}

#[test]
fn retention_removes_what_no_kept_point_needs_and_a_restart_issues_unconfirmed_copies_again() {
    let mut e = site();
    let mut now = 2_000;
    let mut all = Vec::new();
    // A full, then a log every 10 minutes for four hours, a new full after 2 hours.
    let mut m = vec![meta(ArtifactKind::Full, 0, 0, T0)];
    for i in 0..24u64 {
        m.push(meta(
            ArtifactKind::Log,
            i * 10,
            i * 10 + 10,
            T0 + (i as i64 + 1) * 10 * 60_000,
        ));
        if i == 11 {
            m.push(meta(ArtifactKind::Full, 120, 120, T0 + 2 * HOUR + 1));
        }
    }
    let mut removed = Vec::new();
    for x in m {
        now += 1_000;
        receive(&mut e, now, x);
        e.handle(
            now,
            Input::Archived {
                key: x.key,
                error: None,
            },
        );
        removed.extend(removals(&drain(&mut e)));
        all.push(x);
    }
    now += 11 * MINUTE;
    e.handle(now, Input::Tick);
    removed.extend(removals(&drain(&mut e)));
    // Newest at T0+4h: the window starts at T0+3h. The point just before it (lsn 170) and
    // every later one are kept; the second full (at 120) serves them all, so the first full
    // and the logs up to 120 go, and nothing else.
    let kept: Vec<ArtifactKey> = e.state().archive[0].entries.iter().map(|m| m.key).collect();
    let mut want: Vec<ArtifactKey> = all
        .iter()
        .filter(|m| m.key.lsn_end <= Lsn(120) && m.key.lsn_start < Lsn(120))
        .map(|m| m.key)
        .chain(std::iter::once(all[0].key))
        .collect();
    want.sort_unstable();
    want.dedup();
    removed.sort_unstable();
    assert_eq!(removed, want);
    for k in &removed {
        assert!(!kept.contains(k));
    }
    let pts = lifeboat_core::archive::points(&e.state().archive[0].entries);
    let pts = pts.all();
    assert_eq!(pts.first().unwrap().lsn, Lsn(120));
    assert_eq!(pts.last().unwrap().lsn, Lsn(240));
    let before_window = pts
        .iter()
        .filter(|p| p.utc.0 < T0 + 3 * HOUR)
        .map(|p| p.lsn)
        .max();
    assert_eq!(
        before_window,
        Some(Lsn(170)),
        "the point before the window stays"
    );
    // A copy not confirmed before a restart is issued again.
    let x = meta(ArtifactKind::Log, 240, 250, T0 + 4 * HOUR + 60_000);
    receive(&mut e, now + 1_000, x);
    e.handle(now + 2_000, Input::Restarted);
    assert_eq!(archives(&drain(&mut e)), vec![x.key]);
}

#[test]
fn the_archive_is_verified_on_schedule_from_a_kept_point_and_a_failure_raises_archive_failed() {
    let mut cfg = config(1);
    cfg.archive = Some(Policy {
        keep_ms: HOUR as u64,
        keep_daily: 0,
        keep_weekly: 0,
        verify_every_ms: 10 * MINUTE,
    });
    let mut e = SiteEngine::new(cfg, SiteId(1));
    e.handle(1_000, Input::Tick);
    drain(&mut e);
    let metas = [
        meta(ArtifactKind::Full, 0, 0, T0),
        meta(ArtifactKind::Log, 0, 10, T0 + 60_000),
        meta(ArtifactKind::Log, 10, 20, T0 + 120_000),
    ];
    for m in metas {
        receive(&mut e, 2_000, m);
        e.handle(
            2_000,
            Input::Archived {
                key: m.key,
                error: None,
            },
        );
    }
    drain(&mut e);
    let drills = |out: &[Output]| -> Vec<(lifeboat_core::OpId, Lsn, Vec<ArtifactMeta>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Command(Command::ArchiveDrill {
                    op, upto, chain, ..
                }) => Some((*op, *upto, chain.clone())),
                _ => None,
            })
            .collect()
    };
    // Not before the schedule.
    let mut now = 2_000;
    let mut issued = Vec::new();
    while issued.is_empty() && now < 30 * MINUTE {
        now += 1_000;
        e.handle(now, Input::Tick);
        issued = drills(&drain(&mut e));
    }
    assert!(now >= 10 * MINUTE, "verified at {now}");
    let (op, upto, chain) = issued[0].clone();
    // A kept point, with its whole chain from the full.
    assert_eq!(chain[0].key, metas[0].key);
    assert_eq!(chain.last().unwrap().key.lsn_end, upto);
    // One at a time: while it runs, only the same operation is issued again (an overdue
    // operation is re-issued with its id), never a second one.
    e.handle(now + 11 * MINUTE, Input::Tick);
    assert!(drills(&drain(&mut e)).iter().all(|d| d.0 == op));
    e.handle(
        now + 11 * MINUTE,
        Input::Completed {
            op,
            result: Err(lifeboat_core::Failure {
                code: 11,
                message: "database disk image is malformed".into(),
                permanent: false,
            }),
        },
    );
    let out = drain(&mut e);
    let alert = out
        .iter()
        .find_map(|o| match o {
            Output::Alert(a) if a.id.kind.as_str() == "archive_failed" => Some(a.clone()),
            _ => None,
        })
        .expect("archive_failed");
    assert!(
        alert.text.contains("malformed") && alert.text.contains("drill --at"),
        "{}",
        alert.text
    );
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Report(lifeboat_core::report::Report::Drill { ok: false, .. })
    )));
    // The next one, on schedule, succeeds and clears it.
    let mut next = Vec::new();
    let mut t = now + 11 * MINUTE;
    while next.is_empty() && t < now + 40 * MINUTE {
        t += 1_000;
        e.handle(t, Input::Tick);
        next = drills(&drain(&mut e));
    }
    let (op2, _, _) = next.first().cloned().expect("a second verification");
    e.handle(
        t,
        Input::Completed {
            op: op2,
            result: Ok(()),
        },
    );
    let out = drain(&mut e);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Alert(a) if a.change == AlertChange::Cleared && a.id.kind.as_str() == "archive_failed"
    )));
}
