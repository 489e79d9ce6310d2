//! End-to-end specifications of the transport: real sockets on 127.0.0.1, real files.

use super::frame::{encode_frame, FrameKind, MAX_FRAME_LEN};
use super::inbox::{artifact_file_name, manifest_path, read_manifest};
use super::link::dial;
use super::testkit::{Fault, Proxy};
use super::wire::{Frame, FrameReader, Hello, LinkKind, PROTOCOL_VERSION};
use super::*;
use lifeboat_core::{ArtifactKey, ArtifactKind, DbId, Epoch, Lsn, SiteId, UtcMillis};
use rand::{RngCore, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use xxhash_rust::xxh3::xxh3_64;

const WAIT: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;
const PRIMARY: Peer = Peer::Site(SiteId(0));
const SECONDARY: Peer = Peer::Site(SiteId(1));

fn config() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(5),
        keepalive_every: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(1),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        chunk_size: 256 * 1024,
        window: 4,
        tls: None,
    }
}

/// The recovery site: a listener with an inbox, and the events it reports.
struct Secondary {
    listener: Listener,
    events: mpsc::Receiver<Event>,
    _dir: TempDir,
}

async fn secondary() -> Secondary {
    let addr = "127.0.0.1:0";
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(dir.path().join("inbox"), vec!["sales".into()]).unwrap();
    let (tx, events) = mpsc::channel(64);
    let listener = Listener::bind(addr, SECONDARY, inbox, config(), tx)
        .await
        .unwrap();
    Secondary {
        listener,
        events,
        _dir: dir,
    }
}

fn primary(addr: impl ToString, cfg: TransportConfig) -> (Transport, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(64);
    (Transport::connect(addr.to_string(), PRIMARY, cfg, tx), rx)
}

/// An artifact file of `size` random bytes in `dir`, with its manifest's meta.
fn artifact(dir: &Path, size: u64, seed: u64) -> (ArtifactMeta, std::path::PathBuf) {
    let mut bytes = vec![0u8; size as usize];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut bytes);
    let meta = ArtifactMeta {
        key: ArtifactKey {
            db: DbId(0),
            epoch: Epoch(1),
            lsn_start: Lsn(seed * 100),
            lsn_end: Lsn(seed * 100 + 100),
            kind: ArtifactKind::Log,
        },
        base_full: None,
        created_utc: UtcMillis(1_795_316_700_000 + seed as i64 * 1000),
        size,
        checksum: Checksum(xxh3_64(&bytes)),
        retry: 0,
    };
    let path = dir.join(artifact_file_name(&meta, "sales"));
    std::fs::write(&path, &bytes).unwrap();
    (meta, path)
}

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the event channel is open")
}

async fn next_artifact(events: &mut mpsc::Receiver<Event>) -> (ArtifactMeta, Checksum, PathBuf) {
    loop {
        if let Event::ArtifactReceived {
            meta,
            computed,
            path,
            from,
        } = next_event(events).await
        {
            assert_eq!(from, PRIMARY);
            return (meta, computed, path);
        }
    }
}

fn assert_same_file(a: &Path, b: &Path) {
    let (a_bytes, b_bytes) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        a_bytes == b_bytes,
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

fn partial_files(inbox: &Path) -> Vec<String> {
    std::fs::read_dir(inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

fn partial_len(inbox: &Path) -> u64 {
    partial_files(inbox)
        .iter()
        .map(|name| std::fs::metadata(inbox.join(name)).map_or(0, |m| m.len()))
        .sum()
}

#[tokio::test]
async fn a_message_round_trips_from_dialer_to_listener_and_back() {
    let mut site = secondary().await;
    let (transport, mut replies) = primary(site.listener.local_addr(), config());
    transport
        .send_message(Message::Query { req: 7 })
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut site.events).await,
        Event::Message {
            from: PRIMARY,
            msg: Message::Query { req: 7 }
        }
    );
    assert_eq!(transport.remote(), Some(SECONDARY));
    assert_eq!(site.listener.connected_peers(), vec![PRIMARY]);
    site.listener
        .send_to(PRIMARY, Message::RequestFull { db: None })
        .await
        .unwrap();
    let reply = next_event(&mut replies).await;
    assert_eq!(
        reply,
        Event::Message {
            from: SECONDARY,
            msg: Message::RequestFull { db: None }
        }
    );
    assert!(matches!(
        reply.to_input(),
        Some(Input::Message {
            from: SECONDARY,
            ..
        })
    ));
}

#[tokio::test]
async fn sending_to_a_peer_without_a_control_link_says_so() {
    let site = secondary().await;
    let err = site
        .listener
        .send_to(Peer::Arbiter, Message::Query { req: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SendError::NoLinkTo {
                peer: Peer::Arbiter
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_control_link_survives_idle_periods_thanks_to_keepalives() {
    let mut site = secondary().await;
    let (transport, _replies) = primary(site.listener.local_addr(), config());
    assert_eq!(transport.wait_connected(WAIT).await, Some(SECONDARY));
    tokio::time::sleep(config().idle_timeout * 3).await;
    assert_eq!(site.listener.connected_peers(), vec![PRIMARY]);
    transport
        .send_message(Message::Query { req: 1 })
        .await
        .unwrap();
    assert!(matches!(
        next_event(&mut site.events).await,
        Event::Message { .. }
    ));
}

#[tokio::test]
async fn a_5_mib_artifact_arrives_byte_identical_with_its_checksum_and_manifest() {
    let mut site = secondary().await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 5 * MIB, 1);
    let (transport, _) = primary(site.listener.local_addr(), config());

    let shipped = transport.ship(meta, &source).await.unwrap();
    assert_eq!(shipped.resumed_from, 0);
    assert_eq!(shipped.bytes_sent, 5 * MIB);
    assert_eq!(shipped.computed, meta.checksum);

    let (got, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(got, meta);
    assert_eq!(computed, meta.checksum);
    assert_eq!(
        computed,
        Checksum(xxh3_64(&std::fs::read(&source).unwrap()))
    );
    assert_same_file(&source, &path);
    assert_eq!(path.file_name(), source.file_name());
    assert_eq!(read_manifest(&manifest_path(&path)).unwrap().meta(), meta);
    assert!(partial_files(site.listener.inbox().dir()).is_empty());
}

#[tokio::test]
async fn an_empty_artifact_ships_too() {
    let mut site = secondary().await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 0, 2);
    let (transport, _) = primary(site.listener.local_addr(), config());
    transport.ship(meta, &source).await.unwrap();
    let (_, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(computed, meta.checksum);
    assert_eq!(std::fs::metadata(path).unwrap().len(), 0);
}

/// Wait until the receiver holds at least `bytes` of partial transfers.
async fn wait_partial(site: &Secondary, bytes: u64) {
    let inbox = site.listener.inbox().dir().to_path_buf();
    let deadline = tokio::time::Instant::now() + WAIT;
    while partial_len(&inbox) < bytes {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no partial file kept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The transport never retries a ship on its own: each `ship` call is one attempt over one
/// connection, and each failed attempt comes back once (the agent reports it to the core as
/// `ShipFailed`; only the core's backoff schedule ships again). The attempt after the cuts
/// resumes where the receiver stopped and completes with the right checksum.
#[tokio::test]
async fn every_ship_is_one_attempt_and_each_failed_attempt_is_returned_once() {
    let mut site = secondary().await;
    let proxy = Proxy::start(
        site.listener.local_addr(),
        Fault::CutAfter(2 * MIB + 1000),
        2,
    )
    .await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 5 * MIB, 3);
    let (transport, _) = primary(proxy.addr, config());

    for attempt in 1..=2 {
        let err = transport.ship(meta, &source).await.unwrap_err();
        assert!(err.kind.is_retryable(), "{err}");
        assert_eq!(
            proxy.fired(),
            attempt,
            "one connection, one cut, per attempt"
        );
        wait_partial(&site, 2 * MIB).await;
    }
    let shipped = transport.ship(meta, &source).await.unwrap();
    assert_eq!(proxy.fired(), 2);
    assert!(
        shipped.resumed_from > 0 && shipped.resumed_from < meta.size,
        "{shipped:?}"
    );
    assert_eq!(shipped.resumed_from % config().chunk_size as u64, 0);
    assert_eq!(shipped.bytes_sent, meta.size - shipped.resumed_from);
    assert_eq!(shipped.computed, meta.checksum);

    let (_, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(computed, meta.checksum);
    assert_same_file(&source, &path);
}

/// Logs every second reuse one ship link instead of paying a TCP and TLS handshake each; a kept
/// link that the receiver closed meanwhile (its idle timeout) is replaced by a new one within
/// the same `ship`, and a link idle for more than half the idle timeout is not used at all.
#[tokio::test]
async fn consecutive_ships_reuse_one_link_and_a_link_closed_while_kept_is_replaced() {
    let mut site = secondary().await;
    let proxy = Proxy::start(site.listener.local_addr(), Fault::CutAfter(u64::MAX), 0).await;
    let outbox = tempfile::tempdir().unwrap();
    // The sender would keep its links for 5 s; the receiver closes them after 1 s.
    let patient = TransportConfig {
        idle_timeout: Duration::from_secs(10),
        ..config()
    };
    let (transport, _) = primary(proxy.addr, patient);
    // The control link goes through the proxy too.
    transport.wait_connected(WAIT).await.unwrap();
    let base = proxy.accepted();
    let ship = |seed| {
        let (meta, source) = artifact(outbox.path(), 300 * 1024, seed);
        let transport = &transport;
        async move {
            let shipped = transport.ship(meta, &source).await.unwrap();
            assert_eq!(shipped.computed, meta.checksum);
            (meta, source)
        }
    };
    for seed in 10..13 {
        let (meta, source) = ship(seed).await;
        let (got, _, path) = next_artifact(&mut site.events).await;
        assert_eq!(got, meta);
        assert_same_file(&source, &path);
    }
    assert_eq!(proxy.accepted() - base, 1, "three ships over one link");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (meta, source) = ship(13).await;
    let (got, _, path) = next_artifact(&mut site.events).await;
    assert_eq!(got, meta);
    assert_same_file(&source, &path);
    assert_eq!(
        proxy.accepted() - base,
        2,
        "the closed link was replaced once"
    );

    // With the receiver's own timeout, a link idle for over half of it is left alone.
    let (transport, _) = primary(proxy.addr, config());
    transport.wait_connected(WAIT).await.unwrap();
    let base = proxy.accepted();
    let (meta, source) = artifact(outbox.path(), 1024, 14);
    transport.ship(meta, &source).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (meta, source) = artifact(outbox.path(), 1024, 15);
    transport.ship(meta, &source).await.unwrap();
    assert_eq!(
        proxy.accepted() - base,
        2,
        "a new link for a ship after 0.6 s of 1 s"
    );
}

#[tokio::test]
async fn a_failed_ship_leaves_a_prefix_that_the_next_ship_resumes_from() {
    let mut site = secondary().await;
    let proxy = Proxy::start(site.listener.local_addr(), Fault::CutAfter(3 * MIB), 1).await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 5 * MIB, 4);
    let (transport, _) = primary(proxy.addr, config());

    let err = transport.ship(meta, &source).await.unwrap_err();
    assert!(err.kind.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("transaction log of db#0"), "{text}");
    assert!(text.contains(&source.display().to_string()), "{text}");

    // The receiver keeps what arrived before the cut (11 whole chunks of the 3 MiB).
    wait_partial(&site, 2 * MIB).await;

    let shipped = transport.ship(meta, &source).await.unwrap();
    assert!(shipped.resumed_from >= 2 * MIB, "{shipped:?}");
    assert_eq!(shipped.computed, meta.checksum);
    let (_, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(computed, meta.checksum);
    assert_same_file(&source, &path);
}

#[tokio::test]
async fn a_byte_flipped_on_the_wire_fails_the_frame_crc_and_the_retry_delivers_the_right_bytes() {
    let mut site = secondary().await;
    let proxy = Proxy::start(site.listener.local_addr(), Fault::FlipByte(3 * MIB / 2), 1).await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 5 * MIB, 5);
    let (transport, _) = primary(proxy.addr, config());

    // The damaged attempt fails (the receiver refuses the frame); the core's next ship resumes.
    let err = transport.ship(meta, &source).await.unwrap_err();
    assert_eq!(proxy.fired(), 1, "{err}");
    wait_partial(&site, MIB).await;
    let shipped = transport.ship(meta, &source).await.unwrap();
    assert_eq!(proxy.fired(), 1);
    // Every chunk before the damaged one passed its checksum and was kept.
    assert!(shipped.resumed_from >= MIB, "{shipped:?}");
    assert_eq!(shipped.computed, meta.checksum);
    let (_, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(computed, meta.checksum);
    assert_same_file(&source, &path);
}

#[tokio::test]
async fn bytes_corrupted_beyond_the_frames_reach_are_reported_with_a_different_computed_checksum() {
    let mut site = secondary().await;
    let proxy = Proxy::start(site.listener.local_addr(), Fault::CorruptChunkResealed, 1).await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 2 * MIB, 6);
    let (transport, _) = primary(proxy.addr, config());

    // The transport delivers and reports; rejecting is the core's decision.
    let shipped = transport.ship(meta, &source).await.unwrap();
    assert_eq!(proxy.fired(), 1);
    assert_ne!(shipped.computed, meta.checksum);
    let (got, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(got.checksum, meta.checksum);
    assert_ne!(computed, meta.checksum);
    let received = std::fs::read(&path).unwrap();
    assert_eq!(computed, Checksum(xxh3_64(&received)));
    let original = std::fs::read(&source).unwrap();
    let differing = original
        .iter()
        .zip(&received)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(differing, 1);
}

#[tokio::test]
async fn a_file_whose_size_differs_from_its_manifest_is_not_shipped() {
    let site = secondary().await;
    let outbox = tempfile::tempdir().unwrap();
    let (mut meta, source) = artifact(outbox.path(), 1000, 7);
    meta.size += 1;
    let (transport, _) = primary(site.listener.local_addr(), config());
    let err = transport.ship(meta, &source).await.unwrap_err();
    assert!(
        matches!(
            err.kind,
            ShipErrorKind::SizeMismatch {
                actual: 1000,
                expected: 1001
            }
        ),
        "{err}"
    );
}

/// Two artifacts of one database and kind made in the same second have the same conventional
/// name. The second is kept under the next free name, never refused (that left a hole nothing
/// could fill) and never over the first.
#[tokio::test]
async fn a_different_artifact_with_the_same_name_is_kept_under_the_next_free_name() {
    let mut site = secondary().await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 1000, 8);
    let (transport, _) = primary(site.listener.local_addr(), config());
    transport.ship(meta, &source).await.unwrap();
    let (_, _, path) = next_artifact(&mut site.events).await;

    let mut twin = meta;
    twin.key.lsn_start = meta.key.lsn_end;
    twin.key.lsn_end = Lsn(meta.key.lsn_end.0 + 5);
    transport.ship(twin, &source).await.unwrap();
    let (got, _, twin_path) = next_artifact(&mut site.events).await;
    assert_eq!(got, twin);
    assert_ne!(twin_path, path);
    assert_eq!(read_manifest(&manifest_path(&path)).unwrap().meta(), meta);
    assert_eq!(
        read_manifest(&manifest_path(&twin_path)).unwrap().meta(),
        twin
    );
    // Shipped again, the twin replaces itself under the name it has, not a third one.
    transport.ship(twin, &source).await.unwrap();
    let (_, _, again) = next_artifact(&mut site.events).await;
    assert_eq!(again, twin_path);
}

#[tokio::test]
async fn a_newer_offer_of_the_same_artifact_takes_over_a_half_open_transfer() {
    let mut site = secondary().await;
    let addr = site.listener.local_addr().to_string();
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 3 * MIB, 9);
    let bytes = std::fs::read(&source).unwrap();
    let chunk = config().chunk_size;

    // A sender that stalls after two chunks, its connection still open.
    let mut stale = dial(&addr, PRIMARY, LinkKind::Ship, &config())
        .await
        .unwrap();
    stale.writer.send(&Frame::ShipOffer(meta)).await.unwrap();
    assert_eq!(
        stale.reader.next(WAIT).await.unwrap(),
        Frame::ShipResume { offset: 0 }
    );
    stale.writer.send_chunk(&bytes[..chunk]).await.unwrap();
    stale
        .writer
        .send_chunk(&bytes[chunk..2 * chunk])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (transport, _) = primary(&addr, config());
    let shipped = transport.ship(meta, &source).await.unwrap();
    assert_eq!(shipped.resumed_from, 2 * chunk as u64);
    assert_eq!(shipped.computed, meta.checksum);
    let (_, computed, path) = next_artifact(&mut site.events).await;
    assert_eq!(computed, meta.checksum);
    assert_same_file(&source, &path);
    match stale.reader.next(WAIT).await {
        Ok(Frame::Close { reason }) => assert!(reason.contains("newer offer"), "{reason}"),
        other => panic!("expected a Close frame, got {other:?}"),
    }
}

/// Open a raw ship link (handshake done) to hand-craft what follows.
async fn raw_link(addr: SocketAddr) -> (FrameReader<OwnedReadHalf>, OwnedWriteHalf) {
    let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: Peer::Site(SiteId(9)),
        link: LinkKind::Ship,
    };
    w.write_all(&encode_frame(FrameKind::Hello, &hello).unwrap())
        .await
        .unwrap();
    let mut reader = FrameReader::new(r);
    assert!(matches!(
        reader.next(WAIT).await.unwrap(),
        Frame::Welcome(_)
    ));
    (reader, w)
}

/// The listener closes the connection with a `Close` frame whose reason contains `needle`.
async fn assert_closed_because(reader: &mut FrameReader<OwnedReadHalf>, needle: &str) {
    match reader.next(WAIT).await {
        Ok(Frame::Close { reason }) => {
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}")
        }
        other => panic!("expected Close containing {needle:?}, got {other:?}"),
    }
    assert!(reader.next(WAIT).await.is_err(), "the connection is closed");
}

use std::net::SocketAddr;

#[tokio::test]
async fn bad_frames_close_the_connection_with_a_reason_and_the_listener_keeps_serving() {
    let mut site = secondary().await;
    let addr = site.listener.local_addr();
    let message = encode_frame(FrameKind::Message, &Message::Query { req: 1 }).unwrap();

    let mut bad_crc = message.clone();
    bad_crc[8] ^= 0xFF;
    let mut oversized = message.clone();
    oversized[4..8].copy_from_slice(&(MAX_FRAME_LEN + 1).to_be_bytes());
    let truncated = message[..message.len() - 2].to_vec();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: lifeboat\r\n\r\n".to_vec(),
            "not a lifeboat frame",
        ),
        ("bad crc", bad_crc, "fails its checksum"),
        ("oversized", oversized, "exceeds the limit"),
        ("truncated", truncated, "truncated frame"),
    ];
    for (what, bytes, needle) in cases {
        let (mut reader, mut w) = raw_link(addr).await;
        w.write_all(&bytes).await.unwrap();
        w.shutdown().await.unwrap(); // the truncated case needs the end of stream
        assert_closed_because(&mut reader, needle).await;
        eprintln!("{what}: closed as expected");
    }

    // Garbage instead of a handshake is refused the same way.
    let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    w.write_all(&[0xAB; 64]).await.unwrap();
    let mut reader = FrameReader::new(r);
    assert_closed_because(&mut reader, "handshake: not a lifeboat frame").await;

    // Nothing was reported, and the listener still serves everyone else.
    let (transport, _) = primary(addr, config());
    transport
        .send_message(Message::Query { req: 2 })
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut site.events).await,
        Event::Message {
            from: PRIMARY,
            msg: Message::Query { req: 2 }
        }
    );
}

#[tokio::test]
async fn a_peer_speaking_another_protocol_version_is_refused_with_a_reason() {
    let site = secondary().await;
    let (r, mut w) = TcpStream::connect(site.listener.local_addr())
        .await
        .unwrap()
        .into_split();
    let hello = Hello {
        protocol: PROTOCOL_VERSION + 1,
        peer: PRIMARY,
        link: LinkKind::Control,
    };
    w.write_all(&encode_frame(FrameKind::Hello, &hello).unwrap())
        .await
        .unwrap();
    let mut reader = FrameReader::new(r);
    let why = format!("protocol version {} is not supported", PROTOCOL_VERSION + 1);
    assert_closed_because(&mut reader, &why).await;
}

#[tokio::test]
async fn the_dialer_reconnects_after_the_listener_restarts() {
    let site = secondary().await;
    let addr = site.listener.local_addr();
    let (transport, _) = primary(addr, config());
    assert_eq!(transport.wait_connected(WAIT).await, Some(SECONDARY));
    drop(site);

    // The old listener's socket closes once its task is dropped: retry the bind briefly.
    let mut site = loop {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path(), vec![]).unwrap();
        let (tx, events) = mpsc::channel(64);
        match Listener::bind(addr, SECONDARY, inbox, config(), tx).await {
            Ok(listener) => {
                break Secondary {
                    listener,
                    events,
                    _dir: dir,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("rebinding {addr}: {e}"),
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no reconnection");
        // A message written into the old, dying link may be lost: the engines re-send.
        let _ = transport.send_message(Message::Query { req: 3 }).await;
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(100), site.events.recv()).await
        {
            assert!(matches!(event, Event::Message { from: PRIMARY, .. }));
            break;
        }
    }
}

#[tokio::test]
async fn a_message_to_an_unreachable_peer_fails_after_the_connect_timeout() {
    // Bind then drop, so the port is (very likely) closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = TransportConfig {
        connect_timeout: Duration::from_millis(200),
        ..config()
    };
    let (transport, _) = primary(addr, cfg);
    let err = transport
        .send_message(Message::Query { req: 4 })
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::NotConnected { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_report_byte_progress_while_a_large_artifact_moves_and_forget_it_after() {
    let mut site = secondary().await;
    let outbox = tempfile::tempdir().unwrap();
    let (meta, source) = artifact(outbox.path(), 24 * MIB, 9);
    let cfg = TransportConfig {
        chunk_size: 64 * 1024,
        ..config()
    };
    let (transport, _) = primary(site.listener.local_addr(), cfg);
    let sending = transport.transfers().clone();
    let receiving = site.listener.inbox().transfers().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for t in sending.snapshot().into_iter().chain(receiving.snapshot()) {
                    seen.push((t.direction, t.done, t.size));
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            seen
        })
    };
    transport.ship(meta, &source).await.unwrap();
    let _ = next_artifact(&mut site.events).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = sampler.await.unwrap();
    for dir in [Direction::Send, Direction::Receive] {
        let dones: Vec<u64> = seen.iter().filter(|s| s.0 == dir).map(|s| s.1).collect();
        assert!(
            dones.iter().any(|&d| d > 0 && d < 24 * MIB),
            "{dir:?}: no progress between 0 and the size was seen: {dones:?}"
        );
        assert!(dones.windows(2).all(|w| w[0] <= w[1]), "{dir:?}: {dones:?}");
        assert!(seen.iter().all(|s| s.2 == 24 * MIB));
    }
    assert!(transport.transfers().snapshot().is_empty());
    assert!(site.listener.inbox().transfers().snapshot().is_empty());
}

/// A header announcing `len` bytes of a `kind` frame (no payload follows).
fn announce(kind: FrameKind, len: u32) -> Vec<u8> {
    let mut header = encode_frame(kind, &Message::Query { req: 1 }).unwrap();
    header.truncate(super::frame::HEADER_LEN);
    header[4..8].copy_from_slice(&len.to_be_bytes());
    header
}

#[tokio::test]
async fn a_handshake_frame_larger_than_a_hello_is_refused_before_its_payload_is_read() {
    let site = secondary().await;
    let (r, mut w) = TcpStream::connect(site.listener.local_addr())
        .await
        .unwrap()
        .into_split();
    w.write_all(&announce(FrameKind::Hello, MAX_FRAME_LEN))
        .await
        .unwrap();
    let mut reader = FrameReader::new(r);
    let why = format!("exceeds the limit of {}", super::frame::HANDSHAKE_MAX_LEN);
    assert_closed_because(&mut reader, &why).await;
}

#[tokio::test]
async fn connections_beyond_the_handshake_cap_from_one_address_are_closed_at_once() {
    let site = secondary().await;
    let addr = site.listener.local_addr();
    // These connect and say nothing: each holds a place among the handshaking.
    let mut silent = Vec::new();
    for _ in 0..listener::MAX_HANDSHAKING_PER_ADDR {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // One more from the same address is closed without a word.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut extra, &mut buf))
        .await
        .expect("the extra connection is closed at once")
        .unwrap_or(0);
    assert_eq!(
        n, 0,
        "the extra connection got bytes instead of being closed"
    );
    // Once the silent ones are gone, a real peer is served.
    drop(silent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (transport, _) = primary(addr, config());
    transport
        .send_message(Message::Query { req: 3 })
        .await
        .unwrap();
}

#[tokio::test]
async fn large_frames_being_read_take_from_the_budget_and_give_it_back() {
    let site = secondary().await;
    let addr = site.listener.local_addr();
    let budget = super::listener::FRAME_BUDGET as usize;
    assert_eq!(site.listener.frame_budget_free(), budget);
    // Links that announce a 4 MiB chunk and send one byte of it: each one being read holds
    // 4 MiB of the budget; beyond it, links wait without reading.
    let holders = budget / MAX_FRAME_LEN as usize;
    let mut held = Vec::new();
    for _ in 0..holders + 2 {
        let (reader, mut w) = raw_link(addr).await;
        w.write_all(&announce(FrameKind::Chunk, MAX_FRAME_LEN))
            .await
            .unwrap();
        w.write_all(&[7u8]).await.unwrap();
        held.push((reader, w));
    }
    let spent = async {
        while site.listener.frame_budget_free() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, spent)
        .await
        .expect("the announced frames take the whole budget");
    // Gone (their links time out or close), they give it all back.
    drop(held);
    let back = async {
        while site.listener.frame_budget_free() < budget {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, back)
        .await
        .expect("closed links give their budget back");
}

#[tokio::test]
async fn a_path_ping_measures_round_trips_and_throughput_beside_a_live_control_link() {
    let mut s = secondary().await;
    let addr = s.listener.local_addr();
    let (p, _events) = primary(addr, config());
    assert_eq!(p.wait_connected(WAIT).await, Some(SECONDARY));
    let report = ping::ping_path(&addr.to_string(), PRIMARY, &config(), 3, 8 * MIB + 5)
        .await
        .unwrap();
    assert_eq!(report.peer, SECONDARY);
    assert_eq!(report.rtts.len(), 3);
    assert_eq!(report.bulk.map(|b| b.0), Some(8 * MIB + 5));
    assert!(report.mib_per_s().unwrap() > 0.0);
    // The ping had a link of its own: the control link carries messages as before.
    p.send_message(Message::Query { req: 7 }).await.unwrap();
    let got = tokio::time::timeout(WAIT, s.events.recv()).await.unwrap();
    assert!(matches!(
        got,
        Some(Event::Message {
            msg: Message::Query { req: 7 },
            ..
        })
    ));
    // Beyond the bound nothing is sent.
    let refused = ping::ping_path(
        &addr.to_string(),
        PRIMARY,
        &config(),
        1,
        ping::MAX_PING_BYTES + 1,
    )
    .await;
    assert!(matches!(refused, Err(ping::PingError::TooManyBytes(_))));
}

// ---- TLS: who a peer is comes from its certificate

const ARBITER_NAME: &str = "arbiter";

fn deployment_names() -> Names {
    Names {
        sites: vec!["primary".into(), "recovery".into()],
        arbiter: ARBITER_NAME.into(),
    }
}

/// A CA and key pairs for the primary, the recovery site and the arbiter.
fn deployment() -> crate::certs::Generated {
    let names = ["primary", "recovery", ARBITER_NAME].map(String::from);
    crate::certs::generate(&names, time::OffsetDateTime::now_utc(), 30).unwrap()
}

/// The TLS set-up of party `name` (acting as `me`) of deployment `g`.
fn tls_of(g: &crate::certs::Generated, name: &str, me: Peer) -> Arc<Tls> {
    Arc::new(g.tls(name, deployment_names(), me).unwrap())
}

fn with_tls(tls: Arc<Tls>) -> TransportConfig {
    TransportConfig {
        tls: Some(tls),
        ..config()
    }
}

async fn tls_secondary(g: &crate::certs::Generated) -> Secondary {
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(dir.path().join("inbox"), vec!["sales".into()]).unwrap();
    let (tx, events) = mpsc::channel(64);
    let cfg = with_tls(tls_of(g, "recovery", SECONDARY));
    let listener = Listener::bind("127.0.0.1:0", SECONDARY, inbox, cfg, tx)
        .await
        .unwrap();
    Secondary {
        listener,
        events,
        _dir: dir,
    }
}

/// Nothing reaches the listener's events for a while.
async fn assert_no_event(events: &mut mpsc::Receiver<Event>) {
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        panic!("no event expected, got {e:?}");
    }
}

fn refused(listener: &Listener, kind: &str) -> u64 {
    listener
        .refusals()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| n)
}

#[tokio::test]
async fn over_tls_messages_and_artifacts_flow_and_each_end_is_who_its_certificate_says() {
    let g = deployment();
    let mut site = tls_secondary(&g).await;
    let cfg = with_tls(tls_of(&g, "primary", PRIMARY));
    let (transport, _replies) = primary(site.listener.local_addr(), cfg);
    assert_eq!(transport.wait_connected(WAIT).await, Some(SECONDARY));
    transport
        .send_message(Message::Query { req: 7 })
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut site.events).await,
        Event::Message {
            from: PRIMARY,
            msg: Message::Query { req: 7 }
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let (meta, path) = artifact(dir.path(), 3 * MIB + 17, 4);
    let shipped = transport.ship(meta, &path).await.unwrap();
    let (got, computed, received) = next_artifact(&mut site.events).await;
    assert_eq!((got, computed), (meta, shipped.computed));
    assert_same_file(&path, &received);
}

#[tokio::test]
async fn a_hello_claiming_the_peer_identity_without_its_certificate_is_refused() {
    let g = deployment();
    let mut site = tls_secondary(&g).await;
    let addr = site.listener.local_addr();

    // 1. Plain TCP, a Hello that says "primary": no TLS, no link.
    let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: PRIMARY,
        link: LinkKind::Control,
    };
    w.write_all(&encode_frame(FrameKind::Hello, &hello).unwrap())
        .await
        .unwrap();
    let mut reader = FrameReader::new(r);
    assert!(
        reader.next(WAIT).await.is_err(),
        "no Welcome over plain TCP"
    );
    // A forged epoch notice on that connection reaches nobody.
    let _ = w
        .write_all(
            &encode_frame(
                FrameKind::Message,
                &Message::EpochNotice {
                    epoch: Epoch(77),
                    holder: SiteId(1),
                },
            )
            .unwrap(),
        )
        .await;

    // 2. A certificate named "primary" from another deployment's CA.
    let other = deployment();
    let (impostor, _) = primary(addr, with_tls(tls_of(&other, "primary", PRIMARY)));
    assert_eq!(
        impostor.wait_connected(Duration::from_millis(500)).await,
        None
    );
    drop(impostor);

    // 3. This deployment's arbiter certificate, with a Hello that claims the primary.
    let (liar, _) = primary(addr, with_tls(tls_of(&g, ARBITER_NAME, Peer::Arbiter)));
    assert_eq!(liar.wait_connected(Duration::from_millis(500)).await, None);
    drop(liar);

    assert_no_event(&mut site.events).await;
    assert_eq!(site.listener.connected_peers(), vec![]);
    assert!(refused(&site.listener, "tls handshake failed") >= 2);
    assert!(refused(&site.listener, "identity mismatch") >= 1);

    // The real primary still gets in, as itself.
    let (real, _) = primary(addr, with_tls(tls_of(&g, "primary", PRIMARY)));
    real.send_message(Message::Query { req: 1 }).await.unwrap();
    assert_eq!(
        next_event(&mut site.events).await,
        Event::Message {
            from: PRIMARY,
            msg: Message::Query { req: 1 }
        }
    );
}

#[tokio::test]
async fn a_listener_with_a_site_certificate_cannot_answer_as_the_arbiter() {
    // A holder of the recovery site's key listens where the primary dials the arbiter and
    // welcomes it as the arbiter: the primary refuses, so no `Granted` from it is ever taken as
    // the arbiter's.
    let g = deployment();
    let dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(dir.path().join("inbox"), vec!["sales".into()]).unwrap();
    let (tx, _events) = mpsc::channel(64);
    let fake = Listener::bind(
        "127.0.0.1:0",
        Peer::Arbiter,
        inbox,
        with_tls(tls_of(&g, "recovery", SECONDARY)),
        tx,
    )
    .await
    .unwrap();
    let cfg = with_tls(tls_of(&g, "primary", PRIMARY));
    let (transport, mut from_fake) = primary(fake.local_addr(), cfg.clone());
    assert_eq!(
        transport.wait_connected(Duration::from_millis(700)).await,
        None
    );
    assert!(from_fake.try_recv().is_err());
    let e = dial(
        &fake.local_addr().to_string(),
        PRIMARY,
        LinkKind::Ship,
        &cfg,
    )
    .await
    .err()
    .expect("refused");
    assert!(
        e.to_string().contains("certificate is Site(SiteId(1))'s"),
        "{e}"
    );
}

/// Write deployment `g`'s files for the recovery site into `dir` (as `lifeboat certs init`
/// lays them out), replacing what is there.
fn write_recovery_files(dir: &std::path::Path, g: &crate::certs::Generated) -> super::TlsFiles {
    let pem = &g.parties.iter().find(|(n, _)| n == "recovery").unwrap().1;
    let files = super::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("recovery.pem"),
        key: dir.join("recovery.key"),
    };
    std::fs::write(&files.ca, &g.ca.cert).unwrap();
    std::fs::write(&files.cert, &pem.cert).unwrap();
    std::fs::write(&files.key, &pem.key).unwrap();
    files
}

#[tokio::test]
async fn a_reload_takes_rotated_certificates_for_new_links_and_a_bad_file_changes_nothing() {
    let (old, new) = (deployment(), deployment());
    let dir = tempfile::tempdir().unwrap();
    let files = write_recovery_files(dir.path(), &old);
    let tls = Arc::new(Tls::load(&files, deployment_names(), SECONDARY).unwrap());
    let inbox_dir = tempfile::tempdir().unwrap();
    let inbox = Inbox::open(inbox_dir.path().join("inbox"), vec!["sales".into()]).unwrap();
    let (tx, mut events) = mpsc::channel(64);
    let listener = Listener::bind("127.0.0.1:0", SECONDARY, inbox, with_tls(tls.clone()), tx)
        .await
        .unwrap();
    let addr = listener.local_addr();
    let connects = |g: &crate::certs::Generated| {
        let (t, replies) = primary(addr, with_tls(tls_of(g, "primary", PRIMARY)));
        async move {
            let up = t.wait_connected(Duration::from_millis(700)).await;
            drop(replies);
            up.is_some()
        }
    };
    assert!(connects(&old).await, "the old deployment's primary gets in");
    assert!(!connects(&new).await, "the new CA is not trusted yet");

    // A half-written rotation (the key is garbage): the reload says which file, and the old
    // keys keep working.
    std::fs::write(&files.key, "not a key").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("recovery.key"), "{err}");
    assert_eq!(tls.generation(), 0);
    assert!(
        connects(&old).await,
        "still the old keys after a failed reload"
    );

    // The whole rotation: new links need the new CA, old-CA parties are refused.
    write_recovery_files(dir.path(), &new);
    tls.reload().unwrap();
    assert_eq!(tls.generation(), 1);
    assert!(connects(&new).await, "the new deployment's primary gets in");
    assert!(!connects(&old).await, "the old CA is not trusted any more");
    while events.try_recv().is_ok() {}
}

#[tokio::test]
async fn a_closed_impostor_link_does_not_unregister_the_real_site() {
    let g = deployment();
    let site = tls_secondary(&g).await;
    let addr = site.listener.local_addr();
    let (real, mut to_real) = primary(addr, with_tls(tls_of(&g, "primary", PRIMARY)));
    assert_eq!(real.wait_connected(WAIT).await, Some(SECONDARY));

    // Impostors claim the primary and hang up after half a second: one with another
    // deployment's "primary" certificate, one with this deployment's arbiter certificate.
    let other = deployment();
    for cfg in [
        with_tls(tls_of(&other, "primary", PRIMARY)),
        with_tls(tls_of(&g, ARBITER_NAME, Peer::Arbiter)),
    ] {
        let (impostor, _) = primary(addr, cfg);
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(impostor);
    }
    // And a raw TCP connection that sends a Hello as the primary, then closes.
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            peer: PRIMARY,
            link: LinkKind::Control,
        };
        let _ = s
            .write_all(&encode_frame(FrameKind::Hello, &hello).unwrap())
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The real primary's link is still the one registered: a message reaches it.
    assert_eq!(site.listener.connected_peers(), vec![PRIMARY]);
    site.listener
        .send_to(PRIMARY, Message::Query { req: 42 })
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            match to_real.recv().await {
                Some(Event::Message { msg, .. }) => return msg,
                Some(_) => continue,
                None => panic!("the real primary's events ended"),
            }
        }
    })
    .await
    .expect("the message reached the real primary");
    assert_eq!(got, Message::Query { req: 42 });
}

/// A service that sends back every byte it receives, then closes once the client has.
async fn echo_service() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Write `bytes` through `conn` and read everything back until the far end closes.
async fn round_trip(mut conn: TcpStream, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let (mut r, mut w) = conn.split();
    let write = async {
        w.write_all(bytes).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::time::timeout(WAIT, async { tokio::join!(write, read) })
        .await
        .expect("the tunnel neither relayed nor closed");
    back
}

#[tokio::test]
async fn a_tunnel_relays_a_tcp_connection_both_ways_to_the_listeners_service_over_tls() {
    let g = deployment();
    let site = tls_secondary(&g).await;
    site.listener
        .set_tunnel_targets(vec![Some(echo_service().await.to_string())]);
    let cfg = with_tls(tls_of(&g, "primary", PRIMARY));
    let remote = site.listener.local_addr().to_string();
    let tunnel = LocalTunnel::bind("127.0.0.1:0", remote, 0, PRIMARY, cfg)
        .await
        .unwrap();
    let mut bytes = vec![0u8; (3 * MIB + 5) as usize];
    rand::rngs::StdRng::seed_from_u64(9).fill_bytes(&mut bytes);
    // Two connections at once, each its own link; the end of the client's writes reaches the
    // service as an end of file and the service's close reaches the client.
    let (a, b) = tokio::join!(
        async {
            let c = TcpStream::connect(tunnel.local_addr()).await.unwrap();
            round_trip(c, &bytes).await
        },
        async {
            let c = TcpStream::connect(tunnel.local_addr()).await.unwrap();
            round_trip(c, b"hello").await
        }
    );
    assert!(
        a == bytes,
        "the 3 MiB came back changed ({} bytes)",
        a.len()
    );
    assert_eq!(b, b"hello");
    let stats = tunnel.stats();
    assert_eq!(stats.opened.load(std::sync::atomic::Ordering::Relaxed), 2);
    // The counters are added when a tunnel's task ends, just after the client saw the close.
    let total = bytes.len() as u64 + 5;
    for _ in 0..100 {
        if stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed) == total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        stats.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
        total
    );
    assert_eq!(
        stats.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        total
    );
}

/// A connection to a local tunnel end that is closed without a byte back (a clean close or a
/// reset, whichever the client sees first).
async fn closed_unanswered(tunnel: &LocalTunnel) {
    use tokio::io::AsyncReadExt;
    let mut c = TcpStream::connect(tunnel.local_addr()).await.unwrap();
    let mut back = Vec::new();
    let read = tokio::time::timeout(WAIT, c.read_to_end(&mut back))
        .await
        .expect("the refused tunnel's connection stayed open");
    match read {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(back.is_empty());
}

#[tokio::test]
async fn a_tunnel_is_refused_without_a_target_to_the_arbiter_and_when_the_service_is_down() {
    let site = secondary().await;
    let remote = site.listener.local_addr().to_string();
    let refused_now = |tunnel: &LocalTunnel| {
        tunnel
            .stats()
            .refused
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // No target configured: the local client's connection is closed, nothing relayed.
    let tunnel = LocalTunnel::bind("127.0.0.1:0", remote.clone(), 0, PRIMARY, config())
        .await
        .unwrap();
    closed_unanswered(&tunnel).await;
    assert_eq!(refused_now(&tunnel), 1);

    // A target, but the arbiter may not tunnel.
    site.listener
        .set_tunnel_targets(vec![Some(echo_service().await.to_string())]);
    // Another service than the one named: refused.
    let other = LocalTunnel::bind("127.0.0.1:0", remote.clone(), 1, PRIMARY, config())
        .await
        .unwrap();
    closed_unanswered(&other).await;
    assert_eq!(refused_now(&other), 1);
    let arbiter = LocalTunnel::bind("127.0.0.1:0", remote.clone(), 0, Peer::Arbiter, config())
        .await
        .unwrap();
    closed_unanswered(&arbiter).await;
    assert_eq!(refused_now(&arbiter), 1);
    // A site may.
    let c = TcpStream::connect(tunnel.local_addr()).await.unwrap();
    assert_eq!(round_trip(c, b"x").await, b"x");

    // The service is down: refused with the reason, the client closed.
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    site.listener
        .set_tunnel_targets(vec![Some(down_addr.to_string())]);
    closed_unanswered(&tunnel).await;
    assert_eq!(refused_now(&tunnel), 2);
    let direct = dial(&remote, PRIMARY, LinkKind::Tunnel { service: 0 }, &config()).await;
    let why = direct.err().expect("refused").to_string();
    assert!(why.contains(&down_addr.to_string()), "{why}");

    // The local end listens on loopback only.
    let open = LocalTunnel::bind("0.0.0.0:0", remote, 0, PRIMARY, config()).await;
    assert!(open.err().unwrap().to_string().contains("loopback"));
}
