//! [`LoginThrottle`]: the per-source-address failure budget of pool logins.
//!
//! An address (the client's, as `Conn::client_addr` decides: the PROXY header's source on a
//! `<proxy-protocol>` listener) that fails [`MAX_FAILURES`] pool handshakes (wrong or missing
//! token) within [`WINDOW`] is *blocked* for [`BLOCK`]: its pool connections are then refused
//! with `ERROR` 3 at their first bytes, before any token is compared, and counted
//! (`presenced_pool_auth_throttled_total`). A block ends by itself; failures after it start a
//! new budget.
//!
//! Invariants:
//! - Only failures count, and only against the address that failed: a pool with the right token
//!   from any other address is never refused or slowed. (Behind a load balancer without the
//!   PROXY protocol every client shares the balancer's address: enable `<proxy-protocol>` there.)
//! - The table is bounded ([`MAX_TRACKED`] addresses); when it is full, expired entries are
//!   dropped first, and failures from further new addresses are not tracked (they still cost the
//!   attacker a connection each and are logged rate-limited).
//!
//! Thread model: one `Mutex<HashMap>` shared by the workers, taken on a failed handshake and on
//! the first input of a pool connection while anything is tracked; never held across I/O. Time
//! is a parameter (`now`), so the rules are unit-tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed handshakes an address may make within [`WINDOW`] before it is blocked.
pub(crate) const MAX_FAILURES: u32 = 10;
/// The window over which failures are counted.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);
/// How long a blocked address is refused.
pub(crate) const BLOCK: Duration = Duration::from_secs(2);
/// Most addresses tracked at once.
pub(crate) const MAX_TRACKED: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Start of the current counting window.
    since: Instant,
    failures: u32,
    /// Refused until then.
    blocked_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        let window_over = now.saturating_duration_since(self.since) >= WINDOW;
        let block_over = self.blocked_until.is_none_or(|t| now >= t);
        window_over && block_over
    }
}

/// The failure budgets of every address that failed a pool login recently.
#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    table: Mutex<HashMap<IpAddr, Entry>>,
    /// Whether the table may hold anything: lets the common case skip the lock.
    any: AtomicBool,
}

impl LoginThrottle {
    /// Whether `ip` is blocked now.
    pub(crate) fn is_blocked(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.any.load(Ordering::Relaxed) {
            return false;
        }
        let Ok(t) = self.table.lock() else {
            return false;
        };
        t.get(&ip)
            .and_then(|e| e.blocked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts one failed handshake from `ip`; returns whether it is now blocked.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        if t.len() >= MAX_TRACKED && !t.contains_key(&ip) {
            t.retain(|_, e| !e.expired(now));
            if t.len() >= MAX_TRACKED {
                return false;
            }
        }
        self.any.store(true, Ordering::Relaxed);
        let e = t.entry(ip).or_insert(Entry {
            since: now,
            failures: 0,
            blocked_until: None,
        });
        if e.expired(now) {
            *e = Entry {
                since: now,
                failures: 0,
                blocked_until: None,
            };
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= MAX_FAILURES && e.blocked_until.is_none_or(|u| now >= u) {
            e.blocked_until = Some(now + BLOCK);
            // The next failures (after the block) start a fresh budget.
            e.since = now + BLOCK;
            e.failures = 0;
        }
        e.blocked_until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_budget_and_only_that_address() {
        let th = LoginThrottle::default();
        let bad: IpAddr = [127, 0, 0, 2].into();
        let good: IpAddr = [127, 0, 0, 3].into();
        let t0 = Instant::now();
        assert!(!th.is_blocked(bad, t0));
        for i in 1..MAX_FAILURES {
            assert!(!th.failed(bad, t0), "blocked after {i}");
        }
        assert!(th.failed(bad, t0 + Duration::from_millis(500)));
        assert!(th.is_blocked(bad, t0 + Duration::from_millis(600)));
        assert!(!th.is_blocked(good, t0 + Duration::from_millis(600)));
        // The block ends by itself.
        let after = t0 + Duration::from_millis(500) + BLOCK;
        assert!(!th.is_blocked(bad, after));
        // Failures spread thinner than the budget never block.
        let slow = LoginThrottle::default();
        for i in 0..100u64 {
            assert!(!slow.failed(bad, t0 + Duration::from_millis(i * 200)));
        }
    }
}
