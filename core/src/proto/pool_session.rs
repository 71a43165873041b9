//! The server side of one pool connection, as a sans-IO state machine.
//!
//! ```text
//!            HELLO ok                 EVENTS (seq increasing) -> ACK
//! AwaitHello ─────────► Open ◄──────────────────────────────┐
//!     │                  │ └────────────────────────────────┘
//!     │ anything else    │ bad frame, bad token, seq going back
//!     ▼                  ▼
//!   Closed ◄─────────── Closed   (an ERROR frame is queued before closing)
//! ```
//!
//! Method taxonomy: [`PoolSession::handle_input`] is the only input; its output is the bytes it
//! appends to `out` (frames to send) and the [`Outcome`]. The driver writes `out` to the socket,
//! drops the consumed bytes, and calls again when more arrive or when the previous call stopped at
//! its frame budget (`Outcome::more`). After an `Err`, the driver flushes `out` and closes.
//!
//! Every applied event is stamped by the node's [`Hlc`] with the `now_ms` the driver passes in.
//! Acks are cumulative and sent only after every event up to the acked number is in the store.
//!
//! `SNAPSHOT_END` sweeps the store for users the snapshot did not list. The sweep is incremental:
//! each call walks at most [`SWEEP_PER_CALL`] records through a resumable
//! [`crate::store::Cursor`]; while it runs, the rest of its `EVENTS` frame is parked in the
//! session, later frames wait, and the frame's `ACK` goes out once the sweep and the parked
//! events are done (`Outcome::more` asks the driver to call again), so acks stay in order and no
//! event after the `SNAPSHOT_END` is applied before the sweep.
//!
//! What outlives a connection (stream high-water marks, snapshots in progress) is in
//! [`Streams`] (the `streams` submodule), shared by every session of the node. Limits come from
//! the constructor ([`PoolLimits`]) and [`PoolSession::with_max_snapshot`].

use std::collections::HashSet;

use crate::hlc::{Hlc, Stamp};
use crate::model::{Change, Sid, Update};
use crate::proto::pool::{ClientFrame, Event, Hello, PoolLimits, ServerFrame, VERSION};
use crate::proto::ErrorCode;
use crate::store::{Cursor, Pinned};
use crate::wire::{split_frame, DecodeError};

mod streams;

pub use streams::Streams;

/// Default most users a full snapshot may list (each costs a set entry until `SnapshotEnd`);
/// [`PoolSession::with_max_snapshot`] sets the one in force (`<limits max-snapshot-users>`).
pub const DEFAULT_MAX_SNAPSHOT: usize = 50_000_000;

/// Most records one [`PoolSession::handle_input`] call walks while sweeping after a
/// `SNAPSHOT_END` (bounds the work of one event whatever the store's size).
pub const SWEEP_PER_CALL: usize = 4096;

/// Why a pool connection is being closed. An `ERROR` frame saying so has been queued. The store
/// holds every event acked before it; events of the failing frame that precede the failure may be
/// applied but are not acked, so the client re-sends them (harmless: they are joins).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The bytes did not decode.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// The token did not match the configured one.
    #[error("bad token")]
    Auth,
    /// A valid frame that is not allowed now.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
}

impl SessionError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Decode(DecodeError::BadVersion(_)) => ErrorCode::Version,
            Self::Decode(DecodeError::TooLarge { .. }) => ErrorCode::TooLarge,
            Self::Decode(_) => ErrorCode::Malformed,
            Self::Auth => ErrorCode::Auth,
            Self::Protocol(_) => ErrorCode::Protocol,
        }
    }
}

/// Everything a session needs from its node for one call.
#[derive(Debug)]
pub struct PoolCtx<'a> {
    /// The store, pinned by the driver for this batch of work.
    pub store: &'a Pinned<'a>,
    /// The node's clock.
    pub hlc: &'a Hlc,
    /// Stream high-water marks.
    pub streams: &'a Streams,
    /// Cluster time now, in ms since the Unix epoch.
    pub now_ms: u64,
    /// The configured pool token, if any.
    pub token: Option<&'a [u8]>,
    /// Users whose records this call changed are appended here (for replication).
    pub changed: &'a mut Vec<Sid>,
}

/// What one [`PoolSession::handle_input`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes of input consumed (whole frames only).
    pub consumed: usize,
    /// Events applied (duplicates skipped are not counted).
    pub events: u64,
    /// Events skipped because the stream had already applied their sequence number (re-sent
    /// after a reconnect): what `presenced_pool_duplicates_total` counts.
    pub duplicates: u64,
    /// Work is left (whole frames beyond the frame budget, or a snapshot sweep in progress):
    /// call again, even without new input.
    pub more: bool,
}

#[derive(Debug)]
enum State {
    AwaitHello,
    Open {
        pool: u32,
        stream: u64,
        last_seq: u64,
    },
}

/// One pool connection's protocol state.
#[derive(Debug)]
pub struct PoolSession {
    state: State,
    limits: PoolLimits,
    max_snapshot: usize,
    /// Whether this session's stream has a snapshot in progress (a cache of `Streams`, so that
    /// the snapshot lock is only taken while one is).
    snapshot_open: bool,
    /// An `EVENTS` frame whose processing waits for a snapshot sweep.
    parked: Option<Job>,
    /// The replies written since the last [`PoolSession::take_replies`]: where each ends in
    /// `out`, and what it promises.
    replies: Vec<(usize, Reply)>,
}

/// What a reply frame promises, so that the driver's ack gate knows what it must wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `ACK` or `WELCOME`: events are durable here (`applied` in a `WELCOME` covers events of
    /// earlier connections too). Under the `replica` policy it may leave only once every update
    /// this node applied so far has reached a peer.
    Durable,
    /// `PONG` or `ERROR`: promises nothing about data; it only keeps its place in the order.
    Plain,
}

/// The events of one `EVENTS` frame being applied.
#[derive(Debug)]
struct Job {
    pool: u32,
    stream: u64,
    events: Vec<Event>,
    /// Next event to handle, and its sequence number.
    idx: usize,
    seq: u64,
    /// The stream's mark when the frame arrived: events up to it are duplicates.
    applied: u64,
    /// The frame's last sequence number (what the `ACK` says).
    last: u64,
    /// Stamps reserved for the fresh events from `idx` on: the first, and how many are used.
    block: Option<(Stamp, u64)>,
    /// A sweep in progress: the sids the snapshot listed, and where the walk is.
    sweep: Option<(HashSet<u64>, Cursor)>,
    /// Events applied and skipped so far.
    applied_count: u64,
    skipped: u64,
}

impl PoolSession {
    /// A session waiting for `HELLO`.
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            state: State::AwaitHello,
            limits,
            max_snapshot: DEFAULT_MAX_SNAPSHOT,
            snapshot_open: false,
            parked: None,
            replies: Vec::new(),
        }
    }

    /// Sets the most distinct users one snapshot may list (default [`DEFAULT_MAX_SNAPSHOT`];
    /// `<limits max-snapshot-users>`). A snapshot that lists more closes the session.
    pub fn with_max_snapshot(mut self, n: usize) -> Self {
        self.max_snapshot = n;
        self
    }

    /// Whether the handshake is still to come (no `HELLO` accepted yet): the driver refuses
    /// throttled addresses only then.
    pub fn awaiting_hello(&self) -> bool {
        matches!(self.state, State::AwaitHello)
    }

    /// Handles at most `max_frames` whole frames from the front of `input`.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        max_frames: usize,
        ctx: &mut PoolCtx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<Outcome, SessionError> {
        let mut o = Outcome::default();
        let mut budget = SWEEP_PER_CALL;
        if let Some(mut job) = self.parked.take() {
            if !self.run(&mut job, &mut budget, ctx, out)? {
                self.parked = Some(job);
                o.more = true;
                return Ok(o);
            }
            o.events += job.applied_count;
            o.duplicates += job.skipped;
        }
        let mut frames = 0;
        loop {
            let rest = input.get(o.consumed..).unwrap_or_default();
            let split = match split_frame(rest, self.limits.max_frame) {
                Ok(s) => s,
                Err(e) => return Err(self.fail(e.into(), out)),
            };
            let Some((ty, body, n)) = split else { break };
            if frames == max_frames {
                o.more = true;
                break;
            }
            frames += 1;
            let frame = match ClientFrame::decode(ty, body, &self.limits) {
                Ok(f) => f,
                Err(e) => return Err(self.fail(e.into(), out)),
            };
            match self.handle_frame(frame, &mut budget, ctx, out) {
                Ok((events, duplicates)) => {
                    o.events += events;
                    o.duplicates += duplicates;
                }
                Err(e) => return Err(self.fail(e, out)),
            }
            o.consumed += n;
            if self.parked.is_some() {
                o.more = true;
                break;
            }
        }
        Ok(o)
    }

    /// The replies written since the last call, in order: `(end offset in out, kind)`. A reply
    /// starts where the previous one ended (the first where `out` stood before the call).
    pub fn take_replies(&mut self) -> std::vec::Drain<'_, (usize, Reply)> {
        self.replies.drain(..)
    }

    fn fail(&mut self, e: SessionError, out: &mut Vec<u8>) -> SessionError {
        ServerFrame::Error {
            code: e.code() as u8,
            message: e.to_string(),
        }
        .encode(out);
        self.replies.push((out.len(), Reply::Plain));
        e
    }

    /// Handles one decoded frame: `(events applied, events skipped as duplicates)`.
    fn handle_frame(
        &mut self,
        frame: ClientFrame,
        budget: &mut usize,
        ctx: &mut PoolCtx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(u64, u64), SessionError> {
        match (&mut self.state, frame) {
            (
                State::AwaitHello,
                ClientFrame::Hello(Hello {
                    pool,
                    stream,
                    token,
                    ..
                }),
            ) => {
                if let Some(expected) = ctx.token {
                    if !constant_time_eq(expected, &token) {
                        return Err(SessionError::Auth);
                    }
                }
                let applied = ctx.streams.applied(pool, stream);
                self.snapshot_open = ctx.streams.snapshot_open(pool, stream);
                self.state = State::Open {
                    pool,
                    stream,
                    last_seq: 0,
                };
                ServerFrame::Welcome {
                    version: VERSION,
                    node: ctx.hlc.node(),
                    applied,
                }
                .encode(out);
                self.replies.push((out.len(), Reply::Durable));
                Ok((0, 0))
            }
            (State::AwaitHello, _) => Err(SessionError::Protocol("expected HELLO")),
            (State::Open { .. }, ClientFrame::Hello(_)) => {
                Err(SessionError::Protocol("HELLO sent twice"))
            }
            (State::Open { .. }, ClientFrame::Ping(n)) => {
                ServerFrame::Pong(n).encode(out);
                self.replies.push((out.len(), Reply::Plain));
                Ok((0, 0))
            }
            (
                State::Open {
                    pool,
                    stream,
                    last_seq,
                },
                ClientFrame::Events { first_seq, events },
            ) => {
                //= docs/protocols/pool.md#sequence-numbers
                //# Within one connection, `first_seq` of each `EVENTS` frame is greater than
                //# every sequence number sent before on that connection.
                if first_seq <= *last_seq {
                    return Err(SessionError::Protocol("sequence numbers must increase"));
                }
                let (pool, stream) = (*pool, *stream);
                let applied = ctx.streams.applied(pool, stream);
                let last = first_seq + events.len() as u64 - 1;
                *last_seq = last;
                let mut job = Job {
                    pool,
                    stream,
                    events,
                    idx: 0,
                    seq: first_seq,
                    applied,
                    last,
                    block: None,
                    sweep: None,
                    applied_count: 0,
                    skipped: 0,
                };
                if self.run(&mut job, budget, ctx, out)? {
                    Ok((job.applied_count, job.skipped))
                } else {
                    self.parked = Some(job);
                    Ok((0, 0))
                }
            }
        }
    }

    /// Applies the events of `job` from where it stopped; sends the frame's `ACK` and returns
    /// `true` once all are done, or returns `false` when a sweep ran out of `budget`.
    fn run(
        &mut self,
        job: &mut Job,
        budget: &mut usize,
        ctx: &mut PoolCtx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<bool, SessionError> {
        loop {
            if let Some((listed, cursor)) = &mut job.sweep {
                if !sweep(job.pool, listed, cursor, budget, ctx) {
                    return Ok(false);
                }
                job.sweep = None;
                // The sweep's logouts took fresh stamps: later events need later ones.
                job.block = None;
            }
            let Some(e) = job.events.get(job.idx) else {
                break;
            };
            if job.idx % Pinned::PREFETCH == 0 {
                prefetch(&job.events, job.idx, ctx);
            }
            if job.seq > job.applied {
                let (first, used) = match job.block {
                    Some(b) => b,
                    None => {
                        // One clock operation per run of fresh events: consecutive stamps.
                        let fresh = (job.events.len() - job.idx) as u64;
                        (ctx.hlc.reserve(ctx.now_ms, fresh), 0)
                    }
                };
                job.block = Some((first, used + 1));
                let stamp = Stamp::new(first.hlc().saturating_add(used), first.node());
                if let Some(listed) = self.apply(job.pool, job.stream, e, stamp, ctx)? {
                    job.sweep = Some((listed, Cursor::all()));
                }
                job.applied_count += 1;
            } else {
                job.skipped += 1;
            }
            job.idx += 1;
            job.seq += 1;
        }
        ctx.streams.advance(job.pool, job.stream, job.last);
        ServerFrame::Ack(job.last).encode(out);
        self.replies.push((out.len(), Reply::Durable));
        Ok(true)
    }

    /// Applies one event. Returns the listed sids when it is a `SNAPSHOT_END` whose sweep must
    /// run now.
    fn apply(
        &mut self,
        pool: u32,
        stream: u64,
        e: &Event,
        stamp: Stamp,
        ctx: &mut PoolCtx<'_>,
    ) -> Result<Option<HashSet<u64>>, SessionError> {
        let (sid, update) = match e {
            Event::SnapshotBegin => {
                ctx.streams.begin_snapshot(pool, stream);
                self.snapshot_open = true;
                return Ok(None);
            }
            Event::SnapshotEnd => {
                //= docs/protocols/pool.md#snapshots
                //# A `SNAPSHOT_END` with no snapshot in progress on this node is ignored.
                self.snapshot_open = false;
                return Ok(ctx.streams.end_snapshot(pool, stream));
            }
            Event::Login {
                sid,
                uid,
                client,
                ext,
            } => (
                *sid,
                Update {
                    uid: *uid,
                    pool,
                    change: Change::Login(*client),
                    ext: ext.clone(),
                },
            ),
            Event::Logout {
                sid,
                uid,
                client,
                ext,
            } => (
                *sid,
                Update {
                    uid: *uid,
                    pool,
                    change: Change::Logout(*client),
                    ext: ext.clone(),
                },
            ),
            Event::Permission {
                sid,
                uid,
                allow,
                ext,
            } => (
                *sid,
                Update {
                    uid: *uid,
                    pool,
                    change: Change::Permission(*allow),
                    ext: ext.clone(),
                },
            ),
        };
        if self.snapshot_open
            && !ctx
                .streams
                .list_in_snapshot(pool, stream, sid.get(), self.max_snapshot)
        {
            return Err(SessionError::Protocol("snapshot lists too many users"));
        }
        if ctx.store.apply(sid, stamp, &update) {
            ctx.changed.push(sid);
        }
        Ok(None)
    }
}

/// Walks at most `budget` records of the sweep after a `SNAPSHOT_END`: logs out every online
/// user last reported by `pool` that the snapshot did not list. Returns whether the walk is done.
fn sweep(
    pool: u32,
    listed: &HashSet<u64>,
    cursor: &mut Cursor,
    budget: &mut usize,
    ctx: &mut PoolCtx<'_>,
) -> bool {
    if *budget == 0 {
        return cursor.is_done();
    }
    let mut gone = Vec::new();
    let visited = ctx.store.scan(cursor, *budget, |sid, r| {
        let id = r.ident().value;
        if id.pool == pool && !listed.contains(&sid.get()) && r.status(sid).online {
            gone.push((sid, id.uid));
        }
        true
    });
    *budget = budget.saturating_sub(visited);
    for (sid, uid) in gone {
        let update = Update {
            uid,
            pool,
            change: Change::LogoutAll,
            ext: None,
        };
        let stamp = ctx.hlc.now(ctx.now_ms);
        if ctx.store.apply(sid, stamp, &update) {
            ctx.changed.push(sid);
        }
    }
    cursor.is_done()
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;

/// Starts loading the records of the events from `from` on (see [`Pinned::prefetch`]).
fn prefetch(events: &[Event], from: usize, ctx: &PoolCtx<'_>) {
    let mut sids = [Sid::MIN; Pinned::PREFETCH];
    let mut n = 0;
    for (e, s) in events
        .iter()
        .skip(from)
        .filter_map(Event::sid)
        .zip(sids.iter_mut())
    {
        *s = e;
        n += 1;
    }
    ctx.store.prefetch(sids.get(..n).unwrap_or_default());
}
