//! [`QuerySession`]: the server side of one raw-TCP query connection, as a sans-IO state
//! machine whose state is whether the handshake is done and, once it is, the connection's mode.
//!
//! The handshake checks the API key ([`ApiKeys::check`]): with keys configured, a v1 `HELLO`
//! (no key) and a v2 `HELLO` with a missing or unknown key get the same `ERROR` 3 and the
//! connection closes; with none configured every `HELLO` is accepted (a key, if sent, is
//! ignored). `WELCOME` carries the version of the `HELLO`. On a watch connection (`Mode::Watch`)
//! the first valid `SUBSCRIBE` ends the session's part: it is kept for the driver
//! ([`QuerySession::take_subscription`]), which turns the connection into a watcher (the stream
//! of `EVENT`s needs the node's change feed, which this sans-IO session does not see); nothing
//! after it is read. A `SUBSCRIBE` over the batch limit or holding id 0 gets `REJECT` 7 or 6
//! and the connection stays open.
//!
//! Method taxonomy: [`QuerySession::handle_input`] is the only input; its outputs are the frames
//! it appends to `out` and the [`QueryOutcome`]. Every `QUERY` gets exactly one `RESULT` or
//! `REJECT`, in request order; a request over [`QueryLimits::max_batch`] or holding id 0 is
//! refused on its own, while a frame that does not decode or breaks the handshake gets `ERROR`
//! and ends the connection. Reads go through the [`Pinned`] store the driver passes in, and the
//! time (`now_ms`) is a parameter.

use super::{put_result, ClientFrame, Hello, Mode, QueryLimits, ServerFrame, VERSION, VERSION_1};
use crate::auth::{ApiKeys, AuthOutcome, Presented};
use crate::model::Sid;
use crate::proto::ErrorCode;
use crate::store::Pinned;
use crate::wire::{split_frame, DecodeError};

/// Why a query connection is being closed. An `ERROR` frame saying so has been queued.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The bytes did not decode.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// A valid frame that is not allowed now.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// Keys are configured and the `HELLO` had no valid one (the outcome says which, for the
    /// node's metrics; the client is told the same in every case).
    #[error("unauthorized: a valid API key is required")]
    Unauthorized(AuthOutcome),
    /// A part of the protocol this build does not implement.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Per-connection state of a query connection: the mode, once the handshake is done.
#[derive(Debug, Default)]
pub struct QuerySession {
    open: Option<Mode>,
    /// The accepted `SUBSCRIBE` of a watch connection, until the driver takes it.
    subscription: Option<Subscription>,
}

/// An accepted `SUBSCRIBE`: what the driver needs to start the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Echoed in every `EVENT` and `RESET` of the stream.
    pub req_id: u32,
    /// The last event id the client saw (empty: start fresh). Not checked here.
    pub resume: Vec<u8>,
    /// The ids to watch, in request order (none is 0, at most the batch limit).
    pub ids: Vec<Sid>,
}

/// What a query session reads from its node for one call.
#[derive(Debug)]
pub struct QueryCtx<'a> {
    /// The limits in force.
    pub limits: &'a QueryLimits,
    /// The store, pinned for this batch.
    pub store: &'a Pinned<'a>,
    /// The node's sequence number.
    pub node: u16,
    /// Cluster time now, ms.
    pub now_ms: u64,
    /// The API keys (empty: the protocol is open).
    pub keys: &'a ApiKeys,
}

/// What one [`QuerySession::handle_input`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueryOutcome {
    /// Bytes consumed (whole frames only).
    pub consumed: usize,
    /// Requests answered (results and rejects).
    pub requests: u64,
    /// Ids looked up.
    pub ids: u64,
    /// Whole frames were left because the frame budget ran out.
    pub more: bool,
    /// Set by the call that accepted the `HELLO` while keys are configured: which key.
    pub auth: Option<AuthOutcome>,
}

impl QuerySession {
    /// The accepted `SUBSCRIBE`, once: the connection is a watcher from then on, and the session
    /// reads no further input.
    pub fn take_subscription(&mut self) -> Option<Subscription> {
        self.subscription.take()
    }

    /// Handles at most `max_frames` whole frames of `input`, appending answers to `out`.
    /// After an `Err`, flush `out` and close the connection.
    pub fn handle_input(
        &mut self,
        input: &[u8],
        max_frames: usize,
        ctx: &QueryCtx<'_>,
        out: &mut Vec<u8>,
    ) -> Result<QueryOutcome, QueryError> {
        let QueryCtx {
            limits,
            store,
            node,
            now_ms,
            keys,
        } = *ctx;
        let mut o = QueryOutcome::default();
        let mut scratch = Vec::new();
        let mut frames = 0;
        loop {
            if self.subscription.is_some() {
                break;
            }
            let rest = input.get(o.consumed..).unwrap_or_default();
            let split = split_frame(rest, limits.max_frame).map_err(|e| fail(e.into(), out))?;
            let Some((t, body, n)) = split else { break };
            if frames == max_frames {
                o.more = true;
                break;
            }
            frames += 1;
            let frame = ClientFrame::decode(t, body).map_err(|e| fail(e.into(), out))?;
            match (self.open, frame) {
                (None, ClientFrame::Hello(hello)) => {
                    let (version, mode, presented) = match &hello {
                        Hello::V1 => (VERSION_1, Mode::Query, Presented::Missing),
                        Hello::V2 { mode, key } => (VERSION, *mode, Presented::Key(key)),
                    };
                    let auth = keys.check(presented);
                    if !auth.allowed() {
                        return Err(fail(QueryError::Unauthorized(auth), out));
                    }
                    if auth != AuthOutcome::Open {
                        o.auth = Some(auth);
                    }
                    self.open = Some(mode);
                    ServerFrame::Welcome {
                        version,
                        node,
                        max_batch: limits.max_batch,
                    }
                    .encode(out);
                }
                (None, _) => return Err(fail(QueryError::Protocol("expected HELLO"), out)),
                (Some(_), ClientFrame::Hello(_)) => {
                    return Err(fail(QueryError::Protocol("HELLO sent twice"), out))
                }
                (
                    Some(Mode::Watch),
                    ClientFrame::Subscribe {
                        req_id,
                        resume,
                        ids,
                    },
                ) => {
                    if !rejected(req_id, &ids, limits, out) {
                        let ids = ids.iter().filter_map(|i| Sid::new(*i)).collect();
                        self.subscription = Some(Subscription {
                            req_id,
                            resume,
                            ids,
                        });
                    }
                }
                (Some(Mode::Query), ClientFrame::Subscribe { .. }) => {
                    let e = QueryError::Protocol("SUBSCRIBE on a query connection");
                    return Err(fail(e, out));
                }
                (Some(Mode::Watch), ClientFrame::Query { .. }) => {
                    return Err(fail(
                        QueryError::Protocol("QUERY on a watch connection"),
                        out,
                    ))
                }
                (Some(Mode::Query), ClientFrame::Query { req_id, ids }) => {
                    o.requests += 1;
                    if !rejected(req_id, &ids, limits, out) {
                        scratch.clear();
                        // One batch lookup: the store overlaps the ids' cache misses.
                        let sids: Vec<Sid> = ids.iter().filter_map(|i| Sid::new(*i)).collect();
                        store.statuses(&sids, &mut scratch);
                        o.ids += ids.len() as u64;
                        put_result(out, req_id, now_ms, &scratch);
                    }
                }
            }
            o.consumed += n;
        }
        Ok(o)
    }
}

/// Answers `REJECT` to request `req_id` if its ids are refused on their own; returns whether it
/// did.
fn rejected(req_id: u32, ids: &[u64], limits: &QueryLimits, out: &mut Vec<u8>) -> bool {
    let Some((code, message)) = refusal(ids, limits) else {
        return false;
    };
    ServerFrame::Reject {
        req_id,
        code: code as u8,
        message,
    }
    .encode(out);
    true
}

/// Why a request's ids are refused on their own (`REJECT`), if they are.
fn refusal(ids: &[u64], limits: &QueryLimits) -> Option<(ErrorCode, String)> {
    if ids.len() > usize::from(limits.max_batch) {
        let message = format!(
            "{} ids exceed the batch limit of {}",
            ids.len(),
            limits.max_batch
        );
        return Some((ErrorCode::TooManyIds, message));
    }
    let pos = ids.iter().position(|i| *i == 0)?;
    Some((ErrorCode::InvalidId, format!("id at position {pos} is 0")))
}

fn fail(e: QueryError, out: &mut Vec<u8>) -> QueryError {
    let code = match &e {
        QueryError::Decode(DecodeError::BadVersion(_)) => ErrorCode::Version,
        QueryError::Decode(DecodeError::TooLarge { .. }) => ErrorCode::TooLarge,
        QueryError::Decode(_) => ErrorCode::Malformed,
        QueryError::Protocol(_) => ErrorCode::Protocol,
        QueryError::Unauthorized(_) => ErrorCode::Auth,
        QueryError::Unsupported(_) => ErrorCode::Unsupported,
    };
    crate::proto::put_error(out, code, &e.to_string());
    e
}
