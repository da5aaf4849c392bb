//! Console sign-in: a session cookie (HttpOnly, Secure, SameSite=Strict, with an
//! expiry) stands for the API key it was opened with. Pages take a [`Session`]; every
//! change takes a [`Change`], which also checks the session's CSRF token and the
//! request's `Origin`.

use std::marker::PhantomData;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::api::auth::ScopeMark;
use crate::api::error::blocking;
use crate::api::route::{Access, Guard};
use crate::api::state::AppState;
use crate::console::ConsoleError;
use crate::store::Scope;

pub use crate::api::auth::SESSION_COOKIE as COOKIE;
pub(crate) use crate::api::auth::session_token as token_of;

/// The `Set-Cookie` value of a new session lasting `ttl_ms`.
pub(crate) fn set_cookie(token: &str, ttl_ms: i64) -> String {
    cookie::Cookie::build((COOKIE, token.to_string()))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::milliseconds(ttl_ms))
        .build()
        .to_string()
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    cookie::Cookie::build((COOKIE, ""))
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Strict)
        .max_age(cookie::time::Duration::ZERO)
        .build()
        .to_string()
}

/// A signed-in user whose key's scope allows `S`.
pub struct Session<S> {
    /// Tenant id.
    pub tenant_id: i64,
    /// Tenant name.
    pub tenant: String,
    /// The scope of the key signed in with.
    pub scope: Scope,
    /// That key's name.
    pub key_name: String,
    /// The token forms carry.
    pub csrf: String,
    pub(crate) token: String,
    scope_mark: PhantomData<S>,
}

/// Where a request without a session is sent: sign-in, then back to the page asked
/// for (GET only; a change is not replayed).
fn sign_in_redirect(parts: &Parts) -> ConsoleError {
    let next = if parts.method == Method::GET {
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    ConsoleError::SignIn(next)
}

impl<S: ScopeMark> FromRequestParts<AppState> for Session<S> {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        let Some(token) = token_of(&parts.headers) else {
            return Err(sign_in_redirect(parts));
        };
        let store = state.store.clone();
        let t = token.clone();
        let found = blocking(move || store.session(&t))
            .await
            .map_err(|e| ConsoleError::Unavailable(e.message().to_string()))?;
        let Some(s) = found else {
            return Err(sign_in_redirect(parts));
        };
        if !s.scope.allows(S::SCOPE) {
            return Err(ConsoleError::Forbidden(format!(
                "You signed in with a {} key; this needs an {} key.",
                s.scope.as_str(),
                S::SCOPE.as_str()
            )));
        }
        Ok(Session {
            tenant_id: s.tenant_id,
            tenant: s.tenant,
            scope: s.scope,
            key_name: s.key_name,
            csrf: s.csrf,
            token,
            scope_mark: PhantomData,
        })
    }
}

impl<S: ScopeMark> Guard for Session<S> {
    const ACCESS: Access = Access::Console(S::SCOPE);
}
impl<S: ScopeMark, F> Guard for Change<S, F> {
    const ACCESS: Access = Access::Console(S::SCOPE);
}

/// A change from a console form: a session whose scope allows `S`, a CSRF token that
/// is the session's, an `Origin` (when the browser sends one) that is this service,
/// and the form `F`.
pub struct Change<S, F> {
    /// Who.
    pub session: Session<S>,
    /// The form.
    pub form: F,
    /// The service.
    pub state: AppState,
}

#[derive(serde::Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

/// Whether `Origin`, if sent, names the host the request was sent to (the `Host`
/// header in HTTP/1.1, the `:authority` in HTTP/2).
pub(crate) fn same_origin(headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    origin == format!("https://{host}")
}

impl<S: ScopeMark, F: DeserializeOwned + Send> FromRequest<AppState> for Change<S, F> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        let session = Session::<S>::from_request_parts(&mut parts, state).await?;
        if !same_origin(&parts.headers, &parts.uri) {
            return Err(ConsoleError::Forbidden(
                "This form was sent from another site.".into(),
            ));
        }
        let bytes = axum::body::to_bytes(body, state.limits.max_body_bytes)
            .await
            .map_err(|e| ConsoleError::BadRequest(format!("the form could not be read: {e}")))?;
        let csrf: CsrfField = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::BadRequest(format!("the form is malformed: {e}")))?;
        if !bool::from(csrf.csrf.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(ConsoleError::Forbidden(
                "This form is stale or was not sent by this console: reload the page and try again."
                    .into(),
            ));
        }
        let form: F = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::BadRequest(format!("the form is malformed: {e}")))?;
        Ok(Change {
            session,
            form,
            state: state.clone(),
        })
    }
}
