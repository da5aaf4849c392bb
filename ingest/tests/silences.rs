//! Silences through Alertmanager's API v2 over real HTTPS: created, listed and expired
//! by their tenant only.

mod common;

use std::time::Duration;

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_are_created_listed_and_expired_within_the_tenant() {
    let data = tempfile::tempdir().unwrap();
    let server = common::start_plain_server(data.path(), "127.0.0.1:0").await;
    let acme = server.store.create_key("acme").unwrap();
    let other = server.store.create_key("globex").unwrap();
    let client = common::client(&server.fingerprint);
    let base = format!("https://{}/api/v2", server.addr);
    let now = jiff::Timestamp::now();
    let body = json!({
        "matchers": [
            {"name": "alertname", "value": "KafkaDiskFull", "isRegex": false, "isEqual": true},
            {"name": "cluster", "value": "prod-.*", "isRegex": true}
        ],
        "startsAt": now.to_string(),
        "endsAt": (now + jiff::SignedDuration::from_hours(2)).to_string(),
        "createdBy": "alice",
        "comment": "disk replacement"
    });
    let created: serde_json::Value = client
        .post(format!("{base}/silences"))
        .bearer_auth(&acme)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["silenceID"].as_str().expect("an id").to_string();

    let list = |key: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .get(format!("{base}/silences"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Vec<serde_json::Value>>()
                .await
                .unwrap()
        }
    };
    let mine = list(acme.clone()).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["status"]["state"], "active");
    assert_eq!(mine[0]["matchers"][1]["isRegex"], true);
    assert!(
        list(other.clone()).await.is_empty(),
        "another tenant sees none"
    );

    let foreign = client
        .delete(format!("{base}/silence/{id}"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    let expire = client
        .delete(format!("{base}/silence/{id}"))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(expire.status(), 200);
    assert_eq!(list(acme.clone()).await[0]["status"]["state"], "expired");

    // A silence that would mute everything, or ends before it starts, is refused.
    let bad = client
        .post(format!("{base}/silences"))
        .bearer_auth(&acme)
        .json(&json!({
            "matchers": [{"name": "x", "value": ".*", "isRegex": true}],
            "startsAt": now.to_string(), "endsAt": (now + jiff::SignedDuration::from_hours(1)).to_string(),
            "createdBy": "a", "comment": "c"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let err: serde_json::Value = bad.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("empty string"),
        "{err}"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
