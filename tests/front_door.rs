//! Black-box tests of the front door (docs/config.md, `max-connections`,
//! `max-connections-per-address`, `handshake-timeout-ms`, `output-budget-bytes`) against the
//! real binary, from many loopback source addresses (127.0.0.2 and up, bound with socket2):
//!
//! - a flood of connections trickling a partial pool `HELLO` fills the pool listener only: a
//!   real `presenced push` gets in once the handshake deadline closed them, and `/healthz/ready`
//!   on the HTTP port never fails meanwhile;
//! - thousands of HTTP connections pipelining large batch queries and never reading keep the
//!   node's memory bounded (the per-connection cap and the node-wide budget), while a normal
//!   client is answered.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{figure, http_get, run_cli_raw, Node};
use hex_literal::hex;
use socket2::{Domain, Socket, Type};

// docs/protocols/pool.md#test-vectors
const POOL_HELLO: [u8; 33] =
    hex!("0000001d 01 50525350 01 00000007 0102030405060708 0000000000000001 02 7333");

/// A connection to `to` from source address `127.0.0.{last}`, with a small receive buffer (so a
/// client that never reads holds little kernel memory).
fn connect_from(last: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.set_recv_buffer_size(4096)?;
    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), 0);
    s.bind(&from.into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// Polls `/healthz/ready` every 50 ms until `stop`; counts the polls and the failures.
fn watch_ready(http: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let (mut polls, mut failures) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let ok = std::panic::catch_unwind(|| http_get(http, "/healthz/ready").0 == 200);
            polls += 1;
            if !matches!(ok, Ok(true)) {
                failures += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (polls, failures)
    })
}

/// The value of the metric line starting with `prefix` (labels included), 0 if absent.
/// The flood tests each open thousands of connections and measure memory and latency: they run
/// one at a time (cargo runs a file's tests on parallel threads), so that one's flood does not
/// count in the other's figures.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn metric(node: &Node, prefix: &str) -> u64 {
    let (_, body) = http_get(node.http_addr(), "/metrics");
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The resident set of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn wait_ready(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(node.http_addr(), "/healthz/ready").0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_trickling_flood_of_the_pool_port_neither_locks_pools_out_nor_fails_health_checks() {
    let _serial = serial();
    let node = Node::start_with(r#"<limits max-connections="200" handshake-timeout-ms="2000"/>"#);
    wait_ready(&node);
    let stop = Arc::new(AtomicBool::new(false));
    let health = watch_ready(node.http_addr(), stop.clone());

    // 250 connections from 25 addresses, all connected first (50 beyond max-connections are
    // closed at accept), then each trickles HELLO a byte at a time and never finishes it.
    let started = Instant::now();
    let mut flood = Vec::new();
    for last in 2..=26u8 {
        for _ in 0..10 {
            flood.push(connect_from(last, node.pool_addr()).unwrap());
        }
    }
    let trickle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                if sent < POOL_HELLO.len() - 1 {
                    for s in &mut flood {
                        let _ = s.write_all(&POOL_HELLO[sent..=sent]);
                    }
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(60));
            }
        })
    };

    // A real pool gets in: the listener is full until the handshake deadline closes the flood.
    std::thread::sleep(Duration::from_millis(200));
    let out = run_cli_raw(
        &["push", "--pool", &node.pool_addr().to_string()],
        "login 4242 1 pc\n",
    );
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "push failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.log()
    );
    figure(&format!(
        "front_door: push through a 250-connection trickle flood done {} ms after the flood \
         started (handshake-timeout-ms 2000)",
        took.as_millis()
    ));
    assert!(took < Duration::from_secs(4), "push took {took:?}");

    // Keep watching health for a while after, then stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    let (polls, failures) = health.join().unwrap();
    assert!(polls >= 20, "only {polls} health polls");
    assert_eq!(
        failures, 0,
        "/healthz/ready failed {failures} of {polls} times"
    );

    let refused = metric(
        &node,
        "presenced_connections_refused_total{protocol=\"pool\",reason=\"max_connections\"}",
    );
    let timeouts = metric(
        &node,
        "presenced_handshake_timeouts_total{protocol=\"pool\"}",
    );
    assert!(refused >= 50, "refused {refused}");
    assert!(timeouts >= 200, "handshake timeouts {timeouts}");
    assert_eq!(
        metric(
            &node,
            "presenced_connections_refused_total{protocol=\"http\",reason=\"max_connections\"}"
        ),
        0
    );
}

#[test]
fn the_per_address_cap_refuses_only_that_address() {
    let node = Node::start_with(r#"<limits max-connections-per-address="3"/>"#);
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| connect_from(2, node.query_addr()).unwrap())
        .collect();
    // Three are served; the two beyond the cap are closed at accept.
    let refused = "presenced_connections_refused_total{protocol=\"query\",reason=\"per_address\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&node, refused) < 2 {
        assert!(Instant::now() < deadline, "not refused:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(metric(&node, refused), 2);
    // Another address, and the same address on another listener, are not affected.
    let other = connect_from(3, node.query_addr()).unwrap();
    let http = connect_from(2, node.http_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(metric(&node, refused), 2);
    // Closing one of the three makes room for that address again.
    held.truncate(2);
    std::thread::sleep(Duration::from_millis(200));
    let again = connect_from(2, node.query_addr()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(metric(&node, refused), 2);
    drop((other, http, again));
}

/// Fills the store with `n` users (sids 1..=n) whose statuses are long.
fn fill(node: &Node, n: u64) {
    let nick = "n".repeat(200);
    let lines: String = (1..=n)
        .map(|sid| format!("login {sid} 1 pc nick={nick}\nlogin {sid} 1 mobile\n"))
        .collect();
    node.push(&lines);
}

/// Runs `conns` connections from 20 addresses pipelining `GET /v1/presence` of 1000 ids and
/// never reading (those the node cuts stay closed) for `run`, while a normal client queries
/// a few ids; returns the highest RSS seen and the normal client's slowest answer.
fn slow_reader_flood(node: &Node, conns: usize, run: Duration) -> (u64, Duration) {
    let ids: Vec<String> = (1..=1000).map(|i| i.to_string()).collect();
    let request = format!(
        "GET /v1/presence?ids={} HTTP/1.1\r\nHost: t\r\n\r\n",
        ids.join(",")
    );
    let burst: Vec<u8> = request.repeat(16).into_bytes();
    let pid = node.pid().unwrap();
    let http = node.http_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let closed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, burst, closed) = (stop.clone(), burst.clone(), closed.clone());
            std::thread::spawn(move || {
                let addr_of = |i: usize| 2 + (i % 20) as u8;
                let mine: Vec<usize> = (0..conns).filter(|i| i % 4 == w).collect();
                let mut socks: Vec<Option<TcpStream>> = mine
                    .iter()
                    .map(|&i| {
                        let s = connect_from(addr_of(i), http).ok()?;
                        s.set_nonblocking(true).ok()?;
                        Some(s)
                    })
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    for slot in &mut socks {
                        let ok = match slot {
                            Some(s) => match s.write(&burst) {
                                Ok(_) => true,
                                Err(e) => e.kind() == ErrorKind::WouldBlock,
                            },
                            None => false,
                        };
                        if !ok && slot.take().is_some() {
                            // Cut by the node (or refused): it stays closed.
                            closed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut peak = 0;
    let mut slowest = Duration::ZERO;
    while start.elapsed() < run {
        peak = peak.max(rss(pid));
        let t = Instant::now();
        let (mut status, mut body) = http_get(http, "/v1/presence?ids=7,8,9");
        while status != 200 && t.elapsed() < Duration::from_secs(30) {
            (status, body) = http_get(http, "/v1/presence?ids=7,8,9");
        }
        slowest = slowest.max(t.elapsed());
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let text = v.to_string();
        assert!(text.contains("\"7\""), "{text}");
        assert!(text.contains(&"n".repeat(200)), "{text}");
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    figure(&format!(
        "front_door: {conns} slow readers for {} ms: peak RSS {} MB, slowest normal answer {} ms, \
         {} of them closed by the node",
        run.as_millis(),
        peak >> 20,
        slowest.as_millis(),
        closed.load(Ordering::Relaxed)
    ));
    (peak, slowest)
}

/// Regression: 2000 connections pipelining 1000-id queries and never reading pushed RSS to
/// 318-691 MB with a 64 MiB budget (1184 MB with the default one) and delayed a normal client by
/// up to 6 s. Postmortem: the budget counted unsent bytes, not the memory behind them: every
/// connection kept a 64-128 KiB input buffer, the router's id and status vectors of its last
/// batch (about 90 KB) and output buffers up to twice their content, none of it counted; and a
/// service rendered answers up to `max-output-bytes` for one connection before the next got a
/// turn. Now the budget counts buffer capacities, per-connection leftovers are freed, one service
/// adds at most one large answer and a round of the event loop yields after 5 ms.
#[test]
fn slow_readers_cannot_exhaust_memory() {
    let _serial = serial();
    let node =
        Node::start_with(r#"<limits max-output-bytes="1048576" output-budget-bytes="67108864"/>"#);
    wait_ready(&node);
    fill(&node, 1000);
    let (_, body) = http_get(
        node.http_addr(),
        &format!(
            "/v1/presence?ids={}",
            (1..=1000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    );
    figure(&format!(
        "front_door: one GET of 1000 ids answers {} bytes",
        body.len()
    ));
    let before = rss(node.pid().unwrap());
    let (peak, slowest) = slow_reader_flood(&node, 2000, Duration::from_secs(5));
    // Measured 144-191 MB on a quiet machine (budget 64 MiB), up to 388 MB with two fuzzers
    // on both cores; 318-691 MB before the fix. The issue's bound is 512 MB.
    assert!(
        peak < 512 << 20,
        "peak RSS {} MB (before {} MB)",
        peak >> 20,
        before >> 20
    );
    assert!(
        // Served, not fast: the figure above is the measure (43-342 ms on a quiet machine); a
        // starved machine takes a few seconds.
        slowest < Duration::from_secs(10),
        "normal client waited {slowest:?}"
    );
    let cut = metric(&node, "presenced_output_cut_total");
    assert!(cut > 0, "the budget never cut a connection");
    let buffered = metric(&node, "presenced_output_buffered_bytes");
    assert!(buffered <= 96 << 20, "buffered {buffered}");
}

/// The issue's bound with the default budget (256 MiB): measured 381 MB, 1184 MB before the fix
/// (see `slow_readers_cannot_exhaust_memory` for the postmortem).
#[test]
fn slow_readers_cannot_exhaust_memory_with_the_default_budget() {
    let _serial = serial();
    let node = Node::start();
    wait_ready(&node);
    fill(&node, 1000);
    let (peak, slowest) = slow_reader_flood(&node, 2000, Duration::from_secs(5));
    assert!(peak < 512 << 20, "peak RSS {} MB", peak >> 20);
    assert!(
        // Served, not fast: the figure above is the measure (43-342 ms on a quiet machine); a
        // starved machine takes a few seconds.
        slowest < Duration::from_secs(10),
        "normal client waited {slowest:?}"
    );
}
