//! The files the node serves to browsers, compiled into the binary (`include_str!` of
//! `proto-frontends/assets/`): `GET /widget.js` and the status page `GET /`.
//!
//! - `/widget.js` is `assets/widget.js` with its `/*CONFIG*/{…}` placeholder replaced by this
//!   node's configuration as a JSON object (`chat_url`, `unknown`, `batch_limit`), escaped so
//!   that it cannot end the script (`<`, U+2028, U+2029 as `\u` escapes). Served as
//!   `text/javascript; charset=utf-8` with `Cache-Control: public, max-age=300` and a strong
//!   `ETag` of the bytes; a matching `If-None-Match` is 304.
//! - `/` is `assets/status.html` as it is (HTML, CSS and script inline, nothing external),
//!   `Cache-Control: no-cache` with an `ETag`.
//!
//! Nothing here depends on the request but the validators: the bytes depend only on the
//! configuration.

use std::fmt::Write as _;

use presenced_config::{Unknown, Web};

use crate::http::{Reply, Request};

/// The widget's source, with its configuration placeholder.
const WIDGET: &str = include_str!("../../assets/widget.js");

/// The status page.
const STATUS_PAGE: &str = include_str!("../../assets/status.html");

/// The placeholder in [`WIDGET`] that the configuration replaces (a valid default object).
const CONFIG_MARK: &str = "/*CONFIG*/{}";

/// The media type of the widget.
pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The media type of the status page.
pub const HTML: &str = "text/html; charset=utf-8";

/// Appends the widget with `web`'s configuration and this node's `batch_limit`.
pub fn render_widget(web: &Web, batch_limit: usize, out: &mut Vec<u8>) {
    let config = serde_json::json!({
        "chat_url": web.chat_url,
        "unknown": match web.unknown { Unknown::Hide => "hide", Unknown::Show => "show" },
        "batch_limit": batch_limit,
    });
    let mut safe = String::new();
    for c in config.to_string().chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(safe, "\\u{:04x}", u32::from(c));
            }
            c => safe.push(c),
        }
    }
    let (before, after) = WIDGET.split_once(CONFIG_MARK).unwrap_or((WIDGET, ""));
    out.extend_from_slice(before.as_bytes());
    out.extend_from_slice(safe.as_bytes());
    out.extend_from_slice(after.as_bytes());
}

/// `GET /widget.js`.
pub(crate) fn widget(
    req: &Request<'_>,
    web: &Web,
    batch_limit: usize,
    body: &mut Vec<u8>,
    extra: &mut String,
) -> Reply {
    render_widget(web, batch_limit, body);
    validated(req, body, "public, max-age=300", JAVASCRIPT, extra)
}

/// `GET /`.
pub(crate) fn status_page(req: &Request<'_>, body: &mut Vec<u8>, extra: &mut String) -> Reply {
    body.extend_from_slice(STATUS_PAGE.as_bytes());
    validated(req, body, "no-cache", HTML, extra)
}

/// Adds `ETag` and `Cache-Control` to `extra`; 304 with no body when `If-None-Match` matches.
fn validated(
    req: &Request<'_>,
    body: &mut Vec<u8>,
    cache: &str,
    content_type: &'static str,
    extra: &mut String,
) -> Reply {
    let tag = super::etag(body);
    let _ = write!(extra, "\r\nETag: {tag}\r\nCache-Control: {cache}");
    if super::none_match(req.if_none_match, &tag) {
        body.clear();
        return Reply {
            status: 304,
            content_type,
        };
    }
    Reply {
        status: 200,
        content_type,
    }
}
