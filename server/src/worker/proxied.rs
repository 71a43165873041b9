//! PROXY protocol on the worker's connections (docs/protocols/proxy.md, "Behaviour").
//!
//! On a listener named by `<proxy-protocol listeners>`:
//!
//! - [`admit`]: a connection whose real peer is outside `trusted` is dropped before a byte is
//!   read or written (error kind `proxy_untrusted`); only a trusted balancer may say who the
//!   client is.
//! - [`Worker::proxy_header`]: every other one must start with a PROXY header, consumed before
//!   the session sees any byte. Until it is complete nothing else happens on the connection, and
//!   reads do not refresh its idle timer; `<limits handshake-timeout-ms>` (the header is part of
//!   every listener's handshake) bounds the time from the accept to a complete header. Input that is no header at all is refused without an answer
//!   (`proxy_missing`), a broken or truncated header too (`proxy_malformed`).
//! - From then on the header's source address is the connection's client address
//!   (`Conn::client_addr`): `LOCAL` (the balancer's health checks) and headers without
//!   addresses keep the socket's peer. The connection, counted in the listener's total only
//!   until then (the balancer's address is not the client's), is counted under that address
//!   (`Admission::readdress`) and closed if that address already holds
//!   `<limits max-connections-per-address>` connections on this listener.
//! - Warnings for refused and malformed connections are rate-limited (`crate::ratelog`).
//!
//! Other listeners are unchanged: no header is expected, and one would reach the session as
//! its first bytes.
//!
//! This module decides nothing about the bytes itself: `presenced_core::proto::proxy::decode`
//! does.

use std::net::SocketAddr;
use std::time::Instant;

use presenced_config::Listener;
use presenced_core::proto::proxy;
use tracing::{debug, warn};

use super::Worker;
use crate::metrics::Proto;
use crate::ratelog::RateLimited;
use crate::shared::Shared;

/// One gate per listener (index `Proto as usize`) for each kind of warning.
static UNTRUSTED: [RateLimited; 3] = [RateLimited::new(), RateLimited::new(), RateLimited::new()];
static MALFORMED: [RateLimited; 3] = [RateLimited::new(), RateLimited::new(), RateLimited::new()];
static REFUSED: [RateLimited; 3] = [RateLimited::new(), RateLimited::new(), RateLimited::new()];

/// `Some(suppressed)` when a warning of `kind` on `proto`'s listener may be logged now.
fn allow(kind: &[RateLimited; 3], proto: Proto) -> Option<u64> {
    kind.get(proto as usize).and_then(RateLimited::allow)
}

/// Whether a connection accepted on `proto`'s listener from `peer` may be served: `None` to
/// drop it now (counted and logged here), else whether it owes a PROXY header.
pub(super) fn admit(shared: &Shared, proto: Proto, peer: SocketAddr) -> Option<bool> {
    let Some(p) = shared
        .config
        .proxy_protocol()
        .filter(|p| p.applies_to(listener(proto)))
    else {
        return Some(false);
    };
    if p.trusts(peer.ip()) {
        return Some(true);
    }
    if let Some(suppressed) = allow(&UNTRUSTED, proto) {
        warn!(
            %peer,
            suppressed,
            "refusing {} connection: source not trusted to send a PROXY header",
            proto_name(proto)
        );
    }
    shared.metrics.error("proxy_untrusted");
    shared.metrics.closed(proto);
    None
}

impl Worker {
    /// Consumes the PROXY header of connection `key` if it still owes one. Returns whether the
    /// connection may go on: false while the header is incomplete, and when it was closed (no
    /// header, a malformed one, or the peer's close before it was complete).
    pub(super) fn proxy_header(&mut self, key: usize) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if !c.awaiting_header {
            return true;
        }
        let name = proto_name(c.proto);
        //= docs/protocols/proxy.md#behaviour
        //# The receiver MUST NOT start processing the connection before it receives a complete
        //# and valid PROXY protocol header.
        let kind = match proxy::decode(c.io.input()) {
            Ok(Some((header, n))) => {
                c.io.consume(n);
                c.awaiting_header = false;
                c.client = header.source();
                c.last_active = Instant::now();
                // HTTP's handshake is this header; its head timeout bounds the rest.
                c.handshaken |= c.proto == Proto::Http;
                if let Some(client) = c.client {
                    // Counted under the real client from now on, or refused if it is full.
                    let to = client.ip();
                    match self.shared.admission.readdress(c.proto, c.counted, to) {
                        Ok(()) => c.counted = Some(to),
                        Err(why) => {
                            self.shared.metrics.refused(c.proto, why);
                            if let Some(suppressed) = allow(&REFUSED, c.proto) {
                                warn!(
                                    peer = %client,
                                    via = %c.peer,
                                    suppressed,
                                    "refusing {name} connection: max-connections-per-address reached"
                                );
                            }
                            self.close(key);
                            return false;
                        }
                    }
                }
                debug!(
                    peer = %c.client_addr(),
                    via = %c.peer,
                    command = ?header.command(),
                    "accepted {name} connection"
                );
                return true;
            }
            Ok(None) if !c.io.eof() => return false,
            Ok(None) if c.io.input_len() == 0 => {
                debug!(peer = %c.peer, "{name} connection closed before its PROXY header");
                self.close(key);
                return false;
            }
            Ok(None) => {
                if let Some(suppressed) = allow(&MALFORMED, c.proto) {
                    warn!(
                        peer = %c.peer,
                        suppressed,
                        "closing {name} connection: truncated PROXY header"
                    );
                }
                "proxy_malformed"
            }
            Err(e) => {
                if let Some(suppressed) = allow(&MALFORMED, c.proto) {
                    warn!(peer = %c.peer, suppressed, "closing {name} connection: {e}");
                }
                if e.is_missing() {
                    "proxy_missing"
                } else {
                    "proxy_malformed"
                }
            }
        };
        // Refused without an answer: the peer is not speaking to us through a balancer, or
        // the balancer is broken; either way no session byte is read.
        self.shared.metrics.error(kind);
        self.close(key);
        false
    }
}

/// The name of a listener, as in logs and `<proxy-protocol listeners>`.
pub(super) fn proto_name(proto: Proto) -> &'static str {
    listener(proto).name()
}

/// The `<proxy-protocol>` listener of a connection kind.
pub(crate) fn listener(proto: Proto) -> Listener {
    match proto {
        Proto::Pool => Listener::Pool,
        Proto::Query => Listener::Query,
        Proto::Http => Listener::Http,
    }
}
