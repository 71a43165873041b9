//! The replication protocol codec: `docs/protocols/replication.md`.
//!
//! Every node keeps one outbound TCP connection to every peer's sync port and streams its own
//! updates on it; the peer answers on the same connection (acks, bucket requests). Frames use
//! the common framing of [`crate::wire`].
//!
//! This module holds the messages ([`Msg`], [`NodeInfo`], [`Gossip`]) and their framing; the
//! encoding of the records they carry is in the `record` submodule ([`put_record`],
//! [`read_record`]). Decoding checks every count against the [`ReplLimits`] it is given
//! ([`Msg::decode_with_limits`]); the driver takes them from `<limits>`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::BufMut;

use crate::cluster::auth::{Nonce, Proof};
use crate::model::{Record, Sid};
use crate::wire::{put_frame, DecodeError, Reader};

mod record;

pub use record::{put_record, read_record, recycle};
use record::{put_records, read_bool, read_records};

/// Magic at the start of `HELLO`: ASCII `PRSR`.
pub const MAGIC: [u8; 4] = *b"PRSR";
/// The protocol version this build speaks.
pub const VERSION: u8 = 2;
/// Most records in one `UPDATES`, `SNAPSHOT` or `BUCKET` frame.
pub const MAX_RECORDS: usize = 4096;
/// Default largest replication frame accepted (a full frame of records with maximal ext is
/// below this); [`ReplLimits::max_frame`] is the one in force.
pub const MAX_FRAME: u32 = 64 << 20;
/// Default most members in one `HEARTBEAT`; [`ReplLimits::max_members`] is the one in force.
pub const MAX_MEMBERS: usize = 1024;

/// Limits a replication connection's decoder enforces: everything a peer can make this node
/// buffer or allocate beyond what the protocol fixes. The defaults are the protocol's
/// historical values; the driver builds them from `<limits repl-max-frame-bytes
/// max-gossip-members>` (`presenced_config::Limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplLimits {
    /// Largest frame (type and body), in bytes: give it to [`crate::wire::split_frame`]. Keep
    /// it at least 32 MiB: a sender's largest frame is about 20 MiB.
    pub max_frame: u32,
    /// Most members in one `HEARTBEAT`.
    pub max_members: usize,
}

impl Default for ReplLimits {
    fn default() -> Self {
        Self {
            max_frame: MAX_FRAME,
            max_members: MAX_MEMBERS,
        }
    }
}

/// Frame types.
pub mod ty {
    /// Sender → receiver: handshake.
    pub const HELLO: u8 = 0x01;
    /// Receiver → sender: handshake accepted, where to resume.
    pub const WELCOME: u8 = 0x02;
    /// Receiver → sender: the receiver's nonce and proof (authenticated clusters only).
    pub const CHALLENGE: u8 = 0x03;
    /// Sender → receiver: the sender's proof (authenticated clusters only).
    pub const AUTH: u8 = 0x04;
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

/// `WELCOME.resume_from` meaning "no snapshot: stream your updates from now on". A joining
/// node answers it to every peer but its data master, whose snapshot carries everyone's data.
pub const RESUME_NOW: u64 = u64::MAX;

/// A membership decision about one node id, gossiped in every `HEARTBEAT`: removed (refused,
/// forgotten) or re-admitted. The entry with the greater `stamp` wins, so every node converges to
/// the last decision whatever the order it hears them in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The node id the decision is about.
    pub id: u16,
    /// When it was made (cluster time, µs): the later decision wins.
    pub stamp: u64,
    /// `true`: removed; `false`: re-admitted.
    pub removed: bool,
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
        /// Whether the sender authenticates (it has a cluster secret): the receiver must answer
        /// `CHALLENGE`. Set by the driver's link layer, not by the node.
        auth: bool,
        /// The sender's fresh nonce when `auth`, zeros otherwise. Set by the driver.
        nonce: Nonce,
    },
    /// `CHALLENGE`: the receiver's nonce and its proof over the transcript.
    Challenge {
        /// The receiver's fresh nonce.
        nonce: Nonce,
        /// HMAC proof that the receiver holds the cluster secret.
        proof: Proof,
    },
    /// `AUTH`: the sender's proof over the transcript.
    Auth {
        /// HMAC proof that the sender holds the cluster secret.
        proof: Proof,
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
        /// The wrapping sum of `store::record_digest` over the records sent: the snapshot's own
        /// digest at its cut, which the receiver checks before it counts the snapshot.
        digest: u64,
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
        /// The membership decisions the sender knows (removed and re-admitted ids).
        removals: Vec<Removal>,
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
                auth,
                nonce,
            } => put_frame(out, ty::HELLO, |b| {
                b.put_slice(&MAGIC);
                b.put_u8(VERSION);
                let name = cluster.as_bytes().get(..255).unwrap_or(cluster.as_bytes());
                b.put_u8(name.len() as u8);
                b.put_slice(name);
                put_info(b, from);
                b.put_u64(*incarnation);
                b.put_u8(u8::from(*auth));
                b.put_slice(nonce);
            }),
            Self::Challenge { nonce, proof } => put_frame(out, ty::CHALLENGE, |b| {
                b.put_slice(nonce);
                b.put_slice(proof);
            }),
            Self::Auth { proof } => put_frame(out, ty::AUTH, |b| b.put_slice(proof)),
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
            Self::SnapshotEnd { records, digest } => put_frame(out, ty::SNAPSHOT_END, |b| {
                b.put_u64(*records);
                b.put_u64(*digest);
            }),
            Self::Heartbeat {
                term,
                ready,
                records,
                digest,
                members,
                removals,
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
                b.put_u16(removals.len() as u16);
                for x in removals {
                    b.put_u16(x.id);
                    b.put_u64(x.stamp);
                    b.put_u8(u8::from(x.removed));
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

    /// Decodes a frame body of type `ty` under the default [`ReplLimits`].
    pub fn decode(ty: u8, body: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with_limits(ty, body, &ReplLimits::default())
    }

    /// Decodes a frame body of type `ty`, refusing counts above `limits`. (The frame length was
    /// checked by [`crate::wire::split_frame`] against `limits.max_frame`.)
    pub fn decode_with_limits(
        ty: u8,
        body: &[u8],
        limits: &ReplLimits,
    ) -> Result<Self, DecodeError> {
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
                    auth: read_bool(&mut r, "auth")?,
                    nonce: r.array("nonce")?,
                }
            }
            ty::CHALLENGE => Self::Challenge {
                nonce: r.array("nonce")?,
                proof: r.array("proof")?,
            },
            ty::AUTH => Self::Auth {
                proof: r.array("proof")?,
            },
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
                digest: r.u64("snapshot digest")?,
            },
            ty::HEARTBEAT => {
                let term = r.u64("term")?;
                let ready = read_bool(&mut r, "ready")?;
                let records = r.u64("records")?;
                let digest = u128::from_be_bytes(r.array("digest")?);
                let n = usize::from(r.u16("member count")?);
                if n > limits.max_members {
                    return Err(DecodeError::TooLarge {
                        what: "members",
                        len: n as u64,
                        max: limits.max_members as u64,
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
                let n = usize::from(r.u16("removal count")?);
                if n > limits.max_members {
                    return Err(DecodeError::TooLarge {
                        what: "removals",
                        len: n as u64,
                        max: limits.max_members as u64,
                    });
                }
                let mut removals = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = r.u16("removed id")?;
                    if id == 0 {
                        return Err(DecodeError::Invalid("removed id 0"));
                    }
                    removals.push(Removal {
                        id,
                        stamp: r.u64("removal stamp")?,
                        removed: read_bool(&mut r, "removed")?,
                    });
                }
                Self::Heartbeat {
                    term,
                    ready,
                    records,
                    digest,
                    members,
                    removals,
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
mod tests;
