//! What a person reads: the title, text and HTML of a group notification, and its Slack
//! blocks, with what an on-call engineer needs first (severity, category, cluster,
//! summary, description, runbook, and the brokers, topics and groups affected).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::payload::{WebhookAlert, WebhookMessage};

/// `[FIRING:2] KafkaUnderReplicated (cluster prod-eu)`.
pub fn title(msg: &WebhookMessage) -> String {
    let firing = msg.alerts.iter().filter(|a| a.status == "firing").count();
    let status = if firing > 0 {
        format!("FIRING:{firing}")
    } else {
        "RESOLVED".to_string()
    };
    let name = msg
        .common_labels
        .get("alertname")
        .or_else(|| msg.group_labels.get("alertname"))
        .cloned()
        .unwrap_or_else(|| format!("{} alerts", msg.alerts.len()));
    match msg.common_labels.get("cluster") {
        Some(c) => format!("[{status}] {name} (cluster {c})"),
        None => format!("[{status}] {name}"),
    }
}

fn field<'a>(a: &'a WebhookAlert, key: &str) -> Option<&'a str> {
    a.annotations
        .get(key)
        .or_else(|| a.labels.get(key))
        .map(String::as_str)
}

/// The values of `label` across the alerts, as a list for the reader.
fn affected(msg: &WebhookMessage, label: &str) -> Option<String> {
    let v: BTreeSet<&str> = msg
        .alerts
        .iter()
        .filter_map(|a| a.labels.get(label).map(String::as_str))
        .collect();
    if v.is_empty() {
        return None;
    }
    let shown: Vec<&str> = v.iter().take(10).copied().collect();
    let more = v.len().saturating_sub(shown.len());
    Some(if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    })
}

/// Lines of `label: value` for what the group is about.
pub fn facts(msg: &WebhookMessage) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in ["severity", "category", "cluster"] {
        if let Some(v) = msg.common_labels.get(key) {
            out.push((key.to_string(), v.clone()));
        }
    }
    if let Some(ctx) = &msg.cluster_context {
        out.extend(ctx.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for (label, name) in [
        ("broker", "brokers"),
        ("topic", "topics"),
        ("consumergroup", "consumer groups"),
    ] {
        if let Some(v) = affected(msg, label) {
            out.push((name.to_string(), v));
        }
    }
    out
}

/// The plain-text body.
pub fn text(msg: &WebhookMessage) -> String {
    let mut s = title(msg);
    s.push_str("\n\n");
    for (k, v) in facts(msg) {
        let _ = writeln!(s, "{k}: {v}");
    }
    for a in &msg.alerts {
        let _ = write!(s, "\n[{}] ", a.status.to_uppercase());
        s.push_str(field(a, "summary").unwrap_or(&a.labels["alertname"].clone()));
        s.push('\n');
        if let Some(d) = field(a, "description") {
            let _ = writeln!(s, "{d}");
        }
        if let Some(r) = a.annotations.get("runbook_url") {
            let _ = writeln!(s, "Runbook: {r}");
        }
        let _ = writeln!(s, "Since: {}", a.starts_at);
    }
    if !msg.external_url.is_empty() {
        let _ = write!(s, "\n{}\n", msg.external_url);
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML body.
pub fn html(msg: &WebhookMessage) -> String {
    let mut s = format!("<html><body><h2>{}</h2><table>", escape(&title(msg)));
    for (k, v) in facts(msg) {
        let _ = write!(
            s,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            escape(&k),
            escape(&v)
        );
    }
    s.push_str("</table>");
    for a in &msg.alerts {
        let _ = write!(
            s,
            "<h3>[{}] {}</h3>",
            escape(&a.status.to_uppercase()),
            escape(field(a, "summary").unwrap_or(""))
        );
        if let Some(d) = field(a, "description") {
            let _ = write!(s, "<p>{}</p>", escape(d));
        }
        if let Some(r) = a.annotations.get("runbook_url") {
            let _ = write!(s, "<p><a href=\"{0}\">Runbook</a></p>", escape(r));
        }
    }
    s.push_str("</body></html>");
    s
}

/// Slack mrkdwn for one alert.
pub fn slack_alert(a: &WebhookAlert) -> String {
    let icon = if a.status == "firing" { "🔥" } else { "✅" };
    let mut s = format!(
        "{icon} *{}*",
        field(a, "summary").unwrap_or(a.labels.get("alertname").map_or("", String::as_str))
    );
    if let Some(d) = field(a, "description") {
        let _ = write!(s, "\n{d}");
    }
    if let Some(r) = a.annotations.get("runbook_url") {
        let _ = write!(s, "\n<{r}|Runbook>");
    }
    s
}

/// Alertmanager's template data for `msg`: `.Receiver`, `.Status`, `.Alerts` (each with
/// `.Status`, `.Labels`, `.Annotations`, `.StartsAt`, `.EndsAt`, `.GeneratorURL`,
/// `.Fingerprint`; `.Alerts.Firing` and `.Alerts.Resolved`), `.GroupLabels`,
/// `.CommonLabels`, `.CommonAnnotations`, `.ExternalURL`.
pub fn data(msg: &WebhookMessage) -> serde_json::Value {
    serde_json::json!({
        "Receiver": msg.receiver,
        "Status": msg.status,
        "Alerts": msg.alerts.iter().map(|a| serde_json::json!({
            "Status": a.status,
            "Labels": a.labels,
            "Annotations": a.annotations,
            "StartsAt": a.starts_at,
            "EndsAt": a.ends_at,
            "GeneratorURL": a.generator_url,
            "Fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
        "GroupLabels": msg.group_labels,
        "CommonLabels": msg.common_labels,
        "CommonAnnotations": msg.common_annotations,
        "ExternalURL": msg.external_url,
        "GroupKey": msg.group_key,
    })
}

/// Renders the configured template `text` over `msg` (checked when the config loaded),
/// with the `define`d templates of `library`.
pub fn expand(text: &str, msg: &WebhookMessage, library: &foresight_template::Template) -> String {
    match foresight_template::Template::parse(text) {
        Ok(t) => {
            let d = data(msg);
            let empty = std::collections::BTreeMap::new();
            t.with_library(library)
                .render(&foresight_template::Context::with_data(&d, &empty))
        }
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

/// Renders a receiver field's parsed template over `data` (from [`data`]).
pub fn render(t: &foresight_template::Template, data: &serde_json::Value) -> String {
    let empty = std::collections::BTreeMap::new();
    t.render(&foresight_template::Context::with_data(data, &empty))
}

/// The group's runbook: the common annotation, else the first alert's.
pub fn runbook(msg: &WebhookMessage) -> Option<&str> {
    msg.common_annotations
        .get("runbook_url")
        .or_else(|| {
            msg.alerts
                .iter()
                .find_map(|a| a.annotations.get("runbook_url"))
        })
        .map(String::as_str)
}

/// The group's `severity` label, lower-cased: the common one, else the first firing
/// alert's.
pub fn severity(msg: &WebhookMessage) -> Option<String> {
    msg.common_labels
        .get("severity")
        .or_else(|| {
            msg.alerts
                .iter()
                .filter(|a| a.status == "firing")
                .find_map(|a| a.labels.get("severity"))
        })
        .map(|s| s.to_lowercase())
}

/// A message for the receivers' tests: two alerts of one group, firing or resolved.
#[cfg(test)]
pub(crate) fn sample(status: &str) -> WebhookMessage {
    serde_json::from_value(serde_json::json!({
        "version": "4",
        "groupKey": "{}/{severity=\"critical\"}:{alertname=\"KafkaOfflinePartitions\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "pager",
        "groupLabels": {"alertname": "KafkaOfflinePartitions"},
        "commonLabels": {"alertname": "KafkaOfflinePartitions", "severity": "critical",
                          "category": "availability", "cluster": "prod-eu"},
        "commonAnnotations": {"runbook_url": "https://runbooks.example/offline"},
        "externalURL": "https://foresight.example",
        "alerts": (["3", "4"]).iter().map(|t| serde_json::json!({
            "status": status,
            "labels": {"alertname": "KafkaOfflinePartitions", "severity": "critical",
                       "category": "availability", "cluster": "prod-eu", "topic": t},
            "annotations": {"summary": format!("Topic {t} has offline partitions"),
                            "runbook_url": "https://runbooks.example/offline"},
            "startsAt": "2026-12-07T10:00:00.000Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": format!("f{t}"),
        })).collect::<Vec<_>>(),
        "foresightClusterContext": {"brokers": "3", "controller": "1"},
    }))
    .expect("a webhook message")
}

/// A client for the receivers' tests (the crate does not pick a TLS provider itself).
#[cfg(test)]
pub(crate) fn test_client() -> reqwest::Client {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .build()
        .expect("a client")
}
