//! Alertmanager's webhook JSON, version 4, so that existing receivers understand it.

use std::collections::BTreeMap;

use foresight_proto::v1::{Alert, AlertState};
use serde::{Deserialize, Serialize};

/// The body Alertmanager POSTs to a webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    /// Always `"4"`.
    pub version: String,
    /// Identifies the group the notification is about.
    pub group_key: String,
    /// Alerts left out because of a size limit.
    pub truncated_alerts: u64,
    /// `firing` if any alert fires, else `resolved`.
    pub status: String,
    /// Receiver name.
    pub receiver: String,
    /// Labels the group was formed by.
    pub group_labels: BTreeMap<String, String>,
    /// Labels every alert shares.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations every alert shares.
    pub common_annotations: BTreeMap<String, String>,
    /// Link back to the sender.
    #[serde(rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<WebhookAlert>,
    /// Foresight: what the latest snapshot of the group's cluster says (brokers,
    /// controller, topics, partitions, offline partitions), so that the first message
    /// already tells the on-call engineer the shape of the cluster.
    #[serde(
        default,
        rename = "foresightClusterContext",
        skip_serializing_if = "Option::is_none"
    )]
    pub cluster_context: Option<BTreeMap<String, String>>,
}

/// One alert in a [`WebhookMessage`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    /// Identity labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; Go's zero time while firing, as Alertmanager sends.
    pub ends_at: String,
    /// Link to the rule.
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    /// Stable hex fingerprint of the labels.
    pub fingerprint: String,
}

/// Go's zero `time.Time` as Alertmanager renders it.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Formats Unix milliseconds as RFC 3339 in UTC with millisecond precision.
pub fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = foresight_template::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn common(maps: &[&BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some(first) = maps.first() else {
        return BTreeMap::new();
    };
    first
        .iter()
        .filter(|(k, v)| maps[1..].iter().all(|m| m.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl WebhookMessage {
    /// Builds the message for `alerts` sent to `receiver`, grouped by `group_labels`.
    pub fn new(
        receiver: &str,
        group_labels: BTreeMap<String, String>,
        alerts: &[Alert],
        external_url: &str,
    ) -> Self {
        let firing = alerts.iter().any(|a| a.state() == AlertState::Firing);
        let labels: Vec<_> = alerts.iter().map(|a| &a.labels).collect();
        let annotations: Vec<_> = alerts.iter().map(|a| &a.annotations).collect();
        let group_key = format!(
            "{{}}:{{{}}}",
            group_labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        WebhookMessage {
            version: "4".into(),
            group_key,
            truncated_alerts: 0,
            status: if firing { "firing" } else { "resolved" }.into(),
            receiver: receiver.into(),
            group_labels,
            common_labels: common(&labels),
            common_annotations: common(&annotations),
            external_url: external_url.into(),
            cluster_context: None,
            alerts: alerts
                .iter()
                .map(|a| {
                    let resolved = a.state() == AlertState::Resolved;
                    WebhookAlert {
                        status: if resolved { "resolved" } else { "firing" }.into(),
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        starts_at: rfc3339_ms(a.active_at_ms),
                        ends_at: if resolved {
                            rfc3339_ms(a.resolved_at_ms)
                        } else {
                            ZERO_TIME.into()
                        },
                        generator_url: a.generator_url.clone(),
                        fingerprint: a.fingerprint.clone(),
                    }
                })
                .collect(),
        }
    }
}

impl WebhookMessage {
    /// The message for a group notification flushed at `now_ms`.
    pub fn from_group(
        n: &crate::group::GroupNotification,
        now_ms: i64,
        external_url: &str,
    ) -> Self {
        let labels: Vec<_> = n.alerts.iter().map(|a| &a.labels).collect();
        let annotations: Vec<_> = n.alerts.iter().map(|a| &a.annotations).collect();
        WebhookMessage {
            version: "4".into(),
            group_key: n.alertmanager_key.clone(),
            truncated_alerts: 0,
            status: if n.firing { "firing" } else { "resolved" }.into(),
            receiver: n.integration.receiver.clone(),
            group_labels: n.group_labels.clone(),
            common_labels: common(&labels),
            common_annotations: common(&annotations),
            external_url: external_url.into(),
            cluster_context: None,
            alerts: n
                .alerts
                .iter()
                .map(|a| {
                    let resolved = a.resolved_at(now_ms);
                    WebhookAlert {
                        status: if resolved { "resolved" } else { "firing" }.into(),
                        labels: a.labels.clone(),
                        annotations: a.annotations.clone(),
                        starts_at: rfc3339_ms(a.starts_at_ms),
                        ends_at: if resolved {
                            rfc3339_ms(a.ends_at_ms)
                        } else {
                            ZERO_TIME.into()
                        },
                        generator_url: a.generator_url.clone(),
                        fingerprint: a.fingerprint.clone(),
                    }
                })
                .collect(),
        }
    }

    /// Keeps the first `max` alerts (0 keeps all), counting the rest as truncated.
    pub fn truncate(&mut self, max: usize) {
        if max > 0 && self.alerts.len() > max {
            self.truncated_alerts = (self.alerts.len() - max) as u64;
            self.alerts.truncate(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_alertmanager() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_795_305_600_123), "2026-11-22T00:00:00.123Z");
    }

    #[test]
    fn resolved_message_has_end_time_and_common_labels() {
        let alert = Alert {
            labels: BTreeMap::from([
                ("alertname".into(), "X".into()),
                ("topic".into(), "t".into()),
            ]),
            state: AlertState::Resolved as i32,
            active_at_ms: 1000,
            resolved_at_ms: 61_000,
            fingerprint: "ab".into(),
            ..Default::default()
        };
        let msg = WebhookMessage::new(
            "ops",
            BTreeMap::from([("alertname".into(), "X".into())]),
            &[alert],
            "",
        );
        assert_eq!(msg.status, "resolved");
        assert_eq!(msg.alerts[0].ends_at, "1970-01-01T00:01:01.000Z");
        assert_eq!(
            msg.common_labels.get("topic").map(String::as_str),
            Some("t")
        );
        let json = serde_json::to_value(&msg).unwrap();
        assert_eq!(json["version"], "4");
        assert!(json["alerts"][0]["generatorURL"].is_string());
        assert_eq!(json["groupKey"], "{}:{alertname=\"X\"}");
    }
}
