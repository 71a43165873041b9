//! Black-box tests of the multi-server system: several real `presenced` processes on 127.0.0.1
//! replicate, elect masters, fail over, rejoin, sync their clocks, heal after network faults and
//! admit a node they did not know. Each prints the figure it measures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{write_config, Node, Ports};
use presenced_client::{PoolClient, PoolClientOptions, QueryClient};
use presenced_core::model::{ClientType, Sid};
use presenced_core::proto::pool::Event;

fn start_cluster(n: u16, extra: &str) -> (Vec<Node>, std::path::PathBuf) {
    let ports: Vec<Ports> = (1..=n).map(Ports::free).collect();
    let cfg = write_config(&ports, extra);
    let nodes = ports
        .iter()
        .map(|p| Node::spawn(*p, cfg.clone(), &[]))
        .collect();
    (nodes, cfg)
}

fn wait_ready(nodes: &[&Node]) {
    for n in nodes {
        n.wait_cluster("ready", Duration::from_secs(10), |v| v["ready"] == true);
    }
}

fn digest(n: &Node) -> String {
    n.cluster()["digest"].as_str().unwrap().to_owned()
}

/// Waits until every node reports the same digest; returns how long that took.
fn wait_converged(nodes: &[&Node], timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let d: Vec<String> = nodes.iter().map(|n| digest(n)).collect();
        if d.windows(2).all(|w| w[0] == w[1]) {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "digests never converged: {d:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn login(sid: u64, client: ClientType) -> Event {
    Event::Login {
        sid: Sid::new(sid).unwrap(),
        uid: sid,
        client,
        ext: None,
    }
}

fn logout(sid: u64, client: ClientType) -> Event {
    Event::Logout {
        sid: Sid::new(sid).unwrap(),
        uid: sid,
        client,
        ext: None,
    }
}

fn pool(node: &Node, pool: u32) -> PoolClient {
    let mut o = PoolClientOptions::new(node.pool_addr());
    o.pool = pool;
    o.batch = 64;
    o.window = 512;
    PoolClient::connect(o).unwrap()
}

#[test]
fn push_to_node_1_read_from_node_3() {
    let (nodes, _) = start_cluster(3, "");
    wait_ready(&nodes.iter().collect::<Vec<_>>());
    let summary = nodes[0].push("login 10086 1 pc nick=alice\nlogin 10086 1 mobile\npermission 10086 1 deny\nlogout 10086 1 pc\n");
    assert!(summary.contains("4 acked"), "{summary}");
    // Acks wait for a replica, so node 3 may still be a few ms behind node 2: wait for digests.
    let took = wait_converged(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(5));
    common::figure(&format!(
        "replicated to every node in {} ms",
        took.as_millis()
    ));
    let s = &nodes[2].query(&["10086"])[0];
    assert_eq!(s["online"], true);
    assert_eq!(s["clients"], serde_json::json!(["mobile"]));
    assert_eq!(s["accepts_strangers"], false);
    assert_eq!(s["ext"]["nick"], "alice");
    // Roles settle once every node has heard that node 1 is ready.
    nodes[2].wait_cluster("node 1 holds both roles", Duration::from_secs(5), |v| {
        v["time_master"] == 1 && v["data_master"] == 1
    });
    let v = nodes[2].cluster();
    assert_eq!(v["node"], 3);
    assert_eq!(v["records"], 1);
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
}

#[test]
fn acked_updates_survive_sigkill_of_the_receiving_node() {
    let (mut nodes, _) = start_cluster(2, "");
    wait_ready(&nodes.iter().collect::<Vec<_>>());
    let mut c = pool(&nodes[0], 1);
    for sid in 1..=2000 {
        c.send(login(sid, ClientType::Pc)).unwrap();
    }
    c.flush().unwrap();
    assert_eq!(c.acked(), 2000);
    nodes[0].kill();
    let mut q = QueryClient::connect(nodes[1].query_addr(), Duration::from_secs(5)).unwrap();
    let ids: Vec<u64> = (1..=2000).collect();
    let lost = q.query(&ids).unwrap().iter().filter(|s| !s.online).count();
    common::figure(&format!(
        "replica ack: 2000 acked, SIGKILL of the receiving node, updates lost = {lost}"
    ));
    assert_eq!(lost, 0);
}

#[test]
fn master_failover_under_load_and_rejoin() {
    let (mut nodes, cfg) = start_cluster(3, "");
    wait_ready(&nodes.iter().collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    // Load on node 2 throughout.
    let loader = {
        let (stop, acked) = (stop.clone(), acked.clone());
        let mut c = pool(&nodes[1], 2);
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.send(login(i % 5000 + 1, ClientType::Mobile)).unwrap();
                i += 1;
                if i % 200 == 0 {
                    c.flush().unwrap();
                    acked.store(c.acked(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            c.flush().unwrap();
            c.acked()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    nodes[0].kill();
    nodes[1].wait_cluster("node 2 holds both roles", Duration::from_secs(5), |v| {
        v["time_master"] == 2 && v["data_master"] == 2
    });
    let failover = killed.elapsed();
    common::figure(&format!(
        "failover: node 2 holds both roles {} ms after SIGKILL of node 1",
        failover.as_millis()
    ));
    assert!(
        failover <= Duration::from_millis(1500),
        "failover took {failover:?}"
    );
    let before = acked.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        acked.load(Ordering::Relaxed) > before,
        "pushes go on after the failover"
    );
    let mut q = QueryClient::connect(nodes[2].query_addr(), Duration::from_secs(5)).unwrap();
    assert!(q.query(&[1]).unwrap()[0].online, "queries go on");

    // Restart node 1: it catches up, becomes ready, and takes its roles back.
    let ports = nodes[0].ports;
    nodes[0] = Node::spawn(ports, cfg, &[]);
    let rejoined = Instant::now();
    nodes[0].wait_cluster("node 1 ready again", Duration::from_secs(10), |v| {
        v["ready"] == true
    });
    common::figure(&format!(
        "rejoin: node 1 ready {} ms after restart",
        rejoined.elapsed().as_millis()
    ));
    stop.store(true, Ordering::Relaxed);
    let total = loader.join().unwrap();
    let took = wait_converged(&nodes.iter().collect::<Vec<_>>(), Duration::from_secs(10));
    common::figure(&format!(
        "after rejoin: {total} updates acked, digests equal {} ms after load stopped",
        took.as_millis()
    ));
    for n in &nodes {
        n.wait_cluster("node 1 is master again", Duration::from_secs(5), |v| {
            v["time_master"] == 1 && v["data_master"] == 1
        });
    }
}

#[test]
fn skewed_clocks_converge_within_tolerance() {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, "");
    let skew_ms = [0i64, -2000, 3000];
    let nodes: Vec<Node> = ports
        .iter()
        .zip(skew_ms)
        .map(|(p, s)| Node::spawn(*p, cfg.clone(), &["--clock-offset-ms", &s.to_string()]))
        .collect();
    let start = Instant::now();
    // cluster time = local clock (true time + skew) + correction, so the residual error of node
    // i against node 1 is (skew_i + correction_i) - (skew_1 + correction_1), exactly.
    let tolerance_us = 2000i64;
    let residual = loop {
        let errs: Vec<i64> = nodes
            .iter()
            .zip(skew_ms)
            .map(|(n, s)| s * 1000 + n.cluster()["clock_offset_us"].as_i64().unwrap())
            .collect();
        let worst = errs.iter().map(|e| (e - errs[0]).abs()).max().unwrap();
        if worst <= tolerance_us {
            break worst;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "clocks still apart by {worst} µs: {errs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    common::figure(&format!(
        "clock sync: skews -2 s/+3 s agree within {} ms, residual clock error {residual} µs",
        start.elapsed().as_millis()
    ));
    // And what clients see: cluster_time_ms of all nodes read back to back is close.
    let t: Vec<i64> = nodes
        .iter()
        .map(|n| n.cluster()["cluster_time_ms"].as_i64().unwrap())
        .collect();
    assert!(
        t.iter().max().unwrap() - t.iter().min().unwrap() < 100,
        "{t:?}"
    );
}

#[test]
fn network_faults_heal_to_the_last_writer_wins_oracle() {
    // Two nodes whose replication links both run through a fault-injecting proxy.
    let (p1, p2) = (Ports::free(1), Ports::free(2));
    let to1 = proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], p1.sync)));
    let to2 = proxy::Proxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], p2.sync)));
    let via = |p: Ports, proxy: &proxy::Proxy| Ports {
        sync: proxy.addr.port(),
        ..p
    };
    let cfg1 = write_config(&[p1, via(p2, &to2)], "");
    let cfg2 = write_config(&[via(p1, &to1), p2], "");
    let n1 = Node::spawn(p1, cfg1, &[]);
    let n2 = Node::spawn(p2, cfg2, &[]);
    wait_ready(&[&n1, &n2]);

    // Pool A (on node 1) owns pc, mobile and the permission; pool B (on node 2) owns web and
    // pad, for the same users: every register has one writer, so the last acked write per
    // register is the oracle, while records are merged from both nodes.
    let users = 300u64;
    let writer = |node: &Node, pool_id: u32, clients: [ClientType; 2], seed: u64| {
        let mut c = pool(node, pool_id);
        let mut last: HashMap<(u64, ClientType), bool> = HashMap::new();
        let mut x = seed;
        for i in 0..3000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let sid = x % users + 1;
            let client = clients[(i % 2) as usize];
            let on = x % 3 != 0;
            c.send(if on {
                login(sid, client)
            } else {
                logout(sid, client)
            })
            .unwrap();
            last.insert((sid, client), on);
            if i % 300 == 0 {
                if let Err(e) = c.flush() {
                    panic!(
                        "flush failed: {e}\nnode {} log:\n{}",
                        node.ports.id,
                        node.log()
                    );
                }
            }
        }
        c.flush().unwrap();
        (last, c.acked())
    };
    let faults = std::thread::spawn({
        move || -> (proxy::Proxy, proxy::Proxy) {
            for step in 0..6 {
                match step % 3 {
                    0 => {
                        to1.cut();
                        to2.cut();
                    }
                    1 => {
                        to1.set(proxy::Mode::Delay, 30);
                        to2.set(proxy::Mode::Delay, 30);
                    }
                    _ => {
                        to1.set(proxy::Mode::Drop, 0);
                        to2.set(proxy::Mode::Drop, 0);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
                to1.set(proxy::Mode::Pass, 0);
                to2.set(proxy::Mode::Pass, 0);
            }
            (to1, to2)
        }
    });
    let (oracle_a, acked_a) = writer(&n1, 1, [ClientType::Pc, ClientType::Mobile], 0x1234_5678);
    let (oracle_b, acked_b) = writer(&n2, 2, [ClientType::Web, ClientType::Pad], 0x9abc_def1);
    let (to1, to2) = faults.join().unwrap();
    // Heal: cut once more so both links reconnect through a passing proxy.
    to1.cut();
    to2.cut();
    let took = wait_converged(&[&n1, &n2], Duration::from_secs(15));
    common::figure(&format!(
        "faults: converged {} ms after heal ({} + {} updates acked)",
        took.as_millis(),
        acked_a,
        acked_b
    ));
    let ids: Vec<u64> = (1..=users).collect();
    let mut lost = 0;
    for node in [&n1, &n2] {
        let statuses = QueryClient::connect(node.query_addr(), Duration::from_secs(5))
            .unwrap()
            .query(&ids)
            .unwrap();
        for s in statuses {
            for c in ClientType::ALL {
                let want = oracle_a
                    .get(&(s.sid.get(), c))
                    .or(oracle_b.get(&(s.sid.get(), c)))
                    .copied()
                    .unwrap_or(false);
                if s.clients.contains(c) != want {
                    lost += 1;
                }
            }
        }
    }
    common::figure(&format!("faults: updates lost = {lost}"));
    assert_eq!(lost, 0, "state differs from the last-writer-wins oracle");
}

#[test]
fn a_fourth_node_joins_a_running_cluster() {
    let (nodes, _) = start_cluster(3, "");
    wait_ready(&nodes.iter().collect::<Vec<_>>());
    let events: String = (1..=500).map(|i| format!("login {i} {i} web\n")).collect();
    nodes[0].push(&events);
    // Node 4's own file lists all four; the running nodes' files do not list it.
    let mut all: Vec<Ports> = nodes.iter().map(|n| n.ports).collect();
    let p4 = Ports::free(4);
    all.push(p4);
    let cfg4 = write_config(&all, "");
    let n4 = Node::spawn(p4, cfg4, &[]);
    let start = Instant::now();
    n4.wait_cluster("node 4 ready", Duration::from_secs(10), |v| {
        v["ready"] == true
    });
    common::figure(&format!(
        "join: node 4 ready {} ms after start",
        start.elapsed().as_millis()
    ));
    let mut every: Vec<&Node> = nodes.iter().collect();
    every.push(&n4);
    wait_converged(&every, Duration::from_secs(5));
    for n in &every {
        n.wait_cluster("four members", Duration::from_secs(5), |v| {
            v["members"]
                .as_array()
                .is_some_and(|m| m.len() == 4 && m.iter().all(|x| x["alive"] == true))
        });
    }
    assert_eq!(n4.query(&["250"])[0]["online"], true);
    assert!(
        nodes[0].log().contains("node joined the cluster"),
        "{}",
        nodes[0].log()
    );
}
