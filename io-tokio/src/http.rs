//! A minimal HTTP/1.1 server and client over tokio TCP: enough for `/status`, `/metrics`,
//! `/health`, operator requests, HTTP probes and webhooks, without a web framework.
//! One request per connection (`Connection: close`), bodies bounded.
//!
//! Handlers are async: an answer that takes a while (a status document built between two
//! batches of the engine loop, probes run now, a path ping) is awaited by the connection's task,
//! within [`DEFERRED_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// Largest request or response body accepted.
pub const MAX_BODY: usize = 4 << 20;
/// Most header lines after the request (or status) line.
pub const MAX_HEADER_LINES: usize = 100;
/// Longest request, status or header line, its line end included (8 KiB).
pub const MAX_LINE: usize = 8 << 10;
/// The most bytes a request's head can take: the request line, [`MAX_HEADER_LINES`] headers
/// and the blank line that ends them, every one full.
pub const MAX_HEAD: usize = MAX_LINE * (MAX_HEADER_LINES + 2);
/// A body buffer starts at most this large and grows as the bytes arrive, so a request that
/// announces a large body and sends none costs little.
const BODY_FIRST_READ: usize = 64 << 10;
/// A request must arrive within this, and its answer must be written within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an answer may take (the path ping's own limit is 60 s); then the client is
/// answered 504.
pub const DEFERRED_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request (or an answer's head) could not be read. Every limit is checked before the
/// bytes past it are buffered.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("reading the {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the {what} is longer than {MAX_LINE} bytes")]
    LineTooLong { what: &'static str },
    #[error("the {what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("too many header lines (more than {MAX_HEADER_LINES})")]
    TooManyHeaders,
    #[error("bad Content-Length {found:?}")]
    BadContentLength { found: String },
    #[error("empty request line")]
    EmptyRequestLine,
    #[error("no request target")]
    NoTarget,
    #[error("body of {len} bytes exceeds {MAX_BODY}")]
    BodyTooLarge { len: usize },
    #[error("the body ended after {got} of {len} bytes")]
    BodyTruncated { got: usize, len: usize },
}

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// `key=value` pairs of the query string (no percent-decoding beyond `+` and `%20`).
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
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
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        504 => "Gateway Timeout",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Split `http://host:port/path?query` into (`host:port`, `/path?query`).
pub fn parse_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
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

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| s.replace('+', " ").replace("%20", " ");
            (dec(k), dec(v))
        })
        .collect()
}

/// Serve until the task is dropped. `handler` is called once per request; its future runs
/// within the request's time limit.
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>)
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = handle_conn(stream, handler).await {
                debug!(%addr, error = %e, "http request failed");
            }
        });
    }
}

/// Read one request within [`REQUEST_TIMEOUT`], answer it within [`DEFERRED_TIMEOUT`], write
/// the answer within [`REQUEST_TIMEOUT`].
async fn handle_conn<H, F>(stream: TcpStream, handler: Arc<H>) -> std::io::Result<()>
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_request(&mut r)).await {
        Ok(Ok(req)) => answer(&*handler, req).await,
        Ok(Err(msg)) => Response::text(400, format!("{msg}\n")),
        Err(_) => return Err(std::io::Error::other("the request did not arrive in time")),
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    let write = async {
        w.write_all(head.as_bytes()).await?;
        w.write_all(&response.body).await?;
        w.shutdown().await
    };
    tokio::time::timeout(REQUEST_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::other("the answer could not be written in time"))?
}

/// The handler's answer, within [`DEFERRED_TIMEOUT`].
async fn answer<H, F>(handler: &H, req: Request) -> Response
where
    H: Fn(Request) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    tokio::time::timeout(DEFERRED_TIMEOUT, handler(req))
        .await
        .unwrap_or_else(|_| {
            Response::text(
                504,
                format!("no answer within {DEFERRED_TIMEOUT:?}; try again\n"),
            )
        })
}

/// One line, its line end included, of at most [`MAX_LINE`] bytes: never buffers more. Empty at
/// the end of the stream; the last line may lack its line end.
async fn read_line_bounded<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    what: &'static str,
) -> Result<String, HttpError> {
    let mut line = Vec::new();
    (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|source| HttpError::Io { what, source })?;
    if line.len() == MAX_LINE && line.last() != Some(&b'\n') {
        return Err(HttpError::LineTooLong { what });
    }
    String::from_utf8(line).map_err(|_| HttpError::NotUtf8 { what })
}

/// The first line and the Content-Length (0 when absent) of a request or an answer. Reads at
/// most [`MAX_HEAD`] bytes.
async fn read_headers<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    first_what: &'static str,
) -> Result<(String, usize), HttpError> {
    let first = read_line_bounded(r, first_what).await?;
    let mut len = 0usize;
    for n in 0..=MAX_HEADER_LINES {
        let line = read_line_bounded(r, "header line").await?;
        if line.is_empty() || line == "\r\n" || line == "\n" {
            return Ok((first, len));
        }
        if n == MAX_HEADER_LINES {
            return Err(HttpError::TooManyHeaders);
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| HttpError::BadContentLength {
                    found: v.trim().to_string(),
                })?;
            }
        }
    }
    Err(HttpError::TooManyHeaders)
}

/// Read one request: its head (at most [`MAX_HEAD`] bytes: [`MAX_LINE`] per line,
/// [`MAX_HEADER_LINES`] headers) and a body of its Content-Length (at most [`MAX_BODY`]). The
/// body's buffer grows with the bytes that arrive, not with the length announced. Reads nothing
/// past the body.
pub async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Request, HttpError> {
    let (first, len) = read_headers(r, "request line").await?;
    let mut parts = first.split_whitespace();
    let method = parts.next().ok_or(HttpError::EmptyRequestLine)?.to_string();
    let target = parts.next().ok_or(HttpError::NoTarget)?;
    if len > MAX_BODY {
        return Err(HttpError::BodyTooLarge { len });
    }
    let mut body = Vec::with_capacity(len.min(BODY_FIRST_READ));
    (&mut *r)
        .take(len as u64)
        .read_to_end(&mut body)
        .await
        .map_err(|source| HttpError::Io {
            what: "body",
            source,
        })?;
    if body.len() != len {
        return Err(HttpError::BodyTruncated {
            got: body.len(),
            len,
        });
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request {
        method,
        path: path.to_string(),
        query: parse_query(query),
        body,
    })
}

/// One HTTP request; the status and body of the answer.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let (hostport, path) =
        parse_url(url).ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
    let fut = async {
        let mut s = TcpStream::connect(&hostport)
            .await
            .map_err(|e| format!("cannot connect to {hostport}: {e}"))?;
        let (ctype, bytes) = body.unwrap_or(("text/plain", &[]));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: {ctype}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| format!("writing to {hostport}: {e}"))?;
        s.write_all(bytes)
            .await
            .map_err(|e| format!("writing to {hostport}: {e}"))?;
        let mut r = BufReader::new(s);
        let (status_line, len) = read_headers(&mut r, "status line")
            .await
            .map_err(|e| format!("{hostport} answered: {e}"))?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("{hostport} answered {status_line:?}, not HTTP"))?;
        let mut out = Vec::new();
        if len > MAX_BODY {
            return Err(format!(
                "{hostport} answered with a {len}-byte body, more than the {MAX_BODY}-byte limit"
            ));
        }
        if len > 0 {
            // Grows with what arrives: the announced length is not trusted for an allocation.
            (&mut r)
                .take(len as u64)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("reading from {hostport}: {e}"))?;
            if out.len() < len {
                return Err(format!(
                    "{hostport} announced {len} bytes and closed after {}",
                    out.len()
                ));
            }
        } else {
            r.take(MAX_BODY as u64)
                .read_to_end(&mut out)
                .await
                .map_err(|e| format!("reading from {hostport}: {e}"))?;
        }
        Ok((status, out))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| format!("{url}: no answer within {timeout:?}"))?
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
        assert_eq!(parse_url("https://h:1/"), None);
        assert_eq!(parse_url("http://h/"), None);
    }

    #[tokio::test]
    async fn a_request_reaches_the_handler_and_the_answer_comes_back() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = Arc::new(|r: Request| async move {
            Response::text(200, format!("{} {} {:?}", r.method, r.path, r.param("x")))
        });
        let task = tokio::spawn(serve(l, h));
        let (status, body) = request(
            "POST",
            &format!("http://{addr}/p?x=7"),
            Some(("text/plain", b"hi")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(String::from_utf8(body).unwrap(), "POST /p Some(\"7\")");
        task.abort();
    }

    #[tokio::test]
    async fn a_slow_answer_is_awaited_and_sent() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = Arc::new(|r: Request| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Response::text(200, format!("later {}", r.path))
        });
        let task = tokio::spawn(serve(l, h));
        let url = format!("http://{addr}/slow");
        let (status, body) = request("GET", &url, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((status, body), (200, b"later /slow".to_vec()));
        task.abort();
    }
}
