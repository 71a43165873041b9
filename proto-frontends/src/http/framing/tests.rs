//! Unit tests of the request framing rules.

use super::*;

/// Decodes `body` fed in pieces of `step` bytes; `"ok <data>"`, `"more"` or the error code.
fn chunked(body: &str, step: usize) -> String {
    let limits = HttpLimits {
        max_body: 16,
        max_head: 64,
        max_headers: 2,
        ..HttpLimits::default()
    };
    let mut c = Chunked::new();
    let mut data = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in body.as_bytes().chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        match c.feed(&buf, &mut data, &limits) {
            Ok((n, done)) => {
                assert!(n <= buf.len());
                buf.drain(..n);
                if done {
                    return format!("ok {}", String::from_utf8_lossy(&data));
                }
            }
            Err(e) => return e.code.to_owned(),
        }
    }
    "more".into()
}

#[test]
fn chunked_decoding() {
    let cases = [
        ("3\r\nabc\r\n0\r\n\r\n", "ok abc"),
        (
            "3;a=b;c\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: 1\r\n\r\n",
            "ok abc0123456789",
        ),
        ("0\r\n\r\n", "ok "),
        ("3\r\nabc\r\n0\r\n", "more"),
        ("3\r\nab", "more"),
        ("11\r\n", "body_too_large"),
        ("8\r\n12345678\r\n9\r\n", "body_too_large"),
        ("g\r\n", "bad_request"),
        ("\r\n", "bad_request"),
        ("3\r\nabcX", "bad_request"),
        ("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", "headers_too_large"),
    ];
    for (body, expected) in cases {
        for step in [1, 2, 5, body.len()] {
            assert_eq!(
                chunked(body, step),
                expected,
                "{body:?} in pieces of {step}"
            );
        }
    }
    let long_ext = format!("1;{}\r\n", "x".repeat(MAX_CHUNK_LINE));
    assert_eq!(chunked(&long_ext, long_ext.len()), "bad_request");
}

#[test]
fn content_lengths() {
    let limits = HttpLimits {
        max_body: 100,
        ..HttpLimits::default()
    };
    let f = |v: &str| content_length(v.as_bytes(), &limits).map_err(|e| e.status);
    assert_eq!(f("0"), Ok(0));
    assert_eq!(f("0100"), Ok(100));
    assert_eq!(f("101"), Err(413));
    assert_eq!(f("99999999999999999999999999"), Err(413));
    for bad in ["", "+1", "-1", "0x1", "1 ", " 1", "1,1", "１"] {
        assert_eq!(f(bad), Err(400), "{bad:?}");
    }
}

#[test]
fn header_count_limit_on_the_stack_and_beyond() {
    let head = |n: usize| {
        let fields: String = (0..n).map(|i| format!("X-{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: h\r\n{fields}\r\n")
    };
    // The default (64) is served by stack slots, a larger limit by a vector; both count alike.
    for max_headers in [64, 100, 300] {
        let limits = HttpLimits {
            max_headers,
            max_head: 64 << 10,
            ..HttpLimits::default()
        };
        let ok = head(max_headers - 1);
        match parse_head(ok.as_bytes(), &limits) {
            Ok(HeadStatus::Complete(h, n)) => {
                assert_eq!(n, ok.len());
                assert_eq!(h.host.as_deref(), Some("h"));
            }
            other => panic!("{max_headers}: {other:?}"),
        }
        let over = head(max_headers);
        let e = parse_head(over.as_bytes(), &limits).err();
        assert_eq!(
            e.map(|e| e.code),
            Some("headers_too_large"),
            "{max_headers}"
        );
    }
}
