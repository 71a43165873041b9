//! The query client: handshake, then pipelined batch queries.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use presenced_core::proto::query::{ClientFrame, ServerFrame};
use presenced_core::Status;

use crate::{read_frame, ClientError};

/// A raw-TCP query connection.
#[derive(Debug)]
pub struct QueryClient {
    stream: TcpStream,
    rbuf: Vec<u8>,
    out: Vec<u8>,
    next_req: u32,
    node: u16,
    max_batch: u16,
}

impl QueryClient {
    /// Connects and completes the handshake.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ClientError> {
        let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut out = Vec::new();
        ClientFrame::Hello.encode(&mut out);
        stream.write_all(&out)?;
        let mut rbuf = Vec::new();
        let (ty, body) = read_frame(&mut stream, &mut rbuf, u32::MAX)?;
        let (node, max_batch) = match ServerFrame::decode(ty, &body)? {
            ServerFrame::Welcome {
                node, max_batch, ..
            } => (node, max_batch),
            ServerFrame::Error { code, message } => {
                return Err(ClientError::Server { code, message })
            }
            _ => return Err(ClientError::Protocol("expected WELCOME")),
        };
        Ok(Self {
            stream,
            rbuf,
            out,
            next_req: 1,
            node,
            max_batch,
        })
    }

    /// The answering node's sequence number.
    pub fn node(&self) -> u16 {
        self.node
    }

    /// The node's batch limit.
    pub fn max_batch(&self) -> u16 {
        self.max_batch
    }

    /// Looks up `ids` (any number: split into batches the node accepts, all pipelined) and
    /// returns one status per id, in order.
    pub fn query(&mut self, ids: &[u64]) -> Result<Vec<Status>, ClientError> {
        let chunk = usize::from(self.max_batch.max(1));
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
        self.stream.write_all(&self.out)?;
        let mut all = Vec::with_capacity(ids.len());
        for i in 0..n {
            let (ty, body) = read_frame(&mut self.stream, &mut self.rbuf, u32::MAX)?;
            match ServerFrame::decode(ty, &body)? {
                ServerFrame::Result {
                    req_id, statuses, ..
                } if req_id == first.wrapping_add(i) => {
                    all.extend(statuses);
                }
                ServerFrame::Reject { code, message, .. } => {
                    return Err(ClientError::Rejected { code, message })
                }
                ServerFrame::Error { code, message } => {
                    return Err(ClientError::Server { code, message })
                }
                _ => return Err(ClientError::Protocol("answer out of order")),
            }
        }
        Ok(all)
    }
}
