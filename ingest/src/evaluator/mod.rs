//! The evaluator: accepted batches become samples in per-tenant series stores; every
//! evaluation interval each tenant's rules run, and the alerts go to the dispatcher,
//! which writes the outbox.

use foresight_proto::now_ms;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use foresight_notifier::Dispatcher;
use foresight_notifier::group::GroupAlert;
use foresight_proto::Message;
use foresight_proto::derive;
use foresight_proto::v1::TelemetryBatch;
use foresight_rules::store::METRIC_NAME;
use foresight_rules::{Group, Labels, RuleEngine, SavedAlert, SeriesStore};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::store::{AlertStateStore, Store};

pub mod views;

use views::{
    AlertGroupRef, AlertView, AlertsView, BrokerInfo, ClustersView, LogDirInfo, TOP_TOPICS,
    cluster_of, kafka_error_name,
};

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
    /// Cluster mode: the consumer group gave this evaluator `partitions` of `count`.
    /// What it held is dropped and the alert states of these partitions are loaded; the
    /// topic replays their series next, and rules wait for [`Input::CaughtUp`].
    Assigned {
        /// The telemetry partitions now owned.
        partitions: Vec<i32>,
        /// The telemetry topic's partition count.
        count: i32,
    },
    /// Cluster mode: the replay after the last [`Input::Assigned`] reached the end of
    /// every partition it had then; rules run again.
    CaughtUp,
}

/// Cluster mode's share of the work: which telemetry partitions this evaluator owns.
#[derive(Debug, Clone, Default)]
struct Share {
    /// The telemetry topic's partition count.
    count: i32,
    /// The partitions owned.
    owned: Vec<i32>,
    /// Per tenant, the partitions its batches came from: an alert without a `cluster`
    /// label is saved with the first of them.
    tenant_parts: HashMap<String, std::collections::BTreeSet<i32>>,
    /// Whether the replay of the owned partitions is still under way.
    catching_up: bool,
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
    /// The alert states as last saved to the store.
    saved: Vec<SavedAlert>,
}

/// A query against one tenant's series, answered on the evaluator's task (which owns
/// the series) through `reply`.
pub struct Query {
    /// Tenant name.
    pub tenant: String,
    /// Runs against the tenant's store and engine (`None` for a tenant with no data).
    pub run: QueryFn,
}

/// What a [`Query`] runs.
pub type QueryFn = Box<dyn FnOnce(Option<(&SeriesStore, &RuleEngine)>) + Send>;

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// Owns the series stores and alert states.
pub struct Pipeline<S: AlertStateStore = Store> {
    groups: Vec<Group>,
    external_labels: BTreeMap<String, String>,
    tenants: HashMap<String, Tenant>,
    dispatcher: Dispatcher<S>,
    wake_outbox: Arc<Notify>,
    interval: Duration,
    view: AlertsView,
    clusters: ClustersView,
    store: Arc<S>,
    /// Cluster mode: the partitions owned; `None` on one node, which owns everything.
    share: Option<Share>,
    /// Cluster mode: alerts go to the notifier nodes over the alerts topic instead of
    /// this pipeline's dispatcher.
    alert_bus: Option<Arc<crate::cluster::alerts::AlertBus>>,
    /// The facts last sent over the alerts topic, per tenant and cluster.
    sent_contexts: HashMap<(String, String), BTreeMap<String, String>>,
    /// How long batches are kept in the store.
    batch_retention_ms: i64,
    /// How long alert history and finished notifications are kept.
    history_retention_ms: i64,
    /// Extra history kept in memory for the query API, beyond what the rules read.
    query_retention_ms: i64,
    /// What the rules read back, plus an interval of slack.
    rules_retention_ms: i64,
    /// Per tenant and cluster, when the last snapshot whose series were derived was
    /// taken (see [`Pipeline::ingest`]).
    derived_at_ms: HashMap<(String, String), i64>,
    /// Per tenant and cluster, the series of [`derive::ENDS_WHEN_ABSENT`] families the
    /// last derived snapshot had: one the next snapshot lacks (an aborted transaction,
    /// a quorum member gone) gets a staleness marker, so that rules stop seeing it at
    /// once rather than for the 5-minute lookback.
    transient: HashMap<(String, String), std::collections::HashSet<Labels>>,
}

impl<S: AlertStateStore> Pipeline<S> {
    /// A pipeline evaluating `groups` every `interval`.
    pub fn new(
        groups: Vec<Group>,
        external_labels: BTreeMap<String, String>,
        dispatcher: Dispatcher<S>,
        store: Arc<S>,
        wake_outbox: Arc<Notify>,
        interval: Duration,
    ) -> Self {
        let rules_retention_ms =
            foresight_rules::alerting::retention_ms(&groups) + interval.as_millis() as i64;
        Pipeline {
            groups,
            external_labels,
            tenants: HashMap::new(),
            dispatcher,
            wake_outbox,
            interval,
            view: AlertsView::default(),
            clusters: ClustersView::default(),
            derived_at_ms: HashMap::new(),
            transient: HashMap::new(),
            store,
            share: None,
            alert_bus: None,
            sent_contexts: HashMap::new(),
            rules_retention_ms,
            batch_retention_ms: 7 * 24 * 3_600_000,
            history_retention_ms: 90 * 24 * 3_600_000,
            query_retention_ms: 0,
        }
    }

    /// Keeps batches for `r.batch` and alert history and finished notifications for
    /// `r.history` in the store, and series in memory for at least `r.query` (for the
    /// query API) besides what the rules read.
    pub fn with_retention(mut self, r: crate::config::Retentions) -> Self {
        self.batch_retention_ms = r.batch.as_millis() as i64;
        self.history_retention_ms = r.history.as_millis() as i64;
        self.query_retention_ms = r.query.as_millis() as i64;
        self
    }

    /// Publishes each tenant's clusters to `view`, for the API.
    pub fn with_clusters(mut self, view: ClustersView) -> Self {
        self.clusters = view;
        self
    }

    /// Cluster mode: owns no partition until the consumer group assigns some
    /// ([`Input::Assigned`]); alert states are saved per partition; alerts and cluster
    /// facts go to `bus` for the notifier nodes, which group and notify them.
    pub fn partitioned(mut self, bus: Arc<crate::cluster::alerts::AlertBus>) -> Self {
        self.share = Some(Share::default());
        self.alert_bus = Some(bus);
        self
    }

    /// How far back series are kept in memory: what the rules read plus an interval, or
    /// the query retention if longer.
    pub fn series_retention_ms(&self) -> i64 {
        self.rules_retention_ms.max(self.query_retention_ms)
    }

    /// Rebuilds what a restart lost from the store: each tenant's alert states, and the
    /// series windows from the batches received within the series retention, replayed in
    /// arrival order. Blocking; runs before the service accepts requests.
    pub fn restore(&mut self, now_ms: i64) -> Result<(usize, usize), crate::store::Error> {
        let restored = self.restore_states()?;
        let since = now_ms - self.series_retention_ms();
        let store = self.store.clone();
        let mut bad = 0usize;
        let replayed =
            store.replay_batches(since, &mut |tenant, body| match zstd::bulk::decompress(
                body,
                256 << 20,
            )
            .ok()
            .and_then(|raw| TelemetryBatch::decode(raw.as_slice()).ok())
            {
                Some(batch) => self.ingest(Accepted {
                    tenant: tenant.to_string(),
                    batch,
                }),
                None => bad += 1,
            })?;
        if bad > 0 {
            tracing::warn!(
                batches = bad,
                "Stored batches that no longer decode were skipped."
            );
        }
        let n = self.tenants.len();
        for t in self.tenants.values_mut() {
            t.series.prune(now_ms);
        }
        tracing::info!(
            alerts = restored,
            batches = replayed,
            tenants = n,
            "Restored alert states and series from the store."
        );
        self.publish(now_ms);
        Ok((restored, replayed))
    }

    /// Loads the saved alert states of what this evaluator owns into the rule engines.
    fn restore_states(&mut self) -> Result<usize, crate::store::Error> {
        let owned = self.share.as_ref().map(|s| s.owned.clone());
        let mut by_tenant: BTreeMap<String, Vec<SavedAlert>> = BTreeMap::new();
        for (tenant, json) in self.store.load_alert_states(owned.as_deref())? {
            match serde_json::from_str::<Vec<SavedAlert>>(&json) {
                Ok(saved) => by_tenant.entry(tenant).or_default().extend(saved),
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "Saved alert states do not load; starting without them.")
                }
            }
        }
        let mut restored = 0;
        for (tenant, saved) in by_tenant {
            let t = self.tenant(&tenant);
            restored += t.engine.restore_states(saved.clone());
            t.saved = saved;
        }
        Ok(restored)
    }

    /// Cluster mode: drops what this evaluator held and takes `partitions` over with
    /// their saved alert states; their series come next from the topic's replay.
    fn assign(&mut self, partitions: Vec<i32>, count: i32) {
        // What changed since the last evaluation is kept for the next owner.
        self.save_states(now_ms());
        self.tenants.clear();
        self.derived_at_ms.clear();
        self.transient.clear();
        // The heir sends the facts of its clusters again.
        self.sent_contexts.clear();
        tracing::info!(
            ?partitions,
            "Evaluator takes over its telemetry partitions."
        );
        self.share = Some(Share {
            count,
            owned: partitions,
            tenant_parts: HashMap::new(),
            catching_up: true,
        });
        match tokio::task::block_in_place(|| self.restore_states()) {
            Ok(n) => tracing::info!(alerts = n, "Alert states of the partitions restored."),
            Err(e) => {
                tracing::error!(error = %e, "Could not load the partitions' alert states; their alerts start anew.")
            }
        }
        self.publish(now_ms());
    }

    /// The rows that save `alerts` of `tenant`: one on one node; one per owned
    /// partition that has or had an alert in cluster mode.
    fn state_rows(
        &self,
        tenant: &str,
        before: &[SavedAlert],
        now: &[SavedAlert],
    ) -> Vec<(String, i32, String)> {
        let Some(share) = &self.share else {
            return vec![(
                tenant.to_string(),
                -1,
                serde_json::to_string(now).unwrap_or_default(),
            )];
        };
        let part = |a: &SavedAlert| match a.labels.get("cluster") {
            Some(c) => crate::cluster::config::partition_of(tenant, c, share.count),
            None => share
                .tenant_parts
                .get(tenant)
                .and_then(|p| p.first().copied())
                .unwrap_or_else(|| crate::cluster::config::partition_of(tenant, "", share.count)),
        };
        let mut rows: BTreeMap<i32, Vec<&SavedAlert>> = BTreeMap::new();
        for a in before {
            rows.entry(part(a)).or_default();
        }
        for a in now {
            rows.entry(part(a)).or_default().push(a);
        }
        rows.into_iter()
            // Alerts of a partition owned elsewhere now are its owner's to save.
            .filter(|(p, _)| share.owned.contains(p))
            .map(|(p, alerts)| {
                (
                    tenant.to_string(),
                    p,
                    serde_json::to_string(&alerts).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Saves the alert states that changed since the last save, with their transitions.
    fn save_states(&mut self, now_ms: i64) {
        let mut states = Vec::new();
        let mut transitions = Vec::new();
        let mut updated = Vec::new();
        for (name, t) in &self.tenants {
            let now = t.engine.saved_states();
            if now == t.saved {
                continue;
            }
            let before: HashMap<(&str, &str, &BTreeMap<String, String>), &str> = t
                .saved
                .iter()
                .map(|a| {
                    (
                        (a.group.as_str(), a.rule.as_str(), &a.labels),
                        a.state.as_str(),
                    )
                })
                .collect();
            for a in &now {
                if before.get(&(a.group.as_str(), a.rule.as_str(), &a.labels))
                    != Some(&a.state.as_str())
                {
                    transitions.push(crate::store::HistoryEntry {
                        tenant: name.clone(),
                        fingerprint: foresight_proto::v1::Alert::fingerprint_of(&a.labels),
                        alertname: a.rule.clone(),
                        labels: a.labels.clone(),
                        state: a.state.clone(),
                        at_ms: now_ms,
                    });
                }
            }
            states.extend(self.state_rows(name, &t.saved, &now));
            updated.push((name.clone(), now));
        }
        if states.is_empty() {
            return;
        }
        match tokio::task::block_in_place(|| {
            self.store.store_alert_states(&states, &transitions, now_ms)
        }) {
            Ok(()) => {
                for (name, now) in updated {
                    if let Some(t) = self.tenants.get_mut(&name) {
                        t.saved = now;
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "Could not save alert states; will retry."),
        }
    }

    /// Deletes batches, alert history and finished notifications past their retention,
    /// and the console's expired sessions.
    fn prune(&self, now_ms: i64) {
        let store = self.store.clone();
        let (batches, history) = (
            now_ms - self.batch_retention_ms,
            now_ms - self.history_retention_ms,
        );
        match tokio::task::block_in_place(|| store.prune_before(batches, history, now_ms)) {
            Ok((0, 0, 0)) => {}
            Ok((b, h, o)) => tracing::info!(
                batches = b,
                history = h,
                notifications = o,
                "Pruned what is past its retention."
            ),
            Err(e) => tracing::warn!(error = %e, "Could not prune the store."),
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
            let mut groups_of: std::collections::HashMap<&str, Vec<AlertGroupRef>> =
                std::collections::HashMap::new();
            for (_, receiver, labels, alerts) in grouper.groups() {
                for a in &alerts {
                    groups_of
                        .entry(a.fingerprint.as_str())
                        .or_default()
                        .push(AlertGroupRef {
                            receiver: receiver.to_string(),
                            labels: labels.clone(),
                        });
                }
            }
            for (_, _, _, alerts) in grouper.groups() {
                for a in alerts {
                    if seen.insert(a.fingerprint.clone()) {
                        list.push(AlertView {
                            receivers: grouper.receivers_of(&a.labels),
                            inhibited: inhibited.contains(&a.fingerprint),
                            groups: groups_of.remove(a.fingerprint.as_str()).unwrap_or_default(),
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
        if let Some(bus) = &self.alert_bus {
            bus.send(&crate::cluster::alerts::AlertRecord::Alerts {
                tenant: tenant.to_string(),
                at_ms: now,
                alerts,
            });
            return;
        }
        if let Err(e) = tokio::task::block_in_place(|| self.dispatcher.insert(tenant, alerts, now))
        {
            tracing::error!(error = %e, "Could not read the notification log; alerts dropped.");
        }
        self.publish(now);
    }

    fn tenant(&mut self, name: &str) -> &mut Tenant {
        if !self.tenants.contains_key(name) {
            let engine = RuleEngine::new(self.groups.clone(), self.external_labels.clone());
            let retention = self.series_retention_ms();
            self.tenants.insert(
                name.to_string(),
                Tenant {
                    series: SeriesStore::new(retention),
                    engine,
                    saved: Vec::new(),
                },
            );
        }
        self.tenants.get_mut(name).expect("inserted above")
    }

    /// Adds a batch's samples to its tenant's store, with the series its cluster
    /// snapshot stands for.
    pub fn ingest(&mut self, accepted: Accepted) {
        let batch = accepted.batch;
        let cluster = cluster_of(&batch);
        if let Some(share) = &mut self.share {
            share
                .tenant_parts
                .entry(accepted.tenant.clone())
                .or_default()
                .insert(crate::cluster::config::partition_of(
                    &accepted.tenant,
                    cluster.as_deref().unwrap_or(""),
                    share.count,
                ));
        }
        if let Some(name) = &cluster {
            let facts = self.note_cluster(&accepted.tenant, name, &batch);
            if batch.snapshot.is_some()
                && let Some(facts) = facts
            {
                if let Some(bus) = &self.alert_bus {
                    let key = (accepted.tenant.clone(), name.clone());
                    if self.sent_contexts.get(&key) != Some(&facts) {
                        bus.send(&crate::cluster::alerts::AlertRecord::Context {
                            tenant: accepted.tenant.clone(),
                            cluster: name.clone(),
                            facts: facts.clone(),
                        });
                        self.sent_contexts.insert(key, facts);
                    }
                } else {
                    self.dispatcher
                        .set_cluster_context(&accepted.tenant, name, facts);
                }
            }
        }
        let resource_labels = batch
            .resource
            .as_ref()
            .map(|r| r.labels.clone())
            .unwrap_or_default();
        let mut derived = Vec::new();
        let mut derived_ts = 0;
        // One agent runs beside each broker, and each sends the whole cluster's
        // snapshot: the series of at most one snapshot per cluster and half evaluation
        // interval are derived, the first to arrive, so that three agents neither
        // triple the samples of a series nor write into each other's past. (Rules read
        // a cluster's series once per interval; more snapshots would say nothing new.)
        let snapshot = batch.snapshot.as_ref().filter(|snap| {
            let Some(name) = &cluster else { return true };
            let taken = snap.collected_at_ms;
            let key = (accepted.tenant.clone(), name.clone());
            let min_gap = (self.interval.as_millis() / 2) as i64;
            match self.derived_at_ms.get(&key) {
                Some(last) if taken < last + min_gap => false,
                _ => {
                    self.derived_at_ms.insert(key, taken);
                    true
                }
            }
        });
        if let Some(snap) = snapshot {
            let mut base: BTreeMap<String, String> = resource_labels.clone().into_iter().collect();
            base.insert("cluster".to_string(), cluster.clone().unwrap_or_default());
            let excluded: std::collections::HashSet<&str> =
                batch.excluded_metrics.iter().map(String::as_str).collect();
            let ts = if snap.collected_at_ms > 0 {
                snap.collected_at_ms
            } else {
                batch.created_at_ms
            };
            derived = derive::snapshot_series(snap, &base, ts, &|name| !excluded.contains(name));
            derived_ts = ts;
        }
        let transient_key = (accepted.tenant.clone(), cluster.clone().unwrap_or_default());
        let derived_from = batch.series.len();
        let mut now_transient = std::collections::HashSet::new();
        let tenant = self.tenant(&accepted.tenant);
        for (i, s) in batch.series.into_iter().chain(derived).enumerate() {
            let transient = i >= derived_from
                && derive::ENDS_WHEN_ABSENT
                    .iter()
                    .any(|prefix| s.name.starts_with(prefix));
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
            if transient {
                now_transient.insert(labels);
            }
        }
        if derived_ts > 0 {
            let before = self
                .transient
                .insert(transient_key, now_transient.clone())
                .unwrap_or_default();
            let tenant = self.tenant(&accepted.tenant);
            for gone in before.difference(&now_transient) {
                tenant.series.append(
                    gone,
                    derived_ts,
                    f64::from_bits(foresight_proto::STALE_NAN_BITS),
                );
            }
        }
    }

    /// Updates the tenant's cluster facts from a batch.
    /// Updates what the tenant's cluster `name` is known by from a batch; returns the
    /// cluster's facts for notifications.
    fn note_cluster(
        &self,
        tenant: &str,
        name: &str,
        batch: &TelemetryBatch,
    ) -> Option<BTreeMap<String, String>> {
        let r = batch.resource.as_ref()?;
        let mut all = self.clusters.write().ok()?;

        let info = all
            .entry(tenant.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default();
        info.name = name.to_string();
        let seen = if batch.created_at_ms > 0 {
            batch.created_at_ms
        } else {
            now_ms()
        };
        info.last_seen_ms = info.last_seen_ms.max(seen);
        if !r.cluster_id.is_empty() {
            info.cluster_id = r.cluster_id.clone();
        }
        if !r.agent_version.is_empty() {
            info.agent_versions.insert(r.agent_version.clone());
        }
        if let Some(snap) = &batch.snapshot
            && snap.collected_at_ms >= info.snapshot_at_ms
        {
            let live: std::collections::HashSet<i32> = snap.brokers.iter().map(|b| b.id).collect();
            info.snapshot_at_ms = snap.collected_at_ms;
            if !snap.cluster_id.is_empty() {
                info.cluster_id = snap.cluster_id.clone();
            }
            info.brokers = snap
                .brokers
                .iter()
                .map(|b| BrokerInfo {
                    id: b.id,
                    host: b.host.clone(),
                    port: b.port,
                    rack: b.rack.clone(),
                })
                .collect();
            info.controller_id = snap.controller_id;
            info.topics = snap.topics.len();
            info.partitions = snap.topics.iter().map(|t| t.partitions.len()).sum();
            info.offline_partitions = snap
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.leader < 0 || !live.contains(&p.leader))
                .count();
            info.under_replicated_partitions = snap
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.isr.len() < p.replicas.len())
                .count();
            info.snapshot = Some(Arc::new(snap.clone()));
            if !snap.broker_facts.is_empty() {
                let f = &snap.broker_facts;
                info.versions = f
                    .iter()
                    .filter_map(|b| {
                        Some((b.id, foresight_proto::facts::broker_release(b)?.to_string()))
                    })
                    .collect();
                info.api_keys = f.iter().map(|b| (b.id, b.api_versions.len())).collect();
                info.broker_configs = f.iter().map(|b| (b.id, b.configs.clone())).collect();
                info.risky_configs = foresight_proto::facts::risky(f);
                info.config_drift = foresight_proto::facts::drift(f);
                info.features = snap.finalized_features.clone();
            }
            if !snap.log_dirs.is_empty() {
                let mut topics: HashMap<&str, i64> = HashMap::new();
                info.log_dirs = snap
                    .log_dirs
                    .iter()
                    .map(|d| {
                        for r in d.replicas.iter().filter(|r| !r.is_future) {
                            *topics.entry(r.topic.as_str()).or_default() += r.size_bytes;
                        }
                        LogDirInfo {
                            broker: d.broker,
                            path: d.path.clone(),
                            total_bytes: d.total_bytes,
                            usable_bytes: d.usable_bytes,
                            replica_bytes: d.replicas.iter().map(|r| r.size_bytes).sum(),
                            replicas: d.replicas.len(),
                            error: if d.error_code == 0 {
                                String::new()
                            } else {
                                kafka_error_name(d.error_code)
                            },
                        }
                    })
                    .collect();
                let mut largest: Vec<(String, i64)> = topics
                    .into_iter()
                    .map(|(t, b)| (t.to_string(), b))
                    .collect();
                largest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                largest.truncate(TOP_TOPICS);
                info.largest_topics = largest;
            }
        }
        Some(info.facts())
    }

    /// Answers a query on this task, which owns the series.
    fn query(&self, q: Query) {
        let t = self.tenants.get(&q.tenant).map(|t| (&t.series, &t.engine));
        let run = q.run;
        // Queries only read: should one panic, the series are intact and the evaluator
        // goes on (the caller sees its answer channel closed).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || run(t))).is_err() {
            tracing::error!(tenant = %q.tenant, "A query panicked; the evaluator goes on.");
        }
    }

    /// Evaluates every tenant's rules at `ts_ms` and enqueues the notifications due.
    pub fn evaluate(&mut self, ts_ms: i64) {
        if self
            .share
            .as_ref()
            .is_some_and(|s| s.catching_up || s.owned.is_empty())
        {
            // Half-replayed windows would resolve and fire what they should not.
            self.publish(ts_ms);
            return;
        }
        let mut alerts = Vec::new();
        for (name, t) in &mut self.tenants {
            let result = t.engine.evaluate(&mut t.series, ts_ms, name);
            for e in result.errors {
                tracing::warn!(tenant = %name, error = %e, "Rule evaluation failed.");
            }
            t.series.prune(ts_ms);
            alerts.extend(result.alerts);
        }
        self.save_states(ts_ms);
        if let Some(bus) = &self.alert_bus {
            for (tenant, list) in self.dispatcher.group_alerts(&alerts, ts_ms) {
                bus.send(&crate::cluster::alerts::AlertRecord::Alerts {
                    tenant: tenant.to_string(),
                    at_ms: ts_ms,
                    alerts: list,
                });
            }
            self.publish(ts_ms);
            return;
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
    ///
    /// Reads (`queries`) have their own channel and are answered only when no batch,
    /// evaluation or group flush is waiting, so that a burst of dashboard queries never
    /// fills the batches' queue and refuses an agent.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        mut queries: mpsc::Receiver<Query>,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pruner = tokio::time::interval(Duration::from_secs(3600));
        pruner.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Group timers (group_wait, group_interval) fire on time, not only at the
            // next evaluation (at least 50 ms apart, should the store be failing).
            let flush_in = self
                .dispatcher
                .next_due_ms()
                .map(|t| Duration::from_millis((t - now_ms()).max(50) as u64));
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.drain(&mut rx);
                    return;
                }
                msg = rx.recv() => match msg {
                    Some(Input::Batch(a)) => self.ingest(*a),
                    Some(Input::Alerts { tenant, alerts }) => self.alerts(&tenant, alerts),
                    Some(Input::Assigned { partitions, count }) => self.assign(partitions, count),
                    Some(Input::CaughtUp) => self.caught_up(),
                    // The listener is gone (shutdown): the same last flush.
                    None => {
                        self.drain(&mut rx);
                        return;
                    }
                },
                _ = ticker.tick() => self.evaluate(now_ms()),
                _ = pruner.tick() => self.prune(now_ms()),
                _ = async {
                    match flush_in {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => self.flush(now_ms()),
                Some(q) = queries.recv() => self.query(q),
            }
        }
    }

    /// At shutdown: takes in what was already acknowledged, flushes the groups that are
    /// due, and saves the alert states, so that the outbox worker's last pass sends them.
    fn drain(&mut self, rx: &mut mpsc::Receiver<Input>) {
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            match msg {
                Input::Batch(a) => self.ingest(*a),
                Input::Alerts { tenant, alerts } => self.alerts(&tenant, alerts),
                Input::Assigned { partitions, count } => self.assign(partitions, count),
                Input::CaughtUp => self.caught_up(),
            }
        }
        let now = now_ms();
        self.flush(now);
        self.save_states(now);
    }

    fn caught_up(&mut self) {
        if let Some(share) = &mut self.share
            && share.catching_up
        {
            share.catching_up = false;
            tracing::info!(partitions = ?share.owned, "Evaluator caught up with its partitions; rules run.");
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
