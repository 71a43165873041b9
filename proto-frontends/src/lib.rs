//! presenced's front ends, as sans-IO code: HTTP/1.1, the JSON API, SOAP 1.1/1.2 and the WSDL.
//! The drivers that run them over sockets are in `presenced-server`.
//!
//! # Layout
//!
//! - [`http`]: the HTTP/1.1 connection state machine ([`http::HttpConn`], over httparse) and the
//!   [`http::Handler`] trait through which it hands complete requests to the layer above.
//! - [`router`]: [`router::Router`], the handler the node uses: matches paths and methods and
//!   dispatches to [`api`] or [`soap`].
//! - [`api`]: the JSON API (`/v1/presence`, `/v1/cluster`, health).
//! - [`soap`]: SOAP 1.1/1.2 `GetPresence`, faults and the WSDL.
//! - [`backend`]: the [`backend::Backend`] trait, all the handlers know of the node.
//! - [`watch`]: `GET /v1/watch` (Server-Sent Events): the request and the stream's frames; the
//!   driver runs the stream.
//! - [`web`]: the public web endpoints of `<web>` (badge, widget, status page) and CORS.
//! - [`text`]: writers shared by all of them (integers, RFC 3339, JSON and XML escaping).
//! - `fuzzing`: bodies of the `http_request` and `soap_envelope` fuzz targets.
//!
//! Module layering (each imports only from the ones below it):
//!
//! ```text
//!   router ──► watch ──► api, http, backend
//!   router ──► web ──► api (ids), http, backend
//!   router ──► api ──┐
//!     │  └───► soap ─┼──► http ──► text
//!     │              └──► backend, text
//!     └──► http, backend
//! ```
//!
//! # Threads
//!
//! ```text
//!   driver thread (presenced-server worker)
//!     └─ HttpConn<Router>::handle_input(now, wall, bytes, budget, &backend, out)
//!          └─ Router ──► api / soap ──► &dyn Backend (the node, shared with other threads)
//! ```
//!
//! Nothing here spawns a thread, holds a lock across calls or blocks: every call runs to
//! completion on the driver's thread.
//!
//! Architecture Invariant: nothing in this crate performs I/O or reads a clock; time is a
//! parameter. It does not depend on mio, socket2, signal-hook or slab.

pub mod api;
pub mod backend;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod router;
pub mod soap;
pub mod text;
pub mod watch;
pub mod web;
