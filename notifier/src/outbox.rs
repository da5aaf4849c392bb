//! The durable outbox: a notification is stored before it is sent, sent by a worker that
//! retries with capped exponential backoff and full jitter, and marked delivered only when
//! the receiver acknowledged it. A restart resumes what is pending.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::group::LogEntry;
use crate::silence::Silence;
use crate::subscription::Subscription;
use crate::{Integration, StoreError};

/// A notification to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    /// Tenant the notification belongs to.
    pub tenant: String,
    /// Receiver name.
    pub receiver: String,
    /// Same for every attempt; a second enqueue with the same key is ignored.
    pub idempotency_key: String,
    /// The request body.
    pub body: Vec<u8>,
    /// When it was created, Unix ms.
    pub created_at_ms: i64,
}

/// A stored notification that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingNotification {
    /// Store id.
    pub id: i64,
    /// The notification.
    pub notification: NewNotification,
    /// Attempts made so far.
    pub attempts: u32,
}

/// Where the outbox lives. Implementations block; the worker calls them off the async
/// workers.
pub trait OutboxStore: Send + Sync + 'static {
    /// Stores `n` unless its idempotency key is already stored; returns whether it was new.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn enqueue(&self, n: &NewNotification) -> Result<bool, StoreError>;
    /// Up to `limit` pending notifications whose next attempt is at or before `now_ms`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<PendingNotification>, StoreError>;
    /// Records a delivery the receiver acknowledged.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn mark_delivered(&self, id: i64, now_ms: i64) -> Result<(), StoreError>;
    /// Records a failed attempt: retry at `next_attempt_ms`, or never when `None` (dead).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StoreError>;
    /// The enabled and disabled subscriptions of `tenant`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StoreError>;
    /// One subscription of `tenant` by id.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn subscription(&self, tenant: &str, id: &str) -> Result<Option<Subscription>, StoreError>;
    /// Records a delivery outcome: success clears the failure clock; a failure starts
    /// it, and disables the subscription with `error` once it has run a day.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn subscription_result(
        &self,
        tenant: &str,
        id: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Moves the next attempt of `id` to `next_attempt_ms` without counting an attempt
    /// (a receiver over its send rate).
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn postpone(&self, id: i64, next_attempt_ms: i64) -> Result<(), StoreError>;
    /// Stores `n` and the notification log entry `(group_key, integration) -> log` in one
    /// transaction, so that a crash can neither send a change twice nor lose it.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn enqueue_notified(
        &self,
        n: &NewNotification,
        group_key: &str,
        log: &LogEntry,
    ) -> Result<bool, StoreError>;
    /// The notification log of `tenant`: `(group key, integration, entry)`.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn notification_log(&self, tenant: &str)
    -> Result<Vec<(String, String, LogEntry)>, StoreError>;
    /// The silences of `tenant` that are not expired.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn silences(&self, tenant: &str) -> Result<Vec<Silence>, StoreError>;
    /// The Slack message `ts` a group's first message got, to thread the rest under.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn thread(
        &self,
        tenant: &str,
        integration: &str,
        group_key: &str,
    ) -> Result<Option<String>, StoreError>;
    /// Records a group's Slack thread.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    fn set_thread(
        &self,
        tenant: &str,
        integration: &str,
        group_key: &str,
        ts: &str,
    ) -> Result<(), StoreError>;
}

/// Retry policy for deliveries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First retry delay.
    pub min_delay: Duration,
    /// Cap on one delay.
    pub max_delay: Duration,
    /// Attempts before a notification is marked dead.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            max_attempts: 12,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`, after `attempts` failures; `None` when no more
    /// attempts are allowed.
    pub fn delay_after(&self, attempts: u32) -> Option<Duration> {
        if attempts >= self.max_attempts {
            return None;
        }
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts as usize)
            .with_jitter()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
    }
}

/// Called after each acknowledged delivery.
pub type DeliveredCallback = Box<dyn Fn(&PendingNotification) + Send + Sync>;

/// Delivers due notifications until cancelled.
pub struct DeliveryWorker<S> {
    store: Arc<S>,
    receivers: HashMap<String, Integration>,
    policy: RetryPolicy,
    wake: Arc<Notify>,
    /// Called with each body the receiver acknowledged (the demo prints them).
    on_delivered: Option<DeliveredCallback>,
    /// Send rate per receiver name.
    limits: HashMap<String, Limiter>,
    /// For subscriptions' webhooks; they fail without one.
    client: Option<reqwest::Client>,
}

type Limiter = governor::DefaultDirectRateLimiter;

use foresight_proto::now_ms;

impl<S: OutboxStore> DeliveryWorker<S> {
    /// A worker over `store` sending to `receivers` (by integration id, see
    /// [`crate::build_integrations`]).
    pub fn new(
        store: Arc<S>,
        receivers: HashMap<String, Integration>,
        policy: RetryPolicy,
        wake: Arc<Notify>,
    ) -> Self {
        DeliveryWorker {
            store,
            receivers,
            policy,
            wake,
            on_delivered: None,
            limits: HashMap::new(),
            client: None,
        }
    }

    /// The HTTP client (and its TLS) for subscriptions' webhooks.
    pub fn with_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Caps each receiver's send rate, from its `max_per_minute`.
    pub fn with_rate_limits(mut self, config: &crate::NotifyConfig) -> Self {
        for (name, r) in &config.receivers {
            if let Some(n) = r.max_per_minute {
                self.limits.insert(
                    name.clone(),
                    governor::RateLimiter::direct(governor::Quota::per_minute(n)),
                );
            }
        }
        self
    }

    /// Calls `f` after each acknowledged delivery.
    pub fn on_delivered(
        mut self,
        f: impl Fn(&PendingNotification) + Send + Sync + 'static,
    ) -> Self {
        self.on_delivered = Some(Box::new(f));
        self
    }

    /// Runs until `cancel` fires, polling at least once a second and whenever woken.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.deliver_due().await {
                tracing::error!(error = %e, "Outbox pass failed.");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        // Shutting down: one last pass, so that what the evaluator queued last goes out
        // now rather than at the next start (the caller bounds it with its deadline).
        match self.deliver_due().await {
            Ok(n) if n > 0 => tracing::info!(notifications = n, "Outbox flushed at shutdown."),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "Outbox pass at shutdown failed."),
        }
    }

    /// Makes one pass over the notifications due now.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        self.deliver_due_at(now_ms()).await
    }

    /// Makes one pass over the notifications due at `now` (Unix ms), which also dates the
    /// outcome: the next attempt of a failure is `now` plus the policy's delay. Taking the
    /// time, as the `Grouper` does, lets retry and dead-letter tests run without waiting
    /// out real backoff. (Webhook signatures carry the wall clock: a receiver checks
    /// them against its own.)
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn deliver_due_at(&self, now: i64) -> Result<usize, StoreError> {
        let store = self.store.clone();
        let due = tokio::task::spawn_blocking(move || store.due(now, 64))
            .await
            .map_err(|e| StoreError(e.to_string()))??;
        let n = due.len();
        for p in due {
            let receiver_name = p
                .notification
                .receiver
                .rsplitn(3, '/')
                .nth(2)
                .unwrap_or(&p.notification.receiver);
            if let Some(limit) = self.limits.get(receiver_name)
                && let Err(not_until) = limit.check()
            {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                let (store, id) = (self.store.clone(), p.id);
                let next = now + wait.as_millis() as i64 + 1;
                tracing::debug!(receiver = receiver_name, "Over the send rate; postponed.");
                tokio::task::spawn_blocking(move || store.postpone(id, next))
                    .await
                    .map_err(|e| StoreError(e.to_string()))??;
                continue;
            }
            let result = if let Some(id) = p.notification.receiver.strip_prefix("sub/") {
                self.send_subscription(id, &p).await
            } else {
                match self.receivers.get(&p.notification.receiver) {
                    Some(r) => self.send(r, &p).await,
                    None => Err(crate::DeliveryError::UnknownReceiver(
                        p.notification.receiver.clone(),
                    )),
                }
            };
            let store = self.store.clone();
            match result {
                Ok(()) => {
                    let id = p.id;
                    tokio::task::spawn_blocking(move || store.mark_delivered(id, now))
                        .await
                        .map_err(|e| StoreError(e.to_string()))??;
                    tracing::info!(receiver = %p.notification.receiver, key = %p.notification.idempotency_key, "Notification delivered.");
                    if let Some(f) = &self.on_delivered {
                        f(&p);
                    }
                }
                Err(e) => {
                    let attempts = p.attempts + 1;
                    let next = if e.is_retryable() {
                        // A receiver's `Retry-After` (at most an hour) is a floor on
                        // the backoff: retrying sooner would only be refused again.
                        self.policy.delay_after(attempts).map(|d| {
                            let asked = e
                                .retry_after()
                                .map_or(Duration::ZERO, |r| r.min(Duration::from_secs(3600)));
                            now + d.max(asked).as_millis() as i64
                        })
                    } else {
                        None
                    };
                    tracing::warn!(receiver = %p.notification.receiver, attempts, dead = next.is_none(), error = %e, "Notification delivery failed.");
                    let (id, msg) = (p.id, e.to_string());
                    tokio::task::spawn_blocking(move || store.mark_failed(id, &msg, next))
                        .await
                        .map_err(|e| StoreError(e.to_string()))??;
                }
            }
        }
        Ok(n)
    }
}

impl<S: OutboxStore> DeliveryWorker<S> {
    async fn send_subscription(
        &self,
        id: &str,
        p: &PendingNotification,
    ) -> Result<(), crate::DeliveryError> {
        let n = &p.notification;
        let (store, tenant, sid) = (self.store.clone(), n.tenant.clone(), id.to_string());
        let sub = tokio::task::spawn_blocking(move || store.subscription(&tenant, &sid))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let Some(sub) = sub else {
            return Err(crate::DeliveryError::UnknownReceiver(n.receiver.clone()));
        };
        if let Some(reason) = &sub.disabled_reason {
            return Err(crate::DeliveryError::http(
                &n.receiver,
                410,
                format!("subscription disabled: {reason}"),
                None,
            ));
        }
        let Some(client) = &self.client else {
            return Err(crate::DeliveryError::UnknownReceiver(format!(
                "{} (no HTTP client for subscriptions)",
                n.receiver
            )));
        };
        let receiver = sub.sender(client.clone());
        let result = receiver
            .send(&n.body, &n.idempotency_key, now_ms() / 1000)
            .await;
        let error = result.as_ref().err().map(ToString::to_string);
        let (store, tenant, sid) = (self.store.clone(), n.tenant.clone(), id.to_string());
        let _ = tokio::task::spawn_blocking(move || {
            store.subscription_result(&tenant, &sid, error.as_deref(), now_ms())
        })
        .await;
        result
    }

    async fn send(
        &self,
        integration: &Integration,
        p: &PendingNotification,
    ) -> Result<(), crate::DeliveryError> {
        let n = &p.notification;
        let parse = || {
            serde_json::from_slice::<crate::payload::WebhookMessage>(&n.body).map_err(|e| {
                crate::DeliveryError::http(
                    &n.receiver,
                    422,
                    format!("stored notification is not a webhook message: {e}"),
                    None,
                )
            })
        };
        match integration {
            Integration::Webhook {
                receiver,
                max_alerts,
                payload,
            } => {
                if *max_alerts > 0 || payload.is_some() {
                    let mut msg = parse()?;
                    msg.truncate(*max_alerts);
                    let body = match payload {
                        Some(t) => {
                            let d = crate::render::data(&msg);
                            let empty = std::collections::BTreeMap::new();
                            t.render(&foresight_template::Context::with_data(&d, &empty))
                                .into_bytes()
                        }
                        None => serde_json::to_vec(&msg).expect("webhook messages serialize"),
                    };
                    receiver
                        .send(&body, &n.idempotency_key, now_ms() / 1000)
                        .await
                } else {
                    receiver
                        .send(&n.body, &n.idempotency_key, now_ms() / 1000)
                        .await
                }
            }
            Integration::Email(email) => email.send(&parse()?).await,
            Integration::Pagerduty(pd) => pd.send(&parse()?).await,
            Integration::Opsgenie(og) => og.send(&parse()?).await,
            Integration::MsTeams(teams) => teams.send(&parse()?).await,
            Integration::Slack(slack) => {
                let msg = parse()?;
                let store = self.store.clone();
                let (tenant, receiver, group) =
                    (n.tenant.clone(), n.receiver.clone(), msg.group_key.clone());
                let thread =
                    tokio::task::spawn_blocking(move || store.thread(&tenant, &receiver, &group))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten();
                let reply_to = if msg.status == "resolved" {
                    thread.as_deref()
                } else {
                    None
                };
                let ts = slack.send(&msg, reply_to).await?;
                if let (Some(ts), None) = (ts, &thread) {
                    let store = self.store.clone();
                    let (tenant, receiver, group) =
                        (n.tenant.clone(), n.receiver.clone(), msg.group_key.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        store.set_thread(&tenant, &receiver, &group, &ts)
                    })
                    .await;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_ends() {
        let p = RetryPolicy {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            max_attempts: 5,
        };
        for attempt in 1..5 {
            let d = p.delay_after(attempt).expect("attempts left");
            // Full jitter adds up to one more delay; the cap bounds the base.
            assert!(d <= Duration::from_secs(20), "attempt {attempt}: {d:?}");
        }
        assert_eq!(p.delay_after(5), None);
    }
}
