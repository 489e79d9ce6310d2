//! The witness on etcd, the adapter's half: a task per agent that takes the engine's
//! witness-bound messages, runs their translation (`lifeboat_core::etcd::EtcdWitness`, pure)
//! against the etcd cluster, and hands the answers to the engine as messages from the arbiter.
//! No arbiter process runs in this mode. The translation decides everything; this module only
//! executes operations, one request at a time and in order, each call (its operations in order,
//! on one member) under `[witness] timeout_ms`.

use crate::config::SiteFile;
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

/// The same warning is logged at most this often; the repeats in between go to the debug log
/// and are counted in the next one.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The client's health, for `/status`.
#[derive(Clone, Debug, Default)]
pub struct Health {
    /// Whether the last round trip succeeded, how long ago one last did, the last error.
    pub reachable: Option<bool>,
    pub last_ok_ms_ago: Option<u64>,
    pub last_error: Option<String>,
    /// Each endpoint at the last health check (every [`HEALTH_EVERY`]): healthy and leading,
    /// healthy, or the error.
    pub endpoints: Vec<(String, Result<bool, String>)>,
}

/// How often every endpoint's health is checked for `/status`.
pub const HEALTH_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Shared {
    queue: VecDeque<Message>,
    last_ok: Option<Instant>,
    last_error: Option<String>,
    reachable: Option<bool>,
    endpoints: Vec<(String, Result<bool, String>)>,
}

/// The agent's handle on its etcd witness task.
#[derive(Clone)]
pub struct EtcdWitnessClient {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    /// Time limits of one call and of connecting to one member (`[witness] timeout_ms` and
    /// `connect_timeout_ms`, resolved).
    timeout: Duration,
    connect_timeout: Duration,
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
            timeout: settings.call_timeout(&file.engine),
            connect_timeout: settings.connect_timeout(&file.engine),
        };
        let task = client.clone();
        let (endpoints, connect) = (options.0.clone(), options.1.clone());
        tokio::spawn(async move {
            task.run(witness, options, events).await;
        });
        let health = client.shared.clone();
        let timeout = settings
            .call_timeout(&file.engine)
            .max(Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                let found = check_endpoints(&endpoints, &connect, timeout).await;
                lock(&health).endpoints = found;
                tokio::time::sleep(HEALTH_EVERY).await;
            }
        });
        Ok(client)
    }

    /// A message from the engine to the witness.
    pub fn send(&self, msg: Message) {
        let dropped = enqueue(&mut lock(&self.shared).queue, msg);
        if let Some(d) = dropped {
            warn!(
                dropped = request_name(&d),
                "etcd witness: {QUEUE} requests wait for etcd (it answers slowly or not at all); \
                 the oldest query, or the oldest request when none is a query, is dropped \
                 unanswered"
            );
        }
        self.wake.notify_one();
    }

    /// Whether etcd answers, for `/status`.
    pub fn health(&self) -> Health {
        let sh = lock(&self.shared);
        Health {
            reachable: sh.reachable,
            last_ok_ms_ago: sh.last_ok.map(|t| t.elapsed().as_millis() as u64),
            last_error: sh.last_error.clone(),
            endpoints: sh.endpoints.clone(),
        }
    }

    async fn run(
        self,
        mut witness: EtcdWitness,
        options: (Vec<String>, ConnectOptions),
        events: mpsc::Sender<Event>,
    ) {
        let mut conn = Connection {
            endpoints: options.0,
            options: options.1,
            current: 0,
            client: None,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
        };
        let mut warnings = Warnings::default();
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
                        match warnings.admit(&why, Instant::now()) {
                            Some(0) => warn!(%why, "etcd witness: no answer for the engine"),
                            Some(repeated) => warn!(
                                %why,
                                repeated,
                                "etcd witness: no answer for the engine (again; the same \
                                 warning {repeated} more times since it was last logged)"
                            ),
                            None => debug!(%why, "etcd witness: no answer for the engine"),
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Append `msg` to a queue of at most [`QUEUE`] requests; when full, the request it displaces:
/// the oldest query (the engine queries again on its own schedule), else the oldest request.
fn enqueue(queue: &mut VecDeque<Message>, msg: Message) -> Option<Message> {
    let dropped = if queue.len() >= QUEUE {
        let query = queue
            .iter()
            .position(|m| matches!(m, Message::Query { .. } | Message::QueryAt { .. }));
        queue.remove(query.unwrap_or(0))
    } else {
        None
    };
    queue.push_back(msg);
    dropped
}

/// A witness request's name, for the log.
fn request_name(msg: &Message) -> &'static str {
    match msg {
        Message::Renew { .. } => "Renew",
        Message::Acquire { .. } => "Acquire",
        Message::Handoff { .. } => "Handoff",
        Message::Query { .. } | Message::QueryAt { .. } => "Query",
        Message::SiteStatus { .. } => "SiteStatus",
        _ => "not a witness request",
    }
}

/// Repeated warnings, held back: etcd out of reach fails every request the same way, several a
/// second.
#[derive(Default)]
struct Warnings {
    last: Option<(String, Instant)>,
    repeated: u64,
}

impl Warnings {
    /// Whether to log `why` now (with how many identical ones were held back since it was last
    /// logged), or `None` to hold it back: a new text is logged at once, the same text again
    /// after [`WARN_EVERY`].
    fn admit(&mut self, why: &str, now: Instant) -> Option<u64> {
        match &self.last {
            Some((text, at)) if text == why && now.duration_since(*at) < WARN_EVERY => {
                self.repeated += 1;
                None
            }
            Some((text, _)) if text == why => {
                self.last = Some((why.to_string(), now));
                Some(std::mem::take(&mut self.repeated))
            }
            _ => {
                self.last = Some((why.to_string(), now));
                self.repeated = 0;
                Some(0)
            }
        }
    }
}

/// A number unique to this start of this process, from the operating system's randomness: the
/// translation derives its lease IDs from it, so a restarted agent never reuses a lease ID of
/// its previous run, and two sites never draw the same ones.
fn start_nonce() -> u64 {
    use rand::RngCore;
    rand::rngs::OsRng.next_u64()
}

/// The endpoints and connection options from the site file.
fn connect_options(file: &SiteFile) -> anyhow::Result<(Vec<String>, ConnectOptions)> {
    let w = &file.witness;
    let timeout = w.call_timeout(&file.engine);
    let mut options = ConnectOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(w.connect_timeout(&file.engine))
        .with_keep_alive(Duration::from_secs(2), timeout)
        // A member cut off from its leader refuses at once instead of holding a call until its
        // time limit: the call moves on to the next member while the engine still waits.
        .with_require_leader(true);
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
    /// One call's operations, together.
    timeout: Duration,
    connect_timeout: Duration,
}

impl Connection {
    async fn client(&mut self) -> Result<Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let endpoint = &self.endpoints[self.current % self.endpoints.len()];
        let made = tokio::time::timeout(
            self.connect_timeout,
            Client::connect([endpoint.as_str()], Some(self.options.clone())),
        )
        .await
        .map_err(|_| {
            format!(
                "connecting to {endpoint} took over {} ms",
                self.connect_timeout.as_millis()
            )
        })?
        .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
        self.client = Some(made.clone());
        Ok(made)
    }

    fn next_member(&mut self) {
        self.client = None;
        self.current = (self.current + 1) % self.endpoints.len().max(1);
    }

    /// Run a call's operations in order, all within the call's time limit; the first failure
    /// fails the call and moves to the next member. A call that failed before any operation
    /// was answered (no connection, or its first operation failed) is tried on the next members
    /// at once: each operation is a read, or conditional, or idempotent, or fails when
    /// repeated (a grant of the same lease ID), so running it again never does more than once.
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
            let all = tokio::time::timeout(self.timeout, async {
                for op in ops {
                    answers.push(execute(&mut client, op).await?);
                }
                Ok::<(), String>(())
            })
            .await;
            match all {
                Ok(Ok(())) => {}
                Ok(Err(e)) => last = format!("{}: {e}", self.endpoints[self.current]),
                Err(_) => {
                    last = format!(
                        "{} answered {} of {} operations within {} ms",
                        self.endpoints[self.current],
                        answers.len(),
                        ops.len(),
                        self.timeout.as_millis()
                    )
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

/// Whether etcd says a lease does not exist (expired or revoked): etcd's gRPC error
/// (`requested lease not found`), or etcd-client's for a keep-alive answered with TTL 0 (it
/// reads that first answer itself, before handing out the stream).
fn not_found(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::LeaseKeepAliveError(m) => m == "lease not found",
        etcd_client::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        _ => false,
    }
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
    let timeout = file
        .witness
        .call_timeout(&file.engine)
        .max(Duration::from_secs(1));
    Ok(check_endpoints(&endpoints, &options, timeout).await)
}

/// Each endpoint's status, one connection each: healthy and leading, healthy, or the error.
async fn check_endpoints(
    endpoints: &[String],
    options: &ConnectOptions,
    timeout: Duration,
) -> Vec<(String, Result<bool, String>)> {
    let mut out = Vec::new();
    for e in endpoints.iter().cloned() {
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
    out
}

/// What the prefix's deployment key holds (`None`: no such key), to compare with this
/// deployment's (`lifeboat_core::etcd::deployment_value`).
pub async fn deployment(file: &SiteFile) -> anyhow::Result<Option<Vec<u8>>> {
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
        Answer::Kv(kv) => Ok(kv.map(|k| k.value)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::Epoch;

    fn renew(req: u64) -> Message {
        Message::Renew {
            epoch: Epoch(1),
            req,
        }
    }

    fn query(req: u64) -> Message {
        Message::QueryAt {
            epoch: Epoch(1),
            req,
        }
    }

    fn req_of(m: &Message) -> u64 {
        match m {
            Message::Renew { req, .. } | Message::QueryAt { req, .. } => *req,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_query_first_then_the_oldest_request() {
        let mut q = VecDeque::new();
        for i in 0..QUEUE as u64 {
            let m = if i == 5 || i == 9 { query(i) } else { renew(i) };
            assert_eq!(enqueue(&mut q, m), None);
        }
        let dropped = enqueue(&mut q, renew(100)).unwrap();
        assert_eq!((request_name(&dropped), req_of(&dropped)), ("Query", 5));
        let dropped = enqueue(&mut q, renew(101)).unwrap();
        assert_eq!((request_name(&dropped), req_of(&dropped)), ("Query", 9));
        // No query left: the oldest request goes, and the caller logs it.
        let dropped = enqueue(&mut q, renew(102)).unwrap();
        assert_eq!((request_name(&dropped), req_of(&dropped)), ("Renew", 0));
        assert_eq!(q.len(), QUEUE);
        // Order kept: the newest last.
        assert_eq!(q.back().map(req_of), Some(102));
        assert_eq!(q.front().map(req_of), Some(1));
    }

    #[test]
    fn the_same_warning_is_logged_once_a_minute_with_the_count_held_back() {
        let mut w = Warnings::default();
        let t = Instant::now();
        assert_eq!(w.admit("etcd did not answer", t), Some(0));
        assert_eq!(
            w.admit("etcd did not answer", t + Duration::from_secs(1)),
            None
        );
        assert_eq!(
            w.admit("etcd did not answer", t + Duration::from_secs(2)),
            None
        );
        // Another reason is news: logged at once.
        assert_eq!(
            w.admit("no epoch record", t + Duration::from_secs(3)),
            Some(0)
        );
        assert_eq!(
            w.admit("etcd did not answer", t + Duration::from_secs(4)),
            Some(0)
        );
        let later = t + Duration::from_secs(4) + WARN_EVERY;
        assert_eq!(
            w.admit("etcd did not answer", later - Duration::from_secs(1)),
            None
        );
        assert_eq!(w.admit("etcd did not answer", later), Some(1));
    }

    #[test]
    fn a_keep_alive_of_a_lease_that_is_gone_reads_as_not_found() {
        let gone = etcd_client::Error::LeaseKeepAliveError("lease not found".into());
        assert!(not_found(&gone));
        let closed = etcd_client::Error::LeaseKeepAliveError("channel closed".into());
        assert!(!not_found(&closed));
        assert!(!not_found(&etcd_client::Error::InvalidArgs(
            "requested lease not found".into()
        )));
    }

    #[test]
    fn start_nonces_differ_between_starts() {
        assert_ne!(start_nonce(), start_nonce());
    }

    fn connection(endpoints: Vec<String>, call_ms: u64, connect_ms: u64) -> Connection {
        Connection {
            endpoints,
            options: ConnectOptions::new(),
            current: 0,
            client: None,
            timeout: Duration::from_millis(call_ms),
            connect_timeout: Duration::from_millis(connect_ms),
        }
    }

    fn get() -> Vec<Op> {
        vec![Op::Get {
            key: "/lifeboat/test/epoch".into(),
        }]
    }

    #[tokio::test]
    async fn a_call_tries_each_member_once_and_fails_with_the_last_members_error() {
        // Ports nothing listens on.
        let closed: Vec<String> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                format!("http://{}", l.local_addr().unwrap())
            })
            .collect();
        let mut c = connection(closed.clone(), 1_000, 1_000);
        let t = Instant::now();
        let e = c.run(&get()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(e.starts_with(&closed[2]), "{e}");
        // Back at the first member, without a client: the next call connects anew.
        assert_eq!(c.current, 0);
        assert!(c.client.is_none());
    }

    #[tokio::test]
    async fn a_member_that_accepts_and_never_answers_is_left_within_the_call_time_limit() {
        // Accepts connections and reads nothing: a member cut off mid-call, or a black hole.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let endpoints = vec![format!("http://{addr}"), format!("http://{addr}")];
        let mut c = connection(endpoints, 300, 200);
        let t = Instant::now();
        let e = c.run(&get()).await.unwrap_err();
        let took = t.elapsed();
        // Two members, each at most its connection and call limits.
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(2 * 500 + 500), "{took:?}");
        assert!(
            e.contains("answered 0 of 1 operations within 300 ms"),
            "{e}"
        );
        held.abort();
    }
}
