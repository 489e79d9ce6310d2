//! The core benchmark: a realistic log-shipping stream across many databases through a primary
//! and a secondary [`SiteEngine`], wired in-process the way an adapter wires them.
//!
//! The world is a tiny deterministic discrete-event loop (no threads, no sleeping): three FIFO
//! lanes with fixed latencies (the link between the sites, restores at the secondary, local
//! commands), a database model at the primary, and a generator that cuts one transaction log per
//! database every `schedule.log_every_ms` in a random order (plus the occasional incremental
//! and full backup). Everything the engines ask for is executed the way an adapter would:
//!
//! - `Ship` -> `ArtifactReceived` at the peer (sometimes lost, failed, corrupted or duplicated);
//! - `Send` -> `Message` at the peer; `Restore`/`Reseed` -> `Completed` (sometimes failing,
//!   rarely failing permanently so the database is reseeded);
//! - `TakeBackup` -> `Completed` (a requested full backup is cut and discovered);
//! - `Probe` -> `Probe` results; `SamplePositions` -> `WritePosition` for the databases written.
//!
//! Every `handle` call with a real input counts; the `Tick`s the loop feeds at `poll_timeout()`
//! do not (their time is still measured: it is part of the cost of the stream).
//!
//! The figure is the engines' own work. A copy of the world runs the same rounds (untimed) and
//! records each engine's inputs with their `now`; each stream is then replayed, one engine at a
//! time on this one core, into a copy of that engine taken before the rounds (`handle`,
//! `poll_timeout` and draining the outputs, as an adapter does). The replay must produce the same number of
//! outputs and end in the same state as the world run, or the bench fails. Each replay runs
//! `LIFEBOAT_BENCH_REPLAYS` times from fresh copies and the fastest counts.
//! `core_inputs_per_sec` = all inputs of both streams / both (fastest) replay times. The in-world
//! rate (both engines and the simulated world sharing the core and its cache, timed rounds
//! without recording) is printed for comparison.
//!
//! Prints, on stdout: `bench core_inputs_per_sec <N>`, `bench core_state_bytes_per_db <N>`
//! (the secondary's bincode-serialized state over the database count, in steady state),
//! `bench core_primary_state_bytes_per_db <N>` and `bench core_world_inputs_per_sec <N>` (the
//! in-world rate); diagnostics go to stderr.
//!
//! Environment: `LIFEBOAT_BENCH_DBS` (default 100000), `LIFEBOAT_BENCH_ROUNDS` (timed rounds of
//! one log per database, default 4), `LIFEBOAT_BENCH_REPLAYS` (replays of each stream, the
//! fastest counts; default 3), `LIFEBOAT_BENCH_SEED` (default 1),
//! `LIFEBOAT_BENCH_PROFILE=1` (time every `handle` by input kind; slower, stderr only),
//! `LIFEBOAT_BENCH_SEQUENTIAL=1` (back up databases in index order: isolates cache misses).

// The bench measures wall-clock time; the purity rules of `core/clippy.toml` are for the
// engines in `core/src`, not for the harness that times them.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{Input, Message, Output, Peer, ProbeTarget};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Lsn, Millis, OpId, SiteId,
    UtcMillis, MINUTE,
};
use lifeboat_testkit::{failure, Backup, Done, Model, Ship};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

const PRIMARY: usize = 0;
const SECONDARY: usize = 1;

/// One way across the link between the sites.
const LINK_MS: Millis = 5;
/// How long one restore takes at the secondary.
const RESTORE_MS: Millis = 20;
/// Local commands (backups, probes, position samples) complete after this long.
const LOCAL_MS: Millis = 1;

// Fault rates, per million events of their kind.
const SHIP_LOST_PPM: u32 = 300;
const SHIP_FAILED_PPM: u32 = 1_000;
const SHIP_CORRUPT_PPM: u32 = 1_000;
const SHIP_DUPLICATE_PPM: u32 = 1_000;
const RESTORE_FAILED_PPM: u32 = 2_000;
const RESTORE_POISONED_PPM: u32 = 10;
// Backup mix, per million generator events (seed schedule: a log every 5 minutes, a daily
// incremental, a weekly full: 288 logs a day for one incremental and a seventh of a full).
const INCREMENTAL_PPM: u32 = 3_500;
const FULL_PPM: u32 = 500;

/// Epoch-relative UTC of the first artifact (2026-11-15).
const UTC_BASE: i64 = 1_794_700_800_000;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, found {v:?}")),
        Err(_) => default,
    }
}

/// A FIFO of inputs with one fixed latency: pushes happen at a non-decreasing `now`, so the
/// queue stays ordered by delivery time.
#[derive(Clone)]
struct Lane {
    latency: Millis,
    q: VecDeque<(Millis, usize, Input)>,
}

impl Lane {
    fn new(latency: Millis) -> Self {
        Lane {
            latency,
            q: VecDeque::new(),
        }
    }
    fn push(&mut self, now: Millis, to: usize, input: Input) {
        self.q.push_back((now + self.latency, to, input));
    }
    fn head(&self) -> Option<Millis> {
        self.q.front().map(|e| e.0)
    }
}

#[derive(Clone, Default, Debug)]
struct Stats {
    inputs: u64,
    ticks: u64,
    by_site: [u64; 2],
    outputs: u64,
    alerts: u64,
    audits: u64,
    reports: u64,
    logs: u64,
    incrementals: u64,
    fulls: u64,
    restores: u64,
    restore_failures: u64,
    ships: u64,
    ships_lost: u64,
    ships_failed: u64,
    ships_corrupt: u64,
    ships_duplicated: u64,
    reseeds: u64,
}

/// Per input kind: calls and time spent in `handle` plus draining the outputs.
#[derive(Clone, Default)]
struct Profile {
    rows: Vec<(&'static str, u64, Duration)>,
}

impl Profile {
    fn add(&mut self, kind: &'static str, d: Duration) {
        match self.rows.iter_mut().find(|r| r.0 == kind) {
            Some(r) => {
                r.1 += 1;
                r.2 += d;
            }
            None => self.rows.push((kind, 1, d)),
        }
    }
    fn print(&self, total: Duration) {
        let mut rows: Vec<_> = self.rows.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.2));
        eprintln!(
            "profile: {:<28} {:>10} {:>10} {:>9} {:>6}",
            "input (site)", "calls", "ms", "ns/call", "%"
        );
        for (k, n, d) in rows {
            eprintln!(
                "profile: {:<28} {:>10} {:>10.1} {:>9.0} {:>5.1}%",
                k,
                n,
                d.as_secs_f64() * 1e3,
                d.as_nanos() as f64 / *n as f64,
                100.0 * d.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
}

fn kind_of(site: usize, input: &Input) -> &'static str {
    let k = match input {
        Input::Tick => ["tick (primary)", "tick (secondary)"],
        Input::Restarted => ["restarted (primary)", "restarted (secondary)"],
        Input::ArtifactDiscovered(_) => ["discovered (primary)", "discovered (secondary)"],
        Input::WritePosition { .. } => ["write_position (primary)", "write_position (secondary)"],
        Input::ShipFailed { .. } => ["ship_failed (primary)", "ship_failed (secondary)"],
        Input::ArtifactReceived { .. } => ["received (primary)", "received (secondary)"],
        Input::Completed { .. } => ["completed (primary)", "completed (secondary)"],
        Input::Probe { .. } => ["probe (primary)", "probe (secondary)"],
        Input::Message { msg, .. } => match msg {
            Message::Ack { .. } => ["msg ack (primary)", "msg ack (secondary)"],
            Message::Resend { .. } => ["msg resend (primary)", "msg resend (secondary)"],
            Message::Heartbeat(_) => ["msg heartbeat (primary)", "msg heartbeat (secondary)"],
            _ => ["msg other (primary)", "msg other (secondary)"],
        },
        Input::Operator(_) => ["operator (primary)", "operator (secondary)"],
        Input::DiskSpace { .. } => ["disk_space (primary)", "disk_space (secondary)"],
        Input::UnreadableManifest { .. } => [
            "unreadable_manifest (primary)",
            "unreadable_manifest (secondary)",
        ],
        Input::CaptureGap { .. } => ["capture_gap (primary)", "capture_gap (secondary)"],
        Input::Promoted { .. } => ["promoted (primary)", "promoted (secondary)"],
        Input::StreamAlarm { .. } => ["stream_alarm (primary)", "stream_alarm (secondary)"],
        Input::Archived { .. } => ["archived (primary)", "archived (secondary)"],
        Input::LostWrites(_) => ["lost_writes (primary)", "lost_writes (secondary)"],
    };
    k[site]
}

/// One database at the primary: write position, end of the last log, end of the current full.
#[derive(Copy, Clone, Default)]
struct DbModel {
    written: u64,
    logged: u64,
    full_end: u64,
}

#[derive(Clone)]
struct World {
    engines: [SiteEngine; 2],
    link: Lane,
    restore: Lane,
    local: Lane,
    rng: ChaCha8Rng,
    now: Millis,
    model: Vec<DbModel>,
    /// Artifacts whose every restore fails permanently (the database gets reseeded).
    poisoned: BTreeSet<ArtifactKey>,
    /// Databases a position sample reports.
    sample_size: usize,
    stats: Stats,
    profile: Option<Profile>,
    /// Each engine's `poll_timeout()` after its last input.
    timeouts: [Option<Millis>; 2],
    /// Every input each engine got, with its `now`, while recording (for the replay).
    recording: Option<[Vec<(Millis, Input)>; 2]>,
    /// Outputs each engine produced.
    outputs: [u64; 2],
}

impl World {
    fn new(dbs: usize, seed: u64, profile: bool) -> Self {
        let mut cfg = Config {
            databases: (0..dbs).map(|i| format!("db{i:06}")).collect(),
            // Two sites without a witness: the primary is writable on start.
            arbiter: false,
            ..Config::default()
        };
        // 100,000 databases at a log every 5 minutes is ~333 restores a second: enough slots
        // for restores of RESTORE_MS each, with room to catch up after failures.
        cfg.restore.parallelism = 32;
        cfg.validate().expect("bench configuration is valid");
        World {
            engines: [
                SiteEngine::new(cfg.clone(), SiteId(0)),
                SiteEngine::new(cfg, SiteId(1)),
            ],
            link: Lane::new(LINK_MS),
            restore: Lane::new(RESTORE_MS),
            local: Lane::new(LOCAL_MS),
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            model: vec![DbModel::default(); dbs],
            poisoned: BTreeSet::new(),
            sample_size: (dbs / 300).max(1),
            stats: Stats::default(),
            profile: profile.then(Profile::default),
            timeouts: [Some(0), Some(0)],
            recording: None,
            outputs: [0, 0],
        }
    }

    fn dbs(&self) -> usize {
        self.model.len()
    }

    fn chance(&mut self, ppm: u32) -> bool {
        self.rng.gen_range(0..1_000_000) < ppm
    }

    /// Feed one input to a site and execute everything it asks for.
    fn feed(&mut self, site: usize, input: Input) {
        if matches!(input, Input::Tick) {
            self.stats.ticks += 1;
        } else {
            self.stats.inputs += 1;
            self.stats.by_site[site] += 1;
        }
        if let Some(r) = self.recording.as_mut() {
            r[site].push((self.now, input.clone()));
        }
        match self.profile.is_some() {
            false => {
                self.engines[site].handle(self.now, input);
                self.drain(site);
            }
            true => {
                let kind = kind_of(site, &input);
                let t = Instant::now();
                self.engines[site].handle(self.now, input);
                self.drain(site);
                let d = t.elapsed();
                if let Some(p) = self.profile.as_mut() {
                    p.add(kind, d);
                }
            }
        }
    }

    fn drain(&mut self, site: usize) {
        // Only `handle` moves an engine's deadline: remember it instead of asking every turn.
        self.timeouts[site] = self.engines[site].poll_timeout();
        while let Some(out) = self.engines[site].poll_output() {
            self.stats.outputs += 1;
            self.outputs[site] += 1;
            match out {
                Output::Command(cmd) => lifeboat_testkit::execute(self, site, cmd),
                Output::Send { to, msg } => match to {
                    Peer::Site(s) if usize::from(s.0) < 2 => {
                        let from = Peer::Site(SiteId(site as u16));
                        self.link
                            .push(self.now, usize::from(s.0), Input::Message { from, msg });
                    }
                    _ => {} // no arbiter in this setup
                },
                Output::Alert(_) => self.stats.alerts += 1,
                Output::Audit(_) => self.stats.audits += 1,
                Output::Report(_) => self.stats.reports += 1,
            }
        }
    }

    /// Cut an artifact of a database at the primary. Logs continue the log chain; fulls and
    /// incrementals are consistent points at the write position and leave the chain alone.
    fn cut(&mut self, db: usize, kind: ArtifactKind) -> ArtifactMeta {
        let m = &mut self.model[db];
        let (start, end, base) = match kind {
            ArtifactKind::Log => {
                let start = m.logged;
                let end = m.written.max(start) + self.rng.gen_range(1..1_000);
                m.logged = end;
                m.written = end;
                self.stats.logs += 1;
                (start, end, None)
            }
            ArtifactKind::Incremental => {
                m.written += self.rng.gen_range(1..100);
                self.stats.incrementals += 1;
                (m.full_end, m.written, Some(Lsn(m.full_end)))
            }
            ArtifactKind::Full => {
                m.full_end = m.written;
                self.stats.fulls += 1;
                (m.written, m.written, None)
            }
        };
        let epoch = self.engines[PRIMARY].epoch();
        ArtifactMeta {
            key: ArtifactKey {
                db: DbId(db as u32),
                epoch,
                lsn_start: Lsn(start),
                lsn_end: Lsn(end),
                kind,
            },
            base_full: base,
            created_utc: UtcMillis(UTC_BASE + self.now as i64),
            size: 16 << 20,
            checksum: Checksum(
                (start.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ end ^ (db as u64) << 40)
                    .wrapping_add(epoch.0),
            ),
            retry: 0,
        }
    }

    /// A backup for the generator: mostly logs, sometimes an incremental or a full.
    fn backup(&mut self, db: usize) {
        let roll = self.rng.gen_range(0..1_000_000u32);
        let kind = if roll < FULL_PPM {
            ArtifactKind::Full
        } else if roll < FULL_PPM + INCREMENTAL_PPM {
            ArtifactKind::Incremental
        } else {
            ArtifactKind::Log
        };
        let meta = self.cut(db, kind);
        self.feed(PRIMARY, Input::ArtifactDiscovered(meta));
    }

    /// Run the world until `until`, with the generator cutting one backup per database of
    /// `order` spread evenly over `[from, until)`.
    fn run(&mut self, from: Millis, until: Millis, order: &[u32], first_full: bool) {
        let span = until - from;
        let n = order.len() as u64;
        let mut next_gen = 0u64;
        let mut next_disk = from;
        const NEVER: Millis = Millis::MAX;
        loop {
            let gen_at = if next_gen < n {
                from + next_gen * span / n
            } else {
                NEVER
            };
            let link = self.link.head().unwrap_or(NEVER);
            let restore = self.restore.head().unwrap_or(NEVER);
            let local = self.local.head().unwrap_or(NEVER);
            let timers = self.timeouts.map(|t| t.unwrap_or(NEVER));
            let at = gen_at
                .min(link)
                .min(restore)
                .min(local)
                .min(timers[0])
                .min(timers[1])
                .min(next_disk);
            if at >= until {
                self.now = self.now.max(until);
                return;
            }
            self.now = self.now.max(at);
            if gen_at == at {
                let db = order[next_gen as usize] as usize;
                next_gen += 1;
                if first_full {
                    let meta = self.cut(db, ArtifactKind::Full);
                    self.feed(PRIMARY, Input::ArtifactDiscovered(meta));
                } else {
                    self.backup(db);
                }
            } else if link == at {
                let (_, to, input) = self.link.q.pop_front().expect("head");
                self.feed(to, input);
            } else if restore == at {
                let (_, to, input) = self.restore.q.pop_front().expect("head");
                self.feed(to, input);
            } else if local == at {
                let (_, to, input) = self.local.q.pop_front().expect("head");
                self.feed(to, input);
            } else if timers[PRIMARY] == at {
                self.feed(PRIMARY, Input::Tick);
            } else if timers[SECONDARY] == at {
                self.feed(SECONDARY, Input::Tick);
            } else {
                next_disk = at + 10_000;
                for site in [PRIMARY, SECONDARY] {
                    self.feed(site, Input::DiskSpace { free_mib: 200_000 });
                }
            }
        }
    }

    fn state_bytes(&self, site: usize) -> usize {
        bincode::serialize(self.engines[site].state())
            .expect("state serializes")
            .len()
    }
}

/// Where a report waits before it reaches an engine.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Via {
    Link,
    Restore,
    Local,
}

/// The world's link and databases as the shared executor sees them.
impl Model for World {
    type When = Via;

    fn deliver(&mut self, site: usize, via: Via, inputs: Vec<Input>) {
        let now = self.now;
        let lane = match via {
            Via::Link => &mut self.link,
            Via::Restore => &mut self.restore,
            Via::Local => &mut self.local,
        };
        for input in inputs {
            lane.push(now, site, input);
        }
    }

    fn completes(&mut self, _: usize, _: OpId) -> Done<Via> {
        Done::ok(Via::Local)
    }

    fn ship(&mut self, _: usize, _: OpId, artifact: ArtifactMeta, _: SiteId) -> Ship<Via> {
        self.stats.ships += 1;
        let roll = self.rng.gen_range(0..1_000_000u32);
        if roll < SHIP_LOST_PPM {
            // Lost without a word: the ack timeout recovers it.
            self.stats.ships_lost += 1;
            Ship::Silent
        } else if roll < SHIP_LOST_PPM + SHIP_FAILED_PPM {
            self.stats.ships_failed += 1;
            Ship::Fails(Via::Local, "connection reset by peer".into())
        } else if roll < SHIP_LOST_PPM + SHIP_FAILED_PPM + SHIP_CORRUPT_PPM {
            self.stats.ships_corrupt += 1;
            Ship::Arrives(vec![(Via::Link, Checksum(artifact.checksum.0 ^ 0x5a5a))])
        } else if self.chance(SHIP_DUPLICATE_PPM) {
            self.stats.ships_duplicated += 1;
            Ship::Arrives(vec![(Via::Link, artifact.checksum); 2])
        } else {
            Ship::Arrives(vec![(Via::Link, artifact.checksum)])
        }
    }

    fn restore(&mut self, _: usize, _: OpId, artifact: ArtifactMeta, reseed: bool) -> Done<Via> {
        if reseed {
            self.stats.reseeds += 1;
            return Done::ok(Via::Restore);
        }
        self.stats.restores += 1;
        let poisoned = || {
            let message = "the media family on the device is incorrectly formed";
            Err(failure(3241, message, true))
        };
        let result = if self.poisoned.contains(&artifact.key) {
            poisoned()
        } else if self.chance(RESTORE_POISONED_PPM) {
            self.poisoned.insert(artifact.key);
            poisoned()
        } else if self.chance(RESTORE_FAILED_PPM) {
            let message = "the log in this backup set begins too late";
            Err(failure(4305, message, false))
        } else {
            Ok(())
        };
        if result.is_err() {
            self.stats.restore_failures += 1;
        }
        Done::At(Via::Restore, result)
    }

    fn backup(&mut self, _: usize, _: OpId, db: Option<DbId>, kind: ArtifactKind) -> Backup<Via> {
        // The periodic all-database backups are what the generator spreads over the period; a
        // full asked for one database (a reseed) is cut right away.
        let mut found = Vec::new();
        if let (Some(db), ArtifactKind::Full) = (db, kind) {
            if (db.0 as usize) < self.dbs() {
                found.push((Via::Local, self.cut(db.0 as usize, ArtifactKind::Full)));
            }
        }
        Backup {
            found,
            done: Done::ok(Via::Local),
        }
    }

    fn probe(&mut self, _: usize) -> (Via, Vec<(ProbeTarget, bool)>) {
        let results = vec![(ProbeTarget::Service, true), (ProbeTarget::Site, true)];
        (Via::Local, results)
    }

    fn positions(&mut self, _: usize) -> (Via, Vec<(DbId, Lsn)>) {
        let mut positions = Vec::new();
        for _ in 0..self.sample_size {
            let db = self.rng.gen_range(0..self.dbs());
            let m = &mut self.model[db];
            m.written += self.rng.gen_range(1..100);
            positions.push((DbId(db as u32), Lsn(m.written)));
        }
        (Via::Local, positions)
    }
}

/// The measured part (a separate function so a profiler can collect just this, e.g.
/// `valgrind --tool=callgrind --toggle-collect='*timed_rounds*'`).
#[inline(never)]
fn timed_rounds(
    w: &mut World,
    order: &mut [u32],
    mut t: Millis,
    rounds: u64,
    shuffle: bool,
) -> Duration {
    let period = w.engines[PRIMARY].config().schedule.log_every_ms;
    let start = Instant::now();
    for _ in 0..rounds {
        if shuffle {
            order.shuffle(&mut w.rng);
        }
        w.run(t, t + period, order, false);
        t += period;
    }
    start.elapsed()
}

/// Replay one engine's recorded stream into a copy of the engine from before the stream: the
/// engine's own work (`handle`, `poll_timeout`, draining the outputs), one input after another
/// as an adapter feeds it, without the simulated world around it. Returns the time, the outputs
/// and the engine, whose state must equal the world's copy (the core is deterministic).
#[inline(never)]
fn replay(mut e: SiteEngine, stream: Vec<(Millis, Input)>) -> (Duration, u64, SiteEngine) {
    let mut outputs = 0u64;
    let start = Instant::now();
    for (now, input) in stream {
        e.handle(now, input);
        std::hint::black_box(e.poll_timeout());
        while let Some(out) = e.poll_output() {
            outputs += 1;
            std::hint::black_box(out);
        }
    }
    (start.elapsed(), outputs, e)
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore libtest-style arguments.
    let dbs = env_u64("LIFEBOAT_BENCH_DBS", 100_000).max(1) as usize;
    let rounds = env_u64("LIFEBOAT_BENCH_ROUNDS", 4).max(1);
    let seed = env_u64("LIFEBOAT_BENCH_SEED", 1);
    let replays = env_u64("LIFEBOAT_BENCH_REPLAYS", 3).max(1);
    let profile = std::env::var("LIFEBOAT_BENCH_PROFILE").is_ok_and(|v| v == "1");
    // Diagnostic: databases back up in index order instead of a random order each round. The
    // engine's work is the same; only memory locality changes, so the difference between the
    // two figures is what cache misses on the per-database state cost.
    let sequential = std::env::var("LIFEBOAT_BENCH_SEQUENTIAL").is_ok_and(|v| v == "1");

    let mut w = World::new(dbs, seed, profile);
    let period = w.engines[PRIMARY].config().schedule.log_every_ms;
    let mut order: Vec<u32> = (0..dbs as u32).collect();

    // Warm-up (not timed): every database gets its first full backup, then one round of logs.
    w.run(0, MINUTE, &order, true);
    order.shuffle(&mut w.rng);
    w.run(MINUTE, MINUTE + period, &order, false);
    let t = MINUTE + period;
    let warm = std::mem::take(&mut w.stats);
    w.profile = profile.then(Profile::default);

    if sequential {
        order.sort_unstable();
    }
    // A copy of the world records the engines' inputs over the same rounds (deterministic: the
    // same seed, the same order, the same stream), untimed; the timed world does not record.
    let mut recorder = w.clone();
    let mut recorder_order = order.clone();
    let before = w.engines.clone();
    let outputs_before = w.outputs;
    let world_elapsed = timed_rounds(&mut w, &mut order, t, rounds, !sequential);
    recorder.recording = Some([Vec::new(), Vec::new()]);
    recorder.profile = None;
    timed_rounds(&mut recorder, &mut recorder_order, t, rounds, !sequential);
    let streams = recorder.recording.take().expect("recording");
    for site in [PRIMARY, SECONDARY] {
        assert!(
            recorder.engines[site].state() == w.engines[site].state(),
            "site {site}: the recording run ended in another state than the timed run"
        );
    }
    drop(recorder);
    let s = &w.stats;
    let world_per_sec = s.inputs as f64 / world_elapsed.as_secs_f64();

    // The figure: each engine alone, on this one core, over the stream it got in the world;
    // each replay is repeated and the fastest counts (other work on the machine only slows).
    let mut elapsed = Duration::ZERO;
    let [p_stream, s_stream] = streams;
    let [p_before, s_before] = before;
    for (site, engine, stream) in [
        (PRIMARY, p_before, p_stream),
        (SECONDARY, s_before, s_stream),
    ] {
        let mut best = Duration::MAX;
        let mut times = Vec::new();
        for _ in 0..replays {
            let (d, outputs, e) = replay(engine.clone(), stream.clone());
            assert_eq!(
                outputs,
                w.outputs[site] - outputs_before[site],
                "site {site}: the replay produced other outputs than the world run"
            );
            assert!(
                e.state() == w.engines[site].state(),
                "site {site}: the replay ended in another state than the world run"
            );
            times.push(format!("{:.3}", d.as_secs_f64()));
            best = best.min(d);
        }
        eprintln!(
            "  replay, site {site}: {} inputs in {:.3} s ({:.0} inputs/s; best of {} s)",
            s.by_site[site],
            best.as_secs_f64(),
            s.by_site[site] as f64 / best.as_secs_f64(),
            times.join(", ")
        );
        elapsed += best;
    }

    let secondary = w.state_bytes(SECONDARY);
    let primary = w.state_bytes(PRIMARY);
    let per_sec = s.inputs as f64 / elapsed.as_secs_f64();

    eprintln!(
        "core bench: {dbs} databases, {rounds} timed rounds of {} virtual minutes, seed {seed}{}",
        period / MINUTE,
        if sequential {
            ", databases in index order"
        } else {
            ""
        }
    );
    eprintln!(
        "  warm-up: {} inputs; timed: {} inputs ({} primary, {} secondary), {} ticks, \
         {} outputs in {:.3} s",
        warm.inputs,
        s.inputs,
        s.by_site[PRIMARY],
        s.by_site[SECONDARY],
        s.ticks,
        s.outputs,
        world_elapsed.as_secs_f64()
    );
    eprintln!(
        "  in the world (both engines and the simulated world around them on one core): \
         {world_per_sec:.0} inputs/s"
    );
    eprintln!(
        "  backups: {} logs, {} incrementals, {} fulls; ships: {} ({} lost, {} failed, \
         {} corrupt, {} duplicated)",
        s.logs,
        s.incrementals,
        s.fulls,
        s.ships,
        s.ships_lost,
        s.ships_failed,
        s.ships_corrupt,
        s.ships_duplicated
    );
    eprintln!(
        "  restores: {} ({} failed), {} reseeds; {} alert events, {} audit records, {} reports",
        s.restores, s.restore_failures, s.reseeds, s.alerts, s.audits, s.reports
    );
    let sec = w.engines[SECONDARY].state();
    let behind = sec
        .dbs
        .iter()
        .filter(|d| !d.pending.is_empty() || d.in_flight.is_some())
        .count();
    eprintln!(
        "  steady state: secondary {secondary} bytes ({} active alerts, {behind} databases \
         with unrestored artifacts), primary {primary} bytes ({} unacknowledged)",
        sec.alerts.len(),
        w.engines[PRIMARY].unacknowledged().count()
    );
    eprintln!(
        "  in memory: DbState {} bytes, Pending {}, OutEntry {}, Input {}, Output {}",
        std::mem::size_of::<lifeboat_core::engine::DbState>(),
        std::mem::size_of::<lifeboat_core::engine::Pending>(),
        std::mem::size_of::<lifeboat_core::engine::OutEntry>(),
        std::mem::size_of::<Input>(),
        std::mem::size_of::<Output>()
    );
    if let Some(p) = &w.profile {
        p.print(elapsed);
    }

    println!("bench core_inputs_per_sec {per_sec:.0}");
    println!(
        "bench core_state_bytes_per_db {:.1}",
        secondary as f64 / dbs as f64
    );
    println!(
        "bench core_primary_state_bytes_per_db {:.1}",
        primary as f64 / dbs as f64
    );
    println!("bench core_world_inputs_per_sec {world_per_sec:.0}");
}
