//! A node's process: the real engine (site engine or arbiter, or the etcd cluster that stands
//! in for the arbiter), its clock and its journal on the simulated disk. Crash and restart go through the production path: every input is
//! journaled with its `now` by the core's codec (`lifeboat_core::journal`); a record is synced
//! before the commands its input caused run (observations aside:
//! `Output::needs_durable_inputs`), so an input that caused nothing, or only observations, may
//! sit in an unsynced tail that a crash tears or loses; restart = snapshot + journal replay into a fresh
//! engine, then `Input::Restarted`.

use crate::clock::Clock;
use lifeboat_core::arbiter::{Arbiter, ArbiterState};
use lifeboat_core::engine::{SiteEngine, SiteState};
use lifeboat_core::etcd::model::Store;
use lifeboat_core::etcd::{Keys, Record};
use lifeboat_core::journal::{self, JournalWriter, Tail};
use lifeboat_core::protocol::{Input, Output};
use lifeboat_core::{ArtifactKey, Config, Epoch, Millis, SiteId};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub enum Engine {
    Site(Box<SiteEngine>),
    Arbiter(Box<Arbiter>),
    /// The etcd cluster in place of the arbiter (`world.witness = "etcd"`).
    Etcd(Box<Etcd>),
}

/// The etcd cluster: a linearizable store with TTL leases on the leader's clock (the node's),
/// and the deployment's keys. Its state survives a loss of quorum (the members keep their
/// disks); it keeps no journal of its own here.
#[derive(Clone, Debug)]
pub struct Etcd {
    pub store: Store,
    pub keys: Keys,
}

impl Etcd {
    /// The epoch record (`<prefix>/epoch`).
    pub fn record(&self) -> Option<Record> {
        self.store
            .get(&self.keys.epoch())
            .and_then(|kv| Record::decode(&kv.value))
    }
    /// The holder's liveness (`<prefix>/alive`) and its lease.
    pub fn alive(&self) -> Option<(Record, i64)> {
        self.store
            .get(&self.keys.alive())
            .and_then(|kv| Record::decode(&kv.value).map(|r| (r, kv.lease)))
    }
}

impl Engine {
    pub fn epoch(&self) -> Epoch {
        match self {
            Engine::Site(e) => e.epoch(),
            Engine::Arbiter(a) => a.epoch(),
            Engine::Etcd(e) => e.record().map_or(Epoch(0), |r| r.epoch),
        }
    }
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self {
            Engine::Site(e) => e.poll_timeout(),
            Engine::Arbiter(a) => a.poll_timeout(),
            // The next lease to expire (etcd revokes it then, requests or not).
            Engine::Etcd(e) => e.store.next_expiry(),
        }
    }
    pub fn site(&self) -> Option<&SiteEngine> {
        match self {
            Engine::Site(e) => Some(e),
            Engine::Arbiter(_) | Engine::Etcd(_) => None,
        }
    }
    pub fn etcd(&self) -> Option<&Etcd> {
        match self {
            Engine::Etcd(e) => Some(e),
            _ => None,
        }
    }
    pub fn etcd_mut(&mut self) -> Option<&mut Etcd> {
        match self {
            Engine::Etcd(e) => Some(e),
            _ => None,
        }
    }
}

/// The journal and snapshot of one node, as bytes on its simulated disk.
#[derive(Clone, Debug)]
pub struct Disk {
    pub snapshot: Option<Vec<u8>>,
    pub journal: Vec<u8>,
    /// Bytes known durable (fsynced).
    pub synced: usize,
    writer: JournalWriter,
    since_snapshot: u64,
}

impl Disk {
    fn new() -> Self {
        Disk {
            snapshot: None,
            journal: journal::encode_header(0),
            synced: journal::JOURNAL_HEADER_LEN,
            writer: JournalWriter::new(0),
            since_snapshot: 0,
        }
    }
}

/// What a restart found on disk.
#[derive(Clone, Debug)]
pub struct Replay {
    pub records: usize,
    pub torn: bool,
    pub lost_bytes: usize,
}

pub struct Node {
    pub engine: Engine,
    pub clock: Clock,
    /// The process runs.
    pub up: bool,
    /// Bumped at every restart: completions of a dead process's commands are dropped.
    pub inc: u32,
    pub disk: Option<Disk>,
    pub snapshot_every: u64,
    /// The engine's state just before the last crash, when the whole journal survived (to check
    /// that replay reproduces it).
    pub before_crash: Option<Box<EngineState>>,
    pub wake_gen: u64,
    pub wake_at: Option<Millis>,
    /// The highest epoch this engine held after an input whose effects left the process.
    pub durable_epoch: Epoch,
    pub max_epoch: Epoch,
    /// What this site's adapter removed from its inbox because a `Prune` said so (and has not
    /// received again since). A later command that names one of these is a wrong keep-list.
    pub pruned: BTreeSet<ArtifactKey>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum EngineState {
    Site(Box<SiteState>),
    Arbiter(ArbiterState),
    Etcd(Box<Store>),
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
    static QUIET: RefCell<bool> = const { RefCell::new(false) };
}

/// Keep engine panics out of stderr while the simulator catches them (it reports them as
/// violations with the seed instead).
pub fn install_quiet_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(|q| *q.borrow()) {
                let msg = info.to_string();
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(msg));
            } else {
                default(info);
            }
        }));
    });
}

fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    QUIET.with(|q| *q.borrow_mut() = true);
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| *q.borrow_mut() = false);
    r.map_err(|_| {
        PANIC_MESSAGE
            .with(|m| m.borrow_mut().take())
            .unwrap_or_else(|| "engine panicked".into())
    })
}

impl Node {
    pub fn new(engine: Engine, clock: Clock, journal: bool, snapshot_every: u64) -> Self {
        Node {
            engine,
            clock,
            up: true,
            inc: 0,
            disk: journal.then(Disk::new),
            snapshot_every,
            before_crash: None,
            wake_gen: 0,
            wake_at: None,
            durable_epoch: Epoch(1),
            max_epoch: Epoch(1),
            pruned: BTreeSet::new(),
        }
    }

    pub fn state(&self) -> EngineState {
        match &self.engine {
            Engine::Site(e) => EngineState::Site(Box::new(e.state().clone())),
            Engine::Arbiter(a) => EngineState::Arbiter(a.state().clone()),
            Engine::Etcd(e) => EngineState::Etcd(Box::new(e.store.clone())),
        }
    }

    /// Journal the input, run the engine, collect its outputs into `out`, sync when the input
    /// had effects. An engine panic comes back as `Err`.
    pub fn handle(
        &mut self,
        now: Millis,
        input: Input,
        out: &mut Vec<Output>,
    ) -> Result<(), String> {
        if let Some(disk) = self.disk.as_mut() {
            disk.writer
                .append(&(now, &input), &mut disk.journal)
                .map_err(|e| format!("journal append failed: {e}"))?;
            disk.since_snapshot += 1;
        }
        let engine = &mut self.engine;
        guarded(|| match engine {
            Engine::Site(e) => {
                e.handle(now, input);
                while let Some(o) = e.poll_output() {
                    out.push(o);
                }
            }
            Engine::Arbiter(a) => {
                a.handle(now, input);
                while let Some(o) = a.poll_output() {
                    out.push(o);
                }
            }
            Engine::Etcd(e) => {
                if matches!(input, Input::Tick) {
                    e.store.expire(now);
                }
            }
        })?;
        let epoch = self.engine.epoch();
        self.max_epoch = self.max_epoch.max(epoch);
        let sync = out.iter().any(Output::needs_durable_inputs);
        if sync {
            self.durable_epoch = self.durable_epoch.max(epoch);
        }
        let every = self.snapshot_every;
        if let Some(disk) = self.disk.as_mut() {
            if sync {
                disk.synced = disk.journal.len();
            }
            if disk.since_snapshot >= every {
                let next = disk.writer.next_seq();
                let snap = match &self.engine {
                    Engine::Site(e) => journal::encode_snapshot(e.state(), next),
                    Engine::Arbiter(a) => journal::encode_snapshot(a.state(), next),
                    Engine::Etcd(_) => return Err("etcd keeps no journal here".into()),
                }
                .map_err(|e| format!("snapshot failed: {e}"))?;
                // Written to a temporary file, fsynced and renamed: atomic and durable.
                disk.snapshot = Some(snap);
                disk.journal = journal::encode_header(next);
                disk.synced = disk.journal.len();
                disk.since_snapshot = 0;
            }
        }
        Ok(())
    }

    /// The process dies: the unsynced journal tail survives only up to `keep` of its bytes
    /// (possibly mid-record). Returns the bytes lost.
    pub fn crash(&mut self, keep: impl FnOnce(usize) -> usize) -> usize {
        self.up = false;
        self.wake_at = None;
        self.wake_gen += 1;
        let Some(disk) = self.disk.as_mut() else {
            return 0;
        };
        let unsynced = disk.journal.len() - disk.synced;
        let kept = keep(unsynced).min(unsynced);
        disk.journal.truncate(disk.synced + kept);
        let lost = unsynced - kept;
        self.before_crash = (lost == 0).then(|| Box::new(self.state_now()));
        lost
    }

    /// The machine is lost with its disk: the next start finds an empty data directory.
    pub fn wipe_disk(&mut self) {
        if let Some(disk) = self.disk.as_mut() {
            *disk = Disk::new();
        }
        self.before_crash = None;
        self.durable_epoch = Epoch(1);
        self.max_epoch = Epoch(1);
    }

    fn state_now(&self) -> EngineState {
        self.state()
    }

    /// Rebuild the engine from its disk (snapshot, then the journal's intact records) and
    /// truncate a torn tail. The caller then feeds `Input::Restarted`.
    pub fn recover(&mut self, cfg: &Config, me: Option<SiteId>) -> Result<Replay, String> {
        if let Engine::Etcd(_) = self.engine {
            // The cluster regains its quorum with the state its members kept.
            self.up = true;
            self.inc += 1;
            return Ok(Replay {
                records: 0,
                torn: false,
                lost_bytes: 0,
            });
        }
        let disk = self
            .disk
            .as_mut()
            .ok_or("a node without a journal cannot restart")?;
        let mut engine = match (me, &disk.snapshot) {
            (Some(site), Some(bytes)) => {
                let (st, _) = journal::decode_snapshot::<SiteState>(bytes)
                    .map_err(|e| format!("snapshot: {e}"))?;
                Engine::Site(Box::new(SiteEngine::from_state(cfg.clone(), site, st)))
            }
            (Some(site), None) => Engine::Site(Box::new(SiteEngine::new(cfg.clone(), site))),
            (None, Some(bytes)) => {
                let (st, _) = journal::decode_snapshot::<ArbiterState>(bytes)
                    .map_err(|e| format!("snapshot: {e}"))?;
                Engine::Arbiter(Box::new(Arbiter::from_state(cfg.clone(), st)))
            }
            (None, None) => Engine::Arbiter(Box::new(Arbiter::new(cfg.clone()))),
        };
        let decoded = journal::decode::<(Millis, Input)>(&disk.journal)
            .map_err(|e| format!("journal: {e}"))?;
        let torn = matches!(decoded.tail, Tail::Torn { .. });
        let lost_bytes = disk.journal.len() - decoded.valid_len;
        disk.journal.truncate(decoded.valid_len);
        disk.synced = decoded.valid_len;
        disk.writer = JournalWriter::resume(&decoded);
        let records = decoded.records.len();
        guarded(|| {
            for (_, (now, input)) in decoded.records {
                match &mut engine {
                    Engine::Site(e) => {
                        e.handle(now, input);
                        while e.poll_output().is_some() {}
                    }
                    Engine::Arbiter(a) => {
                        a.handle(now, input);
                        while a.poll_output().is_some() {}
                    }
                    Engine::Etcd(_) => {}
                }
            }
        })?;
        self.engine = engine;
        self.up = true;
        self.inc += 1;
        Ok(Replay {
            records,
            torn,
            lost_bytes,
        })
    }
}
