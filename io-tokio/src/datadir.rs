//! One process per data directory. Two agents (or two arbiters) on one `data_dir` would both
//! append to its journal and both act as the same site: the second one started by accident
//! displaced the first one's links and left the primary fenced. Each process holds an
//! exclusive `flock` on `<data_dir>/lifeboat.lock` for as long as it runs; the kernel releases
//! it when the process ends, however it ends, so a crash never leaves a stale lock behind. The
//! file names the holder, so the refusal can say who it is.

use anyhow::{bail, Context};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "lifeboat.lock";

/// Held for the life of the process (dropping it releases the lock).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Take the data directory for this process (`what`: "agent", "arbiter"), or say which
    /// process holds it.
    pub fn acquire(data_dir: &Path, what: &str) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data_dir {}", data_dir.display()))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.split_whitespace().collect::<Vec<_>>().join(" ");
                let holder = if holder.is_empty() {
                    "a process that has not written its name yet".to_string()
                } else {
                    holder
                };
                bail!(
                    "data_dir {} is in use by another lifeboat process ({holder}); stop that \
                     process first, or give this {what} its own data_dir",
                    data_dir.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        let me = format!("{what} pid {}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing the lock file {}", path.display()))?;
        Ok(DataDirLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_and_the_lock_dies_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path(), "agent").unwrap();
        let e = DataDirLock::acquire(dir.path(), "agent")
            .unwrap_err()
            .to_string();
        assert!(e.contains("in use by another lifeboat process"), "{e}");
        assert!(
            e.contains(&format!("agent pid {}", std::process::id())),
            "{e}"
        );
        assert!(first.path().ends_with(LOCK_FILE));
        drop(first);
        let again = DataDirLock::acquire(dir.path(), "arbiter").unwrap();
        let text = std::fs::read_to_string(again.path()).unwrap();
        assert_eq!(text, format!("arbiter pid {}\n", std::process::id()));
    }
}
