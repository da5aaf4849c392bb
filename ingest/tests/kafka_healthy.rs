//! No false alarms: a healthy, busy Apache Kafka 4.x cluster (transactions committing
//! in a loop, a classic consumer group that rebalances, a KIP-848 consumer group
//! (`group.protocol=consumer`) that rebalances too, a share group with a real
//! `KafkaShareConsumer`, steady produce and consume) watched by
//! three agents, one per broker host as the README deploys them, with the built-in
//! pack exactly as shipped, raises nothing for five minutes (but true disk-usage
//! alerts about this machine's own disk, checked against `df`)
//! (`FORESIGHT_HEALTHY_SECS` changes that; `scripts/soak.sh` runs it for 30 minutes).
//! The three agents must not triple a count or duplicate a series.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foresight_testkit::{Cluster, ClusterSpec, Version};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// Tells the load's threads to stop, also when the test fails.
struct Stop(Arc<AtomicBool>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Transactions of ten records, committed one after another.
fn transactions(bootstrap: String, stop: Arc<AtomicBool>) -> u64 {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("transactional.id", "healthy-tx")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let mut committed = 0;
    while !stop.load(Ordering::Relaxed) {
        producer.begin_transaction().unwrap();
        for i in 0..10 {
            producer
                .send(
                    BaseRecord::to("payments")
                        .key(&format!("k{i}"))
                        .payload("tx"),
                )
                .map_err(|(e, _)| e)
                .unwrap();
        }
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
        committed += 1;
        std::thread::sleep(Duration::from_millis(1000));
    }
    committed
}

/// Steady writes of plain records.
fn steady(bootstrap: String, stop: Arc<AtomicBool>) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let _ = producer.send(
            BaseRecord::to("events")
                .key(&format!("k{}", i % 13))
                .payload("e"),
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = producer.flush(Duration::from_secs(10));
}

/// A member of `group` reading `topic` (committing automatically) until `stop`, or for
/// `for_at_most` when given: such a member leaves and rejoins, and the group rebalances.
fn consume(
    bootstrap: String,
    (group, protocol): (&'static str, &'static str),
    topic: &'static str,
    isolation: &'static str,
    stop: Arc<AtomicBool>,
    for_at_most: Option<Duration>,
) {
    loop {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", group)
            .set("group.protocol", protocol)
            .set("isolation.level", isolation)
            .set("auto.offset.reset", "earliest")
            .set("auto.commit.interval.ms", "1000")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let started = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) && for_at_most.is_none_or(|d| started.elapsed() < d) {
            let _ = consumer.poll(Duration::from_millis(200));
        }
        consumer.unsubscribe();
        if stop.load(Ordering::Relaxed) || for_at_most.is_none() {
            return;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// Whether a log-dir usage alert's percentage (`… is 74.41% full`) is the real usage of
/// its log dir's filesystem (1 - available / size, as the agent measures it), within
/// two points.
fn disk_is_that_full(alert: &serde_json::Value) -> bool {
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    let Some(said) = summary
        .split_whitespace()
        .find_map(|w| w.strip_suffix('%')?.parse::<f64>().ok())
    else {
        return false;
    };
    let dir = alert["labels"]["log_dir"].as_str().unwrap_or_default();
    let out = std::process::Command::new("df")
        .args(["--block-size=1", "--output=size,avail", dir])
        .output()
        .expect("df runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let nums: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let [size, avail] = nums[..] else {
        return false;
    };
    let real = 100.0 * (1.0 - avail / size);
    (real - said).abs() < 2.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_busy_cluster_raises_nothing() {
    let secs: u64 = std::env::var("FORESIGHT_HEALTHY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let cluster = tokio::task::spawn_blocking(|| {
        Arc::new(
            Cluster::start(ClusterSpec::new(Version::Kafka4)).expect("a real Kafka cluster starts"),
        )
    })
    .await
    .unwrap();
    common::create_topics(
        &cluster.bootstrap(),
        &[
            ("payments", 3, 3, &[("min.insync.replicas", "2")]),
            ("events", 6, 3, &[("min.insync.replicas", "2")]),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let server = common::start_pack_server(dir.path(), &[], &receiver.url).await;
    let key = server.store.create_key("acme").unwrap();

    // One agent per broker host: its broker's and one controller's exporter, and its
    // broker's log dir.
    let mut cancels = Vec::new();
    for (broker, controller) in cluster.brokers().zip(cluster.controllers()) {
        let mut config =
            common::host_agent_config(&cluster, &server, &key, broker, Some(controller));
        config.kafka.request_timeout_ms = 5_000;
        config.interval_secs = 10;
        config.log_dirs = broker.log_dirs.clone();
        let agent = foresight_reporter::Reporter::new(config).unwrap();
        cancels.push(common::run_agent(agent));
    }

    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let b = cluster.bootstrap();
    let mut load = Vec::new();
    let s = stop.0.clone();
    let tx = tokio::task::spawn_blocking({
        let b = b.clone();
        move || transactions(b, s)
    });
    let classic = |g| (g, "classic");
    let kip848 = |g| (g, "consumer");
    for (group, topic, isolation, limit) in [
        (classic("ledger"), "payments", "read_committed", None),
        (classic("readers"), "events", "read_uncommitted", None),
        (
            classic("readers"),
            "events",
            "read_uncommitted",
            Some(Duration::from_secs(25)),
        ),
        (kip848("settlements"), "payments", "read_committed", None),
        (
            kip848("settlements"),
            "payments",
            "read_committed",
            Some(Duration::from_secs(40)),
        ),
    ] {
        let (b, s) = (b.clone(), stop.0.clone());
        load.push(tokio::task::spawn_blocking(move || {
            consume(b, group, topic, isolation, s, limit)
        }));
    }
    let s = stop.0.clone();
    load.push(tokio::task::spawn_blocking(move || steady(b, s)));
    // A share group accepting the steady writes as they come.
    let share = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            foresight_testkit::share::ShareConsumer::start(&cluster, "workers", "events")
                .expect("the share consumer starts")
        })
        .await
        .unwrap()
    };

    // Nothing may be notified for the whole period, but for disk usage that this
    // machine's real disk, which holds the brokers' log dirs, does have.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut disk_alerts = 0;
    while let Ok(msg) = tokio::time::timeout_at(deadline, receiver.rx.recv()).await {
        let msg = msg.unwrap();
        for a in msg["alerts"].as_array().unwrap() {
            assert!(
                a["labels"]["category"] == "capacity" && disk_is_that_full(a),
                "a healthy cluster raised {msg}"
            );
            disk_alerts += 1;
        }
    }
    eprintln!("{disk_alerts} disk usage notifications, each true of this machine's disk");

    // Nothing pending either, but for disk usage of this machine's real disk.
    let client = common::client(&server.fingerprint);
    let get = |q: &str| {
        let (client, key, addr) = (client.clone(), key.clone(), server.addr);
        let url = format!("https://{addr}{q}");
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let alerts = get("/api/v1/alerts").await;
    let active: Vec<&serde_json::Value> = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["category"] != "capacity")
        .collect();
    assert!(
        active.is_empty(),
        "pending or firing on a healthy cluster: {active:?}"
    );

    // Three agents, one cluster: every count once.
    let value = |v: serde_json::Value| {
        let r = v["data"]["result"].as_array().cloned().unwrap_or_default();
        assert_eq!(r.len(), 1, "{v}");
        r[0]["value"][1].as_str().unwrap().to_string()
    };
    assert_eq!(value(get("/api/v1/query?query=kafka_brokers").await), "3");
    assert_eq!(
        value(
            get(
                "/api/v1/query?query=count(kafka_topic_partition_leader%7Btopic%3D%22events%22%7D)"
            )
            .await
        ),
        "6"
    );
    assert_eq!(
        value(get("/api/v1/query?query=count(foresight_agent_batches_sent_total)").await),
        "3",
        "each agent's own series apart"
    );
    assert_eq!(
        value(get("/api/v1/query?query=count(kafka_log_dir_free_bytes)").await),
        "3",
        "one log dir per broker host"
    );

    // Both new kinds of group were seen as what they are, with their members.
    for (group, protocol) in [("settlements", "consumer"), ("workers", "share")] {
        let q = format!(
            "/api/v1/query?query=max(kafka_consumergroup_members%7Bconsumergroup%3D%22{group}%22%2Cprotocol%3D%22{protocol}%22%7D)"
        );
        let members: f64 = value(get(&q).await).parse().unwrap();
        assert!(members >= 1.0, "{group}: {members} members");
    }

    drop(stop);
    tokio::task::spawn_blocking(move || share.close().unwrap())
        .await
        .unwrap();
    let committed = tx.await.unwrap();
    assert!(committed > 10, "only {committed} transactions committed");
    for l in load {
        l.await.unwrap();
    }
    for (_, c) in cancels {
        c.cancel();
    }
    server.shutdown(Duration::from_secs(5)).await;
}
