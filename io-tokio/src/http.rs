//! The operator API's HTTP: hyper's HTTP/1.1 server over the deployment's TLS, and a reqwest
//! client for the CLI, HTTP probes and webhooks.
//!
//! Who may do what (enforced here, for every handler alike):
//!
//! - `GET` outside `/operator/` (`/status`, `/metrics`, `/health`) is open to anyone who can
//!   reach the address (over TLS when the deployment has it).
//! - Everything under `/operator/` and every method but `GET`/`HEAD` needs credentials: a client
//!   certificate of the deployment's CA (verified in the TLS handshake), or `Authorization:
//!   Bearer <token>` with the token of `[tls] api_token`. Otherwise `401`.
//! - Such requests from a browser page of another origin (`Origin`, `Sec-Fetch-Site:
//!   cross-site`) are refused with `403`, and a `POST` must carry a JSON object
//!   (`Content-Type: application/json`, which a page cannot send cross-origin without a
//!   preflight this server never answers). Its fields are the request's parameters.
//!
//! Handlers are async: an answer that takes a while (a status document built between two
//! batches of the engine loop, probes run now, a path ping) is awaited within
//! [`DEFERRED_TIMEOUT`].

use crate::transport::Tls;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tracing::{debug, warn};

/// Largest request or response body accepted.
pub const MAX_BODY: usize = 4 << 20;
/// A request's head must arrive within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an answer may take (the path ping's own limit is 60 s); then the client is
/// answered 504.
pub const DEFERRED_TIMEOUT: Duration = Duration::from_secs(90);

/// Who sent a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A client certificate of the deployment's CA: its party's name.
    Certificate(String),
    /// The bearer token of `[tls] api_token`.
    Token,
    /// Nobody known.
    Anonymous,
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query's `key=value` pairs (percent-decoded), then a JSON body's fields.
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub caller: Caller,
}

impl Request {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: serde_json::to_vec_pretty(value).unwrap_or_default(),
        }
    }
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
        }
    }
    fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

/// Split `http(s)://host:port/path?query` into (`host:port`, `/path?query`).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = hostport.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return None;
    }
    Some((hostport.to_string(), path.to_string()))
}

/// The bearer token of `[tls] api_token`, read at start.
#[derive(Clone)]
pub struct Token(Vec<u8>);

impl Token {
    /// Read a token file: it must be readable by its owner only (0600) and hold at least 16
    /// characters (surrounding whitespace ignored).
    pub fn load(path: &std::path::Path) -> Result<Token, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("the API token file {}: {e}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the API token file {} is readable by others (mode {mode:o}); `chmod 600` it",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("the API token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(format!(
                "the API token in {} is shorter than 16 characters; use e.g. `openssl rand -hex 32`",
                path.display()
            ));
        }
        Ok(Token(token.as_bytes().to_vec()))
    }

    pub fn new(token: &str) -> Token {
        Token(token.as_bytes().to_vec())
    }

    /// Constant-time comparison with a presented token.
    fn matches(&self, presented: &[u8]) -> bool {
        presented.len() == self.0.len()
            && presented
                .iter()
                .zip(&self.0)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// How a server is reached and who may change things: its TLS (none: plain HTTP, only with
/// `insecure = true`) and the optional bearer token.
#[derive(Clone, Default)]
pub struct Access {
    pub tls: Option<Arc<Tls>>,
    pub token: Option<Token>,
}

/// Serve until the task is dropped. `handler` is called once per request that passed the
/// access rules; its future runs within [`DEFERRED_TIMEOUT`].
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>, access: Access)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let access = Arc::new(access);
    // Connections still in their TLS handshake, bounded like the transport's.
    let handshakes = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(place) = handshakes.clone().try_acquire_owned() else {
            debug!(%addr, "http: too many connections in their handshake; closed");
            continue;
        };
        let (handler, access) = (handler.clone(), access.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (io, who): (crate::transport::tls::Stream, Option<String>) = match &access.tls {
                None => (Box::new(stream), None),
                Some(tls) => {
                    match tokio::time::timeout(REQUEST_TIMEOUT, tls.accept_http(stream)).await {
                        Ok(Ok(x)) => x,
                        Ok(Err(e)) => return debug!(%addr, error = %e, "http: refused"),
                        Err(_) => return debug!(%addr, "http: no TLS handshake in time"),
                    }
                }
            };
            drop(place);
            if let Err(e) = serve_connection(io, who, handler, access).await {
                debug!(%addr, error = %e, "http connection ended");
            }
        });
    }
}

/// Serve the requests of one connection (a TLS stream or plain TCP; anything that reads and
/// writes, so the fuzz target drives it with arbitrary bytes). `who` is the party of the
/// client certificate the TLS handshake verified.
pub async fn serve_connection<IO, H, F>(
    io: IO,
    who: Option<String>,
    handler: Arc<H>,
    access: Arc<Access>,
) -> Result<(), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let (handler, access, who) = (handler.clone(), access.clone(), who.clone());
        async move {
            let answer = handle(req, who, &*handler, &access).await;
            Ok::<_, Infallible>(to_hyper(answer))
        }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        // A client may shut its write side once it sent the request; it still gets the answer.
        .half_close(true)
        .max_buf_size(64 << 10)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .await
}

fn to_hyper(r: Response) -> hyper::Response<Full<Bytes>> {
    let mut out = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *out.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(r.content_type));
    if r.status == 401 {
        out.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lifeboat\""),
        );
    }
    out
}

/// Whether a request changes anything or reads an agent's inside (logs): it needs
/// credentials.
fn needs_credentials(method: &hyper::Method, path: &str) -> bool {
    !matches!(*method, hyper::Method::GET | hyper::Method::HEAD) || path.starts_with("/operator/")
}

/// A browser page of another origin: it sends `Origin` (or `Sec-Fetch-Site: cross-site`).
/// Command-line clients send neither.
fn cross_origin(h: &hyper::HeaderMap) -> bool {
    let site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    h.contains_key(ORIGIN) || site.is_some_and(|s| s != "same-origin" && s != "none")
}

async fn handle<H, F>(
    req: hyper::Request<hyper::body::Incoming>,
    who: Option<String>,
    handler: &H,
    access: &Access,
) -> Response
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut query: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let caller = match (&who, bearer(&parts.headers), &access.token) {
        (Some(name), _, _) => Caller::Certificate(name.clone()),
        (None, Some(presented), Some(token)) if token.matches(presented) => Caller::Token,
        _ => Caller::Anonymous,
    };
    let guarded = needs_credentials(&parts.method, &path);
    if guarded && cross_origin(&parts.headers) {
        return Response::error(
            403,
            "cross-origin requests are refused: operator requests come from the lifeboat CLI \
             or a script, never from a web page",
        );
    }
    if guarded && caller == Caller::Anonymous {
        let how = if access.tls.is_some() {
            "a client certificate of the deployment's CA (lifeboat --config site.toml) or \
             `Authorization: Bearer <token>` ([tls] api_token)"
        } else {
            "`Authorization: Bearer <token>` ([tls] api_token)"
        };
        return Response::error(401, format!("{path} needs credentials: {how}"));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            return Response::error(
                413,
                format!("the body could not be read within {MAX_BODY} bytes: {e}"),
            )
        }
    };
    if parts.method == hyper::Method::POST {
        let json = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        if !json {
            return Response::error(
                415,
                "a POST carries a JSON object: `Content-Type: application/json`",
            );
        }
        match json_params(&body) {
            Ok(fields) => query.extend(fields),
            Err(e) => return Response::error(400, e),
        }
    }
    let request = Request {
        method: parts.method.as_str().to_string(),
        path,
        query,
        body,
        caller,
    };
    tokio::time::timeout(DEFERRED_TIMEOUT, handler(request))
        .await
        .unwrap_or_else(|_| {
            Response::error(
                504,
                format!("no answer within {DEFERRED_TIMEOUT:?}; try again"),
            )
        })
}

fn bearer(h: &hyper::HeaderMap) -> Option<&[u8]> {
    let v = h.get(AUTHORIZATION)?.as_bytes();
    v.strip_prefix(b"Bearer ")
}

/// A JSON object's fields as parameters: strings as they are, numbers and booleans as text.
/// An empty body is an empty object.
pub fn json_params(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let serde_json::Value::Object(map) = v else {
        return Err("the body must be a JSON object of parameters".into());
    };
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, s)),
            serde_json::Value::Bool(b) => Ok((k, b.to_string())),
            serde_json::Value::Number(n) => Ok((k, n.to_string())),
            serde_json::Value::Null => Ok((k, String::new())),
            _ => Err(format!(
                "parameter {k:?} must be a string, a number or a boolean"
            )),
        })
        .collect()
}

/// An HTTP client: to the agents (over the deployment's TLS with this party's certificate when
/// it has one, plain HTTP otherwise), or to anything else (probes, webhooks: the system's public
/// roots for `https://`).
#[derive(Clone)]
pub struct Client {
    inner: reqwest::Client,
    /// The agents speak HTTPS.
    https: bool,
    token: Option<Token>,
}

impl Client {
    /// To the agents of this deployment.
    pub fn agents(tls: Option<&Tls>, token: Option<Token>) -> Result<Client, String> {
        let b = reqwest::Client::builder().no_proxy();
        let inner = match tls {
            Some(t) => b.use_preconfigured_tls(t.client_config()),
            None => b,
        }
        .build()
        .map_err(|e| format!("an HTTP client: {e}"))?;
        Ok(Client {
            inner,
            https: tls.is_some(),
            token,
        })
    }

    /// To anything else: `http://`, or `https://` verified against the public roots.
    pub fn public() -> Client {
        Client {
            inner: reqwest::Client::builder()
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            https: false,
            token: None,
        }
    }

    /// `https://addr/path` for an agent of a TLS deployment, `http://` otherwise.
    pub fn agent_url(&self, addr: &str, path: &str) -> String {
        format!(
            "{}://{addr}{path}",
            if self.https { "https" } else { "http" }
        )
    }

    /// One request; the status and body of the answer (at most [`MAX_BODY`] bytes). A `POST`
    /// carries `json` (an empty object when `None`).
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        json: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), String> {
        parse_url(url).ok_or_else(|| format!("{url:?} is not an http(s)://host:port URL"))?;
        let m = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        let mut rb = self.inner.request(m.clone(), url).timeout(timeout);
        if let Some(t) = &self.token {
            rb = rb.bearer_auth(t.as_str());
        }
        if m == reqwest::Method::POST {
            let empty = serde_json::json!({});
            let body = serde_json::to_vec(json.unwrap_or(&empty)).unwrap_or_default();
            rb = rb.header(CONTENT_TYPE, "application/json").body(body);
        }
        let mut resp = rb.send().await.map_err(|e| describe(url, &e))?;
        let status = resp.status().as_u16();
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(format!(
                "{url} answered with a body larger than the {MAX_BODY}-byte limit"
            ));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe(url, &e))? {
            if out.len() + chunk.len() > MAX_BODY {
                return Err(format!(
                    "{url} answered with a body larger than the {MAX_BODY}-byte limit"
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok((status, out))
    }
}

/// A reqwest error with its causes (the TLS reason, the refused connection).
fn describe(url: &str, e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut s = if e.is_timeout() {
        format!("{url}: no answer in time")
    } else {
        format!("{url}: {e}")
    };
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        assert_eq!(
            parse_url("http://127.0.0.1:80/a?b=1"),
            Some(("127.0.0.1:80".into(), "/a?b=1".into()))
        );
        assert_eq!(parse_url("http://h:1"), Some(("h:1".into(), "/".into())));
        assert_eq!(parse_url("https://h:1/"), Some(("h:1".into(), "/".into())));
        assert_eq!(parse_url("http://h/"), None);
        assert_eq!(parse_url("ftp://h:1/"), None);
    }

    fn echo() -> Arc<impl Fn(Request) -> std::future::Ready<Response> + Send + Sync + 'static> {
        Arc::new(|r: Request| {
            std::future::ready(Response::text(
                200,
                format!("{} {} {:?} {:?}", r.method, r.path, r.param("x"), r.caller),
            ))
        })
    }

    async fn server(access: Access) -> (String, tokio::task::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        (addr, tokio::spawn(serve(l, echo(), access)))
    }

    #[tokio::test]
    async fn reads_are_open_changes_need_a_token_and_parameters_come_decoded() {
        let token = Token::new("0123456789abcdef0123");
        let (addr, task) = server(Access {
            tls: None,
            token: Some(token.clone()),
        })
        .await;
        let t = Duration::from_secs(5);
        let anon = Client::agents(None, None).unwrap();
        let url = |p: &str| anon.agent_url(&addr, p);
        let (status, body) = anon
            .request("GET", &url("/status?x=a%26b+c"), None, t)
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "GET /status Some(\"a&b c\") Anonymous"
        );
        for (m, p) in [("POST", "/operator/pause"), ("GET", "/operator/logs")] {
            let (status, body) = anon.request(m, &url(p), None, t).await.unwrap();
            assert_eq!(status, 401, "{m} {p}: {}", String::from_utf8_lossy(&body));
        }
        let wrong = Client::agents(None, Some(Token::new("0123456789abcdef0124"))).unwrap();
        let (status, _) = wrong
            .request("POST", &url("/operator/pause"), None, t)
            .await
            .unwrap();
        assert_eq!(status, 401);
        let ok = Client::agents(None, Some(token)).unwrap();
        let json = serde_json::json!({"x": 7});
        let (status, body) = ok
            .request("POST", &url("/operator/pause"), Some(&json), t)
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "POST /operator/pause Some(\"7\") Token"
        );
        task.abort();
    }

    #[tokio::test]
    async fn a_browser_page_of_another_origin_and_a_form_post_are_refused() {
        let token = Token::new("0123456789abcdef0123");
        let (addr, task) = server(Access {
            tls: None,
            token: Some(token.clone()),
        })
        .await;
        let c = reqwest::Client::new();
        let url = format!("http://{addr}/operator/pause");
        let r = c
            .post(&url)
            .bearer_auth(token.as_str())
            .header("Origin", "https://evil.example")
            .header(CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        let r = c
            .post(&url)
            .bearer_auth(token.as_str())
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("x=1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 415);
        let r = c
            .post(&url)
            .bearer_auth(token.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body("[1]")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400);
        task.abort();
    }

    #[test]
    fn a_token_file_readable_by_others_or_too_short_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Token::load(&p).err().unwrap().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Token::load(&p).unwrap().as_str(), "0123456789abcdef0123");
        std::fs::write(&p, "short").unwrap();
        assert!(Token::load(&p).err().unwrap().contains("shorter than 16"));
    }
}
