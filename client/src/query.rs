//! The query client: handshake, then pipelined batch queries, on one of several nodes.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use presenced_core::proto::query::{ClientFrame, Hello, Mode, ServerFrame};
use presenced_core::Status;
use tracing::warn;

use crate::dial::{connect_any, dial, name_timeout, ReadUntil};
use crate::{read_frame, ClientError, ServerAddr};

/// How a [`QueryClient`] connects.
#[derive(Clone, Debug)]
pub struct QueryClientOptions {
    /// Nodes to try, in order; after a failure the next one is tried (see the crate docs).
    /// Names are resolved again at every attempt.
    pub addrs: Vec<ServerAddr>,
    /// How long to keep trying to (re)connect, or to get a query answered, before giving up
    /// (every address is tried at least once whatever this says, and an attempt started in time
    /// runs to its end; zero: no second round, and a query that fails is not sent again).
    pub retry_for: Duration,
    /// How long one TCP connect may take, per resolved address.
    pub connect_timeout: Duration,
    /// How long the node may take to answer `HELLO` with `WELCOME`, in all. An address that
    /// accepts connections but does not answer (a stopped process) is left after this.
    pub handshake_timeout: Duration,
    /// How long to wait for an answer, or for the node to take more bytes, before treating the
    /// connection as broken.
    pub read_timeout: Duration,
    /// The API key (`<api-key>`), 1 to 255 bytes, if the nodes require one. With a key the
    /// client speaks protocol version 2; without, version 1, which every node version accepts
    /// when it requires no key (so a client without a key works across a rolling upgrade).
    pub api_key: Option<Vec<u8>>,
}

impl QueryClientOptions {
    /// Defaults for one address: 3 s to connect, 5 s for the handshake, 5 s for an answer, and
    /// 5 s of retrying.
    pub fn new(addr: impl Into<ServerAddr>) -> Self {
        Self {
            addrs: vec![addr.into()],
            retry_for: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            api_key: None,
        }
    }
}

/// One established connection and what its node said in `WELCOME`.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    peer: SocketAddr,
    node: u16,
    max_batch: u16,
}

/// A raw-TCP query connection to one node of a list, moving to another when it breaks.
#[derive(Debug)]
pub struct QueryClient {
    opts: QueryClientOptions,
    /// `None` after a failure until the next query reconnects.
    conn: Option<Conn>,
    next_addr: usize,
    out: Vec<u8>,
    next_req: u32,
    /// What the last node said, kept while disconnected.
    node: u16,
    max_batch: u16,
}

impl QueryClient {
    /// Connects to `addr` and completes the handshake, with `timeout` for the connect, the
    /// handshake and every answer, and no retrying (a failed query is not sent again).
    pub fn connect(addr: impl Into<ServerAddr>, timeout: Duration) -> Result<Self, ClientError> {
        let mut opts = QueryClientOptions::new(addr);
        opts.retry_for = Duration::ZERO;
        opts.connect_timeout = timeout;
        opts.handshake_timeout = timeout;
        opts.read_timeout = timeout;
        Self::connect_with(opts)
    }

    /// Connects to the first of `opts.addrs` that answers (trying them in rounds with backoff
    /// for up to `opts.retry_for`) and completes the handshake.
    pub fn connect_with(opts: QueryClientOptions) -> Result<Self, ClientError> {
        let mut c = Self {
            opts,
            conn: None,
            next_addr: 0,
            out: Vec::new(),
            next_req: 1,
            node: 0,
            max_batch: 0,
        };
        c.reconnect_until(Instant::now() + c.opts.retry_for)?;
        Ok(c)
    }

    /// The answering node's sequence number (the last one's while disconnected).
    pub fn node(&self) -> u16 {
        self.node
    }

    /// The node's batch limit.
    pub fn max_batch(&self) -> u16 {
        self.max_batch
    }

    /// The address of the node this client is connected to, `None` after a failure until the
    /// next query reconnects.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.conn.as_ref().map(|c| c.peer)
    }

    /// Looks up `ids` (any number: split into batches the node accepts, all pipelined) and
    /// returns one status per id, in order.
    ///
    /// A broken connection (or a node that says it is unavailable) is replaced by the next node
    /// that answers and the whole query is sent again, for up to `retry_for`; queries only read,
    /// so sending one twice is harmless. A refused query ([`ClientError::Rejected`]) leaves the
    /// connection usable.
    pub fn query(&mut self, ids: &[u64]) -> Result<Vec<Status>, ClientError> {
        let deadline = Instant::now() + self.opts.retry_for;
        if self.conn.is_none() {
            self.reconnect_until(deadline)?;
        }
        loop {
            match self.try_query(ids) {
                Ok(all) => return Ok(all),
                Err(e @ ClientError::Rejected { .. }) => return Err(e),
                Err(e) => {
                    self.conn = None;
                    if !(e.is_retryable() && Instant::now() < deadline) {
                        return Err(e);
                    }
                    warn!("query connection failed ({e}); trying the next address");
                    self.reconnect_until(deadline)?;
                }
            }
        }
    }

    /// Sends `ids` in pipelined batches and reads every answer. Any error but `Rejected`
    /// leaves the stream unusable (answers may be pending in it).
    fn try_query(&mut self, ids: &[u64]) -> Result<Vec<Status>, ClientError> {
        let read_timeout = self.opts.read_timeout;
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::Io(std::io::ErrorKind::NotConnected.into()));
        };
        let chunk = usize::from(conn.max_batch.max(1));
        self.out.clear();
        let first = self.next_req;
        let mut n = 0u32;
        for part in ids.chunks(chunk) {
            ClientFrame::Query {
                req_id: self.next_req,
                ids: part.to_vec(),
            }
            .encode(&mut self.out);
            self.next_req = self.next_req.wrapping_add(1);
            n += 1;
        }
        conn.stream
            .write_all(&self.out)
            .map_err(|e| name_timeout(e.into(), "progress sending the query", read_timeout))?;
        let mut all = Vec::with_capacity(ids.len());
        // A refused batch is reported after reading every answer, so the stream stays in step.
        let mut rejected = None;
        for i in 0..n {
            let (ty, body) = read_frame(&mut conn.stream, &mut conn.rbuf, u32::MAX)
                .map_err(|e| name_timeout(e, "answer", read_timeout))?;
            match ServerFrame::decode(ty, &body)? {
                ServerFrame::Result {
                    req_id, statuses, ..
                } if req_id == first.wrapping_add(i) => {
                    all.extend(statuses);
                }
                ServerFrame::Reject { code, message, .. } => {
                    rejected.get_or_insert(ClientError::Rejected { code, message });
                }
                ServerFrame::Error { code, message } => {
                    return Err(ClientError::Server { code, message })
                }
                _ => return Err(ClientError::Protocol("answer out of order")),
            }
        }
        match rejected {
            Some(e) => Err(e),
            None => Ok(all),
        }
    }

    /// Connects to one of the addresses (rounds with backoff, see the crate docs), or fails
    /// with the last error once `deadline` passed.
    fn reconnect_until(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let opts = &self.opts;
        let conn = connect_any(
            "query address",
            &opts.addrs,
            &mut self.next_addr,
            deadline,
            |a| handshake(opts, a),
        )?;
        self.node = conn.node;
        self.max_batch = conn.max_batch;
        self.conn = Some(conn);
        Ok(())
    }
}

/// Connects to `addr` and completes the handshake within the options' timeouts.
fn handshake(opts: &QueryClientOptions, addr: &ServerAddr) -> Result<Conn, ClientError> {
    let (mut stream, peer) = dial(addr, opts.connect_timeout)?;
    let limit = opts.handshake_timeout;
    stream.set_write_timeout(Some(limit.max(Duration::from_millis(1))))?;
    let mut out = Vec::new();
    let hello = match &opts.api_key {
        Some(key) => Hello::V2 {
            mode: Mode::Query,
            key: key.clone(),
        },
        None => Hello::V1,
    };
    ClientFrame::Hello(hello).encode(&mut out);
    stream
        .write_all(&out)
        .map_err(|e| name_timeout(e.into(), "WELCOME", limit))?;
    let mut rbuf = Vec::new();
    let mut reader = ReadUntil {
        stream: &stream,
        until: Instant::now() + limit,
    };
    let (ty, body) = read_frame(&mut reader, &mut rbuf, u32::MAX)
        .map_err(|e| name_timeout(e, "WELCOME", limit))?;
    let (node, max_batch) = match ServerFrame::decode(ty, &body)? {
        ServerFrame::Welcome {
            node, max_batch, ..
        } => (node, max_batch),
        ServerFrame::Error { code, message } => return Err(ClientError::Server { code, message }),
        _ => return Err(ClientError::Protocol("expected WELCOME")),
    };
    let io_timeout = Some(opts.read_timeout.max(Duration::from_millis(1)));
    stream.set_read_timeout(io_timeout)?;
    stream.set_write_timeout(io_timeout)?;
    Ok(Conn {
        stream,
        rbuf,
        peer,
        node,
        max_batch,
    })
}
