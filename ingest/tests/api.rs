//! The telemetry endpoint against bad input: a real HTTPS server, real SQLite.

mod common;

use foresight_proto::Message;
use foresight_proto::v1::{Resource, Series, TelemetryBatch};

fn batch(sequence: u64) -> TelemetryBatch {
    TelemetryBatch {
        resource: Some(Resource {
            cluster_id: "c1".into(),
            agent_instance_id: "agent-1".into(),
            ..Default::default()
        }),
        sequence,
        series: vec![Series {
            name: "up".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_truncated_body_and_retries_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), None, None).await;
    let key = server.store.create_key("acme").unwrap();
    let tenant = server.store.ensure_tenant("acme").unwrap();
    let client = common::client(&server.fingerprint);
    let url = format!("https://{}/v1/telemetry", server.addr);
    let body = zstd::bulk::compress(&batch(1).encode_to_vec(), 3).unwrap();

    let health = client
        .get(format!("https://{}/healthz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // A wrong key: 401, nothing stored.
    let resp = client
        .post(&url)
        .bearer_auth("fsk_not_a_key")
        .header("content-encoding", "zstd")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["code"], "unauthorized");
    assert_eq!(server.store.batch_count(tenant).unwrap(), 0);

    // No key at all: 401 too.
    let resp = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // A truncated protobuf: 400 naming the problem, nothing stored.
    let raw = batch(2).encode_to_vec();
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .body(raw[..raw.len() - 3].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("invalid TelemetryBatch protobuf"),
        "{err}"
    );
    assert_eq!(server.store.batch_count(tenant).unwrap(), 0);

    // Corrupt zstd: 400.
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-encoding", "zstd")
        .body(b"not zstd at all".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // A batch without a resource: 400 naming the field.
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .body(
            TelemetryBatch {
                sequence: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().starts_with("resource"),
        "{err}"
    );

    // The server still works: a good batch is accepted, its retry stored once.
    for expect_duplicate in [false, true] {
        let resp = client
            .post(&url)
            .bearer_auth(&key)
            .header("content-encoding", "zstd")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let ack: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(ack["duplicate"], expect_duplicate);
    }
    assert_eq!(server.store.batch_count(tenant).unwrap(), 1);

    // Ready, and the service's own metrics count what happened above.
    let ready = client
        .get(format!("https://{}/readyz", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = client
        .get(format!("https://{}/metrics", server.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "foresight_batches_accepted_total 1",
        "foresight_batches_duplicate_total 1",
        "foresight_requests_rejected_total{reason=\"unauthorized\"} 2",
        "# TYPE foresight_outbox_pending gauge",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    server.shutdown(std::time::Duration::from_secs(5)).await;
}
