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
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::proxied(addr(src), addr(dst)).unwrap()
    }

    /// Decodes `input` (plus trailing session bytes, which must stay unconsumed) and checks the
    /// outcome.
    fn check(input: &[u8], expected: Result<Option<ProxyHeader>, ProxyError>) {
        let mut with_tail = input.to_vec();
        let got = decode(input);
        match (&got, &expected) {
            (Ok(Some((h, n))), Ok(Some(e))) => {
                assert_eq!(h, e, "{input:02x?}");
                assert_eq!(*n, input.len(), "consumed");
                with_tail.extend_from_slice(b"\x00\x00\x00\x1dHELLO");
                assert_eq!(decode(&with_tail).unwrap(), Some((*h, input.len())));
            }
            (Ok(None), Ok(None)) => {}
            (Err(g), Err(e)) => assert_eq!(g, e, "{input:02x?}"),
            _ => panic!("{input:02x?}: got {got:?}, expected {expected:?}"),
        }
    }

    //= docs/protocols/proxy.md#test-vectors
    const V1_TCP4: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 7400\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8:0:0:0:0:0:7 2001:db8:0:0:0:0:0:1 4242 7480\r\n";
    const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
    const V2_TCP4: [u8; 28] =
        hex!("0d0a0d0a000d0a515549540a 21 11 000c cb007107 c0000201 1092 1ce8");
    const V2_TCP6: [u8; 52] = hex!(
        "0d0a0d0a000d0a515549540a 21 21 0024
         20010db8000000000000000000000007 20010db8000000000000000000000001 1092 1d38"
    );
    const V2_LOCAL: [u8; 16] = hex!("0d0a0d0a000d0a515549540a 20 00 0000");
    const V2_TCP4_TLV: [u8; 35] =
        hex!("0d0a0d0a000d0a515549540a 21 11 0013 cb007107 c0000201 1092 1ce8 04 0004 00000000");

    #[test]
    fn vectors_from_the_spec() {
        let tcp4 = proxied("203.0.113.7:4242", "192.0.2.1:7400");
        let tcp6 = proxied("[2001:db8::7]:4242", "[2001:db8::1]:7480");
        check(V1_TCP4, Ok(Some(tcp4)));
        check(V1_TCP6, Ok(Some(tcp6)));
        check(
            b"PROXY TCP6 2001:db8::7 2001:db8::1 4242 7480\r\n",
            Ok(Some(tcp6)),
        );
        check(V1_UNKNOWN, Ok(Some(ProxyHeader::UNKNOWN)));
        check(&V2_TCP4, Ok(Some(tcp4)));
        check(&V2_TCP6, Ok(Some(tcp6)));
        check(&V2_LOCAL, Ok(Some(ProxyHeader::LOCAL)));
        check(&V2_TCP4_TLV, Ok(Some(tcp4)));
        // UDP over IPv4 carries the same addresses.
        check(
            &hex!("0d0a0d0a000d0a515549540a 21 12 000c cb007107 c0000201 1092 1ce8"),
            Ok(Some(tcp4)),
        );
        // LOCAL with an address block: the block is skipped, the family ignored.
        check(
            &hex!("0d0a0d0a000d0a515549540a 20 11 000c cb007107 c0000201 1092 1ce8"),
            Ok(Some(ProxyHeader::LOCAL)),
        );
        // PROXY over AF_UNIX or UNSPEC: the real endpoints stand.
        let mut unix = hex!("0d0a0d0a000d0a515549540a 21 31 00d8").to_vec();
        unix.extend_from_slice(&[0u8; 216]);
        check(&unix, Ok(Some(ProxyHeader::UNKNOWN)));
        check(
            &hex!("0d0a0d0a000d0a515549540a 21 00 0000"),
            Ok(Some(ProxyHeader::UNKNOWN)),
        );
        // The spec's worst case: 107 bytes.
        let worst = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
                      ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(worst.len(), V1_MAX);
        check(worst, Ok(Some(ProxyHeader::UNKNOWN)));

        let mut out = Vec::new();
        tcp4.encode_v1(&mut out);
        assert_eq!(out, V1_TCP4);
        out.clear();
        tcp6.encode_v1(&mut out);
        assert_eq!(out, V1_TCP6);
        out.clear();
        tcp4.encode_v2(&mut out);
        assert_eq!(out, V2_TCP4);
        out.clear();
        tcp6.encode_v2(&mut out);
        assert_eq!(out, V2_TCP6);
        out.clear();
        ProxyHeader::LOCAL.encode_v2(&mut out);
        assert_eq!(out, V2_LOCAL);
        out.clear();
        ProxyHeader::LOCAL.encode_v1(&mut out);
        assert_eq!(out, V1_UNKNOWN);
        assert_eq!(tcp4.command(), Command::Proxy);
        assert_eq!(tcp4.destination(), Some(addr("192.0.2.1:7400")));
        assert_eq!(ProxyHeader::LOCAL.command(), Command::Local);
        assert_eq!(ProxyHeader::LOCAL.source(), None);
    }

    #[test]
    fn partial_headers_wait_and_foreign_bytes_fail_at_once() {
        for n in 0..V1_TCP4.len() {
            check(&V1_TCP4[..n], Ok(None));
        }
        for n in 0..V2_TCP6.len() {
            check(&V2_TCP6[..n], Ok(None));
        }
        // A pool HELLO, an HTTP request, a query HELLO: no header at all.
        check(&hex!("0000001d 01 50525350 01"), Err(ProxyError::Missing));
        check(b"GET /healthz/live HTTP/1.1\r\n", Err(ProxyError::Missing));
        check(b"POST /v1/presence HTTP/1.1\r\n", Err(ProxyError::Missing));
        check(b"PRO\n", Err(ProxyError::Missing));
        check(b"\r\n\r\n\x00\r\nQUIX", Err(ProxyError::Missing));
        assert!(ProxyError::Missing.is_missing());
        assert!(!ProxyError::V1TooLong.is_missing());
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v1 = |s: &[u8], what| check(s, Err(ProxyError::V1(what)));
        v1(
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "protocol (expected TCP4, TCP6 or UNKNOWN)",
        );
        v1(
            b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "expected one space after PROXY",
        );
        v1(
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            "protocol (expected TCP4, TCP6 or UNKNOWN)",
        );
        v1(b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad IPv4 address");
        v1(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad IPv4 address");
        v1(b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad IPv6 address");
        v1(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "bad port");
        v1(b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "bad port");
        v1(
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            "port above 65535",
        );
        v1(
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "missing destination port",
        );
        v1(
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "fields after the destination port",
        );
        v1(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "LF without CR");
        v1(b"PROXY TCP4 1.2.3.4\r5", "CR not followed by LF");
        v1(b"PROXY TCP4 1.2.3.4\x00", "byte outside printable US-ASCII");
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'f');
        check(&long, Err(ProxyError::V1TooLong));
        long.truncate(V1_MAX - 1);
        long.push(b'\r');
        check(&long, Err(ProxyError::V1TooLong));
        long.truncate(V1_MAX - 2);
        long.extend_from_slice(b"\r\n");
        check(&long, Ok(Some(ProxyHeader::UNKNOWN)));

        let sig = "0d0a0d0a000d0a515549540a";
        let v2 = |tail: &str, e| check(&hex_decode(&format!("{sig}{tail}")), Err(e));
        v2("11 11 000c", ProxyError::V2("version (expected 2)"));
        v2(
            "22 11 000c",
            ProxyError::V2("command (expected LOCAL or PROXY)"),
        );
        v2(
            "21 41 0000",
            ProxyError::V2("address family (expected UNSPEC, INET, INET6 or UNIX)"),
        );
        v2(
            "21 13 0000",
            ProxyError::V2("transport (expected UNSPEC, STREAM or DGRAM)"),
        );
        v2(
            "21 11 0008 cb007107 c0000201",
            ProxyError::V2("address block shorter than its family needs"),
        );
        v2(
            "21 11 000f cb007107 c0000201 1092 1ce8 04 0004",
            ProxyError::V2("TLV value"),
        );
        v2(
            "21 11 0219",
            ProxyError::V2TooLarge {
                len: 537,
                max: V2_MAX_BLOCK,
            },
        );
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    fn any_header() -> impl Strategy<Value = ProxyHeader> {
        prop_oneof![
            Just(ProxyHeader::LOCAL),
            Just(ProxyHeader::UNKNOWN),
            (
                any::<[u8; 4]>(),
                any::<[u8; 4]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(s, d, sp, dp)| ProxyHeader::proxied(
                    SocketAddr::from((s, sp)),
                    SocketAddr::from((d, dp))
                )
                .unwrap()),
            (
                any::<[u8; 16]>(),
                any::<[u8; 16]>(),
                any::<u16>(),
                any::<u16>()
            )
                .prop_map(|(s, d, sp, dp)| ProxyHeader::proxied(
                    SocketAddr::from((s, sp)),
                    SocketAddr::from((d, dp))
                )
                .unwrap()),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(h in any_header(), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
            for v1 in [false, true] {
                let mut out = Vec::new();
                if v1 { h.encode_v1(&mut out) } else { h.encode_v2(&mut out) }
                let len = out.len();
                let max = if v1 { V1_MAX } else { MAX_HEADER };
                prop_assert!(len <= max);
                // v1 has no LOCAL: it is written as UNKNOWN.
                let expected = if v1 && h == ProxyHeader::LOCAL { ProxyHeader::UNKNOWN } else { h };
                for n in 0..len {
                    prop_assert_eq!(decode(&out[..n]), Ok(None));
                }
                out.extend_from_slice(&tail);
                prop_assert_eq!(decode(&out), Ok(Some((expected, len))));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..700)) {
            if let Ok(Some((h, n))) = decode(&data) {
                prop_assert!(n <= data.len() && n <= MAX_HEADER);
                let mut again = Vec::new();
                h.encode_v2(&mut again);
                prop_assert_eq!(decode(&again), Ok(Some((h, again.len()))));
            }
        }

        #[test]
        fn signature_then_arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut buf = V2_SIGNATURE.to_vec();
            buf.push(0x21);
            buf.extend_from_slice(&data);
            if let Ok(Some((_, n))) = decode(&buf) {
                prop_assert!(n <= buf.len() && n <= MAX_HEADER);
            }
            let mut line = b"PROXY ".to_vec();
            line.extend(data.iter().map(|b| b % 96 + 0x20));
            line.extend_from_slice(b"\r\n");
            if let Ok(Some((_, n))) = decode(&line) {
                prop_assert!(n <= line.len() && n <= V1_MAX);
            }
        }
    }
}
