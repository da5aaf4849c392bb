//! Turns alert states into outbox entries: one notification per state change of an
//! alert (firing, then resolved), per receiver; the idempotency key makes a repeat a
//! no-op, in memory and in the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use foresight_proto::v1::{Alert, AlertState};

use crate::outbox::{NewNotification, OutboxStore};
use crate::payload::WebhookMessage;
use crate::{StoreError, WebhookConfig};

/// Decides what to notify.
pub struct Dispatcher<S> {
    store: Arc<S>,
    receivers: Vec<WebhookConfig>,
    external_url: String,
    sent: HashSet<String>,
}

impl<S: OutboxStore> Dispatcher<S> {
    /// A dispatcher writing to `store` for `receivers`.
    pub fn new(store: Arc<S>, receivers: Vec<WebhookConfig>, external_url: String) -> Self {
        Dispatcher {
            store,
            receivers,
            external_url,
            sent: HashSet::new(),
        }
    }

    /// The notifications `alerts` call for that have not been enqueued yet. Pending
    /// alerts notify nobody; resolved ones only receivers with `send_resolved`.
    pub fn plan(&mut self, alerts: &[Alert], now_ms: i64) -> Vec<NewNotification> {
        let mut out = Vec::new();
        for alert in alerts {
            let state = alert.state();
            let state_name = match state {
                AlertState::Firing => "firing",
                AlertState::Resolved => "resolved",
                _ => continue,
            };
            for r in &self.receivers {
                if state == AlertState::Resolved && !r.send_resolved {
                    continue;
                }
                let key = format!(
                    "{}/{}/{}/{}/{}",
                    alert.tenant, r.name, alert.fingerprint, alert.active_at_ms, state_name
                );
                if self.sent.contains(&key) {
                    continue;
                }
                let group = BTreeMap::from([(
                    "alertname".to_string(),
                    alert.labels.get("alertname").cloned().unwrap_or_default(),
                )]);
                let msg = WebhookMessage::new(
                    &r.name,
                    group,
                    std::slice::from_ref(alert),
                    &self.external_url,
                );
                out.push(NewNotification {
                    tenant: alert.tenant.clone(),
                    receiver: r.name.clone(),
                    idempotency_key: key,
                    body: serde_json::to_vec(&msg).expect("webhook messages serialize"),
                    created_at_ms: now_ms,
                });
            }
        }
        out
    }

    /// Enqueues what [`plan`](Self::plan) returns; blocking. Returns how many were new.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is marked sent for the entries that failed.
    pub fn dispatch(&mut self, alerts: &[Alert], now_ms: i64) -> Result<usize, StoreError> {
        let mut new = 0;
        for n in self.plan(alerts, now_ms) {
            if self.store.enqueue(&n)? {
                new += 1;
            }
            self.sent.insert(n.idempotency_key);
        }
        Ok(new)
    }
}
