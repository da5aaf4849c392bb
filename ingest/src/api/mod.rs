//! The HTTPS API. Each endpoint module lists its routes; [`routes`] is their union and
//! [`router`] serves exactly that table, so the scope test enumerates what is served.
//!
//! - [`state`]: what every request shares, and the per-tenant rate.
//! - [`error`]: [`ApiError`], and where decoder and store errors become HTTP answers.
//! - [`auth`]: the authentication extractors a handler names in its signature.
//! - [`route`]: the route table's entry, whose access is read from the handler.
//! - endpoints: [`ingest`], [`promapi`], [`clusters`], [`amapi`], [`silences`],
//!   [`subscriptions`], [`keys`], [`ops`].

pub mod amapi;
pub mod auth;
pub mod clusters;
pub mod error;
pub mod ingest;
pub mod keys;
pub mod ops;
pub mod promapi;
pub mod route;
pub mod silences;
pub mod state;
pub mod subscriptions;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use error::ApiError;
use route::Route;
use state::AppState;

/// Every route the service answers, with who may call it.
pub fn routes() -> Vec<Route> {
    [
        ops::routes(),
        ingest::routes(),
        promapi::routes(),
        clusters::routes(),
        amapi::routes(),
        silences::routes(),
        subscriptions::routes(),
        keys::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The router over [`routes`] and `more` (the console's, from the wiring).
pub fn router(state: AppState, more: Vec<Route>) -> Router {
    router_of(state, more, |_| true)
}

/// What a cluster node without the `api` role serves: the ingest endpoints and its
/// health and metrics.
pub fn ingest_and_ops(path: &str) -> bool {
    ingest::routes()
        .iter()
        .chain(ops::routes().iter())
        .any(|r| r.path == path)
}

/// The router over the routes of [`routes`] and `more` that `keep` keeps.
pub fn router_of(state: AppState, more: Vec<Route>, keep: impl Fn(&Route) -> bool) -> Router {
    let body_limit = state.limits.max_body_bytes;
    let mut router = Router::new();
    for r in routes().into_iter().chain(more).filter(|r| keep(r)) {
        router = router.route(r.path, r.handler);
    }
    router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::map_response_with_state(
            state.metrics.clone(),
            body_limit_as_json,
        ))
        .with_state(state)
}

/// One log event per request: at debug level, or warn for server errors (the query
/// string is left out: it may hold a tenant's PromQL).
async fn log_request(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if resp.status().is_server_error() {
        tracing::warn!(%method, path, status, ms, "Request failed.");
    } else {
        tracing::debug!(%method, path, status, ms, "Request.");
    }
    resp
}

/// The body-size limit's refusal, in the API's JSON shape and counted (axum's own
/// answer is plain text).
async fn body_limit_as_json(
    State(metrics): State<Arc<crate::metrics::Metrics>>,
    resp: Response,
) -> Response {
    let plain = resp
        .headers()
        .get("content-type")
        .is_none_or(|v| !v.as_bytes().starts_with(b"application/json"));
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && plain {
        metrics.rejected("body_too_large");
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "request body is larger than limits.max_body_bytes",
        )
        .into_response();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_openapi_document_once() {
        let doc = ops::openapi_json().unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for r in routes() {
            let method = r.method.as_str().to_lowercase();
            assert!(
                doc["paths"][r.path][&method].is_object(),
                "{} {} is not in the OpenAPI document",
                r.method,
                r.path
            );
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
        }
    }
}
