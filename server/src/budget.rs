//! [`OutputBudget`]: the node-wide budget of client connection buffers,
//! `<limits output-budget-bytes>`, and [`victims`], the policy that says which connections a
//! worker cuts when the node is over it.
//!
//! What is counted: for every pool, query and HTTP connection, the memory of its buffers: the
//! *capacity* of its input and output buffers (written output and consumed input included) plus
//! its held pool acks (`Conn::footprint`). Capacity, not length: a buffer grown to twice what it
//! holds costs twice, and thousands of connections each holding a little input cost their whole
//! buffers. Each worker adds the change of each of its connections to one atomic total after
//! every service of that connection and takes the connection's share out when it closes it, so
//! the total is exact up to the services in flight. Not counted: buffers that exist only during
//! one request (the HTTP router's id and status vectors, a response body larger than 8 KiB) and
//! what a connection keeps between requests, which is bounded small per connection (an 8 KiB
//! response body, 64 ids and statuses), and the kernel's socket buffers.
//!
//! The policy, precisely: after each round of its event loop, a worker that finds the total
//! above the budget publishes the largest footprint among its own connections, then cuts its own
//! connections from the largest down, re-reading nothing in between, while the total (minus
//! what it has cut) is still above the budget and the next one holds at least as much as the
//! largest any other worker published. It stops at the first connection smaller than another
//! worker's largest: that worker cuts its own on its next round (at most `SWEEP_EVERY` later).
//! So the node cuts the connections holding the most buffer memory first, exactly within a worker and
//! up to one round of staleness across workers, and cuts no more than needed to get back under
//! the budget (two workers cutting at once may each cut one connection the other's cut made
//! unnecessary). A cut connection is closed at once, its buffered output dropped; it is counted
//! in `presenced_output_cut_total`.
//!
//! Thread model: lock-free; `Relaxed` atomics, since nothing else is ordered by them.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// The node-wide output budget and the accounting against it.
#[derive(Debug)]
pub struct OutputBudget {
    limit: usize,
    /// INVARIANT: the sum of what every worker accounted for its open connections.
    total: AtomicI64,
    /// Per worker, the largest footprint among its connections when it last checked the budget.
    largest: Vec<AtomicUsize>,
}

impl OutputBudget {
    /// A budget of `limit` bytes shared by `workers` workers.
    pub fn new(limit: usize, workers: usize) -> Self {
        Self {
            limit,
            total: AtomicI64::new(0),
            largest: (0..workers.max(1)).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// The budget, bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Buffer memory of all client connections now, bytes.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed).max(0) as usize
    }

    /// Whether the node holds more buffer memory than its budget.
    pub fn over(&self) -> bool {
        self.total() > self.limit
    }

    /// Accounts a connection whose footprint went from `before` to `after` bytes.
    pub fn account(&self, before: usize, after: usize) {
        if before != after {
            let delta = after as i64 - before as i64;
            self.total.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Publishes worker `worker`'s largest connection footprint and returns the largest any
    /// other worker published.
    pub fn publish(&self, worker: usize, largest: usize) -> usize {
        let n = self.largest.len();
        if let Some(l) = self.largest.get(worker % n) {
            l.store(largest, Ordering::Relaxed);
        }
        self.largest
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != worker % n)
            .map(|(_, l)| l.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

/// The connections a worker cuts (see the module docs): `own` lists its connections as
/// `(key, footprint bytes)`, `total` is the node's buffer memory, `limit` the budget, `others` the
/// largest footprint another worker published. Largest first.
pub fn victims(own: &[(usize, usize)], total: usize, limit: usize, others: usize) -> Vec<usize> {
    let mut by_size: Vec<(usize, usize)> = own.iter().copied().filter(|(_, b)| *b > 0).collect();
    by_size.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut left = total;
    let mut cut = Vec::new();
    for (key, bytes) in by_size {
        if left <= limit || bytes < others {
            break;
        }
        cut.push(key);
        left = left.saturating_sub(bytes);
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(own: &[(usize, usize)], total: usize, limit: usize, others: usize, want: &[usize]) {
        assert_eq!(
            victims(own, total, limit, others),
            want,
            "own {own:?} total {total}"
        );
    }

    #[test]
    fn cuts_the_largest_first_and_only_until_under_budget() {
        let own = [(1, 10), (2, 50), (3, 30), (4, 0), (5, 40)];
        // Under or at the budget: nobody.
        check(&own, 130, 130, 0, &[]);
        check(&own, 100, 130, 0, &[]);
        // 1 over: the largest alone.
        check(&own, 131, 130, 0, &[2]);
        // 60 over: the largest (50) is not enough, then the next (40).
        check(&own, 190, 130, 0, &[2, 5]);
        // Far over: everyone holding output, never the idle one.
        check(&own, 10_000, 0, 0, &[2, 5, 3, 1]);
    }

    #[test]
    fn defers_to_a_worker_holding_larger_connections() {
        let own = [(1, 10), (2, 50), (3, 30)];
        // Another worker holds 60: it goes first, this worker cuts nothing yet.
        check(&own, 1000, 100, 60, &[]);
        // Another holds 40: this worker's 50 goes, then its 30 is smaller: stop there.
        check(&own, 1000, 100, 40, &[2]);
        // Equal sizes both go (no worker waits for the other forever).
        check(&own, 1000, 100, 50, &[2]);
    }

    #[test]
    fn ties_break_by_key_for_determinism() {
        check(&[(7, 20), (3, 20), (5, 20)], 45, 10, 0, &[3, 5]);
    }

    #[test]
    fn accounting_and_publishing() {
        let b = OutputBudget::new(100, 3);
        b.account(0, 80);
        b.account(0, 30);
        assert_eq!(b.total(), 110);
        assert!(b.over());
        b.account(30, 0);
        assert!(!b.over());
        assert_eq!(b.publish(0, 70), 0);
        assert_eq!(b.publish(1, 20), 70);
        assert_eq!(b.publish(2, 5), 70);
        assert_eq!(b.publish(0, 1), 20);
        assert_eq!(b.limit(), 100);
    }
}
