//! The record encoding of the replication protocol: how one user's [`Record`] (every register
//! with its [`Stamp`]) and a list of `(sid, record)` pairs travel in `UPDATES`, `SNAPSHOT` and
//! `BUCKET` frames (`docs/protocols/replication.md`, "Record encoding").
//!
//! Decoding checks what [`Record::from_parts`] needs (clients ascending and known, no register
//! newer than `ident`), reads extension data with [`ExtLimits::WIRE`] because the record was
//! already accepted by some node under that node's limits, and bounds every allocation by the
//! bytes actually present. It knows nothing of frames or message types.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::BufMut;

use super::MAX_RECORDS;
use crate::hlc::Stamp;
use crate::model::{ClientReg, ClientType, Ext, ExtLimits, Ident, Record, Reg, Sid};
use crate::wire::{put_ext, read_ext, DecodeError, Reader};

fn put_stamp(b: &mut Vec<u8>, s: Stamp) {
    b.put_u64(s.hlc());
    b.put_u16(s.node());
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp, DecodeError> {
    Ok(Stamp::new(r.u64("stamp")?, r.u16("stamp node")?))
}

/// Record lists of handled frames this thread keeps for the next frames it decodes (at most
/// this many, each at most [`MAX_RECORDS`] records long).
const SPARES: usize = 2;

thread_local! {
    static SPARE: RefCell<Vec<Vec<(Sid, Record)>>> = const { RefCell::new(Vec::new()) };
}

/// Hands the record list of a handled `UPDATES`, `SNAPSHOT` or `BUCKET` frame back for the
/// next frame this thread decodes. A full frame's list is ≈ 1 MB: allocating one per frame made
/// the allocator fault in (and the kernel zero) fresh huge pages for every frame, a quarter of a
/// replica's time at 300 k updates/s (BENCHMARKS.md, "Replication lag").
pub fn recycle(mut records: Vec<(Sid, Record)>) {
    if records.capacity() == 0 || records.capacity() > MAX_RECORDS {
        return;
    }
    records.clear();
    let _ = SPARE.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            if s.len() < SPARES {
                s.push(records);
            }
        }
    });
}

/// An empty list with room for `n` records: a recycled one if this thread has one.
fn spare(n: usize) -> Vec<(Sid, Record)> {
    let mut v = SPARE
        .try_with(|s| s.try_borrow_mut().ok().and_then(|mut s| s.pop()))
        .ok()
        .flatten()
        .unwrap_or_default();
    v.reserve(n);
    v
}

/// Encodes a record: `ident, clients, perm?, ext?` (see the protocol document).
pub fn put_record(b: &mut Vec<u8>, r: &Record) {
    let id = r.ident();
    put_stamp(b, id.stamp);
    b.put_u64(id.value.uid);
    b.put_u32(id.value.pool);
    b.put_u8(r.clients().count() as u8);
    for c in r.clients() {
        b.put_u8(c.client.code());
        put_stamp(b, c.reg.stamp);
        b.put_u8(u8::from(c.reg.value));
    }
    match r.perm() {
        None => b.put_u8(0),
        Some(p) => {
            b.put_u8(1);
            put_stamp(b, p.stamp);
            b.put_u8(u8::from(p.value));
        }
    }
    match r.ext() {
        None => b.put_u8(0),
        Some(e) => {
            b.put_u8(1);
            put_stamp(b, e.stamp);
            put_ext(b, &e.value);
        }
    }
}

pub(super) fn read_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid(what)),
    }
}

/// Decodes a record written by [`put_record`].
pub fn read_record(r: &mut Reader<'_>) -> Result<Record, DecodeError> {
    let stamp = read_stamp(r)?;
    let ident = Reg {
        stamp,
        value: Ident {
            uid: r.u64("uid")?,
            pool: r.u32("pool")?,
        },
    };
    let n = r.u8("client count")?;
    if usize::from(n) > ClientType::ALL.len() {
        return Err(DecodeError::Invalid("client count"));
    }
    // On the stack: a snapshot decodes millions of records (no allocation per record).
    let mut clients = [None; ClientType::ALL.len()];
    let mut prev = None;
    for slot in clients.iter_mut().take(n.into()) {
        let client =
            ClientType::from_code(r.u8("client")?).ok_or(DecodeError::Invalid("client"))?;
        if prev.is_some_and(|p| p >= client) {
            return Err(DecodeError::Invalid("clients not ascending"));
        }
        prev = Some(client);
        let stamp = read_stamp(r)?;
        *slot = Some(ClientReg {
            client,
            reg: Reg {
                stamp,
                value: read_bool(r, "online")?,
            },
        });
    }
    let perm = if read_bool(r, "perm flag")? {
        let stamp = read_stamp(r)?;
        Some(Reg {
            stamp,
            value: read_bool(r, "perm")?,
        })
    } else {
        None
    };
    let ext = if read_bool(r, "ext flag")? {
        let stamp = read_stamp(r)?;
        //= docs/protocols/replication.md#record-encoding-25-bytes-and-more
        //# decoded with the widest limits: up to 255 entries, keys 1 ..= 255 bytes, values up
        //# to 65 535 bytes, valid UTF-8, keys strictly ascending. The receiver's own `<limits>`
        //# do **not** apply
        let e: Arc<Ext> = read_ext(r, &ExtLimits::WIRE)?;
        Some(Reg { stamp, value: e })
    } else {
        None
    };
    Record::from_parts(ident, clients.into_iter().flatten(), perm, ext)
        .ok_or(DecodeError::Invalid("record"))
}

/// Encodes a record list: `count:u16 { sid:u64 record }*`.
pub(super) fn put_records(b: &mut Vec<u8>, records: &[(Sid, Record)]) {
    b.put_u16(records.len() as u16);
    for (sid, r) in records {
        b.put_u64(sid.get());
        put_record(b, r);
    }
}

/// Decodes a record list written by [`put_records`], refusing more than [`MAX_RECORDS`].
pub(super) fn read_records(r: &mut Reader<'_>) -> Result<Vec<(Sid, Record)>, DecodeError> {
    let n = usize::from(r.u16("record count")?);
    if n > MAX_RECORDS {
        return Err(DecodeError::TooLarge {
            what: "records",
            len: n as u64,
            max: MAX_RECORDS as u64,
        });
    }
    // A record is at least 8 + 22 + 3 bytes: bound the allocation by what is there.
    if r.remaining() < n * 33 {
        return Err(DecodeError::Truncated("records"));
    }
    let mut v = spare(n);
    for _ in 0..n {
        let sid = Sid::new(r.u64("sid")?).ok_or(DecodeError::Invalid("sid 0"))?;
        v.push((sid, read_record(r)?));
    }
    Ok(v)
}

#[cfg(all(test, not(loom)))]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_next_decode_reuses_a_recycled_list() {
        let list: Vec<(Sid, Record)> = Vec::with_capacity(100);
        let at = list.as_ptr();
        recycle(list);
        let again = spare(10);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty() && again.capacity() >= 100);
        // Lists over a full frame, and more than `SPARES` lists, are not kept.
        recycle(Vec::with_capacity(MAX_RECORDS + 1));
        assert_eq!(spare(0).capacity(), 0);
        for _ in 0..SPARES + 2 {
            recycle(Vec::with_capacity(8));
        }
        let kept = (0..SPARES + 2).filter(|_| spare(0).capacity() > 0).count();
        assert_eq!(kept, SPARES);
    }
}
