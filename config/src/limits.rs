//! [`Limits`]: everything a peer (a pool, a web platform, another node) can make a node allocate
//! or wait for, with the defaults that apply when `<limits>` leaves an attribute out.
//!
//! This module only holds the values. The `<limits>` attribute names and their accepted ranges
//! are in `parse.rs` (`Parser::limits`); the drivers in `presenced-frontends` turn these values
//! into the limits structs of the `presenced-core` codecs and sessions.
//!
//! API Boundary: every limit a peer can hit is a field here; no driver or codec hard-codes one.

/// Resource limits (`<limits>`): everything a peer can make the server allocate or wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest binary frame, in bytes (pool and query protocols).
    pub max_frame_bytes: u32,
    /// Most events in one pool `EVENTS` frame.
    pub max_events_per_frame: u16,
    /// Most ids in one batch query (all front ends).
    pub batch_limit: u16,
    /// Most extension entries per user.
    pub max_ext_entries: usize,
    /// Longest extension key, in bytes (1 to 255).
    pub max_ext_key_bytes: usize,
    /// Longest extension value, in bytes.
    pub max_ext_value_bytes: usize,
    /// Most distinct users one pool snapshot may list (each costs a set entry until the
    /// snapshot ends); a pool that lists more is closed.
    pub max_snapshot_users: usize,
    /// Largest replication frame accepted from a peer, in bytes. At least 32 MiB, because a
    /// sender's largest frame is about 20 MiB (`docs/protocols/replication.md`, "Frame size").
    pub repl_max_frame_bytes: u32,
    /// Most members a peer may gossip in one replication `HEARTBEAT`. At least the number of
    /// nodes in the file, so that every configured peer's heartbeats are accepted.
    pub max_gossip_members: usize,
    /// Most open connections per listener (pool, query, http and sync each their own); further
    /// ones are closed at accept.
    pub max_connections: usize,
    /// Most open connections from one client address per listener (the address a PROXY
    /// protocol header names, where one is expected).
    pub max_connections_per_address: usize,
    /// Pool, query and sync connections that have not completed their handshake this long after
    /// accept are closed, whatever they trickle.
    pub handshake_timeout_ms: u64,
    /// Unsent output bytes across all client connections of the node; above it, the
    /// connections holding the most are cut first.
    pub output_budget_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_ms: u64,
    /// Largest HTTP request head (request line and headers), in bytes.
    pub http_max_head_bytes: usize,
    /// Most HTTP request headers.
    pub http_max_headers: usize,
    /// Longest request target, in bytes.
    pub http_max_uri_bytes: usize,
    /// Largest HTTP request body, in bytes.
    pub http_max_body_bytes: usize,
    /// Time allowed to receive a whole request head once its first byte arrived.
    pub http_head_timeout_ms: u64,
    /// Time allowed to receive a whole body once the head arrived.
    pub http_body_timeout_ms: u64,
    /// Deepest XML nesting accepted in a SOAP request.
    pub xml_max_depth: usize,
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Unsent output bytes per client connection after which the node stops reading that
    /// connection (a peer that sends requests and never reads the answers).
    pub max_output_bytes: usize,
    /// Output bytes buffered for one replication peer after which the node generates no more
    /// data frames for it (a slow or stopped peer).
    pub repl_congestion_bytes: usize,
    /// Users the store is sized for at start (it grows beyond; a memory/speed trade-off).
    pub initial_users: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_events_per_frame: 4096,
            batch_limit: 1000,
            max_ext_entries: 16,
            max_ext_key_bytes: 64,
            max_ext_value_bytes: 256,
            // Same as `presenced_core::proto::pool_session::DEFAULT_MAX_SNAPSHOT`.
            max_snapshot_users: 50_000_000,
            // Same as `presenced_core::cluster::repl::MAX_FRAME`.
            repl_max_frame_bytes: 64 << 20,
            // Same as `presenced_core::cluster::repl::MAX_MEMBERS`.
            max_gossip_members: 1024,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            handshake_timeout_ms: 5_000,
            output_budget_bytes: 256 << 20,
            idle_timeout_ms: 60_000,
            http_max_head_bytes: 16 * 1024,
            http_max_headers: 64,
            http_max_uri_bytes: 8 * 1024,
            http_max_body_bytes: 1 << 20,
            http_head_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            xml_max_depth: 32,
            workers: 0,
            max_output_bytes: 4 << 20,
            repl_congestion_bytes: 8 << 20,
            initial_users: 1 << 20,
        }
    }
}
