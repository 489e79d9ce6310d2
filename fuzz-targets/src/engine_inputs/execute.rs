//! Executing what the engines ask for: the fuzzer decides every command's outcome.

use super::*;

impl World<'_> {
    /// A command from a site: check restores, then keep it for the fuzzer to execute.
    pub(super) fn command(&mut self, site: usize, cmd: Command) {
        match &cmd {
            Command::Restore { op, artifact } => self.issued_restore(site, *op, artifact, false),
            Command::Reseed { op, full } => self.issued_restore(site, *op, full, true),
            _ => {}
        }
        let executes =
            cmd.op().is_some() || matches!(cmd, Command::Probe | Command::SamplePositions);
        if executes {
            push(&mut self.cmds, (site, cmd));
        }
    }

    /// Execute the `i`th outstanding command; `outcome` 0 is success all the way.
    pub(super) fn execute(&mut self, i: usize, outcome: u8) {
        let (site, cmd) = self.cmds.remove(i);
        match cmd {
            Command::Ship { op, artifact, to } => {
                let to = usize::from(to.0);
                if to >= 2 {
                    return;
                }
                let from = SiteId(site as u16);
                let received = |computed| Input::ArtifactReceived {
                    meta: artifact,
                    computed,
                    from,
                };
                match outcome % 8 {
                    0..=3 => self.receive(to, received(artifact.checksum)),
                    4 => {
                        let bad = Checksum(artifact.checksum.0 ^ (1 + u64::from(outcome)));
                        self.receive(to, received(bad));
                    }
                    5 => {
                        let key = artifact.key;
                        let reason = "connection reset".to_string();
                        let input = Input::ShipFailed {
                            op,
                            key,
                            to: SiteId(to as u16),
                            reason,
                        };
                        self.feed(site, input);
                    }
                    6 => {} // lost in transit
                    _ => {
                        self.receive(to, received(artifact.checksum));
                        self.receive(to, received(artifact.checksum));
                    }
                }
            }
            Command::Restore { op, artifact } => self.restored(site, op, &artifact, false, outcome),
            Command::Reseed { op, full } => self.restored(site, op, &full, true, outcome),
            Command::TakeBackup { op, db, kind } => {
                let ok = outcome % 8 != 7;
                if ok {
                    let dbs: Vec<usize> = match db {
                        Some(d) => vec![d.0 as usize],
                        None => (0..self.dbs()).collect(),
                    };
                    for db in dbs {
                        if db < self.dbs() {
                            let epoch = self.sites[site].epoch();
                            if let Some(meta) = self.cut(site, db, kind, epoch) {
                                self.feed(site, Input::ArtifactDiscovered(meta));
                            }
                        }
                    }
                }
                self.complete(site, op, ok);
            }
            Command::Probe => {
                let service = outcome & 1 == 0;
                let reach = outcome & 2 == 0;
                for (target, ok) in [(ProbeTarget::Service, service), (ProbeTarget::Site, reach)] {
                    self.feed(site, Input::Probe { target, ok });
                }
            }
            Command::SamplePositions => {
                let writable = self.sites[site].writable();
                for db in 0..self.dbs() {
                    if writable {
                        self.history[db].written += u64::from(outcome % 16);
                    }
                    let lsn = Lsn(self.history[db].written);
                    let db = DbId(db as u32);
                    self.feed(site, Input::WritePosition { db, lsn });
                }
            }
            other => {
                if let Some(op) = other.op() {
                    self.complete(site, op, outcome % 8 != 7);
                }
            }
        }
    }

    pub(super) fn receive(&mut self, to: usize, input: Input) {
        if self.receipts.len() < MAX_POOL {
            self.receipts.push((to, input.clone()));
        }
        self.feed(to, input);
    }

    pub(super) fn restored(
        &mut self,
        site: usize,
        op: OpId,
        meta: &ArtifactMeta,
        reseed: bool,
        outcome: u8,
    ) {
        // Executors are idempotent per operation: running one again reports what the first
        // run did (a re-issued restore that already succeeded finds nothing left to do).
        let result = match self.op_results[site].get(&op) {
            Some(r) => r.clone(),
            None => {
                let r = match outcome % 10 {
                    0..=5 | 9 => Ok(()),
                    6 | 7 => Err(Failure {
                        code: 4305,
                        message: "the log in this backup set begins too late".into(),
                        permanent: false,
                    }),
                    _ => Err(Failure {
                        code: 3241,
                        message: "the media family on the device is incorrectly formed".into(),
                        permanent: true,
                    }),
                };
                if r.is_ok() {
                    self.cov.restores_applied += 1;
                    self.apply(site, meta, reseed);
                }
                self.op_results[site].insert(op, r.clone());
                if outcome % 10 == 9 {
                    // Executed, but the agent died before reporting: the engine re-issues it.
                    return;
                }
                r
            }
        };
        let ok = result.is_ok();
        let awaited = self.restores[site].remove(&op).is_some();
        self.feed(site, Input::Completed { op, result });
        let db = meta.key.db.0 as usize;
        let engine = &self.sites[site];
        let Some(pos) = engine.db(meta.key.db).and_then(|d| d.position) else {
            return; // forgotten on purpose (rebuild): the database is recreated anyway
        };
        // A successful restore always counts, also when an epoch change quarantined its
        // artifact meanwhile (the engine then rebuilds the copy).
        assert!(
            !(ok && awaited && pos < meta.key.lsn_end),
            "site {site} database {db}: the successful {op} ({meta:?}) was not taken into \
             account: the engine is at {pos:?}"
        );
    }

    pub(super) fn complete(&mut self, site: usize, op: OpId, ok: bool) {
        let result = if ok {
            Ok(())
        } else {
            Err(Failure {
                code: 1,
                message: "command failed".into(),
                permanent: false,
            })
        };
        self.feed(site, Input::Completed { op, result });
    }
}
