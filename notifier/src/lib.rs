//! Foresight's notification pipeline: what to send for an alert, to whom, and durably.
//!
//! - [`payload`]: Alertmanager's webhook JSON (version 4).
//! - [`webhook`]: the webhook receiver, with HMAC-SHA256 signatures.
//! - [`outbox`]: the durable outbox contract and the delivery worker with backoff.
//! - [`config`]: the Alertmanager-shaped configuration (routes, receivers, inhibition,
//!   time intervals); [`matchers`], [`timeinterval`].
//! - [`group`]: routing, grouping and the notification log (group_wait,
//!   group_interval, repeat_interval, inhibition, silences, mute intervals).
//! - [`silence`]: silences that mute matching alerts for a while.
//! - [`dispatch`]: alerts in, one outbox entry per group change and integration out.
//! - [`render`], [`slack`], [`email`]: what people read, and how it reaches them.
//! - [`pagerduty`], [`opsgenie`], [`msteams`]: the on-call receivers, over [`post`].
//!
//! Storage is not this crate's: the outbox is a trait that `ingest` implements on its
//! store, so that this crate is testable with an in-memory one.
#![warn(missing_docs)]

pub mod config;
pub mod dispatch;
pub mod email;
pub mod group;
pub mod matchers;
pub mod msteams;
pub mod opsgenie;
pub mod outbox;
pub mod pagerduty;
pub mod payload;
pub mod post;
pub mod render;
pub mod silence;
pub mod slack;
pub mod subscription;
pub mod timeinterval;
pub mod webhook;

pub use config::NotifyConfig;
pub use dispatch::Dispatcher;
pub use outbox::{DeliveryWorker, NewNotification, OutboxStore, PendingNotification};
pub use webhook::{WebhookConfig, WebhookReceiver};

use std::collections::HashMap;

/// A configured way to deliver: one of a receiver's configs.
pub enum Integration {
    /// A webhook, with Alertmanager's `max_alerts` (0: all).
    Webhook {
        /// The sender.
        receiver: WebhookReceiver,
        /// Alerts per message.
        max_alerts: usize,
        /// A body template instead of the webhook JSON, with the config's library.
        payload: Option<foresight_template::Template>,
    },
    /// Slack.
    Slack(slack::SlackReceiver),
    /// Email.
    Email(email::EmailReceiver),
    /// PagerDuty.
    Pagerduty(Box<pagerduty::PagerdutyReceiver>),
    /// Opsgenie.
    Opsgenie(Box<opsgenie::OpsgenieReceiver>),
    /// Microsoft Teams (either kind).
    MsTeams(msteams::MsTeamsReceiver),
}

/// Every integration of `config`, keyed by [`group::IntegrationId`]'s text
/// (`receiver/kind/index`), as the outbox names them. `client` carries the TLS of the
/// webhooks and the on-call receivers; `tls` is Slack's.
///
/// # Errors
/// Each receiver that cannot be built, named.
pub fn build_integrations(
    config: &NotifyConfig,
    client: &reqwest::Client,
    tls: &rustls::ClientConfig,
) -> Result<HashMap<String, Integration>, Vec<String>> {
    let mut out = HashMap::new();
    let mut problems = Vec::new();
    for (name, r) in &config.receivers {
        let id = |kind: &'static str, index: usize| {
            group::IntegrationId {
                receiver: name.clone(),
                kind,
                index,
            }
            .to_string()
        };
        for (i, w) in r.webhook_configs.iter().enumerate() {
            let url = match (&w.url, &w.url_file) {
                (Some(u), _) => u.clone(),
                (None, Some(f)) => match std::fs::read_to_string(f) {
                    Ok(u) => u.trim().to_string(),
                    Err(e) => {
                        problems.push(format!("{name}: webhook url_file {f}: {e}"));
                        continue;
                    }
                },
                (None, None) => continue,
            };
            let key = id("webhook", i);
            out.insert(
                key.clone(),
                Integration::Webhook {
                    receiver: WebhookReceiver::new(
                        WebhookConfig {
                            name: key,
                            url,
                            secret: w.secret.clone(),
                            send_resolved: w.send_resolved,
                            timeout_secs: w.timeout.map_or(10, |t| t.as_secs().max(1)),
                        },
                        client.clone(),
                    ),
                    max_alerts: w.max_alerts,
                    payload: w.payload.as_deref().map(|t| config.template(t)),
                },
            );
        }
        for (i, c) in r.slack_configs.iter().enumerate() {
            match slack::SlackReceiver::new(name, c, &config.global, tls.clone(), &config.library) {
                Ok(s) => {
                    out.insert(id("slack", i), Integration::Slack(s));
                }
                Err(e) => problems.push(e),
            }
        }
        for (i, c) in r.email_configs.iter().enumerate() {
            match email::EmailReceiver::new(name, c, &config.global, &config.library) {
                Ok(e) => {
                    out.insert(id("email", i), Integration::Email(e));
                }
                Err(e) => problems.push(e),
            }
        }
        let mut add = |key: String, built: Result<Integration, String>| match built {
            Ok(i) => {
                out.insert(key, i);
            }
            Err(e) => problems.push(e),
        };
        for (i, c) in r.pagerduty_configs.iter().enumerate() {
            let key = id("pagerduty", i);
            let built = pagerduty::PagerdutyReceiver::new(&key, c, config, client)
                .map(|r| Integration::Pagerduty(Box::new(r)));
            add(key, built);
        }
        for (i, c) in r.opsgenie_configs.iter().enumerate() {
            let key = id("opsgenie", i);
            let built = opsgenie::OpsgenieReceiver::new(&key, c, config, client)
                .map(|r| Integration::Opsgenie(Box::new(r)));
            add(key, built);
        }
        for (i, c) in r.msteams_configs.iter().enumerate() {
            let key = id("msteams", i);
            let built = msteams::MsTeamsReceiver::connector(&key, c, config, client)
                .map(Integration::MsTeams);
            add(key, built);
        }
        for (i, c) in r.msteamsv2_configs.iter().enumerate() {
            let key = id("msteamsv2", i);
            let built = msteams::MsTeamsReceiver::workflow(&key, c, config, client)
                .map(Integration::MsTeams);
            add(key, built);
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The receiver could not be reached or did not answer in time.
    #[error("receiver {receiver} unreachable: {message}")]
    Unreachable {
        /// Receiver name.
        receiver: String,
        /// The transport error.
        message: String,
    },
    /// The receiver answered with a status that is not success.
    #[error("receiver {receiver} answered HTTP {status}: {body}")]
    Status {
        /// Receiver name.
        receiver: String,
        /// HTTP status.
        status: u16,
        /// The receiver's message, or the start of the response body.
        body: String,
        /// How long the receiver asked to wait (`Retry-After`).
        retry_after: Option<std::time::Duration>,
        /// Whether trying again may succeed (by default 408, 429 and 5xx).
        retryable: bool,
    },
    /// The notification names a receiver that is not configured.
    #[error("no receiver named {0}")]
    UnknownReceiver(String),
}

impl DeliveryError {
    /// An HTTP answer that is not success: retryable when 408, 429 or 5xx.
    pub fn http(
        receiver: &str,
        status: u16,
        body: impl Into<String>,
        retry_after: Option<std::time::Duration>,
    ) -> Self {
        DeliveryError::Status {
            receiver: receiver.to_string(),
            status,
            body: body.into(),
            retry_after,
            retryable: status == 429 || status == 408 || status >= 500,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Unreachable { .. } => true,
            DeliveryError::Status { retryable, .. } => *retryable,
            DeliveryError::UnknownReceiver(_) => false,
        }
    }

    /// How long the receiver asked to wait before the next attempt.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            DeliveryError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Errors of the outbox store.
#[derive(Debug, thiserror::Error)]
#[error("outbox store: {0}")]
pub struct StoreError(pub String);
