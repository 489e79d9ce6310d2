//! Alert sinks: every alert event goes to the structured log, and to each configured exec hook
//! and webhook. Sinks run off the engine loop; a slow or failing sink never delays a decision.

use crate::config::SinkConfig;
use crate::http;
use crate::status::doc::AlertDoc;
use lifeboat_core::alert::{AlertChange, Severity};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Time limit of one webhook POST or exec hook.
pub const SINK_TIMEOUT: Duration = Duration::from_secs(10);
/// Alerts waiting for slow sinks; beyond this a new alert reaches the structured log only (see
/// [`send`]).
const SINK_QUEUE: usize = 1024;

/// Hand an alert to the sinks. When they are so far behind that the queue is full, the alert
/// is written to the structured log here, with a warning that hooks and webhooks missed it:
/// never dropped without a trace.
pub fn send(tx: &mpsc::Sender<AlertDoc>, doc: AlertDoc) {
    if let Err(e) = tx.try_send(doc) {
        let doc = match e {
            mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d) => d,
        };
        log_alert(&doc);
        warn!(
            alert = doc.kind.as_str(),
            waiting = SINK_QUEUE,
            "the alert hooks and webhooks are behind: this alert reached the log only"
        );
    }
}

/// Start the sink task; send alert documents into the returned channel. Every sink receives
/// the document as JSON ([`AlertDoc`]).
pub fn start(sinks: Vec<SinkConfig>) -> mpsc::Sender<AlertDoc> {
    let (tx, mut rx) = mpsc::channel::<AlertDoc>(SINK_QUEUE);
    let client = http::Client::public();
    tokio::spawn(async move {
        while let Some(doc) = rx.recv().await {
            log_alert(&doc);
            let body = serde_json::to_vec(&doc).unwrap_or_default();
            for s in &sinks {
                match s {
                    SinkConfig::Log => {}
                    SinkConfig::Exec { command } => {
                        if let Err(e) = exec_hook(command, &doc, &body).await {
                            warn!(command = ?command, error = %e, "alert exec hook failed");
                        }
                    }
                    SinkConfig::Webhook { url } => {
                        let json = serde_json::to_value(&doc).unwrap_or_default();
                        match client.request("POST", url, Some(&json), SINK_TIMEOUT).await {
                            Ok((s, _)) if (200..300).contains(&s) => {}
                            Ok((s, _)) => warn!(%url, status = s, "webhook refused the alert"),
                            Err(e) => warn!(%url, error = %e, "webhook failed"),
                        }
                    }
                }
            }
        }
    });
    tx
}

fn log_alert(doc: &AlertDoc) {
    let (alert, severity, change) = (
        doc.kind.as_str(),
        doc.severity.as_str(),
        doc.change.as_str(),
    );
    let (count, text) = (doc.count, &doc.text);
    match (doc.change, doc.severity) {
        (AlertChange::Cleared, _) => info!(alert, severity, change, count, "{text}"),
        (_, Severity::Critical | Severity::Failure) => {
            error!(alert, severity, change, count, "{text}")
        }
        (_, Severity::Warning) => warn!(alert, severity, change, count, "{text}"),
    }
}

/// An alert's exec sink: the document as JSON on stdin and the main fields in the environment,
/// no shell, killed with its process group after [`SINK_TIMEOUT`].
async fn exec_hook(command: &[String], doc: &AlertDoc, body: &[u8]) -> Result<(), String> {
    let prog = command.first().ok_or("empty command")?.clone();
    let env: Vec<(String, String)> = [
        ("LIFEBOAT_ALERT_KIND", doc.kind.as_str().to_string()),
        ("LIFEBOAT_ALERT_SEVERITY", doc.severity.as_str().to_string()),
        ("LIFEBOAT_ALERT_CHANGE", doc.change.as_str().to_string()),
        ("LIFEBOAT_ALERT_TEXT", doc.text.clone()),
        ("LIFEBOAT_ALERT_SITE", doc.site.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (argv, input) = (command.to_vec(), body.to_vec());
    let done = tokio::task::spawn_blocking(move || {
        crate::process::group::run_with_input(&argv, &env, Some(input), SINK_TIMEOUT)
    })
    .await
    .map_err(|e| format!("the sink's thread failed: {e}"))?
    .map_err(|e| format!("cannot start {prog}: {e}"))?;
    if done.timed_out {
        Err(format!(
            "{prog} ran longer than {SINK_TIMEOUT:?} and was killed with its process group"
        ))
    } else if done.status != 0 {
        Err(format!(
            "{prog} exited with {}: {}",
            done.status,
            crate::process::group::last_lines(&done.stderr, crate::process::STDERR_LINES)
        ))
    } else {
        Ok(())
    }
}

/// Run a hook command (fence, identity, restart) with its placeholders (checked when the
/// configuration loaded), off the async threads; the exit code and stderr come back as the
/// failure, and a hook that runs too long is killed with its whole process group.
pub async fn run_hook(
    command: &[String],
    allowed: &'static [&'static str],
    vars: &[(&'static str, String)],
    timeout: Duration,
) -> Result<(), (i32, String)> {
    let template = crate::process::CommandTemplate::Argv(command.to_vec());
    let vars = vars.to_vec();
    tokio::task::spawn_blocking(move || {
        crate::process::run_hook(&template, allowed, &vars, timeout)
    })
    .await
    .unwrap_or_else(|e| Err((1, format!("the hook's thread failed: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Hooks;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_hook_gets_its_placeholders_and_its_exit_code_and_stderr_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("echo \"$0 $1\" > {}", out.display());
        let cmd = argv(&["sh", "-c", &script, "{target}", "{epoch}"]);
        let vars = [
            ("target", "recovery".to_string()),
            ("epoch", "7".to_string()),
        ];
        run_hook(&cmd, Hooks::FENCE_VARS, &vars, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "recovery 7\n");
        let failing = argv(&["sh", "-c", "echo no power switch >&2; exit 3"]);
        let (code, msg) = run_hook(&failing, Hooks::FENCE_VARS, &[], Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(code, 3);
        assert!(msg.contains("no power switch"), "{msg}");
    }

    #[tokio::test]
    async fn an_alert_exec_sink_gets_the_document_on_stdin_and_its_fields_in_the_environment() {
        let doc = crate::status::doc::tests::sample().recent_alerts[0].clone();
        let body = serde_json::to_vec(&doc).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "cat > {0}; echo \"$LIFEBOAT_ALERT_KIND $LIFEBOAT_ALERT_SEVERITY $LIFEBOAT_ALERT_CHANGE\" >> {0}",
            out.display()
        );
        exec_hook(&argv(&["sh", "-c", &script]), &doc, &body)
            .await
            .unwrap();
        let got = std::fs::read_to_string(&out).unwrap();
        let (json, env) = got.split_at(body.len());
        assert_eq!(json.as_bytes(), body);
        assert_eq!(env, "missing_log failure raised\n");
        let err = exec_hook(
            &argv(&["sh", "-c", "echo no pager >&2; exit 5"]),
            &doc,
            &body,
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("exited with 5") && err.contains("no pager"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_with_the_children_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        // The hook starts a grandchild that would outlive a kill of the direct child alone.
        let script = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
        let cmd = argv(&["sh", "-c", &script]);
        let t = std::time::Instant::now();
        let (code, msg) = run_hook(&cmd, Hooks::RESTART_VARS, &[], Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(code, 124, "{msg}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid = pid.trim();
        // The grandchild is gone (or a zombie about to be reaped by init).
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "the hook's child {pid} outlived the time limit");
    }
}
