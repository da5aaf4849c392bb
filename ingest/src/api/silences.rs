//! Silences through Alertmanager's API v2 (`/api/v2/silences`, `/api/v2/silence/{id}`),
//! scoped to the caller's tenant, so that `amtool silence add|query|expire` works
//! against Foresight; the CLI's `foresight silences` uses the same store calls.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use foresight_notifier::payload::rfc3339_ms;
use foresight_notifier::silence::{ApiMatcher, Silence};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::auth::{Admin, Read, Tenant};
use crate::api::error::{ApiError, blocking, rfc3339_field, store_error};
use crate::api::route::Route;
use crate::api::state::AppState;
use crate::store;
use foresight_proto::now_ms;

/// The silences API's routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v2/silences", list),
        Route::post("/api/v2/silences", post),
        Route::get("/api/v2/silence/{id}", get_one),
        Route::delete("/api/v2/silence/{id}", expire),
    ]
}

/// A silence as `POST /api/v2/silences` receives it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    /// Present to update an existing silence.
    #[serde(default)]
    pub id: Option<String>,
    /// At least one.
    pub matchers: Vec<ApiMatcher>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339.
    pub ends_at: String,
    /// Who.
    pub created_by: String,
    /// Why.
    pub comment: String,
}

/// A silence as `GET /api/v2/silences` answers it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    id: String,
    status: Value,
    updated_at: String,
    matchers: Vec<ApiMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_silence", message)
}

/// Checks `p` and turns it into a silence.
///
/// # Errors
/// An [`ApiError`] 400 naming the problem.
pub fn to_silence(p: PostableSilence) -> Result<Silence, ApiError> {
    if p.matchers.is_empty() {
        return Err(bad("matchers: at least one is required"));
    }
    let matchers = p
        .matchers
        .iter()
        .map(|m| m.to_matcher().map_err(|e| bad(format!("matchers: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if matchers.iter().all(|m| m.matches(&Default::default())) {
        return Err(bad(
            "matchers: at least one must not match the empty string, or the silence mutes every alert",
        ));
    }
    let (starts, ends) = (
        rfc3339_field("bad_silence", "startsAt", &p.starts_at)?,
        rfc3339_field("bad_silence", "endsAt", &p.ends_at)?,
    );
    if ends <= starts {
        return Err(bad("endsAt must be after startsAt"));
    }
    if ends <= now_ms() {
        return Err(bad("endsAt is in the past"));
    }
    Ok(Silence {
        id: p.id.unwrap_or_default(),
        matchers,
        starts_at_ms: starts,
        ends_at_ms: ends,
        created_by: p.created_by,
        comment: p.comment,
        updated_at_ms: 0,
    })
}

/// The API form of `s` at `now_ms`.
pub fn gettable(s: &Silence, now_ms: i64) -> GettableSilence {
    GettableSilence {
        id: s.id.clone(),
        status: json!({"state": s.state(now_ms)}),
        updated_at: rfc3339_ms(s.updated_at_ms),
        matchers: s.matchers.iter().map(ApiMatcher::from_matcher).collect(),
        starts_at: rfc3339_ms(s.starts_at_ms),
        ends_at: rfc3339_ms(s.ends_at_ms),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    }
}

/// `POST /api/v2/silences`.
async fn post(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let p: PostableSilence =
        serde_json::from_slice(&body).map_err(|e| bad(format!("not a silence: {e}")))?;
    let silence = to_silence(p)?;
    let store = state.silences.clone();
    let id = blocking(move || store.put_silence(&tenant, &silence)).await?;
    Ok(Json(json!({"silenceID": id})))
}

/// `GET /api/v2/silences`.
async fn list(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
) -> Result<Json<Vec<GettableSilence>>, ApiError> {
    let store = state.silences.clone();
    let all = blocking(move || store.list_silences(&tenant)).await?;
    let now = now_ms();
    Ok(Json(all.iter().map(|s| gettable(s, now)).collect()))
}

/// `GET /api/v2/silence/{id}`.
async fn get_one(
    Tenant { name: tenant, .. }: Tenant<Read>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<GettableSilence>, ApiError> {
    let store = state.silences.clone();
    let all = blocking(move || store.list_silences(&tenant)).await?;
    all.iter()
        .find(|s| s.id == id)
        .map(|s| Json(gettable(s, now_ms())))
        .ok_or_else(|| store_error(store::Error::NotFound(format!("silence {id}"))))
}

/// `DELETE /api/v2/silence/{id}`: expires it.
async fn expire(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.silences.clone();
    blocking(move || store.expire_silence(&tenant, &id)).await?;
    Ok(StatusCode::OK)
}
