//! Anti-entropy: comparing bucketed digests with a peer and asking for the buckets that differ.
//!
//! Under traffic, digests always differ by what is still in flight, and repairing them would
//! resend whole buckets every round; so a round only counts in a quiet sync interval (no local
//! updates and none from that peer), and a bucket is asked for only when it differed in two
//! rounds in a row, at most [`MAX_BUCKETS_PER_ROUND`] per round. Streaming and snapshots carry
//! the data meanwhile; the answers are joined like any other record.

use std::collections::BTreeSet;

use crate::store::DIGEST_BUCKETS;

/// Most buckets asked for in one anti-entropy round (bounds the work a round can cause).
pub(super) const MAX_BUCKETS_PER_ROUND: usize = 32;

/// The anti-entropy state for one peer.
#[derive(Debug, Default)]
pub(super) struct AntiEntropy {
    /// Buckets that differed in the previous round.
    suspect: BTreeSet<u16>,
}

impl AntiEntropy {
    /// The peer's bucket digests (`theirs`) against this node's (`mine`). `quiet` says whether
    /// the interval was free of traffic. Returns the buckets to ask for, if any.
    pub(super) fn handle_digests(
        &mut self,
        quiet: bool,
        mine: &[u64],
        theirs: &[u64],
    ) -> Option<Vec<u16>> {
        if !quiet {
            self.suspect.clear();
            return None;
        }
        let differ: BTreeSet<u16> = (0..DIGEST_BUCKETS)
            .filter(|b| mine.get(*b) != theirs.get(*b))
            .map(|b| b as u16)
            .collect();
        let ask: Vec<u16> = differ
            .intersection(&self.suspect)
            .copied()
            .take(MAX_BUCKETS_PER_ROUND)
            .collect();
        self.suspect = differ;
        (!ask.is_empty()).then_some(ask)
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn asks_only_for_buckets_that_differ_twice_in_quiet_rounds() {
        let mine = vec![0u64; DIGEST_BUCKETS];
        let mut theirs = mine.clone();
        theirs[3] = 1;
        theirs[200] = 9;
        let mut ae = AntiEntropy::default();
        assert_eq!(ae.handle_digests(true, &mine, &theirs), None);
        assert_eq!(ae.handle_digests(true, &mine, &theirs), Some(vec![3, 200]));
        // Traffic resets the count.
        assert_eq!(ae.handle_digests(false, &mine, &theirs), None);
        assert_eq!(ae.handle_digests(true, &mine, &theirs), None);
        theirs[200] = 0;
        assert_eq!(ae.handle_digests(true, &mine, &theirs), Some(vec![3]));
    }

    #[test]
    fn a_round_asks_for_a_bounded_number_of_buckets() {
        let mine = vec![0u64; DIGEST_BUCKETS];
        let theirs = vec![1u64; DIGEST_BUCKETS];
        let mut ae = AntiEntropy::default();
        ae.handle_digests(true, &mine, &theirs);
        let ask = ae.handle_digests(true, &mine, &theirs).unwrap();
        assert_eq!(ask.len(), MAX_BUCKETS_PER_ROUND);
        assert_eq!(ask[0], 0);
    }
}
