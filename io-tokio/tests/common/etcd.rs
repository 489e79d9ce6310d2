//! A real etcd cluster on loopback for the etcd witness's tests: `members` processes of
//! `/usr/bin/etcd` (Debian's etcd-server, 3.4), each with its own data directory and ports,
//! clients on TLS with client certificates (the deployment's CA; the servers carry the
//! arbiter's certificate, so the sites name it with `[witness] server_name`). Members can be
//! killed and started again; the leader is found from each member's status.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ETCD: &str = "/usr/bin/etcd";

/// Whether etcd is installed. Under CI (`CI=true`) a missing etcd fails the test: `.ci/run`
/// installs it.
pub fn available() -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "{ETCD} is missing under CI: .ci/run installs Debian's etcd-server"
    );
    eprintln!("skipped: {ETCD} is not installed (Debian package etcd-server)");
    false
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    certs: PathBuf,
    initial: String,
}

impl EtcdCluster {
    /// Start `n` members under `dir`, with the certificates of `demo::write_certs` in `certs`.
    pub fn start(n: usize, dir: &Path, certs: &Path) -> EtcdCluster {
        let ports = super::free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                dir: dir.join(format!("etcd-m{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            members,
            certs: certs.to_path_buf(),
            initial,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(n, Duration::from_secs(30));
        c
    }

    /// The client URLs, for `[witness] endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("https://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `[witness]` for a site of this deployment.
    pub fn witness_toml(&self, prefix: &str) -> String {
        let list: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        format!(
            "\n[witness]\nkind = \"etcd\"\nendpoints = [{}]\nprefix = \"{prefix}\"\nserver_name = \"arbiter\"\n",
            list.join(", ")
        )
    }

    pub fn spawn(&mut self, i: usize) {
        let c = self.certs.display().to_string();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .unwrap();
        let client = format!("https://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(ETCD)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "lifeboat-test"])
            .args(["--cert-file", &format!("{c}/arbiter.pem")])
            .args(["--key-file", &format!("{c}/arbiter.key")])
            .args(["--trusted-ca-file", &format!("{c}/ca.pem")])
            .arg("--client-cert-auth")
            // Loopback: elections in a few hundred milliseconds.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting etcd");
        m.child = Some(child);
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Each running member's view: (its index, whether it is the leader), for those that answer.
    pub fn statuses(&self) -> Vec<(usize, bool)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ca = std::fs::read(self.certs.join("ca.pem")).unwrap();
        let cert = std::fs::read(self.certs.join("primary.pem")).unwrap();
        let key = std::fs::read(self.certs.join("primary.key")).unwrap();
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let url = format!("https://127.0.0.1:{}", m.client_port);
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(ca.clone()))
                .identity(etcd_client::Identity::from_pem(cert.clone(), key.clone()))
                .domain_name("arbiter");
            let options = etcd_client::ConnectOptions::new()
                .with_tls(tls)
                .with_timeout(Duration::from_millis(500))
                .with_connect_timeout(Duration::from_millis(500));
            let r = rt.block_on(async {
                let mut c = etcd_client::Client::connect([url], Some(options))
                    .await
                    .ok()?;
                let s = c.status().await.ok()?;
                let me = s.header().map(|h| h.member_id())?;
                Some(s.leader() != 0 && s.leader() == me)
            });
            if let Some(leader) = r {
                out.push((i, leader));
            }
        }
        out
    }

    /// The leader's index, once one is elected and answers.
    pub fn leader(&self, within: Duration) -> usize {
        let t = Instant::now();
        loop {
            if let Some((i, _)) = self.statuses().into_iter().find(|(_, l)| *l) {
                return i;
            }
            assert!(t.elapsed() < within, "no etcd leader within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `n` members answer and one of them leads.
    pub fn wait_healthy(&self, n: usize, within: Duration) {
        let t = Instant::now();
        loop {
            let s = self.statuses();
            if s.len() >= n && s.iter().any(|(_, l)| *l) {
                return;
            }
            if t.elapsed() > within {
                for m in &self.members {
                    let log =
                        std::fs::read_to_string(m.dir.with_extension("log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!(
                        "--- etcd {} ---\n{}",
                        m.name,
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    );
                }
                panic!(
                    "etcd: {} of {n} members healthy with a leader within {within:?}",
                    s.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
