//! The on-call receivers end to end: `foresight serve` (the binary, its log captured)
//! with an `alertmanager.yml` routing to PagerDuty (Events v2 and v1), Opsgenie and
//! Microsoft Teams (connector and Workflows), each pointed at a local server that speaks
//! that API's requests and answers: PagerDuty's `dedup_key` echo and error shape,
//! Opsgenie's `GenieKey` authentication and request ids, Teams' `1` and `202`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A PagerDuty key of the right length whose first event is throttled.
const THROTTLED_KEY: &str = "throttle0123456789abcdef01234567";
const V1_KEY: &str = "v1servicekey0123456789abcdef0123";
const GENIE_KEY: &str = "genie-5f1c2d3e-secret";
const TEAMS_TOKEN: &str = "teams-token-4b7e9a";
const WORKFLOW_TOKEN: &str = "workflow-sig-77c1d0";

/// What the fake services saw.
#[derive(Default)]
struct Seen {
    /// `(path, body, when)` of every request, answered or not.
    requests: Vec<(String, Value, Instant)>,
    /// PagerDuty incidents by dedup key: the event actions in order.
    incidents: BTreeMap<String, Vec<String>>,
    /// Opsgenie alerts by alias: `created`, `closed`.
    genie: BTreeMap<String, Vec<String>>,
    throttled_once: bool,
    genie_request: u32,
}

type Shared = Arc<Mutex<Seen>>;

fn record(s: &Shared, path: &str, body: &Value) {
    s.lock()
        .unwrap()
        .requests
        .push((path.to_string(), body.clone(), Instant::now()));
}

/// Events API v2, with its answers: 400 with `errors` for a malformed key, 429 with
/// `Retry-After` the first time the throttled key is seen, else 202 echoing the key.
async fn pagerduty_v2(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&s, "/pagerduty/v2/enqueue", &body);
    let key = body["routing_key"].as_str().unwrap_or_default();
    if key.len() != 32 {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({
                "status": "invalid event",
                "message": "Event object is invalid",
                "errors": ["Length of 'routing_key' is incorrect (should be 32 characters)"],
            })),
        )
            .into_response();
    }
    let mut seen = s.lock().unwrap();
    if key == THROTTLED_KEY && !seen.throttled_once {
        seen.throttled_once = true;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", "4")],
            axum::Json(json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly. Please back off."})),
        )
            .into_response();
    }
    let dedup = body["dedup_key"].as_str().unwrap_or_default().to_string();
    let action = body["event_action"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    seen.incidents
        .entry(dedup.clone())
        .or_default()
        .push(action);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup})),
    )
        .into_response()
}

/// Events API v1.
async fn pagerduty_v1(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&s, "/pagerduty/v1", &body);
    let key = body["incident_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (
        StatusCode::OK,
        axum::Json(json!({"status": "success", "message": "Event processed", "incident_key": key})),
    )
        .into_response()
}

/// The request id, or Opsgenie's 401 answer when the key is not the right one.
fn genie_answer(s: &Shared, headers: &HeaderMap) -> Result<String, Value> {
    let mut seen = s.lock().unwrap();
    seen.genie_request += 1;
    let id = format!("req-{}", seen.genie_request);
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("GenieKey {GENIE_KEY}"))
    {
        return Err(json!({"message": "Could not authenticate", "took": 0.0, "requestId": id}));
    }
    Ok(id)
}

async fn opsgenie_create(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&s, "/opsgenie/v2/alerts", &body);
    let id = match genie_answer(&s, &headers) {
        Ok(id) => id,
        Err(body) => return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
    };
    let alias = body["alias"].as_str().unwrap_or_default().to_string();
    s.lock()
        .unwrap()
        .genie
        .entry(alias)
        .or_default()
        .push("created".into());
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"result": "Request will be processed", "took": 0.01, "requestId": id})),
    )
        .into_response()
}

async fn opsgenie_close(
    State(s): State<Shared>,
    UrlPath(alias): UrlPath<String>,
    query: axum::extract::RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&s, &format!("/opsgenie/v2/alerts/{alias}/close"), &body);
    let id = match genie_answer(&s, &headers) {
        Ok(id) => id,
        Err(body) => return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response(),
    };
    if query.0.as_deref() != Some("identifierType=alias") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Alert with id not found", "requestId": id})),
        )
            .into_response();
    }
    s.lock()
        .unwrap()
        .genie
        .entry(alias)
        .or_default()
        .push("closed".into());
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"result": "Request will be processed", "took": 0.01, "requestId": id})),
    )
        .into_response()
}

async fn teams_connector(
    State(s): State<Shared>,
    UrlPath(token): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&s, "/teams/connector", &body);
    if token != TEAMS_TOKEN {
        return (StatusCode::NOT_FOUND, "Webhook not found").into_response();
    }
    // Office 365 connectors answer `1`.
    (StatusCode::OK, "1").into_response()
}

async fn teams_workflow(
    State(s): State<Shared>,
    UrlPath(token): UrlPath<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&s, "/teams/workflow", &body);
    if token != WORKFLOW_TOKEN {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    StatusCode::ACCEPTED.into_response()
}

async fn services() -> (String, Shared) {
    let seen: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/pagerduty/v2/enqueue", axum::routing::post(pagerduty_v2))
        .route("/pagerduty/v1", axum::routing::post(pagerduty_v1))
        .route("/opsgenie/v2/alerts", axum::routing::post(opsgenie_create))
        .route(
            "/opsgenie/v2/alerts/{alias}/close",
            axum::routing::post(opsgenie_close),
        )
        .route(
            "/teams/connector/{token}",
            axum::routing::post(teams_connector),
        )
        .route(
            "/teams/workflow/{token}",
            axum::routing::post(teams_workflow),
        )
        .with_state(seen.clone());
    let addr = common::serve(app).await;
    (format!("http://{addr}"), seen)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn alert(name: &str, resolved: bool) -> Value {
    let now = jiff::Timestamp::now();
    let ends = if resolved {
        now - jiff::SignedDuration::from_millis(10)
    } else {
        now + jiff::SignedDuration::from_mins(10)
    };
    json!({
        "labels": {"alertname": name, "cluster": "prod-eu", "severity": "critical", "category": "availability"},
        "annotations": {
            "summary": format!("{name} on prod-eu"),
            "runbook_url": "https://runbooks.example/offline-partitions",
        },
        "startsAt": (now - jiff::SignedDuration::from_mins(1)).to_string(),
        "endsAt": ends.to_string(),
    })
}

/// Waits until `check` holds on what the services saw.
async fn until(seen: &Shared, what: &str, check: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn bodies(seen: &Shared, path: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(p, _, _)| p == path)
        .map(|(_, b, _)| b.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_opsgenie_and_teams_open_and_resolve_the_same_incident() {
    let bin = env!("CARGO_BIN_EXE_foresight");
    let (api, seen) = services().await;
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let routing_file = write(dir, "routing_key", &format!("{THROTTLED_KEY}\n"));
    let genie_file = write(dir, "genie", GENIE_KEY);
    let workflow_file = write(
        dir,
        "workflow_url",
        &format!("{api}/teams/workflow/{WORKFLOW_TOKEN}"),
    );
    let am = write(
        dir,
        "alertmanager.yml",
        &format!(
            r#"
global:
  pagerduty_url: {api}/pagerduty/v2/enqueue
  opsgenie_api_url: {api}/opsgenie/
  opsgenie_api_key_file: {genie_file}
route:
  receiver: oncall
  group_by: [alertname, cluster]
  group_wait: 0s
  group_interval: 1s
  routes:
    - matchers: ['alertname="KafkaMisrouted"']
      receiver: misconfigured
receivers:
  - name: oncall
    pagerduty_configs:
      - routing_key_file: {routing_file}
      - service_key: {V1_KEY}
        url: {api}/pagerduty/v1
    opsgenie_configs:
      - responders: [{{name: kafka-sre, type: team}}]
        tags: 'kafka,{{{{ .CommonLabels.cluster }}}}'
    msteams_configs:
      - webhook_url: {api}/teams/connector/{TEAMS_TOKEN}
    msteamsv2_configs:
      - webhook_url_file: {workflow_file}
  - name: misconfigured
    pagerduty_configs:
      - routing_key: too-short
"#
        ),
    );
    let port = common::free_port();
    let config = write(
        dir,
        "foresight.yml",
        &format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {}\nevaluation_interval: 200ms\nbuiltin_rules: false\nalertmanager_config: {am}\nexternal_url: https://foresight.example\n",
            dir.join("data").display(),
        ),
    );
    let out = Command::new(bin)
        .args(["check-config", "--config", &config])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(bin)
        .args(["keys", "create", "--tenant", "acme", "--config", &config])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let log = dir.join("serve.log");
    let child = common::ChildGuard(
        Command::new(bin)
            .args(["serve", "--config", &config])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("foresight starts"),
    );
    let fingerprint =
        common::fingerprint_when_ready(&dir.join("data/tls/cert.pem"), Duration::from_secs(30))
            .await;
    let client = common::client(&fingerprint);
    let base = format!("https://127.0.0.1:{port}");
    let post = |alerts: Value| {
        let (client, url, key) = (client.clone(), format!("{base}/api/v2/alerts"), key.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&alerts)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => return,
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await
                    }
                    other => panic!("posting alerts: {other:?}"),
                }
            }
        }
    };

    post(json!([
        alert("KafkaOfflinePartitions", false),
        alert("KafkaMisrouted", false)
    ]))
    .await;
    until(&seen, "the firing notifications", |s| {
        s.incidents.values().any(|a| a == &["trigger"])
            && s.genie.values().any(|a| a == &["created"])
            && s.requests.iter().any(|r| r.0 == "/teams/connector")
            && s.requests.iter().any(|r| r.0 == "/teams/workflow")
            && s.requests.iter().any(|r| r.0 == "/pagerduty/v1")
    })
    .await;
    post(json!([alert("KafkaOfflinePartitions", true)])).await;
    until(&seen, "the resolutions", |s| {
        s.incidents.values().any(|a| a == &["trigger", "resolve"])
            && s.genie.values().any(|a| a == &["created", "closed"])
            && s.requests
                .iter()
                .filter(|r| r.0 == "/teams/workflow")
                .count()
                == 2
            && s.requests
                .iter()
                .filter(|r| r.0 == "/teams/connector")
                .count()
                == 2
            && s.requests.iter().filter(|r| r.0 == "/pagerduty/v1").count() == 2
    })
    .await;

    // PagerDuty: one incident, opened and resolved by the same dedup key; the throttled
    // first attempt was retried no sooner than its Retry-After (longer than the first
    // backoff and the worker's one-second poll together).
    let pd: Vec<(Value, Instant)> = seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(p, b, _)| p == "/pagerduty/v2/enqueue" && b["routing_key"] == THROTTLED_KEY)
        .map(|(_, b, t)| (b.clone(), *t))
        .collect();
    assert_eq!(pd.len(), 3, "429, then the trigger, then the resolve");
    assert!(
        pd[1].1 - pd[0].1 >= Duration::from_secs(4),
        "retried after {:?}, before Retry-After",
        pd[1].1 - pd[0].1
    );
    let dedup = pd[1].0["dedup_key"].as_str().unwrap().to_string();
    assert_eq!(pd[2].0["dedup_key"], dedup.as_str());
    assert_eq!(pd[1].0["payload"]["severity"], "critical");
    assert_eq!(
        pd[1].0["payload"]["summary"],
        "[FIRING:1] KafkaOfflinePartitions (cluster prod-eu)"
    );
    assert_eq!(
        pd[1].0["links"][0]["href"],
        "https://runbooks.example/offline-partitions"
    );
    assert_eq!(
        pd[1].0["payload"]["custom_details"]["foresight"]["category"],
        "availability"
    );
    let incidents = seen.lock().unwrap().incidents.clone();
    assert_eq!(
        incidents.get(&dedup).map(Vec::as_slice),
        Some(&["trigger".to_string(), "resolve".to_string()][..]),
        "{incidents:?}"
    );
    // v1: the incident key is the same hash of the same group.
    let v1 = bodies(&seen, "/pagerduty/v1");
    assert_eq!(
        (v1[0]["event_type"].as_str(), v1[1]["event_type"].as_str()),
        (Some("trigger"), Some("resolve"))
    );
    assert_eq!(v1[0]["incident_key"], dedup.as_str());
    assert_eq!(v1[1]["incident_key"], dedup.as_str());

    // Opsgenie: created and closed by one alias, with the responders and tags.
    let created = bodies(&seen, "/opsgenie/v2/alerts");
    assert_eq!(created.len(), 1);
    let alias = created[0]["alias"].as_str().unwrap().to_string();
    assert_eq!(alias, dedup, "Opsgenie's alias is the same group hash");
    assert_eq!(created[0]["priority"], "P1");
    assert_eq!(created[0]["tags"], json!(["kafka", "prod-eu"]));
    assert_eq!(
        created[0]["responders"],
        json!([{"name": "kafka-sre", "type": "team"}])
    );
    assert_eq!(
        bodies(&seen, &format!("/opsgenie/v2/alerts/{alias}/close")).len(),
        1
    );

    // Teams: a red card, then a green one.
    let cards = bodies(&seen, "/teams/connector");
    assert_eq!(
        (
            cards[0]["themeColor"].as_str(),
            cards[1]["themeColor"].as_str()
        ),
        (Some("8C1A1A"), Some("2DC72D"))
    );
    let adaptive = bodies(&seen, "/teams/workflow");
    assert_eq!(
        adaptive[0]["attachments"][0]["content"]["type"],
        "AdaptiveCard"
    );
    assert_eq!(
        adaptive[1]["attachments"][0]["content"]["body"][0]["color"],
        "Good"
    );

    // The misconfigured key: refused once, not retried, dead with PagerDuty's words.
    let deliveries = |status: &'static str| {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        async move {
            client
                .get(format!("{base}/api/v1/deliveries?status={status}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let dead = loop {
        let dead = deliveries("dead").await;
        if !dead.is_empty() || Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["receiver"], "misconfigured/pagerduty/0");
    assert_eq!(dead[0]["attempts"], 1, "a 400 is not retried");
    let error = dead[0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 400")
            && error.contains("Event object is invalid")
            && error.contains("Length of 'routing_key' is incorrect"),
        "{error}"
    );
    let refused = seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(_, b, _)| b["routing_key"] == "too-short")
        .count();
    assert_eq!(refused, 1);
    let delivered = deliveries("delivered").await;
    assert_eq!(
        delivered.len(),
        10,
        "five integrations, firing and resolved: {delivered:?}"
    );

    // No secret in the status API nor in the log (at debug level).
    let status = client
        .get(format!("{base}/api/v2/status"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status.contains("<secret>"), "{status}");
    drop(child);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("Notification delivery failed"),
        "the log says why"
    );
    for secret in [
        THROTTLED_KEY,
        V1_KEY,
        GENIE_KEY,
        TEAMS_TOKEN,
        WORKFLOW_TOKEN,
        "too-short",
    ] {
        assert!(!status.contains(secret), "{secret} in the status API");
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
