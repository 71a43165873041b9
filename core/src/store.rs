//! The [`Store`]: every user's [`Record`], keyed by sid, shared by all worker threads.
//!
//! Backed by a flurry `HashMap` (lock-free reads, per-bin locks for writes). Callers never see the
//! map: they [`Store::pin`] once per batch of work and go through [`Pinned`], so the map can be
//! replaced without touching them.
//!
//! The store keeps a **bucketed digest** up to date with every write: each record hashes to a
//! 64-bit value, and bucket `b` holds the wrapping sum of the hashes of the records whose sid falls
//! in `b`. Sums are order-independent, so two stores that hold the same records have the same
//! buckets, however and in whatever order they got there. Each delta is computed under flurry's
//! bin lock from the exact value it replaces, so the sums stay exact under concurrent writers.
//!
//! Scans are **incremental**: a [`Cursor`] is a resumable position, and [`Pinned::scan`] visits at
//! most a given number of records per call, so no caller ever walks the whole store in one event
//! (a snapshot for a joining peer, a bucket asked for by anti-entropy, the end of a pool
//! snapshot). The flurry engine keeps, per digest bucket, an append-only index of the sids it
//! holds; records are never deleted, so a position in that index stays valid forever, and a sid
//! inserted after a scan started is visited if it lands after the cursor (callers that need it
//! otherwise get it from the replication stream, which carries every later change).
//!
//! Architecture Invariant: the store never decides anything from `len()` or from iteration while
//! others write; those are reports, not inputs to merges.
//! Architecture Invariant: the only mutation is a join ([`Record::apply`] or [`Record::merge`]);
//! nothing is ever deleted, so every write commutes with every other.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::hlc::Stamp;
use crate::model::{Record, Sid, Status, Update};
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// Number of digest buckets (a power of two).
pub const DIGEST_BUCKETS: usize = 256;

/// The concurrent presence map.
pub struct Store {
    map: flurry::HashMap<u64, Record, SidHasher>,
    /// INVARIANT: `buckets[b]` is the wrapping sum of `record_hash` over the records of bucket `b`.
    buckets: Box<[AtomicU64]>,
    /// INVARIANT: `index[b]` lists every sid of bucket `b` in the map exactly once, in insertion
    /// order; entries are only ever appended (records are never deleted).
    index: Box<[Mutex<Vec<u64>>]>,
    /// Index entries visited by scans since the store was made (a report, for tests and metrics).
    scanned: AtomicU64,
}

/// A resumable position in a scan of the [`Store`] (all of it, or one digest bucket).
///
/// A cursor stays valid across events, guards and concurrent writers: it names a position in an
/// append-only index, so resuming it never visits a sid twice and never skips one that existed
/// when the scan started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// INVARIANT: `bucket <= end <= DIGEST_BUCKETS`.
    bucket: usize,
    end: usize,
    /// Position in `index[bucket]`.
    pos: usize,
}

impl Cursor {
    /// A scan over every record.
    pub fn all() -> Self {
        Self {
            bucket: 0,
            end: DIGEST_BUCKETS,
            pos: 0,
        }
    }

    /// A scan over the records of digest bucket `bucket` (an empty scan if it is out of range).
    pub fn bucket(bucket: u16) -> Self {
        let b = usize::from(bucket).min(DIGEST_BUCKETS);
        Self {
            bucket: b,
            end: (b + 1).min(DIGEST_BUCKETS),
            pos: 0,
        }
    }

    /// Whether the scan has visited everything it covers.
    pub fn is_done(&self) -> bool {
        self.bucket >= self.end
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// A fixed, process-independent hasher: digests are compared between nodes.
///
/// foldhash's quality variant with a fixed seed gives the same value on every node that runs
/// the same build, which is all a digest comparison needs, at a fraction of SipHash's cost (it
/// runs twice per update).
fn fixed_hasher() -> impl Hasher {
    foldhash::quality::FixedState::with_seed(0x7072_6573_656e_6365).build_hasher()
}

/// The digest bucket of a sid.
pub fn bucket_of(sid: Sid) -> usize {
    // Fibonacci hashing of the id: consecutive ids spread over all buckets.
    (sid.get().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % DIGEST_BUCKETS
}

/// The digest contribution of one record: what a snapshot's digest at its cut sums.
pub fn record_digest(sid: Sid, r: &Record) -> u64 {
    record_hash(sid.get(), r)
}

fn record_hash(sid: u64, r: &Record) -> u64 {
    let mut h = fixed_hasher();
    sid.hash(&mut h);
    r.hash(&mut h);
    h.finish()
}

impl Store {
    /// An empty store sized for about `capacity` users.
    pub fn with_capacity(capacity: usize) -> Self {
        let buckets = (0..DIGEST_BUCKETS).map(|_| AtomicU64::new(0)).collect();
        let map = flurry::HashMap::with_capacity_and_hasher(capacity, SidHasher);
        let index = (0..DIGEST_BUCKETS)
            .map(|_| Mutex::new(Vec::with_capacity(capacity / DIGEST_BUCKETS)))
            .collect();
        Self {
            map,
            buckets,
            index,
            scanned: AtomicU64::new(0),
        }
    }

    /// Index entries visited by [`Pinned::scan`] so far (a report: tests use it to check that
    /// work per event is bounded).
    pub fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    fn index_of(&self, bucket: usize) -> Option<MutexGuard<'_, Vec<u64>>> {
        // A poisoned lock means a writer panicked between two pushes; the vector is still
        // valid (push either happened or not), so the index can be used as it is.
        self.index
            .get(bucket)
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Pins the store for a batch of operations. Do not hold a [`Pinned`] across a blocking call
    /// (a `poll`, a channel receive): it keeps memory from being reclaimed.
    pub fn pin(&self) -> Pinned<'_> {
        Pinned {
            store: self,
            guard: self.map.guard(),
        }
    }

    /// Number of users (a report: may be stale while others write).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store holds no user.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The per-bucket digests.
    pub fn bucket_digests(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Acquire))
            .collect()
    }

    /// A 128-bit digest of the whole state: equal on two stores exactly when (up to hash
    /// collisions) they hold the same records.
    pub fn digest(&self) -> u128 {
        let buckets = self.bucket_digests();
        let lane = |salt: u8| {
            let mut h = fixed_hasher();
            salt.hash(&mut h);
            buckets.hash(&mut h);
            h.finish()
        };
        (u128::from(lane(0)) << 64) | u128::from(lane(1))
    }

    fn add_to_bucket(&self, sid: u64, delta: u64) {
        if let Some(sid) = Sid::new(sid) {
            if let Some(b) = self.buckets.get(bucket_of(sid)) {
                b.fetch_add(delta, Ordering::AcqRel);
            }
        }
    }
}

/// A pinned view of the [`Store`]: every read and write goes through one.
pub struct Pinned<'s> {
    store: &'s Store,
    guard: flurry::Guard<'s>,
}

impl std::fmt::Debug for Pinned<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

impl Pinned<'_> {
    /// Applies a local update stamped `stamp`. Returns whether anything changed.
    pub fn apply(&self, sid: Sid, stamp: Stamp, update: &Update) -> bool {
        self.upsert(sid, |old| match old {
            None => Some(Record::from_update(stamp, update)),
            Some(old) => {
                let mut r = old.clone();
                r.apply(stamp, update).then_some(r)
            }
        })
    }

    /// Joins a record received from another node. Returns whether anything changed.
    pub fn merge(&self, sid: Sid, incoming: &Record) -> bool {
        self.upsert(sid, |old| match old {
            None => Some(incoming.clone()),
            Some(old) => {
                let mut r = old.clone();
                r.merge(incoming).then_some(r)
            }
        })
    }

    /// Inserts or replaces the record of `sid` with `f(current)`; `f` returns `None` to leave the
    /// record as it is. Keeps the digest exact. Returns whether a record was written.
    fn upsert(&self, sid: Sid, f: impl Fn(Option<&Record>) -> Option<Record>) -> bool {
        let map = &self.store.map;
        let key = sid.get();
        loop {
            if map.get(&key, &self.guard).is_none() {
                let Some(new) = f(None) else { return false };
                let h = record_hash(key, &new);
                match map.try_insert(key, new, &self.guard) {
                    Ok(_) => {
                        self.store.add_to_bucket(key, h);
                        if let Some(mut ix) = self.store.index_of(bucket_of(sid)) {
                            ix.push(key);
                        }
                        return true;
                    }
                    // Lost a race with another writer: retry as an update.
                    Err(_) => continue,
                }
            }
            let mut written = false;
            let mut delta = 0u64;
            let present = map.compute_if_present(
                &key,
                |_, old| {
                    // Runs once, under the bin lock, on the exact value it replaces.
                    match f(Some(old)) {
                        Some(new) => {
                            delta = record_hash(key, &new).wrapping_sub(record_hash(key, old));
                            written = true;
                            Some(new)
                        }
                        None => Some(old.clone()),
                    }
                },
                &self.guard,
            );
            if present.is_none() {
                // Records are never removed, so this cannot happen; retrying is still correct.
                continue;
            }
            if written {
                self.store.add_to_bucket(key, delta);
            }
            return written;
        }
    }

    /// The public status of `sid` (unknown ids get [`Status::unknown`]).
    pub fn status(&self, sid: Sid) -> Status {
        match self.store.map.get(&sid.get(), &self.guard) {
            Some(r) => r.status(sid),
            None => Status::unknown(sid),
        }
    }

    /// Statuses of many ids, in order, appended to `out`.
    pub fn statuses(&self, sids: &[Sid], out: &mut Vec<Status>) {
        out.extend(sids.iter().map(|s| self.status(*s)));
    }

    /// A copy of the record of `sid`.
    pub fn record(&self, sid: Sid) -> Option<Record> {
        self.store.map.get(&sid.get(), &self.guard).cloned()
    }

    /// Resumes the scan at `cursor`: calls `f` for at most `max` records (at least one if any is
    /// left) until it returns `false`, advances `cursor` past every record it was called for, and
    /// returns how many index entries it visited. Weakly consistent: each record is read as it is
    /// when visited.
    pub fn scan(
        &self,
        cursor: &mut Cursor,
        max: usize,
        mut f: impl FnMut(Sid, &Record) -> bool,
    ) -> usize {
        /// Sids copied per lock of a bucket's index, so writers are never held up for long.
        const STEP: usize = 256;
        let max = max.max(1);
        let mut visited = 0;
        let mut batch = Vec::new();
        'scan: while visited < max && !cursor.is_done() {
            batch.clear();
            if let Some(ix) = self.store.index_of(cursor.bucket) {
                let end = ix.len().min(cursor.pos + (max - visited).min(STEP));
                batch.extend_from_slice(ix.get(cursor.pos..end).unwrap_or_default());
            }
            if batch.is_empty() {
                cursor.bucket += 1;
                cursor.pos = 0;
                continue;
            }
            for key in &batch {
                cursor.pos += 1;
                visited += 1;
                if let (Some(sid), Some(r)) = (Sid::new(*key), self.store.map.get(key, &self.guard))
                {
                    if !f(sid, r) {
                        break 'scan;
                    }
                }
            }
        }
        self.store
            .scanned
            .fetch_add(visited as u64, Ordering::Relaxed);
        visited
    }

    /// Calls `f` for every record (a weakly consistent snapshot: writes racing with the iteration
    /// may or may not be seen). Walks the whole store in one call: for tests and offline tools
    /// only; event handlers use [`Pinned::scan`].
    pub fn for_each(&self, mut f: impl FnMut(Sid, &Record)) {
        let mut cursor = Cursor::all();
        while !cursor.is_done() {
            self.scan(&mut cursor, usize::MAX, |sid, r| {
                f(sid, r);
                true
            });
        }
    }
}

/// The hasher flurry uses for sids: a multiply-shift mix.
///
/// Sids are chosen by IM systems, not by the network peers that query them, and only pool peers
/// (authenticated by token where configured) can create keys, so a keyed hash buys nothing here
/// and costs a SipHash per lookup.
#[derive(Clone, Copy, Debug, Default)]
pub struct SidHasher;

impl BuildHasher for SidHasher {
    type Hasher = SidHash;
    fn build_hasher(&self) -> SidHash {
        SidHash(0)
    }
}

/// See [`SidHasher`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SidHash(u64);

impl Hasher for SidHash {
    fn finish(&self) -> u64 {
        // Murmur3's 64-bit finaliser.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
