//! Cluster time for one node: the monotonic clock plus a fixed start-up reading of the wall clock,
//! an injected skew (`--clock-offset-ms`, for tests and demos) and a correction set by time sync.
//!
//! The OS clock is never changed. Cluster time never goes back because of the wall clock: after
//! start-up only the monotonic clock and explicit corrections move it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The node's cluster clock.
#[derive(Debug)]
pub struct ClusterClock {
    base: Instant,
    /// Wall-clock µs since the epoch at `base`, including the injected skew.
    base_us: i64,
    /// Correction applied by time sync, µs.
    correction_us: AtomicI64,
}

impl ClusterClock {
    /// Reads the clocks once; `skew_ms` shifts this node's notion of time.
    pub fn new(skew_ms: i64) -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Self {
            base: Instant::now(),
            base_us: wall + skew_ms * 1000,
            correction_us: AtomicI64::new(0),
        }
    }

    /// Local (uncorrected) time at `at`, µs since the epoch.
    pub fn local_us_at(&self, at: Instant) -> i64 {
        self.base_us + at.saturating_duration_since(self.base).as_micros() as i64
    }

    /// Cluster time at `at`, µs since the epoch.
    pub fn cluster_us_at(&self, at: Instant) -> i64 {
        self.local_us_at(at) + self.correction_us.load(Ordering::Relaxed)
    }

    /// Cluster time now, µs since the epoch.
    pub fn now_us(&self) -> i64 {
        self.cluster_us_at(Instant::now())
    }

    /// Cluster time now, ms since the epoch (0 before the epoch).
    pub fn now_ms(&self) -> u64 {
        (self.now_us() / 1000).max(0) as u64
    }

    /// The current correction, µs.
    pub fn correction_us(&self) -> i64 {
        self.correction_us.load(Ordering::Relaxed)
    }

    /// Sets the correction (time sync).
    pub fn set_correction_us(&self, c: i64) {
        self.correction_us.store(c, Ordering::Relaxed);
    }

    /// Cluster time now as a `SystemTime` (for HTTP `Date` and RFC 3339 stamps).
    pub fn now_system(&self) -> SystemTime {
        self.system_at(Instant::now())
    }

    /// Cluster time at `at` as a `SystemTime`: for a caller that already read the monotonic
    /// clock, one clock read instead of two.
    pub fn system_at(&self, at: Instant) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_micros(self.cluster_us_at(at).max(0) as u64)
    }
}
