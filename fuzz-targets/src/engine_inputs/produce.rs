//! What the outside world sends in: backups cut from one history, forged receipts and
//! stale or out-of-turn messages.

use super::*;

impl World<'_> {
    /// Cut the next artifact of a database at `site`. The history is one for the whole run:
    /// writes happen only while the site is writable (never after it fenced itself); only
    /// the epoch holder's logs continue the log chain (a log cut after the fence still covers
    /// the writes before it, like a switchover's final log); fulls and incrementals are
    /// consistent points at the write position. Anything else re-cuts an old range. `None`
    /// when there is nothing to put in the artifact.
    pub(super) fn cut(
        &mut self,
        site: usize,
        db: usize,
        kind: ArtifactKind,
        epoch: Epoch,
    ) -> Option<ArtifactMeta> {
        let step = 1 + u64::from(self.r.u8());
        let engine = &self.sites[site];
        let holder = engine.state().holder == SiteId(site as u16);
        let writable = engine.writable();
        let h = &mut self.history[db];
        h.created += 1_000 * (1 + i64::from(self.r.u8()));
        if writable {
            h.written += step;
        }
        let (start, end, base) = match kind {
            ArtifactKind::Log if holder && h.written > h.logged => {
                let start = h.logged;
                h.logged = h.written;
                (start, h.written, None)
            }
            ArtifactKind::Log if h.logged > 0 => (h.logged - step.min(h.logged), h.logged, None),
            ArtifactKind::Log => return None,
            ArtifactKind::Full => {
                if holder {
                    h.full_end = Some(h.written);
                }
                (h.written, h.written, None)
            }
            ArtifactKind::Incremental => {
                let base = h.full_end?;
                if h.written <= base {
                    return None;
                }
                (base, h.written, Some(Lsn(base)))
            }
        };
        let key = ArtifactKey {
            db: DbId(db as u32),
            epoch,
            lsn_start: Lsn(start),
            lsn_end: Lsn(end),
            kind,
        };
        let checksum = Checksum(fnv(0xcbf2_9ce4_8422_2325, format!("{key:?}").as_bytes()));
        let meta = ArtifactMeta {
            key,
            base_full: base,
            created_utc: UtcMillis(UTC_BASE + h.created),
            size: 1 << 20,
            checksum,
            retry: 0,
        };
        self.produced.insert((key, checksum));
        if self.produced_list.len() < 4 * MAX_POOL {
            self.produced_list.push(meta);
        }
        Some(meta)
    }

    /// A site's backup tooling finds a new artifact (any site: one that does not hold the
    /// epoch must keep it aside).
    pub(super) fn discover(&mut self) {
        let site = self.r.below(2);
        let db = self.r.below(self.dbs() + 1);
        let kind = match self.r.u8() % 8 {
            0 => ArtifactKind::Full,
            1 => ArtifactKind::Incremental,
            _ => ArtifactKind::Log,
        };
        let current = self.sites[site].epoch();
        let epoch = match self.r.u8() % 8 {
            0 => Epoch(current.0.saturating_sub(1)),
            1 => Epoch(current.0 + 1),
            _ => current,
        };
        let meta = if db < self.dbs() {
            let Some(meta) = self.cut(site, db, kind, epoch) else {
                return;
            };
            if epoch != current {
                // Never shipped (the site keeps it aside): not for the forged receipts either.
                if self.produced_list.last().is_some_and(|m| m.key == meta.key) {
                    self.produced_list.pop();
                }
            }
            meta
        } else {
            // An artifact of a database the configuration does not know.
            ArtifactMeta {
                key: ArtifactKey {
                    db: DbId(db as u32),
                    epoch,
                    lsn_start: Lsn(0),
                    lsn_end: Lsn(1),
                    kind: ArtifactKind::Log,
                },
                base_full: None,
                created_utc: UtcMillis(UTC_BASE),
                size: 1,
                checksum: Checksum(1),
                retry: 0,
            }
        };
        self.feed(site, Input::ArtifactDiscovered(meta));
    }

    /// Receipts that must never be restored: corrupted in transit, malformed manifests,
    /// unknown databases.
    pub(super) fn forged_receipt(&mut self) {
        if self.produced_list.is_empty() {
            return;
        }
        let site = self.r.below(2);
        let mut meta = self.produced_list[self.r.below(self.produced_list.len())];
        if meta.key.epoch > self.sites[site].epoch() {
            // Only the holder of a newer epoch could ship it (see `forged_message`).
            return;
        }
        let mut computed = meta.checksum;
        match self.r.u8() % 4 {
            // Corrupted in transit: the bytes do not match the manifest.
            0 => computed = Checksum(computed.0.wrapping_add(1 + u64::from(self.r.u8()))),
            1 => {
                // Backwards range.
                meta.key.lsn_start = Lsn(meta.key.lsn_end.0 + 1 + u64::from(self.r.u8()));
            }
            2 => {
                // Base full on the wrong kind, or none on an incremental.
                meta.base_full = match meta.key.kind {
                    ArtifactKind::Incremental => None,
                    _ => Some(Lsn(u64::from(self.r.u8()))),
                };
            }
            _ => meta.key.db = DbId(self.dbs() as u32 + u32::from(self.r.u8())),
        }
        let from = SiteId(1 - site as u16);
        self.feed(
            site,
            Input::ArtifactReceived {
                meta,
                computed,
                from,
            },
        );
    }

    /// Messages no well-behaved peer would send right now: stale, repeated, out of turn. They
    /// never claim an epoch newer than the site knows: a lying arbiter or peer that invents
    /// epochs is outside the model (it can make a secondary drop an in-flight restore, see the
    /// fuzzing notes in fuzz/README.md).
    pub(super) fn forged_message(&mut self) {
        let site = self.r.below(2);
        let peer = SiteId(1 - site as u16);
        let epoch = Epoch(
            self.sites[site]
                .epoch()
                .0
                .saturating_sub(self.r.below(2) as u64),
        );
        let dbs = self.dbs();
        let positions: Vec<(DbId, Lsn)> = (0..self.r.below(3))
            .map(|_| {
                (
                    DbId(self.r.below(dbs + 1) as u32),
                    Lsn(u64::from(self.r.u16())),
                )
            })
            .collect();
        let key = match self.produced_list.len() {
            0 => None,
            n => Some(self.produced_list[self.r.below(n)].key),
        };
        let req = u64::from(self.r.u8());
        let (from, msg) = match self.r.u8() % 13 {
            0 => (Peer::Site(peer), key.map(|key| Message::Ack { key })),
            1 => (Peer::Site(peer), key.map(|key| Message::Resend { key })),
            2 => (
                Peer::Site(peer),
                Some(Message::Heartbeat(Heartbeat {
                    epoch,
                    seq: req,
                    backups_paused: self.r.bool(),
                    writable: self.r.bool(),
                    positions,
                    write_rate_per_sec: u64::from(self.r.u8()),
                })),
            ),
            3 => (
                Peer::Site(peer),
                Some(Message::RequestFull {
                    db: self.r.bool().then(|| DbId(self.r.below(dbs + 1) as u32)),
                }),
            ),
            4 => (Peer::Site(peer), Some(Message::SwitchoverRequest)),
            5 => (
                Peer::Site(peer),
                Some(Message::SwitchoverFinal { epoch, positions }),
            ),
            6 => (Peer::Site(peer), Some(Message::SwitchoverReady { epoch })),
            7 => (
                Peer::Site(peer),
                Some(Message::SwitchoverAborted {
                    epoch,
                    reason: "forged".into(),
                }),
            ),
            8 => {
                let holder = SiteId(self.r.below(2) as u16);
                (
                    Peer::Site(peer),
                    Some(Message::EpochNotice { epoch, holder }),
                )
            }
            9 => (
                Peer::Site(peer),
                Some(Message::RestartRequest { op: OpId(req) }),
            ),
            10 => {
                let lease_ms = u64::from(self.r.u16());
                let msg = Message::Granted {
                    epoch,
                    lease_ms,
                    req,
                };
                (Peer::Arbiter, Some(msg))
            }
            11 => (
                Peer::Arbiter,
                Some(Message::Denied {
                    view: self.view(epoch),
                    req,
                    reason: "forged".into(),
                }),
            ),
            _ => (
                Peer::Arbiter,
                Some(Message::View {
                    view: self.view(epoch),
                    req,
                }),
            ),
        };
        if let Some(msg) = msg {
            self.feed(site, Input::Message { from, msg });
        }
    }

    pub(super) fn view(&mut self, epoch: Epoch) -> ArbiterView {
        let flags = self.r.u8();
        ArbiterView {
            epoch,
            holder: (flags & 1 == 0).then(|| SiteId(u16::from(flags >> 1 & 1))),
            holder_renewing: flags & 4 != 0,
            lease_lapsed: flags & 8 != 0,
            since_renewal_ms: (flags & 16 != 0).then(|| u64::from(self.r.u16())),
        }
    }
}
