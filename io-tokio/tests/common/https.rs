//! One HTTPS request to an agent on loopback, shared by the tests and the benches
//! (`benches/common` includes this file).

use std::time::Duration;

/// An HTTPS request to an agent on loopback, as an anonymous client that reads (the agents'
/// certificates are not verified here: the tests read, and the CLI's tests check the TLS);
/// a JSON body for a POST, and an optional bearer token. (status, body).
pub fn https(
    method: &str,
    port: u16,
    path: &str,
    json: Option<&str>,
    token: Option<&str>,
    origin: Option<&str>,
) -> Option<(u16, Vec<u8>)> {
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
        let m = reqwest::Method::from_bytes(method.as_bytes()).ok()?;
        let mut rb = client.request(m, format!("https://127.0.0.1:{port}{path}"));
        if let Some(j) = json {
            rb = rb
                .header("Content-Type", "application/json")
                .body(j.to_string());
        }
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(o) = origin {
            rb = rb.header("Origin", o);
        }
        let r = rb.send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.bytes().await.ok()?.to_vec()))
    })
}
