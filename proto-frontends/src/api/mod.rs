//! The JSON API of DESIGN.md §3: the handlers of `/v1/presence`, `/v1/presence/{id}`,
//! `/v1/cluster`, `/healthz/live` and `/healthz/ready`, which [`crate::router`] calls once it has
//! matched the path and method.
//!
//! - `ids`: request parsing (ids from the path, the query and the JSON body).
//! - `write`: the hand-written JSON output ([`write_status`]).
//!
//! Invariants:
//! - Statuses come back in request order, one per requested id (duplicates included), and an
//!   unknown id has the same shape as a known one (`known:false`), never a 404.
//! - Ids are decimal integers from 1 to 2^64−1, given as JSON numbers or strings; anything else
//!   is `invalid_id` with the offending value echoed in `value`.
//! - No more than [`Backend::batch_limit`] ids are ever collected.
//! - `POST /v1/presence` refuses a `Content-Type` that is present and not JSON (415): browsers
//!   send form and `text/plain` bodies cross-origin without a preflight, JSON they do not.
//!
//! The handlers do not route, decide framing, limits or connection handling (that is
//! [`crate::router`] and [`crate::http`]) and never measure time: [`Backend::record_query`] is
//! given 0 µs and the driver accounts latency around the call.

mod ids;
mod write;

use std::borrow::Cow;

use presenced_core::{Sid, Status};

use crate::backend::{Backend, Frontend, MemberChangeError};
use crate::http::{HttpError, Reply, Request, JSON};
use crate::text::write_json_str;

pub(crate) use self::ids::ids_from_query;
pub(crate) use self::ids::invalid_id;
pub use self::ids::parse_id;
pub use self::write::write_status;

/// 200 with a JSON body.
const OK: Reply = Reply {
    status: 200,
    content_type: JSON,
};

/// `GET /v1/presence?ids=…`: the statuses of the ids of the query.
pub(crate) fn presence_query(
    query: Option<&str>,
    backend: &dyn Backend,
    ids: &mut Vec<Sid>,
    statuses: &mut Vec<Status>,
    body: &mut Vec<u8>,
) -> Result<Reply, HttpError> {
    ids_from_query(query, backend.batch_limit(), ids)?;
    presence(backend, ids, statuses, body);
    Ok(OK)
}

/// `POST /v1/presence`: the statuses of the ids of a `{"ids":[...]}` body.
pub(crate) fn presence_post(
    req: &Request<'_>,
    backend: &dyn Backend,
    ids: &mut Vec<Sid>,
    statuses: &mut Vec<Status>,
    body: &mut Vec<u8>,
) -> Result<Reply, HttpError> {
    ids::check_json_type(req.content_type)?;
    ids::ids_from_json(req.body, backend.batch_limit(), ids)?;
    presence(backend, ids, statuses, body);
    Ok(OK)
}

/// `GET /v1/presence/{id}`: one status object; `raw` is the (non-empty) last path segment.
pub(crate) fn presence_one(
    raw: &str,
    backend: &dyn Backend,
    ids: &mut Vec<Sid>,
    statuses: &mut Vec<Status>,
    body: &mut Vec<u8>,
) -> Result<Reply, HttpError> {
    let sid = parse_id(raw).ok_or_else(|| invalid_id(raw.into()))?;
    ids.push(sid);
    backend.statuses(ids, statuses);
    backend.record_query(Frontend::Json, 1, 0);
    let s = statuses
        .first()
        .map_or_else(|| Cow::Owned(Status::unknown(sid)), Cow::Borrowed);
    write_status(body, &s);
    Ok(OK)
}

/// `GET /v1/cluster`: the [`ClusterView`](crate::backend::ClusterView).
pub(crate) fn cluster(backend: &dyn Backend, body: &mut Vec<u8>) -> Result<Reply, HttpError> {
    serde_json::to_writer(&mut *body, &backend.cluster()).map_err(|e| {
        HttpError::new(
            500,
            "internal",
            format!("cannot render the cluster view: {e}"),
        )
    })?;
    Ok(OK)
}

/// `DELETE` (`remove`) or `POST /v1/cluster/members/{id}`: removes node `id` from the cluster,
/// or re-admits it.
pub(crate) fn change_member(
    raw: &str,
    remove: bool,
    backend: &dyn Backend,
    body: &mut Vec<u8>,
) -> Result<Reply, HttpError> {
    let id = raw
        .parse::<u16>()
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            HttpError::new(400, "invalid_id", "a node id is 1 to 65535")
                .with_value(serde_json::Value::String(raw.to_owned()))
        })?;
    match backend.change_member(id, remove) {
        Ok(()) => {
            let what = if remove { "removed" } else { "readmitted" };
            body.extend_from_slice(
                format!("{{\"node\":{},\"{what}\":{id}}}", backend.node_id()).as_bytes(),
            );
            Ok(OK)
        }
        Err(MemberChangeError::ItsMe) => Err(HttpError::new(
            409,
            "conflict",
            "a node cannot remove or re-admit itself; ask another node",
        )),
        Err(MemberChangeError::Unknown) => Err(HttpError::new(
            404,
            "not_found",
            format!("node {id} is not a member of this cluster"),
        )),
        Err(MemberChangeError::Unavailable) => Err(HttpError::new(
            503,
            "unavailable",
            "the membership change could not be made now; retry",
        )),
    }
}

/// `GET /healthz/live`.
pub(crate) fn live(body: &mut Vec<u8>) -> Result<Reply, HttpError> {
    body.extend_from_slice(br#"{"status":"live"}"#);
    Ok(OK)
}

/// `GET /healthz/ready`: 200 when ready, else 503 with the reason.
pub(crate) fn ready(backend: &dyn Backend, body: &mut Vec<u8>) -> Result<Reply, HttpError> {
    match backend.not_ready_reason() {
        None => {
            body.extend_from_slice(br#"{"status":"ready"}"#);
            Ok(OK)
        }
        Some(reason) => {
            body.extend_from_slice(br#"{"status":"not_ready","reason":"#);
            write_json_str(body, &reason);
            body.push(b'}');
            Ok(Reply {
                status: 503,
                content_type: JSON,
            })
        }
    }
}

/// 404 `not_found`.
pub(crate) fn not_found() -> HttpError {
    HttpError::new(404, "not_found", "no such resource")
}

/// Looks up `ids` and writes the batch answer.
fn presence(backend: &dyn Backend, ids: &[Sid], statuses: &mut Vec<Status>, body: &mut Vec<u8>) {
    backend.statuses(ids, statuses);
    backend.record_query(Frontend::Json, ids.len(), 0);
    write::write_presence(body, backend.now_ms(), backend.node_id(), ids, statuses);
}
