//! The XML reader: walks a cluster file with quick-xml's pull reader and turns each element's
//! attributes into the values of `limits.rs` and `sections.rs`, checking every number against
//! its range.
//!
//! Every error names `file:line:column` ([`Parser::err`]): that is why this is a pull parser and
//! not serde. It refuses what a cluster file never needs (`DOCTYPE`, entity references,
//! processing instructions, text, nested elements), unknown or duplicate elements and
//! attributes, and missing required attributes. Checks that span several elements (unique ids,
//! ports, the gossip cap against the node count) are in `validate.rs`.
//!
//! Each element reader (`timing`, `limits`, ...) is where an attribute's name, default and
//! accepted range are written down.

use std::net::{IpAddr, Ipv4Addr};

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::{
    validate, AckPolicy, ClusterConfig, ConfigError, Limits, NodeConfig, ProxyProtocol,
    Replication, Security, Seed, StoreConfig, StoreEngine, Timing,
};

/// A pull parser over one document; `file` only names it in errors.
pub(crate) struct Parser<'a> {
    pub(crate) text: &'a str,
    pub(crate) file: &'a str,
}

/// One attribute with its byte offset in the document.
pub(crate) struct Attr {
    pub(crate) name: String,
    pub(crate) value: String,
    pub(crate) pos: usize,
}

/// The attributes of one element, consumed by name; leftovers are "unknown attribute" errors.
pub(crate) struct Attrs {
    element: &'static str,
    pos: usize,
    list: Vec<Attr>,
}

impl Parser<'_> {
    /// An error at byte offset `pos`, reported as `file:line:column`.
    pub(crate) fn err(&self, pos: usize, message: impl Into<String>) -> ConfigError {
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

    /// Walks the document, builds every section, then runs the checks of `validate.rs`.
    pub(crate) fn parse(&self) -> Result<ClusterConfig, ConfigError> {
        let mut reader = Reader::from_str(self.text);
        reader.config_mut().trim_text(true);
        let mut cluster: Option<(String, usize)> = None;
        let mut timing: Option<Timing> = None;
        let mut limits: Option<(Limits, usize)> = None;
        let mut security: Option<Security> = None;
        let mut replication: Option<Replication> = None;
        let mut store: Option<StoreConfig> = None;
        let mut proxy_protocol: Option<ProxyProtocol> = None;
        let mut seeds: Vec<Seed> = Vec::new();
        let mut api_keys = Vec::new();
        let mut web: Option<crate::Web> = None;
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
                            let t = self.timing(&mut a)?;
                            if t.heartbeat_ms.saturating_mul(3) >= t.down_after_ms {
                                return Err(self.err(
                                    pos,
                                    format!(
                                        "`heartbeat-ms` {} must be below a third of \
                                         `down-after-ms` {}: a peer must be able to miss a \
                                         heartbeat, and a stall must be told from a quiet link",
                                        t.heartbeat_ms, t.down_after_ms
                                    ),
                                ));
                            }
                            timing = Some(t);
                        }
                        "limits" => {
                            once(self, limits.is_some(), pos, "limits")?;
                            limits = Some((self.limits(&mut a)?, pos));
                        }
                        "security" => {
                            once(self, security.is_some(), pos, "security")?;
                            security = Some(self.security(&mut a)?);
                        }
                        "replication" => {
                            once(self, replication.is_some(), pos, "replication")?;
                            replication = Some(self.replication(&mut a)?);
                        }
                        "store" => {
                            once(self, store.is_some(), pos, "store")?;
                            store = Some(self.store(&mut a)?);
                        }
                        "web" => {
                            once(self, web.is_some(), pos, "web")?;
                            web = Some(self.web(&mut a)?);
                        }
                        "proxy-protocol" => {
                            once(self, proxy_protocol.is_some(), pos, "proxy-protocol")?;
                            proxy_protocol = Some(self.proxy_protocol(&mut a)?);
                        }
                        "node" => nodes.push((self.node(&mut a)?, pos)),
                        "api-key" => {
                            let key = self.api_key(&mut a)?;
                            if api_keys.iter().any(|k: &crate::ApiKey| k.name == key.name) {
                                return Err(
                                    self.err(pos, format!("duplicate api-key name {:?}", key.name))
                                );
                            }
                            api_keys.push(key);
                        }
                        "seed" => seeds.push(Seed {
                            host: a.required(self, "host")?.value,
                            sync_port: a.required_num(self, "sync-port", 1, 65_535)? as u16,
                        }),
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
        let (limits, lpos) = limits.unwrap_or_else(|| (Limits::default(), cpos));
        validate::check(self, &nodes, &limits, lpos)?;
        Ok(ClusterConfig {
            name,
            timing: timing.unwrap_or_default(),
            limits,
            security: Security {
                api_keys,
                ..security.unwrap_or_default()
            },
            replication: replication.unwrap_or_default(),
            store: store.unwrap_or_default(),
            proxy_protocol,
            web,
            seeds,
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
            b"store" => "store",
            b"proxy-protocol" => "proxy-protocol",
            b"node" => "node",
            b"seed" => "seed",
            b"api-key" => "api-key",
            b"web" => "web",
            other => {
                let name = String::from_utf8_lossy(other);
                return Err(self.err(
                    pos,
                    format!("unknown element <{name}>; expected <timing>, <limits>, <security>, <replication>, <store>, <proxy-protocol>, <web>, <seed>, <api-key> or <node>"),
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
            drain_ms: a.num(self, "drain-ms", 0, 600_000)?.unwrap_or(d.drain_ms),
            max_clock_drift_ms: a
                .num(self, "max-clock-drift-ms", 10, 86_400_000)?
                .unwrap_or(d.max_clock_drift_ms),
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
            max_snapshot_users: a
                .num(self, "max-snapshot-users", 1, 1 << 32)?
                .map_or(d.max_snapshot_users, u),
            repl_max_frame_bytes: a
                .num(self, "repl-max-frame-bytes", 32 << 20, 1 << 30)?
                .map_or(d.repl_max_frame_bytes, |x| x as u32),
            max_gossip_members: a
                .num(self, "max-gossip-members", 1, 65_535)?
                .map_or(d.max_gossip_members, u),
            max_connections: a
                .num(self, "max-connections", 1, 1 << 24)?
                .map_or(d.max_connections, u),
            max_connections_per_address: a
                .num(self, "max-connections-per-address", 1, 1 << 24)?
                .map_or(d.max_connections_per_address, u),
            handshake_timeout_ms: a
                .num(self, "handshake-timeout-ms", 100, 3_600_000)?
                .unwrap_or(d.handshake_timeout_ms),
            output_budget_bytes: a
                .num(self, "output-budget-bytes", 1 << 20, 1 << 40)?
                .map_or(d.output_budget_bytes, u),
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
            max_output_bytes: a
                .num(self, "max-output-bytes", 64 << 10, 1 << 30)?
                .map_or(d.max_output_bytes, u),
            repl_congestion_bytes: a
                .num(self, "repl-congestion-bytes", 1 << 20, 1 << 32)?
                .map_or(d.repl_congestion_bytes, u),
            initial_users: a
                .num(self, "initial-users", 0, 1 << 32)?
                .map_or(d.initial_users, u),
        })
    }

    fn replication(&self, a: &mut Attrs) -> Result<Replication, ConfigError> {
        let d = Replication::default();
        let ack = match a.take("ack") {
            None => d.ack,
            Some(x) => match x.value.as_str() {
                "local" => AckPolicy::Local,
                "replica" => AckPolicy::Replica,
                "replica-or-local" => AckPolicy::ReplicaOrLocal,
                other => {
                    return Err(self.err(
                        x.pos,
                        format!("bad `ack` {other:?}: expected local, replica or replica-or-local"),
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

    /// `<store engine>`: `engine` is optional (default `table`); any other name is refused with
    /// the list of engines.
    fn store(&self, a: &mut Attrs) -> Result<StoreConfig, ConfigError> {
        let Some(x) = a.take("engine") else {
            return Ok(StoreConfig::default());
        };
        match StoreEngine::from_name(&x.value) {
            Some(engine) => Ok(StoreConfig { engine }),
            None => Err(self.err(
                x.pos,
                format!(
                    "bad `engine` {:?} on <store>: expected {}",
                    x.value,
                    StoreEngine::ALL.map(StoreEngine::name).join(" or ")
                ),
            )),
        }
    }

    /// `<web>`: every attribute optional; the checks are `Web::from_attrs`.
    fn web(&self, a: &mut Attrs) -> Result<crate::Web, ConfigError> {
        let chat = a.take("chat-url");
        let origins = a.take("allowed-origins");
        let unknown = a.take("unknown");
        let max_watchers = a.num(self, "max-watchers", 1, 1 << 24)?;
        let retention = a.num(self, "retention-changes", 10_000, 1 << 24)?;
        crate::Web::from_attrs(
            chat.as_ref().map(|x| x.value.as_str()),
            origins.as_ref().map(|x| x.value.as_str()),
            unknown.as_ref().map(|x| x.value.as_str()),
            max_watchers,
            retention,
        )
        .map_err(|(which, message)| {
            let pos = match which {
                "chat-url" => chat.as_ref().map_or(a.pos, |x| x.pos),
                "allowed-origins" => origins.as_ref().map_or(a.pos, |x| x.pos),
                _ => unknown.as_ref().map_or(a.pos, |x| x.pos),
            };
            self.err(pos, message)
        })
    }

    /// `<proxy-protocol>`: both attributes are required (an empty trust list would refuse every
    /// connection); the lists are checked by `ProxyProtocol::from_attrs`.
    fn proxy_protocol(&self, a: &mut Attrs) -> Result<ProxyProtocol, ConfigError> {
        let listeners = a.required(self, "listeners")?;
        let trusted = a.required(self, "trusted")?;
        ProxyProtocol::from_attrs(&listeners.value, &trusted.value).map_err(|(which, message)| {
            let pos = if which == "listeners" {
                listeners.pos
            } else {
                trusted.pos
            };
            self.err(pos, message)
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
        "timing" => {
            "heartbeat-ms, down-after-ms, time-sync-interval-ms, time-tolerance-us, drain-ms, \
             max-clock-drift-ms"
        }
        "limits" => {
            "max-frame-bytes, max-events-per-frame, batch-limit, max-ext-entries, \
                     max-ext-key-bytes, max-ext-value-bytes, max-snapshot-users, \
                     repl-max-frame-bytes, max-gossip-members, max-connections, \
                     max-connections-per-address, handshake-timeout-ms, output-budget-bytes, \
                     idle-timeout-ms, \
                     http-max-head-bytes, http-max-headers, http-max-uri-bytes, \
                     http-max-body-bytes, http-head-timeout-ms, http-body-timeout-ms, \
                     xml-max-depth, workers, max-output-bytes, repl-congestion-bytes, \
                     initial-users"
        }
        "security" => "cluster-secret-file, pool-token, pool-token-file",
        "api-key" => "name, file",
        "web" => "chat-url, allowed-origins, unknown, max-watchers, retention-changes",
        "replication" => "ack, backlog, flush-ms",
        "store" => "engine",
        "proxy-protocol" => "listeners, trusted",
        "seed" => "host, sync-port",
        _ => "id, host, pool-port, query-port, sync-port, time-port, http-port",
    }
}

impl Attrs {
    pub(crate) fn take(&mut self, name: &str) -> Option<Attr> {
        let i = self.list.iter().position(|a| a.name == name)?;
        Some(self.list.remove(i))
    }

    pub(crate) fn required(&mut self, p: &Parser<'_>, name: &str) -> Result<Attr, ConfigError> {
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
