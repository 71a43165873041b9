//! Non-moving record storage: a shard's records of one layout, in segments that are allocated
//! as the shard grows and never moved or freed while the store lives.
//!
//! Segment `k` holds `16 << k` records for `k < 8` (16 … 2048), then 4096 records each, so a small
//! shard costs little and a large one wastes at most one segment's tail. Record `i` is always at
//! the same place: positions are stable, which is what makes [`super::TablePinned::scan`]'s
//! cursor valid forever.

use std::sync::Arc;

use crate::sync::AtomicU64;

/// Records in all the geometric segments together (16 · (2^8 − 1)).
const GEOMETRIC: usize = 4080;
/// Records per segment past the geometric ones.
const FLAT: usize = 4096;

/// One segment: `records × words` atomics.
pub(super) type Segment = Arc<[AtomicU64]>;

/// Where record `i` is: its segment and its first word in it (for records of `words` words).
pub(super) fn locate(i: usize, words: usize) -> (usize, usize) {
    if i < GEOMETRIC {
        let k = (i / 16 + 1).ilog2() as usize;
        (k, (i - 16 * ((1 << k) - 1)) * words)
    } else {
        let j = i - GEOMETRIC;
        (8 + j / FLAT, (j % FLAT) * words)
    }
}

/// How many records segment `k` holds.
pub(super) fn segment_len(k: usize) -> usize {
    if k < 8 {
        16 << k
    } else {
        FLAT
    }
}

/// A new zeroed segment `k` for records of `words` words.
pub(super) fn new_segment(k: usize, words: usize) -> Segment {
    std::iter::repeat_with(|| AtomicU64::new(0))
        .take(segment_len(k) * words)
        .collect()
}

/// The words of record `i` in `segments`, if its segment is there.
pub(super) fn record(segments: &[Segment], i: usize, words: usize) -> Option<&[AtomicU64]> {
    let (k, off) = locate(i, words);
    segments.get(k)?.get(off..off + words)
}

/// Asks the CPU to bring `x`'s cache line in, without waiting for it (a load where the target
/// has no prefetch instruction we can name on stable Rust).
#[inline(always)]
pub(super) fn prefetch(x: &AtomicU64) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    #[allow(unsafe_code)]
    // SAFETY: `x` is a live reference, so the address is valid; a prefetch is a hint that reads
    // no value into the program and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(x).cast::<i8>());
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    std::hint::black_box(x.load(crate::sync::Ordering::Relaxed));
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_index_has_its_own_place() {
        let mut next = (0, 0);
        for i in 0..20_000 {
            let (k, off) = locate(i, 1);
            if (k, off) != next {
                assert_eq!((k, off), (next.0 + 1, 0), "index {i}");
            }
            assert!(off < segment_len(k));
            next = (k, off + 1);
        }
    }
}
