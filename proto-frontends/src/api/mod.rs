//! The HTTP router and the JSON API of DESIGN.md §3: `/v1/presence`, `/v1/presence/{id}`,
//! `/v1/cluster`, `/healthz/live`, `/healthz/ready`, `/metrics`, and the hand-off of `/soap` to
//! [`crate::soap`].
//!
//! | method          | path                 | answer                                            |
//! |-----------------|----------------------|---------------------------------------------------|
//! | GET, HEAD       | `/v1/presence?ids=…` | `{"as_of":…,"node":N,"statuses":[…]}`             |
//! | POST            | `/v1/presence`       | the same, for `{"ids":[1,"2",3]}`                 |
//! | GET, HEAD       | `/v1/presence/{id}`  | one status object                                 |
//! | GET, HEAD       | `/v1/cluster`        | [`ClusterView`](crate::backend::ClusterView)     |
//! | GET, HEAD       | `/healthz/live`      | `{"status":"live"}`                               |
//! | GET, HEAD       | `/healthz/ready`     | 200 `{"status":"ready"}` or 503 `not_ready`       |
//! | GET, HEAD       | `/metrics`           | Prometheus text format 0.0.4                      |
//! | GET, HEAD       | `/soap?wsdl`         | the WSDL                                          |
//! | POST            | `/soap`              | SOAP 1.1 / 1.2 `GetPresence`                      |
//!
//! Invariants:
//! - Statuses come back in request order, one per requested id (duplicates included), and an
//!   unknown id has the same shape as a known one (`known:false`), never a 404.
//! - Ids are decimal integers from 1 to 2^64−1, given as JSON numbers or strings; anything else
//!   is `invalid_id` with the offending value echoed in `value`.
//! - No more than [`Backend::batch_limit`] ids are ever collected: the POST body is streamed
//!   through a serde visitor that stops at the limit instead of building a `Vec<Value>`.
//! - `POST /v1/presence` refuses a `Content-Type` that is present and not JSON (415): browsers
//!   send form and `text/plain` bodies cross-origin without a preflight, JSON they do not.
//!
//! The router does not decide framing, limits or connection handling (that is [`crate::http`])
//! and never measures time: [`Backend::record_query`] is given 0 µs and the driver accounts
//! latency around the call.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::time::{Duration, UNIX_EPOCH};

use presenced_core::{Sid, Status};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::backend::{Backend, Frontend};
use crate::http::{HttpError, HttpLimits, Reply, Request, JSON};

/// Buffers reused from one request to the next on a connection.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub(crate) ids: Vec<Sid>,
    pub(crate) statuses: Vec<Status>,
}

impl Scratch {
    /// Empties the buffers, and frees them if a large batch left them big.
    pub(crate) fn trim(&mut self) {
        const KEEP: usize = 1024;
        self.ids.clear();
        self.statuses.clear();
        if self.ids.capacity() > KEEP {
            self.ids = Vec::new();
        }
        if self.statuses.capacity() > KEEP {
            self.statuses = Vec::new();
        }
    }
}

/// The media type of `/metrics`.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Routes one request; the response body goes to `body`. An `Err` is answered in the JSON error
/// format by the caller (which also counts it).
pub(crate) fn handle(
    req: &Request<'_>,
    backend: &dyn Backend,
    limits: &HttpLimits,
    scratch: &mut Scratch,
    body: &mut Vec<u8>,
) -> Result<Reply, HttpError> {
    const GET: &str = "GET, HEAD";
    const GET_POST: &str = "GET, HEAD, POST";
    let get = matches!(req.method, "GET" | "HEAD");
    let ok = |content_type| {
        Ok(Reply {
            status: 200,
            content_type,
        })
    };
    match req.path {
        "/v1/presence" if get => {
            ids_from_query(req.query, backend.batch_limit(), &mut scratch.ids)?;
            presence(backend, scratch, body);
            ok(JSON)
        }
        "/v1/presence" if req.method == "POST" => {
            check_json_type(req.content_type)?;
            ids_from_json(req.body, backend.batch_limit(), &mut scratch.ids)?;
            presence(backend, scratch, body);
            ok(JSON)
        }
        "/v1/presence" => Err(HttpError::method_not_allowed(GET_POST)),
        p if p.starts_with("/v1/presence/") => {
            let raw = p.get("/v1/presence/".len()..).unwrap_or_default();
            if raw.is_empty() || raw.contains('/') {
                return Err(not_found());
            }
            if !get {
                return Err(HttpError::method_not_allowed(GET));
            }
            let sid = parse_id(raw).ok_or_else(|| invalid_id(raw.into()))?;
            scratch.ids.push(sid);
            backend.statuses(&scratch.ids, &mut scratch.statuses);
            backend.record_query(Frontend::Json, 1, 0);
            let s = scratch
                .statuses
                .first()
                .map_or_else(|| Cow::Owned(Status::unknown(sid)), Cow::Borrowed);
            write_status(body, &s);
            ok(JSON)
        }
        "/v1/cluster" | "/healthz/live" | "/healthz/ready" | "/metrics" if !get => {
            Err(HttpError::method_not_allowed(GET))
        }
        "/v1/cluster" => {
            serde_json::to_writer(&mut *body, &backend.cluster()).map_err(|e| {
                HttpError::new(
                    500,
                    "internal",
                    format!("cannot render the cluster view: {e}"),
                )
            })?;
            ok(JSON)
        }
        "/healthz/live" => {
            body.extend_from_slice(br#"{"status":"live"}"#);
            ok(JSON)
        }
        "/healthz/ready" => match backend.not_ready_reason() {
            None => {
                body.extend_from_slice(br#"{"status":"ready"}"#);
                ok(JSON)
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
        },
        "/metrics" => {
            let mut text = String::new();
            backend.render_metrics(&mut text);
            body.extend_from_slice(text.as_bytes());
            ok(PROMETHEUS)
        }
        "/soap" if get => {
            if !query_has_flag(req.query, "wsdl") {
                return Err(HttpError::bad_request(
                    "SOAP requests are POSTed to /soap; the WSDL is at GET /soap?wsdl",
                ));
            }
            crate::soap::write_wsdl(req.host, body);
            ok(crate::soap::WSDL_CONTENT_TYPE)
        }
        "/soap" if req.method == "POST" => Ok(crate::soap::handle_post(
            req,
            backend,
            limits,
            &mut scratch.ids,
            &mut scratch.statuses,
            body,
        )),
        "/soap" => Err(HttpError::method_not_allowed(GET_POST)),
        _ => Err(not_found()),
    }
}

fn not_found() -> HttpError {
    HttpError::new(404, "not_found", "no such resource")
}

fn invalid_id(value: serde_json::Value) -> HttpError {
    HttpError::new(
        400,
        "invalid_id",
        "ids are decimal integers from 1 to 18446744073709551615",
    )
    .with_value(value)
}

fn too_many_ids(limit: usize) -> HttpError {
    HttpError::new(
        400,
        "too_many_ids",
        format!("at most {limit} ids per request"),
    )
}

/// Looks up `scratch.ids` and writes the batch answer.
fn presence(backend: &dyn Backend, scratch: &mut Scratch, body: &mut Vec<u8>) {
    backend.statuses(&scratch.ids, &mut scratch.statuses);
    backend.record_query(Frontend::Json, scratch.ids.len(), 0);
    body.extend_from_slice(br#"{"as_of":""#);
    write_rfc3339_ms(body, backend.now_ms());
    body.extend_from_slice(br#"","node":"#);
    crate::http::push_u64(body, u64::from(backend.node_id()));
    body.extend_from_slice(br#","statuses":["#);
    // The backend appends one status per id; should it ever not, the missing ones are unknown.
    for (i, sid) in scratch.ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match scratch.statuses.get(i) {
            Some(s) => write_status(body, s),
            None => write_status(body, &Status::unknown(*sid)),
        }
    }
    body.extend_from_slice(b"]}");
}

/// Parses an id as the JSON API and the URL path accept it: 1 to 20 ASCII digits (leading zeros
/// allowed, no sign), from 1 to 2^64−1.
pub fn parse_id(s: &str) -> Option<Sid> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().and_then(Sid::new)
}

/// Collects the ids of `?ids=1,2,3` (the parameter may be repeated; its values are
/// percent-decoded). `ids=` alone is an empty batch.
fn ids_from_query(query: Option<&str>, limit: usize, out: &mut Vec<Sid>) -> Result<(), HttpError> {
    let mut seen = false;
    for (name, value) in query
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        if name != "ids" {
            continue;
        }
        seen = true;
        let value = percent_decode(value)
            .ok_or_else(|| HttpError::bad_request("malformed percent-encoding in ids"))?;
        if value.is_empty() {
            continue;
        }
        for raw in value.split(',') {
            if out.len() >= limit {
                return Err(too_many_ids(limit));
            }
            out.push(parse_id(raw).ok_or_else(|| invalid_id(raw.into()))?);
        }
    }
    if !seen {
        return Err(HttpError::bad_request(
            "missing query parameter ids (?ids=1,2,3)",
        ));
    }
    Ok(())
}

/// Whether the query has a parameter named `flag` (any case, with or without a value).
fn query_has_flag(query: Option<&str>, flag: &str) -> bool {
    query.unwrap_or_default().split('&').any(|kv| {
        let name = kv.split_once('=').map_or(kv, |(k, _)| k);
        name.eq_ignore_ascii_case(flag)
    })
}

/// Decodes `%XX` escapes and `+` (form encoding for a space). `None` on a bad escape or a
/// result that is not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains(['%', '+']) {
        return Some(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hi = char::from(bytes.next()?).to_digit(16)?;
                let lo = char::from(bytes.next()?).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Refuses a `Content-Type` that is present and not `application/json` or `*/*+json`.
fn check_json_type(content_type: Option<&str>) -> Result<(), HttpError> {
    let Some(ct) = content_type else {
        return Ok(());
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        return Ok(());
    }
    Err(HttpError::new(
        415,
        "unsupported_media_type",
        "POST /v1/presence takes application/json",
    )
    .with_value(ct.into()))
}

/// Parses `{"ids":[...]}` into `out`, stopping at the first bad id or at `limit`.
fn ids_from_json(body: &[u8], limit: usize, out: &mut Vec<Sid>) -> Result<(), HttpError> {
    let mut refusal = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BodySeed {
        limit,
        out,
        refusal: &mut refusal,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (parsed, refusal) {
        (_, Some(e)) => Err(e),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(HttpError::new(
            400,
            "bad_json",
            format!("invalid JSON body: {e}"),
        )),
    }
}

/// Deserializes the top-level object; `refusal` receives API errors (serde's own error type
/// cannot carry them) and the visitor then aborts with a placeholder serde error.
struct BodySeed<'a> {
    limit: usize,
    out: &'a mut Vec<Sid>,
    refusal: &'a mut Option<HttpError>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"ids":[...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key != "ids" {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            if seen {
                return Err(de::Error::duplicate_field("ids"));
            }
            seen = true;
            map.next_value_seed(IdsSeed {
                limit: self.limit,
                out: &mut *self.out,
                refusal: &mut *self.refusal,
            })?;
        }
        if !seen {
            *self.refusal = Some(HttpError::bad_request(
                r#"missing "ids" (expected {"ids":[...]})"#,
            ));
            return Err(de::Error::missing_field("ids"));
        }
        Ok(())
    }
}

/// Deserializes the `ids` array.
struct IdsSeed<'a> {
    limit: usize,
    out: &'a mut Vec<Sid>,
    refusal: &'a mut Option<HttpError>,
}

impl<'de> DeserializeSeed<'de> for IdsSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<IdItem>()? {
            if self.out.len() >= self.limit {
                *self.refusal = Some(too_many_ids(self.limit));
                return Err(de::Error::custom("too many ids"));
            }
            match item {
                IdItem::Ok(sid) => self.out.push(sid),
                IdItem::Bad(v) => {
                    *self.refusal = Some(invalid_id(v));
                    return Err(de::Error::custom("invalid id"));
                }
            }
        }
        Ok(())
    }
}

/// One element of `ids`: a valid id, or the value to echo in `invalid_id`.
enum IdItem {
    Ok(Sid),
    Bad(serde_json::Value),
}

impl<'de> de::Deserialize<'de> for IdItem {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdItemVisitor)
    }
}

struct IdItemVisitor;

impl<'de> Visitor<'de> for IdItemVisitor {
    type Value = IdItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an id (a number or a string of digits)")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdItem, E> {
        Ok(Sid::new(v).map_or(IdItem::Bad(v.into()), IdItem::Ok))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdItem, E> {
        match u64::try_from(v) {
            Ok(u) => self.visit_u64(u),
            Err(_) => Ok(IdItem::Bad(v.into())),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<IdItem, E> {
        Ok(IdItem::Bad(v.into()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IdItem, E> {
        Ok(parse_id(v).map_or_else(|| IdItem::Bad(v.into()), IdItem::Ok))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<IdItem, E> {
        Ok(IdItem::Bad(v.into()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<IdItem, E> {
        Ok(IdItem::Bad(serde_json::Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<IdItem, A::Error> {
        let v = de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(IdItem::Bad(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<IdItem, A::Error> {
        let v = de::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(IdItem::Bad(v))
    }
}

/// Appends one status in the JSON shape of DESIGN.md §3:
/// `{"id":"10086","known":true,"online":true,"clients":["pc"],"accepts_strangers":true,
/// "changed_at":"2026-11-25T10:00:00.123Z","ext":{"nick":"alice"}}`.
pub fn write_status(out: &mut Vec<u8>, s: &Status) {
    out.extend_from_slice(br#"{"id":""#);
    crate::http::push_u64(out, s.sid.get());
    out.extend_from_slice(br#"","known":"#);
    out.extend_from_slice(bool_str(s.known).as_bytes());
    out.extend_from_slice(br#","online":"#);
    out.extend_from_slice(bool_str(s.online).as_bytes());
    out.extend_from_slice(br#","clients":["#);
    for (i, c) in s.clients.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(c.name().as_bytes());
        out.push(b'"');
    }
    out.extend_from_slice(br#"],"accepts_strangers":"#);
    out.extend_from_slice(bool_str(s.accepts_strangers).as_bytes());
    out.extend_from_slice(br#","changed_at":"#);
    match s.changed_at_ms {
        Some(ms) => {
            out.push(b'"');
            write_rfc3339_ms(out, ms);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","ext":{"#);
    if let Some(ext) = &s.ext {
        for (i, (k, v)) in ext.entries().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_str(out, k);
            out.push(b':');
            write_json_str(out, v);
        }
    }
    out.extend_from_slice(b"}}");
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Appends `ms` (since the Unix epoch) as RFC 3339 UTC with milliseconds and `Z`, e.g.
/// `2026-11-25T10:00:00.123Z`. Times past year 9999 are clamped to its last millisecond.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, ms: u64) {
    // 9999-12-31T23:59:59.999Z: humantime refuses anything later.
    const MAX_MS: u64 = 253_402_300_799_999;
    let t = UNIX_EPOCH + Duration::from_millis(ms.min(MAX_MS));
    let start = out.len();
    if write!(Bytes(out), "{}", humantime::format_rfc3339_millis(t)).is_err() {
        out.truncate(start);
        out.extend_from_slice(b"9999-12-31T23:59:59.999Z");
    }
}

/// `fmt::Write` into a byte buffer, so formatting needs no intermediate `String`.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends `s` as a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(s.as_bytes().get(start..i).unwrap_or_default());
        if esc.is_empty() {
            let hi = HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0');
            let lo = HEX.get(usize::from(b & 0xf)).copied().unwrap_or(b'0');
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(s.as_bytes().get(start..).unwrap_or_default());
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `ids_from_json` with a limit of 3 and summarises: `"ok 1,2"` or `"<code> <value>"`.
    fn check(body: &str, expected: &str) {
        let mut out = Vec::new();
        let got = match ids_from_json(body.as_bytes(), 3, &mut out) {
            Ok(()) => {
                let ids: Vec<String> = out.iter().map(|s| s.get().to_string()).collect();
                format!("ok {}", ids.join(","))
            }
            Err(e) => match e.value {
                Some(v) => format!("{} {v}", e.code),
                None => e.code.to_owned(),
            },
        };
        assert_eq!(got, expected, "body: {body}");
    }

    #[test]
    fn json_ids() {
        check(
            r#"{"ids":[1,"2",18446744073709551615]}"#,
            "ok 1,2,18446744073709551615",
        );
        check(r#" { "x" : {"ids":[0]}, "ids" : [ "0003" ] } "#, "ok 3");
        check(r#"{"ids":[]}"#, "ok ");
        check(r#"{"ids":[1,2,3,4]}"#, "too_many_ids");
        check(r#"{"ids":[1,2,3,"x"]}"#, "too_many_ids");
        check(r#"{"ids":[1,"x",3,4]}"#, r#"invalid_id "x""#);
        check(r#"{"ids":[1e3]}"#, "invalid_id 1000.0");
        check(r#"{"ids":["+1"]}"#, r#"invalid_id "+1""#);
        check(r#"{"ids":[""]}"#, r#"invalid_id """#);
        check(r#"{"ids":["\u0031"]}"#, "ok 1");
        check(r#"{}"#, "bad_request");
        check(r#"{"ids":null}"#, "bad_json");
        check(r#"{"ids":[1]"#, "bad_json");
        check(r#"{"ids":[1]}{}"#, "bad_json");
        check("\u{FEFF}{\"ids\":[1]}", "bad_json");
    }

    #[test]
    fn path_and_query_ids() {
        assert_eq!(
            parse_id("18446744073709551615").map(Sid::get),
            Some(u64::MAX)
        );
        assert_eq!(parse_id("007").map(Sid::get), Some(7));
        for bad in [
            "",
            "0",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "18446744073709551616",
            "１",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
        let mut out = Vec::new();
        assert!(ids_from_query(Some("a=1&ids=1%2C2&ids=3"), 3, &mut out).is_ok());
        assert_eq!(out.iter().map(|s| s.get()).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(percent_decode("a%41+b").as_deref(), Some("aA b"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert!(query_has_flag(Some("x=1&WSDL"), "wsdl"));
        assert!(query_has_flag(Some("wsdl="), "wsdl"));
        assert!(!query_has_flag(Some("wsdlx"), "wsdl"));
        assert!(!query_has_flag(None, "wsdl"));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            None,
            Some("application/json"),
            Some("application/json;charset=UTF-8"),
            Some("application/problem+json"),
        ] {
            assert!(check_json_type(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "text/plain",
            "text/json",
            "multipart/form-data; boundary=x",
            "",
        ] {
            assert_eq!(
                check_json_type(Some(bad)).map_err(|e| e.status),
                Err(415),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timestamps() {
        let f = |ms| {
            let mut v = Vec::new();
            write_rfc3339_ms(&mut v, ms);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(f(1_764_064_800_123), "2025-11-25T10:00:00.123Z");
        assert_eq!(f(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(f(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_strings() {
        let f = |s: &str| {
            let mut v = Vec::new();
            write_json_str(&mut v, s);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f(""), r#""""#);
        assert_eq!(
            f("a\"b\\c\n\r\t\u{1}\u{1f}é北\u{2028}"),
            "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001fé北\u{2028}\""
        );
        let s = "x\u{0}y\"\u{7f}";
        assert_eq!(serde_json::from_str::<String>(&f(s)).unwrap(), s);
    }
}
