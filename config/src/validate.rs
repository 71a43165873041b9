//! Checks that span several elements of a cluster file, run once the whole document is read:
//! node ids are unique, no `(host, port)` is used twice (TCP and UDP counted separately), and
//! the gossip cap of `<limits>` admits every configured peer.
//!
//! These checks establish the invariant of [`crate::ClusterConfig`]. Errors point at the element
//! that breaks the rule (the second `<node>` using an id or port, or `<limits>`).

use std::collections::HashSet;
use std::net::IpAddr;

use crate::parse::Parser;
use crate::{ConfigError, Limits, NodeConfig};

/// Checks `nodes` (each with the byte offset of its element) against each other and against
/// `limits` (whose element starts at `limits_pos`).
pub(crate) fn check(
    p: &Parser<'_>,
    nodes: &[(NodeConfig, usize)],
    limits: &Limits,
    limits_pos: usize,
) -> Result<(), ConfigError> {
    let mut ids = HashSet::new();
    let mut tcp = HashSet::new();
    let mut udp = HashSet::new();
    for (n, pos) in nodes {
        if !ids.insert(n.id) {
            return Err(p.err(*pos, format!("duplicate node id {}", n.id)));
        }
        for port in [n.pool_port, n.query_port, n.sync_port, n.http_port] {
            if let Some(other) = clash(&tcp, n.host, port) {
                return Err(p.err(
                    *pos,
                    format!("TCP port {port} on {} is already used on {other}", n.host),
                ));
            }
            tcp.insert((n.host, port));
        }
        if let Some(other) = clash(&udp, n.host, n.time_port) {
            return Err(p.err(
                *pos,
                format!(
                    "UDP port {} on {} is already used on {other}",
                    n.time_port, n.host
                ),
            ));
        }
        udp.insert((n.host, n.time_port));
    }
    // A `HEARTBEAT` lists every member the sender knows but itself.
    let peers = nodes.len().saturating_sub(1);
    if limits.max_gossip_members < peers {
        return Err(p.err(
            limits_pos,
            format!(
                "`max-gossip-members` {} is below the {peers} peers of a node of this cluster; \
                 expected at least {peers}",
                limits.max_gossip_members
            ),
        ));
    }
    Ok(())
}

/// The address already using `port` that `host` would clash with: the same address, or any
/// address when either is unspecified (`0.0.0.0`/`::` binds every address of the machine).
fn clash(used: &HashSet<(IpAddr, u16)>, host: IpAddr, port: u16) -> Option<IpAddr> {
    used.iter()
        .find(|(h, p)| *p == port && (*h == host || h.is_unspecified() || host.is_unspecified()))
        .map(|(h, _)| *h)
}
