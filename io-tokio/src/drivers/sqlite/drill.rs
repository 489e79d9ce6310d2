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
        let conn = open_existing(scratch, slot.name(), slot.busy, true)?;
        let after = format!("a drill restored {} artifacts", chain.len());
        run_check(&conn, "integrity_check", &target, &after)?;
        if let Some(sql) = &self.config.drill_check_sql {
            let row: Result<Option<()>, _> = conn
                .prepare(sql)
                .and_then(|mut stmt| stmt.query([])?.next().map(|r| r.map(|_| ())));
            match row {
                Ok(Some(())) => {}
                Ok(None) => {
                    return Err(DriverError::new(
                        ErrorKind::CheckFailed,
                        format!(
                            "drill of database {}: the check query {sql:?} returned no row at \
                             position {position}",
                            slot.name()
                        ),
                    ))
                }
                Err(e) => {
                    return Err(DriverError::new(
                        ErrorKind::CheckFailed,
                        format!(
                            "drill of database {}: the check query {sql:?} failed at position \
                             {position}: {e}",
                            slot.name()
                        ),
                    ))
                }
            }
        }
        Ok(DrillOutcome {
            db: slot.id,
            position,
            applied: chain.len(),
            check: "ok".to_string(),
        })
    }
}
