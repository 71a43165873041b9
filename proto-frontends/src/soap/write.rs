//! Writing SOAP messages: the `GetPresenceResponse`, faults, and the request a client sends
//! (for tests and fuzzing), each in a given SOAP version.
//!
//! Invariants:
//! - `status` children are written in exactly the schema order `id, known, online, clients,
//!   acceptsStrangers, lastChange, extensions` (zeep and WCF reject any other order);
//!   `lastChange` is absent for an unknown id, never `xsi:nil`; `extensions` is absent when there
//!   is no extension data.
//! - Every fault carries a typed `PresenceFault` detail (`code`, `message`, optional `badValue`)
//!   and no SOAP 1.2 Subcode.
//! - All text is written through [`write_xml_text`], so nothing written is malformed.

use presenced_core::{Sid, Status};

use super::model::{Fault, SoapVersion};
use crate::text::{bool_str, push_u64, write_rfc3339_ms, write_xml_text};

/// Appends a `GetPresenceResponse` envelope.
pub fn write_response(version: SoapVersion, statuses: &[Status], out: &mut Vec<u8>) {
    open_envelope(version, out);
    out.extend_from_slice(b"<GetPresenceResponse xmlns=\"urn:presenced:v1\"><statuses>");
    for s in statuses {
        write_status(s, out);
    }
    out.extend_from_slice(b"</statuses></GetPresenceResponse>");
    close_envelope(version, out);
}

fn write_status(s: &Status, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<status><id>");
    push_u64(out, s.sid.get());
    out.extend_from_slice(b"</id><known>");
    out.extend_from_slice(bool_str(s.known).as_bytes());
    out.extend_from_slice(b"</known><online>");
    out.extend_from_slice(bool_str(s.online).as_bytes());
    out.extend_from_slice(b"</online><clients>");
    for c in s.clients.iter() {
        out.extend_from_slice(b"<client>");
        out.extend_from_slice(c.soap_name().as_bytes());
        out.extend_from_slice(b"</client>");
    }
    out.extend_from_slice(b"</clients><acceptsStrangers>");
    out.extend_from_slice(bool_str(s.accepts_strangers).as_bytes());
    out.extend_from_slice(b"</acceptsStrangers>");
    if let (true, Some(ms)) = (s.known, s.changed_at_ms) {
        out.extend_from_slice(b"<lastChange>");
        write_rfc3339_ms(out, ms);
        out.extend_from_slice(b"</lastChange>");
    }
    if let Some(ext) = s.ext.as_ref().filter(|e| !e.is_empty()) {
        out.extend_from_slice(b"<extensions>");
        for (k, v) in ext.entries() {
            out.extend_from_slice(b"<entry><key>");
            write_xml_text(out, k);
            out.extend_from_slice(b"</key><value>");
            write_xml_text(out, v);
            out.extend_from_slice(b"</value></entry>");
        }
        out.extend_from_slice(b"</extensions>");
    }
    out.extend_from_slice(b"</status>");
}

/// Appends a fault envelope in the fault's version.
pub fn write_fault(f: &Fault, out: &mut Vec<u8>) {
    let v = f.version;
    let p = v.prefix();
    let code = f.kind.local_name(v);
    open_envelope(v, out);
    let mut push = |s: &str| out.extend_from_slice(s.as_bytes());
    match v {
        SoapVersion::V11 => {
            push(&format!(
                "<{p}:Fault><faultcode>{p}:{code}</faultcode><faultstring>"
            ));
        }
        SoapVersion::V12 => push(&format!(
            "<{p}:Fault><{p}:Code><{p}:Value>{p}:{code}</{p}:Value></{p}:Code>\
             <{p}:Reason><{p}:Text xml:lang=\"en\">"
        )),
    }
    write_xml_text(out, &f.message);
    let mut push = |s: &str| out.extend_from_slice(s.as_bytes());
    match v {
        SoapVersion::V11 => push("</faultstring><detail>"),
        SoapVersion::V12 => push(&format!("</{p}:Text></{p}:Reason><{p}:Detail>")),
    }
    out.extend_from_slice(b"<PresenceFault xmlns=\"urn:presenced:v1\"><code>");
    out.extend_from_slice(f.code.as_str().as_bytes());
    out.extend_from_slice(b"</code><message>");
    write_xml_text(out, &f.message);
    out.extend_from_slice(b"</message>");
    if let Some(bad) = &f.bad_value {
        out.extend_from_slice(b"<badValue>");
        write_xml_text(out, bad);
        out.extend_from_slice(b"</badValue>");
    }
    out.extend_from_slice(b"</PresenceFault>");
    match v {
        SoapVersion::V11 => out.extend_from_slice(format!("</detail></{p}:Fault>").as_bytes()),
        SoapVersion::V12 => out.extend_from_slice(format!("</{p}:Detail></{p}:Fault>").as_bytes()),
    }
    close_envelope(v, out);
}

/// Appends a `GetPresence` request envelope (what a client sends; used by tests and fuzzing).
pub fn write_request(version: SoapVersion, ids: &[Sid], out: &mut Vec<u8>) {
    open_envelope(version, out);
    out.extend_from_slice(b"<GetPresence xmlns=\"urn:presenced:v1\"><ids>");
    for id in ids {
        out.extend_from_slice(b"<id>");
        push_u64(out, id.get());
        out.extend_from_slice(b"</id>");
    }
    out.extend_from_slice(b"</ids></GetPresence>");
    close_envelope(version, out);
}

fn open_envelope(v: SoapVersion, out: &mut Vec<u8>) {
    let p = v.prefix();
    let ns = v.namespace();
    out.extend_from_slice(
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<{p}:Envelope xmlns:{p}=\"{ns}\"><{p}:Body>"
        )
        .as_bytes(),
    );
}

fn close_envelope(v: SoapVersion, out: &mut Vec<u8>) {
    let p = v.prefix();
    out.extend_from_slice(format!("</{p}:Body></{p}:Envelope>").as_bytes());
}
