//! The PROXY protocol, versions 1 and 2 (HAProxy, "The PROXY protocol Versions 1 & 2"): the
//! header an L4 load balancer puts in front of a relayed connection to say who the client is.
//!
//! - [`decode`] reads one header (v1 text or v2 binary, told apart by the first byte) off the
//!   front of a connection's input: `Ok(None)` while the bytes so far may still become a valid
//!   header, `Err` as soon as they cannot. [`ProxyError::Missing`] means the input does not even
//!   start like a header (a client that talks to us directly).
//! - [`ProxyHeader`] is what a header says: `LOCAL` (the balancer's own connection, a health
//!   check), a relayed connection with its source and destination, or a relayed connection whose
//!   addresses are not given (v1 `UNKNOWN`, v2 `UNSPEC` or `AF_UNIX`).
//! - [`ProxyHeader::encode_v1`] and [`ProxyHeader::encode_v2`] write headers, for tests and
//!   client test helpers.
//!
//! Limits: a v1 line is at most [`V1_MAX`] bytes with its CRLF (the spec's worst case); a v2
//! address block (addresses and TLVs) at most [`V2_MAX_BLOCK`] bytes, so a whole header fits the
//! 536-byte segment the spec designs both formats for. Longer is an error, decided before any
//! byte beyond the limit is waited for. TLVs are walked (they must be well formed) and skipped.
//!
//! The byte-level document is `docs/protocols/proxy.md`; its hex vectors are the tests below.
//!
//! Architecture Invariant: no I/O, no clock, no indexing: input is read through
//! [`wire::Reader`](crate::wire::Reader) and slice methods that return `Option`. The address
//! types come from `core::net` (plain values; nothing here touches a socket).
//!
//! What this module deliberately does not do: decide whom to trust (the driver checks the
//! connection's real peer against `<proxy-protocol trusted>` before it reads a byte), interpret
//! TLVs (CRC32c, ALPN, SSL), or accept a header anywhere but at the start of a connection.

use core::fmt::Write as _;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use bytes::BufMut;

use crate::wire::{DecodeError, Reader};

//= docs/protocols/proxy.md#version-2-binary
//# The binary header format starts with a constant 12 bytes block containing the
//# protocol signature :
//#    \x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49 \x54 \x0A
/// The 12-byte signature that starts every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The 5 bytes that start every v1 header.
pub const V1_PREFIX: &[u8; 5] = b"PROXY";

//= docs/protocols/proxy.md#version-1-text
//# If the CRLF sequence is not found in the first 107 characters, the receiver should declare
//# the line invalid.
/// Longest v1 line, CRLF included.
pub const V1_MAX: usize = 107;

/// Size of the fixed part of a v2 header (signature, version and command, family and
/// transport, length).
pub const V2_FIXED: usize = 16;

/// Longest v2 address block (addresses and TLVs) accepted. The spec lets the 16-bit length go
/// to 65535; we accept what fits the 536-byte segment both formats are designed for, which
/// covers every address family (a UNIX block is 216 bytes) and a few TLVs.
pub const V2_MAX_BLOCK: usize = 536;

/// Longest header of either version: no connection has to buffer more before it is decided.
pub const MAX_HEADER: usize = V2_FIXED + V2_MAX_BLOCK;

/// Size of the address block of TCP or UDP over IPv4.
const INET_BLOCK: usize = 12;
/// Size of the address block of TCP or UDP over IPv6.
const INET6_BLOCK: usize = 36;
/// Size of the address block of `AF_UNIX` (two 108-byte paths).
const UNIX_BLOCK: usize = 216;

/// Why a connection's first bytes are not an acceptable PROXY header. The connection must be
/// closed without reading further; nothing was consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The input starts like neither a v1 nor a v2 header: the peer does not speak the PROXY
    /// protocol at all (it talks to this listener directly).
    #[error("no PROXY protocol header")]
    Missing,
    /// A v1 line that breaks the grammar; the context says where.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A v1 line without its CRLF within [`V1_MAX`] bytes.
    #[error("PROXY v1 line has no CRLF within {max} bytes", max = V1_MAX)]
    V1TooLong,
    /// A v2 header with a field the spec does not allow; the context says which.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// A v2 header announcing an address block above [`V2_MAX_BLOCK`].
    #[error("PROXY v2 address block of {len} bytes exceeds the limit of {max}")]
    V2TooLarge {
        /// The length announced.
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

impl ProxyError {
    /// Whether the input was no PROXY header at all, rather than a broken one.
    pub fn is_missing(&self) -> bool {
        matches!(self, Self::Missing)
    }
}

/// The command of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// The balancer's own connection (a health check): the real endpoints stand.
    Local,
    /// A relayed connection: the header's source, when it gives one, is the client.
    Proxy,
}

/// What one header says.
///
/// INVARIANT (by construction): a `LOCAL` header carries no addresses; source and destination
/// are both present or both absent, of the same family, and IPv6 ones have no flow info or
/// scope id (the wire carries neither).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyHeader(Kind);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Local,
    Unknown,
    Inet(SocketAddrV4, SocketAddrV4),
    Inet6(SocketAddrV6, SocketAddrV6),
}

impl ProxyHeader {
    /// `LOCAL`: the balancer's own connection.
    pub const LOCAL: Self = Self(Kind::Local);
    /// A relayed connection whose addresses are not given (v1 `UNKNOWN`, v2 `UNSPEC`/`AF_UNIX`):
    /// the real endpoints stand.
    pub const UNKNOWN: Self = Self(Kind::Unknown);

    /// A relayed connection from `source` to `destination`; `None` if their families differ.
    pub fn proxied(source: SocketAddr, destination: SocketAddr) -> Option<Self> {
        match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => Some(Self(Kind::Inet(s, d))),
            (SocketAddr::V6(s), SocketAddr::V6(d)) => Some(Self(Kind::Inet6(
                SocketAddrV6::new(*s.ip(), s.port(), 0, 0),
                SocketAddrV6::new(*d.ip(), d.port(), 0, 0),
            ))),
            _ => None,
        }
    }

    /// `LOCAL` or `PROXY`.
    pub fn command(&self) -> Command {
        match self.0 {
            Kind::Local => Command::Local,
            _ => Command::Proxy,
        }
    }

    /// The client's address, when the header gives one.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.0 {
            Kind::Inet(s, _) => Some(SocketAddr::V4(s)),
            Kind::Inet6(s, _) => Some(SocketAddr::V6(s)),
            Kind::Local | Kind::Unknown => None,
        }
    }

    /// The address the client connected to (the balancer's), when the header gives one.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self.0 {
            Kind::Inet(_, d) => Some(SocketAddr::V4(d)),
            Kind::Inet6(_, d) => Some(SocketAddr::V6(d)),
            Kind::Local | Kind::Unknown => None,
        }
    }

    /// Appends the v1 line. v1 has no `LOCAL`: it is written as `PROXY UNKNOWN`, which a
    /// receiver treats the same way. IPv6 addresses are written as eight hex groups, never
    /// compressed and never with an embedded IPv4 part.
    pub fn encode_v1(&self, out: &mut Vec<u8>) {
        let mut line = String::with_capacity(V1_MAX);
        match self.0 {
            Kind::Local | Kind::Unknown => line.push_str("PROXY UNKNOWN"),
            Kind::Inet(s, d) => {
                let _ = write!(
                    line,
                    "PROXY TCP4 {} {} {} {}",
                    s.ip(),
                    d.ip(),
                    s.port(),
                    d.port()
                );
            }
            Kind::Inet6(s, d) => {
                line.push_str("PROXY TCP6 ");
                push_v6(&mut line, s.ip());
                line.push(' ');
                push_v6(&mut line, d.ip());
                let _ = write!(line, " {} {}", s.port(), d.port());
            }
        }
        line.push_str("\r\n");
        out.extend_from_slice(line.as_bytes());
    }

    /// Appends the v2 header: `LOCAL` and unknown addresses with family `UNSPEC` and an empty
    /// block, addresses as TCP (`STREAM`) over IPv4 or IPv6, no TLVs.
    pub fn encode_v2(&self, out: &mut Vec<u8>) {
        out.put_slice(&V2_SIGNATURE);
        match self.0 {
            Kind::Local => {
                out.put_u8(0x20);
                out.put_u8(0x00);
                out.put_u16(0);
            }
            Kind::Unknown => {
                out.put_u8(0x21);
                out.put_u8(0x00);
                out.put_u16(0);
            }
            Kind::Inet(s, d) => {
                out.put_u8(0x21);
                out.put_u8(0x11);
                out.put_u16(INET_BLOCK as u16);
                out.put_slice(&s.ip().octets());
                out.put_slice(&d.ip().octets());
                out.put_u16(s.port());
                out.put_u16(d.port());
            }
            Kind::Inet6(s, d) => {
                out.put_u8(0x21);
                out.put_u8(0x21);
                out.put_u16(INET6_BLOCK as u16);
                out.put_slice(&s.ip().octets());
                out.put_slice(&d.ip().octets());
                out.put_u16(s.port());
                out.put_u16(d.port());
            }
        }
    }
}

/// Decodes the header at the front of `buf`.
///
/// `Ok(None)`: `buf` is a strict prefix of a header that may still be valid; read more (the
/// whole header is never longer than [`MAX_HEADER`]). `Ok(Some((header, consumed)))`: the
/// first `consumed` bytes are the header; the rest belongs to the session. `Err`: close the
/// connection.
pub fn decode(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    //= docs/protocols/proxy.md#telling-the-versions-apart
    //# if the incoming byte count is 16 or above and the 13 first bytes match the protocol
    //# signature block followed by the protocol version 2 [...] otherwise, if [...] the 5 first
    //# characters match the US-ASCII representation of "PROXY" then the protocol must be parsed
    //# as version 1 [...] otherwise the protocol is not covered by this specification and the
    //# connection must be dropped.
    match buf.first() {
        None => Ok(None),
        Some(b'P') => decode_v1(buf),
        Some(b'\r') => decode_v2(buf),
        Some(_) => Err(ProxyError::Missing),
    }
}

/// `Ok(None)` if `buf` is a strict prefix of `prefix` (wait), `Err(Missing)` if it diverges,
/// `Ok(Some(()))` if it starts with `prefix`.
fn expect_prefix(buf: &[u8], prefix: &[u8]) -> Result<Option<()>, ProxyError> {
    if buf.starts_with(prefix) {
        Ok(Some(()))
    } else if prefix.starts_with(buf) {
        Ok(None)
    } else {
        Err(ProxyError::Missing)
    }
}

fn decode_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if expect_prefix(buf, V1_PREFIX)?.is_none() {
        return Ok(None);
    }
    let Some(len) = v1_line_len(buf)? else {
        return Ok(None);
    };
    let mut r = Reader::new(buf);
    // `v1_line_len` checked that these bytes are printable US-ASCII followed by CRLF.
    let line = r
        .str(len, "v1 line")
        .map_err(|_| ProxyError::V1("not US-ASCII"))?;
    r.take(2, "CRLF")
        .map_err(|_| ProxyError::V1("missing CRLF"))?;
    Ok(Some((parse_v1(line)?, len + 2)))
}

/// The length of the v1 line before its CRLF, `None` while the CRLF may still come.
///
/// Fails as early as the input allows: on a byte that is not printable US-ASCII, a CR not
/// followed by LF, an LF alone, or [`V1_MAX`] bytes without a CRLF.
fn v1_line_len(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    //= docs/protocols/proxy.md#version-1-text
    //# The receiver must not tolerate a single CR or LF character to end the line when a
    //# complete CRLF sequence is expected.
    let window = buf.get(..V1_MAX).unwrap_or(buf);
    let full = window.len() >= V1_MAX;
    let mut bytes = window.iter().enumerate().peekable();
    while let Some((i, &b)) = bytes.next() {
        match b {
            b'\r' => {
                return match bytes.peek() {
                    Some((_, b'\n')) => Ok(Some(i)),
                    Some(_) => Err(ProxyError::V1("CR not followed by LF")),
                    None if full => Err(ProxyError::V1TooLong),
                    None => Ok(None),
                }
            }
            b'\n' => return Err(ProxyError::V1("LF without CR")),
            0x20..=0x7E => {}
            _ => return Err(ProxyError::V1("byte outside printable US-ASCII")),
        }
    }
    if full {
        Err(ProxyError::V1TooLong)
    } else {
        Ok(None)
    }
}

/// Parses a whole v1 line without its CRLF.
fn parse_v1(line: &str) -> Result<ProxyHeader, ProxyError> {
    //= docs/protocols/proxy.md#version-1-text
    //# a string identifying the protocol : "PROXY" [...] exactly one space [...] "TCP4" [...]
    //# "TCP6" [...] "UNKNOWN" [...] For "UNKNOWN", the rest of the line before the CRLF may be
    //# omitted by the sender, and the receiver must ignore anything presented before the CRLF
    //# is found.
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(ProxyError::V1("expected one space after PROXY"));
    }
    let v6 = match fields.next() {
        Some("UNKNOWN") => return Ok(ProxyHeader::UNKNOWN),
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err(ProxyError::V1("protocol (expected TCP4, TCP6 or UNKNOWN)")),
    };
    let mut next = |what| fields.next().ok_or(ProxyError::V1(what));
    let (src, dst) = (
        next("missing source address")?,
        next("missing destination")?,
    );
    let (sport, dport) = (
        next("missing source port")?,
        next("missing destination port")?,
    );
    if fields.next().is_some() {
        return Err(ProxyError::V1("fields after the destination port"));
    }
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        if v6 {
            // Rust's parser also takes an embedded IPv4 part ("::ffff:1.2.3.4"), as inet_pton
            // does in HAProxy; nothing else outside the spec's hex groups.
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError::V1("bad IPv6 address"))
        } else {
            // Rust's parser refuses leading zeros, as the spec asks.
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError::V1("bad IPv4 address"))
        }
    };
    let source = SocketAddr::new(ip(src)?, port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, port(dport)?);
    ProxyHeader::proxied(source, destination).ok_or(ProxyError::V1("address families differ"))
}

/// A v1 port: decimal, 0 to 65535, no sign and no leading zero.
fn port(s: &str) -> Result<u16, ProxyError> {
    //# Heading zeroes are not permitted in front of numbers in order to avoid any possible
    //# confusion with octal numbers.
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err(ProxyError::V1("bad port"));
    }
    s.parse().map_err(|_| ProxyError::V1("port above 65535"))
}

/// Maps a cursor error inside a v2 header (every length was checked first, so only a block
/// shorter than its family needs, or a broken TLV, gets here).
fn v2_err(e: DecodeError) -> ProxyError {
    match e {
        DecodeError::Truncated(what) | DecodeError::Invalid(what) => ProxyError::V2(what),
        _ => ProxyError::V2("address block"),
    }
}

fn decode_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if expect_prefix(buf, &V2_SIGNATURE)?.is_none() {
        return Ok(None);
    }
    let mut r = Reader::new(buf);
    let Ok(fixed) = r.array::<V2_FIXED>("v2 fixed header") else {
        return Ok(None);
    };
    let mut f = Reader::new(&fixed);
    f.take(V2_SIGNATURE.len(), "signature").map_err(v2_err)?;
    let ver_cmd = f.u8("version and command").map_err(v2_err)?;
    let fam = f.u8("family and transport").map_err(v2_err)?;
    let len = usize::from(f.u16("address length").map_err(v2_err)?);
    //= docs/protocols/proxy.md#version-2-binary
    //# The highest four bits contains the version. As of this specification, it must always be
    //# sent as \x2 and the receiver must only accept this value.
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::V2("version (expected 2)"));
    }
    //# other values are unassigned and must not be emitted by senders. Receivers must drop
    //# connections presenting unexpected values here.
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2("command (expected LOCAL or PROXY)")),
    };
    if len > V2_MAX_BLOCK {
        return Err(ProxyError::V2TooLarge {
            len,
            max: V2_MAX_BLOCK,
        });
    }
    let Ok(block) = r.take(len, "v2 address block") else {
        return Ok(None);
    };
    //# LOCAL [...] The receiver must accept this connection as valid and must use the real
    //# connection endpoints and discard the protocol block including the family which is
    //# ignored.
    let header = if local {
        ProxyHeader::LOCAL
    } else {
        v2_addresses(fam, block)?
    };
    Ok(Some((header, V2_FIXED + len)))
}

/// The addresses of a v2 `PROXY` header from its family byte and its block; TLVs after the
/// addresses are checked for shape and skipped.
fn v2_addresses(fam: u8, block: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let (family, transport) = (fam >> 4, fam & 0x0F);
    //# other values are unspecified and must not be emitted in version 2 of this protocol and
    //# must be rejected as invalid by receivers.
    if family > 3 {
        return Err(ProxyError::V2(
            "address family (expected UNSPEC, INET, INET6 or UNIX)",
        ));
    }
    if transport > 2 {
        return Err(ProxyError::V2(
            "transport (expected UNSPEC, STREAM or DGRAM)",
        ));
    }
    //# UNSPEC [...] For other commands, the receiver is free to accept the connection anyway
    //# and use the real endpoints addresses or to reject the connection. The receiver should
    //# ignore address information.
    if family == 0 || transport == 0 {
        return Ok(ProxyHeader::UNKNOWN);
    }
    let mut r = Reader::new(block);
    let short = |_| ProxyError::V2("address block shorter than its family needs");
    let header = match family {
        1 => {
            let mut a = Reader::new(r.take(INET_BLOCK, "inet").map_err(short)?);
            let s = Ipv4Addr::from(a.array::<4>("source").map_err(v2_err)?);
            let d = Ipv4Addr::from(a.array::<4>("destination").map_err(v2_err)?);
            let sp = a.u16("source port").map_err(v2_err)?;
            let dp = a.u16("destination port").map_err(v2_err)?;
            ProxyHeader(Kind::Inet(
                SocketAddrV4::new(s, sp),
                SocketAddrV4::new(d, dp),
            ))
        }
        2 => {
            let mut a = Reader::new(r.take(INET6_BLOCK, "inet6").map_err(short)?);
            let s = Ipv6Addr::from(a.array::<16>("source").map_err(v2_err)?);
            let d = Ipv6Addr::from(a.array::<16>("destination").map_err(v2_err)?);
            let sp = a.u16("source port").map_err(v2_err)?;
            let dp = a.u16("destination port").map_err(v2_err)?;
            ProxyHeader(Kind::Inet6(
                SocketAddrV6::new(s, sp, 0, 0),
                SocketAddrV6::new(d, dp, 0, 0),
            ))
        }
        // AF_UNIX: paths mean nothing to a TCP listener; the real endpoints stand.
        _ => {
            r.take(UNIX_BLOCK, "unix").map_err(short)?;
            ProxyHeader::UNKNOWN
        }
    };
    //# If the length specified in the PROXY protocol header indicates that additional bytes
    //# are part of the header beyond the address information, a receiver may choose to skip
    //# over and ignore those bytes [...] The first byte is the Type of the vector. The second
    //# two bytes represent the length in bytes of the value
    while r.remaining() > 0 {
        r.u8("TLV type").map_err(v2_err)?;
        let n = usize::from(r.u16("TLV length").map_err(v2_err)?);
        r.take(n, "TLV value").map_err(v2_err)?;
    }
    Ok(header)
}

/// Writes `ip` as eight hex groups (no `::`, no embedded IPv4).
fn push_v6(out: &mut String, ip: &Ipv6Addr) {
    for (i, g) in ip.segments().iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{g:x}");
    }
}

#[cfg(test)]
mod tests;
