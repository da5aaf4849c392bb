//! The agent's disk spool against a real ingest that goes away and comes back.

mod common;

use std::time::Duration;

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, IngestConfig, KafkaConfig, SpoolConfig};
use rdkafka::mocking::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_wait_through_an_outage_and_a_restart_then_arrive_in_order_once() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    // Start once for a key, a certificate and an address; then take the ingest away.
    let server = common::start_plain_server(data.path(), "127.0.0.1:0").await;
    let key = server.store.create_key("acme").unwrap();
    let tenant = server.store.ensure_tenant("acme").unwrap();
    let (addr, fingerprint) = (server.addr, server.fingerprint.clone());
    server.shutdown(Duration::from_secs(5)).await;

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("payments", 2, 1).unwrap();
    let config = AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            cluster_name: Some("mock".into()),
            request_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ingest: IngestConfig {
            url: format!("https://{addr}"),
            api_key: Some(key),
            pinned_sha256: Some(fingerprint),
            max_attempts: 1,
            timeout_secs: 2,
            ..IngestConfig::default()
        },
        spool: SpoolConfig {
            dir: Some(spool.path().to_path_buf()),
            ..SpoolConfig::default()
        },
        ..AgentConfig::default()
    };

    let first = Reporter::new(config.clone()).unwrap();
    for _ in 0..4 {
        assert_eq!(first.run_once().await.unwrap(), 0, "the ingest is down");
    }
    assert_eq!(first.pending().await, 4);
    let first_id = first.instance_id().to_string();
    drop(first);

    // A new agent process picks the spool up; the ingest comes back on its address.
    let second = Reporter::new(config).unwrap();
    assert_eq!(second.pending().await, 4);
    let server = common::start_plain_server(data.path(), &addr.to_string()).await;
    assert_eq!(second.run_once().await.unwrap(), 5);
    assert_eq!(second.pending().await, 0);
    assert_eq!(second.flush().await, 0);

    let stored = server.store.batch_sequences(tenant).unwrap();
    let second_id = second.instance_id().to_string();
    assert_eq!(
        stored,
        vec![
            (first_id.clone(), 1),
            (first_id.clone(), 2),
            (first_id.clone(), 3),
            (first_id, 4),
            (second_id, 1),
        ],
        "every batch, in order, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_accepts_a_good_key_and_names_a_bad_one() {
    let data = tempfile::tempdir().unwrap();
    let server = common::start_plain_server(data.path(), "127.0.0.1:0").await;
    let key = server.store.create_key("acme").unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let config = |key: &str| AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            request_timeout_ms: 2_000,
            ..KafkaConfig::default()
        },
        ingest: IngestConfig {
            url: format!("https://{}", server.addr),
            api_key: Some(key.into()),
            pinned_sha256: Some(server.fingerprint.clone()),
            ..IngestConfig::default()
        },
        ..AgentConfig::default()
    };
    let good = foresight_reporter::check::run(&config(&key)).await;
    assert!(good.iter().all(|f| f.ok), "{good:?}");
    let bad = foresight_reporter::check::run(&config("fs_wrong")).await;
    let ingest = bad.iter().find(|f| f.what == "ingest").unwrap();
    assert!(
        !ingest.ok && ingest.message.contains("foresight keys create"),
        "{ingest}"
    );
    assert_eq!(
        server
            .store
            .batch_count(server.store.ensure_tenant("acme").unwrap())
            .unwrap(),
        0
    );
}
