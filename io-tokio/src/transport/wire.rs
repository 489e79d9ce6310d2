//! The typed frames of the lifeboat protocol, and the framed halves of a connection.
//!
//! A connection starts with `Hello` (dialer) and `Welcome` (listener); after that a *control*
//! link carries `Message`s both ways plus `Ping`/`Pong`, and a *ship* link carries artifacts:
//!
//! ```text
//! sender                         receiver
//! ShipOffer(meta)          ->
//!                          <-    ShipResume { offset }     bytes it already holds
//! Chunk(bytes) ... ShipEnd ->                              from `offset` to `meta.size`
//!                          <-    ShipDone { computed }     after fsync + rename + manifest
//! ```
//!
//! A *ping* link (an operator's `lifeboat ping`, see `ping.rs`) carries `PathPing` frames from
//! the dialer and `PathPong` answers; it is a connection of its own, so it never delays a message
//! or an artifact's frames.
//!
//! Either side may end a connection with `Close { reason }` so the other can log why.

use super::frame::{
    decode_payload, encode_payload, read_frame_at_most, write_frame_sealed, FrameError, FrameKind,
    Payload, RawFrame, Seal, HANDSHAKE_MAX_LEN, MAX_FRAME_LEN,
};
use super::ping::{PathPing, PathPong, PATH_PING_VERSION};
use lifeboat_core::{ArtifactMeta, Checksum, Message, Peer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

/// The version of the protocol spoken inside the frames (the `Hello` exchange checks it).
/// 2: heartbeat acknowledgements, the arbiter's site status (messages appended to the enum).
/// 3: sites query the arbiter with their epoch (`QueryAt`, appended): an arbiter of protocol 2
/// would not understand it, and one that lost its state needs it.
pub const PROTOCOL_VERSION: u16 = 3;

/// Buffer of each connection half: small frames coalesce, large chunks pass straight through.
const IO_BUFFER: usize = 64 * 1024;

/// What a connection is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    /// Messages between engines, both ways, kept open with keepalives.
    Control,
    /// Artifacts, one after another, from the dialer to the listener.
    Ship,
    /// Path pings of an operator (round trips and throughput), then closed. Appended: a
    /// listener that predates it refuses the `Hello` as malformed, and the operator is told.
    Ping,
    /// A TCP connection to a service of the listener's site (by index: the database whose
    /// server it reaches), relayed in `Chunk` frames both ways (`tunnel.rs`). Appended, as
    /// `Ping`.
    Tunnel { service: u32 },
}

/// The dialer's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u16,
    pub peer: Peer,
    pub link: LinkKind,
}

/// The listener's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub protocol: u16,
    pub peer: Peer,
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    Welcome(Welcome),
    Close { reason: String },
    Ping,
    Pong,
    Message(Message),
    ShipOffer(ArtifactMeta),
    ShipResume { offset: u64 },
    Chunk(Payload),
    ShipEnd,
    ShipDone { computed: Checksum },
    PathPing(PathPing),
    PathPong(PathPong),
}

impl Frame {
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Welcome(_) => FrameKind::Welcome,
            Frame::Close { .. } => FrameKind::Close,
            Frame::Ping => FrameKind::Ping,
            Frame::Pong => FrameKind::Pong,
            Frame::Message(_) => FrameKind::Message,
            Frame::ShipOffer(_) => FrameKind::ShipOffer,
            Frame::ShipResume { .. } => FrameKind::ShipResume,
            Frame::Chunk(_) => FrameKind::Chunk,
            Frame::ShipEnd => FrameKind::ShipEnd,
            Frame::ShipDone { .. } => FrameKind::ShipDone,
            Frame::PathPing(_) => FrameKind::PathPing,
            Frame::PathPong(_) => FrameKind::PathPong,
        }
    }

    /// The payload bytes of this frame.
    pub fn encode_payload(&self) -> Result<Vec<u8>, FrameError> {
        let kind = self.kind();
        match self {
            Frame::Hello(h) => encode_payload(kind, h),
            Frame::Welcome(w) => encode_payload(kind, w),
            Frame::Close { reason } => encode_payload(kind, reason),
            Frame::Ping | Frame::Pong | Frame::ShipEnd => Ok(Vec::new()),
            Frame::Message(m) => encode_payload(kind, m),
            Frame::ShipOffer(meta) => encode_payload(kind, meta),
            Frame::ShipResume { offset } => encode_payload(kind, offset),
            Frame::Chunk(bytes) => Ok(bytes.to_vec()),
            Frame::ShipDone { computed } => encode_payload(kind, computed),
            Frame::PathPing(p) => Ok(p.encode()),
            Frame::PathPong(p) => encode_payload(kind, p),
        }
    }

    /// Decode a frame that passed its checks.
    pub fn decode(raw: RawFrame) -> Result<Frame, FrameError> {
        let kind = raw.kind;
        let p = &raw.payload;
        let empty = |frame: Frame| {
            if p.is_empty() {
                Ok(frame)
            } else {
                Err(FrameError::Malformed {
                    kind,
                    reason: format!("expected no payload, found {} bytes", p.len()),
                })
            }
        };
        Ok(match kind {
            FrameKind::Hello => Frame::Hello(decode_payload(kind, p)?),
            FrameKind::Welcome => Frame::Welcome(decode_payload(kind, p)?),
            FrameKind::Close => Frame::Close {
                reason: decode_payload(kind, p)?,
            },
            FrameKind::Ping => empty(Frame::Ping)?,
            FrameKind::Pong => empty(Frame::Pong)?,
            FrameKind::ShipEnd => empty(Frame::ShipEnd)?,
            FrameKind::Message => Frame::Message(decode_payload(kind, p)?),
            FrameKind::ShipOffer => Frame::ShipOffer(decode_payload(kind, p)?),
            FrameKind::ShipResume => Frame::ShipResume {
                offset: decode_payload(kind, p)?,
            },
            FrameKind::Chunk => Frame::Chunk(raw.payload),
            FrameKind::ShipDone => Frame::ShipDone {
                computed: decode_payload(kind, p)?,
            },
            FrameKind::PathPing => {
                let ping = PathPing::decode(raw.payload.into_vec())
                    .map_err(|reason| FrameError::Malformed { kind, reason })?;
                check_ping_version(kind, ping.version)?;
                Frame::PathPing(ping)
            }
            FrameKind::PathPong => {
                let pong: PathPong = decode_payload(kind, p)?;
                check_ping_version(kind, pong.version)?;
                Frame::PathPong(pong)
            }
        })
    }
}

/// A path ping's payload has its own version (the first field), so its layout can change
/// without a new protocol: an unknown one is refused by name.
fn check_ping_version(kind: FrameKind, found: u16) -> Result<(), FrameError> {
    if found == PATH_PING_VERSION {
        return Ok(());
    }
    Err(FrameError::Malformed {
        kind,
        reason: format!(
            "path ping format version {found}, this build reads {PATH_PING_VERSION}; \
             upgrade the older side"
        ),
    })
}

/// The reading half of a framed connection.
pub struct FrameReader<R> {
    inner: BufReader<R>,
    /// Payload bytes shared by every link of a listener (see [`read_frame_at_most`]).
    budget: Option<Arc<tokio::sync::Semaphore>>,
    seal: Seal,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner: BufReader::with_capacity(IO_BUFFER, inner),
            budget: None,
            seal: Seal::Crc,
        }
    }

    /// What protects this link's bytes (TLS frames carry no CRC).
    pub fn sealed(mut self, seal: Seal) -> Self {
        self.seal = seal;
        self
    }

    /// Large payloads take their bytes from `budget` while they are read.
    pub fn with_budget(mut self, budget: Arc<tokio::sync::Semaphore>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The next frame, within `within`. Not cancel-safe (see [`read_frame`]).
    pub async fn next(&mut self, within: Duration) -> Result<Frame, FrameError> {
        let read = read_frame_at_most(
            &mut self.inner,
            MAX_FRAME_LEN,
            self.budget.as_deref(),
            self.seal,
        );
        match tokio::time::timeout(within, read).await {
            Ok(raw) => Frame::decode(raw?),
            Err(_) => Err(FrameError::Timeout {
                what: "waiting for a frame",
                after: within,
            }),
        }
    }

    /// The first frame of a connection (the handshake), within `within`: at most
    /// [`HANDSHAKE_MAX_LEN`] bytes, so a peer nobody knows yet holds no more memory than that.
    pub async fn handshake(&mut self, within: Duration) -> Result<Frame, FrameError> {
        let read = read_frame_at_most(&mut self.inner, HANDSHAKE_MAX_LEN, None, self.seal);
        match tokio::time::timeout(within, read).await {
            Ok(raw) => Frame::decode(raw?),
            Err(_) => Err(FrameError::Timeout {
                what: "waiting for the handshake",
                after: within,
            }),
        }
    }
}

/// The writing half of a framed connection; every write gives up after its `io_timeout`.
pub struct FrameWriter<W> {
    inner: BufWriter<W>,
    io_timeout: Duration,
    seal: Seal,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, io_timeout: Duration) -> Self {
        FrameWriter {
            inner: BufWriter::with_capacity(IO_BUFFER, inner),
            io_timeout,
            seal: Seal::Crc,
        }
    }

    /// What protects this link's bytes (TLS frames carry no CRC).
    pub fn sealed(mut self, seal: Seal) -> Self {
        self.seal = seal;
        self
    }

    /// Write and flush one frame.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), FrameError> {
        match frame {
            Frame::Chunk(bytes) => self.send_chunk(bytes).await,
            other => {
                let payload = other.encode_payload()?;
                let (kind, t) = (other.kind(), self.io_timeout);
                write_frame_sealed(&mut self.inner, kind, &payload, t, self.seal).await
            }
        }
    }

    /// Write a `Chunk` straight from the caller's buffer (no copy).
    pub async fn send_chunk(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let t = self.io_timeout;
        write_frame_sealed(&mut self.inner, FrameKind::Chunk, bytes, t, self.seal).await
    }

    /// Best effort: tell the peer why, then shut the write side. Errors are ignored because the
    /// connection is being abandoned anyway; a short timeout keeps a stuck peer from holding us.
    pub async fn close(&mut self, reason: &str) {
        let short = self.io_timeout.min(Duration::from_secs(1));
        let Ok(payload) = encode_payload(FrameKind::Close, &reason) else {
            return;
        };
        let _ = write_frame_sealed(
            &mut self.inner,
            FrameKind::Close,
            &payload,
            short,
            self.seal,
        )
        .await;
        let _ = tokio::time::timeout(short, self.inner.shutdown()).await;
    }

    /// Shut the write side without a reason (a clean end).
    pub async fn shutdown(&mut self) {
        let short = self.io_timeout.min(Duration::from_secs(1));
        let _ = tokio::time::timeout(short, self.inner.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::decode_frame;
    use lifeboat_core::{ArtifactKey, ArtifactKind, DbId, Epoch, Lsn, SiteId, UtcMillis};

    fn meta() -> ArtifactMeta {
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(2),
                epoch: Epoch(3),
                lsn_start: Lsn(100),
                lsn_end: Lsn(200),
                kind: ArtifactKind::Log,
            },
            base_full: None,
            created_utc: UtcMillis(1_795_000_000_000),
            size: 42,
            checksum: Checksum(0xdead_beef),
            retry: 1,
        }
    }

    #[tokio::test]
    async fn every_frame_round_trips_over_a_pipe() {
        let frames = vec![
            Frame::Hello(Hello {
                protocol: PROTOCOL_VERSION,
                peer: Peer::Site(SiteId(1)),
                link: LinkKind::Ship,
            }),
            Frame::Welcome(Welcome {
                protocol: PROTOCOL_VERSION,
                peer: Peer::Arbiter,
            }),
            Frame::Close {
                reason: "bye".into(),
            },
            Frame::Ping,
            Frame::Pong,
            Frame::Message(Message::Query { req: 9 }),
            Frame::ShipOffer(meta()),
            Frame::ShipResume { offset: 1 << 40 },
            Frame::Chunk(vec![1, 2, 3].into()),
            Frame::ShipEnd,
            Frame::ShipDone {
                computed: Checksum(77),
            },
            Frame::PathPing(PathPing::new(7, true, vec![9; 100])),
            Frame::PathPong(PathPong::new(7, 100)),
        ];
        let (a, b) = tokio::io::duplex(1024);
        let sent = frames.clone();
        let t = Duration::from_secs(5);
        let writer = tokio::spawn(async move {
            let mut w = FrameWriter::new(a, t);
            for f in &sent {
                w.send(f).await.unwrap();
            }
        });
        let mut r = FrameReader::new(b);
        for f in &frames {
            assert_eq!(&r.next(t).await.unwrap(), f);
        }
        writer.await.unwrap();
    }

    #[test]
    fn a_ping_with_a_payload_is_malformed() {
        let bytes = super::super::frame::encode_frame(FrameKind::Ping, &5u8).unwrap();
        let (raw, _) = decode_frame(&bytes).unwrap();
        assert!(matches!(
            Frame::decode(raw),
            Err(FrameError::Malformed { .. })
        ));
    }
}
