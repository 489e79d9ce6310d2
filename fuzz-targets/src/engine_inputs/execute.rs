//! Executing what the engines ask for: the shared fake executor, with the fuzzer deciding every
//! command's outcome.

use super::*;
use lifeboat_testkit::{failure, Backup, Done, Model, Ship};

impl World<'_> {
    /// A command from a site: check restores, then keep it for the fuzzer to execute.
    pub(super) fn command(&mut self, site: usize, cmd: Command) {
        match &cmd {
            Command::Restore { op, artifact } => self.issued_restore(site, *op, artifact, false),
            Command::Reseed { op, full } => self.issued_restore(site, *op, full, true),
            _ => {}
        }
        if lifeboat_testkit::reports(&cmd) {
            push(&mut self.cmds, (site, cmd));
        }
    }

    /// Execute the `i`th outstanding command; `outcome` 0 is success all the way.
    pub(super) fn execute(&mut self, i: usize, outcome: u8) {
        let (site, cmd) = self.cmds.remove(i);
        self.outcome = outcome;
        lifeboat_testkit::execute(self, site, cmd);
    }

    pub(super) fn receive(&mut self, to: usize, input: Input) {
        if self.receipts.len() < MAX_POOL {
            self.receipts.push((to, input.clone()));
        }
        self.feed(to, input);
    }

    /// A completion reaches the engine. A restore's success is taken into account at once.
    fn completed(&mut self, site: usize, op: OpId, result: Result<(), Failure>) {
        let ok = result.is_ok();
        let awaited = self.restores[site].remove(&op);
        self.feed(site, Input::Completed { op, result });
        let Some(Outstanding { db, meta }) = awaited else {
            return;
        };
        let engine = &self.sites[site];
        let Some(pos) = engine.db(meta.key.db).and_then(|d| d.position) else {
            return; // forgotten on purpose (rebuild): the database is recreated anyway
        };
        // A successful restore always counts, also when an epoch change quarantined its
        // artifact meanwhile (the engine then rebuilds the copy).
        assert!(
            !(ok && pos < meta.key.lsn_end),
            "site {site} database {db}: the successful {op} ({meta:?}) was not taken into \
             account: the engine is at {pos:?}"
        );
    }
}

/// The fuzzed world as the shared executor sees it: reports reach the engines at once; the
/// current command's `outcome` byte decides what happens.
impl Model for World<'_> {
    type When = ();

    fn deliver(&mut self, site: usize, _: (), inputs: Vec<Input>) {
        for input in inputs {
            match input {
                Input::ArtifactReceived { .. } => self.receive(site, input),
                Input::Completed { op, result } => self.completed(site, op, result),
                input => self.feed(site, input),
            }
        }
    }

    fn completes(&mut self, _: usize, _: OpId) -> Done<()> {
        if self.outcome % 8 != 7 {
            Done::ok(())
        } else {
            Done::At((), Err(failure(1, "command failed", false)))
        }
    }

    fn archive(&mut self, _: usize, _: &ArtifactMeta) -> Option<((), Option<String>)> {
        match self.outcome % 8 {
            7 => Some(((), Some("No space left on device (os error 28)".into()))),
            6 => None, // the agent died before reporting: issued again after a restart
            _ => Some(((), None)),
        }
    }

    fn ship(&mut self, _: usize, _: OpId, artifact: ArtifactMeta, to: SiteId) -> Ship<()> {
        if to.0 >= 2 {
            return Ship::Silent;
        }
        let outcome = self.outcome;
        let good = artifact.checksum;
        match outcome % 8 {
            0..=3 => Ship::Arrives(vec![((), good)]),
            4 => Ship::Arrives(vec![((), Checksum(good.0 ^ (1 + u64::from(outcome))))]),
            5 => Ship::Fails((), "connection reset".into()),
            6 => Ship::Silent, // lost in transit
            _ => Ship::Arrives(vec![((), good); 2]),
        }
    }

    fn restore(&mut self, site: usize, op: OpId, meta: ArtifactMeta, reseed: bool) -> Done<()> {
        // Executors are idempotent per operation: running one again reports what the first
        // run did (a re-issued restore that already succeeded finds nothing left to do).
        if let Some(r) = self.op_results[site].get(&op) {
            return Done::At((), r.clone());
        }
        let outcome = self.outcome % 10;
        let r = match outcome {
            0..=5 | 9 => Ok(()),
            6 | 7 => Err(failure(
                4305,
                "the log in this backup set begins too late",
                false,
            )),
            _ => Err(failure(
                3241,
                "the media family on the device is incorrectly formed",
                true,
            )),
        };
        if r.is_ok() {
            self.cov.restores_applied += 1;
            self.apply(site, &meta, reseed);
        }
        self.op_results[site].insert(op, r.clone());
        if outcome == 9 {
            // Executed, but the agent died before reporting: the engine re-issues it.
            return Done::Later;
        }
        Done::At((), r)
    }

    fn backup(
        &mut self,
        site: usize,
        op: OpId,
        db: Option<DbId>,
        kind: ArtifactKind,
    ) -> Backup<()> {
        let mut found = Vec::new();
        if self.outcome % 8 != 7 {
            let dbs: Vec<usize> = match db {
                Some(d) => vec![d.0 as usize],
                None => (0..self.dbs()).collect(),
            };
            for db in dbs {
                if db < self.dbs() {
                    let epoch = self.sites[site].epoch();
                    if let Some(meta) = self.cut(site, db, kind, epoch) {
                        found.push(((), meta));
                    }
                }
            }
        }
        let done = self.completes(site, op);
        Backup { found, done }
    }

    fn probe(&mut self, _: usize) -> ((), Vec<(ProbeTarget, bool)>) {
        let service = self.outcome & 1 == 0;
        let reach = self.outcome & 2 == 0;
        (
            (),
            vec![(ProbeTarget::Service, service), (ProbeTarget::Site, reach)],
        )
    }

    fn positions(&mut self, site: usize) -> ((), Vec<(DbId, Lsn)>) {
        let writable = self.sites[site].writable();
        let mut positions = Vec::new();
        for db in 0..self.dbs() {
            if writable {
                self.history[db].written += u64::from(self.outcome % 16);
            }
            positions.push((DbId(db as u32), Lsn(self.history[db].written)));
        }
        ((), positions)
    }
}
