//! Loom model of the table engine: lookups racing inserts, moves and a second writer.

use loom::sync::Arc;

use super::*;
use crate::hlc::Stamp;
use crate::model::{Change, ClientType, Record, Sid, Update};

/// Logs `sid` in on every client of `clients` in one write.
fn login(p: &TablePinned<'_>, sid: Sid, ms: u64, clients: &[ClientType]) {
    let stamp = Stamp::new(ms << 16, 1);
    let u = |c| Update {
        uid: 1,
        pool: 1,
        change: Change::Login(c),
        ext: None,
    };
    let apply_all = |r: &mut Record| {
        let mut changed = false;
        for c in clients {
            changed |= r.apply(stamp, &u(*c));
        }
        changed
    };
    p.upsert(
        sid,
        || {
            let mut r = Record::from_update(stamp, &u(ClientType::Pc));
            apply_all(&mut r);
            r
        },
        |r| apply_all(r),
    );
}

/// A reader looking a user up while a writer creates it and then moves it to the wide
/// layout (a second write adds two client registers) sees nothing, or a whole record that only grows; a
/// second writer inserting into the same shard at the same time loses nothing.
#[test]
fn lookups_race_inserts_and_moves() {
    loom::model(|| {
        let store = Arc::new(TableStore::with_capacity(0));
        let (a, b) = (
            Sid::new(1).unwrap_or(Sid::MIN),
            Sid::new(234).unwrap_or(Sid::MIN),
        );
        let s = store.clone();
        let writer = loom::thread::spawn(move || {
            let p = s.pin();
            login(&p, a, 1, &[ClientType::Pc]);
            login(&p, a, 2, &[ClientType::Mobile, ClientType::Web]);
        });
        let s = store.clone();
        let other = loom::thread::spawn(move || login(&s.pin(), b, 1, &[ClientType::Pc]));
        let p = store.pin();
        let first = p.status(a).clients.bits().count_ones();
        let second = p.status(a).clients.bits().count_ones();
        assert!(first <= second, "{first} then {second}");
        writer.join().unwrap();
        other.join().unwrap();
        let p = store.pin();
        assert_eq!(p.status(a).clients.bits().count_ones(), 3);
        assert!(p.status(b).online);
        assert_eq!(store.len(), 2);
    });
}
