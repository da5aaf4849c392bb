//! The Foresight agent as a library: collect a Kafka cluster's metadata and offsets,
//! turn them into series, and ship them to the ingest service. Never reads a record.
//!
//! - [`config`]: the agent's YAML configuration; [`check`] tries it.
//! - [`events`]: what changed between two snapshots.
//! - [`spool`]: the disk spool batches wait in.
//! - [`collector`]: sources (the Kafka protocol, the host's log dirs).
//! - [`protocol`]: the second Kafka client, for the admin RPCs librdkafka lacks.
//! - [`series`]: snapshot to series, with kafka_exporter's names.
//! - [`shipper`]: HTTPS upload with retries.
//! - [`tls`]: trust for the upload: system roots, a CA file or a pinned certificate.
//!
//! [`Reporter`] ties them together; a service can embed it in its own runtime.
#![warn(missing_docs)]

pub mod check;
pub mod collector;
pub mod config;
pub mod events;
pub mod librdkafka_stats;
pub mod privacy;
pub mod protocol;
pub mod series;
pub mod shipper;
pub mod spool;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foresight_proto::v1::{Resource, Series, TelemetryBatch};
use tokio_util::sync::CancellationToken;

pub use config::AgentConfig;
/// The wire types, for embedders adding series of their own.
pub use foresight_proto as proto;
pub use foresight_tls as tls;
pub use shipper::{ShipError, Shipper};

/// Errors at the crate's edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has problems; all are listed.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The Kafka cluster could not be read.
    #[error("kafka: {0}")]
    Kafka(String),
    /// TLS could not be set up.
    #[error("tls: {0}")]
    Tls(String),
    /// The spool directory cannot be used.
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}

impl From<foresight_tls::TlsError> for Error {
    fn from(e: foresight_tls::TlsError) -> Self {
        Error::Tls(e.0)
    }
}

/// Batches not yet acknowledged by the ingest, oldest first.
enum Pending {
    Memory(VecDeque<TelemetryBatch>, u64),
    Disk(spool::Spool),
}

impl Pending {
    fn push(&mut self, batch: TelemetryBatch) -> Result<(), spool::SpoolError> {
        match self {
            Pending::Memory(q, dropped) => {
                if q.len() >= MAX_PENDING_BATCHES {
                    q.pop_front();
                    *dropped += 1;
                }
                q.push_back(batch);
                Ok(())
            }
            Pending::Disk(s) => s.push(&batch),
        }
    }

    fn front(&mut self) -> Option<TelemetryBatch> {
        match self {
            Pending::Memory(q, _) => q.front().cloned(),
            Pending::Disk(s) => s.front(),
        }
    }

    fn pop_front(&mut self, delivered: bool) {
        match self {
            Pending::Memory(q, dropped) => {
                q.pop_front();
                *dropped += u64::from(!delivered);
            }
            Pending::Disk(s) => {
                s.pop_front();
                if !delivered {
                    s.count_dropped();
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Pending::Memory(q, _) => q.len(),
            Pending::Disk(s) => s.len(),
        }
    }

    fn dropped(&self) -> u64 {
        match self {
            Pending::Memory(_, d) => *d,
            Pending::Disk(s) => s.dropped(),
        }
    }
}

/// A scraped series' identity: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey(String, BTreeMap<String, String>);

impl SeriesKey {
    fn of(s: &Series) -> Self {
        SeriesKey(
            s.name.clone(),
            s.labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect(),
        )
    }
}

/// Batches kept in memory while the ingest is unreachable; the oldest go first.
const MAX_PENDING_BATCHES: usize = 1_000;

use foresight_proto::now_ms;

/// A running agent: collects on an interval and ships in order.
pub struct Reporter {
    config: AgentConfig,
    collector: Arc<collector::kafka::KafkaCollector>,
    admin: collector::admin::AdminCollector,
    shipper: Option<Shipper>,
    instance_id: String,
    sequence: AtomicU64,
    extra: Mutex<Vec<Series>>,
    /// For jmx_exporter scrapes (plain HTTP on the broker hosts, or HTTPS with the
    /// system's roots).
    scrape_client: Option<reqwest::Client>,
    privacy: privacy::Privacy,
    /// Per scrape endpoint, the series (name and labels) its last scrape gave: those
    /// missing from the next scrape, or all of them when it fails, get Prometheus'
    /// staleness marker, as a Prometheus server does for a target that goes away.
    /// Without it a killed controller's last `ActiveControllerCount` of 1 would stay
    /// visible beside its successor's for the 5-minute lookback.
    scraped: Mutex<BTreeMap<String, std::collections::BTreeSet<SeriesKey>>>,
    /// The previous snapshot, to derive events from.
    last: Mutex<Option<foresight_proto::v1::ClusterSnapshot>>,
    /// Per broker, the DeleteRecords requests its request metrics counted last cycle.
    delete_records: Mutex<BTreeMap<String, f64>>,
    pending: tokio::sync::Mutex<Pending>,
    stats: Stats,
}

/// The agent's own counters, shipped as `foresight_agent_*` series.
#[derive(Default)]
struct Stats {
    sent: AtomicU64,
    failed: AtomicU64,
}

impl Reporter {
    /// A reporter for `config`. Without an `ingest.url` it can collect but not ship.
    ///
    /// # Errors
    /// [`Error`] for an invalid configuration, API key source or TLS setting.
    pub fn new(config: AgentConfig) -> Result<Self, Error> {
        config.validate().map_err(Error::Config)?;
        let shipper = if config.ingest.url.is_empty() {
            None
        } else {
            let tls = tls::client_config(
                config.ingest.ca_file.as_deref(),
                config.ingest.pinned_sha256.as_deref(),
            )?;
            Some(Shipper::new(
                &config.ingest.url,
                config.api_key()?,
                tls,
                Duration::from_secs(config.ingest.timeout_secs),
                config.ingest.max_attempts,
            )?)
        };
        let collector = Arc::new(collector::kafka::KafkaCollector::new(&config.kafka)?);
        let pending = match &config.spool.dir {
            Some(dir) => Pending::Disk(spool::Spool::open(dir, config.spool.max_bytes)?),
            None => Pending::Memory(VecDeque::new(), 0),
        };
        let instance_id: String = (0..16)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect();
        let privacy = privacy::Privacy::new(&config.privacy).map_err(Error::Config)?;
        // Loading the system's roots costs a start-up read: only with endpoints to scrape.
        let scrape_client = if config.jmx_exporter.is_empty()
            && config.controller_jmx_exporter.is_empty()
            && config.jolokia.endpoints.is_empty()
            && config.jolokia.controller_endpoints.is_empty()
        {
            None
        } else {
            Some(
                reqwest::Client::builder()
                    .use_preconfigured_tls(tls::client_config(None, None)?)
                    .build()
                    .map_err(|e| Error::Tls(e.to_string()))?,
            )
        };
        let admin = collector::admin::AdminCollector::new(&config.kafka);
        Ok(Reporter {
            admin,
            config,
            collector,
            shipper,
            instance_id,
            sequence: AtomicU64::new(0),
            extra: Mutex::new(Vec::new()),
            last: Mutex::new(None),
            delete_records: Mutex::new(BTreeMap::new()),
            scraped: Mutex::new(BTreeMap::new()),
            privacy,
            scrape_client,
            pending: tokio::sync::Mutex::new(pending),
            stats: Stats::default(),
        })
    }

    /// The second Kafka client (admin RPCs librdkafka lacks), unless its settings were
    /// refused.
    pub fn protocol_client(&self) -> Option<&protocol::Client> {
        self.admin.client()
    }

    /// This process's agent instance id, which scopes batch sequence numbers.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Adds series of the embedding service's own to the next batch.
    pub fn add_series(&self, series: impl IntoIterator<Item = Series>) {
        self.extra
            .lock()
            .expect("extra series lock is never poisoned")
            .extend(series);
    }

    /// Adds the series of a librdkafka statistics document to the next batch; call it
    /// from an embedding service's `ClientContext::stats_raw` (set
    /// `statistics.interval.ms` on its clients). Labels: the agent's, `cluster`,
    /// `client_id`, `client_type`, and `broker` or `topic`/`partition` where they apply.
    ///
    /// # Errors
    /// The JSON error when `json` is not a statistics document; nothing is added.
    pub fn record_librdkafka_stats(&self, json: &str) -> Result<(), serde_json::Error> {
        let mut base = self.config.labels.clone();
        if let Some(c) = &self.config.kafka.cluster_name {
            base.insert("cluster".into(), c.clone());
        }
        let series = librdkafka_stats::series(json, &base, now_ms())?;
        self.add_series(series);
        Ok(())
    }

    /// Collects once and builds the next batch.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the cluster cannot be read.
    pub async fn collect_batch(&self) -> Result<TelemetryBatch, Error> {
        let started = Instant::now();
        let ts = now_ms();
        let collector = self.collector.clone();
        let mut snapshot = tokio::task::spawn_blocking(move || collector.collect(ts))
            .await
            .map_err(|e| Error::Kafka(format!("collector task failed: {e}")))??;
        // Before names are hashed: the requests need the real ones.
        let admin = if self.config.kafka.admin_requests {
            self.admin.enrich(&mut snapshot, ts).await
        } else {
            Default::default()
        };
        let admin_parts = admin.parts;
        self.privacy.snapshot(&mut snapshot);
        let excluded_metrics = self.privacy.minimize(&mut snapshot);
        let mut base = self.config.labels.clone();
        let cluster = self
            .config
            .kafka
            .cluster_name
            .clone()
            .unwrap_or_else(|| snapshot.cluster_id.clone());
        base.insert("cluster".into(), cluster.clone());
        let mut series = Vec::new();
        let (spooled, dropped) = {
            let p = self.pending.lock().await;
            (p.len() as f64, p.dropped() as f64)
        };
        let host = self.config.host.clone().unwrap_or_else(host_name);
        // The agent's own series name the host it runs on, so that the agents of one
        // cluster (one per broker host) do not write over each other's.
        let mut own_labels = base.clone();
        own_labels.insert("instance".into(), host.clone());
        let own = |name: &str, value: f64| series::single(name, own_labels.clone(), ts, value);
        let mut scrape_failures = 0u32;
        let timeout = Duration::from_millis(self.config.kafka.request_timeout_ms);
        let mbeans: Vec<String> = if self.config.jolokia.mbeans.is_empty() {
            collector::jolokia::DEFAULT_MBEANS
                .iter()
                .map(|m| (*m).to_string())
                .collect()
        } else {
            self.config.jolokia.mbeans.clone()
        };
        // (node id, URL, Jolokia rather than the exporter, the node's role)
        let c = &self.config;
        let endpoints = [
            (&c.jmx_exporter, false, "broker"),
            (&c.controller_jmx_exporter, false, "controller"),
            (&c.jolokia.endpoints, true, "broker"),
            (&c.jolokia.controller_endpoints, true, "controller"),
        ]
        .into_iter()
        .flat_map(|(map, jolokia, role)| {
            map.iter()
                .map(move |(id, u)| (*id, u.clone(), jolokia, role))
        })
        .collect::<Vec<_>>();
        for (node, url, jolokia, role) in endpoints {
            let mut labels = base.clone();
            labels.insert(role.into(), node.to_string());
            labels.insert("role".into(), role.into());
            // Present whenever endpoints are configured (see `new`).
            let Some(client) = &self.scrape_client else {
                continue;
            };
            let scraped = if jolokia {
                collector::jolokia::read(client, &url, &mbeans, timeout, &labels, ts).await
            } else {
                collector::jmx::scrape(client, &url, timeout, &labels, ts).await
            };
            let now_seen = match scraped {
                Ok(mut s) => {
                    self.privacy.hash_labels(&mut s);
                    let keys = s.iter().map(SeriesKey::of).collect();
                    series.extend(s);
                    keys
                }
                Err(e) => {
                    tracing::warn!(error = %e, "JMX scrape failed; its series marked stale.");
                    scrape_failures += 1;
                    std::collections::BTreeSet::new()
                }
            };
            let before = self
                .scraped
                .lock()
                .expect("scrape memory lock is never poisoned")
                .insert(url.clone(), now_seen.clone())
                .unwrap_or_default();
            for gone in before.difference(&now_seen) {
                series.push(series::single(
                    gone.0.clone(),
                    gone.1.clone(),
                    ts,
                    f64::from_bits(foresight_proto::STALE_NAN_BITS),
                ));
            }
        }
        for p in &admin_parts {
            let mut l = own_labels.clone();
            l.insert("part".into(), p.part.into());
            series.push(series::single(
                "foresight_agent_protocol_up",
                l.clone(),
                ts,
                f64::from(u8::from(p.error.is_none())),
            ));
            series.push(series::single(
                "foresight_agent_protocol_duration_seconds",
                l,
                ts,
                p.seconds,
            ));
        }
        series.push(own(
            "foresight_agent_scrape_failures",
            f64::from(scrape_failures),
        ));
        // The brokers' own DescribeLogDirs answers, when the admin requests got them,
        // stand for the same dirs: the host's view would be a second copy of the series.
        // A dir its broker took offline has no sizes in the answer: the host still
        // tells how full it is (its readability is the broker's to say).
        let described: BTreeMap<(i32, &str), bool> = snapshot
            .log_dirs
            .iter()
            .map(|d| ((d.broker, d.path.as_str()), d.total_bytes >= 0))
            .collect();
        for d in collector::host::log_dirs(&self.config.log_dirs) {
            let by_broker = self
                .config
                .broker_id
                .and_then(|b| described.get(&(b, d.path.trim_end_matches('/'))).copied());
            if by_broker == Some(true) {
                continue;
            }
            let mut labels = base.clone();
            if let Some(b) = self.config.broker_id {
                labels.insert("broker".into(), b.to_string());
            }
            labels.insert("log_dir".into(), d.path.clone());
            let host_series =
                |name: &str, value: f64| series::single(name, labels.clone(), ts, value);
            if by_broker.is_none() {
                series.push(host_series(
                    "kafka_log_dir_readable",
                    f64::from(u8::from(d.readable)),
                ));
            }
            if let (Some(free), Some(total)) = (d.free_bytes, d.total_bytes) {
                series.push(host_series("kafka_log_dir_free_bytes", free as f64));
                series.push(host_series("kafka_log_dir_total_bytes", total as f64));
            }
        }
        series.push(own(
            "foresight_agent_collect_duration_seconds",
            started.elapsed().as_secs_f64(),
        ));
        series.push(own(
            "foresight_agent_batches_sent_total",
            self.stats.sent.load(Ordering::Relaxed) as f64,
        ));
        series.push(own(
            "foresight_agent_batches_failed_total",
            self.stats.failed.load(Ordering::Relaxed) as f64,
        ));
        series.push(own("foresight_agent_batches_spooled", spooled));
        series.push(own("foresight_agent_batches_dropped_total", dropped));
        let mut extra = std::mem::take(
            &mut *self
                .extra
                .lock()
                .expect("extra series lock is never poisoned"),
        );
        self.privacy.hash_labels(&mut extra);
        series.append(&mut extra);
        let mut lost_series = Vec::new();
        let mut durability_events = Vec::new();
        for l in &admin.losses {
            let mut labels = base.clone();
            let topic = self.privacy.hash(&l.topic);
            let pairs = [
                ("topic", topic.clone()),
                ("partition", l.partition.to_string()),
                ("previous_epoch", l.previous_epoch.to_string()),
                ("epoch", l.epoch.to_string()),
                ("previous_leader", l.previous_leader.to_string()),
                ("leader", l.leader.to_string()),
                ("clean", l.clean.to_string()),
                ("check", l.check.to_string()),
            ];
            for (k, v) in &pairs {
                labels.insert((*k).into(), v.clone());
            }
            lost_series.push(series::single(
                collector::durability::METRIC_NAME,
                labels,
                ts,
                l.offsets_lost as f64,
            ));
            let mut ev: BTreeMap<String, String> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect();
            ev.insert("offsets_lost".into(), l.offsets_lost.to_string());
            tracing::warn!(topic = %topic, partition = l.partition, offsets_lost = l.offsets_lost, clean = l.clean, check = l.check, "Durability: acknowledged records lost, or an unclean election.");
            let message = if l.check == collector::durability::check::HIGH_WATERMARK_REGRESSED {
                format!(
                    "{topic}-{}: the high watermark stayed at {} under leader {} (epoch {}), {} below the {} seen under epoch {}",
                    l.partition,
                    l.end_offset,
                    l.leader,
                    l.epoch,
                    l.offsets_lost,
                    l.high_watermark_seen,
                    l.previous_epoch
                )
            } else {
                format!(
                    "{topic}-{}: leader {} (epoch {}) replaced leader {} (epoch {}){}; the new leader ends epoch {} at offset {}, {} below the high watermark {} seen under it",
                    l.partition,
                    l.leader,
                    l.epoch,
                    l.previous_leader,
                    l.previous_epoch,
                    if l.clean { "" } else { " from outside the ISR" },
                    l.previous_epoch,
                    l.end_offset,
                    l.offsets_lost,
                    l.high_watermark_seen
                )
            };
            durability_events.push(foresight_proto::v1::Event {
                timestamp_ms: ts,
                kind: foresight_proto::v1::EventKind::Durability as i32,
                labels: ev.into_iter().collect(),
                message,
            });
        }
        series.append(&mut lost_series);
        let deleted_on = self.delete_records_seen(&series);
        // (hashed topic, partition) -> what explains its log start offset's move.
        let mut explained: BTreeMap<(String, String), &str> = BTreeMap::new();
        for m in &admin.moves {
            let topic = self.privacy.hash(&m.topic);
            let why = m.explanation.or_else(|| {
                deleted_on
                    .contains(&m.leader.to_string())
                    .then_some("delete_records")
            });
            if why.is_none() {
                tracing::warn!(topic = %topic, partition = m.partition, from = m.from, to = m.to, "Durability: a log start offset moved and neither retention nor DeleteRecords explains it.");
                let mut labels = base.clone();
                labels.insert("topic".into(), topic.clone());
                labels.insert("partition".into(), m.partition.to_string());
                series.push(series::single(
                    collector::durability::UNEXPLAINED_METRIC_NAME,
                    labels,
                    ts,
                    (m.to - m.from) as f64,
                ));
            }
            explained.insert((topic, m.partition.to_string()), why.unwrap_or("none"));
        }
        let events = {
            let mut last = self.last.lock().expect("snapshot lock is never poisoned");
            if let Some(prev) = last.as_ref() {
                series.extend(series::lag_seconds(prev, &snapshot, &base, ts));
            }
            let events = last
                .as_ref()
                .map(|prev| events::diff(prev, &snapshot))
                .unwrap_or_default();
            *last = Some(snapshot.clone());
            let mut events = events;
            for e in &mut events {
                if e.kind() != foresight_proto::v1::EventKind::LogStartOffsetMove {
                    continue;
                }
                let key = (
                    e.labels.get("topic").cloned().unwrap_or_default(),
                    e.labels.get("partition").cloned().unwrap_or_default(),
                );
                if let Some(why) = explained.get(&key) {
                    e.labels.insert("explanation".into(), (*why).to_string());
                    e.message.push_str(&format!(" (explained by: {why})"));
                }
            }
            events.append(&mut durability_events);
            events
        };
        self.privacy.filter(&mut series);
        Ok(TelemetryBatch {
            resource: Some(Resource {
                cluster_id: snapshot.cluster_id.clone(),
                broker_id: self.config.broker_id,
                host,
                agent_version: env!("CARGO_PKG_VERSION").into(),
                agent_instance_id: self.instance_id.clone(),
                cluster_name: cluster,
                labels: self
                    .config
                    .labels
                    .clone()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
            }),
            sequence: self.sequence.fetch_add(1, Ordering::SeqCst) + 1,
            series,
            events,
            snapshot: Some(snapshot),
            created_at_ms: ts,
            excluded_metrics,
        })
    }

    /// The brokers (their `broker` label) whose scraped request metrics count more
    /// DeleteRecords requests than at the last cycle: what explains a log start offset
    /// that moved without retention.
    fn delete_records_seen(&self, series: &[Series]) -> std::collections::BTreeSet<String> {
        let mut now: BTreeMap<String, f64> = BTreeMap::new();
        for s in series {
            if !s.name.ends_with("requestmetrics_requests_total") {
                continue;
            }
            let Some(broker) = s.labels.iter().find(|l| l.name == "broker") else {
                continue;
            };
            // A broker's first DeleteRecords creates its meter: a broker whose request
            // metrics are scraped without one has counted none.
            let count = now.entry(broker.value.clone()).or_default();
            if s.labels
                .iter()
                .any(|l| l.name == "request" && l.value == "DeleteRecords")
                && let Some(v) = s.samples.last().map(|x| x.value).filter(|v| v.is_finite())
            {
                *count += v;
            }
        }
        let mut before = self
            .delete_records
            .lock()
            .expect("delete-records lock is never poisoned");
        let grew = now
            .iter()
            .filter(|(b, v)| before.get(*b).is_some_and(|was| *v > was))
            .map(|(b, _)| b.clone())
            .collect();
        for (b, v) in now {
            before.insert(b, v);
        }
        grew
    }

    /// Sends pending batches oldest first, stopping at the first that cannot be sent.
    /// Returns how many were delivered.
    pub async fn flush(&self) -> usize {
        let Some(shipper) = &self.shipper else {
            return 0;
        };
        let mut pending = self.pending.lock().await;
        let mut sent = 0;
        while let Some(batch) = pending.front() {
            match shipper.send(&batch).await {
                Ok(()) => {
                    pending.pop_front(true);
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                }
                Err(e) if e.is_retryable() => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, pending = pending.len(), "Ingest unavailable; batches kept for the next cycle.");
                    break;
                }
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, sequence = batch.sequence, "Ingest rejected a batch; dropped.");
                    pending.pop_front(false);
                }
            }
        }
        sent
    }

    async fn enqueue(&self, batch: TelemetryBatch) -> Result<(), Error> {
        self.pending.lock().await.push(batch)?;
        Ok(())
    }

    /// Batches waiting for the ingest.
    pub async fn pending(&self) -> usize {
        self.pending.lock().await.len()
    }

    /// Collects and ships once.
    ///
    /// # Errors
    /// [`Error::Kafka`] when the cluster cannot be read.
    pub async fn run_once(&self) -> Result<usize, Error> {
        let batch = self.collect_batch().await?;
        self.enqueue(batch).await?;
        Ok(self.flush().await)
    }

    /// Collects and ships every interval until `cancel` fires.
    ///
    /// # Cancel safety
    /// Stops between cycles; a batch being sent when cancelled stays pending.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_secs(self.config.interval_secs));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let cycle = async {
                if let Err(e) = self.run_once().await {
                    tracing::warn!(error = %e, "Collection failed.");
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = cycle => {}
            }
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
}
