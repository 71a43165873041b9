//! PROXY protocol decoder tests: the hex vectors of docs/protocols/proxy.md, round trips, and
//! arbitrary bytes.

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
const V2_TCP4: [u8; 28] = hex!("0d0a0d0a000d0a515549540a 21 11 000c cb007107 c0000201 1092 1ce8");
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
