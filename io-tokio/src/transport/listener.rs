//! The accepting side: [`Listener`] serves control and ship links and receives artifacts into its
//! inbox.

use super::frame::FrameError;
use super::inbox::Inbox;
use super::link::{
    check_hello, finish_control_link, run_control_link, AbortOnDrop, ControlLink, LinkEnd,
    SendError,
};
use super::ship::receive_artifact;
use super::tls::{ReadHalf, Stream, WriteHalf};
use super::wire::{Frame, FrameReader, FrameWriter, LinkKind, Welcome, PROTOCOL_VERSION};
use super::{Event, TransportConfig};
use lifeboat_core::{Message, Peer};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// The accepting side: serves control and ship links, receives artifacts into its inbox.
pub struct Listener {
    local_addr: SocketAddr,
    shared: Arc<ListenShared>,
    _accept_loop: AbortOnDrop,
}

struct ListenShared {
    me: Peer,
    inbox: Inbox,
    cfg: TransportConfig,
    events: mpsc::Sender<Event>,
    /// The newest control link of each peer, with the id of its connection.
    peers: std::sync::Mutex<HashMap<Peer, (u64, ControlLink)>>,
    /// Connections that have not completed their handshake: in all, and per source address.
    handshaking: std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Payload bytes that all links may be reading at once (see `FrameReader::with_budget`).
    budget: Arc<Semaphore>,
    /// Refused connections, logged once per kind per interval.
    refusals: RefusalLog,
    /// Where `Tunnel` links are relayed to, by service (none: refused).
    tunnel_targets: std::sync::Mutex<Vec<Option<String>>>,
}

/// Connections still in their handshake, per listener: beyond this a new one is closed at once.
pub const MAX_HANDSHAKING: usize = 64;
/// Connections still in their handshake from one source address.
pub const MAX_HANDSHAKING_PER_ADDR: usize = 8;
/// Payload bytes all links of a listener may be reading at once: a few frames at the limit, so
/// 150 connections that each announce a 4 MiB frame hold this much, not 600 MiB.
pub const FRAME_BUDGET: u32 = 16 * 1024 * 1024;
/// A kind of refused connection is logged at most once per this interval (with a count).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// One log line per kind of refused connection per interval, not one per connection; every
/// refusal counted by kind.
#[derive(Default)]
struct RefusalLog {
    kinds: std::sync::Mutex<HashMap<&'static str, (Option<std::time::Instant>, u64)>>,
    counts: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl RefusalLog {
    fn note(&self, kind: &'static str, addr: SocketAddr, detail: &str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let (last, quiet) = kinds.entry(kind).or_default();
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < REFUSAL_LOG_EVERY) {
            *quiet += 1;
            return;
        }
        warn!(%addr, refused = kind, %detail, more_since_last_line = *quiet, "connection refused");
        *last = Some(now);
        *quiet = 0;
    }
}

/// A connection's place among those still handshaking; given back when dropped.
struct Handshaking {
    shared: Arc<ListenShared>,
    ip: IpAddr,
}

impl Handshaking {
    fn take(shared: &Arc<ListenShared>, ip: IpAddr) -> Result<Handshaking, &'static str> {
        let mut h = shared.handshaking.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_addr) = &mut *h;
        let here = per_addr.get(&ip).copied().unwrap_or(0);
        if *total >= MAX_HANDSHAKING {
            return Err("too many connections in their handshake");
        }
        if here >= MAX_HANDSHAKING_PER_ADDR {
            return Err("too many connections in their handshake from one address");
        }
        *total += 1;
        per_addr.insert(ip, here + 1);
        Ok(Handshaking {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        let mut h = self
            .shared
            .handshaking
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (total, per_addr) = &mut *h;
        *total = total.saturating_sub(1);
        if let Some(n) = per_addr.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_addr.remove(&self.ip);
            }
        }
    }
}

impl Listener {
    /// Listen on `addr` as `me`. Messages and received artifacts arrive on `events`. Dropping
    /// the `Listener` closes every connection it accepted.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        me: Peer,
        inbox: Inbox,
        cfg: TransportConfig,
        events: mpsc::Sender<Event>,
    ) -> io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(ListenShared {
            me,
            inbox,
            cfg,
            events,
            peers: std::sync::Mutex::new(HashMap::new()),
            handshaking: std::sync::Mutex::new((0, HashMap::new())),
            budget: Arc::new(Semaphore::new(FRAME_BUDGET as usize)),
            refusals: RefusalLog::default(),
            tunnel_targets: std::sync::Mutex::new(Vec::new()),
        });
        let accept_loop = AbortOnDrop(tokio::spawn(accept_loop(listener, shared.clone())));
        info!(%local_addr, ?me, "listening");
        Ok(Listener {
            local_addr,
            shared,
            _accept_loop: accept_loop,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Relay `Tunnel` links from sites for service `i` to `targets[i]` (a `host:port` of this
    /// site's service, e.g. a database's PostgreSQL server on loopback); a service without a
    /// target is refused (none has one by default). Links already open keep their target.
    pub fn set_tunnel_targets(&self, targets: Vec<Option<String>>) {
        *self
            .shared
            .tunnel_targets
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = targets;
    }

    /// Refused connections since start, by kind (`connection cap`, `tls handshake failed`,
    /// `identity mismatch`, `handshake refused`, `handshake failed`).
    pub fn refusals(&self) -> Vec<(&'static str, u64)> {
        let counts = self
            .shared
            .refusals
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// Payload bytes of the frame budget not taken by links reading a large frame now.
    pub fn frame_budget_free(&self) -> usize {
        self.shared.budget.available_permits()
    }

    pub fn inbox(&self) -> &Inbox {
        &self.shared.inbox
    }

    /// The peers with an open control link to this listener.
    pub fn connected_peers(&self) -> Vec<Peer> {
        let mut peers: Vec<Peer> = self.shared.peers().keys().copied().collect();
        peers.sort();
        peers
    }

    /// Send a message to a peer over the control link it opened to us.
    pub async fn send_to(&self, to: Peer, msg: Message) -> Result<(), SendError> {
        let link = self
            .shared
            .peers()
            .get(&to)
            .map(|(_, link)| link.clone())
            .ok_or(SendError::NoLinkTo { peer: to })?;
        link.send(&Frame::Message(msg))
            .await
            .map_err(|source| SendError::Link {
                to: format!("{to:?}"),
                source,
            })
    }
}

impl ListenShared {
    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<Peer, (u64, ControlLink)>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ListenShared>) {
    let mut connections = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => match Handshaking::take(&shared, addr.ip()) {
                    Ok(place) => {
                        next_id += 1;
                        connections.spawn(serve_connection(stream, addr, place, next_id));
                    }
                    // Closed before a byte is read: an unknown peer costs a descriptor for an
                    // instant, nothing more.
                    Err(why) => {
                        shared.refusals.note("connection cap", addr, why);
                        drop(stream);
                    }
                },
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Close a connection because of something the peer did, saying why (log and `Close` frame).
async fn hang_up<W: tokio::io::AsyncWrite + Unpin>(
    writer: &mut FrameWriter<W>,
    addr: SocketAddr,
    peer: Option<Peer>,
    reason: impl fmt::Display,
) {
    let reason = reason.to_string();
    warn!(%addr, ?peer, %reason, "closing connection");
    writer.close(&reason).await;
}

async fn serve_connection(stream: TcpStream, addr: SocketAddr, place: Handshaking, id: u64) {
    let shared = place.shared.clone();
    let cfg = &shared.cfg;
    let _ = stream.set_nodelay(true);
    // With TLS the peer is who its certificate says, decided before a frame is read.
    let (stream, proven): (Stream, Option<Peer>) = match &cfg.tls {
        None => (Box::new(stream), None),
        Some(tls) => match tokio::time::timeout(cfg.handshake_timeout, tls.accept(stream)).await {
            Ok(Ok((s, peer))) => (s, Some(peer)),
            Ok(Err(why)) => return shared.refusals.note("tls handshake failed", addr, &why),
            Err(_) => {
                let why = format!("no TLS handshake within {:?}", cfg.handshake_timeout);
                return shared.refusals.note("tls handshake failed", addr, &why);
            }
        },
    };
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r)
        .with_budget(shared.budget.clone())
        .sealed(cfg.seal());
    let mut writer = FrameWriter::new(w, cfg.io_timeout).sealed(cfg.seal());
    let hello = match reader
        .handshake(cfg.handshake_timeout)
        .await
        .map(check_hello)
    {
        Ok(Ok(hello)) => hello,
        Ok(Err(e)) => {
            // Said to the peer every time, logged once per interval: a flood of bad `Hello`s
            // must not flood the log.
            shared
                .refusals
                .note("handshake refused", addr, &e.to_string());
            writer.close(&e.to_string()).await;
            return;
        }
        Err(e) => {
            shared
                .refusals
                .note("handshake failed", addr, &e.to_string());
            writer.close(&format!("handshake: {e}")).await;
            return;
        }
    };
    if let Some(proven) = proven.filter(|p| *p != hello.peer) {
        let why = format!(
            "the certificate is {proven:?}'s but the Hello claims {:?}",
            hello.peer
        );
        shared.refusals.note("identity mismatch", addr, &why);
        writer.close(&why).await;
        return;
    }
    drop(place);
    let shared = &*shared;
    let from = hello.peer;
    let welcome = Frame::Welcome(Welcome {
        protocol: PROTOCOL_VERSION,
        peer: shared.me,
    });
    debug!(%addr, peer = ?from, link = ?hello.link, "connection accepted");
    match hello.link {
        LinkKind::Control => serve_control(reader, writer, welcome, addr, from, shared, id).await,
        LinkKind::Ship => {
            if let Err(e) = writer.send(&welcome).await {
                warn!(%addr, peer = ?from, error = %e, "handshake failed");
                return;
            }
            serve_ship(reader, writer, addr, from, shared).await
        }
        LinkKind::Tunnel { service } => {
            let target = shared
                .tunnel_targets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(service as usize)
                .cloned()
                .flatten();
            match super::tunnel::serve_tunnel(reader, writer, welcome, from, target, cfg).await {
                Ok((out, inn)) => {
                    debug!(%addr, peer = ?from, bytes_out = out, bytes_in = inn, "tunnel closed")
                }
                Err(why) => warn!(%addr, peer = ?from, %why, "tunnel ended"),
            }
        }
        LinkKind::Ping => {
            let mut writer = writer;
            let mut reader = reader;
            if let Err(e) = writer.send(&welcome).await {
                warn!(%addr, peer = ?from, error = %e, "handshake failed");
                return;
            }
            match super::ping::serve_ping(&mut reader, &mut writer, cfg.idle_timeout).await {
                Ok(served) => {
                    info!(%addr, peer = ?from, pings = served.pings, bytes = served.bytes, "path ping served");
                    writer.shutdown().await;
                }
                Err(reason) => hang_up(&mut writer, addr, Some(from), reason).await,
            }
        }
    }
}

async fn serve_control(
    mut reader: FrameReader<ReadHalf>,
    writer: FrameWriter<WriteHalf>,
    welcome: Frame,
    addr: SocketAddr,
    from: Peer,
    shared: &ListenShared,
    id: u64,
) {
    let link = ControlLink::new(from, writer);
    // Registered before `Welcome`: once the dialer is connected, `send_to` reaches it.
    shared.peers().insert(from, (id, link.clone()));
    let end = match link.send(&welcome).await {
        Ok(()) => {
            run_control_link(&mut reader, &link, &shared.events, shared.cfg.idle_timeout).await
        }
        Err(e) => LinkEnd::Failed(e),
    };
    {
        let mut peers = shared.peers();
        if peers.get(&from).is_some_and(|(owner, _)| *owner == id) {
            peers.remove(&from);
        }
    }
    finish_control_link(&link, &addr.to_string(), &end).await;
}

async fn serve_ship(
    mut reader: FrameReader<ReadHalf>,
    mut writer: FrameWriter<WriteHalf>,
    addr: SocketAddr,
    from: Peer,
    shared: &ListenShared,
) {
    let cfg = &shared.cfg;
    let mut served = 0u64;
    loop {
        match reader.next(cfg.idle_timeout).await {
            Ok(Frame::ShipOffer(meta)) => {
                let received = match receive_artifact(
                    &shared.inbox,
                    meta,
                    &mut reader,
                    &mut writer,
                    cfg,
                )
                .await
                {
                    Ok(received) => received,
                    Err(e) => return hang_up(&mut writer, addr, Some(from), e).await,
                };
                info!(
                    %addr,
                    peer = ?from,
                    path = %received.path.display(),
                    resumed_from = received.resumed_from,
                    computed = %received.computed,
                    "artifact received"
                );
                let computed = received.computed;
                let event = Event::ArtifactReceived {
                    meta: received.meta,
                    computed,
                    path: received.path,
                    from,
                };
                if shared.events.send(event).await.is_err() {
                    return hang_up(&mut writer, addr, Some(from), "shutting down").await;
                }
                if let Err(e) = writer.send(&Frame::ShipDone { computed }).await {
                    warn!(%addr, peer = ?from, error = %e, "could not confirm a received artifact; the sender will offer it again");
                    return;
                }
                served += 1;
            }
            // The sender keeps a link between transfers while they come often; one it no
            // longer needs is closed here, quietly.
            Err(FrameError::Timeout { .. }) if served > 0 => {
                debug!(%addr, peer = ?from, served, "idle ship link closed");
                writer.close("idle").await;
                return;
            }
            Ok(Frame::Ping) => {
                if writer.send(&Frame::Pong).await.is_err() {
                    return;
                }
            }
            Ok(Frame::Close { reason }) => {
                debug!(%addr, peer = ?from, %reason, "ship link closed by the peer");
                return;
            }
            Ok(other) => {
                let reason = format!("unexpected {:?} frame on a ship link", other.kind());
                return hang_up(&mut writer, addr, Some(from), reason).await;
            }
            Err(FrameError::Closed) => return,
            Err(e) => return hang_up(&mut writer, addr, Some(from), e).await,
        }
    }
}
