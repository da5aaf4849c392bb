//! The same route tree and the same alert sequence given to Foresight and to a real
//! Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `scripts/test-deps.sh`), both delivering to webhook receivers on loopback: the
//! groups, the order of firing and resolved notifications and the alerts in each match.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foresight_ingest::{ServeConfig, Server};
use serde_json::{Value, json};

/// What a notification says, without the sender's own keys and times.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    receiver: String,
    group: String,
    status: String,
    firing: BTreeSet<String>,
    resolved: BTreeSet<String>,
}

fn summarize(body: &Value) -> Seen {
    let names = |status: &str| -> BTreeSet<String> {
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["status"] == status)
            .map(|a| {
                format!(
                    "{}/{}",
                    a["labels"]["alertname"].as_str().unwrap(),
                    a["labels"]["broker"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    Seen {
        receiver: body["receiver"].as_str().unwrap().to_string(),
        group: body["groupLabels"].to_string(),
        status: body["status"].as_str().unwrap().to_string(),
        firing: names("firing"),
        resolved: names("resolved"),
    }
}

/// A webhook receiver recording every body, per path (one path per receiver).
async fn recorder() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/{receiver}",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                s.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                axum::http::StatusCode::OK
            }
        }),
    );
    let addr = common::serve(app).await;
    (format!("http://{addr}"), seen)
}

fn config(hooks: &str) -> String {
    format!(
        r#"
route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 3s
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - matchers: ['alertname=~"Broker.*"']
      receiver: team
receivers:
  - name: team
    webhook_configs: [{{url: "{hooks}/team", send_resolved: true}}]
  - name: pager
    webhook_configs: [{{url: "{hooks}/pager", send_resolved: true}}]
inhibit_rules:
  - source_matchers: ['alertname="ClusterDown"']
    target_matchers: ['severity="warning"']
"#
    )
}

/// When the test's alerts started. Recent on purpose: Alertmanager flushes a new group at
/// once when its first alert started more than `group_wait` ago, and whether the other
/// alerts of the same request are in that flush is then a race inside Alertmanager.
static STARTED: std::sync::LazyLock<jiff::Timestamp> =
    std::sync::LazyLock::new(jiff::Timestamp::now);

fn alert(name: &str, broker: &str, severity: &str, resolved: bool) -> Value {
    let now = jiff::Timestamp::now();
    let ends = if resolved {
        now - jiff::SignedDuration::from_millis(10)
    } else {
        now + jiff::SignedDuration::from_mins(10)
    };
    json!({
        "labels": {"alertname": name, "broker": broker, "severity": severity, "cluster": "c1"},
        "annotations": {"summary": format!("{name} {broker}")},
        "startsAt": STARTED.to_string(),
        "endsAt": ends.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foresight_notifies_what_alertmanager_notifies() {
    let (am_hooks, am_seen) = recorder().await;
    let (fs_hooks, fs_seen) = recorder().await;
    let data = tempfile::tempdir().unwrap();

    let am_port = common::free_port();
    std::fs::write(data.path().join("am.yml"), config(&am_hooks)).unwrap();
    let am = common::ChildGuard(
        Command::new("prometheus-alertmanager")
            .arg(format!(
                "--config.file={}",
                data.path().join("am.yml").display()
            ))
            .arg(format!(
                "--storage.path={}",
                data.path().join("am-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (run scripts/test-deps.sh to install it)"),
    );
    std::fs::write(data.path().join("fs.yml"), config(&fs_hooks)).unwrap();
    let server = Server::start(
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: data.path().join("fs-data"),
            evaluation_interval: "200ms".into(),
            builtin_rules: false,
            alertmanager_config: Some(data.path().join("fs.yml")),
            ..ServeConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let key = server.store.create_key("acme").unwrap();
    let fs = common::client(&server.fingerprint);
    let am_client = common::client(&server.fingerprint);
    let am_url = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
    for _ in 0..100 {
        if am_client
            .get(format!("http://127.0.0.1:{am_port}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fs_url = format!("https://{}/api/v2/alerts", server.addr);
    let post = |alerts: Value| {
        let (fs, am_client, fs_url, am_url, key) = (
            fs.clone(),
            am_client.clone(),
            fs_url.clone(),
            am_url.clone(),
            key.clone(),
        );
        async move {
            let a = am_client.post(&am_url).json(&alerts).send();
            let f = fs.post(&fs_url).bearer_auth(&key).json(&alerts).send();
            let (a, f) = tokio::join!(a, f);
            assert!(a.unwrap().status().is_success());
            assert!(f.unwrap().status().is_success());
        }
    };

    // Two brokers down and a disk warning; a third broker joins the group; one broker
    // recovers; then everything resolves.
    post(json!([
        alert("BrokerDown", "1", "critical", false),
        alert("BrokerDown", "2", "critical", false),
        alert("DiskFull", "2", "warning", false),
    ]))
    .await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    post(json!([alert("BrokerDown", "3", "critical", false)])).await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    post(json!([alert("BrokerDown", "1", "critical", true)])).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    post(json!([
        alert("BrokerDown", "2", "critical", true),
        alert("BrokerDown", "3", "critical", true),
        alert("DiskFull", "2", "warning", true),
    ]))
    .await;
    tokio::time::sleep(Duration::from_millis(5000)).await;

    let per_receiver = |seen: &Arc<Mutex<Vec<Value>>>, receiver: &str| -> Vec<Seen> {
        seen.lock()
            .unwrap()
            .iter()
            .map(summarize)
            .filter(|s| s.receiver == receiver)
            .collect()
    };
    for receiver in ["pager", "team"] {
        let want = per_receiver(&am_seen, receiver);
        let got = per_receiver(&fs_seen, receiver);
        assert!(!want.is_empty(), "Alertmanager sent {receiver} nothing");
        for w in &want {
            eprintln!(
                "{receiver}: {} {} firing {:?} resolved {:?}",
                w.group, w.status, w.firing, w.resolved
            );
        }
        // Per group, the same notifications in the same order.
        let groups: BTreeSet<String> = want.iter().chain(&got).map(|s| s.group.clone()).collect();
        for g in groups {
            let w: Vec<&Seen> = want.iter().filter(|s| s.group == g).collect();
            let f: Vec<&Seen> = got.iter().filter(|s| s.group == g).collect();
            assert_eq!(f, w, "receiver {receiver}, group {g}");
        }
    }
    drop(am);
    server.shutdown(Duration::from_secs(5)).await;
}
