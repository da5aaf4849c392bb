//! Foresight's own JSON API for a tenant's view of its fleet: clusters (last seen,
//! brokers, agent versions, open alerts) and alerts with their history.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{ApiError, AppState, blocking, now_ms};
use crate::pipeline::ClusterInfo;
use crate::tenants::{Scope, authorize};

/// A tenant's open (not resolved) alerts by their `cluster` label, read once from what
/// the dispatcher published.
fn open_alerts(state: &AppState, tenant: &str) -> HashMap<String, Vec<Value>> {
    let now = now_ms();
    let mut by_cluster: HashMap<String, Vec<Value>> = HashMap::new();
    let Ok(all) = state.alerts.read() else {
        return by_cluster;
    };
    for a in all.get(tenant).into_iter().flatten() {
        if a.alert.resolved_at(now) {
            continue;
        }
        let Some(cluster) = a.alert.labels.get("cluster") else {
            continue;
        };
        by_cluster.entry(cluster.clone()).or_default().push(json!({
            "labels": a.alert.labels,
            "annotations": a.alert.annotations,
            "startsAt": foresight_notifier::payload::rfc3339_ms(a.alert.starts_at_ms),
            "fingerprint": a.alert.fingerprint,
            "inhibited": a.inhibited,
        }));
    }
    by_cluster
}

fn cluster_json(info: &ClusterInfo, alerts: Vec<Value>) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    v["last_seen"] = json!(foresight_notifier::payload::rfc3339_ms(info.last_seen_ms));
    v["open_alerts"] = json!(alerts.len());
    v["alerts"] = Value::Array(alerts);
    v
}

/// `GET /api/v1/clusters`: the tenant's clusters with their open alerts.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (_, tenant) = authorize(&state, &headers, Scope::Read).await?;
    let clusters: Vec<ClusterInfo> = state
        .clusters
        .read()
        .map(|all| {
            all.get(&tenant)
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let mut alerts = open_alerts(&state, &tenant);
    Ok(Json(Value::Array(
        clusters
            .iter()
            .map(|c| cluster_json(c, alerts.remove(&c.name).unwrap_or_default()))
            .collect(),
    )))
}

/// `GET /api/v1/clusters/{name}`: one cluster; 404 when it is not the tenant's.
pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, tenant) = authorize(&state, &headers, Scope::Read).await?;
    let info = state
        .clusters
        .read()
        .ok()
        .and_then(|all| all.get(&tenant).and_then(|c| c.get(&name)).cloned())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("cluster {name} not found"),
            )
        })?;
    let alerts = open_alerts(&state, &tenant)
        .remove(&name)
        .unwrap_or_default();
    Ok(Json(cluster_json(&info, alerts)))
}

/// Filters of the alert history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only this alert name.
    pub alertname: Option<String>,
    /// Only changes at or after this RFC 3339 time.
    pub since: Option<String>,
    /// At most this many (default 500, at most 10000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/alerts/history`: the tenant's alert state changes, newest first.
pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let (_, tenant) = authorize(&state, &headers, Scope::Read).await?;
    let since = match &q.since {
        Some(s) => crate::http::rfc3339_field("invalid_request", "since", s)?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(500).min(10_000);
    let store = state.store.clone();
    let rows = blocking(move || store.alert_history(&tenant, q.alertname.as_deref(), since, limit))
        .await?;
    Ok(Json(Value::Array(
        rows.iter()
            .map(|h| {
                let mut v = serde_json::to_value(h).unwrap_or_default();
                v["at"] = json!(foresight_notifier::payload::rfc3339_ms(h.at_ms));
                v
            })
            .collect(),
    )))
}
