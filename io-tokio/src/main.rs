//! The `lifeboat` binary: site agents, the arbiter, operator commands and the demo.

use clap::{Parser, Subcommand, ValueEnum};
use lifeboat_io_tokio::cli::troubleshoot::SiteTarget;
use lifeboat_io_tokio::cli::{self, exit, Target};
use lifeboat_io_tokio::config::{ArbiterFile, SiteFile};
use lifeboat_io_tokio::{agent, arbiter, demo};
use std::path::PathBuf;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the request was refused or did not complete, a \
verification failed, or the demo failed; 2 bad usage or an invalid configuration file; 3 the \
agent could not be reached; 4 the agent or arbiter stopped on an error (journal, disk, address \
in use, a data_dir held by another process). wal-push / wal-fetch: 0 done; 1 not done yet (PostgreSQL retries); 2 bad usage or configuration.";

#[derive(Parser, Debug)]
#[command(
    name = "lifeboat",
    version,
    about = "A warm recovery site for your databases: ship, verify, restore, fail over safely.",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), default $LIFEBOAT_LOG or `info`.
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a site agent.
    Agent {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Run the arbiter (witness).
    Arbiter {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// One table for all sites: role, epoch, last backup / copy / restore, latency, alerts.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Planned, zero-loss switchover to the other site.
    Switchover {
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for the switchover report (0: do not wait).
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Unplanned failover to this (recovery) site.
    Failover {
        /// Accept the risk that the arbiter cannot confirm the primary is gone.
        #[arg(long)]
        force: bool,
        /// Stop at this UTC time (`2026-11-22T03:05:00Z`): artifacts created after it are
        /// left out (a standby that lags on purpose, taken over before a bad write reached it).
        /// The report names what was left out and counts it in the loss.
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Planned switchover back to the original primary once it is re-protected.
    Failback {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Restore the latest chain into a scratch copy, check it, discard it.
    Drill {
        /// One database (default: all).
        #[arg(long)]
        db: Option<String>,
        /// Drill a point of the archive instead of the standby's position: a UTC time
        /// (`2026-11-22T03:05:00Z`), `lsn:N` or `latest`. Runs here, from `[archive]` of
        /// --config, without the agent.
        #[arg(long)]
        at: Option<String>,
        /// With --at on PostgreSQL: the scratch server's port (default: the database's + 2000).
        #[arg(long)]
        port: Option<u16>,
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// The point-in-time archive of this (recovery) site.
    Archive {
        #[command(subcommand)]
        cmd: ArchiveCmd,
    },
    /// Build a point of the archive into a new place, check it and say what it reached. Never
    /// touches the standby or the primary; needs no agent.
    Restore {
        /// The site.toml with the `[archive]` section.
        #[arg(long, short = 'c')]
        config: PathBuf,
        #[arg(long)]
        db: String,
        /// A UTC time (`2026-11-22T03:05:00Z`), `lsn:N`, or `latest`. SQLite: the last
        /// archived log at or before it. PostgreSQL: every transaction committed at or before
        /// it (`recovery_target_time` / `recovery_target_lsn`).
        #[arg(long)]
        at: String,
        /// Where to build it: a new file (SQLite) or a new data directory (PostgreSQL).
        #[arg(long)]
        into: PathBuf,
        /// PostgreSQL: what the copy does at its target.
        #[arg(long, value_enum, default_value = "pause")]
        action: lifeboat_io_tokio::cli::archive::PgAction,
        /// PostgreSQL: the port of the server that replays (default: the database's + 2000).
        #[arg(long)]
        port: Option<u16>,
    },
    /// Confirm a failover that waits for an operator (`engine.failover.confirm = true`).
    Confirm {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 120)]
        wait: u64,
    },
    /// Abort a failover that waits for an operator's confirmation.
    Abort {
        #[command(flatten)]
        target: Target,
    },
    /// Maintenance: the primary's backups are paused (no-new-logs is then not a fault).
    Pause {
        #[command(flatten)]
        target: Target,
    },
    /// End the maintenance pause.
    Resume {
        #[command(flatten)]
        target: Target,
    },
    /// Drop and recreate a secondary database from a new full backup.
    Reseed {
        db: String,
        #[command(flatten)]
        target: Target,
        /// Seconds to wait for the rebuild, showing the copy's progress (0: do not wait).
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Change a running agent's log filter for a while (e.g. `lifeboat=debug`), then back to
    /// the one it started with.
    LogLevel {
        /// The filter: a level or `target=level` directives (tracing env-filter syntax).
        filter: String,
        /// How long before the configured filter is back: `90s`, `10m`, `2h` (at most 24h).
        #[arg(long = "for", default_value = "10m")]
        hold: String,
        #[command(flatten)]
        target: SiteTarget,
    },
    /// The last log lines and the recent decisions (audit records) of either site's agent.
    Logs {
        /// Lines to show (at most 2000: the agent keeps the last 2000 lines, 1 MiB).
        #[arg(short = 'n', default_value_t = 200)]
        n: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: SiteTarget,
    },
    /// Run every probe of an agent now (service probes, SQL through the driver, the peer site,
    /// the arbiter) and show each result and its time. Display only: the results are not fed
    /// to the engine.
    Probe {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: SiteTarget,
    },
    /// The path from an agent to the other site's agent over lifeboat's own transport: round
    /// trips (min/avg/max) and throughput (a payload sent and acknowledged).
    Ping {
        /// Throughput payload (at most 256MiB; 0: round trips only).
        #[arg(long, default_value = "16MiB")]
        bytes: String,
        /// Round trips (1 to 100).
        #[arg(long, default_value_t = 5)]
        count: u32,
        #[command(flatten)]
        target: SiteTarget,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The witness on etcd: create a deployment's keys.
    Witness {
        #[command(subcommand)]
        cmd: WitnessCmd,
    },
    /// Certificates: a deployment's CA and key pairs, and checking a configuration's files.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Check an artifact file against its manifest (size and checksum).
    Verify { artifact: PathBuf },
    /// PostgreSQL's archive_command: put a finished WAL segment durably into the agent's spool.
    /// Exit 0 only once it is fsynced there; 1 tells PostgreSQL to retry.
    WalPush {
        /// `%p`: the segment's path, relative to the data directory.
        path: String,
        /// The `wal.toml` the postgres driver wrote for this database.
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// PostgreSQL's restore_command: hand over the next verified segment. Exit 1 when it is
    /// not there yet (PostgreSQL asks again).
    WalFetch {
        /// `%f`: the file PostgreSQL wants.
        name: String,
        /// `%p`: where to put it.
        dest: String,
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Primary, recovery site and arbiter on loopback; kill the primary; watch the failover.
    Demo {
        /// Keep the demo's temporary directory.
        #[arg(long)]
        keep: bool,
        /// Use this directory instead of a new temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ArchiveCmd {
    /// The restorable ranges of each database (UTC times and positions), the artifacts behind
    /// them and their size.
    List {
        #[arg(long, short = 'c')]
        config: PathBuf,
        #[arg(long)]
        db: Option<String>,
        #[arg(long)]
        json: bool,
        /// Also name every artifact behind each range (its file, kind, positions, size).
        #[arg(long)]
        artifacts: bool,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Create a CA and one key pair per site and the arbiter (ECDSA P-256). Never overwrites.
    Init {
        /// Directory for ca.pem, ca.key and NAME.pem / NAME.key per party.
        #[arg(long)]
        out: PathBuf,
        /// The sites, as in `engine.sites` (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        sites: Vec<String>,
        /// The arbiter's name (`[tls] arbiter`).
        #[arg(long, default_value = "arbiter")]
        arbiter: String,
        /// Days the parties' certificates are valid.
        #[arg(long, default_value_t = lifeboat_io_tokio::certs::PARTY_DAYS)]
        days: i64,
    },
    /// Check the certificates a site or arbiter file names: signed by its CA, valid now, for
    /// that party's name, and the key matches. Exit 0 only if all are right.
    Check { file: PathBuf },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a site or arbiter file without starting anything.
    Check {
        file: PathBuf,
        /// Also reach the witness: every etcd endpoint (healthy, leader) and this deployment's
        /// keys, or the arbiter's address.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Subcommand, Debug)]
enum WitnessCmd {
    /// Create this deployment's keys in etcd (`[witness] kind = "etcd"`): epoch 1 held by the
    /// initial primary. Never overwrites another deployment's prefix; run it once, from either
    /// site.
    Init {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
}

fn init_logs(format: LogFormat, filter: Option<String>) {
    let filter = filter
        .or_else(|| std::env::var("LIFEBOAT_LOG").ok())
        .unwrap_or_else(|| "info".into());
    // Reloadable (`lifeboat log-level`), and the last lines kept for `lifeboat logs`.
    lifeboat_io_tokio::troubleshoot::logging::init(format == LogFormat::Json, &filter);
}

/// The async runtime of a command. `workers`: the async worker threads (blocking work runs on
/// tokio's blocking pool either way); `None` is tokio's default, one per core.
fn runtime_with(workers: Option<usize>) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    match b.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lifeboat: cannot start the async runtime: {e}");
            std::process::exit(exit::RUNTIME);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    runtime_with(None)
}

/// Run an agent or the arbiter on [`service_runtime`]'s worker, not on the main thread that
/// `block_on` drives: with the service's loop on the main thread, each of its wake-ups by a task
/// on the worker (a frame, a timer, a finished disk write) was a wake-up of another thread, a
/// futex and a context switch. On the worker, they share one thread.
fn run_service(
    service: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) -> anyhow::Result<()> {
    service_runtime().block_on(async move {
        tokio::spawn(service)
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the service's task ended abnormally: {e}")))
    })
}

/// An agent's or the arbiter's runtime: one async worker unless `LIFEBOAT_WORKER_THREADS` says
/// otherwise. Their async work is small (timers, frames, TLS, the operator API) and everything
/// that touches a disk or a database runs on the blocking pool; a second worker is woken for
/// tasks it could steal (the SQLite bench at 10 MiB, runs interleaved: 0.27-0.31 CPU s a minute
/// with one worker, 0.31-0.34 with two, lower in every pair).
fn service_runtime() -> tokio::runtime::Runtime {
    let workers = match std::env::var("LIFEBOAT_WORKER_THREADS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                eprintln!(
                    "lifeboat: LIFEBOAT_WORKER_THREADS={v:?} is not a number of threads (1 or \
                     more); unset it for the default of 1"
                );
                std::process::exit(exit::USAGE);
            }
        },
        Err(_) => 1,
    };
    runtime_with(Some(workers))
}

fn main() {
    let cli = Cli::parse();
    let quiet_default = matches!(
        cli.cmd,
        Cmd::Status { .. }
            | Cmd::Config { .. }
            | Cmd::Certs { .. }
            | Cmd::Verify { .. }
            | Cmd::Demo { .. }
            | Cmd::WalPush { .. }
            | Cmd::WalFetch { .. }
            | Cmd::LogLevel { .. }
            | Cmd::Logs { .. }
            | Cmd::Probe { .. }
            | Cmd::Ping { .. }
    ) && cli.log.is_none();
    init_logs(
        cli.log_format,
        if quiet_default {
            Some(std::env::var("LIFEBOAT_LOG").unwrap_or_else(|_| "warn".into()))
        } else {
            cli.log
        },
    );
    let code = match cli.cmd {
        Cmd::Agent { config } => match SiteFile::load(&config) {
            Err(e) => {
                eprintln!("lifeboat agent: {e}");
                exit::USAGE
            }
            Ok(file) => match run_service(agent::run(file, config)) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("lifeboat agent: {e:#}");
                    exit::RUNTIME
                }
            },
        },
        Cmd::Arbiter { config } => match ArbiterFile::load(&config) {
            Err(e) => {
                eprintln!("lifeboat arbiter: {e}");
                exit::USAGE
            }
            Ok(file) => match run_service(arbiter::run(file)) {
                Ok(()) => exit::OK,
                Err(e) => {
                    eprintln!("lifeboat arbiter: {e:#}");
                    exit::RUNTIME
                }
            },
        },
        Cmd::Status { json, target } => runtime().block_on(cli::status(&target, json)),
        Cmd::Switchover { target, wait } => runtime().block_on(cli::operator(
            &target,
            "switchover",
            serde_json::json!({}),
            wait,
        )),
        Cmd::Failover {
            force,
            until,
            target,
            wait,
        } => {
            if let Some(Err(e)) = until.as_deref().map(lifeboat_core::utc::parse_iso) {
                eprintln!("lifeboat failover: --until {e}");
                std::process::exit(exit::USAGE);
            }
            let params = serde_json::json!({ "force": force, "until": until });
            runtime().block_on(cli::operator(&target, "failover", params, wait))
        }
        Cmd::Failback { target, wait } => runtime().block_on(cli::operator(
            &target,
            "failback",
            serde_json::json!({}),
            wait,
        )),
        Cmd::Drill {
            db,
            at: Some(at),
            port,
            target,
            ..
        } => match &target.config {
            Some(config) => cli::archive::drill_at(config, db.as_deref(), &at, port),
            None => {
                eprintln!("lifeboat drill --at: needs --config (the site.toml with [archive])");
                exit::USAGE
            }
        },
        Cmd::Archive {
            cmd:
                ArchiveCmd::List {
                    config,
                    db,
                    json,
                    artifacts,
                },
        } => cli::archive::list(&config, db.as_deref(), json, artifacts),
        Cmd::Restore {
            config,
            db,
            at,
            into,
            action,
            port,
        } => cli::archive::restore(&config, &db, &at, &into, action, port),
        Cmd::Drill {
            db, target, wait, ..
        } => {
            let params = serde_json::json!({ "db": db });
            runtime().block_on(cli::operator(&target, "drill", params, wait))
        }
        Cmd::Confirm { target, wait } => runtime().block_on(cli::operator(
            &target,
            "confirm",
            serde_json::json!({}),
            wait,
        )),
        Cmd::Abort { target } => {
            runtime().block_on(cli::operator(&target, "abort", serde_json::json!({}), 0))
        }
        Cmd::Pause { target } => {
            runtime().block_on(cli::operator(&target, "pause", serde_json::json!({}), 0))
        }
        Cmd::Resume { target } => {
            runtime().block_on(cli::operator(&target, "resume", serde_json::json!({}), 0))
        }
        Cmd::Reseed { db, target, wait } => {
            let params = serde_json::json!({ "db": db });
            runtime().block_on(cli::operator(&target, "reseed", params, wait))
        }
        Cmd::LogLevel {
            filter,
            hold,
            target,
        } => runtime().block_on(cli::troubleshoot::log_level(&target, &filter, &hold)),
        Cmd::Logs { n, json, target } => {
            runtime().block_on(cli::troubleshoot::logs(&target, n, json))
        }
        Cmd::Probe { json, target } => runtime().block_on(cli::troubleshoot::probe(&target, json)),
        Cmd::Ping {
            bytes,
            count,
            target,
        } => runtime().block_on(cli::troubleshoot::ping(&target, &bytes, count)),
        Cmd::Config {
            cmd: ConfigCmd::Check { file, connect },
        } => match lifeboat_io_tokio::config::check_any(&file) {
            Ok(msg) => {
                println!("{msg}");
                if connect {
                    runtime().block_on(cli::witness::connect(&file))
                } else {
                    exit::OK
                }
            }
            Err(e) => {
                eprintln!("{e}");
                exit::USAGE
            }
        },
        Cmd::Witness {
            cmd: WitnessCmd::Init { config },
        } => runtime().block_on(cli::witness::init(&config)),
        Cmd::Certs {
            cmd:
                CertsCmd::Init {
                    out,
                    sites,
                    arbiter,
                    days,
                },
        } => match lifeboat_io_tokio::certs::init(&out, &sites, &arbiter, days) {
            Ok(files) => {
                for f in files {
                    println!("wrote {}", f.display());
                }
                println!(
                    "each party's [tls]: ca = ca.pem, cert = NAME.pem, key = NAME.key; keep ca.key \
                     away from the sites"
                );
                exit::OK
            }
            Err(e) => {
                eprintln!("certs init: {e:#}");
                exit::USAGE
            }
        },
        Cmd::Certs {
            cmd: CertsCmd::Check { file },
        } => lifeboat_io_tokio::certs::check_config(&file),
        Cmd::Verify { artifact } => cli::verify::run(&artifact),
        Cmd::WalPush { path, config } => lifeboat_io_tokio::drivers::postgres::cli::run(&[
            "wal-push".into(),
            path,
            "--config".into(),
            config.display().to_string(),
        ]),
        Cmd::WalFetch { name, dest, config } => lifeboat_io_tokio::drivers::postgres::cli::run(&[
            "wal-fetch".into(),
            name,
            dest,
            "--config".into(),
            config.display().to_string(),
        ]),
        Cmd::Demo { keep, dir } => runtime().block_on(demo::run(keep, dir)),
    };
    std::process::exit(code);
}
