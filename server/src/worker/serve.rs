//! Serving one connection's input: [`serve`] answers what a connection sent, within the bounds
//! of one service, by feeding it to the connection's session ([`process`]).
//!
//! Invariants: a query or HTTP request is answered only while the connection's unsent output is
//! under `<limits max-output-bytes>`, and one service answers requests only until it added
//! [`SERVICE_OUTPUT`] bytes of output: a connection asking for large answers gets one of them per
//! round of the worker's loop, so thousands of such connections delay the others by one answer
//! each, not by `max-output-bytes` each. Pool frames are served in one call (their replies are
//! small and go through the connection's `AckGate`).
//!
//! Thread model: runs on the worker's own thread, on one of its connections; the shared state it
//! touches (store, replication, metrics) is behind `Shared`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use presenced_core::ack_gate::Need;
use presenced_core::proto::pool_session::{PoolCtx, Reply};
use presenced_core::proto::query::QueryCtx;
use tracing::warn;

use super::login::{self, Failure};
use super::proxied::proto_name;
use super::{Conn, Session, FRAME_BUDGET, PROTOCOL_ERROR};
use crate::metrics::Proto;
use crate::ratelog::RateLimited;
use crate::shared::Shared;

/// Output one service of a query or HTTP connection may add before it yields to the other
/// connections (it is re-queued if requests are left): small answers go many per service, an
/// answer larger than this one per service.
pub(super) const SERVICE_OUTPUT: usize = 64 << 10;

/// Serves up to [`FRAME_BUDGET`] frames or requests of `c`'s input. Pool frames go in one call;
/// query and HTTP requests one per call, stopping once `out_cap` bytes of output are waiting (so
/// a connection holds at most one response beyond the cap) or once this service added
/// [`SERVICE_OUTPUT`] bytes. Returns whether work is left.
pub(super) fn serve(shared: &Shared, worker: usize, c: &mut Conn, out_cap: usize) -> bool {
    if c.proto == Proto::Pool {
        return process(shared, worker, c, FRAME_BUDGET);
    }
    let start = c.output_len();
    for _ in 0..FRAME_BUDGET {
        let more = process(shared, worker, c, 1);
        let out = c.output_len();
        if !more || c.closing || out >= out_cap || out.saturating_sub(start) >= SERVICE_OUTPUT {
            return more;
        }
    }
    true
}

/// Feeds the unconsumed input to the session. Returns whether the session has work left (whole
/// frames beyond the budget, or work it asks to be called again for even without new input).
pub(super) fn process(shared: &Shared, worker: usize, c: &mut Conn, budget: usize) -> bool {
    let client = c.client_addr().ip();
    let (input, wbuf) = c.io.input_and_output();
    let start = Instant::now();
    let m = &shared.metrics;
    let (consumed, more, error) = match &mut c.session {
        Session::Pool(s) => {
            let pinned = shared.store.pin();
            let mut changed = Vec::new();
            let token = shared
                .config
                .security()
                .pool_token
                .as_ref()
                .map(presenced_config::Secret::bytes);
            let mut ctx = PoolCtx {
                store: &pinned,
                hlc: &shared.hlc,
                streams: &shared.streams,
                now_ms: shared.clock.now_ms(),
                token,
                changed: &mut changed,
            };
            let out_start = wbuf.len();
            let r = s.handle_input(input, budget, &mut ctx, wbuf);
            drop(pinned);
            // Hand the changed users to replication, then give the replies to the ack gate: a
            // durable reply (ACK, WELCOME) waits until everything this node numbered so far,
            // this call's changes included, is on a peer.
            shared.watch.publish(&changed);
            shared.repl.submit(changed);
            let water = shared.repl.watermark();
            let durable = Need::Update(water.allocated());
            let bytes = wbuf.split_off(out_start);
            let held_before = c.gate.held();
            let mut from = 0;
            for (end, reply) in s.take_replies() {
                let end = end.saturating_sub(out_start).min(bytes.len());
                let need = match reply {
                    Reply::Durable => durable,
                    Reply::Plain => Need::Nothing,
                };
                c.gate
                    .submit(need, bytes.get(from..end).unwrap_or_default(), water, wbuf);
                from = end;
            }
            c.gate.submit(
                Need::Nothing,
                bytes.get(from..).unwrap_or_default(),
                water,
                wbuf,
            );
            track_held(shared, held_before, c.gate.held());
            match r {
                Ok(o) => {
                    m.updates.fetch_add(o.events, Ordering::Relaxed);
                    m.duplicates.fetch_add(o.duplicates, Ordering::Relaxed);
                    if o.consumed > 0 {
                        m.pool_batches.fetch_add(1, Ordering::Relaxed);
                        m.ingest_latency
                            .record(worker, start.elapsed().as_micros() as u64);
                    }
                    (o.consumed, o.more, None)
                }
                Err(e) => (0, false, Some(Failure::from(e))),
            }
        }
        Session::Query(s) => {
            let pinned = shared.store.pin();
            let ctx = QueryCtx {
                limits: &shared.query_limits,
                store: &pinned,
                node: shared.me.id,
                now_ms: shared.clock.now_ms(),
                keys: &shared.api_keys,
            };
            let r = s.handle_input(input, budget, &ctx, wbuf);
            match r {
                Ok(o) => {
                    if let Some(outcome) = o.auth {
                        m.auth.api(0, outcome);
                    }
                    if let Some(micros) =
                        (start.elapsed().as_micros() as u64).checked_div(o.requests)
                    {
                        let ids = o.ids / o.requests;
                        for _ in 0..o.requests {
                            m.query(0, worker, ids, micros);
                        }
                    }
                    (o.consumed, o.more, None)
                }
                Err(e) => (0, false, Some(Failure::from(e))),
            }
        }
        Session::Http(h) => {
            let backend = shared.backend(worker, start).with_client(client);
            let wall = shared.clock.system_at(start);
            let o = h.handle_input(start, wall, input, budget, &backend, wbuf);
            if o.close {
                c.closing = true;
            }
            (o.consumed, o.more, None)
        }
        Session::Watch(w) => {
            let (consumed, error) = w.handle_input(input, wbuf);
            (consumed, false, error)
        }
    };
    c.io.consume(consumed);
    // The first frame of pool and query must be HELLO: consumed without an error, it was
    // answered by WELCOME.
    c.handshaken |= consumed > 0 && error.is_none() && !c.awaiting_header;
    if let Some(f @ (Failure::BadToken | Failure::Unauthorized(_))) = &error {
        login::failed(shared, c, f);
        c.closing = true;
    } else if let Some(Failure::Protocol(reason)) = error {
        let proto = proto_name(c.proto);
        if let Some(suppressed) = PROTOCOL_ERROR
            .get(c.proto as usize)
            .and_then(RateLimited::allow)
        {
            warn!(peer = %c.client_addr(), suppressed, "closing {proto} connection: {reason}");
        }
        m.error(if proto == "pool" {
            "pool_protocol"
        } else {
            "query_protocol"
        });
        c.closing = true;
    }
    more
}

/// Keeps the `presenced_pool_acks_held` gauge in step with a gate that went from `before` to
/// `after` held replies.
pub(super) fn track_held(shared: &Shared, before: usize, after: usize) {
    shared
        .metrics
        .acks_held
        .fetch_add(after as i64 - before as i64, Ordering::Relaxed);
}
