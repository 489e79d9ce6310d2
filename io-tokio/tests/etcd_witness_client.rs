//! The etcd witness's client task against one real etcd member (issue 16), without agents:
//! `lifeboat witness init` (idempotent; refused over another deployment's prefix), `config check
//! --connect`, and the engine's witness messages through `EtcdWitnessClient` as the agent sends
//! them: a renewal granted, the other site's acquisition denied while the lease runs and granted
//! once it lapsed (never before the holder's own lease ended), views, and a member killed and
//! started again (no answer while it is down, answers again after, on a new connection).
//!
//! `cargo test -p lifeboat-io-tokio --test etcd_witness_client`. Needs `/usr/bin/etcd` (Debian
//! etcd-server); skipped with a note when missing, except under CI.

mod common;

use common::etcd::{self, EtcdCluster};
use common::{free_ports, lifeboat_cli};
use lifeboat_core::protocol::ArbiterView;
use lifeboat_core::{Epoch, Message, Peer, SiteId};
use lifeboat_io_tokio::config::SiteFile;
use lifeboat_io_tokio::demo::{site_toml, write_certs, SitePorts};
use lifeboat_io_tokio::transport::Event;
use lifeboat_io_tokio::witness::EtcdWitnessClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const PREFIX: &str = "/lifeboat/client-test";
const PRIMARY: SiteId = SiteId(0);
const RECOVERY: SiteId = SiteId(1);

/// A site file `<name>.toml` of the demo's deployment (lease 2 s, arbiter timeout 1 s) with the
/// witness on `etcd` under `prefix`; `sites` replaces the deployment's site list.
fn site_file(
    dir: &Path,
    etcd: &EtcdCluster,
    (name, site): (&str, &str),
    prefix: &str,
    sites: &str,
) -> PathBuf {
    let certs = dir.join("certs");
    write_certs(&certs).unwrap();
    let p = free_ports(5);
    let ports = SitePorts {
        listen: p[0],
        peer: p[1],
        arbiter: p[2],
        http: p[3],
        peer_http: p[4],
    };
    let data = dir.join(name);
    let text = site_toml(site, ports, &data, &data.join("app.sqlite"), &certs)
        .replace(&format!("arbiter = \"127.0.0.1:{}\"\n", p[2]), "")
        .replace("sites = [\"primary\", \"recovery\"]", sites)
        + &etcd.witness_toml(prefix);
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

const SITES: &str = "sites = [\"primary\", \"recovery\"]";

/// The witness's next answer to a site, as the agent's engine would receive it.
async fn answer(rx: &mut mpsc::Receiver<Event>, within: Duration) -> Option<Message> {
    match tokio::time::timeout(within, rx.recv()).await {
        Ok(Some(Event::Message {
            from: Peer::Arbiter,
            msg,
        })) => Some(msg),
        Ok(Some(_)) => panic!("the witness delivered something other than a message"),
        Ok(None) => panic!("the witness task ended"),
        Err(_) => None,
    }
}

/// A site's witness client and what it delivers to the engine.
struct Site {
    client: EtcdWitnessClient,
    rx: mpsc::Receiver<Event>,
}

impl Site {
    fn start(path: &Path) -> Site {
        let file = SiteFile::load(path).unwrap();
        let (tx, rx) = mpsc::channel(16);
        Site {
            client: EtcdWitnessClient::start(&file, tx).unwrap(),
            rx,
        }
    }

    async fn ask(&mut self, msg: Message) -> Message {
        let asked = format!("{msg:?}");
        self.client.send(msg);
        answer(&mut self.rx, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no answer to {asked} within 10 s"))
    }
}

fn view_of(m: &Message) -> &ArbiterView {
    match m {
        Message::View { view, .. } | Message::Denied { view, .. } => view,
        other => panic!("not a view: {other:?}"),
    }
}

#[test]
fn witness_init_creates_the_keys_once_and_refuses_another_deployments_prefix() {
    if !etcd::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let e = EtcdCluster::start_plain(1, dir.path());
    let pri = site_file(dir.path(), &e, ("primary", "primary"), PREFIX, SITES);
    let pri_arg = pri.display().to_string();

    // Not initialised yet: `config check --connect` says what to run.
    let (code, out, err) = lifeboat_cli(&["config", "check", "--connect", &pri_arg]);
    assert!(out.contains("healthy (leader)"), "{out}{err}");
    assert!(out.contains("not initialised"), "{out}{err}");
    assert!(out.contains("lifeboat witness init -c"), "{out}{err}");
    assert_eq!(code, 1, "{out}{err}");

    let (code, out, err) = lifeboat_cli(&["witness", "init", "-c", &pri_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("created the keys"), "{out}");
    // Idempotent: the same deployment's keys are found, nothing is written.
    let (code, out, err) = lifeboat_cli(&["witness", "init", "-c", &pri_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already"), "{out}");

    // Initialised: etcd answers and the keys are this deployment's. No agent runs, so the
    // other site's addresses do not answer, and the exit code says so.
    let (code, out, err) = lifeboat_cli(&["config", "check", "--connect", &pri_arg]);
    assert!(
        out.contains("initialised for this deployment (sites=primary,recovery)"),
        "{out}{err}"
    );
    assert!(
        out.contains("(peer)") && out.contains("NOT reachable"),
        "{out}"
    );
    assert_eq!(code, 3, "{out}{err}");

    // Another deployment (its sites differ) on the same prefix: refused, naming both.
    let other = site_file(
        dir.path(),
        &e,
        ("other", "primary"),
        PREFIX,
        "sites = [\"primary\", \"standby\"]",
    );
    let other_arg = other.display().to_string();
    let (code, out, err) = lifeboat_cli(&["witness", "init", "-c", &other_arg]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(PREFIX)
            && err.contains("another deployment's keys (sites=primary,recovery; this one is sites=primary,standby)"),
        "{err}"
    );
    let (code, out, _) = lifeboat_cli(&["config", "check", "--connect", &other_arg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("holds another deployment's keys"), "{out}");
    // The refusal wrote nothing: the first deployment's keys are intact.
    let (code, out, err) = lifeboat_cli(&["witness", "init", "-c", &pri_arg]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already"), "{out}");
}

#[test]
fn the_client_task_grants_denies_and_views_like_the_arbiter_and_survives_a_member_restart() {
    if !etcd::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut e = EtcdCluster::start_plain(1, dir.path());
    let pri = site_file(dir.path(), &e, ("primary", "primary"), PREFIX, SITES);
    let rec = site_file(dir.path(), &e, ("recovery", "recovery"), PREFIX, SITES);
    let (code, out, err) = lifeboat_cli(&["witness", "init", "-c", &pri.display().to_string()]);
    assert_eq!(code, 0, "{out}{err}");
    let lease_ms = SiteFile::load(&pri).unwrap().engine.lease.lease_ms;

    // The client task's warnings in the output of a failure (already set up: fine).
    tracing_subscriber::fmt().with_test_writer().try_init().ok();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut p, mut r) = rt.block_on(async { (Site::start(&pri), Site::start(&rec)) });
    let renewed = rt.block_on(async {
        // The initial primary renews epoch 1, which `witness init` gave it.
        let sent = Instant::now();
        let m = p
            .ask(Message::Renew {
                epoch: Epoch(1),
                req: 1,
            })
            .await;
        assert_eq!(
            m,
            Message::Granted {
                epoch: Epoch(1),
                lease_ms,
                req: 1
            }
        );
        // The recovery site may not take it while the lease runs.
        let m = r
            .ask(Message::Acquire {
                seen: Epoch(1),
                req: 2,
                force: false,
            })
            .await;
        assert!(matches!(m, Message::Denied { req: 2, .. }), "{m:?}");
        let v = view_of(&m);
        assert_eq!((v.epoch, v.holder), (Epoch(1), Some(PRIMARY)), "{m:?}");
        assert!(v.holder_renewing && !v.lease_lapsed, "{m:?}");
        // Its view: the primary renewing, renewed within etcd's TTL.
        let m = r
            .ask(Message::QueryAt {
                epoch: Epoch(1),
                req: 3,
            })
            .await;
        assert!(matches!(m, Message::View { req: 3, .. }), "{m:?}");
        let v = view_of(&m);
        assert_eq!((v.epoch, v.holder), (Epoch(1), Some(PRIMARY)), "{m:?}");
        assert!(v.holder_renewing && !v.lease_lapsed, "{m:?}");
        assert!(v.since_renewal_ms.is_some_and(|s| s <= 3_000), "{m:?}");
        // Dead site or dead link: the witness heard the recovery site (its requests).
        let m = p
            .ask(Message::SiteStatus {
                site: RECOVERY,
                req: 4,
            })
            .await;
        assert!(
            matches!(
                m,
                Message::SiteSeen {
                    site: RECOVERY,
                    heard_ms_ago: Some(_),
                    req: 4
                }
            ),
            "{m:?}"
        );
        assert_eq!(p.client.health().reachable, Some(true));
        sent
    });

    // The primary stops renewing: the recovery site's views see the lease lapse, never before
    // the primary's own lease (from when it sent its renewal) has ended.
    let lapsed = rt.block_on(async {
        let mut req = 10;
        loop {
            req += 1;
            let m = r
                .ask(Message::QueryAt {
                    epoch: Epoch(1),
                    req,
                })
                .await;
            if view_of(&m).lease_lapsed {
                break renewed.elapsed();
            }
            assert!(
                renewed.elapsed() < Duration::from_secs(10),
                "the lease did not lapse within 10 s: {m:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    assert!(
        lapsed >= Duration::from_millis(lease_ms),
        "etcd let the lease go {lapsed:?} after the renewal was sent, before the holder's own \
         lease of {lease_ms} ms ended"
    );

    rt.block_on(async {
        let m = r
            .ask(Message::Acquire {
                seen: Epoch(1),
                req: 20,
                force: false,
            })
            .await;
        assert_eq!(
            m,
            Message::Granted {
                epoch: Epoch(2),
                lease_ms,
                req: 20
            }
        );
        // The old primary is refused and learns the new epoch's holder.
        let m = p
            .ask(Message::Renew {
                epoch: Epoch(1),
                req: 21,
            })
            .await;
        assert!(matches!(m, Message::Denied { req: 21, .. }), "{m:?}");
        assert_eq!(view_of(&m).holder, Some(RECOVERY), "{m:?}");
        let m = p
            .ask(Message::QueryAt {
                epoch: Epoch(1),
                req: 22,
            })
            .await;
        let v = view_of(&m);
        assert_eq!((v.epoch, v.holder), (Epoch(2), Some(RECOVERY)), "{m:?}");
        assert!(v.holder_renewing, "{m:?}");
    });

    // The only member killed: no answer (the engine asks again after its timeout), and the
    // status says etcd does not answer.
    e.kill(0);
    rt.block_on(async {
        r.client.send(Message::Renew {
            epoch: Epoch(2),
            req: 30,
        });
        assert_eq!(answer(&mut r.rx, Duration::from_secs(3)).await, None);
        let h = r.client.health();
        assert_eq!(h.reachable, Some(false), "{h:?}");
        assert!(h.last_error.is_some(), "{h:?}");
    });
    // Started again: the client connects anew and the holder keeps its epoch.
    e.restart(0, Duration::from_secs(30));
    rt.block_on(async {
        let t = Instant::now();
        let mut req = 40;
        loop {
            req += 1;
            r.client.send(Message::Renew {
                epoch: Epoch(2),
                req,
            });
            // An answer may come after its wait ended: any renewal's grant will do.
            if let Some(m) = answer(&mut r.rx, Duration::from_secs(3)).await {
                assert!(
                    matches!(
                        m,
                        Message::Granted {
                            epoch: Epoch(2),
                            req: 41..,
                            ..
                        }
                    ),
                    "{m:?}"
                );
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "no answer within 20 s of the member's restart"
            );
        }
        assert_eq!(r.client.health().reachable, Some(true));
    });
}
