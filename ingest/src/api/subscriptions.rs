//! Webhook subscriptions through the API, per tenant: create (URL and filters on
//! category, severity and cluster; the signing secret is generated and shown once),
//! list, delete, send a test ping, and see recent deliveries. URLs that resolve to
//! loopback, private or link-local addresses are refused unless the operator allows
//! them (`allow_private_webhook_urls`).

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use foresight_notifier::payload::rfc3339_ms;
use foresight_notifier::subscription::Subscription;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{Admin, Read, Tenant};
use crate::api::error::{ApiError, blocking};
use crate::api::route::Route;
use crate::api::state::AppState;
use crate::store;
use foresight_proto::now_ms;

/// The subscriptions API's routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/subscriptions", list),
        Route::post("/api/v1/subscriptions", create),
        Route::delete("/api/v1/subscriptions/{id}", delete),
        Route::post("/api/v1/subscriptions/{id}/test", test),
        Route::get("/api/v1/deliveries", all_deliveries),
        Route::get("/api/v1/subscriptions/{id}/deliveries", deliveries),
    ]
}

/// Filters of a new subscription; an empty list lets every value through.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    #[serde(default)]
    category: Vec<String>,
    #[serde(default)]
    severity: Vec<String>,
    #[serde(default)]
    cluster: Vec<String>,
}

/// Body of `POST /api/v1/subscriptions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    url: String,
    #[serde(default)]
    filters: Filters,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_subscription", message)
}

/// Whether `ip` is loopback, private, link-local, shared (CGNAT) or unspecified.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// Checks that `url` is http(s) and, unless `allow_internal`, that none of the
/// addresses its host resolves to is internal.
///
/// # Errors
/// An [`ApiError`] 400 saying why.
pub async fn check_url(url: &str, allow_internal: bool) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("url: must be http or https"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| bad("url: no host"))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    if allow_internal {
        return Ok(());
    }
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| bad(format!("url: cannot resolve {host}: {e}")))?
        .map(|a| a.ip())
        .collect();
    if let Some(ip) = addrs.iter().find(|ip| is_internal(**ip)) {
        return Err(bad(format!(
            "url: {host} resolves to {ip}, a loopback, private or link-local address; \
             the operator can allow these with allow_private_webhook_urls"
        )));
    }
    Ok(())
}

fn view(s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "url": s.url,
        "filters": {"category": s.categories, "severity": s.severities, "cluster": s.clusters},
        "created_at": rfc3339_ms(s.created_at_ms),
        "enabled": s.disabled_reason.is_none(),
        "disabled_reason": s.disabled_reason,
        "failing_since": s.failing_since_ms.map(rfc3339_ms),
    })
}

pub(crate) async fn find(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Subscription, ApiError> {
    let (store, t, i) = (
        state.subscriptions.clone(),
        tenant.to_string(),
        id.to_string(),
    );
    blocking(move || {
        store
            .get_subscription(&t, &i)?
            .ok_or_else(|| store::Error::NotFound(format!("subscription {i}")))
    })
    .await
}

/// `POST /api/v1/subscriptions`: answers 201 with the secret, shown this once.
async fn create(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewSubscription =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a subscription: {e}")))?;
    check_url(&new.url, state.allow_private_webhook_urls).await?;
    let id: [u8; 8] = rand::random();
    let secret: [u8; 32] = rand::random();
    let sub = Subscription {
        id: hex::encode(id),
        tenant,
        url: new.url,
        secret: hex::encode(secret),
        categories: new.filters.category,
        severities: new.filters.severity,
        clusters: new.filters.cluster,
        failing_since_ms: None,
        disabled_reason: None,
        created_at_ms: now_ms(),
    };
    let store = state.subscriptions.clone();
    let stored = sub.clone();
    blocking(move || store.create_subscription(&stored)).await?;
    let mut body = view(&sub);
    body["secret"] = json!(sub.secret);
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /api/v1/subscriptions`.
async fn list(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let store = state.subscriptions.clone();
    let subs = blocking(move || store.list_subscriptions(&tenant)).await?;
    Ok(Json(subs.iter().map(view).collect()))
}

/// `DELETE /api/v1/subscriptions/{id}`.
async fn delete(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.subscriptions.clone();
    blocking(move || store.delete_subscription(&tenant, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/subscriptions/{id}/test`: sends a signed ping now and says how the
/// receiver answered.
async fn test(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(match test_ping(&state, &tenant, &id).await? {
        Ok(()) => json!({"delivered": true}),
        Err(e) => json!({"delivered": false, "error": e}),
    }))
}

/// Sends subscription `id` of `tenant` a signed test ping now: how the receiver
/// answered, or 404 when the tenant has no such subscription.
pub(crate) async fn test_ping(
    state: &AppState,
    tenant: &str,
    id: &str,
) -> Result<Result<(), String>, ApiError> {
    let sub = find(state, tenant, id).await?;
    let receiver = sub.sender(state.client.clone());
    let body = json!({
        "version": "4", "status": "test", "receiver": sub.receiver(), "alerts": [],
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "", "groupKey": format!("sub/{}:test", sub.id), "truncatedAlerts": 0,
    });
    let key = format!("{tenant}/sub/{}/test/{}", sub.id, now_ms());
    Ok(receiver
        .send(body.to_string().as_bytes(), &key, now_ms() / 1000)
        .await
        .map_err(|e| e.to_string()))
}

/// `GET /api/v1/subscriptions/{id}/deliveries`: the latest 50.
async fn deliveries(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let sub = find(&state, &tenant, &id).await?;
    let store = state.subscriptions.clone();
    let list = blocking(move || store.receiver_deliveries(&tenant, &sub.receiver(), 50)).await?;
    Ok(Json(list.iter().map(delivery).collect()))
}

/// A delivery as the API shows it.
fn delivery(d: &store::Delivery) -> Value {
    json!({
        "id": d.id, "status": d.status, "attempts": d.attempts,
        "last_error": if d.last_error.is_empty() { Value::Null } else { json!(d.last_error) },
        "created_at": rfc3339_ms(d.created_at_ms),
    })
}

/// `GET /api/v1/deliveries?status=dead|pending|delivered`: the tenant's latest 100
/// notifications in that state (default dead), with their last error.
async fn all_deliveries(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let status = q.get("status").cloned().unwrap_or_else(|| "dead".into());
    if !matches!(status.as_str(), "dead" | "pending" | "delivered") {
        return Err(bad("status: one of dead, pending, delivered"));
    }
    let store = state.subscriptions.clone();
    let list = blocking(move || store.status_deliveries(&tenant, &status, 100)).await?;
    Ok(Json(
        list.iter()
            .map(|d| {
                let mut v = delivery(d);
                v["receiver"] = json!(d.receiver);
                v
            })
            .collect(),
    ))
}
