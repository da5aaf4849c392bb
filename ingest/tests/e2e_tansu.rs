//! The hung-transaction pipeline against a real Kafka-protocol broker: `tansu` on
//! loopback, a transactional producer that never commits, the agent, the ingest and a
//! webhook receiver. `scripts/test-deps.sh` installs tansu; a missing one fails the test.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, IngestConfig, KafkaConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tokio_util::sync::CancellationToken;

/// The built-in rule's expression, with windows short enough for a test.
const RULES: &str = r#"
groups:
  - name: test
    rules:
      - alert: KafkaHungTransaction
        expr: |
          kafka_partition_last_stable_offset_lag > 0
          and on (cluster, topic, partition)
            changes(kafka_partition_last_stable_offset[3s]) == 0
          and on (cluster, topic, partition)
            kafka_partition_last_stable_offset == kafka_partition_last_stable_offset offset 3s
        for: 3s
        labels: {severity: critical, category: availability}
        annotations:
          summary: "Hung transaction on {{ $labels.topic }}-{{ $labels.partition }}"
"#;

struct Tansu {
    child: Child,
    bootstrap: String,
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_binary() -> String {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return p;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = format!("{home}/.cargo/bin/tansu");
    if std::path::Path::new(&cargo_bin).exists() {
        return cargo_bin;
    }
    "tansu".into()
}

async fn start_tansu() -> Tansu {
    let port = common::free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(tansu_binary())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args([
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "foresight-test",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start tansu ({e}); run scripts/test-deps.sh to install it")
        });
    let tansu = Tansu {
        child,
        bootstrap: format!("127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&tansu.bootstrap).is_ok() {
            return tansu;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tansu did not start listening on {}", tansu.bootstrap);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_reported_as_hung() {
    let tansu = start_tansu().await;
    let topic = "ledger";

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    // A transaction that is opened, written to, and never committed.
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .set("transactional.id", "foresight-hung-tx")
        .set("transaction.timeout.ms", "600000")
        .create()
        .unwrap();
    let p = tokio::task::spawn_blocking(move || {
        producer.init_transactions(Duration::from_secs(10)).unwrap();
        producer.begin_transaction().unwrap();
        for i in 0..5 {
            producer
                .send(
                    BaseRecord::to(topic)
                        .key("k")
                        .payload(&format!("record {i}")),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
        producer
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_server(dir.path(), Some(RULES), Some(&receiver.url)).await;
    let key = server.store.create_key("acme").unwrap();
    let agent = Arc::new(
        Reporter::new(AgentConfig {
            kafka: KafkaConfig {
                bootstrap_servers: tansu.bootstrap.clone(),
                request_timeout_ms: 5_000,
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

    // The protocol-level view first: the high watermark is ahead of the LSO.
    let batch = agent.collect_batch().await.unwrap();
    let partition = batch
        .snapshot
        .as_ref()
        .unwrap()
        .topics
        .iter()
        .find(|t| t.name == topic)
        .unwrap()
        .partitions[0]
        .clone();
    let (hw, lso) = (
        partition.high_watermark.unwrap(),
        partition.last_stable_offset.unwrap(),
    );
    assert!(
        hw > lso,
        "open transaction: high watermark {hw} must be ahead of LSO {lso}"
    );

    let cancel = CancellationToken::new();
    let (a, c) = (agent.clone(), cancel.clone());
    tokio::spawn(async move { a.run(c).await });

    let msg = common::wait_for(
        &mut receiver.rx,
        "KafkaHungTransaction",
        "firing",
        Duration::from_secs(60),
    )
    .await;
    let alert = &msg["alerts"][0];
    assert_eq!(alert["labels"]["topic"], topic);
    assert_eq!(alert["labels"]["partition"], "0");
    assert_eq!(alert["labels"]["cluster"], "foresight-test");
    assert_eq!(
        alert["annotations"]["summary"],
        "Hung transaction on ledger-0"
    );
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_topic_configs_are_described_and_exported() {
    let tansu = start_tansu().await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new("audit", 2, TopicReplication::Fixed(1))
                .set("min.insync.replicas", "1")
                .set("retention.ms", "-1")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: tansu.bootstrap.clone(),
            request_timeout_ms: 5_000,
            ..KafkaConfig::default()
        },
        ..AgentConfig::default()
    })
    .unwrap();
    let batch = agent.collect_batch().await.unwrap();
    let topic = batch
        .snapshot
        .as_ref()
        .unwrap()
        .topics
        .iter()
        .find(|t| t.name == "audit")
        .unwrap()
        .clone();
    assert_eq!(
        topic.configs.get("min.insync.replicas").map(String::as_str),
        Some("1"),
        "{:?}",
        topic.configs
    );
    let value = |name: &str| {
        as_ingested(&batch)
            .into_iter()
            .find(|s| s.name == name && s.labels.iter().any(|l| l.value == "audit"))
            .map(|s| s.samples[0].value)
    };
    assert_eq!(value("kafka_topic_config_min_insync_replicas"), Some(1.0));
    assert_eq!(value("kafka_topic_config_retention_ms"), Some(-1.0));
    assert_eq!(value("kafka_topic_replication_factor"), Some(1.0));
}

/// Produces `n` records, one batch each: tansu 0.6 answers ListOffsets(latest) with the
/// last batch's base offset plus one, which is the log end only for one-record batches.
/// The batch's series with those the ingest derives from its snapshot.
fn as_ingested(
    batch: &foresight_reporter::proto::v1::TelemetryBatch,
) -> Vec<foresight_reporter::proto::v1::Series> {
    let mut all = batch.series.clone();
    if let Some(snap) = &batch.snapshot {
        all.extend(foresight_proto::derive::snapshot_series(
            snap,
            &Default::default(),
            0,
            &|_| true,
        ));
    }
    all
}

fn produce(bootstrap: &str, topic: &str, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..n {
        producer
            .send(
                BaseRecord::to(topic)
                    .key("k")
                    .payload(&format!("event {i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_that_stops_shows_growing_lag() {
    use rdkafka::Message as _;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

    let tansu = start_tansu().await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &tansu.bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            &[NewTopic::new("orders", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    let bootstrap = tansu.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        produce(&bootstrap, "orders", 10);
        // A consumer reads everything, commits, and goes away.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "billing")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&["orders"]).unwrap();
        let mut read = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while read < 10 {
            assert!(std::time::Instant::now() < deadline, "read {read} of 10");
            if let Some(m) = consumer.poll(Duration::from_millis(500)) {
                m.unwrap().offset();
                read += 1;
            }
        }
        consumer.commit_consumer_state(CommitMode::Sync).unwrap();
    })
    .await
    .unwrap();

    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: tansu.bootstrap.clone(),
            request_timeout_ms: 5_000,
            ..KafkaConfig::default()
        },
        ..AgentConfig::default()
    })
    .unwrap();
    let value = |batch: &foresight_reporter::proto::v1::TelemetryBatch, name: &str| {
        as_ingested(batch)
            .into_iter()
            .find(|s| {
                s.name == name
                    && s.labels
                        .iter()
                        .any(|l| l.name == "consumergroup" && l.value == "billing")
            })
            .map(|s| s.samples[0].value)
    };
    let before = agent.collect_batch().await.unwrap();
    assert_eq!(value(&before, "kafka_consumergroup_lag_sum"), Some(0.0));
    assert_eq!(value(&before, "kafka_consumergroup_members"), Some(0.0));

    let bootstrap = tansu.bootstrap.clone();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    tokio::task::spawn_blocking(move || produce(&bootstrap, "orders", 20))
        .await
        .unwrap();
    let after = agent.collect_batch().await.unwrap();
    assert_eq!(value(&after, "kafka_consumergroup_lag_sum"), Some(20.0));
    let secs = value(&after, "kafka_consumergroup_lag_seconds").expect("lag in seconds");
    assert!(secs > 0.0, "{secs}");
}
