//! What every request shares, and the per-tenant request rate.

use std::sync::Arc;

use axum::http::StatusCode;
use tokio::sync::mpsc;

use crate::api::error::ApiError;
use crate::config::Limits;
use crate::evaluator::views::{AlertsView, ClustersView};
use crate::evaluator::{Input, Query};
use crate::store::Store;

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// Tenants and keys: the store itself on one node, PostgreSQL behind a
    /// [`crate::store::KeyCache`] in cluster mode.
    pub tenants: Arc<dyn crate::store::TenantStore>,
    /// Silences: the store itself on one node, PostgreSQL in cluster mode.
    pub silences: Arc<dyn crate::store::SilenceStore>,
    /// Subscriptions and their deliveries: the store itself on one node, PostgreSQL
    /// (where the notifier nodes read them) in cluster mode.
    pub subscriptions: Arc<dyn crate::store::SubscriptionStore>,
    /// Alert history and durability ledgers: the store itself on one node, PostgreSQL
    /// (which the evaluators write) in cluster mode.
    pub history: Arc<dyn crate::store::HistoryStore>,
    /// Cluster mode: accepted batches go to the telemetry topic rather than the store.
    pub bus: Option<Arc<crate::cluster::bus::TelemetryBus>>,
    /// Cluster mode: ingest endpoints of a node without the ingest role refuse.
    pub clustered: bool,
    /// Towards the evaluator: batches and posted alerts.
    pub tx: mpsc::Sender<Input>,
    /// Towards the evaluator: reads of the series, on their own queue (see
    /// [`crate::evaluator::Pipeline::run`]).
    pub queries: mpsc::Sender<Query>,
    /// Each tenant's alerts as the evaluator last published them.
    pub alerts: AlertsView,
    /// The loaded rule groups (the same for every tenant).
    pub rule_groups: Arc<Vec<foresight_rules::Group>>,
    /// The evaluation interval, for groups without their own.
    pub evaluation_interval: std::time::Duration,
    /// Each tenant's clusters as the evaluator last saw them.
    pub clusters: ClustersView,
    /// Alertmanager's `resolve_timeout`: the end of a posted alert without one.
    pub resolve_timeout_ms: i64,
    /// The notification configuration as text, for `/api/v2/status`.
    pub notify_config_text: Arc<str>,
    /// When the service started, Unix ms.
    pub started_at_ms: i64,
    /// Whether subscriptions may point at loopback, private or link-local addresses.
    pub allow_private_webhook_urls: bool,
    /// For subscription test pings.
    pub client: reqwest::Client,
    /// The service's own counters.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Request limits.
    pub limits: Limits,
    /// Each tenant's token bucket for ingest requests; `None` when unlimited.
    pub rate: Option<Arc<TenantRate>>,
    /// The web console's settings.
    pub console: Arc<ConsoleSettings>,
}

/// What the web console reads beside the API's state, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    /// Whether `/` serves the console.
    pub enabled: bool,
    /// How long a sign-in lasts, ms.
    pub session_ttl_ms: i64,
    /// How far back the query API charts, seconds.
    pub query_retention_secs: i64,
    /// Whether the built-in pack is loaded.
    pub builtin_rules: bool,
    /// Rule files loaded beside it.
    pub rule_files: Vec<String>,
    /// The pack options.
    pub pack: foresight_rules::packs::PackOptions,
    /// The route tree's receivers.
    pub receivers: Vec<String>,
}

/// Per-tenant token buckets, keyed by tenant id.
pub type TenantRate = governor::DefaultKeyedRateLimiter<i64>;

/// The token buckets the limits ask for.
pub fn tenant_rate(limits: &Limits) -> Option<Arc<TenantRate>> {
    let rate = std::num::NonZeroU32::new(limits.tenant_requests_per_second)?;
    let burst = std::num::NonZeroU32::new(limits.tenant_burst).unwrap_or(rate);
    Some(Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(rate).allow_burst(burst),
    )))
}

/// Takes a token from the tenant's bucket, or answers 429 with when to retry.
pub(crate) fn check_rate(state: &AppState, tenant_id: i64) -> Result<(), ApiError> {
    let Some(rate) = &state.rate else {
        return Ok(());
    };
    rate.check_key(&tenant_id).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this tenant sends more than {} requests per second (limits.tenant_requests_per_second, burst {}); retry after {secs} s",
                state.limits.tenant_requests_per_second, state.limits.tenant_burst,
            ),
        )
        .retry_after(secs)
    })
}
