//! Harness shared by the end-to-end tests: a real webhook receiver on loopback, the
//! ingest with a rule file of the test's own, and a pinned-TLS client.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use foresight_ingest::{ServeConfig, Server};
use foresight_notifier::WebhookConfig;
use foresight_notifier::webhook::{SIGNATURE_HEADER, verify};
use tokio::sync::mpsc;

pub const SECRET: &str = "test-secret";

/// A webhook receiver that checks signatures and hands each JSON body to the test.
pub struct Receiver {
    pub url: String,
    pub rx: mpsc::UnboundedReceiver<serde_json::Value>,
}

/// A child process (a broker, Prometheus, Alertmanager, the service) killed when the
/// test ends, passed or failed.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Kills it now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A loopback port nothing listens on (for a moment).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves `app` on a loopback port; returns its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

pub async fn start_receiver() -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs() as i64;
                let sig = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !verify(SECRET, sig, &body, now, 300) {
                    return StatusCode::UNAUTHORIZED;
                }
                tx.send(serde_json::from_slice(&body).expect("webhook body is JSON"))
                    .unwrap();
                StatusCode::OK
            }
        }),
    );
    let addr = serve(app).await;
    Receiver {
        url: format!("http://{addr}/hook"),
        rx,
    }
}

/// Starts the ingest on `listen` with no rules: for tests about delivery alone.
pub async fn start_plain_server(data_dir: &Path, listen: &str) -> Server {
    let config = ServeConfig {
        listen: listen.into(),
        data_dir: data_dir.to_path_buf(),
        evaluation_interval: "500ms".into(),
        builtin_rules: false,
        ..ServeConfig::default()
    };
    Server::start(config, None).await.expect("server starts")
}

/// Starts the ingest on loopback with only `rules` (YAML) loaded.
pub async fn start_server(
    data_dir: &Path,
    rules: Option<&str>,
    webhook_url: Option<&str>,
) -> Server {
    let mut rule_files = Vec::new();
    if let Some(rules) = rules {
        let path = data_dir.join("test-rules.yml");
        std::fs::write(&path, rules).unwrap();
        rule_files.push(path);
    }
    let config = ServeConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        evaluation_interval: "500ms".into(),
        builtin_rules: false,
        rule_files,
        webhooks: webhook_url
            .map(|url| {
                vec![WebhookConfig {
                    name: "test".into(),
                    url: url.into(),
                    secret: Some(SECRET.into()),
                    send_resolved: true,
                    timeout_secs: 5,
                }]
            })
            .unwrap_or_default(),
        ..ServeConfig::default()
    };
    Server::start(config, None).await.expect("server starts")
}

/// The fingerprint of the certificate a `foresight serve` process generates at `cert`
/// on its first start, once it is there and whole (within `within`).
pub async fn fingerprint_when_ready(cert: &Path, within: Duration) -> String {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(f) = foresight_ingest::tls::fingerprint_of(cert) {
            return f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no certificate at {} within {within:?}",
            cert.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTPS client that trusts exactly the server's certificate.
pub fn client(fingerprint: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            foresight_reporter::tls::client_config(None, Some(fingerprint)).unwrap(),
        )
        .build()
        .unwrap()
}

/// The next notification whose `alertname` and `status` match, within `within`.
pub async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<serde_json::Value>,
    alertname: &str,
    status: &str,
    within: Duration,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {status} {alertname} notification within {within:?}"))
            .expect("receiver open");
        if msg["commonLabels"]["alertname"] == alertname && msg["status"] == status {
            return msg;
        }
    }
}

/// Starts the ingest with the built-in pack as shipped, but for the `for` windows in
/// `for_overrides` (alert name, duration): the expressions are the pack's own.
pub async fn start_pack_server(
    data_dir: &Path,
    for_overrides: &[(&str, &str)],
    webhook_url: &str,
) -> Server {
    let mut pack = foresight_rules::packs::PackOptions::default();
    for (alert, window) in for_overrides {
        pack.overrides.insert(
            alert.to_string(),
            foresight_rules::packs::RuleOverride {
                for_: Some(window.to_string()),
                ..Default::default()
            },
        );
    }
    let config = ServeConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.to_path_buf(),
        evaluation_interval: "500ms".into(),
        builtin_rules: true,
        pack,
        webhooks: vec![WebhookConfig {
            name: "test".into(),
            url: webhook_url.into(),
            secret: Some(SECRET.into()),
            send_resolved: true,
            timeout_secs: 5,
        }],
        ..ServeConfig::default()
    };
    Server::start(config, None).await.expect("server starts")
}

/// An agent on a real cluster shipping to `server` every second, scraping every
/// node's jmx_exporter when `jmx` is set (brokers as `broker`, controllers as
/// `controller`).
pub fn kafka_agent(
    cluster: &foresight_testkit::Cluster,
    server: &Server,
    key: &str,
    jmx: bool,
) -> foresight_reporter::Reporter {
    foresight_reporter::Reporter::new(kafka_agent_config(cluster, server, key, jmx))
        .expect("agent config is valid")
}

/// The configuration [`kafka_agent`] runs with, to adapt.
pub fn kafka_agent_config(
    cluster: &foresight_testkit::Cluster,
    server: &Server,
    key: &str,
    jmx: bool,
) -> foresight_reporter::config::AgentConfig {
    use foresight_reporter::config::{AgentConfig, IngestConfig, KafkaConfig};
    use foresight_testkit::Role;
    let mut config = AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap(),
            request_timeout_ms: 3_000,
            ..KafkaConfig::default()
        },
        ingest: IngestConfig {
            url: format!("https://{}", server.addr),
            api_key: Some(key.to_string()),
            pinned_sha256: Some(server.fingerprint.clone()),
            ..IngestConfig::default()
        },
        interval_secs: 1,
        ..AgentConfig::default()
    };
    if jmx {
        for n in &cluster.nodes {
            match n.role {
                Role::Broker => config.jmx_exporter.insert(n.id, n.jmx_url()),
                Role::Controller => config.controller_jmx_exporter.insert(n.id, n.jmx_url()),
            };
        }
    }
    config
}

/// A topic to create: name, partitions, replication factor, configs.
pub type TopicSpec<'a> = (&'a str, i32, i32, &'a [(&'a str, &'a str)]);

/// The configuration of the agent beside `broker`, as the README deploys one per broker
/// host: its own host name and broker id, its broker's exporter and, where one runs on
/// the same host, `controller`'s.
pub fn host_agent_config(
    cluster: &foresight_testkit::Cluster,
    server: &Server,
    key: &str,
    broker: &foresight_testkit::Node,
    controller: Option<&foresight_testkit::Node>,
) -> foresight_reporter::config::AgentConfig {
    let mut config = kafka_agent_config(cluster, server, key, false);
    config.host = Some(format!("kafka-host-{}", broker.id));
    config.broker_id = Some(broker.id);
    config.jmx_exporter.insert(broker.id, broker.jmx_url());
    if let Some(c) = controller {
        config.controller_jmx_exporter.insert(c.id, c.jmx_url());
    }
    config
}

/// Creates `topics` (name, partitions, replication factor, configs) on a real cluster
/// and waits until every partition has a leader.
pub async fn create_topics(bootstrap: &str, topics: &[TopicSpec<'_>]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions, rf, configs)| {
            configs.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(*rf)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let created = admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let names: Vec<String> = topics.iter().map(|t| t.0.to_string()).collect();
    let ready = tokio::task::spawn_blocking(move || {
        foresight_testkit::wait_until(Duration::from_secs(60), || {
            let md = consumer.fetch_metadata(None, Duration::from_secs(3)).ok()?;
            names
                .iter()
                .all(|n| {
                    md.topics().iter().any(|t| {
                        t.name() == n
                            && !t.partitions().is_empty()
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .then_some(())
        })
    })
    .await
    .unwrap();
    assert!(
        ready.is_some(),
        "topics {topics:?} have no leaders after 60 s"
    );
}

/// Runs the agent until the returned token is cancelled.
pub fn run_agent(
    agent: foresight_reporter::Reporter,
) -> (
    std::sync::Arc<foresight_reporter::Reporter>,
    tokio_util::sync::CancellationToken,
) {
    let agent = std::sync::Arc::new(agent);
    let cancel = tokio_util::sync::CancellationToken::new();
    let (a, c) = (agent.clone(), cancel.clone());
    tokio::spawn(async move { a.run(c).await });
    (agent, cancel)
}

/// Creates `topic` with its replicas placed as `assignment` says (one list of broker
/// ids per partition) and `configs`.
pub async fn create_assigned_topic(
    bootstrap: &str,
    topic: &str,
    assignment: &[&[i32]],
    configs: &[(&str, &str)],
) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let new = configs.iter().fold(
        NewTopic::new(
            topic,
            assignment.len() as i32,
            TopicReplication::Variable(assignment),
        ),
        |t, (k, v)| t.set(k, v),
    );
    let created = admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
}

/// The value of the agent's `foresight_agent_protocol_up{part}` in a batch.
pub fn protocol_up(batch: &foresight_proto::v1::TelemetryBatch, part: &str) -> Option<f64> {
    batch
        .series
        .iter()
        .find(|s| {
            s.name == "foresight_agent_protocol_up"
                && s.labels.iter().any(|l| l.name == "part" && l.value == part)
        })
        .map(|s| s.samples[0].value)
}

/// Output of one of Kafka's tools run against `cluster`; the tool must succeed.
pub async fn kafka_tool(
    cluster: &'static foresight_testkit::Cluster,
    class: &'static str,
    args: Vec<String>,
) -> String {
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.tool(class, &args).expect("java runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{class} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
