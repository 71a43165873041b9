//! Writing responses: the status line, the headers every response carries (`Date`,
//! `Content-Length`, `Content-Type` when there is a body, `Connection` when it is not the
//! version's default) and the JSON error format of DESIGN.md §3.
//!
//! This module decides nothing about framing or routing; it only renders what it is given.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;

use super::limits::HttpLimits;
use crate::text::push_u64;

/// A refused request, answered as `{"error":{"code":..,"message":..,"value":..}}`.
///
/// Returned by the framing checks (the connection is then closed) and by the handlers (the
/// connection stays open: the request was well framed, only its content was refused).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct HttpError {
    /// The HTTP status code.
    pub status: u16,
    /// The machine-readable error code (also the metrics label).
    pub code: &'static str,
    /// A sentence for humans.
    pub message: Cow<'static, str>,
    /// The offending value, echoed back when there is one.
    pub value: Option<Echo>,
    /// The `Allow` header of a 405.
    pub allow: Option<&'static str>,
}

impl HttpError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            value: None,
            allow: None,
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 431 `headers_too_large`.
    pub fn headers_too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(431, "headers_too_large", message)
    }

    /// 413 `body_too_large`.
    pub fn body_too_large(limits: &HttpLimits) -> Self {
        Self::new(
            413,
            "body_too_large",
            format!("request body larger than {} bytes", limits.max_body),
        )
    }

    /// 405 `method_not_allowed` with the methods the resource allows.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(405, "method_not_allowed", "method not allowed")
        }
    }

    /// Adds the offending value.
    pub fn with_value(mut self, value: serde_json::Value) -> Self {
        self.value = Some(Echo::from(value));
        self
    }

    /// Adds the offending value as the client wrote it (a number keeps its literal).
    pub fn with_raw_value(mut self, value: Box<RawValue>) -> Self {
        self.value = Some(Echo(value));
        self
    }

    /// Appends the JSON body.
    pub fn write_body(&self, out: &mut Vec<u8>) {
        /// `{"error":{...}}`.
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        /// The members, in the order they are written.
        #[derive(serde::Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<&'a RawValue>,
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                value: self.value.as_ref().map(|v| &*v.0),
            },
        };
        // Serializing into a `Vec` cannot fail; the fallback keeps the body valid JSON even so.
        if serde_json::to_writer(&mut *out, &body).is_err() {
            out.extend_from_slice(br#"{"error":{"code":"internal","message":"internal error"}}"#);
        }
    }
}

/// An offending value echoed in an error's `value`: JSON text, written exactly as it is held
/// (for a value taken from a request body, as the client wrote it).
#[derive(Clone, Debug)]
pub struct Echo(Box<RawValue>);

impl Echo {
    /// The JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }
}

impl From<serde_json::Value> for Echo {
    fn from(v: serde_json::Value) -> Self {
        // Serializing a `Value` cannot fail; `null` keeps the error valid JSON even so.
        Self(serde_json::value::to_raw_value(&v).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }
}

impl PartialEq for Echo {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl std::fmt::Display for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_json())
    }
}

/// What the `Connection` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Connection {
    /// HTTP/1.1 default: no header.
    Default,
    /// `Connection: keep-alive` (an HTTP/1.0 client asked for it).
    KeepAlive,
    /// `Connection: close`: the server closes after this response.
    Close,
}

/// The head of one response.
#[derive(Clone, Copy, Debug)]
pub(super) struct ResponseHead<'a> {
    pub(super) status: u16,
    pub(super) content_type: Option<&'a str>,
    pub(super) allow: Option<&'a str>,
    pub(super) content_length: usize,
    pub(super) connection: Connection,
    /// Header fields the handler adds, each as `\r\nName: value` (empty: none).
    pub(super) extra: &'a str,
}

/// Appends a status line and headers, ending with the empty line.
pub(super) fn write_head(out: &mut Vec<u8>, date: &str, h: &ResponseHead<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(h.status));
    out.push(b' ');
    out.extend_from_slice(reason(h.status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date.as_bytes());
    if let Some(ct) = h.content_type {
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(ct.as_bytes());
    }
    if !matches!(h.status, 204 | 304) {
        //= RFC 9110 §8.6
        //# A server MUST NOT send a Content-Length header field in any response with a status
        //# code of 1xx (Informational) or 204 (No Content).
        out.extend_from_slice(b"\r\nContent-Length: ");
        push_u64(out, h.content_length as u64);
    }
    if h.status == 401 {
        // Every 401 this server sends is about an API key (RFC 6750 §3).
        out.extend_from_slice(b"\r\nWWW-Authenticate: Bearer");
    }
    if let Some(allow) = h.allow {
        out.extend_from_slice(b"\r\nAllow: ");
        out.extend_from_slice(allow.as_bytes());
    }
    out.extend_from_slice(h.extra.as_bytes());
    match h.connection {
        Connection::Default => {}
        Connection::KeepAlive => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        Connection::Close => out.extend_from_slice(b"\r\nConnection: close"),
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends the head of an event stream: no `Content-Length` (the body ends when the connection
/// closes), never cached, never buffered by a reverse proxy (`X-Accel-Buffering: no`).
pub(super) fn write_stream_head(out: &mut Vec<u8>, date: &str, extra: &str) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nDate: ");
    out.extend_from_slice(date.as_bytes());
    out.extend_from_slice(
        b"\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
          X-Accel-Buffering: no\r\nConnection: close",
    );
    // `extra` is `\r\nName: value` lines (CORS for a cross-origin EventSource).
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// The interim response to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase of every status this server sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// The `Date` header value, formatted at most once per second.
#[derive(Clone, Debug, Default)]
pub(super) struct DateCache {
    secs: Option<u64>,
    text: String,
}

impl DateCache {
    /// The IMF-fixdate of `wall`, clamped to the range httpdate can format (1970 to 9999).
    pub(super) fn format(&mut self, wall: SystemTime) -> &str {
        // Last second of year 9999: httpdate panics on anything later.
        const MAX_SECS: u64 = 253_402_300_799;
        let secs = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(MAX_SECS);
        if self.secs != Some(secs) {
            self.secs = Some(secs);
            self.text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let mut d = DateCache::default();
        assert_eq!(d.format(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(d.format(far), "Fri, 31 Dec 9999 23:59:59 GMT");
    }
}
