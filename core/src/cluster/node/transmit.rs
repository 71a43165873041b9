//! [`ClusterNode`]'s outputs: replication frames (updates, snapshots, buckets, `GOODBYE` when
//! draining), time-sync datagrams, events and the next timer.
//!
//! `poll_transmit` serves the links in id order and asks each [`super::outbound::OutLink`] for
//! its next frame; a link reads at most one frame's worth of records per call. Congested links
//! (the driver's buffer is full) are skipped until the driver says otherwise.

use crate::cluster::repl::Msg;
use crate::cluster::timesync::Packet;

use super::outbound::{LinkPoll, OutLink};
use super::{ClusterNode, Ctx, Dir, Event, Now};

impl ClusterNode {
    /// The next replication message to send: `(peer, connection, message)`.
    pub fn poll_transmit(&mut self, now: Now, ctx: &Ctx<'_>) -> Option<(u16, Dir, Msg)> {
        if let Some(m) = self.out.pop_front() {
            return Some(m);
        }
        let flush_due = self.leaving
            || self
                .oldest_unflushed_us
                .is_some_and(|t| now.mono_us.saturating_sub(t) >= self.timing.flush_us);
        // A peer that joined from this node's snapshot gets remote updates forwarded for a while
        // after it (see `OutLink::forwards`).
        let forward_us = self.timing.down_after_us.saturating_mul(2);
        for (id, l) in &mut self.links {
            if self.membership.get(*id).is_none_or(|p| p.congested) {
                continue;
            }
            let Some(link) = l.out.as_mut() else { continue };
            loop {
                let poll = link.poll_transmit(
                    ctx.store,
                    &self.backlog,
                    (flush_due, now.mono_us, forward_us),
                    &mut self.link_out,
                );
                match poll {
                    LinkPoll::Waiting if self.oldest_unflushed_us.is_none() => {
                        // Updates waiting for this link (after a resume, say) start the timer.
                        self.oldest_unflushed_us = Some(now.mono_us);
                    }
                    LinkPoll::FullResync => {
                        l.stream_from = None;
                        self.stats.full_resyncs += 1;
                        self.events.push_back(Event::FullResync(*id));
                    }
                    _ => {}
                }
                if !self.link_out.is_empty() {
                    self.out
                        .extend(self.link_out.drain(..).map(|m| (*id, Dir::Out, m)));
                    return self.out.pop_front();
                }
                if poll != LinkPoll::Sent {
                    break;
                }
            }
        }
        // Everything pending is sent (or waiting for acks): the flush timer restarts.
        let all_sent = self.links.iter().all(|(id, l)| {
            self.membership.get(*id).is_none_or(|p| p.congested)
                || l.out.as_ref().is_none_or(|o| o.caught_up(&self.backlog))
        });
        if all_sent {
            self.oldest_unflushed_us = None;
            // Draining: everything is sent, so `GOODBYE` goes out as the last frame.
            if self.leaving && !self.goodbye_sent {
                self.goodbye_sent = true;
                self.send_on_established(|_, _| true, &Msg::Goodbye);
                return self.out.pop_front();
            }
        }
        None
    }

    /// The next time-sync datagram: `(peer, packet)`.
    pub fn poll_datagram(&mut self) -> Option<(u16, Packet)> {
        self.dgrams.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` (or `poll_transmit`, for batched updates) is due, monotonic µs.
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self.next_heartbeat_us.min(self.next_sync_us);
        if let Some(o) = self.oldest_unflushed_us {
            t = t.min(o + self.timing.flush_us);
        }
        t
    }

    /// Marks the outbound connection to `peer` as congested (the driver's buffer is full) or
    /// not; `poll_transmit` generates no updates, snapshot or bucket frames for a congested peer.
    pub fn set_congested(&mut self, peer: u16, congested: bool) {
        if let Some(p) = self.membership.get_mut(peer) {
            p.congested = congested;
        }
    }

    /// Queues `msg` on every outbound link that was welcomed and passes `filter`.
    pub(super) fn send_on_established(
        &mut self,
        filter: impl Fn(u16, &OutLink) -> bool,
        msg: &Msg,
    ) {
        for (id, l) in &self.links {
            if let Some(o) = l.out.as_ref() {
                if o.is_established() && filter(*id, o) {
                    self.out.push_back((*id, Dir::Out, msg.clone()));
                }
            }
        }
    }
}
