//! Drills: the chain restored into a scratch cluster, checked, discarded. A drill is the
//! throw-away sibling of a point-in-time restore ([`super::pitr`]) and shares its pieces, but
//! replays through `wal-fetch` from a scratch spool (the path a standby's WAL takes), without
//! fsync.

use super::config::WalConfig;
use super::pitr::{self, full_first, write_owned, Goal};
use super::reseed::{discard, extract};
use super::segment;
use super::server::Server;
use super::spool;
use super::standby::segment_path;
use super::{setup, PostgresDriver, Slot};
use crate::drivers::manifest::{self, ArtifactFile};
use crate::drivers::{DrillOutcome, DriverError, ErrorKind};
use lifeboat_core::Lsn;
use std::fs;
use std::time::Duration;

/// Restore `chain` (a full backup, then segments) into a scratch cluster on port
/// `port + 1000`, let it replay everything and end recovery, check it answers, discard it.
pub fn drill(
    d: &PostgresDriver,
    slot: &Slot,
    chain: &[ArtifactFile],
) -> Result<DrillOutcome, DriverError> {
    let full = full_first(chain, slot.name(), "a drill")?;
    let scratch = slot.wal.spool.join(format!("drill-{}", spool::unix_ms()));
    let data = scratch.join("data");
    let wal = WalConfig {
        spool: scratch.clone(),
        fetch_wait_ms: 0,
        ..slot.wal.clone()
    };
    let mut db = slot.server.db.clone();
    db.data_dir = data.clone();
    db.port = db.port.wrapping_add(1000);
    db.log_file = Some(scratch.join("postgresql.log"));
    let server = Server::new(&d.cfg, &db, d.run_as.clone());
    let result = (|| -> Result<DrillOutcome, DriverError> {
        spool::make_dir_for(&scratch, d.run_as.ids)
            .map_err(|e| DriverError::io(format!("creating {}", scratch.display()), &e))?;
        super::setup::prepare_spool(&wal, d.run_as.ids)?;
        let wal_toml = scratch.join("wal.toml");
        setup::write_wal_toml(&wal, &wal_toml, d.run_as.ids)?;
        for a in chain {
            crate::drivers::check_bytes(a)?;
        }
        extract(d, &full.path, &data)?;
        let mut applied = 1;
        for a in &chain[1..] {
            let bytes = fs::read(&a.path)
                .map_err(|e| DriverError::io(format!("reading {}", a.path.display()), &e))?;
            let (h, _) = segment::decode(&bytes)
                .map_err(|e| DriverError::new(ErrorKind::ArtifactInvalid, e.to_string()))?;
            for hist in &h.history {
                write_owned(
                    &wal.serve_dir().join(&hist.name),
                    hist.text.as_bytes(),
                    d.run_as.ids,
                )?;
            }
            let dest = segment_path(&wal, &h.wal_file);
            let m = serde_json::to_vec(&a.manifest).expect("a manifest encodes");
            write_owned(&manifest::manifest_path(&dest), &m, d.run_as.ids)?;
            write_owned(&dest, &bytes, d.run_as.ids)?;
            applied += 1;
        }
        let (_, restore) = setup::commands(&d.cfg, &wal_toml);
        let conf = format!(
            "# lifeboat drill scratch copy (discarded: no fsync)\nport = {}\narchive_mode = off\n\
             restore_command = '{}'\nrecovery_target_timeline = 'latest'\nhot_standby = on\n\
             fsync = off\n",
            db.port,
            restore.replace('\'', "''")
        );
        write_owned(&data.join(setup::CONF_FILE), conf.as_bytes(), d.run_as.ids)?;
        pitr::include_lifeboat_conf(&data, d.run_as.ids)?;
        setup::touch(&data.join("recovery.signal"), d.run_as.ids)?;
        // No target: recovery replays every segment served, then ends (promotes).
        let limit = Duration::from_millis(d.cfg.replay_timeout_ms);
        pitr::start_and_await(&server, Goal::Promoted, limit).map_err(|stopped| {
            let who = format!("the drill's scratch copy of database {}", slot.name());
            stopped.into_error(&who, &server, limit)
        })?;
        let position = server
            .query_lsn("select pg_last_wal_replay_lsn()")?
            .unwrap_or(0);
        let n = server.query_one("select count(*) from pg_database")?;
        let check = if n.parse::<u64>().unwrap_or(0) > 0 {
            "ok".to_string()
        } else {
            format!("pg_database has {n:?} rows")
        };
        Ok(DrillOutcome {
            db: slot.id,
            position: Lsn(position),
            applied,
            check,
        })
    })();
    let _ = server.stop("immediate");
    discard(&scratch);
    let out = result?;
    if out.check != "ok" {
        return Err(DriverError::new(
            ErrorKind::CheckFailed,
            format!("drill of database {}: {}", slot.name(), out.check),
        ));
    }
    Ok(out)
}
