//! Membership changes made by an operator (remove a node for good, re-admit it) or learned
//! from peers (the decisions gossiped in heartbeats), and the seeded mode of a node whose file
//! names only itself and seeds. The decisions themselves live in `membership` (latest stamp
//! wins); this module turns them into forgotten links and events.

use crate::cluster::repl::Removal;

use super::{ClusterNode, Event, MemberError, Now};

impl ClusterNode {
    /// Removes node `id` from the cluster for good: it is forgotten here at once, the decision
    /// reaches every node with the heartbeats, and a `HELLO` from it is refused everywhere until
    /// [`ClusterNode::handle_readmit`].
    pub fn handle_remove(&mut self, now: Now, id: u16) -> Result<(), MemberError> {
        self.observe(now);
        if id == self.me.id {
            return Err(MemberError::ItsMe(id));
        }
        if self.membership.get(id).is_none() && !self.membership.is_removed(id) {
            return Err(MemberError::Unknown(id));
        }
        let stamp = self.decision_stamp(now, id);
        self.take_decision(Removal {
            id,
            stamp,
            removed: true,
        });
        Ok(())
    }

    /// Re-admits node `id` after a removal: it may join again (its `HELLO` is accepted).
    pub fn handle_readmit(&mut self, now: Now, id: u16) -> Result<(), MemberError> {
        self.observe(now);
        if id == self.me.id {
            return Err(MemberError::ItsMe(id));
        }
        if !self.membership.is_removed(id) {
            return if self.membership.get(id).is_some() {
                Ok(())
            } else {
                Err(MemberError::Unknown(id))
            };
        }
        let stamp = self.decision_stamp(now, id);
        self.take_decision(Removal {
            id,
            stamp,
            removed: false,
        });
        Ok(())
    }

    /// Whether the cluster file names no other node but seeds to learn the cluster from: such a
    /// node is never "alone" and does not start a cluster of its own.
    pub fn set_seeded(&mut self, seeded: bool) {
        self.seeded = seeded;
    }

    pub(super) fn decision_stamp(&self, now: Now, id: u16) -> u64 {
        (self.cluster_us(now).max(0) as u64).max(self.membership.decision_stamp(id) + 1)
    }

    pub(super) fn take_decision(&mut self, d: Removal) {
        if self.membership.decide(d) {
            // What only the removed node sent here goes on to the others first.
            self.relay_from(d.id);
            self.links.remove(&d.id);
            self.events.push_back(Event::MemberRemoved(d.id));
            self.update_roles();
        }
    }
}
