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
