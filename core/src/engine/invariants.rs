//! The site engine's own consistency, asserted after every input in builds with debug
//! assertions (`cargo test`: the core's tests, the simulator's seeds and scenarios, the fuzz
//! bodies). A rule broken by an input panics at that input, with the rule's name, instead of
//! surfacing later as a wrong decision.

use super::chain::order;
use super::{OpPurpose, Role, SiteEngine};

/// Above this many databases only the checks that cost nothing per database run (the core's
/// scale tests drive 10,000 databases; the simulator a handful).
const FULL_CHECK_MAX_DBS: usize = 256;

impl SiteEngine {
    pub(super) fn check_invariants(&self) {
        let st = &self.st;
        assert!(
            st.ready.len() <= st.dbs.len(),
            "invariant: more databases wait for a restore slot ({}) than exist ({})",
            st.ready.len(),
            st.dbs.len()
        );
        assert_eq!(
            st.writes.len(),
            st.dbs.len(),
            "invariant: one write position per database"
        );
        if matches!(st.role, Role::Primary) {
            assert_eq!(
                st.holder, self.me,
                "invariant: a primary holds the epoch it writes under"
            );
        }
        if st.dbs.len() > FULL_CHECK_MAX_DBS {
            return;
        }
        let mut waiting = vec![0usize; st.dbs.len()];
        for db in &st.ready {
            if let Some(w) = waiting.get_mut(db.0 as usize) {
                *w += 1;
            }
        }
        let mut in_flight = 0u32;
        for (i, d) in st.dbs.iter().enumerate() {
            // The chain is kept in chain order without duplicates: `next` and `insert` rely on it.
            assert!(
                d.pending
                    .windows(2)
                    .all(|w| order(&w[0].meta) <= order(&w[1].meta)
                        && w[0].meta.key != w[1].meta.key),
                "invariant: db {i}'s waiting artifacts are in chain order, each once"
            );
            if let Some((op, key)) = d.in_flight {
                in_flight += 1;
                let entry = st.ops.get(&op);
                assert!(
                    entry.is_some_and(|e| e.purpose == OpPurpose::Restore { db: super::DbId(i as u32) }),
                    "invariant: db {i}'s restore in flight ({op:?}, {key:?}) is an outstanding restore of it"
                );
            }
            assert!(
                waiting[i] == usize::from(d.queued),
                "invariant: db {i} is queued ({}) exactly when it waits for a slot once ({})",
                d.queued,
                waiting[i]
            );
            // A drill restores its chain from a full backup.
            if let Some(first) = d.drill_chain.first() {
                assert!(
                    first.key.kind == crate::artifact::ArtifactKind::Full,
                    "invariant: db {i}'s drill chain starts with a full backup"
                );
            }
        }
        assert_eq!(
            st.restoring, in_flight,
            "invariant: the restore slots taken are the databases with a restore in flight"
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::engine::SiteEngine;
    use crate::protocol::Input;
    use crate::SiteId;

    fn engine() -> SiteEngine {
        let cfg = Config {
            databases: vec!["sales".into(), "stock".into()],
            ..Config::default()
        };
        cfg.validate().unwrap();
        let mut e = SiteEngine::new(cfg, SiteId(1));
        e.handle(0, Input::Tick);
        e
    }

    #[test]
    fn a_consistent_engine_passes() {
        engine().check_invariants();
    }

    #[test]
    #[should_panic(expected = "invariant: the restore slots taken")]
    fn a_restore_slot_taken_without_a_restore_in_flight_is_caught() {
        let mut e = engine();
        e.st.restoring = 1;
        e.check_invariants();
    }

    #[test]
    #[should_panic(expected = "exactly when it waits for a slot")]
    fn a_database_queued_twice_is_caught() {
        let mut e = engine();
        e.st.dbs[0].queued = true;
        e.st.ready.push_back(crate::DbId(0));
        e.st.ready.push_back(crate::DbId(0));
        e.check_invariants();
    }
}
