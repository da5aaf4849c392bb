//! The ingest endpoints: the agent's batches, Prometheus remote write and OTLP/HTTP
//! metrics. Each authorizes an ingest key, takes a token from the tenant's bucket,
//! decodes off the async workers, stores the batch and hands it to the evaluator.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use foresight_decode::DecodeLimits;
use foresight_proto::Message;
use foresight_proto::v1::TelemetryBatch;
use serde_json::json;

use crate::api::auth::{Ingest, Tenant};
use crate::api::error::{ApiError, internal};
use crate::api::route::Route;
use crate::api::state::{AppState, check_rate};
use crate::evaluator::views::cluster_of;
use crate::evaluator::{Accepted, Input};
use crate::store::BatchOutcome;

/// The ingest routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::post("/v1/telemetry", telemetry),
        Route::post("/api/v1/write", remote_write),
        Route::post("/v1/metrics", otlp_metrics),
    ]
}

/// The key's answer; refusals are counted like the decoder's.
type IngestKey = Result<Tenant<Ingest>, ApiError>;

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

/// What every ingest endpoint does around its decoder: takes a token from the tenant's
/// bucket, decodes off the async workers (the decoder returns the batch and its stored
/// form), stores and hands on the batch, and counts the outcome. Returns the series
/// count and whether the batch was a duplicate.
async fn ingest(
    state: AppState,
    key: IngestKey,
    decode: impl FnOnce(&DecodeLimits) -> Result<(TelemetryBatch, Vec<u8>), ApiError> + Send + 'static,
) -> Result<(usize, bool), ApiError> {
    let metrics = state.metrics.clone();
    let result = async {
        let tenant = key?;
        check_rate(&state, tenant.id)?;
        let limits = state.limits.decode();
        let (batch, stored) = tokio::task::spawn_blocking(move || decode(&limits))
            .await
            .map_err(internal)??;
        store_batch(&state, tenant.id, tenant.name, batch, stored).await
    }
    .await;
    match &result {
        Ok((series, duplicate)) => metrics.accepted(*series, *duplicate),
        Err(e) => metrics.rejected(e.code()),
    }
    result
}

/// `POST /v1/telemetry`: the agent's batches (protobuf; zstd, gzip or identity).
async fn telemetry(
    key: IngestKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let encoding = header(&headers, "content-encoding");
    let (series, duplicate) = ingest(state, key, move |limits| {
        let (batch, raw) = foresight_decode::decode_body(encoding.as_deref(), &body, limits)?;
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
    key: IngestKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let snappy = header(&headers, "content-encoding").as_deref() == Some("snappy");
    ingest(state, key, move |limits| {
        if !snappy {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_encoding",
                "remote write bodies are snappy-compressed (Content-Encoding: snappy)",
            ));
        }
        let batch = foresight_decode::decode_remote_write(&body, limits)?;
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
    key: IngestKey,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // Checked after the key, like every other refusal.
    let json = foresight_decode::otlp_is_json(header(&headers, "content-type").as_deref());
    let answer_json = matches!(json, Ok(true));
    let encoding = header(&headers, "content-encoding");
    ingest(state, key, move |limits| {
        let batch = foresight_decode::decode_otlp(json?, encoding.as_deref(), &body, limits)?;
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

/// Stores an accepted batch and hands it to the evaluator; returns its series count and
/// whether it was a duplicate.
async fn store_batch(
    state: &AppState,
    tenant_id: i64,
    tenant: String,
    batch: TelemetryBatch,
    body_zstd: Vec<u8>,
) -> Result<(usize, bool), ApiError> {
    if let Some(bus) = &state.bus {
        // Cluster mode: Kafka is where the batch is durable; the evaluator that owns
        // its partition skips a retried one.
        let resource = batch.resource.clone().unwrap_or_default();
        let cluster = cluster_of(&batch).unwrap_or_default();
        bus.publish(
            &tenant,
            &cluster,
            &resource.agent_instance_id,
            batch.sequence,
            &body_zstd,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, tenant = %tenant, "A batch was not acknowledged by Kafka.");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "bus", e.to_string()).retry_after(5)
        })?;
        let _ = tenant_id;
        return Ok((batch.series.len(), false));
    }
    if state.clustered {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ingest",
            "this node does not run the ingest role; send telemetry to one that does",
        )
        .retry_after(5));
    }
    // Reserve room towards the evaluator before storing, so that an acknowledged batch
    // always reaches it.
    let permit = state.tx.try_reserve().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "evaluator queue is full; retry later",
        )
        .retry_after(5)
    })?;
    let resource = batch.resource.clone().unwrap_or_default();
    let sequence = batch.sequence;
    let store = state.store.clone();
    let durability = crate::evaluator::views::durability_events(&batch);
    let cluster = cluster_of(&batch).unwrap_or_default();
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
    .map_err(|e| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()).retry_after(5)
    })?;
    let series = batch.series.len();
    let duplicate = outcome == BatchOutcome::Duplicate;
    if !duplicate {
        permit.send(Input::Batch(Box::new(Accepted { tenant, batch })));
    }
    Ok((series, duplicate))
}
