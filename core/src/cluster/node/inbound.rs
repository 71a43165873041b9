//! The inbound side of replication: a peer's link to this node ([`InLink`]), which applies the
//! peer's updates and snapshots to the store and acknowledges them.
//!
//! The link remembers the peer's incarnation and the highest update number applied from it; a
//! `HELLO` from the same incarnation after a complete snapshot resumes right after that number,
//! anything else starts over with a snapshot (resume point 0). Every received record is joined
//! into the store ([`crate::store::Pinned::merge`]), so duplicates and reordering are harmless.

use crate::cluster::repl::Msg;
use crate::model::{Record, Sid};

use super::Ctx;

/// Most replication lag samples kept between two reads.
const MAX_LAG_SAMPLES: usize = 4096;

/// A peer's connection to me. See the module docs.
#[derive(Debug, Default)]
pub(super) struct InLink {
    incarnation: u64,
    /// Highest update number of that incarnation applied here.
    applied: u64,
    snapshot_upto: Option<u64>,
    snapshot_records: u64,
    snapshot_done: bool,
    connected: bool,
    /// When this peer last sent updates or snapshot records (monotonic µs).
    last_update_us: u64,
}

/// Joins `records` into the store; returns how many changed something.
pub(super) fn merge_records(records: &[(Sid, Record)], ctx: &Ctx<'_>) -> u64 {
    let pinned = ctx.store.pin();
    let mut changed = 0;
    for (sid, r) in records {
        ctx.hlc.observe(r.ident().stamp);
        if pinned.merge(*sid, r) {
            changed += 1;
        }
    }
    changed
}

impl InLink {
    /// The peer (incarnation `incarnation`) said `HELLO`. Returns the resume point to welcome it
    /// with (0: send a full snapshot).
    pub(super) fn handle_hello(&mut self, incarnation: u64) -> u64 {
        let resume_from = if self.incarnation == incarnation && self.snapshot_done {
            self.applied + 1
        } else {
            *self = Self {
                incarnation,
                ..Self::default()
            };
            0
        };
        self.connected = true;
        self.snapshot_upto = None;
        resume_from
    }

    /// The incarnation of the peer last welcomed (0: none yet).
    pub(super) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The connection closed.
    pub(super) fn handle_closed(&mut self) {
        self.connected = false;
        self.snapshot_upto = None;
    }

    /// Whether a full snapshot of the peer's current incarnation was received.
    pub(super) fn snapshot_done(&self) -> bool {
        self.snapshot_done
    }

    /// When the peer last sent data (monotonic µs).
    pub(super) fn last_update_us(&self) -> u64 {
        self.last_update_us
    }

    /// A batch of the peer's updates. Merges them, records a lag sample per record (cluster
    /// time of apply minus the record's stamp) and returns the `ACK` to send and how many
    /// records changed something.
    pub(super) fn handle_updates(
        &mut self,
        now_us: u64,
        cluster_us: i64,
        upto_seq: u64,
        records: &[(Sid, Record)],
        ctx: &Ctx<'_>,
        lag_samples: &mut Vec<u64>,
    ) -> (Msg, u64) {
        self.last_update_us = now_us;
        let merged = merge_records(records, ctx);
        for (_, r) in records {
            let lag = cluster_us / 1000 - r.ident().stamp.physical_ms() as i64;
            if lag_samples.len() < MAX_LAG_SAMPLES {
                lag_samples.push((lag.max(0) as u64) * 1000);
            }
        }
        self.applied = self.applied.max(upto_seq);
        (Msg::Ack(self.applied), merged)
    }

    /// `SNAPSHOT_BEGIN`: a full snapshot covering the peer's updates up to `upto_seq` follows.
    pub(super) fn handle_snapshot_begin(&mut self, upto_seq: u64) {
        self.snapshot_upto = Some(upto_seq);
        self.snapshot_records = 0;
    }

    /// A chunk of the snapshot.
    pub(super) fn handle_snapshot(
        &mut self,
        now_us: u64,
        records: &[(Sid, Record)],
        ctx: &Ctx<'_>,
    ) {
        self.last_update_us = now_us;
        merge_records(records, ctx);
        self.snapshot_records += records.len() as u64;
    }

    /// `SNAPSHOT_END`. Returns the `ACK` to send and the records received, or `None` if no
    /// snapshot was in progress (a stray or replayed end changes nothing).
    pub(super) fn handle_snapshot_end(&mut self) -> Option<(Msg, u64)> {
        let upto = self.snapshot_upto.take()?;
        self.applied = upto;
        self.snapshot_done = true;
        Some((Msg::Ack(upto), self.snapshot_records))
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::hlc::{Hlc, Stamp};
    use crate::model::{Change, ClientType, Update};
    use crate::store::Store;

    fn record(ms: u64) -> (Sid, Record) {
        let update = Update {
            uid: 1,
            pool: 1,
            change: Change::Login(ClientType::Pc),
            ext: None,
        };
        (
            Sid::new(7).unwrap(),
            Record::from_update(Stamp::new(ms << 16, 2), &update),
        )
    }

    #[test]
    fn resume_only_after_a_complete_snapshot_of_the_same_incarnation() {
        let store = Store::default();
        let hlc = Hlc::new(1);
        let ctx = Ctx {
            store: &store,
            hlc: &hlc,
        };
        let mut link = InLink::default();
        assert_eq!(link.handle_hello(5), 0);
        link.handle_snapshot_begin(10);
        link.handle_snapshot(1, &[record(1)], &ctx);
        // Cut before the end: still no resume point.
        link.handle_closed();
        assert_eq!(link.handle_hello(5), 0);
        link.handle_snapshot_begin(10);
        link.handle_snapshot(2, &[record(1)], &ctx);
        assert_eq!(link.handle_snapshot_end(), Some((Msg::Ack(10), 1)));
        assert_eq!(
            link.handle_snapshot_end(),
            None,
            "a replayed end is ignored"
        );
        let mut lag = Vec::new();
        let (ack, merged) = link.handle_updates(3, 5_000, 12, &[record(2)], &ctx, &mut lag);
        assert_eq!((ack, merged), (Msg::Ack(12), 1));
        assert_eq!(lag, vec![3_000]);
        link.handle_closed();
        assert_eq!(link.handle_hello(5), 13);
        // A new incarnation of the peer starts over.
        assert_eq!(link.handle_hello(6), 0);
        assert!(!link.snapshot_done());
    }
}
