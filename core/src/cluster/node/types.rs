//! The vocabulary of [`super::ClusterNode`]: its inputs' context ([`Now`], [`Ctx`], [`Conn`]),
//! its configuration ([`Timing`]), and its outputs ([`Dir`], [`Verdict`], [`Event`], [`Stats`]).

use crate::cluster::repl::{Msg, NodeInfo};
use crate::hlc::Hlc;
use crate::proto::ErrorCode;
use crate::store::Store;

/// Timing, in µs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Heartbeat interval.
    pub heartbeat_us: u64,
    /// A peer not heard from for this long is down.
    pub down_after_us: u64,
    /// Time-sync and anti-entropy interval.
    pub sync_interval_us: u64,
    /// Clock tolerance.
    pub tolerance_us: u64,
    /// Longest time updates wait to be batched.
    pub flush_us: u64,
    /// Largest distance a remote stamp may be ahead of this node's cluster time, and largest
    /// clock correction in one step after this process's first (`<timing max-clock-drift-ms>`).
    pub max_drift_us: u64,
}

/// The current time, as the driver read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic µs (any origin).
    pub mono_us: u64,
    /// Local wall clock, µs since the Unix epoch, before correction.
    pub wall_us: i64,
}

/// Which connection a message travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// My outbound connection to the peer (I sent `HELLO`).
    Out,
    /// The peer's connection to me (it sent `HELLO`).
    In,
}

/// Things worth a log line or a metric.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The masters changed.
    RoleChange {
        /// New term.
        term: u64,
        /// Time master.
        time_master: u16,
        /// Data master.
        data_master: u16,
    },
    /// A peer is alive again.
    MemberUp(u16),
    /// A peer is down (silent too long, or said goodbye).
    MemberDown(u16),
    /// A node not in this node's cluster file joined.
    MemberJoined(NodeInfo),
    /// A member learned at run time was never heard from directly and was forgotten.
    MemberExpired(u16),
    /// A node was removed from the cluster (here, or by a decision gossiped from a peer).
    MemberRemoved(u16),
    /// This node became ready (or stopped being ready).
    Ready(bool),
    /// A full snapshot was received from a peer.
    SnapshotReceived {
        /// The peer.
        from: u16,
        /// Records in it.
        records: u64,
        /// From `SNAPSHOT_BEGIN` to `SNAPSHOT_END`: the transfer and the merge of every chunk.
        micros: u64,
    },
    /// A full snapshot is being sent to a peer (its resume point was gone).
    FullResync(u16),
    /// A link resumed from the backlog.
    Resumed(u16),
    /// Anti-entropy repaired these buckets from a peer.
    Repaired {
        /// The peer.
        from: u16,
        /// Records merged that changed something.
        changed: u64,
    },
    /// This node did not run for `gap_us` (paused, frozen, swapped out): peers got a fresh
    /// down-detection period instead of being declared down.
    Stalled {
        /// The gap, µs.
        gap_us: u64,
    },
    /// The clock was corrected by the time master.
    ClockCorrected {
        /// The adjustment, µs.
        adjust_us: i64,
        /// The new correction, µs.
        correction_us: i64,
    },
}

/// Counters for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Links resumed from the backlog.
    pub resumes: u64,
    /// Full snapshots sent.
    pub full_resyncs: u64,
    /// Records changed by anti-entropy.
    pub digest_repairs: u64,
    /// Role changes.
    pub elections: u64,
    /// Remote records merged.
    pub merged: u64,
    /// Times this node noticed it had not run for a while (paused, frozen, swapped out).
    pub stalls: u64,
    /// Records relayed to peers on behalf of an origin that went down or restarted.
    pub relayed: u64,
    /// Frames refused because a record or decision was stamped too far ahead of cluster time.
    pub rejected_stamps: u64,
    /// Terms ignored for leaping beyond the bound.
    pub rejected_terms: u64,
    /// Time-sync datagrams dropped: unknown sender, wrong incarnation, or a replayed counter.
    pub rejected_datagrams: u64,
}

/// Why an inbound `HELLO` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The peer belongs to another cluster.
    #[error("cluster name {0:?} differs")]
    WrongCluster(String),
    /// The peer claims this node's own id.
    #[error("node id {0} is this node's own")]
    SameId(u16),
    /// The peer's id was removed from the cluster (until it is re-admitted).
    #[error(
        "node {0} was removed from the cluster; re-admit it with POST /v1/cluster/members/{0}"
    )]
    Removed(u16),
}

/// Why a membership change was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// A node cannot remove or re-admit itself.
    #[error("node {0} is this node")]
    ItsMe(u16),
    /// No member has this id, and it was never removed.
    #[error("node {0} is not a member")]
    Unknown(u16),
}

/// A replication connection as the driver knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    /// A connection a peer opened to this node, before its `HELLO`.
    AwaitHello,
    /// A connection a peer opened to this node, after its `HELLO` was accepted.
    In(u16),
    /// The connection this node opened to `peer`.
    Out(u16),
}

/// What the driver does with a connection after [`super::ClusterNode::handle_frame`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Keep reading.
    Continue,
    /// The `HELLO` was accepted: the connection is now `Conn::In(peer)` (an older inbound
    /// connection of the same peer must be closed), and `welcome` is written on it.
    Accepted {
        /// The peer.
        peer: u16,
        /// The `WELCOME` to write.
        welcome: Msg,
    },
    /// Write `ERROR` with this code and message, then close once it is written.
    Refuse {
        /// The error code.
        code: ErrorCode,
        /// Why, for the peer's logs (also worth a log line here).
        message: String,
    },
    /// Close at once, without `ERROR` (a peer that does not speak the protocol, or a peer's
    /// `ERROR` on a link this node opened).
    Close {
        /// Why, for a log line.
        reason: String,
    },
}

impl Verdict {
    /// The verdict for a frame that does not decode: `ERROR` `Malformed`, then close.
    pub fn malformed(e: impl std::fmt::Display) -> Self {
        Self::Refuse {
            code: ErrorCode::Malformed,
            message: format!("malformed frame: {e}"),
        }
    }
}

/// What the state machine reads and merges into.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The node's store.
    pub store: &'a Store,
    /// The node's clock (observes remote stamps).
    pub hlc: &'a Hlc,
    /// Threads that share the merging of a large batch of remote records (`None`: the calling
    /// thread merges everything).
    pub appliers: Option<&'a dyn Appliers>,
}

/// The driver's threads for applying remote records in parallel (this crate owns no threads).
///
/// A large batch is cut into parts by digest bucket (so two parts never touch the same shard of
/// the store) and each part is merged by one call of the job; merges are joins, so the result is
/// the same whatever the split and the interleaving. The call returns when every part is merged,
/// so whatever the batch acknowledges is applied.
pub trait Appliers: Sync + std::fmt::Debug {
    /// How many parts are worth making (the threads available, the caller's included).
    fn width(&self) -> usize;
    /// Calls `job(part)` once for every `part` in `0..parts`, spread over the threads, and
    /// returns once all calls returned. Runs them on the calling thread if it cannot do better.
    fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync));
}
