//! JSON output of the API, written by hand for speed: the batch answer of `/v1/presence` and
//! one status object.
//!
//! Invariant: statuses come back in request order, one per requested id (duplicates included),
//! and an unknown id has the same shape as a known one (`known:false`).
//!
//! This module only renders what it is given; it asks the node nothing.

use presenced_core::{Sid, Status};

use crate::text::{bool_str, push_u64, write_json_str, write_rfc3339_ms};

/// Appends the batch answer `{"as_of":…,"node":N,"statuses":[…]}` for `ids`, whose statuses the
/// node put in `statuses` (one per id, in order; should one be missing, it is written unknown).
pub(super) fn write_presence(
    out: &mut Vec<u8>,
    now_ms: u64,
    node: u16,
    ids: &[Sid],
    statuses: &[Status],
) {
    out.extend_from_slice(br#"{"as_of":""#);
    write_rfc3339_ms(out, now_ms);
    out.extend_from_slice(br#"","node":"#);
    push_u64(out, u64::from(node));
    out.extend_from_slice(br#","statuses":["#);
    for (i, sid) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match statuses.get(i) {
            Some(s) => write_status(out, s),
            None => write_status(out, &Status::unknown(*sid)),
        }
    }
    out.extend_from_slice(b"]}");
}

/// Appends one status in the JSON shape of DESIGN.md §3:
/// `{"id":"10086","known":true,"online":true,"clients":["pc"],"accepts_strangers":true,
/// "changed_at":"2026-11-25T10:00:00.123Z","ext":{"nick":"alice"}}`.
pub fn write_status(out: &mut Vec<u8>, s: &Status) {
    out.extend_from_slice(br#"{"id":""#);
    push_u64(out, s.sid.get());
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
