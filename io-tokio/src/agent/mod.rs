//! The site agent: one [`SiteEngine`] on the [`engine_loop`](crate::engine_loop), fed by the
//! world (transport events, completions, probes, operator requests) and dispatching its outputs
//! to the executor, the peers, the alert sinks and the status board.
//!
//! Commands run off the loop (driver work in two ordered queues, ships and probes as tasks) and
//! come back as inputs.

mod executor;
pub mod files;
mod probes;
pub mod sinks;

use crate::config::SiteFile;
use crate::engine_loop::{Dispatch, EngineLoop, Feed, PeerQueue};
use crate::http;
use crate::status::{self, StatusBoard};
use crate::transport::{Inbox, Listener, LocalTunnel, Transport, TransportConfig};
use anyhow::Context;
use executor::Executor;
use lifeboat_core::engine::SiteEngine;
use lifeboat_core::{Input, Millis, Output, Peer, SiteId};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub async fn run(file: SiteFile, config_path: std::path::PathBuf) -> anyhow::Result<()> {
    let cfg = file.engine.clone();
    let me = file.site_id();
    let peer = SiteId(1 - me.0.min(1));
    // Held until `run` returns: a second agent on this data_dir exits instead.
    let _owner = crate::datadir::DataDirLock::acquire(&file.data_dir, "agent")?;
    let (lp, started) = EngineLoop::open(
        &file.data_dir.join("journal"),
        file.journal.snapshot_every,
        |s| match s {
            Some(s) => SiteEngine::from_state(cfg.clone(), me, s),
            None => SiteEngine::new(cfg.clone(), me),
        },
    )?;
    if !started.had_journal {
        warn_if_orphaned(&file.data_dir, started.resumed);
    }
    info!(
        site = %file.site,
        config = %config_path.display(),
        role = lp.engine().role().as_str(),
        epoch = lp.engine().epoch().0,
        replayed = started.replayed,
        resumed = started.resumed,
        "agent starting"
    );

    // ---- transport: our listener, our dial to the peer (and the arbiter), one queue each
    let feed = lp.feed();
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    feed.forward(ev_rx);
    let inbox = Inbox::open(file.data_dir.join("inbox"), cfg.databases.clone())
        .with_context(|| format!("opening the inbox under {}", file.data_dir.display()))?;
    let receiving = inbox.transfers().clone();
    let tcfg = TransportConfig {
        tls: file
            .tls
            .load(&cfg, Peer::Site(me))
            .with_context(|| format!("[tls] in {}", config_path.display()))?,
        ..TransportConfig::default()
    };
    if let Some(tls) = &tcfg.tls {
        tls.reload_on_hangup(format!("site {}", file.site));
    }
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
    let dial = |addr: &str| {
        Arc::new(Transport::connect(
            addr.to_string(),
            Peer::Site(me),
            tcfg.clone(),
            ev_tx.clone(),
        ))
    };
    let peer_dial = dial(&file.peer);
    let to_peer = PeerQueue::start(
        "peer".into(),
        Some(peer_dial.clone()),
        listener.clone(),
        Peer::Site(peer),
    );
    let to_arbiter = match (&file.arbiter, file.witness.is_etcd()) {
        (_, true) => Some(Witness::Etcd(
            crate::witness::EtcdWitnessClient::start(&file, ev_tx.clone())
                .with_context(|| format!("[witness] in {}", config_path.display()))?,
        )),
        (Some(addr), false) => Some(Witness::Arbiter(PeerQueue::start(
            "arbiter".into(),
            Some(dial(addr)),
            listener.clone(),
            Peer::Arbiter,
        ))),
        (None, false) => None,
    };

    // ---- executor, alert sinks, status
    let board = Arc::new(StatusBoard::new(&file));
    if let Some(Witness::Etcd(w)) = &to_arbiter {
        board.set_witness(w.clone());
    }
    board.watch_transfers(receiving);
    board.watch_transfers(peer_dial.transfers().clone());
    board.set_recovery(&started);
    let mut tunnels = Vec::new();
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
    // Streaming (PostgreSQL): the other site's receivers reach this site's servers through
    // tunnels over the listener; this site's receivers reach the other's through local ends.
    let targets = exec.tunnel_targets();
    if targets.iter().any(Option::is_some) {
        listener.set_tunnel_targets(targets.clone());
        let mut sources = Vec::new();
        for (i, _) in targets.iter().enumerate().filter(|(_, t)| t.is_some()) {
            let t = LocalTunnel::bind(
                "127.0.0.1:0",
                file.peer.clone(),
                i as u32,
                Peer::Site(me),
                tcfg.clone(),
            )
            .await
            .context("binding the local end of a streaming tunnel")?;
            sources.push((lifeboat_core::DbId(i as u32), t.local_addr()));
            tunnels.push(t);
        }
        exec.set_stream_sources(sources);
    }
    // Remote troubleshooting: logs, log level, probes now, path ping (crate::troubleshoot).
    let tools = Arc::new(crate::troubleshoot::Troubleshoot::new(
        &file,
        board.clone(),
        exec.probe_kit(),
        tcfg.tls.clone(),
    ));
    let access = http::Access {
        tls: tcfg.tls.clone(),
        token: file
            .tls
            .api_token
            .as_deref()
            .map(http::Token::load)
            .transpose()
            .map_err(anyhow::Error::msg)?,
    };
    status::serve(
        &file.http,
        board.clone(),
        feed.clone(),
        lp.peeker(),
        tools,
        access,
        file.http_open.as_deref(),
    )
    .await
    .with_context(|| {
        format!(
            "http on {} (`http` in {})",
            file.http,
            config_path.display()
        )
    })?;
    exec.start_background(&file);

    let mut first = vec![if started.resumed {
        Input::Restarted
    } else {
        Input::Tick
    }];
    first.extend(unreadable_manifests(&cfg, exec.files(), feed.clone()));
    first.extend(unannounced_outbox(lp.engine(), me, exec.files()));
    let mut out = Outputs {
        exec,
        peer,
        to_peer,
        to_arbiter,
        alerts: sinks::start(file.alerts.clone()),
        board,
    };
    let ran = lp.run(first, &mut out).await;
    drop(tunnels);
    ran
}

/// Where the engine's witness messages go: the arbiter process, or etcd through the
/// translation of `lifeboat_core::etcd`.
enum Witness {
    Arbiter(PeerQueue),
    Etcd(crate::witness::EtcdWitnessClient),
}

/// Where the site engine's outputs go.
struct Outputs {
    exec: Arc<Executor>,
    peer: SiteId,
    to_peer: PeerQueue,
    to_arbiter: Option<Witness>,
    alerts: mpsc::Sender<crate::status::doc::AlertDoc>,
    board: Arc<StatusBoard>,
}

impl Dispatch<SiteEngine> for Outputs {
    fn input(&mut self, input: &Input) {
        if let Input::Operator(req) = input {
            info!(request = ?req, "operator request");
        }
        self.board.input(input);
    }

    fn output(&mut self, engine: &SiteEngine, now: Millis, out: Output) {
        match out {
            Output::Command(c) => self.exec.execute(c, engine),
            Output::Send { to, msg } => match to {
                Peer::Site(s) if s == self.peer => self.to_peer.send(msg),
                Peer::Arbiter => match &self.to_arbiter {
                    Some(Witness::Arbiter(q)) => q.send(msg),
                    Some(Witness::Etcd(w)) => w.send(msg),
                    None => debug!("no arbiter configured: message to it not sent"),
                },
                Peer::Site(s) => warn!(
                    site = s.0,
                    "message to a site this agent does not know: dropped"
                ),
            },
            Output::Alert(ev) => sinks::send(&self.alerts, self.board.alert(&ev, now)),
            Output::Audit(a) => {
                info!(what = %a.what, why = %a.why, epoch = a.epoch.0, inputs = ?a.inputs, "decision");
                self.board.audit(&a);
            }
            Output::Report(r) => self.board.report(&r),
        }
        self.board.set_role(engine.role(), engine.writable());
        self.exec.follow_role(engine.role(), false);
    }
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
