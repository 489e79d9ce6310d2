//! Frames: every byte between two lifeboat processes travels inside one.
//!
//! ```text
//! offset  field    type     meaning
//!      0  magic    u16 BE   0x4C42 ("LB"): this is a lifeboat stream
//!      2  version  u8       FRAME_VERSION: the layout of this header
//!      3  kind     u8       FrameKind::code
//!      4  len      u32 BE   payload length, at most MAX_FRAME_LEN
//!      8  crc32    u32 BE   CRC-32 (IEEE) of header bytes 0..8, then of the payload;
//!                           0 on a TLS link (see [`Seal`])
//!     12  payload  len bytes: bincode (fixed-width little-endian integers), raw for a Chunk
//! ```
//!
//! The checksum covers the header too, so a flipped length or kind is caught, not only a flipped
//! payload byte. On a TLS link the record layer already authenticates every byte (AES-GCM): a
//! flipped bit fails the TLS record and closes the connection before a frame sees it, so the
//! frames there carry no CRC of their own (it cost as much CPU as the decryption).
//!
//! A frame that fails any check is a [`FrameError`] naming what was wrong; the caller closes the
//! connection, because a byte stream that lost its place cannot be trusted to find it again.

pub use super::buffers::Payload;
use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first two bytes of every frame: "LB".
pub const MAGIC: u16 = 0x4C42;
/// The layout of the frame header. Bump it when the header changes.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 12;
/// The largest payload a frame may carry (4 MiB). It bounds the memory one connection can make
/// the receiver allocate; artifact chunks are smaller (see `DEFAULT_CHUNK_SIZE`).
pub const MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;

/// The most a frame's payload buffer holds before its bytes arrive (64 KiB): the rest of an
/// announced length is allocated as it is read.
pub const FIRST_READ: usize = 64 * 1024;
/// The largest frame a peer may send before its handshake completed: a `Hello` is a few dozen
/// bytes, so an unknown connection never makes this side hold more than this for it.
pub const HANDSHAKE_MAX_LEN: u32 = 64 * 1024;

/// What protects a link's bytes, and so what a frame's `crc32` field holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Seal {
    /// Plain TCP (`insecure = true`): every frame carries its CRC-32 and the reader checks it.
    #[default]
    Crc,
    /// TLS: the record layer authenticates every byte; frames carry 0 there and it is not
    /// checked (a non-zero value is refused: the two ends disagree about the link).
    Tls,
}

/// What a frame carries. The code is the byte on the wire; never reuse a retired code.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Dialer to listener, first frame: who I am, which protocol, what this link is for.
    Hello,
    /// Listener to dialer, answering `Hello`: who I am.
    Welcome,
    /// Either side, last frame: why I am closing this connection.
    Close,
    /// Keepalive from the dialer of a control link.
    Ping,
    /// The listener's answer to `Ping`.
    Pong,
    /// A `lifeboat_core::Message` between engines.
    Message,
    /// Sender to receiver: this artifact (its manifest) follows.
    ShipOffer,
    /// Receiver to sender: I already hold this many bytes of it; continue from there.
    ShipResume,
    /// Sender to receiver: the next bytes of the artifact (raw payload).
    Chunk,
    /// Sender to receiver: that was the last chunk.
    ShipEnd,
    /// Receiver to sender: the artifact is fsynced and renamed; this is the checksum I computed.
    ShipDone,
    /// Dialer of a ping link: a path ping (an operator measuring the path; see `ping.rs`).
    PathPing,
    /// The listener's answer to a path ping that asked for one.
    PathPong,
}

impl FrameKind {
    /// Every kind, for tests and tools.
    pub const ALL: [FrameKind; 13] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Close,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Message,
        FrameKind::ShipOffer,
        FrameKind::ShipResume,
        FrameKind::Chunk,
        FrameKind::ShipEnd,
        FrameKind::ShipDone,
        FrameKind::PathPing,
        FrameKind::PathPong,
    ];

    /// The kind's byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Hello => 1,
            FrameKind::Welcome => 2,
            FrameKind::Close => 3,
            FrameKind::Ping => 4,
            FrameKind::Pong => 5,
            FrameKind::Message => 6,
            FrameKind::ShipOffer => 7,
            FrameKind::ShipResume => 8,
            FrameKind::Chunk => 9,
            FrameKind::ShipEnd => 10,
            FrameKind::ShipDone => 11,
            FrameKind::PathPing => 12,
            FrameKind::PathPong => 13,
        }
    }

    /// The kind for a byte on the wire, if it is one.
    pub fn from_code(code: u8) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|k| k.code() == code)
    }
}

/// A frame that cannot be read or written, and why.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(
        "not a lifeboat frame: magic {found:#06x}, expected {MAGIC:#06x} \
         (garbage on the wire, or another protocol on this port)"
    )]
    BadMagic { found: u16 },
    #[error(
        "frame format version {found} is not supported (this build speaks {FRAME_VERSION}); \
         upgrade the older side"
    )]
    UnsupportedVersion { found: u8 },
    #[error("unknown frame kind {found}")]
    UnknownKind { found: u8 },
    #[error("oversized {kind:?} frame: {len} bytes exceeds the limit of {max}")]
    Oversized { kind: FrameKind, len: u64, max: u32 },
    #[error("truncated frame: the stream ended after {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error(
        "{kind:?} frame fails its checksum (crc32 {computed:#010x}, header says {expected:#010x}): \
         corrupted in transit"
    )]
    BadChecksum {
        kind: FrameKind,
        expected: u32,
        computed: u32,
    },
    #[error("malformed {kind:?} frame: {reason}")]
    Malformed { kind: FrameKind, reason: String },
    #[error("cannot encode a {kind:?} frame: {reason}")]
    Encode { kind: FrameKind, reason: String },
    #[error("the peer closed the connection")]
    Closed,
    #[error("timed out after {after:?} {what}")]
    Timeout { what: &'static str, after: Duration },
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// A decoded frame header.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub len: u32,
    pub crc: u32,
}

/// A frame that passed every check, its payload not yet decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub kind: FrameKind,
    pub payload: Payload,
}

/// The bincode options of every payload: fixed-width little-endian integers (the layout of
/// `bincode::serialize`), no trailing bytes, and never more than a frame can hold.
fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(u64::from(MAX_FRAME_LEN))
        .reject_trailing_bytes()
}

/// The checksum of a frame: header bytes 0..8 (magic, version, kind, length), then the payload.
pub fn frame_crc(header_prefix: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_prefix);
    h.update(payload);
    h.finalize()
}

/// The header of a frame carrying `payload` on a plain link (with its CRC).
pub fn encode_header(kind: FrameKind, payload: &[u8]) -> Result<[u8; HEADER_LEN], FrameError> {
    encode_header_sealed(kind, payload, Seal::Crc)
}

/// The header of a frame carrying `payload` on a link protected by `seal`.
pub fn encode_header_sealed(
    kind: FrameKind,
    payload: &[u8],
    seal: Seal,
) -> Result<[u8; HEADER_LEN], FrameError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME_LEN)
        .ok_or(FrameError::Oversized {
            kind,
            len: payload.len() as u64,
            max: MAX_FRAME_LEN,
        })?;
    let mut header = [0u8; HEADER_LEN];
    header[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    header[2] = FRAME_VERSION;
    header[3] = kind.code();
    header[4..8].copy_from_slice(&len.to_be_bytes());
    if seal == Seal::Crc {
        let crc = frame_crc(&header[..8], payload);
        header[8..12].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(header)
}

/// Check a header: magic, version, kind and length. The checksum is checked with the payload.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let magic = u16::from_be_bytes([bytes[0], bytes[1]]);
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    if bytes[2] != FRAME_VERSION {
        return Err(FrameError::UnsupportedVersion { found: bytes[2] });
    }
    let kind = FrameKind::from_code(bytes[3]).ok_or(FrameError::UnknownKind { found: bytes[3] })?;
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::Oversized {
            kind,
            len: u64::from(len),
            max: MAX_FRAME_LEN,
        });
    }
    let crc = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    Ok(Header { kind, len, crc })
}

/// The bincode payload of a value.
pub fn encode_payload<T: Serialize>(kind: FrameKind, value: &T) -> Result<Vec<u8>, FrameError> {
    codec().serialize(value).map_err(|e| FrameError::Encode {
        kind,
        reason: e.to_string(),
    })
}

/// A whole frame (header and bincode payload) in one buffer.
pub fn encode_frame<T: Serialize>(kind: FrameKind, value: &T) -> Result<Vec<u8>, FrameError> {
    let payload = encode_payload(kind, value)?;
    let header = encode_header(kind, &payload)?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Decode a bincode payload.
pub fn decode_payload<T: DeserializeOwned>(
    kind: FrameKind,
    payload: &[u8],
) -> Result<T, FrameError> {
    codec()
        .deserialize(payload)
        .map_err(|e| FrameError::Malformed {
            kind,
            reason: e.to_string(),
        })
}

/// Split the first frame off a buffer: the frame and how many bytes it took. A buffer that ends
/// inside the frame is `Truncated`. Pure code over bytes (the fuzz targets drive it).
pub fn decode_frame(bytes: &[u8]) -> Result<(RawFrame, usize), FrameError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Truncated {
            expected: HEADER_LEN,
            got: bytes.len(),
        })?;
    let h = decode_header(header)?;
    let end = HEADER_LEN + h.len as usize;
    let payload = bytes.get(HEADER_LEN..end).ok_or(FrameError::Truncated {
        expected: end,
        got: bytes.len(),
    })?;
    check_crc(header, &h, payload, Seal::Crc)?;
    Ok((
        RawFrame {
            kind: h.kind,
            payload: payload.to_vec().into(),
        },
        end,
    ))
}

fn check_crc(
    header: &[u8; HEADER_LEN],
    h: &Header,
    payload: &[u8],
    seal: Seal,
) -> Result<(), FrameError> {
    let computed = match seal {
        Seal::Crc => frame_crc(&header[..8], payload),
        Seal::Tls => 0,
    };
    if computed != h.crc {
        return Err(FrameError::BadChecksum {
            kind: h.kind,
            expected: h.crc,
            computed,
        });
    }
    Ok(())
}

/// Read as many bytes as fit in `buf` unless the stream ends first; how many were read.
async fn read_full<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// Read one frame, giving up after `within`. A stream that ends exactly between frames is
/// `Closed`; one that ends inside a frame is `Truncated`. Not cancel-safe: a frame abandoned
/// halfway leaves the stream out of step, so drop the connection after a timeout.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    within: Duration,
) -> Result<RawFrame, FrameError> {
    match tokio::time::timeout(within, read_frame_now(r)).await {
        Ok(result) => result,
        Err(_) => Err(FrameError::Timeout {
            what: "waiting for a frame",
            after: within,
        }),
    }
}

/// Read one frame with no time limit: [`read_frame`] without its timer, for readers that never
/// wait (an in-memory buffer, the fuzz targets) or callers that bound the time themselves.
///
/// Memory follows the bytes that arrive, not the length the header announces: a peer that
/// announces [`MAX_FRAME_LEN`] and sends a few bytes costs at most [`FIRST_READ`] bytes of
/// buffer (or a recycled chunk buffer), and the buffer grows as the payload arrives.
pub async fn read_frame_now<R: AsyncRead + Unpin>(r: &mut R) -> Result<RawFrame, FrameError> {
    read_frame_at_most(r, MAX_FRAME_LEN, None, Seal::Crc).await
}

/// Read one frame whose payload is at most `max` bytes (a longer announcement is refused
/// before any of its payload is read). With a `budget`, a payload longer than [`FIRST_READ`]
/// first takes as many bytes from it (waiting for other frames to give theirs back): the
/// payloads all links of a listener hold at once stay within the budget. `seal` says whether
/// the frame's CRC is checked (plain link) or must be 0 (TLS link).
pub async fn read_frame_at_most<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    budget: Option<&tokio::sync::Semaphore>,
    seal: Seal,
) -> Result<RawFrame, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(r, &mut header).await? {
        0 => return Err(FrameError::Closed),
        n if n < HEADER_LEN => {
            return Err(FrameError::Truncated {
                expected: HEADER_LEN,
                got: n,
            })
        }
        _ => {}
    }
    let h = decode_header(&header)?;
    if h.len > max {
        return Err(FrameError::Oversized {
            kind: h.kind,
            len: u64::from(h.len),
            max,
        });
    }
    let len = h.len as usize;
    let _held =
        match budget {
            Some(b) if len > FIRST_READ => {
                let want = u32::try_from(len).unwrap_or(u32::MAX);
                Some(b.acquire_many(want).await.map_err(|_| {
                    FrameError::Io(std::io::Error::other("the frame budget is closed"))
                })?)
            }
            _ => None,
        };
    // A large chunk goes into an aligned pooled buffer (the disk takes it from there). Other
    // payloads go into spare capacity of a recycled buffer when one is free (no fresh mapping,
    // no zeroing); otherwise start small and grow with what arrives, never past `len`.
    let mut payload = if h.kind == FrameKind::Chunk && len >= super::buffers::MIN_POOLED {
        Payload::aligned(len)
    } else {
        super::buffers::reuse(len)
            .unwrap_or_else(|| Vec::with_capacity(len.min(FIRST_READ)))
            .into()
    };
    let start = payload.buffer().len();
    let buf = payload.buffer();
    while buf.len() - start < len {
        if buf.len() == buf.capacity() {
            let grown = (buf.capacity() * 2).max(FIRST_READ).min(start + len);
            buf.reserve_exact(grown - buf.len());
        }
        let want = (start + len - buf.len()) as u64;
        if (&mut *r).take(want).read_buf(buf).await? == 0 {
            return Err(FrameError::Truncated {
                expected: HEADER_LEN + len,
                got: HEADER_LEN + buf.len() - start,
            });
        }
    }
    check_crc(&header, &h, &payload, seal)?;
    Ok(RawFrame {
        kind: h.kind,
        payload,
    })
}

/// Write one frame and flush it, giving up after `within` (the connection is then unusable).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: FrameKind,
    payload: &[u8],
    within: Duration,
) -> Result<(), FrameError> {
    write_frame_sealed(w, kind, payload, within, Seal::Crc).await
}

/// [`write_frame`] on a link protected by `seal`.
pub async fn write_frame_sealed<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: FrameKind,
    payload: &[u8],
    within: Duration,
    seal: Seal,
) -> Result<(), FrameError> {
    let header = encode_header_sealed(kind, payload, seal)?;
    let write = async {
        w.write_all(&header).await?;
        w.write_all(payload).await?;
        w.flush().await
    };
    match tokio::time::timeout(within, write).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(FrameError::Timeout {
            what: "writing a frame",
            after: within,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    const T: Duration = Duration::from_secs(5);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        values: Vec<u64>,
    }

    fn sample() -> Sample {
        Sample {
            name: "sales".into(),
            values: vec![1, 2, u64::MAX],
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_code() {
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(FrameKind::from_code(0), None);
        assert_eq!(FrameKind::from_code(200), None);
    }

    #[test]
    fn a_value_round_trips_through_a_frame() {
        let bytes = encode_frame(FrameKind::Message, &sample()).unwrap();
        let (raw, used) = decode_frame(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(raw.kind, FrameKind::Message);
        let back: Sample = decode_payload(raw.kind, &raw.payload).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn the_header_starts_with_magic_and_version() {
        let bytes = encode_frame(FrameKind::Ping, &()).unwrap();
        assert_eq!(&bytes[..3], &[0x4C, 0x42, FRAME_VERSION]);
        assert_eq!(bytes[3], FrameKind::Ping.code());
        assert_eq!(bytes.len(), HEADER_LEN);
    }

    #[test]
    fn garbage_is_bad_magic() {
        let err = decode_frame(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(
            matches!(err, FrameError::BadMagic { found: 0x4745 }),
            "{err}"
        );
        assert!(err.to_string().contains("not a lifeboat frame"));
    }

    #[test]
    fn a_newer_frame_version_is_refused_by_name() {
        let mut bytes = encode_frame(FrameKind::Ping, &()).unwrap();
        bytes[2] = FRAME_VERSION + 1;
        let err = decode_frame(&bytes).unwrap_err();
        assert!(
            matches!(err, FrameError::UnsupportedVersion { .. }),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_kind_is_refused() {
        let mut bytes = encode_frame(FrameKind::Ping, &()).unwrap();
        bytes[3] = 99;
        assert!(matches!(
            decode_frame(&bytes).unwrap_err(),
            FrameError::UnknownKind { found: 99 }
        ));
    }

    #[test]
    fn a_length_over_the_limit_is_oversized_before_any_payload_is_read() {
        let mut bytes = encode_frame(FrameKind::Chunk, &()).unwrap();
        bytes[4..8].copy_from_slice(&(MAX_FRAME_LEN + 1).to_be_bytes());
        let err = decode_frame(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::Oversized { .. }), "{err}");
        assert!(err.to_string().contains("exceeds the limit"));
    }

    #[test]
    fn a_payload_over_the_limit_is_refused_at_encode() {
        let big = vec![0u8; MAX_FRAME_LEN as usize + 1];
        assert!(matches!(
            encode_header(FrameKind::Chunk, &big).unwrap_err(),
            FrameError::Oversized { .. }
        ));
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_checksum() {
        let mut bytes = encode_frame(FrameKind::Message, &sample()).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        let err = decode_frame(&bytes).unwrap_err();
        assert!(matches!(err, FrameError::BadChecksum { .. }), "{err}");
        assert!(err.to_string().contains("corrupted in transit"));
    }

    #[test]
    fn a_flipped_length_fails_the_checksum_not_the_decoder() {
        let mut bytes = encode_frame(FrameKind::Message, &sample()).unwrap();
        bytes[7] -= 1; // one byte shorter: the frame still fits in the buffer
        assert!(matches!(
            decode_frame(&bytes).unwrap_err(),
            FrameError::BadChecksum { .. }
        ));
    }

    #[test]
    fn a_short_buffer_is_truncated_at_every_cut() {
        let bytes = encode_frame(FrameKind::Message, &sample()).unwrap();
        for cut in 0..bytes.len() {
            let err = decode_frame(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_malformed() {
        let bytes = encode_frame(FrameKind::Message, &7u8).unwrap();
        let (raw, _) = decode_frame(&bytes).unwrap();
        let err = decode_payload::<Sample>(raw.kind, &raw.payload).unwrap_err();
        assert!(matches!(err, FrameError::Malformed { .. }), "{err}");
    }

    #[test]
    fn trailing_bytes_in_a_payload_are_malformed() {
        let payload = encode_payload(FrameKind::Message, &(5u32, 6u32)).unwrap();
        assert!(decode_payload::<u32>(FrameKind::Message, &payload).is_err());
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..300usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode_frame(&bytes);
            let _ = decode_payload::<Sample>(FrameKind::Message, &bytes);
        }
    }

    #[tokio::test]
    async fn frames_stream_over_an_async_pipe() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            let payload = encode_payload(FrameKind::Message, &sample()).unwrap();
            write_frame(&mut a, FrameKind::Message, &payload, T)
                .await
                .unwrap();
            write_frame(&mut a, FrameKind::Chunk, &[7u8; 1000], T)
                .await
                .unwrap();
        });
        let first = read_frame(&mut b, T).await.unwrap();
        assert_eq!(
            decode_payload::<Sample>(first.kind, &first.payload).unwrap(),
            sample()
        );
        let second = read_frame(&mut b, T).await.unwrap();
        assert_eq!(second.payload, vec![7u8; 1000]);
        writer.await.unwrap();
        assert!(matches!(
            read_frame(&mut b, T).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_frame_is_truncated_not_closed() {
        let bytes = encode_frame(FrameKind::Message, &sample()).unwrap();
        let mut cut: &[u8] = &bytes[..bytes.len() - 3];
        let err = read_frame(&mut cut, T).await.unwrap_err();
        assert!(
            matches!(err, FrameError::Truncated { expected, got } if got + 3 == expected),
            "{err}"
        );
        let mut header_only: &[u8] = &bytes[..5];
        assert!(matches!(
            read_frame(&mut header_only, T).await.unwrap_err(),
            FrameError::Truncated {
                expected: HEADER_LEN,
                got: 5
            }
        ));
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let (_a, mut b) = tokio::io::duplex(64);
        let err = read_frame(&mut b, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Timeout { .. }), "{err}");
    }
}
