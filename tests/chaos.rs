//! Jepsen-style test of the central promise: once an event is acked it is in the cluster and it
//! stays, and every node ends with the same state.
//!
//! Three real nodes (`ack="replica"`), several writers speaking the pool protocol with the
//! client algorithm of docs/protocols/pool.md (re-send un-acked events after 1 s without an ack,
//! on a new connection to the next node, closing the old one with a normal FIN), and a nemesis
//! that kills, pauses (SIGSTOP/SIGCONT), pauses-then-kills and restarts one node at a time,
//! waiting until every node is ready again before the next fault. At the end every writer waits
//! until all its events are acked, and every user on every node is checked against the state the
//! writers' event logs imply.
//!
//! Seeded: `PRESENCED_CHAOS_SEED=N` replays one run (the seed is printed);
//! `PRESENCED_CHAOS_SECS` sets the length of the fault phase (default 30).
//! The control (`control_local_acks_with_a_slow_flush_lose_updates`) shows the check can fail.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{figure, http_get, write_config, Node, Ports};
use presenced_client::QueryClient;
use presenced_core::model::{ClientType, Sid};
use presenced_core::proto::pool::{ClientFrame, Event, Hello, ServerFrame};
use presenced_core::wire::split_frame;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a user's status must be after a writer's events, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Expected {
    clients: u8,
    allow: bool,
}

impl Expected {
    fn apply(&mut self, e: &Event) {
        match e {
            Event::Login { client, .. } => self.clients |= 1 << *client as u8,
            Event::Logout { client, .. } => self.clients &= !(1 << *client as u8),
            Event::Permission { allow, .. } => self.allow = *allow,
            _ => {}
        }
    }
}

const USERS_PER_WRITER: u64 = 300;
/// Un-acked events a writer lets pile up before it waits.
const WINDOW: usize = 400;
const RESEND_AFTER: Duration = Duration::from_secs(1);

fn event(rng: &mut Rng, sid: u64) -> Event {
    let sid_ = Sid::new(sid).unwrap();
    let client = ClientType::ALL[rng.below(6) as usize];
    match rng.below(5) {
        0 | 1 => Event::Login {
            sid: sid_,
            uid: sid,
            client,
            ext: None,
        },
        2 | 3 => Event::Logout {
            sid: sid_,
            uid: sid,
            client,
            ext: None,
        },
        _ => Event::Permission {
            sid: sid_,
            uid: sid,
            allow: rng.below(2) == 0,
            ext: None,
        },
    }
}

#[derive(Default)]
struct WriterReport {
    events: u64,
    acked: u64,
    reconnects: u64,
    expected: HashMap<u64, Expected>,
}

/// One pool writer: `pool`, users `base+1 ..= base+USERS_PER_WRITER`, events until `stop`, then
/// until everything is acked (or `give_up`).
fn writer(
    pool: u32,
    base: u64,
    addrs: Vec<SocketAddr>,
    seed: u64,
    stop: Arc<AtomicBool>,
    give_up: Arc<AtomicBool>,
) -> WriterReport {
    let mut rng = Rng(seed | 1);
    let stream = rng.next();
    // Every user starts with a permission, so its expected state is fully defined.
    let mut log: Vec<Event> = (1..=USERS_PER_WRITER)
        .map(|i| Event::Permission {
            sid: Sid::new(base + i).unwrap(),
            uid: base + i,
            allow: i % 2 == 0,
            ext: None,
        })
        .collect();
    let mut acked = 0u64;
    let mut reconnects = 0u64;
    let mut next_node = pool as usize;
    'conn: loop {
        if (stop.load(Ordering::Relaxed) && acked == log.len() as u64)
            || give_up.load(Ordering::Relaxed)
        {
            break;
        }
        let addr = addrs[next_node % addrs.len()];
        next_node += 1;
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        reconnects += 1;
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut out = Vec::new();
        ClientFrame::Hello(Hello {
            pool,
            stream,
            resume_from: acked + 1,
            token: Vec::new(),
        })
        .encode(&mut out);
        if s.write_all(&out).is_err() {
            continue;
        }
        let mut sent = acked;
        let mut last_progress = Instant::now();
        let mut rbuf = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if give_up.load(Ordering::Relaxed) {
                break 'conn;
            }
            if !stop.load(Ordering::Relaxed) && log.len() - (acked as usize) < WINDOW {
                for _ in 0..=rng.below(3) {
                    let sid = base + 1 + rng.below(USERS_PER_WRITER);
                    log.push(event(&mut rng, sid));
                }
            } else if stop.load(Ordering::Relaxed) && acked == log.len() as u64 {
                break 'conn;
            }
            // Send what this connection has not sent yet, in frames of consecutive numbers.
            out.clear();
            sent = sent.max(acked);
            while (sent as usize) < log.len() {
                let first = sent + 1;
                let end = log.len().min(sent as usize + 64);
                let events = log[sent as usize..end].to_vec();
                sent = end as u64;
                ClientFrame::Events {
                    first_seq: first,
                    events,
                }
                .encode(&mut out);
            }
            if !out.is_empty() && s.write_all(&out).is_err() {
                continue 'conn;
            }
            match s.read(&mut buf) {
                Ok(0) => continue 'conn,
                Ok(n) => rbuf.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => continue 'conn,
            }
            let mut used = 0;
            while let Ok(Some((ty, body, n))) = split_frame(&rbuf[used..], 1 << 20) {
                used += n;
                match ServerFrame::decode(ty, body) {
                    Ok(ServerFrame::Welcome { applied, .. }) => {
                        if applied > acked && applied <= log.len() as u64 {
                            acked = applied;
                            last_progress = Instant::now();
                        }
                    }
                    Ok(ServerFrame::Ack(n)) => {
                        if n > acked {
                            acked = n.min(log.len() as u64);
                            last_progress = Instant::now();
                        }
                    }
                    Ok(ServerFrame::Pong(_)) => {}
                    Ok(ServerFrame::Error { .. }) | Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue 'conn;
                    }
                }
            }
            rbuf.drain(..used);
            if acked < sent && last_progress.elapsed() > RESEND_AFTER {
                // No ack for a second: abandon this connection (normal close, FIN) and re-send
                // everything un-acked to the next node.
                continue 'conn;
            }
            if acked == sent {
                last_progress = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut expected: HashMap<u64, Expected> = HashMap::new();
    for e in &log {
        let sid = match e {
            Event::Login { sid, .. }
            | Event::Logout { sid, .. }
            | Event::Permission { sid, .. } => sid.get(),
            _ => continue,
        };
        expected.entry(sid).or_default().apply(e);
    }
    WriterReport {
        events: log.len() as u64,
        acked,
        reconnects,
        expected,
    }
}

fn signal(node: &Node, sig: &str) {
    if let Some(pid) = node.pid() {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }
}

fn is_ready(node: &Node) -> bool {
    let (status, body) = http_get(node.http_addr(), "/v1/cluster");
    status == 200
        && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["ready"] == true)
}

fn wait_all_ready(nodes: &Mutex<Vec<Node>>, timeout: Duration) {
    let start = Instant::now();
    loop {
        let all = nodes.lock().unwrap().iter().all(is_ready);
        if all {
            return;
        }
        if start.elapsed() >= timeout {
            let nodes = nodes.lock().unwrap();
            for (i, n) in nodes.iter().enumerate() {
                eprintln!(
                    "--- node {} /v1/cluster: {:?}",
                    i + 1,
                    http_get(n.http_addr(), "/v1/cluster")
                );
            }
            dump_logs(&nodes);
            panic!("nodes not ready within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The end of every node's log, for the post-mortem.
fn dump_logs(nodes: &[Node]) {
    for (i, n) in nodes.iter().enumerate() {
        let log = n.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        eprintln!(
            "--- node {} (last {} lines) ---\n{}",
            i + 1,
            tail.len(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

fn digest(node: &Node) -> String {
    let (_, body) = http_get(node.http_addr(), "/v1/cluster");
    serde_json::from_str::<serde_json::Value>(&body)
        .map(|v| v["digest"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

/// Statuses of `sids` on one node, as (clients bitmask, accepts strangers).
fn statuses(node: &Node, sids: &[u64]) -> HashMap<u64, Expected> {
    let mut q = QueryClient::connect(node.query_addr(), Duration::from_secs(5)).unwrap();
    let mut got = HashMap::new();
    for chunk in sids.chunks(100) {
        for s in q.query(chunk).unwrap() {
            let clients = s.clients.iter().fold(0u8, |m, c| m | 1 << c as u8);
            got.insert(
                s.sid.get(),
                Expected {
                    clients,
                    allow: s.accepts_strangers,
                },
            );
        }
    }
    got
}

struct Outcome {
    acked: u64,
    faults: Vec<&'static str>,
    converged_ms: u128,
    lost: usize,
    disagree: usize,
}

fn run(seed: u64, fault_secs: u64, writers: u32) -> Outcome {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, "<replication ack=\"replica\"/>");
    let nodes: Arc<Mutex<Vec<Node>>> = Arc::new(Mutex::new(
        ports
            .iter()
            .map(|p| Node::spawn(*p, cfg.clone(), &[]))
            .collect(),
    ));
    wait_all_ready(&nodes, Duration::from_secs(60));
    let addrs: Vec<SocketAddr> = nodes.lock().unwrap().iter().map(Node::pool_addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let give_up = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (addrs, stop, give_up) = (addrs.clone(), stop.clone(), give_up.clone());
            let wseed = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(w));
            std::thread::spawn(move || {
                writer(w + 1, u64::from(w) * 10_000, addrs, wseed, stop, give_up)
            })
        })
        .collect();

    // The nemesis: one fault at a time, the next only once every node is ready again.
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut faults = Vec::new();
    let until = Instant::now() + Duration::from_secs(fault_secs);
    let restart = |nodes: &Mutex<Vec<Node>>, i: usize| {
        let mut g = nodes.lock().unwrap();
        let p = g[i].ports;
        g[i] = Node::spawn(p, cfg.clone(), &[]);
    };
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(800 + rng.below(1_500)));
        wait_all_ready(&nodes, Duration::from_secs(60));
        let i = rng.below(3) as usize;
        let kind = ["kill", "pause", "pause-then-kill", "restart"][rng.below(4) as usize];
        faults.push(kind);
        match kind {
            "kill" => {
                nodes.lock().unwrap()[i].kill();
                std::thread::sleep(Duration::from_millis(200 + rng.below(800)));
                restart(&nodes, i);
            }
            "pause" => {
                signal(&nodes.lock().unwrap()[i], "-STOP");
                std::thread::sleep(Duration::from_millis(1_200 + rng.below(2_000)));
                signal(&nodes.lock().unwrap()[i], "-CONT");
            }
            "pause-then-kill" => {
                signal(&nodes.lock().unwrap()[i], "-STOP");
                std::thread::sleep(Duration::from_millis(1_200 + rng.below(1_500)));
                signal(&nodes.lock().unwrap()[i], "-CONT");
                // Resumed and killed right away: whatever it acked after the pause must be
                // on another node already.
                std::thread::sleep(Duration::from_millis(rng.below(60)));
                nodes.lock().unwrap()[i].kill();
                std::thread::sleep(Duration::from_millis(300));
                restart(&nodes, i);
            }
            _ => {
                nodes.lock().unwrap()[i].terminate();
                restart(&nodes, i);
            }
        }
    }
    wait_all_ready(&nodes, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    let watchdog = {
        let give_up = give_up.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(60));
            give_up.store(true, Ordering::Relaxed);
        })
    };
    let reports: Vec<WriterReport> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    drop(watchdog);
    for r in &reports {
        assert_eq!(
            r.acked, r.events,
            "seed {seed}: a writer could not get every event acked within 60 s after the faults"
        );
    }
    let acked: u64 = reports.iter().map(|r| r.acked).sum();
    let reconnects: u64 = reports.iter().map(|r| r.reconnects).sum();

    // Convergence: every node reports the same digest.
    let start = Instant::now();
    loop {
        let d: Vec<String> = nodes.lock().unwrap().iter().map(digest).collect();
        if d.windows(2).all(|w| w[0] == w[1]) && !d[0].is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let converged_ms = start.elapsed().as_millis();

    let mut expected: HashMap<u64, Expected> = HashMap::new();
    for r in reports {
        expected.extend(r.expected);
    }
    let mut sids: Vec<u64> = expected.keys().copied().collect();
    sids.sort_unstable();
    let views: Vec<HashMap<u64, Expected>> = nodes
        .lock()
        .unwrap()
        .iter()
        .map(|n| statuses(n, &sids))
        .collect();
    let mut lost = 0;
    let mut disagree = 0;
    let mut examples = Vec::new();
    for sid in &sids {
        let want = expected[sid];
        let got: Vec<Expected> = views.iter().map(|v| v[sid]).collect();
        if got.windows(2).any(|w| w[0] != w[1]) {
            disagree += 1;
        }
        if got.iter().any(|g| *g != want) {
            lost += 1;
            if examples.len() < 5 {
                examples.push(format!("user {sid}: want {want:?}, nodes have {got:?}"));
            }
        }
    }
    if lost > 0 {
        eprintln!(
            "seed {seed}: examples of lost updates:\n{}",
            examples.join("\n")
        );
        dump_logs(&nodes.lock().unwrap());
    }
    let _ = reconnects;
    Outcome {
        acked,
        faults,
        converged_ms,
        lost,
        disagree,
    }
}

fn chaos_seed() -> u64 {
    std::env::var("PRESENCED_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        })
}

#[test]
fn acked_updates_survive_kills_pauses_and_restarts() {
    let seed = chaos_seed();
    let secs = std::env::var("PRESENCED_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!("chaos seed {seed} (replay with PRESENCED_CHAOS_SEED={seed})");
    let o = run(seed, secs, 4);
    let mut kinds: HashMap<&str, u32> = HashMap::new();
    for f in &o.faults {
        *kinds.entry(f).or_default() += 1;
    }
    let mut kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    kinds.sort();
    figure(&format!(
        "chaos (seed {seed}, {secs} s of faults, 3 nodes, ack=replica): {} events acked, {} faults injected ({}), converged {} ms after the writers finished, lost = {}, nodes disagree on {} users",
        o.acked,
        o.faults.len(),
        kinds.join(", "),
        o.converged_ms,
        o.lost,
        o.disagree
    ));
    assert_eq!(
        (o.lost, o.disagree),
        (0, 0),
        "seed {seed}: acked updates lost or nodes disagree (replay with PRESENCED_CHAOS_SEED={seed})"
    );
}

/// The control: the same check catches a policy that loses acked updates. `local` acks with a
/// slow flush, and the node that acked is killed before it replicated.
#[test]
fn control_local_acks_with_a_slow_flush_lose_updates() {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, "<replication ack=\"local\" flush-ms=\"1000\"/>");
    let nodes: Arc<Mutex<Vec<Node>>> = Arc::new(Mutex::new(
        ports
            .iter()
            .map(|p| Node::spawn(*p, cfg.clone(), &[]))
            .collect(),
    ));
    wait_all_ready(&nodes, Duration::from_secs(60));
    let addr = nodes.lock().unwrap()[0].pool_addr();
    let stop = Arc::new(AtomicBool::new(true));
    let give_up = Arc::new(AtomicBool::new(false));
    // Stop at once: the writer sends only its first USERS_PER_WRITER permissions and waits for
    // their acks.
    let r = writer(1, 0, vec![addr], 7, stop, give_up);
    assert_eq!(r.acked, USERS_PER_WRITER);
    nodes.lock().unwrap()[0].kill();
    let node2 = &nodes.lock().unwrap()[1];
    let sids: Vec<u64> = (1..=USERS_PER_WRITER).collect();
    let got = statuses(node2, &sids);
    let lost = sids.iter().filter(|s| got[s] != r.expected[s]).count();
    figure(&format!(
        "chaos control (ack=local, flush 1 s, SIGKILL after the acks): {lost} of {USERS_PER_WRITER} acked updates lost on the survivors"
    ));
    assert!(
        lost > 0,
        "the control lost nothing: the check could not tell a lossy policy"
    );
}
