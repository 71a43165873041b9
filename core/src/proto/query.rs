//! The raw-TCP batch query protocol: `docs/protocols/query.md`.
//!
//! A web platform sends `HELLO`, receives `WELCOME`, then pipelines `QUERY` frames, each with a
//! request id and up to `max_batch` sids. presenced answers every request with `RESULT` (or a
//! request-level `REJECT`) in request order. A frame that does not decode gets a connection-level
//! `ERROR` and the connection is closed.
//!
//! Versions: a v1 `HELLO` is magic and version only; a v2 `HELLO` adds a [`Mode`] and an API
//! key ([`Hello`]). The `WELCOME` echoes the version in use. Mode [`Mode::Watch`] and its frames
//! (`SUBSCRIBE`, `EVENT`, `RESET`) are defined here, codec and all; the session accepts a
//! `SUBSCRIBE` and the server's driver streams the events (it owns the change feed).
//!
//! This module is the codec: the frames ([`ClientFrame`], [`ServerFrame`]), the status encoding
//! and the [`QueryLimits`]. The server side is [`QuerySession`] (the `session` submodule), a
//! pure function of the input bytes, the pinned store, the API keys and the time, so the driver
//! only moves bytes.

use std::sync::Arc;

use bytes::BufMut;

use crate::model::{ClientSet, Ext, ExtLimits, Sid, Status};
use crate::proto::ErrorCode;
use crate::wire::{put_ext, put_frame, read_ext, DecodeError, Reader};

mod session;

pub use session::{QueryCtx, QueryError, QueryOutcome, QuerySession, Subscription};

/// Magic at the start of `HELLO`: ASCII `PRSQ`.
pub const MAGIC: [u8; 4] = *b"PRSQ";
/// The newest protocol version this build speaks (it also accepts [`VERSION_1`]).
pub const VERSION: u8 = 2;
/// The first version: no key, no mode.
pub const VERSION_1: u8 = 1;
/// Longest event id (`SUBSCRIBE.resume`, `EVENT.event_id`), in bytes.
pub const MAX_EVENT_ID: usize = 64;

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
    /// Client → server (v2, watch mode): open a stream of status changes.
    pub const SUBSCRIBE: u8 = 0x20;
    /// Server → client (v2, watch mode): one status of a stream, with its event id.
    pub const EVENT: u8 = 0x21;
    /// Server → client (v2, watch mode): the resume point is gone; fresh statuses follow.
    pub const RESET: u8 = 0x22;
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

/// What a connection is for, chosen in a v2 `HELLO` (a v1 connection is [`Mode::Query`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Pipelined `QUERY` frames answered in request order.
    Query = 0,
    /// `SUBSCRIBE`, then `EVENT`s pushed by the server.
    Watch = 1,
}

/// A `HELLO`, by version.
#[derive(Clone, PartialEq, Eq)]
pub enum Hello {
    /// Version 1: magic and version only.
    V1,
    /// Version 2: a mode and an API key (empty: none).
    V2 {
        /// What the connection is for.
        mode: Mode,
        /// The API key, 0 to 255 bytes.
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::V1 => f.write_str("V1"),
            // The key never reaches a log.
            Self::V2 { mode, key } => {
                write!(f, "V2 {{ mode: {mode:?}, key: {} bytes }}", key.len())
            }
        }
    }
}

/// A frame sent by a query client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `HELLO`.
    Hello(Hello),
    /// `QUERY`: raw ids as sent (zero is rejected per request, not per connection).
    Query {
        /// Echoed in the answer.
        req_id: u32,
        /// The ids asked for.
        ids: Vec<u64>,
    },
    /// `SUBSCRIBE` (v2, watch mode): raw ids as sent.
    Subscribe {
        /// Echoed in the stream's `EVENT` and `RESET` frames.
        req_id: u32,
        /// The last event id the client saw (0 to [`MAX_EVENT_ID`] bytes; empty: start fresh).
        resume: Vec<u8>,
        /// The ids to watch.
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
    /// `EVENT` (v2, watch mode): one status of a stream.
    Event {
        /// The `SUBSCRIBE`'s request id.
        req_id: u32,
        /// Opaque, 1 to [`MAX_EVENT_ID`] bytes: what to resume from.
        event_id: Vec<u8>,
        /// The status, as in `RESULT`.
        status: Status,
    },
    /// `RESET` (v2, watch mode): the resume point is outside the retention window; forget
    /// what the stream said, the current status of every id follows.
    Reset {
        /// The `SUBSCRIBE`'s request id.
        req_id: u32,
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
            Self::Hello(Hello::V1) => put_frame(out, ty::HELLO, |b| {
                b.put_slice(&MAGIC);
                b.put_u8(VERSION_1);
            }),
            Self::Hello(Hello::V2 { mode, key }) => put_frame(out, ty::HELLO, |b| {
                let key = key.get(..255).unwrap_or(key);
                b.put_slice(&MAGIC);
                b.put_u8(VERSION);
                b.put_u8(*mode as u8);
                b.put_u8(key.len() as u8);
                b.put_slice(key);
            }),
            Self::Query { req_id, ids } => put_frame(out, ty::QUERY, |b| {
                b.put_u32(*req_id);
                b.put_u16(ids.len() as u16);
                for id in ids {
                    b.put_u64(*id);
                }
            }),
            Self::Subscribe {
                req_id,
                resume,
                ids,
            } => put_frame(out, ty::SUBSCRIBE, |b| {
                let resume = resume.get(..MAX_EVENT_ID).unwrap_or(resume);
                b.put_u32(*req_id);
                b.put_u8(resume.len() as u8);
                b.put_slice(resume);
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
                //= docs/protocols/query.md#hello-0x01-client--server
                //# 1 or 2. Any other value: `ERROR` 2
                match r.u8("version")? {
                    VERSION_1 => Self::Hello(Hello::V1),
                    VERSION => {
                        let mode = match r.u8("mode")? {
                            0 => Mode::Query,
                            1 => Mode::Watch,
                            _ => return Err(DecodeError::Invalid("mode")),
                        };
                        let n = usize::from(r.u8("key length")?);
                        let key = r.take(n, "key")?.to_vec();
                        Self::Hello(Hello::V2 { mode, key })
                    }
                    v => return Err(DecodeError::BadVersion(v)),
                }
            }
            ty::QUERY => {
                let req_id = r.u32("request id")?;
                let ids = read_ids(&mut r)?;
                Self::Query { req_id, ids }
            }
            ty::SUBSCRIBE => {
                let req_id = r.u32("request id")?;
                let resume = read_event_id(&mut r, 0)?;
                let ids = read_ids(&mut r)?;
                Self::Subscribe {
                    req_id,
                    resume,
                    ids,
                }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(f)
    }
}

/// `count:u16` then exactly `count` ids filling the rest of the body.
fn read_ids(r: &mut Reader<'_>) -> Result<Vec<u64>, DecodeError> {
    let count = usize::from(r.u16("id count")?);
    // The frame is already bounded by max_frame; 8 bytes per id are checked first.
    if r.remaining() != count * 8 {
        return Err(DecodeError::Invalid("id count does not match frame length"));
    }
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        ids.push(r.u64("id")?);
    }
    Ok(ids)
}

/// `len:u8` then an event id of `min ..= MAX_EVENT_ID` bytes.
fn read_event_id(r: &mut Reader<'_>, min: usize) -> Result<Vec<u8>, DecodeError> {
    let n = usize::from(r.u8("event id length")?);
    if n < min || n > MAX_EVENT_ID {
        return Err(DecodeError::Invalid("event id length"));
    }
    Ok(r.take(n, "event id")?.to_vec())
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
        // The server checked the ext against its own limits when it took it.
        Some(read_ext(r, &ExtLimits::WIRE)?)
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
            Self::Event {
                req_id,
                event_id,
                status,
            } => put_frame(out, ty::EVENT, |b| {
                let id = event_id.get(..MAX_EVENT_ID).unwrap_or(event_id);
                b.put_u32(*req_id);
                b.put_u8(id.len() as u8);
                b.put_slice(id);
                put_status(b, status);
            }),
            Self::Reset { req_id, message } => put_frame(out, ty::RESET, |b| {
                let m = message.as_bytes().get(..1024).unwrap_or(message.as_bytes());
                b.put_u32(*req_id);
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
            ty::EVENT => Self::Event {
                req_id: r.u32("request id")?,
                event_id: read_event_id(&mut r, 1)?,
                status: read_status(&mut r)?,
            },
            ty::RESET => {
                let req_id = r.u32("request id")?;
                let n = usize::from(r.u16("message length")?);
                let message = String::from_utf8_lossy(r.take(n, "message")?).into_owned();
                Self::Reset { req_id, message }
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

/// Appends a `RESULT` frame (the session writes it from its scratch statuses, no `ServerFrame`).
pub(super) fn put_result(out: &mut Vec<u8>, req_id: u32, as_of_ms: u64, statuses: &[Status]) {
    put_frame(out, ty::RESULT, |b| {
        b.put_u32(req_id);
        b.put_u64(as_of_ms);
        b.put_u16(statuses.len() as u16);
        for s in statuses {
            put_status(b, s);
        }
    });
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
