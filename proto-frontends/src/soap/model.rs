//! The vocabulary of the SOAP front end: versions, fault codes and kinds, the [`Fault`] error
//! and the parser's [`SoapLimits`].
//!
//! This module only defines types; it parses and writes nothing.

/// The SOAP 1.1 envelope namespace.
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.2 envelope namespace.
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The target namespace of the service.
pub const TNS: &str = "urn:presenced:v1";

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

    /// The envelope prefix this server writes.
    pub(super) fn prefix(self) -> &'static str {
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
    /// API keys are configured and the request had no valid one (HTTP `Authorization`).
    Unauthorized,
}

impl FaultCode {
    /// The value of the `code` element.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidId => "InvalidId",
            Self::TooManyIds => "TooManyIds",
            Self::MalformedRequest => "MalformedRequest",
            Self::Unauthorized => "Unauthorized",
        }
    }

    /// The metrics label
    /// ([`Backend::record_error`](crate::backend::Backend::record_error)), shared with the JSON
    /// API's codes.
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidId => "invalid_id",
            Self::TooManyIds => "too_many_ids",
            Self::MalformedRequest => "malformed_request",
            Self::Unauthorized => "unauthorized",
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
    /// The local name of the SOAP fault code in version `v`.
    pub(super) fn local_name(self, v: SoapVersion) -> &'static str {
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

/// A refused SOAP request, answered by [`write_fault`](super::write_fault).
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
