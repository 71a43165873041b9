//! [`QuerySession`]: the server side of one raw-TCP query connection, as a sans-IO state
//! machine with one bit of state (whether the handshake is done).
//!
//! Method taxonomy: [`QuerySession::handle_input`] is the only input; its outputs are the frames
//! it appends to `out` and the [`QueryOutcome`]. Every `QUERY` gets exactly one `RESULT` or
//! `REJECT`, in request order; a request over [`QueryLimits::max_batch`] or holding id 0 is
//! refused on its own, while a frame that does not decode or breaks the handshake gets `ERROR`
//! and ends the connection. Reads go through the [`Pinned`] store the driver passes in, and the
//! time (`now_ms`) is a parameter.

use super::{put_result, ClientFrame, QueryLimits, ServerFrame, VERSION};
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
}

/// Per-connection state of a query connection: whether the handshake is done.
#[derive(Debug, Default)]
pub struct QuerySession {
    open: bool,
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
}

impl QuerySession {
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
        } = *ctx;
        let mut o = QueryOutcome::default();
        let mut scratch = Vec::new();
        let mut frames = 0;
        loop {
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
                (false, ClientFrame::Hello) => {
                    self.open = true;
                    ServerFrame::Welcome {
                        version: VERSION,
                        node,
                        max_batch: limits.max_batch,
                    }
                    .encode(out);
                }
                (false, _) => return Err(fail(QueryError::Protocol("expected HELLO"), out)),
                (true, ClientFrame::Hello) => {
                    return Err(fail(QueryError::Protocol("HELLO sent twice"), out))
                }
                (true, ClientFrame::Query { req_id, ids }) => {
                    o.requests += 1;
                    if ids.len() > usize::from(limits.max_batch) {
                        let message = format!(
                            "{} ids exceed the batch limit of {}",
                            ids.len(),
                            limits.max_batch
                        );
                        ServerFrame::Reject {
                            req_id,
                            code: ErrorCode::TooManyIds as u8,
                            message,
                        }
                        .encode(out);
                    } else if let Some(pos) = ids.iter().position(|i| *i == 0) {
                        let message = format!("id at position {pos} is 0");
                        ServerFrame::Reject {
                            req_id,
                            code: ErrorCode::InvalidId as u8,
                            message,
                        }
                        .encode(out);
                    } else {
                        scratch.clear();
                        scratch.extend(
                            ids.iter()
                                .filter_map(|i| Sid::new(*i))
                                .map(|s| store.status(s)),
                        );
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

fn fail(e: QueryError, out: &mut Vec<u8>) -> QueryError {
    let code = match &e {
        QueryError::Decode(DecodeError::BadVersion(_)) => ErrorCode::Version,
        QueryError::Decode(DecodeError::TooLarge { .. }) => ErrorCode::TooLarge,
        QueryError::Decode(_) => ErrorCode::Malformed,
        QueryError::Protocol(_) => ErrorCode::Protocol,
    };
    crate::proto::put_error(out, code, &e.to_string());
    e
}
