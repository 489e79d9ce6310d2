//! Bounded inputs: 150 connections that each complete a handshake and announce a 4 MiB frame,
//! then send its bytes, must not make the agent hold them all. The listener caps connections
//! still in their handshake (per address and in all), refuses a handshake frame larger than a
//! `Hello`, and reads large frames only within one budget shared by all links.
//!
//! `cargo test -p lifeboat-io-tokio --test held_frames -- --nocapture` prints
//! `bench held_frames_peak_rss_mib <n>` (the recovery agent's peak resident memory while
//! attacked) and `bench held_frames_baseline_rss_mib <n>`.

mod common;

use common::*;
use lifeboat_core::{Message, Peer, SiteId};
use lifeboat_io_tokio::transport::frame::{encode_frame, FrameKind, HEADER_LEN, MAX_FRAME_LEN};
use lifeboat_io_tokio::transport::wire::{Hello, LinkKind, PROTOCOL_VERSION};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 150;

fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// One attacker: a ship link's handshake, then a 4 MiB chunk announced and sent.
fn attack(addr: String, stop: Arc<AtomicBool>) {
    let Ok(mut s) = TcpStream::connect(&addr) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: Peer::Site(SiteId(0)),
        link: LinkKind::Ship,
    };
    if s.write_all(&encode_frame(FrameKind::Hello, &hello).unwrap())
        .is_err()
    {
        return;
    }
    let mut welcome = [0u8; 64];
    if s.read(&mut welcome).unwrap_or(0) == 0 {
        return; // refused (over the cap)
    }
    let mut header = encode_frame(FrameKind::Message, &Message::Query { req: 1 }).unwrap();
    header.truncate(HEADER_LEN);
    header[3] = FrameKind::Chunk.code();
    header[4..8].copy_from_slice(&MAX_FRAME_LEN.to_be_bytes());
    if s.write_all(&header).is_err() {
        return;
    }
    let block = vec![0x5Au8; 64 * 1024];
    let mut sent = 0usize;
    while sent + block.len() < MAX_FRAME_LEN as usize && !stop.load(Ordering::Relaxed) {
        match s.write(&block) {
            Ok(n) => sent += n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
    // Hold the frame open, one byte short of its end, until told to stop.
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn held_frames_on_150_connections_keep_the_agent_under_64_mib() {
    let c = Cluster::start(Opts::default());
    let pid = c.pid("recovery").expect("the recovery agent runs");
    let w = Writer::start(&c.pri_db, Duration::from_millis(20));
    wait_for("a first restore", Duration::from_secs(60), || {
        c.restored().is_some()
    });
    let baseline = rss_mib(pid).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = format!("127.0.0.1:{}", c.rec_listen);
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (a, s) = (addr.clone(), stop.clone());
            std::thread::spawn(move || attack(a, s))
        })
        .collect();
    let mut peak = baseline;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(8) {
        peak = peak.max(rss_mib(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        let _ = a.join();
    }
    println!("bench held_frames_baseline_rss_mib {baseline}");
    println!("bench held_frames_peak_rss_mib {peak}");
    assert!(
        peak < 64,
        "the recovery agent reached {peak} MiB under {CONNECTIONS} held frames (baseline \
         {baseline} MiB)"
    );
    // It still serves the primary: restores go on.
    let before = c.restored().unwrap_or(0);
    wait_for("restores after the attack", Duration::from_secs(60), || {
        c.restored().is_some_and(|r| r > before)
    });
    w.stop();
}
