//! The web console `foresight serve` serves at `/`: server-rendered pages (askama
//! templates in `ingest/templates/console`, checked at compile time), a little
//! JavaScript, and uPlot for the plots, which read the Prometheus query API with the
//! session cookie. Every asset is compiled into the binary.
//!
//! - [`session`]: sign-in, the session cookie, CSRF.
//! - [`pages`]: each page's model and template.

pub mod pages;
pub mod session;

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use foresight_notifier::silence::ApiMatcher;
use foresight_proto::now_ms;

use crate::api::auth::{Admin, Public, Read};
use crate::api::error::{ApiError, blocking};
use crate::api::route::Route;
use crate::api::state::AppState;
use crate::evaluator::views::{AlertView, ClusterInfo};
use pages::{ErrorPage, Layout, PackSummary, SignInPage};
use session::{Change, Session};

/// The console's answer when a page cannot be shown.
#[derive(Debug)]
pub enum ConsoleError {
    /// No session: to sign-in, then back to this path.
    SignIn(String),
    /// The session may not do this.
    Forbidden(String),
    /// Not this tenant's, or not there.
    NotFound(String),
    /// The request is wrong.
    BadRequest(String),
    /// The store or the evaluator did not answer.
    Unavailable(String),
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        let m = e.message().to_string();
        match e.status() {
            StatusCode::NOT_FOUND => ConsoleError::NotFound(m),
            StatusCode::FORBIDDEN => ConsoleError::Forbidden(m),
            s if s.is_client_error() => ConsoleError::BadRequest(m),
            _ => ConsoleError::Unavailable(m),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            ConsoleError::SignIn(next) => {
                let to = if next.is_empty() || next == "/" {
                    "/sign-in".to_string()
                } else {
                    let q: String = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("next", &next)
                        .finish();
                    format!("/sign-in?{q}")
                };
                return Redirect::to(&to).into_response();
            }
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            ConsoleError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m),
            ConsoleError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "Unavailable", m),
        };
        let page = ErrorPage {
            title: title.into(),
            message,
        };
        (status, html(&page)).into_response()
    }
}

/// A rendered page with the headers every console page carries.
pub struct Html(Result<String, String>);

fn html<T: Template>(t: &T) -> Html {
    Html(t.render().map_err(|e| e.to_string()))
}

/// The content security policy: nothing from elsewhere, no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

impl IntoResponse for Html {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(body) => {
                let mut r = body.into_response();
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                h.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                );
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                h.insert(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                );
                h.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                );
                h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "A console page failed to render.");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page failed to render",
                )
                    .into_response()
            }
        }
    }
}

/// Every console route, with who may call it.
pub fn routes() -> Vec<Route> {
    vec![
        Route::get("/", fleet),
        Route::get("/clusters/{name}", cluster),
        Route::get("/alerts", alerts),
        Route::get("/silences", silences),
        Route::get("/silences/new", new_silence),
        Route::post("/silences", create_silence),
        Route::post("/silences/expire", expire_silence),
        Route::get("/notifications", notifications),
        Route::post("/notifications/test", test_subscription),
        Route::get("/rules", rules),
        Route::get("/sign-in", sign_in_page),
        Route::post("/sign-in", sign_in),
        Route::post("/sign-out", sign_out),
        Route::get("/assets/{file}", asset),
    ]
}

fn layout<S>(s: &Session<S>, title: impl Into<String>, nav: &'static str) -> Layout {
    Layout {
        title: title.into(),
        tenant: s.tenant.clone(),
        scope: s.scope.as_str().to_string(),
        can_change: s.scope.allows(crate::store::Scope::Admin),
        csrf: s.csrf.clone(),
        nav,
        notice: String::new(),
    }
}

fn tenant_alerts(state: &AppState, tenant: &str) -> Vec<AlertView> {
    state
        .alerts
        .read()
        .map(|m| m.get(tenant).cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn tenant_clusters(state: &AppState, tenant: &str) -> Vec<ClusterInfo> {
    state
        .clusters
        .read()
        .map(|m| {
            m.get(tenant)
                .map(|c| c.values().cloned().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

async fn tenant_silences(
    state: &AppState,
    tenant: &str,
) -> Result<Vec<foresight_notifier::silence::Silence>, ConsoleError> {
    let (store, t) = (state.silences.clone(), tenant.to_string());
    Ok(blocking(move || store.list_silences(&t)).await?)
}

/// `GET /`: the fleet.
async fn fleet(
    s: Session<Read>,
    State(state): State<AppState>,
    Query(q): Query<pages::FleetQuery>,
) -> Html {
    let clusters = tenant_clusters(&state, &s.tenant);
    let alerts = tenant_alerts(&state, &s.tenant);
    html(&pages::fleet_page(
        layout(&s, "Fleet", "fleet"),
        &clusters,
        &alerts,
        now_ms(),
        q,
    ))
}

/// `GET /clusters/{name}`: one cluster's context; 404 when it is not the tenant's.
async fn cluster(
    s: Session<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<pages::ClusterQuery>,
) -> Result<Html, ConsoleError> {
    let info = state
        .clusters
        .read()
        .ok()
        .and_then(|m| m.get(&s.tenant).and_then(|c| c.get(&name)).cloned())
        .ok_or_else(|| ConsoleError::NotFound(format!("There is no cluster {name} here.")))?;
    let alerts = tenant_alerts(&state, &s.tenant);
    let silences = tenant_silences(&state, &s.tenant).await?;
    let (store, t, n) = (state.history.clone(), s.tenant.clone(), name.clone());
    let now = now_ms();
    let history = blocking(move || {
        // The newest changes of the tenant, this cluster's kept.
        let all = store.history(&t, None, now - 7 * 86_400_000, 5_000)?;
        Ok(all
            .into_iter()
            .filter(|h| h.labels.get("cluster") == Some(&n))
            .take(200)
            .collect::<Vec<_>>())
    })
    .await?;
    let lag_query = format!(
        "max by (consumergroup) (kafka_consumergroup_lag_seconds{{cluster={}}})",
        pages::promql_string(&name)
    );
    let lag_seconds: HashMap<String, f64> =
        crate::api::promapi::instant_vectors(&state, s.tenant.clone(), vec![lag_query], now)
            .await
            .ok()
            .and_then(|mut v| v.pop())
            .and_then(Result::ok)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(l, v)| Some((l.get("consumergroup")?.to_string(), v)))
            .collect();
    let extras = pages::ClusterExtras {
        alerts: &alerts,
        silences: &silences,
        history: &history,
        lag_seconds,
        query_retention_secs: state.console.query_retention_secs,
    };
    Ok(html(&pages::cluster_page(
        layout(&s, name.clone(), "fleet"),
        &info,
        extras,
        now,
        &q,
    )))
}

/// `GET /alerts`.
async fn alerts(s: Session<Read>, State(state): State<AppState>) -> Result<Html, ConsoleError> {
    let views = tenant_alerts(&state, &s.tenant);
    let silences = tenant_silences(&state, &s.tenant).await?;
    Ok(html(&pages::alerts_page(
        layout(&s, "Alerts", "alerts"),
        &views,
        &silences,
        now_ms(),
    )))
}

#[derive(serde::Deserialize, Default)]
struct NoticeQuery {
    #[serde(default)]
    created: String,
    #[serde(default)]
    expired: String,
}

/// `GET /silences`.
async fn silences(
    s: Session<Read>,
    State(state): State<AppState>,
    Query(q): Query<NoticeQuery>,
) -> Result<Html, ConsoleError> {
    let list = tenant_silences(&state, &s.tenant).await?;
    let views = tenant_alerts(&state, &s.tenant);
    let mut l = layout(&s, "Silences", "silences");
    if !q.created.is_empty() {
        l.notice = format!("Silence {} created.", q.created);
    } else if !q.expired.is_empty() {
        l.notice = format!("Silence {} expired.", q.expired);
    }
    Ok(html(&pages::silences_page(l, &list, &views, now_ms())))
}

/// `GET /silences/new`: the form, filled from the query (the alert's "Silence" link,
/// or "Preview"), with the alerts it would mute.
async fn new_silence(
    s: Session<Admin>,
    State(state): State<AppState>,
    Query(mut form): Query<pages::SilenceForm>,
) -> Html {
    if form.created_by.is_empty() {
        form.created_by = if s.key_name.is_empty() {
            format!("{} console", s.tenant)
        } else {
            s.key_name.clone()
        };
    }
    let views = tenant_alerts(&state, &s.tenant);
    let error = match pages::form_matchers(&form.matchers) {
        Err(e) if !form.matchers.trim().is_empty() => e,
        _ => String::new(),
    };
    html(&pages::new_silence_page(
        layout(&s, "New silence", "silences"),
        form,
        error,
        &views,
        now_ms(),
    ))
}

/// `POST /silences`: checked as `POST /api/v2/silences` checks a silence.
async fn create_silence(c: Change<Admin, pages::SilenceForm>) -> Result<Response, ConsoleError> {
    let Change {
        session,
        form,
        state,
    } = c;
    let checked = (|| {
        let matchers = pages::form_matchers(&form.matchers)?;
        let d = foresight_rules::rulefile::parse_duration(form.duration.trim())
            .map_err(|e| format!("duration: {e}"))?;
        if d.is_zero() {
            return Err("duration: must be above zero".to_string());
        }
        let now = now_ms();
        let end = now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let p = crate::api::silences::PostableSilence {
            id: None,
            matchers: matchers.iter().map(ApiMatcher::from_matcher).collect(),
            starts_at: foresight_notifier::payload::rfc3339_ms(now),
            ends_at: foresight_notifier::payload::rfc3339_ms(end),
            created_by: form.created_by.trim().to_string(),
            comment: form.comment.trim().to_string(),
        };
        if p.created_by.is_empty() || p.comment.is_empty() {
            return Err("say who you are and why".to_string());
        }
        crate::api::silences::to_silence(p).map_err(|e| e.message().to_string())
    })();
    let silence = match checked {
        Ok(s) => s,
        Err(error) => {
            let views = tenant_alerts(&state, &session.tenant);
            let page = pages::new_silence_page(
                layout(&session, "New silence", "silences"),
                form,
                error,
                &views,
                now_ms(),
            );
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, html(&page)).into_response());
        }
    };
    let (store, t) = (state.silences.clone(), session.tenant.clone());
    let id = blocking(move || store.put_silence(&t, &silence)).await?;
    tracing::info!(tenant = %session.tenant, silence = %id, "Silence created in the console.");
    Ok(Redirect::to(&format!("/silences?created={id}")).into_response())
}

#[derive(serde::Deserialize)]
struct Empty {}

/// A form that names one thing.
#[derive(serde::Deserialize)]
struct IdForm {
    id: String,
}

/// `POST /silences/expire` (form field `id`).
async fn expire_silence(c: Change<Admin, IdForm>) -> Result<Redirect, ConsoleError> {
    let id = c.form.id.clone();
    let (store, t, i) = (
        c.state.silences.clone(),
        c.session.tenant.clone(),
        id.clone(),
    );
    blocking(move || store.expire_silence(&t, &i)).await?;
    Ok(Redirect::to(&format!("/silences?expired={id}")))
}

/// `GET /notifications`.
async fn notifications(
    s: Session<Read>,
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Html, ConsoleError> {
    let (store, t) = (state.store.clone(), s.tenant.clone());
    let (subs, deliveries) = blocking(move || {
        let subs = foresight_notifier::OutboxStore::subscriptions(&*store, &t)
            .map_err(|e| crate::store::Error::Outbox(e.0))?;
        Ok((subs, store.recent_deliveries(&t, 100)?))
    })
    .await?;
    let mut l = layout(&s, "Notifications", "notifications");
    if let Some(r) = q.get("ping") {
        l.notice = r.clone();
    }
    Ok(html(&pages::notifications_page(
        l,
        state.console.receivers.clone(),
        &subs,
        &deliveries,
        now_ms(),
    )))
}

/// `POST /notifications/test` (form field `id`): a signed ping to the subscription, and
/// how it answered.
async fn test_subscription(c: Change<Admin, IdForm>) -> Result<Redirect, ConsoleError> {
    let id = c.form.id.clone();
    let answer =
        match crate::api::subscriptions::test_ping(&c.state, &c.session.tenant, &id).await? {
            Ok(()) => format!("Test ping to {id} delivered."),
            Err(e) => format!("Test ping to {id} failed: {e}"),
        };
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("ping", &answer)
        .finish();
    Ok(Redirect::to(&format!("/notifications?{q}")))
}

/// `GET /rules`.
async fn rules(s: Session<Read>, State(state): State<AppState>) -> Result<Html, ConsoleError> {
    let (saved, health) = crate::api::promapi::rule_states(&state, s.tenant.clone()).await?;
    Ok(html(&pages::rules_page(
        layout(&s, "Rules", "rules"),
        &state.rule_groups,
        &saved,
        &health,
        pack_summary(&state.console),
        now_ms(),
    )))
}

fn pack_summary(c: &crate::api::state::ConsoleSettings) -> PackSummary {
    PackSummary {
        builtin: c.builtin_rules,
        rule_files: c.rule_files.clone(),
        disabled: c.pack.disabled.clone(),
        runbook_base_url: c.pack.runbook_base_url.clone().unwrap_or_default(),
        overrides: c
            .pack
            .overrides
            .iter()
            .map(|(k, o)| (k.clone(), o.describe()))
            .collect(),
    }
}

#[derive(serde::Deserialize, Default)]
struct SignInQuery {
    #[serde(default)]
    next: String,
    #[serde(default)]
    link: String,
}

/// Only a path of this service, never another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/"
    }
}

fn signed_in(token: &str, ttl_ms: i64, next: &str) -> Response {
    let mut r = Redirect::to(safe_next(next)).into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(token, ttl_ms)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /sign-in`, or with `?link=` a one-time sign-in link.
async fn sign_in_page(
    _: Public,
    State(state): State<AppState>,
    Query(q): Query<SignInQuery>,
) -> Result<Response, ConsoleError> {
    if !q.link.is_empty() {
        let (store, link, ttl) = (
            state.store.clone(),
            q.link.clone(),
            state.console.session_ttl_ms,
        );
        if let Some(token) = blocking(move || store.redeem_sign_in_link(&link, ttl)).await? {
            return Ok(signed_in(&token, ttl, &q.next));
        }
        let page = SignInPage {
            next: q.next,
            error: "This sign-in link was used already or has expired: sign in with a key.".into(),
        };
        return Ok((StatusCode::UNAUTHORIZED, html(&page)).into_response());
    }
    Ok(html(&SignInPage {
        next: q.next,
        error: String::new(),
    })
    .into_response())
}

#[derive(serde::Deserialize)]
struct SignInForm {
    key: String,
    #[serde(default)]
    next: String,
}

/// `POST /sign-in`: an API key of scope read or admin opens a session.
async fn sign_in(
    _: Public,
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    uri: axum::http::Uri,
    axum::Form(f): axum::Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    if !session::same_origin(&headers, &uri) {
        return Err(ConsoleError::Forbidden(
            "This sign-in was sent from another site.".into(),
        ));
    }
    let (store, key, ttl) = (
        state.store.clone(),
        f.key.trim().to_string(),
        state.console.session_ttl_ms,
    );
    match blocking(move || store.create_session(&key, ttl)).await? {
        Some(token) => Ok(signed_in(&token, ttl, &f.next)),
        None => {
            state.metrics.rejected("console_sign_in");
            let page = SignInPage {
                next: f.next,
                error: "That key is unknown, revoked, or of a scope that cannot read (ingest and operator keys cannot sign in).".into(),
            };
            Ok((StatusCode::UNAUTHORIZED, html(&page)).into_response())
        }
    }
}

/// `POST /sign-out`.
async fn sign_out(c: Change<Read, Empty>) -> Result<Response, ConsoleError> {
    let (store, token) = (c.state.store.clone(), c.session.token.clone());
    blocking(move || store.end_session(&token)).await?;
    let mut r = Redirect::to("/sign-in").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// The console's files, compiled in.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/console.js"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/vendor/uplot/uPlot.min.css"),
    ),
];

/// `GET /assets/{file}`.
async fn asset(_: Public, Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "public, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
