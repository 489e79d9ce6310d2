//! The invariants: restores are verified, genuine and in chain order; the database model
//! and the engine agree; epochs only grow.

use super::*;

impl World<'_> {
    pub(super) fn issued_restore(
        &mut self,
        site: usize,
        op: OpId,
        meta: &ArtifactMeta,
        reseed: bool,
    ) {
        let key = meta.key;
        assert!(
            meta.check().is_ok(),
            "site {site} restores an artifact with a malformed manifest: {meta:?}"
        );
        assert!(
            self.verified[site].contains(&(key, meta.checksum)),
            "site {site} restores an artifact that never passed verification there: {meta:?}"
        );
        assert!(
            self.produced.contains(&(key, meta.checksum)),
            "site {site} restores an artifact no primary produced: {meta:?}"
        );
        let db = key.db.0 as usize;
        assert!(db < self.dbs(), "restore of an unknown database: {meta:?}");
        if reseed {
            assert_eq!(
                key.kind,
                ArtifactKind::Full,
                "reseed from a non-full: {meta:?}"
            );
            self.cov.reseeds_issued += 1;
        } else {
            self.cov.restores_issued += 1;
        }
        if self.seen_ops[site].insert(op) {
            if let Some(other) = self.restores[site]
                .iter()
                .find(|(o, r)| r.db == db && **o != op)
                .map(|(o, _)| *o)
            {
                panic!(
                    "site {site} issues {op} for database {db} while {other} is outstanding: \
                     {meta:?}"
                );
            }
            let engine = &self.sites[site];
            if !matches!(engine.role(), Role::Rebuilding | Role::Demoted) {
                let d = engine.db(key.db).expect("valid database");
                let p = d.position;
                let covers = p.is_some_and(|p| key.lsn_start <= p && p < key.lsn_end);
                match (reseed, key.kind) {
                    (true, _) => assert!(
                        p.is_none_or(|p| key.lsn_end > p),
                        "site {site} reseeds database {db} back from {p:?}: {meta:?}"
                    ),
                    (false, ArtifactKind::Full) => assert!(
                        p.is_none(),
                        "site {site} restores a full over position {p:?}: {meta:?}"
                    ),
                    (false, ArtifactKind::Log) => assert!(
                        covers,
                        "site {site} restores a log that does not cover position {p:?}: {meta:?}"
                    ),
                    // On the chain's own full, or on a full of the incremental's own epoch
                    // verified here that the position has passed (logs carried the copy over
                    // it): the chain rule of `ChainState::applies`.
                    (false, ArtifactKind::Incremental) => assert!(
                        covers
                            && meta.base_full.is_some()
                            && (meta.base_full == d.current_full
                                || self.verified[site].iter().any(|(k, _)| {
                                    k.db == key.db
                                        && k.kind == ArtifactKind::Full
                                        && k.epoch == key.epoch
                                        && Some(k.lsn_end) == meta.base_full
                                        && p.is_some_and(|p| k.lsn_end <= p)
                                })),
                        "site {site} restores an incremental that does not apply at {p:?} on \
                         full {:?}: {meta:?}",
                        d.current_full
                    ),
                }
            }
        }
        self.restores[site].insert(op, Outstanding { db, meta: *meta });
    }

    /// The database at `site` executes a restore.
    pub(super) fn apply(&mut self, site: usize, meta: &ArtifactMeta, reseed: bool) {
        let db = meta.key.db.0 as usize;
        let m = &mut self.model[site][db];
        if reseed || meta.key.kind == ArtifactKind::Full {
            m.position = Some(meta.key.lsn_end);
            m.current_full = Some(meta.key.lsn_end);
            return;
        }
        match m.position {
            None => panic!(
                "site {site} database {db}: {:?} applied before any full backup: {meta:?}",
                meta.key.kind
            ),
            // Run again (executors may run a command twice): already applied.
            Some(p) if meta.key.lsn_end <= p => {}
            Some(p) => {
                assert!(
                    meta.key.lsn_start <= p,
                    "site {site} database {db}: a hole between {p:?} and {meta:?}"
                );
                if meta.key.kind == ArtifactKind::Incremental {
                    // Its base is the full this copy started from, or a full of the same epoch
                    // (the same history) that the copy has already passed.
                    let base = meta.base_full;
                    let passed = base.is_some_and(|b| b <= p)
                        && self.produced.iter().any(|(k, _)| {
                            k.db == meta.key.db
                                && k.kind == ArtifactKind::Full
                                && k.epoch == meta.key.epoch
                                && Some(k.lsn_end) == base
                        });
                    assert!(
                        base == m.current_full || passed,
                        "site {site} database {db}: incremental on another full (copy at \
                         {p:?} from full {:?}): {meta:?}",
                        m.current_full
                    );
                }
                m.position = Some(meta.key.lsn_end);
            }
        }
    }

    pub(super) fn check(&mut self) {
        for s in 0..2 {
            let engine = &self.sites[s];
            let role = engine.role();
            assert!(
                engine.epoch() >= self.epochs[s],
                "site {s}: epoch went back from {:?} to {:?}",
                self.epochs[s],
                engine.epoch()
            );
            self.epochs[s] = engine.epoch();
            self.cov.max_epoch = self.cov.max_epoch.max(engine.epoch().0);
            self.cov.roles.insert((s, role.as_str()));
            for db in 0..self.dbs() {
                if self.restores[s].values().any(|r| r.db == db) {
                    continue;
                }
                let Some(p) = engine.db(DbId(db as u32)).and_then(|d| d.position) else {
                    continue; // the engine forgot on purpose (rebuild)
                };
                let m = self.model[s][db];
                assert_eq!(
                    Some(p),
                    m.position,
                    "site {s} database {db}: the engine says restored to {p:?}, the database \
                     is at {:?}",
                    m.position
                );
            }
        }
    }
}
