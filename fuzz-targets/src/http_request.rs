//! Fuzz body for the operator API's HTTP server (`lifeboat_io_tokio::http::serve_connection`:
//! hyper's HTTP/1.1 parser plus lifeboat's access rules), what any client of `/status`,
//! `/metrics` and the operator endpoints can send. The server runs on a current-thread runtime
//! over an in-memory duplex; the bytes are written and the write side closed.
//!
//! The first byte picks what the rest is:
//! - `0`: the request's bytes, as is;
//! - `1`: a request built from the bytes: a method, a path (guarded or open), a query, with or
//!   without the right bearer token, an `Origin`, a JSON or form content type, a body;
//! - `2`: a request over a limit (a header line of 1 MiB: hyper's read buffer is capped at
//!   64 KiB and grows in steps, so a head past ~128 KiB is refused with 431).
//!
//! Checked:
//! - nothing panics and the connection ends (no hang);
//! - the answer, if any, is HTTP (1.1, or 1.0 to a 1.0 request);
//! - the handler never sees an anonymous request to `/operator/` or with a method other than
//!   `GET`/`HEAD`, nor one with an `Origin`;
//! - a built request gets the status its credentials, origin and content type call for (401,
//!   403, 415, 400, or the handler's 200), and the handler sees its decoded query parameter;
//! - a request over the limit never reaches the handler.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use lifeboat_io_tokio::http::{serve_connection, Access, Caller, Request, Response, Token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bytes::Bytes;

/// A waker that does nothing: nothing the targets poll ever needs waking.
struct NoWake;

impl Wake for NoWake {
    fn wake(self: Arc<Self>) {}
}

/// Run a future that never waits (a read from a complete in-memory buffer) to its end, with no
/// runtime. Shared with the frame target.
pub(crate) fn complete<F: Future>(fut: F) -> F::Output {
    let waker = Waker::from(Arc::new(NoWake));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!(
            "a read from a complete in-memory buffer waited: it would hang on a real connection"
        ),
    }
}

const TOKEN: &str = "fuzz-token-0123456789";

/// One request the handler saw: method, path, the `x` parameter, the caller.
type Call = (String, String, Option<String>, Caller);
type Seen = Arc<Mutex<Vec<Call>>>;

/// Serve `bytes` as one client's connection; the answer's bytes and what the handler saw.
fn exchange(bytes: &[u8]) -> (Vec<u8>, Vec<Call>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let seen: Seen = Arc::default();
    let out = rt.block_on(async {
        let (client, server) = tokio::io::duplex(256 << 10);
        let (mut rd, mut wr) = tokio::io::split(client);
        let s = seen.clone();
        let handler = Arc::new(move |r: Request| {
            s.lock().unwrap().push((
                r.method.clone(),
                r.path.clone(),
                r.param("x").map(str::to_string),
                r.caller.clone(),
            ));
            std::future::ready(Response::text(200, "ok"))
        });
        let access = Arc::new(Access {
            tls: None,
            token: Some(Token::new(TOKEN)),
        });
        let task = tokio::spawn(serve_connection(server, None, handler, access));
        let write = async {
            let _ = wr.write_all(bytes).await;
            let _ = wr.shutdown().await;
        };
        let mut answer = Vec::new();
        let read = rd.read_to_end(&mut answer);
        // The server's own header timeout (10 s) ends a connection that stops mid-request.
        let (_, r) = tokio::join!(write, tokio::time::timeout(Duration::from_secs(60), read));
        assert!(r.is_ok(), "the connection did not end: a hang");
        let _ = task.await;
        answer
    });
    let seen = seen.lock().unwrap().clone();
    (out, seen)
}

fn guarded(method: &str, path: &str) -> bool {
    !matches!(method, "GET" | "HEAD") || path.starts_with("/operator/")
}

fn check_common(answer: &[u8], seen: &[Call]) {
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "),
        "not an HTTP answer: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    for (m, p, _, caller) in seen {
        if guarded(m, p) {
            assert_eq!(
                *caller,
                Caller::Token,
                "{m} {p} reached the handler without credentials"
            );
        }
    }
}

fn status_of(answer: &[u8]) -> Option<u16> {
    std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
}

pub fn http_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let (answer, seen) = exchange(rest);
            check_common(&answer, &seen);
        }
        1 => check_built(rest),
        _ => {
            let mut req = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
            let fill = rest.first().copied().unwrap_or(b'a').clamp(b'a', b'z');
            req.extend(std::iter::repeat_n(fill, 1 << 20));
            req.extend_from_slice(b"\r\n\r\n");
            let (answer, seen) = exchange(&req);
            check_common(&answer, &seen);
            assert!(
                seen.is_empty(),
                "a request over the limit reached the handler"
            );
            if let Some(s) = status_of(&answer) {
                assert!(s >= 400, "a request over the limit answered {s}");
            }
        }
    }
}

/// A request built from the bytes; its expected status.
fn check_built(rest: &[u8]) {
    let mut r = Bytes::new(rest);
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(r.u8() % 4)];
    let path =
        ["/status", "/operator/pause", "/operator/logs", "/metrics"][usize::from(r.u8() % 4)];
    let x: String = (0..r.u8() % 8)
        .map(|_| ['a', ' ', '&', '=', '%', '+', 'z', '\u{e9}'][usize::from(r.u8() % 8)])
        .collect();
    let auth = r.u8() % 3; // none, right, wrong
    let origin = r.bool();
    let json = r.bool();
    let body_kind = r.u8() % 3; // {}, [1], garbage
    let query: String = form_encode(&x);
    let body: &[u8] = match body_kind {
        0 => b"{}",
        1 => b"[1]",
        _ => b"{not json",
    };
    let mut req = format!("{method} {path}?x={query} HTTP/1.1\r\nHost: agent\r\n");
    match auth {
        1 => req.push_str(&format!("Authorization: Bearer {TOKEN}\r\n")),
        2 => req.push_str("Authorization: Bearer fuzz-token-0123456788\r\n"),
        _ => {}
    }
    if origin {
        req.push_str("Origin: https://elsewhere.example\r\n");
    }
    let ctype = if json {
        "application/json"
    } else {
        "application/x-www-form-urlencoded"
    };
    req.push_str(&format!(
        "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    ));
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let (answer, seen) = exchange(&bytes);
    check_common(&answer, &seen);
    let g = guarded(method, path);
    let want = if g && origin {
        403
    } else if g && auth != 1 {
        401
    } else if method == "POST" && !json {
        415
    } else if method == "POST" && body_kind != 0 {
        400
    } else {
        200
    };
    assert_eq!(
        status_of(&answer),
        Some(want),
        "{method} {path} auth {auth} origin {origin} json {json} body {body_kind}"
    );
    if want == 200 {
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].2.as_deref(),
            Some(x.as_str()),
            "the query parameter decodes as sent"
        );
    } else {
        assert!(seen.is_empty(), "a refused request reached the handler");
    }
}

/// `application/x-www-form-urlencoded` encoding of a query value.
fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
