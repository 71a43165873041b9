//! The pool protocol codec: `docs/protocols/pool.md`.
//!
//! A pool (the IM system's user status pool) opens a TCP connection, sends `HELLO`, receives
//! `WELCOME`, then streams `EVENTS` frames, each holding a batch of consecutively numbered events;
//! presenced answers each batch with a cumulative `ACK` once it is applied.
//!
//! Decoding is a pure function of the bytes and the [`PoolLimits`]; encoding is infallible for
//! valid typed values, and `decode(encode(x)) == x`.

use std::sync::Arc;

use bytes::BufMut;

use crate::model::{ClientType, Ext, ExtLimits, Sid, Uid};
use crate::wire::{put_ext, put_frame, read_ext, DecodeError, Reader};

/// Magic at the start of `HELLO`: ASCII `PRSP`.
pub const MAGIC: [u8; 4] = *b"PRSP";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;

/// Frame types.
pub mod ty {
    /// Client → server: handshake.
    pub const HELLO: u8 = 0x01;
    /// Server → client: handshake accepted.
    pub const WELCOME: u8 = 0x02;
    /// Client → server: liveness probe.
    pub const PING: u8 = 0x04;
    /// Server → client: answer to `PING`.
    pub const PONG: u8 = 0x05;
    /// Client → server: a batch of events.
    pub const EVENTS: u8 = 0x10;
    /// Server → client: cumulative acknowledgement.
    pub const ACK: u8 = 0x11;
    /// Server → client: fatal error, the server closes the connection after it.
    pub const ERROR: u8 = super::super::ERROR;
}

/// Event kinds inside `EVENTS`.
mod kind {
    pub(super) const LOGIN: u8 = 1;
    pub(super) const LOGOUT: u8 = 2;
    pub(super) const PERMISSION: u8 = 3;
    pub(super) const SNAPSHOT_BEGIN: u8 = 4;
    pub(super) const SNAPSHOT_END: u8 = 5;
}

/// Limits a pool connection's decoder enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Largest frame (type and body), in bytes.
    pub max_frame: u32,
    /// Most events in one `EVENTS` frame.
    pub max_batch: u16,
    /// Limits on extension data.
    pub ext: ExtLimits,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_frame: 1 << 20,
            max_batch: 4096,
            ext: ExtLimits::default(),
        }
    }
}

/// The handshake a pool sends first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The pool's id, chosen by the operator.
    pub pool: u32,
    /// The id of this event stream: a random number the pool client picks once per process, so
    /// that sequence numbers of two runs of the same pool are never confused.
    pub stream: u64,
    /// The sequence number of the first event the client is about to (re)send.
    pub resume_from: u64,
    /// An optional shared secret (empty: none), at most 255 bytes.
    pub token: Vec<u8>,
}

/// One pool event (`IPresence<TUid,TSid>` of the patent, plus snapshot markers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `UserLogin(uid, sid, ext)`.
    Login {
        /// The user's public IM id.
        sid: Sid,
        /// The pool's internal user id.
        uid: Uid,
        /// The client logged in on.
        client: ClientType,
        /// Replacement extension data.
        ext: Option<Arc<Ext>>,
    },
    /// `UserLogout(uid, sid, ext)`.
    Logout {
        /// The user's public IM id.
        sid: Sid,
        /// The pool's internal user id.
        uid: Uid,
        /// The client logged out of.
        client: ClientType,
        /// Replacement extension data.
        ext: Option<Arc<Ext>>,
    },
    /// `PermissionChanged(uid, sid, ext)`.
    Permission {
        /// The user's public IM id.
        sid: Sid,
        /// The pool's internal user id.
        uid: Uid,
        /// Whether strangers may start a conversation.
        allow: bool,
        /// Replacement extension data.
        ext: Option<Arc<Ext>>,
    },
    /// Start of a full snapshot of this pool's online users.
    SnapshotBegin,
    /// End of the snapshot: users of this pool it did not list go offline.
    SnapshotEnd,
}

impl Event {
    /// The user the event is about (`None` for snapshot markers).
    pub fn sid(&self) -> Option<Sid> {
        match self {
            Self::Login { sid, .. } | Self::Logout { sid, .. } | Self::Permission { sid, .. } => {
                Some(*sid)
            }
            Self::SnapshotBegin | Self::SnapshotEnd => None,
        }
    }
}

/// A frame sent by a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `HELLO`.
    Hello(Hello),
    /// `EVENTS`: events numbered `first_seq`, `first_seq + 1`, ...
    Events {
        /// Sequence number of the first event.
        first_seq: u64,
        /// The events, at least one.
        events: Vec<Event>,
    },
    /// `PING`.
    Ping(u64),
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
        /// Highest sequence number of this stream already applied on this node (0: none).
        applied: u64,
    },
    /// `ACK`: every event up to and including `seq` is applied.
    Ack(u64),
    /// `PONG`.
    Pong(u64),
    /// `ERROR`: the server closes the connection after it.
    Error {
        /// An [`ErrorCode`](super::ErrorCode) as a byte.
        code: u8,
        /// Human-readable reason.
        message: String,
    },
}

impl Event {
    fn encode(&self, out: &mut impl BufMut) {
        let put_ext_opt = |out: &mut dyn BufMut, ext: &Option<Arc<Ext>>| match ext {
            None => out.put_u8(0),
            Some(e) => {
                out.put_u8(1);
                let mut v = Vec::new();
                put_ext(&mut v, e);
                out.put_slice(&v);
            }
        };
        match self {
            Self::Login {
                sid,
                uid,
                client,
                ext,
            }
            | Self::Logout {
                sid,
                uid,
                client,
                ext,
            } => {
                let k = if matches!(self, Self::Login { .. }) {
                    kind::LOGIN
                } else {
                    kind::LOGOUT
                };
                out.put_u8(k);
                out.put_u64(sid.get());
                out.put_u64(*uid);
                out.put_u8(client.code());
                put_ext_opt(out, ext);
            }
            Self::Permission {
                sid,
                uid,
                allow,
                ext,
            } => {
                out.put_u8(kind::PERMISSION);
                out.put_u64(sid.get());
                out.put_u64(*uid);
                out.put_u8(u8::from(*allow));
                put_ext_opt(out, ext);
            }
            Self::SnapshotBegin => out.put_u8(kind::SNAPSHOT_BEGIN),
            Self::SnapshotEnd => out.put_u8(kind::SNAPSHOT_END),
        }
    }

    fn decode(r: &mut Reader<'_>, limits: &PoolLimits) -> Result<Self, DecodeError> {
        let k = r.u8("event kind")?;
        match k {
            kind::SNAPSHOT_BEGIN => return Ok(Self::SnapshotBegin),
            kind::SNAPSHOT_END => return Ok(Self::SnapshotEnd),
            kind::LOGIN | kind::LOGOUT | kind::PERMISSION => {}
            _ => return Err(DecodeError::Invalid("event kind")),
        }
        let sid = Sid::new(r.u64("sid")?).ok_or(DecodeError::Invalid("sid 0"))?;
        let uid = r.u64("uid")?;
        let arg = r.u8("event argument")?;
        let ext = match r.u8("ext flag")? {
            0 => None,
            1 => Some(read_ext(r, &limits.ext)?),
            _ => return Err(DecodeError::Invalid("ext flag")),
        };
        Ok(match k {
            kind::PERMISSION => {
                let allow = match arg {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("permission flag")),
                };
                Self::Permission {
                    sid,
                    uid,
                    allow,
                    ext,
                }
            }
            _ => {
                let client = ClientType::from_code(arg).ok_or(DecodeError::Invalid("client"))?;
                if k == kind::LOGIN {
                    Self::Login {
                        sid,
                        uid,
                        client,
                        ext,
                    }
                } else {
                    Self::Logout {
                        sid,
                        uid,
                        client,
                        ext,
                    }
                }
            }
        })
    }
}

impl ClientFrame {
    /// Appends this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hello(h) => put_frame(out, ty::HELLO, |b| {
                b.put_slice(&MAGIC);
                b.put_u8(VERSION);
                b.put_u32(h.pool);
                b.put_u64(h.stream);
                b.put_u64(h.resume_from);
                let token = h.token.get(..255).unwrap_or(&h.token);
                b.put_u8(token.len() as u8);
                b.put_slice(token);
            }),
            Self::Events { first_seq, events } => put_frame(out, ty::EVENTS, |b| {
                b.put_u64(*first_seq);
                b.put_u16(events.len() as u16);
                for e in events {
                    e.encode(b);
                }
            }),
            Self::Ping(n) => put_frame(out, ty::PING, |b| b.put_u64(*n)),
        }
    }

    /// Decodes the body of a frame of type `ty` (as split by [`crate::wire::split_frame`]).
    pub fn decode(ty: u8, body: &[u8], limits: &PoolLimits) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let frame = match ty {
            ty::HELLO => {
                if r.array::<4>("magic")? != MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                let version = r.u8("version")?;
                if version != VERSION {
                    return Err(DecodeError::BadVersion(version));
                }
                let pool = r.u32("pool id")?;
                let stream = r.u64("stream id")?;
                let resume_from = r.u64("resume point")?;
                let n = usize::from(r.u8("token length")?);
                let token = r.take(n, "token")?.to_vec();
                Self::Hello(Hello {
                    pool,
                    stream,
                    resume_from,
                    token,
                })
            }
            ty::EVENTS => {
                let first_seq = r.u64("first seq")?;
                let count = r.u16("event count")?;
                if count == 0 {
                    return Err(DecodeError::Invalid("empty batch"));
                }
                if count > limits.max_batch {
                    return Err(DecodeError::TooLarge {
                        what: "batch",
                        len: count.into(),
                        max: limits.max_batch.into(),
                    });
                }
                if first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none() {
                    return Err(DecodeError::Invalid("sequence number"));
                }
                // Each event is at least one byte: the count cannot make us over-allocate.
                if r.remaining() < usize::from(count) {
                    return Err(DecodeError::Truncated("events"));
                }
                let mut events = Vec::with_capacity(count.into());
                for _ in 0..count {
                    events.push(Event::decode(&mut r, limits)?);
                }
                Self::Events { first_seq, events }
            }
            ty::PING => Self::Ping(r.u64("ping nonce")?),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(frame)
    }
}

impl ServerFrame {
    /// Appends this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Welcome {
                version,
                node,
                applied,
            } => put_frame(out, ty::WELCOME, |b| {
                b.put_u8(*version);
                b.put_u16(*node);
                b.put_u64(*applied);
            }),
            Self::Ack(seq) => put_frame(out, ty::ACK, |b| b.put_u64(*seq)),
            Self::Pong(n) => put_frame(out, ty::PONG, |b| b.put_u64(*n)),
            Self::Error { code, message } => {
                let code = super::ErrorCode::from_u8(*code).unwrap_or(super::ErrorCode::Protocol);
                super::put_error(out, code, message);
            }
        }
    }

    /// Decodes the body of a frame of type `ty`.
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let f = match ty {
            ty::WELCOME => Self::Welcome {
                version: r.u8("version")?,
                node: r.u16("node")?,
                applied: r.u64("applied")?,
            },
            ty::ACK => Self::Ack(r.u64("ack")?),
            ty::PONG => Self::Pong(r.u64("pong nonce")?),
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
    use crate::wire::split_frame;

    fn decode_one(bytes: &[u8]) -> ClientFrame {
        let (t, body, n) = split_frame(bytes, 1 << 20).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        ClientFrame::decode(t, body, &PoolLimits::default()).unwrap()
    }

    /// Checks one vector of docs/protocols/pool.md both ways.
    fn check(frame: ClientFrame, bytes: &[u8]) {
        let mut out = Vec::new();
        frame.encode(&mut out);
        assert_eq!(out, bytes, "encoding of {frame:?}");
        assert_eq!(decode_one(bytes), frame);
    }

    //= docs/protocols/pool.md#test-vectors
    #[test]
    fn vectors_from_the_spec() {
        check(
            ClientFrame::Hello(Hello {
                pool: 7,
                stream: 0x0102030405060708,
                resume_from: 1,
                token: b"s3".to_vec(),
            }),
            &hex!("0000001d 01 50525350 01 00000007 0102030405060708 0000000000000001 02 7333"),
        );
        let nick = Arc::new(
            Ext::new(vec![("nick".into(), "alice".into())], &ExtLimits::default()).unwrap(),
        );
        check(
            ClientFrame::Events {
                first_seq: 1,
                events: vec![Event::Login {
                    sid: Sid::new(10086).unwrap(),
                    uid: 1,
                    client: ClientType::Pc,
                    ext: Some(nick),
                }],
            },
            &hex!("0000002b 10 0000000000000001 0001 01 0000000000002766 0000000000000001 00 01 01 04 6e69636b 0005 616c696365"),
        );
        check(
            ClientFrame::Events {
                first_seq: 2,
                events: vec![
                    Event::Permission {
                        sid: Sid::new(10086).unwrap(),
                        uid: 1,
                        allow: false,
                        ext: None,
                    },
                    Event::SnapshotBegin,
                ],
            },
            &hex!(
                "0000001f 10 0000000000000002 0002 03 0000000000002766 0000000000000001 00 00 04"
            ),
        );
        let mut out = Vec::new();
        ServerFrame::Welcome {
            version: 1,
            node: 1,
            applied: 0,
        }
        .encode(&mut out);
        assert_eq!(out, hex!("0000000c 02 01 0001 0000000000000000"));
        out.clear();
        ServerFrame::Ack(2).encode(&mut out);
        assert_eq!(out, hex!("00000009 11 0000000000000002"));
    }

    #[test]
    fn rejects_bad_handshakes_and_events() {
        let l = PoolLimits::default();
        let d = |t, b: &[u8]| ClientFrame::decode(t, b, &l);
        assert_eq!(d(ty::HELLO, &hex!("47455420")), Err(DecodeError::BadMagic));
        assert_eq!(
            d(ty::HELLO, &hex!("50525350 09")),
            Err(DecodeError::BadVersion(9))
        );
        assert_eq!(d(0x33, &[]), Err(DecodeError::UnknownType(0x33)));
        assert_eq!(
            d(ty::EVENTS, &hex!("0000000000000001 0000")),
            Err(DecodeError::Invalid("empty batch"))
        );
        assert!(matches!(
            d(ty::EVENTS, &hex!("0000000000000001 ffff")),
            Err(DecodeError::TooLarge { .. })
        ));
        // sid 0
        assert_eq!(
            d(
                ty::EVENTS,
                &hex!("0000000000000001 0001 01 0000000000000000 0000000000000001 00 00")
            ),
            Err(DecodeError::Invalid("sid 0"))
        );
        // client code 9
        assert_eq!(
            d(
                ty::EVENTS,
                &hex!("0000000000000001 0001 01 0000000000000001 0000000000000001 09 00")
            ),
            Err(DecodeError::Invalid("client"))
        );
        assert_eq!(
            d(ty::PING, &hex!("0000000000000001 00")),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    pub(crate) fn arb_event() -> impl Strategy<Value = Event> {
        let sid = (1u64..).prop_map(|s| Sid::new(s).unwrap());
        let client = (0u8..6).prop_map(|c| ClientType::from_code(c).unwrap());
        let ext = prop::option::of(
            prop::collection::btree_map("[a-z]{1,8}", "\\PC{0,12}", 0..4).prop_map(|m| {
                Arc::new(Ext::new(m.into_iter().collect(), &ExtLimits::default()).unwrap())
            }),
        );
        prop_oneof![
            (sid.clone(), any::<u64>(), client.clone(), ext.clone()).prop_map(
                |(sid, uid, client, ext)| Event::Login {
                    sid,
                    uid,
                    client,
                    ext
                }
            ),
            (sid.clone(), any::<u64>(), client, ext.clone()).prop_map(|(sid, uid, client, ext)| {
                Event::Logout {
                    sid,
                    uid,
                    client,
                    ext,
                }
            }),
            (sid, any::<u64>(), any::<bool>(), ext).prop_map(|(sid, uid, allow, ext)| {
                Event::Permission {
                    sid,
                    uid,
                    allow,
                    ext,
                }
            }),
            Just(Event::SnapshotBegin),
            Just(Event::SnapshotEnd),
        ]
    }

    proptest! {
        #[test]
        fn events_round_trip(first in 1u64..1 << 60, events in prop::collection::vec(arb_event(), 1..20)) {
            let f = ClientFrame::Events { first_seq: first, events };
            let mut out = Vec::new();
            f.encode(&mut out);
            prop_assert_eq!(decode_one(&out), f);
        }

        #[test]
        fn hello_round_trips(pool in any::<u32>(), stream in any::<u64>(), resume in any::<u64>(), token in prop::collection::vec(any::<u8>(), 0..255)) {
            let f = ClientFrame::Hello(Hello { pool, stream, resume_from: resume, token });
            let mut out = Vec::new();
            f.encode(&mut out);
            prop_assert_eq!(decode_one(&out), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            crate::fuzzing::ingest_frame(&bytes);
        }
    }
}
