//! `presenced bench store`: the [`Store`] alone, in this process, without sockets.
//!
//! Two phases on `--threads` threads:
//!
//! 1. **Fill**: every user `1..=--users` logs in once on `pc` without extension data (what
//!    `bench ingest --fill` sends over the wire), into a store of `--engine` sized for
//!    `--initial-users` (the `<limits initial-users>` default), so the indexes grow as they
//!    would on a node. Thread `i` takes users `i+1, i+1+T, ...` in batches of [`FILL_BATCH`]
//!    (one pin and one HLC reservation per batch, as a worker handles a pool frame). Every
//!    `apply` call is timed on its own: the longest one is the longest pause a writer saw, an
//!    index growth when one happened. The clock reads (about 20 ns each with a TSC clock) are
//!    included in the fill rate.
//! 2. **Read**: random `statuses` batches of `--batch` ids over the whole range for `--seconds`
//!    (one pin per batch, as a query connection), counted in ids per second.
//!
//! Memory is reported twice: the store's own [`Memory`] report (bytes per record, load, largest
//! growth) and the growth of the process's resident set over the fill divided by the users
//! (Linux `/proc/self/status` `VmRSS`; `n/a` elsewhere). The process's allocator is the binary's
//! (mimalloc), as on a node.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use presenced_core::hlc::{Hlc, Stamp};
use presenced_core::model::{Change, ClientType, Sid, Update};
use presenced_core::store::{Engine, Memory, Store};

use super::Rng;

/// Users applied per pin and HLC reservation in the fill phase.
const FILL_BATCH: u64 = 1024;

#[derive(Args, Debug)]
pub(crate) struct StoreArgs {
    /// Store engine: table or flurry (as `<store engine>`).
    #[arg(long, default_value = "table", value_parser = parse_engine)]
    engine: Engine,
    /// Users to fill (ids 1..=N).
    #[arg(long, default_value_t = 10_000_000)]
    users: u64,
    /// Threads for both phases.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Users the store is sized for at start (as `<limits initial-users>`).
    #[arg(long, default_value_t = 1 << 20)]
    initial_users: usize,
    /// Length of the read phase, seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Ids per `statuses` batch in the read phase.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,
}

fn parse_engine(s: &str) -> Result<Engine, String> {
    Engine::parse(s).ok_or_else(|| format!("unknown engine {s:?}: expected table or flurry"))
}

/// What one fill thread measured.
struct FillReport {
    /// Per-`apply` latency, ns.
    apply_ns: Histogram<u64>,
}

pub(crate) fn run(a: &StoreArgs) -> anyhow::Result<()> {
    if a.threads == 0 || a.users == 0 || a.batch == 0 {
        bail!("--threads, --users and --batch must be at least 1");
    }
    let rss_before = rss_bytes();
    let store = Store::new(a.engine, a.initial_users);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let hlc = Hlc::new(1);
    let reports = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..a.threads)
            .map(|i| {
                let (store, hlc, done) = (&store, &hlc, &done);
                scope.spawn(move || fill(store, hlc, now_ms, i as u64, a, done))
            })
            .collect();
        progress(a.users, &done, started, || {
            handles.iter().all(|h| h.is_finished())
        });
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("fill thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let fill_s = started.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let memory = store.memory();
    let mut apply_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for r in &reports {
        apply_ns.add(&r.apply_ns)?;
    }
    let (read_s, ids) = read(&store, a);
    print_report(
        a, fill_s, &apply_ns, &memory, rss_before, rss_after, read_s, ids,
    );
    Ok(())
}

/// Fill thread `i`: users `i+1, i+1+T, ...`, each applied and timed on its own.
fn fill(
    store: &Store,
    hlc: &Hlc,
    now_ms: u64,
    i: u64,
    a: &StoreArgs,
    done: &AtomicU64,
) -> anyhow::Result<FillReport> {
    let step = a.threads as u64;
    let mut apply_ns = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut sid = i + 1;
    while sid <= a.users {
        let n = FILL_BATCH.min((a.users - sid) / step + 1);
        let first = hlc.reserve(now_ms, n);
        let p = store.pin();
        for k in 0..n {
            let Some(s) = Sid::new(sid) else { break };
            let update = Update {
                uid: sid,
                pool: 1,
                change: Change::Login(ClientType::Pc),
                ext: None,
            };
            let stamp = Stamp::new(first.hlc() + k, first.node());
            let t = Instant::now();
            p.apply(s, stamp, &update);
            apply_ns.saturating_record(t.elapsed().as_nanos() as u64);
            sid += step;
        }
        drop(p);
        done.fetch_add(n, Ordering::Relaxed);
    }
    Ok(FillReport { apply_ns })
}

/// Prints the fill's progress to stderr every second (from 1 M users up) until `finished`.
fn progress(users: u64, done: &AtomicU64, started: Instant, finished: impl Fn() -> bool) {
    let mut last = Instant::now();
    while !finished() {
        std::thread::sleep(Duration::from_millis(50));
        if users >= 1_000_000 && last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprintln!(
                "[{:>5.1}s] {:>12} users filled",
                started.elapsed().as_secs_f64(),
                done.load(Ordering::Relaxed)
            );
        }
    }
}

/// The read phase: random `statuses` batches on every thread for `--seconds`; returns the
/// elapsed seconds and the ids answered.
fn read(store: &Store, a: &StoreArgs) -> (f64, u64) {
    let stop = AtomicBool::new(false);
    let ids = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for i in 0..a.threads {
            let (stop, ids) = (&stop, &ids);
            scope.spawn(move || {
                let mut rng =
                    Rng(0xA076_1D64_78BD_642F ^ (i as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB));
                let mut sids = Vec::with_capacity(a.batch);
                let mut out = Vec::with_capacity(a.batch);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    sids.clear();
                    sids.extend((0..a.batch).filter_map(|_| Sid::new(rng.next() % a.users + 1)));
                    out.clear();
                    store.pin().statuses(&sids, &mut out);
                    n += out.len() as u64;
                }
                ids.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(a.seconds.max(0.1)));
        stop.store(true, Ordering::Relaxed);
    });
    (started.elapsed().as_secs_f64(), ids.load(Ordering::Relaxed))
}

/// This process's resident set, bytes (Linux only).
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    a: &StoreArgs,
    fill_s: f64,
    apply_ns: &Histogram<u64>,
    m: &Memory,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    read_s: f64,
    ids: u64,
) {
    let engine = a.engine.name();
    let inserts = a.users as f64 / fill_s;
    let longest_us = apply_ns.max() as f64 / 1e3;
    let q = |p: f64| apply_ns.value_at_quantile(p);
    let rss_per_user = match (rss_before, rss_after) {
        (Some(b), Some(a2)) => Some(a2.saturating_sub(b) as f64 / a.users as f64),
        _ => None,
    };
    let ids_per_s = ids as f64 / read_s;
    println!(
        "bench store ({engine}): {} users filled by {} threads in {fill_s:.2} s = {inserts:.0} inserts/s",
        a.users, a.threads
    );
    println!(
        "apply (ns): p50 {} p99 {} p99.9 {}; longest apply (growth pause) {longest_us:.1} us",
        q(0.5),
        q(0.99),
        q(0.999)
    );
    println!(
        "memory: store {:.1} bytes/record ({} bytes, {} slots, load {:.3}, largest growth {} slots); \
         RSS growth {} bytes/user",
        m.bytes_per_record(),
        m.bytes,
        m.slots,
        m.load(),
        m.largest_growth,
        rss_per_user.map_or("n/a".to_owned(), |v| format!("{v:.1}"))
    );
    println!(
        "read: statuses of {} random ids on {} threads for {read_s:.2} s = {ids_per_s:.0} ids/s",
        a.batch, a.threads
    );
    if a.json {
        let v = serde_json::json!({
            "mode": "store",
            "engine": engine,
            "users": a.users,
            "threads": a.threads,
            "initial_users": a.initial_users,
            "fill_seconds": fill_s,
            "inserts_per_s": inserts.round(),
            "longest_apply_us": longest_us,
            "apply_ns": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": apply_ns.max()},
            "records": m.records,
            "store_bytes": m.bytes,
            "bytes_per_record": m.bytes_per_record(),
            "slots": m.slots,
            "load": m.load(),
            "largest_growth_slots": m.largest_growth,
            "rss_bytes_per_user": rss_per_user,
            "read_seconds": read_s,
            "batch": a.batch,
            "ids_per_s": ids_per_s.round(),
        });
        println!("{v}");
    }
}
