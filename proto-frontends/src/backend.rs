//! The contract between the request handlers (HTTP/JSON, SOAP, health, metrics) and the node
//! that runs them. Handlers are sans-IO: they see the node only through [`Backend`].
//!
//! API Boundary: the front ends depend on this trait, never on the drivers or the store directly.

use presenced_config::Web;
use presenced_core::auth::Presented;
use presenced_core::{Sid, Status};

/// One member of the cluster as `/v1/cluster` reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberView {
    /// The member's sequence number.
    pub id: u16,
    /// Heard from within `down-after-ms`.
    pub alive: bool,
    /// Synced and serving.
    pub ready: bool,
}

/// The body of `GET /v1/cluster` (DESIGN.md §3), field for field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClusterView {
    /// This node's sequence number.
    pub node: u16,
    /// The election term.
    pub term: u64,
    /// The standard-time server (lowest live ready id); `None` (JSON `null`) until this node
    /// heard from every peer or `down-after-ms` passed since it started.
    pub time_master: Option<u16>,
    /// The reference data master (lowest live ready id); `None` as long as `time_master` is.
    pub data_master: Option<u16>,
    /// Whether this node serves (synced, clock within tolerance, not draining).
    pub ready: bool,
    /// Cluster time now, ms since the Unix epoch.
    pub cluster_time_ms: u64,
    /// This node's correction of its monotonic clock, in µs.
    pub clock_offset_us: i64,
    /// Number of users held.
    pub records: u64,
    /// Hex state digest: equal on two nodes exactly when they hold the same state.
    pub digest: String,
    /// Every known member, by id.
    pub members: Vec<MemberView>,
}

/// Which front end served a query (a metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// `GET/POST /v1/presence...`
    Json,
    /// `POST /soap`
    Soap,
}

/// What the request handlers need from the node.
pub trait Backend {
    /// This node's sequence number.
    fn node_id(&self) -> u16;
    /// Cluster time now, ms since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Most ids per batch query.
    fn batch_limit(&self) -> usize;
    /// Appends the status of every id, in order, to `out`.
    fn statuses(&self, ids: &[Sid], out: &mut Vec<Status>);
    /// `None` when ready to serve; otherwise why not (for `/healthz/ready`).
    fn not_ready_reason(&self) -> Option<String>;
    /// The `/v1/cluster` view.
    fn cluster(&self) -> ClusterView;
    /// Appends the Prometheus text exposition of every metric to `out`.
    fn render_metrics(&self, out: &mut String);
    /// Counts one answered batch query of `ids` ids on front end `f`, taking `micros`.
    fn record_query(&self, f: Frontend, ids: usize, micros: u64);
    /// Counts one refused request, by error code (a metrics label).
    fn record_error(&self, code: &'static str);
    /// Judges the credentials of a request to a protected resource (see the router's table)
    /// served by front end `f`, and counts the outcome. `true`: serve it. The default is open
    /// (no key configured).
    fn authorize(&self, f: Frontend, presented: Presented<'_>) -> bool {
        let _ = (f, presented);
        true
    }
    /// Reserves a place for one more live watch stream (`GET /v1/watch`) of the client of this
    /// request. `Open` counts it: the driver that then runs the stream releases it when the
    /// stream ends. The default is `Off` (no `<web>` section: the endpoint is 404).
    fn open_watch(&self) -> WatchSlot {
        WatchSlot::Off
    }
    /// Gives back a place [`open_watch`](Self::open_watch) reserved for a stream that did not
    /// start (the request was refused after all).
    fn release_watch(&self) {}
    /// The `<web>` configuration: `None` turns the public web endpoints (badge, widget, status
    /// page) and CORS off. The default is `None`.
    fn web(&self) -> Option<&Web> {
        None
    }
    /// Removes node `id` from the cluster (`remove`) or re-admits it. The default refuses:
    /// only a node's own backend can change its cluster.
    fn change_member(&self, id: u16, remove: bool) -> Result<(), MemberChangeError> {
        let _ = (id, remove);
        Err(MemberChangeError::Unavailable)
    }
}

/// The answer of [`Backend::open_watch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchSlot {
    /// The public web endpoints are off (404 `not_found`).
    Off,
    /// `max-watchers` streams are open on the node, or the per-address share of them from this
    /// client (503 `too_many_watchers`).
    Full,
    /// Reserved: the stream may start.
    Open,
}

/// Why `DELETE`/`POST /v1/cluster/members/{id}` failed. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChangeError {
    /// The id is the answering node's own (409 `conflict`).
    ItsMe,
    /// No member has this id (404 `not_found`).
    Unknown,
    /// The change could not be made now (503 `unavailable`).
    Unavailable,
}
