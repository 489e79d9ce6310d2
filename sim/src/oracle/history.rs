//! `prefix`, `switchover_loss`, `rpo_bounds` and `left_out`: histories compared through the database
//! model's lineages.

use crate::db::{LinId, States};
use crate::outcome::RpoSample;
use crate::world::World;
use lifeboat_core::engine::Role;
use lifeboat_core::report::{LeftOut, Report};
use lifeboat_core::{DbId, Epoch, SiteId};

impl World {
    fn site_name_of(&self, s: usize) -> String {
        self.cfg.site_name(SiteId(s as u16)).to_string()
    }

    /// Every restored database of a secondary is a prefix of the writer's history.
    pub fn check_prefix(&mut self, s: usize) {
        if !self.sites[s].alive || !self.nodes[s].up {
            return;
        }
        if !matches!(
            self.role(s),
            Some(Role::Secondary | Role::SwitchoverTarget | Role::Promoting)
        ) {
            return;
        }
        let w = self.current_primary();
        if w == s {
            return;
        }
        for i in 0..self.sites[s].dbs.len() {
            let seeded = self
                .site_engine(s)
                .db(DbId(i as u32))
                .is_some_and(|d| d.position.is_some());
            if !seeded {
                continue;
            }
            let (p, m) = self.sites[s].dbs[i].state();
            let (wp, wl) = self.sites[w].dbs[i].state();
            if p > wp || !self.lin[i].agree(m, wl, p) {
                let msg = format!(
                    "database {} at secondary site {} (position {p}) is not a prefix of the \
                     writer site {}'s history (position {wp}; common prefix {})",
                    self.cfg.db_name(DbId(i as u32)),
                    self.site_name_of(s),
                    self.site_name_of(w),
                    self.lin[i].common((p, m), (wp, wl))
                );
                return self.violation("prefix", msg);
            }
        }
    }

    /// Transactions of `old` missing from `new`, summed over databases.
    fn loss(&self, old: &[(u64, LinId)], new: &[(u64, LinId)]) -> u64 {
        old.iter()
            .zip(new)
            .enumerate()
            .map(|(i, (o, n))| o.0 - self.lin[i].common(*o, *n))
            .sum()
    }

    /// The writer before `epoch` and its acknowledged history, and the new primary's history
    /// when it was promoted.
    fn before_and_after(&self, epoch: Epoch, new: usize) -> Option<(usize, States, States)> {
        let (_, &prev) = self.truth.writer_of_epoch.range(..epoch).next_back()?;
        if prev == new {
            return None;
        }
        let old = self.sites[prev]
            .last_write_state
            .clone()
            .unwrap_or_else(|| self.sites[prev].states());
        let after = self.sites[new]
            .promote_state
            .get(&epoch)
            .cloned()
            .unwrap_or_else(|| self.sites[new].states());
        Some((prev, old, after))
    }

    /// `left_out`: a failover to a chosen point opens no database past the first artifact it
    /// says it left out (neither by restoring it nor by replaying streamed WAL from after it).
    fn oracle_left_out(&mut self, epoch: Epoch, new: usize, left_out: &[LeftOut]) {
        let Some(opened) = self.sites[new].promote_state.get(&epoch).cloned() else {
            return;
        };
        for lo in left_out {
            let Some(&(at, _)) = opened.get(lo.db.0 as usize) else {
                continue;
            };
            if at > lo.from.0 {
                let msg = format!(
                    "failover to site {} at epoch {epoch} (until {}) left out {} artifacts of \
                     database {} from position {}, but the database opened at position {at}",
                    self.site_name_of(new),
                    lo.until.0,
                    lo.artifacts,
                    lo.db.0,
                    lo.from.0
                );
                self.violation("left_out", msg);
            }
        }
    }

    pub fn on_report(&mut self, node: usize, r: Report) {
        match r {
            Report::Failover {
                epoch,
                new_primary,
                forced,
                rpo_lower,
                rpo_upper,
                rto_ms,
                left_out,
                ..
            } => {
                self.out.failovers += 1;
                if !left_out.is_empty() {
                    self.out.failovers_left_out += 1;
                }
                self.out.rto_ms.push(rto_ms);
                if node < 2 {
                    let start = self.oracle.promoting_since[node];
                    self.oracle.last_failover = Some(start);
                    self.oracle.took_over_at[node] = Some(self.now);
                }
                if !forced {
                    self.oracle_auto_failover(node);
                }
                let new = (new_primary.0 as usize).min(1);
                self.oracle_left_out(epoch, new, &left_out);
                let Some((prev, old, after)) = self.before_and_after(epoch, new) else {
                    return;
                };
                let true_loss = self.loss(&old, &after);
                self.out.rpo.push(RpoSample {
                    lower: rpo_lower,
                    upper: rpo_upper,
                    true_loss,
                });
                if true_loss < rpo_lower || rpo_upper.is_some_and(|u| true_loss > u) {
                    let msg = format!(
                        "failover to site {} at epoch {epoch} reported a loss within \
                         [{rpo_lower}, {}] transactions, but {true_loss} acknowledged at site {} \
                         are missing",
                        self.site_name_of(new),
                        rpo_upper.map_or("unknown".into(), |u| u.to_string()),
                        self.site_name_of(prev)
                    );
                    self.violation("rpo_bounds", msg);
                }
            }
            Report::Switchover {
                epoch,
                new_primary,
                rpo,
                ..
            } => {
                self.out.switchovers += 1;
                let new = (new_primary.0 as usize).min(1);
                let Some((prev, old, after)) = self.before_and_after(epoch, new) else {
                    return;
                };
                let lost = self.loss(&old, &after);
                if lost > 0 || rpo > 0 {
                    let msg = format!(
                        "planned switchover to site {} at epoch {epoch} reported rpo {rpo} and \
                         lost {lost} transactions acknowledged at site {}",
                        self.site_name_of(new),
                        self.site_name_of(prev)
                    );
                    self.violation("switchover_loss", msg);
                }
            }
            Report::Drill { ok, .. } => {
                if ok {
                    self.out.drills_ok += 1;
                }
            }
            Report::Reseeded { .. } => self.out.reseeds += 1,
            // Only a driver that keeps a former primary's log finds them; the simulator's
            // databases are checked by the oracle directly.
            Report::LostWrites { .. } => {}
        }
    }
}
