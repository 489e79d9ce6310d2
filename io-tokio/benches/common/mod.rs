//! What the benches that start real `lifeboat` processes share.

use serde_json::Value;
use std::process::Child;

#[path = "../../tests/common/https.rs"]
mod https;

/// An agent's `/status` as JSON (`None` while it does not answer). Over the agents' TLS; the
/// benches read only, so the certificate is not verified.
pub fn status(port: u16) -> Option<Value> {
    let (_, body) = https::https("GET", port, "/status", None, None, None)?;
    serde_json::from_slice(&body).ok()
}

/// Child processes, killed and reaped when dropped (a bench that fails leaves none behind).
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh `wal-push` spool in `spool` for database `bench`: its directories and the
/// `wal.toml` that `lifeboat wal-push --config` reads. Returns that file.
#[allow(dead_code)] // the PostgreSQL benches only
pub fn wal_push_spool(spool: &std::path::Path) -> Result<std::path::PathBuf, String> {
    for d in ["push", "history", "aside", "serve"] {
        std::fs::create_dir_all(spool.join(d))
            .map_err(|e| format!("creating {}: {e}", spool.join(d).display()))?;
    }
    let config = spool.join("wal.toml");
    let text = format!(
        "format_version = 1\ndb = \"bench\"\nspool = {:?}\n",
        spool.display().to_string()
    );
    std::fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
    Ok(config)
}
