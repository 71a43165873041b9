//! Spec vectors, rejections and round-trip properties of the replication codec.

use std::sync::Arc;

use hex_literal::hex;
use proptest::prelude::*;

use super::*;
use crate::hlc::Stamp;
use crate::model::{Change, ClientReg, ClientType, Ext, ExtLimits, Ident, Reg, Update};
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

//= docs/protocols/replication.md#authentication-test-vectors
#[test]
fn authenticated_handshake_vectors_from_the_spec() {
    use crate::cluster::auth::{ClusterKey, Side};
    let key = ClusterKey::new(b"0123456789abcdef0123456789abcdef");
    let mut out = Vec::new();
    let nonce_s: [u8; 16] = core::array::from_fn(|i| i as u8);
    Msg::Hello {
        cluster: "demo".into(),
        from: node(1),
        incarnation: 42,
        auth: true,
        nonce: nonce_s,
    }
    .encode(&mut out);
    assert_eq!(out, hex!("00000035 01 50525352 02 04 64656d6f 0001 04 7f000001 1ce8 1ce9 1cea 1ceb 1d38 000000000000002a 01 000102030405060708090a0b0c0d0e0f"));
    let hello_body = out[5..].to_vec();
    let nonce_r: [u8; 16] = core::array::from_fn(|i| 0x10 + i as u8);
    out.clear();
    Msg::Challenge {
        nonce: nonce_r,
        proof: key.challenge_proof(&hello_body, &nonce_r),
    }
    .encode(&mut out);
    assert_eq!(out, hex!("00000031 03 101112131415161718191a1b1c1d1e1f df2018e3c24fbdb962cf7695102e4b1191ac4f37af53ef9a3e0acb3b809e34fb"));
    out.clear();
    Msg::Auth {
        proof: key.auth_proof(&hello_body, &nonce_r),
    }
    .encode(&mut out);
    assert_eq!(
        out,
        hex!("00000021 04 09941601d1b803839b2378dc0377172a038a4f4e9403ae6c48e6a65750c46999")
    );
    // The receiver's first sealed frame: WELCOME(node 2, resume 0), sequence number 0.
    out.clear();
    let mut receiver = key.session(&hello_body, &nonce_r, Side::Receiver);
    Msg::Welcome {
        node: 2,
        resume_from: 0,
    }
    .encode(&mut out);
    receiver.seal(&mut out, 0);
    assert_eq!(
        out,
        hex!("0000001b 02 0002 0000000000000000 1052cc6469f82ad8cad3178e89e155c8")
    );
    let mut sender = key.session(&hello_body, &nonce_r, Side::Sender);
    assert_eq!(sender.open(&out).unwrap(), hex!("0002 0000000000000000"));
}

//= docs/protocols/replication.md#test-vectors
#[test]
fn vectors_from_the_spec() {
    let mut out = Vec::new();
    Msg::Hello {
        cluster: "demo".into(),
        from: node(1),
        incarnation: 42,
        auth: false,
        nonce: [0; 16],
    }
    .encode(&mut out);
    assert_eq!(out, hex!("00000035 01 50525352 02 04 64656d6f 0001 04 7f000001 1ce8 1ce9 1cea 1ceb 1d38 000000000000002a 00 00000000000000000000000000000000"));
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

//= docs/protocols/replication.md#test-vectors
#[test]
fn snapshot_end_vector() {
    let m = Msg::SnapshotEnd {
        records: 3,
        digest: 0x0a0b_0c0d_0e0f_1011,
    };
    let mut out = Vec::new();
    m.encode(&mut out);
    assert_eq!(out, hex!("00000011 14 0000000000000003 0a0b0c0d0e0f1011"));
    let (t, b, _) = split_frame(&out, MAX_FRAME).unwrap().unwrap();
    assert_eq!(Msg::decode(t, b).unwrap(), m);
    // The version 1 body (count only) is refused: the digest is required.
    assert!(Msg::decode(t, &hex!("0000000000000003")).is_err());
}

//= docs/protocols/replication.md#test-vectors
#[test]
fn heartbeat_vector_with_a_removal() {
    let m = Msg::Heartbeat {
        term: 7,
        ready: true,
        records: 2,
        digest: 0x0102,
        members: Vec::new(),
        removals: vec![Removal {
            id: 4,
            stamp: 0x0000_0100_0000_0000,
            removed: true,
        }],
    };
    let mut out = Vec::new();
    m.encode(&mut out);
    assert_eq!(
        out,
        hex!(
            "00000031 20"
            "0000000000000007 01 0000000000000002 00000000000000000000000000000102"
            "0000"
            "0001 0004 0000010000000000 01"
        )
    );
    let (t, b, _) = split_frame(&out, MAX_FRAME).unwrap().unwrap();
    assert_eq!(Msg::decode(t, b).unwrap(), m);
}

#[test]
fn member_limit_comes_from_the_limits() {
    let m = Msg::Heartbeat {
        term: 1,
        ready: true,
        records: 0,
        digest: 0,
        members: (1..=3)
            .map(|id| Gossip {
                info: node(id),
                alive: true,
            })
            .collect(),
        removals: Vec::new(),
    };
    let mut out = Vec::new();
    m.encode(&mut out);
    let (t, b, _) = split_frame(&out, MAX_FRAME).unwrap().unwrap();
    let two = ReplLimits {
        max_members: 2,
        ..ReplLimits::default()
    };
    assert_eq!(
        Msg::decode_with_limits(t, b, &two),
        Err(DecodeError::TooLarge {
            what: "members",
            len: 3,
            max: 2
        })
    );
    assert_eq!(Msg::decode_with_limits(t, b, &ReplLimits::default()), Ok(m));
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
                value: Arc::new(Ext::new(m.into_iter().collect(), &ExtLimits::default()).unwrap()),
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
    fn heartbeats_round_trip(term in any::<u64>(), ready in any::<bool>(), digest in any::<u128>(), ids in prop::collection::vec(1u16.., 0..5), gone in prop::collection::vec((1u16.., any::<u64>(), any::<bool>()), 0..4)) {
        let members = ids.into_iter().map(|id| Gossip { info: node(id), alive: id % 2 == 0 }).collect();
        let removals = gone.into_iter().map(|(id, stamp, removed)| Removal { id, stamp, removed }).collect();
        let m = Msg::Heartbeat { term, ready, records: 5, digest, members, removals };
        prop_assert_eq!(roundtrip(&m), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzzing::repl_message(&bytes);
    }
}
