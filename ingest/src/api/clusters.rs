//! Foresight's own JSON API for a tenant's view of its fleet: clusters (last seen,
//! brokers, versions, configs, log dirs, open alerts, the durability ledger), each
//! cluster's support context, and alerts with their history.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{Read, Tenant};
use crate::api::error::{ApiError, blocking, rfc3339_field};
use crate::api::route::Route;
use crate::api::state::AppState;
use crate::evaluator::views::{ClusterInfo, TOP_TOPICS};
use crate::store::DurabilityLedger;
use foresight_proto::now_ms;

/// The clusters API's routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/clusters", list),
        Route::get("/api/v1/clusters/{name}", get_one),
        Route::get("/api/v1/clusters/{name}/context", context),
        Route::get("/api/v1/alerts/history", history),
    ]
}

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

fn cluster_json(info: &ClusterInfo, alerts: Vec<Value>, ledger: Option<DurabilityLedger>) -> Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    v["last_seen"] = json!(foresight_notifier::payload::rfc3339_ms(info.last_seen_ms));
    v["open_alerts"] = json!(alerts.len());
    v["alerts"] = Value::Array(alerts);
    if let Some(l) = ledger {
        v["durability"] = ledger_json(&l);
    }
    v
}

/// The ledger with RFC 3339 times and its windows keyed `1d`, `7d`, `30d`.
fn ledger_json(l: &DurabilityLedger) -> Value {
    let mut windows = serde_json::Map::new();
    for w in &l.windows {
        windows.insert(
            format!("{}d", w.days),
            serde_json::to_value(w).unwrap_or_default(),
        );
    }
    json!({
        "windows": windows,
        "events": l.events.iter().map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            v["at"] = json!(foresight_notifier::payload::rfc3339_ms(e.at_ms));
            v
        }).collect::<Vec<_>>(),
    })
}

/// The ledgers of `names`, read in one blocking call.
async fn ledgers(
    state: &AppState,
    tenant: &str,
    names: Vec<String>,
    events: usize,
) -> Result<HashMap<String, DurabilityLedger>, ApiError> {
    let store = state.history.clone();
    let tenant = tenant.to_string();
    let now = now_ms();
    blocking(move || {
        names
            .into_iter()
            .map(|n| {
                let l = store.ledger(&tenant, &n, now, events)?;
                Ok((n, l))
            })
            .collect::<Result<HashMap<_, _>, crate::store::Error>>()
    })
    .await
}

fn cluster_info(state: &AppState, tenant: &str, name: &str) -> Result<ClusterInfo, ApiError> {
    state
        .clusters
        .read()
        .ok()
        .and_then(|all| all.get(tenant).and_then(|c| c.get(name)).cloned())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("cluster {name} not found"),
            )
        })
}

/// `GET /api/v1/clusters`: the tenant's clusters with their open alerts.
async fn list(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
) -> Result<Json<Value>, ApiError> {
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
    let mut ledgers = ledgers(
        &state,
        &tenant,
        clusters.iter().map(|c| c.name.clone()).collect(),
        0,
    )
    .await?;
    Ok(Json(Value::Array(
        clusters
            .iter()
            .map(|c| {
                cluster_json(
                    c,
                    alerts.remove(&c.name).unwrap_or_default(),
                    ledgers.remove(&c.name),
                )
            })
            .collect(),
    )))
}

/// `GET /api/v1/clusters/{name}`: one cluster; 404 when it is not the tenant's.
async fn get_one(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = cluster_info(&state, &tenant, &name)?;
    let alerts = open_alerts(&state, &tenant)
        .remove(&name)
        .unwrap_or_default();
    let ledger = ledgers(&state, &tenant, vec![name.clone()], 20)
        .await?
        .remove(&name);
    Ok(Json(cluster_json(&info, alerts, ledger)))
}

/// A PromQL string literal of `s`.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `GET /api/v1/clusters/{name}/context`: what a support case starts from, in one
/// document: the cluster (shape, versions, features, broker configs with the risky
/// ones and drift, log dirs, open alerts, durability ledger), its topics by size, growth
/// and rate, and its consumer groups with lag. `foresight clusters context` writes it
/// to a file.
async fn context(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = cluster_info(&state, &tenant, &name)?;
    let alerts = open_alerts(&state, &tenant)
        .remove(&name)
        .unwrap_or_default();
    let ledger = ledgers(&state, &tenant, vec![name.clone()], 50)
        .await?
        .remove(&name);
    let c = quoted(&name);
    let queries = vec![
        format!(
            "topk({n}, kafka_topic_size_bytes{{cluster={c}}})",
            n = TOP_TOPICS
        ),
        format!("delta(kafka_topic_size_bytes{{cluster={c}}}[1h])"),
        format!(
            "topk({n}, sum by (topic) (rate(kafka_topic_partition_current_offset{{cluster={c}}}[15m])))",
            n = TOP_TOPICS
        ),
        format!(
            "topk({n}, kafka_consumergroup_lag_sum{{cluster={c}}} > 0)",
            n = TOP_TOPICS
        ),
        format!("max by (consumergroup, topic) (kafka_consumergroup_lag_seconds{{cluster={c}}})"),
    ];
    let now = now_ms();
    let answers = crate::api::promapi::instant_vectors(&state, tenant.clone(), queries, now)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    let by = |i: usize, keys: &[&str]| -> BTreeMap<Vec<String>, f64> {
        answers
            .get(i)
            .and_then(|r| r.as_ref().ok())
            .into_iter()
            .flatten()
            .map(|(l, v)| {
                (
                    keys.iter()
                        .map(|k| l.get(k).unwrap_or_default().to_string())
                        .collect(),
                    *v,
                )
            })
            .collect()
    };
    let sizes = by(0, &["topic"]);
    let growth = by(1, &["topic"]);
    let rates = by(2, &["topic"]);
    let mut topics: Vec<&Vec<String>> = sizes.keys().chain(rates.keys()).collect();
    topics.sort_unstable();
    topics.dedup();
    let mut topics: Vec<Value> = topics
        .into_iter()
        .map(|t| {
            json!({
                "topic": t[0],
                "size_bytes": sizes.get(t),
                "growth_bytes_1h": growth.get(t),
                "messages_per_second": rates.get(t),
            })
        })
        .collect();
    topics.sort_by(|a, b| {
        let size = |v: &Value| v["size_bytes"].as_f64().unwrap_or(-1.0);
        size(b).total_cmp(&size(a))
    });
    let lag_seconds = by(4, &["consumergroup", "topic"]);
    let mut groups: Vec<(Vec<String>, f64)> =
        by(3, &["consumergroup", "topic"]).into_iter().collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(k, lag)| {
            json!({
                "consumergroup": k[0],
                "topic": k[1],
                "lag": lag,
                "lag_seconds": lag_seconds.get(&k).filter(|v| v.is_finite()),
            })
        })
        .collect();
    Ok(Json(json!({
        "generated_at": foresight_notifier::payload::rfc3339_ms(now),
        "cluster": cluster_json(&info, alerts, ledger),
        "facts": info.facts(),
        "topics": topics,
        "lagging_groups": groups,
    })))
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
async fn history(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = match &q.since {
        Some(s) => rfc3339_field("invalid_request", "since", s)?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(500).min(10_000);
    let store = state.history.clone();
    let rows =
        blocking(move || store.history(&tenant, q.alertname.as_deref(), since, limit)).await?;
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
