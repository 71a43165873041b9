//! The `http_json` workload: 20k `GET /v1/presence` requests of 20 ids each through the sans-IO
//! `HttpConn` and the node's `Router`, over a `Backend` built on a `Store` (no sockets).

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant, UNIX_EPOCH};

use presenced_core::model::{Sid, Status};
use presenced_core::store::Store;
use presenced_frontends::backend::{Backend, ClusterView, Frontend, MemberView};
use presenced_frontends::http::{HttpConn, HttpLimits};
use presenced_frontends::router::Router;

use super::{fill_store, mix, Rng, NOW_MS};

const HTTP_USERS: u64 = 100_000;
const HTTP_REQUESTS: usize = 20_000;
const HTTP_IDS: usize = 20;

/// A [`Backend`] over a [`Store`], the way the node's is, minus the metrics and the cluster: the
/// context handed to `HttpConn::handle_input`, which the [`Router`] answers requests from.
struct StoreBackend<'a> {
    store: &'a Store,
    queries: Cell<u64>,
    errors: Cell<u64>,
}

impl Backend for StoreBackend<'_> {
    fn node_id(&self) -> u16 {
        1
    }

    fn now_ms(&self) -> u64 {
        NOW_MS
    }

    fn batch_limit(&self) -> usize {
        1000
    }

    fn statuses(&self, ids: &[Sid], out: &mut Vec<Status>) {
        self.store.pin().statuses(ids, out);
    }

    fn not_ready_reason(&self) -> Option<String> {
        None
    }

    fn cluster(&self) -> ClusterView {
        ClusterView {
            node: 1,
            term: 1,
            time_master: Some(1),
            data_master: Some(1),
            ready: true,
            cluster_time_ms: NOW_MS,
            clock_offset_us: 0,
            records: self.store.len() as u64,
            digest: String::new(),
            members: vec![MemberView {
                id: 1,
                alive: true,
                ready: true,
            }],
        }
    }

    fn render_metrics(&self, _out: &mut String) {}

    fn record_query(&self, _f: Frontend, ids: usize, _micros: u64) {
        self.queries.set(self.queries.get() + ids as u64);
    }

    fn record_error(&self, _code: &'static str) {
        self.errors.set(self.errors.get() + 1);
    }
}

/// `HTTP_REQUESTS` keep-alive `POST /v1/presence` requests of `HTTP_IDS` ids each, back to back.
fn setup_http_json() -> Vec<u8> {
    use std::fmt::Write;
    let mut rng = Rng(0x5eed_0003);
    let mut input = String::new();
    let mut body = String::new();
    for _ in 0..HTTP_REQUESTS {
        body.clear();
        body.push_str(r#"{"ids":["#);
        for k in 0..HTTP_IDS {
            if k > 0 {
                body.push(',');
            }
            write!(body, "{}", rng.id(HTTP_USERS + HTTP_USERS / 10)).unwrap();
        }
        body.push_str("]}");
        write!(
            input,
            "POST /v1/presence HTTP/1.1\r\nHost: presence.example\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    }
    input.into_bytes()
}

pub(crate) fn http_json() -> u64 {
    let store = fill_store(HTTP_USERS);
    // The driver's one clock read; everything else is offsets from it (timeouts never fire).
    let now = Instant::now();
    measure_http_json(&store, black_box(&setup_http_json()), now)
}

/// Serves the pipelined requests on one keep-alive connection, as the node's driver does.
#[inline(never)]
fn measure_http_json(store: &Store, input: &[u8], now: Instant) -> u64 {
    let backend = StoreBackend {
        store,
        queries: Cell::new(0),
        errors: Cell::new(0),
    };
    let wall = UNIX_EPOCH + Duration::from_millis(NOW_MS);
    let mut conn = HttpConn::new(HttpLimits::default(), Router::default());
    let mut out = Vec::new();
    let (mut pos, mut sum, mut calls) = (0, 0, 0u64);
    while pos < input.len() {
        let o = conn.handle_input(now, wall, &input[pos..], 32, &backend, &mut out);
        assert!(
            !o.close,
            "connection closed: {}",
            String::from_utf8_lossy(&out)
        );
        assert!(o.consumed > 0, "no progress");
        pos += o.consumed;
        calls += 1;
        sum = mix(sum, out.len() as u64);
        sum = mix(sum, u64::from(out.get(9).copied().unwrap_or(0)));
        out.clear();
    }
    assert_eq!(backend.errors.get(), 0);
    assert_eq!(backend.queries.get(), (HTTP_REQUESTS * HTTP_IDS) as u64);
    mix(mix(sum, calls), backend.queries.get())
}
