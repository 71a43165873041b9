//! The live watch (`GET /v1/watch?ids=…`, Server-Sent Events) as far as it is sans-IO: the
//! request ([`open`], answered by [`crate::router`]) and the event stream's text ([`write_retry`],
//! [`write_status`], [`write_reset`], [`write_ping`]). The driver (presenced-server) owns the
//! change feed, decides event ids and resume points, and writes the stream with these.
//!
//! Wire format (docs/api.md, "Live watch"): `retry: 2000`, then per id `event: status` /
//! `id: <event id>` / `data: <status JSON on one line>` and an empty line; `event: reset` /
//! `data: {}` when a resume point is gone; `: ping` as heartbeat.
//!
//! Privacy rule of the public endpoints (`<web unknown>`): in `hide` mode (the default) a user who
//! is not online is written exactly as an unknown id (`known:false`, no clients, no time, no
//! ext), so a page cannot tell "offline" from "never existed"; in `show` mode as-is.
//!
//! Invariants: every frame ends with an empty line; `data:` is one line (the JSON writer escapes
//! every control character). No I/O, no clock.

use presenced_core::{Sid, Status};

use crate::api::{ids_from_query, write_status as write_json};
use crate::backend::{Backend, WatchSlot};
use crate::http::{HttpError, Reply, Request, EVENT_STREAM};

/// An accepted `GET /v1/watch`, kept by the router until the driver takes it
/// ([`Router::take_watch`](crate::router::Router::take_watch)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// The ids, in request order (at most the batch limit).
    pub ids: Vec<Sid>,
    /// The `Last-Event-ID` header, as sent.
    pub last_event_id: Option<String>,
}

/// Answers `GET /v1/watch?ids=…`: checks the ids like `GET /v1/presence` (400 `invalid_id`,
/// `too_many_ids`), then reserves a stream ([`Backend::open_watch`]: 404 when the web endpoints
/// are off, 503 `too_many_watchers` when full). On success the reply starts an event stream and
/// the request is returned for the driver.
pub(crate) fn open(
    req: &Request<'_>,
    backend: &dyn Backend,
    ids: &mut Vec<Sid>,
) -> Result<(Reply, WatchRequest), HttpError> {
    let parsed = ids_from_query(req.query, backend.batch_limit(), ids);
    match backend.open_watch() {
        WatchSlot::Off => Err(HttpError::new(404, "not_found", "no such resource")),
        WatchSlot::Full => parsed.and(Err(HttpError::new(
            503,
            "too_many_watchers",
            "this node serves as many watch streams as it may; retry later or elsewhere",
        ))),
        WatchSlot::Open => {
            if let Err(e) = parsed {
                backend.release_watch();
                return Err(e);
            }
            let reply = Reply {
                status: 200,
                content_type: EVENT_STREAM,
            };
            let request = WatchRequest {
                ids: std::mem::take(ids),
                last_event_id: req.last_event_id.map(str::to_owned),
            };
            Ok((reply, request))
        }
    }
}

/// The first line of every stream: reconnect after 2 s.
pub fn write_retry(out: &mut Vec<u8>) {
    out.extend_from_slice(b"retry: 2000\n\n");
}

/// One `event: status` frame with event id `id`; `hide` applies the privacy rule above.
pub fn write_status(out: &mut Vec<u8>, id: &str, status: &Status, hide: bool) {
    out.extend_from_slice(b"event: status\nid: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    if hide && !status.online {
        write_json(out, &Status::unknown(status.sid));
    } else {
        write_json(out, status);
    }
    out.extend_from_slice(b"\n\n");
}

/// `event: reset`: forget what the stream said; fresh statuses of every id follow.
pub fn write_reset(out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: reset\ndata: {}\n\n");
}

/// The heartbeat comment.
pub fn write_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b": ping\n\n");
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::{Instant, SystemTime};

    use presenced_core::Sid;

    use super::*;
    use crate::backend::{ClusterView, Frontend};
    use crate::fuzzing::FakeBackend;
    use crate::http::{HttpConn, HttpLimits};
    use crate::router::Router;

    /// [`FakeBackend`] with a watch slot answer and a count of reservations.
    struct Watching {
        inner: FakeBackend,
        slot: WatchSlot,
        open: Cell<i32>,
    }

    impl Backend for Watching {
        fn node_id(&self) -> u16 {
            self.inner.node_id()
        }
        fn now_ms(&self) -> u64 {
            self.inner.now_ms()
        }
        fn batch_limit(&self) -> usize {
            2
        }
        fn statuses(&self, ids: &[Sid], out: &mut Vec<Status>) {
            self.inner.statuses(ids, out);
        }
        fn not_ready_reason(&self) -> Option<String> {
            None
        }
        fn cluster(&self) -> ClusterView {
            self.inner.cluster()
        }
        fn render_metrics(&self, out: &mut String) {
            self.inner.render_metrics(out);
        }
        fn record_query(&self, f: Frontend, ids: usize, micros: u64) {
            self.inner.record_query(f, ids, micros);
        }
        fn record_error(&self, code: &'static str) {
            self.inner.record_error(code);
        }
        fn open_watch(&self) -> WatchSlot {
            if self.slot == WatchSlot::Open {
                self.open.set(self.open.get() + 1);
            }
            self.slot
        }
        fn release_watch(&self) {
            self.open.set(self.open.get() - 1);
        }
    }

    fn run(slot: WatchSlot, input: &str) -> (String, HttpConn<Router>, i32) {
        let b = Watching {
            inner: FakeBackend::new(),
            slot,
            open: Cell::new(0),
        };
        let mut conn = HttpConn::new(HttpLimits::default(), Router::default());
        let mut out = Vec::new();
        let o = conn.handle_input(
            Instant::now(),
            SystemTime::UNIX_EPOCH,
            input.as_bytes(),
            16,
            &b,
            &mut out,
        );
        assert_eq!(o.consumed, input.len());
        (String::from_utf8(out).unwrap(), conn, b.open.get())
    }

    #[test]
    fn watch_request_starts_a_stream_and_nothing_after_it_is_read() {
        let req = "GET /v1/watch?ids=5,6 HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 1-2-3\r\n\r\n\
                   GET /v1/presence/5 HTTP/1.1\r\nHost: a\r\n\r\n";
        let (out, mut conn, open) = run(WatchSlot::Open, req);
        assert!(conn.streaming());
        assert_eq!(open, 1);
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("Content-Type: text/event-stream\r\n"));
        assert!(
            !out.contains("Content-Length"),
            "a stream is close-delimited: {out}"
        );
        assert!(
            out.ends_with("\r\n\r\n"),
            "only the head; the pipelined request is ignored"
        );
        let w = conn.handler_mut().take_watch().unwrap();
        assert_eq!(w.ids, vec![Sid::new(5).unwrap(), Sid::new(6).unwrap()]);
        assert_eq!(w.last_event_id.as_deref(), Some("1-2-3"));
    }

    #[test]
    fn watch_refusals() {
        let get = |q: &str| format!("GET /v1/watch?ids={q} HTTP/1.1\r\nHost: a\r\n\r\n");
        let cases = [
            (WatchSlot::Off, get("1"), "HTTP/1.1 404", 0),
            (WatchSlot::Off, get("x"), "HTTP/1.1 404", 0),
            (WatchSlot::Full, get("1"), "HTTP/1.1 503", 0),
            (WatchSlot::Open, get("1,2,3"), "HTTP/1.1 400", 0),
            (WatchSlot::Open, get("x"), "HTTP/1.1 400", 0),
            (
                WatchSlot::Open,
                "POST /v1/watch HTTP/1.1\r\nHost: a\r\n\r\n".into(),
                "HTTP/1.1 405",
                0,
            ),
        ];
        for (slot, req, start, reserved) in cases {
            let (out, conn, open) = run(slot, &req);
            assert!(out.starts_with(start), "{req}: {out}");
            assert!(!conn.streaming());
            assert_eq!(open, reserved, "{req}: a refused stream keeps no place");
        }
        let (out, _, _) = run(WatchSlot::Full, &get("1"));
        assert!(out.contains("too_many_watchers"), "{out}");
    }

    #[test]
    fn frames() {
        let sid = Sid::new(7).unwrap();
        let mut out = Vec::new();
        write_retry(&mut out);
        write_status(&mut out, "1-ab-3", &Status::unknown(sid), false);
        write_reset(&mut out);
        write_ping(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "retry: 2000\n\nevent: status\nid: 1-ab-3\ndata: {\"id\":\"7\",\"known\":false,\
             \"online\":false,\"clients\":[],\"accepts_strangers\":false,\"changed_at\":null,\
             \"ext\":{}}\n\nevent: reset\ndata: {}\n\n: ping\n\n"
        );
    }

    #[test]
    fn hide_writes_an_offline_user_as_unknown() {
        let sid = Sid::new(7).unwrap();
        let offline = Status {
            known: true,
            accepts_strangers: true,
            changed_at_ms: Some(1),
            ..Status::unknown(sid)
        };
        let (mut hidden, mut unknown, mut shown) = (Vec::new(), Vec::new(), Vec::new());
        write_status(&mut hidden, "e", &offline, true);
        write_status(&mut unknown, "e", &Status::unknown(sid), true);
        write_status(&mut shown, "e", &offline, false);
        assert_eq!(hidden, unknown);
        assert_ne!(hidden, shown);
    }
}
