//! The [`Store`]: every user's [`Record`], keyed by sid, shared by all worker threads.
//!
//! Two engines sit behind one API, chosen by [`Engine`] (`<store engine>` in the configuration):
//!
//! - [`Engine::Table`] (the default, `table`): records laid out for the hardware: atomic words in
//!   non-moving per-shard arenas (56 bytes for the common record, 128 for a wide one), found
//!   through an open-addressing index of 8-byte slots; readers never block (a per-record seqlock
//!   over atomic words), writers take a per-shard lock. See `store::table`.
//! - [`Engine::Flurry`] (`flurry`): the reference engine, a flurry `HashMap` of boxed records.
//!   It is the oracle of the differential tests.
//!
//! Callers never see either map: they [`Store::pin`] once per batch of work and go through
//! [`Pinned`].
//!
//! The store keeps a **bucketed digest** up to date with every write: each record hashes to a
//! 64-bit value, and bucket `b` holds the wrapping sum of the hashes of the records whose sid falls
//! in `b`. Sums are order-independent, so two stores that hold the same records have the same
//! buckets, however and in whatever order they got there, whatever their engines. Each delta is
//! computed under the writer's lock from the exact value it replaces, so the sums stay exact under
//! concurrent writers.
//!
//! Scans are **incremental**: a [`Cursor`] is a resumable position, and [`Pinned::scan`] visits at
//! most a given number of records per call, so no caller ever walks the whole store in one event
//! (a snapshot for a joining peer, a bucket asked for by anti-entropy, the end of a pool
//! snapshot). Each engine keeps positions that stay valid forever (records are never deleted): a
//! sid inserted after a scan started is visited if it lands after the cursor (callers that need it
//! otherwise get it from the replication stream, which carries every later change).
//!
//! Architecture Invariant: the store never decides anything from `len()` or from iteration while
//! others write; those are reports, not inputs to merges.
//! Architecture Invariant: the only mutation is a join ([`Record::apply`] or [`Record::merge`]);
//! nothing is ever deleted, so every write commutes with every other.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::hlc::Stamp;
use crate::model::{Record, Sid, Status, Update};

mod flurry;
mod table;

pub use flurry::{SidHash, SidHasher};

/// Number of digest buckets (a power of two).
pub const DIGEST_BUCKETS: usize = 256;

/// Which engine holds the records (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Records inline in per-shard arenas behind an open-addressing index (`table`).
    #[default]
    Table,
    /// The reference engine: a flurry map of boxed records (`flurry`).
    Flurry,
}

impl Engine {
    /// The name used in the configuration and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Flurry => "flurry",
        }
    }

    /// The engine named `name` (as printed by [`Engine::name`]).
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Table, Self::Flurry]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

/// What the store holds in memory: a report for `/metrics` and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Memory {
    /// Records held.
    pub records: u64,
    /// Bytes the engine holds for them (tables, arenas, boxed records), extension data excluded.
    /// An estimate for the flurry engine (its node and value sizes times the record count).
    pub bytes: u64,
    /// Slots of the index (the table engine; the flurry engine reports its record count).
    pub slots: u64,
    /// Slots rehashed by the largest single growth of an index: what a shard's writers waited
    /// for at most. Not reported (0) by the flurry engine, whose resizes run inside the inserts
    /// that trigger them; `presenced bench store` measures the longest single write of both.
    pub largest_growth: u64,
}

impl Memory {
    /// Bytes per record (0 for an empty store).
    pub fn bytes_per_record(&self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.bytes as f64 / self.records as f64
        }
    }

    /// Records per index slot.
    pub fn load(&self) -> f64 {
        if self.slots == 0 {
            0.0
        } else {
            self.records as f64 / self.slots as f64
        }
    }
}

/// The concurrent presence map.
pub struct Store {
    inner: Inner,
}

enum Inner {
    Table(table::TableStore),
    Flurry(Box<flurry::FlurryStore>),
}

/// A resumable position in a scan of the [`Store`] (all of it, or one digest bucket).
///
/// A cursor stays valid across events, guards and concurrent writers: it names a position in
/// append-only storage, so resuming it never visits a sid twice and never skips one that existed
/// when the scan started. A cursor belongs to the store it was used on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// INVARIANT: `bucket <= end <= DIGEST_BUCKETS`.
    bucket: usize,
    end: usize,
    /// The engine's position within `bucket` (see each engine's `scan`).
    pos: usize,
    /// The table engine's phase within `bucket` (0: wide records, 1: compact records).
    phase: u8,
    /// The table engine's count of wide records when phase 0 ended.
    mark: usize,
}

impl Cursor {
    /// A scan over every record.
    pub fn all() -> Self {
        Self {
            bucket: 0,
            end: DIGEST_BUCKETS,
            pos: 0,
            phase: 0,
            mark: 0,
        }
    }

    /// A scan over the records of digest bucket `bucket` (an empty scan if it is out of range).
    pub fn bucket(bucket: u16) -> Self {
        let b = usize::from(bucket).min(DIGEST_BUCKETS);
        Self {
            bucket: b,
            end: (b + 1).min(DIGEST_BUCKETS),
            pos: 0,
            phase: 0,
            mark: 0,
        }
    }

    /// Whether the scan has visited everything it covers.
    pub fn is_done(&self) -> bool {
        self.bucket >= self.end
    }

    /// Moves on to the start of the next bucket.
    fn next_bucket(&mut self) {
        self.bucket += 1;
        self.pos = 0;
        self.phase = 0;
        self.mark = 0;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("engine", &self.engine())
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

/// Murmur3's 64-bit finaliser: the sid mix of both engines' hash tables.
fn murmur_mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
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
    /// An empty store of the default engine sized for about `capacity` users.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::new(Engine::default(), capacity)
    }

    /// An empty store of `engine` sized for about `capacity` users.
    pub fn new(engine: Engine, capacity: usize) -> Self {
        let inner = match engine {
            Engine::Table => Inner::Table(table::TableStore::with_capacity(capacity)),
            Engine::Flurry => Inner::Flurry(Box::new(flurry::FlurryStore::with_capacity(capacity))),
        };
        Self { inner }
    }

    /// The engine holding the records.
    pub fn engine(&self) -> Engine {
        match &self.inner {
            Inner::Table(_) => Engine::Table,
            Inner::Flurry(_) => Engine::Flurry,
        }
    }

    /// Index entries visited by [`Pinned::scan`] so far (a report: tests use it to check that
    /// work per event is bounded).
    pub fn scanned(&self) -> u64 {
        match &self.inner {
            Inner::Table(t) => t.scanned(),
            Inner::Flurry(f) => f.scanned(),
        }
    }

    /// Pins the store for a batch of operations. Do not hold a [`Pinned`] across a blocking call
    /// (a `poll`, a channel receive): it keeps memory from being reclaimed.
    pub fn pin(&self) -> Pinned<'_> {
        Pinned {
            inner: match &self.inner {
                Inner::Table(t) => PinnedInner::Table(t.pin()),
                Inner::Flurry(f) => PinnedInner::Flurry(f.pin()),
            },
        }
    }

    /// Number of users (a report: may be stale while others write).
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Table(t) => t.len(),
            Inner::Flurry(f) => f.len(),
        }
    }

    /// Whether the store holds no user.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the store holds in memory (a report).
    pub fn memory(&self) -> Memory {
        match &self.inner {
            Inner::Table(t) => t.memory(),
            Inner::Flurry(f) => f.memory(),
        }
    }

    /// The per-bucket digests.
    pub fn bucket_digests(&self) -> Vec<u64> {
        match &self.inner {
            Inner::Table(t) => t.bucket_digests(),
            Inner::Flurry(f) => f.bucket_digests(),
        }
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
}

/// A pinned view of the [`Store`]: every read and write goes through one.
pub struct Pinned<'s> {
    inner: PinnedInner<'s>,
}

enum PinnedInner<'s> {
    Table(table::TablePinned<'s>),
    Flurry(flurry::FlurryPinned<'s>),
}

impl std::fmt::Debug for Pinned<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned").finish_non_exhaustive()
    }
}

/// Calls the same method on whichever engine the view pins.
macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match &$self.inner {
            PinnedInner::Table($p) => $e,
            PinnedInner::Flurry($p) => $e,
        }
    };
}

impl Pinned<'_> {
    /// Applies a local update stamped `stamp`. Returns whether anything changed.
    pub fn apply(&self, sid: Sid, stamp: Stamp, update: &Update) -> bool {
        match &self.inner {
            PinnedInner::Table(p) => p.upsert(
                sid,
                || Record::from_update(stamp, update),
                |r| r.apply(stamp, update),
            ),
            PinnedInner::Flurry(p) => p.upsert(sid, |old| match old {
                None => Some(Record::from_update(stamp, update)),
                Some(old) => {
                    let mut r = old.clone();
                    r.apply(stamp, update).then_some(r)
                }
            }),
        }
    }

    /// Joins a record received from another node. Returns whether anything changed.
    pub fn merge(&self, sid: Sid, incoming: &Record) -> bool {
        match &self.inner {
            PinnedInner::Table(p) => p.upsert(sid, || incoming.clone(), |r| r.merge(incoming)),
            PinnedInner::Flurry(p) => p.upsert(sid, |old| match old {
                None => Some(incoming.clone()),
                Some(old) => {
                    let mut r = old.clone();
                    r.merge(incoming).then_some(r)
                }
            }),
        }
    }

    /// The public status of `sid` (unknown ids get [`Status::unknown`]).
    pub fn status(&self, sid: Sid) -> Status {
        dispatch!(self, p => p.status(sid))
    }

    /// Ids worth passing to [`Pinned::prefetch`] at once.
    pub const PREFETCH: usize = 16;

    /// Starts loading what looking up each of `sids` (up to [`Pinned::PREFETCH`]) will read, so
    /// that resolving them one by one afterwards (a status, an apply, a merge, a record) overlaps
    /// their cache misses instead of paying them in turn. A hint: it changes no result.
    pub fn prefetch(&self, sids: &[Sid]) {
        dispatch!(self, p => p.prefetch(sids))
    }

    /// Statuses of many ids, in order, appended to `out`.
    pub fn statuses(&self, sids: &[Sid], out: &mut Vec<Status>) {
        dispatch!(self, p => p.statuses(sids, out))
    }

    /// A copy of the record of `sid`.
    pub fn record(&self, sid: Sid) -> Option<Record> {
        dispatch!(self, p => p.record(sid))
    }

    /// Resumes the scan at `cursor`: calls `f` for at most `max` records (at least one if any is
    /// left) until it returns `false`, advances `cursor` past every record it was called for, and
    /// returns how many entries it visited. Weakly consistent: each record is read as it is when
    /// visited.
    pub fn scan(
        &self,
        cursor: &mut Cursor,
        max: usize,
        f: impl FnMut(Sid, &Record) -> bool,
    ) -> usize {
        dispatch!(self, p => p.scan(cursor, max, f))
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

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
