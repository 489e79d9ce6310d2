//! Shipping artifacts through the transport versus copying them with `cp`.
//!
//! Generates `LIFEBOAT_BENCH_FILES` files (default 64) of `LIFEBOAT_BENCH_FILE_MIB` MiB (default
//! 16) of random bytes, then, in the same run:
//! - baseline: `cp` of every file into another directory, then `sync`;
//! - lifeboat: every file shipped over loopback through a `Transport` to a `Listener`
//!   (`LIFEBOAT_BENCH_PARALLEL` ships at a time, default 8), each received file hashed, fsynced,
//!   renamed with its directory fsynced and its manifest written, and its computed checksum
//!   checked against the source's.
//!
//! The two alternate for `LIFEBOAT_BENCH_ROUNDS` rounds (default 5); the best time of each counts
//! (on a virtual machine the cost of fresh memory pages swings both by 2x between rounds).
//!
//! Prints on stdout (the contract's machine-readable lines):
//! `bench ship_vs_cp_ratio <cp time / lifeboat time>`, `bench ship_mib_per_sec <N>`,
//! `bench cp_mib_per_sec <N>`. `LIFEBOAT_BENCH_DIR` chooses where the files go (default: the
//! system temp directory; put it on the disk you care about).
//!
//! Then the archive's cost on the same path (issue 15): the same ships with every received file
//! also put into a point-in-time archive as the agent does (`Archive::put`, fsynced, in
//! parallel with the next ships), once by hard link (the archive on the inbox's file system)
//! and once by a hashed copy (an archive on its own disk): `bench archive_link_overhead_ratio`
//! and `bench archive_copy_overhead_ratio` (time with the archive / time without; 1.0 is free).
//!
//! The links are mutually authenticated TLS 1.3, as every configuration runs them (a throw-away
//! CA made for the run); `LIFEBOAT_BENCH_TLS=0` measures plain TCP (`insecure = true`).

use anyhow::{bail, ensure, Context, Result};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, DbId, Epoch, Lsn, Peer, SiteId, UtcMillis,
};
use lifeboat_io_tokio::transport::inbox::artifact_file_name;
use lifeboat_io_tokio::transport::{Event, Inbox, Listener, Names, Transport, TransportConfig};
use rand::{RngCore, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xxhash_rust::xxh3::xxh3_64;

fn env_or(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(())
}

fn sync() -> Result<()> {
    run(&mut Command::new("sync"))
}

/// One source artifact: random bytes on disk and the manifest the primary would write.
fn generate(dir: &Path, index: usize, mib: usize) -> Result<(ArtifactMeta, PathBuf)> {
    let mut bytes = vec![0u8; mib << 20];
    rand::rngs::StdRng::seed_from_u64(index as u64).fill_bytes(&mut bytes);
    let i = index as u64;
    let meta = ArtifactMeta {
        key: ArtifactKey {
            db: DbId(0),
            epoch: Epoch(1),
            lsn_start: Lsn(i * 1000),
            lsn_end: Lsn(i * 1000 + 1000),
            kind: ArtifactKind::Log,
        },
        base_full: None,
        // One second apart, so every name differs.
        created_utc: UtcMillis(1_795_316_700_000 + index as i64 * 1000),
        size: bytes.len() as u64,
        checksum: Checksum(xxh3_64(&bytes)),
        retry: 0,
    };
    let path = dir.join(artifact_file_name(&meta, "bench"));
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok((meta, path))
}

/// CPU seconds this process has used (user + system), where `/proc` tells; for the report.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn copy_with_cp(sources: &[(ArtifactMeta, PathBuf)], into: &Path) -> Result<Duration> {
    std::fs::create_dir_all(into)?;
    let start = Instant::now();
    run(Command::new("cp")
        .args(sources.iter().map(|(_, p)| p))
        .arg(into))?;
    sync()?;
    Ok(start.elapsed())
}

/// Both ends' transport settings: TLS with a fresh CA, or plain TCP.
fn configs(tls: bool) -> Result<(TransportConfig, TransportConfig)> {
    if !tls {
        return Ok((TransportConfig::default(), TransportConfig::default()));
    }
    let names = ["primary", "recovery", "arbiter"].map(String::from);
    let g = lifeboat_io_tokio::certs::generate(&names, time::OffsetDateTime::now_utc(), 30)?;
    let deployment = Names {
        sites: names[..2].to_vec(),
        arbiter: names[2].clone(),
    };
    let side = |i: usize| -> Result<TransportConfig> {
        let tls = g.tls(&names[i], deployment.clone(), Peer::Site(SiteId(i as u16)))?;
        Ok(TransportConfig {
            tls: Some(Arc::new(tls)),
            ..TransportConfig::default()
        })
    };
    Ok((side(0)?, side(1)?))
}

async fn ship_all(
    sources: Vec<(ArtifactMeta, PathBuf)>,
    inbox_dir: &Path,
    parallel: usize,
    tls: bool,
    archive: Option<lifeboat_io_tokio::archive::Archive>,
) -> Result<Duration> {
    let (sender_cfg, cfg) = configs(tls)?;
    let (events_tx, mut events) = tokio::sync::mpsc::channel(sources.len() + 16);
    let inbox = Inbox::open(inbox_dir, vec!["bench".into()])?;
    let listener = Listener::bind(
        "127.0.0.1:0",
        Peer::Site(SiteId(1)),
        inbox,
        cfg.clone(),
        events_tx,
    )
    .await?;
    let (primary_tx, _primary_events) = tokio::sync::mpsc::channel(16);
    let transport = Arc::new(Transport::connect(
        listener.local_addr().to_string(),
        Peer::Site(SiteId(0)),
        sender_cfg,
        primary_tx,
    ));
    transport
        .wait_connected(Duration::from_secs(5))
        .await
        .context("the control link did not come up")?;

    let start = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut ships = tokio::task::JoinSet::new();
    for (meta, path) in sources.iter().cloned() {
        let (transport, permits) = (transport.clone(), permits.clone());
        ships.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let shipped = transport.ship(meta, &path).await?;
            ensure!(
                shipped.computed == meta.checksum,
                "{}: the receiver computed {} but the manifest says {}",
                path.display(),
                shipped.computed,
                meta.checksum
            );
            anyhow::Ok(())
        });
    }
    while let Some(result) = ships.join_next().await {
        result??;
    }
    // Every artifact must also have been reported with a matching checksum (and archived).
    let mut puts = tokio::task::JoinSet::new();
    for _ in 0..sources.len() {
        match events.recv().await {
            Some(Event::ArtifactReceived {
                meta,
                computed,
                path,
                ..
            }) if computed == meta.checksum => {
                if let Some(a) = archive.clone() {
                    puts.spawn_blocking(move || a.put(&path, &meta, "bench"));
                }
            }
            Some(Event::ArtifactReceived {
                meta,
                computed,
                path,
                ..
            }) => bail!(
                "{}: computed {computed}, manifest {}",
                path.display(),
                meta.checksum
            ),
            Some(Event::Message { .. }) => bail!("unexpected message"),
            None => bail!("the listener stopped"),
        }
    }
    while let Some(put) = puts.join_next().await {
        put??;
    }
    let elapsed = start.elapsed();
    drop(listener);
    Ok(elapsed)
}

fn main() -> Result<()> {
    let files = env_or("LIFEBOAT_BENCH_FILES", 64)?;
    let mib = env_or("LIFEBOAT_BENCH_FILE_MIB", 16)?;
    let parallel = env_or("LIFEBOAT_BENCH_PARALLEL", 8)?;
    let rounds = env_or("LIFEBOAT_BENCH_ROUNDS", 5)?.max(1);
    let tls = env_or("LIFEBOAT_BENCH_TLS", 1)? != 0;
    eprintln!(
        "transport: {}",
        if tls {
            "mutually authenticated TLS 1.3 (AES-GCM)"
        } else {
            "plain TCP (insecure)"
        }
    );
    ensure!(
        files > 0 && mib > 0,
        "need at least one file of at least 1 MiB"
    );
    let base = match std::env::var_os("LIFEBOAT_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let (src, cp_dir, inbox) = (
        base.path().join("outbox"),
        base.path().join("cp"),
        base.path().join("inbox"),
    );
    std::fs::create_dir_all(&src)?;
    eprintln!("generating {files} files of {mib} MiB in {}", src.display());
    let sources: Vec<_> = (0..files)
        .map(|i| generate(&src, i, mib))
        .collect::<Result<_>>()?;
    sync()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Alternate the two, best of each: other work on the machine hits both alike.
    let (mut cp_time, mut ship_time) = (Duration::MAX, Duration::MAX);
    let (mut link_time, mut copy_time) = (Duration::MAX, Duration::MAX);
    let archive_dir = base.path().join("archive");
    for round in 1..=rounds {
        let cp = copy_with_cp(&sources, &cp_dir)?;
        std::fs::remove_dir_all(&cp_dir)?;
        sync()?;
        for force_copy in [false, true] {
            let archive = lifeboat_io_tokio::archive::Archive {
                root: archive_dir.clone(),
                force_copy,
            };
            let t = runtime.block_on(ship_all(
                sources.clone(),
                &inbox,
                parallel,
                tls,
                Some(archive),
            ))?;
            std::fs::remove_dir_all(&inbox)?;
            std::fs::remove_dir_all(&archive_dir)?;
            sync()?;
            let best = if force_copy {
                &mut copy_time
            } else {
                &mut link_time
            };
            *best = (*best).min(t);
            eprintln!(
                "round {round}: lifeboat + archive ({}) {:.3} s",
                if force_copy { "copy" } else { "link" },
                t.as_secs_f64()
            );
        }
        let cpu_before = cpu_seconds();
        let ship = runtime.block_on(ship_all(sources.clone(), &inbox, parallel, tls, None))?;
        let cpu = cpu_seconds()
            .zip(cpu_before)
            .map_or(String::new(), |(after, before)| {
                format!(" ({:.2} CPU-s)", after - before)
            });
        std::fs::remove_dir_all(&inbox)?;
        sync()?;
        eprintln!(
            "round {round}: cp + sync {:.3} s, lifeboat {:.3} s{cpu}",
            cp.as_secs_f64(),
            ship.as_secs_f64()
        );
        cp_time = cp_time.min(cp);
        ship_time = ship_time.min(ship);
    }

    let total_mib = (files * mib) as f64;
    let cp_secs = cp_time.as_secs_f64();
    let ship_secs = ship_time.as_secs_f64();
    eprintln!(
        "{files} x {mib} MiB, best of {rounds}: cp + sync {cp_secs:.3} s, lifeboat ship \
         ({parallel} at a time, verified, fsynced) {ship_secs:.3} s"
    );
    println!("bench ship_vs_cp_ratio {:.3}", cp_secs / ship_secs);
    println!("bench ship_mib_per_sec {:.1}", total_mib / ship_secs);
    println!("bench cp_mib_per_sec {:.1}", total_mib / cp_secs);
    println!(
        "bench archive_link_overhead_ratio {:.3}",
        link_time.as_secs_f64() / ship_secs
    );
    println!(
        "bench archive_copy_overhead_ratio {:.3}",
        copy_time.as_secs_f64() / ship_secs
    );
    Ok(())
}
