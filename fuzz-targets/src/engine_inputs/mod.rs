//! Fuzz body: arbitrary input sequences into a primary and a secondary site engine (and the
//! arbiter, when configured), wired the way an adapter wires them, with the fuzzer deciding
//! every delivery, loss, duplication, corruption, outcome, restart and operator request.
//!
//! Checked after every step, besides "nothing panics":
//! - a `Restore`/`Reseed` is only ever issued for an artifact that passed verification at that
//!   site (its manifest checksum matched the computed one), whose manifest is well formed, and
//!   that the primary really produced;
//! - each new restore applies at the position the engine tracks (the chain rule), one at a time
//!   per database, and a reseed never moves a database back;
//! - the database model executes every restore: it must apply at the database's real position
//!   (so the restored state is always a prefix of what the primary produced), positions only
//!   grow, and the engine's position equals the database's once its restores are reported;
//! - every site's epoch only grows; snapshots of a restarted engine round-trip exactly.

mod checks;
mod execute;
mod produce;

use crate::bytes::Bytes;
use lifeboat_core::arbiter::Arbiter;
use lifeboat_core::engine::{Role, SiteEngine, SiteState};
use lifeboat_core::journal::{decode_snapshot, encode_snapshot};
use lifeboat_core::protocol::{
    ArbiterView, Command, Failure, Heartbeat, Input, Message, OperatorRequest, Output, Peer,
    ProbeTarget,
};
use lifeboat_core::{
    ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn, Millis, OpId,
    SiteId, UtcMillis, MINUTE,
};
use std::collections::{BTreeMap, BTreeSet};

/// Index of the arbiter among the nodes (sites are 0 and 1).
const ARB: usize = 2;
/// Messages or commands waiting for the fuzzer's decision; older ones are lost beyond this.
const MAX_POOL: usize = 48;
/// Steps per run: bounds the work one fuzz input can ask for.
const MAX_STEPS: usize = 600;
/// UTC of the first artifact (2026-11-22T00:00:00Z).
const UTC_BASE: i64 = 1_795_305_600_000;

/// Run the body; panics on a violated invariant.
pub fn engine_inputs(data: &[u8]) {
    World::new(data, false).run();
}

/// Run the body and return a digest of every output, in order (for determinism checks).
pub fn engine_inputs_digest(data: &[u8]) -> u64 {
    World::new(data, true).run().0
}

/// Run the body and report how far it got (so a corpus can be shown to reach deep states).
pub fn engine_inputs_coverage(data: &[u8]) -> Coverage {
    World::new(data, false).run().1
}

/// What one run reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    pub steps: u64,
    /// Receipts whose checksum matched.
    pub verified: u64,
    pub restores_issued: u64,
    pub reseeds_issued: u64,
    /// Restores the database model executed successfully.
    pub restores_applied: u64,
    pub alerts: u64,
    pub restarts: u64,
    /// `(site, role)` pairs seen.
    pub roles: BTreeSet<(usize, &'static str)>,
    pub max_epoch: u64,
}

impl Coverage {
    /// Add another run's coverage to this one.
    pub fn merge(&mut self, o: &Coverage) {
        self.steps += o.steps;
        self.verified += o.verified;
        self.restores_issued += o.restores_issued;
        self.reseeds_issued += o.reseeds_issued;
        self.restores_applied += o.restores_applied;
        self.alerts += o.alerts;
        self.restarts += o.restarts;
        self.roles.extend(o.roles.iter().copied());
        self.max_epoch = self.max_epoch.max(o.max_epoch);
    }
}

/// A database at a site, as the restores executed so far left it.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
struct DbModel {
    position: Option<Lsn>,
    current_full: Option<Lsn>,
}

/// What the primaries produced for one database: one history for the whole run.
#[derive(Copy, Clone, Debug, Default)]
struct History {
    logged: u64,
    written: u64,
    full_end: Option<u64>,
    created: i64,
}

/// A restore the engine issued whose completion it has not been told yet.
#[derive(Clone, Debug)]
struct Outstanding {
    db: usize,
    meta: ArtifactMeta,
}

struct World<'a> {
    r: Bytes<'a>,
    cfg: Config,
    sites: [SiteEngine; 2],
    arbiter: Option<Arbiter>,
    /// Global time; each node's clock is `local_start + (time - process_start)`.
    time: Millis,
    clock: [(Millis, Millis); 3],
    net: Vec<(usize, Input)>,
    cmds: Vec<(usize, Command)>,
    /// Receipts delivered so far (for late replays).
    receipts: Vec<(usize, Input)>,
    history: Vec<History>,
    produced: BTreeSet<(ArtifactKey, Checksum)>,
    produced_list: Vec<ArtifactMeta>,
    verified: [BTreeSet<(ArtifactKey, Checksum)>; 2],
    model: [Vec<DbModel>; 2],
    restores: [BTreeMap<OpId, Outstanding>; 2],
    seen_ops: [BTreeSet<OpId>; 2],
    epochs: [Epoch; 2],
    roles: [Role; 2],
    digest: Option<u64>,
    cov: Coverage,
    /// `LIFEBOAT_FUZZ_TRACE=1`: print every input and output to stderr (to read a failure).
    trace: bool,
    /// What each restore operation did when the database first executed it.
    op_results: [BTreeMap<OpId, Result<(), Failure>>; 2],
    /// The fuzzer's byte deciding the outcome of the command being executed.
    outcome: u8,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn config(r: &mut Bytes<'_>) -> Config {
    let mut cfg = Config::default();
    let flags = r.u8();
    cfg.databases = (0..1 + r.below(3)).map(|i| format!("db{i}")).collect();
    cfg.arbiter = flags & 1 == 0;
    cfg.failover.automatic = flags & 2 == 0;
    cfg.failover.local_restart = flags & 4 != 0;
    cfg.failover.confirm = flags & 8 != 0;
    cfg.failover.fence_hook = flags & 16 != 0;
    cfg.failover.switch_identity = flags & 32 != 0;
    if flags & 128 != 0 {
        // A standby that lags on purpose.
        cfg.restore.apply_delay_ms = 2 * MINUTE;
    }
    if flags & 64 != 0 {
        // A point-in-time archive with a short window, so retention runs within a fuzz case.
        cfg.archive = Some(lifeboat_core::archive::Policy {
            keep_ms: 10 * MINUTE,
            keep_daily: 2,
            keep_weekly: 1,
            verify_every_ms: 5 * MINUTE,
        });
    }
    cfg.restore.max_attempts = 1 + r.below(4) as u32;
    cfg.alerts.after_attempts = 1 + r.below(3) as u32;
    cfg.restore.parallelism = 1 + r.below(2) as u32;
    cfg.shipping.max_in_flight = 1 + r.below(4) as u32;
    cfg.restore.retry_delay_ms = 1_000;
    cfg.schedule.log_every_ms = MINUTE;
    cfg.alerts.check_every_ms = 10_000;
    if cfg.validate().is_err() {
        let dbs = cfg.databases.clone();
        cfg = Config::default();
        cfg.databases = dbs;
    }
    cfg
}

impl<'a> World<'a> {
    fn new(data: &'a [u8], digest: bool) -> Self {
        let mut r = Bytes::new(data);
        let cfg = config(&mut r);
        let dbs = cfg.databases.len();
        let arbiter = cfg.arbiter.then(|| Arbiter::new(cfg.clone()));
        let clock = [
            (0, u64::from(r.u16())),
            (0, u64::from(r.u16()) * 10),
            (0, u64::from(r.u8())),
        ];
        World {
            r,
            sites: [
                SiteEngine::new(cfg.clone(), SiteId(0)),
                SiteEngine::new(cfg.clone(), SiteId(1)),
            ],
            arbiter,
            cfg,
            time: 0,
            clock,
            net: Vec::new(),
            cmds: Vec::new(),
            receipts: Vec::new(),
            history: vec![History::default(); dbs],
            produced: BTreeSet::new(),
            produced_list: Vec::new(),
            verified: [BTreeSet::new(), BTreeSet::new()],
            model: [vec![DbModel::default(); dbs], vec![DbModel::default(); dbs]],
            restores: [BTreeMap::new(), BTreeMap::new()],
            seen_ops: [BTreeSet::new(), BTreeSet::new()],
            epochs: [Epoch(0); 2],
            roles: [Role::Fenced, Role::Secondary],
            digest: digest.then_some(0xcbf2_9ce4_8422_2325),
            cov: Coverage::default(),
            trace: std::env::var_os("LIFEBOAT_FUZZ_TRACE").is_some_and(|v| v == "1"),
            op_results: [BTreeMap::new(), BTreeMap::new()],
            outcome: 0,
        }
    }

    fn dbs(&self) -> usize {
        self.history.len()
    }

    fn local(&self, node: usize) -> Millis {
        let (start, base) = self.clock[node];
        base + (self.time - start)
    }

    fn run(mut self) -> (u64, Coverage) {
        for site in 0..2 {
            self.feed(site, Input::Tick);
        }
        self.check();
        while !self.r.is_empty() && self.cov.steps < MAX_STEPS as u64 {
            self.cov.steps += 1;
            self.step();
            self.check();
        }
        (self.digest.unwrap_or(0), self.cov)
    }

    fn step(&mut self) {
        match self.r.u8() % 32 {
            0..=3 => self.advance(),
            4..=6 => self.discover(),
            7..=10 => self.deliver_message(),
            11 => {
                // Duplicate a message (it is delivered now and stays in flight).
                if !self.net.is_empty() {
                    let i = self.r.below(self.net.len());
                    let (to, input) = self.net[i].clone();
                    self.feed(to, input);
                }
            }
            12 => {
                // Lose a message.
                if !self.net.is_empty() {
                    let i = self.r.below(self.net.len());
                    self.net.remove(i);
                }
            }
            13..=17 => {
                if !self.cmds.is_empty() {
                    let i = self.r.below(self.cmds.len());
                    let outcome = self.r.u8();
                    self.execute(i, outcome);
                }
            }
            18 | 19 => self.settle(),
            20 => self.operator(),
            21 => {
                let site = self.r.below(2);
                let target = if self.r.bool() {
                    ProbeTarget::Service
                } else {
                    ProbeTarget::Site
                };
                let ok = self.r.chance(160);
                self.feed(site, Input::Probe { target, ok });
            }
            22 => {
                if self.r.chance(96) {
                    self.restart();
                }
            }
            23 => self.forged_receipt(),
            24 => self.forged_message(),
            25 => {
                // A receipt delivered again, late.
                if !self.receipts.is_empty() {
                    let i = self.r.below(self.receipts.len());
                    let (to, input) = self.receipts[i].clone();
                    self.feed(to, input);
                }
            }
            26 => {
                let site = self.r.below(2);
                if self.r.bool() {
                    let free_mib = u64::from(self.r.u16());
                    if (0xFFD8..0xFFE0).contains(&free_mib) {
                        // As rarely: a rebuild found a former primary's lost writes (an
                        // unknown database, or an end before its start, now and then).
                        let db = DbId((free_mib as usize % (self.dbs() + 1)) as u32);
                        let (from, to) = if free_mib & 1 == 0 {
                            (free_mib, free_mib + 4096)
                        } else {
                            (free_mib, 7)
                        };
                        let lost = lifeboat_core::protocol::LostWrites {
                            db,
                            from: Lsn(from),
                            to: Lsn(to),
                            transactions: (free_mib & 2 == 0).then_some(3),
                            first_commit: None,
                            last_commit: None,
                            last_kept_commit: None,
                            kept: format!("diverged/{free_mib}"),
                        };
                        self.feed(site, Input::LostWrites(lost));
                    } else if (0xFFE0..0xFFE8).contains(&free_mib) {
                        // As rarely: a condition of a continuous stream began or ended.
                        let db = DbId((free_mib as usize % (self.dbs() + 1)) as u32);
                        let alarm = if free_mib & 2 == 0 {
                            lifeboat_core::protocol::StreamAlarm::SynchronousDegraded
                        } else {
                            lifeboat_core::protocol::StreamAlarm::SlotNearBound
                        };
                        let input = Input::StreamAlarm {
                            db,
                            alarm,
                            active: free_mib & 1 == 0,
                            what: format!("stream condition {free_mib}"),
                        };
                        self.feed(site, input);
                    } else if (0xFFE8..0xFFF0).contains(&free_mib) {
                        // As rarely: a gap the driver's change capture healed.
                        let db = DbId((free_mib as usize % (self.dbs() + 1)) as u32);
                        let what = format!("its WAL restarted ({free_mib})");
                        self.feed(site, Input::CaptureGap { db, what });
                    } else if free_mib >= 0xFFF0 {
                        // Rarely (and without reading more bytes, so recorded inputs keep
                        // their meaning): an outbox or inbox manifest the adapter found
                        // unreadable and moved aside. Its name matches no artifact.
                        let db = (free_mib as usize % (self.dbs() + 1) < self.dbs())
                            .then(|| DbId((free_mib as usize % (self.dbs() + 1)) as u32));
                        let input = Input::UnreadableManifest {
                            outbox: free_mib & 1 == 0,
                            file: format!("unreadable_{free_mib}"),
                            db,
                            key: None,
                            reason: "not JSON".into(),
                        };
                        self.feed(site, input);
                    } else {
                        self.feed(site, Input::DiskSpace { free_mib });
                    }
                } else {
                    let db = self.r.below(self.dbs() + 1);
                    let writable = self.sites[site].writable();
                    let lsn = match self.history.get_mut(db) {
                        Some(h) if !self.r.chance(16) => {
                            if writable {
                                h.written += u64::from(self.r.u8());
                            }
                            h.written
                        }
                        _ => self.r.u64(),
                    };
                    let input = Input::WritePosition {
                        db: DbId(db as u32),
                        lsn: Lsn(lsn),
                    };
                    self.feed(site, input);
                }
            }
            _ => {
                // The happy path: the writable site backs up a database, then everything in
                // flight goes through.
                let db = self.r.below(self.dbs());
                let site = (0..2)
                    .find(|&s| self.sites[s].role() == Role::Primary)
                    .unwrap_or(0);
                let kind = if self.history[db].full_end.is_none() {
                    ArtifactKind::Full
                } else {
                    ArtifactKind::Log
                };
                let epoch = self.sites[site].epoch();
                if let Some(meta) = self.cut(site, db, kind, epoch) {
                    self.feed(site, Input::ArtifactDiscovered(meta));
                }
                self.settle();
            }
        }
    }

    /// A healthy round: deliver every message in order and execute every command successfully
    /// (bounded, since each may cause more).
    fn settle(&mut self) {
        for _ in 0..4 * MAX_POOL {
            if !self.net.is_empty() {
                let (to, input) = self.net.remove(0);
                self.feed(to, input);
            } else if !self.cmds.is_empty() {
                self.execute(0, 0);
            } else {
                break;
            }
        }
    }

    /// Let time pass and tick both sites (and the arbiter).
    fn advance(&mut self) {
        let dt = match self.r.below(8) {
            0 => 1 + u64::from(self.r.u8()),
            1 => 1_000,
            2 => 5_000,
            3 => 30_000,
            4 => MINUTE,
            5 => 10 * MINUTE,
            6 => 40 * MINUTE,
            _ => {
                // To the earliest deadline of either site.
                let soonest = (0..2)
                    .filter_map(|s| {
                        let due = self.sites[s].poll_timeout()?;
                        Some(due.saturating_sub(self.local(s)))
                    })
                    .min();
                soonest.unwrap_or(1).clamp(1, 24 * 60 * MINUTE)
            }
        };
        self.time += dt;
        for node in [0, 1, ARB] {
            self.feed(node, Input::Tick);
        }
    }

    fn feed(&mut self, node: usize, input: Input) {
        let now = self.local(node);
        if self.trace {
            eprintln!("[t={} node {node} now={now}] <- {input:?}", self.time);
        }
        if node == ARB {
            let Some(a) = self.arbiter.as_mut() else {
                return;
            };
            a.handle(now, input);
        } else {
            if let Input::ArtifactReceived { meta, computed, .. } = &input {
                if *computed == meta.checksum && meta.check().is_ok() {
                    self.cov.verified += 1;
                    self.verified[node].insert((meta.key, meta.checksum));
                }
            }
            self.sites[node].handle(now, input);
        }
        self.drain(node);
        if node != ARB {
            self.note_role(node);
        }
    }

    /// Follow a site's role. A primary handed over after a planned switchover becomes the
    /// secondary with exactly what it wrote, which its engine records as the positions: the
    /// database model takes them over (restores did not produce them).
    fn note_role(&mut self, site: usize) {
        let engine = &self.sites[site];
        let role = engine.role();
        if self.roles[site] == Role::SwitchingOver && role == Role::Secondary {
            for (db, m) in self.model[site].iter_mut().enumerate() {
                if let Some(d) = engine.db(DbId(db as u32)) {
                    m.position = d.position;
                    m.current_full = d.current_full;
                }
            }
        }
        self.roles[site] = role;
    }

    fn drain(&mut self, node: usize) {
        loop {
            let out = if node == ARB {
                self.arbiter.as_mut().and_then(Arbiter::poll_output)
            } else {
                self.sites[node].poll_output()
            };
            let Some(out) = out else { break };
            if self.trace {
                eprintln!("    node {node} -> {out:?}");
            }
            if let Some(h) = self.digest {
                let h = fnv(h, &[node as u8]);
                self.digest = Some(fnv(h, format!("{out:?}").as_bytes()));
            }
            match out {
                Output::Command(cmd) if node != ARB => self.command(node, cmd),
                Output::Send { to, msg } => {
                    let from = if node == ARB {
                        Peer::Arbiter
                    } else {
                        Peer::Site(SiteId(node as u16))
                    };
                    let to = match to {
                        Peer::Site(s) if s.0 < 2 => usize::from(s.0),
                        Peer::Arbiter if self.arbiter.is_some() => ARB,
                        _ => continue,
                    };
                    push(&mut self.net, (to, Input::Message { from, msg }));
                }
                Output::Alert(ev) => {
                    self.cov.alerts += 1;
                    assert!(!ev.text.is_empty(), "alert without text: {ev:?}");
                }
                _ => {}
            }
        }
    }

    fn deliver_message(&mut self) {
        if self.net.is_empty() {
            return;
        }
        // Mostly in order, sometimes any message (reordering).
        let i = if self.r.chance(192) {
            0
        } else {
            self.r.below(self.net.len())
        };
        let (to, input) = self.net.remove(i);
        self.feed(to, input);
    }

    fn operator(&mut self) {
        let site = self.r.below(2);
        let dbs = self.dbs();
        let req = match self.r.u8() % 12 {
            0 => OperatorRequest::Switchover,
            1 => OperatorRequest::Failover { force: false },
            2 => OperatorRequest::Failover { force: true },
            3 => OperatorRequest::Failback,
            4 => OperatorRequest::Drill { db: None },
            5 => OperatorRequest::Drill {
                db: Some(DbId(self.r.below(dbs + 1) as u32)),
            },
            6 => OperatorRequest::PauseBackups,
            7 => OperatorRequest::ResumeBackups,
            8 | 9 => OperatorRequest::Reseed {
                db: DbId(self.r.below(dbs + 1) as u32),
            },
            10 => OperatorRequest::ConfirmFailover,
            _ => OperatorRequest::AbortFailover,
        };
        self.feed(site, Input::Operator(req));
    }

    /// A process restarts from its persisted state, with a new monotonic clock.
    fn restart(&mut self) {
        let node = self.r.below(3);
        let local_start = u64::from(self.r.u16());
        if node == ARB {
            let Some(a) = self.arbiter.as_ref() else {
                return;
            };
            let st = a.state().clone();
            self.arbiter = Some(Arbiter::from_state(self.cfg.clone(), st));
        } else {
            let st = self.sites[node].state();
            let bytes = encode_snapshot(st, 7).expect("a site state encodes");
            let (back, seq) = decode_snapshot::<SiteState>(&bytes).expect("and decodes");
            assert_eq!(seq, 7);
            assert!(&back == st, "a snapshot of site {node} does not round-trip");
            self.sites[node] = SiteEngine::from_state(self.cfg.clone(), SiteId(node as u16), back);
        }
        self.clock[node] = (self.time, local_start);
        self.cov.restarts += 1;
        self.feed(node, Input::Restarted);
    }
}

fn push<T>(pool: &mut Vec<T>, item: T) {
    if pool.len() >= MAX_POOL {
        pool.remove(0);
    }
    pool.push(item);
}
