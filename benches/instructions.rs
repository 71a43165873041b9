//! Instruction-count workloads, run under callgrind by `benches/instructions.sh`.
//!
//! `cargo bench --bench instructions --no-run`, then `<binary> WORKLOAD`. Not a criterion bench:
//! `main` runs one FIXED, deterministic, single-threaded piece of work (no sockets, no sleeps, no
//! clock-driven loops) and prints a checksum so that nothing is optimised away.
//!
//! Each workload is a `setup_*` function (test data, filled stores: harness work) and a
//! `#[inline(never)] measure_*` function (the product code being compared). The script counts
//! the instructions inside `measure_*` with `valgrind --tool=callgrind
//! --toggle-collect='*::measure_*'`, and, separately, the whole process.
//!
//! Workloads (`instructions list` prints them):
//!
//! - `pool_ingest`: 200k pool events over 50k sids, encoded as `EVENTS` frames, fed through the
//!   server-side `PoolSession` into a `Store`.
//! - `query_batch`: 20k `QUERY` frames of 100 ids through `QuerySession`, 100k users.
//! - `http_json`: 20k pipelined `POST /v1/presence` requests of 20 ids through `HttpConn`, with a
//!   `Backend` over a `Store` of 100k users.
//! - `repl_codec`: encode and decode 100 replication `UPDATES` frames of 4096 records.
//! - `cluster_snapshot`: a `ClusterNode` with one peer sends a full snapshot of 200k users.
//!
//! Ported from the pre-re-cut harness (commit 1aa0198) with the same workloads, sizes, seeds and
//! `measure_*` functions, so that instruction counts compare across the re-cut (BENCHMARKS.md,
//! "Re-cut (issue 9)"). What changed: in `http_json`, `HttpConn` takes the [`Router`] as its
//! handler and the [`Backend`] as the context of each `handle_input` call; in `pool_ingest`, the
//! session's reply marks are taken after each call, as the driver does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use presenced_core::cluster::node::{ClusterNode, Ctx, Dir, Now, Timing};
use presenced_core::cluster::repl::{Msg, NodeInfo, MAX_FRAME, MAX_RECORDS};
use presenced_core::model::{Change, ClientType, Ext, ExtLimits, Record, Sid, Update};
use presenced_core::proto::pool::{ClientFrame, Event, Hello, PoolLimits};
use presenced_core::proto::pool_session::{PoolCtx, PoolSession, Streams};
use presenced_core::proto::query::{self, QueryCtx, QueryLimits, QuerySession};
use presenced_core::store::Store;
use presenced_core::wire::split_frame;
use presenced_core::{Hlc, Stamp};

/// Cluster time used everywhere (2025-11-25T10:00:00Z): fixed, so output is reproducible.
#[path = "instructions/http.rs"]
mod http;

use http::http_json;

const NOW_MS: u64 = 1_764_064_800_000;

/// A workload's name and body (which returns its checksum).
type Workload = (&'static str, fn() -> u64);

const WORKLOADS: &[Workload] = &[
    ("pool_ingest", pool_ingest),
    ("query_batch", query_batch),
    ("http_json", http_json),
    ("repl_codec", repl_codec),
    ("cluster_snapshot", cluster_snapshot),
];

fn main() {
    // cargo passes flags such as `--bench`; the first non-flag argument is the workload.
    let name = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let Some(name) = name else {
        // `cargo bench` with no filter runs every bench target: do nothing, successfully.
        eprintln!("usage: instructions WORKLOAD | list");
        return;
    };
    if name == "list" {
        for (n, _) in WORKLOADS {
            println!("{n}");
        }
        return;
    }
    let Some((_, run)) = WORKLOADS.iter().find(|(n, _)| *n == name) else {
        eprintln!("unknown workload {name:?}; `list` prints them");
        std::process::exit(2);
    };
    let checksum = black_box(run());
    println!("{name} checksum {checksum:#018x}");
}

// ----- shared helpers -----

/// xorshift64: the same sequence on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `1..=n`.
    fn id(&mut self, n: u64) -> u64 {
        self.next() % n + 1
    }
}

fn mix(acc: u64, v: u64) -> u64 {
    (acc ^ v).wrapping_mul(0x100_0000_01b3).rotate_left(17)
}

fn nick() -> Arc<Ext> {
    Arc::new(
        Ext::new(
            vec![
                ("nick".into(), "alice".into()),
                ("mood".into(), "busy".into()),
            ],
            &ExtLimits::default(),
        )
        .unwrap(),
    )
}

/// A store of users `1..=n`: all logged in on one or two clients, every 4th logged out again,
/// every 7th denying strangers, every 8th with extension data.
fn fill_store(n: u64) -> Store {
    let store = Store::with_capacity(n as usize);
    let hlc = Hlc::new(1);
    let ext = nick();
    let pinned = store.pin();
    for i in 1..=n {
        let sid = Sid::new(i).unwrap();
        let client = ClientType::ALL[(i % 6) as usize];
        let apply = |change, ext: Option<Arc<Ext>>| {
            let u = Update {
                uid: i + 1_000_000,
                pool: 1 + (i % 3) as u32,
                change,
                ext,
            };
            pinned.apply(sid, hlc.now(NOW_MS), &u);
        };
        apply(Change::Login(client), (i % 8 == 0).then(|| ext.clone()));
        if i % 3 == 0 {
            apply(Change::Login(ClientType::Mobile), None);
        }
        if i % 4 == 0 {
            apply(Change::Logout(client), None);
        }
        if i % 7 == 0 {
            apply(Change::Permission(false), None);
        }
    }
    drop(pinned);
    store
}

// ----- pool_ingest -----

const POOL_EVENTS: u64 = 200_000;
const POOL_SIDS: u64 = 50_000;
const POOL_BATCH: usize = 512;

/// The pool's side: `HELLO` then `EVENTS` frames of `POOL_BATCH` events (not yet encoded).
fn setup_pool_ingest() -> Vec<ClientFrame> {
    let mut rng = Rng(0x5eed_0001);
    let ext = nick();
    let mut frames = vec![ClientFrame::Hello(Hello {
        pool: 1,
        stream: 7,
        resume_from: 1,
        token: Vec::new(),
    })];
    let mut batch = Vec::with_capacity(POOL_BATCH);
    let mut first_seq = 1;
    for n in 0..POOL_EVENTS {
        let r = rng.next();
        let sid_raw = r % POOL_SIDS + 1;
        let sid = Sid::new(sid_raw).unwrap();
        let client = ClientType::ALL[((r >> 20) % 6) as usize];
        let ext = ((r >> 32) % 16 == 0).then(|| ext.clone());
        let uid = sid_raw + 1_000_000;
        batch.push(if (r >> 40) % 10 < 6 {
            Event::Login {
                sid,
                uid,
                client,
                ext,
            }
        } else {
            Event::Logout {
                sid,
                uid,
                client,
                ext,
            }
        });
        if batch.len() == POOL_BATCH || n + 1 == POOL_EVENTS {
            let events = std::mem::replace(&mut batch, Vec::with_capacity(POOL_BATCH));
            let len = events.len() as u64;
            frames.push(ClientFrame::Events { first_seq, events });
            first_seq += len;
        }
    }
    frames
}

fn pool_ingest() -> u64 {
    let frames = setup_pool_ingest();
    let store = Store::default();
    let streams = Streams::default();
    let sum = measure_pool_ingest(black_box(&frames), &store, &streams);
    assert_eq!(streams.applied(1, 7), POOL_EVENTS);
    let pinned = store.pin();
    let online = (1..=POOL_SIDS)
        .filter(|i| pinned.status(Sid::new(*i).unwrap()).online)
        .count() as u64;
    mix(sum, online)
}

/// Encodes the frames (the pool's codec), then serves them into the empty `store` as the node
/// does.
#[inline(never)]
fn measure_pool_ingest(frames: &[ClientFrame], store: &Store, streams: &Streams) -> u64 {
    let mut input = Vec::new();
    for f in frames {
        f.encode(&mut input);
    }
    let hlc = Hlc::new(1);
    let pinned = store.pin();
    let mut changed = Vec::new();
    let mut out = Vec::new();
    let mut session = PoolSession::new(PoolLimits::default());
    let mut pos = 0;
    let mut events = 0;
    let mut sum = 0;
    // The driver's loop: a frame budget per call, acks flushed (here: checksummed) after each.
    while pos < input.len() {
        let mut ctx = PoolCtx {
            store: &pinned,
            hlc: &hlc,
            streams,
            now_ms: NOW_MS,
            token: None,
            changed: &mut changed,
        };
        let o = session
            .handle_input(&input[pos..], 16, &mut ctx, &mut out)
            .unwrap();
        assert!(o.consumed > 0, "no progress");
        pos += o.consumed;
        events += o.events;
        sum = mix(sum, out.len() as u64);
        out.clear();
        // The driver hands the reply marks to its ack gate; here they are only taken (not
        // checksummed, so the checksum stays comparable with the pre-re-cut harness).
        session.take_replies().for_each(drop);
        sum = mix(sum, changed.len() as u64);
        changed.clear();
    }
    assert_eq!(events, POOL_EVENTS);
    mix(sum, events)
}

// ----- query_batch -----

const QUERY_USERS: u64 = 100_000;
const QUERY_REQUESTS: u32 = 20_000;
const QUERY_IDS: usize = 100;

/// `HELLO` then the `QUERY` frames (not yet encoded); ids drawn from 110% of the users (so some
/// are unknown).
fn setup_query_batch() -> Vec<query::ClientFrame> {
    let mut rng = Rng(0x5eed_0002);
    let mut frames = vec![query::ClientFrame::Hello(query::Hello::V1)];
    for req_id in 1..=QUERY_REQUESTS {
        let ids = (0..QUERY_IDS)
            .map(|_| rng.id(QUERY_USERS + QUERY_USERS / 10))
            .collect();
        frames.push(query::ClientFrame::Query { req_id, ids });
    }
    frames
}

fn query_batch() -> u64 {
    let store = fill_store(QUERY_USERS);
    measure_query_batch(&store, black_box(&setup_query_batch()))
}

/// Encodes the requests (the client's codec), then serves them as the node does.
#[inline(never)]
fn measure_query_batch(store: &Store, frames: &[query::ClientFrame]) -> u64 {
    let mut input = Vec::new();
    for f in frames {
        f.encode(&mut input);
    }
    let limits = QueryLimits::default();
    let pinned = store.pin();
    let keys = presenced_core::auth::ApiKeys::default();
    let ctx = QueryCtx {
        limits: &limits,
        store: &pinned,
        node: 1,
        now_ms: NOW_MS,
        keys: &keys,
    };
    let mut session = QuerySession::default();
    let mut out = Vec::new();
    let (mut pos, mut requests, mut ids, mut sum) = (0, 0, 0, 0);
    while pos < input.len() {
        let o = session
            .handle_input(&input[pos..], 64, &ctx, &mut out)
            .unwrap();
        assert!(o.consumed > 0, "no progress");
        pos += o.consumed;
        requests += o.requests;
        ids += o.ids;
        sum = mix(sum, out.len() as u64);
        sum = mix(sum, u64::from(out.last().copied().unwrap_or(0)));
        out.clear();
    }
    assert_eq!(requests, u64::from(QUERY_REQUESTS));
    assert_eq!(ids, u64::from(QUERY_REQUESTS) * QUERY_IDS as u64);
    mix(sum, ids)
}

// ----- repl_codec -----

const REPL_FRAMES: u64 = 100;

/// `MAX_RECORDS` (4096) records with a mix of clients, permission and extension data.
fn setup_repl_codec() -> Vec<(Sid, Record)> {
    let hlc = Hlc::new(3);
    let ext = nick();
    (1..=MAX_RECORDS as u64)
        .map(|i| {
            let sid = Sid::new(i * 7919).unwrap();
            let upd = |change, ext| Update {
                uid: i,
                pool: 2,
                change,
                ext,
            };
            let ext = (i % 4 == 0).then(|| ext.clone());
            let mut r = Record::from_update(
                hlc.now(NOW_MS),
                &upd(Change::Login(ClientType::ALL[(i % 6) as usize]), ext),
            );
            if i % 2 == 0 {
                r.apply(hlc.now(NOW_MS), &upd(Change::Login(ClientType::Web), None));
            }
            if i % 5 == 0 {
                r.apply(hlc.now(NOW_MS), &upd(Change::Permission(false), None));
            }
            (sid, r)
        })
        .collect()
}

fn repl_codec() -> u64 {
    measure_repl_codec(black_box(setup_repl_codec()))
}

/// Encodes and decodes `REPL_FRAMES` `UPDATES` frames of the records.
#[inline(never)]
fn measure_repl_codec(records: Vec<(Sid, Record)>) -> u64 {
    let mut msg = Msg::Updates {
        upto_seq: 0,
        records,
    };
    let mut buf = Vec::new();
    let mut sum = 0;
    for n in 1..=REPL_FRAMES {
        if let Msg::Updates { upto_seq, .. } = &mut msg {
            *upto_seq = n * MAX_RECORDS as u64;
        }
        buf.clear();
        msg.encode(&mut buf);
        let (ty, body, used) = split_frame(&buf, MAX_FRAME).unwrap().unwrap();
        assert_eq!(used, buf.len());
        let Msg::Updates { upto_seq, records } = Msg::decode(ty, body).unwrap() else {
            panic!("decoded something else");
        };
        assert_eq!(records.len(), MAX_RECORDS);
        sum = mix(sum, upto_seq);
        sum = mix(sum, buf.len() as u64);
        sum = mix(sum, records.last().map_or(0, |(s, _)| s.get()));
    }
    sum
}

// ----- cluster_snapshot -----

const SNAPSHOT_USERS: u64 = 200_000;

fn node_info(id: u16) -> NodeInfo {
    NodeInfo {
        id,
        host: IpAddr::V4(Ipv4Addr::LOCALHOST),
        pool_port: 7400 + id,
        query_port: 7500 + id,
        sync_port: 7600 + id,
        time_port: 7700 + id,
        http_port: 7800 + id,
    }
}

fn cluster_snapshot() -> u64 {
    let store = fill_store(SNAPSHOT_USERS);
    let hlc = Hlc::new(1);
    let ctx = Ctx {
        store: &store,
        hlc: &hlc,
        appliers: None,
    };
    measure_cluster_snapshot(black_box(&ctx))
}

/// A fresh node with one peer: the outbound link comes up, the peer asks for everything
/// (`WELCOME` with `resume_from: 0`), and the node's output is drained.
#[inline(never)]
fn measure_cluster_snapshot(ctx: &Ctx<'_>) -> u64 {
    let timing = Timing {
        heartbeat_us: 50_000,
        down_after_us: 400_000,
        sync_interval_us: 100_000,
        tolerance_us: 2_000,
        flush_us: 2_000,
        max_drift_us: 5_000_000,
    };
    let now = Now {
        mono_us: 1_000_000,
        wall_us: (NOW_MS * 1000) as i64,
    };
    let mut node = ClusterNode::new(
        node_info(1),
        "bench".into(),
        &[node_info(1), node_info(2)],
        timing,
        0x1234_5678,
        now,
    );
    node.handle_out_connected(2);
    node.handle_out_msg(
        now,
        2,
        Msg::Welcome {
            node: 2,
            resume_from: 0,
        },
        ctx,
    );
    let (mut frames, mut records, mut sum, mut total) = (0u64, 0u64, 0u64, None);
    while let Some((peer, dir, msg)) = node.poll_transmit(now, ctx) {
        assert_eq!((peer, dir), (2, Dir::Out));
        frames += 1;
        match msg {
            Msg::Snapshot(chunk) => {
                records += chunk.len() as u64;
                sum = mix(sum, chunk.first().map_or(0, |(s, r)| s.get() ^ stamp_of(r)));
            }
            Msg::SnapshotEnd { records, .. } => total = Some(records),
            _ => {}
        }
    }
    assert_eq!(records, SNAPSHOT_USERS);
    assert_eq!(total, Some(SNAPSHOT_USERS));
    mix(mix(sum, frames), records)
}

fn stamp_of(r: &Record) -> u64 {
    let s: Stamp = r.ident().stamp;
    s.hlc()
}
