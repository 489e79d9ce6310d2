//! The postgres driver against real PostgreSQL 15 servers on loopback: WAL shipping to a warm
//! standby, unplanned failover, planned switchover with the old primary following the new one,
//! corrupted segments, and a hole in the chain healed by a reseed.
//!
//! Each test makes its own clusters with `initdb --wal-segsize=1` (as the `postgres` user when
//! run as root) under a scratch directory whose guard stops every server, even on failure. The
//! sites' drivers are called directly; "shipping" copies an artifact and its manifest into the
//! other site's inbox and verifies it the way the transport does (checksum against the
//! manifest, re-copy on mismatch); restores follow the core's chain rule.
//!
//! `archive_command` / `restore_command` run a `lifeboat` executable as the `postgres` user: the
//! real binary once it has the `wal-push` / `wal-fetch` subcommands, else this test binary,
//! which answers the same command lines by calling the same library functions
//! (`lifeboat_io_tokio::drivers::postgres::cli`). Either is copied to a 0755 location first.
//!
//! This is a `harness = false` test (so the binary can stand in for `lifeboat`); it prints the
//! usual `test result:` line. Without PostgreSQL the tests are skipped with a message, except in
//! CI (`CI=true`), where that is a failure.

#[path = "pgkit/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use cluster::{psql, psql_each, Cluster, ScratchDir};
use lifeboat_core::{ArtifactKind, DbId, Epoch, UtcMillis};
use lifeboat_io_tokio::drivers::postgres::segment;
use lifeboat_io_tokio::drivers::postgres::wal::PgLsn;
use lifeboat_io_tokio::drivers::postgres::{PgDatabase, PostgresConfig, PostgresDriver};
use lifeboat_io_tokio::drivers::{ArtifactFile, BackupRequest, Driver, DriverError, ErrorKind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DB: DbId = DbId(0);
const ROWS_PER_BATCH: u32 = 3000;

// ---------------------------------------------------------------------------------------------
// The lifeboat executable PostgreSQL runs

static LIFEBOAT: OnceLock<(PathBuf, &'static str)> = OnceLock::new();
static BIN_DIR: OnceLock<ScratchDir> = OnceLock::new();

/// A `lifeboat` that PostgreSQL's user can execute, and where it comes from.
fn lifeboat() -> &'static Path {
    &LIFEBOAT
        .get_or_init(|| {
            let real = PathBuf::from(env!("CARGO_BIN_EXE_lifeboat"));
            let wired = std::process::Command::new(&real)
                .args(["wal-push", "--help"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            let (src, what) = if wired {
                (real, "the lifeboat binary")
            } else {
                (
                    std::env::current_exe().expect("the test binary's path"),
                    "this test binary (lifeboat has no wal-push subcommand yet)",
                )
            };
            let dir = BIN_DIR.get_or_init(|| ScratchDir::new("bin").expect("a scratch dir"));
            let dest = dir.dir("bin").join("lifeboat");
            std::fs::copy(&src, &dest).expect("copying the lifeboat executable");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
            (dest, what)
        })
        .0
}

// ---------------------------------------------------------------------------------------------
// Sites

/// One site: a PostgreSQL cluster managed by the postgres driver, an outbox and an inbox.
struct Site {
    name: &'static str,
    port: u16,
    outbox: PathBuf,
    inbox: PathBuf,
    driver: PostgresDriver,
}

fn config(root: &Path, port: u16, tune: &dyn Fn(&mut PostgresConfig)) -> PostgresConfig {
    let mut cfg = PostgresConfig::new(
        root.join("spool"),
        vec![PgDatabase::new("app", root.join("data"), port)],
    );
    cfg.bin_dir = cluster::bin_dir();
    cfg.lifeboat_bin = lifeboat().to_path_buf();
    cfg.retrieve_retry_ms = 200;
    cfg.fetch_wait_ms = 1_000;
    cfg.replay_timeout_ms = 30_000;
    cfg.stall_ms = 5_000;
    tune(&mut cfg);
    cfg
}

impl Site {
    /// A site whose cluster does not exist yet (a recovery site before its first full backup).
    fn empty(scratch: &ScratchDir, name: &'static str, tune: &dyn Fn(&mut PostgresConfig)) -> Site {
        let root = scratch.dir(name);
        let port = cluster::free_port();
        let driver = PostgresDriver::open(config(&root, port, tune)).expect("opening the driver");
        let outbox = scratch.dir(&format!("{name}/outbox"));
        let inbox = scratch.dir(&format!("{name}/inbox"));
        Site {
            name,
            port,
            outbox,
            inbox,
            driver,
        }
    }

    /// A primary: `initdb`, the driver's configuration, writes allowed at `epoch`, a table.
    fn primary(scratch: &ScratchDir, name: &'static str, epoch: u64) -> Site {
        Site::primary_with(scratch, name, epoch, &|_| {})
    }

    fn primary_with(
        scratch: &ScratchDir,
        name: &'static str,
        epoch: u64,
        tune: &dyn Fn(&mut PostgresConfig),
    ) -> Site {
        let root = scratch.dir(name);
        let port = cluster::free_port();
        let c = Cluster::initdb(&root.join("data"), port, 1).expect("initdb");
        std::mem::forget(c); // the scratch guard stops it
        let driver = PostgresDriver::open(config(&root, port, tune)).expect("opening the driver");
        driver
            .unfence(DB, Epoch(epoch))
            .expect("starting the primary");
        psql(
            port,
            "create table t(id bigserial primary key, batch int not null, v text not null)",
        )
        .unwrap();
        Site {
            name,
            port,
            outbox: scratch.dir(&format!("{name}/outbox")),
            inbox: scratch.dir(&format!("{name}/inbox")),
            driver,
        }
    }

    fn take(&self, kind: ArtifactKind, epoch: u64) -> Vec<ArtifactFile> {
        self.driver
            .take_backup(&BackupRequest {
                db: DB,
                kind,
                epoch: Epoch(epoch),
                created_utc: UtcMillis(1_795_316_700_000),
                outbox: self.outbox.clone(),
                progress: Default::default(),
            })
            .unwrap_or_else(|e| panic!("{}: take_backup({kind:?}): {e}", self.name))
    }

    fn count(&self) -> u64 {
        psql(self.port, "select count(*) from t").unwrap()[0]
            .parse()
            .unwrap()
    }

    fn replay_lsn(&self) -> u64 {
        let v = psql(self.port, "select pg_last_wal_replay_lsn()").unwrap();
        PgLsn::parse(&v[0]).map_or(0, |l| l.0)
    }

    fn in_recovery(&self) -> bool {
        psql(self.port, "select pg_is_in_recovery()").unwrap()[0] == "t"
    }
}

// ---------------------------------------------------------------------------------------------
// Workload: batches of rows, each with the write position right after its commit

#[derive(Clone, Debug)]
struct Batch {
    id: u32,
    rows: u64,
    /// `pg_current_wal_lsn()` right after the commit: the commit record ends at or before it.
    lsn: u64,
}

#[derive(Default)]
struct Workload {
    batches: Vec<Batch>,
}

impl Workload {
    fn write(&mut self, site: &Site) -> Batch {
        let id = self.batches.len() as u32 + 1;
        let out = psql_each(
            site.port,
            &[
                &format!(
                    "insert into t(batch, v) select {id}, md5(g::text) || repeat('x', 200) \
                     from generate_series(1, {ROWS_PER_BATCH}) g"
                ),
                "select pg_current_wal_lsn()",
            ],
        )
        .unwrap();
        let lsn = PgLsn::parse(out.last().unwrap()).unwrap().0;
        let b = Batch {
            id,
            rows: u64::from(ROWS_PER_BATCH),
            lsn,
        };
        self.batches.push(b.clone());
        b
    }

    /// Rows committed at or before `lsn`.
    fn rows_upto(&self, lsn: u64) -> u64 {
        self.batches
            .iter()
            .filter(|b| b.lsn <= lsn)
            .map(|b| b.rows)
            .sum()
    }

    fn total(&self) -> u64 {
        self.batches.iter().map(|b| b.rows).sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Shipping and the chain rule

/// Deliver artifacts into `to`'s inbox and verify each against its manifest, re-copying a copy
/// that does not match (as the transport does after `checksum_mismatch`). `damage` may corrupt
/// a delivered copy once (in transit). Returns the verified copies and how many were re-copied.
fn ship(
    arts: &[ArtifactFile],
    to: &Site,
    damage: &mut dyn FnMut(&ArtifactFile) -> bool,
) -> (Vec<ArtifactFile>, u32) {
    let mut out = Vec::new();
    let mut recopies = 0;
    for a in arts {
        let mut copy = cluster::deliver(a, &to.inbox).unwrap();
        if damage(&copy) {
            flip_byte(&copy.path, copy.manifest.size / 2);
        }
        while let Err(e) = lifeboat_io_tokio::drivers::check_bytes(&copy) {
            assert_eq!(e.kind, ErrorKind::ChecksumMismatch, "{e}");
            recopies += 1;
            copy = cluster::deliver(a, &to.inbox).unwrap();
        }
        out.push(copy);
    }
    (out, recopies)
}

fn flip_byte(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x5A;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}

/// The chain at a recovery site: its restored position and the rule that picks what to restore.
#[derive(Default)]
struct Chain {
    position: Option<u64>,
}

#[derive(Debug)]
enum Stop {
    /// No received artifact covers the position.
    Gap {
        at: u64,
        next: Box<ArtifactFile>,
    },
    Failed(DriverError),
}

impl Chain {
    /// Restore `arts` in chain order: a full starts the chain, a log applies when it covers the
    /// position, covered ones are skipped, a log beyond the position is a gap.
    fn restore(&mut self, site: &Site, mut arts: Vec<ArtifactFile>) -> Result<usize, Stop> {
        arts.sort_by_key(|a| (a.manifest.lsn_start, a.manifest.lsn_end, a.manifest.kind));
        let mut n = 0;
        for a in arts {
            let m = &a.manifest;
            match (self.position, m.kind) {
                (None, ArtifactKind::Full) => {}
                (None, _) | (Some(_), ArtifactKind::Full) => continue,
                (Some(p), _) if m.lsn_end.0 <= p => continue,
                (Some(p), _) if m.lsn_start.0 > p => {
                    return Err(Stop::Gap {
                        at: p,
                        next: Box::new(a),
                    })
                }
                _ => {}
            }
            let reached = site.driver.restore(&a).map_err(Stop::Failed)?;
            self.position = Some(reached.0);
            n += 1;
        }
        Ok(n)
    }
}

/// Seed a recovery site from the primary's full backup.
fn seed(primary: &Site, standby: &Site, epoch: u64) -> Chain {
    let full = primary.take(ArtifactKind::Full, epoch);
    let (got, _) = ship(&full, standby, &mut |_| false);
    let mut chain = Chain::default();
    if let Err(e) = chain.restore(standby, got) {
        panic!("restoring the first full backup: {e:?}");
    }
    assert!(standby.in_recovery(), "the seeded site runs as a standby");
    chain
}

/// Take the primary's WAL, ship it, restore it; returns the artifacts shipped.
fn round(primary: &Site, standby: &Site, chain: &mut Chain, epoch: u64) -> Vec<ArtifactFile> {
    let logs = primary.take(ArtifactKind::Log, epoch);
    let (got, _) = ship(&logs, standby, &mut |_| false);
    match chain.restore(standby, got.clone()) {
        Ok(_) => got,
        Err(Stop::Failed(e)) => panic!("restoring at {}: {e}", standby.name),
        Err(Stop::Gap { at, next }) => panic!(
            "{}: a hole at {} before {}",
            standby.name,
            PgLsn(at),
            next.describe()
        ),
    }
}

fn pos(chain: &Chain) -> u64 {
    chain.position.expect("a restored position")
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Steady shipping: every round the standby's rows equal the primary's rows committed up to the
/// shipped position, and a drill restores the chain into a scratch copy.
fn standby_replays_shipped_wal_and_matches_the_primary_row_for_row() {
    let s = ScratchDir::new("steady").unwrap();
    let a = Site::primary(&s, "a", 1);
    let b = Site::empty(&s, "b", &|_| {});
    let mut w = Workload::default();
    w.write(&a);
    let mut chain = seed(&a, &b, 1);
    assert_eq!(
        b.count(),
        w.total(),
        "the base backup holds the first batch"
    );
    let mut shipped = Vec::new();
    for r in 0..3 {
        for _ in 0..=r {
            w.write(&a);
        }
        let got = round(&a, &b, &mut chain, 1);
        assert!(!got.is_empty(), "round {r} shipped WAL");
        for g in &got {
            assert_eq!(g.manifest.kind, ArtifactKind::Log);
            assert_eq!(g.manifest.epoch, Epoch(1));
        }
        shipped.extend(got);
        let at = pos(&chain);
        assert_eq!(
            b.count(),
            w.rows_upto(at),
            "rows at the standby at {}",
            PgLsn(at)
        );
        assert_eq!(b.count(), a.count(), "a switch ships everything committed");
        assert!(b.replay_lsn() <= at);
        assert_eq!(b.driver.position(DB).unwrap().0, b.replay_lsn());
    }
    // Segment ranges are contiguous: [n*s, (n+1)*s).
    let mut ranges: Vec<(u64, u64)> = shipped
        .iter()
        .map(|x| (x.manifest.lsn_start.0, x.manifest.lsn_end.0))
        .collect();
    ranges.sort();
    for (s0, e0) in &ranges {
        assert_eq!(e0 - s0, 1 << 20, "one 1 MiB segment per artifact");
        assert_eq!(s0 % (1 << 20), 0);
    }
    assert_eq!(a.driver.timelines(DB).unwrap(), vec![(Epoch(1), 1)]);
    // A drill: the full and the chain into a scratch copy, checked and discarded.
    let full: Vec<ArtifactFile> = lifeboat_io_tokio::drivers::manifest::discover(&b.inbox)
        .unwrap()
        .artifacts
        .into_iter()
        .collect();
    let mut drill_chain: Vec<ArtifactFile> = full
        .iter()
        .filter(|x| x.manifest.kind == ArtifactKind::Full)
        .cloned()
        .collect();
    drill_chain.extend(
        full.iter()
            .filter(|x| x.manifest.kind == ArtifactKind::Log)
            .cloned(),
    );
    let out = b.driver.drill(DB, &drill_chain).expect("drill");
    assert_eq!(out.check, "ok");
    assert_eq!(out.applied, drill_chain.len());
    assert!(b.in_recovery(), "a drill leaves the standby alone");
}

/// Unplanned: the primary is killed with writes it never shipped. The standby is promoted; it
/// holds every row committed up to the shipped position, loses exactly the rows after it (the
/// loss lies within the RPO bounds), accepts writes, and then protects itself in reverse.
fn unplanned_failover_keeps_every_shipped_row_and_the_loss_lies_within_the_rpo_bounds() {
    let s = ScratchDir::new("failover").unwrap();
    let a = Site::primary(&s, "a", 1);
    let b = Site::empty(&s, "b", &|_| {});
    let mut w = Workload::default();
    let mut chain = seed(&a, &b, 1);
    for _ in 0..2 {
        w.write(&a);
        w.write(&a);
        round(&a, &b, &mut chain, 1);
    }
    let restored = pos(&chain);
    // Written but never shipped.
    let unshipped = [w.write(&a), w.write(&a)];
    // The primary's last heartbeat carries its write position.
    let heartbeat = a.driver.position(DB).unwrap().0;
    let rpo_lower = heartbeat - restored;
    assert!(rpo_lower > 0);
    a.driver.server(DB).unwrap().stop("immediate").unwrap();

    let from = b.driver.promote(DB, Epoch(2)).expect("promotion");
    assert!(!b.in_recovery());
    assert!(from.0 >= b.replay_lsn());
    let kept = b.count();
    assert_eq!(
        kept,
        w.rows_upto(restored),
        "every row committed up to the shipped position"
    );
    let lost: Vec<&Batch> = w.batches.iter().filter(|x| x.lsn > restored).collect();
    assert_eq!(lost.len(), unshipped.len());
    assert_eq!(w.total() - kept, lost.iter().map(|x| x.rows).sum::<u64>());
    for x in &lost {
        // The true loss lies inside (restored, heartbeat]: within the reported bounds.
        assert!(
            x.lsn > restored && x.lsn <= heartbeat,
            "batch {} at {}",
            x.id,
            PgLsn(x.lsn)
        );
    }
    // The promoted site accepts writes.
    let mut w2 = Workload {
        batches: w
            .batches
            .iter()
            .filter(|x| x.lsn <= restored)
            .cloned()
            .collect(),
    };
    w2.write(&b);
    assert_eq!(b.count(), kept + u64::from(ROWS_PER_BATCH));

    // Protection continues in reverse: the new primary archives to the old site.
    let logs = b.take(ArtifactKind::Log, 2);
    assert!(!logs.is_empty());
    let first = &logs[0];
    let (h, _) = segment::decode(&std::fs::read(&first.path).unwrap()).unwrap();
    assert_eq!(h.timeline, 2, "the promoted site writes timeline 2");
    assert_eq!(
        h.history.len(),
        1,
        "timeline 2's history travels with its segments"
    );
    assert!(h.history[0].name == "00000002.history");
    assert_eq!(first.manifest.epoch, Epoch(2));
    assert!(b.driver.timelines(DB).unwrap().contains(&(Epoch(2), 2)));
    // Nothing of the old timeline is shipped back: a `.partial` (PostgreSQL archives one when
    // the old timeline's last segment came by streaming) stays aside.
    for l in &logs {
        let (h, _) = segment::decode(&std::fs::read(&l.path).unwrap()).unwrap();
        assert_eq!(h.timeline, 2, "{}", h.wal_file);
    }
    // The crashed old primary may have diverged: it refuses to follow without a reseed.
    let (got, _) = ship(&logs, &a, &mut |_| false);
    let e = a.driver.restore(&got[0]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Diverged, "{e}");
    // Reseed from the new primary's base backup, then replay its WAL.
    let full = b.take(ArtifactKind::Full, 2);
    let (fgot, _) = ship(&full, &a, &mut |_| false);
    let mut back = Chain::default();
    back.restore(&a, fgot).expect("reseed of the old primary");
    assert!(a.in_recovery());
    w2.write(&b);
    let (more, _) = ship(&b.take(ArtifactKind::Log, 2), &a, &mut |_| false);
    back.restore(&a, more)
        .expect("replaying the new primary's WAL");
    assert_eq!(a.count(), b.count(), "the old site follows the new primary");
}

/// Planned: the primary is fenced, its final segment shipped and replayed, the standby
/// promoted: nothing committed is lost; the old primary becomes a standby of the new one and
/// replays its timeline without a reseed.
fn planned_switchover_loses_nothing_and_the_old_primary_follows_the_new_one() {
    let s = ScratchDir::new("switchover").unwrap();
    let a = Site::primary(&s, "a", 1);
    let b = Site::empty(&s, "b", &|_| {});
    let mut w = Workload::default();
    let mut chain = seed(&a, &b, 1);
    w.write(&a);
    round(&a, &b, &mut chain, 1);
    w.write(&a);
    w.write(&a); // committed, not shipped yet
    let committed = a.count();

    a.driver.fence(DB).expect("fence");
    assert!(
        psql(a.port, "select 1").is_err(),
        "the fenced primary takes no connection"
    );
    let last = a.take(ArtifactKind::Log, 1);
    let fin = last
        .iter()
        .map(|x| segment::decode(&std::fs::read(&x.path).unwrap()).unwrap().0)
        .find(|h| h.final_segment)
        .expect("a final segment cut at the end of valid WAL");
    assert!(fin.lsn_end < fin.lsn_start + (1 << 20));
    let (got, _) = ship(&last, &b, &mut |_| false);
    chain.restore(&b, got).expect("replaying the final WAL");
    assert_eq!(pos(&chain), fin.lsn_end);
    assert_eq!(
        b.replay_lsn(),
        fin.lsn_end,
        "replayed up to the fenced primary's end"
    );
    // The same request again is a no-op.
    assert!(a.take(ArtifactKind::Log, 1).is_empty());

    b.driver.promote(DB, Epoch(2)).expect("promotion");
    assert_eq!(b.count(), committed, "zero rows lost");
    let mut w2 = Workload {
        batches: w.batches.clone(),
    };
    w2.write(&b);
    w2.write(&b);

    // Reverse: the old primary replays the new primary's timeline.
    let mut back = Chain {
        position: Some(fin.lsn_end),
    };
    let (got, _) = ship(&b.take(ArtifactKind::Log, 2), &a, &mut |_| false);
    back.restore(&a, got)
        .expect("the old primary follows timeline 2");
    assert!(a.in_recovery(), "the old primary runs as a standby");
    assert_eq!(a.count(), b.count());
    assert_eq!(a.count(), committed + 2 * u64::from(ROWS_PER_BATCH));
}

/// Corruption in transit and on the standby's disk is caught by checksums before PostgreSQL
/// sees a byte; a servable copy damaged after it was made servable is refused by wal-fetch; a
/// segment PostgreSQL itself rejects (its manifest matches, its WAL is bad) fails the restore
/// with PostgreSQL's message. Nothing bad is ever replayed; the good copy then replays.
fn corrupted_segments_are_detected_and_never_replayed() {
    let s = ScratchDir::new("corrupt").unwrap();
    let a = Site::primary(&s, "a", 1);
    // A slow retry interval and no waiting in wal-fetch leave room to damage a servable copy
    // between two of PostgreSQL's requests.
    let b = Site::empty(&s, "b", &|c| {
        c.retrieve_retry_ms = 1_500;
        c.fetch_wait_ms = 0;
    });
    let mut w = Workload::default();
    let mut chain = seed(&a, &b, 1);

    // 1. In transit: detected at receipt, re-copied.
    w.write(&a);
    let logs = a.take(ArtifactKind::Log, 1);
    let mut once = true;
    let (got, recopies) = ship(&logs, &b, &mut |_| std::mem::take(&mut once));
    assert_eq!(recopies, 1);
    chain
        .restore(&b, got)
        .expect("restoring the re-copied segment");
    assert_eq!(b.count(), a.count());

    // 2. On the standby's disk after verification: the restore checks again and refuses.
    w.write(&a);
    let logs = a.take(ArtifactKind::Log, 1);
    let (got, _) = ship(&logs, &b, &mut |_| false);
    let before = b.replay_lsn();
    flip_byte(&got[0].path, got[0].manifest.size - 10);
    let e = b.driver.restore(&got[0]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ChecksumMismatch, "{e}");
    assert_eq!(b.replay_lsn(), before, "nothing replayed");

    // 3. The servable copy damaged after it was made servable: wal-fetch refuses it.
    let (good, _) = ship(&logs, &b, &mut |_| false);
    let wal = b.driver.wal_config(DB).unwrap().clone();
    wait_until(
        "the standby asks for the next segment and is told to wait",
        || {
            std::fs::read_to_string(wal.request_log())
                .map(|t| t.lines().last().is_some_and(|l| l.ends_with(" missing")))
                .unwrap_or(false)
        },
    );
    let served = b.driver.serve(&good[0]).expect("serve");
    flip_byte(
        &served.artifact,
        served.artifact.metadata().unwrap().len() - 10,
    );
    let e = b.driver.await_replay(&served).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ChecksumMismatch, "{e}");
    assert!(e.message.contains("refused"), "{e}");
    assert_eq!(b.replay_lsn(), before, "nothing replayed");

    // 4. Bad WAL behind a matching manifest (damaged before it was archived): PostgreSQL
    //    rejects it and the restore fails with PostgreSQL's own message.
    let bytes = std::fs::read(&good[0].path).unwrap();
    let (h, payload) = segment::decode(&bytes).unwrap();
    let mut bad_payload = payload.to_vec();
    let at = (h.replay_target.unwrap() - h.lsn_start) as usize / 2;
    for x in &mut bad_payload[at..at + 64] {
        *x ^= 0xFF;
    }
    let bad_bytes = segment::encode(h.clone(), &bad_payload);
    let bad_path = b.inbox.join("bad-segment");
    std::fs::write(&bad_path, &bad_bytes).unwrap();
    let (size, sum) = lifeboat_io_tokio::drivers::hash_file(&bad_path).unwrap();
    let mut m = good[0].manifest.clone();
    m.size = size;
    m.checksum = sum;
    lifeboat_io_tokio::drivers::manifest::write_manifest(&bad_path, &m).unwrap();
    let bad = ArtifactFile {
        path: bad_path,
        manifest: m,
    };
    let t = Instant::now();
    let e = b.driver.restore(&bad).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ArtifactInvalid, "{e}");
    assert!(e.message.contains("PostgreSQL rejected WAL segment"), "{e}");
    assert!(
        ["checksum", "invalid", "incorrect", "record"]
            .iter()
            .any(|w| e.message.contains(w)),
        "carries PostgreSQL's words: {e}"
    );
    eprintln!("    rejection detected in {:?}: {}", t.elapsed(), e.message);
    assert!(
        b.replay_lsn() < h.replay_target.unwrap(),
        "the bad records were not replayed"
    );
    assert!(b.count() < a.count());

    // The good copy replays.
    chain.restore(&b, good).unwrap();
    assert_eq!(b.count(), a.count());
    assert_eq!(b.count(), w.total());
}

/// A segment lost for good: the chain has a hole; the driver refuses to serve past it; a new
/// base backup reseeds the standby (old copy kept until the new one is consistent); replay
/// resumes from there.
fn a_hole_in_the_chain_is_refused_then_healed_by_a_reseed_and_replay_resumes() {
    let s = ScratchDir::new("hole").unwrap();
    let a = Site::primary(&s, "a", 1);
    let b = Site::empty(&s, "b", &|_| {});
    let mut w = Workload::default();
    let mut chain = seed(&a, &b, 1);
    w.write(&a);
    round(&a, &b, &mut chain, 1);
    let before = b.count();
    // Three rounds; the middle one's WAL is lost in transit.
    w.write(&a);
    let first = a.take(ArtifactKind::Log, 1);
    w.write(&a);
    let lost = a.take(ArtifactKind::Log, 1);
    assert!(!lost.is_empty());
    w.write(&a);
    let third = a.take(ArtifactKind::Log, 1);
    let (g1, _) = ship(&first, &b, &mut |_| false);
    let (g3, _) = ship(&third, &b, &mut |_| false);
    chain.restore(&b, g1).unwrap();
    let at = pos(&chain);
    let Err(Stop::Gap { at: hole, next }) = chain.restore(&b, g3.clone()) else {
        panic!("the chain must stop at the hole")
    };
    assert_eq!(hole, at);
    // The driver itself refuses to serve past the hole.
    let e = b.driver.restore(&next).unwrap_err();
    assert_eq!(e.kind, ErrorKind::OutOfOrder, "{e}");
    assert!(
        e.message.contains("missing") && e.message.contains(&PgLsn(at).to_string()),
        "{e}"
    );
    assert_eq!(b.count(), w.rows_upto(at));
    assert!(b.count() > before);

    // Reseed from a new base backup; replay resumes after it.
    let full = a.take(ArtifactKind::Full, 1);
    let (fg, _) = ship(&full, &b, &mut |_| false);
    let reached = b.driver.reseed(&fg[0]).expect("reseed");
    assert_eq!(reached, fg[0].manifest.lsn_end);
    chain.position = Some(reached.0);
    assert_eq!(
        b.count(),
        a.count(),
        "the new base backup holds everything so far"
    );
    w.write(&a);
    round(&a, &b, &mut chain, 1);
    assert_eq!(b.count(), a.count());
    assert_eq!(b.count(), w.total());
    assert!(b.in_recovery());
}

/// wal-push keeps timeline history and `.partial` files without misreading them, is idempotent,
/// and refuses to overwrite a different segment; wal-fetch refuses damaged copies. No server.
fn wal_push_and_fetch_handle_every_archive_file_kind() {
    use lifeboat_io_tokio::drivers::postgres::{wal_fetch, wal_push, Pushed, WalConfig, WalError};
    let s = ScratchDir::new("walfiles").unwrap();
    let spool = s.dir("spool");
    let wal = WalConfig {
        format_version: 1,
        db: "app".into(),
        spool: spool.clone(),
        segment_size: 1 << 20,
        fetch_wait_ms: 0,
    };
    for d in [
        wal.push_dir(),
        wal.history_dir(),
        wal.aside_dir(),
        wal.serve_dir(),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    let src = s.dir("pg_wal");
    let hist = src.join("00000002.history");
    std::fs::write(&hist, "1\t0/30000A0\tno recovery target specified\n").unwrap();
    assert!(matches!(wal_push(&hist, &wal), Ok(Pushed::History(_))));
    let partial = src.join("000000010000000000000003.partial");
    std::fs::write(&partial, vec![0u8; 1 << 20]).unwrap();
    assert!(matches!(wal_push(&partial, &wal), Ok(Pushed::Aside(_))));
    let backup = src.join("000000010000000000000002.00000028.backup");
    std::fs::write(&backup, "START WAL LOCATION: 0/2000028\n").unwrap();
    assert!(matches!(wal_push(&backup, &wal), Ok(Pushed::Aside(_))));
    let junk = src.join("RECOVERYXLOG");
    std::fs::write(&junk, "x").unwrap();
    assert!(matches!(wal_push(&junk, &wal), Err(WalError::Failed(_))));
    // A segment that is not WAL is refused, never shipped as a range of zeroes.
    let zeros = src.join("000000020000000000000004");
    std::fs::write(&zeros, vec![0u8; 1 << 20]).unwrap();
    assert!(wal_push(&zeros, &wal).is_err());
    assert!(std::fs::read_dir(wal.push_dir()).unwrap().next().is_none());
    // Nothing servable: "not yet".
    let dest = src.join("RECOVERYXLOG");
    assert!(matches!(
        wal_fetch("000000010000000000000005", &dest, &wal),
        Err(WalError::NotThere(_))
    ));
    // History files are served once the agent made them servable.
    std::fs::copy(&hist, wal.serve_dir().join("00000002.history")).unwrap();
    assert!(wal_fetch("00000002.history", &dest, &wal).is_ok());
    assert!(std::fs::read_to_string(wal.request_log())
        .unwrap()
        .contains("00000002.history served"));
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

// ---------------------------------------------------------------------------------------------
// The harness

type Test = (&'static str, fn());

const TESTS: &[Test] = &[
    (
        "wal_push_and_fetch_handle_every_archive_file_kind",
        wal_push_and_fetch_handle_every_archive_file_kind,
    ),
    (
        "standby_replays_shipped_wal_and_matches_the_primary_row_for_row",
        standby_replays_shipped_wal_and_matches_the_primary_row_for_row,
    ),
    (
        "unplanned_failover_keeps_every_shipped_row_and_the_loss_lies_within_the_rpo_bounds",
        unplanned_failover_keeps_every_shipped_row_and_the_loss_lies_within_the_rpo_bounds,
    ),
    (
        "planned_switchover_loses_nothing_and_the_old_primary_follows_the_new_one",
        planned_switchover_loses_nothing_and_the_old_primary_follows_the_new_one,
    ),
    (
        "corrupted_segments_are_detected_and_never_replayed",
        corrupted_segments_are_detected_and_never_replayed,
    ),
    (
        "a_hole_in_the_chain_is_refused_then_healed_by_a_reseed_and_replay_resumes",
        a_hole_in_the_chain_is_refused_then_healed_by_a_reseed_and_replay_resumes,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // PostgreSQL runs this binary as `lifeboat wal-push|wal-fetch …` (see the module docs).
    if matches!(
        args.get(1).map(String::as_str),
        Some("wal-push" | "wal-fetch")
    ) {
        std::process::exit(lifeboat_io_tokio::drivers::postgres::cli::run(&args[1..]));
    }
    let flags: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with('-'))
        .collect();
    let filters: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let exact = flags.contains(&"--exact");
    let chosen: Vec<&Test> = TESTS
        .iter()
        .filter(|(n, _)| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| if exact { n == f } else { n.contains(f) })
        })
        .collect();
    if flags.contains(&"--list") {
        for (n, _) in &chosen {
            println!("{n}: test");
        }
        return;
    }
    let filtered = TESTS.len() - chosen.len();
    let started = Instant::now();
    if let Err(why) = cluster::available() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("PostgreSQL tests cannot run in CI: {why}");
            println!(
                "test result: FAILED. 0 passed; {} failed; 0 ignored; 0 measured; {filtered} \
                 filtered out; finished in 0.00s",
                chosen.len()
            );
            std::process::exit(101);
        }
        eprintln!("skipping the PostgreSQL tests: {why}");
        println!(
            "test result: ok. 0 passed; 0 failed; {} ignored; 0 measured; {filtered} filtered \
             out; finished in 0.00s",
            chosen.len()
        );
        return;
    }
    println!("\nrunning {} tests", chosen.len());
    eprintln!("    PostgreSQL runs {} as lifeboat", {
        lifeboat();
        LIFEBOAT.get().map_or("?", |x| x.1)
    });
    let mut failed = Vec::new();
    for (name, f) in &chosen {
        let t = Instant::now();
        let r = std::panic::catch_unwind(*f);
        let took = t.elapsed().as_secs_f64();
        match r {
            Ok(()) => println!("test {name} ... ok ({took:.1}s)"),
            Err(_) => {
                println!("test {name} ... FAILED ({took:.1}s)");
                failed.push(*name);
            }
        }
    }
    if let Some(d) = BIN_DIR.get() {
        let _ = std::fs::remove_dir_all(&d.path);
    }
    let secs = started.elapsed().as_secs_f64();
    let passed = chosen.len() - failed.len();
    if !failed.is_empty() {
        println!("\nfailures:");
        for n in &failed {
            println!("    {n}");
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered} \
         filtered out; finished in {secs:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
