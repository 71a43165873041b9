//! The reference engine: a flurry `HashMap` of boxed records (lock-free reads, per-bin locks for
//! writes), kept as the oracle of the differential tests and selectable by
//! `<store engine="flurry"/>`.
//!
//! Scans use, per digest bucket, an append-only index of the sids the map holds; records are never
//! deleted, so a position in that index ([`Cursor`]'s `pos`) stays valid forever.

use std::hash::{BuildHasher, Hasher};

use super::{bucket_of, record_hash, Cursor, Memory, DIGEST_BUCKETS};
use crate::model::{Record, Sid, Status};
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};

/// The flurry engine.
pub(super) struct FlurryStore {
    map: flurry::HashMap<u64, Record, SidHasher>,
    /// INVARIANT: `buckets[b]` is the wrapping sum of `record_hash` over the records of bucket `b`.
    buckets: Box<[AtomicU64]>,
    /// INVARIANT: `index[b]` lists every sid of bucket `b` in the map exactly once, in insertion
    /// order; entries are only ever appended (records are never deleted).
    index: Box<[Mutex<Vec<u64>>]>,
    /// Index entries visited by scans since the store was made (a report, for tests and metrics).
    scanned: AtomicU64,
}

impl FlurryStore {
    pub(super) fn with_capacity(capacity: usize) -> Self {
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
    pub(super) fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    fn index_of(&self, bucket: usize) -> Option<MutexGuard<'_, Vec<u64>>> {
        // A poisoned lock means a writer panicked between two pushes; the vector is still
        // valid (push either happened or not), so the index can be used as it is.
        self.index
            .get(bucket)
            .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    pub(super) fn pin(&self) -> FlurryPinned<'_> {
        FlurryPinned {
            store: self,
            guard: self.map.guard(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn memory(&self) -> Memory {
        // A flurry node (key, value, hash, next, lock) per record, a boxed value, and a table slot
        // at flurry's load factor; allocator rounding is not counted.
        const PER_RECORD: usize = 64 + size_of::<Record>() + 16;
        let records = self.map.len() as u64;
        Memory {
            records,
            bytes: records * PER_RECORD as u64,
            slots: records,
            largest_growth: 0,
        }
    }

    pub(super) fn bucket_digests(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Acquire))
            .collect()
    }

    fn add_to_bucket(&self, sid: u64, delta: u64) {
        if let Some(sid) = Sid::new(sid) {
            if let Some(b) = self.buckets.get(bucket_of(sid)) {
                b.fetch_add(delta, Ordering::AcqRel);
            }
        }
    }
}

/// A pinned view of the flurry engine.
pub(super) struct FlurryPinned<'s> {
    store: &'s FlurryStore,
    guard: flurry::Guard<'s>,
}

impl FlurryPinned<'_> {
    /// Inserts or replaces the record of `sid` with `f(current)`; `f` returns `None` to leave the
    /// record as it is. Keeps the digest exact. Returns whether a record was written.
    pub(super) fn upsert(&self, sid: Sid, f: impl Fn(Option<&Record>) -> Option<Record>) -> bool {
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
    pub(super) fn status(&self, sid: Sid) -> Status {
        match self.store.map.get(&sid.get(), &self.guard) {
            Some(r) => r.status(sid),
            None => Status::unknown(sid),
        }
    }

    /// Statuses of many ids, in order, appended to `out`.
    /// Nothing to do: flurry's layout gives no address to touch before the lookup itself.
    pub(super) fn prefetch(&self, _sids: &[Sid]) {}

    pub(super) fn statuses(&self, sids: &[Sid], out: &mut Vec<Status>) {
        out.extend(sids.iter().map(|s| self.status(*s)));
    }

    /// A copy of the record of `sid`.
    pub(super) fn record(&self, sid: Sid) -> Option<Record> {
        self.store.map.get(&sid.get(), &self.guard).cloned()
    }

    /// Resumes the scan at `cursor`: calls `f` for at most `max` records (at least one if any is
    /// left) until it returns `false`, advances `cursor` past every record it was called for, and
    /// returns how many index entries it visited. Weakly consistent: each record is read as it is
    /// when visited.
    pub(super) fn scan(
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
                cursor.next_bucket();
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
        super::murmur_mix(self.0)
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
