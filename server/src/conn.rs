//! [`BufConn`]: the one buffered, non-blocking TCP connection of the drivers. The workers (pool,
//! query and HTTP connections) and the cluster thread (replication links) both wrap it and add
//! only their own protocol state. [`listen`] binds the listening sockets of both.
//!
//! It follows mio's rules (STYLE.md rule 15): readiness is drained until `WouldBlock`,
//! `Interrupted` is retried, `Ok(0)` from a read means the peer closed its half, and the
//! registered interest (`want_write`) is kept apart from observed readiness (`readable`).
//!
//! Bounds are the caller's: [`BufConn::read`] stops at a cap on unconsumed input and at a budget
//! of bytes per call, so one connection cannot make a driver buffer or work without limit.
//!
//! Memory: what a connection costs is the *capacity* of its two buffers, not what they hold, and
//! [`BufConn::footprint`] reports exactly that for the node-wide budget. The input buffer never
//! grows beyond the read cap it was given; an empty buffer keeps at most [`KEEP_INPUT`] or
//! [`KEEP_OUTPUT`] bytes, and [`BufConn::shrink`] returns what a connection that waits for its
//! peer (output blocked) does not need.
//!
//! This module makes no protocol decision and reads no clock.

use std::cell::Cell;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;

use anyhow::Context as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// Bytes read from the socket per `read` system call.
const CHUNK: usize = 64 * 1024;

thread_local! {
    /// The chunk [`BufConn::read`] reads into, one per thread, zeroed once when the thread first
    /// reads (a fresh zeroed chunk per call was a 64 KiB `memset` per request).
    static READ_CHUNK: Cell<Option<Box<[u8]>>> = const { Cell::new(None) };
}
/// Written output kept at the front of the output buffer before it is dropped, when the rest
/// cannot be written yet.
const COMPACT_AFTER: usize = 1 << 20;
/// Capacity an empty output buffer keeps; a larger one is freed, so that thousands of connections
/// that once held a large response do not keep its memory.
const KEEP_OUTPUT: usize = 64 << 10;
/// Capacity an empty input buffer keeps (a few requests of a normal client); a larger one is
/// freed, so that thousands of connections that once held a full read do not keep it.
const KEEP_INPUT: usize = 8 << 10;

/// Why [`BufConn::read`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadStop {
    /// The socket has nothing more for now (`WouldBlock`); readiness is drained.
    Drained,
    /// The peer closed its half (`Ok(0)`); nothing more will arrive.
    Eof,
    /// The unconsumed input reached the cap; the rest stays in the socket.
    Full,
    /// The budget of bytes for this call is spent; the socket may hold more, and with
    /// edge-triggered readiness nothing will say so: the caller must come back.
    Budget,
}

/// A non-blocking TCP stream with an input buffer (read until `WouldBlock`, consumed by the
/// caller) and an output buffer (appended by the caller, written by [`flush`](Self::flush)).
#[derive(Debug)]
pub(crate) struct BufConn {
    stream: TcpStream,
    /// INVARIANT: `rbuf[rpos..]` is the input not consumed yet.
    rbuf: Vec<u8>,
    rpos: usize,
    /// INVARIANT: `wbuf[wpos..]` is the output not written to the socket yet.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Readiness observed and not yet drained to `WouldBlock`.
    readable: bool,
    /// Whether WRITABLE is part of the registered interest.
    want_write: bool,
    /// The peer closed its half.
    eof: bool,
    /// Capacities an empty input and output buffer keep ([`KEEP_INPUT`], [`KEEP_OUTPUT`] unless
    /// [`keep_buffers`](Self::keep_buffers) raised them).
    keep: (usize, usize),
}

impl BufConn {
    /// Wraps `stream`. It counts as readable until a read says otherwise: data may have arrived
    /// before it was registered.
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
            wpos: 0,
            readable: true,
            want_write: false,
            eof: false,
            keep: (KEEP_INPUT, KEEP_OUTPUT),
        }
    }

    /// Lets empty buffers keep up to `bytes` of capacity: for the few connections that carry
    /// large frames back to back (replication links), which would otherwise grow a buffer from
    /// scratch, copying and faulting in fresh pages, for every frame.
    pub(crate) fn keep_buffers(&mut self, bytes: usize) {
        self.keep = (bytes.max(KEEP_INPUT), bytes.max(KEEP_OUTPUT));
    }

    /// Registers the stream for READABLE, plus WRITABLE if `writable` (a connect in progress).
    pub(crate) fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        writable: bool,
    ) -> io::Result<()> {
        registry.register(&mut self.stream, token, interest(writable))?;
        self.want_write = writable;
        Ok(())
    }

    /// Removes the stream from `registry` (errors are of no use when closing).
    pub(crate) fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }

    /// The stream, for socket queries (`take_error`, `peer_addr`).
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Records a readiness event.
    pub(crate) fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Whether readiness was observed and not yet drained.
    pub(crate) fn readable(&self) -> bool {
        self.readable
    }

    /// Whether the peer closed its half.
    pub(crate) fn eof(&self) -> bool {
        self.eof
    }

    /// Reads until `WouldBlock`, end of stream, `cap` bytes of unconsumed input, or `budget`
    /// bytes read by this call, whichever comes first. Returns the bytes read and why it
    /// stopped; an error other than `Interrupted` is returned as is (what was read before it
    /// stays in the input).
    ///
    /// It reads until `WouldBlock` even after a short read: stopping at a short read (epoll(7)
    /// Q&A 9) saved one `recv` per HTTP request but made a pool client's pushes stall without
    /// an ack (`tests/front_door.rs`, 2 runs in 3; BENCHMARKS.md, "HTTP 20-id path").
    pub(crate) fn read(&mut self, cap: usize, budget: usize) -> io::Result<(usize, ReadStop)> {
        let mut chunk = READ_CHUNK
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_else(|| vec![0; CHUNK].into_boxed_slice());
        let r = self.read_into(&mut chunk, cap, budget);
        // Fails only while the thread exits; the chunk is then dropped.
        let _ = READ_CHUNK.try_with(|c| c.set(Some(chunk)));
        r
    }

    /// [`read`](Self::read), through `chunk`.
    fn read_into(
        &mut self,
        chunk: &mut [u8],
        cap: usize,
        budget: usize,
    ) -> io::Result<(usize, ReadStop)> {
        if self.rpos > 0 && self.rpos * 2 >= self.rbuf.len() {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > self.keep.0 {
            self.rbuf = Vec::new();
        }
        let mut read = 0;
        loop {
            if self.input_len() >= cap {
                return Ok((read, ReadStop::Full));
            }
            if read >= budget {
                return Ok((read, ReadStop::Budget));
            }
            let want = CHUNK.min(cap - self.input_len());
            let Some(buf) = chunk.get_mut(..want) else {
                return Ok((read, ReadStop::Full));
            };
            match self.stream.read(buf) {
                Ok(0) => {
                    self.eof = true;
                    self.readable = false;
                    return Ok((read, ReadStop::Eof));
                }
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    // Grow by doubling as usual, but never past what the cap needs: a full
                    // buffer is the cap, not up to twice it.
                    let need = self.rbuf.len() + n;
                    if need > self.rbuf.capacity() {
                        // `cap` is `usize::MAX` for an unbounded connection (an established peer link).
                        let room = self.rpos.saturating_add(cap);
                        let target = (self.rbuf.capacity() * 2).clamp(need, room.max(need));
                        self.rbuf.reserve_exact(target - self.rbuf.len());
                    }
                    self.rbuf.extend_from_slice(data);
                    read += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable = false;
                    return Ok((read, ReadStop::Drained));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The input not consumed yet.
    pub(crate) fn input(&self) -> &[u8] {
        self.rbuf.get(self.rpos..).unwrap_or_default()
    }

    /// Bytes of input not consumed yet.
    pub(crate) fn input_len(&self) -> usize {
        self.rbuf.len() - self.rpos
    }

    /// Marks `n` bytes of input (at most all of it) as consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        self.rpos += n.min(self.input_len());
    }

    /// Drops all unconsumed input (after a framing error nothing more of it is looked at).
    pub(crate) fn clear_input(&mut self) {
        self.rbuf.clear();
        self.rpos = 0;
    }

    /// The output buffer, to append to. Callers only append, or take back what they appended
    /// since they last flushed; what was already written is not theirs to touch.
    pub(crate) fn output(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// The unconsumed input and the output buffer at once, for a session that reads the one
    /// and appends to the other.
    pub(crate) fn input_and_output(&mut self) -> (&[u8], &mut Vec<u8>) {
        (
            self.rbuf.get(self.rpos..).unwrap_or_default(),
            &mut self.wbuf,
        )
    }

    /// Bytes of output not written yet.
    pub(crate) fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes until `WouldBlock` or all output is gone. A write of zero bytes is
    /// `ErrorKind::WriteZero`; the connection is then unusable, as after any other error.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self
                .stream
                .write(self.wbuf.get(self.wpos..).unwrap_or_default())
            {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.wpos >= self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            if self.wbuf.capacity() > self.keep.1 {
                self.wbuf = Vec::new();
            }
        } else if self.wpos > COMPACT_AFTER {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// The memory the two buffers hold, bytes: their capacities, written and consumed parts
    /// included. This, not [`unsent`](Self::unsent), is what the connection costs.
    pub(crate) fn footprint(&self) -> usize {
        self.rbuf.capacity() + self.wbuf.capacity()
    }

    /// Returns the memory a connection that waits for its peer does not need: consumed input
    /// and written output are dropped and both buffers shrink to what they hold. It copies what
    /// is left, so callers do it once when the connection starts waiting, not on every service.
    pub(crate) fn shrink(&mut self) {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        self.rbuf.shrink_to_fit();
        if self.wpos > 0 {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        self.wbuf.shrink_to_fit();
    }

    /// Re-registers the stream if whether it waits for WRITABLE (output left) changed.
    pub(crate) fn update_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want = self.unsent() > 0;
        if want == self.want_write {
            return Ok(());
        }
        self.want_write = want;
        registry.reregister(&mut self.stream, token, interest(want))
    }
}

/// Binds one listening socket; the error names what and where.
pub(crate) fn listen(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let bind = || -> io::Result<std::net::TcpListener> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        s.set_reuse_address(true)?;
        s.bind(&addr.into())?;
        s.listen(1024)?;
        s.set_nonblocking(true)?;
        Ok(s.into())
    };
    let l = bind().with_context(|| format!("cannot listen on {what} port {addr}"))?;
    Ok(TcpListener::from_std(l))
}

/// READABLE, plus WRITABLE if `writable`.
fn interest(writable: bool) -> Interest {
    if writable {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// An unbounded connection (an established peer link reads with `usize::MAX`) that holds
    /// consumed input when more arrives grows its buffer without overflowing (a debug build
    /// panicked on `rpos + cap`) and keeps every byte.
    #[test]
    fn an_unbounded_read_after_a_partial_consume_keeps_every_byte() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let mut conn = BufConn::new(TcpStream::from_std(server));
        // Loopback delivers at once; the deadline only keeps a broken build from spinning.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let first = vec![1u8; 3000];
        client.write_all(&first).unwrap();
        while conn.input_len() < first.len() {
            assert!(std::time::Instant::now() < deadline, "no input");
            conn.read(usize::MAX, usize::MAX).unwrap();
        }
        conn.consume(1000);
        let second = vec![2u8; 200_000];
        client.write_all(&second).unwrap();
        while conn.input_len() < 2000 + second.len() {
            assert!(std::time::Instant::now() < deadline, "no input");
            conn.read(usize::MAX, usize::MAX).unwrap();
        }
        assert_eq!(conn.input().len(), 2000 + second.len());
        assert!(conn.input().iter().take(2000).all(|b| *b == 1));
        assert!(conn.input().iter().skip(2000).all(|b| *b == 2));
    }
}
