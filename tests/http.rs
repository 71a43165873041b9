//! Black-box tests of the HTTP port: the real `presenced serve` process, raw bytes over TCP.
//! Covers every endpoint, every error code of DESIGN.md §3, keep-alive, pipelining, chunked
//! bodies, `Expect`, `HEAD`, HTTP/1.0, request smuggling attempts and slow clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::Node;
use serde_json::{json, Value};

/// Limits small enough to reach from a test.
const SMALL: &str = r#"<limits batch-limit="3" http-max-body-bytes="100" http-max-uri-bytes="64" http-max-head-bytes="512" http-max-headers="8" http-head-timeout-ms="300" http-body-timeout-ms="300"/>"#;

/// The presence data every test node gets.
const EVENTS: &str = "login 10086 1 pc nick=alice\n\
                      login 10086 1 mobile nick=alice\n\
                      login 18446744073709551615 2 web\n\
                      login 10010 3 pc\n\
                      logout 10010 3 pc\n\
                      permission 10010 3 deny\n";

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }

    fn code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
    }

    /// `"200"` or `"400:invalid_id"`.
    fn summary(&self) -> String {
        match self.code() {
            Some(c) => format!("{}:{c}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// Splits raw bytes into responses; the `i`th response has no body if `head[i]`.
fn parse(mut raw: &[u8], head: &[bool]) -> Vec<Resp> {
    let mut v = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("complete head");
        let text = std::str::from_utf8(&raw[..end]).unwrap();
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status: u16 = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.to_owned(), v.trim().to_owned())
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let no_body = status == 100 || head.get(v.len()).copied().unwrap_or(false);
        let len = if no_body { 0 } else { len };
        let body = raw[end + 4..end + 4 + len].to_vec();
        raw = &raw[end + 4 + len..];
        v.push(Resp {
            status,
            headers,
            body,
        });
    }
    v
}

/// Sends `raw`, reads until the server closes (or 5 s of silence), parses the answers.
fn send(addr: SocketAddr, raw: &[u8]) -> Vec<Resp> {
    parse(&common::exchange(addr, raw, Duration::from_secs(5)), &[])
}

/// Whether the server closed the connection after answering `raw` (within `wait`).
fn closes_after(addr: SocketAddr, raw: &[u8], wait: Duration) -> (Vec<Resp>, bool) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (parse(&out, &[]), closed)
}

/// `GET path` that asks the server to close afterwards.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
}

/// `GET path`, keep-alive.
fn get_ka(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

fn post(path: &str, content_type: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Sends one request and returns its one answer.
fn one(addr: SocketAddr, raw: &str) -> Resp {
    let mut r = send(addr, raw.as_bytes());
    assert_eq!(r.len(), 1, "answers to {raw:?}: {r:?}");
    r.remove(0)
}

fn node_with_data(extra: &str) -> Node {
    let node = Node::start_with(extra);
    node.push(EVENTS);
    node
}

fn soap_request(ns: &str, ids: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{ns}"><s:Body><p:GetPresence xmlns:p="urn:presenced:v1"><p:ids>{ids}</p:ids></p:GetPresence></s:Body></s:Envelope>"#
    )
}

const SOAP11: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12: &str = "http://www.w3.org/2003/05/soap-envelope";

#[test]
fn every_endpoint() {
    let node = node_with_data("");
    let addr = node.http_addr();

    // GET /v1/presence: request order, exact shapes, u64::MAX.
    let r = one(
        addr,
        &get("/v1/presence?ids=10086,42,10010,18446744073709551615"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["node"], 1);
    let as_of = v["as_of"].as_str().unwrap();
    assert!(as_of.ends_with('Z') && as_of.len() == 24, "{as_of}");
    let s = v["statuses"].as_array().unwrap();
    let ids: Vec<&str> = s.iter().map(|x| x["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["10086", "42", "10010", "18446744073709551615"]);
    assert_eq!(
        (
            &s[0]["known"],
            &s[0]["online"],
            &s[0]["clients"],
            &s[0]["accepts_strangers"],
            &s[0]["ext"]
        ),
        (
            &json!(true),
            &json!(true),
            &json!(["pc", "mobile"]),
            &json!(true),
            &json!({"nick": "alice"})
        )
    );
    assert!(s[0]["changed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        s[1],
        json!({"id":"42","known":false,"online":false,"clients":[],"accepts_strangers":false,"changed_at":null,"ext":{}})
    );
    assert_eq!(
        (&s[2]["known"], &s[2]["online"], &s[2]["accepts_strangers"]),
        (&json!(true), &json!(false), &json!(false))
    );
    assert!(
        s[2]["changed_at"].is_string(),
        "a logged-out user keeps changed_at"
    );
    assert_eq!(s[3]["clients"], json!(["web"]));
    // The JSON keys come in the documented order.
    let raw = r.text();
    let order = [
        "\"id\"",
        "\"known\"",
        "\"online\"",
        "\"clients\"",
        "\"accepts_strangers\"",
        "\"changed_at\"",
        "\"ext\"",
    ];
    let pos: Vec<usize> = order.iter().map(|k| raw.find(k).unwrap()).collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "{raw}");

    // POST /v1/presence with numbers and strings.
    let r = one(
        addr,
        &post(
            "/v1/presence",
            "application/json",
            r#"{"ids":[10086,"18446744073709551615",18446744073709551615]}"#,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<Value> = r.json()["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [
            json!("10086"),
            json!("18446744073709551615"),
            json!("18446744073709551615")
        ]
    );

    // GET /v1/presence/{id}.
    let r = one(addr, &get("/v1/presence/10086"));
    assert_eq!(
        (r.status, r.json()["id"].clone(), r.json()["online"].clone()),
        (200, json!("10086"), json!(true))
    );
    let r = one(addr, &get("/v1/presence/7"));
    assert_eq!((r.status, r.json()["known"].clone()), (200, json!(false)));

    // GET /v1/cluster.
    let v = one(addr, &get("/v1/cluster")).json();
    for key in [
        "node",
        "term",
        "time_master",
        "data_master",
        "ready",
        "cluster_time_ms",
        "clock_offset_us",
        "records",
        "digest",
        "members",
    ] {
        assert!(v.get(key).is_some(), "/v1/cluster lacks {key}: {v}");
    }
    assert_eq!(v["node"], 1);

    // Health.
    let r = one(addr, &get("/healthz/live"));
    assert_eq!((r.status, r.json()), (200, json!({"status":"live"})));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = one(addr, &get("/healthz/ready"));
        if r.status == 200 {
            assert_eq!(r.json(), json!({"status":"ready"}));
            break;
        }
        assert_eq!(
            (r.status, r.json()["status"].clone()),
            (503, json!("not_ready"))
        );
        assert!(r.json()["reason"].is_string());
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Metrics.
    let r = one(addr, &get("/metrics"));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(r.text().contains("# TYPE"), "{}", r.text());

    // WSDL, with the address following Host.
    let r = one(
        addr,
        "GET /soap?wsdl HTTP/1.1\r\nHost: presence.example:8080\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/xml; charset=utf-8"))
    );
    assert!(r
        .text()
        .contains(r#"location="http://presence.example:8080/soap""#));
    let r = one(addr, &get("/soap?WSDL"));
    assert!(r.text().contains("<wsdl:definitions"));
    let r = one(
        addr,
        "GET /soap?wsdl HTTP/1.1\r\nHost: bad\"host\r\nConnection: close\r\n\r\n",
    );
    assert!(r.text().contains(r#"location="http://localhost/soap""#));

    // SOAP 1.1 and 1.2.
    let env = soap_request(
        SOAP11,
        "<p:id>10086</p:id><p:id> 18446744073709551615 </p:id><p:id>42</p:id>",
    );
    let r = one(addr, &post("/soap", "text/xml; charset=utf-8", &env));
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("text/xml; charset=utf-8"))
    );
    let t = r.text();
    assert!(
        t.contains("<client>PC</client><client>Mobile</client>"),
        "{t}"
    );
    assert!(t.contains("<id>18446744073709551615</id>"));
    assert!(
        t.contains("<extensions><entry><key>nick</key><value>alice</value></entry></extensions>")
    );
    let unknown = &t[t.find("<id>42</id>").unwrap()..];
    assert!(
        !unknown[..unknown.find("</status>").unwrap()].contains("lastChange"),
        "{t}"
    );
    let env = soap_request(SOAP12, "<p:id>10010</p:id>");
    let r = one(
        addr,
        &post("/soap", "application/soap+xml; charset=utf-8", &env),
    );
    assert_eq!(
        (r.status, r.header("content-type")),
        (200, Some("application/soap+xml; charset=utf-8"))
    );
    let t = r.text();
    assert!(t.contains("<known>true</known><online>false</online><clients></clients><acceptsStrangers>false</acceptsStrangers><lastChange>"), "{t}");
    // A fault.
    let r = one(
        addr,
        &post("/soap", "text/xml", &soap_request(SOAP11, "<p:id>0</p:id>")),
    );
    assert_eq!(r.status, 500);
    assert!(r.text().contains("<faultcode>soap:Client</faultcode>"));
    assert!(
        r.text().contains("<code>InvalidId</code>") && r.text().contains("<badValue>0</badValue>")
    );
    let r = one(
        addr,
        &post(
            "/soap",
            "application/soap+xml",
            &soap_request(SOAP12, "<p:id>x</p:id>"),
        ),
    );
    assert_eq!(r.status, 500);
    assert!(
        r.text().contains("<env:Value>env:Sender</env:Value>") && !r.text().contains("Subcode")
    );
}

#[test]
fn every_error_code() {
    let node = node_with_data(SMALL);
    let addr = node.http_addr();
    let cases: Vec<(String, &str)> = vec![
        (get("/v1/presence?ids=1,abc"), "400:invalid_id"),
        (get("/v1/presence?ids=0"), "400:invalid_id"),
        (get("/v1/presence/18446744073709551616"), "400:invalid_id"),
        (post("/v1/presence", "application/json", r#"{"ids":[-1]}"#), "400:invalid_id"),
        (get("/v1/presence?ids=1,2,3,4"), "400:too_many_ids"),
        (post("/v1/presence", "application/json", r#"{"ids":[1,2,3,4]}"#), "400:too_many_ids"),
        (post("/v1/presence", "application/json", r#"{"ids":[1,"#), "400:bad_json"),
        (post("/v1/presence", "application/json", r#"{"nope":1}"#), "400:bad_request"),
        (get("/v1/presence"), "400:bad_request"),
        (post("/v1/presence", "text/plain", r#"{"ids":[1]}"#), "415:unsupported_media_type"),
        (get("/nope"), "404:not_found"),
        (post("/v1/cluster", "application/json", "{}"), "405:method_not_allowed"),
        (post("/v1/presence", "application/json", &format!(r#"{{"ids":[{}]}}"#, "1,".repeat(60) + "1")), "413:body_too_large"),
        (get(&format!("/v1/presence?ids={}", "1".repeat(70))), "414:uri_too_long"),
        (format!("GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "a".repeat(600)), "431:headers_too_large"),
        ((0..9).map(|i| format!("X-{i}: a\r\n")).fold("GET / HTTP/1.1\r\nHost: t\r\n".to_owned(), |a, b| a + &b) + "\r\n", "431:headers_too_large"),
        ("POST /v1/presence HTTP/1.1\r\nHost: t\r\nExpect: teapot\r\nContent-Length: 2\r\n\r\n{}".into(), "417:expectation_failed"),
        ("GET / HTTP/2.0\r\nHost: t\r\n\r\n".into(), "505:version_not_supported"),
        ("GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n".into(), "400:bad_request"),
    ];
    for (req, expected) in cases {
        let r = one(addr, &req);
        assert_eq!(r.summary(), expected, "request {req:?}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("date").is_some());
    }
    let r = one(addr, &post("/v1/presence/1", "application/json", "{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = one(
        addr,
        "DELETE /v1/presence HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.header("allow")),
        (405, Some("GET, HEAD, POST"))
    );
    let r = one(addr, &get("/v1/presence?ids=x"));
    assert_eq!(r.json()["error"]["value"], "x");
    // 413 is answered before the body is sent, and the connection closes.
    let (r, closed) = closes_after(
        addr,
        b"POST /v1/presence HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        (r[0].summary().as_str(), closed),
        ("413:body_too_large", true)
    );
    // 414 before the request line is even complete.
    let (r, closed) = closes_after(
        addr,
        format!("GET /{}", "a".repeat(100)).as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(
        (r[0].summary().as_str(), closed),
        ("414:uri_too_long", true)
    );
}

/// Security review: where the contract is strict, so is the server (default limits).
#[test]
fn strict_where_the_contract_is_strict() {
    let node = node_with_data("");
    let addr = node.http_addr();
    // A 16 KiB target is 414, although it also makes the head longer than 16 KiB.
    let r = one(
        addr,
        &get(&format!("/v1/presence?ids={}", "1".repeat(16 * 1024))),
    );
    assert_eq!(r.summary(), "414:uri_too_long", "{}", r.text());
    // The echo of an id that is not a u64 is the literal as sent.
    let r = one(
        addr,
        &post(
            "/v1/presence",
            "application/json",
            r#"{"ids":[1,18446744073709551616]}"#,
        ),
    );
    assert_eq!(r.summary(), "400:invalid_id");
    assert!(
        r.text().contains(r#""value":18446744073709551616}"#),
        "{}",
        r.text()
    );
    // Invalid UTF-8 in a member that is otherwise ignored.
    let body = b"{\"ids\":[1],\"x\":\"\xff\"}";
    let mut raw = format!(
        "POST /v1/presence HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let r = send(addr, &raw);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].summary(), "400:bad_json", "{}", r[0].text());
    // GetPresence without ids, and a duplicate attribute: MalformedRequest faults.
    let soap = |env: &str| one(addr, &post("/soap", "text/xml; charset=utf-8", env));
    let no_ids = format!(
        r#"<s:Envelope xmlns:s="{SOAP11}"><s:Body><p:GetPresence xmlns:p="urn:presenced:v1"/></s:Body></s:Envelope>"#
    );
    let dup = soap_request(SOAP11, "<p:id>1</p:id>").replace("<p:ids>", r#"<p:ids a="1" a="2">"#);
    for env in [no_ids, dup] {
        let r = soap(&env);
        let t = r.text();
        assert_eq!(r.status, 500, "{env}: {t}");
        assert!(
            t.contains("<faultcode>soap:Client</faultcode>")
                && t.contains("PresenceFault")
                && t.contains("<code>MalformedRequest</code>"),
            "{env}: {t}"
        );
    }
    // An empty ids is an empty batch.
    let r = soap(&soap_request(SOAP11, ""));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn keep_alive_pipelining_head_and_http10() {
    let node = node_with_data("");
    let addr = node.http_addr();
    // Three pipelined requests in one write, answered in order on one connection.
    let raw = [
        get_ka("/v1/presence/10086"),
        get_ka("/nope"),
        get("/v1/presence/10010"),
    ]
    .concat();
    let r = send(addr, raw.as_bytes());
    let got: Vec<String> = r.iter().map(Resp::summary).collect();
    assert_eq!(got, ["200", "404:not_found", "200"]);
    assert_eq!(r[0].json()["id"], "10086");
    assert_eq!(r[2].json()["id"], "10010");
    assert_eq!(r[2].header("connection"), Some("close"));
    // Keep-alive across separate writes.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        s.write_all(get_ka("/healthz/live").as_bytes()).unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"));
    }
    // Connection: close stops the pipeline.
    let (r, closed) = closes_after(
        addr,
        [get("/healthz/live"), get_ka("/healthz/live")]
            .concat()
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!((r.len(), closed), (1, true));
    // HTTP/1.0 closes unless asked to keep alive.
    let (r, closed) = closes_after(
        addr,
        b"GET /healthz/live HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!((r.len(), r[0].status, closed), (1, 200, true));
    let (r, closed) = closes_after(
        addr,
        b"GET /healthz/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz/live HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        (r.len(), r[0].header("connection"), closed),
        (2, Some("keep-alive"), true)
    );
    // HEAD: the GET's headers, Content-Length included, and no body.
    let g = one(addr, &get("/v1/presence/10086"));
    let raw = common::exchange(
        addr,
        b"HEAD /v1/presence/10086 HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    let r = parse(&raw, &[true, false]);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0].header("content-length"),
        Some(g.body.len().to_string().as_str())
    );
    assert_eq!(r[0].header("content-type"), Some("application/json"));
    assert_eq!(r[1].json(), json!({"status":"live"}));
}

#[test]
fn chunked_bodies_and_expect_continue() {
    let node = node_with_data("");
    let addr = node.http_addr();
    let chunked = "POST /v1/presence HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n\
                   Transfer-Encoding: chunked\r\n\r\n6;ext=1\r\n{\"ids\"\r\n9\r\n:[10086]}\r\n0\r\nX-Trailer: ignored\r\n\r\n";
    let r = one(addr, chunked);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["statuses"][0]["online"], true);

    // Expect: 100-continue: the interim answer comes before the body is sent, once.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /v1/presence HTTP/1.1\r\nHost: t\r\nConnection: close\r\nExpect: 100-continue\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(br#"{"ids":[10086]}"#).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let r = parse(&rest, &[]);
    assert_eq!((r.len(), r[0].status), (1, 200));
    assert_eq!(r[0].json()["statuses"][0]["id"], "10086");
}

#[test]
fn smuggling_attempts_get_400_and_close() {
    let node = node_with_data("");
    let addr = node.http_addr();
    let base = "POST /v1/presence HTTP/1.1\r\nHost: t\r\n";
    // Each would smuggle the GET that follows if framing were lax.
    let smuggled = "GET /v1/presence/10086 HTTP/1.1\r\nHost: t\r\n\r\n";
    let framings = [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: gzip\r\n\r\n",
        "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: xchunked\r\n\r\n",
        "Content-Length: +4\r\n\r\nabcd",
        "Content-Length: -4\r\n\r\n",
        "Content-Length: 0x4\r\n\r\nabcd",
        "Content-Length: 4 4\r\n\r\nabcd",
        "Content-Length: 4,4\r\n\r\nabcd",
        "Content-Length: \r\n\r\n",
        "Content-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        "Content-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        "Transfer-Encoding: chunked\r\n\r\n-1\r\n",
        "Transfer-Encoding: chunked\r\n\r\n 4\r\nabcd\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
        "Transfer-Encoding: chunked\r\n\r\n4\r\nabcdef\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\n\r\n4;x\nyy\r\nabcd\r\n0\r\n\r\n",
    ];
    for f in framings {
        let raw = format!("{base}{f}{smuggled}");
        let (r, closed) = closes_after(addr, raw.as_bytes(), Duration::from_secs(5));
        let got: Vec<String> = r.iter().map(Resp::summary).collect();
        assert_eq!(
            (got, closed),
            (vec!["400:bad_request".to_owned()], true),
            "framing {f:?}"
        );
    }
    let (r, closed) = closes_after(
        addr,
        format!(
            "POST /v1/presence HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(
        (r.len(), r[0].summary().as_str(), closed),
        (1, "400:bad_request", true)
    );
    let (r, closed) = closes_after(
        addr,
        b"GET /healthz/live HTTP/1.1\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(
        (r[0].summary().as_str(), closed),
        ("400:bad_request", true),
        "Host is required"
    );
}

#[test]
fn slow_clients_time_out_and_others_keep_working() {
    let node = node_with_data(SMALL);
    let addr = node.http_addr();
    // Many connections each holding a partial head, trickling a byte every 100 ms until just
    // before the 300 ms head timeout (writing after the server closed could reset the
    // connection and lose the 408 in flight).
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let line = b"GET /healthz/live HTTP/1.1\r\nHost: t\r\n";
    for (i, byte) in line.iter().take(3).enumerate() {
        for s in &mut slow {
            let _ = s.write_all(&[*byte]);
        }
        if i == 1 {
            // Meanwhile a normal client is served at once.
            let t = Instant::now();
            let r = one(addr, &get("/v1/presence/10086"));
            assert_eq!(r.status, 200);
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "served in {:?}",
                t.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each slow connection gets a 408 and is closed, although it kept sending.
    for s in &mut slow {
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let r = parse(&out, &[]);
        assert_eq!(r.len(), 1, "{}", String::from_utf8_lossy(&out));
        assert_eq!(r[0].summary(), "408:timeout");
        assert_eq!(r[0].header("connection"), Some("close"));
    }
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "408s took {:?}",
        start.elapsed()
    );
    // A slow body times out the same way.
    let (r, closed) = closes_after(
        addr,
        b"POST /v1/presence HTTP/1.1\r\nHost: t\r\nContent-Length: 50\r\n\r\n{\"ids\"",
        Duration::from_secs(5),
    );
    assert_eq!((r[0].summary().as_str(), closed), ("408:timeout", true));
    // And the node still answers.
    assert_eq!(one(addr, &get("/healthz/live")).status, 200);
}
