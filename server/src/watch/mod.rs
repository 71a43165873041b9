//! The node's live watch: [`Watch`], shared by every thread, holds the change [`Feed`], the event
//! ids of this node's incarnation, the watcher limits and counters, and wakes the workers that
//! hold watchers when changes arrive. The workers run the streams (`worker::watchers`); the
//! sans-IO halves are `presenced_frontends::watch` (SSE) and `presenced_core::proto::query`
//! (raw-TCP `SUBSCRIBE`).
//!
//! Event ids (opaque to clients) are `<node>-<incarnation hex>-<sequence>`: a resume point names
//! the node and its process incarnation, so an id from another node, an earlier run of this one,
//! or garbled text is told apart from a number of this feed ([`Watch::resume`]).
//!
//! Limits: at most `<web max-watchers>` streams (SSE and raw TCP together) on the node, and at
//! most a quarter of them (at least one) from one client address ([`Watch::admit`]).
//!
//! Thread model: publishers call [`Watch::publish`] (workers after a pool batch, the cluster
//! thread after merging peers' records); a worker is woken at most once per batch of changes
//! (a per-worker flag it clears before reading). Counters are atomics, the per-address table a
//! short lock per open or close.

mod feed;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use mio::Waker;
use presenced_config::{ClusterConfig, Unknown};
use presenced_core::Sid;

pub(crate) use self::feed::{Feed, Gone};

/// `<web max-watchers>` and `<web retention-changes>` when there is no `<web>` (raw-TCP
/// subscribe is served without it; SSE is not).
const DEFAULT_LIMIT: usize = 10_000;

/// Where a new stream starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// No resume point: the current status of every id.
    Fresh,
    /// After this number of this node's feed (it may still turn out to be gone).
    After(u64),
    /// A resume point that is not this feed's: `reset`, then fresh statuses.
    Reset,
}

/// The node's watch state.
#[derive(Debug)]
pub(crate) struct Watch {
    feed: Feed,
    node: u16,
    incarnation: u64,
    started: Instant,
    /// `<web>` is present: `GET /v1/watch` is served.
    pub(crate) sse: bool,
    /// `<web unknown="hide">`.
    pub(crate) hide: bool,
    max: usize,
    per_address: usize,
    open: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
    wakers: OnceLock<Vec<Arc<Waker>>>,
    /// Per worker: streams it holds, and whether a wake is already on its way.
    held: Vec<AtomicUsize>,
    woken: Vec<AtomicBool>,
    /// Events written (status frames of every stream).
    pub(crate) events: AtomicU64,
    /// Streams closed because their client did not read fast enough.
    pub(crate) cut: AtomicU64,
    /// Streams that started with a reset.
    pub(crate) resets: AtomicU64,
    /// Streams refused at the limits.
    pub(crate) refused: AtomicU64,
}

impl Watch {
    /// The watch state of node `node` under `config`, for `workers` workers.
    pub(crate) fn new(config: &ClusterConfig, node: u16, workers: usize) -> Self {
        let web = config.web();
        let max = web.map_or(DEFAULT_LIMIT, |w| w.max_watchers);
        let keep = web.map_or(DEFAULT_LIMIT, |w| w.retention_changes);
        let mut nonce = [0u8; 8];
        if getrandom::getrandom(&mut nonce).is_err() {
            // Only uniqueness across restarts matters; the start time gives most of it.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nonce = (t ^ u64::from(std::process::id())).to_le_bytes();
        }
        Self {
            feed: Feed::new(keep),
            node,
            incarnation: u64::from_le_bytes(nonce),
            started: Instant::now(),
            sse: web.is_some(),
            hide: web.is_none_or(|w| w.unknown == Unknown::Hide),
            max,
            per_address: (max / 4).max(1),
            open: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
            wakers: OnceLock::new(),
            held: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            woken: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            events: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The workers' wakers, in worker order (once, at start).
    pub(crate) fn set_wakers(&self, wakers: Vec<Arc<Waker>>) {
        let _ = self.wakers.set(wakers);
    }

    /// The feed.
    pub(crate) fn feed(&self) -> &Feed {
        &self.feed
    }

    /// Publishes changes of `sids` (in the order they were applied to the store) and wakes
    /// every worker holding a stream that is not already woken.
    pub(crate) fn publish(&self, sids: &[Sid]) {
        if sids.is_empty() {
            return;
        }
        let now_ms = self.started.elapsed().as_millis() as u64;
        self.feed.publish(now_ms, sids);
        let Some(wakers) = self.wakers.get() else {
            return;
        };
        for ((waker, held), woken) in wakers.iter().zip(&self.held).zip(&self.woken) {
            if held.load(Ordering::Acquire) > 0 && !woken.swap(true, Ordering::AcqRel) {
                let _ = waker.wake();
            }
        }
    }

    /// Worker `worker` is about to read the feed: the next publish wakes it again.
    pub(crate) fn rearm(&self, worker: usize) {
        if let Some(w) = self.woken.get(worker) {
            w.store(false, Ordering::Release);
        }
    }

    /// Counts a stream that starts on worker `worker` (+1) or ends there (-1).
    pub(crate) fn held(&self, worker: usize, delta: isize) {
        if let Some(h) = self.held.get(worker) {
            if delta >= 0 {
                h.fetch_add(delta.unsigned_abs(), Ordering::AcqRel);
            } else {
                h.fetch_sub(delta.unsigned_abs(), Ordering::AcqRel);
            }
        }
    }

    /// The event id of number `seq` of this feed.
    pub(crate) fn event_id(&self, seq: u64) -> String {
        format!("{}-{:x}-{seq}", self.node, self.incarnation)
    }

    /// Where a stream resuming from `id` (as the client sent it) starts.
    pub(crate) fn resume(&self, id: Option<&[u8]>) -> Resume {
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            return Resume::Fresh;
        };
        let parsed = std::str::from_utf8(id).ok().and_then(|t| {
            let mut parts = t.trim().splitn(3, '-');
            let node: u16 = parts.next()?.parse().ok()?;
            let inc = u64::from_str_radix(parts.next()?, 16).ok()?;
            let seq: u64 = parts.next()?.parse().ok()?;
            Some((node, inc, seq))
        });
        match parsed {
            Some((node, inc, seq)) if node == self.node && inc == self.incarnation => {
                Resume::After(seq)
            }
            _ => Resume::Reset,
        }
    }

    /// Reserves a stream for a client at `addr`: `false` when `max-watchers` streams are open,
    /// or a quarter of them from this address. Counted until [`release`](Self::release).
    pub(crate) fn admit(&self, addr: Option<IpAddr>) -> bool {
        let mut by = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.open.load(Ordering::Acquire) >= self.max {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if let Some(a) = addr {
            let n = by.entry(a).or_default();
            if *n >= self.per_address {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            *n += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Gives back what [`admit`](Self::admit) reserved for `addr`.
    pub(crate) fn release(&self, addr: Option<IpAddr>) {
        let mut by = self
            .by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = addr {
            if let Some(n) = by.get_mut(&a) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by.remove(&a);
                }
            }
        }
        let _ = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Appends the watch metrics in the Prometheus text format.
    pub(crate) fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &str, u64); 6] = [
            (
                "presenced_watchers",
                "gauge",
                "Open watch streams (SSE and raw-TCP subscribe).",
                self.open.load(Ordering::Relaxed) as u64,
            ),
            (
                "presenced_watch_events_total",
                "counter",
                "Status events written to watch streams.",
                self.events.load(Ordering::Relaxed),
            ),
            (
                "presenced_watchers_cut_total",
                "counter",
                "Watch streams closed because the client did not read fast enough.",
                self.cut.load(Ordering::Relaxed),
            ),
            (
                "presenced_watch_resets_total",
                "counter",
                "Watch streams that started with a reset (resume point gone or foreign).",
                self.resets.load(Ordering::Relaxed),
            ),
            (
                "presenced_watchers_refused_total",
                "counter",
                "Watch streams refused at max-watchers or the per-address share.",
                self.refused.load(Ordering::Relaxed),
            ),
            (
                "presenced_watch_feed_entries",
                "gauge",
                "Changes held in the change feed for resumption.",
                self.feed.len() as u64,
            ),
        ];
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(max: usize) -> Watch {
        let xml = format!(
            r#"<cluster name="t"><web max-watchers="{max}"/>
            <node id="3" host="127.0.0.1" pool-port="1" query-port="2" sync-port="3"
             time-port="4" http-port="5"/></cluster>"#
        );
        let config = ClusterConfig::parse(&xml, "t.xml").unwrap();
        Watch::new(&config, 3, 2)
    }

    #[test]
    fn event_ids_round_trip_and_foreign_ones_reset() {
        let w = watch(8);
        let id = w.event_id(42);
        assert_eq!(w.resume(Some(id.as_bytes())), Resume::After(42));
        assert_eq!(w.resume(None), Resume::Fresh);
        assert_eq!(w.resume(Some(b"")), Resume::Fresh);
        let other_node = id.replacen('3', "4", 1);
        assert_eq!(w.resume(Some(other_node.as_bytes())), Resume::Reset);
        let other_run = format!("3-{:x}-42", w.incarnation ^ 1);
        assert_eq!(w.resume(Some(other_run.as_bytes())), Resume::Reset);
        for garbled in [&b"garbage"[..], b"3-zz-1", b"\xff", b"3-1"] {
            assert_eq!(w.resume(Some(garbled)), Resume::Reset);
        }
    }

    #[test]
    fn limits_per_node_and_per_address() {
        let w = watch(8);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(w.admit(Some(a)) && w.admit(Some(a)));
        assert!(!w.admit(Some(a)), "a quarter of 8 from one address");
        for _ in 0..2 {
            assert!(w.admit(Some(b)));
        }
        for _ in 0..4 {
            assert!(w.admit(None));
        }
        assert!(!w.admit(Some("127.0.0.3".parse().unwrap())), "8 open");
        w.release(Some(a));
        assert!(w.admit(Some(a)));
        let mut text = String::new();
        w.render(&mut text);
        assert!(text.contains("presenced_watchers 8\n"));
        assert!(text.contains("presenced_watchers_refused_total 2\n"));
    }
}
