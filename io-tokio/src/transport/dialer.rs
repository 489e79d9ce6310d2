//! The dialing side: [`Transport`] keeps a control link to one peer and ships artifacts to it.

use super::link::{
    dial, finish_control_link, run_control_link, spawn_keepalive, AbortOnDrop, Backoff,
    ControlLink, Dialed, LinkEnd, SendError, ShipError,
};
use super::ship::{send_artifact, ShipErrorKind, ShipFailure, Shipped};
use super::wire::{Frame, LinkKind};
use super::{Event, TransportConfig};
use lifeboat_core::{ArtifactMeta, Message, Peer};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// The dialing side of a peer: a control link kept open, and artifact shipping.
pub struct Transport {
    shared: Arc<DialShared>,
    _dial_loop: AbortOnDrop,
}

struct DialShared {
    addr: String,
    me: Peer,
    cfg: TransportConfig,
    link: watch::Sender<Option<ControlLink>>,
    transfers: super::Transfers,
    /// Ship links whose last transfer succeeded, kept for the next one (see [`IdleShipLink`]).
    idle: Mutex<Vec<IdleShipLink>>,
}

/// A ship link kept open after a transfer: logs every second would otherwise pay a TCP and TLS
/// handshake each (on both sites, a large part of the primary's CPU at 100 tx/s). The receiver
/// serves any number of offers on one ship link and closes it after `idle_timeout` without a
/// frame; a link is reused only while idle for less than half of that, and only with the keys
/// it was made with (a reload of the certificates means new links).
struct IdleShipLink {
    since: Instant,
    tls_generation: u64,
    link: Dialed,
}

/// At most this many ship links are kept idle per peer (transfers may run side by side).
const IDLE_SHIP_LINKS: usize = 2;

impl DialShared {
    fn tls_generation(&self) -> u64 {
        self.cfg.tls.as_ref().map_or(0, |t| t.generation())
    }

    fn take_idle(&self) -> Option<Dialed> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let (max_age, generation) = (self.cfg.idle_timeout / 2, self.tls_generation());
        while let Some(l) = idle.pop() {
            if l.since.elapsed() < max_age && l.tls_generation == generation {
                return Some(l.link);
            }
        }
        None
    }

    /// Send one artifact on `conn`: kept for the next transfer when it went well, closed
    /// otherwise.
    async fn send_on(
        &self,
        mut conn: Dialed,
        meta: &ArtifactMeta,
        path: &Path,
    ) -> Result<Shipped, ShipFailure> {
        let result = send_artifact(
            &mut conn.reader,
            &mut conn.writer,
            meta,
            path,
            &self.cfg,
            &self.transfers,
        )
        .await;
        if result.is_ok() {
            self.keep_idle(conn);
        } else {
            conn.writer.shutdown().await;
        }
        result
    }

    fn keep_idle(&self, link: Dialed) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_SHIP_LINKS {
            idle.push(IdleShipLink {
                since: Instant::now(),
                tls_generation: self.tls_generation(),
                link,
            });
        }
    }
}

impl Transport {
    /// Start dialing `addr` (`host:port`) as `me`, in the background, reconnecting forever with
    /// capped exponential backoff. Messages the peer sends arrive on `events`. Must be called
    /// inside a tokio runtime. Dropping the `Transport` closes the link.
    pub fn connect(
        addr: impl Into<String>,
        me: Peer,
        cfg: TransportConfig,
        events: mpsc::Sender<Event>,
    ) -> Transport {
        let shared = Arc::new(DialShared {
            addr: addr.into(),
            me,
            cfg,
            link: watch::Sender::new(None),
            transfers: super::Transfers::default(),
            idle: Mutex::new(Vec::new()),
        });
        let dial_loop = AbortOnDrop(tokio::spawn(dial_loop(shared.clone(), events)));
        Transport {
            shared,
            _dial_loop: dial_loop,
        }
    }

    /// The artifacts being shipped now, with their byte progress.
    pub fn transfers(&self) -> &super::Transfers {
        &self.shared.transfers
    }

    /// The timeouts, sizes and TLS this transport dials with.
    pub fn config(&self) -> &TransportConfig {
        &self.shared.cfg
    }

    /// The address this transport dials.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// The peer on the other end, while the control link is up.
    pub fn remote(&self) -> Option<Peer> {
        self.shared.link.borrow().as_ref().map(|l| l.remote)
    }

    /// Wait up to `within` for the control link; the peer on the other end.
    pub async fn wait_connected(&self, within: Duration) -> Option<Peer> {
        self.wait_link(within).await.map(|l| l.remote)
    }

    async fn wait_link(&self, within: Duration) -> Option<ControlLink> {
        let mut rx = self.shared.link.subscribe();
        let link = match tokio::time::timeout(within, rx.wait_for(Option::is_some)).await {
            Ok(Ok(link)) => link.clone(),
            _ => None,
        };
        link
    }

    /// Send a message over the control link, waiting up to the connect timeout for it to be up.
    pub async fn send_message(&self, msg: Message) -> Result<(), SendError> {
        let waited = self.shared.cfg.connect_timeout;
        let link = self
            .wait_link(waited)
            .await
            .ok_or_else(|| SendError::NotConnected {
                addr: self.shared.addr.clone(),
                waited,
            })?;
        link.send(&Frame::Message(msg))
            .await
            .map_err(|source| SendError::Link {
                to: self.shared.addr.clone(),
                source,
            })
    }

    /// Ship an artifact file and its manifest, once. Returns once the receiver has fsynced and
    /// renamed it, with the checksum the receiver computed. A failure is returned at once, never
    /// retried here: the agent reports every failed attempt to the core (`ShipFailed`), whose
    /// backoff schedule alone decides when to ship again; the next attempt resumes where the
    /// receiver stopped. The one exception is a link kept from the previous transfer that fails
    /// before the receiver answered the offer: it was closed meanwhile, and the same attempt
    /// offers again on a new link.
    pub async fn ship(&self, meta: ArtifactMeta, path: &Path) -> Result<Shipped, ShipError> {
        self.ship_once(&meta, path).await.map_err(|kind| ShipError {
            key: meta.key,
            path: path.to_path_buf(),
            to: self.shared.addr.clone(),
            kind,
        })
    }

    async fn ship_once(&self, meta: &ArtifactMeta, path: &Path) -> Result<Shipped, ShipErrorKind> {
        let s = &self.shared;
        if let Some(conn) = s.take_idle() {
            match s.send_on(conn, meta, path).await {
                // The receiver closed the kept link meanwhile (its idle timeout, a restart), or
                // refuses the offer: a new link says which. Nothing was sent past the offer.
                Err(e) if e.unanswered => {
                    debug!(addr = %s.addr, error = %e.kind, "a kept ship link failed at the offer; offering on a new link");
                }
                done => return done.map_err(|e| e.kind),
            }
        }
        let conn = dial(&s.addr, s.me, LinkKind::Ship, &s.cfg).await?;
        s.send_on(conn, meta, path).await.map_err(|e| e.kind)
    }
}

async fn dial_loop(shared: Arc<DialShared>, events: mpsc::Sender<Event>) {
    let cfg = &shared.cfg;
    let addr = shared.addr.as_str();
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut failures = 0u32;
    loop {
        match dial(addr, shared.me, LinkKind::Control, cfg).await {
            Ok(Dialed {
                remote,
                mut reader,
                writer,
            }) => {
                backoff.reset();
                failures = 0;
                info!(%addr, peer = ?remote, "control link up");
                let link = ControlLink::new(remote, writer);
                shared.link.send_replace(Some(link.clone()));
                let keepalive = spawn_keepalive(link.clone(), cfg.keepalive_every);
                let end = run_control_link(&mut reader, &link, &events, cfg.idle_timeout).await;
                drop(keepalive);
                shared.link.send_replace(None);
                finish_control_link(&link, addr, &end).await;
                if matches!(end, LinkEnd::EventsDropped) {
                    return;
                }
            }
            Err(e) => {
                failures += 1;
                // Say it once loudly, then quietly: a peer may stay away for hours.
                if failures == 1 {
                    warn!(%addr, error = %e, "cannot reach peer; retrying with backoff");
                } else {
                    debug!(%addr, error = %e, failures, "still cannot reach peer");
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}
