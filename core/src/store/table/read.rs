//! The readers' side: lookups through a pinned generation (looking again in the current one when
//! the pinned one is behind), batch lookups with overlapped misses, and scans.

use std::sync::Arc;

use super::words::{self, COMPACT, HEAD, WIDE};
use super::{arena, hash32, home, lock, read_ext, Found, Loc, TableStore, View, BATCH};
use crate::model::{Record, Regs, Sid, Status};
use crate::store::{bucket_of, record_hash, Cursor};
use crate::sync::{AtomicU64, Ordering};

/// A pinned view of the table engine: one generation, for one batch of work.
pub(in crate::store) struct TablePinned<'s> {
    pub(super) store: &'s TableStore,
    pub(super) generation: Arc<[View]>,
}

impl TablePinned<'_> {
    /// Writes `sid`'s record under its shard's lock: `create()` for an unknown sid, else
    /// `update` on the current record in place (it returns whether it changed anything; nothing
    /// is written if not). Keeps the shard's digest exact. Returns whether a record was written.
    pub(in crate::store) fn upsert(
        &self,
        sid: Sid,
        create: impl FnOnce() -> Record,
        update: impl FnOnce(&mut Record) -> bool,
    ) -> bool {
        let b = bucket_of(sid);
        let Some(shard) = self.store.shards.get(b) else {
            return false;
        };
        let key = sid.get();
        let h = hash32(key);
        let mut w = lock(&shard.writer);
        let (written, delta) = match w.find(key, h) {
            None => {
                let new = create();
                let hash = record_hash(key, &new);
                (w.insert(self.store, b, key, h, &new.into_regs()), hash)
            }
            Some((slot, loc)) => {
                let Some(mut r) = w.regs(shard, loc).map(Record::from_regs) else {
                    return false;
                };
                let before = record_hash(key, &r);
                if !update(&mut r) {
                    return false;
                }
                let delta = record_hash(key, &r).wrapping_sub(before);
                (
                    w.rewrite(self.store, b, (slot, loc), (key, h), &r.into_regs()),
                    delta,
                )
            }
        };
        if written {
            shard.digest.fetch_add(delta, Ordering::AcqRel);
        }
        written
    }

    /// Reads record `i` of an arena in `view`, following a forward; of a wide record only its
    /// head (what a status needs) when `head`.
    fn read(&self, b: usize, view: &View, loc: Loc, head: bool) -> Found {
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
                    Some(j) => self.read(b, view, Loc::Wide(j as usize), head),
                    None => Found::Compact(c),
                }
            }
            Loc::Wide(i) => {
                let Some(words) = arena::record(&view.wide, i, WIDE) else {
                    return Found::Stale;
                };
                let ext = |w: &[u64]| words::ext_slot(w).and_then(|s| read_ext(shard, s));
                if head {
                    let (w, ext) = words::read::<HEAD, _>(words, |w| ext(w));
                    Found::WideHead(w, ext)
                } else {
                    let (w, ext) = words::read::<WIDE, _>(words, |w| ext(w));
                    Found::Wide(w, ext)
                }
            }
        }
    }

    fn lookup_in(&self, b: usize, view: &View, (key, h): (u64, u32), head: bool) -> Found {
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
                    let found = self.read(b, view, loc, head);
                    if matches!(found, Found::Stale) || found.sid() == key {
                        return found;
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

    /// The record of `sid` as found through the pinned generation, or through the current one
    /// if the pinned one is behind (a wide record's head only when `head`).
    fn find(&self, sid: Sid, head: bool) -> Found {
        let b = bucket_of(sid);
        let (key, h) = (sid.get(), hash32(sid.get()));
        let mut fresh: Option<Arc<[View]>> = None;
        loop {
            let generation = fresh.as_deref().unwrap_or(&self.generation);
            let Some(view) = generation.get(b) else {
                return Found::Missing;
            };
            match self.lookup_in(b, view, (key, h), head) {
                Found::Stale => fresh = Some(self.store.current()),
                found => return found,
            }
        }
    }

    pub(in crate::store) fn status(&self, sid: Sid) -> Status {
        match self.find(sid, true) {
            Found::Compact(c) => words::status_compact(&c, sid),
            Found::WideHead(w, ext) => words::status_wide(&w, ext, sid),
            Found::Wide(w, ext) => {
                let head = w.first_chunk::<HEAD>().copied().unwrap_or_default();
                words::status_wide(&head, ext, sid)
            }
            Found::Missing | Found::Stale => Status::unknown(sid),
        }
    }

    /// Prefetches the index slot and then the record of every id of `sids` (at most [`BATCH`]
    /// are useful), so their cache misses overlap instead of following each other when the
    /// caller then resolves them one by one.
    pub(in crate::store) fn prefetch(&self, sids: &[Sid]) {
        // Pass 1: a prefetch of every id's home slot (hints: nothing waits for them), keeping
        // the slot, its view and the id's tag for pass 2.
        let mut homes: [Option<(&View, &AtomicU64, u32)>; BATCH] = [None; BATCH];
        for (s, home_of) in sids.iter().zip(homes.iter_mut()) {
            let Some(view) = self.generation.get(bucket_of(*s)) else {
                continue;
            };
            let h = hash32(s.get());
            let slots = &view.slots.words;
            if let Some(x) = slots.get(home(h, slots.len())) {
                arena::prefetch(x);
                *home_of = Some((view, x, h));
            }
        }
        // Pass 2: load the slots (their misses overlapped in pass 1) and prefetch the record
        // each names when its tag is the id's (most are).
        for (view, x, h) in homes.into_iter().flatten() {
            let w = x.load(Ordering::Relaxed);
            if (w >> 32) as u32 != h {
                continue;
            }
            // What a status reads: a compact record (56 bytes, it may straddle two cache lines)
            // or a wide record's head, both ends of it.
            let words = match Loc::from_word(w) {
                Some(Loc::Compact(i)) => arena::record(&view.compact, i, COMPACT),
                Some(Loc::Wide(i)) => {
                    arena::record(&view.wide, i, WIDE).and_then(|w| w.get(..HEAD))
                }
                None => None,
            };
            if let Some(w) = words {
                for v in w.first().into_iter().chain(w.last()) {
                    arena::prefetch(v);
                }
            }
        }
    }

    pub(in crate::store) fn statuses(&self, sids: &[Sid], out: &mut Vec<Status>) {
        out.reserve(sids.len());
        for chunk in sids.chunks(BATCH) {
            self.prefetch(chunk);
            out.extend(chunk.iter().map(|s| self.status(*s)));
        }
    }

    pub(in crate::store) fn record(&self, sid: Sid) -> Option<Record> {
        self.find(sid, false).regs().map(Record::from_regs)
    }

    /// Record `i` of an arena of shard `b` (and its sid), through the pinned generation or, if
    /// that is behind, the current one.
    fn at(&self, b: usize, loc: Loc) -> Option<(u64, Regs)> {
        let found = match self.read(b, self.generation.get(b)?, loc, false) {
            Found::Stale => self.read(b, self.store.current().get(b)?, loc, false),
            found => found,
        };
        Some((found.sid(), found.regs()?))
    }

    /// Scans shard by shard; within a shard, the wide arena (phase 0) and then the compact one
    /// (phase 1), each in index order. A compact record that moved is visited through its
    /// forward only if the wide record it names came after phase 0 ended (`mark`): the ones
    /// before were visited in phase 0.
    pub(in crate::store) fn scan(
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
        let words = arena::record(&self.generation.get(b)?.compact, i, COMPACT);
        let (c, ()) = match words {
            Some(words) => words::read::<COMPACT, _>(words, |_| ()),
            None => {
                let current = self.store.current();
                words::read::<COMPACT, _>(
                    arena::record(&current.get(b)?.compact, i, COMPACT)?,
                    |_| (),
                )
            }
        };
        match words::forward(&c) {
            Some(j) if (j as usize) < mark => None,
            Some(j) => self.at(b, Loc::Wide(j as usize)),
            None => Some((c[1], words::decode_compact(&c))),
        }
    }
}

impl Found {
    /// The sid of the record found (0 for none).
    fn sid(&self) -> u64 {
        match self {
            Self::Compact(c) => c[1],
            Self::Wide(w, _) => w[1],
            Self::WideHead(w, _) => w[1],
            Self::Missing | Self::Stale => 0,
        }
    }

    /// The registers of the record found.
    fn regs(self) -> Option<Regs> {
        match self {
            Self::Compact(c) => Some(words::decode_compact(&c)),
            Self::Wide(w, ext) => Some(words::decode_wide(&w, ext)),
            // Only statuses read heads.
            Self::WideHead(..) | Self::Missing | Self::Stale => None,
        }
    }
}
