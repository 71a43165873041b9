//! The mio drivers: the only code in this crate that touches sockets, threads and clocks.
//!
//! # Thread model
//!
//! ```text
//!   acceptor thread          worker threads (one mio Poll each)        signal thread
//!   ┌───────────────┐  chan  ┌──────────────────────────────┐          ┌────────────┐
//!   │ pool listener │──────► │ worker 0: Slab<Conn>, timers │◄─ Waker ─│ SIGINT/TERM│
//!   │ query listener│──────► │ worker 1: ...                │          └────────────┘
//!   │ http listener │  +Waker└──────────────┬───────────────┘
//!   └───────────────┘                       │ &Store, &Hlc (lock-free, shared)
//!                                           ▼
//!                                      Arc<Shared>
//! ```
//!
//! One acceptor owns the three listeners and hands each accepted connection to a worker, round
//! robin, through a crossbeam channel and the worker's `Waker`. Workers never share a
//! connection; they share only [`Shared`] (the store, clock, metrics, configuration).
//!
//! Architecture Invariant: no lock is held across `Poll::poll`, and a store guard lives only for
//! one batch of frames.
//! Architecture Invariant: a protocol error closes only the connection that caused it.

mod clock;
pub mod cluster;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use presenced_config::{ClusterConfig, NodeConfig};
use presenced_core::model::ExtLimits;
use presenced_core::proto::pool::PoolLimits;
use presenced_core::proto::pool_session::Streams;
use presenced_core::proto::query::QueryLimits;
use presenced_core::{Hlc, Sid, Status, Store};
use tracing::{debug, info, warn};

pub use self::clock::ClusterClock;
use crate::backend::{Backend, ClusterView, Frontend, MemberView};
use crate::http::HttpLimits;
use crate::metrics::{Metrics, Proto};

/// Options of `presenced serve` beyond the cluster file.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Shift of this node's clock, ms (`--clock-offset-ms`).
    pub clock_offset_ms: i64,
}

/// State shared by every thread of a node.
#[derive(Debug)]
pub struct Shared {
    /// The whole cluster file.
    pub config: ClusterConfig,
    /// This node's entry of it.
    pub me: NodeConfig,
    /// Every user's status.
    pub store: Store,
    /// The node's HLC.
    pub hlc: Hlc,
    /// Pool stream high-water marks.
    pub streams: Streams,
    /// Metrics.
    pub metrics: Metrics,
    /// Cluster time.
    pub clock: ClusterClock,
    /// Set once to stop every thread.
    pub shutdown: AtomicBool,
    /// When the node started.
    pub started: Instant,
    /// Number of worker threads.
    pub workers: usize,
    /// Pool protocol limits.
    pub pool_limits: PoolLimits,
    /// Query protocol limits.
    pub query_limits: QueryLimits,
    /// HTTP limits.
    pub http_limits: HttpLimits,
    /// The cluster thread's shared end.
    pub repl: cluster::Repl,
    /// Whether pool acks wait for a replica (`<replication ack="replica">`).
    pub ack_replica: bool,
}

impl Shared {
    /// Builds the shared state of node `me` of `config`.
    pub fn new(
        config: ClusterConfig,
        me: NodeConfig,
        opts: &ServeOptions,
        repl: cluster::Repl,
    ) -> Self {
        let l = *config.limits();
        let workers = if l.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            l.workers
        };
        let ext = ExtLimits {
            max_entries: l.max_ext_entries,
            max_key: l.max_ext_key_bytes,
            max_value: l.max_ext_value_bytes,
        };
        Self {
            hlc: Hlc::new(me.id),
            me,
            // Sized for a million users up front (8 MiB of bins): growing the table under load
            // stalls ingest while it is copied.
            store: Store::with_capacity(1 << 20),
            streams: Streams::default(),
            metrics: Metrics::new(workers),
            clock: ClusterClock::new(opts.clock_offset_ms),
            shutdown: AtomicBool::new(false),
            started: Instant::now(),
            workers,
            pool_limits: PoolLimits {
                max_frame: l.max_frame_bytes,
                max_batch: l.max_events_per_frame,
                ext,
            },
            query_limits: QueryLimits {
                max_frame: l.max_frame_bytes,
                max_batch: l.batch_limit,
            },
            http_limits: HttpLimits::from_config(&l),
            ack_replica: config.replication().ack == presenced_config::AckPolicy::Replica,
            repl,
            config,
        }
    }

    /// The [`Backend`] view that worker `worker` gives its HTTP handlers for input that
    /// started being handled at `started` (query latency is measured from there).
    pub fn backend(&self, worker: usize, started: Instant) -> NodeBackend<'_> {
        NodeBackend {
            shared: self,
            worker,
            started,
        }
    }
}

/// [`Backend`] over [`Shared`].
#[derive(Debug)]
pub struct NodeBackend<'a> {
    shared: &'a Shared,
    worker: usize,
    started: Instant,
}

impl Backend for NodeBackend<'_> {
    fn node_id(&self) -> u16 {
        self.shared.me.id
    }

    fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    fn batch_limit(&self) -> usize {
        usize::from(self.shared.query_limits.max_batch)
    }

    fn statuses(&self, ids: &[Sid], out: &mut Vec<Status>) {
        self.shared.store.pin().statuses(ids, out);
    }

    fn not_ready_reason(&self) -> Option<String> {
        if self.shared.shutdown.load(Ordering::Relaxed) {
            return Some("draining".to_owned());
        }
        self.shared.repl.snapshot().not_ready.map(str::to_owned)
    }

    fn cluster(&self) -> ClusterView {
        let s = self.shared;
        let snap = s.repl.snapshot();
        let ready = self.not_ready_reason().is_none();
        let members = if snap.members.is_empty() {
            vec![MemberView {
                id: s.me.id,
                alive: true,
                ready,
            }]
        } else {
            snap.members
        };
        ClusterView {
            node: s.me.id,
            term: snap.term,
            time_master: snap.time_master,
            data_master: snap.data_master,
            ready,
            cluster_time_ms: s.clock.now_ms(),
            clock_offset_us: s.clock.correction_us(),
            records: s.store.len() as u64,
            digest: format!("{:032x}", s.store.digest()),
            members,
        }
    }

    fn render_metrics(&self, out: &mut String) {
        let s = self.shared;
        s.metrics
            .render(out, s.store.len() as u64, s.started.elapsed().as_secs_f64());
    }

    fn record_query(&self, f: Frontend, ids: usize, micros: u64) {
        let idx = match f {
            Frontend::Json => 1,
            Frontend::Soap => 2,
        };
        // Handlers do not read clocks; the driver measures from when it started this input.
        let micros = if micros == 0 {
            self.started.elapsed().as_micros() as u64
        } else {
            micros
        };
        self.shared
            .metrics
            .query(idx, self.worker, ids as u64, micros);
    }

    fn record_error(&self, code: &'static str) {
        self.shared.metrics.error(code);
    }
}

const LISTENERS: [(Proto, &str); 3] = [
    (Proto::Pool, "pool"),
    (Proto::Query, "query"),
    (Proto::Http, "http"),
];
const ACCEPT_WAKER: Token = Token(100);

/// Binds one listening socket; the error names what and where.
fn listen(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let bind = || -> std::io::Result<std::net::TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    let l = bind().with_context(|| format!("cannot listen on {what} port {addr}"))?;
    Ok(TcpListener::from_std(l))
}

/// Runs node `node_id` of `config` until SIGINT or SIGTERM.
pub fn run(config: ClusterConfig, node_id: u16, opts: ServeOptions) -> anyhow::Result<()> {
    let me = config
        .node(node_id)
        .cloned()
        .with_context(|| format!("node {node_id} is not in the cluster file"))?;
    // Signal handlers first: a SIGTERM that arrives while the node starts must stop it cleanly,
    // not kill it with the default action.
    let signals = {
        use signal_hook::consts::{SIGINT, SIGTERM};
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
            .context("cannot install signal handlers")?
    };
    let mut listeners = Vec::new();
    for (proto, name) in LISTENERS {
        let addr = match proto {
            Proto::Pool => me.pool_addr(),
            Proto::Query => me.query_addr(),
            Proto::Http => me.http_addr(),
        };
        listeners.push((proto, name, listen(name, addr)?, addr));
    }
    let (cpoll, clistener, cudp, cwaker) = cluster::prepare(&me)?;
    let (repl, repl_rx) = cluster::repl_pair(cwaker);
    let shared = Arc::new(Shared::new(config, me, &opts, repl));

    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for idx in 0..shared.workers {
        let (w, handle) = worker::Worker::new(idx, shared.clone())?;
        handles.push(handle);
        workers.push(
            std::thread::Builder::new()
                .name(format!("worker-{idx}"))
                .spawn(move || w.run())
                .context("cannot spawn worker thread")?,
        );
    }

    shared
        .repl
        .set_workers(handles.iter().map(|h| h.waker.clone()).collect());
    let cluster = cluster::ClusterDriver::new(cpoll, clistener, cudp, repl_rx, shared.clone())?;
    let cluster = std::thread::Builder::new()
        .name("cluster".into())
        .spawn(move || cluster.run())
        .context("cannot spawn cluster thread")?;

    let mut poll = Poll::new().context("cannot create poll")?;
    let waker = Arc::new(Waker::new(poll.registry(), ACCEPT_WAKER).context("cannot create waker")?);
    for (i, (_, _, l, _)) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let signals = spawn_signal_thread(
        signals,
        shared.clone(),
        waker,
        handles.iter().map(|h| h.waker.clone()).collect(),
    )?;
    let sync_addr = shared.me.sync_addr();
    let time_addr = shared.me.time_addr();
    info!("listening for replication on {sync_addr} and time sync on {time_addr} (udp)");
    for (_, name, _, addr) in &listeners {
        info!("listening for {name} on {addr}");
    }
    info!(
        node = shared.me.id,
        workers = shared.workers,
        cluster = shared.config.name(),
        "presenced ready"
    );

    let mut events = Events::with_capacity(64);
    let mut next = 0usize;
    while !shared.shutdown.load(Ordering::Acquire) {
        // The waker ends the wait on shutdown; the timeout is a second line of defence.
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(250))) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("acceptor poll failed");
        }
        for ev in events.iter() {
            let Some((proto, name, listener, _)) = listeners.get(ev.token().0) else {
                continue;
            };
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        if shared.metrics.open_total()
                            >= shared.config.limits().max_connections as i64
                        {
                            shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
                            warn!(%peer, "refusing {name} connection: max-connections reached");
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        let Some(h) = handles.get(next % handles.len().max(1)) else {
                            break;
                        };
                        next = next.wrapping_add(1);
                        debug!(%peer, "accepted {name} connection");
                        shared.metrics.opened(*proto);
                        if h.tx.send((stream, *proto, peer)).is_err() {
                            shared.metrics.closed(*proto);
                            continue;
                        }
                        let _ = h.waker.wake();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // EMFILE and friends: log and retry on the next readiness event.
                        warn!("accept on {name} failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
    info!("shutting down");
    drop(listeners);
    for h in &handles {
        let _ = h.waker.wake();
    }
    shared.repl.wake();
    for w in workers {
        let _ = w.join();
    }
    let _ = cluster.join();
    drop(signals);
    info!("stopped");
    Ok(())
}

fn spawn_signal_thread(
    mut signals: signal_hook::iterator::Signals,
    shared: Arc<Shared>,
    acceptor: Arc<Waker>,
    workers: Vec<Arc<Waker>>,
) -> anyhow::Result<signal_hook::iterator::Handle> {
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                info!(signal = sig, "signal received");
                shared.shutdown.store(true, Ordering::Release);
                shared.repl.wake();
                let _ = acceptor.wake();
                for w in &workers {
                    let _ = w.wake();
                }
            }
        })
        .context("cannot spawn signal thread")?;
    Ok(handle)
}
