//! The witness on etcd, Sans-IO: the translation between the engine's witness messages
//! (`Renew`, `Acquire`, `Handoff`, `QueryAt`, `SiteStatus`) and etcd's primitives, and etcd's
//! answers back into `Granted`, `Denied`, `View` and `SiteSeen`. Each site runs one
//! [`EtcdWitness`]; no arbiter process exists. The adapter executes a [`Call`]'s operations in
//! order against etcd (and the simulator against [`model::Store`], a linearizable store with
//! TTL leases), then hands the answers back; the translation decides everything.
//!
//! ## Keys, under a prefix per deployment
//!
//! - `<prefix>/epoch`: the epoch record, `epoch=<n> holder=<site index>`. Only transactions that
//!   compare its mod revision with the one the caller read change it.
//! - `<prefix>/alive`: the holder's liveness, the same text, attached to an etcd lease of
//!   [`EtcdWitness::ttl_s`] (the lease plus the drift margin, rounded up to whole seconds) that
//!   the holder keeps alive. It is gone once the holder stopped renewing for that long (or
//!   revoked it in a hand-off).
//! - `<prefix>/claimed`: the newest epoch a site claimed that the witness did not hand out (a
//!   forced failover took it while the witness was unreachable); every new epoch goes past it.
//! - `<prefix>/seen/<site index>`: each site's presence, attached to a lease of its own that
//!   every request keeps alive: "when did the witness last hear that site".
//! - `<prefix>/deployment`: the deployment's sites, written by `lifeboat witness init`, so a
//!   prefix is never shared by two deployments.
//!
//! ## Why each step is safe
//!
//! - **One writer.** A site holds an epoch only while `alive` names it. A new epoch is written
//!   only by a transaction that finds `alive` absent (mod revision 0) and the record and the
//!   claim unchanged since it read them. `alive` is absent only after the holder's lease expired
//!   on the etcd leader's clock, or was revoked by the holder's own hand-off. The holder counts
//!   its lease from when it *sent* the renewal that led to the keep-alive (the engine's rule for
//!   any witness), minus the drift margin, and etcd's lease runs from when the keep-alive
//!   *arrived*, plus the drift margin in the TTL: the holder fences itself before etcd can let
//!   another site acquire.
//! - **Keep-alive is not conditional.** A renewal reads `alive`, then keeps its lease alive. A
//!   keep-alive that succeeds proves the lease never expired in between, so `alive` was never
//!   absent and nobody acquired; one that fails (TTL 0) rebuilds `alive` through the same
//!   compare-and-create as an acquisition.
//! - **etcd leader changes** extend every lease to a full TTL (the new leader cannot know how
//!   much had run). That only delays another site's acquisition; the holder still fences by
//!   its own deadline. A view's "time since the last renewal" may then read too small by up to
//!   a lease, so a dead primary can look alive for up to one lease longer: the failover waits,
//!   it is never early.
//! - **A slow witness** answers a renewal late: the engine counts the lease from its own send,
//!   so a late grant can only be shorter, never longer. A request that timed out may still have
//!   been applied: nothing is answered, the engine asks again, and the repeated request finds
//!   its own effect (the record names it: an `Acquire` from the holder is granted the epoch it
//!   already holds, a hand-off's target renews the epoch handed to it).
//! - **Lost quorum**: no request completes, nothing is granted, the holder fences by its
//!   deadline and the recovery site sees the witness unreachable and does not fail over.

pub mod model;

use crate::arbiter::MAX_EPOCH_LEAD;
use crate::config::Config;
use crate::ids::{Epoch, Millis, SiteId};
use crate::protocol::{ArbiterView, Message};

/// One etcd operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a key: value, mod revision and lease.
    Get { key: String },
    /// Grant a lease with the ID the translation chose (unique per site and start).
    Grant { lease: i64, ttl_s: u64 },
    /// One keep-alive of a lease; answers its TTL, 0 when the lease is gone.
    KeepAlive { lease: i64 },
    /// A lease's remaining time to live, in whole seconds; -1 when it is gone.
    TimeToLive { lease: i64 },
    /// Revoke a lease (its keys go with it); a lease already gone is not an error.
    Revoke { lease: i64 },
    /// A transaction: when every key's mod revision equals the given one (0: the key is
    /// absent), write every put; otherwise write nothing.
    Txn {
        when: Vec<(String, i64)>,
        then: Vec<Put>,
    },
}

/// A put inside a transaction (`lease` 0: none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    pub key: String,
    pub value: Vec<u8>,
    pub lease: i64,
}

/// A key as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub lease: i64,
}

/// etcd's answer to one [`Op`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Kv(Option<Kv>),
    Granted,
    Alive { ttl_s: i64 },
    Ttl { remaining_s: i64 },
    Txn { succeeded: bool },
    Revoked,
}

/// Operations to run in order; their answers go back to [`EtcdWitness::answer`] with the call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub ops: Vec<Op>,
    plan: Plan,
}

/// What comes of a call's answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Run these operations too.
    Call(Call),
    /// The witness's answer, for the engine (as from `Peer::Arbiter`).
    Reply(Message),
    /// No answer (the engine asks again after its timeout), and why, for the log.
    Nothing(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Plan {
    /// Presence, then the record, `alive`, `claimed`, and (`extra`) one more key.
    Read {
        msg: Message,
        presence: Presence,
        extra: bool,
    },
    /// After the read: this reply once the operations succeeded and `check` holds, else a
    /// denial with `view`.
    Write {
        req: u64,
        reply: Message,
        view: ArbiterView,
        check: Check,
    },
    /// A view waiting for `alive`'s remaining TTL.
    ViewTtl { req: u64, view: ArbiterView },
    /// A `SiteSeen` waiting for the asked site's presence TTL.
    SeenTtl { site: SiteId, req: u64 },
}

/// Which answer decides whether a write's reply stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    None,
    /// The transaction at this index must have succeeded.
    Txn(usize),
    /// The keep-alive at this index must have found the lease alive.
    KeepAlive(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    KeepAlive(i64),
    Granting(i64),
}

/// The epoch record, as `<prefix>/epoch` and `<prefix>/alive` hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub epoch: Epoch,
    pub holder: SiteId,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        format!("epoch={} holder={}", self.epoch.0, self.holder.0).into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        let epoch = parts.next()?.strip_prefix("epoch=")?.parse().ok()?;
        let holder = parts.next()?.strip_prefix("holder=")?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Record {
            epoch: Epoch(epoch),
            holder: SiteId(holder),
        })
    }
}

/// The keys of one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }
    pub fn epoch(&self) -> String {
        format!("{}/epoch", self.prefix)
    }
    pub fn alive(&self) -> String {
        format!("{}/alive", self.prefix)
    }
    pub fn claimed(&self) -> String {
        format!("{}/claimed", self.prefix)
    }
    pub fn seen(&self, site: SiteId) -> String {
        format!("{}/seen/{}", self.prefix, site.0)
    }
    pub fn deployment(&self) -> String {
        format!("{}/deployment", self.prefix)
    }
}

/// What `lifeboat witness init` writes at `<prefix>/deployment`: the sites, in order.
pub fn deployment_value(cfg: &Config) -> Vec<u8> {
    format!("sites={}", cfg.sites.join(",")).into_bytes()
}

/// The operations that create a new deployment's keys: the deployment, and epoch 1 held by the
/// initial primary with its liveness on a lease of [`EtcdWitness::ttl_s`] (`lease`: a new ID),
/// only where neither key exists (an existing prefix is never overwritten). Like an arbiter at
/// its start, the witness thus counts the initial primary as holding for one lease: the recovery
/// site cannot take a new deployment over before the primary's first renewal.
pub fn init_ops(cfg: &Config, keys: &Keys, lease: i64) -> Vec<Op> {
    let record = Record {
        epoch: Epoch(1),
        holder: cfg.initial_primary_id(),
    };
    vec![
        Op::Grant {
            lease,
            ttl_s: EtcdWitness::ttl_s(cfg),
        },
        Op::Txn {
            when: vec![(keys.deployment(), 0), (keys.epoch(), 0)],
            then: vec![
                Put {
                    key: keys.deployment(),
                    value: deployment_value(cfg),
                    lease: 0,
                },
                Put {
                    key: keys.epoch(),
                    value: record.encode(),
                    lease: 0,
                },
                Put {
                    key: keys.alive(),
                    value: record.encode(),
                    lease,
                },
            ],
        },
    ]
}

/// One site's translation.
#[derive(Clone, Debug)]
pub struct EtcdWitness {
    me: SiteId,
    sites: usize,
    lease_ms: Millis,
    ttl_s: u64,
    keys: Keys,
    nonce: u64,
    leases: u64,
    presence: Option<i64>,
}

impl EtcdWitness {
    /// `nonce`: a number the adapter draws at start (lease IDs are unique per site and start).
    pub fn new(cfg: &Config, me: SiteId, prefix: &str, nonce: u64) -> EtcdWitness {
        EtcdWitness {
            me,
            sites: cfg.sites.len(),
            lease_ms: cfg.lease.lease_ms,
            ttl_s: Self::ttl_s(cfg),
            keys: Keys::new(prefix),
            nonce,
            leases: 0,
            presence: None,
        }
    }

    /// etcd's lease TTL for a holder: the lease plus the drift margin, in whole seconds rounded
    /// up (etcd counts leases in seconds), at least 2 (etcd's smallest useful TTL).
    pub fn ttl_s(cfg: &Config) -> u64 {
        (cfg.lease.lease_ms + cfg.drift_margin())
            .div_ceil(1_000)
            .max(2)
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn new_lease(&mut self) -> i64 {
        self.leases += 1;
        let mixed = self
            .nonce
            .wrapping_add(self.leases.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .rotate_left(17)
            ^ u64::from(self.me.0);
        // etcd lease IDs are positive; 0 asks etcd to choose.
        let id = (mixed & 0x7FFF_FFFF_FFFF_FFFF) as i64;
        id.max(1)
    }

    /// A message the engine sent to the witness: the first call of its translation (`None`: not
    /// a witness request).
    pub fn request(&mut self, msg: Message) -> Option<Call> {
        let extra = match &msg {
            Message::SiteStatus { site, .. } => Some(self.keys.seen(*site)),
            Message::Handoff { to, .. } => Some(self.keys.seen(*to)),
            Message::Renew { .. }
            | Message::Acquire { .. }
            | Message::Query { .. }
            | Message::QueryAt { .. } => None,
            _ => return None,
        };
        let mut ops = Vec::new();
        let presence = match self.presence {
            Some(lease) => {
                ops.push(Op::KeepAlive { lease });
                Presence::KeepAlive(lease)
            }
            None => {
                let lease = self.new_lease();
                ops.push(Op::Grant {
                    lease,
                    ttl_s: self.ttl_s,
                });
                ops.push(Op::Txn {
                    when: vec![],
                    then: vec![Put {
                        key: self.keys.seen(self.me),
                        value: b"site".to_vec(),
                        lease,
                    }],
                });
                Presence::Granting(lease)
            }
        };
        ops.push(Op::Get {
            key: self.keys.epoch(),
        });
        ops.push(Op::Get {
            key: self.keys.alive(),
        });
        ops.push(Op::Get {
            key: self.keys.claimed(),
        });
        if let Some(key) = &extra {
            ops.push(Op::Get { key: key.clone() });
        }
        Some(Call {
            ops,
            plan: Plan::Read {
                msg,
                presence,
                extra: extra.is_some(),
            },
        })
    }

    /// etcd's answers to `call` (one per operation, in order), or why it failed.
    pub fn answer(&mut self, call: Call, answers: Result<Vec<Answer>, String>) -> Next {
        let answers = match answers {
            Ok(a) if a.len() == call.ops.len() => a,
            Ok(a) => {
                return Next::Nothing(format!(
                    "etcd answered {} of {} operations",
                    a.len(),
                    call.ops.len()
                ))
            }
            Err(why) => {
                if let Plan::Read { .. } = call.plan {
                    // Whether the presence lease exists (a grant that may not have happened) or
                    // still lives (a keep-alive that may have come too late) is unknown: start
                    // a new one next time. The old one, if any, runs out by itself.
                    self.presence = None;
                }
                return Next::Nothing(format!("etcd did not answer: {why}"));
            }
        };
        match call.plan {
            Plan::Read {
                msg,
                presence,
                extra,
            } => self.after_read(msg, presence, extra, &answers),
            Plan::Write {
                req,
                reply,
                mut view,
                check,
            } => {
                let reason = match check {
                    Check::None => None,
                    Check::Txn(i) => {
                        (!matches!(answers.get(i), Some(Answer::Txn { succeeded: true })))
                            .then_some("another site changed the witness's record first")
                    }
                    Check::KeepAlive(i) => {
                        let alive =
                            matches!(answers.get(i), Some(Answer::Alive { ttl_s }) if *ttl_s > 0);
                        if !alive {
                            view.holder_renewing = false;
                            view.lease_lapsed = true;
                        }
                        (!alive).then_some(
                            "the lease lapsed at the witness before this renewal reached it; the \
                             next renewal takes the epoch again if nobody else did",
                        )
                    }
                };
                match reason {
                    None => Next::Reply(reply),
                    Some(reason) => Next::Reply(Message::Denied {
                        view,
                        req,
                        reason: reason.into(),
                    }),
                }
            }
            Plan::ViewTtl { req, mut view } => {
                if let Some(Answer::Ttl { remaining_s }) = answers.first() {
                    if *remaining_s < 0 {
                        // Expired since the read: the lease lapsed.
                        view.holder_renewing = false;
                        view.lease_lapsed = true;
                    } else {
                        view.since_renewal_ms = Some(self.since_ms(*remaining_s));
                    }
                }
                Next::Reply(Message::View { view, req })
            }
            Plan::SeenTtl { site, req } => {
                let heard_ms_ago = match answers.first() {
                    Some(Answer::Ttl { remaining_s }) if *remaining_s >= 0 => {
                        Some(self.since_ms(*remaining_s))
                    }
                    _ => None,
                };
                Next::Reply(Message::SiteSeen {
                    site,
                    heard_ms_ago,
                    req,
                })
            }
        }
    }

    /// Milliseconds since a lease of [`ttl_s`](Self::ttl_s) was last kept alive, from its
    /// remaining whole seconds (etcd truncates, so this errs towards older).
    fn since_ms(&self, remaining_s: i64) -> Millis {
        let remaining = u64::try_from(remaining_s).unwrap_or(0);
        self.ttl_s.saturating_sub(remaining).saturating_mul(1_000)
    }

    fn after_read(
        &mut self,
        msg: Message,
        presence: Presence,
        extra: bool,
        answers: &[Answer],
    ) -> Next {
        let skip = match presence {
            Presence::KeepAlive(lease) => {
                if !matches!(answers[0], Answer::Alive { ttl_s } if ttl_s > 0) {
                    // Expired (a long partition): a new one on the next request.
                    self.presence = None;
                } else {
                    self.presence = Some(lease);
                }
                1
            }
            Presence::Granting(lease) => {
                self.presence = Some(lease);
                2
            }
        };
        let kv = |i: usize| match answers.get(skip + i) {
            Some(Answer::Kv(kv)) => Ok(kv.clone()),
            other => Err(format!("etcd answered {other:?} to a read")),
        };
        let (record_kv, alive_kv, claimed_kv, extra_kv) =
            match (kv(0), kv(1), kv(2), if extra { kv(3) } else { Ok(None) }) {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
                (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
                    return Next::Nothing(e)
                }
            };
        let Some(record_kv) = record_kv else {
            return Next::Nothing(format!(
                "etcd has no epoch record at {}: create this deployment's keys with \
                 `lifeboat witness init`",
                self.keys.epoch()
            ));
        };
        let Some(record) = Record::decode(&record_kv.value) else {
            return Next::Nothing(format!(
                "the value at {} is not a lifeboat epoch record ({:?}): is the prefix another \
                 program's?",
                self.keys.epoch(),
                String::from_utf8_lossy(&record_kv.value)
            ));
        };
        let alive = match &alive_kv {
            None => None,
            Some(kv) => match Record::decode(&kv.value) {
                Some(r) => Some((r, kv.lease, kv.mod_revision)),
                None => {
                    return Next::Nothing(format!(
                        "the value at {} is not a lifeboat liveness record",
                        self.keys.alive()
                    ))
                }
            },
        };
        let claimed = match &claimed_kv {
            None => None,
            Some(kv) => match std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|t| t.strip_prefix("epoch="))
                .and_then(|n| n.parse().ok())
            {
                Some(n) => Some(Epoch(n)),
                None => {
                    return Next::Nothing(format!(
                        "the value at {} is not a lifeboat claim",
                        self.keys.claimed()
                    ))
                }
            },
        };
        let seen = Seen {
            record,
            record_rev: record_kv.mod_revision,
            alive: alive.map(|(r, _, _)| r),
            alive_lease: alive.map(|(_, l, _)| l),
            alive_rev: alive.map_or(0, |(_, _, rev)| rev),
            claimed,
            claimed_rev: claimed_kv.as_ref().map_or(0, |kv| kv.mod_revision),
        };
        self.decide(msg, &seen, extra_kv)
    }

    fn decide(&mut self, msg: Message, s: &Seen, extra: Option<Kv>) -> Next {
        let view = s.view();
        match msg {
            Message::Query { req } | Message::QueryAt { req, .. } => match s.alive_lease {
                Some(lease) if view.holder_renewing => Next::Call(Call {
                    ops: vec![Op::TimeToLive { lease }],
                    plan: Plan::ViewTtl { req, view },
                }),
                _ => Next::Reply(Message::View { view, req }),
            },
            Message::SiteStatus { site, req } => match extra {
                Some(kv) if kv.lease != 0 => Next::Call(Call {
                    ops: vec![Op::TimeToLive { lease: kv.lease }],
                    plan: Plan::SeenTtl { site, req },
                }),
                _ => Next::Reply(Message::SiteSeen {
                    site,
                    heard_ms_ago: None,
                    req,
                }),
            },
            Message::Renew { epoch, req } => {
                if s.record
                    == (Record {
                        epoch,
                        holder: self.me,
                    })
                {
                    self.hold(req, s)
                } else if epoch > s.record.epoch {
                    self.take_claimed(epoch, req, s)
                } else {
                    self.deny(req, view, "not the holder of the current epoch")
                }
            }
            Message::Acquire { seen, req, .. } => {
                if s.record.holder == self.me && seen <= s.record.epoch {
                    // The holder asks again (a lost answer, or a restart mid-promotion).
                    return self.hold(req, s);
                }
                if seen.0 > s.record.epoch.0.saturating_add(MAX_EPOCH_LEAD) {
                    return self.deny(req, view, TOO_FAR);
                }
                if s.alive.is_some() {
                    return self.deny(
                        req,
                        view,
                        "the holder's lease has not expired (plus the drift margin)",
                    );
                }
                let newest = s.claimed.map_or(0, |c| c.0);
                let epoch = Epoch(s.record.epoch.0.max(seen.0).max(newest).saturating_add(1));
                self.take(epoch, req, s)
            }
            Message::Handoff { epoch, to, req } => {
                let holder_asks = s.record
                    == (Record {
                        epoch,
                        holder: self.me,
                    })
                    && usize::from(to.0) < self.sites
                    && to != self.me;
                let Some(lease) = s
                    .alive_lease
                    .filter(|_| holder_asks && view.holder_renewing)
                else {
                    return self.deny(
                        req,
                        view,
                        "only the holder of the current epoch, while its lease runs, can hand it \
                         off",
                    );
                };
                if extra.is_none() {
                    return self.deny(
                        req,
                        view,
                        "the target has not reached the witness within one lease",
                    );
                }
                let next = Record {
                    epoch: Epoch(epoch.0.saturating_add(1)),
                    holder: to,
                };
                // The target's lease starts now, on a new lease ID the target keeps alive.
                let new_lease = self.new_lease();
                let handed = ArbiterView {
                    epoch: next.epoch,
                    holder: Some(to),
                    holder_renewing: true,
                    lease_lapsed: false,
                    since_renewal_ms: Some(0),
                };
                Next::Call(Call {
                    ops: vec![
                        Op::Grant {
                            lease: new_lease,
                            ttl_s: self.ttl_s,
                        },
                        Op::Txn {
                            when: vec![
                                (self.keys.epoch(), s.record_rev),
                                (self.keys.alive(), s.alive_rev),
                            ],
                            then: self.record_puts(next, new_lease),
                        },
                        Op::Revoke { lease },
                    ],
                    plan: Plan::Write {
                        req,
                        reply: Message::View { view: handed, req },
                        view,
                        check: Check::Txn(1),
                    },
                })
            }
            _ => Next::Nothing("not a witness request".into()),
        }
    }

    /// The record names this site: keep its lease alive, or create `alive` anew if it lapsed
    /// while nobody took the epoch.
    fn hold(&mut self, req: u64, s: &Seen) -> Next {
        let granted = Message::Granted {
            epoch: s.record.epoch,
            lease_ms: self.lease_ms,
            req,
        };
        match (s.alive, s.alive_lease) {
            (Some(a), Some(lease)) if a == s.record => Next::Call(Call {
                ops: vec![Op::KeepAlive { lease }],
                plan: Plan::Write {
                    req,
                    reply: granted,
                    view: s.view(),
                    check: Check::KeepAlive(0),
                },
            }),
            (Some(_), _) => self.deny(
                req,
                s.view(),
                "the witness's liveness key names another epoch than its record",
            ),
            (None, _) => self.take(s.record.epoch, req, s),
        }
    }

    /// `Renew` of an epoch the witness never handed out (a forced failover took it while the
    /// witness was unreachable): granted once nobody holds a lease, as a new epoch of that
    /// number; otherwise refused, and the claim remembered so no later grant reuses the number.
    fn take_claimed(&mut self, epoch: Epoch, req: u64, s: &Seen) -> Next {
        let view = s.view();
        if epoch.0 > s.record.epoch.0.saturating_add(MAX_EPOCH_LEAD) {
            return self.deny(req, view, TOO_FAR);
        }
        if s.claimed.is_some_and(|c| c > epoch) {
            return self.deny(
                req,
                view,
                "a newer epoch was claimed; only its holder can have it",
            );
        }
        if s.alive.is_some() {
            let why = "this witness did not hand out that epoch, and the holder's lease has not \
                       expired (plus the drift margin)";
            if s.claimed.is_some_and(|c| c >= epoch) {
                return self.deny(req, view, why);
            }
            // Remember the claim, then refuse.
            return Next::Call(Call {
                ops: vec![Op::Txn {
                    when: vec![(self.keys.claimed(), s.claimed_rev)],
                    then: vec![Put {
                        key: self.keys.claimed(),
                        value: format!("epoch={}", epoch.0).into_bytes(),
                        lease: 0,
                    }],
                }],
                plan: Plan::Write {
                    req,
                    reply: Message::Denied {
                        view: view.clone(),
                        req,
                        reason: why.into(),
                    },
                    view,
                    check: Check::None,
                },
            });
        }
        self.take(epoch, req, s)
    }

    /// Write `epoch` held by this site, with a new `alive` on a new lease, if nothing changed
    /// since the read and no lease runs.
    fn take(&mut self, epoch: Epoch, req: u64, s: &Seen) -> Next {
        let lease = self.new_lease();
        let record = Record {
            epoch,
            holder: self.me,
        };
        Next::Call(Call {
            ops: vec![
                Op::Grant {
                    lease,
                    ttl_s: self.ttl_s,
                },
                Op::Txn {
                    when: vec![
                        (self.keys.epoch(), s.record_rev),
                        (self.keys.alive(), 0),
                        (self.keys.claimed(), s.claimed_rev),
                    ],
                    then: self.record_puts(record, lease),
                },
            ],
            plan: Plan::Write {
                req,
                reply: Message::Granted {
                    epoch,
                    lease_ms: self.lease_ms,
                    req,
                },
                view: s.view(),
                check: Check::Txn(1),
            },
        })
    }

    fn record_puts(&self, record: Record, lease: i64) -> Vec<Put> {
        vec![
            Put {
                key: self.keys.epoch(),
                value: record.encode(),
                lease: 0,
            },
            Put {
                key: self.keys.alive(),
                value: record.encode(),
                lease,
            },
        ]
    }

    fn deny(&self, req: u64, view: ArbiterView, reason: &str) -> Next {
        Next::Reply(Message::Denied {
            view,
            req,
            reason: reason.into(),
        })
    }
}

const TOO_FAR: &str = "that epoch is further ahead of the witness's than forced failovers can \
                       take it; an operator must check the sites' epochs";

/// What a read found.
struct Seen {
    record: Record,
    record_rev: i64,
    alive: Option<Record>,
    alive_lease: Option<i64>,
    alive_rev: i64,
    claimed: Option<Epoch>,
    claimed_rev: i64,
}

impl Seen {
    fn view(&self) -> ArbiterView {
        let renewing = self.alive == Some(self.record);
        ArbiterView {
            epoch: self.record.epoch,
            holder: Some(self.record.holder),
            holder_renewing: renewing,
            lease_lapsed: self.alive.is_none(),
            since_renewal_ms: None,
        }
    }
}
