//! Live membership: a node whose file names only itself and a seed joins a running cluster and
//! replicates both ways; a removed node disappears from every member list, is refused (and not
//! ready) when it comes back, and joins again once re-admitted.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{run_cli_raw, write_config, Node, Ports};

fn member_ids(n: &Node) -> Vec<u64> {
    n.cluster()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect()
}

fn wait_members(n: &Node, want: &[u64]) {
    n.wait_cluster("member list", Duration::from_secs(15), |v| {
        let mut ids: Vec<u64> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        ids.sort_unstable();
        ids == want
    });
}

fn wait_online(n: &Node, sid: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while n.query(&[sid])[0]["online"] != true {
        assert!(
            std::time::Instant::now() < deadline,
            "{sid} never online on node {}",
            n.ports.id
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_node_with_only_a_seed_joins_and_replicates() {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, "");
    let nodes: Vec<Node> = ports
        .iter()
        .map(|p| Node::spawn(*p, cfg.clone(), &[]))
        .collect();
    for n in &nodes {
        n.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    }
    // Node 4's file: itself and a seed (node 2's sync port), nothing else.
    let p4 = Ports::free(4);
    let seed = format!("<seed host=\"localhost\" sync-port=\"{}\"/>", ports[1].sync);
    let cfg4 = write_config(&[p4], &seed);
    let n4 = Node::spawn(p4, cfg4, &[]);
    n4.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    wait_members(&n4, &[1, 2, 3, 4]);
    for n in &nodes {
        wait_members(n, &[1, 2, 3, 4]);
    }
    n4.push("login 4401 1 pc\n");
    wait_online(&nodes[0], "4401");
    nodes[2].push("login 4402 1 mobile\n");
    wait_online(&n4, "4402");
    assert!(
        !n4.log().contains("one-node cluster on purpose"),
        "a seeded node is not alone"
    );
}

#[test]
fn a_removed_node_is_gone_everywhere_and_refused_until_readmitted() {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, "");
    let mut nodes: Vec<Node> = ports
        .iter()
        .map(|p| Node::spawn(*p, cfg.clone(), &[]))
        .collect();
    for n in &nodes {
        n.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    }
    let server = nodes[0].http_addr().to_string();
    // A node cannot remove itself, and an unknown id is refused.
    let out = run_cli_raw(&["remove-node", "1", "--server", &server], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));
    let out = run_cli_raw(&["remove-node", "9", "--server", &server], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    // Node 3 is stopped for good and removed.
    nodes[2].kill();
    let out = run_cli_raw(&["remove-node", "3", "--server", &server], "");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "{\"node\":1,\"removed\":3}"
    );
    wait_members(&nodes[0], &[1, 2]);
    wait_members(&nodes[1], &[1, 2]);
    // It comes back (same file): refused, not ready, and listed nowhere.
    nodes[2] = Node::spawn(ports[2], cfg.clone(), &[]);
    nodes[2].wait_cluster("refused as removed", Duration::from_secs(15), |v| {
        v["ready"] == false
    });
    nodes[2].wait_log("removed from the cluster");
    std::thread::sleep(Duration::from_millis(1_000));
    assert_eq!(
        member_ids(&nodes[0]).len(),
        2,
        "{:?}",
        member_ids(&nodes[0])
    );
    let (status, body) = common::http_get(nodes[2].http_addr(), "/healthz/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("removed"), "{body}");
    // Re-admitted from node 2: it joins again.
    let out = run_cli_raw(
        &[
            "readmit-node",
            "3",
            "--server",
            &nodes[1].http_addr().to_string(),
        ],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    nodes[2].wait_cluster("ready again", Duration::from_secs(15), |v| {
        v["ready"] == true
    });
    wait_members(&nodes[0], &[1, 2, 3]);
}
