//! Store tests: applying and querying, scans with resumable cursors, and the merge laws (commutative,
//! associative, idempotent, order-independent) as properties.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::model::{Change, ClientType, Ext, ExtLimits};

fn sid(n: u64) -> Sid {
    Sid::new(n).unwrap()
}

fn update(change: Change) -> Update {
    Update {
        uid: 7,
        pool: 1,
        change,
        ext: None,
    }
}

#[test]
fn apply_then_query() {
    let s = Store::default();
    let p = s.pin();
    let ext = Ext::new(vec![("nick".into(), "alice".into())], &ExtLimits::default()).unwrap();
    let mut u = update(Change::Login(ClientType::Pc));
    u.ext = Some(Arc::new(ext));
    assert!(p.apply(sid(10086), Stamp::new(1 << 16, 1), &u));
    p.apply(
        sid(10086),
        Stamp::new(2 << 16, 1),
        &update(Change::Login(ClientType::Mobile)),
    );
    p.apply(
        sid(10086),
        Stamp::new(3 << 16, 1),
        &update(Change::Permission(false)),
    );
    p.apply(
        sid(10086),
        Stamp::new(4 << 16, 1),
        &update(Change::Logout(ClientType::Pc)),
    );
    let st = p.status(sid(10086));
    assert!(st.known && st.online && !st.accepts_strangers);
    assert_eq!(st.clients.iter().collect::<Vec<_>>(), [ClientType::Mobile]);
    assert_eq!(
        st.ext.unwrap().entries().collect::<Vec<_>>(),
        [("nick", "alice")]
    );
    assert!(!p.status(sid(10010)).known);
    assert_eq!(s.len(), 1);
}

#[test]
fn reapplying_the_same_write_changes_nothing() {
    let s = Store::default();
    let p = s.pin();
    let u = update(Change::Login(ClientType::Pc));
    assert!(p.apply(sid(1), Stamp::new(9, 1), &u));
    let d = s.digest();
    assert!(!p.apply(sid(1), Stamp::new(9, 1), &u));
    assert_eq!(d, s.digest());
}

fn arb_change() -> impl Strategy<Value = Change> {
    let client = (0u8..6).prop_map(|c| ClientType::from_code(c).unwrap());
    prop_oneof![
        client.clone().prop_map(Change::Login),
        client.prop_map(Change::Logout),
        any::<bool>().prop_map(Change::Permission),
        Just(Change::LogoutAll),
    ]
}

/// (sid, stamp, update) triples with small domains, so collisions and equal stamps happen.
fn arb_writes() -> impl Strategy<Value = Vec<(u64, Stamp, Update)>> {
    let ext = prop::option::of(prop::collection::vec(("[a-c]", "[x-z]{0,2}"), 0..3));
    let w = (1u64..4, 0u64..6, 1u16..4, 0u64..3, arb_change(), ext).prop_map(
        |(sid, hlc, node, uid, change, ext)| {
            let ext = ext.and_then(|mut e| {
                e.sort();
                e.dedup_by(|a, b| a.0 == b.0);
                Ext::new(e, &ExtLimits::default()).ok().map(Arc::new)
            });
            (
                sid,
                Stamp::new(hlc, node),
                Update {
                    uid,
                    pool: 1,
                    change,
                    ext,
                },
            )
        },
    );
    prop::collection::vec(w, 0..24)
}

fn records(writes: &[(u64, Stamp, Update)]) -> Vec<(u64, Record)> {
    let s = Store::default();
    let p = s.pin();
    for (sid, st, u) in writes {
        p.apply(Sid::new(*sid).unwrap(), *st, u);
    }
    let mut v = Vec::new();
    p.for_each(|sid, r| v.push((sid.get(), r.clone())));
    v.sort_by_key(|x| x.0);
    v
}

fn merged(parts: &[&[(u64, Record)]]) -> (Vec<(u64, Record)>, u128) {
    let s = Store::default();
    let p = s.pin();
    for part in parts {
        for (sid, r) in *part {
            p.merge(Sid::new(*sid).unwrap(), r);
        }
    }
    let mut v = Vec::new();
    p.for_each(|sid, r| v.push((sid.get(), r.clone())));
    v.sort_by_key(|x| x.0);
    (v, s.digest())
}

proptest! {
    #[test]
    fn merge_is_commutative(a in arb_writes(), b in arb_writes()) {
        let (ra, rb) = (records(&a), records(&b));
        prop_assert_eq!(merged(&[&ra, &rb]), merged(&[&rb, &ra]));
    }

    #[test]
    fn merge_is_associative(a in arb_writes(), b in arb_writes(), c in arb_writes()) {
        let (ra, rb, rc) = (records(&a), records(&b), records(&c));
        let (ab, _) = merged(&[&ra, &rb]);
        let (bc, _) = merged(&[&rb, &rc]);
        prop_assert_eq!(merged(&[&ab, &rc]), merged(&[&ra, &bc]));
    }

    #[test]
    fn merge_is_idempotent(a in arb_writes()) {
        let ra = records(&a);
        prop_assert_eq!(merged(&[&ra]), merged(&[&ra, &ra]));
    }

    /// Applying the same writes in any order gives the same state and digest.
    #[test]
    fn apply_order_does_not_matter(a in arb_writes(), seed in any::<u64>()) {
        let mut shuffled = a.clone();
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.wrapping_mul(i as u64 + 1) >> 7) as usize % (i + 1);
            shuffled.swap(i, j);
        }
        let (x, y) = (records(&a), records(&shuffled));
        prop_assert_eq!(merged(&[&x]), merged(&[&y]));
    }
}

#[test]
fn resumed_scans_visit_every_record_once_in_bounded_steps() {
    let s = Store::default();
    let p = s.pin();
    for i in 1..=5_000 {
        p.apply(
            sid(i),
            Stamp::new(1 << 16, 1),
            &update(Change::Login(ClientType::Pc)),
        );
    }
    let mut cursor = Cursor::all();
    let mut seen = std::collections::BTreeSet::new();
    let mut steps = 0;
    while !cursor.is_done() {
        let before = s.scanned();
        let visited = p.scan(&mut cursor, 100, |sid, _| {
            assert!(seen.insert(sid.get()), "{sid:?} visited twice");
            true
        });
        assert!(visited <= 100 && s.scanned() - before == visited as u64);
        // Writers go on between steps: new sids after the cursor are picked up.
        if steps == 10 {
            p.apply(
                sid(9_999_999),
                Stamp::new(1 << 16, 1),
                &update(Change::Login(ClientType::Pc)),
            );
        }
        steps += 1;
    }
    assert!(seen.len() >= 5_000);
    assert!(seen.iter().copied().eq((1..=5_000)
        .chain(seen.contains(&9_999_999).then_some(9_999_999))
        .collect::<std::collections::BTreeSet<_>>()));
}

#[test]
fn a_bucket_scan_sees_exactly_that_bucket_and_stops_when_told() {
    let s = Store::default();
    let p = s.pin();
    for i in 1..=2_000 {
        p.apply(
            sid(i),
            Stamp::new(1 << 16, 1),
            &update(Change::Login(ClientType::Pc)),
        );
    }
    let b = bucket_of(sid(77)) as u16;
    let expected: Vec<u64> = (1..=2_000)
        .filter(|i| bucket_of(sid(*i)) as u16 == b)
        .collect();
    let mut got = Vec::new();
    let mut cursor = Cursor::bucket(b);
    while !cursor.is_done() {
        // Stop after two records each call: the cursor resumes right after the last one.
        let mut n = 0;
        p.scan(&mut cursor, usize::MAX, |sid, _| {
            got.push(sid.get());
            n += 1;
            n < 2
        });
    }
    assert_eq!(got, expected);
    assert!(Cursor::bucket(DIGEST_BUCKETS as u16).is_done());
}

// ---- The table engine against the flurry engine (the oracle) ----

/// One operation of a differential run: a local write, or a merge of a record built elsewhere.
#[derive(Clone, Debug)]
enum Op {
    Apply(u64, Stamp, Update),
    Merge(u64, Vec<(Stamp, Update)>),
}

/// Operations on many sids (so shards, growth and moves to the wide layout all happen) with
/// small stamp domains (so equal stamps and ties happen).
fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    let sid = prop_oneof![1u64..40, 1u64..5_000, Just(u64::MAX)];
    let write = || {
        let ext = prop::option::of(prop::collection::vec(("[a-c]", "[x-z]{0,2}"), 0..3));
        (0u64..8, 1u16..4, 0u64..3, arb_change(), ext).prop_map(|(hlc, node, uid, change, ext)| {
            let ext = ext.and_then(|mut e| {
                e.sort();
                e.dedup_by(|a, b| a.0 == b.0);
                Ext::new(e, &ExtLimits::default()).ok().map(Arc::new)
            });
            (
                Stamp::new(hlc << 16, node),
                Update {
                    uid,
                    pool: 2,
                    change,
                    ext,
                },
            )
        })
    };
    let op = prop_oneof![
        4 => (sid.clone(), write()).prop_map(|(s, (st, u))| Op::Apply(s, st, u)),
        1 => (sid, prop::collection::vec(write(), 1..4)).prop_map(|(s, w)| Op::Merge(s, w)),
    ];
    prop::collection::vec(op, 0..300)
}

fn run(p: &Pinned<'_>, op: &Op) -> bool {
    match op {
        Op::Apply(s, st, u) => p.apply(sid(*s), *st, u),
        Op::Merge(s, writes) => {
            let mut writes = writes.iter();
            let Some((st, u)) = writes.next() else {
                return false;
            };
            let mut r = Record::from_update(*st, u);
            for (st, u) in writes {
                r.apply(*st, u);
            }
            p.merge(sid(*s), &r)
        }
    }
}

fn contents(s: &Store) -> Vec<(u64, Record)> {
    let mut v = Vec::new();
    s.pin().for_each(|sid, r| v.push((sid.get(), r.clone())));
    v.sort_by_key(|x| x.0);
    v
}

/// Everything a caller can observe must be the same on both engines.
fn assert_same(table: &Store, flurry: &Store, sids: impl Iterator<Item = u64>) {
    assert_eq!(table.len(), flurry.len());
    assert_eq!(table.bucket_digests(), flurry.bucket_digests());
    assert_eq!(table.digest(), flurry.digest());
    let (t, f) = (table.pin(), flurry.pin());
    let sids: Vec<Sid> = sids.map(sid).collect();
    let (mut ts, mut fs) = (Vec::new(), Vec::new());
    t.statuses(&sids, &mut ts);
    f.statuses(&sids, &mut fs);
    assert_eq!(ts, fs);
    for s in &sids {
        assert_eq!(t.record(*s), f.record(*s));
    }
    assert_eq!(contents(table), contents(flurry));
}

fn touched(ops: &[Op]) -> impl Iterator<Item = u64> + '_ {
    ops.iter()
        .map(|op| match op {
            Op::Apply(s, ..) | Op::Merge(s, _) => *s,
        })
        .chain([1, 2, 77, 4_999])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// One thread: every write reports the same change, and the states end equal.
    #[test]
    fn table_engine_matches_flurry(ops in arb_ops()) {
        let (table, flurry) = (Store::new(Engine::Table, 0), Store::new(Engine::Flurry, 0));
        let (t, f) = (table.pin(), flurry.pin());
        for op in &ops {
            prop_assert_eq!(run(&t, op), run(&f, op), "{:?}", op);
        }
        assert_same(&table, &flurry, touched(&ops));
    }

    /// Threads writing the same sids at once (joins commute, so the final state is the
    /// oracle's whatever the interleaving), while a reader checks every record it sees is whole.
    #[test]
    fn table_engine_matches_flurry_under_threads(ops in arb_ops(), threads in 2usize..4) {
        let (table, flurry) = (Store::new(Engine::Table, 0), Store::new(Engine::Flurry, 0));
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                let sids: Vec<Sid> = touched(&ops).map(sid).collect();
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let p = table.pin();
                    for s in &sids {
                        if let Some(r) = p.record(*s) {
                            // A torn copy would pair an old ident with a newer register.
                            let newest = r.clients().map(|c| c.reg.stamp)
                                .chain(r.perm().map(|p| p.stamp))
                                .chain(r.ext().map(|e| e.stamp))
                                .max();
                            assert!(newest.is_none_or(|n| n <= r.ident().stamp), "{r:?}");
                            seen += 1;
                        }
                    }
                }
                seen
            });
            let writers: Vec<_> = ops
                .chunks(ops.len().div_ceil(threads).max(1))
                .map(|chunk| {
                    let table = &table;
                    scope.spawn(move || {
                        let p = table.pin();
                        for op in chunk {
                            run(&p, op);
                        }
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            reader.join().unwrap();
        });
        let f = flurry.pin();
        for op in &ops {
            run(&f, op);
        }
        assert_same(&table, &flurry, touched(&ops));
    }
}

/// Growth to many records in one shard and many shards: every record stays findable, scans see
/// each exactly once, and the memory report adds up.
#[test]
fn table_engine_grows_and_reports_memory() {
    let s = Store::new(Engine::Table, 0);
    let p = s.pin();
    let n = 200_000u64;
    for i in 1..=n {
        let change = if i % 7 == 0 {
            Change::Permission(false)
        } else {
            Change::Login(ClientType::Pc)
        };
        p.apply(sid(i), Stamp::new(1 << 16, 1), &update(change));
    }
    // Every seventh user grows out of the compact layout.
    for i in (1..=n).step_by(7) {
        for c in [ClientType::Mobile, ClientType::Web] {
            p.apply(sid(i), Stamp::new(2 << 16, 1), &update(Change::Login(c)));
        }
    }
    drop(p);
    let p = s.pin();
    for i in (1..=n).step_by(997) {
        let st = p.status(sid(i));
        assert!(st.known, "{i}");
        assert_eq!(st.online, i % 7 != 0, "{i}");
        assert_eq!(st.accepts_strangers, i % 7 != 0, "{i}");
        assert_eq!(st.clients.contains(ClientType::Web), i % 7 == 1);
    }
    let mut count = 0;
    p.for_each(|_, _| count += 1);
    assert_eq!(count, n);
    let m = s.memory();
    assert_eq!(m.records, n);
    assert!(m.load() > 0.4 && m.load() <= 0.875, "{m:?}");
    assert!(
        m.bytes_per_record() > 64.0 && m.bytes_per_record() < 120.0,
        "{m:?}"
    );
    assert!(m.largest_growth > 0);
}

/// A scan that runs while records move to the wide layout still visits each sid once.
#[test]
fn scans_visit_moved_records_once() {
    for engine in [Engine::Table, Engine::Flurry] {
        let s = Store::new(engine, 0);
        let p = s.pin();
        for i in 1..=3_000 {
            p.apply(
                sid(i),
                Stamp::new(1 << 16, 1),
                &update(Change::Login(ClientType::Pc)),
            );
        }
        let mut cursor = Cursor::all();
        let mut seen = std::collections::BTreeMap::new();
        let mut round = 0u64;
        while !cursor.is_done() {
            p.scan(&mut cursor, 50, |sid, _| {
                *seen.entry(sid.get()).or_insert(0) += 1;
                true
            });
            // Move a spread of users, visited and not yet visited, to the wide layout.
            round += 1;
            for i in (round % 13 + 1..=3_000).step_by(97) {
                for c in [ClientType::Web, ClientType::Pad] {
                    p.apply(
                        sid(i),
                        Stamp::new((round + 1) << 16, 1),
                        &update(Change::Login(c)),
                    );
                }
            }
        }
        assert_eq!(seen.len(), 3_000, "{engine:?}");
        assert!(seen.values().all(|n| *n == 1), "{engine:?}");
    }
}
