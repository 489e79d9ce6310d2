//! Artifacts whose manifest cannot be read (issue 12, item 5): the adapter moves the pair into
//! the quarantine and reports `Input::UnreadableManifest`; the engine raises one
//! `unreadable_manifest` notice, audits it, and recovers: the primary forgets the artifact it
//! can no longer ship and takes a new full backup; the recovery site acknowledges nothing.

mod common;
use common::*;
use lifeboat_core::alert::AlertChange;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::name::ArtifactName;
use lifeboat_core::protocol::{Command, Input, Output};
use lifeboat_core::{AlertKind, ArtifactKind, ArtifactMeta, DbId, Severity, SiteId, MINUTE};

/// Run until the primary ships an artifact of `kind` to the recovery site, and lose that copy
/// in transit: the recovery site never gets it (its file is about to leave the outbox).
fn lose_next_ship(h: &mut Harness, kind: ArtifactKind) -> ArtifactMeta {
    let shipped = |h: &Harness| {
        h.inflight.iter().find_map(|(_, n, i)| match i {
            Input::ArtifactReceived { meta, .. } if *n == B && meta.key.kind == kind => Some(*meta),
            _ => None,
        })
    };
    assert!(
        h.run_until(10 * MINUTE, |h| shipped(h).is_some()),
        "no {kind:?} was shipped:\n{}",
        h.trace()
    );
    let lost = shipped(h).unwrap();
    h.inflight.retain(|(_, n, i)| {
        !matches!(i, Input::ArtifactReceived { meta, .. } if *n == B && meta.key == lost.key)
    });
    lost
}

/// The adapter's report of the lost artifact's unreadable outbox manifest, named the way the
/// outbox names it.
fn report_unreadable(h: &mut Harness, lost: &ArtifactMeta) -> String {
    let file = ArtifactName::of(lost, "db0").to_string();
    h.feed(
        A,
        Input::UnreadableManifest {
            outbox: true,
            file: file.clone(),
            db: Some(DbId(0)),
            key: None,
            reason: format!("manifest outbox/{file}.manifest is not valid JSON"),
        },
    );
    file
}

/// Only alerts and audit records: nothing commanded, sent or reported.
fn notices_only(out: &[Output]) -> bool {
    out.iter()
        .all(|o| matches!(o, Output::Alert(_) | Output::Audit(_)))
}

/// The first alert among `out`.
fn only_alert(out: &[Output]) -> &lifeboat_core::alert::AlertEvent {
    out.iter()
        .find_map(|o| match o {
            Output::Alert(a) => Some(a),
            _ => None,
        })
        .expect("no alert")
}

fn full_backups_of_db0(h: &Harness, since: usize) -> usize {
    h.commands[since..]
        .iter()
        .filter(|(n, _, c)| {
            *n == A
                && matches!(
                    c,
                    Command::TakeBackup {
                        kind: ArtifactKind::Full,
                        db: Some(DbId(0)),
                        ..
                    }
                )
        })
        .count()
}

#[test]
fn an_unreadable_outbox_manifest_at_the_primary_raises_a_notice_and_takes_a_full_backup_the_recovery_site_continues_from(
) {
    let mut cfg = config(1);
    cfg.restore.reseed_after_minutes = 3;
    let mut h = Harness::new(cfg);
    h.run(20_000);
    let lost = lose_next_ship(&mut h, ArtifactKind::Log);
    let commands_before = h.commands.len();
    let file = report_unreadable(&mut h, &lost);

    let notices: Vec<_> = h
        .alerts
        .iter()
        .filter(|(n, _, a)| *n == A && a.id.kind == AlertKind::UnreadableManifest)
        .map(|(_, _, a)| a)
        .collect();
    assert_eq!(notices.len(), 1, "{notices:#?}");
    let notice = notices[0];
    assert_eq!(notice.change, AlertChange::Notice);
    assert_eq!(notice.severity, Severity::Failure);
    assert_eq!(notice.id.db, Some(DbId(0)));
    assert!(
        notice.text.contains(&file)
            && notice.text.contains("quarantine")
            && notice.text.contains("full backup of database [db0]"),
        "{}",
        notice.text
    );
    assert_eq!(h.audits_of(A, "unreadable manifest").len(), 1);
    assert_eq!(
        full_backups_of_db0(&h, commands_before),
        1,
        "the primary took no new full backup"
    );
    assert!(
        h.sites[A].unacknowledged().all(|m| m.key != lost.key),
        "the primary still tries to ship an artifact whose file left the outbox"
    );

    // The lost log leaves a hole that only the new full bridges: the recovery site rebuilds
    // from it on its own and continues the chain past it, with no operator.
    let target = h.db[A].pos(0);
    assert!(
        h.run_until(10 * MINUTE, |h| h.db[B].pos(0) >= target),
        "the recovery site did not get past the lost log:\n{}",
        h.trace()
    );
    assert!(
        !h.commands_of(B, |c| matches!(c, Command::Reseed { full, .. }
            if full.key.lsn_end >= lost.key.lsn_end))
            .is_empty(),
        "the recovery site did not rebuild from the new full backup"
    );
    h.run(MINUTE);
    assert!(
        h.missing_at(B).iter().all(|w| w.t + 20_000 > h.t),
        "acknowledged writes older than the shipping delay are missing at the recovery site"
    );
    // One report, one notice: nothing re-raises it.
    assert_eq!(
        h.alerts_of("unreadable_manifest").len(),
        1,
        "{:#?}",
        h.alerts_of("unreadable_manifest")
    );
    h.assert_safe();
}

#[test]
fn an_unreadable_inbox_manifest_at_the_recovery_site_is_noticed_and_neither_acknowledged_nor_requested(
) {
    let cfg = config(2);
    let mut e = SiteEngine::new(cfg, SiteId(1));
    e.handle(1_000, Input::Tick);
    while e.poll_output().is_some() {}
    // At the same instant: no timer is due, every output is the input's.
    e.handle(
        1_000,
        Input::UnreadableManifest {
            outbox: false,
            file: "db1_2026_11_22_03_05_00_tlog_0".into(),
            db: Some(DbId(1)),
            key: None,
            reason: "manifest inbox/db1_2026_11_22_03_05_00_tlog_0.manifest is larger than \
                     65536 bytes"
                .into(),
        },
    );
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(
        notices_only(&out),
        "the recovery site acknowledged, requested or commanded something: {out:#?}"
    );
    let alert = only_alert(&out);
    assert_eq!(alert.id.kind, AlertKind::UnreadableManifest);
    assert_eq!(alert.change, AlertChange::Notice);
    assert_eq!(alert.id.db, Some(DbId(1)));
    assert!(alert.text.contains("db1_2026_11_22_03_05_00_tlog_0") && alert.text.contains("inbox"));
    assert!(
        e.alerts().iter().next().is_none(),
        "a notice leaves no condition behind"
    );
}

#[test]
fn an_unreadable_manifest_whose_name_says_no_database_takes_a_full_backup_of_every_database() {
    let mut h = Harness::new(config(2));
    h.run(20_000);
    let before = h.commands.len();
    h.feed(
        A,
        Input::UnreadableManifest {
            outbox: true,
            file: "garbage".into(),
            db: None,
            key: None,
            reason: "not JSON".into(),
        },
    );
    assert!(h.commands[before..].iter().any(|(n, _, c)| *n == A
        && matches!(
            c,
            Command::TakeBackup {
                kind: ArtifactKind::Full,
                db: None,
                ..
            }
        )));
    let n = h.alerts_of("unreadable_manifest");
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].id.db, None);
    assert!(n[0].text.contains("every database"), "{}", n[0].text);
    h.assert_safe();
}

/// A capture gap the driver healed (`Input::CaptureGap`) is a one-off `capture_gap` warning
/// naming the database and what happened, audited, with no command and no condition left; a
/// database id out of range is ignored.
#[test]
fn a_healed_capture_gap_is_a_warning_notice_and_nothing_else() {
    let cfg = config(2);
    let mut e = SiteEngine::new(cfg, SiteId(0));
    e.handle(1_000, Input::Tick);
    while e.poll_output().is_some() {}
    e.handle(
        1_000,
        Input::CaptureGap {
            db: DbId(1),
            what: "its WAL was emptied while the agent was not running".into(),
        },
    );
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(
        notices_only(&out),
        "a healed gap commands nothing: {out:#?}"
    );
    assert!(out.iter().any(|o| matches!(o, Output::Audit(_))), "audited");
    let alert = only_alert(&out);
    assert_eq!(alert.id.kind, AlertKind::CaptureGap);
    assert_eq!(alert.id.kind.as_str(), "capture_gap");
    assert_eq!(alert.change, AlertChange::Notice);
    assert_eq!(alert.severity, Severity::Warning);
    assert_eq!(alert.id.db, Some(DbId(1)));
    assert!(
        alert.text.contains("[db1]") && alert.text.contains("WAL was emptied"),
        "{}",
        alert.text
    );
    assert!(e.alerts().iter().next().is_none(), "no condition is left");

    e.handle(
        1_000,
        Input::CaptureGap {
            db: DbId(7),
            what: "x".into(),
        },
    );
    assert!(e.poll_output().is_none(), "an unknown database is ignored");
}

/// A stream alarm (`Input::StreamAlarm`) is a condition: raised once with the driver's words
/// (synchronous mode degraded is critical, a slot near its bound a warning), raised again only
/// as an update, cleared when the driver says it ended; it commands nothing. An unknown
/// database is ignored.
#[test]
fn stream_alarms_raise_and_clear_a_condition_with_their_severity() {
    use lifeboat_core::protocol::StreamAlarm;
    let mut e = SiteEngine::new(config(2), SiteId(0));
    e.handle(1_000, Input::Tick);
    while e.poll_output().is_some() {}
    let alarm = |e: &mut SiteEngine, alarm, active, what: &str| {
        e.handle(
            1_000,
            Input::StreamAlarm {
                db: DbId(1),
                alarm,
                active,
                what: what.into(),
            },
        );
        let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
        assert!(
            out.iter()
                .all(|o| matches!(o, Output::Alert(_) | Output::Audit(_))),
            "an alarm commands nothing: {out:#?}"
        );
        out.into_iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some(a),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let raised = alarm(
        &mut e,
        StreamAlarm::SynchronousDegraded,
        true,
        "not streamed for 10000 ms",
    );
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].id.kind.as_str(), "synchronous_degraded");
    assert_eq!(raised[0].severity, Severity::Critical);
    assert_eq!(raised[0].change, AlertChange::Raised);
    assert!(raised[0].text.contains("10000 ms") && raised[0].text.contains("[db1]"));
    assert_eq!(e.alerts().iter().count(), 1);
    let slot = alarm(&mut e, StreamAlarm::SlotNearBound, true, "100 MiB left");
    assert_eq!(slot[0].id.kind, AlertKind::SlotNearBound);
    assert_eq!(slot[0].severity, Severity::Warning);
    let cleared = alarm(&mut e, StreamAlarm::SynchronousDegraded, false, "");
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].change, AlertChange::Cleared);
    assert_eq!(e.alerts().iter().count(), 1, "the slot alarm stays");
    assert!(alarm(&mut e, StreamAlarm::SynchronousDegraded, false, "").is_empty());
    e.handle(
        1_000,
        Input::StreamAlarm {
            db: DbId(9),
            alarm: StreamAlarm::SlotNearBound,
            active: true,
            what: "x".into(),
        },
    );
    assert!(e.poll_output().is_none(), "an unknown database is ignored");
}

/// A rebuild's driver found a former primary's lost writes (`Input::LostWrites`): the site
/// reports them and tells its peer, whose engine reports them as the peer's; neither commands
/// anything. A description that is not one (an unknown database, an end before its start) is
/// rejected with an audit, neither reported nor sent.
#[test]
fn lost_writes_are_reported_at_both_sites_and_nonsense_is_rejected() {
    use lifeboat_core::protocol::{LostWrites, Message};
    use lifeboat_core::report::Report;
    use lifeboat_core::{Lsn, Peer, UtcMillis};
    let mut old = SiteEngine::new(config(2), SiteId(1));
    let mut new = SiteEngine::new(config(2), SiteId(0));
    for e in [&mut old, &mut new] {
        e.handle(1_000, Input::Tick);
        while e.poll_output().is_some() {}
    }
    let lost = LostWrites {
        db: DbId(1),
        from: Lsn(0x300_0100),
        to: Lsn(0x300_2100),
        transactions: Some(12),
        first_commit: Some(UtcMillis(1_000)),
        last_commit: Some(UtcMillis(1_450)),
        last_kept_commit: Some(UtcMillis(990)),
        kept: "/spool/db1/diverged/00000001-0000000003000100".into(),
    };
    old.handle(1_000, Input::LostWrites(lost.clone()));
    let out: Vec<Output> = std::iter::from_fn(|| old.poll_output()).collect();
    assert!(
        !out.iter().any(|o| matches!(o, Output::Command(_))),
        "{out:#?}"
    );
    let audit = out
        .iter()
        .find_map(|o| match o {
            Output::Audit(a) => Some(a),
            _ => None,
        })
        .expect("audited");
    assert!(
        audit.why.contains("8192 positions") && audit.why.contains("12 transactions"),
        "{}",
        audit.why
    );
    let reported: Vec<&Report> = out
        .iter()
        .filter_map(|o| match o {
            Output::Report(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        reported,
        [&Report::LostWrites {
            site: SiteId(1),
            epoch: old.state().epoch,
            lost: lost.clone()
        }]
    );
    let sent = out
        .iter()
        .find_map(|o| match o {
            Output::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .expect("told to the peer");
    assert_eq!(
        sent,
        (Peer::Site(SiteId(0)), Message::LostWrites(lost.clone()))
    );
    new.handle(
        1_001,
        Input::Message {
            from: Peer::Site(SiteId(1)),
            msg: sent.1,
        },
    );
    let out: Vec<Output> = std::iter::from_fn(|| new.poll_output()).collect();
    assert!(
        out.iter().any(
            |o| matches!(o, Output::Report(Report::LostWrites { site, lost: l, .. })
            if *site == SiteId(1) && *l == lost)
        ),
        "{out:#?}"
    );
    assert!(!out
        .iter()
        .any(|o| matches!(o, Output::Send { .. } | Output::Command(_))));
    for bad in [
        LostWrites {
            db: DbId(7),
            ..lost.clone()
        },
        LostWrites {
            to: Lsn(5),
            ..lost.clone()
        },
    ] {
        old.handle(1_002, Input::LostWrites(bad));
        let out: Vec<Output> = std::iter::from_fn(|| old.poll_output()).collect();
        assert!(
            out.iter()
                .all(|o| matches!(o, Output::Audit(a) if a.what == "reject lost writes")),
            "{out:#?}"
        );
        assert_eq!(out.len(), 1);
    }
}

/// The recovery site asks for a full backup again while the first one (of a large database)
/// is still being taken or shipped: the primary takes no second one, which would only compete
/// with the first. Once the first was refused, a new request takes a new one.
#[test]
fn a_repeated_request_for_a_full_backup_while_one_is_under_way_takes_no_second_one() {
    use lifeboat_core::protocol::Message;
    use lifeboat_core::Peer;
    let mut e = SiteEngine::new(config(1), SiteId(0));
    e.handle(1_000, Input::Tick);
    while e.poll_output().is_some() {}
    let ask = Input::Message {
        from: Peer::Site(SiteId(1)),
        msg: Message::RequestFull { db: Some(DbId(0)) },
    };
    let fulls = |out: &[Output]| -> Vec<lifeboat_core::OpId> {
        out.iter()
            .filter_map(|o| match o {
                Output::Command(Command::TakeBackup {
                    op,
                    kind: ArtifactKind::Full,
                    ..
                }) => Some(*op),
                _ => None,
            })
            .collect()
    };
    e.handle(1_000, ask.clone());
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    let first = fulls(&out);
    assert_eq!(first.len(), 1, "the first request takes a full: {out:#?}");

    e.handle(2_000, ask.clone());
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(
        fulls(&out).is_empty(),
        "a second full while one is taken: {out:#?}"
    );
    assert!(audits(&out).iter().any(|a| a == "no new full backup"));

    // Taken and in the outbox, on its first ship: still under way.
    let meta = ArtifactMeta {
        key: lifeboat_core::ArtifactKey {
            db: DbId(0),
            epoch: lifeboat_core::Epoch(1),
            lsn_start: lifeboat_core::Lsn(10),
            lsn_end: lifeboat_core::Lsn(10),
            kind: ArtifactKind::Full,
        },
        base_full: None,
        created_utc: lifeboat_core::UtcMillis(1_000),
        size: 1 << 30,
        checksum: lifeboat_core::Checksum(7),
        retry: 0,
    };
    e.handle(3_000, Input::ArtifactDiscovered(meta));
    e.handle(
        3_000,
        Input::Completed {
            op: first[0],
            result: Ok(()),
        },
    );
    while e.poll_output().is_some() {}
    e.handle(4_000, ask.clone());
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert!(
        fulls(&out).is_empty(),
        "a second full while one ships: {out:#?}"
    );

    // The recovery site refused that copy: the next request takes a new full.
    e.handle(
        5_000,
        Input::Message {
            from: Peer::Site(SiteId(1)),
            msg: Message::Resend { key: meta.key },
        },
    );
    while e.poll_output().is_some() {}
    e.handle(6_000, ask);
    let out: Vec<Output> = std::iter::from_fn(|| e.poll_output()).collect();
    assert_eq!(fulls(&out).len(), 1, "a refused full is replaced: {out:#?}");
}
