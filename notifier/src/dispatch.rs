//! Alerts in, outbox entries out: each tenant's alerts go through its [`Grouper`], and
//! each notification a flush calls for is stored with its notification-log entry in one
//! transaction, so that a change is notified once, across restarts.

use std::collections::HashMap;
use std::sync::Arc;

use foresight_proto::v1::{Alert, AlertState};

use crate::StoreError;
use crate::config::NotifyConfig;
use crate::group::{GroupAlert, Grouper, IntegrationId};
use crate::outbox::{NewNotification, OutboxStore};
use crate::payload::WebhookMessage;

/// Routes, groups and enqueues.
pub struct Dispatcher<S> {
    store: Arc<S>,
    config: NotifyConfig,
    external_url: String,
    tenants: HashMap<String, Grouper>,
    resolve_timeout_ms: i64,
    /// Subscription notifications already stored, so that each evaluation does not
    /// write them again (the outbox's key would drop them anyway).
    sent: std::collections::HashSet<String>,
    /// Latest cluster facts per `(tenant, cluster)`, added to notifications.
    contexts: HashMap<(String, String), std::collections::BTreeMap<String, String>>,
}

fn integration_from(s: &str) -> Option<IntegrationId> {
    let mut parts = s.rsplitn(3, '/');
    let index = parts.next()?.parse().ok()?;
    let kind = match parts.next()? {
        "slack" => "slack",
        "email" => "email",
        "webhook" => "webhook",
        "pagerduty" => "pagerduty",
        "opsgenie" => "opsgenie",
        "msteams" => "msteams",
        "msteamsv2" => "msteamsv2",
        _ => return None,
    };
    Some(IntegrationId {
        receiver: parts.next()?.to_string(),
        kind,
        index,
    })
}

impl<S: OutboxStore> Dispatcher<S> {
    /// A dispatcher writing to `store` for `config`.
    pub fn new(store: Arc<S>, config: NotifyConfig, external_url: String) -> Self {
        let resolve_timeout_ms = config.resolve_timeout_ms();
        Dispatcher {
            store,
            config,
            external_url,
            tenants: HashMap::new(),
            resolve_timeout_ms,
            sent: std::collections::HashSet::new(),
            contexts: HashMap::new(),
        }
    }

    /// Forgets every aggregation group, as when the alerts move to another evaluator:
    /// groups come back from the next alerts and the stored notification log, so what
    /// the log holds is not sent again, and groups whose alerts now reach another node
    /// are not resolved here for lack of updates.
    pub fn forget_groups(&mut self) {
        self.tenants.clear();
        self.sent.clear();
    }

    fn grouper(&mut self, tenant: &str) -> Result<&mut Grouper, StoreError> {
        if !self.tenants.contains_key(tenant) {
            let log = self
                .store
                .notification_log(tenant)?
                .into_iter()
                .filter_map(|(group, integration, entry)| {
                    Some(((group, integration_from(&integration)?), entry))
                })
                .collect();
            self.tenants
                .insert(tenant.to_string(), Grouper::new(self.config.clone(), log));
        }
        Ok(self.tenants.get_mut(tenant).expect("inserted above"))
    }

    /// Records what the latest snapshot of `cluster` says, for its notifications.
    pub fn set_cluster_context(
        &mut self,
        tenant: &str,
        cluster: &str,
        facts: std::collections::BTreeMap<String, String>,
    ) {
        self.contexts
            .insert((tenant.to_string(), cluster.to_string()), facts);
    }

    /// Adds `alerts` of `tenant` as the Alertmanager API receives them; subscriptions
    /// get theirs at once, groups at their next flush.
    ///
    /// # Errors
    /// [`StoreError`] reading the notification log.
    pub fn insert(
        &mut self,
        tenant: &str,
        alerts: Vec<GroupAlert>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.notify_subscriptions(tenant, &alerts, now_ms)?;
        self.grouper(tenant)?.insert(alerts, now_ms);
        Ok(())
    }

    /// Takes the rule engine's alerts (every pending, firing and recently resolved one,
    /// each evaluation), then flushes what is due. Blocking. Returns how many
    /// notifications were new.
    ///
    /// # Errors
    /// [`StoreError`]; what was not stored is planned again at the next flush.
    pub fn dispatch(&mut self, alerts: &[Alert], now_ms: i64) -> Result<usize, StoreError> {
        let mut new = 0;
        for (tenant, list) in self.group_alerts(alerts, now_ms) {
            new += self.notify_subscriptions(tenant, &list, now_ms)?;
            self.grouper(tenant)?.insert(list, now_ms);
        }
        Ok(new + self.flush(now_ms)?)
    }

    /// The rule engine's firing and resolved alerts as the groups take them, by tenant
    /// (pending ones left out; a firing alert ends `resolve_timeout` from now unless
    /// sent again): what [`Dispatcher::dispatch`] groups here, or what an evaluator in
    /// cluster mode sends to the notifier nodes.
    pub fn group_alerts<'a>(
        &self,
        alerts: &'a [Alert],
        now_ms: i64,
    ) -> HashMap<&'a str, Vec<GroupAlert>> {
        let mut by_tenant: HashMap<&str, Vec<GroupAlert>> = HashMap::new();
        for a in alerts {
            let ends_at_ms = match a.state() {
                AlertState::Firing => now_ms + self.resolve_timeout_ms,
                AlertState::Resolved => a.resolved_at_ms.max(1),
                _ => continue,
            };
            by_tenant.entry(&a.tenant).or_default().push(GroupAlert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at_ms: a.active_at_ms,
                ends_at_ms,
                generator_url: a.generator_url.clone(),
                fingerprint: a.fingerprint.clone(),
            });
        }
        by_tenant
    }

    /// One notification per alert state change to each subscription that wants it.
    fn notify_subscriptions(
        &mut self,
        tenant: &str,
        alerts: &[GroupAlert],
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let subs = self.store.subscriptions(tenant)?;
        let mut new = 0;
        for sub in subs.iter().filter(|s| s.disabled_reason.is_none()) {
            for a in alerts.iter().filter(|a| sub.wants(&a.labels)) {
                let state = if a.resolved_at(now_ms) {
                    "resolved"
                } else {
                    "firing"
                };
                let key = format!(
                    "{tenant}/sub/{}/{}/{}/{state}",
                    sub.id, a.fingerprint, a.starts_at_ms
                );
                if self.sent.contains(&key) {
                    continue;
                }
                let n = crate::group::GroupNotification {
                    integration: IntegrationId {
                        receiver: sub.receiver(),
                        kind: "webhook",
                        index: 0,
                    },
                    group_key: format!("sub/{}:{}", sub.id, a.fingerprint),
                    alertmanager_key: format!("sub/{}:{}", sub.id, a.fingerprint),
                    group_labels: a.labels.clone(),
                    alerts: vec![a.clone()],
                    firing: state == "firing",
                    log: Default::default(),
                };
                let mut msg = WebhookMessage::from_group(&n, now_ms, &self.external_url);
                msg.receiver = sub.receiver();
                if self.store.enqueue(&NewNotification {
                    tenant: tenant.to_string(),
                    receiver: sub.receiver(),
                    idempotency_key: key.clone(),
                    body: serde_json::to_vec(&msg).expect("webhook messages serialize"),
                    created_at_ms: now_ms,
                })? {
                    new += 1;
                }
                self.sent.insert(key);
            }
        }
        Ok(new)
    }

    /// Flushes every tenant's due groups into the outbox. Blocking.
    ///
    /// # Errors
    /// [`StoreError`]; what was not stored is planned again at the next flush.
    pub fn flush(&mut self, now_ms: i64) -> Result<usize, StoreError> {
        let mut new = 0;
        for (tenant, grouper) in &mut self.tenants {
            if grouper.next_due_ms().is_none_or(|t| t > now_ms) {
                continue;
            }
            let silences = self.store.silences(tenant)?;
            for n in grouper.flush_due(now_ms, &silences) {
                let mut msg = WebhookMessage::from_group(&n, now_ms, &self.external_url);
                msg.cluster_context = msg
                    .common_labels
                    .get("cluster")
                    .and_then(|c| self.contexts.get(&(tenant.clone(), c.clone())).cloned());
                // A group flushes once per instant: the time makes the key unique.
                let key = format!("{tenant}/{}/{}/{}", n.integration, n.group_key, now_ms);
                let notification = NewNotification {
                    tenant: tenant.clone(),
                    receiver: n.integration.to_string(),
                    idempotency_key: key,
                    body: serde_json::to_vec(&msg).expect("webhook messages serialize"),
                    created_at_ms: now_ms,
                };
                if self
                    .store
                    .enqueue_notified(&notification, &n.group_key, &n.log)?
                {
                    new += 1;
                }
                grouper.notified(&n);
            }
        }
        Ok(new)
    }

    /// The earliest time a group of any tenant is due.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.tenants.values().filter_map(Grouper::next_due_ms).min()
    }

    /// The configuration.
    pub fn config(&self) -> &NotifyConfig {
        &self.config
    }

    /// Every tenant's grouping state.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Grouper)> {
        self.tenants.iter().map(|(t, g)| (t.as_str(), g))
    }

    /// A tenant's grouping state, for the API.
    pub fn tenant(&self, tenant: &str) -> Option<&Grouper> {
        self.tenants.get(tenant)
    }
}
