//! API keys on the HTTP port: which routes need one ([`protected`]), how a key is read from
//! `Authorization: Bearer KEY` ([`bearer`]), and the one refusal each front end writes
//! ([`refuse`]). The key itself is judged by the [`Backend`] (`presenced_core::auth`).
//!
//! | needs a key (when any is configured)                          | stays open                  |
//! |---------------------------------------------------------------|-----------------------------|
//! | `/v1/presence` (any method), `/v1/presence/{id}`              | `/healthz/live`, `/healthz/ready` |
//! | `/v1/cluster`, `/v1/cluster/members/{id}`                     | `GET /soap?wsdl` (and `GET /soap`) |
//! | `/metrics`, `POST /soap`                                      | anything else (404s; the public web pages) |
//!
//! Invariant: the refusal says nothing about what was wrong: a missing header, another scheme,
//! a malformed value and an unknown key get the same bytes (JSON 401 with
//! `WWW-Authenticate: Bearer`, or the SOAP fault `Unauthorized` in the request's version).

use std::borrow::Cow;

use presenced_core::auth::Presented;

use crate::backend::{Backend, Frontend};
use crate::http::{HttpError, Reply, Request};
use crate::soap::{self, Fault, FaultCode, FaultKind, SoapVersion};

/// The message of every refusal.
const MESSAGE: &str = "a valid API key is required (Authorization: Bearer KEY)";

/// The front end a request to a protected route is served by, `None` for open routes.
pub(super) fn protected(req: &Request<'_>) -> Option<Frontend> {
    let path = req.path;
    let json = path == "/v1/presence"
        || path
            .strip_prefix("/v1/presence/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        || path == "/v1/cluster"
        || path.starts_with("/v1/cluster/")
        || path == "/metrics";
    if json {
        Some(Frontend::Json)
    } else if path == "/soap" && req.method == "POST" {
        Some(Frontend::Soap)
    } else {
        None
    }
}

/// Reads `Authorization: Bearer KEY`: the scheme in any case (RFC 7235 §2.1), one or more
/// spaces, then the key (no spaces in it).
pub(super) fn bearer(header: Option<&str>) -> Presented<'_> {
    let Some(value) = header else {
        return Presented::Missing;
    };
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Presented::Malformed;
    };
    let key = rest.trim_start_matches(' ').trim_end_matches([' ', '\t']);
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() || key.contains([' ', '\t']) {
        return Presented::Malformed;
    }
    Presented::Key(key.as_bytes())
}

/// The refusal of a request that `backend.authorize` turned down: a JSON 401, or for SOAP a
/// fault (HTTP 500) in the version the `Content-Type` names (the unauthenticated body is not
/// parsed), written to `body`.
pub(super) fn refuse(
    f: Frontend,
    req: &Request<'_>,
    backend: &dyn Backend,
    body: &mut Vec<u8>,
) -> Result<Reply, HttpError> {
    match f {
        Frontend::Json => Err(HttpError::new(401, "unauthorized", Cow::Borrowed(MESSAGE))),
        Frontend::Soap => {
            let version = SoapVersion::from_content_type(req.content_type);
            let fault = Fault {
                version,
                kind: FaultKind::Client,
                code: FaultCode::Unauthorized,
                message: MESSAGE.to_owned(),
                bad_value: None,
            };
            backend.record_error(FaultCode::Unauthorized.label());
            soap::write_fault(&fault, body);
            Ok(Reply {
                status: 500,
                content_type: version.content_type(),
            })
        }
    }
}
