//! presenced core: the presence model, the Hybrid Logical Clock, the replicated [`Store`] and the
//! sans-IO codecs and session state machines of the binary protocols.
//!
//! # Layout
//!
//! - [`model`]: ids ([`Sid`], [`Uid`]), [`ClientType`], extension data ([`Ext`], with its
//!   limits in `model::ext`) and the per-user [`Record`] made of last-writer-wins registers.
//! - [`hlc`]: the Hybrid Logical Clock that stamps every local change ([`Stamp`]).
//! - [`store`]: the [`Store`], a concurrent map keyed by sid with a join-semilattice merge, batch
//!   get, snapshot iteration and an incrementally maintained bucketed digest.
//! - [`auth`]: the API keys of the query front ends and their constant-time check.
//! - [`wire`]: the panic-free [`wire::Reader`], frame splitting and the ext encoding.
//! - [`proto`]: the pool and query codecs and their session state machines
//!   ([`proto::pool_session::PoolSession`] with its shared `Streams`,
//!   [`proto::query::QuerySession`]).
//! - [`cluster`]: the replication codec ([`cluster::repl`]), time sync ([`cluster::timesync`])
//!   and the [`cluster::node::ClusterNode`] state machine.
//! - [`sync`]: the facade through which every hand-written atomic goes (loom under `cfg(loom)`).
//! - [`fuzzing`]: bodies of the cargo-fuzz targets, compiled by `cargo test` too.
//!
//! Every resource limit a peer can hit is a value the driver passes in (`PoolLimits`,
//! `QueryLimits`, `ReplLimits`, `ExtLimits`, `PoolSession::with_max_snapshot`), built from
//! `presenced_config::Limits`; the constants here are only their defaults. Counts that a
//! protocol fixes for both ends (`repl::MAX_RECORDS`, the 256 digest buckets) stay constants.
//!
//! # Thread model
//!
//! This crate owns no threads. The drivers in `presenced-frontends` share one [`Store`] and one
//! [`hlc::Hlc`] between all their worker threads:
//!
//! ```text
//!   worker 0 ──┐                      ┌── Store (flurry map, sid -> Record)
//!   worker 1 ──┼── &Store, &Hlc ──────┤
//!   worker N ──┘                      └── Hlc (one AtomicU64, CAS loop)
//! ```
//!
//! Architecture Invariant: nothing in this crate performs I/O or reads a clock. Time is always a
//! parameter (`now_ms`), so every state machine here runs the same in a test as in production.

pub mod ack_gate;
pub mod auth;
pub mod cluster;
pub mod fuzzing;
pub mod hlc;
pub mod model;
pub mod proto;
pub mod store;
pub mod sync;
pub mod wire;

pub use hlc::{Hlc, Stamp};
pub use model::{ClientType, Ext, Record, Sid, Status, Uid};
pub use store::Store;
