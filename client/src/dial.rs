//! Connecting to one of several nodes: the fail-over rounds both clients share.
//!
//! A client holds a list of [`ServerAddr`]s and a rotating position in it. To (re)connect it
//! makes **rounds**: one attempt per address, starting after the address it last used, with no
//! pause inside a round; between rounds it sleeps an exponential backoff (20 ms doubling up to
//! 500 ms). The first round is always complete, whatever the deadline, so every address is tried
//! at least once; later rounds stop at the deadline.
//!
//! One attempt is: resolve the name (again, every time: a name that moves is followed), connect
//! to each address it resolves to within the connect timeout, then run the client's handshake
//! within the handshake timeout. The handshake bound is what lets a client leave an address that
//! accepts connections but never answers (a stopped process, whose kernel still completes TCP
//! handshakes, or a half-dead load balancer): [`ReadUntil`] bounds the whole exchange, not each
//! read, so bytes that trickle in do not extend it.
//!
//! Every failure moves on to the next address except a [`ClientError::Server`] refusal that
//! another node would repeat (a bad token): that ends the attempt at once.
//!
//! This module does no protocol work: the handshake is the caller's closure.

use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::{ClientError, ServerAddr};

/// The first pause between two rounds.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// The longest pause between two rounds.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Tries `attempt` on the addresses in rounds (see the module docs) until one succeeds, a
/// refusal is final, or `deadline` passes (after the first round). `next` is the rotating
/// position: the index of the address to try first, advanced past every address tried.
///
/// Returns the last error, prefixed with its address, when no address succeeded. Failures are
/// logged as warnings in the first round and at debug level after.
pub(crate) fn connect_any<T>(
    what: &str,
    addrs: &[ServerAddr],
    next: &mut usize,
    deadline: Instant,
    mut attempt: impl FnMut(&ServerAddr) -> Result<T, ClientError>,
) -> Result<T, ClientError> {
    if addrs.is_empty() {
        return Err(ClientError::Io(io::Error::new(
            ErrorKind::InvalidInput,
            "no address to connect to",
        )));
    }
    let mut backoff = FIRST_BACKOFF;
    let mut first_round = true;
    loop {
        let mut last = None;
        for _ in 0..addrs.len() {
            if !first_round && Instant::now() >= deadline {
                break;
            }
            let i = *next % addrs.len();
            *next = i + 1;
            let Some(addr) = addrs.get(i) else { continue };
            match attempt(addr) {
                Ok(t) => return Ok(t),
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    // Said once per address; the later rounds only repeat it.
                    if first_round {
                        warn!("{what} {addr} failed: {e}");
                    } else {
                        debug!("{what} {addr} failed again: {e}");
                    }
                    last = Some(with_addr(e, addr));
                }
            }
        }
        first_round = false;
        if Instant::now() + backoff >= deadline {
            return Err(last.unwrap_or_else(|| {
                ClientError::Io(io::Error::new(
                    ErrorKind::TimedOut,
                    "out of time to connect",
                ))
            }));
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Resolves `addr` now and connects to the first of its addresses that accepts within
/// `timeout` each. The stream has `TCP_NODELAY` set and no read or write timeout yet.
pub(crate) fn dial(
    addr: &ServerAddr,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ClientError> {
    let timeout = timeout.max(Duration::from_millis(1));
    let mut last = None;
    for sa in addr.resolve()? {
        match TcpStream::connect_timeout(&sa, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok((stream, sa));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ClientError::Io(last.unwrap_or_else(|| {
        io::Error::new(ErrorKind::NotFound, "the name resolves to no address")
    })))
}

/// A reader over a stream that fails with [`ErrorKind::TimedOut`] once `until` passes, however
/// the bytes trickle in: each read waits at most for the time left.
///
/// It changes the stream's read timeout; the caller sets its own again afterwards.
pub(crate) struct ReadUntil<'a> {
    /// The stream read from.
    pub(crate) stream: &'a TcpStream,
    /// When the reading must be over.
    pub(crate) until: Instant,
}

impl Read for ReadUntil<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        match stream.read(buf) {
            Err(e) if is_timeout(&e) => Err(ErrorKind::TimedOut.into()),
            r => r,
        }
    }
}

/// Turns a socket timeout (reads and writes report it as `WouldBlock` on Unix) into an error
/// that says what did not arrive in time: `no WELCOME within 2000 ms`.
pub(crate) fn name_timeout(e: ClientError, what: &str, after: Duration) -> ClientError {
    match e {
        ClientError::Io(io) if is_timeout(&io) => ClientError::Io(io::Error::new(
            ErrorKind::TimedOut,
            format!("no {what} within {} ms", after.as_millis()),
        )),
        e => e,
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A refusal every node of the cluster would repeat (a bad token, an event the protocol does
/// not allow): trying other addresses is pointless.
fn is_final(e: &ClientError) -> bool {
    matches!(e, ClientError::Server { .. }) && !e.is_retryable()
}

/// Prefixes an I/O error with the address it happened on.
fn with_addr(e: ClientError, addr: &ServerAddr) -> ClientError {
    match e {
        ClientError::Io(io) => ClientError::Io(io::Error::new(io.kind(), format!("{addr}: {io}"))),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn addrs(n: u16) -> Vec<ServerAddr> {
        (1..=n)
            .map(|p| ServerAddr::new("127.0.0.1", p).unwrap())
            .collect()
    }

    fn refused() -> ClientError {
        ClientError::Io(ErrorKind::ConnectionRefused.into())
    }

    #[test]
    fn a_round_tries_every_address_from_the_rotating_position() {
        let tried = RefCell::new(Vec::new());
        let mut next = 1;
        let got = connect_any("test", &addrs(3), &mut next, Instant::now(), |a| {
            tried.borrow_mut().push(a.port());
            if a.port() == 1 {
                Ok(a.port())
            } else {
                Err(refused())
            }
        });
        assert_eq!(got.unwrap(), 1);
        assert_eq!(*tried.borrow(), [2, 3, 1]);
        assert_eq!(
            next, 1,
            "the next attempt starts after the address that answered"
        );
    }

    #[test]
    fn the_first_round_is_complete_even_past_the_deadline() {
        let mut tried = 0;
        let mut next = 0;
        let past = Instant::now();
        let got: Result<(), _> = connect_any("test", &addrs(3), &mut next, past, |_| {
            tried += 1;
            Err(refused())
        });
        assert_eq!(tried, 3);
        let e = got.unwrap_err().to_string();
        assert!(
            e.contains("127.0.0.1:3:"),
            "the last error names its address: {e}"
        );
    }

    #[test]
    fn rounds_repeat_with_backoff_until_the_deadline() {
        let mut tried = 0;
        let mut next = 0;
        let start = Instant::now();
        let deadline = start + Duration::from_millis(200);
        let got = connect_any("test", &addrs(2), &mut next, deadline, |_| {
            tried += 1;
            if tried == 5 {
                Ok(())
            } else {
                Err(refused())
            }
        });
        assert!(got.is_ok(), "{got:?}");
        // Pauses of 20 and 40 ms after the first two rounds.
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    #[test]
    fn a_final_refusal_stops_at_once() {
        let mut tried = 0;
        let mut next = 0;
        let got: Result<(), _> = connect_any("test", &addrs(3), &mut next, Instant::now(), |_| {
            tried += 1;
            Err(ClientError::Server {
                code: presenced_core::proto::ErrorCode::Auth as u8,
                message: "bad token".into(),
            })
        });
        assert!(matches!(got, Err(ClientError::Server { code: 3, .. })));
        assert_eq!(tried, 1);
    }

    #[test]
    fn no_address_is_an_error() {
        let mut next = 0;
        let got: Result<(), _> = connect_any("test", &[], &mut next, Instant::now(), |_| Ok(()));
        assert!(got.unwrap_err().to_string().contains("no address"));
    }
}
