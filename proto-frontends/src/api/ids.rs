//! Request parsing of the JSON API: ids from the path, from `?ids=1,2,3` and from a
//! `{"ids":[...]}` body, and the `Content-Type` check of `POST /v1/presence`.
//!
//! Invariants:
//! - Ids are decimal integers from 1 to 2^64−1, given as JSON numbers or strings; anything else
//!   is `invalid_id` with the offending value echoed in `value`. From a JSON body the echo is
//!   the value's text exactly as sent (`18446744073709551616`, `1e3`, `-0` stay as written):
//!   the first pass only notes the position of the bad id, and a second pass, on that error path
//!   only, takes its text as a [`RawValue`], so a valid batch is parsed once and never copied.
//! - A POST body must be UTF-8 throughout (RFC 8259 §8.1), including in members that are
//!   ignored: it is checked once up front, and then parsed as a `str`.
//! - No more than the batch limit of ids is ever collected: the POST body is streamed through a
//!   serde visitor that stops at the limit instead of building a `Vec<Value>`.
//!
//! This module writes nothing and asks the node nothing.

use std::borrow::Cow;
use std::fmt;

use presenced_core::Sid;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::http::HttpError;

/// 400 `invalid_id`, echoing `value`.
pub(crate) fn invalid_id(value: serde_json::Value) -> HttpError {
    invalid_id_without_value().with_value(value)
}

/// 400 `invalid_id`.
fn invalid_id_without_value() -> HttpError {
    HttpError::new(
        400,
        "invalid_id",
        "ids are decimal integers from 1 to 18446744073709551615",
    )
}

/// 400 `too_many_ids`.
fn too_many_ids(limit: usize) -> HttpError {
    HttpError::new(
        400,
        "too_many_ids",
        format!("at most {limit} ids per request"),
    )
}

/// Parses an id as the JSON API and the URL path accept it: 1 to 20 ASCII digits (leading zeros
/// allowed, no sign), from 1 to 2^64−1.
pub fn parse_id(s: &str) -> Option<Sid> {
    parse_id_bytes(s.as_bytes())
}

/// [`parse_id`] over bytes, in one pass: what `u64::from_str` accepts, without its sign.
fn parse_id_bytes(s: &[u8]) -> Option<Sid> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d))?;
    }
    Sid::new(n)
}

/// Collects the ids of `?ids=1,2,3` (the parameter may be repeated; its values are
/// percent-decoded). `ids=` alone is an empty batch.
pub(crate) fn ids_from_query(
    query: Option<&str>,
    limit: usize,
    out: &mut Vec<Sid>,
) -> Result<(), HttpError> {
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
        // Split as bytes (`,` is ASCII, so every piece is whole UTF-8): a `char` pattern goes
        // through `memchr` once per id, slower for lists of short ids.
        for raw in value.as_bytes().split(|&b| b == b',') {
            if out.len() >= limit {
                return Err(too_many_ids(limit));
            }
            let sid = parse_id_bytes(raw)
                .ok_or_else(|| invalid_id(String::from_utf8_lossy(raw).into_owned().into()))?;
            out.push(sid);
        }
    }
    if !seen {
        return Err(HttpError::bad_request(
            "missing query parameter ids (?ids=1,2,3)",
        ));
    }
    Ok(())
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
pub(super) fn check_json_type(content_type: Option<&str>) -> Result<(), HttpError> {
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

/// 400 `bad_json`.
fn bad_json(why: impl fmt::Display) -> HttpError {
    HttpError::new(400, "bad_json", format!("invalid JSON body: {why}"))
}

/// Why the visitors stopped, beyond what serde's error type can carry.
enum Refusal {
    /// An API error to answer as is.
    Error(HttpError),
    /// The element of `ids` at this index is not an id; its text is taken by [`raw_id_at`].
    BadId(usize),
}

/// Parses `{"ids":[...]}` into `out`, stopping at the first bad id or at `limit`.
pub(super) fn ids_from_json(
    body: &[u8],
    limit: usize,
    out: &mut Vec<Sid>,
) -> Result<(), HttpError> {
    //= https://www.rfc-editor.org/rfc/rfc8259#section-8.1
    //# JSON text exchanged between systems that are not part of a closed ecosystem MUST be
    //# encoded using UTF-8
    // serde_json skips the strings of ignored members without decoding them; checking the
    // whole body here also lets it parse a `str`, whose strings it then need not check again.
    let text = std::str::from_utf8(body)
        .map_err(|e| bad_json(format_args!("not UTF-8 (at byte {})", e.valid_up_to())))?;
    let mut refusal = None;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = BodySeed {
        limit,
        out,
        refusal: &mut refusal,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (parsed, refusal) {
        (_, Some(Refusal::Error(e))) => Err(e),
        (_, Some(Refusal::BadId(index))) => Err(match raw_id_at(text, index) {
            Some(raw) => invalid_id_without_value().with_raw_value(raw),
            // Cannot happen: the first pass read the same text up to that element.
            None => invalid_id_without_value(),
        }),
        (Ok(()), None) => Ok(()),
        (Err(e), None) => Err(bad_json(e)),
    }
}

/// The text of element `index` of the `ids` member of `text`, a body the first pass already
/// read up to that element. Error path only.
fn raw_id_at(text: &str, index: usize) -> Option<Box<RawValue>> {
    let mut found = None;
    let mut de = serde_json::Deserializer::from_str(text);
    // The seed ends the parse with an error right after the element.
    let _ = RawSeed {
        index,
        found: &mut found,
    }
    .deserialize(&mut de);
    found
}

/// Finds the first `ids` member of the top-level object and takes its element `index`.
struct RawSeed<'a> {
    index: usize,
    found: &'a mut Option<Box<RawValue>>,
}

impl<'de> DeserializeSeed<'de> for RawSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RawSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"ids":[...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "ids" {
                return map.next_value_seed(RawIdsSeed(self));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// The `ids` array of [`RawSeed`].
struct RawIdsSeed<'a>(RawSeed<'a>);

impl<'de> DeserializeSeed<'de> for RawIdsSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RawIdsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of ids")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.0.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        *self.0.found = seq.next_element::<&'de RawValue>()?.map(RawValue::to_owned);
        // Stop here: what follows the element may be anything.
        Err(de::Error::custom("found"))
    }
}

/// Deserializes the top-level object; `refusal` receives API errors (serde's own error type
/// cannot carry them) and the visitor then aborts with a placeholder serde error.
struct BodySeed<'a> {
    limit: usize,
    out: &'a mut Vec<Sid>,
    refusal: &'a mut Option<Refusal>,
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
            *self.refusal = Some(Refusal::Error(HttpError::bad_request(
                r#"missing "ids" (expected {"ids":[...]})"#,
            )));
            return Err(de::Error::missing_field("ids"));
        }
        Ok(())
    }
}

/// Deserializes the `ids` array.
struct IdsSeed<'a> {
    limit: usize,
    out: &'a mut Vec<Sid>,
    refusal: &'a mut Option<Refusal>,
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
        let mut index = 0;
        while let Some(item) = seq.next_element::<IdItem>()? {
            if self.out.len() >= self.limit {
                *self.refusal = Some(Refusal::Error(too_many_ids(self.limit)));
                return Err(de::Error::custom("too many ids"));
            }
            match item {
                IdItem::Ok(sid) => self.out.push(sid),
                IdItem::Bad => {
                    *self.refusal = Some(Refusal::BadId(index));
                    return Err(de::Error::custom("invalid id"));
                }
            }
            index += 1;
        }
        Ok(())
    }
}

/// One element of `ids`: a valid id, or not (its text is then found by [`raw_id_at`]).
enum IdItem {
    Ok(Sid),
    Bad,
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

    // serde_json calls `visit_u64` for a literal of digits only that fits a u64, `visit_i64`
    // for a negative one that fits an i64, and `visit_f64` for every other number (fraction,
    // exponent, too big): only the first can be an id.
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdItem, E> {
        Ok(Sid::new(v).map_or(IdItem::Bad, IdItem::Ok))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdItem, E> {
        u64::try_from(v).map_or(Ok(IdItem::Bad), |u| self.visit_u64(u))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<IdItem, E> {
        Ok(IdItem::Bad)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<IdItem, E> {
        Ok(parse_id(v).map_or(IdItem::Bad, IdItem::Ok))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<IdItem, E> {
        Ok(IdItem::Bad)
    }

    fn visit_unit<E: de::Error>(self) -> Result<IdItem, E> {
        Ok(IdItem::Bad)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdItem, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(IdItem::Bad)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IdItem, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(IdItem::Bad)
    }
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
        check(r#"{"ids":[1e3]}"#, "invalid_id 1e3");
        check(r#"{"ids":["+1"]}"#, r#"invalid_id "+1""#);
        check(r#"{"ids":[""]}"#, r#"invalid_id """#);
        check(r#"{"ids":["\u0031"]}"#, "ok 1");
        check(r#"{}"#, "bad_request");
        check(r#"{"ids":null}"#, "bad_json");
        check(r#"{"ids":[1]"#, "bad_json");
        check(r#"{"ids":[1]}{}"#, "bad_json");
        check("\u{FEFF}{\"ids\":[1]}", "bad_json");
    }

    /// The echo of a bad id is its text exactly as sent; a number is never rounded through f64.
    #[test]
    fn invalid_ids_echo_the_literal() {
        for lit in [
            "18446744073709551616",
            "99999999999999999999999999999",
            "-1",
            "-0",
            "0",
            "-9223372036854775809",
            "1.0",
            "1.5",
            "1E3",
            "1e-7",
            "18446744073709551615.0",
            "1.8446744073709552e19",
            r#""\u0031x""#,
            r#""18446744073709551616""#,
            "true",
            "null",
            r#"[ 1, "2" ]"#,
            r#"{ "a" : 1 }"#,
        ] {
            check(
                &format!(r#"{{"x":[0],"ids":[1, {lit} ,2],"y":{{}}}}"#),
                &format!("invalid_id {lit}"),
            );
        }
        // What follows the bad id is not looked at (it need not even be JSON).
        check(
            r#"{"ids":[1,2,18446744073709551616 , garbage"#,
            "invalid_id 18446744073709551616",
        );
        // The key may be escaped.
        check(r#"{"\u0069ds":[-5]}"#, "invalid_id -5");
        // The error body carries the literal.
        let mut out = Vec::new();
        let e = ids_from_json(br#"{"ids":[18446744073709551616]}"#, 3, &mut out).unwrap_err();
        let mut body = Vec::new();
        e.write_body(&mut body);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"error":{"code":"invalid_id","message":"ids are decimal integers from 1 to 18446744073709551615","value":18446744073709551616}}"#
        );
    }

    /// RFC 8259 §8.1: a body that is not UTF-8 anywhere is not JSON, even inside a member that
    /// is ignored.
    #[test]
    fn json_bodies_must_be_utf8() {
        let check_bytes = |body: &[u8]| {
            let mut out = Vec::new();
            let e = ids_from_json(body, 3, &mut out).unwrap_err();
            assert_eq!((e.status, e.code), (400, "bad_json"), "{body:?}");
        };
        check_bytes(b"{\"ids\":[1],\"x\":\"\xff\"}");
        check_bytes(b"{\"x\":\"\xc3\x28\",\"ids\":[1]}");
        check_bytes(b"{\"ids\":[1],\"x\":[\"\xed\xa0\x80\"]}");
        check_bytes(b"{\"ids\":[1]} \xff");
        check_bytes(b"{\"ids\":[\"\xff\"]}");
        check("{\"ids\":[1],\"x\":\"h\u{e9}\u{1F600}\"}", "ok 1");
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
}
