//! `<proxy-protocol listeners="pool,query,http" trusted="10.0.0.0/8,127.0.0.1/32"/>`: which
//! listeners expect a PROXY protocol header in front of every connection, and which source
//! addresses (the load balancers) may send one.
//!
//! [`ProxyProtocol`] is the validated element: at least one listener, none twice, at least one
//! trusted network. [`Cidr`] is one network, parsed strictly (`address/prefix`, the prefix in
//! range for the family, no host bits set), so that a typo in a trust list is an error at
//! start-up and in `check-config`, never a silently wider or narrower trust.
//!
//! Nothing here knows positions: the parser maps the messages of [`ProxyProtocol::from_attrs`]
//! to `file:line:column`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A listener that can take PROXY protocol headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listener {
    /// The pool protocol listener (`pool-port`).
    Pool,
    /// The raw-TCP query listener (`query-port`).
    Query,
    /// The HTTP listener (`http-port`).
    Http,
}

impl Listener {
    /// The name used in `listeners`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pool => "pool",
            Self::Query => "query",
            Self::Http => "http",
        }
    }
}

/// One IPv4 or IPv6 network, `address/prefix`.
///
/// INVARIANT: `prefix` is at most 32 for IPv4 and 128 for IPv6, and `addr` has no bit set
/// beyond the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
    /// dual-stack socket reports for an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (a `width`-bit address) with everything past the first `prefix` bits cleared.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    let host = u32::from(width.saturating_sub(prefix));
    // A shift by 128 is out of range: a /0 keeps no bit.
    bits.checked_shr(host)
        .and_then(|b| b.checked_shl(host))
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "expected ADDRESS/PREFIX, e.g. 10.0.0.0/8 or ::1/128";
        let Some((addr, prefix)) = s.split_once('/') else {
            return Err(format!("bad CIDR {s:?}: {expected}"));
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("bad CIDR {s:?}: {addr:?} is not an IP address; {expected}"))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix.parse::<u8>() {
            Ok(p) if p <= width && prefix.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => {
                return Err(format!(
                    "bad CIDR {s:?}: prefix {prefix:?} must be an integer from 0 to {width}"
                ))
            }
        };
        let cidr = Self { addr, prefix };
        let bits = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        if masked(bits, width, prefix) != bits {
            let net = match addr {
                IpAddr::V4(_) => IpAddr::V4((masked(bits, 32, prefix) as u32).into()),
                IpAddr::V6(_) => IpAddr::V6(masked(bits, 128, prefix).into()),
            };
            return Err(format!(
                "bad CIDR {s:?}: host bits are set; did you mean {net}/{prefix}?"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The validated `<proxy-protocol>` element.
///
/// INVARIANT: `listeners` is non-empty, sorted, without duplicates; `trusted` is non-empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyProtocol {
    listeners: Vec<Listener>,
    trusted: Vec<Cidr>,
}

impl ProxyProtocol {
    /// Builds the element from the raw values of `listeners` and `trusted` (comma lists; blanks
    /// around items are ignored). `Err(which attribute, message)` names what was expected.
    pub fn from_attrs(listeners: &str, trusted: &str) -> Result<Self, (&'static str, String)> {
        let mut ls = Vec::new();
        for item in listeners.split(',').map(str::trim) {
            let l = match item {
                "pool" => Listener::Pool,
                "query" => Listener::Query,
                "http" => Listener::Http,
                other => {
                    return Err((
                        "listeners",
                        format!(
                            "bad listener {other:?} in `listeners`: expected pool, query or http"
                        ),
                    ))
                }
            };
            if ls.contains(&l) {
                return Err(("listeners", format!("listener {item:?} is named twice")));
            }
            ls.push(l);
        }
        ls.sort_unstable();
        let mut cidrs = Vec::new();
        for item in trusted.split(',').map(str::trim) {
            cidrs.push(item.parse::<Cidr>().map_err(|m| ("trusted", m))?);
        }
        Ok(Self {
            listeners: ls,
            trusted: cidrs,
        })
    }

    /// The listeners that expect a header, sorted.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The networks allowed to send a header.
    pub fn trusted(&self) -> &[Cidr] {
        &self.trusted
    }

    /// Whether connections to `listener` must start with a header.
    pub fn applies_to(&self, listener: Listener) -> bool {
        self.listeners.contains(&listener)
    }

    /// Whether a connection whose real peer is `ip` may send a header (see [`Cidr::contains`]).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }
}
