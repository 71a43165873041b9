//! [`Feed`]: the node-wide change feed, a bounded ring of `(sequence number, sid)` for every
//! change of a user's status on this node (local pool updates and records merged from peers).
//!
//! Numbering: the first change is 1, each next one is one more; [`Feed::head`] is the number of
//! the last change published (0 before any). A reader keeps the number it has seen and asks for
//! what follows ([`Feed::read`]); if the ring dropped part of it, it is told so ([`Gone`]) and
//! starts over (a reset).
//!
//! Retention (docs/api.md, "Resuming"): an entry is dropped only once it is neither among the
//! last `keep` (`<web retention-changes>`) entries nor younger than [`WINDOW_MS`]; whatever its
//! age, at most `hard` entries (64 × `keep`) are held, so memory is bounded at 16 bytes per entry
//! (10 000 × 64 × 16 B = 10 MiB at the default, reached only above ~10 600 changes/s).
//!
//! Thread model: publishers (workers after a pool batch, the cluster thread after merging) and
//! readers (workers serving watchers) share one short lock per batch, never held across a poll
//! or any I/O; the head is also an atomic, so a worker checks "anything new?" without the lock.
//! Time is a parameter (`now_ms`, monotonic).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use presenced_core::Sid;

/// Entries younger than this are kept even beyond `keep`.
pub(crate) const WINDOW_MS: u64 = 60_000;
/// The hard cap is this many times `keep`.
const HARD_FACTOR: usize = 64;

/// The resume point asked for is no longer (or never was) in the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gone;

/// The ring of recent changes.
#[derive(Debug)]
pub(crate) struct Feed {
    ring: Mutex<Ring>,
    /// The number of the last entry published (0: none). Written under the lock.
    head: AtomicU64,
}

#[derive(Debug)]
struct Ring {
    /// (sid, when published, ms). INVARIANT: `entries[i]` has number `first + i`.
    entries: VecDeque<(Sid, u64)>,
    /// The number of `entries[0]` (or of the next entry when empty).
    first: u64,
    keep: usize,
    hard: usize,
}

impl Feed {
    /// A feed keeping at least `keep` entries (and those younger than [`WINDOW_MS`]).
    pub(crate) fn new(keep: usize) -> Self {
        let keep = keep.max(1);
        Self {
            ring: Mutex::new(Ring {
                entries: VecDeque::new(),
                first: 1,
                keep,
                hard: keep.saturating_mul(HARD_FACTOR),
            }),
            head: AtomicU64::new(0),
        }
    }

    /// The number of the last change published (0: none yet).
    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// Appends `sids` (one entry each, in order) at time `now_ms` and drops what retention
    /// allows. Returns the new head.
    pub(crate) fn publish(&self, now_ms: u64, sids: &[Sid]) -> u64 {
        let mut r = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        r.entries.extend(sids.iter().map(|s| (*s, now_ms)));
        while let Some(&(_, at)) = r.entries.front() {
            let len = r.entries.len();
            let droppable = len > r.keep && at.saturating_add(WINDOW_MS) <= now_ms;
            if !(droppable || len > r.hard) {
                break;
            }
            r.entries.pop_front();
            r.first += 1;
        }
        let head = r.first + r.entries.len() as u64 - 1;
        self.head.store(head, Ordering::Release);
        head
    }

    /// Appends to `out` at most `max` entries numbered after `after`, in order, and returns the
    /// number of the last one appended (`after` when none). `Err(Gone)`: an entry after
    /// `after` was already dropped, or `after` is beyond the head (not a number of this feed).
    pub(crate) fn read(
        &self,
        after: u64,
        max: usize,
        out: &mut Vec<(u64, Sid)>,
    ) -> Result<u64, Gone> {
        let r = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let head = r.first + r.entries.len() as u64 - 1;
        if after > head || after.saturating_add(1) < r.first {
            return Err(Gone);
        }
        let skip = (after + 1 - r.first) as usize;
        let mut last = after;
        for (i, (sid, _)) in r.entries.iter().skip(skip).take(max).enumerate() {
            last = after + 1 + i as u64;
            out.push((last, *sid));
        }
        Ok(last)
    }

    /// Entries held now (a memory report).
    pub(crate) fn len(&self) -> usize {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sids(range: std::ops::Range<u64>) -> Vec<Sid> {
        range.map(|i| Sid::new(i).unwrap()).collect()
    }

    fn read_all(f: &Feed, after: u64) -> Result<Vec<u64>, Gone> {
        let mut out = Vec::new();
        f.read(after, usize::MAX, &mut out)?;
        Ok(out.into_iter().map(|(_, s)| s.get()).collect())
    }

    #[test]
    fn numbers_and_reads() {
        let f = Feed::new(10);
        assert_eq!(f.head(), 0);
        assert_eq!(read_all(&f, 0), Ok(vec![]));
        assert_eq!(f.publish(0, &sids(1..4)), 3);
        assert_eq!(read_all(&f, 0), Ok(vec![1, 2, 3]));
        assert_eq!(read_all(&f, 2), Ok(vec![3]));
        assert_eq!(read_all(&f, 3), Ok(vec![]));
        assert_eq!(read_all(&f, 4), Err(Gone), "beyond the head");
        let mut out = Vec::new();
        assert_eq!(
            f.read(0, 2, &mut out),
            Ok(2),
            "bounded read ends at its last entry"
        );
        assert_eq!(
            out,
            vec![(1, Sid::new(1).unwrap()), (2, Sid::new(2).unwrap())]
        );
    }

    #[test]
    fn keeps_the_last_keep_entries_whatever_their_age() {
        let f = Feed::new(10);
        f.publish(0, &sids(1..26));
        // A minute later, 25 entries, all old: the last 10 stay.
        f.publish(WINDOW_MS, &[]);
        assert_eq!(f.len(), 10);
        assert_eq!(read_all(&f, 15), Ok((16..26).collect()));
        assert_eq!(read_all(&f, 14), Err(Gone), "entry 15 was dropped");
    }

    #[test]
    fn keeps_the_last_minute_beyond_keep() {
        let f = Feed::new(10);
        f.publish(0, &sids(1..101));
        f.publish(WINDOW_MS - 1, &sids(101..201));
        assert_eq!(f.len(), 200, "nothing is a minute old yet");
        f.publish(WINDOW_MS, &[]);
        assert_eq!(f.len(), 100, "the first batch is a minute old");
        assert_eq!(read_all(&f, 100).map(|v| v.len()), Ok(100));
        assert_eq!(read_all(&f, 99), Err(Gone));
    }

    #[test]
    fn hard_cap_bounds_memory() {
        let f = Feed::new(2);
        f.publish(0, &sids(1..1001));
        assert_eq!(f.len(), 2 * HARD_FACTOR);
        assert_eq!(f.head(), 1000);
        assert_eq!(
            read_all(&f, 1000 - 2 * HARD_FACTOR as u64).map(|v| v.len()),
            Ok(128)
        );
    }

    #[test]
    fn wraps_around_many_times() {
        // The ring turns over far more often than it holds entries: numbers stay exact.
        let f = Feed::new(3);
        let mut now = 0;
        for round in 0..1000u64 {
            now += WINDOW_MS;
            let base = round * 5 + 1;
            f.publish(now, &sids(base..base + 5));
            assert_eq!(f.head(), base + 4);
            let expect: Vec<u64> = (base + 2..base + 5).collect();
            if round > 0 {
                // A minute passed since the previous batch: only `keep` of this one remain
                // once the next publish trims; right now this batch is young and whole.
                assert_eq!(read_all(&f, base - 1).map(|v| v.len()), Ok(5));
            }
            f.publish(now + WINDOW_MS, &[]);
            now += WINDOW_MS;
            assert_eq!(read_all(&f, base + 1), Ok(expect));
            assert_eq!(read_all(&f, base), Err(Gone));
        }
    }
}
