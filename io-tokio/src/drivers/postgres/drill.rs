//! Drills: the chain restored into a scratch cluster, checked, discarded.

use super::config::WalConfig;
use super::reseed::{discard, extract};
use super::segment;
use super::server::Server;
use super::spool;
use super::standby::segment_path;
use super::{setup, PostgresDriver, Slot};
use crate::drivers::manifest::{self, ArtifactFile};
use crate::drivers::{DrillOutcome, DriverError, ErrorKind};
use lifeboat_core::{ArtifactKind, Lsn};
use std::fs;
use std::time::{Duration, Instant};

/// Restore `chain` (a full backup, then segments) into a scratch cluster on port
/// `port + 1000`, let it replay everything and end recovery, check it answers, discard it.
pub fn drill(
    d: &PostgresDriver,
    slot: &Slot,
    chain: &[ArtifactFile],
) -> Result<DrillOutcome, DriverError> {
    let Some(full) = chain
        .first()
        .filter(|a| a.manifest.kind == ArtifactKind::Full)
    else {
        return Err(DriverError::new(
            ErrorKind::NoBaseFull,
            format!(
                "a drill of database {} needs a full backup first in its chain",
                slot.name()
            ),
        ));
    };
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
    let result = (|| {
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
                let p = wal.serve_dir().join(&hist.name);
                spool::write_durably(&p, hist.text.as_bytes())
                    .and_then(|_| spool::give_to(&p, d.run_as.ids))
                    .map_err(|e| DriverError::io(format!("writing {}", p.display()), &e))?;
            }
            let dest = segment_path(&wal, &h.wal_file);
            let m = serde_json::to_vec(&a.manifest).expect("a manifest encodes");
            for (p, b) in [
                (manifest::manifest_path(&dest), &m[..]),
                (dest.clone(), &bytes[..]),
            ] {
                spool::write_durably(&p, b)
                    .and_then(|_| spool::give_to(&p, d.run_as.ids))
                    .map_err(|e| DriverError::io(format!("writing {}", p.display()), &e))?;
            }
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
        let conf_path = data.join(setup::CONF_FILE);
        spool::write_durably(&conf_path, conf.as_bytes())
            .and_then(|_| spool::give_to(&conf_path, d.run_as.ids))
            .map_err(|e| DriverError::io(format!("writing {}", conf_path.display()), &e))?;
        let main = data.join("postgresql.conf");
        let text = fs::read_to_string(&main).unwrap_or_default();
        if !text.lines().any(|l| l.trim() == setup::INCLUDE_LINE) {
            fs::write(&main, format!("{text}\n{}\n", setup::INCLUDE_LINE))
                .map_err(|e| DriverError::io(format!("writing {}", main.display()), &e))?;
        }
        setup::touch(&data.join("recovery.signal"), d.run_as.ids)?;
        server.start()?;
        let deadline = Instant::now() + Duration::from_millis(d.cfg.replay_timeout_ms);
        while server.in_recovery()? {
            if Instant::now() >= deadline {
                return Err(DriverError::new(
                    ErrorKind::Timeout,
                    "the drill's scratch copy did not finish recovery in time",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
