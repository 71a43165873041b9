//! A worker thread: one mio `Poll`, a `Slab` of connections, and the protocol session of each.
//!
//! The worker only moves bytes: every protocol decision is made by the sans-IO sessions
//! (`PoolSession`, `QuerySession`, `HttpConn`). Per connection it keeps the unconsumed input and
//! the unsent output, and it follows mio's rules: readiness is drained until `WouldBlock`,
//! `Interrupted` is retried, `Ok(0)` means the peer closed, unknown tokens are ignored, and
//! observed readiness is kept apart from the registered interest.
//!
//! Work per wakeup is bounded: at most [`FRAME_BUDGET`] frames or requests per connection, and at
//! most [`READ_CAP_SLACK`] bytes beyond one maximal frame buffered per connection. A connection
//! with work left goes on the `pending` list and is served again before the next blocking poll.
//! A connection whose peer does not read its answers stops being read from once
//! [`OUT_CAP`] bytes are waiting.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_core::proto::pool_session::{PoolCtx, PoolSession};
use presenced_core::proto::query::{QueryCtx, QuerySession};
use slab::Slab;
use tracing::{debug, warn};

use super::Shared;
use crate::http::HttpConn;
use crate::metrics::Proto;

/// Most frames or requests served per connection per wakeup.
const FRAME_BUDGET: usize = 256;
/// Output bytes waiting after which a connection's input is left unread.
const OUT_CAP: usize = 4 << 20;
/// Input buffered beyond one maximal frame or request.
const READ_CAP_SLACK: usize = 256 << 10;
/// How often idle connections and HTTP deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
const WAKER: Token = Token(usize::MAX);

/// What the acceptor hands a worker.
pub(crate) type NewConn = (TcpStream, Proto, SocketAddr);

/// The acceptor's end of a worker.
pub(crate) struct Handle {
    pub(crate) tx: Sender<NewConn>,
    pub(crate) waker: Arc<Waker>,
}

enum Session {
    Pool(PoolSession),
    Query(QuerySession),
    Http(Box<HttpConn>),
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    proto: Proto,
    session: Session,
    /// INVARIANT: `rbuf[rpos..]` is the input not consumed by the session yet.
    rbuf: Vec<u8>,
    rpos: usize,
    /// INVARIANT: `wbuf[wpos..]` is the output not written to the socket yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Readiness observed and not yet drained to `WouldBlock`.
    readable: bool,
    /// Whether WRITABLE is part of the registered interest.
    want_write: bool,
    /// The peer closed its half.
    eof: bool,
    /// Close as soon as the output is flushed.
    closing: bool,
    last_active: Instant,
    /// Pool output held back until a peer has the updates it acks (`replica` policy): the local
    /// update number needed and the bytes, in order.
    held: std::collections::VecDeque<(u64, Vec<u8>)>,
}

impl Conn {
    fn input_len(&self) -> usize {
        self.rbuf.len() - self.rpos
    }
    fn output_len(&self) -> usize {
        self.wbuf.len() - self.wpos + self.held.iter().map(|h| h.1.len()).sum::<usize>()
    }
}

/// One worker thread's state.
pub(crate) struct Worker {
    idx: usize,
    poll: Poll,
    rx: Receiver<NewConn>,
    shared: Arc<Shared>,
    conns: Slab<Conn>,
    pending: Vec<usize>,
    /// Connections with held output, re-checked on every wakeup.
    holding: std::collections::BTreeSet<usize>,
    read_cap: usize,
}

impl Worker {
    pub(crate) fn new(idx: usize, shared: Arc<Shared>) -> std::io::Result<(Self, Handle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let max_frame = shared.pool_limits.max_frame as usize;
        let max_http = shared.http_limits.max_head + shared.http_limits.max_body;
        let read_cap = max_frame.max(max_http) + READ_CAP_SLACK;
        let w = Self {
            idx,
            poll,
            rx,
            shared,
            conns: Slab::new(),
            pending: Vec::new(),
            holding: std::collections::BTreeSet::new(),
            read_cap,
        };
        Ok((w, Handle { tx, waker }))
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        loop {
            let timeout = if self.pending.is_empty() {
                SWEEP_EVERY
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(worker = self.idx, "poll failed: {e}");
                    return;
                }
            }
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.close_all();
                return;
            }
            let mut ready = std::mem::take(&mut self.pending);
            ready.extend(self.holding.iter().copied());
            for ev in events.iter() {
                if ev.token() == WAKER {
                    self.accept_new();
                    continue;
                }
                let key = ev.token().0;
                let Some(c) = self.conns.get_mut(key) else {
                    continue;
                };
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    c.readable = true;
                }
                ready.push(key);
            }
            ready.sort_unstable();
            ready.dedup();
            for key in ready {
                self.service(key);
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep(last_sweep);
            }
        }
    }

    fn accept_new(&mut self) {
        while let Ok((mut stream, proto, peer)) = self.rx.try_recv() {
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
            {
                warn!(%peer, "cannot register connection: {e}");
                self.shared.metrics.closed(proto);
                continue;
            }
            let session = match proto {
                Proto::Pool => Session::Pool(PoolSession::new(self.shared.pool_limits)),
                Proto::Query => Session::Query(QuerySession::default()),
                Proto::Http => {
                    Session::Http(Box::new(HttpConn::new(self.shared.http_limits.clone())))
                }
            };
            entry.insert(Conn {
                stream,
                peer,
                proto,
                session,
                rbuf: Vec::new(),
                rpos: 0,
                wbuf: Vec::new(),
                wpos: 0,
                // Data may have arrived before registration: try reading once.
                readable: true,
                want_write: false,
                eof: false,
                closing: false,
                last_active: Instant::now(),
                held: std::collections::VecDeque::new(),
            });
            self.service(key);
        }
    }

    /// Reads, processes and writes for one connection, then closes or re-queues it as needed.
    fn service(&mut self, key: usize) {
        let read_cap = self.read_cap;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.readable && !c.eof && !c.closing {
            if let Err(e) = read_some(c, read_cap) {
                debug!(peer = %c.peer, "read failed: {e}");
                self.close(key);
                return;
            }
        }
        let mut more = false;
        if let Some(c) = self.conns.get_mut(key) {
            if !c.closing && c.output_len() < OUT_CAP && c.input_len() > 0 {
                more = process(&self.shared, self.idx, c);
            }
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        release_held(&self.shared, c);
        if c.held.is_empty() {
            self.holding.remove(&key);
        } else {
            self.holding.insert(key);
        }
        if let Err(e) = flush(c) {
            debug!(peer = %c.peer, "write failed: {e}");
            self.close(key);
            return;
        }
        let flushed = c.output_len() == 0 && c.held.is_empty();
        if flushed && (c.closing || (c.eof && !more)) {
            self.close(key);
            return;
        }
        let want_write = c.wpos < c.wbuf.len();
        let interest = if want_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if want_write != c.want_write {
            c.want_write = want_write;
            if self
                .poll
                .registry()
                .reregister(&mut c.stream, Token(key), interest)
                .is_err()
            {
                self.close(key);
                return;
            }
        }
        let input_left = c.readable && !c.eof && c.input_len() < read_cap;
        if more || (input_left && c.output_len() < OUT_CAP && !c.closing) {
            self.pending.push(key);
        }
    }

    fn close(&mut self, key: usize) {
        self.holding.remove(&key);
        if self.conns.contains(key) {
            let mut c = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.shared.metrics.closed(c.proto);
            debug!(peer = %c.peer, "connection closed");
        }
    }

    /// Closes idle connections and answers HTTP requests whose head or body is overdue.
    fn sweep(&mut self, now: Instant) {
        let idle = Duration::from_millis(self.shared.config.limits().idle_timeout_ms);
        let mut expired = Vec::new();
        let mut to_flush = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if let Session::Http(h) = &mut c.session {
                if h.poll_timeout().is_some_and(|d| d <= now) {
                    let wall = self.shared.clock.now_system();
                    if h.handle_timeout(now, wall, &mut c.wbuf) {
                        debug!(peer = %c.peer, "http request timed out");
                        self.shared.metrics.error("timeout");
                        c.closing = true;
                    }
                    to_flush.push(key);
                    continue;
                }
            }
            if now.saturating_duration_since(c.last_active) > idle && c.output_len() == 0 {
                debug!(peer = %c.peer, "idle timeout");
                expired.push(key);
            }
        }
        for key in expired {
            self.shared.metrics.error("idle_timeout");
            self.close(key);
        }
        for key in to_flush {
            self.service(key);
        }
    }

    fn close_all(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(c) = self.conns.get_mut(key) {
                let _ = flush(c);
            }
            self.close(key);
        }
    }
}

/// Moves held pool output whose updates a peer now has (or that no peer can take) to `wbuf`.
fn release_held(shared: &Shared, c: &mut Conn) {
    if c.held.is_empty() {
        return;
    }
    let replicated = shared.repl.replicated();
    let alone = !shared.repl.peers_alive();
    while c
        .held
        .front()
        .is_some_and(|(need, _)| *need <= replicated || alone)
    {
        if let Some((_, bytes)) = c.held.pop_front() {
            c.wbuf.extend_from_slice(&bytes);
        }
    }
}

/// Reads until `WouldBlock`, end of stream, or `cap` bytes of unconsumed input.
fn read_some(c: &mut Conn, cap: usize) -> std::io::Result<()> {
    if c.rpos > 0 && c.rpos * 2 >= c.rbuf.len() {
        c.rbuf.drain(..c.rpos);
        c.rpos = 0;
    }
    let mut chunk = [0u8; 64 * 1024];
    while c.input_len() < cap {
        let want = chunk.len().min(cap - c.input_len());
        let Some(buf) = chunk.get_mut(..want) else {
            break;
        };
        match c.stream.read(buf) {
            Ok(0) => {
                c.eof = true;
                c.readable = false;
                break;
            }
            Ok(n) => {
                c.rbuf.extend_from_slice(buf.get(..n).unwrap_or_default());
                c.last_active = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                c.readable = false;
                break;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes until `WouldBlock` or all of `wbuf` is gone (held output stays held).
fn flush(c: &mut Conn) -> std::io::Result<()> {
    while c.wpos < c.wbuf.len() {
        match c.stream.write(c.wbuf.get(c.wpos..).unwrap_or_default()) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if c.wpos >= c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
    }
    Ok(())
}

/// Feeds the unconsumed input to the session. Returns whether whole frames are left.
fn process(shared: &Shared, worker: usize, c: &mut Conn) -> bool {
    let input = c.rbuf.get(c.rpos..).unwrap_or_default();
    let start = Instant::now();
    let m = &shared.metrics;
    let (consumed, more, error) = match &mut c.session {
        Session::Pool(s) => {
            let pinned = shared.store.pin();
            let mut changed = Vec::new();
            let token = shared
                .config
                .security()
                .pool_token
                .as_deref()
                .map(str::as_bytes);
            let mut ctx = PoolCtx {
                store: &pinned,
                hlc: &shared.hlc,
                streams: &shared.streams,
                now_ms: shared.clock.now_ms(),
                token,
                changed: &mut changed,
            };
            let out_start = c.wbuf.len();
            let r = s.handle_input(input, FRAME_BUDGET, &mut ctx, &mut c.wbuf);
            drop(pinned);
            // Hand the changed users to replication; under the `replica` policy, hold this
            // call's output (its acks) until a peer has them.
            let last = shared.repl.submit(changed);
            let need = if last > 0 {
                last
            } else {
                c.held.back().map_or(0, |h| h.0)
            };
            if shared.ack_replica && need > 0 && shared.repl.peers_alive() {
                let bytes = c.wbuf.split_off(out_start);
                c.held.push_back((need, bytes));
            }
            match r {
                Ok(o) => {
                    m.updates.fetch_add(o.events, Ordering::Relaxed);
                    if o.consumed > 0 {
                        m.pool_batches.fetch_add(1, Ordering::Relaxed);
                        m.ingest_latency
                            .record(worker, start.elapsed().as_micros() as u64);
                    }
                    (o.consumed, o.more, None)
                }
                Err(e) => (0, false, Some(e.to_string())),
            }
        }
        Session::Query(s) => {
            let pinned = shared.store.pin();
            let ctx = QueryCtx {
                limits: &shared.query_limits,
                store: &pinned,
                node: shared.me.id,
                now_ms: shared.clock.now_ms(),
            };
            let r = s.handle_input(input, FRAME_BUDGET, &ctx, &mut c.wbuf);
            match r {
                Ok(o) => {
                    if let Some(micros) =
                        (start.elapsed().as_micros() as u64).checked_div(o.requests)
                    {
                        let ids = o.ids / o.requests;
                        for _ in 0..o.requests {
                            m.query(0, worker, ids, micros);
                        }
                    }
                    (o.consumed, o.more, None)
                }
                Err(e) => (0, false, Some(e.to_string())),
            }
        }
        Session::Http(h) => {
            let backend = shared.backend(worker, start);
            let wall = shared.clock.now_system();
            let o = h.handle_input(start, wall, input, FRAME_BUDGET, &backend, &mut c.wbuf);
            if o.close {
                c.closing = true;
            }
            (o.consumed, o.more, None)
        }
    };
    c.rpos += consumed.min(c.input_len());
    if let Some(reason) = error {
        let proto = match c.proto {
            Proto::Pool => "pool",
            Proto::Query => "query",
            Proto::Http => "http",
        };
        warn!(peer = %c.peer, "closing {proto} connection: {reason}");
        m.error(if proto == "pool" {
            "pool_protocol"
        } else {
            "query_protocol"
        });
        c.closing = true;
    }
    more
}
