//! Rebuilding a standby from a base backup: reseed (and the first restore of a full backup).

use super::server::{run, Running};
use super::spool;
use super::state::PgState;
use super::wal::PgLsn;
use super::{diverged, setup, PostgresDriver, Slot};
use crate::drivers::manifest::ArtifactFile;
use crate::drivers::{DriverError, ErrorKind};
use lifeboat_core::{ArtifactKind, Lsn};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The configuration files a site keeps across a reseed (the backup carries the primary's).
const LOCAL_CONF: [&str; 4] = [
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
];

/// Extract a base backup tar into `dir` (created, owned by PostgreSQL's user).
pub(super) fn extract(d: &PostgresDriver, tar: &Path, dir: &Path) -> Result<(), DriverError> {
    spool::make_dir_for(dir, d.run_as.ids)
        .map_err(|e| DriverError::io(format!("creating {}", dir.display()), &e))?;
    let mut c = std::process::Command::new("tar");
    c.arg("-xf").arg(tar).arg("-C").arg(dir);
    run(
        c,
        &format!("extracting {} into {}", tar.display(), dir.display()),
    )?;
    if let Some(name) = &d.run_as.name {
        let mut c = std::process::Command::new("chown");
        c.arg("-R").arg(format!("{name}:")).arg(dir);
        run(c, &format!("chown -R {name} {}", dir.display()))?;
    }
    Ok(())
}

/// Stop, move the old copy aside, extract the base backup, keep the site's configuration, write
/// the standby configuration, start, wait until consistent; then drop the old copy (or put it
/// back when anything failed).
pub fn reseed(
    d: &PostgresDriver,
    slot: &Slot,
    st: &mut PgState,
    full: &ArtifactFile,
) -> Result<Lsn, DriverError> {
    if full.manifest.kind != ArtifactKind::Full {
        return Err(DriverError::new(
            ErrorKind::Unsupported,
            format!(
                "{} is not a full backup: a reseed needs one",
                full.describe()
            ),
        ));
    }
    let s = &slot.server;
    let data = s.data_dir().to_path_buf();
    let old = sibling(&data, "lifeboat-old");
    let was_running = s.running() == Running::Yes;
    s.stop("fast")?;
    if old.exists() {
        fs::remove_dir_all(&old)
            .map_err(|e| DriverError::io(format!("removing {}", old.display()), &e))?;
    }
    let had_old = data.exists();
    if had_old {
        fs::rename(&data, &old).map_err(|e| {
            DriverError::io(
                format!("moving {} aside to {}", data.display(), old.display()),
                &e,
            )
        })?;
    }
    let attempt = (|| {
        extract(d, &full.path, &data)?;
        for f in [
            "standby.signal",
            "recovery.signal",
            "postmaster.pid",
            "postmaster.opts",
        ] {
            let _ = fs::remove_file(data.join(f));
        }
        if had_old {
            for f in LOCAL_CONF {
                if old.join(f).exists() {
                    fs::copy(old.join(f), data.join(f))
                        .and_then(|_| spool::give_to(&data.join(f), d.run_as.ids))
                        .map_err(|e| DriverError::io(format!("keeping {f}"), &e))?;
                }
            }
        }
        // The old chain's servable segments belong to another history.
        if let Ok(files) = spool::list(&slot.wal.serve_dir()) {
            for (name, path) in files {
                if name != "requests.log" {
                    let _ = fs::remove_file(path);
                }
            }
        }
        setup::write_cluster_conf(&d.cfg, slot, d.run_as.ids)?;
        setup::touch(&data.join("standby.signal"), d.run_as.ids)?;
        s.start()?;
        wait_consistent(d, slot, full.manifest.lsn_end.0)
    })();
    match attempt {
        Ok(()) => {
            if had_old {
                keep_lost_writes(d, slot, &old, &data);
            }
            st.restored_to = Some(full.manifest.lsn_end.0);
            st.save()?;
            if let Some(size) = setup::segment_size(s) {
                let mut wal = slot.wal.clone();
                wal.segment_size = size;
                setup::write_wal_toml(&wal, &slot.wal_toml, d.run_as.ids)?;
            }
            tracing::info!(db = slot.name(), full = %full.path.display(),
                position = %PgLsn(full.manifest.lsn_end.0), "reseeded from a base backup");
            Ok(full.manifest.lsn_end)
        }
        Err(e) => {
            let _ = s.stop("immediate");
            // Put the old standby back. If that fails, the old data is still whole under
            // `old`: say where, in the error the operator sees, instead of leaving it unnamed.
            let mut rollback = String::new();
            if had_old {
                let back = (|| {
                    if data.exists() {
                        fs::remove_dir_all(&data)?;
                    }
                    fs::rename(&old, &data)
                })();
                match back {
                    Ok(()) => {
                        if was_running {
                            if let Err(se) = s.start() {
                                rollback = format!(
                                    "; the previous standby is back in {} but did not start: {se}",
                                    data.display()
                                );
                            }
                        }
                    }
                    Err(re) => {
                        rollback = format!(
                            "; putting the previous standby back failed ({re}): its data is \
                             intact in {}, move it to {} by hand before starting PostgreSQL",
                            old.display(),
                            data.display()
                        );
                        tracing::error!(old = %old.display(), data = %data.display(),
                            error = %re, "reseed rollback failed: the previous standby is kept aside");
                    }
                }
            }
            Err(e.context(format!(
                "reseed of database {} from {}{rollback}",
                slot.name(),
                full.path.display()
            )))
        }
    }
}

/// Before the old copy goes: keep what it wrote beyond the new primary's history (a former
/// primary's writes lost in a failover, see `diverged`), then remove it. If that comparison
/// fails, the old copy is kept whole under a new name instead, and the error names it.
fn keep_lost_writes(d: &PostgresDriver, slot: &Slot, old: &Path, data: &Path) {
    let size = slot.segment_size();
    let found = if size == 0 {
        Err("the cluster's WAL segment size is unknown".to_string())
    } else {
        diverged::find_and_keep(
            slot.id,
            slot.name(),
            old,
            data,
            size,
            &slot.wal.spool.join("diverged"),
        )
    };
    match found {
        Ok(lost) => {
            if let Some(l) = lost {
                tracing::warn!(db = slot.name(), from = %PgLsn(l.from.0), to = %PgLsn(l.to.0),
                    bytes = l.to.0 - l.from.0, transactions = ?l.transactions, kept = %l.kept,
                    "the old copy held writes the new primary lacks: lost in the failover, kept");
                d.lost.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            }
            discard(old);
        }
        Err(e) => {
            let aside = sibling(data, &format!("lifeboat-kept-{}", spool::unix_ms()));
            let kept = fs::rename(old, &aside).map_or_else(|_| old.to_path_buf(), |_| aside);
            tracing::error!(db = slot.name(), error = %e, kept = %kept.display(),
                "could not compare the old copy with the new primary's history; it is kept \
                 whole: read its pg_wal for writes the failover lost, then remove it");
        }
    }
}

/// Remove a directory we no longer need, in the background: unlinking freshly fsynced files can
/// take seconds on some disks, and nothing waits for it. It is renamed first, so its name is
/// free at once.
pub(super) fn discard(dir: &Path) {
    let trash = sibling(dir, &format!("lifeboat-trash-{}", spool::unix_ms()));
    let target = if fs::rename(dir, &trash).is_ok() {
        trash
    } else {
        dir.to_path_buf()
    };
    std::thread::spawn(move || {
        let _ = fs::remove_dir_all(&target);
    });
}

fn sibling(dir: &Path, tag: &str) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.with_file_name(format!("{name}.{tag}"))
}

fn wait_consistent(d: &PostgresDriver, slot: &Slot, end: u64) -> Result<(), DriverError> {
    let deadline = Instant::now() + Duration::from_millis(d.cfg.replay_timeout_ms);
    loop {
        let r = slot
            .server
            .query_lsn("select pg_last_wal_replay_lsn()")?
            .unwrap_or(0);
        if r >= end {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(DriverError::new(
                ErrorKind::Timeout,
                format!(
                    "the restored base backup did not reach its end point {} (replay is at {}); \
                     its log says: {}",
                    PgLsn(end),
                    PgLsn(r),
                    slot.server.log_tail(600).replace('\n', " | ")
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
