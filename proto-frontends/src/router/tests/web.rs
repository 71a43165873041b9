//! The `<web>` endpoints through the router: the badge, the widget, the status page and CORS,
//! on and off.

use presenced_config::{Unknown, Web};
use presenced_core::auth::ApiKeys;

use super::*;

const ORIGIN: &str = "http://page.example:8000";

fn web() -> Web {
    Web::from_attrs(
        Some("https://chat.example.com/?to={id}"),
        Some(ORIGIN),
        None,
        None,
        None,
    )
    .unwrap()
}

fn backend_with(web: Option<Web>) -> FakeBackend {
    let mut b = FakeBackend::new();
    b.web = web;
    b
}

/// Sends one request to `backend` and parses the one response.
fn one(backend: &FakeBackend, input: &str) -> Resp {
    let (out, _, _) = run_with(backend, HttpLimits::default(), &[input.as_bytes()]);
    let mut v = parse_responses(&out, input.starts_with("HEAD"));
    assert_eq!(v.len(), 1, "{}", String::from_utf8_lossy(&out));
    v.remove(0)
}

fn with_headers(method: &str, path: &str, headers: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n")
}

#[test]
fn everything_is_off_without_web() {
    let b = backend_with(None);
    for path in ["/v1/presence/10086/badge.svg", "/widget.js", "/"] {
        assert_eq!(one(&b, &get(path)).status, 404, "{path}");
    }
    let r = one(
        &b,
        &with_headers(
            "GET",
            "/v1/presence?ids=1",
            &format!("Origin: {ORIGIN}\r\n"),
        ),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("vary"), None);
    let r = one(
        &b,
        &with_headers("OPTIONS", "/v1/presence", &format!("Origin: {ORIGIN}\r\n")),
    );
    assert_eq!(r.status, 405);
}

#[test]
fn badge_shapes_themes_and_validators() {
    let b = backend_with(Some(web()));
    let r = one(&b, &get("/v1/presence/10086/badge.svg"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=10"));
    assert!(r
        .body
        .starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(r.body.contains(r#"role="img""#));
    assert!(r.body.contains("<title>10086: online (pc, mobile)</title>"));
    assert!(r.body.contains(">online \u{b7} pc, mobile</text>"));
    assert!(r.body.contains("#ffffff"), "light by default");
    let tag = r.header("etag").unwrap().to_owned();
    assert!(tag.starts_with('"') && tag.ends_with('"'), "strong: {tag}");

    let again = one(&b, &get("/v1/presence/10086/badge.svg?theme=light&v=2"));
    assert_eq!(
        again.header("etag"),
        Some(tag.as_str()),
        "cache busters ignored"
    );
    let r = one(
        &b,
        &with_headers(
            "GET",
            "/v1/presence/10086/badge.svg",
            &format!("If-None-Match: {tag}\r\n"),
        ),
    );
    assert_eq!((r.status, r.body.as_str()), (304, ""));
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("etag"), Some(tag.as_str()));
    assert_eq!(r.header("cache-control"), Some("public, max-age=10"));
    let r = one(
        &b,
        &with_headers(
            "GET",
            "/v1/presence/10086/badge.svg",
            "If-None-Match: \"other\"\r\n",
        ),
    );
    assert_eq!(r.status, 200);

    let dark = one(&b, &get("/v1/presence/10086/badge.svg?theme=dark"));
    assert!(dark.body.contains("#0d1117"));
    assert_ne!(dark.header("etag"), Some(tag.as_str()));
    let dot = one(&b, &get("/v1/presence/10086/badge.svg?theme=dot"));
    assert!(dot.body.contains(r#"width="12""#) && dot.body.contains("<title>10086: online"));
    let off = one(&b, &get("/v1/presence/10010/badge.svg"));
    assert!(off.body.contains("<title>10010: offline</title>") && off.body.contains(">offline<"));

    check_web(
        &b,
        &get("/v1/presence/10086/badge.svg?theme=neon"),
        "400:bad_request",
    );
    check_web(&b, &get("/v1/presence/0/badge.svg"), "400:invalid_id");
    check_web(&b, &get("/v1/presence/x/badge.svg"), "400:invalid_id");
    check_web(&b, &get("/v1/presence/1/2/badge.svg"), "404:not_found");
    check_web(
        &b,
        &post("/v1/presence/1/badge.svg", "text/plain", ""),
        "405:method_not_allowed",
    );
    let head = one(
        &b,
        &with_headers("HEAD", "/v1/presence/10086/badge.svg", ""),
    );
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.header("etag"), Some(tag.as_str()));
}

#[track_caller]
fn check_web(b: &FakeBackend, input: &str, expected: &str) {
    let (out, close, _) = run_with(b, HttpLimits::default(), &[input.as_bytes()]);
    assert_eq!(
        summary(&parse_responses(&out, false), close),
        expected,
        "{input:?}"
    );
}

#[test]
fn hide_mode_badges_of_offline_and_unknown_users_are_the_same_bytes() {
    let mut b = backend_with(Some(web()));
    let offline = one(&b, &get("/v1/presence/10010/badge.svg"));
    b.users.remove(&10010);
    let unknown = one(&b, &get("/v1/presence/10010/badge.svg"));
    assert_eq!(offline.body, unknown.body);
    assert_eq!(offline.header("etag"), unknown.header("etag"));

    let mut w = web();
    w.unknown = Unknown::Show;
    b.web = Some(w);
    let unknown = one(&b, &get("/v1/presence/10010/badge.svg"));
    assert!(unknown.body.contains("<title>10010: unknown</title>"));
    assert_ne!(offline.body, unknown.body);
}

#[test]
fn public_endpoints_stay_open_with_api_keys() {
    let mut b = backend_with(Some(web()));
    b.api_keys = ApiKeys::new([("k".to_owned(), b"secret-key-0123456789".to_vec())]);
    for path in ["/v1/presence/10086/badge.svg", "/widget.js", "/"] {
        assert_eq!(one(&b, &get(path)).status, 200, "{path}");
    }
    assert_eq!(one(&b, &get("/v1/presence/10086")).status, 401);
    // A preflight carries no credentials and is answered before the key check; the refusal of
    // the actual request carries CORS headers so the page can read it.
    let r = one(
        &b,
        &with_headers("OPTIONS", "/v1/presence", &format!("Origin: {ORIGIN}\r\n")),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
    let r = one(
        &b,
        &with_headers(
            "GET",
            "/v1/presence?ids=1",
            &format!("Origin: {ORIGIN}\r\n"),
        ),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
}

#[test]
fn cors_on_the_api_watch_badge_and_soap() {
    let b = backend_with(Some(web()));
    let requests = [
        with_headers("GET", "/v1/presence?ids=1", &format!("Origin: {ORIGIN}\r\n")),
        with_headers("GET", "/v1/presence/10086", &format!("Origin: {ORIGIN}\r\n")),
        with_headers("GET", "/v1/presence/10086/badge.svg", &format!("Origin: {ORIGIN}\r\n")),
        format!(
            "POST /soap HTTP/1.1\r\nHost: x\r\nOrigin: {ORIGIN}\r\nContent-Type: text/xml\r\nContent-Length: 0\r\n\r\n"
        ),
    ];
    for req in &requests {
        let r = one(&b, req);
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some(ORIGIN),
            "{req}"
        );
        assert_eq!(r.header("vary"), Some("Origin"), "{req}");
        let other = req.replace(ORIGIN, "http://evil.example");
        let r = one(&b, &other);
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
        assert_eq!(r.header("vary"), Some("Origin"), "{other}");
    }
    // Origins compare case-insensitively (the config lower-cases them).
    let r = one(
        &b,
        &with_headers(
            "GET",
            "/v1/presence?ids=1",
            "Origin: HTTP://PAGE.example:8000\r\n",
        ),
    );
    assert!(r.header("access-control-allow-origin").is_some());
    // Not on the paths CORS does not cover.
    let r = one(
        &b,
        &with_headers("GET", "/v1/cluster", &format!("Origin: {ORIGIN}\r\n")),
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn preflights() {
    let b = backend_with(Some(web()));
    for path in [
        "/v1/presence",
        "/v1/presence/1",
        "/v1/watch",
        "/v1/presence/1/badge.svg",
        "/soap",
    ] {
        let req = with_headers(
            "OPTIONS",
            path,
            &format!("Origin: {ORIGIN}\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id\r\n"),
        );
        let r = one(&b, &req);
        assert_eq!((r.status, r.body.as_str()), (204, ""), "{path}");
        assert_eq!(r.header("content-length"), None, "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some(ORIGIN));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, POST, OPTIONS")
        );
        assert_eq!(
            r.header("access-control-allow-headers"),
            Some("Authorization, Content-Type, Last-Event-ID, SOAPAction")
        );
        assert_eq!(r.header("access-control-max-age"), Some("600"));
        let r = one(&b, &req.replace(ORIGIN, "http://evil.example"));
        assert_eq!(r.status, 204);
        for h in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-max-age",
        ] {
            assert_eq!(r.header(h), None, "{path} {h}");
        }
    }
    // `<web>` without allowed-origins: 204, no CORS header at all.
    let b = backend_with(Some(Web::from_attrs(None, None, None, None, None).unwrap()));
    let r = one(
        &b,
        &with_headers("OPTIONS", "/v1/presence", &format!("Origin: {ORIGIN}\r\n")),
    );
    assert_eq!(r.status, 204);
    assert!(r.headers.iter().all(
        |(n, _)| !n.to_ascii_lowercase().starts_with("access-control")
            && !n.eq_ignore_ascii_case("vary")
    ));
    // Any origin with `*`: echoed, never `*` itself.
    let b = backend_with(Some(
        Web::from_attrs(None, Some("*"), None, None, None).unwrap(),
    ));
    let r = one(
        &b,
        &with_headers("GET", "/v1/presence?ids=1", "Origin: http://a.example\r\n"),
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://a.example")
    );
}

#[test]
fn widget_carries_the_config_and_validators() {
    let b = backend_with(Some(web()));
    let r = one(&b, &get("/widget.js"));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(r.header("cache-control"), Some("public, max-age=300"));
    assert!(r.body.contains(
        r#"var CONFIG = {"batch_limit":1000,"chat_url":"https://chat.example.com/?to={id}","unknown":"hide"};"#
    ), "{}", &r.body[..600.min(r.body.len())]);
    assert!(!r.body.contains("/*CONFIG*/"));
    let tag = r.header("etag").unwrap().to_owned();
    let r = one(
        &b,
        &with_headers("GET", "/widget.js", &format!("If-None-Match: W/{tag}\r\n")),
    );
    assert_eq!((r.status, r.body.as_str()), (304, ""));

    // Without a chat URL: null; the config cannot end the script.
    let mut out = Vec::new();
    let mut w = Web::from_attrs(None, None, Some("show"), None, None).unwrap();
    crate::web::assets::render_widget(&w, 5, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(r#"{"batch_limit":5,"chat_url":null,"unknown":"show"}"#));
    w.chat_url = Some("https://x/?a=1&to={id}\u{2028}".to_owned());
    let mut out = Vec::new();
    crate::web::assets::render_widget(&w, 5, &mut out);
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#""https://x/?a=1\u0026to={id}\u2028""#),
        "{text}"
    );
    check_web(
        &b,
        &post("/widget.js", "text/plain", ""),
        "405:method_not_allowed",
    );
}

#[test]
fn status_page_is_self_contained() {
    let b = backend_with(Some(web()));
    let r = one(&b, &get("/"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.body.starts_with("<!doctype html>"));
    assert!(r.body.contains(r#"<script src="/widget.js"></script>"#));
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
        "url(",
    ] {
        assert!(!r.body.contains(external), "{external}");
    }
    assert!(r.header("etag").is_some());
}
