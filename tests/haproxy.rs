//! A rolling restart behind a real HAProxy: TCP mode with `send-proxy-v2` in front of a 3-node
//! cluster, health checks on `/healthz/ready`. A client loop of HTTP, SOAP and raw-TCP queries
//! plus pool pushes runs through HAProxy while each node in turn is drained (SIGTERM) and
//! restarted. It prints the client errors (a request that fails, is reset or gets no answer within
//! 2 s, without retries: must be 0), the pushes lost (must be 0) and the longest stall (must be at
//! most `drain-ms` + 1 s).
//!
//! Needs the `haproxy` binary: `.ci/run` installs Debian's package and runs this test with
//! `cargo test --test haproxy -- --ignored`. The configuration it writes is the one
//! docs/deploy.md shows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, http_get_after, write_config, Node, Ports};
use presenced_client::{PoolClient, PoolClientOptions, QueryClient};
use presenced_core::model::{ClientType, Sid};
use presenced_core::proto::pool::Event;

const DRAIN_MS: u64 = 2_000;
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

struct Haproxy {
    child: Child,
    pool: SocketAddr,
    query: SocketAddr,
    http: SocketAddr,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The haproxy.cfg of docs/deploy.md, on test ports.
fn haproxy_cfg(nodes: &[Ports], fe: (u16, u16, u16)) -> String {
    let mut cfg = String::from(
        "global\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n  timeout check 1s\n  option redispatch\n  retries 2\n\n",
    );
    for (name, port, pick) in [
        ("pool", fe.0, 0usize),
        ("query", fe.1, 1),
        ("http", fe.2, 2),
    ] {
        cfg.push_str(&format!(
            "frontend fe_{name}\n  bind 127.0.0.1:{port}\n  default_backend be_{name}\n\nbackend be_{name}\n  balance roundrobin\n  option httpchk GET /healthz/ready\n  http-check expect status 200\n  default-server inter 200ms fall 1 rise 2\n"
        ));
        for n in nodes {
            let target = [n.pool, n.query, n.http][pick];
            cfg.push_str(&format!(
                "  server n{} 127.0.0.1:{target} send-proxy-v2 check check-send-proxy port {}\n",
                n.id, n.http
            ));
        }
        cfg.push('\n');
    }
    cfg
}

fn start_haproxy(nodes: &[Ports]) -> Haproxy {
    let fe = (free_port(), free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("presenced-haproxy-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, haproxy_cfg(nodes, fe)).unwrap();
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (install Debian's package; .ci/run does)");
    let h = Haproxy {
        child,
        pool: SocketAddr::from(([127, 0, 0, 1], fe.0)),
        query: SocketAddr::from(([127, 0, 0, 1], fe.1)),
        http: SocketAddr::from(([127, 0, 0, 1], fe.2)),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = b"GET /healthz/ready HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
    while http_once(h.http, probe).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy never served /healthz/ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    h
}

/// `GET path` straight to a node whose HTTP listener expects a PROXY header (as HAProxy sends).
fn proxied_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let header = format!("PROXY TCP4 127.0.0.1 127.0.0.1 40000 {}\r\n", addr.port());
    http_get_after(addr, &header, path)
}

fn wait_ready(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = proxied_get(node.http_addr(), "/v1/cluster");
        if status == 200
            && serde_json::from_str::<serde_json::Value>(&body).is_ok_and(|v| v["ready"] == true)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} not ready: {status} {body}\n{}",
            node.ports.id,
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One HTTP request on a fresh connection; `Ok` only for a complete 200 answer in time.
fn http_once(addr: SocketAddr, req: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, ANSWER_WITHIN).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(ANSWER_WITHIN))
        .map_err(|e| e.to_string())?;
    s.write_all(req).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    if text.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "answer {:?}",
            text.lines().next().unwrap_or("(none)")
        ))
    }
}

fn query_once(addr: SocketAddr) -> Result<(), String> {
    let mut q = QueryClient::connect(addr, ANSWER_WITHIN).map_err(|e| e.to_string())?;
    let st = q.query(&[4242, 7]).map_err(|e| e.to_string())?;
    if st.len() == 2 {
        Ok(())
    } else {
        Err(format!("{} statuses", st.len()))
    }
}

#[test]
#[ignore = "needs the haproxy binary; .ci/run installs it and runs this test with --ignored"]
fn rolling_restart_behind_haproxy_loses_nothing() {
    let ports: Vec<Ports> = (1..=3).map(Ports::free).collect();
    let cfg = write_config(
        &ports,
        "<proxy-protocol listeners=\"pool,query,http\" trusted=\"127.0.0.1/32\"/>",
    );
    let xml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("drain-ms=\"200\"", &format!("drain-ms=\"{DRAIN_MS}\""));
    std::fs::write(&cfg, xml).unwrap();
    let nodes: Arc<Mutex<Vec<Node>>> = Arc::new(Mutex::new(
        ports
            .iter()
            .map(|p| Node::spawn(*p, cfg.clone(), &[]))
            .collect(),
    ));
    for n in nodes.lock().unwrap().iter() {
        wait_ready(n);
    }
    let ha = start_haproxy(&ports);

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let requests = Arc::new(AtomicU64::new(0));
    let longest_ms = Arc::new(AtomicU64::new(0));
    let soap = {
        let body = r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><p:GetPresence xmlns:p="urn:presenced:v1"><p:ids><p:id>4242</p:id></p:ids></p:GetPresence></s:Body></s:Envelope>"#;
        format!(
            "POST /soap HTTP/1.1\r\nHost: lb\r\nContent-Type: text/xml; charset=utf-8\r\nSOAPAction: \"urn:presenced:v1#GetPresence\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let mut loops = Vec::new();
    for kind in ["http", "soap", "query"] {
        let (stop, errors, requests, longest) = (
            stop.clone(),
            errors.clone(),
            requests.clone(),
            longest_ms.clone(),
        );
        let soap = soap.clone();
        let (http, query) = (ha.http, ha.query);
        loops.push(std::thread::spawn(move || {
            let get =
                b"GET /v1/presence?ids=4242,7 HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n";
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = match kind {
                    "http" => http_once(http, get),
                    "soap" => http_once(http, soap.as_bytes()),
                    _ => query_once(query),
                };
                let ms = t.elapsed().as_millis() as u64;
                longest.fetch_max(ms, Ordering::Relaxed);
                requests.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    errors
                        .lock()
                        .unwrap()
                        .push(format!("{kind}: {e} after {ms} ms"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }
    // Pool pushes through HAProxy: each user's last event is a login on a client type chosen by
    // its number, so the final state is known.
    let pusher = {
        let (stop, longest) = (stop.clone(), longest_ms.clone());
        let addr = ha.pool;
        std::thread::spawn(move || {
            let mut opts = PoolClientOptions::new(addr);
            opts.pool = 9;
            opts.retry_for = Duration::from_secs(20);
            let mut c = PoolClient::connect(opts).unwrap();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                let t = Instant::now();
                c.send(Event::Login {
                    sid: Sid::new(100_000 + sent).unwrap(),
                    uid: sent,
                    client: ClientType::ALL[(sent % 6) as usize],
                    ext: None,
                })
                .unwrap();
                c.flush().unwrap();
                longest.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
            (sent, c.acked())
        })
    };

    // Drain and restart each node in turn.
    std::thread::sleep(Duration::from_secs(1));
    for (i, p) in ports.iter().copied().enumerate() {
        let status = nodes.lock().unwrap()[i].terminate();
        assert!(status.success(), "node {} exit {status:?}", p.id);
        nodes.lock().unwrap()[i] = Node::spawn(p, cfg.clone(), &[]);
        wait_ready(&nodes.lock().unwrap()[i]);
        // Let HAProxy see it up again (rise 2 × 200 ms) before the next one goes.
        std::thread::sleep(Duration::from_millis(1_000));
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.join().unwrap();
    }
    let (sent, acked) = pusher.join().unwrap();
    assert_eq!(sent, acked, "every push must be acked in the end");

    // Every push is on every node.
    let n = nodes.lock().unwrap();
    let mut lost = 0;
    for node in n.iter() {
        let ids: Vec<String> = (1..=sent).map(|k| (100_000 + k).to_string()).collect();
        for chunk in ids.chunks(500) {
            let (status, body) = proxied_get(
                node.http_addr(),
                &format!("/v1/presence?ids={}", chunk.join(",")),
            );
            assert_eq!(status, 200, "{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            for s in v["statuses"].as_array().unwrap() {
                if s["online"] != true {
                    lost += 1;
                }
            }
        }
    }
    let errs = errors.lock().unwrap().clone();
    let longest = longest_ms.load(Ordering::Relaxed);
    common::figure(&format!(
        "haproxy rolling restart (3 nodes, send-proxy-v2, drain-ms {DRAIN_MS}): {} requests, client errors = {}, pushes {sent} acked, pushes lost = {lost}, longest stall {longest} ms",
        requests.load(Ordering::Relaxed),
        errs.len()
    ));
    assert!(errs.is_empty(), "client errors: {errs:#?}");
    assert_eq!(lost, 0, "pushes lost");
    assert!(
        longest <= DRAIN_MS + 1_000,
        "longest stall {longest} ms > drain-ms + 1 s"
    );
}
