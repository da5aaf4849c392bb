//! The series a cluster snapshot stands for, with kafka_exporter's names where it has one.
//!
//! Agents ship the snapshot, not these series: the ingest derives them on arrival, so
//! that a 10,000-partition cluster costs the agent one compact message instead of
//! 130,000 series, and every source of snapshots gives rules the same model.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::v1::{ClusterSnapshot, Label, Sample, Series};

/// The names derived from a snapshot, besides `kafka_topic_config_<key>` (one per topic
/// config key) and the `lag_seconds` series an agent computes from two snapshots.
pub const METRIC_NAMES: &[&str] = &[
    "kafka_brokers",
    "kafka_broker_info",
    "kafka_topic_partitions",
    "kafka_topic_replication_factor",
    "kafka_topic_partition_leader",
    "kafka_topic_partition_replicas",
    "kafka_topic_partition_in_sync_replica",
    "kafka_topic_partition_under_replicated",
    "kafka_topic_partition_under_min_isr",
    "kafka_topic_partition_offline",
    "kafka_topic_partition_eligible_leader_replicas",
    "kafka_topic_partition_last_known_elr",
    "kafka_topic_partition_replicas_on_missing_brokers",
    "kafka_topic_partition_leader_is_preferred",
    "kafka_partition_high_watermark",
    "kafka_topic_partition_current_offset",
    "kafka_partition_last_stable_offset",
    "kafka_partition_last_stable_offset_lag",
    "kafka_partition_log_start_offset",
    "kafka_topic_partition_oldest_offset",
    "kafka_consumergroup_members",
    "kafka_consumergroup_state",
    "kafka_consumergroup_current_offset",
    "kafka_consumergroup_lag",
    "kafka_consumergroup_lag_sum",
    "kafka_consumergroup_describe_error",
    "kafka_consumergroup_epoch",
    "kafka_consumergroup_assignment_epoch",
    "kafka_consumergroup_member_epoch",
    "kafka_consumergroup_member_reconciled",
    "kafka_consumergroup_member_partitions",
    "kafka_quorum_leader",
    "kafka_quorum_leader_epoch",
    "kafka_quorum_high_watermark",
    "kafka_quorum_voters",
    "kafka_quorum_replica_log_end_offset",
    "kafka_quorum_replica_lag",
    "kafka_quorum_replica_last_fetch_age_seconds",
    "kafka_quorum_replica_last_caught_up_age_seconds",
    "kafka_transaction_open_seconds",
    "kafka_log_dir_total_bytes",
    "kafka_log_dir_free_bytes",
    "kafka_log_dir_readable",
    "kafka_topic_size_bytes",
    "kafka_cluster_feature_level",
    "kafka_cluster_feature_supported_max",
    "kafka_broker_config_risky",
    "kafka_cluster_config_drift",
];

/// Name prefixes of derived series that end when a snapshot no longer has them (the
/// ingest writes a staleness marker): an aborted transaction or a quorum member that
/// left, a risky config or drift fixed, must stop matching rules at once, not after the
/// 5-minute lookback.
pub const ENDS_WHEN_ABSENT: &[&str] = &[
    // A group's state is a label: after a rebalance the old state must end at once,
    // not show beside the new one for five minutes; so must a member that left, or an
    // error that cleared.
    "kafka_consumergroup_state",
    "kafka_consumergroup_member_",
    "kafka_consumergroup_describe_error",
    // A broker's version or rack, and a topic's cleanup policy, are labels too: after
    // the last broker's upgrade the old version must not linger beside the new one.
    "kafka_broker_info",
    "kafka_topic_config_cleanup_policy",
    "kafka_transaction_",
    "kafka_quorum_replica_",
    "kafka_broker_config_risky",
    "kafka_cluster_config_drift",
];

/// The series name of topic config `key`, `kafka_topic_config_min_insync_replicas` for
/// `min.insync.replicas`.
pub fn config_metric_name(key: &str) -> String {
    format!("kafka_topic_config_{}", key.replace('.', "_"))
}

/// The series `snap` stands for at `ts_ms`; `base` labels (`cluster` and the
/// configured ones) go on every series, and only names that `keep` accepts are built.
pub fn snapshot_series(
    snap: &ClusterSnapshot,
    base: &BTreeMap<String, String>,
    ts_ms: i64,
    keep: &dyn Fn(&str) -> bool,
) -> Vec<Series> {
    let mut out = SeriesBuilder::new(base, ts_ms);
    out.keep = Some(keep);
    let live: HashSet<i32> = snap.brokers.iter().map(|b| b.id).collect();
    out.push("kafka_brokers", &[], snap.brokers.len() as f64);
    let releases: HashMap<i32, &str> = snap
        .broker_facts
        .iter()
        .filter_map(|f| Some((f.id, crate::facts::broker_release(f)?)))
        .collect();
    for b in &snap.brokers {
        let id = b.id.to_string();
        let port = b.port.to_string();
        let mut l = vec![("broker", id.as_str()), ("host", &b.host), ("port", &port)];
        if !b.rack.is_empty() {
            l.push(("rack", &b.rack));
        }
        if let Some(r) = releases.get(&b.id) {
            l.push(("version", r));
        }
        out.push("kafka_broker_info", &l, 1.0);
    }
    for t in &snap.topics {
        out.push(
            "kafka_topic_partitions",
            &[("topic", &t.name)],
            t.partitions.len() as f64,
        );
        let rf = t
            .partitions
            .iter()
            .map(|p| p.replicas.len())
            .max()
            .unwrap_or(0);
        out.push(
            "kafka_topic_replication_factor",
            &[("topic", &t.name)],
            rf as f64,
        );
        let min_isr = t
            .configs
            .get("min.insync.replicas")
            .and_then(|v| v.parse::<usize>().ok());
        for (key, value) in &t.configs {
            let name = config_metric_name(key);
            match (key.as_str(), value.as_str()) {
                ("cleanup.policy", policy) => {
                    out.push(&name, &[("topic", &t.name), ("policy", policy)], 1.0)
                }
                (_, "true") => out.push(&name, &[("topic", &t.name)], 1.0),
                (_, "false") => out.push(&name, &[("topic", &t.name)], 0.0),
                (_, v) => {
                    if let Ok(n) = v.parse::<f64>() {
                        out.push(&name, &[("topic", &t.name)], n);
                    }
                }
            }
        }
        for p in &t.partitions {
            let pid = p.id.to_string();
            let l = [("topic", t.name.as_str()), ("partition", pid.as_str())];
            let offline = p.leader < 0 || !live.contains(&p.leader);
            let missing = p.replicas.iter().filter(|r| !live.contains(r)).count();
            out.push("kafka_topic_partition_leader", &l, f64::from(p.leader));
            out.push(
                "kafka_topic_partition_replicas",
                &l,
                p.replicas.len() as f64,
            );
            out.push(
                "kafka_topic_partition_in_sync_replica",
                &l,
                p.isr.len() as f64,
            );
            if p.elr_known {
                out.push(
                    "kafka_topic_partition_eligible_leader_replicas",
                    &l,
                    p.eligible_leader_replicas.len() as f64,
                );
                // Non-empty only for a partition left with no ELR: kept off the
                // other partitions (10,000 series a cycle on a 10,000-partition
                // cluster) since no rule needs its zero.
                if !p.last_known_elr.is_empty() {
                    out.push(
                        "kafka_topic_partition_last_known_elr",
                        &l,
                        p.last_known_elr.len() as f64,
                    );
                }
            }
            out.push(
                "kafka_topic_partition_under_replicated",
                &l,
                f64::from(u8::from(p.isr.len() < p.replicas.len())),
            );
            if let Some(min) = min_isr {
                out.push(
                    "kafka_topic_partition_under_min_isr",
                    &l,
                    f64::from(u8::from(p.isr.len() < min)),
                );
            }
            out.push(
                "kafka_topic_partition_offline",
                &l,
                f64::from(u8::from(offline)),
            );
            out.push(
                "kafka_topic_partition_replicas_on_missing_brokers",
                &l,
                missing as f64,
            );
            out.push(
                "kafka_topic_partition_leader_is_preferred",
                &l,
                f64::from(u8::from(p.replicas.first() == Some(&p.leader))),
            );
            if let Some(hw) = p.high_watermark {
                out.push("kafka_partition_high_watermark", &l, hw as f64);
                out.push("kafka_topic_partition_current_offset", &l, hw as f64);
            }
            if let Some(lso) = p.last_stable_offset {
                out.push("kafka_partition_last_stable_offset", &l, lso as f64);
            }
            if let (Some(hw), Some(lso)) = (p.high_watermark, p.last_stable_offset) {
                out.push(
                    "kafka_partition_last_stable_offset_lag",
                    &l,
                    (hw - lso).max(0) as f64,
                );
            }
            if let Some(start) = p.log_start_offset {
                out.push("kafka_partition_log_start_offset", &l, start as f64);
                out.push("kafka_topic_partition_oldest_offset", &l, start as f64);
            }
        }
    }
    let hw = high_watermarks(snap);
    for g in &snap.groups {
        group_series(g, &hw, &mut out);
    }
    quorum_series(snap, &mut out);
    transaction_series(snap, &mut out);
    log_dir_series(snap, &mut out);
    facts_series(snap, &mut out);
    out.finish()
}

/// A group's series. Its `protocol` (classic, consumer, share, streams) is a label where
/// the agent knew it. A group its coordinator could not describe has its state and
/// `kafka_consumergroup_describe_error`, never a member count it does not know.
fn group_series(
    g: &crate::v1::ConsumerGroup,
    hw: &HashMap<(&str, i32), Ends>,
    out: &mut SeriesBuilder<'_>,
) {
    let mut base: Vec<(&str, &str)> = vec![("consumergroup", g.name.as_str())];
    if !g.protocol.is_empty() {
        base.push(("protocol", g.protocol.as_str()));
    }
    fn with<'a>(
        base: &[(&'a str, &'a str)],
        extra: &[(&'a str, &'a str)],
    ) -> Vec<(&'a str, &'a str)> {
        base.iter().chain(extra).copied().collect()
    }
    if !g.state.is_empty() {
        out.push(
            "kafka_consumergroup_state",
            &with(&base, &[("state", &g.state)]),
            1.0,
        );
    }
    if g.error.is_empty() {
        out.push("kafka_consumergroup_members", &base, f64::from(g.members));
    } else {
        // The error's name only (the message is in the snapshot): a bounded label.
        let name = g.error.split(':').next().unwrap_or_default();
        out.push(
            "kafka_consumergroup_describe_error",
            &with(&base, &[("error", name)]),
            1.0,
        );
    }
    if matches!(g.protocol.as_str(), "consumer" | "share" | "streams") && g.error.is_empty() {
        out.push("kafka_consumergroup_epoch", &base, f64::from(g.group_epoch));
        out.push(
            "kafka_consumergroup_assignment_epoch",
            &base,
            f64::from(g.assignment_epoch),
        );
        for m in &g.member_details {
            let l = with(
                &base,
                &[("member_id", &m.member_id), ("client_id", &m.client_id)],
            );
            out.push(
                "kafka_consumergroup_member_epoch",
                &l,
                f64::from(m.member_epoch),
            );
            out.push(
                "kafka_consumergroup_member_reconciled",
                &l,
                if m.reconciled { 1.0 } else { 0.0 },
            );
            out.push(
                "kafka_consumergroup_member_partitions",
                &l,
                f64::from(m.partitions),
            );
        }
    }
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for o in &g.offsets {
        let pid = o.partition.to_string();
        let l = with(
            &base,
            &[("topic", o.topic.as_str()), ("partition", pid.as_str())],
        );
        out.push("kafka_consumergroup_current_offset", &l, o.offset as f64);
        // A share partition's lag as its coordinator counts it (records not yet
        // acknowledged or archived); otherwise measured against the log's ends.
        let lag = o.lag.or_else(|| {
            hw.get(&(o.topic.as_str(), o.partition))
                .map(|ends| ends.lag(o.offset))
        });
        if let Some(lag) = lag {
            out.push("kafka_consumergroup_lag", &l, lag as f64);
            *sums.entry(o.topic.as_str()).or_default() += lag;
        }
    }
    for (topic, lag) in sums {
        out.push(
            "kafka_consumergroup_lag_sum",
            &with(&base, &[("topic", topic)]),
            lag as f64,
        );
    }
}

/// The brokers' log dirs as DescribeLogDirs reports them, under the names the agent's
/// host collector uses, so that the disk rules cover brokers no agent runs beside; and
/// each topic's bytes on disk, all replicas counted (future replicas not).
fn log_dir_series(snap: &ClusterSnapshot, out: &mut SeriesBuilder<'_>) {
    let mut topics: BTreeMap<&str, i64> = BTreeMap::new();
    for d in &snap.log_dirs {
        let broker = d.broker.to_string();
        let l = [("broker", broker.as_str()), ("log_dir", d.path.as_str())];
        out.push(
            "kafka_log_dir_readable",
            &l,
            f64::from(u8::from(d.error_code == 0)),
        );
        if d.total_bytes >= 0 && d.usable_bytes >= 0 {
            out.push("kafka_log_dir_total_bytes", &l, d.total_bytes as f64);
            out.push("kafka_log_dir_free_bytes", &l, d.usable_bytes as f64);
        }
        for r in d.replicas.iter().filter(|r| !r.is_future) {
            *topics.entry(r.topic.as_str()).or_default() += r.size_bytes;
        }
    }
    for (topic, bytes) in topics {
        out.push("kafka_topic_size_bytes", &[("topic", topic)], bytes as f64);
    }
}

/// Feature levels, risky broker configs and configuration drift ([`crate::facts`]).
fn facts_series(snap: &ClusterSnapshot, out: &mut SeriesBuilder<'_>) {
    for (name, level) in &snap.finalized_features {
        out.push(
            "kafka_cluster_feature_level",
            &[("feature", name)],
            f64::from(*level),
        );
    }
    // The highest level every broker's software supports, per feature: the level the
    // cluster could be finalized at. Above the finalized level, an upgrade was rolled
    // out and not finished (`kafka-features upgrade`).
    let mut supported: BTreeMap<&str, i32> = BTreeMap::new();
    for f in &snap.broker_facts {
        for r in &f.supported_features {
            supported
                .entry(r.name.as_str())
                .and_modify(|m| *m = (*m).min(r.max))
                .or_insert(r.max);
        }
    }
    if snap
        .broker_facts
        .iter()
        .all(|f| !f.supported_features.is_empty())
    {
        for (name, max) in supported {
            out.push(
                "kafka_cluster_feature_supported_max",
                &[("feature", name)],
                f64::from(max),
            );
        }
    }
    for r in crate::facts::risky(&snap.broker_facts) {
        let broker = r.broker.to_string();
        out.push(
            "kafka_broker_config_risky",
            &[
                ("broker", &broker),
                ("config", &r.config),
                ("value", &r.value),
            ],
            1.0,
        );
    }
    for (config, values) in crate::facts::drift(&snap.broker_facts) {
        out.push(
            "kafka_cluster_config_drift",
            &[("config", &config)],
            values.len() as f64,
        );
    }
}

/// Seconds from `ts_ms` to the snapshot's collection; `None` for an unknown (-1) time.
fn age_seconds(snap: &ClusterSnapshot, ts_ms: i64) -> Option<f64> {
    (ts_ms >= 0).then(|| (snap.collected_at_ms - ts_ms).max(0) as f64 / 1000.0)
}

/// The quorum as `kafka-metadata-quorum describe --status` and `--replication` show it:
/// `kind` is `voter` or `observer` (stable across leader changes, unlike the tool's
/// Leader/Follower status); lag is against the leader's log end offset, as the tool's.
fn quorum_series(snap: &ClusterSnapshot, out: &mut SeriesBuilder<'_>) {
    let Some(q) = &snap.quorum else { return };
    out.push("kafka_quorum_leader", &[], f64::from(q.leader_id));
    if q.leader_id < 0 {
        return;
    }
    out.push("kafka_quorum_leader_epoch", &[], f64::from(q.leader_epoch));
    out.push("kafka_quorum_high_watermark", &[], q.high_watermark as f64);
    out.push("kafka_quorum_voters", &[], q.voters.len() as f64);
    let leader_end = q
        .voters
        .iter()
        .find(|v| v.id == q.leader_id)
        .map(|v| v.log_end_offset);
    for (kind, replicas) in [("voter", &q.voters), ("observer", &q.observers)] {
        for r in replicas {
            let id = r.id.to_string();
            let l = [("node", id.as_str()), ("kind", kind)];
            out.push(
                "kafka_quorum_replica_log_end_offset",
                &l,
                r.log_end_offset as f64,
            );
            if let Some(end) = leader_end {
                out.push(
                    "kafka_quorum_replica_lag",
                    &l,
                    (end - r.log_end_offset).max(0) as f64,
                );
            }
            // A leader starts with no fetch time for each voter (-1) until it fetches:
            // a voter that never fetched from this leader (one down since before the
            // election) reads as infinitely long ago, so that the rules see it.
            let never = |ts: i64| (kind == "voter" && ts < 0).then_some(f64::INFINITY);
            if let Some(a) = age_seconds(snap, r.last_fetch_timestamp_ms)
                .or_else(|| never(r.last_fetch_timestamp_ms))
            {
                out.push("kafka_quorum_replica_last_fetch_age_seconds", &l, a);
            }
            if let Some(a) = age_seconds(snap, r.last_caught_up_timestamp_ms)
                .or_else(|| never(r.last_caught_up_timestamp_ms))
            {
                out.push("kafka_quorum_replica_last_caught_up_age_seconds", &l, a);
            }
        }
    }
}

/// One series per open transaction, valued at the seconds since its last write (as
/// find-hanging's Duration), labelled with everything `kafka-transactions.sh abort`
/// needs and with `bootstrap`, the leader's address, to run it against.
fn transaction_series(snap: &ClusterSnapshot, out: &mut SeriesBuilder<'_>) {
    use crate::v1::TransactionVerdict;
    for t in &snap.open_transactions {
        let verdict = match t.verdict() {
            TransactionVerdict::Hanging => "hanging",
            TransactionVerdict::LongOpen => "long_open",
            TransactionVerdict::Open | TransactionVerdict::Unspecified => "open",
        };
        let bootstrap = snap
            .brokers
            .iter()
            .find(|b| b.id == t.leader)
            .map(|b| format!("{}:{}", b.host, b.port))
            .unwrap_or_default();
        let (partition, pid, epoch, start) = (
            t.partition.to_string(),
            t.producer_id.to_string(),
            t.producer_epoch.to_string(),
            t.start_offset.to_string(),
        );
        let mut l = vec![
            ("topic", t.topic.as_str()),
            ("partition", &partition),
            ("producer_id", &pid),
            ("producer_epoch", &epoch),
            ("start_offset", &start),
            ("verdict", verdict),
            ("bootstrap", &bootstrap),
        ];
        if !t.transactional_id.is_empty() {
            l.push(("transactional_id", &t.transactional_id));
        }
        if let Some(a) = age_seconds(snap, t.last_timestamp_ms) {
            out.push("kafka_transaction_open_seconds", &l, a);
        }
    }
}

/// A partition's ends: the high watermark and, where known, the last stable offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// The high watermark (`read_uncommitted` ListOffsets latest).
    pub high_watermark: i64,
    /// The last stable offset (`read_committed` ListOffsets latest).
    pub last_stable_offset: Option<i64>,
}

impl Ends {
    /// A group's lag at `committed`. Kafka does not tell a group's isolation level, but
    /// a `read_committed` consumer can never commit past the last stable offset: a
    /// committed offset at or below it is measured against it, so that an open
    /// transaction (whose records such a consumer cannot read yet) never reads as lag;
    /// one past it belongs to a `read_uncommitted` consumer and is measured against the
    /// high watermark. Without an open transaction the two ends are equal and this is
    /// the lag `kafka-consumer-groups --describe` prints.
    pub fn lag(&self, committed: i64) -> i64 {
        match self.last_stable_offset {
            Some(lso) if committed <= lso => (lso - committed).max(0),
            _ => (self.high_watermark - committed).max(0),
        }
    }
}

/// The ends of every partition with a high watermark, per `(topic, partition)`.
pub fn high_watermarks(snap: &ClusterSnapshot) -> HashMap<(&str, i32), Ends> {
    snap.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(move |p| {
                Some((
                    (t.name.as_str(), p.id),
                    Ends {
                        high_watermark: p.high_watermark?,
                        last_stable_offset: p.last_stable_offset,
                    },
                ))
            })
        })
        .collect()
}

/// Collects one-sample series that share base labels and a timestamp.
pub struct SeriesBuilder<'a> {
    base: &'a BTreeMap<String, String>,
    ts_ms: i64,
    keep: Option<&'a dyn Fn(&str) -> bool>,
    out: Vec<Series>,
}

impl<'a> SeriesBuilder<'a> {
    /// A builder putting `base` on every series, sampled at `ts_ms`.
    pub fn new(base: &'a BTreeMap<String, String>, ts_ms: i64) -> Self {
        SeriesBuilder {
            base,
            ts_ms,
            keep: None,
            out: Vec::new(),
        }
    }

    /// Adds a series; `labels` win over base labels of the same name.
    pub fn push(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        if self.keep.is_some_and(|keep| !keep(name)) {
            return;
        }
        let mut all: BTreeMap<&str, &str> = self
            .base
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend(labels.iter().copied());
        self.out.push(Series {
            name: name.to_string(),
            labels: all
                .into_iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: vec![Sample {
                timestamp_ms: self.ts_ms,
                value,
            }],
        });
    }

    /// The series built.
    pub fn finish(self) -> Vec<Series> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Broker, Partition, Topic};

    fn value(series: &[Series], name: &str, partition: &str) -> Option<f64> {
        series
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels
                        .iter()
                        .any(|l| l.name == "partition" && l.value == partition)
            })
            .map(|s| s.samples[0].value)
    }

    #[test]
    fn derives_offline_under_replicated_and_lso_lag() {
        let snap = ClusterSnapshot {
            brokers: vec![
                Broker {
                    id: 1,
                    ..Default::default()
                },
                Broker {
                    id: 2,
                    ..Default::default()
                },
            ],
            topics: vec![Topic {
                name: "t".into(),
                partitions: vec![
                    Partition {
                        id: 0,
                        leader: 1,
                        replicas: vec![1, 2],
                        isr: vec![1, 2],
                        high_watermark: Some(10),
                        last_stable_offset: Some(4),
                        ..Default::default()
                    },
                    Partition {
                        id: 1,
                        leader: -1,
                        replicas: vec![2, 3],
                        isr: vec![2],
                        ..Default::default()
                    },
                ],
                error_code: 0,
                configs: [
                    ("min.insync.replicas", "2"),
                    ("unclean.leader.election.enable", "true"),
                    ("retention.ms", "-1"),
                    ("cleanup.policy", "compact"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            }],
            ..Default::default()
        };
        let base = BTreeMap::from([("cluster".to_string(), "c1".to_string())]);
        let s = snapshot_series(&snap, &base, 1000, &|_| true);
        assert_eq!(
            value(&s, "kafka_partition_last_stable_offset_lag", "0"),
            Some(6.0)
        );
        assert_eq!(value(&s, "kafka_topic_partition_offline", "0"), Some(0.0));
        assert_eq!(value(&s, "kafka_topic_partition_offline", "1"), Some(1.0));
        assert_eq!(
            value(&s, "kafka_topic_partition_under_replicated", "1"),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "kafka_topic_partition_replicas_on_missing_brokers", "1"),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "kafka_partition_last_stable_offset_lag", "1"),
            None
        );
        assert_eq!(
            value(&s, "kafka_topic_partition_under_min_isr", "0"),
            Some(0.0)
        );
        assert_eq!(
            value(&s, "kafka_topic_partition_under_min_isr", "1"),
            Some(1.0)
        );
        let topic_value = |name: &str| {
            s.iter()
                .find(|x| x.name == name)
                .map(|x| x.samples[0].value)
        };
        assert_eq!(topic_value("kafka_topic_replication_factor"), Some(2.0));
        assert_eq!(
            topic_value("kafka_topic_config_min_insync_replicas"),
            Some(2.0)
        );
        assert_eq!(
            topic_value("kafka_topic_config_unclean_leader_election_enable"),
            Some(1.0)
        );
        assert_eq!(topic_value("kafka_topic_config_retention_ms"), Some(-1.0));
        let policy = s
            .iter()
            .find(|x| x.name == "kafka_topic_config_cleanup_policy")
            .unwrap();
        assert!(
            policy
                .labels
                .iter()
                .any(|l| l.name == "policy" && l.value == "compact")
        );
        assert!(s.iter().all(|x| {
            x.labels
                .iter()
                .any(|l| l.name == "cluster" && l.value == "c1")
        }));
    }

    #[test]
    fn an_open_transaction_is_not_lag_for_a_group_at_the_last_stable_offset() {
        let ends = Ends {
            high_watermark: 120,
            last_stable_offset: Some(100),
        };
        // read_committed, caught up: nothing it could read.
        assert_eq!(ends.lag(100), 0);
        // Behind the LSO: only what it could read.
        assert_eq!(ends.lag(90), 10);
        // Past the LSO: a read_uncommitted consumer, against the high watermark.
        assert_eq!(ends.lag(110), 10);
        let plain = Ends {
            high_watermark: 120,
            last_stable_offset: None,
        };
        assert_eq!(plain.lag(100), 20);
    }
}
