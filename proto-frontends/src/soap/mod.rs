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
//! - A request that does not match the schema is a `MalformedRequest` fault, never an empty
//!   answer (DESIGN.md §3): a `GetPresence` without `ids` (`<ids/>` is an empty batch), an
//!   attribute given twice, an attribute with an undeclared prefix.
//! - Everything written is escaped with quick-xml's `escape` after replacing the characters XML
//!   1.0 cannot carry (C0 controls other than tab, LF, CR; U+FFFE; U+FFFF) with U+FFFD.
//!
//! Tolerated on input: any namespace prefixes (or default namespaces), white space and comments
//! anywhere, an XML declaration, a UTF-8 BOM, a `Header` (whose blocks are skipped unless one
//! targeted at us has `mustUnderstand` set, which is a MustUnderstand fault), `ids`/`id` in no
//! namespace as well as in `urn:presenced:v1`, an empty `<ids/>` (no ids), white space around
//! ids, leading zeros and a `+` sign (the `xs:unsignedLong` lexical space).
//!
//! Layout: `model` (versions, faults, limits), `envelope` (the request parser), `write`
//! (responses, faults, requests), `wsdl`; this module re-exports them and holds the `POST /soap`
//! handler the router calls.
//!
//! This module does no I/O; it does not decide HTTP framing or limits on the body size.

mod envelope;
mod model;
#[cfg(test)]
mod tests;
mod write;
mod wsdl;

use presenced_core::{Sid, Status};

use crate::backend::{Backend, Frontend};
use crate::http::{Reply, Request};

pub use self::envelope::{parse_request, parse_soap_id};
pub use self::model::{
    Fault, FaultCode, FaultKind, SoapLimits, SoapVersion, SOAP11_NS, SOAP12_NS, TNS,
};
pub use self::write::{write_fault, write_request, write_response};
pub use self::wsdl::{write_wsdl, WSDL, WSDL_CONTENT_TYPE, WSDL_LOCATION};

/// Handles `POST /soap`: parses, queries, and writes the response or fault to `body`.
pub(crate) fn handle_post(
    req: &Request<'_>,
    backend: &dyn Backend,
    xml_max_depth: usize,
    ids: &mut Vec<Sid>,
    statuses: &mut Vec<Status>,
    body: &mut Vec<u8>,
) -> Reply {
    let fallback = SoapVersion::from_content_type(req.content_type);
    let soap_limits = SoapLimits {
        max_depth: xml_max_depth,
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
