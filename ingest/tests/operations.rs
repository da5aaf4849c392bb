//! Running the service: `foresight check-config` with environment overrides, JSON logs,
//! and a graceful shutdown (SIGTERM) that sends what the outbox already holds.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_foresight");

#[test]
fn check_config_reports_success_and_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("foresight.yml");
    std::fs::write(&cfg, "listen: 127.0.0.1:8443\nbuiltin_rules: true\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("SUCCESS") && stdout.contains("rules"),
        "{stdout}"
    );

    // An environment override is checked like the file.
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("FORESIGHT_EVALUATION_INTERVAL", "often")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("evaluation_interval"), "{stdout}");

    // A rule file that does not load is named.
    std::fs::write(&cfg, "rule_files: [missing.yml]\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("missing.yml"), "{stdout}");

    // So is a receiver's secret file that cannot be read, and the secret itself never.
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am,
        "route: {receiver: pager}\nreceivers:\n  - name: pager\n    pagerduty_configs: [{routing_key_file: /nonexistent/pd-key}]\n    opsgenie_configs: [{api_key: s3cr3t-genie}]\n",
    )
    .unwrap();
    std::fs::write(
        &cfg,
        format!(
            "builtin_rules: false\nalertmanager_config: {}\n",
            am.display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("pager/pagerduty/0: routing_key_file /nonexistent/pd-key"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cr3t-genie"), "{stdout}");
}

/// Kills the process when the test fails before it ended, so that none is left behind.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

#[test]
fn json_logs_and_sigterm_end_the_service_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("FORESIGHT_BUILTIN_RULES", "false")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillOnDrop(child.id());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Startup logs are JSON objects with a level and a message.
    let first = loop {
        let line = lines.next().expect("a log line").unwrap();
        if line.starts_with('{') {
            break line;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert!(
        v["level"].is_string() && v["fields"]["message"].is_string(),
        "{v}"
    );
    // Give the listener a moment, then SIGTERM.
    std::thread::sleep(Duration::from_millis(500));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}; logs: {rest:?}");
    assert!(rest.iter().any(|l| l.contains("Shutting down")), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_was_queued() {
    let mut receiver = common::start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), None, Some(&receiver.url)).await;
    let key = server.store.create_key("acme").unwrap();
    let client = common::client(&server.fingerprint);
    let resp = client
        .post(format!("https://{}/api/v2/alerts", server.addr))
        .bearer_auth(&key)
        .json(&serde_json::json!([{"labels": {"alertname": "LastWords", "cluster": "prod"}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // At once: the evaluator has had no tick and the outbox worker no pass yet.
    server.shutdown(Duration::from_secs(10)).await;
    let msg = receiver
        .rx
        .try_recv()
        .expect("the notification was sent before the service stopped");
    assert_eq!(msg["commonLabels"]["alertname"], "LastWords");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_the_series_windows_from_stored_batches() {
    use foresight_proto::Message;
    use foresight_proto::v1::{Resource, Sample, Series, TelemetryBatch};
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_plain_server(dir.path(), "127.0.0.1:0").await;
    let key = server.store.create_key("acme").unwrap();
    let client = common::client(&server.fingerprint);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (seq, ago) in [(1u64, 120_000i64), (2, 60_000), (3, 0)] {
        let batch = TelemetryBatch {
            resource: Some(Resource {
                agent_instance_id: "agent".into(),
                ..Default::default()
            }),
            sequence: seq,
            series: vec![Series {
                name: "replayed_total".into(),
                labels: vec![],
                samples: vec![Sample {
                    timestamp_ms: now - ago,
                    value: seq as f64 * 60.0,
                }],
            }],
            ..Default::default()
        };
        let resp = client
            .post(format!("https://{}/v1/telemetry", server.addr))
            .bearer_auth(&key)
            .body(batch.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let query = |addr: std::net::SocketAddr| {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let v: serde_json::Value = client
                .get(format!(
                    "https://{addr}/api/v1/query?query=count_over_time(replayed_total%5B5m%5D)&time={}",
                    now / 1000 + 1
                ))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        }
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while query(server.addr).await.as_deref() != Some("3") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "samples never visible"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown(Duration::from_secs(10)).await;

    // A new process on the same data dir has the window back before any agent sends.
    let server = common::start_plain_server(dir.path(), "127.0.0.1:0").await;
    assert_eq!(query(server.addr).await.as_deref(), Some("3"));
}
