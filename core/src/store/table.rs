//! The table engine: records laid out for the hardware.
//!
//! ```text
//!  sid ─► shard = bucket_of(sid) (one per digest bucket)
//!           │
//!           ├─ index: open addressing, 8-byte slots [h32 | location], linear probing
//!           │     location ─► compact arena (64-byte records, see `words`)
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
//! - **The index grows** when it passes 7/8 full: the writer rehashes the shard's slots (8 bytes
//!   each; 40 k records at 10 M users take well under a millisecond), publishes a new generation
//!   and retires the old slots. Readers that miss in retired slots look again in the new ones;
//!   only the shard's writers wait for the growth.
//!
//! Architecture Invariant: a location in the index, once written, names the same record forever
//! (or, for a moved compact record, the wide record its forward names).

use std::sync::Arc;

mod arena;
mod words;

use arena::Segment;
use words::{COMPACT, WIDE};

use super::{bucket_of, record_hash, Cursor, Memory, DIGEST_BUCKETS};
use crate::model::{Ext, Record, Regs, Sid, Status};
use crate::sync::{AtomicBool, AtomicU64, Mutex, MutexGuard, Ordering, RwLock};

/// The index grows past `records / slots > LOAD_NUM / LOAD_DEN`.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;
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

/// What a reader found.
enum Found {
    Record(u64, Regs),
    Missing,
    /// The pinned generation lacks what the index named: look again in the current one.
    Stale,
}

/// 32 bits of a sid's hash: its home in the index (the top bits, scaled) and its tag.
fn hash32(sid: u64) -> u32 {
    // Murmur3's 64-bit finaliser, independent of `bucket_of`'s multiplier.
    let mut x = sid;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    ((x ^ (x >> 33)) >> 32) as u32
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

impl Writer {
    fn record(&self, loc: Loc) -> Option<&[AtomicU64]> {
        match loc {
            Loc::Compact(i) => arena::record(&self.view.compact, i, COMPACT),
            Loc::Wide(i) => arena::record(&self.view.wide, i, WIDE),
        }
    }

    /// The slot and location of `key`, if the shard holds it.
    fn find(&self, key: u64, h: u32) -> Option<(usize, Loc)> {
        let slots = &self.view.slots.words;
        let n = slots.len();
        let mut i = home(h, n);
        for _ in 0..n {
            let w = slots.get(i)?.load(Ordering::Relaxed);
            if w == 0 {
                return None;
            }
            if (w >> 32) as u32 == h {
                if let Some(loc) = Loc::from_word(w) {
                    let sid = self.record(loc).and_then(|r| r.get(1));
                    if sid.is_some_and(|s| s.load(Ordering::Relaxed) == key) {
                        return Some((i, loc));
                    }
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        None
    }

    fn regs(&self, shard: &Shard, loc: Loc) -> Option<Regs> {
        let words = self.record(loc)?;
        Some(match loc {
            Loc::Compact(_) => words::decode_compact(&words::load(words)),
            Loc::Wide(_) => {
                let w = words::load(words);
                let ext = words::ext_slot(&w).and_then(|s| read_ext(shard, s));
                words::decode_wide(&w, ext)
            }
        })
    }

    /// A new record slot in an arena (a new segment, published, when the last one is full).
    fn alloc(&mut self, store: &TableStore, b: usize, wide: bool) -> Option<usize> {
        let (len, words) = if wide {
            (self.wide_len, WIDE)
        } else {
            (self.compact_len, COMPACT)
        };
        if len > MAX_INDEX {
            return None;
        }
        let (k, _) = arena::locate(len, words);
        let segments = if wide {
            &mut self.view.wide
        } else {
            &mut self.view.compact
        };
        if k >= segments.len() {
            let mut grown = segments.to_vec();
            grown.push(arena::new_segment(k, words));
            *segments = grown.into();
            store.publish(b, &self.view);
        }
        if wide {
            self.wide_len += 1;
        } else {
            self.compact_len += 1;
        }
        Some(len)
    }

    /// Doubles the index if one more record would pass the load limit.
    fn reserve_slot(&mut self, store: &TableStore, b: usize) {
        let n = self.view.slots.words.len();
        if (self.records + 1) * LOAD_DEN <= n * LOAD_NUM {
            return;
        }
        let grown = new_slots(n * 2);
        for w in self.view.slots.words.iter() {
            let w = w.load(Ordering::Relaxed);
            if w != 0 {
                place(&grown.words, w);
            }
        }
        let old = std::mem::replace(&mut self.view.slots, grown);
        store.publish(b, &self.view);
        old.retired.store(true, Ordering::Release);
        store.largest_growth.fetch_max(n as u64, Ordering::Relaxed);
    }

    /// Writes `regs` as wide record `i`, its ext value in `shard`'s slab.
    fn write_wide(&self, shard: &Shard, i: usize, key: u64, regs: &Regs) -> Option<()> {
        let words = self.record(Loc::Wide(i))?;
        let old = words::load::<WIDE>(words);
        let mut slot = words::ext_slot(&old);
        words::begin_write(words);
        if let Some(e) = &regs.ext {
            let mut slab = shard
                .ext
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match slot.and_then(|s| slab.get_mut(s as usize)) {
                Some(v) => {
                    if !v.as_ref().is_some_and(|v| Arc::ptr_eq(v, &e.value)) {
                        *v = Some(e.value.clone());
                    }
                }
                None => {
                    slot = u32::try_from(slab.len()).ok();
                    slab.push(Some(e.value.clone()));
                }
            }
        }
        words::end_write(words, &words::encode_wide(key, regs, slot));
        Some(())
    }

    fn write_compact(&self, i: usize, new: &[u64; COMPACT]) -> Option<()> {
        let words = self.record(Loc::Compact(i))?;
        words::begin_write(words);
        words::end_write(words, new);
        Some(())
    }

    /// Adds `key`'s first record.
    fn insert(&mut self, store: &TableStore, b: usize, key: u64, h: u32, regs: &Regs) -> bool {
        let Some(shard) = store.shards.get(b) else {
            return false;
        };
        self.reserve_slot(store, b);
        let compact = words::encode_compact(key, regs);
        let Some(i) = self.alloc(store, b, compact.is_none()) else {
            return false;
        };
        let loc = match compact {
            Some(c) => {
                self.write_compact(i, &c);
                shard
                    .compact_len
                    .store(self.compact_len as u64, Ordering::Release);
                Loc::Compact(i)
            }
            None => {
                self.write_wide(shard, i, key, regs);
                shard
                    .wide_len
                    .store(self.wide_len as u64, Ordering::Release);
                Loc::Wide(i)
            }
        };
        if !place(&self.view.slots.words, (u64::from(h) << 32) | loc.code()) {
            return false;
        }
        self.records += 1;
        shard.records.store(self.records as u64, Ordering::Release);
        true
    }

    /// Rewrites `key`'s record at `loc` (slot `slot`) with `regs`, moving a compact record that
    /// no longer fits to the wide arena.
    fn rewrite(
        &mut self,
        store: &TableStore,
        b: usize,
        (slot, loc): (usize, Loc),
        (key, h): (u64, u32),
        regs: &Regs,
    ) -> bool {
        let Some(shard) = store.shards.get(b) else {
            return false;
        };
        match loc {
            Loc::Wide(i) => self.write_wide(shard, i, key, regs).is_some(),
            Loc::Compact(i) => {
                if let Some(c) = words::encode_compact(key, regs) {
                    return self.write_compact(i, &c).is_some();
                }
                let Some(j) = self.alloc(store, b, true) else {
                    return false;
                };
                self.write_wide(shard, j, key, regs);
                shard
                    .wide_len
                    .store(self.wide_len as u64, Ordering::Release);
                let Some(words) = self.record(loc) else {
                    return false;
                };
                let mut moved = words::load::<COMPACT>(words);
                moved[7] = words::moved_word(j as u32);
                words::begin_write(words);
                words::end_write(words, &moved);
                if let Some(s) = self.view.slots.words.get(slot) {
                    s.store(
                        (u64::from(h) << 32) | Loc::Wide(j).code(),
                        Ordering::Release,
                    );
                }
                true
            }
        }
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

/// A pinned view of the table engine: one generation, for one batch of work.
pub(super) struct TablePinned<'s> {
    store: &'s TableStore,
    generation: Arc<[View]>,
}

impl TablePinned<'_> {
    pub(super) fn upsert(&self, sid: Sid, f: impl Fn(Option<&Record>) -> Option<Record>) -> bool {
        let b = bucket_of(sid);
        let Some(shard) = self.store.shards.get(b) else {
            return false;
        };
        let key = sid.get();
        let h = hash32(key);
        let mut w = lock(&shard.writer);
        let (written, delta) = match w.find(key, h) {
            None => {
                let Some(new) = f(None) else { return false };
                let hash = record_hash(key, &new);
                (w.insert(self.store, b, key, h, &new.regs()), hash)
            }
            Some((slot, loc)) => {
                let Some(old) = w.regs(shard, loc).map(Record::from_regs) else {
                    return false;
                };
                let Some(new) = f(Some(&old)) else {
                    return false;
                };
                let delta = record_hash(key, &new).wrapping_sub(record_hash(key, &old));
                (
                    w.rewrite(self.store, b, (slot, loc), (key, h), &new.regs()),
                    delta,
                )
            }
        };
        if written {
            shard.digest.fetch_add(delta, Ordering::AcqRel);
        }
        written
    }

    /// Reads record `i` of an arena in `view`, following a forward.
    fn read(&self, b: usize, view: &View, loc: Loc) -> Found {
        let Some(shard) = self.store.shards.get(b) else {
            return Found::Missing;
        };
        match loc {
            Loc::Compact(i) => {
                let Some(words) = arena::record(&view.compact, i, COMPACT) else {
                    return Found::Stale;
                };
                let (c, ()) = words::read::<COMPACT, _>(words, |_| ());
                match words::forward(&c) {
                    Some(j) => self.read(b, view, Loc::Wide(j as usize)),
                    None => Found::Record(c[1], words::decode_compact(&c)),
                }
            }
            Loc::Wide(i) => {
                let Some(words) = arena::record(&view.wide, i, WIDE) else {
                    return Found::Stale;
                };
                let (w, ext) = words::read::<WIDE, _>(words, |w| {
                    words::ext_slot(w).and_then(|s| read_ext(shard, s))
                });
                Found::Record(w[1], words::decode_wide(&w, ext))
            }
        }
    }

    fn lookup_in(&self, b: usize, view: &View, key: u64, h: u32) -> Found {
        let slots = &view.slots.words;
        let n = slots.len();
        let mut i = home(h, n);
        for _ in 0..n {
            let Some(w) = slots.get(i).map(|s| s.load(Ordering::Acquire)) else {
                break;
            };
            if w == 0 {
                break;
            }
            if (w >> 32) as u32 == h {
                if let Some(loc) = Loc::from_word(w) {
                    match self.read(b, view, loc) {
                        Found::Record(k, regs) if k == key => return Found::Record(k, regs),
                        Found::Stale => return Found::Stale,
                        _ => {}
                    }
                }
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        if view.slots.retired.load(Ordering::Acquire) {
            Found::Stale
        } else {
            Found::Missing
        }
    }

    /// The registers of `sid`, looking again in the current generation if the pinned one is
    /// behind.
    fn find(&self, sid: Sid) -> Option<Regs> {
        let b = bucket_of(sid);
        let (key, h) = (sid.get(), hash32(sid.get()));
        let mut generation = self.generation.clone();
        loop {
            let view = generation.get(b)?;
            match self.lookup_in(b, view, key, h) {
                Found::Record(_, regs) => return Some(regs),
                Found::Missing => return None,
                Found::Stale => generation = self.store.current(),
            }
        }
    }

    pub(super) fn status(&self, sid: Sid) -> Status {
        match self.find(sid) {
            Some(regs) => Record::from_regs(regs).status(sid),
            None => Status::unknown(sid),
        }
    }

    /// Touches the index slot and then the record of every id of a batch before resolving them
    /// one by one, so their cache misses overlap instead of following each other.
    pub(super) fn statuses(&self, sids: &[Sid], out: &mut Vec<Status>) {
        out.reserve(sids.len());
        for chunk in sids.chunks(BATCH) {
            let mut sink = 0u64;
            let mut firsts = [None; BATCH];
            for (s, first) in chunk.iter().zip(firsts.iter_mut()) {
                if let Some(view) = self.generation.get(bucket_of(*s)) {
                    let slots = &view.slots.words;
                    let i = home(hash32(s.get()), slots.len());
                    if let Some(w) = slots.get(i) {
                        let w = w.load(Ordering::Relaxed);
                        sink ^= w;
                        *first = Loc::from_word(w).map(|l| (view, l));
                    }
                }
            }
            for (view, loc) in firsts.iter().flatten() {
                let words = match *loc {
                    Loc::Compact(i) => arena::record(&view.compact, i, COMPACT),
                    Loc::Wide(i) => arena::record(&view.wide, i, WIDE),
                };
                if let Some(w) = words.and_then(|w| w.get(1)) {
                    sink ^= w.load(Ordering::Relaxed);
                }
            }
            std::hint::black_box(sink);
            out.extend(chunk.iter().map(|s| self.status(*s)));
        }
    }

    pub(super) fn record(&self, sid: Sid) -> Option<Record> {
        self.find(sid).map(Record::from_regs)
    }

    /// Record `i` of an arena of shard `b` (and its sid), through the pinned generation or, if
    /// that is behind, the current one.
    fn at(&self, b: usize, loc: Loc) -> Option<(u64, Regs)> {
        let mut generation = self.generation.clone();
        for _ in 0..2 {
            match self.read(b, generation.get(b)?, loc) {
                Found::Record(k, regs) => return Some((k, regs)),
                Found::Missing => return None,
                Found::Stale => generation = self.store.current(),
            }
        }
        None
    }

    /// Scans shard by shard; within a shard, the wide arena (phase 0) and then the compact one
    /// (phase 1), each in index order. A compact record that moved is visited through its
    /// forward only if the wide record it names came after phase 0 ended (`mark`): the ones
    /// before were visited in phase 0.
    pub(super) fn scan(
        &self,
        cursor: &mut Cursor,
        max: usize,
        mut f: impl FnMut(Sid, &Record) -> bool,
    ) -> usize {
        let max = max.max(1);
        let mut visited = 0;
        while visited < max && !cursor.is_done() {
            let Some(shard) = self.store.shards.get(cursor.bucket) else {
                break;
            };
            let len = if cursor.phase == 0 {
                &shard.wide_len
            } else {
                &shard.compact_len
            };
            let len = len.load(Ordering::Acquire) as usize;
            if cursor.pos >= len {
                if cursor.phase == 0 {
                    cursor.phase = 1;
                    cursor.mark = len;
                    cursor.pos = 0;
                } else {
                    cursor.next_bucket();
                }
                continue;
            }
            let i = cursor.pos;
            cursor.pos += 1;
            visited += 1;
            let record = if cursor.phase == 0 {
                self.at(cursor.bucket, Loc::Wide(i))
            } else {
                self.compact_for_scan(cursor.bucket, i, cursor.mark)
            };
            if let Some((sid, regs)) = record.and_then(|(k, r)| Some((Sid::new(k)?, r))) {
                if !f(sid, &Record::from_regs(regs)) {
                    break;
                }
            }
        }
        self.store
            .scanned
            .fetch_add(visited as u64, Ordering::Relaxed);
        visited
    }

    /// Compact record `i` for a scan in phase 1: itself, or the wide record it moved to if that
    /// one came after `mark`.
    fn compact_for_scan(&self, b: usize, i: usize, mark: usize) -> Option<(u64, Regs)> {
        let mut generation = self.generation.clone();
        for _ in 0..2 {
            let view = generation.get(b)?;
            let Some(words) = arena::record(&view.compact, i, COMPACT) else {
                generation = self.store.current();
                continue;
            };
            let (c, ()) = words::read::<COMPACT, _>(words, |_| ());
            return match words::forward(&c) {
                Some(j) if (j as usize) < mark => None,
                Some(j) => self.at(b, Loc::Wide(j as usize)),
                None => Some((c[1], words::decode_compact(&c))),
            };
        }
        None
    }
}
