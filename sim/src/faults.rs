//! Applying a schedule's faults to the world: each named mode starts (and, for windows, ends)
//! at its time, on targets resolved when it starts.

use crate::net::ARBITER;
use crate::world::{Ev, World};
use lifeboat_core::protocol::{Input, OperatorRequest};
use lifeboat_core::{DbId, SiteId};
use lifeboat_scenarios::{FaultMode, NodeRef};

impl World {
    fn resolve(&self, r: &NodeRef) -> Option<usize> {
        let primary = SiteId(self.current_primary() as u16);
        match r {
            NodeRef::Arbiter => Some(ARBITER),
            other => other.resolve(&self.cfg, primary).map(|s| s.0 as usize),
        }
    }

    fn db_of(&self, name: &Option<String>) -> Option<DbId> {
        name.as_ref().and_then(|n| self.cfg.db_id(n))
    }

    fn operator(&mut self, node: usize, req: OperatorRequest) {
        if node < 2 && self.sites[node].alive && self.nodes[node].up {
            self.feed(node, Input::Operator(req), None);
        }
    }

    pub fn fault_start(&mut self, i: usize) {
        let f = self.schedule[i].clone();
        let Some(mode) = f.mode else { return };
        let name = f.summary();
        self.trace.note(self.now, || format!("FAULT start {name}"));
        self.trace.add(&[self.now, 0xFA, i as u64]);
        let primary = self.current_primary();
        let secondary = 1 - primary;
        let until = (f.duration.0 > 0).then(|| self.now + f.duration.0);
        let mut targets = Vec::new();
        match mode {
            FaultMode::Partition | FaultMode::PartitionOneWay => {
                let (Some(a), Some(b)) = (
                    f.from.as_ref().and_then(|r| self.resolve(r)),
                    f.to.as_ref().and_then(|r| self.resolve(r)),
                ) else {
                    return;
                };
                if a == b {
                    return;
                }
                self.net.cut(a, b);
                if mode == FaultMode::Partition {
                    self.net.cut(b, a);
                }
                targets = vec![a, b];
            }
            FaultMode::Isolate => {
                let n = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .unwrap_or(primary);
                for m in 0..3 {
                    if m != n {
                        self.net.cut(n, m);
                        self.net.cut(m, n);
                    }
                }
                targets = vec![n];
            }
            FaultMode::Latency => {
                let lat = f.latency.map_or(100, |s| s.0);
                let jit = f.jitter.map_or(0, |s| s.0);
                self.net.latency.push((i, lat, jit));
            }
            FaultMode::Loss => self.net.loss.push((i, f.probability.unwrap_or(0.01))),
            FaultMode::Duplication => self
                .net
                .duplication
                .push((i, f.probability.unwrap_or(0.01))),
            FaultMode::Reorder => self.net.reorder.push((
                i,
                f.probability.unwrap_or(0.1),
                f.latency.map_or(1_000, |s| s.0),
            )),
            FaultMode::CorruptInTransit => {
                self.net.corrupt.push((i, f.probability.unwrap_or(0.05)))
            }
            FaultMode::TruncateInTransit => {
                self.net.truncate.push((i, f.probability.unwrap_or(0.05)))
            }
            FaultMode::CorruptAtRest | FaultMode::TruncateAtRest => {
                let s = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .filter(|&s| s < 2)
                    .unwrap_or(primary);
                let n = f.count.unwrap_or(1);
                if s == primary {
                    self.sites[s].damage_outbox += n;
                } else {
                    self.sites[s].damage_inbox += n;
                }
            }
            FaultMode::NeverShipped => {
                let db = self.db_of(&f.db);
                for _ in 0..f.count.unwrap_or(1) {
                    self.active.never_ship.push(db);
                }
            }
            FaultMode::BackupsPaused => {
                self.sites[primary].paused = true;
                self.oracle.paused_changed(true, self.now);
                self.operator(primary, OperatorRequest::PauseBackups);
                targets = vec![primary];
            }
            FaultMode::BackupsStalled => self.active.stalled += 1,
            FaultMode::RestoreErrorTransient => self
                .active
                .restore_fail
                .push((i, f.probability.unwrap_or(0.2))),
            FaultMode::RestoreErrorPermanent => {
                let db = self.db_of(&f.db);
                for _ in 0..f.count.unwrap_or(1) {
                    self.active.poison_next.push(db);
                }
            }
            FaultMode::SlowRestores => self.active.slow.push((i, f.factor.unwrap_or(20.0))),
            FaultMode::DiskPressure => {
                self.active.disk_pressure += 1;
                for s in 0..2 {
                    self.report_disk(s);
                }
            }
            FaultMode::EngineCrash => {
                let n = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .unwrap_or(primary);
                self.crash(n);
                let back = self.now + f.duration.0.max(100);
                self.q.push(back, Ev::Restart { node: n });
                return self.set_targets(i, vec![n]);
            }
            FaultMode::ClockDrift => {
                let nodes: Vec<usize> = match f.site.as_ref().and_then(|r| self.resolve(r)) {
                    Some(n) => vec![n],
                    None => vec![0, 1, ARBITER],
                };
                for &n in &nodes {
                    let ppm = f.drift_ppm.unwrap_or(0);
                    self.nodes[n].clock.set_rate(self.now, ppm);
                    self.rearm(n);
                }
                targets = nodes;
            }
            FaultMode::ClockStep => {
                let n = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .unwrap_or(ARBITER);
                self.nodes[n]
                    .clock
                    .step(self.now, f.step.map_or(0, |s| s.0));
                self.rearm(n);
            }
            FaultMode::SiteLoss => {
                let s = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .filter(|&s| s < 2)
                    .unwrap_or(primary);
                self.kill_site(s);
                return;
            }
            FaultMode::OldPrimaryReturns => {
                let s = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .filter(|&s| s < 2)
                    .unwrap_or(primary);
                self.kill_site(s);
                targets = vec![s];
            }
            FaultMode::ArbiterLoss => {
                self.crash(ARBITER);
                self.oracle.arbiter_lost(self.now);
                targets = vec![ARBITER];
            }
            FaultMode::ArbiterStateLost if self.etcd.is_some() => {
                // etcd keeps its state by quorum: its members' disks are not all lost at once.
                self.trace.note(self.now, || {
                    "etcd keeps its state by quorum: arbiter_state_lost acts as arbiter_loss".into()
                });
                self.crash(ARBITER);
                self.oracle.arbiter_lost(self.now);
                targets = vec![ARBITER];
            }
            FaultMode::ArbiterStateLost => {
                self.crash(ARBITER);
                self.nodes[ARBITER].wipe_disk();
                self.trace.note(self.now, || {
                    "arbiter DISK LOST (a fresh arbiter comes later)".into()
                });
                self.oracle.arbiter_lost(self.now);
                self.oracle_arbiter_state_lost();
                targets = vec![ARBITER];
            }
            FaultMode::Switchover => {
                self.operator(primary, OperatorRequest::Switchover);
                self.oracle_switchover_requested(primary);
            }
            FaultMode::Failback => {
                self.operator(primary, OperatorRequest::Failback);
                self.oracle_switchover_requested(primary);
            }
            FaultMode::Drill => {
                let db = self.db_of(&f.db);
                self.operator(secondary, OperatorRequest::Drill { db })
            }
            FaultMode::ForcedFailover => {
                let req = self.forced_failover_request();
                self.operator(secondary, req)
            }
            FaultMode::FlappingLink => {
                let (Some(a), Some(b)) = (
                    f.from.as_ref().and_then(|r| self.resolve(r)),
                    f.to.as_ref().and_then(|r| self.resolve(r)),
                ) else {
                    return;
                };
                if a == b {
                    return;
                }
                self.set_targets(i, vec![a, b]);
                self.active.flapping.insert(i, false);
                self.flap(i, true);
                self.oracle_flapping_started(i, a, b);
                targets = vec![a, b];
            }
            FaultMode::EtcdLeaderChange | FaultMode::WitnessSlow | FaultMode::WitnessAnswerLost
                if self.etcd.is_none() =>
            {
                self.trace.note(self.now, || {
                    format!("{name}: no effect, the witness is the built-in arbiter")
                });
                return;
            }
            FaultMode::EtcdLeaderChange => {
                self.etcd_election(true);
                if until.is_none() {
                    // No window: the new leader at once.
                    self.etcd_election(false);
                } else {
                    targets = vec![ARBITER];
                }
            }
            FaultMode::WitnessSlow => {
                let hold = f.latency.map_or(1_000, |s| s.0);
                if let Some(e) = self.etcd.as_mut() {
                    e.slow.push((i, hold));
                }
                targets = vec![ARBITER];
            }
            FaultMode::WitnessAnswerLost => {
                let p = f.probability.unwrap_or(0.1);
                if let Some(e) = self.etcd.as_mut() {
                    e.lost.push((i, p));
                }
                targets = vec![ARBITER];
            }
            FaultMode::ServiceDown => {
                let s = f
                    .site
                    .as_ref()
                    .and_then(|r| self.resolve(r))
                    .filter(|&s| s < 2)
                    .unwrap_or(primary);
                self.sites[s].restart_fails = f
                    .probability
                    .unwrap_or(lifeboat_scenarios::SERVICE_RESTART_FAILS);
                self.set_service_down(s, true);
                targets = vec![s];
            }
        }
        self.set_targets(i, targets);
        self.oracle_paths_changed();
        if let Some(t) = until {
            if !matches!(
                mode,
                FaultMode::CorruptAtRest
                    | FaultMode::TruncateAtRest
                    | FaultMode::NeverShipped
                    | FaultMode::RestoreErrorPermanent
                    | FaultMode::ClockStep
                    | FaultMode::Switchover
                    | FaultMode::Failback
                    | FaultMode::Drill
                    | FaultMode::ForcedFailover
            ) {
                self.q.push(t, Ev::FaultEnd(i));
            }
        }
    }

    fn set_targets(&mut self, i: usize, targets: Vec<usize>) {
        self.active.targets.insert(i, targets);
    }

    pub fn fault_end(&mut self, i: usize) {
        let f = self.schedule[i].clone();
        let Some(mode) = f.mode else { return };
        let name = f.summary();
        self.trace.note(self.now, || format!("FAULT end {name}"));
        self.trace.add(&[self.now, 0xFB, i as u64]);
        let targets = self.active.targets.remove(&i).unwrap_or_default();
        match mode {
            FaultMode::Partition | FaultMode::PartitionOneWay => {
                if let [a, b] = targets[..] {
                    self.net.heal(a, b);
                    if mode == FaultMode::Partition {
                        self.net.heal(b, a);
                    }
                }
            }
            FaultMode::Isolate => {
                if let [n] = targets[..] {
                    for m in 0..3 {
                        if m != n {
                            self.net.heal(n, m);
                            self.net.heal(m, n);
                        }
                    }
                }
            }
            FaultMode::Latency
            | FaultMode::Loss
            | FaultMode::Duplication
            | FaultMode::Reorder
            | FaultMode::CorruptInTransit
            | FaultMode::TruncateInTransit => self.net.remove_fault(i),
            FaultMode::BackupsPaused => {
                if let [s] = targets[..] {
                    if self.sites[s].alive && self.nodes[s].up {
                        self.sites[s].paused = false;
                        self.oracle.paused_changed(false, self.now);
                        self.operator(s, OperatorRequest::ResumeBackups);
                    } else {
                        // The agent is down: the operator's resume cannot reach it, and the
                        // pause stands (in its journal) until they resume again once it is back.
                        self.sites[s].resume_when_up = true;
                    }
                }
            }
            FaultMode::BackupsStalled => {
                self.active.stalled = self.active.stalled.saturating_sub(1)
            }
            FaultMode::RestoreErrorTransient => self.active.restore_fail.retain(|x| x.0 != i),
            FaultMode::SlowRestores => self.active.slow.retain(|x| x.0 != i),
            FaultMode::DiskPressure => {
                self.active.disk_pressure = self.active.disk_pressure.saturating_sub(1);
                for s in 0..2 {
                    self.report_disk(s);
                }
            }
            FaultMode::ClockDrift => {
                for n in targets {
                    self.nodes[n].clock.set_rate(self.now, 0);
                    self.rearm(n);
                }
            }
            FaultMode::OldPrimaryReturns => {
                if let [s] = targets[..] {
                    self.revive_site(s);
                }
            }
            FaultMode::ArbiterLoss | FaultMode::ArbiterStateLost => {
                self.restart(ARBITER);
                self.oracle.arbiter_back(self.now);
            }
            FaultMode::FlappingLink if self.active.flapping.remove(&i) == Some(true) => {
                if let [a, b] = targets[..] {
                    self.net.heal(a, b);
                    self.net.heal(b, a);
                }
            }
            FaultMode::ServiceDown => {
                if let [s] = targets[..] {
                    self.set_service_down(s, false);
                }
            }
            FaultMode::EtcdLeaderChange if !targets.is_empty() => self.etcd_election(false),
            FaultMode::WitnessSlow | FaultMode::WitnessAnswerLost => {
                if let Some(e) = self.etcd.as_mut() {
                    e.slow.retain(|x| x.0 != i);
                    e.lost.retain(|x| x.0 != i);
                }
            }
            _ => {}
        }
        self.oracle_paths_changed();
    }

    /// A `flapping_link` fault's link goes down or comes back; the next change is scheduled
    /// while the fault lasts.
    pub fn flap(&mut self, i: usize, down: bool) {
        let Some(&cut) = self.active.flapping.get(&i) else {
            return; // the fault is over
        };
        let Some(&[a, b]) = self.active.targets.get(&i).map(Vec::as_slice) else {
            return;
        };
        if cut == down {
            return;
        }
        if down {
            self.net.cut(a, b);
            self.net.cut(b, a);
        } else {
            self.net.heal(a, b);
            self.net.heal(b, a);
        }
        self.active.flapping.insert(i, down);
        self.trace
            .add(&[self.now, 0xF1A9, i as u64, u64::from(down)]);
        let f = &self.schedule[i];
        let d = f.down.map_or(lifeboat_scenarios::FLAP_DOWN, |s| s.0).max(1);
        let every = f
            .every
            .map_or(lifeboat_scenarios::FLAP_EVERY, |s| s.0)
            .max(d + 1);
        let next = if down { d } else { every - d };
        self.q.push(
            self.now + next,
            Ev::Flap {
                fault: i,
                down: !down,
            },
        );
        self.oracle_paths_changed();
    }
}
