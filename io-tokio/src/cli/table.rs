//! `lifeboat status` as one table for all sites, like a log-shipping monitor: per site and
//! database the time since the last backup / copy / restore, the last file of each, the restore
//! latency, the backlog and the alert state; then thresholds, active alerts and work in progress.

use crate::status::doc::{ArtifactDoc, RoleName, StatusDoc, WorkKind};
use crate::transport::progress::Direction;

fn ago(v: &Option<ArtifactDoc>) -> String {
    v.as_ref().map_or("-".into(), |a| human_ms(a.ago_ms))
}

fn file(v: &Option<ArtifactDoc>) -> String {
    v.as_ref().map_or("-".into(), |a| a.file.clone())
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

pub fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A text progress bar: `[#####.....] 52%`.
pub fn bar(done: u64, total: u64) -> String {
    let pct = (done * 100).checked_div(total).map_or(100, |p| p.min(100));
    let filled = (pct / 10) as usize;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        ".".repeat(10 - filled)
    )
}

/// One line per artifact transfer under way at a site: direction, file, a bar and the bytes.
pub fn transfer_lines(site: &str, doc: &StatusDoc) -> Vec<String> {
    doc.transfers
        .iter()
        .map(|t| {
            let verb = match t.direction {
                Direction::Send => "sending",
                Direction::Receive => "receiving",
            };
            format!(
                "{site}: {verb} {} {} {}/{} MiB",
                t.file,
                bar(t.done, t.size),
                t.done >> 20,
                t.size >> 20
            )
        })
        .collect()
}

pub fn render(sites: &[(String, Result<StatusDoc, String>)]) -> String {
    let head = [
        "SITE",
        "ROLE",
        "EPOCH",
        "WRITES",
        "DB",
        "RESTORED",
        "PRODUCED",
        "BACKUP",
        "LAST BACKUP",
        "COPY",
        "LAST COPY",
        "RESTORE",
        "LAST RESTORE",
        "LATENCY",
        "BACKLOG",
        "ALERTS",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    let mut notes = Vec::new();
    for (addr, r) in sites {
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                let mut row = vec![addr.clone(), "UNREACHABLE".into()];
                row.resize(head.len(), "-".into());
                rows.push(row);
                notes.push(format!("{addr}: {e}"));
                continue;
            }
        };
        let site = &d.site;
        for db in &d.databases {
            let db_alerts: Vec<String> = d
                .alerts
                .iter()
                .filter(|a| a.db.as_deref().is_none_or(|n| n == db.name))
                .map(|a| format!("{}:{}", a.kind.as_str(), a.severity.as_str()))
                .collect();
            rows.push(vec![
                site.clone(),
                d.role.as_str().to_string(),
                d.epoch.to_string(),
                if d.writable { "yes" } else { "no" }.to_string(),
                db.name.clone(),
                opt(db.restored_lsn),
                if d.writable || d.role == RoleName::Primary {
                    db.write_lsn.to_string()
                } else {
                    db.known_produced_lsn.to_string()
                },
                ago(&db.last_backup),
                file(&db.last_backup),
                ago(&db.last_copy),
                file(&db.last_copy),
                ago(&db.last_restore),
                file(&db.last_restore),
                db.restore_latency_ms.map_or("-".into(), human_ms),
                db.backlog.to_string(),
                if db_alerts.is_empty() {
                    "ok".into()
                } else {
                    db_alerts.join(",")
                },
            ]);
        }
        let w = &d.witness;
        if w.kind != "none" && !w.kind.is_empty() {
            let seen = match (w.epoch, &w.holder) {
                (Some(e), Some(h)) => format!(
                    "epoch {e} held by {h}{}",
                    w.lease_age_ms
                        .map_or(String::new(), |a| format!(", renewed {} ago", human_ms(a)))
                ),
                _ => "no answer yet".into(),
            };
            let health = match (w.reachable, &w.last_error) {
                (Some(false), Some(e)) => format!(" (NOT answering: {e})"),
                (Some(true), _) => " (answering)".into(),
                _ => String::new(),
            };
            notes.push(format!(
                "{site}: witness {} {}{}: {seen}",
                w.kind,
                w.endpoints.join(","),
                health
            ));
            for m in &w.members {
                notes.push(format!(
                    "{site}:   etcd {}: {}",
                    m.endpoint,
                    match (&m.error, m.leader) {
                        (Some(e), _) => format!("NOT healthy: {e}"),
                        (None, true) => "healthy (leader)".into(),
                        (None, false) => "healthy".into(),
                    }
                ));
            }
        }
        for a in &d.alerts {
            notes.push(format!(
                "{site}: [{}] {} x{}: {}",
                a.severity.as_str(),
                a.kind.as_str(),
                a.count,
                a.text
            ));
        }
        if let Some(p) = &d.procedure {
            notes.push(format!(
                "{site}: {} in progress, step {}, for {}",
                p.kind,
                p.step,
                human_ms(p.running_ms)
            ));
        }
        for w in &d.work {
            notes.push(match w.work {
                WorkKind::Backup => match w.done {
                    Some(done) if w.size > 0 => format!(
                        "{site}: full backup of {} {} {} of {} MiB",
                        w.db,
                        bar(done, w.size),
                        done / (1 << 20),
                        w.size.div_ceil(1 << 20)
                    ),
                    _ => format!("{site}: full backup of {} ({} bytes)", w.db, w.size),
                },
                WorkKind::Restore | WorkKind::Reseed => format!(
                    "{site}: {} {} {}..{} {} bytes",
                    if w.work == WorkKind::Restore {
                        "restore"
                    } else {
                        "reseed"
                    },
                    w.db,
                    w.lsn_start,
                    w.lsn_end,
                    w.size
                ),
            });
        }
        notes.extend(transfer_lines(site, d));
        for st in d.streams.iter().filter(|st| st.receiving || st.running) {
            notes.push(format!(
                "{site}: stream of {} {}, received up to {}, {} start(s){}",
                st.db,
                if st.running {
                    "receiving"
                } else {
                    "not running"
                },
                opt(st.received_lsn),
                st.starts,
                st.last_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("; last error: {e}"))
            ));
        }
        let t = &d.thresholds;
        notes.push(format!(
            "{site}: thresholds: logs every {}; no new logs after {} min; restore alert after \
             {} attempts or {} min; critical after {} min; backlog over {} or {} min",
            human_ms(t.log_every_ms),
            t.no_new_logs_minutes,
            t.restore_alert_after_attempts,
            t.restore_alert_after_minutes,
            t.critical_after_minutes,
            t.backlog_count,
            t.backlog_age_minutes,
        ));
    }
    let widths: Vec<usize> = (0..head.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::doc::tests::sample;

    #[test]
    fn one_row_per_site_and_database_with_the_monitor_fields() {
        let t = render(&[
            ("a".into(), Ok(sample())),
            ("b".into(), Err("refused".into())),
        ]);
        let row = t.lines().nth(1).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "recovery",
                "secondary",
                "1",
                "no",
                "app",
                "20",
                "0",
                "1m00s",
                "app_2026_12_03_10_00_00_tlog_0",
                "1.5s",
                "app_2026_12_03_10_00_00_tlog_0",
                "1.2s",
                "app_2026_12_03_10_00_00_tlog_0",
                "40ms",
                "1",
                "ok"
            ],
            "{t}"
        );
        assert!(
            t.lines()
                .nth(2)
                .unwrap()
                .starts_with("b         UNREACHABLE"),
            "{t}"
        );
        assert!(t.contains("b: refused"), "{t}");
        assert!(t.contains("recovery: restore app 10..20 4096 bytes"), "{t}");
        assert!(t.contains("recovery: thresholds: logs every 5m00s"), "{t}");
    }

    #[test]
    fn progress_bars_fill_by_tens() {
        assert_eq!(bar(5, 10), "[#####.....]  50%");
        assert_eq!(bar(0, 0), "[##########] 100%");
    }

    #[test]
    fn transfers_show_a_bar_and_their_mebibytes() {
        assert_eq!(
            transfer_lines("recovery", &sample()),
            vec!["recovery: receiving app_2026_12_03_10_00_00_full_0 [##........]  25% 16/64 MiB"]
        );
    }
}
