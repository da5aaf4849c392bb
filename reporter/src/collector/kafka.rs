//! Cluster metadata and partition offsets over the Kafka protocol, with rdkafka.
//!
//! Two clients, never in a consumer group and never reading a record: ListOffsets
//! answers the high watermark at `read_uncommitted` and the last stable offset at
//! `read_committed`, and their difference is how far an open transaction holds
//! `read_committed` consumers back.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use foresight_proto::v1::{Broker, ClusterSnapshot, Partition, Topic};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::Error;
use crate::config::KafkaConfig;

/// Reads one cluster.
pub struct KafkaCollector {
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
        Ok(KafkaCollector {
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
        Ok(ClusterSnapshot {
            collected_at_ms: now_ms,
            cluster_id,
            controller_id: -1,
            brokers,
            topics,
        })
    }

    /// ListOffsets for `tpl` at `which`, one request per leader; per-partition errors
    /// leave that partition out.
    fn offsets(
        &self,
        consumer: &BaseConsumer,
        tpl: &TopicPartitionList,
        which: Offset,
    ) -> BTreeMap<(String, i32), i64> {
        let mut query = TopicPartitionList::new();
        for e in tpl.elements() {
            // The "offset" field carries the ListOffsets timestamp: -1 latest, -2 earliest.
            let _ = query.add_partition_offset(e.topic(), e.partition(), which);
        }
        let mut out = BTreeMap::new();
        if query.count() == 0 {
            return out;
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
        out
    }
}
