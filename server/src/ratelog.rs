//! Rate-limited warnings: one line per kind per interval, with the count of lines suppressed
//! since the last one. A peer that fails a handshake 70,000 times in 5 s costs a handful of log
//! lines, not 6 MB.
//!
//! Each call site owns a `static` [`RateLimited`] for its kind. The first call in an interval
//! logs (with `suppressed = N` if earlier calls were dropped); the others only count. Lock-free:
//! one atomic for the interval start and one for the count, so workers call it on hot error
//! paths.
//!
//! ```ignore
//! static BAD_TOKEN: RateLimited = RateLimited::new();
//! if let Some(suppressed) = BAD_TOKEN.allow() {
//!     warn!(%peer, suppressed, "closing pool connection: bad token");
//! }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// One line per this many milliseconds per kind.
pub const INTERVAL_MS: u64 = 1000;

/// The gate of one kind of warning.
pub struct RateLimited {
    /// Milliseconds since the process epoch at which the current interval started, plus one
    /// (0: never logged).
    window: AtomicU64,
    /// Calls dropped since the last line.
    suppressed: AtomicU64,
}

impl RateLimited {
    /// A gate that lets its first call through.
    pub const fn new() -> Self {
        Self {
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed)` when the caller should log now (with the number of lines dropped since
    /// the last one), `None` when it should stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(now_ms())
    }

    /// [`allow`](Self::allow) at a given time (ms since an arbitrary epoch), for tests.
    pub fn allow_at(&self, now_ms: u64) -> Option<u64> {
        let stamp = now_ms.saturating_add(1);
        let window = self.window.load(Ordering::Relaxed);
        if window != 0 && stamp < window.saturating_add(INTERVAL_MS) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        // One caller per interval wins the line; the losers count as suppressed.
        match self
            .window
            .compare_exchange(window, stamp, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => Some(self.suppressed.swap(0, Ordering::Relaxed)),
            Err(_) => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

impl Default for RateLimited {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_suppressed_count() {
        let g = RateLimited::new();
        assert_eq!(g.allow_at(0), Some(0));
        for t in 1..1000 {
            assert_eq!(g.allow_at(t), None);
        }
        assert_eq!(g.allow_at(1000), Some(999));
        assert_eq!(g.allow_at(1500), None);
        assert_eq!(g.allow_at(5000), Some(1));
    }

    #[test]
    fn racing_callers_let_exactly_one_line_through_per_interval() {
        let g = std::sync::Arc::new(RateLimited::new());
        let allowed: u64 = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    (0..10_000).filter(|_| g.allow_at(7).is_some()).count() as u64
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(allowed, 1);
        assert_eq!(g.allow_at(2000), Some(39_999));
    }
}
