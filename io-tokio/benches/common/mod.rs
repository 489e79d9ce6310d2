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
