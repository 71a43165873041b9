//! The WSDL of the SOAP front end (`docs/presenced.wsdl`), served at `GET /soap?wsdl` with its
//! `soap:address` following the request's `Host` header.
//!
//! The WSDL is the committed file, embedded at build time; only the address is substituted.

/// The committed WSDL, as served (after the address substitution).
pub const WSDL: &str = include_str!("../../../docs/presenced.wsdl");
/// The `soap:address` location in [`WSDL`] that [`write_wsdl`] replaces.
pub const WSDL_LOCATION: &str = "http://localhost:7480/soap";
/// The media type of the WSDL.
pub const WSDL_CONTENT_TYPE: &str = "text/xml; charset=utf-8";

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
