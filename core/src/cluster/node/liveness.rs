//! Liveness, roles and readiness of [`ClusterNode`]: noticing that this node stalled, hearing
//! from peers, admitting new ones, relaying a lost origin's updates, electing masters, and
//! deciding when this node is ready (roles known, joined, clock confirmed, not draining).

use crate::cluster::repl::NodeInfo;

use super::membership::Roles;
use super::{ClusterNode, Event, Now, Timing};

impl ClusterNode {
    /// Notes that this node runs at `now`. A gap longer than `stall_us` since the previous
    /// input means it did not run: every peer's timer ran meanwhile, so each alive peer gets a
    /// fresh `down_after` period before it can be called down, instead of being declared down
    /// from frames this node simply did not read yet.
    pub(super) fn observe(&mut self, now: Now) {
        let gap = now.mono_us.saturating_sub(self.last_input_us);
        self.last_input_us = self.last_input_us.max(now.mono_us);
        if gap > self.stall_us {
            self.membership.refresh_alive(now.mono_us);
            self.stats.stalls += 1;
            self.events.push_back(Event::Stalled { gap_us: gap });
        }
    }

    /// Sends what `origin` sent here recently to every other peer (see [`super::relay`]).
    pub(super) fn relay_from(&mut self, origin: u16) {
        let buckets = self.relay.take(origin);
        if buckets.is_empty() {
            return;
        }
        let sids: u64 = buckets.values().map(|v| v.len() as u64).sum();
        for (id, l) in &mut self.links {
            if *id == origin {
                continue;
            }
            if let Some(o) = l.out.as_mut() {
                o.queue_relay(&buckets);
                self.stats.relayed += sids;
            }
        }
    }

    pub(super) fn admit(&mut self, info: NodeInfo, now: Now) {
        if self.membership.admit(info, now.mono_us) {
            self.links.entry(info.id).or_default();
            self.events.push_back(Event::MemberJoined(info));
        }
    }

    pub(super) fn heard(&mut self, peer: u16, now: Now) {
        if self.membership.heard(peer, now.mono_us) {
            self.events.push_back(Event::MemberUp(peer));
            self.update_roles();
        }
    }

    pub(super) fn update_roles(&mut self) {
        if let Some(Roles { term, master }) = self.membership.elect(self.ready) {
            self.stats.elections += 1;
            self.events.push_back(Event::RoleChange {
                term,
                time_master: master,
                data_master: master,
            });
        }
    }

    pub(super) fn update_ready(&mut self, now: Now) {
        let grace_over = now.mono_us.saturating_sub(self.started_us) >= self.timing.down_after_us;
        let alone = self.membership.is_empty() && !self.seeded;
        // A seeded node that has not met anyone yet waits for its seeds, whatever the time: it
        // counts as introduced only once a member's heartbeat told it who is ready.
        let introduced =
            !self.membership.is_empty() && (!self.seeded || self.membership.any_heartbeat_seen());
        if !self.roles_known
            && (alone || (introduced && (grace_over || self.membership.all_heard())))
        {
            self.roles_known = true;
        }
        let ready_peer = self.membership.any_ready_alive();
        let master = self.membership.master();
        if !self.joined {
            // The master counts only once roles are known (its readiness was heard).
            let from_master = self.roles_known
                && self
                    .links
                    .get(&master)
                    .is_some_and(|l| l.inbound.snapshot_done());
            // A node joins by taking a snapshot from the data master; the first nodes of a
            // cluster (nobody ready after the grace period), and a node alone in its file, start
            // from an empty store.
            if from_master || (introduced && grace_over && !ready_peer) || alone {
                self.joined = true;
            }
        }
        // The time master is the reference, but only once it is sure nobody else is: a node
        // that restarts into a running cluster must be confirmed by that cluster's master.
        if self.roles_known
            && master == self.me.id
            && (alone || (introduced && grace_over && !ready_peer))
        {
            self.clock.confirm();
        }
        let ready = self.roles_known
            && self.joined
            && self.clock.confirmed()
            && !self.draining
            && !self.removed;
        if ready != self.ready {
            self.ready = ready;
            self.events.push_back(Event::Ready(ready));
            self.update_roles();
        }
    }
}

/// The gap between two inputs that counts as a stall: shorter than any gap that could make a
/// live peer look down (a peer heard a heartbeat ago is down after `down_after - heartbeat`).
///
/// The node gets an input at least every heartbeat, so a gap below two heartbeats is normal;
/// `heartbeat-ms` × 3 < `down-after-ms` (checked by the config) leaves room for both.
pub(super) fn stall_after(t: &Timing) -> u64 {
    (t.down_after_us / 2)
        .max(t.heartbeat_us.saturating_mul(2))
        .min(t.down_after_us.saturating_sub(t.heartbeat_us))
        .max(1)
}
