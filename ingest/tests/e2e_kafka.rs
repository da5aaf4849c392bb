//! The agent, the ingest and a webhook against a real Apache Kafka 4.x KRaft cluster on
//! loopback (three controllers, three brokers, the jmx_exporter on each), with Kafka's
//! own tools as oracles. The tests share one cluster, each with its own topics and
//! groups; `foresight-testkit` fetches Kafka from Maven Central on first use.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use foresight_testkit::{Cluster, ClusterSpec, Version};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        Cluster::start(ClusterSpec::new(Version::Kafka4)).expect("a real Kafka cluster starts")
    })
}

async fn shared_cluster() -> &'static Cluster {
    tokio::task::spawn_blocking(cluster).await.unwrap()
}

/// Output of one of Kafka's tools against the shared cluster, which must succeed.
async fn tool(class: &'static str, args: Vec<String>) -> String {
    common::kafka_tool(cluster(), class, args).await
}

const TRANSACTIONS: &str = "org.apache.kafka.tools.TransactionsCommand";
const CONSUMER_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
const TOPICS: &str = "org.apache.kafka.tools.TopicCommand";

/// The pack's hung-transaction expression with 3-second windows instead of 5 minutes
/// and 15 minutes.
const HUNG_RULE: &str = r#"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_is_reported_as_kafka_reports_it() {
    let cluster = shared_cluster().await;
    let topic = "ledger";
    common::create_topics(&cluster.bootstrap(), &[(topic, 1, 3, &[])]).await;

    // A transaction that is opened, written to, and never committed.
    let bootstrap = cluster.bootstrap();
    let producer = tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", "foresight-open-tx")
            .set("transaction.timeout.ms", "600000")
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
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
        producer.flush(Duration::from_secs(30)).unwrap();
        producer
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_server(dir.path(), Some(HUNG_RULE), Some(&receiver.url)).await;
    let key = server.store.create_key("acme").unwrap();
    let agent = common::kafka_agent(cluster, &server, &key, false);

    // The protocol-level view: the high watermark is ahead of the LSO by the five
    // uncommitted records.
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
    assert_eq!(hw - lso, 5, "high watermark {hw}, LSO {lso}");

    // Kafka's own view: the transaction is Ongoing, and find-hanging (which only
    // reports transactions open past the maximum timeout that the coordinator does not
    // know) reports nothing: open, not hanging.
    let list = tool(
        TRANSACTIONS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "list".into(),
        ],
    )
    .await;
    let row = list
        .lines()
        .find(|l| l.starts_with("foresight-open-tx"))
        .unwrap_or_else(|| panic!("kafka-transactions list does not show it:\n{list}"));
    assert!(row.contains("Ongoing"), "{row}");
    let hanging = tool(
        TRANSACTIONS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "find-hanging".into(),
            "--broker-id".into(),
            partition.leader.to_string(),
        ],
    )
    .await;
    assert!(
        !hanging.lines().any(|l| l.starts_with(topic)),
        "find-hanging reports it as hanging:\n{hanging}"
    );

    let (_agent, cancel) = common::run_agent(agent);
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
    assert_eq!(alert["labels"]["cluster"], cluster.cluster_id.as_str());
    assert_eq!(
        alert["annotations"]["summary"],
        "Hung transaction on ledger-0"
    );

    // Aborting clears it: the LSO catches up and the alert resolves.
    let p = tokio::task::spawn_blocking(move || {
        producer.abort_transaction(Duration::from_secs(30)).unwrap();
    });
    p.await.unwrap();
    common::wait_for(
        &mut receiver.rx,
        "KafkaHungTransaction",
        "resolved",
        Duration::from_secs(60),
    )
    .await;
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risky_topic_configs_reach_the_webhook() {
    let cluster = shared_cluster().await;
    common::create_topics(
        &cluster.bootstrap(),
        &[
            (
                "audit",
                2,
                3,
                &[
                    ("min.insync.replicas", "1"),
                    ("unclean.leader.election.enable", "true"),
                    ("retention.ms", "-1"),
                ],
            ),
            ("scratch", 1, 1, &[]),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(
        dir.path(),
        &[
            ("KafkaUncleanLeaderElectionEnabled", "1s"),
            ("KafkaMinInsyncReplicasOne", "1s"),
            ("KafkaReplicationFactorOne", "1s"),
        ],
        &receiver.url,
    )
    .await;
    let key = server.store.create_key("acme").unwrap();
    // Three agents on the cluster, one per broker host as deployed: still one alert
    // per rule and topic.
    let agents: Vec<_> = cluster
        .brokers()
        .map(|b| {
            let config = common::host_agent_config(cluster, &server, &key, b, None);
            common::run_agent(foresight_reporter::Reporter::new(config).unwrap())
        })
        .collect();
    let want = [
        ("KafkaUncleanLeaderElectionEnabled", "audit"),
        ("KafkaMinInsyncReplicasOne", "audit"),
        ("KafkaReplicationFactorOne", "scratch"),
    ];
    let mut seen: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    // Until all have come, then five seconds more for any duplicate.
    let mut settle: Option<tokio::time::Instant> = None;
    loop {
        let until = settle.unwrap_or(deadline);
        let Ok(msg) = tokio::time::timeout_at(until, receiver.rx.recv()).await else {
            assert!(
                settle.is_some(),
                "still waiting for {want:?}; seen {seen:?}"
            );
            break;
        };
        let msg = msg.unwrap();
        if msg["status"] != "firing" {
            continue;
        }
        for a in msg["alerts"].as_array().unwrap() {
            let name = a["labels"]["alertname"].as_str().unwrap_or_default();
            let topic = a["labels"]["topic"].as_str().unwrap_or_default();
            seen.push((name.to_string(), topic.to_string()));
        }
        let all = want
            .iter()
            .all(|(n, t)| seen.iter().any(|(sn, st)| sn == n && st == t));
        if all && settle.is_none() {
            settle = Some(tokio::time::Instant::now() + Duration::from_secs(5));
        }
    }
    for (n, t) in want {
        let times = seen.iter().filter(|(sn, st)| sn == n && st == t).count();
        assert_eq!(
            times, 1,
            "{n} on {t} notified {times} times by three agents: {seen:?}"
        );
    }
    for (_, cancel) in agents {
        cancel.cancel();
    }
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_and_isr_are_reported_as_kafka_topics_describes_them() {
    let cluster = shared_cluster().await;
    common::create_topics(&cluster.bootstrap(), &[("inventory", 6, 3, &[])]).await;
    let agent = foresight_reporter::Reporter::new(foresight_reporter::config::AgentConfig {
        kafka: foresight_reporter::config::KafkaConfig {
            bootstrap_servers: cluster.bootstrap(),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let batch = agent.collect_batch().await.unwrap();
    let topic = batch
        .snapshot
        .unwrap()
        .topics
        .into_iter()
        .find(|t| t.name == "inventory")
        .unwrap();
    let out = tool(
        TOPICS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--describe".into(),
            "--topic".into(),
            "inventory".into(),
        ],
    )
    .await;
    // `Topic: inventory  Partition: 0  Leader: 2  Replicas: 2,3,1  Isr: 2,3,1 …`
    let field = |line: &str, name: &str| -> Vec<i32> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let i = f.iter().position(|x| *x == name).unwrap();
        f[i + 1]
            .split(',')
            .filter(|v| !v.is_empty())
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let mut described = 0;
    for line in out.lines().filter(|l| l.contains("Partition:")) {
        let id = field(line, "Partition:")[0];
        let p = topic.partitions.iter().find(|p| p.id == id).unwrap();
        assert_eq!(vec![p.leader], field(line, "Leader:"), "{line}");
        assert_eq!(p.replicas, field(line, "Replicas:"), "{line}");
        let (mut ours, mut theirs) = (p.isr.clone(), field(line, "Isr:"));
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs, "{line}");
        described += 1;
    }
    assert_eq!(described, 6, "{out}");
}

fn produce(bootstrap: &str, topic: &str, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..n {
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&format!("k{}", i % 7))
                    .payload(&format!("event {i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Subscribes `consumer` to `topic`, reads `n` records within `within` and commits
/// its position.
fn read_and_commit(
    consumer: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    n: usize,
    within: Duration,
) {
    use rdkafka::consumer::{CommitMode, Consumer};
    consumer.subscribe(&[topic]).unwrap();
    let mut read = 0;
    let deadline = std::time::Instant::now() + within;
    while read < n {
        assert!(std::time::Instant::now() < deadline, "read {read} of {n}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            m.unwrap();
            read += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_consumer_group_lags_as_kafka_consumer_groups_reports_it() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let cluster = shared_cluster().await;
    common::create_topics(&cluster.bootstrap(), &[("orders", 3, 3, &[])]).await;
    let bootstrap = cluster.bootstrap();
    tokio::task::spawn_blocking(move || {
        produce(&bootstrap, "orders", 30);
        // A consumer reads everything, commits, and goes away.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "billing")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        read_and_commit(&consumer, "orders", 30, Duration::from_secs(60));
        consumer.unsubscribe();
        produce(&bootstrap, "orders", 1500);
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(
        dir.path(),
        &[
            ("KafkaConsumerGroupAbandoned", "2s"),
            ("KafkaConsumerGroupLagGrowing", "2s"),
        ],
        &receiver.url,
    )
    .await;
    let key = server.store.create_key("acme").unwrap();
    let agent = common::kafka_agent(cluster, &server, &key, false);

    // Foresight's lag per partition against kafka-consumer-groups --describe, once
    // the group has left (its members gone, so that the tool prints offsets).
    let oracle = || async {
        let out = tool(
            CONSUMER_GROUPS,
            vec![
                "--bootstrap-server".into(),
                cluster.bootstrap(),
                "--describe".into(),
                "--group".into(),
                "billing".into(),
            ],
        )
        .await;
        let mut lag = std::collections::BTreeMap::new();
        for l in out.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() == Some(&"billing") && f.len() >= 6 {
                lag.insert(f[2].to_string(), f[5].parse::<f64>().unwrap());
            }
        }
        (lag, out)
    };
    let ours = |batch: &foresight_reporter::proto::v1::TelemetryBatch| {
        let snap = batch.snapshot.as_ref().unwrap();
        foresight_proto::derive::snapshot_series(snap, &Default::default(), 0, &|_| true)
            .into_iter()
            .filter(|s| {
                s.name == "kafka_consumergroup_lag"
                    && s.labels
                        .iter()
                        .any(|l| l.name == "consumergroup" && l.value == "billing")
            })
            .map(|s| {
                let p = s
                    .labels
                    .iter()
                    .find(|l| l.name == "partition")
                    .unwrap()
                    .value
                    .clone();
                (p, s.samples[0].value)
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let (theirs, text) = oracle().await;
    let batch = agent.collect_batch().await.unwrap();
    assert_eq!(ours(&batch), theirs, "kafka-consumer-groups said:\n{text}");
    assert_eq!(theirs.values().sum::<f64>(), 1500.0, "{text}");

    let bootstrap = cluster.bootstrap();
    let (_agent, cancel) = common::run_agent(agent);
    // The lag keeps growing while producers write.
    let writer = tokio::task::spawn_blocking(move || {
        for _ in 0..10 {
            produce(&bootstrap, "orders", 100);
            std::thread::sleep(Duration::from_millis(700));
        }
    });
    let abandoned = common::wait_for(
        &mut receiver.rx,
        "KafkaConsumerGroupAbandoned",
        "firing",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        abandoned["alerts"][0]["labels"]["consumergroup"], "billing",
        "{abandoned}"
    );
    common::wait_for(
        &mut receiver.rx,
        "KafkaConsumerGroupLagGrowing",
        "firing",
        Duration::from_secs(60),
    )
    .await;
    writer.await.unwrap();
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}

/// Whether a notification is `status` and names `alertname` for `group`.
fn notifies(msg: &serde_json::Value, alertname: &str, status: &str, group: &str) -> bool {
    msg["commonLabels"]["alertname"] == alertname
        && msg["status"] == status
        && msg["alerts"].as_array().is_some_and(|alerts| {
            alerts
                .iter()
                .any(|a| a["labels"]["consumergroup"] == group && a["status"] == status)
        })
}

/// The line `kafka-consumer-groups --describe --group <group> <flag>` prints for the
/// group, split in columns.
async fn describe_group(group: &str, flag: &str) -> (Vec<String>, String) {
    let out = tool(
        CONSUMER_GROUPS,
        vec![
            "--bootstrap-server".into(),
            cluster().bootstrap(),
            "--describe".into(),
            "--group".into(),
            group.into(),
            flag.into(),
        ],
    )
    .await;
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(group))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    (row, out)
}

/// A group on the KIP-848 protocol (`group.protocol=consumer`), with a member that holds
/// its partitions and lag: the classic DescribeGroups makes a dead, empty group of it
/// (and the pack once paged it as abandoned); Foresight describes it with
/// ConsumerGroupDescribe, as `kafka-consumer-groups --describe --state` and `--members`
/// show it, leaves it alone while its consumer runs, and calls it abandoned once the
/// consumer has gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_group_is_described_as_its_coordinator_sees_it_and_abandoned_only_when_gone() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const GROUP: &str = "payments-848";
    let cluster = shared_cluster().await;
    common::create_topics(&cluster.bootstrap(), &[("payments", 3, 3, &[])]).await;
    let bootstrap = cluster.bootstrap();
    tokio::task::spawn_blocking(move || produce(&bootstrap, "payments", 300))
        .await
        .unwrap();
    // The consumer reads 30 records, commits, pauses its partitions and keeps polling:
    // a live member with 270 records of lag, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let consumer_thread = {
        let stop = stop.clone();
        let bootstrap = cluster.bootstrap();
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", GROUP)
                .set("group.protocol", "consumer")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            read_and_commit(&consumer, "payments", 30, Duration::from_secs(90));
            consumer.pause(&consumer.assignment().unwrap()).unwrap();
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    m.unwrap();
                }
            }
            consumer.unsubscribe();
        })
    };
    tokio::task::spawn_blocking(move || ready_rx.recv_timeout(Duration::from_secs(120)))
        .await
        .unwrap()
        .expect("the KIP-848 consumer reads and commits");

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(
        dir.path(),
        &[("KafkaConsumerGroupAbandoned", "2s")],
        &receiver.url,
    )
    .await;
    let key = server.store.create_key("acme").unwrap();
    let agent = common::kafka_agent(cluster, &server, &key, false);

    // The agent's view once the group has settled, against the tool's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let group = loop {
        let batch = agent.collect_batch().await.unwrap();
        let g = batch
            .snapshot
            .unwrap()
            .groups
            .into_iter()
            .find(|g| g.name == GROUP);
        if let Some(g) = g.filter(|g| {
            g.state == "Stable"
                && g.member_details.len() == 1
                && g.member_details[0].reconciled
                && g.member_details[0].partitions == 3
        }) {
            break g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{GROUP} not stable with its member in the agent's view"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(group.protocol, "consumer");
    assert_eq!(group.error, "");
    assert_eq!(group.members, 1);
    assert!(group.group_epoch > 0 && group.assignment_epoch == group.group_epoch);
    assert!(!group.offsets.is_empty(), "{group:?}");
    // GROUP, COORDINATOR (ID), ASSIGNMENT-STRATEGY, STATE, #MEMBERS
    let (state, text) = describe_group(GROUP, "--state").await;
    assert_eq!(
        state.get(state.len().wrapping_sub(2)).map(String::as_str),
        Some("Stable"),
        "{text}"
    );
    assert_eq!(state.last().map(String::as_str), Some("1"), "{text}");
    // GROUP, CONSUMER-ID, HOST, CLIENT-ID, #PARTITIONS
    let (member, text) = describe_group(GROUP, "--members").await;
    assert_eq!(
        member.get(1),
        Some(&group.member_details[0].member_id),
        "{text}"
    );
    assert_eq!(member.last().map(String::as_str), Some("3"), "{text}");

    // While the consumer holds its partitions, its 270 records of lag are not an
    // abandoned group: the pack (2 s `for`, evaluated every 500 ms) stays quiet over
    // ten of the agent's cycles.
    let (_agent, cancel) = common::run_agent(agent);
    let quiet_until = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(msg)) = tokio::time::timeout_at(quiet_until, receiver.rx.recv()).await {
        assert!(
            !notifies(&msg, "KafkaConsumerGroupAbandoned", "firing", GROUP),
            "a live KIP-848 group was called abandoned: {msg}"
        );
    }
    // Once the consumer has left, it is.
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || consumer_thread.join().unwrap())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let msg = tokio::time::timeout_at(deadline, receiver.rx.recv())
            .await
            .expect("KafkaConsumerGroupAbandoned for the KIP-848 group within 90 s")
            .expect("receiver open");
        if notifies(&msg, "KafkaConsumerGroupAbandoned", "firing", GROUP) {
            break;
        }
    }
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}

const GET_OFFSETS: &str = "org.apache.kafka.tools.GetOffsetShell";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";
const DELETE_RECORDS: &str = "org.apache.kafka.tools.DeleteRecordsCommand";

/// `kafka-topics --describe --topic <topic>`'s view of it: its replication factor and
/// the `min.insync.replicas` set on the topic (its Configs column), with the output.
async fn topic_settings(topic: &str) -> (Option<i32>, Option<i32>, String) {
    let out = tool(
        TOPICS,
        vec![
            "--bootstrap-server".into(),
            cluster().bootstrap(),
            "--describe".into(),
            "--topic".into(),
            topic.into(),
        ],
    )
    .await;
    // `Topic: t  TopicId: …  PartitionCount: 2  ReplicationFactor: 2  Configs: min.insync.replicas=2,…`
    let header: Vec<&str> = out
        .lines()
        .find(|l| !l.contains("Partition:"))
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let after = |name: &str| {
        header
            .iter()
            .position(|f| *f == name)
            .and_then(|i| header.get(i + 1))
    };
    let rf = after("ReplicationFactor:").and_then(|v| v.parse().ok());
    let min_isr = after("Configs:").and_then(|configs| {
        configs
            .split(',')
            .find_map(|c| c.strip_prefix("min.insync.replicas="))
            .and_then(|v| v.parse().ok())
    });
    (rf, min_isr, out)
}

/// A query's single value on `server`, as the Prometheus API gives it.
async fn query_value(server: &foresight_ingest::Server, key: &str, q: &str) -> Option<String> {
    let url = reqwest::Url::parse_with_params(
        &format!("https://{}/api/v1/query", server.addr),
        &[("query", q)],
    )
    .unwrap();
    let v: serde_json::Value = common::client(&server.fingerprint)
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = v["data"]["result"].as_array()?;
    (r.len() == 1).then(|| r[0]["value"][1].as_str().unwrap_or_default().to_string())
}

/// A topic created with replication factor 2 and min.insync.replicas 2, as
/// `kafka-topics --describe` shows it, cannot lose a broker for acks=all producers: the
/// pack says so through the agent, the ingest and the webhook, with the replication
/// factor read back in the description. Its neighbour with a replica to spare stays
/// quiet, and so do the internal-topic rules on this cluster's internal topics (three
/// replicas, and `__consumer_offsets` inheriting the brokers' default
/// min.insync.replicas 1, as `kafka-configs --describe --all` shows it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_with_min_insync_replicas_at_its_replication_factor_reaches_the_webhook() {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    const TIGHT: &str = "settlements-rf2";
    const SPARE: &str = "settlements-rf3";
    let cluster = shared_cluster().await;
    common::create_topics(
        &cluster.bootstrap(),
        &[
            (TIGHT, 2, 2, &[("min.insync.replicas", "2")]),
            (SPARE, 2, 3, &[("min.insync.replicas", "2")]),
        ],
    )
    .await;
    let (rf, min_isr, text) = topic_settings(TIGHT).await;
    assert_eq!((rf, min_isr), (Some(2), Some(2)), "{text}");
    let (rf, min_isr, text) = topic_settings(SPARE).await;
    assert_eq!((rf, min_isr), (Some(3), Some(2)), "{text}");

    // A group coordinator lookup creates __consumer_offsets if no test has yet, so
    // that the internal-topic rules have it to judge.
    let bootstrap = cluster.bootstrap();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "settlements-probe")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(TIGHT, 0);
        consumer
            .committed_offsets(tpl, Duration::from_secs(60))
            .expect("the group coordinator answers");
    })
    .await
    .unwrap();
    let (offsets_rf, _, text) = topic_settings("__consumer_offsets").await;
    assert_eq!(offsets_rf, Some(3), "{text}");
    let all = tool(
        CONFIGS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--describe".into(),
            "--all".into(),
            "--entity-type".into(),
            "topics".into(),
            "--entity-name".into(),
            "__consumer_offsets".into(),
        ],
    )
    .await;
    // `  min.insync.replicas=1 sensitive=false synonyms={DEFAULT_CONFIG:min.insync.replicas=1}`
    assert!(
        all.lines()
            .any(|l| l.trim_start().starts_with("min.insync.replicas=1 ")),
        "{all}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(
        dir.path(),
        &[
            ("KafkaMinInsyncReplicasNotBelowReplicationFactor", "1s"),
            ("KafkaInternalTopicReplicationFactorLow", "1s"),
            ("KafkaInternalTopicMinInsyncReplicasOne", "1s"),
        ],
        &receiver.url,
    )
    .await;
    let key = server.store.create_key("acme").unwrap();
    let agent = common::kafka_agent(cluster, &server, &key, false);
    let started = tokio::time::Instant::now();
    let (_agent, cancel) = common::run_agent(agent);

    // Until the tight topic's alert has come, then five seconds more for anything else.
    let mut fired: Option<serde_json::Value> = None;
    let mut settle: Option<tokio::time::Instant> = None;
    let deadline = started + Duration::from_secs(90);
    loop {
        let until = settle.unwrap_or(deadline);
        let Ok(msg) = tokio::time::timeout_at(until, receiver.rx.recv()).await else {
            assert!(settle.is_some(), "no alert for {TIGHT} within 90 s");
            break;
        };
        let msg = msg.unwrap();
        for a in msg["alerts"].as_array().unwrap() {
            let name = a["labels"]["alertname"].as_str().unwrap_or_default();
            let topic = a["labels"]["topic"].as_str().unwrap_or_default();
            assert!(
                !name.starts_with("KafkaInternalTopic"),
                "an internal-topic rule fired on Kafka's defaults: {a}"
            );
            if name != "KafkaMinInsyncReplicasNotBelowReplicationFactor" {
                continue;
            }
            assert_ne!(topic, SPARE, "a topic with a replica to spare: {a}");
            if topic == TIGHT && a["status"] == "firing" && fired.is_none() {
                eprintln!(
                    "KafkaMinInsyncReplicasNotBelowReplicationFactor fired {:.1} s after the agent started",
                    started.elapsed().as_secs_f64()
                );
                fired = Some(a.clone());
                settle = Some(tokio::time::Instant::now() + Duration::from_secs(5));
            }
        }
    }
    let alert = fired.expect("the alert fired");
    assert_eq!(alert["labels"]["cluster"], cluster.cluster_id.as_str());
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(
        alert["annotations"]["summary"],
        "Topic settlements-rf2 cannot lose a broker: min.insync.replicas 2 is not below its replication factor"
    );
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("has min.insync.replicas 2 and replication factor 2:"),
        "{description}"
    );

    // The internal-topic rules were quiet with their inputs present: the offsets topic's
    // three replicas and min.insync.replicas 1, and the brokers' default of 1.
    for (q, want) in [
        (
            r#"kafka_topic_replication_factor{topic="__consumer_offsets"}"#,
            "3",
        ),
        (
            r#"kafka_topic_config_min_insync_replicas{topic="__consumer_offsets"}"#,
            "1",
        ),
        (
            r#"count(kafka_broker_config_risky{config="min.insync.replicas", value="1"})"#,
            "3",
        ),
    ] {
        assert_eq!(
            query_value(&server, &key, q).await.as_deref(),
            Some(want),
            "{q}"
        );
    }
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}

/// `n` records written to `partition` of `topic`.
fn produce_to_partition(bootstrap: &str, topic: &str, partition: i32, n: usize) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..n {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(partition)
                    .key("k")
                    .payload(&format!("click {i}")),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A group that read everything but committed offset 10 on each partition, whose
/// records `kafka-delete-records` then removes up to offsets 60 and 80: the pack reports
/// the 120 offsets the group will never read, as `GetOffsetShell --time -2` (the log
/// start offsets) and `kafka-consumer-groups --describe` (the committed ones) count
/// them; resetting the group as the alert says resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_committed_offsets_fall_behind_the_log_start_is_reported() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

    const TOPIC: &str = "clickstream-archive";
    const GROUP: &str = "clickstream-reports";
    const ALERT: &str = "KafkaConsumerGroupOffsetBelowLogStart";
    let cluster = shared_cluster().await;
    common::create_topics(&cluster.bootstrap(), &[(TOPIC, 2, 3, &[])]).await;
    let bootstrap = cluster.bootstrap();
    tokio::task::spawn_blocking(move || {
        for p in 0..2 {
            produce_to_partition(&bootstrap, TOPIC, p, 100);
        }
        // The consumer reads all 200 records but commits offset 10 on each partition,
        // and leaves.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", GROUP)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[TOPIC]).unwrap();
        let mut read = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while read < 200 {
            assert!(std::time::Instant::now() < deadline, "read {read} of 200");
            if let Some(m) = consumer.poll(Duration::from_millis(500)) {
                m.unwrap();
                read += 1;
            }
        }
        let mut early = rdkafka::TopicPartitionList::new();
        for p in 0..2 {
            early
                .add_partition_offset(TOPIC, p, rdkafka::Offset::Offset(10))
                .unwrap();
        }
        consumer.commit(&early, CommitMode::Sync).unwrap();
        consumer.unsubscribe();
    })
    .await
    .unwrap();

    // The records below offsets 60 and 80 deleted, as retention would.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        format!(
            r#"{{"partitions":[{{"topic":"{TOPIC}","partition":0,"offset":60}},{{"topic":"{TOPIC}","partition":1,"offset":80}}],"version":1}}"#
        ),
    )
    .unwrap();
    tool(
        DELETE_RECORDS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--offset-json-file".into(),
            file.path().display().to_string(),
        ],
    )
    .await;

    // Kafka's view: the log start offsets (`topic:partition:offset`) and the committed
    // offsets (GROUP TOPIC PARTITION CURRENT-OFFSET …).
    let starts = tool(
        GET_OFFSETS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--topic".into(),
            TOPIC.into(),
            "--time".into(),
            "-2".into(),
        ],
    )
    .await;
    let log_start: std::collections::BTreeMap<String, i64> = starts
        .lines()
        .filter_map(|l| {
            let (rest, offset) = l.trim().rsplit_once(':')?;
            let (_, partition) = rest.rsplit_once(':')?;
            Some((partition.to_string(), offset.parse().ok()?))
        })
        .collect();
    assert_eq!(log_start.len(), 2, "{starts}");
    let described = tool(
        CONSUMER_GROUPS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--describe".into(),
            "--group".into(),
            GROUP.into(),
        ],
    )
    .await;
    let committed: std::collections::BTreeMap<String, i64> = described
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&GROUP) && f.len() >= 4)
                .then(|| Some((f[2].to_string(), f[3].parse().ok()?)))
                .flatten()
        })
        .collect();
    assert_eq!(committed.len(), 2, "{described}");
    let lost: i64 = committed
        .iter()
        .map(|(p, c)| (log_start[p] - c).max(0))
        .sum();
    assert_eq!(lost, 120, "{starts}\n{described}");

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(dir.path(), &[(ALERT, "2s")], &receiver.url).await;
    let key = server.store.create_key("acme").unwrap();
    let agent = common::kafka_agent(cluster, &server, &key, false);
    let started = tokio::time::Instant::now();
    let (_agent, cancel) = common::run_agent(agent);
    let deadline = started + Duration::from_secs(90);
    let alert = loop {
        let msg = tokio::time::timeout_at(deadline, receiver.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {ALERT} for {GROUP} within 90 s"))
            .expect("receiver open");
        if notifies(&msg, ALERT, "firing", GROUP) {
            break msg["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["labels"]["consumergroup"] == GROUP)
                .unwrap()
                .clone();
        }
    };
    eprintln!(
        "{ALERT} fired {:.1} s after the agent started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(alert["labels"]["topic"], TOPIC, "{alert}");
    assert_eq!(alert["labels"]["cluster"], cluster.cluster_id.as_str());
    assert_eq!(
        alert["annotations"]["summary"],
        format!(
            "Consumer group {GROUP} missed {lost} offsets of {TOPIC}, deleted before it read them"
        )
    );

    // The alert's own remedy: reset the group to the log start; it resolves.
    let reset = tool(
        CONSUMER_GROUPS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--reset-offsets".into(),
            "--group".into(),
            GROUP.into(),
            "--topic".into(),
            TOPIC.into(),
            "--to-earliest".into(),
            "--execute".into(),
        ],
    )
    .await;
    // GROUP TOPIC PARTITION NEW-OFFSET
    for l in reset.lines().filter(|l| l.starts_with(GROUP)) {
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            f.get(3).and_then(|v| v.parse::<i64>().ok()),
            log_start.get(f[2]).copied(),
            "{reset}"
        );
    }
    let reset_at = tokio::time::Instant::now();
    let deadline = reset_at + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, receiver.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{ALERT} for {GROUP} not resolved within 60 s"))
            .expect("receiver open");
        if notifies(&msg, ALERT, "resolved", GROUP) {
            break;
        }
    }
    eprintln!(
        "{ALERT} resolved {:.1} s after the reset",
        reset_at.elapsed().as_secs_f64()
    );
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}
