//! What both ends of a connection share: the handshake, the control link (messages both ways,
//! keepalives, why it ended), backoff, and the errors callers see.
//!
//! A [`Transport`](super::Transport) keeps one *control* link to its peer (reconnecting with
//! capped exponential backoff, pinging to notice a dead peer) and opens a fresh *ship* link for
//! every artifact, so a large transfer never delays a heartbeat and a broken transfer never takes
//! the control link down. Both sides send messages over the control link; everything received
//! becomes an [`Event`] on the channel the caller gave.

use super::frame::{FrameError, FrameKind};
use super::ship::{KeyText, ShipErrorKind};
use super::tls::{ReadHalf, Stream, WriteHalf};
use super::wire::{Frame, FrameReader, FrameWriter, Hello, LinkKind, Welcome, PROTOCOL_VERSION};
use super::{Event, TransportConfig};
use lifeboat_core::{ArtifactKey, Peer};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Capped exponential backoff: `initial`, doubling, never above `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The delay before the next attempt; the one after is twice as long, up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// After a success: start again from `initial`.
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

/// A message that could not be sent. Messages are not queued across reconnections: the engines
/// re-send what matters on their own timers.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no link to {addr} within {waited:?}; it keeps reconnecting with backoff")]
    NotConnected { addr: String, waited: Duration },
    #[error("{peer:?} has no open control link to this listener")]
    NoLinkTo { peer: Peer },
    #[error("sending to {to}: {source}; the link is re-established")]
    Link { to: String, source: FrameError },
}

/// An artifact that could not be shipped: which one, from where, to where, and why.
#[derive(Debug)]
pub struct ShipError {
    pub key: ArtifactKey,
    pub path: PathBuf,
    pub to: String,
    pub kind: ShipErrorKind,
}

impl fmt::Display for ShipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shipping the {} from {} to {} failed: {}",
            KeyText(&self.key),
            self.path.display(),
            self.to,
            self.kind
        )
    }
}

impl std::error::Error for ShipError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.kind)
    }
}

pub(super) type SharedWriter = Arc<Mutex<FrameWriter<WriteHalf>>>;

/// One open control link: its writer, shared by everyone who sends, and a bell any of them rings
/// when a write fails so the reading side tears the link down.
#[derive(Clone)]
pub(super) struct ControlLink {
    pub(super) remote: Peer,
    pub(super) writer: SharedWriter,
    pub(super) broken: Arc<Notify>,
}

impl ControlLink {
    pub(super) fn new(remote: Peer, writer: FrameWriter<WriteHalf>) -> ControlLink {
        ControlLink {
            remote,
            writer: Arc::new(Mutex::new(writer)),
            broken: Arc::new(Notify::new()),
        }
    }

    pub(super) async fn send(&self, frame: &Frame) -> Result<(), FrameError> {
        let result = self.writer.lock().await.send(frame).await;
        if result.is_err() {
            self.broken.notify_one();
        }
        result
    }
}

/// A connection after the handshake.
pub(super) struct Dialed {
    pub(super) remote: Peer,
    pub(super) reader: FrameReader<ReadHalf>,
    pub(super) writer: FrameWriter<WriteHalf>,
}

/// Why a handshake failed: what the first frame of a connection was, and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("expected {expected}, got a {got:?} frame")]
    Unexpected {
        expected: &'static str,
        got: FrameKind,
    },
    /// The dialer said who it is but speaks another protocol version.
    #[error("protocol version {found} is not supported; this side speaks {PROTOCOL_VERSION}")]
    Protocol { found: u16, peer: Peer },
    /// The listener answers with another protocol version.
    #[error("the listener speaks protocol {found}, this side {PROTOCOL_VERSION}")]
    ListenerProtocol { found: u16 },
    #[error("refused: {reason}")]
    Refused { reason: String },
}

/// The listener's check of a connection's first frame: a `Hello` of this protocol version.
/// Pure, so the fuzz targets drive it with every frame the decoder lets through.
pub fn check_hello(frame: Frame) -> Result<Hello, HandshakeError> {
    match frame {
        Frame::Hello(hello) if hello.protocol == PROTOCOL_VERSION => Ok(hello),
        Frame::Hello(hello) => Err(HandshakeError::Protocol {
            found: hello.protocol,
            peer: hello.peer,
        }),
        other => Err(HandshakeError::Unexpected {
            expected: "Hello",
            got: other.kind(),
        }),
    }
}

/// The dialer's check of the listener's answer: a `Welcome` of this protocol version.
pub fn check_welcome(frame: Frame) -> Result<Welcome, HandshakeError> {
    match frame {
        Frame::Welcome(welcome) if welcome.protocol == PROTOCOL_VERSION => Ok(welcome),
        Frame::Welcome(Welcome { protocol, .. }) => {
            Err(HandshakeError::ListenerProtocol { found: protocol })
        }
        Frame::Close { reason } => Err(HandshakeError::Refused { reason }),
        other => Err(HandshakeError::Unexpected {
            expected: "Welcome",
            got: other.kind(),
        }),
    }
}

/// Connect, say `Hello`, expect `Welcome`.
pub(super) async fn dial(
    addr: &str,
    me: Peer,
    link: LinkKind,
    cfg: &TransportConfig,
) -> Result<Dialed, ShipErrorKind> {
    let stream = tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ShipErrorKind::ConnectTimeout(cfg.connect_timeout))?
        .map_err(ShipErrorKind::Connect)?;
    let _ = stream.set_nodelay(true);
    // With TLS, who the listener is comes from its certificate; its `Welcome` must agree.
    let (stream, proven): (Stream, Option<Peer>) = match &cfg.tls {
        None => (Box::new(stream), None),
        Some(tls) => {
            let (s, peer) = tokio::time::timeout(cfg.handshake_timeout, tls.connect(stream))
                .await
                .map_err(|_| {
                    ShipErrorKind::Handshake(format!(
                        "no TLS handshake within {:?}",
                        cfg.handshake_timeout
                    ))
                })?
                .map_err(ShipErrorKind::Handshake)?;
            (s, Some(peer))
        }
    };
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r).sealed(cfg.seal());
    let mut writer = FrameWriter::new(w, cfg.io_timeout).sealed(cfg.seal());
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: me,
        link,
    };
    writer.send(&Frame::Hello(hello)).await?;
    let welcome = check_welcome(reader.next(cfg.handshake_timeout).await?)
        .map_err(|e| ShipErrorKind::Handshake(e.to_string()))?;
    if let Some(proven) = proven.filter(|p| *p != welcome.peer) {
        return Err(ShipErrorKind::Handshake(format!(
            "the listener's certificate is {proven:?}'s but it says it is {:?}",
            welcome.peer
        )));
    }
    Ok(Dialed {
        remote: welcome.peer,
        reader,
        writer,
    })
}

/// Why a control link ended.
pub(super) enum LinkEnd {
    PeerClosed,
    PeerSaid(String),
    Failed(FrameError),
    Unexpected(FrameKind),
    WriteFailed,
    EventsDropped,
}

impl fmt::Display for LinkEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkEnd::PeerClosed => write!(f, "the peer closed the connection"),
            LinkEnd::PeerSaid(reason) => write!(f, "the peer closed the connection: {reason}"),
            LinkEnd::Failed(e) => write!(f, "{e}"),
            LinkEnd::Unexpected(kind) => write!(f, "unexpected {kind:?} frame on a control link"),
            LinkEnd::WriteFailed => write!(f, "a write failed"),
            LinkEnd::EventsDropped => write!(f, "nobody takes events any more (shutting down)"),
        }
    }
}

/// Deliver a control link's messages as events until it ends.
pub(super) async fn run_control_link(
    reader: &mut FrameReader<ReadHalf>,
    link: &ControlLink,
    events: &mpsc::Sender<Event>,
    idle_timeout: Duration,
) -> LinkEnd {
    loop {
        // Dropping a half-read frame is fine here: every branch but a frame ends the link.
        let frame = tokio::select! {
            biased;
            () = link.broken.notified() => return LinkEnd::WriteFailed,
            frame = reader.next(idle_timeout) => frame,
        };
        match frame {
            Ok(Frame::Message(msg)) => {
                let from = link.remote;
                if events.send(Event::Message { from, msg }).await.is_err() {
                    return LinkEnd::EventsDropped;
                }
            }
            Ok(Frame::Ping) => {
                if let Err(e) = link.send(&Frame::Pong).await {
                    return LinkEnd::Failed(e);
                }
            }
            Ok(Frame::Pong) => {}
            Ok(Frame::Close { reason }) => return LinkEnd::PeerSaid(reason),
            Ok(other) => return LinkEnd::Unexpected(other.kind()),
            Err(FrameError::Closed) => return LinkEnd::PeerClosed,
            Err(e) => return LinkEnd::Failed(e),
        }
    }
}

/// Log why a control link ended and, when it is our complaint, tell the peer.
pub(super) async fn finish_control_link(link: &ControlLink, addr: &str, end: &LinkEnd) {
    match end {
        LinkEnd::Failed(_) | LinkEnd::Unexpected(_) => {
            warn!(%addr, peer = ?link.remote, reason = %end, "closing control link");
            link.writer.lock().await.close(&end.to_string()).await;
        }
        LinkEnd::WriteFailed | LinkEnd::PeerSaid(_) => {
            warn!(%addr, peer = ?link.remote, reason = %end, "control link down");
        }
        LinkEnd::PeerClosed | LinkEnd::EventsDropped => {
            info!(%addr, peer = ?link.remote, reason = %end, "control link closed");
            link.writer.lock().await.shutdown().await;
        }
    }
}

/// A task that is aborted when this guard is dropped.
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The dialer's keepalive: a `Ping` every `every`, so both sides' idle timeouts only fire on a
/// dead peer.
pub(super) fn spawn_keepalive(link: ControlLink, every: Duration) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if link.send(&Frame::Ping).await.is_err() {
                return;
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
