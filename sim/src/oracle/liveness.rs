//! `catch_up` and `rto`: the world heals. After the last fault ends, a writer exists and the
//! secondary catches up within a bound; with the arbiter reachable, a lost primary site is
//! replaced within the RTO bound.

use crate::net::ARBITER;
use crate::world::{Ev, World};
use lifeboat_core::engine::Role;
use lifeboat_core::{DbId, Epoch, Millis, SiteId, MINUTE};
use lifeboat_scenarios::FaultMode;

/// Deferred checks.
#[derive(Clone, Debug)]
pub enum Check {
    /// Note the writer's positions; the secondary must reach them by `CatchUp`.
    CatchUpMark,
    CatchUp,
    /// The primary site `lost` was lost at `at` (epoch then `epoch`): a new primary must be
    /// writable by now.
    Rto {
        lost: usize,
        at: Millis,
        epoch: Epoch,
    },
    /// A planned switchover began at `started`: some site must accept writes again in time.
    SwitchoverWriter {
        started: Millis,
    },
    /// A flapping link (fault `fault`) ends now: one `link_down`, kept while it flapped.
    Flapping {
        fault: usize,
        from: Millis,
    },
    /// An Auto Pilot path began at `began`: a writable site, or an active critical alert.
    AutoPilot {
        began: Millis,
    },
    /// A primary site lost at `at`: the recovery site must have announced it by now.
    Announced {
        lost: usize,
        at: Millis,
    },
    /// A switchover that began at `started`: its source (`target` false) or target must have
    /// left its switchover role by now.
    SwitchoverEnds {
        started: Millis,
        target: bool,
    },
    /// Not an oracle: the operator looks at a `primary_down` raised at `site` at `since`.
    Force {
        site: usize,
        since: Millis,
    },
}

/// A hook that works again is run again at the next re-issue of its operation.
fn c_op_timeout(c: &lifeboat_core::Config) -> Millis {
    c.restore.op_timeout_ms
}

pub(crate) fn benign_for_rto(m: FaultMode) -> bool {
    matches!(
        m,
        FaultMode::CorruptInTransit
            | FaultMode::TruncateInTransit
            | FaultMode::CorruptAtRest
            | FaultMode::TruncateAtRest
            | FaultMode::NeverShipped
            | FaultMode::BackupsPaused
            | FaultMode::BackupsStalled
            | FaultMode::RestoreErrorPermanent
            | FaultMode::RestoreErrorTransient
            | FaultMode::DiskPressure
            | FaultMode::Drill
            | FaultMode::ClockDrift
            | FaultMode::ClockStep
    )
}

impl World {
    /// When every fault of the schedule is over (instants count as over at once, a crash when
    /// its process is back). `None` when a site is lost for good.
    pub fn heal_time(&self) -> Option<Millis> {
        let mut heal = 0;
        for f in &self.schedule {
            let Some(m) = f.mode else { continue };
            if m == FaultMode::SiteLoss {
                return None;
            }
            let end = match m {
                FaultMode::ClockDrift if f.duration.0 == 0 => f.at.0,
                _ if f.duration.0 == 0
                    && !matches!(
                        m,
                        FaultMode::Latency
                            | FaultMode::Loss
                            | FaultMode::Duplication
                            | FaultMode::Reorder
                            | FaultMode::CorruptInTransit
                            | FaultMode::TruncateInTransit
                            | FaultMode::RestoreErrorTransient
                            | FaultMode::SlowRestores
                    ) =>
                {
                    f.at.0
                }
                _ if f.duration.0 == 0 => return None, // for the rest of the run
                _ => f.at.0 + f.duration.0,
            };
            heal = heal.max(end);
        }
        match self.hook_trouble_until() {
            Some(Millis::MAX) => None,
            Some(t) => Some(heal.max(t)),
            None => Some(heal),
        }
    }

    /// Until when a hook the configuration uses misbehaves (`world.restart_hook` with
    /// `failover.local_restart`, `world.fence_hook` with `failover.fence_hook`; `Millis::MAX`:
    /// for the whole run), `None` when none does. A promotion waits for its external fence and
    /// Auto Pilot for its restart: the availability bounds do not hold meanwhile.
    pub fn hook_trouble_until(&self) -> Option<Millis> {
        let p = &self.params;
        let f = &self.cfg.failover;
        let bad = (f.fence_hook && p.fence_hook != lifeboat_scenarios::Hook::Works)
            || (f.local_restart && p.restart_hook != lifeboat_scenarios::Hook::Works);
        bad.then(|| match p.hooks_heal_at.0 {
            0 => Millis::MAX,
            t => t + c_op_timeout(&self.cfg),
        })
    }

    /// How long after the faults heal the secondary must have caught up: a hole's reseed (the
    /// hole's threshold, a full backup, shipping, restoring), a few log periods, re-issued
    /// operations, and a lease for a new writer to settle.
    pub fn catch_up_bound(&self) -> Millis {
        let c = &self.cfg;
        2 * c.restore.reseed_after_minutes * MINUTE
            + 4 * c.schedule.log_every_ms
            + 2 * c.restore.op_timeout_ms
            + 4 * c.lease.lease_ms
            + c.restore.retry_delay_ms * u64::from(c.alerts.after_attempts)
            + 40 * MINUTE
            + c.restore.apply_delay_ms
    }

    /// How far behind the primary a caught-up secondary may be: a few log periods, and a
    /// standby that lags on purpose by its delay.
    fn catch_up_lag(&self) -> Millis {
        2 * self.cfg.schedule.log_every_ms + 2 * MINUTE + self.cfg.restore.apply_delay_ms
    }

    pub fn oracle_start(&mut self) {
        self.oracle.hold_down = crate::oracle::hold_down_ms(&self.cfg);
        self.oracle.clean = self
            .schedule
            .iter()
            .all(|f| f.mode.is_none_or(FaultMode::is_operation));
        if let Some(heal) = self.heal_time() {
            let at = heal + self.catch_up_bound();
            if at < self.end {
                self.q
                    .push(at - self.catch_up_lag(), Ev::Check(Check::CatchUpMark));
                self.q.push(at, Ev::Check(Check::CatchUp));
            }
        }
    }

    pub fn oracle_tick(&mut self) {
        for s in 0..2 {
            self.check_prefix(s);
        }
        if !self.stop {
            self.oracle_alert_tick();
        }
    }

    pub fn oracle_restored(&mut self, s: usize, _db: usize) {
        self.check_prefix(s);
    }

    pub fn oracle_end(&mut self) {
        for s in 0..2 {
            self.check_prefix(s);
        }
        self.oracle_auto_pilot_end();
    }

    fn writers(&self) -> Vec<usize> {
        (0..2)
            .filter(|&s| self.sites[s].alive && self.sites[s].writable)
            .collect()
    }

    pub fn check(&mut self, c: Check) {
        match c {
            Check::CatchUpMark => {
                self.settle();
                if let [w] = self.writers()[..] {
                    let pos = self.sites[w].dbs.iter().map(|d| d.pos).collect();
                    self.oracle.catch_up_mark = Some((w, pos));
                }
            }
            Check::CatchUp => {
                self.settle();
                let writers = self.writers();
                let [w] = writers[..] else {
                    return self.violation(
                        "catch_up",
                        format!(
                            "{} after the last fault healed, {} sites accept writes (expected \
                             exactly one)",
                            crate::lifeboat_scenarios_span(self.catch_up_bound()),
                            writers.len()
                        ),
                    );
                };
                let s = 1 - w;
                let ready = self.sites[s].alive
                    && self.nodes[s].up
                    && self.role(s) == Some(Role::Secondary);
                if !ready {
                    let role = self
                        .role(s)
                        .map_or("down".into(), |r| r.as_str().to_string());
                    return self.violation(
                        "catch_up",
                        format!(
                            "{} after the last fault healed, site {} is {role}, not a secondary \
                             protecting the primary",
                            crate::lifeboat_scenarios_span(self.catch_up_bound()),
                            self.cfg.site_name(SiteId(s as u16))
                        ),
                    );
                }
                let Some((mw, mark)) = self.oracle.catch_up_mark.clone() else {
                    return;
                };
                if mw != w {
                    return;
                }
                for (i, want) in mark.iter().enumerate() {
                    let have = self.sites[s].dbs[i].pos;
                    if have < *want {
                        let msg = format!(
                            "site {} has database {} at position {have}, behind the position \
                             {want} the primary had {} earlier ({} after the last fault healed) \
                             [engine: {}]",
                            self.cfg.site_name(SiteId(s as u16)),
                            self.cfg.db_name(DbId(i as u32)),
                            crate::lifeboat_scenarios_span(self.catch_up_lag()),
                            crate::lifeboat_scenarios_span(self.catch_up_bound()),
                            self.engine_db_summary(s, i)
                        );
                        return self.violation("catch_up", msg);
                    }
                }
            }
            Check::SwitchoverWriter { started } => self.check_switchover_writer(started),
            Check::Flapping { fault, from } => self.check_flapping(fault, from),
            Check::AutoPilot { began } => self.check_auto_pilot(began),
            Check::Force { site, since } => self.operator_force(site, since),
            Check::Announced { lost, at } => self.check_announced(lost, at),
            Check::SwitchoverEnds { started, target } => {
                self.check_switchover_ends(started, target)
            }
            Check::Rto { lost, at, epoch } => {
                let replaced = (0..2).any(|s| {
                    s != lost
                        && self.sites[s].alive
                        && self.sites[s].writable
                        && self.sites[s].db_epoch > epoch
                });
                // The lost primary came back (before anyone took over) and had its databases
                // opened for writing again: nothing was left to replace.
                let came_back =
                    self.sites[lost].alive && self.oracle.reopened_at[lost].is_some_and(|t| t > at);
                // The other site took part in a failover (automatic or forced: swarm seed
                // 250837) within the hold-down: it holds back by configuration (README,
                // Hold-down), its critical alert raised. A site replaced while cut off counts the
                // hold-down from when it learned of the failover, which can be up to another
                // hold-down later.
                let other = 1 - lost.min(1);
                let held_down = self.oracle.last_failover.is_some_and(|prev| {
                    at.saturating_sub(prev) < 2 * self.oracle.hold_down
                        && self.oracle.up_since[other] <= prev
                }) || self.oracle.took_over_at[other]
                    // Its own takeover counts too, even when a later failover replaced it while
                    // it was down (swarm seed 9700386: promoted at 10h38, replaced at 10h45
                    // while down, the new primary lost at 10h56: held back until 11h04).
                    .is_some_and(|t| at.saturating_sub(t) < 2 * self.oracle.hold_down);
                if !replaced && !came_back && !held_down {
                    let msg = format!(
                        "the primary site {} was lost at {} with the arbiter reachable, and no \
                         other site was writable {} later",
                        self.cfg.site_name(SiteId(lost as u16)),
                        crate::outcome::clock_text(at),
                        crate::lifeboat_scenarios_span(self.now - at)
                    );
                    self.violation("rto", msg);
                }
            }
        }
    }

    /// A site was lost: when it was the primary and the secondary can take over (arbiter up and
    /// reachable, nothing else in the way), plan the RTO check.
    pub fn oracle_site_lost(&mut self, lost: usize, was_primary: bool) {
        let c = &self.cfg;
        if !was_primary || !c.arbiter || !c.failover.automatic || c.failover.confirm {
            return;
        }
        let s = 1 - lost;
        let ok = self.sites[s].alive
            && self.nodes[s].up
            && self.nodes[ARBITER].up
            && self.witness_serving()
            && self.net.up(s, ARBITER)
            && self.net.up(ARBITER, s)
            && self.role(s) == Some(Role::Secondary)
            && self.site_engine(s).state().procedure.is_none()
            && (0..self.sites[s].dbs.len()).all(|i| {
                self.site_engine(s)
                    .db(DbId(i as u32))
                    .is_some_and(|d| d.position.is_some() && d.reseed_since.is_none())
            });
        if !ok {
            return;
        }
        let rho_ppm = c.lease.max_drift_ppm;
        let lease = c.lease.lease_ms;
        let lapse =
            lease + lease * rho_ppm * 4 / 1_000_000 + 2 * c.drift_margin() + c.lease.renew_every_ms;
        let f = &c.failover;
        let detect = (u64::from(f.unhealthy_count) * f.probe_every_ms).max(f.unhealthy_for_ms)
            + 2 * f.probe_every_ms;
        let view = c.lease.arbiter_timeout_ms + f.probe_every_ms;
        let restart = if f.local_restart {
            f.local_restart_wait_ms
        } else {
            0
        };
        // Draining: everything received and not restored, restore slots in parallel.
        let slow = self.active.slow_factor();
        let mut work: Millis = 0;
        let mut items: Millis = 0;
        for (k, r) in &self.sites[s].inbox {
            let pos = self.sites[s].dbs[k.db.0 as usize].pos;
            if r.bad || k.lsn_end.0 <= pos {
                continue;
            }
            let txs = k.lsn_end.0.saturating_sub(k.lsn_start.0);
            let base = self.params.restore_base.0 + self.params.restore_per_ktx.0 * txs / 1000;
            work += (base as f64 * slow) as Millis;
            items += 1;
        }
        // Restores already running finish first (the drain waits for them).
        let running = self.sites[s]
            .restore_ends
            .values()
            .map(|t| t.saturating_sub(self.now))
            .max()
            .unwrap_or(0);
        let drain =
            running + work / Millis::from(c.restore.parallelism.max(1)) + items * 50 + MINUTE;
        let ops =
            c.lease.fence_time_ms + 3 * self.params.role_op_time.0 + 2 * c.lease.arbiter_timeout_ms;
        let bound = lapse.max(detect) + view + restart + drain + ops + 30_000;
        // Only when nothing else in the schedule gets in the way meanwhile.
        let (from, to) = (self.now.saturating_sub(lease), self.now + bound);
        let disturbed = self.schedule.iter().any(|x| {
            let Some(m) = x.mode else { return false };
            if benign_for_rto(m) {
                return false;
            }
            let (a, b) = (x.at.0, x.at.0 + x.duration.0.max(10 * MINUTE));
            let this_one = matches!(m, FaultMode::SiteLoss | FaultMode::OldPrimaryReturns)
                && x.at.0 == self.now;
            !this_one && a < to && b > from
        });
        let hooks = self.hook_trouble_until().is_some_and(|t| t > from);
        if disturbed || hooks || self.now + bound >= self.end {
            return;
        }
        let epoch = self.truth.epoch;
        let at = self.now;
        self.q
            .push(self.now + bound, Ev::Check(Check::Rto { lost, at, epoch }));
    }
}
