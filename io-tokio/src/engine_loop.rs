//! The one engine driver, shared by the site agent and the arbiter.
//!
//! ```text
//! open:  snapshot + journal replay (outputs of replayed inputs are dropped: they happened)
//! run:   wait for inputs, a peek, the engine's deadline or a stop signal
//!        a batch of inputs -> journal (appended on a blocking thread, with the next
//!           synced batch when it needs no sync itself)
//!        -> engine.handle(now, input) -> poll_output -> (first output that is not an
//!           observation: fsync the journal)
//!        -> Dispatch (executor, peers, alerts, status)
//!        every `snapshot_every` records: a snapshot (encoded here, written on a blocking thread)
//! ```
//!
//! Persist, then act: nothing a batch causes is dispatched before the batch is durable. A batch
//! that causes nothing (most timer ticks) is not fsynced on its own: the next batch that acts
//! syncs it too, and losing it in a crash is the same as the crash coming before it. Status
//! is built on demand: `/status` sends a [`Peek`] that runs between batches with the engine, so
//! nothing is rebuilt while nobody looks.

use crate::journal_store::{EngineClock, JournalStats, JournalStore, Record};
use crate::transport::{Event, Listener, Transport};
use anyhow::Context;
use lifeboat_core::arbiter::{Arbiter, ArbiterState};
use lifeboat_core::engine::{SiteEngine, SiteState};
use lifeboat_core::protocol::{Command, Message};
use lifeboat_core::{Input, Millis, Output, Peer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Inputs taken in one batch (one fsync for all of them).
const BATCH: usize = 256;
/// Inputs waiting for the loop.
const INPUT_QUEUE: usize = 4096;
/// Peeks waiting for the loop (status requests).
const PEEK_QUEUE: usize = 64;
/// Messages waiting for one peer's link; beyond this new ones are dropped (engines re-send).
const PEER_QUEUE: usize = 512;

/// What the loop needs of an engine: the Sans-IO shape every engine of the core has.
pub trait Engine: Send + 'static {
    type State: Serialize + DeserializeOwned;
    fn handle(&mut self, now: Millis, input: Input);
    fn poll_output(&mut self) -> Option<Output>;
    fn poll_timeout(&self) -> Option<Millis>;
    fn state(&self) -> &Self::State;
    /// The engine time of its state (a restarted process continues after it).
    fn now(&self) -> Millis;
}

impl Engine for SiteEngine {
    type State = SiteState;
    fn handle(&mut self, now: Millis, input: Input) {
        SiteEngine::handle(self, now, input)
    }
    fn poll_output(&mut self) -> Option<Output> {
        SiteEngine::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Millis> {
        SiteEngine::poll_timeout(self)
    }
    fn state(&self) -> &SiteState {
        SiteEngine::state(self)
    }
    fn now(&self) -> Millis {
        SiteEngine::state(self).now
    }
}

impl Engine for Arbiter {
    type State = ArbiterState;
    fn handle(&mut self, now: Millis, input: Input) {
        Arbiter::handle(self, now, input)
    }
    fn poll_output(&mut self) -> Option<Output> {
        Arbiter::poll_output(self)
    }
    fn poll_timeout(&self) -> Option<Millis> {
        Arbiter::poll_timeout(self)
    }
    fn state(&self) -> &ArbiterState {
        Arbiter::state(self)
    }
    fn now(&self) -> Millis {
        Arbiter::state(self).now
    }
}

/// Where an engine's inputs and outputs go: the executor, the peers, alerts, status.
pub trait Dispatch<E> {
    /// An input about to be handled (after it is durable): for metrics that watch inputs.
    fn input(&mut self, _input: &Input) {}
    /// One output of `engine`, in order.
    fn output(&mut self, engine: &E, now: Millis, out: Output);
}

/// A look at the engine between batches (status documents). Never changes it.
pub type Peek<E> = Box<dyn FnOnce(&E, Millis, JournalStats) + Send>;

/// A handle other tasks use to feed the loop.
#[derive(Clone)]
pub struct Feed(pub(crate) mpsc::Sender<Input>);

impl Feed {
    pub async fn send(&self, input: Input) {
        let _ = self.0.send(input).await;
    }
    pub fn try_send(&self, input: Input) -> bool {
        self.0.try_send(input).is_ok()
    }
    /// Feed the inputs of transport events, in order, until their channel closes.
    pub fn forward(&self, mut events: mpsc::Receiver<Event>) {
        let feed = self.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let Some(input) = ev.to_input() {
                    feed.send(input).await;
                }
            }
        });
    }
}

/// A handle to look at the engine from other tasks.
pub struct Peeker<E>(mpsc::Sender<Peek<E>>);

impl<E> Clone for Peeker<E> {
    fn clone(&self) -> Self {
        Peeker(self.0.clone())
    }
}

impl<E: Engine> Peeker<E> {
    /// `f` applied to the engine between batches; `None` when the loop has stopped or is so far
    /// behind that its peek queue is full.
    pub async fn peek<T: Send + 'static>(
        &self,
        f: impl FnOnce(&E, Millis, JournalStats) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let peek: Peek<E> = Box::new(move |e, now, stats| {
            let _ = tx.send(f(e, now, stats));
        });
        self.0.try_send(peek).ok()?;
        rx.await.ok()
    }
}

/// How the journal looked at start.
pub struct Started {
    /// A snapshot or records were found: the process restarted.
    pub resumed: bool,
    /// Records replayed after the snapshot.
    pub replayed: usize,
    /// A torn tail that was truncated.
    pub torn: Option<String>,
    /// The journal file existed before this start.
    pub had_journal: bool,
}

pub struct EngineLoop<E: Engine> {
    engine: E,
    store: Arc<Mutex<JournalStore>>,
    stats: JournalStats,
    clock: EngineClock,
    snapshot_every: u64,
    inputs: mpsc::Receiver<Input>,
    peeks: mpsc::Receiver<Peek<E>>,
    feed: Feed,
    peeker: Peeker<E>,
    /// Records of batches that needed no fsync, not yet written: they go to the journal with the
    /// next batch that syncs (or once [`HOLD_MAX`] are held, or at a snapshot or a stop). A
    /// crash loses them like any unsynced tail; nothing outside saw an effect of them.
    held: Vec<Record>,
    /// Outputs that need their inputs durable but not at once ([`waits_for_a_later_sync`]),
    /// with the engine time the oldest was deferred: dispatched right after the next sync, which
    /// comes at the latest [`DEFER_MAX`] after it.
    deferred: Vec<Output>,
    deferred_since: Option<Millis>,
}

/// Most records held in memory before they are written without a sync.
const HOLD_MAX: usize = 64;

/// Longest an output waits for a later sync ([`waits_for_a_later_sync`]) before the loop syncs
/// for it alone.
const DEFER_MAX: Millis = 2_000;

/// Whether `o`, which needs the inputs before it durable, may wait for the next sync that
/// another output (or [`DEFER_MAX`]) causes instead of causing one: the removal of an
/// acknowledged artifact from the outbox. Done late, it only keeps a file a while longer; done
/// before its acknowledgement is durable, a crash could forget the acknowledgement of an
/// artifact that is gone. On a primary writing steadily, each log's acknowledgement cost a
/// journal sync of its own, a few milliseconds after the one its shipment caused.
fn waits_for_a_later_sync(o: &Output) -> bool {
    matches!(o, Output::Command(Command::Discard { .. }))
}

impl<E: Engine> EngineLoop<E> {
    /// Open the journal in `dir`, build the engine from its snapshot (`make(None)` for a new
    /// one) and replay the records after it.
    pub fn open(
        dir: &Path,
        snapshot_every: u64,
        make: impl FnOnce(Option<E::State>) -> E,
    ) -> anyhow::Result<(Self, Started)> {
        let had_journal = JournalStore::journal_path(dir).exists();
        let (store, rec) = JournalStore::open::<E::State>(dir)
            .with_context(|| format!("opening the journal in {}", dir.display()))?;
        if let Some(t) = &rec.torn {
            warn!(report = %t, "journal recovered after a crash");
        }
        let resumed = rec.state.is_some() || !rec.records.is_empty();
        let mut engine = make(rec.state);
        let replayed = rec.records.len();
        for (now, input) in rec.records {
            engine.handle(now, input);
            while engine.poll_output().is_some() {}
        }
        let clock = EngineClock::new(engine.now() + 1);
        let (in_tx, inputs) = mpsc::channel(INPUT_QUEUE);
        let (peek_tx, peeks) = mpsc::channel(PEEK_QUEUE);
        let started = Started {
            resumed,
            replayed,
            torn: rec.torn,
            had_journal,
        };
        let stats = store.stats();
        let lp = EngineLoop {
            engine,
            store: Arc::new(Mutex::new(store)),
            stats,
            clock,
            snapshot_every,
            inputs,
            peeks,
            feed: Feed(in_tx),
            peeker: Peeker(peek_tx),
            held: Vec::new(),
            deferred: Vec::new(),
            deferred_since: None,
        };
        Ok((lp, started))
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }
    pub fn feed(&self) -> Feed {
        self.feed.clone()
    }
    pub fn peeker(&self) -> Peeker<E> {
        self.peeker.clone()
    }

    /// Run until a stop signal or until every feed is gone. `first` is the first batch.
    pub async fn run(
        mut self,
        first: Vec<Input>,
        out: &mut impl Dispatch<E>,
    ) -> anyhow::Result<()> {
        let mut pending = first;
        let stop = crate::stop::requested();
        tokio::pin!(stop);
        loop {
            if pending.is_empty() {
                let deadline = self.engine.poll_timeout();
                let flush_at = self.deferred_since.map(|t| t + DEFER_MAX);
                let wake = match (deadline, flush_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let sleep = tokio::time::sleep(wake.map_or(DAY, |t| self.clock.until(t)));
                tokio::select! {
                    why = &mut stop => {
                        let held = std::mem::take(&mut self.held);
                        self.blocking(move |store| {
                            store.write(&held)?;
                            store.sync()
                        })
                        .await?;
                        self.dispatch_deferred(out);
                        info!(signal = why, "stopping: the journal is whole up to the last batch");
                        return Ok(());
                    }
                    got = self.inputs.recv() => pending.extend(got),
                    Some(peek) = self.peeks.recv() => peek(&self.engine, self.clock.now(), self.stats),
                    () = sleep => {
                        if deadline.is_some_and(|t| t <= self.clock.now()) {
                            pending.push(Input::Tick);
                        }
                    }
                }
                while pending.len() < BATCH {
                    match self.inputs.try_recv() {
                        Ok(i) => pending.push(i),
                        Err(_) => break,
                    }
                }
                if pending.is_empty() {
                    if flush_at.is_some_and(|t| t <= self.clock.now()) {
                        // Only deferred outputs are due: a step without inputs syncs for them.
                        self.step(Vec::new(), out).await?;
                    }
                    continue;
                }
            }
            self.step(std::mem::take(&mut pending), out).await?;
        }
    }

    /// One batch: durable before its first effect, every output dispatched in order, each with
    /// the engine as it was right after the input that caused it. The engine is pure, so an
    /// input is handled before the batch is written: nothing but observations
    /// ([`Output::needs_durable_inputs`]: probes, position samples, service checks, log
    /// collections) leaves this process until the whole batch (and every record before it) is
    /// on disk, and a failed write stops the loop with nothing else dispatched. At most one
    /// trip to the journal's thread per batch: write and sync together at the first output
    /// that needs it; a batch without one is held in memory and written with a later batch.
    /// An output that may wait for a later sync ([`waits_for_a_later_sync`]) is kept until the
    /// next one (at most [`DEFER_MAX`]) instead of causing one.
    async fn step(&mut self, inputs: Vec<Input>, out: &mut impl Dispatch<E>) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut batch = std::mem::take(&mut self.held);
        let first = batch.len();
        batch.extend(inputs.into_iter().map(|i| (now, i)));
        let mut synced = false;
        for i in first..batch.len() {
            let input = batch[i].1.clone();
            out.input(&input);
            self.engine.handle(now, input);
            while let Some(o) = self.engine.poll_output() {
                if !synced && o.needs_durable_inputs() {
                    if waits_for_a_later_sync(&o) {
                        self.deferred_since.get_or_insert(now);
                        self.deferred.push(o);
                        continue;
                    }
                    // Persist, then act.
                    batch = self.write_and_sync(batch).await?;
                    synced = true;
                    self.dispatch_deferred(out);
                }
                out.output(&self.engine, now, o);
            }
        }
        if !synced && self.deferred_since.is_some_and(|t| t + DEFER_MAX <= now) {
            batch = self.write_and_sync(batch).await?;
            synced = true;
            self.dispatch_deferred(out);
        }
        let unwritten = if synced { Vec::new() } else { batch };
        let total = self.stats.records_since_snapshot + unwritten.len() as u64;
        if total >= self.snapshot_every {
            // The snapshot holds the state after every record, written or held, and names the
            // record replay continues from: the held ones are written first (found by a test:
            // encoded before them, it named a record the new journal no longer had).
            self.blocking(move |store| store.write(&unwritten)).await?;
            let bytes = self
                .store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .encode_snapshot(self.engine.state())?;
            self.blocking(move |store| store.write_snapshot(&bytes))
                .await
                .context("writing the engine snapshot")?;
        } else if unwritten.len() >= HOLD_MAX {
            self.blocking(move |store| store.write(&unwritten)).await?;
        } else {
            self.held = unwritten;
        }
        Ok(())
    }

    /// Write `batch` (the held records first) and sync the journal: every input so far is
    /// durable.
    async fn write_and_sync(&mut self, batch: Vec<Record>) -> anyhow::Result<Vec<Record>> {
        let batch = self
            .blocking(move |store| {
                store.write(&batch)?;
                store.sync()?;
                Ok(batch)
            })
            .await?;
        crate::crash::point("journal_before_effects");
        Ok(batch)
    }

    /// Dispatch the outputs that waited for a sync (the journal was just synced).
    fn dispatch_deferred(&mut self, out: &mut impl Dispatch<E>) {
        self.deferred_since = None;
        let now = self.clock.now();
        for o in std::mem::take(&mut self.deferred) {
            out.output(&self.engine, now, o);
        }
    }

    /// `f` on the journal on a blocking thread (fsync must not stall a tokio worker).
    async fn blocking<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut JournalStore) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let store = self.store.clone();
        let (r, stats) = tokio::task::spawn_blocking(move || {
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            (f(&mut s), s.stats())
        })
        .await
        .context("the journal's thread died")?;
        self.stats = stats;
        r
    }
}

/// The loop's sleep when the engine has no deadline: it still wakes for inputs and peeks.
const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Messages to one peer, in order, over whichever link to it is up: the link this process
/// dialed (if any), else the link the peer dialed to our listener.
pub struct PeerQueue(mpsc::Sender<Message>);

impl PeerQueue {
    pub fn start(
        name: String,
        dial: Option<Arc<Transport>>,
        listener: Arc<Listener>,
        peer: Peer,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(PEER_QUEUE);
        tokio::spawn(async move {
            // The first message waits for this process's own link to the peer (up to the
            // connect timeout) instead of being dropped: it is the engine's first lease renewal
            // at start, and dropped it would leave a (re)started primary fenced until the next
            // renewal, a second or more later. Later messages with no link are dropped at once
            // (the engines re-send what matters): an outage never queues stale messages behind
            // slow waits.
            let mut first = true;
            while let Some(msg) = rx.recv().await {
                let waits =
                    std::mem::take(&mut first) && !listener.connected_peers().contains(&peer);
                if let Some(dial) = dial.as_ref().filter(|d| waits || d.remote().is_some()) {
                    match dial.send_message(msg.clone()).await {
                        Ok(()) => continue,
                        Err(e) => {
                            debug!(to = %name, error = %e, "send over the dialed link failed")
                        }
                    }
                }
                if let Err(e) = listener.send_to(peer, msg).await {
                    debug!(to = %name, error = %e, "message dropped: no link");
                }
            }
        });
        PeerQueue(tx)
    }

    /// Queue `msg`; when the queue is full it is dropped (the engines re-send what matters).
    pub fn send(&self, msg: Message) {
        if self.0.try_send(msg).is_err() {
            debug!("peer queue full: message dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::Command;
    use serde::Deserialize;
    use std::collections::VecDeque;

    /// An engine that records each `DiskSpace` value it handles and answers by its remainder
    /// mod 3: nothing (0), an observation (1), or a message to the arbiter (2); from 1000 on, a
    /// discard.
    struct Fake {
        seen: Seen,
        out: VecDeque<Output>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    struct Seen {
        values: Vec<u64>,
        now: Millis,
    }

    impl Engine for Fake {
        type State = Seen;
        fn handle(&mut self, now: Millis, input: Input) {
            self.seen.now = now;
            if let Input::DiskSpace { free_mib } = input {
                self.seen.values.push(free_mib);
                if free_mib >= 1000 {
                    self.out.push_back(Output::Command(Command::Discard {
                        key: lifeboat_core::ArtifactKey {
                            db: lifeboat_core::DbId(0),
                            epoch: lifeboat_core::Epoch(1),
                            lsn_start: lifeboat_core::Lsn(free_mib),
                            lsn_end: lifeboat_core::Lsn(free_mib + 1),
                            kind: lifeboat_core::ArtifactKind::Log,
                        },
                    }));
                    return;
                }
                match free_mib % 3 {
                    1 => self.out.push_back(Output::Command(Command::Probe)),
                    2 => self.out.push_back(Output::Send {
                        to: Peer::Arbiter,
                        msg: Message::SwitchoverRequest,
                    }),
                    _ => {}
                }
            }
        }
        fn poll_output(&mut self) -> Option<Output> {
            self.out.pop_front()
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
        fn state(&self) -> &Seen {
            &self.seen
        }
        fn now(&self) -> Millis {
            self.seen.now
        }
    }

    #[derive(Default)]
    struct Sink(Vec<Output>);
    impl Dispatch<Fake> for Sink {
        fn output(&mut self, _: &Fake, _: Millis, out: Output) {
            self.0.push(out);
        }
    }

    fn open(dir: &Path, snapshot_every: u64) -> EngineLoop<Fake> {
        EngineLoop::open(dir, snapshot_every, |s| Fake {
            seen: s.unwrap_or_default(),
            out: VecDeque::new(),
        })
        .unwrap()
        .0
    }

    fn inputs(values: &[u64]) -> Vec<Input> {
        values
            .iter()
            .map(|&free_mib| Input::DiskSpace { free_mib })
            .collect()
    }

    /// What a process that crashed now would find: the journal replayed into a new engine.
    fn after_crash(dir: &Path) -> Vec<u64> {
        open(dir, u64::MAX).engine().seen.values.clone()
    }

    #[tokio::test]
    async fn batches_without_effects_are_held_and_written_with_the_next_one_that_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = open(dir.path(), u64::MAX);
        let mut sink = Sink::default();
        // Nothing, then an observation: both held, the observation dispatched at once.
        lp.step(inputs(&[3]), &mut sink).await.unwrap();
        lp.step(inputs(&[4]), &mut sink).await.unwrap();
        assert_eq!(sink.0, [Output::Command(Command::Probe)]);
        assert_eq!(after_crash(dir.path()), Vec::<u64>::new());
        // A message: every record before it is durable before it leaves.
        lp.step(inputs(&[5, 6]), &mut sink).await.unwrap();
        assert_eq!(sink.0.len(), 2);
        assert_eq!(after_crash(dir.path()), [3, 4, 5, 6]);
        // A crash loses what is held and nothing else.
        lp.step(inputs(&[9]), &mut sink).await.unwrap();
        drop(lp);
        assert_eq!(after_crash(dir.path()), [3, 4, 5, 6]);
    }

    #[tokio::test]
    async fn held_records_are_bounded_and_written_before_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = open(dir.path(), u64::MAX);
        let mut sink = Sink::default();
        let quiet: Vec<u64> = (0..HOLD_MAX as u64).map(|i| i * 3).collect();
        for v in &quiet {
            lp.step(inputs(&[*v]), &mut sink).await.unwrap();
        }
        drop(lp);
        assert_eq!(
            after_crash(dir.path()),
            quiet,
            "written once HOLD_MAX are held"
        );

        // A snapshot every 5 records: the held ones are written first, then the snapshot that
        // follows them; a restart holds each value exactly once.
        let dir = tempfile::tempdir().unwrap();
        let mut lp = open(dir.path(), 5);
        for v in [3, 6, 9, 12, 15, 18, 21] {
            lp.step(inputs(&[v]), &mut sink).await.unwrap();
        }
        drop(lp);
        assert_eq!(after_crash(dir.path()), [3, 6, 9, 12, 15]);
        let mut lp = open(dir.path(), 5);
        lp.step(inputs(&[2]), &mut sink).await.unwrap();
        drop(lp);
        assert_eq!(after_crash(dir.path()), [3, 6, 9, 12, 15, 2]);
    }

    #[tokio::test]
    async fn a_discard_waits_for_the_next_sync_and_never_longer_than_defer_max() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = open(dir.path(), u64::MAX);
        let mut sink = Sink::default();
        let is_discard = |o: &Output| matches!(o, Output::Command(Command::Discard { .. }));
        // A discard causes no sync and waits; an observation still goes at once.
        lp.step(inputs(&[1000]), &mut sink).await.unwrap();
        lp.step(inputs(&[4]), &mut sink).await.unwrap();
        assert_eq!(sink.0, [Output::Command(Command::Probe)]);
        assert_eq!(after_crash(dir.path()), Vec::<u64>::new());
        // The next output that syncs: the discard right after the sync, before that output.
        lp.step(inputs(&[5]), &mut sink).await.unwrap();
        assert_eq!(sink.0.len(), 3);
        assert!(is_discard(&sink.0[1]), "{:?}", sink.0);
        assert!(matches!(sink.0[2], Output::Send { .. }));
        assert_eq!(after_crash(dir.path()), [1000, 4, 5]);
        // Alone, it waits until DEFER_MAX has passed, then a step without inputs syncs for it.
        lp.step(inputs(&[1003]), &mut sink).await.unwrap();
        lp.step(Vec::new(), &mut sink).await.unwrap();
        assert_eq!(sink.0.len(), 3);
        assert_eq!(after_crash(dir.path()), [1000, 4, 5]);
        assert!(lp.deferred_since.is_some(), "a discard waits");
        lp.clock = EngineClock::new(lp.clock.now() + DEFER_MAX);
        lp.step(Vec::new(), &mut sink).await.unwrap();
        assert_eq!(sink.0.len(), 4);
        assert!(is_discard(&sink.0[3]));
        assert_eq!(lp.deferred_since, None);
        assert_eq!(after_crash(dir.path()), [1000, 4, 5, 1003]);
    }
}
