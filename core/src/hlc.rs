//! The Hybrid Logical Clock (Kulkarni et al., 2014) that versions every change.
//!
//! A [`Stamp`] packs 48 bits of physical time (milliseconds since the Unix epoch, cluster time)
//! and a 16-bit logical counter into one `u64`, with the origin node's sequence number as
//! tie-break. Stamps from one [`Hlc`] strictly increase, even when the physical clock stalls or
//! steps back, and never run far ahead of cluster time.
//!
//! The clock does not read time itself: callers pass `now_ms`.

use crate::sync::{AtomicU64, Ordering};

/// A version: HLC value (physical ms << 16 | logical) and the origin node id.
///
/// Ordered by HLC value, then node id: two nodes never produce equal stamps.
///
/// Packed to 10 bytes (alignment 2): a record holds up to nine stamps, and the padding of an
/// aligned `u64 + u16` would cost 6 bytes each. Fields are only ever copied, never borrowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(2))]
pub struct Stamp {
    hlc: u64,
    node: u16,
}

impl Stamp {
    /// A stamp from its raw parts.
    pub const fn new(hlc: u64, node: u16) -> Self {
        Self { hlc, node }
    }

    /// The packed HLC value.
    pub fn hlc(self) -> u64 {
        self.hlc
    }

    /// The origin node's sequence number.
    pub fn node(self) -> u16 {
        self.node
    }

    /// The physical part: cluster time in ms since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.hlc >> 16
    }
}

/// One node's clock, shared by all its worker threads.
#[derive(Debug)]
pub struct Hlc {
    node: u16,
    last: AtomicU64,
}

impl Hlc {
    /// A clock for node `node` that has issued nothing yet.
    pub fn new(node: u16) -> Self {
        Self {
            node,
            last: AtomicU64::new(0),
        }
    }

    /// The node id stamped into every [`Stamp`].
    pub fn node(&self) -> u16 {
        self.node
    }

    /// Issues a stamp greater than every stamp this clock issued or observed before.
    pub fn now(&self, now_ms: u64) -> Stamp {
        let physical = (now_ms & ((1 << 48) - 1)) << 16;
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let next = physical.max(cur.saturating_add(1));
            match self
                .last
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Stamp::new(next, self.node),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Issues `n` consecutive stamps at once (one atomic operation for a whole batch) and
    /// returns the first; the others are `first.hlc() + 1 ..`, all with this node's id.
    pub fn reserve(&self, now_ms: u64, n: u64) -> Stamp {
        let physical = (now_ms & ((1 << 48) - 1)) << 16;
        let n = n.max(1);
        let mut cur = self.last.load(Ordering::Relaxed);
        loop {
            let first = physical.max(cur.saturating_add(1));
            let last = first.saturating_add(n - 1);
            match self
                .last
                .compare_exchange_weak(cur, last, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Stamp::new(first, self.node),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Moves the clock past a stamp received from another node, so local writes that follow a
    /// remote one are ordered after it.
    pub fn observe(&self, seen: Stamp) {
        self.last.fetch_max(seen.hlc, Ordering::AcqRel);
    }
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_when_time_stalls_or_steps_back() {
        let h = Hlc::new(3);
        let a = h.now(1000);
        let b = h.now(1000);
        let c = h.now(999);
        assert!(a < b && b < c);
        assert_eq!(c.physical_ms(), 1000);
        assert_eq!(h.now(2000).physical_ms(), 2000);
    }

    #[test]
    fn reserved_ranges_do_not_overlap() {
        let h = Hlc::new(2);
        let a = h.reserve(1000, 10);
        let b = h.now(1000);
        assert_eq!(b.hlc(), a.hlc() + 10);
        let c = h.reserve(5000, 3);
        assert_eq!(c.physical_ms(), 5000);
    }

    #[test]
    fn observe_orders_local_writes_after_remote_ones() {
        let h = Hlc::new(1);
        h.observe(Stamp::new(5000 << 16, 2));
        assert!(h.now(10) > Stamp::new(5000 << 16, 2));
    }
}

#[cfg(all(test, loom))]
mod loom_hlc {
    use super::*;
    use loom::sync::Arc;

    /// Two threads issuing stamps concurrently never get the same one, and each sees its own
    /// stamps increase.
    #[test]
    fn concurrent_stamps_are_unique() {
        loom::model(|| {
            let h = Arc::new(Hlc::new(1));
            let n = if cfg!(loom) { 2 } else { 64 };
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let h = h.clone();
                    loom::thread::spawn(move || {
                        let mut v = Vec::new();
                        for _ in 0..n {
                            v.push(h.now(7));
                        }
                        v
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in hs {
                let v = t.join().unwrap();
                assert!(v.windows(2).all(|w| w[0] < w[1]));
                all.extend(v);
            }
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 2 * n);
        });
    }
}
