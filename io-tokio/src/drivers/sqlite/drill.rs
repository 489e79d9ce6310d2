//! Drills: restore a chain into a scratch copy, check it, discard it.

use super::super::durable;
use super::super::error::{DriverError, ErrorKind};
use super::super::manifest::ArtifactFile;
use super::super::DrillOutcome;
use super::apply::{self, Target};
use super::chain;
use super::header::widen;
use super::lock::open_existing;
use super::slot::{check_full, run_check, Slot};
use super::SqliteDriver;
use lifeboat_core::{ArtifactKind, Lsn};
use std::path::Path;
use std::time::Duration;

impl SqliteDriver {
    pub(super) fn drill_in(
        &self,
        slot: &Slot,
        chain: &[ArtifactFile],
        scratch: &Path,
    ) -> Result<DrillOutcome, DriverError> {
        let target = Target {
            db_name: slot.name(),
            path: scratch,
        };
        let (mut position, rest) = match chain.first() {
            Some(full) if full.manifest.kind == ArtifactKind::Full => (Lsn(0), chain),
            _ => {
                // No full: drill the standby as it is, plus the deltas.
                let mut st = slot.lock();
                slot.recover(&mut st)?;
                if !slot.path().is_file() {
                    return Err(slot.missing("a drill without a full backup needs the standby"));
                }
                let image = slot.read_live(&st, Some(scratch))?;
                (
                    widen(image.counter, chain::load_reference(&slot.dir)),
                    chain,
                )
            }
        };
        for artifact in rest {
            position = match artifact.manifest.kind {
                ArtifactKind::Full => {
                    let lsn = check_full(artifact, slot.name())?;
                    durable::copy_and_sync(&artifact.path, scratch)?;
                    lsn
                }
                ArtifactKind::Incremental | ArtifactKind::Log => {
                    let file = durable::open_rw(scratch).map_err(|e| {
                        DriverError::io(format!("opening {}", scratch.display()), &e)
                    })?;
                    apply::apply_delta(&file, &target, artifact, None)?.1
                }
            };
        }
        let after = format!("a drill restored {} artifacts", chain.len());
        check_copy(
            scratch,
            slot.name(),
            slot.busy,
            self.config.drill_check_sql.as_deref(),
            position,
            &after,
        )?;
        Ok(DrillOutcome {
            db: slot.id,
            position,
            applied: chain.len(),
            check: "ok".to_string(),
        })
    }
}

/// Open a restored copy and check it: `PRAGMA integrity_check`, then `check_sql` (when set)
/// must return a row. `after` says what was restored, for the error.
fn check_copy(
    path: &Path,
    db_name: &str,
    busy: Duration,
    check_sql: Option<&str>,
    position: Lsn,
    after: &str,
) -> Result<(), DriverError> {
    let target = Target { db_name, path };
    let conn = open_existing(path, db_name, busy, true)?;
    run_check(&conn, "integrity_check", &target, after)?;
    let Some(sql) = check_sql else {
        return Ok(());
    };
    let row: Result<Option<()>, _> = conn
        .prepare(sql)
        .and_then(|mut stmt| stmt.query([])?.next().map(|r| r.map(|_| ())));
    let why = match row {
        Ok(Some(())) => return Ok(()),
        Ok(None) => "returned no row".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    Err(DriverError::new(
        ErrorKind::CheckFailed,
        format!(
            "database {db_name}: the check query {sql:?} {why} at position {position} ({after})"
        ),
    ))
}

/// What a point-in-time restore built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub position: Lsn,
    pub applied: usize,
    pub bytes: u64,
}

/// Build `chain` (a verified full first, then the incrementals and logs that continue it, as
/// `lifeboat_core::archive::points` chose them) into a new database file `into`, check it
/// (`PRAGMA integrity_check` and `check_sql`), and only then give it its name: `into` is
/// either the whole restored point or absent. Every artifact is checked against its manifest
/// first. `progress` counts the bytes read. Needs no running agent and touches nothing else.
pub fn restore_point(
    db_name: &str,
    chain: &[ArtifactFile],
    into: &Path,
    check_sql: Option<&str>,
    progress: &super::super::Progress,
) -> Result<Restored, DriverError> {
    let refuse = |why: String| Err(DriverError::new(ErrorKind::Config, why));
    if into.exists() {
        return refuse(format!(
            "{} already exists: restore into a new path (nothing was changed)",
            into.display()
        ));
    }
    let Some(full) = chain
        .first()
        .filter(|a| a.manifest.kind == ArtifactKind::Full)
    else {
        return refuse(format!(
            "a restore of database {db_name} needs a full backup first in its chain"
        ));
    };
    for a in chain {
        if a.db_name() != db_name {
            return refuse(format!(
                "artifact {} belongs to database {}, not {db_name}",
                a.describe(),
                a.db_name()
            ));
        }
        super::super::manifest::check_bytes(a)?;
    }
    let bytes: u64 = chain.iter().map(|a| a.manifest.size).sum();
    progress.start(bytes);
    let tmp = crate::durable::temp_beside(into, "restoring");
    let result = (|| {
        let mut position = check_full(full, db_name)?;
        durable::copy_and_sync_counted(&full.path, &tmp, progress)?;
        let target = Target {
            db_name,
            path: &tmp,
        };
        let file = durable::open_rw(&tmp)
            .map_err(|e| DriverError::io(format!("opening {}", tmp.display()), &e))?;
        // Unsynced: nothing opens the copy before it is complete and fsynced below.
        for a in &chain[1..] {
            position = apply::apply_delta_synced(&file, &target, a, None, false)?.1;
            progress.add(a.manifest.size);
        }
        file.sync_all()
            .map_err(|e| DriverError::io(format!("syncing {}", tmp.display()), &e))?;
        drop(file);
        let after = format!("a restore of {} artifacts", chain.len());
        check_copy(
            &tmp,
            db_name,
            Duration::from_secs(5),
            check_sql,
            position,
            &after,
        )?;
        durable::rename_durably(&tmp, into)?;
        Ok(Restored {
            position,
            applied: chain.len(),
            bytes,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
