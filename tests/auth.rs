//! Credentials, black-box: API keys on every query front end (HTTP JSON, SOAP, `/v1/cluster`,
//! `/metrics`, raw TCP v1/v2), and the bad-token flood on the pool port (throttled, counted,
//! logged rate-limited, a legit pool unaffected).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{exchange, figure, run_cli, run_cli_raw, write_config, Node, Ports};
use presenced_core::proto::{pool, query};
use presenced_core::wire::split_frame;

const KEY: &str = "portal-key-0123456789";

/// A node whose file has `<api-key name="portal">` (and `extra`).
fn keyed_node(extra: &str) -> Node {
    let ports = Ports::free(1);
    let config = write_config(
        &[ports],
        &format!("<api-key name=\"portal\" file=\"portal.key\"/>\n{extra}"),
    );
    std::fs::write(
        config.parent().unwrap().join("portal.key"),
        format!("{KEY}\n"),
    )
    .unwrap();
    Node::spawn(ports, config, &[])
}

/// Sends one request; returns (status, head, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let raw = exchange(addr, req.as_bytes(), Duration::from_secs(5));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

fn frames(mut out: &[u8]) -> Vec<query::ServerFrame> {
    let mut v = Vec::new();
    while let Some((t, b, n)) = split_frame(out, u32::MAX).unwrap() {
        v.push(query::ServerFrame::decode(t, b).unwrap());
        out = &out[n..];
    }
    v
}

#[test]
fn api_keys_guard_every_query_front_end() {
    let node = keyed_node("");
    let addr = node.http_addr();
    let right = format!("Authorization: bearer {KEY}\r\n");
    let wrong = "Authorization: Bearer portal-key-0123456780\r\n";
    let protected: [(&str, &str, &str); 6] = [
        ("GET", "/v1/presence?ids=1,2", ""),
        ("POST", "/v1/presence", r#"{"ids":[1]}"#),
        ("GET", "/v1/presence/1", ""),
        ("GET", "/v1/cluster", ""),
        ("DELETE", "/v1/cluster/members/9", ""),
        ("GET", "/metrics", ""),
    ];
    let mut refusal = None;
    for (method, path, body) in protected {
        for headers in [
            "",
            wrong,
            "Authorization: Basic dXNlcjpwYXNz\r\n",
            "Authorization: Bearer\r\n",
        ] {
            let (status, head, text) = http(addr, method, path, headers, body);
            assert_eq!(status, 401, "{method} {path} {headers:?}: {text}");
            assert!(head.contains("\r\nWWW-Authenticate: Bearer"), "{head}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
            // The same bytes whatever was wrong.
            assert_eq!(refusal.get_or_insert_with(|| text.clone()), &text);
        }
        let (status, _, text) = http(addr, method, path, &right, body);
        assert_ne!(status, 401, "{method} {path} with the key: {text}");
        assert!(
            status == 200 || path.starts_with("/v1/cluster/members"),
            "{path}: {status} {text}"
        );
    }
    for path in ["/healthz/live", "/soap?wsdl"] {
        let (status, _, text) = http(addr, "GET", path, "", "");
        assert_eq!(status, 200, "{path} stays open: {text}");
    }

    // SOAP: a fault in the request's version, with the key: an answer.
    let mut envelope = Vec::new();
    presenced_frontends::soap::write_request(
        presenced_frontends::soap::SoapVersion::V12,
        &[presenced_core::Sid::new(1).unwrap()],
        &mut envelope,
    );
    let envelope = String::from_utf8(envelope).unwrap();
    let ct = "Content-Type: application/soap+xml; charset=utf-8\r\n";
    let (status, head, text) = http(addr, "POST", "/soap", &format!("{ct}{wrong}"), &envelope);
    assert_eq!(status, 500, "{text}");
    assert!(head.contains("application/soap+xml"), "{head}");
    assert!(
        text.contains("http://www.w3.org/2003/05/soap-envelope"),
        "{text}"
    );
    assert!(text.contains("<env:Value>env:Sender</env:Value>"), "{text}");
    assert!(text.contains("<code>Unauthorized</code>"), "{text}");
    let (status, _, text) = http(addr, "POST", "/soap", &format!("{ct}{right}"), &envelope);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("GetPresenceResponse"), "{text}");

    // Raw TCP: v1 refused, v2 with a wrong key refused alike, v2 with the key served.
    let mut q = Vec::new();
    query::ClientFrame::Query {
        req_id: 7,
        ids: vec![1],
    }
    .encode(&mut q);
    let hello = |h: query::Hello| {
        let mut b = Vec::new();
        query::ClientFrame::Hello(h).encode(&mut b);
        b.extend_from_slice(&q);
        b
    };
    let v2 = |key: &[u8]| query::Hello::V2 {
        mode: query::Mode::Query,
        key: key.to_vec(),
    };
    let v1_out = exchange(
        node.query_addr(),
        &hello(query::Hello::V1),
        Duration::from_secs(5),
    );
    let bad_out = exchange(
        node.query_addr(),
        &hello(v2(b"portal-key-0123456780")),
        Duration::from_secs(5),
    );
    assert_eq!(v1_out, bad_out, "v1 and a wrong key get the same refusal");
    assert!(
        matches!(
            &frames(&v1_out)[..],
            [query::ServerFrame::Error { code: 3, .. }]
        ),
        "{:?}",
        frames(&v1_out)
    );
    let ok = frames(&exchange_until(
        node.query_addr(),
        &hello(v2(KEY.as_bytes())),
        2,
    ));
    assert!(
        matches!(
            ok[0],
            query::ServerFrame::Welcome {
                version: 2,
                node: 1,
                ..
            }
        ),
        "{ok:?}"
    );
    assert!(
        matches!(&ok[1], query::ServerFrame::Result { req_id: 7, statuses, .. } if statuses.len() == 1)
    );

    // The CLI: a key file, the environment variable, and nothing.
    let key_file = node.config.parent().unwrap().join("portal.key");
    let q_addr = node.query_addr().to_string();
    let out = run_cli(
        &[
            "query",
            "--server",
            &q_addr,
            "--api-key-file",
            key_file.to_str().unwrap(),
            "5",
        ],
        "",
    );
    assert!(out.contains("\"id\":\"5\""), "{out}");
    let env_out = std::process::Command::new(common::bin())
        .args(["query", "--server", &q_addr, "5"])
        .env("PRESENCED_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        env_out.status.success(),
        "{}",
        String::from_utf8_lossy(&env_out.stderr)
    );
    let none = run_cli_raw(&["query", "--server", &q_addr, "5"], "");
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("unauthorized"));

    // Every outcome is counted.
    let (_, _, metrics) = http(addr, "GET", "/metrics", &right, "");
    let count = |needle: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(needle).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{needle} missing:\n{metrics}"))
    };
    assert!(count("presenced_api_auth_total{frontend=\"json\",outcome=\"missing\"}") >= 6);
    assert!(count("presenced_api_auth_total{frontend=\"json\",outcome=\"invalid\"}") >= 18);
    assert!(count("presenced_api_auth_total{frontend=\"json\",outcome=\"granted\"}") >= 6);
    assert_eq!(
        count("presenced_api_auth_total{frontend=\"soap\",outcome=\"invalid\"}"),
        1
    );
    assert_eq!(
        count("presenced_api_auth_total{frontend=\"soap\",outcome=\"granted\"}"),
        1
    );
    assert_eq!(
        count("presenced_api_auth_total{frontend=\"tcp\",outcome=\"missing\"}"),
        2
    );
    assert_eq!(
        count("presenced_api_auth_total{frontend=\"tcp\",outcome=\"invalid\"}"),
        1
    );
    assert_eq!(
        count("presenced_api_auth_total{frontend=\"tcp\",outcome=\"granted\"}"),
        3
    );
    assert!(count("presenced_api_key_requests_total{key=\"portal\"}") >= 10);
}

/// Sends `bytes` and reads until `n` frames arrived.
fn exchange_until(addr: SocketAddr, bytes: &[u8], n: usize) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while frames(&out).len() < n {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "closed early");
        out.extend_from_slice(&buf[..k]);
    }
    out
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((from, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

#[test]
fn bad_token_flood_is_throttled_counted_and_quiet() {
    let ports = Ports::free(1);
    let config = write_config(&[ports], "<security pool-token=\"the-right-token\"/>");
    let node = Node::spawn(ports, config, &[]);
    let pool_addr = node.pool_addr();
    let lines_before = node.log().lines().count();
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut attackers = Vec::new();
    for t in 0..4u64 {
        let (stop, attempts) = (stop.clone(), attempts.clone());
        attackers.push(std::thread::spawn(move || {
            let mut hello = Vec::new();
            pool::ClientFrame::Hello(pool::Hello {
                pool: 9,
                stream: t + 1,
                resume_from: 1,
                token: b"a-wrong-token".to_vec(),
            })
            .encode(&mut hello);
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = connect_from([127, 0, 0, 2], pool_addr) else {
                    continue;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if s.write_all(&hello).is_ok() {
                    // Until the server's ERROR and close.
                    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
                }
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A legit pool with the right token, from another address, pushes during the flood.
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let pushed = run_cli(
        &[
            "push",
            "--pool",
            &pool_addr.to_string(),
            "--token",
            "the-right-token",
        ],
        "login 42 1 pc\n",
    );
    let push_took = started.elapsed();
    while started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let attempts = attempts.load(Ordering::Relaxed);
    let lines = node.log().lines().count() - lines_before;
    let (_, _, metrics) = http(node.http_addr(), "GET", "/metrics", "", "");
    let count = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
            .unwrap()
    };
    let failures = count("presenced_pool_auth_failures_total ");
    let throttled = count("presenced_pool_auth_throttled_total ");
    figure(&format!(
        "bad-token flood 5 s, 4 threads: {attempts} attempts, {failures} token failures, \
         {throttled} throttled, {lines} log lines; legit push during it in {push_took:?}"
    ));
    assert!(pushed.contains("1 event"), "{pushed}");
    assert!(
        attempts > 100,
        "the flood was too slow to mean anything: {attempts}"
    );
    assert!(lines <= 1000, "{lines} log lines:\n{}", node.log());
    assert!(
        failures >= 10 && failures + throttled + 8 >= attempts,
        "{failures} + {throttled} vs {attempts}"
    );
    assert!(
        throttled > failures,
        "the budget did not throttle: {failures} failures, {throttled} throttled"
    );
    // The legit pool's event is there.
    let v = node.query(&["42"]);
    assert_eq!(v[0]["online"], true);
}

#[test]
fn push_takes_the_token_from_a_file_or_the_environment() {
    let ports = Ports::free(1);
    let config = write_config(&[ports], "<security pool-token=\"file-token\"/>");
    let node = Node::spawn(ports, config.clone(), &[]);
    let pool = node.pool_addr().to_string();
    let file = config.parent().unwrap().join("pool.token");
    std::fs::write(&file, "file-token\n").unwrap();
    let out = run_cli(
        &[
            "push",
            "--pool",
            &pool,
            "--token-file",
            file.to_str().unwrap(),
        ],
        "login 1 1 pc\n",
    );
    assert!(out.contains("1 event"), "{out}");
    let env = |val: &str, args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(["push", "--pool", &pool])
            .args(args)
            .env("PRESENCED_POOL_TOKEN", val)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert!(env("file-token", &[]).status.success());
    // A flag wins over the variable.
    assert!(!env("file-token", &["--token", "nope"]).status.success());
    assert!(env("nope", &["--token-file", file.to_str().unwrap()])
        .status
        .success());
    let both = run_cli_raw(
        &["push", "--pool", &pool, "--token", "x", "--token-file", "y"],
        "",
    );
    assert_eq!(
        both.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    assert!(String::from_utf8_lossy(&both.stderr).contains("cannot be used with"));
}
