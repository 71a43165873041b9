//! Black-box tests of the pool and query protocols against the real binary: the spec's hex
//! vectors on the wire, pipelining, limits, and hostile input that must close only the
//! connection that sent it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{exchange, Node};
use hex_literal::hex;

// docs/protocols/pool.md#test-vectors
const POOL_HELLO: [u8; 33] =
    hex!("0000001d 01 50525350 01 00000007 0102030405060708 0000000000000001 02 7333");
const POOL_LOGIN: [u8; 47] = hex!(
    "0000002b 10 0000000000000001 0001 01 0000000000002766 0000000000000001 00 01 01 04 6e69636b 0005 616c696365"
);
const WELCOME_NODE1: [u8; 16] = hex!("0000000c 02 01 0001 0000000000000000");
const ACK_1: [u8; 13] = hex!("00000009 11 0000000000000001");
// docs/protocols/query.md#test-vectors
const QUERY_HELLO: [u8; 10] = hex!("00000006 01 50525351 01");

fn read_exact_timeout(s: &mut TcpStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

#[test]
fn spec_vectors_on_the_wire() {
    let node = Node::start();
    let mut s = TcpStream::connect(node.pool_addr()).unwrap();
    s.write_all(&POOL_HELLO).unwrap();
    assert_eq!(
        read_exact_timeout(&mut s, WELCOME_NODE1.len()),
        WELCOME_NODE1
    );
    s.write_all(&POOL_LOGIN).unwrap();
    assert_eq!(read_exact_timeout(&mut s, ACK_1.len()), ACK_1);
    let st = &node.query(&["10086"])[0];
    assert_eq!(st["online"], true);
    assert_eq!(st["ext"]["nick"], "alice");

    let mut q = TcpStream::connect(node.query_addr()).unwrap();
    q.write_all(&QUERY_HELLO).unwrap();
    assert_eq!(
        read_exact_timeout(&mut q, 10),
        hex!("00000006 02 01 0001 03e8")
    );
}

#[test]
fn pipelined_queries_are_answered_in_order() {
    let node = Node::start();
    node.push("login 1 1 pc\nlogin 2 2 web\n");
    let mut bytes = QUERY_HELLO.to_vec();
    for req in 1u32..=50 {
        bytes.extend_from_slice(&(1u32 + 4 + 2 + 8).to_be_bytes());
        bytes.push(0x10);
        bytes.extend_from_slice(&req.to_be_bytes());
        bytes.extend_from_slice(&1u16.to_be_bytes());
        bytes.extend_from_slice(&u64::from(req % 3 + 1).to_be_bytes());
    }
    let mut s = TcpStream::connect(node.query_addr()).unwrap();
    s.write_all(&bytes).unwrap();
    let _welcome = read_exact_timeout(&mut s, 10);
    for req in 1u32..=50 {
        let head = read_exact_timeout(&mut s, 4);
        let len = u32::from_be_bytes(head.try_into().unwrap()) as usize;
        let body = read_exact_timeout(&mut s, len);
        assert_eq!(body[0], 0x11, "RESULT");
        assert_eq!(
            u32::from_be_bytes(body[1..5].try_into().unwrap()),
            req,
            "in request order"
        );
        let sid = u64::from_be_bytes(body[15..23].try_into().unwrap());
        assert_eq!(sid, u64::from(req % 3 + 1));
        let known = body[23] & 1 == 1;
        assert_eq!(known, sid != 3);
    }
}

#[test]
fn garbage_closes_only_that_connection() {
    let node = Node::start();
    // A long-lived, well-behaved query connection opened before the garbage.
    let mut good =
        presenced_client::QueryClient::connect(node.query_addr(), Duration::from_secs(5)).unwrap();

    for (addr, what) in [(node.pool_addr(), "pool"), (node.query_addr(), "query")] {
        let reply = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        );
        // The server answers with an ERROR frame (type 0x7F) and closes.
        assert!(reply.len() >= 5 && reply[4] == 0x7F, "{what}: {reply:?}");
        node.wait_log(&format!("closing {what} connection"));
        // A huge length is refused before anything is buffered for it.
        let reply = exchange(addr, &hex!("7fffffff 10"), Duration::from_secs(5));
        assert!(reply.len() >= 5 && reply[4] == 0x7F, "{what}: {reply:?}");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("exceeds the limit"), "{what}: {text}");
        // A well-framed HELLO with the wrong magic.
        let reply = exchange(
            addr,
            &hex!("0000000a 01 47455420 01 0000000000"),
            Duration::from_secs(5),
        );
        assert!(reply.len() >= 5 && reply[4] == 0x7F, "{what}: {reply:?}");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("bad magic"), "{what}: {text}");
    }
    // Log lines for these are rate-limited (one per protocol per second); the metrics count
    // every one.
    let (_, metrics) = common::http_get(node.http_addr(), "/metrics");
    for kind in ["pool_protocol", "query_protocol"] {
        assert!(
            metrics.contains(&format!("presenced_errors_total{{kind=\"{kind}\"}} 3")),
            "{kind}: {metrics}"
        );
    }

    node.push("login 77 1 pc\n");
    assert!(
        good.query(&[77]).unwrap()[0].online,
        "other clients never notice"
    );
}

#[test]
fn over_limit_batch_is_refused_per_request() {
    let node = Node::start_with("<limits batch-limit=\"3\"/>");
    let mut s = TcpStream::connect(node.query_addr()).unwrap();
    let mut bytes = QUERY_HELLO.to_vec();
    let ids = [1u64, 2, 3, 4];
    bytes.extend_from_slice(&(1u32 + 4 + 2 + 32).to_be_bytes());
    bytes.push(0x10);
    bytes.extend_from_slice(&9u32.to_be_bytes());
    bytes.extend_from_slice(&4u16.to_be_bytes());
    for id in ids {
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    s.write_all(&bytes).unwrap();
    let welcome = read_exact_timeout(&mut s, 10);
    assert_eq!(
        &welcome[8..10],
        &3u16.to_be_bytes(),
        "WELCOME announces the limit"
    );
    let head = read_exact_timeout(&mut s, 5);
    assert_eq!(head[4], 0x7E, "REJECT");
    let rest = read_exact_timeout(
        &mut s,
        u32::from_be_bytes(head[..4].try_into().unwrap()) as usize - 1,
    );
    assert_eq!(&rest[..4], &9u32.to_be_bytes());
    assert_eq!(rest[4], 7, "TooManyIds");
    // The connection is still usable.
    let mut c =
        presenced_client::QueryClient::connect(node.query_addr(), Duration::from_secs(5)).unwrap();
    assert_eq!(
        c.query(&[1, 2, 3, 4, 5, 6, 7]).unwrap().len(),
        7,
        "the client splits batches"
    );
}

#[test]
fn wrong_token_is_refused() {
    let node = Node::start_with("<security pool-token=\"s3cret\"/>");
    let out = common::run_cli_raw(
        &[
            "push",
            "--pool",
            &node.pool_addr().to_string(),
            "--token",
            "nope",
        ],
        "login 1 1 pc\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad token"));
    let ok = common::run_cli(
        &[
            "push",
            "--pool",
            &node.pool_addr().to_string(),
            "--token",
            "s3cret",
        ],
        "login 1 1 pc\n",
    );
    assert!(ok.contains("1 acked"), "{ok}");
}

#[test]
fn idle_connections_time_out() {
    let node = Node::start_with("<limits idle-timeout-ms=\"300\"/>");
    let mut s = TcpStream::connect(node.query_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let started = std::time::Instant::now();
    assert_eq!(s.read(&mut buf).unwrap_or(0), 0, "closed by the server");
    assert!(started.elapsed() < Duration::from_secs(4));
}
