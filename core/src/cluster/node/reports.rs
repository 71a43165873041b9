//! What [`ClusterNode`] reports: roles, readiness, clock, members, replication progress and
//! counters. Read-only; the driver publishes these for `/v1/cluster`, health and metrics.

use crate::cluster::repl::NodeInfo;
use crate::model::Sid;

use super::outbound::OutLink;
use super::{ClusterNode, Now, Stats};

impl ClusterNode {
    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }
    /// The election term.
    pub fn term(&self) -> u64 {
        self.membership.term()
    }
    /// Whether roles are settled: every peer sent a heartbeat, or `down_after` passed since
    /// start. Before that, the masters are this node's guess and must be reported as unknown.
    pub fn roles_known(&self) -> bool {
        self.roles_known
    }
    /// The time master's id.
    pub fn time_master(&self) -> u16 {
        self.membership.master()
    }
    /// The data master's id.
    pub fn data_master(&self) -> u16 {
        self.membership.master()
    }
    /// Whether this node serves.
    pub fn ready(&self) -> bool {
        self.ready
    }
    /// Why this node does not serve, if it does not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining {
            Some("draining")
        } else if self.removed {
            Some("removed from the cluster (re-admit with POST /v1/cluster/members/{id})")
        } else if !self.joined {
            Some("syncing data from the data master")
        } else if !self.clock.confirmed() {
            Some("clock not confirmed by the time master")
        } else {
            None
        }
    }
    /// The clock correction, µs: cluster time = local wall clock + this.
    pub fn correction_us(&self) -> i64 {
        self.clock.correction_us()
    }
    /// This process's incarnation (random per start; in `HELLO` and every time-sync datagram).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }
    /// Cluster time at `now`, µs since the Unix epoch.
    pub fn cluster_us(&self, now: Now) -> i64 {
        now.wall_us.saturating_add(self.clock.correction_us())
    }
    /// Members other than this node: (info, alive, ready).
    pub fn members(&self) -> impl Iterator<Item = (&NodeInfo, bool, bool)> {
        self.membership.iter().map(|p| (&p.info, p.alive, p.ready))
    }
    /// Whether any peer is alive.
    pub fn any_peer_alive(&self) -> bool {
        self.membership.alive_ids().next().is_some()
    }
    /// The highest update number of mine that at least one peer has acked.
    ///
    /// Every number up to it is held by some peer: each peer holds an interval of my numbers
    /// (from 1, or from where it started streaming without my snapshot, to what it acked), and
    /// this is how far their union covers `1..` without a hole.
    pub fn replicated_seq(&self) -> u64 {
        let mut spans: Vec<(u64, u64)> = self
            .links
            .values()
            .filter_map(|l| {
                let acked = l.out.as_ref().map(OutLink::acked)?;
                let from = l.stream_from.unwrap_or(1);
                (acked >= from).then_some((from, acked))
            })
            .collect();
        spans.sort_unstable();
        let mut covered = 0u64;
        for (from, to) in spans {
            if from > covered + 1 {
                break;
            }
            covered = covered.max(to);
        }
        covered
    }
    /// My last update number.
    pub fn last_seq(&self) -> u64 {
        self.backlog.next() - 1
    }
    /// Update numbers the backlog holds.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
    /// Sids remembered for relaying if their origin is lost (a memory report).
    pub fn relay_recent(&self) -> usize {
        self.relay.len()
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Replication lag samples (cluster time of apply minus the update's stamp, µs) since the
    /// last call.
    pub fn take_lag_samples(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.lag_samples)
    }
    /// The sids whose record was changed by a peer's records (updates, snapshots, repaired
    /// buckets) since the last call, in merge order, possibly repeated: what a node-wide change
    /// feed publishes besides local pool updates.
    pub fn take_merged(&mut self) -> Vec<Sid> {
        std::mem::take(&mut self.merged)
    }
    /// Keeps `changed` for [`take_merged`](Self::take_merged), within [`super::MAX_MERGED`].
    pub(super) fn note_merged(&mut self, mut changed: Vec<Sid>) {
        if self.merged.is_empty() {
            self.merged = changed;
        } else {
            self.merged.append(&mut changed);
        }
        if self.merged.len() > super::MAX_MERGED {
            let drop = self.merged.len() - super::MAX_MERGED / 2;
            self.merged.drain(..drop);
        }
    }
    /// The address book entry of a member.
    pub fn member_info(&self, id: u16) -> Option<NodeInfo> {
        self.membership.get(id).map(|p| p.info)
    }
    /// Members this node should hold an outbound connection to (all known peers).
    pub fn peers(&self) -> Vec<NodeInfo> {
        self.membership.iter().map(|p| p.info).collect()
    }
}
