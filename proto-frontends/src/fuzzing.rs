//! Bodies of the cargo-fuzz targets `http_request` and `soap_envelope`, kept here so that
//! `cargo test` compiles them, and [`FakeBackend`], the in-memory [`Backend`] the unit tests and
//! the fuzz targets share. Each target checks properties, not just "no panic": nothing consumes
//! more than it was given, every response starts with a status line, whatever parses as a SOAP
//! request re-encodes and re-parses to the same ids, and every envelope written is well-formed.
//!
//! This module is not part of the API: it exists for `fuzz/` and for tests.

#![doc(hidden)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use presenced_core::auth::{ApiKeys, AuthOutcome, Presented};
use presenced_core::model::{ClientSet, ClientType, ExtLimits};
use presenced_core::{Ext, Sid, Status};

use crate::backend::{Backend, ClusterView, Frontend, MemberView};
use crate::http::{HttpConn, HttpLimits};
use crate::router::Router;
use crate::soap::{self, SoapLimits, SoapVersion};

/// A [`Backend`] over a fixed map of statuses that records what it was told.
#[derive(Debug)]
pub struct FakeBackend {
    /// This node's id.
    pub node: u16,
    /// Cluster time, ms since the epoch.
    pub now_ms: u64,
    /// Most ids per query.
    pub batch_limit: usize,
    /// Known users, by sid.
    pub users: HashMap<u64, Status>,
    /// `Some(reason)` makes `/healthz/ready` answer 503.
    pub not_ready: Option<String>,
    /// Every `record_query` call: front end and number of ids.
    pub queries: RefCell<Vec<(Frontend, usize)>>,
    /// Every `record_error` call.
    pub errors: RefCell<Vec<&'static str>>,
    /// API keys required (empty: open), and every `authorize` outcome.
    pub api_keys: ApiKeys,
    /// Every `authorize` call's outcome.
    pub auth: RefCell<Vec<AuthOutcome>>,
    /// The `<web>` element (`None`: the public web endpoints are off).
    pub web: Option<presenced_config::Web>,
}

/// Cluster time of [`FakeBackend::new`]: 2025-11-25T10:00:00.123Z.
pub const FAKE_NOW_MS: u64 = 1_764_064_800_123;

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeBackend {
    /// Node 1, batch limit 1000, and two users: 10086 online on pc and mobile with
    /// `nick=alice`, changed at [`FAKE_NOW_MS`]; 10010 known but logged out, denying strangers.
    pub fn new() -> Self {
        let mut b = Self {
            node: 1,
            now_ms: FAKE_NOW_MS,
            batch_limit: 1000,
            users: HashMap::new(),
            not_ready: None,
            queries: RefCell::new(Vec::new()),
            errors: RefCell::new(Vec::new()),
            api_keys: ApiKeys::default(),
            auth: RefCell::new(Vec::new()),
            web: None,
        };
        b.add(
            10086,
            &[ClientType::Pc, ClientType::Mobile],
            true,
            FAKE_NOW_MS,
            &[("nick", "alice")],
        );
        b.add(10010, &[], false, FAKE_NOW_MS - 60_000, &[]);
        b
    }

    /// Adds (or replaces) a known user. Extension data beyond the default limits is dropped.
    pub fn add(
        &mut self,
        sid: u64,
        clients: &[ClientType],
        accepts_strangers: bool,
        changed_at_ms: u64,
        ext: &[(&str, &str)],
    ) {
        let Some(sid) = Sid::new(sid) else { return };
        let mut set = ClientSet::default();
        for c in clients {
            set.insert(*c);
        }
        let ext = (!ext.is_empty())
            .then(|| {
                let entries = ext
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                Ext::new(entries, &ExtLimits::default()).ok().map(Arc::new)
            })
            .flatten();
        let status = Status {
            sid,
            known: true,
            online: !set.is_empty(),
            clients: set,
            accepts_strangers,
            changed_at_ms: Some(changed_at_ms),
            uid: Some(sid.get() + 1),
            ext,
        };
        self.users.insert(sid.get(), status);
    }
}

impl Backend for FakeBackend {
    fn web(&self) -> Option<&presenced_config::Web> {
        self.web.as_ref()
    }

    fn authorize(&self, _f: Frontend, presented: Presented<'_>) -> bool {
        let outcome = self.api_keys.check(presented);
        self.auth.borrow_mut().push(outcome);
        outcome.allowed()
    }

    fn node_id(&self) -> u16 {
        self.node
    }

    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn batch_limit(&self) -> usize {
        self.batch_limit
    }

    fn statuses(&self, ids: &[Sid], out: &mut Vec<Status>) {
        for sid in ids {
            out.push(
                self.users
                    .get(&sid.get())
                    .cloned()
                    .unwrap_or_else(|| Status::unknown(*sid)),
            );
        }
    }

    fn not_ready_reason(&self) -> Option<String> {
        self.not_ready.clone()
    }

    fn cluster(&self) -> ClusterView {
        ClusterView {
            node: self.node,
            term: 3,
            time_master: Some(1),
            data_master: Some(1),
            ready: self.not_ready.is_none(),
            cluster_time_ms: self.now_ms,
            clock_offset_us: -12,
            records: self.users.len() as u64,
            digest: "00ff".into(),
            members: vec![MemberView {
                id: self.node,
                alive: true,
                ready: true,
            }],
        }
    }

    fn render_metrics(&self, out: &mut String) {
        out.push_str("# TYPE presenced_queries_total counter\npresenced_queries_total 0\n");
    }

    fn record_query(&self, f: Frontend, ids: usize, _micros: u64) {
        self.queries.borrow_mut().push((f, ids));
    }

    fn record_error(&self, code: &'static str) {
        self.errors.borrow_mut().push(code);
    }
}

/// Small limits, so that fuzz inputs reach every limit.
pub fn small_limits() -> HttpLimits {
    HttpLimits {
        max_head: 1024,
        max_headers: 16,
        max_uri: 256,
        max_body: 4096,
        head_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        xml_max_depth: 12,
    }
}

/// A fresh connection with [`small_limits`], answered by a [`Router`] as the node runs it.
pub fn small_conn() -> HttpConn<Router> {
    HttpConn::new(small_limits(), Router::default())
}

/// Feeds `pieces` to a connection the way a driver would (keeping unconsumed bytes, re-calling
/// while `more`), checking the outcome invariants. Returns everything written.
pub fn drive(
    conn: &mut HttpConn<Router>,
    now: Instant,
    pieces: &[&[u8]],
    budget: usize,
) -> Vec<u8> {
    let backend = FakeBackend::new();
    let wall = UNIX_EPOCH + Duration::from_millis(FAKE_NOW_MS);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let o = conn.handle_input(now, wall, &buf, budget, &backend, &mut out);
            assert!(
                o.consumed <= buf.len(),
                "consumed {} of {}",
                o.consumed,
                buf.len()
            );
            buf.drain(..o.consumed);
            if o.close {
                return out;
            }
            if !o.more {
                break;
            }
            assert!(o.consumed > 0 || budget == 0, "more without progress");
            if budget == 0 {
                break;
            }
        }
    }
    out
}

/// Target `http_request`: arbitrary bytes through an [`HttpConn`], whole and byte by byte.
pub fn http_request(data: &[u8]) {
    // The harness is the driver here: it owns the one clock read, everything else is offsets.
    let now = Instant::now();
    for budget in [1, 64] {
        let mut conn = small_conn();
        let out = drive(&mut conn, now, &[data], budget);
        assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "));
        let late = now + Duration::from_secs(11);
        if conn.poll_timeout().is_some_and(|t| t <= late) {
            let mut out = Vec::new();
            assert!(conn.handle_timeout(late, SystemTime::UNIX_EPOCH, &mut out));
            assert!(out.starts_with(b"HTTP/1.1 408 "));
        }
    }
    if data.len() <= 2048 {
        let pieces: Vec<&[u8]> = data.chunks(1).collect();
        let out = drive(&mut small_conn(), now, &pieces, 8);
        assert!(out.is_empty() || out.starts_with(b"HTTP/1.1 "));
    }
}

/// Target `soap_envelope`: arbitrary bytes through the SOAP request parser.
pub fn soap_envelope(data: &[u8]) {
    let limits = SoapLimits {
        max_depth: 12,
        max_ids: 64,
    };
    let mut ids = Vec::new();
    let mut out = Vec::new();
    match soap::parse_request(data, SoapVersion::V11, &limits, &mut ids) {
        Ok(version) => {
            assert!(ids.len() <= limits.max_ids);
            // Whatever parses re-encodes to a request that parses to the same ids.
            let mut again = Vec::new();
            soap::write_request(version, &ids, &mut again);
            let mut ids2 = Vec::new();
            let v2 = soap::parse_request(&again, SoapVersion::V11, &limits, &mut ids2);
            assert_eq!(v2, Ok(version));
            assert_eq!(ids2, ids);
            let statuses: Vec<Status> = ids.iter().map(|s| Status::unknown(*s)).collect();
            soap::write_response(version, &statuses, &mut out);
        }
        Err(fault) => soap::write_fault(&fault, &mut out),
    }
    assert!(
        well_formed(&out),
        "wrote malformed XML: {}",
        String::from_utf8_lossy(&out)
    );
}

/// Whether `xml` is a well-formed document as far as quick-xml checks (balanced, matching end
/// names, valid references).
pub fn well_formed(xml: &[u8]) -> bool {
    let mut r = quick_xml::Reader::from_reader(xml);
    r.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0;
    loop {
        match r.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(quick_xml::events::Event::Eof) => return depth == 0 && roots == 1,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
}
