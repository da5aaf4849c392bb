//! Webhook subscriptions through the API over HTTPS: private addresses refused unless
//! allowed, the secret shown once and used to sign, filters, tenant scoping, test
//! pings, deliveries, and a subscription that fails for a day disabled with a reason.

mod common;

use std::time::Duration;

use foresight_ingest::{ServeConfig, Server};
use foresight_notifier::OutboxStore;
use serde_json::{Value, json};

async fn start(data: &std::path::Path, allow_private: bool) -> Server {
    Server::start(
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: data.to_path_buf(),
            evaluation_interval: "200ms".into(),
            builtin_rules: false,
            allow_private_webhook_urls: allow_private,
            ..ServeConfig::default()
        },
        None,
    )
    .await
    .unwrap()
}

/// A receiver that hands each request's signature header and body to the test.
async fn recorder() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) {
    let (tx, got) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let sig = headers
                        .get(foresight_notifier::webhook::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    tx.send((sig, body.to_vec())).unwrap();
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let addr = common::serve(app).await;
    (addr, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_url_is_refused_unless_the_operator_allows_it() {
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), false).await;
    let key = server.store.create_key("acme").unwrap();
    let resp = common::client(&server.fingerprint)
        .post(format!("https://{}/api/v1/subscriptions", server.addr))
        .bearer_auth(&key)
        .json(&json!({"url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("loopback, private or link-local"),
        "{err}"
    );
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_gets_signed_matching_alerts_of_its_tenant_only() {
    let (addr, mut got) = recorder().await;
    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), true).await;
    let acme = server.store.create_key("acme").unwrap();
    let globex = server.store.create_key("globex").unwrap();
    let client = common::client(&server.fingerprint);
    let base = format!("https://{}/api/v1/subscriptions", server.addr);

    let created = client
        .post(&base)
        .bearer_auth(&acme)
        .json(&json!({"url": format!("http://{addr}/hook"), "filters": {"severity": ["critical"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);

    let get = |key: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .get(base)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Vec<Value>>()
                .await
                .unwrap()
        }
    };
    let listed = get(acme.clone()).await;
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once"
    );
    assert!(
        get(globex.clone()).await.is_empty(),
        "another tenant sees none"
    );
    let foreign = client
        .delete(format!("{base}/{id}"))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);

    // An info alert is filtered out; a critical one arrives, signed with the secret.
    let now = jiff::Timestamp::now();
    for (name, severity) in [("Chatty", "info"), ("BrokerDown", "critical")] {
        let r = client
            .post(format!("https://{}/api/v2/alerts", server.addr))
            .bearer_auth(&acme)
            .json(&json!([{
                "labels": {"alertname": name, "severity": severity, "cluster": "c1"},
                "startsAt": now.to_string(),
                "endsAt": (now + jiff::SignedDuration::from_mins(5)).to_string(),
            }]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let (sig, body) = tokio::time::timeout(Duration::from_secs(10), got.recv())
        .await
        .expect("a delivery")
        .unwrap();
    let now_s = jiff::Timestamp::now().as_second();
    assert!(foresight_notifier::webhook::verify(
        &secret, &sig, &body, now_s, 300
    ));
    let msg: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(msg["alerts"][0]["labels"]["alertname"], "BrokerDown");
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), got.recv())
            .await
            .is_err(),
        "nothing for the info alert"
    );
    let deliveries: Vec<Value> = client
        .get(format!("{base}/{id}/deliveries"))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], "delivered");
    let delivered: Vec<Value> = client
        .get(format!(
            "https://{}/api/v1/deliveries?status=delivered",
            server.addr
        ))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        delivered
            .iter()
            .any(|d| d["receiver"] == format!("sub/{id}"))
    );
    let dead: Vec<Value> = client
        .get(format!("https://{}/api/v1/deliveries", server.addr))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_ping_is_signed_with_the_secret_shown_at_creation() {
    let (addr, mut got) = recorder().await;

    let data = tempfile::tempdir().unwrap();
    let server = start(data.path(), true).await;
    let acme = server.store.create_key("acme").unwrap();
    let client = common::client(&server.fingerprint);
    let base = format!("https://{}/api/v1/subscriptions", server.addr);
    let created: Value = client
        .post(&base)
        .bearer_auth(&acme)
        .json(&json!({"url": format!("http://{addr}/hook")}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, secret) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    let ping: Value = client
        .post(format!("{base}/{id}/test"))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["delivered"], true, "{ping}");
    let (sig, body) = got.recv().await.unwrap();
    let now = jiff::Timestamp::now().as_second();
    assert!(foresight_notifier::webhook::verify(
        secret, &sig, &body, now, 300
    ));
    assert!(!foresight_notifier::webhook::verify(
        "other", &sig, &body, now, 300
    ));

    // Deleted: gone from the list.
    let del = client
        .delete(format!("{base}/{id}"))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let listed: Vec<Value> = client
        .get(&base)
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.is_empty());
    server.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn a_subscription_failing_for_a_day_is_disabled_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let store = foresight_ingest::store::Store::open(data.path()).unwrap();
    store
        .create_subscription(&foresight_notifier::subscription::Subscription {
            id: "s1".into(),
            tenant: "acme".into(),
            url: "https://hooks.example/x".into(),
            secret: "k".into(),
            ..Default::default()
        })
        .unwrap();
    let t0 = 1_000_000;
    store
        .subscription_result("acme", "s1", Some("HTTP 500"), t0)
        .unwrap();
    store
        .subscription_result("acme", "s1", Some("HTTP 500"), t0 + 3_600_000)
        .unwrap();
    let s = store.subscription("acme", "s1").unwrap().unwrap();
    assert_eq!(s.failing_since_ms, Some(t0));
    assert!(s.disabled_reason.is_none(), "an hour is not a day");
    store
        .subscription_result("acme", "s1", None, t0 + 7_200_000)
        .unwrap();
    assert_eq!(
        store
            .subscription("acme", "s1")
            .unwrap()
            .unwrap()
            .failing_since_ms,
        None,
        "success resets"
    );
    store
        .subscription_result("acme", "s1", Some("HTTP 500"), t0 + 10_000_000)
        .unwrap();
    store
        .subscription_result(
            "acme",
            "s1",
            Some("connection refused"),
            t0 + 10_000_000 + 86_400_000,
        )
        .unwrap();
    let s = store.subscription("acme", "s1").unwrap().unwrap();
    let reason = s.disabled_reason.clone().expect("disabled");
    assert!(
        reason.contains("failing for a day") && reason.contains("connection refused"),
        "{reason}"
    );
    assert!(
        !s.wants(&Default::default()),
        "a disabled subscription gets nothing"
    );
}
