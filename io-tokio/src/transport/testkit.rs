//! A tiny TCP proxy that injects one kind of fault into the dialer-to-listener direction, for
//! the transport's tests.

use super::frame::{decode_header, encode_header, FrameKind, HEADER_LEN};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the bytes going from the dialer to the listener.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Fault {
    /// Close both sides after forwarding this many bytes of one connection.
    CutAfter(u64),
    /// Flip the lowest bit of the byte at this position of one connection.
    FlipByte(u64),
    /// Flip a bit inside a `Chunk` payload and re-seal the frame's crc: corruption the frame
    /// checksum cannot see (as if the sender's disk or memory had flipped it).
    CorruptChunkResealed,
}

pub(crate) struct Proxy {
    pub addr: SocketAddr,
    fired: Arc<AtomicU32>,
    budget: Arc<AtomicU32>,
    accepted: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Relay to `target`, injecting `fault` at most `times` times in all.
    pub(crate) async fn start(target: SocketAddr, fault: Fault, times: u32) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fired = Arc::new(AtomicU32::new(0));
        let budget = Arc::new(AtomicU32::new(times));
        let accepted = Arc::new(AtomicU32::new(0));
        let (f, b, a) = (fired.clone(), budget.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                relays.spawn(relay(client, target, fault, f.clone(), b.clone()));
            }
        });
        Proxy {
            addr,
            fired,
            budget,
            accepted,
            task,
        }
    }

    /// How many connections were relayed.
    pub(crate) fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many faults were injected.
    pub(crate) fn fired(&self) -> u32 {
        self.fired.load(Ordering::SeqCst)
    }

    /// Stop injecting.
    #[allow(dead_code)]
    pub(crate) fn disarm(&self) {
        self.budget.store(0, Ordering::SeqCst);
    }
}

fn take(budget: &AtomicU32, fired: &AtomicU32) -> bool {
    let took = budget
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
        .is_ok();
    if took {
        fired.fetch_add(1, Ordering::SeqCst);
    }
    took
}

async fn relay(
    client: TcpStream,
    target: SocketAddr,
    fault: Fault,
    fired: Arc<AtomicU32>,
    budget: Arc<AtomicU32>,
) {
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let (cr, mut cw) = client.into_split();
    let (mut ur, uw) = upstream.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
        let _ = cw.shutdown().await;
    });
    let cut = match fault {
        Fault::CorruptChunkResealed => relay_frames(cr, uw, &fired, &budget).await,
        raw => relay_bytes(cr, uw, raw, &fired, &budget).await,
    };
    if cut {
        down.abort(); // dropping every half closes both connections
    } else {
        let _ = down.await;
    }
}

/// Forward bytes, applying a raw fault; true when the connection was cut.
async fn relay_bytes(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    fault: Fault,
    fired: &AtomicU32,
    budget: &AtomicU32,
) -> bool {
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let here = |at: u64| pos <= at && at < pos + n as u64;
        match fault {
            Fault::CutAfter(at) if here(at) && take(budget, fired) => {
                let _ = to.write_all(&buf[..(at - pos) as usize]).await;
                return true;
            }
            Fault::FlipByte(at) if here(at) && take(budget, fired) => {
                buf[(at - pos) as usize] ^= 0x01;
            }
            _ => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        pos += n as u64;
    }
    let _ = to.shutdown().await;
    false
}

/// Forward frame by frame, corrupting a chunk's payload under a fresh crc.
async fn relay_frames(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    fired: &AtomicU32,
    budget: &AtomicU32,
) -> bool {
    loop {
        let mut header = [0u8; HEADER_LEN];
        if from.read_exact(&mut header).await.is_err() {
            break;
        }
        let Ok(h) = decode_header(&header) else {
            break;
        };
        let mut payload = vec![0u8; h.len as usize];
        if from.read_exact(&mut payload).await.is_err() {
            break;
        }
        if h.kind == FrameKind::Chunk && !payload.is_empty() && take(budget, fired) {
            let mid = payload.len() / 2;
            payload[mid] ^= 0x01;
            header = encode_header(FrameKind::Chunk, &payload).unwrap();
        }
        if to.write_all(&header).await.is_err() || to.write_all(&payload).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
    false
}
