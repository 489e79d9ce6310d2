//! Every default in one place, with where it comes from.

use crate::ids::{Millis, MINUTE};

/// Recovery-location seed: a transaction log every 5 minutes.
pub const LOG_EVERY: Millis = 5 * MINUTE;
/// Recovery-location seed: a differential (incremental) backup daily.
pub const INCREMENTAL_EVERY: Millis = 24 * 60 * MINUTE;
/// Recovery-location seed: a full backup weekly.
pub const FULL_EVERY: Millis = 7 * 24 * 60 * MINUTE;

/// Recovery-location seed: alert after 3 restore attempts of the same artifact...
pub const ALERT_AFTER_ATTEMPTS: u32 = 3;
/// ...or after 15 minutes without a successful restore while one is failing.
pub const ALERT_AFTER_MINUTES: u64 = 15;
/// Recovery-location seed: escalate from failure to critical 30 minutes after the first raise.
pub const CRITICAL_AFTER_MINUTES: u64 = 30;
/// Recovery-location seed: "no new transaction logs in the last 15 minutes".
pub const NO_NEW_LOGS_MINUTES: u64 = 15;
/// Backlog: more than this many received-but-unrestored artifacts for one database...
pub const BACKLOG_COUNT: u32 = 12;
/// ...or the oldest unrestored one waiting longer than this.
pub const BACKLOG_AGE_MINUTES: u64 = 30;
/// A restore that fails this many times is permanent (unless a later artifact bypasses it).
pub const RESTORE_MAX_ATTEMPTS: u32 = 10;
/// Pause between restore attempts of the same artifact.
pub const RESTORE_RETRY_DELAY: Millis = 60_000;
/// An open hole is checked every `restore.retry_delay_ms` until `missing_log` is raised, then
/// at doubling intervals up to this many times the delay (so a stuck artifact is not renamed
/// and re-reported on every pass).
pub const GAP_BACKOFF_FACTOR: u64 = 16;
/// How many databases restore at the same time (one artifact at a time per database).
/// Extra attempts a takeover's drain gives each received artifact whose restore failed and waits
/// for its retry: the drain is a barrier, so it retries them at once instead of promoting past
/// restorable data (or restoring it into the new primary when the retry comes due).
pub const DRAIN_RETRIES: u32 = 3;
pub const RESTORE_PARALLELISM: u32 = 4;
/// How often the monitor looks at every database.
pub const MONITOR_EVERY: Millis = MINUTE;

/// A ship not acknowledged within this time is retried.
pub const SHIP_ACK_TIMEOUT: Millis = 60_000;
/// First retry delay of a failed ship; doubles up to [`SHIP_RETRY_MAX`].
pub const SHIP_RETRY_BASE: Millis = 1_000;
pub const SHIP_RETRY_MAX: Millis = 60_000;
/// How many ships may be outstanding at once (backpressure toward the transport).
pub const SHIP_MAX_IN_FLIGHT: u32 = 64;
/// Outstanding operations (fence, promote, restores...) are re-issued after this long.
pub const OP_TIMEOUT: Millis = 120_000;

/// Lease length granted by the arbiter. 8 s: an unplanned failover with every default is
/// writable within 10 s of the primary site's loss (the lease lapses 6.4-8.4 s after it, plus
/// the drift margin, then the promotion), while the primary still rides out 6.6 s without an
/// answer from the arbiter (three missed renewals) before it fences itself.
pub const LEASE: Millis = 8_000;
/// The holder renews this often.
pub const LEASE_RENEW_EVERY: Millis = 2_000;
/// Clock drift bound, in parts per million of elapsed time (a 10 s lease may drift 1 ms at 100).
pub const MAX_DRIFT_PPM: u64 = 50_000;
/// The longest time a fence (stop writes) takes.
pub const FENCE_TIME: Millis = 1_000;
/// Heartbeat from primary to secondary (positions, pause state).
pub const HEARTBEAT_EVERY: Millis = 1_000;
/// Probe cadence at the secondary.
pub const PROBE_EVERY: Millis = 1_000;
/// Consecutive failed probes before the primary is called unhealthy...
pub const UNHEALTHY_COUNT: u32 = 3;
/// ...and for at least this long.
pub const UNHEALTHY_FOR: Millis = 3_000;
/// Auto Pilot (monitoring seed): wait this long for a local restart of the primary.
/// After a failover, no other automatic failover for this long (an operator can still force one):
/// a service probe that fails wherever the primary is must not move it back and forth.
pub const HOLD_DOWN: Millis = 10 * MINUTE;
pub const LOCAL_RESTART_WAIT: Millis = 30_000;
/// How long a failover waits for an operator's confirmation when confirmation is on.
pub const CONFIRM_TIMEOUT: Millis = 5 * MINUTE;
/// How long the secondary waits for the arbiter to answer before it calls it unreachable.
pub const ARBITER_TIMEOUT: Millis = 3_000;
/// A hole in the chain that stays open this long leads to a reseed (the seed's critical point).
pub const RESEED_AFTER_MINUTES: u64 = 30;
/// The primary calls the recovery site lost after this long without a word from it.
pub const PEER_LOST_AFTER: Millis = 60_000;
/// A planned switchover not done in this time is abandoned and writes resume.
pub const SWITCHOVER_TIMEOUT: Millis = 5 * MINUTE;
/// A `link_down` alert clears only after the link stayed up this long: a flapping link keeps one
/// alert instead of a storm of raises and clears. A link that was in trouble for longer must
/// stay up as long as its trouble lasted, up to [`LINK_DOWN_CLEAR_MAX`]: probes that land by
/// chance in a flapping link's up windows for a minute are no proof it stopped flapping.
pub const LINK_DOWN_CLEAR_AFTER: Millis = 60_000;
/// The longest calm a link in trouble needs before its `link_down` clears.
pub const LINK_DOWN_CLEAR_MAX: Millis = 10 * MINUTE;

/// How long a link whose trouble ran from `since` to `last` must stay up before it is calm.
pub fn link_calm_after(since: Millis, last: Millis) -> Millis {
    last.saturating_sub(since)
        .clamp(LINK_DOWN_CLEAR_AFTER, LINK_DOWN_CLEAR_MAX)
}
/// While a primary accepts writes it asks its adapter this often for the logs the database
/// finished on its own (PostgreSQL's `archive_timeout`), so they ship at once instead of at the
/// next scheduled log backup.
pub const COLLECT_LOGS_EVERY: Millis = 500;

/// The archive keeps every artifact created within this long of the newest one (72 hours).
pub const ARCHIVE_KEEP_MS: Millis = 72 * 60 * MINUTE;
/// The archive keeps a restorable point of each of this many UTC days.
pub const ARCHIVE_KEEP_DAILY: u32 = 30;
/// The archive keeps a restorable point of each of this many ISO weeks.
pub const ARCHIVE_KEEP_WEEKLY: u32 = 12;
/// Archive retention runs at most this often (and whenever a full is archived); archiving
/// that failed is tried again on the same schedule.
pub const ARCHIVE_RETAIN_EVERY: Millis = 10 * MINUTE;
/// An artifact that could not be archived is tried again after this long.
pub const ARCHIVE_RETRY_MS: Millis = MINUTE;
/// The archive restores a kept point chosen at random into scratch and checks it this often.
pub const ARCHIVE_VERIFY_EVERY_MS: Millis = 24 * 60 * MINUTE;
