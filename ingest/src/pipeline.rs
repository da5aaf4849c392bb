//! The evaluator: accepted batches become samples in per-tenant series stores; every
//! evaluation interval each tenant's rules run, and the alerts go to the dispatcher,
//! which writes the outbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use foresight_notifier::Dispatcher;
use foresight_notifier::group::GroupAlert;
use foresight_proto::derive;
use foresight_proto::v1::TelemetryBatch;
use foresight_rules::store::METRIC_NAME;
use foresight_rules::{Group, Labels, RuleEngine, SeriesStore};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::amapi::{AlertView, AlertsView};
use crate::store::Store;

/// What reaches the evaluator.
#[derive(Debug)]
pub enum Input {
    /// A stored telemetry batch.
    Batch(Box<Accepted>),
    /// Alerts posted to the Alertmanager API.
    Alerts {
        /// Tenant name.
        tenant: String,
        /// The alerts.
        alerts: Vec<GroupAlert>,
    },
}

/// A batch that is stored and ready for the evaluator.
#[derive(Debug)]
pub struct Accepted {
    /// Tenant name.
    pub tenant: String,
    /// The decoded batch.
    pub batch: TelemetryBatch,
}

struct Tenant {
    series: SeriesStore,
    engine: RuleEngine,
}

/// Owns the series stores and alert states.
pub struct Pipeline {
    groups: Vec<Group>,
    external_labels: BTreeMap<String, String>,
    tenants: HashMap<String, Tenant>,
    dispatcher: Dispatcher<Store>,
    wake_outbox: Arc<Notify>,
    interval: Duration,
    view: AlertsView,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Pipeline {
    /// A pipeline evaluating `groups` every `interval`.
    pub fn new(
        groups: Vec<Group>,
        external_labels: BTreeMap<String, String>,
        dispatcher: Dispatcher<Store>,
        wake_outbox: Arc<Notify>,
        interval: Duration,
    ) -> Self {
        Pipeline {
            groups,
            external_labels,
            tenants: HashMap::new(),
            dispatcher,
            wake_outbox,
            interval,
            view: AlertsView::default(),
        }
    }

    /// Publishes each tenant's alerts to `view` after every change, for the API.
    pub fn with_view(mut self, view: AlertsView) -> Self {
        self.view = view;
        self
    }

    fn publish(&self, now_ms: i64) {
        let mut all = std::collections::HashMap::new();
        for (tenant, grouper) in self.dispatcher.tenants() {
            let inhibited = grouper.inhibited(now_ms);
            let mut seen = std::collections::HashSet::new();
            let mut list = Vec::new();
            for (_, _, alerts) in grouper.groups() {
                for a in alerts {
                    if seen.insert(a.fingerprint.clone()) {
                        list.push(AlertView {
                            receivers: grouper.receivers_of(&a.labels),
                            inhibited: inhibited.contains(&a.fingerprint),
                            alert: a.clone(),
                        });
                    }
                }
            }
            list.sort_by(|a, b| a.alert.labels.cmp(&b.alert.labels));
            all.insert(tenant.to_string(), list);
        }
        if let Ok(mut v) = self.view.write() {
            *v = all;
        }
    }

    /// Adds alerts posted to the Alertmanager API; they are notified at the next flush.
    pub fn alerts(&mut self, tenant: &str, alerts: Vec<GroupAlert>) {
        let now = now_ms();
        if let Err(e) = tokio::task::block_in_place(|| self.dispatcher.insert(tenant, alerts, now))
        {
            tracing::error!(error = %e, "Could not read the notification log; alerts dropped.");
        }
        self.publish(now);
    }

    fn tenant(&mut self, name: &str) -> &mut Tenant {
        if !self.tenants.contains_key(name) {
            let engine = RuleEngine::new(self.groups.clone(), self.external_labels.clone());
            // Keep what the longest rule reads, plus one interval of slack.
            let retention = engine.retention_ms() + self.interval.as_millis() as i64;
            self.tenants.insert(
                name.to_string(),
                Tenant {
                    series: SeriesStore::new(retention),
                    engine,
                },
            );
        }
        self.tenants.get_mut(name).expect("inserted above")
    }

    /// Adds a batch's samples to its tenant's store, with the series its cluster
    /// snapshot stands for.
    pub fn ingest(&mut self, accepted: Accepted) {
        let batch = accepted.batch;
        let resource_labels = batch
            .resource
            .as_ref()
            .map(|r| r.labels.clone())
            .unwrap_or_default();
        let mut derived = Vec::new();
        if let Some(snap) = &batch.snapshot {
            let mut base = resource_labels.clone().into_iter().collect();
            let cluster = batch
                .resource
                .as_ref()
                .map(|r| {
                    if r.cluster_name.is_empty() {
                        r.cluster_id.clone()
                    } else {
                        r.cluster_name.clone()
                    }
                })
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| snap.cluster_id.clone());
            let offline = {
                let live: std::collections::HashSet<i32> =
                    snap.brokers.iter().map(|b| b.id).collect();
                snap.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .filter(|p| p.leader < 0 || !live.contains(&p.leader))
                    .count()
            };
            let facts = BTreeMap::from([
                ("brokers".to_string(), snap.brokers.len().to_string()),
                (
                    "controller".to_string(),
                    if snap.controller_id >= 0 {
                        snap.controller_id.to_string()
                    } else {
                        "none".to_string()
                    },
                ),
                ("topics".to_string(), snap.topics.len().to_string()),
                (
                    "partitions".to_string(),
                    snap.topics
                        .iter()
                        .map(|t| t.partitions.len())
                        .sum::<usize>()
                        .to_string(),
                ),
                ("offline partitions".to_string(), offline.to_string()),
            ]);
            self.dispatcher
                .set_cluster_context(&accepted.tenant, &cluster, facts);
            BTreeMap::insert(&mut base, "cluster".to_string(), cluster);
            let excluded: std::collections::HashSet<&str> =
                batch.excluded_metrics.iter().map(String::as_str).collect();
            let ts = if snap.collected_at_ms > 0 {
                snap.collected_at_ms
            } else {
                batch.created_at_ms
            };
            derived = derive::snapshot_series(snap, &base, ts, &|name| !excluded.contains(name));
        }
        let tenant = self.tenant(&accepted.tenant);
        for s in batch.series.into_iter().chain(derived) {
            let labels = Labels::new(
                resource_labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain(s.labels.into_iter().map(|l| (l.name, l.value)))
                    .chain(std::iter::once((METRIC_NAME.to_string(), s.name))),
            );
            for sample in s.samples {
                tenant
                    .series
                    .append(&labels, sample.timestamp_ms, sample.value);
            }
        }
    }

    /// Evaluates every tenant's rules at `ts_ms` and enqueues the notifications due.
    pub fn evaluate(&mut self, ts_ms: i64) {
        let mut alerts = Vec::new();
        for (name, t) in &mut self.tenants {
            let result = t.engine.evaluate(&mut t.series, ts_ms, name);
            for e in result.errors {
                tracing::warn!(tenant = %name, error = %e, "Rule evaluation failed.");
            }
            t.series.prune(ts_ms);
            alerts.extend(result.alerts);
        }
        // The outbox write is blocking SQLite work.
        match tokio::task::block_in_place(|| self.dispatcher.dispatch(&alerts, ts_ms)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(notifications = n, "Notifications queued.");
                self.wake_outbox.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "Could not queue notifications; will retry next evaluation.")
            }
        }
        self.publish(ts_ms);
    }

    /// Runs until `cancel` fires or every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Input>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Group timers (group_wait, group_interval) fire on time, not only at the
            // next evaluation (at least 50 ms apart, should the store be failing).
            let flush_in = self
                .dispatcher
                .next_due_ms()
                .map(|t| Duration::from_millis((t - now_ms()).max(50) as u64));
            tokio::select! {
                _ = cancel.cancelled() => return,
                msg = rx.recv() => match msg {
                    Some(Input::Batch(a)) => self.ingest(*a),
                    Some(Input::Alerts { tenant, alerts }) => self.alerts(&tenant, alerts),
                    None => return,
                },
                _ = ticker.tick() => self.evaluate(now_ms()),
                _ = async {
                    match flush_in {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => self.flush(now_ms()),
            }
        }
    }

    /// Flushes the groups that are due between evaluations.
    fn flush(&mut self, ts_ms: i64) {
        match tokio::task::block_in_place(|| self.dispatcher.flush(ts_ms)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(notifications = n, "Notifications queued.");
                self.wake_outbox.notify_one();
            }
            Err(e) => {
                tracing::error!(error = %e, "Could not queue notifications; will retry.");
            }
        }
        self.publish(ts_ms);
    }
}
