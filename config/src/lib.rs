//! The presenced cluster file: one XML document describing every node of a cluster
//! (patent claim 13: server addresses, data-sync port, time-sync port, publish ports, sequence
//! number), plus optional timing, limits and security sections.
//!
//! ```xml
//! <cluster name="demo">
//!   <timing heartbeat-ms="100" down-after-ms="1000" time-sync-interval-ms="1000"
//!           time-tolerance-us="1000"/>
//!   <node id="1" host="127.0.0.1" pool-port="7400" query-port="7401" sync-port="7402"
//!         time-port="7403" http-port="7480"/>
//! </cluster>
//! ```
//!
//! Parsing is strict: an unknown or duplicate element or attribute, a missing required attribute,
//! a bad number, a duplicate node id or a port used twice on one host is an error naming
//! `file:line:column` and what was expected. `DOCTYPE` and entity references are refused.
//!
//! This crate reads a string; the only I/O is [`ClusterConfig::load`], which reads the file.
//! It uses quick-xml's pull reader rather than its serde deserializer because serde errors carry
//! no position, and positions are part of the contract.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The embedded default: one node on 127.0.0.1 with the default ports.
pub const DEFAULT_XML: &str = include_str!("../default.xml");

/// Why a configuration was refused. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The path given.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The document is not a valid cluster file.
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        /// The path given (or `<embedded>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column (in bytes).
        column: usize,
        /// What was wrong and what was expected.
        message: String,
    },
}

/// Heartbeat and time-sync timing (`<timing>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Interval between heartbeats.
    pub heartbeat_ms: u64,
    /// A peer not heard from for this long is down.
    pub down_after_ms: u64,
    /// Interval between time-sync rounds.
    pub time_sync_interval_ms: u64,
    /// A follower is corrected only when its offset error exceeds this.
    pub time_tolerance_us: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            down_after_ms: 1000,
            time_sync_interval_ms: 1000,
            time_tolerance_us: 1000,
        }
    }
}

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
    /// Most open client connections per node; further ones are closed at accept.
    pub max_connections: usize,
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
            max_connections: 10_000,
            idle_timeout_ms: 60_000,
            http_max_head_bytes: 16 * 1024,
            http_max_headers: 64,
            http_max_uri_bytes: 8 * 1024,
            http_max_body_bytes: 1 << 20,
            http_head_timeout_ms: 10_000,
            http_body_timeout_ms: 30_000,
            xml_max_depth: 32,
            workers: 0,
        }
    }
}

/// Shared secrets (`<security>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// Token pools must present in their handshake (none: any pool is accepted).
    pub pool_token: Option<String>,
}

/// When a pool event is acked (`<replication ack="...">`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckPolicy {
    /// Once applied on the node that received it.
    Local,
    /// Once at least one other node has it too, whenever another node is alive (otherwise as
    /// `Local`): an acked update survives the loss of the node that received it.
    Replica,
}

/// Replication settings (`<replication>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    /// The pool ack policy (default `replica`).
    pub ack: AckPolicy,
    /// Update numbers kept for resuming peers; a peer further behind gets a full snapshot.
    pub backlog: usize,
    /// Longest time an update waits to be batched, ms.
    pub flush_ms: u64,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            ack: AckPolicy::Replica,
            backlog: 1 << 21,
            flush_ms: 2,
        }
    }
}

/// One node of the cluster (`<node>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The sequence number: unique, 1 to 65535, lower wins elections.
    pub id: u16,
    /// The address every port of this node binds to and peers connect to.
    pub host: IpAddr,
    /// Pool protocol port (TCP).
    pub pool_port: u16,
    /// Raw batch query port (TCP).
    pub query_port: u16,
    /// Replication port (TCP).
    pub sync_port: u16,
    /// Time-sync port (UDP).
    pub time_port: u16,
    /// HTTP port: JSON API, SOAP, health, metrics.
    pub http_port: u16,
}

impl NodeConfig {
    /// `host:pool_port`.
    pub fn pool_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.pool_port)
    }
    /// `host:query_port`.
    pub fn query_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.query_port)
    }
    /// `host:sync_port`.
    pub fn sync_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.sync_port)
    }
    /// `host:time_port`.
    pub fn time_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.time_port)
    }
    /// `host:http_port`.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.http_port)
    }
}

/// A whole, validated cluster file.
///
/// INVARIANT: at least one node; node ids unique and non-zero; no `(host, port)` used twice
/// (TCP and UDP ports counted separately).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    name: String,
    timing: Timing,
    limits: Limits,
    security: Security,
    replication: Replication,
    nodes: Vec<NodeConfig>,
}

impl ClusterConfig {
    /// The embedded single-node default.
    pub fn embedded_default() -> Self {
        // INVARIANT: `DEFAULT_XML` is checked by the `embedded_default_is_valid` test.
        #[allow(clippy::expect_used)]
        Self::parse(DEFAULT_XML, "<embedded>").expect("embedded default config is valid")
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses a document; `file` is only used in error messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        Parser { text, file }.parse()
    }

    /// The cluster's name (peers must present the same one).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Timing.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }
    /// Limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
    /// Security settings.
    pub fn security(&self) -> &Security {
        &self.security
    }
    /// Replication settings.
    pub fn replication(&self) -> &Replication {
        &self.replication
    }
    /// All nodes, in file order.
    pub fn nodes(&self) -> &[NodeConfig] {
        &self.nodes
    }
    /// The node with sequence number `id`.
    pub fn node(&self, id: u16) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

struct Parser<'a> {
    text: &'a str,
    file: &'a str,
}

/// One attribute with its byte offset in the document.
struct Attr {
    name: String,
    value: String,
    pos: usize,
}

/// The attributes of one element, consumed by name; leftovers are "unknown attribute" errors.
struct Attrs {
    element: &'static str,
    pos: usize,
    list: Vec<Attr>,
}

impl Parser<'_> {
    fn err(&self, pos: usize, message: impl Into<String>) -> ConfigError {
        let before = self.text.get(..pos).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    fn parse(&self) -> Result<ClusterConfig, ConfigError> {
        let mut reader = Reader::from_str(self.text);
        reader.config_mut().trim_text(true);
        let mut cluster: Option<(String, usize)> = None;
        let mut timing: Option<Timing> = None;
        let mut limits: Option<Limits> = None;
        let mut security: Option<Security> = None;
        let mut replication: Option<Replication> = None;
        let mut nodes: Vec<(NodeConfig, usize)> = Vec::new();
        let mut closed = false;
        loop {
            let pos = reader.buffer_position() as usize;
            // Trimmed white space is skipped by the reader: point at the event itself.
            let pos = pos
                + self
                    .text
                    .get(pos..)
                    .map_or(0, |t| t.len() - t.trim_start().len());
            let ev = reader.read_event().map_err(|e| {
                self.err(
                    reader.error_position() as usize,
                    format!("malformed XML: {e}"),
                )
            })?;
            let in_cluster = cluster.is_some() && !closed;
            match ev {
                Event::Eof => break,
                Event::Decl(_) | Event::Comment(_) => {}
                Event::PI(_) => {
                    return Err(self.err(pos, "processing instructions are not allowed"))
                }
                Event::DocType(_) => {
                    return Err(self.err(pos, "DOCTYPE is not allowed in a cluster file"))
                }
                Event::GeneralRef(_) | Event::Text(_) | Event::CData(_) => {
                    return Err(self.err(pos, "unexpected text; expected only elements"))
                }
                Event::Start(e) if cluster.is_none() => {
                    cluster = Some((self.cluster_start(&e, pos)?, pos));
                }
                Event::Empty(e) if cluster.is_none() => {
                    self.cluster_start(&e, pos)?;
                    return Err(self.err(pos, "<cluster> has no <node>; expected at least one"));
                }
                Event::Start(e) | Event::Empty(e) if !in_cluster => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    return Err(self.err(pos, format!("unexpected <{name}> after </cluster>")));
                }
                Event::Start(e) => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    return Err(self.err(
                        pos,
                        format!("<{name}> must be an empty element (<{name} .../>)"),
                    ));
                }
                Event::Empty(e) => {
                    let mut a = self.attrs(&e, pos)?;
                    match a.element {
                        "timing" => {
                            once(self, timing.is_some(), pos, "timing")?;
                            timing = Some(self.timing(&mut a)?);
                        }
                        "limits" => {
                            once(self, limits.is_some(), pos, "limits")?;
                            limits = Some(self.limits(&mut a)?);
                        }
                        "security" => {
                            once(self, security.is_some(), pos, "security")?;
                            security = Some(Security {
                                pool_token: a.take("pool-token").map(|x| x.value),
                            });
                        }
                        "replication" => {
                            once(self, replication.is_some(), pos, "replication")?;
                            replication = Some(self.replication(&mut a)?);
                        }
                        "node" => nodes.push((self.node(&mut a)?, pos)),
                        // `attrs` only accepts the element names matched above.
                        _ => {}
                    }
                    self.no_leftovers(a)?;
                }
                Event::End(_) => closed = true,
            }
        }
        let Some((name, cpos)) = cluster else {
            return Err(self.err(self.text.len(), "no <cluster> element"));
        };
        if !closed {
            return Err(self.err(self.text.len(), "missing </cluster>"));
        }
        if nodes.is_empty() {
            return Err(self.err(cpos, "<cluster> has no <node>; expected at least one"));
        }
        let mut ids = HashSet::new();
        let mut tcp = HashSet::new();
        let mut udp = HashSet::new();
        for (n, pos) in &nodes {
            if !ids.insert(n.id) {
                return Err(self.err(*pos, format!("duplicate node id {}", n.id)));
            }
            for p in [n.pool_port, n.query_port, n.sync_port, n.http_port] {
                if !tcp.insert((n.host, p)) {
                    return Err(self.err(*pos, format!("TCP port {p} on {} is used twice", n.host)));
                }
            }
            if !udp.insert((n.host, n.time_port)) {
                return Err(self.err(
                    *pos,
                    format!("UDP port {} on {} is used twice", n.time_port, n.host),
                ));
            }
        }
        Ok(ClusterConfig {
            name,
            timing: timing.unwrap_or_default(),
            limits: limits.unwrap_or_default(),
            security: security.unwrap_or_default(),
            replication: replication.unwrap_or_default(),
            nodes: nodes.into_iter().map(|(n, _)| n).collect(),
        })
    }

    fn cluster_start(&self, e: &BytesStart<'_>, pos: usize) -> Result<String, ConfigError> {
        if e.name().as_ref() != b"cluster" {
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            return Err(self.err(pos, format!("unexpected <{name}>; expected <cluster>")));
        }
        let mut a = self.attrs(e, pos)?;
        let name = a.required(self, "name")?.value;
        if name.is_empty() || name.len() > 64 {
            return Err(self.err(pos, "cluster name must be 1 to 64 characters"));
        }
        self.no_leftovers(a)?;
        Ok(name)
    }

    fn attrs(&self, e: &BytesStart<'_>, pos: usize) -> Result<Attrs, ConfigError> {
        let element = match e.name().as_ref() {
            b"cluster" => "cluster",
            b"timing" => "timing",
            b"limits" => "limits",
            b"security" => "security",
            b"replication" => "replication",
            b"node" => "node",
            other => {
                let name = String::from_utf8_lossy(other);
                return Err(self.err(
                    pos,
                    format!("unknown element <{name}>; expected <timing>, <limits>, <security>, <replication> or <node>"),
                ));
            }
        };
        let raw = std::str::from_utf8(e.as_ref()).unwrap_or("");
        let mut list = Vec::new();
        for a in e.attributes() {
            let a =
                a.map_err(|err| self.err(pos, format!("bad attribute on <{element}>: {err}")))?;
            let name = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let at = raw.find(&format!("{name}=")).map_or(pos, |i| pos + 1 + i);
            let value = a
                .unescape_value()
                .map_err(|err| self.err(at, format!("bad value of `{name}`: {err}")))?
                .into_owned();
            list.push(Attr {
                name,
                value,
                pos: at,
            });
        }
        Ok(Attrs { element, pos, list })
    }

    fn no_leftovers(&self, a: Attrs) -> Result<(), ConfigError> {
        match a.list.first() {
            None => Ok(()),
            Some(x) => Err(self.err(
                x.pos,
                format!(
                    "unknown attribute `{}` on <{}>; expected {}",
                    x.name,
                    a.element,
                    expected(a.element)
                ),
            )),
        }
    }

    fn timing(&self, a: &mut Attrs) -> Result<Timing, ConfigError> {
        let d = Timing::default();
        Ok(Timing {
            heartbeat_ms: a
                .num(self, "heartbeat-ms", 1, 60_000)?
                .unwrap_or(d.heartbeat_ms),
            down_after_ms: a
                .num(self, "down-after-ms", 1, 600_000)?
                .unwrap_or(d.down_after_ms),
            time_sync_interval_ms: a
                .num(self, "time-sync-interval-ms", 1, 3_600_000)?
                .unwrap_or(d.time_sync_interval_ms),
            time_tolerance_us: a
                .num(self, "time-tolerance-us", 1, 60_000_000)?
                .unwrap_or(d.time_tolerance_us),
        })
    }

    fn limits(&self, a: &mut Attrs) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let u = |x: u64| x as usize;
        Ok(Limits {
            max_frame_bytes: a
                .num(self, "max-frame-bytes", 64, 1 << 30)?
                .map_or(d.max_frame_bytes, |x| x as u32),
            max_events_per_frame: a
                .num(self, "max-events-per-frame", 1, 65_535)?
                .map_or(d.max_events_per_frame, |x| x as u16),
            batch_limit: a
                .num(self, "batch-limit", 1, 65_535)?
                .map_or(d.batch_limit, |x| x as u16),
            max_ext_entries: a
                .num(self, "max-ext-entries", 0, 255)?
                .map_or(d.max_ext_entries, u),
            max_ext_key_bytes: a
                .num(self, "max-ext-key-bytes", 1, 255)?
                .map_or(d.max_ext_key_bytes, u),
            max_ext_value_bytes: a
                .num(self, "max-ext-value-bytes", 0, 65_535)?
                .map_or(d.max_ext_value_bytes, u),
            max_connections: a
                .num(self, "max-connections", 1, 1 << 24)?
                .map_or(d.max_connections, u),
            idle_timeout_ms: a
                .num(self, "idle-timeout-ms", 100, 86_400_000)?
                .unwrap_or(d.idle_timeout_ms),
            http_max_head_bytes: a
                .num(self, "http-max-head-bytes", 256, 1 << 20)?
                .map_or(d.http_max_head_bytes, u),
            http_max_headers: a
                .num(self, "http-max-headers", 1, 1024)?
                .map_or(d.http_max_headers, u),
            http_max_uri_bytes: a
                .num(self, "http-max-uri-bytes", 16, 1 << 20)?
                .map_or(d.http_max_uri_bytes, u),
            http_max_body_bytes: a
                .num(self, "http-max-body-bytes", 0, 1 << 30)?
                .map_or(d.http_max_body_bytes, u),
            http_head_timeout_ms: a
                .num(self, "http-head-timeout-ms", 10, 3_600_000)?
                .unwrap_or(d.http_head_timeout_ms),
            http_body_timeout_ms: a
                .num(self, "http-body-timeout-ms", 10, 3_600_000)?
                .unwrap_or(d.http_body_timeout_ms),
            xml_max_depth: a
                .num(self, "xml-max-depth", 4, 256)?
                .map_or(d.xml_max_depth, u),
            workers: a.num(self, "workers", 0, 256)?.map_or(d.workers, u),
        })
    }

    fn replication(&self, a: &mut Attrs) -> Result<Replication, ConfigError> {
        let d = Replication::default();
        let ack = match a.take("ack") {
            None => d.ack,
            Some(x) => match x.value.as_str() {
                "local" => AckPolicy::Local,
                "replica" => AckPolicy::Replica,
                other => {
                    return Err(self.err(
                        x.pos,
                        format!("bad `ack` {other:?}: expected local or replica"),
                    ))
                }
            },
        };
        Ok(Replication {
            ack,
            backlog: a
                .num(self, "backlog", 1024, 1 << 30)?
                .map_or(d.backlog, |x| x as usize),
            flush_ms: a.num(self, "flush-ms", 0, 1000)?.unwrap_or(d.flush_ms),
        })
    }

    fn node(&self, a: &mut Attrs) -> Result<NodeConfig, ConfigError> {
        let id = a.required_num(self, "id", 1, 65_535)? as u16;
        let host_attr = a.required(self, "host")?;
        let host = match host_attr.value.as_str() {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h.parse().map_err(|_| {
                self.err(
                    host_attr.pos,
                    format!("bad `host` {h:?}: expected an IP address or localhost"),
                )
            })?,
        };
        let port = |a: &mut Attrs, name| a.required_num(self, name, 1, 65_535).map(|p| p as u16);
        Ok(NodeConfig {
            id,
            host,
            pool_port: port(a, "pool-port")?,
            query_port: port(a, "query-port")?,
            sync_port: port(a, "sync-port")?,
            time_port: port(a, "time-port")?,
            http_port: port(a, "http-port")?,
        })
    }
}

fn once(p: &Parser<'_>, seen: bool, pos: usize, name: &str) -> Result<(), ConfigError> {
    if seen {
        Err(p.err(pos, format!("duplicate <{name}>; expected at most one")))
    } else {
        Ok(())
    }
}

fn expected(element: &str) -> &'static str {
    match element {
        "cluster" => "`name`",
        "timing" => "heartbeat-ms, down-after-ms, time-sync-interval-ms, time-tolerance-us",
        "limits" => {
            "max-frame-bytes, max-events-per-frame, batch-limit, max-ext-entries, \
                     max-ext-key-bytes, max-ext-value-bytes, max-connections, idle-timeout-ms, \
                     http-max-head-bytes, http-max-headers, http-max-uri-bytes, \
                     http-max-body-bytes, http-head-timeout-ms, http-body-timeout-ms, \
                     xml-max-depth, workers"
        }
        "security" => "pool-token",
        "replication" => "ack, backlog, flush-ms",
        _ => "id, host, pool-port, query-port, sync-port, time-port, http-port",
    }
}

impl Attrs {
    fn take(&mut self, name: &str) -> Option<Attr> {
        let i = self.list.iter().position(|a| a.name == name)?;
        Some(self.list.remove(i))
    }

    fn required(&mut self, p: &Parser<'_>, name: &str) -> Result<Attr, ConfigError> {
        self.take(name).ok_or_else(|| {
            p.err(
                self.pos,
                format!("<{}> is missing required attribute `{name}`", self.element),
            )
        })
    }

    fn num(
        &mut self,
        p: &Parser<'_>,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(a) = self.take(name) else {
            return Ok(None);
        };
        match a.value.parse::<u64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(p.err(
                a.pos,
                format!(
                    "bad `{name}` {:?}: expected an integer from {min} to {max}",
                    a.value
                ),
            )),
        }
    }

    fn required_num(
        &mut self,
        p: &Parser<'_>,
        name: &str,
        min: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        match self.num(p, name, min, max)? {
            Some(v) => Ok(v),
            None => Err(p.err(
                self.pos,
                format!("<{}> is missing required attribute `{name}`", self.element),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = ClusterConfig::parse(DEFAULT_XML, "<embedded>").unwrap();
        let n = &c.nodes()[0];
        assert_eq!(
            (
                n.id,
                n.pool_port,
                n.query_port,
                n.sync_port,
                n.time_port,
                n.http_port
            ),
            (1, 7400, 7401, 7402, 7403, 7480)
        );
        assert_eq!(n.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(c.limits().batch_limit, 1000);
    }

    #[test]
    fn design_example_parses() {
        let c = ClusterConfig::parse(include_str!("../examples/cluster-3.xml"), "x").unwrap();
        assert_eq!(c.nodes().len(), 3);
        assert_eq!(c.timing().heartbeat_ms, 100);
    }

    const NODE: &str = r#"<node id="1" host="127.0.0.1" pool-port="1" query-port="2" sync-port="3" time-port="4" http-port="5"/>"#;

    /// Parses `doc` and checks that it fails at `line:column` with a message containing `msg`.
    fn check(doc: &str, line: usize, column: usize, msg: &str) {
        match ClusterConfig::parse(doc, "f.xml") {
            Err(ConfigError::Invalid {
                file,
                line: l,
                column: c,
                message,
            }) => {
                assert_eq!(file, "f.xml");
                assert!(message.contains(msg), "{message:?} should contain {msg:?}");
                assert_eq!((l, c), (line, column), "position of {message:?}");
            }
            other => panic!("expected an error for {doc:?}, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        check(
            &format!("<cluster name=\"a\">\n  <nodes/>\n{NODE}</cluster>"),
            2,
            3,
            "unknown element <nodes>",
        );
        check(
            &format!("<cluster name=\"a\">\n{NODE}\n<timing beat=\"1\"/></cluster>"),
            3,
            9,
            "unknown attribute `beat`",
        );
        check(
            &format!("<cluster name=\"a\"><timing/><timing/>{NODE}</cluster>"),
            1,
            28,
            "duplicate <timing>",
        );
        check(
            &format!("<cluster name=\"a\">{NODE}{NODE}</cluster>"),
            1,
            121,
            "duplicate node id 1",
        );
        check(
            "<cluster name=\"a\"><node id=\"x\"/></cluster>",
            1,
            25,
            "bad `id` \"x\": expected an integer from 1 to 65535",
        );
        check(
            "<cluster name=\"a\"><node id=\"0\"/></cluster>",
            1,
            25,
            "from 1 to 65535",
        );
        check(
            "<cluster name=\"a\"><node id=\"1\"/></cluster>",
            1,
            19,
            "missing required attribute `host`",
        );
        check("<cluster name=\"a\"></cluster>", 1, 1, "has no <node>");
        check(
            &format!("<!DOCTYPE x [<!ENTITY a \"b\">]><cluster name=\"a\">{NODE}</cluster>"),
            1,
            1,
            "DOCTYPE",
        );
        check(
            &format!("<cluster name=\"a\">{NODE}"),
            1,
            121,
            "missing </cluster>",
        );
        check(
            "<cluster name=\"a\"><node id=\"1\" id=\"2\"/></cluster>",
            1,
            19,
            "bad attribute",
        );
        check(
            &format!("<cluster>{NODE}</cluster>"),
            1,
            1,
            "missing required attribute `name`",
        );
        check("<cluster name=\"a\"><node id=\"1\" host=\"127.0.0.1\" pool-port=\"1\" query-port=\"1\" sync-port=\"3\" time-port=\"4\" http-port=\"5\"/></cluster>", 1, 19, "TCP port 1");
        check(
            "<cluster name=\"a\"><limits batch-limit=\"70000\"/></cluster>",
            1,
            27,
            "batch-limit",
        );
        check(
            "<cluster name=\"a\">hello</cluster>",
            1,
            19,
            "unexpected text",
        );
        check(
            "<cluster name=\"a\"><node></cluster>",
            1,
            19,
            "must be an empty element",
        );
        check("<cluster", 1, 1, "malformed XML");
        check(
            &format!("<cluster name=\"a\"><replication ack=\"maybe\"/>{NODE}</cluster>"),
            1,
            32,
            "expected local or replica",
        );
    }
}
