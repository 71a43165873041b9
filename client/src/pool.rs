//! The pool client: sequence numbers, un-acked buffer, fail-over reconnect and re-send.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use presenced_core::proto::pool::{ClientFrame, Event, Hello, ServerFrame};
use tracing::warn;

use crate::dial::{connect_any, dial, name_timeout, ReadUntil};
use crate::{read_frame, ClientError, ServerAddr};

/// How a [`PoolClient`] connects.
#[derive(Clone, Debug)]
pub struct PoolClientOptions {
    /// Nodes to try, in order; after a failure the next one is tried (see the crate docs).
    /// Names are resolved again at every attempt.
    pub addrs: Vec<ServerAddr>,
    /// This pool's id.
    pub pool: u32,
    /// The shared token, if the cluster requires one.
    pub token: Vec<u8>,
    /// Events per `EVENTS` frame (at most the server's `max-events-per-frame`).
    pub batch: usize,
    /// Most events sent and not yet acked before the client waits for acks.
    pub window: usize,
    /// How long to keep trying to (re)connect before giving up (every address is tried at
    /// least once whatever this says, and an attempt started in time runs to its end).
    pub retry_for: Duration,
    /// How long one TCP connect may take, per resolved address.
    pub connect_timeout: Duration,
    /// How long the node may take to answer `HELLO` with `WELCOME`, in all. An address that
    /// accepts connections but does not answer (a stopped process) is left after this.
    pub handshake_timeout: Duration,
    /// How long to wait for an ack, or for the node to take more bytes, before treating the
    /// connection as broken.
    pub ack_timeout: Duration,
}

impl PoolClientOptions {
    /// Defaults for one address: 3 s to connect, 5 s for the handshake, 10 s for an ack, and
    /// 10 s of retrying.
    pub fn new(addr: impl Into<ServerAddr>) -> Self {
        Self {
            addrs: vec![addr.into()],
            pool: 1,
            token: Vec::new(),
            batch: 1024,
            window: 64 * 1024,
            retry_for: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(10),
        }
    }
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    peer: SocketAddr,
}

/// A pool's connection to presenced. See the crate docs.
///
/// INVARIANT: `unacked` holds consecutive sequence numbers `acked+1 ..= acked+unacked.len()`,
/// and `sent` is how many of them were written on the current connection.
pub struct PoolClient {
    opts: PoolClientOptions,
    stream_id: u64,
    conn: Option<Conn>,
    next_addr: usize,
    acked: u64,
    unacked: VecDeque<Event>,
    sent: usize,
    reconnects: u64,
    out: Vec<u8>,
}

impl std::fmt::Debug for PoolClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolClient")
            .field("acked", &self.acked)
            .field("unacked", &self.unacked.len())
            .finish_non_exhaustive()
    }
}

impl PoolClient {
    /// Connects and completes the handshake.
    pub fn connect(opts: PoolClientOptions) -> Result<Self, ClientError> {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(Instant::now().elapsed().as_nanos());
        h.write_u32(std::process::id());
        let mut c = Self {
            opts,
            stream_id: h.finish(),
            conn: None,
            next_addr: 0,
            acked: 0,
            unacked: VecDeque::new(),
            sent: 0,
            reconnects: 0,
            out: Vec::new(),
        };
        let deadline = Instant::now() + c.opts.retry_for;
        c.reconnect_until(deadline)?;
        c.reconnects = 0;
        Ok(c)
    }

    /// Highest sequence number acked so far (all events up to it are applied).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Events sent or queued and not acked yet.
    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// How many times the client reconnected after a failure.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The address of the node this client is connected to, `None` between a failure and the
    /// next connection.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|c| c.peer)
    }

    /// Queues one event (it gets the next sequence number) and sends full batches.
    pub fn send(&mut self, e: Event) -> Result<(), ClientError> {
        self.unacked.push_back(e);
        if self.unacked.len() - self.sent >= self.opts.batch {
            self.pump(self.opts.window)?;
        }
        Ok(())
    }

    /// Sends everything queued and waits until every event is acked.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.pump(0)
    }

    /// Sends what is queued, then reads acks until at most `keep` events are un-acked.
    /// Connection failures are retried within `retry_for`, re-sending what was not acked.
    fn pump(&mut self, keep: usize) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.opts.retry_for;
        loop {
            match self.try_pump(keep) {
                Ok(()) => return Ok(()),
                // A broken connection is retried; a server that refuses us (bad token, bad
                // event) would refuse the same bytes again, so that error is final.
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    warn!("pool connection failed ({e}); reconnecting");
                    self.conn = None;
                    self.reconnect_until(deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_pump(&mut self, keep: usize) -> Result<(), ClientError> {
        self.transmit()?;
        while self.unacked.len() > keep {
            self.read_ack()?;
            self.transmit()?;
        }
        Ok(())
    }

    /// Writes every queued, unsent event in frames of at most `batch` events.
    fn transmit(&mut self) -> Result<(), ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::Io(std::io::ErrorKind::NotConnected.into()));
        };
        while self.sent < self.unacked.len() {
            let n = (self.unacked.len() - self.sent).min(self.opts.batch.max(1));
            let first_seq = self.acked + self.sent as u64 + 1;
            let events: Vec<Event> = self
                .unacked
                .iter()
                .skip(self.sent)
                .take(n)
                .cloned()
                .collect();
            self.out.clear();
            ClientFrame::Events { first_seq, events }.encode(&mut self.out);
            conn.stream.write_all(&self.out).map_err(|e| {
                name_timeout(e.into(), "progress sending events", self.opts.ack_timeout)
            })?;
            self.sent += n;
        }
        Ok(())
    }

    fn read_ack(&mut self) -> Result<(), ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::Io(std::io::ErrorKind::NotConnected.into()));
        };
        let (ty, body) = read_frame(&mut conn.stream, &mut conn.rbuf, 1 << 20)
            .map_err(|e| name_timeout(e, "ack", self.opts.ack_timeout))?;
        match ServerFrame::decode(ty, &body)? {
            ServerFrame::Ack(seq) => {
                self.ack_through(seq)?;
                Ok(())
            }
            ServerFrame::Error { code, message } => Err(ClientError::Server {
                code,
                message: format!("{code}: {message}"),
            }),
            ServerFrame::Pong(_) => Ok(()),
            ServerFrame::Welcome { .. } => Err(ClientError::Protocol("WELCOME after handshake")),
        }
    }

    fn ack_through(&mut self, seq: u64) -> Result<(), ClientError> {
        if seq <= self.acked {
            return Ok(());
        }
        let n = (seq - self.acked) as usize;
        if n > self.unacked.len() {
            return Err(ClientError::Protocol("ack beyond the last event sent"));
        }
        self.unacked.drain(..n);
        self.sent = self.sent.saturating_sub(n);
        self.acked = seq;
        Ok(())
    }

    /// Connects to one of the addresses (rounds with backoff, see the crate docs), or fails
    /// with the last error once `deadline` passed.
    fn reconnect_until(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let addrs = std::mem::take(&mut self.opts.addrs);
        let mut next = self.next_addr;
        let r = connect_any("pool address", &addrs, &mut next, deadline, |a| {
            self.reconnect(a)
        });
        self.opts.addrs = addrs;
        self.next_addr = next;
        r
    }

    /// Connects to `addr`, handshakes, and marks everything un-acked as unsent.
    fn reconnect(&mut self, addr: &ServerAddr) -> Result<(), ClientError> {
        let (mut stream, peer) = dial(addr, self.opts.connect_timeout)?;
        let handshake = self.opts.handshake_timeout;
        stream.set_write_timeout(Some(handshake.max(Duration::from_millis(1))))?;
        self.out.clear();
        ClientFrame::Hello(Hello {
            pool: self.opts.pool,
            stream: self.stream_id,
            resume_from: self.acked + 1,
            token: self.opts.token.clone(),
        })
        .encode(&mut self.out);
        stream
            .write_all(&self.out)
            .map_err(|e| name_timeout(e.into(), "WELCOME", handshake))?;
        let mut rbuf = Vec::new();
        let mut reader = ReadUntil {
            stream: &stream,
            until: Instant::now() + handshake,
        };
        let (ty, body) = read_frame(&mut reader, &mut rbuf, 1 << 20)
            .map_err(|e| name_timeout(e, "WELCOME", handshake))?;
        match ServerFrame::decode(ty, &body)? {
            ServerFrame::Welcome { applied, .. } => {
                // Events this node already applied count as delivered.
                let applied = applied.min(self.acked + self.unacked.len() as u64);
                self.sent = 0;
                self.ack_through(applied)?;
            }
            ServerFrame::Error { code, message } => {
                return Err(ClientError::Server { code, message })
            }
            _ => return Err(ClientError::Protocol("expected WELCOME")),
        }
        let io_timeout = Some(self.opts.ack_timeout.max(Duration::from_millis(1)));
        stream.set_read_timeout(io_timeout)?;
        stream.set_write_timeout(io_timeout)?;
        self.reconnects += 1;
        self.conn = Some(Conn { stream, rbuf, peer });
        Ok(())
    }
}
