//! The sans-IO HTTP/1.1 server side of one connection: request framing with `httparse`, limits,
//! timeouts, `Expect: 100-continue`, keep-alive and pipelining, and writing responses in request
//! order. What a request *means* is decided by a [`Handler`] (in this crate, [`crate::router`]);
//! this module only hands it a complete [`Request`] and imports nothing from the layers above.
//!
//! ```text
//!   driver (mio)                         HttpConn<H: Handler<C>>
//!   ────────────                         ───────────────────────
//!   bytes arrive ── handle_input(now, wall, unconsumed, budget, ctx, out) ──────► HttpOutcome
//!                   (drop `consumed` bytes, write `out`, close if `close`, re-wake if `more`)
//!   timer fires ─── handle_timeout(now, wall, out) ─────────────────────────────► close?
//!   before sleep ── poll_timeout() ──────────────────────────────────────────────► deadline
//! ```
//!
//! Invariants:
//! - Responses are appended to `out` in request order; nothing else is ever written to it
//!   except the interim `100 Continue`.
//! - Every response carries `Date` and `Content-Length` (but 204 and 304, which have no content
//!   and so no `Content-Length`, RFC 9110 §8.6); every response with a body carries
//!   `Content-Type`. The handler may add header fields ([`Handler::extra_headers`]). A `HEAD` response carries the headers of the `GET` response, no body.
//! - After a response that closes the connection (`Connection: close`, HTTP/1.0 without
//!   keep-alive, any framing error, a timeout) no further input is looked at.
//! - No request head or body is waited for longer than [`HttpLimits::head_timeout`] /
//!   [`HttpLimits::body_timeout`] counted from its first byte, however slowly it trickles in.
//! - Nothing is allocated in proportion to what a peer announces, only to what it sent, and
//!   never beyond [`HttpLimits`].
//!
//! This module does no I/O and reads no clock: `now` (monotonic) and `wall` (for the `Date`
//! header) are parameters. The framing rules are in `framing`, response rendering in
//! `response`, the limits in `limits`.

mod framing;
mod limits;
mod response;

use std::time::{Instant, SystemTime};

use self::framing::{Chunked, Framing, Head, HeadStatus};
use self::response::{Connection, DateCache, ResponseHead};

pub(crate) use self::framing::split_target;
pub use self::limits::HttpLimits;
pub use self::response::{Echo, HttpError};

/// What [`HttpConn::handle_input`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpOutcome {
    /// Bytes of the input that are done with; the driver drops them before the next call.
    pub consumed: usize,
    /// Flush `out`, then close the connection; no later input will be looked at.
    pub close: bool,
    /// The request budget ran out with input left over: call again soon even if no byte
    /// arrives. (The leftover may turn out to be an incomplete request.)
    pub more: bool,
}

/// A complete request, as the handlers see it.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method, case-sensitive; `HEAD` is routed like `GET`.
    pub method: &'a str,
    /// The path of the target, not percent-decoded.
    pub path: &'a str,
    /// The query of the target (after `?`), if any, not percent-decoded.
    pub query: Option<&'a str>,
    /// The `Host` header.
    pub host: Option<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// The `Authorization` header (empty when it was sent more than once).
    pub authorization: Option<&'a str>,
    /// The `Last-Event-ID` header (an event stream's resume point).
    pub last_event_id: Option<&'a str>,
    /// The `Origin` header (the first one), sent by browsers on cross-origin requests.
    pub origin: Option<&'a str>,
    /// The `If-None-Match` header (the first one).
    pub if_none_match: Option<&'a str>,
    /// The body, de-chunked.
    pub body: &'a [u8],
}

/// A handler's answer; the body is in the buffer the handler was given.
///
/// A `200` whose `content_type` is [`EVENT_STREAM`] starts a stream: the head is written without
/// `Content-Length` (the body lasts until the connection closes), the connection reads no further
/// request, and [`HttpConn::streaming`] turns true: the driver writes the stream from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` of the body.
    pub content_type: &'static str,
}

/// What answers the requests of an [`HttpConn`]: the layer above this module.
///
/// The handler is per-connection state (buffers it reuses from one request to the next); `C` is
/// what the driver passes with each input, e.g. its view of the node for this wakeup. Both
/// methods are called only from [`HttpConn::handle_input`], in request order.
pub trait Handler<C: ?Sized> {
    /// Answers one complete, well-framed request, appending the response body to `body` (empty
    /// on entry). An `Err` is answered in the JSON error format of [`HttpError`] (the connection
    /// stays open) and counted through [`record_error`](Self::record_error).
    fn handle(
        &mut self,
        ctx: &C,
        req: &Request<'_>,
        limits: &HttpLimits,
        body: &mut Vec<u8>,
    ) -> Result<Reply, HttpError>;

    /// Counts one refused request by its error code (a handler's `Err`, or a framing error after
    /// which the connection closes). Timeouts are not reported here: the driver sees them.
    fn record_error(&mut self, ctx: &C, code: &'static str);

    /// Extra header fields of the response to the request last handed to
    /// [`handle`](Self::handle) (whether it answered `Ok` or `Err`), each written as
    /// `\r\nName: value`; asked once right after `handle`. The default adds none.
    fn extra_headers(&self) -> &str {
        ""
    }
}

/// A request whose head arrived and whose body is still arriving.
#[derive(Debug)]
struct Pending {
    head: Head<'static>,
    body: Vec<u8>,
    decoder: BodyDecoder,
    continue_sent: bool,
}

#[derive(Debug)]
enum BodyDecoder {
    /// This many `Content-Length` bytes to go.
    Length(usize),
    /// A chunked body.
    Chunked(Chunked),
}

impl Pending {
    /// Takes what it can of `buf`; returns the bytes consumed and whether the body is complete.
    fn feed(&mut self, buf: &[u8], limits: &HttpLimits) -> Result<(usize, bool), HttpError> {
        match &mut self.decoder {
            BodyDecoder::Length(left) => {
                let take = (*left).min(buf.len());
                self.body
                    .extend_from_slice(buf.get(..take).unwrap_or_default());
                *left -= take;
                Ok((take, *left == 0))
            }
            BodyDecoder::Chunked(c) => c.feed(buf, &mut self.body, limits),
        }
    }
}

/// The server side of one HTTP/1.1 connection.
///
/// # Method taxonomy
///
/// - Input: [`handle_input`](Self::handle_input) with all unconsumed bytes whenever some arrive
///   (and again whenever it returned `more`), [`handle_timeout`](Self::handle_timeout) when the
///   deadline from [`poll_timeout`](Self::poll_timeout) passes.
/// - Output: the bytes appended to `out` by either input method, to be written in order;
///   [`poll_timeout`](Self::poll_timeout), to be asked again after every input.
///
/// After each input the driver flushes `out` (it may hold a `100 Continue` even when no request
/// completed), drops `consumed` bytes, closes if told to, and re-arms its timer from
/// `poll_timeout`.
///
/// Complete requests go to the handler `H`, which decides what they mean.
#[derive(Debug)]
pub struct HttpConn<H> {
    limits: HttpLimits,
    handler: H,
    /// The request whose body is arriving, if any.
    pending: Option<Box<Pending>>,
    /// When the partial head at the start of the input times out.
    /// INVARIANT: `Some` only while unconsumed bytes of an incomplete head exist.
    head_deadline: Option<Instant>,
    /// When the body of `pending` times out. INVARIANT: `Some` exactly when `pending` is.
    body_deadline: Option<Instant>,
    /// How many bytes of the current partial head were already looked at.
    head_scanned: usize,
    /// A response asked to close: input is no longer read.
    closing: bool,
    date: DateCache,
    /// The body of the response being written.
    body: Vec<u8>,
    /// A response started an event stream: the driver writes the rest of the connection's
    /// output. INVARIANT: implies `closing` (no further input is looked at).
    streaming: bool,
}

/// Response bodies above this capacity are not kept between requests: the buffer is per
/// connection, and what thousands of connections keep between requests is not counted anywhere.
const KEEP_BODY_CAPACITY: usize = 8 * 1024;

impl<H> HttpConn<H> {
    /// A fresh connection whose requests `handler` answers.
    pub fn new(limits: HttpLimits, handler: H) -> Self {
        Self {
            limits,
            handler,
            pending: None,
            head_deadline: None,
            body_deadline: None,
            head_scanned: 0,
            closing: false,
            date: DateCache::default(),
            body: Vec::new(),
            streaming: false,
        }
    }

    /// Whether a response started an event stream ([`EVENT_STREAM`]): the stream's head is in
    /// the output, no further input is read, and the driver writes the stream's body.
    pub fn streaming(&self) -> bool {
        self.streaming
    }

    /// The handler, e.g. to take what it kept about a stream it started.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Handles the bytes received so far.
    ///
    /// `input` is all unconsumed bytes received on the connection; the driver drops `consumed`
    /// bytes afterwards and calls again when more arrive. At most `max_requests` whole requests
    /// are answered by the handler, which is given `ctx`; their responses are appended to `out`
    /// in order.
    pub fn handle_input<C: ?Sized>(
        &mut self,
        now: Instant,
        wall: SystemTime,
        input: &[u8],
        max_requests: usize,
        ctx: &C,
        out: &mut Vec<u8>,
    ) -> HttpOutcome
    where
        H: Handler<C>,
    {
        if self.closing {
            return HttpOutcome {
                consumed: input.len(),
                close: !self.streaming,
                more: false,
            };
        }
        let mut pos = 0;
        let mut handled = 0;
        let mut more = false;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            if let Some(p) = self.pending.as_mut() {
                if handled >= max_requests {
                    more = !rest.is_empty();
                    break;
                }
                match p.feed(rest, &self.limits) {
                    Ok((n, true)) => {
                        pos += n;
                        self.body_deadline = None;
                        if let Some(p) = self.pending.take() {
                            self.respond(wall, &p.head, &p.body, ctx, out);
                        }
                        handled += 1;
                        if self.closing {
                            break;
                        }
                    }
                    Ok((n, false)) => {
                        pos += n;
                        if p.head.expect_continue && !p.continue_sent && p.body.is_empty() {
                            //= RFC 9110 §10.1.1
                            //# A server that receives a 100-continue expectation in an HTTP/1.1
                            //# request [...] SHOULD send an immediate 100 (Continue) response
                            //# if it wishes to receive the content.
                            out.extend_from_slice(response::CONTINUE);
                            p.continue_sent = true;
                        }
                        if self.body_deadline.is_some_and(|d| now >= d) {
                            self.time_out(wall, out);
                        }
                        break;
                    }
                    Err(e) => {
                        self.fail(wall, &e, ctx, out);
                        break;
                    }
                }
                continue;
            }
            //= RFC 9112 §2.2
            //# a server that is expecting to receive and parse a request-line SHOULD ignore at
            //# least one empty line (CRLF) received prior to the request-line.
            let skip = if self.head_scanned == 0 {
                rest.iter()
                    .take_while(|&&b| b == b'\r' || b == b'\n')
                    .count()
            } else {
                0
            };
            pos += skip;
            let rest = rest.get(skip..).unwrap_or_default();
            if rest.is_empty() {
                self.head_deadline = None;
                self.head_scanned = 0;
                break;
            }
            if handled >= max_requests {
                more = true;
                break;
            }
            let status = if self.worth_parsing(rest) {
                framing::parse_head(rest, &self.limits)
            } else {
                framing::check_partial(rest, &self.limits).map(|()| HeadStatus::Partial)
            };
            match status {
                Ok(HeadStatus::Partial) => {
                    self.head_scanned = rest.len();
                    let deadline = *self
                        .head_deadline
                        .get_or_insert(now + self.limits.head_timeout);
                    if now >= deadline {
                        self.time_out(wall, out);
                    }
                    break;
                }
                Ok(HeadStatus::Complete(head, n)) => {
                    pos += n;
                    self.head_scanned = 0;
                    self.head_deadline = None;
                    let body = rest.get(n..).unwrap_or_default();
                    match head.framing {
                        Framing::None => {
                            self.respond(wall, &head, &[], ctx, out);
                            handled += 1;
                        }
                        Framing::Length(len) if body.len() >= len => {
                            // The whole body is here: no copy.
                            pos += len;
                            self.respond(
                                wall,
                                &head,
                                body.get(..len).unwrap_or_default(),
                                ctx,
                                out,
                            );
                            handled += 1;
                        }
                        Framing::Length(len) => {
                            self.start_body(now, head, BodyDecoder::Length(len))
                        }
                        Framing::Chunked => {
                            self.start_body(now, head, BodyDecoder::Chunked(Chunked::new()));
                        }
                    }
                    if self.closing {
                        break;
                    }
                }
                Err(e) => {
                    self.fail(wall, &e, ctx, out);
                    break;
                }
            }
        }
        if self.closing {
            return HttpOutcome {
                consumed: input.len(),
                close: !self.streaming,
                more: false,
            };
        }
        HttpOutcome {
            consumed: pos,
            close: false,
            more,
        }
    }

    /// When the current partial head or body times out (`None`: nothing pending).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closing {
            return None;
        }
        self.body_deadline.or(self.head_deadline)
    }

    /// Called at or after [`poll_timeout`](Self::poll_timeout). Appends a 408 and returns true
    /// if the connection must close (flush `out` first); false if nothing timed out yet.
    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime, out: &mut Vec<u8>) -> bool {
        if self.closing {
            return true;
        }
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {
                self.time_out(wall, out);
                true
            }
            _ => false,
        }
    }

    /// Whether httparse should look at the partial head again: always the first time, then only
    /// once a new line has ended, so a head trickling in one byte at a time costs linear, not
    /// quadratic, time. (The size limits are checked on every call either way.)
    fn worth_parsing(&self, rest: &[u8]) -> bool {
        let new = rest.get(self.head_scanned..).unwrap_or_default();
        self.head_scanned == 0 || new.contains(&b'\n')
    }

    fn start_body(&mut self, now: Instant, head: Head<'_>, decoder: BodyDecoder) {
        self.pending = Some(Box::new(Pending {
            head: head.into_owned(),
            body: Vec::new(),
            decoder,
            continue_sent: false,
        }));
        self.body_deadline = Some(now + self.limits.body_timeout);
    }

    /// Hands one complete request to the handler and appends its response.
    fn respond<C: ?Sized>(
        &mut self,
        wall: SystemTime,
        head: &Head<'_>,
        body: &[u8],
        ctx: &C,
        out: &mut Vec<u8>,
    ) where
        H: Handler<C>,
    {
        // `parse_head` already refused targets that do not split.
        let (path, query) = split_target(&head.target).unwrap_or(("", None));
        let req = Request {
            method: &head.method,
            path,
            query,
            host: head.host.as_deref(),
            content_type: head.content_type.as_deref(),
            authorization: head.authorization.as_deref(),
            last_event_id: head.last_event_id.as_deref(),
            origin: head.origin.as_deref(),
            if_none_match: head.if_none_match.as_deref(),
            body,
        };
        self.body.clear();
        let reply = match self.handler.handle(ctx, &req, &self.limits, &mut self.body) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.handler.record_error(ctx, e.code);
                self.body.clear();
                e.write_body(&mut self.body);
                Err(e)
            }
        };
        let (status, content_type, allow) = match &reply {
            Ok(r) => (r.status, r.content_type, None),
            Err(e) => (e.status, JSON, e.allow),
        };
        let connection = match (head.keep_alive, head.minor) {
            (false, _) => Connection::Close,
            (true, 0) => Connection::KeepAlive,
            (true, _) => Connection::Default,
        };
        if let Ok(Reply {
            status: 200,
            content_type: EVENT_STREAM,
        }) = reply
        {
            // The stream's head carries the handler's extra headers too (CORS for a
            // cross-origin EventSource).
            response::write_stream_head(out, self.date.format(wall), self.handler.extra_headers());
            self.body.clear();
            self.stop();
            self.streaming = true;
            return;
        }
        if matches!(status, 204 | 304) {
            // RFC 9110 §15.3.5, §15.4.5: these never have content.
            self.body.clear();
        }
        let head_only = head.method == "HEAD";
        let h = ResponseHead {
            status,
            content_type: (!self.body.is_empty()).then_some(content_type),
            allow,
            content_length: self.body.len(),
            connection,
            extra: self.handler.extra_headers(),
        };
        response::write_head(out, self.date.format(wall), &h);
        self.finish(head_only, out);
        if !head.keep_alive {
            self.closing = true;
        }
    }

    /// Answers a framing error and stops reading.
    fn fail<C: ?Sized>(&mut self, wall: SystemTime, e: &HttpError, ctx: &C, out: &mut Vec<u8>)
    where
        H: Handler<C>,
    {
        tracing::debug!(status = e.status, code = e.code, message = %e.message, "refused request");
        self.handler.record_error(ctx, e.code);
        self.body.clear();
        e.write_body(&mut self.body);
        self.write(wall, e.status, JSON, e.allow, Connection::Close, false, out);
        self.stop();
    }

    /// Answers 408 and stops reading.
    fn time_out(&mut self, wall: SystemTime, out: &mut Vec<u8>) {
        let what = if self.pending.is_some() {
            "body"
        } else {
            "head"
        };
        let limit = if self.pending.is_some() {
            self.limits.body_timeout
        } else {
            self.limits.head_timeout
        };
        let e = HttpError::new(
            408,
            "timeout",
            format!(
                "request {what} not received within {} ms",
                limit.as_millis()
            ),
        );
        self.body.clear();
        e.write_body(&mut self.body);
        self.write(wall, 408, JSON, None, Connection::Close, false, out);
        self.stop();
    }

    fn stop(&mut self) {
        self.closing = true;
        self.pending = None;
        self.head_deadline = None;
        self.body_deadline = None;
    }

    /// Appends the response whose body is in `self.body`.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        wall: SystemTime,
        status: u16,
        content_type: &str,
        allow: Option<&str>,
        connection: Connection,
        head_only: bool,
        out: &mut Vec<u8>,
    ) {
        let h = ResponseHead {
            status,
            content_type: (!self.body.is_empty()).then_some(content_type),
            allow,
            content_length: self.body.len(),
            connection,
            extra: "",
        };
        response::write_head(out, self.date.format(wall), &h);
        self.finish(head_only, out);
    }

    /// Appends the body after a head (none for `HEAD`, 204 and 304) and trims the buffer.
    fn finish(&mut self, head_only: bool, out: &mut Vec<u8>) {
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        if self.body.capacity() > KEEP_BODY_CAPACITY {
            self.body = Vec::new();
        }
    }
}

/// The media type of an event stream (Server-Sent Events): see [`Reply`].
pub const EVENT_STREAM: &str = "text/event-stream";

/// The media type of every JSON response.
pub(crate) const JSON: &str = "application/json";
