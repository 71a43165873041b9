//! The public web endpoints of `<web>`: the SVG badge (`badge`), the embeddable widget and the
//! status page (`assets`), and CORS on the API (`cors`). The watch stream (`/v1/watch`) is not
//! here.
//!
//! | method    | path                             | answer                                     |
//! |-----------|----------------------------------|--------------------------------------------|
//! | GET, HEAD | `/v1/presence/{id}/badge.svg`    | an SVG badge, `?theme=light|dark|dot`      |
//! | GET, HEAD | `/widget.js`                     | the widget, with this node's `<web>` config |
//! | GET, HEAD | `/`                              | the status page                            |
//! | OPTIONS   | the API, watch, badge and `/soap` | CORS preflight: 204                        |
//!
//! Invariants:
//! - Without `<web>` every path above is 404 `not_found` and no CORS header is sent
//!   ([`crate::backend::Backend::web`] is `None`).
//! - These endpoints are open even when API keys are configured (browsers cannot send them).
//! - Privacy ([`public_status`]): with `unknown="hide"` (the default) a user who is not online
//!   is shown exactly as an unknown id, so the public endpoints never tell an unknown id from an
//!   offline user; with `unknown="show"` statuses are shown as they are.
//! - Validators are strong `ETag`s computed from the exact bytes sent ([`etag`]), so a
//!   `304 Not Modified` is never sent for a body that differs.
//!
//! This module renders what the [`Backend`](crate::backend::Backend) gives it; it measures no
//! time and performs no I/O (the assets are compiled into the binary).

pub mod assets;
pub mod badge;
pub mod cors;

use presenced_config::{Unknown, Web};
use presenced_core::Status;

/// The status a public endpoint shows for `s` under `web`'s `unknown` rule: in hide mode a
/// user who is not online is written as an unknown id; in show mode `s` as it is.
pub fn public_status(web: &Web, s: Status) -> Status {
    match web.unknown {
        Unknown::Show => s,
        Unknown::Hide if s.online => s,
        Unknown::Hide => Status::unknown(s.sid),
    }
}

/// A strong entity tag of `bytes`: 64-bit FNV-1a, hex, in quotes (`"0123456789abcdef"`).
/// Not a cryptographic hash: it only has to change when the bytes change.
pub fn etag(bytes: &[u8]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let h = bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    format!("\"{h:016x}\"")
}

/// Whether an `If-None-Match` value matches `etag` (RFC 9110 §13.1.2: `*`, or any listed tag by
/// weak comparison, so `W/"x"` matches `"x"`).
pub fn none_match(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(v) = if_none_match else {
        return false;
    };
    v.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
    })
}

#[cfg(test)]
mod tests {
    use presenced_core::Sid;

    use super::*;

    #[test]
    fn etags_and_matching() {
        let a = etag(b"a");
        assert_eq!(a.len(), 18);
        assert_ne!(a, etag(b"b"));
        assert_eq!(a, etag(b"a"));
        assert!(none_match(Some(&a), &a));
        assert!(none_match(Some("*"), &a));
        assert!(none_match(Some(&format!("\"x\", W/{a}")), &a));
        assert!(!none_match(Some("\"x\""), &a));
        assert!(!none_match(None, &a));
    }

    #[test]
    fn hide_mode_shows_offline_users_as_unknown() {
        let mut web = Web::from_attrs(None, None, None, None, None).unwrap();
        let sid = Sid::new(7).unwrap();
        let mut s = Status::unknown(sid);
        s.known = true;
        s.changed_at_ms = Some(5);
        assert_eq!(public_status(&web, s.clone()), Status::unknown(sid));
        s.online = true;
        assert_eq!(public_status(&web, s.clone()), s);
        web.unknown = Unknown::Show;
        s.online = false;
        assert_eq!(public_status(&web, s.clone()), s);
    }
}
