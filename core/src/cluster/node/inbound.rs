//! The inbound side of replication: a peer's link to this node ([`InLink`]), which applies the
//! peer's updates and snapshots to the store and acknowledges them.
//!
//! The link remembers the peer's incarnation and the highest update number applied from it; a
//! `HELLO` from the same incarnation after a complete snapshot resumes right after that number,
//! anything else starts over with a snapshot (resume point 0). Every received record is joined
//! into the store ([`crate::store::Pinned::merge`]), so duplicates and reordering are harmless.

use crate::cluster::repl::{Msg, RESUME_NOW};
use crate::model::{Record, Sid};
use crate::store::{bucket_of, Pinned};
use crate::sync::Mutex;

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
    /// The sum of the digests of the snapshot records received so far.
    snapshot_digest: u64,
    /// When `SNAPSHOT_BEGIN` arrived (monotonic µs).
    snapshot_began_us: u64,
    snapshot_done: bool,
    /// This link streams from when it was welcomed, without a snapshot from this peer (the
    /// node joined from its data master's).
    from_now: bool,
    connected: bool,
    /// When this peer last sent updates or snapshot records (monotonic µs).
    last_update_us: u64,
}

/// Batches of at least this many records are merged by the [`Ctx::appliers`] in parallel.
const PARALLEL_MIN: usize = 1024;

/// Joins `records` into the store; returns how many changed something, and appends their sids
/// to `changed` when given. A large batch is split among the appliers by digest bucket (see
/// [`super::Appliers`]); either way every record is merged when this returns.
pub(super) fn merge_records(
    records: &[(Sid, Record)],
    ctx: &Ctx<'_>,
    changed: Option<&mut Vec<Sid>>,
) -> u64 {
    let parts = ctx.appliers.map_or(1, |a| a.width().clamp(1, 64));
    let Some(appliers) = ctx
        .appliers
        .filter(|_| parts > 1 && records.len() >= PARALLEL_MIN)
    else {
        return merge_part(records.iter(), ctx, changed);
    };
    let want_changed = changed.is_some();
    let results: Vec<Mutex<(u64, Vec<Sid>)>> =
        (0..parts).map(|_| Mutex::new((0, Vec::new()))).collect();
    appliers.run(parts, &|part| {
        let mine = records
            .iter()
            .filter(|(sid, _)| bucket_of(*sid) % parts == part);
        let mut sids = Vec::new();
        let count = merge_part(mine, ctx, want_changed.then_some(&mut sids));
        if let Some(slot) = results.get(part) {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = (count, sids);
        }
    });
    let mut count = 0;
    let mut changed = changed;
    for r in results {
        let (n, sids) = r
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        count += n;
        if let Some(c) = changed.as_deref_mut() {
            c.extend(sids);
        }
    }
    count
}

/// Merges `records` on this thread, loading them [`Pinned::PREFETCH`] at a time.
fn merge_part<'r>(
    records: impl Iterator<Item = &'r (Sid, Record)> + Clone,
    ctx: &Ctx<'_>,
    mut changed: Option<&mut Vec<Sid>>,
) -> u64 {
    let pinned = ctx.store.pin();
    let mut count = 0;
    let mut ahead = [Sid::MIN; Pinned::PREFETCH];
    let mut rest = records;
    loop {
        let mut n = 0;
        for (a, (sid, _)) in ahead.iter_mut().zip(rest.clone()) {
            *a = *sid;
            n += 1;
        }
        if n == 0 {
            return count;
        }
        pinned.prefetch(ahead.get(..n).unwrap_or_default());
        for (sid, r) in rest.by_ref().take(n) {
            ctx.hlc.observe(r.ident().stamp);
            if pinned.merge(*sid, r) {
                count += 1;
                if let Some(c) = changed.as_deref_mut() {
                    c.push(*sid);
                }
            }
        }
    }
}

/// Why a snapshot was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct SnapshotMismatch {
    pub(super) sent: (u64, u64),
    pub(super) received: (u64, u64),
}

impl InLink {
    /// The peer (incarnation `incarnation`) said `HELLO`. Returns the resume point to welcome it
    /// with (0: send a full snapshot).
    /// With `from_now`, a peer that cannot resume is told to stream from now on
    /// ([`RESUME_NOW`]) instead of sending a full snapshot.
    pub(super) fn handle_hello(&mut self, incarnation: u64, from_now: bool) -> u64 {
        let resume_from = if self.incarnation == incarnation && self.snapshot_done {
            self.applied + 1
        } else if from_now {
            *self = Self {
                incarnation,
                snapshot_done: true,
                from_now: true,
                ..Self::default()
            };
            RESUME_NOW
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

    /// Whether a full snapshot of the peer's current incarnation was received (and checked).
    pub(super) fn snapshot_done(&self) -> bool {
        self.snapshot_done && !self.from_now
    }

    /// Whether this link streams without a snapshot from the peer ([`RESUME_NOW`]).
    pub(super) fn streams_from_now(&self) -> bool {
        self.from_now && self.snapshot_upto.is_none()
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
        (now_us, cluster_us): (u64, i64),
        upto_seq: u64,
        records: &[(Sid, Record)],
        ctx: &Ctx<'_>,
        lag_samples: &mut Vec<u64>,
        changed: Option<&mut Vec<Sid>>,
    ) -> (Msg, u64) {
        self.last_update_us = now_us;
        let merged = merge_records(records, ctx, changed);
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
    pub(super) fn handle_snapshot_begin(&mut self, now_us: u64, upto_seq: u64) {
        self.snapshot_upto = Some(upto_seq);
        self.snapshot_began_us = now_us;
        self.snapshot_records = 0;
        self.snapshot_digest = 0;
    }

    /// A chunk of the snapshot.
    pub(super) fn handle_snapshot(
        &mut self,
        now_us: u64,
        records: &[(Sid, Record)],
        ctx: &Ctx<'_>,
        changed: &mut Vec<Sid>,
    ) {
        self.last_update_us = now_us;
        merge_records(records, ctx, Some(changed));
        self.snapshot_records += records.len() as u64;
        self.snapshot_digest = self
            .snapshot_digest
            .wrapping_add(super::outbound::digest_of(records));
    }

    /// When the snapshot in progress (or the last one) began (monotonic µs).
    pub(super) fn snapshot_began_us(&self) -> u64 {
        self.snapshot_began_us
    }

    /// `SNAPSHOT_END` with the sender's count and digest at its cut. Returns the `ACK` to send
    /// and the records received, or `None` if no snapshot was in progress (a stray or replayed
    /// end changes nothing), or the mismatch if what arrived is not what was sent (the snapshot
    /// does not count; the link must be dropped so that the peer sends a new one).
    pub(super) fn handle_snapshot_end(
        &mut self,
        records: u64,
        digest: u64,
    ) -> Result<Option<(Msg, u64)>, SnapshotMismatch> {
        let Some(upto) = self.snapshot_upto.take() else {
            return Ok(None);
        };
        let received = (self.snapshot_records, self.snapshot_digest);
        if received != (records, digest) {
            return Err(SnapshotMismatch {
                sent: (records, digest),
                received,
            });
        }
        self.applied = upto;
        self.snapshot_done = true;
        self.from_now = false;
        Ok(Some((Msg::Ack(upto), self.snapshot_records)))
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
            appliers: None,
        };
        let mut link = InLink::default();
        assert_eq!(link.handle_hello(5, false), 0);
        link.handle_snapshot_begin(0, 10);
        link.handle_snapshot(1, &[record(1)], &ctx, &mut Vec::new());
        // Cut before the end: still no resume point.
        link.handle_closed();
        assert_eq!(link.handle_hello(5, false), 0);
        link.handle_snapshot_begin(7, 10);
        // The second snapshot's start is what its transfer-and-apply time counts from.
        assert_eq!(link.snapshot_began_us(), 7);
        link.handle_snapshot(2, &[record(1)], &ctx, &mut Vec::new());
        let d = super::super::outbound::digest_of(&[record(1)]);
        assert_eq!(link.handle_snapshot_end(1, d), Ok(Some((Msg::Ack(10), 1))));
        assert_eq!(
            link.handle_snapshot_end(1, d),
            Ok(None),
            "a replayed end is ignored"
        );
        let mut lag = Vec::new();
        let (ack, merged) = link.handle_updates((3, 5_000), 12, &[record(2)], &ctx, &mut lag, None);
        assert_eq!((ack, merged), (Msg::Ack(12), 1));
        assert_eq!(lag, vec![3_000]);
        link.handle_closed();
        assert_eq!(link.handle_hello(5, false), 13);
        // A new incarnation of the peer starts over.
        assert_eq!(link.handle_hello(6, false), 0);
        assert!(!link.snapshot_done());
        // A joining node streams from a non-master peer without its snapshot.
        assert_eq!(link.handle_hello(7, true), RESUME_NOW);
        assert!(!link.snapshot_done(), "streaming only is not a snapshot");
    }

    #[test]
    fn a_snapshot_that_does_not_match_its_digest_at_the_cut_does_not_count() {
        let store = Store::default();
        let hlc = Hlc::new(1);
        let ctx = Ctx {
            store: &store,
            hlc: &hlc,
            appliers: None,
        };
        let mut link = InLink::default();
        link.handle_hello(5, false);
        link.handle_snapshot_begin(0, 3);
        link.handle_snapshot(1, &[record(1)], &ctx, &mut Vec::new());
        // The sender says it sent two records (one got lost on the way, say).
        let d = super::super::outbound::digest_of(&[record(1), record(2)]);
        assert!(link.handle_snapshot_end(2, d).is_err());
        assert!(!link.snapshot_done());
    }

    /// Runs every part on its own scoped thread.
    #[derive(Debug)]
    struct Threads(usize);

    impl crate::cluster::node::Appliers for Threads {
        fn width(&self) -> usize {
            self.0
        }
        fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                for p in 0..parts {
                    s.spawn(move || job(p));
                }
            });
        }
    }

    /// A large batch merged by parallel appliers leaves the store, the count and the changed
    /// sids exactly as one thread does.
    #[test]
    fn parallel_apply_merges_like_one_thread() {
        let update = |c| Update {
            uid: 1,
            pool: 1,
            change: Change::Login(c),
            ext: None,
        };
        let batch: Vec<(Sid, Record)> = (1..=5_000u64)
            .map(|i| {
                let c = ClientType::from_code((i % 6) as u8).unwrap();
                let r = Record::from_update(Stamp::new((i % 50) << 16, 2), &update(c));
                (Sid::new(i % 3_000 + 1).unwrap(), r)
            })
            .collect();
        let hlc = Hlc::new(1);
        let run = |appliers: Option<&dyn crate::cluster::node::Appliers>| {
            let store = Store::default();
            let ctx = Ctx {
                store: &store,
                hlc: &hlc,
                appliers,
            };
            let mut changed = Vec::new();
            let count = merge_records(&batch, &ctx, Some(&mut changed));
            changed.sort();
            (count, changed, store.digest(), store.len())
        };
        let one = run(None);
        for width in [2, 3, 8] {
            assert_eq!(run(Some(&Threads(width))), one, "width {width}");
        }
        assert_eq!(one.3, 3_000);
    }
}
