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
