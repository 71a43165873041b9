//! Reading a `GetPresence` request envelope with quick-xml's `NsReader`: the SOAP version from
//! the `Envelope` namespace, header blocks (and `mustUnderstand`), and the ids of the first child
//! of `Body`.
//!
//! The reader refuses `DOCTYPE` (hence entity declarations), processing instructions, entity
//! references other than the five predefined ones and character references, nesting deeper than
//! [`SoapLimits::max_depth`], and more than [`SoapLimits::max_ids`] ids: no input expands, and
//! nothing is collected beyond the batch limit. It refuses what the schema or XML itself forbids
//! even where the content would be skipped: a `GetPresence` without `ids` (`ids` is required,
//! its `id`s are not), an attribute given twice (by name, or by namespace and local name), an
//! attribute with an undeclared prefix.
//!
//! This module writes nothing.

use presenced_core::Sid;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;

use super::model::{
    Fault, FaultCode, FaultKind, SoapLimits, SoapVersion, SOAP11_NS, SOAP12_NS, TNS,
};

/// WS-Addressing namespaces (1.0 and the 2004 submission), whose header blocks are understood.
const WS_ADDRESSING: [&str; 2] = [
    "http://www.w3.org/2005/08/addressing",
    "http://schemas.xmlsoap.org/ws/2004/08/addressing",
];

/// Longest id text kept for a fault's `badValue`, in bytes.
const MAX_ID_TEXT: usize = 128;

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
        self.check_attributes(reader, e)?;
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
            //= docs/presenced.wsdl
            //# <xs:element name="ids" type="tns:IdList"/>
            At::Op => return Err(self.malformed("GetPresence has no ids element")),
            At::AfterIds => At::AfterOp,
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

    /// Refuses a malformed attribute, an attribute whose prefix is not declared, and two
    /// attributes with the same name: the same qualified name, or the same namespace and local
    /// name under two prefixes (XML 1.0 §3.1 "Unique Att Spec", Namespaces in XML §6.3).
    /// Sorting keeps this O(n log n) in the number of attributes.
    fn check_attributes(&self, reader: &NsReader<&[u8]>, e: &BytesStart<'_>) -> Result<(), Fault> {
        let mut attributes = e.attributes();
        attributes.with_checks(false);
        // (kind, namespace, name): kind 0 is a namespace declaration (compared by its qualified
        // name), 1 an attribute in no namespace, 2 one in a namespace.
        let mut names: Vec<(u8, &[u8], &[u8])> = Vec::new();
        for a in attributes {
            let a = a.map_err(|err| self.malformed(format!("bad attribute: {err}")))?;
            let qname = a.key.into_inner();
            if qname == b"xmlns" || qname.starts_with(b"xmlns:") {
                names.push((0, b"", qname));
                continue;
            }
            let (ns, local) = reader.resolve_attribute(a.key);
            names.push(match ns {
                ResolveResult::Unbound => (1, b"", local.into_inner()),
                ResolveResult::Bound(Namespace(ns)) => (2, ns, local.into_inner()),
                ResolveResult::Unknown(_) => {
                    return Err(self.malformed(format!(
                        "undeclared namespace prefix on attribute {}",
                        String::from_utf8_lossy(qname)
                    )))
                }
            });
        }
        if names.len() < 2 {
            return Ok(());
        }
        names.sort_unstable();
        match names.windows(2).find(|w| w.first() == w.get(1)) {
            Some([(_, _, name), ..]) => Err(self.malformed(format!(
                "attribute {} given twice",
                String::from_utf8_lossy(name)
            ))),
            _ => Ok(()),
        }
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
        // `check_attributes` already refused duplicates (in O(n log n); quick-xml's check is
        // quadratic).
        let mut attributes = e.attributes();
        attributes.with_checks(false);
        for a in attributes {
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
