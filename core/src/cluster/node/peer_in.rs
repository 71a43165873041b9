//! What [`ClusterNode`] does with a message on a peer's connection to it (after `HELLO`):
//! updates and snapshots go to the `inbound` link (digest-checked), heartbeats to `membership`
//! (with the membership decisions they carry), digests to `anti_entropy`, buckets are joined,
//! and remote updates merged here are forwarded to a peer that joins from this node's snapshot.

use crate::cluster::repl::{self, Msg};
use crate::model::Sid;
use crate::proto::ErrorCode;

use super::inbound::{merge_records, InLink};
use super::{relay, ClusterNode, Ctx, Dir, Event, Now, Verdict};

impl ClusterNode {
    /// A message arrived on `peer`'s connection to me (after its `HELLO`). Returns what to do
    /// with the connection (it is refused when a snapshot does not match its digest).
    pub fn handle_in_msg(&mut self, now: Now, peer: u16, msg: Msg, ctx: &Ctx<'_>) -> Verdict {
        self.observe(now);
        self.heard(peer, now);
        let cluster_us = self.cluster_us(now);
        let forwarding = self
            .links
            .iter()
            .any(|(id, l)| *id != peer && l.out.as_ref().is_some_and(|o| o.forwards(now.mono_us)));
        let mut changed = Vec::new();
        let master = self.membership.master();
        let (joined, roles_known) = (self.joined, self.roles_known);
        let Some(links) = self.links.get_mut(&peer) else {
            return Verdict::Continue;
        };
        let link = &mut links.inbound;
        if !joined && roles_known && peer == master && link.streams_from_now() {
            // Joining from the data master needs its snapshot: drop the link it streams on
            // without one (and what this link knew); it reconnects and gets a snapshot request.
            *link = InLink::default();
            return Verdict::Close {
                reason: format!("asking the data master (node {peer}) for a snapshot"),
            };
        }
        let records = match &msg {
            Msg::Updates { records, .. } | Msg::Snapshot(records) | Msg::Bucket { records, .. } => {
                Some(records.as_slice())
            }
            _ => None,
        };
        if let Some(ahead_ms) = records.and_then(|r| self.too_far_ahead(now, r)) {
            // Not merged and not acknowledged: the sender reconnects and sends it again, and it
            // is taken once the clocks agree (or never, if it was forged).
            return Verdict::Refuse {
                code: ErrorCode::Protocol,
                message: format!(
                    "a record is stamped {ahead_ms} ms ahead of this node's cluster time \
                     (more than max-clock-drift-ms)"
                ),
            };
        }
        let Some(links) = self.links.get_mut(&peer) else {
            return Verdict::Continue;
        };
        let link = &mut links.inbound;
        let mut verdict = Verdict::Continue;
        // Snapshot records are merged and reported (`take_merged`) but never forwarded.
        let snapshot = matches!(msg, Msg::Snapshot(_));
        match msg {
            Msg::Updates { upto_seq, records } => {
                let (ack, merged) = link.handle_updates(
                    (now.mono_us, cluster_us),
                    upto_seq,
                    &records,
                    ctx,
                    &mut self.lag_samples,
                    Some(&mut changed),
                );
                self.stats.merged += merged;
                self.relay
                    .record(peer, now.mono_us, records.iter().map(|(sid, _)| *sid));
                self.out.push_back((peer, Dir::In, ack));
                repl::recycle(records);
            }
            Msg::SnapshotBegin { upto_seq } => link.handle_snapshot_begin(now.mono_us, upto_seq),
            Msg::Snapshot(records) => {
                link.handle_snapshot(now.mono_us, &records, ctx, &mut changed);
                repl::recycle(records);
            }
            Msg::SnapshotEnd { records, digest } => match link.handle_snapshot_end(records, digest)
            {
                Ok(Some((ack, records))) => {
                    self.events.push_back(Event::SnapshotReceived {
                        from: peer,
                        records,
                        micros: now.mono_us.saturating_sub(link.snapshot_began_us()),
                    });
                    self.out.push_back((peer, Dir::In, ack));
                }
                Ok(None) => {}
                Err(m) => {
                    verdict = Verdict::Refuse {
                        code: ErrorCode::Protocol,
                        message: format!(
                            "snapshot does not match its digest at the cut: sent {} records \
                             (digest {:016x}), received {} ({:016x}); send a new one",
                            m.sent.0, m.sent.1, m.received.0, m.received.1
                        ),
                    };
                }
            },
            Msg::Heartbeat {
                term,
                ready,
                records,
                digest,
                members,
                removals,
            } => {
                let ceiling_us = self.decision_ceiling_us(now);
                for d in removals {
                    if d.stamp > ceiling_us {
                        self.stats.rejected_stamps += 1;
                        continue;
                    }
                    self.take_decision(d);
                }
                if self.membership.is_removed(peer) {
                    return Verdict::Continue;
                }
                self.observe_term_bounded(term);
                let joined = self.membership.handle_heartbeat(
                    (peer, now.mono_us),
                    ready,
                    records,
                    digest,
                    members,
                );
                for info in joined {
                    self.links.entry(info.id).or_default();
                    self.events.push_back(Event::MemberJoined(info));
                }
                self.update_roles();
            }
            Msg::Digests(theirs) => {
                let quiet_since = self.last_traffic_us.max(link.last_update_us());
                // A peer still catching up (not ready) holds a part of what this node sends it:
                // repairing from it would ship its partial buckets back for nothing, doubling
                // the work of a join. Its differences are looked at once it is ready.
                let quiet = now.mono_us.saturating_sub(quiet_since) >= self.timing.sync_interval_us
                    && self.membership.is_ready(peer);
                let mine = if quiet {
                    ctx.store.bucket_digests()
                } else {
                    Vec::new()
                };
                if let Some(ask) = links.anti_entropy.handle_digests(quiet, &mine, &theirs) {
                    self.out.push_back((peer, Dir::In, Msg::BucketRequest(ask)));
                }
            }
            Msg::Bucket { records, .. } => {
                let count = merge_records(&records, ctx, Some(&mut changed));
                repl::recycle(records);
                if count > 0 {
                    self.stats.digest_repairs += count;
                    self.events.push_back(Event::Repaired {
                        from: peer,
                        changed: count,
                    });
                }
            }
            Msg::Goodbye => {
                if self.membership.goodbye(peer) {
                    self.events.push_back(Event::MemberDown(peer));
                }
                self.update_roles();
            }
            _ => {}
        }
        if forwarding && !changed.is_empty() && !snapshot {
            self.forward(now, peer, &changed);
        }
        self.note_merged(changed);
        self.update_ready(now);
        verdict
    }

    /// Forwards remote updates merged here to the peers that take a snapshot from this node
    /// (or just took one), except the one they came from.
    pub(super) fn forward(&mut self, now: Now, from: u16, changed: &[Sid]) {
        let buckets = relay::group_by_bucket(changed.iter().copied());
        for (id, l) in &mut self.links {
            if *id == from {
                continue;
            }
            if let Some(o) = l.out.as_mut().filter(|o| o.forwards(now.mono_us)) {
                o.queue_relay(&buckets);
            }
        }
    }
}
