//! Black-box tests of what an ack promises, and of readiness: strict `replica` acks hold while
//! no peer is reachable (and say so in a metric), a restarted node is ready only with a clock the
//! time master confirmed for this incarnation, and roles are not claimed before they are known.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{http_get, write_config, Node, Ports};
use presenced_core::model::{ClientType, Sid};
use presenced_core::proto::pool::{ClientFrame, Event, Hello, ServerFrame};
use presenced_core::wire::split_frame;

fn start_cluster(extra: &str, args: &[&[&str]]) -> (Vec<Node>, std::path::PathBuf) {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, extra);
    let nodes = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Node::spawn(*p, cfg.clone(), args.get(i).copied().unwrap_or(&[])))
        .collect();
    (nodes, cfg)
}

fn wait_ready(n: &Node) {
    n.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
}

fn signal(n: &Node, sig: &str) {
    let pid = n.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

fn metric(n: &Node, name: &str) -> f64 {
    let (_, body) = http_get(n.http_addr(), "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
}

/// Reads server frames from `s` until `f` says stop or `wait` passes.
fn read_frames(s: &mut TcpStream, wait: Duration, mut f: impl FnMut(&ServerFrame) -> bool) {
    let deadline = Instant::now() + wait;
    let mut rbuf = Vec::new();
    let mut buf = [0u8; 4096];
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    while Instant::now() < deadline {
        if let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                return;
            }
            rbuf.extend_from_slice(&buf[..n]);
        }
        while let Ok(Some((ty, body, used))) = split_frame(&rbuf, 1 << 20) {
            let frame = ServerFrame::decode(ty, body).unwrap();
            rbuf.drain(..used);
            if !f(&frame) {
                return;
            }
        }
    }
}

#[test]
fn strict_replica_acks_wait_for_a_peer_and_the_metric_shows_it() {
    let (nodes, _) = start_cluster("<replication ack=\"replica\"/>", &[]);
    for n in &nodes {
        wait_ready(n);
    }
    let mut s = TcpStream::connect(nodes[0].pool_addr()).unwrap();
    let mut out = Vec::new();
    ClientFrame::Hello(Hello {
        pool: 1,
        stream: 42,
        resume_from: 1,
        token: Vec::new(),
    })
    .encode(&mut out);
    s.write_all(&out).unwrap();
    let mut welcomed = false;
    read_frames(&mut s, Duration::from_secs(5), |f| {
        welcomed = matches!(f, ServerFrame::Welcome { .. });
        false
    });
    assert!(welcomed);
    // Both peers stop: nobody can take a replica.
    signal(&nodes[1], "-STOP");
    signal(&nodes[2], "-STOP");
    out.clear();
    ClientFrame::Events {
        first_seq: 1,
        events: vec![Event::Login {
            sid: Sid::new(777).unwrap(),
            uid: 777,
            client: ClientType::Pc,
            ext: None,
        }],
    }
    .encode(&mut out);
    s.write_all(&out).unwrap();
    let mut early = None;
    read_frames(&mut s, Duration::from_millis(2_500), |f| {
        early = Some(f.clone());
        false
    });
    let held = metric(&nodes[0], "presenced_pool_acks_held");
    signal(&nodes[1], "-CONT");
    signal(&nodes[2], "-CONT");
    assert_eq!(early, None, "acked while no peer could have the event");
    assert!(held >= 1.0, "held-acks metric did not rise: {held}");
    let start = Instant::now();
    let mut acked = None;
    read_frames(&mut s, Duration::from_secs(10), |f| {
        acked = Some(f.clone());
        false
    });
    assert_eq!(acked, Some(ServerFrame::Ack(1)));
    common::figure(&format!(
        "strict replica acks: no ack while both peers were SIGSTOPped (held-acks metric {held}), ack {} ms after SIGCONT",
        start.elapsed().as_millis()
    ));
    // A peer has it the moment the ack arrives (whichever acked first).
    let on_peer = [&nodes[1], &nodes[2]]
        .iter()
        .any(|n| n.query(&["777"])[0]["online"] == true);
    assert!(on_peer, "acked, but no peer has the event");
}

#[test]
fn a_restarted_node_is_ready_only_with_a_confirmed_clock() {
    let (mut nodes, cfg) = start_cluster("", &[]);
    for n in &nodes {
        wait_ready(n);
    }
    let ports = nodes[2].ports;
    nodes[2].kill();
    nodes[2] = Node::spawn(ports, cfg, &["--clock-offset-ms", "3000"]);
    // Poll as fast as possible: the first view that says ready must carry the correction.
    let start = Instant::now();
    let mut nulls_seen = false;
    let first_ready = loop {
        let (status, body) = http_get(nodes[2].http_addr(), "/v1/cluster");
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            if v["time_master"].is_null() {
                nulls_seen = true;
                assert!(v["data_master"].is_null(), "{v}");
                assert_eq!(v["ready"], false, "ready without known roles: {v}");
            }
            if v["ready"] == true {
                break v;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never ready");
        std::thread::sleep(Duration::from_millis(2));
    };
    let offset = first_ready["clock_offset_us"].as_i64().unwrap();
    let tolerance_us = 2_000 + 5_000;
    assert!(
        (offset + 3_000_000).abs() <= tolerance_us,
        "first ready view has clock_offset_us {offset}, want about -3000000: {first_ready}"
    );
    common::figure(&format!(
        "restart with --clock-offset-ms 3000: first ready view after {} ms with clock_offset_us {offset} (roles reported null before: {nulls_seen})",
        start.elapsed().as_millis()
    ));
}

#[test]
fn pool_input_before_ready_gets_a_clear_unavailable_error() {
    // A node whose peers never answer stays not ready for down-after-ms (5 s here).
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, "");
    let xml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("down-after-ms=\"500\"", "down-after-ms=\"5000\"");
    std::fs::write(&cfg, xml).unwrap();
    let node = Node::spawn(ports[2], cfg, &[]);
    let mut s = TcpStream::connect(node.pool_addr()).unwrap();
    let mut out = Vec::new();
    ClientFrame::Hello(Hello {
        pool: 1,
        stream: 1,
        resume_from: 1,
        token: Vec::new(),
    })
    .encode(&mut out);
    s.write_all(&out).unwrap();
    let mut got = None;
    read_frames(&mut s, Duration::from_secs(5), |f| {
        got = Some(f.clone());
        false
    });
    match got {
        Some(ServerFrame::Error { code, message }) => {
            assert_eq!(code, 8, "{message}");
            assert!(message.starts_with("not ready"), "{message}");
        }
        other => panic!("expected ERROR 8 before ready, got {other:?}"),
    }
}
