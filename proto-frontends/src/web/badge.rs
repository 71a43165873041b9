//! `GET /v1/presence/{id}/badge.svg`: a small, accessible SVG badge of one user's status.
//!
//! - `role="img"` with a `<title>` and `aria-label` such as `10086: online (pc, mobile)`; the
//!   visible text is `online`, `online · pc, mobile`, `offline` or (only with
//!   `<web unknown="show">`) `unknown`.
//! - `?theme=light` (the default), `dark` or `dot` (a 12×12 coloured dot with the title only);
//!   any other theme is 400 `bad_request`. Other query parameters are ignored (cache busters).
//! - `Cache-Control: public, max-age=10` and a strong `ETag` of the exact bytes; a matching
//!   `If-None-Match` is answered 304 with no body (and the same validators).
//!
//! Invariant: in hide mode an unknown id and an offline user render to the same bytes (so the
//! same `ETag`); the badge never shows extension data, the uid or the change time.

use std::fmt::Write as _;

use presenced_config::{Unknown, Web};
use presenced_core::Status;

use crate::api::{invalid_id, parse_id};
use crate::backend::{Backend, Frontend};
use crate::http::{HttpError, Reply, Request};

/// The media type of the badge.
pub const SVG: &str = "image/svg+xml";

/// What the badge's caching headers say.
pub const CACHE_CONTROL: &str = "public, max-age=10";

/// A badge theme (`?theme=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Theme {
    /// Light background, dark text.
    Light,
    /// Dark background, light text.
    Dark,
    /// The coloured dot alone.
    Dot,
}

impl Theme {
    /// The theme a query asks for: `theme=` absent is light; an unknown name is `Err`.
    pub fn from_query(query: Option<&str>) -> Result<Self, HttpError> {
        let value = query
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("theme="));
        match value {
            None | Some("light") => Ok(Self::Light),
            Some("dark") => Ok(Self::Dark),
            Some("dot") => Ok(Self::Dot),
            Some(other) => {
                Err(HttpError::bad_request("theme must be light, dark or dot")
                    .with_value(other.into()))
            }
        }
    }
}

/// Serves the badge of the id `raw` (the path segment before `/badge.svg`); the answer's
/// validators go to `extra` as header lines.
pub(crate) fn serve(
    raw: &str,
    req: &Request<'_>,
    backend: &dyn Backend,
    web: &Web,
    statuses: &mut Vec<Status>,
    body: &mut Vec<u8>,
    extra: &mut String,
) -> Result<Reply, HttpError> {
    let sid = parse_id(raw).ok_or_else(|| invalid_id(raw.into()))?;
    let theme = Theme::from_query(req.query)?;
    backend.statuses(&[sid], statuses);
    backend.record_query(Frontend::Json, 1, 0);
    let s = statuses.pop().unwrap_or_else(|| Status::unknown(sid));
    let show_unknown = web.unknown == Unknown::Show;
    render(&super::public_status(web, s), theme, show_unknown, body);
    let tag = super::etag(body);
    let _ = write!(extra, "\r\nETag: {tag}\r\nCache-Control: {CACHE_CONTROL}");
    if super::none_match(req.if_none_match, &tag) {
        body.clear();
        return Ok(Reply {
            status: 304,
            content_type: SVG,
        });
    }
    Ok(Reply {
        status: 200,
        content_type: SVG,
    })
}

/// Appends the SVG of `s` in `theme`. The status is shown as given: apply
/// [`public_status`](super::public_status) first. Nothing is escaped because nothing needs it:
/// the text is made of the decimal id, fixed words and client type names. An unknown id is
/// `unknown` only with `show_unknown` (`<web unknown="show">`), otherwise `offline`.
pub fn render(s: &Status, theme: Theme, show_unknown: bool, out: &mut Vec<u8>) {
    let (word, dot) = match (s.known, s.online) {
        (_, true) => ("online", "#2ea043"),
        (false, false) if show_unknown => ("unknown", "#d29922"),
        _ => ("offline", "#8b949e"),
    };
    let clients: Vec<&str> = s.clients.iter().map(|c| c.name()).collect();
    let mut title = format!("{}: {word}", s.sid.get());
    if s.online && !clients.is_empty() {
        let _ = write!(title, " ({})", clients.join(", "));
    }
    let mut svg = String::with_capacity(512);
    if theme == Theme::Dot {
        let _ = write!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="12" height="12" viewBox="0 0 12 12" role="img" aria-label="{title}"><title>{title}</title><circle cx="6" cy="6" r="5" fill="{dot}"/></svg>"#
        );
        out.extend_from_slice(svg.as_bytes());
        return;
    }
    let mut text = word.to_owned();
    if s.online && !clients.is_empty() {
        let _ = write!(text, " \u{b7} {}", clients.join(", "));
    }
    let (bg, fg, border) = match theme {
        Theme::Dark => ("#0d1117", "#e6edf3", "#30363d"),
        _ => ("#ffffff", "#1f2328", "#d0d7de"),
    };
    // Verdana 11 px averages under 7 px per character for these ASCII words.
    let width = 26 + 7 * text.chars().count();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" viewBox="0 0 {width} 20" role="img" aria-label="{title}"><title>{title}</title><rect x="0.5" y="0.5" width="{w}" height="19" rx="3" fill="{bg}" stroke="{border}"/><circle cx="11" cy="10" r="4" fill="{dot}"/><text x="20" y="14" fill="{fg}" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">{text}</text></svg>"#,
        w = width - 1,
    );
    out.extend_from_slice(svg.as_bytes());
}

/// The id of a badge path `/v1/presence/{id}/badge.svg`, as written (`None`: not a badge path).
pub(crate) fn badge_id(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/presence/")?
        .strip_suffix("/badge.svg")
        .filter(|id| !id.contains('/'))
}
