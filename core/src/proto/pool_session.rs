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
//! What outlives a connection (stream high-water marks, snapshots in progress) is in
//! [`Streams`] (the `streams` submodule), shared by every session of the node. Limits come from
//! the constructor ([`PoolLimits`]) and [`PoolSession::with_max_snapshot`].

use std::collections::HashSet;

use crate::hlc::{Hlc, Stamp};
use crate::model::{Change, Sid, Update};
use crate::proto::pool::{ClientFrame, Event, Hello, PoolLimits, ServerFrame, VERSION};
use crate::proto::ErrorCode;
use crate::store::Pinned;
use crate::wire::{split_frame, DecodeError};

mod streams;

pub use streams::Streams;

/// Default most users a full snapshot may list (each costs a set entry until `SnapshotEnd`);
/// [`PoolSession::with_max_snapshot`] sets the one in force (`<limits max-snapshot-users>`).
pub const DEFAULT_MAX_SNAPSHOT: usize = 50_000_000;

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
    /// Whole frames were left unprocessed because the frame budget ran out.
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
}

impl PoolSession {
    /// A session waiting for `HELLO`.
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            state: State::AwaitHello,
            limits,
            max_snapshot: DEFAULT_MAX_SNAPSHOT,
            snapshot_open: false,
        }
    }

    /// Sets the most distinct users one snapshot may list (default [`DEFAULT_MAX_SNAPSHOT`];
    /// `<limits max-snapshot-users>`). A snapshot that lists more closes the session.
    pub fn with_max_snapshot(mut self, n: usize) -> Self {
        self.max_snapshot = n;
        self
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
            match self.handle_frame(frame, ctx, out) {
                Ok((events, duplicates)) => {
                    o.events += events;
                    o.duplicates += duplicates;
                }
                Err(e) => return Err(self.fail(e, out)),
            }
            o.consumed += n;
        }
        Ok(o)
    }

    fn fail(&mut self, e: SessionError, out: &mut Vec<u8>) -> SessionError {
        ServerFrame::Error {
            code: e.code() as u8,
            message: e.to_string(),
        }
        .encode(out);
        e
    }

    /// Handles one decoded frame: `(events applied, events skipped as duplicates)`.
    fn handle_frame(
        &mut self,
        frame: ClientFrame,
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
                Ok((0, 0))
            }
            (State::AwaitHello, _) => Err(SessionError::Protocol("expected HELLO")),
            (State::Open { .. }, ClientFrame::Hello(_)) => {
                Err(SessionError::Protocol("HELLO sent twice"))
            }
            (State::Open { .. }, ClientFrame::Ping(n)) => {
                ServerFrame::Pong(n).encode(out);
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
                // One clock operation per frame: the fresh events get consecutive stamps.
                let skip = applied
                    .saturating_sub(first_seq - 1)
                    .min(events.len() as u64);
                let fresh = events.len() as u64 - skip;
                let first = ctx.hlc.reserve(ctx.now_ms, fresh);
                let mut count = 0;
                let mut seq = first_seq;
                for e in &events {
                    if seq > applied {
                        let stamp = Stamp::new(first.hlc() + count, first.node());
                        self.apply(pool, stream, e, stamp, ctx)?;
                        count += 1;
                    }
                    seq += 1;
                }
                let last = seq - 1;
                if let State::Open { last_seq, .. } = &mut self.state {
                    *last_seq = last;
                }
                ctx.streams.advance(pool, stream, last);
                ServerFrame::Ack(last).encode(out);
                Ok((count, skip))
            }
        }
    }

    fn apply(
        &mut self,
        pool: u32,
        stream: u64,
        e: &Event,
        stamp: Stamp,
        ctx: &mut PoolCtx<'_>,
    ) -> Result<(), SessionError> {
        let (sid, update) = match e {
            Event::SnapshotBegin => {
                ctx.streams.begin_snapshot(pool, stream);
                self.snapshot_open = true;
                return Ok(());
            }
            Event::SnapshotEnd => {
                //= docs/protocols/pool.md#snapshots
                //# A `SNAPSHOT_END` with no snapshot in progress on this node is ignored.
                let listed = ctx.streams.end_snapshot(pool, stream);
                self.snapshot_open = false;
                if let Some(listed) = listed {
                    self.end_snapshot(pool, &listed, ctx);
                }
                return Ok(());
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
        Ok(())
    }

    /// Logs out every online user last reported by `pool` that the snapshot did not list.
    fn end_snapshot(&self, pool: u32, listed: &HashSet<u64>, ctx: &mut PoolCtx<'_>) {
        let mut gone = Vec::new();
        ctx.store.for_each(|sid, r| {
            let id = r.ident().value;
            if id.pool == pool && !listed.contains(&sid.get()) && r.status(sid).online {
                gone.push((sid, id.uid));
            }
        });
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
    }
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
