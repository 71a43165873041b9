//! The plain values of the other sections of a cluster file: [`Timing`] (`<timing>`),
//! [`Replication`] (`<replication>`, with its [`AckPolicy`]), [`StoreConfig`] (`<store>`, with
//! its [`StoreEngine`]) and [`NodeConfig`] (`<node>`), each with the defaults that apply when an
//! attribute is left out.
//!
//! Nothing here parses or validates: `parse.rs` builds these values from attributes and
//! `validate.rs` checks what spans several elements.

use std::net::{IpAddr, SocketAddr};

/// Heartbeat and time-sync timing (`<timing>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Interval between heartbeats.
    pub heartbeat_ms: u64,
    /// A peer not heard from for this long is down.
    pub down_after_ms: u64,
    /// Interval between time-sync rounds.
    pub time_sync_interval_ms: u64,
    /// A follower is corrected only when its offset error exceeds this.
    pub time_tolerance_us: u64,
    /// On SIGTERM (or a first SIGINT), how long the node keeps serving every listener while it
    /// reports not ready, so load balancers stop sending before it stops accepting.
    pub drain_ms: u64,
    /// Largest distance a remote stamp may be ahead of this node's cluster time, and largest
    /// clock correction accepted in one step after the first one of this process.
    pub max_clock_drift_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            down_after_ms: 1000,
            time_sync_interval_ms: 1000,
            time_tolerance_us: 1000,
            drain_ms: 5000,
            max_clock_drift_ms: 5000,
        }
    }
}

/// When a pool event is acked (`<replication ack="...">`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckPolicy {
    /// Once applied on the node that received it.
    Local,
    /// Once at least one other node has it too, always: an acked update survives the loss of
    /// the node that received it. While no other node is reachable, acks are held (the pool
    /// sees back-pressure). A cluster whose file names no other node acks as `Local`.
    Replica,
    /// As `Replica` while another node is alive, as `Local` while none is. The risk: an update
    /// acked while the node believed itself alone (for example right after a network cut, or
    /// before it noticed peers were back) lives on that node only until it replicates, and is
    /// lost if the node is lost first.
    ReplicaOrLocal,
}

/// Replication settings (`<replication>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    /// The pool ack policy (default `replica`).
    pub ack: AckPolicy,
    /// Update numbers kept for resuming peers; a peer further behind gets a full snapshot.
    pub backlog: usize,
    /// Longest time an update waits to be batched, ms.
    pub flush_ms: u64,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            ack: AckPolicy::Replica,
            backlog: 1 << 21,
            flush_ms: 2,
        }
    }
}

/// Which engine holds the node's records (`<store engine="...">`).
///
/// The same choice as `presenced_core::store::Engine`, named here so that this crate does not
/// depend on the store; the server maps one onto the other. Every node of a cluster may use
/// either: digests and replication do not depend on the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StoreEngine {
    /// Records inline in per-shard arenas behind an open-addressing index (`table`, the
    /// default).
    #[default]
    Table,
    /// The reference engine, a flurry map of boxed records (`flurry`).
    Flurry,
}

impl StoreEngine {
    /// Every engine, in the order the error messages list them.
    pub const ALL: [Self; 2] = [Self::Table, Self::Flurry];

    /// The name written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Flurry => "flurry",
        }
    }

    /// The engine named `name` (exactly as [`StoreEngine::name`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The store settings (`<store>`). How many users it is sized for at start is
/// `<limits initial-users>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreConfig {
    /// The engine (default `table`).
    pub engine: StoreEngine,
}

/// One node of the cluster (`<node>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The sequence number: unique, 1 to 65535, lower wins elections.
    pub id: u16,
    /// The address every port of this node binds to and peers connect to.
    pub host: IpAddr,
    /// Pool protocol port (TCP).
    pub pool_port: u16,
    /// Raw batch query port (TCP).
    pub query_port: u16,
    /// Replication port (TCP).
    pub sync_port: u16,
    /// Time-sync port (UDP).
    pub time_port: u16,
    /// HTTP port: JSON API, SOAP, health, metrics.
    pub http_port: u16,
}

impl NodeConfig {
    /// `host:pool_port`.
    pub fn pool_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.pool_port)
    }
    /// `host:query_port`.
    pub fn query_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.query_port)
    }
    /// `host:sync_port`.
    pub fn sync_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.sync_port)
    }
    /// `host:time_port`.
    pub fn time_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.time_port)
    }
    /// `host:http_port`.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.http_port)
    }
}
