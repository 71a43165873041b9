//! The pool client: sequence numbers, un-acked buffer, reconnect and re-send.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use presenced_core::proto::pool::{ClientFrame, Event, Hello, ServerFrame};
use tracing::{debug, warn};

use crate::{read_frame, ClientError};

/// How a [`PoolClient`] connects.
#[derive(Clone, Debug)]
pub struct PoolClientOptions {
    /// Nodes to try, in order; after a failure the next one is tried.
    pub addrs: Vec<SocketAddr>,
    /// This pool's id.
    pub pool: u32,
    /// The shared token, if the cluster requires one.
    pub token: Vec<u8>,
    /// Events per `EVENTS` frame (at most the server's `max-events-per-frame`).
    pub batch: usize,
    /// Most events sent and not yet acked before the client waits for acks.
    pub window: usize,
    /// How long to keep trying to (re)connect before giving up.
    pub retry_for: Duration,
    /// How long to wait for an ack before treating the connection as broken.
    pub ack_timeout: Duration,
}

impl PoolClientOptions {
    /// Defaults for one address.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addrs: vec![addr],
            pool: 1,
            token: Vec::new(),
            batch: 1024,
            window: 64 * 1024,
            retry_for: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
        }
    }
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
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
            conn.stream.write_all(&self.out)?;
            self.sent += n;
        }
        Ok(())
    }

    fn read_ack(&mut self) -> Result<(), ClientError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::Io(std::io::ErrorKind::NotConnected.into()));
        };
        let (ty, body) = read_frame(&mut conn.stream, &mut conn.rbuf, 1 << 20)?;
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

    fn reconnect_until(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.reconnect() {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() && Instant::now() + backoff < deadline => {
                    debug!("reconnect failed: {e}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects to the next address, handshakes, and marks everything un-acked as unsent.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        let addr = *self
            .opts
            .addrs
            .get(self.next_addr % self.opts.addrs.len().max(1))
            .ok_or(ClientError::Protocol("no address to connect to"))?;
        self.next_addr += 1;
        self.reconnects += 1;
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.opts.ack_timeout))?;
        self.out.clear();
        ClientFrame::Hello(Hello {
            pool: self.opts.pool,
            stream: self.stream_id,
            resume_from: self.acked + 1,
            token: self.opts.token.clone(),
        })
        .encode(&mut self.out);
        stream.write_all(&self.out)?;
        let mut rbuf = Vec::new();
        let (ty, body) = read_frame(&mut stream, &mut rbuf, 1 << 20)?;
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
        self.conn = Some(Conn { stream, rbuf });
        Ok(())
    }
}
