//! Event sourcing with the journal codec: a run's inputs, journaled as `(now, Input)` records,
//! replay from scratch into the same state; a snapshot of the state plus the journal's suffix
//! gives that state too; and a torn or corrupted tail is detected, never misread.

use lifeboat_core::engine::{SiteEngine, SiteState};
use lifeboat_core::journal::{self, Decoded, JournalWriter, Tail, TornReason};
use lifeboat_core::protocol::{Command, Failure, Heartbeat, Input, Message, Output, Peer};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn, Millis, OpId,
    SiteId, UtcMillis,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Record = (Millis, Input);

const DBS: u32 = 6;
const SECONDARY: SiteId = SiteId(1);

fn config() -> Config {
    let mut c = Config {
        arbiter: false,
        databases: (0..DBS).map(|i| format!("db{i}")).collect(),
        ..Config::default()
    };
    c.restore.retry_delay_ms = 30_000;
    c.restore.reseed_after_minutes = 20;
    c.restore.parallelism = 2;
    c
}

fn meta(db: u32, kind: ArtifactKind, s: u64, e: u64) -> ArtifactMeta {
    ArtifactMeta {
        key: ArtifactKey {
            db: DbId(db),
            epoch: Epoch(1),
            lsn_start: Lsn(s),
            lsn_end: Lsn(e),
            kind,
        },
        base_full: None,
        created_utc: UtcMillis(1_795_000_000_000 + (e * 60_000) as i64),
        size: e - s + 1,
        checksum: Checksum(s * 1_000_003 + e),
        retry: 0,
    }
}

/// A run as recorded: every input with its `now`; `states[k]` is the serialized state after `k`
/// inputs and `outputs[k]` the serialized outputs of input `k` (`outputs[0]` is empty).
struct Run {
    records: Vec<Record>,
    states: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
    /// Full backups the engine asked for (reseeds) and not yet delivered; and in all.
    fulls_owed: u32,
    fulls_asked: u32,
    restores: Vec<OpId>,
}

impl Run {
    fn feed(&mut self, e: &mut SiteEngine, t: Millis, input: Input) {
        self.records.push((t, input.clone()));
        e.handle(t, input);
        let mut out = Vec::new();
        while let Some(o) = e.poll_output() {
            bincode::serialize_into(&mut out, &o).unwrap();
            match o {
                Output::Command(Command::Restore { op, .. } | Command::Reseed { op, .. }) => {
                    self.restores.push(op)
                }
                Output::Send {
                    msg: Message::RequestFull { .. },
                    ..
                } => {
                    self.fulls_owed += 1;
                    self.fulls_asked += 1;
                }
                _ => {}
            }
        }
        self.states.push(bincode::serialize(e.state()).unwrap());
        self.outputs.push(out);
    }
}

/// One secondary's run: shuffled, duplicated, corrupted and missing arrivals, restores that fail
/// now and then, heartbeats, a pause, restarts, reseeds.
fn run(seed: u64) -> Run {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut e = SiteEngine::new(config(), SECONDARY);
    let mut arrivals: Vec<ArtifactMeta> = Vec::new();
    for db in 0..DBS {
        arrivals.push(meta(db, ArtifactKind::Full, 0, 0));
        for k in 0..25 {
            // Some logs never arrive: their databases open a gap and reseed.
            if rng.gen_range(0..100) < 3 {
                continue;
            }
            arrivals.push(meta(db, ArtifactKind::Log, k * 10, k * 10 + 10));
        }
    }
    // Roughly in order, with local shuffles (late and early arrivals) and duplicates.
    for chunk in arrivals.chunks_mut(7) {
        chunk.shuffle(&mut rng);
    }
    let mut next = arrivals.into_iter();
    let mut r = Run {
        records: Vec::new(),
        states: vec![bincode::serialize(e.state()).unwrap()],
        outputs: vec![Vec::new()],
        fulls_owed: 0,
        fulls_asked: 0,
        restores: Vec::new(),
    };
    let mut t: Millis = 0;
    let mut seq = 0;
    let mut last: Option<ArtifactMeta> = None;
    for step in 0..1_500 {
        t += rng.gen_range(0..20_000);
        let received = |m: ArtifactMeta, corrupt: bool| Input::ArtifactReceived {
            meta: m,
            computed: if corrupt {
                Checksum(!m.checksum.0)
            } else {
                m.checksum
            },
            from: SiteId(0),
        };
        let input = match rng.gen_range(0..100) {
            0..=39 => match next.next() {
                Some(m) => {
                    last = Some(m);
                    received(m, rng.gen_range(0..100) < 5)
                }
                None => Input::Tick,
            },
            40..=44 => match last {
                Some(m) => received(m, false),
                None => Input::Tick,
            },
            45..=74 if !r.restores.is_empty() => {
                let op = r.restores.remove(rng.gen_range(0..r.restores.len()));
                let result = match rng.gen_range(0..100) {
                    0..=79 => Ok(()),
                    80..=94 => Err(Failure {
                        code: 3013,
                        message: "RESTORE LOG is terminating abnormally".into(),
                        permanent: false,
                    }),
                    _ => Err(Failure {
                        code: 3241,
                        message: "unreadable".into(),
                        permanent: true,
                    }),
                };
                Input::Completed { op, result }
            }
            75..=84 => {
                seq += 1;
                Input::Message {
                    from: Peer::Site(SiteId(0)),
                    msg: Message::Heartbeat(Heartbeat {
                        epoch: Epoch(1),
                        seq,
                        backups_paused: (400..600).contains(&step),
                        writable: true,
                        positions: vec![(DbId(rng.gen_range(0..DBS)), Lsn(250))],
                        write_rate_per_sec: 3,
                    }),
                }
            }
            85 => Input::Restarted,
            86..=89 if r.fulls_owed > 0 => {
                r.fulls_owed -= 1;
                let db = rng.gen_range(0..DBS);
                received(meta(db, ArtifactKind::Full, 250, 250), false)
            }
            _ => Input::Tick,
        };
        r.feed(&mut e, t, input);
    }
    r
}

fn journal_bytes(records: &[Record], base_seq: u64) -> Vec<u8> {
    let mut bytes = journal::encode_header(base_seq);
    let mut w = JournalWriter::new(base_seq);
    for r in records {
        w.append(r, &mut bytes).unwrap();
    }
    bytes
}

/// Feed records into an engine; the serialized outputs, per input.
fn replay(e: &mut SiteEngine, records: &[Record]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|(t, input)| {
            e.handle(*t, input.clone());
            let mut out = Vec::new();
            while let Some(o) = e.poll_output() {
                bincode::serialize_into(&mut out, &o).unwrap();
            }
            out
        })
        .collect()
}

fn state_bytes(e: &SiteEngine) -> Vec<u8> {
    bincode::serialize(e.state()).unwrap()
}

#[test]
fn replaying_the_journal_from_scratch_reproduces_the_state_and_outputs() {
    let Run {
        records,
        states,
        outputs,
        fulls_asked,
        ..
    } = run(1);
    let bytes = journal_bytes(&records, 0);
    let d: Decoded<Record> = journal::decode(&bytes).unwrap();
    assert_eq!(d.tail, Tail::Clean);
    assert_eq!(d.valid_len, bytes.len());
    assert_eq!(d.records.len(), records.len());
    let decoded: Vec<Record> = d.records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(decoded, records);
    let mut e = SiteEngine::new(config(), SECONDARY);
    let out = replay(&mut e, &decoded);
    assert!(out == outputs[1..], "replayed outputs differ");
    assert!(
        state_bytes(&e) == *states.last().unwrap(),
        "replayed state differs"
    );
    // The run did exercise the chain: restores, failures and at least one reseed request.
    assert!(e.state().dbs.iter().all(|d| d.position.is_some()));
    assert!(states.windows(2).filter(|w| w[0] != w[1]).count() > 500);
    assert!(fulls_asked > 0);
}

#[test]
fn snapshot_plus_replay_of_the_suffix_equals_replay_from_scratch() {
    for seed in [2, 3] {
        let Run {
            records,
            states,
            outputs,
            ..
        } = run(seed);
        let whole = journal_bytes(&records, 0);
        let full: Vec<Record> = journal::decode::<Record>(&whole)
            .unwrap()
            .records
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let mut scratch = SiteEngine::new(config(), SECONDARY);
        replay(&mut scratch, &full);
        let end = state_bytes(&scratch);
        for k in (0..=records.len()).step_by(97).chain([records.len()]) {
            // Snapshot after `k` inputs; the journal that follows starts at sequence `k`.
            let st: SiteState = bincode::deserialize(&states[k]).unwrap();
            let snap = journal::encode_snapshot(&st, k as u64).unwrap();
            let suffix = journal_bytes(&records[k..], k as u64);

            let (st, next_seq) = journal::decode_snapshot::<SiteState>(&snap).unwrap();
            assert_eq!(next_seq, k as u64);
            let d = journal::decode::<Record>(&suffix).unwrap();
            assert_eq!(d.base_seq, next_seq);
            let rest: Vec<Record> = d.records.into_iter().map(|(_, r)| r).collect();
            let mut e = SiteEngine::from_state(config(), SECONDARY, st);
            let out = replay(&mut e, &rest);
            assert!(
                out == outputs[k + 1..],
                "seed {seed}, snapshot at {k}: outputs differ"
            );
            assert!(
                state_bytes(&e) == end,
                "seed {seed}, snapshot at {k}: state differs"
            );
        }
    }
}

#[test]
fn a_torn_tail_is_detected_and_the_intact_prefix_replays_exactly() {
    let Run {
        records, states, ..
    } = run(4);
    let records = &records[..300];
    let bytes = journal_bytes(records, 0);
    let ends: Vec<usize> = {
        // Where each record ends, from the decoder's own account of a clean journal.
        let mut ends = Vec::new();
        for k in 0..=records.len() {
            ends.push(journal_bytes(&records[..k], 0).len());
        }
        ends
    };
    // Every cut inside the last three records, and at a few earlier places.
    let from = ends[records.len() - 3];
    for cut in (journal::JOURNAL_HEADER_LEN..from)
        .step_by(211)
        .chain(from..bytes.len())
    {
        let d = journal::decode::<Record>(&bytes[..cut]).unwrap();
        let whole = ends.iter().rposition(|&e| e <= cut).unwrap();
        assert_eq!(d.records.len(), whole, "cut at {cut}");
        assert_eq!(d.valid_len, ends[whole]);
        if cut == ends[whole] {
            assert_eq!(d.tail, Tail::Clean);
        } else {
            assert!(
                matches!(d.tail, Tail::Torn { offset, .. } if offset == ends[whole]),
                "cut at {cut}: {:?}",
                d.tail
            );
        }
        let got: Vec<Record> = d.records.into_iter().map(|(_, r)| r).collect();
        assert_eq!(got[..], records[..whole]);
        // Replaying what survived gives the state the engine had after those inputs.
        if cut % 7 == 0 || cut + 1 == bytes.len() {
            let mut e = SiteEngine::new(config(), SECONDARY);
            replay(&mut e, &got);
            assert!(state_bytes(&e) == states[whole]);
        }
    }
}

/// A damaged last record is a torn append: the journal ends before it. A damaged record with
/// intact records after it is corruption of acknowledged inputs: an error that names it, never
/// a silent truncation of everything after it.
#[test]
fn a_damaged_last_record_is_torn_and_a_damaged_middle_record_is_corruption() {
    let records = run(5).records;
    let records = &records[..200];
    let bytes = journal_bytes(records, 0);
    let last_start = journal_bytes(&records[..199], 0).len();
    let mid_start = journal_bytes(&records[..100], 0).len();
    let mid_end = journal_bytes(&records[..101], 0).len();
    for at in last_start..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            let d = journal::decode::<Record>(&bad).unwrap();
            assert_eq!(d.records.len(), 199, "byte {at} ^ {flip:#x}");
            assert_eq!(d.valid_len, last_start);
            match d.tail {
                Tail::Torn { offset, reason } => {
                    assert_eq!(offset, last_start);
                    assert!(
                        matches!(
                            reason,
                            TornReason::ChecksumMismatch { .. }
                                | TornReason::LengthTooLarge { .. }
                                | TornReason::IncompletePayload { .. }
                        ),
                        "byte {at}: {reason:?}"
                    );
                }
                Tail::Clean => panic!("byte {at} ^ {flip:#x}: damage not detected"),
            }
            let got: Vec<Record> = d.records.into_iter().map(|(_, r)| r).collect();
            assert_eq!(got[..], records[..199]);
        }
    }
    for at in mid_start..mid_end {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut bad = bytes.clone();
            bad[at] ^= flip;
            match journal::decode::<Record>(&bad) {
                Err(journal::JournalError::CorruptRecord {
                    seq,
                    offset,
                    intact_at,
                    intact_seq,
                    ..
                }) => {
                    assert_eq!((seq, offset), (100, mid_start), "byte {at} ^ {flip:#x}");
                    assert_eq!((intact_seq, intact_at), (101, mid_end));
                }
                other => panic!("byte {at} ^ {flip:#x}: {other:?}"),
            }
        }
    }
}

#[test]
fn a_damaged_snapshot_is_refused_never_misread() {
    let states = run(6).states;
    let st: SiteState = bincode::deserialize(&states[600]).unwrap();
    let snap = journal::encode_snapshot(&st, 600).unwrap();
    let (back, seq) = journal::decode_snapshot::<SiteState>(&snap).unwrap();
    assert_eq!(
        (bincode::serialize(&back).unwrap(), seq),
        (states[600].clone(), 600)
    );
    for at in 0..snap.len() {
        let mut bad = snap.clone();
        bad[at] ^= 0x5a;
        assert!(
            journal::decode_snapshot::<SiteState>(&bad).is_err(),
            "byte {at} of {} flipped and still accepted",
            snap.len()
        );
    }
    for len in [0, 10, journal::SNAPSHOT_HEADER_LEN, snap.len() - 1] {
        assert!(journal::decode_snapshot::<SiteState>(&snap[..len]).is_err());
    }
}

#[test]
fn only_observations_may_run_before_their_inputs_are_durable() {
    use lifeboat_core::{DbId, Epoch, OpId, SiteId};
    let observations = [
        Command::Probe,
        Command::SamplePositions,
        Command::CheckService { op: OpId(1) },
        Command::CollectLogs { epoch: Epoch(1) },
    ];
    for c in observations {
        assert!(!Output::Command(c.clone()).needs_durable_inputs(), "{c:?}");
    }
    // Anything that tells another party something, or changes what the site is, waits.
    let effects = [
        Output::Command(Command::Fence { op: OpId(2) }),
        Output::Command(Command::AllowWrites {
            op: OpId(3),
            epoch: Epoch(1),
        }),
        Output::Command(Command::TakeBackup {
            op: OpId(4),
            db: Some(DbId(0)),
            kind: ArtifactKind::Log,
        }),
        Output::Send {
            to: Peer::Site(SiteId(1)),
            msg: Message::SwitchoverRequest,
        },
    ];
    for o in effects {
        assert!(o.needs_durable_inputs(), "{o:?}");
    }
}
