//! Membership and roles: who the peers are, which are alive and ready, the election term and the
//! two masters.
//!
//! A peer is alive while it was heard from within `down_after_us` (any frame on either link, or
//! a time-sync answer, counts); it is down after that, or at once when it says `GOODBYE`. The
//! masters are the lowest alive ready id, this node included once it is ready; while no node is
//! ready, the lowest alive id. Every change of masters starts a new term.
//!
//! This module decides nothing about links or data: [`super::ClusterNode`] asks it and routes
//! the answers. It does not do I/O and takes time as a parameter.
//!
//! Architecture Invariant: the term only grows.

use std::collections::BTreeMap;

use crate::cluster::repl::{Gossip, NodeInfo, Removal};

/// What this node knows about one peer.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) info: NodeInfo,
    /// The driver's output buffer to this peer is full: generate nothing more for it.
    pub(super) congested: bool,
    /// When the peer was last heard from (monotonic µs).
    pub(super) last_heard: Option<u64>,
    pub(super) alive: bool,
    pub(super) ready: bool,
    /// A heartbeat of it arrived (so its readiness is known).
    pub(super) heartbeat_seen: bool,
    /// Records and digest of its store, from its last heartbeat (reports).
    pub(super) records: u64,
    pub(super) digest: u128,
    /// When it was learned from gossip or a `HELLO` (monotonic µs); `None` for the nodes of the
    /// cluster file, which never expire.
    pub(super) learned_us: Option<u64>,
}

impl Peer {
    fn new(info: NodeInfo) -> Self {
        Self {
            info,
            congested: false,
            last_heard: None,
            alive: false,
            ready: false,
            heartbeat_seen: false,
            records: 0,
            digest: 0,
            learned_us: None,
        }
    }
}

/// A change of masters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Roles {
    pub(super) term: u64,
    pub(super) master: u16,
}

/// The peers and the roles. See the module docs.
#[derive(Debug)]
pub(super) struct Membership {
    me: u16,
    peers: BTreeMap<u16, Peer>,
    /// INVARIANT: never decreases.
    term: u64,
    /// Most peers this node keeps (`<limits max-gossip-members>`): admitting stops there.
    max_peers: usize,
    /// How long a learned peer may stay unheard before it expires (0: never).
    expire_after_us: u64,
    /// Peers that expired, with when: gossip does not bring them back for `expire_after_us`
    /// (a `HELLO` from them does).
    quarantine: BTreeMap<u16, u64>,
    /// Time master and data master (always the same node today; kept apart in reports).
    master: u16,
    /// Removal decisions by id: the latest (greatest stamp) wins. A removed id is no member and
    /// is never admitted again until a later decision re-admits it.
    decisions: BTreeMap<u16, Removal>,
}

impl Membership {
    /// This node `me` and the peers of its cluster file.
    pub(super) fn new(me: u16, peers: &[NodeInfo]) -> Self {
        let peers = peers
            .iter()
            .filter(|p| p.id != me)
            .map(|p| (p.id, Peer::new(*p)))
            .collect();
        Self {
            me,
            peers,
            term: 0,
            max_peers: crate::cluster::repl::MAX_MEMBERS,
            expire_after_us: 0,
            quarantine: BTreeMap::new(),
            master: me,
            decisions: BTreeMap::new(),
        }
    }

    /// Caps the peers kept (never below the nodes of the file, which are kept anyway).
    pub(super) fn set_max_peers(&mut self, max: usize) {
        self.max_peers = max;
    }

    /// Sets how long a learned peer may stay unheard before it expires.
    pub(super) fn set_expiry(&mut self, after_us: u64) {
        self.expire_after_us = after_us;
    }

    /// Forgets the peers learned at run time (not from the file) that were never heard from
    /// directly within the expiry of being learned: a gossiped address nobody answers at, or a
    /// forged one. Returns their ids.
    pub(super) fn expire(&mut self, now_us: u64) -> Vec<u16> {
        let after_us = self.expire_after_us;
        if after_us == 0 {
            return Vec::new();
        }
        self.quarantine
            .retain(|_, t| now_us.saturating_sub(*t) <= after_us);
        let gone: Vec<u16> = self
            .peers
            .values()
            .filter(|p| {
                p.last_heard.is_none()
                    && p.learned_us
                        .is_some_and(|t| now_us.saturating_sub(t) > after_us)
            })
            .map(|p| p.info.id)
            .collect();
        for id in &gone {
            self.peers.remove(id);
            self.quarantine.insert(*id, now_us);
        }
        gone
    }

    /// Whether `id` was removed (and not re-admitted since).
    pub(super) fn is_removed(&self, id: u16) -> bool {
        self.decisions.get(&id).is_some_and(|d| d.removed)
    }

    /// Every decision known, for heartbeats.
    pub(super) fn decisions(&self) -> Vec<Removal> {
        self.decisions.values().copied().collect()
    }

    /// The stamp a new decision about `id` must beat.
    pub(super) fn decision_stamp(&self, id: u16) -> u64 {
        self.decisions.get(&id).map_or(0, |d| d.stamp)
    }

    /// Takes decision `d` if it is newer than the one known. Returns whether it removed a
    /// member (which is then forgotten).
    pub(super) fn decide(&mut self, d: Removal) -> bool {
        if d.id == 0
            || self
                .decisions
                .get(&d.id)
                .is_some_and(|k| k.stamp >= d.stamp)
        {
            return false;
        }
        self.decisions.insert(d.id, d);
        d.removed && self.peers.remove(&d.id).is_some()
    }

    pub(super) fn term(&self) -> u64 {
        self.term
    }

    pub(super) fn master(&self) -> u16 {
        self.master
    }

    pub(super) fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub(super) fn get(&self, id: u16) -> Option<&Peer> {
        self.peers.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: u16) -> Option<&mut Peer> {
        self.peers.get_mut(&id)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub(super) fn alive_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.peers.values().filter(|p| p.alive).map(|p| p.info.id)
    }

    /// Whether peer `id` is alive and said it is ready.
    pub(super) fn is_ready(&self, id: u16) -> bool {
        self.peers.get(&id).is_some_and(|p| p.alive && p.ready)
    }

    pub(super) fn any_ready_alive(&self) -> bool {
        self.peers.values().any(|p| p.alive && p.ready)
    }

    /// Adds a peer not known yet, learned at `now_us`. Returns whether it was new. This node's
    /// own id, removed ids, and any peer beyond the cap are refused.
    pub(super) fn admit(&mut self, info: NodeInfo, now_us: u64) -> bool {
        if info.id == self.me
            || self.peers.contains_key(&info.id)
            || self.is_removed(info.id)
            || self.peers.len() >= self.max_peers
        {
            return false;
        }
        let mut p = Peer::new(info);
        p.learned_us = Some(now_us);
        self.peers.insert(info.id, p);
        self.quarantine.remove(&info.id);
        true
    }

    /// `id` was heard from at `now_us`. Returns whether it came up (was not alive).
    pub(super) fn heard(&mut self, id: u16, now_us: u64) -> bool {
        let Some(p) = self.peers.get_mut(&id) else {
            return false;
        };
        p.last_heard = Some(now_us);
        !std::mem::replace(&mut p.alive, true)
    }

    /// Re-evaluates who is alive at `now_us`. Returns the peers that went down, and whether
    /// anything changed.
    pub(super) fn check_down(&mut self, now_us: u64, down_after_us: u64) -> (Vec<u16>, bool) {
        let mut down = Vec::new();
        let mut changed = false;
        for (id, p) in &mut self.peers {
            let alive = p
                .last_heard
                .is_some_and(|t| now_us.saturating_sub(t) <= down_after_us);
            if p.alive != alive {
                p.alive = alive;
                if !alive {
                    p.ready = false;
                    down.push(*id);
                }
                changed = true;
            }
        }
        (down, changed)
    }

    /// Whether every peer sent a heartbeat at least once (so roles can be decided knowing who
    /// is ready).
    pub(super) fn all_heard(&self) -> bool {
        self.peers.values().all(|p| p.heartbeat_seen)
    }

    /// Whether any peer's heartbeat arrived yet.
    pub(super) fn any_heartbeat_seen(&self) -> bool {
        self.peers.values().any(|p| p.heartbeat_seen)
    }

    /// After this node stalled: every alive peer counts as heard at `now_us`.
    pub(super) fn refresh_alive(&mut self, now_us: u64) {
        for p in self.peers.values_mut().filter(|p| p.alive) {
            p.last_heard = Some(now_us);
        }
    }

    /// `id` said goodbye. Returns whether it was alive.
    pub(super) fn goodbye(&mut self, id: u16) -> bool {
        let Some(p) = self.peers.get_mut(&id) else {
            return false;
        };
        p.last_heard = None;
        p.ready = false;
        std::mem::replace(&mut p.alive, false)
    }

    /// A heartbeat from `id` (its term was observed by the caller, within bounds). Returns the
    /// members it named that were new here.
    pub(super) fn handle_heartbeat(
        &mut self,
        (id, now_us): (u16, u64),
        ready: bool,
        records: u64,
        digest: u128,
        members: Vec<Gossip>,
    ) -> Vec<NodeInfo> {
        // Decisions are applied by the caller first (see `ClusterNode::handle_in_msg`), so a
        // member removed in this heartbeat is not re-admitted from its gossip.
        if let Some(p) = self.peers.get_mut(&id) {
            p.heartbeat_seen = true;
            p.ready = ready;
            p.records = records;
            p.digest = digest;
        }
        members
            .into_iter()
            .filter(|g| !self.quarantine.contains_key(&g.info.id) && self.admit(g.info, now_us))
            .map(|g| g.info)
            .collect()
    }

    /// A term seen on the wire: the term never goes back.
    pub(super) fn observe_term(&mut self, term: u64) {
        self.term = self.term.max(term);
    }

    /// What this node tells its peers about the others.
    pub(super) fn gossip(&self) -> Vec<Gossip> {
        self.peers
            .values()
            .map(|p| Gossip {
                info: p.info,
                alive: p.alive,
            })
            .collect()
    }

    /// Re-runs the election given whether this node is ready. Returns the new roles if the
    /// masters changed (or no term was started yet).
    pub(super) fn elect(&mut self, me_ready: bool) -> Option<Roles> {
        let alive = || self.peers.values().filter(|p| p.alive);
        let ready_min = alive()
            .filter(|p| p.ready)
            .map(|p| p.info.id)
            .chain(me_ready.then_some(self.me))
            .min();
        let any_min = alive()
            .map(|p| p.info.id)
            .chain(std::iter::once(self.me))
            .min()
            .unwrap_or(self.me);
        let master = ready_min.unwrap_or(any_min);
        if master == self.master && self.term != 0 {
            return None;
        }
        self.term = self.term.saturating_add(1);
        self.master = master;
        Some(Roles {
            term: self.term,
            master,
        })
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn info(id: u16) -> NodeInfo {
        NodeInfo {
            id,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pool_port: id,
            query_port: id,
            sync_port: id,
            time_port: id,
            http_port: id,
        }
    }

    #[test]
    fn lowest_alive_ready_id_is_master_and_each_change_is_a_term() {
        let mut m = Membership::new(2, &[info(1), info(2), info(3)]);
        // Alone and not ready: itself.
        assert_eq!(m.elect(false), Some(Roles { term: 1, master: 2 }));
        assert_eq!(m.elect(false), None);
        // Node 1 alive but not ready; nobody ready: lowest alive id.
        assert!(m.heard(1, 10));
        assert_eq!(m.elect(false), Some(Roles { term: 2, master: 1 }));
        // This node ready, node 1 not: this node.
        assert_eq!(m.elect(true), Some(Roles { term: 3, master: 2 }));
        // Node 1 ready too: node 1 (fail-back).
        m.handle_heartbeat((1, 0), true, 0, 0, Vec::new());
        assert_eq!(m.elect(true), Some(Roles { term: 4, master: 1 }));
        // Node 1 silent too long: fail-over.
        let (down, changed) = m.check_down(1_000, 500);
        assert_eq!((down, changed), (vec![1], true));
        assert_eq!(m.elect(true), Some(Roles { term: 5, master: 2 }));
    }

    #[test]
    fn terms_never_go_back() {
        let mut m = Membership::new(2, &[info(1)]);
        m.observe_term(40);
        m.observe_term(7);
        assert_eq!(m.term(), 40);
        m.heard(1, 1);
        assert_eq!(
            m.elect(false),
            Some(Roles {
                term: 41,
                master: 1
            })
        );
        assert_eq!(m.elect(false), None);
    }

    #[test]
    fn gossip_admits_new_members_once_and_never_this_node() {
        let mut m = Membership::new(1, &[info(2)]);
        let g = |id| Gossip {
            info: info(id),
            alive: true,
        };
        let new = m.handle_heartbeat((2, 0), false, 0, 0, vec![g(1), g(2), g(3), g(3)]);
        assert_eq!(new, vec![info(3)]);
        assert!(m.get(3).is_some() && m.get(1).is_none());
        assert_eq!(m.gossip().len(), 2);
    }

    #[test]
    fn the_latest_decision_wins_and_removed_ids_are_not_admitted() {
        let mut m = Membership::new(1, &[info(2), info(3)]);
        let d = |stamp, removed| Removal {
            id: 3,
            stamp,
            removed,
        };
        assert!(m.decide(d(10, true)));
        assert!(m.get(3).is_none() && m.is_removed(3));
        assert!(!m.admit(info(3), 0), "a removed id is refused");
        // An older re-admission loses; a newer one wins.
        assert!(!m.decide(d(5, false)));
        assert!(m.is_removed(3));
        assert!(!m.decide(d(11, false)));
        assert!(!m.is_removed(3));
        assert!(m.admit(info(3), 0));
        assert_eq!(m.decisions(), vec![d(11, false)]);
    }

    #[test]
    fn goodbye_is_down_at_once_and_heard_brings_back() {
        let mut m = Membership::new(1, &[info(2)]);
        assert!(m.heard(2, 5));
        assert!(!m.heard(2, 6));
        assert!(m.goodbye(2));
        assert!(!m.goodbye(2));
        assert_eq!(m.alive_ids().count(), 0);
        assert!(m.heard(2, 7));
    }
}
