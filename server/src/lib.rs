//! presenced's drivers: the threads and mio event loops that run the sans-IO protocol code of
//! `presenced-core` and `presenced-frontends` over real sockets. This is the only crate of the
//! workspace that touches sockets (mio, socket2), threads, signals and clocks.
//!
//! # Layout
//!
//! - [`run`] (`acceptor`): binds every socket, starts the threads, accepts connections and hands
//!   them to workers; returns after SIGINT or SIGTERM.
//! - `worker`: a worker thread: pool, query and HTTP connections (`PoolSession`,
//!   `QuerySession`, `HttpConn<Router>`).
//! - [`cluster`]: the cluster thread (`ClusterDriver`): replication links, time-sync datagrams.
//! - `repl`: [`cluster::Repl`] and [`cluster::ClusterSnapshot`], the cluster thread's shared end
//!   (re-exported from [`cluster`]).
//! - `conn`: `BufConn`, the one buffered non-blocking connection both drivers use, and `listen`.
//! - [`ClusterClock`] (`clock`): cluster time (monotonic clock + start-up wall clock + correction).
//! - [`admission`]: connections counted per listener and client address, against
//!   `max-connections` and `max-connections-per-address`.
//! - [`budget`]: the node-wide budget of buffered client output and who is cut above it.
//! - [`ratelog`]: rate-limited warnings (one line per kind per second, with a suppressed count).
//! - `throttle`: `LoginThrottle`, the per-address failure budget of pool logins.
//! - `watch`: the node-wide change feed (a bounded ring of changed sids, from pool batches and
//!   merged peer records), event ids and resume points, watcher limits; workers run the streams
//!   (`GET /v1/watch`, raw-TCP `SUBSCRIBE`) and are woken when changes arrive.
//! - [`metrics`]: counters and histograms, and their one rendering as Prometheus text.
//! - [`Shared`], [`NodeBackend`], [`ServeOptions`] (`shared`): what all threads share, and the
//!   [`Backend`](presenced_frontends::backend::Backend) the HTTP handlers see.
//!
//! # Thread model
//!
//! ```text
//!   acceptor (main thread)   worker threads (one mio Poll each)          signal thread
//!   ┌───────────────┐  chan  ┌──────────────────────────────────┐        ┌─────────────┐
//!   │ pool listener │──────► │ worker 0: Slab<Conn>, timers     │◄─Waker─│ SIGINT/TERM │
//!   │ query listener│──────► │ worker 1: ...                    │        └──────┬──────┘
//!   │ http listener │ +Waker └───┬──────────────────────▲───────┘               │ Waker
//!   └───────────────┘            │ Repl::submit(sids)   │ Waker: replication    ▼
//!                                ▼ (chan + Waker)       │ progressed      (all threads)
//!                          cluster thread (mio Poll: sync listener, peer links, UDP)
//!                          sole owner of the ClusterNode; publishes ClusterSnapshot
//!
//!   all threads share Arc<Shared>: &Store, &Hlc (lock-free), Metrics (atomics), ClusterClock,
//!   Watch (change feed: workers and the cluster thread publish, a Waker per worker with
//!   watchers; workers read it in their loop)
//! ```
//!
//! One acceptor owns the three listeners and hands each accepted connection to a worker, round
//! robin. Workers never share a connection; they share only [`Shared`]. Workers number their
//! changes from one shared counter and send them to the cluster thread, which feeds them to the
//! node in number order and wakes the workers when replication advances (acks held under the
//! `replica` policy then go out).
//!
//! Architecture Invariant: no lock is held across `Poll::poll`, and a store guard lives only for
//! one batch of frames.
//! Architecture Invariant: a protocol error closes only the connection that caused it.
//! Architecture Invariant: every protocol decision is made by sans-IO code; these drivers only
//! move bytes, read clocks and count.

mod acceptor;
pub mod admission;
pub mod budget;
mod clock;
pub mod cluster;
mod conn;
pub mod metrics;
pub mod ratelog;
mod repl;
mod shared;
mod throttle;
mod watch;
mod worker;

pub use self::acceptor::run;
pub use self::clock::ClusterClock;
pub use self::shared::{NodeBackend, ServeOptions, Shared};
