//! What [`ClusterNode`] refuses from a peer whatever the cluster secret (a buggy or compromised
//! member, a bad clock, or, without a secret, anyone who can reach the ports): the bounds of
//! `docs/protocols/replication.md#bounds` and `time-sync.md#bounds`.
//!
//! - **Stamps**: a record (or a membership decision) stamped further ahead of this node's
//!   cluster time than `max_drift_us` is refused, counted, and the frame that carried it is not
//!   acknowledged (the link is refused, the sender reconnects and retries, so nothing is lost
//!   once the clocks agree). So one forged record cannot push every node's HLC to the end of
//!   time. A node whose clock is not confirmed yet (just started, not serving) cannot judge
//!   and refuses nothing.
//! - **Terms**: a term more than [`MAX_TERM_JUMP`] above this node's raises it by that much only
//!   (a node far behind catches up in steps, one per heartbeat; a forged term of 2^64 − 1 moves
//!   it by one step), and no term above [`TERM_CEILING`] is ever adopted, so a term never wraps
//!   and never leaps.
//! - **Datagrams**: a time-sync datagram is taken only from a member's current incarnation (the
//!   one its replication `HELLO` announced) and each counter once, in increasing order.
//!
//! Every refusal is counted in [`super::Stats`]; the driver logs rate-limited.

use crate::cluster::timesync::{Envelope, Packet};
use crate::model::{Record, Sid};

use super::clock::{Corrected, TimeFollower};
use super::{ClusterNode, Event, Now};

/// Most a term seen on the wire may raise this node's term in one step.
pub const MAX_TERM_JUMP: u64 = 1024;
/// No term above this is ever adopted (so `term + 1` can never wrap).
pub const TERM_CEILING: u64 = u64::MAX >> 1;

impl ClusterNode {
    /// Whether a time master confirmed this node's clock (the stamp bound applies from then on).
    pub fn clock_confirmed(&self) -> bool {
        self.clock.confirmed()
    }

    /// The latest HLC value a remote record may carry at `now`: [`Self::decision_ceiling_us`]
    /// as a stamp (`u64::MAX` while this node's clock is not confirmed).
    pub fn stamp_ceiling_at(&self, now: Now) -> u64 {
        match self.decision_ceiling_us(now) {
            u64::MAX => u64::MAX,
            us => ((us / 1000).min((1 << 48) - 1) << 16) | 0xFFFF,
        }
    }

    /// The first record of `records` stamped beyond [`Self::stamp_ceiling_at`], counted, as the
    /// distance in ms, if any.
    ///
    /// A node whose clock no time master has confirmed yet cannot judge (it may be hours
    /// off, and it serves nothing before confirmation): it refuses nothing.
    pub(super) fn too_far_ahead(&mut self, now: Now, records: &[(Sid, Record)]) -> Option<u64> {
        if !self.clock.confirmed() {
            return None;
        }
        let ceiling = self.stamp_ceiling_at(now);
        let worst = records.iter().map(|(_, r)| r.ident().stamp.hlc()).max()?;
        if worst <= ceiling {
            return None;
        }
        self.stats.rejected_stamps += 1;
        let cluster_ms = (self.cluster_us(now).max(0) as u64) / 1000;
        Some((worst >> 16).saturating_sub(cluster_ms))
    }

    /// The latest cluster time (µs) a remote stamp or membership decision may carry now: cluster
    /// time plus the maximum drift (`u64::MAX` while this node's clock is not confirmed).
    pub(super) fn decision_ceiling_us(&self, now: Now) -> u64 {
        if !self.clock.confirmed() {
            return u64::MAX;
        }
        self.cluster_us(now)
            .saturating_add(i64::try_from(self.timing.max_drift_us).unwrap_or(i64::MAX))
            .max(0) as u64
    }

    /// A term seen on the wire, within the bounds: a leap is clamped to one step (and
    /// counted). Returns whether the term was taken as it is.
    pub(super) fn observe_term_bounded(&mut self, term: u64) -> bool {
        let mine = self.membership.term();
        let step = mine.saturating_add(MAX_TERM_JUMP).min(TERM_CEILING);
        if term <= step {
            self.membership.observe_term(term);
            true
        } else {
            self.stats.rejected_terms += 1;
            self.membership.observe_term(step);
            false
        }
    }

    /// A time-sync datagram arrived (its tag, if the cluster has a secret, was checked by the
    /// driver).
    pub fn handle_datagram(&mut self, now: Now, p: Packet, env: Envelope) {
        self.observe(now);
        let from = match p {
            Packet::Probe { from, .. }
            | Packet::Reply { from, .. }
            | Packet::Correct { from, .. } => from,
        };
        if !self.fresh_datagram(from, env) {
            self.stats.rejected_datagrams += 1;
            return;
        }
        let cluster_us = self.cluster_us(now);
        match p {
            Packet::Probe {
                term,
                from,
                seq,
                t1,
            } => {
                if !self.observe_term_bounded(term) {
                    return;
                }
                self.dgrams.push_back(TimeFollower::handle_probe(
                    self.me.id,
                    cluster_us,
                    (term, from, seq, t1),
                ));
            }
            Packet::Reply {
                from,
                seq,
                t1,
                t2,
                t3,
                ..
            } => {
                if self.membership.master() != self.me.id || self.membership.get(from).is_none() {
                    return;
                }
                let tolerance = self.timing.tolerance_us as i64;
                if let Some(c) = self.time_master.handle_reply(
                    self.me.id,
                    self.membership.term(),
                    from,
                    (seq, t1, t2, t3, cluster_us),
                    tolerance,
                ) {
                    self.dgrams.push_back(c);
                }
            }
            Packet::Correct {
                term,
                from,
                seq,
                adjust_us,
            } => {
                let ctx = (
                    self.me.id,
                    self.membership.master(),
                    self.membership.term(),
                    self.timing.max_drift_us,
                );
                let Corrected::Applied { adjust_us } =
                    self.clock.handle_correct(ctx, (term, from, seq, adjust_us))
                else {
                    return;
                };
                if adjust_us != 0 {
                    self.events.push_back(Event::ClockCorrected {
                        adjust_us,
                        correction_us: self.clock.correction_us(),
                    });
                }
                self.update_ready(now);
            }
        }
    }

    /// Whether a datagram from `from` comes from that member's current incarnation with a
    /// counter not seen before (and records it).
    fn fresh_datagram(&mut self, from: u16, env: Envelope) -> bool {
        if from == self.me.id || self.membership.get(from).is_none() {
            return false;
        }
        let Some(links) = self.links.get(&from) else {
            return false;
        };
        let incarnation = links.inbound.incarnation();
        if incarnation == 0 || env.incarnation != incarnation {
            return false;
        }
        let last = self.datagram_counters.entry(from).or_insert((0, 0));
        if last.0 != incarnation {
            *last = (incarnation, 0);
        }
        if env.counter <= last.1 {
            return false;
        }
        last.1 = env.counter;
        true
    }
}
