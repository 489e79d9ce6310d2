//! Throw-away PostgreSQL clusters for the tests and benchmarks (not part of the library): `initdb` (as PostgreSQL's
//! user when we are root), loopback only, and guards that stop every server and remove every
//! directory even when a test fails.

use lifeboat_io_tokio::drivers::postgres::config::DEFAULT_BIN_DIR;
use lifeboat_io_tokio::drivers::postgres::spool::{self, OsUser};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where PostgreSQL's programs are: `$LIFEBOAT_PG_BIN`, else Debian's PostgreSQL 15.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("LIFEBOAT_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN_DIR))
}

/// Whether PostgreSQL's server programs and `psql` are installed; the reason when not.
pub fn available() -> Result<(), String> {
    let bin = bin_dir();
    for p in [
        "initdb",
        "pg_ctl",
        "postgres",
        "pg_basebackup",
        "pg_controldata",
        "psql",
    ] {
        if !bin.join(p).exists() {
            return Err(format!(
                "{} is missing (install postgresql-15, or set LIFEBOAT_PG_BIN)",
                bin.join(p).display()
            ));
        }
    }
    if spool::effective_uid() == 0 && OsUser::lookup("postgres").is_none() {
        return Err("running as root but there is no `postgres` user to run PostgreSQL".into());
    }
    Ok(())
}

/// The user servers run as: `postgres` when we are root, else ourselves.
pub fn server_user() -> Option<(String, OsUser)> {
    if spool::effective_uid() == 0 {
        OsUser::lookup("postgres").map(|u| ("postgres".to_string(), u))
    } else {
        None
    }
}

fn as_server_user(prog: &Path) -> Command {
    match server_user() {
        Some((name, _)) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(name).arg("--").arg(prog);
            c
        }
        None => Command::new(prog),
    }
}

/// Run `c` (no stdin); its stdout, or an error naming `what` with the exit status and output.
pub fn check(mut c: Command, what: &str) -> Result<String, String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A directory under the system temp directory that PostgreSQL's user can traverse; removed
/// (servers under it stopped first) when dropped.
pub struct ScratchDir {
    pub path: PathBuf,
    keep: bool,
}

static SCRATCH: AtomicU32 = AtomicU32::new(0);

impl ScratchDir {
    pub fn new(tag: &str) -> Result<ScratchDir, String> {
        use std::os::unix::fs::PermissionsExt;
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "lifeboat-pg-{tag}-{}-{n}-{}",
            std::process::id(),
            spool::unix_ms()
        ));
        fs::create_dir_all(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        Ok(ScratchDir {
            path,
            keep: std::env::var_os("LIFEBOAT_KEEP_SCRATCH").is_some(),
        })
    }

    /// A subdirectory (created, mode 0755).
    pub fn dir(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path.join(name);
        let _ = fs::create_dir_all(&p);
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o755));
        p
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        stop_all_under(&self.path);
        if !self.keep {
            // Unlinking fsynced files can take seconds: a detached `rm` does it while the
            // next test runs.
            let spawned = Command::new("rm")
                .arg("-rf")
                .arg(&self.path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            if spawned.is_err() {
                let _ = fs::remove_dir_all(&self.path);
            }
        }
    }
}

/// Stop (immediately) every server whose data directory lies under `root`.
pub fn stop_all_under(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if dir.join("postmaster.pid").exists() {
            stop_immediately(&dir);
        }
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                    && !p.ends_with("base")
                    && !p.ends_with("pg_wal")
                {
                    stack.push(p);
                }
            }
        }
    }
}

/// `pg_ctl stop -m immediate`, ignoring failures (a guard's last resort).
pub fn stop_immediately(data: &Path) {
    let mut c = as_server_user(&bin_dir().join("pg_ctl"));
    c.arg("-D")
        .arg(data)
        .args(["-m", "immediate", "-w", "stop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _ = c.status();
}

/// A cluster made by `initdb` for a test: trust authentication on 127.0.0.1 only, its socket in
/// its own directory. The server is stopped when the value is dropped.
pub struct Cluster {
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Cluster {
    /// `initdb --wal-segsize=<mib>` into `data`, listening on 127.0.0.1:`port`.
    pub fn initdb(data: &Path, port: u16, wal_segsize_mib: u32) -> Result<Cluster, String> {
        let parent = data.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        let user = server_user();
        spool::make_dir_for(data, user.as_ref().map(|u| u.1))
            .map_err(|e| format!("creating {}: {e}", data.display()))?;
        let mut c = as_server_user(&bin_dir().join("initdb"));
        c.arg("-D")
            .arg(data)
            .arg(format!("--wal-segsize={wal_segsize_mib}"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .env("LC_ALL", "C");
        check(c, &format!("initdb {}", data.display()))?;
        let run = Cluster::run_dir(parent, port)?;
        let conf = format!(
            "\n# lifeboat test cluster\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nmax_connections = 20\nshared_buffers = 16MB\n\
             checkpoint_timeout = 30min\nmax_wal_size = 256MB\nlog_min_messages = info\n",
            run.display()
        );
        let main = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&main).map_err(|e| e.to_string())?;
        text.push_str(&conf);
        fs::write(&main, text).map_err(|e| e.to_string())?;
        Ok(Cluster {
            data: data.to_path_buf(),
            port,
            log: run.join("postgresql.log"),
        })
    }

    /// An existing data directory (a copy made by `pg_basebackup`, say), served on `port`; its
    /// log goes to a directory PostgreSQL's user owns beside it.
    pub fn adopt(data: &Path, port: u16) -> Result<Cluster, String> {
        let parent = data.parent().unwrap_or(Path::new("/"));
        let run = Cluster::run_dir(parent, port)?;
        Ok(Cluster {
            data: data.to_path_buf(),
            port,
            log: run.join("postgresql.log"),
        })
    }

    /// `<parent>/pg-<port>`: the socket and the log, owned by PostgreSQL's user.
    fn run_dir(parent: &Path, port: u16) -> Result<PathBuf, String> {
        let run = parent.join(format!("pg-{port}"));
        spool::make_dir_for(&run, server_user().map(|u| u.1))
            .map_err(|e| format!("creating {}: {e}", run.display()))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&run, fs::Permissions::from_mode(0o755));
        Ok(run)
    }

    /// `pg_ctl start -w` (log at `self.log`).
    pub fn start(&self) -> Result<(), String> {
        let mut c = as_server_user(&bin_dir().join("pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "start"]);
        check(c, &format!("pg_ctl start {}", self.data.display())).map(drop)
    }

    /// `pg_ctl stop -m <mode>`.
    pub fn stop(&self, mode: &str) -> Result<(), String> {
        let mut c = as_server_user(&bin_dir().join("pg_ctl"));
        c.arg("-D").arg(&self.data).args(["-m", mode, "-w", "stop"]);
        check(c, &format!("pg_ctl stop -m {mode} {}", self.data.display())).map(drop)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            stop_immediately(&self.data);
        }
    }
}

/// Run SQL on 127.0.0.1:`port` with `psql` (one call, autocommit); returns the rows.
pub fn psql(port: u16, sql: &str) -> Result<Vec<String>, String> {
    psql_each(port, &[sql])
}

/// A free TCP port on 127.0.0.1 for a server started later, outside the ephemeral range (see
/// `lifeboat_io_tokio::ports`).
pub fn free_port() -> u16 {
    lifeboat_io_tokio::ports::free_loopback_ports(1).map_or(0, |p| p[0])
}

/// Run several SQL commands on 127.0.0.1:`port`, each in its own transaction (`psql -c … -c …`);
/// returns every row printed.
pub fn psql_each(port: u16, sqls: &[&str]) -> Result<Vec<String>, String> {
    let mut c = Command::new(bin_dir().join("psql"));
    c.args([
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
    ])
    .arg("-p")
    .arg(port.to_string())
    .args(["-d", "postgres"])
    .env("PGCONNECT_TIMEOUT", "5");
    for s in sqls {
        c.arg("-c").arg(s);
    }
    let out = check(c, &format!("psql -p {port} {sqls:?}"))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Copy an artifact and its manifest into another site's inbox, the way the transport delivers
/// it (file first, manifest last), and return the copy. The copy is not verified here.
pub fn deliver(
    artifact: &lifeboat_io_tokio::drivers::ArtifactFile,
    inbox: &Path,
) -> Result<lifeboat_io_tokio::drivers::ArtifactFile, String> {
    let name = artifact
        .path
        .file_name()
        .ok_or_else(|| format!("{} names no file", artifact.path.display()))?;
    let dest = inbox.join(name);
    fs::copy(&artifact.path, &dest).map_err(|e| {
        format!(
            "copying {} to {}: {e}",
            artifact.path.display(),
            dest.display()
        )
    })?;
    lifeboat_io_tokio::drivers::manifest::write_manifest(&dest, &artifact.manifest)
        .map_err(|e| e.to_string())?;
    Ok(lifeboat_io_tokio::drivers::ArtifactFile {
        path: dest,
        manifest: artifact.manifest.clone(),
    })
}
