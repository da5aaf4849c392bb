//! `foresight serve` configuration: one YAML file, defaults in one place, every problem
//! reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use foresight_notifier::WebhookConfig;
use foresight_notifier::config::{
    NotifyConfig, RawConfig, RawRoute, Receiver, WebhookConfig as AmWebhook,
};
use serde::Deserialize;

use crate::error::Error;

/// Environment variables of the service that are not config overrides.
const NOT_OVERRIDES: &[&str] = &["FORESIGHT_CONFIG", "FORESIGHT_LOG_FORMAT"];

/// The service configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on for HTTPS (default `0.0.0.0:8443`).
    pub listen: String,
    /// Where the SQLite file and generated certificate live (default `./foresight-data`).
    pub data_dir: PathBuf,
    /// The server certificate; generated into the data dir when not set.
    pub tls: TlsConfig,
    /// How often rules are evaluated, a Prometheus duration (default `15s`).
    pub evaluation_interval: String,
    /// Rule files loaded in addition to the built-in pack.
    pub rule_files: Vec<PathBuf>,
    /// Whether to load the built-in Kafka rule pack (default true).
    pub builtin_rules: bool,
    /// Adapts the built-in pack: `disabled` rule names, `runbook_base_url`, and
    /// per-rule `overrides` (`for`, `keep_firing_for`, `labels`, `annotations`). A rule
    /// in `rule_files` with the name of a pack rule replaces it.
    pub pack: foresight_rules::packs::PackOptions,
    /// Labels templates can read as `$externalLabels`.
    pub external_labels: BTreeMap<String, String>,
    /// Link to this service placed in notifications.
    pub external_url: String,
    /// Webhook receivers every firing and resolved alert is sent to, each alert on its
    /// own as soon as it changes: a shorthand for when `alertmanager_config` is not set.
    pub webhooks: Vec<WebhookConfig>,
    /// An Alertmanager configuration file (route tree, Slack, email and webhook
    /// receivers, inhibition, time intervals) for grouped, routed notifications.
    pub alertmanager_config: Option<PathBuf>,
    /// Let webhook subscriptions point at loopback, private and link-local addresses
    /// (default false: a tenant must not reach into the service's own network).
    pub allow_private_webhook_urls: bool,
    /// Request limits.
    pub limits: Limits,
    /// How long accepted batches are kept in the store (default `7d`). A restart rebuilds
    /// the rules' series windows from them, so at least the longest rule range is kept
    /// whatever is set.
    pub batch_retention: String,
    /// How much history the query API (`/api/v1/query_range`) can chart, kept in memory
    /// per tenant (default `1h`; the rules' own windows are kept in any case).
    pub query_retention: String,
    /// How long alert history and delivered or dead notifications are kept (default
    /// `90d`).
    pub history_retention: String,
    /// How long a shutdown (SIGTERM, Ctrl-C) may take to finish requests in flight and
    /// send the notifications already queued (default `15s`).
    pub shutdown_timeout: String,
    /// The web console served at `/`.
    pub console: ConsoleConfig,
    /// Cluster mode: several nodes on Kafka and PostgreSQL (see
    /// [`crate::cluster::config::ClusterConfig`]); without it, one process on SQLite.
    pub cluster: Option<crate::cluster::config::ClusterConfig>,
}

/// The web console.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve it (default true); the APIs are served either way.
    pub enabled: bool,
    /// How long a sign-in lasts (default `12h`).
    pub session_ttl: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enabled: true,
            session_ttl: "12h".into(),
        }
    }
}

impl ConsoleConfig {
    /// `session_ttl` in ms.
    pub fn session_ttl_ms(&self) -> i64 {
        foresight_rules::rulefile::parse_duration(&self.session_ttl).map_or(12 * 3_600_000, |d| {
            i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
        })
    }
}

/// How long each kind of data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retentions {
    /// Accepted batches in the store.
    pub batch: std::time::Duration,
    /// Series in memory for the query API.
    pub query: std::time::Duration,
    /// Alert history and finished notifications in the store.
    pub history: std::time::Duration,
}

/// The listener's certificate.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    pub key_file: Option<PathBuf>,
}

/// Bounds on what one request may cost.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body as sent, in bytes (default 8 MiB).
    pub max_body_bytes: usize,
    /// Largest body after decompression, in bytes (default 64 MiB).
    pub max_decompressed_bytes: usize,
    /// Largest ratio of decompressed to sent size for bodies that inflate past
    /// `max_body_bytes` (default 200): a small body inflating far beyond what telemetry
    /// compresses to is a decompression bomb.
    pub max_decompression_ratio: usize,
    /// Most series in one batch (default 200000).
    pub max_series_per_batch: usize,
    /// Most labels on one series, its name not counted (default 64).
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes (default 256).
    pub max_label_name_bytes: usize,
    /// Longest label value or series name, in bytes (default 2048).
    pub max_label_value_bytes: usize,
    /// Ingest requests per second each tenant may make on average (a token bucket;
    /// default 50); beyond it, 429 with `Retry-After`. 0 turns the limit off.
    pub tenant_requests_per_second: u32,
    /// Requests a tenant may make at once above the average rate (default 200).
    pub tenant_burst: u32,
    /// Accepted batches waiting for the evaluator before ingest answers 503 (default 1024).
    pub queue_capacity: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let d = foresight_decode::DecodeLimits::default();
        Limits {
            max_body_bytes: d.max_body_bytes,
            max_decompressed_bytes: d.max_decompressed_bytes,
            max_decompression_ratio: d.max_decompression_ratio,
            max_series_per_batch: d.max_series_per_batch,
            max_labels_per_series: d.max_labels_per_series,
            max_label_name_bytes: d.max_label_name_bytes,
            max_label_value_bytes: d.max_label_value_bytes,
            tenant_requests_per_second: 50,
            tenant_burst: 200,
            queue_capacity: 1024,
        }
    }
}

impl Limits {
    /// The bounds the decoders apply.
    pub fn decode(&self) -> foresight_decode::DecodeLimits {
        foresight_decode::DecodeLimits {
            max_body_bytes: self.max_body_bytes,
            max_decompressed_bytes: self.max_decompressed_bytes,
            max_decompression_ratio: self.max_decompression_ratio,
            max_series_per_batch: self.max_series_per_batch,
            max_labels_per_series: self.max_labels_per_series,
            max_label_name_bytes: self.max_label_name_bytes,
            max_label_value_bytes: self.max_label_value_bytes,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: "0.0.0.0:8443".into(),
            data_dir: PathBuf::from("foresight-data"),
            tls: TlsConfig::default(),
            evaluation_interval: "15s".into(),
            rule_files: Vec::new(),
            builtin_rules: true,
            pack: foresight_rules::packs::PackOptions::default(),
            external_labels: BTreeMap::new(),
            external_url: String::new(),
            webhooks: Vec::new(),
            alertmanager_config: None,
            allow_private_webhook_urls: false,
            limits: Limits::default(),
            batch_retention: "7d".into(),
            query_retention: "1h".into(),
            history_retention: "90d".into(),
            shutdown_timeout: "15s".into(),
            console: ConsoleConfig::default(),
            cluster: None,
        }
    }
}

impl ServeConfig {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem with the file name.
    pub fn load(path: &Path) -> Result<Self, Error> {
        Self::load_with_env(Some(path), std::iter::empty())
    }

    /// Reads the config file (defaults without one), applies environment overrides, and
    /// validates. An override is `FORESIGHT_` and the field's path in capitals, with
    /// `__` between levels: `FORESIGHT_LISTEN=0.0.0.0:9443`,
    /// `FORESIGHT_LIMITS__TENANT_REQUESTS_PER_SECOND=100`; its value is read as YAML, so
    /// numbers, booleans and lists (`[a.yml, b.yml]`) work. `FORESIGHT_CONFIG` and
    /// `FORESIGHT_LOG_FORMAT` are not overrides.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem, naming the file or the variable.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, Error> {
        let name = path.map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string());
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| Error::Config(vec![format!("{name}: {e}")]))?,
            None => "{}".to_string(),
        };
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("FORESIGHT_") && !NOT_OVERRIDES.contains(&k.as_str()))
            .collect();
        let cfg: ServeConfig = if overrides.is_empty() {
            serde_saphyr::from_str(&text)
                .map_err(|e| Error::Config(vec![format!("{name}: {e}")]))?
        } else {
            let mut tree: serde_json::Value = serde_saphyr::from_str(&text)
                .map_err(|e| Error::Config(vec![format!("{name}: {e}")]))?;
            if tree.is_null() {
                tree = serde_json::json!({});
            }
            if !tree.is_object() {
                return Err(Error::Config(vec![format!(
                    "{name}: the configuration must be a mapping of fields"
                )]));
            }
            let mut names = Vec::new();
            for (k, v) in &overrides {
                let keys: Vec<String> = k["FORESIGHT_".len()..]
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect();
                let value = serde_saphyr::from_str::<serde_json::Value>(v)
                    .ok()
                    .filter(|v| !v.is_null())
                    .unwrap_or_else(|| serde_json::Value::String(v.clone()));
                let mut at = &mut tree;
                for key in &keys[..keys.len() - 1] {
                    if !at.get(key).is_some_and(serde_json::Value::is_object) {
                        at[key.as_str()] = serde_json::json!({});
                    }
                    at = &mut at[key.as_str()];
                }
                at[keys[keys.len() - 1].as_str()] = value;
                names.push(k.as_str());
            }
            serde_json::from_value(tree).map_err(|e| {
                Error::Config(vec![format!(
                    "{name} with environment overrides ({}): {e}",
                    names.join(", ")
                )])
            })?
        };
        cfg.validate()
            .map_err(|p| Error::Config(p.into_iter().map(|p| format!("{name}: {p}")).collect()))?;
        Ok(cfg)
    }

    /// The evaluation interval.
    pub fn evaluation_interval(&self) -> std::time::Duration {
        foresight_rules::rulefile::parse_duration(&self.evaluation_interval)
            .unwrap_or(std::time::Duration::from_secs(15))
    }

    /// The retention settings.
    pub fn retentions(&self) -> Retentions {
        let d = |s: &str, default: u64| {
            foresight_rules::rulefile::parse_duration(s)
                .unwrap_or(std::time::Duration::from_secs(default))
        };
        Retentions {
            batch: d(&self.batch_retention, 7 * 86_400),
            query: d(&self.query_retention, 3600),
            history: d(&self.history_retention, 90 * 86_400),
        }
    }

    /// `shutdown_timeout`.
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        foresight_rules::rulefile::parse_duration(&self.shutdown_timeout)
            .unwrap_or(std::time::Duration::from_secs(15))
    }

    /// The notification configuration: `alertmanager_config`, or the `webhooks`
    /// shorthand (every alert its own group, notified at the first evaluation that sees
    /// it change).
    ///
    /// # Errors
    /// The problem, with the file name.
    pub fn notify_config(&self) -> Result<NotifyConfig, String> {
        if let Some(path) = &self.alertmanager_config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("alertmanager_config: {}: {e}", path.display()))?;
            return NotifyConfig::from_yaml(&text)
                .map_err(|e| format!("alertmanager_config: {}: {e}", path.display()));
        }
        let receiver = Receiver {
            name: "webhooks".into(),
            webhook_configs: self
                .webhooks
                .iter()
                .map(|w| AmWebhook {
                    send_resolved: w.send_resolved,
                    url: Some(w.url.clone()),
                    timeout: Some(std::time::Duration::from_secs(w.timeout_secs)),
                    secret: w.secret.clone(),
                    ..AmWebhook::default()
                })
                .collect(),
            ..Receiver::default()
        };
        let interval = self.evaluation_interval();
        NotifyConfig::from_raw(RawConfig {
            route: Some(RawRoute {
                receiver: Some("webhooks".into()),
                group_by: Some(vec!["...".into()]),
                group_wait: Some(std::time::Duration::ZERO),
                group_interval: Some(interval),
                repeat_interval: Some(std::time::Duration::from_secs(4 * 3600)),
                ..RawRoute::default()
            }),
            receivers: vec![receiver],
            ..RawConfig::default()
        })
        .map_err(|e| e.to_string())
    }

    /// Every problem with the configuration.
    ///
    /// # Errors
    /// The list of problems, when there is at least one.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!("listen: {:?} is not an address:port", self.listen));
        }
        match foresight_rules::rulefile::parse_duration(&self.evaluation_interval) {
            Ok(d) if d.is_zero() => p.push("evaluation_interval: must be above zero".into()),
            Ok(_) => {}
            Err(e) => p.push(format!("evaluation_interval: {e}")),
        }
        for (field, v) in [
            ("batch_retention", &self.batch_retention),
            ("query_retention", &self.query_retention),
            ("history_retention", &self.history_retention),
            ("shutdown_timeout", &self.shutdown_timeout),
            ("console.session_ttl", &self.console.session_ttl),
        ] {
            if let Err(e) = foresight_rules::rulefile::parse_duration(v) {
                p.push(format!("{field}: {e}"));
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            p.push("tls: set both cert_file and key_file, or neither".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            if !names.insert(&w.name) {
                p.push(format!("webhooks[{i}].name: {:?} is used twice", w.name));
            }
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                p.push(format!(
                    "webhooks[{i}].url: {:?} must be an http(s) URL",
                    w.url
                ));
            }
        }
        if let Err(e) = self.notify_config() {
            p.push(e);
        }
        if self.limits.tenant_requests_per_second > 0 && self.limits.tenant_burst == 0 {
            p.push("limits.tenant_burst: must be at least 1".into());
        }
        if self.limits.max_decompression_ratio == 0 {
            p.push("limits.max_decompression_ratio: must be at least 1".into());
        }
        if self.limits.queue_capacity == 0 {
            p.push("limits.queue_capacity: must be at least 1".into());
        }
        if let Some(cluster) = &self.cluster {
            p.extend(cluster.problems());
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        let cfg: ServeConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(cfg, ServeConfig::default());
        assert_eq!(
            cfg.evaluation_interval(),
            std::time::Duration::from_secs(15)
        );
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn environment_variables_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foresight.yml");
        std::fs::write(
            &path,
            "listen: 127.0.0.1:1\nlimits:\n  max_body_bytes: 10\n",
        )
        .unwrap();
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cfg = ServeConfig::load_with_env(
            Some(&path),
            env(&[
                ("FORESIGHT_LISTEN", "127.0.0.1:2"),
                ("FORESIGHT_LIMITS__TENANT_BURST", "7"),
                ("FORESIGHT_BUILTIN_RULES", "false"),
                ("FORESIGHT_RULE_FILES", "[a.yml, b.yml]"),
                ("FORESIGHT_CONFIG", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:2");
        assert_eq!(cfg.limits.max_body_bytes, 10, "the file's value stays");
        assert_eq!(cfg.limits.tenant_burst, 7);
        assert!(!cfg.builtin_rules);
        assert_eq!(
            cfg.rule_files,
            [PathBuf::from("a.yml"), PathBuf::from("b.yml")]
        );
        let err = ServeConfig::load_with_env(Some(&path), env(&[("FORESIGHT_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("FORESIGHT_LISTN") && err.contains("listn"),
            "{err}"
        );
        let err =
            ServeConfig::load_with_env(None, env(&[("FORESIGHT_EVALUATION_INTERVAL", "soon")]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("evaluation_interval"), "{err}");
        // A file that is not a mapping is an error, not a panic, when overrides apply.
        std::fs::write(&path, "- a list\n").unwrap();
        let err = ServeConfig::load_with_env(Some(&path), env(&[("FORESIGHT_LISTEN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mapping"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let cfg: ServeConfig = serde_saphyr::from_str(
            "listen: nowhere\nevaluation_interval: soon\nwebhooks:\n- {name: a, url: ftp://x}\n- {name: a, url: http://y}\n",
        )
        .unwrap();
        assert_eq!(cfg.validate().unwrap_err().len(), 4);
        assert!(
            serde_saphyr::from_str::<ServeConfig>("listn: x")
                .unwrap_err()
                .to_string()
                .contains("listn")
        );
    }
}
