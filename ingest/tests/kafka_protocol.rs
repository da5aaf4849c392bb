//! The agent's second Kafka client (the admin RPCs librdkafka lacks) against a real
//! Apache Kafka 4.x KRaft cluster on loopback, with Kafka's own tools as oracles: the
//! quorum as `kafka-metadata-quorum` describes it, open and hanging transactions as
//! `kafka-transactions find-hanging` finds them, and the client's TLS and SASL paths
//! against real broker listeners.
//!
//! The cluster lets a hanging transaction be made for real: partition verification
//! (KIP-890's server-side defence) is off, so a transactional write the coordinator
//! never heard of is accepted; the maximum transaction timeout is 8 s so that the test
//! need not wait 15 minutes, and the coordinator's sweep of timed-out transactions is
//! slowed to 10 minutes so that a legitimate transaction stays open past it. Retention
//! is checked twice a second, so that a log start offset moves by time within the test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use foresight_proto::v1::{ClusterSnapshot, OpenTransaction, TransactionVerdict};
use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, KafkaConfig};
use foresight_testkit::{Cluster, ClusterSpec, SASL_PASSWORD, SASL_USER, Version};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    DescribeClusterRequest, InitProducerIdRequest, ProduceRequest, ProducerId, TopicName,
    TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const TRANSACTIONS: &str = "org.apache.kafka.tools.TransactionsCommand";
const QUORUM: &str = "org.apache.kafka.tools.MetadataQuorumCommand";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut spec = ClusterSpec::new(Version::Kafka4)
            .broker_prop("transaction.partition.verification.enable", "false")
            .broker_prop("transaction.max.timeout.ms", "8000")
            .broker_prop("log.retention.check.interval.ms", "500")
            .broker_prop(
                "transaction.abort.timed.out.transaction.cleanup.interval.ms",
                "600000",
            );
        spec.secure = true;
        Cluster::start(spec).expect("a real Kafka cluster starts")
    })
}

async fn shared_cluster() -> &'static Cluster {
    tokio::task::spawn_blocking(cluster).await.unwrap()
}

/// Output of one of Kafka's tools against the shared cluster, which must succeed.
async fn tool(class: &'static str, args: Vec<String>) -> String {
    common::kafka_tool(cluster(), class, args).await
}

fn agent_config(bootstrap: String, properties: BTreeMap<String, String>) -> AgentConfig {
    AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: bootstrap,
            properties,
            request_timeout_ms: 5_000,
            ..KafkaConfig::default()
        },
        interval_secs: 1,
        ..AgentConfig::default()
    }
}

/// A table printed by Kafka's tools (a header row, then rows), as maps by column.
fn table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    lines
        .map(|l| {
            names
                .iter()
                .zip(l.split_whitespace())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The node ids of a `--status` line: `[101,102]` (3.x) or `[{"id": 101, …}]` (4.x).
fn ids(line: &str) -> BTreeSet<i32> {
    let re = regex::Regex::new(r#""id":\s*(\d+)"#).unwrap();
    let found: BTreeSet<i32> = re
        .captures_iter(line)
        .map(|c| c[1].parse().unwrap())
        .collect();
    if !found.is_empty() || line.contains("\"id\"") {
        return found;
    }
    let list = line.split_once('[').map_or("", |(_, r)| r);
    list.trim_end_matches(']')
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn status_field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in:\n{status}"))
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_is_reported_as_kafka_metadata_quorum_reports_it() {
    let cluster = shared_cluster().await;
    let describe = |what: &str| {
        vec![
            "--bootstrap-server".to_string(),
            cluster.bootstrap(),
            "describe".into(),
            format!("--{what}"),
        ]
    };
    let status = tool(QUORUM, describe("status")).await;
    let before = table(&tool(QUORUM, describe("replication")).await);
    let agent = Reporter::new(agent_config(cluster.bootstrap(), BTreeMap::new())).unwrap();
    let batch = agent.collect_batch().await.unwrap();
    let after = table(&tool(QUORUM, describe("replication")).await);
    assert_eq!(common::protocol_up(&batch, "quorum"), Some(1.0));
    let snap = batch.snapshot.as_ref().unwrap();
    let q = snap.quorum.as_ref().expect("the snapshot has the quorum");

    // The status: leader, epoch, voters, observers.
    let leader: i32 = status_field(&status, "LeaderId").parse().unwrap();
    let epoch: i32 = status_field(&status, "LeaderEpoch").parse().unwrap();
    assert_eq!((q.leader_id, q.leader_epoch), (leader, epoch), "{status}");
    assert_eq!(
        snap.controller_id, leader,
        "the controller is the quorum leader"
    );
    let voters: BTreeSet<i32> = q.voters.iter().map(|v| v.id).collect();
    let observers: BTreeSet<i32> = q.observers.iter().map(|v| v.id).collect();
    assert_eq!(
        voters,
        ids(status_field(&status, "CurrentVoters")),
        "{status}"
    );
    assert_eq!(
        observers,
        ids(status_field(&status, "CurrentObservers")),
        "{status}"
    );
    assert_eq!(voters, BTreeSet::from([101, 102, 103]));
    assert_eq!(observers, BTreeSet::from([1, 2, 3]));

    // The replication: each node's log end offset lies between the tool's two runs,
    // and the tool's Status matches the agent's leader and kinds.
    for (kind, replicas) in [("voter", &q.voters), ("observer", &q.observers)] {
        for r in replicas {
            let row = |t: &[BTreeMap<String, String>]| {
                t.iter()
                    .find(|row| row["NodeId"] == r.id.to_string())
                    .cloned()
                    .unwrap_or_else(|| panic!("node {} not in {t:?}", r.id))
            };
            let (b, a) = (row(&before), row(&after));
            let leo = |row: &BTreeMap<String, String>| row["LogEndOffset"].parse::<i64>().unwrap();
            assert!(
                leo(&b) <= r.log_end_offset && r.log_end_offset <= leo(&a),
                "node {}: the tool saw {} then {}, the agent {}",
                r.id,
                leo(&b),
                leo(&a),
                r.log_end_offset
            );
            let want = match (kind, r.id == leader) {
                ("voter", true) => "Leader",
                ("voter", false) => "Follower",
                _ => "Observer",
            };
            assert_eq!(a["Status"], want, "node {}", r.id);
            assert!(r.last_fetch_timestamp_ms > 0 && r.last_caught_up_timestamp_ms > 0);
        }
    }
    // Racks come from DescribeCluster (librdkafka's metadata does not carry them).
    let racks: BTreeMap<i32, String> = snap
        .brokers
        .iter()
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    assert_eq!(
        racks,
        BTreeMap::from([
            (1, "rack-1".to_string()),
            (2, "rack-2".to_string()),
            (3, "rack-3".to_string())
        ])
    );
}

/// A transactional write that no coordinator knows: an idempotent producer id, a batch
/// marked transactional, sent straight to the leader at Produce v11 (v12 and later ask
/// the coordinator). Returns the producer id and the batch's offset.
async fn write_ghost_transaction(agent: &Reporter, topic: &str, leader: i32) -> (i64, i16, i64) {
    let client = agent.protocol_client().expect("the protocol client is on");
    // A broker answers COORDINATOR_LOAD_IN_PROGRESS until it has its first block of
    // producer ids from the controller.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let init = loop {
        let init = client
            .send_to(
                leader,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
            .await
            .unwrap();
        if init.error_code != 14 || std::time::Instant::now() > deadline {
            break init;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(init.error_code, 0, "InitProducerId");
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: 0,
        timestamp: common::now_ms(),
        key: None,
        value: Some(bytes::Bytes::from_static(b"never committed")),
        headers: Default::default(),
    };
    let mut records = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut records,
        &[record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    let produce = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str(
            "foresight-ghost",
        ))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records.freeze())),
                ]),
        ]);
    let r = client.send_to_at_most(leader, &produce, 11).await.unwrap();
    let p = &r.responses[0].partition_responses[0];
    assert_eq!(
        p.error_code, 0,
        "the ghost write is accepted: {:?}",
        p.error_message
    );
    (pid, epoch, p.base_offset)
}

fn leader_of(snap: &ClusterSnapshot, topic: &str) -> i32 {
    snap.topics
        .iter()
        .find(|t| t.name == topic)
        .unwrap_or_else(|| panic!("no topic {topic}"))
        .partitions[0]
        .leader
}

fn found<'a>(snap: &'a ClusterSnapshot, topic: &str) -> Option<&'a OpenTransaction> {
    snap.open_transactions.iter().find(|t| t.topic == topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_and_hanging_transactions_are_found_as_find_hanging_finds_them() {
    let cluster = shared_cluster().await;
    let (legit, ghost) = ("payments", "ghosts");
    common::create_topics(
        &cluster.bootstrap(),
        &[(legit, 1, 3, &[]), (ghost, 1, 3, &[])],
    )
    .await;

    // A legitimate transaction: opened, written to, never committed; its coordinator
    // keeps it (the sweep of timed-out transactions is slowed in this cluster).
    let bootstrap = cluster.bootstrap();
    let producer = tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("transactional.id", "foresight-payments")
            .set("transaction.timeout.ms", "8000")
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        producer.begin_transaction().unwrap();
        producer
            .send(BaseRecord::to(legit).key("k").payload("open"))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
        producer
    })
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(dir.path(), &[], &receiver.url).await;
    let key = server.store.create_key("acme").unwrap();
    let mut config = common::kafka_agent_config(cluster, &server, &key, false);
    config.kafka.request_timeout_ms = 5_000;
    let agent = Reporter::new(config).unwrap();

    // Fresh: open, not hanging, with its transactional id, and the cluster's maximum.
    let batch = agent.collect_batch().await.unwrap();
    let snap = batch.snapshot.clone().unwrap();
    assert_eq!(snap.transaction_max_timeout_ms, 8_000);
    assert_eq!(common::protocol_up(&batch, "transactions"), Some(1.0));
    let open = found(&snap, legit).expect("the open transaction is reported");
    assert_eq!(open.verdict(), TransactionVerdict::Open);
    assert_eq!(open.transactional_id, "foresight-payments");
    assert_eq!(open.start_offset, 0);

    let (pid, epoch, offset) =
        write_ghost_transaction(&agent, ghost, leader_of(&snap, ghost)).await;

    // Past the maximum timeout: the ghost is hanging, the legitimate one long open.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let snap = loop {
        let snap = agent.collect_batch().await.unwrap().snapshot.unwrap();
        let verdicts = (
            found(&snap, ghost).map(OpenTransaction::verdict),
            found(&snap, legit).map(OpenTransaction::verdict),
        );
        if verdicts
            == (
                Some(TransactionVerdict::Hanging),
                Some(TransactionVerdict::LongOpen),
            )
        {
            break snap;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "verdicts after 60 s: {verdicts:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let hanging = found(&snap, ghost).unwrap();
    assert_eq!(
        (
            hanging.producer_id,
            hanging.producer_epoch,
            hanging.start_offset
        ),
        (pid, i32::from(epoch), offset)
    );
    assert_eq!(
        hanging.transactional_id, "",
        "no coordinator knows the producer id"
    );
    assert_eq!(found(&snap, legit).unwrap().coordinator_state, "Ongoing");

    // find-hanging agrees, row for row: the ghost, and not the legitimate one.
    let mut rows = Vec::new();
    for b in cluster.brokers() {
        let out = tool(
            TRANSACTIONS,
            vec![
                "--bootstrap-server".into(),
                cluster.bootstrap(),
                "find-hanging".into(),
                "--broker-id".into(),
                b.id.to_string(),
                "--max-transaction-timeout".into(),
                "0".into(),
            ],
        )
        .await;
        rows.extend(table(&out));
    }
    rows.sort_by(|a, b| a["Topic"].cmp(&b["Topic"]));
    rows.dedup();
    let theirs: Vec<(String, String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["Topic"].clone(),
                r["Partition"].clone(),
                r["ProducerId"].clone(),
                r["ProducerEpoch"].clone(),
                r["StartOffset"].clone(),
            )
        })
        .collect();
    let ours: Vec<(String, String, String, String, String)> = snap
        .open_transactions
        .iter()
        .filter(|t| t.verdict() == TransactionVerdict::Hanging)
        .map(|t| {
            (
                t.topic.clone(),
                t.partition.to_string(),
                t.producer_id.to_string(),
                t.producer_epoch.to_string(),
                t.start_offset.to_string(),
            )
        })
        .collect();
    assert_eq!(ours, theirs, "find-hanging printed {rows:?}");

    // The alert names it and carries the command that clears it; running that command
    // resolves it.
    let (_agent, cancel) = common::run_agent(agent);
    let msg = common::wait_for(
        &mut receiver.rx,
        "KafkaTransactionHanging",
        "firing",
        Duration::from_secs(60),
    )
    .await;
    let alerts = msg["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "only the ghost hangs: {msg}");
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["topic"], ghost);
    assert_eq!(alert["labels"]["producer_id"], pid.to_string());
    let command = alert["annotations"]["command"]
        .as_str()
        .unwrap()
        .to_string();
    let leader = cluster.node(hanging.leader).address();
    assert_eq!(
        command,
        format!(
            "kafka-transactions.sh --bootstrap-server {leader} abort --topic {ghost} \
             --partition 0 --start-offset {offset}"
        )
    );
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains(&format!(
            "Producer {pid} (epoch {epoch}, no transactional id known)"
        )),
        "{description}"
    );
    let args: Vec<String> = command
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect();
    tool(TRANSACTIONS, args).await;
    common::wait_for(
        &mut receiver.rx,
        "KafkaTransactionHanging",
        "resolved",
        Duration::from_secs(60),
    )
    .await;
    cancel.cancel();
    tokio::task::spawn_blocking(move || {
        producer.abort_transaction(Duration::from_secs(30)).unwrap();
    })
    .await
    .unwrap();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_connects_over_tls_and_sasl_as_librdkafka_does() {
    let cluster = shared_cluster().await;
    let ca = cluster.ca_file().unwrap().display().to_string();
    let cases: &[(&str, Option<&str>)] = &[
        ("SSL", None),
        ("SASL_SSL", Some("PLAIN")),
        ("SASL_SSL", Some("SCRAM-SHA-256")),
        ("SASL_SSL", Some("SCRAM-SHA-512")),
        ("SASL_PLAINTEXT", Some("SCRAM-SHA-512")),
        ("SASL_PLAINTEXT", Some("PLAIN")),
    ];
    let props = |protocol: &str, mechanism: Option<&str>, password: &str| {
        let mut p = BTreeMap::from([("security.protocol".to_string(), protocol.to_string())]);
        if protocol.ends_with("SSL") {
            p.insert("ssl.ca.location".into(), ca.clone());
        }
        if let Some(m) = mechanism {
            p.insert("sasl.mechanisms".into(), m.into());
            p.insert("sasl.username".into(), SASL_USER.into());
            p.insert("sasl.password".into(), password.into());
        }
        p
    };
    for (protocol, mechanism) in cases {
        let bootstrap = cluster.bootstrap_for(protocol).unwrap();
        let agent = Reporter::new(agent_config(
            bootstrap,
            props(protocol, *mechanism, SASL_PASSWORD),
        ))
        .unwrap();
        let batch = agent.collect_batch().await.unwrap_or_else(|e| {
            panic!("{protocol} {mechanism:?}: {e}");
        });
        let snap = batch.snapshot.as_ref().unwrap();
        assert_eq!(
            snap.brokers.len(),
            3,
            "{protocol} {mechanism:?}: librdkafka"
        );
        for part in ["quorum", "cluster", "transactions"] {
            assert_eq!(
                common::protocol_up(&batch, part),
                Some(1.0),
                "{protocol} {mechanism:?}: {part}"
            );
        }
        assert!(snap.quorum.as_ref().is_some_and(|q| q.leader_id > 100));
    }

    // Refusals say what went wrong.
    let try_client = |bootstrap: String, p: BTreeMap<String, String>| async move {
        let client =
            foresight_reporter::protocol::Client::new(&bootstrap, &p, Duration::from_secs(5))
                .unwrap();
        client
            .send_any(&DescribeClusterRequest::default())
            .await
            .unwrap_err()
            .to_string()
    };
    let err = try_client(
        cluster.bootstrap_for("SASL_SSL").unwrap(),
        props("SASL_SSL", Some("SCRAM-SHA-512"), "wrong"),
    )
    .await;
    assert!(
        err.contains("SASL SCRAM-SHA-512 authentication failed"),
        "{err}"
    );
    let mut untrusted = props("SSL", None, "");
    untrusted.remove("ssl.ca.location");
    let err = try_client(cluster.bootstrap_for("SSL").unwrap(), untrusted).await;
    assert!(
        err.contains("tls") && err.contains("UnknownIssuer"),
        "{err}"
    );
}

/// Produces `n` small records to partition 0 of `topic`, each acknowledged by all ISR.
async fn produce(topic: &'static str, n: usize) {
    let bootstrap = cluster().bootstrap();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()
            .unwrap();
        for i in 0..n {
            let payload = format!("record {i} {}", "x".repeat(100));
            producer
                .send(
                    BaseRecord::to(topic)
                        .partition(0)
                        .key("k")
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_dirs_and_sizes_agree_with_kafka_log_dirs() {
    let cluster = shared_cluster().await;
    let topic = "sized";
    common::create_topics(&cluster.bootstrap(), &[(topic, 2, 3, &[])]).await;
    produce(topic, 200).await;
    let agent = Reporter::new(agent_config(cluster.bootstrap(), BTreeMap::new())).unwrap();
    // Replicas catch up and flush sizes asynchronously: compare once two reads of the
    // tool agree, and the agent's read lies between them.
    let describe = || {
        tool(
            "org.apache.kafka.tools.LogDirsCommand",
            vec![
                "--bootstrap-server".into(),
                cluster.bootstrap(),
                "--describe".into(),
                "--topic-list".into(),
                topic.into(),
            ],
        )
    };
    let parse = |out: String| -> BTreeMap<(i64, String, String), i64> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON in {out}"));
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut sizes = BTreeMap::new();
        for b in v["brokers"].as_array().unwrap() {
            for d in b["logDirs"].as_array().unwrap() {
                for p in d["partitions"].as_array().unwrap() {
                    sizes.insert(
                        (
                            b["broker"].as_i64().unwrap(),
                            d["logDir"].as_str().unwrap().to_string(),
                            p["partition"].as_str().unwrap().to_string(),
                        ),
                        p["size"].as_i64().unwrap(),
                    );
                }
            }
        }
        sizes
    };
    let mut tries = 0;
    let (tool_sizes, snap) = loop {
        let before = parse(describe().await);
        let snap = agent.collect_batch().await.unwrap().snapshot.unwrap();
        let after = parse(describe().await);
        if before == after || tries == 5 {
            break (after, snap);
        }
        tries += 1;
    };
    assert_eq!(
        tool_sizes.len(),
        6,
        "2 partitions × 3 replicas: {tool_sizes:?}"
    );
    let mut agent_sizes = BTreeMap::new();
    for d in &snap.log_dirs {
        for r in d.replicas.iter().filter(|r| r.topic == topic) {
            agent_sizes.insert(
                (
                    i64::from(d.broker),
                    d.path.clone(),
                    format!("{}-{}", r.topic, r.partition),
                ),
                r.size_bytes,
            );
        }
    }
    assert_eq!(agent_sizes, tool_sizes);
    // The records went to partition 0: its three replicas hold them, partition 1's none.
    for ((_, _, partition), size) in &tool_sizes {
        assert_eq!(*size > 20_000, partition == "sized-0", "{tool_sizes:?}");
    }
    // Each broker's dirs with their file system's size, as the host sees it.
    let brokers: BTreeSet<i32> = snap.log_dirs.iter().map(|d| d.broker).collect();
    assert_eq!(brokers, cluster.brokers().map(|b| b.id).collect());
    for d in &snap.log_dirs {
        let host = foresight_reporter::collector::host::log_dirs(&[&d.path]);
        assert_eq!(Some(d.total_bytes as u64), host[0].total_bytes, "{d:?}");
        assert!(
            d.usable_bytes > 0 && d.usable_bytes <= d.total_bytes,
            "{d:?}"
        );
        assert_eq!(d.error_code, 0);
    }
    // The derived series: the topic's bytes on disk, all replicas.
    let series = foresight_proto::derive::snapshot_series(&snap, &BTreeMap::new(), 1, &|_| true);
    let size = series
        .iter()
        .find(|s| s.name == "kafka_topic_size_bytes" && s.labels.iter().any(|l| l.value == topic))
        .unwrap()
        .samples[0]
        .value;
    assert_eq!(size as i64, agent_sizes.values().sum::<i64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_features_and_configs_agree_with_kafkas_tools() {
    let cluster = shared_cluster().await;
    let agent = Reporter::new(agent_config(cluster.bootstrap(), BTreeMap::new())).unwrap();
    let batch = agent.collect_batch().await.unwrap();
    assert_eq!(common::protocol_up(&batch, "facts"), Some(1.0));
    assert_eq!(common::protocol_up(&batch, "log_dirs"), Some(1.0));
    let snap = batch.snapshot.unwrap();

    // Finalized features as kafka-features describes them; metadata.version by name.
    let features = tool(
        "org.apache.kafka.tools.FeatureCommand",
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "describe".into(),
        ],
    )
    .await;
    let mut checked = 0;
    let feature = regex::Regex::new(r"Feature:\s*(\S+).*FinalizedVersionLevel:\s*(\S+)").unwrap();
    for line in features.lines() {
        let Some(c) = feature.captures(line) else {
            continue;
        };
        let (name, level) = (&c[1], &c[2]);
        let ours = snap.finalized_features.get(name).copied();
        if name == "metadata.version" {
            let release = foresight_proto::facts::metadata_release(ours.unwrap()).unwrap();
            assert!(
                level.starts_with(&format!("{release}-")),
                "{line} vs {ours:?}"
            );
        } else if let Ok(n) = level.parse::<i32>() {
            assert_eq!(ours.unwrap_or(0), n, "{line}");
        }
        checked += 1;
    }
    assert!(checked >= 2, "{features}");
    // Each broker's release line is the jars' (4.4.0 says 4.4).
    for f in &snap.broker_facts {
        assert_eq!(
            foresight_proto::facts::broker_release(f),
            Some("4.4"),
            "{f:?}"
        );
        assert!(f.api_versions.len() > 50, "{f:?}");
    }

    // The non-default configs as kafka-configs lists them from the properties file, and
    // the risky defaults flagged.
    let broker = snap.broker_facts[0].id;
    let described = tool(
        CONFIGS,
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--entity-type".into(),
            "brokers".into(),
            "--entity-name".into(),
            broker.to_string(),
            "--describe".into(),
            "--all".into(),
        ],
    )
    .await;
    let re =
        regex::Regex::new(r"^\s+([a-z0-9._-]+)=(.*) sensitive=(true|false) synonyms=\{([A-Z_]+):")
            .unwrap();
    let mut statics = 0;
    for line in described.lines() {
        let Some(c) = re.captures(line) else { continue };
        let (key, value, sensitive, source) = (&c[1], &c[2], &c[3] == "true", &c[4]);
        let ours = snap.broker_facts[0].configs.get(key);
        if sensitive {
            assert_eq!(ours, None, "{key}: a sensitive value is never shipped");
        } else if matches!(source, "STATIC_BROKER_CONFIG" | "DYNAMIC_BROKER_CONFIG") {
            assert_eq!(ours.map(String::as_str), Some(value), "{line}");
            statics += 1;
        }
    }
    assert!(statics >= 5, "{described}");
    assert_eq!(
        snap.broker_facts[0]
            .configs
            .get("transaction.max.timeout.ms")
            .map(String::as_str),
        Some("8000")
    );
    // Kafka's default min.insync.replicas of 1 is risky; the test cluster's
    // auto.create.topics.enable=false (in its properties file) is not.
    let risky: BTreeSet<(String, String)> = foresight_proto::facts::risky(&snap.broker_facts)
        .into_iter()
        .map(|r| (r.config, r.value))
        .collect();
    let first = &snap.broker_facts[0].configs;
    assert_eq!(
        first.get("auto.create.topics.enable").map(String::as_str),
        Some("false")
    );
    assert_eq!(
        risky,
        BTreeSet::from([("min.insync.replicas".to_string(), "1".to_string())]),
        "{first:?}"
    );

    // A setting changed on one broker alone is drift, with its holders.
    let configs = |op: &str, value: &str| {
        vec![
            "--bootstrap-server".into(),
            cluster.bootstrap(),
            "--entity-type".into(),
            "brokers".into(),
            "--entity-name".into(),
            broker.to_string(),
            "--alter".into(),
            op.into(),
            value.into(),
        ]
    };
    tool(CONFIGS, configs("--add-config", "log.cleaner.threads=2")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let drift = loop {
        let fresh = Reporter::new(agent_config(cluster.bootstrap(), BTreeMap::new())).unwrap();
        let snap = fresh.collect_batch().await.unwrap().snapshot.unwrap();
        let d = foresight_proto::facts::drift(&snap.broker_facts);
        if d.contains_key("log.cleaner.threads") || tokio::time::Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tool(CONFIGS, configs("--delete-config", "log.cleaner.threads")).await;
    let values = &drift["log.cleaner.threads"];
    assert_eq!(values["2"], vec![broker], "{drift:?}");
    assert_eq!(
        values["(default)"].len(),
        cluster.brokers().count() - 1,
        "{drift:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_start_offset_moves_are_explained_or_reported() {
    let cluster = shared_cluster().await;
    let (forever, shortlived) = ("kept-forever", "kept-briefly");
    common::create_topics(
        &cluster.bootstrap(),
        &[
            (
                forever,
                1,
                3,
                &[("retention.ms", "-1"), ("retention.bytes", "-1")],
            ),
            (
                shortlived,
                1,
                3,
                &[
                    ("retention.ms", "1000"),
                    ("segment.ms", "200"),
                    ("file.delete.delay.ms", "0"),
                ],
            ),
        ],
    )
    .await;
    produce(forever, 100).await;
    produce(shortlived, 50).await;
    let log_start = |snap: &ClusterSnapshot, topic: &str| {
        snap.topics
            .iter()
            .find(|t| t.name == topic)
            .and_then(|t| t.partitions[0].log_start_offset)
    };
    let unexplained = |batch: &foresight_proto::v1::TelemetryBatch, topic: &str| {
        batch
            .series
            .iter()
            .find(|s| {
                s.name == foresight_reporter::collector::durability::UNEXPLAINED_METRIC_NAME
                    && s.labels
                        .iter()
                        .any(|l| l.name == "topic" && l.value == topic)
            })
            .map(|s| s.samples[0].value)
    };
    let moved = |batch: &foresight_proto::v1::TelemetryBatch, topic: &str| {
        batch
            .events
            .iter()
            .find(|e| {
                e.kind() == foresight_proto::v1::EventKind::LogStartOffsetMove
                    && e.labels.get("topic").map(String::as_str) == Some(topic)
            })
            .cloned()
    };
    let delete_records = |offset: i64| async move {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("offsets.json");
        std::fs::write(
            &file,
            format!(r#"{{"partitions":[{{"topic":"{forever}","partition":0,"offset":{offset}}}],"version":1}}"#),
        )
        .unwrap();
        tool(
            "org.apache.kafka.tools.DeleteRecordsCommand",
            vec![
                "--bootstrap-server".into(),
                cluster.bootstrap(),
                "--offset-json-file".into(),
                file.display().to_string(),
            ],
        )
        .await;
    };

    // An agent that scrapes no broker metrics cannot tell a DeleteRecords from a loss.
    let blind = Reporter::new(agent_config(cluster.bootstrap(), BTreeMap::new())).unwrap();
    let first = blind.collect_batch().await.unwrap();
    assert_eq!(
        log_start(first.snapshot.as_ref().unwrap(), forever),
        Some(0)
    );
    delete_records(40).await;
    let second = blind.collect_batch().await.unwrap();
    assert_eq!(
        log_start(second.snapshot.as_ref().unwrap(), forever),
        Some(40)
    );
    assert_eq!(unexplained(&second, forever), Some(40.0));
    let e = moved(&second, forever).expect("a move event");
    assert_eq!(e.labels["explanation"], "none", "{e:?}");

    // One that scrapes the brokers' jmx_exporter sees the leader count the request.
    let mut config = agent_config(cluster.bootstrap(), BTreeMap::new());
    for b in cluster.brokers() {
        config.jmx_exporter.insert(b.id, b.jmx_url());
    }
    let seeing = Reporter::new(config).unwrap();
    seeing.collect_batch().await.unwrap();
    delete_records(70).await;
    let batch = seeing.collect_batch().await.unwrap();
    assert_eq!(
        log_start(batch.snapshot.as_ref().unwrap(), forever),
        Some(70)
    );
    assert_eq!(unexplained(&batch, forever), None);
    let e = moved(&batch, forever).expect("a move event");
    assert_eq!(e.labels["explanation"], "delete_records", "{e:?}");

    // Time retention explains the other topic's move: its segments rolled and aged out.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let batch = loop {
        produce(shortlived, 1).await;
        let batch = blind.collect_batch().await.unwrap();
        if moved(&batch, shortlived).is_some() {
            break batch;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the short-lived topic's log start never moved"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let e = moved(&batch, shortlived).unwrap();
    assert_eq!(e.labels["explanation"], "retention.ms", "{e:?}");
    assert_eq!(unexplained(&batch, shortlived), None);
}

/// A cluster formatted at 3.9's feature levels on 4.4 binaries, an upgrade rolled out and
/// not finalized: the finalized levels are `kafka-features describe`'s, and the level
/// every broker supports (the series `KafkaFeatureUpgradeNotFinalized` compares) is above
/// them, as the tool's `SupportedMaxVersion` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_left_unfinalized_shows_supported_levels_above_the_finalized_ones() {
    let cluster = tokio::task::spawn_blocking(|| {
        let mut spec = ClusterSpec::new(Version::Kafka4).nodes(1, 1);
        spec.heap_mib = 256;
        spec.release_version = Some("3.9-IV0".into());
        Cluster::start(spec).expect("a cluster at 3.9's levels starts")
    })
    .await
    .unwrap();
    let agent = Reporter::new(agent_config(cluster.bootstrap(), BTreeMap::new())).unwrap();
    let snap = agent.collect_batch().await.unwrap().snapshot.unwrap();
    let out = cluster
        .tool(
            "org.apache.kafka.tools.FeatureCommand",
            &["--bootstrap-server", &cluster.bootstrap(), "describe"],
        )
        .unwrap();
    let features = String::from_utf8_lossy(&out.stdout).into_owned();
    let series = foresight_proto::derive::snapshot_series(&snap, &Default::default(), 0, &|_| true);
    let value = |name: &str, feature: &str| {
        series
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels
                        .iter()
                        .any(|l| l.name == "feature" && l.value == feature)
            })
            .map(|s| s.samples[0].value)
    };
    let row = regex::Regex::new(
        r"Feature:\s*(\S+)\s+SupportedMinVersion:\s*\S+\s+SupportedMaxVersion:\s*(\S+)\s+FinalizedVersionLevel:\s*(\S+)",
    )
    .unwrap();
    let mut checked = 0;
    for c in features.lines().filter_map(|l| row.captures(l)) {
        let (name, max, level) = (&c[1], &c[2], &c[3]);
        match name {
            "metadata.version" => {
                assert!(level.starts_with("3.9-"), "{features}");
                assert!(max.starts_with("4.4-"), "{features}");
                let release = foresight_proto::facts::metadata_release(
                    value("kafka_cluster_feature_supported_max", name).unwrap() as i32,
                );
                assert_eq!(release, Some("4.4"), "{features}");
            }
            _ => {
                let (Ok(max), Ok(level)) = (max.parse::<f64>(), level.parse::<f64>()) else {
                    continue;
                };
                assert_eq!(
                    value("kafka_cluster_feature_supported_max", name),
                    Some(max),
                    "{name}: {features}"
                );
                // A feature left at level 0 is not finalized at all: no level series.
                assert_eq!(
                    value("kafka_cluster_feature_level", name).unwrap_or(0.0),
                    level,
                    "{name}: {features}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "{features}");
    assert!(
        value("kafka_cluster_feature_supported_max", "transaction.version")
            > value("kafka_cluster_feature_level", "transaction.version").or(Some(0.0)),
        "{features}"
    );
}
