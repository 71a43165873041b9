//! The cluster driver: one thread with its own mio `Poll` that runs the sans-IO
//! [`ClusterNode`] over real sockets — the replication listener and one outbound connection per
//! peer (TCP, `sync-port`), and the time-sync socket (UDP, `time-port`).
//!
//! Workers hand it the sids their pool sessions changed, numbered from a shared counter
//! ([`Repl::submit`]); it feeds them to the node in number order. It publishes what the HTTP
//! handlers and the pool ack policy need ([`Repl::snapshot`], [`Repl::replicated`]) and wakes
//! the workers when replication advances, so that acks held under the `replica` policy go out.
//!
//! Architecture Invariant: this thread is the only one that touches the [`ClusterNode`]; the
//! others see it through [`Repl`].

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_core::cluster::node::{ClusterNode, Ctx, Dir, Event, Now, Timing};
use presenced_core::cluster::repl::{Msg, NodeInfo, MAX_FRAME};
use presenced_core::cluster::timesync::Packet;
use presenced_core::wire::split_frame;
use presenced_core::Sid;
use slab::Slab;
use tracing::{debug, info, warn};

use super::Shared;
use crate::backend::MemberView;

const LISTENER: Token = Token(0);
const UDP: Token = Token(1);
const WAKER: Token = Token(2);
const CONN_BASE: usize = 16;
/// Output buffered for one peer beyond which the node stops generating frames for it.
const CONGESTED: usize = 8 << 20;
const RECONNECT_EVERY: Duration = Duration::from_millis(100);
/// Bytes read from one connection before the others (and the timers) get a turn.
const READ_BUDGET: usize = 4 << 20;

/// What the cluster thread publishes for the other threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// Election term.
    pub term: u64,
    /// Time master.
    pub time_master: u16,
    /// Data master.
    pub data_master: u16,
    /// `None` when ready, else why not.
    pub not_ready: Option<&'static str>,
    /// Every member, this node included.
    pub members: Vec<MemberView>,
}

/// The cluster thread's shared end.
#[derive(Debug)]
pub struct Repl {
    tx: Sender<(u64, Vec<Sid>)>,
    waker: Arc<Waker>,
    /// Next local update number.
    next_seq: AtomicU64,
    /// Highest local update number some peer acked.
    replicated: AtomicU64,
    /// Whether any peer is alive (the `replica` ack policy only waits then).
    peers_alive: AtomicBool,
    snapshot: RwLock<ClusterSnapshot>,
    workers: OnceLock<Vec<Arc<Waker>>>,
}

impl Repl {
    /// Numbers `sids` as the next local updates and hands them to the cluster thread. Returns
    /// the number of the last one (0 for none).
    pub fn submit(&self, sids: Vec<Sid>) -> u64 {
        if sids.is_empty() {
            return 0;
        }
        let n = sids.len() as u64;
        let first = self.next_seq.fetch_add(n, Ordering::AcqRel);
        if self.tx.send((first, sids)).is_ok() {
            let _ = self.waker.wake();
        }
        first + n - 1
    }

    /// Highest local update number acked by at least one peer.
    pub fn replicated(&self) -> u64 {
        self.replicated.load(Ordering::Acquire)
    }

    /// Whether any peer is alive.
    pub fn peers_alive(&self) -> bool {
        self.peers_alive.load(Ordering::Acquire)
    }

    /// The latest published cluster state.
    pub fn snapshot(&self) -> ClusterSnapshot {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Registers the workers' wakers (once, at start-up).
    pub(crate) fn set_workers(&self, w: Vec<Arc<Waker>>) {
        let _ = self.workers.set(w);
    }

    /// Wakes the cluster thread (shutdown).
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }
}

/// The cluster thread, ready to run.
pub(crate) struct ClusterDriver {
    poll: Poll,
    listener: TcpListener,
    udp: UdpSocket,
    rx: Receiver<(u64, Vec<Sid>)>,
    node: ClusterNode,
    conns: Slab<Conn>,
    out_conn: HashMap<u16, usize>,
    in_conn: HashMap<u16, usize>,
    pending: BTreeMap<u64, Vec<Sid>>,
    next_local: u64,
    start: Instant,
    last_reconnect: Instant,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
    /// Connections whose input was left unread after [`READ_BUDGET`] bytes.
    more: Vec<usize>,
}

struct Conn {
    stream: TcpStream,
    dir: Dir,
    /// For `Out`, the peer dialled; for `In`, known after `HELLO`.
    peer: Option<u16>,
    /// An outbound connection whose connect has not completed yet.
    connecting: bool,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    want_write: bool,
    closing: bool,
    /// When the last whole frame arrived (or the connection was set up).
    last_frame: Instant,
}

/// Binds the replication listener and the time-sync socket, and builds the node state.
pub(crate) fn prepare(
    me: &presenced_config::NodeConfig,
) -> anyhow::Result<(Poll, TcpListener, UdpSocket, Arc<Waker>)> {
    use anyhow::Context as _;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let listener = super::listen("sync", me.sync_addr())?;
    let udp = std::net::UdpSocket::bind(me.time_addr())
        .with_context(|| format!("cannot listen on time port {} (udp)", me.time_addr()))?;
    udp.set_nonblocking(true)?;
    Ok((poll, listener, UdpSocket::from_std(udp), waker))
}

/// The shared end of a cluster thread that will use `waker`.
pub(crate) fn repl_pair(waker: Arc<Waker>) -> (Repl, Receiver<(u64, Vec<Sid>)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let repl = Repl {
        tx,
        waker,
        next_seq: AtomicU64::new(1),
        replicated: AtomicU64::new(0),
        peers_alive: AtomicBool::new(false),
        snapshot: RwLock::new(ClusterSnapshot::default()),
        workers: OnceLock::new(),
    };
    (repl, rx)
}

fn info_of(n: &presenced_config::NodeConfig) -> NodeInfo {
    NodeInfo {
        id: n.id,
        host: n.host,
        pool_port: n.pool_port,
        query_port: n.query_port,
        sync_port: n.sync_port,
        time_port: n.time_port,
        http_port: n.http_port,
    }
}

impl ClusterDriver {
    pub(crate) fn new(
        poll: Poll,
        mut listener: TcpListener,
        mut udp: UdpSocket,
        rx: Receiver<(u64, Vec<Sid>)>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        let t = shared.config.timing();
        let timing = Timing {
            heartbeat_us: t.heartbeat_ms * 1000,
            down_after_us: t.down_after_ms * 1000,
            sync_interval_us: t.time_sync_interval_ms * 1000,
            tolerance_us: t.time_tolerance_us,
            flush_us: shared.config.replication().flush_ms * 1000,
        };
        let peers: Vec<NodeInfo> = shared.config.nodes().iter().map(info_of).collect();
        let start = Instant::now();
        let incarnation = {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.finish()
        };
        let now = Now {
            mono_us: 0,
            wall_us: shared.clock.local_us_at(start),
        };
        let mut node = ClusterNode::new(
            info_of(&shared.me),
            shared.config.name().to_owned(),
            &peers,
            timing,
            incarnation,
            now,
        );
        node.set_backlog_cap(shared.config.replication().backlog);
        Ok(Self {
            poll,
            listener,
            udp,
            rx,
            node,
            conns: Slab::new(),
            out_conn: HashMap::new(),
            in_conn: HashMap::new(),
            pending: BTreeMap::new(),
            next_local: 1,
            start,
            last_reconnect: start - RECONNECT_EVERY,
            shared,
            scratch: Vec::new(),
            more: Vec::new(),
        })
    }

    fn now(&self) -> Now {
        let at = Instant::now();
        Now {
            mono_us: at.saturating_duration_since(self.start).as_micros() as u64,
            wall_us: self.shared.clock.local_us_at(at),
        }
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        self.after_input();
        loop {
            let now = self.now();
            let due = self.node.poll_timeout().saturating_sub(now.mono_us);
            let mut timeout = Duration::from_micros(due).min(RECONNECT_EVERY);
            if !self.more.is_empty() {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!("cluster poll failed: {e}");
                    return;
                }
            }
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.leave();
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    UDP => self.recv_datagrams(),
                    WAKER => {}
                    Token(t) if t >= CONN_BASE => self.conn_event(t - CONN_BASE, ev.is_writable()),
                    _ => {}
                }
            }
            for key in std::mem::take(&mut self.more) {
                self.read(key);
                self.flush(key);
            }
            self.drain_local();
            let now = self.now();
            if self.node.poll_timeout() <= now.mono_us {
                let store = &self.shared.store;
                let ctx = Ctx {
                    store,
                    hlc: &self.shared.hlc,
                };
                self.node.handle_timeout(now, &ctx);
            }
            if self.last_reconnect.elapsed() >= RECONNECT_EVERY {
                self.last_reconnect = Instant::now();
                self.close_silent();
                self.reconnect();
            }
            self.after_input();
        }
    }

    /// Says goodbye to every peer and flushes what can be flushed within a short time.
    fn leave(&mut self) {
        // Updates the workers handed over last go out before the goodbye.
        self.drain_local();
        let now = self.now();
        self.node.handle_drain(now);
        self.after_input();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline && self.conns.iter().any(|(_, c)| c.wpos < c.wbuf.len()) {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for k in keys {
                self.flush(k);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        info!("left the cluster");
    }

    fn drain_local(&mut self) {
        while let Ok((first, sids)) = self.rx.try_recv() {
            self.pending.insert(first, sids);
        }
        while let Some(sids) = self.pending.remove(&self.next_local) {
            let now = self.now();
            self.next_local += sids.len() as u64;
            self.node.handle_local_updates(now, &sids);
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "replication connection accepted");
                    self.add_conn(stream, Dir::In, None, false);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("replication accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn add_conn(
        &mut self,
        mut stream: TcpStream,
        dir: Dir,
        peer: Option<u16>,
        connecting: bool,
    ) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = if connecting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if self
            .poll
            .registry()
            .register(&mut stream, Token(CONN_BASE + key), interest)
            .is_err()
        {
            return None;
        }
        entry.insert(Conn {
            stream,
            dir,
            peer,
            connecting,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            want_write: connecting,
            closing: false,
            last_frame: Instant::now(),
        });
        Some(key)
    }

    /// Closes inbound connections that delivered no whole frame for `down-after-ms`: the peer
    /// sends heartbeats far more often, so such a link is broken (a black hole, or a stream that
    /// lost bytes and now waits for a frame that never ends). Closing it makes the peer
    /// reconnect and resume.
    fn close_silent(&mut self) {
        let limit = Duration::from_millis(self.shared.config.timing().down_after_ms);
        let silent: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.dir == Dir::In && c.last_frame.elapsed() > limit)
            .map(|(k, _)| k)
            .collect();
        for k in silent {
            debug!("closing a silent replication connection");
            self.close(k);
        }
    }

    fn reconnect(&mut self) {
        for info in self.node.peers() {
            if self.out_conn.contains_key(&info.id) {
                continue;
            }
            let addr = SocketAddr::new(info.host, info.sync_port);
            match TcpStream::connect(addr) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    if let Some(key) = self.add_conn(stream, Dir::Out, Some(info.id), true) {
                        self.out_conn.insert(info.id, key);
                    }
                }
                Err(e) => debug!(peer = info.id, "connect to {addr} failed: {e}"),
            }
        }
    }

    fn conn_event(&mut self, key: usize, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.connecting && writable {
            match (c.stream.take_error(), c.stream.peer_addr()) {
                (Ok(None), Ok(_)) => {
                    c.connecting = false;
                    if let Some(peer) = c.peer {
                        debug!(peer, "replication link up");
                        self.node.handle_out_connected(peer);
                    }
                }
                _ => {
                    self.close(key);
                    return;
                }
            }
        }
        self.read(key);
        self.flush(key);
    }

    fn read(&mut self, key: usize) {
        let mut chunk = [0u8; 64 * 1024];
        let mut closed = false;
        if let Some(c) = self.conns.get_mut(key) {
            if c.connecting {
                return;
            }
            let mut budget = READ_BUDGET;
            loop {
                if budget == 0 {
                    // Edge-triggered: nothing will wake us for the rest, so come back to it.
                    self.more.push(key);
                    break;
                }
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        budget = budget.saturating_sub(n);
                        c.rbuf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
        }
        self.dispatch(key);
        if closed {
            self.close(key);
        }
    }

    /// Decodes and hands every whole frame of a connection to the node.
    fn dispatch(&mut self, key: usize) {
        let mut consumed = 0;
        loop {
            let Some(c) = self.conns.get(key) else { return };
            let rest = c.rbuf.get(consumed..).unwrap_or_default();
            let frame = match split_frame(rest, MAX_FRAME) {
                Ok(Some((ty, body, n))) => Msg::decode(ty, body).map(|m| (m, n)),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            let (msg, n) = match frame {
                Ok(x) => x,
                Err(e) => {
                    warn!(peer = ?c.peer, "closing replication connection: malformed frame: {e}");
                    self.shared.metrics.error("repl_protocol");
                    if let Some(c) = self.conns.get_mut(key) {
                        let message = format!("malformed frame: {e}");
                        Msg::Error { code: 1, message }.encode(&mut c.wbuf);
                        c.closing = true;
                        c.rbuf.clear();
                    }
                    self.flush(key);
                    return;
                }
            };
            consumed += n;
            let (dir, peer) = (c.dir, c.peer);
            if let Some(c) = self.conns.get_mut(key) {
                c.last_frame = Instant::now();
            }
            let now = self.now();
            let ctx = Ctx {
                store: &self.shared.store,
                hlc: &self.shared.hlc,
            };
            match (dir, peer, msg) {
                (
                    Dir::In,
                    None,
                    Msg::Hello {
                        cluster,
                        from,
                        incarnation,
                    },
                ) => match self.node.handle_hello(now, &cluster, from, incarnation) {
                    Ok(welcome) => {
                        if let Some(old) = self.in_conn.insert(from.id, key) {
                            if old != key {
                                self.close(old);
                            }
                        }
                        if let Some(c) = self.conns.get_mut(key) {
                            c.peer = Some(from.id);
                            welcome.encode(&mut c.wbuf);
                        }
                    }
                    Err(e) => {
                        warn!(peer = from.id, "refusing replication peer: {e}");
                        if let Some(c) = self.conns.get_mut(key) {
                            Msg::Error {
                                code: 5,
                                message: e.to_string(),
                            }
                            .encode(&mut c.wbuf);
                            c.closing = true;
                        }
                    }
                },
                (Dir::In, None, _) => {
                    warn!("closing replication connection: expected HELLO");
                    self.close(key);
                    return;
                }
                (Dir::In, Some(p), m) => self.node.handle_in_msg(now, p, m, &ctx),
                (Dir::Out, Some(p), Msg::Error { message, .. }) => {
                    warn!(peer = p, "peer refused replication: {message}");
                    self.close(key);
                    return;
                }
                (Dir::Out, Some(p), m) => self.node.handle_out_msg(now, p, m, &ctx),
                (Dir::Out, None, _) => {}
            }
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.rbuf.drain(..consumed.min(c.rbuf.len()));
        }
    }

    fn flush(&mut self, key: usize) {
        let mut failed = false;
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.connecting {
            return;
        }
        while c.wpos < c.wbuf.len() {
            match c.stream.write(c.wbuf.get(c.wpos..).unwrap_or_default()) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        } else if c.wpos > (1 << 20) {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
        let want = c.wpos < c.wbuf.len();
        if want != c.want_write {
            c.want_write = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut c.stream, Token(CONN_BASE + key), interest);
        }
        if failed || (c.closing && !want) {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        let _ = self.poll.registry().deregister(&mut c.stream);
        if let Some(peer) = c.peer {
            match c.dir {
                Dir::Out => {
                    if self.out_conn.get(&peer) == Some(&key) {
                        self.out_conn.remove(&peer);
                        self.node.handle_out_closed(peer);
                        debug!(peer, "replication link down");
                    }
                }
                Dir::In => {
                    if self.in_conn.get(&peer) == Some(&key) {
                        self.in_conn.remove(&peer);
                        self.node.handle_in_closed(peer);
                    }
                }
            }
        }
    }

    fn recv_datagrams(&mut self) {
        let mut buf = [0u8; 512];
        loop {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => match Packet::decode(buf.get(..n).unwrap_or_default()) {
                    Ok(p) => {
                        let now = self.now();
                        self.node.handle_datagram(now, p);
                    }
                    Err(e) => {
                        debug!(%from, "bad time-sync datagram: {e}");
                        self.shared.metrics.error("timesync_protocol");
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("time-sync receive failed: {e}");
                    return;
                }
            }
        }
    }

    /// Drains every output of the node, writes, and publishes the shared state.
    fn after_input(&mut self) {
        let now = self.now();
        loop {
            let ctx = Ctx {
                store: &self.shared.store,
                hlc: &self.shared.hlc,
            };
            let Some((peer, dir, msg)) = self.node.poll_transmit(now, &ctx) else {
                break;
            };
            let key = match dir {
                Dir::Out => self.out_conn.get(&peer),
                Dir::In => self.in_conn.get(&peer),
            };
            if let Some(c) = key.copied().and_then(|k| self.conns.get_mut(k)) {
                msg.encode(&mut c.wbuf);
                if dir == Dir::Out && c.wbuf.len() - c.wpos > CONGESTED {
                    self.node.set_congested(peer, true);
                }
            }
        }
        while let Some((peer, p)) = self.node.poll_datagram() {
            if let Some(info) = self.node.member_info(peer) {
                self.scratch.clear();
                p.encode(&mut self.scratch);
                let _ = self
                    .udp
                    .send_to(&self.scratch, SocketAddr::new(info.host, info.time_port));
            }
        }
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for k in keys {
            self.flush(k);
        }
        // Lift congestion where the buffer drained.
        let drained: Vec<u16> = self
            .out_conn
            .iter()
            .filter(|(_, k)| {
                self.conns
                    .get(**k)
                    .is_some_and(|c| c.wbuf.len() - c.wpos <= CONGESTED / 2)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in drained {
            self.node.set_congested(p, false);
        }
        self.report();
    }

    fn report(&mut self) {
        let m = &self.shared.metrics;
        while let Some(e) = self.node.poll_event() {
            match e {
                Event::RoleChange {
                    term,
                    time_master,
                    data_master,
                } => {
                    info!(term, time_master, data_master, "cluster roles changed");
                }
                Event::MemberUp(id) => info!(peer = id, "peer is up"),
                Event::MemberDown(id) => info!(peer = id, "peer is down"),
                Event::MemberJoined(n) => {
                    info!(peer = n.id, host = %n.host, "node joined the cluster")
                }
                Event::Ready(r) => info!(ready = r, "readiness changed"),
                Event::SnapshotReceived { from, records } => {
                    info!(peer = from, records, "full snapshot received")
                }
                Event::FullResync(p) => info!(peer = p, "sending a full snapshot"),
                Event::Resumed(p) => debug!(peer = p, "replication resumed from the backlog"),
                Event::Repaired { from, changed } => {
                    info!(peer = from, changed, "anti-entropy repaired records")
                }
                Event::ClockCorrected {
                    adjust_us,
                    correction_us,
                } => {
                    info!(
                        adjust_us,
                        correction_us, "clock corrected by the time master"
                    );
                }
            }
        }
        for lag in self.node.take_lag_samples() {
            m.repl_lag.record(0, lag);
        }
        let stats = self.node.stats();
        m.resumes.store(stats.resumes, Ordering::Relaxed);
        m.full_resyncs.store(stats.full_resyncs, Ordering::Relaxed);
        m.digest_repairs
            .store(stats.digest_repairs, Ordering::Relaxed);
        m.elections.store(stats.elections, Ordering::Relaxed);
        m.backlog
            .store(self.node.backlog_len() as u64, Ordering::Relaxed);
        m.clock_offset_us
            .store(self.node.correction_us(), Ordering::Relaxed);
        m.repl_pending.store(
            self.node
                .last_seq()
                .saturating_sub(self.node.replicated_seq()),
            Ordering::Relaxed,
        );
        self.shared
            .clock
            .set_correction_us(self.node.correction_us());

        let repl = &self.shared.repl;
        let before = repl
            .replicated
            .swap(self.node.replicated_seq(), Ordering::AcqRel);
        repl.peers_alive
            .store(self.node.any_peer_alive(), Ordering::Release);
        if before != self.node.replicated_seq() {
            for w in repl.workers.get().into_iter().flatten() {
                let _ = w.wake();
            }
        }
        let mut members: Vec<MemberView> = self
            .node
            .members()
            .map(|(i, alive, ready)| MemberView {
                id: i.id,
                alive,
                ready,
            })
            .collect();
        members.push(MemberView {
            id: self.shared.me.id,
            alive: true,
            ready: self.node.ready(),
        });
        members.sort_by_key(|m| m.id);
        let snap = ClusterSnapshot {
            term: self.node.term(),
            time_master: self.node.time_master(),
            data_master: self.node.data_master(),
            not_ready: self.node.not_ready_reason(),
            members,
        };
        // Readers (every HTTP request) take the read lock; write only when something changed.
        let changed = repl.snapshot.read().map_or(true, |s| *s != snap);
        if changed {
            if let Ok(mut s) = repl.snapshot.write() {
                *s = snap;
            }
        }
    }
}
