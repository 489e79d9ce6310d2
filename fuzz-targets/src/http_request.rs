//! Fuzz body for the HTTP request reader (`lifeboat_io_tokio::http::read_request`), what any
//! client of `/status`, `/metrics` and the operator endpoints can send.
//!
//! The reader is driven over an in-memory reader (`&[u8]`) by polling its future once with a
//! waker that does nothing: a complete buffer never makes a read wait, so no runtime is needed,
//! and a read that does wait is a hang.
//!
//! The first byte picks what the rest is:
//! - `0`: the request's bytes, as is;
//! - `1`: a well-formed request built from the bytes: a method, a path, a query, header lines
//!   (any case of `Content-Length`, `\r\n` or `\n` line ends) and a body of the announced length;
//! - `2`: a request over one limit: a request line or a header line longer than `MAX_LINE`,
//!   more than `MAX_HEADER_LINES` headers, a Content-Length over `MAX_BODY`, or a body shorter
//!   than announced.
//!
//! Checked:
//! - nothing panics and nothing waits;
//! - the reader never consumes more than `MAX_HEAD` bytes of head plus the announced body (so
//!   it never buffers more), and a request that reads consumed exactly its head and its body;
//! - a request that reads has a non-empty method and a path without whitespace, a body of at
//!   most `MAX_BODY` bytes, and reads back the same (method, path, body) when written out again;
//! - a well-formed request reads as built: method, path, decoded query pairs and body;
//! - a request over a limit is refused with the error of that limit (`LineTooLong`,
//!   `TooManyHeaders`, `BodyTooLarge`, `BodyTruncated`), and every error has a message.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use lifeboat_io_tokio::http::{
    read_request, HttpError, Request, MAX_BODY, MAX_HEAD, MAX_HEADER_LINES, MAX_LINE,
};

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

pub fn http_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = check_raw(rest);
        }
        1 => check_well_formed(rest),
        _ => check_over_limit(rest),
    }
}

/// Read `bytes` as a request; check what every outcome must satisfy. Returns the outcome and how
/// many bytes the reader consumed.
fn check_raw(bytes: &[u8]) -> (Result<Request, HttpError>, usize) {
    let mut rest: &[u8] = bytes;
    let result = complete(read_request(&mut rest));
    let consumed = bytes.len() - rest.len();
    assert!(
        consumed <= MAX_HEAD + MAX_BODY,
        "the reader consumed {consumed} bytes, more than a head and a body can take"
    );
    match &result {
        Ok(req) => {
            assert!(!req.method.is_empty(), "a request without a method");
            assert!(
                !req.method.contains(char::is_whitespace)
                    && !req.path.contains(char::is_whitespace),
                "whitespace in {:?} {:?}",
                req.method,
                req.path
            );
            assert!(req.body.len() <= MAX_BODY);
            assert!(
                consumed >= req.body.len() && consumed - req.body.len() <= MAX_HEAD,
                "a head of {} bytes was accepted",
                consumed - req.body.len()
            );
            assert_eq!(
                bytes[consumed - req.body.len()..consumed],
                req.body[..],
                "the body is not the bytes after the head"
            );
            // Written out again (with an empty query: decoding one is lossy, and `?` keeps an
            // empty path a target), it reads the same.
            let again = format!(
                "{} {}? HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                req.method,
                req.path,
                req.body.len()
            );
            let mut again = again.into_bytes();
            again.extend_from_slice(&req.body);
            let mut r: &[u8] = &again;
            match complete(read_request(&mut r)) {
                Ok(back) => {
                    assert_eq!(
                        (&back.method, &back.path, &back.body),
                        (&req.method, &req.path, &req.body)
                    );
                    assert!(
                        r.is_empty(),
                        "the re-written request was not read to its end"
                    );
                }
                // A path at the line limit may not fit with the rest of the request line.
                Err(HttpError::LineTooLong { .. }) => {
                    assert!(req.method.len() + req.path.len() + 12 > MAX_LINE)
                }
                Err(e) => panic!("a request that read does not read again written out: {e}"),
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            if let HttpError::BodyTruncated { got, len } = e {
                assert!(got < len && *len <= MAX_BODY);
                assert_eq!(rest.len(), 0, "a truncated body ends the stream");
            }
        }
    }
    (result, consumed)
}

/// One character of a token from the bytes: letters, digits and a few marks, now and then a
/// non-ASCII one.
fn token_char(r: &mut Bytes<'_>, extra: &str) -> char {
    const PLAIN: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
    let b = r.u8();
    match b {
        0..=239 => {
            let set: Vec<char> = PLAIN.chars().chain(extra.chars()).collect();
            set[usize::from(b) % set.len()]
        }
        240..=247 => 'é',
        _ => '✓',
    }
}

fn token(r: &mut Bytes<'_>, max: usize, extra: &str) -> String {
    let n = 1 + r.below(max);
    (0..n).map(|_| token_char(r, extra)).collect()
}

fn check_well_formed(rest: &[u8]) {
    let mut r = Bytes::new(rest);
    let method = token(&mut r, 8, "");
    let mut path = String::from("/");
    for _ in 0..r.below(4) {
        path.push_str(&token(&mut r, 12, "/:@!$'()*,;"));
        path.push('/');
    }
    let mut query = Vec::new();
    for _ in 0..r.below(4) {
        let k = token(&mut r, 6, "+");
        let v = if r.bool() {
            format!("{}%20{}", token(&mut r, 4, "+"), token(&mut r, 4, ""))
        } else {
            token(&mut r, 8, "+/:?")
        };
        query.push((k, v));
    }
    let target = if query.is_empty() {
        path.clone()
    } else {
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{path}?{}", q.join("&"))
    };
    let eol = if r.bool() { "\r\n" } else { "\n" };
    let body = r.slice(300).to_vec();
    let mut head = format!("{method} {target} HTTP/1.1{eol}");
    let headers = r.below(6);
    let length_at = r.below(headers + 1);
    for i in 0..=headers {
        if i == length_at {
            let name = ["Content-Length", "content-length", "CONTENT-LENGTH"][r.below(3)];
            let pad = if r.bool() { " " } else { "" };
            head.push_str(&format!("{name}:{pad}{}{pad}{eol}", body.len()));
        }
        if i < headers {
            let name = format!("x-{}", token(&mut r, 10, ""));
            head.push_str(&format!("{name}: {}{eol}", token(&mut r, 20, " :;=,/")));
        }
    }
    head.push_str(eol);
    let mut bytes = head.into_bytes();
    let head_len = bytes.len();
    bytes.extend_from_slice(&body);
    // Whatever follows the body (a pipelined request) is not read.
    bytes.extend_from_slice(r.rest());

    let (result, consumed) = check_raw(&bytes);
    let req = result.unwrap_or_else(|e| panic!("a well-formed request is refused: {e}"));
    assert_eq!(consumed, head_len + body.len(), "read past the body");
    assert_eq!(req.method, method);
    assert_eq!(req.path, path);
    assert_eq!(req.body, body);
    let decode = |s: &str| s.replace('+', " ").replace("%20", " ");
    let expected: Vec<(String, String)> =
        query.iter().map(|(k, v)| (decode(k), decode(v))).collect();
    assert_eq!(req.query, expected);
}

fn check_over_limit(rest: &[u8]) {
    let mut r = Bytes::new(rest);
    let eol = if r.bool() { "\r\n" } else { "\n" };
    let fill = |r: &mut Bytes<'_>, n: usize| -> String {
        let c = token_char(r, "");
        std::iter::repeat_n(c, n).collect()
    };
    let over = 1 + r.below(64);
    let (bytes, what) = match r.below(5) {
        0 => {
            let line = format!("GET /{} HTTP/1.1", fill(&mut r, MAX_LINE + over));
            (format!("{line}{eol}{eol}").into_bytes(), "line")
        }
        1 => {
            let value = fill(&mut r, MAX_LINE + over);
            (
                format!("GET / HTTP/1.1{eol}x-long: {value}{eol}{eol}").into_bytes(),
                "line",
            )
        }
        2 => {
            let mut head = format!("GET / HTTP/1.1{eol}");
            for i in 0..MAX_HEADER_LINES + over {
                head.push_str(&format!("x-{i}: {}{eol}", fill(&mut r, 3)));
            }
            head.push_str(eol);
            (head.into_bytes(), "headers")
        }
        3 => {
            let len = MAX_BODY as u64 + 1 + u64::from(r.u32());
            (
                format!("POST /x HTTP/1.1{eol}Content-Length: {len}{eol}{eol}").into_bytes(),
                "body",
            )
        }
        _ => {
            let body = r.slice(200);
            let len = body.len() + over;
            let mut bytes =
                format!("POST /x HTTP/1.1{eol}Content-Length: {len}{eol}{eol}").into_bytes();
            bytes.extend_from_slice(body);
            (bytes, "short")
        }
    };
    let (result, consumed) = check_raw(&bytes);
    match (what, result) {
        ("line", Err(HttpError::LineTooLong { .. })) => {
            assert!(
                consumed <= 2 * MAX_LINE,
                "read {consumed} bytes for an overlong line"
            )
        }
        ("headers", Err(HttpError::TooManyHeaders)) => assert!(consumed <= MAX_HEAD),
        ("body", Err(HttpError::BodyTooLarge { len })) => assert!(len > MAX_BODY),
        ("short", Err(HttpError::BodyTruncated { got, len })) => assert!(got < len),
        (what, other) => panic!("a request over the {what} limit: {other:?}"),
    }
}
