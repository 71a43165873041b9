//! JSON output of the API, written by hand for speed: the batch answer of `/v1/presence` and
//! one status object.
//!
//! Invariant: statuses come back in request order, one per requested id (duplicates included),
//! and an unknown id has the same shape as a known one (`known:false`).
//!
//! This module only renders what it is given; it asks the node nothing.

use presenced_core::{Sid, Status};

use crate::text::{push_u64, write_json_str, Rfc3339};

/// Appends the batch answer `{"as_of":…,"node":N,"statuses":[…]}` for `ids`, whose statuses the
/// node put in `statuses` (one per id, in order; should one be missing, it is written unknown).
pub(super) fn write_presence(
    out: &mut Vec<u8>,
    now_ms: u64,
    node: u16,
    ids: &[Sid],
    statuses: &[Status],
) {
    // About 140 bytes per status without ext: one growth, not several.
    out.reserve(64 + 160 * ids.len());
    let mut stamps = Rfc3339::default();
    out.extend_from_slice(br#"{"as_of":""#);
    stamps.write(out, now_ms);
    out.extend_from_slice(br#"","node":"#);
    push_u64(out, u64::from(node));
    out.extend_from_slice(br#","statuses":["#);
    for (i, sid) in ids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match statuses.get(i) {
            Some(s) => write_one(out, s, &mut stamps),
            None => write_one(out, &Status::unknown(*sid), &mut stamps),
        }
    }
    out.extend_from_slice(b"]}");
}

/// Appends one status in the JSON shape of DESIGN.md §3:
/// `{"id":"10086","known":true,"online":true,"clients":["pc"],"accepts_strangers":true,
/// "changed_at":"2026-11-25T10:00:00.123Z","ext":{"nick":"alice"}}`.
pub fn write_status(out: &mut Vec<u8>, s: &Status) {
    write_one(out, s, &mut Rfc3339::default());
}

/// [`write_status`] with the stamp writer of the batch.
fn write_one(out: &mut Vec<u8>, s: &Status, stamps: &mut Rfc3339) {
    out.extend_from_slice(br#"{"id":""#);
    push_u64(out, s.sid.get());
    // One constant per combination, each its own call: copies of a constant size are inlined.
    match (s.known, s.online) {
        (true, true) => out.extend_from_slice(br#"","known":true,"online":true,"clients":["#),
        (true, false) => out.extend_from_slice(br#"","known":true,"online":false,"clients":["#),
        (false, true) => out.extend_from_slice(br#"","known":false,"online":true,"clients":["#),
        (false, false) => out.extend_from_slice(br#"","known":false,"online":false,"clients":["#),
    }
    for (i, c) in s.clients.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        // A few bytes: pushed one by one rather than through a `memcpy` call.
        for &b in c.name().as_bytes() {
            out.push(b);
        }
        out.push(b'"');
    }
    if s.accepts_strangers {
        out.extend_from_slice(br#"],"accepts_strangers":true,"changed_at":"#);
    } else {
        out.extend_from_slice(br#"],"accepts_strangers":false,"changed_at":"#);
    }
    match s.changed_at_ms {
        Some(ms) => {
            out.push(b'"');
            stamps.write(out, ms);
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
