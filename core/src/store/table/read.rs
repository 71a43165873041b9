//! The readers' side: lookups through a pinned generation (looking again in the current one when
//! the pinned one is behind), batch lookups with overlapped misses, and scans.

use std::sync::Arc;

use super::words::{self, COMPACT, WIDE};
use super::{arena, hash32, home, lock, read_ext, Found, Loc, TableStore, View, BATCH};
use crate::model::{Record, Regs, Sid, Status};
use crate::store::{bucket_of, record_hash, Cursor};
use crate::sync::Ordering;

/// A pinned view of the table engine: one generation, for one batch of work.
pub(in crate::store) struct TablePinned<'s> {
    pub(super) store: &'s TableStore,
    pub(super) generation: Arc<[View]>,
}

impl TablePinned<'_> {
    pub(in crate::store) fn upsert(
        &self,
        sid: Sid,
        f: impl Fn(Option<&Record>) -> Option<Record>,
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
        let mut fresh: Option<Arc<[View]>> = None;
        loop {
            let generation = fresh.as_deref().unwrap_or(&self.generation);
            match self.lookup_in(b, generation.get(b)?, key, h) {
                Found::Record(_, regs) => return Some(regs),
                Found::Missing => return None,
                Found::Stale => fresh = Some(self.store.current()),
            }
        }
    }

    pub(in crate::store) fn status(&self, sid: Sid) -> Status {
        match self.find(sid) {
            Some(regs) => Record::from_regs(regs).status(sid),
            None => Status::unknown(sid),
        }
    }

    /// Touches the index slot and then the record of every id of a batch before resolving them
    /// one by one, so their cache misses overlap instead of following each other.
    pub(in crate::store) fn statuses(&self, sids: &[Sid], out: &mut Vec<Status>) {
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

    pub(in crate::store) fn record(&self, sid: Sid) -> Option<Record> {
        self.find(sid).map(Record::from_regs)
    }

    /// Record `i` of an arena of shard `b` (and its sid), through the pinned generation or, if
    /// that is behind, the current one.
    fn at(&self, b: usize, loc: Loc) -> Option<(u64, Regs)> {
        match self.read(b, self.generation.get(b)?, loc) {
            Found::Record(k, regs) => Some((k, regs)),
            Found::Missing => None,
            Found::Stale => match self.read(b, self.store.current().get(b)?, loc) {
                Found::Record(k, regs) => Some((k, regs)),
                _ => None,
            },
        }
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
