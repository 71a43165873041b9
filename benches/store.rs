//! Store throughput: merge (apply) of updates at 1M users, batch get of 100 ids, and the cost of
//! keeping the digest, on both engines (`table`, `flurry`), against the same workload on other
//! concurrent maps (see ARCHITECTURE.md,
//! "Why flurry").
//!
//! `cargo bench --bench store`. Set `PRESENCED_BENCH_USERS=10000000` for the 10M-user figures.

// `criterion_group!` generates public functions that cannot carry docs.
#![allow(missing_docs)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presenced_core::model::{Change, ClientType, Update};
use presenced_core::store::Engine;
use presenced_core::{Hlc, Sid, Store};

fn users() -> u64 {
    std::env::var("PRESENCED_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn filled(engine: Engine, n: u64) -> (Store, Hlc) {
    let store = Store::new(engine, n as usize);
    let hlc = Hlc::new(1);
    let p = store.pin();
    let u = Update {
        uid: 1,
        pool: 1,
        change: Change::Login(ClientType::Pc),
        ext: None,
    };
    for sid in 1..=n {
        p.apply(Sid::new(sid).unwrap(), hlc.now(1), &u);
    }
    drop(p);
    (store, hlc)
}

fn store(c: &mut Criterion) {
    for engine in [Engine::Table, Engine::Flurry] {
        store_on(c, engine);
    }
}

/// The store's workloads on one engine (`store_table_*`, `store_flurry_*`).
fn store_on(c: &mut Criterion, engine: Engine) {
    let n = users();
    let (store, hlc) = filled(engine, n);
    let mut g = c.benchmark_group(format!("store_{}_{n}_users", engine.name()));
    g.sample_size(20);

    const BATCH: u64 = 1000;
    g.throughput(Throughput::Elements(BATCH));
    let mut rng = Rng(7);
    g.bench_function("apply_1000_updates", |b| {
        b.iter_batched(
            || (0..BATCH).map(|_| rng.next() % n + 1).collect::<Vec<_>>(),
            |sids| {
                let p = store.pin();
                for (i, sid) in sids.into_iter().enumerate() {
                    let change = if i % 2 == 0 {
                        Change::Logout(ClientType::Pc)
                    } else {
                        Change::Login(ClientType::Pc)
                    };
                    let u = Update {
                        uid: sid,
                        pool: 1,
                        change,
                        ext: None,
                    };
                    black_box(p.apply(Sid::new(sid).unwrap(), hlc.now(2), &u));
                }
            },
            BatchSize::SmallInput,
        )
    });

    g.throughput(Throughput::Elements(100));
    let mut rng = Rng(11);
    g.bench_function("get_batch_100", |b| {
        let mut out = Vec::with_capacity(100);
        b.iter_batched(
            || {
                (0..100)
                    .map(|_| Sid::new(rng.next() % n + 1).unwrap())
                    .collect::<Vec<_>>()
            },
            |sids| {
                out.clear();
                store.pin().statuses(&sids, &mut out);
                black_box(out.len())
            },
            BatchSize::SmallInput,
        )
    });

    g.throughput(Throughput::Elements(1));
    g.bench_function("digest", |b| b.iter(|| black_box(store.digest())));
    g.finish();
}

/// The same update workload on a bare flurry map (a guard per batch, no digest), to show what
/// the store's record merge and digest cost on top of the map.
fn bare_flurry(c: &mut Criterion) {
    let n = users();
    let map = flurry::HashMap::<u64, [u64; 4]>::with_capacity(n as usize);
    {
        let g = map.guard();
        for k in 1..=n {
            map.insert(k, [k; 4], &g);
        }
    }
    let mut g = c.benchmark_group(format!("bare_flurry_{n}_keys"));
    g.sample_size(20);
    g.throughput(Throughput::Elements(1000));
    let mut rng = Rng(5);
    g.bench_function("overwrite_1000", |b| {
        b.iter_batched(
            || (0..1000).map(|_| rng.next() % n + 1).collect::<Vec<_>>(),
            |keys| {
                let guard = map.guard();
                for k in keys {
                    map.insert(k, [k, 1, 2, 3], &guard);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// The store's exact workload — read the record, apply one update, write it back — on papaya
/// and dashmap, holding the same `Record` values, in the same run (ARCHITECTURE.md, "Why
/// flurry"). No digest upkeep here: compare with `store_*/apply_1000_updates` minus
/// `bare_flurry`.
fn alternatives(c: &mut Criterion) {
    let n = users();
    let hlc = Hlc::new(1);
    let login = Update {
        uid: 1,
        pool: 1,
        change: Change::Login(ClientType::Pc),
        ext: None,
    };
    let rec = |sid: u64| {
        presenced_core::Record::from_update(
            hlc.now(1),
            &Update {
                uid: sid,
                ..login.clone()
            },
        )
    };

    let papaya_map = papaya::HashMap::<u64, presenced_core::Record>::with_capacity(n as usize);
    {
        let m = papaya_map.pin();
        for k in 1..=n {
            m.insert(k, rec(k));
        }
    }
    let dash = dashmap::DashMap::<u64, presenced_core::Record>::with_capacity(n as usize);
    for k in 1..=n {
        dash.insert(k, rec(k));
    }
    let mut g = c.benchmark_group(format!("alternatives_{n}_users"));
    g.sample_size(20);
    g.throughput(Throughput::Elements(1000));
    let mut rng = Rng(9);
    g.bench_function("papaya_apply_1000", |b| {
        b.iter_batched(
            || (0..1000).map(|_| rng.next() % n + 1).collect::<Vec<_>>(),
            |keys| {
                let m = papaya_map.pin();
                for k in keys {
                    let st = hlc.now(2);
                    m.update(k, |r| {
                        let mut r = r.clone();
                        r.apply(
                            st,
                            &Update {
                                change: Change::Logout(ClientType::Pc),
                                ..login.clone()
                            },
                        );
                        r
                    });
                }
            },
            BatchSize::SmallInput,
        )
    });
    let mut rng = Rng(9);
    g.bench_function("dashmap_apply_1000", |b| {
        b.iter_batched(
            || (0..1000).map(|_| rng.next() % n + 1).collect::<Vec<_>>(),
            |keys| {
                for k in keys {
                    if let Some(mut r) = dash.get_mut(&k) {
                        r.apply(
                            hlc.now(2),
                            &Update {
                                change: Change::Logout(ClientType::Pc),
                                ..login.clone()
                            },
                        );
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(100));
    let mut rng = Rng(13);
    g.bench_function("papaya_get_batch_100", |b| {
        b.iter_batched(
            || (0..100).map(|_| rng.next() % n + 1).collect::<Vec<_>>(),
            |keys| {
                let m = papaya_map.pin();
                keys.iter()
                    .filter_map(|k| m.get(k).map(|r| r.status(Sid::new(*k).unwrap())))
                    .count()
            },
            BatchSize::SmallInput,
        )
    });
    let mut rng = Rng(13);
    g.bench_function("dashmap_get_batch_100", |b| {
        b.iter_batched(
            || (0..100).map(|_| rng.next() % n + 1).collect::<Vec<_>>(),
            |keys| {
                keys.iter()
                    .filter_map(|k| dash.get(k).map(|r| r.status(Sid::new(*k).unwrap())))
                    .count()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, store, bare_flurry, alternatives);
criterion_main!(benches);
