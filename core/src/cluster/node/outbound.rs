//! The outbound side of replication: this node's numbered updates ([`Backlog`]) and, per peer,
//! the link this node dialed ([`OutLink`]) that carries them.
//!
//! A link starts waiting for `WELCOME`. The peer's resume point either lies in the backlog (the
//! link resumes there and streams) or not (a full snapshot follows, then streaming from the
//! update number the snapshot covers). Streaming sends the records of the updates `next..` in
//! batches of at most [`MAX_RECORDS`] records and [`FRAME_BUDGET`] bytes, once [`EAGER_BATCH`]
//! are pending or the flush timer fired, with at most [`WINDOW`] updates unacknowledged.
//! Buckets asked for by the peer's anti-entropy are served before anything else.
//!
//! Every store walk here is a resumable [`Cursor`] advanced by at most one frame's worth of
//! records per call, so a snapshot of any size or a large bucket never blocks the event loop.

use std::collections::{BTreeSet, VecDeque};

use crate::cluster::repl::{Msg, MAX_RECORDS, RESUME_NOW};
use crate::model::{Record, Sid};
use crate::store::{record_digest, Cursor, Pinned, Store};

/// Encoded bytes of records per frame beyond which no record is added (far below
/// [`crate::cluster::repl::MAX_FRAME`] whatever the extension limits).
pub(super) const FRAME_BUDGET: usize = 4 << 20;
/// Most of my updates sent to a peer and not acked.
pub(super) const WINDOW: u64 = 1 << 18;
/// Updates that make a batch worth sending without waiting for the flush timer.
pub(super) const EAGER_BATCH: u64 = 1024;

/// An upper bound of a record's encoded size (with its sid).
fn len_hint(r: &Record) -> usize {
    let ext = r.ext().map_or(0, |e| {
        11 + e
            .value
            .entries()
            .map(|(k, v)| 3 + k.len() + v.len())
            .sum::<usize>()
    });
    8 + 22 + 1 + 12 * r.clients().count() + 12 + 1 + ext
}

/// Reads the next frame's worth of records at `cursor`: at most [`MAX_RECORDS`] records, and
/// none once [`FRAME_BUDGET`] bytes are reached.
fn next_chunk(store: &Store, cursor: &mut Cursor) -> Vec<(Sid, Record)> {
    let pinned = store.pin();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    pinned.scan(cursor, MAX_RECORDS, |sid, r| {
        bytes += len_hint(r);
        chunk.push((sid, r.clone()));
        bytes < FRAME_BUDGET
    });
    chunk
}

/// The digest contribution of records as sent (a wrapping sum: order-independent).
pub(super) fn digest_of(records: &[(Sid, Record)]) -> u64 {
    records
        .iter()
        .fold(0u64, |d, (sid, r)| d.wrapping_add(record_digest(*sid, r)))
}

/// This node's update numbers: `base..next` map to the sids they changed.
#[derive(Debug)]
pub(super) struct Backlog {
    /// INVARIANT: `sids[i]` is the sid of update number `base + i`, and
    /// `base + sids.len() == next`.
    sids: VecDeque<Sid>,
    base: u64,
    next: u64,
    cap: usize,
}

impl Backlog {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            sids: VecDeque::new(),
            base: 1,
            next: 1,
            cap: cap.max(1),
        }
    }

    pub(super) fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    /// Numbers the changes of `sids` in order; forgets the oldest beyond the cap.
    pub(super) fn push(&mut self, sids: &[Sid]) {
        self.sids.extend(sids.iter().copied());
        self.next += sids.len() as u64;
        while self.sids.len() > self.cap {
            self.sids.pop_front();
            self.base += 1;
        }
    }

    /// The number the next update gets.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// The oldest number still held.
    pub(super) fn base(&self) -> u64 {
        self.base
    }

    pub(super) fn len(&self) -> usize {
        self.sids.len()
    }

    /// The sids of the numbers `from..from + n` (clipped to what is held).
    fn range(&self, from: u64, n: u64) -> impl Iterator<Item = &Sid> + Clone {
        let start = from.saturating_sub(self.base) as usize;
        let end = (start + n as usize).min(self.sids.len());
        self.sids.range(start.min(end)..end)
    }
}

#[derive(Debug)]
enum OutState {
    AwaitWelcome,
    Snapshot {
        cursor: Cursor,
        /// The last update number the snapshot covers.
        upto: u64,
        /// Records sent so far, and the sum of their digests.
        sent: u64,
        digest: u64,
    },
    Streaming,
}

/// How a `WELCOME` was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Welcome {
    /// The peer resumes from the backlog.
    Resumed,
    /// The peer gets a full snapshot (`SNAPSHOT_BEGIN` is queued).
    Snapshot,
    /// The peer takes no snapshot from this node (it joins from its data master's): streaming
    /// starts at this node's next update number.
    FromNow,
}

/// What one call of [`OutLink::poll_transmit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkPoll {
    /// Nothing to send now.
    Idle,
    /// Updates are pending but wait for a fuller batch or the flush timer.
    Waiting,
    /// Frames were queued.
    Sent,
    /// The peer fell behind the backlog: a full snapshot started (`SNAPSHOT_BEGIN` queued).
    FullResync,
}

/// My connection to one peer. See the module docs.
#[derive(Debug)]
pub(super) struct OutLink {
    state: OutState,
    /// Next update number to send.
    next: u64,
    /// Highest update number acked.
    acked: u64,
    /// Buckets the peer asked for, with the position reached and whether a frame went out.
    buckets: VecDeque<(u16, Cursor, bool)>,
    /// Records to push to the peer on behalf of a lost origin, by bucket.
    relay: VecDeque<(u16, Vec<Sid>)>,
    /// While a snapshot is sent, and until this time (monotonic µs) after it ended, remote
    /// updates merged here are forwarded to the peer too: the snapshot's cursor may have passed
    /// them, and the peer streams their origin only from when it welcomed it.
    forward_until: Option<u64>,
}

impl OutLink {
    /// A link that just sent `HELLO`.
    pub(super) fn new() -> Self {
        Self {
            state: OutState::AwaitWelcome,
            next: 0,
            acked: 0,
            buckets: VecDeque::new(),
            relay: VecDeque::new(),
            forward_until: None,
        }
    }

    /// Whether remote updates merged at `now_us` are forwarded to the peer.
    pub(super) fn forwards(&self, now_us: u64) -> bool {
        self.forward_until.is_some_and(|t| now_us <= t)
    }

    /// Queues the records of these sids (by bucket) to be pushed to the peer as repairs.
    pub(super) fn queue_relay(&mut self, buckets: &std::collections::BTreeMap<u16, Vec<Sid>>) {
        for (b, sids) in buckets {
            for chunk in sids.chunks(MAX_RECORDS) {
                self.relay.push_back((*b, chunk.to_vec()));
            }
        }
    }

    /// Whether the peer welcomed this link.
    pub(super) fn is_established(&self) -> bool {
        !matches!(self.state, OutState::AwaitWelcome)
    }

    /// Whether updates flow (no snapshot in progress).
    pub(super) fn is_streaming(&self) -> bool {
        matches!(self.state, OutState::Streaming)
    }

    /// The highest update number the peer acknowledged.
    pub(super) fn acked(&self) -> u64 {
        self.acked
    }

    /// Whether everything up to `backlog.next()` was sent.
    pub(super) fn caught_up(&self, backlog: &Backlog) -> bool {
        self.next >= backlog.next()
    }

    /// The peer's `WELCOME` with its resume point (0: none). Queues `SNAPSHOT_BEGIN` into `out`
    /// when a snapshot is needed.
    pub(super) fn handle_welcome(
        &mut self,
        resume_from: u64,
        backlog: &Backlog,
        out: &mut VecDeque<Msg>,
    ) -> Welcome {
        if resume_from == RESUME_NOW {
            self.state = OutState::Streaming;
            self.next = backlog.next();
            self.acked = self.next - 1;
            return Welcome::FromNow;
        }
        if resume_from != 0 && resume_from >= backlog.base() && resume_from <= backlog.next() {
            self.state = OutState::Streaming;
            self.next = resume_from;
            self.acked = resume_from - 1;
            Welcome::Resumed
        } else {
            self.start_snapshot(backlog, out);
            self.acked = 0;
            Welcome::Snapshot
        }
    }

    /// The peer acknowledged everything up to `seq`.
    pub(super) fn handle_ack(&mut self, seq: u64, backlog: &Backlog) {
        self.acked = self.acked.max(seq.min(backlog.next() - 1));
    }

    /// The peer's anti-entropy asks for these buckets (served in ascending order, once each).
    pub(super) fn handle_bucket_request(&mut self, buckets: Vec<u16>) {
        let wanted: BTreeSet<u16> = buckets.into_iter().collect();
        for b in wanted {
            self.buckets.push_back((b, Cursor::bucket(b), false));
        }
    }

    fn start_snapshot(&mut self, backlog: &Backlog, out: &mut VecDeque<Msg>) {
        let upto = backlog.next() - 1;
        self.state = OutState::Snapshot {
            cursor: Cursor::all(),
            upto,
            sent: 0,
            digest: 0,
        };
        self.forward_until = Some(u64::MAX);
        self.next = backlog.next();
        out.push_back(Msg::SnapshotBegin { upto_seq: upto });
    }

    /// Queues into `out` the next frame(s) this link should send: a bucket chunk, a snapshot
    /// chunk (and `SNAPSHOT_END` after the last), or a batch of updates. Reads at most one
    /// frame's worth of records from the store.
    pub(super) fn poll_transmit(
        &mut self,
        store: &Store,
        backlog: &Backlog,
        (flush_due, now_us, forward_us): (bool, u64, u64),
        out: &mut VecDeque<Msg>,
    ) -> LinkPoll {
        if let Some((bucket, mut cursor, sent)) = self.buckets.pop_front() {
            let records = next_chunk(store, &mut cursor);
            if !cursor.is_done() {
                self.buckets.push_front((bucket, cursor, true));
            }
            if !records.is_empty() || !sent {
                out.push_back(Msg::Bucket { bucket, records });
            }
            return LinkPoll::Sent;
        }
        if self.is_established() {
            if let Some((bucket, sids)) = self.relay.pop_front() {
                let pinned = store.pin();
                let mut records = Vec::with_capacity(sids.len());
                let mut bytes = 0;
                let mut rest = Vec::new();
                for sid in sids {
                    if bytes >= FRAME_BUDGET {
                        rest.push(sid);
                    } else if let Some(r) = pinned.record(sid) {
                        bytes += len_hint(&r);
                        records.push((sid, r));
                    }
                }
                if !rest.is_empty() {
                    self.relay.push_front((bucket, rest));
                }
                out.push_back(Msg::Bucket { bucket, records });
                return LinkPoll::Sent;
            }
        }
        match &mut self.state {
            OutState::AwaitWelcome => LinkPoll::Idle,
            OutState::Snapshot {
                cursor,
                upto,
                sent,
                digest,
            } => {
                let chunk = next_chunk(store, cursor);
                *sent += chunk.len() as u64;
                *digest = digest.wrapping_add(digest_of(&chunk));
                if !chunk.is_empty() {
                    out.push_back(Msg::Snapshot(chunk));
                }
                if cursor.is_done() {
                    let (upto, records, digest) = (*upto, *sent, *digest);
                    self.state = OutState::Streaming;
                    self.next = upto + 1;
                    self.forward_until = Some(now_us.saturating_add(forward_us));
                    out.push_back(Msg::SnapshotEnd { records, digest });
                }
                LinkPoll::Sent
            }
            OutState::Streaming => {
                if self.next < backlog.base() {
                    self.start_snapshot(backlog, out);
                    return LinkPoll::FullResync;
                }
                let pending = backlog.next() - self.next;
                let in_flight = self.next.saturating_sub(self.acked + 1);
                if pending == 0 || in_flight >= WINDOW {
                    return LinkPoll::Idle;
                }
                if pending < EAGER_BATCH && !flush_due {
                    return LinkPoll::Waiting;
                }
                let n = pending.min(MAX_RECORDS as u64);
                let pinned = store.pin();
                let mut seen = BTreeSet::new();
                let mut records = Vec::new();
                let mut bytes = 0;
                let mut taken = 0;
                let mut upcoming = backlog.range(self.next, n);
                let mut ahead = [Sid::MIN; Pinned::PREFETCH];
                let mut fetched = 0;
                while let Some(sid) = upcoming.next() {
                    if fetched == 0 {
                        // The next records to read, loaded together (see `Pinned::prefetch`).
                        let mut k = 0;
                        for (a, s) in ahead
                            .iter_mut()
                            .zip(std::iter::once(sid).chain(upcoming.clone()))
                        {
                            *a = *s;
                            k += 1;
                        }
                        pinned.prefetch(ahead.get(..k).unwrap_or_default());
                        fetched = k;
                    }
                    fetched -= 1;
                    taken += 1;
                    if seen.insert(*sid) {
                        if let Some(r) = pinned.record(*sid) {
                            bytes += len_hint(&r);
                            records.push((*sid, r));
                        }
                    }
                    if bytes >= FRAME_BUDGET {
                        break;
                    }
                }
                self.next += taken;
                out.push_back(Msg::Updates {
                    upto_seq: self.next - 1,
                    records,
                });
                LinkPoll::Sent
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::hlc::Stamp;
    use crate::model::{Change, ClientType, Update};

    fn store_with(n: u64) -> Store {
        let store = Store::with_capacity(n as usize);
        for i in 1..=n {
            let pinned = store.pin();
            let update = Update {
                uid: i,
                pool: 1,
                change: Change::Login(ClientType::Pc),
                ext: None,
            };
            pinned.apply(Sid::new(i).unwrap(), Stamp::new(1_000 << 16, 1), &update);
        }
        store
    }

    fn sids(n: u64) -> Vec<Sid> {
        (1..=n).map(|i| Sid::new(i).unwrap()).collect()
    }

    #[test]
    fn resume_inside_the_backlog_streams_from_there() {
        let store = store_with(10);
        let mut backlog = Backlog::new(100);
        backlog.push(&sids(10));
        let mut out = VecDeque::new();
        let mut link = OutLink::new();
        assert_eq!(link.handle_welcome(4, &backlog, &mut out), Welcome::Resumed);
        assert!(out.is_empty());
        assert_eq!(link.acked(), 3);
        assert_eq!(
            link.poll_transmit(&store, &backlog, (false, 0, 0), &mut out),
            LinkPoll::Waiting
        );
        assert_eq!(
            link.poll_transmit(&store, &backlog, (true, 0, 0), &mut out),
            LinkPoll::Sent
        );
        match out.pop_front() {
            Some(Msg::Updates { upto_seq, records }) => {
                assert_eq!(upto_seq, 10);
                assert_eq!(records.len(), 7);
            }
            other => panic!("{other:?}"),
        }
        assert!(link.caught_up(&backlog));
        link.handle_ack(99, &backlog);
        assert_eq!(link.acked(), 10, "acks are clipped to what was numbered");
    }

    #[test]
    fn resume_point_outside_the_backlog_gets_a_snapshot_then_streams() {
        let store = store_with(3);
        let mut backlog = Backlog::new(2);
        backlog.push(&sids(3));
        assert_eq!(backlog.base(), 2);
        let mut out = VecDeque::new();
        let mut link = OutLink::new();
        assert_eq!(
            link.handle_welcome(1, &backlog, &mut out),
            Welcome::Snapshot
        );
        assert_eq!(out.pop_front(), Some(Msg::SnapshotBegin { upto_seq: 3 }));
        while !link.is_streaming() {
            link.poll_transmit(&store, &backlog, (false, 0, 0), &mut out);
        }
        let mut records = 0;
        let mut end = None;
        for m in out.drain(..) {
            match m {
                Msg::Snapshot(r) => records += r.len() as u64,
                Msg::SnapshotEnd { records, .. } => end = Some(records),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((records, end), (3, Some(3)));
        assert!(link.caught_up(&backlog));
    }

    #[test]
    fn a_link_behind_the_backlog_restarts_with_a_snapshot() {
        let store = store_with(4);
        let mut backlog = Backlog::new(2);
        backlog.push(&sids(1));
        let mut out = VecDeque::new();
        let mut link = OutLink::new();
        assert_eq!(link.handle_welcome(1, &backlog, &mut out), Welcome::Resumed);
        backlog.push(&sids(4)[1..]);
        assert_eq!(
            link.poll_transmit(&store, &backlog, (true, 0, 0), &mut out),
            LinkPoll::FullResync
        );
        assert_eq!(out.pop_front(), Some(Msg::SnapshotBegin { upto_seq: 4 }));
    }

    #[test]
    fn every_requested_bucket_is_answered_even_when_empty() {
        let store = store_with(0);
        let backlog = Backlog::new(8);
        let mut out = VecDeque::new();
        let mut link = OutLink::new();
        link.handle_bucket_request(vec![9, 3, 9]);
        while link.poll_transmit(&store, &backlog, (false, 0, 0), &mut out) == LinkPoll::Sent {}
        let buckets: Vec<u16> = out
            .iter()
            .map(|m| match m {
                Msg::Bucket { bucket, records } => {
                    assert!(records.is_empty());
                    *bucket
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(buckets, vec![3, 9]);
    }

    #[test]
    fn window_holds_sending_until_acks_arrive() {
        let store = store_with(1);
        let mut backlog = Backlog::new(usize::MAX);
        let mut out = VecDeque::new();
        let mut link = OutLink::new();
        link.handle_welcome(1, &backlog, &mut out);
        let one = sids(1);
        for _ in 0..WINDOW + 10 {
            backlog.push(&one);
        }
        while link.poll_transmit(&store, &backlog, (true, 0, 0), &mut out) == LinkPoll::Sent {}
        assert!(!link.caught_up(&backlog));
        link.handle_ack(WINDOW, &backlog);
        while link.poll_transmit(&store, &backlog, (true, 0, 0), &mut out) == LinkPoll::Sent {}
        assert!(link.caught_up(&backlog));
    }
}
