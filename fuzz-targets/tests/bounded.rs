//! The fuzz targets as bounded, deterministic tests: each body runs over a pseudo-random corpus
//! from a fixed seed, so `cargo test --workspace` covers them on stable. A failure prints the
//! case's bytes; feed them to the same body (or `cargo fuzz run <target> <file>`) to reproduce.
//!
//! `LIFEBOAT_FUZZ_CASES` multiplies the corpus sizes (default 1) for a longer local run.

mod corpus;

use corpus::{mutate, random_bytes, run_case, scale};
use lifeboat_core::journal::{encode_header, encode_snapshot, JournalWriter, SNAPSHOT_HEADER_LEN};
use lifeboat_core::protocol::{Command, Failure, Heartbeat, Input, Message, Peer, ProbeTarget};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn, OpId, SiteId,
    UtcMillis,
};
use lifeboat_fuzz_targets as targets;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn name_parser_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6e61_6d65);
    let seeds: [&[u8]; 5] = [
        b"sales_2026_11_22_03_05_00_tlog_2",
        b"my_sales_db_2026_01_31_23_59_59_full_0",
        b"x_2024_02_29_00_00_00_incr_4294967295",
        b"x_2023_02_29_00_00_00_incr_1",
        b"_2026_11_22_03_05_00_tlog_0",
    ];
    let mut n = 0;
    for seed in seeds {
        run_case("name_parser", n, seed, targets::name_parser);
        n += 1;
    }
    for _ in 0..4_000 * scale() {
        let case = if rng.gen_bool(0.5) {
            random_bytes(&mut rng, 64)
        } else {
            let seed = seeds[rng.gen_range(0..seeds.len())].to_vec();
            mutate(&mut rng, seed)
        };
        run_case("name_parser", n, &case, targets::name_parser);
        n += 1;
    }
}

fn meta(rng: &mut ChaCha8Rng) -> ArtifactMeta {
    let kind = [
        ArtifactKind::Full,
        ArtifactKind::Incremental,
        ArtifactKind::Log,
    ][rng.gen_range(0..3)];
    let start = rng.gen_range(0..1_000u64);
    ArtifactMeta {
        key: ArtifactKey {
            db: DbId(rng.gen_range(0..4)),
            epoch: Epoch(rng.gen_range(1..4)),
            lsn_start: Lsn(start),
            lsn_end: Lsn(start + rng.gen_range(0..100)),
            kind,
        },
        base_full: (kind == ArtifactKind::Incremental).then(|| Lsn(rng.gen_range(0..start + 1))),
        created_utc: UtcMillis(rng.gen()),
        size: rng.gen(),
        checksum: Checksum(rng.gen()),
        retry: rng.gen_range(0..5),
    }
}

/// A realistic engine input (what a journal holds).
fn input(rng: &mut ChaCha8Rng) -> Input {
    match rng.gen_range(0..9) {
        0 => Input::Tick,
        1 => Input::Restarted,
        2 => Input::ArtifactDiscovered(meta(rng)),
        3 => {
            let m = meta(rng);
            Input::ArtifactReceived {
                computed: if rng.gen_bool(0.9) {
                    m.checksum
                } else {
                    Checksum(rng.gen())
                },
                meta: m,
                from: SiteId(0),
            }
        }
        4 => Input::Completed {
            op: OpId(rng.gen_range(1..100)),
            result: if rng.gen_bool(0.8) {
                Ok(())
            } else {
                Err(Failure {
                    code: rng.gen(),
                    message: "restore failed: é".into(),
                    permanent: rng.gen(),
                })
            },
        },
        5 => Input::Probe {
            target: ProbeTarget::Service,
            ok: rng.gen(),
        },
        6 => Input::Message {
            from: Peer::Site(SiteId(0)),
            msg: Message::Heartbeat(Heartbeat {
                epoch: Epoch(1),
                seq: rng.gen(),
                backups_paused: rng.gen(),
                writable: rng.gen(),
                positions: (0..rng.gen_range(0..4))
                    .map(|i| (DbId(i), Lsn(rng.gen())))
                    .collect(),
                write_rate_per_sec: rng.gen(),
            }),
        },
        7 => Input::WritePosition {
            db: DbId(rng.gen_range(0..4)),
            lsn: Lsn(rng.gen()),
        },
        _ => Input::ShipFailed {
            op: OpId(rng.gen()),
            key: meta(rng).key,
            to: SiteId(1),
            reason: "timeout".into(),
        },
    }
}

/// A snapshot of a real engine's state after a few inputs.
fn snapshot(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let cfg = Config {
        databases: (0..4).map(|i| format!("db{i}")).collect(),
        ..Config::default()
    };
    let mut e = lifeboat_core::engine::SiteEngine::new(cfg, SiteId(rng.gen_range(0..2)));
    for t in 0..rng.gen_range(0..20u64) {
        e.handle(t * 1_000, input(rng));
        while let Some(out) = e.poll_output() {
            if let lifeboat_core::Output::Command(Command::Restore { op, .. }) = out {
                e.handle(t * 1_000 + 500, Input::Completed { op, result: Ok(()) });
            }
        }
    }
    encode_snapshot(e.state(), rng.gen()).expect("encodes")
}

#[test]
fn journal_decoder_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6a72_6e6c);
    for i in 0..4_000 * scale() {
        let case: Vec<u8> = match i % 6 {
            // Arbitrary bytes in every mode.
            0 => random_bytes(&mut rng, 200),
            1 => {
                let mut v = vec![1];
                v.extend(random_bytes(&mut rng, 300));
                v
            }
            // Real journals, intact or damaged.
            2 | 3 => {
                let base = rng.gen_range(0..1_000);
                let mut bytes = encode_header(base);
                let mut w = JournalWriter::new(base);
                for _ in 0..rng.gen_range(0..8) {
                    w.append(&input(&mut rng), &mut bytes).expect("encodes");
                }
                let bytes = if i % 6 == 3 {
                    mutate(&mut rng, bytes)
                } else {
                    bytes
                };
                [vec![0], bytes].concat()
            }
            // Real snapshots, intact or damaged, and valid frames around damaged payloads.
            4 => {
                let snap = snapshot(&mut rng);
                let snap = if rng.gen_bool(0.5) {
                    mutate(&mut rng, snap)
                } else {
                    snap
                };
                [vec![2], snap].concat()
            }
            _ => {
                let snap = snapshot(&mut rng);
                let payload = mutate(&mut rng, snap[SNAPSHOT_HEADER_LEN..].to_vec());
                [vec![3], rng.gen::<u64>().to_le_bytes().to_vec(), payload].concat()
            }
        };
        run_case("journal_decoder", i, &case, targets::journal_decoder);
    }
}

#[test]
fn engine_inputs_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x656e_6769);
    for i in 0..600 * scale() {
        let case = random_bytes(&mut rng, 1_200);
        run_case("engine_inputs", i, &case, targets::engine_inputs);
    }
}

/// The corpus is only worth running if it gets somewhere: restores, failures, reseeds, role
/// changes and new epochs.
#[test]
fn engine_inputs_corpus_reaches_deep_states() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x656e_6769);
    let mut total = targets::Coverage::default();
    for _ in 0..200 {
        let case = random_bytes(&mut rng, 1_200);
        total.merge(&targets::engine_inputs_coverage(&case));
    }
    eprintln!("{total:#?}");
    assert!(total.restores_applied > 100, "{total:#?}");
    assert!(total.reseeds_issued > 0, "{total:#?}");
    assert!(total.max_epoch >= 2, "{total:#?}");
    assert!(total.roles.contains(&(1, "primary")), "{total:#?}");
    assert!(total.roles.contains(&(0, "rebuilding")), "{total:#?}");
}

#[test]
fn engine_inputs_are_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6465_7465);
    for _ in 0..30 {
        let case = random_bytes(&mut rng, 1_200);
        assert_eq!(
            targets::engine_inputs_digest(&case),
            targets::engine_inputs_digest(&case),
            "two runs of the same inputs differ: {case:02x?}"
        );
    }
}

/// Found by `cargo fuzz run engine_inputs`: `SiteEngine::write_position` adds every LSN delta
/// to `advanced_since_heartbeat` unchecked, so two write positions near `u64::MAX` (or one huge
/// first report after another database's) overflow between heartbeats. Equivalent to
/// `handle(0, Tick)`, `handle(0, WritePosition { db: 0, lsn: u64::MAX - 255 })`,
/// `handle(0, WritePosition { db: 1, lsn: 256 })` on a fresh primary.
#[test]
fn regression_write_positions_near_u64_max_do_not_overflow() {
    let case = [
        0xad, 0xf7, 0xf7, 0xf7, 0x2e, 0x9c, 0xf7, 0x33, 0x37, 0x32, 0x99, 0x9a, 0x06, 0x00, 0x00,
        0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x08, 0x2f,
        0x26, 0x00,
    ];
    targets::engine_inputs(&case);
}

/// Found by the bounded corpus from another seed (ChaCha8 99, case 370): with no arbiter
/// configured, a switchover target promoted on a message claiming to be the arbiter's view that
/// this site holds the epoch, while its own state still named the old primary the holder
/// (invariant: a primary holds the epoch it writes under). Without an arbiter only the old
/// primary's notice of the new epoch makes the target the holder.
#[test]
fn regression_a_switchover_target_without_an_arbiter_promotes_only_as_the_holder() {
    let case = [
        0x63, 0x4e, 0x1a, 0x9a, 0xab, 0x25, 0xdb, 0x61, 0x3f, 0x3b, 0x2e, 0xa6, 0x39, 0x62, 0x50,
        0x0c, 0x2a, 0xa4, 0xc7, 0x26, 0xfd, 0x66, 0x80, 0x86, 0x72, 0x63, 0x76, 0x50, 0x03, 0x30,
        0x47, 0xe2, 0x9a, 0xef, 0xf3, 0xc5, 0x78, 0x3e, 0x97, 0xe0, 0x61, 0xc4, 0x8b, 0xf2, 0xcb,
        0x82, 0x8a, 0xe8, 0x09, 0xea, 0x14, 0x6d, 0x9a, 0x21, 0x69, 0x64, 0x00, 0x44, 0x99, 0xc9,
        0x2c, 0x60, 0xf4, 0x78, 0xf3, 0x0a, 0xd4, 0x78, 0x89, 0xe4, 0x27, 0x80, 0xef, 0xc2, 0x60,
        0x01, 0x53, 0xd5, 0x98, 0x73, 0x22, 0x0b, 0x60, 0xee, 0xa1, 0xf0, 0x51, 0xa3, 0x60, 0xc0,
        0x1c, 0xbf, 0x28, 0x82, 0xd2, 0xb2, 0x68, 0xc8, 0x74, 0x3e, 0x67, 0xd9, 0xeb, 0x45, 0x7c,
        0xa8, 0xd3, 0xb3, 0xc2, 0xc2, 0xb2, 0xe7, 0x9b, 0xaa, 0x78, 0xbc, 0xf8, 0x87, 0x8a, 0xa3,
        0x2b, 0x84, 0x10, 0xe0, 0x7b, 0xe2, 0xf8, 0x8b, 0x57, 0x19, 0xb1, 0x29, 0x83, 0xa9, 0xb9,
        0x59, 0xd5, 0xa0, 0xe2, 0x47, 0xc4, 0x2e, 0x13, 0xa9, 0x41, 0x8d, 0xcd, 0x90, 0xd6, 0x8f,
        0xda, 0x65, 0x02, 0xbb, 0xbe, 0x9f, 0x6b, 0xf1, 0x41, 0x58, 0xa8, 0x3e, 0x3f, 0x41, 0xa8,
        0xe3, 0x92, 0xf5, 0x2b, 0x13, 0xcc, 0x5d, 0xac, 0xfa, 0x0e, 0x8a, 0x56, 0x9e, 0xe5, 0x15,
        0x73, 0x2c, 0x3d, 0xc5, 0xe0, 0x16, 0xc4, 0x22, 0x79, 0x77, 0x38, 0x87, 0x8a, 0x17, 0x24,
        0xaa, 0x2a, 0xf8, 0x5a, 0x18, 0x99, 0x89, 0xb5, 0x86, 0x1c, 0xbb, 0x05, 0xa9, 0xff, 0x59,
        0xb7, 0x6a, 0x76, 0x23, 0x33, 0xb3, 0x48, 0xb2,
    ];
    targets::engine_inputs(&case);
}
