//! Alertmanager's API v2 for alerts and status, scoped to the caller's tenant, so that
//! a Prometheus can use Foresight as its Alertmanager (`POST /api/v2/alerts`) and
//! `amtool alert query` lists what Foresight holds (`GET /api/v2/alerts`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use foresight_notifier::group::GroupAlert;
use foresight_notifier::matchers::parse_matchers;
use foresight_notifier::payload::rfc3339_ms;
use foresight_notifier::silence::Silence;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{Ingest, Read, Tenant};
use crate::api::error::{ApiError, internal, rfc3339_field};
use crate::api::route::Route;
use crate::api::state::{AppState, check_rate};
use crate::evaluator::Input;
use foresight_proto::now_ms;

/// The Alertmanager API's routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v2/alerts", list),
        Route::post("/api/v2/alerts", post),
        Route::get("/api/v2/status", status),
    ]
}

/// One alert of `POST /api/v2/alerts`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    /// Identity; `alertname` is expected.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub starts_at: Option<String>,
    /// RFC 3339; now plus the resolve timeout when absent; in the past means resolved.
    #[serde(default)]
    pub ends_at: Option<String>,
    /// Link to the source.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_alert", message)
}

/// Checks posted alerts and turns them into the notifier's, as Alertmanager does: a
/// missing start is the end when one is given, else now; a missing end is now plus
/// `resolve_timeout_ms`.
///
/// # Errors
/// An [`ApiError`] 400 naming the alert and the problem.
pub fn to_group_alerts(
    posted: Vec<PostableAlert>,
    now: i64,
    resolve_timeout_ms: i64,
) -> Result<Vec<GroupAlert>, ApiError> {
    let mut out = Vec::with_capacity(posted.len());
    for (i, a) in posted.into_iter().enumerate() {
        let labels: BTreeMap<String, String> = a
            .labels
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if labels.is_empty() {
            return Err(bad(format!("alerts[{i}]: labels must not be empty")));
        }
        for name in labels.keys() {
            let mut chars = name.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(bad(format!("alerts[{i}]: invalid label name {name:?}")));
            }
        }
        let ends_given = match a.ends_at.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(rfc3339_field(
                "bad_alert",
                &format!("alerts[{i}].endsAt"),
                s,
            )?),
            None => None,
        };
        // As Alertmanager: without a start, an alert starts at its end if it has one
        // (a resolved alert posted once), else now.
        let starts = match a.starts_at.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => rfc3339_field("bad_alert", &format!("alerts[{i}].startsAt"), s)?,
            None => ends_given.unwrap_or(now),
        };
        let ends = ends_given.unwrap_or(now + resolve_timeout_ms);
        if ends < starts {
            return Err(bad(format!("alerts[{i}]: endsAt is before startsAt")));
        }
        let fingerprint = foresight_proto::v1::Alert::fingerprint_of(&labels);
        out.push(GroupAlert {
            labels,
            annotations: a.annotations,
            starts_at_ms: starts,
            ends_at_ms: ends,
            generator_url: a.generator_url,
            fingerprint,
        });
    }
    Ok(out)
}

/// `POST /api/v2/alerts`.
async fn post(
    Tenant {
        id: tenant_id,
        name: tenant,
        ..
    }: Tenant<Ingest>,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    check_rate(&state, tenant_id)?;
    let posted: Vec<PostableAlert> =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a list of alerts: {e}")))?;
    let alerts = to_group_alerts(posted, now_ms(), state.resolve_timeout_ms)?;
    state
        .tx
        .try_send(Input::Alerts { tenant, alerts })
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the evaluator is behind; retry shortly",
            )
        })?;
    Ok(StatusCode::OK)
}

/// Query of `GET /api/v2/alerts`.
#[derive(Debug, Deserialize, Default)]
pub struct AlertsQuery {
    active: Option<bool>,
    silenced: Option<bool>,
    inhibited: Option<bool>,
    #[serde(default)]
    filter: Vec<String>,
    receiver: Option<String>,
}

/// `GET /api/v2/alerts`.
async fn list(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let mut query = AlertsQuery::default();
    for (k, v) in q {
        let flag = || v != "false";
        match k.as_str() {
            "active" => query.active = Some(flag()),
            "silenced" => query.silenced = Some(flag()),
            "inhibited" => query.inhibited = Some(flag()),
            "filter" => query.filter.push(v),
            "receiver" => query.receiver = Some(v),
            _ => {}
        }
    }
    let mut filters = Vec::new();
    for f in &query.filter {
        filters.extend(parse_matchers(f).map_err(|e| bad(format!("filter: {e}")))?);
    }
    let receiver = query
        .receiver
        .as_deref()
        .map(|r| regex::Regex::new(&format!("^(?:{r})$")))
        .transpose()
        .map_err(|e| bad(format!("receiver: {e}")))?;
    let store = state.store.clone();
    let t = tenant.clone();
    let silences: Vec<Silence> =
        tokio::task::spawn_blocking(move || foresight_notifier::OutboxStore::silences(&*store, &t))
            .await
            .map_err(internal)?
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store", e.to_string()))?;
    let now = now_ms();
    let views = state
        .alerts
        .read()
        .map(|m| m.get(&tenant).cloned().unwrap_or_default())
        .unwrap_or_default();
    let mut out = Vec::new();
    for v in views {
        if v.alert.resolved_at(now) || !filters.iter().all(|m| m.matches(&v.alert.labels)) {
            continue;
        }
        if let Some(r) = &receiver
            && !v.receivers.iter().any(|n| r.is_match(n))
        {
            continue;
        }
        let silenced_by: Vec<&str> = silences
            .iter()
            .filter(|s| s.mutes(&v.alert.labels, now))
            .map(|s| s.id.as_str())
            .collect();
        let silenced = !silenced_by.is_empty();
        let active = !silenced && !v.inhibited;
        if query.active == Some(false) && active
            || query.silenced == Some(false) && silenced
            || query.inhibited == Some(false) && v.inhibited
        {
            continue;
        }
        out.push(json!({
            "labels": v.alert.labels,
            "annotations": v.alert.annotations,
            "startsAt": rfc3339_ms(v.alert.starts_at_ms),
            "endsAt": rfc3339_ms(v.alert.ends_at_ms),
            "updatedAt": rfc3339_ms(now),
            "generatorURL": v.alert.generator_url,
            "fingerprint": v.alert.fingerprint,
            "receivers": v.receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
            "status": {
                "state": if active { "active" } else { "suppressed" },
                "silencedBy": silenced_by,
                "inhibitedBy": if v.inhibited { vec!["inhibit_rule"] } else { Vec::new() },
                "mutedBy": [],
            },
        }));
    }
    Ok(Json(out))
}

/// `GET /api/v2/status`.
async fn status(_: Tenant<Read>, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "cluster": {"name": "foresight", "status": "ready", "peers": []},
        "versionInfo": {
            "version": env!("CARGO_PKG_VERSION"),
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "none (Foresight, Rust)"
        },
        "config": {"original": &*state.notify_config_text},
        "uptime": rfc3339_ms(state.started_at_ms),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(json: serde_json::Value) -> Vec<PostableAlert> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_missing_start_is_the_end_or_now_as_in_alertmanager() {
        let now = 1_000_000;
        let resolved = posted(serde_json::json!([
            {"labels": {"alertname": "A"}, "endsAt": "1970-01-01T00:00:10Z"},
            {"labels": {"alertname": "B"}},
        ]));
        let got = to_group_alerts(resolved, now, 300_000).unwrap();
        assert_eq!((got[0].starts_at_ms, got[0].ends_at_ms), (10_000, 10_000));
        assert_eq!(
            (got[1].starts_at_ms, got[1].ends_at_ms),
            (now, now + 300_000)
        );
        let backwards = posted(serde_json::json!([{
            "labels": {"alertname": "C"},
            "startsAt": "1970-01-01T00:00:20Z",
            "endsAt": "1970-01-01T00:00:10Z",
        }]));
        assert!(to_group_alerts(backwards, now, 300_000).is_err());
    }
}
