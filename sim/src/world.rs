//! The world of one seed: virtual time, the event queue, the nodes (two site engines and the
//! arbiter, real and unchanged), the sites around them (databases, disks, backup jobs), the
//! links, the clients, the faults and the oracles. One seed decides everything.

use crate::clock::Clock;
use crate::db::{DbModel, LinId, Lineages};
use crate::net::{Net, ARBITER, NODES};
use crate::node::{Engine, Node};
use crate::oracle::Oracles;
use crate::outcome::{SeedOutcome, Violation};
use crate::queue::Queue;
use crate::trace::{input_fp, output_fp, Trace};
use lifeboat_core::arbiter::Arbiter;
use lifeboat_core::engine::{Role, SiteEngine};
use lifeboat_core::protocol::{Input, Message, Output, Peer};
use lifeboat_core::{
    AlertKind, ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, Config, DbId, Epoch, Lsn, Millis,
    OpId, SiteId, UtcMillis,
};
use lifeboat_scenarios::{FaultMode, FaultSpec, Witness, WorldParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Wall-clock UTC at simulated time 0 (2026-11-22T00:00:00Z), carried as data in artifacts.
pub const UTC_AT_START: i64 = 1_795_305_600_000;
/// Hard cap on events per seed: a run that needs more is a runaway (an engine livelock).
pub const MAX_EVENTS: u64 = 200_000_000;
/// A quiet world handles a few hundred events a simulated minute; a site loss's retries a few
/// thousand. Far more is a storm.
pub const EVENTS_PER_MINUTE: u64 = 250_000;

/// An artifact file as its producer wrote it.
#[derive(Copy, Clone, Debug)]
pub struct Body {
    pub meta: ArtifactMeta,
    pub producer: u8,
    /// The producer's lineage: the content at any position up to `lsn_end`.
    pub lin: LinId,
    /// Damaged at rest in the producer's outbox: every copy fails verification.
    pub damaged: bool,
}

/// What a backup cuts from a database: the kind, the positions, the base and the epoch.
#[derive(Copy, Clone, Debug)]
pub struct Cut {
    pub kind: ArtifactKind,
    pub start: u64,
    pub end: u64,
    pub base_full: Option<u64>,
    pub epoch: Epoch,
}

/// A received copy in a site's inbox.
#[derive(Copy, Clone, Debug)]
pub struct Received {
    pub body: Body,
    /// The copy failed verification when it arrived (its computed checksum differs).
    pub bad: bool,
    /// Damaged at rest after it was verified.
    pub rotten: bool,
    pub at: Millis,
}

/// Everything at a site except its engine.
#[derive(Clone, Debug)]
pub struct SiteRt {
    /// The site (database host and agent host) exists.
    pub alive: bool,
    pub dbs: Vec<DbModel>,
    /// The databases accept writes.
    pub writable: bool,
    /// The epoch the databases were last opened for writing at.
    pub db_epoch: Epoch,
    /// Writes are refused below this epoch (an external fence ran against this site).
    pub fence_epoch: Epoch,
    /// Bumped by every fence / allow / promote, so a slow fence never undoes a later allow.
    pub write_gen: u64,
    pub outbox: BTreeMap<ArtifactKey, Body>,
    pub inbox: BTreeMap<ArtifactKey, Received>,
    /// Database states when writes last stopped here (the acknowledged history).
    pub last_write_state: Option<crate::db::States>,
    /// Database states when this site was promoted at an epoch.
    pub promote_state: BTreeMap<Epoch, crate::db::States>,
    /// Positions last reported to the engine (only changes are reported).
    pub reported: Vec<u64>,
    /// At-rest damage queued for the next artifacts produced here / received here.
    pub damage_outbox: u32,
    pub damage_inbox: u32,
    /// Artifacts whose restore fails permanently here.
    pub poisoned: std::collections::BTreeSet<ArtifactKey>,
    /// The operator paused this site's backups (and has not resumed them).
    pub paused: bool,
    /// The adapter runs each operation once: a re-issued operation still running is not
    /// started again, a finished one gets its result again (kept with the agent's journal).
    pub running: std::collections::BTreeSet<OpId>,
    pub finished: BTreeMap<OpId, Result<(), lifeboat_core::protocol::Failure>>,
    /// Restores in progress and when each will end.
    pub restore_ends: BTreeMap<OpId, Millis>,
    /// The database service is down (`service_down`): it acknowledges no write, whatever the
    /// engine allowed; the agent still answers.
    pub service_down: bool,
    /// The chance that a local restart of the service (`RestartService`) fails while it is down.
    pub restart_fails: f64,
    /// A resume of paused backups that could not reach the agent (down): delivered when it is
    /// back.
    pub resume_when_up: bool,
    /// With `world.stream_wal`: per database, the newest state received from the primary's
    /// stream (on disk: it survives crashes of the agent).
    pub streamed: Vec<Option<(u64, crate::db::LinId)>>,
    /// The point-in-time archive (`Command::Archive`): on disk, it survives crashes.
    pub archive: BTreeMap<ArtifactKey, Received>,
}

impl SiteRt {
    fn new(dbs: usize) -> Self {
        SiteRt {
            alive: true,
            dbs: vec![DbModel::new(); dbs],
            writable: false,
            db_epoch: Epoch(0),
            fence_epoch: Epoch(0),
            write_gen: 0,
            outbox: BTreeMap::new(),
            inbox: BTreeMap::new(),
            last_write_state: None,
            promote_state: BTreeMap::new(),
            reported: vec![0; dbs],
            damage_outbox: 0,
            damage_inbox: 0,
            poisoned: Default::default(),
            paused: false,
            running: Default::default(),
            finished: BTreeMap::new(),
            restore_ends: BTreeMap::new(),
            service_down: false,
            restart_fails: 0.0,
            resume_when_up: false,
            streamed: vec![None; dbs],
            archive: BTreeMap::new(),
        }
    }
    pub fn states(&self) -> crate::db::States {
        self.dbs.iter().map(DbModel::state).collect()
    }
}

/// Every artifact key of one database, as a range of the ordered inbox and outbox.
pub fn db_keys(db: DbId) -> std::ops::Range<ArtifactKey> {
    let at = |d: u32| ArtifactKey {
        db: DbId(d),
        epoch: Epoch(0),
        lsn_start: Lsn(0),
        lsn_end: Lsn(0),
        kind: ArtifactKind::Full,
    };
    at(db.0)..at(db.0.saturating_add(1))
}

/// Ground truth the oracles judge against.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    /// The highest epoch that exists anywhere (granted by the arbiter or self-assigned).
    pub epoch: Epoch,
    pub epoch_began: Millis,
    /// Which site opened its databases for writing at each epoch.
    pub writer_of_epoch: BTreeMap<Epoch, usize>,
    /// Where the service identity points.
    pub identity: usize,
}

/// Scheduled things.
pub enum Ev {
    Wake {
        node: usize,
        gen: u64,
    },
    /// Inputs from this node's own adapter (completions, probe results, positions...).
    Local {
        node: usize,
        inc: u32,
        inputs: Vec<Input>,
    },
    Msg {
        from: usize,
        to: usize,
        msg: Box<Message>,
        /// With `world.stream_wal`: the sender's database states when it sent a heartbeat.
        stream: Option<Box<crate::db::States>>,
    },
    Arrive(Box<Arrival>),
    /// A site's etcd call reaches etcd (`held`: again, after `witness_slow` held it, with the
    /// answer's own hold).
    EtcdCall {
        site: usize,
        inc: u32,
        id: u64,
        call: Box<crate::etcd::CallEv>,
        held: Option<Millis>,
    },
    /// etcd's answers reach the site.
    EtcdAnswer {
        site: usize,
        inc: u32,
        id: u64,
        answer: Box<crate::etcd::AnswerEv>,
    },
    /// The site's etcd client gives up on a call.
    EtcdTimeout {
        site: usize,
        inc: u32,
        id: u64,
    },
    RestoreDone {
        site: usize,
        inc: u32,
        op: OpId,
        meta: Box<ArtifactMeta>,
    },
    FenceApply {
        site: usize,
        inc: u32,
        gen: u64,
        op: OpId,
    },
    ClientTick,
    FaultStart(usize),
    FaultEnd(usize),
    /// A `flapping_link` fault's link goes down (`true`) or comes back (`false`).
    Flap {
        fault: usize,
        down: bool,
    },
    Restart {
        node: usize,
    },
    /// A node's process starts for the first time.
    Boot {
        node: usize,
    },
    OracleTick,
    DiskReport,
    Check(crate::oracle::Check),
    /// An operator's request to a site; an answer to the confirmation question with this
    /// deadline is dropped once that question is no longer open.
    Operator {
        site: usize,
        req: lifeboat_core::protocol::OperatorRequest,
        question: Option<Millis>,
    },
    End,
}

/// An artifact transfer landing.
pub struct Arrival {
    pub from: usize,
    pub to: usize,
    pub inc: u32,
    pub meta: ArtifactMeta,
    pub body: Body,
    pub bad: bool,
}

/// Random streams, one per concern, so removing one fault does not reshuffle everything else
/// (shrinking relies on it).
pub struct Rngs {
    pub net: ChaCha8Rng,
    pub exec: ChaCha8Rng,
    pub client: ChaCha8Rng,
    pub fault: ChaCha8Rng,
}

pub fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// Faults that act on the adapters rather than on links.
#[derive(Clone, Debug, Default)]
pub struct Active {
    pub restore_fail: Vec<(usize, f64)>,
    pub slow: Vec<(usize, f64)>,
    pub stalled: u32,
    pub disk_pressure: u32,
    pub never_ship: Vec<Option<DbId>>,
    pub poison_next: Vec<Option<DbId>>,
    /// Resolved targets of window faults, for their end: (nodes...).
    pub targets: BTreeMap<usize, Vec<usize>>,
    /// `flapping_link` faults in progress, and whether their link is cut right now.
    pub flapping: BTreeMap<usize, bool>,
}

impl Active {
    pub fn slow_factor(&self) -> f64 {
        self.slow.iter().map(|s| s.1).product()
    }
    pub fn p_restore_fail(&self) -> f64 {
        1.0 - self.restore_fail.iter().fold(1.0, |a, x| a * (1.0 - x.1))
    }
}

pub struct World {
    pub cfg: Config,
    pub params: WorldParams,
    pub seed: u64,
    pub now: Millis,
    pub end: Millis,
    pub q: Queue<Ev>,
    pub nodes: Vec<Node>,
    pub sites: Vec<SiteRt>,
    pub lin: Vec<Lineages>,
    pub net: Net,
    pub schedule: Vec<FaultSpec>,
    pub active: Active,
    pub rng: Rngs,
    /// Each database's client write rate (transactions per second) and the current factor.
    pub rates: Vec<f64>,
    pub rate_factor: f64,
    pub last_settle: Millis,
    pub truth: Truth,
    pub oracle: Oracles,
    pub out: SeedOutcome,
    pub trace: Trace,
    out_buf: Vec<Output>,
    pub stop: bool,
    /// Consecutive wakes of a node at one instant (livelock guard).
    same_instant: (Millis, usize, u32),
    pub roles: [Option<Role>; 2],
    /// Events in the current simulated minute.
    storm: (Millis, u64),
    /// When each node's process first starts.
    pub boot: Vec<Millis>,
    /// The simulated operator (confirmations, forced failovers).
    pub operator: crate::operator::Operator,
    /// With the witness on etcd: the sites' translations and calls, the witness faults.
    pub etcd: Option<Box<crate::etcd::EtcdSim>>,
}

impl World {
    pub fn new(
        cfg: Config,
        params: WorldParams,
        seed: u64,
        schedule: Vec<FaultSpec>,
        record: bool,
    ) -> World {
        crate::node::install_quiet_panic_hook();
        let journal = params.journal
            || schedule.iter().any(|f| {
                matches!(
                    f.mode,
                    Some(
                        FaultMode::EngineCrash
                            | FaultMode::OldPrimaryReturns
                            | FaultMode::ArbiterLoss
                            | FaultMode::ArbiterStateLost
                            | FaultMode::SiteLoss
                    )
                )
            });
        let mut rng_world = stream(seed, 0);
        let ndb = cfg.databases.len();
        let primary = cfg.initial_primary_id().0 as usize;
        let etcd = params.witness == Witness::Etcd;
        let nodes: Vec<Node> = (0..NODES)
            .map(|n| {
                let offset = rng_world.gen_range(0..3_600_000u64);
                let engine = match (n == ARBITER, etcd) {
                    (true, false) => Engine::Arbiter(Box::new(Arbiter::new(cfg.clone()))),
                    (true, true) => Engine::Etcd(Box::new(crate::node::Etcd {
                        store: lifeboat_core::etcd::model::Store::new(),
                        keys: lifeboat_core::etcd::Keys::new(crate::etcd::PREFIX),
                    })),
                    _ => Engine::Site(Box::new(SiteEngine::new(cfg.clone(), SiteId(n as u16)))),
                };
                // etcd keeps its state by quorum: no journal of its own.
                let journal = journal && !(n == ARBITER && etcd);
                Node::new(engine, Clock::new(offset), journal, params.snapshot_every)
            })
            .collect();
        let rates = (0..ndb)
            .map(|_| params.write_rate * rng_world.gen_range(0.5..1.5))
            .collect();
        // Each process starts at its own moment, so timer phases differ from seed to seed.
        let mut boot: Vec<Millis> = (0..NODES).map(|_| rng_world.gen_range(0..5_000)).collect();
        if etcd {
            // An etcd cluster is infrastructure that runs before the deployment's agents do.
            boot[ARBITER] = 0;
        }
        let end = params.run_ms();
        let etcd = etcd.then(|| Box::new(crate::etcd::EtcdSim::new(&cfg, seed)));
        let mut w = World {
            lin: (0..ndb).map(|_| Lineages::new(primary as u8)).collect(),
            sites: (0..2).map(|_| SiteRt::new(ndb)).collect(),
            net: Net::new(params.latency.0),
            nodes,
            q: Queue::default(),
            now: 0,
            end,
            seed,
            active: Active::default(),
            rng: Rngs {
                net: stream(seed, 1),
                exec: stream(seed, 2),
                client: stream(seed, 3),
                fault: stream(seed, 4),
            },
            rates,
            rate_factor: 1.0,
            last_settle: 0,
            truth: Truth {
                epoch: Epoch(1),
                epoch_began: 0,
                writer_of_epoch: BTreeMap::new(),
                identity: primary,
            },
            oracle: Oracles::new(ndb),
            out: SeedOutcome {
                seed,
                schedule: schedule.clone(),
                ..Default::default()
            },
            trace: if record {
                Trace::recording()
            } else {
                Trace::default()
            },
            out_buf: Vec::with_capacity(64),
            stop: false,
            same_instant: (0, 0, 0),
            schedule,
            roles: [None, None],
            storm: (0, 0),
            boot,
            operator: Default::default(),
            etcd,
            cfg,
            params,
        };
        if w.etcd.is_some() {
            w.etcd_init();
        }
        w
    }

    // ------------------------------------------------------------------ the loop

    pub fn run(mut self) -> SeedOutcome {
        self.start();
        while let Some((t, ev)) = self.q.pop() {
            if t > self.end {
                break;
            }
            self.now = t;
            self.out.events += 1;
            self.dispatch(ev);
            if self.stop {
                break;
            }
            if self.out.events > MAX_EVENTS {
                self.violation(
                    "liveness",
                    format!("more than {MAX_EVENTS} events: a runaway"),
                );
                break;
            }
            let minute = t / 60_000;
            if minute != self.storm.0 {
                self.storm = (minute, 0);
            }
            self.storm.1 += 1;
            if self.storm.1 > EVENTS_PER_MINUTE {
                self.violation(
                    "liveness",
                    format!(
                        "more than {EVENTS_PER_MINUTE} events in one simulated minute: a storm \
                         (a loop without backoff)"
                    ),
                );
                break;
            }
        }
        if !self.stop {
            self.now = self.end;
            self.finish();
        }
        self.out.simulated_ms = self.now;
        self.out.trace_hash = self.trace.hash;
        if let Some(r) = self.trace.ring.take() {
            self.out.last_events = r.into_iter().collect();
        }
        self.out
    }

    fn start(&mut self) {
        let p = &self.params;
        self.q.push(p.client_tick.0, Ev::ClientTick);
        self.q
            .push(self.cfg.alerts.check_every_ms.max(1_000), Ev::OracleTick);
        self.q.push(1, Ev::DiskReport);
        for (i, f) in self.schedule.iter().enumerate() {
            self.q.push(f.at.0, Ev::FaultStart(i));
        }
        self.q.push(self.end, Ev::End);
        for n in 0..NODES {
            self.nodes[n].up = false;
            if self.etcd_holds_boot(n) {
                continue;
            }
            self.q.push(self.boot[n], Ev::Boot { node: n });
        }
        // Log shipping starts from a full backup of every database, taken at the primary.
        let primary = self.cfg.initial_primary_id().0 as usize;
        let mut found = Vec::new();
        for db in 0..self.cfg.databases.len() {
            let cut = Cut {
                kind: ArtifactKind::Full,
                start: 0,
                end: 0,
                base_full: None,
                epoch: Epoch(1),
            };
            let meta = self.make_artifact(primary, db, cut);
            found.push(Input::ArtifactDiscovered(meta));
        }
        let inc = self.nodes[primary].inc;
        self.q.push(
            self.boot[primary] + 1,
            Ev::Local {
                node: primary,
                inc,
                inputs: found,
            },
        );
        self.oracle_start();
    }

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { node, gen } => {
                let n = &mut self.nodes[node];
                if !n.up || n.wake_gen != gen {
                    return;
                }
                n.wake_at = None;
                if self.same_instant.0 == self.now && self.same_instant.1 == node {
                    self.same_instant.2 += 1;
                    if self.same_instant.2 > 10_000 {
                        return self.violation(
                            "liveness",
                            format!(
                                "{}: poll_timeout stays due at the same instant after 10000 \
                                 ticks (a timer livelock)",
                                self.node_name(node)
                            ),
                        );
                    }
                } else {
                    self.same_instant = (self.now, node, 0);
                }
                self.feed(node, Input::Tick, None);
            }
            Ev::Local { node, inc, inputs } => {
                for input in inputs {
                    if !self.nodes[node].up || self.nodes[node].inc != inc || self.stop {
                        return;
                    }
                    self.feed(node, input, None);
                }
            }
            Ev::Msg {
                from,
                to,
                msg,
                stream,
            } => {
                if !self.net.up(from, to) || !self.node_reachable(to) {
                    return;
                }
                if let Some(states) = stream {
                    // Received and kept on the recovery site's disk, whatever its engine does. A
                    // stream is in order: a late copy never replaces what continues it.
                    for (i, &st) in states.iter().enumerate() {
                        let ahead = self.sites[to].streamed[i]
                            .is_some_and(|(p, l)| p > st.0 && self.lin[i].agree(l, st.1, st.0));
                        if !ahead {
                            self.sites[to].streamed[i] = Some(st);
                        }
                    }
                }
                self.oracle.delivered(from, to, self.now);
                let from = if from == ARBITER {
                    Peer::Arbiter
                } else {
                    Peer::Site(SiteId(from as u16))
                };
                self.feed(to, Input::Message { from, msg: *msg }, None);
            }
            Ev::Arrive(a) => self.arrive(a.from, a.to, a.inc, a.meta, a.body, a.bad),
            Ev::EtcdCall {
                site,
                inc,
                id,
                call,
                held,
            } => self.etcd_arrive(site, inc, id, call, held),
            Ev::EtcdAnswer {
                site,
                inc,
                id,
                answer,
            } => self.etcd_answer(site, inc, id, *answer),
            Ev::EtcdTimeout { site, inc, id } => self.etcd_timeout(site, inc, id),
            Ev::RestoreDone {
                site,
                inc,
                op,
                meta,
            } => self.restore_done(site, inc, op, *meta),
            Ev::FenceApply { site, inc, gen, op } => {
                if self.sites[site].write_gen == gen && self.sites[site].writable {
                    self.settle();
                    self.close_writes(site);
                }
                self.complete_inc(site, inc, op, Ok(()), 0);
            }
            Ev::ClientTick => {
                self.settle();
                self.rate_factor = self.rng.client.gen_range(0.75..1.25);
                self.q
                    .push(self.now + self.params.client_tick.0, Ev::ClientTick);
            }
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::Flap { fault, down } => self.flap(fault, down),
            Ev::Restart { node } => self.restart(node),
            Ev::Boot { node } => {
                self.nodes[node].up = true;
                self.oracle.node_up(node, self.now);
                self.oracle_paths_changed();
                self.feed(node, Input::Tick, None);
            }
            Ev::OracleTick => {
                self.etcd_release_boot(false);
                self.settle();
                self.oracle_tick();
                let every = self.cfg.alerts.check_every_ms.max(1_000);
                self.q.push(self.now + every, Ev::OracleTick);
            }
            Ev::DiskReport => {
                for s in 0..2 {
                    self.report_disk(s);
                }
                self.q.push(
                    self.now + self.params.disk_report_every.0.max(1_000),
                    Ev::DiskReport,
                );
            }
            Ev::Check(c) => self.check(c),
            Ev::Operator {
                site,
                req,
                question,
            } => self.operator_request(site, req, question),
            Ev::End => {}
        }
    }

    // ------------------------------------------------------------------ engines

    pub fn node_name(&self, n: usize) -> String {
        if n == ARBITER && self.etcd.is_some() {
            "etcd".into()
        } else if n == ARBITER {
            "arbiter".into()
        } else {
            format!("site {}", self.cfg.site_name(SiteId(n as u16)))
        }
    }

    /// Whether messages to this node can be received (its process runs; a site must exist).
    pub fn node_reachable(&self, n: usize) -> bool {
        self.nodes[n].up && (n == ARBITER || self.sites[n].alive)
    }

    pub fn site_engine(&self, s: usize) -> &SiteEngine {
        match &self.nodes[s].engine {
            Engine::Site(e) => e,
            _ => unreachable!("node {s} is a site"),
        }
    }

    pub fn role(&self, s: usize) -> Option<Role> {
        self.nodes[s].up.then(|| self.site_engine(s).role())
    }

    /// Feed one input to a node's engine, then route what comes out. `expect` is an alert the
    /// oracles require in this very step (kind, database).
    pub fn feed(
        &mut self,
        node: usize,
        input: Input,
        expect: Option<(AlertKind, Option<DbId>, String)>,
    ) {
        if !self.nodes[node].up || self.stop {
            return;
        }
        if node == ARBITER && self.etcd.is_some() {
            return self.etcd_tick(input);
        }
        let local = self.nodes[node].clock.local(self.now);
        self.trace.add(&[self.now, node as u64, input_fp(&input)]);
        if self.trace.enabled() {
            let name = self.node_name(node);
            self.trace.note(self.now, || format!("{name} <- {input:?}"));
        }
        let epoch_before = self.nodes[node].engine.epoch();
        // The arbiter's input, for the oracle on its outputs (`arbiter_epochs`).
        let arbiter_input = (node == ARBITER).then(|| {
            let from = match &input {
                Input::Message {
                    from: Peer::Site(s),
                    msg,
                } => Some((s.0 as usize, msg.clone())),
                _ => None,
            };
            (from, matches!(input, Input::Restarted))
        });
        let mut out = std::mem::take(&mut self.out_buf);
        out.clear();
        if let Err(panic) = self.nodes[node].handle(local, input, &mut out) {
            self.out_buf = out;
            let name = self.node_name(node);
            return self.violation(
                "engine_panic",
                format!("{name}: the engine panicked: {panic}"),
            );
        }
        let epoch = self.nodes[node].engine.epoch();
        if epoch < epoch_before {
            let name = self.node_name(node);
            self.violation(
                "epochs_grow",
                format!("{name}: epoch went from {epoch_before} down to {epoch}"),
            );
        }
        if let Some((kind, db, why)) = expect {
            let raised = out.iter().any(|o| {
                matches!(o, Output::Alert(a) if a.id.kind == kind
                    && (db.is_none() || a.id.db == db)
                    && matches!(a.change, lifeboat_core::alert::AlertChange::Raised | lifeboat_core::alert::AlertChange::Updated))
            });
            if !raised {
                let name = self.node_name(node);
                self.violation(
                    "alert_threshold",
                    format!("{name}: {why}, but no `{}` alert was raised", kind.as_str()),
                );
            }
        }
        if let Some((from, restarted)) = arbiter_input {
            let at = match &self.nodes[ARBITER].engine {
                crate::node::Engine::Arbiter(a) => a.state().now,
                _ => 0,
            };
            self.check_arbiter_outputs(from, restarted, at, &out);
        }
        if node == ARBITER {
            self.arbiter_epoch(epoch);
        }
        for o in out.drain(..) {
            self.trace.add(&[output_fp(&o)]);
            if self.trace.enabled() {
                let name = self.node_name(node);
                self.trace.note(self.now, || match &o {
                    // Kind, change and severity first: a cut line never hides them.
                    Output::Alert(a) => format!(
                        "{name} -> Alert {} {} {} db={:?} count={} subject={:?}: {}",
                        a.id.kind.as_str(),
                        a.change.as_str(),
                        a.severity.as_str(),
                        a.id.db.map(|d| d.0),
                        a.count,
                        a.id.subject,
                        a.text
                    ),
                    _ => format!("{name} -> {o:?}"),
                });
            }
            self.route(node, o);
        }
        self.out_buf = out;
        if node < 2 {
            let role = self.site_engine(node).role();
            if self.roles[node] != Some(role) {
                self.roles[node] = Some(role);
                self.oracle.role_changed(node, self.now);
                if role == Role::Promoting {
                    self.oracle.promoting_since[node] = self.now;
                }
            }
            self.operator_look(node);
        }
        self.rearm(node);
    }

    pub(crate) fn arbiter_epoch(&mut self, epoch: Epoch) {
        if self.oracle.arbiter.adopted.is_some_and(|a| a >= epoch) {
            // An epoch a forced failover took without the arbiter: it begins when that site
            // opens its databases (after its external fence), not when the arbiter hears of it.
            return;
        }
        if epoch > self.truth.epoch {
            // Writes up to this instant belong to the old epoch.
            self.settle();
            self.truth.epoch = epoch;
            self.truth.epoch_began = self.now;
            self.oracle_epoch_moved();
        }
    }

    /// Schedule the node's next wake-up at its engine's deadline.
    pub fn rearm(&mut self, node: usize) {
        let now = self.now;
        let n = &mut self.nodes[node];
        if !n.up {
            return;
        }
        match n.engine.poll_timeout() {
            None => {
                if n.wake_at.is_some() {
                    n.wake_at = None;
                    n.wake_gen += 1;
                }
            }
            Some(deadline) => {
                let t = n.clock.real_at(now, deadline);
                if t == Millis::MAX {
                    n.wake_at = None;
                    n.wake_gen += 1;
                    return;
                }
                if n.wake_at != Some(t) {
                    n.wake_gen += 1;
                    n.wake_at = Some(t);
                    let gen = n.wake_gen;
                    self.q.push(t, Ev::Wake { node, gen });
                }
            }
        }
    }

    fn route(&mut self, node: usize, o: Output) {
        match o {
            Output::Send { to, msg } => {
                if matches!(msg, Message::RestartRequest { .. }) {
                    self.oracle_auto_pilot_started(node);
                }
                if node == ARBITER {
                    self.check_handoff_target(&to, &msg);
                }
                if node < 2 && matches!(msg, Message::Acquire { force: false, .. }) {
                    self.check_drain(node);
                }
                let to = match to {
                    Peer::Site(s) if (s.0 as usize) < 2 => s.0 as usize,
                    Peer::Arbiter if self.cfg.arbiter => ARBITER,
                    _ => return,
                };
                if to == node {
                    return;
                }
                if to == ARBITER && node < 2 && self.etcd.is_some() {
                    // No arbiter process: the site's agent translates it into etcd calls.
                    return self.etcd_request(node, msg);
                }
                self.send(node, to, msg);
            }
            Output::Command(c) => {
                if node < 2 {
                    self.execute(node, c);
                }
            }
            Output::Alert(a) => self.on_alert(node, a),
            Output::Audit(_) => {}
            Output::Report(r) => self.on_report(node, r),
        }
    }

    /// Oracle `handoff_heard`: the arbiter hands an epoch (its unsolicited `View` naming the
    /// target holder) only to a site whose message reached it within one lease (plus the drift
    /// margin: the arbiter measures on its own clock). A target that cannot reach the arbiter
    /// could never renew, and nobody would accept writes.
    fn check_handoff_target(&mut self, to: &Peer, msg: &Message) {
        let (Peer::Site(t), Message::View { view, req: 0 }) = (to, msg) else {
            return;
        };
        let t = t.0 as usize;
        if t >= 2 || view.holder != Some(lifeboat_core::SiteId(t as u16)) {
            return;
        }
        let heard = self.oracle.last_delivery[t][ARBITER];
        let window = self.cfg.lease.lease_ms + self.cfg.drift_margin() + 1_000;
        if self.now.saturating_sub(heard) > window {
            let msg = format!(
                "the arbiter handed epoch {} to site {} whose last message reached it {} ago \
                 (more than one lease, {} ms): that site cannot renew",
                view.epoch,
                self.cfg.site_name(lifeboat_core::SiteId(t as u16)),
                lifeboat_scenarios::format_span(self.now.saturating_sub(heard)),
                self.cfg.lease.lease_ms
            );
            self.violation("handoff_heard", msg);
        }
    }

    /// Oracle `drain_barrier`: a takeover asks for the epoch (its first `Acquire` at this epoch)
    /// only once every received, verified log that continues a database's chain was restored,
    /// or failed `1 + DRAIN_RETRIES` times (the drain retries what waits for a retry; it does
    /// not leave restorable data behind to be thrown away or restored into the new primary).
    fn check_drain(&mut self, s: usize) {
        let epoch = self.nodes[s].engine.epoch();
        if self.oracle.drain_checked[s] == Some(epoch) {
            return;
        }
        self.oracle.drain_checked[s] = Some(epoch);
        let tries = 1 + lifeboat_core::defaults::DRAIN_RETRIES as usize;
        let site = &self.sites[s];
        let left: Vec<String> = site
            .inbox
            .iter()
            .filter(|(k, r)| {
                let pos = site.dbs.get(k.db.0 as usize).map_or(0, |d| d.pos);
                k.kind == ArtifactKind::Log
                    && k.epoch == epoch
                    && !r.bad
                    && !r.rotten
                    && !r.body.damaged
                    && !site.poisoned.contains(k)
                    && k.lsn_start.0 <= pos
                    && pos < k.lsn_end.0
                    && self.oracle.failures[s].get(k).map_or(0, |f| f.ops.len()) < tries
            })
            .map(|(k, _)| format!("db{} {}..{}", k.db.0, k.lsn_start.0, k.lsn_end.0))
            .collect();
        if !left.is_empty() {
            let msg = format!(
                "site {} asked for a new epoch with received, verified logs that continue its \
                 chain still unrestored (fewer than {tries} failed attempts): {}",
                self.cfg.site_name(lifeboat_core::SiteId(s as u16)),
                left.join(", ")
            );
            self.violation("drain_barrier", msg);
        }
    }

    /// A message on the wire: cut links drop it; loss, latency, reordering and duplication act.
    fn send(&mut self, from: usize, to: usize, msg: Message) {
        if !self.net.up(from, to) {
            return;
        }
        let stream = self.stream_of(from, to, &msg);
        if !self.net.faulty() {
            // A connection delivers in order: jitter never lets a message overtake another.
            let base = self.net.base_latency.max(1);
            let at = (self.now + base + self.rng.net.gen_range(0..=base / 2))
                .max(self.net.last_at[from][to]);
            self.net.last_at[from][to] = at;
            let msg = Box::new(msg);
            self.q.push(
                at,
                Ev::Msg {
                    from,
                    to,
                    msg,
                    stream,
                },
            );
            return;
        }
        let p_loss = self.net.p_loss();
        if p_loss > 0.0 && self.rng.net.gen_bool(p_loss) {
            return;
        }
        let d = self.net.delay(&mut self.rng.net);
        let p_dup = self.net.p_dup();
        if p_dup > 0.0 && self.rng.net.gen_bool(p_dup) {
            let d2 = self.net.delay(&mut self.rng.net);
            self.q.push(
                self.now + d2,
                Ev::Msg {
                    from,
                    to,
                    msg: Box::new(msg.clone()),
                    stream: stream.clone(),
                },
            );
        }
        let msg = Box::new(msg);
        self.q.push(
            self.now + d,
            Ev::Msg {
                from,
                to,
                msg,
                stream,
            },
        );
    }

    // ------------------------------------------------------------------ databases and clients

    /// Clients commit continuously to every site that accepts writes; this accounts for the
    /// commits since the last settle. Called before anything changes who may write.
    pub fn settle(&mut self) {
        let dt = self.now.saturating_sub(self.last_settle);
        if dt == 0 {
            return;
        }
        let from = self.last_settle;
        self.last_settle = self.now;
        // A site whose database service is down acknowledges nothing, whatever its engine allowed.
        let writers: Vec<usize> = (0..2)
            .filter(|&s| {
                self.sites[s].alive && self.sites[s].writable && !self.sites[s].service_down
            })
            .collect();
        if writers.is_empty() {
            return;
        }
        if writers.len() > 1 {
            let (a, b) = (writers[0], writers[1]);
            self.violation(
                "one_writer",
                format!(
                    "split brain: sites {} (epoch {}) and {} (epoch {}) both acknowledged writes \
                     between {} and {}",
                    self.cfg.site_name(SiteId(a as u16)),
                    self.sites[a].db_epoch,
                    self.cfg.site_name(SiteId(b as u16)),
                    self.sites[b].db_epoch,
                    crate::outcome::clock_text(from),
                    crate::outcome::clock_text(self.now)
                ),
            );
        }
        for &w in &writers {
            if self.sites[w].db_epoch < self.truth.epoch {
                let msg = format!(
                    "split brain: site {} acknowledged writes at epoch {} between {} and {}, \
                     after epoch {} began at {}",
                    self.cfg.site_name(SiteId(w as u16)),
                    self.sites[w].db_epoch,
                    crate::outcome::clock_text(from),
                    crate::outcome::clock_text(self.now),
                    self.truth.epoch,
                    crate::outcome::clock_text(self.truth.epoch_began)
                );
                self.violation("one_writer", msg);
            }
            for db in 0..self.rates.len() {
                let d = &mut self.sites[w].dbs[db];
                let x = d.carry + self.rates[db] * self.rate_factor * dt as f64 / 1000.0;
                let n = x.floor();
                d.carry = x - n;
                let n = n as u64;
                if n > 0 {
                    let st = self.lin[db].write(w as u8, d.state(), n);
                    d.pos = st.0;
                    d.lin = st.1;
                    self.out.transactions += n;
                }
            }
            self.trace.add(&[
                self.now,
                w as u64,
                self.sites[w].dbs.iter().map(|d| d.pos).sum(),
            ]);
        }
    }

    /// With `world.stream_wal`, what a heartbeat from site `from` to site `to` streams: the
    /// sender's database states as it sends (its changes up to now), when it is the primary
    /// (the receiver streams from the primary's server, whatever its engine says).
    fn stream_of(
        &mut self,
        from: usize,
        to: usize,
        msg: &Message,
    ) -> Option<Box<crate::db::States>> {
        if !self.params.stream_wal
            || from >= 2
            || to >= 2
            || !matches!(msg, Message::Heartbeat(_))
            || self.current_primary() != from
        {
            return None;
        }
        self.settle();
        Some(Box::new(self.sites[from].states()))
    }

    /// Writes stop at a site (fence applied, external fence, site lost).
    pub fn close_writes(&mut self, s: usize) {
        if self.sites[s].writable {
            self.sites[s].writable = false;
            self.sites[s].last_write_state = Some(self.sites[s].states());
        }
        self.note_writers();
    }

    /// Whether site `s` acknowledges writes now: it exists, its databases are open for writing
    /// and its database service runs.
    pub fn accepts_writes(&self, s: usize) -> bool {
        self.sites[s].alive && self.sites[s].writable && !self.sites[s].service_down
    }

    /// Which site is the primary now: the one whose databases were opened at the highest epoch.
    pub fn current_primary(&self) -> usize {
        let init = self.cfg.initial_primary_id().0 as usize;
        let other = 1 - init;
        if self.sites[other].db_epoch > self.sites[init].db_epoch {
            other
        } else {
            init
        }
    }

    pub fn make_artifact(&mut self, site: usize, db: usize, cut: Cut) -> ArtifactMeta {
        let Cut {
            kind,
            start,
            end,
            base_full,
            epoch,
        } = cut;
        let lin = self.sites[site].dbs[db].lin;
        let txs = end
            .saturating_sub(start)
            .max(if kind == ArtifactKind::Full { end } else { 0 });
        let key = ArtifactKey {
            db: DbId(db as u32),
            epoch,
            lsn_start: Lsn(start),
            lsn_end: Lsn(end),
            kind,
        };
        let content = self.lin[db].content_hash((end, lin));
        let meta = ArtifactMeta {
            key,
            base_full: base_full.map(Lsn),
            created_utc: UtcMillis(UTC_AT_START + self.now as i64),
            size: 4096 + txs * self.params.bytes_per_tx,
            checksum: Checksum(crate::trace::mix(&[
                site as u64,
                u64::from(key.db.0),
                epoch.0,
                start,
                end,
                kind as u64,
                content,
            ])),
            retry: 0,
        };
        let damaged = if self.sites[site].damage_outbox > 0 && !(start == 0 && end == 0) {
            self.sites[site].damage_outbox -= 1;
            true
        } else {
            false
        };
        self.sites[site].outbox.insert(
            key,
            Body {
                meta,
                producer: site as u8,
                lin,
                damaged,
            },
        );
        meta
    }

    // ------------------------------------------------------------------ results

    pub fn violation(&mut self, oracle: &'static str, message: String) {
        if self
            .out
            .violations
            .iter()
            .any(|v| v.oracle == oracle && v.message == message)
        {
            return;
        }
        self.trace
            .note(self.now, || format!("VIOLATION {oracle}: {message}"));
        self.out.violations.push(Violation {
            oracle,
            at: self.now,
            message,
        });
        self.stop = true;
    }

    fn finish(&mut self) {
        self.settle();
        self.oracle_end();
        self.out.longest_writer_gap = self.oracle.longest_writer_gap(self.now);
        let writers: Vec<usize> = (0..2)
            .filter(|&s| self.sites[s].alive && self.sites[s].writable)
            .collect();
        self.out.witness = match (self.cfg.arbiter, self.etcd.is_some()) {
            (false, _) => "none",
            (true, false) => "arbiter",
            (true, true) => "etcd",
        };
        self.out.final_primary = writers
            .first()
            .map(|&s| self.cfg.site_name(SiteId(s as u16)).to_string());
    }
}
