//! The scripted world of the guard tests (`procedure_guards.rs`, `probe_guards.rs`): one
//! `SiteEngine` whose primary's probes answer as the test says, whose arbiter answers queries
//! with the view the test gives it (or not at all), and whose commands complete a few
//! milliseconds after they are issued. Each test binary uses the parts it needs.
#![allow(dead_code)]

use lifeboat_core::alert::{AlertChange, AlertKind};
use lifeboat_core::engine::{Role, SiteEngine, SiteState, Step};
use lifeboat_core::protocol::{ArbiterView, Command, Input, Message, Output, Peer, ProbeTarget};
use lifeboat_core::{
    AlertEvent, ArtifactKind, ArtifactMeta, Config, DbId, Epoch, Lsn, Millis, OpId, SiteId,
};
use lifeboat_testkit::{failure, Backup, Done, Model, Ship};
use std::collections::VecDeque;

/// The initial primary.
pub const A: SiteId = SiteId(0);
/// The recovery site, the engine under test unless a test says otherwise.
pub const B: SiteId = SiteId(1);

pub fn cfg() -> Config {
    let c = Config {
        databases: vec!["db0".into()],
        ..Config::default()
    };
    assert!(c.arbiter);
    assert_eq!(c.failover.probe_every_ms, 1_000);
    assert_eq!(c.failover.unhealthy_count, 3);
    assert_eq!(c.failover.unhealthy_for_ms, 3_000);
    assert_eq!(c.lease.arbiter_timeout_ms, 3_000);
    c
}

/// One site engine in a scripted world.
pub struct Site {
    pub cfg: Config,
    pub me: SiteId,
    pub e: SiteEngine,
    pub now: Millis,
    /// Scripted inputs, by the time they arrive.
    pub queue: VecDeque<(Millis, Input)>,
    /// Everything the engine put out, with the time.
    pub log: Vec<(Millis, Output)>,
    /// Probes get an answer at all (`false`: they time out silently, nothing comes back).
    pub probes_answer: bool,
    /// The primary's site answers the reachability probe.
    pub primary_site_ok: bool,
    /// The primary's database service answers the service probe.
    pub primary_service_ok: bool,
    /// This site's own database service answers its checks.
    pub own_service_ok: bool,
    /// The arbiter's answer to a `Query`; `None`: the arbiter does not answer.
    pub arbiter: Option<ArbiterView>,
    /// Restores (and reseeds) complete; `false`: they never do.
    pub restores_complete: bool,
    /// This many of the next restores fail (transiently).
    pub fail_restores: u32,
    /// Role commands (fence, promote, identity, external fence, backups) complete.
    pub role_ops_complete: bool,
    /// The arbiter grants every `Renew` and `Acquire` and accepts every `Handoff`; `false`: it
    /// does not answer them.
    pub grants: bool,
}

impl Site {
    pub fn new(cfg: Config, me: SiteId) -> Site {
        let mut s = Site::unstarted(cfg, me);
        s.input(Input::Tick);
        s
    }

    /// The engine before its first input (set the world up, then feed it).
    pub fn unstarted(cfg: Config, me: SiteId) -> Site {
        let e = SiteEngine::new(cfg.clone(), me);
        Site {
            cfg,
            me,
            e,
            now: 0,
            queue: VecDeque::new(),
            log: Vec::new(),
            probes_answer: true,
            primary_site_ok: true,
            primary_service_ok: true,
            own_service_ok: true,
            arbiter: None,
            restores_complete: true,
            fail_restores: 0,
            role_ops_complete: true,
            grants: false,
        }
    }

    /// The recovery site, started at t = 0.
    pub fn secondary() -> Site {
        Site::new(cfg(), B)
    }

    /// Rebuild the engine from its own state after `edit` (as a journal replay would, without a
    /// restart): the way to put a guard's inputs in place exactly.
    pub fn edit(&mut self, edit: impl FnOnce(&mut SiteState)) {
        let mut st = self.e.state().clone();
        edit(&mut st);
        self.e = SiteEngine::from_state(self.cfg.clone(), self.me, st);
    }

    pub fn input(&mut self, input: Input) {
        self.e.handle(self.now, input);
        self.process();
    }

    /// The process restarts: the engine is rebuilt from its state and told so.
    pub fn restart(&mut self) {
        let st = self.e.state().clone();
        self.e = SiteEngine::from_state(self.cfg.clone(), self.me, st);
        self.input(Input::Restarted);
    }

    pub fn message(&mut self, from: Peer, msg: Message) {
        self.input(Input::Message { from, msg });
    }

    pub fn hear_primary(&mut self, msg: Message) {
        self.message(Peer::Site(A), msg);
    }

    pub fn later(&mut self, delay: Millis, input: Input) {
        let at = self.now + delay;
        let i = self.queue.partition_point(|(t, _)| *t <= at);
        self.queue.insert(i, (at, input));
    }

    pub fn process(&mut self) {
        while let Some(out) = self.e.poll_output() {
            match &out {
                Output::Command(c) => lifeboat_testkit::execute(self, 0, c.clone()),
                Output::Send {
                    to: Peer::Arbiter,
                    msg:
                        Message::Renew { epoch, req }
                        | Message::Acquire {
                            seen: epoch, req, ..
                        },
                } if self.grants => {
                    let next = matches!(
                        &out,
                        Output::Send {
                            msg: Message::Acquire { .. },
                            ..
                        }
                    );
                    let epoch = Epoch(epoch.0 + u64::from(next));
                    let msg = Message::Granted {
                        epoch,
                        lease_ms: self.cfg.lease.lease_ms,
                        req: *req,
                    };
                    self.later(
                        10,
                        Input::Message {
                            from: Peer::Arbiter,
                            msg,
                        },
                    );
                }
                Output::Send {
                    to: Peer::Arbiter,
                    msg: Message::Handoff { epoch, to, req },
                } if self.grants => {
                    let view = view(epoch.0 + 1, Some(*to), true, false);
                    let msg = Message::View { view, req: *req };
                    self.later(
                        10,
                        Input::Message {
                            from: Peer::Arbiter,
                            msg,
                        },
                    );
                }
                Output::Send {
                    to: Peer::Arbiter,
                    msg: Message::QueryAt { req, .. },
                } => {
                    if let Some(view) = self.arbiter.clone() {
                        let req = *req;
                        self.later(
                            10,
                            Input::Message {
                                from: Peer::Arbiter,
                                msg: Message::View { view, req },
                            },
                        );
                    }
                }
                _ => {}
            }
            self.log.push((self.now, out));
        }
    }

    /// Run the engine (its timers and the scripted inputs) until `t`.
    pub fn run_until(&mut self, t: Millis) {
        for _ in 0..1_000_000 {
            let timer = self.e.poll_timeout().unwrap_or(Millis::MAX);
            let queued = self.queue.front().map_or(Millis::MAX, |(at, _)| *at);
            let at = timer.min(queued).max(self.now);
            if at > t {
                self.now = t;
                return;
            }
            self.now = at;
            if queued <= at {
                let (_, input) = self.queue.pop_front().unwrap();
                self.input(input);
            } else {
                self.input(Input::Tick);
            }
        }
        panic!("the engine never settles before {t} (a busy loop?)");
    }

    pub fn run(&mut self, ms: Millis) {
        self.run_until(self.now + ms);
    }

    // ---- observations

    pub fn sent(&self, to: Peer) -> Vec<(Millis, Message)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Send { to: d, msg } if *d == to => Some((*t, msg.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn queries(&self) -> Vec<Millis> {
        self.sent(Peer::Arbiter)
            .into_iter()
            .filter(|(_, m)| matches!(m, Message::QueryAt { .. }))
            .map(|(t, _)| t)
            .collect()
    }

    pub fn to_arbiter(&self, pred: impl Fn(&Message) -> bool) -> Vec<(Millis, Message)> {
        self.sent(Peer::Arbiter)
            .into_iter()
            .filter(|(_, m)| pred(m))
            .collect()
    }

    pub fn to_peer(&self, pred: impl Fn(&Message) -> bool) -> Vec<(Millis, Message)> {
        let peer = SiteId(1 - self.me.0);
        self.sent(Peer::Site(peer))
            .into_iter()
            .filter(|(_, m)| pred(m))
            .collect()
    }

    pub fn commands(&self, pred: impl Fn(&Command) -> bool) -> Vec<(Millis, Command)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Command(c) if pred(c) => Some((*t, c.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn probe_ticks(&self) -> Vec<Millis> {
        self.commands(|c| matches!(c, Command::Probe))
            .into_iter()
            .map(|(t, _)| t)
            .collect()
    }

    pub fn alerts(&self, kind: AlertKind) -> Vec<(Millis, AlertEvent)> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Alert(a) if a.id.kind == kind => Some((*t, a.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn raised(&self, kind: AlertKind) -> Vec<(Millis, AlertEvent)> {
        self.alerts(kind)
            .into_iter()
            .filter(|(_, a)| a.change == AlertChange::Raised)
            .collect()
    }

    pub fn audits(&self, what: &str) -> Vec<Millis> {
        self.log
            .iter()
            .filter_map(|(t, o)| match o {
                Output::Audit(a) if a.what == what => Some(*t),
                _ => None,
            })
            .collect()
    }

    pub fn role(&self) -> Role {
        self.e.role()
    }

    pub fn step(&self) -> Option<Step> {
        self.e.state().procedure.as_ref().map(|p| p.step.clone())
    }
}

/// The arbiter's view: `epoch`, its holder, whether the holder renews, whether its lease lapsed.
pub fn view(epoch: u64, holder: Option<SiteId>, renewing: bool, lapsed: bool) -> ArbiterView {
    ArbiterView {
        epoch: Epoch(epoch),
        holder,
        holder_renewing: renewing,
        lease_lapsed: lapsed,
        since_renewal_ms: if renewing { Some(500) } else { Some(12_000) },
    }
}

/// The scripted world as the shared executor sees it: reports arrive after a delay (ms).
impl Model for Site {
    type When = Millis;

    fn deliver(&mut self, _: usize, after: Millis, inputs: Vec<Input>) {
        for input in inputs {
            self.later(after, input);
        }
    }

    /// Role commands (fence, promote, identity, external fence, backups, restarts).
    fn completes(&mut self, _: usize, _: OpId) -> Done<Millis> {
        if self.role_ops_complete {
            Done::ok(5)
        } else {
            Done::Later
        }
    }

    fn ship(&mut self, _: usize, _: OpId, _: ArtifactMeta, _: SiteId) -> Ship<Millis> {
        Ship::Silent
    }

    fn restore(&mut self, _: usize, _: OpId, _: ArtifactMeta, _: bool) -> Done<Millis> {
        self.database_job()
    }

    fn drill(&mut self, _: usize, _: OpId, _: DbId, _: Lsn, _: &[ArtifactMeta]) -> Done<Millis> {
        self.database_job()
    }

    fn backup(
        &mut self,
        site: usize,
        op: OpId,
        _: Option<DbId>,
        _: ArtifactKind,
    ) -> Backup<Millis> {
        let done = self.completes(site, op);
        Backup {
            found: Vec::new(),
            done,
        }
    }

    fn probe(&mut self, _: usize) -> (Millis, Vec<(ProbeTarget, bool)>) {
        let results = if self.probes_answer {
            vec![
                (ProbeTarget::Site, self.primary_site_ok),
                (ProbeTarget::Service, self.primary_service_ok),
            ]
        } else {
            Vec::new()
        };
        (10, results)
    }

    fn positions(&mut self, _: usize) -> (Millis, Vec<(DbId, Lsn)>) {
        (0, Vec::new())
    }

    fn check_service(&mut self, _: usize, _: OpId) -> Done<Millis> {
        let result = if self.own_service_ok {
            Ok(())
        } else {
            Err(failure(2006, "the local service does not answer", false))
        };
        Done::At(5, result)
    }
}

impl Site {
    /// Restores, reseeds and drills: complete (or fail) after 20 ms, unless they never do.
    fn database_job(&mut self) -> Done<Millis> {
        if !self.restores_complete {
            return Done::Later;
        }
        let result = if self.fail_restores > 0 {
            self.fail_restores -= 1;
            Err(failure(4305, "the log is too recent to apply", false))
        } else {
            Ok(())
        };
        Done::At(20, result)
    }
}
