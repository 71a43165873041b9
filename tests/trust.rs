//! The cluster's trust boundary, tried from outside with real processes: forged replication
//! peers (records from the end of time, leaping terms, thousands of fake members), forged
//! time-sync datagrams, a node with the wrong secret, and strangers flooding the sync port
//! before any handshake. Each attack runs against a node without a cluster secret (the bounds
//! that hold whatever the secret) and, where the secret changes the outcome, with one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{http_get, write_config, Node, Ports};
use presenced_core::cluster::repl::{Gossip, Msg, NodeInfo};
use presenced_core::cluster::timesync::{Envelope, Packet};
use presenced_core::model::{Change, ClientType, Record, Update};
use presenced_core::wire::split_frame;
use presenced_core::{Sid, Stamp};

const SECRET: &[u8] = b"a cluster secret of more than thirty-two bytes\n";

/// `<security cluster-secret-file>` with `secret` written next to the cluster file at `cfg`.
fn with_secret(cfg: &Path, secret: &[u8]) {
    std::fs::write(cfg.parent().unwrap().join("cluster.key"), secret).unwrap();
    let xml = std::fs::read_to_string(cfg).unwrap().replace(
        "<cluster name=\"test\">",
        "<cluster name=\"test\">\n  <security cluster-secret-file=\"cluster.key\"/>",
    );
    std::fs::write(cfg, xml).unwrap();
}

fn errors(n: &Node, kind: &str) -> u64 {
    let (_, body) = http_get(n.http_addr(), "/metrics");
    let needle = format!("presenced_errors_total{{kind=\"{kind}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// `errors(n, kind)` once it reached `at_least`, polled for up to 10 s (the cluster thread
/// publishes its counts after it handles a frame; a loaded machine may take a while).
fn errors_at_least(n: &Node, kind: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = errors(n, kind);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn fake(id: u16, port: u16) -> NodeInfo {
    NodeInfo {
        id,
        host: "127.0.0.1".parse().unwrap(),
        pool_port: port,
        query_port: port,
        sync_port: port,
        time_port: port,
        http_port: port,
    }
}

/// Connects to `n`'s sync port and sends `HELLO` as node `id` (with `auth` and `nonce` as given);
/// returns the connection and the `HELLO` frame's bytes.
fn send_hello(n: &Node, id: u16, auth: bool, nonce: [u8; 16]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", n.ports.sync)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut out = Vec::new();
    Msg::Hello {
        cluster: "test".into(),
        from: fake(id, 9),
        incarnation: 5,
        auth,
        nonce,
    }
    .encode(&mut out);
    s.write_all(&out).unwrap();
    (s, out)
}

/// A forger on the sync port: sends `HELLO` as node `id` (no authentication) and returns the
/// connection and the first answer.
fn forge_hello(n: &Node, id: u16) -> (TcpStream, Msg) {
    let (mut s, _) = send_hello(n, id, false, [0; 16]);
    let answer = read_msg(&mut s).expect("an answer to HELLO");
    (s, answer)
}

fn read_msg(s: &mut TcpStream) -> Option<Msg> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Ok(Some((ty, body, _))) = split_frame(&buf, 64 << 20) {
            return Msg::decode(ty, body).ok();
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
        }
    }
}

fn send(s: &mut TcpStream, m: &Msg) {
    let mut out = Vec::new();
    m.encode(&mut out);
    let _ = s.write_all(&out);
}

fn status(n: &Node, sid: &str) -> serde_json::Value {
    let (code, body) = http_get(n.http_addr(), &format!("/v1/presence/{sid}"));
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_forged_record_from_the_end_of_time_changes_nothing() {
    let node = Node::start();
    node.wait_cluster("ready", Duration::from_secs(10), |v| v["ready"] == true);
    let (mut s, answer) = forge_hello(&node, 77);
    assert!(matches!(answer, Msg::Welcome { .. }), "{answer:?}");
    let end_of_time = Stamp::new(((1u64 << 48) - 1) << 16 | 0xFFFF, 77);
    let u = Update {
        uid: 4242,
        pool: 1,
        change: Change::Login(ClientType::Pc),
        ext: None,
    };
    send(
        &mut s,
        &Msg::Updates {
            upto_seq: 1,
            records: vec![(
                Sid::new(4242).unwrap(),
                Record::from_update(end_of_time, &u),
            )],
        },
    );
    // Refused, never acknowledged.
    match read_msg(&mut s) {
        Some(Msg::Error { message, .. }) => assert!(message.contains("ahead"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(errors_at_least(&node, "repl_stamp_ahead", 1), 1);
    // The user's real changes still win: login, then logout, through the pool.
    node.push("login 4242 1 pc\nlogout 4242 1 pc\n");
    let st = status(&node, "4242");
    assert_eq!(st["online"], false, "{st}");
    let changed = st["changed_at"].as_str().unwrap();
    assert!(
        changed.starts_with("20") && !changed.starts_with("9999"),
        "{changed}"
    );
    let year: u32 = changed[..4].parse().unwrap();
    assert!(year < 2100, "{changed}");
}

#[test]
fn forged_terms_and_members_are_bounded_and_fake_members_expire() {
    let node = Node::start_with(r#"<limits max-gossip-members="64"/>"#);
    node.wait_cluster("ready", Duration::from_secs(10), |v| v["ready"] == true);
    let term = node.cluster()["term"].as_u64().unwrap();
    let (mut s, _) = forge_hello(&node, 77);
    // Fake members on ports nobody listens on (refused at once), and a term of a million.
    let members: Vec<Gossip> = (1000..1060)
        .map(|id| Gossip {
            info: fake(id, 1),
            alive: true,
        })
        .collect();
    for _ in 0..5 {
        send(
            &mut s,
            &Msg::Heartbeat {
                term: 1_000_000,
                ready: true,
                records: 0,
                digest: 0,
                members: members.clone(),
                removals: Vec::new(),
            },
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Five leaps of a million move the term by five bounded steps at most.
    let view = node.cluster();
    let bound = term + 5 * presenced_core::cluster::node::MAX_TERM_JUMP;
    assert!(view["term"].as_u64().unwrap() <= bound, "{view}");
    let count = view["members"].as_array().unwrap().len();
    assert!(count <= 65, "{count} members (cap 64 plus this node)");
    // Descriptors stay bounded while the node dials fake members.
    let pid = node.pid().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    assert!(fds < 200, "{fds} descriptors open");
    // The forger leaves; the members it invented were never heard from and expire (10 x
    // down-after = 5 s), and do not come back.
    drop(s);
    node.wait_cluster("fake members expired", Duration::from_secs(15), |v| {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"].as_u64().unwrap() < 1000)
    });
    assert!(errors_at_least(&node, "repl_term_leap", 1) >= 1);
}

#[test]
fn a_forged_time_datagram_moves_no_clock() {
    let ports = [Ports::free(1), Ports::free(2)];
    let cfg = write_config(&ports, "");
    let n1 = Node::spawn(ports[0], cfg.clone(), &[]);
    let n2 = Node::spawn(ports[1], cfg, &[]);
    n2.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    let before = n2.cluster();
    let term = before["term"].as_u64().unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], ports[1].time));
    // "From the time master", current term, the largest probe number, +1 h; five of them at
    // +23 h. The forger cannot know node 1's incarnation (random per start, 64 bits).
    for (i, adjust_us) in [
        3_600_000_000i64,
        82_800_000_000,
        82_800_000_000,
        82_800_000_000,
        82_800_000_000,
        82_800_000_000,
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = Vec::new();
        Packet::Correct {
            term,
            from: 1,
            seq: u32::MAX - i as u32,
            adjust_us,
        }
        .encode(
            Envelope {
                incarnation: 0x1234_5678_9abc_def0 + i as u64,
                counter: u64::MAX - i as u64,
            },
            None,
            &mut d,
        );
        udp.send_to(&d, to).unwrap();
    }
    // Once all six were handled (and refused), the clock is where it was.
    assert!(errors_at_least(&n2, "timesync_rejected", 6) >= 6);
    let after = n2.cluster();
    let offset = after["clock_offset_us"].as_i64().unwrap();
    assert!(offset.abs() < 1_000_000, "clock moved: {after}");
    // The real master's corrections still flow: node 2 stays ready and in sync.
    assert_eq!(after["ready"], true, "{after}");
    drop(n1);
}

#[test]
fn with_a_secret_a_wrong_secret_node_never_joins_and_a_right_one_does() {
    let ports = [Ports::free(1), Ports::free(2), Ports::free(3)];
    let good = write_config(&ports, "");
    with_secret(&good, SECRET);
    let bad = write_config(&ports, "");
    with_secret(&bad, b"another secret, also longer than thirty-two bytes");
    let n1 = Node::spawn(ports[0], good.clone(), &[]);
    let n2 = Node::spawn(ports[1], good, &[]);
    let n3 = Node::spawn(ports[2], bad, &[]);
    let alive = |v: &serde_json::Value, id: u64| {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == id && m["alive"] == true)
    };
    n1.wait_cluster("node 2 alive", Duration::from_secs(15), |v| alive(v, 2));
    n1.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    n2.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    // Data flows between the right-secret nodes...
    let out = common::run_cli_raw(
        &["push", "--pool", &n1.pool_addr().to_string()],
        "login 500 1 mobile\n",
    );
    assert!(
        out.status.success(),
        "push failed: {}\nnode 1:\n{}\nnode 2:\n{}",
        String::from_utf8_lossy(&out.stderr),
        n1.log(),
        n2.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&n2, "500")["online"] != true {
        assert!(Instant::now() < deadline, "node 2 never saw the login");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... never from or to the wrong-secret one, which is refused and counted (and, alone
    // under `replica` acks, never ready to take writes).
    std::thread::sleep(Duration::from_secs(2));
    for n in [&n1, &n2] {
        let v = n.cluster();
        assert!(!alive(&v, 3), "node {} sees node 3 alive: {v}", n.ports.id);
    }
    let v3 = n3.cluster();
    assert!(!alive(&v3, 1) && !alive(&v3, 2), "node 3 sees a peer: {v3}");
    assert_eq!(status(&n3, "500")["known"], false);
    assert!(errors_at_least(&n1, "sync_auth_failed", 1) >= 1);
    assert!(
        n1.log().contains("failed authentication"),
        "no log line:\n{}",
        n1.log()
    );
    // A forger without the secret gets no further than HELLO.
    let (_, answer) = forge_hello(&n1, 77);
    match answer {
        Msg::Error { code, message } => {
            assert_eq!(code, 3, "{message}");
        }
        other => panic!("expected ERROR 3, got {other:?}"),
    }
}

#[test]
fn with_a_secret_forged_datagrams_fail_authentication() {
    let ports = [Ports::free(1), Ports::free(2)];
    let cfg = write_config(&ports, "");
    with_secret(&cfg, SECRET);
    let _n1 = Node::spawn(ports[0], cfg.clone(), &[]);
    let n2 = Node::spawn(ports[1], cfg, &[]);
    n2.wait_cluster("ready", Duration::from_secs(15), |v| v["ready"] == true);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut d = Vec::new();
    Packet::Correct {
        term: n2.cluster()["term"].as_u64().unwrap(),
        from: 1,
        seq: 1,
        adjust_us: 3_600_000_000,
    }
    .encode(
        Envelope {
            incarnation: 1,
            counter: 1,
        },
        None,
        &mut d,
    );
    udp.send_to(&d, ("127.0.0.1", ports[1].time)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while errors(&n2, "timesync_auth_failed") == 0 {
        assert!(
            Instant::now() < deadline,
            "the forged datagram was not counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let offset = n2.cluster()["clock_offset_us"].as_i64().unwrap();
    assert!(offset.abs() < 1_000_000, "clock moved by {offset} µs");
}

/// Memory of the process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn strangers_on_the_sync_port_cannot_grow_memory_or_hold_slots() {
    let node = Node::start_with(r#"<limits handshake-timeout-ms="1000"/>"#);
    let pid = node.pid().unwrap();
    let sync = SocketAddr::from(([127, 0, 0, 1], node.ports.sync));
    // 40 connections, each sending 60 MiB that claim to be one frame, before any handshake.
    let senders: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(sync) else {
                    return;
                };
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut frame = (60u32 << 20).to_be_bytes().to_vec();
                frame.push(0x01);
                let _ = s.write_all(&frame);
                let chunk = vec![0x41u8; 1 << 20];
                for _ in 0..60 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    let mut peak = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    for s in senders {
        s.join().unwrap();
    }
    common::figure(&format!(
        "trust: peak RSS with 40 x 60 MiB pre-handshake senders on the sync port: {} MB",
        peak >> 20
    ));
    assert!(peak < 256 << 20, "RSS reached {} MB", peak >> 20);
    // A stranger trickling a HELLO one byte at a time is cut at the handshake deadline.
    let mut s = TcpStream::connect(sync).unwrap();
    let mut hello = Vec::new();
    Msg::Hello {
        cluster: "test".into(),
        from: fake(90, 9),
        incarnation: 1,
        auth: false,
        nonce: [0; 16],
    }
    .encode(&mut hello);
    let start = Instant::now();
    let mut cut = None;
    for b in hello.iter().take(hello.len() - 1).cycle() {
        if s.write_all(&[*b]).is_err() {
            cut = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let cut = cut.expect("a trickling stranger was never cut");
    assert!(cut < Duration::from_secs(3), "cut after {cut:?}");
    assert!(errors_at_least(&node, "sync_handshake_timeout", 1) >= 1);
}

/// A member that holds the secret (compromised, or buggy): the authenticated handshake done
/// the way a node does it, then sealed frames.
struct Member {
    s: TcpStream,
    session: presenced_core::cluster::auth::Session,
    buf: Vec<u8>,
}

impl Member {
    fn join(n: &Node, id: u16, secret: &[u8]) -> (Self, Msg) {
        use presenced_core::cluster::auth::{ClusterKey, Side};
        let key = ClusterKey::new(secret.strip_suffix(b"\n").unwrap_or(secret));
        let (mut s, mut out) = send_hello(n, id, true, [9; 16]);
        let hello_body = out[5..].to_vec();
        let Some(Msg::Challenge { nonce, proof }) = read_msg(&mut s) else {
            panic!("no CHALLENGE");
        };
        key.verify_challenge(&hello_body, &nonce, &proof).unwrap();
        out.clear();
        Msg::Auth {
            proof: key.auth_proof(&hello_body, &nonce),
        }
        .encode(&mut out);
        s.write_all(&out).unwrap();
        let mut m = Self {
            s,
            session: key.session(&hello_body, &nonce, Side::Sender),
            buf: Vec::new(),
        };
        let welcome = m.recv().expect("WELCOME");
        (m, welcome)
    }

    fn send(&mut self, msg: &Msg) {
        let mut out = Vec::new();
        msg.encode(&mut out);
        self.session.seal(&mut out, 0);
        let _ = self.s.write_all(&out);
    }

    fn recv(&mut self) -> Option<Msg> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Ok(Some((ty, _, n))) = split_frame(&self.buf, 64 << 20) {
                let frame: Vec<u8> = self.buf.drain(..n).collect();
                let body = self.session.open(&frame).expect("a sealed frame");
                return Msg::decode(ty, body).ok();
            }
            match self.s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
    }
}

#[test]
fn with_a_secret_a_compromised_member_is_still_bounded() {
    let ports = Ports::free(1);
    let cfg = write_config(&[ports], "");
    with_secret(&cfg, SECRET);
    let node = Node::spawn(ports, cfg, &[]);
    node.wait_cluster("ready", Duration::from_secs(10), |v| v["ready"] == true);
    let term = node.cluster()["term"].as_u64().unwrap();
    let (mut m, welcome) = Member::join(&node, 77, SECRET);
    assert!(matches!(welcome, Msg::Welcome { .. }), "{welcome:?}");
    m.send(&Msg::Heartbeat {
        term: u64::MAX,
        ready: true,
        records: 0,
        digest: 0,
        members: Vec::new(),
        removals: Vec::new(),
    });
    let end_of_time = Stamp::new(((1u64 << 48) - 1) << 16, 77);
    let u = Update {
        uid: 4343,
        pool: 1,
        change: Change::Login(ClientType::Web),
        ext: None,
    };
    m.send(&Msg::Updates {
        upto_seq: 1,
        records: vec![(
            Sid::new(4343).unwrap(),
            Record::from_update(end_of_time, &u),
        )],
    });
    match m.recv() {
        Some(Msg::Error { message, .. }) => assert!(message.contains("ahead"), "{message}"),
        other => panic!("expected ERROR, got {other:?}"),
    }
    assert_eq!(status(&node, "4343")["known"], false);
    let now_term = node.cluster()["term"].as_u64().unwrap();
    assert!(
        now_term <= term + presenced_core::cluster::node::MAX_TERM_JUMP,
        "term {term} -> {now_term}"
    );
    assert_eq!(errors_at_least(&node, "repl_stamp_ahead", 1), 1);
}
