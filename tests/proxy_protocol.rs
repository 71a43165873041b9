//! Black-box tests of the PROXY protocol (`<proxy-protocol>`, docs/protocols/proxy.md) against
//! the real binary: a trusted balancer's header makes the real client the connection's address,
//! a connection without a header, with a broken one, or from an untrusted source is closed
//! without an answer and counted, `LOCAL` keeps the balancer's address, and listeners left out
//! are unchanged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{http_get, run_cli_raw, Node};
use hex_literal::hex;
use presenced_core::proto::proxy::ProxyHeader;

// docs/protocols/proxy.md#test-vectors
const V2_TCP4: [u8; 28] = hex!("0d0a0d0a000d0a515549540a 21 11 000c cb007107 c0000201 1092 1ce8");
const V1_TCP4: &[u8] = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 7400\r\n";
const V2_LOCAL: [u8; 16] = hex!("0d0a0d0a000d0a515549540a 20 00 0000");
// docs/protocols/pool.md#test-vectors
const POOL_HELLO: [u8; 33] =
    hex!("0000001d 01 50525350 01 00000007 0102030405060708 0000000000000001 02 7333");
const WELCOME_NODE1: [u8; 16] = hex!("0000000c 02 01 0001 0000000000000000");
// docs/protocols/query.md#test-vectors
const QUERY_HELLO: [u8; 10] = hex!("00000006 01 50525351 01");
const QUERY_WELCOME: [u8; 10] = hex!("00000006 02 01 0001 03e8");

/// Every listener behind a balancer on loopback.
const ALL_TRUSTED: &str =
    r#"<proxy-protocol listeners="pool,query,http" trusted="127.0.0.1/32,::1/128"/>"#;

/// Sends `bytes` and reads until the server closes (or 5 s pass); tolerates a server that closes
/// before the bytes are written. Returns what came back and how long it took.
fn send(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    (out, start.elapsed())
}

/// Asserts that the server closed a connection carrying `bytes` without a byte of answer.
fn assert_refused(addr: SocketAddr, bytes: &[u8], what: &str) {
    let (answer, took) = send(addr, bytes);
    assert!(answer.is_empty(), "{what}: answered {answer:02x?}");
    assert!(
        took < Duration::from_secs(4),
        "{what}: not closed ({took:?})"
    );
}

/// `GET path` over a fresh connection that starts with `header`; returns (status, body).
fn get_with(addr: SocketAddr, header: &[u8], path: &str) -> (u16, String) {
    let mut req = header.to_vec();
    req.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let (raw, _) = send(addr, &req);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `presenced_errors_total{kind="<kind>"}` in a `/metrics` text (0 when absent).
fn errors(metrics: &str, kind: &str) -> u64 {
    let prefix = format!("presenced_errors_total{{kind=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Waits until the node answers `/healthz/ready` with 200 over a `LOCAL` header.
fn wait_ready_local(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_with(node.http_addr(), &V2_LOCAL, "/healthz/ready").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

#[test]
fn the_real_client_is_the_connections_address_on_pool_and_http() {
    let node = Node::start_with(ALL_TRUSTED);
    wait_ready_local(&node);

    // (a) A v2 header from the trusted balancer, then a pool HELLO in the same segment.
    let mut s = TcpStream::connect(node.pool_addr()).unwrap();
    let mut first = V2_TCP4.to_vec();
    first.extend_from_slice(&POOL_HELLO);
    s.write_all(&first).unwrap();
    assert_eq!(read_exact(&mut s, WELCOME_NODE1.len()), WELCOME_NODE1);
    // A frame of 2 GiB: the session refuses it, and the log names the real client.
    s.write_all(&hex!("7fffffff 10")).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(rest.get(4), Some(&0x7F), "an ERROR frame: {rest:02x?}");
    node.wait_log("closing pool connection");
    let log = node.log();
    let line = log
        .lines()
        .find(|l| l.contains("closing pool connection"))
        .unwrap();
    assert!(line.contains("peer=203.0.113.7:4242"), "{line}");

    // (b) A v1 header on the HTTP listener, sent byte by byte: the header may arrive in pieces.
    let mut s = TcpStream::connect(node.http_addr()).unwrap();
    s.set_nodelay(true).unwrap();
    for b in V1_TCP4 {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    s.write_all(b"GET /healthz/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The same with an IPv6 client written by the encoder the docs describe.
    let h = ProxyHeader::proxied(
        "[2001:db8::7]:4242".parse().unwrap(),
        "[2001:db8::1]:7480".parse().unwrap(),
    )
    .unwrap();
    for v1 in [true, false] {
        let mut header = Vec::new();
        if v1 {
            h.encode_v1(&mut header);
        } else {
            h.encode_v2(&mut header);
        }
        let (status, _) = get_with(node.http_addr(), &header, "/healthz/live");
        assert_eq!(status, 200, "v1: {v1}");
    }
}

#[test]
fn connections_without_a_valid_header_are_refused_and_counted() {
    let node = Node::start_with(ALL_TRUSTED);
    wait_ready_local(&node);

    // (c) No header: a client talking to the listeners directly gets nothing back.
    assert_refused(node.pool_addr(), &POOL_HELLO, "pool without header");
    assert_refused(node.query_addr(), &QUERY_HELLO, "query without header");
    assert_refused(
        node.http_addr(),
        b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n",
        "http without header",
    );
    // Broken headers: a lone LF, a leading zero, a v2 block above the limit, and a header cut
    // short by the client's close.
    assert_refused(
        node.pool_addr(),
        b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 7400\n",
        "v1 with LF",
    );
    assert_refused(
        node.query_addr(),
        b"PROXY TCP4 203.0.113.07 192.0.2.1 4242 7400\r\n",
        "v1 with a leading zero",
    );
    assert_refused(
        node.http_addr(),
        &hex!("0d0a0d0a000d0a515549540a 21 11 ffff"),
        "v2 too long",
    );
    {
        let mut s = TcpStream::connect(node.pool_addr()).unwrap();
        s.write_all(&V2_TCP4[..20]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty(), "{rest:02x?}");
    }
    // Warnings are rate-limited per listener (one line a second): the first of each listener is
    // logged, the metrics below count every one.
    node.wait_log("closing http connection");
    node.wait_log("closing pool connection");

    let (status, metrics) = get_with(node.http_addr(), &V2_TCP4, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(errors(&metrics, "proxy_missing"), 3, "{metrics}");
    assert_eq!(errors(&metrics, "proxy_malformed"), 4, "{metrics}");
    assert_eq!(errors(&metrics, "proxy_untrusted"), 0, "{metrics}");
    assert!(
        node.log()
            .contains("closing query connection: no PROXY protocol header"),
        "{}",
        node.log()
    );
}

#[test]
fn an_untrusted_source_is_refused_even_with_a_valid_header() {
    // (d) Loopback is not a trusted balancer; HTTP is left out of the listeners.
    let node = Node::start_with(r#"<proxy-protocol listeners="pool,query" trusted="10.0.0.0/8"/>"#);
    // The harness's own probes of the pool and query ports (`Node::start`) were refused too.
    let untrusted = || errors(&http_get(node.http_addr(), "/metrics").1, "proxy_untrusted");
    let deadline = Instant::now() + Duration::from_secs(10);
    while untrusted() < 2 {
        assert!(
            Instant::now() < deadline,
            "probes not counted:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(untrusted(), 2);

    let mut pool = V2_TCP4.to_vec();
    pool.extend_from_slice(&POOL_HELLO);
    assert_refused(node.pool_addr(), &pool, "pool from loopback");
    let mut query = V1_TCP4.to_vec();
    query.extend_from_slice(&QUERY_HELLO);
    assert_refused(node.query_addr(), &query, "query from loopback");
    node.wait_log("refusing pool connection: source not trusted to send a PROXY header");
    node.wait_log("refusing query connection: source not trusted to send a PROXY header");

    // A listener left out expects no header: plain HTTP is answered as before.
    let (status, metrics) = http_get(node.http_addr(), "/metrics");
    assert_eq!(status, 200);
    assert_eq!(errors(&metrics, "proxy_untrusted"), 4, "{metrics}");
    assert_eq!(errors(&metrics, "proxy_missing"), 0, "{metrics}");
    assert!(
        !node.log().contains("203.0.113.7"),
        "the header was never read"
    );
}

#[test]
fn a_local_header_keeps_the_balancer_address_and_the_query_works() {
    // (e) The query listener is behind the balancer; the pool is not.
    let node =
        Node::start_with(r#"<proxy-protocol listeners="query" trusted="127.0.0.0/8, ::1/128"/>"#);
    node.push("login 10086 1 mobile\n");

    for header in [V2_LOCAL.to_vec(), b"PROXY UNKNOWN\r\n".to_vec()] {
        let mut s = TcpStream::connect(node.query_addr()).unwrap();
        let mut bytes = header.clone();
        bytes.extend_from_slice(&QUERY_HELLO);
        // QUERY req_id 7 for sid 10086.
        bytes.extend_from_slice(&hex!("0000000f 10 00000007 0001 0000000000002766"));
        s.write_all(&bytes).unwrap();
        assert_eq!(read_exact(&mut s, QUERY_WELCOME.len()), QUERY_WELCOME);
        let result = read_exact(&mut s, 4 + 41);
        assert_eq!(result[..9], hex!("00000029 11 00000007"), "{result:02x?}");
        assert_eq!(result[19..27], hex!("0000000000002766"));
        assert_eq!(result[27] & 0b11, 0b11, "known and online: {result:02x?}");

        // A protocol error on it is logged with the balancer's own address.
        s.write_all(&hex!("7fffffff 10")).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert_eq!(rest.get(4), Some(&0x7F), "{rest:02x?}");
    }
    node.wait_log("closing query connection");
    let log = node.log();
    assert!(
        log.lines()
            .filter(|l| l.contains("closing query connection"))
            .all(|l| l.contains("peer=127.0.0.1:")),
        "{log}"
    );
}

#[test]
fn check_config_refuses_bad_listeners_and_cidrs() {
    let dir = std::env::temp_dir().join(format!("presenced-proxy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = r#"<node id="1" host="127.0.0.1" pool-port="7400" query-port="7401" sync-port="7402" time-port="7403" http-port="7480"/>"#;
    for (attrs, want) in [
        (
            r#"listeners="pool,sync" trusted="10.0.0.0/8""#,
            "bad listener \"sync\"",
        ),
        (
            r#"listeners="pool" trusted="10.0.0.0/8,10.0.0.1/33""#,
            "bad CIDR \"10.0.0.1/33\"",
        ),
        (
            r#"listeners="pool" trusted="10.0.0.1/8""#,
            "did you mean 10.0.0.0/8?",
        ),
    ] {
        let file = dir.join("proxy.xml");
        std::fs::write(
            &file,
            format!("<cluster name=\"x\">\n  <proxy-protocol {attrs}/>\n  {node}\n</cluster>\n"),
        )
        .unwrap();
        let out = run_cli_raw(&["check-config", file.to_str().unwrap()], "");
        assert!(!out.status.success(), "{attrs} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("proxy.xml:2:") && err.contains(want), "{err}");
    }
    let file = dir.join("good.xml");
    std::fs::write(
        &file,
        format!(
            "<cluster name=\"x\">\n  <proxy-protocol listeners=\"pool,query,http\" \
             trusted=\"10.0.0.0/8,127.0.0.1/32\"/>\n  {node}\n</cluster>\n"
        ),
    )
    .unwrap();
    let out = run_cli_raw(&["check-config", file.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_header_that_never_completes_is_closed_by_the_idle_timeout() {
    let node = Node::start_with(&format!("{ALL_TRUSTED}<limits idle-timeout-ms=\"300\"/>"));
    // A byte every 100 ms keeps a session alive, but not a header: the timeout counts from the
    // accept.
    let start = Instant::now();
    let mut s = TcpStream::connect(node.pool_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut closed = false;
    for b in V1_TCP4.iter().take(40) {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => panic!("answered {:02x?}", &buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let took = start.elapsed();
    assert!(closed, "still open after {took:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let (_, metrics) = get_with(node.http_addr(), &V2_LOCAL, "/metrics");
    assert_eq!(errors(&metrics, "idle_timeout"), 1, "{metrics}");
}
