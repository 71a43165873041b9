//! Relaying a lost origin's recent updates: every acked update reaches every node, not only
//! those its origin reached before it stopped.
//!
//! An origin streams its updates to each peer on its own; with `replica` acks one peer having
//! an update is enough to ack it. If the origin then stops (killed, paused, restarted) before
//! the others got it, only that peer has it, and anti-entropy only runs in quiet intervals,
//! which continuous load never leaves. So each node remembers, per origin, the sids it received
//! from that origin within the last [`Relay::window_us`], and when the origin goes down (or comes
//! back as a new incarnation) it sends the current records of those sids to every other peer,
//! as bucket repairs. Merges are joins, so a record a peer already has changes nothing.
//!
//! Memory is bounded: entries older than the window are dropped, and at most [`MAX_RECENT`] per
//! origin are kept (the oldest go first).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::model::Sid;
use crate::store::bucket_of;

/// Most sids remembered per origin.
pub(super) const MAX_RECENT: usize = 1 << 21;

/// `sids` grouped by digest bucket, each once.
pub(super) fn group_by_bucket(sids: impl Iterator<Item = Sid>) -> BTreeMap<u16, Vec<Sid>> {
    let mut by_bucket: BTreeMap<u16, BTreeSet<Sid>> = BTreeMap::new();
    for sid in sids {
        by_bucket
            .entry(bucket_of(sid) as u16)
            .or_default()
            .insert(sid);
    }
    by_bucket
        .into_iter()
        .map(|(b, s)| (b, s.into_iter().collect()))
        .collect()
}

/// Recent updates per origin. See the module docs.
#[derive(Debug)]
pub(super) struct Relay {
    window_us: u64,
    recent: BTreeMap<u16, VecDeque<(u64, Sid)>>,
}

impl Relay {
    /// Remembers updates for `window_us` (a few times the down detection delay).
    pub(super) fn new(window_us: u64) -> Self {
        Self {
            window_us,
            recent: BTreeMap::new(),
        }
    }

    /// `origin`'s updates of `sids` arrived at `now_us`.
    pub(super) fn record(&mut self, origin: u16, now_us: u64, sids: impl Iterator<Item = Sid>) {
        let q = self.recent.entry(origin).or_default();
        q.extend(sids.map(|s| (now_us, s)));
        let horizon = now_us.saturating_sub(self.window_us);
        while q
            .front()
            .is_some_and(|(t, _)| *t < horizon || q.len() > MAX_RECENT)
        {
            q.pop_front();
        }
    }

    /// Takes what `origin` sent recently, grouped by digest bucket, each sid once.
    pub(super) fn take(&mut self, origin: u16) -> BTreeMap<u16, Vec<Sid>> {
        group_by_bucket(
            self.recent
                .remove(&origin)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, sid)| sid),
        )
    }

    /// Sids remembered, over all origins.
    pub(super) fn len(&self) -> usize {
        self.recent.values().map(VecDeque::len).sum()
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sid(n: u64) -> Sid {
        Sid::new(n).unwrap()
    }

    #[test]
    fn keeps_a_window_and_hands_back_each_sid_once_by_bucket() {
        let mut r = Relay::new(1_000);
        r.record(2, 0, [sid(1), sid(2)].into_iter());
        r.record(2, 500, [sid(2), sid(3)].into_iter());
        r.record(3, 500, [sid(9)].into_iter());
        // At 1_400 the entries of time 0 are out of the window.
        r.record(2, 1_400, std::iter::empty());
        assert_eq!(r.len(), 3);
        let got: Vec<Sid> = r.take(2).into_values().flatten().collect();
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, vec![sid(2), sid(3)]);
        assert!(r.take(2).is_empty());
        assert_eq!(r.len(), 1);
    }
}
