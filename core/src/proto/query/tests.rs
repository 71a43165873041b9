//! Spec vectors, per-request refusals and properties of the query codec and session.

use hex_literal::hex;
use proptest::prelude::*;

use super::*;
use crate::auth::{ApiKeys, AuthOutcome};
use crate::hlc::Stamp;
use crate::model::{Change, ClientType, Update};
use crate::store::Store;
use crate::wire::split_frame;

fn serve(store: &Store, input: &[u8]) -> (Vec<ServerFrame>, Result<QueryOutcome, QueryError>) {
    serve_keys(store, &ApiKeys::default(), input)
}

fn serve_keys(
    store: &Store,
    keys: &ApiKeys,
    input: &[u8],
) -> (Vec<ServerFrame>, Result<QueryOutcome, QueryError>) {
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
        keys,
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

/// The store of the spec's vectors: sid 10086 logged in on mobile, 10010 unknown.
fn vector_store() -> Store {
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
    store
}

/// The API key of the spec's vectors (name `portal`).
const VECTOR_KEY: &[u8] = b"0123456789abcdef";

/// Feeds `input` to a fresh session over the vector store and returns the exact output.
fn vector_output(keys: &ApiKeys, input: &[u8]) -> (Vec<u8>, Result<QueryOutcome, QueryError>) {
    let store = vector_store();
    let mut out = Vec::new();
    let limits = QueryLimits::default();
    let pinned = store.pin();
    let ctx = QueryCtx {
        limits: &limits,
        store: &pinned,
        node: 1,
        now_ms: 0x019a_b6c4_3c01,
        keys,
    };
    let r = QuerySession::default().handle_input(input, 64, &ctx, &mut out);
    (out, r)
}

fn vector_keys() -> ApiKeys {
    ApiKeys::new([("portal".to_owned(), VECTOR_KEY.to_vec())])
}

const VECTOR_RESULT: [u8; 71] = hex!(
    "00000043 11 00000007 0000019ab6c43c01 0002"
    "0000000000002766 07 02 0000019ab6c43c00 0000000000000001"
    "000000000000271a 00 00 0000000000000000 0000000000000000"
);
const VECTOR_QUERY: [u8; 27] = hex!("00000017 10 00000007 0002 0000000000002766 000000000000271a");

//= docs/protocols/query.md#test-vectors
#[test]
fn vectors_from_the_spec() {
    let mut input = hex!("00000006 01 50525351 01").to_vec();
    input.extend_from_slice(&VECTOR_QUERY);
    let (out, r) = vector_output(&ApiKeys::default(), &input);
    r.unwrap();
    let mut expected = hex!("00000006 02 01 0001 03e8").to_vec();
    expected.extend_from_slice(&VECTOR_RESULT);
    assert_eq!(out, expected);
}

//= docs/protocols/query.md#vector-2-hello-v2-with-an-api-key
#[test]
fn vector_hello_v2_with_the_right_key() {
    let mut input = hex!("00000018 01 50525351 02 00 10 30313233343536373839616263646566").to_vec();
    input.extend_from_slice(&VECTOR_QUERY);
    let (out, r) = vector_output(&vector_keys(), &input);
    assert_eq!(r.unwrap().auth, Some(AuthOutcome::Granted(0)));
    let mut expected = hex!("00000006 02 02 0001 03e8").to_vec();
    expected.extend_from_slice(&VECTOR_RESULT);
    assert_eq!(out, expected);
    // The same HELLO on a node without keys is accepted too (the key is ignored).
    let (out, r) = vector_output(&ApiKeys::default(), &input);
    assert_eq!(r.unwrap().auth, None);
    assert_eq!(out[..10], hex!("00000006 02 02 0001 03e8"));
}

//= docs/protocols/query.md#vector-3-refused-hellos
#[test]
fn vector_refused_hellos_all_get_the_same_error() {
    let refusal = hex!(
        "0000002d 7f 03 0029"
        "756e617574686f72697a65643a20612076616c696420415049206b6579206973207265717569726564"
    );
    assert_eq!(
        &refusal[8..],
        b"unauthorized: a valid API key is required".as_slice()
    );
    let cases: [(&[u8], AuthOutcome); 3] = [
        // v1: no key.
        (&hex!("00000006 01 50525351 01"), AuthOutcome::Missing),
        // v2, empty key.
        (&hex!("00000008 01 50525351 02 00 00"), AuthOutcome::Missing),
        // v2, wrong last byte.
        (
            &hex!("00000018 01 50525351 02 00 10 30313233343536373839616263646567"),
            AuthOutcome::Invalid,
        ),
    ];
    for (hello, outcome) in cases {
        let mut input = hello.to_vec();
        input.extend_from_slice(&VECTOR_QUERY);
        let (out, r) = vector_output(&vector_keys(), &input);
        assert_eq!(r, Err(QueryError::Unauthorized(outcome)));
        assert_eq!(out, refusal, "the pipelined QUERY is not answered");
    }
}

//= docs/protocols/query.md#vector-4-watch-mode-and-subscribe
#[test]
fn vector_subscribe_is_accepted() {
    let input = hex!(
        "00000018 01 50525351 02 01 10 30313233343536373839616263646566"
        "00000012 20 00000009 02 6531 0001 0000000000002766"
    );
    let mut s = QuerySession::default();
    let store = vector_store();
    let pinned = store.pin();
    let limits = QueryLimits::default();
    let keys = vector_keys();
    let ctx = QueryCtx {
        limits: &limits,
        store: &pinned,
        node: 1,
        now_ms: 0,
        keys: &keys,
    };
    let mut out = Vec::new();
    // Input after the SUBSCRIBE is not read: the driver owns the connection from there.
    let mut with_more = input.to_vec();
    with_more.extend_from_slice(&VECTOR_QUERY);
    let o = s.handle_input(&with_more, 16, &ctx, &mut out).unwrap();
    assert_eq!(o.consumed, input.len());
    assert_eq!(out, hex!("00000006 02 02 0001 03e8"), "WELCOME only");
    assert_eq!(
        s.take_subscription(),
        Some(Subscription {
            req_id: 9,
            resume: b"e1".to_vec(),
            ids: vec![Sid::new(10086).unwrap()],
        })
    );
    assert_eq!(s.take_subscription(), None);
    // Over the batch limit or with id 0: REJECT, the connection stays open.
    let mut s = QuerySession::default();
    let mut zero = input[..28].to_vec();
    zero.extend_from_slice(&hex!("00000012 20 00000009 02 6531 0001 0000000000000000"));
    let mut out = Vec::new();
    let o = s.handle_input(&zero, 16, &ctx, &mut out).unwrap();
    assert_eq!(o.consumed, zero.len());
    assert_eq!(s.take_subscription(), None);
    let (t, b, _) = split_frame(&out[10..], 1 << 20).unwrap().unwrap();
    assert!(matches!(
        ServerFrame::decode(t, b).unwrap(),
        ServerFrame::Reject {
            req_id: 9,
            code: 6,
            ..
        }
    ));
    // The codec side of the same frames.
    let (t, b, _) = split_frame(&input[28..], 1 << 20).unwrap().unwrap();
    assert_eq!(
        ClientFrame::decode(t, b).unwrap(),
        ClientFrame::Subscribe {
            req_id: 9,
            resume: b"e1".to_vec(),
            ids: vec![10086],
        }
    );
    let fresh = hex!("00000010 20 00000009 00 0001 0000000000002766");
    let (t, b, _) = split_frame(&fresh, 1 << 20).unwrap().unwrap();
    assert_eq!(
        ClientFrame::decode(t, b).unwrap(),
        ClientFrame::Subscribe {
            req_id: 9,
            resume: Vec::new(),
            ids: vec![10086],
        }
    );
}

//= docs/protocols/query.md#vector-5-event-and-reset
#[test]
fn vector_event_and_reset() {
    let store = vector_store();
    let status = store.pin().status(Sid::new(10086).unwrap());
    let event = ServerFrame::Event {
        req_id: 9,
        event_id: b"e1".to_vec(),
        status,
    };
    let reset = ServerFrame::Reset {
        req_id: 9,
        message: "expired".into(),
    };
    let mut out = Vec::new();
    event.encode(&mut out);
    reset.encode(&mut out);
    let expected = hex!(
        "00000022 21 00000009 02 6531 0000000000002766 07 02 0000019ab6c43c00 0000000000000001"
        "0000000e 22 00000009 0007 65787069726564"
    );
    assert_eq!(out, expected);
    let (t, b, n) = split_frame(&expected, 1 << 20).unwrap().unwrap();
    assert_eq!(ServerFrame::decode(t, b).unwrap(), event);
    let (t, b, _) = split_frame(&expected[n..], 1 << 20).unwrap().unwrap();
    assert_eq!(ServerFrame::decode(t, b).unwrap(), reset);
}

#[test]
fn watch_and_query_frames_stay_in_their_mode() {
    let store = Store::default();
    let mut input = Vec::new();
    ClientFrame::Hello(Hello::V1).encode(&mut input);
    ClientFrame::Subscribe {
        req_id: 1,
        resume: Vec::new(),
        ids: vec![1],
    }
    .encode(&mut input);
    let (out, r) = serve(&store, &input);
    assert_eq!(
        r,
        Err(QueryError::Protocol("SUBSCRIBE on a query connection"))
    );
    assert!(matches!(out[1], ServerFrame::Error { code: 5, .. }));
    let mut input = Vec::new();
    ClientFrame::Hello(Hello::V2 {
        mode: Mode::Watch,
        key: Vec::new(),
    })
    .encode(&mut input);
    ClientFrame::Query {
        req_id: 1,
        ids: vec![1],
    }
    .encode(&mut input);
    let (out, r) = serve(&store, &input);
    assert!(matches!(out[0], ServerFrame::Welcome { version: 2, .. }));
    assert_eq!(r, Err(QueryError::Protocol("QUERY on a watch connection")));
}

#[test]
fn bad_versions_modes_and_event_ids_do_not_decode() {
    let store = Store::default();
    let (out, _) = serve(&store, &hex!("00000006 01 50525351 03"));
    assert!(matches!(out[..], [ServerFrame::Error { code: 2, .. }]));
    let (out, _) = serve(&store, &hex!("00000008 01 50525351 02 02 00"));
    assert!(matches!(out[..], [ServerFrame::Error { code: 1, .. }]));
    // Key length beyond the body.
    let (out, _) = serve(&store, &hex!("00000008 01 50525351 02 00 05"));
    assert!(matches!(out[..], [ServerFrame::Error { code: 1, .. }]));
    // A resume id of 65 bytes.
    let mut sub = hex!("0000004f 20 00000001 41").to_vec();
    sub.extend_from_slice(&[b'x'; 65]);
    sub.extend_from_slice(&hex!("0001 0000000000000001"));
    let (t, b, _) = split_frame(&sub, 1 << 20).unwrap().unwrap();
    assert_eq!(
        ClientFrame::decode(t, b),
        Err(DecodeError::Invalid("event id length"))
    );
    // An EVENT without an event id.
    let ev =
        hex!("00000020 21 00000009 00 0000000000002766 00 00 0000000000000000 0000000000000000");
    let (t, b, _) = split_frame(&ev, 1 << 20).unwrap().unwrap();
    assert!(ServerFrame::decode(t, b).is_err());
}

#[test]
fn over_limit_and_zero_ids_are_refused_per_request() {
    let store = Store::default();
    let mut input = Vec::new();
    ClientFrame::Hello(Hello::V1).encode(&mut input);
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
    fn hello_round_trips(watch in any::<bool>(), key in prop::collection::vec(any::<u8>(), 0..=255)) {
        let mode = if watch { Mode::Watch } else { Mode::Query };
        for f in [ClientFrame::Hello(Hello::V1), ClientFrame::Hello(Hello::V2 { mode, key: key.clone() })] {
            let mut out = Vec::new();
            f.encode(&mut out);
            let (t, b, n) = split_frame(&out, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(ClientFrame::decode(t, b).unwrap(), f);
        }
    }

    #[test]
    fn subscribe_round_trips(
        req_id in any::<u32>(),
        resume in prop::collection::vec(any::<u8>(), 0..=MAX_EVENT_ID),
        ids in prop::collection::vec(any::<u64>(), 0..50),
    ) {
        let f = ClientFrame::Subscribe { req_id, resume, ids };
        let mut out = Vec::new();
        f.encode(&mut out);
        let (t, b, n) = split_frame(&out, 1 << 20).unwrap().unwrap();
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(ClientFrame::decode(t, b).unwrap(), f);
    }

    #[test]
    fn event_and_reset_round_trip(
        req_id in any::<u32>(),
        event_id in prop::collection::vec(any::<u8>(), 1..=MAX_EVENT_ID),
        sid in 1..u64::MAX,
        known in any::<bool>(),
        message in "[ -~]{0,100}",
    ) {
        let sid = Sid::new(sid).unwrap();
        let status = if known {
            let store = Store::default();
            let u = Update { uid: 5, pool: 1, change: Change::Login(ClientType::Pc), ext: None };
            store.pin().apply(sid, Stamp::new(7 << 16, 1), &u);
            let status = store.pin().status(sid);
            status
        } else {
            Status::unknown(sid)
        };
        for f in [
            ServerFrame::Event { req_id, event_id: event_id.clone(), status: status.clone() },
            ServerFrame::Reset { req_id, message: message.clone() },
        ] {
            let mut out = Vec::new();
            f.encode(&mut out);
            let (t, b, n) = split_frame(&out, 1 << 20).unwrap().unwrap();
            prop_assert_eq!(n, out.len());
            prop_assert_eq!(ServerFrame::decode(t, b).unwrap(), f);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        crate::fuzzing::batch_query(&bytes);
    }
}
