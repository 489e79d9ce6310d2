//! The trust boundary, attacked through the real processes: what someone on the network, or a
//! holder of one site's key, tries against a running arbiter and two agents.

mod common;
use common::*;
use lifeboat_core::{Epoch, Message, Peer, SiteId};
use lifeboat_io_tokio::transport::frame::{encode_frame, FrameKind};
use lifeboat_io_tokio::transport::wire::{Hello, LinkKind, PROTOCOL_VERSION};
use lifeboat_io_tokio::transport::{Names, Tls, TlsFiles, Transport, TransportConfig};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn names() -> Names {
    Names {
        sites: vec!["primary".into(), "recovery".into()],
        arbiter: "arbiter".into(),
    }
}

/// Party `name`'s TLS from the certificates in `dir`.
fn tls_in(dir: &Path, name: &str, me: Peer) -> TransportConfig {
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    TransportConfig {
        tls: Some(Arc::new(Tls::load(&files, names(), me).unwrap())),
        connect_timeout: Duration::from_secs(2),
        ..TransportConfig::default()
    }
}

fn forged_notice() -> Message {
    Message::EpochNotice {
        epoch: Epoch(77),
        holder: SiteId(1),
    }
}

fn arbiter_epoch(c: &Cluster) -> Option<u64> {
    let (code, body) = http("GET", c.arb_http, "/status")?;
    let doc: serde_json::Value = serde_json::from_slice(&body).ok()?;
    (code == 200).then(|| doc["epoch"].as_u64())?
}

#[test]
fn a_forged_epoch_notice_from_a_site_changes_nothing() {
    let c = Cluster::start(Opts::default());
    let before = status(c.pri_http).unwrap();
    assert_eq!(before["role"], "primary");
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. Plain TCP: a Hello that claims to be the recovery site, then the forged notice.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.pri_listen)).unwrap();
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        peer: Peer::Site(SiteId(1)),
        link: LinkKind::Control,
    };
    let _ = s.write_all(&encode_frame(FrameKind::Hello, &hello).unwrap());
    let _ = s.write_all(&encode_frame(FrameKind::Message, &forged_notice()).unwrap());

    // 2. A certificate named "recovery" from another CA: no link, nothing delivered.
    let other = c.dir.path().join("other-ca");
    lifeboat_io_tokio::demo::write_certs(&other).unwrap();
    rt.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::channel(16);
        let t = Transport::connect(
            format!("127.0.0.1:{}", c.pri_listen),
            Peer::Site(SiteId(1)),
            tls_in(&other, "recovery", Peer::Site(SiteId(1))),
            tx,
        );
        assert!(t.send_message(forged_notice()).await.is_err());
    });

    // 3. The holder of the recovery site's key asks the arbiter for epoch 77 while the primary
    //    renews: the arbiter hands out epochs by its own lease rule only.
    let certs = c.dir.path().join("certs");
    let denied = rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let t = Transport::connect(
            format!("127.0.0.1:{}", c.arb_listen),
            Peer::Site(SiteId(1)),
            tls_in(&certs, "recovery", Peer::Site(SiteId(1))),
            tx,
        );
        t.send_message(Message::Renew {
            epoch: Epoch(77),
            req: 1,
        })
        .await
        .unwrap();
        t.send_message(Message::Acquire {
            seen: Epoch(77),
            req: 2,
            force: true,
        })
        .await
        .unwrap();
        let mut denied = 0;
        while denied < 2 {
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(lifeboat_io_tokio::transport::Event::Message {
                    from: Peer::Arbiter,
                    msg: Message::Denied { .. },
                })) => denied += 1,
                Ok(Some(lifeboat_io_tokio::transport::Event::Message {
                    msg: Message::Granted { .. },
                    ..
                })) => panic!("the arbiter granted a forged claim"),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        denied
    });
    assert_eq!(denied, 2, "both forged claims answered with a refusal");

    std::thread::sleep(Duration::from_secs(2));
    let after = status(c.pri_http).unwrap();
    assert_eq!(after["role"], "primary", "{after}");
    assert_eq!(after["epoch"], before["epoch"]);
    assert_eq!(after["writable"], true);
    assert_eq!(arbiter_epoch(&c), Some(1));
    let log = c.log("primary");
    assert!(
        log.contains("tls handshake failed"),
        "the refusals are logged"
    );
}
