//! A tiny deterministic harness: two site engines and the arbiter, fake links (latency, jitter,
//! loss, symmetric and one-way cuts), a fake clock per node (offset, drift, restart of the
//! monotonic clock), a database model per site that holds the actual writes, and a client that
//! writes to whichever site accepts writes. Commands are executed the way an adapter would.
//!
//! Oracles are checked while it runs (see [`Harness::violations`]): one writer at a time in
//! real time, no write of an older epoch after one of a newer epoch, epochs only grow, nothing
//! of a stale epoch is restored, nothing is restored into a writable database, restores never
//! contradict what the database already holds.
#![allow(dead_code)]

use lifeboat_core::arbiter::Arbiter;
use lifeboat_core::audit::AuditRecord;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{
    Command, Input, Message, OperatorRequest, Output, Peer, ProbeTarget,
};
use lifeboat_core::report::Report;
use lifeboat_core::{
    AlertEvent, ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn,
    Millis, OpId, SiteId, UtcMillis,
};
use lifeboat_testkit::{failure, Backup, Done, Model, Ship};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const A: usize = 0;
pub const B: usize = 1;
pub const ARB: usize = 2;
/// The harness advances real time in steps of this many milliseconds.
pub const STEP: Millis = 10;

/// A node's monotonic clock: `local = base_local + elapsed + elapsed × drift`, elapsed in real
/// time since `base_real`. A process restart starts a new monotonic scale.
#[derive(Clone, Debug)]
pub struct Clock {
    pub base_real: Millis,
    pub base_local: Millis,
    pub drift_ppm: i64,
}

impl Clock {
    pub fn new(offset: Millis, drift_ppm: i64) -> Clock {
        Clock {
            base_real: 0,
            base_local: offset,
            drift_ppm,
        }
    }
    pub fn local(&self, real: Millis) -> Millis {
        let el = real.saturating_sub(self.base_real) as i128;
        (self.base_local as i128 + el + el * self.drift_ppm as i128 / 1_000_000).max(0) as Millis
    }
    /// The process restarted: its monotonic clock starts again at `local`.
    pub fn reset(&mut self, real: Millis, local: Millis) {
        self.base_real = real;
        self.base_local = local;
    }
    /// Change the drift from `real` on (the clock stays continuous).
    pub fn set_drift(&mut self, real: Millis, ppm: i64) {
        self.base_local = self.local(real);
        self.base_real = real;
        self.drift_ppm = ppm;
    }
}

/// One site: the machine, the agent process, the database service and its contents.
#[derive(Clone, Debug, Default)]
pub struct DbModel {
    /// The site (machine, power, network) exists.
    pub site_up: bool,
    /// The agent process (the site engine) runs.
    pub agent_up: bool,
    /// The database service answers.
    pub service_up: bool,
    /// The database accepts writes.
    pub writable: bool,
    /// Per database: the ids of the writes it holds, in LSN order (position = length).
    pub hist: Vec<Vec<u64>>,
    /// Per database: the position the last log backup ended at.
    pub logged: Vec<u64>,
    pub fails_next_restores: u32,
    pub corrupt_next_ship: bool,
    /// The next log shipped is damaged at the source: every ship of it arrives corrupted.
    pub damage_next_log: bool,
    /// A `RestartService` brings the service back.
    pub restart_fixes_service: bool,
    pub service_restarts: u32,
    pub identity_switches: u32,
    pub promotions: BTreeSet<u64>,
    pub drills: u32,
}

impl DbModel {
    pub fn pos(&self, db: usize) -> u64 {
        self.hist[db].len() as u64
    }
    fn accepts_writes(&self) -> bool {
        self.site_up && self.service_up && self.writable
    }
}

/// An acknowledged write, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub t: Millis,
    pub site: usize,
    pub epoch: u64,
    pub db: usize,
    pub id: u64,
}

pub struct Harness {
    pub cfg: Config,
    /// Real time.
    pub t: Millis,
    pub sites: [SiteEngine; 2],
    pub arbiter: Arbiter,
    pub arbiter_alive: bool,
    pub clocks: [Clock; 3],
    /// `up[from][to]`: messages from `from` reach `to`.
    pub up: [[bool; 3]; 3],
    pub latency: Millis,
    /// How long a `Fence` takes to stop writes (the database accepts writes until then).
    /// Defaults to the configured longest fence time: the worst case the safety model allows.
    pub fence_delay: Millis,
    /// The external fence hook fails this many more times before it works.
    pub fence_hook_fails: u32,
    /// Fences under way: (real time they take effect, site).
    pub pending_fences: Vec<(Millis, usize)>,
    /// Extra random delay of a message, up to this many ms (reorders messages).
    pub jitter: Millis,
    /// Messages between engines lost, in percent.
    pub loss_pct: u32,
    pub rng: ChaCha8Rng,
    pub inflight: VecDeque<(Millis, usize, Input)>,
    pub db: [DbModel; 2],
    /// What every artifact holds (the writes it carries), by key.
    pub contents: BTreeMap<ArtifactKey, Vec<u64>>,
    pub alerts: Vec<(usize, Millis, AlertEvent)>,
    pub reports: Vec<(usize, Millis, Report)>,
    pub audits: Vec<(usize, Millis, AuditRecord)>,
    pub commands: Vec<(usize, Millis, Command)>,
    /// Real time each site last sent a heartbeat.
    pub last_heartbeat_sent: [Option<Millis>; 2],
    pub write_every: Millis,
    pub next_write: u64,
    pub acked: Vec<Write>,
    /// First real time two sites accepted writes at once.
    pub split_brain: Option<Millis>,
    /// Every other oracle violation, with the real time.
    pub violations: Vec<String>,
    /// The Contracts' one-writer oracle: a site that accepts writes while another holds a
    /// newer epoch (granted by the arbiter, or taken by a forced failover) is a split brain.
    /// An agent that dies cannot fence its database; a test that lets a database outlive its
    /// agent turns this off and relies on the overlap check.
    pub strict_one_writer: bool,
    /// Real time the newest epoch began, and its holder.
    pub epoch_began: BTreeMap<u64, (Millis, usize)>,
    /// The last real time each site's database accepted writes.
    pub last_writable: [Option<Millis>; 2],
    /// Messages between engines delivered twice, in percent.
    pub dup_pct: u32,
    /// The recovery site's service probe fails whatever the primary's state (a wrong probe).
    pub probe_broken: bool,
    /// A fenced database's service still answers its probe (a server that serves reads while
    /// it refuses writes), so only the arbiter tells that the primary lost its lease.
    pub fenced_service_answers: bool,
    /// Artifacts damaged at the source (see `DbModel::damage_next_log`).
    pub damaged: BTreeSet<ArtifactKey>,
    epochs_seen: [Epoch; 3],
    max_acked_epoch: u64,
    pub created: u64,
}

/// The audit records among `outs`, by their `what`.
pub fn audits(outs: &[Output]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Audit(a) => Some(a.what.clone()),
            _ => None,
        })
        .collect()
}

/// The harness configuration: the defaults, faster logs and monitor for short tests.
pub fn config(dbs: usize) -> Config {
    let mut c = Config {
        databases: (0..dbs).map(|i| format!("db{i}")).collect(),
        ..Config::default()
    };
    c.schedule.log_every_ms = 5_000;
    c.alerts.check_every_ms = 1_000;
    c.restore.retry_delay_ms = 1_000;
    c
}

impl Harness {
    pub fn new(cfg: Config) -> Self {
        Self::with_seed(cfg, 0)
    }

    pub fn with_seed(cfg: Config, seed: u64) -> Self {
        let n = cfg.databases.len();
        let model = DbModel {
            site_up: true,
            agent_up: true,
            service_up: true,
            hist: vec![Vec::new(); n],
            logged: vec![0; n],
            restart_fixes_service: true,
            ..Default::default()
        };
        let fence_delay = cfg.lease.fence_time_ms;
        let sites = [
            SiteEngine::new(cfg.clone(), SiteId(0)),
            SiteEngine::new(cfg.clone(), SiteId(1)),
        ];
        let arbiter = Arbiter::new(cfg.clone());
        let mut h = Harness {
            cfg,
            sites,
            arbiter,
            arbiter_alive: true,
            t: 0,
            clocks: [
                Clock::new(1_000, 0),
                Clock::new(50_000, 0),
                Clock::new(7_000, 0),
            ],
            up: [[true; 3]; 3],
            latency: 5,
            fence_delay,
            fence_hook_fails: 0,
            pending_fences: Vec::new(),
            jitter: 0,
            loss_pct: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            inflight: VecDeque::new(),
            db: [model.clone(), model],
            contents: BTreeMap::new(),
            alerts: Vec::new(),
            reports: Vec::new(),
            audits: Vec::new(),
            commands: Vec::new(),
            last_heartbeat_sent: [None; 2],
            write_every: 100,
            next_write: 1,
            acked: Vec::new(),
            split_brain: None,
            violations: Vec::new(),
            strict_one_writer: true,
            epoch_began: BTreeMap::new(),
            last_writable: [None; 2],
            dup_pct: 0,
            probe_broken: false,
            fenced_service_answers: false,
            damaged: BTreeSet::new(),
            epochs_seen: [Epoch(1); 3],
            max_acked_epoch: 0,
            created: 0,
        };
        // Both sites start from the same (empty) full backup of each database.
        for i in 0..n {
            let full = h.artifact(
                DbId(i as u32),
                ArtifactKind::Full,
                0,
                0,
                Epoch(1),
                Vec::new(),
            );
            h.inflight.push_back((
                0,
                B,
                Input::ArtifactReceived {
                    meta: full,
                    computed: full.checksum,
                    from: SiteId(0),
                },
            ));
        }
        h
    }

    pub fn artifact(
        &mut self,
        db: DbId,
        kind: ArtifactKind,
        s: u64,
        e: u64,
        epoch: Epoch,
        content: Vec<u64>,
    ) -> ArtifactMeta {
        self.created += 1;
        let key = ArtifactKey {
            db,
            epoch,
            lsn_start: Lsn(s),
            lsn_end: Lsn(e),
            kind,
        };
        if let Some(old) = self.contents.get(&key) {
            if *old != content {
                self.violate(format!(
                    "two different artifacts with the same identity {key:?} (divergent histories)"
                ));
            }
        }
        self.contents.insert(key, content);
        ArtifactMeta {
            key,
            base_full: None,
            created_utc: UtcMillis(1_795_000_000_000 + self.t as i64),
            size: 100,
            checksum: Checksum(s * 31 + e * 7 + epoch.0 * 1_000_003 + kind as u64),
            retry: 0,
        }
    }

    pub fn node_now(&self, n: usize) -> Millis {
        self.clocks[n].local(self.t)
    }

    fn violate(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("t={}: {what}", self.t));
        }
    }

    /// The newest epoch anyone holds (the arbiter's record, or a site's own forced one).
    pub fn newest_epoch(&self) -> (Epoch, Option<usize>) {
        let mut best = (
            self.arbiter.epoch(),
            self.arbiter.holder().map(|s| s.0 as usize),
        );
        for n in 0..2 {
            let st = self.sites[n].state();
            if st.holder == SiteId(n as u16) && st.epoch > best.0 {
                best = (st.epoch, Some(n));
            }
        }
        best
    }

    fn running(&self, n: usize) -> bool {
        if n == ARB {
            self.arbiter_alive
        } else {
            self.db[n].site_up && self.db[n].agent_up
        }
    }

    pub fn feed(&mut self, n: usize, input: Input) {
        if !self.running(n) {
            return;
        }
        let now = self.node_now(n);
        if n == ARB {
            self.arbiter.handle(now, input);
        } else {
            self.sites[n].handle(now, input);
        }
        self.drain(n);
        self.check_epochs(n);
    }

    fn check_epochs(&mut self, n: usize) {
        let e = if n == ARB {
            self.arbiter.epoch()
        } else {
            self.sites[n].epoch()
        };
        if e < self.epochs_seen[n] {
            self.violate(format!(
                "node {n}: epoch went back from {} to {e}",
                self.epochs_seen[n]
            ));
        }
        self.epochs_seen[n] = self.epochs_seen[n].max(e);
    }

    /// Send a message over the fake network (latency, jitter, loss, cuts).
    fn deliver(&mut self, from: usize, to: usize, input: Input) {
        if !self.up[from][to] {
            return;
        }
        if self.loss_pct > 0 && self.rng.gen_range(0..100) < self.loss_pct {
            return;
        }
        let extra = if self.jitter > 0 {
            self.rng.gen_range(0..=self.jitter)
        } else {
            0
        };
        let at = self.t + self.latency + extra;
        if self.dup_pct > 0 && self.rng.gen_range(0..100) < self.dup_pct {
            let again = at + self.rng.gen_range(0..=self.jitter.max(1) * 4);
            self.inflight.push_back((again, to, input.clone()));
        }
        self.inflight.push_back((at, to, input));
    }

    fn later(&mut self, delay: Millis, n: usize, input: Input) {
        self.inflight.push_back((self.t + delay, n, input));
    }

    fn drain(&mut self, n: usize) {
        loop {
            let out = if n == ARB {
                self.arbiter.poll_output()
            } else {
                self.sites[n].poll_output()
            };
            let Some(out) = out else { break };
            match out {
                Output::Send { to, msg } => {
                    let dst = match to {
                        Peer::Site(s) => s.0 as usize,
                        Peer::Arbiter => ARB,
                    };
                    let from = if n == ARB {
                        Peer::Arbiter
                    } else {
                        Peer::Site(SiteId(n as u16))
                    };
                    if n != ARB && matches!(msg, Message::Heartbeat(_)) {
                        self.last_heartbeat_sent[n] = Some(self.t);
                    }
                    self.deliver(n, dst, Input::Message { from, msg });
                }
                Output::Alert(a) => self.alerts.push((n, self.t, a)),
                Output::Audit(a) => self.audits.push((n, self.t, a)),
                Output::Report(r) => self.reports.push((n, self.t, r)),
                Output::Command(c) => self.execute(n, c),
            }
        }
    }

    fn execute(&mut self, n: usize, c: Command) {
        self.commands.push((n, self.t, c.clone()));
        lifeboat_testkit::execute(self, n, c);
    }

    /// Stop writes at a site after `delay` (the database accepts writes until then).
    fn fence_after(&mut self, n: usize, delay: Millis) {
        if delay == 0 {
            self.db[n].writable = false;
        } else {
            self.pending_fences.push((self.t + delay, n));
        }
    }

    /// Writes allowed: executed after any fence before it (the executor runs them in order).
    fn allow(&mut self, n: usize) {
        self.pending_fences.retain(|(_, s)| *s != n);
        self.db[n].writable = true;
    }

    /// Apply a restore to the database model, checking the oracles.
    fn apply(&mut self, n: usize, a: &ArtifactMeta) {
        let epoch = self.sites[n].epoch();
        if a.key.epoch < epoch {
            self.violate(format!(
                "site {n} restores {:?} of epoch {} while at epoch {epoch}",
                a.key, a.key.epoch
            ));
        }
        if self.db[n].writable {
            self.violate(format!(
                "site {n} restores {:?} into a writable database",
                a.key
            ));
        }
        let Some(content) = self.contents.get(&a.key).cloned() else {
            return self.violate(format!("site {n} restores an unknown artifact {:?}", a.key));
        };
        let i = a.key.db.0 as usize;
        let (s, e) = (a.key.lsn_start.0 as usize, a.key.lsn_end.0 as usize);
        let hist = &mut self.db[n].hist[i];
        match a.key.kind {
            ArtifactKind::Full => *hist = content,
            _ => {
                if hist.len() < s {
                    let len = hist.len();
                    return self.violate(format!(
                        "site {n} restores {:?} at position {len}: a hole",
                        a.key
                    ));
                }
                let overlap = hist.len().min(e) - s;
                if hist[s..s + overlap] != content[..overlap] {
                    return self.violate(format!(
                        "site {n} restores {:?} over different writes (divergence)",
                        a.key
                    ));
                }
                hist.truncate(s);
                hist.extend_from_slice(&content);
            }
        }
        self.db[n].logged[i] = self.db[n].pos(i);
    }

    /// Advance real time by `ms`, in steps.
    pub fn run(&mut self, ms: Millis) {
        let end = self.t + ms;
        while self.t < end {
            self.step();
        }
    }

    /// Run until `until` holds (checked every step) or `ms` passed; returns whether it held.
    pub fn run_until(&mut self, ms: Millis, mut until: impl FnMut(&Harness) -> bool) -> bool {
        let end = self.t + ms;
        while self.t < end {
            if until(self) {
                return true;
            }
            self.step();
        }
        until(self)
    }

    fn step(&mut self) {
        self.t += STEP;
        let mut due = Vec::new();
        let mut rest = VecDeque::new();
        while let Some((at, to, input)) = self.inflight.pop_front() {
            if at <= self.t {
                due.push((to, input))
            } else {
                rest.push_back((at, to, input))
            }
        }
        self.inflight = rest;
        for (to, input) in due {
            self.feed(to, input);
        }
        let t = self.t;
        let mut fenced = Vec::new();
        self.pending_fences.retain(|&(at, n)| {
            if at <= t {
                fenced.push(n);
            }
            at > t
        });
        for n in fenced {
            self.db[n].writable = false;
        }
        for n in 0..2 {
            let due = self.running(n)
                && self.sites[n]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.node_now(n));
            if due {
                self.feed(n, Input::Tick);
            }
        }
        // One writer at a time, in real time.
        let writers: Vec<usize> = (0..2).filter(|&n| self.db[n].accepts_writes()).collect();
        for &n in &writers {
            self.last_writable[n] = Some(self.t);
        }
        if writers.len() > 1 && self.split_brain.is_none() {
            self.split_brain = Some(self.t);
        }
        let (epoch, holder) = self.newest_epoch();
        if let Some(h) = holder {
            self.epoch_began.entry(epoch.0).or_insert((self.t, h));
            if self.strict_one_writer {
                for &n in &writers {
                    if n != h {
                        self.violate(format!(
                            "site {n} accepts writes at epoch {} while site {h} holds epoch {epoch}",
                            self.sites[n].epoch()
                        ));
                    }
                }
            }
        }
        // The client writes to every site that accepts writes (a correct system has one).
        if self.t.is_multiple_of(self.write_every) {
            let dbs = self.db[0].hist.len();
            let i = ((self.t / self.write_every) as usize) % dbs;
            for n in writers {
                let id = self.next_write;
                self.next_write += 1;
                self.db[n].hist[i].push(id);
                let epoch = self.sites[n].epoch().0;
                if epoch < self.max_acked_epoch {
                    self.violate(format!(
                        "site {n} acknowledged a write at epoch {epoch} after one at epoch {}",
                        self.max_acked_epoch
                    ));
                }
                self.max_acked_epoch = self.max_acked_epoch.max(epoch);
                self.acked.push(Write {
                    t: self.t,
                    site: n,
                    epoch,
                    db: i,
                    id,
                });
            }
        }
    }

    // ------------------------------------------------------------ faults

    /// The whole site is lost (power, network): database and agent.
    pub fn kill(&mut self, n: usize) {
        self.db[n].site_up = false;
        self.db[n].writable = false;
        self.pending_fences.retain(|(_, s)| *s != n);
    }

    /// The site comes back: the machine boots, the agent restarts from its journal.
    pub fn revive(&mut self, n: usize) {
        self.db[n].site_up = true;
        self.db[n].agent_up = true;
        self.db[n].service_up = true;
        self.restart(n);
    }

    /// The agent process dies; the database keeps running as it was.
    pub fn crash(&mut self, n: usize) {
        self.db[n].agent_up = false;
    }

    /// Crash and restart a site engine through its state (as journal replay would rebuild it).
    pub fn restart(&mut self, n: usize) {
        self.db[n].agent_up = true;
        let st = self.sites[n].state().clone();
        self.sites[n] = SiteEngine::from_state(self.cfg.clone(), SiteId(n as u16), st);
        self.feed(n, Input::Restarted);
    }

    /// Restart where the new process's monotonic clock starts again at `local`.
    pub fn restart_with_clock(&mut self, n: usize, local: Millis) {
        self.clocks[n].reset(self.t, local);
        self.restart(n);
    }

    pub fn kill_arbiter(&mut self) {
        self.arbiter_alive = false;
    }

    /// The arbiter comes back from its durable state.
    pub fn restart_arbiter(&mut self) {
        self.arbiter_alive = true;
        let st = self.arbiter.state().clone();
        self.arbiter = Arbiter::from_state(self.cfg.clone(), st);
        self.feed(ARB, Input::Restarted);
    }

    pub fn cut(&mut self, a: usize, b: usize) {
        self.up[a][b] = false;
        self.up[b][a] = false;
    }
    pub fn heal(&mut self, a: usize, b: usize) {
        self.up[a][b] = true;
        self.up[b][a] = true;
    }
    /// Messages from `from` to `to` are lost; the other direction works.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.up[from][to] = false;
    }
    pub fn heal_all(&mut self) {
        self.up = [[true; 3]; 3];
    }

    // ------------------------------------------------------------ inputs

    pub fn operator(&mut self, n: usize, req: OperatorRequest) {
        self.feed(n, Input::Operator(req));
    }

    pub fn message(&mut self, to: usize, from: Peer, msg: Message) {
        self.feed(to, Input::Message { from, msg });
    }

    // ------------------------------------------------------------ observations

    /// Alert events of a kind (every raise, update, clear and notice).
    pub fn alerts_of(&self, kind: &str) -> Vec<&AlertEvent> {
        self.alerts
            .iter()
            .filter(|(_, _, a)| a.id.kind.as_str() == kind)
            .map(|(_, _, a)| a)
            .collect()
    }

    /// First raises of a kind (not updates, clears or notices).
    pub fn raised(&self, kind: &str) -> usize {
        self.alerts_of(kind)
            .iter()
            .filter(|a| a.change == lifeboat_core::alert::AlertChange::Raised)
            .count()
    }

    pub fn failover_report(&self) -> Option<&Report> {
        self.reports
            .iter()
            .map(|(_, _, r)| r)
            .find(|r| matches!(r, Report::Failover { .. }))
    }

    pub fn reports_of(&self, n: usize) -> Vec<&Report> {
        self.reports
            .iter()
            .filter(|(s, _, _)| *s == n)
            .map(|(_, _, r)| r)
            .collect()
    }

    /// Audit records of a site whose `what` is `what`.
    pub fn audits_of(&self, n: usize, what: &str) -> Vec<&AuditRecord> {
        self.audits
            .iter()
            .filter(|(s, _, a)| *s == n && a.what == what)
            .map(|(_, _, a)| a)
            .collect()
    }

    /// Commands a node issued that match, with the real time.
    pub fn commands_of(&self, n: usize, pred: impl Fn(&Command) -> bool) -> Vec<(Millis, Command)> {
        self.commands
            .iter()
            .filter(|(s, _, c)| *s == n && pred(c))
            .map(|(_, t, c)| (*t, c.clone()))
            .collect()
    }

    /// Distinct operation ids of the commands that match.
    pub fn distinct_ops(&self, n: usize, pred: impl Fn(&Command) -> bool) -> BTreeSet<OpId> {
        self.commands_of(n, pred)
            .iter()
            .filter_map(|(_, c)| c.op())
            .collect()
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for (_, _, a) in &self.alerts {
            *m.entry(a.id.kind.as_str()).or_default() += 1;
        }
        m
    }

    /// Acknowledged writes of a site.
    pub fn acked_at(&self, n: usize) -> Vec<&Write> {
        self.acked.iter().filter(|w| w.site == n).collect()
    }

    /// Acknowledged writes the site's database does not hold.
    pub fn missing_at(&self, n: usize) -> Vec<&Write> {
        let held: BTreeSet<u64> = self.db[n].hist.iter().flatten().copied().collect();
        self.acked
            .iter()
            .filter(|w| !held.contains(&w.id))
            .collect()
    }

    /// Panic with the violations and the last events when an oracle failed.
    pub fn assert_safe(&self) {
        if self.split_brain.is_none() && self.violations.is_empty() {
            return;
        }
        panic!(
            "split brain at {:?}; violations: {:#?}\nlast audits: {:#?}",
            self.split_brain,
            self.violations,
            self.audits
                .iter()
                .rev()
                .take(30)
                .map(|(n, t, a)| format!("{t} site{n} {}: {} {:?}", a.what, a.why, a.inputs))
                .collect::<Vec<_>>()
        );
    }

    /// A readable trace of audits (for failure messages).
    pub fn trace(&self) -> String {
        self.audits
            .iter()
            .map(|(n, t, a)| format!("{t} site{n} [{}] {}: {}", a.epoch, a.what, a.why))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The harness's sites as the shared executor sees them: what each command does to the
/// database models and links, and the delay (real milliseconds) before its report arrives.
impl Model for Harness {
    type When = Millis;

    fn deliver(&mut self, site: usize, after: Millis, inputs: Vec<Input>) {
        for input in inputs {
            self.later(after, site, input);
        }
    }

    fn completes(&mut self, _: usize, _: OpId) -> Done<Millis> {
        Done::ok(1)
    }

    fn ship(&mut self, n: usize, _: OpId, artifact: ArtifactMeta, to: SiteId) -> Ship<Millis> {
        let to = to.0 as usize;
        let mut computed = artifact.checksum;
        if self.db[n].corrupt_next_ship {
            self.db[n].corrupt_next_ship = false;
            computed = Checksum(computed.0 ^ 1);
        }
        if self.db[n].damage_next_log && artifact.key.kind == ArtifactKind::Log {
            self.db[n].damage_next_log = false;
            self.damaged.insert(artifact.key);
        }
        if self.damaged.contains(&artifact.key) {
            computed = Checksum(computed.0 ^ 1);
        }
        if self.up[n][to] && self.db[to].site_up {
            Ship::Arrives(vec![(self.latency, computed)])
        } else {
            Ship::Fails(50, "connection refused".into())
        }
    }

    fn restore(&mut self, n: usize, _: OpId, artifact: ArtifactMeta, _: bool) -> Done<Millis> {
        let result = if self.db[n].fails_next_restores > 0 {
            self.db[n].fails_next_restores -= 1;
            Err(failure(4305, "the log is too recent to apply", false))
        } else {
            self.apply(n, &artifact);
            Ok(())
        };
        Done::At(20, result)
    }

    fn backup(
        &mut self,
        n: usize,
        _: OpId,
        db: Option<DbId>,
        kind: ArtifactKind,
    ) -> Backup<Millis> {
        let dbs: Vec<usize> = match db {
            Some(d) => vec![d.0 as usize],
            None => (0..self.db[n].hist.len()).collect(),
        };
        let epoch = self.sites[n].epoch();
        let mut found = Vec::new();
        for i in dbs {
            let (s, e) = (self.db[n].logged[i], self.db[n].pos(i));
            let meta = match kind {
                ArtifactKind::Log if e > s => {
                    let content = self.db[n].hist[i][s as usize..].to_vec();
                    Some(self.artifact(DbId(i as u32), kind, s, e, epoch, content))
                }
                ArtifactKind::Full => {
                    let content = self.db[n].hist[i].clone();
                    Some(self.artifact(DbId(i as u32), kind, e, e, epoch, content))
                }
                _ => None,
            };
            if let Some(m) = meta {
                self.db[n].logged[i] = e;
                found.push((1, m));
            }
        }
        Backup {
            found,
            done: Done::ok(2),
        }
    }

    fn probe(&mut self, n: usize) -> (Millis, Vec<(ProbeTarget, bool)>) {
        let peer = 1 - n;
        let links = self.up[n][peer] && self.up[peer][n];
        let p = &self.db[peer];
        let site = links && p.site_up && p.agent_up;
        // A fenced database fails the service probe: its service is unhealthy.
        let service =
            links && (p.accepts_writes() || self.fenced_service_answers) && !self.probe_broken;
        let results = vec![(ProbeTarget::Site, site), (ProbeTarget::Service, service)];
        (2 * self.latency, results)
    }

    fn positions(&mut self, n: usize) -> (Millis, Vec<(DbId, Lsn)>) {
        let db = &self.db[n];
        let positions = (0..db.hist.len())
            .map(|i| (DbId(i as u32), Lsn(db.pos(i))))
            .collect();
        (1, positions)
    }

    fn fence(&mut self, n: usize, _: OpId) -> Done<Millis> {
        let d = self.fence_delay;
        self.fence_after(n, d);
        Done::ok(d + 1)
    }

    fn open_writes(&mut self, n: usize, op: OpId, _: Epoch, promote: bool) -> Done<Millis> {
        self.allow(n);
        if promote {
            self.db[n].promotions.insert(op.0);
        }
        Done::ok(1)
    }

    fn external_fence(&mut self, _: usize, _: OpId, target: SiteId, _: Epoch) -> Done<Millis> {
        if self.fence_hook_fails > 0 {
            self.fence_hook_fails -= 1;
            return Done::At(
                1,
                Err(failure(7, "the fence hook exited with status 7", false)),
            );
        }
        let d = self.fence_delay;
        self.fence_after(target.0 as usize, d);
        Done::ok(d + 1)
    }

    fn switch_identity(&mut self, n: usize, _: OpId, _: SiteId, _: Epoch) -> Done<Millis> {
        self.db[n].identity_switches += 1;
        Done::ok(1)
    }

    fn restart_service(&mut self, n: usize, _: OpId) -> Done<Millis> {
        self.db[n].service_restarts += 1;
        let result = if self.db[n].restart_fixes_service {
            self.db[n].service_up = true;
            Ok(())
        } else {
            Err(failure(1, "the service did not start", true))
        };
        Done::At(500, result)
    }

    fn drill(&mut self, n: usize, _: OpId, _: DbId, _: Lsn, _: &[ArtifactMeta]) -> Done<Millis> {
        self.db[n].drills += 1;
        Done::ok(100)
    }

    fn check_service(&mut self, n: usize, _: OpId) -> Done<Millis> {
        let result = if self.db[n].service_up {
            Ok(())
        } else {
            Err(failure(2006, "the local service does not answer", false))
        };
        Done::At(5, result)
    }
}
