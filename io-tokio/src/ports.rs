//! Loopback ports for processes that bind them later: the demo's sites and arbiter, and the
//! clusters the tests and benches start.
//!
//! Asking the kernel for port 0 and releasing the socket is not enough. That port comes from the
//! ephemeral range, and any outgoing connection on the machine may get it as its source port
//! before the process meant to listen on it starts, which then fails with "Address already in
//! use". So the ports handed out here come from below (or above) the ephemeral range, which
//! outgoing connections never use. Each one is bound once to check that nothing listens on it
//! yet, and the same process never hands out a port twice.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The lowest port handed out: clear of the well-known and most registered service ports.
const LOWEST: u32 = 10_000;
/// Fewer free ports than this outside the ephemeral range: use the kernel's choice instead.
const MIN_WINDOW: u32 = 2_000;

/// How many ports this process has tried; the next candidate is `start + NEXT` in the window.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Where in the window this process starts: another process that hands out ports the same way
/// starts somewhere else.
fn start(span: u32) -> u32 {
    static START: OnceLock<u32> = OnceLock::new();
    *START.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % span
    })
}

/// `n` distinct loopback ports that nothing listens on now and that outgoing connections will
/// not take. Errors only when no such port can be bound at all.
pub fn free_loopback_ports(n: usize) -> io::Result<Vec<u16>> {
    let Some((lo, span)) = window() else {
        return kernel_ports(n);
    };
    let start = start(span);
    let mut held = Vec::with_capacity(n);
    let mut tried = 0;
    while held.len() < n {
        if tried >= span {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "no free loopback port in {lo}..{}: free some, or widen the window below \
                     net.ipv4.ip_local_port_range",
                    lo + span
                ),
            ));
        }
        tried += 1;
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(lo + start.wrapping_add(k) % span).unwrap_or(0);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The widest run of ports outside the kernel's ephemeral range: (first port, length).
fn window() -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<u32>);
    let (first, last) = (it.next()?.ok()?, it.next()?.ok()?);
    let below = (LOWEST, first.saturating_sub(LOWEST));
    let above = (last + 1, 65_536u32.saturating_sub(last + 1));
    let best = if below.1 >= above.1 { below } else { above };
    (best.1 >= MIN_WINDOW).then_some(best)
}

/// The kernel's choice (port 0), where no window outside the ephemeral range is known.
fn kernel_ports(n: usize) -> io::Result<Vec<u16>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    ls.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bind, allowing a moment: a process another test thread forks keeps a copy of a socket
    /// until it execs, so a port just released can still be held for that long.
    fn bind_soon(port: u16) -> TcpListener {
        let mut tries = 0;
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => return l,
                Err(e) if tries >= 100 => panic!("port {port} cannot be bound: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
            tries += 1;
        }
    }

    #[test]
    fn ports_are_distinct_bindable_and_outside_the_ephemeral_range() {
        let a = free_loopback_ports(20).unwrap();
        let b = free_loopback_ports(20).unwrap();
        let mut all: Vec<u16> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40, "a port was handed out twice: {a:?} {b:?}");
        if let Some((lo, span)) = window() {
            for p in &all {
                let p = u32::from(*p);
                assert!(
                    p >= lo && p < lo + span,
                    "port {p} outside {lo}..{}",
                    lo + span
                );
            }
        }
        // Each can be bound by the process meant to listen on it.
        let held: Vec<TcpListener> = all.iter().map(|p| bind_soon(*p)).collect();
        drop(held);
        // A port something already listens on is skipped.
        if let Some((lo, span)) = window() {
            let next = lo + start(span).wrapping_add(NEXT.load(Ordering::Relaxed)) % span;
            let next = u16::try_from(next).unwrap();
            let Ok(taken) = TcpListener::bind(("127.0.0.1", next)) else {
                return; // someone else holds it: skipped all the same
            };
            let got = free_loopback_ports(1).unwrap();
            assert_ne!(got, vec![next], "handed out a port that is listened on");
            drop(taken);
        }
    }
}
