//! The state every thread of a node shares ([`Shared`]), the options of `presenced serve`
//! ([`ServeOptions`]), and [`NodeBackend`], the [`Backend`] the HTTP handlers see.
//!
//! Everything in [`Shared`] is either immutable after start-up or safe to use from any thread
//! without a lock held across calls: the store and the HLC are lock-free, metrics are atomics,
//! the cluster thread's state is reached only through [`Repl`].
//!
//! This module spawns nothing and touches no socket; [`NodeBackend`] reads the clock only to
//! measure query latency.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use presenced_config::{AckPolicy, ClusterConfig, NodeConfig, StoreEngine};
use presenced_core::ack_gate::AckMode;
use presenced_core::auth::{ApiKeys, AuthOutcome, Presented};
use presenced_core::cluster::node::MemberError;
use presenced_core::model::ExtLimits;
use presenced_core::proto::pool::PoolLimits;
use presenced_core::proto::pool_session::Streams;
use presenced_core::proto::query::QueryLimits;
use presenced_core::store::Engine;
use presenced_core::{Hlc, Sid, Status, Store};
use presenced_frontends::backend::{
    Backend, ClusterView, Frontend, MemberChangeError, MemberView, WatchSlot,
};
use presenced_frontends::http::HttpLimits;

use crate::admission::Admission;
use crate::budget::OutputBudget;
use crate::clock::ClusterClock;
use crate::metrics::Metrics;
use crate::repl::{ChangeError, MemberChange, Repl};
use crate::throttle::LoginThrottle;
use crate::watch::Watch;

/// The store engine `<store engine>` names.
fn engine(e: StoreEngine) -> Engine {
    match e {
        StoreEngine::Table => Engine::Table,
        StoreEngine::Flurry => Engine::Flurry,
    }
}

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
    /// Set at the first SIGTERM/SIGINT: the node reports not ready (health checks fail, peers
    /// re-elect) but keeps serving every listener for `drain-ms`.
    pub draining: AtomicBool,
    /// Set when `drain-ms` is over: listeners close, client connections finish what they have
    /// in flight and close with a "reconnect elsewhere" signal.
    pub stopping: AtomicBool,
    /// Set once the workers are done: the cluster thread flushes, says goodbye and stops.
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
    pub repl: Repl,
    /// When pool acks may leave (`<replication ack>`; `Local` when the file names no other
    /// node).
    pub ack_mode: AckMode,
    /// Connections counted per listener and client address (`max-connections`,
    /// `max-connections-per-address`).
    pub admission: Admission,
    /// Client output buffered across the node, against `output-budget-bytes`.
    pub output: OutputBudget,
    /// A worker loop gap beyond this means the process did not run (see
    /// `Worker::abandon_pool_conns`): half of `down-after-ms`.
    pub stall_after: Duration,
    /// The `<api-key>`s the query front ends require (empty: open).
    pub api_keys: ApiKeys,
    /// Failure budgets of addresses that failed pool logins.
    pub(crate) login_throttle: LoginThrottle,
    /// The change feed and the watch streams' limits and counters.
    pub(crate) watch: Watch,
}

impl Shared {
    /// Builds the shared state of node `me` of `config`.
    pub fn new(config: ClusterConfig, me: NodeConfig, opts: &ServeOptions, repl: Repl) -> Self {
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
        let watch = Watch::new(&config, me.id, workers);
        Self {
            watch,
            hlc: Hlc::new(me.id),
            me,
            // Sized for `initial-users` (a million by default) up front: growing an index under
            // load makes its shard's writers wait while it is rehashed.
            store: Store::new(engine(config.store().engine), l.initial_users),
            streams: Streams::default(),
            metrics: Metrics::new(workers)
                .with_api_keys(config.security().api_keys.iter().map(|k| k.name.clone())),
            api_keys: ApiKeys::new(
                config
                    .security()
                    .api_keys
                    .iter()
                    .map(|k| (k.name.clone(), k.key.bytes().to_vec())),
            ),
            login_throttle: LoginThrottle::default(),
            clock: ClusterClock::new(opts.clock_offset_ms),
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
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
            ack_mode: ack_mode(&config),
            admission: Admission::new(l.max_connections, l.max_connections_per_address),
            output: OutputBudget::new(l.output_budget_bytes, workers),
            stall_after: Duration::from_millis((config.timing().down_after_ms / 2).max(50)),
            repl,
            config,
        }
    }

    /// Why this node does not take pool input yet (`None` when it does): pool input is refused
    /// meanwhile. A draining node still takes it (it was ready; pools move away as the load
    /// balancer stops sending).
    pub fn not_ready(&self) -> Option<&'static str> {
        if self.repl.is_ready() || self.draining.load(Ordering::Acquire) {
            None
        } else {
            Some(self.repl.snapshot().not_ready.unwrap_or("starting"))
        }
    }

    /// The [`Backend`] view that worker `worker` gives its HTTP handlers for input that
    /// started being handled at `started` (query latency is measured from there).
    pub fn backend(&self, worker: usize, started: Instant) -> NodeBackend<'_> {
        NodeBackend {
            shared: self,
            worker,
            started,
            client: None,
        }
    }
}

/// [`Backend`] over [`Shared`].
#[derive(Debug)]
pub struct NodeBackend<'a> {
    shared: &'a Shared,
    worker: usize,
    started: Instant,
    /// The client's address (per-address limits of watch streams).
    client: Option<IpAddr>,
}

impl NodeBackend<'_> {
    /// The same view for a request from `client`.
    pub fn with_client(self, client: IpAddr) -> Self {
        Self {
            client: Some(client),
            ..self
        }
    }
}

impl Backend for NodeBackend<'_> {
    fn node_id(&self) -> u16 {
        self.shared.me.id
    }

    /// Cluster time when the driver started this input (one clock read per request, not one
    /// per use; a request is answered within microseconds of it).
    fn now_ms(&self) -> u64 {
        (self.shared.clock.cluster_us_at(self.started) / 1000).max(0) as u64
    }

    fn batch_limit(&self) -> usize {
        usize::from(self.shared.query_limits.max_batch)
    }

    fn statuses(&self, ids: &[Sid], out: &mut Vec<Status>) {
        self.shared.store.pin().statuses(ids, out);
    }

    fn web(&self) -> Option<&presenced_config::Web> {
        self.shared.config.web()
    }

    fn change_member(&self, id: u16, remove: bool) -> Result<(), MemberChangeError> {
        let change = if remove {
            MemberChange::Remove(id)
        } else {
            MemberChange::Readmit(id)
        };
        match self.shared.repl.change_members(change) {
            Ok(()) => Ok(()),
            Err(ChangeError::Refused(MemberError::ItsMe(_))) => Err(MemberChangeError::ItsMe),
            Err(ChangeError::Refused(MemberError::Unknown(_))) => Err(MemberChangeError::Unknown),
            Err(ChangeError::NoAnswer) => Err(MemberChangeError::Unavailable),
        }
    }

    fn not_ready_reason(&self) -> Option<String> {
        if self.shared.draining.load(Ordering::Relaxed) {
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
        s.metrics.render(
            out,
            s.store.len() as u64,
            s.started.elapsed().as_secs_f64(),
            s.output.total() as u64,
        );
        crate::metrics::render_store(out, s.store.engine(), &s.store.memory());
        s.watch.render(out);
    }

    fn open_watch(&self) -> WatchSlot {
        let w = &self.shared.watch;
        if !w.sse {
            WatchSlot::Off
        } else if w.admit(self.client) {
            WatchSlot::Open
        } else {
            WatchSlot::Full
        }
    }

    fn release_watch(&self) {
        self.shared.watch.release(self.client);
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

    fn authorize(&self, f: Frontend, presented: Presented<'_>) -> bool {
        let outcome = self.shared.api_keys.check(presented);
        let idx = match f {
            Frontend::Json => 1,
            Frontend::Soap => 2,
        };
        self.shared.metrics.auth.api(idx, outcome);
        outcome != AuthOutcome::Missing && outcome != AuthOutcome::Invalid
    }
}

/// The ack policy in force: the configured one, except that a node whose file names no other
/// node has no replica to wait for and acks locally.
fn ack_mode(config: &ClusterConfig) -> AckMode {
    if config.alone() {
        return AckMode::Local;
    }
    match config.replication().ack {
        AckPolicy::Local => AckMode::Local,
        AckPolicy::Replica => AckMode::Replica,
        AckPolicy::ReplicaOrLocal => AckMode::ReplicaOrLocal,
    }
}
