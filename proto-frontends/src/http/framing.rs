//! Request framing: turning httparse's view of a request head into a checked [`Head`], and
//! decoding chunked bodies incrementally.
//!
//! Every rule that decides where one request ends and the next begins lives here, because that is
//! where request smuggling happens. The rules are deliberately stricter than RFC 9112 allows a
//! server to be:
//!
//! - `Content-Length` must be one header with a value of ASCII digits only (no sign, no hex, no
//!   inner spaces, not empty, no comma list). **A repeated `Content-Length` is refused even when
//!   the values are identical**: accepting it buys nothing and one more branch is one more way
//!   for two parsers to disagree.
//! - `Transfer-Encoding` must be one header whose whole value is `chunked` (case-insensitive);
//!   anything else (`gzip`, `chunked, chunked`, `identity`, two headers) is refused, as is
//!   `Transfer-Encoding` on an HTTP/1.0 request (RFC 9112 §6.1 calls such framing faulty).
//! - `Content-Length` together with `Transfer-Encoding` is refused.
//! - A chunk-size line must start with a hex digit, hold at most 16 of them (httparse rejects
//!   more), end in CRLF with no bare LF inside its extensions, and be at most
//!   [`MAX_CHUNK_LINE`] bytes long. Chunk data must be followed by exactly CRLF.
//! - HTTP/1.1 requests must carry exactly one `Host` (RFC 9112 §3.2).
//! - Size limits are decided by the request line first: a target above `max_uri`, or a request
//!   line alone above `max_head`, is 414 whether or not the head is complete; 431 is only for
//!   what the headers add (a longer head, or more of them than `max_headers`).
//!
//! Every refusal here is an [`HttpError`] after which the connection is closed: once framing is
//! in doubt, no later byte on the connection can be trusted.
//!
//! This module does not route, time or write responses.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use super::limits::HttpLimits;
use super::response::HttpError;

/// Longest chunk-size line (size, extensions and CRLF) accepted, in bytes.
pub(super) const MAX_CHUNK_LINE: usize = 4096;

/// How the body of a request is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes (at most [`HttpLimits::max_body`]).
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A checked request head, borrowed from the input or owned once the body must be waited for.
#[derive(Clone, Debug)]
pub(super) struct Head<'a> {
    /// The method token, case-sensitive (RFC 9110 §9.1).
    pub(super) method: Cow<'a, str>,
    /// The request target as sent (origin-form, absolute-form or `*`).
    pub(super) target: Cow<'a, str>,
    /// The minor version: 0 or 1.
    pub(super) minor: u8,
    /// Whether the connection stays open after the response.
    pub(super) keep_alive: bool,
    /// The `Host` header value, if any.
    pub(super) host: Option<Cow<'a, str>>,
    /// The `Content-Type` header value, if any.
    pub(super) content_type: Option<Cow<'a, str>>,
    /// The `Authorization` header value, if any (empty when sent more than once: never valid).
    pub(super) authorization: Option<Cow<'a, str>>,
    /// The `Last-Event-ID` header value, if any (the first one).
    pub(super) last_event_id: Option<Cow<'a, str>>,
    /// The `Origin` header value, if any (the first one).
    pub(super) origin: Option<Cow<'a, str>>,
    /// The `If-None-Match` header value, if any (the first one).
    pub(super) if_none_match: Option<Cow<'a, str>>,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub(super) expect_continue: bool,
    /// How the body is delimited.
    pub(super) framing: Framing,
}

impl Head<'_> {
    /// Copies the borrowed parts so the head outlives the input buffer.
    pub(super) fn into_owned(self) -> Head<'static> {
        fn own(c: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(c.into_owned())
        }
        Head {
            method: own(self.method),
            target: own(self.target),
            minor: self.minor,
            keep_alive: self.keep_alive,
            host: self.host.map(own),
            content_type: self.content_type.map(own),
            authorization: self.authorization.map(own),
            last_event_id: self.last_event_id.map(own),
            origin: self.origin.map(own),
            if_none_match: self.if_none_match.map(own),
            expect_continue: self.expect_continue,
            framing: self.framing,
        }
    }
}

/// The result of looking at the start of the input for a request head.
#[derive(Debug)]
// The `Complete` head is moved out right away on the stack; boxing it would cost an allocation per
// request on the hot path.
#[allow(clippy::large_enum_variant)]
pub(super) enum HeadStatus<'a> {
    /// More bytes are needed.
    Partial,
    /// A complete, checked head of this many bytes.
    Complete(Head<'a>, usize),
}

/// Header slots [`parse_head`] keeps on the stack: the default `http-max-headers`.
const STACK_HEADERS: usize = 64;

/// Parses and checks the request head at the start of `buf` (leading empty lines already
/// skipped).
pub(super) fn parse_head<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
) -> Result<HeadStatus<'a>, HttpError> {
    // Header slots on the stack up to the default limit, not initialised: httparse fills what
    // it uses. (A vector of `max_headers` empty headers was one allocation and 2 KiB of
    // stores per request.) A larger configured limit takes a vector.
    let mut stack = [const { MaybeUninit::<httparse::Header<'a>>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = match stack.get_mut(..limits.max_headers) {
        Some(slots) => slots,
        None => {
            heap.resize_with(limits.max_headers, MaybeUninit::uninit);
            heap.as_mut_slice()
        }
    };
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(HeadStatus::Partial);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::headers_too_large(format!(
                "more than {} request headers",
                limits.max_headers
            )))
        }
        Err(httparse::Error::Version) if looks_like_other_version(buf) => {
            return Err(HttpError::new(
                505,
                "version_not_supported",
                "only HTTP/1.0 and HTTP/1.1",
            ));
        }
        Err(e) => {
            return Err(HttpError::bad_request(format!(
                "malformed request head: {e}"
            )))
        }
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        // httparse fills all three before it reports a complete head.
        return Err(HttpError::bad_request("malformed request line"));
    };
    // The request line decides first: a long target is 414 even when it also makes the head too
    // long, as it is when the head arrives in pieces (`check_partial`).
    if target.len() > limits.max_uri {
        return Err(uri_too_long(limits));
    }
    if n > limits.max_head {
        let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(n);
        return Err(if line_len > limits.max_head {
            uri_too_long(limits)
        } else {
            head_too_large(limits)
        });
    }
    if split_target(target).is_none() {
        return Err(HttpError::bad_request(
            "request target must be origin-form or absolute-form",
        ));
    }
    let head = check_headers(method, target, minor, req.headers, limits)?;
    Ok(HeadStatus::Complete(head, n))
}

/// Applies the limits that can be decided before a head is complete: a request line whose
/// target already exceeds `max_uri` (414), a head longer than `max_head` (431, or 414 when the
/// request line alone is that long). [`parse_head`] decides a complete head the same way.
pub(super) fn check_partial(buf: &[u8], limits: &HttpLimits) -> Result<(), HttpError> {
    if buf.len() <= limits.max_uri && buf.len() <= limits.max_head {
        // Neither limit can be exceeded yet; skip the scan.
        return Ok(());
    }
    let line_end = buf.iter().position(|&b| b == b'\n');
    let line = buf.get(..line_end.unwrap_or(buf.len())).unwrap_or_default();
    // The target is the bytes after the method's SP, up to the next SP (or the end so far).
    let target_len = line.iter().position(|&b| b == b' ').map(|sp| {
        let after = line.get(sp + 1..).unwrap_or_default();
        after.iter().position(|&b| b == b' ').unwrap_or(after.len())
    });
    if target_len.is_some_and(|n| n > limits.max_uri) {
        return Err(uri_too_long(limits));
    }
    if buf.len() > limits.max_head {
        return Err(match (line.len() > limits.max_head, target_len) {
            (true, Some(_)) => uri_too_long(limits),
            (true, None) => HttpError::bad_request("request line without a target"),
            (false, _) => head_too_large(limits),
        });
    }
    Ok(())
}

fn head_too_large(limits: &HttpLimits) -> HttpError {
    HttpError::headers_too_large(format!(
        "request head longer than {} bytes",
        limits.max_head
    ))
}

fn uri_too_long(limits: &HttpLimits) -> HttpError {
    HttpError::new(
        414,
        "uri_too_long",
        format!("request target longer than {} bytes", limits.max_uri),
    )
}

/// Whether the request line ends in `HTTP/<digit>.<digit>`: httparse's version error then means
/// a version we do not speak (505) rather than garbage (400).
fn looks_like_other_version(buf: &[u8]) -> bool {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = buf.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(sp) = line.iter().rposition(|&b| b == b' ') else {
        return false;
    };
    match line.get(sp + 1..) {
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor]) => {
            major.is_ascii_digit() && minor.is_ascii_digit()
        }
        _ => false,
    }
}

/// What the framing-relevant headers said, before they are combined.
#[derive(Default)]
struct Seen<'a> {
    content_length: Option<usize>,
    transfer_encoding: Option<&'a str>,
    hosts: usize,
    host: Option<&'a str>,
    content_type: Option<&'a str>,
    authorization: Option<&'a str>,
    last_event_id: Option<&'a str>,
    origin: Option<&'a str>,
    if_none_match: Option<&'a str>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

fn check_headers<'a>(
    method: &'a str,
    target: &'a str,
    minor: u8,
    headers: &[httparse::Header<'a>],
    limits: &HttpLimits,
) -> Result<Head<'a>, HttpError> {
    let mut seen = Seen::default();
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if seen.content_length.is_some() {
                return Err(HttpError::bad_request(
                    "Content-Length given more than once",
                ));
            }
            seen.content_length = Some(content_length(h.value, limits)?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if seen.transfer_encoding.is_some() {
                return Err(HttpError::bad_request(
                    "Transfer-Encoding given more than once",
                ));
            }
            seen.transfer_encoding = Some(text(h.value, "Transfer-Encoding")?);
        } else if name.eq_ignore_ascii_case("host") {
            seen.hosts += 1;
            seen.host = Some(text(h.value, "Host")?);
        } else if name.eq_ignore_ascii_case("content-type") {
            if seen.content_type.is_none() {
                seen.content_type = Some(text(h.value, "Content-Type")?);
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            seen.authorization = match seen.authorization {
                None => Some(text(h.value, "Authorization")?),
                Some(_) => Some(""),
            };
        } else if name.eq_ignore_ascii_case("last-event-id") {
            if seen.last_event_id.is_none() {
                seen.last_event_id = Some(text(h.value, "Last-Event-ID")?);
            }
        } else if name.eq_ignore_ascii_case("origin") {
            if seen.origin.is_none() {
                seen.origin = Some(text(h.value, "Origin")?);
            }
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if seen.if_none_match.is_none() {
                seen.if_none_match = Some(text(h.value, "If-None-Match")?);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in text(h.value, "Connection")?.split(',').map(str::trim) {
                seen.close |= token.eq_ignore_ascii_case("close");
                seen.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") && minor == 1 {
            // RFC 9110 §10.1.1: an HTTP/1.0 request's expectation is ignored.
            let v = text(h.value, "Expect")?;
            if !v.eq_ignore_ascii_case("100-continue") {
                return Err(HttpError::new(
                    417,
                    "expectation_failed",
                    "the only expectation supported is 100-continue",
                )
                .with_value(v.into()));
            }
            seen.expect_continue = true;
        }
    }
    if minor == 1 && seen.hosts != 1 {
        return Err(HttpError::bad_request(
            "an HTTP/1.1 request needs exactly one Host header",
        ));
    }
    let framing = match (seen.transfer_encoding, seen.content_length) {
        (Some(_), Some(_)) => {
            return Err(HttpError::bad_request(
                "Content-Length and Transfer-Encoding must not both be sent",
            ))
        }
        (Some(_), None) if minor == 0 => {
            return Err(HttpError::bad_request(
                "Transfer-Encoding is not allowed in HTTP/1.0",
            ))
        }
        (Some(te), None) if te.eq_ignore_ascii_case("chunked") => Framing::Chunked,
        (Some(te), None) => {
            return Err(
                HttpError::bad_request("the only Transfer-Encoding supported is chunked")
                    .with_value(te.into()),
            )
        }
        (None, Some(0)) | (None, None) => Framing::None,
        (None, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if minor == 0 {
        seen.keep_alive && !seen.close
    } else {
        !seen.close
    };
    Ok(Head {
        method: Cow::Borrowed(method),
        target: Cow::Borrowed(target),
        minor,
        keep_alive,
        host: seen.host.map(Cow::Borrowed),
        content_type: seen.content_type.map(Cow::Borrowed),
        authorization: seen.authorization.map(Cow::Borrowed),
        last_event_id: seen.last_event_id.map(Cow::Borrowed),
        origin: seen.origin.map(Cow::Borrowed),
        if_none_match: seen.if_none_match.map(Cow::Borrowed),
        expect_continue: seen.expect_continue && framing != Framing::None,
        framing,
    })
}

fn text<'a>(value: &'a [u8], name: &str) -> Result<&'a str, HttpError> {
    std::str::from_utf8(value)
        .map_err(|_| HttpError::bad_request(format!("{name} header is not valid UTF-8")))
}

//= RFC 9110 §8.6
//# Content-Length = 1*DIGIT
fn content_length(value: &[u8], limits: &HttpLimits) -> Result<usize, HttpError> {
    let bad = || {
        HttpError::bad_request("Content-Length must be decimal digits only")
            .with_value(String::from_utf8_lossy(value).into_owned().into())
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // All digits: the only parse failure left is overflow, which is certainly above max_body.
    let n = std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    match n {
        Some(n) if n <= limits.max_body as u64 => usize::try_from(n).map_err(|_| bad()),
        _ => Err(HttpError::body_too_large(limits)),
    }
}

/// Where the chunked decoder is inside the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes to go.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
    /// The body is complete.
    Done,
}

/// An incremental decoder for a chunked request body.
///
/// INVARIANT: the decoded body never exceeds `max_body`; trailers are parsed with httparse and
/// dropped.
#[derive(Clone, Debug)]
pub(super) struct Chunked {
    state: ChunkState,
}

impl Chunked {
    pub(super) fn new() -> Self {
        Self {
            state: ChunkState::Size,
        }
    }

    /// Decodes as much of `buf` as is complete, appending chunk data to `body`. Returns the bytes
    /// consumed and whether the body (with its trailers) is complete.
    pub(super) fn feed(
        &mut self,
        buf: &[u8],
        body: &mut Vec<u8>,
        limits: &HttpLimits,
    ) -> Result<(usize, bool), HttpError> {
        let mut pos = 0;
        loop {
            let rest = buf.get(pos..).unwrap_or_default();
            match self.state {
                ChunkState::Done => return Ok((pos, true)),
                ChunkState::Size => {
                    let Some(&first) = rest.first() else {
                        return Ok((pos, false));
                    };
                    if !first.is_ascii_hexdigit() {
                        return Err(bad_chunk());
                    }
                    match httparse::parse_chunk_size(rest) {
                        Ok(httparse::Status::Complete((n, size))) => {
                            let line = rest.get(..n.saturating_sub(1)).unwrap_or_default();
                            if line.contains(&b'\n') || n > MAX_CHUNK_LINE {
                                return Err(bad_chunk());
                            }
                            if size > (limits.max_body.saturating_sub(body.len())) as u64 {
                                return Err(HttpError::body_too_large(limits));
                            }
                            pos += n;
                            self.state = if size == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if rest.len() < MAX_CHUNK_LINE => {
                            return Ok((pos, false))
                        }
                        Ok(httparse::Status::Partial) | Err(_) => return Err(bad_chunk()),
                    }
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok((pos, false));
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    body.extend_from_slice(rest.get(..take).unwrap_or_default());
                    pos += take;
                    let left = left.saturating_sub(take as u64);
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok((pos, false)),
                    _ => return Err(bad_chunk()),
                },
                ChunkState::Trailers => {
                    let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
                    match httparse::parse_headers(rest, &mut fields) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            pos += n;
                            self.state = ChunkState::Done;
                        }
                        Ok(httparse::Status::Partial) if rest.len() <= limits.max_head => {
                            return Ok((pos, false))
                        }
                        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                            return Err(HttpError::headers_too_large("trailer section too large"))
                        }
                        Err(e) => {
                            return Err(HttpError::bad_request(format!("malformed trailer: {e}")))
                        }
                    }
                }
            }
        }
    }
}

fn bad_chunk() -> HttpError {
    HttpError::bad_request("malformed chunked body")
}

/// Splits a request target into path and query. Accepts origin-form (`/p?q`), absolute-form
/// (`http://host/p?q`, RFC 9112 §3.2.2: a server must accept it) and asterisk-form (`*`).
/// `None` for anything else.
pub(crate) fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let origin = if target.starts_with('/') || target == "*" {
        target
    } else {
        let scheme_len = if target
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            7
        } else if target
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            8
        } else {
            return None;
        };
        let after = target.get(scheme_len..)?;
        match after.find(['/', '?']) {
            Some(i) if after.get(i..)?.starts_with('/') => after.get(i..)?,
            Some(i) => return Some(("/", after.get(i + 1..))),
            None => "/",
        }
    };
    Some(match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    })
}

#[cfg(test)]
mod tests;
