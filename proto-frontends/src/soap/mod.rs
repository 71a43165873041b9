//! SOAP 1.1 and 1.2 `GetPresence` for legacy clients (zeep, suds, node-soap, PHP SoapClient,
//! JAX-WS, .NET), and the WSDL that describes it (`docs/presenced.wsdl`, DESIGN.md §3 "SOAP").
//!
//! - [`parse_request`] reads an envelope with quick-xml's `NsReader`, tells the SOAP version from
//!   the `Envelope` namespace and dispatches on the first child of `Body` (`{urn:presenced:v1}
//!   GetPresence`), never on `SOAPAction`.
//! - [`write_response`] and [`write_fault`] answer in the request's version.
//! - [`write_wsdl`] serves the committed WSDL with its `soap:address` following the `Host`
//!   header.
//!
//! Invariants:
//! - `status` children are written in exactly the schema order `id, known, online, clients,
//!   acceptsStrangers, lastChange, extensions` (zeep and WCF reject any other order);
//!   `lastChange` is absent for an unknown id, never `xsi:nil`; `extensions` is absent when there
//!   is no extension data.
//! - Every fault is HTTP 500 with a typed `PresenceFault` detail (`code`, `message`, optional
//!   `badValue`) and no SOAP 1.2 Subcode.
//! - The reader refuses `DOCTYPE` (hence entity declarations), processing instructions, entity
//!   references other than the five predefined ones and character references, nesting deeper
//!   than [`SoapLimits::max_depth`], and more than [`SoapLimits::max_ids`] ids: no input expands,
//!   and nothing is collected beyond the batch limit. Body size is bounded by the HTTP layer.
//! - Everything written is escaped with quick-xml's `escape` after replacing the characters XML
//!   1.0 cannot carry (C0 controls other than tab, LF, CR; U+FFFE; U+FFFF) with U+FFFD.
//!
//! Tolerated on input: any namespace prefixes (or default namespaces), white space and comments
//! anywhere, an XML declaration, a UTF-8 BOM, a `Header` (whose blocks are skipped unless one
//! targeted at us has `mustUnderstand` set, which is a MustUnderstand fault), `ids`/`id` in no
//! namespace as well as in `urn:presenced:v1`, a missing `ids` (no ids), white space around ids,
//! leading zeros and a `+` sign (the `xs:unsignedLong` lexical space).
//!
//! This module does no I/O; it does not decide HTTP framing or limits on the body size.

use std::borrow::Cow;

use presenced_core::{Sid, Status};
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

use crate::backend::{Backend, Frontend};
use crate::http::{HttpLimits, Reply, Request};

/// The SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The target namespace of the service.
pub const TNS: &str = "urn:presenced:v1";
/// The committed WSDL, as served (after the address substitution).
pub const WSDL: &str = include_str!("../../../docs/presenced.wsdl");
/// The `soap:address` location in [`WSDL`] that [`write_wsdl`] replaces.
pub const WSDL_LOCATION: &str = "http://localhost:7480/soap";
/// The media type of the WSDL.
pub const WSDL_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

/// WS-Addressing namespaces (1.0 and the 2004 submission), whose header blocks are understood.
const WS_ADDRESSING: [&str; 2] = [
    "http://www.w3.org/2005/08/addressing",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing",
];

/// Longest id text kept for a fault's `badValue`, in bytes.
const MAX_ID_TEXT: usize = 128;

/// A SOAP version, told by the envelope namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SoapVersion {
    /// SOAP 1.1, `text/xml`.
    V11,
    /// SOAP 1.2, `application/soap+xml`.
    V12,
}

impl SoapVersion {
    /// The envelope namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Self::V11 => SOAP11_NS,
            Self::V12 => SOAP12_NS,
        }
    }

    /// The media type of a message in this version.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::V11 => "text/xml; charset=utf-8",
            Self::V12 => "application/soap+xml; charset=utf-8",
        }
    }

    /// The version a `Content-Type` suggests, for faults about envelopes too broken to tell.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .trim();
        if essence.eq_ignore_ascii_case("application/soap+xml") {
            Self::V12
        } else {
            Self::V11
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Self::V11 => "soap",
            Self::V12 => "env",
        }
    }
}

/// The `code` of a `PresenceFault` detail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultCode {
    /// An id is not an integer from 1 to 2^64−1.
    InvalidId,
    /// More ids than the batch limit.
    TooManyIds,
    /// The envelope is not a well-formed `GetPresence` request.
    MalformedRequest,
}

impl FaultCode {
    /// The value of the `code` element.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidId => "InvalidId",
            Self::TooManyIds => "TooManyIds",
            Self::MalformedRequest => "MalformedRequest",
        }
    }

    /// The metrics label ([`Backend::record_error`]), shared with the JSON API's codes.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidId => "invalid_id",
            Self::TooManyIds => "too_many_ids",
            Self::MalformedRequest => "malformed_request",
        }
    }
}

/// Whose fault a fault is: the SOAP fault code (1.1 `faultcode`, 1.2 `Code/Value`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The request was wrong (1.1 `Client`, 1.2 `Sender`).
    Client,
    /// The server failed (1.1 `Server`, 1.2 `Receiver`).
    Server,
    /// The envelope is not in a SOAP namespace we speak.
    VersionMismatch,
    /// A header block targeted at us must be understood and is not.
    MustUnderstand,
}

impl FaultKind {
    fn local_name(self, v: SoapVersion) -> &'static str {
        match (self, v) {
            (Self::Client, SoapVersion::V11) => "Client",
            (Self::Client, SoapVersion::V12) => "Sender",
            (Self::Server, SoapVersion::V11) => "Server",
            (Self::Server, SoapVersion::V12) => "Receiver",
            (Self::VersionMismatch, _) => "VersionMismatch",
            (Self::MustUnderstand, _) => "MustUnderstand",
        }
    }
}

/// A refused SOAP request, answered by [`write_fault`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Fault {
    /// The version to answer in.
    pub version: SoapVersion,
    /// The SOAP fault code.
    pub kind: FaultKind,
    /// The `PresenceFault` code.
    pub code: FaultCode,
    /// The `faultstring` / `Reason` and `PresenceFault/message`.
    pub message: String,
    /// The offending value, if any.
    pub bad_value: Option<String>,
}

/// What the request parser may collect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoapLimits {
    /// Deepest element nesting (the `Envelope` is depth 1; a minimal request is depth 5).
    pub max_depth: usize,
    /// Most ids in one request.
    pub max_ids: usize,
}

/// Handles `POST /soap`: parses, queries, and writes the response or fault to `body`.
pub(crate) fn handle_post(
    req: &Request<'_>,
    backend: &dyn Backend,
    limits: &HttpLimits,
    ids: &mut Vec<Sid>,
    statuses: &mut Vec<Status>,
    body: &mut Vec<u8>,
) -> Reply {
    let fallback = SoapVersion::from_content_type(req.content_type);
    let soap_limits = SoapLimits {
        max_depth: limits.xml_max_depth,
        max_ids: backend.batch_limit(),
    };
    match parse_request(req.body, fallback, &soap_limits, ids) {
        Ok(version) => {
            backend.statuses(ids, statuses);
            backend.record_query(Frontend::Soap, ids.len(), 0);
            // The backend appends one status per id; should it ever not, the rest are unknown.
            statuses.truncate(ids.len());
            for sid in ids.iter().skip(statuses.len()) {
                statuses.push(Status::unknown(*sid));
            }
            write_response(version, statuses, body);
            Reply {
                status: 200,
                content_type: version.content_type(),
            }
        }
        Err(fault) => {
            tracing::debug!(code = fault.code.as_str(), message = %fault.message, "SOAP fault");
            backend.record_error(fault.code.label());
            write_fault(&fault, body);
            Reply {
                status: 500,
                content_type: fault.version.content_type(),
            }
        }
    }
}

/// Appends the WSDL with its addresses set to `http://{host}/soap`. A missing `Host`, or one
/// with a character outside `[A-Za-z0-9.:[]-]`, gives `localhost`.
pub fn write_wsdl(host: Option<&str>, out: &mut Vec<u8>) {
    let host = host
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:[]-".contains(&b))
        })
        .unwrap_or("localhost");
    let location = format!("http://{host}/soap");
    out.extend_from_slice(WSDL.replace(WSDL_LOCATION, &location).as_bytes());
}

/// Parses a `GetPresence` request, appending its ids (in order) to `ids`. Returns the SOAP
/// version to answer in. `fallback` is the version of faults about envelopes too broken to tell.
pub fn parse_request(
    xml: &[u8],
    fallback: SoapVersion,
    limits: &SoapLimits,
    ids: &mut Vec<Sid>,
) -> Result<SoapVersion, Fault> {
    let xml = xml.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(xml);
    let mut reader = NsReader::from_reader(xml);
    let config = reader.config_mut();
    config.expand_empty_elements = true;
    config.check_end_names = true;
    let mut p = Parser {
        limits,
        fallback,
        version: None,
        at: At::Prolog,
        depth: 0,
        first: true,
        text: String::new(),
        text_overflow: false,
        ids,
    };
    loop {
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (classify(&ns), event),
            Err(e) => return Err(p.malformed(format!("malformed XML: {e}"))),
        };
        let first = std::mem::replace(&mut p.first, false);
        match event {
            Event::Start(e) => p.start(&reader, ns, &e)?,
            Event::End(_) => p.end()?,
            Event::Empty(e) => {
                // Not produced with `expand_empty_elements`; handled the same way regardless.
                p.start(&reader, ns, &e)?;
                p.end()?;
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|e| p.malformed(format!("bad text: {e}")))?;
                p.text(&text)?;
            }
            Event::CData(c) => {
                let text = c
                    .decode()
                    .map_err(|e| p.malformed(format!("bad CDATA: {e}")))?;
                p.text(&text)?;
            }
            Event::GeneralRef(r) => {
                let c = resolve_reference(&r).map_err(|m| p.malformed(m))?;
                p.text(c.encode_utf8(&mut [0; 4]))?;
            }
            Event::Comment(_) => {}
            Event::Decl(_) if first => {}
            Event::Decl(_) => return Err(p.malformed("misplaced XML declaration")),
            Event::PI(_) => return Err(p.malformed("processing instructions are not allowed")),
            Event::DocType(_) => return Err(p.malformed("DOCTYPE is not allowed")),
            Event::Eof => {
                return match p.at {
                    At::Epilog => Ok(p.version.unwrap_or(fallback)),
                    _ => Err(p.malformed("unexpected end of document")),
                }
            }
        }
    }
}

/// Resolves `&name;`: the five predefined entities and character references only.
fn resolve_reference(r: &BytesRef<'_>) -> Result<char, String> {
    if r.is_char_ref() {
        return match r.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            _ => Err("bad character reference".into()),
        };
    }
    let name = r
        .decode()
        .map_err(|e| format!("bad entity reference: {e}"))?;
    match quick_xml::escape::resolve_predefined_entity(&name).and_then(|s| s.chars().next()) {
        Some(c) => Ok(c),
        None => Err(format!("entity reference &{name}; is not allowed")),
    }
}

/// The namespaces this parser tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    Soap11,
    Soap12,
    Tns,
    /// WS-Addressing (1.0 or the 2004 submission).
    Addressing,
    /// No namespace.
    None,
    Other,
    /// A prefix that is not declared.
    Undeclared,
}

fn classify(r: &ResolveResult<'_>) -> Ns {
    match r {
        ResolveResult::Bound(Namespace(ns)) => match *ns {
            n if n == SOAP11_NS.as_bytes() => Ns::Soap11,
            n if n == SOAP12_NS.as_bytes() => Ns::Soap12,
            n if n == TNS.as_bytes() => Ns::Tns,
            n if WS_ADDRESSING.iter().any(|a| a.as_bytes() == n) => Ns::Addressing,
            _ => Ns::Other,
        },
        ResolveResult::Unbound => Ns::None,
        ResolveResult::Unknown(_) => Ns::Undeclared,
    }
}

/// Where the parser is in the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Before the root element.
    Prolog,
    /// Inside `Envelope`, expecting `Header` (if not yet seen) or `Body`.
    Envelope { header_seen: bool },
    /// Inside `Header`, between header blocks.
    Header,
    /// Inside a header block that opened at this depth; its content is skipped.
    HeaderBlock(usize),
    /// Inside `Body`, expecting the operation element.
    Body,
    /// Inside `GetPresence`, expecting `ids`.
    Op,
    /// Inside `ids`, expecting `id` elements.
    Ids,
    /// Inside an `id`, collecting its text.
    Id,
    /// Inside `GetPresence` after `ids`.
    AfterIds,
    /// Inside `Body` after the operation element.
    AfterOp,
    /// Inside `Envelope` after `Body`.
    AfterBody,
    /// After the root element.
    Epilog,
}

struct Parser<'a> {
    limits: &'a SoapLimits,
    fallback: SoapVersion,
    /// Set once the `Envelope` is seen.
    version: Option<SoapVersion>,
    at: At,
    /// Number of open elements.
    depth: usize,
    /// Whether the next event is the first of the document.
    first: bool,
    /// The text of the current `id` without leading white space, at most [`MAX_ID_TEXT`] bytes
    /// plus one character.
    text: String,
    /// Non-white-space text of the current `id` was dropped beyond [`MAX_ID_TEXT`].
    text_overflow: bool,
    ids: &'a mut Vec<Sid>,
}

impl Parser<'_> {
    fn fault(&self, kind: FaultKind, code: FaultCode, message: impl Into<String>) -> Fault {
        Fault {
            version: self.version.unwrap_or(self.fallback),
            kind,
            code,
            message: message.into(),
            bad_value: None,
        }
    }

    fn malformed(&self, message: impl Into<String>) -> Fault {
        self.fault(FaultKind::Client, FaultCode::MalformedRequest, message)
    }

    fn env_ns(&self) -> Ns {
        match self.version {
            Some(SoapVersion::V11) => Ns::Soap11,
            Some(SoapVersion::V12) => Ns::Soap12,
            None => Ns::Undeclared,
        }
    }

    fn start(&mut self, reader: &NsReader<&[u8]>, ns: Ns, e: &BytesStart<'_>) -> Result<(), Fault> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(self.malformed(format!(
                "XML nested deeper than {} elements",
                self.limits.max_depth
            )));
        }
        if ns == Ns::Undeclared {
            return Err(self.malformed("undeclared namespace prefix"));
        }
        let local = e.local_name();
        let local = local.as_ref();
        let env = ns == self.env_ns();
        let ours = ns == Ns::Tns || ns == Ns::None;
        self.at = match self.at {
            At::Prolog => match (ns, local) {
                (Ns::Soap11, b"Envelope") => {
                    self.version = Some(SoapVersion::V11);
                    At::Envelope { header_seen: false }
                }
                (Ns::Soap12, b"Envelope") => {
                    self.version = Some(SoapVersion::V12);
                    At::Envelope { header_seen: false }
                }
                (_, b"Envelope") => {
                    return Err(self.fault(
                        FaultKind::VersionMismatch,
                        FaultCode::MalformedRequest,
                        format!("Envelope must be in {SOAP11_NS} or {SOAP12_NS}"),
                    ))
                }
                _ => return Err(self.malformed("the root element must be a SOAP Envelope")),
            },
            At::Envelope { header_seen: false } if env && local == b"Header" => At::Header,
            At::Envelope { .. } if env && local == b"Body" => At::Body,
            At::Envelope { .. } => return Err(self.malformed("expected soap Header or Body")),
            At::Header => {
                if ns != Ns::Addressing {
                    self.check_must_understand(reader, e)?;
                }
                At::HeaderBlock(self.depth)
            }
            At::HeaderBlock(d) => At::HeaderBlock(d),
            At::Body if ns == Ns::Tns && local == b"GetPresence" => At::Op,
            At::Body => {
                return Err(self.malformed(format!(
                    "unknown operation {}; expected {{{TNS}}}GetPresence",
                    String::from_utf8_lossy(local)
                )))
            }
            At::Op if ours && local == b"ids" => At::Ids,
            At::Op => return Err(self.malformed("GetPresence holds one ids element")),
            At::Ids if ours && local == b"id" => {
                if self.ids.len() >= self.limits.max_ids {
                    return Err(self.fault(
                        FaultKind::Client,
                        FaultCode::TooManyIds,
                        format!("at most {} ids per request", self.limits.max_ids),
                    ));
                }
                self.text.clear();
                self.text_overflow = false;
                At::Id
            }
            At::Ids => return Err(self.malformed("ids holds only id elements")),
            At::Id => return Err(self.malformed("id holds text only")),
            At::AfterIds => return Err(self.malformed("GetPresence holds one ids element")),
            At::AfterOp => return Err(self.malformed("Body holds exactly one element")),
            At::AfterBody => return Err(self.malformed("nothing may follow Body")),
            At::Epilog => return Err(self.malformed("more than one root element")),
        };
        Ok(())
    }

    fn end(&mut self) -> Result<(), Fault> {
        let closing = self.depth;
        self.depth = self.depth.saturating_sub(1);
        self.at = match self.at {
            At::HeaderBlock(d) if d == closing => At::Header,
            At::HeaderBlock(d) => At::HeaderBlock(d),
            At::Header => At::Envelope { header_seen: true },
            At::Envelope { .. } => return Err(self.malformed("Envelope has no Body")),
            At::Body => return Err(self.malformed("Body holds no operation")),
            At::Id => {
                self.push_id()?;
                At::Ids
            }
            At::Ids => At::AfterIds,
            At::Op | At::AfterIds => At::AfterOp,
            At::AfterOp => At::AfterBody,
            At::AfterBody => At::Epilog,
            At::Prolog | At::Epilog => return Err(self.malformed("unbalanced end tag")),
        };
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), Fault> {
        match self.at {
            At::Id => {
                for c in text.chars() {
                    if self.text.is_empty() && is_xml_space(c) {
                        continue;
                    }
                    if self.text.len() < MAX_ID_TEXT {
                        self.text.push(c);
                    } else if !is_xml_space(c) {
                        self.text_overflow = true;
                    }
                }
                Ok(())
            }
            At::HeaderBlock(_) | At::Header => Ok(()),
            _ if text.chars().all(is_xml_space) => Ok(()),
            At::Prolog => Err(self.malformed("expected a SOAP Envelope")),
            _ => Err(self.malformed("unexpected text")),
        }
    }

    fn push_id(&mut self) -> Result<(), Fault> {
        if let (false, Some(sid)) = (self.text_overflow, parse_soap_id(&self.text)) {
            self.ids.push(sid);
            return Ok(());
        }
        let mut bad = self.text.trim_matches(is_xml_space).to_owned();
        if self.text_overflow {
            bad.push('…');
        }
        let mut f = self.fault(
            FaultKind::Client,
            FaultCode::InvalidId,
            format!("invalid id {bad:?}: ids are integers from 1 to 18446744073709551615"),
        );
        f.bad_value = Some(bad);
        Err(f)
    }

    /// Faults on a header block targeted at this node (no actor/role, or the "next" or
    /// "ultimateReceiver" one) whose `mustUnderstand` is true. Only WS-Addressing blocks (which
    /// WCF marks mustUnderstand) count as understood: ignoring them is harmless for a
    /// request/response operation on a fixed address.
    fn check_must_understand(
        &self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
    ) -> Result<(), Fault> {
        let env = self.version.unwrap_or(self.fallback);
        let mut must = false;
        let mut for_us = true;
        for a in e.attributes() {
            let a = a.map_err(|err| self.malformed(format!("bad attribute: {err}")))?;
            let (ns, local) = reader.resolve_attribute(a.key);
            if classify(&ns) != self.env_ns() {
                continue;
            }
            let value = a.value.as_ref().trim_ascii();
            match local.as_ref() {
                b"mustUnderstand" => must = value == b"1" || value == b"true",
                b"actor" if env == SoapVersion::V11 => {
                    for_us = value == b"http://schemas.xmlsoap.org/soap/actor/next";
                }
                b"role" if env == SoapVersion::V12 => {
                    for_us = value == b"http://www.w3.org/2003/05/soap-envelope/role/next"
                        || value
                            == b"http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver";
                }
                _ => {}
            }
        }
        if must && for_us {
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            return Err(self.fault(
                FaultKind::MustUnderstand,
                FaultCode::MalformedRequest,
                format!("header block {name} is not understood"),
            ));
        }
        Ok(())
    }
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

//= https://www.w3.org/TR/xmlschema-2/#unsignedLong
//# unsignedLong has a lexical representation consisting of a finite-length sequence of decimal
//# digits (#x30-#x39) with an optional leading sign. [...] leading zeroes are permitted
/// Parses an `xs:unsignedLong` id (surrounding white space and a `+` allowed); zero and values
/// above 2^64−1 are not ids.
pub fn parse_soap_id(text: &str) -> Option<Sid> {
    let t = text.trim_matches(is_xml_space);
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().and_then(Sid::new)
}

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
    crate::http::push_u64(out, s.sid.get());
    out.extend_from_slice(b"</id><known>");
    out.extend_from_slice(bool_str(s.known));
    out.extend_from_slice(b"</known><online>");
    out.extend_from_slice(bool_str(s.online));
    out.extend_from_slice(b"</online><clients>");
    for c in s.clients.iter() {
        out.extend_from_slice(b"<client>");
        out.extend_from_slice(c.soap_name().as_bytes());
        out.extend_from_slice(b"</client>");
    }
    out.extend_from_slice(b"</clients><acceptsStrangers>");
    out.extend_from_slice(bool_str(s.accepts_strangers));
    out.extend_from_slice(b"</acceptsStrangers>");
    if let (true, Some(ms)) = (s.known, s.changed_at_ms) {
        out.extend_from_slice(b"<lastChange>");
        crate::api::write_rfc3339_ms(out, ms);
        out.extend_from_slice(b"</lastChange>");
    }
    if let Some(ext) = s.ext.as_ref().filter(|e| !e.is_empty()) {
        out.extend_from_slice(b"<extensions>");
        for (k, v) in ext.entries() {
            out.extend_from_slice(b"<entry><key>");
            write_text(k, out);
            out.extend_from_slice(b"</key><value>");
            write_text(v, out);
            out.extend_from_slice(b"</value></entry>");
        }
        out.extend_from_slice(b"</extensions>");
    }
    out.extend_from_slice(b"</status>");
}

fn bool_str(b: bool) -> &'static [u8] {
    if b {
        b"true"
    } else {
        b"false"
    }
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
    write_text(&f.message, out);
    let mut push = |s: &str| out.extend_from_slice(s.as_bytes());
    match v {
        SoapVersion::V11 => push("</faultstring><detail>"),
        SoapVersion::V12 => push(&format!("</{p}:Text></{p}:Reason><{p}:Detail>")),
    }
    out.extend_from_slice(b"<PresenceFault xmlns=\"urn:presenced:v1\"><code>");
    out.extend_from_slice(f.code.as_str().as_bytes());
    out.extend_from_slice(b"</code><message>");
    write_text(&f.message, out);
    out.extend_from_slice(b"</message>");
    if let Some(bad) = &f.bad_value {
        out.extend_from_slice(b"<badValue>");
        write_text(bad, out);
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
        crate::http::push_u64(out, id.get());
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

/// Appends `s` as escaped character data, replacing characters XML 1.0 cannot carry by U+FFFD.
fn write_text(s: &str, out: &mut Vec<u8>) {
    let legal = |c: char| matches!(c, '\t' | '\n' | '\r' | ' '..='\u{FFFD}' | '\u{10000}'..);
    let clean: Cow<'_, str> = if s.chars().all(legal) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if legal(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    };
    out.extend_from_slice(quick_xml::escape::escape(clean).as_bytes());
}

#[cfg(test)]
mod tests;
