//! Target `cluster_node`: one [`ClusterNode`] driven by arbitrary sequences of replication frames
//! from several fake peers, time-sync datagrams, timer ticks and local updates, checking after
//! every step the invariants a hostile peer must not break: no panic, terms only grow and stay
//! below the ceiling, members stay within the cap, queues stay bounded, and once this node's
//! clock is confirmed no remote stamp moves its HLC beyond cluster time plus the drift bound.
//!
//! Input format (each step): one op byte, then the op's bytes.
//!
//! - `op % 4 == 0`: a frame (`length`, type, body, as on the wire) from fake peer slot
//!   `(op >> 2) % 4`; a slot that has not said `HELLO` is `AwaitHello`.
//! - `op % 4 == 1`: a datagram: one length byte, then that many bytes.
//! - `op % 4 == 2`: time advances by `(op >> 2)` × 10 ms, then the timers run.
//! - `op % 4 == 3`: a local update of user `(op >> 2) + 1`.

use crate::cluster::node::{ClusterNode, Conn, Ctx, Now, Timing, Verdict, TERM_CEILING};
use crate::cluster::repl::{Msg, NodeInfo};
use crate::cluster::timesync::Packet;
use crate::model::{Change, ClientType, Update};
use crate::wire::split_frame;
use crate::{Hlc, Sid, Store};

const MAX_MEMBERS: usize = 8;
const TIMING: Timing = Timing {
    heartbeat_us: 50_000,
    down_after_us: 400_000,
    sync_interval_us: 100_000,
    tolerance_us: 2_000,
    flush_us: 2_000,
    max_drift_us: 5_000_000,
};

fn info(id: u16) -> NodeInfo {
    NodeInfo {
        id,
        host: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        pool_port: id,
        query_port: id,
        sync_port: id,
        time_port: id,
        http_port: id,
    }
}

/// The target's body.
pub fn cluster_node(data: &[u8]) {
    let start = 1_764_000_000_000_000i64;
    let mut now = Now {
        mono_us: 0,
        wall_us: start,
    };
    // Node 5 of a file naming 1, 2 and 5: the committed vectors' HELLO (from node 1) is accepted.
    let me = 5;
    let mut node = ClusterNode::new(
        info(me),
        "demo".into(),
        &[info(1), info(2), info(me)],
        TIMING,
        7,
        now,
    );
    node.set_max_members(MAX_MEMBERS);
    let store = Store::default();
    let hlc = Hlc::new(me);
    let ctx = Ctx {
        store: &store,
        hlc: &hlc,
        appliers: None,
    };
    let mut conns = [Conn::AwaitHello; 4];
    let mut last_term = node.term();
    let mut rest = data;
    let mut steps = 0;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        steps += 1;
        if steps > 512 {
            break;
        }
        let hlc_before = hlc.now(0).hlc();
        let confirmed = node.clock_confirmed();
        let ceiling = node.stamp_ceiling_at(now);
        match op % 4 {
            0 => {
                let Ok(Some((ty, body, n))) = split_frame(rest, 1 << 20) else {
                    break;
                };
                let msg = Msg::decode(ty, body);
                rest = &rest[n..];
                let slot = usize::from(op >> 2) % conns.len();
                if let Ok(msg) = msg {
                    match node.handle_frame(now, conns[slot], msg, &ctx) {
                        Verdict::Accepted { peer, .. } => conns[slot] = Conn::In(peer),
                        Verdict::Refuse { .. } | Verdict::Close { .. } => {
                            conns[slot] = Conn::AwaitHello;
                        }
                        Verdict::Continue => {}
                    }
                }
            }
            1 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let len = usize::from(len).min(tail.len());
                if let Ok((p, env)) = Packet::decode(&tail[..len]) {
                    node.handle_datagram(now, p, env);
                }
                rest = &tail[len..];
            }
            2 => {
                let step = u64::from(op >> 2) * 10_000;
                now.mono_us += step;
                now.wall_us += step as i64;
                node.handle_timeout(now, &ctx);
            }
            _ => {
                let sid = Sid::new(u64::from(op >> 2) + 1).unwrap_or(Sid::MIN);
                let ms = (node.cluster_us(now).max(0) / 1000) as u64;
                let u = Update {
                    uid: sid.get(),
                    pool: 1,
                    change: Change::Login(ClientType::Pc),
                    ext: None,
                };
                store.pin().apply(sid, hlc.now(ms), &u);
                node.handle_local_updates(now, &[sid]);
            }
        }
        // Whatever the node wants sent goes nowhere.
        while node.poll_transmit(now, &ctx).is_some() {}
        while node.poll_datagram().is_some() {}
        while node.poll_event().is_some() {}
        node.take_lag_samples();
        // Invariants.
        let term = node.term();
        assert!(term >= last_term, "term went back: {last_term} -> {term}");
        assert!(term <= TERM_CEILING, "term {term} above the ceiling");
        last_term = term;
        let members = node.members().count();
        assert!(members <= MAX_MEMBERS, "{members} members");
        if confirmed {
            let after = hlc.now(0).hlc();
            // +2: the two reads of the clock above.
            assert!(
                after <= hlc_before.max(ceiling).saturating_add(2),
                "a remote stamp moved the HLC beyond the drift bound"
            );
        }
    }
}
