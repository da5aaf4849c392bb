//! PagerDuty: Events API v2 (`routing_key`) or v1 (`service_key`), as Alertmanager
//! sends them. The `dedup_key` (v1: `incident_key`) is Alertmanager's hash of the group
//! key, so the resolution resolves the incident the firing notification opened, and an
//! incident opened by an Alertmanager before the move is the same incident.

use std::collections::BTreeMap;
use std::time::Duration;

use foresight_template::Template;
use serde_json::{Value, json};

use crate::DeliveryError;
use crate::config::{NotifyConfig, PagerdutyConfig, Secret, secret_from};
use crate::payload::WebhookMessage;
use crate::post::{self, key_hash};
use crate::render;

/// PagerDuty's v2 endpoint, Alertmanager's `global.pagerduty_url` default.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// The v1 endpoint.
pub const V1_URL: &str = "https://events.pagerduty.com/generic/2010-04-15/create_event.json";
/// PagerDuty refuses larger events.
const MAX_EVENT_BYTES: usize = 512_000;
/// PagerDuty's limit on a summary (v2) or description (v1), in characters.
const MAX_SUMMARY_CHARS: usize = 1024;

enum Key {
    Routing(Secret),
    Service(Secret),
}

/// A configured PagerDuty integration.
pub struct PagerdutyReceiver {
    name: String,
    key: Key,
    url: String,
    client: reqwest::Client,
    timeout: Duration,
    description: Template,
    client_name: Template,
    client_url: Template,
    source: Template,
    severity: Option<Template>,
    class: Option<Template>,
    component: Option<Template>,
    group: Option<Template>,
    details: Option<BTreeMap<String, Value>>,
    links: Option<Vec<(Template, Template)>>,
    images: Vec<(Template, Template, Template)>,
    config: NotifyConfig,
}

/// Defaults Alertmanager adds to `details` when the config does not set them.
const DEFAULT_DETAILS: [(&str, &str); 4] = [
    (
        "firing",
        r#"{{ template "pagerduty.default.instances" .Alerts.Firing }}"#,
    ),
    (
        "resolved",
        r#"{{ template "pagerduty.default.instances" .Alerts.Resolved }}"#,
    ),
    ("num_firing", "{{ .Alerts.Firing | len }}"),
    ("num_resolved", "{{ .Alerts.Resolved | len }}"),
];

impl PagerdutyReceiver {
    /// Builds integration `name` from `c`, reading `_file` secrets now.
    ///
    /// # Errors
    /// A message naming the receiver and what is missing or unreadable.
    pub fn new(
        name: &str,
        c: &PagerdutyConfig,
        config: &NotifyConfig,
        client: &reqwest::Client,
    ) -> Result<Self, String> {
        let routing = secret_from(
            name,
            "routing_key",
            c.routing_key.as_ref(),
            c.routing_key_file.as_deref(),
        )?;
        let service = secret_from(
            name,
            "service_key",
            c.service_key.as_ref(),
            c.service_key_file.as_deref(),
        )?;
        let (key, default_url) = match (routing, service) {
            (Some(k), _) => (Key::Routing(k), DEFAULT_URL),
            (None, Some(k)) => (Key::Service(k), V1_URL),
            (None, None) => return Err(format!("{name}: set routing_key or service_key")),
        };
        let t = |v: &Option<String>, default: &str| config.template_or(v, default);
        let opt = |v: &Option<String>| v.as_deref().map(|v| config.template(v));
        let client_default = r#"{{ template "pagerduty.default.client" . }}"#;
        Ok(PagerdutyReceiver {
            name: name.to_string(),
            url: c
                .url
                .clone()
                .or_else(|| {
                    matches!(key, Key::Routing(_))
                        .then(|| config.global.pagerduty_url.clone())
                        .flatten()
                })
                .unwrap_or_else(|| default_url.to_string()),
            key,
            client: client.clone(),
            timeout: c.timeout.unwrap_or(Duration::from_secs(10)),
            description: t(
                &c.description,
                r#"{{ template "pagerduty.default.description" . }}"#,
            ),
            client_name: t(&c.client, client_default),
            client_url: t(
                &c.client_url,
                r#"{{ template "pagerduty.default.clientURL" . }}"#,
            ),
            // Alertmanager: the source defaults to the client.
            source: t(&c.source, c.client.as_deref().unwrap_or(client_default)),
            severity: opt(&c.severity),
            class: opt(&c.class),
            component: opt(&c.component),
            group: opt(&c.group),
            details: c.details.clone(),
            links: c.links.as_ref().map(|l| {
                l.iter()
                    .map(|l| (config.template(&l.href), config.template(&l.text)))
                    .collect()
            }),
            images: c
                .images
                .iter()
                .map(|i| {
                    (
                        config.template(&i.src),
                        config.template(&i.alt),
                        config.template(&i.href),
                    )
                })
                .collect(),
            config: config.clone(),
        })
    }

    /// Every string in `v` rendered as a template (Alertmanager renders nested details).
    fn render_value(&self, v: &Value, data: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(render::render(&self.config.template(s), data)),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.render_value(v, data)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), self.render_value(v, data)))
                    .collect(),
            ),
            v => v.clone(),
        }
    }

    fn details(&self, msg: &WebhookMessage, data: &Value) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for (k, v) in self.details.iter().flatten() {
            out.insert(k.clone(), self.render_value(v, data));
        }
        for (k, t) in DEFAULT_DETAILS {
            if !out.contains_key(k) {
                out.insert(
                    k.to_string(),
                    Value::String(render::render(&self.config.template(t), data)),
                );
            }
        }
        // Foresight: what the on-call engineer needs first, and the cluster's shape.
        let facts = render::facts(msg);
        if !facts.is_empty() && !out.contains_key("foresight") {
            out.insert(
                "foresight".into(),
                Value::Object(
                    facts
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect(),
                ),
            );
        }
        out
    }

    /// The request body for `msg` (public for tests and the side-by-side comparison).
    pub fn body(&self, msg: &WebhookMessage) -> Value {
        let data = render::data(msg);
        let r = |t: &Template| render::render(t, &data);
        let action = if msg.status == "firing" {
            "trigger"
        } else {
            "resolve"
        };
        let dedup = key_hash(&msg.group_key);
        let summary = post::truncate(r(&self.description), MAX_SUMMARY_CHARS);
        let mut details = Value::Object(self.details(msg, &data));
        match &self.key {
            Key::Service(k) => {
                let mut m = json!({
                    "service_key": k.expose(),
                    "event_type": action,
                    "incident_key": dedup,
                    "description": summary,
                    "details": details,
                });
                if action == "trigger" {
                    m["client"] = Value::String(r(&self.client_name));
                    m["client_url"] = Value::String(r(&self.client_url));
                }
                if m.to_string().len() > MAX_EVENT_BYTES {
                    m["details"] = too_large();
                }
                m
            }
            Key::Routing(k) => {
                let severity = match &self.severity {
                    Some(t) => r(t),
                    None => match render::severity(msg).as_deref() {
                        Some(s @ ("critical" | "error" | "warning" | "info")) => s.to_string(),
                        _ => "error".to_string(),
                    },
                };
                let links: Vec<Value> = match &self.links {
                    Some(links) => links
                        .iter()
                        .map(|(h, t)| (r(h), r(t)))
                        .filter(|(h, _)| !h.is_empty())
                        .map(|(href, text)| json!({"href": href, "text": text}))
                        .collect(),
                    None => default_links(msg),
                };
                let images: Vec<Value> = self
                    .images
                    .iter()
                    .map(|(s, a, h)| (r(s), r(a), r(h)))
                    .filter(|(s, _, _)| !s.is_empty())
                    .map(|(src, alt, href)| json!({"src": src, "alt": alt, "href": href}))
                    .collect();
                let opt = |t: &Option<Template>| t.as_ref().map(&r).filter(|s| !s.is_empty());
                let mut payload = json!({
                    "summary": summary,
                    "source": r(&self.source),
                    "severity": severity,
                    "custom_details": details.take(),
                });
                for (k, v) in [
                    ("class", opt(&self.class)),
                    ("component", opt(&self.component)),
                    ("group", opt(&self.group)),
                ] {
                    if let Some(v) = v {
                        payload[k] = Value::String(v);
                    }
                }
                let mut m = json!({
                    "routing_key": k.expose(),
                    "event_action": action,
                    "dedup_key": dedup,
                    "client": r(&self.client_name),
                    "client_url": r(&self.client_url),
                    "payload": payload,
                });
                if !links.is_empty() {
                    m["links"] = Value::Array(links);
                }
                if !images.is_empty() {
                    m["images"] = Value::Array(images);
                }
                if m.to_string().len() > MAX_EVENT_BYTES {
                    m["payload"]["custom_details"] = too_large();
                }
                m
            }
        }
    }

    /// Sends `msg` once.
    ///
    /// # Errors
    /// [`DeliveryError`]: 429 and 5xx (v1: 403 too) are retried; any other 4xx is
    /// permanent, with PagerDuty's message and errors.
    pub async fn send(&self, msg: &WebhookMessage) -> Result<(), DeliveryError> {
        let body = self.body(msg);
        let sent_key = key_hash(&msg.group_key);
        let answer = post::send(
            &self.client,
            post::Request {
                receiver: &self.name,
                method: reqwest::Method::POST,
                url: &self.url,
                headers: Vec::new(),
                body: body.to_string().into_bytes(),
                timeout: self.timeout,
                secret_url: false,
            },
            explain,
        )
        .await;
        let answer = match answer {
            // v1 answers a rate limit with 403.
            Err(DeliveryError::Status {
                receiver,
                status: 403,
                body,
                retry_after,
                ..
            }) if matches!(self.key, Key::Service(_)) => {
                return Err(DeliveryError::Status {
                    receiver,
                    status: 403,
                    body,
                    retry_after,
                    retryable: true,
                });
            }
            other => other?,
        };
        let echoed = serde_json::from_str::<Value>(&answer.body)
            .ok()
            .and_then(|v| {
                v.get("dedup_key")
                    .or_else(|| v.get("incident_key"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        match echoed {
            Some(k) if k != sent_key => tracing::warn!(
                receiver = %self.name, sent = %sent_key, answered = %k,
                "PagerDuty answered another dedup_key; the resolution may not reach the incident."
            ),
            _ => {
                tracing::debug!(receiver = %self.name, dedup_key = %sent_key, "PagerDuty accepted the event.")
            }
        }
        Ok(())
    }
}

fn too_large() -> Value {
    json!({"error": format!(
        "Custom details have been removed because the original event exceeds the maximum size of {MAX_EVENT_BYTES} bytes"
    )})
}

/// Foresight's links when the config sets none: the runbook, and the console.
fn default_links(msg: &WebhookMessage) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(r) = render::runbook(msg) {
        out.push(json!({"href": r, "text": "Runbook"}));
    }
    if !msg.external_url.is_empty() {
        out.push(json!({"href": msg.external_url, "text": "Foresight"}));
    }
    out
}

/// PagerDuty's error answer, `{"status", "message", "errors": [..]}`, as one line;
/// `None` when the body is not that.
pub fn explain(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let message = v.get("message")?.as_str()?;
    let errors: Vec<&str> = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    Some(if errors.is_empty() {
        message.to_string()
    } else {
        format!("{message}: {}", errors.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::sample;

    fn receiver(yaml: &str) -> PagerdutyReceiver {
        let config = NotifyConfig::from_yaml(&format!(
            "route: {{receiver: pager}}\nreceivers:\n  - name: pager\n    pagerduty_configs:\n      - {yaml}\n"
        ))
        .unwrap();
        let c = &config.receivers["pager"].pagerduty_configs[0];
        PagerdutyReceiver::new(
            "pager/pagerduty/0",
            c,
            &config,
            &crate::render::test_client(),
        )
        .unwrap()
    }

    #[test]
    fn v2_trigger_and_resolve_share_the_dedup_key() {
        let r = receiver("{routing_key: 0123456789abcdef0123456789abcdef}");
        let fire = r.body(&sample("firing"));
        let resolve = r.body(&sample("resolved"));
        assert_eq!(fire["event_action"], "trigger");
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(fire["dedup_key"], resolve["dedup_key"]);
        assert_eq!(
            fire["dedup_key"],
            key_hash(r#"{}/{severity="critical"}:{alertname="KafkaOfflinePartitions"}"#)
        );
        assert_eq!(fire["routing_key"], "0123456789abcdef0123456789abcdef");
        let p = &fire["payload"];
        assert_eq!(
            p["severity"], "critical",
            "mapped from the alerts' severity"
        );
        assert_eq!(
            p["summary"],
            "[FIRING:2] KafkaOfflinePartitions (cluster prod-eu)"
        );
        assert_eq!(p["source"], "Foresight");
        assert_eq!(fire["client_url"], "https://foresight.example");
        let d = &p["custom_details"];
        assert_eq!(d["num_firing"], "2");
        assert!(
            d["firing"]
                .as_str()
                .unwrap()
                .contains("Topic 3 has offline partitions"),
            "{d}"
        );
        assert_eq!(d["foresight"]["cluster"], "prod-eu");
        assert_eq!(d["foresight"]["brokers"], "3");
        assert_eq!(
            fire["links"],
            json!([
                {"href": "https://runbooks.example/offline", "text": "Runbook"},
                {"href": "https://foresight.example", "text": "Foresight"},
            ])
        );
    }

    #[test]
    fn configured_fields_are_templates_and_v1_uses_the_incident_key() {
        let r = receiver(
            "{routing_key: k, severity: '{{ .CommonLabels.category }}', description: 'cluster {{ .CommonLabels.cluster }}', details: {team: kafka, nested: {c: '{{ .CommonLabels.cluster }}'}}, links: [{href: 'https://x/{{ .CommonLabels.cluster }}', text: dash}]}",
        );
        let b = r.body(&sample("firing"));
        assert_eq!(b["payload"]["severity"], "availability");
        assert_eq!(b["payload"]["summary"], "cluster prod-eu");
        assert_eq!(b["payload"]["custom_details"]["team"], "kafka");
        assert_eq!(b["payload"]["custom_details"]["nested"]["c"], "prod-eu");
        assert_eq!(b["payload"]["custom_details"]["num_firing"], "2");
        assert_eq!(
            b["links"],
            json!([{"href": "https://x/prod-eu", "text": "dash"}])
        );

        let v1 = receiver("{service_key: s}");
        assert_eq!(v1.url, V1_URL);
        let b = v1.body(&sample("resolved"));
        assert_eq!(b["event_type"], "resolve");
        assert_eq!(b["service_key"], "s");
        assert_eq!(b["incident_key"], key_hash(&sample("firing").group_key));
        assert!(b.get("client").is_none(), "only a trigger names the client");
    }

    #[test]
    fn secrets_are_never_in_debug_output_nor_the_status_config() {
        let config = NotifyConfig::from_yaml(
            "global: {smtp_auth_password: smtppw1, slack_api_url: 'https://hooks.slack.com/T/slackpw2'}\nroute: {receiver: p}\nreceivers:\n  - name: p\n    pagerduty_configs: [{routing_key: topsecretkey}]\n    slack_configs: [{app_token: slackpw3, channel: '#k'}]\n    webhook_configs: [{url: 'https://x/hookpw4', secret: hookpw5}]\n    msteams_configs: [{webhook_url: 'https://x/teamspw6'}]\n",
        )
        .unwrap();
        let (debug, status) = (format!("{config:?}"), config.redacted_yaml());
        assert!(status.contains("pagerduty_configs"), "{status}");
        for secret in [
            "topsecretkey",
            "smtppw1",
            "slackpw2",
            "slackpw3",
            "teamspw6",
        ] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        for secret in [
            "topsecretkey",
            "smtppw1",
            "slackpw2",
            "slackpw3",
            "hookpw4",
            "hookpw5",
            "teamspw6",
        ] {
            assert!(!status.contains(secret), "{secret} in {status}");
        }
    }
}
