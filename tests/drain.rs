//! Draining on SIGTERM, as load balancers need it: not ready at once, still serving for
//! `drain-ms`, then a clean exit; a second signal exits at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_get, write_config, Node, Ports};

/// One node whose file sets `drain-ms`.
fn node_with_drain(drain_ms: u64) -> Node {
    let ports = Ports::free(1);
    let cfg = write_config(&[ports], "");
    let xml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("drain-ms=\"200\"", &format!("drain-ms=\"{drain_ms}\""));
    std::fs::write(&cfg, xml).unwrap();
    let node = Node::spawn(ports, cfg, &[]);
    node.wait_cluster("ready", Duration::from_secs(10), |v| v["ready"] == true);
    node
}

fn signal(node: &Node, sig: &str) {
    let pid = node.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

#[test]
fn sigterm_fails_readiness_at_once_and_keeps_serving_for_drain_ms() {
    let mut node = node_with_drain(1_500);
    assert_eq!(http_get(node.http_addr(), "/healthz/ready").0, 200);
    node.push("login 4242 1 pc\n");
    let sent = Instant::now();
    signal(&node, "-TERM");
    // Readiness fails within 100 ms.
    let failed_after = loop {
        let (status, _) = http_get(node.http_addr(), "/healthz/ready");
        if status == 503 {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_millis(100),
            "/healthz/ready still {status} 100 ms after SIGTERM"
        );
    };
    // Every listener still serves: queries (raw TCP and HTTP) and pool pushes.
    let v = node.query(&["4242"]);
    assert_eq!(v[0]["online"], true);
    let (status, body) = http_get(node.http_addr(), "/v1/presence/4242");
    assert_eq!(status, 200, "{body}");
    let summary = node.push("logout 4242 1 pc\n");
    assert!(summary.contains("1 acked"), "{summary}");
    assert!(
        sent.elapsed() < Duration::from_millis(1_500),
        "the checks took too long"
    );
    // Then it exits cleanly.
    let status = node.terminate_wait();
    let total = sent.elapsed();
    assert!(status.success(), "exit {status:?}\n{}", node.log());
    assert!(
        total >= Duration::from_millis(1_500),
        "exited after {total:?}, before drain-ms"
    );
    common::figure(&format!(
        "drain: /healthz/ready 503 {} ms after SIGTERM, queries and pushes served during drain-ms 1500, exit 0 after {} ms",
        failed_after.as_millis(),
        total.as_millis()
    ));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut node = node_with_drain(30_000);
    signal(&node, "-TERM");
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    signal(&node, "-INT");
    let status = node.terminate_wait();
    assert!(status.success(), "exit {status:?}");
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "took {:?} after the second signal",
        sent.elapsed()
    );
}
