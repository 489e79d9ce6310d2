//! The adapter of the simulated world: how each command an engine emits is executed (ship,
//! restore, backup, fence, promote, probe...), with the faults that act on it. Results come
//! back later as inputs, like a real adapter's.

use crate::net::ARBITER;
use crate::world::{Body, Ev, Received, World};
use lifeboat_core::protocol::{Command, Failure, Input, ProbeTarget};
use lifeboat_core::{
    AlertKind, ArtifactKey, ArtifactKind, ArtifactMeta, Checksum, DbId, Epoch, Lsn, Millis, OpId,
    SiteId,
};
use lifeboat_scenarios::Hook;
use lifeboat_testkit::{failure, Backup, Done, Model, Ship};
use rand::Rng;

/// The longest a single restore takes, however slow the disk.
pub const MAX_RESTORE: Millis = 30 * 60_000;

impl World {
    /// Deliver inputs to a site's adapter after `after` ms (at least 1), for this incarnation.
    pub fn local(&mut self, node: usize, after: Millis, inputs: Vec<Input>) {
        let inc = self.nodes[node].inc;
        self.q
            .push(self.now + after.max(1), Ev::Local { node, inc, inputs });
    }

    pub fn complete_inc(
        &mut self,
        s: usize,
        inc: u32,
        op: OpId,
        result: Result<(), Failure>,
        after: Millis,
    ) {
        self.q.push(
            self.now + after.max(1),
            Ev::Local {
                node: s,
                inc,
                inputs: vec![Input::Completed { op, result }],
            },
        );
    }

    /// An operation that runs once (restores, reseeds, backups, drills): `None` when it must
    /// run now; otherwise what to report: nothing while it runs, its result again once it
    /// finished.
    fn run_once(&mut self, s: usize, op: OpId) -> Option<Done<Millis>> {
        if self.sites[s].running.contains(&op) {
            return Some(Done::Later);
        }
        if let Some(result) = self.sites[s].finished.get(&op).cloned() {
            return Some(Done::At(1, result));
        }
        self.sites[s].running.insert(op);
        None
    }

    /// Execute a command of site `s` through the shared executor (a lost site does nothing).
    pub fn execute(&mut self, s: usize, cmd: Command) {
        if !self.sites[s].alive {
            return;
        }
        lifeboat_testkit::execute(self, s, cmd);
    }

    /// How a hook behaves now: as drawn until `world.hooks_heal_at`, working after.
    fn hook_now(&self, h: Hook) -> Hook {
        let heal = self.params.hooks_heal_at.0;
        if heal > 0 && self.now >= heal {
            Hook::Works
        } else {
            h
        }
    }

    /// A working restart hook: the service comes back, unless its restart fails (with the
    /// `service_down` fault's probability).
    fn restart_db_service(&mut self, s: usize) -> Result<(), Failure> {
        if !self.sites[s].service_down {
            Ok(())
        } else if self
            .rng
            .exec
            .gen_bool(self.sites[s].restart_fails.clamp(0.0, 1.0))
        {
            Err(failure(
                1053,
                "the database service did not start in time after the restart",
                false,
            ))
        } else {
            self.set_service_down(s, false);
            Ok(())
        }
    }

    // ------------------------------------------------------------------ writes

    /// Open site `s`'s databases at `epoch`; a promotion (`promote`) first replays what the
    /// site received from the primary's stream, unless it stops at a chosen point (`stream`
    /// false: streamed WAL may come from after it).
    fn open_databases(
        &mut self,
        s: usize,
        epoch: Epoch,
        promote: bool,
        stream: bool,
    ) -> Done<Millis> {
        if epoch < self.sites[s].fence_epoch {
            let msg = format!(
                "the database refuses writes: fenced externally at epoch {}",
                self.sites[s].fence_epoch
            );
            return Done::At(1, Err(failure(13, msg, true)));
        }
        if epoch < self.sites[s].db_epoch {
            let name = self.node_name(s);
            let had = self.sites[s].db_epoch;
            self.violation(
                "epochs_grow",
                format!("{name}: asked to open its databases at epoch {epoch} after epoch {had}"),
            );
        }
        self.settle();
        if promote && stream {
            self.replay_streamed(s);
        }
        if epoch > self.truth.epoch {
            // Self-assigned (a forced failover without the arbiter).
            self.truth.epoch = epoch;
            self.truth.epoch_began = self.now;
        }
        let site = &mut self.sites[s];
        site.write_gen += 1;
        site.writable = true;
        site.db_epoch = epoch;
        if self.oracle.last_writer != Some(s) {
            // A new writer: it began writing now.
            self.oracle.last_writer = Some(s);
            self.oracle.writing_since[s] = self.now;
        }
        self.oracle.reopened_at[s] = Some(self.now);
        self.note_writers();
        self.truth.writer_of_epoch.entry(epoch).or_insert(s);
        if promote {
            let st = self.sites[s].states();
            self.sites[s].promote_state.entry(epoch).or_insert(st);
        }
        let after = if promote {
            self.params.role_op_time.0
        } else {
            1
        };
        Done::ok(after)
    }

    /// A promotion replays what the site received from the primary's stream beyond what it
    /// restored, when that continues the history its database holds.
    fn replay_streamed(&mut self, s: usize) {
        for i in 0..self.sites[s].dbs.len() {
            let Some((pos, lin)) = self.sites[s].streamed[i] else {
                continue;
            };
            let (at, held) = self.sites[s].dbs[i].state();
            if pos > at && self.lin[i].agree(held, lin, at) {
                let dm = &mut self.sites[s].dbs[i];
                dm.pos = pos;
                dm.lin = lin;
                dm.logged_upto = pos;
                self.trace.add(&[self.now, s as u64, i as u64, pos, 0x57E4]);
            }
        }
    }

    // ------------------------------------------------------------------ probes

    fn probe_peer(&mut self, s: usize) -> (Millis, Vec<(ProbeTarget, bool)>) {
        let p = 1 - s;
        let link = self.net.up(s, p) && self.net.up(p, s);
        let mut reach = link && self.sites[p].alive;
        if reach && self.net.faulty() {
            let loss = self.net.p_loss();
            if loss > 0.0 && self.rng.net.gen_bool(loss) {
                reach = false;
            }
        }
        // A stopped database service fails the service probe; its agent still answers.
        let service = reach && !self.sites[p].service_down;
        let agent = reach && self.nodes[p].up;
        let after = if service {
            2 * self.net.base_latency.max(1)
        } else {
            // A probe that gets no answer times out.
            (self.cfg.failover.probe_every_ms / 2).clamp(1, 1_000)
        };
        let results = vec![(ProbeTarget::Service, service), (ProbeTarget::Site, agent)];
        (after, results)
    }

    // ------------------------------------------------------------------ backups

    fn take_backup(
        &mut self,
        s: usize,
        op: OpId,
        db: Option<DbId>,
        kind: ArtifactKind,
    ) -> Backup<Millis> {
        let took = self.params.backup_time.0 * if kind == ArtifactKind::Full { 4 } else { 1 };
        if self.active.stalled > 0 {
            let f = failure(
                1,
                "the backup job did not run (its schedule is disabled)",
                false,
            );
            let done = self.finish_op(s, op, Err(f), took);
            return Backup {
                found: Vec::new(),
                done,
            };
        }
        self.settle();
        let dbs: Vec<usize> = match db {
            Some(d) if (d.0 as usize) < self.sites[s].dbs.len() => vec![d.0 as usize],
            Some(_) => Vec::new(),
            None => (0..self.sites[s].dbs.len()).collect(),
        };
        let epoch = self.sites[s].db_epoch.max(Epoch(1));
        let mut found = Vec::new();
        for i in dbs {
            let d = self.sites[s].dbs[i].clone();
            let (start, end, base) = match kind {
                ArtifactKind::Log if d.pos > d.logged_upto => (d.logged_upto, d.pos, None),
                ArtifactKind::Incremental => match d.base_full {
                    Some(f) if d.pos > f => (f, d.pos, Some(f)),
                    _ => continue,
                },
                ArtifactKind::Full => (d.pos, d.pos, None),
                _ => continue,
            };
            match kind {
                ArtifactKind::Log => self.sites[s].dbs[i].logged_upto = end,
                ArtifactKind::Full => self.sites[s].dbs[i].base_full = Some(end),
                ArtifactKind::Incremental => {}
            }
            if kind == ArtifactKind::Log {
                let lost = self
                    .active
                    .never_ship
                    .iter()
                    .position(|x| x.is_none_or(|x| x.0 as usize == i));
                if let Some(k) = lost {
                    // Produced, then lost before anything could discover it: a hole.
                    self.active.never_ship.remove(k);
                    self.oracle.never_shipped(s, i, start, end);
                    continue;
                }
            }
            let cut = crate::world::Cut {
                kind,
                start,
                end,
                base_full: base,
                epoch,
            };
            let meta = self.make_artifact(s, i, cut);
            found.push((took, meta));
        }
        let done = self.finish_op(s, op, Ok(()), took + 1);
        Backup { found, done }
    }

    /// An operation run once finishes: remember its result, report it.
    fn finish_op(
        &mut self,
        s: usize,
        op: OpId,
        result: Result<(), Failure>,
        after: Millis,
    ) -> Done<Millis> {
        self.sites[s].running.remove(&op);
        self.sites[s].finished.insert(op, result.clone());
        Done::At(after, result)
    }

    // ------------------------------------------------------------------ shipping

    /// A ship: the copies travel as `Arrive` events (reported as they land, see `arrive`); a
    /// failed transfer is reported to the sender.
    fn ship_copies(&mut self, s: usize, meta: ArtifactMeta, to: SiteId) -> Ship<Millis> {
        let t = to.0 as usize;
        let key = meta.key;
        let fail = |reason: &str, after: Millis| Ship::Fails(after, reason.to_string());
        if t >= 2 || t == s {
            return fail("no such site", 1);
        }
        let Some(body) = self.sites[s].outbox.get(&key).copied() else {
            return fail("the artifact file is not in the outbox", 1);
        };
        if body.damaged && self.params.sender_verifies {
            return fail(
                "the outbox copy does not match its manifest checksum (damaged at rest)",
                1,
            );
        }
        if self.oracle.shipped(s, key, self.now) {
            let name = self.node_name(s);
            self.violation(
                "liveness",
                format!(
                    "{name} shipped {key:?} more than {} times within an hour (a ship storm)",
                    crate::oracle::SHIP_STORM
                ),
            );
            return Ship::Silent;
        }
        if !self.net.up(s, t) || !self.node_reachable(t) {
            return fail("connection timed out", 3_000);
        }
        let transfer = meta.size / self.params.bytes_per_ms;
        let mut copies = 1;
        let faulty =
            self.net.faulty() || !self.net.corrupt.is_empty() || !self.net.truncate.is_empty();
        if faulty {
            let loss = self.net.p_loss();
            if loss > 0.0 && self.rng.net.gen_bool(loss) {
                let d = self.net.delay(&mut self.rng.net);
                return fail("connection reset during the transfer", d + transfer);
            }
            let dup = self.net.p_dup();
            if dup > 0.0 && self.rng.net.gen_bool(dup) {
                copies = 2;
            }
        }
        let inc = self.nodes[t].inc;
        for _ in 0..copies {
            let mut bad = body.damaged;
            if faulty {
                let pc = self.net.p_corrupt();
                let pt = self.net.p_truncate();
                if pc > 0.0 && self.rng.net.gen_bool(pc) {
                    bad = true;
                }
                if pt > 0.0 && self.rng.net.gen_bool(pt) {
                    bad = true;
                }
            }
            let d = if faulty {
                self.net.delay(&mut self.rng.net)
            } else {
                self.net.base_latency.max(1)
            };
            self.q.push(
                self.now + d + transfer,
                Ev::Arrive(Box::new(crate::world::Arrival {
                    from: s,
                    to: t,
                    inc,
                    meta,
                    body,
                    bad,
                })),
            );
        }
        Ship::Silent
    }

    /// A copy lands: fsynced and renamed into the inbox, then reported with its computed
    /// checksum (the engine decides whether it matches).
    pub fn arrive(
        &mut self,
        from: usize,
        to: usize,
        inc: u32,
        meta: ArtifactMeta,
        body: Body,
        bad: bool,
    ) {
        if !self.sites[to].alive || !self.nodes[to].up || self.nodes[to].inc != inc {
            return;
        }
        let computed = if bad {
            Checksum(meta.checksum.0 ^ (crate::trace::mix(&[self.now, meta.key.lsn_end.0]) | 1))
        } else {
            meta.checksum
        };
        let mut rotten = false;
        if !bad && self.sites[to].damage_inbox > 0 && meta.key.kind != ArtifactKind::Full {
            self.sites[to].damage_inbox -= 1;
            rotten = true;
        }
        let held = self.sites[to].inbox.get(&meta.key).is_some_and(|c| !c.bad);
        if !bad {
            self.nodes[to].pruned.remove(&meta.key);
        }
        let i = meta.key.db.0 as usize;
        let covered = self.sites[to]
            .dbs
            .get(i)
            .is_none_or(|d| d.pos >= meta.key.lsn_end.0);
        // A copy that fails verification is received beside a good one, never over it.
        if !(bad && held) {
            self.sites[to].inbox.insert(
                meta.key,
                Received {
                    body,
                    bad,
                    rotten,
                    at: self.now,
                },
            );
        }
        self.oracle.received(to, &meta, bad, self.now);
        let db = meta.key.db;
        // A damaged copy of an artifact the site still needs must be flagged at once.
        let expect = (bad && !held && !covered).then(|| {
            (
                AlertKind::ChecksumMismatch,
                Some(db),
                format!(
                    "a copy of {:?} failed verification (manifest {}, computed {computed})",
                    meta.key, meta.checksum
                ),
            )
        });
        self.feed(
            to,
            Input::ArtifactReceived {
                meta,
                computed,
                from: SiteId(from as u16),
            },
            expect,
        );
        self.oracle_gap_eval(to, db.0 as usize);
    }

    // ------------------------------------------------------------------ restores

    fn start_restore(&mut self, s: usize, op: OpId, meta: ArtifactMeta) {
        self.oracle_restore_issued(s, &meta);
        let key = meta.key;
        if let Some(k) = self
            .active
            .poison_next
            .iter()
            .position(|x| x.is_none_or(|d| d == key.db))
        {
            if key.kind != ArtifactKind::Full && !self.sites[s].poisoned.contains(&key) {
                self.active.poison_next.remove(k);
                self.sites[s].poisoned.insert(key);
            }
        }
        let txs = if key.kind == ArtifactKind::Full {
            key.lsn_end.0
        } else {
            key.lsn_end.0.saturating_sub(key.lsn_start.0)
        };
        let base = self.params.restore_base.0 + self.params.restore_per_ktx.0 * txs / 1000;
        let took = ((base as f64 * self.active.slow_factor()) as Millis).clamp(1, MAX_RESTORE);
        self.sites[s].restore_ends.insert(op, self.now + took);
        let inc = self.nodes[s].inc;
        self.q.push(
            self.now + took,
            Ev::RestoreDone {
                site: s,
                inc,
                op,
                meta: Box::new(meta),
            },
        );
    }

    pub fn restore_done(&mut self, s: usize, _inc: u32, op: OpId, meta: ArtifactMeta) {
        if !self.sites[s].alive {
            self.sites[s].running.remove(&op);
            return;
        }
        self.sites[s].restore_ends.remove(&op);
        let key = meta.key;
        let i = key.db.0 as usize;
        if i >= self.sites[s].dbs.len() {
            return;
        }
        let copy = self.sites[s].inbox.get(&key).copied();
        let p_fail = self.active.p_restore_fail();
        if copy.is_none() && self.nodes[s].pruned.contains(&key) {
            self.wrong_keep_list(s, "a restore", &key);
        }
        let result: Result<(), Failure> = match copy {
            None => Err(failure(
                2,
                "the artifact file is not in the inbox (removed or quarantined)",
                false,
            )),
            // The database reports a damaged file; the executor cannot tell a bad read from a
            // bad file, so it does not call it permanent.
            Some(c) if c.rotten => Err(failure(
                22,
                "the backup set is damaged: a page checksum does not match",
                false,
            )),
            Some(_) if self.sites[s].poisoned.contains(&key) => Err(failure(
                3241,
                "the media family on the device is incorrectly formed",
                true,
            )),
            Some(_) if p_fail > 0.0 && self.rng.exec.gen_bool(p_fail) => Err(failure(
                4305,
                "the restore was interrupted (transient I/O error)",
                false,
            )),
            Some(c) => self.apply(s, i, &meta, c),
        };
        let new_failure = if result.is_ok() {
            self.oracle_restored(s, i);
            false
        } else {
            self.oracle_restore_failed(s, op, &meta, self.now)
        };
        self.sites[s].running.remove(&op);
        if !self.nodes[s].up {
            self.sites[s].finished.insert(op, result);
            return;
        }
        self.sites[s].finished.insert(op, result.clone());
        let expect = self.oracle_restore_error_expectation(s, &meta, new_failure);
        self.feed(s, Input::Completed { op, result }, expect);
        self.oracle_gap_eval(s, i);
    }

    /// Apply an artifact's content to a database (the database's own chain checks).
    fn apply(
        &mut self,
        s: usize,
        i: usize,
        meta: &ArtifactMeta,
        c: Received,
    ) -> Result<(), Failure> {
        let key = meta.key;
        let d = self.sites[s].dbs[i].clone();
        let (start, end) = (key.lsn_start.0, key.lsn_end.0);
        let new = match key.kind {
            ArtifactKind::Full => {
                if c.bad {
                    self.lin[i].garbage(end)
                } else {
                    (end, c.body.lin)
                }
            }
            ArtifactKind::Log | ArtifactKind::Incremental => {
                if d.pos >= end {
                    return Ok(()); // already applied: restoring twice is harmless
                }
                if d.pos < start {
                    return Err(failure(
                        4305,
                        "the log in this backup set begins too late to apply to the database",
                        false,
                    ));
                }
                if c.bad || !self.lin[i].agree(d.lin, c.body.lin, d.pos) {
                    // Content from another history (or damaged): the database takes it, and no
                    // longer matches anyone's history.
                    self.lin[i].garbage(end)
                } else {
                    (end, c.body.lin)
                }
            }
        };
        let dm = &mut self.sites[s].dbs[i];
        dm.pos = new.0;
        dm.lin = new.1;
        dm.logged_upto = new.0;
        if key.kind == ArtifactKind::Full {
            dm.base_full = Some(end);
        }
        self.trace.add(&[self.now, s as u64, i as u64, new.0]);
        Ok(())
    }

    // ------------------------------------------------------------------ drills

    /// The engine named an artifact that its own `Prune` removed: its keep-list was wrong.
    fn wrong_keep_list(&mut self, s: usize, what: &str, key: &ArtifactKey) {
        let name = self.node_name(s);
        self.violation(
            "retention",
            format!("{name}: {what} names {key:?}, which a Prune of that engine removed"),
        );
    }

    /// A drill restores exactly the chain the engine named into a scratch copy and checks it,
    /// like a driver: every artifact in the inbox and matching its manifest, a full first, each
    /// next one continuing the copy (from the same history), ending at `upto`. Any other chain
    /// fails the drill (and the engine raises `drill_failed`).
    fn run_drill(
        &mut self,
        s: usize,
        db: DbId,
        upto: Lsn,
        chain: &[ArtifactMeta],
    ) -> Result<(), Failure> {
        let i = db.0 as usize;
        if i >= self.lin.len() {
            return Err(failure(2, "no such database", true));
        }
        let mut scratch: Option<(u64, crate::db::LinId)> = None;
        for m in chain {
            let no = |msg: &str| Err(failure(4305, msg, false));
            if m.key.db != db {
                return no("the drill's chain names an artifact of another database");
            }
            let Some(c) = self.sites[s].inbox.get(&m.key).copied() else {
                if self.nodes[s].pruned.contains(&m.key) {
                    self.wrong_keep_list(s, "a drill", &m.key);
                }
                return Err(failure(
                    2,
                    "an artifact of the drill's chain is not in the inbox (removed or quarantined)",
                    false,
                ));
            };
            if c.bad || c.rotten || c.body.meta.checksum != m.checksum {
                return Err(failure(
                    22,
                    "an artifact of the drill's chain does not match its manifest checksum",
                    false,
                ));
            }
            let (start, end) = (m.key.lsn_start.0, m.key.lsn_end.0);
            scratch = Some(match (scratch, m.key.kind) {
                (None, ArtifactKind::Full) => (end, c.body.lin),
                (None, _) => return no("the drill's chain does not start with a full backup"),
                (Some(_), ArtifactKind::Full) => {
                    return no("the drill's chain has a second full backup")
                }
                (Some((pos, _)), _) if pos < start => {
                    return no("the drill's chain has a hole: an artifact begins too late to apply")
                }
                (Some((pos, _)), _) if pos >= end => {
                    return no("the drill's chain names an artifact the copy already passed")
                }
                (Some((pos, lin)), _) => {
                    if !self.lin[i].agree(lin, c.body.lin, pos) {
                        return Err(failure(
                            22,
                            "the scratch copy fails its check: an artifact of the drill's chain \
                             comes from another history",
                            false,
                        ));
                    }
                    (end, c.body.lin)
                }
            });
        }
        match scratch {
            Some((pos, _)) if pos == upto.0 => Ok(()),
            Some(_) => Err(failure(
                4305,
                "the drill's chain does not reach the position it was asked to drill",
                false,
            )),
            None => Err(failure(2, "the drill names no artifact to restore", false)),
        }
    }

    /// The archive oracle (`archive_retention`), at every removal the engine orders: the
    /// archive before it is what the engine knew plus what it removes; every point its policy
    /// keeps there must keep its whole chain, each artifact of it on disk and intact, the chain
    /// restoring one history (never two epochs' histories mixed); and nothing created within
    /// the policy's window goes.
    fn check_archive_removal(&mut self, s: usize, db: DbId, keys: &[ArtifactKey]) {
        let name = self.node_name(s);
        let Some(policy) = self.cfg.archive else {
            return self.violation(
                "archive_retention",
                format!("{name}: an archive removal without an archive policy"),
            );
        };
        let known: Vec<ArtifactMeta> = self.nodes[s]
            .engine
            .site()
            .and_then(|e| e.state().archive.get(db.0 as usize))
            .map(|a| a.entries.clone())
            .unwrap_or_default();
        let mut before = known;
        for k in keys {
            match self.sites[s].archive.get(k) {
                Some(r) => before.push(r.body.meta),
                None => {
                    return self.violation(
                        "archive_retention",
                        format!("{name}: removes {k:?}, which is not in the archive"),
                    )
                }
            }
        }
        let gone: std::collections::BTreeSet<ArtifactKey> = keys.iter().copied().collect();
        let newest = before.iter().map(|m| m.created_utc).max();
        if let Some(newest) = newest {
            let window = newest.0.saturating_sub(policy.keep_ms as i64);
            if let Some(m) = before
                .iter()
                .find(|m| gone.contains(&m.key) && m.created_utc.0 >= window)
            {
                let what = format!(
                    "{name}: removes {:?}, created inside the kept window",
                    m.key
                );
                return self.violation("archive_retention", what);
            }
        }
        let points = lifeboat_core::archive::points(&before);
        self.out.archive_removals += 1;
        for i in lifeboat_core::archive::kept_points(&points, &before, &policy) {
            self.out.archive_points_checked += 1;
            let p = &points.all()[i];
            let chain = points.chain(p);
            if chain.last().map(|m| m.key.lsn_end) != Some(p.lsn) {
                let what = format!("{name}: the kept point at {} has no chain to it", p.lsn.0);
                return self.violation("archive_retention", what);
            }
            if let Some(m) = chain.iter().find(|m| gone.contains(&m.key)) {
                let what = format!(
                    "{name}: removes {:?}, which the kept point at {} needs",
                    m.key, p.lsn.0
                );
                return self.violation("archive_retention", what);
            }
            if let Err(why) = self.archive_chain_restores(s, db, &chain) {
                let what = format!(
                    "{name}: the kept point at {} does not restore: {why}",
                    p.lsn.0
                );
                return self.violation("archive_retention", what);
            }
        }
    }

    /// Whether `chain` restores from this site's archive into one history (as a drill would).
    fn archive_chain_restores(
        &self,
        s: usize,
        db: DbId,
        chain: &[ArtifactMeta],
    ) -> Result<(), String> {
        let i = db.0 as usize;
        let mut scratch: Option<(u64, crate::db::LinId)> = None;
        for m in chain {
            let Some(c) = self.sites[s].archive.get(&m.key) else {
                return Err(format!("{:?} is not in the archive", m.key));
            };
            if c.bad || c.body.meta.checksum != m.checksum {
                return Err(format!("{:?} does not match its manifest", m.key));
            }
            let (start, end) = (m.key.lsn_start.0, m.key.lsn_end.0);
            scratch = Some(match (scratch, m.key.kind) {
                (None, ArtifactKind::Full) => (end, c.body.lin),
                (None, _) => return Err("the chain does not start with a full".into()),
                (Some(_), ArtifactKind::Full) => return Err("a second full".into()),
                (Some((pos, _)), _) if pos < start || pos >= end => {
                    return Err(format!("{:?} does not apply at {pos}", m.key))
                }
                (Some((pos, lin)), _) => {
                    if !self.lin[i].agree(lin, c.body.lin, pos) {
                        return Err(format!(
                            "{:?} comes from another history than the copy at {pos}",
                            m.key
                        ));
                    }
                    (end, c.body.lin)
                }
            });
        }
        Ok(())
    }

    // ------------------------------------------------------------------ disks

    pub fn report_disk(&mut self, s: usize) {
        if !self.sites[s].alive || !self.nodes[s].up {
            return;
        }
        let used: u64 = self.sites[s]
            .outbox
            .values()
            .map(|b| b.meta.size)
            .sum::<u64>()
            + self.sites[s]
                .inbox
                .values()
                .chain(self.sites[s].archive.values())
                .map(|r| r.body.meta.size)
                .sum::<u64>();
        let min = self.cfg.alerts.min_free_mib;
        let free = if self.active.disk_pressure > 0 {
            min / 2
        } else {
            self.params.disk_mib.saturating_sub(used >> 20)
        };
        let expect = (free < min).then(|| {
            (
                AlertKind::DiskSpace,
                None,
                format!("free space reported at {free} MiB, under the {min} MiB threshold"),
            )
        });
        self.feed(s, Input::DiskSpace { free_mib: free }, expect);
    }

    // ------------------------------------------------------------------ crashes and sites

    /// The node's process dies (the site's database keeps running).
    pub fn crash(&mut self, n: usize) {
        if !self.nodes[n].up {
            return;
        }
        let rng = &mut self.rng.fault;
        let lost = self.nodes[n].crash(|unsynced| {
            if unsynced == 0 || rng.gen_bool(0.5) {
                unsynced
            } else {
                rng.gen_range(0..unsynced)
            }
        });
        self.trace.add(&[self.now, n as u64, 0xC2A5, lost as u64]);
        let name = self.node_name(n);
        let etcd = n == ARBITER && self.etcd.is_some();
        self.trace.note(self.now, || {
            if etcd {
                "etcd QUORUM LOST (nothing applied or answered, no lease expires)".into()
            } else {
                format!("{name} CRASH ({lost} unsynced journal bytes lost)")
            }
        });
        self.oracle.node_down(n, self.now);
        self.oracle_paths_changed();
    }

    /// The node's process starts again from its journal.
    pub fn restart(&mut self, n: usize) {
        if self.nodes[n].up || (n < 2 && !self.sites[n].alive) {
            return;
        }
        let me = (n != ARBITER).then_some(SiteId(n as u16));
        let replay = match self.nodes[n].recover(&self.cfg, me) {
            Ok(r) => r,
            Err(e) => {
                let name = self.node_name(n);
                return self.violation("journal_replay", format!("{name}: restart failed: {e}"));
            }
        };
        self.out.restarts += 1;
        if replay.torn {
            self.out.torn_tails += 1;
        }
        if let Some(before) = self.nodes[n].before_crash.take() {
            if *before != self.nodes[n].state() {
                let name = self.node_name(n);
                self.violation(
                    "journal_replay",
                    format!(
                        "{name}: replaying the whole journal ({} records) did not reproduce the \
                         engine's state before the crash",
                        replay.records
                    ),
                );
            }
        }
        let epoch = self.nodes[n].engine.epoch();
        if epoch < self.nodes[n].durable_epoch {
            let name = self.node_name(n);
            let had = self.nodes[n].durable_epoch;
            self.violation(
                "epochs_grow",
                format!("{name}: came back from its journal at epoch {epoch}, after acting at epoch {had}"),
            );
        }
        self.nodes[n].max_epoch = epoch;
        let name = self.node_name(n);
        let torn = replay.torn;
        let etcd = n == ARBITER && self.etcd.is_some();
        self.trace.note(self.now, || {
            if etcd {
                return "etcd QUORUM BACK: a leader is elected".into();
            }
            format!(
                "{name} RESTART: {} records replayed{}",
                replay.records,
                if torn { ", torn tail truncated" } else { "" }
            )
        });
        if n < 2 {
            // A new agent process: a new etcd client and translation, nothing in flight.
            self.etcd_site_restarted(n);
        }
        self.oracle.node_up(n, self.now);
        self.oracle_paths_changed();
        self.nodes[n].wake_at = None;
        self.feed(n, Input::Restarted, None);
        if n < 2 && std::mem::take(&mut self.sites[n].resume_when_up) {
            // The operator resumes the backups they paused, now that the agent answers.
            self.sites[n].paused = false;
            self.oracle.paused_changed(false, self.now);
            self.feed(
                n,
                Input::Operator(lifeboat_core::protocol::OperatorRequest::ResumeBackups),
                None,
            );
        }
        if n < 2 {
            // The adapter scans its outbox on start: files the engine has not seen are found.
            let found: Vec<Input> = self.sites[n]
                .outbox
                .values()
                .map(|b| Input::ArtifactDiscovered(b.meta))
                .collect();
            if !found.is_empty() {
                self.local(n, 1, found);
            }
            self.report_disk(n);
        }
    }

    /// A whole site is lost: database and agent.
    pub fn kill_site(&mut self, s: usize) {
        if !self.sites[s].alive {
            return;
        }
        let was_primary = self.current_primary() == s;
        self.settle();
        self.close_writes(s);
        self.crash(s);
        self.sites[s].alive = false;
        self.sites[s].running.clear();
        self.sites[s].restore_ends.clear();
        self.oracle.site_lost(s, self.now);
        self.oracle_site_lost(s, was_primary);
        if was_primary {
            self.plan_announce_check(s);
        }
    }

    /// The database service of a site stops or starts again (writes are accounted first).
    pub fn set_service_down(&mut self, s: usize, down: bool) {
        if self.sites[s].service_down == down {
            return;
        }
        self.settle();
        self.sites[s].service_down = down;
        let name = self.node_name(s);
        self.trace
            .add(&[self.now, s as u64, 0x5E2F, u64::from(down)]);
        self.trace.note(self.now, || {
            format!(
                "{name} database service {}",
                if down { "DOWN" } else { "back" }
            )
        });
        self.note_writers();
    }

    /// A lost site comes back with its disk: the databases come up fenced, the agent restarts
    /// from its journal.
    pub fn revive_site(&mut self, s: usize) {
        if self.sites[s].alive {
            return;
        }
        self.sites[s].alive = true;
        self.sites[s].writable = false;
        self.sites[s].service_down = false;
        self.sites[s].reported = vec![0; self.sites[s].dbs.len()];
        self.restart(s);
    }
}

/// The simulated sites as the shared executor sees them: reports reach a site's adapter after
/// a delay in milliseconds (for the incarnation that issued the command).
impl Model for World {
    type When = Millis;

    fn deliver(&mut self, site: usize, after: Millis, inputs: Vec<Input>) {
        self.local(site, after, inputs);
    }

    fn completes(&mut self, _: usize, _: OpId) -> Done<Millis> {
        Done::ok(1)
    }

    fn ship(&mut self, s: usize, _: OpId, artifact: ArtifactMeta, to: SiteId) -> Ship<Millis> {
        self.ship_copies(s, artifact, to)
    }

    fn restore(&mut self, s: usize, op: OpId, artifact: ArtifactMeta, _: bool) -> Done<Millis> {
        if let Some(done) = self.run_once(s, op) {
            return done;
        }
        self.start_restore(s, op, artifact);
        Done::Later
    }

    fn backup(
        &mut self,
        s: usize,
        op: OpId,
        db: Option<DbId>,
        kind: ArtifactKind,
    ) -> Backup<Millis> {
        match self.run_once(s, op) {
            Some(done) => Backup {
                found: Vec::new(),
                done,
            },
            None => self.take_backup(s, op, db, kind),
        }
    }

    fn probe(&mut self, s: usize) -> (Millis, Vec<(ProbeTarget, bool)>) {
        self.probe_peer(s)
    }

    fn positions(&mut self, s: usize) -> (Millis, Vec<(DbId, Lsn)>) {
        self.settle();
        let site = &mut self.sites[s];
        let mut positions = Vec::new();
        for (i, d) in site.dbs.iter().enumerate() {
            if d.pos > site.reported[i] {
                site.reported[i] = d.pos;
                positions.push((DbId(i as u32), Lsn(d.pos)));
            }
        }
        (1, positions)
    }

    fn fence(&mut self, s: usize, op: OpId) -> Done<Millis> {
        let site = &mut self.sites[s];
        site.write_gen += 1;
        let gen = site.write_gen;
        let most = self.cfg.lease.fence_time_ms;
        let delay = if most == 0 {
            0
        } else {
            self.rng.exec.gen_range(0..=most)
        };
        let inc = self.nodes[s].inc;
        self.q.push(
            self.now + delay,
            Ev::FenceApply {
                site: s,
                inc,
                gen,
                op,
            },
        );
        Done::Later
    }

    fn open_writes(&mut self, s: usize, _: OpId, epoch: Epoch, promote: bool) -> Done<Millis> {
        self.open_databases(s, epoch, promote, true)
    }

    fn promote_until(
        &mut self,
        s: usize,
        _: OpId,
        epoch: Epoch,
        _: lifeboat_core::UtcMillis,
    ) -> Done<Millis> {
        self.open_databases(s, epoch, true, false)
    }

    fn promoted_positions(&mut self, s: usize) -> Vec<(DbId, Lsn)> {
        if !self.params.stream_wal {
            return Vec::new();
        }
        let dbs = &self.sites[s].dbs;
        (0..dbs.len())
            .map(|i| (DbId(i as u32), Lsn(dbs[i].pos)))
            .collect()
    }

    fn external_fence(&mut self, s: usize, _: OpId, target: SiteId, epoch: Epoch) -> Done<Millis> {
        let after = self.params.role_op_time.0;
        match self.hook_now(self.params.fence_hook) {
            Hook::Works => {}
            Hook::Fails => {
                let f = failure(1, "the fence hook exited with status 1", false);
                return Done::At(after, Err(f));
            }
            Hook::Hangs => return Done::Later,
        }
        let t = target.0 as usize;
        if t < 2 && t != s {
            self.settle();
            let site = &mut self.sites[t];
            site.fence_epoch = site.fence_epoch.max(epoch);
            if site.db_epoch < epoch {
                self.close_writes(t);
            }
        }
        Done::ok(after)
    }

    fn restart_service(&mut self, s: usize, _: OpId) -> Done<Millis> {
        let after = self.params.role_op_time.0;
        let result = match self.hook_now(self.params.restart_hook) {
            Hook::Hangs => return Done::Later,
            Hook::Fails => Err(failure(1, "the restart hook exited with status 1", false)),
            Hook::Works => self.restart_db_service(s),
        };
        Done::At(after, result)
    }

    fn check_service(&mut self, s: usize, _: OpId) -> Done<Millis> {
        let result = if self.sites[s].service_down {
            Err(failure(
                2006,
                "the local database service does not answer",
                false,
            ))
        } else {
            Ok(())
        };
        Done::At(5, result)
    }

    fn switch_identity(&mut self, _: usize, _: OpId, to: SiteId, _: Epoch) -> Done<Millis> {
        let to = (to.0 as usize).min(1);
        if self.truth.identity != to {
            self.truth.identity = to;
            self.out.identity_moves += 1;
        }
        Done::ok(self.params.identity_time.0)
    }

    fn drill(
        &mut self,
        s: usize,
        op: OpId,
        db: DbId,
        upto: Lsn,
        chain: &[ArtifactMeta],
    ) -> Done<Millis> {
        if let Some(done) = self.run_once(s, op) {
            return done;
        }
        let result = self.run_drill(s, db, upto, chain);
        let after = 3 * self.params.restore_base.0;
        self.finish_op(s, op, result, after)
    }

    fn discard(&mut self, s: usize, key: ArtifactKey) {
        self.sites[s].outbox.remove(&key);
    }

    fn archive(&mut self, s: usize, artifact: &ArtifactMeta) -> Option<(Millis, Option<String>)> {
        if self.active.disk_pressure > 0 {
            return Some((1, Some("No space left on device (os error 28)".into())));
        }
        match self.sites[s].inbox.get(&artifact.key).copied() {
            Some(r) => {
                self.sites[s].archive.insert(artifact.key, r);
                Some((1, None))
            }
            None => {
                if self.nodes[s].pruned.contains(&artifact.key) {
                    self.wrong_keep_list(s, "an archive copy", &artifact.key);
                }
                Some((1, Some("the inbox no longer has it".into())))
            }
        }
    }

    fn archive_drill(
        &mut self,
        s: usize,
        op: OpId,
        db: DbId,
        upto: Lsn,
        chain: &[ArtifactMeta],
    ) -> Done<Millis> {
        if let Some(done) = self.run_once(s, op) {
            return done;
        }
        let result = match self.archive_chain_restores(s, db, chain) {
            Ok(()) if chain.last().map(|m| m.key.lsn_end) == Some(upto) => Ok(()),
            Ok(()) => Err(failure(4305, "the chain does not reach the point", false)),
            Err(why) => {
                // The engine chose a kept point: every one restores (the archive oracle).
                let name = self.node_name(s);
                let what = format!("{name}: the archive's verification of {}: {why}", upto.0);
                self.violation("archive_retention", what);
                Err(failure(22, &why, false))
            }
        };
        self.out.archive_points_checked += 1;
        let after = 3 * self.params.restore_base.0;
        self.finish_op(s, op, result, after)
    }

    fn archive_remove(&mut self, s: usize, db: DbId, keys: &[ArtifactKey]) {
        self.check_archive_removal(s, db, keys);
        for k in keys {
            self.sites[s].archive.remove(k);
        }
    }

    fn prune(&mut self, s: usize, db: DbId, before: Lsn, keep: &[ArtifactKey]) {
        // Exactly what the command says: the engine's keep-list is the whole decision.
        let gone: Vec<ArtifactKey> = self.sites[s]
            .inbox
            .range(crate::world::db_keys(db))
            .map(|(k, _)| *k)
            .filter(|k| k.lsn_end < before && keep.binary_search(k).is_err())
            .collect();
        for k in gone {
            self.sites[s].inbox.remove(&k);
            self.nodes[s].pruned.insert(k);
        }
    }

    fn quarantine(&mut self, s: usize, artifact: &ArtifactMeta, reason: &str) {
        let site = &mut self.sites[s];
        let stale = reason.starts_with("stale epoch");
        match site.inbox.get(&artifact.key) {
            // A bad duplicate was kept aside: the good copy stays.
            Some(c) if !c.bad && !stale => {}
            Some(_) => {
                site.inbox.remove(&artifact.key);
            }
            None => {
                site.outbox.remove(&artifact.key);
            }
        }
        if stale {
            self.out.stale_quarantined += 1;
        }
    }

    // Nothing in the simulated databases finishes a log on its own: `collect_logs` and
    // `relabel` keep their defaults.
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::{Cut, Received};
    use lifeboat_scenarios::WorldParams;

    /// A recovery site's inbox holding a full at 0 and three logs 0..10..20..30, all verified.
    fn world() -> (World, Vec<ArtifactMeta>) {
        let mut w = World::new(
            lifeboat_core::Config::default(),
            WorldParams::default(),
            7,
            Vec::new(),
            false,
        );
        let cuts = [
            (ArtifactKind::Full, 0, 0),
            (ArtifactKind::Log, 0, 10),
            (ArtifactKind::Log, 10, 20),
            (ArtifactKind::Log, 20, 30),
        ];
        let mut chain = Vec::new();
        for (kind, start, end) in cuts {
            let cut = Cut {
                kind,
                start,
                end,
                base_full: None,
                epoch: Epoch(1),
            };
            let meta = w.make_artifact(0, 0, cut);
            let body = w.sites[0].outbox[&meta.key];
            let copy = Received {
                body,
                bad: false,
                rotten: false,
                at: 0,
            };
            w.sites[1].inbox.insert(meta.key, copy);
            chain.push(meta);
        }
        (w, chain)
    }

    #[test]
    fn a_drill_of_a_complete_chain_passes_its_check() {
        let (mut w, chain) = world();
        assert_eq!(w.run_drill(1, DbId(0), Lsn(30), &chain), Ok(()));
        assert!(w.out.violations.is_empty());
    }

    #[test]
    fn a_drill_fails_when_an_artifact_of_its_chain_is_missing_from_the_store() {
        let (mut w, chain) = world();
        w.sites[1].inbox.remove(&chain[2].key);
        let err = w.run_drill(1, DbId(0), Lsn(30), &chain).unwrap_err();
        assert!(err.message.contains("not in the inbox"), "{err:?}");
        // Removed by something else than a prune (quarantine, by hand): no engine fault.
        assert!(w.out.violations.is_empty());
    }

    #[test]
    fn a_drill_fails_when_its_chain_has_a_hole_or_a_wrong_checksum_or_stops_short() {
        let (mut w, chain) = world();
        let hole = [chain[0], chain[1], chain[3]];
        let err = w.run_drill(1, DbId(0), Lsn(30), &hole).unwrap_err();
        assert!(err.message.contains("hole"), "{err:?}");
        let mut wrong = chain.clone();
        wrong[1].checksum = Checksum(wrong[1].checksum.0 ^ 1);
        let err = w.run_drill(1, DbId(0), Lsn(30), &wrong).unwrap_err();
        assert!(err.message.contains("checksum"), "{err:?}");
        let err = w.run_drill(1, DbId(0), Lsn(30), &chain[1..]).unwrap_err();
        assert!(err.message.contains("full backup"), "{err:?}");
        let err = w.run_drill(1, DbId(0), Lsn(30), &chain[..3]).unwrap_err();
        assert!(err.message.contains("does not reach"), "{err:?}");
    }

    /// The simulated adapter prunes exactly what the command says; an engine that later names a
    /// pruned artifact (a wrong keep-list) is caught as a violation, not only a failed drill.
    #[test]
    fn a_prune_removes_exactly_what_its_keep_list_leaves_and_a_wrong_keep_list_is_a_violation() {
        let (mut w, chain) = world();
        let keep = vec![chain[0].key, chain[2].key];
        w.execute(
            1,
            Command::Prune {
                db: DbId(0),
                before: Lsn(30),
                keep,
            },
        );
        let left: Vec<_> = w.sites[1].inbox.keys().copied().collect();
        assert_eq!(left, vec![chain[0].key, chain[2].key, chain[3].key]);
        assert!(w.run_drill(1, DbId(0), Lsn(30), &chain).is_err());
        assert_eq!(w.out.violations.len(), 1, "{:?}", w.out.violations);
        assert_eq!(w.out.violations[0].oracle, "retention");
    }
}
