//! Spec vectors, per-request refusals and properties of the query codec and session.

use hex_literal::hex;
use proptest::prelude::*;

use super::*;
use crate::hlc::Stamp;
use crate::model::{Change, ClientType, Update};
use crate::store::Store;
use crate::wire::split_frame;

fn serve(store: &Store, input: &[u8]) -> (Vec<ServerFrame>, Result<QueryOutcome, QueryError>) {
    let mut out = Vec::new();
    let limits = QueryLimits {
        max_frame: 1 << 16,
        max_batch: 3,
    };
    let pinned = store.pin();
    let ctx = QueryCtx {
        limits: &limits,
        store: &pinned,
        node: 1,
        now_ms: 1000,
    };
    let r = QuerySession::default().handle_input(input, 64, &ctx, &mut out);
    let mut v = Vec::new();
    let mut rest = &out[..];
    while let Some((t, b, n)) = split_frame(rest, 1 << 20).unwrap() {
        v.push(ServerFrame::decode(t, b).unwrap());
        rest = &rest[n..];
    }
    (v, r)
}

//= docs/protocols/query.md#test-vectors
#[test]
fn vectors_from_the_spec() {
    let store = Store::default();
    let u = Update {
        uid: 1,
        pool: 1,
        change: Change::Login(ClientType::Mobile),
        ext: None,
    };
    store.pin().apply(
        Sid::new(10086).unwrap(),
        Stamp::new(0x0000_019a_b6c4_3c00 << 16, 1),
        &u,
    );
    let input = hex!(
        "00000006 01 50525351 01"
        "00000017 10 00000007 0002 0000000000002766 000000000000271a"
    );
    let mut out = Vec::new();
    let limits = QueryLimits::default();
    let pinned = store.pin();
    let ctx = QueryCtx {
        limits: &limits,
        store: &pinned,
        node: 1,
        now_ms: 0x019a_b6c4_3c01,
    };
    QuerySession::default()
        .handle_input(&input, 64, &ctx, &mut out)
        .unwrap();
    assert_eq!(
        out,
        hex!(
            "00000006 02 01 0001 03e8"
            "00000043 11 00000007 0000019ab6c43c01 0002"
            "0000000000002766 07 02 0000019ab6c43c00 0000000000000001"
            "000000000000271a 00 00 0000000000000000 0000000000000000"
        )
    );
}

#[test]
fn over_limit_and_zero_ids_are_refused_per_request() {
    let store = Store::default();
    let mut input = Vec::new();
    ClientFrame::Hello.encode(&mut input);
    ClientFrame::Query {
        req_id: 1,
        ids: vec![1, 2, 3, 4],
    }
    .encode(&mut input);
    ClientFrame::Query {
        req_id: 2,
        ids: vec![1, 0],
    }
    .encode(&mut input);
    ClientFrame::Query {
        req_id: 3,
        ids: vec![5],
    }
    .encode(&mut input);
    let (out, r) = serve(&store, &input);
    assert_eq!(r.unwrap().requests, 3);
    assert!(matches!(
        out[1],
        ServerFrame::Reject {
            req_id: 1,
            code: 7,
            ..
        }
    ));
    assert!(matches!(
        out[2],
        ServerFrame::Reject {
            req_id: 2,
            code: 6,
            ..
        }
    ));
    assert!(
        matches!(&out[3], ServerFrame::Result { req_id: 3, statuses, .. } if !statuses[0].known)
    );
}

#[test]
fn garbage_gets_an_error_frame() {
    let (out, r) = serve(&Store::default(), b"GET / HTTP/1.1\r\n\r\n");
    assert!(r.is_err());
    assert!(matches!(out[..], [ServerFrame::Error { .. }]));
}

proptest! {
    #[test]
    fn query_round_trips(req_id in any::<u32>(), ids in prop::collection::vec(any::<u64>(), 0..50)) {
        let f = ClientFrame::Query { req_id, ids };
        let mut out = Vec::new();
        f.encode(&mut out);
        let (t, b, n) = split_frame(&out, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(ClientFrame::decode(t, b).unwrap(), f);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzzing::batch_query(&bytes);
    }
}
