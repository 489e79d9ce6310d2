//! A clean stop on `SIGTERM` (and `SIGINT`): the engine loops stop between two batches, so the
//! journal ends on a whole, synced batch and nothing is half-decided; the process exits 0.
//! Commands already handed to the executor end with the process, as after a crash: the engine
//! re-issues what it did not see complete when it restarts (`Restarted`).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves when the process is asked to stop; never, if the handlers cannot be installed.
pub async fn requested() -> &'static str {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
