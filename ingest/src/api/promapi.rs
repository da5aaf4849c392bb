//! Prometheus' HTTP query API over a tenant's series, so that Grafana can add Foresight
//! as a Prometheus data source: `/api/v1/query`, `/api/v1/query_range`,
//! `/api/v1/series`, `/api/v1/labels`, `/api/v1/label/{name}/values`, `/api/v1/rules`
//! and `/api/v1/alerts`, with Prometheus' JSON envelope and error types. Parameters come
//! from the query string or, as Grafana sends them by default, a form-encoded POST body.
//!
//! The series live in memory on the evaluator's task; queries run there, over what it
//! keeps (`query_retention`, and at least what the rules read).

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use foresight_rules::promql::{Evaluator, Value as PromValue, format_value, selected_series};
use foresight_rules::store::Labels;
use foresight_rules::{RuleEngine, SeriesStore};
use serde_json::{Value, json};

use crate::api::auth::{Read, Tenant};
use crate::api::error::ApiError;
use crate::api::route::Route;
use crate::api::state::AppState;
use crate::evaluator::Query;
use foresight_proto::now_ms;

/// The Prometheus query API's routes (Grafana sends its queries as GET or as POST).
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/query", query),
        Route::post("/api/v1/query", query),
        Route::get("/api/v1/query_range", query_range),
        Route::post("/api/v1/query_range", query_range),
        Route::get("/api/v1/series", series),
        Route::post("/api/v1/series", series),
        Route::get("/api/v1/labels", labels),
        Route::post("/api/v1/labels", labels),
        Route::get("/api/v1/label/{name}/values", label_values),
        Route::get("/api/v1/rules", rules),
        Route::get("/api/v1/alerts", alerts),
    ]
}

/// Most points a range query may return per series, as Prometheus allows.
const MAX_POINTS: i64 = 11_000;

/// Most instants one query may evaluate (points times subquery steps): queries run on
/// the evaluator's task, so one tenant's costly query must not hold up everyone's rules.
const MAX_EVALUATIONS: u64 = 2_000_000;

/// Refuses an expression that would evaluate more than [`MAX_EVALUATIONS`] instants over
/// `points` points.
fn check_cost(expr: &promql_parser::parser::Expr, points: u64) -> Result<(), PromError> {
    let n = foresight_rules::promql::evaluation_steps(expr).saturating_mul(points);
    if n > MAX_EVALUATIONS {
        return Err(PromError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "execution",
            message: format!(
                "query would evaluate {n} instants (points times subquery steps); at most {MAX_EVALUATIONS}: use a coarser step or a shorter range"
            ),
        });
    }
    Ok(())
}

/// An error in Prometheus' shape: `{"status":"error","errorType":...,"error":...}`.
#[derive(Debug)]
pub struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl PromError {
    fn bad(message: impl Into<String>) -> Self {
        PromError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }
}

impl From<ApiError> for PromError {
    fn from(e: ApiError) -> Self {
        PromError {
            status: e.status(),
            kind: match e.status() {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
                _ => "internal",
            },
            message: e.message().to_string(),
        }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

fn success(data: Value) -> Json<Value> {
    Json(json!({"status": "success", "data": data}))
}

/// Request parameters from the query string and a form body, in order.
fn params(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        out.extend(url::form_urlencoded::parse(body).into_owned());
    }
    out
}

fn param<'a>(p: &'a [(String, String)], name: &str) -> Option<&'a str> {
    p.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Times beyond this many ms from 1970 are refused, so that windows and steps around
/// them cannot overflow (about 285,000 years either way).
const MAX_ABS_TIME_MS: i64 = 1 << 53;

/// A time as Prometheus accepts it: Unix seconds (with a fraction) or RFC 3339.
fn parse_time(name: &str, s: &str) -> Result<i64, PromError> {
    let invalid = || {
        PromError::bad(format!(
            "invalid parameter {name:?}: cannot parse {s:?} to a valid timestamp"
        ))
    };
    let ms = match s.parse::<f64>() {
        Ok(secs) if secs.is_finite() => (secs * 1000.0).round() as i64,
        _ => s
            .parse::<jiff::Timestamp>()
            .map(|t| t.as_millisecond())
            .map_err(|_| invalid())?,
    };
    if ms.abs() > MAX_ABS_TIME_MS {
        return Err(invalid());
    }
    Ok(ms)
}

/// A step or duration: seconds (with a fraction) or a Prometheus duration.
fn parse_step(s: &str) -> Result<i64, PromError> {
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
    {
        return Ok(((secs * 1000.0).round() as i64).min(MAX_ABS_TIME_MS));
    }
    foresight_rules::rulefile::parse_duration(s)
        .map(|d| d.as_millis().min(MAX_ABS_TIME_MS as u128) as i64)
        .map_err(|_| {
            PromError::bad(format!(
                "invalid parameter \"step\": cannot parse {s:?} to a valid duration"
            ))
        })
}

/// A timestamp as Prometheus writes it: seconds, as an integer when whole.
fn ts_json(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn metric_json(l: &Labels) -> Value {
    Value::Object(
        l.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// A matrix result: each series with its points.
fn matrix_json<'a>(series: impl Iterator<Item = (&'a Labels, &'a [(i64, f64)])>) -> Value {
    json!({
        "resultType": "matrix",
        "result": series.map(|(l, pts)| json!({
            "metric": metric_json(l),
            "values": pts.iter().map(|(t, v)| json!([ts_json(*t), format_value(*v)])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Runs `f` on the evaluator's task against the tenant's series (none yet: an empty
/// store).
async fn on_series<T: Send + 'static>(
    state: &AppState,
    tenant: String,
    f: impl FnOnce(&SeriesStore) -> T + Send + 'static,
) -> Result<T, PromError> {
    on_pipeline(state, tenant, move |t| match t {
        Some((store, _)) => f(store),
        None => f(&SeriesStore::new(0)),
    })
    .await
}

/// Runs `f` on the evaluator's task against the tenant's series and rule engine.
async fn on_pipeline<T: Send + 'static>(
    state: &AppState,
    tenant: String,
    f: impl FnOnce(Option<(&SeriesStore, &RuleEngine)>) -> T + Send + 'static,
) -> Result<T, PromError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let query = Query {
        tenant,
        run: Box::new(move |t| {
            let _ = tx.send(f(t));
        }),
    };
    let unavailable = || PromError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "unavailable",
        message: "the evaluator is not running".into(),
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        state.queries.send(query),
    )
    .await
    .map_err(|_| PromError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "timeout",
        message: "the evaluator is busy; retry".into(),
    })?
    .map_err(|_| unavailable())?;
    rx.await.map_err(|_| unavailable())
}

fn parse_expr(q: Option<&str>) -> Result<promql_parser::parser::Expr, PromError> {
    let q = q.ok_or_else(|| PromError::bad("invalid parameter \"query\": missing"))?;
    foresight_rules::promql::parse_supported(q)
        .map_err(|e| PromError::bad(format!("invalid parameter \"query\": {e}")))
}

fn exec_error(e: impl std::fmt::Display) -> PromError {
    PromError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        kind: "execution",
        message: e.to_string(),
    }
}

/// `GET|POST /api/v1/query`.
async fn query(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let p = params(raw.as_deref(), &headers, &body);
    let expr = parse_expr(param(&p, "query"))?;
    let t = match param(&p, "time") {
        Some(s) => parse_time("time", s)?,
        None => now_ms(),
    };
    check_cost(&expr, 1)?;
    let data = on_series(&state, tenant, move |store| {
        Evaluator::new(store).eval(&expr, t).map(|v| match v {
            PromValue::Scalar(x) => json!({"resultType": "scalar", "result": [ts_json(t), format_value(x)]}),
            PromValue::String(s) => json!({"resultType": "string", "result": [ts_json(t), s]}),
            PromValue::Vector(v) => json!({
                "resultType": "vector",
                "result": v.iter().map(|s| json!({"metric": metric_json(&s.labels), "value": [ts_json(t), format_value(s.value)]})).collect::<Vec<_>>(),
            }),
            PromValue::Matrix(m) => matrix_json(m.iter().map(|s| (&s.labels, s.points.as_slice()))),
        })
    })
    .await?
    .map_err(exec_error)?;
    Ok(success(data))
}

/// `GET|POST /api/v1/query_range`.
async fn query_range(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let p = params(raw.as_deref(), &headers, &body);
    let expr = parse_expr(param(&p, "query"))?;
    let need = |n: &str| {
        param(&p, n).ok_or_else(|| PromError::bad(format!("invalid parameter {n:?}: missing")))
    };
    let start = parse_time("start", need("start")?)?;
    let end = parse_time("end", need("end")?)?;
    let step = parse_step(need("step")?)?;
    if end < start {
        return Err(PromError::bad(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    if step <= 0 {
        return Err(PromError::bad(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if end.saturating_sub(start) / step > MAX_POINTS {
        return Err(PromError::bad(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    check_cost(&expr, (end.saturating_sub(start) / step) as u64 + 1)?;
    let data = on_series(&state, tenant, move |store| -> Result<Value, PromError> {
        let eval = Evaluator::new(store);
        let mut out: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
        let mut t = start;
        while t <= end {
            match eval.eval(&expr, t).map_err(exec_error)? {
                PromValue::Scalar(x) => out.entry(Labels::default()).or_default().push((t, x)),
                PromValue::Vector(v) => {
                    for s in v {
                        out.entry(s.labels).or_default().push((t, s.value));
                    }
                }
                _ => {
                    return Err(PromError::bad(
                        "invalid expression type for range query, must be Scalar or instant Vector",
                    ));
                }
            }
            match t.checked_add(step) {
                Some(next) => t = next,
                None => break,
            }
        }
        Ok(matrix_json(out.iter().map(|(l, pts)| (l, pts.as_slice()))))
    })
    .await??;
    Ok(success(data))
}

/// The selectors of `match[]`, each a series selector.
fn selectors(
    p: &[(String, String)],
) -> Result<Vec<promql_parser::parser::VectorSelector>, PromError> {
    p.iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| match promql_parser::parser::parse(v) {
            Ok(promql_parser::parser::Expr::VectorSelector(s)) => Ok(s),
            Ok(_) => Err(PromError::bad(format!(
                "invalid parameter \"match[]\": {v:?} is not a series selector"
            ))),
            Err(e) => Err(PromError::bad(format!(
                "invalid parameter \"match[]\": {e}"
            ))),
        })
        .collect()
}

/// Label sets of the series matching any selector (all series without one) with a sample
/// in `[start, end]`, sorted.
async fn matching_series(
    state: &AppState,
    tenant: String,
    p: &[(String, String)],
) -> Result<Vec<Labels>, PromError> {
    let sels = selectors(p)?;
    let start = param(p, "start")
        .map(|s| parse_time("start", s))
        .transpose()?
        .unwrap_or(i64::MIN);
    let end = param(p, "end")
        .map(|s| parse_time("end", s))
        .transpose()?
        .unwrap_or(i64::MAX);
    on_series(state, tenant, move |store| {
        let in_range = |s: &&foresight_rules::store::StoredSeries| {
            matches!(s.at_or_before(end), Some((t, _)) if t >= start)
        };
        let found: BTreeSet<Labels> = if sels.is_empty() {
            store
                .series_named(None)
                .filter(in_range)
                .map(|s| s.labels.clone())
                .collect()
        } else {
            sels.iter()
                .flat_map(|sel| selected_series(store, sel))
                .filter(in_range)
                .map(|s| s.labels.clone())
                .collect()
        };
        found.into_iter().collect()
    })
    .await
}

/// `GET|POST /api/v1/series`.
async fn series(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let p = params(raw.as_deref(), &headers, &body);
    if !p.iter().any(|(k, _)| k == "match[]") {
        return Err(PromError::bad("no match[] parameter provided"));
    }
    let found = matching_series(&state, tenant, &p).await?;
    Ok(success(Value::Array(
        found.iter().map(metric_json).collect(),
    )))
}

/// `GET|POST /api/v1/labels`.
async fn labels(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let p = params(raw.as_deref(), &headers, &body);
    let names: BTreeSet<String> = matching_series(&state, tenant, &p)
        .await?
        .iter()
        .flat_map(|l| l.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>())
        .collect();
    Ok(success(json!(names)))
}

/// `GET /api/v1/label/{name}/values`.
async fn label_values(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let p = params(raw.as_deref(), &headers, &[]);
    let values: BTreeSet<String> = matching_series(&state, tenant, &p)
        .await?
        .iter()
        .filter_map(|l| l.get(&name).map(str::to_string))
        .collect();
    Ok(success(json!(values)))
}

fn alert_json(a: &foresight_rules::SavedAlert) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state,
        "activeAt": foresight_notifier::payload::rfc3339_ms(a.active_at_ms),
        "value": format_value(a.value),
    })
}

/// `GET /api/v1/alerts`: pending and firing alerts.
async fn alerts(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let alerts = on_pipeline(&state, tenant, |t| {
        t.map(|(_, engine)| {
            engine
                .saved_states()
                .iter()
                .filter(|a| a.state != "resolved")
                .map(alert_json)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    })
    .await?;
    Ok(success(json!({"alerts": alerts})))
}

/// `GET /api/v1/rules`: the rule groups with each alerting rule's alerts.
async fn rules(
    tenant: Result<Tenant<Read>, ApiError>,
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, PromError> {
    let tenant = tenant?.name;
    let p = params(raw.as_deref(), &headers, &[]);
    let only = param(&p, "type").map(str::to_string);
    let groups = state.rule_groups.clone();
    let (saved, health) = on_pipeline(&state, tenant, |t| {
        t.map(|(_, e)| (e.saved_states(), owned_health(e)))
            .unwrap_or_default()
    })
    .await?;
    let health_json = |group: &str, rule: &str| -> Value {
        match health.get(&(group.to_string(), rule.to_string())) {
            Some(h) if h.last_evaluation_ms > 0 => json!({
                "health": if h.last_error.is_some() { "err" } else { "ok" },
                "lastError": h.last_error.clone().unwrap_or_default(),
                "lastEvaluation": foresight_notifier::payload::rfc3339_ms(h.last_evaluation_ms),
                "evaluationTime": h.evaluation_seconds,
            }),
            _ => json!({
                "health": "unknown",
                "lastError": "",
                "lastEvaluation": "0001-01-01T00:00:00Z",
                "evaluationTime": 0.0,
            }),
        }
    };
    let with_health = |mut v: Value, group: &str, rule: &str| -> Value {
        if let (Some(o), Value::Object(h)) = (v.as_object_mut(), health_json(group, rule)) {
            o.extend(h);
        }
        v
    };
    let templates =
        |ts: &[(String, foresight_rules::template::Template)]| -> BTreeMap<String, String> {
            ts.iter()
                .map(|(k, t)| (k.clone(), t.source().to_string()))
                .collect()
        };
    let out: Vec<Value> =
        groups
            .iter()
            .map(|g| {
                let rules: Vec<Value> = g
                .rules
                .iter()
                .filter(|r| match only.as_deref() {
                    Some("alert") => r.alerting,
                    Some("record") => !r.alerting,
                    _ => true,
                })
                .map(|r| {
                    if r.alerting {
                        let alerts: Vec<&foresight_rules::SavedAlert> = saved
                            .iter()
                            .filter(|a| {
                                a.group == g.name && a.rule == r.name && a.state != "resolved"
                            })
                            .collect();
                        let rule_state = if alerts.iter().any(|a| a.state == "firing") {
                            "firing"
                        } else if alerts.is_empty() {
                            "inactive"
                        } else {
                            "pending"
                        };
                        with_health(json!({
                            "type": "alerting",
                            "name": r.name,
                            "query": r.expr_text,
                            "duration": r.for_.as_secs_f64(),
                            "keepFiringFor": r.keep_firing_for.as_secs_f64(),
                            "labels": templates(&r.labels),
                            "annotations": templates(&r.annotations),
                            "alerts": alerts.iter().map(|a| alert_json(a)).collect::<Vec<_>>(),
                            "state": rule_state,
                        }), &g.name, &r.name)
                    } else {
                        with_health(json!({
                            "type": "recording",
                            "name": r.name,
                            "query": r.expr_text,
                            "labels": templates(&r.labels),
                        }), &g.name, &r.name)
                    }
                })
                .collect();
                json!({
                    "name": g.name,
                    "file": g.file,
                    "interval": g.interval.unwrap_or(state.evaluation_interval).as_secs_f64(),
                    "limit": g.limit,
                    "rules": rules,
                })
            })
            .collect();
    Ok(success(json!({"groups": out})))
}

/// The tenant's alert states and each rule's last evaluation, for the console's rules
/// page.
pub(crate) async fn rule_states(
    state: &AppState,
    tenant: String,
) -> Result<
    (
        Vec<foresight_rules::SavedAlert>,
        std::collections::HashMap<(String, String), foresight_rules::RuleHealth>,
    ),
    ApiError,
> {
    on_pipeline(state, tenant, |t| {
        t.map(|(_, e)| (e.saved_states(), owned_health(e)))
            .unwrap_or_default()
    })
    .await
    .map_err(|e| ApiError::new(e.status, e.kind, e.message))
}

/// Each rule's last evaluation by (group, rule), owned so that it leaves the
/// evaluator's task.
pub(crate) fn owned_health(
    engine: &RuleEngine,
) -> std::collections::HashMap<(String, String), foresight_rules::RuleHealth> {
    engine
        .rule_health()
        .into_iter()
        .map(|(g, r, h)| ((g.to_string(), r.to_string()), h.clone()))
        .collect()
}

/// Evaluates each of `queries` at `ts_ms` against the tenant's series, for the
/// service's own pages (the cluster context): per query its samples, or why it failed.
pub(crate) async fn instant_vectors(
    state: &AppState,
    tenant: String,
    queries: Vec<String>,
    ts_ms: i64,
) -> Result<Vec<Result<Vec<(Labels, f64)>, String>>, String> {
    on_series(state, tenant, move |store| {
        let eval = Evaluator::new(store);
        queries
            .iter()
            .map(|q| {
                let expr =
                    foresight_rules::promql::parse_supported(q).map_err(|e| e.to_string())?;
                match eval.eval(&expr, ts_ms).map_err(|e| e.to_string())? {
                    PromValue::Vector(v) => {
                        Ok(v.into_iter().map(|s| (s.labels, s.value)).collect())
                    }
                    _ => Err(format!("{q}: not an instant vector")),
                }
            })
            .collect()
    })
    .await
    .map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costly_queries_are_refused_before_they_run() {
        let e = |q: &str| foresight_rules::promql::parse_supported(q).unwrap();
        // A month of millisecond steps.
        let err = check_cost(&e("max_over_time(up[30d:1ms])"), 1).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.message.contains("instants"), "{}", err.message);
        // Grafana's widest chart of an ordinary expression, and of a small subquery.
        assert!(check_cost(&e("sum by (topic) (rate(x[5m]))"), 11_001).is_ok());
        assert!(check_cost(&e("max_over_time(rate(x[1m])[5m:15s])"), 11_001).is_ok());
        // Nested subqueries multiply.
        assert!(check_cost(&e("max_over_time(max_over_time(x[1h:1s])[1h:1s])"), 1).is_err());
    }

    #[test]
    fn times_beyond_the_representable_range_are_refused() {
        assert!(parse_time("t", "1e300").is_err());
        assert!(parse_time("t", "-1e15").is_err());
        assert_eq!(parse_step("1e300").unwrap(), MAX_ABS_TIME_MS);
    }

    #[test]
    fn times_and_steps_parse_as_prometheus_accepts_them() {
        assert_eq!(parse_time("t", "1700000000.5").unwrap(), 1_700_000_000_500);
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert!(parse_time("t", "yesterday").is_err());
        assert_eq!(parse_step("15").unwrap(), 15_000);
        assert_eq!(parse_step("1m").unwrap(), 60_000);
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(ts_json(1_000), json!(1));
        assert_eq!(ts_json(1_500), json!(1.5));
    }
}
