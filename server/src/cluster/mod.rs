//! The cluster driver: one thread with its own mio `Poll` that runs the sans-IO
//! [`ClusterNode`] over real sockets — the replication listener and one outbound connection per
//! peer (TCP, `sync-port`), and the time-sync socket (UDP, `time-port`).
//!
//! Workers hand it the sids their pool sessions changed, numbered from a shared counter
//! ([`Repl::submit`]); it feeds them to the node in number order. It publishes what the HTTP
//! handlers and the pool ack policy need ([`Repl::snapshot`], [`Repl::watermark`]) and wakes
//! the workers when replication advances, so that acks held under the `replica` policy go out.
//!
//! Layout: this module holds the driver loop (`run`, draining the node's outputs, publishing
//! through [`Repl`], which is defined in the crate's `repl` module and re-exported here); `links`
//! holds the replication connections and `udp` the time-sync socket.
//!
//! Architecture Invariant: this thread is the only one that touches the [`ClusterNode`]; the
//! others see it through [`Repl`].

mod appliers;
mod handshake;
mod links;
mod udp;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_core::ack_gate::Sequencer;
use presenced_core::cluster::auth::{ClusterKey, TimeKey};
use presenced_core::cluster::node::{ClusterNode, Ctx, Dir, Event, Now, Timing};
use presenced_core::cluster::repl::{NodeInfo, ReplLimits};
use presenced_core::Sid;
use presenced_frontends::backend::MemberView;
use slab::Slab;
use tracing::{debug, info, warn};

use self::links::Link;
use crate::ratelog::RateLimited;
use crate::repl::{Command, MemberChange};
use crate::shared::Shared;

pub use crate::repl::{ClusterSnapshot, Repl};

const LISTENER: Token = Token(0);
const UDP: Token = Token(1);
const WAKER: Token = Token(2);
const CONN_BASE: usize = 16;
const RECONNECT_EVERY: Duration = Duration::from_millis(100);

/// The cluster thread, ready to run.
pub(crate) struct ClusterDriver {
    poll: Poll,
    listener: TcpListener,
    udp: UdpSocket,
    rx: Receiver<(u64, Vec<Sid>)>,
    node: ClusterNode,
    /// What a peer's frames may hold (`<limits repl-max-frame-bytes max-gossip-members>`).
    repl_limits: ReplLimits,
    conns: Slab<Link>,
    out_conn: HashMap<u16, usize>,
    in_conn: HashMap<u16, usize>,
    /// Workers' numbered batches, given back in number order.
    sequencer: Sequencer,
    /// Output buffered for one peer beyond which the node stops generating data frames for it
    /// (`<limits repl-congestion-bytes>`).
    congested_at: usize,
    /// The node was told to drain.
    draining: bool,
    /// A member was removed: its links are closed at the next tick.
    forgotten: bool,
    /// Where to introduce this node (`<seed>`), and the introductions in flight.
    seeds: Vec<presenced_config::Seed>,
    /// Membership commands from the HTTP front end, each with where to send the answer.
    commands: Receiver<Command>,
    start: Instant,
    last_reconnect: Instant,
    shared: Arc<Shared>,
    scratch: Vec<u8>,
    /// Connections whose input was left unread after their read budget.
    more: Vec<usize>,
    /// The cluster secret (`<security cluster-secret-file>`): links and datagrams are
    /// authenticated with it.
    cluster_key: Option<ClusterKey>,
    /// The key of time-sync datagram tags, from `cluster_key`.
    time_key: Option<TimeKey>,
    /// Time-sync datagrams sent by this process (each carries the next number).
    datagram_counter: u64,
    /// The node's counters at the last report (refusals are exported as deltas).
    last_stats: presenced_core::cluster::node::Stats,
    /// Threads that share the merging of large batches of remote records.
    appliers: appliers::ScopedAppliers,
}

/// Binds the replication listener and the time-sync socket, and builds the node state.
pub(crate) fn prepare(
    me: &presenced_config::NodeConfig,
) -> anyhow::Result<(Poll, TcpListener, UdpSocket, Arc<Waker>)> {
    use anyhow::Context as _;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let listener = crate::conn::listen("sync", me.sync_addr())?;
    let udp = std::net::UdpSocket::bind(me.time_addr())
        .with_context(|| format!("cannot listen on time port {} (udp)", me.time_addr()))?;
    udp.set_nonblocking(true)?;
    Ok((poll, listener, UdpSocket::from_std(udp), waker))
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
        commands: Receiver<Command>,
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
            max_drift_us: t.max_clock_drift_ms * 1000,
        };
        let appliers = appliers::ScopedAppliers::new(shared.workers);
        let peers: Vec<NodeInfo> = shared.config.nodes().iter().map(info_of).collect();
        let cluster_key = shared
            .config
            .security()
            .cluster_secret
            .as_ref()
            .map(|s| ClusterKey::new(s.bytes()));
        if cluster_key.is_none() {
            warn!(
                "cluster traffic is not authenticated: set <security cluster-secret-file> \
                 (see SECURITY.md) so that only nodes holding the secret can join or send data"
            );
        }
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
        node.set_max_members(shared.config.limits().max_gossip_members);
        node.set_seeded(!shared.config.seeds().is_empty());
        let l = shared.config.limits();
        let repl_limits = ReplLimits {
            max_frame: l.repl_max_frame_bytes,
            max_members: l.max_gossip_members,
        };
        let mut driver = Self {
            poll,
            listener,
            udp,
            rx,
            node,
            repl_limits,
            conns: Slab::new(),
            out_conn: HashMap::new(),
            in_conn: HashMap::new(),
            sequencer: Sequencer::default(),
            congested_at: shared.config.limits().repl_congestion_bytes,
            draining: false,
            forgotten: false,
            seeds: shared.config.seeds().to_vec(),
            commands,
            start,
            last_reconnect: start - RECONNECT_EVERY,
            shared,
            scratch: Vec::new(),
            more: Vec::new(),
            time_key: cluster_key.as_ref().map(ClusterKey::time_key),
            datagram_counter: 0,
            last_stats: Default::default(),
            appliers,
            cluster_key,
        };
        // Publish the first view before the acceptor takes any connection: a node alone in its
        // file is ready from the start, and pool input must not be refused for a race.
        driver.after_input();
        Ok(driver)
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
            if !self.draining && self.shared.draining.load(Ordering::Acquire) {
                // Not ready from now on (heartbeats say so, peers re-elect); everything else as
                // usual until the workers are done.
                self.draining = true;
                let now = self.now();
                self.node.handle_drain(now);
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
                    appliers: Some(&self.appliers),
                };
                self.node.handle_timeout(now, &ctx);
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd);
            }
            if std::mem::take(&mut self.forgotten) {
                self.close_forgotten();
            }
            if self.last_reconnect.elapsed() >= RECONNECT_EVERY {
                self.last_reconnect = Instant::now();
                self.close_silent();
                self.reconnect();
                self.introduce();
            }
            self.after_input();
        }
    }

    /// Carries out a membership change asked for over HTTP and answers it.
    fn command(&mut self, cmd: Command) {
        let now = self.now();
        let r = match cmd.change {
            MemberChange::Remove(id) => self.node.handle_remove(now, id),
            MemberChange::Readmit(id) => self.node.handle_readmit(now, id),
        };
        match (&r, cmd.change) {
            (Ok(()), MemberChange::Remove(id)) => {
                info!(peer = id, "removing node (asked over HTTP)")
            }
            (Ok(()), MemberChange::Readmit(id)) => {
                info!(peer = id, "re-admitting node (asked over HTTP)")
            }
            (Err(e), _) => info!("membership change refused: {e}"),
        }
        let _ = cmd.reply.send(r);
        self.close_forgotten();
    }

    /// Says goodbye to every peer and flushes what can be flushed within a short time.
    fn leave(&mut self) {
        // Updates the workers handed over last go out before the goodbye.
        self.drain_local();
        let now = self.now();
        self.node.handle_leave(now);
        self.after_input();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline && self.conns.iter().any(|(_, c)| c.io.unsent() > 0) {
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
            self.sequencer.push(first, sids);
        }
        while let Some(sids) = self.sequencer.pop() {
            let now = self.now();
            self.node.handle_local_updates(now, &sids);
        }
    }

    /// Drains every output of the node, writes, and publishes the shared state.
    fn after_input(&mut self) {
        // Records merged from peers reach the watchers like local pool updates.
        self.shared.watch.publish(&self.node.take_merged());
        let now = self.now();
        loop {
            let ctx = Ctx {
                store: &self.shared.store,
                hlc: &self.shared.hlc,
                appliers: Some(&self.appliers),
            };
            let Some((peer, dir, msg)) = self.node.poll_transmit(now, &ctx) else {
                break;
            };
            let key = match dir {
                Dir::Out => self.out_conn.get(&peer),
                Dir::In => self.in_conn.get(&peer),
            };
            if let Some(c) = key.copied().and_then(|k| self.conns.get_mut(k)) {
                c.send(self.cluster_key.as_ref(), msg);
                if dir == Dir::Out && c.io.unsent() > self.congested_at {
                    self.node.set_congested(peer, true);
                }
            }
        }
        self.send_datagrams();
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
                    .is_some_and(|c| c.io.unsent() <= self.congested_at / 2)
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
                    static JOINED: RateLimited = RateLimited::new();
                    if let Some(suppressed) = JOINED.allow() {
                        info!(peer = n.id, host = %n.host, suppressed, "node joined the cluster");
                    }
                }
                Event::MemberExpired(id) => {
                    static EXPIRED: RateLimited = RateLimited::new();
                    if let Some(suppressed) = EXPIRED.allow() {
                        info!(
                            peer = id,
                            suppressed, "forgetting a member that was never heard from"
                        );
                    }
                    self.forgotten = true;
                }
                Event::MemberRemoved(id) => {
                    info!(peer = id, "node removed from the cluster");
                    self.forgotten = true;
                }
                Event::Ready(true) => info!("presenced ready"),
                Event::Ready(false) => info!(
                    reason = self.node.not_ready_reason().unwrap_or("unknown"),
                    "presenced not ready"
                ),
                Event::SnapshotReceived {
                    from,
                    records,
                    micros,
                } => info!(
                    peer = from,
                    records,
                    ms = micros / 1000,
                    "full snapshot received"
                ),
                Event::FullResync(p) => info!(peer = p, "sending a full snapshot"),
                Event::Resumed(p) => debug!(peer = p, "replication resumed from the backlog"),
                Event::Repaired { from, changed } => {
                    info!(peer = from, changed, "anti-entropy repaired records")
                }
                Event::Stalled { gap_us } => {
                    warn!(
                        gap_us,
                        "this node did not run for a while; peers were not marked down"
                    )
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
        let last = std::mem::replace(&mut self.last_stats, stats);
        m.errors(
            "repl_stamp_ahead",
            stats.rejected_stamps - last.rejected_stamps,
        );
        m.errors("repl_term_leap", stats.rejected_terms - last.rejected_terms);
        m.errors(
            "timesync_rejected",
            stats.rejected_datagrams - last.rejected_datagrams,
        );
        m.resumes.store(stats.resumes, Ordering::Relaxed);
        m.full_resyncs.store(stats.full_resyncs, Ordering::Relaxed);
        m.digest_repairs
            .store(stats.digest_repairs, Ordering::Relaxed);
        m.merged.store(stats.merged, Ordering::Relaxed);
        m.elections.store(stats.elections, Ordering::Relaxed);
        m.stalls.store(stats.stalls, Ordering::Relaxed);
        m.relayed.store(stats.relayed, Ordering::Relaxed);
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
        repl.publish_progress(self.node.replicated_seq(), self.node.any_peer_alive());
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
        let known = self.node.roles_known();
        let snap = ClusterSnapshot {
            term: self.node.term(),
            time_master: known.then(|| self.node.time_master()),
            data_master: known.then(|| self.node.data_master()),
            not_ready: self.node.not_ready_reason(),
            members,
        };
        repl.publish_snapshot(snap);
    }
}
