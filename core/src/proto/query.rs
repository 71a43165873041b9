//! The raw-TCP batch query protocol: `docs/protocols/query.md`.
//!
//! A web platform sends `HELLO`, receives `WELCOME`, then pipelines `QUERY` frames, each with a
//! request id and up to `max_batch` sids. presenced answers every request with `RESULT` (or a
//! request-level `REJECT`) in request order. A frame that does not decode gets a connection-level
//! `ERROR` and the connection is closed.
//!
//! [`serve_input`] is the whole server side: a pure function of the input bytes, the pinned store
//! and the time, so the driver only moves bytes.

use std::sync::Arc;

use bytes::BufMut;

use crate::model::{ClientSet, Ext, ExtLimits, Sid, Status};
use crate::proto::ErrorCode;
use crate::store::Pinned;
use crate::wire::{put_ext, put_frame, read_ext, split_frame, DecodeError, Reader};

/// Magic at the start of `HELLO`: ASCII `PRSQ`.
pub const MAGIC: [u8; 4] = *b"PRSQ";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;

/// Frame types.
pub mod ty {
    /// Client → server: handshake.
    pub const HELLO: u8 = 0x01;
    /// Server → client: handshake accepted.
    pub const WELCOME: u8 = 0x02;
    /// Client → server: a batch query.
    pub const QUERY: u8 = 0x10;
    /// Server → client: the statuses for one query.
    pub const RESULT: u8 = 0x11;
    /// Server → client: one query refused (the connection stays open).
    pub const REJECT: u8 = 0x7E;
    /// Either way: fatal error, the sender closes the connection.
    pub const ERROR: u8 = super::super::ERROR;
}

/// Limits of the query protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryLimits {
    /// Largest frame (type and body), in bytes.
    pub max_frame: u32,
    /// Most ids in one request.
    pub max_batch: u16,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_frame: 1 << 20,
            max_batch: 1000,
        }
    }
}

/// A frame sent by a query client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `HELLO`.
    Hello,
    /// `QUERY`: raw ids as sent (zero is rejected per request, not per connection).
    Query {
        /// Echoed in the answer.
        req_id: u32,
        /// The ids asked for.
        ids: Vec<u64>,
    },
}

/// A frame sent by presenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerFrame {
    /// `WELCOME`.
    Welcome {
        /// Protocol version in use.
        version: u8,
        /// The node's sequence number.
        node: u16,
        /// The largest batch this node accepts.
        max_batch: u16,
    },
    /// `RESULT`.
    Result {
        /// The request's id.
        req_id: u32,
        /// Cluster time of the answer, ms since the Unix epoch.
        as_of_ms: u64,
        /// One status per id, in request order.
        statuses: Vec<Status>,
    },
    /// `REJECT`: this request is refused; the connection stays usable.
    Reject {
        /// The request's id.
        req_id: u32,
        /// An [`ErrorCode`] as a byte.
        code: u8,
        /// Human-readable reason.
        message: String,
    },
    /// `ERROR`: the server closes the connection after it.
    Error {
        /// An [`ErrorCode`] as a byte.
        code: u8,
        /// Human-readable reason.
        message: String,
    },
}

const KNOWN: u8 = 1;
const ONLINE: u8 = 2;
const ACCEPTS: u8 = 4;
const HAS_EXT: u8 = 8;

impl ClientFrame {
    /// Appends this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hello => put_frame(out, ty::HELLO, |b| {
                b.put_slice(&MAGIC);
                b.put_u8(VERSION);
            }),
            Self::Query { req_id, ids } => put_frame(out, ty::QUERY, |b| {
                b.put_u32(*req_id);
                b.put_u16(ids.len() as u16);
                for id in ids {
                    b.put_u64(*id);
                }
            }),
        }
    }

    /// Decodes a frame body. A `QUERY` over the batch limit still decodes (the frame is bounded
    /// by `max_frame`), so that it can be refused on its own with `REJECT`.
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let f = match ty {
            ty::HELLO => {
                if r.array::<4>("magic")? != MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                let v = r.u8("version")?;
                if v != VERSION {
                    return Err(DecodeError::BadVersion(v));
                }
                Self::Hello
            }
            ty::QUERY => {
                let req_id = r.u32("request id")?;
                let count = usize::from(r.u16("id count")?);
                // The frame is already bounded by max_frame; 8 bytes per id are checked first.
                if r.remaining() != count * 8 {
                    return Err(DecodeError::Invalid("id count does not match frame length"));
                }
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    ids.push(r.u64("id")?);
                }
                Self::Query { req_id, ids }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(f)
    }
}

fn put_status(b: &mut Vec<u8>, s: &Status) {
    b.put_u64(s.sid.get());
    let flags = if s.known { KNOWN } else { 0 }
        | if s.online { ONLINE } else { 0 }
        | if s.accepts_strangers { ACCEPTS } else { 0 }
        | if s.ext.is_some() { HAS_EXT } else { 0 };
    b.put_u8(flags);
    b.put_u8(s.clients.bits());
    b.put_u64(s.changed_at_ms.unwrap_or(0));
    b.put_u64(s.uid.unwrap_or(0));
    if let Some(e) = &s.ext {
        put_ext(b, e);
    }
}

fn read_status(r: &mut Reader<'_>) -> Result<Status, DecodeError> {
    let sid = Sid::new(r.u64("sid")?).ok_or(DecodeError::Invalid("sid 0"))?;
    let flags = r.u8("flags")?;
    if flags & !(KNOWN | ONLINE | ACCEPTS | HAS_EXT) != 0 {
        return Err(DecodeError::Invalid("status flags"));
    }
    let clients = ClientSet::from_bits(r.u8("clients")?).ok_or(DecodeError::Invalid("clients"))?;
    let changed = r.u64("changed at")?;
    let uid = r.u64("uid")?;
    let ext: Option<Arc<Ext>> = if flags & HAS_EXT != 0 {
        Some(read_ext(
            r,
            &ExtLimits {
                max_entries: 255,
                max_key: 255,
                max_value: 65535,
            },
        )?)
    } else {
        None
    };
    let known = flags & KNOWN != 0;
    Ok(Status {
        sid,
        known,
        online: flags & ONLINE != 0,
        clients,
        accepts_strangers: flags & ACCEPTS != 0,
        changed_at_ms: known.then_some(changed),
        uid: known.then_some(uid),
        ext,
    })
}

impl ServerFrame {
    /// Appends this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Welcome {
                version,
                node,
                max_batch,
            } => put_frame(out, ty::WELCOME, |b| {
                b.put_u8(*version);
                b.put_u16(*node);
                b.put_u16(*max_batch);
            }),
            Self::Result {
                req_id,
                as_of_ms,
                statuses,
            } => {
                put_result(out, *req_id, *as_of_ms, statuses);
            }
            Self::Reject {
                req_id,
                code,
                message,
            } => put_frame(out, ty::REJECT, |b| {
                let m = message.as_bytes().get(..1024).unwrap_or(message.as_bytes());
                b.put_u32(*req_id);
                b.put_u8(*code);
                b.put_u16(m.len() as u16);
                b.put_slice(m);
            }),
            Self::Error { code, message } => {
                super::put_error(
                    out,
                    ErrorCode::from_u8(*code).unwrap_or(ErrorCode::Protocol),
                    message,
                );
            }
        }
    }

    /// Decodes a frame body.
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let f = match ty {
            ty::WELCOME => Self::Welcome {
                version: r.u8("version")?,
                node: r.u16("node")?,
                max_batch: r.u16("max batch")?,
            },
            ty::RESULT => {
                let req_id = r.u32("request id")?;
                let as_of_ms = r.u64("as of")?;
                let count = usize::from(r.u16("status count")?);
                // A status is at least 26 bytes: bound the allocation by what is there.
                if r.remaining() < count * 26 {
                    return Err(DecodeError::Truncated("statuses"));
                }
                let mut statuses = Vec::with_capacity(count);
                for _ in 0..count {
                    statuses.push(read_status(&mut r)?);
                }
                Self::Result {
                    req_id,
                    as_of_ms,
                    statuses,
                }
            }
            ty::REJECT => {
                let req_id = r.u32("request id")?;
                let code = r.u8("code")?;
                let n = usize::from(r.u16("message length")?);
                let message = String::from_utf8_lossy(r.take(n, "message")?).into_owned();
                Self::Reject {
                    req_id,
                    code,
                    message,
                }
            }
            ty::ERROR => {
                let (code, message) = super::read_error(body)?;
                return Ok(Self::Error { code, message });
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(f)
    }
}

fn put_result(out: &mut Vec<u8>, req_id: u32, as_of_ms: u64, statuses: &[Status]) {
    put_frame(out, ty::RESULT, |b| {
        b.put_u32(req_id);
        b.put_u64(as_of_ms);
        b.put_u16(statuses.len() as u16);
        for s in statuses {
            put_status(b, s);
        }
    });
}

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
    super::put_error(out, code, &e.to_string());
    e
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::hlc::Stamp;
    use crate::model::{Change, ClientType, Update};
    use crate::store::Store;

    fn serve(store: &Store, input: &[u8]) -> (Vec<ServerFrame>, Result<QueryOutcome, QueryError>) {
        let mut out = Vec::new();
        let limits = QueryLimits {
            max_frame: 1 << 16,
            max_batch: 3,
        };
        let pinned = store.pin();
        let ctx = QueryCtx {
            limits: &limits,
            store: &pinned,
            node: 1,
            now_ms: 1000,
        };
        let r = QuerySession::default().handle_input(input, 64, &ctx, &mut out);
        let mut v = Vec::new();
        let mut rest = &out[..];
        while let Some((t, b, n)) = split_frame(rest, 1 << 20).unwrap() {
            v.push(ServerFrame::decode(t, b).unwrap());
            rest = &rest[n..];
        }
        (v, r)
    }

    //= docs/protocols/query.md#test-vectors
    #[test]
    fn vectors_from_the_spec() {
        let store = Store::default();
        let u = Update {
            uid: 1,
            pool: 1,
            change: Change::Login(ClientType::Mobile),
            ext: None,
        };
        store.pin().apply(
            Sid::new(10086).unwrap(),
            Stamp::new(0x0000_019a_b6c4_3c00 << 16, 1),
            &u,
        );
        let input = hex!(
            "00000006 01 50525351 01"
            "00000017 10 00000007 0002 0000000000002766 000000000000271a"
        );
        let mut out = Vec::new();
        let limits = QueryLimits::default();
        let pinned = store.pin();
        let ctx = QueryCtx {
            limits: &limits,
            store: &pinned,
            node: 1,
            now_ms: 0x019a_b6c4_3c01,
        };
        QuerySession::default()
            .handle_input(&input, 64, &ctx, &mut out)
            .unwrap();
        assert_eq!(
            out,
            hex!(
                "00000006 02 01 0001 03e8"
                "00000043 11 00000007 0000019ab6c43c01 0002"
                "0000000000002766 07 02 0000019ab6c43c00 0000000000000001"
                "000000000000271a 00 00 0000000000000000 0000000000000000"
            )
        );
    }

    #[test]
    fn over_limit_and_zero_ids_are_refused_per_request() {
        let store = Store::default();
        let mut input = Vec::new();
        ClientFrame::Hello.encode(&mut input);
        ClientFrame::Query {
            req_id: 1,
            ids: vec![1, 2, 3, 4],
        }
        .encode(&mut input);
        ClientFrame::Query {
            req_id: 2,
            ids: vec![1, 0],
        }
        .encode(&mut input);
        ClientFrame::Query {
            req_id: 3,
            ids: vec![5],
        }
        .encode(&mut input);
        let (out, r) = serve(&store, &input);
        assert_eq!(r.unwrap().requests, 3);
        assert!(matches!(
            out[1],
            ServerFrame::Reject {
                req_id: 1,
                code: 7,
                ..
            }
        ));
        assert!(matches!(
            out[2],
            ServerFrame::Reject {
                req_id: 2,
                code: 6,
                ..
            }
        ));
        assert!(
            matches!(&out[3], ServerFrame::Result { req_id: 3, statuses, .. } if !statuses[0].known)
        );
    }

    #[test]
    fn garbage_gets_an_error_frame() {
        let (out, r) = serve(&Store::default(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(r.is_err());
        assert!(matches!(out[..], [ServerFrame::Error { .. }]));
    }

    proptest! {
        #[test]
        fn query_round_trips(req_id in any::<u32>(), ids in prop::collection::vec(any::<u64>(), 0..50)) {
            let f = ClientFrame::Query { req_id, ids };
            let mut out = Vec::new();
            f.encode(&mut out);
            let (t, b, n) = split_frame(&out, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(ClientFrame::decode(t, b).unwrap(), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            crate::fuzzing::batch_query(&bytes);
        }
    }
}
