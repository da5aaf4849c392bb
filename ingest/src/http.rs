//! The HTTPS API: routes, authentication, limits and the telemetry decoder.

use std::io::Read;
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
    /// Towards the evaluator.
    pub tx: mpsc::Sender<Input>,
    /// Each tenant's alerts as the evaluator last published them.
    pub alerts: crate::amapi::AlertsView,
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

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

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
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(store_error)
}

/// The router.
pub fn router(state: AppState) -> Router {
    let body_limit = state.limits.max_body_bytes;
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/telemetry", post(telemetry))
        .route("/api/v1/write", post(remote_write))
        .route("/readyz", get(readyz))
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
            "/api/v2/silences",
            get(crate::silences::list).post(crate::silences::post),
        )
        .route(
            "/api/v2/silence/{id}",
            get(crate::silences::get_one).delete(crate::silences::expire),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(i64, String), ApiError> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `Authorization: Bearer <api key>`",
            )
        })?;
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || store.authenticate(&key))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()))?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked API key",
            )
        })
}

/// Decompresses `body` per `Content-Encoding`, refusing to inflate past `limit` bytes.
fn decompress(encoding: Option<&str>, body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "decompressed_too_large",
            format!("body decompresses to more than {limit} bytes"),
        )
    };
    let mut out = Vec::new();
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => return Ok(body.to_vec()),
        Some("zstd") => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_encoding",
                    format!("zstd: {e}"),
                )
            })?;
            decoder
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_encoding",
                        format!("zstd: {e}"),
                    )
                })?;
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not supported; use zstd or identity"),
            ));
        }
    }
    if out.len() > limit {
        return Err(too_large());
    }
    Ok(out)
}

/// Decompresses and decodes a telemetry body as received; the entry point for untrusted
/// bytes (and the fuzz target's).
///
/// # Errors
/// [`ApiError`] with the status to answer: 400, 413 or 415.
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<(TelemetryBatch, Vec<u8>), ApiError> {
    let raw = decompress(encoding, body, limits.max_decompressed_bytes)?;
    let batch = decode_batch(&raw, limits).map_err(|m| {
        if m.starts_with("series: ") {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_series", m)
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_batch", m)
        }
    })?;
    Ok((batch, raw))
}

/// Decodes and checks a batch; the error names the problem.
pub fn decode_batch(raw: &[u8], limits: &Limits) -> Result<TelemetryBatch, String> {
    let batch =
        TelemetryBatch::decode(raw).map_err(|e| format!("invalid TelemetryBatch protobuf: {e}"))?;
    let resource = batch.resource.as_ref().ok_or("resource: missing")?;
    if resource.agent_instance_id.is_empty() {
        return Err("resource.agent_instance_id: must not be empty".into());
    }
    if batch.sequence == 0 {
        return Err("sequence: must be at least 1".into());
    }
    if batch.series.len() > limits.max_series_per_batch {
        return Err(format!(
            "series: {} exceeds the limit of {}",
            batch.series.len(),
            limits.max_series_per_batch
        ));
    }
    for (i, s) in batch.series.iter().enumerate() {
        if s.name.is_empty() {
            return Err(format!("series[{i}].name: must not be empty"));
        }
        if let Some(l) = s.labels.iter().find(|l| l.name.is_empty()) {
            return Err(format!(
                "series[{i}].labels: a label with value {:?} has an empty name",
                l.value
            ));
        }
    }
    Ok(batch)
}

async fn telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let metrics = state.metrics.clone();
    let result = store_telemetry(state, headers, body).await;
    match &result {
        Ok((series, duplicate)) => metrics.accepted(*series, *duplicate),
        Err(e) => metrics.rejected(e.code),
    }
    let (series, duplicate) = result?;
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
    let metrics = state.metrics.clone();
    let result = store_remote_write(state, headers, body).await;
    match &result {
        Ok(series) => metrics.accepted(*series, false),
        Err(e) => metrics.rejected(e.code),
    }
    result.map(|_| StatusCode::NO_CONTENT)
}

async fn store_remote_write(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<usize, ApiError> {
    let (tenant_id, tenant) = authenticate(&state, &headers).await?;
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if encoding != "snappy" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_encoding",
            "remote write bodies are snappy-compressed (Content-Encoding: snappy)",
        ));
    }
    let limits = state.limits.clone();
    let batch = tokio::task::spawn_blocking(move || decode_remote_write(&body, &limits))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let raw = batch.encode_to_vec();
    let body_zstd = zstd::bulk::compress(&raw, 3)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let (series, _) = store_batch(&state, tenant_id, tenant, batch, body_zstd).await?;
    Ok(series)
}

/// Decodes a remote-write body into a batch of its own (remote write has no sequence:
/// each request is stored once, as it comes).
///
/// # Errors
/// 400 for bodies that are not snappy or not a write request, 413 past the limits.
pub fn decode_remote_write(body: &[u8], limits: &Limits) -> Result<TelemetryBatch, ApiError> {
    let len = snap::raw::decompress_len(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_encoding",
            format!("snappy: {e}"),
        )
    })?;
    if len > limits.max_decompressed_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "decompressed_too_large",
            format!(
                "body decompresses to more than {} bytes",
                limits.max_decompressed_bytes
            ),
        ));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_encoding",
                format!("snappy: {e}"),
            )
        })?;
    let req = foresight_proto::prometheus::WriteRequest::decode(raw.as_slice()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_protobuf",
            format!("not a remote-write request: {e}"),
        )
    })?;
    if req.timeseries.len() > limits.max_series_per_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_series",
            format!(
                "{} series; at most {} per request",
                req.timeseries.len(),
                limits.max_series_per_batch
            ),
        ));
    }
    let id: [u8; 8] = rand::random();
    let series = req
        .timeseries
        .into_iter()
        .filter_map(|ts| {
            let mut name = None;
            let labels = ts
                .labels
                .into_iter()
                .filter_map(|l| {
                    if l.name == "__name__" {
                        name = Some(l.value);
                        None
                    } else {
                        Some(foresight_proto::v1::Label {
                            name: l.name,
                            value: l.value,
                        })
                    }
                })
                .collect();
            Some(foresight_proto::v1::Series {
                name: name?,
                labels,
                samples: ts
                    .samples
                    .into_iter()
                    .map(|s| foresight_proto::v1::Sample {
                        timestamp_ms: s.timestamp,
                        value: s.value,
                    })
                    .collect(),
            })
        })
        .collect();
    Ok(TelemetryBatch {
        resource: Some(foresight_proto::v1::Resource {
            agent_instance_id: format!("prometheus-remote-write/{}", hex::encode(id)),
            ..Default::default()
        }),
        sequence: 1,
        series,
        ..Default::default()
    })
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

/// Decodes, stores and hands on a telemetry batch; returns its series count and whether
/// it was a duplicate.
async fn store_telemetry(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(usize, bool), ApiError> {
    let (tenant_id, tenant) = authenticate(&state, &headers).await?;
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limits = state.limits.clone();
    let (batch, body_zstd) = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let (batch, raw) = decode_body(encoding.as_deref(), &body, &limits)?;
        let stored = if encoding.as_deref() == Some("zstd") {
            body.to_vec()
        } else {
            zstd::bulk::compress(&raw, 3).map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
        };
        Ok((batch, stored))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;

    store_batch(&state, tenant_id, tenant, batch, body_zstd).await
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
    let outcome = tokio::task::spawn_blocking(move || {
        store.insert_batch(
            tenant_id,
            &resource.agent_instance_id,
            sequence,
            &resource.cluster_id,
            &body_zstd,
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
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
    fn truncated_protobuf_is_named() {
        let batch = TelemetryBatch {
            resource: Some(foresight_proto::v1::Resource {
                agent_instance_id: "a".into(),
                ..Default::default()
            }),
            sequence: 1,
            series: vec![foresight_proto::v1::Series {
                name: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let bytes = batch.encode_to_vec();
        let err = decode_batch(&bytes[..bytes.len() - 1], &Limits::default()).unwrap_err();
        assert!(err.starts_with("invalid TelemetryBatch protobuf"), "{err}");
        assert!(decode_batch(&bytes, &Limits::default()).is_ok());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        // A deterministic smoke run of what fuzz/ explores at length: mutations and
        // truncations of a valid body, in every encoding.
        let valid = TelemetryBatch {
            resource: Some(foresight_proto::v1::Resource {
                agent_instance_id: "a".into(),
                ..Default::default()
            }),
            sequence: 7,
            series: vec![foresight_proto::v1::Series {
                name: "x".into(),
                labels: vec![foresight_proto::v1::Label {
                    name: "l".into(),
                    value: "v".into(),
                }],
                samples: vec![foresight_proto::v1::Sample {
                    timestamp_ms: 1,
                    value: 2.0,
                }],
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let zstd_valid = zstd::bulk::compress(&valid, 3).unwrap();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let limits = Limits::default();
        for i in 0..20_000 {
            let base = if i % 2 == 0 { &valid } else { &zstd_valid };
            let mut bytes = base.clone();
            for _ in 0..(next() % 4) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            bytes.truncate(1 + (next() as usize) % bytes.len());
            for enc in [None, Some("zstd"), Some("br")] {
                if let Err(e) = decode_body(enc, &bytes, &limits) {
                    assert!(e.status().is_client_error(), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn zip_bombs_stop_at_the_limit() {
        let big = vec![0u8; 1 << 20];
        let small = zstd::bulk::compress(&big, 3).unwrap();
        let err = decompress(Some("zstd"), &small, 1000).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
