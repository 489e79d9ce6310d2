//! A real etcd cluster on loopback for the etcd witness's tests: `members` processes of
//! `/usr/bin/etcd` (Debian's etcd-server, 3.4), each with its own data directory and ports,
//! clients on TLS with client certificates (the deployment's CA; the servers carry the
//! arbiter's certificate, so the sites name it with `[witness] server_name`), or on plain http
//! ([`EtcdCluster::start_plain`], `[witness] insecure = true`). Members can be killed and
//! started again; the leader is found from each member's status.

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
    /// The certificates of `demo::write_certs` (TLS with client certificates), or plain http.
    certs: Option<PathBuf>,
    initial: String,
}

impl EtcdCluster {
    /// Start `n` members under `dir`, with the certificates of `demo::write_certs` in `certs`.
    pub fn start(n: usize, dir: &Path, certs: &Path) -> EtcdCluster {
        Self::start_with(n, dir, Some(certs))
    }

    /// Start `n` members under `dir` serving clients on plain http.
    pub fn start_plain(n: usize, dir: &Path) -> EtcdCluster {
        Self::start_with(n, dir, None)
    }

    fn start_with(n: usize, dir: &Path, certs: Option<&Path>) -> EtcdCluster {
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
            certs: certs.map(Path::to_path_buf),
            initial,
        };
        for i in 0..n {
            c.spawn(i);
        }
        c.wait_healthy(n, Duration::from_secs(30));
        c
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The client URLs, for `[witness] endpoints`.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `[witness]` for a site of this deployment.
    pub fn witness_toml(&self, prefix: &str) -> String {
        let list: Vec<String> = self.endpoints().iter().map(|e| format!("{e:?}")).collect();
        let access = if self.certs.is_some() {
            "server_name = \"arbiter\""
        } else {
            "insecure = true"
        };
        format!(
            "\n[witness]\nkind = \"etcd\"\nendpoints = [{}]\nprefix = \"{prefix}\"\n{access}\n",
            list.join(", ")
        )
    }

    /// Start member `i` (again, after [`kill`](Self::kill): on its data directory, as the same
    /// member).
    pub fn spawn(&mut self, i: usize) {
        let client = self.endpoint(i);
        let certs = self.certs.clone();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.with_extension("log"))
            .unwrap();
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "lifeboat-test"])
            // Loopback: elections in a few hundred milliseconds.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        if let Some(c) = certs {
            let c = c.display();
            cmd.args(["--cert-file", &format!("{c}/arbiter.pem")])
                .args(["--key-file", &format!("{c}/arbiter.key")])
                .args(["--trusted-ca-file", &format!("{c}/ca.pem")])
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting etcd");
        m.child = Some(child);
    }

    /// Start member `i` again after [`kill`](Self::kill), and wait until it answers.
    pub fn restart(&mut self, i: usize, within: Duration) {
        self.spawn(i);
        let t = Instant::now();
        while !self.statuses().iter().any(|(m, _)| *m == i) {
            assert!(
                t.elapsed() < within,
                "etcd member {i} does not answer within {within:?} of its restart"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
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
        let tls = self.certs.as_ref().map(|c| {
            let read = |f: &str| std::fs::read(c.join(f)).unwrap();
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
                .identity(etcd_client::Identity::from_pem(
                    read("primary.pem"),
                    read("primary.key"),
                ))
                .domain_name("arbiter")
        });
        let mut out = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let url = self.endpoint(i);
            let mut options = etcd_client::ConnectOptions::new()
                .with_timeout(Duration::from_millis(500))
                .with_connect_timeout(Duration::from_millis(500));
            if let Some(tls) = &tls {
                options = options.with_tls(tls.clone());
            }
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
