//! Path pings: an operator measures the path between two lifeboat processes over lifeboat's own
//! transport (the port, handshake and frames artifacts travel through), not over ICMP or a side
//! port that a firewall may treat differently.
//!
//! ```text
//! dialer (the agent `lifeboat ping` asked)        listener (the other site's agent, the arbiter)
//! Hello { link: Ping }                       ->
//!                                            <-   Welcome
//! PathPing { seq, reply, 64 bytes }          ->                      `count` round trips
//!                                            <-   PathPong { seq, received }
//! PathPing { seq, no reply, 1 MiB } ...      ->                      throughput: `bytes`,
//! PathPing { seq, reply, last chunk }        ->                      in chunks
//!                                            <-   PathPong { seq, received: bytes }
//! ```
//!
//! A ping link is a connection of its own: it never holds the control link's writer (heartbeats
//! and messages go on) nor a ship link. Its cost is bounded on both sides: at most
//! [`MAX_PING_COUNT`] round trips and [`MAX_PING_BYTES`] of payload per link, in frames of at
//! most [`PING_CHUNK`] bytes (read within the listener's frame budget like any large frame), and
//! the link ends after [`PING_LINK_LIFETIME`] whatever happens, so a ping shares the path with
//! shipping for at most that long.
//!
//! The payloads carry their own format version ([`PATH_PING_VERSION`], the first field), checked
//! when a frame is decoded.

use super::frame::FrameError;
use super::link::dial;
use super::ship::ShipErrorKind;
use super::wire::{Frame, FrameReader, FrameWriter, LinkKind};
use super::TransportConfig;
use lifeboat_core::Peer;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};

/// The layout of [`PathPing`] and [`PathPong`]. Bump it when either changes.
pub const PATH_PING_VERSION: u16 = 1;
/// Payload bytes of one ping frame (1 MiB, the artifact chunk size): a larger one is refused.
pub const PING_CHUNK: usize = 1024 * 1024;
/// Payload bytes one ping link may carry (256 MiB): a throughput test, not a transfer.
pub const MAX_PING_BYTES: u64 = 256 * 1024 * 1024;
/// Round trips one ping link may ask for.
pub const MAX_PING_COUNT: u32 = 100;
/// Frames one ping link may carry: the round trips and the throughput test in full chunks.
pub const MAX_PING_FRAMES: u64 = MAX_PING_COUNT as u64 + MAX_PING_BYTES.div_ceil(PING_CHUNK as u64);
/// Payload of a round-trip ping: small, so the time is the path's latency.
pub const RTT_PAYLOAD: usize = 64;
/// A ping link ends after this long, on both sides: it never shares the path with shipping for
/// longer.
pub const PING_LINK_LIFETIME: Duration = Duration::from_secs(60);

/// Dialer to listener: `data` for the path; answer with a [`PathPong`] when `reply`.
///
/// Its payload is a fixed head and then the data raw, as a `Chunk` is raw, so a throughput test
/// measures the path and not an encoder:
///
/// ```text
/// offset  field    type
///      0  version  u16 LE   PATH_PING_VERSION
///      2  seq      u32 LE
///      6  reply    u8       0 or 1
///      7  data     the rest
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPing {
    /// [`PATH_PING_VERSION`].
    pub version: u16,
    pub seq: u32,
    pub reply: bool,
    pub data: Vec<u8>,
}

/// Bytes of a [`PathPing`] payload before its data.
pub const PATH_PING_HEAD: usize = 7;

impl PathPing {
    pub fn new(seq: u32, reply: bool, data: Vec<u8>) -> PathPing {
        PathPing {
            version: PATH_PING_VERSION,
            seq,
            reply,
            data,
        }
    }

    /// The frame payload (see the layout above).
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(PATH_PING_HEAD + self.data.len());
        p.extend_from_slice(&self.version.to_le_bytes());
        p.extend_from_slice(&self.seq.to_le_bytes());
        p.push(u8::from(self.reply));
        p.extend_from_slice(&self.data);
        p
    }

    /// Read a payload; why not, when it is not one. The version is not checked here.
    pub fn decode(mut payload: Vec<u8>) -> Result<PathPing, String> {
        let head: [u8; PATH_PING_HEAD] = payload
            .get(..PATH_PING_HEAD)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "{} bytes, shorter than its {PATH_PING_HEAD}-byte head",
                    payload.len()
                )
            })?;
        let reply = match head[6] {
            0 => false,
            1 => true,
            other => return Err(format!("reply flag {other}, expected 0 or 1")),
        };
        payload.drain(..PATH_PING_HEAD);
        Ok(PathPing {
            version: u16::from_le_bytes([head[0], head[1]]),
            seq: u32::from_le_bytes([head[2], head[3], head[4], head[5]]),
            reply,
            data: payload,
        })
    }
}

/// Listener to dialer: the ping `seq` arrived, and `received` payload bytes since the last pong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathPong {
    /// [`PATH_PING_VERSION`].
    pub version: u16,
    pub seq: u32,
    pub received: u64,
}

impl PathPong {
    pub fn new(seq: u32, received: u64) -> PathPong {
        PathPong {
            version: PATH_PING_VERSION,
            seq,
            received,
        }
    }
}

/// What one ping link measured.
#[derive(Clone, Debug, PartialEq)]
pub struct PathReport {
    /// The transport address pinged.
    pub addr: String,
    /// Who answered (the `Welcome`).
    pub peer: Peer,
    /// TCP connect and handshake.
    pub handshake: Duration,
    /// One per round-trip ping.
    pub rtts: Vec<Duration>,
    /// The throughput test, when bytes were asked for: bytes acknowledged, and the time from
    /// the first chunk sent to the acknowledgement.
    pub bulk: Option<(u64, Duration)>,
}

impl PathReport {
    /// Minimum, average and maximum round trip.
    pub fn rtt(&self) -> Option<(Duration, Duration, Duration)> {
        let min = *self.rtts.iter().min()?;
        let max = *self.rtts.iter().max()?;
        let avg = self.rtts.iter().sum::<Duration>() / self.rtts.len() as u32;
        Some((min, avg, max))
    }

    /// MiB per second of the throughput test.
    pub fn mib_per_s(&self) -> Option<f64> {
        let (bytes, took) = self.bulk?;
        Some(bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64().max(1e-6))
    }
}

/// Why a path ping failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("--count {0} is out of range: ask for 1 to {MAX_PING_COUNT} round trips")]
    Count(u32),
    #[error(
        "--bytes {0} is more than a ping may send ({MAX_PING_BYTES} bytes, 256 MiB): \
         ask for less (e.g. --bytes 16MiB)"
    )]
    TooManyBytes(u64),
    #[error(
        "cannot open a ping link to {addr}: {source} (is its agent running? if it runs an \
         older lifeboat without path pings, upgrade it)"
    )]
    Dial { addr: String, source: ShipErrorKind },
    #[error("the ping link to {addr} failed: {source}")]
    Link { addr: String, source: FrameError },
    #[error("{addr} answered a {got:?} frame to a path ping")]
    Unexpected {
        addr: String,
        got: super::frame::FrameKind,
    },
    #[error("{addr} acknowledged {got} bytes of ping {seq}, {sent} were sent")]
    Mismatch {
        addr: String,
        seq: u32,
        sent: u64,
        got: u64,
    },
    #[error(
        "the ping to {addr} did not finish within {PING_LINK_LIFETIME:?} (a slow path: ask \
         for fewer --bytes)"
    )]
    Deadline { addr: String },
}

/// Refuse a request beyond the bounds before anything is sent.
pub fn check_request(count: u32, bytes: u64) -> Result<(), PingError> {
    if count == 0 || count > MAX_PING_COUNT {
        return Err(PingError::Count(count));
    }
    if bytes > MAX_PING_BYTES {
        return Err(PingError::TooManyBytes(bytes));
    }
    Ok(())
}

/// Ping `addr` (a transport `listen` address) as `me`: `count` round trips, then `bytes` of
/// payload acknowledged. At most [`PING_LINK_LIFETIME`] in all.
pub async fn ping_path(
    addr: &str,
    me: Peer,
    cfg: &TransportConfig,
    count: u32,
    bytes: u64,
) -> Result<PathReport, PingError> {
    check_request(count, bytes)?;
    match tokio::time::timeout(PING_LINK_LIFETIME, ping_link(addr, me, cfg, count, bytes)).await {
        Ok(result) => result,
        Err(_) => Err(PingError::Deadline { addr: addr.into() }),
    }
}

async fn ping_link(
    addr: &str,
    me: Peer,
    cfg: &TransportConfig,
    count: u32,
    bytes: u64,
) -> Result<PathReport, PingError> {
    let started = Instant::now();
    let mut conn = dial(addr, me, LinkKind::Ping, cfg)
        .await
        .map_err(|source| PingError::Dial {
            addr: addr.into(),
            source,
        })?;
    let handshake = started.elapsed();
    let link = |source| PingError::Link {
        addr: addr.into(),
        source,
    };
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let sent = Instant::now();
        let ping = PathPing::new(seq, true, vec![0x5a; RTT_PAYLOAD]);
        conn.writer
            .send(&Frame::PathPing(ping))
            .await
            .map_err(link)?;
        expect_pong(&mut conn.reader, addr, cfg, seq, RTT_PAYLOAD as u64).await?;
        rtts.push(sent.elapsed());
    }
    let mut bulk = None;
    if bytes > 0 {
        let chunk = vec![0xa5u8; PING_CHUNK];
        let started = Instant::now();
        let mut left = bytes;
        let seq = count;
        while left > 0 {
            let n = left.min(PING_CHUNK as u64) as usize;
            left -= n as u64;
            let ping = PathPing::new(seq, left == 0, chunk[..n].to_vec());
            conn.writer
                .send(&Frame::PathPing(ping))
                .await
                .map_err(link)?;
        }
        expect_pong(&mut conn.reader, addr, cfg, seq, bytes).await?;
        bulk = Some((bytes, started.elapsed()));
    }
    conn.writer.shutdown().await;
    Ok(PathReport {
        addr: addr.into(),
        peer: conn.remote,
        handshake,
        rtts,
        bulk,
    })
}

async fn expect_pong<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    addr: &str,
    cfg: &TransportConfig,
    seq: u32,
    sent: u64,
) -> Result<(), PingError> {
    match reader.next(cfg.io_timeout).await {
        Ok(Frame::PathPong(p)) if p.seq == seq && p.received == sent => Ok(()),
        Ok(Frame::PathPong(p)) => Err(PingError::Mismatch {
            addr: addr.into(),
            seq: p.seq,
            sent,
            got: p.received,
        }),
        Ok(Frame::Close { reason }) => Err(PingError::Link {
            addr: addr.into(),
            source: FrameError::Malformed {
                kind: super::frame::FrameKind::Close,
                reason: format!("the peer closed the ping link: {reason}"),
            },
        }),
        Ok(other) => Err(PingError::Unexpected {
            addr: addr.into(),
            got: other.kind(),
        }),
        Err(source) => Err(PingError::Link {
            addr: addr.into(),
            source,
        }),
    }
}

/// What a listener served on one ping link.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    pub pings: u64,
    pub bytes: u64,
}

/// The listener's side of a ping link, after its `Welcome`: answer pings until the dialer
/// closes. `Err` carries the reason to hang up with (a frame too large, too many bytes or
/// round trips, a frame that does not belong here, the link's lifetime over).
pub(super) async fn serve_ping<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    idle_timeout: Duration,
) -> Result<Served, String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = Instant::now() + PING_LINK_LIFETIME;
    let mut served = Served::default();
    let mut since_pong = 0u64;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("a ping link lasts at most {PING_LINK_LIFETIME:?}"));
        }
        match reader.next(idle_timeout.min(left)).await {
            Ok(Frame::PathPing(p)) => {
                if p.data.len() > PING_CHUNK {
                    return Err(format!(
                        "a path ping of {} bytes exceeds the {PING_CHUNK}-byte limit",
                        p.data.len()
                    ));
                }
                served.pings += 1;
                served.bytes += p.data.len() as u64;
                since_pong += p.data.len() as u64;
                if served.bytes > MAX_PING_BYTES + RTT_PAYLOAD as u64 * u64::from(MAX_PING_COUNT)
                    || served.pings > MAX_PING_FRAMES
                {
                    return Err(format!(
                        "a ping link carries at most {MAX_PING_BYTES} bytes in \
                         {MAX_PING_FRAMES} frames"
                    ));
                }
                if p.reply {
                    let pong = Frame::PathPong(PathPong::new(p.seq, since_pong));
                    writer.send(&pong).await.map_err(|e| e.to_string())?;
                    since_pong = 0;
                }
            }
            Ok(Frame::Close { .. }) | Err(FrameError::Closed) => return Ok(served),
            Ok(other) => {
                return Err(format!(
                    "unexpected {:?} frame on a ping link",
                    other.kind()
                ))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::{decode_frame, encode_frame, encode_header, FrameKind};

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn a_ping_request_beyond_the_bounds_is_refused_naming_the_limit() {
        assert!(check_request(5, 16 << 20).is_ok());
        let err = check_request(5, MAX_PING_BYTES + 1).unwrap_err();
        assert!(err.to_string().contains("256 MiB"), "{err}");
        assert!(err.to_string().contains("--bytes"), "{err}");
        assert!(matches!(check_request(0, 0), Err(PingError::Count(0))));
        assert!(matches!(
            check_request(MAX_PING_COUNT + 1, 0),
            Err(PingError::Count(_))
        ));
    }

    #[test]
    fn a_ping_of_another_format_version_is_refused_by_name() {
        let mut ping = PathPing::new(1, true, vec![1, 2, 3]);
        ping.version = PATH_PING_VERSION + 1;
        let err = decode_ping_payload(ping.encode()).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { .. }), "{err}");
        assert!(
            err.to_string().contains("path ping format version 2"),
            "{err}"
        );
        let mut pong = PathPong::new(1, 2);
        pong.version = 9;
        let bytes = encode_frame(FrameKind::PathPong, &pong).unwrap();
        let (raw, _) = decode_frame(&bytes).unwrap();
        let err = Frame::decode(raw).unwrap_err();
        assert!(
            err.to_string().contains("path ping format version 9"),
            "{err}"
        );
    }

    fn decode_ping_payload(payload: Vec<u8>) -> Result<Frame, FrameError> {
        let header = encode_header(FrameKind::PathPing, &payload).unwrap();
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&payload);
        Frame::decode(decode_frame(&bytes).unwrap().0)
    }

    #[test]
    fn a_ping_payload_round_trips_and_a_short_or_odd_head_is_malformed() {
        let ping = PathPing::new(0xdead_beef, true, vec![1, 2, 3]);
        assert_eq!(
            decode_ping_payload(ping.encode()).unwrap(),
            Frame::PathPing(ping.clone())
        );
        let err = decode_ping_payload(vec![1, 0, 0]).unwrap_err();
        assert!(
            err.to_string().contains("shorter than its 7-byte head"),
            "{err}"
        );
        let mut odd = ping.encode();
        odd[6] = 2;
        let err = decode_ping_payload(odd).unwrap_err();
        assert!(err.to_string().contains("reply flag 2"), "{err}");
    }

    #[test]
    fn garbage_in_a_ping_frame_is_malformed_never_a_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..200usize {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            for kind in [FrameKind::PathPing, FrameKind::PathPong] {
                let header = encode_header(kind, &payload).unwrap();
                let mut bytes = header.to_vec();
                bytes.extend_from_slice(&payload);
                let (raw, _) = decode_frame(&bytes).unwrap();
                if let Err(e) = Frame::decode(raw) {
                    assert!(matches!(e, FrameError::Malformed { .. }), "{e}");
                }
            }
        }
    }

    /// A listener's ping link over a pipe, served until the dialer's side is dropped.
    async fn served_over_a_pipe(frames: Vec<Frame>) -> (Result<Served, String>, Vec<Frame>) {
        let (a, b) = tokio::io::duplex(8 << 20);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let server = tokio::spawn(async move {
            let mut r = FrameReader::new(br);
            let mut w = FrameWriter::new(bw, T);
            serve_ping(&mut r, &mut w, T).await
        });
        let mut w = FrameWriter::new(aw, T);
        for f in &frames {
            if w.send(f).await.is_err() {
                break;
            }
        }
        w.shutdown().await;
        let result = server.await.unwrap();
        let mut r = FrameReader::new(ar);
        let mut answers = Vec::new();
        while let Ok(f) = r.next(Duration::from_millis(200)).await {
            answers.push(f);
        }
        (result, answers)
    }

    #[tokio::test]
    async fn the_listener_answers_each_ping_that_asks_with_the_bytes_since_the_last_answer() {
        let frames = vec![
            Frame::PathPing(PathPing::new(0, true, vec![0; 64])),
            Frame::PathPing(PathPing::new(1, false, vec![0; 1000])),
            Frame::PathPing(PathPing::new(1, true, vec![0; 24])),
        ];
        let (served, answers) = served_over_a_pipe(frames).await;
        assert_eq!(
            served.unwrap(),
            Served {
                pings: 3,
                bytes: 1088
            }
        );
        assert_eq!(
            answers,
            vec![
                Frame::PathPong(PathPong::new(0, 64)),
                Frame::PathPong(PathPong::new(1, 1024)),
            ]
        );
    }

    #[tokio::test]
    async fn an_oversized_ping_or_a_stray_frame_ends_the_ping_link_with_a_reason() {
        let frames = vec![Frame::PathPing(PathPing::new(
            0,
            true,
            vec![0; PING_CHUNK + 1],
        ))];
        let (served, _) = served_over_a_pipe(frames).await;
        let why = served.unwrap_err();
        assert!(why.contains("exceeds the 1048576-byte limit"), "{why}");
        let frames = vec![Frame::ShipEnd];
        let (served, _) = served_over_a_pipe(frames).await;
        assert!(served.unwrap_err().contains("unexpected ShipEnd"));
    }
}
