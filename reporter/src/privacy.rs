//! Data minimization before anything leaves the host: metric names kept or dropped by
//! pattern, and topic and consumer group names replaced by keyed hashes, so that
//! Foresight can tell topics apart without learning what they are called.

use foresight_proto::derive;
use foresight_proto::v1::{ClusterSnapshot, Series};
use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::Sha256;

use crate::config::PrivacyConfig;

/// Labels whose values are names to hide.
const NAME_LABELS: &[&str] = &["topic", "consumergroup", "group"];

/// The compiled privacy settings.
#[derive(Debug, Clone)]
pub struct Privacy {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
    key: Option<Vec<u8>>,
}

impl Privacy {
    /// Compiles `config`; `key` is the hashing key when `hash_names` is on.
    ///
    /// # Errors
    /// A message per bad pattern or a missing key.
    pub fn new(config: &PrivacyConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut compile = |what: &str, list: &[String]| {
            list.iter()
                .filter_map(|p| match Regex::new(&format!("^(?:{p})$")) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        problems.push(format!("privacy.{what}: {p:?}: {e}"));
                        None
                    }
                })
                .collect::<Vec<_>>()
        };
        let include = compile("include", &config.include);
        let exclude = compile("exclude", &config.exclude);
        let key = if config.hash_names {
            match std::env::var(&config.hash_key_env) {
                Ok(k) if !k.is_empty() => Some(k.into_bytes()),
                _ => {
                    problems.push(format!(
                        "privacy.hash_names: set the hashing key in the {} environment variable \
                         (the same key on every agent of an organization keeps names comparable)",
                        config.hash_key_env
                    ));
                    None
                }
            }
        } else {
            None
        };
        if problems.is_empty() {
            Ok(Privacy {
                include,
                exclude,
                key,
            })
        } else {
            Err(problems)
        }
    }

    /// The keyed hash that replaces `name`: `h:` and 16 hex digits of HMAC-SHA256.
    pub fn hash(&self, name: &str) -> String {
        match &self.key {
            Some(key) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
                mac.update(name.as_bytes());
                format!("h:{}", &hex::encode(mac.finalize().into_bytes())[..16])
            }
            None => name.to_string(),
        }
    }

    /// Replaces topic and group names in the snapshot (before series and events are
    /// derived from it).
    pub fn snapshot(&self, snap: &mut ClusterSnapshot) {
        if self.key.is_none() {
            return;
        }
        for t in &mut snap.topics {
            t.name = self.hash(&t.name);
        }
        for g in &mut snap.groups {
            g.name = self.hash(&g.name);
            for o in &mut g.offsets {
                o.topic = self.hash(&o.topic);
            }
        }
        for d in &mut snap.log_dirs {
            for r in &mut d.replicas {
                r.topic = self.hash(&r.topic);
            }
        }
        for t in &mut snap.open_transactions {
            t.topic = self.hash(&t.topic);
            if !t.transactional_id.is_empty() {
                t.transactional_id = self.hash(&t.transactional_id);
            }
        }
    }

    /// Whether the metric filter lets series `name` through.
    pub fn keeps(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(name)))
            && !self.exclude.iter().any(|r| r.is_match(name))
    }

    /// Drops series by name pattern.
    pub fn filter(&self, series: &mut Vec<Series>) {
        series.retain(|s| self.keeps(&s.name));
    }

    /// Applies the metric filter to what the ingest derives from `snap`: the snapshot
    /// parts that no kept series needs are not sent at all (consumer groups, topic
    /// configs), and the names the ingest must not derive are returned for the batch.
    pub fn minimize(&self, snap: &mut ClusterSnapshot) -> Vec<String> {
        let mut excluded: Vec<String> = derive::METRIC_NAMES
            .iter()
            .filter(|n| !self.keeps(n))
            .map(|n| (*n).to_string())
            .collect();
        if !self.keeps("kafka_transaction_open_seconds") {
            snap.open_transactions.clear();
        }
        // Replica sizes are what the largest part of the log dirs is; only the topic
        // sizes need them.
        if !self.keeps("kafka_topic_size_bytes") {
            for d in &mut snap.log_dirs {
                d.replicas.clear();
            }
        }
        let groups_needed = derive::METRIC_NAMES
            .iter()
            .chain(&["kafka_consumergroup_lag_seconds"])
            .any(|n| n.starts_with("kafka_consumergroup_") && self.keeps(n));
        if !groups_needed {
            snap.groups.clear();
        }
        let min_isr_needed = self.keeps("kafka_topic_partition_under_min_isr");
        let mut configs = std::collections::BTreeSet::new();
        for t in &mut snap.topics {
            t.configs.retain(|key, _| {
                let name = derive::config_metric_name(key);
                let keep = self.keeps(&name);
                if !keep {
                    configs.insert(name);
                }
                keep || (key == "min.insync.replicas" && min_isr_needed)
            });
        }
        excluded.extend(configs);
        excluded
    }

    /// Hashes the name-carrying labels of series that did not come from the (already
    /// hashed) snapshot: JMX metrics and an embedder's own.
    pub fn hash_labels(&self, series: &mut [Series]) {
        if self.key.is_none() {
            return;
        }
        for s in series {
            for l in &mut s.labels {
                if NAME_LABELS.contains(&l.name.as_str()) {
                    l.value = self.hash(&l.value);
                }
            }
        }
    }
}
