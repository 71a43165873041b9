//! The watch streams a worker runs: `GET /v1/watch` (SSE) and raw-TCP `SUBSCRIBE` connections,
//! once their sans-IO session accepted them (`HttpConn::streaming` and `Router::take_watch`,
//! `QuerySession::take_subscription`), become a [`Watcher`] session fed from the node's change
//! feed (`crate::watch`).
//!
//! - Start ([`Worker::start_watch`]): no resume point: the current status of every id, with the
//!   feed's head as event id; a resume point of this feed still in the ring: every retained
//!   change of a watched id after it (each id once, at its last change, in feed order); any
//!   other: `reset`, then the current statuses.
//! - Live ([`Worker::deliver_watch`], every loop round): the worker reads what the feed gained
//!   since its own cursor (one short lock) and, through its index sid → streams, writes one
//!   event per change of a watched id to each stream whose cursor is behind it, the status read
//!   from the store at that moment.
//! - A stream whose unsent output passes [`CUT_AFTER`] (its client does not read) is closed and
//!   counted: it never holds the node's memory or delays other streams; it resumes from its last
//!   event id. A worker that fell so far behind that the ring dropped its cursor restarts each of
//!   its streams with `reset`.
//! - Heartbeat: an SSE stream that wrote nothing for [`PING_EVERY`] gets `: ping`. Streams are
//!   exempt from the idle timeout.
//!
//! Thread model: runs on the worker's thread; touches `Shared::watch` (atomics, the feed's lock
//! per read) and the store (one guard per delivery round).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use presenced_core::proto::query::ServerFrame;
use presenced_core::proto::{put_error, ErrorCode};
use presenced_core::{Sid, Status};
use presenced_frontends::watch as sse;

use super::login::Failure;
use super::{Conn, Session, Worker};
use crate::watch::{Resume, Watch};

/// Unsent output beyond which a stream is cut.
pub(super) const CUT_AFTER: usize = 256 << 10;
/// Longest an SSE stream stays silent before a `: ping`.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Feed entries read per lock: publishers wait at most for one copy of this many.
const READ_MAX: usize = 8192;

/// How a stream is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Server-Sent Events (`GET /v1/watch`).
    Sse,
    /// Query protocol v2 `EVENT`/`RESET` frames for `SUBSCRIBE` `req_id`.
    Tcp { req_id: u32 },
}

/// One stream's state.
#[derive(Debug)]
pub(super) struct Watcher {
    kind: Kind,
    /// The ids, in request order (duplicates kept: a snapshot answers each).
    ids: Vec<Sid>,
    /// INVARIANT: every feed entry of a watched id up to this number was written (or covered by
    /// a status written after it).
    cursor: u64,
    last_write: Instant,
    client: IpAddr,
}

impl Watcher {
    /// Input on a stream: an SSE client has nothing more to say (ignored); a raw-TCP watcher
    /// may send nothing after its `SUBSCRIBE` (`ERROR` 5, closed).
    pub(super) fn handle_input(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> (usize, Option<Failure>) {
        match self.kind {
            Kind::Sse => (input.len(), None),
            Kind::Tcp { .. } if input.is_empty() => (0, None),
            Kind::Tcp { .. } => {
                let m = "nothing may follow SUBSCRIBE on a watch connection";
                put_error(out, ErrorCode::Protocol, m);
                (input.len(), Some(Failure::Protocol(m.to_owned())))
            }
        }
    }

    fn write_event(&mut self, w: &Watch, out: &mut Vec<u8>, seq: u64, status: &Status) {
        let id = w.event_id(seq);
        match self.kind {
            Kind::Sse => sse::write_status(out, &id, status, w.hide),
            Kind::Tcp { req_id } => ServerFrame::Event {
                req_id,
                event_id: id.into_bytes(),
                status: status.clone(),
            }
            .encode(out),
        }
        self.cursor = self.cursor.max(seq);
    }

    fn write_reset(&self, w: &Watch, out: &mut Vec<u8>) {
        w.resets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.kind {
            Kind::Sse => sse::write_reset(out),
            Kind::Tcp { req_id } => ServerFrame::Reset {
                req_id,
                message: "the resume point is not in this node's retention window".into(),
            }
            .encode(out),
        }
    }
}

/// A worker's watch state.
#[derive(Debug, Default)]
pub(super) struct Watchers {
    /// Which streams watch each sid. INVARIANT: exactly the `Session::Watch` connections.
    index: HashMap<Sid, Vec<usize>>,
    /// The feed number this worker has delivered up to. INVARIANT: at most every stream's
    /// cursor.
    cursor: u64,
    buf: Vec<(u64, Sid)>,
    count: usize,
    last_ping: Option<Instant>,
}

impl Worker {
    /// Turns connection `key` into a stream if its session just accepted one.
    pub(super) fn start_watch(&mut self, key: usize) {
        let shared = self.shared.clone();
        let w = &shared.watch;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let (kind, ids, resume, reserved) = match &mut c.session {
            Session::Http(h) if h.streaming() => match h.handler_mut().take_watch() {
                Some(r) => (
                    Kind::Sse,
                    r.ids,
                    r.last_event_id.map(String::into_bytes),
                    true,
                ),
                None => return,
            },
            Session::Query(q) => match q.take_subscription() {
                Some(s) => (Kind::Tcp { req_id: s.req_id }, s.ids, Some(s.resume), false),
                None => return,
            },
            _ => return,
        };
        let client = c.client_addr().ip();
        if !reserved && !w.admit(Some(client)) {
            put_error(
                c.io.output(),
                ErrorCode::Unavailable,
                "too many watchers on this node",
            );
            c.closing = true;
            return;
        }
        let mut watcher = Watcher {
            kind,
            ids,
            cursor: 0,
            last_write: Instant::now(),
            client,
        };
        let out = c.io.output();
        if kind == Kind::Sse {
            sse::write_retry(out);
        }
        let mut resume = w.resume(resume.as_deref());
        if let Resume::After(seq) = resume {
            if catch_up(w, &shared.store, &mut watcher, seq, out).is_err() {
                resume = Resume::Reset;
            }
        }
        match resume {
            Resume::After(_) => {}
            Resume::Reset => {
                watcher.write_reset(w, out);
                snapshot(w, &shared.store, &mut watcher, out);
            }
            Resume::Fresh => snapshot(w, &shared.store, &mut watcher, out),
        }
        for sid in &watcher.ids {
            let keys = self.watchers.index.entry(*sid).or_default();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        c.session = Session::Watch(Box::new(watcher));
        c.last_active = Instant::now();
        self.watchers.count += 1;
        w.held(self.idx, 1);
    }

    /// Forgets stream `c` (connection `key`), which is closing.
    pub(super) fn forget_watcher(&mut self, key: usize, c: &Conn) {
        let Session::Watch(watcher) = &c.session else {
            return;
        };
        for sid in &watcher.ids {
            if let Some(keys) = self.watchers.index.get_mut(sid) {
                keys.retain(|k| *k != key);
                if keys.is_empty() {
                    self.watchers.index.remove(sid);
                }
            }
        }
        self.watchers.count = self.watchers.count.saturating_sub(1);
        self.shared.watch.held(self.idx, -1);
        self.shared.watch.release(Some(watcher.client));
    }

    /// Writes what the feed gained since the last round to the streams that watch it.
    pub(super) fn deliver_watch(&mut self) {
        let shared = self.shared.clone();
        let w = &shared.watch;
        w.rearm(self.idx);
        let head = w.feed().head();
        if self.watchers.count == 0 {
            self.watchers.cursor = head;
            return;
        }
        let mut touched = Vec::new();
        let mut buf = std::mem::take(&mut self.watchers.buf);
        while self.watchers.cursor < head {
            buf.clear();
            match w.feed().read(self.watchers.cursor, READ_MAX, &mut buf) {
                Ok(last) => self.watchers.cursor = last,
                Err(_) => {
                    self.restart_all(head);
                    break;
                }
            }
            let pinned = shared.store.pin();
            for &(seq, sid) in &buf {
                let Some(keys) = self.watchers.index.get(&sid) else {
                    continue;
                };
                let status = pinned.status(sid);
                for &key in keys {
                    let Some(c) = self.conns.get_mut(key) else {
                        continue;
                    };
                    if let Session::Watch(watcher) = &mut c.session {
                        if seq > watcher.cursor {
                            watcher.write_event(w, c.io.output(), seq, &status);
                            watcher.last_write = Instant::now();
                            w.events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            touched.push(key);
                        }
                    }
                }
            }
        }
        self.watchers.buf = buf;
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            let slow = self
                .conns
                .get(key)
                .is_some_and(|c| c.io.unsent() > CUT_AFTER);
            if slow {
                w.cut.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.close(key);
            } else {
                self.pending.push(key);
            }
        }
    }

    /// The ring dropped this worker's cursor: every stream here starts over with `reset`.
    fn restart_all(&mut self, head: u64) {
        let shared = self.shared.clone();
        self.watchers.cursor = head;
        for (key, c) in self.conns.iter_mut() {
            if let Session::Watch(watcher) = &mut c.session {
                let out = c.io.output();
                watcher.write_reset(&shared.watch, out);
                snapshot(&shared.watch, &shared.store, watcher, out);
                self.pending.push(key);
            }
        }
    }

    /// Sends `: ping` on SSE streams silent for [`PING_EVERY`] (checked once a second).
    pub(super) fn ping_watchers(&mut self, now: Instant) {
        if self.watchers.count == 0
            || self
                .watchers
                .last_ping
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.watchers.last_ping = Some(now);
        for (key, c) in self.conns.iter_mut() {
            if let Session::Watch(watcher) = &mut c.session {
                if watcher.kind == Kind::Sse
                    && now.saturating_duration_since(watcher.last_write) >= PING_EVERY
                {
                    sse::write_ping(c.io.output());
                    watcher.last_write = now;
                    self.pending.push(key);
                }
            }
        }
    }
}

/// Writes every retained change of `watcher`'s ids after `after`, each id once (at its last
/// change), and moves its cursor to the feed's head. `Err`: `after` is not in the ring.
fn catch_up(
    w: &Watch,
    store: &presenced_core::Store,
    watcher: &mut Watcher,
    after: u64,
    out: &mut Vec<u8>,
) -> Result<(), crate::watch::Gone> {
    let mut wanted: Vec<Sid> = watcher.ids.clone();
    wanted.sort_unstable();
    wanted.dedup();
    let mut missed: Vec<(u64, Sid)> = Vec::new();
    let mut buf = Vec::new();
    let mut cursor = after;
    loop {
        buf.clear();
        let last = w.feed().read(cursor, READ_MAX, &mut buf)?;
        missed.extend(buf.iter().filter(|(_, s)| wanted.binary_search(s).is_ok()));
        if last == cursor {
            break;
        }
        cursor = last;
    }
    // Each id once, at its last change, in feed order.
    let mut last_of: HashMap<Sid, u64> = HashMap::new();
    for (seq, sid) in &missed {
        last_of.insert(*sid, *seq);
    }
    missed.retain(|(seq, sid)| last_of.get(sid) == Some(seq));
    let pinned = store.pin();
    for (seq, sid) in missed {
        let status = pinned.status(sid);
        watcher.write_event(w, out, seq, &status);
        w.events.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    watcher.cursor = cursor;
    Ok(())
}

/// Writes the current status of every id of `watcher`, in request order, with the feed's head
/// (read before the store) as event id.
fn snapshot(w: &Watch, store: &presenced_core::Store, watcher: &mut Watcher, out: &mut Vec<u8>) {
    let head = w.feed().head();
    let pinned = store.pin();
    let mut statuses = Vec::with_capacity(watcher.ids.len());
    pinned.statuses(&watcher.ids, &mut statuses);
    drop(pinned);
    for s in &statuses {
        watcher.write_event(w, out, head, s);
    }
    w.events
        .fetch_add(statuses.len() as u64, std::sync::atomic::Ordering::Relaxed);
    watcher.cursor = head;
}
