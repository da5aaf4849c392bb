//! The telemetry topic: ingest nodes produce accepted batches to it, the evaluators'
//! consumer group reads it.
//!
//! A record is one batch in its stored form (zstd protobuf), keyed `tenant/cluster` and
//! produced to the partition [`partition_of`] names, with the tenant, the agent instance
//! and the sequence in headers. The producer is idempotent with `acks=all`, and ingest
//! answers 202 only once Kafka has acknowledged the record.
//!
//! An evaluator replays each partition it is given from the oldest sample its rules
//! need: it commits, per partition, not the offset it has read but the first offset it
//! still needs, so the group's committed offsets are where the next owner starts. A
//! retried batch (the same agent instance and sequence) may be in the topic twice; the
//! evaluator skips the second, within the replay window.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use foresight_proto::Message as _;
use foresight_proto::v1::TelemetryBatch;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{ClusterConfig, partition_of};
use crate::evaluator::{Accepted, Input};

/// What the bus can fail at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The Kafka client could not be made or did not answer.
    #[error("kafka: {0}")]
    Kafka(String),
    /// Kafka did not acknowledge a record in time.
    #[error("kafka did not acknowledge the batch: {0}")]
    NotAcknowledged(String),
}

/// The client settings every Foresight client shares: the user's properties, then the
/// bootstrap servers.
pub(super) fn client_config(cfg: &ClusterConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &cfg.kafka.properties {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &cfg.kafka.bootstrap_servers);
    c
}

/// The partition counts of the topics as they are (which may differ from the
/// configured ones, for topics that existed before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topics {
    /// The telemetry topic's.
    pub telemetry: i32,
    /// The alerts topic's.
    pub alerts: i32,
}

/// Creates the telemetry and alerts topics when they are missing and returns their
/// partition counts.
///
/// # Errors
/// [`BusError::Kafka`] when Kafka does not answer or refuses a topic.
pub async fn ensure_topics(cfg: &ClusterConfig) -> Result<Topics, BusError> {
    let admin: AdminClient<DefaultClientContext> = client_config(cfg)
        .create()
        .map_err(|e| BusError::Kafka(e.to_string()))?;
    let retention = cfg.telemetry_retention_ms().to_string();
    // An acknowledged batch is on two replicas before the 202 when there are three:
    // one broker lost loses nothing, and ingest goes on with the other two.
    let min_insync = if cfg.topics.replication_factor >= 3 {
        "2"
    } else {
        "1"
    };
    let rf = TopicReplication::Fixed(cfg.topics.replication_factor);
    let telemetry = NewTopic::new(&cfg.topics.telemetry, cfg.topics.telemetry_partitions, rf)
        .set("retention.ms", &retention)
        .set("min.insync.replicas", min_insync)
        .set("cleanup.policy", "delete");
    // Alerts are sent again every evaluation: an hour of them is plenty.
    let alerts = NewTopic::new(
        &cfg.topics.alerts,
        cfg.topics.alerts_partitions,
        TopicReplication::Fixed(cfg.topics.replication_factor),
    )
    .set("retention.ms", "3600000")
    .set("min.insync.replicas", min_insync)
    .set("cleanup.policy", "delete");
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&telemetry, &alerts], &opts)
        .await
        .map_err(|e| BusError::Kafka(format!("create topics: {e}")))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "Created a topic."),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(BusError::Kafka(format!("create {t}: {e}"))),
        }
    }
    let consumer: BaseConsumer = client_config(cfg)
        .create()
        .map_err(|e| BusError::Kafka(e.to_string()))?;
    let names = [
        (
            cfg.topics.telemetry.clone(),
            cfg.topics.telemetry_partitions,
        ),
        (cfg.topics.alerts.clone(), cfg.topics.alerts_partitions),
    ];
    let counts = tokio::task::spawn_blocking(move || {
        names
            .iter()
            .map(|(name, configured)| {
                // A new topic's metadata may take a moment to reach every broker.
                for _ in 0..50 {
                    if let Ok(md) = consumer.fetch_metadata(Some(name), Duration::from_secs(5))
                        && let Some(t) = md.topics().iter().find(|t| t.name() == name)
                        && !t.partitions().is_empty()
                    {
                        let count = t.partitions().len() as i32;
                        if count != *configured {
                            tracing::warn!(
                                topic = %name, partitions = count, configured,
                                "The topic exists with another partition count; it is used as it is."
                            );
                        }
                        return Ok(count);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(BusError::Kafka(format!("topic {name} has no partitions")))
            })
            .collect::<Result<Vec<i32>, BusError>>()
    })
    .await
    .map_err(|e| BusError::Kafka(e.to_string()))??;
    Ok(Topics {
        telemetry: counts[0],
        alerts: counts[1],
    })
}

/// Produces accepted batches to the telemetry topic.
pub struct TelemetryBus {
    producer: FutureProducer,
    topic: String,
    partitions: i32,
}

impl std::fmt::Debug for TelemetryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryBus")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish()
    }
}

/// Where Kafka put a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl TelemetryBus {
    /// An idempotent `acks=all` producer to the telemetry topic of `partitions`
    /// partitions.
    ///
    /// # Errors
    /// [`BusError::Kafka`] for settings librdkafka refuses.
    pub fn new(cfg: &ClusterConfig, partitions: i32) -> Result<Self, BusError> {
        let producer = client_config(cfg)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            // Bodies are zstd already.
            .set("compression.type", "none")
            .set("message.max.bytes", "16777216")
            // Within the agent's request timeout, so that a 503 reaches it before it
            // gives up on the request and retries anyway.
            .set("message.timeout.ms", "20000")
            .create()
            .map_err(|e| BusError::Kafka(e.to_string()))?;
        Ok(TelemetryBus {
            producer,
            topic: cfg.topics.telemetry.clone(),
            partitions,
        })
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// Produces one batch and waits for Kafka's acknowledgement.
    ///
    /// # Errors
    /// [`BusError::NotAcknowledged`] when the record is not acknowledged within the
    /// producer's timeout.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the record to the producer, which may still deliver
    /// it; the agent's retry is then skipped as a duplicate.
    pub async fn publish(
        &self,
        tenant: &str,
        cluster: &str,
        instance: &str,
        sequence: u64,
        body_zstd: &[u8],
    ) -> Result<Placed, BusError> {
        let key = format!("{tenant}/{cluster}");
        let sequence = sequence.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "tenant",
                value: Some(tenant),
            })
            .insert(Header {
                key: "instance",
                value: Some(instance),
            })
            .insert(Header {
                key: "sequence",
                value: Some(&sequence),
            });
        let record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(body_zstd)
            .partition(partition_of(tenant, cluster, self.partitions))
            .headers(headers);
        match self.producer.send(record, Duration::from_secs(5)).await {
            Ok(d) => Ok(Placed {
                partition: d.partition,
                offset: d.offset,
            }),
            Err((e, _)) => Err(BusError::NotAcknowledged(e.to_string())),
        }
    }
}

/// Tells the evaluator's task of each assignment, from inside the consumer's poll.
struct Rebalances {
    tx: mpsc::UnboundedSender<Vec<i32>>,
}

impl rdkafka::ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let parts = match rebalance {
            Rebalance::Assign(tpl) => tpl.elements().iter().map(|e| e.partition()).collect(),
            Rebalance::Revoke(_) => Vec::new(),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "Evaluator group rebalance failed.");
                return;
            }
        };
        let _ = self.tx.send(parts);
    }
}

/// What one owned partition needs while it replays and after.
#[derive(Debug, Default)]
struct Partition {
    /// Offsets of the records read within the replay window, with their timestamps,
    /// oldest first: the first one still needed is what gets committed.
    window: VecDeque<(i64, i64)>,
    /// The offset after the last record read.
    next: Option<i64>,
    /// The high watermark when the partition was assigned: the replay ends there.
    replay_end: i64,
}

/// The evaluator role: joins the group, hands records to the pipeline, replays each
/// assigned partition from its committed offset (the oldest sample still needed) and
/// commits those offsets every few seconds. `owned` is kept up to date for the node's
/// heartbeat.
///
/// # Errors
/// [`BusError::Kafka`] when the consumer cannot be made.
pub fn spawn_evaluator(
    cfg: &ClusterConfig,
    partitions: i32,
    window_ms: i64,
    tx: mpsc::Sender<Input>,
    owned: Arc<std::sync::Mutex<Vec<i32>>>,
    ledger: Arc<dyn crate::store::HistoryStore>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let (rebalances, assignments) = mpsc::unbounded_channel();
    let consumer: StreamConsumer<Rebalances> = client_config(cfg)
        .set("group.id", &cfg.topics.evaluator_group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Eager: every rebalance hands each evaluator its whole share anew, which the
        // pipeline rebuilds as one.
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("fetch.message.max.bytes", "16777216")
        .create_with_context(Rebalances { tx: rebalances })
        .map_err(|e| BusError::Kafka(e.to_string()))?;
    consumer
        .subscribe(&[&cfg.topics.telemetry])
        .map_err(|e| BusError::Kafka(e.to_string()))?;
    let topic = cfg.topics.telemetry.clone();
    let task = Evaluating {
        consumer: Arc::new(consumer),
        topic,
        count: partitions,
        window_ms,
        tx,
        owned,
        ledger,
        parts: HashMap::new(),
        seen: HashSet::new(),
        seen_order: VecDeque::new(),
        replaying: false,
    };
    Ok(tokio::spawn(task.run(assignments, cancel)))
}

struct Evaluating {
    consumer: Arc<StreamConsumer<Rebalances>>,
    topic: String,
    count: i32,
    window_ms: i64,
    tx: mpsc::Sender<Input>,
    owned: Arc<std::sync::Mutex<Vec<i32>>>,
    /// Where the owner of a cluster records its agents' durability events.
    ledger: Arc<dyn crate::store::HistoryStore>,
    parts: HashMap<i32, Partition>,
    /// `(tenant, instance, sequence)` of the batches read within the window.
    seen: HashSet<(String, String, u64)>,
    seen_order: VecDeque<(i64, (String, String, u64))>,
    replaying: bool,
}

fn header<'a>(m: &'a rdkafka::message::BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    let h = m.headers()?;
    h.iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

impl Evaluating {
    async fn run(
        mut self,
        mut assignments: mpsc::UnboundedReceiver<Vec<i32>>,
        cancel: CancellationToken,
    ) {
        let mut commit = tokio::time::interval(Duration::from_secs(2));
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let consumer = self.consumer.clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(parts) = assignments.recv() => self.assigned(parts).await,
                m = consumer.recv() => {
                    // The assignment that came with this poll goes first: the record
                    // belongs to it.
                    while let Ok(parts) = assignments.try_recv() {
                        self.assigned(parts).await;
                    }
                    match m {
                        Ok(m) => self.record(&m).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "Reading the telemetry topic failed.");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                _ = commit.tick() => self.commit(),
            }
        }
        self.commit();
    }

    async fn assigned(&mut self, parts: Vec<i32>) {
        self.parts.clear();
        self.seen.clear();
        self.seen_order.clear();
        if let Ok(mut o) = self.owned.lock() {
            o.clone_from(&parts);
        }
        if parts.is_empty() {
            // A revoke: the pipeline stops evaluating (and saving) what may be another
            // evaluator's already; the next assignment follows.
            self.replaying = false;
            let _ = self
                .tx
                .send(Input::Assigned {
                    partitions: parts,
                    count: self.count,
                })
                .await;
            return;
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let list = parts.clone();
        // Where each replay ends, and where it starts (nothing to replay when the
        // committed offset is the end already).
        let bounds = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in &list {
                tpl.add_partition(&topic, *p);
            }
            let committed = consumer
                .committed_offsets(tpl, Duration::from_secs(10))
                .ok();
            list.iter()
                .map(|p| {
                    let (low, high) = consumer
                        .fetch_watermarks(&topic, *p, Duration::from_secs(10))
                        .unwrap_or((0, 0));
                    let start = committed
                        .as_ref()
                        .and_then(|c| c.find_partition(&topic, *p))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        })
                        .unwrap_or(low)
                        .max(low);
                    (*p, start, high)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (p, start, end) in bounds {
            self.parts.insert(
                p,
                Partition {
                    window: VecDeque::new(),
                    next: (start >= end).then_some(start),
                    replay_end: end,
                },
            );
        }
        self.replaying = true;
        if self
            .tx
            .send(Input::Assigned {
                partitions: parts,
                count: self.count,
            })
            .await
            .is_err()
        {
            return;
        }
        self.check_caught_up().await;
    }

    async fn check_caught_up(&mut self) {
        if self.replaying
            && self
                .parts
                .values()
                .all(|p| p.next.is_some_and(|n| n >= p.replay_end))
        {
            self.replaying = false;
            let _ = self.tx.send(Input::CaughtUp).await;
        }
    }

    async fn record(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let ts = m
            .timestamp()
            .to_millis()
            .unwrap_or_else(foresight_proto::now_ms);
        let Some(part) = self.parts.get_mut(&m.partition()) else {
            return;
        };
        part.next = Some(m.offset() + 1);
        part.window.push_back((ts, m.offset()));
        let (Some(tenant), Some(instance), Some(sequence)) = (
            header(m, "tenant"),
            header(m, "instance"),
            header(m, "sequence").and_then(|s| s.parse::<u64>().ok()),
        ) else {
            tracing::warn!(
                partition = m.partition(),
                offset = m.offset(),
                "A telemetry record without its headers was skipped."
            );
            return;
        };
        let id = (tenant.to_string(), instance.to_string(), sequence);
        // Batches without an agent instance (remote write, OTLP) have no sequence to
        // deduplicate on.
        let duplicate = !instance.is_empty() && !self.seen.insert(id.clone());
        if !duplicate && !instance.is_empty() {
            self.seen_order.push_back((ts, id));
        }
        let batch = m.payload().and_then(|body| {
            zstd::bulk::decompress(body, 256 << 20)
                .ok()
                .and_then(|raw| TelemetryBatch::decode(raw.as_slice()).ok())
        });
        match batch {
            Some(batch) if !duplicate => {
                let durability = crate::evaluator::views::durability_events(&batch);
                if !durability.is_empty() {
                    // Each finding is kept once, so a replay records nothing twice.
                    let (ledger, tenant, cluster) = (
                        self.ledger.clone(),
                        tenant.to_string(),
                        crate::evaluator::views::cluster_of(&batch).unwrap_or_default(),
                    );
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = ledger.record_durability(&tenant, &cluster, &durability) {
                            tracing::warn!(error = %e, tenant, cluster, "Could not record durability events.");
                        }
                    });
                }
                let _ = self
                    .tx
                    .send(Input::Batch(Box::new(Accepted {
                        tenant: tenant.to_string(),
                        batch,
                    })))
                    .await;
            }
            Some(_) => tracing::debug!(tenant, instance, sequence, "A retried batch was skipped."),
            None => tracing::warn!(
                partition = m.partition(),
                offset = m.offset(),
                "A telemetry record that does not decode was skipped."
            ),
        }
        self.check_caught_up().await;
    }

    /// Commits, per owned partition, the first offset still inside the window: where
    /// the next owner's replay starts.
    fn commit(&mut self) {
        let horizon = foresight_proto::now_ms() - self.window_ms;
        while self.seen_order.front().is_some_and(|(ts, _)| *ts < horizon) {
            if let Some((_, id)) = self.seen_order.pop_front() {
                self.seen.remove(&id);
            }
        }
        let mut tpl = TopicPartitionList::new();
        for (p, part) in &mut self.parts {
            while part.window.front().is_some_and(|(ts, _)| *ts < horizon) {
                part.window.pop_front();
            }
            let offset = part.window.front().map(|(_, o)| *o).or(part.next);
            if let Some(o) = offset {
                let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(o));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if let Err(e) = self
            .consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Async)
        {
            tracing::debug!(error = %e, "Committing the replay offsets failed; the next pass tries again.");
        }
    }
}
