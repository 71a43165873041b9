//! The table engine: records laid out for the hardware.
//!
//! ```text
//!  sid ─► shard = bucket_of(sid) (one per digest bucket)
//!           │
//!           ├─ index: open addressing, 8-byte slots [h32 | location], linear probing
//!           │     location ─► compact arena (56-byte records, see `words`)
//!           │              └► wide arena    (128-byte records; ext values in the ext slab)
//!           └─ writer lock, digest sum, published lengths
//! ```
//!
//! - **Reads never block on writers.** A reader probes the index and copies the record's atomic
//!   words under its seqlock ([`words::read`]); nothing is locked except the ext slab's read
//!   lock for a record that has ext. Readers pin a *generation* (every shard's index and segment
//!   lists) once per batch.
//! - **Writes** take the shard's lock, join in place (no allocation unless a record needs a new
//!   slot, grows out of the compact layout or gets a new ext), keep the shard's digest exact.
//! - **Records never move**: arenas grow by new segments (see `arena`). A compact record that
//!   outgrows its layout is copied once to the wide arena and forwards to it.
//! - **The index grows** by half when it passes 7/8 full: the writer rehashes the shard's slots
//!   (8 bytes each; 40 k records at 10 M users take well under a millisecond), publishes a new generation
//!   and retires the old slots. Readers that miss in retired slots look again in the new ones;
//!   only the shard's writers wait for the growth.
//!
//! Architecture Invariant: a location in the index, once written, names the same record forever
//! (or, for a moved compact record, the wide record its forward names).

use std::sync::Arc;

mod arena;
mod read;
mod words;
mod write;

pub(super) use read::TablePinned;

use arena::Segment;

use super::{Memory, DIGEST_BUCKETS};
use crate::model::Ext;
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering, RwLock};

/// The index grows past `records / slots > LOAD_NUM / LOAD_DEN`...
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;
/// ... by `GROWTH_NUM / GROWTH_DEN`, so its load stays between 7/12 and 7/8 (8 bytes a slot: 9 to
/// 14 bytes a record).
const GROWTH_NUM: usize = 3;
const GROWTH_DEN: usize = 2;
const MIN_SLOTS: usize = 16;
/// Ids resolved together by [`TablePinned::statuses`], their loads overlapped.
const BATCH: usize = 16;
/// The largest record index a location can name (31 bits, minus the +1 that keeps 0 empty).
const MAX_INDEX: usize = (1 << 31) - 2;

/// A shard's index.
struct Slots {
    /// `h32 << 32 | location code`, 0 for an empty slot.
    words: Box<[AtomicU64]>,
    /// Set once a grown index replaced this one: a miss here must look again.
    retired: AtomicBool,
}

/// What readers of one shard see: its index and its arenas' segments.
#[derive(Clone)]
struct View {
    slots: Arc<Slots>,
    compact: Arc<[Segment]>,
    wide: Arc<[Segment]>,
}

/// One shard's state that only its writers touch.
struct Writer {
    view: View,
    compact_len: usize,
    wide_len: usize,
    records: usize,
}

struct Shard {
    writer: Mutex<Writer>,
    /// INVARIANT: the wrapping sum of `record_hash` over the shard's records.
    digest: AtomicU64,
    records: AtomicU64,
    /// Records published in each arena (scans read up to here).
    compact_len: AtomicU64,
    wide_len: AtomicU64,
    /// Ext values of wide records, by the slot their word 15 names.
    ext: RwLock<Vec<Option<Arc<Ext>>>>,
}

/// Where a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Loc {
    Compact(usize),
    Wide(usize),
}

impl Loc {
    fn code(self) -> u64 {
        match self {
            Self::Compact(i) => i as u64 + 1,
            Self::Wide(i) => (1 << 31) | (i as u64 + 1),
        }
    }

    fn from_word(w: u64) -> Option<Self> {
        let i = ((w & 0x7fff_ffff) as usize).checked_sub(1)?;
        Some(if w & (1 << 31) != 0 {
            Self::Wide(i)
        } else {
            Self::Compact(i)
        })
    }
}

/// What a reader found: a whole copy of a record's words (word 1 is its sid).
enum Found {
    Compact([u64; words::COMPACT]),
    Wide([u64; words::WIDE], Option<Arc<Ext>>),
    /// A wide record's first [`words::HEAD`] words: what its status needs.
    WideHead([u64; words::HEAD], Option<Arc<Ext>>),
    Missing,
    /// The pinned generation lacks what the index named: look again in the current one.
    Stale,
}

/// 32 bits of a sid's hash: its home in the index (the top bits, scaled) and its tag.
fn hash32(sid: u64) -> u32 {
    // Independent of `bucket_of`'s multiplier, so a shard's sids spread over its whole index.
    (super::murmur_mix(sid) >> 32) as u32
}

fn home(h: u32, slots: usize) -> usize {
    ((u64::from(h) * slots as u64) >> 32) as usize
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Writers never panic inside (no path here does); a poisoned lock still guards valid state.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn new_slots(n: usize) -> Arc<Slots> {
    Arc::new(Slots {
        words: std::iter::repeat_with(|| AtomicU64::new(0))
            .take(n)
            .collect(),
        retired: AtomicBool::new(false),
    })
}

/// Stores `word` in the first empty slot from its home.
fn place(slots: &[AtomicU64], word: u64) -> bool {
    let n = slots.len();
    let mut i = home((word >> 32) as u32, n);
    for _ in 0..n {
        if let Some(s) = slots.get(i) {
            if s.load(Ordering::Relaxed) == 0 {
                s.store(word, Ordering::Release);
                return true;
            }
        }
        i = if i + 1 == n { 0 } else { i + 1 };
    }
    false
}

/// The table engine.
pub(super) struct TableStore {
    shards: Box<[Shard]>,
    /// The current generation: every shard's [`View`], replaced whole when one changes.
    generation: RwLock<Arc<[View]>>,
    scanned: AtomicU64,
    /// Slots rehashed by the largest single growth of an index.
    largest_growth: AtomicU64,
}

impl TableStore {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let per_shard = capacity / DIGEST_BUCKETS * LOAD_DEN / LOAD_NUM + 1;
        let slots = per_shard.next_power_of_two().max(MIN_SLOTS);
        let empty: Arc<[Segment]> = Arc::from(Vec::new());
        let views: Vec<View> = (0..DIGEST_BUCKETS)
            .map(|_| View {
                slots: new_slots(slots),
                compact: empty.clone(),
                wide: empty.clone(),
            })
            .collect();
        let shards = views
            .iter()
            .map(|v| Shard {
                writer: Mutex::new(Writer {
                    view: v.clone(),
                    compact_len: 0,
                    wide_len: 0,
                    records: 0,
                }),
                digest: AtomicU64::new(0),
                records: AtomicU64::new(0),
                compact_len: AtomicU64::new(0),
                wide_len: AtomicU64::new(0),
                ext: RwLock::new(Vec::new()),
            })
            .collect();
        Self {
            shards,
            generation: RwLock::new(views.into()),
            scanned: AtomicU64::new(0),
            largest_growth: AtomicU64::new(0),
        }
    }

    fn current(&self) -> Arc<[View]> {
        self.generation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces shard `b`'s view in the current generation.
    fn publish(&self, b: usize, view: &View) {
        let mut g = self
            .generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next = g.to_vec();
        if let Some(v) = next.get_mut(b) {
            *v = view.clone();
        }
        *g = next.into();
    }

    pub(super) fn scanned(&self) -> u64 {
        self.scanned.load(Ordering::Relaxed)
    }

    pub(super) fn pin(&self) -> TablePinned<'_> {
        TablePinned {
            store: self,
            generation: self.current(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.records.load(Ordering::Relaxed) as usize)
            .sum()
    }

    pub(super) fn bucket_digests(&self) -> Vec<u64> {
        self.shards
            .iter()
            .map(|s| s.digest.load(Ordering::Acquire))
            .collect()
    }

    pub(super) fn memory(&self) -> Memory {
        let generation = self.current();
        let mut m = Memory {
            records: self.len() as u64,
            largest_growth: self.largest_growth.load(Ordering::Relaxed),
            ..Memory::default()
        };
        for (v, s) in generation.iter().zip(self.shards.iter()) {
            let segments: usize = v.compact.iter().chain(v.wide.iter()).map(|s| s.len()).sum();
            let ext = s
                .ext
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .capacity();
            m.slots += v.slots.words.len() as u64;
            m.bytes += ((v.slots.words.len() + segments + ext) * 8) as u64;
        }
        m
    }
}

fn read_ext(shard: &Shard, slot: u32) -> Option<Arc<Ext>> {
    shard
        .ext
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(slot as usize)
        .cloned()
        .flatten()
}

#[cfg(all(test, loom))]
mod loom_model;
