//! The witness on etcd, the adapter's half: a task per agent that takes the engine's
//! witness-bound messages, runs their translation (`lifeboat_core::etcd::EtcdWitness`, pure)
//! against the etcd cluster, and hands the answers to the engine as messages from the arbiter.
//! No arbiter process runs in this mode. The translation decides everything; this module only
//! executes operations, one request at a time and in order, each round trip under
//! `witness.timeout_ms`.

use crate::config::{SiteFile, WitnessSettings};
use crate::transport::Event;
use anyhow::{bail, Context};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, Identity, LeaseGrantOptions,
    PutOptions, TlsOptions, Txn, TxnOp,
};
use lifeboat_core::etcd::{init_ops, Answer, EtcdWitness, Keys, Kv, Next, Op};
use lifeboat_core::{Config, Message, Peer};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

/// Requests waiting for etcd, at most. A query is dropped first when full; the engine asks
/// again after its timeout.
const QUEUE: usize = 64;

/// The client's health, for `/status`.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Whether the last round trip succeeded, how long ago one last did, the last error.
    pub reachable: Option<bool>,
    pub last_ok_ms_ago: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    queue: VecDeque<Message>,
    last_ok: Option<Instant>,
    last_error: Option<String>,
    reachable: Option<bool>,
}

/// The agent's handle on its etcd witness task.
#[derive(Clone)]
pub struct EtcdWitnessClient {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    settings: WitnessSettings,
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EtcdWitnessClient {
    /// Start the task: answers go to `events` as messages from the arbiter.
    pub fn start(file: &SiteFile, events: mpsc::Sender<Event>) -> anyhow::Result<Self> {
        let settings = file.witness.clone();
        let options = connect_options(file)?;
        let witness = EtcdWitness::new(
            &file.engine,
            file.site_id(),
            settings.prefix(),
            start_nonce(),
        );
        let client = EtcdWitnessClient {
            shared: Arc::default(),
            wake: Arc::new(Notify::new()),
            settings: settings.clone(),
        };
        let task = client.clone();
        tokio::spawn(async move {
            task.run(witness, options, events).await;
        });
        Ok(client)
    }

    /// A message from the engine to the witness.
    pub fn send(&self, msg: Message) {
        let mut sh = lock(&self.shared);
        if sh.queue.len() >= QUEUE {
            let query = sh
                .queue
                .iter()
                .position(|m| matches!(m, Message::Query { .. } | Message::QueryAt { .. }));
            let dropped = sh.queue.remove(query.unwrap_or(0));
            warn!(?dropped, "etcd witness: {QUEUE} requests wait for etcd; the oldest query (or request) is dropped");
        }
        sh.queue.push_back(msg);
        drop(sh);
        self.wake.notify_one();
    }

    /// Whether etcd answers, for `/status`.
    pub fn health(&self) -> Health {
        let sh = lock(&self.shared);
        Health {
            reachable: sh.reachable,
            last_ok_ms_ago: sh.last_ok.map(|t| t.elapsed().as_millis() as u64),
            last_error: sh.last_error.clone(),
        }
    }

    async fn run(
        self,
        mut witness: EtcdWitness,
        options: (Vec<String>, ConnectOptions),
        events: mpsc::Sender<Event>,
    ) {
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let mut conn = Connection {
            endpoints: options.0,
            options: options.1,
            current: 0,
            client: None,
            timeout,
        };
        let mut last_warning = String::new();
        loop {
            let next = lock(&self.shared).queue.pop_front();
            let Some(msg) = next else {
                self.wake.notified().await;
                continue;
            };
            let Some(mut call) = witness.request(msg) else {
                continue;
            };
            loop {
                let answers = conn.run(&call.ops).await;
                {
                    let mut sh = lock(&self.shared);
                    match &answers {
                        Ok(_) => {
                            sh.last_ok = Some(Instant::now());
                            sh.reachable = Some(true);
                        }
                        Err(e) => {
                            sh.reachable = Some(false);
                            sh.last_error = Some(e.clone());
                        }
                    }
                }
                match witness.answer(call, answers) {
                    Next::Call(c) => call = c,
                    Next::Reply(reply) => {
                        let ev = Event::Message {
                            from: Peer::Arbiter,
                            msg: reply,
                        };
                        if events.send(ev).await.is_err() {
                            return;
                        }
                        break;
                    }
                    Next::Nothing(why) => {
                        if why != last_warning {
                            warn!(%why, "etcd witness: no answer for the engine");
                            last_warning = why;
                        } else {
                            debug!(%why, "etcd witness: no answer for the engine");
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// A number unique to this start of this process: the translation derives its lease IDs from
/// it, so a restarted agent never reuses a lease ID of its previous run.
fn start_nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = [0u8; 20];
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..].copy_from_slice(&std::process::id().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&seed)
}

/// The endpoints and connection options from the site file.
fn connect_options(file: &SiteFile) -> anyhow::Result<(Vec<String>, ConnectOptions)> {
    let w = &file.witness;
    let timeout = Duration::from_millis(w.timeout_ms);
    let mut options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout)
        .with_keep_alive(Duration::from_secs(2), timeout);
    if w.endpoints.iter().any(|e| e.starts_with("https://")) {
        let ca = w
            .ca
            .as_ref()
            .or(file.tls.ca.as_ref())
            .context("[witness] ca (or [tls] ca): etcd's https endpoints need the CA that signed its certificates")?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {} for [witness]", p.display()))
        };
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
        let (cert, key) = match (&w.cert, &w.key) {
            (Some(c), Some(k)) => (Some(c), Some(k)),
            _ => (file.tls.cert.as_ref(), file.tls.key.as_ref()),
        };
        if let (Some(c), Some(k)) = (cert, key) {
            tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        if let Some(name) = &w.server_name {
            tls = tls.domain_name(name.clone());
        }
        options = options.with_tls(tls);
    }
    Ok((w.endpoints.clone(), options))
}

/// A connection to one member at a time, made lazily. A member that fails a call is left for
/// the next one in the list: a killed member must not fail every other call (a client that
/// balances over every endpoint keeps picking the dead one).
struct Connection {
    endpoints: Vec<String>,
    options: ConnectOptions,
    current: usize,
    client: Option<Client>,
    timeout: Duration,
}

impl Connection {
    async fn client(&mut self) -> Result<Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = &self.endpoints[self.current % self.endpoints.len()];
        let made = tokio::time::timeout(
            self.timeout,
            Client::connect([endpoint.as_str()], Some(self.options.clone())),
        )
        .await
        .map_err(|_| format!("connecting to {endpoint} took over {:?}", self.timeout))?
        .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
        self.client = Some(made.clone());
        Ok(made)
    }

    fn next_member(&mut self) {
        self.client = None;
        self.current = (self.current + 1) % self.endpoints.len().max(1);
    }

    /// Run a call's operations in order; the first failure fails the call and moves to the
    /// next member. A call that failed before any operation was applied (no connection, or
    /// its first operation unanswered) is tried on the next members at once.
    async fn run(&mut self, ops: &[Op]) -> Result<Vec<Answer>, String> {
        let mut last = String::new();
        for _ in 0..self.endpoints.len().max(1) {
            let mut client = match self.client().await {
                Ok(c) => c,
                Err(e) => {
                    last = e;
                    self.next_member();
                    continue;
                }
            };
            let mut answers = Vec::with_capacity(ops.len());
            for op in ops {
                let r = tokio::time::timeout(self.timeout, execute(&mut client, op)).await;
                match r {
                    Ok(Ok(a)) => answers.push(a),
                    Ok(Err(e)) => {
                        last = e;
                        break;
                    }
                    Err(_) => {
                        last = format!("etcd did not answer within {:?}", self.timeout);
                        break;
                    }
                }
            }
            if answers.len() == ops.len() {
                return Ok(answers);
            }
            self.next_member();
            if !answers.is_empty() {
                // Some operations applied: the translation decides what the rest means.
                break;
            }
        }
        Err(last)
    }
}

fn not_found(e: &etcd_client::Error) -> bool {
    e.to_string().contains("requested lease not found")
}

/// One operation against etcd.
pub async fn execute(client: &mut Client, op: &Op) -> Result<Answer, String> {
    let err = |e: etcd_client::Error| e.to_string();
    match op {
        Op::Get { key } => {
            let r = client.get(key.as_bytes(), None).await.map_err(err)?;
            Ok(Answer::Kv(r.kvs().first().map(|kv| Kv {
                value: kv.value().to_vec(),
                mod_revision: kv.mod_revision(),
                lease: kv.lease(),
            })))
        }
        Op::Grant { lease, ttl_s } => {
            client
                .lease_grant(
                    i64::try_from(*ttl_s).unwrap_or(i64::MAX),
                    Some(LeaseGrantOptions::new().with_id(*lease)),
                )
                .await
                .map_err(err)?;
            Ok(Answer::Granted)
        }
        Op::KeepAlive { lease } => match client.lease_keep_alive(*lease).await {
            Ok((mut keeper, mut stream)) => {
                keeper.keep_alive().await.map_err(err)?;
                match stream.message().await {
                    Ok(Some(r)) => Ok(Answer::Alive { ttl_s: r.ttl() }),
                    Ok(None) => Err("etcd closed the keep-alive stream".into()),
                    Err(e) if not_found(&e) => Ok(Answer::Alive { ttl_s: 0 }),
                    Err(e) => Err(err(e)),
                }
            }
            Err(e) if not_found(&e) => Ok(Answer::Alive { ttl_s: 0 }),
            Err(e) => Err(err(e)),
        },
        Op::TimeToLive { lease } => match client.lease_time_to_live(*lease, None).await {
            Ok(r) => Ok(Answer::Ttl {
                remaining_s: r.ttl(),
            }),
            Err(e) if not_found(&e) => Ok(Answer::Ttl { remaining_s: -1 }),
            Err(e) => Err(err(e)),
        },
        Op::Revoke { lease } => match client.lease_revoke(*lease).await {
            Ok(_) => Ok(Answer::Revoked),
            Err(e) if not_found(&e) => Ok(Answer::Revoked),
            Err(e) => Err(err(e)),
        },
        Op::Txn { when, then } => {
            let compares: Vec<Compare> = when
                .iter()
                .map(|(k, rev)| Compare::mod_revision(k.as_bytes(), CompareOp::Equal, *rev))
                .collect();
            let puts: Vec<TxnOp> = then
                .iter()
                .map(|p| {
                    let options = (p.lease != 0).then(|| PutOptions::new().with_lease(p.lease));
                    TxnOp::put(p.key.as_bytes(), p.value.clone(), options)
                })
                .collect();
            let r = client
                .txn(Txn::new().when(compares).and_then(puts))
                .await
                .map_err(err)?;
            Ok(Answer::Txn {
                succeeded: r.succeeded(),
            })
        }
    }
}

/// Every endpoint's health: (endpoint, Ok(is leader) or the error).
pub async fn endpoint_health(
    file: &SiteFile,
) -> anyhow::Result<Vec<(String, Result<bool, String>)>> {
    let (endpoints, options) = connect_options(file)?;
    let timeout = Duration::from_millis(file.witness.timeout_ms.max(1_000));
    let mut out = Vec::new();
    for e in endpoints {
        let one = async {
            let mut c = Client::connect([e.as_str()], Some(options.clone()))
                .await
                .map_err(|x| x.to_string())?;
            let s = c.status().await.map_err(|x| x.to_string())?;
            let me = s.header().map_or(0, |h| h.member_id());
            Ok::<bool, String>(s.leader() == me)
        };
        let r = tokio::time::timeout(timeout, one)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        out.push((e, r));
    }
    Ok(out)
}

/// Whether the prefix holds this deployment's keys (`None`: no deployment key).
pub async fn deployment(file: &SiteFile) -> anyhow::Result<Option<bool>> {
    let (endpoints, options) = connect_options(file)?;
    let mut client = Client::connect(&endpoints, Some(options))
        .await
        .with_context(|| format!("connecting to etcd at {endpoints:?}"))?;
    let keys = Keys::new(file.witness.prefix());
    let op = Op::Get {
        key: keys.deployment(),
    };
    match execute(&mut client, &op)
        .await
        .map_err(anyhow::Error::msg)?
    {
        Answer::Kv(kv) => {
            Ok(kv.map(|k| k.value == lifeboat_core::etcd::deployment_value(&file.engine)))
        }
        other => bail!("etcd answered {other:?} to a read"),
    }
}

/// What `lifeboat witness init` found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum InitOutcome {
    Created,
    AlreadyThis,
}

/// `lifeboat witness init`: create the deployment's keys, never over another deployment's.
pub async fn init(file: &SiteFile) -> anyhow::Result<InitOutcome> {
    if !file.witness.is_etcd() {
        bail!("[witness] kind is \"arbiter\": `witness init` is for kind = \"etcd\"");
    }
    let (endpoints, options) = connect_options(file)?;
    let mut client = Client::connect(&endpoints, Some(options))
        .await
        .with_context(|| format!("connecting to etcd at {endpoints:?}"))?;
    let keys = Keys::new(file.witness.prefix());
    let cfg: &Config = &file.engine;
    let mut answers = Vec::new();
    for op in init_ops(cfg, &keys, (start_nonce() >> 1).max(1) as i64) {
        answers.push(
            execute(&mut client, &op)
                .await
                .map_err(anyhow::Error::msg)?,
        );
    }
    match answers.pop().unwrap_or(Answer::Revoked) {
        Answer::Txn { succeeded: true } => return Ok(InitOutcome::Created),
        Answer::Txn { succeeded: false } => {}
        other => bail!("etcd answered {other:?} to the transaction"),
    }
    let want = lifeboat_core::etcd::deployment_value(cfg);
    let found = match execute(
        &mut client,
        &Op::Get {
            key: keys.deployment(),
        },
    )
    .await
    .map_err(anyhow::Error::msg)?
    {
        Answer::Kv(kv) => kv.map(|k| k.value),
        other => bail!("etcd answered {other:?} to a read"),
    };
    match found {
        Some(v) if v == want => Ok(InitOutcome::AlreadyThis),
        Some(v) => bail!(
            "the prefix {} already holds another deployment's keys ({}; this one is {}): \
             choose another [witness] prefix, or remove those keys if that deployment is gone",
            keys.prefix,
            String::from_utf8_lossy(&v),
            String::from_utf8_lossy(&want)
        ),
        None => bail!(
            "the prefix {} holds an epoch record but no deployment key: it was not made by \
             `lifeboat witness init`; choose another prefix, or remove its keys",
            keys.prefix
        ),
    }
}
