//! [`ClusterNode`]: one node's view of the cluster as a sans-IO state machine.
//!
//! It owns membership (who is alive, who is ready), elections (time master and data master =
//! lowest live ready sequence number, with fail-over and fail-back), the replication links
//! (backlog, resume, full snapshots, acks, anti-entropy) and time sync (probing as master,
//! applying corrections as follower).
//!
//! # Method taxonomy
//!
//! Inputs (`handle_*`): [`ClusterNode::handle_out_connected`], [`ClusterNode::handle_out_closed`],
//! [`ClusterNode::handle_out_msg`] (a message on my connection to a peer),
//! [`ClusterNode::handle_hello`] and [`ClusterNode::handle_in_msg`] (a peer's connection to me),
//! [`ClusterNode::handle_in_closed`], [`ClusterNode::handle_datagram`],
//! [`ClusterNode::handle_local_updates`] and [`ClusterNode::handle_timeout`].
//!
//! Outputs (`poll_*`), to drain after **every** input until they return `None`:
//! [`ClusterNode::poll_transmit`] (replication messages, with their peer and direction),
//! [`ClusterNode::poll_datagram`] (time-sync packets), [`ClusterNode::poll_event`] (role changes
//! and other things worth a log line), and [`ClusterNode::poll_timeout`] (when to call
//! `handle_timeout` next).
//!
//! Time is always a parameter ([`Now`]): a monotonic reading for timers and the node's local,
//! uncorrected wall clock; cluster time is the latter plus [`ClusterNode::correction_us`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::cluster::repl::{Gossip, Msg, NodeInfo, MAX_RECORDS};
use crate::cluster::timesync::{Estimator, Packet, Sample, MAX_ADJUST_US};
use crate::hlc::Hlc;
use crate::model::{Record, Sid};
use crate::store::{bucket_of, Store, DIGEST_BUCKETS};

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
    /// This node became ready (or stopped being ready).
    Ready(bool),
    /// A full snapshot was received from a peer.
    SnapshotReceived {
        /// The peer.
        from: u16,
        /// Records in it.
        records: u64,
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
}

enum OutState {
    AwaitWelcome,
    Snapshot {
        sids: Vec<Sid>,
        pos: usize,
        upto: u64,
    },
    Streaming,
}

struct OutLink {
    state: OutState,
    /// Next update number to send.
    next: u64,
    /// Highest update number acked.
    acked: u64,
    /// Buckets the peer asked for, not sent yet.
    buckets: VecDeque<(u16, Vec<(Sid, Record)>)>,
}

#[derive(Default)]
struct InLink {
    incarnation: u64,
    /// Highest update number of that incarnation applied here.
    applied: u64,
    snapshot_upto: Option<u64>,
    snapshot_records: u64,
    snapshot_done: bool,
    connected: bool,
    /// Buckets that differed in the previous round.
    suspect: BTreeSet<u16>,
    /// When this peer last sent updates or snapshot records (monotonic µs).
    last_update_us: u64,
}

struct Member {
    info: NodeInfo,
    /// The driver's output buffer to this peer is full: generate nothing more for it.
    congested: bool,
    last_heard: Option<u64>,
    alive: bool,
    ready: bool,
    records: u64,
    digest: u128,
    out: Option<OutLink>,
    inbound: InLink,
    estimator: Estimator,
}

impl Member {
    fn new(info: NodeInfo) -> Self {
        Self {
            info,
            congested: false,
            last_heard: None,
            alive: false,
            ready: false,
            records: 0,
            digest: 0,
            out: None,
            inbound: InLink::default(),
            estimator: Estimator::default(),
        }
    }
}

/// Encoded bytes of records per frame beyond which no record is added (far below
/// [`crate::cluster::repl::MAX_FRAME`] whatever the extension limits).
const FRAME_BUDGET: usize = 4 << 20;

/// An upper bound of a record's encoded size (with its sid).
fn len_hint(r: &Record) -> usize {
    let ext = r.ext().map_or(0, |e| {
        11 + e
            .value
            .entries()
            .map(|(k, v)| 3 + k.len() + v.len())
            .sum::<usize>()
    });
    8 + 22 + 1 + 12 * r.clients().count() + 12 + 1 + ext
}

/// How many of `records` fit one frame.
fn fitting(records: &[(Sid, Record)]) -> usize {
    let mut bytes = 0;
    records
        .iter()
        .take(MAX_RECORDS)
        .take_while(|(_, r)| {
            let fits = bytes < FRAME_BUDGET;
            bytes += len_hint(r);
            fits
        })
        .count()
        .max(1)
}

/// Most buckets asked for in one anti-entropy round (bounds the work a round can cause).
const MAX_BUCKETS_PER_ROUND: usize = 32;

/// Most of my updates sent to a peer and not acked.
const WINDOW: u64 = 1 << 18;
/// Updates that make a batch worth sending without waiting for the flush timer.
const EAGER_BATCH: u64 = 1024;

/// One node's cluster state machine. See the module docs.
pub struct ClusterNode {
    me: NodeInfo,
    cluster: String,
    timing: Timing,
    incarnation: u64,
    started_us: u64,
    members: BTreeMap<u16, Member>,
    term: u64,
    time_master: u16,
    data_master: u16,
    /// INVARIANT: `backlog[i]` is the sid of my update number `backlog_base + i`, and
    /// `backlog_base + backlog.len() == next_seq`.
    backlog: VecDeque<Sid>,
    backlog_base: u64,
    backlog_cap: usize,
    next_seq: u64,
    oldest_unflushed_us: Option<u64>,
    /// When local updates last arrived (monotonic µs).
    last_traffic_us: u64,
    joined: bool,
    clock_ok: bool,
    ready: bool,
    draining: bool,
    correction_us: i64,
    /// The last correction applied: (master, term, probe number).
    last_correct: Option<(u16, u64, u32)>,
    goodbye_sent: bool,
    probe_seq: u32,
    next_heartbeat_us: u64,
    next_sync_us: u64,
    out: VecDeque<(u16, Dir, Msg)>,
    dgrams: VecDeque<(u16, Packet)>,
    events: VecDeque<Event>,
    lag_samples: Vec<u64>,
    stats: Stats,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("me", &self.me.id)
            .field("term", &self.term)
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
        let members = peers
            .iter()
            .filter(|p| p.id != me.id)
            .map(|p| (p.id, Member::new(*p)))
            .collect();
        let mut n = Self {
            me,
            cluster,
            timing,
            incarnation,
            started_us: now.mono_us,
            members,
            term: 0,
            time_master: me.id,
            data_master: me.id,
            backlog: VecDeque::new(),
            backlog_base: 1,
            backlog_cap: 1 << 21,
            next_seq: 1,
            oldest_unflushed_us: None,
            last_traffic_us: 0,
            joined: false,
            clock_ok: false,
            ready: false,
            draining: false,
            correction_us: 0,
            last_correct: None,
            goodbye_sent: false,
            probe_seq: 0,
            next_heartbeat_us: now.mono_us,
            next_sync_us: now.mono_us,
            out: VecDeque::new(),
            dgrams: VecDeque::new(),
            events: VecDeque::new(),
            lag_samples: Vec::new(),
            stats: Stats::default(),
        };
        n.update_roles();
        n.update_ready(now);
        n
    }

    /// Sets how many update numbers the backlog keeps for resuming peers.
    pub fn set_backlog_cap(&mut self, cap: usize) {
        self.backlog_cap = cap.max(1);
    }

    // ----- reports -----

    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }
    /// The election term.
    pub fn term(&self) -> u64 {
        self.term
    }
    /// The time master's id.
    pub fn time_master(&self) -> u16 {
        self.time_master
    }
    /// The data master's id.
    pub fn data_master(&self) -> u16 {
        self.data_master
    }
    /// Whether this node serves.
    pub fn ready(&self) -> bool {
        self.ready
    }
    /// Why this node does not serve, if it does not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.draining {
            Some("draining")
        } else if !self.joined {
            Some("syncing data from the data master")
        } else if !self.clock_ok {
            Some("clock not confirmed by the time master")
        } else {
            None
        }
    }
    /// The clock correction, µs: cluster time = local wall clock + this.
    pub fn correction_us(&self) -> i64 {
        self.correction_us
    }
    /// Cluster time at `now`, µs.
    pub fn cluster_us(&self, now: Now) -> i64 {
        now.wall_us.saturating_add(self.correction_us)
    }
    /// Members other than this node: (info, alive, ready).
    pub fn members(&self) -> impl Iterator<Item = (&NodeInfo, bool, bool)> {
        self.members.values().map(|m| (&m.info, m.alive, m.ready))
    }
    /// Whether any peer is alive.
    pub fn any_peer_alive(&self) -> bool {
        self.members.values().any(|m| m.alive)
    }
    /// The highest update number of mine that at least one peer has acked.
    pub fn replicated_seq(&self) -> u64 {
        self.members
            .values()
            .filter_map(|m| m.out.as_ref().map(|o| o.acked))
            .max()
            .unwrap_or(0)
    }
    /// My last update number.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
    /// Update numbers the backlog holds.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
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

    // ----- inputs -----

    /// My connection to `peer` is up: sends `HELLO`.
    pub fn handle_out_connected(&mut self, peer: u16) {
        let Some(m) = self.members.get_mut(&peer) else {
            return;
        };
        m.out = Some(OutLink {
            state: OutState::AwaitWelcome,
            next: 0,
            acked: 0,
            buckets: VecDeque::new(),
        });
        self.out.push_back((
            peer,
            Dir::Out,
            Msg::Hello {
                cluster: self.cluster.clone(),
                from: self.me,
                incarnation: self.incarnation,
            },
        ));
    }

    /// My connection to `peer` closed.
    pub fn handle_out_closed(&mut self, peer: u16) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.out = None;
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
        if cluster != self.cluster {
            return Err(HelloError::WrongCluster(cluster.to_owned()));
        }
        if from.id == self.me.id {
            return Err(HelloError::SameId(from.id));
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.members.entry(from.id) {
            e.insert(Member::new(from));
            self.events.push_back(Event::MemberJoined(from));
        }
        // The address of a member from the cluster file stays as the file says (it may be a
        // proxy or a load balancer in front of the peer); others are reached where they say.
        let m = self
            .members
            .get_mut(&from.id)
            .ok_or(HelloError::SameId(from.id))?;
        let resume_from = if m.inbound.incarnation == incarnation && m.inbound.snapshot_done {
            m.inbound.applied + 1
        } else {
            m.inbound = InLink {
                incarnation,
                ..InLink::default()
            };
            0
        };
        m.inbound.connected = true;
        m.inbound.snapshot_upto = None;
        self.heard(from.id, now);
        Ok(Msg::Welcome {
            node: self.me.id,
            resume_from,
        })
    }

    /// A peer's connection to me closed.
    pub fn handle_in_closed(&mut self, peer: u16) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.inbound.connected = false;
            m.inbound.snapshot_upto = None;
        }
    }

    /// A message arrived on my connection to `peer`.
    pub fn handle_out_msg(&mut self, now: Now, peer: u16, msg: Msg, ctx: &Ctx<'_>) {
        // Any answer on my link proves the peer alive, even if its heartbeats are queued
        // behind its own traffic.
        self.heard(peer, now);
        let next_seq = self.next_seq;
        let base = self.backlog_base;
        let Some(m) = self.members.get_mut(&peer) else {
            return;
        };
        let Some(link) = m.out.as_mut() else { return };
        match msg {
            Msg::Welcome { resume_from, .. } => {
                if resume_from != 0 && resume_from >= base && resume_from <= next_seq {
                    link.state = OutState::Streaming;
                    link.next = resume_from;
                    link.acked = resume_from - 1;
                    self.stats.resumes += 1;
                    self.events.push_back(Event::Resumed(peer));
                } else {
                    let mut sids = Vec::with_capacity(ctx.store.len());
                    ctx.store.pin().for_each(|sid, _| sids.push(sid));
                    let upto = next_seq - 1;
                    link.state = OutState::Snapshot { sids, pos: 0, upto };
                    link.next = next_seq;
                    link.acked = 0;
                    self.out
                        .push_back((peer, Dir::Out, Msg::SnapshotBegin { upto_seq: upto }));
                    self.stats.full_resyncs += 1;
                    self.events.push_back(Event::FullResync(peer));
                }
            }
            Msg::Ack(seq) => link.acked = link.acked.max(seq.min(next_seq - 1)),
            Msg::BucketRequest(buckets) => {
                let wanted: BTreeSet<u16> = buckets.into_iter().collect();
                let mut by_bucket: BTreeMap<u16, Vec<(Sid, Record)>> = BTreeMap::new();
                ctx.store.pin().for_each(|sid, r| {
                    let b = bucket_of(sid) as u16;
                    if wanted.contains(&b) {
                        by_bucket.entry(b).or_default().push((sid, r.clone()));
                    }
                });
                for b in wanted {
                    link.buckets
                        .push_back((b, by_bucket.remove(&b).unwrap_or_default()));
                }
            }
            _ => {}
        }
    }

    /// A message arrived on `peer`'s connection to me (after its `HELLO`).
    pub fn handle_in_msg(&mut self, now: Now, peer: u16, msg: Msg, ctx: &Ctx<'_>) {
        self.heard(peer, now);
        let cluster_us = self.cluster_us(now);
        let Some(m) = self.members.get_mut(&peer) else {
            return;
        };
        match msg {
            Msg::Updates { upto_seq, records } => {
                m.inbound.last_update_us = now.mono_us;
                let pinned = ctx.store.pin();
                for (sid, r) in &records {
                    ctx.hlc.observe(r.ident().stamp);
                    if pinned.merge(*sid, r) {
                        self.stats.merged += 1;
                    }
                    let lag = cluster_us / 1000 - r.ident().stamp.physical_ms() as i64;
                    if self.lag_samples.len() < 4096 {
                        self.lag_samples.push((lag.max(0) as u64) * 1000);
                    }
                }
                m.inbound.applied = m.inbound.applied.max(upto_seq);
                self.out
                    .push_back((peer, Dir::In, Msg::Ack(m.inbound.applied)));
            }
            Msg::SnapshotBegin { upto_seq } => {
                m.inbound.snapshot_upto = Some(upto_seq);
                m.inbound.snapshot_records = 0;
            }
            Msg::Snapshot(records) => {
                m.inbound.last_update_us = now.mono_us;
                let pinned = ctx.store.pin();
                for (sid, r) in &records {
                    ctx.hlc.observe(r.ident().stamp);
                    pinned.merge(*sid, r);
                }
                m.inbound.snapshot_records += records.len() as u64;
            }
            Msg::SnapshotEnd { .. } => {
                if let Some(upto) = m.inbound.snapshot_upto.take() {
                    m.inbound.applied = upto;
                    m.inbound.snapshot_done = true;
                    self.events.push_back(Event::SnapshotReceived {
                        from: peer,
                        records: m.inbound.snapshot_records,
                    });
                    self.out.push_back((peer, Dir::In, Msg::Ack(upto)));
                }
            }
            Msg::Heartbeat {
                term,
                ready,
                records,
                digest,
                members,
            } => {
                m.ready = ready;
                m.records = records;
                m.digest = digest;
                self.term = self.term.max(term);
                for g in members {
                    if g.info.id != self.me.id && !self.members.contains_key(&g.info.id) {
                        self.members.insert(g.info.id, Member::new(g.info));
                        self.events.push_back(Event::MemberJoined(g.info));
                    }
                }
                self.update_roles();
            }
            Msg::Digests(theirs) => {
                // Under traffic, digests always differ by what is still in flight, and repairing
                // them would resend whole buckets every round. Anti-entropy waits for a quiet
                // sync interval; streaming and snapshots carry the data meanwhile.
                let quiet_since = self.last_traffic_us.max(m.inbound.last_update_us);
                if now.mono_us.saturating_sub(quiet_since) < self.timing.sync_interval_us {
                    m.inbound.suspect.clear();
                    self.update_ready(now);
                    return;
                }
                let mine = ctx.store.bucket_digests();
                let differ: BTreeSet<u16> = (0..DIGEST_BUCKETS)
                    .filter(|b| mine.get(*b) != theirs.get(*b))
                    .map(|b| b as u16)
                    .collect();
                // Ask only for buckets that differed twice in a row: a single difference is
                // usually updates still in flight.
                let ask: Vec<u16> = differ
                    .intersection(&m.inbound.suspect)
                    .copied()
                    .take(MAX_BUCKETS_PER_ROUND)
                    .collect();
                m.inbound.suspect = differ;
                if !ask.is_empty() {
                    self.out.push_back((peer, Dir::In, Msg::BucketRequest(ask)));
                }
            }
            Msg::Bucket { records, .. } => {
                let pinned = ctx.store.pin();
                let mut changed = 0;
                for (sid, r) in &records {
                    ctx.hlc.observe(r.ident().stamp);
                    if pinned.merge(*sid, r) {
                        changed += 1;
                    }
                }
                if changed > 0 {
                    self.stats.digest_repairs += changed;
                    self.events.push_back(Event::Repaired {
                        from: peer,
                        changed,
                    });
                }
            }
            Msg::Goodbye => {
                m.last_heard = None;
                if m.alive {
                    m.alive = false;
                    m.ready = false;
                    self.events.push_back(Event::MemberDown(peer));
                }
                self.update_roles();
            }
            _ => {}
        }
        self.update_ready(now);
    }

    /// A time-sync datagram arrived.
    pub fn handle_datagram(&mut self, now: Now, p: Packet) {
        let cluster_us = self.cluster_us(now);
        match p {
            Packet::Probe {
                term,
                from,
                seq,
                t1,
            } => {
                self.term = self.term.max(term);
                self.dgrams.push_back((
                    from,
                    Packet::Reply {
                        term,
                        from: self.me.id,
                        seq,
                        t1,
                        t2: cluster_us,
                        t3: cluster_us,
                    },
                ));
            }
            Packet::Reply {
                from,
                seq,
                t1,
                t2,
                t3,
                ..
            } => {
                if self.time_master != self.me.id {
                    return;
                }
                let tolerance = self.timing.tolerance_us as i64;
                let Some(sample) = Sample::from_times(t1, t2, t3, cluster_us) else {
                    return;
                };
                let Some(m) = self.members.get_mut(&from) else {
                    return;
                };
                if let Some(adjust_us) = m.estimator.add(seq, sample, tolerance, self.probe_seq) {
                    self.dgrams.push_back((
                        from,
                        Packet::Correct {
                            term: self.term,
                            from: self.me.id,
                            seq,
                            adjust_us,
                        },
                    ));
                }
            }
            Packet::Correct {
                term,
                from,
                seq,
                adjust_us,
            } => {
                //= docs/protocols/time-sync.md#fencing
                //# A follower applies `CORRECT` only from the node it considers time master, at a
                //# term no older than the newest it has seen.
                if from != self.time_master || term < self.term || from == self.me.id {
                    return;
                }
                // Each correction once: a duplicated datagram must not apply it twice.
                if self
                    .last_correct
                    .is_some_and(|(f, t, s)| f == from && t == term && seq <= s)
                {
                    return;
                }
                if adjust_us.unsigned_abs() > MAX_ADJUST_US.unsigned_abs() {
                    return;
                }
                self.last_correct = Some((from, term, seq));
                if adjust_us != 0 {
                    self.correction_us = self.correction_us.saturating_add(adjust_us);
                    self.events.push_back(Event::ClockCorrected {
                        adjust_us,
                        correction_us: self.correction_us,
                    });
                }
                self.clock_ok = true;
                self.update_ready(now);
            }
        }
    }

    /// Records changed by local pool updates, in order. Returns the update number of the last.
    pub fn handle_local_updates(&mut self, now: Now, sids: &[Sid]) -> u64 {
        for sid in sids {
            self.backlog.push_back(*sid);
            self.next_seq += 1;
        }
        while self.backlog.len() > self.backlog_cap {
            self.backlog.pop_front();
            self.backlog_base += 1;
        }
        if !sids.is_empty() {
            self.last_traffic_us = now.mono_us;
            if self.oldest_unflushed_us.is_none() {
                self.oldest_unflushed_us = Some(now.mono_us);
            }
        }
        self.next_seq - 1
    }

    /// Starts draining: not ready from now on; pending updates are sent at once, and then
    /// (as the last frame on each link) `GOODBYE`.
    pub fn handle_drain(&mut self, now: Now) {
        self.draining = true;
        self.update_ready(now);
    }

    /// Timers: heartbeats, down detection, probes and digests.
    pub fn handle_timeout(&mut self, now: Now, ctx: &Ctx<'_>) {
        // Down detection.
        let mut changed = false;
        for (id, m) in &mut self.members {
            let alive = m
                .last_heard
                .is_some_and(|t| now.mono_us.saturating_sub(t) <= self.timing.down_after_us);
            if m.alive != alive {
                m.alive = alive;
                if !alive {
                    m.ready = false;
                    self.events.push_back(Event::MemberDown(*id));
                }
                changed = true;
            }
        }
        if changed {
            self.update_roles();
        }
        if now.mono_us >= self.next_heartbeat_us {
            self.next_heartbeat_us = now.mono_us + self.timing.heartbeat_us;
            let members: Vec<Gossip> = self
                .members
                .values()
                .map(|m| Gossip {
                    info: m.info,
                    alive: m.alive,
                })
                .collect();
            let hb = Msg::Heartbeat {
                term: self.term,
                ready: self.ready,
                records: ctx.store.len() as u64,
                digest: ctx.store.digest(),
                members,
            };
            for (id, m) in &self.members {
                if m.out
                    .as_ref()
                    .is_some_and(|o| !matches!(o.state, OutState::AwaitWelcome))
                {
                    self.out.push_back((*id, Dir::Out, hb.clone()));
                }
            }
        }
        if now.mono_us >= self.next_sync_us {
            self.next_sync_us = now.mono_us + self.timing.sync_interval_us;
            if self.time_master == self.me.id {
                let t1 = self.cluster_us(now);
                self.probe_seq = self.probe_seq.wrapping_add(1);
                for (id, m) in &self.members {
                    if m.alive {
                        self.dgrams.push_back((
                            *id,
                            Packet::Probe {
                                term: self.term,
                                from: self.me.id,
                                seq: self.probe_seq,
                                t1,
                            },
                        ));
                    }
                }
            }
            let digests = Msg::Digests(ctx.store.bucket_digests());
            for (id, m) in &self.members {
                if m.alive
                    && m.out
                        .as_ref()
                        .is_some_and(|o| matches!(o.state, OutState::Streaming))
                {
                    self.out.push_back((*id, Dir::Out, digests.clone()));
                }
            }
        }
        self.update_ready(now);
    }

    // ----- outputs -----

    /// The next replication message to send: `(peer, connection, message)`.
    pub fn poll_transmit(&mut self, now: Now, ctx: &Ctx<'_>) -> Option<(u16, Dir, Msg)> {
        if let Some(m) = self.out.pop_front() {
            return Some(m);
        }
        let flush_due = self.draining
            || self
                .oldest_unflushed_us
                .is_some_and(|t| now.mono_us.saturating_sub(t) >= self.timing.flush_us);
        let next_seq = self.next_seq;
        let base = self.backlog_base;
        for (id, m) in &mut self.members {
            if m.congested {
                continue;
            }
            let Some(link) = m.out.as_mut() else { continue };
            if let Some((bucket, mut records)) = link.buckets.pop_front() {
                let take = fitting(&records);
                if records.len() > take {
                    let rest = records.split_off(take);
                    link.buckets.push_front((bucket, rest));
                }
                return Some((*id, Dir::Out, Msg::Bucket { bucket, records }));
            }
            match &mut link.state {
                OutState::AwaitWelcome => {}
                OutState::Snapshot { sids, pos, upto } => {
                    let pinned = ctx.store.pin();
                    let mut chunk: Vec<(Sid, Record)> = Vec::new();
                    let mut bytes = 0;
                    while let Some(sid) = sids.get(*pos) {
                        if chunk.len() == MAX_RECORDS || bytes >= FRAME_BUDGET {
                            break;
                        }
                        *pos += 1;
                        if let Some(r) = pinned.record(*sid) {
                            bytes += len_hint(&r);
                            chunk.push((*sid, r));
                        }
                    }
                    if *pos >= sids.len() {
                        let upto = *upto;
                        let total = sids.len() as u64;
                        link.state = OutState::Streaming;
                        link.next = upto + 1;
                        self.out
                            .push_back((*id, Dir::Out, Msg::SnapshotEnd { records: total }));
                    }
                    if chunk.is_empty() {
                        return self.out.pop_front();
                    }
                    return Some((*id, Dir::Out, Msg::Snapshot(chunk)));
                }
                OutState::Streaming => {
                    if link.next < base {
                        // The peer fell behind the backlog: resend everything.
                        let mut sids = Vec::with_capacity(ctx.store.len());
                        ctx.store.pin().for_each(|sid, _| sids.push(sid));
                        let upto = next_seq - 1;
                        link.state = OutState::Snapshot { sids, pos: 0, upto };
                        link.next = next_seq;
                        self.stats.full_resyncs += 1;
                        self.events.push_back(Event::FullResync(*id));
                        return Some((*id, Dir::Out, Msg::SnapshotBegin { upto_seq: upto }));
                    }
                    let pending = next_seq - link.next;
                    let in_flight = link.next.saturating_sub(link.acked + 1);
                    if pending > 0 && self.oldest_unflushed_us.is_none() {
                        // Updates waiting for this link (after a resume, say) start the timer.
                        self.oldest_unflushed_us = Some(now.mono_us);
                    }
                    if pending == 0 || in_flight >= WINDOW || (pending < EAGER_BATCH && !flush_due)
                    {
                        continue;
                    }
                    let n = pending.min(MAX_RECORDS as u64);
                    let from = (link.next - base) as usize;
                    let pinned = ctx.store.pin();
                    let mut seen = BTreeSet::new();
                    let mut records = Vec::new();
                    let mut bytes = 0;
                    let mut taken = 0;
                    for sid in self.backlog.range(from..from + n as usize) {
                        taken += 1;
                        if seen.insert(*sid) {
                            if let Some(r) = pinned.record(*sid) {
                                bytes += len_hint(&r);
                                records.push((*sid, r));
                            }
                        }
                        if bytes >= FRAME_BUDGET {
                            break;
                        }
                    }
                    link.next += taken;
                    return Some((
                        *id,
                        Dir::Out,
                        Msg::Updates {
                            upto_seq: link.next - 1,
                            records,
                        },
                    ));
                }
            }
        }
        // Everything pending is sent (or waiting for acks): the flush timer restarts.
        if self
            .members
            .values()
            .all(|m| m.congested || m.out.as_ref().is_none_or(|o| o.next >= next_seq))
        {
            self.oldest_unflushed_us = None;
            // Draining: everything is sent, so `GOODBYE` goes out as the last frame.
            if self.draining && !self.goodbye_sent {
                self.goodbye_sent = true;
                for (id, m) in &self.members {
                    if m.out
                        .as_ref()
                        .is_some_and(|o| !matches!(o.state, OutState::AwaitWelcome))
                    {
                        self.out.push_back((*id, Dir::Out, Msg::Goodbye));
                    }
                }
                return self.out.pop_front();
            }
        }
        None
    }

    /// The next time-sync datagram: `(peer, packet)`.
    pub fn poll_datagram(&mut self) -> Option<(u16, Packet)> {
        self.dgrams.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` (or `poll_transmit`, for batched updates) is due, monotonic µs.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.next_heartbeat_us.min(self.next_sync_us);
        if let Some(o) = self.oldest_unflushed_us {
            t = t.min(o + self.timing.flush_us);
        }
        t
    }

    /// Marks the outbound connection to `peer` as congested (the driver's buffer is full) or
    /// not; `poll_transmit` generates no updates, snapshot or bucket frames for a congested peer.
    pub fn set_congested(&mut self, peer: u16, congested: bool) {
        if let Some(m) = self.members.get_mut(&peer) {
            m.congested = congested;
        }
    }

    /// The address book entry of a member.
    pub fn member_info(&self, id: u16) -> Option<NodeInfo> {
        self.members.get(&id).map(|m| m.info)
    }

    /// Members this node should hold an outbound connection to (all known peers).
    pub fn peers(&self) -> Vec<NodeInfo> {
        self.members.values().map(|m| m.info).collect()
    }

    // ----- internals -----

    fn heard(&mut self, peer: u16, now: Now) {
        let Some(m) = self.members.get_mut(&peer) else {
            return;
        };
        m.last_heard = Some(now.mono_us);
        if !m.alive {
            m.alive = true;
            self.events.push_back(Event::MemberUp(peer));
            self.update_roles();
        }
    }

    /// Masters: the lowest alive id among ready nodes (this one included if ready); while no
    /// node is ready, the lowest alive id.
    fn update_roles(&mut self) {
        let alive = || self.members.values().filter(|m| m.alive);
        let ready_min = alive()
            .filter(|m| m.ready)
            .map(|m| m.info.id)
            .chain(self.ready.then_some(self.me.id))
            .min();
        let any_min = alive()
            .map(|m| m.info.id)
            .chain(std::iter::once(self.me.id))
            .min()
            .unwrap_or(self.me.id);
        let master = ready_min.unwrap_or(any_min);
        if (master, master) != (self.time_master, self.data_master) || self.term == 0 {
            self.term += 1;
            self.time_master = master;
            self.data_master = master;
            self.stats.elections += 1;
            self.events.push_back(Event::RoleChange {
                term: self.term,
                time_master: master,
                data_master: master,
            });
        }
    }

    fn update_ready(&mut self, now: Now) {
        let grace_over = now.mono_us.saturating_sub(self.started_us) >= self.timing.down_after_us;
        let ready_peer = self.members.values().any(|m| m.alive && m.ready);
        if !self.joined {
            let from_master = self
                .members
                .get(&self.data_master)
                .is_some_and(|m| m.inbound.snapshot_done);
            // A node joins by taking a snapshot from the data master; the first nodes of a
            // cluster (nobody ready after the grace period), and a node alone in its file, start
            // from an empty store.
            if from_master || (grace_over && !ready_peer) || self.members.is_empty() {
                self.joined = true;
            }
        }
        // The time master is the reference, but only once it is sure nobody else is: a node
        // that restarts into a running cluster must be confirmed by that cluster's master.
        if self.time_master == self.me.id
            && (self.members.is_empty() || (grace_over && !ready_peer))
        {
            self.clock_ok = true;
        }
        let ready = self.joined && self.clock_ok && !self.draining;
        if ready != self.ready {
            self.ready = ready;
            self.events.push_back(Event::Ready(ready));
            self.update_roles();
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
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
