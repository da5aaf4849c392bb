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
