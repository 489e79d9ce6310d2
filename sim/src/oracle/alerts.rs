//! `alert_threshold` and `quiet`: every injected condition raises its alert within its
//! threshold (judged from the world's own view of disks and links, not from the engine's
//! state), and a run without faults raises none.

use crate::world::World;
use lifeboat_core::alert::{AlertChange, AlertEvent};
use lifeboat_core::engine::Role;
use lifeboat_core::{AlertKind, ArtifactKind, ArtifactMeta, DbId, Millis, SiteId, MINUTE};

impl World {
    /// Slack for thresholds measured on a drifting clock and checked by a periodic monitor.
    fn late(&self, threshold: Millis) -> Millis {
        let rho = self.cfg.lease.max_drift_ppm;
        threshold + threshold * rho / 1_000_000 * 2 + 2 * self.cfg.alerts.check_every_ms.max(1_000)
    }

    pub fn on_alert(&mut self, node: usize, a: AlertEvent) {
        let key = (node, a.id.kind, a.id.db);
        let kind = a.id.kind.as_str();
        match a.change {
            AlertChange::Raised => {
                *self.out.alerts.entry(kind).or_default() += 1;
                self.out.first_raise.entry(kind).or_insert(self.now);
                *self.oracle.active.entry(key).or_default() += 1;
                self.oracle.last_raise.insert(key, self.now);
                self.oracle.active_sev.insert((node, a.id), a.severity);
                if a.id.kind == AlertKind::LinkDown {
                    self.oracle.link_down_raises.push((self.now, node));
                }
            }
            AlertChange::Updated => {
                self.oracle.last_raise.insert(key, self.now);
                self.oracle.active_sev.insert((node, a.id), a.severity);
            }
            AlertChange::Cleared => {
                *self.oracle.active.entry(key).or_default() -= 1;
                self.oracle.active_sev.remove(&(node, a.id));
            }
            AlertChange::Notice => {
                *self.out.alerts.entry(kind).or_default() += 1;
                self.out.first_raise.entry(kind).or_insert(self.now);
            }
        }
        self.operator_alert(node, &a);
        self.oracle_promised_alert(node, &a);
        if a.change != AlertChange::Cleared {
            self.out.max_severity = self.out.max_severity.max(Some(a.severity));
        }
        let noisy = match a.change {
            AlertChange::Raised => !self.drill_before_the_next_full(node, &a),
            AlertChange::Notice => a.id.kind != AlertKind::Switchover,
            _ => false,
        };
        if self.oracle.clean && noisy {
            let site = self.node_name(node);
            self.violation(
                "quiet",
                format!(
                    "{site} raised `{}` in a run without faults: {}",
                    a.id.kind.as_str(),
                    a.text
                ),
            );
        }
    }

    /// A drill at a site whose copy moved without a restore (it became the secondary by a
    /// switchover or failback) fails until a full backup of the new primary is restored or
    /// passed there (Contracts: the drill chain): `drill_failed` is the promised answer, not
    /// noise, until such a full had time to be taken, shipped and passed.
    fn drill_before_the_next_full(&self, node: usize, a: &AlertEvent) -> bool {
        let Some(&since) = self.oracle.role_since.get(node) else {
            return false;
        };
        let c = &self.cfg;
        a.id.kind == AlertKind::DrillFailed
            && since > 0
            && self.now
                < since + c.schedule.full_every_ms + 2 * c.schedule.log_every_ms + 10 * MINUTE
    }

    fn stable_secondary(&self, s: usize, since: Millis) -> bool {
        self.sites[s].alive
            && self.nodes[s].up
            && self.oracle.up_since[s] <= since
            && self.oracle.role_since[s] <= since
            && self.role(s) == Some(Role::Secondary)
    }

    /// A failed restore: remember it per distinct operation.
    pub fn oracle_restore_failed(
        &mut self,
        s: usize,
        op: lifeboat_core::OpId,
        meta: &ArtifactMeta,
        now: Millis,
    ) -> bool {
        let rec = self.oracle.failures[s]
            .entry(meta.key)
            .or_insert(crate::oracle::FailRec {
                ops: Vec::new(),
                first: now,
            });
        if rec.ops.contains(&op) {
            return false;
        }
        rec.ops.push(op);
        true
    }

    /// After the failure that reaches the attempt threshold, the engine must raise
    /// `restore_error` while handling that very completion.
    pub fn oracle_restore_error_expectation(
        &self,
        s: usize,
        meta: &ArtifactMeta,
        failed: bool,
    ) -> Option<(AlertKind, Option<DbId>, String)> {
        if !failed || !self.stable_secondary(s, self.now) {
            return None;
        }
        let rec = self.oracle.failures[s].get(&meta.key)?;
        let n = self.cfg.alerts.after_attempts as usize;
        (rec.ops.len() == n && rec.first >= self.oracle.role_since[s]).then(|| {
            (
                AlertKind::RestoreError,
                Some(meta.key.db),
                format!(
                    "restoring {:?} failed for the {n}th time (the attempt threshold)",
                    meta.key
                ),
            )
        })
    }

    /// Re-evaluate whether a secondary database is stuck at a hole: nothing it received
    /// continues its chain, yet it received something further on.
    pub fn oracle_gap_eval(&mut self, s: usize, i: usize) {
        let stuck = self.stuck_at(s, i);
        let slot = &mut self.oracle.gap_since[s][i];
        match (stuck, *slot) {
            (Some(p), Some((_, q))) if p == q => {}
            (Some(p), _) => *slot = Some((self.now, p)),
            (None, _) => *slot = None,
        }
    }

    fn stuck_at(&self, s: usize, i: usize) -> Option<u64> {
        if !self.stable_secondary(s, self.now) {
            return None;
        }
        let seeded = self
            .site_engine(s)
            .db(DbId(i as u32))
            .is_some_and(|d| d.position.is_some());
        if !seeded {
            return None;
        }
        let d = &self.sites[s].dbs[i];
        let p = d.pos;
        let db = DbId(i as u32);
        let mut beyond = false;
        let inbox = &self.sites[s].inbox;
        // The chain rule (README, Contracts: Incrementals): an incremental applies on the full
        // its copy's chain started from, or on a verified full of its own epoch that the
        // position has passed.
        let verified_full = |epoch, base: u64| {
            inbox.iter().any(|(f, r)| {
                f.db == db
                    && f.kind == ArtifactKind::Full
                    && f.epoch == epoch
                    && f.lsn_end.0 == base
                    && !r.bad
            })
        };
        for (k, c) in inbox.range(crate::world::db_keys(db)) {
            // A newer full alone is no hole: the log that reaches it may simply not be here yet.
            if c.bad || k.lsn_end.0 <= p || k.kind == ArtifactKind::Full {
                continue;
            }
            beyond = true;
            let continues = match k.kind {
                ArtifactKind::Log => k.lsn_start.0 <= p,
                ArtifactKind::Incremental => {
                    let base = c.body.meta.base_full.map(|b| b.0);
                    k.lsn_start.0 <= p
                        && (base == d.base_full
                            || base.is_some_and(|b| b <= p && verified_full(k.epoch, b)))
                }
                ArtifactKind::Full => false,
            };
            if continues {
                return None;
            }
        }
        beyond.then_some(p)
    }

    /// The periodic look: staleness, backlog, holes, failing restores, a silent recovery site.
    pub fn oracle_alert_tick(&mut self) {
        let now = self.now;
        let c = &self.cfg.alerts;
        let no_logs = self.late(c.no_new_logs_minutes * MINUTE) + self.cfg.lease.heartbeat_every_ms;
        let backlog_age = self.late(c.backlog_age_minutes * MINUTE);
        let restore_age = self.late(c.after_minutes * MINUTE);
        let gap_after = self.late(
            (u64::from(c.after_attempts) * self.cfg.restore.retry_delay_ms)
                .min(c.after_minutes * MINUTE),
        ) + self.cfg.restore.retry_delay_ms;
        let writer = self.current_primary();
        for s in 0..2 {
            if s == writer || !self.stable_secondary(s, now) {
                continue;
            }
            for i in 0..self.sites[s].dbs.len() {
                if self.stop {
                    return;
                }
                let db = Some(DbId(i as u32));
                let name = self.cfg.db_name(DbId(i as u32)).to_string();
                let site = self.node_name(s);
                // No new logs.
                // Counted from the latest of: the last log or full received, this site's role
                // and process start, the last tick the writer wrote nothing, and the moment the
                // current writer began writing (a new primary owes nothing for its
                // predecessor's silence).
                let since = self.oracle.last_log[s][i]
                    .max(self.oracle.role_since[s])
                    .max(self.oracle.up_since[s])
                    .max(self.oracle.writer_still_at[i])
                    .max(self.oracle.writing_since[writer]);
                let paused =
                    self.oracle.pauses > 0 || self.oracle.pause_changed.is_some_and(|t| t >= since);
                if !paused
                    && now.saturating_sub(since) >= no_logs
                    && self.oracle.writer_prev[i] > self.oracle.received_end[s][i]
                    && !self.oracle.raised_since(s, AlertKind::NoNewLogs, db, since)
                {
                    let msg = format!(
                        "{site}: no transaction log of database {name} arrived since {} while the \
                         primary wrote on, yet no `no_new_logs` alert",
                        crate::outcome::clock_text(since)
                    );
                    return self.violation("alert_threshold", msg);
                }
                // Backlog: the oldest received-but-unrestored artifact that is due (a standby
                // that lags on purpose applies each `restore.apply_delay_ms` after it arrived).
                let pos = self.sites[s].dbs[i].pos;
                let floor = self.oracle.role_since[s];
                let delay = self.cfg.restore.apply_delay_ms;
                let oldest = self.sites[s]
                    .inbox
                    .range(crate::world::db_keys(DbId(i as u32)))
                    .map(|(_, r)| r)
                    .filter(|r| !r.bad && r.at >= floor && r.body.meta.key.lsn_end.0 > pos)
                    .map(|r| r.at + delay)
                    .min()
                    .filter(|due| *due <= now);
                if let Some(t) = oldest {
                    if now - t >= backlog_age
                        && !self.oracle.raised_since(s, AlertKind::Backlog, db, t)
                    {
                        let msg = format!(
                            "{site}: database {name} has an artifact received at {} and not \
                             restored, yet no `backlog` alert [engine: {}]",
                            crate::outcome::clock_text(t),
                            self.engine_db_summary(s, i)
                        );
                        return self.violation("alert_threshold", msg);
                    }
                }
                // A hole.
                self.oracle_gap_eval(s, i);
                if let Some((t, p)) = self.oracle.gap_since[s][i] {
                    if now - t >= gap_after
                        && !self.oracle.raised_since(s, AlertKind::MissingLog, db, t)
                        && !self.oracle.raised_since(s, AlertKind::Reseed, db, t)
                    {
                        let msg = format!(
                            "{site}: database {name} is stuck at position {p} since {} (a hole \
                             in the received chain), yet no `missing_log` or `reseed` alert \
                             [engine: {}]",
                            crate::outcome::clock_text(t),
                            self.engine_db_summary(s, i)
                        );
                        return self.violation("alert_threshold", msg);
                    }
                }
            }
            // Failing restores, by time.
            let failing: Vec<_> = self.oracle.failures[s]
                .iter()
                .map(|(k, r)| (*k, r.first))
                .collect();
            for (k, first) in failing {
                let i = k.db.0 as usize;
                let pos = self.sites[s].dbs[i].pos;
                let needed = self.sites[s].inbox.contains_key(&k)
                    && k.lsn_start.0 <= pos
                    && pos < k.lsn_end.0;
                if !needed {
                    continue;
                }
                if first >= self.oracle.role_since[s]
                    && first >= self.oracle.up_since[s]
                    && now - first >= restore_age
                    && !self
                        .oracle
                        .raised_since(s, AlertKind::RestoreError, Some(k.db), first)
                {
                    let site = self.node_name(s);
                    let msg = format!(
                        "{site}: restoring {k:?} has failed since {}, yet no `restore_error` alert",
                        crate::outcome::clock_text(first)
                    );
                    return self.violation("alert_threshold", msg);
                }
            }
        }
        // A silent recovery site, seen from the primary.
        let p = writer;
        let sec = 1 - p;
        if self.sites[p].alive
            && self.nodes[p].up
            && matches!(self.role(p), Some(Role::Primary | Role::Fenced))
        {
            let since = self.oracle.last_delivery[sec][p]
                .max(self.oracle.up_since[p])
                .max(self.oracle.role_since[p]);
            let bound = self.late(self.cfg.failover.peer_lost_after_ms)
                + self.cfg.shipping.ack_timeout_ms / 2;
            if now - since >= bound
                && !self
                    .oracle
                    .raised_since(p, AlertKind::RecoverySiteLost, None, since)
            {
                let msg = format!(
                    "site {}: nothing heard from the recovery site since {}, yet no \
                     `recovery_site_lost` alert",
                    self.cfg.site_name(SiteId(p as u16)),
                    crate::outcome::clock_text(since)
                );
                return self.violation("alert_threshold", msg);
            }
        }
        for i in 0..self.oracle.writer_prev.len() {
            let pos = self.sites[writer].dbs[i].pos;
            if pos == self.oracle.writer_prev[i] {
                self.oracle.writer_still_at[i] = now;
            }
            self.oracle.writer_prev[i] = pos;
        }
    }
}

impl World {
    /// The engine's own view of a database, for violation messages.
    pub fn engine_db_summary(&self, s: usize, i: usize) -> String {
        let e = self.site_engine(s);
        let Some(d) = e.db(DbId(i as u32)) else {
            return "no such database".into();
        };
        let pending: Vec<String> = d
            .pending
            .iter()
            .map(|p| {
                format!(
                    "{:?}[{},{})@{} tries={}",
                    p.meta.key.kind,
                    p.meta.key.lsn_start.0,
                    p.meta.key.lsn_end.0,
                    p.meta.key.epoch.0,
                    p.attempts
                )
            })
            .collect();
        format!(
            "role {} position {:?} current_full {:?} in_flight {} queued {} gap {:?} reseed_since {:?} pending [{}]",
            e.role().as_str(),
            d.position.map(|l| l.0),
            d.current_full.map(|l| l.0),
            d.in_flight.is_some(),
            d.queued,
            d.gap.as_ref().map(|g| (g.at.0, g.since, g.attempts)),
            d.reseed_since,
            pending.join(" ")
        )
    }
}
