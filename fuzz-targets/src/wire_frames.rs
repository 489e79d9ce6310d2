//! Fuzz body for the transport's frames and wire messages, what any TCP peer can send
//! (`lifeboat_io_tokio::transport::{frame, wire}`), the handshake checks and the ship receive
//! path's offsets and sizes.
//!
//! The first byte picks what the rest is:
//! - `0`: a byte stream, as is: split into frames by `decode_frame` and read by the stream
//!   reader `read_frame_now` (over an in-memory reader), frame after frame;
//! - `1`: one frame whose header and CRC are made valid (with the crate's own `encode_header`)
//!   around payload bytes from the input, so the fuzzer reaches the payload decoder (bincode)
//!   instead of bouncing off the checksum;
//! - `2`: a stream of such frames, some of them damaged afterwards (a flipped bit, a cut);
//! - `3`: a header with a valid magic and version announcing any length (up to `u32::MAX`)
//!   followed by fewer bytes than announced;
//! - `4`: the ship receive path: an offer's size, the bytes a partial file holds, the offset
//!   the receiver answers and a sequence of chunk lengths and `ShipEnd`.
//!
//! Checked:
//! - nothing panics and nothing waits: an in-memory reader never makes a read pend;
//! - every rejection is a typed `FrameError` with a message;
//! - a frame that decodes took exactly `HEADER_LEN + len` bytes, its header re-encodes to the
//!   same 12 bytes, and both readers (buffer and stream) return the same frames and the same kind
//!   of error;
//! - a frame whose payload decodes (`Frame::decode`) re-encodes to exactly the same payload
//!   bytes (fixed-width bincode with no maps or floats in the protocol has one encoding per
//!   value), and the whole frame to the same bytes;
//! - a length over `MAX_FRAME_LEN` is `Oversized` from the header alone; a shorter stream than
//!   announced is `Truncated` with the announced length (that the reader does not allocate the
//!   announced length up front is checked by a counting allocator in `tests/bounded_io.rs`);
//! - `check_hello` and `check_welcome` accept exactly the `Hello`/`Welcome` of this protocol
//!   version and name the frame kind or version they refuse;
//! - the receiver's `ChunkCount` agrees with exact (u128) arithmetic: it never counts past the
//!   offered size, never overflows, accepts `ShipEnd` only at exactly the size; `resume_offset`
//!   is aligned, at most what is held and at most the size; the sender's `check_resume` refuses
//!   exactly the offsets past the size.

use lifeboat_io_tokio::transport::frame::{
    decode_frame, decode_header, encode_header, read_frame_now, FrameError, FrameKind, RawFrame,
    FRAME_VERSION, HEADER_LEN, MAGIC, MAX_FRAME_LEN,
};
use lifeboat_io_tokio::transport::wire::{Frame, PROTOCOL_VERSION};
use lifeboat_io_tokio::transport::{
    check_hello, check_resume, check_welcome, resume_offset, ChunkCount, HandshakeError,
};

use crate::bytes::Bytes;
use crate::http_request::complete;

/// Alignment of a resumed receive (`transport::direct::ALIGN`, private to the adapter).
const RESUME_ALIGN: u64 = 4096;
/// Frames read from one stream at most: the input bounds it anyway, this bounds the time.
const MAX_FRAMES: usize = 64;

pub fn wire_frames(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => check_stream(rest),
        1 => {
            let mut r = Bytes::new(rest);
            let kind = pick_kind(&mut r);
            let frame = framed(kind, r.rest());
            check_stream(&frame);
        }
        2 => check_stream(&framed_stream(rest)),
        3 => check_short_stream(rest),
        _ => check_ship(rest),
    }
}

/// A kind, mostly a real one; now and then an unknown code.
fn pick_kind(r: &mut Bytes<'_>) -> u8 {
    let code = r.u8();
    if code < 240 {
        FrameKind::ALL[usize::from(code) % FrameKind::ALL.len()].code()
    } else {
        code
    }
}

/// A frame with a valid header and CRC around `payload` (the kind byte may be unknown, then
/// the CRC is computed as the encoder would for any kind).
fn framed(code: u8, payload: &[u8]) -> Vec<u8> {
    let kind = FrameKind::from_code(code).unwrap_or(FrameKind::Chunk);
    let mut out = match encode_header(kind, payload) {
        Ok(h) => h.to_vec(),
        // Only a payload over the limit fails, and the input is far smaller.
        Err(e) => panic!("a {}-byte payload has no header: {e}", payload.len()),
    };
    if code != kind.code() {
        out[3] = code;
    }
    out.extend_from_slice(payload);
    out
}

/// Several valid frames from the input, then damaged now and then.
fn framed_stream(rest: &[u8]) -> Vec<u8> {
    let mut r = Bytes::new(rest);
    let mut out = Vec::new();
    while !r.is_empty() && out.len() < 64 * 1024 {
        let kind = pick_kind(&mut r);
        let payload = r.slice(200);
        out.extend_from_slice(&framed(kind, payload));
    }
    let mut r = Bytes::new(rest);
    for _ in 0..r.below(3) {
        if out.is_empty() {
            break;
        }
        let at = r.below(out.len());
        if r.bool() {
            out[at] ^= 1 << r.below(8);
        } else {
            out.truncate(at);
        }
    }
    out
}

/// Split `bytes` into frames with both readers and check each frame and the error that ends it.
fn check_stream(bytes: &[u8]) {
    let mut at = 0;
    let mut stream: &[u8] = bytes;
    for _ in 0..MAX_FRAMES {
        let from_buffer = decode_frame(&bytes[at..]);
        let from_stream = complete(read_frame_now(&mut stream));
        match (from_buffer, from_stream) {
            (Ok((raw, used)), Ok(streamed)) => {
                assert_eq!(
                    used,
                    HEADER_LEN + raw.payload.len(),
                    "a frame takes its header and its payload"
                );
                assert!(at + used <= bytes.len());
                assert_eq!(raw, streamed, "the buffer and stream readers disagree");
                check_frame(&bytes[at..at + used], raw);
                at += used;
                assert_eq!(
                    stream.len(),
                    bytes.len() - at,
                    "the stream reader read past its frame"
                );
            }
            (Err(buffer), Err(streamed)) => {
                let _ = streamed.to_string();
                assert!(!buffer.to_string().is_empty());
                match (&buffer, &streamed) {
                    // The buffer reader calls an empty rest truncated; the stream calls it closed.
                    (FrameError::Truncated { got: 0, .. }, FrameError::Closed) => {
                        assert_eq!(at, bytes.len())
                    }
                    (
                        FrameError::Truncated { expected, got },
                        FrameError::Truncated {
                            expected: e2,
                            got: g2,
                        },
                    ) => assert_eq!(
                        (expected, got),
                        (e2, g2),
                        "the readers truncate the same bytes differently"
                    ),
                    _ => assert_eq!(
                        std::mem::discriminant(&buffer),
                        std::mem::discriminant(&streamed),
                        "the readers reject the same bytes differently: {buffer} / {streamed}"
                    ),
                }
                return;
            }
            (buffer, streamed) => panic!(
                "one reader accepts what the other refuses: buffer {buffer:?}, stream {streamed:?}"
            ),
        }
    }
}

/// A frame that passed its checks: header re-encodes, payload decodes and re-encodes, the
/// handshake checks agree with the frame.
fn check_frame(bytes: &[u8], raw: RawFrame) {
    let header = encode_header(raw.kind, &raw.payload).expect("a decoded payload fits a frame");
    assert_eq!(
        header[..],
        bytes[..HEADER_LEN],
        "the header does not re-encode"
    );
    let frame = match Frame::decode(raw.clone()) {
        Ok(frame) => frame,
        Err(e) => {
            assert!(
                matches!(e, FrameError::Malformed { kind, .. } if kind == raw.kind),
                "a payload that does not decode must be Malformed of its kind: {e}"
            );
            return;
        }
    };
    assert_eq!(frame.kind(), raw.kind);
    let payload = frame.encode_payload().expect("a decoded frame re-encodes");
    assert!(
        payload == raw.payload,
        "a {:?} frame re-encodes to other bytes ({} vs {})",
        raw.kind,
        payload.len(),
        raw.payload.len()
    );
    check_handshake(frame);
}

fn check_handshake(frame: Frame) {
    let kind = frame.kind();
    match check_hello(frame.clone()) {
        Ok(hello) => assert_eq!(hello.protocol, PROTOCOL_VERSION),
        Err(HandshakeError::Protocol { found, .. }) => {
            assert_eq!(kind, FrameKind::Hello);
            assert_ne!(found, PROTOCOL_VERSION)
        }
        Err(HandshakeError::Unexpected { got, .. }) => {
            assert_eq!(got, kind);
            assert_ne!(kind, FrameKind::Hello)
        }
        Err(e) => panic!("a listener's handshake refused a {kind:?} frame oddly: {e}"),
    }
    match check_welcome(frame) {
        Ok(welcome) => assert_eq!(welcome.protocol, PROTOCOL_VERSION),
        Err(HandshakeError::ListenerProtocol { found }) => {
            assert_eq!(kind, FrameKind::Welcome);
            assert_ne!(found, PROTOCOL_VERSION)
        }
        Err(HandshakeError::Refused { reason }) => {
            assert_eq!(kind, FrameKind::Close);
            let _ = reason;
        }
        Err(HandshakeError::Unexpected { got, .. }) => {
            assert_eq!(got, kind);
            assert!(kind != FrameKind::Welcome && kind != FrameKind::Close);
        }
        Err(e) => panic!("a dialer's handshake refused a {kind:?} frame oddly: {e}"),
    }
}

/// A well-formed header announcing any length, then fewer bytes than that.
fn check_short_stream(rest: &[u8]) {
    let mut r = Bytes::new(rest);
    let kind = FrameKind::ALL[r.below(FrameKind::ALL.len())];
    let len = match r.below(4) {
        0 => MAX_FRAME_LEN,
        1 => MAX_FRAME_LEN.saturating_add(1 + u32::from(r.u16())),
        2 => u32::MAX - u32::from(r.u8()),
        _ => r.u32(),
    };
    let mut header = [0u8; HEADER_LEN];
    header[0..2].copy_from_slice(&MAGIC.to_be_bytes());
    header[2] = FRAME_VERSION;
    header[3] = kind.code();
    header[4..8].copy_from_slice(&len.to_be_bytes());
    header[8..12].copy_from_slice(&r.u32().to_be_bytes());
    let sent = r.rest();
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(sent);
    let announced = HEADER_LEN as u64 + u64::from(len);
    if len > MAX_FRAME_LEN {
        let e = decode_header(&header).expect_err("an oversized length passed the header check");
        assert!(
            matches!(e, FrameError::Oversized { len: l, max: MAX_FRAME_LEN, .. } if l == u64::from(len)),
            "{e}"
        );
    }
    let from_stream = complete(read_frame_now(&mut &bytes[..]));
    match from_stream {
        Err(FrameError::Oversized { .. }) => assert!(len > MAX_FRAME_LEN),
        Err(FrameError::Truncated { expected, got }) => {
            assert!((bytes.len() as u64) < announced);
            assert_eq!(expected as u64, announced);
            assert_eq!(got, bytes.len());
        }
        // Enough bytes arrived: the checksum (random here) decides.
        Ok(raw) => assert_eq!(raw.payload.len() as u64, u64::from(len)),
        Err(FrameError::BadChecksum { .. }) => assert!(bytes.len() as u64 >= announced),
        Err(e) => panic!("a short stream fails oddly: {e}"),
    }
    check_stream(&bytes);
}

/// The receiver's and the sender's bookkeeping of one transfer, against exact arithmetic.
fn check_ship(rest: &[u8]) {
    let mut r = Bytes::new(rest);
    // Sizes small, near a block boundary, or near the end of u64.
    fn pick(r: &mut Bytes<'_>) -> u64 {
        match r.below(4) {
            0 => u64::from(r.u16()),
            1 => (RESUME_ALIGN * u64::from(r.u8()))
                .saturating_add(u64::from(r.u8()))
                .saturating_sub(128),
            2 => u64::MAX - u64::from(r.u16()),
            _ => r.u64(),
        }
    }
    let size = pick(&mut r);
    let held = if r.bool() { pick(&mut r) } else { size };

    let offset = resume_offset(held, size);
    assert!(
        offset <= size && offset <= held,
        "resume at {offset} of {held} held, {size} size"
    );
    assert_eq!(offset % RESUME_ALIGN, 0, "a resume offset is whole blocks");
    assert!(
        held > size || held - offset < RESUME_ALIGN,
        "a resume drops at most a partial block"
    );

    // What the receiver answers may be anything (a confused or hostile receiver).
    let answered = if r.bool() { offset } else { pick(&mut r) };
    match check_resume(answered, size) {
        Ok(left) => assert_eq!(u128::from(left) + u128::from(answered), u128::from(size)),
        Err(e) => {
            assert!(answered > size);
            assert!(e.to_string().contains(&answered.to_string()));
        }
    }

    let mut count = match ChunkCount::new(answered, size) {
        Ok(c) => c,
        Err(e) => {
            assert!(answered > size, "{e}");
            return;
        }
    };
    let mut model = u128::from(answered);
    while !r.is_empty() {
        if r.chance(16) {
            let end = count.end();
            assert_eq!(
                end.is_ok(),
                model == u128::from(size),
                "ShipEnd at {model} of {size}"
            );
            continue;
        }
        let len = match r.below(3) {
            0 => usize::from(r.u8()),
            1 => r.u32() as usize % (MAX_FRAME_LEN as usize + 1),
            _ => usize::try_from(u64::MAX - count.received()).unwrap_or(usize::MAX),
        };
        let after = model + len as u128;
        match count.chunk(len) {
            Ok(got) => {
                assert!(after <= u128::from(size), "counted past the size");
                assert_eq!(u128::from(got), after);
                model = after;
            }
            Err(e) => {
                assert!(
                    after > u128::from(size),
                    "a chunk that fits was refused: {e}"
                );
                assert_eq!(e.size, size);
                assert_eq!(
                    u128::from(count.received()),
                    model,
                    "a refused chunk counted"
                );
            }
        }
    }
    assert!(u128::from(count.received()) <= u128::from(size));
    assert_eq!(count.size(), size);
}
