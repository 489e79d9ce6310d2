//! The arbiter (witness): owns `(epoch, holder, lease expiry)` and is the only authority that
//! starts a new epoch. It grants a new epoch to another site only after the old lease expired
//! plus the maximum clock-drift margin, and tells a secondary whether it still sees the primary
//! renewing — the third vantage point that separates a dead site from a dead link.
//!
//! **Epochs come only from the arbiter.** No site message sets the arbiter's epoch or holder:
//! the epoch changes only by a hand-off its holder asks for, or by a grant to a site that asks
//! (`Acquire`, or a `Renew` of an epoch the arbiter never handed out) once the current lease ran
//! out plus the drift margin. What a site says can only raise the *number* the next grant
//! carries, by at most [`MAX_EPOCH_LEAD`]: a forced failover takes the next number itself while
//! the arbiter is unreachable, and the arbiter must never hand the same number to the other site.
//! So a site whose messages are forged (or a holder of one site's key) cannot move the epoch while
//! the holder renews; at worst it burns numbers.
//!
//! An arbiter that lost its state (a new machine, an empty `data_dir`) starts at epoch 1 with the
//! initial primary as holder and that lease running from its start, like any restart. The real
//! holder's `Renew` of its newer epoch is refused until that lease lapsed, then granted as a
//! new epoch of the same number: the holder is fenced by its own deadline meanwhile (at most one
//! lease of refused writes), and no site gets an epoch before the previous holder's lease, as the
//! lost arbiter granted it, has run out. The simulator's `arbiter_state_lost` fault checks this.
//!
//! Until it grants its first lease such an arbiter only *presumes* the initial primary holds
//! epoch 1: it cannot tell a new deployment from a lost state. So it grants the presumed holder
//! nothing while any site claims a newer epoch (the old primary, back while the real holder still
//! writes under the lost arbiter's lease, would otherwise be a second writer: swarm seed
//! 9994367), and, before the lease it assumed at start ran out, nothing until every site told it
//! its epoch (`Renew`, `Acquire`, `Handoff`, `QueryAt`; a site that writes renews, one that
//! watches queries every probe). A new deployment waits for the recovery site's first query; a
//! claim from a site whose key was stolen can hold the presumed holder back, which an arbiter
//! that granted a lease never lets it do.

use crate::audit::AuditRecord;
use crate::config::Config;
use crate::ids::{Epoch, Millis, SiteId};
use crate::protocol::{ArbiterView, Input, Message, Output, Peer};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How far ahead of the arbiter's epoch a site's claim may raise the next grant's number: one
/// forced failover takes one number, and nobody forces a thousand failovers without the arbiter
/// answering once. A claim beyond is refused, so a forged claim cannot exhaust the numbers.
pub const MAX_EPOCH_LEAD: u64 = 1_000;

/// Why an arbiter that never granted a lease refuses its presumed holder before every site
/// told it its epoch.
const WAIT_FOR_EVERY_SITE: &str = "this arbiter started without a record of who holds the \
     epoch: it grants nothing until every site told it its epoch, or one lease plus the drift \
     margin passed";

/// The arbiter's durable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArbiterState {
    pub now: Millis,
    pub started: bool,
    pub epoch: Epoch,
    pub holder: Option<SiteId>,
    /// Lease expiry on the arbiter's clock.
    pub lease_expiry: Millis,
    pub last_renewal: Option<Millis>,
    /// Added to the caller's `now`: monotonic time restarts with the process, and a restarted
    /// arbiter continues its own time scale from where it stopped.
    #[serde(default)]
    pub clock_base: Millis,
    /// When each site (by id) last reached the arbiter, on its time scale. A hand-off goes
    /// only to a site heard within one lease: one that cannot reach the arbiter could never
    /// renew, and the service would have no writer until the partition heals.
    #[serde(default)]
    pub last_heard: Vec<Option<Millis>>,
    /// The newest epoch a site claimed that this arbiter did not hand out (within
    /// [`MAX_EPOCH_LEAD`]). Only its holder may then be granted an unknown epoch, and every new
    /// epoch goes past it: an arbiter that lost its state, hearing the real holder's claim and a
    /// stale one, grants the newest.
    #[serde(default)]
    pub claimed: Option<Epoch>,
}

/// The arbiter engine. Same shape as every engine: `handle`, `poll_output`, `poll_timeout`.
#[derive(Clone, Debug)]
pub struct Arbiter {
    cfg: Config,
    st: ArbiterState,
    out: VecDeque<Output>,
}

impl Arbiter {
    pub fn new(cfg: Config) -> Self {
        let holder = Some(cfg.initial_primary_id());
        Arbiter {
            st: ArbiterState {
                now: 0,
                started: false,
                epoch: Epoch(1),
                holder,
                lease_expiry: 0,
                last_renewal: None,
                clock_base: 0,
                last_heard: Vec::new(),
                claimed: None,
            },
            cfg,
            out: VecDeque::new(),
        }
    }

    pub fn from_state(cfg: Config, st: ArbiterState) -> Self {
        Arbiter {
            cfg,
            st,
            out: VecDeque::new(),
        }
    }

    pub fn state(&self) -> &ArbiterState {
        &self.st
    }

    pub fn epoch(&self) -> Epoch {
        self.st.epoch
    }

    pub fn holder(&self) -> Option<SiteId> {
        self.st.holder
    }

    /// The arbiter never needs a tick: it only answers.
    pub fn poll_timeout(&self) -> Option<Millis> {
        None
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn margin(&self) -> Millis {
        if self.cfg.planted("ignore_drift_margin") {
            return 0;
        }
        self.cfg.drift_margin()
    }

    fn lapsed(&self, now: Millis) -> bool {
        now >= self.st.lease_expiry + self.margin()
    }

    pub fn view(&self, now: Millis) -> ArbiterView {
        let asking = self.presumed_holder_asking(now);
        ArbiterView {
            epoch: self.st.epoch,
            holder: self.st.holder,
            holder_renewing: now < self.st.lease_expiry || asking,
            lease_lapsed: self.lapsed(now) && !asking,
            since_renewal_ms: self.st.last_renewal.map(|t| now.saturating_sub(t)),
        }
    }

    /// Whether the presumed holder (see the module documentation) asked for its lease within
    /// one lease while no newer epoch is claimed: it is alive and was held back by this arbiter
    /// waiting to hear every site, not cut off. The view then says it renews, so the recovery
    /// site whose first query completes the set sees a live primary, not a lapsed lease.
    fn presumed_holder_asking(&self, now: Millis) -> bool {
        let heard = |s: SiteId| self.st.last_heard.get(usize::from(s.0)).copied().flatten();
        self.st.last_renewal.is_none()
            && self.st.claimed.is_none_or(|c| c <= self.st.epoch)
            && self
                .st
                .holder
                .and_then(heard)
                .is_some_and(|t| now.saturating_sub(t) < self.cfg.lease.lease_ms)
    }

    pub fn handle(&mut self, now: Millis, input: Input) {
        // A restarted process brings a new monotonic clock: continue from the old scale, or
        // time would stand still and no lease would ever lapse.
        if matches!(input, Input::Restarted) {
            self.st.clock_base = self.st.now.saturating_sub(now);
        }
        let now = now.saturating_add(self.st.clock_base).max(self.st.now);
        self.st.now = now;
        if !self.st.started || matches!(input, Input::Restarted) {
            // On start and after a restart the holder may still be writing: treat its lease as
            // running from now, so no new epoch is granted before it could have lapsed.
            self.st.started = true;
            self.st.lease_expiry = self.st.lease_expiry.max(now + self.cfg.lease.lease_ms);
            if self.st.last_renewal.is_none() {
                // Still presuming its holder: the epochs it must hear are this start's.
                self.st.last_heard.clear();
            }
        }
        let Input::Message {
            from: Peer::Site(site),
            msg,
        } = input
        else {
            return;
        };
        if usize::from(site.0) >= self.cfg.sites.len() {
            return;
        }
        let lease = self.cfg.lease.lease_ms;
        if matches!(
            msg,
            Message::Renew { .. }
                | Message::Acquire { .. }
                | Message::Handoff { .. }
                | Message::QueryAt { .. }
        ) {
            // Heard, with the epoch the site knows (a `SiteStatus` carries none).
            let i = usize::from(site.0);
            if self.st.last_heard.len() <= i {
                self.st.last_heard.resize(i + 1, None);
            }
            self.st.last_heard[i] = Some(now);
        }
        match msg {
            Message::Renew { epoch, req } => {
                if epoch == self.st.epoch && self.st.holder == Some(site) {
                    match self.presumed_holder_waits(now) {
                        Some(why) => self.deny(now, site, req, why),
                        None => self.grant(now, site, req, lease),
                    }
                } else if epoch > self.st.epoch
                    || (epoch == self.st.epoch && self.st.holder.is_none())
                {
                    // An epoch this arbiter never handed out (a forced failover took it while
                    // the arbiter was unreachable, or the arbiter lost its state): a request for
                    // a new epoch like any other, granted under the same rule.
                    match self.claim(epoch) {
                        Err(why) => self.deny(now, site, req, why),
                        Ok(newest) if epoch < newest => self.deny(
                            now,
                            site,
                            req,
                            "a newer epoch was claimed; only its holder can have it",
                        ),
                        Ok(_) if !self.lapsed(now) => self.deny(
                            now,
                            site,
                            req,
                            "this arbiter did not hand out that epoch, and the holder's lease has \
                             not expired (plus the drift margin)",
                        ),
                        Ok(_) => {
                            let why = format!(
                                "renews epoch {epoch}, which this arbiter did not hand out (a \
                                 forced failover, or lost arbiter state),"
                            );
                            self.new_epoch(now, site, epoch, req, &why);
                        }
                    }
                } else {
                    self.deny(now, site, req, "not the holder of the current epoch");
                }
            }
            Message::Acquire { seen, req, force } => {
                if self.st.holder == Some(site) && seen <= self.st.epoch {
                    // The holder asks again (it missed our grant, or restarted mid-promotion):
                    // give it the epoch it already holds instead of burning a new one.
                    match self.presumed_holder_waits(now) {
                        Some(why) => self.deny(now, site, req, why),
                        None => self.grant(now, site, req, lease),
                    }
                } else if let Err(why) = self.claim(seen) {
                    self.deny(now, site, req, why);
                } else if self.lapsed(now) {
                    // Past every epoch anyone may hold: ours, and one a forced failover took
                    // without us that this site heard of.
                    let newest = self.st.claimed.map_or(0, |c| c.0);
                    let epoch = Epoch(self.st.epoch.0.max(seen.0).max(newest).saturating_add(1));
                    let why = format!("asked for it{}", if force { " (forced)" } else { "" });
                    self.new_epoch(now, site, epoch, req, &why);
                } else {
                    self.deny(
                        now,
                        site,
                        req,
                        "the holder's lease has not expired (plus the drift margin)",
                    );
                }
            }
            Message::Handoff { epoch, to, req } => {
                let target_heard = self.cfg.planted("handoff_to_unheard_target")
                    || self
                        .st
                        .last_heard
                        .get(usize::from(to.0))
                        .copied()
                        .flatten()
                        .is_some_and(|t| now.saturating_sub(t) <= lease);
                let holder_asks = epoch == self.st.epoch
                    && self.st.holder == Some(site)
                    && usize::from(to.0) < self.cfg.sites.len();
                let presumed = holder_asks
                    .then(|| self.presumed_holder_waits(now))
                    .flatten();
                if let Some(why) = presumed {
                    self.deny(now, site, req, why);
                } else if holder_asks && !target_heard {
                    let heard = self.st.last_heard.get(usize::from(to.0)).copied().flatten();
                    self.audit(
                        now,
                        "hand-off refused",
                        format!(
                            "{} has not reached the arbiter within one lease (last heard {}): \
                             it could not renew, and nobody would accept writes",
                            self.cfg.site_name(to),
                            heard.map_or("never".to_string(), |t| format!(
                                "{} ms ago",
                                now.saturating_sub(t)
                            )),
                        ),
                    );
                    self.deny(
                        now,
                        site,
                        req,
                        "the target has not reached the arbiter within one lease",
                    );
                } else if holder_asks {
                    self.st.epoch = Epoch(epoch.0 + 1);
                    self.st.holder = Some(to);
                    // The new holder's lease starts now; it renews to learn its timing.
                    self.st.lease_expiry = now + lease;
                    self.st.last_renewal = Some(now);
                    self.audit(
                        now,
                        "hand-off",
                        format!(
                            "{} handed epoch {} to {}",
                            self.cfg.site_name(site),
                            self.st.epoch,
                            self.cfg.site_name(to)
                        ),
                    );
                    let view = self.view(now);
                    self.out.push_back(Output::Send {
                        to: Peer::Site(site),
                        msg: Message::View {
                            view: view.clone(),
                            req,
                        },
                    });
                    self.out.push_back(Output::Send {
                        to: Peer::Site(to),
                        msg: Message::View { view, req: 0 },
                    });
                } else {
                    self.deny(
                        now,
                        site,
                        req,
                        "only the holder of the current epoch can hand it off",
                    );
                }
            }
            Message::SiteStatus { site: asked, req } => {
                let heard_ms_ago = self
                    .st
                    .last_heard
                    .get(usize::from(asked.0))
                    .copied()
                    .flatten()
                    .map(|t| now.saturating_sub(t));
                self.out.push_back(Output::Send {
                    to: Peer::Site(site),
                    msg: Message::SiteSeen {
                        site: asked,
                        heard_ms_ago,
                        req,
                    },
                });
            }
            Message::Query { req } | Message::QueryAt { req, .. } => {
                if let Message::QueryAt { epoch, .. } = msg {
                    // Only an arbiter that still presumes its holder learns from a query: one
                    // that granted a lease trusts its own record over any site's word.
                    if self.st.last_renewal.is_none() {
                        let _ = self.claim(epoch);
                    }
                }
                let view = self.view(now);
                self.out.push_back(Output::Send {
                    to: Peer::Site(site),
                    msg: Message::View { view, req },
                });
            }
            _ => {}
        }
    }

    /// Why the holder may not have its epoch yet, when this arbiter has granted no lease so far
    /// and only presumes the initial primary holds epoch 1 (see the module documentation).
    fn presumed_holder_waits(&self, now: Millis) -> Option<&'static str> {
        if self.st.last_renewal.is_some() || self.cfg.planted("presumed_holder_granted") {
            return None;
        }
        if self.st.claimed.is_some_and(|c| c > self.st.epoch) {
            return Some(
                "this arbiter started without a record of who holds the epoch, and a site claims \
                 a newer one: only that site can have it, once the lease lapsed",
            );
        }
        let every_site_heard = (0..self.cfg.sites.len())
            .all(|i| self.st.last_heard.get(i).copied().flatten().is_some());
        if !self.lapsed(now) && !every_site_heard {
            return Some(WAIT_FOR_EVERY_SITE);
        }
        None
    }

    /// `site` takes `epoch` (the old lease lapsed): audited with `why` and granted.
    fn new_epoch(&mut self, now: Millis, site: SiteId, epoch: Epoch, req: u64, why: &str) {
        let old = self.st.holder;
        self.st.epoch = epoch;
        self.st.holder = Some(site);
        self.audit(
            now,
            "new epoch",
            format!(
                "{} {why} and the lease of {} expired (plus the drift margin)",
                self.cfg.site_name(site),
                old.map_or("nobody", |o| self.cfg.site_name(o)),
            ),
        );
        self.grant(now, site, req, self.cfg.lease.lease_ms);
    }

    /// A site's claim of an epoch (`Renew`, `Acquire`'s `seen`): refused beyond
    /// [`MAX_EPOCH_LEAD`] of ours; remembered when newer than ours. The newest claim so far.
    fn claim(&mut self, claimed: Epoch) -> Result<Epoch, &'static str> {
        if claimed.0 > self.st.epoch.0.saturating_add(MAX_EPOCH_LEAD) {
            return Err(
                "that epoch is further ahead of the arbiter's than forced failovers \
                        can take it; an operator must check the sites' epochs",
            );
        }
        if claimed > self.st.epoch && self.st.claimed.is_none_or(|c| claimed > c) {
            self.st.claimed = Some(claimed);
        }
        Ok(self.st.claimed.unwrap_or(claimed).max(claimed))
    }

    fn grant(&mut self, now: Millis, site: SiteId, req: u64, lease: Millis) {
        self.st.lease_expiry = self.st.lease_expiry.max(now + lease);
        self.st.last_renewal = Some(now);
        let epoch = self.st.epoch;
        self.out.push_back(Output::Send {
            to: Peer::Site(site),
            msg: Message::Granted {
                epoch,
                lease_ms: lease,
                req,
            },
        });
    }

    fn deny(&mut self, now: Millis, site: SiteId, req: u64, reason: &str) {
        let view = self.view(now);
        self.out.push_back(Output::Send {
            to: Peer::Site(site),
            msg: Message::Denied {
                view,
                req,
                reason: reason.to_string(),
            },
        });
    }

    fn audit(&mut self, now: Millis, what: &str, why: String) {
        let holder = self
            .st
            .holder
            .map_or("nobody".to_string(), |h| self.cfg.site_name(h).to_string());
        self.out.push_back(Output::Audit(AuditRecord {
            at: now,
            epoch: self.st.epoch,
            what: what.to_string(),
            why,
            inputs: vec![
                ("now".into(), now.to_string()),
                ("holder".into(), holder),
                ("lease_expiry".into(), self.st.lease_expiry.to_string()),
                ("drift_margin_ms".into(), self.margin().to_string()),
                ("last_renewal".into(), format!("{:?}", self.st.last_renewal)),
            ],
        }));
    }
}
