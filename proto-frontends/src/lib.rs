//! presenced front ends and drivers.
//!
//! - [`backend`]: the [`backend::Backend`] trait, all the request handlers know of the node.
//! - [`http`]: the sans-IO HTTP/1.1 connection state machine (httparse) and the router.
//! - [`api`]: the JSON API (`/v1/presence`, `/v1/cluster`).
//! - [`soap`]: SOAP 1.1/1.2 `GetPresence` and the WSDL.
//! - [`server`]: the mio drivers (the only modules here that touch sockets and clocks).
//! - [`client`]: blocking client libraries for the pool and query protocols.
//! - [`metrics`]: counters and histograms, rendered in the Prometheus text format.

pub mod api;
pub mod backend;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod server;
pub mod soap;
