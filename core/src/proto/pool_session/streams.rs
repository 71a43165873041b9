//! [`Streams`]: what a node remembers about each pool event stream across connections, shared by
//! every pool connection of every worker.
//!
//! Two things live here, keyed by `(pool, stream)`:
//!
//! - the high-water mark of applied sequence numbers, so that events re-sent after a reconnect
//!   are recognised and skipped (it only ever rises);
//! - the users listed so far by a snapshot in progress, so that a snapshot survives a reconnect
//!   and its end can log out everyone it did not list.
//!
//! It does not decide anything about the protocol: the session in the parent module does, and
//! calls these methods. The high-water marks are a flurry map (read on every `EVENTS` frame);
//! snapshots are rare, so they sit behind one mutex.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Users listed so far by each snapshot in progress, by `(pool, stream)`.
type Snapshots = HashMap<(u32, u64), HashSet<u64>>;

/// The per-(pool, stream) state on this node, shared by all connections: the high-water mark of
/// applied sequence numbers (so that events re-sent after a reconnect are recognised and
/// skipped) and any snapshot in progress (so that a snapshot survives a reconnect).
#[derive(Debug, Default)]
pub struct Streams {
    map: flurry::HashMap<(u32, u64), u64>,
    /// Users listed so far by each snapshot in progress. Snapshots are rare, so a mutex is fine.
    snapshots: Mutex<Snapshots>,
}

impl Streams {
    /// Highest applied sequence number of a stream (0: none).
    pub fn applied(&self, pool: u32, stream: u64) -> u64 {
        self.map.pin().get(&(pool, stream)).copied().unwrap_or(0)
    }

    /// Raises the high-water mark of a stream to `seq` (never lowers it).
    pub fn advance(&self, pool: u32, stream: u64, seq: u64) {
        let m = self.map.pin();
        let key = (pool, stream);
        loop {
            if m.compute_if_present(&key, |_, old| Some((*old).max(seq)))
                .is_some()
            {
                return;
            }
            if m.try_insert(key, seq).is_ok() {
                return;
            }
        }
    }

    /// Whether a stream has a snapshot in progress.
    pub(super) fn snapshot_open(&self, pool: u32, stream: u64) -> bool {
        self.snapshots().contains_key(&(pool, stream))
    }

    /// Starts a snapshot of a stream, forgetting any one in progress.
    pub(super) fn begin_snapshot(&self, pool: u32, stream: u64) {
        self.snapshots().insert((pool, stream), HashSet::new());
    }

    /// Ends a stream's snapshot: the users it listed, `None` if none was in progress.
    pub(super) fn end_snapshot(&self, pool: u32, stream: u64) -> Option<HashSet<u64>> {
        self.snapshots().remove(&(pool, stream))
    }

    /// Notes that the snapshot in progress on a stream (if any) lists `sid`. Returns `false`,
    /// noting nothing, if that would make it list more than `max` distinct users.
    pub(super) fn list_in_snapshot(&self, pool: u32, stream: u64, sid: u64, max: usize) -> bool {
        if let Some(listed) = self.snapshots().get_mut(&(pool, stream)) {
            if listed.len() >= max && !listed.contains(&sid) {
                return false;
            }
            listed.insert(sid);
        }
        true
    }

    fn snapshots(&self) -> MutexGuard<'_, Snapshots> {
        // A poisoned lock only means another connection's thread panicked mid-insert; the set is
        // still a valid set.
        self.snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
