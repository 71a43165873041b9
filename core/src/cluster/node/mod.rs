//! [`ClusterNode`]: one node's view of the cluster as a sans-IO state machine, composed of
//! smaller state machines (private submodules) that each own one concern and are tested on their
//! own:
//!
//! - `membership`: peers, liveness, readiness, the term and the masters (elections);
//! - `outbound`: this node's numbered updates (the backlog) and, per peer, the link this node
//!   dialed: resume, full snapshot, streaming, window, buckets asked for, relays;
//! - `inbound`: per peer, the link it dialed to this node: resume point, applying updates and
//!   snapshots, acks;
//! - `anti_entropy`: digest comparison in quiet intervals;
//! - `clock`: time sync, as master (probes, estimators, corrections) and follower (replies,
//!   applying corrections, confirmation);
//! - `relay`: what each origin sent recently, relayed to the others when it is lost;
//! - `liveness`: stalls, hearing from peers, elections and readiness;
//! - `transmit` and `reports`: the outputs and the read-only reports; `types`: the vocabulary.
//!
//! `ClusterNode` routes inputs to them, keeps what spans several (readiness, the flush timer,
//! draining) and queues their outputs.
//!
//! # Method taxonomy
//!
//! Inputs (`handle_*`): [`ClusterNode::handle_frame`] (any decoded frame on a replication
//! connection, which enforces the `HELLO` handshake and names the error to answer with),
//! [`ClusterNode::handle_out_connected`], [`ClusterNode::handle_out_closed`],
//! [`ClusterNode::handle_in_closed`], [`ClusterNode::handle_datagram`],
//! [`ClusterNode::handle_local_updates`], [`ClusterNode::handle_drain`] and
//! [`ClusterNode::handle_timeout`]. ([`ClusterNode::handle_hello`],
//! [`ClusterNode::handle_in_msg`] and [`ClusterNode::handle_out_msg`] are the parts of
//! `handle_frame` for callers that already know the connection's direction.)
//!
//! Outputs (`poll_*`), to drain after **every** input until they return `None`:
//! [`ClusterNode::poll_transmit`] (replication messages, with their peer and direction),
//! [`ClusterNode::poll_datagram`] (time-sync packets), [`ClusterNode::poll_event`] (role changes
//! and other things worth a log line), and [`ClusterNode::poll_timeout`] (when to call
//! `handle_timeout` next).
//!
//! Time is always a parameter ([`Now`]): a monotonic reading for timers and the node's local,
//! uncorrected wall clock; cluster time is the latter plus [`ClusterNode::correction_us`].
//!
//! Every input does bounded work: a snapshot or a bucket is read from the store through a
//! resumable [`crate::store::Cursor`], one frame's worth per `poll_transmit`.

use std::collections::{BTreeMap, VecDeque};

use crate::cluster::repl::{Msg, NodeInfo};
use crate::cluster::timesync::Packet;
use crate::model::Sid;
use crate::proto::ErrorCode;

mod admin;
mod anti_entropy;
mod clock;
mod guard;
mod inbound;
mod liveness;
mod membership;
mod outbound;
mod peer_in;
mod relay;
mod reports;
mod transmit;
mod types;

use anti_entropy::AntiEntropy;
use clock::{TimeFollower, TimeMaster};
pub use guard::{MAX_TERM_JUMP, TERM_CEILING};
use inbound::InLink;
use liveness::stall_after;
use membership::Membership;
use outbound::{Backlog, OutLink, Welcome};
use relay::Relay;
pub use types::{
    Appliers, Conn, Ctx, Dir, Event, HelloError, MemberError, Now, Stats, Timing, Verdict,
};

/// A member learned at run time and never heard from directly expires after this many
/// `down-after` periods.
pub const EXPIRE_AFTER_DOWN: u64 = 10;

/// The replication links with one peer.
#[derive(Debug, Default)]
struct Links {
    out: Option<OutLink>,
    inbound: InLink,
    anti_entropy: AntiEntropy,
    /// `Some(n)`: the peer streams my updates from number `n` on without having taken my
    /// snapshot (it joined from its data master's), so its acks prove it holds `n..=acked`, not
    /// the updates before `n`. Survives reconnects; cleared when it takes my full snapshot.
    stream_from: Option<u64>,
}

/// One node's cluster state machine. See the module docs.
pub struct ClusterNode {
    me: NodeInfo,
    cluster: String,
    timing: Timing,
    incarnation: u64,
    started_us: u64,
    /// When an input last arrived (monotonic µs): a longer gap than `stall_us` means this
    /// process did not run (paused, frozen, swapped out).
    last_input_us: u64,
    /// Gap between inputs that counts as a stall.
    stall_us: u64,
    /// Every peer of the file was heard from, or `down_after_us` passed since start: roles may
    /// be claimed and reported.
    roles_known: bool,
    /// The file names seeds: an empty membership means "not introduced yet", not "alone".
    seeded: bool,
    /// A peer refused this node as removed from the cluster: not ready until one welcomes it.
    removed: bool,
    relay: Relay,
    membership: Membership,
    /// INVARIANT: has an entry for every peer of `membership`.
    links: BTreeMap<u16, Links>,
    backlog: Backlog,
    oldest_unflushed_us: Option<u64>,
    /// When local updates last arrived (monotonic µs).
    last_traffic_us: u64,
    joined: bool,
    ready: bool,
    draining: bool,
    /// Leaving the cluster: everything pending goes out at once, then `GOODBYE`.
    leaving: bool,
    goodbye_sent: bool,
    time_master: TimeMaster,
    clock: TimeFollower,
    next_heartbeat_us: u64,
    next_sync_us: u64,
    out: VecDeque<(u16, Dir, Msg)>,
    /// Scratch queue for one link's frames.
    link_out: VecDeque<Msg>,
    dgrams: VecDeque<(u16, Packet)>,
    /// Per peer: (incarnation, highest datagram counter taken from it).
    datagram_counters: BTreeMap<u16, (u64, u64)>,
    events: VecDeque<Event>,
    lag_samples: Vec<u64>,
    /// Sids whose record a peer's records changed here, until `take_merged`.
    /// INVARIANT: at most [`MAX_MERGED`] entries (the driver drains it after every input).
    merged: Vec<Sid>,
    stats: Stats,
}

/// Most sids [`ClusterNode::take_merged`] keeps between two calls; beyond, the oldest half is
/// dropped (a driver that never drains, such as a fuzz target, does not grow without bound).
pub const MAX_MERGED: usize = 1 << 20;

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("me", &self.me.id)
            .field("term", &self.membership.term())
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// A node `me` of cluster `cluster` that knows `peers` from its file. `incarnation` must be
    /// random per process start.
    pub fn new(
        me: NodeInfo,
        cluster: String,
        peers: &[NodeInfo],
        timing: Timing,
        incarnation: u64,
        now: Now,
    ) -> Self {
        let mut membership = Membership::new(me.id, peers);
        membership.set_expiry(timing.down_after_us.saturating_mul(EXPIRE_AFTER_DOWN));
        let links = membership
            .iter()
            .map(|p| (p.info.id, Links::default()))
            .collect();
        let mut n = Self {
            me,
            cluster,
            timing,
            incarnation,
            started_us: now.mono_us,
            last_input_us: now.mono_us,
            stall_us: stall_after(&timing),
            roles_known: false,
            seeded: false,
            removed: false,
            relay: Relay::new(timing.down_after_us.saturating_mul(4)),
            membership,
            links,
            backlog: Backlog::new(1 << 21),
            oldest_unflushed_us: None,
            last_traffic_us: 0,
            joined: false,
            ready: false,
            draining: false,
            leaving: false,
            goodbye_sent: false,
            time_master: TimeMaster::default(),
            clock: TimeFollower::default(),
            datagram_counters: BTreeMap::new(),
            next_heartbeat_us: now.mono_us,
            next_sync_us: now.mono_us,
            out: VecDeque::new(),
            link_out: VecDeque::new(),
            dgrams: VecDeque::new(),
            events: VecDeque::new(),
            lag_samples: Vec::new(),
            merged: Vec::new(),
            stats: Stats::default(),
        };
        n.update_roles();
        n.update_ready(now);
        n
    }

    /// Sets how many update numbers the backlog keeps for resuming peers.
    pub fn set_backlog_cap(&mut self, cap: usize) {
        self.backlog.set_cap(cap);
    }

    /// Caps the members this node keeps (`<limits max-gossip-members>`).
    pub fn set_max_members(&mut self, max: usize) {
        self.membership.set_max_peers(max);
    }

    // ----- inputs -----

    /// A decoded frame arrived on a replication connection. Enforces the handshake (the first
    /// frame on an accepted connection must be `HELLO`), routes the message, and tells the
    /// driver what to do with the connection.
    pub fn handle_frame(&mut self, now: Now, conn: Conn, msg: Msg, ctx: &Ctx<'_>) -> Verdict {
        match (conn, msg) {
            (
                Conn::AwaitHello,
                Msg::Hello {
                    cluster,
                    from,
                    incarnation,
                    ..
                },
            ) => match self.handle_hello(now, &cluster, from, incarnation) {
                Ok(welcome) => Verdict::Accepted {
                    peer: from.id,
                    welcome,
                },
                Err(e) => Verdict::Refuse {
                    code: match e {
                        HelloError::Removed(_) => ErrorCode::Removed,
                        _ => ErrorCode::Protocol,
                    },
                    message: e.to_string(),
                },
            },
            (Conn::AwaitHello, _) => Verdict::Close {
                reason: "expected HELLO".into(),
            },
            (Conn::In(peer), msg) => self.handle_in_msg(now, peer, msg, ctx),
            (Conn::Out(_), Msg::Error { code, message }) => {
                if code == ErrorCode::Removed as u8 {
                    // This node was removed from the cluster: it must not serve on its own.
                    self.removed = true;
                    self.update_ready(now);
                }
                Verdict::Close {
                    reason: format!("peer refused replication: {message}"),
                }
            }
            (Conn::Out(peer), msg) => {
                self.handle_out_msg(now, peer, msg, ctx);
                Verdict::Continue
            }
        }
    }

    /// This node's `HELLO` (also what an introduction to a seed sends).
    pub fn hello(&self) -> Msg {
        Msg::Hello {
            cluster: self.cluster.clone(),
            from: self.me,
            incarnation: self.incarnation,
            // The driver's link layer fills these in when the cluster is authenticated.
            auth: false,
            nonce: [0; crate::cluster::auth::NONCE_LEN],
        }
    }

    /// My connection to `peer` is up: sends `HELLO`.
    pub fn handle_out_connected(&mut self, peer: u16) {
        let Some(l) = self.links.get_mut(&peer) else {
            return;
        };
        l.out = Some(OutLink::new());
        let hello = self.hello();
        self.out.push_back((peer, Dir::Out, hello));
    }

    /// My connection to `peer` closed.
    pub fn handle_out_closed(&mut self, peer: u16) {
        if let Some(l) = self.links.get_mut(&peer) {
            l.out = None;
        }
    }

    /// A peer's connection to me sent `HELLO`. Returns the `WELCOME` to answer with, or why the
    /// connection must be refused.
    pub fn handle_hello(
        &mut self,
        now: Now,
        cluster: &str,
        from: NodeInfo,
        incarnation: u64,
    ) -> Result<Msg, HelloError> {
        self.observe(now);
        if cluster != self.cluster {
            return Err(HelloError::WrongCluster(cluster.to_owned()));
        }
        if from.id == self.me.id {
            return Err(HelloError::SameId(from.id));
        }
        if self.membership.is_removed(from.id) {
            return Err(HelloError::Removed(from.id));
        }
        // The address of a member from the cluster file stays as the file says (it may be a
        // proxy or a load balancer in front of the peer); others are reached where they say.
        self.admit(from, now);
        // A joining node takes one full snapshot, from its data master (which holds everyone's
        // data); the others stream from now on, and the master forwards what it merges from them
        // meanwhile (`OutLink::forwards`).
        // Before roles are known (their heartbeats only come once they are welcomed), the
        // lowest live member is the presumed master; if that turns out wrong, the real master's
        // link is dropped once roles are known so that it sends its snapshot.
        let master = if self.roles_known {
            Some(self.membership.master()).filter(|m| *m != self.me.id)
        } else {
            self.membership.alive_ids().min()
        };
        let from_now = !self.joined && master.is_some_and(|m| m != from.id);
        let inbound = &mut self.links.entry(from.id).or_default().inbound;
        let previous = inbound.incarnation();
        let resume_from = inbound.handle_hello(incarnation, from_now);
        if previous != 0 && previous != incarnation {
            // The peer restarted: what it sent before may not have reached everyone, and the
            // master's clock samples describe the old process.
            self.relay_from(from.id);
            self.time_master.forget(from.id);
        }
        self.heard(from.id, now);
        Ok(Msg::Welcome {
            node: self.me.id,
            resume_from,
        })
    }

    /// A peer's connection to me closed.
    pub fn handle_in_closed(&mut self, peer: u16) {
        if let Some(l) = self.links.get_mut(&peer) {
            l.inbound.handle_closed();
        }
    }

    /// A message arrived on my connection to `peer`.
    pub fn handle_out_msg(&mut self, now: Now, peer: u16, msg: Msg, _ctx: &Ctx<'_>) {
        self.observe(now);
        // Any answer on my link proves the peer alive, even if its heartbeats are queued
        // behind its own traffic.
        self.heard(peer, now);
        let Some(links) = self.links.get_mut(&peer) else {
            return;
        };
        let Some(link) = links.out.as_mut() else {
            return;
        };
        match msg {
            Msg::Welcome { resume_from, .. } => {
                self.removed = false;
                match link.handle_welcome(resume_from, &self.backlog, &mut self.link_out) {
                    Welcome::Resumed => {
                        self.stats.resumes += 1;
                        self.events.push_back(Event::Resumed(peer));
                    }
                    Welcome::Snapshot => {
                        links.stream_from = None;
                        self.stats.full_resyncs += 1;
                        self.events.push_back(Event::FullResync(peer));
                    }
                    Welcome::FromNow => {
                        links.stream_from = Some(self.backlog.next());
                        self.events.push_back(Event::Resumed(peer));
                    }
                }
                self.out
                    .extend(self.link_out.drain(..).map(|m| (peer, Dir::Out, m)));
            }
            Msg::Ack(seq) => link.handle_ack(seq, &self.backlog),
            Msg::BucketRequest(buckets) => link.handle_bucket_request(buckets),
            _ => {}
        }
    }

    /// Records changed by local pool updates, in order. Returns the update number of the last.
    pub fn handle_local_updates(&mut self, now: Now, sids: &[Sid]) -> u64 {
        self.observe(now);
        self.backlog.push(sids);
        if !sids.is_empty() {
            self.last_traffic_us = now.mono_us;
            if self.oldest_unflushed_us.is_none() {
                self.oldest_unflushed_us = Some(now.mono_us);
            }
        }
        self.last_seq()
    }

    /// Starts draining: not ready from now on (peers re-elect without this node and load
    /// balancers stop sending), while the node keeps serving and replicating as usual until
    /// [`ClusterNode::handle_leave`].
    pub fn handle_drain(&mut self, now: Now) {
        self.observe(now);
        self.draining = true;
        self.update_ready(now);
    }

    /// Leaves the cluster (after draining): pending updates are sent at once, and then (as the
    /// last frame on each link) `GOODBYE`.
    pub fn handle_leave(&mut self, now: Now) {
        self.leaving = true;
        self.handle_drain(now);
    }

    /// Timers: heartbeats, down detection, probes and digests.
    pub fn handle_timeout(&mut self, now: Now, ctx: &Ctx<'_>) {
        self.observe(now);
        let (down, changed) = self
            .membership
            .check_down(now.mono_us, self.timing.down_after_us);
        for id in down {
            self.events.push_back(Event::MemberDown(id));
            self.relay_from(id);
        }
        for id in self.membership.expire(now.mono_us) {
            self.links.remove(&id);
            self.datagram_counters.remove(&id);
            self.events.push_back(Event::MemberExpired(id));
        }
        if changed {
            self.update_roles();
        }
        if now.mono_us >= self.next_heartbeat_us {
            self.next_heartbeat_us = now.mono_us + self.timing.heartbeat_us;
            let hb = Msg::Heartbeat {
                removals: self.membership.decisions(),
                term: self.membership.term(),
                ready: self.ready,
                records: ctx.store.len() as u64,
                digest: ctx.store.digest(),
                members: self.membership.gossip(),
            };
            self.send_on_established(|_, _| true, &hb);
        }
        if now.mono_us >= self.next_sync_us {
            self.next_sync_us = now.mono_us + self.timing.sync_interval_us;
            if self.roles_known && self.membership.master() == self.me.id {
                let probes = self.time_master.poll_probes(
                    self.me.id,
                    self.membership.term(),
                    self.cluster_us(now),
                    self.membership.alive_ids(),
                );
                self.dgrams.extend(probes);
            }
            let digests = Msg::Digests(ctx.store.bucket_digests());
            let alive: Vec<u16> = self.membership.alive_ids().collect();
            self.send_on_established(|id, l| l.is_streaming() && alive.contains(&id), &digests);
        }
        self.update_ready(now);
    }

    // ----- internals -----
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
