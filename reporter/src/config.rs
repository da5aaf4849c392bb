//! The agent's configuration: one YAML file, defaults in one place, every problem
//! reported at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::Error;

/// Top-level agent configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The Kafka cluster to observe.
    pub kafka: KafkaConfig,
    /// Where to ship telemetry.
    pub ingest: IngestConfig,
    /// Seconds between collections (default 30).
    pub interval_secs: u64,
    /// Labels added to every series, for example `env: prod`.
    pub labels: BTreeMap<String, String>,
    /// Host name reported in the batch (default: the machine's host name).
    pub host: Option<String>,
    /// Broker id this agent runs beside, if any.
    pub broker_id: Option<i32>,
    /// Where batches wait while the ingest is unreachable.
    pub spool: SpoolConfig,
    /// The broker's `log.dirs` on this host: free and total bytes and readability are
    /// reported as `kafka_log_dir_*` series (with `broker_id` as the `broker` label).
    pub log_dirs: Vec<PathBuf>,
    /// jmx_exporter endpoints to scrape (for example `http://localhost:7071/metrics`
    /// on each broker host), keyed by broker id: their series get `cluster`,
    /// `broker` and `role="broker"` labels.
    pub jmx_exporter: BTreeMap<i32, String>,
    /// jmx_exporter endpoints of KRaft controller processes, keyed by node id: their
    /// series get `cluster`, `controller` and `role="controller"` labels. In KRaft only
    /// controllers have `ActiveControllerCount`, `OfflinePartitionsCount` and
    /// `UncleanLeaderElectionsPerSec`.
    pub controller_jmx_exporter: BTreeMap<i32, String>,
    /// Jolokia agents to read broker MBeans from, for sites without the jmx_exporter.
    pub jolokia: JolokiaConfig,
    /// What may leave the host.
    pub privacy: PrivacyConfig,
}

/// Data minimization. Record keys, values and headers are never read at all.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacyConfig {
    /// Regular expressions (whole name) of metric names to send; empty sends all.
    pub include: Vec<String>,
    /// Regular expressions of metric names never to send; wins over `include`.
    pub exclude: Vec<String>,
    /// Replace topic and consumer group names by `h:` and an HMAC-SHA256 of the name.
    pub hash_names: bool,
    /// Environment variable holding the hashing key (default `FORESIGHT_HASH_KEY`).
    pub hash_key_env: String,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            include: Vec::new(),
            exclude: Vec::new(),
            hash_names: false,
            hash_key_env: "FORESIGHT_HASH_KEY".into(),
        }
    }
}

/// Jolokia endpoints and the MBeans to read from each.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct JolokiaConfig {
    /// Jolokia's base URL per broker id, for example `http://broker1:8778/jolokia/`.
    pub endpoints: BTreeMap<i32, String>,
    /// Jolokia's base URL per KRaft controller node id.
    pub controller_endpoints: BTreeMap<i32, String>,
    /// MBean names or patterns (`request=*`) to read; empty reads the built-in list
    /// (`collector::jolokia::DEFAULT_MBEANS`, what the rule pack uses).
    pub mbeans: Vec<String>,
}

/// The disk spool.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool; without it batches wait in memory (at most 1000) and a
    /// restart loses them. The systemd unit in `examples/` sets
    /// `/var/lib/foresight-agent/spool`.
    pub dir: Option<PathBuf>,
    /// Bound on the spool's size in bytes; the oldest batches go first (default 256 MiB).
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: None,
            max_bytes: 256 << 20,
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            interval_secs: 30,
            labels: BTreeMap::new(),
            host: None,
            broker_id: None,
            spool: SpoolConfig::default(),
            log_dirs: Vec::new(),
            jmx_exporter: BTreeMap::new(),
            controller_jmx_exporter: BTreeMap::new(),
            jolokia: JolokiaConfig::default(),
            privacy: PrivacyConfig::default(),
        }
    }
}

/// How to reach the Kafka cluster.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`, for example `broker1:9092,broker2:9092`.
    pub bootstrap_servers: String,
    /// Further librdkafka client properties (`security.protocol`, `sasl.*`, `ssl.*`).
    pub properties: BTreeMap<String, String>,
    /// The `cluster` label on every series (default: the cluster id Kafka reports).
    pub cluster_name: Option<String>,
    /// Timeout of one Kafka request, in milliseconds (default 10000).
    pub request_timeout_ms: u64,
    /// Consumer groups whose committed offsets are read, at most (default 500).
    pub max_consumer_groups: usize,
    /// Whether the agent also asks the admin RPCs librdkafka lacks, over its second
    /// client with the same settings: DescribeQuorum (the KRaft quorum), DescribeCluster
    /// (racks), broker DescribeConfigs (`transaction.max.timeout.ms`), and for
    /// partitions whose last stable offset lags, DescribeProducers, ListTransactions and
    /// DescribeTransactions (open and hanging transactions). Default true.
    pub admin_requests: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: String::new(),
            properties: BTreeMap::new(),
            cluster_name: None,
            request_timeout_ms: 10_000,
            max_consumer_groups: 500,
            admin_requests: true,
        }
    }
}

/// How to reach the ingest service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Base URL, for example `https://foresight.example:8443`.
    pub url: String,
    /// The API key inline (prefer `api_key_file` or `api_key_env`).
    pub api_key: Option<String>,
    /// A file whose first line is the API key.
    pub api_key_file: Option<PathBuf>,
    /// An environment variable holding the API key (default `FORESIGHT_API_KEY`).
    pub api_key_env: String,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server certificate (hex, colons allowed); trusts exactly it.
    pub pinned_sha256: Option<String>,
    /// Timeout of one upload, in seconds (default 30).
    pub timeout_secs: u64,
    /// Attempts per batch before it waits for the next cycle (default 5).
    pub max_attempts: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            url: String::new(),
            api_key: None,
            api_key_file: None,
            api_key_env: "FORESIGHT_API_KEY".into(),
            ca_file: None,
            pinned_sha256: None,
            timeout_secs: 30,
            max_attempts: 5,
        }
    }
}

impl AgentConfig {
    /// Reads and validates a config file.
    ///
    /// # Errors
    /// [`Error::Config`] listing every problem, with the file name.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
        let cfg: AgentConfig = serde_saphyr::from_str(&text)
            .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
        cfg.validate().map_err(|p| {
            Error::Config(
                p.into_iter()
                    .map(|p| format!("{}: {p}", path.display()))
                    .collect(),
            )
        })?;
        Ok(cfg)
    }

    /// Every problem with the configuration, each saying where.
    ///
    /// # Errors
    /// The list of problems, when there is at least one.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.kafka.bootstrap_servers.trim().is_empty() {
            p.push("kafka.bootstrap_servers: must list at least one broker".to_string());
        }
        if self.interval_secs == 0 {
            p.push("interval_secs: must be at least 1".to_string());
        }
        if !self.ingest.url.is_empty() && !self.ingest.url.starts_with("https://") {
            p.push(format!(
                "ingest.url: {:?} must start with https://",
                self.ingest.url
            ));
        }
        if let Some(pin) = &self.ingest.pinned_sha256
            && crate::tls::parse_fingerprint(pin).is_none()
        {
            p.push("ingest.pinned_sha256: must be 64 hex digits (colons allowed)".to_string());
        }
        let endpoints = [
            ("jmx_exporter", &self.jmx_exporter),
            ("controller_jmx_exporter", &self.controller_jmx_exporter),
            ("jolokia.endpoints", &self.jolokia.endpoints),
            (
                "jolokia.controller_endpoints",
                &self.jolokia.controller_endpoints,
            ),
        ];
        for (field, map) in endpoints {
            for (node, url) in map {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.push(format!("{field}.{node}: {url:?} must be an http(s) URL"));
                }
            }
        }
        for m in &self.jolokia.mbeans {
            if !m.contains(':') || !m.contains("type=") {
                p.push(format!(
                    "jolokia.mbeans: {m:?} is not an MBean name like kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions"
                ));
            }
        }
        if let Err(problems) = crate::privacy::Privacy::new(&self.privacy) {
            p.extend(problems);
        }
        if self.spool.max_bytes < 1 << 20 {
            p.push("spool.max_bytes: must be at least 1048576 (1 MiB)".to_string());
        }
        if self.ingest.max_attempts == 0 {
            p.push("ingest.max_attempts: must be at least 1".to_string());
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    /// The API key from, in order: `api_key`, `api_key_file`, the `api_key_env` variable.
    ///
    /// # Errors
    /// [`Error::Config`] when none is set or the file is unreadable.
    pub fn api_key(&self) -> Result<String, Error> {
        if let Some(k) = &self.ingest.api_key {
            return Ok(k.clone());
        }
        if let Some(f) = &self.ingest.api_key_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                Error::Config(vec![format!("ingest.api_key_file {}: {e}", f.display())])
            })?;
            return Ok(text.lines().next().unwrap_or_default().trim().to_string());
        }
        std::env::var(&self.ingest.api_key_env).map_err(|_| {
            Error::Config(vec![format!(
                "no API key: set ingest.api_key_file or the {} environment variable",
                self.ingest.api_key_env
            )])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_is_not_set() {
        let cfg: AgentConfig =
            serde_saphyr::from_str("kafka:\n  bootstrap_servers: b:9092\n").unwrap();
        assert_eq!(cfg.interval_secs, 30);
        assert_eq!(cfg.ingest.api_key_env, "FORESIGHT_API_KEY");
        assert_eq!(cfg.kafka.request_timeout_ms, 10_000);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn unknown_fields_and_every_problem_are_reported() {
        let err = serde_saphyr::from_str::<AgentConfig>("kafka:\n  bootstrap: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bootstrap"), "{err}");
        let cfg: AgentConfig = serde_saphyr::from_str(
            "interval_secs: 0\ningest:\n  url: http://x\n  pinned_sha256: zz\n",
        )
        .unwrap();
        let problems = cfg.validate().unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
