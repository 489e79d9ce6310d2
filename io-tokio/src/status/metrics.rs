//! `/metrics`: the status document in Prometheus text format (gauges, labelled by site).

use super::doc::{ArtifactDoc, RoleName, StatusDoc};

/// Prometheus text of a status document.
pub fn render(doc: &StatusDoc) -> String {
    let mut out = String::new();
    let site = doc.site.as_str();
    let mut g = |name: &str, help: &str, labels: &str, v: Option<f64>| {
        if let Some(v) = v {
            if !out.contains(&format!("# HELP {name} ")) {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            }
            out.push_str(&format!("{name}{{site=\"{site}\"{labels}}} {v}\n"));
        }
    };
    let flag = |b: bool| Some(if b { 1.0 } else { 0.0 });
    let secs = |ms: u64| ms as f64 / 1000.0;
    for r in RoleName::ALL {
        g(
            "lifeboat_role",
            "1 for the site's current role",
            &format!(",role=\"{}\"", r.as_str()),
            flag(r == doc.role),
        );
    }
    g(
        "lifeboat_epoch",
        "highest epoch seen",
        "",
        Some(doc.epoch as f64),
    );
    g(
        "lifeboat_writable",
        "1 when this site accepts writes",
        "",
        flag(doc.writable),
    );
    g(
        "lifeboat_outbox_unacknowledged",
        "artifacts not yet acknowledged by the recovery site",
        "",
        Some(doc.outbox_unacknowledged as f64),
    );
    g(
        "lifeboat_log_to_verified_p50_seconds",
        "from a log's creation at the primary to verified at this site, median of recent logs",
        "",
        doc.log_to_verified_ms.p50.map(secs),
    );
    g(
        "lifeboat_journal_records_since_snapshot",
        "journal records since the last snapshot",
        "",
        Some(doc.journal.records_since_snapshot as f64),
    );
    g(
        "lifeboat_skipped_samples",
        "position samples skipped because the last one still ran (a database lock held long)",
        "",
        Some(doc.skipped.samples as f64),
    );
    g(
        "lifeboat_skipped_probes",
        "SQL probes skipped because the last one still ran",
        "",
        Some(doc.skipped.probes as f64),
    );
    for d in &doc.databases {
        let l = format!(",db=\"{}\"", d.name);
        let ago = |a: &Option<ArtifactDoc>| a.as_ref().map(|a| secs(a.ago_ms));
        g(
            "lifeboat_restored_lsn",
            "restored position",
            &l,
            d.restored_lsn.map(|v| v as f64),
        );
        g(
            "lifeboat_known_produced_lsn",
            "last position known produced at the primary",
            &l,
            Some(d.known_produced_lsn as f64),
        );
        g(
            "lifeboat_write_lsn",
            "write position (primary)",
            &l,
            Some(d.write_lsn as f64),
        );
        g(
            "lifeboat_backlog_artifacts",
            "received and not yet restored",
            &l,
            Some(d.backlog as f64),
        );
        g(
            "lifeboat_seconds_since_last_backup",
            "time since the last backup",
            &l,
            ago(&d.last_backup),
        );
        g(
            "lifeboat_seconds_since_last_copy",
            "time since the last copy",
            &l,
            ago(&d.last_copy),
        );
        g(
            "lifeboat_seconds_since_last_restore",
            "time since the last restore",
            &l,
            ago(&d.last_restore),
        );
        g(
            "lifeboat_restore_latency_seconds",
            "from receipt to restored, last artifact",
            &l,
            d.restore_latency_ms.map(secs),
        );
    }
    for a in &doc.alerts {
        let l = format!(
            ",kind=\"{}\",severity=\"{}\"",
            a.kind.as_str(),
            a.severity.as_str()
        );
        g(
            "lifeboat_alert_active",
            "active alert conditions",
            &l,
            Some(1.0),
        );
    }
    out
}
