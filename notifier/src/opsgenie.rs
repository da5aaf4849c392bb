//! Opsgenie's Alert API, as Alertmanager uses it: a firing group creates (or, Opsgenie
//! deduplicating on the alias, updates) an alert, a resolved one closes it. The alias is
//! Alertmanager's hash of the group key.

use std::time::Duration;

use foresight_template::Template;
use serde_json::{Value, json};

use crate::DeliveryError;
use crate::config::{NotifyConfig, OpsgenieConfig, Secret, secret_from};
use crate::payload::WebhookMessage;
use crate::post::{self, key_hash};
use crate::render;

/// Alertmanager's `global.opsgenie_api_url` default.
pub const DEFAULT_API_URL: &str = "https://api.opsgenie.com/";
/// Opsgenie's limit on a message, in characters.
const MAX_MESSAGE_CHARS: usize = 130;

struct Responder {
    id: Template,
    name: Template,
    username: Template,
    kind: Template,
}

/// A configured Opsgenie integration.
pub struct OpsgenieReceiver {
    name: String,
    api_key: Secret,
    api_url: String,
    client: reqwest::Client,
    message: Template,
    description: Template,
    source: Template,
    details: Vec<(String, Template)>,
    entity: Option<Template>,
    responders: Vec<Responder>,
    actions: Option<Template>,
    tags: Option<Template>,
    note: Option<Template>,
    priority: Option<Template>,
    update_alerts: bool,
}

/// One request of a notification: method, URL and body.
pub type Call = (reqwest::Method, String, Value);

impl OpsgenieReceiver {
    /// Builds integration `name` from `c` with `config.global`'s defaults.
    ///
    /// # Errors
    /// A message naming the receiver and what is missing or unreadable.
    pub fn new(
        name: &str,
        c: &OpsgenieConfig,
        config: &NotifyConfig,
        client: &reqwest::Client,
    ) -> Result<Self, String> {
        let g = &config.global;
        let api_key = match secret_from(
            name,
            "api_key",
            c.api_key.as_ref(),
            c.api_key_file.as_deref(),
        )? {
            Some(k) => k,
            None => secret_from(
                name,
                "global.opsgenie_api_key",
                g.opsgenie_api_key.as_ref(),
                g.opsgenie_api_key_file.as_deref(),
            )?
            .ok_or_else(|| format!("{name}: no api_key here nor in global.opsgenie_api_key"))?,
        };
        let t = |v: &Option<String>, default: &str| config.template_or(v, default);
        let opt = |v: &Option<String>| v.as_deref().map(|v| config.template(v));
        Ok(OpsgenieReceiver {
            name: name.to_string(),
            api_key,
            api_url: c
                .api_url
                .clone()
                .or_else(|| g.opsgenie_api_url.clone())
                .unwrap_or_else(|| DEFAULT_API_URL.to_string()),
            client: client.clone(),
            message: t(&c.message, r#"{{ template "opsgenie.default.message" . }}"#),
            description: t(
                &c.description,
                r#"{{ template "opsgenie.default.description" . }}"#,
            ),
            source: t(&c.source, r#"{{ template "opsgenie.default.source" . }}"#),
            details: c
                .details
                .iter()
                .map(|(k, v)| (k.clone(), config.template(v)))
                .collect(),
            entity: opt(&c.entity),
            responders: c
                .responders
                .iter()
                .map(|r| Responder {
                    id: config.template(&r.id),
                    name: config.template(&r.name),
                    username: config.template(&r.username),
                    kind: config.template(&r.kind),
                })
                .collect(),
            actions: opt(&c.actions),
            tags: opt(&c.tags),
            note: opt(&c.note),
            priority: opt(&c.priority),
            update_alerts: c.update_alerts,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.api_url.trim_end_matches('/'))
    }

    /// The requests for `msg`, in order (public for tests).
    pub fn calls(&self, msg: &WebhookMessage) -> Vec<Call> {
        let data = render::data(msg);
        let r = |t: &Template| render::render(t, &data);
        let alias = key_hash(&msg.group_key);
        if msg.status != "firing" {
            return vec![(
                reqwest::Method::POST,
                self.url(&format!("v2/alerts/{alias}/close?identifierType=alias")),
                json!({"source": r(&self.source)}),
            )];
        }
        let mut details: serde_json::Map<String, Value> = msg
            .common_labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        // Foresight: the cluster's shape, where the labels do not say it already.
        for (k, v) in msg.cluster_context.iter().flatten() {
            details.entry(k.clone()).or_insert(Value::String(v.clone()));
        }
        for (k, t) in &self.details {
            details.insert(k.clone(), Value::String(r(t)));
        }
        let mut responders = Vec::new();
        for resp in &self.responders {
            let (id, name, username, kind) =
                (r(&resp.id), r(&resp.name), r(&resp.username), r(&resp.kind));
            if id.is_empty() && name.is_empty() && username.is_empty() && kind.is_empty() {
                continue;
            }
            if kind == "teams" {
                responders.extend(
                    split(&name)
                        .into_iter()
                        .map(|team| json!({"name": team, "type": "team"})),
                );
                continue;
            }
            let mut o = json!({"type": kind});
            for (k, v) in [("id", id), ("name", name), ("username", username)] {
                if !v.is_empty() {
                    o[k] = Value::String(v);
                }
            }
            responders.push(o);
        }
        let message = post::truncate(r(&self.message), MAX_MESSAGE_CHARS);
        let description = r(&self.description);
        let mut create = json!({
            "alias": alias,
            "message": message,
            "details": details,
            "source": r(&self.source),
        });
        let priority = match &self.priority {
            Some(t) => Some(r(t)),
            None => render::severity(msg).and_then(|s| match s.as_str() {
                "critical" => Some("P1".to_string()),
                "error" => Some("P2".to_string()),
                "warning" => Some("P3".to_string()),
                "info" => Some("P5".to_string()),
                _ => None,
            }),
        };
        let opt = |t: &Option<Template>| t.as_ref().map(&r).filter(|s| !s.is_empty());
        for (k, v) in [
            (
                "description",
                Some(description.clone()).filter(|d| !d.is_empty()),
            ),
            ("note", opt(&self.note)),
            ("priority", priority.filter(|p| !p.is_empty())),
            ("entity", opt(&self.entity)),
        ] {
            if let Some(v) = v {
                create[k] = Value::String(v);
            }
        }
        if !responders.is_empty() {
            create["responders"] = Value::Array(responders);
        }
        for (k, t) in [("tags", &self.tags), ("actions", &self.actions)] {
            let list = t.as_ref().map(|t| split(&r(t))).unwrap_or_default();
            if !list.is_empty() {
                create[k] = json!(list);
            }
        }
        let mut out = vec![(reqwest::Method::POST, self.url("v2/alerts"), create)];
        if self.update_alerts {
            out.push((
                reqwest::Method::PUT,
                self.url(&format!("v2/alerts/{alias}/message?identifierType=alias")),
                json!({"message": message}),
            ));
            out.push((
                reqwest::Method::PUT,
                self.url(&format!(
                    "v2/alerts/{alias}/description?identifierType=alias"
                )),
                json!({"description": description}),
            ));
        }
        out
    }

    /// Sends `msg`: its requests one after the other.
    ///
    /// # Errors
    /// [`DeliveryError`]: 429 and 5xx are retried; any other 4xx is permanent, with
    /// Opsgenie's message and request id.
    pub async fn send(&self, msg: &WebhookMessage) -> Result<(), DeliveryError> {
        for (method, url, body) in self.calls(msg) {
            let answer = post::send(
                &self.client,
                post::Request {
                    receiver: &self.name,
                    method,
                    url: &url,
                    headers: vec![(
                        "Authorization",
                        format!("GenieKey {}", self.api_key.expose()),
                    )],
                    body: body.to_string().into_bytes(),
                    timeout: Duration::from_secs(10),
                    secret_url: false,
                },
                explain,
            )
            .await?;
            let request_id = serde_json::from_str::<Value>(&answer.body)
                .ok()
                .and_then(|v| v.get("requestId")?.as_str().map(str::to_string));
            tracing::debug!(receiver = %self.name, request_id = ?request_id, "Opsgenie accepted the request.");
        }
        Ok(())
    }
}

/// Alertmanager's `safeSplit`: comma-separated, blanks dropped.
fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Opsgenie's error answer, `{"message", "errors": {..}, "requestId"}`, as one line;
/// `None` when the body is not that.
pub fn explain(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let mut s = v.get("message")?.as_str()?.to_string();
    if let Some(errors) = v.get("errors").and_then(Value::as_object) {
        let list: Vec<String> = errors
            .iter()
            .map(|(k, e)| format!("{k}: {}", e.as_str().unwrap_or(&e.to_string())))
            .collect();
        s.push_str(&format!(" ({})", list.join("; ")));
    }
    if let Some(id) = v.get("requestId").and_then(Value::as_str) {
        s.push_str(&format!(" [request id {id}]"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::sample;

    fn receiver(yaml: &str) -> OpsgenieReceiver {
        let config = NotifyConfig::from_yaml(&format!(
            "global: {{opsgenie_api_url: 'http://127.0.0.1:9/'}}\nroute: {{receiver: og}}\nreceivers:\n  - name: og\n    opsgenie_configs:\n      - {yaml}\n"
        ))
        .unwrap();
        let c = &config.receivers["og"].opsgenie_configs[0];
        OpsgenieReceiver::new("og/opsgenie/0", c, &config, &crate::render::test_client()).unwrap()
    }

    #[test]
    fn firing_creates_and_resolved_closes_the_same_alias() {
        let r = receiver(
            "{api_key: k, tags: 'kafka, {{ .CommonLabels.cluster }},', responders: [{name: 'sre,dba', type: teams}, {username: ann, type: user}]}",
        );
        let fire = r.calls(&sample("firing"));
        assert_eq!(fire.len(), 1);
        let (m, url, body) = &fire[0];
        assert_eq!(*m, reqwest::Method::POST);
        assert_eq!(url, "http://127.0.0.1:9/v2/alerts");
        let alias = key_hash(&sample("firing").group_key);
        assert_eq!(body["alias"], alias);
        assert_eq!(body["priority"], "P1", "from severity critical");
        assert_eq!(body["tags"], json!(["kafka", "prod-eu"]));
        assert_eq!(
            body["responders"],
            json!([{"name": "sre", "type": "team"}, {"name": "dba", "type": "team"}, {"username": "ann", "type": "user"}])
        );
        assert_eq!(body["details"]["cluster"], "prod-eu");
        assert_eq!(body["details"]["brokers"], "3", "the cluster's context");
        assert!(body["message"].as_str().unwrap().chars().count() <= 130);
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .contains("Topic 4 has offline partitions"),
            "{body}"
        );
        let close = r.calls(&sample("resolved"));
        assert_eq!(
            close[0].1,
            format!("http://127.0.0.1:9/v2/alerts/{alias}/close?identifierType=alias")
        );
        assert_eq!(close[0].2, json!({"source": "https://foresight.example"}));
    }

    #[test]
    fn update_alerts_also_updates_message_and_description() {
        let r = receiver("{api_key: k, update_alerts: true, priority: P4}");
        let calls = r.calls(&sample("firing"));
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[0].2["priority"], "P4");
        assert_eq!(calls[1].0, reqwest::Method::PUT);
        assert!(calls[1].1.contains("/message?identifierType=alias"));
        assert!(calls[2].1.contains("/description?identifierType=alias"));
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let load = |yaml: &str| {
            NotifyConfig::from_yaml(&format!(
                "route: {{receiver: og}}\nreceivers:\n  - name: og\n    opsgenie_configs:\n      - {yaml}\n"
            ))
            .unwrap_err()
            .to_string()
        };
        assert!(load("{message: x}").contains("no api_key"));
        assert!(load("{api_key: k, priority: urgent}").contains("priority"));
        assert!(
            load("{api_key: k, responders: [{name: x, type: group}]}")
                .contains("responders[0].type")
        );
    }
}
