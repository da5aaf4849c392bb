//! Events from consecutive snapshots of librdkafka's mock cluster.

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, KafkaConfig};
use foresight_reporter::proto::v1::EventKind;
use rdkafka::mocking::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_losing_its_leader_is_an_event() {
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("payments", 2, 3).unwrap();
    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            request_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ..AgentConfig::default()
    })
    .unwrap();
    let first = agent.collect_batch().await.unwrap();
    assert!(
        first.events.is_empty(),
        "nothing to compare the first snapshot with"
    );
    let steady = agent.collect_batch().await.unwrap();
    assert!(steady.events.is_empty(), "{:?}", steady.events);

    cluster.partition_leader("payments", 1, None).unwrap();
    // The client's metadata cache may lag a moment behind the mock.
    let mut changes = Vec::new();
    for _ in 0..20 {
        let batch = agent.collect_batch().await.unwrap();
        changes = batch
            .events
            .into_iter()
            .filter(|e| e.kind() == EventKind::LeaderChange)
            .collect();
        if !changes.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].labels["topic"], "payments");
    assert_eq!(changes[0].labels["partition"], "1");
    assert!(
        changes[0].message.ends_with("-> -1"),
        "{}",
        changes[0].message
    );
}

/// A producer's own statistics, fed from its context as an embedding service does.
struct Stats(std::sync::Arc<Reporter>);

impl rdkafka::ClientContext for Stats {
    fn stats_raw(&self, statistics: &[u8]) {
        self.0
            .record_librdkafka_stats(std::str::from_utf8(statistics).unwrap())
            .unwrap();
    }
}

impl rdkafka::producer::ProducerContext for Stats {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_librdkafka_statistics_reach_the_batch() {
    let cluster = MockCluster::new(1).unwrap();
    let agent = std::sync::Arc::new(
        Reporter::new(AgentConfig {
            kafka: KafkaConfig {
                bootstrap_servers: cluster.bootstrap_servers(),
                cluster_name: Some("mock".into()),
                request_timeout_ms: 2_000,
                ..KafkaConfig::default()
            },
            ..AgentConfig::default()
        })
        .unwrap(),
    );
    let producer: rdkafka::producer::BaseProducer<Stats> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("client.id", "svc")
        .set("statistics.interval.ms", "100")
        .create_with_context(Stats(agent.clone()))
        .unwrap();
    for _ in 0..10 {
        producer.poll(std::time::Duration::from_millis(100));
    }
    let batch = agent.collect_batch().await.unwrap();
    let up = batch
        .series
        .iter()
        .find(|s| s.name == "librdkafka_broker_up")
        .expect("statistics recorded");
    assert!(
        up.labels
            .iter()
            .any(|l| l.name == "client_id" && l.value == "svc")
    );
    assert!(
        up.labels
            .iter()
            .any(|l| l.name == "cluster" && l.value == "mock")
    );
}
