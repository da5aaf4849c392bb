//! Keys and tenants over HTTP: a tenant's admin manages its own keys; an operator
//! creates tenants and their keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::auth::{Admin, Operator, Tenant};
use crate::api::error::{ApiError, bad_request, blocking};
use crate::api::route::Route;
use crate::api::state::AppState;
use crate::store::{KeyInfo, Scope, TenantInfo, key_id, valid_tenant_name};

/// The key and tenant routes.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/api/v1/keys", list_own),
        Route::post("/api/v1/keys", create_own),
        Route::delete("/api/v1/keys/{id}", revoke_own),
        Route::get("/api/v1/tenants", list_tenants),
        Route::post("/api/v1/tenants", create_tenant),
        Route::get("/api/v1/tenants/{tenant}/keys", list_tenant_keys),
        Route::post("/api/v1/tenants/{tenant}/keys", create_tenant_key),
        Route::delete("/api/v1/tenants/{tenant}/keys/{id}", revoke_tenant_key),
    ]
}

/// Body of a key creation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Scope of the new key.
    pub scope: Scope,
    /// Free text, e.g. which agent or person holds it.
    #[serde(default)]
    pub name: String,
}

fn bad(message: String) -> ApiError {
    bad_request("invalid_request", message)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid request body: {e}")))
}

async fn create_for(
    state: &AppState,
    tenant: String,
    req: NewKey,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let store = state.tenants.clone();
    let scope = req.scope;
    let t = tenant.clone();
    let key = blocking(move || store.create_scoped_key(&t, scope, &req.name)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": key_id(&key), "tenant": tenant, "scope": scope, "key": key})),
    ))
}

/// `GET /api/v1/keys`: the caller's tenant's keys (admin).
async fn list_own(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let store = state.tenants.clone();
    Ok(Json(blocking(move || store.keys(Some(&tenant))).await?))
}

/// `POST /api/v1/keys`: a new key for the caller's tenant (admin); shown once.
async fn create_own(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    create_for(&state, tenant, parse(&body)?).await
}

/// `DELETE /api/v1/keys/{id}`: revokes one of the caller's tenant's keys (admin).
async fn revoke_own(
    Tenant { name: tenant, .. }: Tenant<Admin>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let store = state.tenants.clone();
    blocking(move || store.revoke_key(Some(&tenant), &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/tenants` (operator).
async fn list_tenants(
    _: Operator,
    State(state): State<AppState>,
) -> Result<Json<Vec<TenantInfo>>, ApiError> {
    let store = state.tenants.clone();
    Ok(Json(blocking(move || store.tenants()).await?))
}

/// Body of a tenant creation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// Tenant name.
    pub name: String,
}

/// `POST /api/v1/tenants` (operator): creates a tenant (no key yet).
async fn create_tenant(
    _: Operator,
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req: NewTenant = parse(&body)?;
    valid_tenant_name(&req.name).map_err(bad)?;
    let store = state.tenants.clone();
    let name = req.name.clone();
    blocking(move || store.ensure_tenant(&name)).await?;
    Ok((StatusCode::CREATED, Json(json!({"name": req.name}))))
}

/// `GET /api/v1/tenants/{tenant}/keys` (operator).
async fn list_tenant_keys(
    _: Operator,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<KeyInfo>>, ApiError> {
    let store = state.tenants.clone();
    Ok(Json(blocking(move || store.keys(Some(&tenant))).await?))
}

/// `POST /api/v1/tenants/{tenant}/keys` (operator): a key of any scope; shown once.
async fn create_tenant_key(
    _: Operator,
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (store, t) = (state.tenants.clone(), tenant.clone());
    blocking(move || store.tenant_id(&t)).await?;
    create_for(&state, tenant, parse(&body)?).await
}

/// `DELETE /api/v1/tenants/{tenant}/keys/{id}` (operator).
async fn revoke_tenant_key(
    _: Operator,
    State(state): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let store = state.tenants.clone();
    blocking(move || store.revoke_key(Some(&tenant), &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
