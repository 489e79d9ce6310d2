//! The witness on etcd in the simulated world (`world.witness = "etcd"`).
//!
//! The third node is no arbiter process: it is an etcd cluster, `lifeboat_core::etcd::model::
//! Store` (linearizable, TTL leases) on the node's clock (the leader's), initialized as
//! `lifeboat witness init` does (`etcd::init_ops`). Each site's agent owns an
//! `lifeboat_core::etcd::EtcdWitness` (a new one, with a new nonce, whenever the agent
//! restarts). When a site engine sends a witness message to `Peer::Arbiter`:
//!
//! 1. `EtcdWitness::request(msg)` gives a `Call`; the call travels over the simulated link to
//!    the etcd node (cut links, the node being down — quorum lost —, loss, latency and
//!    reordering act on it as on any message; it is never duplicated: one gRPC connection);
//! 2. on arrival it is applied to the store at once, all its operations at one instant of the
//!    leader's clock (`Store::run`), unless a leader election is under way (not applied, never
//!    answered); `witness_slow` holds it before applying and before answering;
//! 3. its answers travel back (`witness_answer_lost` drops them after the call applied);
//! 4. the site hands them to `EtcdWitness::answer`: another `Call` makes another trip, a
//!    `Reply` is fed to the engine as `Input::Message { from: Peer::Arbiter }`, `Nothing` feeds
//!    nothing (traced). A call without an answer after `lease.arbiter_timeout_ms` is answered
//!    `Err` (timed out) — it may still have been applied. Calls of one site run concurrently,
//!    as requests on one gRPC connection do; a site's process that restarts drops its calls in
//!    flight (their answers find nobody), though a call already sent may still be applied.
//!
//! Leases expire on the leader's clock even without requests: the node wakes at the store's
//! `next_expiry`. A leader change (`etcd_leader_change`, and quorum coming back after
//! `arbiter_loss`) freezes expiry during the election and then runs every lease's full TTL
//! again (`Store::leader_change`).

use crate::net::ARBITER;
use crate::node::Etcd;
use crate::world::{Ev, World};
use lifeboat_core::etcd::{Answer, Call, EtcdWitness, Keys, Next, Op, Record};
use lifeboat_core::protocol::{Input, Message, Peer};
use lifeboat_core::{Config, Millis, SiteId};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The deployment's key prefix in the simulated etcd.
pub const PREFIX: &str = "/lifeboat/sim";

/// A call waiting for its answers at a site.
struct Pending {
    call: Call,
    /// The engine's message whose translation this call is part of.
    origin: Message,
    /// When the translation's first call was sent.
    chain_start: Millis,
}

/// A call on its way to etcd.
pub struct CallEv {
    pub ops: Vec<Op>,
    pub origin: Message,
    /// When the first call of the same translation was sent (real time).
    pub chain_start: Millis,
}

/// The store's epoch record and liveness key at one instant (for the oracles).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    pub record: Option<Record>,
    /// `alive`: the record it names, its lease, its mod revision.
    pub alive: Option<(Record, i64, i64)>,
}

impl Snap {
    pub fn of(e: &Etcd) -> Snap {
        Snap {
            record: e.record(),
            alive: e.alive().map(|(r, lease)| {
                let rev = e.store.get(&e.keys.alive()).map_or(0, |kv| kv.mod_revision);
                (r, lease, rev)
            }),
        }
    }
}

/// Answers on their way back to a site.
pub struct AnswerEv {
    pub answers: Result<Vec<Answer>, String>,
    /// The store right after the call applied.
    pub after: Snap,
}

/// The etcd side of the world: the sites' translations, calls in flight, the witness faults,
/// and what the oracles remember of the store.
pub struct EtcdSim {
    pub witness: Vec<EtcdWitness>,
    pending: [BTreeMap<u64, Pending>; 2],
    next_id: u64,
    /// Nonces for restarted agents (stream 5).
    nonces: ChaCha8Rng,
    /// The witness faults' draws (stream 6).
    rng: ChaCha8Rng,
    /// Leader elections under way (`etcd_leader_change`).
    pub electing: u32,
    /// `witness_slow` faults: (fault, longest hold).
    pub slow: Vec<(usize, Millis)>,
    /// `witness_answer_lost` faults: (fault, probability).
    pub lost: Vec<(usize, f64)>,
    /// The oracles' memory of the store (`arbiter_epochs`, `handoff_heard` in etcd mode).
    pub words: crate::oracle::EtcdWords,
    /// `world.etcd_primary_first`: the site whose agent waits for the initial primary's first
    /// grant before it starts.
    pub held_boot: Option<usize>,
}

impl EtcdSim {
    pub fn new(cfg: &Config, seed: u64) -> EtcdSim {
        let mut nonces = crate::world::stream(seed, 5);
        let witness = (0..2)
            .map(|s| EtcdWitness::new(cfg, SiteId(s as u16), PREFIX, nonces.gen()))
            .collect();
        EtcdSim {
            witness,
            pending: Default::default(),
            next_id: 1,
            nonces,
            rng: crate::world::stream(seed, 6),
            electing: 0,
            slow: Vec::new(),
            lost: Vec::new(),
            words: Default::default(),
            held_boot: None,
        }
    }
}

/// The key without the deployment's prefix.
fn short<'a>(keys: &Keys, key: &'a str) -> &'a str {
    key.strip_prefix(keys.prefix.as_str())
        .and_then(|k| k.strip_prefix('/'))
        .unwrap_or(key)
}

fn lease_text(lease: i64) -> String {
    format!("L{:06x}", lease & 0xFF_FFFF)
}

fn value_text(v: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(v))
}

/// One operation, on one short line.
pub fn op_text(keys: &Keys, op: &Op) -> String {
    match op {
        Op::Get { key } => format!("get {}", short(keys, key)),
        Op::Grant { lease, ttl_s } => format!("grant {} {ttl_s}s", lease_text(*lease)),
        Op::KeepAlive { lease } => format!("keepalive {}", lease_text(*lease)),
        Op::TimeToLive { lease } => format!("ttl? {}", lease_text(*lease)),
        Op::Revoke { lease } => format!("revoke {}", lease_text(*lease)),
        Op::Txn { when, then } => {
            let when: Vec<String> = when
                .iter()
                .map(|(k, rev)| format!("{}@{rev}", short(keys, k)))
                .collect();
            let then: Vec<String> = then
                .iter()
                .map(|p| {
                    let lease = if p.lease != 0 {
                        format!(" {}", lease_text(p.lease))
                    } else {
                        String::new()
                    };
                    format!("{}={}{lease}", short(keys, &p.key), value_text(&p.value))
                })
                .collect();
            format!("txn if [{}] put [{}]", when.join(" "), then.join(", "))
        }
    }
}

/// One answer, on one short line.
pub fn answer_text(a: &Answer) -> String {
    match a {
        Answer::Kv(None) => "none".into(),
        Answer::Kv(Some(kv)) => {
            let lease = if kv.lease != 0 {
                format!(" {}", lease_text(kv.lease))
            } else {
                String::new()
            };
            format!("{}@{}{lease}", value_text(&kv.value), kv.mod_revision)
        }
        Answer::Granted => "granted".into(),
        Answer::Alive { ttl_s } => format!("alive {ttl_s}s"),
        Answer::Ttl { remaining_s } => format!("ttl {remaining_s}s"),
        Answer::Txn { succeeded } => format!("txn {}", if *succeeded { "ok" } else { "failed" }),
        Answer::Revoked => "revoked".into(),
    }
}

fn answers_text(a: &Result<Vec<Answer>, String>) -> String {
    match a {
        Ok(v) => v.iter().map(answer_text).collect::<Vec<_>>().join("; "),
        Err(e) => format!("error: {e}"),
    }
}

fn answers_fp(a: &Result<Vec<Answer>, String>) -> u64 {
    match a {
        Err(e) => crate::trace::mix(&[0xE5, e.len() as u64]),
        Ok(v) => crate::trace::mix(
            &v.iter()
                .map(|a| match a {
                    Answer::Kv(None) => 1,
                    Answer::Kv(Some(kv)) => crate::trace::mix(&[2, kv.mod_revision as u64]),
                    Answer::Granted => 3,
                    Answer::Alive { ttl_s } => crate::trace::mix(&[4, *ttl_s as u64]),
                    Answer::Ttl { remaining_s } => crate::trace::mix(&[5, *remaining_s as u64]),
                    Answer::Txn { succeeded } => 6 + u64::from(*succeeded),
                    Answer::Revoked => 8,
                })
                .collect::<Vec<_>>(),
        ),
    }
}

impl World {
    /// The witness is etcd, and it is neither electing a leader nor slow nor losing answers
    /// (always true with the built-in arbiter): the oracles that promise answers from a
    /// reachable witness hold only then.
    pub fn witness_serving(&self) -> bool {
        self.etcd
            .as_ref()
            .is_none_or(|e| e.electing == 0 && e.slow.is_empty() && e.lost.is_empty())
    }

    fn etcd_node(&self) -> &Etcd {
        self.nodes[ARBITER]
            .engine
            .etcd()
            .expect("the witness node is etcd")
    }

    fn etcd_snap(&self) -> Snap {
        Snap::of(self.etcd_node())
    }

    /// Whether node `n`'s first start waits for the initial primary's first grant
    /// (`world.etcd_primary_first`); notes it when so.
    pub fn etcd_holds_boot(&mut self, n: usize) -> bool {
        let primary = self.cfg.initial_primary_id().0 as usize;
        let hold = self.params.etcd_primary_first && self.cfg.arbiter && n < 2 && n != primary;
        match self.etcd.as_mut() {
            Some(e) if hold => {
                e.held_boot = Some(n);
                true
            }
            _ => false,
        }
    }

    /// Start the held agent: the initial primary was granted (`granted`), or it waited a minute
    /// past its own start time.
    pub fn etcd_release_boot(&mut self, granted: bool) {
        let Some(n) = self.etcd.as_ref().and_then(|e| e.held_boot) else {
            return;
        };
        if !granted && self.now < self.boot[n] + 60_000 {
            return;
        }
        if let Some(e) = self.etcd.as_mut() {
            e.held_boot = None;
        }
        let at = (self.now + 1).max(self.boot[n]);
        self.q.push(at, Ev::Boot { node: n });
    }

    /// `lifeboat witness init`: the deployment's keys, before anything runs.
    pub fn etcd_init(&mut self) {
        let local = self.nodes[ARBITER].clock.local(0);
        let cfg = self.cfg.clone();
        let Some(node) = self.nodes[ARBITER].engine.etcd_mut() else {
            return;
        };
        // The initial primary's lease starts at init, as an arbiter's does at its start.
        let ops = lifeboat_core::etcd::init_ops(&cfg, &node.keys, 1);
        let init = node.store.run(local, &ops);
        let record = node.record();
        if let Some(e) = self.etcd.as_mut() {
            if let Some(r) = record {
                e.words.holders.insert(r.epoch, r.holder.0 as usize);
            }
        }
        if !matches!(
            init.as_deref(),
            Ok([Answer::Granted, Answer::Txn { succeeded: true }])
        ) || record.is_none()
        {
            self.violation(
                "engine_panic",
                format!("etcd: `witness init` did not create the keys: {init:?}"),
            );
        }
    }

    /// A site engine sent `msg` to the witness.
    pub fn etcd_request(&mut self, site: usize, msg: Message) {
        let Some(e) = self.etcd.as_mut() else { return };
        match e.witness[site].request(msg.clone()) {
            Some(call) => self.etcd_send(site, msg, call, self.now),
            None => {
                let name = self.node_name(site);
                self.trace.note(self.now, || {
                    format!("{name}: not a witness request, not sent to etcd: {msg:?}")
                });
            }
        }
    }

    /// The one-way delay of a message sent now on `from -> to`, drawn as `send` draws it
    /// (`None`: the link is cut or the message is lost). Never duplicated.
    fn wire(&mut self, from: usize, to: usize) -> Option<Millis> {
        if !self.net.up(from, to) {
            return None;
        }
        if !self.net.faulty() {
            let base = self.net.base_latency.max(1);
            let at = (self.now + base + self.rng.net.gen_range(0..=base / 2))
                .max(self.net.last_at[from][to]);
            self.net.last_at[from][to] = at;
            return Some(at - self.now);
        }
        let p_loss = self.net.p_loss();
        if p_loss > 0.0 && self.rng.net.gen_bool(p_loss) {
            return None;
        }
        Some(self.net.delay(&mut self.rng.net))
    }

    fn etcd_send(&mut self, site: usize, origin: Message, call: Call, chain_start: Millis) {
        let timeout = self.cfg.lease.arbiter_timeout_ms.max(1);
        let inc = self.nodes[site].inc;
        let Some(e) = self.etcd.as_mut() else { return };
        let id = e.next_id;
        e.next_id += 1;
        let ops = call.ops.clone();
        e.pending[site].insert(
            id,
            Pending {
                call,
                origin: origin.clone(),
                chain_start,
            },
        );
        self.out.etcd_calls += 1;
        self.trace
            .add(&[self.now, 0xE7C0, site as u64, id, ops.len() as u64]);
        if self.trace.enabled() {
            let name = self.node_name(site);
            let keys = self.etcd_node().keys.clone();
            let text: Vec<String> = ops.iter().map(|o| op_text(&keys, o)).collect();
            self.trace.note(self.now, || {
                format!("{name} -> etcd #{id} for {origin:?}: {}", text.join("; "))
            });
        }
        self.q
            .push(self.now + timeout, Ev::EtcdTimeout { site, inc, id });
        match self.wire(site, ARBITER) {
            Some(d) => self.q.push(
                self.now + d,
                Ev::EtcdCall {
                    site,
                    inc,
                    id,
                    call: Box::new(CallEv {
                        ops,
                        origin,
                        chain_start,
                    }),
                    held: None,
                },
            ),
            None => self
                .trace
                .note(self.now, || format!("etcd #{id}: lost on the way to etcd")),
        }
    }

    /// A call reaches etcd (`held`: after `witness_slow` held it, with the answer's own hold).
    pub fn etcd_arrive(
        &mut self,
        site: usize,
        inc: u32,
        id: u64,
        call: Box<CallEv>,
        held: Option<Millis>,
    ) {
        let up = self.nodes[ARBITER].up;
        let electing = self.etcd.as_ref().is_some_and(|e| e.electing > 0);
        if held.is_none() && !self.net.up(site, ARBITER) {
            return self
                .trace
                .note(self.now, || format!("etcd #{id}: the link to etcd is cut"));
        }
        if !up || electing {
            let why = if up {
                "a leader election is under way"
            } else {
                "etcd has no quorum"
            };
            return self
                .trace
                .note(self.now, || format!("etcd #{id}: not applied, {why}"));
        }
        if held.is_none() {
            self.oracle.delivered(site, ARBITER, self.now);
        }
        let answer_hold = match held {
            Some(h) => h,
            None => {
                let Some(e) = self.etcd.as_mut() else { return };
                let longest = e.slow.iter().map(|s| s.1).max().unwrap_or(0);
                if longest > 0 {
                    let d = e.rng.gen_range(0..=longest);
                    let first = e.rng.gen_range(0..=d);
                    if first > 0 {
                        self.trace.note(self.now, || {
                            format!("etcd #{id}: slow, applied {first} ms late")
                        });
                        self.q.push(
                            self.now + first,
                            Ev::EtcdCall {
                                site,
                                inc,
                                id,
                                call,
                                held: Some(d - first),
                            },
                        );
                        return;
                    }
                    d
                } else {
                    0
                }
            }
        };
        self.etcd_apply(site, inc, id, *call, answer_hold);
    }

    fn etcd_apply(&mut self, site: usize, inc: u32, id: u64, call: CallEv, answer_hold: Millis) {
        let local = self.nodes[ARBITER].clock.local(self.now);
        let before = self.etcd_snap();
        let Some(node) = self.nodes[ARBITER].engine.etcd_mut() else {
            return;
        };
        let answers = node.store.run(local, &call.ops);
        let after = self.etcd_snap();
        self.trace
            .add(&[self.now, 0xE7C1, site as u64, id, answers_fp(&answers)]);
        if self.trace.enabled() {
            let text = answers_text(&answers);
            let from = self.node_name(site);
            self.trace.note(self.now, || {
                format!(
                    "etcd <- #{id} from {from}, applied (leader's clock {}): {text}",
                    crate::outcome::clock_text(local)
                )
            });
        }
        self.check_etcd_apply(site, &call, &answers, before, after, local);
        self.rearm(ARBITER);
        let lost = {
            let Some(e) = self.etcd.as_mut() else { return };
            let p = 1.0 - e.lost.iter().fold(1.0, |a, x| a * (1.0 - x.1));
            p > 0.0 && e.rng.gen_bool(p.min(1.0))
        };
        if lost {
            return self.trace.note(self.now, || {
                format!("etcd #{id}: applied, its answer lost (witness_answer_lost)")
            });
        }
        let Some(d) = self.wire(ARBITER, site) else {
            return self.trace.note(self.now, || {
                format!("etcd #{id}: answer lost on the way back")
            });
        };
        self.q.push(
            self.now + answer_hold + d,
            Ev::EtcdAnswer {
                site,
                inc,
                id,
                answer: Box::new(AnswerEv { answers, after }),
            },
        );
    }

    /// etcd's answers reach the site.
    pub fn etcd_answer(&mut self, site: usize, inc: u32, id: u64, a: AnswerEv) {
        if !self.net.up(ARBITER, site) || !self.node_reachable(site) || self.nodes[site].inc != inc
        {
            return self.trace.note(self.now, || {
                format!("etcd #{id}: the answer finds no one (link cut or agent restarted)")
            });
        }
        self.oracle.delivered(ARBITER, site, self.now);
        let Some(e) = self.etcd.as_mut() else { return };
        let Some(p) = e.pending[site].remove(&id) else {
            return self.trace.note(self.now, || {
                format!("etcd #{id}: answered after the agent's timeout, dropped")
            });
        };
        let AnswerEv { answers, after } = a;
        let next = e.witness[site].answer(p.call, answers);
        self.etcd_next(site, id, p.origin, p.chain_start, next, Some(after));
    }

    /// No answer to a call in time: the agent's etcd client gives up on it.
    pub fn etcd_timeout(&mut self, site: usize, inc: u32, id: u64) {
        if self.nodes[site].inc != inc || !self.nodes[site].up {
            return;
        }
        let timeout = self.cfg.lease.arbiter_timeout_ms;
        let Some(e) = self.etcd.as_mut() else { return };
        let Some(p) = e.pending[site].remove(&id) else {
            return;
        };
        let next = e.witness[site].answer(
            p.call,
            Err(format!(
                "no answer within {} (it may have been applied)",
                lifeboat_scenarios::format_span(timeout)
            )),
        );
        self.etcd_next(site, id, p.origin, p.chain_start, next, None);
    }

    fn etcd_next(
        &mut self,
        site: usize,
        id: u64,
        origin: Message,
        chain_start: Millis,
        next: Next,
        after: Option<Snap>,
    ) {
        let name = self.node_name(site);
        match next {
            Next::Call(call) => self.etcd_send(site, origin, call, chain_start),
            Next::Reply(msg) => {
                if matches!(msg, Message::Granted { .. }) {
                    self.etcd_release_boot(true);
                }
                self.trace.add(&[self.now, 0xE7C2, site as u64, id]);
                self.check_etcd_reply(site, &origin, &msg, after);
                self.feed(
                    site,
                    Input::Message {
                        from: Peer::Arbiter,
                        msg,
                    },
                    None,
                );
            }
            Next::Nothing(why) => {
                self.trace.add(&[self.now, 0xE7C3, site as u64, id]);
                self.trace.note(self.now, || {
                    format!("{name}: etcd #{id} ends without an answer for the engine: {why}")
                });
            }
        }
    }

    /// The etcd node's own input: a wake at the next lease expiry, its first start, or quorum
    /// coming back after a loss (a new leader: every lease runs its full TTL again).
    pub fn etcd_tick(&mut self, input: Input) {
        let local = self.nodes[ARBITER].clock.local(self.now);
        if matches!(input, Input::Restarted) {
            self.etcd_leader_change(local);
        }
        if !self.nodes[ARBITER].up || self.etcd.as_ref().is_some_and(|e| e.electing > 0) {
            // No leader, no expiry: the election's end runs the leases again.
            return;
        }
        let before = self.etcd_snap();
        if let Some(node) = self.nodes[ARBITER].engine.etcd_mut() {
            node.store.expire(local);
        }
        let after = self.etcd_snap();
        if before != after {
            self.trace.add(&[self.now, 0xE7C4]);
            self.trace.note(self.now, || {
                format!(
                    "etcd: the holder's lease expired at {} ({:?} gone)",
                    crate::outcome::clock_text(local),
                    before.alive.map(|a| a.0)
                )
            });
        }
        self.rearm(ARBITER);
    }

    /// A new etcd leader at the leader's time `local`.
    fn etcd_leader_change(&mut self, local: Millis) {
        if let Some(node) = self.nodes[ARBITER].engine.etcd_mut() {
            node.store.leader_change(local);
        }
        if let Some(e) = self.etcd.as_mut() {
            e.words.leader_change = Some(local);
        }
        self.out.etcd_leader_changes += 1;
        self.trace.add(&[self.now, 0xE7C5]);
        self.trace.note(self.now, || {
            "etcd: a new leader; every lease runs its full TTL again".into()
        });
    }

    /// `etcd_leader_change` starts (an election of `window` ms: no request applied or answered,
    /// no lease expires) or ends (the new leader runs every lease's TTL again).
    pub fn etcd_election(&mut self, start: bool) {
        let Some(e) = self.etcd.as_mut() else { return };
        if start {
            e.electing += 1;
            self.trace
                .note(self.now, || "etcd: leader election begins".into());
            return;
        }
        e.electing = e.electing.saturating_sub(1);
        if e.electing == 0 {
            let local = self.nodes[ARBITER].clock.local(self.now);
            if self.nodes[ARBITER].up {
                self.etcd_leader_change(local);
            }
            // Expiries that fell due during the election are not due any more (extended).
            self.etcd_tick(Input::Tick);
        }
    }

    /// A site's agent starts again: a new translation with a new nonce, nothing in flight.
    pub fn etcd_site_restarted(&mut self, site: usize) {
        let cfg = self.cfg.clone();
        let Some(e) = self.etcd.as_mut() else { return };
        e.pending[site].clear();
        let nonce = e.nonces.gen();
        e.witness[site] = EtcdWitness::new(&cfg, SiteId(site as u16), PREFIX, nonce);
    }
}

#[cfg(test)]
mod tests {
    use crate::net::ARBITER;
    use crate::spec::{FaultChoice, RunSpec};
    use crate::world::World;
    use lifeboat_core::MINUTE;
    use lifeboat_scenarios::{world_config, FaultMode, FaultSpec, NodeRef, Witness, WorldParams};

    /// The witness faults act: calls are applied, leaders change, nothing is violated.
    #[test]
    fn etcd_with_its_faults_applies_calls_changes_leaders_and_stays_clean() {
        let mut spec = RunSpec::swarm(6.0);
        spec.faults = FaultChoice::Exact(vec![
            FaultMode::EtcdLeaderChange,
            FaultMode::WitnessSlow,
            FaultMode::WitnessAnswerLost,
            FaultMode::ArbiterLoss,
            FaultMode::SiteLoss,
        ]);
        let seeds: Vec<u64> = (0..40)
            .filter(|&s| spec.config_for(s).0.arbiter)
            .take(2)
            .collect();
        for seed in seeds {
            let o = spec.run_once(seed, false);
            assert!(o.ok(), "seed {seed}: {:?}", o.violations);
            assert_eq!(o.witness, "etcd");
            assert!(o.etcd_calls > 1_000, "seed {seed}: {} calls", o.etcd_calls);
            assert!(o.etcd_leader_changes > 0, "seed {seed}");
            assert!(o.restarts > 0, "seed {seed}: quorum never came back");
        }
    }

    /// The oracles judge etcd's leases by the world's time too: a leader whose clock runs twice
    /// as fast as real time (far beyond the drift bound) lets the recovery site take a new epoch
    /// while the old primary, cut from etcd, still writes under its own lease (no fence hook).
    #[test]
    fn a_leader_clock_beyond_the_drift_bound_lets_a_second_writer_in_and_one_writer_sees_it() {
        let mut cfg = world_config();
        cfg.failover.fence_hook = false;
        let params = WorldParams {
            hours: 1.0,
            witness: Witness::Etcd,
            ..WorldParams::default()
        };
        let mut cut = FaultSpec::new(FaultMode::Partition, 30 * MINUTE, 10 * MINUTE);
        cut.from = Some(NodeRef::CurrentPrimary);
        cut.to = Some(NodeRef::Arbiter);
        let clean = World::new(cfg.clone(), params.clone(), 1, vec![cut.clone()], false).run();
        assert!(clean.ok(), "{:?}", clean.violations);
        assert!(clean.failovers > 0, "the cut primary is replaced");
        let mut w = World::new(cfg, params, 1, vec![cut], false);
        w.nodes[ARBITER].clock.set_rate(0, 1_000_000);
        let o = w.run();
        let found: Vec<_> = o.violations.iter().map(|v| v.oracle).collect();
        assert_eq!(found, ["one_writer"], "{:?}", o.violations);
    }
}
