//! The cluster thread's helpers for large batches of remote records: the
//! [`presenced_core::cluster::node::Appliers`] of this driver.
//!
//! A batch of at least `PARALLEL_MIN` records (a full `UPDATES` frame under load, every snapshot
//! chunk) is cut by digest bucket and merged on `width` threads, the cluster thread included,
//! through [`std::thread::scope`]: the records are borrowed from the frame, and every part is
//! merged before the node acknowledges the batch. Spawning costs ≈ 20 µs a thread against
//! hundreds of µs of merging per batch; a thread that cannot be spawned leaves its part to the
//! cluster thread.

use presenced_core::cluster::node::Appliers;

/// Scoped threads for each large batch, `width` of them (the cluster thread included).
#[derive(Debug)]
pub(crate) struct ScopedAppliers {
    width: usize,
}

impl ScopedAppliers {
    /// Appliers over `width` threads (at least 1: the caller).
    pub(crate) fn new(width: usize) -> Self {
        Self {
            width: width.max(1),
        }
    }
}

impl Appliers for ScopedAppliers {
    fn width(&self) -> usize {
        self.width
    }

    fn run(&self, parts: usize, job: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            let mut inline = vec![0];
            for part in 1..parts {
                let spawned = std::thread::Builder::new()
                    .name("applier".into())
                    .spawn_scoped(s, move || job(part));
                if spawned.is_err() {
                    inline.push(part);
                }
            }
            for part in inline {
                job(part);
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn every_part_runs_once_before_run_returns() {
        let a = ScopedAppliers::new(3);
        let seen: Vec<AtomicUsize> = (0..5).map(|_| AtomicUsize::new(0)).collect();
        a.run(5, &|p| {
            seen[p].fetch_add(1, Ordering::Relaxed);
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
    }
}
