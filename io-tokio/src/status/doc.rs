//! The `/status` document as types: built in one place ([`StatusDoc::build`]), read by field by
//! the CLI, the demo, `/metrics` and the alert sinks. Names are snake_case; times are either
//! UTC strings (`2026-11-22T03:05:00Z`) or durations in milliseconds (`*_ms`, "ago" unless the
//! name says otherwise). `tests::the_status_document_round_trips` pins the keys.

use crate::journal_store::JournalStats;
use crate::transport::progress::Transfer;
use lifeboat_core::alert::{AlertChange, AlertEvent, AlertKind, Severity, Subject};
use lifeboat_core::audit::AuditRecord;
use lifeboat_core::engine::{Role, Seen, ShipState, SiteEngine};
use lifeboat_core::report::Report;
use lifeboat_core::{ArtifactKind, Config, DbId, Millis};
use serde::{Deserialize, Serialize};

/// A site's role, as `/status` names it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Primary,
    Fenced,
    Secondary,
    Promoting,
    SwitchingOver,
    SwitchoverTarget,
    Demoted,
    Rebuilding,
}

impl RoleName {
    pub const ALL: [RoleName; 8] = [
        RoleName::Primary,
        RoleName::Fenced,
        RoleName::Secondary,
        RoleName::Promoting,
        RoleName::SwitchingOver,
        RoleName::SwitchoverTarget,
        RoleName::Demoted,
        RoleName::Rebuilding,
    ];
    pub fn as_str(self) -> &'static str {
        Role::from(self).as_str()
    }
}

impl From<Role> for RoleName {
    fn from(r: Role) -> Self {
        match r {
            Role::Primary => RoleName::Primary,
            Role::Fenced => RoleName::Fenced,
            Role::Secondary => RoleName::Secondary,
            Role::Promoting => RoleName::Promoting,
            Role::SwitchingOver => RoleName::SwitchingOver,
            Role::SwitchoverTarget => RoleName::SwitchoverTarget,
            Role::Demoted => RoleName::Demoted,
            Role::Rebuilding => RoleName::Rebuilding,
        }
    }
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Primary => Role::Primary,
            RoleName::Fenced => Role::Fenced,
            RoleName::Secondary => Role::Secondary,
            RoleName::Promoting => Role::Promoting,
            RoleName::SwitchingOver => Role::SwitchingOver,
            RoleName::SwitchoverTarget => Role::SwitchoverTarget,
            RoleName::Demoted => Role::Demoted,
            RoleName::Rebuilding => Role::Rebuilding,
        }
    }
}

/// An artifact's kind, as its file name spells it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    Full,
    Incremental,
    Log,
}

impl From<ArtifactKind> for KindName {
    fn from(k: ArtifactKind) -> Self {
        match k {
            ArtifactKind::Full => KindName::Full,
            ArtifactKind::Incremental => KindName::Incremental,
            ArtifactKind::Log => KindName::Log,
        }
    }
}

/// Alert kinds by their catalogue names (`missing_log`, ...).
mod kind_name {
    use lifeboat_core::alert::AlertKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &AlertKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.as_str())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AlertKind, D::Error> {
        let name = String::deserialize(d)?;
        AlertKind::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown alert kind {name:?}")))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub site: String,
    /// The other site's agent (`peer_http` in site.toml).
    pub peer_http: Option<String>,
    pub utc: String,
    /// Engine time (monotonic, continues across restarts).
    pub now_ms: Millis,
    pub role: RoleName,
    pub epoch: u64,
    /// The site that holds the epoch.
    pub holder: String,
    pub writable: bool,
    pub lease: LeaseDoc,
    pub backups_paused: bool,
    pub peer: PeerDoc,
    pub thresholds: ThresholdsDoc,
    pub databases: Vec<DbDoc>,
    /// Active alert conditions.
    pub alerts: Vec<ActiveAlertDoc>,
    /// The last alert events (raised, updated, cleared, notices), oldest first.
    pub recent_alerts: Vec<AlertDoc>,
    /// The last decisions of the engine, oldest first.
    pub recent_decisions: Vec<DecisionDoc>,
    pub outbox_unacknowledged: usize,
    pub ships_in_flight: Vec<ShipDoc>,
    /// Long work under way (restores, reseeds).
    pub work: Vec<WorkDoc>,
    pub procedure: Option<ProcedureDoc>,
    /// Artifacts set aside (unreadable manifests, corrupt copies).
    pub quarantined: u64,
    /// The last ten reports, newest first.
    pub reports: Vec<ReportDoc>,
    pub log_to_verified_ms: LatencyDoc,
    pub journal: JournalDoc,
    /// Artifact transfers under way, with their byte progress.
    pub transfers: Vec<Transfer>,
    /// Blocking calls skipped because the one before was still running (a database lock held
    /// long): position samples and SQL probes, since the agent started.
    pub skipped: SkippedDoc,
    /// Continuous streams from the other site (PostgreSQL's WAL receivers), by database.
    #[serde(default)]
    pub streams: Vec<StreamDoc>,
    /// The point-in-time archive, by database (empty when this site keeps none).
    #[serde(default)]
    pub archive: Vec<ArchiveDbDoc>,
    /// The witness this site asks (the arbiter or etcd).
    #[serde(default)]
    pub witness: WitnessDoc,
}

/// One etcd endpoint's health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WitnessMemberDoc {
    pub endpoint: String,
    pub healthy: bool,
    pub leader: bool,
    pub error: Option<String>,
}

/// The witness this site asks: its kind, where it is, whether it answers, and what it said
/// last (from the engine's last view of it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WitnessDoc {
    /// `arbiter`, `etcd`, or `none` (no witness: automatic failover is off).
    pub kind: String,
    /// The arbiter's address, or etcd's client URLs.
    pub endpoints: Vec<String>,
    /// etcd: the deployment's key prefix.
    pub prefix: Option<String>,
    /// etcd: whether the last round trip succeeded, how long ago one last did, the last error.
    pub reachable: Option<bool>,
    pub last_ok_ms_ago: Option<u64>,
    pub last_error: Option<String>,
    /// etcd: each endpoint at the last health check (every 10 s).
    #[serde(default)]
    pub members: Vec<WitnessMemberDoc>,
    /// The epoch and its holder as the witness last said, and how long ago the holder last
    /// renewed (as of now: the view's age included).
    pub epoch: Option<u64>,
    pub holder: Option<String>,
    pub lease_age_ms: Option<u64>,
}

/// One database's point-in-time archive, as the engine knows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchiveDbDoc {
    pub db: String,
    pub artifacts: usize,
    pub bytes: u64,
    /// Accepted, not yet archived (a copy under way or to be tried again).
    pub waiting: usize,
    /// The oldest and newest archived artifacts' creation times (UTC).
    pub oldest_utc: Option<String>,
    pub newest_utc: Option<String>,
    /// Scheduled verifications issued so far.
    pub verifications: u64,
}

/// One database's receiver of the other site's continuous stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamDoc {
    pub db: String,
    /// This site asks it to receive (it is the secondary).
    pub receiving: bool,
    /// The receiver process runs now.
    pub running: bool,
    /// Runs started since the agent started.
    pub starts: u64,
    /// The end of the valid WAL received, when any.
    pub received_lsn: Option<u64>,
    /// Why the last run ended or could not start.
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SkippedDoc {
    pub samples: u64,
    pub probes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaseDoc {
    /// Negative once expired; none when no lease is held.
    pub expires_in_ms: Option<i64>,
    /// No arbiter: the lease is not managed.
    pub unmanaged: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerDoc {
    pub last_heard_ms: Option<Millis>,
    pub last_heartbeat_ms: Option<Millis>,
    pub site_reachable: bool,
    pub failed_probes: u32,
    pub backups_paused: bool,
    pub peak_write_rate: u64,
    pub arbiter_view: Option<ArbiterViewDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArbiterViewDoc {
    pub epoch: u64,
    pub holder: Option<String>,
    pub holder_renewing: bool,
    pub lease_lapsed: bool,
    pub since_renewal_ms: Option<Millis>,
    /// How old this view is.
    pub age_ms: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdsDoc {
    pub log_every_ms: Millis,
    pub no_new_logs_minutes: u64,
    pub restore_alert_after_attempts: u32,
    pub restore_alert_after_minutes: u64,
    pub critical_after_minutes: u64,
    pub backlog_count: u32,
    pub backlog_age_minutes: u64,
    pub min_free_mib: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DbDoc {
    pub name: String,
    /// Restored position (recovery site); none before the first full.
    pub restored_lsn: Option<u64>,
    pub known_produced_lsn: u64,
    /// Write position (primary).
    pub write_lsn: u64,
    pub last_backup: Option<ArtifactDoc>,
    pub last_copy: Option<ArtifactDoc>,
    pub last_restore: Option<ArtifactDoc>,
    pub restore_latency_ms: Option<Millis>,
    pub since_last_log_ms: Millis,
    /// Received and not yet restored.
    pub backlog: u32,
    pub backlog_oldest_ms: Millis,
    pub restoring: Option<RangeDoc>,
    pub gap: Option<GapDoc>,
    pub reseeding_ms: Option<Millis>,
    pub recopies: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactDoc {
    pub file: String,
    pub kind: KindName,
    pub lsn_start: u64,
    pub lsn_end: u64,
    pub epoch: u64,
    pub ago_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeDoc {
    pub kind: KindName,
    pub lsn_start: u64,
    pub lsn_end: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GapDoc {
    /// Where the chain stops.
    pub at: u64,
    /// Where the next artifact held starts.
    pub next_lsn_start: u64,
    pub open_ms: Millis,
    pub attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlertDoc {
    #[serde(with = "kind_name")]
    pub kind: AlertKind,
    pub db: Option<String>,
    pub severity: Severity,
    pub count: u32,
    pub first_seen: String,
    pub last_seen: String,
    pub text: String,
}

/// One alert event: what every sink receives (log, exec hooks, webhooks) and `recent_alerts`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertDoc {
    pub site: String,
    #[serde(with = "kind_name")]
    pub kind: AlertKind,
    pub db: Option<String>,
    pub subject: SubjectDoc,
    pub change: AlertChange,
    pub severity: Severity,
    pub count: u32,
    pub first_seen: String,
    pub last_seen: String,
    pub text: String,
}

/// What an alert is about beyond its kind and database: nothing, a site, or an artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubjectDoc {
    Site { site: String },
    Artifact { artifact: SubjectArtifactDoc },
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubjectArtifactDoc {
    pub db: String,
    pub kind: KindName,
    pub epoch: u64,
    pub lsn_start: u64,
    pub lsn_end: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionDoc {
    pub at_ms: Millis,
    pub epoch: u64,
    pub what: String,
    pub why: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShipDoc {
    pub file: String,
    pub size: u64,
    pub since_ms: Millis,
    pub attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Restore,
    Reseed,
    /// A full backup at the primary (`size`: the database's size when it started).
    Backup,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkDoc {
    pub work: WorkKind,
    pub db: String,
    pub lsn_start: u64,
    pub lsn_end: u64,
    pub size: u64,
    /// Bytes done of `size` in the pass under way, where the work counts them (full backups:
    /// each pass, the snapshot of the live database then the artifact, counts from 0).
    #[serde(default)]
    pub done: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcedureDoc {
    /// `failover`, `switchover`, ... (`ProcKind::as_str`).
    pub kind: String,
    /// The step under way (`Step::as_str`).
    pub step: String,
    pub running_ms: Millis,
    pub new_epoch: Option<u64>,
}

/// A report: what a failover, a switchover, a drill or a reseed did. Kept in `reports.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportDoc {
    /// Numbered from 1 at this site, across restarts.
    #[serde(default)]
    pub seq: u64,
    /// When it was made (UTC).
    #[serde(default)]
    pub utc: String,
    #[serde(flatten)]
    pub body: ReportBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReportBody {
    Failover {
        epoch: u64,
        new_primary: String,
        forced: bool,
        rpo_lower: u64,
        rpo_upper: Option<u64>,
        /// The bounds in seconds of writes at the peak write rate (none when no rate is known).
        #[serde(default)]
        rpo_lower_s: Option<f64>,
        #[serde(default)]
        rpo_upper_s: Option<f64>,
        /// That rate, positions per second.
        #[serde(default)]
        write_rate_per_s: u64,
        rto_ms: Millis,
        detected_at_ms: Millis,
        writable_at_ms: Millis,
        losses: Vec<LossDoc>,
        /// What a failover to a chosen point (`failover --until`) left out.
        #[serde(default)]
        left_out: Vec<LeftOutDoc>,
    },
    Switchover {
        epoch: u64,
        new_primary: String,
        rpo: u64,
        duration_ms: Millis,
    },
    Drill {
        db: String,
        upto_lsn: u64,
        ok: bool,
        message: String,
    },
    Reseeded {
        db: String,
        at_lsn: u64,
    },
    /// A failover's exact loss, found when the former primary (`site`) was rebuilt.
    LostWrites {
        site: String,
        epoch: u64,
        db: String,
        from_lsn: u64,
        to_lsn: u64,
        /// Positions lost (`to_lsn - from_lsn`; bytes of WAL for PostgreSQL).
        lost: u64,
        /// Transactions committed in them, when counted.
        transactions: Option<u64>,
        /// The first and last lost commit (UTC), and the last commit the new primary holds.
        first_commit: Option<String>,
        last_commit: Option<String>,
        last_kept_commit: Option<String>,
        /// The loss in time: from the last commit kept to the last commit lost, in seconds.
        lost_s: Option<f64>,
        /// Where the former primary's site kept them.
        kept: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeftOutDoc {
    pub db: String,
    /// The chosen point (UTC).
    pub until: String,
    /// Received artifacts created after it, and the positions they covered.
    pub artifacts: u32,
    pub from_lsn: u64,
    pub to_lsn: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossDoc {
    pub db: String,
    pub restored_lsn: u64,
    pub known_produced_lsn: u64,
    pub rpo_lower: u64,
    pub rpo_upper: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyDoc {
    pub count: usize,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub samples: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JournalDoc {
    pub records_since_snapshot: u64,
    pub bytes: u64,
    pub at_start: StartDoc,
}

/// How this process started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StartDoc {
    pub resumed: bool,
    pub replayed_records: usize,
    pub torn_tail: Option<String>,
}

/// The arbiter's `/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArbiterStatusDoc {
    /// Always `arbiter`.
    pub role: String,
    pub epoch: u64,
    pub holder: Option<String>,
    pub holder_renewing: bool,
    pub lease_lapsed: bool,
    pub since_renewal_ms: Option<Millis>,
    /// The sites with a control link to the arbiter now, by name.
    pub connected: Vec<String>,
}

/// What the board adds to what the engine knows.
pub struct Extras<'a> {
    pub site: &'a str,
    pub peer_http: Option<&'a str>,
    pub utc: String,
    pub utc_of: &'a dyn Fn(Millis) -> String,
    pub recent_alerts: Vec<AlertDoc>,
    pub recent_decisions: Vec<DecisionDoc>,
    pub work: Vec<WorkDoc>,
    pub reports: Vec<ReportDoc>,
    pub latencies: Vec<u64>,
    pub journal: JournalStats,
    pub at_start: StartDoc,
    pub transfers: Vec<Transfer>,
    pub skipped: SkippedDoc,
    pub streams: Vec<StreamDoc>,
    pub witness: WitnessDoc,
}

impl StatusDoc {
    /// The document of `engine` at engine time `now`.
    pub fn build(cfg: &Config, engine: &SiteEngine, now: Millis, x: Extras<'_>) -> StatusDoc {
        let st = engine.state();
        let ago = |t: Millis| now.saturating_sub(t);
        let art = |db: usize, s: &Seen| ArtifactDoc {
            file: s.name(cfg.db_name(DbId(db as u32))).to_string(),
            kind: s.kind.into(),
            lsn_start: s.lsn_start.0,
            lsn_end: s.lsn_end.0,
            epoch: s.epoch.0,
            ago_ms: ago(s.at),
        };
        let databases = st
            .dbs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (backlog, backlog_oldest_ms) = d.backlog(now);
                DbDoc {
                    name: cfg.databases.get(i).cloned().unwrap_or_default(),
                    restored_lsn: d.position.map(|l| l.0),
                    known_produced_lsn: d.known_produced.0,
                    write_lsn: st.writes.get(i).map_or(0, |w| w.lsn.0),
                    last_backup: d.last_backup.as_ref().map(|s| art(i, s)),
                    last_copy: d.last_copy.as_ref().map(|s| art(i, s)),
                    last_restore: d.last_restore.as_ref().map(|s| art(i, s)),
                    restore_latency_ms: d.last_restore_latency,
                    since_last_log_ms: ago(d.last_log_at),
                    backlog,
                    backlog_oldest_ms,
                    restoring: d.in_flight.map(|(_, k)| RangeDoc {
                        kind: k.kind.into(),
                        lsn_start: k.lsn_start.0,
                        lsn_end: k.lsn_end.0,
                    }),
                    gap: d.gap.as_ref().map(|g| GapDoc {
                        at: g.at.0,
                        next_lsn_start: g.next.key.lsn_start.0,
                        open_ms: ago(g.since),
                        attempts: g.attempts,
                    }),
                    reseeding_ms: d.reseed_since.map(ago),
                    recopies: d.recopies,
                }
            })
            .collect();
        let alerts = st
            .alerts
            .iter()
            .map(|(id, a)| ActiveAlertDoc {
                kind: id.kind,
                db: id.db.map(|d| cfg.db_name(d).to_string()),
                severity: a.severity,
                count: a.count,
                first_seen: (x.utc_of)(a.first_seen),
                last_seen: (x.utc_of)(a.last_seen),
                text: a.text.clone(),
            })
            .collect();
        let ships_in_flight = st
            .outbox
            .values()
            .filter_map(|e| match e.state {
                ShipState::InFlight { sent_at, .. } => Some(ShipDoc {
                    file: crate::transport::inbox::artifact_file_name(
                        &e.meta,
                        cfg.db_name(e.meta.key.db),
                    ),
                    size: e.meta.size,
                    since_ms: ago(sent_at),
                    attempts: e.attempts,
                }),
                _ => None,
            })
            .collect();
        let arbiter_view = st.peer.arbiter_view.as_ref().map(|v| ArbiterViewDoc {
            epoch: v.epoch.0,
            holder: v.holder.map(|h| cfg.site_name(h).to_string()),
            holder_renewing: v.holder_renewing,
            lease_lapsed: v.lease_lapsed,
            since_renewal_ms: v.since_renewal_ms,
            age_ms: st.peer.arbiter_view_at.map(ago),
        });
        // What the witness said last: its grant when this site holds the epoch (a holder does
        // not query), else its last view.
        let mut witness = x.witness;
        match (&arbiter_view, st.lease.last_grant_at) {
            (v, Some(granted))
                if st.holder == engine.site()
                    && v.as_ref().is_none_or(|v| v.epoch <= st.epoch.0) =>
            {
                witness.epoch = Some(st.epoch.0);
                witness.holder = Some(cfg.site_name(st.holder).to_string());
                witness.lease_age_ms = Some(ago(granted));
            }
            (Some(v), _) => {
                witness.epoch = Some(v.epoch);
                witness.holder = v.holder.clone();
                witness.lease_age_ms = v
                    .since_renewal_ms
                    .map(|s| s.saturating_add(v.age_ms.unwrap_or(0)));
            }
            (None, _) => {}
        }
        let archive = st
            .archive
            .iter()
            .enumerate()
            .map(|(i, a)| ArchiveDbDoc {
                db: cfg.db_name(DbId(i as u32)).to_string(),
                artifacts: a.entries.len(),
                bytes: a.bytes,
                waiting: a.waiting.len(),
                oldest_utc: a
                    .entries
                    .iter()
                    .map(|m| m.created_utc)
                    .min()
                    .map(|t| t.to_string()),
                newest_utc: a
                    .entries
                    .iter()
                    .map(|m| m.created_utc)
                    .max()
                    .map(|t| t.to_string()),
                verifications: a.verifications,
            })
            .collect();
        StatusDoc {
            archive,
            site: x.site.to_string(),
            peer_http: x.peer_http.map(str::to_string),
            utc: x.utc,
            now_ms: now,
            role: engine.role().into(),
            epoch: st.epoch.0,
            holder: cfg.site_name(st.holder).to_string(),
            writable: engine.writable(),
            lease: LeaseDoc {
                expires_in_ms: st.lease.expires.map(|e| e as i64 - now as i64),
                unmanaged: st.lease.unmanaged,
            },
            backups_paused: st.backups_paused,
            peer: PeerDoc {
                last_heard_ms: st.peer.last_heard.map(ago),
                last_heartbeat_ms: st.peer.last_heartbeat_at.map(ago),
                site_reachable: st.peer.site_reachable,
                failed_probes: st.peer.failed_probes,
                backups_paused: st.peer.backups_paused,
                peak_write_rate: st.peer.peak_rate,
                arbiter_view,
            },
            thresholds: ThresholdsDoc {
                log_every_ms: cfg.schedule.log_every_ms,
                no_new_logs_minutes: cfg.alerts.no_new_logs_minutes,
                restore_alert_after_attempts: cfg.alerts.after_attempts,
                restore_alert_after_minutes: cfg.alerts.after_minutes,
                critical_after_minutes: cfg.alerts.critical_after_minutes,
                backlog_count: cfg.alerts.backlog_count,
                backlog_age_minutes: cfg.alerts.backlog_age_minutes,
                min_free_mib: cfg.alerts.min_free_mib,
            },
            databases,
            alerts,
            recent_alerts: x.recent_alerts,
            recent_decisions: x.recent_decisions,
            outbox_unacknowledged: st.outbox.len(),
            ships_in_flight,
            work: x.work,
            procedure: st.procedure.as_ref().map(|p| ProcedureDoc {
                kind: p.kind.as_str().to_string(),
                step: p.step.as_str().to_string(),
                running_ms: ago(p.started_at),
                new_epoch: p.new_epoch.map(|e| e.0),
            }),
            quarantined: st.quarantined,
            reports: x.reports,
            log_to_verified_ms: LatencyDoc {
                count: x.latencies.len(),
                p50: quantile(&x.latencies, 0.5),
                p99: quantile(&x.latencies, 0.99),
                samples: x.latencies,
            },
            journal: JournalDoc {
                records_since_snapshot: x.journal.records_since_snapshot,
                bytes: x.journal.bytes,
                at_start: x.at_start,
            },
            transfers: x.transfers,
            skipped: x.skipped,
            streams: x.streams,
            witness,
        }
    }

    /// This document's entry for `db`.
    pub fn db(&self, name: &str) -> Option<&DbDoc> {
        self.databases.iter().find(|d| d.name == name)
    }
}

/// The `q` quantile (0..=1) of samples, nearest rank.
pub fn quantile(samples: &[u64], q: f64) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

impl AlertDoc {
    /// The document of an alert event; `utc_of` turns engine times into UTC.
    pub fn of(
        cfg: &Config,
        site: &str,
        ev: &AlertEvent,
        utc_of: impl Fn(Millis) -> String,
    ) -> Self {
        let subject = match ev.id.subject {
            Subject::None => SubjectDoc::None,
            Subject::Site(s) => SubjectDoc::Site {
                site: cfg.site_name(s).to_string(),
            },
            Subject::Artifact(k) => SubjectDoc::Artifact {
                artifact: SubjectArtifactDoc {
                    db: cfg.db_name(k.db).to_string(),
                    kind: k.kind.into(),
                    epoch: k.epoch.0,
                    lsn_start: k.lsn_start.0,
                    lsn_end: k.lsn_end.0,
                },
            },
        };
        AlertDoc {
            site: site.to_string(),
            kind: ev.id.kind,
            db: ev.id.db.map(|d| cfg.db_name(d).to_string()),
            subject,
            change: ev.change,
            severity: ev.severity,
            count: ev.count,
            first_seen: utc_of(ev.first_seen),
            last_seen: utc_of(ev.last_seen),
            text: ev.text.clone(),
        }
    }
}

impl DecisionDoc {
    pub fn of(a: &AuditRecord) -> Self {
        DecisionDoc {
            at_ms: a.at,
            epoch: a.epoch.0,
            what: a.what.to_string(),
            why: a.why.to_string(),
        }
    }
}

/// `positions` of writes at `rate` positions per second, in seconds (ms precision); none
/// without a rate.
fn seconds_of_writes(positions: u64, rate: u64) -> Option<f64> {
    (rate > 0).then(|| (positions as f64 / rate as f64 * 1000.0).round() / 1000.0)
}

impl ReportBody {
    /// A report with names instead of ids.
    pub fn of(cfg: &Config, r: &Report) -> Self {
        match r {
            Report::Failover {
                epoch,
                new_primary,
                forced,
                rpo_lower,
                rpo_upper,
                losses,
                write_rate,
                left_out,
                rto_ms,
                detected_at,
                writable_at,
            } => ReportBody::Failover {
                left_out: left_out
                    .iter()
                    .map(|l| LeftOutDoc {
                        db: cfg.db_name(l.db).to_string(),
                        until: l.until.to_string(),
                        artifacts: l.artifacts,
                        from_lsn: l.from.0,
                        to_lsn: l.to.0,
                    })
                    .collect(),
                epoch: epoch.0,
                new_primary: cfg.site_name(*new_primary).to_string(),
                forced: *forced,
                rpo_lower: *rpo_lower,
                rpo_upper: *rpo_upper,
                rpo_lower_s: seconds_of_writes(*rpo_lower, *write_rate),
                rpo_upper_s: rpo_upper.and_then(|u| seconds_of_writes(u, *write_rate)),
                write_rate_per_s: *write_rate,
                rto_ms: *rto_ms,
                detected_at_ms: *detected_at,
                writable_at_ms: *writable_at,
                losses: losses
                    .iter()
                    .map(|l| LossDoc {
                        db: cfg.db_name(l.db).to_string(),
                        restored_lsn: l.restored.0,
                        known_produced_lsn: l.known_produced.0,
                        rpo_lower: l.rpo_lower,
                        rpo_upper: l.rpo_upper,
                    })
                    .collect(),
            },
            Report::Switchover {
                epoch,
                new_primary,
                rpo,
                duration_ms,
            } => ReportBody::Switchover {
                epoch: epoch.0,
                new_primary: cfg.site_name(*new_primary).to_string(),
                rpo: *rpo,
                duration_ms: *duration_ms,
            },
            Report::Drill {
                db,
                upto,
                ok,
                message,
            } => ReportBody::Drill {
                db: cfg.db_name(*db).to_string(),
                upto_lsn: upto.0,
                ok: *ok,
                message: message.clone(),
            },
            Report::Reseeded { db, at } => ReportBody::Reseeded {
                db: cfg.db_name(*db).to_string(),
                at_lsn: at.0,
            },
            Report::LostWrites { site, epoch, lost } => ReportBody::LostWrites {
                site: cfg.site_name(*site).to_string(),
                epoch: epoch.0,
                db: cfg.db_name(lost.db).to_string(),
                from_lsn: lost.from.0,
                to_lsn: lost.to.0,
                lost: lost.to.0.saturating_sub(lost.from.0),
                transactions: lost.transactions,
                first_commit: lost.first_commit.map(lifeboat_core::utc::iso_ms),
                last_commit: lost.last_commit.map(lifeboat_core::utc::iso_ms),
                last_kept_commit: lost.last_kept_commit.map(lifeboat_core::utc::iso_ms),
                lost_s: lost
                    .last_kept_commit
                    .zip(lost.last_commit)
                    .map(|(k, l)| l.0.saturating_sub(k.0) as f64 / 1000.0),
                kept: lost.kept.clone(),
            },
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ReportBody::Failover { .. } => "failover",
            ReportBody::Switchover { .. } => "switchover",
            ReportBody::Drill { .. } => "drill",
            ReportBody::Reseeded { .. } => "reseeded",
            ReportBody::LostWrites { .. } => "lost_writes",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lifeboat_core::alert::{AlertId, Subject};
    use lifeboat_core::{ArtifactKey, Epoch, Lsn, SiteId};

    /// A document from a real engine, with every optional part filled in.
    pub(crate) fn sample() -> StatusDoc {
        let cfg = Config {
            archive: Some(lifeboat_core::archive::Policy::default()),
            ..Config::default()
        };
        let mut engine = SiteEngine::new(cfg.clone(), SiteId(1));
        engine.handle(1_000, lifeboat_core::Input::Tick);
        while engine.poll_output().is_some() {}
        let ev = AlertEvent {
            id: AlertId {
                kind: AlertKind::MissingLog,
                db: Some(DbId(0)),
                subject: Subject::Artifact(ArtifactKey {
                    db: DbId(0),
                    kind: ArtifactKind::Log,
                    epoch: Epoch(1),
                    lsn_start: Lsn(10),
                    lsn_end: Lsn(20),
                }),
            },
            change: AlertChange::Raised,
            severity: Severity::Failure,
            count: 2,
            first_seen: 500,
            last_seen: 900,
            text: "a log is missing".into(),
        };
        let lost = Report::LostWrites {
            site: SiteId(0),
            epoch: Epoch(2),
            lost: lifeboat_core::protocol::LostWrites {
                db: DbId(0),
                from: Lsn(0x0300_0100),
                to: Lsn(0x0300_2100),
                transactions: Some(12),
                first_commit: Some(lifeboat_core::UtcMillis(1_796_479_000_000)),
                last_commit: Some(lifeboat_core::UtcMillis(1_796_479_000_450)),
                last_kept_commit: Some(lifeboat_core::UtcMillis(1_796_478_999_990)),
                kept: "/var/lib/lifeboat/spool/app/diverged/00000001-0000000003000100".into(),
            },
        };
        let report = Report::Failover {
            epoch: Epoch(2),
            new_primary: SiteId(1),
            forced: false,
            rpo_lower: 3,
            rpo_upper: Some(9),
            losses: vec![],
            write_rate: 2,
            left_out: vec![],
            rto_ms: 1_700,
            detected_at: 100,
            writable_at: 1_800,
        };
        let x = Extras {
            site: "recovery",
            peer_http: Some("127.0.0.1:7480"),
            utc: "2026-12-03T10:00:00Z".into(),
            utc_of: &|t| format!("t{t}"),
            recent_alerts: vec![AlertDoc::of(&cfg, "recovery", &ev, |t| format!("t{t}"))],
            recent_decisions: vec![DecisionDoc {
                at_ms: 5,
                epoch: 1,
                what: "restore".into(),
                why: "next in chain".into(),
            }],
            work: vec![WorkDoc {
                work: WorkKind::Restore,
                db: "app".into(),
                lsn_start: 10,
                lsn_end: 20,
                size: 4096,
                done: None,
            }],
            reports: vec![
                ReportDoc {
                    seq: 1,
                    utc: "2026-12-03T10:00:00Z".into(),
                    body: ReportBody::of(&cfg, &report),
                },
                ReportDoc {
                    seq: 2,
                    utc: "2026-12-03T10:05:00Z".into(),
                    body: ReportBody::of(&cfg, &lost),
                },
            ],
            latencies: vec![400, 600, 900],
            journal: JournalStats {
                records_since_snapshot: 12,
                bytes: 3_000,
            },
            at_start: StartDoc {
                resumed: true,
                replayed_records: 12,
                torn_tail: None,
            },
            transfers: vec![Transfer {
                direction: crate::transport::progress::Direction::Receive,
                file: "app_2026_12_03_10_00_00_full_0".into(),
                size: 64 << 20,
                done: 16 << 20,
                resumed_from: 0,
            }],
            skipped: SkippedDoc {
                samples: 3,
                probes: 1,
            },
            streams: vec![StreamDoc {
                db: "app".into(),
                receiving: true,
                running: true,
                starts: 2,
                received_lsn: Some(0x0300_0a50),
                last_error: Some("pg_receivewal exited (exit status: 1): disconnected".into()),
            }],
            witness: WitnessDoc {
                kind: "etcd".into(),
                endpoints: vec!["https://10.0.0.5:2379".into()],
                prefix: Some("/lifeboat/sales".into()),
                reachable: Some(true),
                last_ok_ms_ago: Some(40),
                members: vec![WitnessMemberDoc {
                    endpoint: "https://10.0.0.5:2379".into(),
                    healthy: true,
                    leader: true,
                    error: None,
                }],
                ..WitnessDoc::default()
            },
        };
        let mut doc = StatusDoc::build(&cfg, &engine, 1_000, x);
        let art = |kind, ago_ms| {
            Some(ArtifactDoc {
                file: "app_2026_12_03_10_00_00_tlog_0".into(),
                kind,
                lsn_start: 10,
                lsn_end: 20,
                epoch: 1,
                ago_ms,
            })
        };
        let d = &mut doc.databases[0];
        d.restored_lsn = Some(20);
        d.last_backup = art(KindName::Full, 60_000);
        d.last_copy = art(KindName::Log, 1_500);
        d.last_restore = art(KindName::Log, 1_200);
        d.restore_latency_ms = Some(40);
        d.backlog = 1;
        doc
    }

    /// Every key path of a JSON value (`a.b`, arrays as `a[]`), sorted.
    fn paths(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let p = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.push(p.clone());
                    paths(v, &p, out);
                }
            }
            serde_json::Value::Array(a) => {
                for v in a {
                    paths(v, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn the_status_document_round_trips() {
        let doc = sample();
        let text = serde_json::to_string_pretty(&doc).unwrap();
        let back: StatusDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(back, doc);
        // The names readers see: snake_case words, never Rust's Debug text.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["role"], "secondary");
        assert_eq!(v["recent_alerts"][0]["kind"], "missing_log");
        assert_eq!(v["recent_alerts"][0]["change"], "raised");
        assert_eq!(v["recent_alerts"][0]["severity"], "failure");
        assert_eq!(v["recent_alerts"][0]["subject"]["artifact"]["kind"], "log");
        assert_eq!(v["reports"][0]["kind"], "failover");
        assert_eq!(v["work"][0]["work"], "restore");
        assert_eq!(v["transfers"][0]["direction"], "receive");
    }

    /// The keys of `/status`: a renamed or removed key fails here, and its readers (the CLI,
    /// the demo, `/metrics`) read the fields of [`StatusDoc`], so they follow at compile time.
    #[test]
    fn the_status_document_has_these_keys() {
        let v = serde_json::to_value(sample()).unwrap();
        let mut got = Vec::new();
        paths(&v, "", &mut got);
        got.sort();
        got.dedup();
        let want = [
            "alerts",
            "archive",
            "archive[].artifacts",
            "archive[].bytes",
            "archive[].db",
            "archive[].newest_utc",
            "archive[].oldest_utc",
            "archive[].verifications",
            "archive[].waiting",
            "backups_paused",
            "databases",
            "databases[].backlog",
            "databases[].backlog_oldest_ms",
            "databases[].gap",
            "databases[].known_produced_lsn",
            "databases[].last_backup",
            "databases[].last_backup.ago_ms",
            "databases[].last_backup.epoch",
            "databases[].last_backup.file",
            "databases[].last_backup.kind",
            "databases[].last_backup.lsn_end",
            "databases[].last_backup.lsn_start",
            "databases[].last_copy",
            "databases[].last_copy.ago_ms",
            "databases[].last_copy.epoch",
            "databases[].last_copy.file",
            "databases[].last_copy.kind",
            "databases[].last_copy.lsn_end",
            "databases[].last_copy.lsn_start",
            "databases[].last_restore",
            "databases[].last_restore.ago_ms",
            "databases[].last_restore.epoch",
            "databases[].last_restore.file",
            "databases[].last_restore.kind",
            "databases[].last_restore.lsn_end",
            "databases[].last_restore.lsn_start",
            "databases[].name",
            "databases[].recopies",
            "databases[].reseeding_ms",
            "databases[].restore_latency_ms",
            "databases[].restored_lsn",
            "databases[].restoring",
            "databases[].since_last_log_ms",
            "databases[].write_lsn",
            "epoch",
            "holder",
            "journal",
            "journal.at_start",
            "journal.at_start.replayed_records",
            "journal.at_start.resumed",
            "journal.at_start.torn_tail",
            "journal.bytes",
            "journal.records_since_snapshot",
            "lease",
            "lease.expires_in_ms",
            "lease.unmanaged",
            "log_to_verified_ms",
            "log_to_verified_ms.count",
            "log_to_verified_ms.p50",
            "log_to_verified_ms.p99",
            "log_to_verified_ms.samples",
            "now_ms",
            "outbox_unacknowledged",
            "peer",
            "peer.arbiter_view",
            "peer.backups_paused",
            "peer.failed_probes",
            "peer.last_heard_ms",
            "peer.last_heartbeat_ms",
            "peer.peak_write_rate",
            "peer.site_reachable",
            "peer_http",
            "procedure",
            "quarantined",
            "recent_alerts",
            "recent_alerts[].change",
            "recent_alerts[].count",
            "recent_alerts[].db",
            "recent_alerts[].first_seen",
            "recent_alerts[].kind",
            "recent_alerts[].last_seen",
            "recent_alerts[].severity",
            "recent_alerts[].site",
            "recent_alerts[].subject",
            "recent_alerts[].subject.artifact",
            "recent_alerts[].subject.artifact.db",
            "recent_alerts[].subject.artifact.epoch",
            "recent_alerts[].subject.artifact.kind",
            "recent_alerts[].subject.artifact.lsn_end",
            "recent_alerts[].subject.artifact.lsn_start",
            "recent_alerts[].text",
            "recent_decisions",
            "recent_decisions[].at_ms",
            "recent_decisions[].epoch",
            "recent_decisions[].what",
            "recent_decisions[].why",
            "reports",
            "reports[].db",
            "reports[].detected_at_ms",
            "reports[].epoch",
            "reports[].first_commit",
            "reports[].forced",
            "reports[].from_lsn",
            "reports[].kept",
            "reports[].kind",
            "reports[].last_commit",
            "reports[].last_kept_commit",
            "reports[].left_out",
            "reports[].losses",
            "reports[].lost",
            "reports[].lost_s",
            "reports[].new_primary",
            "reports[].rpo_lower",
            "reports[].rpo_lower_s",
            "reports[].rpo_upper",
            "reports[].rpo_upper_s",
            "reports[].rto_ms",
            "reports[].seq",
            "reports[].site",
            "reports[].to_lsn",
            "reports[].transactions",
            "reports[].utc",
            "reports[].writable_at_ms",
            "reports[].write_rate_per_s",
            "role",
            "ships_in_flight",
            "site",
            "skipped",
            "skipped.probes",
            "skipped.samples",
            "streams",
            "streams[].db",
            "streams[].last_error",
            "streams[].received_lsn",
            "streams[].receiving",
            "streams[].running",
            "streams[].starts",
            "thresholds",
            "thresholds.backlog_age_minutes",
            "thresholds.backlog_count",
            "thresholds.critical_after_minutes",
            "thresholds.log_every_ms",
            "thresholds.min_free_mib",
            "thresholds.no_new_logs_minutes",
            "thresholds.restore_alert_after_attempts",
            "thresholds.restore_alert_after_minutes",
            "transfers",
            "transfers[].direction",
            "transfers[].done",
            "transfers[].file",
            "transfers[].resumed_from",
            "transfers[].size",
            "utc",
            "witness",
            "witness.endpoints",
            "witness.epoch",
            "witness.holder",
            "witness.kind",
            "witness.last_error",
            "witness.last_ok_ms_ago",
            "witness.lease_age_ms",
            "witness.members",
            "witness.members[].endpoint",
            "witness.members[].error",
            "witness.members[].healthy",
            "witness.members[].leader",
            "witness.prefix",
            "witness.reachable",
            "work",
            "work[].db",
            "work[].done",
            "work[].lsn_end",
            "work[].lsn_start",
            "work[].size",
            "work[].work",
            "writable",
        ];
        assert_eq!(got, want);
    }

    /// `reports.jsonl` lines written before the typed document still read.
    #[test]
    fn a_report_line_of_the_json_era_reads() {
        let line = r#"{"kind":"failover","epoch":2,"new_primary":"recovery","forced":false,"rpo_lower":3,"rpo_upper":null,"rto_ms":1700,"detected_at_ms":1,"writable_at_ms":2,"losses":[{"db":"app","restored_lsn":5,"known_produced_lsn":9,"rpo_lower":3,"rpo_upper":null}],"seq":4,"utc":"2026-11-22T03:05:00Z"}"#;
        let r: ReportDoc = serde_json::from_str(line).unwrap();
        assert_eq!(r.seq, 4);
        assert!(matches!(
            r.body,
            ReportBody::Failover {
                rto_ms: 1700,
                rpo_upper: None,
                ..
            }
        ));
        let drill = r#"{"kind":"drill","db":"app","upto_lsn":7,"ok":false,"message":"no full"}"#;
        let r: ReportDoc = serde_json::from_str(drill).unwrap();
        assert_eq!((r.seq, r.body.kind()), (0, "drill"));
    }
}
