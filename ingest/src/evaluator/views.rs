//! The read models the evaluator publishes and the API reads: each tenant's alerts and
//! clusters as last evaluated. Written by the evaluator only; the API takes read locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use foresight_notifier::group::GroupAlert;
use foresight_proto::v1::TelemetryBatch;

/// An alert as the pipeline last saw it, for the API.
#[derive(Debug, Clone)]
pub struct AlertView {
    /// The alert.
    pub alert: GroupAlert,
    /// Receivers its routes lead to.
    pub receivers: Vec<String>,
    /// Whether a firing alert inhibits it.
    pub inhibited: bool,
    /// The aggregation groups it is in, as the route tree formed them.
    pub groups: Vec<AlertGroupRef>,
}

/// One aggregation group an alert is in: the receiver of its route and the labels it
/// was grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlertGroupRef {
    /// The route's receiver.
    pub receiver: String,
    /// The group's labels (the route's `group_by`).
    pub labels: BTreeMap<String, String>,
}

/// Each tenant's alerts, published by the pipeline after each flush.
pub type AlertsView = Arc<RwLock<HashMap<String, Vec<AlertView>>>>;

/// What the service knows of one cluster, from its agents' batches.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterInfo {
    /// The `cluster` label of its series.
    pub name: String,
    /// The id the cluster reports.
    pub cluster_id: String,
    /// Last batch received, Unix ms.
    pub last_seen_ms: i64,
    /// Last snapshot, Unix ms (0 before the first).
    pub snapshot_at_ms: i64,
    /// Brokers in the last snapshot.
    pub brokers: Vec<BrokerInfo>,
    /// Controller id, -1 when unknown.
    pub controller_id: i32,
    /// Topics in the last snapshot.
    pub topics: usize,
    /// Partitions in the last snapshot.
    pub partitions: usize,
    /// Partitions without a live leader in the last snapshot.
    pub offline_partitions: usize,
    /// Partitions with fewer in-sync replicas than replicas in the last snapshot.
    pub under_replicated_partitions: usize,
    /// Versions of the agents reporting on it.
    pub agent_versions: std::collections::BTreeSet<String>,
    /// Each broker's release line as its ApiVersions tells it (`4.4`).
    pub versions: BTreeMap<i32, String>,
    /// Finalized feature levels (`metadata.version`, `kraft.version`, …).
    pub features: BTreeMap<String, i32>,
    /// Each broker's number of API keys and the range of its highest versions, as a
    /// compact fingerprint of what it speaks.
    pub api_keys: BTreeMap<i32, usize>,
    /// Each broker's configs that are not Kafka's defaults (and the watched ones).
    pub broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// Risky broker configs.
    pub risky_configs: Vec<foresight_proto::facts::Risk>,
    /// Configs whose values differ between brokers: value → brokers.
    pub config_drift: BTreeMap<String, BTreeMap<String, Vec<i32>>>,
    /// Each broker's log dirs (DescribeLogDirs).
    pub log_dirs: Vec<LogDirInfo>,
    /// The largest topics on disk (all replicas), largest first, at most
    /// [`TOP_TOPICS`].
    pub largest_topics: Vec<(String, i64)>,
    /// The last snapshot itself, for the console's topics, groups, quorum and
    /// transactions.
    #[serde(skip)]
    pub snapshot: Option<Arc<foresight_proto::v1::ClusterSnapshot>>,
}

/// How many topics the cluster facts list by size.
pub const TOP_TOPICS: usize = 20;

/// A broker log dir as DescribeLogDirs reports it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LogDirInfo {
    /// Broker id.
    pub broker: i32,
    /// The dir.
    pub path: String,
    /// Size of its file system, -1 when the broker does not say.
    pub total_bytes: i64,
    /// Bytes the broker can still use, -1 when it does not say.
    pub usable_bytes: i64,
    /// Bytes its replicas take.
    pub replica_bytes: i64,
    /// Replicas in it.
    pub replicas: usize,
    /// The Kafka error (KAFKA_STORAGE_ERROR for an offline dir), empty when none.
    pub error: String,
}

impl ClusterInfo {
    /// The facts notifications carry about the cluster.
    pub fn facts(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::from([
            ("brokers".to_string(), self.brokers.len().to_string()),
            (
                "controller".to_string(),
                if self.controller_id >= 0 {
                    self.controller_id.to_string()
                } else {
                    "none".to_string()
                },
            ),
            ("topics".to_string(), self.topics.to_string()),
            ("partitions".to_string(), self.partitions.to_string()),
            (
                "offline partitions".to_string(),
                self.offline_partitions.to_string(),
            ),
        ]);
        let releases: std::collections::BTreeSet<&str> =
            self.versions.values().map(String::as_str).collect();
        if !releases.is_empty() {
            let v: Vec<&str> = releases.into_iter().collect();
            out.insert("kafka".to_string(), v.join(", "));
        }
        if let Some(level) = self.features.get("metadata.version") {
            out.insert(
                "metadata.version".to_string(),
                match foresight_proto::facts::metadata_release(*level) {
                    Some(r) => format!("{level} ({r})"),
                    None => level.to_string(),
                },
            );
        }
        if !self.risky_configs.is_empty() {
            let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in &self.risky_configs {
                by.entry(format!("{}={}", r.config, r.value))
                    .or_default()
                    .push(r.broker.to_string());
            }
            let v: Vec<String> = by
                .into_iter()
                .map(|(k, b)| format!("{k} on {}", b.join(",")))
                .collect();
            out.insert("risky configs".to_string(), v.join("; "));
        }
        if !self.config_drift.is_empty() {
            let v: Vec<&str> = self.config_drift.keys().map(String::as_str).collect();
            out.insert("config drift".to_string(), v.join(", "));
        }
        out
    }
}

/// The batch's durability events (the agent's audit findings), for the ledger.
pub(crate) fn durability_events(batch: &TelemetryBatch) -> Vec<foresight_proto::v1::Event> {
    batch
        .events
        .iter()
        .filter(|e| e.kind() == foresight_proto::v1::EventKind::Durability)
        .cloned()
        .collect()
}

/// The `cluster` label of a batch: its cluster name, else its cluster id, else its
/// snapshot's.
pub(crate) fn cluster_of(batch: &TelemetryBatch) -> Option<String> {
    let r = batch.resource.as_ref();
    [
        r.map(|r| r.cluster_name.as_str()),
        r.map(|r| r.cluster_id.as_str()),
        batch.snapshot.as_ref().map(|s| s.cluster_id.as_str()),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .map(str::to_string)
}

/// Kafka's name for the log dir errors a broker reports.
pub(crate) fn kafka_error_name(code: i32) -> String {
    match code {
        56 => "KAFKA_STORAGE_ERROR".to_string(),
        57 => "LOG_DIR_NOT_FOUND".to_string(),
        c => format!("error code {c}"),
    }
}

/// A broker as the last snapshot shows it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BrokerInfo {
    /// Broker id.
    pub id: i32,
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
    /// Rack, when set.
    pub rack: String,
}

/// Each tenant's clusters by name, published for the API.
pub type ClustersView = Arc<std::sync::RwLock<HashMap<String, BTreeMap<String, ClusterInfo>>>>;
