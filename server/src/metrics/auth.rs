//! The credential counters of [`Metrics`](super::Metrics): pool logins refused for a bad token
//! or throttled, and the API-key outcomes of the query front ends (per front end and outcome,
//! and per key name for the granted ones).
//!
//! Counters only (`Relaxed` atomics); rendered by [`Metrics::render`](super::Metrics::render)
//! through [`AuthMetrics::render`]. The key names are fixed at start-up (`<api-key name>`), so
//! the per-key counters are a plain array.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use presenced_core::auth::AuthOutcome;

use super::{family, FRONTENDS};

/// Outcomes counted for API keys (`open` is not: nothing was checked).
const OUTCOMES: [&str; 3] = ["granted", "missing", "invalid"];

/// Credential counters.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Pool `HELLO`s refused for a wrong or missing token (`ERROR` 3).
    pub pool_failures: AtomicU64,
    /// Pool connections refused before their token was compared, because their address had
    /// used up its failure budget.
    pub pool_throttled: AtomicU64,
    /// API-key checks by front end (index into [`FRONTENDS`]) and outcome (index into
    /// `OUTCOMES`).
    api: [[AtomicU64; 3]; 3],
    /// Granted checks per configured key, in configuration order.
    per_key: Vec<(String, AtomicU64)>,
}

impl AuthMetrics {
    /// Counters for the API keys named `names`.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            per_key: names.into_iter().map(|n| (n, AtomicU64::new(0))).collect(),
            ..Self::default()
        }
    }

    /// Counts one API-key check on front end `frontend` (index into [`FRONTENDS`]).
    pub fn api(&self, frontend: usize, outcome: AuthOutcome) {
        let o = match outcome {
            AuthOutcome::Open => return,
            AuthOutcome::Granted(i) => {
                if let Some((_, c)) = self.per_key.get(i) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                0
            }
            AuthOutcome::Missing => 1,
            AuthOutcome::Invalid => 2,
        };
        if let Some(c) = self.api.get(frontend).and_then(|f| f.get(o)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends the credential families.
    pub(super) fn render(&self, out: &mut String) {
        let c = |v: &AtomicU64| v.load(Ordering::Relaxed);
        family(
            out,
            "presenced_pool_auth_failures_total",
            "counter",
            "Pool logins refused for a wrong or missing token.",
        );
        let _ = writeln!(
            out,
            "presenced_pool_auth_failures_total {}",
            c(&self.pool_failures)
        );
        family(
            out,
            "presenced_pool_auth_throttled_total",
            "counter",
            "Pool connections refused unchecked: their address failed too many logins.",
        );
        let _ = writeln!(
            out,
            "presenced_pool_auth_throttled_total {}",
            c(&self.pool_throttled)
        );
        family(
            out,
            "presenced_api_auth_total",
            "counter",
            "API-key checks of the query front ends, by front end and outcome.",
        );
        for (f, name) in FRONTENDS.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let v = self.api.get(f).and_then(|x| x.get(o)).map_or(0, c);
                let _ = writeln!(
                    out,
                    "presenced_api_auth_total{{frontend=\"{name}\",outcome=\"{outcome}\"}} {v}"
                );
            }
        }
        family(
            out,
            "presenced_api_key_requests_total",
            "counter",
            "Requests and connections granted, by API key name.",
        );
        for (name, v) in &self.per_key {
            let _ = writeln!(
                out,
                "presenced_api_key_requests_total{{key=\"{name}\"}} {}",
                c(v)
            );
        }
    }
}
