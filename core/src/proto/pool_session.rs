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

use std::collections::HashSet;

use crate::hlc::{Hlc, Stamp};
use crate::model::{Change, Sid, Update};
use crate::proto::pool::{ClientFrame, Event, Hello, PoolLimits, ServerFrame, VERSION};
use crate::proto::ErrorCode;
use crate::store::Pinned;
use crate::wire::{split_frame, DecodeError};

/// Most users a full snapshot may list (each costs a set entry until `SnapshotEnd`).
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

/// The per-(pool, stream) state on this node, shared by all connections: the high-water mark of
/// applied sequence numbers (so that events re-sent after a reconnect are recognised and
/// skipped) and any snapshot in progress (so that a snapshot survives a reconnect).
#[derive(Debug, Default)]
pub struct Streams {
    map: flurry::HashMap<(u32, u64), u64>,
    /// Users listed so far by each snapshot in progress. Snapshots are rare, so a mutex is fine.
    snapshots: std::sync::Mutex<std::collections::HashMap<(u32, u64), HashSet<u64>>>,
}

impl Streams {
    /// Highest applied sequence number of a stream (0: none).
    pub fn applied(&self, pool: u32, stream: u64) -> u64 {
        self.map.pin().get(&(pool, stream)).copied().unwrap_or(0)
    }

    /// Raises the high-water mark of a stream to `seq` (never lowers it).
    pub fn advance(&self, pool: u32, stream: u64, seq: u64) {
        let m = self.map.pin();
        let key = (pool, stream);
        loop {
            if m.compute_if_present(&key, |_, old| Some((*old).max(seq)))
                .is_some()
            {
                return;
            }
            if m.try_insert(key, seq).is_ok() {
                return;
            }
        }
    }

    fn snapshots(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(u32, u64), HashSet<u64>>> {
        // A poisoned lock only means another connection's thread panicked mid-insert; the set is
        // still a valid set.
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Sets the largest snapshot accepted.
    pub fn with_max_snapshot(mut self, n: usize) -> Self {
        self.max_snapshot = n;
        self
    }

    /// The pool id, once the handshake is done.
    pub fn pool(&self) -> Option<u32> {
        match self.state {
            State::Open { pool, .. } => Some(pool),
            State::AwaitHello => None,
        }
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
                Ok(events) => o.events += events,
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

    fn handle_frame(
        &mut self,
        frame: ClientFrame,
        ctx: &mut PoolCtx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<u64, SessionError> {
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
                self.snapshot_open = ctx.streams.snapshots().contains_key(&(pool, stream));
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
                Ok(0)
            }
            (State::AwaitHello, _) => Err(SessionError::Protocol("expected HELLO")),
            (State::Open { .. }, ClientFrame::Hello(_)) => {
                Err(SessionError::Protocol("HELLO sent twice"))
            }
            (State::Open { .. }, ClientFrame::Ping(n)) => {
                ServerFrame::Pong(n).encode(out);
                Ok(0)
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
                Ok(count)
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
                ctx.streams
                    .snapshots()
                    .insert((pool, stream), HashSet::new());
                self.snapshot_open = true;
                return Ok(());
            }
            Event::SnapshotEnd => {
                //= docs/protocols/pool.md#snapshots
                //# A `SNAPSHOT_END` with no snapshot in progress on this node is ignored.
                let listed = ctx.streams.snapshots().remove(&(pool, stream));
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
        if self.snapshot_open {
            if let Some(listed) = ctx.streams.snapshots().get_mut(&(pool, stream)) {
                if listed.len() >= self.max_snapshot && !listed.contains(&sid.get()) {
                    return Err(SessionError::Protocol("snapshot lists too many users"));
                }
                listed.insert(sid.get());
            }
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
mod tests {
    use super::*;
    use crate::model::ClientType;
    use crate::proto::pool::ServerFrame;
    use crate::store::Store;

    struct Node {
        store: Store,
        hlc: Hlc,
        streams: Streams,
    }

    impl Node {
        fn new() -> Self {
            Self {
                store: Store::default(),
                hlc: Hlc::new(1),
                streams: Streams::default(),
            }
        }

        /// Feeds frames to a session; returns the server frames or the error.
        fn feed(
            &self,
            s: &mut PoolSession,
            frames: &[ClientFrame],
            token: Option<&[u8]>,
        ) -> (Vec<ServerFrame>, Result<Outcome, SessionError>) {
            let mut input = Vec::new();
            for f in frames {
                f.encode(&mut input);
            }
            let pinned = self.store.pin();
            let mut changed = Vec::new();
            let mut ctx = PoolCtx {
                store: &pinned,
                hlc: &self.hlc,
                streams: &self.streams,
                now_ms: 1_764_000_000_000,
                token,
                changed: &mut changed,
            };
            let mut out = Vec::new();
            let r = s.handle_input(&input, usize::MAX, &mut ctx, &mut out);
            let mut frames = Vec::new();
            let mut rest = &out[..];
            while let Some((t, b, n)) = split_frame(rest, 1 << 20).unwrap() {
                frames.push(ServerFrame::decode(t, b).unwrap());
                rest = &rest[n..];
            }
            (frames, r)
        }
    }

    fn hello(stream: u64, token: &[u8]) -> ClientFrame {
        ClientFrame::Hello(Hello {
            pool: 1,
            stream,
            resume_from: 1,
            token: token.to_vec(),
        })
    }

    fn login(sid: u64, client: ClientType) -> Event {
        Event::Login {
            sid: Sid::new(sid).unwrap(),
            uid: sid,
            client,
            ext: None,
        }
    }

    fn online(n: &Node, sid: u64) -> bool {
        n.store.pin().status(Sid::new(sid).unwrap()).online
    }

    #[test]
    fn handshake_events_and_cumulative_ack() {
        let n = Node::new();
        let mut s = PoolSession::new(PoolLimits::default());
        let (out, r) = n.feed(
            &mut s,
            &[
                hello(9, b""),
                ClientFrame::Events {
                    first_seq: 1,
                    events: vec![login(5, ClientType::Pc), login(6, ClientType::Web)],
                },
            ],
            None,
        );
        assert_eq!(r.unwrap().events, 2);
        assert_eq!(
            out,
            [
                ServerFrame::Welcome {
                    version: 1,
                    node: 1,
                    applied: 0
                },
                ServerFrame::Ack(2)
            ]
        );
        assert!(online(&n, 5) && online(&n, 6));
    }

    #[test]
    fn resent_events_are_skipped_and_reported_in_welcome() {
        let n = Node::new();
        let batch = ClientFrame::Events {
            first_seq: 1,
            events: vec![login(5, ClientType::Pc)],
        };
        n.feed(
            &mut PoolSession::new(PoolLimits::default()),
            &[hello(9, b""), batch.clone()],
            None,
        )
        .1
        .unwrap();
        let (out, r) = n.feed(
            &mut PoolSession::new(PoolLimits::default()),
            &[hello(9, b""), batch],
            None,
        );
        assert_eq!(r.unwrap().events, 0, "a re-sent event is not applied twice");
        assert_eq!(
            out,
            [
                ServerFrame::Welcome {
                    version: 1,
                    node: 1,
                    applied: 1
                },
                ServerFrame::Ack(1)
            ]
        );
    }

    #[test]
    fn wrong_token_and_frames_before_hello_close_the_session() {
        let n = Node::new();
        let (out, r) = n.feed(
            &mut PoolSession::new(PoolLimits::default()),
            &[hello(1, b"x")],
            Some(b"y"),
        );
        assert_eq!(r, Err(SessionError::Auth));
        assert!(matches!(out[..], [ServerFrame::Error { code: 3, .. }]));
        let (_, r) = n.feed(
            &mut PoolSession::new(PoolLimits::default()),
            &[ClientFrame::Ping(1)],
            None,
        );
        assert_eq!(r, Err(SessionError::Protocol("expected HELLO")));
    }

    #[test]
    fn sequence_going_back_is_a_protocol_error() {
        let n = Node::new();
        let e = || vec![login(5, ClientType::Pc)];
        let (_, r) = n.feed(
            &mut PoolSession::new(PoolLimits::default()),
            &[
                hello(1, b""),
                ClientFrame::Events {
                    first_seq: 5,
                    events: e(),
                },
                ClientFrame::Events {
                    first_seq: 5,
                    events: e(),
                },
            ],
            None,
        );
        assert_eq!(
            r,
            Err(SessionError::Protocol("sequence numbers must increase"))
        );
    }

    #[test]
    fn snapshot_logs_out_users_the_pool_no_longer_lists() {
        let n = Node::new();
        let mut s = PoolSession::new(PoolLimits::default());
        n.feed(
            &mut s,
            &[
                hello(1, b""),
                ClientFrame::Events {
                    first_seq: 1,
                    events: vec![login(5, ClientType::Pc), login(6, ClientType::Pc)],
                },
            ],
            None,
        )
        .1
        .unwrap();
        let (_, r) = n.feed(
            &mut s,
            &[ClientFrame::Events {
                first_seq: 3,
                events: vec![
                    Event::SnapshotBegin,
                    login(6, ClientType::Mobile),
                    Event::SnapshotEnd,
                ],
            }],
            None,
        );
        r.unwrap();
        assert!(!online(&n, 5), "5 was not in the snapshot");
        assert!(online(&n, 6));
        // A re-sent end marker with no snapshot in progress is harmless.
        let (_, r) = n.feed(
            &mut s,
            &[ClientFrame::Events {
                first_seq: 6,
                events: vec![Event::SnapshotEnd],
            }],
            None,
        );
        assert_eq!(r.unwrap().events, 1);
        assert!(online(&n, 6));
    }

    #[test]
    fn a_snapshot_survives_a_reconnect() {
        let n = Node::new();
        let mut a = PoolSession::new(PoolLimits::default());
        n.feed(
            &mut a,
            &[
                hello(1, b""),
                ClientFrame::Events {
                    first_seq: 1,
                    events: vec![
                        login(5, ClientType::Pc),
                        login(6, ClientType::Pc),
                        login(7, ClientType::Pc),
                        Event::SnapshotBegin,
                        login(6, ClientType::Pc),
                    ],
                },
            ],
            None,
        )
        .1
        .unwrap();
        let mut b = PoolSession::new(PoolLimits::default());
        let (_, r) = n.feed(
            &mut b,
            &[
                hello(1, b""),
                ClientFrame::Events {
                    first_seq: 6,
                    events: vec![login(7, ClientType::Web), Event::SnapshotEnd],
                },
            ],
            None,
        );
        r.unwrap();
        // 7 was listed on the second connection: the snapshot continued across the reconnect.
        assert!(!online(&n, 5) && online(&n, 6) && online(&n, 7));
    }

    #[test]
    fn frame_budget_leaves_the_rest_for_later() {
        let n = Node::new();
        let mut s = PoolSession::new(PoolLimits::default());
        let mut input = Vec::new();
        hello(1, b"").encode(&mut input);
        ClientFrame::Ping(3).encode(&mut input);
        let pinned = n.store.pin();
        let mut changed = Vec::new();
        let mut ctx = PoolCtx {
            store: &pinned,
            hlc: &n.hlc,
            streams: &n.streams,
            now_ms: 0,
            token: None,
            changed: &mut changed,
        };
        let mut out = Vec::new();
        let o = s.handle_input(&input, 1, &mut ctx, &mut out).unwrap();
        assert!(o.more && o.consumed < input.len());
        let o2 = s
            .handle_input(&input[o.consumed..], 1, &mut ctx, &mut out)
            .unwrap();
        assert_eq!(o.consumed + o2.consumed, input.len());
    }
}
