//! Server-side render time of the console's heaviest pages: the fleet page of a tenant
//! with 200 clusters, and the page of one cluster with 2,000 partitions (200 topics of
//! 10, 300 consumer groups, open alerts and history). Each page is built from the same
//! models a request builds and rendered by the same templates; the figure is the
//! median of `CONSOLE_RUNS` renders (default 50) on one thread.
//!
//! `cargo bench -p foresight-ingest --bench console`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use foresight_ingest::console::pages::{self, ClusterExtras, ClusterQuery, FleetQuery, Layout};
use foresight_ingest::evaluator::views::{AlertGroupRef, AlertView, BrokerInfo, ClusterInfo};
use foresight_ingest::store::HistoryEntry;
use foresight_notifier::group::GroupAlert;
use foresight_proto::v1::{
    Broker, ClusterSnapshot, ConsumerGroup, GroupOffset, Partition, Quorum, QuorumReplica, Topic,
};

fn now_ms() -> i64 {
    foresight_proto::now_ms()
}

fn snapshot(name: &str, topics: usize, per_topic: i32, groups: usize) -> ClusterSnapshot {
    let brokers: Vec<Broker> = (1..=6)
        .map(|id| Broker {
            id,
            host: format!("{name}-b{id}.example"),
            port: 9092,
            rack: format!("rack-{}", id % 3),
        })
        .collect();
    let topics: Vec<Topic> = (0..topics)
        .map(|t| Topic {
            name: format!("topic-{t:04}"),
            partitions: (0..per_topic)
                .map(|p| {
                    let leader = 1 + (p % 6);
                    let replicas = vec![leader, 1 + (leader % 6), 1 + ((leader + 1) % 6)];
                    let isr = if (t + p as usize).is_multiple_of(97) {
                        replicas[..2].to_vec()
                    } else {
                        replicas.clone()
                    };
                    Partition {
                        id: p,
                        leader,
                        replicas,
                        isr,
                        high_watermark: Some(1_000_000 + i64::from(p)),
                        last_stable_offset: Some(1_000_000 + i64::from(p)),
                        log_start_offset: Some(0),
                        ..Default::default()
                    }
                })
                .collect(),
            configs: BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]),
            ..Default::default()
        })
        .collect();
    let groups = (0..groups)
        .map(|g| ConsumerGroup {
            name: format!("group-{g:04}"),
            state: "Stable".into(),
            members: 3,
            offsets: (0..per_topic)
                .map(|p| GroupOffset {
                    topic: format!("topic-{:04}", g % topics.len().max(1)),
                    partition: p,
                    offset: 999_000,
                    lag: None,
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    ClusterSnapshot {
        collected_at_ms: now_ms(),
        cluster_id: format!("{name}-id"),
        controller_id: 1,
        brokers,
        topics,
        groups,
        quorum: Some(Quorum {
            leader_id: 1,
            leader_epoch: 7,
            high_watermark: 5000,
            voters: (1..=3)
                .map(|id| QuorumReplica {
                    id,
                    log_end_offset: 5000,
                    last_fetch_timestamp_ms: now_ms(),
                    last_caught_up_timestamp_ms: now_ms(),
                })
                .collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn cluster(name: &str, topics: usize, per_topic: i32, groups: usize) -> ClusterInfo {
    let snap = snapshot(name, topics, per_topic, groups);
    ClusterInfo {
        name: name.into(),
        cluster_id: snap.cluster_id.clone(),
        last_seen_ms: now_ms(),
        snapshot_at_ms: now_ms(),
        brokers: snap
            .brokers
            .iter()
            .map(|b| BrokerInfo {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
            })
            .collect(),
        controller_id: 1,
        topics: snap.topics.len(),
        partitions: snap.topics.iter().map(|t| t.partitions.len()).sum(),
        versions: (1..=6).map(|b| (b, "4.1".to_string())).collect(),
        snapshot: Some(Arc::new(snap)),
        ..Default::default()
    }
}

fn alert(cluster: &str, i: usize) -> AlertView {
    let labels: BTreeMap<String, String> = [
        (
            "alertname",
            format!("KafkaUnderReplicatedPartitions{}", i % 5),
        ),
        ("cluster", cluster.to_string()),
        (
            "severity",
            if i.is_multiple_of(3) {
                "critical"
            } else {
                "warning"
            }
            .to_string(),
        ),
        ("topic", format!("topic-{i:04}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    AlertView {
        alert: GroupAlert {
            fingerprint: format!("{i:016x}"),
            annotations: BTreeMap::from([
                (
                    "summary".into(),
                    format!("{cluster} has under-replicated partitions"),
                ),
                (
                    "runbook_url".into(),
                    "https://runbooks.example/kafka".into(),
                ),
            ]),
            starts_at_ms: now_ms() - 600_000,
            ends_at_ms: now_ms() + 600_000,
            generator_url: String::new(),
            labels: labels.clone(),
        },
        receivers: vec!["oncall".into()],
        inhibited: false,
        groups: vec![AlertGroupRef {
            receiver: "oncall".into(),
            labels: BTreeMap::from([("cluster".into(), cluster.into())]),
        }],
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        bytes = f();
        times.push(t.elapsed());
    }
    (median(times), bytes)
}

fn main() {
    let runs: usize = std::env::var("CONSOLE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let layout = Layout {
        title: "bench".into(),
        tenant: "bench".into(),
        scope: "admin".into(),
        can_change: true,
        csrf: "x".repeat(64),
        nav: "fleet",
        notice: String::new(),
    };

    // 200 clusters of 6 brokers and 250 partitions, 100 open alerts among them.
    let fleet: Vec<ClusterInfo> = (0..200)
        .map(|i| cluster(&format!("cluster-{i:03}"), 25, 10, 20))
        .collect();
    let fleet_alerts: Vec<AlertView> = (0..100)
        .map(|i| alert(&format!("cluster-{:03}", i * 2), i))
        .collect();
    let (fleet_t, fleet_bytes) = time(runs, || {
        let page = pages::fleet_page(
            layout.clone(),
            &fleet,
            &fleet_alerts,
            now_ms(),
            FleetQuery::default(),
        );
        page.render().unwrap().len()
    });

    // One cluster of 2,000 partitions, 300 groups, 40 open alerts, 200 history rows.
    let big = cluster("big", 200, 10, 300);
    let alerts: Vec<AlertView> = (0..40).map(|i| alert("big", i)).collect();
    let history: Vec<HistoryEntry> = (0..200)
        .map(|i| HistoryEntry {
            tenant: "bench".into(),
            fingerprint: format!("{i:016x}"),
            alertname: "KafkaUnderReplicatedPartitions".into(),
            labels: BTreeMap::from([("cluster".into(), "big".into())]),
            state: ["pending", "firing", "resolved"][i % 3].into(),
            at_ms: now_ms() - i as i64 * 60_000,
        })
        .collect();
    let (cluster_t, cluster_bytes) = time(runs, || {
        let extras = ClusterExtras {
            alerts: &alerts,
            silences: &[],
            history: &history,
            lag_seconds: (0..300).map(|g| (format!("group-{g:04}"), 12.0)).collect(),
            query_retention_secs: 3600,
        };
        let page = pages::cluster_page(
            layout.clone(),
            &big,
            extras,
            now_ms(),
            &ClusterQuery::default(),
        );
        page.render().unwrap().len()
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "fleet page, 200 clusters: {:.2} ms median of {runs} ({fleet_bytes} bytes)",
        ms(fleet_t)
    );
    println!(
        "cluster page, 2,000 partitions: {:.2} ms median of {runs} ({cluster_bytes} bytes)",
        ms(cluster_t)
    );
    println!("target: under 200 ms each");
}
