//! [`HttpLimits`]: everything a peer can make the HTTP front end allocate or wait for, taken
//! from the `<limits>` section of the cluster file.

use std::time::Duration;

/// Everything a peer can make the HTTP front end allocate or wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line and headers), in bytes.
    pub max_head: usize,
    /// Most request headers (and most trailer fields).
    pub max_headers: usize,
    /// Longest request target, in bytes.
    pub max_uri: usize,
    /// Largest request body (after chunked decoding), in bytes.
    pub max_body: usize,
    /// Time allowed for a whole head once its first byte arrived.
    pub head_timeout: Duration,
    /// Time allowed for a whole body once its head arrived.
    pub body_timeout: Duration,
    /// Deepest XML nesting accepted in a SOAP request.
    pub xml_max_depth: usize,
}

impl HttpLimits {
    /// The HTTP limits of a `<limits>` section.
    pub fn from_config(l: &presenced_config::Limits) -> Self {
        Self {
            max_head: l.http_max_head_bytes,
            max_headers: l.http_max_headers,
            max_uri: l.http_max_uri_bytes,
            max_body: l.http_max_body_bytes,
            head_timeout: Duration::from_millis(l.http_head_timeout_ms),
            body_timeout: Duration::from_millis(l.http_body_timeout_ms),
            xml_max_depth: l.xml_max_depth,
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self::from_config(&presenced_config::Limits::default())
    }
}
