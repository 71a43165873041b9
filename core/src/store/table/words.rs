//! How a record sits in atomic words, and the seqlock that lets readers copy it while a writer
//! rewrites it.
//!
//! Word 0 of every record holds its **version** in its low 32 bits: even when the record is
//! stable, odd while a writer rewrites it; its high 32 bits are the compact layout's meta bits
//! (written with the version that ends a write, so a reader sees them with the words they
//! describe). Word 1 is the sid (0 in a slot never written). The rest depends on the layout:
//!
//! ```text
//! compact (7 words, 56 bytes): a record without ext and with at most two registers
//!   0 version (bits 0..32) | reg A kind (32..35) | reg A value (35) | reg B kind (36..39)
//!     | reg B value (39) | reg B node (40..56) | moved (56)
//!   1 sid   2 ident hlc (a moved record: the index of its wide record)   3 uid
//!   4 pool (bits 0..32) | ident node (32..48) | reg A node (48..64)
//!   5 reg A hlc   6 reg B hlc
//! wide (16 words, 128 bytes): any record
//!   0 version   1 sid   2 ident hlc   3 uid
//!   4 pool (0..32) | ident node (32..48) | present mask (48..55) | value mask (56..63)
//!   5 ext slot + 1 (0: no ext; the value is in the shard's ext slab)
//!   6..13 hlc of register r (r = client code 0..6, 6 = permission)
//!   13 nodes of registers 0..4 (16 bits each)   14 nodes of registers 4..7 | ext node (48..64)
//!   15 ext hlc
//! ```
//!
//! A status (what a query answers) needs only a wide record's first [`HEAD`] words (48 bytes):
//! batch lookups prefetch both ends of that head and copy it alone. Behind the `Arc` header a
//! segment's words start 16 bytes into an allocation, so where the allocator aligns segments to
//! a cache line, every head is within one line: one line per id instead of the record's two or
//! three (BENCHMARKS.md, "Query depends on the record mix").
//!
//! A register kind is 0 for none, 1 + client code for a client, 7 for the permission. A compact
//! record that grew out of its layout is **moved**: its word 2 names the wide record that
//! replaced it, and it is never written again. A 32-bit version wraps after 2^31 writes to one
//! record; a reader would have to sleep through all of them inside one copy to be fooled.
//!
//! Architecture Invariant: record words are written only under the shard's writer lock, between
//! [`begin_write`] and [`end_write`]; readers copy them with [`read`], which retries until it
//! saw the same even version before and after the copy (every word is an atomic, so a racing copy
//! is a stale value to discard, never undefined behaviour).

use std::sync::Arc;

use crate::hlc::Stamp;
use crate::model::{ClientSet, Ext, Ident, Reg, Regs, Sid, Status};
use crate::sync::{fence, spin, AtomicU64, Ordering};

/// Words of a compact record.
pub(super) const COMPACT: usize = 7;
/// Words of a wide record.
pub(super) const WIDE: usize = 16;
/// Words at the head of a wide record that its status needs (through the ext slot).
pub(super) const HEAD: usize = 6;
/// Where a wide record's register stamps start: register `r`'s hlc is word `HLC + r`.
const HLC: usize = 6;
/// Where a wide record's register nodes start (four 16-bit nodes a word, the ext's last).
const NODES: usize = 13;
/// A wide record's ext slot + 1, and its ext hlc.
const EXT_SLOT: usize = 5;
const EXT_HLC: usize = 15;

/// Registers other than ident and ext: the six clients, then the permission.
const REGS: usize = 7;
const PERM: usize = 6;
/// Word 0's version bits; the rest are meta bits.
const VERSION: u64 = 0xffff_ffff;
const MOVED: u64 = 1 << 56;

/// Copies the `N` words of a record, retrying while a writer is inside it; `extra` runs inside
/// the same window (its result is discarded with a torn copy).
pub(super) fn read<const N: usize, T>(
    words: &[AtomicU64],
    mut extra: impl FnMut(&[u64; N]) -> T,
) -> ([u64; N], T) {
    loop {
        let Some(v0) = words.first() else {
            return ([0; N], extra(&[0; N]));
        };
        let before = v0.load(Ordering::Acquire);
        if before & 1 == 1 {
            spin();
            continue;
        }
        let mut out = [0u64; N];
        for (o, w) in out.iter_mut().zip(words).skip(1) {
            *o = w.load(Ordering::Relaxed);
        }
        let x = extra(&out);
        fence(Ordering::Acquire);
        if v0.load(Ordering::Relaxed) == before {
            out[0] = before;
            return (out, x);
        }
        spin();
    }
}

/// Marks a record as being written (its version odd). Call only under the shard's writer lock.
pub(super) fn begin_write(words: &[AtomicU64]) {
    if let Some(v0) = words.first() {
        let v = v0.load(Ordering::Relaxed);
        v0.store(v | 1, Ordering::Relaxed);
        fence(Ordering::Release);
    }
}

/// Stores `new` (word 0's meta bits, and the other words) and marks the record stable again
/// with the next even version.
pub(super) fn end_write(words: &[AtomicU64], new: &[u64]) {
    for (w, n) in words.iter().zip(new).skip(1) {
        w.store(*n, Ordering::Relaxed);
    }
    if let Some(v0) = words.first() {
        let version = (v0.load(Ordering::Relaxed) | 1).wrapping_add(1) & VERSION;
        let meta = new.first().map_or(0, |m| m & !VERSION);
        v0.store(meta | version, Ordering::Release);
    }
}

/// The words of a record as the writer (who holds the lock) sees them.
pub(super) fn load<const N: usize>(words: &[AtomicU64]) -> [u64; N] {
    let mut out = [0u64; N];
    for (o, w) in out.iter_mut().zip(words) {
        *o = w.load(Ordering::Relaxed);
    }
    out
}

fn stamp(hlc: u64, node: u64) -> Stamp {
    Stamp::new(hlc, (node & 0xffff) as u16)
}

fn reg_index_kind(kind: u64) -> Option<usize> {
    match kind {
        1..=6 => Some(kind as usize - 1),
        7 => Some(PERM),
        _ => None,
    }
}

/// Registers other than ident and ext as one array: clients by code, then the permission.
fn flat(regs: &Regs) -> [Option<Reg<bool>>; REGS] {
    let mut out = [None; REGS];
    for (o, c) in out.iter_mut().zip(regs.clients) {
        *o = c;
    }
    if let Some(p) = out.get_mut(PERM) {
        *p = regs.perm;
    }
    out
}

fn unflat(flat: [Option<Reg<bool>>; REGS], ident: Reg<Ident>, ext: Option<Reg<Arc<Ext>>>) -> Regs {
    let mut clients = [None; 6];
    for (c, f) in clients.iter_mut().zip(flat) {
        *c = f;
    }
    Regs {
        ident,
        clients,
        perm: flat.get(PERM).copied().flatten(),
        ext,
    }
}

fn ident_words(sid: u64, regs: &Regs) -> [u64; 4] {
    let id = regs.ident;
    [
        sid,
        id.stamp.hlc(),
        id.value.uid,
        u64::from(id.value.pool) | (u64::from(id.stamp.node()) << 32),
    ]
}

fn ident_of(w: &[u64]) -> Reg<Ident> {
    let (hlc, uid, w4) = (at(w, 2), at(w, 3), at(w, 4));
    Reg {
        stamp: stamp(hlc, w4 >> 32),
        value: Ident {
            uid,
            pool: (w4 & 0xffff_ffff) as u32,
        },
    }
}

fn at(w: &[u64], i: usize) -> u64 {
    w.get(i).copied().unwrap_or(0)
}

/// The compact words of `regs` (version 0), or `None` if it does not fit.
pub(super) fn encode_compact(sid: u64, regs: &Regs) -> Option<[u64; COMPACT]> {
    if regs.ext.is_some() {
        return None;
    }
    let mut held = flat(regs)
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.map(|r| (i, r)));
    let a = held.next();
    let b = held.next();
    if held.next().is_some() {
        return None;
    }
    let kind = |r: &Option<(usize, Reg<bool>)>| match r {
        None => 0,
        Some((i, reg)) => {
            let k = if *i == PERM { 7 } else { *i as u64 + 1 };
            k | (u64::from(reg.value) << 3)
        }
    };
    let node = |r: &Option<(usize, Reg<bool>)>| r.map_or(0, |(_, reg)| u64::from(reg.stamp.node()));
    let hlc = |r: &Option<(usize, Reg<bool>)>| r.map_or(0, |(_, reg)| reg.stamp.hlc());
    let [w1, w2, w3, w4] = ident_words(sid, regs);
    let meta = kind(&a) | (kind(&b) << 4) | (node(&b) << 8);
    Some([
        meta << 32,
        w1,
        w2,
        w3,
        w4 | (node(&a) << 48),
        hlc(&a),
        hlc(&b),
    ])
}

/// Where a moved compact record went: the index of its wide record.
pub(super) fn forward(w: &[u64; COMPACT]) -> Option<u32> {
    (w[0] & MOVED != 0).then_some((w[2] & 0x7fff_ffff) as u32)
}

/// The words of compact record `w` once it moved to wide record `to`.
pub(super) fn moved(mut w: [u64; COMPACT], to: u32) -> [u64; COMPACT] {
    w[0] = MOVED;
    w[2] = u64::from(to);
    w
}

/// The registers of a compact record (not moved).
pub(super) fn decode_compact(w: &[u64; COMPACT]) -> Regs {
    let mut regs = [None; REGS];
    let meta = w[0] >> 32;
    let slots = [
        (meta & 0xf, w[5], w[4] >> 48),
        ((meta >> 4) & 0xf, w[6], (meta >> 8) & 0xffff),
    ];
    for (k, hlc, node) in slots {
        if let Some(r) = reg_index_kind(k & 7).and_then(|i| regs.get_mut(i)) {
            *r = Some(Reg {
                stamp: stamp(hlc, node),
                value: k & 8 != 0,
            });
        }
    }
    unflat(regs, ident_of(w), None)
}

/// The wide words of `regs` (version word 0); `ext_slot` is the slot its ext value is in.
pub(super) fn encode_wide(sid: u64, regs: &Regs, ext_slot: Option<u32>) -> [u64; WIDE] {
    let mut w = [0u64; WIDE];
    let [w1, w2, w3, w4] = ident_words(sid, regs);
    let (mut present, mut values) = (0u64, 0u64);
    let mut nodes = [0u64; REGS + 1];
    for (i, r) in flat(regs).into_iter().enumerate() {
        if let Some(r) = r {
            present |= 1 << i;
            values |= u64::from(r.value) << i;
            if let Some(h) = w.get_mut(HLC + i) {
                *h = r.stamp.hlc();
            }
            if let Some(n) = nodes.get_mut(i) {
                *n = u64::from(r.stamp.node());
            }
        }
    }
    w[1] = w1;
    w[2] = w2;
    w[3] = w3;
    w[4] = w4 | (present << 48) | (values << 56);
    if let Some(e) = &regs.ext {
        nodes[REGS] = u64::from(e.stamp.node());
        w[EXT_HLC] = e.stamp.hlc();
        w[EXT_SLOT] = ext_slot.map_or(0, |s| u64::from(s) + 1);
    }
    w[NODES] = nodes[0] | (nodes[1] << 16) | (nodes[2] << 32) | (nodes[3] << 48);
    w[NODES + 1] = nodes[4] | (nodes[5] << 16) | (nodes[6] << 32) | (nodes[7] << 48);
    w
}

/// The ext slot a wide record's value is in, if it has ext (`w`: the record or its head).
pub(super) fn ext_slot(w: &[u64]) -> Option<u32> {
    at(w, EXT_SLOT)
        .checked_sub(1)
        .map(|s| (s & 0xffff_ffff) as u32)
}

/// The registers of a wide record; `ext` is the value in its ext slot.
pub(super) fn decode_wide(w: &[u64; WIDE], ext: Option<Arc<Ext>>) -> Regs {
    let mut regs = [None; REGS];
    let (present, values) = ((w[4] >> 48) & 0x7f, (w[4] >> 56) & 0x7f);
    let node_of = |i: usize| (at(w, NODES + i / 4) >> ((i % 4) * 16)) & 0xffff;
    for (i, r) in regs.iter_mut().enumerate() {
        if present & (1 << i) != 0 {
            *r = Some(Reg {
                stamp: stamp(at(w, HLC + i), node_of(i)),
                value: values & (1 << i) != 0,
            });
        }
    }
    let ext = ext.map(|value| Reg {
        stamp: stamp(w[EXT_HLC], node_of(REGS)),
        value,
    });
    unflat(regs, ident_of(w), ext)
}

/// The published view of compact record `w` without building its registers: what batch queries
/// read, so it costs a few bit operations.
pub(super) fn status_compact(w: &[u64; COMPACT], sid: Sid) -> Status {
    let meta = w[0] >> 32;
    let (mut clients, mut accepts) = (0u8, true);
    for k in [meta & 0xf, (meta >> 4) & 0xf] {
        let (kind, value) = (k & 7, k & 8 != 0);
        match kind {
            1..=6 => clients |= u8::from(value) << (kind - 1),
            7 => accepts = value,
            _ => {}
        }
    }
    status(w, clients, accepts, None, sid)
}

/// The published view of wide record `w`, given its [`HEAD`] (see [`status_compact`]).
pub(super) fn status_wide(w: &[u64; HEAD], ext: Option<Arc<Ext>>, sid: Sid) -> Status {
    let (present, values) = ((w[4] >> 48) & 0x7f, (w[4] >> 56) & 0x7f);
    let clients = (present & values & 0x3f) as u8;
    let accepts = present & (1 << PERM) == 0 || values & (1 << PERM) != 0;
    status(w, clients, accepts, ext, sid)
}

fn status(w: &[u64], clients: u8, accepts: bool, ext: Option<Arc<Ext>>, sid: Sid) -> Status {
    let clients = ClientSet::from_bits(clients).unwrap_or_default();
    Status {
        sid,
        known: true,
        online: !clients.is_empty(),
        clients,
        accepts_strangers: accepts,
        changed_at_ms: Some(at(w, 2) >> 16),
        uid: Some(at(w, 3)),
        ext,
    }
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::ExtLimits;

    fn arb_stamp() -> impl Strategy<Value = Stamp> {
        (any::<u64>(), any::<u16>()).prop_map(|(h, n)| Stamp::new(h, n))
    }

    fn arb_reg() -> impl Strategy<Value = Option<Reg<bool>>> {
        proptest::option::of(
            (arb_stamp(), any::<bool>()).prop_map(|(stamp, value)| Reg { stamp, value }),
        )
    }

    fn arb_regs() -> impl Strategy<Value = Regs> {
        (
            arb_stamp(),
            any::<u64>(),
            any::<u32>(),
            proptest::array::uniform6(arb_reg()),
            arb_reg(),
            proptest::option::of(arb_stamp()),
        )
            .prop_map(|(stamp, uid, pool, clients, perm, ext)| Regs {
                ident: Reg {
                    stamp,
                    value: Ident { uid, pool },
                },
                clients,
                perm,
                ext: ext.map(|stamp| Reg {
                    stamp,
                    value: Arc::new(
                        Ext::new(vec![("k".into(), "v".into())], &ExtLimits::default()).unwrap(),
                    ),
                }),
            })
    }

    fn same(a: &Regs, b: &Regs) -> bool {
        a.ident == b.ident && a.clients == b.clients && a.perm == b.perm && a.ext == b.ext
    }

    proptest! {
        /// Every record survives the wide layout, and the compact one whenever it fits.
        #[test]
        fn layouts_round_trip(regs in arb_regs(), sid in 1..u64::MAX) {
            let wide = encode_wide(sid, &regs, regs.ext.as_ref().map(|_| 9));
            prop_assert_eq!(wide[1], sid);
            prop_assert_eq!(ext_slot(&wide), regs.ext.as_ref().map(|_| 9));
            let back = decode_wide(&wide, regs.ext.as_ref().map(|e| e.value.clone()));
            prop_assert!(same(&back, &regs), "{:?} != {:?}", back, regs);
            let ext = regs.ext.as_ref().map(|e| e.value.clone());
            let s = Sid::new(sid).unwrap();
            let expected = crate::model::Record::from_regs(regs.clone()).status(s);
            // The status comes from the head alone, ext slot included.
            let head: [u64; HEAD] = wide[..HEAD].try_into().unwrap();
            prop_assert_eq!(ext_slot(&head), regs.ext.as_ref().map(|_| 9));
            prop_assert_eq!(status_wide(&head, ext, s), expected.clone());
            if let Some(c) = encode_compact(sid, &regs) {
                prop_assert_eq!(status_compact(&c, s), expected);
            }
            let held = flat(&regs).iter().flatten().count();
            match encode_compact(sid, &regs) {
                Some(c) => {
                    prop_assert!(held <= 2 && regs.ext.is_none());
                    prop_assert_eq!(forward(&c), None);
                    prop_assert!(same(&decode_compact(&c), &regs));
                }
                None => prop_assert!(held > 2 || regs.ext.is_some()),
            }
        }
    }

    /// The byte layout the module documentation draws, on one record.
    #[test]
    fn compact_layout_vector() {
        let regs = Regs {
            ident: Reg {
                stamp: Stamp::new(0x0000_0190_0000_0003, 2),
                value: Ident { uid: 42, pool: 7 },
            },
            clients: [
                Some(Reg {
                    stamp: Stamp::new(0x0000_0190_0000_0003, 2),
                    value: true,
                }),
                None,
                None,
                None,
                None,
                None,
            ],
            perm: Some(Reg {
                stamp: Stamp::new(0x0000_0180_0000_0001, 1),
                value: false,
            }),
            ext: None,
        };
        let w = encode_compact(10086, &regs).unwrap();
        assert_eq!(
            w,
            [
                (1 | 8 | (7 << 4) | (1 << 8)) << 32,
                10086,
                0x0000_0190_0000_0003,
                42,
                7 | (2 << 32) | (2 << 48),
                0x0000_0190_0000_0003,
                0x0000_0180_0000_0001,
            ]
        );
        assert_eq!(forward(&w), None);
        let m = moved(w, 5);
        assert_eq!(forward(&m), Some(5));
    }
}

#[cfg(all(test, loom))]
mod loom_seqlock {
    use loom::sync::Arc;

    use super::*;

    /// A reader copying a record while a writer rewrites it twice gets one whole version: the
    /// words of one write, never a mix (each write stores the same value in both data words).
    #[test]
    fn readers_never_see_a_torn_record() {
        loom::model(|| {
            let words: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
            let w = words.clone();
            let writer = loom::thread::spawn(move || {
                for v in 1..=2u64 {
                    begin_write(&w);
                    end_write(&w, &[0, v, v]);
                }
            });
            let (seen, ()) = read::<3, _>(&words, |_| ());
            assert_eq!(seen[1], seen[2], "torn: {seen:?}");
            assert_eq!(seen[0] % 2, 0);
            assert_eq!(
                seen[0],
                seen[1] * 2,
                "version and contents disagree: {seen:?}"
            );
            writer.join().unwrap();
            let (last, ()) = read::<3, _>(&words, |_| ());
            assert_eq!(last, [4, 2, 2]);
        });
    }
}
