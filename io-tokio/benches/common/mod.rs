//! What the benches that start real `lifeboat` processes share.

use serde_json::Value;
use std::process::Child;
use std::time::Duration;

/// An agent's `/status` as JSON (`None` while it does not answer). Over the agents' TLS; the
/// benches read only, so the certificate is not verified.
pub fn status(port: u16) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let r = client
            .get(format!("https://127.0.0.1:{port}/status"))
            .send()
            .await
            .ok()?;
        serde_json::from_slice(&r.bytes().await.ok()?).ok()
    })
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
