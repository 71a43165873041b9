//! Codec throughput: encode and decode of the pool and query protocols.
//!
//! `cargo bench --bench codecs`. Every group reports a `Throughput` (elements = events or ids).

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use presenced_core::model::{ClientType, Ext, ExtLimits, Sid};
use presenced_core::proto::pool::{ClientFrame, Event, PoolLimits};
use presenced_core::proto::query;
use presenced_core::wire::split_frame;

fn events(n: u64, with_ext: bool) -> Vec<Event> {
    let ext =
        Arc::new(Ext::new(vec![("nick".into(), "alice".into())], &ExtLimits::default()).unwrap());
    (1..=n)
        .map(|i| Event::Login {
            sid: Sid::new(i * 7919).unwrap(),
            uid: i,
            client: ClientType::ALL[(i % 6) as usize],
            ext: with_ext.then(|| ext.clone()),
        })
        .collect()
}

fn pool_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_events_512");
    g.throughput(Throughput::Elements(512));
    for (name, ext) in [("plain", false), ("ext", true)] {
        let frame = ClientFrame::Events {
            first_seq: 1,
            events: events(512, ext),
        };
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        g.bench_function(format!("encode_{name}"), |b| {
            let mut out = Vec::with_capacity(bytes.len());
            b.iter(|| {
                out.clear();
                black_box(&frame).encode(&mut out);
                black_box(out.len())
            })
        });
        let limits = PoolLimits::default();
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| {
                let (ty, body, _) = split_frame(black_box(&bytes), 1 << 24).unwrap().unwrap();
                black_box(ClientFrame::decode(ty, body, &limits).unwrap())
            })
        });
    }
    g.finish();
}

fn query_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("query_100_ids");
    g.throughput(Throughput::Elements(100));
    let frame = query::ClientFrame::Query {
        req_id: 1,
        ids: (1..=100).map(|i| i * 31).collect(),
    };
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    g.bench_function("encode", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            black_box(&frame).encode(&mut out);
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            let (ty, body, _) = split_frame(black_box(&bytes), 1 << 20).unwrap().unwrap();
            black_box(query::ClientFrame::decode(ty, body).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, pool_codec, query_codec);
criterion_main!(benches);
