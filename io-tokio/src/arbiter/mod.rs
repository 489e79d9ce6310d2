//! The arbiter process: the witness engine behind a transport listener, with its journal.
//! Sites dial it; it answers over the control link each site opened.

use crate::config::ArbiterFile;
use crate::http::{self, Request, Response};
use crate::journal_store::{EngineClock, JournalStore, Record};
use crate::transport::{Event, Inbox, Listener, TransportConfig};
use anyhow::Context;
use lifeboat_core::arbiter::{Arbiter, ArbiterState};
use lifeboat_core::{Input, Output, Peer};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Events taken from the channel in one batch (one fsync).
const BATCH: usize = 128;

pub async fn run(file: ArbiterFile) -> anyhow::Result<()> {
    let cfg = file.engine.clone();
    // Held until `run` returns: a second arbiter on this data_dir exits instead.
    let _owner = crate::datadir::DataDirLock::acquire(&file.data_dir, "arbiter")?;
    let jdir = file.data_dir.join("journal");
    let (mut store, rec) = JournalStore::open::<ArbiterState>(&jdir)
        .with_context(|| format!("opening the arbiter journal in {}", jdir.display()))?;
    if let Some(t) = &rec.torn {
        warn!(report = %t, "journal recovered");
    }
    let resumed = rec.state.is_some() || !rec.records.is_empty();
    let mut arb = match rec.state {
        Some(s) => Arbiter::from_state(cfg.clone(), s),
        None => Arbiter::new(cfg.clone()),
    };
    let replayed = rec.records.len();
    for (now, input) in rec.records {
        arb.handle(now, input);
        while arb.poll_output().is_some() {}
    }
    let clock = EngineClock::new(arb.state().now + 1);
    info!(
        epoch = arb.epoch().0,
        holder = ?arb.holder().map(|h| cfg.site_name(h).to_string()),
        replayed,
        "arbiter starting"
    );

    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let inbox = Inbox::open(file.data_dir.join("inbox"), cfg.databases.clone())
        .with_context(|| format!("creating {}", file.data_dir.display()))?;
    let listener = Arc::new(
        Listener::bind(
            &file.listen,
            Peer::Arbiter,
            inbox,
            TransportConfig::default(),
            tx,
        )
        .await
        .with_context(|| format!("listening on {} (listen)", file.listen))?,
    );

    let status = Arc::new(Mutex::new(serde_json::Value::Null));
    if let Some(addr) = &file.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("http on {addr}"))?;
        let status = status.clone();
        tokio::spawn(http::serve(
            l,
            Arc::new(move |r: Request| match r.path.as_str() {
                "/status" => Response::json(
                    200,
                    &status.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                ),
                "/health" => Response::text(200, "ok\n"),
                _ => Response::text(404, "try /status\n"),
            }),
        ));
    }

    let first: Input = if resumed {
        Input::Restarted
    } else {
        Input::Tick
    };
    let mut pending: Vec<Input> = vec![first];
    let stop = crate::stop::requested();
    tokio::pin!(stop);
    loop {
        if pending.is_empty() {
            tokio::select! {
                why = &mut stop => {
                    info!(signal = why, "stopping: the journal is whole up to the last batch");
                    return Ok(());
                }
                got = rx.recv() => match got {
                    Some(ev) => pending.extend(ev.to_input()),
                    None => return Ok(()),
                },
            }
            while pending.len() < BATCH {
                match rx.try_recv() {
                    Ok(ev) => pending.extend(ev.to_input()),
                    Err(_) => break,
                }
            }
            continue;
        }
        let now = clock.now();
        let batch: Vec<Record> = pending.drain(..).map(|i| (now, i)).collect();
        store.append(&batch)?;
        for (now, input) in batch {
            arb.handle(now, input);
            while let Some(out) = arb.poll_output() {
                match out {
                    Output::Send { to, msg } => {
                        let l = listener.clone();
                        tokio::spawn(async move {
                            if let Err(e) = l.send_to(to, msg).await {
                                tracing::debug!(error = %e, "arbiter answer not sent");
                            }
                        });
                    }
                    Output::Audit(a) => {
                        info!(what = %a.what, why = %a.why, epoch = a.epoch.0, "decision")
                    }
                    other => tracing::debug!(?other, "arbiter output"),
                }
            }
        }
        if store.records_since_snapshot() >= file.journal.snapshot_every {
            store.snapshot(arb.state())?;
        }
        let st = arb.state();
        *status.lock().unwrap_or_else(|e| e.into_inner()) = serde_json::json!({
            "role": "arbiter",
            "epoch": st.epoch.0,
            "holder": st.holder.map(|h| cfg.site_name(h).to_string()),
            "holder_renewing": arb.view(now_of(&clock)).holder_renewing,
            "lease_lapsed": arb.view(now_of(&clock)).lease_lapsed,
            "since_renewal_ms": arb.view(now_of(&clock)).since_renewal_ms,
            "connected": listener.connected_peers().iter().map(|p| format!("{p:?}")).collect::<Vec<_>>(),
        });
    }
}

fn now_of(c: &EngineClock) -> u64 {
    c.now()
}
