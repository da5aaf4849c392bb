//! The same route tree and the same alert sequence given to Foresight and to a real
//! Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `scripts/test-deps.sh`), both delivering to webhook receivers and a PagerDuty-shaped
//! receiver on loopback: the groups and their keys, the order of firing and resolved
//! notifications and the alerts in each match, and both send PagerDuty the same events
//! with the same dedup keys. Debian's Alertmanager 0.25 has no Teams receiver: the
//! second test runs Alertmanager 0.28.1, built from the Go module proxy by
//! `scripts/test-deps.sh`, and compares the Teams cards too.

mod common;

use std::collections::{BTreeMap, BTreeSet};
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
    /// Alertmanager's group key, which the PagerDuty dedup key hashes.
    key: String,
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
        key: body["groupKey"].as_str().unwrap().to_string(),
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

/// What a PagerDuty event says, without the sender's own name and link.
fn pagerduty_event(body: &Value) -> Value {
    let mut e = json!({
        "routing_key": body["routing_key"],
        "event_action": body["event_action"],
        "dedup_key": body["dedup_key"],
    });
    // Alertmanager 0.25 sends the payload with triggers only.
    if body["event_action"] == "trigger" {
        let p = &body["payload"];
        e["payload"] = json!({
            "summary": p["summary"], "severity": p["severity"], "source": p["source"],
            "num_firing": p["custom_details"]["num_firing"],
            "num_resolved": p["custom_details"]["num_resolved"],
        });
        e["links"] = body["links"].clone();
    }
    e
}

/// What a Teams card says in the fields Alertmanager fills (Foresight adds facts and
/// buttons), by kind.
fn teams_card(body: &Value) -> Value {
    if body["type"] == "MessageCard" {
        json!({
            "kind": "connector", "title": body["title"], "summary": body["summary"],
            "text": body["text"], "themeColor": body["themeColor"],
        })
    } else {
        let a = &body["attachments"][0];
        let c = &a["content"];
        json!({
            "kind": "workflow", "contentType": a["contentType"], "type": c["type"],
            "version": c["version"], "title": c["body"][0]["text"],
            "color": c["body"][0]["color"], "text": c["body"][1]["text"],
        })
    }
}

/// Teams receivers on the `team` route, with the same templates on both sides.
fn teams_config(teams: &str) -> String {
    format!(
        r#"
    msteams_configs:
      - webhook_url: {teams}/connector
        title: '{{{{ .GroupLabels.alertname }}}}'
        summary: '{{{{ .CommonLabels.alertname }}}} {{{{ .Status }}}}'
        text: '{{{{ .Status }}}}: {{{{ .Alerts.Firing | len }}}} firing, {{{{ .Alerts.Resolved | len }}}} resolved'
    msteamsv2_configs:
      - webhook_url: {teams}/workflow
        title: '{{{{ .GroupLabels.alertname }}}}'
        text: '{{{{ .Status }}}}: {{{{ .Alerts.Firing | len }}}} firing, {{{{ .Alerts.Resolved | len }}}} resolved'"#
    )
}

fn config(hooks: &str, pagerduty: &str, teams: Option<&str>) -> String {
    let teams = teams.map(teams_config).unwrap_or_default();
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
    webhook_configs: [{{url: "{hooks}/team", send_resolved: true}}]{teams}
  - name: pager
    webhook_configs: [{{url: "{hooks}/pager", send_resolved: true}}]
    pagerduty_configs:
      - routing_key: 0123456789abcdef0123456789abcdef
        url: {pagerduty}/enqueue
        description: '{{{{ .CommonLabels.alertname }}}} on {{{{ .CommonLabels.cluster }}}}: {{{{ .Alerts.Firing | len }}}} firing'
        severity: '{{{{ .CommonLabels.severity }}}}'
        source: 'kafka {{{{ .CommonLabels.cluster }}}}'
        links: [{{href: 'https://runbooks.example/{{{{ .CommonLabels.alertname }}}}', text: Runbook}}]
inhibit_rules:
  - source_matchers: ['alertname="ClusterDown"']
    target_matchers: ['severity="warning"']
"#
    )
}

/// `started` is when the test's alerts started. Recent on purpose: Alertmanager flushes a
/// new group at once when its first alert started more than `group_wait` ago, and
/// whether the other alerts of the same request are in that flush is then a race inside
/// Alertmanager.
fn alert(
    started: jiff::Timestamp,
    name: &str,
    broker: &str,
    severity: &str,
    resolved: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let ends = if resolved {
        now - jiff::SignedDuration::from_millis(10)
    } else {
        now + jiff::SignedDuration::from_mins(10)
    };
    json!({
        "labels": {"alertname": name, "broker": broker, "severity": severity, "cluster": "c1"},
        "annotations": {"summary": format!("{name} {broker}")},
        "startsAt": started.to_string(),
        "endsAt": ends.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foresight_notifies_what_alertmanager_notifies() {
    side_by_side(
        "prometheus-alertmanager",
        "run scripts/test-deps.sh to install Debian's prometheus-alertmanager",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foresight_sends_teams_the_cards_a_newer_alertmanager_sends() {
    let am = std::env::var("FORESIGHT_ALERTMANAGER_NEW").unwrap_or_else(|_| {
        format!(
            "{}/.cache/foresight/alertmanager-v0.28.1/alertmanager",
            std::env::var("HOME").unwrap()
        )
    });
    side_by_side(
        &am,
        "run scripts/test-deps.sh to build Alertmanager 0.28.1 from the Go module proxy",
        true,
    )
    .await;
}

async fn side_by_side(alertmanager: &str, install: &str, teams: bool) {
    let started = jiff::Timestamp::now();
    let alert = |name: &str, broker: &str, severity: &str, resolved: bool| {
        alert(started, name, broker, severity, resolved)
    };
    let (am_hooks, am_seen) = recorder().await;
    let (fs_hooks, fs_seen) = recorder().await;
    let (am_pd, am_events) = recorder().await;
    let (fs_pd, fs_events) = recorder().await;
    let (am_teams, am_cards) = recorder().await;
    let (fs_teams, fs_cards) = recorder().await;
    let data = tempfile::tempdir().unwrap();

    let am_port = common::free_port();
    std::fs::write(
        data.path().join("am.yml"),
        config(&am_hooks, &am_pd, teams.then_some(am_teams.as_str())),
    )
    .unwrap();
    let am = common::ChildGuard(
        Command::new(alertmanager)
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
            .unwrap_or_else(|e| panic!("{alertmanager}: {e} ({install})")),
    );
    std::fs::write(
        data.path().join("fs.yml"),
        config(&fs_hooks, &fs_pd, teams.then_some(fs_teams.as_str())),
    )
    .unwrap();
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
    // PagerDuty: the same events, in the same order, with the same dedup keys.
    let events = |seen: &Arc<Mutex<Vec<Value>>>| -> Vec<Value> {
        seen.lock().unwrap().iter().map(pagerduty_event).collect()
    };
    let (want, got) = (events(&am_events), events(&fs_events));
    for e in &want {
        eprintln!("pagerduty: {e}");
    }
    assert!(
        want.iter().any(|e| e["event_action"] == "resolve"),
        "Alertmanager resolved no incident: {want:?}"
    );
    assert_eq!(got, want);
    // The dedup key is the hash of the group key both sent their webhooks.
    let pager_keys: BTreeSet<String> = per_receiver(&am_seen, "pager")
        .into_iter()
        .map(|s| foresight_notifier::post::key_hash(&s.key))
        .collect();
    let dedup_keys: BTreeSet<String> = want
        .iter()
        .map(|e| e["dedup_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dedup_keys, pager_keys);
    if teams {
        // Teams: per group (the title), the same cards in the same order.
        let cards = |seen: &Arc<Mutex<Vec<Value>>>| -> BTreeMap<String, Vec<Value>> {
            let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
            for c in seen.lock().unwrap().iter().map(teams_card) {
                out.entry(format!("{} {}", c["kind"], c["title"]))
                    .or_default()
                    .push(c);
            }
            out
        };
        let (want, got) = (cards(&am_cards), cards(&fs_cards));
        for (g, list) in &want {
            for c in list {
                eprintln!("teams {g}: {c}");
            }
        }
        assert_eq!(want.len(), 4, "two groups, two kinds of card: {want:?}");
        assert_eq!(got, want);
    }
    drop(am);
    server.shutdown(Duration::from_secs(5)).await;
}
