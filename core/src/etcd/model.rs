//! A model of etcd for the simulator and the tests: a linearizable key-value store with
//! revisions and TTL leases, on one clock (the leader's). A leader change resets every lease's
//! timer to its full TTL, as etcd's new leader does. Deterministic: ordered maps only.

use super::{Answer, Kv, Op};
use crate::ids::Millis;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Store {
    revision: i64,
    kvs: BTreeMap<String, Kv>,
    /// Lease ID -> (TTL in seconds, expiry on the leader's clock).
    leases: BTreeMap<i64, (u64, Millis)>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    /// The current value of a key (for oracles and tests).
    pub fn get(&self, key: &str) -> Option<&Kv> {
        self.kvs.get(key)
    }

    /// Expire every lease whose time ran out at `now`, with its keys.
    pub fn expire(&mut self, now: Millis) {
        let gone: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, (_, expiry))| *expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.revoke(id);
        }
    }

    /// The next moment a lease expires.
    pub fn next_expiry(&self) -> Option<Millis> {
        self.leases.values().map(|(_, e)| *e).min()
    }

    /// A new leader: every lease runs its full TTL again from `now`.
    pub fn leader_change(&mut self, now: Millis) {
        for (ttl, expiry) in self.leases.values_mut() {
            *expiry = (*expiry).max(now + *ttl * 1_000);
        }
    }

    fn revoke(&mut self, id: i64) {
        if self.leases.remove(&id).is_some() {
            let keys: Vec<String> = self
                .kvs
                .iter()
                .filter(|(_, kv)| kv.lease == id)
                .map(|(k, _)| k.clone())
                .collect();
            if !keys.is_empty() {
                self.revision += 1;
                for k in keys {
                    self.kvs.remove(&k);
                }
            }
        }
    }

    /// Apply one operation at `now` (after expiring leases).
    pub fn apply(&mut self, now: Millis, op: &Op) -> Result<Answer, String> {
        self.expire(now);
        match op {
            Op::Get { key } => Ok(Answer::Kv(self.kvs.get(key).cloned())),
            Op::Grant { lease, ttl_s } => {
                if *lease <= 0 {
                    return Err("etcdserver: lease ID must be positive".into());
                }
                if self.leases.contains_key(lease) {
                    return Err("etcdserver: lease already exists".into());
                }
                self.leases.insert(*lease, (*ttl_s, now + ttl_s * 1_000));
                Ok(Answer::Granted)
            }
            Op::KeepAlive { lease } => match self.leases.get_mut(lease) {
                Some((ttl, expiry)) => {
                    *expiry = now + *ttl * 1_000;
                    Ok(Answer::Alive { ttl_s: *ttl as i64 })
                }
                None => Ok(Answer::Alive { ttl_s: 0 }),
            },
            Op::TimeToLive { lease } => Ok(Answer::Ttl {
                remaining_s: self.leases.get(lease).map_or(-1, |(_, expiry)| {
                    (expiry.saturating_sub(now) / 1_000) as i64
                }),
            }),
            Op::Revoke { lease } => {
                self.revoke(*lease);
                Ok(Answer::Revoked)
            }
            Op::Txn { when, then } => {
                let holds = when
                    .iter()
                    .all(|(key, rev)| self.kvs.get(key).map_or(0, |kv| kv.mod_revision) == *rev);
                if !holds {
                    return Ok(Answer::Txn { succeeded: false });
                }
                if let Some(p) = then
                    .iter()
                    .find(|p| p.lease != 0 && !self.leases.contains_key(&p.lease))
                {
                    return Err(format!(
                        "etcdserver: requested lease not found (lease {} of {})",
                        p.lease, p.key
                    ));
                }
                if !then.is_empty() {
                    self.revision += 1;
                }
                for p in then {
                    self.kvs.insert(
                        p.key.clone(),
                        Kv {
                            value: p.value.clone(),
                            mod_revision: self.revision,
                            lease: p.lease,
                        },
                    );
                }
                Ok(Answer::Txn { succeeded: true })
            }
        }
    }

    /// Apply a call's operations in order at `now`, stopping at the first error.
    pub fn run(&mut self, now: Millis, ops: &[Op]) -> Result<Vec<Answer>, String> {
        ops.iter().map(|op| self.apply(now, op)).collect()
    }
}
