//! The trace: a running hash of every input fed and every output produced (so two runs of a
//! seed can be compared bit for bit), and, when asked, the last events as text.

use lifeboat_core::protocol::{Command, Input, Message, Output};
use lifeboat_core::Millis;
use std::collections::VecDeque;

/// splitmix64-style mixing of a few words.
pub fn mix(words: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &w in words {
        h ^= w
            .wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(h << 6)
            .wrapping_add(h >> 2);
        h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h ^= h >> 31;
    }
    h
}

fn key_fp(k: &lifeboat_core::ArtifactKey) -> u64 {
    mix(&[
        u64::from(k.db.0),
        k.epoch.0,
        k.lsn_start.0,
        k.lsn_end.0,
        k.kind as u64,
    ])
}

fn msg_fp(m: &Message) -> u64 {
    match m {
        Message::Ack { key } => mix(&[1, key_fp(key)]),
        Message::Resend { key } => mix(&[2, key_fp(key)]),
        Message::Heartbeat(h) => mix(&[3, h.epoch.0, h.seq, h.positions.len() as u64]),
        Message::RequestFull { db } => mix(&[4, db.map_or(u64::MAX, |d| u64::from(d.0))]),
        Message::RestartRequest { op } => mix(&[5, op.0]),
        Message::SwitchoverRequest => 6,
        Message::SwitchoverFinal { epoch, positions } => {
            mix(&[7, epoch.0, positions.iter().map(|p| p.1 .0).sum()])
        }
        Message::SwitchoverReady { epoch } => mix(&[8, epoch.0]),
        Message::SwitchoverAborted { epoch, .. } => mix(&[9, epoch.0]),
        Message::EpochNotice { epoch, holder } => mix(&[10, epoch.0, u64::from(holder.0)]),
        Message::Renew { epoch, req } => mix(&[11, epoch.0, *req]),
        Message::Acquire { seen, req, force } => mix(&[12, seen.0, *req, u64::from(*force)]),
        Message::Handoff { epoch, to, req } => mix(&[13, epoch.0, u64::from(to.0), *req]),
        Message::Query { req } => mix(&[14, *req]),
        Message::QueryAt { epoch, req } => mix(&[21, epoch.0, *req]),
        Message::Granted {
            epoch,
            lease_ms,
            req,
        } => mix(&[15, epoch.0, *lease_ms, *req]),
        Message::Denied { view, req, .. } => mix(&[16, view.epoch.0, *req]),
        Message::View { view, req } => mix(&[
            17,
            view.epoch.0,
            *req,
            u64::from(view.lease_lapsed),
            u64::from(view.holder_renewing),
        ]),
        Message::HeartbeatAck { seq } => mix(&[18, *seq]),
        Message::SiteStatus { site, req } => mix(&[19, u64::from(site.0), *req]),
        Message::SiteSeen {
            site,
            heard_ms_ago,
            req,
        } => mix(&[
            20,
            u64::from(site.0),
            heard_ms_ago.map_or(u64::MAX, |m| m),
            *req,
        ]),
        Message::LostWrites(l) => mix(&[22, lost_fp(l)]),
    }
}

fn lost_fp(l: &lifeboat_core::protocol::LostWrites) -> u64 {
    mix(&[
        u64::from(l.db.0),
        l.from.0,
        l.to.0,
        l.transactions.map_or(u64::MAX, |t| t),
    ])
}

pub fn input_fp(i: &Input) -> u64 {
    match i {
        Input::Tick => 1,
        Input::Restarted => 2,
        Input::ArtifactDiscovered(m) => mix(&[3, key_fp(&m.key)]),
        Input::WritePosition { db, lsn } => mix(&[4, u64::from(db.0), lsn.0]),
        Input::ShipFailed { op, key, .. } => mix(&[5, op.0, key_fp(key)]),
        Input::ArtifactReceived { meta, computed, .. } => mix(&[6, key_fp(&meta.key), computed.0]),
        Input::Completed { op, result } => mix(&[7, op.0, u64::from(result.is_ok())]),
        Input::Probe { target, ok } => mix(&[8, *target as u64, u64::from(*ok)]),
        Input::Message { msg, .. } => mix(&[9, msg_fp(msg)]),
        Input::Operator(r) => mix(&[10, format!("{r:?}").len() as u64]),
        Input::DiskSpace { free_mib } => mix(&[11, *free_mib]),
        Input::UnreadableManifest {
            outbox, file, db, ..
        } => mix(&[
            12,
            u64::from(*outbox),
            db.map_or(u64::MAX, |d| u64::from(d.0)),
            file.bytes().fold(0, |h, b| h.rotate_left(5) ^ u64::from(b)),
        ]),
        Input::CaptureGap { db, what } => mix(&[
            13,
            u64::from(db.0),
            what.bytes().fold(0, |h, b| h.rotate_left(5) ^ u64::from(b)),
        ]),
        Input::Promoted { op, positions } => mix(&[
            14,
            op.0,
            positions
                .iter()
                .fold(0, |h, (db, lsn)| h.rotate_left(7) ^ u64::from(db.0) ^ lsn.0),
        ]),
        Input::StreamAlarm {
            db,
            alarm,
            active,
            what,
        } => mix(&[
            15,
            u64::from(db.0),
            *alarm as u64,
            u64::from(*active),
            what.bytes().fold(0, |h, b| h.rotate_left(5) ^ u64::from(b)),
        ]),
        Input::Archived { key, error } => mix(&[16, key_fp(key), u64::from(error.is_some())]),
        Input::LostWrites(l) => mix(&[17, lost_fp(l)]),
    }
}

fn command_fp(c: &Command) -> u64 {
    let op = c.op().map_or(0, |o| o.0);
    let tag = match c {
        Command::Ship { artifact, to, .. } => mix(&[1, key_fp(&artifact.key), u64::from(to.0)]),
        Command::Restore { artifact, .. } => mix(&[2, key_fp(&artifact.key)]),
        Command::Relabel { artifact } => {
            mix(&[3, key_fp(&artifact.key), u64::from(artifact.retry)])
        }
        Command::TakeBackup { kind, .. } => mix(&[4, *kind as u64]),
        Command::Reseed { full, .. } => mix(&[5, key_fp(&full.key)]),
        Command::Discard { key } => mix(&[6, key_fp(key)]),
        Command::Prune { db, before, keep } => mix(&[
            7,
            u64::from(db.0),
            before.0,
            keep.iter().fold(0, |h, k| mix(&[h, key_fp(k)])),
        ]),
        Command::Quarantine { artifact, .. } => mix(&[8, key_fp(&artifact.key)]),
        Command::Fence { .. } => 9,
        Command::AllowWrites { epoch, .. } => mix(&[10, epoch.0]),
        Command::Promote { epoch, .. } => mix(&[11, epoch.0]),
        Command::PromoteUntil { epoch, until, .. } => mix(&[11, epoch.0, until.0 as u64]),
        Command::ExternalFence { epoch, .. } => mix(&[12, epoch.0]),
        Command::RestartService { .. } => 13,
        Command::SwitchIdentity { epoch, .. } => mix(&[14, epoch.0]),
        Command::Drill { db, upto, .. } => mix(&[15, u64::from(db.0), upto.0]),
        Command::Probe => 16,
        Command::SamplePositions => 17,
        Command::CollectLogs { epoch } => mix(&[20, epoch.0]),
        Command::CheckService { .. } => 21,
        Command::Archive { artifact } => mix(&[22, key_fp(&artifact.key)]),
        Command::ArchiveDrill { db, upto, .. } => mix(&[24, u64::from(db.0), upto.0]),
        Command::ArchiveRemove { db, keys } => mix(&[
            23,
            u64::from(db.0),
            keys.iter().fold(0, |h, k| mix(&[h, key_fp(k)])),
        ]),
    };
    mix(&[tag, op])
}

pub fn output_fp(o: &Output) -> u64 {
    match o {
        Output::Command(c) => mix(&[1, command_fp(c)]),
        Output::Send { to, msg } => mix(&[2, format!("{to:?}").len() as u64, msg_fp(msg)]),
        Output::Alert(a) => mix(&[
            3,
            a.id.kind as u64,
            a.change as u64,
            a.severity as u64,
            u64::from(a.count),
            a.id.db.map_or(u64::MAX, |d| u64::from(d.0)),
        ]),
        Output::Audit(_) => 4,
        Output::Report(r) => mix(&[5, format!("{r:?}").len() as u64]),
    }
}

/// The trace of one run.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub hash: u64,
    /// The last events as text, when recording (a violation's re-run).
    pub ring: Option<VecDeque<String>>,
    pub ring_cap: usize,
    /// Print every event as it happens (replay --trace) instead of keeping the last ones.
    pub live: bool,
    /// Standard output was closed while printing live: print no more.
    pub closed: bool,
}

pub const RING: usize = 60;

impl Trace {
    pub fn recording() -> Self {
        Trace {
            hash: 0,
            ring: Some(VecDeque::with_capacity(RING)),
            ring_cap: RING,
            live: false,
            closed: false,
        }
    }
    #[inline]
    pub fn add(&mut self, words: &[u64]) {
        self.hash = mix(&[self.hash, mix(words)]);
    }
    pub fn enabled(&self) -> bool {
        self.ring.is_some()
    }
    pub fn note(&mut self, at: Millis, text: impl FnOnce() -> String) {
        if let Some(r) = self.ring.as_mut() {
            if self.live {
                // Whole lines, and a closed pipe (`replay --trace | head`) only stops the
                // printing: the run itself goes on to its verdict.
                if !self.closed {
                    use std::io::Write;
                    let line = format!("{} {}", crate::outcome::clock_text(at), text());
                    self.closed = writeln!(std::io::stdout().lock(), "{line}").is_err();
                }
                return;
            }
            if r.len() >= self.ring_cap {
                r.pop_front();
            }
            let mut t = text();
            if t.len() > 240 {
                let mut cut = 240;
                while !t.is_char_boundary(cut) {
                    cut -= 1;
                }
                t.truncate(cut);
                t.push('…');
            }
            r.push_back(format!("{} {t}", crate::outcome::clock_text(at)));
        }
    }
}
