//! The agent's cost per collection cycle, as issue 4 budgets it: the CPU time of one
//! collect-and-encode cycle, the resident memory, and the compressed bytes a cycle
//! ships, in two scenarios:
//! - librdkafka's mock cluster of 6 brokers and 10,000 partitions, run in a child
//!   process so that only the agent's own CPU is counted;
//! - a real Apache Kafka 4.x KRaft cluster on loopback (three controllers, three
//!   brokers, from `foresight-testkit`) with 100 consumer groups that committed offsets
//!   on 10 topics of 10 partitions, replication 3 (the mock has no ListGroups), the
//!   agent scraping all six nodes' jmx_exporter, measured in a fresh process of its own;
//! - the same cluster with 10,000 partitions (100 topics of 100, replication 1: three
//!   small JVMs on one machine hold 10,000 replicas, not 30,000), 1,000 of them held by
//!   open transactions, measured with and without the admin requests of the second
//!   client (DescribeQuorum, DescribeCluster, DescribeConfigs, DescribeProducers,
//!   ListTransactions), which is their cost.
//!
//! Run: `cargo bench -p foresight-reporter --bench cycle` (`CYCLE_PARTITIONS` resizes
//! the mock, `CYCLE_SCENARIO=mock|kafka|kafka-large` runs one).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, KafkaConfig};
use foresight_reporter::shipper::Shipper;

/// User plus system CPU seconds of this process, from /proc (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name: utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `(resident, anonymous, file-backed)` MiB of this process, from /proc.
fn rss_mib() -> (f64, f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

fn main() {
    match std::env::var("CYCLE_SCENARIO").as_deref() {
        Ok("mock") => mock(),
        Ok("kafka") => kafka(),
        Ok("kafka-large") => kafka_large(),
        _ => {
            // Each scenario in a fresh process, so that one's memory is not the other's.
            for scenario in ["mock", "kafka", "kafka-large"] {
                let status = Command::new(std::env::current_exe().expect("own path"))
                    .env("CYCLE_SCENARIO", scenario)
                    .arg("--bench")
                    .status()
                    .expect("scenario process");
                assert!(status.success(), "scenario {scenario} failed");
            }
        }
    }
}

/// Three measured cycles after a warm-up one, printed; returns the warm-up's batch.
async fn measure(agent: &Reporter, what: &str) -> foresight_proto::v1::TelemetryBatch {
    let first = agent.collect_batch().await.expect("collects");
    for _ in 0..3 {
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        let batch = agent.collect_batch().await.expect("collects");
        let body = Shipper::encode(&batch);
        let (rss, anon, file) = rss_mib();
        println!(
            "{what} cycle: {:.2} s CPU, {:.2} s wall, {:.1} KiB compressed, RSS {rss:.1} MiB ({anon:.1} anonymous, {file:.1} file-backed)",
            cpu_seconds() - cpu0,
            wall0.elapsed().as_secs_f64(),
            body.len() as f64 / 1024.0,
        );
    }
    // After the measurements: deriving here would put the ingest's work in the RSS.
    let snap = first.snapshot.as_ref().expect("a snapshot");
    println!(
        "{what}: {} brokers, {} partitions, {} consumer groups; {} series shipped, {} derived at the ingest",
        snap.brokers.len(),
        snap.topics
            .iter()
            .map(|t| t.partitions.len())
            .sum::<usize>(),
        snap.groups.len(),
        first.series.len(),
        foresight_proto::derive::snapshot_series(snap, &Default::default(), 0, &|_| true).len(),
    );
    first
}

fn mock() {
    let partitions: usize = std::env::var("CYCLE_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if std::env::var_os("CYCLE_MOCK_CHILD").is_some() {
        // The cluster's process: 6 brokers, topics of 100 partitions, replication 3.
        let cluster = rdkafka::mocking::MockCluster::new(6).expect("mock cluster");
        for t in 0..partitions.div_ceil(100) {
            let n = 100.min(partitions - t * 100) as i32;
            cluster
                .create_topic(&format!("topic-{t}"), n, 3)
                .expect("topic");
        }
        println!("{}", cluster.bootstrap_servers());
        std::io::stdout().flush().expect("stdout");
        // Until the parent closes stdin.
        let _ = std::io::stdin().read_line(&mut String::new());
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env("CYCLE_MOCK_CHILD", "1")
        .arg("--bench")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock cluster process");
    let mut bootstrap = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut bootstrap)
        .expect("bootstrap servers");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let agent = Reporter::new(AgentConfig {
            kafka: KafkaConfig {
                bootstrap_servers: bootstrap.trim().to_string(),
                request_timeout_ms: 10_000,
                ..KafkaConfig::default()
            },
            ..AgentConfig::default()
        })
        .expect("agent");
        measure(&agent, "mock").await;
    });
    drop(child.stdin.take());
    let _ = child.wait();
}

fn kafka_setup(bootstrap: &str) {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    let bootstrap = bootstrap.to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (topics, partitions, groups) = (10, 10, 100);
    runtime.block_on(async {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("admin");
        let names: Vec<String> = (0..topics).map(|t| format!("events-{t}")).collect();
        let new: Vec<NewTopic> = names
            .iter()
            .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(3)))
            .collect();
        admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("topics");
    });
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for t in 0..topics {
        for p in 0..partitions {
            for _ in 0..5 {
                producer
                    .send(
                        BaseRecord::to(&format!("events-{t}"))
                            .partition(p)
                            .key("k")
                            .payload("v"),
                    )
                    .map_err(|(e, _)| e)
                    .expect("produce");
            }
        }
    }
    producer
        .flush(std::time::Duration::from_secs(30))
        .expect("flush");
    // Each group commits offset 2 on every partition of one topic without joining.
    for g in 0..groups {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("group-{g}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&format!("events-{}", g % topics), p, Offset::Offset(2))
                .expect("offset");
        }
        consumer.commit(&tpl, CommitMode::Sync).expect("commit");
    }
}

fn kafka() {
    if let Ok(bootstrap) = std::env::var("CYCLE_KAFKA_SETUP") {
        kafka_setup(&bootstrap);
        return;
    }
    // The JVMs are child processes: their memory is not the agent's.
    let cluster = foresight_testkit::Cluster::start(foresight_testkit::ClusterSpec::new(
        foresight_testkit::Version::Kafka4,
    ))
    .expect("a real Kafka cluster (scripts/kafka.sh fetch)");
    let bootstrap = cluster.bootstrap();
    // Topics, records and commits come from another process, so that its clients are
    // not counted in the agent's memory.
    let status = Command::new(std::env::current_exe().expect("own path"))
        .env("CYCLE_KAFKA_SETUP", &bootstrap)
        .arg("--bench")
        .status()
        .expect("setup process");
    assert!(status.success(), "kafka setup failed");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut config = AgentConfig {
            kafka: KafkaConfig {
                bootstrap_servers: bootstrap.clone(),
                request_timeout_ms: 10_000,
                ..KafkaConfig::default()
            },
            ..AgentConfig::default()
        };
        for n in &cluster.nodes {
            match n.role {
                foresight_testkit::Role::Broker => config.jmx_exporter.insert(n.id, n.jmx_url()),
                foresight_testkit::Role::Controller => {
                    config.controller_jmx_exporter.insert(n.id, n.jmx_url())
                }
            };
        }
        let agent = Reporter::new(config).expect("agent");
        measure(&agent, "kafka 4 (3+3 nodes, jmx_exporter on each)").await;
    });
}

/// Partitions of the large scenario: topics of 100.
const LARGE_TOPICS: usize = 100;

fn kafka_large_setup(bootstrap: &str) {
    use rdkafka::ClientConfig;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .expect("admin");
        let names: Vec<String> = (0..LARGE_TOPICS).map(|t| format!("bulk-{t}")).collect();
        for chunk in names.chunks(10) {
            let new: Vec<NewTopic> = chunk
                .iter()
                .map(|n| NewTopic::new(n, 100, TopicReplication::Fixed(1)))
                .collect();
            let results = admin
                .create_topics(&new, &AdminOptions::new())
                .await
                .expect("topics");
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
    });
    // Open transactions on the first 10 topics' partitions, never committed; the
    // process then waits for the parent to close stdin, holding them open.
    let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "bench-open")
        .set("transaction.timeout.ms", "900000")
        .create()
        .expect("producer");
    let wait = std::time::Duration::from_secs(120);
    producer.init_transactions(wait).expect("init");
    producer.begin_transaction().expect("begin");
    for t in 0..10 {
        for p in 0..100 {
            producer
                .send(
                    BaseRecord::to(&format!("bulk-{t}"))
                        .partition(p)
                        .key("k")
                        .payload("v"),
                )
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    }
    producer.flush(wait).expect("flush");
    println!("ready");
    std::io::stdout().flush().expect("stdout");
    let _ = std::io::stdin().read_line(&mut String::new());
}

fn kafka_large() {
    if let Ok(bootstrap) = std::env::var("CYCLE_KAFKA_LARGE_SETUP") {
        kafka_large_setup(&bootstrap);
        return;
    }
    let mut spec = foresight_testkit::ClusterSpec::new(foresight_testkit::Version::Kafka4);
    spec.heap_mib = 768;
    let cluster = foresight_testkit::Cluster::start(spec)
        .expect("a real Kafka cluster (scripts/kafka.sh fetch)");
    let bootstrap = cluster.bootstrap();
    let mut setup = Command::new(std::env::current_exe().expect("own path"))
        .env("CYCLE_KAFKA_LARGE_SETUP", &bootstrap)
        .arg("--bench")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setup process");
    let mut ready = String::new();
    BufReader::new(setup.stdout.take().expect("piped"))
        .read_line(&mut ready)
        .expect("setup says ready");
    assert_eq!(ready.trim(), "ready", "kafka large setup failed");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for admin_requests in [false, true] {
            let agent = Reporter::new(AgentConfig {
                kafka: KafkaConfig {
                    bootstrap_servers: bootstrap.clone(),
                    request_timeout_ms: 30_000,
                    admin_requests,
                    ..KafkaConfig::default()
                },
                ..AgentConfig::default()
            })
            .expect("agent");
            let what = if admin_requests {
                "kafka 4, 10,000 partitions, with the admin requests"
            } else {
                "kafka 4, 10,000 partitions, librdkafka only"
            };
            let first = measure(&agent, what).await;
            if admin_requests {
                let batch = agent.collect_batch().await.expect("collects");
                let snap = batch.snapshot.as_ref().expect("a snapshot");
                let parts = |batch: &foresight_proto::v1::TelemetryBatch| -> Vec<String> {
                    batch
                    .series
                    .iter()
                    .filter(|s| s.name == "foresight_agent_protocol_duration_seconds")
                    .map(|s| {
                        let part = s
                            .labels
                            .iter()
                            .find(|l| l.name == "part")
                            .map_or("", |l| l.value.as_str());
                        format!("{part} {:.3} s", s.samples[0].value)
                    })
                    .collect()
                };
                let replicas: usize = snap.log_dirs.iter().map(|d| d.replicas.len()).sum();
                println!(
                    "{what}: {} open transactions found, {} log dirs with {replicas} replicas, {} brokers' facts; admin parts' wall time: {}",
                    snap.open_transactions.len(),
                    snap.log_dirs.len(),
                    snap.broker_facts.len(),
                    parts(&batch).join(", ")
                );
                println!(
                    "{what}: first cycle (versions and configs read, every 5 minutes after): {}",
                    parts(&first).join(", ")
                );
            }
        }
    });
    drop(setup.stdin.take());
    let _ = setup.wait();
}
