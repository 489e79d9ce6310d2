//! The proof of the log-shipping half of the core (issue 2): artifact names, the primary's
//! outbox, the secondary's chain and restores, retries, reseeds, alerts, status and scale, and a
//! property test over random arrivals and restore outcomes.
//!
//! Every test drives one `SiteEngine` directly and plays its adapter: it feeds `handle(now, ..)`,
//! drains `poll_output()`, ticks at `poll_timeout()` and answers restores like a database would.

mod common;
use common::audits;
use lifeboat_core::alert::{AlertChange, AlertEvent};
use lifeboat_core::engine::{DbState, Seen, SiteEngine};
use lifeboat_core::name::{ArtifactName, NamePart};
use lifeboat_core::protocol::{
    Command, Failure, Heartbeat, Input, Message, OperatorRequest, Output, Peer,
};
use lifeboat_core::report::Report;
use lifeboat_core::utc::UtcDateTime;
use lifeboat_core::{
    AlertKind, ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn, Millis,
    OpId, Severity, SiteId, UtcMillis, MINUTE,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

const PRIMARY: SiteId = SiteId(0);
const SECONDARY: SiteId = SiteId(1);
const SECOND: Millis = 1_000;

// ------------------------------------------------------------------------------------ driver

/// How the test's database answers a restore or reseed: `None` leaves it outstanding.
type Outcome = Box<dyn FnMut(&ArtifactMeta) -> Option<Result<(), Failure>>>;

/// One site engine and the adapter around it.
struct Site {
    e: SiteEngine,
    now: Millis,
    /// Every output, with the time it came out.
    log: Vec<(Millis, Output)>,
    outcome: Outcome,
}

impl Site {
    fn new(cfg: Config, me: SiteId) -> Site {
        cfg.validate().unwrap();
        Site {
            e: SiteEngine::new(cfg, me),
            now: 0,
            log: Vec::new(),
            outcome: Box::new(|_| None),
        }
    }

    /// The recovery site (site 1, the default secondary).
    fn secondary(cfg: Config) -> Site {
        Site::new(cfg, SECONDARY)
    }

    /// The primary site without an arbiter: it holds epoch 1 alone and is writable on start.
    fn primary(mut cfg: Config) -> Site {
        cfg.arbiter = false;
        Site::new(cfg, PRIMARY)
    }

    /// Every restore and reseed succeeds at once.
    fn restoring_ok(mut self) -> Site {
        self.outcome = Box::new(|_| Some(Ok(())));
        self
    }

    /// Restores of `bad` fail with `failure`; every other restore succeeds.
    fn failing(mut self, bad: ArtifactKey, failure: Failure) -> Site {
        self.outcome = Box::new(move |m| {
            Some(if m.key == bad {
                Err(failure.clone())
            } else {
                Ok(())
            })
        });
        self
    }

    /// Run the timers due up to `to`, then stand at `to`.
    fn run_until(&mut self, to: Millis) -> Vec<Output> {
        let mut outs = Vec::new();
        let mut last = None;
        let mut repeats = 0;
        while let Some(t) = self.e.poll_timeout() {
            if t > to {
                break;
            }
            let t = t.max(self.now);
            if last == Some(t) {
                repeats += 1;
                assert!(
                    repeats < 100,
                    "a timer at {t} keeps firing without moving on"
                );
            } else {
                (last, repeats) = (Some(t), 0);
            }
            self.apply(t, Input::Tick, &mut outs);
        }
        self.now = self.now.max(to);
        outs
    }

    /// Feed one input at `at`, after the timers due before it.
    fn at(&mut self, at: Millis, input: Input) -> Vec<Output> {
        let mut outs = self.run_until(at);
        self.apply(at, input, &mut outs);
        outs
    }

    /// Feed one input now.
    fn feed(&mut self, input: Input) -> Vec<Output> {
        let now = self.now;
        self.at(now, input)
    }

    fn apply(&mut self, at: Millis, input: Input, outs: &mut Vec<Output>) {
        self.now = self.now.max(at);
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            self.e.handle(self.now, input);
            while let Some(o) = self.e.poll_output() {
                if let Output::Command(
                    Command::Restore { op, artifact } | Command::Reseed { op, full: artifact },
                ) = &o
                {
                    if let Some(result) = (self.outcome)(artifact) {
                        inputs.push_back(Input::Completed { op: *op, result });
                    }
                }
                // This site's own database service answers its checks.
                if let Output::Command(Command::CheckService { op }) = &o {
                    inputs.push_back(Input::Completed {
                        op: *op,
                        result: Ok(()),
                    });
                }
                self.log.push((self.now, o.clone()));
                outs.push(o);
            }
        }
    }

    fn receive(&mut self, at: Millis, m: ArtifactMeta) -> Vec<Output> {
        self.at(at, received(m))
    }

    fn receive_corrupted(&mut self, at: Millis, m: ArtifactMeta) -> Vec<Output> {
        self.at(
            at,
            Input::ArtifactReceived {
                meta: m,
                computed: Checksum(m.checksum.0 ^ 0xdead_beef),
                from: PRIMARY,
            },
        )
    }

    fn complete(&mut self, op: OpId, result: Result<(), Failure>) -> Vec<Output> {
        self.feed(Input::Completed { op, result })
    }

    fn db(&self, db: u32) -> &DbState {
        self.e.db(DbId(db)).unwrap()
    }

    fn position(&self, db: u32) -> Option<u64> {
        self.db(db).position.map(|l| l.0)
    }

    /// The alert events of one kind in the whole log, with their times.
    fn alerts(&self, kind: AlertKind) -> Vec<(Millis, AlertEvent)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Alert(a) if a.id.kind == kind => Some((*t, a.clone())),
                _ => None,
            })
            .collect()
    }

    /// Messages to the peer site in the whole log, heartbeats left out.
    fn sent(&self) -> Vec<(Millis, Message)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Send {
                    to: Peer::Site(_),
                    msg,
                } if !matches!(msg, Message::Heartbeat(_)) => Some((*t, msg.clone())),
                _ => None,
            })
            .collect()
    }

    /// When this site asked the primary for a full backup.
    fn asked_for_fulls(&self) -> Vec<Millis> {
        self.sent()
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::RequestFull { .. }))
            .map(|(t, _)| t)
            .collect()
    }

    fn active(&self, kind: AlertKind) -> usize {
        self.e
            .alerts()
            .iter()
            .filter(|(id, _)| id.kind == kind)
            .count()
    }
}

fn received(m: ArtifactMeta) -> Input {
    Input::ArtifactReceived {
        meta: m,
        computed: m.checksum,
        from: PRIMARY,
    }
}

fn restores(outs: &[Output]) -> Vec<(OpId, ArtifactMeta)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Command(Command::Restore { op, artifact }) => Some((*op, *artifact)),
            _ => None,
        })
        .collect()
}

fn reseeds(outs: &[Output]) -> Vec<(OpId, ArtifactMeta)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Command(Command::Reseed { op, full }) => Some((*op, *full)),
            _ => None,
        })
        .collect()
}

fn ships(outs: &[Output]) -> Vec<(OpId, ArtifactMeta)> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Command(Command::Ship { op, artifact, to }) => {
                assert_eq!(*to, SECONDARY);
                Some((*op, *artifact))
            }
            _ => None,
        })
        .collect()
}

fn relabels(outs: &[Output]) -> Vec<ArtifactMeta> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Command(Command::Relabel { artifact }) => Some(*artifact),
            _ => None,
        })
        .collect()
}

fn alerts_in(outs: &[Output], kind: AlertKind) -> Vec<AlertEvent> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Alert(a) if a.id.kind == kind => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn messages(outs: &[Output]) -> Vec<Message> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Send {
                to: Peer::Site(_),
                msg,
            } if !matches!(msg, Message::Heartbeat(_)) => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn transient() -> Failure {
    Failure {
        code: 3013,
        message: "RESTORE LOG is terminating abnormally".into(),
        permanent: false,
    }
}

fn permanent() -> Failure {
    Failure {
        code: 3241,
        message: "The media family on device is incorrectly formed".into(),
        permanent: true,
    }
}

// ------------------------------------------------------------------------------------ artifacts

/// 2026-11-22T03:00:00Z plus `minute` minutes: when the primary created an artifact.
fn utc(minute: i64) -> UtcMillis {
    let base = UtcDateTime {
        year: 2026,
        month: 11,
        day: 22,
        hour: 3,
        minute: 0,
        second: 0,
    };
    UtcMillis(base.to_millis().0 + minute * MINUTE as i64)
}

fn artifact(
    db: u32,
    kind: ArtifactKind,
    s: u64,
    e: u64,
    base: Option<u64>,
    minute: i64,
) -> ArtifactMeta {
    ArtifactMeta {
        key: ArtifactKey {
            db: DbId(db),
            epoch: Epoch(1),
            lsn_start: Lsn(s),
            lsn_end: Lsn(e),
            kind,
        },
        base_full: base.map(Lsn),
        created_utc: utc(minute),
        size: 4096,
        checksum: Checksum(
            s.wrapping_mul(1_000_003) ^ e.wrapping_mul(7_919) ^ (kind as u64) << 60 ^ u64::from(db),
        ),
        retry: 0,
    }
}

/// A full backup that resets the database to `at`.
fn full(db: u32, at: u64, minute: i64) -> ArtifactMeta {
    artifact(db, ArtifactKind::Full, at, at, None, minute)
}

fn log(db: u32, s: u64, e: u64, minute: i64) -> ArtifactMeta {
    artifact(db, ArtifactKind::Log, s, e, None, minute)
}

fn incr(db: u32, s: u64, e: u64, base: u64, minute: i64) -> ArtifactMeta {
    artifact(db, ArtifactKind::Incremental, s, e, Some(base), minute)
}

fn config(dbs: usize) -> Config {
    Config {
        // No arbiter: the secondary never queries one, so no arbiter alerts mix into these tests.
        arbiter: false,
        databases: if dbs == 1 {
            vec!["sales".into()]
        } else {
            (0..dbs).map(|i| format!("db{i}")).collect()
        },
        ..Config::default()
    }
}

/// A secondary whose database `sales` restored a full backup to 100 at minute 0.
fn seeded_secondary(cfg: Config) -> Site {
    let mut s = Site::secondary(cfg).restoring_ok();
    s.receive(0, full(0, 100, 0));
    assert_eq!(s.position(0), Some(100));
    s
}

// ------------------------------------------------------------------------------------ 1. names

#[test]
fn artifact_names_of_every_kind_round_trip_through_parse_and_format() {
    for (text, kind) in [
        ("sales_2026_11_22_03_05_00_tlog_0", ArtifactKind::Log),
        ("sales_2026_11_22_00_00_00_full_12", ArtifactKind::Full),
        (
            "sales_2026_11_22_23_59_59_incr_4294967295",
            ArtifactKind::Incremental,
        ),
    ] {
        let n = ArtifactName::parse(text).unwrap();
        assert_eq!(n.kind, kind);
        assert_eq!(n.to_string(), text);
    }
}

#[test]
fn artifact_name_with_a_retry_count_beyond_u32_is_a_retry_error() {
    let e = ArtifactName::parse("sales_2026_11_22_03_05_00_tlog_4294967296").unwrap_err();
    assert_eq!(e.part, NamePart::Retry);
    let e = ArtifactName::parse("sales_2026_11_22_03_05_00_tlog_+1").unwrap_err();
    assert_eq!(e.part, NamePart::Retry);
}

#[test]
fn artifact_name_accepts_february_29_only_in_a_leap_year() {
    assert!(ArtifactName::parse("sales_2028_02_29_03_05_00_tlog_0").is_ok());
    assert!(ArtifactName::parse("sales_2000_02_29_03_05_00_tlog_0").is_ok());
    let e = ArtifactName::parse("sales_2100_02_29_03_05_00_tlog_0").unwrap_err();
    assert_eq!(e.part, NamePart::Day);
}

#[test]
fn artifact_name_fields_must_have_their_exact_width() {
    for (name, part) in [
        ("sales_2026_1_22_03_05_00_tlog_0", NamePart::Month),
        ("sales_2026_11_2_03_05_00_tlog_0", NamePart::Day),
        ("sales_2026_11_22_3_05_00_tlog_0", NamePart::Hour),
        ("sales_2026_11_22_03_5_00_tlog_0", NamePart::Minute),
        ("sales_2026_11_22_03_05_000_tlog_0", NamePart::Second),
        ("sales_02026_11_22_03_05_00_tlog_0", NamePart::Year),
        ("sales_2026_11_22_03_05_00_TLOG_0", NamePart::Kind),
        ("sales_2026_11_22_03_05_00_tlog_", NamePart::Retry),
    ] {
        let e = ArtifactName::parse(name).unwrap_err();
        assert_eq!(e.part, part, "{name}");
        let text = e.to_string();
        assert!(text.contains(name), "the error names the file: {text}");
        assert!(
            text.contains("<db>_<YYYY>_<MM>_<DD>"),
            "and the grammar: {text}"
        );
    }
}

#[test]
fn relabel_after_a_failed_restore_renames_with_the_new_retry_count() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, transient());
    let outs = s.receive(5 * MINUTE, bad);
    let r = relabels(&outs);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].key, r[0].retry), (bad.key, 1));
    let name = ArtifactName {
        db: "sales".into(),
        created: UtcDateTime::from_millis(r[0].created_utc),
        kind: r[0].key.kind,
        retry: r[0].retry,
    };
    assert_eq!(name.to_string(), "sales_2026_11_22_03_05_00_tlog_1");
    // The name is a label: the retry renames the file, the identity stays.
    assert_eq!(ArtifactName::parse(&name.to_string()).unwrap(), name);
}

// ------------------------------------------------------------------------------------ 2. primary

#[test]
fn primary_ships_a_discovered_artifact_to_the_recovery_site() {
    let mut p = Site::primary(config(1));
    let m = log(0, 0, 10, 0);
    let outs = p.at(SECOND, Input::ArtifactDiscovered(m));
    let sh = ships(&outs);
    assert_eq!(sh.len(), 1);
    assert_eq!(sh[0].1, m);
    assert_eq!(p.e.unacknowledged().copied().collect::<Vec<_>>(), vec![m]);
}

#[test]
fn primary_discards_and_forgets_an_artifact_once_acknowledged() {
    let mut p = Site::primary(config(1));
    let m = log(0, 0, 10, 0);
    p.at(SECOND, Input::ArtifactDiscovered(m));
    let outs = p.feed(Input::Message {
        from: Peer::Site(SECONDARY),
        msg: Message::Ack { key: m.key },
    });
    assert!(outs.contains(&Output::Command(Command::Discard { key: m.key })));
    assert_eq!(p.e.unacknowledged().count(), 0);
    assert!(p.e.state().outbox.is_empty());
    // Forgotten for good: no retry ever ships it again.
    let later = p.run_until(30 * MINUTE);
    assert!(ships(&later).is_empty());
}

#[test]
fn primary_retries_a_failed_ship_with_exponential_backoff() {
    let cfg = config(1);
    let (base, max) = (cfg.shipping.retry_base_ms, cfg.shipping.retry_max_ms);
    let mut p = Site::primary(cfg);
    let m = log(0, 0, 10, 0);
    let mut outs = p.at(SECOND, Input::ArtifactDiscovered(m));
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    for attempt in 0..9u32 {
        let (op, _) = ships(&outs)[0];
        let failed_at = p.now;
        p.feed(Input::ShipFailed {
            op,
            key: m.key,
            to: SECONDARY,
            reason: "connection reset".into(),
        });
        let delay = (base << attempt).min(max);
        expected.push(delay);
        assert!(ships(&p.run_until(failed_at + delay - 1)).is_empty());
        outs = p.run_until(failed_at + delay);
        let again = ships(&outs);
        assert_eq!(
            again.len(),
            1,
            "attempt {attempt}: shipped again after {delay} ms"
        );
        assert_ne!(again[0].0, op, "a retry is a new ship operation");
        seen.push(p.now - failed_at);
    }
    assert_eq!(seen, expected);
    assert_eq!(
        expected,
        vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    );
}

#[test]
fn primary_ignores_the_failure_of_a_superseded_ship() {
    let mut p = Site::primary(config(1));
    let m = log(0, 0, 10, 0);
    let (op1, _) = ships(&p.at(SECOND, Input::ArtifactDiscovered(m)))[0];
    p.feed(Input::ShipFailed {
        op: op1,
        key: m.key,
        to: SECONDARY,
        reason: "reset".into(),
    });
    let (op2, _) = ships(&p.run_until(10 * SECOND))[0];
    // A late duplicate failure report of the first attempt changes nothing.
    p.feed(Input::ShipFailed {
        op: op1,
        key: m.key,
        to: SECONDARY,
        reason: "reset".into(),
    });
    assert!(ships(&p.run_until(20 * SECOND)).is_empty());
    let e = &p.e.state().outbox[&m.key];
    assert_eq!(e.attempts, 1);
    assert!(matches!(e.state, lifeboat_core::engine::ShipState::InFlight { op, .. } if op == op2));
}

#[test]
fn primary_retries_a_ship_whose_ack_times_out() {
    let cfg = config(1);
    let timeout = cfg.shipping.ack_timeout_ms;
    let mut p = Site::primary(cfg.clone());
    let m = log(0, 0, 10, 0);
    let (op, _) = ships(&p.at(SECOND, Input::ArtifactDiscovered(m)))[0];
    assert!(ships(&p.run_until(SECOND + timeout - 1)).is_empty());
    // The sweep runs every half timeout; the retry waits the first backoff step.
    let bound = SECOND + timeout + timeout / 2 + cfg.shipping.retry_base_ms;
    let outs = p.run_until(bound);
    let again = ships(&outs);
    assert_eq!(again.len(), 1, "re-shipped within {bound} ms");
    assert_ne!(again[0].0, op);
    assert_eq!(again[0].1, m);
    assert_eq!(p.e.state().outbox[&m.key].attempts, 1);
}

#[test]
fn primary_reissues_outstanding_ships_after_a_restart() {
    let mut p = Site::primary(config(1));
    let arts = [log(0, 0, 10, 0), log(0, 10, 20, 5), log(0, 20, 30, 10)];
    for m in arts {
        p.at(SECOND, Input::ArtifactDiscovered(m));
    }
    p.feed(Input::Message {
        from: Peer::Site(SECONDARY),
        msg: Message::Ack { key: arts[1].key },
    });
    // The process restarts and the engine was rebuilt from its journal.
    let state = p.e.state().clone();
    p.e = SiteEngine::from_state(p.e.config().clone(), PRIMARY, state);
    let outs = p.at(5 * SECOND, Input::Restarted);
    let again: Vec<ArtifactMeta> = ships(&outs).into_iter().map(|(_, m)| m).collect();
    assert_eq!(again, vec![arts[0], arts[2]]);
}

#[test]
fn primary_never_forgets_an_artifact_until_the_recovery_site_acknowledges_it() {
    let mut p = Site::primary(config(1));
    let m = log(0, 0, 10, 0);
    p.at(SECOND, Input::ArtifactDiscovered(m));
    // Hours of failed and unanswered ships, a resend request, an ack from the wrong peer.
    let mut shipped = 0;
    for _ in 0..40 {
        let t = p.now + 5 * MINUTE;
        let outs = p.run_until(t);
        for (op, _) in ships(&outs) {
            shipped += 1;
            p.feed(Input::ShipFailed {
                op,
                key: m.key,
                to: SECONDARY,
                reason: "no route to host".into(),
            });
        }
    }
    assert!(shipped >= 30, "kept retrying: {shipped} ships");
    p.feed(Input::Message {
        from: Peer::Arbiter,
        msg: Message::Ack { key: m.key },
    });
    assert_eq!(p.e.unacknowledged().count(), 1);
    let outs = p.feed(Input::Message {
        from: Peer::Site(SECONDARY),
        msg: Message::Ack { key: m.key },
    });
    assert_eq!(p.e.unacknowledged().count(), 0);
    assert!(outs.contains(&Output::Command(Command::Discard { key: m.key })));
}

#[test]
fn primary_keeps_at_most_max_in_flight_ships_outstanding() {
    let mut cfg = config(1);
    cfg.shipping.max_in_flight = 4;
    let mut p = Site::primary(cfg);
    let arts: Vec<ArtifactMeta> = (0..10).map(|i| log(0, i * 10, i * 10 + 10, 0)).collect();
    let mut shipped = Vec::new();
    for m in &arts {
        shipped.extend(ships(&p.at(SECOND, Input::ArtifactDiscovered(*m))));
    }
    assert_eq!(shipped.len(), 4);
    assert_eq!(p.e.state().ship_in_flight, 4);
    // Each acknowledgement frees one slot for the next artifact in discovery order.
    let outs = p.feed(Input::Message {
        from: Peer::Site(SECONDARY),
        msg: Message::Ack {
            key: shipped[2].1.key,
        },
    });
    let next = ships(&outs);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1, arts[4]);
    // A failed ship frees its slot too; its retry waits for a slot like everyone else.
    let outs = p.feed(Input::ShipFailed {
        op: shipped[0].0,
        key: shipped[0].1.key,
        to: SECONDARY,
        reason: "reset".into(),
    });
    assert_eq!(
        ships(&outs).iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![arts[5]]
    );
    assert_eq!(p.e.state().ship_in_flight, 4);
    let outs = p.run_until(p.now + 10 * SECOND);
    assert!(ships(&outs).is_empty(), "no slot free for the retry");
    assert_eq!(p.e.unacknowledged().count(), 9);
}

#[test]
fn primary_ships_again_at_once_when_the_recovery_site_asks_for_a_resend() {
    let mut p = Site::primary(config(1));
    let m = log(0, 0, 10, 0);
    let (op, _) = ships(&p.at(SECOND, Input::ArtifactDiscovered(m)))[0];
    let outs = p.feed(Input::Message {
        from: Peer::Site(SECONDARY),
        msg: Message::Resend { key: m.key },
    });
    let again = ships(&outs);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].0, op);
    assert_eq!(again[0].1, m);
}

// ------------------------------------------------------------------------------------ 3. secondary

#[test]
fn secondary_quarantines_a_copy_that_fails_verification_and_asks_for_it_again() {
    let mut s = seeded_secondary(config(1));
    let m = log(0, 100, 200, 5);
    let outs = s.receive_corrupted(5 * MINUTE, m);
    assert!(restores(&outs).is_empty(), "never restored");
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Command(Command::Quarantine { artifact, .. }) if artifact.key == m.key
    )));
    assert_eq!(messages(&outs), vec![Message::Resend { key: m.key }]);
    let a = alerts_in(&outs, AlertKind::ChecksumMismatch);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].change, AlertChange::Raised);
    assert_eq!(a[0].severity, Severity::Warning);
    assert_eq!(
        a[0].text,
        format!(
            "For database [sales] the copy of [sales_2026_11_22_03_05_00_tlog_0] failed \
             verification (manifest checksum {}, computed {}); it was quarantined and requested \
             again from the primary ([1] re-copies so far).",
            m.checksum,
            Checksum(m.checksum.0 ^ 0xdead_beef)
        )
    );
    assert_eq!(s.db(0).recopies, 1);
    assert_eq!(s.position(0), Some(100));
    assert!(s.db(0).pending.is_empty());

    // A second bad copy counts a second re-copy and updates the same alert.
    let outs = s.receive_corrupted(5 * MINUTE + 10 * SECOND, m);
    assert_eq!(s.db(0).recopies, 2);
    let a = alerts_in(&outs, AlertKind::ChecksumMismatch);
    assert_eq!((a[0].change, a[0].count), (AlertChange::Updated, 2));

    // The good copy is acknowledged, clears the alert and is restored.
    let outs = s.receive(5 * MINUTE + 20 * SECOND, m);
    assert_eq!(messages(&outs), vec![Message::Ack { key: m.key }]);
    assert_eq!(
        alerts_in(&outs, AlertKind::ChecksumMismatch)[0].change,
        AlertChange::Cleared
    );
    assert_eq!(restores(&outs).len(), 1);
    assert_eq!(s.position(0), Some(200));
}

#[test]
fn secondary_acknowledges_a_corrupted_duplicate_of_an_artifact_it_already_holds_verified() {
    let mut s = seeded_secondary(config(1));
    let m = log(0, 100, 200, 5);
    s.receive(5 * MINUTE, m);
    assert_eq!(s.position(0), Some(200));
    // The primary's ack timed out and it shipped again; this copy broke on the way.
    let outs = s.receive_corrupted(6 * MINUTE, m);
    assert!(restores(&outs).is_empty());
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Command(Command::Quarantine { artifact, .. }) if artifact.key == m.key
    )));
    // The verified copy is here already: acknowledge it, nothing to re-copy, nothing to alert.
    assert_eq!(messages(&outs), vec![Message::Ack { key: m.key }]);
    assert!(alerts_in(&outs, AlertKind::ChecksumMismatch).is_empty());
    assert_eq!(s.active(AlertKind::ChecksumMismatch), 0);
    assert_eq!(s.db(0).recopies, 0);
}

#[test]
fn secondary_restores_shuffled_arrivals_in_lsn_order() {
    let mut s = Site::secondary(config(1)).restoring_ok();
    let logs: Vec<ArtifactMeta> = (0..8)
        .map(|i| log(0, 100 + i * 10, 110 + i * 10, 5))
        .collect();
    for i in [5, 2, 7, 0, 3, 6, 1, 4] {
        s.receive(SECOND, logs[i]);
    }
    assert_eq!(s.position(0), None, "nothing restores before a full backup");
    s.receive(2 * SECOND, full(0, 100, 0));
    let order: Vec<(ArtifactKind, u64)> =
        restores(&s.log.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>())
            .into_iter()
            .map(|(_, m)| (m.key.kind, m.key.lsn_start.0))
            .collect();
    let mut expected = vec![(ArtifactKind::Full, 100)];
    expected.extend((0..8).map(|i| (ArtifactKind::Log, 100 + i * 10)));
    assert_eq!(order, expected);
    assert_eq!(s.position(0), Some(180));
}

#[test]
fn secondary_restores_one_artifact_at_a_time_per_database() {
    let mut s = Site::secondary(config(1));
    let mut outs = s.receive(SECOND, full(0, 100, 0));
    for i in 0..3 {
        outs.extend(s.receive(SECOND, log(0, 100 + i * 10, 110 + i * 10, 5)));
    }
    let r = restores(&outs);
    assert_eq!(r.len(), 1, "one restore at a time");
    let mut done = 0;
    let mut next = r[0];
    loop {
        let outs = s.complete(next.0, Ok(()));
        done += 1;
        let r = restores(&outs);
        if r.is_empty() {
            break;
        }
        assert_eq!(r.len(), 1);
        assert_eq!(s.db(0).in_flight.map(|(op, _)| op), Some(r[0].0));
        next = r[0];
    }
    assert_eq!(done, 4);
    assert_eq!(s.position(0), Some(130));
}

#[test]
fn secondary_restores_at_most_parallelism_databases_at_once() {
    let mut cfg = config(6);
    cfg.restore.parallelism = 2;
    let mut s = Site::secondary(cfg);
    let mut outstanding: VecDeque<(OpId, ArtifactMeta)> = VecDeque::new();
    for db in 0..6 {
        outstanding.extend(restores(&s.receive(SECOND, full(db, 100, 0))));
        outstanding.extend(restores(&s.receive(SECOND, log(db, 100, 110, 5))));
    }
    assert_eq!(outstanding.len(), 2);
    let mut completed = 0;
    while let Some((op, _)) = outstanding.pop_front() {
        outstanding.extend(restores(&s.complete(op, Ok(()))));
        completed += 1;
        assert!(
            outstanding.len() <= 2,
            "at most 2 databases restore at once"
        );
        let per_db: BTreeSet<DbId> = outstanding.iter().map(|(_, m)| m.key.db).collect();
        assert_eq!(per_db.len(), outstanding.len(), "one restore per database");
    }
    assert_eq!(completed, 12);
    for db in 0..6 {
        assert_eq!(s.position(db), Some(110));
    }
}

#[test]
fn secondary_shares_restore_slots_between_databases_in_turn() {
    let mut cfg = config(3);
    cfg.restore.parallelism = 1;
    let mut s = Site::secondary(cfg);
    // Each database has a backlog: a full and five logs.
    let mut outstanding = VecDeque::new();
    for db in 0..3 {
        outstanding.extend(restores(&s.receive(SECOND, full(db, 0, 0))));
        for i in 0..5 {
            outstanding.extend(restores(
                &s.receive(SECOND, log(db, i * 10, i * 10 + 10, 1)),
            ));
        }
    }
    let mut order = Vec::new();
    while let Some((op, m)) = outstanding.pop_front() {
        order.push(m.key.db.0);
        outstanding.extend(restores(&s.complete(op, Ok(()))));
    }
    // No database waits for another's whole backlog.
    assert_eq!(order, [0, 1, 2].repeat(6));
}

#[test]
fn secondary_advances_the_restore_position_only_on_success() {
    let mut s = Site::secondary(config(1));
    let (op, _) = restores(&s.receive(SECOND, full(0, 100, 0)))[0];
    assert_eq!(s.position(0), None);
    s.complete(op, Ok(()));
    assert_eq!(s.position(0), Some(100));
    let (op, _) = restores(&s.receive(2 * SECOND, log(0, 100, 110, 5)))[0];
    assert_eq!(s.position(0), Some(100), "not while the restore runs");
    s.complete(op, Err(transient()));
    assert_eq!(s.position(0), Some(100), "not on failure");
    let (op, m) = restores(&s.run_until(2 * SECOND + MINUTE))[0];
    assert_eq!(m.key.lsn_end, Lsn(110));
    s.complete(op, Ok(()));
    assert_eq!(s.position(0), Some(110));
}

#[test]
fn secondary_counts_a_failed_restore_and_retries_it_under_its_new_retry_count() {
    let cfg = config(1);
    let delay = cfg.restore.retry_delay_ms;
    let mut s = seeded_secondary(cfg);
    s.outcome = Box::new(|_| None);
    let m = log(0, 100, 200, 5);
    let (op, _) = restores(&s.receive(5 * MINUTE, m))[0];
    let outs = s.complete(op, Err(transient()));
    assert_eq!(
        relabels(&outs).iter().map(|r| r.retry).collect::<Vec<_>>(),
        vec![1]
    );
    let p = &s.db(0).pending[0];
    assert_eq!((p.attempts, p.meta.retry), (1, 1));
    assert_eq!(p.last_error, Some(transient()));
    assert!(restores(&s.run_until(5 * MINUTE + delay - 1)).is_empty());
    let r = restores(&s.run_until(5 * MINUTE + delay));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].1.key, r[0].1.retry), (m.key, 1));
    let outs = s.complete(r[0].0, Err(transient()));
    assert_eq!(relabels(&outs)[0].retry, 2);
    assert_eq!(s.db(0).pending[0].attempts, 2);
}

#[test]
fn secondary_skips_failed_log_when_next_log_covers_it() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(7 * MINUTE);
    assert_eq!(s.db(0).pending[0].attempts, 3);
    assert_eq!(s.active(AlertKind::RestoreError), 1);
    // The next log covers the failed range: restore it and ignore the failure.
    let cover = log(0, 100, 300, 10);
    s.run_until(10 * MINUTE);
    let outs = s.receive(10 * MINUTE + 30 * SECOND, cover);
    assert_eq!(
        restores(&outs).iter().map(|r| r.1.key).collect::<Vec<_>>(),
        vec![cover.key]
    );
    assert_eq!(s.position(0), Some(300));
    let cleared = alerts_in(&outs, AlertKind::RestoreError);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].change, AlertChange::Cleared);
    assert_eq!(s.active(AlertKind::RestoreError), 0);
    assert!(
        s.db(0).pending.is_empty(),
        "the failed log is dropped, covered"
    );
    // Never tried again.
    let later = s.run_until(60 * MINUTE);
    assert!(restores(&later).is_empty());
}

#[test]
fn secondary_clears_a_restore_error_only_when_the_failed_range_is_covered() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(7 * MINUTE);
    assert_eq!(s.active(AlertKind::RestoreError), 1);
    // An overlapping log restores [100, 150): the failed log still applies at 150.
    let part = log(0, 100, 150, 8);
    s.run_until(8 * MINUTE);
    let outs = s.receive(8 * MINUTE + 30 * SECOND, part);
    assert_eq!(restores(&outs)[0].1.key, part.key);
    assert_eq!(s.position(0), Some(150));
    assert_eq!(
        s.active(AlertKind::RestoreError),
        1,
        "[100, 200) is not covered yet"
    );
}

#[test]
fn secondary_raises_missing_log_for_a_gap_then_reseeds_from_a_new_full_backup() {
    let cfg = config(1);
    let reseed_after = cfg.restore.reseed_after_minutes * MINUTE;
    let mut s = seeded_secondary(cfg);
    s.receive(5 * MINUTE, log(0, 100, 110, 5));
    // [110, 120) never arrives.
    let after = log(0, 120, 130, 15);
    s.receive(15 * MINUTE, after);
    s.run_until(17 * MINUTE - 1);
    assert!(
        s.alerts(AlertKind::MissingLog).is_empty(),
        "not before 3 attempts"
    );
    s.run_until(17 * MINUTE);
    let a = s.alerts(AlertKind::MissingLog);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].0, a[0].1.change), (17 * MINUTE, AlertChange::Raised));
    assert_eq!(
        a[0].1.text,
        "For database [sales] there is a missing transaction log between \
         [2026-11-22T03:05:00Z] and the transaction log [sales_2026_11_22_03_15_00_tlog_3]. It \
         has been [12] minutes since the last successful restore."
    );
    // Every further check re-raises it as an update, now with backoff (+2, +4, +8 minutes);
    // nothing is restored out of chain.
    s.run_until(20 * MINUTE);
    let a = s.alerts(AlertKind::MissingLog);
    assert_eq!(a.last().unwrap().1.change, AlertChange::Updated);
    assert_eq!(a.last().unwrap().1.count, 2);
    s.run_until(25 * MINUTE);
    assert_eq!(s.alerts(AlertKind::MissingLog).last().unwrap().1.count, 3);
    assert!(s
        .sent()
        .iter()
        .all(|(_, m)| !matches!(m, Message::RequestFull { .. })));

    // The hole stays open: reseed. Ask the primary for a new full backup.
    s.run_until(15 * MINUTE + reseed_after);
    let req: Vec<(Millis, Message)> = s
        .sent()
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::RequestFull { .. }))
        .collect();
    assert_eq!(
        req,
        vec![(
            15 * MINUTE + reseed_after,
            Message::RequestFull { db: Some(DbId(0)) }
        )]
    );
    let r = s.alerts(AlertKind::Reseed);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0].1.text,
        "For database [sales] the chain cannot be continued (a hole in the chain that no \
         artifact covers); a new full backup was requested from the primary and the database \
         will be dropped and recreated from it."
    );
    assert_eq!(
        s.active(AlertKind::MissingLog),
        1,
        "still missing until the reseed is done"
    );

    // The new full arrives: drop and recreate the database from it.
    let f = full(0, 400, 50);
    let outs = s.receive(50 * MINUTE, f);
    let rs = reseeds(&outs);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].1.key, f.key);
    assert_eq!(s.position(0), Some(400));
    assert!(outs.contains(&Output::Report(Report::Reseeded {
        db: DbId(0),
        at: Lsn(400)
    })));
    assert_eq!(s.active(AlertKind::Reseed), 0);
    assert_eq!(s.active(AlertKind::MissingLog), 0);
    assert!(
        s.db(0).pending.is_empty(),
        "the log after the hole is covered now"
    );
    // And the chain continues from the new full.
    s.receive(55 * MINUTE, log(0, 400, 410, 55));
    assert_eq!(s.position(0), Some(410));
    assert_eq!(s.db(0).reseed_since, None);
}

/// Swarm seed 209123: a switchover was asked while a database of the recovery site waited
/// behind a missing log; the target waited for a final position it could never reach, writes
/// stayed stopped, and when the primary site was lost meanwhile nobody wrote for six minutes.
/// The target refuses at once and says which database and why.
#[test]
fn a_switchover_to_a_site_with_a_database_behind_a_missing_log_is_refused_at_once() {
    let mut s = seeded_secondary(config(1));
    s.receive(5 * MINUTE, log(0, 100, 110, 5));
    s.receive(15 * MINUTE, log(0, 120, 130, 15));
    s.run_until(18 * MINUTE);
    assert_eq!(s.active(AlertKind::MissingLog), 1);
    let epoch = s.e.state().epoch;
    let sent_before = s.sent().len();
    s.feed(Input::Message {
        from: Peer::Site(PRIMARY),
        msg: Message::SwitchoverFinal {
            epoch,
            positions: vec![(DbId(0), Lsn(140))],
        },
    });
    let answers: Vec<String> = s.sent()[sent_before..]
        .iter()
        .filter_map(|(_, m)| match m {
            Message::SwitchoverAborted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1, "{:?}", s.sent());
    assert!(
        answers[0].contains("sales") && answers[0].contains("missing"),
        "{}",
        answers[0]
    );
    assert!(s.e.state().procedure.is_none());
}

#[test]
fn a_full_backup_arriving_before_the_log_that_reaches_it_is_no_missing_log() {
    let mut s = seeded_secondary(config(1));
    s.receive(5 * MINUTE, log(0, 100, 200, 5));
    // The weekly full is taken at 250 and arrives first; the log up to it follows.
    s.receive(6 * MINUTE, full(0, 250, 6));
    s.run_until(10 * MINUTE - 1);
    let outs = s.receive(10 * MINUTE, log(0, 200, 300, 10));
    assert!(s.alerts(AlertKind::MissingLog).is_empty());
    assert!(reseeds(&s.log.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>()).is_empty());
    assert_eq!(restores(&outs).len(), 1);
    assert_eq!(s.position(0), Some(300));
    assert!(s.db(0).pending.is_empty(), "the full is covered now");
    assert_eq!(
        s.db(0).retained_full.as_deref().map(|f| f.key.lsn_end),
        Some(Lsn(250))
    );
}

#[test]
fn a_hole_before_a_newer_full_is_reported_with_the_first_log_after_it() {
    let mut s = seeded_secondary(config(1));
    s.receive(5 * MINUTE, full(0, 250, 5));
    s.receive(5 * MINUTE, log(0, 250, 300, 10));
    // [100, 250) never arrives: the log after the hole is named, not the full.
    s.run_until(7 * MINUTE);
    let a = s.alerts(AlertKind::MissingLog);
    assert_eq!(a.len(), 1);
    assert!(
        a[0].1.text.contains("[sales_2026_11_22_03_10_00_tlog_3]"),
        "{}",
        a[0].1.text
    );
    // The reseed then bridges the hole with the full already here.
    s.run_until(35 * MINUTE);
    assert_eq!(s.position(0), Some(300));
    assert_eq!(s.active(AlertKind::MissingLog), 0);
}

#[test]
fn secondary_restores_a_late_log_that_fills_the_gap_and_clears_missing_log() {
    let mut s = seeded_secondary(config(1));
    s.receive(5 * MINUTE, log(0, 100, 110, 5));
    s.receive(15 * MINUTE, log(0, 120, 130, 15));
    s.run_until(20 * MINUTE);
    assert_eq!(s.active(AlertKind::MissingLog), 1);
    s.run_until(21 * MINUTE);
    let outs = s.receive(21 * MINUTE + 30 * SECOND, log(0, 110, 120, 10));
    assert_eq!(restores(&outs).len(), 2);
    assert_eq!(s.position(0), Some(130));
    let a = alerts_in(&outs, AlertKind::MissingLog);
    assert_eq!(
        a.iter().map(|e| e.change).collect::<Vec<_>>(),
        vec![AlertChange::Cleared]
    );
    assert_eq!(s.db(0).gap, None);
    s.run_until(90 * MINUTE);
    assert!(s
        .sent()
        .iter()
        .all(|(_, m)| !matches!(m, Message::RequestFull { .. })));
}

#[test]
fn secondary_reseeds_after_a_permanent_restore_failure_past_its_limits() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, permanent());
    s.receive(5 * MINUTE, bad);
    s.run_until(7 * MINUTE - 1);
    assert!(
        s.sent().is_empty()
            || s.sent()
                .iter()
                .all(|(_, m)| matches!(m, Message::Ack { .. }))
    );
    // The third permanent failure is past the limit: reseed.
    s.run_until(7 * MINUTE);
    assert_eq!(s.db(0).pending[0].attempts, 3);
    assert!(s
        .sent()
        .contains(&(7 * MINUTE, Message::RequestFull { db: Some(DbId(0)) })));
    assert_eq!(s.active(AlertKind::Reseed), 1);
    // No more attempts at the dead log.
    let later = s.run_until(30 * MINUTE);
    assert!(restores(&later).is_empty());
    let outs = s.receive(31 * MINUTE, full(0, 250, 30));
    assert_eq!(reseeds(&outs).len(), 1);
    assert_eq!(s.position(0), Some(250));
    assert_eq!(s.active(AlertKind::Reseed), 0);
    assert_eq!(
        s.active(AlertKind::RestoreError),
        0,
        "the dead log is covered now"
    );
    s.receive(35 * MINUTE, log(0, 250, 260, 35));
    assert_eq!(s.position(0), Some(260));
}

#[test]
fn secondary_retries_a_transient_failure_until_it_has_failed_for_the_reseed_limit() {
    let cfg = config(1);
    let limit = cfg.restore.reseed_after_minutes * MINUTE;
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(cfg).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(5 * MINUTE + limit - 1);
    // Retried every minute, well past `max_attempts`, and every retry re-raised the alert.
    assert_eq!(s.db(0).pending[0].attempts, 30);
    let updates = s.alerts(AlertKind::RestoreError);
    assert_eq!(updates.len(), 28);
    assert!(s
        .sent()
        .iter()
        .all(|(_, m)| !matches!(m, Message::RequestFull { .. })));
    s.run_until(5 * MINUTE + limit);
    assert!(s.sent().contains(&(
        5 * MINUTE + limit,
        Message::RequestFull { db: Some(DbId(0)) }
    )));
    assert!(
        restores(&s.run_until(60 * MINUTE)).is_empty(),
        "retries stop"
    );
}

#[test]
fn secondary_cancels_its_own_reseed_when_a_covering_artifact_continues_the_chain() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, permanent());
    s.receive(5 * MINUTE, bad);
    s.run_until(8 * MINUTE);
    assert_eq!(s.active(AlertKind::Reseed), 1);
    // Before the new full arrives, the next log covers the dead one: the chain continues.
    let outs = s.receive(10 * MINUTE, log(0, 100, 300, 10));
    assert_eq!(restores(&outs).len(), 1);
    assert_eq!(s.position(0), Some(300));
    assert_eq!(s.db(0).reseed_since, None);
    assert_eq!(s.active(AlertKind::Reseed), 0);
    assert_eq!(s.active(AlertKind::RestoreError), 0);
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Report(Report::Reseeded { .. }))));
    // The full that was asked for is kept, not used to recreate a healthy database.
    let outs = s.receive(12 * MINUTE, full(0, 300, 12));
    assert!(reseeds(&outs).is_empty() && restores(&outs).is_empty());
    s.receive(15 * MINUTE, log(0, 300, 310, 15));
    assert_eq!(s.position(0), Some(310));
}

#[test]
fn an_operator_reseed_is_not_ended_by_the_log_restore_that_was_running() {
    let mut s = Site::secondary(config(1)).restoring_ok();
    s.receive(0, full(0, 100, 0));
    s.outcome = Box::new(|_| None);
    let (op, _) = restores(&s.receive(5 * MINUTE, log(0, 100, 110, 5)))[0];
    s.feed(Input::Operator(OperatorRequest::Reseed { db: DbId(0) }));
    let outs = s.complete(op, Ok(()));
    assert!(!outs
        .iter()
        .any(|o| matches!(o, Output::Report(Report::Reseeded { .. }))));
    assert!(
        s.db(0).reseed_since.is_some(),
        "still waiting for the new full"
    );
    // The chain does not continue under an operator's reseed.
    let outs = s.receive(6 * MINUTE, log(0, 110, 120, 6));
    assert!(restores(&outs).is_empty());
    let outs = s.receive(7 * MINUTE, full(0, 120, 7));
    let (op, f) = reseeds(&outs)[0];
    assert_eq!(f.key.lsn_end, Lsn(120));
    let outs = s.complete(op, Ok(()));
    assert!(outs
        .iter()
        .any(|o| matches!(o, Output::Report(Report::Reseeded { .. }))));
    assert_eq!(s.db(0).reseed_since, None);
}

#[test]
fn secondary_reseeds_again_when_the_new_full_leaves_a_dead_artifact_in_the_way() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, permanent());
    s.receive(5 * MINUTE, bad);
    s.run_until(8 * MINUTE);
    assert_eq!(s.db(0).reseed_since, Some(7 * MINUTE));
    // A full inside the dead log's range: the dead log still applies there and cannot restore.
    s.receive(9 * MINUTE, full(0, 150, 9));
    assert_eq!(s.position(0), Some(150));
    s.receive(10 * MINUTE, log(0, 200, 210, 10));
    let asked = s.asked_for_fulls();
    // Asked at the first reseed (7 min), again when none had come after the op timeout, and
    // for the second reseed once the full at 150 was restored (9 min).
    assert_eq!(asked.first(), Some(&(7 * MINUTE)), "{asked:?}");
    assert!(
        asked.len() >= 2 && *asked.last().unwrap() >= 9 * MINUTE,
        "asked for another full: {asked:?}"
    );
    s.receive(12 * MINUTE, full(0, 210, 12));
    assert_eq!(s.position(0), Some(210));
}

#[test]
fn secondary_starts_a_chain_only_from_a_full_backup() {
    let mut s = Site::secondary(config(1)).restoring_ok();
    let outs = s.receive(SECOND, log(0, 0, 10, 0));
    let outs2 = s.receive(SECOND, incr(0, 0, 10, 0, 0));
    assert!(restores(&outs).is_empty() && restores(&outs2).is_empty());
    assert_eq!(s.position(0), None);
    let outs = s.receive(2 * SECOND, full(0, 0, 0));
    assert_eq!(restores(&outs)[0].1.key.kind, ArtifactKind::Full);
    assert_eq!(s.position(0), Some(10));
}

#[test]
fn secondary_applies_an_incremental_only_on_its_base_full() {
    let mut s = Site::secondary(config(1)).restoring_ok();
    s.receive(0, full(0, 100, 0));
    s.receive(SECOND, log(0, 100, 150, 1));
    let other_base = incr(0, 200, 300, 200, 2);
    assert!(restores(&s.receive(2 * SECOND, other_base)).is_empty());
    let on_base = incr(0, 100, 300, 100, 3);
    let outs = s.receive(3 * SECOND, on_base);
    assert_eq!(restores(&outs)[0].1.key, on_base.key);
    assert_eq!(s.position(0), Some(300));
    assert_eq!(s.db(0).current_full, Some(Lsn(100)));
}

#[test]
fn secondary_skips_artifacts_the_position_already_covers() {
    let mut s = Site::secondary(config(1)).restoring_ok();
    s.receive(0, full(0, 100, 0));
    s.receive(SECOND, log(0, 100, 200, 1));
    for old in [
        log(0, 50, 100, 0),
        log(0, 150, 200, 1),
        full(0, 80, 0),
        incr(0, 100, 200, 100, 1),
    ] {
        let outs = s.receive(2 * SECOND, old);
        assert!(
            restores(&outs).is_empty() && reseeds(&outs).is_empty(),
            "{old:?}"
        );
        assert_eq!(messages(&outs), vec![Message::Ack { key: old.key }]);
    }
    assert!(s.db(0).pending.is_empty());
    assert_eq!(s.position(0), Some(200));
}

#[test]
fn secondary_treats_duplicate_arrivals_as_harmless() {
    let mut s = Site::secondary(config(1));
    let f = full(0, 100, 0);
    let m = log(0, 100, 110, 1);
    let mut all = Vec::new();
    for _ in 0..3 {
        all.extend(s.receive(SECOND, f));
        all.extend(s.receive(SECOND, m));
    }
    let r = restores(&all);
    assert_eq!(r.len(), 1, "one restore of the full while it runs");
    // The full (in flight) and the log, each once.
    assert_eq!(s.db(0).pending.len(), 2);
    let mut outs = s.complete(r[0].0, Ok(()));
    for _ in 0..3 {
        outs.extend(s.receive(2 * SECOND, m));
    }
    let r = restores(&outs);
    assert_eq!(r.len(), 1);
    s.complete(r[0].0, Ok(()));
    let outs = s.receive(3 * SECOND, m);
    assert!(restores(&outs).is_empty());
    assert_eq!(s.position(0), Some(110));
    // Every copy is acknowledged: the primary may forget it whichever ack arrives.
    let acks = s
        .sent()
        .into_iter()
        .filter(|(_, x)| *x == Message::Ack { key: m.key })
        .count();
    assert_eq!(acks, 7);
}

// ------------------------------------------------------------------------------------ 4. alerts

fn restore_error_text(name: &str, minutes: &str) -> String {
    format!(
        "Errors occurred for database [sales] while restoring the transaction log [{name}]. It \
         has been [{minutes}] minutes since the last successful restore. The error provided \
         while restoring is: 3013 RESTORE LOG is terminating abnormally."
    )
}

#[test]
fn restore_error_alert_is_raised_at_the_third_attempt_not_before() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(7 * MINUTE - 1);
    assert!(s.alerts(AlertKind::RestoreError).is_empty());
    s.run_until(7 * MINUTE);
    let a = s.alerts(AlertKind::RestoreError);
    assert_eq!(a.len(), 1);
    let (t, ev) = &a[0];
    assert_eq!(*t, 7 * MINUTE);
    assert_eq!(
        (ev.change, ev.severity, ev.count),
        (AlertChange::Raised, Severity::Failure, 1)
    );
    assert_eq!(ev.id.db, Some(DbId(0)));
    assert_eq!(
        ev.text,
        restore_error_text("sales_2026_11_22_03_05_00_tlog_3", "7")
    );
}

#[test]
fn restore_error_alert_is_raised_after_fifteen_minutes_without_a_third_attempt() {
    let mut cfg = config(1);
    cfg.restore.retry_delay_ms = 10 * MINUTE;
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(cfg).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(20 * MINUTE - 1);
    assert!(s.alerts(AlertKind::RestoreError).is_empty());
    s.run_until(20 * MINUTE);
    let a = s.alerts(AlertKind::RestoreError);
    assert_eq!(a.len(), 1);
    assert_eq!(s.db(0).pending[0].attempts, 2);
    assert_eq!(a[0].0, 20 * MINUTE);
    assert_eq!(
        a[0].1.text,
        restore_error_text("sales_2026_11_22_03_05_00_tlog_2", "20")
    );
}

#[test]
fn restore_error_thresholds_are_configurable() {
    let mut cfg = config(1);
    cfg.alerts.after_attempts = 5;
    cfg.alerts.after_minutes = 60;
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(cfg).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(9 * MINUTE - 1);
    assert!(s.alerts(AlertKind::RestoreError).is_empty());
    s.run_until(9 * MINUTE);
    assert_eq!(s.alerts(AlertKind::RestoreError)[0].0, 9 * MINUTE);
}

#[test]
fn restore_error_alert_is_reraised_as_an_update_on_every_later_retry() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(10 * MINUTE);
    let a = s.alerts(AlertKind::RestoreError);
    let got: Vec<(Millis, AlertChange, u32, String)> = a
        .iter()
        .map(|(t, e)| (*t, e.change, e.count, e.text.clone()))
        .collect();
    let want: Vec<(Millis, AlertChange, u32, String)> = (7..=10)
        .map(|m| {
            (
                m * MINUTE,
                if m == 7 {
                    AlertChange::Raised
                } else {
                    AlertChange::Updated
                },
                (m - 6) as u32,
                restore_error_text(
                    &format!("sales_2026_11_22_03_05_00_tlog_{}", m - 4),
                    &m.to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(a
        .iter()
        .all(|(_, e)| e.id == a[0].1.id && e.first_seen == 7 * MINUTE));
    assert_eq!(s.active(AlertKind::RestoreError), 1);
}

#[test]
fn restore_error_alert_says_never_when_nothing_was_ever_restored() {
    let f = full(0, 100, 0);
    let mut s = Site::secondary(config(1)).failing(f.key, transient());
    s.receive(0, f);
    s.run_until(2 * MINUTE);
    let a = s.alerts(AlertKind::RestoreError);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].1.text,
        restore_error_text("sales_2026_11_22_03_00_00_full_3", "never")
    );
}

#[test]
fn restore_error_alert_escalates_to_critical_thirty_minutes_after_its_first_raise() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(bad.key, transient());
    s.receive(5 * MINUTE, bad);
    s.run_until(60 * MINUTE);
    let a = s.alerts(AlertKind::RestoreError);
    let first = a[0].0;
    assert_eq!(first, 7 * MINUTE);
    for (t, e) in &a {
        let want = if *t >= first + 30 * MINUTE {
            Severity::Critical
        } else {
            Severity::Failure
        };
        assert_eq!(e.severity, want, "at minute {}", t / MINUTE);
    }
    assert!(a
        .iter()
        .any(|(t, e)| *t == 37 * MINUTE && e.severity == Severity::Critical));
}

#[test]
fn restore_error_alert_clears_when_the_artifact_finally_restores() {
    let bad = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1));
    let mut fails = 4;
    s.outcome = Box::new(move |m| {
        Some(if m.key == bad.key && fails > 0 {
            fails -= 1;
            Err(transient())
        } else {
            Ok(())
        })
    });
    s.receive(5 * MINUTE, bad);
    s.run_until(10 * MINUTE);
    let a = s.alerts(AlertKind::RestoreError);
    assert_eq!(
        a.iter()
            .map(|(t, e)| (*t / MINUTE, e.change))
            .collect::<Vec<_>>(),
        vec![
            (7, AlertChange::Raised),
            (8, AlertChange::Updated),
            (9, AlertChange::Cleared)
        ]
    );
    assert_eq!(s.position(0), Some(200));
    assert_eq!(s.e.alerts().len(), 0);
}

#[test]
fn no_new_logs_alert_after_fifteen_minutes_without_a_log() {
    let mut s = seeded_secondary(config(1));
    s.run_until(15 * MINUTE - 1);
    assert!(s.alerts(AlertKind::NoNewLogs).is_empty());
    s.run_until(31 * MINUTE);
    let a = s.alerts(AlertKind::NoNewLogs);
    assert_eq!(
        a.iter()
            .map(|(t, e)| (*t / MINUTE, e.change, e.text.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                15,
                AlertChange::Raised,
                "For database [sales] there have been no new transaction logs in the last [15] \
                 minutes."
                    .to_string()
            ),
            (
                30,
                AlertChange::Updated,
                "For database [sales] there have been no new transaction logs in the last [30] \
                 minutes."
                    .to_string()
            ),
        ]
    );
    let outs = s.receive(32 * MINUTE, log(0, 100, 110, 32));
    assert_eq!(
        alerts_in(&outs, AlertKind::NoNewLogs)[0].change,
        AlertChange::Cleared
    );
}

#[test]
fn no_new_logs_threshold_is_configurable() {
    let mut cfg = config(1);
    cfg.alerts.no_new_logs_minutes = 40;
    let mut s = seeded_secondary(cfg);
    s.run_until(40 * MINUTE - 1);
    assert!(s.alerts(AlertKind::NoNewLogs).is_empty());
    s.run_until(40 * MINUTE);
    assert_eq!(s.alerts(AlertKind::NoNewLogs).len(), 1);
}

fn heartbeat(seq: u64, paused: bool) -> Input {
    Input::Message {
        from: Peer::Site(PRIMARY),
        msg: Message::Heartbeat(Heartbeat {
            epoch: Epoch(1),
            seq,
            backups_paused: paused,
            writable: true,
            positions: vec![(DbId(0), Lsn(500))],
            write_rate_per_sec: 1,
        }),
    }
}

#[test]
fn paused_backups_raise_one_backups_paused_alert_and_no_no_new_logs() {
    let mut s = seeded_secondary(config(1));
    for minute in 1..=60 {
        s.at(minute * MINUTE, heartbeat(minute, true));
    }
    let paused = s.alerts(AlertKind::BackupsPaused);
    assert_eq!(paused.len(), 1);
    assert_eq!(paused[0].1.change, AlertChange::Raised);
    assert_eq!(paused[0].1.severity, Severity::Warning);
    assert_eq!(
        paused[0].1.text,
        "Backups are paused for maintenance at site [primary] (for [0] minutes); no new \
         transaction logs are expected until they resume. This is not a fault."
    );
    assert!(s.alerts(AlertKind::NoNewLogs).is_empty());
    let outs = s.at(61 * MINUTE, heartbeat(61, false));
    assert_eq!(
        alerts_in(&outs, AlertKind::BackupsPaused)[0].change,
        AlertChange::Cleared
    );
}

#[test]
fn no_new_logs_counts_from_when_paused_backups_resume() {
    let mut s = seeded_secondary(config(1));
    s.at(MINUTE, heartbeat(1, true));
    s.at(60 * MINUTE, heartbeat(2, false));
    // Logs are due again from now on, not overdue since before the pause.
    s.run_until(75 * MINUTE - 1);
    assert!(s.alerts(AlertKind::NoNewLogs).is_empty());
    s.run_until(75 * MINUTE);
    assert_eq!(s.alerts(AlertKind::NoNewLogs).len(), 1);
}

#[test]
fn backlog_alert_when_more_artifacts_wait_than_the_count_threshold() {
    let mut s = Site::secondary(config(1)).restoring_ok();
    // No full backup yet: everything received waits.
    for i in 0..12 {
        s.receive(SECOND, log(0, i * 10, i * 10 + 10, 0));
    }
    s.run_until(2 * MINUTE);
    assert!(
        s.alerts(AlertKind::Backlog).is_empty(),
        "12 is not more than 12"
    );
    s.receive(2 * MINUTE + SECOND, log(0, 120, 130, 1));
    s.run_until(3 * MINUTE);
    let a = s.alerts(AlertKind::Backlog);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, 3 * MINUTE);
    assert_eq!(a[0].1.severity, Severity::Warning);
    assert_eq!(
        a[0].1.text,
        "For database [sales] [13] received artifacts are waiting to be restored; the oldest \
         has waited [2] minutes."
    );
    s.receive(3 * MINUTE + SECOND, full(0, 0, 0));
    assert_eq!(s.position(0), Some(130));
    s.run_until(4 * MINUTE);
    assert_eq!(
        s.alerts(AlertKind::Backlog).last().unwrap().1.change,
        AlertChange::Cleared
    );
}

#[test]
fn backlog_alert_when_the_oldest_artifact_waits_past_the_age_threshold() {
    let mut cfg = config(1);
    cfg.alerts.no_new_logs_minutes = 600;
    let mut s = Site::secondary(cfg).restoring_ok();
    s.receive(0, log(0, 0, 10, 0));
    s.run_until(30 * MINUTE - 1);
    assert!(s.alerts(AlertKind::Backlog).is_empty());
    s.run_until(30 * MINUTE);
    let a = s.alerts(AlertKind::Backlog);
    assert_eq!(a.len(), 1);
    assert_eq!(
        a[0].1.text,
        "For database [sales] [1] received artifacts are waiting to be restored; the oldest \
         has waited [30] minutes."
    );
}

// ------------------------------------------------------------------------------------ 5. status

#[test]
fn secondary_status_records_the_last_copy_restore_and_restore_latency() {
    let mut s = Site::secondary(config(1));
    let f = full(0, 100, 0);
    let (op, _) = restores(&s.receive(10 * SECOND, f))[0];
    let d = s.db(0);
    assert_eq!(d.last_copy, Some(Seen::of(&f, 10 * SECOND)));
    assert_eq!(d.last_backup.map(|b| b.lsn_end), Some(f.key.lsn_end));
    assert_eq!(d.last_restore, None);
    s.run_until(40 * SECOND);
    s.complete(op, Ok(()));
    let d = s.db(0);
    assert_eq!(d.last_restore, Some(Seen::of(&f, 40 * SECOND)));
    assert_eq!(d.last_restore_latency, Some(30 * SECOND));

    let m = log(0, 100, 110, 5);
    let (op, _) = restores(&s.receive(5 * MINUTE, m))[0];
    s.run_until(5 * MINUTE + 2 * SECOND);
    s.complete(op, Ok(()));
    let d = s.db(0);
    assert_eq!(d.last_copy, Some(Seen::of(&m, 5 * MINUTE)));
    assert_eq!(d.last_backup.map(|b| b.lsn_end), Some(m.key.lsn_end));
    assert_eq!(d.last_restore, Some(Seen::of(&m, 5 * MINUTE + 2 * SECOND)));
    assert_eq!(d.last_restore_latency, Some(2 * SECOND));
    assert_eq!(d.last_log_at, 5 * MINUTE);
}

#[test]
fn primary_status_records_the_last_backup() {
    let mut p = Site::primary(config(1));
    let m = log(0, 0, 10, 0);
    p.at(7 * SECOND, Input::ArtifactDiscovered(m));
    assert_eq!(p.db(0).last_backup, Some(Seen::of(&m, 7 * SECOND)));
    assert_eq!(p.e.write_position_of(DbId(0)), Some(Lsn(10)));
}

// ------------------------------------------------------------------------------------ 6. scale

#[test]
fn one_engine_pair_ships_and_restores_ten_thousand_databases() {
    const DBS: u32 = 10_000;
    let cfg = config(DBS as usize);
    let parallelism = cfg.restore.parallelism as usize;
    let mut p = Site::primary(cfg.clone());
    let mut s = Site::secondary(cfg);
    let mut to_secondary: VecDeque<Input> = VecDeque::new();
    let mut to_primary: VecDeque<Input> = VecDeque::new();
    let mut outstanding: VecDeque<OpId> = VecDeque::new();
    let mut restored = 0u64;
    let route = |outs: Vec<Output>, to: &mut VecDeque<Input>, from: SiteId| {
        for o in outs {
            match o {
                Output::Command(Command::Ship { artifact, .. }) => to.push_back(received(artifact)),
                Output::Send {
                    to: Peer::Site(_),
                    msg: msg @ (Message::Ack { .. } | Message::Resend { .. }),
                } => to.push_back(Input::Message {
                    from: Peer::Site(from),
                    msg,
                }),
                _ => {}
            }
        }
    };
    let t = SECOND;
    for round in 0..3u64 {
        for db in 0..DBS {
            let m = if round == 0 {
                full(db, 0, 0)
            } else {
                log(db, (round - 1) * 10, round * 10, round as i64)
            };
            let outs = p.at(t, Input::ArtifactDiscovered(m));
            route(outs, &mut to_secondary, PRIMARY);
        }
        loop {
            if let Some(i) = to_secondary.pop_front() {
                let outs = s.at(t, i);
                outstanding.extend(restores(&outs).into_iter().map(|(op, _)| op));
                route(outs, &mut to_primary, SECONDARY);
            } else if let Some(i) = to_primary.pop_front() {
                let outs = p.at(t, i);
                route(outs, &mut to_secondary, PRIMARY);
            } else if let Some(op) = outstanding.pop_front() {
                let outs = s.complete(op, Ok(()));
                restored += 1;
                outstanding.extend(restores(&outs).into_iter().map(|(op, _)| op));
            } else {
                break;
            }
            assert!(outstanding.len() <= parallelism);
        }
    }
    assert_eq!(restored, 3 * u64::from(DBS));
    assert_eq!(p.e.unacknowledged().count(), 0);
    for db in 0..DBS {
        assert_eq!(s.position(db), Some(20), "db{db}");
        assert!(s.db(db).pending.is_empty());
    }
    assert_eq!(s.e.state().restoring, 0);
}

// ------------------------------------------------------------------------------------ 7. property

/// What the primary produced for one database, in order: a full at 0, logs of 10 positions, an
/// occasional incremental on the current full, an occasional new full.
fn produce(db: u32, kinds: &[u8]) -> Vec<ArtifactMeta> {
    let mut out = vec![full(db, 0, 0)];
    let (mut pos, mut base) = (0u64, 0u64);
    for (i, k) in kinds.iter().enumerate() {
        let minute = i as i64 + 1;
        match k {
            0..=6 => {
                out.push(log(db, pos, pos + 10, minute));
                pos += 10;
            }
            7 | 8 if pos > base => out.push(incr(db, base, pos, base, minute)),
            9 => {
                out.push(full(db, pos, minute));
                base = pos;
            }
            _ => {
                out.push(log(db, pos, pos + 10, minute));
                pos += 10;
            }
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Step {
    Deliver {
        db: usize,
        idx: usize,
        corrupt: bool,
    },
    Complete {
        which: usize,
        outcome: u8,
    },
    Wait {
        secs: u64,
    },
    Restart,
    /// A manifest no primary should produce: unknown database, backwards range, no base.
    Junk {
        kind: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..2usize, any::<prop::sample::Index>(), prop::bool::weighted(0.15)).prop_map(
            |(db, idx, corrupt)| Step::Deliver { db, idx: idx.index(1 << 16), corrupt }
        ),
        5 => (0..4usize, 0..10u8).prop_map(|(which, outcome)| Step::Complete { which, outcome }),
        3 => (1..900u64).prop_map(|secs| Step::Wait { secs }),
        1 => Just(Step::Restart),
        1 => (0..3u8).prop_map(|kind| Step::Junk { kind }),
    ]
}

/// The database as the test's executor sees it.
#[derive(Clone, Debug, Default)]
struct ModelDb {
    position: Option<u64>,
    current_full: Option<u64>,
}

struct Run {
    s: Site,
    produced: Vec<Vec<ArtifactMeta>>,
    delivered_in_order: Vec<usize>,
    verified: BTreeSet<(ArtifactKey, Checksum)>,
    model: Vec<ModelDb>,
    /// Outstanding restore operations: op -> (artifact, whether it is a reseed).
    outstanding: BTreeMap<OpId, (ArtifactMeta, bool)>,
    parallelism: usize,
}

impl Run {
    fn check_outputs(&mut self, outs: &[Output]) -> Result<(), TestCaseError> {
        for o in outs {
            match o {
                Output::Command(Command::Restore { op, artifact })
                | Output::Command(Command::Reseed { op, full: artifact }) => {
                    let reseed = matches!(o, Output::Command(Command::Reseed { .. }));
                    if let Some((m, _)) = self.outstanding.get(op) {
                        prop_assert_eq!(m.key, artifact.key, "a re-issued op keeps its artifact");
                        continue;
                    }
                    let key = artifact.key;
                    prop_assert!(
                        self.verified.contains(&(key, artifact.checksum)),
                        "restore of an artifact that never passed verification: {:?}",
                        key
                    );
                    let db = &self.model[key.db.0 as usize];
                    let (s, e) = (key.lsn_start.0, key.lsn_end.0);
                    let fits = match (key.kind, db.position) {
                        (ArtifactKind::Full, None) => !reseed,
                        (ArtifactKind::Full, Some(p)) => reseed && e > p,
                        (_, None) => false,
                        (ArtifactKind::Log, Some(p)) => s <= p && p < e,
                        // On the chain's own full, or on a verified full of the same history
                        // that the position has passed.
                        (ArtifactKind::Incremental, Some(p)) => {
                            let base = artifact.base_full.map(|b| b.0);
                            let passed = base.is_some_and(|b| b <= p)
                                && self.verified.iter().any(|(k, _)| {
                                    k.db == key.db
                                        && k.kind == ArtifactKind::Full
                                        && k.epoch == key.epoch
                                        && Some(k.lsn_end.0) == base
                                });
                            (base == db.current_full || passed) && s <= p && p < e
                        }
                    };
                    prop_assert!(fits, "out of chain: {:?} {:?} at {:?}", o, key, db);
                    prop_assert!(
                        self.outstanding.values().all(|(m, _)| m.key.db != key.db),
                        "two restores at once for {:?}",
                        key.db
                    );
                    self.outstanding.insert(*op, (*artifact, reseed));
                    prop_assert!(self.outstanding.len() <= self.parallelism);
                }
                Output::Send {
                    msg: Message::Ack { key },
                    ..
                } => {
                    // An ack lets the primary forget it: only for what is held verified or no
                    // longer needed (the position is past it).
                    let past = self
                        .model
                        .get(key.db.0 as usize)
                        .and_then(|m| m.position)
                        .is_some_and(|p| key.lsn_end.0 <= p);
                    prop_assert!(
                        past || self.verified.iter().any(|(k, _)| k == key),
                        "acknowledged an artifact never received verified: {:?}",
                        key
                    );
                }
                Output::Send {
                    msg: Message::RequestFull { db: Some(db) },
                    ..
                } => {
                    // The primary takes a full at its current position and ships it.
                    let d = db.0 as usize;
                    let end = self.produced[d]
                        .iter()
                        .map(|m| m.key.lsn_end.0)
                        .max()
                        .unwrap();
                    let f = full(db.0, end, 1_000 + self.produced[d].len() as i64);
                    self.produced[d].push(f);
                    self.delivered_in_order.push(d);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn check_state(&self) -> Result<(), TestCaseError> {
        for (i, m) in self.model.iter().enumerate() {
            let d = self.s.db(i as u32);
            prop_assert_eq!(d.position.map(|l| l.0), m.position, "db{} position", i);
            if let Some(p) = m.position {
                let max = self.produced[i]
                    .iter()
                    .map(|a| a.key.lsn_end.0)
                    .max()
                    .unwrap();
                prop_assert!(
                    p % 10 == 0 && p <= max,
                    "db{i} at {p}: not a prefix of 0..{max}"
                );
            }
        }
        Ok(())
    }
}

fn run_steps(kinds: [Vec<u8>; 2], steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut cfg = config(2);
    cfg.restore.parallelism = 1;
    cfg.lease.heartbeat_every_ms = MINUTE;
    cfg.failover.probe_every_ms = MINUTE;
    let mut run = Run {
        s: Site::secondary(cfg),
        produced: vec![produce(0, &kinds[0]), produce(1, &kinds[1])],
        delivered_in_order: Vec::new(),
        verified: BTreeSet::new(),
        model: vec![ModelDb::default(); 2],
        outstanding: BTreeMap::new(),
        parallelism: 1,
    };
    for st in steps {
        let outs = match st {
            Step::Deliver { db, idx, corrupt } => {
                let m = run.produced[db][idx % run.produced[db].len()];
                if corrupt {
                    run.s.receive_corrupted(run.s.now, m)
                } else {
                    run.verified.insert((m.key, m.checksum));
                    run.s.receive(run.s.now, m)
                }
            }
            Step::Complete { which, outcome } => {
                let Some((&op, &(m, _))) = run
                    .outstanding
                    .iter()
                    .nth(which % run.outstanding.len().max(1))
                else {
                    continue;
                };
                run.outstanding.remove(&op);
                let result = match outcome {
                    0..=6 => Ok(()),
                    7 | 8 => Err(transient()),
                    _ => Err(permanent()),
                };
                if result.is_ok() {
                    let db = &mut run.model[m.key.db.0 as usize];
                    db.position = Some(m.key.lsn_end.0);
                    if m.key.kind == ArtifactKind::Full {
                        db.current_full = Some(m.key.lsn_end.0);
                    }
                }
                run.s.complete(op, result)
            }
            Step::Wait { secs } => {
                let t = run.s.now + secs * SECOND;
                run.s.run_until(t)
            }
            Step::Junk { kind } => {
                let m = match kind {
                    0 => log(7, 0, 10, 0),
                    1 => artifact(0, ArtifactKind::Log, 20, 10, None, 0),
                    _ => artifact(1, ArtifactKind::Incremental, 0, 10, None, 0),
                };
                let outs = run.s.receive(run.s.now, m);
                prop_assert!(messages(&outs).is_empty(), "junk is never acknowledged");
                outs
            }
            Step::Restart => {
                let st = run.s.e.state().clone();
                run.s.e = SiteEngine::from_state(run.s.e.config().clone(), SECONDARY, st);
                run.s.feed(Input::Restarted)
            }
        };
        run.check_outputs(&outs)?;
        // Fulls the primary took on request arrive right away (a new full is always intact).
        while let Some(d) = run.delivered_in_order.pop() {
            let f = *run.produced[d].last().unwrap();
            run.verified.insert((f.key, f.checksum));
            let outs = run.s.receive(run.s.now, f);
            run.check_outputs(&outs)?;
        }
        run.check_state()?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_arrivals_and_restore_outcomes_never_break_the_chain(
        k0 in prop::collection::vec(0..11u8, 1..20),
        k1 in prop::collection::vec(0..11u8, 1..20),
        steps in prop::collection::vec(step(), 1..120),
    ) {
        run_steps([k0, k1], steps)?;
    }
}

// ------------------------------------------------------------------ first copy and later fulls

#[test]
fn a_new_recovery_site_asks_for_a_full_backup_instead_of_waiting_for_the_weekly_one() {
    let cfg = config(2);
    let check = cfg.alerts.check_every_ms;
    let every = cfg.restore.op_timeout_ms;
    let mut s = Site::secondary(cfg).restoring_ok();
    s.run_until(check);
    let asked = |s: &Site| {
        s.sent()
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::RequestFull { .. }))
            .collect::<Vec<_>>()
    };
    // Both databases lack a copy: one request for all of them.
    assert_eq!(asked(&s).len(), 1, "{:?}", s.sent());
    assert!(matches!(asked(&s)[0].1, Message::RequestFull { db: None }));
    // Not answered: asked again, but not at every check.
    s.run_until(every - 1);
    assert_eq!(asked(&s).len(), 1);
    s.run_until(every + check);
    assert_eq!(asked(&s).len(), 2);
    // One database got its full: only the other is asked for.
    s.receive(s.now, full(0, 100, 1));
    assert_eq!(s.position(0), Some(100));
    s.run_until(2 * every + 2 * check);
    let last = asked(&s).last().unwrap().1.clone();
    assert!(
        matches!(last, Message::RequestFull { db: Some(DbId(1)) }),
        "{last:?}"
    );
}

#[test]
fn an_incremental_on_a_newer_full_applies_once_logs_carried_the_copy_past_that_full() {
    let mut s = seeded_secondary(config(1));
    s.receive(MINUTE, log(0, 100, 200, 1));
    assert_eq!(s.position(0), Some(200));
    // The primary takes a new full at 200 (received, not restored: logs carry the copy), then a
    // log is lost and an incremental on the new full bridges the hole.
    s.receive(2 * MINUTE, full(0, 200, 2));
    s.receive(3 * MINUTE, incr(0, 200, 400, 200, 4));
    assert_eq!(
        s.position(0),
        Some(400),
        "no reseed for a hole an incremental covers"
    );
    assert_eq!(s.active(AlertKind::Reseed), 0);
}

// ------------------------------------------------------------------ epochs and restore guards

/// Receive `f` at `at`: it must recreate the database (one reseed) and end any reseed there.
fn recreated_by(s: &mut Site, at: Millis, f: ArtifactMeta) {
    let outs = s.receive(at, f);
    assert_eq!(reseeds(&outs).len(), 1, "{outs:?}");
    assert_eq!(s.position(0), Some(f.key.lsn_end.0));
    assert_eq!(s.db(0).reseed_since, None);
}

/// `artifact` of another epoch.
fn of_epoch(mut m: ArtifactMeta, epoch: u64) -> ArtifactMeta {
    m.key.epoch = Epoch(epoch);
    m
}
#[test]
fn the_primary_refuses_drills_and_reseeds_which_belong_to_the_recovery_site() {
    let mut p = Site::primary(config(1));
    p.run_until(SECOND);
    let mut outs = p.feed(Input::Operator(OperatorRequest::Drill {
        db: Some(DbId(0)),
    }));
    outs.extend(p.feed(Input::Operator(OperatorRequest::Reseed { db: DbId(0) })));
    let said = audits(&outs);
    assert!(said.contains(&"reject drill".to_string()), "{said:?}");
    assert!(said.contains(&"reject reseed".to_string()), "{said:?}");
    assert!(
        !outs.iter().any(|o| matches!(
            o,
            Output::Command(Command::Drill { .. })
                | Output::Alert(_)
                | Output::Send {
                    msg: Message::RequestFull { .. },
                    ..
                }
        )),
        "{outs:?}"
    );
    assert_eq!(p.active(AlertKind::Reseed), 0);
    assert_eq!(p.active(AlertKind::DrillFailed), 0);
}

#[test]
fn a_verified_artifact_of_a_newer_epoch_teaches_the_recovery_site_that_epoch() {
    let mut s = seeded_secondary(config(1));
    assert_eq!(s.e.epoch(), Epoch(1));
    s.receive(MINUTE, of_epoch(log(0, 100, 200, 1), 2));
    assert_eq!(s.e.epoch(), Epoch(2));
    assert_eq!(s.position(0), Some(200));
    // From now on the old epoch's artifacts are stale: kept aside and counted, never restored.
    let outs = s.receive(2 * MINUTE, log(0, 200, 300, 2));
    assert_eq!(s.position(0), Some(200));
    assert_eq!(alerts_in(&outs, AlertKind::StaleEpochArtifact).len(), 1);
    assert_eq!(s.e.state().quarantined, 1);
    assert!(messages(&outs).contains(&Message::Ack {
        key: log(0, 200, 300, 2).key
    }));
}

#[test]
fn an_older_epochs_artifact_already_restored_here_is_acknowledged_again_without_a_stale_alert() {
    let mut s = seeded_secondary(config(1));
    let before = log(0, 100, 200, 1);
    s.receive(MINUTE, before);
    s.receive(2 * MINUTE, of_epoch(log(0, 200, 300, 2), 2));
    assert_eq!((s.e.epoch(), s.position(0)), (Epoch(2), Some(300)));
    // The old primary ships `before` again (its ack was lost before the failover): the copy
    // here is part of what was restored, so it is acknowledged and nothing is set aside.
    let outs = s.receive(3 * MINUTE, before);
    assert!(messages(&outs).contains(&Message::Ack { key: before.key }));
    assert!(alerts_in(&outs, AlertKind::StaleEpochArtifact).is_empty());
    assert!(
        !outs
            .iter()
            .any(|o| matches!(o, Output::Command(Command::Quarantine { .. }))),
        "{outs:?}"
    );
    assert_eq!(s.e.state().quarantined, 0);
}

/// A secondary at 100 whose restore of the epoch-1 log (100, 200) is still running.
fn restoring_a_log() -> (Site, OpId) {
    let mut s = Site::secondary(config(1));
    s.outcome = Box::new(|m| (m.key.kind == ArtifactKind::Full).then_some(Ok(())));
    s.receive(0, full(0, 100, 0));
    let outs = s.receive(MINUTE, log(0, 100, 200, 1));
    let [(op, _)] = restores(&outs)[..] else {
        panic!("one restore: {outs:?}")
    };
    (s, op)
}

/// [`restoring_a_log`], and an epoch-2 artifact arrives: the epoch change sets the log aside
/// while the database applies it.
fn restoring_when_the_epoch_changes() -> (Site, OpId) {
    let (mut s, op) = restoring_a_log();
    let outs = s.receive(2 * MINUTE, of_epoch(log(0, 300, 400, 3), 2));
    assert_eq!(alerts_in(&outs, AlertKind::StaleEpochArtifact).len(), 1);
    assert!(s.db(0).pending.iter().all(|p| p.meta.key.epoch == Epoch(2)));
    (s, op)
}

#[test]
fn a_restore_of_a_set_aside_artifact_that_completes_moves_the_position_and_rebuilds_the_copy() {
    let (mut s, op) = restoring_when_the_epoch_changes();
    let outs = s.complete(op, Ok(()));
    // The database did change: the position says so, and it now holds the older epoch's
    // writes, which may have diverged from the new primary's: recreate it from a full.
    assert_eq!(s.position(0), Some(200));
    assert_eq!(
        s.db(0).current_full,
        Some(Lsn(100)),
        "a log starts no chain"
    );
    assert_eq!(alerts_in(&outs, AlertKind::Reseed).len(), 1, "{outs:?}");
    assert!(messages(&outs).contains(&Message::RequestFull { db: Some(DbId(0)) }));
}

#[test]
fn a_restore_of_a_set_aside_artifact_that_fails_changes_nothing() {
    let (mut s, op) = restoring_when_the_epoch_changes();
    let outs = s.complete(op, Err(transient()));
    assert_eq!(s.position(0), Some(100));
    assert!(alerts_in(&outs, AlertKind::Reseed).is_empty(), "{outs:?}");
    assert_eq!(s.active(AlertKind::Reseed), 0);
}

#[test]
fn during_its_own_reseed_the_recovery_site_tries_only_untried_artifacts_to_continue_the_chain() {
    let dead = log(0, 100, 200, 5);
    let flaky = log(0, 100, 250, 10);
    let mut s = seeded_secondary(config(1));
    s.outcome = Box::new(move |m| {
        Some(if m.key == dead.key {
            Err(permanent())
        } else if m.key == flaky.key {
            Err(transient())
        } else {
            Ok(())
        })
    });
    s.receive(5 * MINUTE, dead);
    s.run_until(8 * MINUTE);
    assert_eq!(s.active(AlertKind::Reseed), 1);
    // An untried log that continues the chain is worth a try before recreating the database.
    let outs = s.receive(10 * MINUTE, flaky);
    assert_eq!(restores(&outs).len(), 1);
    assert_eq!(
        s.db(0)
            .pending
            .iter()
            .find(|p| p.meta.key == flaky.key)
            .unwrap()
            .attempts,
        1
    );
    // Once it failed, the reseed decides: no retries of it while the full is awaited.
    let later = s.run_until(30 * MINUTE);
    assert!(restores(&later).is_empty(), "{:?}", restores(&later));
    assert!(s.db(0).reseed_since.is_some());
    recreated_by(&mut s, 31 * MINUTE, full(0, 260, 30));
}

#[test]
fn a_hole_is_named_after_the_first_artifact_beyond_it_as_earlier_ones_arrive() {
    let mut s = seeded_secondary(config(1));
    let outs = s.receive(MINUTE, log(0, 300, 400, 3));
    assert_eq!(
        relabels(&outs)
            .iter()
            .map(|m| (m.key, m.retry))
            .collect::<Vec<_>>(),
        vec![(log(0, 300, 400, 3).key, 1)]
    );
    // The log after the position's is still missing, but the hole now ends at 200: counted
    // again from its first check, under the new first artifact's name.
    let outs = s.receive(MINUTE + 10 * SECOND, log(0, 200, 300, 2));
    let named: Vec<_> = relabels(&outs).iter().map(|m| (m.key, m.retry)).collect();
    assert_eq!(named, vec![(log(0, 200, 300, 2).key, 1)]);
    assert_eq!(s.db(0).gap.as_ref().unwrap().since, MINUTE + 10 * SECOND);
    // The count lives on the waiting artifact the hole is named after; the one behind it keeps
    // the count of its own first check.
    let retries = |s: &Site| -> Vec<(u64, u32)> {
        s.db(0)
            .pending
            .iter()
            .map(|p| (p.meta.key.lsn_start.0, p.meta.retry))
            .collect()
    };
    assert_eq!(retries(&s), vec![(200, 1), (300, 1)]);
    s.run_until(MINUTE + 10 * SECOND + 60 * SECOND);
    assert_eq!(retries(&s), vec![(200, 2), (300, 1)]);
}

#[test]
fn a_reseed_set_aside_by_an_epoch_change_that_completes_still_moves_the_copy_to_its_full() {
    let mut s = Site::secondary(config(1));
    s.outcome = Box::new(|m| (m.key.lsn_end == Lsn(100)).then_some(Ok(())));
    s.receive(0, full(0, 100, 0));
    s.feed(Input::Operator(OperatorRequest::Reseed { db: DbId(0) }));
    let outs = s.receive(MINUTE, full(0, 300, 1));
    let [(op, f)] = reseeds(&outs)[..] else {
        panic!("one reseed: {outs:?}")
    };
    assert_eq!(f.key, full(0, 300, 1).key);
    s.receive(2 * MINUTE, of_epoch(log(0, 400, 500, 3), 2));
    assert!(s.db(0).pending.iter().all(|p| p.meta.key.epoch == Epoch(2)));
    // The database was recreated from the full: the copy's chain now starts there.
    s.complete(op, Ok(()));
    assert_eq!(s.position(0), Some(300));
    assert_eq!(s.db(0).current_full, Some(Lsn(300)));
}

#[test]
fn a_site_handed_the_epoch_while_a_restore_ran_does_not_reseed_when_that_restore_completes() {
    let (mut s, op) = restoring_a_log();
    // The primary hands this site epoch 2: the running restore's artifact is of the old epoch.
    s.at(
        2 * MINUTE,
        Input::Message {
            from: Peer::Site(PRIMARY),
            msg: Message::EpochNotice {
                epoch: Epoch(2),
                holder: SECONDARY,
            },
        },
    );
    assert_eq!(s.e.epoch(), Epoch(2));
    let role = s.e.role();
    assert_ne!(role, lifeboat_core::engine::Role::Secondary);
    let outs = s.complete(op, Ok(()));
    assert_eq!(s.position(0), Some(200));
    // Only a secondary rebuilds a copy that took an older epoch's writes: the site taking
    // over keeps its copy (its handed-off history contains them).
    assert!(alerts_in(&outs, AlertKind::Reseed).is_empty(), "{outs:?}");
    assert_eq!(s.active(AlertKind::Reseed), 0);
}

// ------------------------------------------------------------------ holes, reseeds and drills

#[test]
fn a_hole_is_reported_after_its_minutes_when_that_comes_before_its_attempts() {
    let mut cfg = config(1);
    cfg.alerts.after_attempts = 10;
    cfg.alerts.after_minutes = 5;
    let mut s = seeded_secondary(cfg);
    s.receive(MINUTE, log(0, 200, 300, 1));
    s.run_until(6 * MINUTE - 1);
    assert!(s.alerts(AlertKind::MissingLog).is_empty());
    s.run_until(6 * MINUTE);
    let a = s.alerts(AlertKind::MissingLog);
    assert_eq!(a.len(), 1);
    assert_eq!((a[0].0, a[0].1.change), (6 * MINUTE, AlertChange::Raised));
}

#[test]
fn a_hole_reseeds_on_time_even_between_backed_off_checks_and_without_a_monitor_pass() {
    let mut cfg = config(1);
    // Checks of the hole at 0, 1, 2, 4, 8, 16, 32 minutes: the reseed at 30 comes between two.
    cfg.alerts.check_every_ms = 24 * 60 * MINUTE;
    let reseed_after = cfg.restore.reseed_after_minutes * MINUTE;
    let mut s = seeded_secondary(cfg);
    s.receive(MINUTE, log(0, 200, 300, 1));
    s.run_until(MINUTE + reseed_after + 10 * MINUTE);
    let asked = s.asked_for_fulls();
    assert_eq!(asked, vec![MINUTE + reseed_after]);
}

#[test]
fn an_operator_reseed_asked_during_the_engines_own_is_not_cancelled_by_the_chain_continuing() {
    let dead = log(0, 100, 200, 5);
    let mut s = seeded_secondary(config(1)).failing(dead.key, permanent());
    s.receive(5 * MINUTE, dead);
    s.run_until(8 * MINUTE);
    assert!(s.db(0).reseed_auto, "the engine's own reseed");
    s.feed(Input::Operator(OperatorRequest::Reseed { db: DbId(0) }));
    assert!(!s.db(0).reseed_auto, "now the operator's");
    // A log that covers the dead one would cancel the engine's reseed, not the operator's.
    let outs = s.receive(10 * MINUTE, log(0, 100, 300, 10));
    assert!(restores(&outs).is_empty(), "{outs:?}");
    assert!(s.db(0).reseed_since.is_some());
    recreated_by(&mut s, 12 * MINUTE, full(0, 300, 12));
}

#[test]
fn during_a_reseed_only_a_full_beyond_the_position_recreates_the_database() {
    let mut s = seeded_secondary(config(1));
    s.receive(MINUTE, log(0, 100, 200, 1));
    s.feed(Input::Operator(OperatorRequest::Reseed { db: DbId(0) }));
    let outs = s.receive(2 * MINUTE, full(0, 200, 2));
    assert!(
        reseeds(&outs).is_empty(),
        "a full at the position: {outs:?}"
    );
    recreated_by(&mut s, 3 * MINUTE, full(0, 250, 3));
}

#[test]
fn a_drills_report_names_the_position_it_restored() {
    let mut s = seeded_secondary(config(1));
    s.receive(MINUTE, log(0, 100, 200, 1));
    let outs = s.feed(Input::Operator(OperatorRequest::Drill {
        db: Some(DbId(0)),
    }));
    let drills: Vec<(OpId, Lsn)> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Command(Command::Drill { op, upto, .. }) => Some((*op, *upto)),
            _ => None,
        })
        .collect();
    let [(op, upto)] = drills[..] else {
        panic!("one drill: {outs:?}")
    };
    assert_eq!(upto, Lsn(200));
    let outs = s.complete(op, Ok(()));
    let reports: Vec<_> = outs
        .iter()
        .filter_map(|o| match o {
            Output::Report(Report::Drill { upto, ok, .. }) => Some((*upto, *ok)),
            _ => None,
        })
        .collect();
    assert_eq!(reports, vec![(Lsn(200), true)]);
}
