//! Prometheus remote write into Foresight: a snappy protobuf `WriteRequest`, as a
//! Prometheus forwarding jmx_exporter metrics sends it, reaches the rules and fires an
//! alert; bad bodies get a clear error.

mod common;

use std::time::Duration;

use foresight_proto::Message;
use foresight_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

const RULES: &str = r#"
groups:
  - name: jmx
    rules:
      - alert: UnderReplicatedPartitions
        expr: kafka_server_replicamanager_underreplicatedpartitions > 0
        labels: {severity: warning}
        annotations:
          summary: "{{ $value }} under-replicated partitions on broker {{ $labels.broker }}"
"#;

fn request(value: f64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                label(
                    "__name__",
                    "kafka_server_replicamanager_underreplicatedpartitions",
                ),
                label("cluster", "prod"),
                label("broker", "2"),
            ],
            samples: vec![Sample {
                value,
                timestamp: now,
            }],
        }],
    };
    snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_write_sample_fires_a_rule() {
    let mut receiver = common::start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), Some(RULES), Some(&receiver.url)).await;
    let key = server.store.create_key("acme").unwrap();
    let client = common::client(&server.fingerprint);
    let url = format!("https://{}/api/v1/write", server.addr);

    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(request(3.0))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let firing = common::wait_for(
        &mut receiver.rx,
        "UnderReplicatedPartitions",
        "firing",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(
        firing["alerts"][0]["annotations"]["summary"],
        "3 under-replicated partitions on broker 2"
    );
    assert_eq!(firing["alerts"][0]["labels"]["cluster"], "prod");

    // Not snappy, or snappy but not a write request: 4xx that says so.
    let plain = client
        .post(&url)
        .bearer_auth(&key)
        .body(request(1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 415);
    let garbage = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-encoding", "snappy")
        .body(
            snap::raw::Encoder::new()
                .compress_vec(b"\xff\xff\xff")
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let err: serde_json::Value = garbage.json().await.unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("remote-write"),
        "{err}"
    );
    server.shutdown(Duration::from_secs(5)).await;
}
