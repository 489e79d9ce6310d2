//! A tiny deterministic harness: two site engines and the arbiter, fake links with latency, a
//! fake clock with per-node drift and offset, a database model per site and a client that writes
//! to whichever site is writable. Commands are executed the way an adapter would.
#![allow(dead_code)]

use lifeboat_core::arbiter::Arbiter;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::protocol::{Command, Failure, Input, Message, Output, Peer, ProbeTarget};
use lifeboat_core::report::Report;
use lifeboat_core::{
    AlertEvent, ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn,
    Millis, SiteId, UtcMillis,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const A: usize = 0;
pub const B: usize = 1;
pub const ARB: usize = 2;
pub const STEP: Millis = 10;

#[derive(Clone, Debug)]
pub struct Clock {
    pub offset: Millis,
    pub drift_ppm: i64,
}
impl Clock {
    pub fn local(&self, real: Millis) -> Millis {
        let d = real as i128 * self.drift_ppm as i128 / 1_000_000;
        (self.offset as i128 + real as i128 + d).max(0) as Millis
    }
}

/// A site's database model: write position per database, writable flag, restored position.
#[derive(Clone, Debug, Default)]
pub struct DbModel {
    pub writable: bool,
    pub alive: bool,
    pub write_pos: Vec<u64>,
    pub logged: Vec<u64>,
    pub restored: Vec<u64>,
    pub fails_next_restores: u32,
    pub corrupt_next_ship: bool,
    pub identity_switches: u32,
    pub promotions: BTreeSet<u64>,
}

pub struct Harness {
    pub cfg: Config,
    pub t: Millis,
    pub sites: [SiteEngine; 2],
    pub arbiter: Arbiter,
    pub clocks: [Clock; 3],
    pub up: [[bool; 3]; 3],
    pub latency: Millis,
    pub inflight: VecDeque<(Millis, usize, Input)>,
    pub db: [DbModel; 2],
    pub alerts: Vec<(usize, AlertEvent)>,
    pub reports: Vec<(usize, Report)>,
    pub audits: Vec<(usize, String)>,
    pub commands: Vec<(usize, Command)>,
    pub write_every: Millis,
    /// (real time, site, epoch) of every acknowledged write.
    pub acked: Vec<(Millis, usize, u64)>,
    pub split_brain: Option<Millis>,
    pub arbiter_alive: bool,
    pub created: u64,
}

pub fn config(dbs: usize) -> Config {
    let mut c = Config::default();
    c.databases = (0..dbs).map(|i| format!("db{i}")).collect();
    c.schedule.log_every_ms = 5_000;
    c.alerts.check_every_ms = 1_000;
    c.restore.retry_delay_ms = 1_000;
    c
}

impl Harness {
    pub fn new(cfg: Config) -> Self {
        let n = cfg.databases.len();
        let model = DbModel {
            alive: true,
            write_pos: vec![0; n],
            logged: vec![0; n],
            restored: vec![0; n],
            ..Default::default()
        };
        let mut h = Harness {
            sites: [
                SiteEngine::new(cfg.clone(), SiteId(0)),
                SiteEngine::new(cfg.clone(), SiteId(1)),
            ],
            arbiter: Arbiter::new(cfg.clone()),
            cfg,
            t: 0,
            clocks: [
                Clock {
                    offset: 1_000,
                    drift_ppm: 0,
                },
                Clock {
                    offset: 50_000,
                    drift_ppm: 0,
                },
                Clock {
                    offset: 7_000,
                    drift_ppm: 0,
                },
            ],
            up: [[true; 3]; 3],
            latency: 5,
            inflight: VecDeque::new(),
            db: [model.clone(), model],
            alerts: Vec::new(),
            reports: Vec::new(),
            audits: Vec::new(),
            commands: Vec::new(),
            write_every: 100,
            acked: Vec::new(),
            split_brain: None,
            arbiter_alive: true,
            created: 0,
        };
        // Both sites start from the same full backup of each database.
        for i in 0..n {
            let full = h.artifact(DbId(i as u32), ArtifactKind::Full, 0, 0, Epoch(1));
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
    ) -> ArtifactMeta {
        self.created += 1;
        ArtifactMeta {
            key: ArtifactKey {
                db,
                epoch,
                lsn_start: Lsn(s),
                lsn_end: Lsn(e),
                kind,
            },
            base_full: None,
            created_utc: UtcMillis(1_795_000_000_000 + self.t as i64),
            size: 100,
            checksum: Checksum(s * 31 + e * 7 + epoch.0),
            retry: 0,
        }
    }

    fn node_now(&self, n: usize) -> Millis {
        self.clocks[n].local(self.t)
    }

    pub fn feed(&mut self, n: usize, input: Input) {
        let now = self.node_now(n);
        if n == ARB {
            if !self.arbiter_alive {
                return;
            }
            self.arbiter.handle(now, input);
        } else {
            if !self.db[n].alive {
                return;
            }
            self.sites[n].handle(now, input);
        }
        self.drain(n);
    }

    fn deliver(&mut self, from: usize, to: usize, input: Input) {
        if self.up[from][to] {
            let at = self.t + self.latency;
            self.inflight.push_back((at, to, input));
        }
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
                    self.deliver(n, dst, Input::Message { from, msg });
                }
                Output::Alert(a) => self.alerts.push((n, a)),
                Output::Audit(a) => self.audits.push((n, format!("{}: {}", a.what, a.why))),
                Output::Report(r) => self.reports.push((n, r)),
                Output::Command(c) => self.execute(n, c),
            }
        }
    }

    fn execute(&mut self, n: usize, c: Command) {
        self.commands.push((n, c.clone()));
        let peer = 1 - n;
        match c {
            Command::Ship { op, artifact, to } => {
                let to = to.0 as usize;
                let mut computed = artifact.checksum;
                if self.db[n].corrupt_next_ship {
                    self.db[n].corrupt_next_ship = false;
                    computed = Checksum(computed.0 ^ 1);
                }
                if self.up[n][to] && self.db[to].alive {
                    self.deliver(
                        n,
                        to,
                        Input::ArtifactReceived {
                            meta: artifact,
                            computed,
                            from: SiteId(n as u16),
                        },
                    );
                } else {
                    let key = artifact.key;
                    self.inflight.push_back((
                        self.t + 50,
                        n,
                        Input::ShipFailed {
                            op,
                            key,
                            to: SiteId(to as u16),
                            reason: "connection refused".into(),
                        },
                    ));
                }
            }
            Command::Restore { op, artifact } | Command::Reseed { op, full: artifact } => {
                let result = if self.db[n].fails_next_restores > 0 {
                    self.db[n].fails_next_restores -= 1;
                    Err(Failure {
                        code: 4305,
                        message: "the log is too recent to apply".into(),
                        permanent: false,
                    })
                } else {
                    let i = artifact.key.db.0 as usize;
                    self.db[n].restored[i] = artifact.key.lsn_end.0;
                    self.db[n].write_pos[i] = artifact.key.lsn_end.0;
                    self.db[n].logged[i] = artifact.key.lsn_end.0;
                    Ok(())
                };
                self.inflight
                    .push_back((self.t + 20, n, Input::Completed { op, result }));
            }
            Command::TakeBackup { op, db, kind } => {
                let dbs: Vec<usize> = match db {
                    Some(d) => vec![d.0 as usize],
                    None => (0..self.db[n].write_pos.len()).collect(),
                };
                let epoch = self.sites[n].epoch();
                for i in dbs {
                    let (s, e) = (self.db[n].logged[i], self.db[n].write_pos[i]);
                    let meta = match kind {
                        ArtifactKind::Log if e > s => {
                            Some(self.artifact(DbId(i as u32), kind, s, e, epoch))
                        }
                        ArtifactKind::Full => {
                            Some(self.artifact(DbId(i as u32), kind, e, e, epoch))
                        }
                        _ => None,
                    };
                    if let Some(m) = meta {
                        self.db[n].logged[i] = e;
                        self.inflight
                            .push_back((self.t + 1, n, Input::ArtifactDiscovered(m)));
                    }
                }
                self.inflight
                    .push_back((self.t + 2, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::Fence { op } => {
                self.db[n].writable = false;
                self.inflight
                    .push_back((self.t + 1, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::AllowWrites { op, .. } => {
                self.db[n].writable = true;
                self.inflight
                    .push_back((self.t + 1, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::Promote { op, .. } => {
                self.db[n].writable = true;
                self.db[n].promotions.insert(op.0);
                self.inflight
                    .push_back((self.t + 1, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::ExternalFence { op, target, .. } => {
                self.db[target.0 as usize].writable = false;
                self.inflight
                    .push_back((self.t + 1, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::SwitchIdentity { op, .. } => {
                self.db[n].identity_switches += 1;
                self.inflight
                    .push_back((self.t + 1, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::RestartService { op } | Command::Drill { op, .. } => {
                self.inflight
                    .push_back((self.t + 1, n, Input::Completed { op, result: Ok(()) }));
            }
            Command::Probe => {
                let ok = self.db[peer].alive && self.up[n][peer] && self.up[peer][n];
                self.inflight.push_back((
                    self.t + 1,
                    n,
                    Input::Probe {
                        target: ProbeTarget::Service,
                        ok,
                    },
                ));
                self.inflight.push_back((
                    self.t + 1,
                    n,
                    Input::Probe {
                        target: ProbeTarget::Site,
                        ok,
                    },
                ));
            }
            Command::SamplePositions => {
                for i in 0..self.db[n].write_pos.len() {
                    let lsn = Lsn(self.db[n].write_pos[i]);
                    self.inflight.push_back((
                        self.t + 1,
                        n,
                        Input::WritePosition {
                            db: DbId(i as u32),
                            lsn,
                        },
                    ));
                }
            }
            Command::Relabel { .. }
            | Command::Discard { .. }
            | Command::Prune { .. }
            | Command::Quarantine { .. } => {}
        }
    }

    /// Advance real time by `ms`, in steps.
    pub fn run(&mut self, ms: Millis) {
        let end = self.t + ms;
        while self.t < end {
            self.t += STEP;
            // Deliver what is due.
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
            for n in 0..2 {
                let due = self.sites[n]
                    .poll_timeout()
                    .is_some_and(|t| t <= self.node_now(n));
                if due {
                    self.feed(n, Input::Tick);
                }
            }
            // The client writes to every writable site (a correct system has at most one).
            if self.t % self.write_every == 0 {
                let writers: Vec<usize> = (0..2)
                    .filter(|&n| self.db[n].alive && self.db[n].writable)
                    .collect();
                if writers.len() > 1 && self.split_brain.is_none() {
                    self.split_brain = Some(self.t);
                }
                for n in writers {
                    self.db[n].write_pos[0] += 1;
                    let e = self.sites[n].epoch().0;
                    self.acked.push((self.t, n, e));
                }
            }
        }
    }

    pub fn kill(&mut self, n: usize) {
        self.db[n].alive = false;
        self.db[n].writable = false;
    }

    pub fn cut(&mut self, a: usize, b: usize) {
        self.up[a][b] = false;
        self.up[b][a] = false;
    }
    pub fn heal(&mut self, a: usize, b: usize) {
        self.up[a][b] = true;
        self.up[b][a] = true;
    }

    /// Crash and restart a site engine through its state (as journal replay would rebuild it).
    pub fn restart(&mut self, n: usize) {
        let st = self.sites[n].state().clone();
        self.sites[n] = SiteEngine::from_state(self.cfg.clone(), SiteId(n as u16), st);
        self.feed(n, Input::Restarted);
    }

    pub fn alerts_of(&self, kind: &str) -> Vec<&AlertEvent> {
        self.alerts
            .iter()
            .filter(|(_, a)| a.id.kind.as_str() == kind)
            .map(|(_, a)| a)
            .collect()
    }

    pub fn failover_report(&self) -> Option<&Report> {
        self.reports
            .iter()
            .map(|(_, r)| r)
            .find(|r| matches!(r, Report::Failover { .. }))
    }

    pub fn operator(&mut self, n: usize, req: lifeboat_core::OperatorRequest) {
        self.feed(n, Input::Operator(req));
    }

    pub fn message(&mut self, to: usize, from: Peer, msg: Message) {
        self.feed(to, Input::Message { from, msg });
    }

    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for (_, a) in &self.alerts {
            *m.entry(a.id.kind.as_str()).or_default() += 1;
        }
        m
    }
}
