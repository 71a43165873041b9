//! Node metrics: lock-free counters and per-worker HDR histograms, rendered in the Prometheus
//! text exposition format (version 0.0.4).
//!
//! Counters are `Relaxed` atomics: they are reports, nothing orders itself by them (so they are
//! not part of the loom models). Latency histograms are `hdrhistogram` instances, one per worker
//! thread behind an uncontended mutex, merged only when `/metrics` is rendered.
//!
//! The exposition is written by hand rather than through a metrics crate: the format is a few
//! lines per family, and none of the crates maps HDR histograms to summaries without copying.
//! [`Metrics::render`] and [`render_store`] (the store's gauges, `metrics::store`) are the only
//! places that write it; the HTTP `/metrics` route gets the text
//! through [`Backend::render_metrics`](presenced_frontends::backend::Backend::render_metrics).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

pub use self::auth::AuthMetrics;
pub use self::store::render_store;

mod auth;
mod store;

/// A protocol family, used as the `protocol` label of connection metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// Pool ingest.
    Pool = 0,
    /// Raw-TCP batch query.
    Query = 1,
    /// HTTP (JSON, SOAP, health, metrics).
    Http = 2,
}

const PROTOS: [(Proto, &str); 3] = [
    (Proto::Pool, "pool"),
    (Proto::Query, "query"),
    (Proto::Http, "http"),
];

/// Why a connection was refused (the `reason` label of `presenced_connections_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The listener holds `max-connections` connections.
    MaxConnections = 0,
    /// The client address holds `max-connections-per-address` connections on this listener.
    PerAddress = 1,
}

impl Refusal {
    /// Every reason, in metric order.
    pub const ALL: [Self; 2] = [Self::MaxConnections, Self::PerAddress];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxConnections => "max_connections",
            Self::PerAddress => "per_address",
        }
    }
}

/// Query front ends, the `frontend` label.
pub const FRONTENDS: [&str; 3] = ["tcp", "json", "soap"];

/// One latency histogram per worker (µs, 1 µs to 60 s, 3 significant digits).
#[derive(Debug)]
pub struct Latency {
    per_worker: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    fn new(workers: usize) -> Self {
        let per_worker = (0..workers.max(1))
            .map(|_| {
                // INVARIANT: these bounds are valid for hdrhistogram (low >= 1, high >= 2*low).
                #[allow(clippy::expect_used)]
                Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"))
            })
            .collect();
        Self { per_worker }
    }

    /// Records one sample of `micros` on `worker`'s histogram.
    pub fn record(&self, worker: usize, micros: u64) {
        if let Some(h) = self.per_worker.get(worker % self.per_worker.len().max(1)) {
            if let Ok(mut h) = h.lock() {
                h.saturating_record(micros.max(1));
            }
        }
    }

    /// The merged histogram of all workers.
    pub fn merged(&self) -> Option<Histogram<u64>> {
        let mut all: Option<Histogram<u64>> = None;
        for h in &self.per_worker {
            let Ok(h) = h.lock() else { continue };
            match all.as_mut() {
                None => all = Some(h.clone()),
                Some(a) => {
                    let _ = a.add(&*h);
                }
            }
        }
        all
    }
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    /// Pool events applied.
    pub updates: AtomicU64,
    /// Pool `EVENTS` frames handled.
    pub pool_batches: AtomicU64,
    /// Pool events skipped as already applied (re-sent after a reconnect).
    pub duplicates: AtomicU64,
    /// Batch queries answered, by front end (index into [`FRONTENDS`]).
    pub queries: [AtomicU64; 3],
    /// Ids looked up, by front end.
    pub query_ids: [AtomicU64; 3],
    /// Query latency by front end, µs.
    pub query_latency: [Latency; 3],
    /// Time to apply one `EVENTS` frame, µs.
    pub ingest_latency: Latency,
    /// Connections open now, by protocol.
    pub open: [AtomicI64; 3],
    /// Connections accepted, by protocol.
    pub accepted: [AtomicU64; 3],
    /// Connections refused, by protocol (listener) and [`Refusal`] reason: at accept, or at
    /// their PROXY header for the per-address cap.
    refused: [[AtomicU64; 2]; 3],
    /// Connections closed because their handshake was not complete within
    /// `handshake-timeout-ms`, by protocol.
    handshake_timeouts: [AtomicU64; 3],
    /// Connections cut because the node's buffered output was over `output-budget-bytes`.
    pub output_cut: AtomicU64,
    /// Replication lag: cluster time of apply minus the update's stamp, µs.
    pub repl_lag: Latency,
    /// Replication links resumed from the backlog.
    pub resumes: AtomicU64,
    /// Full snapshots sent to peers.
    pub full_resyncs: AtomicU64,
    /// Records changed by anti-entropy.
    pub digest_repairs: AtomicU64,
    /// Replicated records merged that changed the local store.
    pub merged: AtomicU64,
    /// Role changes seen by this node.
    pub elections: AtomicU64,
    /// Times this node noticed it had not run for a while (paused, frozen, swapped out).
    pub stalls: AtomicU64,
    /// Records relayed to peers on behalf of an origin that went down or restarted.
    pub relayed: AtomicU64,
    /// Pool replies (acks) held by the ack gates, waiting for a peer to have their updates.
    pub acks_held: AtomicI64,
    /// Pool connections closed unread because the worker stalled or the client had closed.
    pub pool_abandoned: AtomicU64,
    /// Update numbers held in the replication backlog.
    pub backlog: AtomicU64,
    /// Local updates not yet acked by any peer.
    pub repl_pending: AtomicU64,
    /// This node's clock correction, µs.
    pub clock_offset_us: AtomicI64,
    /// Credential checks: pool tokens and API keys.
    pub auth: AuthMetrics,
    /// Errors by kind (a label value).
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Metrics for a node with `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        Self {
            updates: AtomicU64::new(0),
            pool_batches: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            queries: Default::default(),
            query_ids: Default::default(),
            query_latency: [
                Latency::new(workers),
                Latency::new(workers),
                Latency::new(workers),
            ],
            ingest_latency: Latency::new(workers),
            open: Default::default(),
            accepted: Default::default(),
            refused: Default::default(),
            handshake_timeouts: Default::default(),
            output_cut: AtomicU64::new(0),
            repl_lag: Latency::new(1),
            resumes: AtomicU64::new(0),
            full_resyncs: AtomicU64::new(0),
            digest_repairs: AtomicU64::new(0),
            merged: AtomicU64::new(0),
            elections: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            acks_held: AtomicI64::new(0),
            pool_abandoned: AtomicU64::new(0),
            backlog: AtomicU64::new(0),
            repl_pending: AtomicU64::new(0),
            clock_offset_us: AtomicI64::new(0),
            auth: AuthMetrics::default(),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    /// The same, with per-key counters for the API keys named `names`.
    pub fn with_api_keys(mut self, names: impl IntoIterator<Item = String>) -> Self {
        self.auth = AuthMetrics::new(names);
        self
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &'static str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind).or_default() += 1;
        }
    }

    /// `n` more errors of `kind` at once (counts the node state machine keeps).
    pub fn errors(&self, kind: &'static str, n: u64) {
        if n == 0 {
            return;
        }
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind).or_default() += n;
        }
    }

    /// A connection of `p` opened.
    pub fn opened(&self, p: Proto) {
        if let Some(a) = self.accepted.get(p as usize) {
            a.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(o) = self.open.get(p as usize) {
            o.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection of `p` closed.
    pub fn closed(&self, p: Proto) {
        if let Some(o) = self.open.get(p as usize) {
            o.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A connection of `p`'s listener refused for `why`.
    pub fn refused(&self, p: Proto, why: Refusal) {
        if let Some(r) = self
            .refused
            .get(p as usize)
            .and_then(|r| r.get(why as usize))
        {
            r.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection of `p` closed because its handshake was overdue.
    pub fn handshake_timeout(&self, p: Proto) {
        if let Some(t) = self.handshake_timeouts.get(p as usize) {
            t.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one answered query of `ids` ids on front end index `f` (see [`FRONTENDS`]).
    pub fn query(&self, f: usize, worker: usize, ids: u64, micros: u64) {
        if let (Some(q), Some(i), Some(l)) = (
            self.queries.get(f),
            self.query_ids.get(f),
            self.query_latency.get(f),
        ) {
            q.fetch_add(1, Ordering::Relaxed);
            i.fetch_add(ids, Ordering::Relaxed);
            l.record(worker, micros);
        }
    }

    /// Renders every metric. `records`, `uptime_s` and `output_buffered` (the client output
    /// buffered now, see `OutputBudget`) come from the node.
    pub fn render(&self, out: &mut String, records: u64, uptime_s: f64, output_buffered: u64) {
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        family(
            out,
            "presenced_updates_total",
            "counter",
            "Pool events applied to the store.",
        );
        let _ = writeln!(out, "presenced_updates_total {}", c(&self.updates));
        family(
            out,
            "presenced_pool_batches_total",
            "counter",
            "Pool EVENTS frames handled.",
        );
        let _ = writeln!(
            out,
            "presenced_pool_batches_total {}",
            c(&self.pool_batches)
        );
        family(
            out,
            "presenced_pool_duplicates_total",
            "counter",
            "Re-sent pool events skipped.",
        );
        let _ = writeln!(
            out,
            "presenced_pool_duplicates_total {}",
            c(&self.duplicates)
        );
        family(
            out,
            "presenced_records",
            "gauge",
            "Users held in the store.",
        );
        let _ = writeln!(out, "presenced_records {records}");
        family(
            out,
            "presenced_queries_total",
            "counter",
            "Batch queries answered, by front end.",
        );
        for (i, f) in FRONTENDS.iter().enumerate() {
            let v = self.queries.get(i).map_or(0, c);
            let _ = writeln!(out, "presenced_queries_total{{frontend=\"{f}\"}} {v}");
        }
        family(
            out,
            "presenced_query_ids_total",
            "counter",
            "Ids looked up, by front end.",
        );
        for (i, f) in FRONTENDS.iter().enumerate() {
            let v = self.query_ids.get(i).map_or(0, c);
            let _ = writeln!(out, "presenced_query_ids_total{{frontend=\"{f}\"}} {v}");
        }
        family(
            out,
            "presenced_query_latency_seconds",
            "summary",
            "Batch query latency.",
        );
        for (i, f) in FRONTENDS.iter().enumerate() {
            if let Some(h) = self.query_latency.get(i).and_then(Latency::merged) {
                summary(
                    out,
                    "presenced_query_latency_seconds",
                    &format!("frontend=\"{f}\","),
                    &h,
                );
            }
        }
        family(
            out,
            "presenced_ingest_batch_latency_seconds",
            "summary",
            "Time to apply one pool batch.",
        );
        if let Some(h) = self.ingest_latency.merged() {
            summary(out, "presenced_ingest_batch_latency_seconds", "", &h);
        }
        family(
            out,
            "presenced_connections_open",
            "gauge",
            "Open client connections.",
        );
        for (p, name) in PROTOS {
            let v = self
                .open
                .get(p as usize)
                .map_or(0, |o| o.load(Ordering::Relaxed));
            let _ = writeln!(out, "presenced_connections_open{{protocol=\"{name}\"}} {v}");
        }
        family(
            out,
            "presenced_connections_total",
            "counter",
            "Client connections accepted.",
        );
        for (p, name) in PROTOS {
            let v = self.accepted.get(p as usize).map_or(0, c);
            let _ = writeln!(
                out,
                "presenced_connections_total{{protocol=\"{name}\"}} {v}"
            );
        }
        family(
            out,
            "presenced_connections_refused_total",
            "counter",
            "Connections refused, by listener and reason (max_connections, per_address).",
        );
        for (p, name) in PROTOS {
            for why in Refusal::ALL {
                let v = self
                    .refused
                    .get(p as usize)
                    .and_then(|r| r.get(why as usize))
                    .map_or(0, c);
                let _ = writeln!(
                    out,
                    "presenced_connections_refused_total{{protocol=\"{name}\",reason=\"{}\"}} {v}",
                    why.name()
                );
            }
        }
        family(
            out,
            "presenced_handshake_timeouts_total",
            "counter",
            "Connections closed with their handshake incomplete after handshake-timeout-ms.",
        );
        for (p, name) in PROTOS {
            let v = self.handshake_timeouts.get(p as usize).map_or(0, c);
            let _ = writeln!(
                out,
                "presenced_handshake_timeouts_total{{protocol=\"{name}\"}} {v}"
            );
        }
        family(
            out,
            "presenced_output_buffered_bytes",
            "gauge",
            "Client connection buffer memory (buffer capacities and held acks), all connections.",
        );
        let _ = writeln!(out, "presenced_output_buffered_bytes {output_buffered}");
        family(
            out,
            "presenced_output_cut_total",
            "counter",
            "Connections cut because buffered output was over output-budget-bytes.",
        );
        let _ = writeln!(out, "presenced_output_cut_total {}", c(&self.output_cut));
        family(
            out,
            "presenced_errors_total",
            "counter",
            "Refused requests and closed connections, by kind.",
        );
        if let Ok(e) = self.errors.lock() {
            for (kind, n) in e.iter() {
                let _ = writeln!(out, "presenced_errors_total{{kind=\"{kind}\"}} {n}");
            }
        }
        self.auth.render(out);
        family(
            out,
            "presenced_replication_lag_seconds",
            "summary",
            "Age of replicated updates when applied here.",
        );
        if let Some(h) = self.repl_lag.merged() {
            summary(out, "presenced_replication_lag_seconds", "", &h);
        }
        for (name, kind, help, v) in [
            (
                "presenced_replication_resumes_total",
                "counter",
                "Replication links resumed from the backlog.",
                c(&self.resumes),
            ),
            (
                "presenced_replication_full_resyncs_total",
                "counter",
                "Full snapshots sent to peers.",
                c(&self.full_resyncs),
            ),
            (
                "presenced_replication_merged_total",
                "counter",
                "Replicated records merged that changed the local store.",
                c(&self.merged),
            ),
            (
                "presenced_antientropy_repairs_total",
                "counter",
                "Records changed by anti-entropy.",
                c(&self.digest_repairs),
            ),
            (
                "presenced_elections_total",
                "counter",
                "Role changes seen by this node.",
                c(&self.elections),
            ),
            (
                "presenced_stalls_total",
                "counter",
                "Times this node noticed it had not run for a while (paused, frozen, swapped out).",
                c(&self.stalls),
            ),
            (
                "presenced_replication_relayed_total",
                "counter",
                "Records relayed to peers for an origin that went down or restarted.",
                c(&self.relayed),
            ),
            (
                "presenced_pool_acks_held",
                "gauge",
                "Pool acks held until a peer has their updates (replica policy).",
                self.acks_held.load(Ordering::Relaxed).max(0) as u64,
            ),
            (
                "presenced_pool_abandoned_total",
                "counter",
                "Pool connections closed unread after a stall or the client's close.",
                c(&self.pool_abandoned),
            ),
            (
                "presenced_replication_backlog",
                "gauge",
                "Update numbers held in the backlog.",
                c(&self.backlog),
            ),
            (
                "presenced_replication_pending",
                "gauge",
                "Local updates not yet acked by any peer.",
                c(&self.repl_pending),
            ),
        ] {
            family(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
        family(
            out,
            "presenced_clock_offset_microseconds",
            "gauge",
            "Correction applied to this node's clock by time sync.",
        );
        let _ = writeln!(
            out,
            "presenced_clock_offset_microseconds {}",
            self.clock_offset_us.load(Ordering::Relaxed)
        );
        family(
            out,
            "presenced_uptime_seconds",
            "gauge",
            "Seconds since the node started.",
        );
        let _ = writeln!(out, "presenced_uptime_seconds {uptime_s:.3}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn summary(out: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    for q in [0.5, 0.9, 0.99, 0.999] {
        let v = h.value_at_quantile(q) as f64 / 1e6;
        let _ = writeln!(out, "{name}{{{labels}quantile=\"{q}\"}} {v:.6}");
    }
    let labels = labels.trim_end_matches(',');
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let sum = h.mean() * h.len() as f64 / 1e6;
    let _ = writeln!(
        out,
        "{name}_sum{braces} {sum:.6}\n{name}_count{braces} {}",
        h.len()
    );
}

#[cfg(test)]
mod tests;
