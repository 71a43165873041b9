//! Unit tests of the HTTP front end as the node runs it: the connection state machine
//! ([`HttpConn`]) with the [`Router`], the JSON API and SOAP behind it, in memory with a simulated
//! clock. Most cases go through [`check`], which summarises what a connection answered to some
//! bytes as `"<status>[:<error code>] ... [close]"`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;
use crate::backend::Frontend;
use crate::fuzzing::{self, FakeBackend, FAKE_NOW_MS};
use crate::http::{split_target, HttpConn, HttpOutcome};

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Splits `out` into responses; `head_only` responses (answers to HEAD) have no body.
fn parse_responses(mut out: &[u8], head_only: bool) -> Vec<Resp> {
    let mut v = Vec::new();
    while !out.is_empty() {
        let mut h = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Response::new(&mut h);
        let n = match r.parse(out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                panic!("partial response: {:?}", String::from_utf8_lossy(out))
            }
        };
        let status = r.code.unwrap();
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body_len = if head_only || status == 100 { 0 } else { len };
        let body = String::from_utf8(out[n..n + body_len].to_vec()).unwrap();
        out = &out[n + body_len..];
        v.push(Resp {
            status,
            headers,
            body,
        });
    }
    v
}

/// A fresh connection answered by a [`Router`], as the node runs it.
fn new_conn(limits: HttpLimits) -> HttpConn<Router> {
    HttpConn::new(limits, Router::default())
}

fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(FAKE_NOW_MS)
}

/// Feeds `pieces` one after the other (as separate reads) to a fresh connection.
fn run_with(
    backend: &FakeBackend,
    limits: HttpLimits,
    pieces: &[&[u8]],
) -> (Vec<u8>, bool, HttpConn<Router>) {
    let now = Instant::now();
    let mut conn = new_conn(limits);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for p in pieces {
        buf.extend_from_slice(p);
        loop {
            let o = conn.handle_input(now, wall(), &buf, 64, backend, &mut out);
            assert!(o.consumed <= buf.len());
            buf.drain(..o.consumed);
            if o.close {
                return (out, true, conn);
            }
            if !o.more {
                break;
            }
        }
    }
    (out, false, conn)
}

fn run(input: &[u8]) -> (Vec<Resp>, bool) {
    let (out, close, _) = run_with(&FakeBackend::new(), HttpLimits::default(), &[input]);
    (parse_responses(&out, false), close)
}

fn summary(resps: &[Resp], close: bool) -> String {
    let mut parts: Vec<String> = resps
        .iter()
        .map(|r| {
            let code = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            match code {
                Some(c) => format!("{}:{c}", r.status),
                None => r.status.to_string(),
            }
        })
        .collect();
    if close {
        parts.push("close".into());
    }
    parts.join(" ")
}

/// Sends `input` with default limits and compares the summary of the answers.
#[track_caller]
fn check(input: &str, expected: &str) {
    let (resps, close) = run(input.as_bytes());
    assert_eq!(summary(&resps, close), expected, "input: {input:?}");
}

/// Like [`check`] with small limits: max_head 1024, max_headers 16, max_uri 256, max_body 4096.
#[track_caller]
fn check_small(input: &str, expected: &str) {
    let (out, close, _) = run_with(
        &FakeBackend::new(),
        fuzzing::small_limits(),
        &[input.as_bytes()],
    );
    assert_eq!(
        summary(&parse_responses(&out, false), close),
        expected,
        "input: {input:?}"
    );
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
}

fn post(path: &str, content_type: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const ALICE: &str = r#"{"id":"10086","known":true,"online":true,"clients":["pc","mobile"],"accepts_strangers":true,"changed_at":"2025-11-25T10:00:00.123Z","ext":{"nick":"alice"}}"#;
const LOGGED_OUT: &str = r#"{"id":"10010","known":true,"online":false,"clients":[],"accepts_strangers":false,"changed_at":"2025-11-25T09:59:00.123Z","ext":{}}"#;
const UNKNOWN_MAX: &str = r#"{"id":"18446744073709551615","known":false,"online":false,"clients":[],"accepts_strangers":false,"changed_at":null,"ext":{}}"#;

#[test]
fn presence_get_answers_in_request_order_with_exact_shape() {
    let (r, close) = run(get("/v1/presence?ids=10086,18446744073709551615,10010").as_bytes());
    assert!(!close);
    assert_eq!(r[0].status, 200);
    assert_eq!(r[0].header("content-type"), Some("application/json"));
    let expected = format!(
        r#"{{"as_of":"2025-11-25T10:00:00.123Z","node":1,"statuses":[{ALICE},{UNKNOWN_MAX},{LOGGED_OUT}]}}"#
    );
    assert_eq!(r[0].body, expected);
}

#[test]
fn presence_post_takes_numbers_and_strings() {
    let body =
        r#"{"ids":[10086,"18446744073709551615",18446744073709551615,"10010"],"extra":{"a":[1]}}"#;
    let (r, _) = run(post("/v1/presence", "application/json; charset=utf-8", body).as_bytes());
    assert_eq!(r[0].status, 200, "{}", r[0].body);
    let v = r[0].json();
    let ids: Vec<&str> = v["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "10086",
            "18446744073709551615",
            "18446744073709551615",
            "10010"
        ]
    );
}

#[test]
fn presence_one_is_a_bare_status() {
    let (r, _) = run(get("/v1/presence/10086").as_bytes());
    assert_eq!((r[0].status, r[0].body.as_str()), (200, ALICE));
    let (r, _) = run(get("/v1/presence/18446744073709551615").as_bytes());
    assert_eq!((r[0].status, r[0].body.as_str()), (200, UNKNOWN_MAX));
}

#[test]
fn empty_batches_are_fine() {
    let (r, _) = run(get("/v1/presence?ids=").as_bytes());
    assert_eq!(r[0].json()["statuses"], serde_json::json!([]));
    let (r, _) = run(post("/v1/presence", "application/json", r#"{"ids":[]}"#).as_bytes());
    assert_eq!(r[0].json()["statuses"], serde_json::json!([]));
}

#[test]
fn bad_ids_echo_the_value() {
    let cases: &[(&str, serde_json::Value)] = &[
        ("/v1/presence?ids=1,abc", "abc".into()),
        ("/v1/presence?ids=0", "0".into()),
        ("/v1/presence?ids=-1", "-1".into()),
        ("/v1/presence?ids=%2B1", "+1".into()),
        ("/v1/presence?ids=1,,2", "".into()),
        (
            "/v1/presence?ids=18446744073709551616",
            "18446744073709551616".into(),
        ),
        ("/v1/presence/abc", "abc".into()),
        ("/v1/presence/0", "0".into()),
    ];
    for (path, value) in cases {
        let (r, close) = run(get(path).as_bytes());
        assert!(!close, "an invalid id does not close the connection");
        assert_eq!(r[0].status, 400, "{path}");
        let v = r[0].json();
        assert_eq!(v["error"]["code"], "invalid_id", "{path}");
        assert_eq!(&v["error"]["value"], value, "{path}");
    }
    let posts: &[(&str, serde_json::Value)] = &[
        (r#"{"ids":[0]}"#, 0.into()),
        (r#"{"ids":[-1]}"#, (-1).into()),
        (r#"{"ids":[1.5]}"#, 1.5.into()),
        (r#"{"ids":["abc"]}"#, "abc".into()),
        (r#"{"ids":[" 1"]}"#, " 1".into()),
        (r#"{"ids":[true]}"#, true.into()),
        (r#"{"ids":[null]}"#, serde_json::Value::Null),
        (r#"{"ids":[[1]]}"#, serde_json::json!([1])),
        (r#"{"ids":[{"a":1}]}"#, serde_json::json!({"a":1})),
        (
            r#"{"ids":["18446744073709551616"]}"#,
            "18446744073709551616".into(),
        ),
        (
            r#"{"ids":[18446744073709551616]}"#,
            18446744073709551616f64.into(),
        ),
    ];
    for (body, value) in posts {
        let (r, _) = run(post("/v1/presence", "application/json", body).as_bytes());
        let v = r[0].json();
        assert_eq!(
            (r[0].status, &v["error"]["code"]),
            (400, &"invalid_id".into()),
            "{body}"
        );
        assert_eq!(&v["error"]["value"], value, "{body}");
    }
}

#[test]
fn batch_limit_is_enforced_on_every_form() {
    let mut b = FakeBackend::new();
    b.batch_limit = 3;
    let cases = [
        (get("/v1/presence?ids=1,2,3"), 200, None),
        (get("/v1/presence?ids=1,2,3,4"), 400, Some("too_many_ids")),
        (
            get("/v1/presence?ids=1,2&ids=3,4"),
            400,
            Some("too_many_ids"),
        ),
        (
            post("/v1/presence", "application/json", r#"{"ids":[1,2,3]}"#),
            200,
            None,
        ),
        (
            post("/v1/presence", "application/json", r#"{"ids":[1,2,3,4]}"#),
            400,
            Some("too_many_ids"),
        ),
    ];
    for (req, status, code) in cases {
        let (out, _, _) = run_with(&b, HttpLimits::default(), &[req.as_bytes()]);
        let r = parse_responses(&out, false);
        assert_eq!(r[0].status, status, "{req}");
        assert_eq!(r[0].json()["error"]["code"].as_str(), code, "{req}");
    }
}

#[test]
fn json_body_errors() {
    check(
        &post("/v1/presence", "application/json", r#"{"ids":[1,]}"#),
        "400:bad_json",
    );
    check(
        &post("/v1/presence", "application/json", r#"[1,2]"#),
        "400:bad_json",
    );
    check(
        &post("/v1/presence", "application/json", r#"{"ids":"1,2"}"#),
        "400:bad_json",
    );
    check(
        &post(
            "/v1/presence",
            "application/json",
            r#"{"ids":[1],"ids":[2]}"#,
        ),
        "400:bad_json",
    );
    check(
        &post("/v1/presence", "application/json", r#"{"ids":[1]} x"#),
        "400:bad_json",
    );
    check(
        &post("/v1/presence", "application/json", r#"{"id":[1]}"#),
        "400:bad_request",
    );
    check(
        &post("/v1/presence", "application/json", ""),
        "400:bad_json",
    );
    check(&get("/v1/presence"), "400:bad_request");
    check(&get("/v1/presence?ids=%zz"), "400:bad_request");
}

#[test]
fn content_type_of_posts() {
    check(
        &post("/v1/presence", "text/plain", r#"{"ids":[1]}"#),
        "415:unsupported_media_type",
    );
    check(
        &post(
            "/v1/presence",
            "application/x-www-form-urlencoded",
            r#"{"ids":[1]}"#,
        ),
        "415:unsupported_media_type",
    );
    check(
        &post("/v1/presence", "Application/JSON", r#"{"ids":[1]}"#),
        "200",
    );
    check(
        &post("/v1/presence", "application/merge+json", r#"{"ids":[1]}"#),
        "200",
    );
    let no_type =
        "POST /v1/presence HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"ids\":[1]}";
    check(no_type, "200");
}

#[test]
fn routing_errors() {
    check(&get("/"), "404:not_found");
    check(&get("/v1/presence/1/2"), "404:not_found");
    check(&get("/v1/presence/"), "404:not_found");
    check(&get("/v1/presencex"), "404:not_found");
    check(&get("/soap"), "400:bad_request");
    let (r, close) = run(b"DELETE /v1/presence HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r[0].status, r[0].header("allow"), close),
        (405, Some("GET, HEAD, POST"), false)
    );
    let (r, _) = run(post("/healthz/live", "application/json", "{}").as_bytes());
    assert_eq!(
        (r[0].status, r[0].header("allow")),
        (405, Some("GET, HEAD"))
    );
    let (r, _) = run(b"PUT /soap HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r[0].status, r[0].header("allow")),
        (405, Some("GET, HEAD, POST"))
    );
    let (r, _) = run(b"POST /v1/presence/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(
        (r[0].status, r[0].header("allow")),
        (405, Some("GET, HEAD"))
    );
}

#[test]
fn health_cluster_and_metrics() {
    let (r, _) = run(get("/healthz/live").as_bytes());
    assert_eq!(
        (r[0].status, r[0].body.as_str()),
        (200, r#"{"status":"live"}"#)
    );
    let (r, _) = run(get("/healthz/ready").as_bytes());
    assert_eq!(
        (r[0].status, r[0].body.as_str()),
        (200, r#"{"status":"ready"}"#)
    );
    let mut b = FakeBackend::new();
    b.not_ready = Some("syncing \"data\"".into());
    let (out, _, _) = run_with(
        &b,
        HttpLimits::default(),
        &[get("/healthz/ready").as_bytes()],
    );
    let r = parse_responses(&out, false);
    assert_eq!(
        (r[0].status, r[0].body.as_str()),
        (503, r#"{"status":"not_ready","reason":"syncing \"data\""}"#)
    );
    let (r, _) = run(get("/v1/cluster").as_bytes());
    assert_eq!(
        r[0].json(),
        serde_json::json!({
            "node":1,"term":3,"time_master":1,"data_master":1,"ready":true,
            "cluster_time_ms":FAKE_NOW_MS,"clock_offset_us":-12,"records":2,"digest":"00ff",
            "members":[{"id":1,"alive":true,"ready":true}]
        })
    );
    let (r, _) = run(get("/metrics").as_bytes());
    assert_eq!(
        r[0].header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(r[0].body.contains("presenced_queries_total 0\n"));
}

#[test]
fn every_response_has_date_length_and_type() {
    let input = [
        get("/healthz/live"),
        get("/nope"),
        get("/v1/presence?ids=1"),
        get("/soap?WSDL"),
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n".into(),
    ]
    .concat();
    let (r, close) = run(input.as_bytes());
    assert_eq!(
        summary(&r, close),
        "200 404:not_found 200 200 400:bad_request close"
    );
    for resp in &r {
        assert_eq!(resp.header("date"), Some("Tue, 25 Nov 2025 10:00:00 GMT"));
        assert_eq!(
            resp.header("content-length"),
            Some(resp.body.len().to_string().as_str())
        );
        assert!(resp.header("content-type").is_some());
    }
    assert_eq!(r[4].header("connection"), Some("close"));
}

#[test]
fn keep_alive_pipelining_and_close() {
    let three = [
        get("/healthz/live"),
        get("/nope"),
        get("/v1/presence/10086"),
    ]
    .concat();
    check(&three, "200 404:not_found 200");
    let close_first = "GET /healthz/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        .to_owned()
        + &get("/healthz/live");
    check(&close_first, "200 close");
    check(
        "GET /healthz/live HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\n\r\n",
        "200 close",
    );
    check(
        "GET /healthz/live HTTP/1.0\r\n\r\nGET /healthz/live HTTP/1.0\r\n\r\n",
        "200 close",
    );
    let (r, close) = run(
        b"GET /healthz/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /nope HTTP/1.0\r\n\r\n",
    );
    assert_eq!(summary(&r, close), "200 404:not_found close");
    assert_eq!(r[0].header("connection"), Some("keep-alive"));
    assert_eq!(r[1].header("connection"), Some("close"));
    // Empty lines between requests are ignored (RFC 9112 §2.2).
    check(
        &format!(
            "\r\n\r\n{}\r\n{}",
            get("/healthz/live"),
            get("/healthz/live")
        ),
        "200 200",
    );
}

#[test]
fn pipelined_responses_stay_in_order_across_reads() {
    let reqs = [
        get("/v1/presence/1"),
        post("/v1/presence", "application/json", r#"{"ids":[2]}"#),
        get("/v1/presence/3"),
    ]
    .concat();
    let b = FakeBackend::new();
    let whole = run_with(&b, HttpLimits::default(), &[reqs.as_bytes()]).0;
    let pieces: Vec<&[u8]> = reqs.as_bytes().chunks(7).collect();
    let split = run_with(&b, HttpLimits::default(), &pieces).0;
    assert_eq!(whole, split);
    let ids: Vec<String> = parse_responses(&whole, false)
        .iter()
        .map(|r| {
            let v = r.json();
            v.get("statuses")
                .map_or_else(|| v["id"].clone(), |s| s[0]["id"].clone())
                .to_string()
        })
        .collect();
    assert_eq!(ids, [r#""1""#, r#""2""#, r#""3""#]);
}

#[test]
fn request_budget_leaves_the_rest_for_later() {
    let b = FakeBackend::new();
    let now = Instant::now();
    let one = get("/healthz/live");
    let input = [one.clone(), one.clone(), one.clone()].concat();
    let mut conn = new_conn(HttpLimits::default());
    let mut out = Vec::new();
    let o = conn.handle_input(now, wall(), input.as_bytes(), 1, &b, &mut out);
    assert_eq!(
        o,
        HttpOutcome {
            consumed: one.len(),
            close: false,
            more: true
        }
    );
    let o = conn.handle_input(now, wall(), &input.as_bytes()[one.len()..], 2, &b, &mut out);
    assert_eq!(
        o,
        HttpOutcome {
            consumed: 2 * one.len(),
            close: false,
            more: false
        }
    );
    assert_eq!(parse_responses(&out, false).len(), 3);
    // A budget of zero handles nothing.
    let o = conn.handle_input(now, wall(), one.as_bytes(), 0, &b, &mut out);
    assert_eq!(
        o,
        HttpOutcome {
            consumed: 0,
            close: false,
            more: true
        }
    );
}

#[test]
fn bodies_split_across_reads() {
    let body = r#"{"ids":[10086]}"#;
    let req = post("/v1/presence", "application/json", body);
    let (head, rest) = req.split_at(req.len() - body.len() + 3);
    let b = FakeBackend::new();
    let (out, close, _) = run_with(
        &b,
        HttpLimits::default(),
        &[head.as_bytes(), rest.as_bytes()],
    );
    let r = parse_responses(&out, false);
    assert_eq!((r.len(), r[0].status, close), (1, 200, false));
}

#[test]
fn chunked_bodies_with_extensions_and_trailers() {
    let req = "POST /v1/presence HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
               5;ext=\"a\"\r\n{\"ids\r\nA\r\n\":[10086]}\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let b = FakeBackend::new();
    for pieces in [vec![req.as_bytes()], req.as_bytes().chunks(1).collect()] {
        let (out, close, _) = run_with(&b, HttpLimits::default(), &pieces);
        let r = parse_responses(&out, false);
        assert_eq!(
            (r.len(), r[0].status, close),
            (1, 200, false),
            "{}",
            r[0].body
        );
        assert_eq!(r[0].json()["statuses"][0]["id"], "10086");
    }
    check(
        &(req.replace("Transfer-Encoding: chunked", "Transfer-Encoding: Chunked") + &get("/x")),
        "200 404:not_found",
    );
}

#[test]
fn expect_100_continue() {
    let b = FakeBackend::new();
    let now = Instant::now();
    let mut conn = new_conn(HttpLimits::default());
    let head = "POST /v1/presence HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
                Content-Type: application/json\r\nContent-Length: 11\r\n\r\n";
    let mut out = Vec::new();
    let o = conn.handle_input(now, wall(), head.as_bytes(), 8, &b, &mut out);
    assert_eq!(
        o,
        HttpOutcome {
            consumed: head.len(),
            close: false,
            more: false
        }
    );
    assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    // The 100 is sent once, even if the body then arrives a byte at a time.
    out.clear();
    let o = conn.handle_input(now, wall(), b"{", 8, &b, &mut out);
    assert_eq!((o.consumed, out.len()), (1, 0));
    let o = conn.handle_input(now, wall(), b"\"ids\":[1]}", 8, &b, &mut out);
    assert_eq!(o.consumed, 10);
    let r = parse_responses(&out, false);
    assert_eq!((r.len(), r[0].status), (1, 200));
    // With the body already there, no 100 is sent.
    let whole = format!("{head}{{\"ids\":[1]}}");
    let (r, _) = run(whole.as_bytes());
    assert_eq!(summary(&r, false), "200");
    // Over the body limit: 413 at once, no 100, and close.
    let big = head.replace("Content-Length: 11", "Content-Length: 99999999");
    check(&big, "413:body_too_large close");
    // Any other expectation: 417 and close. HTTP/1.0 expectations are ignored.
    check(
        "POST /v1/presence HTTP/1.1\r\nHost: x\r\nExpect: fly\r\nContent-Length: 1\r\n\r\n1",
        "417:expectation_failed close",
    );
    check(
        "GET /healthz/live HTTP/1.0\r\nExpect: fly\r\n\r\n",
        "200 close",
    );
}

#[test]
fn head_has_the_get_headers_and_no_body() {
    let b = FakeBackend::new();
    let (out_get, _, _) = run_with(
        &b,
        HttpLimits::default(),
        &[get("/v1/presence/10086").as_bytes()],
    );
    let (out_head, _, _) = run_with(
        &b,
        HttpLimits::default(),
        &[
            b"HEAD /v1/presence/10086 HTTP/1.1\r\nHost: x\r\n\r\n",
            get("/healthz/live").as_bytes(),
        ],
    );
    let g = &parse_responses(&out_get, false)[0];
    let text = String::from_utf8(out_head).unwrap();
    let (head_resp, next) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head_resp.contains(&format!("Content-Length: {}", g.body.len())),
        "{head_resp}"
    );
    assert!(head_resp.contains("Content-Type: application/json"));
    assert!(
        next.starts_with("HTTP/1.1 200 OK\r\n"),
        "no body after a HEAD response: {next}"
    );
}

#[test]
fn size_limits() {
    // Head larger than max_head (1024), complete or not.
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1100)
    );
    check_small(&big_header, "431:headers_too_large close");
    check_small(&big_header[..1060], "431:headers_too_large close");
    let many: String = (0..17).map(|i| format!("X-{i}: a\r\n")).collect();
    check_small(
        &format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
        "431:headers_too_large close",
    );
    // Target longer than max_uri (256), complete or still arriving.
    let long = format!("/v1/presence?ids={}", "1,".repeat(200));
    check_small(&get(&long), "414:uri_too_long close");
    check_small(&format!("GET {long}"), "414:uri_too_long close");
    // A method with no end in sight.
    check_small(&"A".repeat(1100), "400:bad_request close");
}

/// The request line alone decides 414: a target above max_uri (256) is 414 even when it also
/// makes the head longer than max_head (1024), whether the head arrives whole, with its line
/// complete but not its headers, or cut inside the target. 431 is for what the headers add.
#[test]
fn long_targets_are_414_even_past_the_head_limit() {
    let long = format!("/{}", "a".repeat(2000));
    check_small(&get(&long), "414:uri_too_long close");
    check_small(
        &format!("GET {long} HTTP/1.1\r\nHost: x\r\n"),
        "414:uri_too_long close",
    );
    check_small(&format!("GET {long}"), "414:uri_too_long close");
    let pieces = get(&long);
    let (head, tail) = pieces.split_at(600);
    let (out, close, _) = run_with(
        &FakeBackend::new(),
        fuzzing::small_limits(),
        &[head.as_bytes(), tail.as_bytes()],
    );
    assert_eq!(
        summary(&parse_responses(&out, false), close),
        "414:uri_too_long close"
    );
    // Exactly at the limits.
    let at_uri = format!("/{}", "a".repeat(255));
    check_small(&get(&at_uri), "404:not_found");
    check_small(&get(&format!("{at_uri}a")), "414:uri_too_long close");
    // A target at max_uri, headers past max_head: 431, complete or not.
    let big = format!(
        "GET {at_uri} HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "b".repeat(800)
    );
    check_small(&big, "431:headers_too_large close");
    check_small(&big[..1030], "431:headers_too_large close");
    // A head of exactly max_head bytes is accepted, one more byte is not.
    let sized = |n: usize| {
        let base = format!("GET {at_uri} HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n");
        base.replace("X: ", &format!("X: {}", "b".repeat(n - base.len())))
    };
    assert_eq!(sized(1024).len(), 1024);
    check_small(&sized(1024), "404:not_found");
    check_small(&sized(1025), "431:headers_too_large close");
    // Body larger than max_body (4096): refused before it arrives.
    check_small(
        "POST /v1/presence HTTP/1.1\r\nHost: x\r\nContent-Length: 4097\r\n\r\n",
        "413:body_too_large close",
    );
    check_small(
        "POST /v1/presence HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "413:body_too_large close",
    );
    // Chunked bodies that grow past it.
    let chunk = format!("800\r\n{}\r\n", "a".repeat(0x800));
    let req = format!("POST /v1/presence HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}1\r\n");
    check_small(&req, "413:body_too_large close");
    check_small(
        "POST /v1/presence HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
        "413:body_too_large close",
    );
}

#[test]
fn smuggling_attempts_are_refused_and_close() {
    let base = "POST /v1/presence HTTP/1.1\r\nHost: x\r\n";
    let cases = [
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: \r\n",
        "Content-Length: +3\r\n",
        "Content-Length: -3\r\n",
        "Content-Length: 0x3\r\n",
        "Content-Length: 3a\r\n",
        "Content-Length: \r\n",
        "Content-Length: 1 2\r\n",
        "Content-Length: 3,3\r\n",
        "Content-Length: 3\r\nContent-Length: 4\r\n",
        "Content-Length: 3\r\nContent-Length: 3\r\n",
    ];
    for c in cases {
        check(&format!("{base}{c}\r\nabc"), "400:bad_request close");
    }
    let chunked = format!("{base}Transfer-Encoding: chunked\r\n\r\n");
    let bodies = [
        "zz\r\n",
        " 3\r\nabc\r\n0\r\n\r\n",
        ";x\r\n",
        "11111111111111111\r\n",
        "3\r\nabcd\r\n0\r\n\r\n",
        "3\nabc\r\n0\r\n\r\n",
        "3;a\nb\r\nabc\r\n0\r\n\r\n",
        "3\r\nabc\n0\r\n\r\n",
        "3\r\nabc\r\n0\r\nbad trailer\r\n\r\n",
    ];
    for b in bodies {
        check(&format!("{chunked}{b}"), "400:bad_request close");
    }
    // Transfer-Encoding in HTTP/1.0 is faulty framing (RFC 9112 §6.1).
    check(
        "POST /v1/presence HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "400:bad_request close",
    );
    // Host is required, once, in HTTP/1.1.
    check(
        "GET /healthz/live HTTP/1.1\r\n\r\n",
        "400:bad_request close",
    );
    check(
        "GET /healthz/live HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "400:bad_request close",
    );
    // Nothing after the refusal is answered.
    check(
        &format!(
            "{base}Content-Length: 1\r\nContent-Length: 2\r\n\r\n{}",
            get("/healthz/live")
        ),
        "400:bad_request close",
    );
}

#[test]
fn malformed_heads_and_versions() {
    check(
        "GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        "505:version_not_supported close",
    );
    check(
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "505:version_not_supported close",
    );
    check(
        "GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        "505:version_not_supported close",
    );
    check("GET / FOO/1.1\r\nHost: x\r\n\r\n", "400:bad_request close");
    let (r, close) = run(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
    assert_eq!(
        summary(&r, close),
        "400:bad_request close",
        "a TLS ClientHello"
    );
    check(
        "GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
        "400:bad_request close",
    );
    check(
        "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        "400:bad_request close",
    );
    check(
        "GET noslash HTTP/1.1\r\nHost: x\r\n\r\n",
        "400:bad_request close",
    );
    check(
        "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        "400:bad_request close",
    );
}

#[test]
fn absolute_form_and_asterisk_targets() {
    check(
        "GET http://example.com/healthz/live HTTP/1.1\r\nHost: example.com\r\n\r\n",
        "200",
    );
    check(
        "GET HTTP://example.com:80/v1/presence?ids=1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "200",
    );
    check(
        "GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n",
        "404:not_found",
    );
    check("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "404:not_found");
    assert_eq!(split_target("/a?b=c"), Some(("/a", Some("b=c"))));
    assert_eq!(split_target("http://h?x"), Some(("/", Some("x"))));
    assert_eq!(split_target("ftp://h/"), None);
}

#[test]
fn slow_heads_time_out_from_their_first_byte() {
    let b = FakeBackend::new();
    let t0 = Instant::now();
    let limits = HttpLimits {
        head_timeout: Duration::from_millis(300),
        ..HttpLimits::default()
    };
    let mut conn = new_conn(limits);
    let mut out = Vec::new();
    assert_eq!(conn.poll_timeout(), None);
    let mut input = Vec::new();
    // A byte every 100 ms: the deadline does not move.
    for (i, byte) in b"GET / HTTP/1.1\r\n".iter().take(3).enumerate() {
        input.push(*byte);
        let now = t0 + Duration::from_millis(100 * i as u64);
        let o = conn.handle_input(now, wall(), &input, 8, &b, &mut out);
        assert_eq!((o.consumed, o.close), (0, false));
        assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_millis(300)));
    }
    assert!(!conn.handle_timeout(t0 + Duration::from_millis(299), wall(), &mut out));
    assert!(out.is_empty());
    assert!(conn.handle_timeout(t0 + Duration::from_millis(300), wall(), &mut out));
    let r = parse_responses(&out, false);
    assert_eq!(summary(&r, false), "408:timeout");
    assert_eq!(r[0].header("connection"), Some("close"));
    assert_eq!(conn.poll_timeout(), None);
    let o = conn.handle_input(t0, wall(), b"more", 8, &b, &mut out);
    assert_eq!(
        o,
        HttpOutcome {
            consumed: 4,
            close: true,
            more: false
        }
    );
}

#[test]
fn late_input_on_an_expired_head_is_a_timeout() {
    let b = FakeBackend::new();
    let t0 = Instant::now();
    let mut conn = new_conn(HttpLimits::default());
    let mut out = Vec::new();
    conn.handle_input(t0, wall(), b"GET / HT", 8, &b, &mut out);
    let o = conn.handle_input(
        t0 + Duration::from_secs(11),
        wall(),
        b"GET / HTTP",
        8,
        &b,
        &mut out,
    );
    assert!(o.close);
    assert_eq!(summary(&parse_responses(&out, false), false), "408:timeout");
}

#[test]
fn slow_bodies_time_out() {
    let b = FakeBackend::new();
    let t0 = Instant::now();
    let limits = HttpLimits {
        body_timeout: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let mut conn = new_conn(limits);
    let mut out = Vec::new();
    let head = "POST /v1/presence HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{";
    let o = conn.handle_input(t0, wall(), head.as_bytes(), 8, &b, &mut out);
    assert_eq!(o.consumed, head.len());
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    conn.handle_input(
        t0 + Duration::from_millis(400),
        wall(),
        b"\"",
        8,
        &b,
        &mut out,
    );
    assert_eq!(conn.poll_timeout(), Some(t0 + Duration::from_millis(500)));
    assert!(conn.handle_timeout(t0 + Duration::from_millis(500), wall(), &mut out));
    let r = parse_responses(&out, false);
    assert_eq!(summary(&r, false), "408:timeout");
    assert!(r[0].body.contains("body"));
}

#[test]
fn idle_connections_have_no_deadline() {
    let b = FakeBackend::new();
    let mut conn = new_conn(HttpLimits::default());
    let mut out = Vec::new();
    let now = Instant::now();
    conn.handle_input(
        now,
        wall(),
        get("/healthz/live").as_bytes(),
        8,
        &b,
        &mut out,
    );
    assert_eq!(conn.poll_timeout(), None);
    conn.handle_input(now, wall(), b"\r\n", 8, &b, &mut out);
    assert_eq!(conn.poll_timeout(), None);
    assert!(!conn.handle_timeout(now + Duration::from_secs(3600), wall(), &mut out));
}

#[test]
fn metrics_are_recorded() {
    let b = FakeBackend::new();
    let input = [
        get("/v1/presence?ids=1,2,3"),
        get("/v1/presence/9"),
        post("/v1/presence", "application/json", r#"{"ids":[1,2]}"#),
        get("/v1/presence?ids=x"),
        get("/nope"),
        "GET / HTTP/1.1\r\n\r\n".into(),
    ]
    .concat();
    run_with(&b, HttpLimits::default(), &[input.as_bytes()]);
    assert_eq!(
        *b.queries.borrow(),
        [
            (Frontend::Json, 3),
            (Frontend::Json, 1),
            (Frontend::Json, 2)
        ]
    );
    assert_eq!(
        *b.errors.borrow(),
        ["invalid_id", "not_found", "bad_request"]
    );
}

#[test]
fn soap_over_http() {
    let mut env = Vec::new();
    soap::write_request(
        soap::SoapVersion::V12,
        &[Sid::new(10086).unwrap()],
        &mut env,
    );
    let env = String::from_utf8(env).unwrap();
    let (r, _) = run(post("/soap", "application/soap+xml; charset=utf-8", &env).as_bytes());
    assert_eq!(r[0].status, 200);
    assert_eq!(
        r[0].header("content-type"),
        Some("application/soap+xml; charset=utf-8")
    );
    assert!(r[0].body.contains("<id>10086</id>"));
    let bad = env.replace("10086", "abc");
    let (r, close) = run(post("/soap", "text/xml", &bad).as_bytes());
    assert_eq!((r[0].status, close), (500, false));
    assert!(r[0].body.contains("<code>InvalidId</code>"));
    let (r, _) = run(b"GET /soap?wsdl HTTP/1.1\r\nHost: presence.example:8080\r\n\r\n");
    assert_eq!(r[0].header("content-type"), Some("text/xml; charset=utf-8"));
    assert!(r[0]
        .body
        .contains(r#"location="http://presence.example:8080/soap""#));
}

#[test]
fn query_flags() {
    assert!(query_has_flag(Some("x=1&WSDL"), "wsdl"));
    assert!(query_has_flag(Some("wsdl="), "wsdl"));
    assert!(!query_has_flag(Some("wsdlx"), "wsdl"));
    assert!(!query_has_flag(None, "wsdl"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzzing::http_request(&data);
    }

    #[test]
    fn http_like_bytes_never_panic(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("GET /v1/presence?ids=1 HTTP/1.1\r\n".to_owned()),
                Just("POST /v1/presence HTTP/1.1\r\n".to_owned()),
                Just("Host: x\r\n".to_owned()),
                Just("Transfer-Encoding: chunked\r\n".to_owned()),
                Just("Content-Length: 5\r\n".to_owned()),
                Just("Expect: 100-continue\r\n".to_owned()),
                Just("Connection: close\r\n".to_owned()),
                Just("\r\n".to_owned()),
                Just("5\r\n".to_owned()),
                Just("0\r\n".to_owned()),
                Just("{\"ids\":[1]}".to_owned()),
                "[ -~]{0,12}",
            ],
            0..24,
        )
    ) {
        fuzzing::http_request(parts.concat().as_bytes());
    }

    /// Well-formed pipelines get the same answers however the bytes are split into reads.
    #[test]
    fn answers_do_not_depend_on_read_boundaries(
        picks in proptest::collection::vec(0usize..6, 1..6),
        cut in 1usize..64,
    ) {
        let reqs = [
            get("/v1/presence?ids=10086,5"),
            post("/v1/presence", "application/json", r#"{"ids":["10010",1]}"#),
            "POST /v1/presence HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"id\r\n7\r\ns\":[1]}\r\n0\r\n\r\n".to_owned(),
            "HEAD /v1/presence/10086 HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            get("/nope"),
            get("/v1/presence?ids=bad"),
        ];
        let input: String = picks.iter().map(|&i| reqs[i].clone()).collect();
        let b = FakeBackend::new();
        let whole = run_with(&b, HttpLimits::default(), &[input.as_bytes()]).0;
        let pieces: Vec<&[u8]> = input.as_bytes().chunks(cut).collect();
        let split = run_with(&b, HttpLimits::default(), &pieces).0;
        prop_assert_eq!(whole, split);
    }
}

mod web;
