//! A worker thread: one mio `Poll`, a `Slab` of connections, and the protocol session of each.
//!
//! The worker only moves bytes: every protocol decision is made by the sans-IO sessions
//! (`PoolSession`, `QuerySession`, `HttpConn<Router>`). Per connection it keeps a
//! [`BufConn`] (unconsumed input, unsent output, mio's rules) and ignores unknown tokens.
//!
//! Work per wakeup is bounded: at most [`FRAME_BUDGET`] frames or requests per connection, and at
//! most [`READ_CAP_SLACK`] bytes beyond one maximal frame buffered per connection. A connection
//! with work left goes on the `pending` list and is served again before the next blocking poll.
//! A connection whose peer does not read its answers stops being read from, and served, once
//! `<limits max-output-bytes>` bytes are waiting: query and HTTP requests are answered one per
//! session call and the cap is checked before each, so its output stays under the cap plus one
//! response; its input stays under [`INPUT_CAP`] plus one read unless a single frame or request
//! needs more (then up to one maximal frame). One service adds at most one large answer
//! (`serve::SERVICE_OUTPUT`), and a round of the loop serves connections for at most
//! [`ROUND_BUDGET`] before it polls again, fresh readiness first and the rest of the round after
//! it: a flood of busy connections delays a new request by about one round, not by one answer
//! per flooding connection. (A connection re-queued round after round waits behind fresh
//! readiness, so it is served only when readiness leaves a round time.) A connection that starts
//! waiting for its peer has its buffers shrunk to what they hold. Across connections, `limits`
//! enforces `<limits output-budget-bytes>` over every connection's `Conn::footprint` (buffer
//! capacities, not lengths; policy in `crate::budget`), the handshake deadline and the idle
//! timeout.
//!
//! On a `<proxy-protocol>` listener a connection must come from a trusted balancer and start
//! with a PROXY header, consumed before its session sees a byte (`proxied`).

use std::collections::{BTreeSet, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Poll, Token, Waker};
use presenced_core::ack_gate::{AckGate, Need};
use presenced_core::proto::pool_session::PoolSession;
use presenced_core::proto::query::QuerySession;
use presenced_core::proto::{put_error, ErrorCode};
use presenced_frontends::http::HttpConn;
use presenced_frontends::router::Router;
use slab::Slab;
use tracing::{debug, warn};

pub(crate) use self::proxied::listener;
use self::serve::{process, serve, track_held};
use crate::conn::BufConn;
use crate::metrics::Proto;
use crate::ratelog::RateLimited;
use crate::shared::Shared;

mod limits;
mod login;
mod proxied;
mod serve;
mod watchers;

/// Most frames or requests served per connection per wakeup.
const FRAME_BUDGET: usize = 256;
/// Input buffered beyond one maximal frame or request.
const READ_CAP_SLACK: usize = 256 << 10;
/// Unconsumed input a connection may hold unless its next frame or request is larger.
const INPUT_CAP: usize = 64 << 10;
/// One warning line per second per protocol for connections closed on a protocol error.
static PROTOCOL_ERROR: [RateLimited; 3] =
    [RateLimited::new(), RateLimited::new(), RateLimited::new()];
/// Longest a round of the event loop serves connections before it polls again: the rest of the
/// round is served after the next poll, behind fresh readiness (new connections, new requests).
const ROUND_BUDGET: Duration = Duration::from_millis(5);
/// How often idle connections and HTTP deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
const WAKER: Token = Token(usize::MAX);
/// Longest a stopping worker waits for its connections to flush (held acks included).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the acceptor hands a worker: the stream, its listener, its peer, and the address it is
/// counted under in `Shared::admission`.
pub(crate) type NewConn = (TcpStream, Proto, SocketAddr, Option<IpAddr>);

/// The acceptor's end of a worker.
pub(crate) struct Handle {
    pub(crate) tx: Sender<NewConn>,
    pub(crate) waker: Arc<Waker>,
}

enum Session {
    Pool(Box<PoolSession>),
    Query(QuerySession),
    Http(Box<HttpConn<Router>>),
    /// A watch stream (SSE or raw-TCP subscribe), started by one of the above (`watchers`).
    Watch(Box<watchers::Watcher>),
}

struct Conn {
    io: BufConn,
    /// The socket's peer: the client, or the load balancer on a PROXY protocol listener.
    peer: SocketAddr,
    /// The source address of the PROXY header, once one gave it.
    client: Option<SocketAddr>,
    /// The listener expects a PROXY header and it has not been consumed yet.
    awaiting_header: bool,
    proto: Proto,
    session: Session,
    /// Close as soon as the output is flushed.
    closing: bool,
    /// The session's last call said work is left: call it again even without new input.
    again: bool,
    last_active: Instant,
    /// When the connection was accepted (the handshake deadline counts from here).
    accepted: Instant,
    /// The handshake is complete: for pool and query, `HELLO` answered by `WELCOME`; for HTTP,
    /// the PROXY header where one is owed (else from the start).
    handshaken: bool,
    /// The address the connection is counted under in `Shared::admission`.
    counted: Option<IpAddr>,
    /// INVARIANT: the bytes this connection has added to `Shared::output` (its `footprint`).
    accounted: usize,
    /// Its unsent output was at `max-output-bytes` after the last service: it waits for its
    /// peer to read, and its buffers were shrunk to what they hold when it started waiting.
    waiting: bool,
    /// Its next frame or request is larger than [`INPUT_CAP`]: read up to the full read cap.
    big_frame: bool,
    /// Pool replies, released in order once the updates they ack are on a peer (the policy
    /// decides; see `presenced_core::ack_gate`).
    gate: AckGate,
}

impl Conn {
    /// The client's address: the source of the connection's PROXY header when it gave one
    /// (`LOCAL` and unknown addresses keep the socket's peer), else the socket's peer. Every
    /// log line and any per-address accounting of a connection use this.
    fn client_addr(&self) -> SocketAddr {
        self.client.unwrap_or(self.peer)
    }

    /// Output not written yet, held output included.
    fn output_len(&self) -> usize {
        self.io.unsent() + self.gate.held_bytes()
    }

    /// The memory this connection holds in buffers, bytes: the capacity of its input and output
    /// buffers and its held output. This is what `Shared::output` (the node-wide budget)
    /// counts, so the budget bounds what connections cost, not only what they have to send.
    fn footprint(&self) -> usize {
        self.io.footprint() + self.gate.held_bytes()
    }

    /// Queues `ERROR` 8 (`Unavailable`) with `message` behind any reply still held: replies
    /// leave in order.
    fn send_unavailable(&mut self, shared: &Shared, message: &str) {
        let mut frame = Vec::new();
        put_error(&mut frame, ErrorCode::Unavailable, message);
        let before = self.gate.held();
        self.gate.submit(
            Need::Nothing,
            &frame,
            shared.repl.watermark(),
            self.io.output(),
        );
        track_held(shared, before, self.gate.held());
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
    holding: BTreeSet<usize>,
    read_cap: usize,
    /// `<limits max-output-bytes>`.
    out_cap: usize,
    /// The watch streams this worker runs.
    watchers: watchers::Watchers,
}

impl Worker {
    pub(crate) fn new(idx: usize, shared: Arc<Shared>) -> std::io::Result<(Self, Handle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let max_frame = shared.pool_limits.max_frame as usize;
        let max_http = shared.http_limits.max_head + shared.http_limits.max_body;
        let read_cap = max_frame.max(max_http) + READ_CAP_SLACK;
        let out_cap = shared.config.limits().max_output_bytes;
        let w = Self {
            idx,
            poll,
            rx,
            shared,
            conns: Slab::new(),
            pending: Vec::new(),
            holding: BTreeSet::new(),
            read_cap,
            out_cap,
            watchers: watchers::Watchers::default(),
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
            let before = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(worker = self.idx, "poll failed: {e}");
                    return;
                }
            }
            let gap = before.elapsed().saturating_sub(timeout);
            if gap > self.shared.stall_after {
                self.abandon_pool_conns(gap);
            }
            if self.shared.stopping.load(Ordering::Acquire) {
                self.stop();
                return;
            }
            // Fresh readiness first, then the connections left over or re-queued from the last
            // round, in their order: a round cut short by `ROUND_BUDGET` resumes where it
            // stopped, and a new request does not wait behind a long queue of busy connections.
            let mut ready = Vec::with_capacity(events.iter().count() + self.pending.len());
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
                    c.io.set_readable();
                }
                ready.push(key);
            }
            ready.append(&mut self.pending);
            ready.extend(self.holding.iter().copied());
            let mut seen = HashSet::with_capacity(ready.len());
            ready.retain(|k| seen.insert(*k));
            let round = Instant::now();
            // A pause can also hit between two services (under load the worker is rarely in
            // `poll`): check the gap before each one.
            let mut last = Instant::now();
            let mut ready = ready.into_iter();
            while let Some(key) = ready.next() {
                if last.duration_since(round) >= ROUND_BUDGET {
                    // Served next round, before what this round re-queued.
                    let rest: Vec<usize> = std::iter::once(key).chain(ready).collect();
                    self.pending.splice(0..0, rest);
                    break;
                }
                let now = Instant::now();
                let gap = now.saturating_duration_since(last);
                if gap > self.shared.stall_after {
                    self.abandon_pool_conns(gap);
                }
                self.service_at(key, now);
                // Checked after every service: a round over many connections may add a lot.
                self.enforce_budget();
                last = Instant::now();
            }
            self.deliver_watch();
            self.enforce_budget();
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep(last_sweep);
                self.ping_watchers(last_sweep);
            }
        }
    }

    fn accept_new(&mut self) {
        while let Ok((stream, proto, peer, counted)) = self.rx.try_recv() {
            let Some(awaiting_header) = proxied::admit(&self.shared, proto, peer) else {
                self.shared.admission.release(proto, counted);
                continue;
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            // Data may have arrived before registration: the connection starts readable.
            let mut io = BufConn::new(stream);
            if let Err(e) = io.register(self.poll.registry(), Token(key), false) {
                warn!(%peer, "cannot register connection: {e}");
                self.shared.metrics.closed(proto);
                self.shared.admission.release(proto, counted);
                continue;
            }
            let session = match proto {
                Proto::Pool => Session::Pool(Box::new(
                    PoolSession::new(self.shared.pool_limits)
                        .with_max_snapshot(self.shared.config.limits().max_snapshot_users),
                )),
                Proto::Query => Session::Query(QuerySession::default()),
                Proto::Http => Session::Http(Box::new(HttpConn::new(
                    self.shared.http_limits.clone(),
                    Router::default(),
                ))),
            };
            entry.insert(Conn {
                io,
                peer,
                client: None,
                awaiting_header,
                proto,
                session,
                closing: false,
                again: false,
                last_active: Instant::now(),
                accepted: Instant::now(),
                handshaken: proto == Proto::Http && !awaiting_header,
                counted,
                accounted: 0,
                waiting: false,
                big_frame: false,
                gate: AckGate::new(self.shared.ack_mode),
            });
            self.service(key);
        }
    }

    /// Reads, processes and writes for one connection, then closes or re-queues it as needed.
    fn service(&mut self, key: usize) {
        self.service_at(key, Instant::now());
    }

    /// [`service`](Self::service) for a caller that read the clock just before (`now`): one
    /// clock read less per request on the loop's path.
    fn service_at(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let read_cap = if c.big_frame {
            self.read_cap
        } else {
            INPUT_CAP
        };
        // A peer that does not read its answers is not read either: its requests stay in the
        // socket until its output drained below the cap.
        if c.io.readable() && !c.io.eof() && !c.closing && c.output_len() < self.out_cap {
            match c.io.read(read_cap, usize::MAX) {
                // A header that is still incomplete does not keep the connection alive.
                Ok((0, _)) => {}
                Ok(_) if c.awaiting_header => {}
                Ok(_) => c.last_active = now,
                Err(e) => {
                    debug!(peer = %c.client_addr(), "read failed: {e}");
                    self.close(key);
                    return;
                }
            }
        }
        if !self.proxy_header(key) {
            return;
        }
        let mut more = false;
        let mut held_back = false;
        if let Some(c) = self.conns.get_mut(key) {
            if c.proto == Proto::Pool && c.io.eof() && c.io.input_len() > 0 {
                // The client closed: it gave up on this connection and re-sends what was not
                // acked elsewhere, so what is still unread here is stale (docs/protocols/pool.md,
                // "Ordering"). Nothing more is applied from it.
                c.io.clear_input();
                c.again = false;
                self.shared
                    .metrics
                    .pool_abandoned
                    .fetch_add(1, Ordering::Relaxed);
            }
            if c.proto == Proto::Pool && !c.closing && c.io.input_len() > 0 {
                login::refuse_throttled(&self.shared, c);
            }
            if c.proto == Proto::Pool && !c.closing && c.io.input_len() > 0 {
                if let Some(reason) = self.shared.not_ready() {
                    // Neither applied nor acked before the node is ready: the client retries
                    // or fails over.
                    c.io.clear_input();
                    c.send_unavailable(&self.shared, &format!("not ready: {reason}"));
                    c.closing = true;
                }
            }
            if !c.closing && (c.io.input_len() > 0 || c.again) {
                if c.output_len() < self.out_cap {
                    more = serve(&self.shared, self.idx, c, self.out_cap);
                    c.again = more;
                    c.big_frame = !more && c.io.input_len() >= INPUT_CAP;
                } else {
                    held_back = true;
                }
            }
        }
        self.start_watch(key);
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let held_before = c.gate.held();
        c.gate.release(self.shared.repl.watermark(), c.io.output());
        let held = c.gate.held();
        track_held(&self.shared, held_before, held);
        if held == 0 {
            self.holding.remove(&key);
        } else {
            self.holding.insert(key);
        }
        let flushed = c.io.flush();
        // A peer that stopped reading: give back what its buffers do not hold, once.
        let waiting = c.output_len() >= self.out_cap;
        if waiting && !c.waiting {
            c.io.shrink();
        }
        c.waiting = waiting;
        let now = c.footprint();
        self.shared.output.account(c.accounted, now);
        c.accounted = now;
        if let Err(e) = flushed {
            debug!(peer = %c.client_addr(), "write failed: {e}");
            self.close(key);
            return;
        }
        let flushed = c.output_len() == 0;
        if flushed && (c.closing || (c.io.eof() && !more)) {
            self.close(key);
            return;
        }
        if c.io
            .update_interest(self.poll.registry(), Token(key))
            .is_err()
        {
            self.close(key);
            return;
        }
        let input_left = c.io.readable() && !c.io.eof() && c.io.input_len() < read_cap;
        // Input left unprocessed for back-pressure is served once the output drained below the
        // cap, without waiting for new bytes.
        if more || ((input_left || held_back) && c.output_len() < self.out_cap && !c.closing) {
            self.pending.push(key);
        }
    }

    fn close(&mut self, key: usize) {
        self.holding.remove(&key);
        if self.conns.contains(key) {
            let mut c = self.conns.remove(key);
            self.forget_watcher(key, &c);
            self.shared
                .metrics
                .acks_held
                .fetch_sub(c.gate.held() as i64, Ordering::Relaxed);
            c.io.deregister(self.poll.registry());
            self.shared.metrics.closed(c.proto);
            self.shared.admission.release(c.proto, c.counted);
            self.shared.output.account(c.accounted, 0);
            debug!(peer = %c.client_addr(), "connection closed");
        }
    }

    /// The end of draining: no new connection arrives any more. Each connection handles what
    /// it already received, pool and query connections then get `ERROR` 8 ("reconnect
    /// elsewhere") after their held acks, HTTP connections close after their answers; the
    /// worker returns once every connection is closed or after [`STOP_GRACE`].
    fn stop(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(c) = self.conns.get_mut(key) {
                if c.closing {
                    continue;
                }
                if c.io.input_len() > 0 && !c.io.eof() && !c.awaiting_header {
                    process(&self.shared, self.idx, c, FRAME_BUDGET);
                }
                match c.proto {
                    Proto::Pool | Proto::Query => {
                        c.send_unavailable(&self.shared, "shutting down: reconnect elsewhere");
                    }
                    Proto::Http => {}
                }
                c.closing = true;
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        let mut events = Events::with_capacity(256);
        while !self.conns.is_empty() && Instant::now() < deadline {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for key in keys {
                self.service(key);
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key);
        }
    }
}
