//! One local PostgreSQL server as the driver drives it: `pg_ctl` (as PostgreSQL's user),
//! `pg_controldata`, a long-lived `psql` session for positions, and the server log.

use super::config::{PgDatabase, PostgresConfig};
use super::spool::{self, OsUser};
use super::wal::PgLsn;
use crate::drivers::{DriverError, ErrorKind};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one SQL statement of the driver may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks the end of one answer in the `psql` session.
const END: &str = "__lifeboat_end__";

/// Who runs PostgreSQL's programs: the agent itself, or `runuser -u <user>` when it is root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: Option<String>,
    pub ids: Option<OsUser>,
}

impl RunAs {
    /// `os_user` from the configuration; `postgres` by default when the agent is root.
    pub fn from_config(cfg: &PostgresConfig) -> Result<RunAs, DriverError> {
        let root = spool::effective_uid() == 0;
        let name = match &cfg.os_user {
            Some(u) if root => Some(u.clone()),
            Some(_) => None, // not root: we can only be that user already
            None if root => Some("postgres".to_string()),
            None => None,
        };
        let ids = match &name {
            Some(n) => Some(OsUser::lookup(n).ok_or_else(|| {
                DriverError::new(
                    ErrorKind::Config,
                    format!(
                        "postgres driver: the agent runs as root and PostgreSQL refuses root, \
                         but user {n:?} does not exist; set driver.os_user to the user that \
                         owns the data directories"
                    ),
                )
            })?),
            None => None,
        };
        Ok(RunAs { name, ids })
    }

    /// A command for program `prog`, run as this user.
    pub fn command(&self, prog: &Path) -> Command {
        match &self.name {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(prog);
                c
            }
            None => Command::new(prog),
        }
    }
}

/// Run a command to completion and turn a failure into a `DriverError` naming what was done.
pub fn run(mut cmd: Command, what: &str) -> Result<Output, DriverError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DriverError::io(format!("starting {what}"), &e))?;
    if out.status.success() {
        return Ok(out);
    }
    let code = out.status.code().unwrap_or(-1);
    Err(DriverError::new(
        ErrorKind::CommandFailed,
        format!(
            "{what} failed (exit {code}): {}",
            tail_text(&String::from_utf8_lossy(&out.stderr), 600).trim()
        ),
    )
    .with_code(code))
}

/// The last `max` bytes of a text, on a character boundary.
pub fn tail_text(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Whether the server of a data directory runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Running {
    Yes,
    No,
    /// The data directory does not exist or holds no cluster.
    NoCluster,
}

/// A long-lived `psql` whose answers are read line by line through a thread.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One cluster: its data directory, its server, its log.
pub struct Server {
    pub bin_dir: PathBuf,
    pub run_as: RunAs,
    pub db: PgDatabase,
    pub log_file: PathBuf,
    pub pg_ctl_timeout_s: u64,
    session: Mutex<Option<Session>>,
}

impl Server {
    pub fn new(cfg: &PostgresConfig, db: &PgDatabase, run_as: RunAs) -> Server {
        let log_file = db
            .log_file
            .clone()
            .unwrap_or_else(|| cfg.db_spool(&db.name).join("postgresql.log"));
        Server {
            bin_dir: cfg.bin_dir.clone(),
            run_as,
            db: db.clone(),
            log_file,
            pg_ctl_timeout_s: cfg.pg_ctl_timeout_s,
            session: Mutex::new(None),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.db.data_dir
    }

    fn pg_ctl(&self) -> Command {
        let mut c = self.run_as.command(&self.bin_dir.join("pg_ctl"));
        c.arg("-D").arg(&self.db.data_dir);
        c
    }

    /// `pg_ctl status`.
    pub fn running(&self) -> Running {
        if !self.db.data_dir.join("PG_VERSION").exists() {
            return Running::NoCluster;
        }
        match self.pg_ctl().arg("status").stdin(Stdio::null()).output() {
            Ok(o) if o.status.success() => Running::Yes,
            Ok(o) if o.status.code() == Some(4) => Running::NoCluster,
            _ => Running::No,
        }
    }

    /// `pg_ctl start -w` with the server log at `log_file`.
    pub fn start(&self) -> Result<(), DriverError> {
        self.drop_session();
        let mut c = self.pg_ctl();
        c.arg("-l")
            .arg(&self.log_file)
            .arg("-w")
            .arg("-t")
            .arg(self.pg_ctl_timeout_s.to_string())
            .arg("start");
        run(
            c,
            &format!("pg_ctl start of {}", self.db.data_dir.display()),
        )
        .map_err(|e| {
            e.context(format!(
                "database {} did not start; its log {} says: {}",
                self.db.name,
                self.log_file.display(),
                self.log_tail(800).replace('\n', " | ")
            ))
        })?;
        Ok(())
    }

    /// `pg_ctl stop -m <mode> -w`; a server that is not running is fine.
    pub fn stop(&self, mode: &str) -> Result<(), DriverError> {
        self.drop_session();
        if self.running() != Running::Yes {
            return Ok(());
        }
        let mut c = self.pg_ctl();
        c.args(["-m", mode, "-w", "-t"])
            .arg(self.pg_ctl_timeout_s.to_string())
            .arg("stop");
        run(
            c,
            &format!("pg_ctl stop -m {mode} of {}", self.db.data_dir.display()),
        )
        .map(drop)
    }

    /// `pg_ctl promote -w`.
    pub fn promote(&self) -> Result<(), DriverError> {
        let mut c = self.pg_ctl();
        c.args(["-w", "-t"])
            .arg(self.pg_ctl_timeout_s.to_string())
            .arg("promote");
        run(
            c,
            &format!("pg_ctl promote of {}", self.db.data_dir.display()),
        )
        .map(drop)
    }

    /// `pg_controldata`, as `field -> value`.
    pub fn controldata(&self) -> Result<BTreeMap<String, String>, DriverError> {
        let c = {
            let mut c = self.run_as.command(&self.bin_dir.join("pg_controldata"));
            c.arg("-D").arg(&self.db.data_dir);
            c
        };
        let out = run(
            c,
            &format!("pg_controldata of {}", self.db.data_dir.display()),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect())
    }

    fn spawn_session(&self) -> Result<Session, DriverError> {
        let mut child = Command::new(self.bin_dir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0"])
            .arg("-h")
            .arg(&self.db.host)
            .arg("-p")
            .arg(self.db.port.to_string())
            .arg("-U")
            .arg(&self.db.user)
            .arg("-d")
            .arg(&self.db.dbname)
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGAPPNAME", "lifeboat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| DriverError::io("starting psql", &e))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx2.send(format!("\u{1}{line}")).is_err() {
                    break;
                }
            }
        });
        Ok(Session {
            child,
            stdin,
            lines: rx,
        })
    }

    fn drop_session(&self) {
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Run one SQL statement; returns its output rows (`|`-separated columns).
    pub fn query(&self, sql: &str) -> Result<Vec<String>, DriverError> {
        let mut guard = self.session.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.spawn_session()?);
            }
            let s = guard.as_mut().expect("just set");
            match ask(s, sql) {
                Ok(rows) => return Ok(rows),
                Err(Asked::Sql(msg)) => {
                    return Err(DriverError::new(
                        ErrorKind::CommandFailed,
                        format!("database {}: {sql:?} failed: {msg}", self.db.name),
                    ))
                }
                Err(Asked::Lost(msg)) => {
                    *guard = None;
                    if attempt == 1 {
                        return Err(DriverError::new(
                            ErrorKind::CommandFailed,
                            format!(
                                "database {} at {}:{} does not answer: {msg}",
                                self.db.name, self.db.host, self.db.port
                            ),
                        ));
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// One value.
    pub fn query_one(&self, sql: &str) -> Result<String, DriverError> {
        let rows = self.query(sql)?;
        rows.into_iter().next().ok_or_else(|| {
            DriverError::new(
                ErrorKind::CommandFailed,
                format!("database {}: {sql:?} returned no row", self.db.name),
            )
        })
    }

    /// A position (`pg_lsn`), `None` for SQL NULL.
    pub fn query_lsn(&self, sql: &str) -> Result<Option<u64>, DriverError> {
        let v = self.query_one(sql)?;
        if v.is_empty() {
            return Ok(None);
        }
        PgLsn::parse(&v).map(|l| Some(l.0)).ok_or_else(|| {
            DriverError::new(
                ErrorKind::CommandFailed,
                format!(
                    "database {}: {sql:?} returned {v:?}, not a WAL position",
                    self.db.name
                ),
            )
        })
    }

    /// Whether the running server is a standby.
    pub fn in_recovery(&self) -> Result<bool, DriverError> {
        Ok(self.query_one("select pg_is_in_recovery()")? == "t")
    }

    /// The server log's current length (a cursor for [`Server::log_since`]).
    pub fn log_len(&self) -> u64 {
        fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0)
    }

    /// The server log's lines written since `offset`.
    pub fn log_since(&self, offset: u64) -> Vec<String> {
        let Ok(mut f) = File::open(&self.log_file) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let from = if offset > len { 0 } else { offset };
        if f.seek(SeekFrom::Start(from)).is_err() {
            return Vec::new();
        }
        let mut text = String::new();
        let _ = f.take(4 << 20).read_to_string(&mut text);
        text.lines().map(str::to_string).collect()
    }

    /// The end of the server log, for error messages.
    pub fn log_tail(&self, max: usize) -> String {
        let len = self.log_len();
        let lines = self.log_since(len.saturating_sub(max as u64 * 2));
        tail_text(&lines.join("\n"), max).to_string()
    }
}

enum Asked {
    Sql(String),
    Lost(String),
}

fn ask(s: &mut Session, sql: &str) -> Result<Vec<String>, Asked> {
    let script = format!("{sql};\n\\echo {END} :ERROR :LAST_ERROR_MESSAGE\n");
    if let Err(e) = s
        .stdin
        .write_all(script.as_bytes())
        .and_then(|_| s.stdin.flush())
    {
        return Err(Asked::Lost(format!("psql: {e}")));
    }
    let deadline = Instant::now() + QUERY_TIMEOUT;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match s.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(err) = line.strip_prefix('\u{1}') {
                    errors.push(err.to_string());
                } else if let Some(rest) = line.strip_prefix(END) {
                    let rest = rest.trim_start();
                    if rest.starts_with("true") {
                        let msg = rest.trim_start_matches("true").trim();
                        return Err(Asked::Sql(if msg.is_empty() {
                            errors.join(" ")
                        } else {
                            msg.to_string()
                        }));
                    }
                    return Ok(rows);
                } else {
                    rows.push(line);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(Asked::Lost(format!(
                    "no answer within {}s",
                    QUERY_TIMEOUT.as_secs()
                )))
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Give the stderr reader a moment to deliver the reason.
                return Err(Asked::Lost(if errors.is_empty() {
                    "psql exited".to_string()
                } else {
                    errors.join(" ")
                }));
            }
        }
    }
}
