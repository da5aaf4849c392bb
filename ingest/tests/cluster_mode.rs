//! Cluster mode on real parts: three `foresight serve` processes on a real Apache Kafka
//! KRaft cluster (one controller, three brokers) and a real PostgreSQL server, agents
//! sending through one node. The evaluator that owns the agents' cluster is killed
//! (SIGKILL) while an alert is pending: another node takes its partitions, the alert
//! fires once with its original `startsAt`, nothing already notified is notified again.
//! Then a Kafka broker is killed: ingest keeps acknowledging. Then PostgreSQL is
//! stopped: ingest goes on, the API answers 503 with `Retry-After`, and recovers by
//! itself after the restart. Every acknowledged batch is in the telemetry topic.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foresight_ingest::cluster::config::partition_of;
use foresight_ingest::store::pg::PgStore;
use foresight_proto::Message as _;
use foresight_proto::v1::{Label, Resource, Sample, Series, TelemetryBatch};
use foresight_testkit::postgres::Postgres;
use foresight_testkit::{Cluster, ClusterSpec, Version};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

const PARTITIONS: i32 = 4;

/// One test at a time: each runs a Kafka cluster, PostgreSQL and several nodes, which
/// together fill this machine's two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const TOPIC: &str = "foresight.telemetry.test";

const RULES: &str = r#"
groups:
- name: cluster
  rules:
  - alert: AlreadyFiring
    expr: test_other > 0
  - alert: Stuck
    expr: test_value > 0
    for: 20s
"#;

fn batch(agent: &str, seq: u64) -> Vec<u8> {
    let now = common::now_ms();
    let series = |name: &str| Series {
        name: name.into(),
        labels: vec![Label {
            name: "agent".into(),
            value: agent.into(),
        }],
        samples: vec![Sample {
            timestamp_ms: now,
            value: 1.0,
        }],
    };
    let b = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: agent.into(),
            cluster_name: "prod".into(),
            ..Default::default()
        }),
        sequence: seq,
        created_at_ms: now,
        series: if agent == "agent-0" {
            vec![series("test_value"), series("test_other")]
        } else {
            vec![series("unrelated")]
        },
        ..Default::default()
    };
    zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap()
}

struct NodeProc {
    name: String,
    config: PathBuf,
    data: PathBuf,
    port: u16,
    child: common::ChildGuard,
}

fn write_config(dir: &Path, name: &str, kafka: &str, pg: &str, receiver: &str) -> NodeProc {
    let notify = format!(
        "webhooks:\n- {{name: hook, url: \"{receiver}\", secret: {}}}\n",
        common::SECRET
    );
    start_node(dir, name, common::free_port(), kafka, pg, &notify, TOPIC)
}

fn start_node(
    dir: &Path,
    name: &str,
    port: u16,
    kafka: &str,
    pg: &str,
    notify: &str,
    topic: &str,
) -> NodeProc {
    start_node_with(dir, name, port, kafka, pg, notify, topic, "[all]", "")
}

/// A node with `roles` (YAML list) and `extra` lines under `cluster:`.
#[allow(clippy::too_many_arguments)]
fn start_node_with(
    dir: &Path,
    name: &str,
    port: u16,
    kafka: &str,
    pg: &str,
    notify: &str,
    topic: &str,
    roles: &str,
    extra: &str,
) -> NodeProc {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let rules = dir.join("rules.yml");
    if !rules.exists() {
        std::fs::write(&rules, RULES).unwrap();
    }
    let config = dir.join(format!("{name}.yml"));
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {}\nevaluation_interval: 500ms\nbuiltin_rules: false\nrule_files: [{}]\n{notify}cluster:\n  node_id: {name}\n  roles: {roles}\n{extra}  kafka: {{bootstrap_servers: \"{kafka}\"}}\n  topics: {{telemetry: {topic}, telemetry_partitions: {PARTITIONS}, replication_factor: 3, alerts: {topic}.alerts}}\n  postgres: {{url: \"{pg}\", pool_size: 4}}\n",
            data.display(),
            rules.display(),
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    let child = common::ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_foresight"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("foresight starts"),
    );
    NodeProc {
        name: name.into(),
        config,
        data,
        port,
        child,
    }
}

/// A real Kafka cluster (one controller, three brokers) and PostgreSQL, started together.
async fn kafka_and_postgres() -> (Cluster, Postgres) {
    let (kafka, pg) = tokio::join!(
        tokio::task::spawn_blocking(|| {
            Cluster::start(ClusterSpec::new(Version::Kafka4).nodes(1, 3))
                .expect("a real Kafka cluster starts")
        }),
        tokio::task::spawn_blocking(|| Postgres::start().expect("PostgreSQL starts")),
    );
    (kafka.unwrap(), pg.unwrap())
}

/// A key of `scope` for the tenant `acme`, made by the CLI in `config`'s PostgreSQL.
fn create_key(scope: &str, config: &Path) -> String {
    let out = foresight(
        &["keys", "create", "--tenant", "acme", "--scope", scope],
        config,
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The test's own connection to the shared state (for the nodes' heartbeats).
async fn connect(url: String) -> Arc<PgStore> {
    Arc::new(
        tokio::task::spawn_blocking(move || PgStore::connect(&url, 2).unwrap())
            .await
            .unwrap(),
    )
}

fn foresight(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_foresight"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// The node that owns `partition` once every partition has an owner among `up` and
/// each of them owns some.
/// Waits until `restarted` runs again (started after `since_ms`) and every node has
/// reported its share of a settled group since then.
async fn settled_after(
    pg: &Arc<PgStore>,
    names: &[&str],
    restarted: &str,
    since_ms: i64,
    dir: &Path,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pg2 = pg.clone();
        let nodes = tokio::task::spawn_blocking(move || pg2.nodes().unwrap())
            .await
            .unwrap();
        let live: Vec<_> = nodes
            .iter()
            .filter(|n| names.contains(&n.node_id.as_str()) && n.seen_at_ms >= since_ms)
            .collect();
        let owned: BTreeSet<i32> = live.iter().flat_map(|n| n.partitions.clone()).collect();
        if live.len() == names.len()
            && live
                .iter()
                .any(|n| n.node_id == restarted && n.started_at_ms >= since_ms)
            && owned.len() == PARTITIONS as usize
            && live.iter().all(|n| !n.partitions.is_empty())
            && live.iter().map(|n| n.partitions.len()).sum::<usize>() == PARTITIONS as usize
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{restarted} did not rejoin a settled group: {nodes:?}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last lines each node logged, for a failure's message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            out += &format!("--- {}\n", e.path().display());
            for l in tail.into_iter().rev() {
                out += l;
                out += "\n";
            }
        }
    }
    out
}

async fn owner(pg: &Arc<PgStore>, partition: i32, up: &[&str], dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pg = pg.clone();
        let nodes = tokio::task::spawn_blocking(move || pg.nodes().unwrap())
            .await
            .unwrap();
        let now = common::now_ms();
        let live: Vec<_> = nodes
            .iter()
            .filter(|n| {
                up.contains(&n.node_id.as_str())
                    && foresight_ingest::cluster::nodes::is_up(n.seen_at_ms, now)
            })
            .collect();
        let owned: BTreeSet<i32> = live.iter().flat_map(|n| n.partitions.clone()).collect();
        // Every evaluator has its share: the group has settled.
        if live.len() == up.len()
            && owned.len() == PARTITIONS as usize
            && live.iter().all(|n| !n.partitions.is_empty())
            // No heartbeat from before the last rebalance: each partition once.
            && live.iter().map(|n| n.partitions.len()).sum::<usize>() == PARTITIONS as usize
            && let Some(n) = live.iter().find(|n| n.partitions.contains(&partition))
        {
            return n.node_id.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no owner for every partition among {up:?}: {nodes:?}\n{}",
            logs(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every (agent instance, sequence) in `topic`, read by a group of its own.
async fn read_topic(bootstrap: &str, topic: &str) -> BTreeSet<(String, u64)> {
    let (bootstrap, topic) = (bootstrap.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "cluster-mode-oracle")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let mut seen = BTreeSet::new();
        let mut quiet = 0;
        while quiet < 10 {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    quiet = 0;
                    let h = m.headers().unwrap();
                    let get = |name: &str| {
                        h.iter()
                            .find(|x| x.key == name)
                            .and_then(|x| x.value)
                            .map(|v| String::from_utf8_lossy(v).to_string())
                            .unwrap()
                    };
                    seen.insert((get("instance"), get("sequence").parse::<u64>().unwrap()));
                }
                _ => quiet += 1,
            }
        }
        seen
    })
    .await
    .unwrap()
}

type Counts = HashMap<(String, String), usize>;

/// The next notification whose `alertname` and `status` match, counting every
/// notification on the way (a repeat must not pass unseen).
async fn wait_counting(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    alertname: &str,
    status: &str,
    within: Duration,
    counts: &mut Counts,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no {status} {alertname} notification within {within:?}; seen {counts:?}")
            })
            .expect("receiver open");
        let key = count(counts, &msg);
        if key.0 == alertname && key.1 == status {
            return msg;
        }
    }
}

/// Counts `msg` by its alert name and status, and returns them.
fn count(counts: &mut Counts, msg: &serde_json::Value) -> (String, String) {
    let key = (
        msg["commonLabels"]["alertname"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        msg["status"].as_str().unwrap_or("").to_string(),
    );
    *counts.entry(key.clone()).or_default() += 1;
    key
}

/// Stops the agents, then counts what still arrives until the receiver is quiet for 3 s.
async fn stop_and_drain(
    stop: tokio_util::sync::CancellationToken,
    agents: Vec<tokio::task::JoinHandle<()>>,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
    counts: &mut Counts,
) {
    stop.cancel();
    for a in agents {
        a.await.unwrap();
    }
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await {
        count(counts, &msg);
    }
}

async fn client_for(node: &NodeProc) -> reqwest::Client {
    let fingerprint =
        common::fingerprint_when_ready(&node.data.join("tls/cert.pem"), Duration::from_secs(60))
            .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    common::client(&fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evaluator_killed_while_an_alert_is_pending_hands_over_without_loss_or_repeat() {
    let _serial = SERIAL.lock().await;
    let (kafka, pg_server) = kafka_and_postgres().await;
    let bootstrap = kafka.bootstrap();
    let url = pg_server.url();
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;

    let mut nodes: Vec<NodeProc> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| write_config(dir.path(), n, &bootstrap, &url, &receiver.url))
        .collect();

    // The checked config says it is cluster mode; keys go to PostgreSQL, for every node.
    let check = foresight(&["check-config"], &nodes[0].config);
    let said = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("cluster mode: node node-a, roles ingest,evaluator,notifier,api"),
        "{said}"
    );
    let key = create_key("ingest", &nodes[1].config);
    let read_key = create_key("read", &nodes[2].config);

    let pg = connect(url).await;
    let part = partition_of("acme", "prod", PARTITIONS);
    let victim = owner(&pg, part, &["node-a", "node-b", "node-c"], dir.path()).await;
    let target = nodes.iter().position(|n| n.name != victim).unwrap();
    let client = client_for(&nodes[target]).await;
    let telemetry = format!("https://127.0.0.1:{}/v1/telemetry", nodes[target].port);

    // Three agents send a batch every 100 ms through a node that survives; each
    // retries its sequence until it is acknowledged, as the real agent does.
    let acked: Arc<Mutex<BTreeSet<(String, u64)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut agents = Vec::new();
    for a in 0..3 {
        let (client, url, key, acked, stop) = (
            client.clone(),
            telemetry.clone(),
            key.clone(),
            acked.clone(),
            stop.clone(),
        );
        agents.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let mut seq = 1;
            while !stop.is_cancelled() {
                let sent = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-encoding", "zstd")
                    .timeout(Duration::from_secs(25))
                    .body(batch(&agent, seq))
                    .send()
                    .await;
                if matches!(&sent, Ok(r) if r.status() == 202) {
                    acked.lock().unwrap().insert((agent.clone(), seq));
                    seq += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    let mut counts = Counts::new();
    let first = wait_counting(
        &mut receiver.rx,
        "AlreadyFiring",
        "firing",
        Duration::from_secs(90),
        &mut counts,
    )
    .await;
    // Stuck has been pending since about then; kill its evaluator in the middle of
    // its `for`.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let victim_at = nodes.iter().position(|n| n.name == victim).unwrap();
    nodes[victim_at].child.kill();
    let killed_at = std::time::SystemTime::now();
    let killed = Instant::now();
    let survivors: Vec<&str> = nodes
        .iter()
        .map(|n| n.name.as_str())
        .filter(|n| *n != victim)
        .collect();
    let heir = owner(&pg, part, &survivors, dir.path()).await;
    assert_ne!(heir, victim);

    let stuck = wait_counting(
        &mut receiver.rx,
        "Stuck",
        "firing",
        Duration::from_secs(60),
        &mut counts,
    )
    .await;
    let starts_at: jiff::Timestamp = stuck["alerts"][0]["startsAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        starts_at < jiff::Timestamp::try_from(killed_at).unwrap(),
        "Stuck's startsAt {starts_at} is after the kill: its pending time started over on {heir}"
    );
    eprintln!(
        "{victim} killed; {heir} took partition {part}; Stuck fired {:?} after the kill",
        killed.elapsed()
    );

    // One Kafka broker under Foresight killed: ingest keeps acknowledging (the topic
    // has three replicas and min.insync.replicas 2).
    let before = acked.lock().unwrap().len();
    kafka.node(1).kill();
    let broker_killed = Instant::now();
    loop {
        let now = acked.lock().unwrap().len();
        if now >= before + 60 {
            break;
        }
        assert!(
            broker_killed.elapsed() < Duration::from_secs(60),
            "only {} batches acknowledged in the minute after a broker was killed",
            now - before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "broker 1 killed: 60 more batches acknowledged within {:?}",
        broker_killed.elapsed()
    );

    // PostgreSQL stopped: agents' keys, seen valid, keep working and batches keep
    // being acknowledged; what needs the shared state answers 503 with Retry-After;
    // all of it recovers by itself once PostgreSQL is back.
    let silences = format!("https://127.0.0.1:{}/api/v2/silences", nodes[target].port);
    let listed = client
        .get(&silences)
        .bearer_auth(&read_key)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    tokio::task::block_in_place(|| pg_server.stop());
    let before = acked.lock().unwrap().len();
    let pg_stopped = Instant::now();
    let refused = loop {
        let r = client
            .get(&silences)
            .bearer_auth(&read_key)
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            break r;
        }
        assert!(
            pg_stopped.elapsed() < Duration::from_secs(30),
            "silences still answer {} with PostgreSQL stopped",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "store", "{body}");
    while acked.lock().unwrap().len() < before + 30 {
        assert!(
            pg_stopped.elapsed() < Duration::from_secs(60),
            "ingest stopped acknowledging with PostgreSQL down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::task::block_in_place(|| pg_server.restart()).expect("PostgreSQL starts again");
    let restarted = Instant::now();
    loop {
        let r = client
            .get(&silences)
            .bearer_auth(&read_key)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(30),
            "silences answer {} 30 s after PostgreSQL is back",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "PostgreSQL stopped for {:?}; the API answered again {:?} after its restart",
        restarted - pg_stopped,
        restarted.elapsed()
    );

    // Keep sending a while, then stop and count what arrived.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_and_drain(stop, agents, &mut receiver.rx, &mut counts).await;
    assert_eq!(
        counts,
        HashMap::from([
            (("AlreadyFiring".into(), "firing".into()), 1),
            (("Stuck".into(), "firing".into()), 1)
        ]),
        "each alert is notified once across the hand-over (first: {first})\n{}",
        logs(dir.path())
    );

    // `foresight cluster status`: the killed node is down, every partition owned (once
    // the group has settled: the outages above may leave a rebalance under way, during
    // which it rightly exits 1).
    let deadline = Instant::now() + Duration::from_secs(60);
    let said = loop {
        let status = foresight(&["cluster", "status"], &nodes[target].config);
        let said = String::from_utf8_lossy(&status.stdout).to_string();
        if status.status.success() {
            break said;
        }
        assert!(
            said.contains("partitions without an evaluator"),
            "status failed otherwise: {said}"
        );
        assert!(
            Instant::now() < deadline,
            "no settled group in a minute: {said}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        said.lines()
            .any(|l| l.starts_with(&format!("{victim}\tdown"))),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "{PARTITIONS} of {PARTITIONS} telemetry partitions owned"
        )),
        "{said}"
    );

    // Every acknowledged batch is in the telemetry topic.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} batches acknowledged",
        acked.len()
    );
    let in_topic = read_topic(&bootstrap, TOPIC).await;
    let missing: Vec<_> = acked.difference(&in_topic).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in Kafka: {missing:?}"
    );
    for n in &mut nodes {
        n.child.kill();
    }
    drop(kafka);
}

/// Alerts of two clusters whose telemetry partitions belong to different evaluators
/// reach one notifier, which groups them as one Alertmanager group: one notification
/// with both, not one per evaluator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_from_different_evaluators_are_grouped_by_one_notifier() {
    let _serial = SERIAL.lock().await;
    let (kafka, pg_server) = kafka_and_postgres().await;
    let url = pg_server.url();
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let notify = format!(
        "alertmanager_config: {}\n",
        dir.path().join("alertmanager.yml").display()
    );
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 3s\n  group_interval: 1m\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n        secret: {}\n",
            receiver.url,
            common::SECRET
        ),
    )
    .unwrap();
    let topic = "foresight.telemetry.grouping";
    let nodes: Vec<NodeProc> = ["node-x", "node-y"]
        .iter()
        .map(|n| {
            start_node(
                dir.path(),
                n,
                common::free_port(),
                &kafka.bootstrap(),
                &url,
                &notify,
                topic,
            )
        })
        .collect();
    let key = create_key("ingest", &nodes[0].config);
    let pg = connect(url).await;
    // Two clusters whose partitions belong to different evaluators.
    let owner_x = owner(&pg, 0, &["node-x", "node-y"], dir.path()).await;
    let mut picked: HashMap<String, String> = HashMap::new();
    for i in 0..100 {
        let name = format!("kafka-{i}");
        let o = owner(
            &pg,
            partition_of("acme", &name, PARTITIONS),
            &["node-x", "node-y"],
            dir.path(),
        )
        .await;
        picked.entry(o).or_insert(name);
        if picked.len() == 2 {
            break;
        }
    }
    assert_eq!(
        picked.len(),
        2,
        "no two clusters on different evaluators ({owner_x})"
    );
    let clusters: Vec<String> = picked.values().cloned().collect();

    let client = client_for(&nodes[0]).await;
    let telemetry = format!("https://127.0.0.1:{}/v1/telemetry", nodes[0].port);
    for round in 1..=20u64 {
        for c in &clusters {
            let now = common::now_ms();
            let b = TelemetryBatch {
                resource: Some(Resource {
                    agent_instance_id: format!("agent-{c}"),
                    cluster_name: c.clone(),
                    ..Default::default()
                }),
                sequence: round,
                created_at_ms: now,
                series: vec![Series {
                    name: "test_other".into(),
                    labels: vec![Label {
                        name: "cluster".into(),
                        value: c.clone(),
                    }],
                    samples: vec![Sample {
                        timestamp_ms: now,
                        value: 1.0,
                    }],
                }],
                ..Default::default()
            };
            let r = client
                .post(&telemetry)
                .bearer_auth(&key)
                .header("content-encoding", "zstd")
                .body(zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut counts = Counts::new();
    let first = wait_counting(
        &mut receiver.rx,
        "AlreadyFiring",
        "firing",
        Duration::from_secs(60),
        &mut counts,
    )
    .await;
    let grouped: BTreeSet<String> = first["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["cluster"].as_str().unwrap().to_string())
        .collect();
    // A second notification within group_wait would be the other evaluator's group.
    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), receiver.rx.recv()).await {
        panic!("a second notification: {msg}\nafter: {first}");
    }
    assert_eq!(
        grouped,
        clusters.iter().cloned().collect::<BTreeSet<_>>(),
        "one notification with both clusters' alerts: {first}"
    );

    // Queries on either node see both evaluators' series; the clusters API both
    // clusters, and each cluster's page wherever it is asked.
    let read_key = create_key("read", &nodes[1].config);
    let all: BTreeSet<String> = clusters.iter().cloned().collect();
    for n in &nodes {
        let client = client_for(n).await;
        let base = format!("https://127.0.0.1:{}", n.port);
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/query?query=test_other"))
            .bearer_auth(&read_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seen: BTreeSet<String> = v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|r| r["metric"]["cluster"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seen, all, "{}: {v}", n.name);
        assert!(v.get("warnings").is_none(), "{v}");
        let v: serde_json::Value = client
            .get(format!("{base}/api/v1/clusters"))
            .bearer_auth(&read_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let listed: BTreeSet<String> = v
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed, all, "{}: {v}", n.name);
        for c in &clusters {
            let r = client
                .get(format!("{base}/api/v1/clusters/{c}"))
                .bearer_auth(&read_key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}: cluster {c}", n.name);
        }
    }
    drop(nodes);
    drop(kafka);
}

const ROLLING_RULES: &str = r#"
groups:
- name: rolling
  rules:
  - alert: AlreadyFiring
    expr: test_other > 0
  - alert: Stuck
    expr: test_value > 0
    for: 15s
  - alert: Gone
    expr: test_gone > 0
"#;

fn rolling_batch(agent: &str, seq: u64, gone: f64) -> Vec<u8> {
    let now = common::now_ms();
    let series = |name: &str, value: f64| Series {
        name: name.into(),
        labels: vec![Label {
            name: "agent".into(),
            value: agent.into(),
        }],
        samples: vec![Sample {
            timestamp_ms: now,
            value,
        }],
    };
    let b = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: agent.into(),
            cluster_name: "prod".into(),
            ..Default::default()
        }),
        sequence: seq,
        created_at_ms: now,
        series: if agent == "agent-0" {
            vec![
                series("test_value", 1.0),
                series("test_other", 1.0),
                series("test_gone", gone),
            ]
        } else {
            vec![series("unrelated", 1.0)]
        },
        ..Default::default()
    };
    zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap()
}

/// Every node restarted in turn (SIGTERM, start again) while agents send through
/// whichever node answers: no acknowledged batch is lost, and each alert change is
/// notified exactly once: one firing before the restarts, one whose `for` ends and one
/// that resolves during them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_and_repeats_nothing() {
    let _serial = SERIAL.lock().await;
    let (kafka, pg_server) = kafka_and_postgres().await;
    let bootstrap = kafka.bootstrap();
    let url = pg_server.url();
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    // One certificate for every node, so that agents pin one fingerprint.
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let names = ["node-r1", "node-r2", "node-r3"];
    for n in names {
        let tls = dir.path().join(n).join("tls");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(tls.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    }
    std::fs::write(dir.path().join("rules.yml"), ROLLING_RULES).unwrap();
    let notify = format!(
        "webhooks:\n- {{name: hook, url: \"{}\", secret: {}}}\n",
        receiver.url,
        common::SECRET
    );
    let topic = "foresight.telemetry.rolling";
    let mut nodes: Vec<NodeProc> = names
        .iter()
        .map(|n| {
            start_node(
                dir.path(),
                n,
                common::free_port(),
                &bootstrap,
                &url,
                &notify,
                topic,
            )
        })
        .collect();
    // start_node wrote the cluster test's rules; these nodes read the rolling ones.
    let key = create_key("ingest", &nodes[0].config);
    let pg = connect(url).await;
    owner(&pg, 0, &names, dir.path()).await;
    let client = common::client(
        &foresight_ingest::tls::fingerprint_of(&dir.path().join("node-r1/tls/cert.pem")).unwrap(),
    );
    let urls: Vec<String> = nodes
        .iter()
        .map(|n| format!("https://127.0.0.1:{}/v1/telemetry", n.port))
        .collect();

    // Agents send every 100 ms, each batch to the next node that acknowledges it.
    let acked: Arc<Mutex<BTreeSet<(String, u64)>>> = Arc::default();
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut agents = Vec::new();
    for a in 0..3 {
        let (client, urls, key, acked, stop, gone) = (
            client.clone(),
            urls.clone(),
            key.clone(),
            acked.clone(),
            stop.clone(),
            gone.clone(),
        );
        agents.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let (mut seq, mut at) = (1, a);
            while !stop.is_cancelled() {
                let value = if gone.load(std::sync::atomic::Ordering::SeqCst) {
                    0.0
                } else {
                    1.0
                };
                let sent = client
                    .post(&urls[at % urls.len()])
                    .bearer_auth(&key)
                    .header("content-encoding", "zstd")
                    .timeout(Duration::from_secs(25))
                    .body(rolling_batch(&agent, seq, value))
                    .send()
                    .await;
                if matches!(&sent, Ok(r) if r.status() == 202) {
                    acked.lock().unwrap().insert((agent.clone(), seq));
                    seq += 1;
                } else {
                    at += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    let mut counts = Counts::new();
    wait_counting(
        &mut receiver.rx,
        "Gone",
        "firing",
        Duration::from_secs(90),
        &mut counts,
    )
    .await;
    // Gone resolves and Stuck's `for` ends while the nodes restart.
    gone.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = Instant::now();
    for i in 0..nodes.len() {
        let pid = nodes[i].child.0.id();
        let term = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let exited = tokio::task::block_in_place(|| nodes[i].child.0.wait()).unwrap();
        assert!(exited.success(), "{} exited with {exited}", nodes[i].name);
        // The restarted node listens where it did, so agents find it again.
        let since = common::now_ms();
        nodes[i] = start_node(
            dir.path(),
            names[i],
            nodes[i].port,
            &bootstrap,
            &pg_server.url(),
            &notify,
            topic,
        );
        settled_after(&pg, &names, names[i], since, dir.path()).await;
        // As an operator would: the next node once this one has served a while.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    eprintln!("rolling restart of 3 nodes took {:?}", started.elapsed());
    for (name, status) in [("Stuck", "firing"), ("Gone", "resolved")] {
        if !counts.contains_key(&(name.to_string(), status.to_string())) {
            wait_counting(
                &mut receiver.rx,
                name,
                status,
                Duration::from_secs(60),
                &mut counts,
            )
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop_and_drain(stop, agents, &mut receiver.rx, &mut counts).await;
    let expected: Counts = [
        ("AlreadyFiring", "firing"),
        ("Stuck", "firing"),
        ("Gone", "firing"),
        ("Gone", "resolved"),
    ]
    .into_iter()
    .map(|(a, s)| ((a.to_string(), s.to_string()), 1))
    .collect();
    assert_eq!(
        counts,
        expected,
        "each change notified once through the rolling restart\n{}",
        logs(dir.path())
    );
    let acked = acked.lock().unwrap().clone();
    let in_topic = read_topic(&bootstrap, topic).await;
    let missing: Vec<_> = acked.difference(&in_topic).collect();
    assert!(
        acked.len() > 100,
        "only {} batches acknowledged",
        acked.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not in Kafka: {missing:?}"
    );
    drop(nodes);
    drop(kafka);
}

/// The process among `pids` that owns the loopback TCP socket bound to `port`
/// (`/proc/net/tcp`, then each process's file descriptors).
fn pid_with_port(pids: &[u32], port: u16) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (local_port == port).then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let target = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == target))
    })
}

/// A notifier node killed (SIGKILL) in the middle of sending a notification: the other
/// notifier node sends it once the killed node's lease on the outbox entry ends, with
/// the same idempotency key. The test counts the deliveries the receiver saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notifier_killed_while_sending_leaves_the_notification_to_another() {
    let _serial = SERIAL.lock().await;
    let (kafka, pg_server) = kafka_and_postgres().await;
    let url = pg_server.url();
    let dir = tempfile::tempdir().unwrap();

    // The receiver holds the first request without answering; later ones it accepts.
    #[derive(Debug, Clone)]
    struct Seen {
        peer_port: u16,
        key: String,
        at: Instant,
    }
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                std::net::SocketAddr,
            >,
                  headers: axum::http::HeaderMap| {
                let (s, first_tx) = (s.clone(), first_tx.clone());
                async move {
                    let key = headers
                        .get(foresight_notifier::webhook::IDEMPOTENCY_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    let n = {
                        let mut s = s.lock().unwrap();
                        s.push(Seen {
                            peer_port: peer.port(),
                            key,
                            at: Instant::now(),
                        });
                        s.len()
                    };
                    if n == 1 {
                        let _ = first_tx.send(());
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap()
    });

    // Receiver timeouts of 30 s, a 5 s lease: only a node that died leaves an entry
    // early (production keeps the lease above the timeout).
    let notify = format!("webhooks:\n- {{name: hook, url: \"{hook}\", timeout_secs: 30}}\n");
    let topic = "foresight.telemetry.notifier";
    let lease = "  delivery_lease: 5s\n";
    let bootstrap = kafka.bootstrap();
    let node = |name: &str, roles: &str| {
        start_node_with(
            dir.path(),
            name,
            common::free_port(),
            &bootstrap,
            &url,
            &notify,
            topic,
            roles,
            lease,
        )
    };
    let evaluator = node("node-e", "[ingest, evaluator, api]");
    let mut notifiers = [node("node-n1", "[notifier]"), node("node-n2", "[notifier]")];
    let key = create_key("ingest", &evaluator.config);
    // A node without the api role answers its health, not the API.
    let n1 = client_for(&notifiers[0]).await;
    let base = format!("https://127.0.0.1:{}", notifiers[0].port);
    let health = n1.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let api = n1
        .get(format!("{base}/api/v1/query?query=up"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        404,
        "a notifier-only node serves the query API"
    );
    let client = client_for(&evaluator).await;
    let telemetry = format!("https://127.0.0.1:{}/v1/telemetry", evaluator.port);
    let stop = tokio_util::sync::CancellationToken::new();
    let agent = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seq = 1;
            while !stop.is_cancelled() {
                let r = client
                    .post(&telemetry)
                    .bearer_auth(&key)
                    .header("content-encoding", "zstd")
                    .body(batch("agent-0", seq))
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status() == 202) {
                    seq += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    tokio::time::timeout(Duration::from_secs(120), first_rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no delivery started\n{}", logs(dir.path())))
        .unwrap();
    let first = seen.lock().unwrap()[0].clone();
    let pids: Vec<u32> = notifiers.iter().map(|n| n.child.0.id()).collect();
    let sender = pid_with_port(&pids, first.peer_port)
        .unwrap_or_else(|| panic!("no notifier owns port {}", first.peer_port));
    let killed = notifiers
        .iter()
        .position(|n| n.child.0.id() == sender)
        .unwrap();
    notifiers[killed].child.kill();
    let killed_at = Instant::now();

    let delivered = loop {
        let s = seen.lock().unwrap().clone();
        if s.len() >= 2 {
            break s;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "the notification was not sent again after {} was killed\n{}",
            notifiers[killed].name,
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Looked up at once, while its connection is open.
    let second_sender = pid_with_port(&pids, delivered[1].peer_port);
    // Nothing else arrives: one notification, two attempts.
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    agent.await.unwrap();
    let all = seen.lock().unwrap().clone();
    let keys: Vec<&str> = all.iter().map(|s| s.key.as_str()).collect();
    eprintln!(
        "{} killed mid-send; {} deliveries of one notification, the second {:?} after the kill (lease 5 s)",
        notifiers[killed].name,
        all.len(),
        delivered[1].at - killed_at
    );
    assert_eq!(all.len(), 2, "deliveries: {keys:?}");
    assert!(!first.key.is_empty());
    assert_eq!(
        delivered[1].key, first.key,
        "the second delivery carries the first one's idempotency key"
    );
    assert_eq!(
        second_sender,
        Some(notifiers[1 - killed].child.0.id()),
        "the other notifier node sent it"
    );
    drop(evaluator);
    drop(kafka);
}
