//! What a support case asks first, read from a snapshot's [`BrokerFacts`]: which release
//! each broker runs, which of its configs are risky, and where brokers disagree.
//!
//! The agent ships facts; the ingest judges them here, so that the series, the clusters
//! API, notifications and `foresight clusters context` say the same thing.

use std::collections::BTreeMap;

use crate::v1::BrokerFacts;

/// `metadata.version` feature levels and the Kafka release that introduced each (from
/// Kafka's `MetadataVersion`): level 7 is 3.3-IV3, the oldest KRaft-production level.
const METADATA_RELEASES: &[(i32, &str)] = &[
    (7, "3.3"),
    (8, "3.4"),
    (9, "3.5"),
    (12, "3.6"),
    (15, "3.7"),
    (20, "3.8"),
    (21, "3.9"),
    (22, "4.0"),
    (26, "4.1"),
    (28, "4.2"),
    (30, "4.3"),
    (31, "4.4"),
    (34, "4.5"),
];

/// The release a `metadata.version` level belongs to (`21` is `3.9`); `None` below 7.
pub fn metadata_release(level: i32) -> Option<&'static str> {
    METADATA_RELEASES
        .iter()
        .rev()
        .find(|(first, _)| level >= *first)
        .map(|(_, r)| *r)
}

/// The broker's release line as far as the protocol tells: the newest `metadata.version`
/// its software supports. A 4.4.0 broker says `4.4`; the patch level is not on the wire.
/// Brokers before KRaft's feature levels (and ZooKeeper-mode ones) say nothing.
pub fn broker_release(f: &BrokerFacts) -> Option<&'static str> {
    f.supported_features
        .iter()
        .find(|r| r.name == "metadata.version")
        .and_then(|r| metadata_release(r.max))
}

/// The broker configs read whatever their source, because their default is the risk.
pub const WATCHED_CONFIGS: &[&str] = &[
    "unclean.leader.election.enable",
    "min.insync.replicas",
    "auto.create.topics.enable",
    "default.replication.factor",
    "transaction.max.timeout.ms",
];

/// A broker config an operator should know about, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Risk {
    /// The broker.
    pub broker: i32,
    /// The config key.
    pub config: String,
    /// Its value.
    pub value: String,
    /// What it risks.
    pub why: &'static str,
}

/// The risky configs of each broker.
pub fn risky(facts: &[BrokerFacts]) -> Vec<Risk> {
    let mut out = Vec::new();
    for f in facts {
        for (k, v) in &f.configs {
            let why = match (k.as_str(), v.as_str()) {
                ("unclean.leader.election.enable", "true") => {
                    "a replica outside the ISR may become leader and drop acknowledged records"
                }
                ("min.insync.replicas", "1") => {
                    "topics without their own setting acknowledge acks=all writes on the leader alone"
                }
                ("auto.create.topics.enable", "true") => {
                    "a client's typo creates a topic with the default partitions and replication"
                }
                ("default.replication.factor", "1") => {
                    "topics created without a replication factor have a single copy"
                }
                (k, _) if k.starts_with("log.flush.") => {
                    "forced fsync overrides cost throughput; Kafka's durability comes from replication"
                }
                _ => continue,
            };
            out.push(Risk {
                broker: f.id,
                config: k.clone(),
                value: v.clone(),
                why,
            });
        }
    }
    out
}

/// Whether a config is expected to differ per broker (its id, addresses, paths).
fn per_broker(key: &str) -> bool {
    const KEYS: &[&str] = &[
        "broker.id",
        "node.id",
        "broker.rack",
        "listeners",
        "advertised.listeners",
        "log.dir",
        "log.dirs",
        "metadata.log.dir",
    ];
    KEYS.contains(&key)
        || key.ends_with(".keystore.location")
        || key.ends_with(".truststore.location")
        || key.ends_with(".keystore.certificate.chain")
        || key.ends_with(".keystore.key")
        || (key.starts_with("listener.name.") && key.contains(".ssl."))
}

/// The configs whose values differ between brokers, each with its values and the brokers
/// holding each value (`(default)` for a broker that does not override it). Per-broker
/// settings (ids, listeners, paths) are not drift.
pub fn drift(facts: &[BrokerFacts]) -> BTreeMap<String, BTreeMap<String, Vec<i32>>> {
    let mut keys: Vec<&str> = facts
        .iter()
        .flat_map(|f| f.configs.keys().map(String::as_str))
        .filter(|k| !per_broker(k))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut out = BTreeMap::new();
    for k in keys {
        let mut values: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for f in facts {
            let v = f
                .configs
                .get(k)
                .cloned()
                .unwrap_or_else(|| "(default)".to_string());
            values.entry(v).or_default().push(f.id);
        }
        if values.len() > 1 {
            out.insert(k.to_string(), values);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::FeatureRange;

    fn broker(id: i32, configs: &[(&str, &str)], mv_max: i32) -> BrokerFacts {
        BrokerFacts {
            id,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            supported_features: vec![FeatureRange {
                name: "metadata.version".into(),
                min: 7,
                max: mv_max,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn releases_follow_kafkas_metadata_versions() {
        assert_eq!(metadata_release(21), Some("3.9"));
        assert_eq!(metadata_release(25), Some("4.0"));
        assert_eq!(metadata_release(33), Some("4.4"));
        assert_eq!(metadata_release(6), None);
        assert_eq!(broker_release(&broker(1, &[], 21)), Some("3.9"));
        assert_eq!(broker_release(&BrokerFacts::default()), None);
    }

    #[test]
    fn flags_the_risky_configs_and_only_them() {
        let f = broker(
            1,
            &[
                ("unclean.leader.election.enable", "true"),
                ("min.insync.replicas", "1"),
                ("auto.create.topics.enable", "false"),
                ("log.flush.interval.messages", "1"),
                ("num.io.threads", "16"),
            ],
            33,
        );
        let risks = risky(&[f]);
        let got: Vec<&str> = risks.iter().map(|r| r.config.as_str()).collect();
        assert_eq!(
            got,
            [
                "log.flush.interval.messages",
                "min.insync.replicas",
                "unclean.leader.election.enable"
            ]
        );
    }

    #[test]
    fn drift_names_the_values_and_brokers_but_not_per_broker_settings() {
        let a = broker(
            1,
            &[
                ("num.io.threads", "16"),
                ("listeners", "PLAINTEXT://a:9092"),
            ],
            33,
        );
        let b = broker(2, &[("listeners", "PLAINTEXT://b:9092")], 33);
        let c = broker(3, &[("num.io.threads", "16")], 33);
        let d = drift(&[a, b, c]);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d["num.io.threads"]["16"], vec![1, 3]);
        assert_eq!(d["num.io.threads"]["(default)"], vec![2]);
    }
}
