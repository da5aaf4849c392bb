//! Cluster metadata and partition offsets over the Kafka protocol, with rdkafka.
//!
//! Two clients, never in a consumer group and never reading a record: ListOffsets
//! answers the high watermark at `read_uncommitted` and the last stable offset at
//! `read_committed`, and their difference is how far an open transaction holds
//! `read_committed` consumers back.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use foresight_proto::v1::{Broker, ClusterSnapshot, ConsumerGroup, Partition, Topic};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::Error;
use crate::config::KafkaConfig;

type TopicConfigs = BTreeMap<String, BTreeMap<String, String>>;

/// Partitions per ListOffsets call (see `offsets`).
const OFFSETS_CHUNK: usize = 500;

/// How often topic configs are described again.
pub const CONFIGS_EVERY: Duration = Duration::from_secs(300);

/// The topic configs that matter for risk, and nothing else.
pub const TOPIC_CONFIGS: &[&str] = &[
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "cleanup.policy",
    "retention.ms",
    "retention.bytes",
];

/// Reads one cluster.
pub struct KafkaCollector {
    admin: AdminClient<DefaultClientContext>,
    /// Topic configs as last described, and when: they change rarely, so they are
    /// described every [`CONFIGS_EVERY`], and a cluster that does not answer is not
    /// asked again each cycle.
    configs: std::sync::Mutex<(Option<std::time::Instant>, TopicConfigs)>,
    config: KafkaConfig,
    uncommitted: BaseConsumer,
    committed: BaseConsumer,
    timeout: Duration,
}

fn client(cfg: &KafkaConfig, isolation: &str) -> Result<BaseConsumer, KafkaError> {
    let mut c = ClientConfig::new();
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("client.id", "foresight-agent")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("log_level", "3");
    c.create()
}

impl KafkaCollector {
    /// Clients for the cluster in `cfg`; connects lazily.
    ///
    /// # Errors
    /// [`Error::Kafka`] for an invalid client configuration.
    pub fn new(cfg: &KafkaConfig) -> Result<Self, Error> {
        let mut admin = ClientConfig::new();
        for (k, v) in &cfg.properties {
            admin.set(k, v);
        }
        admin
            .set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("client.id", "foresight-agent")
            .set("log_level", "3");
        Ok(KafkaCollector {
            admin: admin.create().map_err(|e| Error::Kafka(e.to_string()))?,
            configs: std::sync::Mutex::new((None, BTreeMap::new())),
            config: cfg.clone(),
            uncommitted: client(cfg, "read_uncommitted")
                .map_err(|e| Error::Kafka(e.to_string()))?,
            committed: client(cfg, "read_committed").map_err(|e| Error::Kafka(e.to_string()))?,
            timeout: Duration::from_millis(cfg.request_timeout_ms),
        })
    }

    /// Takes one snapshot. Blocking: call it from a blocking thread.
    ///
    /// Offsets that cannot be read (a partition without a leader, a timeout) are left
    /// out of the snapshot rather than failing it.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the cluster metadata cannot be fetched at all.
    pub fn collect(&self, now_ms: i64) -> Result<ClusterSnapshot, Error> {
        let md = self
            .uncommitted
            .fetch_metadata(None, self.timeout)
            .map_err(|e| Error::Kafka(format!("fetching metadata: {e}")))?;
        let cluster_id = self
            .uncommitted
            .client()
            .fetch_cluster_id(self.timeout)
            .unwrap_or_default();
        let brokers: Vec<Broker> = md
            .brokers()
            .iter()
            .map(|b| Broker {
                id: b.id(),
                host: b.host().to_string(),
                port: b.port(),
                rack: String::new(),
            })
            .collect();
        let live: HashSet<i32> = brokers.iter().map(|b| b.id).collect();
        let mut topics = Vec::new();
        let mut with_leader = TopicPartitionList::new();
        for t in md.topics() {
            if t.name().starts_with("__") {
                // Internal topics (offsets, transaction state) are collected too, but
                // their offsets say nothing about a user's transactions.
            }
            let partitions = t
                .partitions()
                .iter()
                .map(|p| {
                    if p.leader() >= 0 && live.contains(&p.leader()) {
                        with_leader.add_partition(t.name(), p.id());
                    }
                    Partition {
                        id: p.id(),
                        leader: p.leader(),
                        replicas: p.replicas().to_vec(),
                        isr: p.isr().to_vec(),
                        error_code: p.error().map(|e| e as i32).unwrap_or(0),
                        ..Default::default()
                    }
                })
                .collect();
            topics.push(Topic {
                name: t.name().to_string(),
                partitions,
                error_code: t.error().map(|e| e as i32).unwrap_or(0),
                configs: Default::default(),
            });
        }
        let high = self.offsets(&self.uncommitted, &with_leader, Offset::End);
        let stable = self.offsets(&self.committed, &with_leader, Offset::End);
        let start = self.offsets(&self.uncommitted, &with_leader, Offset::Beginning);
        for t in &mut topics {
            for p in &mut t.partitions {
                let key = (t.name.clone(), p.id);
                p.high_watermark = high.get(&key).copied();
                p.last_stable_offset = stable.get(&key).copied();
                p.log_start_offset = start.get(&key).copied();
            }
        }
        let configs = {
            let mut cached = self
                .configs
                .lock()
                .expect("config cache lock is never poisoned");
            if cached.0.is_none_or(|at| at.elapsed() >= CONFIGS_EVERY) {
                let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
                *cached = (Some(std::time::Instant::now()), self.topic_configs(&names));
            }
            cached.1.clone()
        };
        for t in &mut topics {
            if let Some(c) = configs.get(&t.name) {
                t.configs = c.clone();
            }
        }
        let groups = self.groups();
        Ok(ClusterSnapshot {
            collected_at_ms: now_ms,
            cluster_id,
            controller_id: -1,
            brokers,
            topics,
            groups,
            ..Default::default()
        })
    }

    /// The risk-relevant configs of `topics`, by DescribeConfigs in batches. A cluster
    /// that does not answer (or an ACL that forbids it) leaves them out, with a warning.
    fn topic_configs(&self, topics: &[String]) -> TopicConfigs {
        let mut out = BTreeMap::new();
        let opts = AdminOptions::new().request_timeout(Some(self.timeout));
        let handle = tokio::runtime::Handle::try_current();
        for chunk in topics.chunks(500) {
            let specs: Vec<ResourceSpecifier<'_>> = chunk
                .iter()
                .map(|t| ResourceSpecifier::Topic(t.as_str()))
                .collect();
            let fut = self.admin.describe_configs(specs.iter(), &opts);
            let result = match &handle {
                Ok(h) => h.block_on(fut),
                Err(_) => {
                    tracing::warn!("No async runtime; topic configs left out.");
                    return out;
                }
            };
            let results = match result {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "DescribeConfigs failed; topic configs left out of this snapshot.");
                    return out;
                }
            };
            for (name, r) in chunk.iter().zip(results) {
                let Ok(resource) = r else { continue };
                let kept: BTreeMap<String, String> = resource
                    .entries
                    .iter()
                    .filter(|e| TOPIC_CONFIGS.contains(&e.name.as_str()) && !e.is_sensitive)
                    .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                    .collect();
                out.insert(name.clone(), kept);
            }
        }
        out
    }

    /// Consumer groups (ListGroups) and every offset each committed (the Admin API's
    /// ListConsumerGroupOffsets, which never joins the group). A cluster that does not
    /// answer ListGroups (librdkafka's mock) has none here.
    fn groups(&self) -> Vec<ConsumerGroup> {
        // On the admin client, so that a slow ListGroups never holds up metadata.
        let list = match self.admin.inner().fetch_group_list(None, self.timeout) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "ListGroups failed; consumer groups left out.");
                return Vec::new();
            }
        };
        let mut kept = Vec::new();
        for g in list.groups() {
            if !(g.protocol_type() == "consumer" || g.protocol_type().is_empty()) {
                continue;
            }
            if kept.len() >= self.config.max_consumer_groups {
                tracing::warn!(
                    limit = self.config.max_consumer_groups,
                    "More consumer groups than kafka.max_consumer_groups; the rest left out."
                );
                break;
            }
            kept.push(g);
        }
        let names: Vec<String> = kept.iter().map(|g| g.name().to_string()).collect();
        let mut committed = super::group_offsets::list(self.admin.inner(), &names, self.timeout);
        kept.iter()
            .map(|g| {
                let offsets = match committed.remove(g.name()) {
                    Some(Ok(offsets)) => offsets,
                    Some(Err(e)) => {
                        tracing::warn!(group = g.name(), error = %e, "OffsetFetch failed.");
                        Vec::new()
                    }
                    None => {
                        tracing::warn!(group = g.name(), "OffsetFetch timed out.");
                        Vec::new()
                    }
                };
                ConsumerGroup {
                    name: g.name().to_string(),
                    state: g.state().to_string(),
                    members: g.members().len() as i32,
                    offsets,
                    // librdkafka's classic view cannot tell a KIP-848 group (which it
                    // shows as Dead, without members) from a classic one: the admin
                    // requests' groups part replaces this ([`super::groups`]).
                    ..Default::default()
                }
            })
            .collect()
    }

    /// ListOffsets for `tpl` at `which`, one request per leader; per-partition errors
    /// leave that partition out.
    fn offsets(
        &self,
        consumer: &BaseConsumer,
        tpl: &TopicPartitionList,
        which: Offset,
    ) -> BTreeMap<(String, i32), i64> {
        let mut out = BTreeMap::new();
        // librdkafka matches the answer to the request with a linear search per
        // partition, so one list of 10,000 partitions costs 10,000² string compares:
        // ask in chunks instead.
        let elements = tpl.elements();
        for chunk in elements.chunks(OFFSETS_CHUNK) {
            let mut query = TopicPartitionList::new();
            for e in chunk {
                // The "offset" field carries the ListOffsets timestamp: -1 latest, -2 earliest.
                let _ = query.add_partition_offset(e.topic(), e.partition(), which);
            }
            match consumer.offsets_for_times(query, self.timeout) {
                Ok(result) => {
                    for e in result.elements() {
                        if let (Offset::Offset(o), Ok(())) = (e.offset(), e.error()) {
                            out.insert((e.topic().to_string(), e.partition()), o);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ListOffsets failed; offsets left out of this snapshot.")
                }
            }
        }
        out
    }
}
