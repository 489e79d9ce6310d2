//! `verified_restore` and `stale_restore`: what a site restores must have passed verification
//! when it arrived, and must not come from an epoch older than the newest one in existence.

use crate::world::World;
use lifeboat_core::{ArtifactMeta, SiteId};

impl World {
    pub fn oracle_restore_issued(&mut self, s: usize, meta: &ArtifactMeta) {
        let site = self.cfg.site_name(SiteId(s as u16)).to_string();
        if let Some(c) = self.sites[s].inbox.get(&meta.key) {
            if c.bad {
                return self.violation(
                    "verified_restore",
                    format!(
                        "site {site} restores {:?} although the copy it holds failed \
                         verification when it arrived (manifest checksum {})",
                        meta.key, meta.checksum
                    ),
                );
            }
        }
        if meta.key.epoch < self.truth.epoch {
            let msg = format!(
                "site {site} restores {:?} of epoch {} after epoch {} began at {}",
                meta.key,
                meta.key.epoch,
                self.truth.epoch,
                crate::outcome::clock_text(self.truth.epoch_began)
            );
            self.violation("stale_restore", msg);
        }
    }
}
