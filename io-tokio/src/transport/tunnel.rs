//! Tunnels: a TCP connection to a service of the listener's site, carried over a link of its
//! own, so that the other site reaches the service with the transport's authentication (mutual
//! TLS, a peer is who its certificate says) and nothing else is exposed on the network. The use
//! it is built for: PostgreSQL's replication protocol, from a WAL receiver at the recovery site
//! to the primary's server, which then listens on loopback only.
//!
//! ```text
//! recovery site                                      primary site
//! client --TCP--> LocalTunnel ==Tunnel link (TLS)==> Listener --TCP--> tunnel target
//!                 127.0.0.1:p   Chunk frames both ways,         (set_tunnel_targets)
//!                               ShipEnd = end of one direction
//! ```
//!
//! Each local connection gets a link of its own (`Hello` with [`LinkKind::Tunnel`] and the
//! service it wants: a database's index, as PostgreSQL runs one server per database). The
//! listener accepts tunnels only from a site (never from the arbiter) and only for a service
//! its site names a target for; it connects to the target before it answers `Welcome`, so a target that is
//! down is a refusal the dialer is told (`Close` with the reason), and the local client sees its
//! connection closed. Bytes are relayed in order; the end of one direction (`ShipEnd`, or EOF on
//! the TCP side) half-closes the other side's write direction, as TCP would.

use super::link::{dial, AbortOnDrop};
use super::tls::{ReadHalf, WriteHalf};
use super::wire::{Frame, FrameReader, FrameWriter, LinkKind};
use super::TransportConfig;
use lifeboat_core::Peer;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

/// A tunnel may carry nothing for this long before it is closed (a replication connection
/// sends a keepalive at least every `wal_sender_timeout / 2`, 30 s by default).
pub const TUNNEL_IDLE: Duration = Duration::from_secs(600);
/// Bytes read from the TCP side per frame.
const TUNNEL_CHUNK: usize = 64 * 1024;

/// The dialing end: accepts local connections on `local_addr` and carries each to service
/// `service` of the listener at `remote`. Dropping it stops accepting and closes the tunnels it opened.
pub struct LocalTunnel {
    local_addr: SocketAddr,
    stats: Arc<TunnelStats>,
    _accept: AbortOnDrop,
}

/// What a [`LocalTunnel`] carried.
#[derive(Debug, Default)]
pub struct TunnelStats {
    pub opened: AtomicU64,
    pub refused: AtomicU64,
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
}

impl LocalTunnel {
    /// Listen on `local` (a loopback address: anyone who reaches it uses this site's identity)
    /// and carry each connection to service `service` of the transport listener at `remote` as
    /// `me`.
    pub async fn bind(
        local: &str,
        remote: String,
        service: u32,
        me: Peer,
        cfg: TransportConfig,
    ) -> io::Result<LocalTunnel> {
        let listener = TcpListener::bind(local).await?;
        let local_addr = listener.local_addr()?;
        if !local_addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a tunnel's local end must listen on a loopback address, not {local_addr}: \
                     whoever connects to it speaks with this site's identity"
                ),
            ));
        }
        let stats = Arc::new(TunnelStats::default());
        let st = stats.clone();
        let accept = tokio::spawn(async move {
            let mut tunnels = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, from)) => {
                            let (remote, cfg, st) = (remote.clone(), cfg.clone(), st.clone());
                            tunnels.spawn(async move {
                                carry_local(client, from, &remote, service, me, &cfg, &st).await
                            });
                        }
                        Err(e) => {
                            warn!(error = %e, "tunnel accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                    Some(_) = tunnels.join_next(), if !tunnels.is_empty() => {}
                }
            }
        });
        info!(%local_addr, "tunnel listening");
        Ok(LocalTunnel {
            local_addr,
            stats,
            _accept: AbortOnDrop(accept),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> &TunnelStats {
        &self.stats
    }
}

async fn carry_local(
    client: TcpStream,
    from: SocketAddr,
    remote: &str,
    service: u32,
    me: Peer,
    cfg: &TransportConfig,
    stats: &TunnelStats,
) {
    let _ = client.set_nodelay(true);
    let dialed = match dial(remote, me, LinkKind::Tunnel { service }, cfg).await {
        Ok(d) => d,
        Err(e) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(%from, %remote, error = %e, "tunnel not opened; closing the local connection");
            return;
        }
    };
    stats.opened.fetch_add(1, Ordering::Relaxed);
    debug!(%from, %remote, peer = ?dialed.remote, "tunnel open");
    match relay(client, dialed.reader, dialed.writer).await {
        Ok((out, inn)) => {
            stats.bytes_out.fetch_add(out, Ordering::Relaxed);
            stats.bytes_in.fetch_add(inn, Ordering::Relaxed);
            debug!(%from, %remote, bytes_out = out, bytes_in = inn, "tunnel closed");
        }
        Err(e) => warn!(%from, %remote, error = %e, "tunnel broken"),
    }
}

/// The listener's end of a `Tunnel` link from `from`: connect to `target`, then answer
/// `welcome` and relay until both directions end.
pub(super) async fn serve_tunnel(
    reader: FrameReader<ReadHalf>,
    mut writer: FrameWriter<WriteHalf>,
    welcome: Frame,
    from: Peer,
    target: Option<String>,
    cfg: &TransportConfig,
) -> Result<(u64, u64), String> {
    let service = match open_target(from, target.as_deref(), cfg).await {
        Ok(s) => s,
        Err(why) => {
            writer.close(&why).await;
            return Err(why);
        }
    };
    let _ = service.set_nodelay(true);
    writer.send(&welcome).await.map_err(|e| e.to_string())?;
    relay(service, reader, writer)
        .await
        .map_err(|e| e.to_string())
}

/// The tunnel target's connection, or why a tunnel from `from` is refused.
async fn open_target(
    from: Peer,
    target: Option<&str>,
    cfg: &TransportConfig,
) -> Result<TcpStream, String> {
    if !matches!(from, Peer::Site(_)) {
        return Err(format!("{from:?} may not open a tunnel: only a site may"));
    }
    let Some(target) = target else {
        return Err(
            "this site offers no tunnel to that service (no tunnel target is configured for it)"
                .into(),
        );
    };
    match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(target)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("the tunnel target {target} refused: {e}")),
        Err(_) => Err(format!(
            "the tunnel target {target} did not answer within {:?}",
            cfg.connect_timeout
        )),
    }
}

/// Relay between a TCP connection and a link until both directions have ended. Returns the
/// bytes sent over the link and received from it.
async fn relay<R, W>(
    tcp: TcpStream,
    mut reader: FrameReader<R>,
    mut writer: FrameWriter<W>,
) -> io::Result<(u64, u64)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut tcp_r, mut tcp_w) = tcp.into_split();
    let up = async {
        let mut buf = vec![0u8; TUNNEL_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = tcp_r.read(&mut buf).await?;
            if n == 0 {
                writer
                    .send(&Frame::ShipEnd)
                    .await
                    .map_err(io::Error::other)?;
                return Ok::<u64, io::Error>(sent);
            }
            writer
                .send_chunk(&buf[..n])
                .await
                .map_err(io::Error::other)?;
            sent += n as u64;
        }
    };
    let down = async {
        let mut received = 0u64;
        loop {
            match reader.next(TUNNEL_IDLE).await.map_err(io::Error::other)? {
                Frame::Chunk(bytes) => {
                    tcp_w.write_all(&bytes).await?;
                    received += bytes.len() as u64;
                }
                Frame::ShipEnd => {
                    tcp_w.shutdown().await?;
                    return Ok::<u64, io::Error>(received);
                }
                Frame::Close { reason } => {
                    return Err(io::Error::other(format!("the peer closed it: {reason}")))
                }
                other => {
                    return Err(io::Error::other(format!(
                        "unexpected {:?} frame in a tunnel",
                        other.kind()
                    )))
                }
            }
        }
    };
    let (sent, received) = tokio::try_join!(up, down)?;
    writer.shutdown().await;
    Ok((sent, received))
}
