//! The adapter's fuzz targets (frames, HTTP requests, manifests, the journal directory) as
//! bounded, deterministic tests: each body runs over a pseudo-random corpus from a fixed seed,
//! mixing random bytes with mutated valid inputs. A failure saves the case and prints how to
//! replay it.
//!
//! `LIFEBOAT_FUZZ_CASES` multiplies the corpus sizes (default 1) for a longer local run.
//!
//! The test binary counts the largest allocation each thread makes (see [`Counting`]), so the
//! frame reader's promise, memory follows the bytes that arrive and not the length a header
//! announces, is checked too.

mod corpus;

use corpus::{mutate, random_bytes, run_case, scale};
use lifeboat_core::protocol::{Heartbeat, Message, Peer};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, DbId, Epoch, Lsn, SiteId, UtcMillis,
};
use lifeboat_fuzz_targets as targets;
use lifeboat_io_tokio::transport::frame::{encode_header, FrameKind, MAX_FRAME_LEN};
use lifeboat_io_tokio::transport::wire::{Frame, Hello, LinkKind, Welcome, PROTOCOL_VERSION};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, noting the largest single allocation of each thread.
struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations while the thread's locals are torn down are not counted.
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is passed on to `System` unchanged; `note` neither allocates nor panics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The largest allocation this thread makes while running `f`.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

/// Mostly intact, sometimes mutated.
fn maybe_mutate(rng: &mut ChaCha8Rng, v: Vec<u8>) -> Vec<u8> {
    if rng.gen_bool(0.5) {
        mutate(rng, v)
    } else {
        v
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
            lsn_end: Lsn(start + rng.gen_range(1..100)),
            kind,
        },
        base_full: (kind == ArtifactKind::Incremental).then(|| Lsn(rng.gen_range(0..start + 1))),
        created_utc: UtcMillis(rng.gen_range(0..4_000_000_000_000)),
        size: rng.gen_range(0..1 << 20),
        checksum: Checksum(rng.gen()),
        retry: rng.gen_range(0..5),
    }
}

/// A frame of every kind the protocol has.
fn frame(rng: &mut ChaCha8Rng) -> Frame {
    let peer = if rng.gen_bool(0.5) {
        Peer::Site(SiteId(rng.gen_range(0..3)))
    } else {
        Peer::Arbiter
    };
    let protocol = if rng.gen_bool(0.9) {
        PROTOCOL_VERSION
    } else {
        rng.gen()
    };
    match rng.gen_range(0..11) {
        0 => Frame::Hello(Hello {
            protocol,
            peer,
            link: if rng.gen() {
                LinkKind::Control
            } else {
                LinkKind::Ship
            },
        }),
        1 => Frame::Welcome(Welcome { protocol, peer }),
        2 => Frame::Close {
            reason: "idle timeout: é".into(),
        },
        3 => Frame::Ping,
        4 => Frame::Pong,
        5 => Frame::Message(if rng.gen() {
            Message::Query { req: rng.gen() }
        } else {
            Message::Heartbeat(Heartbeat {
                epoch: Epoch(rng.gen_range(1..5)),
                seq: rng.gen(),
                backups_paused: rng.gen(),
                writable: rng.gen(),
                positions: (0..rng.gen_range(0..4))
                    .map(|i| (DbId(i), Lsn(rng.gen())))
                    .collect(),
                write_rate_per_sec: rng.gen(),
            })
        }),
        6 => Frame::ShipOffer(meta(rng)),
        7 => Frame::ShipResume {
            offset: rng.gen_range(0..1 << 30),
        },
        8 => Frame::Chunk(random_bytes(rng, 64).into()),
        9 => Frame::ShipEnd,
        _ => Frame::ShipDone {
            computed: Checksum(rng.gen()),
        },
    }
}

fn frame_bytes(f: &Frame) -> Vec<u8> {
    let payload = f.encode_payload().expect("a frame encodes");
    let mut out = encode_header(f.kind(), &payload)
        .expect("a small frame has a header")
        .to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Mode 1 input of `wire_frames`: the kind byte, then the payload.
fn wire_single(f: &Frame) -> Vec<u8> {
    let payload = f.encode_payload().expect("a frame encodes");
    let kind_index = FrameKind::ALL
        .iter()
        .position(|k| *k == f.kind())
        .expect("every kind is in ALL") as u8;
    [vec![1, kind_index], payload].concat()
}

#[test]
fn wire_frames_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7769_7265);
    for i in 0..3_000 * scale() {
        let case = match i % 6 {
            // Arbitrary bytes in every mode.
            0 => random_bytes(&mut rng, 200),
            // Streams of real frames, intact or damaged.
            1 | 2 => {
                let mut stream = vec![0];
                for _ in 0..rng.gen_range(1..4) {
                    stream.extend(frame_bytes(&frame(&mut rng)));
                }
                maybe_mutate(&mut rng, stream)
            }
            // A valid frame around a real payload, intact or damaged.
            3 | 4 => {
                let single = wire_single(&frame(&mut rng));
                let payload = maybe_mutate(&mut rng, single[2..].to_vec());
                [single[..2].to_vec(), payload].concat()
            }
            // Short streams and the ship bookkeeping.
            _ => {
                let mode = if rng.gen() { 3 } else { 4 };
                [vec![mode], random_bytes(&mut rng, 120)].concat()
            }
        };
        run_case("wire_frames", i, &case, targets::wire_frames);
    }
}

/// A header that announces the largest payload, and a few bytes of it: the reader must not
/// reserve the announced length before the bytes arrive (it used to: 4 MiB per such header).
#[test]
fn a_frame_that_announces_more_than_it_sends_costs_what_it_sends() {
    // Mode 3, kind 0, length choice 0 (MAX_FRAME_LEN), a checksum, then 100 payload bytes.
    let mut case = vec![3, 0, 0, 1, 2, 3, 4];
    case.extend_from_slice(&[0x5a; 100]);
    let largest = largest_allocation(|| targets::wire_frames(&case));
    assert!(
        largest < (MAX_FRAME_LEN as usize) / 8,
        "reading a 100-byte stream that announces {MAX_FRAME_LEN} bytes allocated {largest} \
         bytes at once"
    );
}

/// Sample requests of the shapes the status server sees.
const REQUESTS: [&[u8]; 5] = [
    b"GET /status HTTP/1.1\r\nHost: 127.0.0.1:7480\r\n\r\n",
    b"GET /metrics?format=prometheus&x=a+b HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
    b"POST /switchover?to=1 HTTP/1.1\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
    b"POST /ack HTTP/1.1\ncontent-length:2\n\n{}",
    b"GET /health HTTP/1.0\r\n\r\n",
];

#[test]
fn http_request_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6874_7470);
    for i in 0..3_000 * scale() {
        let case = match i % 5 {
            0 => random_bytes(&mut rng, 200),
            1 | 2 => {
                let req = REQUESTS[rng.gen_range(0..REQUESTS.len())].to_vec();
                [vec![0], maybe_mutate(&mut rng, req)].concat()
            }
            3 => [vec![1], random_bytes(&mut rng, 300)].concat(),
            // Fewer of these: each builds a request over a limit (8 KiB lines, 100 headers).
            _ if i % 15 == 4 => [vec![2], random_bytes(&mut rng, 64)].concat(),
            _ => [vec![1], random_bytes(&mut rng, 60)].concat(),
        };
        run_case("http_request", i, &case, targets::http_request);
    }
}

/// The manifest JSON the crate writes, by hand (the target's structured mode builds the same;
/// `manifests_structured_mode_matches_the_crate_encoding` below holds them to the crate's).
fn manifest_json(m: &ArtifactMeta, db: &str) -> Vec<u8> {
    format!(
        "{{\"format_version\":1,\"db\":\"{db}\",\"db_id\":{},\"kind\":\"{}\",\"epoch\":{},\
         \"lsn_start\":{},\"lsn_end\":{},\"base_full\":{},\"created_utc_ms\":{},\"size\":{},\
         \"checksum\":\"{:016x}\",\"retry\":{}}}",
        m.key.db.0,
        m.key.kind.name_word(),
        m.key.epoch.0,
        m.key.lsn_start.0,
        m.key.lsn_end.0,
        m.base_full.map_or("null".to_string(), |l| l.0.to_string()),
        m.created_utc.0,
        m.size,
        m.checksum.0,
        m.retry
    )
    .into_bytes()
}

#[test]
fn manifests_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6d61_6e69);
    for i in 0..2_000 * scale() {
        let case = match i % 4 {
            // Structured manifests (odd modes), any extras.
            0 | 1 => {
                let mode = (rng.gen::<u8>() & 6) | 1;
                [vec![mode], random_bytes(&mut rng, 120)].concat()
            }
            // Raw manifests: real ones (of another artifact's size), intact or damaged.
            2 => {
                let m = meta(&mut rng);
                let json = manifest_json(&m, if rng.gen() { "sales" } else { "app" });
                let mode = rng.gen::<u8>() & 6;
                // No artifact bytes (a zero count), the seed-convention name, the manifest.
                [vec![mode, 0, 1], maybe_mutate(&mut rng, json)].concat()
            }
            _ => random_bytes(&mut rng, 200),
        };
        run_case("manifests", i, &case, targets::manifests);
    }
}

#[test]
fn journal_dir_over_a_bounded_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6a64_6972);
    for i in 0..1_000 * scale() {
        let case = random_bytes(&mut rng, 160);
        run_case("journal_dir", i, &case, targets::journal_dir);
    }
}

/// Write the seed corpus of these targets (`fuzz/seeds/<target>/`): small valid inputs of each
/// mode. Run by hand after changing a body's encoding:
/// `cargo test -p lifeboat-fuzz-targets --test bounded_io -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes into fuzz/seeds; run by hand"]
fn write_seed_corpus() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x7365_6564);
    let hello = Frame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        peer: Peer::Site(SiteId(1)),
        link: LinkKind::Ship,
    });
    let offer = Frame::ShipOffer(meta(&mut rng));
    let heartbeat = Frame::Message(Message::Heartbeat(Heartbeat {
        epoch: Epoch(2),
        seq: 17,
        backups_paused: false,
        writable: true,
        positions: vec![(DbId(0), Lsn(41)), (DbId(1), Lsn(7))],
        write_rate_per_sec: 120,
    }));
    let mut stream = vec![0];
    for f in [
        hello.clone(),
        Frame::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            peer: Peer::Arbiter,
        }),
        Frame::Ping,
        Frame::ShipResume { offset: 4096 },
        Frame::Chunk(b"artifact bytes".to_vec().into()),
        Frame::ShipEnd,
        Frame::ShipDone {
            computed: Checksum(0x9c1e_5f0a_2b7d_4e33),
        },
    ] {
        stream.extend(frame_bytes(&f));
    }
    // Mode 3: a Message header announcing 200 bytes (any checksum), then 26.
    let mut short = vec![3, 5, 3, 200, 0, 0, 0, 1, 2, 3, 4];
    short.extend_from_slice(b"a payload that stops early");
    let wire: Vec<(&str, Vec<u8>)> = vec![
        ("hello", wire_single(&hello)),
        ("ship-offer", wire_single(&offer)),
        ("heartbeat", wire_single(&heartbeat)),
        ("handshake-and-transfer-stream", stream),
        (
            "framed-stream",
            [vec![2], random_bytes(&mut rng, 48)].concat(),
        ),
        ("announces-more-than-it-sends", short),
        (
            "ship-bookkeeping",
            vec![4, 1, 3, 0, 1, 0, 0, 0, 16, 2, 0, 1, 0, 0, 9],
        ),
    ];

    let http: Vec<(&str, Vec<u8>)> = vec![
        ("get-status", [vec![0], REQUESTS[0].to_vec()].concat()),
        (
            "get-metrics-query",
            [vec![0], REQUESTS[1].to_vec()].concat(),
        ),
        ("post-with-body", [vec![0], REQUESTS[2].to_vec()].concat()),
        ("bare-newlines", [vec![0], REQUESTS[3].to_vec()].concat()),
        (
            "well-formed",
            [vec![1], random_bytes(&mut rng, 40)].concat(),
        ),
        ("too-many-headers", vec![2, 0, 3, 2, b'k']),
        ("body-too-large", vec![2, 1, 0, 3, 1, 2, 3, 4]),
        ("short-body", vec![2, 1, 5, 4, 3, b'a', b'b', b'c']),
    ];

    let m = meta(&mut rng);
    let manifests: Vec<(&str, Vec<u8>)> = vec![
        (
            "raw-valid-manifest",
            [vec![0, 0, 1], manifest_json(&m, "sales")].concat(),
        ),
        ("structured", [vec![1], random_bytes(&mut rng, 48)].concat()),
        (
            "structured-with-extras",
            [vec![3], random_bytes(&mut rng, 48)].concat(),
        ),
        (
            "structured-artifact-missing",
            [vec![5], random_bytes(&mut rng, 48)].concat(),
        ),
    ];

    // See `journal_dir`'s doc for the layout: journal (base choice, base, kind, records), the
    // snapshot's next_seq, the snapshot, the extra files.
    let journal: Vec<(&str, Vec<u8>)> = vec![
        // Base 3, a Tick and a WritePosition; a site snapshot at 4 after one Tick.
        (
            "journal-and-snapshot",
            vec![
                0, 1, 3, 0, 5, 2, 10, 0, 0, 0, 0, 20, 0, 0, 0, 2, 1, 41, 0, 0, 0, 0, 0, 0, 0, 2, 1,
                7, 0, 1, 0, 0,
            ],
        ),
        ("empty-directory", vec![0, 1, 0, 0, 0, 0, 0, 0]),
        // Base 0, two records, cut at byte 30; no snapshot.
        (
            "torn-journal",
            vec![0, 1, 0, 0, 3, 2, 1, 0, 0, 0, 0, 2, 0, 0, 0, 1, 30, 0, 0, 0],
        ),
        (
            "arbiter-snapshot-no-journal",
            vec![1, 1, 0, 0, 0, 5, 9, 0, 0, 0, 0, 0, 0, 0, 7, 0],
        ),
        (
            "garbage-and-extra-files",
            [
                vec![0, 1, 0, 0, 2, 8],
                b"LBJRNL\0\0".to_vec(),
                vec![
                    0, 3, 3, 0, 4, 9, 2, 0, 3, 97, 98, 99, 2, 4, 46, 46, 47, 120, 2, 104, 105,
                ],
            ]
            .concat(),
        ),
    ];

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for (target, seeds) in [
        ("wire_frames", wire),
        ("http_request", http),
        ("manifests", manifests),
        ("journal_dir", journal),
    ] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("the seed directory can be created");
        for (name, bytes) in seeds {
            assert!(
                bytes.len() < 4096,
                "{target}/{name} is too large for a seed"
            );
            run_case(
                target,
                0,
                &bytes,
                targets::target(target).expect("a target"),
            );
            std::fs::write(dir.join(name), bytes).expect("a seed can be written");
        }
    }
}

/// The structured mode of `manifests` writes the JSON the crate writes: a manifest written by
/// `driver::manifest::write_manifest` reads back through the hand-rolled layout used above.
#[test]
fn manifest_layout_matches_the_crate_encoding() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x6c61_796f);
    let dir = std::env::temp_dir().join(format!("lifeboat-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    for _ in 0..8 {
        let m = meta(&mut rng);
        let artifact = dir.join("sales_2026_11_22_03_05_00_tlog_0");
        let manifest = lifeboat_io_tokio::drivers::Manifest::from_meta(&m, "sales");
        lifeboat_io_tokio::drivers::manifest::write_manifest(&artifact, &manifest)
            .expect("a manifest is written");
        let written = std::fs::read(dir.join("sales_2026_11_22_03_05_00_tlog_0.manifest"))
            .expect("the manifest is readable");
        assert_eq!(
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(&manifest_json(&m, "sales"))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
