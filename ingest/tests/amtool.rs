//! Foresight as an Alertmanager: alerts posted the way Prometheus posts them are grouped
//! and notified, and Debian's `amtool` (installed by `scripts/test-deps.sh`) lists them
//! and adds, queries and expires silences against Foresight over HTTPS.

mod common;

use std::process::Command;
use std::time::Duration;

use foresight_ingest::{ServeConfig, Server};
use serde_json::json;

fn amtool(config: &std::path::Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("amtool")
        .arg(format!("--alertmanager.url=https://localhost:{port}"))
        .arg(format!("--http.config.file={}", config.display()))
        .args(args)
        .output()
        .expect("amtool (run scripts/test-deps.sh to install prometheus-alertmanager)");
    assert!(
        out.status.success(),
        "amtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alerts_are_notified_and_amtool_manages_silences() {
    let mut receiver = common::start_receiver().await;
    let data = tempfile::tempdir().unwrap();
    let am_config = data.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: {}\n        secret: {}\n",
            receiver.url,
            common::SECRET
        ),
    )
    .unwrap();
    let server = Server::start(
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().to_path_buf(),
            evaluation_interval: "500ms".into(),
            builtin_rules: false,
            alertmanager_config: Some(am_config),
            ..ServeConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let key = server.store.create_key("acme").unwrap();
    let other = server.store.create_key("globex").unwrap();
    let client = common::client(&server.fingerprint);
    let base = format!("https://{}/api/v2", server.addr);

    // What Prometheus sends: labels, annotations, startsAt, an endsAt ahead.
    let now = jiff::Timestamp::now();
    let resp = client
        .post(format!("{base}/alerts"))
        .bearer_auth(&key)
        .json(&json!([{
            "labels": {"alertname": "KafkaBrokerDown", "cluster": "prod", "severity": "critical"},
            "annotations": {"summary": "Broker 3 is down"},
            "startsAt": now.to_string(),
            "endsAt": (now + jiff::SignedDuration::from_mins(5)).to_string(),
            "generatorURL": "http://prometheus:9090/graph"
        }]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let msg = common::wait_for(
        &mut receiver.rx,
        "KafkaBrokerDown",
        "firing",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        msg["alerts"][0]["annotations"]["summary"],
        "Broker 3 is down"
    );

    let port = server.addr.port();
    let http_config = data.path().join("amtool-http.yml");
    std::fs::write(
        &http_config,
        format!(
            "authorization:\n  type: Bearer\n  credentials: {key}\ntls_config:\n  ca_file: {}\n",
            data.path().join("tls/cert.pem").display()
        ),
    )
    .unwrap();
    let cfg = http_config.clone();
    let (alerts, id) = tokio::task::spawn_blocking(move || {
        let alerts = amtool(&cfg, port, &["alert", "query", "-o", "json"]);
        let id = amtool(
            &cfg,
            port,
            &[
                "silence",
                "add",
                "alertname=KafkaBrokerDown",
                "--comment=broker replacement",
                "--author=alice",
                "--duration=1h",
            ],
        );
        (alerts, id.trim().to_string())
    })
    .await
    .unwrap();
    let alerts: serde_json::Value = serde_json::from_str(&alerts).unwrap();
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts[0]["labels"]["alertname"], "KafkaBrokerDown");
    assert_eq!(alerts[0]["receivers"][0]["name"], "hook");
    assert!(!id.is_empty());

    // The other tenant sees neither the alert nor the silence.
    let theirs: Vec<serde_json::Value> = client
        .get(format!("{base}/alerts"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs.is_empty());

    let cfg = http_config.clone();
    let id2 = id.clone();
    let (silences, suppressed) = tokio::task::spawn_blocking(move || {
        let s = amtool(&cfg, port, &["silence", "query", "-o", "json"]);
        let a = amtool(&cfg, port, &["alert", "query", "--silenced", "-o", "json"]);
        amtool(&cfg, port, &["silence", "expire", &id2]);
        (s, a)
    })
    .await
    .unwrap();
    let silences: serde_json::Value = serde_json::from_str(&silences).unwrap();
    assert_eq!(silences[0]["id"], id.as_str());
    assert_eq!(silences[0]["createdBy"], "alice");
    let suppressed: serde_json::Value = serde_json::from_str(&suppressed).unwrap();
    assert_eq!(
        suppressed[0]["status"]["state"], "suppressed",
        "{suppressed}"
    );
    assert_eq!(suppressed[0]["status"]["silencedBy"][0], id.as_str());
    let all = server.store.list_silences("acme").unwrap();
    assert_eq!(
        all[0].state(jiff::Timestamp::now().as_millisecond() + 1),
        "expired"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
