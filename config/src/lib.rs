//! The presenced cluster file: one XML document describing every node of a cluster
//! (patent claim 13: server addresses, data-sync port, time-sync port, publish ports, sequence
//! number), plus optional timing, limits, security, replication, store and PROXY protocol
//! sections.
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
//! This crate reads a string; the only I/O is [`ClusterConfig::load`], which reads the file, and
//! the credential files `<security>` and `<api-key>` name (`security.rs`).
//! It uses quick-xml's pull reader rather than its serde deserializer because serde errors carry
//! no position, and positions are part of the contract.
//!
//! # Layout
//!
//! - this root: [`ClusterConfig`] (the validated whole), [`ConfigError`], [`DEFAULT_XML`];
//! - `limits`: [`Limits`], every limit a peer can hit, with its default;
//! - `sections`: [`Timing`], [`Replication`] and [`AckPolicy`], [`StoreConfig`] and
//!   [`StoreEngine`], [`NodeConfig`];
//! - `security`: [`Security`], [`ApiKey`], [`Secret`] (credential files);
//! - `web`: [`Web`] (`<web>`: chat link template, CORS origins, unknown users, watch limits);
//! - `proxy`: [`ProxyProtocol`] (`<proxy-protocol>`: which [`Listener`]s expect a PROXY
//!   protocol header, and the trusted networks, each a [`Cidr`]);
//! - `parse`: the XML pull parser, attribute names and ranges;
//! - `validate`: checks across elements (unique ids and ports, the gossip cap).
//!
//! # Thread model
//!
//! None: a [`ClusterConfig`] is built once at start-up and then only read (it is `Clone`, and
//! `Send + Sync`), by every thread of the server.

use std::path::Path;

mod limits;
mod parse;
mod proxy;
mod sections;
mod security;
mod validate;
mod web;

pub use limits::Limits;
pub use proxy::{Cidr, Listener, ProxyProtocol};
pub use sections::{AckPolicy, NodeConfig, Replication, StoreConfig, StoreEngine, Timing};
pub use security::{
    ApiKey, Secret, Security, MAX_POOL_TOKEN, MAX_SECRET_FILE, MIN_API_KEY, MIN_CLUSTER_SECRET,
};
pub use web::{Origins, Unknown, Web};

use parse::Parser;

/// The embedded default: one node on 127.0.0.1 with the default ports.
pub const DEFAULT_XML: &str = include_str!("../default.xml");

/// Why a configuration was refused. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    ///
    /// The OS error is part of the message and deliberately not a `source()`, so that a
    /// caller printing the error chain shows it once.
    #[error("{file}: {error}")]
    Io {
        /// The path given.
        file: String,
        /// The OS error.
        error: std::io::Error,
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

/// A whole, validated cluster file.
///
/// INVARIANT: at least one node; node ids unique and non-zero; no `(host, port)` used twice
/// (TCP and UDP ports counted separately); `limits.max_gossip_members` is at least the number of
/// nodes minus one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    name: String,
    timing: Timing,
    limits: Limits,
    security: Security,
    replication: Replication,
    store: StoreConfig,
    proxy_protocol: Option<ProxyProtocol>,
    web: Option<Web>,
    seeds: Vec<Seed>,
    nodes: Vec<NodeConfig>,
}

/// A running node to introduce this one to (`<seed host=".." sync-port=".."/>`, repeatable): a
/// node whose file names only itself and seeds learns the rest of the cluster from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// Host name or IP address of the seed, resolved at every attempt.
    pub host: String,
    /// Its replication (sync) port.
    pub sync_port: u16,
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
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            file: file.clone(),
            error,
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
    /// Store settings (`<store>`; the default engine without it).
    pub fn store(&self) -> &StoreConfig {
        &self.store
    }
    /// The `<proxy-protocol>` element, if the file has one: without it no listener expects a
    /// PROXY protocol header.
    pub fn proxy_protocol(&self) -> Option<&ProxyProtocol> {
        self.proxy_protocol.as_ref()
    }
    /// The `<web>` element, if the file has one: without it the public web endpoints (badge,
    /// widget, watch, status page) are off and no CORS header is sent.
    pub fn web(&self) -> Option<&Web> {
        self.web.as_ref()
    }
    /// All nodes, in file order.
    pub fn nodes(&self) -> &[NodeConfig] {
        &self.nodes
    }
    /// The seeds this node introduces itself to.
    pub fn seeds(&self) -> &[Seed] {
        &self.seeds
    }
    /// Whether this node has no other node to replicate with on purpose: its file names no other
    /// node and no seed.
    pub fn alone(&self) -> bool {
        self.nodes.len() <= 1 && self.seeds.is_empty()
    }
    /// The node with sequence number `id`.
    pub fn node(&self, id: u16) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

#[cfg(test)]
mod tests;

/// Body of the cargo-fuzz target `config_xml` (`fuzz/`), here so that `cargo test` replays its
/// corpus (`tests/fuzz_corpus.rs`).
#[doc(hidden)]
pub mod fuzzing {
    use super::{ClusterConfig, ConfigError};

    /// Any text: a clear error naming the file and a position, or a valid config that parses
    /// the same again.
    pub fn config_xml(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match ClusterConfig::parse(text, "fuzz.xml") {
            Ok(c) => {
                assert!(!c.nodes().is_empty());
                let again = ClusterConfig::parse(text, "fuzz.xml").ok();
                assert_eq!(again.as_ref(), Some(&c), "parsing is not deterministic");
            }
            Err(ConfigError::Invalid {
                file,
                line,
                column,
                message,
            }) => {
                assert_eq!(file, "fuzz.xml");
                assert!(line >= 1 && column >= 1 && !message.is_empty());
            }
            Err(ConfigError::Io { .. }) => {}
        }
    }
}
