//! Microsoft Teams: an Office 365 connector's incoming webhook (`msteams_configs`, a
//! MessageCard) or a Workflows webhook (`msteamsv2_configs`, an Adaptive Card), as
//! Alertmanager sends them, with Foresight's facts (severity, category, cluster and the
//! cluster's context) and the runbook and console links added.

use std::time::Duration;

use foresight_template::Template;
use serde_json::{Value, json};

use crate::DeliveryError;
use crate::config::{MsTeamsConfig, MsTeamsV2Config, NotifyConfig, Secret, secret_from};
use crate::payload::WebhookMessage;
use crate::post;
use crate::render;

enum Card {
    /// Office 365 connector: title, summary, text.
    Message {
        title: Template,
        summary: Template,
        text: Template,
    },
    /// Workflows: title, text.
    Adaptive { title: Template, text: Template },
}

/// A configured Teams integration.
pub struct MsTeamsReceiver {
    name: String,
    url: Secret,
    client: reqwest::Client,
    card: Card,
}

impl MsTeamsReceiver {
    fn with_card(
        name: &str,
        url: Option<&Secret>,
        url_file: Option<&str>,
        client: &reqwest::Client,
        card: Card,
    ) -> Result<Self, String> {
        Ok(MsTeamsReceiver {
            name: name.to_string(),
            url: secret_from(name, "webhook_url", url, url_file)?.ok_or_else(|| {
                format!("{name}: one of webhook_url or webhook_url_file is required")
            })?,
            client: client.clone(),
            card,
        })
    }

    /// An Office 365 connector integration.
    ///
    /// # Errors
    /// A message naming the receiver and what is missing or unreadable.
    pub fn connector(
        name: &str,
        c: &MsTeamsConfig,
        config: &NotifyConfig,
        client: &reqwest::Client,
    ) -> Result<Self, String> {
        let card = Card::Message {
            title: config.template_or(&c.title, r#"{{ template "msteams.default.title" . }}"#),
            summary: config
                .template_or(&c.summary, r#"{{ template "msteams.default.summary" . }}"#),
            text: config.template_or(&c.text, r#"{{ template "msteams.default.text" . }}"#),
        };
        let (url, file) = (c.webhook_url.as_ref(), c.webhook_url_file.as_deref());
        Self::with_card(name, url, file, client, card)
    }

    /// A Workflows integration.
    ///
    /// # Errors
    /// A message naming the receiver and what is missing or unreadable.
    pub fn workflow(
        name: &str,
        c: &MsTeamsV2Config,
        config: &NotifyConfig,
        client: &reqwest::Client,
    ) -> Result<Self, String> {
        let card = Card::Adaptive {
            title: config.template_or(&c.title, r#"{{ template "msteamsv2.default.title" . }}"#),
            text: config.template_or(&c.text, r#"{{ template "msteamsv2.default.text" . }}"#),
        };
        let (url, file) = (c.webhook_url.as_ref(), c.webhook_url_file.as_deref());
        Self::with_card(name, url, file, client, card)
    }

    /// The request body for `msg` (public for tests).
    pub fn body(&self, msg: &WebhookMessage) -> Value {
        let data = render::data(msg);
        let r = |t: &Template| render::render(t, &data);
        let firing = msg.status == "firing";
        let facts = render::facts(msg);
        let mut links: Vec<(&str, &str)> = Vec::new();
        if let Some(rb) = render::runbook(msg) {
            links.push(("Runbook", rb));
        }
        if !msg.external_url.is_empty() {
            links.push(("Open Foresight", &msg.external_url));
        }
        match &self.card {
            Card::Message {
                title,
                summary,
                text,
            } => {
                let mut card = json!({
                    "@context": "http://schema.org/extensions",
                    "type": "MessageCard",
                    "title": r(title),
                    "summary": r(summary),
                    "text": r(text),
                    "themeColor": if firing { "8C1A1A" } else { "2DC72D" },
                });
                if !facts.is_empty() {
                    card["sections"] = json!([{
                        "facts": facts.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
                    }]);
                }
                if !links.is_empty() {
                    card["potentialAction"] = links
                        .iter()
                        .map(|(name, uri)| {
                            json!({"@type": "OpenUri", "name": name, "targets": [{"os": "default", "uri": uri}]})
                        })
                        .collect();
                }
                card
            }
            Card::Adaptive { title, text } => {
                let mut body = vec![
                    json!({
                        "type": "TextBlock", "text": r(title), "weight": "Bolder",
                        "size": "Medium", "wrap": true, "style": "heading",
                        "color": if firing { "Attention" } else { "Good" },
                    }),
                    json!({"type": "TextBlock", "text": r(text), "wrap": true}),
                ];
                if !facts.is_empty() {
                    body.push(json!({
                        "type": "FactSet",
                        "facts": facts.iter().map(|(k, v)| json!({"title": k, "value": v})).collect::<Vec<_>>(),
                    }));
                }
                let mut content = json!({
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.2",
                    "body": body,
                    "msteams": {"width": "full"},
                });
                if !links.is_empty() {
                    content["actions"] = links
                        .iter()
                        .map(|(title, url)| json!({"type": "Action.OpenUrl", "title": title, "url": url}))
                        .collect();
                }
                json!({
                    "type": "message",
                    "attachments": [{
                        "contentType": "application/vnd.microsoft.card.adaptive",
                        "contentUrl": null,
                        "content": content,
                    }],
                })
            }
        }
    }

    /// Sends `msg` once.
    ///
    /// # Errors
    /// [`DeliveryError`]: 429 and 5xx are retried, other 4xx are permanent. The URL,
    /// which carries the webhook's token, never appears in an error.
    pub async fn send(&self, msg: &WebhookMessage) -> Result<(), DeliveryError> {
        let answer = post::send(
            &self.client,
            post::Request {
                receiver: &self.name,
                method: reqwest::Method::POST,
                url: self.url.expose(),
                headers: Vec::new(),
                body: self.body(msg).to_string().into_bytes(),
                timeout: Duration::from_secs(10),
                secret_url: true,
            },
            |_| None,
        )
        .await?;
        // Office 365 connectors answered a throttled request with 200 and this text.
        if answer.body.contains("HTTP error 429") {
            return Err(DeliveryError::http(&self.name, 429, answer.body, None));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::sample;

    fn config(kind: &str, extra: &str) -> NotifyConfig {
        NotifyConfig::from_yaml(&format!(
            "route: {{receiver: t}}\nreceivers:\n  - name: t\n    {kind}:\n      - {{webhook_url: 'https://example.webhook.office.com/x/token'{extra}}}\n"
        ))
        .unwrap()
    }

    #[test]
    fn the_connector_card_has_title_facts_and_links() {
        let c = config("msteams_configs", "");
        let r = MsTeamsReceiver::connector(
            "t/msteams/0",
            &c.receivers["t"].msteams_configs[0],
            &c,
            &crate::render::test_client(),
        )
        .unwrap();
        let b = r.body(&sample("firing"));
        assert_eq!(b["type"], "MessageCard");
        assert_eq!(
            b["title"],
            "[FIRING:2] KafkaOfflinePartitions (cluster prod-eu)"
        );
        assert_eq!(b["themeColor"], "8C1A1A");
        assert!(
            b["text"]
                .as_str()
                .unwrap()
                .contains("**Topic 3 has offline partitions**")
        );
        let facts = &b["sections"][0]["facts"];
        assert!(
            facts
                .as_array()
                .unwrap()
                .contains(&json!({"name": "category", "value": "availability"}))
        );
        assert_eq!(
            b["potentialAction"][0]["targets"][0]["uri"],
            "https://runbooks.example/offline"
        );
        assert_eq!(r.body(&sample("resolved"))["themeColor"], "2DC72D");
    }

    #[test]
    fn the_workflow_card_is_an_adaptive_card() {
        let c = config(
            "msteamsv2_configs",
            ", title: 'Kafka: {{ .CommonLabels.alertname }}'",
        );
        let r = MsTeamsReceiver::workflow(
            "t/msteamsv2/0",
            &c.receivers["t"].msteamsv2_configs[0],
            &c,
            &crate::render::test_client(),
        )
        .unwrap();
        let b = r.body(&sample("firing"));
        let card = &b["attachments"][0]["content"];
        assert_eq!(
            b["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(card["type"], "AdaptiveCard");
        assert_eq!(card["body"][0]["text"], "Kafka: KafkaOfflinePartitions");
        assert_eq!(card["body"][0]["color"], "Attention");
        assert_eq!(card["body"][2]["type"], "FactSet");
        assert!(
            card["body"][2]["facts"]
                .as_array()
                .unwrap()
                .contains(&json!({"title": "cluster", "value": "prod-eu"}))
        );
        assert_eq!(
            card["actions"][0]["url"],
            "https://runbooks.example/offline"
        );
        assert_eq!(card["actions"][1]["url"], "https://foresight.example");
    }

    #[test]
    fn one_url_is_required() {
        let e = NotifyConfig::from_yaml(
            "route: {receiver: t}\nreceivers:\n  - name: t\n    msteamsv2_configs: [{title: x}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("msteamsv2_configs[0]: set one of webhook_url, webhook_url_file"),
            "{e}"
        );
    }
}
