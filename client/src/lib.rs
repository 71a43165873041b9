//! Blocking client libraries for presenced's binary protocols.
//!
//! - [`PoolClient`]: what a user status pool links to push events. It numbers every event, keeps
//!   each one until it is acked, and after a broken connection reconnects (to the same node or
//!   the next one in its list) and re-sends every un-acked event, so nothing acked is ever lost
//!   and nothing un-acked is silently dropped.
//! - [`QueryClient`]: pipelined batch queries over raw TCP.
//!
//! These use `std::net` directly: they are drivers, not protocol code; the framing and messages
//! come from `presenced_core::proto`.

mod pool;
mod query;

pub use pool::{PoolClient, PoolClientOptions};
pub use query::QueryClient;

use presenced_core::wire::DecodeError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection failed and could not be re-established in time. Un-acked events are kept.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that do not decode. The connection was dropped.
    #[error("bad frame from server: {0}")]
    Decode(#[from] DecodeError),
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

/// Reads one whole frame from a blocking stream into `buf` (which keeps leftover bytes).
fn read_frame(
    stream: &mut std::net::TcpStream,
    buf: &mut Vec<u8>,
    max_frame: u32,
) -> Result<(u8, Vec<u8>), ClientError> {
    use std::io::Read;
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
