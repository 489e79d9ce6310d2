//! The data-parser fuzz targets (`sqlite_delta`, `sqlite_wal`, `pg_wal`, `site_config`) as bounded,
//! deterministic tests: each body runs over a pseudo-random corpus from a fixed seed, random
//! bytes in every mode and mutations of valid inputs. A failure saves the case and prints how
//! to replay it.
//!
//! `LIFEBOAT_FUZZ_CASES` multiplies the corpus sizes (default 1) for a longer local run.
//! `cargo test -p lifeboat-fuzz-targets --test bounded_data -- --ignored write_seed_corpus`
//! rewrites the committed seed corpus of the three targets (`fuzz/seeds/<target>/`).

mod corpus;

use corpus::{mutate, random_bytes, run_case, scale};
use lifeboat_fuzz_targets as targets;
use lifeboat_io_tokio::drivers::postgres::segment::{self, SegmentHeader, SEGMENT_FORMAT_VERSION};
use lifeboat_io_tokio::drivers::postgres::wal::{segment_name, PAGE_MAGIC_PG15};
use lifeboat_io_tokio::drivers::sqlite::pages::{DeltaHeader, DeltaKind};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

fn with_mode(mode: u8, rest: &[u8]) -> Vec<u8> {
    [&[mode][..], rest].concat()
}

/// Page 1 of a rollback-journal SQLite database at `counter`, as much as the applier reads.
fn page1(page_size: u32, counter: u32, page_count: u32) -> Vec<u8> {
    let mut p = vec![0u8; page_size as usize];
    p[0..16].copy_from_slice(b"SQLite format 3\0");
    let raw = if page_size == 65_536 {
        1
    } else {
        page_size as u16
    };
    p[16..18].copy_from_slice(&raw.to_be_bytes());
    p[18..24].copy_from_slice(&[1, 1, 0, 64, 32, 32]);
    p[24..28].copy_from_slice(&counter.to_be_bytes());
    p[28..32].copy_from_slice(&page_count.to_be_bytes());
    p[92..96].copy_from_slice(&counter.to_be_bytes());
    p[100] = 0x0D;
    p
}

/// A valid log or incremental delta for the body's scratch database (position 5, 512-byte
/// pages): page 1 and up to two more pages.
fn valid_delta(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let page_size = 512;
    let page_count = rng.gen_range(1..=3u32);
    let lsn_start = rng.gen_range(3..=5u64);
    let lsn_end = rng.gen_range(6..=8u64);
    let incremental = rng.gen_bool(0.5);
    // Pages beyond the database's two must all be carried.
    let pages: Vec<u32> = (1..=page_count)
        .filter(|p| *p == 1 || *p > 2 || rng.gen_bool(0.5))
        .collect();
    let header = DeltaHeader {
        kind: if incremental {
            DeltaKind::Incremental
        } else {
            DeltaKind::Log
        },
        page_size,
        page_count,
        lsn_start,
        lsn_end,
        base_full: incremental.then_some(lsn_start),
        entries: pages.len() as u32,
    };
    let mut out = header.encode().to_vec();
    for p in pages {
        out.extend_from_slice(&p.to_le_bytes());
        if p == 1 {
            out.extend_from_slice(&page1(page_size, lsn_end as u32, page_count));
        } else {
            let mut image = vec![0u8; page_size as usize];
            rng.fill_bytes(&mut image[..64]);
            out.extend_from_slice(&image);
        }
    }
    out
}

fn valid_chain(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut ranges = || {
        let mut start = 0u32;
        let parts: Vec<String> = (0..rng.gen_range(0..4))
            .map(|_| {
                let a = start + rng.gen_range(2..50);
                let b = a + rng.gen_range(0..20);
                start = b;
                format!("[{a},{b}]")
            })
            .collect();
        format!("[{}]", parts.join(","))
    };
    let (log, incr) = (ranges(), ranges());
    format!(
        "{{\"format_version\":1,\"generation\":3,\"position\":41,\"page_size\":4096,\
         \"page_count\":200,\"log_from\":40,\"log_touched\":{log},\"base_full\":30,\
         \"incr_touched\":{incr}}}"
    )
    .into_bytes()
}

/// A WAL file with valid checksums: `frames` of 512-byte pages, some of them commits.
fn valid_wal(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let images: Vec<(u32, u32, Vec<u8>)> = (0..rng.gen_range(0..10))
        .map(|i| {
            let commit = if rng.gen_bool(0.4) { i + 1 } else { 0 };
            (rng.gen_range(1..6), commit, random_bytes(rng, 40))
        })
        .collect();
    let frames: Vec<(u32, u32, &[u8])> = images
        .iter()
        .map(|(p, c, i)| (*p, *c, i.as_slice()))
        .collect();
    lifeboat_io_tokio::drivers::sqlite::wal::encode(rng.gen(), [rng.gen(), rng.gen()], 512, &frames)
}

#[test]
fn sqlite_wal_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7761_6c21);
    for i in 0..1_500 * scale() {
        let case = match i % 6 {
            0 => random_bytes(&mut rng, 300),
            1 | 2 => with_mode(1, &random_bytes(&mut rng, 200)),
            3 => with_mode(0, &valid_wal(&mut rng)),
            _ => {
                let w = valid_wal(&mut rng);
                with_mode(0, &mutate(&mut rng, w))
            }
        };
        run_case("sqlite_wal", i, &case, targets::sqlite_wal);
    }
}

#[test]
fn sqlite_delta_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7371_6c74);
    // Every delta that opens is applied, and an apply fsyncs five times (about 50 ms on a
    // disk, nothing on tmpfs: `TMPDIR=/dev/shm` makes this test fast): about one case in
    // sixteen reaches the applier.
    for i in 0..2_000 * scale() {
        let case = match i % 16 {
            0 | 1 => random_bytes(&mut rng, 200),
            2 => with_mode(1, &random_bytes(&mut rng, 120)),
            5 if i % 32 == 5 => with_mode(0, &valid_delta(&mut rng)),
            6 if i % 32 == 6 => {
                let delta = valid_delta(&mut rng);
                with_mode(0, &mutate(&mut rng, delta))
            }
            3..=9 => {
                let chain = valid_chain(&mut rng);
                let chain = if rng.gen_bool(0.5) {
                    mutate(&mut rng, chain)
                } else {
                    chain
                };
                with_mode(2, &chain)
            }
            10..=12 => with_mode(3, &random_bytes(&mut rng, 80)),
            _ => {
                let mut db = page1(512, rng.gen(), rng.gen_range(0..4));
                db.extend(random_bytes(&mut rng, 600));
                with_mode(4, &mutate(&mut rng, db))
            }
        };
        run_case("sqlite_delta", i, &case, targets::sqlite_delta);
    }
}

/// A WAL segment artifact around a 1 MiB segment whose first page holds a long header and
/// one record.
fn valid_artifact(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let size = 1u64 << 20;
    let segno = rng.gen_range(1..5000u64);
    let base = segno * size;
    let mut payload = vec![0u8; size as usize];
    payload[0..2].copy_from_slice(&PAGE_MAGIC_PG15.to_le_bytes());
    payload[2..4].copy_from_slice(&2u16.to_le_bytes());
    payload[8..16].copy_from_slice(&base.to_le_bytes());
    payload[40..44].copy_from_slice(&100u32.to_le_bytes());
    let header = SegmentHeader {
        format_version: SEGMENT_FORMAT_VERSION,
        wal_file: segment_name(1, segno, size),
        timeline: 1,
        segno,
        segment_size: size,
        lsn_start: base,
        lsn_end: base + size,
        replay_target: Some(base + 40 + 104),
        replay_floor: Some(base + 40),
        final_segment: false,
        payload_size: 0,
        payload_xxh3: String::new(),
        history: Vec::new(),
    };
    segment::encode(header, &payload)
}

#[test]
fn pg_wal_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7067_7761);
    let names: [&[u8]; 6] = [
        b"000000010000000000000010",
        b"00000002.history",
        b"000000020000000300000004.partial",
        b"00000001000000000000000B.00000028.backup",
        b"0/3000028",
        b"1A/FF",
    ];
    for i in 0..3_000 * scale() {
        let case = match i % 10 {
            0 => random_bytes(&mut rng, 200),
            1 => with_mode(0, &random_bytes(&mut rng, 200)),
            // Whole artifacts cost 1 MiB each: a few, intact or damaged.
            2 if i % 100 == 2 => {
                let a = valid_artifact(&mut rng);
                with_mode(0, &if i % 200 == 2 { a } else { mutate(&mut rng, a) })
            }
            2 | 3 => with_mode(1, &random_bytes(&mut rng, 120)),
            4 if i % 40 == 4 => with_mode(2, &random_bytes(&mut rng, 120)),
            4 | 5 => with_mode(3, &random_bytes(&mut rng, 60)),
            6 | 7 => {
                let name = names[rng.gen_range(0..names.len())].to_vec();
                with_mode(3 + rng.gen_range(0..2), &mutate(&mut rng, name))
            }
            _ => with_mode(4, &random_bytes(&mut rng, 40)),
        };
        run_case("pg_wal", i, &case, targets::pg_wal);
    }
}

const SITE_README: &str = r#"site = "primary"
listen = "10.0.1.10:7401"
peer = "10.0.2.10:7401"
arbiter = "10.0.3.10:7400"
http = "127.0.0.1:7480"
data_dir = "/var/lib/lifeboat"

[engine]
sites = ["primary", "recovery"]
initial_primary = "primary"
databases = ["sales"]

[engine.schedule]
full_every_ms = 86400000
log_every_ms = 60000

[driver]
kind = "sqlite"
[[driver.databases]]
name = "sales"
path = "/srv/app/sales.sqlite"
"#;

const ARBITER_README: &str = r#"listen = "10.0.3.10:7400"
http = "127.0.0.1:7490"
data_dir = "/var/lib/lifeboat-arbiter"

[engine]
sites = ["primary", "recovery"]
initial_primary = "primary"
databases = ["sales"]
"#;

#[test]
fn site_config_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7369_7465);
    let templates: [&[u8]; 4] = [
        b"restore --to={path} {db} {{literal}} ${HOME}",
        b"sh -c 'echo \"$1\" > x' -- \"a b\" c\\ d {lsn_end}",
        b"drill {chain} x{chain}",
        b"pg_ctl promote -D {target}",
    ];
    for i in 0..2_000 * scale() {
        let case = match i % 8 {
            0 => random_bytes(&mut rng, 200),
            1 | 2 => {
                let file = if i % 16 == 1 {
                    ARBITER_README
                } else {
                    SITE_README
                };
                with_mode(0, &mutate(&mut rng, file.as_bytes().to_vec()))
            }
            3 | 4 => with_mode(1, &random_bytes(&mut rng, 40)),
            5 => with_mode(2, &random_bytes(&mut rng, 200)),
            6 => with_mode(3, &random_bytes(&mut rng, 160)),
            _ => {
                // A template as the line: the slice's length byte first.
                let t = templates[rng.gen_range(0..templates.len())];
                let t = mutate(&mut rng, t.to_vec());
                let len = (t.len() as u8).min(80);
                let mut case = vec![3, len];
                case.extend_from_slice(&t[..usize::from(len).min(t.len())]);
                case.extend(random_bytes(&mut rng, 60));
                case
            }
        };
        run_case("site_config", i, &case, targets::site_config);
    }
}

/// The committed seeds must stay clean under the bodies (committed.rs runs them too); this
/// writes them. Small, valid inputs in each body's encoding.
#[test]
#[ignore = "rewrites fuzz/seeds/; run by hand after changing a body's encoding"]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut rng = ChaCha8Rng::seed_from_u64(0x7365_6564);
    let write = |target: &str, name: &str, bytes: Vec<u8>| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("seed directory");
        assert!(bytes.len() < 8 * 1024, "{target}/{name} is too large");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    };
    let mut db = page1(512, 5, 2);
    db.extend(vec![0u8; 512]);
    db[512] = 0x0D;
    write(
        "sqlite_delta",
        "log-delta",
        with_mode(0, &valid_delta(&mut rng)),
    );
    write(
        "sqlite_delta",
        "incr-delta",
        with_mode(0, &valid_delta(&mut rng)),
    );
    write("sqlite_delta", "built-delta", with_mode(1, &[2; 48]));
    write(
        "sqlite_delta",
        "chain-json",
        with_mode(2, &valid_chain(&mut rng)),
    );
    write("sqlite_delta", "chain-huge-range", with_mode(2, b"{\"format_version\":1,\"generation\":1,\"position\":5,\"page_size\":4096,\"page_count\":3,\"log_from\":5,\"log_touched\":[[1,4294967295]],\"base_full\":null,\"incr_touched\":[]}"));
    write("sqlite_delta", "built-chain", with_mode(3, &[3; 40]));
    write("sqlite_delta", "database", with_mode(4, &db));

    write("pg_wal", "built-artifact", with_mode(1, &[3; 64]));
    write("pg_wal", "built-segment", with_mode(2, &[3; 96]));
    for (i, n) in [
        &b"000000010000000000000010"[..],
        b"00000002.history",
        b"000000020000000300000004.partial",
        b"00000001000000000000000B.00000028.backup",
    ]
    .iter()
    .enumerate()
    {
        write("pg_wal", &format!("name-{i}"), with_mode(3, n));
    }
    write("pg_wal", "lsn", with_mode(4, b"16/B374D848"));

    write(
        "site_config",
        "site-toml",
        with_mode(0, SITE_README.as_bytes()),
    );
    write(
        "site_config",
        "arbiter-toml",
        with_mode(0, ARBITER_README.as_bytes()),
    );
    write("site_config", "edited-value", with_mode(1, &[3, 7, 2, 9]));
    write("site_config", "engine-config", with_mode(2, &[5; 64]));
    let t = b"restore --to={path} {db} {{literal}}";
    let mut case = vec![3, t.len() as u8];
    case.extend_from_slice(t);
    case.extend_from_slice(&[2, 3, b'x', b'{', b'd', 0, 6, 9, 2]);
    write("site_config", "template", case);
    write(
        "sqlite_wal",
        "valid-wal",
        with_mode(0, &valid_wal(&mut rng)),
    );
    write(
        "sqlite_wal",
        "another-wal",
        with_mode(0, &valid_wal(&mut rng)),
    );
    write("sqlite_wal", "built-wal", with_mode(1, &[5; 80]));
}
