//! [`Repl`]: the cluster thread's shared end, what the other threads see of it. Workers hand it
//! the sids their pool sessions changed ([`Repl::submit`], numbered from one shared counter) and
//! read the replication watermark ([`Repl::replicated`]) and peer liveness that the `replica` ack
//! policy waits on; HTTP handlers read the published [`ClusterSnapshot`]. The cluster thread
//! alone publishes (`publish_progress`, `publish_snapshot`).
//!
//! Everything here is an atomic, a channel or a read-mostly lock: no caller blocks on the
//! cluster thread, and no lock is held across a call.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use presenced_core::Sid;
use presenced_frontends::backend::MemberView;

/// What the cluster thread publishes for the other threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// Election term.
    pub term: u64,
    /// Time master.
    pub time_master: u16,
    /// Data master.
    pub data_master: u16,
    /// `None` when ready, else why not.
    pub not_ready: Option<&'static str>,
    /// Every member, this node included.
    pub members: Vec<MemberView>,
}

/// The cluster thread's shared end.
#[derive(Debug)]
pub struct Repl {
    tx: Sender<(u64, Vec<Sid>)>,
    waker: Arc<Waker>,
    /// Next local update number.
    next_seq: AtomicU64,
    /// Highest local update number some peer acked.
    replicated: AtomicU64,
    /// Whether any peer is alive (the `replica` ack policy only waits then).
    peers_alive: AtomicBool,
    snapshot: RwLock<ClusterSnapshot>,
    workers: OnceLock<Vec<Arc<Waker>>>,
}

impl Repl {
    /// Numbers `sids` as the next local updates and hands them to the cluster thread. Returns
    /// the number of the last one (0 for none).
    pub fn submit(&self, sids: Vec<Sid>) -> u64 {
        if sids.is_empty() {
            return 0;
        }
        let n = sids.len() as u64;
        let first = self.next_seq.fetch_add(n, Ordering::AcqRel);
        if self.tx.send((first, sids)).is_ok() {
            let _ = self.waker.wake();
        }
        first + n - 1
    }

    /// Highest local update number acked by at least one peer.
    pub fn replicated(&self) -> u64 {
        self.replicated.load(Ordering::Acquire)
    }

    /// Whether any peer is alive.
    pub fn peers_alive(&self) -> bool {
        self.peers_alive.load(Ordering::Acquire)
    }

    /// The latest published cluster state.
    pub fn snapshot(&self) -> ClusterSnapshot {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Registers the workers' wakers (once, at start-up).
    pub(crate) fn set_workers(&self, w: Vec<Arc<Waker>>) {
        let _ = self.workers.set(w);
    }

    /// Wakes the cluster thread (shutdown).
    pub(crate) fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Cluster thread: publishes the highest local update number a peer acked and whether any
    /// peer is alive, and wakes every worker if the former moved (acks held under the `replica`
    /// policy may go out).
    pub(crate) fn publish_progress(&self, replicated: u64, peers_alive: bool) {
        let before = self.replicated.swap(replicated, Ordering::AcqRel);
        self.peers_alive.store(peers_alive, Ordering::Release);
        if before != replicated {
            for w in self.workers.get().into_iter().flatten() {
                let _ = w.wake();
            }
        }
    }

    /// Cluster thread: publishes the cluster state. Readers (every HTTP request) take the read
    /// lock; the write lock is taken only when something changed.
    pub(crate) fn publish_snapshot(&self, snap: ClusterSnapshot) {
        let changed = self.snapshot.read().map_or(true, |s| *s != snap);
        if changed {
            if let Ok(mut s) = self.snapshot.write() {
                *s = snap;
            }
        }
    }
}

/// The shared end of a cluster thread that will use `waker`.
pub(crate) fn repl_pair(waker: Arc<Waker>) -> (Repl, Receiver<(u64, Vec<Sid>)>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let repl = Repl {
        tx,
        waker,
        next_seq: AtomicU64::new(1),
        replicated: AtomicU64::new(0),
        peers_alive: AtomicBool::new(false),
        snapshot: RwLock::new(ClusterSnapshot::default()),
        workers: OnceLock::new(),
    };
    (repl, rx)
}
