//! The worker's limits across connections and time: the node-wide output budget
//! (`Worker::enforce_budget`, policy in `crate::budget`), the handshake deadline
//! (`<limits handshake-timeout-ms>`), the idle timeout and HTTP deadlines (`Worker::sweep`), and
//! the stall rule (`Worker::abandon_pool_conns`).
//!
//! Invariants: the handshake deadline counts from the accept and nothing the peer sends moves
//! it; HTTP connections have none once their PROXY header (if owed) is in, their head and body
//! timeouts bound them instead. A connection cut by the budget is closed at once, unflushed.
//!
//! Thread model: runs on the worker's own thread, on its own connections; the only state shared
//! with other workers is `Shared::output` (atomics).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::proxied::proto_name;
use super::{Session, Worker};
use crate::budget::victims;
use crate::metrics::Proto;
use crate::ratelog::RateLimited;

static HANDSHAKE: RateLimited = RateLimited::new();
static BUDGET: RateLimited = RateLimited::new();

impl Worker {
    /// This worker did not run for `gap` (the process was paused, frozen or swapped out): its
    /// pool clients may have given up on these connections and re-sent their events elsewhere,
    /// so what is still unread on them is stale. They are closed without reading it; every
    /// event not acked is re-sent by its client on a new connection.
    pub(super) fn abandon_pool_conns(&mut self, gap: Duration) {
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.proto == Proto::Pool)
            .map(|(k, _)| k)
            .collect();
        if !stale.is_empty() {
            // Not peer-triggered (the process did not run), so not rate-limited.
            warn!(
                worker = self.idx,
                gap_ms = gap.as_millis() as u64,
                connections = stale.len(),
                "stalled: closing pool connections without reading them"
            );
        }
        for key in stale {
            self.shared
                .metrics
                .pool_abandoned
                .fetch_add(1, Ordering::Relaxed);
            self.close(key);
        }
    }

    /// Closes idle connections and answers HTTP requests whose head or body is overdue.
    pub(super) fn sweep(&mut self, now: Instant) {
        let limits = self.shared.config.limits();
        let idle = Duration::from_millis(limits.idle_timeout_ms);
        let handshake = Duration::from_millis(limits.handshake_timeout_ms);
        let mut expired = Vec::new();
        let mut unshaken = Vec::new();
        let mut to_flush = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            // Counted from the accept: no byte the peer trickles moves it.
            if !c.handshaken && now.saturating_duration_since(c.accepted) > handshake {
                unshaken.push(key);
                continue;
            }
            if let Session::Http(h) = &mut c.session {
                if h.poll_timeout().is_some_and(|d| d <= now) {
                    let wall = self.shared.clock.now_system();
                    if h.handle_timeout(now, wall, c.io.output()) {
                        debug!(peer = %c.client_addr(), "http request timed out");
                        self.shared.metrics.error("timeout");
                        c.closing = true;
                    }
                    to_flush.push(key);
                    continue;
                }
            }
            // A watch stream is quiet by nature: it ends when its client leaves or is cut.
            let streaming = matches!(c.session, Session::Watch(_));
            if !streaming
                && now.saturating_duration_since(c.last_active) > idle
                && c.output_len() == 0
            {
                debug!(peer = %c.client_addr(), "idle timeout");
                expired.push(key);
            }
        }
        for key in expired {
            self.shared.metrics.error("idle_timeout");
            self.close(key);
        }
        for key in unshaken {
            if let Some(c) = self.conns.get(key) {
                self.shared.metrics.handshake_timeout(c.proto);
                if let Some(suppressed) = HANDSHAKE.allow() {
                    warn!(
                        peer = %c.client_addr(),
                        suppressed,
                        "closing {} connection: no handshake within handshake-timeout-ms",
                        proto_name(c.proto)
                    );
                }
            }
            self.close(key);
        }
        for key in to_flush {
            self.service(key);
        }
    }

    /// Cuts this worker's connections holding the most buffer memory (what they accounted:
    /// `Conn::footprint`) while the node's total is over `<limits output-budget-bytes>` (the
    /// policy: `crate::budget`).
    pub(super) fn enforce_budget(&mut self) {
        let budget = &self.shared.output;
        if !budget.over() {
            return;
        }
        let own: Vec<(usize, usize)> = self.conns.iter().map(|(k, c)| (k, c.accounted)).collect();
        let largest = own.iter().map(|(_, b)| *b).max().unwrap_or(0);
        let others = budget.publish(self.idx, largest);
        let total = budget.total();
        for key in victims(&own, total, budget.limit(), others) {
            if let Some(c) = self.conns.get(key) {
                self.shared
                    .metrics
                    .output_cut
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = BUDGET.allow() {
                    warn!(
                        peer = %c.client_addr(),
                        suppressed,
                        unsent = c.output_len(),
                        buffered = c.accounted,
                        total,
                        "cutting {} connection: output-budget-bytes exceeded",
                        proto_name(c.proto)
                    );
                }
            }
            self.close(key);
        }
    }
}
