//! Blocking client libraries for presenced's binary protocols.
//!
//! # Layout
//!
//! - [`PoolClient`] (`pool`): what a user status pool links to push events. It numbers every
//!   event, keeps each one until it is acked, and after a broken connection reconnects (to the
//!   next node in its list first) and re-sends every un-acked event, so nothing acked is ever
//!   lost and nothing un-acked is silently dropped.
//! - [`QueryClient`] (`query`): pipelined batch queries over raw TCP; a query that fails on a
//!   broken connection is sent again on the next node that answers.
//! - [`ServerAddr`] (`addr`): a node's `HOST:PORT`, with the host kept as a name and resolved
//!   again at every connection attempt.
//! - `dial`: the fail-over both clients share. Each client takes a list of addresses; to
//!   (re)connect it tries every address once in a round (starting after the one it used last),
//!   then sleeps a backoff (20 ms doubling to 500 ms) before the next round, until `retry_for`
//!   passes (the first round always runs to its end). An attempt is bounded by the connect
//!   timeout and then by the handshake timeout, so an address that accepts connections but never
//!   answers (a stopped process) costs one handshake timeout, not a hang.
//! - [`read_frame`]: the one blocking frame reader, shared by both clients and by the load
//!   generator of the `presenced` binary.
//! - [`ClientError`]: why a call failed.
//!
//! # Threads
//!
//! ```text
//!   caller's thread ──write_all──► TcpStream (blocking) ──read_frame──► caller's thread
//! ```
//!
//! No thread is spawned: every call blocks the caller until it is answered, times out (the
//! options' timeouts, as socket timeouts) or fails.
//!
//! These use `std::net` directly: they are drivers, not protocol code; the framing and messages
//! come from `presenced_core::proto`. Architecture Invariant: this crate does not depend on mio
//! or on the server.

mod addr;
mod dial;
mod pool;
mod query;

use std::io::Read;

use presenced_core::wire::DecodeError;

pub use self::addr::{ServerAddr, ServerAddrError};
pub use self::pool::{PoolClient, PoolClientOptions};
pub use self::query::{QueryClient, QueryClientOptions};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed (or timed out) and could not be re-established in time on any
    /// address. Un-acked events are kept.
    //
    // Neither this nor `Decode` is a `#[source]`: their message is already in ours, and error
    // reporters that print the chain (`anyhow`'s `{:#}`) would print it twice.
    #[error("i/o: {0}")]
    Io(std::io::Error),
    /// The server sent bytes that do not decode. The connection was dropped.
    #[error("bad frame from server: {0}")]
    Decode(DecodeError),
    /// The server closed the session with an error (bad token, protocol violation, ...).
    #[error("server error {code}: {message}")]
    Server {
        /// The error code byte.
        code: u8,
        /// The server's message.
        message: String,
    },
    /// The server refused one query (the connection stays usable).
    #[error("query refused ({code}): {message}")]
    Rejected {
        /// The error code byte.
        code: u8,
        /// The server's message.
        message: String,
    },
    /// The server answered something out of order.
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<DecodeError> for ClientError {
    fn from(e: DecodeError) -> Self {
        Self::Decode(e)
    }
}

impl ClientError {
    /// Whether another attempt (on this node later, or on another node) may succeed: a broken
    /// connection, or a server that said it is unavailable (not ready yet, draining). A server
    /// that refuses the bytes themselves (bad token, bad event) would refuse them again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io(_) => true,
            Self::Server { code, .. } => {
                *code == presenced_core::proto::ErrorCode::Unavailable as u8
            }
            _ => false,
        }
    }
}

/// Reads one whole frame (type and body) from a blocking stream.
///
/// `buf` holds bytes read earlier and not yet returned; bytes after the frame stay in it for the
/// next call, so the same `buf` must be passed for every frame of a stream. Frames longer than
/// `max_frame` are a [`ClientError::Decode`]; the end of the stream before a whole frame is
/// [`ClientError::Io`] with [`std::io::ErrorKind::UnexpectedEof`].
pub fn read_frame<R: Read + ?Sized>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    max_frame: u32,
) -> Result<(u8, Vec<u8>), ClientError> {
    loop {
        if let Some((ty, body, n)) = presenced_core::wire::split_frame(buf, max_frame)? {
            let frame = (ty, body.to_vec());
            buf.drain(..n);
            return Ok(frame);
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}
