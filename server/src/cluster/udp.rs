//! Time sync over UDP: the datagrams of the node's time-sync protocol (probes from the time
//! master, answers and corrections) on the `time-port` socket.
//!
//! Datagrams are decoded here and handed to the node, and the node's outgoing datagrams are sent
//! to each member's time port. A datagram that does not decode is counted and dropped; a send
//! that fails is dropped too (time sync retries on its own schedule). With a cluster secret,
//! every datagram is tagged on the way out and checked on the way in (a bad tag is counted and
//! dropped before decoding); each carries this process's incarnation and a counter from 1.

use std::io::ErrorKind;
use std::net::SocketAddr;

use presenced_core::cluster::timesync::{Envelope, Packet, MAX_DATAGRAM};
use tracing::{debug, warn};

use crate::ratelog::RateLimited;

static BAD_TAG: RateLimited = RateLimited::new();

use super::ClusterDriver;

impl ClusterDriver {
    /// Receives every pending datagram and hands each to the node.
    pub(super) fn recv_datagrams(&mut self) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let data = buf.get(..n).unwrap_or_default();
                    if let Some(key) = &self.time_key {
                        if key.verify(data).is_err() {
                            self.shared.metrics.error("timesync_auth_failed");
                            if let Some(suppressed) = BAD_TAG.allow() {
                                warn!(%from, suppressed, "time-sync datagram failed authentication");
                            }
                            continue;
                        }
                    }
                    match Packet::decode(data) {
                        Ok((p, env)) => {
                            let now = self.now();
                            self.node.handle_datagram(now, p, env);
                        }
                        Err(e) => {
                            debug!(%from, "bad time-sync datagram: {e}");
                            self.shared.metrics.error("timesync_protocol");
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("time-sync receive failed: {e}");
                    return;
                }
            }
        }
    }

    /// Sends every datagram the node has queued.
    pub(super) fn send_datagrams(&mut self) {
        while let Some((peer, p)) = self.node.poll_datagram() {
            if let Some(info) = self.node.member_info(peer) {
                self.scratch.clear();
                self.datagram_counter += 1;
                let env = Envelope {
                    incarnation: self.node.incarnation(),
                    counter: self.datagram_counter,
                };
                p.encode(env, self.time_key.as_ref(), &mut self.scratch);
                let _ = self
                    .udp
                    .send_to(&self.scratch, SocketAddr::new(info.host, info.time_port));
            }
        }
    }
}
