//! Time sync as the two roles of the protocol: [`TimeMaster`] probes the followers and corrects
//! those outside the tolerance; [`TimeFollower`] answers probes with its cluster time and applies
//! corrections from the node it considers time master.
//!
//! Cluster time is the local wall clock plus [`TimeFollower::correction_us`]. A follower's clock
//! is *confirmed* by the first correction it applies (0 confirms it as it is). Corrections are
//! idempotent by `(master, term, probe number)` (a set of the recent ones) and clamped to the
//! node's maximum step except the first one of the process, which may be up to
//! [`MAX_ADJUST_US`].
//!
//! Both roles are plain data plus pure decisions; [`super::ClusterNode`] decides which role is
//! active (the elected time master probes) and supplies time and the current term.

use std::collections::BTreeMap;

use crate::cluster::timesync::{Estimator, Packet, Sample, MAX_ADJUST_US};

/// The master's side: one probe counter and a sample window per follower.
#[derive(Debug, Default)]
pub(super) struct TimeMaster {
    probe_seq: u32,
    estimators: BTreeMap<u16, Estimator>,
}

impl TimeMaster {
    /// The probes of one round, to every id in `followers`, stamped with cluster time `t1`.
    pub(super) fn poll_probes(
        &mut self,
        me: u16,
        term: u64,
        t1: i64,
        followers: impl Iterator<Item = u16>,
    ) -> Vec<(u16, Packet)> {
        self.probe_seq = self.probe_seq.wrapping_add(1);
        let seq = self.probe_seq;
        followers
            .map(|id| {
                (
                    id,
                    Packet::Probe {
                        term,
                        from: me,
                        seq,
                        t1,
                    },
                )
            })
            .collect()
    }

    /// Forgets a follower's samples (it restarted: they describe the old process's clock).
    pub(super) fn forget(&mut self, id: u16) {
        self.estimators.remove(&id);
    }

    /// A follower's `REPLY` to probe `seq`, received at cluster time `t4`. Returns the
    /// `CORRECT` to send, if one is due.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_reply(
        &mut self,
        me: u16,
        term: u64,
        from: u16,
        (seq, t1, t2, t3, t4): (u32, i64, i64, i64, i64),
        tolerance_us: i64,
    ) -> Option<(u16, Packet)> {
        let sample = Sample::from_times(t1, t2, t3, t4)?;
        let adjust_us = self.estimators.entry(from).or_default().add(
            seq,
            sample,
            tolerance_us,
            self.probe_seq,
        )?;
        Some((
            from,
            Packet::Correct {
                term,
                from: me,
                seq,
                adjust_us,
            },
        ))
    }
}

/// Corrections remembered to apply each once.
const RECENT: usize = 64;

/// The follower's side: the correction and whether the clock is confirmed.
#[derive(Debug, Default)]
pub(super) struct TimeFollower {
    correction_us: i64,
    /// The last corrections applied, (master, term, probe number), oldest first: a repeat of
    /// any of them is ignored. A set rather than "the highest seen" so that one forged packet
    /// with a huge number cannot make the real master's later corrections look old.
    recent: std::collections::VecDeque<(u16, u64, u32)>,
    /// A correction was applied by this process already: the next ones are bounded per step.
    corrected_once: bool,
    confirmed: bool,
}

/// What a `CORRECT` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Corrected {
    /// Refused: not from the time master, an old term, a repeat, or out of bounds.
    Ignored,
    /// Applied (`adjust_us` may be 0, which confirms the clock as it is).
    Applied {
        /// The adjustment, µs.
        adjust_us: i64,
    },
}

impl TimeFollower {
    /// Cluster time = local wall clock + this, µs.
    pub(super) fn correction_us(&self) -> i64 {
        self.correction_us
    }

    /// Whether a time master confirmed this clock.
    pub(super) fn confirmed(&self) -> bool {
        self.confirmed
    }

    /// Confirms the clock without a master (this node is the reference).
    pub(super) fn confirm(&mut self) {
        self.confirmed = true;
    }

    /// A `PROBE`: the `REPLY`, stamped with cluster time `now_us` (receive and send times are
    /// the same instant for a sans-IO node).
    pub(super) fn handle_probe(
        me: u16,
        now_us: i64,
        (term, from, seq, t1): (u64, u16, u32, i64),
    ) -> (u16, Packet) {
        (
            from,
            Packet::Reply {
                term,
                from: me,
                seq,
                t1,
                t2: now_us,
                t3: now_us,
            },
        )
    }

    /// A `CORRECT` from `from` at `term`, given who this node considers time master, the
    /// newest term it has seen, and the largest step allowed after the first correction of this
    /// process (`max_step_us`; the first may be up to [`MAX_ADJUST_US`], so that a node started
    /// hours off can still be corrected and become ready).
    pub(super) fn handle_correct(
        &mut self,
        (me, time_master, current_term, max_step_us): (u16, u16, u64, u64),
        (term, from, seq, adjust_us): (u64, u16, u32, i64),
    ) -> Corrected {
        //= docs/protocols/time-sync.md#fencing
        //# A follower applies `CORRECT` only from the node it considers time master, at a
        //# term no older than the newest it has seen.
        if from != time_master || term < current_term || from == me {
            return Corrected::Ignored;
        }
        // Each correction once: a duplicated datagram must not apply it twice.
        if self.recent.contains(&(from, term, seq)) {
            return Corrected::Ignored;
        }
        let bound = if self.corrected_once {
            max_step_us
        } else {
            MAX_ADJUST_US.unsigned_abs()
        };
        if adjust_us.unsigned_abs() > MAX_ADJUST_US.unsigned_abs() {
            return Corrected::Ignored;
        }
        // Clamped rather than refused: a follower far off converges step by step, and one
        // wrong packet moves the clock by at most one step.
        let bound = i64::try_from(bound).unwrap_or(i64::MAX);
        let adjust_us = adjust_us.clamp(-bound, bound);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((from, term, seq));
        self.corrected_once = true;
        self.correction_us = self.correction_us.saturating_add(adjust_us);
        self.confirmed = true;
        Corrected::Applied { adjust_us }
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_applies_each_correction_once_and_only_from_the_master() {
        let mut f = TimeFollower::default();
        let ctx = (2, 1, 5, 1_000_000);
        assert_eq!(f.handle_correct(ctx, (5, 3, 1, 10)), Corrected::Ignored);
        assert_eq!(f.handle_correct(ctx, (4, 1, 1, 10)), Corrected::Ignored);
        assert!(!f.confirmed());
        assert_eq!(
            f.handle_correct(ctx, (5, 1, 1, 10)),
            Corrected::Applied { adjust_us: 10 }
        );
        assert_eq!(f.handle_correct(ctx, (5, 1, 1, 10)), Corrected::Ignored);
        assert_eq!(
            f.handle_correct(ctx, (5, 1, 2, MAX_ADJUST_US + 1)),
            Corrected::Ignored
        );
        assert_eq!(f.correction_us(), 10);
        assert!(f.confirmed());
    }

    #[test]
    fn only_the_first_correction_may_be_large_and_a_huge_seq_blocks_nothing() {
        let mut f = TimeFollower::default();
        let ctx = (2, 1, 5, 1_000_000);
        // A node started an hour off: the first correction is applied whole.
        assert_eq!(
            f.handle_correct(ctx, (5, 1, 1, -3_600_000_000)),
            Corrected::Applied {
                adjust_us: -3_600_000_000
            }
        );
        // Later ones are bounded per step (a forged +1 h moves the clock by one step) ...
        assert_eq!(
            f.handle_correct(ctx, (5, 1, u32::MAX, 3_600_000_000)),
            Corrected::Applied {
                adjust_us: 1_000_000
            }
        );
        assert_eq!(
            f.handle_correct(ctx, (5, 1, u32::MAX - 1, -1_000_000)),
            Corrected::Applied {
                adjust_us: -1_000_000
            }
        );
        // ... and a correction with a huge number does not make the next ones look like
        // repeats.
        assert_eq!(
            f.handle_correct(ctx, (5, 1, 2, 100)),
            Corrected::Applied { adjust_us: 100 }
        );
        assert_eq!(f.handle_correct(ctx, (5, 1, 2, 100)), Corrected::Ignored);
        assert_eq!(f.correction_us(), -3_600_000_000 + 100);
    }

    #[test]
    fn master_corrects_a_follower_that_is_far_off() {
        let mut m = TimeMaster::default();
        let probes = m.poll_probes(1, 3, 1_000, [2u16, 3].into_iter());
        assert_eq!(probes.len(), 2);
        let (to, reply) = TimeFollower::handle_probe(2, 1_000 + 5_000_000, (3, 1, 1, 1_000));
        assert_eq!(to, 1);
        let Packet::Reply {
            seq, t1, t2, t3, ..
        } = reply
        else {
            panic!("{reply:?}")
        };
        let correct = m.handle_reply(1, 3, 2, (seq, t1, t2, t3, 1_200), 2_000);
        match correct {
            Some((2, Packet::Correct { adjust_us, .. })) => {
                assert!((adjust_us + 5_000_000).abs() < 1_000, "{adjust_us}");
            }
            other => panic!("{other:?}"),
        }
    }
}
