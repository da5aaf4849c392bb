//! The operator's endpoints without a key: health, readiness, the service's own
//! metrics and the OpenAPI document.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::auth::Public;
use crate::api::error::ApiError;
use crate::api::route::Route;
use crate::api::state::AppState;

/// The operations routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/healthz", healthz),
        Route::get("/readyz", readyz),
        Route::get("/metrics", metrics),
        Route::get("/openapi.json", openapi),
    ]
}

/// The OpenAPI document of the HTTP API, written as YAML beside the code.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

/// The OpenAPI document as JSON.
///
/// # Errors
/// The YAML does not parse (a test keeps it parsing).
pub fn openapi_json() -> Result<serde_json::Value, String> {
    serde_saphyr::from_str(OPENAPI_YAML).map_err(|e| e.to_string())
}

/// `GET /healthz`: the process answers.
async fn healthz(_: Public) -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /openapi.json`.
async fn openapi(_: Public) -> Response {
    match openapi_json() {
        Ok(v) => Json(v).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e).into_response(),
    }
}

/// `GET /readyz`: 200 when the store answers and the evaluator runs, else 503.
async fn readyz(_: Public, State(state): State<AppState>) -> Response {
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
async fn metrics(_: Public, State(state): State<AppState>) -> Response {
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
