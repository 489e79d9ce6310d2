//! The arbiter process: the witness engine behind a transport listener, with its journal, on
//! the same engine loop as the site agent. Sites dial it; it answers over the control link each
//! site opened, one ordered queue per site.

use crate::config::ArbiterFile;
use crate::engine_loop::{Dispatch, EngineLoop, Peeker, PeerQueue};
use crate::http::{self, Request, Response};
use crate::status::doc::ArbiterStatusDoc;
use crate::transport::{Inbox, Listener, TransportConfig};
use anyhow::Context;
use lifeboat_core::arbiter::Arbiter;
use lifeboat_core::{Config, Input, Millis, Output, Peer};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::info;

pub async fn run(file: ArbiterFile) -> anyhow::Result<()> {
    let cfg = file.engine.clone();
    // Held until `run` returns: a second arbiter on this data_dir exits instead.
    let _owner = crate::datadir::DataDirLock::acquire(&file.data_dir, "arbiter")?;
    let (lp, started) = EngineLoop::open(
        &file.data_dir.join("journal"),
        file.journal.snapshot_every,
        |s| match s {
            Some(s) => Arbiter::from_state(cfg.clone(), s),
            None => Arbiter::new(cfg.clone()),
        },
    )?;
    info!(
        epoch = lp.engine().epoch().0,
        holder = ?lp.engine().holder().map(|h| cfg.site_name(h).to_string()),
        replayed = started.replayed,
        "arbiter starting"
    );

    let (tx, events) = mpsc::channel(1024);
    lp.feed().forward(events);
    let inbox = Inbox::open(file.data_dir.join("inbox"), cfg.databases.clone())
        .with_context(|| format!("creating {}", file.data_dir.display()))?;
    let tcfg = TransportConfig {
        tls: file
            .tls
            .load(&cfg, Peer::Arbiter)
            .context("[tls] in the arbiter's configuration")?,
        ..TransportConfig::default()
    };
    if let Some(tls) = &tcfg.tls {
        tls.reload_on_hangup("arbiter".into());
    }
    let access = http::Access {
        tls: tcfg.tls.clone(),
        token: None,
    };
    let listener = Arc::new(
        Listener::bind(&file.listen, Peer::Arbiter, inbox, tcfg, tx)
            .await
            .with_context(|| format!("listening on {} (listen)", file.listen))?,
    );
    if let Some(addr) = &file.http {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("http on {addr}"))?;
        let (peeker, cfg, listener) = (lp.peeker(), cfg.clone(), listener.clone());
        tokio::spawn(http::serve(
            l,
            Arc::new(move |r: Request| {
                let (peeker, cfg, listener) = (peeker.clone(), cfg.clone(), listener.clone());
                async move {
                    match r.path.as_str() {
                        "/status" => match status(&peeker, cfg, &listener).await {
                            Some(doc) => Response::json(200, &doc),
                            None => Response::text(503, "the arbiter is stopping or overloaded\n"),
                        },
                        "/health" => Response::text(200, "ok\n"),
                        _ => Response::text(404, "try /status\n"),
                    }
                }
            }),
            access,
        ));
    }

    let first = if started.resumed {
        Input::Restarted
    } else {
        Input::Tick
    };
    let mut out = Answers {
        cfg,
        listener,
        queues: BTreeMap::new(),
    };
    lp.run(vec![first], &mut out).await
}

/// The arbiter's outputs: answers to sites, one ordered queue per site; decisions to the log.
struct Answers {
    cfg: Config,
    listener: Arc<Listener>,
    queues: BTreeMap<Peer, PeerQueue>,
}

impl Dispatch<Arbiter> for Answers {
    fn output(&mut self, _: &Arbiter, _: Millis, out: Output) {
        match out {
            Output::Send { to, msg } => {
                let (listener, name) = (&self.listener, peer_name(&self.cfg, to));
                self.queues
                    .entry(to)
                    .or_insert_with(|| PeerQueue::start(name, None, listener.clone(), to))
                    .send(msg);
            }
            Output::Audit(a) => info!(what = %a.what, why = %a.why, epoch = a.epoch.0, "decision"),
            other => tracing::debug!(?other, "arbiter output"),
        }
    }
}

/// The arbiter's `/status` document, built between batches.
async fn status(
    peeker: &Peeker<Arbiter>,
    cfg: Config,
    listener: &Listener,
) -> Option<ArbiterStatusDoc> {
    let connected: Vec<String> = listener
        .connected_peers()
        .iter()
        .map(|p| peer_name(&cfg, *p))
        .collect();
    peeker
        .peek(move |arb, now, _| {
            let st = arb.state();
            let view = arb.view(now);
            ArbiterStatusDoc {
                role: "arbiter".into(),
                epoch: st.epoch.0,
                holder: st.holder.map(|h| cfg.site_name(h).to_string()),
                holder_renewing: view.holder_renewing,
                lease_lapsed: view.lease_lapsed,
                since_renewal_ms: view.since_renewal_ms,
                connected,
            }
        })
        .await
}

/// A peer by the name the configuration gives it.
fn peer_name(cfg: &Config, p: Peer) -> String {
    match p {
        Peer::Site(s) => cfg.site_name(s).to_string(),
        Peer::Arbiter => "arbiter".into(),
    }
}
