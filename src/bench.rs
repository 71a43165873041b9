//! `presenced bench`: the load generator.
//!
//! Each connection runs on its own thread over a blocking socket, sends pre-encoded frames with a
//! bounded number in flight (pipelining), and records the latency of every frame (send to ack or
//! answer) in an HDR histogram. Histograms are merged at the end. With `--json`, the last line of
//! stdout is one JSON object holding the rates and latency percentiles in microseconds.
//!
//! `bench store` is the exception: it runs the store in this process, without a node
//! (`bench::store`).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use presenced_client::ClientError;
use presenced_core::model::{ClientType, Sid};
use presenced_core::proto::{pool, query};

mod store;

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Node to load (pool port for ingest, query port for query).
    #[arg(long, value_name = "HOST:PORT")]
    target: SocketAddr,
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Parallel connections (one thread each).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct users (ids 1..=N).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Frames in flight per connection.
    #[arg(long, default_value_t = 16)]
    depth: usize,
    /// Print a JSON summary as the last line of stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Pool ingest: pipelined EVENTS batches; acked updates/s and ack latency.
    Ingest {
        #[command(flatten)]
        common: Common,
        /// Events per frame.
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Target updates/s over all connections (0: as fast as acks allow).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Instead of a random mix, log every user 1..=N in once on `pc` (no ext), then stop:
        /// the memory-per-user measurement.
        #[arg(long)]
        fill: bool,
    },
    /// Cluster: ingest at a fixed rate into one node, then read the replication lag that the
    /// other nodes measured (their `presenced_replication_lag_seconds` summaries).
    Cluster {
        #[command(flatten)]
        common: Common,
        /// Events per frame.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Target updates/s over all connections.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// HTTP address of a node whose lag to report; repeat for each.
        #[arg(long, value_name = "HOST:PORT")]
        observe: Vec<SocketAddr>,
    },
    /// Raw-TCP batch query: pipelined QUERY requests; ids/s and request latency.
    Query {
        #[command(flatten)]
        common: Common,
        /// Ids per request.
        #[arg(long, default_value_t = 100)]
        batch: usize,
    },
    /// In-process store, no node: fill N users (one pc login each) on T threads, then random
    /// batch reads; inserts/s, the longest single apply (growth pause), memory per user, ids/s.
    Store(store::StoreArgs),
}

/// A small xorshift generator: deterministic per connection, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Totals {
    units: AtomicU64,
    stop: AtomicBool,
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (name, common, unit) = match &args.mode {
        Mode::Ingest { common, .. } => ("ingest", common.clone(), "updates"),
        Mode::Cluster { common, .. } => ("cluster", common.clone(), "updates"),
        Mode::Query { common, .. } => ("query", common.clone(), "ids"),
        Mode::Store(a) => return store::run(a),
    };
    if common.connections == 0 || common.users == 0 || common.depth == 0 {
        bail!("--connections, --users and --depth must be at least 1");
    }
    let totals = Arc::new(Totals {
        units: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut threads = Vec::new();
    for i in 0..common.connections {
        let totals = totals.clone();
        let common = common.clone();
        let job: Box<dyn FnOnce() -> anyhow::Result<Histogram<u64>> + Send> = match &args.mode {
            Mode::Ingest {
                batch, fill: true, ..
            } => {
                let batch = *batch;
                Box::new(move || fill_conn(i, &common, batch, &totals))
            }
            Mode::Ingest { batch, rate, .. } | Mode::Cluster { batch, rate, .. } => {
                let (batch, rate) = (*batch, *rate / common.connections as u64);
                Box::new(move || ingest_conn(i, &common, batch, rate, &totals))
            }
            Mode::Query { batch, .. } => {
                let batch = *batch;
                Box::new(move || query_conn(i, &common, batch, &totals))
            }
            Mode::Store(_) => bail!("bench store opens no connection"),
        };
        threads.push(std::thread::spawn(job));
    }
    let started = Instant::now();
    let run_for = Duration::from_secs_f64(common.seconds.max(0.1));
    let mut last = (Instant::now(), 0u64);
    while started.elapsed() < run_for && !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(
            Duration::from_millis(100).min(run_for.saturating_sub(started.elapsed())),
        );
        if common.seconds >= 5.0 && last.0.elapsed() >= Duration::from_secs(1) {
            let now = totals.units.load(Ordering::Relaxed);
            let rate = (now - last.1) as f64 / last.0.elapsed().as_secs_f64();
            eprintln!(
                "[{:>5.1}s] {:>12.0} {unit}/s",
                started.elapsed().as_secs_f64(),
                rate
            );
            last = (Instant::now(), now);
        }
    }
    totals.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in threads {
        let h = t
            .join()
            .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        hist.add(&h)?;
    }
    let units = totals.units.load(Ordering::Relaxed);
    let rate = units as f64 / elapsed;
    let q = |p: f64| hist.value_at_quantile(p);
    println!(
        "bench {name}: {units} {unit} in {elapsed:.2} s over {} connections = {rate:.0} {unit}/s",
        common.connections
    );
    println!(
        "latency per frame (us): p50 {} p99 {} p99.9 {} max {} ({} frames)",
        q(0.5),
        q(0.99),
        q(0.999),
        hist.max(),
        hist.len()
    );
    let mut lags = Vec::new();
    if let Mode::Cluster { observe, .. } = &args.mode {
        // Let the last batches arrive before reading the lag summaries.
        std::thread::sleep(Duration::from_millis(500));
        for addr in observe {
            let l = scrape_lag(*addr).with_context(|| format!("cannot read /metrics of {addr}"))?;
            println!(
                "replication lag at {addr} (us): p50 {} p99 {} p99.9 {} ({} updates)",
                l.p50, l.p99, l.p999, l.count
            );
            lags.push(serde_json::json!({"node": addr.to_string(), "p50": l.p50, "p99": l.p99, "p999": l.p999, "count": l.count}));
        }
    }
    if common.json {
        let key = if name == "query" {
            "ids_per_s"
        } else {
            "updates_per_s"
        };
        let v = serde_json::json!({
            "mode": name,
            key: rate.round(),
            "units": units,
            "seconds": elapsed,
            "connections": common.connections,
            "frames": hist.len(),
            "latency_us": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": hist.max()},
            "replication_lag_us": lags,
        });
        println!("{v}");
    }
    Ok(())
}

fn connect(target: SocketAddr, hello: &[u8]) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {target}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(hello)?;
    let mut buf = Vec::new();
    let (ty, _) = read_frame(&mut s, &mut buf)?;
    if ty != pool::ty::WELCOME {
        bail!("handshake refused by {target} (frame type 0x{ty:02x})");
    }
    Ok((s, buf))
}

/// Reads one frame with the client library's reader; returns its type and body. Errors read as
/// they always have in this tool: the end of the stream is "server closed the connection", I/O
/// and decoding errors are reported as such.
fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u8, Vec<u8>)> {
    match presenced_client::read_frame(s, buf, u32::MAX) {
        Ok(frame) => Ok(frame),
        Err(ClientError::Io(e)) if e.kind() == ErrorKind::UnexpectedEof => {
            bail!("server closed the connection")
        }
        Err(ClientError::Io(e)) => Err(e.into()),
        Err(ClientError::Decode(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

fn new_hist() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// `--fill`: connection `i` of `C` logs in users `i+1, i+1+C, ...` once each.
fn fill_conn(i: usize, c: &Common, batch: usize, t: &Totals) -> anyhow::Result<Histogram<u64>> {
    let mut hello = Vec::new();
    pool::ClientFrame::Hello(pool::Hello {
        pool: 2000 + i as u32,
        stream: 0x5EED_0000 + i as u64,
        resume_from: 1,
        token: Vec::new(),
    })
    .encode(&mut hello);
    let (mut s, mut buf) = connect(c.target, &hello)?;
    let step = c.connections as u64;
    let mut next_sid = i as u64 + 1;
    let mut seq = 1u64;
    let mut hist = new_hist()?;
    let mut inflight: VecDeque<(u64, Instant, u64)> = VecDeque::new();
    let mut frame = Vec::new();
    loop {
        while inflight.len() < c.depth && next_sid <= c.users {
            let mut events = Vec::with_capacity(batch);
            while events.len() < batch.clamp(1, 4096) && next_sid <= c.users {
                let sid = Sid::new(next_sid).unwrap_or(Sid::MIN);
                events.push(pool::Event::Login {
                    sid,
                    uid: next_sid,
                    client: ClientType::Pc,
                    ext: None,
                });
                next_sid += step;
            }
            let n = events.len() as u64;
            frame.clear();
            pool::ClientFrame::Events {
                first_seq: seq,
                events,
            }
            .encode(&mut frame);
            s.write_all(&frame)?;
            seq += n;
            inflight.push_back((seq - 1, Instant::now(), n));
        }
        if inflight.is_empty() {
            return Ok(hist);
        }
        let (ty, body) = read_frame(&mut s, &mut buf)?;
        if let pool::ServerFrame::Ack(acked) = pool::ServerFrame::decode(ty, &body)? {
            while inflight.front().is_some_and(|(last, _, _)| *last <= acked) {
                if let Some((_, at, n)) = inflight.pop_front() {
                    hist.saturating_record(at.elapsed().as_micros() as u64);
                    t.units.fetch_add(n, Ordering::Relaxed);
                }
            }
        }
    }
}

fn ingest_conn(
    i: usize,
    c: &Common,
    batch: usize,
    rate: u64,
    t: &Totals,
) -> anyhow::Result<Histogram<u64>> {
    let mut hello = Vec::new();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    pool::ClientFrame::Hello(pool::Hello {
        pool: 1000 + i as u32,
        stream: rng.next(),
        resume_from: 1,
        token: Vec::new(),
    })
    .encode(&mut hello);
    let (mut s, mut buf) = connect(c.target, &hello)?;
    let batch = batch.clamp(1, 4096);
    // Every frame is new: random users over the whole range, so the server's working set is
    // all `--users` users, not a ring of repeated frames.
    let mut events = Vec::with_capacity(batch);
    let mut frame = Vec::new();
    let mut next_frame = |rng: &mut Rng, seq: u64| {
        events.clear();
        for _ in 0..batch {
            let sid = Sid::new(rng.next() % c.users + 1).unwrap_or(Sid::MIN);
            let uid = sid.get();
            let client = ClientType::from_code((rng.next() % 6) as u8).unwrap_or(ClientType::Pc);
            events.push(match rng.next() % 10 {
                0..=5 => pool::Event::Login {
                    sid,
                    uid,
                    client,
                    ext: None,
                },
                6..=8 => pool::Event::Logout {
                    sid,
                    uid,
                    client,
                    ext: None,
                },
                _ => pool::Event::Permission {
                    sid,
                    uid,
                    allow: rng.next() % 2 == 0,
                    ext: None,
                },
            });
        }
        frame.clear();
        pool::ClientFrame::Events {
            first_seq: seq,
            events: std::mem::take(&mut events),
        }
        .encode(&mut frame);
        frame.clone()
    };
    let mut hist = new_hist()?;
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut seq = 1u64;
    let started = Instant::now();
    let mut sent = 0u64;
    while !t.stop.load(Ordering::Relaxed) {
        while inflight.len() < c.depth {
            if rate > 0 && sent as f64 > rate as f64 * started.elapsed().as_secs_f64() {
                break;
            }
            let f = next_frame(&mut rng, seq);
            s.write_all(&f)?;
            let last = seq + batch as u64 - 1;
            inflight.push_back((last, Instant::now()));
            seq = last + 1;
            sent += batch as u64;
        }
        if inflight.is_empty() {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let (ty, body) = read_frame(&mut s, &mut buf)?;
        match pool::ServerFrame::decode(ty, &body)? {
            pool::ServerFrame::Ack(acked) => {
                while inflight.front().is_some_and(|(last, _)| *last <= acked) {
                    if let Some((_, at)) = inflight.pop_front() {
                        hist.saturating_record(at.elapsed().as_micros() as u64);
                        t.units.fetch_add(batch as u64, Ordering::Relaxed);
                    }
                }
            }
            pool::ServerFrame::Error { message, .. } => bail!("server error: {message}"),
            _ => {}
        }
    }
    Ok(hist)
}

fn query_conn(i: usize, c: &Common, batch: usize, t: &Totals) -> anyhow::Result<Histogram<u64>> {
    let mut hello = Vec::new();
    query::ClientFrame::Hello(query::Hello::V1).encode(&mut hello);
    let (mut s, mut buf) = connect(c.target, &hello)?;
    let mut rng = Rng(0xA076_1D64_78BD_642F ^ (i as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB));
    let mut hist = new_hist()?;
    let mut inflight = VecDeque::new();
    let mut req_id = 0u32;
    let mut frame = Vec::new();
    while !t.stop.load(Ordering::Relaxed) {
        while inflight.len() < c.depth {
            // Fresh random ids for every request, over the whole `--users` range.
            let ids = (0..batch).map(|_| rng.next() % c.users + 1).collect();
            req_id = req_id.wrapping_add(1);
            frame.clear();
            query::ClientFrame::Query { req_id, ids }.encode(&mut frame);
            s.write_all(&frame)?;
            inflight.push_back(Instant::now());
        }
        let (ty, body) = read_frame(&mut s, &mut buf)?;
        if ty != query::ty::RESULT {
            bail!("query refused: {:?}", query::ServerFrame::decode(ty, &body));
        }
        if let Some(at) = inflight.pop_front() {
            hist.saturating_record(at.elapsed().as_micros() as u64);
            t.units.fetch_add(batch as u64, Ordering::Relaxed);
        }
    }
    Ok(hist)
}

/// A node's replication-lag summary, µs.
struct Lag {
    p50: u64,
    p99: u64,
    p999: u64,
    count: u64,
}

/// Reads `presenced_replication_lag_seconds` from a node's `/metrics`.
fn scrape_lag(addr: SocketAddr) -> anyhow::Result<Lag> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let value = |key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| (v * 1e6).round() as u64)
    };
    let count = text
        .lines()
        .find(|l| l.starts_with("presenced_replication_lag_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Lag {
        p50: value("presenced_replication_lag_seconds{quantile=\"0.5\"}"),
        p99: value("presenced_replication_lag_seconds{quantile=\"0.99\"}"),
        p999: value("presenced_replication_lag_seconds{quantile=\"0.999\"}"),
        count,
    })
}
