//! The alerts topic: evaluators send every evaluation's firing and resolved alerts, and
//! each cluster's facts when they change, keyed by tenant; the notifier nodes consume it
//! as a group, so one tenant's grouping lives on one node at a time, wherever its
//! clusters are evaluated.
//!
//! A record is one tenant's alerts of one evaluation (or one posted batch, or one
//! cluster's facts) as JSON. Alerts are sent again at every evaluation, so a notifier
//! that takes a partition over rebuilds its groups from the next records and the
//! notification log in PostgreSQL, which keeps a hand-over from notifying twice; it
//! starts from the group's committed offsets (committed as it reads), so nothing older
//! needs replaying.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use foresight_notifier::Dispatcher;
use foresight_notifier::group::GroupAlert;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::bus::{BusError, client_config};
use super::config::{ClusterConfig, partition_of};
use crate::store::pg::PgStore;

/// One record of the alerts topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertRecord {
    /// A tenant's alerts, from one evaluation or one post to the Alertmanager API.
    Alerts {
        /// Tenant name.
        tenant: String,
        /// When the evaluator sent them, Unix ms.
        at_ms: i64,
        /// The alerts as the groups take them.
        alerts: Vec<GroupAlert>,
    },
    /// A cluster's facts for its notifications (release, features, risky configs).
    Context {
        /// Tenant name.
        tenant: String,
        /// The cluster.
        cluster: String,
        /// The facts.
        facts: BTreeMap<String, String>,
    },
}

impl AlertRecord {
    fn tenant(&self) -> &str {
        match self {
            AlertRecord::Alerts { tenant, .. } | AlertRecord::Context { tenant, .. } => tenant,
        }
    }
}

/// Sends the evaluator's alerts to the notifier nodes.
pub struct AlertBus {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    partitions: i32,
}

impl std::fmt::Debug for AlertBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBus")
            .field("topic", &self.topic)
            .finish()
    }
}

impl AlertBus {
    /// An idempotent `acks=all` producer to the alerts topic of `partitions`.
    ///
    /// # Errors
    /// [`BusError::Kafka`] for settings librdkafka refuses.
    pub fn new(cfg: &ClusterConfig, partitions: i32) -> Result<Self, BusError> {
        let producer = client_config(cfg)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000")
            .create()
            .map_err(|e| BusError::Kafka(e.to_string()))?;
        Ok(AlertBus {
            producer,
            topic: cfg.topics.alerts.clone(),
            partitions,
        })
    }

    /// Queues `record` for its tenant's partition without waiting: a record that is not
    /// delivered is made good by the next evaluation's.
    pub fn send(&self, record: &AlertRecord) {
        let body = serde_json::to_vec(record).expect("alert records serialize");
        let tenant = record.tenant();
        let r = BaseRecord::to(&self.topic)
            .key(tenant)
            .payload(&body)
            .partition(partition_of(tenant, "", self.partitions));
        if let Err((e, _)) = self.producer.send(r) {
            tracing::warn!(error = %e, tenant, "An alert record was not queued; the next evaluation sends it again.");
        }
    }

    /// Waits up to `within` for what is queued to be delivered (at shutdown).
    pub fn flush(&self, within: Duration) {
        let _ = self.producer.flush(within);
    }
}

/// Tells the notifier's task of each assignment.
struct Rebalances {
    tx: mpsc::UnboundedSender<Vec<i32>>,
}

impl rdkafka::ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let _ = self
                .tx
                .send(tpl.elements().iter().map(|e| e.partition()).collect());
        }
    }
}

/// The notifier role's grouping: consumes the alerts topic in the notifiers' group and
/// runs the tenants' groups of the partitions it owns into the PostgreSQL outbox, waking
/// the delivery worker.
///
/// # Errors
/// [`BusError::Kafka`] when the consumer cannot be made.
pub fn spawn_notifier(
    cfg: &ClusterConfig,
    dispatcher: Dispatcher<PgStore>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, BusError> {
    let (rebalances, assignments) = mpsc::unbounded_channel();
    let consumer: StreamConsumer<Rebalances> = client_config(cfg)
        .set("group.id", &cfg.topics.notifier_group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        // A new group starts at the end: the evaluators send every alert again.
        .set("auto.offset.reset", "latest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create_with_context(Rebalances { tx: rebalances })
        .map_err(|e| BusError::Kafka(e.to_string()))?;
    consumer
        .subscribe(&[&cfg.topics.alerts])
        .map_err(|e| BusError::Kafka(e.to_string()))?;
    Ok(tokio::spawn(notify(
        consumer,
        assignments,
        dispatcher,
        wake,
        cancel,
    )))
}

async fn notify(
    consumer: StreamConsumer<Rebalances>,
    mut assignments: mpsc::UnboundedReceiver<Vec<i32>>,
    mut dispatcher: Dispatcher<PgStore>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    loop {
        let flush_in = dispatcher
            .next_due_ms()
            .map(|t| Duration::from_millis((t - foresight_proto::now_ms()).max(50) as u64));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(parts) = assignments.recv() => take_over(&mut dispatcher, &parts),
            m = consumer.recv() => {
                // The assignment that came with this poll goes first.
                while let Ok(parts) = assignments.try_recv() {
                    take_over(&mut dispatcher, &parts);
                }
                let record = match m {
                    Ok(m) => m.payload().and_then(|b| match serde_json::from_slice::<AlertRecord>(b) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::warn!(error = %e, partition = m.partition(), offset = m.offset(), "An alert record that does not decode was skipped.");
                            None
                        }
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "Reading the alerts topic failed.");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        None
                    }
                };
                if let Some(record) = record {
                    take(&mut dispatcher, record, &wake);
                }
            }
            _ = async {
                match flush_in {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => flush(&mut dispatcher, &wake),
        }
    }
    // What is due goes to the outbox before the node leaves.
    flush(&mut dispatcher, &wake);
}

/// A new assignment: the groups are rebuilt from the next records and the stored
/// notification log.
fn take_over(dispatcher: &mut Dispatcher<PgStore>, parts: &[i32]) {
    tracing::info!(partitions = ?parts, "Notifier takes over its alert partitions.");
    dispatcher.forget_groups();
}

fn take(dispatcher: &mut Dispatcher<PgStore>, record: AlertRecord, wake: &Notify) {
    match record {
        AlertRecord::Alerts { tenant, alerts, .. } => {
            let now = foresight_proto::now_ms();
            if let Err(e) = tokio::task::block_in_place(|| dispatcher.insert(&tenant, alerts, now))
            {
                tracing::error!(error = %e, tenant = %tenant, "Could not read the notification log; the next evaluation's alerts retry.");
            }
            flush(dispatcher, wake);
        }
        AlertRecord::Context {
            tenant,
            cluster,
            facts,
        } => dispatcher.set_cluster_context(&tenant, &cluster, facts),
    }
}

fn flush(dispatcher: &mut Dispatcher<PgStore>, wake: &Notify) {
    let now = foresight_proto::now_ms();
    match tokio::task::block_in_place(|| dispatcher.flush(now)) {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(notifications = n, "Notifications queued.");
            wake.notify_one();
        }
        Err(e) => tracing::error!(error = %e, "Could not queue notifications; will retry."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_as_json() {
        let r = AlertRecord::Alerts {
            tenant: "acme".into(),
            at_ms: 5,
            alerts: vec![GroupAlert {
                labels: BTreeMap::from([("alertname".into(), "X".into())]),
                annotations: BTreeMap::new(),
                starts_at_ms: 1,
                ends_at_ms: 9,
                generator_url: String::new(),
                fingerprint: "ab".into(),
            }],
        };
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<AlertRecord>(&json).unwrap(), r);
        assert!(serde_json::from_slice::<AlertRecord>(b"{\"kind\":\"other\"}").is_err());
    }
}
