//! The writer's side of a shard: finding a record under the lock, allocating, growing the index,
//! writing records in place and moving compact records to the wide arena.

use std::sync::Arc;

use super::words::{self, COMPACT, WIDE};
use super::{
    arena, home, new_slots, place, read_ext, Loc, Shard, TableStore, Writer, GROWTH_DEN,
    GROWTH_NUM, LOAD_DEN, LOAD_NUM, MAX_INDEX,
};
use crate::model::Regs;
use crate::sync::{AtomicU64, Ordering};

impl Writer {
    pub(super) fn record(&self, loc: Loc) -> Option<&[AtomicU64]> {
        match loc {
            Loc::Compact(i) => arena::record(&self.view.compact, i, COMPACT),
            Loc::Wide(i) => arena::record(&self.view.wide, i, WIDE),
        }
    }

    /// The slot and location of `key`, if the shard holds it.
    pub(super) fn find(&self, key: u64, h: u32) -> Option<(usize, Loc)> {
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

    pub(super) fn regs(&self, shard: &Shard, loc: Loc) -> Option<Regs> {
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
    pub(super) fn alloc(&mut self, store: &TableStore, b: usize, wide: bool) -> Option<usize> {
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

    /// Grows the index if one more record would pass the load limit.
    pub(super) fn reserve_slot(&mut self, store: &TableStore, b: usize) {
        let n = self.view.slots.words.len();
        if (self.records + 1) * LOAD_DEN <= n * LOAD_NUM {
            return;
        }
        let grown = new_slots(n * GROWTH_NUM / GROWTH_DEN);
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
    pub(super) fn write_wide(&self, shard: &Shard, i: usize, key: u64, regs: &Regs) -> Option<()> {
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

    pub(super) fn write_compact(&self, i: usize, new: &[u64; COMPACT]) -> Option<()> {
        let words = self.record(Loc::Compact(i))?;
        words::begin_write(words);
        words::end_write(words, new);
        Some(())
    }

    /// Adds `key`'s first record.
    pub(super) fn insert(
        &mut self,
        store: &TableStore,
        b: usize,
        key: u64,
        h: u32,
        regs: &Regs,
    ) -> bool {
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
    pub(super) fn rewrite(
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
                let moved = words::moved(words::load::<COMPACT>(words), j as u32);
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
