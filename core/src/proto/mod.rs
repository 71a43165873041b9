//! Sans-IO codecs and state machines of the binary protocols.
//!
//! - [`pool`]: the pool protocol codec (IM user status pools push events, presenced acks).
//! - [`pool_session`]: the server side of one pool connection as a state machine.
//! - [`query`]: the raw-TCP batch query codec and its request handler.
//! - [`proxy`]: the PROXY protocol v1/v2 header an L4 load balancer puts in front of a relayed
//!   connection (`docs/protocols/proxy.md`).
//!
//! The byte-level documents are `docs/protocols/pool.md` and `docs/protocols/query.md`; their hex
//! vectors are the tests at the bottom of each module.
//!
//! Architecture Invariant: nothing here touches a socket or a clock.

pub mod pool;
pub mod pool_session;
pub mod proxy;
pub mod query;

/// Error codes carried by `ERROR` frames, shared by the pool and query protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// The peer sent bytes that do not decode.
    Malformed = 1,
    /// Protocol version not supported.
    Version = 2,
    /// Missing or wrong token.
    Auth = 3,
    /// A length above a configured limit.
    TooLarge = 4,
    /// A frame that is not allowed in the current state.
    Protocol = 5,
    /// An id that is zero.
    InvalidId = 6,
    /// More ids than the batch limit.
    TooManyIds = 7,
    /// The server is shutting down or overloaded; retry elsewhere.
    Unavailable = 8,
    /// Replication only: the connecting node was removed from the cluster (until re-admitted).
    Removed = 9,
    /// Query only: a feature of the protocol this build does not implement (`SUBSCRIBE`).
    Unsupported = 10,
    /// Query only (watch mode, reserved): the connection's queue overflowed; resume on a new
    /// connection.
    TooSlow = 11,
}

impl ErrorCode {
    /// The code for a byte, `None` if unknown.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Malformed,
            2 => Self::Version,
            3 => Self::Auth,
            4 => Self::TooLarge,
            5 => Self::Protocol,
            6 => Self::InvalidId,
            7 => Self::TooManyIds,
            8 => Self::Unavailable,
            9 => Self::Removed,
            10 => Self::Unsupported,
            11 => Self::TooSlow,
            _ => return None,
        })
    }
}

/// Writes an `ERROR` frame (type 0x7F): `code:u8 len:u16 message`.
pub fn put_error(out: &mut Vec<u8>, code: ErrorCode, msg: &str) {
    use bytes::BufMut;
    let msg = msg.as_bytes().get(..1024).unwrap_or(msg.as_bytes());
    crate::wire::put_frame(out, ERROR, |b| {
        b.put_u8(code as u8);
        b.put_u16(msg.len() as u16);
        b.put_slice(msg);
    });
}

/// Frame type of the connection-level error, identical in both protocols.
pub const ERROR: u8 = 0x7F;

/// Decodes an `ERROR` body.
pub fn read_error(body: &[u8]) -> Result<(u8, String), crate::wire::DecodeError> {
    let mut r = crate::wire::Reader::new(body);
    let code = r.u8("error code")?;
    let n = usize::from(r.u16("error message length")?);
    let msg = String::from_utf8_lossy(r.take(n, "error message")?).into_owned();
    r.finish()?;
    Ok((code, msg))
}
