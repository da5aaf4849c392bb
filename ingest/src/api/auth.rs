//! Authentication as extractors: a handler names who may call it in its signature
//! (`Tenant<Read>`, `Tenant<Admin>`, `Operator`, `Public`), and the route table reads
//! the same type (see [`crate::api::route`]), so that the scope a route declares and the
//! one it checks cannot drift apart.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use crate::api::error::{ApiError, blocking};
use crate::api::state::AppState;
use crate::store::{Principal, Scope};

/// A scope as a type, for [`Tenant`].
pub trait ScopeMark: Send + Sync + 'static {
    /// The scope the key needs.
    const SCOPE: Scope;
}

/// Needs a key of scope `read` (or `admin`).
pub struct Read;
/// Needs a key of scope `ingest` (or `admin`).
pub struct Ingest;
/// Needs a key of scope `admin`.
pub struct Admin;

impl ScopeMark for Read {
    const SCOPE: Scope = Scope::Read;
}
impl ScopeMark for Ingest {
    const SCOPE: Scope = Scope::Ingest;
}
impl ScopeMark for Admin {
    const SCOPE: Scope = Scope::Admin;
}

/// The caller's tenant, when it holds a key whose scope allows `S`: 401 without a valid
/// key, 403 for a key whose scope does not allow it and for operator keys (which see no
/// tenant's data).
pub struct Tenant<S> {
    /// Tenant id.
    pub id: i64,
    /// Tenant name.
    pub name: String,
    scope: PhantomData<S>,
}

impl<S: ScopeMark> FromRequestParts<AppState> for Tenant<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let need = S::SCOPE;
        match principal(state, parts).await? {
            Principal::Tenant { id, name, scope } if scope.allows(need) => Ok(Tenant {
                id,
                name,
                scope: PhantomData,
            }),
            Principal::Tenant { scope, .. } => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this key's scope is {}; this needs {}",
                    scope.as_str(),
                    need.as_str()
                ),
            )),
            Principal::Operator => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "operator keys administer tenants and cannot use a tenant's API",
            )),
        }
    }
}

/// An operator key: tenant administration.
pub struct Operator;

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match principal(state, parts).await? {
            Principal::Operator => Ok(Operator),
            Principal::Tenant { .. } => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "tenant administration needs an operator key",
            )),
        }
    }
}

/// No key needed: health, readiness, the service's own metrics, the OpenAPI document.
pub struct Public;

impl FromRequestParts<AppState> for Public {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(_: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Public)
    }
}

/// The console's session cookie (see `crate::console::session`).
pub const SESSION_COOKIE: &str = "foresight_session";

/// The console session token a request carries, if any.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == SESSION_COOKIE)
        .map(|c| c.value().to_string())
}

/// The caller: a Bearer key, or on a GET without one the console's session cookie (so
/// that the console's plots read the query API; a change always needs a key).
async fn principal(state: &AppState, parts: &Parts) -> Result<Principal, ApiError> {
    if parts.headers.get("authorization").is_none()
        && parts.method == axum::http::Method::GET
        && let Some(token) = session_token(&parts.headers)
    {
        let store = state.store.clone();
        if let Some(s) = blocking(move || store.session(&token)).await? {
            return Ok(Principal::Tenant {
                id: s.tenant_id,
                name: s.tenant,
                scope: s.scope,
            });
        }
    }
    key_principal(state, &parts.headers).await
}

async fn key_principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
    let store = state.tenants.clone();
    blocking(move || store.authenticate_key(&key))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown or revoked API key",
            )
        })
}
