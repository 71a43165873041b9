//! The pool session against an in-memory node: handshake, acks, re-sends, snapshots, budget.

use super::*;
use crate::model::ClientType;
use crate::proto::pool::ServerFrame;
use crate::store::Store;

struct Node {
    store: Store,
    hlc: Hlc,
    streams: Streams,
}

impl Node {
    fn new() -> Self {
        Self {
            store: Store::default(),
            hlc: Hlc::new(1),
            streams: Streams::default(),
        }
    }

    /// Feeds frames with cluster time `now_ms` and no token.
    fn feed_at(
        &self,
        s: &mut PoolSession,
        frames: &[ClientFrame],
        now_ms: u64,
    ) -> (Vec<ServerFrame>, Result<Outcome, SessionError>) {
        self.feed_with(s, frames, None, now_ms)
    }

    /// Feeds frames to a session; returns the server frames or the error.
    fn feed(
        &self,
        s: &mut PoolSession,
        frames: &[ClientFrame],
        token: Option<&[u8]>,
    ) -> (Vec<ServerFrame>, Result<Outcome, SessionError>) {
        self.feed_with(s, frames, token, 1_764_000_000_000)
    }

    /// Feeds frames with `token` at cluster time `now_ms`.
    fn feed_with(
        &self,
        s: &mut PoolSession,
        frames: &[ClientFrame],
        token: Option<&[u8]>,
        now_ms: u64,
    ) -> (Vec<ServerFrame>, Result<Outcome, SessionError>) {
        let mut input = Vec::new();
        for f in frames {
            f.encode(&mut input);
        }
        let pinned = self.store.pin();
        let mut changed = Vec::new();
        let mut ctx = PoolCtx {
            store: &pinned,
            hlc: &self.hlc,
            streams: &self.streams,
            now_ms,
            token,
            changed: &mut changed,
        };
        let mut out = Vec::new();
        let r = s.handle_input(&input, usize::MAX, &mut ctx, &mut out);
        let mut frames = Vec::new();
        let mut rest = &out[..];
        while let Some((t, b, n)) = split_frame(rest, 1 << 20).unwrap() {
            frames.push(ServerFrame::decode(t, b).unwrap());
            rest = &rest[n..];
        }
        (frames, r)
    }
}

fn hello(stream: u64, token: &[u8]) -> ClientFrame {
    ClientFrame::Hello(Hello {
        pool: 1,
        stream,
        resume_from: 1,
        token: token.to_vec(),
    })
}

fn login(sid: u64, client: ClientType) -> Event {
    Event::Login {
        sid: Sid::new(sid).unwrap(),
        uid: sid,
        client,
        ext: None,
    }
}

fn online(n: &Node, sid: u64) -> bool {
    n.store.pin().status(Sid::new(sid).unwrap()).online
}

#[test]
fn handshake_events_and_cumulative_ack() {
    let n = Node::new();
    let mut s = PoolSession::new(PoolLimits::default());
    let (out, r) = n.feed(
        &mut s,
        &[
            hello(9, b""),
            ClientFrame::Events {
                first_seq: 1,
                events: vec![login(5, ClientType::Pc), login(6, ClientType::Web)],
            },
        ],
        None,
    );
    assert_eq!(r.unwrap().events, 2);
    assert_eq!(
        out,
        [
            ServerFrame::Welcome {
                version: 1,
                node: 1,
                applied: 0
            },
            ServerFrame::Ack(2)
        ]
    );
    assert!(online(&n, 5) && online(&n, 6));
}

#[test]
fn resent_events_are_skipped_and_reported_in_welcome() {
    let n = Node::new();
    let batch = ClientFrame::Events {
        first_seq: 1,
        events: vec![login(5, ClientType::Pc)],
    };
    n.feed(
        &mut PoolSession::new(PoolLimits::default()),
        &[hello(9, b""), batch.clone()],
        None,
    )
    .1
    .unwrap();
    let (out, r) = n.feed(
        &mut PoolSession::new(PoolLimits::default()),
        &[hello(9, b""), batch],
        None,
    );
    let o = r.unwrap();
    assert_eq!(o.events, 0, "a re-sent event is not applied twice");
    assert_eq!(o.duplicates, 1, "and it is counted as a duplicate");
    assert_eq!(
        out,
        [
            ServerFrame::Welcome {
                version: 1,
                node: 1,
                applied: 1
            },
            ServerFrame::Ack(1)
        ]
    );
}

#[test]
fn wrong_token_and_frames_before_hello_close_the_session() {
    let n = Node::new();
    let (out, r) = n.feed(
        &mut PoolSession::new(PoolLimits::default()),
        &[hello(1, b"x")],
        Some(b"y"),
    );
    assert_eq!(r, Err(SessionError::Auth));
    assert!(matches!(out[..], [ServerFrame::Error { code: 3, .. }]));
    let (_, r) = n.feed(
        &mut PoolSession::new(PoolLimits::default()),
        &[ClientFrame::Ping(1)],
        None,
    );
    assert_eq!(r, Err(SessionError::Protocol("expected HELLO")));
}

#[test]
fn sequence_going_back_is_a_protocol_error() {
    let n = Node::new();
    let e = || vec![login(5, ClientType::Pc)];
    let (_, r) = n.feed(
        &mut PoolSession::new(PoolLimits::default()),
        &[
            hello(1, b""),
            ClientFrame::Events {
                first_seq: 5,
                events: e(),
            },
            ClientFrame::Events {
                first_seq: 5,
                events: e(),
            },
        ],
        None,
    );
    assert_eq!(
        r,
        Err(SessionError::Protocol("sequence numbers must increase"))
    );
}

#[test]
fn snapshot_logs_out_users_the_pool_no_longer_lists() {
    let n = Node::new();
    let mut s = PoolSession::new(PoolLimits::default());
    n.feed(
        &mut s,
        &[
            hello(1, b""),
            ClientFrame::Events {
                first_seq: 1,
                events: vec![login(5, ClientType::Pc), login(6, ClientType::Pc)],
            },
        ],
        None,
    )
    .1
    .unwrap();
    let (_, r) = n.feed(
        &mut s,
        &[ClientFrame::Events {
            first_seq: 3,
            events: vec![
                Event::SnapshotBegin,
                login(6, ClientType::Mobile),
                Event::SnapshotEnd,
            ],
        }],
        None,
    );
    r.unwrap();
    assert!(!online(&n, 5), "5 was not in the snapshot");
    assert!(online(&n, 6));
    // A re-sent end marker with no snapshot in progress is harmless.
    let (_, r) = n.feed(
        &mut s,
        &[ClientFrame::Events {
            first_seq: 6,
            events: vec![Event::SnapshotEnd],
        }],
        None,
    );
    assert_eq!(r.unwrap().events, 1);
    assert!(online(&n, 6));
}

#[test]
fn a_snapshot_survives_a_reconnect() {
    let n = Node::new();
    let mut a = PoolSession::new(PoolLimits::default());
    n.feed(
        &mut a,
        &[
            hello(1, b""),
            ClientFrame::Events {
                first_seq: 1,
                events: vec![
                    login(5, ClientType::Pc),
                    login(6, ClientType::Pc),
                    login(7, ClientType::Pc),
                    Event::SnapshotBegin,
                    login(6, ClientType::Pc),
                ],
            },
        ],
        None,
    )
    .1
    .unwrap();
    let mut b = PoolSession::new(PoolLimits::default());
    let (_, r) = n.feed(
        &mut b,
        &[
            hello(1, b""),
            ClientFrame::Events {
                first_seq: 6,
                events: vec![login(7, ClientType::Web), Event::SnapshotEnd],
            },
        ],
        None,
    );
    r.unwrap();
    // 7 was listed on the second connection: the snapshot continued across the reconnect.
    assert!(!online(&n, 5) && online(&n, 6) && online(&n, 7));
}

#[test]
fn frame_budget_leaves_the_rest_for_later() {
    let n = Node::new();
    let mut s = PoolSession::new(PoolLimits::default());
    let mut input = Vec::new();
    hello(1, b"").encode(&mut input);
    ClientFrame::Ping(3).encode(&mut input);
    let pinned = n.store.pin();
    let mut changed = Vec::new();
    let mut ctx = PoolCtx {
        store: &pinned,
        hlc: &n.hlc,
        streams: &n.streams,
        now_ms: 0,
        token: None,
        changed: &mut changed,
    };
    let mut out = Vec::new();
    let o = s.handle_input(&input, 1, &mut ctx, &mut out).unwrap();
    assert!(o.more && o.consumed < input.len());
    let o2 = s
        .handle_input(&input[o.consumed..], 1, &mut ctx, &mut out)
        .unwrap();
    assert_eq!(o.consumed + o2.consumed, input.len());
}

#[test]
fn snapshot_limit_comes_from_the_builder() {
    let n = Node::new();
    let mut s = PoolSession::new(PoolLimits::default()).with_max_snapshot(2);
    let (_, r) = n.feed(
        &mut s,
        &[
            hello(1, b""),
            ClientFrame::Events {
                first_seq: 1,
                events: vec![
                    Event::SnapshotBegin,
                    login(5, ClientType::Pc),
                    login(6, ClientType::Pc),
                    login(5, ClientType::Web),
                    login(7, ClientType::Pc),
                ],
            },
        ],
        None,
    );
    assert_eq!(
        r,
        Err(SessionError::Protocol("snapshot lists too many users")),
        "a third distinct user is one too many; listing 5 again is not"
    );
}

/// `SNAPSHOT_END` over a million records does bounded work per call: the sweep walks at most
/// [`SWEEP_PER_CALL`] records each time, the rest of its frame and later frames wait, and the
/// acks come out once, in order, after the sweep (it used to walk the whole store in one call).
#[test]
fn end_snapshot_over_a_million_records_is_chunked_and_acks_stay_in_order() {
    const USERS: u64 = 1_000_000;
    let mut n = Node::new();
    n.store = Store::with_capacity(USERS as usize);
    {
        let pinned = n.store.pin();
        for sid in 1..=USERS {
            let update = Update {
                uid: sid,
                pool: 1,
                change: Change::Login(ClientType::Pc),
                ext: None,
            };
            pinned.apply(Sid::new(sid).unwrap(), n.hlc.now(1_000), &update);
        }
    }
    let mut s = PoolSession::new(PoolLimits::default());
    let mut input = Vec::new();
    hello(1, b"").encode(&mut input);
    ClientFrame::Events {
        first_seq: 1,
        events: vec![
            Event::SnapshotBegin,
            login(7, ClientType::Pc),
            Event::SnapshotEnd,
            // After the end in the same frame: must not be swept away.
            login(9, ClientType::Mobile),
        ],
    }
    .encode(&mut input);
    ClientFrame::Ping(42).encode(&mut input);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut calls = 0;
    loop {
        let pinned = n.store.pin();
        let mut changed = Vec::new();
        let mut ctx = PoolCtx {
            store: &pinned,
            hlc: &n.hlc,
            streams: &n.streams,
            now_ms: 1_764_000_000_000,
            token: None,
            changed: &mut changed,
        };
        let before = n.store.scanned();
        let o = s
            .handle_input(&input[offset..], usize::MAX, &mut ctx, &mut out)
            .unwrap();
        let work = n.store.scanned() - before;
        assert!(
            work <= SWEEP_PER_CALL as u64,
            "one call walked {work} records"
        );
        offset += o.consumed;
        calls += 1;
        if !o.more && offset == input.len() {
            break;
        }
    }
    assert!(calls > (USERS as usize) / SWEEP_PER_CALL);
    let mut frames = Vec::new();
    let mut rest = &out[..];
    while let Some((t, b, k)) = split_frame(rest, 1 << 20).unwrap() {
        frames.push(ServerFrame::decode(t, b).unwrap());
        rest = &rest[k..];
    }
    assert!(matches!(frames[0], ServerFrame::Welcome { .. }));
    assert_eq!(frames[1..], [ServerFrame::Ack(4), ServerFrame::Pong(42)]);
    assert!(online(&n, 7) && online(&n, 9));
    assert!(!online(&n, 1) && !online(&n, USERS));
}

mod interleaved {
    //! Events of several pools and streams, interleaved differently on two nodes (with re-sent
    //! frames), then replicated both ways: the merge stays a join, so both nodes end equal, and
    //! merging is order-independent and idempotent.

    use proptest::prelude::*;

    use super::*;

    fn arb_event() -> impl Strategy<Value = Event> {
        (1u64..6, 0usize..6, 0u8..3).prop_map(|(sid, c, kind)| {
            let sid_ = Sid::new(sid).unwrap();
            let client = ClientType::ALL[c];
            match kind {
                0 => Event::Login {
                    sid: sid_,
                    uid: sid,
                    client,
                    ext: None,
                },
                1 => Event::Logout {
                    sid: sid_,
                    uid: sid,
                    client,
                    ext: None,
                },
                _ => Event::Permission {
                    sid: sid_,
                    uid: sid,
                    allow: c % 2 == 0,
                    ext: None,
                },
            }
        })
    }

    /// Feeds `(stream index, frame of events)` in `order` to a node: each stream is one pool
    /// connection; a frame may be sent twice (a re-send), which must change nothing.
    fn run(streams: &[Vec<Vec<Event>>], order: &[(usize, bool)], now_ms: u64) -> Node {
        let n = Node::new();
        let mut sessions: Vec<PoolSession> = streams
            .iter()
            .map(|_| PoolSession::new(PoolLimits::default()))
            .collect();
        let mut next: Vec<(usize, u64)> = vec![(0, 1); streams.len()];
        for (i, s) in sessions.iter_mut().enumerate() {
            // Pools 1 and 2, two streams each.
            let hello = ClientFrame::Hello(Hello {
                pool: 1 + (i as u32 % 2),
                stream: 100 + i as u64,
                resume_from: 1,
                token: Vec::new(),
            });
            n.feed_at(s, &[hello], now_ms).1.unwrap();
        }
        for (k, (i, resend)) in order.iter().enumerate() {
            let i = *i % streams.len();
            let (frame, seq) = next[i];
            let Some(events) = streams[i].get(frame) else {
                continue;
            };
            let f = ClientFrame::Events {
                first_seq: seq,
                events: events.clone(),
            };
            n.feed_at(
                &mut sessions[i],
                std::slice::from_ref(&f),
                now_ms + k as u64,
            )
            .1
            .unwrap();
            if *resend {
                // The same frame again, on a new connection of the same stream.
                let mut again = PoolSession::new(PoolLimits::default());
                let hello = ClientFrame::Hello(Hello {
                    pool: 1 + (i as u32 % 2),
                    stream: 100 + i as u64,
                    resume_from: seq,
                    token: Vec::new(),
                });
                n.feed_at(&mut again, &[hello, f], now_ms + k as u64)
                    .1
                    .unwrap();
            }
            next[i] = (frame + 1, seq + events.len() as u64);
        }
        n
    }

    fn merge_into(to: &Store, from: &Store) {
        let p = from.pin();
        let t = to.pin();
        p.for_each(|sid, r| {
            t.merge(sid, r);
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn pools_and_streams_interleaved_converge(
            streams in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(arb_event(), 1..4), 1..5),
                2..5,
            ),
            order_a in prop::collection::vec((0usize..8, any::<bool>()), 0..40),
            order_b in prop::collection::vec((0usize..8, any::<bool>()), 0..40),
        ) {
            let a = run(&streams, &order_a, 1_764_000_000_000);
            let b = run(&streams, &order_b, 1_764_000_000_500);
            // Replicated both ways, in either order: the same state.
            let ab = Store::default();
            merge_into(&ab, &a.store);
            merge_into(&ab, &b.store);
            let ba = Store::default();
            merge_into(&ba, &b.store);
            merge_into(&ba, &a.store);
            prop_assert_eq!(ab.digest(), ba.digest());
            // Idempotent: replicating again changes nothing.
            merge_into(&ab, &a.store);
            merge_into(&ab, &b.store);
            prop_assert_eq!(ab.digest(), ba.digest());
            // Each node converges to it once it has the other's records.
            merge_into(&a.store, &b.store);
            merge_into(&b.store, &a.store);
            prop_assert_eq!(a.store.digest(), b.store.digest());
            prop_assert_eq!(a.store.digest(), ab.digest());
        }
    }
}
