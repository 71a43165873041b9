//! Credential failures on the worker's connections: pool logins with a bad token (counted,
//! logged rate-limited, and charged to the address's failure budget in
//! [`LoginThrottle`](crate::throttle::LoginThrottle)), pool connections from a blocked address
//! (refused at their first bytes, before the token is compared), and raw-TCP query handshakes
//! without a valid API key.
//!
//! Invariant: nothing here logs once per connection: every warning goes through
//! [`crate::ratelog`], so a client failing thousands of logins a second costs a line a second
//! per kind. The counters (`presenced_pool_auth_*`, `presenced_api_auth_total`) count them all.

use std::time::Instant;

use presenced_core::ack_gate::Need;
use presenced_core::auth::AuthOutcome;
use presenced_core::proto::pool_session::SessionError;
use presenced_core::proto::query::QueryError;
use presenced_core::proto::{put_error, ErrorCode};
use tracing::warn;

use super::{track_held, Conn, Session};
use crate::metrics::Proto;
use crate::ratelog::RateLimited;
use crate::shared::Shared;

static BAD_TOKEN: RateLimited = RateLimited::new();
static THROTTLED: RateLimited = RateLimited::new();
static BAD_KEY: RateLimited = RateLimited::new();

/// Index of the raw-TCP front end in the metrics' `FRONTENDS`.
const TCP: usize = 0;

/// Why a session ended, as the worker reports it.
pub(super) enum Failure {
    /// A protocol error, logged and counted by the worker as before.
    Protocol(String),
    /// A pool `HELLO` with a wrong or missing token.
    BadToken,
    /// A query `HELLO` without a valid API key.
    Unauthorized(AuthOutcome),
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Auth => Self::BadToken,
            e => Self::Protocol(e.to_string()),
        }
    }
}

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Unauthorized(outcome) => Self::Unauthorized(outcome),
            e => Self::Protocol(e.to_string()),
        }
    }
}

/// Counts and logs (rate-limited) a credential failure; the worker closes the connection.
pub(super) fn failed(shared: &Shared, c: &Conn, f: &Failure) {
    let peer = c.client_addr();
    match f {
        Failure::Protocol(_) => {}
        Failure::BadToken => {
            shared
                .metrics
                .auth
                .pool_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let blocked = shared.login_throttle.failed(peer.ip(), Instant::now());
            if let Some(suppressed) = BAD_TOKEN.allow() {
                warn!(%peer, suppressed, blocked, "closing pool connection: bad token");
            }
        }
        Failure::Unauthorized(outcome) => {
            shared.metrics.auth.api(TCP, *outcome);
            if let Some(suppressed) = BAD_KEY.allow() {
                warn!(%peer, suppressed, "closing query connection: no valid API key");
            }
        }
    }
}

/// Refuses a pool connection that has not logged in yet if its address is blocked: its input
/// is dropped unread (no token is compared) and `ERROR` 3 is queued. Returns whether it did.
pub(super) fn refuse_throttled(shared: &Shared, c: &mut Conn) -> bool {
    let Session::Pool(s) = &c.session else {
        return false;
    };
    if c.proto != Proto::Pool || !s.awaiting_hello() {
        return false;
    }
    let peer = c.client_addr();
    if !shared.login_throttle.is_blocked(peer.ip(), Instant::now()) {
        return false;
    }
    c.io.clear_input();
    let mut frame = Vec::new();
    put_error(
        &mut frame,
        ErrorCode::Auth,
        "too many failed logins from this address; retry later",
    );
    let before = c.gate.held();
    c.gate.submit(
        Need::Nothing,
        &frame,
        shared.repl.watermark(),
        c.io.output(),
    );
    track_held(shared, before, c.gate.held());
    c.closing = true;
    shared
        .metrics
        .auth
        .pool_throttled
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(suppressed) = THROTTLED.allow() {
        warn!(%peer, suppressed, "refusing pool connection: too many failed logins");
    }
    true
}
