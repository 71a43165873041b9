//! The ack gate: when a pool `ACK` may leave the node.
//!
//! Three pieces, one per thread role, so that the rules live in one tested place:
//!
//! - [`Watermark`] (shared by every worker and the cluster thread): numbers local updates
//!   ([`Watermark::allocate`], called by workers) and publishes the highest number that at least
//!   one peer has ([`Watermark::publish`], called by the cluster thread).
//! - [`Sequencer`] (cluster thread): workers hand their numbered batches over a channel, possibly
//!   out of order; the sequencer gives them back strictly in number order, holding a batch while
//!   an earlier number is missing (the **gap rule**), so the cluster node's backlog numbers are
//!   the workers' numbers.
//! - [`AckGate`] (one per pool connection, on its worker): the connection's output, in pieces,
//!   each tagged with the update number its acks wait for ([`Need`]). A piece leaves only when
//!   every earlier piece has left (the **ordering rule**: acks leave in the order the session
//!   wrote them, whatever happens around them) and its number is replicated, or the policy does
//!   not wait (the **release rule**).
//!
//! ```text
//!   worker: session ─ pieces(need) ─► AckGate ─ released bytes ─► socket
//!             │ allocate(n) ─► Watermark ◄─ publish(replicated) ─ cluster thread
//!             └─ (first, sids) ─ channel ─► Sequencer ─ in order ─► ClusterNode backlog
//! ```
//!
//! Policies ([`AckMode`]): `Replica` waits for a peer, always (with no peer reachable, acks are
//! held: back-pressure); `ReplicaOrLocal` waits while a peer is alive and releases everything
//! while none is (the risk: an ack then means one node has the update, and losing that node
//! loses it); `Local` never waits. A node whose cluster names no other node uses `Local`.
//!
//! Architecture Invariant: every atomic here goes through [`crate::sync`]; the loom models in
//! `ack_gate::loom_ack_gate` check the ordering and release rules across threads.

use std::collections::{BTreeMap, VecDeque};

use crate::model::Sid;
use crate::sync::{AtomicU64, Ordering};

/// When acks may leave the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// At once: the node applied the update.
    Local,
    /// Once a peer has the update; held while no peer is reachable.
    Replica,
    /// Once a peer has the update while one is alive; at once while none is.
    ReplicaOrLocal,
}

/// What a piece of output waits for before it may leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing of its own (a `WELCOME`, a `PONG`); it still leaves after earlier pieces.
    Nothing,
    /// Local update number `n` (and so every earlier one) replicated.
    Update(u64),
}

/// Update numbering and the replicated watermark, shared by workers and the cluster thread.
#[derive(Debug)]
pub struct Watermark {
    /// INVARIANT: the next number [`Watermark::allocate`] hands out; numbers start at 1.
    next: AtomicU64,
    /// INVARIANT: never decreases; every number up to it is held by at least one peer.
    replicated: AtomicU64,
    /// 1 while the `ReplicaOrLocal` policy degrades to local acks (no peer alive), else 0.
    degraded: AtomicU64,
}

impl Default for Watermark {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(1),
            replicated: AtomicU64::new(0),
            degraded: AtomicU64::new(0),
        }
    }
}

impl Watermark {
    /// Numbers `n` new local updates. Returns the first and last number (`None` for `n` = 0).
    pub fn allocate(&self, n: u64) -> Option<(u64, u64)> {
        if n == 0 {
            return None;
        }
        let first = self.next.fetch_add(n, Ordering::AcqRel);
        Some((first, first + n - 1))
    }

    /// The highest number handed out so far (0 before any).
    pub fn allocated(&self) -> u64 {
        self.next.load(Ordering::Acquire) - 1
    }

    /// Publishes (cluster thread) the highest local number some peer has, and whether any peer
    /// is alive. The watermark never goes back.
    pub fn publish(&self, replicated: u64, any_peer_alive: bool) {
        self.replicated.fetch_max(replicated, Ordering::AcqRel);
        self.degraded
            .store(u64::from(!any_peer_alive), Ordering::Release);
    }

    /// The highest local number some peer has.
    pub fn replicated(&self) -> u64 {
        self.replicated.load(Ordering::Acquire)
    }

    /// Whether a piece that needs `need` may leave under `mode`.
    pub fn allows(&self, mode: AckMode, need: Need) -> bool {
        match (mode, need) {
            (_, Need::Nothing) | (AckMode::Local, _) => true,
            (AckMode::Replica, Need::Update(n)) => n <= self.replicated(),
            (AckMode::ReplicaOrLocal, Need::Update(n)) => {
                n <= self.replicated() || self.degraded.load(Ordering::Acquire) == 1
            }
        }
    }
}

/// Gives numbered batches back in number order (the gap rule). Single-threaded.
#[derive(Debug)]
pub struct Sequencer {
    /// INVARIANT: the first number of the next batch to give back.
    next: u64,
    pending: BTreeMap<u64, Vec<Sid>>,
}

impl Default for Sequencer {
    fn default() -> Self {
        Self {
            next: 1,
            pending: BTreeMap::new(),
        }
    }
}

impl Sequencer {
    /// A batch numbered `first..first + sids.len()`.
    pub fn push(&mut self, first: u64, sids: Vec<Sid>) {
        if !sids.is_empty() && first >= self.next {
            self.pending.insert(first, sids);
        }
    }

    /// The next batch in number order, if it arrived.
    pub fn pop(&mut self) -> Option<Vec<Sid>> {
        let sids = self.pending.remove(&self.next)?;
        self.next += sids.len() as u64;
        Some(sids)
    }

    /// Batches held behind a missing number.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

/// One connection's output, released in order as its needs are met. See the module docs.
#[derive(Debug)]
pub struct AckGate {
    mode: AckMode,
    /// INVARIANT: every piece here waits (its own need, or an earlier piece's).
    held: VecDeque<(Need, Vec<u8>)>,
    held_bytes: usize,
}

impl AckGate {
    /// A gate with policy `mode`.
    pub fn new(mode: AckMode) -> Self {
        Self {
            mode,
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// A piece of output that may leave once `need` is met: appended to `out` at once if
    /// nothing is held before it and `need` is met, else held.
    pub fn submit(&mut self, need: Need, bytes: &[u8], water: &Watermark, out: &mut Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if self.held.is_empty() && water.allows(self.mode, need) {
            out.extend_from_slice(bytes);
        } else {
            self.held_bytes += bytes.len();
            self.held.push_back((need, bytes.to_vec()));
        }
    }

    /// Appends to `out` every held piece that may leave now, in order. Returns how many left.
    pub fn release(&mut self, water: &Watermark, out: &mut Vec<u8>) -> usize {
        let mut n = 0;
        while let Some((need, _)) = self.held.front() {
            if !water.allows(self.mode, *need) {
                break;
            }
            if let Some((_, bytes)) = self.held.pop_front() {
                self.held_bytes -= bytes.len();
                out.extend_from_slice(&bytes);
                n += 1;
            }
        }
        n
    }

    /// Pieces held.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sids(range: std::ops::Range<u64>) -> Vec<Sid> {
        range.map(|i| Sid::new(i).unwrap()).collect()
    }

    #[test]
    fn acks_leave_in_order_even_when_a_later_one_could_go_first() {
        let w = Watermark::default();
        let mut g = AckGate::new(AckMode::Replica);
        let mut out = Vec::new();
        g.submit(Need::Update(5), b"a5", &w, &mut out);
        g.submit(Need::Nothing, b"pong", &w, &mut out);
        g.submit(Need::Update(3), b"b3", &w, &mut out);
        assert!(out.is_empty());
        assert_eq!((g.held(), g.held_bytes()), (3, 8));
        w.publish(4, true);
        assert_eq!(
            g.release(&w, &mut out),
            0,
            "5 is not replicated: nothing passes it"
        );
        w.publish(5, true);
        assert_eq!(g.release(&w, &mut out), 3);
        assert_eq!(out, b"a5pongb3");
        assert_eq!(g.held_bytes(), 0);
    }

    #[test]
    fn strict_replica_holds_with_no_peer_and_replica_or_local_degrades() {
        let w = Watermark::default();
        w.publish(0, false);
        let mut strict = AckGate::new(AckMode::Replica);
        let mut lax = AckGate::new(AckMode::ReplicaOrLocal);
        let mut local = AckGate::new(AckMode::Local);
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        strict.submit(Need::Update(1), b"x", &w, &mut a);
        lax.submit(Need::Update(1), b"x", &w, &mut b);
        local.submit(Need::Update(1), b"x", &w, &mut c);
        assert_eq!((a.len(), b.len(), c.len()), (0, 1, 1));
        // A peer comes back: the degraded policy waits again; the strict one releases.
        w.publish(0, true);
        lax.submit(Need::Update(2), b"y", &w, &mut b);
        assert_eq!(b, b"x");
        w.publish(2, true);
        strict.release(&w, &mut a);
        lax.release(&w, &mut b);
        assert_eq!((a, b), (b"x".to_vec(), b"xy".to_vec()));
    }

    #[test]
    fn the_watermark_never_goes_back_and_numbers_are_contiguous() {
        let w = Watermark::default();
        assert_eq!(w.allocate(0), None);
        assert_eq!(w.allocate(3), Some((1, 3)));
        assert_eq!(w.allocate(2), Some((4, 5)));
        assert_eq!(w.allocated(), 5);
        w.publish(4, true);
        w.publish(2, true);
        assert_eq!(w.replicated(), 4);
    }

    #[test]
    fn the_sequencer_holds_batches_behind_a_gap() {
        let mut s = Sequencer::default();
        s.push(4, sids(40..42));
        assert_eq!(s.pop(), None);
        assert_eq!(s.waiting(), 1);
        s.push(1, sids(10..13));
        assert_eq!(s.pop(), Some(sids(10..13)));
        assert_eq!(s.pop(), Some(sids(40..42)));
        assert_eq!(s.pop(), None);
        // A replayed old batch is ignored.
        s.push(1, sids(10..13));
        assert_eq!(s.waiting(), 0);
    }
}

#[cfg(all(test, loom))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod loom_ack_gate {
    use loom::sync::Arc;
    use loom::thread;

    use super::*;

    /// Two workers number batches concurrently while the cluster thread sequences them: the
    /// numbers are disjoint and contiguous, and the sequencer gives them back in order.
    #[test]
    fn concurrent_allocation_is_contiguous_and_sequenced() {
        loom::model(|| {
            let w = Arc::new(Watermark::default());
            let handles: Vec<_> = [2u64, 3]
                .into_iter()
                .map(|n| {
                    let w = w.clone();
                    thread::spawn(move || (w.allocate(n).unwrap(), n))
                })
                .collect();
            let mut got: Vec<((u64, u64), u64)> =
                handles.into_iter().map(|h| h.join().unwrap()).collect();
            got.sort();
            assert_eq!(got[0].0 .0, 1);
            assert_eq!(got[1].0 .0, got[0].0 .1 + 1);
            let mut s = Sequencer::default();
            for ((first, _), n) in got.iter().rev() {
                s.push(
                    *first,
                    (0..*n).map(|i| Sid::new(first + i).unwrap()).collect(),
                );
            }
            let order: Vec<u64> = std::iter::from_fn(|| s.pop())
                .flatten()
                .map(|sid| sid.get())
                .collect();
            assert_eq!(order, (1..=5).collect::<Vec<_>>());
        });
    }

    /// The cluster thread publishes while a worker submits and releases: a piece never leaves
    /// before the watermark covering it was published, and pieces leave in order.
    #[test]
    fn release_never_overtakes_the_watermark_or_an_earlier_piece() {
        loom::model(|| {
            let w = Arc::new(Watermark::default());
            let publisher = {
                let w = w.clone();
                thread::spawn(move || {
                    w.publish(1, true);
                    w.publish(2, true);
                })
            };
            let mut g = AckGate::new(AckMode::Replica);
            let mut out = Vec::new();
            g.submit(Need::Update(2), b"2", &w, &mut out);
            let seen = w.replicated();
            g.submit(Need::Update(1), b"1", &w, &mut out);
            g.release(&w, &mut out);
            if !out.is_empty() {
                assert!(w.replicated() >= 2, "released before 2 was published");
                assert_eq!(out.first(), Some(&b'2'));
            }
            assert!(seen <= w.replicated());
            publisher.join().unwrap();
            g.release(&w, &mut out);
            assert_eq!(out, b"21");
        });
    }
}
