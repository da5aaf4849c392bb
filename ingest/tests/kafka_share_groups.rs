//! Share groups (KIP-932) on real Apache Kafka 4.x, with a real share consumer (Kafka's
//! own `KafkaShareConsumer`, run from `testkit/java/ShareConsumerProbe.java`): the
//! agent describes the group and its backlog as `kafka-share-groups --describe` does,
//! and the pack notifies rejected records and a backlog left without members, through
//! the service to a webhook.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use foresight_testkit::share::{Acknowledge, ShareConsumer};
use foresight_testkit::{Cluster, ClusterSpec, Version};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const SHARE_GROUPS: &str = "org.apache.kafka.tools.consumer.group.ShareGroupCommand";
const CONFIGS: &str = "org.apache.kafka.tools.ConfigCommand";

fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let mut spec = ClusterSpec::new(Version::Kafka4).nodes(1, 1);
        spec.heap_mib = 384;
        Cluster::start(spec).expect("a real Kafka cluster starts")
    })
}

async fn tool(class: &'static str, args: &[&str]) -> String {
    let args = args.iter().map(|a| a.to_string()).collect();
    common::kafka_tool(cluster(), class, args).await
}

/// `n` records on `topic`, keyed over both partitions.
async fn produce(topic: &'static str, n: usize) {
    let bootstrap = cluster().bootstrap();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        for i in 0..n {
            producer
                .send(BaseRecord::to(topic).key(&format!("k{i}")).payload("task"))
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    })
    .await
    .unwrap();
}

/// Whether a notification is `status` and names `alertname`.
fn notifies(msg: &serde_json::Value, alertname: &str, status: &str) -> bool {
    msg["commonLabels"]["alertname"] == alertname && msg["status"] == status
}

/// Per partition, the start offset and lag `kafka-share-groups --describe` prints.
async fn described_offsets(group: &str) -> (Vec<(String, i64, i64)>, String) {
    let out = tool(
        SHARE_GROUPS,
        &[
            "--bootstrap-server",
            &cluster().bootstrap(),
            "--describe",
            "--group",
            group,
        ],
    )
    .await;
    let rows = out
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&group) && f.len() >= 5)
                .then(|| Some((f[2].to_string(), f[3].parse().ok()?, f[4].parse().ok()?)))
                .flatten()
        })
        .collect();
    (rows, out)
}

/// A share group accepting records, then rejecting some, then left with a backlog: the
/// agent's view of it against `kafka-share-groups --describe` (start offsets, lag,
/// members), and the pack's two notifications, one per fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_group_is_described_as_kafka_share_groups_does_and_its_faults_notify_once() {
    const GROUP: &str = "workers";
    let cluster = tokio::task::spawn_blocking(cluster).await.unwrap();
    common::create_topics(&cluster.bootstrap(), &[("tasks", 2, 1, &[])]).await;
    // Records produced before the first member joins are the group's too.
    tool(
        CONFIGS,
        &[
            "--bootstrap-server",
            &cluster.bootstrap(),
            "--entity-type",
            "groups",
            "--entity-name",
            GROUP,
            "--alter",
            "--add-config",
            "share.auto.offset.reset=earliest",
        ],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(
        dir.path(),
        &[
            ("KafkaShareGroupRejectingRecords", "1s"),
            ("KafkaShareGroupBacklogWithoutMembers", "2s"),
        ],
        &receiver.url,
    )
    .await;
    let key = server.store.create_key("acme").unwrap();
    // One agent ships from the start (the service must have seen the rejection counter
    // before it moves, as it would have on a cluster it has watched for a while); a
    // second one is asked for its view.
    let (_agent, cancel) = common::run_agent(common::kafka_agent(cluster, &server, &key, true));
    let agent = common::kafka_agent(cluster, &server, &key, false);

    // A member accepts 100 records.
    let mut consumer = tokio::task::spawn_blocking(move || {
        ShareConsumer::start(cluster, GROUP, "tasks").expect("the share consumer starts")
    })
    .await
    .unwrap();
    produce("tasks", 100).await;
    let (mut consumer, acked) = tokio::task::spawn_blocking(move || {
        let acked = consumer
            .wait_acknowledged(Duration::from_secs(90), |a| a.accepted >= 100)
            .unwrap();
        (consumer, acked)
    })
    .await
    .unwrap();
    assert_eq!(acked.accepted, 100);

    // The agent sees a stable share group with its member, and per partition the start
    // offset and lag that kafka-share-groups prints.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (group, theirs, text) = loop {
        let batch = agent.collect_batch().await.unwrap();
        let group = batch
            .snapshot
            .unwrap()
            .groups
            .into_iter()
            .find(|g| g.name == GROUP)
            .expect("the agent lists the share group");
        let mut ours: Vec<(String, i64, i64)> = group
            .offsets
            .iter()
            .map(|o| (o.partition.to_string(), o.offset, o.lag.unwrap_or(-1)))
            .collect();
        ours.sort();
        let (mut theirs, text) = described_offsets(GROUP).await;
        theirs.sort();
        // All 100 records acknowledged: nothing left on either partition. (The start
        // offsets move on at the partitions' next fetch, not at once: Kafka's own
        // tool shows the same.)
        let caught_up = theirs.len() == 2 && theirs.iter().all(|(_, _, lag)| *lag == 0);
        if group.state == "Stable" && ours == theirs && caught_up {
            break (group, theirs, text);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent {group:?} against kafka-share-groups:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(group.protocol, "share");
    assert_eq!(group.members, 1, "{group:?}");
    assert_eq!(group.member_details[0].client_id, "share-probe");
    assert_eq!(group.member_details[0].partitions, 2, "{group:?}");
    assert_eq!(theirs.len(), 2, "{text}");

    // It rejects the next 20: poison messages, archived.
    consumer.acknowledge(Acknowledge::Reject).unwrap();
    produce("tasks", 20).await;
    let consumer = tokio::task::spawn_blocking(move || {
        consumer
            .wait_acknowledged(Duration::from_secs(90), |a| a.rejected >= 20)
            .unwrap();
        consumer
    })
    .await
    .unwrap();
    let rejected = common::wait_for(
        &mut receiver.rx,
        "KafkaShareGroupRejectingRecords",
        "firing",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(rejected["alerts"][0]["labels"]["broker"], "1", "{rejected}");

    // Its only member goes, and 50 more records wait.
    tokio::task::spawn_blocking(move || consumer.close().unwrap())
        .await
        .unwrap();
    produce("tasks", 50).await;
    let waiting = common::wait_for(
        &mut receiver.rx,
        "KafkaShareGroupBacklogWithoutMembers",
        "firing",
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(waiting["alerts"][0]["labels"]["consumergroup"], GROUP);
    // The backlog it was called for is the 50, as kafka-share-groups counts them.
    let (theirs, text) = described_offsets(GROUP).await;
    assert_eq!(
        theirs.iter().map(|(_, _, lag)| lag).sum::<i64>(),
        50,
        "{text}"
    );
    assert_eq!(
        waiting["alerts"][0]["annotations"]["summary"],
        "Share group workers has 50 records waiting and no members",
        "{waiting}"
    );
    // One fault, one notification: the consumer-group rules leave share groups alone.
    while let Ok(msg) = receiver.rx.try_recv() {
        assert!(
            !notifies(&msg, "KafkaConsumerGroupAbandoned", "firing"),
            "{msg}"
        );
    }
    cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}
