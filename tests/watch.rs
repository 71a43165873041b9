//! Black-box tests of the live watch: `GET /v1/watch` (Server-Sent Events) and raw-TCP
//! `SUBSCRIBE` (query protocol v2, watch mode) against the real binary: snapshot then pushed
//! changes, `Last-Event-ID` resume with exactly the missed changes, resets, a change from another
//! node of a 3-node cluster, slow watchers cut, `max-watchers`, and the memory of 2,000 idle
//! watchers (printed with `common::figure`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{figure, write_config, Node, Ports};
use presenced_core::proto::query::ServerFrame;
use presenced_core::wire::split_frame;

const WEB: &str = "<web/>";

/// One SSE frame: (event, id, data).
type Frame = (String, Option<String>, String);

/// A raw HTTP client of one watch stream.
struct Sse {
    s: TcpStream,
    buf: Vec<u8>,
    head: Option<String>,
}

impl Sse {
    fn open(addr: SocketAddr, ids: &str, last: Option<&str>) -> Self {
        Self::open_from(None, addr, ids, last)
    }

    fn open_from(src: Option<IpAddr>, addr: SocketAddr, ids: &str, last: Option<&str>) -> Self {
        let s = connect_from(src, addr);
        let mut req = format!("GET /v1/watch?ids={ids} HTTP/1.1\r\nHost: t\r\n");
        if let Some(l) = last {
            req.push_str(&format!("Last-Event-ID: {l}\r\n"));
        }
        req.push_str("\r\n");
        (&s).write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        Self {
            s,
            buf: Vec::new(),
            head: None,
        }
    }

    /// Reads until `deadline`, or until `done` holds over the frames read so far.
    fn read_until(&mut self, within: Duration, done: impl Fn(&[Frame]) -> bool) -> Vec<Frame> {
        let deadline = Instant::now() + within;
        let mut frames = Vec::new();
        loop {
            self.parse(&mut frames);
            if done(&frames) || Instant::now() >= deadline {
                return frames;
            }
            let mut chunk = [0u8; 16384];
            match self.s.read(&mut chunk) {
                Ok(0) => {
                    self.parse(&mut frames);
                    return frames;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
    }

    fn parse(&mut self, frames: &mut Vec<Frame>) {
        if self.head.is_none() {
            let Some(end) = find(&self.buf, b"\r\n\r\n") else {
                return;
            };
            self.head = Some(String::from_utf8(self.buf[..end].to_vec()).unwrap());
            self.buf.drain(..end + 4);
        }
        while let Some(end) = find(&self.buf, b"\n\n") {
            let text = String::from_utf8(self.buf[..end].to_vec()).unwrap();
            self.buf.drain(..end + 2);
            let (mut event, mut id, mut data) = (String::new(), None, String::new());
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.into();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.into());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = v.into();
                } else if line.starts_with("retry: ") {
                    event = "retry".into();
                }
            }
            if !event.is_empty() {
                frames.push((event, id, data));
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn connect_from(src: Option<IpAddr>, addr: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(ip) = src {
        sock.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    }
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// The statuses of `frames` as (id, online).
fn statuses(frames: &[Frame]) -> Vec<(String, bool)> {
    frames
        .iter()
        .filter(|f| f.0 == "status")
        .map(|f| {
            let v: serde_json::Value = serde_json::from_str(&f.2).unwrap();
            (v["id"].as_str().unwrap().to_owned(), v["online"] == true)
        })
        .collect()
}

fn count_status(frames: &[Frame]) -> usize {
    frames.iter().filter(|f| f.0 == "status").count()
}

#[test]
fn sse_snapshot_then_pushed_changes() {
    let node = Node::start_with(WEB);
    node.push("login 11 1 pc\n");
    let mut w = Sse::open(node.http_addr(), "11,12", None);
    let frames = w.read_until(Duration::from_secs(5), |f| count_status(f) >= 2);
    let head = w.head.clone().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    assert!(head.contains("X-Accel-Buffering: no"), "{head}");
    assert_eq!(frames[0].0, "retry");
    assert_eq!(
        statuses(&frames),
        vec![("11".into(), true), ("12".into(), false)],
        "the snapshot, in request order"
    );
    // 12 is unknown: in hide mode it is written exactly like an offline user.
    assert!(frames[2].2.contains(r#""known":false"#));
    node.push("login 12 1 mobile\nlogin 13 1 pc\nlogout 11 1 pc\n");
    let frames = w.read_until(Duration::from_secs(5), |f| count_status(f) >= 2);
    let got = statuses(&frames);
    assert_eq!(
        got,
        vec![("12".into(), true), ("11".into(), false)],
        "13 is not watched"
    );
    // Event ids grow along the stream.
    let seqs: Vec<u64> = frames
        .iter()
        .filter_map(|f| f.1.as_ref()?.rsplit('-').next()?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");
}

#[test]
fn last_event_id_resume_gets_exactly_the_missed_changes() {
    let node = Node::start_with(WEB);
    let mut w = Sse::open(node.http_addr(), "21,22", None);
    let frames = w.read_until(Duration::from_secs(5), |f| count_status(f) >= 2);
    let last = frames.last().unwrap().1.clone().unwrap();
    drop(w);
    // While disconnected: changes to watched and unwatched ids.
    node.push("login 21 1 pc\nlogin 30 1 pc\nlogin 31 1 pc\nlogin 22 1 web\nlogout 30 1 pc\n");
    let mut w = Sse::open(node.http_addr(), "21,22", Some(&last));
    let frames = w.read_until(Duration::from_secs(3), |f| count_status(f) >= 3);
    assert!(frames.iter().all(|f| f.0 != "reset"), "{frames:?}");
    assert_eq!(
        statuses(&frames),
        vec![("21".into(), true), ("22".into(), true)],
        "exactly the missed changes of the watched ids, nothing else: {frames:?}"
    );
    // Then live again.
    node.push("logout 22 1 web\n");
    let frames = w.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    assert_eq!(statuses(&frames), vec![("22".into(), false)]);
}

#[test]
fn garbled_and_foreign_event_ids_reset() {
    let ports: Vec<Ports> = (1..=2).map(Ports::free).collect();
    let cfg = write_config(&ports, WEB);
    let n1 = Node::spawn(ports[0], cfg.clone(), &[]);
    let n2 = Node::spawn(ports[1], cfg, &[]);
    n1.push("login 41 1 pc\n");
    let mut w = Sse::open(n2.http_addr(), "41", None);
    let frames = w.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    let from_node_2 = frames.last().unwrap().1.clone().unwrap();
    for last in ["garbage", "1-0-1", from_node_2.as_str()] {
        let mut w = Sse::open(n1.http_addr(), "41", Some(last));
        let frames = w.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
        let kinds: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(kinds, ["retry", "reset", "status"], "{last}: {frames:?}");
        assert_eq!(frames[1].2, "{}");
        assert_eq!(statuses(&frames), vec![("41".into(), true)]);
    }
    let (_, metrics) = common::http_get(n1.http_addr(), "/metrics");
    assert!(
        metrics.contains("presenced_watch_resets_total 3"),
        "{metrics}"
    );
}

#[test]
fn a_change_on_another_node_reaches_the_watcher() {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(&ports, WEB);
    let nodes: Vec<Node> = ports
        .iter()
        .map(|p| Node::spawn(*p, cfg.clone(), &[]))
        .collect();
    for n in &nodes {
        n.wait_cluster("ready", Duration::from_secs(10), |v| v["ready"] == true);
    }
    let mut w = Sse::open(nodes[0].http_addr(), "51", None);
    w.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    // When the change is visible in node 1's store (polled), and when the watcher has it.
    let http = nodes[0].http_addr();
    let poller = std::thread::spawn(move || {
        let start = Instant::now();
        loop {
            let (_, body) = common::http_get(http, "/v1/presence/51");
            if body.contains(r#""online":true"#) || start.elapsed() > Duration::from_secs(10) {
                return Instant::now();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    let start = Instant::now();
    nodes[2].push("login 51 1 pc\n");
    let frames = w.read_until(Duration::from_secs(10), |f| count_status(f) >= 1);
    let seen = Instant::now();
    let visible = poller.join().unwrap();
    assert_eq!(statuses(&frames), vec![("51".into(), true)]);
    let lag = visible.saturating_duration_since(start);
    let late = seen.saturating_duration_since(visible);
    figure(&format!(
        "watch: change pushed on node 3 seen by a node-1 watcher after {} ms (visible in node \
         1's store after {} ms by polling; watcher {} ms after it)",
        seen.duration_since(start).as_millis(),
        lag.as_millis(),
        late.as_millis()
    ));
    assert!(
        late <= Duration::from_millis(100),
        "the watcher lagged the store by {late:?}"
    );
}

#[test]
fn a_slow_watcher_is_cut_while_another_keeps_receiving() {
    let node = Node::start_with(WEB);
    let ids: Vec<String> = (1000..1100).map(|i| i.to_string()).collect();
    let ids = ids.join(",");
    // The slow one never reads, with a small receive buffer.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&node.http_addr().into()).unwrap();
    let slow: TcpStream = sock.into();
    (&slow)
        .write_all(format!("GET /v1/watch?ids={ids} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .unwrap();
    let mut fast = Sse::open(node.http_addr(), "1000", None);
    fast.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    let value = "x".repeat(200);
    let mut received = 0;
    for round in 0..40 {
        let mut lines = String::new();
        for flip in 0..10 {
            for sid in 1000..1100 {
                let kind = if (round + flip) % 2 == 0 {
                    "login"
                } else {
                    "logout"
                };
                lines.push_str(&format!("{kind} {sid} 1 pc v={value}\n"));
            }
        }
        node.push(&lines);
        received += count_status(&fast.read_until(Duration::from_millis(1), |_| false));
        let (_, m) = common::http_get(node.http_addr(), "/metrics");
        if m.contains("presenced_watchers_cut_total 1") {
            break;
        }
    }
    let (_, m) = common::http_get(node.http_addr(), "/metrics");
    assert!(m.contains("presenced_watchers_cut_total 1"), "{m}");
    // The other watcher still gets every change.
    node.push("login 1000 2 mobile\n");
    let frames = fast.read_until(Duration::from_secs(5), |f| {
        f.iter().any(|x| x.2.contains("mobile"))
    });
    assert!(frames.iter().any(|x| x.2.contains("mobile")), "{frames:?}");
    assert!(received > 0);
}

#[test]
fn max_watchers_refusal() {
    // max-watchers 2: one per address (a quarter, at least one), two per node.
    let node = Node::start_with(r#"<web max-watchers="2"/>"#);
    let addr = node.http_addr();
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let mut a = Sse::open_from(ip("127.0.0.1"), addr, "1", None);
    a.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    let (status, body) = refused(ip("127.0.0.1"), addr);
    assert_eq!(status, 503, "per-address share: {body}");
    assert!(body.contains("too_many_watchers"), "{body}");
    let mut b = Sse::open_from(ip("127.0.0.2"), addr, "1", None);
    b.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    let (status, _) = refused(ip("127.0.0.3"), addr);
    assert_eq!(status, 503, "node-wide limit");
    drop(a);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Sse::open_from(ip("127.0.0.3"), addr, "1", None);
    let frames = c.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    assert_eq!(
        count_status(&frames),
        1,
        "a closed stream gives its place back"
    );
    // Without <web> the endpoint does not exist.
    let plain = Node::start();
    let (status, _) = common::http_get(plain.http_addr(), "/v1/watch?ids=1");
    assert_eq!(status, 404);
}

fn refused(src: Option<IpAddr>, addr: SocketAddr) -> (u16, String) {
    let mut s = connect_from(src, addr);
    s.write_all(b"GET /v1/watch?ids=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut text);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

/// Raw-TCP watch: HELLO v2 (mode 1, no key) and SUBSCRIBE.
fn subscribe(addr: SocketAddr, req_id: u32, resume: &[u8], ids: &[u64]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut out = vec![0, 0, 0, 8, 0x01, b'P', b'R', b'S', b'Q', 2, 1, 0];
    let mut body = vec![0x20];
    body.extend_from_slice(&req_id.to_be_bytes());
    body.push(resume.len() as u8);
    body.extend_from_slice(resume);
    body.extend_from_slice(&(ids.len() as u16).to_be_bytes());
    for i in ids {
        body.extend_from_slice(&i.to_be_bytes());
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    s.write_all(&out).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

/// Reads server frames until `n` EVENTs arrived or `within` passed.
fn tcp_frames(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    n: usize,
    within: Duration,
) -> Vec<ServerFrame> {
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    loop {
        while let Some((t, b, used)) = split_frame(buf, 1 << 20).unwrap() {
            frames.push(ServerFrame::decode(t, b).unwrap());
            buf.drain(..used);
        }
        let events = frames
            .iter()
            .filter(|f| matches!(f, ServerFrame::Event { .. }))
            .count();
        if events >= n || Instant::now() >= deadline {
            return frames;
        }
        let mut chunk = [0u8; 4096];
        if let Ok(k) = s.read(&mut chunk) {
            if k == 0 {
                return frames;
            }
            buf.extend_from_slice(&chunk[..k]);
        }
    }
}

#[test]
fn raw_tcp_subscribe_with_resume() {
    let node = Node::start();
    node.push("login 61 1 pc\n");
    let mut s = subscribe(node.query_addr(), 7, b"", &[61, 62]);
    let mut buf = Vec::new();
    let frames = tcp_frames(&mut s, &mut buf, 2, Duration::from_secs(5));
    assert!(matches!(frames[0], ServerFrame::Welcome { version: 2, .. }));
    let events: Vec<(u64, bool, Vec<u8>)> = frames[1..]
        .iter()
        .map(|f| match f {
            ServerFrame::Event {
                req_id: 7,
                event_id,
                status,
            } => (status.sid.get(), status.online, event_id.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        events.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        [(61, true), (62, false)]
    );
    let last = events[1].2.clone();
    drop(s);
    node.push("login 62 1 pc\nlogin 63 1 pc\nlogout 61 1 pc\n");
    let mut s = subscribe(node.query_addr(), 8, &last, &[61, 62]);
    let mut buf = Vec::new();
    let frames = tcp_frames(&mut s, &mut buf, 2, Duration::from_secs(5));
    let got: Vec<(u64, bool)> = frames[1..]
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Event {
                req_id: 8, status, ..
            } => Some((status.sid.get(), status.online)),
            _ => None,
        })
        .collect();
    assert_eq!(got, [(62, true), (61, false)], "{frames:?}");
    // A foreign resume point: RESET, then fresh statuses.
    let mut s = subscribe(node.query_addr(), 9, b"9-1-1", &[61]);
    let mut buf = Vec::new();
    let frames = tcp_frames(&mut s, &mut buf, 1, Duration::from_secs(5));
    assert!(
        matches!(frames[1], ServerFrame::Reset { req_id: 9, .. }),
        "{frames:?}"
    );
    assert!(matches!(&frames[2], ServerFrame::Event { req_id: 9, status, .. } if !status.online));
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn two_thousand_idle_watchers_cost_little_memory() {
    let node = Node::start_with(WEB);
    let pid = node.pid().unwrap();
    // Warm up: one stream and a few requests, so that what is measured is per watcher.
    let mut warm = Sse::open(node.http_addr(), "1", None);
    warm.read_until(Duration::from_secs(5), |f| count_status(f) >= 1);
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb(pid);
    let mut streams = Vec::new();
    for i in 0..2000u32 {
        let src: IpAddr = format!("127.0.0.{}", 1 + i % 8).parse().unwrap();
        let id = (i % 500 + 1).to_string();
        streams.push(Sse::open_from(Some(src), node.http_addr(), &id, None));
    }
    for s in &mut streams {
        let f = s.read_until(Duration::from_secs(10), |f| count_status(f) >= 1);
        assert_eq!(count_status(&f), 1);
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss_kb(pid);
    let (_, m) = common::http_get(node.http_addr(), "/metrics");
    assert!(m.contains("presenced_watchers 2001"), "{m}");
    let grown_mb = after.saturating_sub(before) as f64 / 1024.0;
    figure(&format!(
        "watch: 2000 idle SSE watchers over 8 source addresses: RSS {} -> {} KiB (+{grown_mb:.1} MiB, {:.1} KiB per watcher)",
        before,
        after,
        after.saturating_sub(before) as f64 / 2000.0
    ));
    assert!(
        grown_mb < 40.0,
        "2000 idle watchers grew RSS by {grown_mb:.1} MiB"
    );
}
