//! Alert texts. The recovery-location seed's wording is kept exactly where it has one; times are
//! UTC ISO 8601; "minutes since the last successful restore" says `never` when there was none.

use crate::ids::{Checksum, Epoch, UtcMillis};

fn minutes(m: Option<u64>) -> String {
    m.map_or_else(|| "never".to_string(), |m| m.to_string())
}

pub fn missing_log(
    db: &str,
    after: Option<UtcMillis>,
    next: &str,
    since_restore: Option<u64>,
) -> String {
    let after = after.map_or_else(|| "never".to_string(), |t| t.to_string());
    format!(
        "For database [{db}] there is a missing transaction log between [{after}] and the \
         transaction log [{next}]. It has been [{}] minutes since the last successful restore.",
        minutes(since_restore)
    )
}

pub fn no_new_logs(db: &str, minutes: u64) -> String {
    format!("For database [{db}] there have been no new transaction logs in the last [{minutes}] minutes.")
}

pub fn restore_error(
    db: &str,
    path: &str,
    since_restore: Option<u64>,
    code: i32,
    message: &str,
) -> String {
    format!(
        "Errors occurred for database [{db}] while restoring the transaction log [{path}]. It has \
         been [{}] minutes since the last successful restore. The error provided while restoring \
         is: {code} {message}.",
        minutes(since_restore)
    )
}

pub fn backups_paused(site: &str, minutes: u64) -> String {
    format!(
        "Backups are paused for maintenance at site [{site}] (for [{minutes}] minutes); no new \
         transaction logs are expected until they resume. This is not a fault."
    )
}

pub fn checksum_mismatch(
    db: &str,
    path: &str,
    expected: Checksum,
    computed: Checksum,
    recopies: u32,
) -> String {
    format!(
        "For database [{db}] the copy of [{path}] failed verification (manifest checksum \
         {expected}, computed {computed}); it was quarantined and requested again from the \
         primary ([{recopies}] re-copies so far)."
    )
}

pub fn backlog(db: &str, count: u32, oldest_minutes: u64) -> String {
    format!(
        "For database [{db}] [{count}] received artifacts are waiting to be restored; the oldest \
         has waited [{oldest_minutes}] minutes."
    )
}

pub fn reseed(db: &str, why: &str) -> String {
    format!(
        "For database [{db}] the chain cannot be continued ({why}); a new full backup was \
         requested from the primary and the database will be dropped and recreated from it."
    )
}

pub fn link_down(me: &str, primary: &str) -> String {
    format!(
        "The link from site [{me}] to the primary site [{primary}] is down, but the arbiter still \
         sees the primary renewing its lease: this is a dead link, not a dead site. Not failing over."
    )
}

pub fn primary_down(primary: &str, failed: u32, seconds: u64, lapsed: bool) -> String {
    let arbiter = if lapsed {
        "and the arbiter reports its lease lapsed"
    } else {
        "and the arbiter cannot confirm its lease lapsed"
    };
    format!("The primary site [{primary}] is down: [{failed}] failed probes over [{seconds}] seconds {arbiter}.")
}

pub fn arbiter_unreachable(me: &str) -> String {
    format!(
        "The arbiter is unreachable from site [{me}]; automatic failover is off until it answers \
         again. An operator may force a failover (`lifeboat failover --force`), accepting the \
         risk that the primary is still serving writes."
    )
}

pub fn recovery_site_lost(site: &str, minutes: u64, unshipped: usize) -> String {
    format!(
        "The recovery site [{site}] has not been heard from for [{minutes}] minutes; the primary \
         keeps serving without protection ([{unshipped}] artifacts waiting to be shipped)."
    )
}

/// `recovery_site_lost` when the arbiter still hears the recovery site: only the link is down.
pub fn recovery_site_unreachable(site: &str, minutes: u64, unshipped: usize) -> String {
    format!(
        "The recovery site [{site}] has not been heard from for [{minutes}] minutes, but the \
         arbiter still hears it: the link between the sites is down. The primary keeps serving \
         without protection ([{unshipped}] artifacts waiting to be shipped)."
    )
}

pub fn stale_epoch(db: &str, path: &str, epoch: Epoch, current: Epoch) -> String {
    format!(
        "For database [{db}] the artifact [{path}] comes from epoch [{epoch}], older than the \
         current epoch [{current}]; it is quarantined (kept, never restored)."
    )
}

pub fn foreign_epoch(db: &str, path: &str, epoch: Epoch, from: &str, holder: &str) -> String {
    format!(
        "For database [{db}] the artifact [{path}] of epoch [{epoch}] arrived from site [{from}], \
         but that epoch is held by site [{holder}]: only the holder of an epoch writes its \
         artifacts. It is quarantined (kept, never restored); check site [{from}] and its key."
    )
}

/// `code`: the database's error code, when the drill ran and the database refused; `None` when
/// the engine could not start the drill (there is no code to show).
pub fn drill_failed(db: &str, code: Option<i32>, message: &str) -> String {
    match code {
        Some(code) => format!("The drill for database [{db}] failed: {code} {message}."),
        None => format!("The drill for database [{db}] failed: {message}."),
    }
}

/// A failover held at its external fence: the hook failed (`error`) or did not finish.
pub fn fence_waits(site: &str, target: &str, minutes: u64, error: Option<&str>) -> String {
    let what = match error {
        Some(e) => format!("failed ({e})"),
        None => "has not finished".to_string(),
    };
    format!(
        "The failover to site [{site}] waits for the external fence of site [{target}]: the \
         fence hook {what}, [{minutes}] minutes since the failover began. \
         No site accepts writes until it succeeds. Fence [{target}] by other means (power, \
         firewall) and fix the hook; the failover goes on once the hook succeeds."
    )
}

/// `archive`: the site keeps a point-in-time archive, whose file system counts too.
pub fn disk_space(site: &str, free_mib: u64, min_mib: u64, archive: bool) -> String {
    if archive {
        format!(
            "Free space for artifacts at site [{site}] is [{free_mib}] MiB on the fuller of its \
             data directory's and its archive's file systems (the agent's log names which), \
             under the threshold of [{min_mib}] MiB; free space, or shorten the archive's \
             retention (archive.keep, keep_daily, keep_weekly), before it fills."
        )
    } else {
        format!(
            "Free space for artifacts at site [{site}] is [{free_mib}] MiB, under the threshold \
             of [{min_mib}] MiB; free space before it fills."
        )
    }
}

pub fn failover(
    site: &str,
    epoch: Epoch,
    lower: u64,
    upper: Option<u64>,
    rto_ms: u64,
    forced: bool,
) -> String {
    let upper = upper.map_or_else(|| "unknown".to_string(), |u| u.to_string());
    let forced = if forced {
        " (forced by an operator)"
    } else {
        ""
    };
    format!(
        "Failover to site [{site}] completed at epoch [{epoch}]{forced}: data loss between \
         [{lower}] and [{upper}] positions, [{rto_ms}] ms from detection to writable."
    )
}

pub fn switchover(site: &str, epoch: Epoch, duration_ms: u64) -> String {
    format!(
        "Planned switchover to site [{site}] completed at epoch [{epoch}] with no data loss in \
         [{duration_ms}] ms."
    )
}

/// `primary_down` while the site answers and holds its lease: only its database service is down.
pub fn service_down(primary: &str, failed: u32, seconds: u64) -> String {
    format!(
        "The database service of the primary site [{primary}] is down: [{failed}] failed probes \
         over [{seconds}] seconds, while its agent answers and the arbiter sees it renewing its \
         lease. The primary's agent checks its service itself and gives its lease up if the \
         service stays down (failover.local_restart_wait_ms); the failover follows the lapse."
    )
}

/// `primary_down` when the primary answers but its lease lapsed at the arbiter.
pub fn primary_lapsed(primary: &str) -> String {
    format!(
        "The primary site [{primary}] answers, but the arbiter reports its lease lapsed: it \
         cannot reach the arbiter (or gave its lease up) and has stopped accepting writes. The \
         recovery site takes over."
    )
}

/// `primary_down` raised by the primary about its own database service (Auto Pilot).
pub fn own_service_down(site: &str, failed: u32, seconds: u64, why: &str) -> String {
    format!(
        "The database service at [{site}] does not answer this site's own checks: [{failed}] \
         failed over [{seconds}] seconds (last: {why}). Auto Pilot restarts it (with \
         failover.local_restart) or gives the lease up so the recovery site takes over; the lease \
         is taken up again if the service answers first."
    )
}

/// `unreadable_manifest`: `next` says what the engine does about it (see `unreadable_manifest`
/// in `outbox.rs`).
pub fn capture_gap(site: &str, db: &str, what: &str) -> String {
    format!(
        "The change capture of database [{db}] at site [{site}] found a gap: {what}. It compared \
         the whole database with its last capture and carried every page that differs, so the \
         recovery site misses nothing; the transaction count of the next log is a lower bound. \
         Keep the agent running while the application writes to avoid this."
    )
}

pub fn stream_alarm(
    alarm: crate::protocol::StreamAlarm,
    site: &str,
    db: &str,
    what: &str,
) -> String {
    match alarm {
        crate::protocol::StreamAlarm::SynchronousDegraded => format!(
            "Synchronous mode of database [{db}] at site [{site}] is degraded: {what}. Commits \
             are acknowledged without the recovery site, and a failover now may lose them. It \
             returns to synchronous by itself once the recovery site receives again; check the \
             link and the recovery site's agent."
        ),
        crate::protocol::StreamAlarm::SlotNearBound => format!(
            "The WAL kept at site [{site}] for the recovery site's stream of database [{db}] is \
             close to its bound: {what}. Past the bound the stream breaks and restarts from what \
             the primary still has (the chain still carries every finished segment); check \
             that the recovery site's agent is running and the link is up."
        ),
    }
}

pub fn unreadable_manifest(
    site: &str,
    file: &str,
    outbox: bool,
    reason: &str,
    next: &str,
) -> String {
    let place = if outbox { "outbox" } else { "inbox" };
    format!(
        "The manifest of the artifact [{file}] in the {place} of site [{site}] cannot be read \
         ({reason}); the artifact and its manifest were moved to the quarantine (kept, never \
         shipped or restored). {next}"
    )
}

pub fn archive_failed(site: &str, db: &str, artifact: &str, why: &str) -> String {
    format!(
        "Artifact {artifact} of database [{db}] could not be copied into the point-in-time \
         archive at site [{site}]: {why}. Points from it on are not restorable from the archive \
         until it is; the inbox keeps it and the copy is tried again every minute. Check the \
         archive directory's free space and permissions."
    )
}

pub fn archive_verify_failed(site: &str, db: &str, when: &str, lsn: u64, why: &str) -> String {
    format!(
        "The scheduled verification of the point-in-time archive of database [{db}] at site \
         [{site}] failed: the point of {when} (position {lsn}) did not restore: {why}. Restores \
         to that point (and others built on the same artifacts) may fail too. Run `lifeboat \
         drill --at {when}` to see it, and check the archive directory's disk."
    )
}
