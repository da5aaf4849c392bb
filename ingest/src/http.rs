//! The HTTPS API: routes, authentication, limits and the telemetry decoder.

use crate::tenants::{Scope, authorize};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use foresight_proto::Message;
use foresight_proto::v1::TelemetryBatch;
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::Limits;
use crate::pipeline::{Accepted, Input};
use crate::store::{BatchOutcome, Store};

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Towards the evaluator: batches and posted alerts.
    pub tx: mpsc::Sender<Input>,
    /// Towards the evaluator: reads of the series, on their own queue (see
    /// [`crate::pipeline::Pipeline::run`]).
    pub queries: mpsc::Sender<crate::pipeline::Query>,
    /// Each tenant's alerts as the evaluator last published them.
    pub alerts: crate::amapi::AlertsView,
    /// The loaded rule groups (the same for every tenant).
    pub rule_groups: Arc<Vec<foresight_rules::Group>>,
    /// The evaluation interval, for groups without their own.
    pub evaluation_interval: std::time::Duration,
    /// Each tenant's clusters as the evaluator last saw them.
    pub clusters: crate::pipeline::ClustersView,
    /// Alertmanager's `resolve_timeout`: the end of a posted alert without one.
    pub resolve_timeout_ms: i64,
    /// The notification configuration as text, for `/api/v2/status`.
    pub notify_config_text: Arc<str>,
    /// When the service started, Unix ms.
    pub started_at_ms: i64,
    /// Whether subscriptions may point at loopback, private or link-local addresses.
    pub allow_private_webhook_urls: bool,
    /// For subscription test pings.
    pub client: reqwest::Client,
    /// The service's own counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Request limits.
    pub limits: Limits,
    /// Each tenant's token bucket for ingest requests; `None` when unlimited.
    pub rate: Option<Arc<TenantRate>>,
}

/// Per-tenant token buckets, keyed by tenant id.
pub type TenantRate = governor::DefaultKeyedRateLimiter<i64>;

/// The token buckets the limits ask for.
pub fn tenant_rate(limits: &Limits) -> Option<Arc<TenantRate>> {
    let rate = std::num::NonZeroU32::new(limits.tenant_requests_per_second)?;
    let burst = std::num::NonZeroU32::new(limits.tenant_burst).unwrap_or(rate);
    Some(Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    )))
}

/// Takes a token from the tenant's bucket, or answers 429 with when to retry.
pub(crate) fn check_rate(state: &AppState, tenant_id: i64) -> Result<(), ApiError> {
    let Some(rate) = &state.rate else {
        return Ok(());
    };
    rate.check_key(&tenant_id).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after_secs: Some(secs.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this tenant sends more than {} requests per second (limits.tenant_requests_per_second, burst {}); retry after {} s",
                    state.limits.tenant_requests_per_second,
                    state.limits.tenant_burst,
                    secs.max(1)
                ),
            )
        }
    })
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

/// An API error: a status and a JSON body `{"error": ..., "code": ...}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable code: which limit or problem.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response();
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}

pub(crate) use crate::now_ms;

/// An RFC 3339 time of a request field, or a 400 naming the field (with `code`).
pub(crate) fn rfc3339_field(code: &'static str, field: &str, s: &str) -> Result<i64, ApiError> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("{field}: {s:?} is not an RFC 3339 time: {e}"),
            )
        })
}

/// A store error as the API answers it: 404 for what does not exist (or is another
/// tenant's), 503 otherwise.
pub(crate) fn store_error(e: crate::store::Error) -> ApiError {
    match e {
        crate::store::Error::NotFound(what) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        ),
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", other.to_string()),
    }
}

/// Runs blocking store work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::Error> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(internal)?
        .map_err(store_error)
}

/// The router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/telemetry", post(telemetry))
        .route("/api/v1/write", post(remote_write))
        .route("/v1/metrics", post(otlp_metrics))
        .route("/readyz", get(readyz))
        .route(
            "/api/v1/query",
            get(crate::promapi::query).post(crate::promapi::query),
        )
        .route(
            "/api/v1/query_range",
            get(crate::promapi::query_range).post(crate::promapi::query_range),
        )
        .route(
            "/api/v1/series",
            get(crate::promapi::series).post(crate::promapi::series),
        )
        .route(
            "/api/v1/labels",
            get(crate::promapi::labels).post(crate::promapi::labels),
        )
        .route(
            "/api/v1/label/{name}/values",
            get(crate::promapi::label_values),
        )
        .route("/api/v1/rules", get(crate::promapi::rules))
        .route("/api/v1/clusters", get(crate::clusters::list))
        .route("/api/v1/clusters/{name}", get(crate::clusters::get_one))
        .route(
            "/api/v1/clusters/{name}/context",
            get(crate::clusters::context),
        )
        .route("/api/v1/alerts/history", get(crate::clusters::history))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/alerts", get(crate::promapi::alerts))
        .route("/metrics", get(metrics))
        .route(
            "/api/v2/alerts",
            get(crate::amapi::list).post(crate::amapi::post),
        )
        .route("/api/v2/status", get(crate::amapi::status))
        .route(
            "/api/v1/subscriptions",
            get(crate::subscriptions::list).post(crate::subscriptions::create),
        )
        .route(
            "/api/v1/subscriptions/{id}",
            axum::routing::delete(crate::subscriptions::delete),
        )
        .route(
            "/api/v1/subscriptions/{id}/test",
            post(crate::subscriptions::test),
        )
        .route(
            "/api/v1/deliveries",
            get(crate::subscriptions::all_deliveries),
        )
        .route(
            "/api/v1/subscriptions/{id}/deliveries",
            get(crate::subscriptions::deliveries),
        )
        .route(
            "/api/v1/keys",
            get(crate::tenants::list_own).post(crate::tenants::create_own),
        )
        .route(
            "/api/v1/keys/{id}",
            axum::routing::delete(crate::tenants::revoke_own),
        )
        .route(
            "/api/v1/tenants",
            get(crate::tenants::list_tenants).post(crate::tenants::create_tenant),
        )
        .route(
            "/api/v1/tenants/{tenant}/keys",
            get(crate::tenants::list_tenant_keys).post(crate::tenants::create_tenant_key),
        )
        .route(
            "/api/v1/tenants/{tenant}/keys/{id}",
            axum::routing::delete(crate::tenants::revoke_tenant_key),
        )
        .route(
            "/api/v2/silences",
            get(crate::silences::list).post(crate::silences::post),
        )
        .route(
            "/api/v2/silence/{id}",
            get(crate::silences::get_one).delete(crate::silences::expire),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::map_response_with_state(
            state.metrics.clone(),
            body_limit_as_json,
        ))
        .with_state(state)
}

/// The server-side failure of a step that cannot fail on good input (a task that
/// panicked, an encoder).
pub(crate) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

/// A decoded batch re-encoded for the store, for protocols whose bodies are not the
/// stored format.
fn stored_form(batch: &TelemetryBatch) -> Result<Vec<u8>, ApiError> {
    zstd::bulk::compress(&batch.encode_to_vec(), 3).map_err(internal)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// What every ingest endpoint does around its decoder: authorizes an ingest key, takes a
/// token from the tenant's bucket, decodes off the async workers (the decoder returns
/// the batch and its stored form), stores and hands on the batch, and counts the
/// outcome. Returns the series count and whether the batch was a duplicate.
async fn ingest(
    state: AppState,
    headers: &HeaderMap,
    decode: impl FnOnce(&Limits) -> Result<(TelemetryBatch, Vec<u8>), ApiError> + Send + 'static,
) -> Result<(usize, bool), ApiError> {
    let metrics = state.metrics.clone();
    let result = async {
        let (tenant_id, tenant) = authorize(&state, headers, Scope::Ingest).await?;
        check_rate(&state, tenant_id)?;
        let limits = state.limits.clone();
        let (batch, stored) = tokio::task::spawn_blocking(move || decode(&limits))
            .await
            .map_err(internal)??;
        store_batch(&state, tenant_id, tenant, batch, stored).await
    }
    .await;
    match &result {
        Ok((series, duplicate)) => metrics.accepted(*series, *duplicate),
        Err(e) => metrics.rejected(e.code),
    }
    result
}

/// `POST /v1/telemetry`: the agent's batches (protobuf; zstd, gzip or identity).
async fn telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let encoding = header(&headers, "content-encoding");
    let (series, duplicate) = ingest(state, &headers, move |limits| {
        let (batch, raw) = crate::decode::decode_body(encoding.as_deref(), &body, limits)?;
        // A zstd body is stored as it came.
        let stored = if encoding.as_deref() == Some("zstd") {
            body.to_vec()
        } else {
            zstd::bulk::compress(&raw, 3).map_err(internal)?
        };
        Ok((batch, stored))
    })
    .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "duplicate": duplicate, "series": series})),
    )
        .into_response())
}

/// `POST /api/v1/write`: Prometheus remote-write 1.0 (snappy-compressed protobuf), so that
/// a Prometheus that already scrapes the jmx_exporter can forward to Foresight with one
/// `remote_write` block. Samples join the tenant's series like the agent's.
async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let snappy = header(&headers, "content-encoding").as_deref() == Some("snappy");
    ingest(state, &headers, move |limits| {
        if !snappy {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_encoding",
                "remote write bodies are snappy-compressed (Content-Encoding: snappy)",
            ));
        }
        let batch = crate::decode::decode_remote_write(&body, limits)?;
        let stored = stored_form(&batch)?;
        Ok((batch, stored))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/metrics`: OTLP/HTTP metrics (protobuf or JSON, identity, gzip or zstd), so
/// that an OpenTelemetry Collector can feed Foresight with its `otlphttp` exporter. The
/// answer is an empty `ExportMetricsServiceResponse` in the request's encoding.
async fn otlp_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Checked after the key, like every other refusal.
    let json = crate::decode::otlp_is_json(header(&headers, "content-type").as_deref());
    let answer_json = matches!(json, Ok(true));
    let encoding = header(&headers, "content-encoding");
    ingest(state, &headers, move |limits| {
        let batch = crate::decode::decode_otlp(json?, encoding.as_deref(), &body, limits)?;
        let stored = stored_form(&batch)?;
        Ok((batch, stored))
    })
    .await?;
    Ok(if answer_json {
        ([("content-type", "application/json")], "{}").into_response()
    } else {
        // The empty message encodes to no bytes.
        (
            [("content-type", "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response()
    })
}

/// The OpenAPI document of the HTTP API, written as YAML beside the code.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// The OpenAPI document as JSON.
///
/// # Errors
/// The YAML does not parse (a test keeps it parsing).
pub fn openapi_json() -> Result<serde_json::Value, String> {
    serde_saphyr::from_str(OPENAPI_YAML).map_err(|e| e.to_string())
}

/// `GET /openapi.json`.
async fn openapi() -> Response {
    match openapi_json() {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e).into_response(),
    }
}

/// `GET /readyz`: 200 when the store answers and the evaluator runs, else 503.
async fn readyz(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let store_ok = tokio::task::spawn_blocking(move || store.ping().is_ok())
        .await
        .unwrap_or(false);
    let evaluator_ok = !state.tx.is_closed();
    let status = if store_ok && evaluator_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": status == StatusCode::OK, "store": store_ok, "evaluator": evaluator_ok})),
    )
        .into_response()
}

/// `GET /metrics`: the service's own metrics (no tenant data).
async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let counts = tokio::task::spawn_blocking(move || store.outbox_counts().unwrap_or_default())
        .await
        .unwrap_or_default();
    let get = |k: &str| counts.get(k).copied().unwrap_or(0) as f64;
    let body = state.metrics.render(&[
        (
            "foresight_outbox_pending",
            "Notifications waiting for delivery.",
            get("pending"),
        ),
        (
            "foresight_outbox_dead",
            "Notifications that ran out of attempts.",
            get("dead"),
        ),
        (
            "foresight_outbox_delivered",
            "Notifications delivered.",
            get("delivered"),
        ),
    ]);
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// Stores an accepted batch and hands it to the evaluator; returns its series count and
/// whether it was a duplicate.
async fn store_batch(
    state: &AppState,
    tenant_id: i64,
    tenant: String,
    batch: TelemetryBatch,
    body_zstd: Vec<u8>,
) -> Result<(usize, bool), ApiError> {
    // Reserve room towards the evaluator before storing, so that an acknowledged batch
    // always reaches it.
    let permit = state.tx.try_reserve().map_err(|_| ApiError {
        retry_after_secs: Some(5),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "evaluator queue is full; retry later",
        )
    })?;
    let resource = batch.resource.clone().unwrap_or_default();
    let sequence = batch.sequence;
    let store = state.store.clone();
    let durability: Vec<_> = batch
        .events
        .iter()
        .filter(|e| e.kind() == foresight_proto::v1::EventKind::Durability)
        .cloned()
        .collect();
    let cluster = crate::pipeline::cluster_of(&batch).unwrap_or_default();
    let tenant_name = tenant.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = store.insert_batch(
            tenant_id,
            &resource.agent_instance_id,
            sequence,
            &resource.cluster_id,
            &body_zstd,
        )?;
        if outcome == BatchOutcome::Stored && !durability.is_empty() {
            store.insert_durability_events(&tenant_name, &cluster, &durability)?;
        }
        Ok::<_, crate::store::Error>(outcome)
    })
    .await
    .map_err(internal)?
    .map_err(|e| ApiError {
        retry_after_secs: Some(5),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string())
    })?;
    let series = batch.series.len();
    let duplicate = outcome == BatchOutcome::Duplicate;
    if !duplicate {
        permit.send(Input::Batch(Box::new(Accepted { tenant, batch })));
    }
    Ok((series, duplicate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_parses_and_names_every_path() {
        let doc = openapi_json().unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        // Aliased operations resolve to the same operation.
        assert_eq!(
            paths["/api/v1/query"]["get"],
            paths["/api/v1/query"]["post"]
        );
        assert!(paths.len() >= 30, "{}", paths.len());
    }
}
