//! The whole pipeline against librdkafka's mock cluster: agent -> HTTPS ingest -> rules
//! -> outbox -> a real webhook receiver.

mod common;

use std::sync::Arc;
use std::time::Duration;

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, IngestConfig, KafkaConfig};
use rdkafka::mocking::MockCluster;
use tokio_util::sync::CancellationToken;

const RULES: &str = r#"
groups:
  - name: test
    rules:
      - alert: KafkaOfflinePartitions
        expr: sum by (cluster, topic) (kafka_topic_partition_offline) > 0
        for: 1s
        labels: {severity: critical, category: availability}
        annotations:
          summary: "{{ $value }} offline partitions in topic {{ $labels.topic }}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderless_partitions_fire_then_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_server(dir.path(), Some(RULES), Some(&receiver.url)).await;
    let key = server.store.create_key("acme").unwrap();

    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("payments", 4, 3).unwrap();
    let agent = Arc::new(
        Reporter::new(AgentConfig {
            kafka: KafkaConfig {
                bootstrap_servers: cluster.bootstrap_servers(),
                cluster_name: Some("mock".into()),
                request_timeout_ms: 2_000,
                ..KafkaConfig::default()
            },
            ingest: IngestConfig {
                url: format!("https://{}", server.addr),
                api_key: Some(key),
                pinned_sha256: Some(server.fingerprint.clone()),
                ..IngestConfig::default()
            },
            interval_secs: 1,
            ..AgentConfig::default()
        })
        .unwrap(),
    );
    let cancel = CancellationToken::new();
    let (a, c) = (agent.clone(), cancel.clone());
    tokio::spawn(async move { a.run(c).await });

    // Healthy first: no notification.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver.rx.try_recv().is_err(),
        "a healthy cluster must not alert"
    );

    cluster.partition_leader("payments", 2, None).unwrap();
    let firing = common::wait_for(
        &mut receiver.rx,
        "KafkaOfflinePartitions",
        "firing",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["alerts"][0]["labels"]["topic"], "payments");
    assert_eq!(firing["alerts"][0]["labels"]["cluster"], "mock");
    assert_eq!(
        firing["alerts"][0]["annotations"]["summary"],
        "1 offline partitions in topic payments"
    );
    assert_eq!(firing["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    // The cluster's shape from its latest snapshot rides along.
    let context = &firing["foresightClusterContext"];
    assert_eq!(context["brokers"], "3", "{firing}");
    assert_eq!(context["offline partitions"], "1", "{firing}");

    cluster.partition_leader("payments", 2, Some(1)).unwrap();
    let resolved = common::wait_for(
        &mut receiver.rx,
        "KafkaOfflinePartitions",
        "resolved",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        resolved["alerts"][0]["fingerprint"],
        firing["alerts"][0]["fingerprint"]
    );
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");

    // One notification per state change: nothing more arrives while nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.rx.try_recv().is_err(), "no repeated notifications");
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downed_broker_shows_as_replicas_on_a_missing_broker() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("orders", 3, 3).unwrap();
    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            cluster_name: Some("mock".into()),
            request_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ..AgentConfig::default()
    })
    .unwrap();
    let missing = |batch: &foresight_proto::v1::TelemetryBatch| -> f64 {
        let snap = batch.snapshot.as_ref().expect("a snapshot");
        foresight_proto::derive::snapshot_series(snap, &Default::default(), 0, &|_| true)
            .iter()
            .filter(|s| s.name == "kafka_topic_partition_replicas_on_missing_brokers")
            .map(|s| s.samples[0].value)
            .sum()
    };
    let before = agent.collect_batch().await.unwrap();
    assert_eq!(missing(&before), 0.0);
    let brokers =
        |b: &foresight_proto::v1::TelemetryBatch| b.snapshot.as_ref().unwrap().brokers.len();
    assert_eq!(brokers(&before), 3);

    cluster.broker_down(3).unwrap();
    // The mock drops the broker from metadata once its connection is gone, and a
    // request in flight to it may time out meanwhile; allow a moment.
    let mut after = None;
    for _ in 0..20 {
        match agent.collect_batch().await {
            Ok(b) if brokers(&b) == 2 => {
                after = Some(b);
                break;
            }
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    let after = after.expect("broker 3 should have left the metadata");
    assert_eq!(brokers(&after), 2, "broker 3 should have left the metadata");
    assert_eq!(
        missing(&after),
        3.0,
        "each of 3 partitions has a replica on broker 3"
    );
}

/// librdkafka's mock cluster lacks the admin APIs of the agent's second client (it has
/// no KRaft quorum): that part is left out, visibly, and the rest of the cycle is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_the_admin_apis_degrades_only_that_part() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("payments", 4, 3).unwrap();
    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            request_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ..AgentConfig::default()
    })
    .unwrap();
    for _ in 0..2 {
        let batch = agent.collect_batch().await.unwrap();
        let snap = batch.snapshot.as_ref().unwrap();
        assert_eq!(snap.brokers.len(), 3);
        assert!(
            snap.topics
                .iter()
                .any(|t| t.name == "payments" && t.partitions.len() == 4)
        );
        assert!(snap.quorum.is_none(), "no quorum to describe");
        let up = |part: &str| common::protocol_up(&batch, part);
        assert_eq!(up("quorum"), Some(0.0));
        // No partition holds an open transaction: nothing to ask, nothing failed.
        assert_eq!(up("transactions"), Some(1.0));
    }
}
