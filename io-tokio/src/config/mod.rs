//! The adapter's configuration files: `site.toml` (one per site agent) and `arbiter.toml`.
//!
//! A site file is the core [`Config`] under `[engine]` plus what only the adapter needs: this
//! site's name, its addresses, where it keeps data, the database driver, probes, alert sinks and
//! hooks. Unknown keys are rejected everywhere; errors name the file, the line, the field and
//! the allowed values.
//!
//! ```toml
//! site = "primary"                 # this site: one of engine.sites
//! listen = "127.0.0.1:7401"        # transport (other sites and the arbiter dial this)
//! peer = "10.0.0.2:7401"           # the other site's transport address
//! arbiter = "10.0.0.3:7400"        # the arbiter's address (omit with engine.arbiter = false)
//! http = "127.0.0.1:7481"          # /status, /metrics, /health and operator requests
//! peer_http = "10.0.0.2:7481"      # the other site's http address (status table, probes)
//! data_dir = "/var/lib/lifeboat"   # journal, inbox, outbox, quarantine (relative: to this file)
//!
//! [engine]                         # lifeboat_core::Config (every field has a default)
//! sites = ["primary", "recovery"]
//! databases = ["app"]
//!
//! [driver]                         # see the driver module
//! [[probes.service]]               # how the recovery site probes the primary's service
//! kind = "http"                    # tcp | http | sql | exec
//! [[alerts]]                       # alert sinks: log | exec | webhook
//! kind = "webhook"
//! url = "http://127.0.0.1:9000/alerts"
//! [hooks]                          # commands run for the engine
//! fence = ["/usr/local/bin/fence-old-primary"]
//! [tls]                            # mutually authenticated TLS (see `lifeboat certs init`)
//! ca = "certs/ca.pem"
//! cert = "certs/primary.pem"
//! key = "certs/primary.key"
//! ```
//!
//! The witness is the arbiter process at `arbiter` unless `[witness]` says etcd; then there is
//! no `arbiter` line (giving both is an error) and `lifeboat witness init` creates the keys:
//!
//! ```toml
//! [witness]
//! kind = "etcd"                    # "arbiter" (the default) | "etcd"
//! endpoints = ["https://10.0.0.5:2379", "https://10.0.0.6:2379", "https://10.0.0.7:2379"]
//! prefix = "/lifeboat/sales"       # this deployment's keys (the same at both sites)
//! ca = "certs/etcd-ca.pem"         # default: [tls] ca
//! cert = "certs/primary-etcd.pem"  # this site's client certificate and key, both or neither;
//! key = "certs/primary-etcd.key"   #   default: [tls] cert and key
//! # server_name = "etcd"           # the name etcd's certificates carry (default: the host)
//! # timeout_ms = 1500              # one call (default: half of lease.arbiter_timeout_ms)
//! # connect_timeout_ms = 1500      # connecting to one endpoint (default: timeout_ms)
//! # insecure = true                # allows http:// endpoints (no TLS): test networks only
//! ```

mod driver;

pub use driver::{database_specs, open_driver, DriverConfig};
use lifeboat_core::config::MAX_DURATION_MS;
use lifeboat_core::Config;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default HTTP timeout of probes and webhooks.
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 1_000;
/// Snapshot the engine state every this many journal records (bounds replay time).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 2_000;
/// How often free disk space is measured and fed to the engine.
pub const DEFAULT_DISK_CHECK_EVERY_MS: u64 = 10_000;

/// `site.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFile {
    /// This site's name: one of `engine.sites`.
    pub site: String,
    /// Transport listen address.
    pub listen: String,
    /// The other site's transport address.
    pub peer: String,
    /// The arbiter's transport address; required when `engine.arbiter` is true.
    #[serde(default)]
    pub arbiter: Option<String>,
    /// HTTP address of this agent (status, metrics, health, operator requests).
    pub http: String,
    /// An extra plain-HTTP address that serves only `GET /health` and `GET /metrics`, with no
    /// credentials (a monitoring system without the deployment's CA). Off unless set.
    #[serde(default)]
    pub http_open: Option<String>,
    /// HTTP address of the other site's agent (status table; default service probe).
    #[serde(default)]
    pub peer_http: Option<String>,
    /// Journal, inbox, outbox, quarantine and database files live under here.
    pub data_dir: PathBuf,
    #[serde(default)]
    pub engine: Config,
    #[serde(default)]
    pub driver: DriverConfig,
    #[serde(default)]
    pub probes: Probes,
    #[serde(default)]
    pub alerts: Vec<SinkConfig>,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default)]
    pub journal: JournalSettings,
    #[serde(default)]
    pub disk: DiskSettings,
    #[serde(default)]
    pub tls: TlsSettings,
    /// The point-in-time archive at this site (when it is the recovery site); none unless set.
    #[serde(default)]
    pub archive: Option<ArchiveSettings>,
    /// Which witness decides failover: the built-in arbiter (default) or etcd.
    #[serde(default)]
    pub witness: WitnessSettings,
}

/// `[witness]`: the built-in arbiter (`kind = "arbiter"`, at the `arbiter` address) or etcd
/// (`kind = "etcd"`): no arbiter process, each agent talks to the etcd cluster itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WitnessSettings {
    pub kind: WitnessKind,
    /// etcd's client URLs, `https://host:port` (or `http://` with `insecure = true`).
    pub endpoints: Vec<String>,
    /// The deployment's key prefix, e.g. `/lifeboat/sales`.
    pub prefix: Option<String>,
    /// The CA that signed etcd's server certificates; default: `[tls] ca`.
    pub ca: Option<PathBuf>,
    /// This site's client certificate and key for etcd; default: `[tls] cert` and `key`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name etcd's server certificates carry; default: the endpoint's host.
    pub server_name: Option<String>,
    /// Time limit of one call to etcd (a few operations in order; a request makes one to
    /// three calls); default: [`default_witness_timeout_ms`].
    pub timeout_ms: Option<u64>,
    /// Time limit of connecting to one endpoint (TCP and TLS); default: the call's limit.
    pub connect_timeout_ms: Option<u64>,
    /// Plain `http://` endpoints: anyone who reaches them can move the epoch. Test networks only.
    pub insecure: bool,
}

/// The witness kinds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WitnessKind {
    #[default]
    Arbiter,
    Etcd,
}

/// Default time limit of one call to etcd: half the engine's `lease.arbiter_timeout_ms` (1.5 s
/// at the defaults). A request is usually two calls (a read, then a keep-alive or a
/// transaction), so it is answered, or given up on its member, within the time the engine waits
/// for a witness's answer; a member that does not answer in time is left for the next one while
/// the engine's next request can still be answered.
pub fn default_witness_timeout_ms(engine: &Config) -> u64 {
    (engine.lease.arbiter_timeout_ms / 2).max(1)
}

impl Default for WitnessSettings {
    fn default() -> Self {
        WitnessSettings {
            kind: WitnessKind::Arbiter,
            endpoints: Vec::new(),
            prefix: None,
            ca: None,
            cert: None,
            key: None,
            server_name: None,
            timeout_ms: None,
            connect_timeout_ms: None,
            insecure: false,
        }
    }
}

impl WitnessSettings {
    pub fn is_etcd(&self) -> bool {
        self.kind == WitnessKind::Etcd
    }

    /// The prefix, once checked (etcd mode).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }

    /// Time limit of one call to etcd.
    pub fn call_timeout(&self, engine: &Config) -> Duration {
        Duration::from_millis(
            self.timeout_ms
                .unwrap_or_else(|| default_witness_timeout_ms(engine)),
        )
    }

    /// Time limit of connecting to one endpoint.
    pub fn connect_timeout(&self, engine: &Config) -> Duration {
        self.connect_timeout_ms
            .map_or_else(|| self.call_timeout(engine), Duration::from_millis)
    }

    /// Whether the endpoints speak TLS (checked: all of them or none).
    pub fn tls(&self) -> bool {
        self.endpoints.iter().all(|e| e.starts_with("https://"))
    }

    fn check(
        &self,
        path: &Path,
        text: &str,
        arbiter: Option<&String>,
        engine: &Config,
        tls: &TlsSettings,
    ) -> Result<(), ConfigFileError> {
        let err = |field: &str, why: String| Err(semantic(path, text, field, why));
        if !self.is_etcd() {
            let etcd_only = [
                ("witness.endpoints", !self.endpoints.is_empty()),
                ("witness.prefix", self.prefix.is_some()),
                ("witness.ca", self.ca.is_some()),
                ("witness.cert", self.cert.is_some()),
                ("witness.key", self.key.is_some()),
                ("witness.server_name", self.server_name.is_some()),
                ("witness.timeout_ms", self.timeout_ms.is_some()),
                (
                    "witness.connect_timeout_ms",
                    self.connect_timeout_ms.is_some(),
                ),
                ("witness.insecure", self.insecure),
            ];
            if let Some((field, _)) = etcd_only.iter().find(|(_, set)| *set) {
                return err(
                    field,
                    "is set but witness.kind is \"arbiter\" (the default), which uses only the \
                     `arbiter` address: set kind = \"etcd\" to use etcd as the witness, or remove it"
                        .into(),
                );
            }
            return Ok(());
        }
        if let Some(a) = arbiter {
            return err(
                "arbiter",
                format!(
                    "is set ({a:?}) while witness.kind is \"etcd\": with etcd no arbiter process \
                     runs; remove `arbiter`, or use witness.kind = \"arbiter\""
                ),
            );
        }
        if !engine.arbiter {
            return err(
                "engine.arbiter",
                "is false while witness.kind is \"etcd\": etcd is the witness, so the engine must \
                 have one; remove `arbiter = false` from [engine], or remove [witness] to run two \
                 sites without a witness"
                    .into(),
            );
        }
        if self.endpoints.is_empty() {
            return err(
                "witness.endpoints",
                "is empty: list etcd's client URLs, e.g. [\"https://10.0.0.5:2379\", \
                 \"https://10.0.0.6:2379\", \"https://10.0.0.7:2379\"]"
                    .into(),
            );
        }
        for e in &self.endpoints {
            let rest = match (e.strip_prefix("https://"), e.strip_prefix("http://")) {
                (Some(r), _) => r,
                (None, Some(r)) if self.insecure => r,
                (None, Some(_)) => {
                    return err(
                        "witness.endpoints",
                        format!(
                            "{e:?} is plain http: anyone who reaches it could move the epoch. Use \
                             https:// (etcd with TLS and client certificates), or set \
                             witness.insecure = true on a private test network"
                        ),
                    )
                }
                (None, None) => {
                    return err(
                        "witness.endpoints",
                        format!("{e:?} is not an https://host:port URL"),
                    )
                }
            };
            if crate::http::parse_url(&format!("http://{rest}/")).is_none() || rest.contains('/') {
                return err(
                    "witness.endpoints",
                    format!("{e:?} is not an https://host:port URL"),
                );
            }
        }
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != self.endpoints.len() {
            return err(
                "witness.endpoints",
                "mix https:// and http:// URLs: the members of one etcd cluster serve clients \
                 one way; use https:// for all of them"
                    .into(),
            );
        }
        match self.prefix.as_deref() {
            None => return err(
                "witness.prefix",
                "is missing: give this deployment its own key prefix, e.g. \"/lifeboat/sales\" \
                     (both sites use the same one)"
                    .into(),
            ),
            Some(p) if !p.starts_with('/') || p.ends_with('/') || p.len() < 2 => {
                return err(
                    "witness.prefix",
                    format!(
                        "{p:?} must start with '/' and not end with one, e.g. \"/lifeboat/sales\""
                    ),
                )
            }
            Some(_) => {}
        }
        if self.cert.is_some() != self.key.is_some() {
            return err(
                "witness.cert",
                "and witness.key go together: give both, or neither (then [tls] cert and key \
                 are used)"
                    .into(),
            );
        }
        if self.tls() {
            if self.ca.is_none() && tls.ca.is_none() {
                return err(
                    "witness.ca",
                    "is missing, and so is [tls] ca: https endpoints need the CA that signed \
                     etcd's server certificates; give witness.ca (or [tls] ca)"
                        .into(),
                );
            }
        } else {
            let tls_only = [
                ("witness.ca", self.ca.is_some()),
                ("witness.cert", self.cert.is_some()),
                ("witness.server_name", self.server_name.is_some()),
            ];
            if let Some((field, _)) = tls_only.iter().find(|(_, set)| *set) {
                return err(
                    field,
                    "is set but the endpoints are plain http://, which uses no TLS: use https:// \
                     endpoints, or remove it"
                        .into(),
                );
            }
        }
        let arbiter_timeout = engine.lease.arbiter_timeout_ms;
        for (field, value) in [
            ("witness.timeout_ms", self.timeout_ms),
            ("witness.connect_timeout_ms", self.connect_timeout_ms),
        ] {
            match value {
                Some(0) => {
                    return err(
                        field,
                        format!(
                            "must be at least 1 (the default is half of \
                             engine.lease.arbiter_timeout_ms: {} ms)",
                            default_witness_timeout_ms(engine)
                        ),
                    )
                }
                Some(ms) if ms > arbiter_timeout => {
                    return err(
                        field,
                        format!(
                            "is {ms} ms, over engine.lease.arbiter_timeout_ms ({arbiter_timeout} \
                             ms): the engine counts a witness's answer as lost after that, so a \
                             member that hangs would be waited for in vain instead of left for \
                             the next one. Leave it out (default {} ms) or lower it",
                            default_witness_timeout_ms(engine)
                        ),
                    )
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// `[archive]`: where the recovery site keeps every verified artifact, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// The archive's directory (its own disk if you like); relative to this file.
    pub dir: PathBuf,
    /// Every artifact created within this long of the newest one is kept: a number and a unit,
    /// `s`, `m`, `h` or `d` (`"72h"`, `"7d"`).
    #[serde(default = "ArchiveSettings::default_keep")]
    pub keep: String,
    /// A restorable point (its cheapest) for each of this many UTC days.
    #[serde(default = "ArchiveSettings::default_daily")]
    pub keep_daily: u32,
    /// A restorable point (its cheapest) for each of this many ISO weeks.
    #[serde(default = "ArchiveSettings::default_weekly")]
    pub keep_weekly: u32,
    /// Restore a kept point chosen at random into scratch and check it this often (`"24h"`;
    /// `"0s"`: never).
    #[serde(default = "ArchiveSettings::default_verify")]
    pub verify_every: String,
}

impl ArchiveSettings {
    fn default_keep() -> String {
        "72h".into()
    }
    fn default_daily() -> u32 {
        lifeboat_core::defaults::ARCHIVE_KEEP_DAILY
    }
    fn default_weekly() -> u32 {
        lifeboat_core::defaults::ARCHIVE_KEEP_WEEKLY
    }
    fn default_verify() -> String {
        "24h".into()
    }

    /// The retention policy the core applies.
    pub fn policy(&self) -> Result<lifeboat_core::archive::Policy, String> {
        Ok(lifeboat_core::archive::Policy {
            keep_ms: parse_span(&self.keep)?,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            verify_every_ms: parse_span(&self.verify_every)
                .map_err(|e| format!("verify_every: {e}"))?,
        })
    }
}

/// `"72h"`, `"30m"`, `"7d"`, `"90s"` in milliseconds.
pub fn parse_span(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a number and a unit (\"72h\", \"7d\")"))?;
    let ms = match unit.trim() {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?}; use s, m, h or d (\"72h\", \"7d\")"
            ))
        }
    };
    n.checked_mul(ms)
        .filter(|&v| v <= MAX_DURATION_MS)
        .ok_or_else(|| format!("{s:?} is longer than ten years"))
}

/// `arbiter.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArbiterFile {
    pub listen: String,
    #[serde(default)]
    pub http: Option<String>,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub engine: Config,
    #[serde(default)]
    pub journal: JournalSettings,
    #[serde(default)]
    pub tls: TlsSettings,
}

/// `[tls]`: the transport's and the operator API's certificates. Every party needs the
/// deployment's CA and its own certificate and key (`lifeboat certs init` makes them); plain TCP
/// only with `insecure = true`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The deployment's CA certificate (PEM).
    pub ca: Option<PathBuf>,
    /// This party's certificate (PEM), issued for its deployment name.
    pub cert: Option<PathBuf>,
    /// This party's private key (PEM).
    pub key: Option<PathBuf>,
    /// The name the arbiter's certificate carries.
    pub arbiter: String,
    /// A file (mode 0600) holding the bearer token operator requests may present instead of a
    /// client certificate.
    pub api_token: Option<PathBuf>,
    /// Plain TCP and plain HTTP: anyone who reaches a port can act as a site, the arbiter or an
    /// operator. For a private test network only; `config check` warns.
    pub insecure: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            ca: None,
            cert: None,
            key: None,
            arbiter: crate::transport::tls::DEFAULT_ARBITER_NAME.to_string(),
            api_token: None,
            insecure: false,
        }
    }
}

impl TlsSettings {
    /// The three files, when TLS is on.
    pub fn files(&self) -> Option<crate::transport::TlsFiles> {
        if self.insecure {
            return None;
        }
        Some(crate::transport::TlsFiles {
            ca: self.ca.clone()?,
            cert: self.cert.clone()?,
            key: self.key.clone()?,
        })
    }

    /// The deployment's names for `engine`.
    pub fn names(&self, engine: &Config) -> crate::transport::Names {
        crate::transport::Names {
            sites: engine.sites.clone(),
            arbiter: self.arbiter.clone(),
        }
    }

    /// The transport's TLS for party `me`, loaded and checked; `None` when insecure.
    pub fn load(
        &self,
        engine: &Config,
        me: lifeboat_core::Peer,
    ) -> Result<Option<std::sync::Arc<crate::transport::Tls>>, crate::transport::TlsError> {
        match self.files() {
            None => Ok(None),
            Some(files) => Ok(Some(std::sync::Arc::new(crate::transport::Tls::load(
                &files,
                self.names(engine),
                me,
            )?))),
        }
    }

    fn check(&mut self, path: &Path, text: &str, engine: &Config) -> Result<(), ConfigFileError> {
        for p in [
            &mut self.ca,
            &mut self.cert,
            &mut self.key,
            &mut self.api_token,
        ]
        .into_iter()
        .flatten()
        {
            *p = resolve(path, p);
        }
        if self.insecure {
            return Ok(());
        }
        let missing: Vec<&str> = [
            ("ca", self.ca.is_none()),
            ("cert", self.cert.is_none()),
            ("key", self.key.is_none()),
        ]
        .into_iter()
        .filter(|(_, m)| *m)
        .map(|(k, _)| k)
        .collect();
        if !missing.is_empty() {
            return Err(semantic(
                path,
                text,
                "tls",
                format!(
                    "[tls] {} {} not set: every link is mutually authenticated TLS. Make the \
                     files with `lifeboat certs init --out certs --sites {} --arbiter {}` and \
                     name them under [tls] (ca, cert, key), or set `insecure = true` under [tls] \
                     for a private test network (then anyone who reaches a port can act as a \
                     site, the arbiter or an operator)",
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" },
                    engine.sites.join(","),
                    self.arbiter,
                ),
            ));
        }
        for name in engine.sites.iter().chain(std::iter::once(&self.arbiter)) {
            if let Err(why) = crate::certs::check_name(name) {
                return Err(semantic(path, text, "sites", why));
            }
        }
        if engine.sites.contains(&self.arbiter) {
            return Err(semantic(
                path,
                text,
                "arbiter",
                format!(
                    "[tls] arbiter = {:?} is also a site's name; the arbiter needs a name of its own",
                    self.arbiter
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Probes {
    /// Probes of the primary's service; every one must pass. Empty: an HTTP probe of the peer
    /// agent's `/health` (which runs the SQL probe through its driver).
    pub service: Vec<ProbeConfig>,
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum ProbeConfig {
    /// A TCP connect succeeds.
    Tcp { addr: String },
    /// An HTTP GET answers with `expect` (default 200).
    Http {
        url: String,
        #[serde(default)]
        expect: Option<u16>,
    },
    /// The driver's SQL probe of the local database (use at a site that can reach it).
    Sql,
    /// A command exits 0.
    Exec { command: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum SinkConfig {
    /// Structured log line (always on; listing it changes nothing).
    Log,
    /// Run a command with the alert as JSON on stdin and `LIFEBOAT_ALERT_*` variables.
    Exec { command: Vec<String> },
    /// HTTP POST of the alert as JSON (`http://host:port/path`).
    Webhook { url: String },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// External fence of the other site (power off, firewall, cloud API); `{target}` and
    /// `{epoch}` are replaced. Needed when `engine.failover.fence_hook` is true.
    pub fence: Option<Vec<String>>,
    /// Move the service identity (DNS, VIP) to this site; `{site}` and `{epoch}` are replaced.
    pub identity: Option<Vec<String>>,
    /// Restart the local database service (Auto Pilot); `{site}` is replaced.
    pub restart: Option<Vec<String>>,
}

impl Hooks {
    /// The placeholders each hook offers; any other `{name}` is refused when the configuration
    /// loads, so a typo (`{epcoh}`) never reaches a fence command at failover time.
    pub const FENCE_VARS: &'static [&'static str] = &["target", "epoch"];
    pub const IDENTITY_VARS: &'static [&'static str] = &["site", "epoch"];
    pub const RESTART_VARS: &'static [&'static str] = &["site"];
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSettings {
    pub snapshot_every: u64,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskSettings {
    pub check_every_ms: u64,
}

impl Default for DiskSettings {
    fn default() -> Self {
        DiskSettings {
            check_every_ms: DEFAULT_DISK_CHECK_EVERY_MS,
        }
    }
}

/// A configuration file that cannot be used: where and why, and what to do.
#[derive(Debug)]
pub struct ConfigFileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigFileError {}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    // A span from the parser is a byte offset; never slice inside a character.
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

/// The line where `field` (dotted, e.g. `engine.lease.lease_ms`) is set, best effort: the last
/// segment as a key after the table header of the segments before it.
fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let parts: Vec<&str> = field.split('.').collect();
    let (key, tables) = parts.split_last()?;
    let want = tables.join(".");
    let mut current = String::new();
    let mut fallback = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(h) = line.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .trim()
                .to_string();
            continue;
        }
        let Some((k, _)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        let full = if current.is_empty() {
            k.to_string()
        } else {
            format!("{current}.{k}")
        };
        if full == field || (k == *key && current == want) {
            return Some(i + 1);
        }
        if k == *key || full.ends_with(&format!(".{key}")) {
            fallback.get_or_insert(i + 1);
        }
    }
    fallback
}

fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ConfigFileError> {
    toml::from_str::<T>(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => {
                let (l, c) = line_col(text, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        let message = e.message().trim().to_string();
        // "unknown field `x`, expected one of ..." already names the allowed values.
        let field = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        ConfigFileError {
            file: path.to_path_buf(),
            line,
            column,
            field,
            message: format!("{message}; fix the file and run `lifeboat config check` again"),
        }
    })
}

fn read(path: &Path) -> Result<String, ConfigFileError> {
    std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        field: None,
        message: format!("cannot read it: {e}"),
    })
}

fn semantic(path: &Path, text: &str, field: &str, message: String) -> ConfigFileError {
    ConfigFileError {
        file: path.to_path_buf(),
        line: find_field_line(text, field),
        column: None,
        field: Some(field.to_string()),
        message,
    }
}

fn engine_check(path: &Path, text: &str, engine: &Config) -> Result<(), ConfigFileError> {
    engine.validate().map_err(|e| {
        let field = format!("engine.{}", e.field);
        semantic(path, text, &field, e.problem)
    })
}

fn addr_check(path: &Path, text: &str, field: &str, addr: &str) -> Result<(), ConfigFileError> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(semantic(
            path,
            text,
            field,
            format!("{addr:?} is not a `host:port` address (for example \"127.0.0.1:7401\")"),
        ))
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.parent().unwrap_or(Path::new(".")).join(p)
    }
}

impl SiteFile {
    /// Read, parse and validate a site file. Relative paths are resolved against its directory.
    pub fn load(path: &Path) -> Result<SiteFile, ConfigFileError> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<SiteFile, ConfigFileError> {
        let mut f: SiteFile = parse_toml(path, text)?;
        engine_check(path, text, &f.engine)?;
        if f.engine.site_id(&f.site).is_none() {
            return Err(semantic(
                path,
                text,
                "site",
                format!(
                    "{:?} is not one of the sites; allowed values: {}",
                    f.site,
                    f.engine.sites.join(", ")
                ),
            ));
        }
        addr_check(path, text, "listen", &f.listen)?;
        addr_check(path, text, "peer", &f.peer)?;
        addr_check(path, text, "http", &f.http)?;
        if let Some(a) = &f.peer_http {
            addr_check(path, text, "peer_http", a)?;
        }
        f.witness
            .check(path, text, f.arbiter.as_ref(), &f.engine, &f.tls)?;
        match (&f.arbiter, f.engine.arbiter) {
            (Some(a), _) => addr_check(path, text, "arbiter", a)?,
            (None, true) if f.witness.is_etcd() => {}
            (None, true) => {
                return Err(semantic(
                    path,
                    text,
                    "arbiter",
                    "engine.arbiter is true (the default) but no arbiter address is set: add \
                     `arbiter = \"host:port\"`, or set `arbiter = false` under [engine] to run \
                     two sites without a witness (automatic failover is then off)"
                        .into(),
                ))
            }
            (None, false) => {}
        }
        if f.engine.failover.fence_hook && f.hooks.fence.is_none() {
            return Err(semantic(
                path,
                text,
                "engine.failover.fence_hook",
                "is true but [hooks] has no `fence` command: add one, or set it to false".into(),
            ));
        }
        for (name, cmd, vars) in [
            ("hooks.fence", &f.hooks.fence, Hooks::FENCE_VARS),
            ("hooks.identity", &f.hooks.identity, Hooks::IDENTITY_VARS),
            ("hooks.restart", &f.hooks.restart, Hooks::RESTART_VARS),
        ] {
            if cmd.as_ref().is_some_and(|c| c.is_empty()) {
                return Err(semantic(
                    path,
                    text,
                    name,
                    "an empty command: give the program and its arguments".into(),
                ));
            }
            if let Some(cmd) = cmd {
                let template = crate::process::CommandTemplate::Argv(cmd.clone());
                if let Err(e) = template.expand(vars, &[], &[]) {
                    return Err(semantic(path, text, name, e));
                }
            }
        }
        for (i, p) in f.probes.service.iter().enumerate() {
            match p {
                ProbeConfig::Tcp { addr } => {
                    addr_check(path, text, &format!("probes.service[{i}].addr"), addr)?
                }
                ProbeConfig::Http { url, .. } if crate::http::parse_url(url).is_none() => {
                    return Err(semantic(
                        path,
                        text,
                        "url",
                        format!("{url:?} is not an http://host:port/path URL"),
                    ))
                }
                ProbeConfig::Exec { command } if command.is_empty() => {
                    return Err(semantic(path, text, "command", "an empty command".into()))
                }
                _ => {}
            }
        }
        for s in &f.alerts {
            match s {
                SinkConfig::Webhook { url } if crate::http::parse_url(url).is_none() => {
                    return Err(semantic(
                        path,
                        text,
                        "url",
                        format!("{url:?} is not an http://host:port/path URL"),
                    ))
                }
                SinkConfig::Exec { command } if command.is_empty() => {
                    return Err(semantic(path, text, "command", "an empty command".into()))
                }
                _ => {}
            }
        }
        if f.journal.snapshot_every == 0 {
            return Err(semantic(
                path,
                text,
                "journal.snapshot_every",
                "must be at least 1".into(),
            ));
        }
        if f.disk.check_every_ms == 0 {
            return Err(semantic(
                path,
                text,
                "disk.check_every_ms",
                "must be greater than 0".into(),
            ));
        }
        for (field, ms) in adapter_durations(&f) {
            if ms > MAX_DURATION_MS {
                return Err(semantic(
                    path,
                    text,
                    field,
                    "is longer than ten years, the most it can be (deadlines are computed as \
                     now + this)"
                        .into(),
                ));
            }
        }
        let listed = f.driver.listed();
        if !listed.is_empty() {
            let names: Vec<&String> = listed.iter().map(|d| &d.name).collect();
            let want: Vec<&String> = f.engine.databases.iter().collect();
            if names != want {
                return Err(semantic(
                    path,
                    text,
                    "driver.databases",
                    format!(
                        "lists {names:?}; it must list engine.databases in the same order: {want:?}"
                    ),
                ));
            }
        } else if matches!(f.driver, DriverConfig::Postgres(_)) {
            return Err(semantic(
                path,
                text,
                "driver.databases",
                "is empty; the postgres driver needs one [[driver.databases]] entry (name, data_dir, port) per engine database".into(),
            ));
        }
        if let DriverConfig::Postgres(p) = &f.driver {
            if p.synchronous && !p.stream {
                return Err(semantic(
                    path,
                    text,
                    "driver.synchronous",
                    "is on while driver.stream is off; synchronous mode waits for the streamed \
                     WAL: turn stream on, or synchronous off"
                        .into(),
                ));
            }
        }
        if let Some(a) = &mut f.archive {
            match a.policy() {
                Ok(policy) => f.engine.archive = Some(policy),
                Err(e) => {
                    let field = if e.starts_with("verify_every") {
                        "archive.verify_every"
                    } else {
                        "archive.keep"
                    };
                    return Err(semantic(path, text, field, e));
                }
            }
            a.dir = resolve(path, &a.dir);
        }
        f.driver.resolve_paths(|p| resolve(path, p));
        f.data_dir = resolve(path, &f.data_dir);
        f.tls.check(path, text, &f.engine)?;
        let w = &mut f.witness;
        for p in [&mut w.ca, &mut w.cert, &mut w.key].into_iter().flatten() {
            *p = resolve(path, p);
        }
        Ok(f)
    }

    pub fn site_id(&self) -> lifeboat_core::SiteId {
        self.engine
            .site_id(&self.site)
            .unwrap_or(lifeboat_core::SiteId(0))
    }
}

/// The adapter's own durations, in milliseconds (saturating), by field. Deadlines are computed
/// as `Instant::now() + duration`, which panics past the clock's range: the same ten-year bound
/// as the engine's durations applies.
fn adapter_durations(f: &SiteFile) -> Vec<(&'static str, u64)> {
    let secs = |s: u64| s.saturating_mul(1_000);
    let mut v = vec![("disk.check_every_ms", f.disk.check_every_ms)];
    if let Some(ms) = f.probes.timeout_ms {
        v.push(("probes.timeout_ms", ms));
    }
    match &f.driver {
        DriverConfig::Sqlite {
            busy_timeout_ms,
            probe_timeout_ms,
            ..
        } => {
            v.extend(busy_timeout_ms.map(|ms| ("driver.busy_timeout_ms", ms)));
            v.extend(probe_timeout_ms.map(|ms| ("driver.probe_timeout_ms", ms)));
        }
        DriverConfig::Exec { commands, .. } => {
            v.push(("driver.commands.timeout_secs", secs(commands.timeout_secs)));
            v.push((
                "driver.commands.probe_timeout_secs",
                secs(commands.probe_timeout_secs),
            ));
        }
        DriverConfig::Postgres(p) => v.extend([
            ("driver.archive_timeout_s", secs(p.archive_timeout_s)),
            ("driver.retrieve_retry_ms", p.retrieve_retry_ms),
            ("driver.fetch_wait_ms", p.fetch_wait_ms),
            ("driver.replay_timeout_ms", p.replay_timeout_ms),
            ("driver.stall_ms", p.stall_ms),
            ("driver.archive_wait_ms", p.archive_wait_ms),
            ("driver.pg_ctl_timeout_s", secs(p.pg_ctl_timeout_s)),
        ]),
    }
    v
}

impl ArbiterFile {
    pub fn load(path: &Path) -> Result<ArbiterFile, ConfigFileError> {
        let text = read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ArbiterFile, ConfigFileError> {
        let mut f: ArbiterFile = parse_toml(path, text)?;
        engine_check(path, text, &f.engine)?;
        addr_check(path, text, "listen", &f.listen)?;
        if let Some(a) = &f.http {
            addr_check(path, text, "http", a)?;
        }
        f.data_dir = resolve(path, &f.data_dir);
        f.tls.check(path, text, &f.engine)?;
        Ok(f)
    }
}

fn insecure_warning(tls: &TlsSettings) -> &'static str {
    if tls.insecure {
        "\nwarning: [tls] insecure = true: plain TCP and HTTP, no authentication; anyone who \
         reaches a port can act as a site, the arbiter or an operator. Use it on a private test \
         network only (`lifeboat certs init` makes the certificates)."
    } else {
        ""
    }
}

/// Which kind of file a path holds, judged by its keys: a site file has `site`.
pub fn check_any(path: &Path) -> Result<String, ConfigFileError> {
    let text = read(path)?;
    let is_site = text.lines().any(|l| {
        l.trim_start().starts_with("site") && l.contains('=') && {
            let k = l.split('=').next().unwrap_or("").trim();
            k == "site"
        }
    });
    if is_site {
        let f = SiteFile::parse(path, &text)?;
        let witness = match (&f.arbiter, f.witness.is_etcd()) {
            (_, true) => format!(
                "witness etcd under {} at {}",
                f.witness.prefix(),
                f.witness.endpoints.join(", ")
            ),
            (Some(a), false) => format!("witness the arbiter at {a}"),
            (None, false) => "no witness: automatic failover off".into(),
        };
        Ok(format!(
            "{}: a valid site file for site {:?} ({} database(s): {}; {witness}){}{}",
            path.display(),
            f.site,
            f.engine.databases.len(),
            f.engine.databases.join(", "),
            insecure_warning(&f.tls),
            if f.witness.is_etcd() && !f.witness.tls() {
                "\nwarning: [witness] insecure = true: etcd is reached over plain http; anyone \
                 who reaches it can move the epoch. Use https:// endpoints outside a test network."
            } else {
                ""
            },
        ))
    } else {
        let f = ArbiterFile::parse(path, &text)?;
        Ok(format!(
            "{}: a valid arbiter file (listen {}; sites {}){}",
            path.display(),
            f.listen,
            f.engine.sites.join(", "),
            insecure_warning(&f.tls),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
site = "primary"
listen = "127.0.0.1:7401"
peer = "127.0.0.1:7402"
arbiter = "127.0.0.1:7400"
http = "127.0.0.1:7481"
data_dir = "data"
[tls]
insecure = true
"#;

    /// [`MIN`] with the witness on etcd instead of the arbiter, and `extra` in `[witness]`.
    fn etcd_site(extra: &str) -> String {
        format!(
            "{}\n[witness]\nkind = \"etcd\"\n{extra}\n",
            MIN.replace("arbiter = \"127.0.0.1:7400\"\n", "")
        )
    }

    #[test]
    fn an_etcd_witness_needs_endpoints_a_prefix_and_no_arbiter_address() {
        let good = etcd_site(
            "endpoints = [\"https://10.0.0.5:2379\", \"https://10.0.0.6:2379\"]\nprefix = \"/lifeboat/sales\"\nca = \"certs/etcd-ca.pem\"",
        );
        let f = SiteFile::parse(Path::new("/etc/lifeboat/site.toml"), &good).unwrap();
        assert!(f.witness.is_etcd());
        assert_eq!(f.witness.prefix(), "/lifeboat/sales");
        assert_eq!(
            f.witness.ca.as_deref(),
            Some(Path::new("/etc/lifeboat/certs/etcd-ca.pem"))
        );
        // Half the engine's arbiter timeout (3 s at the defaults) per call.
        assert_eq!(
            f.witness.call_timeout(&f.engine),
            Duration::from_millis(1_500)
        );
        assert_eq!(
            f.witness.connect_timeout(&f.engine),
            Duration::from_millis(1_500)
        );
        let cases: [(String, &str, &str); 7] = [
            (
                etcd_site("prefix = \"/x\""),
                "witness.endpoints",
                "is empty",
            ),
            (
                etcd_site("endpoints = [\"https://10.0.0.5:2379\"]"),
                "witness.prefix",
                "is missing",
            ),
            (
                etcd_site("endpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"lifeboat\""),
                "witness.prefix",
                "must start with '/'",
            ),
            (
                etcd_site("endpoints = [\"http://10.0.0.5:2379\"]\nprefix = \"/x\""),
                "witness.endpoints",
                "is plain http",
            ),
            (
                etcd_site("endpoints = [\"10.0.0.5:2379\"]\nprefix = \"/x\""),
                "witness.endpoints",
                "is not an https://host:port URL",
            ),
            (
                etcd_site(
                    "endpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"/x\"\ncert = \"c.pem\"",
                ),
                "witness.cert",
                "go together",
            ),
            (
                format!(
                    "arbiter = \"127.0.0.1:7400\"\n{}",
                    etcd_site("endpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"/x\"")
                ),
                "arbiter",
                "while witness.kind is \"etcd\"",
            ),
        ];
        for (text, field, why) in cases {
            let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
        // Plain http only when asked for.
        let insecure =
            etcd_site("endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/x\"\ninsecure = true");
        assert!(SiteFile::parse(Path::new("site.toml"), &insecure).is_ok());
        // Endpoints with the arbiter kind are a mistake, not ignored.
        let text = format!("{MIN}\n[witness]\nendpoints = [\"https://10.0.0.5:2379\"]\n");
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("witness.endpoints"), "{e}");
    }

    /// The field a site file's error names, and its message.
    fn witness_error(text: &str) -> (String, String) {
        let e = SiteFile::parse(Path::new("site.toml"), text).unwrap_err();
        (e.field.clone().unwrap_or_default(), e.to_string())
    }

    const HTTPS_X: &str =
        "endpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"/x\"\nca = \"ca.pem\"";

    #[test]
    fn etcd_witness_timeouts_default_from_the_engines_arbiter_timeout_and_stay_under_it() {
        let text = format!(
            "{}\n[engine.lease]\narbiter_timeout_ms = 1000\n",
            etcd_site(HTTPS_X)
        );
        let f = SiteFile::parse(Path::new("site.toml"), &text).unwrap();
        assert_eq!(
            f.witness.call_timeout(&f.engine),
            Duration::from_millis(500)
        );
        let text = etcd_site(&format!(
            "{HTTPS_X}\ntimeout_ms = 800\nconnect_timeout_ms = 300"
        ));
        let f = SiteFile::parse(Path::new("site.toml"), &text).unwrap();
        assert_eq!(
            f.witness.call_timeout(&f.engine),
            Duration::from_millis(800)
        );
        assert_eq!(
            f.witness.connect_timeout(&f.engine),
            Duration::from_millis(300)
        );
        let (field, why) = witness_error(&etcd_site(&format!("{HTTPS_X}\ntimeout_ms = 0")));
        assert_eq!(field, "witness.timeout_ms", "{why}");
        assert!(why.contains("at least 1"), "{why}");
        let (field, why) =
            witness_error(&etcd_site(&format!("{HTTPS_X}\nconnect_timeout_ms = 5000")));
        assert_eq!(field, "witness.connect_timeout_ms", "{why}");
        assert!(
            why.contains("over engine.lease.arbiter_timeout_ms (3000 ms)"),
            "{why}"
        );
    }

    #[test]
    fn etcd_witness_tls_needs_a_ca_and_plain_http_needs_insecure_and_no_tls_files() {
        // https with neither witness.ca nor [tls] ca (MIN's [tls] is insecure).
        let (field, why) = witness_error(&etcd_site(
            "endpoints = [\"https://10.0.0.5:2379\"]\nprefix = \"/x\"",
        ));
        assert_eq!(field, "witness.ca", "{why}");
        assert!(why.contains("[tls] ca"), "{why}");
        // One cluster, one scheme.
        let (field, why) = witness_error(&etcd_site(
            "endpoints = [\"https://10.0.0.5:2379\", \"http://10.0.0.6:2379\"]\nprefix = \"/x\"\n\
             insecure = true\nca = \"ca.pem\"",
        ));
        assert_eq!(field, "witness.endpoints", "{why}");
        assert!(why.contains("mix https:// and http://"), "{why}");
        // Certificates for plain http would be ignored: refused rather than trusted in vain.
        let (field, why) = witness_error(&etcd_site(
            "endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/x\"\ninsecure = true\n\
             ca = \"ca.pem\"",
        ));
        assert_eq!(field, "witness.ca", "{why}");
        assert!(why.contains("plain http://"), "{why}");
        let f = SiteFile::parse(
            Path::new("site.toml"),
            &etcd_site("endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/x\"\ninsecure = true"),
        )
        .unwrap();
        assert!(!f.witness.tls());
        let checked = {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("site.toml");
            std::fs::write(
                &path,
                etcd_site(
                    "endpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/x\"\ninsecure = true",
                ),
            )
            .unwrap();
            check_any(&path).unwrap()
        };
        assert!(
            checked.contains("witness etcd under /x at http://127.0.0.1:2379"),
            "{checked}"
        );
        assert!(checked.contains("[witness] insecure = true"), "{checked}");
    }

    #[test]
    fn an_etcd_witness_needs_the_engine_to_have_a_witness_and_arbiter_kind_takes_no_etcd_keys() {
        let text = format!("{}\n[engine]\narbiter = false\n", etcd_site(HTTPS_X));
        let (field, why) = witness_error(&text);
        assert_eq!(field, "engine.arbiter", "{why}");
        assert!(why.contains("etcd is the witness"), "{why}");
        for (key, line) in [
            ("witness.prefix", "prefix = \"/x\""),
            ("witness.timeout_ms", "timeout_ms = 500"),
            ("witness.insecure", "insecure = true"),
            ("witness.ca", "ca = \"ca.pem\""),
        ] {
            let (field, why) = witness_error(&format!("{MIN}\n[witness]\n{line}\n"));
            assert_eq!(field, key, "{why}");
            assert!(why.contains("witness.kind is \"arbiter\""), "{why}");
        }
        // The default kind, spelled out, is today's arbiter.
        let f = SiteFile::parse(
            Path::new("site.toml"),
            &format!("{MIN}\n[witness]\nkind = \"arbiter\"\n"),
        )
        .unwrap();
        assert!(!f.witness.is_etcd());
        assert_eq!(f.arbiter.as_deref(), Some("127.0.0.1:7400"));
        let (_, why) = witness_error(&format!("{MIN}\n[witness]\nkind = \"zookeeper\"\n"));
        assert!(
            why.contains("`zookeeper`, expected `arbiter` or `etcd`"),
            "{why}"
        );
    }

    #[test]
    fn a_minimal_site_file_is_valid_and_resolves_data_dir_beside_it() {
        let f = SiteFile::parse(Path::new("/etc/lifeboat/site.toml"), MIN).unwrap();
        assert_eq!(f.data_dir, PathBuf::from("/etc/lifeboat/data"));
        assert_eq!(f.site_id(), lifeboat_core::SiteId(0));
    }

    #[test]
    fn an_unknown_key_names_file_line_and_the_allowed_fields() {
        let text = format!("{MIN}\n[engine]\ndatabses = [\"a\"]\n");
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        let s = e.to_string();
        assert_eq!(e.line, Some(12), "{s}");
        assert!(s.contains("databses") && s.contains("databases"), "{s}");
    }

    #[test]
    fn a_hook_placeholder_typo_is_refused_at_load_not_at_failover() {
        let good = format!(
            "{MIN}\n[hooks]\nfence = [\"fence-site\", \"{{target}}\", \"{{epoch}}\"]\n\
             restart = [\"sh\", \"-c\", \"systemctl restart db-${{SITE:-x}}\", \"{{site}}\"]\n"
        );
        SiteFile::parse(Path::new("site.toml"), &good).unwrap();
        let typo = format!("{MIN}\n[hooks]\nfence = [\"fence-site\", \"{{epcoh}}\"]\n");
        let e = SiteFile::parse(Path::new("site.toml"), &typo)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hooks.fence") && e.contains("{epcoh}"), "{e}");
        assert!(e.contains("{target}") && e.contains("{epoch}"), "{e}");
        // `{epoch}` is not offered to the restart hook.
        let wrong = format!("{MIN}\n[hooks]\nrestart = [\"restart-db\", \"{{epoch}}\"]\n");
        let e = SiteFile::parse(Path::new("site.toml"), &wrong)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hooks.restart"), "{e}");
    }

    #[test]
    fn a_semantic_error_names_the_field_and_its_line() {
        let text = format!("{MIN}\n[engine.lease]\nlease_ms = 2500\n");
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("engine.lease.lease_ms"));
        assert_eq!(e.line, Some(12), "{e}");
    }

    /// Found by the `site_config` fuzz target: durations the engine and the adapter add to
    /// `now` were unbounded.
    #[test]
    fn a_duration_beyond_ten_years_is_refused_by_field_and_line() {
        let text = format!("{MIN}\n[engine.alerts]\ncritical_after_minutes = 9999999999999\n");
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert_eq!(
            e.field.as_deref(),
            Some("engine.alerts.critical_after_minutes")
        );
        assert_eq!(e.line, Some(12), "{e}");
        let text = format!("{MIN}\n[disk]\ncheck_every_ms = 9223372036854775807\n");
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("disk.check_every_ms"), "{e}");
        assert_eq!(e.line, Some(12), "{e}");
    }

    #[test]
    fn a_site_that_is_not_configured_lists_the_allowed_values() {
        let text = MIN.replace("site = \"primary\"", "site = \"paris\"");
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert!(e.to_string().contains("primary, recovery"), "{e}");
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn a_postgres_driver_table_parses_and_its_paths_resolve_beside_the_file() {
        let text = format!(
            "{MIN}\n[engine]\ndatabases = [\"sales\"]\n[driver]\nkind = \"postgres\"\n\
             spool_dir = \"spool\"\n[[driver.databases]]\nname = \"sales\"\n\
             data_dir = \"pg/sales\"\nport = 5432\n"
        );
        let f = SiteFile::parse(Path::new("/etc/lifeboat/site.toml"), &text).unwrap();
        let DriverConfig::Postgres(p) = &f.driver else {
            panic!("not the postgres driver: {:?}", f.driver)
        };
        assert_eq!(p.spool_dir, PathBuf::from("/etc/lifeboat/spool"));
        assert_eq!(
            p.databases[0].data_dir,
            PathBuf::from("/etc/lifeboat/pg/sales")
        );
        let specs = database_specs(&f);
        assert_eq!(specs[0].name, "sales");
    }

    #[test]
    fn a_postgres_driver_without_databases_is_refused_with_what_to_add() {
        let text = format!(
            "{MIN}\n[engine]\ndatabases = [\"sales\"]\n[driver]\nkind = \"postgres\"\n\
             spool_dir = \"spool\"\ndatabases = []\n"
        );
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("driver.databases"), "{e}");
        assert!(e.to_string().contains("data_dir"), "{e}");
    }

    #[test]
    fn an_unknown_postgres_key_is_rejected_by_name() {
        let text = format!(
            "{MIN}\n[driver]\nkind = \"postgres\"\nspool_dir = \"s\"\narchive_timout_s = 5\n\
             databases = []\n"
        );
        let e = SiteFile::parse(Path::new("site.toml"), &text).unwrap_err();
        assert!(e.to_string().contains("archive_timout_s"), "{e}");
    }

    #[test]
    fn an_exec_driver_reads_its_command_templates() {
        let text = format!(
            "{MIN}\n[engine]\ndatabases = [\"app\"]\n[driver]\nkind = \"exec\"\n\
             [driver.commands]\nposition = \"cat {{target}}/lsn\"\n\
             restore = [\"restore.sh\", \"{{artifact}}\"]\n"
        );
        let f = SiteFile::parse(Path::new("site.toml"), &text).unwrap();
        let DriverConfig::Exec { commands, .. } = &f.driver else {
            panic!("not the exec driver: {:?}", f.driver)
        };
        assert!(commands.position.is_some() && commands.restore.is_some());
    }

    /// The README's example files (the ```toml blocks that start with `# site.toml` and
    /// `# arbiter.toml`) are valid: the documentation cannot drift from the parser.
    #[test]
    fn the_readme_example_files_are_valid() {
        let readme = include_str!("../../../README.md");
        let block = |first: &str| -> String {
            let start = readme
                .find(&format!("```toml\n{first}"))
                .unwrap_or_else(|| panic!("the README has a ```toml block starting with {first}"));
            let body = &readme[start + "```toml\n".len()..];
            body[..body.find("```").expect("the block ends")].to_string()
        };
        let site = SiteFile::parse(Path::new("/etc/lifeboat/site.toml"), &block("# site.toml"))
            .unwrap_or_else(|e| panic!("README site.toml: {e}"));
        assert_eq!(site.engine.databases, vec!["sales".to_string()]);
        assert_eq!(
            database_specs(&site)[0].path,
            PathBuf::from("/srv/app/sales.sqlite")
        );
        let arb = ArbiterFile::parse(
            Path::new("/etc/lifeboat/arbiter.toml"),
            &block("# arbiter.toml"),
        )
        .unwrap_or_else(|e| panic!("README arbiter.toml: {e}"));
        assert_eq!(arb.engine.sites, site.engine.sites);
    }
}
