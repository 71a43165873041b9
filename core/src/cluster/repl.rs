//! The replication protocol codec: `docs/protocols/replication.md`.
//!
//! Every node keeps one outbound TCP connection to every peer's sync port and streams its own
//! updates on it; the peer answers on the same connection (acks, bucket requests). Frames use
//! the common framing of [`crate::wire`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use bytes::BufMut;

use crate::hlc::Stamp;
use crate::model::{ClientReg, ClientType, Ext, ExtLimits, Ident, Record, Reg, Sid};
use crate::wire::{put_ext, put_frame, read_ext, DecodeError, Reader};

/// Magic at the start of `HELLO`: ASCII `PRSR`.
pub const MAGIC: [u8; 4] = *b"PRSR";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Most records in one `UPDATES`, `SNAPSHOT` or `BUCKET` frame.
pub const MAX_RECORDS: usize = 4096;
/// Largest replication frame accepted (a full frame of records with maximal ext is below this).
pub const MAX_FRAME: u32 = 64 << 20;

/// Frame types.
pub mod ty {
    /// Sender → receiver: handshake.
    pub const HELLO: u8 = 0x01;
    /// Receiver → sender: handshake accepted, where to resume.
    pub const WELCOME: u8 = 0x02;
    /// Sender → receiver: records changed by the sender's own updates.
    pub const UPDATES: u8 = 0x10;
    /// Receiver → sender: cumulative acknowledgement of `UPDATES`.
    pub const ACK: u8 = 0x11;
    /// Sender → receiver: a full snapshot starts.
    pub const SNAPSHOT_BEGIN: u8 = 0x12;
    /// Sender → receiver: records of the snapshot.
    pub const SNAPSHOT: u8 = 0x13;
    /// Sender → receiver: the snapshot is complete.
    pub const SNAPSHOT_END: u8 = 0x14;
    /// Sender → receiver: liveness, roles and gossip.
    pub const HEARTBEAT: u8 = 0x20;
    /// Sender → receiver: the bucketed digest (anti-entropy).
    pub const DIGESTS: u8 = 0x21;
    /// Receiver → sender: send me every record of these buckets.
    pub const BUCKET_REQUEST: u8 = 0x22;
    /// Sender → receiver: records of a requested bucket.
    pub const BUCKET: u8 = 0x23;
    /// Sender → receiver: clean leave.
    pub const GOODBYE: u8 = 0x30;
    /// Either way: fatal error, the sender closes the connection.
    pub const ERROR: u8 = crate::proto::ERROR;
}

/// Where a node can be reached: its sequence number and ports (the `<node>` of a cluster file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeInfo {
    /// Sequence number.
    pub id: u16,
    /// Address of every port.
    pub host: IpAddr,
    /// Pool port.
    pub pool_port: u16,
    /// Query port.
    pub query_port: u16,
    /// Replication port.
    pub sync_port: u16,
    /// Time-sync port (UDP).
    pub time_port: u16,
    /// HTTP port.
    pub http_port: u16,
}

/// A member as gossiped in `HEARTBEAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gossip {
    /// The member.
    pub info: NodeInfo,
    /// Whether the sender considers it alive.
    pub alive: bool,
}

/// A replication message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// `HELLO`.
    Hello {
        /// Cluster name: must equal the receiver's.
        cluster: String,
        /// The sender.
        from: NodeInfo,
        /// Random per process start: a new incarnation restarts the sender's sequence numbers.
        incarnation: u64,
    },
    /// `WELCOME`.
    Welcome {
        /// The receiver's id.
        node: u16,
        /// Next sequence number wanted from this incarnation; 0 asks for a full snapshot.
        resume_from: u64,
    },
    /// `UPDATES`: the sender's current version of every user changed by its own updates since
    /// the previous `UPDATES`, up to and including its update number `upto_seq`.
    Updates {
        /// The sender's last update number this frame covers.
        upto_seq: u64,
        /// The records (one per user: the last version wins inside a batch).
        records: Vec<(Sid, Record)>,
    },
    /// `ACK`.
    Ack(u64),
    /// `SNAPSHOT_BEGIN`: the snapshot includes every update up to `upto_seq`.
    SnapshotBegin {
        /// Last sender sequence number the snapshot covers.
        upto_seq: u64,
    },
    /// `SNAPSHOT`: records.
    Snapshot(Vec<(Sid, Record)>),
    /// `SNAPSHOT_END`.
    SnapshotEnd {
        /// Records sent in the snapshot.
        records: u64,
    },
    /// `HEARTBEAT`.
    Heartbeat {
        /// The sender's election term.
        term: u64,
        /// Whether the sender serves.
        ready: bool,
        /// The sender's record count.
        records: u64,
        /// The sender's state digest.
        digest: u128,
        /// Members the sender knows, itself excluded.
        members: Vec<Gossip>,
    },
    /// `DIGESTS`: one value per bucket.
    Digests(Vec<u64>),
    /// `BUCKET_REQUEST`.
    BucketRequest(Vec<u16>),
    /// `BUCKET`: records of one bucket (possibly several frames per bucket).
    Bucket {
        /// The bucket.
        bucket: u16,
        /// Records.
        records: Vec<(Sid, Record)>,
    },
    /// `GOODBYE`.
    Goodbye,
    /// `ERROR`.
    Error {
        /// Error code byte.
        code: u8,
        /// Reason.
        message: String,
    },
}

fn put_stamp(b: &mut Vec<u8>, s: Stamp) {
    b.put_u64(s.hlc());
    b.put_u16(s.node());
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp, DecodeError> {
    Ok(Stamp::new(r.u64("stamp")?, r.u16("stamp node")?))
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

fn read_bool(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
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
    let mut clients = Vec::with_capacity(n.into());
    let mut prev = None;
    for _ in 0..n {
        let client =
            ClientType::from_code(r.u8("client")?).ok_or(DecodeError::Invalid("client"))?;
        if prev.is_some_and(|p| p >= client) {
            return Err(DecodeError::Invalid("clients not ascending"));
        }
        prev = Some(client);
        let stamp = read_stamp(r)?;
        clients.push(ClientReg {
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
        let limits = ExtLimits {
            max_entries: 255,
            max_key: 255,
            max_value: 65535,
        };
        let e: Arc<Ext> = read_ext(r, &limits)?;
        Some(Reg { stamp, value: e })
    } else {
        None
    };
    Record::from_parts(ident, clients, perm, ext).ok_or(DecodeError::Invalid("record"))
}

fn put_records(b: &mut Vec<u8>, records: &[(Sid, Record)]) {
    b.put_u16(records.len() as u16);
    for (sid, r) in records {
        b.put_u64(sid.get());
        put_record(b, r);
    }
}

fn read_records(r: &mut Reader<'_>) -> Result<Vec<(Sid, Record)>, DecodeError> {
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
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let sid = Sid::new(r.u64("sid")?).ok_or(DecodeError::Invalid("sid 0"))?;
        v.push((sid, read_record(r)?));
    }
    Ok(v)
}

fn put_info(b: &mut Vec<u8>, n: &NodeInfo) {
    b.put_u16(n.id);
    match n.host {
        IpAddr::V4(a) => {
            b.put_u8(4);
            b.put_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b.put_u8(6);
            b.put_slice(&a.octets());
        }
    }
    for p in [
        n.pool_port,
        n.query_port,
        n.sync_port,
        n.time_port,
        n.http_port,
    ] {
        b.put_u16(p);
    }
}

fn read_info(r: &mut Reader<'_>) -> Result<NodeInfo, DecodeError> {
    let id = r.u16("node id")?;
    if id == 0 {
        return Err(DecodeError::Invalid("node id 0"));
    }
    let host = match r.u8("address family")? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("ipv4")?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("ipv6")?)),
        _ => return Err(DecodeError::Invalid("address family")),
    };
    Ok(NodeInfo {
        id,
        host,
        pool_port: r.u16("pool port")?,
        query_port: r.u16("query port")?,
        sync_port: r.u16("sync port")?,
        time_port: r.u16("time port")?,
        http_port: r.u16("http port")?,
    })
}

impl Msg {
    /// Appends this message as one frame.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Hello {
                cluster,
                from,
                incarnation,
            } => put_frame(out, ty::HELLO, |b| {
                b.put_slice(&MAGIC);
                b.put_u8(VERSION);
                let name = cluster.as_bytes().get(..255).unwrap_or(cluster.as_bytes());
                b.put_u8(name.len() as u8);
                b.put_slice(name);
                put_info(b, from);
                b.put_u64(*incarnation);
            }),
            Self::Welcome { node, resume_from } => put_frame(out, ty::WELCOME, |b| {
                b.put_u16(*node);
                b.put_u64(*resume_from);
            }),
            Self::Updates { upto_seq, records } => put_frame(out, ty::UPDATES, |b| {
                b.put_u64(*upto_seq);
                put_records(b, records);
            }),
            Self::Ack(s) => put_frame(out, ty::ACK, |b| b.put_u64(*s)),
            Self::SnapshotBegin { upto_seq } => {
                put_frame(out, ty::SNAPSHOT_BEGIN, |b| b.put_u64(*upto_seq))
            }
            Self::Snapshot(records) => put_frame(out, ty::SNAPSHOT, |b| put_records(b, records)),
            Self::SnapshotEnd { records } => {
                put_frame(out, ty::SNAPSHOT_END, |b| b.put_u64(*records))
            }
            Self::Heartbeat {
                term,
                ready,
                records,
                digest,
                members,
            } => put_frame(out, ty::HEARTBEAT, |b| {
                b.put_u64(*term);
                b.put_u8(u8::from(*ready));
                b.put_u64(*records);
                b.put_u128(*digest);
                b.put_u16(members.len() as u16);
                for m in members {
                    put_info(b, &m.info);
                    b.put_u8(u8::from(m.alive));
                }
            }),
            Self::Digests(d) => put_frame(out, ty::DIGESTS, |b| {
                b.put_u16(d.len() as u16);
                for x in d {
                    b.put_u64(*x);
                }
            }),
            Self::BucketRequest(v) => put_frame(out, ty::BUCKET_REQUEST, |b| {
                b.put_u16(v.len() as u16);
                for x in v {
                    b.put_u16(*x);
                }
            }),
            Self::Bucket { bucket, records } => put_frame(out, ty::BUCKET, |b| {
                b.put_u16(*bucket);
                put_records(b, records);
            }),
            Self::Goodbye => put_frame(out, ty::GOODBYE, |_| {}),
            Self::Error { code, message } => {
                let code = crate::proto::ErrorCode::from_u8(*code)
                    .unwrap_or(crate::proto::ErrorCode::Protocol);
                crate::proto::put_error(out, code, message);
            }
        }
    }

    /// Decodes a frame body of type `ty`.
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let m = match ty {
            ty::HELLO => {
                if r.array::<4>("magic")? != MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                let v = r.u8("version")?;
                if v != VERSION {
                    return Err(DecodeError::BadVersion(v));
                }
                let n = usize::from(r.u8("cluster name length")?);
                let cluster = r.str(n, "cluster name")?.to_owned();
                let from = read_info(&mut r)?;
                Self::Hello {
                    cluster,
                    from,
                    incarnation: r.u64("incarnation")?,
                }
            }
            ty::WELCOME => Self::Welcome {
                node: r.u16("node")?,
                resume_from: r.u64("resume")?,
            },
            ty::UPDATES => {
                let upto_seq = r.u64("upto seq")?;
                let records = read_records(&mut r)?;
                if upto_seq == 0 {
                    return Err(DecodeError::Invalid("upto seq 0"));
                }
                Self::Updates { upto_seq, records }
            }
            ty::ACK => Self::Ack(r.u64("ack")?),
            ty::SNAPSHOT_BEGIN => Self::SnapshotBegin {
                upto_seq: r.u64("upto")?,
            },
            ty::SNAPSHOT => Self::Snapshot(read_records(&mut r)?),
            ty::SNAPSHOT_END => Self::SnapshotEnd {
                records: r.u64("records")?,
            },
            ty::HEARTBEAT => {
                let term = r.u64("term")?;
                let ready = read_bool(&mut r, "ready")?;
                let records = r.u64("records")?;
                let digest = u128::from_be_bytes(r.array("digest")?);
                let n = usize::from(r.u16("member count")?);
                if n > 1024 {
                    return Err(DecodeError::TooLarge {
                        what: "members",
                        len: n as u64,
                        max: 1024,
                    });
                }
                let mut members = Vec::with_capacity(n);
                for _ in 0..n {
                    let info = read_info(&mut r)?;
                    members.push(Gossip {
                        info,
                        alive: read_bool(&mut r, "alive")?,
                    });
                }
                Self::Heartbeat {
                    term,
                    ready,
                    records,
                    digest,
                    members,
                }
            }
            ty::DIGESTS => {
                let n = usize::from(r.u16("bucket count")?);
                if n != crate::store::DIGEST_BUCKETS {
                    return Err(DecodeError::Invalid("bucket count"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.u64("bucket")?);
                }
                Self::Digests(v)
            }
            ty::BUCKET_REQUEST => {
                let n = usize::from(r.u16("bucket count")?);
                if n > crate::store::DIGEST_BUCKETS {
                    return Err(DecodeError::Invalid("bucket count"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let b = r.u16("bucket")?;
                    if usize::from(b) >= crate::store::DIGEST_BUCKETS {
                        return Err(DecodeError::Invalid("bucket"));
                    }
                    v.push(b);
                }
                Self::BucketRequest(v)
            }
            ty::BUCKET => {
                let bucket = r.u16("bucket")?;
                if usize::from(bucket) >= crate::store::DIGEST_BUCKETS {
                    return Err(DecodeError::Invalid("bucket"));
                }
                Self::Bucket {
                    bucket,
                    records: read_records(&mut r)?,
                }
            }
            ty::GOODBYE => Self::Goodbye,
            ty::ERROR => {
                let (code, message) = crate::proto::read_error(body)?;
                return Ok(Self::Error { code, message });
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(m)
    }
}

#[cfg(all(test, not(loom)))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use hex_literal::hex;
    use proptest::prelude::*;

    use super::*;
    use crate::model::{Change, Update};
    use crate::wire::split_frame;

    fn roundtrip(m: &Msg) -> Msg {
        let mut out = Vec::new();
        m.encode(&mut out);
        let (t, b, n) = split_frame(&out, MAX_FRAME).unwrap().unwrap();
        assert_eq!(n, out.len());
        Msg::decode(t, b).unwrap()
    }

    fn node(id: u16) -> NodeInfo {
        NodeInfo {
            id,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            pool_port: 7400,
            query_port: 7401,
            sync_port: 7402,
            time_port: 7403,
            http_port: 7480,
        }
    }

    //= docs/protocols/replication.md#test-vectors
    #[test]
    fn vectors_from_the_spec() {
        let mut out = Vec::new();
        Msg::Hello {
            cluster: "demo".into(),
            from: node(1),
            incarnation: 42,
        }
        .encode(&mut out);
        assert_eq!(out, hex!("00000024 01 50525352 01 04 64656d6f 0001 04 7f000001 1ce8 1ce9 1cea 1ceb 1d38 000000000000002a"));
        out.clear();
        let u = Update {
            uid: 1,
            pool: 1,
            change: Change::Login(ClientType::Mobile),
            ext: None,
        };
        let rec = Record::from_update(Stamp::new(0x0000_019a_b6c4_3c00_0000, 1), &u);
        Msg::Updates {
            upto_seq: 1,
            records: vec![(Sid::new(10086).unwrap(), rec)],
        }
        .encode(&mut out);
        assert_eq!(
            out,
            hex!(
                "00000038 10 0000000000000001 0001"
                "0000000000002766"
                "019ab6c43c000000 0001 0000000000000001 00000001"
                "01 01 019ab6c43c000000 0001 01"
                "00 00"
            )
        );
        assert!(matches!(roundtrip(&Msg::Ack(3)), Msg::Ack(3)));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            Msg::decode(ty::HELLO, b"PRSQ\x01"),
            Err(DecodeError::BadMagic)
        );
        assert_eq!(
            Msg::decode(ty::DIGESTS, &hex!("0001 0000000000000000")),
            Err(DecodeError::Invalid("bucket count"))
        );
        assert_eq!(
            Msg::decode(ty::BUCKET_REQUEST, &hex!("0001 0100")),
            Err(DecodeError::Invalid("bucket"))
        );
        assert!(matches!(
            Msg::decode(ty::SNAPSHOT, &hex!("ffff")),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(Msg::decode(0x55, &[]), Err(DecodeError::UnknownType(0x55)));
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let reg = (any::<u64>(), 1u16..5, any::<bool>()).prop_map(|(h, n, v)| Reg {
            stamp: Stamp::new(h >> 1, n),
            value: v,
        });
        let clients = prop::collection::btree_map(0u8..6, reg.clone(), 0..6);
        let ext = prop::option::of((
            any::<u64>(),
            prop::collection::btree_map("[a-z]{1,4}", "[a-z]{0,4}", 0..3),
        ));
        (
            any::<u64>(),
            any::<u32>(),
            clients,
            prop::option::of(reg),
            ext,
        )
            .prop_map(|(uid, pool, clients, perm, ext)| {
                let clients: Vec<ClientReg> = clients
                    .into_iter()
                    .map(|(c, reg)| ClientReg {
                        client: ClientType::from_code(c).unwrap(),
                        reg,
                    })
                    .collect();
                let ext = ext.map(|(h, m)| Reg {
                    stamp: Stamp::new(h >> 1, 1),
                    value: Arc::new(
                        Ext::new(m.into_iter().collect(), &ExtLimits::default()).unwrap(),
                    ),
                });
                let max = clients
                    .iter()
                    .map(|c| c.reg.stamp)
                    .chain(perm.iter().map(|p| p.stamp))
                    .chain(ext.iter().map(|e| e.stamp))
                    .max()
                    .unwrap_or_default();
                Record::from_parts(
                    Reg {
                        stamp: max,
                        value: Ident { uid, pool },
                    },
                    clients,
                    perm,
                    ext,
                )
                .unwrap()
            })
    }

    proptest! {
        #[test]
        fn records_round_trip(recs in prop::collection::vec((1u64.., arb_record()), 1..8), upto in 1u64..) {
            let records: Vec<(Sid, Record)> = recs.into_iter().map(|(s, r)| (Sid::new(s).unwrap(), r)).collect();
            let m = Msg::Updates { upto_seq: upto, records };
            prop_assert_eq!(roundtrip(&m), m);
        }

        #[test]
        fn heartbeats_round_trip(term in any::<u64>(), ready in any::<bool>(), digest in any::<u128>(), ids in prop::collection::vec(1u16.., 0..5)) {
            let members = ids.into_iter().map(|id| Gossip { info: node(id), alive: id % 2 == 0 }).collect();
            let m = Msg::Heartbeat { term, ready, records: 5, digest, members };
            prop_assert_eq!(roundtrip(&m), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            crate::fuzzing::repl_message(&bytes);
        }
    }
}
