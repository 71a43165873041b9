//! Replication links: the TCP connections between this node and its peers, one outbound per peer
//! (dialled by this node) and one inbound per peer (accepted on the sync port).
//!
//! Each link is a [`BufConn`] plus its direction, its peer once known, and liveness. Whole frames
//! are decoded here and handed to the [`ClusterNode`](presenced_core::cluster::node::ClusterNode);
//! what the node wants sent is encoded by the driver loop (`after_input`) into the links' output.
//!
//! The protocol decisions are the node's: every decoded frame goes to
//! [`ClusterNode::handle_frame`](presenced_core::cluster::node::ClusterNode::handle_frame) with
//! what the driver knows of the link ([`Conn`]), which enforces the `HELLO` handshake and answers
//! a [`Verdict`] (continue, accepted, refuse with a named error code, close); this module only
//! carries it out.
//!
//! A malformed frame closes only the link it arrived on (after an `ERROR` frame); the peer then
//! reconnects and resumes.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Token;
use presenced_core::cluster::node::{Conn, Ctx, Dir, Verdict};
use presenced_core::cluster::repl::Msg;
use presenced_core::proto::ErrorCode;
use presenced_core::wire::split_frame;
use tracing::{debug, warn};

use super::handshake::{LinkAuth, Step};
use super::{ClusterDriver, CONN_BASE};
use crate::conn::{BufConn, ReadStop};
use crate::ratelog::RateLimited;

/// Capacity a peer link's empty buffers keep: two replication frames' worth
/// (`presenced_core` frames stop at 4 MiB of records).
const KEEP_LINK_BUFFERS: usize = 8 << 20;

/// Bytes read from one connection before the others (and the timers) get a turn.
const READ_BUDGET: usize = 4 << 20;
/// Input buffered from a link before its handshake completed: every handshake frame is far
/// smaller (a `HELLO` is at most about 330 bytes), so a stranger cannot make this node hold more.
pub(super) const PRE_HANDSHAKE_INPUT: usize = 4096;

/// Most outbound connects in flight at once.
pub(super) const MAX_DIALING: usize = 16;

static AUTH_FAILED: RateLimited = RateLimited::new();
static REFUSED: RateLimited = RateLimited::new();
static MALFORMED: RateLimited = RateLimited::new();
static ACCEPT_LIMIT: RateLimited = RateLimited::new();

/// One replication connection.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) io: BufConn,
    pub(super) dir: Dir,
    /// For `Out`, the peer dialled; for `In`, known after `HELLO`.
    pub(super) peer: Option<u16>,
    /// An outbound connection whose connect has not completed yet.
    connecting: bool,
    /// Close once the output is flushed.
    closing: bool,
    /// When the last whole frame arrived (or the connection was set up).
    last_frame: Instant,
    /// An introduction to a seed: `HELLO`, then closed at the first answer.
    intro: bool,
    /// The handshake and frame authentication of this link.
    pub(super) auth: LinkAuth,
    /// The remote address (the peer's source address for an accepted link).
    addr: Option<SocketAddr>,
    /// When the link was set up (the handshake deadline counts from here).
    opened: Instant,
    /// The node accepted the peer's `HELLO` (inbound) or the peer welcomed us (outbound).
    established: bool,
}

impl Link {
    /// Writes one message for the peer (sealed once authenticated).
    pub(super) fn send(
        &mut self,
        key: Option<&presenced_core::cluster::auth::ClusterKey>,
        msg: Msg,
    ) {
        self.auth.send(key, msg, self.io.output());
    }
}

/// Appends an `ERROR` frame to a link's output.
impl ClusterDriver {
    /// Accepts every pending inbound link.
    pub(super) fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Some(reason) = self.over_accept_limits(peer) {
                        self.shared.metrics.error(reason);
                        if let Some(suppressed) = ACCEPT_LIMIT.allow() {
                            warn!(%peer, suppressed, "refusing replication connection: {reason}");
                        }
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    debug!(%peer, "replication connection accepted");
                    if let Some(key) = self.add_conn(stream, Dir::In, None, false) {
                        if let Some(c) = self.conns.get_mut(key) {
                            c.addr = Some(peer);
                        }
                    }
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
        stream: TcpStream,
        dir: Dir,
        peer: Option<u16>,
        connecting: bool,
    ) -> Option<usize> {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut io = BufConn::new(stream);
        // Snapshot chunks and full update frames are up to a few MiB each, back to back.
        io.keep_buffers(KEEP_LINK_BUFFERS);
        if io
            .register(self.poll.registry(), Token(CONN_BASE + key), connecting)
            .is_err()
        {
            return None;
        }
        entry.insert(Link {
            io,
            dir,
            peer,
            connecting,
            closing: false,
            last_frame: Instant::now(),
            intro: false,
            auth: LinkAuth::new(self.cluster_key.as_ref(), dir == Dir::Out),
            addr: None,
            opened: Instant::now(),
            established: false,
        });
        Some(key)
    }

    /// Why an inbound connection from `peer` must be refused at accept, if it must: the sync
    /// listener's budget (`max-connections`) and the per-address cap
    /// (`max-connections-per-address`), both counted over accepted links.
    fn over_accept_limits(&self, peer: SocketAddr) -> Option<&'static str> {
        let limits = self.shared.config.limits();
        let inbound = self.conns.iter().filter(|(_, c)| c.dir == Dir::In);
        let mut total = 0;
        let mut same = 0;
        for (_, c) in inbound {
            total += 1;
            if c.addr.is_some_and(|a| a.ip() == peer.ip()) {
                same += 1;
            }
        }
        if total >= limits.max_connections {
            Some("sync_max_connections")
        } else if same >= limits.max_connections_per_address {
            Some("sync_max_connections_per_address")
        } else {
            None
        }
    }

    /// Closes inbound connections that delivered no whole frame for `down-after-ms`: the peer
    /// sends heartbeats far more often, so such a link is broken (a black hole, or a stream that
    /// lost bytes and now waits for a frame that never ends). Closing it makes the peer
    /// reconnect and resume.
    ///
    /// Also closes every link whose handshake (authentication and `HELLO`/`WELCOME`) did not
    /// complete within `handshake-timeout-ms` of its set-up, whatever it trickled.
    pub(super) fn close_silent(&mut self) {
        let limit = Duration::from_millis(self.shared.config.timing().down_after_ms);
        let handshake = Duration::from_millis(self.shared.config.limits().handshake_timeout_ms);
        let silent: Vec<(usize, bool)> = self
            .conns
            .iter()
            .filter_map(|(k, c)| {
                let late = !c.established && !c.connecting && c.opened.elapsed() > handshake;
                let quiet = c.dir == Dir::In && c.last_frame.elapsed() > limit;
                (late || quiet).then_some((k, !c.established))
            })
            .collect();
        for (k, in_handshake) in silent {
            if in_handshake {
                self.shared.metrics.error("sync_handshake_timeout");
            }
            debug!(in_handshake, "closing a silent replication connection");
            self.close(k);
        }
    }

    /// Closes the links of peers the node forgot (removed from the cluster): they reconnect,
    /// and their `HELLO` is refused while they stay removed.
    pub(super) fn close_forgotten(&mut self) {
        let gone: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.peer.is_some_and(|p| self.node.member_info(p).is_none()))
            .map(|(k, _)| k)
            .collect();
        for k in gone {
            self.close(k);
        }
    }

    /// Dials the seeds while this node knows no live member: each introduction sends `HELLO`
    /// and closes at the first answer; the seed then dials back, and its heartbeats' gossip
    /// teaches this node the rest of the cluster.
    pub(super) fn introduce(&mut self) {
        if self.seeds.is_empty() || self.node.any_peer_alive() {
            return;
        }
        let known: Vec<SocketAddr> = self
            .node
            .peers()
            .iter()
            .map(|i| SocketAddr::new(i.host, i.sync_port))
            .collect();
        let targets: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter_map(|s| {
                std::net::ToSocketAddrs::to_socket_addrs(&(s.host.as_str(), s.sync_port))
                    .ok()
                    .and_then(|mut a| a.next())
            })
            .filter(|a| !known.contains(a) && *a != self.shared.me.sync_addr())
            .collect();
        let busy = self.conns.iter().any(|(_, c)| c.intro);
        if busy {
            return;
        }
        for addr in targets {
            match TcpStream::connect(addr) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    if let Some(key) = self.add_conn(stream, Dir::Out, None, true) {
                        if let Some(c) = self.conns.get_mut(key) {
                            c.intro = true;
                        }
                    }
                }
                Err(e) => debug!("introduction to seed {addr} failed: {e}"),
            }
        }
    }

    /// Dials every peer that has no outbound link, at most [`MAX_DIALING`] connects in flight
    /// (so a member list full of dead or forged addresses cannot take every descriptor).
    pub(super) fn reconnect(&mut self) {
        let mut dialing = self.conns.iter().filter(|(_, c)| c.connecting).count();
        for info in self.node.peers() {
            if self.out_conn.contains_key(&info.id) {
                continue;
            }
            if dialing >= MAX_DIALING {
                break;
            }
            dialing += 1;
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

    /// A readiness event on link `key`.
    pub(super) fn conn_event(&mut self, key: usize, writable: bool) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.connecting && writable {
            match (c.io.stream().take_error(), c.io.stream().peer_addr()) {
                (Ok(None), Ok(_)) => {
                    c.connecting = false;
                    if c.intro {
                        c.send(self.cluster_key.as_ref(), self.node.hello());
                    } else if let Some(peer) = c.peer {
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

    /// Reads up to [`READ_BUDGET`] bytes from link `key` (queueing it in `more` if that was not
    /// all) and hands the whole frames to the node.
    pub(super) fn read(&mut self, key: usize) {
        let mut closed = false;
        if let Some(c) = self.conns.get_mut(key) {
            if c.connecting {
                return;
            }
            let cap = if c.established {
                usize::MAX
            } else {
                PRE_HANDSHAKE_INPUT
            };
            match c.io.read(cap, READ_BUDGET) {
                // Edge-triggered: nothing will wake us for the rest, so come back to it.
                Ok((_, ReadStop::Budget)) => self.more.push(key),
                Ok((_, ReadStop::Eof)) | Err(_) => closed = true,
                Ok((_, ReadStop::Full)) if !c.established => {
                    // The handshake frames are consumed below; what is left over the cap is not
                    // a handshake.
                    self.more.push(key);
                }
                Ok((_, ReadStop::Drained | ReadStop::Full)) => {}
            }
        }
        self.dispatch(key);
        if closed {
            self.close(key);
        }
    }

    /// Decodes every whole frame of a connection, runs it through the link's authentication
    /// layer (`handshake`), and hands what it delivers to the node.
    fn dispatch(&mut self, key: usize) {
        loop {
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            let limits = &self.repl_limits;
            // Before the handshake, no frame may be longer than the pre-handshake input.
            let max = if c.established {
                limits.max_frame
            } else {
                (PRE_HANDSHAKE_INPUT - 4) as u32
            };
            let input = c.io.input();
            let (ty, n) = match split_frame(input, max) {
                Ok(Some((ty, _, n))) => (ty, n),
                Ok(None) => {
                    if !c.established && input.len() >= PRE_HANDSHAKE_INPUT {
                        self.apply_verdict(key, Verdict::malformed("handshake too long"));
                    }
                    return;
                }
                Err(e) => {
                    self.malformed(key, &e.to_string());
                    return;
                }
            };
            let frame = input.get(..n).unwrap_or_default();
            let Ok(body) = c.auth.open(frame) else {
                self.auth_failed(key, "bad frame tag");
                return;
            };
            let msg = match Msg::decode_with_limits(ty, body, limits) {
                Ok(m) => m,
                Err(e) => {
                    self.malformed(key, &e.to_string());
                    return;
                }
            };
            let step = c.auth.receive(self.cluster_key.as_ref(), msg, body);
            c.io.consume(n);
            c.last_frame = Instant::now();
            let msg = match step {
                Step::Deliver(m) => m,
                Step::Authenticated(hello) => hello,
                Step::Reply(replies) => {
                    c.auth.write_replies(replies, c.io.output());
                    self.flush(key);
                    continue;
                }
                Step::Refuse(code, message) => {
                    if code == ErrorCode::Auth {
                        self.auth_failed(key, message);
                    } else {
                        self.apply_verdict(
                            key,
                            Verdict::Refuse {
                                code,
                                message: message.into(),
                            },
                        );
                    }
                    return;
                }
            };
            let Some(c) = self.conns.get_mut(key) else {
                return;
            };
            let conn = match (c.dir, c.peer) {
                (Dir::In, None) => Conn::AwaitHello,
                (Dir::In, Some(p)) => Conn::In(p),
                (Dir::Out, Some(p)) => Conn::Out(p),
                (Dir::Out, None) => {
                    // An introduction got its answer (WELCOME, or ERROR if refused).
                    if let Msg::Error { message, .. } = &msg {
                        warn!("seed refused this node: {message}");
                    }
                    self.close(key);
                    return;
                }
            };
            if matches!(conn, Conn::Out(_)) && matches!(msg, Msg::Welcome { .. }) {
                c.established = true;
            }
            let now = self.now();
            let ctx = Ctx {
                store: &self.shared.store,
                hlc: &self.shared.hlc,
                appliers: Some(&self.appliers),
            };
            let verdict = self.node.handle_frame(now, conn, msg, &ctx);
            if !self.apply_verdict(key, verdict) {
                return;
            }
        }
    }

    /// A frame that does not decode: `ERROR` 1, close, count (warned rate-limited).
    fn malformed(&mut self, key: usize, e: &str) {
        let peer = self.conns.get(key).and_then(|c| c.peer);
        if let Some(suppressed) = MALFORMED.allow() {
            warn!(
                ?peer,
                suppressed, "closing replication connection: malformed frame: {e}"
            );
        }
        self.shared.metrics.error("repl_protocol");
        self.apply_verdict(key, Verdict::malformed(e));
    }

    /// A peer failed cluster authentication (or refused ours): `ERROR` 3, close, count, warn
    /// rate-limited.
    fn auth_failed(&mut self, key: usize, why: &str) {
        let (peer, addr) = self
            .conns
            .get(key)
            .map_or((None, None), |c| (c.peer, c.addr));
        self.shared.metrics.error("sync_auth_failed");
        if let Some(suppressed) = AUTH_FAILED.allow() {
            warn!(
                ?peer,
                ?addr,
                suppressed,
                "replication peer failed authentication: {why}"
            );
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.send(
                None,
                Msg::Error {
                    code: ErrorCode::Auth as u8,
                    message: "authentication failed".into(),
                },
            );
            c.closing = true;
            c.io.clear_input();
        }
        self.flush(key);
    }

    /// Does what the node decided for link `key` after a frame. Returns false when the link is
    /// closing or gone (stop reading it).
    fn apply_verdict(&mut self, key: usize, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Continue => true,
            Verdict::Accepted { peer, welcome } => {
                if let Some(old) = self.in_conn.insert(peer, key) {
                    if old != key {
                        self.close(old);
                    }
                }
                if let Some(c) = self.conns.get_mut(key) {
                    c.peer = Some(peer);
                    c.established = true;
                    c.send(self.cluster_key.as_ref(), welcome);
                }
                true
            }
            Verdict::Refuse { code, message } => {
                if let Some(c) = self.conns.get_mut(key) {
                    if code != ErrorCode::Malformed {
                        if let Some(suppressed) = REFUSED.allow() {
                            warn!(peer = ?c.peer, addr = ?c.addr, suppressed, "refusing replication peer: {message}");
                        }
                    }
                    c.send(
                        None,
                        Msg::Error {
                            code: code as u8,
                            message,
                        },
                    );
                    c.closing = true;
                    c.io.clear_input();
                }
                self.flush(key);
                false
            }
            Verdict::Close { reason } => {
                warn!("closing replication connection: {reason}");
                self.close(key);
                false
            }
        }
    }

    /// Writes what link `key` can take now, updates its interest, and closes it if writing
    /// failed or it was closing and is now flushed.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.connecting {
            return;
        }
        let failed = c.io.flush().is_err();
        if !failed {
            let _ =
                c.io.update_interest(self.poll.registry(), Token(CONN_BASE + key));
        }
        if failed || (c.closing && c.io.unsent() == 0) {
            self.close(key);
        }
    }

    /// Closes link `key` and tells the node if it was a peer's current link.
    pub(super) fn close(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let mut c = self.conns.remove(key);
        c.io.deregister(self.poll.registry());
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
}
