//! Transport between sites and the arbiter: framed messages and artifact streaming over TCP.
//!
//! ```text
//! frame.rs   the frame format: magic, version, kind, length, crc32, payload; typed errors
//! wire.rs    the protocol's frames (Hello, Message, ShipOffer, Chunk...) and framed halves
//! inbox.rs   where received artifacts land, their names and manifests, the fsync steps
//! ship.rs    one artifact transfer: sender and receiver, resumable, bounded memory
//! link.rs    the handshake, the control link both ends share, backoff, errors
//! dialer.rs  Transport: dials one peer, keeps the control link up, ships artifacts
//! listener.rs Listener: accepts peers, serves control, ship and ping links
//! tls.rs     mutually authenticated TLS 1.3; a peer's identity from its certificate
//! ping.rs    path pings of an operator: round trips and throughput over a link of their own
//! tunnel.rs  a TCP connection to a service of the listener's site, over a link of its own
//! ```
//!
//! Use:
//!
//! ```no_run
//! # use lifeboat_io_tokio::transport::*;
//! # use lifeboat_core::{Peer, SiteId, Message, ArtifactMeta};
//! # async fn demo(meta: ArtifactMeta) -> anyhow::Result<()> {
//! let (events_tx, mut events) = tokio::sync::mpsc::channel(256);
//! let inbox = Inbox::open("/var/lib/lifeboat/inbox", vec!["sales".into()])?;
//! let me = Peer::Site(SiteId(1));
//! let _listener = Listener::bind("0.0.0.0:7400", me, inbox, TransportConfig::default(), events_tx.clone()).await?;
//! let primary = Transport::connect("primary.example:7400", me, TransportConfig::default(), events_tx);
//! primary.send_message(Message::Query { req: 1 }).await?;
//! primary.ship(meta, "/var/lib/lifeboat/outbox/sales_2026_11_22_03_05_00_tlog_0".as_ref()).await?;
//! while let Some(event) = events.recv().await {
//!     if let Some(input) = event.to_input() { /* engine.handle(now, input) */ }
//! }
//! # Ok(()) }
//! ```
//!
//! With `TransportConfig::tls` set (the default in every configuration file), every link is
//! TLS 1.3 with certificates on both ends, and a peer is who its certificate says. Without it
//! (`[tls] insecure = true`) there is no authentication or encryption at all.

mod buffers;
mod dialer;
pub(crate) mod direct;
pub mod frame;
pub mod inbox;
mod link;
mod listener;
pub mod ping;
pub mod progress;
mod ship;
pub mod tls;
pub mod tunnel;
pub mod wire;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use dialer::Transport;
pub use inbox::{Inbox, ManifestError};
pub use link::{check_hello, check_welcome, Backoff, HandshakeError, SendError, ShipError};
pub use listener::Listener;
pub use progress::{Direction, Transfer, Transfers};
pub use ship::{
    check_resume, resume_offset, ChunkCount, ResumeError, ShipErrorKind, Shipped, WrongLength,
};
pub use tunnel::LocalTunnel;

use lifeboat_core::{ArtifactMeta, Checksum, Input, Message, Peer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
pub use tls::{Names, Tls, TlsError, TlsFiles};

/// Bytes per artifact chunk (1 MiB): large enough that per-frame costs vanish, small enough that
/// a resumed transfer repeats little.
pub const DEFAULT_CHUNK_SIZE: usize = 1024 * 1024;
/// Chunks in flight between a disk thread and the network, on each side.
pub const DEFAULT_WINDOW: usize = 4;
/// TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// From connect to `Welcome`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// One frame in transit, a write, the receiver's fsync before `ShipDone`.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// A control link's dialer pings this often (the core's heartbeat is 1 s; pings only matter
/// when the engines are quiet).
pub const DEFAULT_KEEPALIVE_EVERY: Duration = Duration::from_secs(2);
/// A link with no frame for this long is dead: well under the 10 s lease, several pings long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// First reconnection delay; it doubles up to [`DEFAULT_BACKOFF_MAX`].
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Longest reconnection delay: a returning peer is found within this.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Timeouts, backoff and sizes of the transport. Every default is a constant above.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub io_timeout: Duration,
    pub keepalive_every: Duration,
    pub idle_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Bytes per chunk; clamped to the frame limit.
    pub chunk_size: usize,
    /// Chunks in flight between disk and network on each side.
    pub window: usize,
    /// Mutually authenticated TLS on every link; `None` is plain TCP (`insecure = true`).
    pub tls: Option<Arc<Tls>>,
}

impl PartialEq for TransportConfig {
    fn eq(&self, other: &Self) -> bool {
        let tls_eq = match (&self.tls, &other.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        tls_eq
            && (
                self.connect_timeout,
                self.handshake_timeout,
                self.io_timeout,
                self.keepalive_every,
                self.idle_timeout,
                self.backoff_initial,
                self.backoff_max,
                self.chunk_size,
                self.window,
            ) == (
                other.connect_timeout,
                other.handshake_timeout,
                other.io_timeout,
                other.keepalive_every,
                other.idle_timeout,
                other.backoff_initial,
                other.backoff_max,
                other.chunk_size,
                other.window,
            )
    }
}

impl Eq for TransportConfig {}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            keepalive_every: DEFAULT_KEEPALIVE_EVERY,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            chunk_size: DEFAULT_CHUNK_SIZE,
            window: DEFAULT_WINDOW,
            tls: None,
        }
    }
}

impl TransportConfig {
    /// What protects the bytes of this configuration's links.
    fn seal(&self) -> frame::Seal {
        match self.tls {
            Some(_) => frame::Seal::Tls,
            None => frame::Seal::Crc,
        }
    }

    fn chunk_len(&self) -> usize {
        self.chunk_size.clamp(1, frame::MAX_FRAME_LEN as usize)
    }
}

/// What the transport hands the agent loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message from another engine.
    Message { from: Peer, msg: Message },
    /// An artifact is in the inbox at `path`, fsynced and renamed, its manifest beside it.
    /// `computed` is the xxh3-64 of the bytes received; the core compares it with
    /// `meta.checksum` and decides.
    ArtifactReceived {
        meta: ArtifactMeta,
        computed: Checksum,
        path: PathBuf,
        from: Peer,
    },
}

impl Event {
    /// The engine input this event is. `None` for an artifact from the arbiter, which never
    /// ships any.
    pub fn to_input(&self) -> Option<Input> {
        match self {
            Event::Message { from, msg } => Some(Input::Message {
                from: *from,
                msg: msg.clone(),
            }),
            Event::ArtifactReceived {
                meta,
                computed,
                from: Peer::Site(site),
                ..
            } => Some(Input::ArtifactReceived {
                meta: *meta,
                computed: *computed,
                from: *site,
            }),
            Event::ArtifactReceived {
                from: Peer::Arbiter,
                ..
            } => None,
        }
    }
}
