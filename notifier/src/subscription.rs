//! Webhook subscriptions: a tenant's own endpoints, created through the API, that get
//! every firing and resolved alert matching their filters as Alertmanager webhook JSON,
//! signed with a secret generated for them. One that keeps failing for a day is
//! disabled, and says why.

use std::collections::BTreeMap;

/// A subscription failing this long is disabled.
pub const DISABLE_AFTER_MS: i64 = 24 * 3600 * 1000;

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscription {
    /// Id.
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Where to POST.
    pub url: String,
    /// HMAC signing secret.
    pub secret: String,
    /// `category` values to send; empty sends all.
    pub categories: Vec<String>,
    /// `severity` values to send; empty sends all.
    pub severities: Vec<String>,
    /// `cluster` values to send; empty sends all.
    pub clusters: Vec<String>,
    /// When failures began, Unix ms; none while deliveries succeed.
    pub failing_since_ms: Option<i64>,
    /// Why it was disabled; none while enabled.
    pub disabled_reason: Option<String>,
    /// Unix ms.
    pub created_at_ms: i64,
}

impl Subscription {
    /// Whether an alert with `labels` passes the filters.
    pub fn wants(&self, labels: &BTreeMap<String, String>) -> bool {
        let pass = |allowed: &[String], label: &str| {
            allowed.is_empty()
                || labels
                    .get(label)
                    .is_some_and(|v| allowed.iter().any(|a| a == v))
        };
        self.disabled_reason.is_none()
            && pass(&self.categories, "category")
            && pass(&self.severities, "severity")
            && pass(&self.clusters, "cluster")
    }

    /// The signed webhook that delivers to this subscription, over `client`.
    pub fn sender(&self, client: reqwest::Client) -> crate::WebhookReceiver {
        crate::WebhookReceiver::new(
            crate::WebhookConfig {
                name: self.receiver(),
                url: self.url.clone(),
                secret: Some(self.secret.clone()),
                send_resolved: true,
                timeout_secs: 10,
            },
            client,
        )
    }

    /// The outbox receiver name of this subscription.
    pub fn receiver(&self) -> String {
        format!("sub/{}", self.id)
    }
}
