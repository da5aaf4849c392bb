//! The web console in a real browser: Debian's Chromium driven by Playwright
//! (`scripts/browser/console.mjs`, `playwright-core` from npm; `scripts/test-deps.sh`
//! installs both) against the service fed by the agent on a real Kafka cluster whose
//! broker is killed. The script signs in, finds the fault on the fleet and the cluster
//! page (plots with data), silences the alert from the alerts page and expires the
//! silence, signs out, and checks the refusals (no session, read key, CSRF, another
//! tenant's cluster) and that markup-like names render as text, with no console error
//! on any page. It writes the README's screenshots (to `docs/console` with
//! `FORESIGHT_SCREENSHOTS=docs/console`, else to a temporary dir).

mod common;

use std::time::Duration;

use foresight_proto::Message;
use foresight_proto::v1::{
    Broker, ClusterSnapshot, ConsumerGroup, GroupOffset, Partition, Resource, TelemetryBatch, Topic,
};
use foresight_testkit::{Cluster, ClusterSpec, Version, repo_root};

const MARKUP: &str = "<img src=x onerror=alert(1)>";

/// A batch of cluster `name` whose topic and group are named [`MARKUP`].
fn crafted_batch(name: &str, seq: u64) -> Vec<u8> {
    let now = common::now_ms();
    let b = TelemetryBatch {
        resource: Some(Resource {
            cluster_id: format!("{name}-id"),
            cluster_name: name.into(),
            agent_instance_id: format!("crafted-{name}"),
            agent_version: "test".into(),
            ..Default::default()
        }),
        sequence: seq,
        created_at_ms: now,
        snapshot: Some(ClusterSnapshot {
            collected_at_ms: now,
            cluster_id: format!("{name}-id"),
            controller_id: 1,
            brokers: vec![Broker {
                id: 1,
                host: "localhost".into(),
                port: 9092,
                rack: String::new(),
            }],
            topics: vec![Topic {
                name: MARKUP.into(),
                partitions: vec![Partition {
                    id: 0,
                    leader: 1,
                    replicas: vec![1],
                    isr: vec![1],
                    high_watermark: Some(10),
                    ..Default::default()
                }],
                configs: Default::default(),
                ..Default::default()
            }],
            groups: vec![ConsumerGroup {
                name: MARKUP.into(),
                state: "Stable".into(),
                members: 1,
                offsets: vec![GroupOffset {
                    topic: MARKUP.into(),
                    partition: 0,
                    offset: 4,
                    lag: None,
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap()
}

/// Writes to `topic` and commits a little of it for `group`, which so lags.
fn lagging_group(bootstrap: &str, topic: &str, group: &str) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let producer: ThreadedProducer<DefaultProducerContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..300 {
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&format!("k{}", i % 7))
                    .payload("event"),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(10))
            .unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

async fn post_batch(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    key: &str,
    body: Vec<u8>,
) {
    let r = client
        .post(format!("https://{addr}/v1/telemetry"))
        .bearer_auth(key)
        .header("content-encoding", "zstd")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_fault_and_silences_it_in_a_browser() {
    let root = repo_root();
    let script = root.join("scripts/browser/console.mjs");
    let playwright = root.join("scripts/browser/node_modules/playwright-core");
    assert!(
        playwright.exists(),
        "playwright-core is not installed in scripts/browser: run scripts/test-deps.sh"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: scripts/test-deps.sh installs Debian's chromium"
    );

    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(ClusterSpec::new(Version::Kafka4).nodes(1, 3))
            .expect("a real Kafka cluster starts")
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(
        dir.path(),
        &[("KafkaOfflinePartitions", "2s")],
        &receiver.url,
    )
    .await;
    let ingest = server
        .store
        .create_scoped_key("acme", foresight_ingest::store::Scope::Ingest, "agent")
        .unwrap();
    let admin = server.store.create_key("acme").unwrap();
    let read = server
        .store
        .create_scoped_key("acme", foresight_ingest::store::Scope::Read, "viewer")
        .unwrap();
    let globex = server.store.create_key("globex").unwrap();
    let client = common::client(&server.fingerprint);
    post_batch(&client, server.addr, &ingest, crafted_batch("markup", 1)).await;
    post_batch(
        &client,
        server.addr,
        &globex,
        crafted_batch("globex-prod", 1),
    )
    .await;

    // One partition of `payments` lives on the broker that is killed.
    let victim = cluster.brokers().last().unwrap().id;
    common::create_assigned_topic(&cluster.bootstrap(), "payments", &[&[victim]], &[]).await;
    common::create_topics(&cluster.bootstrap(), &[("orders", 3, 2, &[])]).await;
    let bootstrap = cluster.bootstrap();
    tokio::task::spawn_blocking(move || lagging_group(&bootstrap, "orders", "billing"))
        .await
        .unwrap();
    let mut config = common::kafka_agent_config(&cluster, &server, &ingest, false);
    config.kafka.cluster_name = Some("acme-prod".into());
    let agent = foresight_reporter::Reporter::new(config).unwrap();
    let (_agent, agent_cancel) = common::run_agent(agent);
    // Healthy samples first, for the plots' history: the group's lag is in the
    // service's series before the broker goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r: serde_json::Value = client
            .get(format!(
                "https://{}/api/v1/query?query={}",
                server.addr,
                url::form_urlencoded::byte_serialize(
                    b"kafka_consumergroup_lag_sum{cluster=\"acme-prod\",consumergroup=\"billing\"}"
                )
                .collect::<String>()
            ))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["data"]["result"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the billing group's lag is not in the service within 60 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.node(victim).kill();
    common::wait_for(
        &mut receiver.rx,
        "KafkaOfflinePartitions",
        "firing",
        Duration::from_secs(90),
    )
    .await;

    let shots = std::env::var("FORESIGHT_SCREENSHOTS")
        .map(|d| root.join(d))
        .unwrap_or_else(|_| dir.path().join("screenshots"));
    let log = |n: &str| std::fs::File::create(dir.path().join(n)).unwrap();
    let mut child = std::process::Command::new("node")
        .arg(&script)
        .env("BASE_URL", format!("https://{}", server.addr))
        .env("ADMIN_KEY", &admin)
        .env("READ_KEY", &read)
        .env("CLUSTER", "acme-prod")
        .env("ALERT", "KafkaOfflinePartitions")
        .env("XSS_CLUSTER", "markup")
        .env("OTHER_CLUSTER", "globex-prod")
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .stdout(log("browser.out"))
        .stderr(log("browser.err"))
        .spawn()
        .expect("node runs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser script did not end within 4 minutes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let stdout = std::fs::read_to_string(dir.path().join("browser.out")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.path().join("browser.err")).unwrap_or_default();
    println!("{stdout}");
    assert!(
        status.success(),
        "the browser checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok - no console errors on any page"),
        "{stdout}"
    );
    for shot in ["fleet.png", "cluster.png", "alerts.png", "silence.png"] {
        assert!(shots.join(shot).exists(), "{shot} was not written");
    }
    agent_cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
}
