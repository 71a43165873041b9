//! Bodies of the cargo-fuzz targets in `fuzz/`, kept here so that `cargo test` compiles them and
//! replays their corpora (`tests/fuzz_corpus.rs`). Each checks properties, not just "no panic":
//! whatever decodes re-encodes to the same bytes, and nothing consumes more than it was given.

#![doc(hidden)]
// A harness: its assertions are the property checks, and it only slices what split_frame
// returned as in bounds.
#![allow(clippy::indexing_slicing, clippy::panic)]

mod cluster;

pub use cluster::cluster_node;

use crate::proto::{pool, query};
use crate::wire::split_frame;

/// Target `ingest_frame`: the pool protocol's client frames.
pub fn ingest_frame(data: &[u8]) {
    let limits = pool::PoolLimits {
        max_frame: 1 << 16,
        ..Default::default()
    };
    let mut rest = data;
    while let Ok(Some((ty, body, n))) = split_frame(rest, limits.max_frame) {
        assert!(n <= rest.len());
        if let Ok(frame) = pool::ClientFrame::decode(ty, body, &limits) {
            let mut again = Vec::new();
            frame.encode(&mut again);
            assert_eq!(again, rest[..n], "re-encoding differs");
        }
        rest = &rest[n..];
    }
    // The server side as a whole must not panic either.
    let store = crate::Store::default();
    let hlc = crate::Hlc::new(1);
    let streams = crate::proto::pool_session::Streams::default();
    let pinned = store.pin();
    let mut changed = Vec::new();
    let mut ctx = crate::proto::pool_session::PoolCtx {
        store: &pinned,
        hlc: &hlc,
        streams: &streams,
        now_ms: 1,
        token: None,
        changed: &mut changed,
    };
    let mut s = crate::proto::pool_session::PoolSession::new(limits).with_max_snapshot(64);
    let mut out = Vec::new();
    if let Ok(o) = s.handle_input(data, usize::MAX, &mut ctx, &mut out) {
        assert!(o.consumed <= data.len());
    }
}

/// Target `batch_query`: the query protocol, both directions.
pub fn batch_query(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((ty, body, n))) = split_frame(rest, 1 << 16) {
        if let Ok(f) = query::ClientFrame::decode(ty, body) {
            let mut again = Vec::new();
            f.encode(&mut again);
            assert_eq!(again, rest[..n], "re-encoding differs");
        }
        // Server frames must decode without panicking too (the client library reads them).
        let _ = query::ServerFrame::decode(ty, body);
        rest = &rest[n..];
    }
    // The server side, open and with an API key (v1, v2, watch mode and SUBSCRIBE paths).
    let store = crate::Store::default();
    let limits = query::QueryLimits {
        max_frame: 1 << 16,
        max_batch: 100,
    };
    let pinned = store.pin();
    let open = crate::auth::ApiKeys::default();
    let keyed = crate::auth::ApiKeys::new([("k".to_owned(), b"0123456789abcdef".to_vec())]);
    for keys in [&open, &keyed] {
        let mut out = Vec::new();
        let ctx = query::QueryCtx {
            limits: &limits,
            store: &pinned,
            node: 1,
            now_ms: 1,
            keys,
        };
        let r = query::QuerySession::default().handle_input(data, 64, &ctx, &mut out);
        if let Ok(o) = r {
            assert!(o.consumed <= data.len());
        }
        // Whatever the server wrote decodes as server frames.
        let mut rest = &out[..];
        while let Ok(Some((ty, body, n))) = split_frame(rest, u32::MAX) {
            assert!(
                query::ServerFrame::decode(ty, body).is_ok(),
                "server frame 0x{ty:02x}"
            );
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "server output ends mid-frame");
    }
}

/// Target `repl_message`: replication frames.
pub fn repl_message(data: &[u8]) {
    use crate::cluster::repl::{Msg, ReplLimits};
    let limits = ReplLimits::default();
    let mut rest = data;
    while let Ok(Some((ty, body, n))) = split_frame(rest, limits.max_frame) {
        if let Ok(m) = Msg::decode_with_limits(ty, body, &limits) {
            let mut again = Vec::new();
            m.encode(&mut again);
            // ERROR frames truncate long messages and map unknown codes; all others are exact.
            if ty != crate::proto::ERROR {
                assert_eq!(again, rest[..n], "re-encoding differs");
            }
        }
        rest = &rest[n..];
    }
}

/// Target `timesync_packet`: time-sync datagrams.
pub fn timesync_packet(data: &[u8]) {
    use crate::cluster::auth::{ClusterKey, TAG_LEN};
    use crate::cluster::timesync::Packet;
    if let Ok((p, env)) = Packet::decode(data) {
        let mut again = Vec::new();
        p.encode(env, None, &mut again);
        let signed = data.len() - TAG_LEN;
        assert_eq!(again[..signed], data[..signed], "re-encoding differs");
        // A datagram whose tag verifies under a key re-encodes to the same bytes, tag included;
        // any other tag fails to verify.
        let key = ClusterKey::new(b"fuzzing secret, 32 bytes or more").time_key();
        let mut sealed = Vec::new();
        p.encode(env, Some(&key), &mut sealed);
        assert!(key.verify(&sealed).is_ok());
        assert_eq!(key.verify(data).is_ok(), sealed == data);
    }
}

/// Target `proxy_header`: PROXY protocol v1/v2 headers at the start of a connection.
pub fn proxy_header(data: &[u8]) {
    use crate::proto::proxy::{decode, ProxyHeader, MAX_HEADER};
    let Ok(Some((h, n))) = decode(data) else {
        return;
    };
    assert!(
        n <= data.len() && n <= MAX_HEADER,
        "consumed {n} of {}",
        data.len()
    );
    // Whatever decodes re-encodes (v2 carries every kind of header) to a header that decodes
    // the same; v1 too, but for LOCAL, which v1 writes as UNKNOWN.
    let mut again = Vec::new();
    h.encode_v2(&mut again);
    assert_eq!(
        decode(&again),
        Ok(Some((h, again.len()))),
        "v2 re-encoding differs"
    );
    again.clear();
    h.encode_v1(&mut again);
    let v1 = if h == ProxyHeader::LOCAL {
        ProxyHeader::UNKNOWN
    } else {
        h
    };
    assert_eq!(
        decode(&again),
        Ok(Some((v1, again.len()))),
        "v1 re-encoding differs"
    );
}
