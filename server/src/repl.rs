//! [`Repl`]: the cluster thread's shared end, what the other threads see of it. Workers hand it
//! the sids their pool sessions changed ([`Repl::submit`], numbered by the core
//! [`Watermark`]) and give their acks to an [`presenced_core::ack_gate::AckGate`] that reads the
//! same watermark ([`Repl::watermark`]); HTTP handlers read the published [`ClusterSnapshot`].
//! The cluster thread alone publishes (`publish_progress`, `publish_snapshot`).
//!
//! Everything here is an atomic, a channel or a read-mostly lock: no caller blocks on the
//! cluster thread, and no lock is held across a call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crossbeam_channel::{Receiver, Sender};
use mio::Waker;
use presenced_core::ack_gate::Watermark;
use presenced_core::cluster::node::MemberError;
use presenced_core::Sid;
use presenced_frontends::backend::MemberView;

/// What the cluster thread publishes for the other threads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterSnapshot {
    /// Election term.
    pub term: u64,
    /// Time master (`None` until every peer was heard from or `down-after-ms` passed).
    pub time_master: Option<u16>,
    /// Data master (`None` as long as the time master is).
    pub data_master: Option<u16>,
    /// `None` when ready, else why not.
    pub not_ready: Option<&'static str>,
    /// Every member, this node included.
    pub members: Vec<MemberView>,
}

/// A membership change asked for over HTTP (`DELETE`/`POST /v1/cluster/members/{id}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// Remove node `id` from the cluster.
    Remove(u16),
    /// Re-admit node `id` after a removal.
    Readmit(u16),
}

/// A [`MemberChange`] on its way to the cluster thread, with where the answer goes.
#[derive(Debug)]
pub(crate) struct Command {
    pub(crate) change: MemberChange,
    pub(crate) reply: Sender<Result<(), MemberError>>,
}

/// Why a membership change could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The node refused it (this node's own id, an unknown id).
    #[error(transparent)]
    Refused(#[from] MemberError),
    /// The cluster thread did not answer in time (shutting down, or stuck).
    #[error("the cluster thread did not answer")]
    NoAnswer,
}

/// The cluster thread's end of the workers' numbered batches of changed sids.
pub(crate) type LocalBatches = Receiver<(u64, Vec<Sid>)>;

/// The cluster thread's shared end.
#[derive(Debug)]
pub struct Repl {
    tx: Sender<(u64, Vec<Sid>)>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    /// Local update numbers and the replicated watermark.
    watermark: Watermark,
    /// Whether the node is ready (a copy of `snapshot.not_ready.is_none()` that workers read
    /// on every pool call without the lock).
    ready: AtomicBool,
    snapshot: RwLock<ClusterSnapshot>,
    workers: OnceLock<Vec<Arc<Waker>>>,
}

impl Repl {
    /// Numbers `sids` as the next local updates and hands them to the cluster thread. Returns
    /// the number of the last one (0 for none).
    pub fn submit(&self, sids: Vec<Sid>) -> u64 {
        let Some((first, last)) = self.watermark.allocate(sids.len() as u64) else {
            return 0;
        };
        if self.tx.send((first, sids)).is_ok() {
            let _ = self.waker.wake();
        }
        last
    }

    /// Whether the node is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Asks the cluster thread to make a membership change and waits (at most 2 s) for it.
    pub fn change_members(&self, change: MemberChange) -> Result<(), ChangeError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.commands.send(Command { change, reply }).is_err() {
            return Err(ChangeError::NoAnswer);
        }
        let _ = self.waker.wake();
        match answer.recv_timeout(std::time::Duration::from_secs(2)) {
            Ok(r) => r.map_err(ChangeError::Refused),
            Err(_) => Err(ChangeError::NoAnswer),
        }
    }

    /// Local update numbers and what peers have (the ack gates read it).
    pub fn watermark(&self) -> &Watermark {
        &self.watermark
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
        let before = self.watermark.replicated();
        self.watermark.publish(replicated, peers_alive);
        if before != self.watermark.replicated() {
            for w in self.workers.get().into_iter().flatten() {
                let _ = w.wake();
            }
        }
    }

    /// Cluster thread: publishes the cluster state. Readers (every HTTP request) take the read
    /// lock; the write lock is taken only when something changed.
    pub(crate) fn publish_snapshot(&self, snap: ClusterSnapshot) {
        self.ready
            .store(snap.not_ready.is_none(), Ordering::Release);
        let changed = self.snapshot.read().map_or(true, |s| *s != snap);
        if changed {
            if let Ok(mut s) = self.snapshot.write() {
                *s = snap;
            }
        }
    }
}

/// The shared end of a cluster thread that will use `waker`.
pub(crate) fn repl_pair(waker: Arc<Waker>) -> (Repl, LocalBatches, Receiver<Command>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let (commands, commands_rx) = crossbeam_channel::unbounded();
    let repl = Repl {
        tx,
        commands,
        waker,
        watermark: Watermark::default(),
        ready: AtomicBool::new(false),
        // Not ready until the cluster thread published its first view.
        snapshot: RwLock::new(ClusterSnapshot {
            not_ready: Some("starting"),
            ..ClusterSnapshot::default()
        }),
        workers: OnceLock::new(),
    };
    (repl, rx, commands_rx)
}
