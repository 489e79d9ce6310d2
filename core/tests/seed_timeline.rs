//! The recovery-location seed's timeline, replayed minute by minute against one secondary:
//! a transaction log every 5 minutes, one log that fails to restore, three attempts, the
//! `restore_error` alert at the minute it is due with the seed's exact text, an update on every
//! later retry, critical 30 minutes after the first raise, and the next log (which covers the
//! failed range) restoring and clearing it.

use lifeboat_core::alert::{AlertChange, AlertEvent};
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{Command, Failure, Input, Message, Output, Peer};
use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::{
    AlertKind, ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn, Millis,
    Severity, SiteId, UtcMillis, MINUTE,
};
use std::collections::VecDeque;

/// Minute 0 of the timeline is 2026-11-22T03:00:00Z; monotonic time starts at 0 with it.
fn utc(minute: u64) -> UtcMillis {
    let base = UtcDateTime {
        year: 2026,
        month: 11,
        day: 22,
        hour: 3,
        minute: 0,
        second: 0,
    };
    UtcMillis(base.to_millis().0 + (minute * MINUTE) as i64)
}

fn artifact(kind: ArtifactKind, s: u64, e: u64, minute: u64) -> ArtifactMeta {
    ArtifactMeta {
        key: ArtifactKey {
            db: DbId(0),
            epoch: Epoch(1),
            lsn_start: Lsn(s),
            lsn_end: Lsn(e),
            kind,
        },
        base_full: None,
        created_utc: utc(minute),
        size: 1 << 20,
        checksum: Checksum(s << 32 | e),
        retry: 0,
    }
}

/// The log the primary takes at `minute`: every 5 minutes, the 100 positions written since the
/// previous one (the full at minute 0 is at position 0).
fn log_at(minute: u64) -> ArtifactMeta {
    let k = minute / 5;
    artifact(ArtifactKind::Log, (k - 1) * 100, k * 100, minute)
}

const FAILING_MINUTE: u64 = 15;
const ERROR: &str = "RESTORE LOG is terminating abnormally";

fn error_text(retry: u32, minutes_since_restore: u64) -> String {
    format!(
        "Errors occurred for database [sales] while restoring the transaction log \
         [sales_2026_11_22_03_15_00_tlog_{retry}]. It has been [{minutes_since_restore}] minutes \
         since the last successful restore. The error provided while restoring is: 3013 {ERROR}."
    )
}

#[test]
fn seed_timeline_failing_log_alerts_escalates_and_is_cleared_by_the_next_log() {
    let mut cfg = Config {
        databases: vec!["sales".into()],
        arbiter: false,
        ..Config::default()
    };
    // The seed's thresholds are the defaults; its timeline has no reseed, so the reseed limit
    // (proven in chain.rs) is moved past the end of this hour.
    assert_eq!(
        (
            cfg.alerts.after_attempts,
            cfg.alerts.after_minutes,
            cfg.alerts.critical_after_minutes
        ),
        (3, 15, 30)
    );
    assert_eq!(cfg.restore.retry_delay_ms, MINUTE);
    cfg.restore.reseed_after_minutes = 24 * 60;
    let mut e = SiteEngine::new(cfg, SiteId(1));
    let failing = log_at(FAILING_MINUTE).key;
    // The "next log": the primary's log at minute 50 covers everything since the failed one.
    let cover = artifact(ArtifactKind::Log, 200, 1000, 50);

    let mut events: Vec<(u64, AlertEvent)> = Vec::new();
    let mut restored: Vec<(u64, ArtifactKey)> = Vec::new();
    let mut relabels: Vec<(u64, u32)> = Vec::new();
    let mut other: Vec<(u64, Message)> = Vec::new();
    let mut feed = |e: &mut SiteEngine, now: Millis, input: Input| {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            e.handle(now, input);
            while let Some(o) = e.poll_output() {
                let minute = now / MINUTE;
                let on_the_minute = now.is_multiple_of(MINUTE);
                match o {
                    Output::Command(Command::Restore { op, artifact }) => {
                        assert!(on_the_minute, "restores happen on arrivals and retries");
                        let result = if artifact.key == failing {
                            Err(Failure {
                                code: 3013,
                                message: ERROR.into(),
                                permanent: false,
                            })
                        } else {
                            restored.push((minute, artifact.key));
                            Ok(())
                        };
                        inputs.push_back(Input::Completed { op, result });
                    }
                    Output::Command(Command::Relabel { artifact }) => {
                        assert_eq!(artifact.key, failing);
                        relabels.push((minute, artifact.retry));
                    }
                    Output::Command(Command::Reseed { .. }) => panic!("no reseed in the seed"),
                    Output::Alert(a) => {
                        assert!(on_the_minute, "alerts come from minute checks and retries");
                        events.push((minute, a))
                    }
                    Output::Send {
                        to: Peer::Site(_),
                        msg,
                    } if !matches!(msg, Message::Heartbeat(_) | Message::Ack { .. }) => {
                        other.push((minute, msg))
                    }
                    _ => {}
                }
            }
        }
    };

    let end = 60 * MINUTE;
    let mut now = 0;
    while now <= end {
        let minute = now / MINUTE;
        let arrival = match minute {
            0 => Some(artifact(ArtifactKind::Full, 0, 0, 0)),
            50 => Some(cover),
            m if m % 5 == 0 => Some(log_at(m)),
            _ => None,
        };
        if let Some(m) = arrival {
            feed(
                &mut e,
                now,
                Input::ArtifactReceived {
                    meta: m,
                    computed: m.checksum,
                    from: SiteId(0),
                },
            );
        }
        // Tick through every deadline up to the next minute.
        let next = now + MINUTE;
        while let Some(t) = e.poll_timeout().filter(|t| *t < next) {
            feed(&mut e, t.max(now), Input::Tick);
        }
        now = next;
    }

    // Logs at 0..10 restore on arrival; the one taken at minute 15 fails at 15, 16, 17, ...
    assert_eq!(
        restored[..3],
        [
            (0, artifact(ArtifactKind::Full, 0, 0, 0).key),
            (5, log_at(5).key),
            (10, log_at(10).key)
        ]
    );
    // ... each attempt renames it with its retry count, one a minute until the next log ...
    assert_eq!(
        relabels,
        (15..50).map(|m| (m, (m - 14) as u32)).collect::<Vec<_>>()
    );

    let errors: Vec<&(u64, AlertEvent)> = events
        .iter()
        .filter(|(_, a)| a.id.kind == AlertKind::RestoreError)
        .collect();
    // ... the third attempt, at minute 17, raises the alert with the seed's text ...
    let (m, first) = errors[0];
    assert_eq!(*m, 17);
    assert_eq!(first.change, AlertChange::Raised);
    assert_eq!(first.severity, Severity::Failure);
    assert_eq!(first.count, 1);
    assert_eq!(first.text, error_text(3, 7));
    // ... every later attempt re-raises it as an update of the same alert ...
    for (m, a) in &errors[1..errors.len() - 1] {
        assert_eq!(a.id, first.id);
        assert_eq!(a.change, AlertChange::Updated);
        assert_eq!(a.first_seen, 17 * MINUTE);
        let want = if *m >= 47 {
            Severity::Critical
        } else {
            Severity::Failure
        };
        assert_eq!(a.severity, want, "minute {m}");
    }
    let attempts: Vec<(u64, String)> = errors[1..errors.len() - 1]
        .iter()
        .filter(|(m, a)| a.count as u64 == *m - 16)
        .map(|(m, a)| (*m, a.text.clone()))
        .collect();
    assert_eq!(
        attempts[..3],
        [
            (18, error_text(4, 8)),
            (19, error_text(5, 9)),
            (20, error_text(6, 10))
        ]
    );
    // ... critical exactly 30 minutes after the first raise ...
    let critical = errors
        .iter()
        .find(|(_, a)| a.severity == Severity::Critical)
        .unwrap();
    assert_eq!(critical.0, 47);
    // (The minute check escalates before the minute's retry: the name still says 32.)
    assert_eq!(critical.1.text, error_text(32, 37));
    // ... and the next log, covering the failed range, restores at minute 50 and clears it.
    let (m, last) = errors[errors.len() - 1];
    assert_eq!((*m, last.change), (50, AlertChange::Cleared));
    assert!(restored.contains(&(50, cover.key)));
    assert!(restored.iter().all(|(_, k)| *k != failing));
    assert!(restored.contains(&(55, log_at(55).key)));
    assert_eq!(
        e.db(DbId(0)).unwrap().position,
        Some(Lsn(1200)),
        "and the logs at 55 and 60 after it"
    );
    assert!(e.db(DbId(0)).unwrap().pending.is_empty());

    // Along the way: the backlog reached its age threshold (the failed log waited 30 minutes)
    // and cleared after it; nothing else was raised, nothing was asked of the primary.
    let backlog: Vec<(u64, AlertChange)> = events
        .iter()
        .filter(|(_, a)| a.id.kind == AlertKind::Backlog)
        .map(|(m, a)| (*m, a.change))
        .collect();
    assert_eq!(backlog.first(), Some(&(45, AlertChange::Raised)));
    // (The minute-50 check ran while the covering log was still restoring: cleared at 51.)
    assert_eq!(backlog.last(), Some(&(51, AlertChange::Cleared)));
    let kinds: Vec<AlertKind> = events
        .iter()
        .map(|(_, a)| a.id.kind)
        .filter(|k| !matches!(k, AlertKind::RestoreError | AlertKind::Backlog))
        .collect();
    assert!(kinds.is_empty(), "unexpected alerts: {kinds:?}");
    assert!(other.is_empty(), "unexpected messages: {other:?}");
    assert!(e.alerts().is_empty());
}
