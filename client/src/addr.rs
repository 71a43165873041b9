//! `ServerAddr`: a node's address as the user wrote it, `HOST:PORT`.
//!
//! The host stays a name: it is resolved again at every connection attempt
//! ([`ServerAddr::resolve`]), so a name whose address moves (a DNS fail-over, a load balancer's
//! virtual IP, a container that restarts elsewhere) is followed without restarting the pool.
//! Parsing only checks the shape (a host, a colon, a port from 1 to 65535); whether the name
//! resolves is a connection-time question, answered again on every attempt.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// A node's address: a host name, an IPv4 address or an IPv6 address, and a port.
///
/// Written and parsed as `HOST:PORT`, with IPv6 addresses in brackets (`[::1]:7400`).
///
/// INVARIANT: `host` is not empty, holds no whitespace, and holds a `:` only if it is an IPv6
/// address (kept without its brackets); `port` is not 0.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    host: String,
    port: u16,
}

/// Why a string is not a `HOST:PORT` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ServerAddrError {
    reason: &'static str,
}

impl ServerAddr {
    /// The address `host:port`. `host` is a name, an IPv4 address or an IPv6 address (with or
    /// without brackets).
    pub fn new(host: &str, port: u16) -> Result<Self, ServerAddrError> {
        let bad = |reason| Err(ServerAddrError { reason });
        let host = match host.strip_prefix('[') {
            Some(inner) => match inner.strip_suffix(']') {
                Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
                _ => return bad("expected an IPv6 address inside the brackets: [::1]:7400"),
            },
            None => host,
        };
        if host.is_empty() {
            return bad("expected HOST:PORT, the host is missing");
        }
        if host.chars().any(char::is_whitespace) {
            return bad("expected HOST:PORT, the host holds a space");
        }
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return bad("expected HOST:PORT (IPv6 addresses go in brackets: [::1]:7400)");
        }
        if port == 0 {
            return bad("expected a port from 1 to 65535");
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The host: a name or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Resolves the host now (a name may give several addresses: try them in order). This asks
    /// the system resolver, so it may block; an IP address is returned as is.
    pub fn resolve(&self) -> std::io::Result<Vec<SocketAddr>> {
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

impl From<SocketAddr> for ServerAddr {
    fn from(a: SocketAddr) -> Self {
        Self {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

impl FromStr for ServerAddr {
    type Err = ServerAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(ServerAddrError {
                reason: "expected HOST:PORT, the port is missing",
            });
        };
        let port = port.parse::<u16>().map_err(|_| ServerAddrError {
            reason: "expected HOST:PORT with a port from 1 to 65535",
        })?;
        if host.contains(':') && !host.starts_with('[') {
            return Err(ServerAddrError {
                reason: "expected HOST:PORT (IPv6 addresses go in brackets: [::1]:7400)",
            });
        }
        Self::new(host, port)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let got = match input.parse::<ServerAddr>() {
            Ok(a) => format!("{a} host={} port={}", a.host(), a.port()),
            Err(e) => format!("error: {e}"),
        };
        assert!(
            got.contains(expected),
            "{input:?} gave {got}, expected {expected}"
        );
    }

    #[test]
    fn parses_host_port() {
        check("127.0.0.1:7400", "127.0.0.1:7400 host=127.0.0.1 port=7400");
        check("localhost:7400", "localhost:7400 host=localhost port=7400");
        check("pool-1.example.com:1", "host=pool-1.example.com port=1");
        check("[::1]:7400", "[::1]:7400 host=::1 port=7400");
        check(
            "localhost",
            "error: expected HOST:PORT, the port is missing",
        );
        check(":7400", "error: expected HOST:PORT, the host is missing");
        check("localhost:0", "error: expected a port from 1 to 65535");
        check("localhost:65536", "error: expected HOST:PORT with a port");
        check("localhost:x", "error: expected HOST:PORT with a port");
        check(
            "::1:7400",
            "error: expected HOST:PORT (IPv6 addresses go in brackets",
        );
        check(
            "[nope]:7400",
            "error: expected an IPv6 address inside the brackets",
        );
        check("a b:1", "error: expected HOST:PORT, the host holds a space");
    }

    #[test]
    fn socket_addrs_convert_and_resolve_to_themselves() {
        let v4: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        for sa in [v4, v6] {
            let a = ServerAddr::from(sa);
            assert_eq!(a.to_string(), sa.to_string());
            assert_eq!(a.to_string().parse::<ServerAddr>().unwrap(), a);
            assert_eq!(a.resolve().unwrap(), vec![sa]);
        }
    }
}
