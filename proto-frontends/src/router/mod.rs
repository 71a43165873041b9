//! The HTTP router: the [`Handler`] of every [`HttpConn`](crate::http::HttpConn) the node
//! serves. It matches the path and method of a complete request and dispatches to
//! [`crate::api`] (JSON, health) or [`crate::soap`], or renders `/metrics` from the [`Backend`].
//!
//! | method          | path                 | answer                                            |
//! |-----------------|----------------------|---------------------------------------------------|
//! | GET, HEAD       | `/v1/presence?ids=…` | `{"as_of":…,"node":N,"statuses":[…]}`             |
//! | POST            | `/v1/presence`       | the same, for `{"ids":[1,"2",3]}`                 |
//! | GET, HEAD       | `/v1/presence/{id}`  | one status object                                 |
//! | GET, HEAD       | `/v1/cluster`        | [`ClusterView`](crate::backend::ClusterView)     |
//! | DELETE          | `/v1/cluster/members/{id}` | removes node `id`: `{"node":N,"removed":ID}` |
//! | POST            | `/v1/cluster/members/{id}` | re-admits it: `{"node":N,"readmitted":ID}`   |
//! | GET, HEAD       | `/healthz/live`      | `{"status":"live"}`                               |
//! | GET, HEAD       | `/healthz/ready`     | 200 `{"status":"ready"}` or 503 `not_ready`       |
//! | GET, HEAD       | `/metrics`           | Prometheus text format 0.0.4                      |
//! | GET, HEAD       | `/soap?wsdl`         | the WSDL                                          |
//! | POST            | `/soap`              | SOAP 1.1 / 1.2 `GetPresence`                      |
//! | GET             | `/v1/watch?ids=…`    | an event stream ([`crate::watch`]); public        |
//!
//! With `<web>` ([`crate::web`]): `GET /v1/presence/{id}/badge.svg`, `GET /widget.js`, `GET /`
//! (open even with API keys), CORS headers on `/v1/presence*`, `/v1/watch` and `/soap`, and
//! `OPTIONS` on those paths answered as a CORS preflight (204) before any key check.
//!
//! Any other path is 404 `not_found`; a known path with another method is 405 with `Allow`.
//!
//! When API keys are configured, every route above but health and the WSDL needs one, checked
//! before anything else about the request (`auth`): a refused request is a JSON 401 (SOAP: an
//! `Unauthorized` fault) whatever its method or body.
//!
//! The router keeps per-connection buffers ([`Router`]) and nothing else: it does not decide
//! framing, limits or connection handling (that is [`crate::http`]) and never measures time.

mod auth;
#[cfg(test)]
mod tests;

use presenced_core::{Sid, Status};

use crate::backend::Backend;
use crate::http::{Handler, HttpError, HttpLimits, Reply, Request};
use crate::watch::WatchRequest;
use crate::{api, soap, watch, web};

/// The media type of `/metrics`.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The handler of one HTTP connection: the buffers it reuses from one request to the next.
///
/// It answers requests for any [`Backend`] the driver passes with the input (see
/// [`HttpConn::handle_input`](crate::http::HttpConn::handle_input)).
#[derive(Debug, Default)]
pub struct Router {
    ids: Vec<Sid>,
    statuses: Vec<Status>,
    /// The accepted `GET /v1/watch` whose stream the driver has not taken yet.
    watch: Option<WatchRequest>,
    /// Header lines of the current response beyond those [`crate::http`] writes.
    extra: String,
}

impl Router {
    /// The accepted watch request, once the connection started streaming
    /// ([`HttpConn::streaming`](crate::http::HttpConn::streaming)).
    pub fn take_watch(&mut self) -> Option<WatchRequest> {
        self.watch.take()
    }

    /// Empties the buffers, and frees them if a batch left them bigger than a few ids need:
    /// they are per connection, and thousands of idle or blocked connections must not each
    /// keep the buffers of a 1000-id batch (about 90 KB).
    fn trim(&mut self) {
        const KEEP: usize = 64;
        self.ids.clear();
        self.statuses.clear();
        if self.ids.capacity() > KEEP {
            self.ids = Vec::new();
        }
        if self.statuses.capacity() > KEEP {
            self.statuses = Vec::new();
        }
    }

    /// Routes one request; the response body goes to `body`.
    fn route(
        &mut self,
        req: &Request<'_>,
        backend: &dyn Backend,
        limits: &HttpLimits,
        body: &mut Vec<u8>,
    ) -> Result<Reply, HttpError> {
        const GET: &str = "GET, HEAD";
        const GET_POST: &str = "GET, HEAD, POST";
        if let Some(reply) = self.route_web(req, backend, body) {
            return reply;
        }
        if let Some(f) = auth::protected(req) {
            if !backend.authorize(f, auth::bearer(req.authorization)) {
                return auth::refuse(f, req, backend, body);
            }
        }
        let get = matches!(req.method, "GET" | "HEAD");
        let (ids, statuses) = (&mut self.ids, &mut self.statuses);
        match req.path {
            "/v1/presence" if get => api::presence_query(req.query, backend, ids, statuses, body),
            "/v1/presence" if req.method == "POST" => {
                api::presence_post(req, backend, ids, statuses, body)
            }
            "/v1/presence" => Err(HttpError::method_not_allowed(GET_POST)),
            p if p.starts_with("/v1/presence/") => {
                let raw = p.get("/v1/presence/".len()..).unwrap_or_default();
                if raw.is_empty() || raw.contains('/') {
                    return Err(api::not_found());
                }
                if !get {
                    return Err(HttpError::method_not_allowed(GET));
                }
                api::presence_one(raw, backend, ids, statuses, body)
            }
            p if p.starts_with("/v1/cluster/members/") => {
                let raw = p.get("/v1/cluster/members/".len()..).unwrap_or_default();
                let remove = match req.method {
                    "DELETE" => true,
                    "POST" => false,
                    _ => return Err(HttpError::method_not_allowed("DELETE, POST")),
                };
                api::change_member(raw, remove, backend, body)
            }
            "/v1/cluster" | "/healthz/live" | "/healthz/ready" | "/metrics" if !get => {
                Err(HttpError::method_not_allowed(GET))
            }
            "/v1/cluster" => api::cluster(backend, body),
            "/healthz/live" => api::live(body),
            "/healthz/ready" => api::ready(backend, body),
            "/metrics" => {
                let mut text = String::new();
                backend.render_metrics(&mut text);
                body.extend_from_slice(text.as_bytes());
                Ok(Reply {
                    status: 200,
                    content_type: PROMETHEUS,
                })
            }
            "/soap" if get => {
                if !query_has_flag(req.query, "wsdl") {
                    return Err(HttpError::bad_request(
                        "SOAP requests are POSTed to /soap; the WSDL is at GET /soap?wsdl",
                    ));
                }
                soap::write_wsdl(req.host, body);
                Ok(Reply {
                    status: 200,
                    content_type: soap::WSDL_CONTENT_TYPE,
                })
            }
            "/soap" if req.method == "POST" => Ok(soap::handle_post(
                req,
                backend,
                limits.xml_max_depth,
                ids,
                statuses,
                body,
            )),
            "/soap" => Err(HttpError::method_not_allowed(GET_POST)),
            "/v1/watch" if req.method == "GET" => {
                let (reply, request) = watch::open(req, backend, ids)?;
                self.watch = Some(request);
                Ok(reply)
            }
            "/v1/watch" => Err(HttpError::method_not_allowed("GET")),
            _ => Err(api::not_found()),
        }
    }
}

impl Router {
    /// The `<web>` part of routing: CORS headers for the paths they apply to, preflights, and
    /// the public web endpoints. `None`: not answered here, route on.
    fn route_web(
        &mut self,
        req: &Request<'_>,
        backend: &dyn Backend,
        body: &mut Vec<u8>,
    ) -> Option<Result<Reply, HttpError>> {
        const GET: &str = "GET, HEAD";
        let web = backend.web()?;
        let get = matches!(req.method, "GET" | "HEAD");
        if web::cors::applies(req.path) {
            if req.method == "OPTIONS" {
                return Some(Ok(web::cors::preflight(web, req.origin, &mut self.extra)));
            }
            web::cors::headers(web, req.origin, &mut self.extra);
        }
        let extra = &mut self.extra;
        match req.path {
            p if web::badge::badge_id(p).is_some() => Some(if get {
                let raw = web::badge::badge_id(p).unwrap_or_default();
                let statuses = &mut self.statuses;
                web::badge::serve(raw, req, backend, web, statuses, body, extra)
            } else {
                Err(HttpError::method_not_allowed(GET))
            }),
            "/widget.js" if get => Some(Ok(web::assets::widget(
                req,
                web,
                backend.batch_limit(),
                body,
                extra,
            ))),
            "/" if get => Some(Ok(web::assets::status_page(req, body, extra))),
            "/widget.js" | "/" => Some(Err(HttpError::method_not_allowed(GET))),
            _ => None,
        }
    }
}

impl<B: Backend> Handler<B> for Router {
    fn handle(
        &mut self,
        backend: &B,
        req: &Request<'_>,
        limits: &HttpLimits,
        body: &mut Vec<u8>,
    ) -> Result<Reply, HttpError> {
        self.extra.clear();
        let reply = self.route(req, backend, limits, body);
        self.trim();
        reply
    }

    fn extra_headers(&self) -> &str {
        &self.extra
    }

    fn record_error(&mut self, backend: &B, code: &'static str) {
        backend.record_error(code);
    }
}

/// Whether the query has a parameter named `flag` (any case, with or without a value).
fn query_has_flag(query: Option<&str>, flag: &str) -> bool {
    query.unwrap_or_default().split('&').any(|kv| {
        let name = kv.split_once('=').map_or(kv, |(k, _)| k);
        name.eq_ignore_ascii_case(flag)
    })
}
