//! `foresight demo`: the whole pipeline in one process on embedded defaults.
//!
//! An in-process Kafka-protocol cluster (librdkafka's mock cluster), the agent, the
//! ingest on loopback HTTPS with a temporary data dir and the built-in rules, and a local
//! webhook receiver that prints each notification it receives as one JSON line. After
//! the first batches arrive the demo takes partitions' leaders away, which the built-in
//! `KafkaOfflinePartitions` rule detects. It prints a one-time sign-in link to the
//! console, which shows the fault and its alert.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use foresight_notifier::WebhookConfig;
use foresight_notifier::webhook::{SIGNATURE_HEADER, verify};
use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, IngestConfig, KafkaConfig};
use rdkafka::mocking::MockCluster;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Error, ServeConfig, Server};

/// Demo options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Exit after the first delivered notification.
    pub once: bool,
    /// With `once`: fail if nothing is delivered within this time.
    pub timeout: Duration,
    /// Time between agent collections (whole seconds).
    pub agent_interval: Duration,
    /// Time between rule evaluations.
    pub evaluation_interval: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            once: false,
            timeout: Duration::from_secs(120),
            agent_interval: Duration::from_secs(2),
            evaluation_interval: Duration::from_secs(1),
        }
    }
}

/// What the demo saw.
#[derive(Debug)]
pub struct DemoOutcome {
    /// Notifications received by the local webhook, as JSON.
    pub notifications: Vec<serde_json::Value>,
    /// Time from start to the first notification.
    pub first_notification_after: Option<Duration>,
}

const TOPIC: &str = "payments";

/// How long the fault lasts after the first notification: time to open the console and
/// look at it before it heals and the resolved notification follows.
const HEAL_AFTER: Duration = Duration::from_secs(300);

fn say(msg: &str) {
    eprintln!("demo: {msg}");
}

/// Runs the demo. With `once`, returns after the first notification; otherwise runs until
/// `cancel` fires, healing the fault a while after the first notification so that the
/// resolved notification shows too.
///
/// # Errors
/// [`Error`] if a part fails to start, or with `once` if nothing arrives in time.
pub async fn run(opts: DemoOptions, cancel: CancellationToken) -> Result<DemoOutcome, Error> {
    let started = Instant::now();
    let data_dir =
        tempfile::tempdir().map_err(|e| Error::Io(format!("temporary data dir: {e}")))?;

    // The local webhook receiver.
    let secret = hex::encode(rand::random::<[u8; 16]>());
    let (notif_tx, mut notif_rx) = mpsc::unbounded_channel::<serde_json::Value>();
    let receiver_secret = secret.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = notif_tx.clone();
            let secret = receiver_secret.clone();
            async move {
                let now = foresight_proto::now_ms() / 1000;
                let signed = headers
                    .get(SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|h| verify(&secret, h, &body, now, 300));
                if !signed {
                    return StatusCode::UNAUTHORIZED;
                }
                match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => {
                        let _ = tx.send(v);
                        StatusCode::OK
                    }
                    Err(_) => StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::Io(format!("webhook receiver: {e}")))?;
    let hook_addr = hook_listener
        .local_addr()
        .map_err(|e| Error::Io(e.to_string()))?;
    let hook_cancel = cancel.child_token();
    let hc = hook_cancel.clone();
    tokio::spawn(async move {
        let _ = axum::serve(hook_listener, receiver)
            .with_graceful_shutdown(async move { hc.cancelled().await })
            .await;
    });

    // The Kafka cluster.
    let cluster = MockCluster::new(3).map_err(|e| Error::Io(format!("mock cluster: {e}")))?;
    cluster
        .create_topic(TOPIC, 6, 3)
        .map_err(|e| Error::Io(format!("mock topic: {e}")))?;
    cluster
        .create_topic("orders", 3, 3)
        .map_err(|e| Error::Io(format!("mock topic: {e}")))?;
    say(&format!(
        "Kafka mock cluster with 3 brokers at {}",
        cluster.bootstrap_servers()
    ));

    // The ingest.
    let config = ServeConfig {
        listen: "127.0.0.1:0".into(),
        data_dir: data_dir.path().to_path_buf(),
        evaluation_interval: format!("{}ms", opts.evaluation_interval.as_millis()),
        webhooks: vec![WebhookConfig {
            name: "demo-webhook".into(),
            url: format!("http://{hook_addr}/hook"),
            secret: Some(secret),
            send_resolved: true,
            timeout_secs: 5,
        }],
        external_labels: BTreeMap::from([("source".to_string(), "foresight-demo".to_string())]),
        ..ServeConfig::default()
    };
    let server = Server::start(config, None).await?;
    let key = server
        .store
        .create_scoped_key("demo", crate::store::Scope::Ingest, "demo agent")?;
    say(&format!(
        "ingest on https://{} (certificate SHA-256 {})",
        server.addr, server.fingerprint
    ));
    let console_key =
        server
            .store
            .create_scoped_key("demo", crate::store::Scope::Admin, "demo console")?;
    let link = server
        .store
        .create_sign_in_link(&console_key, 3_600_000)?
        .ok_or_else(|| Error::Io("could not make a sign-in link".into()))?;
    say(&format!(
        "console: https://{}/sign-in?link={link} (signed in once, for an hour; the certificate is the generated one above; or sign in with the key {console_key})",
        server.addr
    ));

    // The agent.
    let agent = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            cluster_name: Some("demo".into()),
            request_timeout_ms: 3_000,
            ..KafkaConfig::default()
        },
        ingest: IngestConfig {
            url: format!("https://{}", server.addr),
            api_key: Some(key),
            pinned_sha256: Some(server.fingerprint.clone()),
            timeout_secs: 5,
            ..IngestConfig::default()
        },
        interval_secs: opts.agent_interval.as_secs().max(1),
        ..AgentConfig::default()
    })
    .map_err(|e| Error::Io(e.to_string()))?;
    let agent = Arc::new(agent);
    let agent_cancel = cancel.child_token();
    let (a, ac) = (agent.clone(), agent_cancel.clone());
    tokio::spawn(async move { a.run(ac).await });

    // Let a few healthy batches through, then break the cluster.
    let healthy_for = opts.agent_interval * 2 + Duration::from_millis(500);
    tokio::select! {
        _ = cancel.cancelled() => return Ok(DemoOutcome { notifications: vec![], first_notification_after: None }),
        _ = tokio::time::sleep(healthy_for) => {}
    }
    for p in [0, 1] {
        cluster
            .partition_leader(TOPIC, p, None)
            .map_err(|e| Error::Io(format!("mock fault: {e}")))?;
    }
    say(&format!(
        "fault injected: partitions 0 and 1 of {TOPIC} have no leader; waiting for the alert"
    ));

    let mut outcome = DemoOutcome {
        notifications: Vec::new(),
        first_notification_after: None,
    };
    let deadline = tokio::time::sleep(opts.timeout.saturating_sub(started.elapsed()));
    tokio::pin!(deadline);
    let mut healed = false;
    let heal = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(heal);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = &mut deadline, if opts.once => break,
            _ = &mut heal, if !healed => {
                for p in [0, 1] {
                    let _ = cluster.partition_leader(TOPIC, p, Some(1 + p));
                }
                healed = true;
                say("fault healed: leaders restored; a resolved notification follows");
            }
            n = notif_rx.recv() => {
                let Some(n) = n else { break };
                println!("{n}");
                if outcome.first_notification_after.is_none() {
                    let after = started.elapsed();
                    outcome.first_notification_after = Some(after);
                    say(&format!("first notification after {:.1}s", after.as_secs_f64()));
                    heal.as_mut().reset(tokio::time::Instant::now() + HEAL_AFTER);
                }
                outcome.notifications.push(n);
                if opts.once {
                    break;
                }
            }
        }
    }
    agent_cancel.cancel();
    hook_cancel.cancel();
    server.shutdown(Duration::from_secs(5)).await;
    drop(cluster);
    if opts.once && outcome.notifications.is_empty() {
        return Err(Error::Io(format!(
            "no notification within {}s",
            opts.timeout.as_secs()
        )));
    }
    Ok(outcome)
}
