//! Black-box tests of the fail-over of `presenced push --pool A --pool B` and
//! `presenced query --server A --server B`: a dead first address (refused, accepting but never
//! answering, a stopped node) is left for the next one, and host names are resolved. Also the
//! `uid` of `query`'s output and the one-line error for a missing argument.
//!
//! An address that never answers costs the CLI's 2 s handshake timeout; nothing here waits
//! longer than that per address.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, run_cli, run_cli_raw, Node};

const EVENTS: &str = "login 10086 77 pc nick=alice\nlogin 10086 77 mobile\nlogout 10086 77 pc\n";

/// An address nobody listens on: connecting is refused.
fn refused_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A listener that completes TCP handshakes (the kernel does, from its backlog) but is never
/// read: a client's `HELLO` goes unanswered. Keep it alive for the test.
fn silent_listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    (l, addr)
}

/// Runs `push` with `--pool` for each address, then checks that every event was acked, that the
/// node has them, and that it took less than `within`.
#[track_caller]
fn check_push(pools: &[&str], node: &Node, within: Duration) {
    let mut args = vec!["push"];
    for p in pools {
        args.extend(["--pool", p]);
    }
    let start = Instant::now();
    let summary = run_cli(&args, EVENTS);
    let took = start.elapsed();
    assert!(
        summary.contains("pushed 3 events") && summary.contains("3 acked"),
        "{summary}"
    );
    assert!(took < within, "push took {took:?}");
    let s = &node.query(&["10086"])[0];
    assert_eq!(s["clients"], serde_json::json!(["mobile"]), "{s}");
}

/// Runs `query` with `--server` for each address and checks the answer for a user pushed before.
#[track_caller]
fn check_query(servers: &[&str], within: Duration) {
    let mut args = vec!["query"];
    for s in servers {
        args.extend(["--server", s]);
    }
    args.push("10086");
    let start = Instant::now();
    let out = run_cli(&args, "");
    let took = start.elapsed();
    let s: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(s["id"], "10086", "{out}");
    assert_eq!(s["online"], true, "{out}");
    assert!(took < within, "query took {took:?}");
}

#[test]
fn push_skips_a_refused_address() {
    let node = Node::start();
    let live = node.pool_addr().to_string();
    check_push(&[&refused_addr(), &live], &node, Duration::from_secs(2));
}

#[test]
fn push_skips_an_address_that_accepts_but_never_answers() {
    let node = Node::start();
    let (_silent, dead) = silent_listener();
    let live = node.pool_addr().to_string();
    // One handshake timeout (2 s) on the silent address, then the live one.
    check_push(&[&dead, &live], &node, Duration::from_secs(5));
}

#[test]
fn push_skips_a_stopped_node() {
    let stopped = Node::start();
    let node = Node::start();
    let pid = stopped.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let dead = stopped.pool_addr().to_string();
    let live = node.pool_addr().to_string();
    check_push(&[&dead, &live], &node, Duration::from_secs(5));
    // The stopped node is killed (SIGKILL ends a stopped process too) when dropped.
}

#[test]
fn push_resolves_host_names() {
    let node = Node::start();
    let live = format!("localhost:{}", node.ports.pool);
    check_push(&[&refused_addr(), &live], &node, Duration::from_secs(2));
}

#[test]
fn query_skips_a_refused_address_and_resolves_host_names() {
    let node = Node::start();
    node.push(EVENTS);
    let live = node.query_addr().to_string();
    let named = format!("localhost:{}", node.ports.query);
    check_query(&[&refused_addr(), &live], Duration::from_secs(2));
    check_query(&[&refused_addr(), &named], Duration::from_secs(2));
    check_query(&[&named], Duration::from_secs(2));
}

#[test]
fn query_skips_an_address_that_accepts_but_never_answers() {
    let node = Node::start();
    node.push(EVENTS);
    let (_silent, dead) = silent_listener();
    let live = node.query_addr().to_string();
    check_query(&[&dead, &live], Duration::from_secs(5));
}

#[test]
fn query_names_every_address_when_none_answers() {
    let (a, b) = (refused_addr(), refused_addr());
    let start = Instant::now();
    let out = run_cli_raw(&["query", "--server", &a, "--server", &b, "1"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot query") && last.contains(&a) && last.contains(&b),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "gave up after {:?}",
        start.elapsed()
    );
}

#[test]
fn query_prints_the_uid() {
    let node = Node::start();
    node.push(EVENTS);
    let out = node.query(&["10086", "10010"]);
    assert_eq!(out[0]["uid"], "77", "{}", out[0]);
    assert_eq!(out[1]["known"], false);
    assert_eq!(out[1]["uid"], serde_json::Value::Null, "{}", out[1]);
}

/// Regression: clap puts the names of missing arguments on the lines under its message, and the
/// one-line error kept only the first line: "the following required arguments were not
/// provided: (see --help)", naming nothing.
#[test]
fn a_missing_argument_is_named() {
    let out = run_cli_raw(&["query", "--server", "127.0.0.1:1"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("required arguments were not provided") && err.contains("<SID>"),
        "{err}"
    );
}

#[test]
fn a_bad_address_is_one_line_naming_the_flag() {
    for bad in ["nohost", "::1:7400", "localhost:0"] {
        let out = run_cli_raw(&["push", "--pool", "127.0.0.1:1", "--pool", bad], "");
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--pool") && err.contains(bad), "{err}");
    }
}
