//! The `cluster:` section of `foresight serve`: with it, the service is one node of many
//! on Kafka (telemetry in motion) and PostgreSQL (shared state); without it, one process
//! on SQLite as before.

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a node does. Every role may run on every node; `all` is each of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts telemetry over HTTPS and produces it to the telemetry topic.
    Ingest,
    /// Evaluates the rules for the telemetry partitions the consumer group gives it.
    Evaluator,
    /// Delivers the outbox (claimed, so that no two nodes send one entry).
    Notifier,
    /// Answers the API and the console.
    Api,
    /// Every role above.
    All,
}

impl Role {
    /// The role's name as configured.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Evaluator => "evaluator",
            Role::Notifier => "notifier",
            Role::Api => "api",
            Role::All => "all",
        }
    }
}

/// Cluster mode.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name, unique in the service (default: the host name and the listen
    /// port).
    pub node_id: String,
    /// The roles this node runs (default `[all]`).
    pub roles: Vec<Role>,
    /// The Kafka cluster that carries the telemetry.
    pub kafka: KafkaConfig,
    /// The topics, created at start when missing.
    pub topics: TopicsConfig,
    /// The PostgreSQL database of the shared state.
    pub postgres: PostgresConfig,
    /// How long a notifier node holds an outbox entry it is sending (default `60s`):
    /// longer than the longest receiver timeout, since a node that dies mid-send leaves
    /// the entry to another only after it.
    pub delivery_lease: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            roles: vec![Role::All],
            kafka: KafkaConfig::default(),
            topics: TopicsConfig::default(),
            postgres: PostgresConfig::default(),
            delivery_lease: "60s".into(),
        }
    }
}

/// The Kafka client settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port]`; required.
    pub bootstrap_servers: String,
    /// librdkafka properties for every client (`security.protocol`, `sasl.*`,
    /// `ssl.*`, ...). Those that give Foresight's guarantees (`acks`,
    /// `enable.idempotence`, `group.id`, `enable.auto.commit`, `isolation.level`) are
    /// Foresight's and refused here.
    pub properties: BTreeMap<String, String>,
}

/// Properties cluster mode sets itself, because its guarantees rest on them.
pub const OWN_PROPERTIES: &[&str] = &[
    "acks",
    "enable.idempotence",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "isolation.level",
    "auto.offset.reset",
    "bootstrap.servers",
];

/// The topics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Telemetry, keyed by tenant and cluster (default `foresight.telemetry.v1`).
    pub telemetry: String,
    /// Its partitions: the most evaluators that can share the work (default 12).
    /// Fixed once the topic exists: each cluster's data must stay in one partition.
    pub telemetry_partitions: i32,
    /// Replication factor of the topics Foresight creates (default 3).
    pub replication_factor: i32,
    /// How long the telemetry topic keeps records (default `1d`); at least the longest
    /// rule range, which an evaluator replays when it takes a partition over.
    pub telemetry_retention: String,
    /// The consumer group of the evaluators (default `foresight-evaluators`).
    pub evaluator_group: String,
    /// Alerts from the evaluators to the notifiers, keyed by tenant (default
    /// `foresight.alerts.v1`).
    pub alerts: String,
    /// Its partitions: the most notifier nodes that share the grouping (default 6).
    pub alerts_partitions: i32,
    /// The consumer group of the notifier nodes (default `foresight-notifiers`).
    pub notifier_group: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            telemetry: "foresight.telemetry.v1".into(),
            telemetry_partitions: 12,
            replication_factor: 3,
            telemetry_retention: "1d".into(),
            evaluator_group: "foresight-evaluators".into(),
            alerts: "foresight.alerts.v1".into(),
            alerts_partitions: 6,
            notifier_group: "foresight-notifiers".into(),
        }
    }
}

/// The PostgreSQL connection.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A libpq URL (`postgresql://user:password@host:5432/foresight`); required.
    pub url: String,
    /// Connections in the node's pool (default 8).
    pub pool_size: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: String::new(),
            pool_size: 8,
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.contains(&Role::All) || self.roles.contains(&role)
    }

    /// The roles this node runs, `all` spelled out.
    pub fn role_names(&self) -> Vec<&'static str> {
        [Role::Ingest, Role::Evaluator, Role::Notifier, Role::Api]
            .into_iter()
            .filter(|r| self.runs(*r))
            .map(Role::name)
            .collect()
    }

    /// The node id, or the host name and `listen`'s port when not set.
    pub fn node_id(&self, listen: &str) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "node".into());
        let port = listen.rsplit(':').next().unwrap_or("0");
        format!("{host}:{port}")
    }

    /// `delivery_lease` in ms.
    pub fn delivery_lease_ms(&self) -> i64 {
        foresight_rules::rulefile::parse_duration(&self.delivery_lease)
            .map_or(60_000, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// `telemetry_retention` in ms.
    pub fn telemetry_retention_ms(&self) -> i64 {
        foresight_rules::rulefile::parse_duration(&self.topics.telemetry_retention)
            .map_or(86_400_000, |d| {
                i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            })
    }

    /// Every problem, each naming its field under `cluster.`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.roles.is_empty() {
            p.push(
                "cluster.roles: name at least one of ingest, evaluator, notifier, api, all".into(),
            );
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            p.push("cluster.kafka.bootstrap_servers: required".into());
        }
        for k in self.kafka.properties.keys() {
            if OWN_PROPERTIES.contains(&k.as_str()) {
                p.push(format!(
                    "cluster.kafka.properties.{k}: set by Foresight (its delivery guarantees rest on it)"
                ));
            }
        }
        for (field, v) in [
            ("cluster.topics.telemetry", &self.topics.telemetry),
            (
                "cluster.topics.evaluator_group",
                &self.topics.evaluator_group,
            ),
            ("cluster.topics.alerts", &self.topics.alerts),
            ("cluster.topics.notifier_group", &self.topics.notifier_group),
        ] {
            if v.is_empty()
                || v.len() > 249
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                p.push(format!(
                    "{field}: {v:?} is not a Kafka name (letters, digits, '.', '_', '-')"
                ));
            }
        }
        if self.topics.telemetry_partitions < 1 {
            p.push("cluster.topics.telemetry_partitions: must be at least 1".into());
        }
        if self.topics.alerts_partitions < 1 {
            p.push("cluster.topics.alerts_partitions: must be at least 1".into());
        }
        if self.topics.alerts == self.topics.telemetry {
            p.push("cluster.topics.alerts: must differ from cluster.topics.telemetry".into());
        }
        if self.topics.notifier_group == self.topics.evaluator_group {
            p.push(
                "cluster.topics.notifier_group: must differ from cluster.topics.evaluator_group"
                    .into(),
            );
        }
        if self.topics.replication_factor < 1 {
            p.push("cluster.topics.replication_factor: must be at least 1".into());
        }
        if let Err(e) = foresight_rules::rulefile::parse_duration(&self.topics.telemetry_retention)
        {
            p.push(format!("cluster.topics.telemetry_retention: {e}"));
        }
        match foresight_rules::rulefile::parse_duration(&self.delivery_lease) {
            Ok(d) if d.is_zero() => p.push("cluster.delivery_lease: must be above zero".into()),
            Ok(_) => {}
            Err(e) => p.push(format!("cluster.delivery_lease: {e}")),
        }
        if self.postgres.url.is_empty() {
            p.push("cluster.postgres.url: required".into());
        } else if self.postgres.url.parse::<postgres::Config>().is_err() {
            p.push("cluster.postgres.url: not a PostgreSQL URL".into());
        }
        if self.postgres.pool_size == 0 {
            p.push("cluster.postgres.pool_size: must be at least 1".into());
        }
        p
    }
}

/// The partition of the telemetry topic that holds `tenant`'s `cluster`: the same on
/// every node and every release (the first 4 bytes of a SHA-256), so that an evaluator
/// knows which alert states belong to the partitions it owns.
pub fn partition_of(tenant: &str, cluster: &str, partitions: i32) -> i32 {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(tenant.as_bytes());
    h.update([0]);
    h.update(cluster.as_bytes());
    let d = h.finalize();
    let n = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    (n % partitions.max(1) as u32) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_problem() {
        let c: ClusterConfig =
            serde_saphyr::from_str("kafka: {bootstrap_servers: '127.0.0.1:9092'}\npostgres: {url: 'postgresql://u@127.0.0.1/f'}\n")
                .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.role_names(), ["ingest", "evaluator", "notifier", "api"]);
        assert_eq!(c.topics.telemetry, "foresight.telemetry.v1");
        assert_eq!(c.telemetry_retention_ms(), 86_400_000);
        let c: ClusterConfig = serde_saphyr::from_str(
            "roles: []\nkafka: {properties: {acks: '1'}}\ntopics: {telemetry: 'bad topic', telemetry_partitions: 0}\npostgres: {pool_size: 0}\n",
        )
        .unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 7, "{p:#?}");
        assert!(
            p.iter()
                .any(|p| p.contains("cluster.kafka.properties.acks"))
        );
        let err = serde_saphyr::from_str::<ClusterConfig>("roles: [cook]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cook"), "{err}");
        let c: ClusterConfig = serde_saphyr::from_str("roles: [evaluator, notifier]\n").unwrap();
        assert!(c.runs(Role::Evaluator) && !c.runs(Role::Ingest));
    }

    #[test]
    fn a_cluster_stays_in_one_partition() {
        let p = partition_of("acme", "prod-eu", 12);
        assert!((0..12).contains(&p));
        assert_eq!(partition_of("acme", "prod-eu", 12), p);
        // Tenants do not share a partition layout by name alone.
        let spread: std::collections::HashSet<i32> = (0..200)
            .map(|i| partition_of("acme", &format!("c{i}"), 12))
            .collect();
        assert_eq!(spread.len(), 12);
    }
}
