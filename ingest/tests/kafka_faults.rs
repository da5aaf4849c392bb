//! Faults on a real Apache Kafka 4.x KRaft cluster, each ending in the notifications a
//! user would get (agent with the jmx_exporter scrapes of every node, the ingest with
//! the built-in pack as shipped but for shortened `for` windows, a webhook), and their
//! resolution where the fault heals. Each test breaks its own cluster, one at a time.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use foresight_testkit::{Cluster, ClusterSpec, Version};
use rdkafka::ClientConfig;

/// Breaking clusters is heavy on two cores: one scenario at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every pack rule's `for`, shortened to `2s` for these tests; the expressions are the
/// pack's own.
const SHORT_FOR: &[(&str, &str)] = &[
    ("KafkaOfflinePartitions", "2s"),
    ("KafkaReplicasOnMissingBrokers", "2s"),
    ("KafkaUnderReplicatedPartitions", "2s"),
    ("KafkaControllerReportsOfflinePartitions", "2s"),
    ("KafkaBrokerUnderReplicatedPartitions", "2s"),
    ("KafkaUnderMinIsrPartitions", "2s"),
    ("KafkaTopicUnderMinIsr", "2s"),
    ("KafkaNoActiveController", "3s"),
    ("KafkaSeveralActiveControllers", "3s"),
    ("KafkaIsrChurn", "1s"),
    ("KafkaBrokerCountDropped", "2s"),
    ("KafkaLogDirUsageCritical", "2s"),
    ("KafkaLogDirFillingUp", "2s"),
    ("KafkaQuorumNoLeader", "2s"),
    ("KafkaQuorumVoterNotFetching", "2s"),
    ("KafkaQuorumNoFailureMargin", "2s"),
    ("KafkaPartitionSingleCopyOfData", "2s"),
];

async fn start(spec: ClusterSpec) -> std::sync::Arc<Cluster> {
    tokio::task::spawn_blocking(move || {
        std::sync::Arc::new(Cluster::start(spec).expect("a real Kafka cluster starts"))
    })
    .await
    .unwrap()
}

/// What watches a scenario's cluster: the ingest with the pack (`SHORT_FOR`), a webhook
/// receiver, and an agent that scrapes every node's exporter (as `adapt` leaves it).
struct Watch {
    receiver: common::Receiver,
    server: foresight_ingest::Server,
    agent: std::sync::Arc<foresight_reporter::Reporter>,
    cancel: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

async fn watch(
    cluster: &Cluster,
    adapt: impl FnOnce(&mut foresight_reporter::config::AgentConfig),
) -> Watch {
    let dir = tempfile::tempdir().unwrap();
    let receiver = common::start_receiver().await;
    let server = common::start_pack_server(dir.path(), SHORT_FOR, &receiver.url).await;
    let key = server.store.create_key("acme").unwrap();
    let mut config = common::kafka_agent_config(cluster, &server, &key, true);
    adapt(&mut config);
    let (agent, cancel) = common::run_agent(foresight_reporter::Reporter::new(config).unwrap());
    Watch {
        receiver,
        server,
        agent,
        cancel,
        _dir: dir,
    }
}

impl Watch {
    async fn stop(self) {
        self.cancel.cancel();
        self.server.shutdown(Duration::from_secs(5)).await;
    }
}

/// Waits for each `(alertname, status)` of `want`, in any order, and returns the
/// notifications seen (for a later check of what must not have come).
async fn expect_all(
    receiver: &mut common::Receiver,
    want: &[(&str, &str)],
    within: Duration,
    cluster: &Cluster,
) -> Vec<serde_json::Value> {
    let mut missing: BTreeSet<(String, String)> = want
        .iter()
        .map(|(a, s)| (a.to_string(), s.to_string()))
        .collect();
    let mut seen = Vec::new();
    let started = tokio::time::Instant::now();
    let deadline = started + within;
    while !missing.is_empty() {
        let Ok(msg) = tokio::time::timeout_at(deadline, receiver.rx.recv()).await else {
            let logs: String = cluster.nodes.iter().map(|n| n.log_tail(5)).collect();
            panic!("within {within:?} no notification for {missing:?}; seen {seen:?}\n{logs}");
        };
        let msg = msg.unwrap();
        let name = msg["commonLabels"]["alertname"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let status = msg["status"].as_str().unwrap_or_default().to_string();
        if missing.remove(&(name.clone(), status.clone())) {
            // For the README's table: from the fault (or the heal) to the webhook.
            eprintln!(
                "notification {name} {status} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        seen.push(msg);
    }
    seen
}

fn names(seen: &[serde_json::Value], status: &str) -> BTreeSet<String> {
    seen.iter()
        .filter(|m| m["status"] == status)
        .filter_map(|m| m["commonLabels"]["alertname"].as_str().map(String::from))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_is_reported_and_resolved_after_its_restart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = start(ClusterSpec::new(Version::Kafka4)).await;
    common::create_topics(
        &cluster.bootstrap(),
        &[
            ("payments", 3, 3, &[]),
            ("strict", 1, 3, &[("min.insync.replicas", "3")]),
        ],
    )
    .await;
    // A replication-factor-1 topic whose only replica is on broker 3.
    common::create_assigned_topic(&cluster.bootstrap(), "solo", &[&[3]], &[]).await;

    let mut w = watch(&cluster, |_| {}).await;
    // A healthy start: let the agent be heard before the fault.
    tokio::time::sleep(Duration::from_secs(3)).await;

    cluster.node(3).kill();
    let seen = expect_all(
        &mut w.receiver,
        &[
            ("KafkaUnderReplicatedPartitions", "firing"),
            ("KafkaReplicasOnMissingBrokers", "firing"),
            ("KafkaBrokerCountDropped", "firing"),
            ("KafkaOfflinePartitions", "firing"),
            ("KafkaControllerReportsOfflinePartitions", "firing"),
            ("KafkaTopicUnderMinIsr", "firing"),
            ("KafkaBrokerUnderReplicatedPartitions", "firing"),
            ("KafkaUnderMinIsrPartitions", "firing"),
        ],
        Duration::from_secs(90),
        &cluster,
    )
    .await;
    let offline = seen
        .iter()
        .find(|m| m["commonLabels"]["alertname"] == "KafkaOfflinePartitions")
        .unwrap();
    assert_eq!(offline["alerts"][0]["labels"]["topic"], "solo", "{offline}");
    assert!(
        !names(&seen, "firing").contains("KafkaNoActiveController"),
        "a broker's death is no controller problem: {seen:?}"
    );
    assert!(
        !names(&seen, "firing").contains("KafkaAcknowledgedRecordsLost"),
        "the clean elections after a broker's death lose nothing: {seen:?}"
    );

    cluster.node(3).start().unwrap();
    expect_all(
        &mut w.receiver,
        &[
            ("KafkaUnderReplicatedPartitions", "resolved"),
            ("KafkaReplicasOnMissingBrokers", "resolved"),
            ("KafkaBrokerCountDropped", "resolved"),
            ("KafkaOfflinePartitions", "resolved"),
            ("KafkaTopicUnderMinIsr", "resolved"),
        ],
        Duration::from_secs(120),
        &cluster,
    )
    .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_leaves_the_isr_and_acks_all_producers_fail() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The broker must stay registered while paused: a session (the controllers'
    // setting) longer than the pause, a replica lag bound shorter.
    let cluster = start(
        ClusterSpec::new(Version::Kafka4)
            .controller_prop("broker.session.timeout.ms", 120_000)
            .broker_prop("replica.lag.time.max.ms", 4_000),
    )
    .await;
    common::create_topics(
        &cluster.bootstrap(),
        &[("ledger", 1, 3, &[("min.insync.replicas", "3")])],
    )
    .await;
    let mut w = watch(&cluster, |_| {}).await;
    let agent = w.agent.clone();

    // The leader of ledger-0, and a follower to pause.
    let batch = agent.collect_batch().await.unwrap();
    let p = batch
        .snapshot
        .unwrap()
        .topics
        .into_iter()
        .find(|t| t.name == "ledger")
        .unwrap()
        .partitions[0]
        .clone();
    let follower = *p.replicas.iter().find(|r| **r != p.leader).unwrap();
    // Writes keep the leader's log end moving: a follower that stops fetching falls
    // behind it (an idle partition's follower stays in sync without fetching).
    let writer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "1")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let writes = tokio::spawn(async move {
        loop {
            let _ = writer
                .send(
                    rdkafka::producer::FutureRecord::to("ledger")
                        .key("k")
                        .payload("v"),
                    Duration::from_secs(2),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.node(follower).pause();
    let seen = expect_all(
        &mut w.receiver,
        &[
            ("KafkaUnderReplicatedPartitions", "firing"),
            ("KafkaTopicUnderMinIsr", "firing"),
            ("KafkaUnderMinIsrPartitions", "firing"),
        ],
        Duration::from_secs(90),
        &cluster,
    )
    .await;
    assert!(
        !names(&seen, "firing").contains("KafkaBrokerCountDropped"),
        "{seen:?}"
    );
    // An acks=all producer now fails (NotEnoughReplicas, retried until the message
    // times out), as the alert says.
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "all")
        .set("message.timeout.ms", "4000")
        .create()
        .unwrap();
    let sent = producer
        .send(
            rdkafka::producer::FutureRecord::to("ledger")
                .key("k")
                .payload("must fail"),
            Duration::from_secs(10),
        )
        .await;
    let err = sent
        .expect_err("an acks=all write under min.insync.replicas is refused")
        .0;
    assert!(
        matches!(
            err.rdkafka_error_code(),
            Some(
                rdkafka::types::RDKafkaErrorCode::NotEnoughReplicas
                    | rdkafka::types::RDKafkaErrorCode::MessageTimedOut
            )
        ),
        "{err}"
    );

    cluster.node(follower).resume();
    expect_all(
        &mut w.receiver,
        &[
            ("KafkaUnderReplicatedPartitions", "resolved"),
            ("KafkaTopicUnderMinIsr", "resolved"),
        ],
        Duration::from_secs(90),
        &cluster,
    )
    .await;
    // Once more: out of the ISR and back. Two cycles are churn.
    cluster.node(follower).pause();
    wait_isr(&agent, "ledger", 2).await;
    cluster.node(follower).resume();
    wait_isr(&agent, "ledger", 3).await;
    expect_all(
        &mut w.receiver,
        &[("KafkaIsrChurn", "firing")],
        Duration::from_secs(60),
        &cluster,
    )
    .await;
    writes.abort();
    w.stop().await;
}

/// Waits until the agent sees `size` in-sync replicas for partition 0 of `topic`.
async fn wait_isr(agent: &foresight_reporter::Reporter, topic: &str, size: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(batch) = agent.collect_batch().await {
            let isr = batch.snapshot.and_then(|s| {
                s.topics
                    .into_iter()
                    .find(|t| t.name == topic)
                    .map(|t| t.partitions[0].isr.len())
            });
            if isr == Some(size) {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ISR of {topic}-0 did not reach {size} replicas"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The controller that leads the quorum, from its exporter.
fn active_controller(cluster: &Cluster) -> Option<i32> {
    cluster
        .controllers()
        .filter(|n| n.is_running())
        .find_map(|n| {
            let body = foresight_testkit::scrape(&n.jmx_url()).ok()?;
            body.lines()
                .any(|l| l.starts_with("kafka_controller_kafkacontroller_activecontrollercount 1"))
                .then_some(n.id)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_failover_is_quiet_and_a_lost_quorum_is_reported() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = start(ClusterSpec::new(Version::Kafka4)).await;
    let mut w = watch(&cluster, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let first = active_controller(&cluster).expect("an active controller");
    cluster.node(first).kill();
    let c = cluster.clone();
    let next = tokio::task::spawn_blocking(move || {
        foresight_testkit::wait_until(Duration::from_secs(60), || active_controller(&c))
    })
    .await
    .unwrap()
    .expect("a new active controller after the failover");
    assert_ne!(next, first);
    // Longer than the rules' `for` and several agent cycles: the failover itself is
    // quiet; what fires is the truth that one voter is gone and the quorum has no
    // margin left (the new leader has had no fetch from the dead one).
    let lost_voter = [
        ("KafkaQuorumVoterNotFetching", "firing"),
        ("KafkaQuorumNoFailureMargin", "firing"),
    ];
    let seen = expect_all(
        &mut w.receiver,
        &lost_voter,
        Duration::from_secs(60),
        &cluster,
    )
    .await;
    let quiet = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            let msg = w.receiver.rx.recv().await.unwrap();
            if msg["status"] == "firing" {
                return msg;
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "a clean failover raised {:?}",
        quiet.unwrap()
    );
    let fired = names(&seen, "firing");
    assert_eq!(
        fired,
        lost_voter.iter().map(|(n, _)| n.to_string()).collect(),
        "only the lost voter is reported"
    );
    let voter = seen
        .iter()
        .find(|m| m["commonLabels"]["alertname"] == "KafkaQuorumVoterNotFetching")
        .unwrap();
    assert_eq!(voter["alerts"][0]["labels"]["node"], first.to_string());

    // Two of three gone: no majority, no leader.
    cluster.node(next).kill();
    let seen = expect_all(
        &mut w.receiver,
        &[
            ("KafkaNoActiveController", "firing"),
            ("KafkaQuorumNoLeader", "firing"),
        ],
        Duration::from_secs(120),
        &cluster,
    )
    .await;
    // Without a leader there are no voters' fetch times to judge: those alerts resolve
    // (now or once the quorum is back), and no-leader speaks for the quorum.
    let resolved = names(&seen, "resolved");
    let mut want = vec![
        ("KafkaNoActiveController", "resolved"),
        ("KafkaQuorumNoLeader", "resolved"),
    ];
    for (name, _) in lost_voter {
        if !resolved.contains(name) {
            want.push((name, "resolved"));
        }
    }
    cluster.node(first).start().unwrap();
    cluster.node(next).start().unwrap();
    expect_all(&mut w.receiver, &want, Duration::from_secs(120), &cluster).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclean_leader_election_is_reported() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The controllers look for partitions to elect uncleanly every second, not every
    // five minutes.
    let cluster = start(
        ClusterSpec::new(Version::Kafka4)
            .controller_prop("unclean.leader.election.interval.ms", 1_000),
    )
    .await;
    common::create_assigned_topic(
        &cluster.bootstrap(),
        "risky",
        &[&[1, 2]],
        &[
            ("unclean.leader.election.enable", "true"),
            ("min.insync.replicas", "1"),
        ],
    )
    .await;
    let mut w = watch(&cluster, |_| {}).await;
    let agent = w.agent.clone();
    wait_isr(&agent, "risky", 2).await;

    let produce = |n: usize| {
        let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("acks", "1")
            .set("message.timeout.ms", "10000")
            .create()
            .unwrap();
        async move {
            for i in 0..n {
                producer
                    .send(
                        rdkafka::producer::FutureRecord::to("risky")
                            .key("k")
                            .payload(&format!("r{i}")),
                        Duration::from_secs(10),
                    )
                    .await
                    .expect("acknowledged by the leader");
            }
        }
    };
    produce(10).await;
    // The follower dies; the leader takes 20 more records alone; then the leader dies
    // and only the stale follower comes back.
    cluster.node(2).kill();
    wait_isr(&agent, "risky", 1).await;
    produce(20).await;
    let hw_before = high_watermark(&agent, "risky").await;
    cluster.node(1).kill();
    cluster.node(2).start().unwrap();
    let seen = expect_all(
        &mut w.receiver,
        &[
            ("KafkaUncleanLeaderElection", "firing"),
            ("KafkaAcknowledgedRecordsLost", "firing"),
        ],
        Duration::from_secs(120),
        &cluster,
    )
    .await;
    let of = |name: &str| {
        seen.iter()
            .find(|m| m["commonLabels"]["alertname"] == name && m["status"] == "firing")
            .unwrap()
            .clone()
    };
    let alert = of("KafkaUncleanLeaderElection");
    assert_eq!(
        alert["alerts"][0]["labels"]["role"], "controller",
        "{alert}"
    );
    // The durability audit: broker 2, elected from outside the ISR, ends broker 1's
    // epoch 20 offsets below the high watermark seen under it.
    let lost = of("KafkaAcknowledgedRecordsLost");
    let labels = &lost["alerts"][0]["labels"];
    assert_eq!(
        (
            &labels["topic"],
            &labels["partition"],
            &labels["previous_leader"],
            &labels["leader"],
            &labels["clean"]
        ),
        (
            &"risky".into(),
            &"0".into(),
            &"1".into(),
            &"2".into(),
            &"false".into()
        ),
        "{lost}"
    );
    assert_eq!(
        lost["alerts"][0]["annotations"]["summary"], "20 acknowledged offsets lost on risky-0",
        "{lost}"
    );
    // The notification says which release and metadata.version the cluster runs.
    let context = &lost["foresightClusterContext"];
    assert_eq!(context["kafka"], "4.4", "{lost}");
    assert!(
        context["metadata.version"]
            .as_str()
            .is_some_and(|v| v.ends_with("(4.4)")),
        "{lost}"
    );
    // The acknowledged records that only broker 1 had are gone: the new leader's high
    // watermark is behind the old one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let hw_after = loop {
        if let Some(hw) = high_watermark(&agent, "risky").await
            && hw_before.is_some_and(|b| hw < b)
        {
            break hw;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new leader with a shorter log"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        hw_before.unwrap() - hw_after,
        20,
        "the 20 records broker 1 alone had"
    );
    // The loss is in the cluster's durability ledger, and in the support context the
    // CLI writes.
    let key = w.server.store.create_key("acme").unwrap();
    let http = common::client(&w.server.fingerprint);
    let clusters: serde_json::Value = http
        .get(format!("https://{}/api/v1/clusters", w.server.addr))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let c = &clusters[0];
    let day = &c["durability"]["windows"]["1d"];
    assert_eq!(
        (
            &day["offsets_lost"],
            &day["partitions_affected"],
            &day["unclean_elections"]
        ),
        (&20.into(), &1.into(), &1.into()),
        "{c}"
    );
    let name = c["name"].as_str().unwrap().to_string();
    let title = format!("# Kafka cluster {name}");
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("context.md");
    let (url, fingerprint, out) = (
        format!("https://{}", w.server.addr),
        w.server.fingerprint.clone(),
        file.clone(),
    );
    let cli_key = key.clone();
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_foresight"))
            .args(["clusters", "context", &name, "--url", &url])
            .args(["--pinned-sha256", &fingerprint, "--output"])
            .arg(&out)
            .env("FORESIGHT_API_KEY", &cli_key)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(run.status.success(), "{run:?}");
    let md = std::fs::read_to_string(&file).unwrap();
    assert!(md.contains(&title), "{md}");
    assert!(
        md.contains("| 1d | 20 | 1 | 1 |") && md.contains("| epoch_end |"),
        "{md}"
    );
    assert!(
        md.contains("| `risky` |"),
        "the topic is listed by size:\n{md}"
    );
    w.stop().await;
}

/// The high watermark of partition 0 of `topic` as the agent reads it.
async fn high_watermark(agent: &foresight_reporter::Reporter, topic: &str) -> Option<i64> {
    let batch = agent.collect_batch().await.ok()?;
    batch
        .snapshot?
        .topics
        .into_iter()
        .find(|t| t.name == topic)?
        .partitions[0]
        .high_watermark
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_dir_that_fills_is_reported_and_goes_offline() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Broker 1 has two log dirs (JBOD), the second a 48 MiB tmpfs: when it fills, that
    // dir goes offline and the broker stays up with the other.
    let mut spec = ClusterSpec::new(Version::Kafka4);
    spec.log_dirs = 2;
    spec.small_log_dir = Some((1, 48 << 20));
    let cluster = start(spec).await;
    let small = cluster.node(1).log_dirs[1].clone();
    let on_broker_1: Vec<&[i32]> = vec![&[1]; 8];
    common::create_assigned_topic(&cluster.bootstrap(), "bulk", &on_broker_1, &[]).await;
    // The agent beside broker 1: its exporter and its log dirs, nothing else.
    let node = cluster.node(1);
    let mut w = watch(&cluster, |agent| {
        agent.jmx_exporter.clear();
        agent.controller_jmx_exporter.clear();
        agent.broker_id = Some(1);
        agent.log_dirs = node.log_dirs.clone();
        agent.jmx_exporter.insert(1, node.jmx_url());
    })
    .await;

    // Writes of 256 KiB records to every partition until the small dir is full (it
    // crosses the 50% and 70% bands too fast for their rules to hold).
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .set("acks", "1")
        .set("message.timeout.ms", "5000")
        .set("message.max.bytes", "1000000")
        .create()
        .unwrap();
    let payload = vec![b'x'; 256 << 10];
    let writes = tokio::spawn(async move {
        for i in 0..400i32 {
            let _ = producer
                .send(
                    rdkafka::producer::FutureRecord::<(), _>::to("bulk")
                        .partition(i % 8)
                        .payload(&payload),
                    Duration::from_secs(5),
                )
                .await;
        }
    });
    let seen = expect_all(
        &mut w.receiver,
        &[
            ("KafkaLogDirUsageCritical", "firing"),
            ("KafkaLogDirFillingUp", "firing"),
            ("KafkaLogDirOffline", "firing"),
        ],
        Duration::from_secs(120),
        &cluster,
    )
    .await;
    let full = seen
        .iter()
        .find(|m| m["commonLabels"]["alertname"] == "KafkaLogDirUsageCritical")
        .unwrap();
    assert_eq!(
        full["alerts"][0]["labels"]["log_dir"],
        small.display().to_string(),
        "{full}"
    );
    assert!(
        cluster.node(1).is_running(),
        "one offline dir of two must not stop the broker"
    );
    writes.abort();
    w.stop().await;
}

/// `Isr`, `Elr` and `LastKnownElr` of partition 0 of `topic` as `kafka-topics --describe`
/// prints them (Kafka 4.x), each sorted.
async fn described_elr(cluster: &Cluster, topic: &str) -> (Vec<i32>, Vec<i32>, Vec<i32>, String) {
    let out = cluster
        .tool(
            "org.apache.kafka.tools.TopicCommand",
            &[
                "--bootstrap-server",
                &cluster.bootstrap(),
                "--describe",
                "--topic",
                topic,
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> Vec<i32> {
        let line = text
            .lines()
            .find(|l| l.contains("Partition: 0"))
            .unwrap_or_default();
        let mut ids: Vec<i32> = line
            .split('\t')
            .map(str::trim)
            .find_map(|f| {
                f.strip_prefix(&format!("{name}: "))
                    .or(f.strip_prefix(&format!("{name}:")))
            })
            .unwrap_or_default()
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect();
        ids.sort();
        ids
    };
    (field("Isr"), field("Elr"), field("LastKnownElr"), text)
}

/// Brokers stopped under a partition (Kafka 4.4, eligible leader replicas on by default):
/// the agent's ISR and ELR equal what `kafka-topics --describe` prints, and the partition
/// whose acknowledged records are left on one broker alone is reported, not the one whose
/// stopped replicas wait, complete, in its ELR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_driven_into_their_eligible_leader_replicas_are_told_apart() {
    let _one = ONE_AT_A_TIME.lock().await;
    let cluster = start(ClusterSpec::new(Version::Kafka4).nodes(1, 3)).await;
    // Both led by broker 1. "ledger" needs two in-sync replicas to take a write: its
    // replicas that leave the ISR below that join the ELR. "scratchpad" needs one: its
    // ISR can shrink to the leader alone, with no ELR.
    common::create_assigned_topic(
        &cluster.bootstrap(),
        "ledger",
        &[&[1, 2, 3]],
        &[("min.insync.replicas", "2")],
    )
    .await;
    common::create_assigned_topic(
        &cluster.bootstrap(),
        "scratchpad",
        &[&[1, 2, 3]],
        &[("min.insync.replicas", "1")],
    )
    .await;
    let mut w = watch(&cluster, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    cluster.node(2).stop(Duration::from_secs(60));
    cluster.node(3).stop(Duration::from_secs(60));
    let seen = expect_all(
        &mut w.receiver,
        &[("KafkaPartitionSingleCopyOfData", "firing")],
        Duration::from_secs(90),
        &cluster,
    )
    .await;
    let single: Vec<&serde_json::Value> = seen
        .iter()
        .filter(|m| m["commonLabels"]["alertname"] == "KafkaPartitionSingleCopyOfData")
        .flat_map(|m| m["alerts"].as_array().unwrap())
        .collect();
    assert!(
        single.iter().all(|a| a["labels"]["topic"] == "scratchpad"),
        "only the partition without an ELR: {single:?}"
    );

    // The agent's ISR and ELR of both, against the tool's.
    for topic in ["ledger", "scratchpad"] {
        let (isr, elr, last_known, text) = described_elr(&cluster, topic).await;
        let batch = w.agent.collect_batch().await.unwrap();
        let snap = batch.snapshot.unwrap();
        let p = &snap
            .topics
            .iter()
            .find(|t| t.name == topic)
            .unwrap()
            .partitions[0];
        let sorted = |v: &[i32]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert!(p.elr_known, "{topic}: {p:?}");
        assert_eq!(sorted(&p.isr), isr, "{topic}:\n{text}");
        assert_eq!(sorted(&p.eligible_leader_replicas), elr, "{topic}:\n{text}");
        assert_eq!(sorted(&p.last_known_elr), last_known, "{topic}:\n{text}");
        assert_eq!(isr, [1], "{topic}:\n{text}");
        if topic == "ledger" {
            assert!(
                !elr.is_empty(),
                "ledger's stopped replicas wait in its ELR:\n{text}"
            );
        } else {
            assert!(elr.is_empty(), "{text}");
        }
    }

    cluster.node(2).start().unwrap();
    cluster.node(3).start().unwrap();
    expect_all(
        &mut w.receiver,
        &[("KafkaPartitionSingleCopyOfData", "resolved")],
        Duration::from_secs(120),
        &cluster,
    )
    .await;
    w.stop().await;
}
