//! The notification configuration, in Alertmanager's shape, so that an existing
//! `alertmanager.yml` for Slack, email and webhook receivers loads as it is: `route`
//! (with nested `routes`), `receivers`, `inhibit_rules`, `time_intervals`. A field we do
//! not support is a load error that names it (serde's `unknown field`), never silently
//! ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::matchers::{Matcher, parse_matchers};
use crate::timeinterval::TimeInterval;

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The top level of `alertmanager.yml`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Defaults for receivers.
    #[serde(default)]
    pub global: Global,
    /// The routing tree's root.
    #[serde(default)]
    pub route: Option<RawRoute>,
    /// Where notifications go.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    /// Alerts that mute others.
    #[serde(default)]
    pub inhibit_rules: Vec<RawInhibitRule>,
    /// Named time intervals for `mute_time_intervals` and `active_time_intervals`.
    #[serde(default)]
    pub time_intervals: Vec<NamedTimeInterval>,
    /// Alertmanager's older name for `time_intervals`.
    #[serde(default)]
    pub mute_time_intervals: Vec<NamedTimeInterval>,
    /// Template files (`*` allowed in the file name) whose `define`d templates receiver
    /// fields can use with `{{ template "name" . }}`.
    #[serde(default)]
    pub templates: Vec<String>,
}

/// Receiver defaults.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Global {
    /// How long an alert without updates stays firing (Alertmanager's; unused by alerts
    /// from Foresight's own rules, which always say when they resolve).
    #[serde(default, with = "opt_duration")]
    pub resolve_timeout: Option<Duration>,
    /// Default sender address.
    pub smtp_from: Option<String>,
    /// Default `host:port` of the SMTP server.
    pub smtp_smarthost: Option<String>,
    /// Default SMTP user.
    pub smtp_auth_username: Option<String>,
    /// Default SMTP password.
    pub smtp_auth_password: Option<Secret>,
    /// Default SMTP password, from a file.
    pub smtp_auth_password_file: Option<String>,
    /// Whether STARTTLS is required (default true, as in Alertmanager).
    pub smtp_require_tls: Option<bool>,
    /// Default Slack incoming-webhook URL.
    pub slack_api_url: Option<Secret>,
    /// Default Slack incoming-webhook URL, from a file.
    pub slack_api_url_file: Option<String>,
    /// Default Slack Web API base URL for `app_token` receivers.
    pub slack_app_url: Option<String>,
    /// Default Slack bot token.
    pub slack_app_token: Option<Secret>,
    /// PagerDuty Events API v2 endpoint (default
    /// `https://events.pagerduty.com/v2/enqueue`).
    pub pagerduty_url: Option<String>,
    /// Opsgenie API base URL (default `https://api.opsgenie.com/`).
    pub opsgenie_api_url: Option<String>,
    /// Default Opsgenie API key.
    pub opsgenie_api_key: Option<Secret>,
    /// Default Opsgenie API key, from a file.
    pub opsgenie_api_key_file: Option<String>,
}

/// A credential or a URL that is one (a webhook URL with its token): kept out of
/// `Debug` output, logs and the status API.
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl Secret {
    /// The value, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The value of `inline`, or the trimmed content of `file`: Alertmanager's `_file`
/// variants, read when the receiver is built so that a missing file is a start-up error.
///
/// # Errors
/// A message naming the receiver, the field and the file.
pub fn secret_from(
    receiver: &str,
    field: &str,
    inline: Option<&Secret>,
    file: Option<&str>,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map(|s| Some(Secret(s.trim().to_string())))
            .map_err(|e| format!("{receiver}: {field}_file {f}: {e}")),
        (None, None) => Ok(None),
    }
}

/// One node of the routing tree, as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Receiver; inherited from the parent when absent.
    pub receiver: Option<String>,
    /// Labels to group by; `...` groups by all labels. Inherited when absent.
    pub group_by: Option<Vec<String>>,
    /// Keep matching sibling routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Matchers such as `severity=~"critical|warning"`.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// Deprecated equality matchers.
    #[serde(default, rename = "match")]
    pub match_: BTreeMap<String, String>,
    /// Deprecated regular-expression matchers.
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    /// Wait before the first notification of a new group.
    #[serde(default, with = "opt_duration")]
    pub group_wait: Option<Duration>,
    /// Wait before notifying a change of a group already notified.
    #[serde(default, with = "opt_duration")]
    pub group_interval: Option<Duration>,
    /// Wait before repeating an unchanged notification.
    #[serde(default, with = "opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Named intervals during which this route does not notify.
    #[serde(default)]
    pub mute_time_intervals: Vec<String>,
    /// Named intervals outside which this route does not notify.
    #[serde(default)]
    pub active_time_intervals: Vec<String>,
    /// Child routes, tried in order.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// An inhibition rule, as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInhibitRule {
    /// What a firing alert must match to mute others.
    #[serde(default)]
    pub source_matchers: Vec<String>,
    /// What a muted alert matches.
    #[serde(default)]
    pub target_matchers: Vec<String>,
    /// Labels that must be equal between source and target.
    #[serde(default)]
    pub equal: Vec<String>,
}

/// `time_intervals` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedTimeInterval {
    /// Name routes refer to.
    pub name: String,
    /// Any of these matching makes the interval active.
    #[serde(default)]
    pub time_intervals: Vec<TimeInterval>,
}

/// A receiver: every config in it gets each notification.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Name routes refer to.
    pub name: String,
    /// Slack messages.
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    /// Emails.
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
    /// HTTP POSTs.
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    /// PagerDuty incidents (Events API v2, or v1 with `service_key`).
    #[serde(default)]
    pub pagerduty_configs: Vec<PagerdutyConfig>,
    /// Opsgenie alerts.
    #[serde(default)]
    pub opsgenie_configs: Vec<OpsgenieConfig>,
    /// Microsoft Teams through an Office 365 connector (MessageCard).
    #[serde(default)]
    pub msteams_configs: Vec<MsTeamsConfig>,
    /// Microsoft Teams through a Workflows (Power Automate) webhook (Adaptive Card).
    #[serde(default)]
    pub msteamsv2_configs: Vec<MsTeamsV2Config>,
    /// Foresight: at most this many notifications a minute to this receiver (all its
    /// integrations together); the rest wait in the outbox, in order. Unlimited when
    /// absent.
    #[serde(default)]
    pub max_per_minute: Option<std::num::NonZeroU32>,
}

/// `slack_configs` entry: an incoming webhook (`api_url`) or `chat.postMessage` with a
/// bot token (`app_token`, Web API at `app_url`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Send resolved notifications (default false, as in Alertmanager).
    #[serde(default)]
    pub send_resolved: bool,
    /// Incoming-webhook URL.
    pub api_url: Option<Secret>,
    /// Incoming-webhook URL, from a file.
    pub api_url_file: Option<String>,
    /// Bot token for `chat.postMessage`.
    pub app_token: Option<Secret>,
    /// Bot token, from a file.
    pub app_token_file: Option<String>,
    /// Slack Web API base URL (default `https://slack.com/api/`).
    pub app_url: Option<String>,
    /// Channel (`#ops` or an id).
    pub channel: Option<String>,
    /// Bot user name shown.
    pub username: Option<String>,
    /// Title template.
    pub title: Option<String>,
    /// Title link template.
    pub title_link: Option<String>,
    /// Body template.
    pub text: Option<String>,
    /// Colour template (`danger`, `good`, or `#hex`).
    pub color: Option<String>,
    /// Icon URL.
    pub icon_url: Option<String>,
    /// Icon emoji.
    pub icon_emoji: Option<String>,
}

/// `email_configs` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Send resolved notifications (default false, as in Alertmanager).
    #[serde(default)]
    pub send_resolved: bool,
    /// Recipients, comma separated.
    pub to: String,
    /// Sender; `global.smtp_from` when absent.
    pub from: Option<String>,
    /// `host:port`; `global.smtp_smarthost` when absent. Port 465 is implicit TLS.
    pub smarthost: Option<String>,
    /// SMTP user.
    pub auth_username: Option<String>,
    /// SMTP password.
    pub auth_password: Option<Secret>,
    /// SMTP password, from a file.
    pub auth_password_file: Option<String>,
    /// Require STARTTLS (default `global.smtp_require_tls`, else true).
    pub require_tls: Option<bool>,
    /// Extra headers (`Subject` overrides the subject template).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTML body template.
    pub html: Option<String>,
    /// Text body template.
    pub text: Option<String>,
    /// TLS settings.
    #[serde(default)]
    pub tls_config: TlsConfig,
}

/// TLS settings of an SMTP connection.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of CAs to trust instead of the system's.
    pub ca_file: Option<String>,
    /// Name to check in the server certificate.
    pub server_name: Option<String>,
    /// Accept any certificate (tests only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// `webhook_configs` entry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Send resolved notifications (default true, as in Alertmanager).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Where to POST.
    pub url: Option<String>,
    /// Where to POST, from a file.
    pub url_file: Option<String>,
    /// At most this many alerts per message (0: all).
    #[serde(default)]
    pub max_alerts: usize,
    /// Request timeout (default 10s).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Foresight: HMAC-SHA256 signing secret (header `X-Foresight-Signature`).
    pub secret: Option<String>,
    /// A template for the body instead of the webhook JSON, for receivers that expect
    /// another shape (as Alertmanager 0.32's `payload`), rendered over Alertmanager's
    /// data.
    pub payload: Option<String>,
}

fn yes() -> bool {
    true
}

/// `pagerduty_configs` entry, with Alertmanager's names and defaults; every text field
/// is a template over Alertmanager's data.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    /// Send resolved notifications (default true, as in Alertmanager): they resolve the
    /// incident the firing one opened.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Events API v2 integration key.
    pub routing_key: Option<Secret>,
    /// Events API v2 integration key, from a file.
    pub routing_key_file: Option<String>,
    /// Events API v1 service key (the older "generic API" integration).
    pub service_key: Option<Secret>,
    /// Events API v1 service key, from a file.
    pub service_key_file: Option<String>,
    /// Endpoint; `global.pagerduty_url` when absent. (Alertmanager ignores it for v1;
    /// Foresight uses it for both.)
    pub url: Option<String>,
    /// Sending client's name (default `Foresight`).
    pub client: Option<String>,
    /// Sending client's link (default the external URL).
    pub client_url: Option<String>,
    /// Incident summary (default the group's title).
    pub description: Option<String>,
    /// Custom details; values are templates, and may be nested.
    pub details: Option<BTreeMap<String, serde_json::Value>>,
    /// Images.
    #[serde(default)]
    pub images: Vec<PagerdutyImage>,
    /// Links; Foresight's default is the runbook and the console.
    pub links: Option<Vec<PagerdutyLink>>,
    /// Source (default the client).
    pub source: Option<String>,
    /// `critical`, `error`, `warning` or `info`; Foresight's default maps the alerts'
    /// `severity` label (Alertmanager's is always `error`).
    pub severity: Option<String>,
    /// Event class.
    pub class: Option<String>,
    /// Component.
    pub component: Option<String>,
    /// Group.
    pub group: Option<String>,
    /// Request timeout (default 10s).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
}

/// A PagerDuty link.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyLink {
    /// Target (template).
    pub href: String,
    /// Text (template).
    #[serde(default)]
    pub text: String,
}

/// A PagerDuty image.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyImage {
    /// Image URL (template).
    pub src: String,
    /// Alternative text (template).
    #[serde(default)]
    pub alt: String,
    /// Link (template).
    #[serde(default)]
    pub href: String,
}

/// `opsgenie_configs` entry, with Alertmanager's names and defaults.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    /// Send resolved notifications (default true): they close the alert.
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// API key; `global.opsgenie_api_key` when absent.
    pub api_key: Option<Secret>,
    /// API key, from a file.
    pub api_key_file: Option<String>,
    /// API base URL; `global.opsgenie_api_url` when absent.
    pub api_url: Option<String>,
    /// Alert message, at most 130 characters (default the group's title).
    pub message: Option<String>,
    /// Description (default the alerts, one by one).
    pub description: Option<String>,
    /// Source (default the external URL).
    pub source: Option<String>,
    /// Extra details (templates), over the common labels.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Entity.
    pub entity: Option<String>,
    /// Who is notified.
    #[serde(default)]
    pub responders: Vec<OpsgenieResponder>,
    /// Comma-separated actions.
    pub actions: Option<String>,
    /// Comma-separated tags.
    pub tags: Option<String>,
    /// Note.
    pub note: Option<String>,
    /// `P1`…`P5`; Foresight's default maps the alerts' `severity` label (Alertmanager
    /// sends none).
    pub priority: Option<String>,
    /// Also update the message and description of an open alert.
    #[serde(default)]
    pub update_alerts: bool,
}

/// An Opsgenie responder: one of `id`, `name`, `username`, and a `type`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieResponder {
    /// Responder id (template).
    #[serde(default)]
    pub id: String,
    /// Name (template); with type `teams`, a comma-separated list of team names.
    #[serde(default)]
    pub name: String,
    /// User name (template).
    #[serde(default)]
    pub username: String,
    /// `team`, `teams`, `user`, `escalation` or `schedule` (template).
    #[serde(rename = "type")]
    pub kind: String,
}

/// `msteams_configs` entry: an Office 365 connector's incoming webhook.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MsTeamsConfig {
    /// Send resolved notifications (default true, as in Alertmanager).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Incoming webhook URL.
    pub webhook_url: Option<Secret>,
    /// Incoming webhook URL, from a file.
    pub webhook_url_file: Option<String>,
    /// Title (template).
    pub title: Option<String>,
    /// Summary, shown in notifications (template).
    pub summary: Option<String>,
    /// Text, Markdown (template).
    pub text: Option<String>,
}

/// `msteamsv2_configs` entry: a Workflows (Power Automate) webhook.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MsTeamsV2Config {
    /// Send resolved notifications (default true, as in Alertmanager).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// Workflow URL.
    pub webhook_url: Option<Secret>,
    /// Workflow URL, from a file.
    pub webhook_url_file: Option<String>,
    /// Title (template).
    pub title: Option<String>,
    /// Text, Markdown (template).
    pub text: Option<String>,
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| super::parse_duration(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A Prometheus duration (`30s`, `5m`, `1h30m`), read as Prometheus and the rules read it.
pub use foresight_template::parse_duration;

/// A route with everything inherited resolved and matchers parsed.
#[derive(Debug, Clone)]
pub struct Route {
    /// Receiver name.
    pub receiver: String,
    /// Labels to group by; `None` groups by every label (`...`).
    pub group_by: Option<Vec<String>>,
    /// See [`RawRoute::continue_`].
    pub continue_: bool,
    /// All must match.
    pub matchers: Vec<Matcher>,
    /// See [`RawRoute::group_wait`].
    pub group_wait: Duration,
    /// See [`RawRoute::group_interval`].
    pub group_interval: Duration,
    /// See [`RawRoute::repeat_interval`].
    pub repeat_interval: Duration,
    /// Names of muting intervals.
    pub mute_time_intervals: Vec<String>,
    /// Names of active intervals.
    pub active_time_intervals: Vec<String>,
    /// Children.
    pub routes: Vec<Route>,
}

/// An inhibition rule, parsed.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    /// See [`RawInhibitRule::source_matchers`].
    pub source: Vec<Matcher>,
    /// See [`RawInhibitRule::target_matchers`].
    pub target: Vec<Matcher>,
    /// See [`RawInhibitRule::equal`].
    pub equal: Vec<String>,
}

/// The loaded, checked configuration.
#[derive(Clone)]
pub struct NotifyConfig {
    /// Receiver defaults.
    pub global: Global,
    /// Root route.
    pub route: Route,
    /// Receivers by name.
    pub receivers: BTreeMap<String, Receiver>,
    /// Inhibition rules.
    pub inhibit_rules: Vec<InhibitRule>,
    /// Time intervals by name.
    pub time_intervals: BTreeMap<String, Vec<TimeInterval>>,
    /// The `define`d templates of `templates` files, over Foresight's defaults.
    pub library: foresight_template::Template,
    /// The YAML it was loaded from (empty when built in code), for `/api/v2/status`.
    pub original: String,
}

/// Foresight's definitions under Alertmanager's usual template names, so that receiver
/// fields written as `{{ template "slack.default.title" . }}` work; a `templates` file
/// may redefine any of them.
const DEFAULT_TEMPLATES: &str = r#"{{ define "__subject" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }}{{ with .CommonLabels.cluster }} (cluster {{ . }}){{ end }}{{ end }}
{{ define "__alert_list" }}{{ range .Alerts }}[{{ .Status }}] {{ or .Annotations.summary .Labels.alertname }}{{ with .Annotations.description }}: {{ . }}{{ end }}
{{ end }}{{ end }}
{{ define "slack.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "slack.default.text" }}{{ template "__alert_list" . }}{{ end }}
{{ define "email.default.subject" }}{{ template "__subject" . }}{{ end }}
{{ define "email.default.html" }}<pre>{{ template "__alert_list" . }}</pre>{{ end }}
{{ define "webhook.default.message" }}{{ template "__subject" . }}{{ end }}
{{ define "__text_alert_list" }}{{ range . }}[{{ .Status }}] {{ or .Annotations.summary .Labels.alertname }}{{ with .Annotations.description }}: {{ . }}{{ end }}{{ with .Annotations.runbook_url }} (runbook {{ . }}){{ end }}
{{ end }}{{ end }}
{{ define "__text_alert_list_markdown" }}{{ range . }}- **{{ or .Annotations.summary .Labels.alertname }}**{{ with .Annotations.description }}: {{ . }}{{ end }}{{ with .Annotations.runbook_url }} ([runbook]({{ . }})){{ end }}
{{ end }}{{ end }}
{{ define "__alerts_markdown" }}{{ if gt (len .Alerts.Firing) 0 }}**Firing**

{{ template "__text_alert_list_markdown" .Alerts.Firing }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}
**Resolved**

{{ template "__text_alert_list_markdown" .Alerts.Resolved }}{{ end }}{{ end }}
{{ define "pagerduty.default.description" }}{{ template "__subject" . }}{{ end }}
{{ define "pagerduty.default.client" }}Foresight{{ end }}
{{ define "pagerduty.default.clientURL" }}{{ .ExternalURL }}{{ end }}
{{ define "pagerduty.default.instances" }}{{ template "__text_alert_list" . }}{{ end }}
{{ define "opsgenie.default.message" }}{{ template "__subject" . }}{{ end }}
{{ define "opsgenie.default.description" }}{{ if gt (len .Alerts.Firing) 0 }}Alerts Firing:
{{ template "__text_alert_list" .Alerts.Firing }}{{ end }}{{ if gt (len .Alerts.Resolved) 0 }}Alerts Resolved:
{{ template "__text_alert_list" .Alerts.Resolved }}{{ end }}{{ end }}
{{ define "opsgenie.default.source" }}{{ .ExternalURL }}{{ end }}
{{ define "msteams.default.summary" }}{{ template "__subject" . }}{{ end }}
{{ define "msteams.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "msteams.default.text" }}{{ template "__alerts_markdown" . }}{{ end }}
{{ define "msteamsv2.default.title" }}{{ template "__subject" . }}{{ end }}
{{ define "msteamsv2.default.text" }}{{ template "__alerts_markdown" . }}{{ end }}"#;

/// The files `pattern` names: a path whose file name may contain `*`.
fn template_files(pattern: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let path = std::path::Path::new(pattern);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("templates: {pattern:?} names no file"))?;
    if !name.contains('*') {
        return Ok(vec![path.to_path_buf()]);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let re = regex::Regex::new(&format!("^{}$", regex::escape(name).replace("\\*", ".*")))
        .map_err(|e| format!("templates: {pattern:?}: {e}"))?;
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("templates: {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| re.is_match(n))
        })
        .collect();
    out.sort();
    Ok(out)
}

impl std::fmt::Debug for NotifyConfig {
    /// Without the original text, which holds the secrets in the clear.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("global", &self.global)
            .field("route", &self.route)
            .field("receivers", &self.receivers)
            .field("inhibit_rules", &self.inhibit_rules)
            .field("time_intervals", &self.time_intervals)
            .finish_non_exhaustive()
    }
}

impl NotifyConfig {
    /// Parses and checks `yaml`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field, matcher, receiver or interval at fault.
    pub fn from_yaml(yaml: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            serde_saphyr::from_str(yaml).map_err(|e| ConfigError(format!("{e}")))?;
        Ok(NotifyConfig {
            original: yaml.to_string(),
            ..Self::from_raw(raw)?
        })
    }

    /// Checks `raw`.
    ///
    /// # Errors
    /// See [`from_yaml`](Self::from_yaml).
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut library = foresight_template::Template::parse(DEFAULT_TEMPLATES)
            .map_err(|e| ConfigError(format!("built-in templates: {e}")))?;
        for pattern in &raw.templates {
            for file in template_files(pattern).map_err(ConfigError)? {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| ConfigError(format!("templates: {}: {e}", file.display())))?;
                let t = foresight_template::Template::parse(&text)
                    .map_err(|e| ConfigError(format!("templates: {}: {e}", file.display())))?;
                library = t.with_library(&library);
            }
        }
        let mut receivers = BTreeMap::new();
        for r in raw.receivers {
            // Go templates over Alertmanager's data (`.CommonLabels.alertname`, …): a
            // malformed one, or one using what the engine lacks (`template`, `define`),
            // is a load error naming the field.
            let templated = |field: &str, v: &Option<String>| -> Result<(), ConfigError> {
                let Some(t) = v else { return Ok(()) };
                let parsed = foresight_template::Template::parse(t)
                    .map_err(|e| ConfigError(format!("receivers: {}: {field}: {e}", r.name)))?;
                // A `template` call must name something defined.
                for name in calls(t) {
                    if !library.defined().any(|d| d == name) && !parsed.defined().any(|d| d == name)
                    {
                        return Err(ConfigError(format!(
                            "receivers: {}: {field}: template {name:?} is not defined (add it in a templates file)",
                            r.name
                        )));
                    }
                }
                Ok(())
            };
            for (i, w) in r.webhook_configs.iter().enumerate() {
                templated(&format!("webhook_configs[{i}].payload"), &w.payload)?;
                if w.url.is_none() && w.url_file.is_none() {
                    return Err(ConfigError(format!(
                        "receivers: {}: webhook_configs[{i}]: one of url or url_file is required",
                        r.name
                    )));
                }
            }
            for (i, s) in r.slack_configs.iter().enumerate() {
                templated(&format!("slack_configs[{i}].title"), &s.title)?;
                templated(&format!("slack_configs[{i}].text"), &s.text)?;
                templated(&format!("slack_configs[{i}].title_link"), &s.title_link)?;
                templated(&format!("slack_configs[{i}].color"), &s.color)?;
                let webhook = s.api_url.is_some()
                    || s.api_url_file.is_some()
                    || raw.global.slack_api_url.is_some()
                    || raw.global.slack_api_url_file.is_some();
                let app = s.app_token.is_some()
                    || s.app_token_file.is_some()
                    || raw.global.slack_app_token.is_some();
                if !webhook && !app {
                    return Err(ConfigError(format!(
                        "receivers: {}: slack_configs[{i}]: set api_url (incoming webhook) or app_token (bot token)",
                        r.name
                    )));
                }
                if app && !webhook && s.channel.is_none() {
                    return Err(ConfigError(format!(
                        "receivers: {}: slack_configs[{i}]: chat.postMessage needs a channel",
                        r.name
                    )));
                }
            }
            for (i, e) in r.email_configs.iter().enumerate() {
                templated(&format!("email_configs[{i}].html"), &e.html)?;
                templated(&format!("email_configs[{i}].text"), &e.text)?;
                for (h, v) in &e.headers {
                    templated(&format!("email_configs[{i}].headers.{h}"), &Some(v.clone()))?;
                }
                if e.smarthost.is_none() && raw.global.smtp_smarthost.is_none() {
                    return Err(ConfigError(format!(
                        "receivers: {}: email_configs[{i}]: no smarthost here nor in global.smtp_smarthost",
                        r.name
                    )));
                }
                if e.from.is_none() && raw.global.smtp_from.is_none() {
                    return Err(ConfigError(format!(
                        "receivers: {}: email_configs[{i}]: no from here nor in global.smtp_from",
                        r.name
                    )));
                }
            }
            // A setting and its `_file` variant: at most one, or (`required`) exactly one.
            let one_of = |kind: &str, i: usize, fields: &[(&str, bool)], required: bool| {
                let set: Vec<&str> = fields.iter().filter(|f| f.1).map(|f| f.0).collect();
                match set.len() {
                    0 if !required => Ok(()),
                    0 => Err(ConfigError(format!(
                        "receivers: {}: {kind}[{i}]: set one of {}",
                        r.name,
                        fields.iter().map(|f| f.0).collect::<Vec<_>>().join(", ")
                    ))),
                    1 => Ok(()),
                    _ => Err(ConfigError(format!(
                        "receivers: {}: {kind}[{i}]: set only one of {}",
                        r.name,
                        set.join(", ")
                    ))),
                }
            };
            for (i, p) in r.pagerduty_configs.iter().enumerate() {
                let f = |n: &str| format!("pagerduty_configs[{i}].{n}");
                for (name, v) in [
                    ("client", &p.client),
                    ("client_url", &p.client_url),
                    ("description", &p.description),
                    ("source", &p.source),
                    ("severity", &p.severity),
                    ("class", &p.class),
                    ("component", &p.component),
                    ("group", &p.group),
                ] {
                    templated(&f(name), v)?;
                }
                for (j, l) in p.links.iter().flatten().enumerate() {
                    templated(&f(&format!("links[{j}].href")), &Some(l.href.clone()))?;
                    templated(&f(&format!("links[{j}].text")), &Some(l.text.clone()))?;
                }
                for (k, v) in p.details.iter().flatten() {
                    if let Some(s) = v.as_str() {
                        templated(&f(&format!("details.{k}")), &Some(s.to_string()))?;
                    }
                }
                let v2 = p.routing_key.is_some() || p.routing_key_file.is_some();
                let v1 = p.service_key.is_some() || p.service_key_file.is_some();
                if !v1 && !v2 {
                    return Err(ConfigError(format!(
                        "receivers: {}: pagerduty_configs[{i}]: missing service or routing key (routing_key, routing_key_file, service_key or service_key_file)",
                        r.name
                    )));
                }
                one_of(
                    "pagerduty_configs",
                    i,
                    &[
                        ("routing_key", p.routing_key.is_some()),
                        ("routing_key_file", p.routing_key_file.is_some()),
                    ],
                    false,
                )?;
                one_of(
                    "pagerduty_configs",
                    i,
                    &[
                        ("service_key", p.service_key.is_some()),
                        ("service_key_file", p.service_key_file.is_some()),
                    ],
                    false,
                )?;
                if let Some(s) = &p.severity
                    && !s.contains("{{")
                    && !["critical", "error", "warning", "info"].contains(&s.as_str())
                {
                    return Err(ConfigError(format!(
                        "receivers: {}: pagerduty_configs[{i}].severity: {s:?} is not critical, error, warning or info",
                        r.name
                    )));
                }
            }
            for (i, o) in r.opsgenie_configs.iter().enumerate() {
                let f = |n: &str| format!("opsgenie_configs[{i}].{n}");
                for (name, v) in [
                    ("message", &o.message),
                    ("description", &o.description),
                    ("source", &o.source),
                    ("entity", &o.entity),
                    ("actions", &o.actions),
                    ("tags", &o.tags),
                    ("note", &o.note),
                    ("priority", &o.priority),
                ] {
                    templated(&f(name), v)?;
                }
                for (k, v) in &o.details {
                    templated(&f(&format!("details.{k}")), &Some(v.clone()))?;
                }
                one_of(
                    "opsgenie_configs",
                    i,
                    &[
                        ("api_key", o.api_key.is_some()),
                        ("api_key_file", o.api_key_file.is_some()),
                    ],
                    false,
                )?;
                if o.api_key.is_none()
                    && o.api_key_file.is_none()
                    && raw.global.opsgenie_api_key.is_none()
                    && raw.global.opsgenie_api_key_file.is_none()
                {
                    return Err(ConfigError(format!(
                        "receivers: {}: opsgenie_configs[{i}]: no api_key here nor in global.opsgenie_api_key",
                        r.name
                    )));
                }
                if let Some(p) = &o.priority
                    && !p.contains("{{")
                    && !["P1", "P2", "P3", "P4", "P5"].contains(&p.as_str())
                {
                    return Err(ConfigError(format!(
                        "receivers: {}: opsgenie_configs[{i}].priority: {p:?} is not one of P1 to P5",
                        r.name
                    )));
                }
                for (j, resp) in o.responders.iter().enumerate() {
                    if resp.id.is_empty() && resp.name.is_empty() && resp.username.is_empty() {
                        return Err(ConfigError(format!(
                            "receivers: {}: opsgenie_configs[{i}].responders[{j}]: set id, name or username",
                            r.name
                        )));
                    }
                    if !resp.kind.contains("{{")
                        && !["team", "teams", "user", "escalation", "schedule"]
                            .contains(&resp.kind.to_lowercase().as_str())
                    {
                        return Err(ConfigError(format!(
                            "receivers: {}: opsgenie_configs[{i}].responders[{j}].type: {:?} is not team, teams, user, escalation or schedule",
                            r.name, resp.kind
                        )));
                    }
                    for (name, v) in [
                        ("id", &resp.id),
                        ("name", &resp.name),
                        ("username", &resp.username),
                        ("type", &resp.kind),
                    ] {
                        templated(&f(&format!("responders[{j}].{name}")), &Some(v.clone()))?;
                    }
                }
            }
            for (i, t) in r.msteams_configs.iter().enumerate() {
                for (name, v) in [
                    ("title", &t.title),
                    ("summary", &t.summary),
                    ("text", &t.text),
                ] {
                    templated(&format!("msteams_configs[{i}].{name}"), v)?;
                }
                one_of(
                    "msteams_configs",
                    i,
                    &[
                        ("webhook_url", t.webhook_url.is_some()),
                        ("webhook_url_file", t.webhook_url_file.is_some()),
                    ],
                    true,
                )?;
            }
            for (i, t) in r.msteamsv2_configs.iter().enumerate() {
                for (name, v) in [("title", &t.title), ("text", &t.text)] {
                    templated(&format!("msteamsv2_configs[{i}].{name}"), v)?;
                }
                one_of(
                    "msteamsv2_configs",
                    i,
                    &[
                        ("webhook_url", t.webhook_url.is_some()),
                        ("webhook_url_file", t.webhook_url_file.is_some()),
                    ],
                    true,
                )?;
            }
            if receivers.insert(r.name.clone(), r.clone()).is_some() {
                return Err(ConfigError(format!(
                    "receivers: {} is defined twice",
                    r.name
                )));
            }
        }
        let mut time_intervals = BTreeMap::new();
        for t in raw
            .time_intervals
            .into_iter()
            .chain(raw.mute_time_intervals)
        {
            for i in &t.time_intervals {
                i.check()
                    .map_err(|e| ConfigError(format!("time_intervals: {}: {e}", t.name)))?;
            }
            time_intervals.insert(t.name, t.time_intervals);
        }
        let root = raw
            .route
            .ok_or_else(|| ConfigError("route: a root route is required".into()))?;
        if root.receiver.is_none() {
            return Err(ConfigError("route: the root route needs a receiver".into()));
        }
        if !root.matchers.is_empty() || !root.match_.is_empty() || !root.match_re.is_empty() {
            return Err(ConfigError(
                "route: the root route matches every alert; it cannot have matchers".into(),
            ));
        }
        let defaults = Route {
            receiver: String::new(),
            group_by: Some(Vec::new()),
            continue_: false,
            matchers: Vec::new(),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            mute_time_intervals: Vec::new(),
            active_time_intervals: Vec::new(),
            routes: Vec::new(),
        };
        let route = resolve(&root, &defaults, &receivers, &time_intervals, "route")?;
        let mut inhibit_rules = Vec::new();
        for (i, r) in raw.inhibit_rules.iter().enumerate() {
            let parse = |list: &[String]| -> Result<Vec<Matcher>, ConfigError> {
                let mut out = Vec::new();
                for m in list {
                    out.extend(
                        parse_matchers(m)
                            .map_err(|e| ConfigError(format!("inhibit_rules[{i}]: {e}")))?,
                    );
                }
                Ok(out)
            };
            inhibit_rules.push(InhibitRule {
                source: parse(&r.source_matchers)?,
                target: parse(&r.target_matchers)?,
                equal: r.equal.clone(),
            });
        }
        Ok(NotifyConfig {
            global: raw.global,
            route,
            receivers,
            inhibit_rules,
            time_intervals,
            library,
            original: String::new(),
        })
    }

    /// Alertmanager's `resolve_timeout` (default 5 minutes): the end given to an alert
    /// that does not say when it ends.
    pub fn resolve_timeout_ms(&self) -> i64 {
        self.global
            .resolve_timeout
            .map_or(5 * 60 * 1000, |d| d.as_millis() as i64)
    }

    /// The configuration as loaded, for `/api/v2/status`, with every secret (keys,
    /// passwords, tokens, and the webhook URLs that carry one) written `<secret>`, as
    /// Alertmanager shows it. Comments and layout are not kept.
    pub fn redacted_yaml(&self) -> String {
        let Ok(mut v) = serde_saphyr::from_str::<serde_json::Value>(&self.original) else {
            return String::new();
        };
        redact(&mut v, "");
        serde_saphyr::to_string(&v).unwrap_or_default()
    }

    /// A receiver field's template, or Alertmanager's `default` (a `{{ template … }}` of
    /// the library) when the field is not set.
    pub fn template_or(
        &self,
        field: &Option<String>,
        default: &str,
    ) -> foresight_template::Template {
        self.template(field.as_deref().unwrap_or(default))
    }

    /// Parses a receiver field's template with the library (checked when loading).
    pub fn template(&self, text: &str) -> foresight_template::Template {
        foresight_template::Template::parse(text)
            .unwrap_or_else(|e| {
                foresight_template::Template::parse(&format!("<error expanding template: {e}>"))
                    .unwrap_or_else(|_| self.library.clone())
            })
            .with_library(&self.library)
    }
}

/// Replaces secrets in a parsed configuration; `list` is the key of the list `v` is in.
fn redact(v: &mut serde_json::Value, list: &str) {
    const SECRETS: [&str; 11] = [
        "smtp_auth_password",
        "slack_api_url",
        "slack_app_token",
        "opsgenie_api_key",
        "auth_password",
        "app_token",
        "routing_key",
        "service_key",
        "api_key",
        "webhook_url",
        "secret",
    ];
    match v {
        serde_json::Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                let secret = SECRETS.contains(&k.as_str())
                    || (list == "webhook_configs" && k == "url")
                    || (list == "slack_configs" && k == "api_url");
                if secret && !v.is_null() {
                    *v = serde_json::Value::String("<secret>".into());
                } else {
                    redact(v, k);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact(v, list)),
        _ => {}
    }
}

/// Names in `{{ template "name" … }}` actions of `text`.
fn calls(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        rest = &rest[i + 2..];
        let action = rest.trim_start_matches('-').trim_start();
        if let Some(after) = action.strip_prefix("template") {
            let after = after.trim_start();
            if let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '`')
                && let Some(end) = after[1..].find(q)
            {
                out.push(&after[1..1 + end]);
            }
        }
    }
    out
}

fn resolve(
    raw: &RawRoute,
    parent: &Route,
    receivers: &BTreeMap<String, Receiver>,
    intervals: &BTreeMap<String, Vec<TimeInterval>>,
    path: &str,
) -> Result<Route, ConfigError> {
    let receiver = raw.receiver.clone().unwrap_or(parent.receiver.clone());
    if !receivers.contains_key(&receiver) {
        return Err(ConfigError(format!(
            "{path}: receiver {receiver:?} is not in receivers"
        )));
    }
    let group_by = match &raw.group_by {
        None => parent.group_by.clone(),
        Some(g) if g.iter().any(|l| l == "...") => {
            if g.len() > 1 {
                return Err(ConfigError(format!(
                    "{path}: group_by: `...` groups by every label and cannot be combined"
                )));
            }
            None
        }
        Some(g) => Some(g.clone()),
    };
    let mut matchers = Vec::new();
    for m in &raw.matchers {
        matchers.extend(parse_matchers(m).map_err(|e| ConfigError(format!("{path}: {e}")))?);
    }
    for (k, v) in &raw.match_ {
        matchers.push(Matcher::equal(k, v));
    }
    for (k, v) in &raw.match_re {
        matchers
            .push(Matcher::regex(k, v, false).map_err(|e| ConfigError(format!("{path}: {e}")))?);
    }
    for name in raw
        .mute_time_intervals
        .iter()
        .chain(&raw.active_time_intervals)
    {
        if !intervals.contains_key(name) {
            return Err(ConfigError(format!(
                "{path}: time interval {name:?} is not in time_intervals"
            )));
        }
    }
    let nonzero = |d: Option<Duration>, inherited: Duration, what: &str| {
        let d = d.unwrap_or(inherited);
        if d.is_zero() && what != "group_wait" {
            Err(ConfigError(format!("{path}: {what} must be more than 0")))
        } else {
            Ok(d)
        }
    };
    let mut route = Route {
        receiver,
        group_by,
        continue_: raw.continue_,
        matchers,
        group_wait: nonzero(raw.group_wait, parent.group_wait, "group_wait")?,
        group_interval: nonzero(raw.group_interval, parent.group_interval, "group_interval")?,
        repeat_interval: nonzero(
            raw.repeat_interval,
            parent.repeat_interval,
            "repeat_interval",
        )?,
        mute_time_intervals: raw.mute_time_intervals.clone(),
        active_time_intervals: raw.active_time_intervals.clone(),
        routes: Vec::new(),
    };
    for (i, child) in raw.routes.iter().enumerate() {
        let c = resolve(
            child,
            &route,
            receivers,
            intervals,
            &format!("{path}.routes[{i}]"),
        )?;
        route.routes.push(c);
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alertmanager_config_loads_and_inherits() {
        let c = NotifyConfig::from_yaml(
            r#"
global:
  smtp_smarthost: localhost:25
  smtp_from: am@example.com
route:
  receiver: team
  group_by: [alertname, cluster]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"', 'category=~"availability|durability"']
      receiver: pager
      group_by: ['...']
      continue: true
      routes:
        - match: {cluster: prod}
          repeat_interval: 1h
    - match_re: {service: "kafka.*"}
      mute_time_intervals: [weekends]
receivers:
  - name: team
    email_configs: [{to: team@example.com}]
  - name: pager
    webhook_configs: [{url: "http://127.0.0.1:9/hook", send_resolved: false}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
time_intervals:
  - name: weekends
    time_intervals:
      - weekdays: ['saturday', 'sunday']
"#,
        )
        .unwrap();
        assert_eq!(c.route.group_wait, Duration::from_secs(10));
        let pager = &c.route.routes[0];
        assert_eq!(pager.group_by, None);
        assert!(pager.continue_);
        assert_eq!(pager.group_wait, Duration::from_secs(10), "inherited");
        assert_eq!(pager.routes[0].receiver, "pager", "inherited");
        assert_eq!(pager.routes[0].repeat_interval, Duration::from_secs(3600));
        assert_eq!(c.route.routes[1].receiver, "team");
        assert_eq!(c.inhibit_rules[0].equal, vec!["cluster".to_string()]);
    }

    #[test]
    fn an_unsupported_field_is_named() {
        let e = NotifyConfig::from_yaml(
            "route: {receiver: a}\nreceivers:\n  - name: a\n    victorops_configs: [{}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("victorops_configs"), "{e}");
        let slack = |title: &str| {
            NotifyConfig::from_yaml(&format!(
                "route: {{receiver: a}}\nreceivers:\n  - name: a\n    slack_configs: [{{api_url: 'http://x', title: '{title}'}}]\n"
            ))
        };
        let e = slack("{{ template \"mine.title\" . }}")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("slack_configs[0].title") && e.contains("\"mine.title\" is not defined"),
            "{e}"
        );
        // Alertmanager's usual names are defined by Foresight.
        assert!(slack("{{ template \"slack.default.title\" . }}").is_ok());
        assert!(slack("{{ if }}").is_err());
        let e = NotifyConfig::from_yaml("route: {receiver: b}\nreceivers: [{name: a}]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"b\" is not in receivers"), "{e}");
        let e = NotifyConfig::from_yaml(
            "route: {receiver: a, routes: [{matchers: ['sev=~\"(\"']}]}\nreceivers: [{name: a}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("route.routes[0]"), "{e}");
    }

    #[test]
    fn durations_read_as_prometheus_writes_them() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }
}
