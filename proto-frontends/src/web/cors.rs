//! CORS (`<web allowed-origins>`) on the API, the watch stream, the badge and `/soap`.
//!
//! - A request whose `Origin` is allowed gets `Access-Control-Allow-Origin: <that origin>`;
//!   every response of these paths gets `Vary: Origin` once origins are configured (what a
//!   shared cache stores depends on the `Origin`).
//! - `OPTIONS` on these paths is a preflight, answered 204 before any API-key check (browsers
//!   never send credentials on one); for an allowed origin it carries
//!   `Access-Control-Allow-Methods: GET, POST, OPTIONS`,
//!   `Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID, SOAPAction`
//!   and `Access-Control-Max-Age: 600`; for any other origin, none of them.
//! - Without `allowed-origins` no CORS header is ever written (a preflight is still 204);
//!   without `<web>` neither is, and `OPTIONS` stays 405 as before.
//!
//! Only header lines are decided here; the router calls [`headers`] and [`preflight`].

use presenced_config::Web;

use crate::http::Reply;

/// The paths whose answers browsers of other origins may read.
pub fn applies(path: &str) -> bool {
    path == "/v1/presence"
        || path.starts_with("/v1/presence/")
        || path == "/v1/watch"
        || path == "/soap"
}

/// Appends the CORS header lines of an actual (non-preflight) request to `extra`.
pub fn headers(web: &Web, origin: Option<&str>, extra: &mut String) {
    let Some(allowed) = &web.allowed_origins else {
        return;
    };
    if let Some(o) = origin.filter(|o| allowed.allows(o)) {
        extra.push_str("\r\nAccess-Control-Allow-Origin: ");
        extra.push_str(o);
    }
    extra.push_str("\r\nVary: Origin");
}

/// Answers a preflight `OPTIONS`: 204, with the CORS header lines in `extra` when `origin` is
/// allowed.
pub fn preflight(web: &Web, origin: Option<&str>, extra: &mut String) -> Reply {
    headers(web, origin, extra);
    if extra.contains("Access-Control-Allow-Origin") {
        extra.push_str(
            "\r\nAccess-Control-Allow-Methods: GET, POST, OPTIONS\
             \r\nAccess-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID, SOAPAction\
             \r\nAccess-Control-Max-Age: 600",
        );
    }
    Reply {
        status: 204,
        content_type: "text/plain",
    }
}
