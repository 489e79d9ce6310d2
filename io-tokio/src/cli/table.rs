//! `lifeboat status` as one table for all sites, like a log-shipping monitor: per site and
//! database the time since the last backup / copy / restore, the last file of each, the restore
//! latency, the backlog and the alert state; then thresholds, active alerts and work in progress.

use serde_json::Value;

fn ago(v: &Value) -> String {
    match v["ago_ms"].as_u64() {
        None => "-".into(),
        Some(ms) => human_ms(ms),
    }
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

fn file(v: &Value) -> String {
    v["file"].as_str().unwrap_or("-").to_string()
}

fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
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
pub fn transfer_lines(site: &str, doc: &Value) -> Vec<String> {
    doc["transfers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let size = t["size"].as_u64().unwrap_or(0);
            let done = t["done"].as_u64().unwrap_or(0);
            let verb = match t["direction"].as_str() {
                Some("send") => "sending",
                _ => "receiving",
            };
            format!(
                "{site}: {verb} {} {} {}/{} MiB",
                t["file"].as_str().unwrap_or("?"),
                bar(done, size),
                done >> 20,
                size >> 20
            )
        })
        .collect()
}

pub fn render(sites: &[(String, Result<Value, String>)]) -> String {
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
        let site = d["site"].as_str().unwrap_or("?").to_string();
        let alerts = d["alerts"].as_array().cloned().unwrap_or_default();
        for db in d["databases"].as_array().into_iter().flatten() {
            let name = db["name"].as_str().unwrap_or("?");
            let db_alerts: Vec<String> = alerts
                .iter()
                .filter(|a| a["db"].as_str() == Some(name) || a["db"].is_null())
                .map(|a| {
                    format!(
                        "{}:{}",
                        a["kind"].as_str().unwrap_or("?"),
                        a["severity"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            rows.push(vec![
                site.clone(),
                opt(&d["role"]),
                opt(&d["epoch"]),
                if d["writable"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
                name.to_string(),
                opt(&db["restored_lsn"]),
                if d["writable"].as_bool() == Some(true) || d["role"] == "primary" {
                    opt(&db["write_lsn"])
                } else {
                    opt(&db["known_produced_lsn"])
                },
                ago(&db["last_backup"]),
                file(&db["last_backup"]),
                ago(&db["last_copy"]),
                file(&db["last_copy"]),
                ago(&db["last_restore"]),
                file(&db["last_restore"]),
                db["restore_latency_ms"]
                    .as_u64()
                    .map_or("-".into(), human_ms),
                opt(&db["backlog"]),
                if db_alerts.is_empty() {
                    "ok".into()
                } else {
                    db_alerts.join(",")
                },
            ]);
        }
        for a in &alerts {
            notes.push(format!(
                "{site}: [{}] {} x{}: {}",
                a["severity"].as_str().unwrap_or("?"),
                a["kind"].as_str().unwrap_or("?"),
                a["count"],
                a["text"].as_str().unwrap_or("")
            ));
        }
        if let Some(p) = d["procedure"].as_object() {
            notes.push(format!(
                "{site}: {} in progress, step {}, for {}",
                p.get("kind").map(opt).unwrap_or_default(),
                p.get("step").map(opt).unwrap_or_default(),
                human_ms(p.get("running_ms").and_then(Value::as_u64).unwrap_or(0))
            ));
        }
        for w in d["work"].as_array().into_iter().flatten() {
            let size = w["size"].as_u64().unwrap_or(0);
            let done = w["done"].as_u64().unwrap_or(0);
            notes.push(format!(
                "{site}: {} {} {}",
                opt(&w["work"]),
                w["file"].as_str().or(w["db"].as_str()).unwrap_or(""),
                if done > 0 {
                    bar(done, size)
                } else {
                    format!("{size} bytes")
                }
            ));
        }
        notes.extend(transfer_lines(&site, d));
        if let Some(t) = d["thresholds"].as_object() {
            notes.push(format!(
                "{site}: thresholds: logs every {}; no new logs after {} min; restore alert after \
                 {} attempts or {} min; critical after {} min; backlog over {} or {} min",
                human_ms(t.get("log_every_ms").and_then(Value::as_u64).unwrap_or(0)),
                t.get("no_new_logs_minutes").map(opt).unwrap_or_default(),
                t.get("restore_alert_after_attempts")
                    .map(opt)
                    .unwrap_or_default(),
                t.get("restore_alert_after_minutes")
                    .map(opt)
                    .unwrap_or_default(),
                t.get("critical_after_minutes").map(opt).unwrap_or_default(),
                t.get("backlog_count").map(opt).unwrap_or_default(),
                t.get("backlog_age_minutes").map(opt).unwrap_or_default(),
            ));
        }
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
    use serde_json::json;

    #[test]
    fn one_row_per_site_and_database_with_the_monitor_fields() {
        let d = json!({"site": "recovery", "role": "secondary", "epoch": 1, "writable": false,
            "databases": [{"name": "app", "restored_lsn": 10, "known_produced_lsn": 12,
              "last_copy": {"file": "app_2026_11_22_03_05_00_tlog_0", "ago_ms": 1500},
              "restore_latency_ms": 40, "backlog": 1}],
            "alerts": []});
        let t = render(&[("a".into(), Ok(d)), ("b".into(), Err("refused".into()))]);
        assert!(
            t.contains("recovery") && t.contains("app_2026_11_22_03_05_00_tlog_0"),
            "{t}"
        );
        assert!(
            t.contains("1.5s") && t.contains("40ms") && t.contains("UNREACHABLE"),
            "{t}"
        );
    }

    #[test]
    fn progress_bars_fill_by_tens() {
        assert_eq!(bar(5, 10), "[#####.....]  50%");
        assert_eq!(bar(0, 0), "[##########] 100%");
    }

    #[test]
    fn transfers_show_a_bar_and_their_mebibytes() {
        let doc = serde_json::json!({"transfers": [
            {"direction": "receive", "file": "sales_2026_11_22_03_05_00_full_0", "size": 64u64 << 20,
             "done": 16u64 << 20, "resumed_from": 0},
        ]});
        assert_eq!(
            transfer_lines("recovery", &doc),
            vec![
                "recovery: receiving sales_2026_11_22_03_05_00_full_0 [##........]  25% 16/64 MiB"
            ]
        );
    }
}
