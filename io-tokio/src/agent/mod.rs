//! The site agent: one [`SiteEngine`] driven by the world.
//!
//! ```text
//! inputs (transport events, completions, probes, operator, disk) ─┐
//!   journal (append + fsync) -> engine.handle(now, input) -> poll_output -> execute
//!   sleep until poll_timeout or the next input -> Tick
//! ```
//!
//! Persist, then act: a batch of inputs is fsynced to the journal before any output it caused
//! is executed. Commands run off the loop (driver work in two ordered queues, ships and probes
//! as tasks) and come back as inputs.

mod executor;
pub mod files;
mod probes;
pub mod sinks;

use crate::config::SiteFile;
use crate::journal_store::{EngineClock, JournalStore, Record};
use crate::status::{self, StatusBoard};
use crate::transport::{Event, Inbox, Listener, Transport, TransportConfig};
use anyhow::Context;
use executor::Executor;
use lifeboat_core::engine::{SiteEngine, SiteState};
use lifeboat_core::protocol::{Message, OperatorRequest};
use lifeboat_core::{Input, Output, Peer, SiteId};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// Inputs taken in one batch (one fsync for all of them).
const BATCH: usize = 256;
/// Inputs waiting for the loop.
const INPUT_QUEUE: usize = 4096;
/// Messages waiting for one peer's link; beyond this new ones are dropped (engines re-send).
const OUTBOUND_QUEUE: usize = 512;

/// A handle other tasks use to feed the loop.
#[derive(Clone)]
pub struct Feed(mpsc::Sender<Input>);

impl Feed {
    pub async fn send(&self, input: Input) {
        let _ = self.0.send(input).await;
    }
    pub fn try_send(&self, input: Input) -> bool {
        self.0.try_send(input).is_ok()
    }
}

/// Messages to one peer, in order, over whichever link to it is up.
struct Outbound(mpsc::Sender<Message>);

impl Outbound {
    fn start(
        name: &'static str,
        dial: Arc<Transport>,
        listener: Arc<Listener>,
        peer: Peer,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if dial.remote().is_some() {
                    match dial.send_message(msg.clone()).await {
                        Ok(()) => continue,
                        Err(e) => debug!(to = name, error = %e, "send over the dialed link failed"),
                    }
                }
                // The peer may have dialed us while our own dial is down.
                if let Err(e) = listener.send_to(peer, msg).await {
                    debug!(to = name, error = %e, "message dropped: no link");
                }
            }
        });
        Outbound(tx)
    }
    fn send(&self, msg: Message) {
        let _ = self.0.try_send(msg);
    }
}

pub async fn run(file: SiteFile, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = file.engine.clone();
    let me = file.site_id();
    let peer = SiteId(1 - me.0.min(1));
    // Held until `run` returns: a second agent on this data_dir exits instead.
    let _owner = crate::datadir::DataDirLock::acquire(&file.data_dir, "agent")?;

    // ---- journal: snapshot + replay
    let jdir = file.data_dir.join("journal");
    let had_journal = JournalStore::journal_path(&jdir).exists();
    let (mut store, rec) = JournalStore::open::<SiteState>(&jdir)
        .with_context(|| format!("opening the journal in {}", jdir.display()))?;
    let torn = rec.torn.clone();
    if let Some(t) = &torn {
        warn!(report = %t, "journal recovered after a crash");
    }
    if !had_journal {
        warn_if_orphaned(&file.data_dir, rec.state.is_some());
    }
    let resumed = rec.state.is_some() || !rec.records.is_empty();
    let mut engine = match rec.state {
        Some(s) => SiteEngine::from_state(cfg.clone(), me, s),
        None => SiteEngine::new(cfg.clone(), me),
    };
    let replayed = rec.records.len();
    for (now, input) in rec.records {
        engine.handle(now, input);
        while engine.poll_output().is_some() {}
    }
    let clock = EngineClock::new(engine.state().now + 1);
    info!(
        site = %file.site,
        config = %config_path.display(),
        role = engine.role().as_str(),
        epoch = engine.epoch().0,
        replayed,
        resumed,
        "agent starting"
    );

    // ---- channels, transport
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    let feed = Feed(in_tx);
    let (ev_tx, mut ev_rx) = mpsc::channel::<Event>(1024);
    {
        let feed = feed.clone();
        tokio::spawn(async move {
            while let Some(ev) = ev_rx.recv().await {
                if let Some(input) = ev.to_input() {
                    feed.send(input).await;
                }
            }
        });
    }
    let inbox = Inbox::open(file.data_dir.join("inbox"), cfg.databases.clone())
        .with_context(|| format!("opening the inbox under {}", file.data_dir.display()))?;
    let receiving = inbox.transfers().clone();
    let tcfg = TransportConfig::default();
    let listener = Arc::new(
        Listener::bind(
            &file.listen,
            Peer::Site(me),
            inbox,
            tcfg.clone(),
            ev_tx.clone(),
        )
        .await
        .with_context(|| {
            format!(
                "listening on {} (`listen` in {})",
                file.listen,
                config_path.display()
            )
        })?,
    );
    let peer_dial = Arc::new(Transport::connect(
        file.peer.clone(),
        Peer::Site(me),
        tcfg.clone(),
        ev_tx.clone(),
    ));
    let to_peer = Outbound::start(
        "peer",
        peer_dial.clone(),
        listener.clone(),
        Peer::Site(peer),
    );
    let to_arbiter = file.arbiter.as_ref().map(|addr| {
        let dial = Arc::new(Transport::connect(
            addr.clone(),
            Peer::Site(me),
            tcfg.clone(),
            ev_tx.clone(),
        ));
        Outbound::start("arbiter", dial, listener.clone(), Peer::Arbiter)
    });

    // ---- executor, sinks, status
    let board = Arc::new(StatusBoard::new(&file));
    board.watch_transfers(receiving);
    board.watch_transfers(peer_dial.transfers().clone());
    board
        .set_recovery(json!({"resumed": resumed, "replayed_records": replayed, "torn_tail": torn}));
    let exec = Arc::new(
        Executor::start(
            &file,
            feed.clone(),
            peer_dial.clone(),
            listener.clone(),
            board.clone(),
        )
        .context("starting the database driver")?,
    );
    let sink = sinks::start(file.alerts.clone());
    // Remote troubleshooting (issue 17): logs, log level, probes now, path ping (crate::troubleshoot).
    let tools = Arc::new(crate::troubleshoot::Troubleshoot::new(
        &file,
        board.clone(),
        exec.probe_kit(),
    ));
    status::serve(&file.http, board.clone(), feed.clone(), tools)
        .await
        .with_context(|| {
            format!(
                "http on {} (`http` in {})",
                file.http,
                config_path.display()
            )
        })?;
    exec.start_background(&file);

    // ---- the loop
    let mut pending: Vec<Input> = vec![if resumed {
        Input::Restarted
    } else {
        Input::Tick
    }];
    pending.extend(unreadable_manifests(&cfg, exec.files(), feed.clone()));
    pending.extend(unannounced_outbox(&engine, me, exec.files()));
    let mut last_status = std::time::Instant::now() - Duration::from_secs(1);
    let stop = crate::stop::requested();
    tokio::pin!(stop);
    loop {
        if pending.is_empty() {
            let sleep = engine
                .poll_timeout()
                .map(|t| clock.until(t))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_millis(500));
            tokio::select! {
                why = &mut stop => {
                    info!(signal = why, "stopping: the journal is whole up to the last batch");
                    board.publish(&engine, clock.now(), &store);
                    return Ok(());
                }
                got = in_rx.recv() => match got {
                    Some(i) => pending.push(i),
                    None => return Ok(()),
                },
                () = tokio::time::sleep(sleep) => {
                    if engine.poll_timeout().is_some_and(|t| t <= clock.now()) {
                        pending.push(Input::Tick);
                    }
                }
            }
            while pending.len() < BATCH {
                match in_rx.try_recv() {
                    Ok(i) => pending.push(i),
                    Err(_) => break,
                }
            }
            if pending.is_empty() {
                if last_status.elapsed() >= Duration::from_millis(200) {
                    board.publish(&engine, clock.now(), &store);
                    last_status = std::time::Instant::now();
                }
                continue;
            }
        }
        let now = clock.now();
        let batch: Vec<Record> = pending.drain(..).map(|i| (now, i)).collect();
        // Persist first: nothing this batch causes happens before it is durable.
        store.append(&batch)?;
        crate::crash::point("journal_before_effects");
        for (now, input) in batch {
            match &input {
                Input::Operator(req) => info!(request = ?req, "operator request"),
                Input::ArtifactReceived { meta, computed, .. }
                    if meta.checksum == *computed
                        && meta.key.kind == lifeboat_core::ArtifactKind::Log =>
                {
                    // From the log's creation at the primary to verified here (wall clock).
                    let ms = status::utc_now().0.saturating_sub(meta.created_utc.0);
                    board.log_verified(ms.max(0) as u64);
                }
                _ => {}
            }
            engine.handle(now, input);
            while let Some(out) = engine.poll_output() {
                match out {
                    Output::Command(c) => exec.execute(c, &engine),
                    Output::Send { to, msg } => match to {
                        Peer::Site(s) if s == peer => to_peer.send(msg),
                        Peer::Arbiter => {
                            if let Some(a) = &to_arbiter {
                                a.send(msg)
                            }
                        }
                        Peer::Site(_) => {}
                    },
                    Output::Alert(ev) => {
                        let doc =
                            sinks::alert_json(&cfg, &file.site, &ev, |t| board.utc_of(t, now));
                        board.alert(doc.clone());
                        sinks::send(&sink, doc);
                    }
                    Output::Audit(a) => {
                        info!(what = %a.what, why = %a.why, epoch = a.epoch.0, inputs = ?a.inputs, "decision");
                        board.audit(&a);
                    }
                    Output::Report(r) => {
                        let doc = status::report_json(&cfg, &r);
                        info!(report = %doc, "report");
                        board.report(doc);
                    }
                }
            }
        }
        if store.records_since_snapshot() >= file.journal.snapshot_every {
            store
                .snapshot(engine.state())
                .context("writing the engine snapshot")?;
        }
        if last_status.elapsed() >= Duration::from_millis(100) {
            board.publish(&engine, clock.now(), &store);
            last_status = std::time::Instant::now();
        }
    }
}

/// Parse an operator request path (`/operator/<name>`) and its parameters.
pub fn operator_request(
    name: &str,
    force: bool,
    db: Option<lifeboat_core::DbId>,
) -> Option<OperatorRequest> {
    Some(match name {
        "switchover" => OperatorRequest::Switchover,
        "failover" => OperatorRequest::Failover { force },
        "failback" => OperatorRequest::Failback,
        "drill" => OperatorRequest::Drill { db },
        "pause" => OperatorRequest::PauseBackups,
        "resume" => OperatorRequest::ResumeBackups,
        "reseed" => OperatorRequest::Reseed { db: db? },
        "confirm" => OperatorRequest::ConfirmFailover,
        "abort" => OperatorRequest::AbortFailover,
        _ => return None,
    })
}

/// Crash point "after publish, before journal": the driver published an artifact into the
/// outbox (fsynced, renamed) and the process died before the engine journalled its discovery.
/// Nothing else would ever pick it up, and the next log starts past it: a hole. So at start
/// every outbox artifact of the epoch this site holds that the engine does not hold
/// unacknowledged is announced again. Discovery is idempotent in the core; an artifact that
/// was already acknowledged and not yet pruned is shipped once more and acknowledged again.
fn unannounced_outbox(engine: &SiteEngine, me: SiteId, files: &files::ArtifactFiles) -> Vec<Input> {
    if engine.state().holder != me {
        return Vec::new();
    }
    let known: std::collections::BTreeSet<_> = engine.unacknowledged().map(|m| m.key).collect();
    let found: Vec<Input> = files
        .scan(true)
        .into_iter()
        .filter(|(m, _)| m.key.epoch == engine.epoch() && !known.contains(&m.key))
        .map(|(m, path)| {
            info!(file = %path.display(), "outbox artifact not known to the engine: announced again");
            Input::ArtifactDiscovered(m)
        })
        .collect();
    found
}

/// Artifacts whose manifest cannot be read (not JSON, no valid artifact, too large) would sit
/// in the outbox or inbox for ever, never shipped or restored. Every scan of those directories
/// moves such a pair into the quarantine and reports it (`files::ArtifactFiles::scan`); the
/// engine is told with `Input::UnreadableManifest`, once per file (after the move no scan sees
/// it again). At start both directories are swept and what was found, with anything reported
/// while the executor opened the files, goes into the first batch; later reports are fed as
/// they come.
///
/// A crash after a move and before its report is journalled loses the report (the pair stays
/// in the quarantine with its `.reason` file and the warning in the log). No data is lost for
/// it: the primary retries the ship as for a file removed by hand, and the recovery site
/// reports the hole (`missing_log`) and reseeds from a new full backup it asks for.
fn unreadable_manifests(
    cfg: &lifeboat_core::Config,
    files: &files::ArtifactFiles,
    feed: Feed,
) -> Vec<Input> {
    let Some(mut reports) = files.take_reports() else {
        return Vec::new();
    };
    files.sweep();
    let mut found = Vec::new();
    while let Ok(u) = reports.try_recv() {
        found.push(unreadable_input(cfg, u));
    }
    let cfg = cfg.clone();
    tokio::spawn(async move {
        while let Some(u) = reports.recv().await {
            feed.send(unreadable_input(&cfg, u)).await;
        }
    });
    found
}

/// The engine's input for an unreadable manifest: the database its file name names, when it
/// parses and is configured (else `None`: the primary then takes a full of every database).
fn unreadable_input(cfg: &lifeboat_core::Config, u: files::Unreadable) -> Input {
    let db = u.db_name().and_then(|n| cfg.db_id(&n));
    Input::UnreadableManifest {
        outbox: u.outbox,
        file: u.file,
        db,
        key: u.key,
        reason: u.reason,
    }
}

/// A data directory with artifacts or a snapshot but no journal: the journal was deleted or
/// lost, and the engine starts without the memory of what those files are. Said loudly, with
/// what to do; the agent still starts (a new site's directory may hold copied files).
fn warn_if_orphaned(data_dir: &Path, snapshot: bool) {
    // Everything beside the journal and the lock file: artifacts, the driver's state, quarantined files.
    let held = |d: &std::fs::DirEntry| match d.file_type() {
        Ok(t) if t.is_dir() => std::fs::read_dir(d.path()).map_or(0, |r| r.flatten().count()),
        _ => 1,
    };
    let files: usize = std::fs::read_dir(data_dir).map_or(0, |r| {
        r.flatten()
            .filter(|e| e.file_name() != "journal" && e.file_name() != crate::datadir::LOCK_FILE)
            .map(|e| held(&e))
            .sum()
    });
    if snapshot || files > 0 {
        warn!(
            data_dir = %data_dir.display(),
            snapshot,
            files,
            "the data directory holds files but no journal (deleted or lost?): the engine \
             starts without the inputs since its snapshot; outbox artifacts are announced \
             again, and if the recovery site reports missing_log, rebuild it with \
             `lifeboat reseed`"
        );
    }
}
