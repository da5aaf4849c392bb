//! Every request limit over real HTTPS: the status (413, 429 with `Retry-After`), a JSON
//! error naming the limit, and the refusal counted in `/metrics`.

mod common;

use foresight_ingest::config::Limits;
use foresight_ingest::store::Scope;
use foresight_ingest::{ServeConfig, Server};
use foresight_proto::Message;
use foresight_proto::v1::{Label, Resource, Sample, Series, TelemetryBatch};

fn series(n: usize, labels: Vec<Label>) -> Vec<Series> {
    (0..n)
        .map(|i| Series {
            name: format!("m{i}"),
            labels: labels.clone(),
            samples: vec![Sample {
                timestamp_ms: 1,
                value: 1.0,
            }],
        })
        .collect()
}

fn batch(series: Vec<Series>) -> Vec<u8> {
    TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: "agent".into(),
            ..Default::default()
        }),
        sequence: 1,
        series,
        ..Default::default()
    }
    .encode_to_vec()
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

/// Bytes zstd cannot shrink.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_answers_with_its_status_and_names_itself() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            builtin_rules: false,
            limits: Limits {
                max_body_bytes: 32 << 10,
                max_decompressed_bytes: 512 << 10,
                max_decompression_ratio: 50,
                max_series_per_batch: 10,
                max_labels_per_series: 4,
                max_label_name_bytes: 32,
                max_label_value_bytes: 64,
                tenant_requests_per_second: 1,
                tenant_burst: 3,
                ..Limits::default()
            },
            ..ServeConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let client = common::client(&server.fingerprint);
    let url = format!("https://{}/v1/telemetry", server.addr);
    let send = |tenant: &str, body: Vec<u8>, encoding: Option<&str>| {
        // One tenant per case, so that the rate limit does not decide the others.
        let key = server
            .store
            .create_scoped_key(tenant, Scope::Ingest, "")
            .unwrap();
        let mut req = client.post(&url).bearer_auth(key).body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e.to_string());
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: serde_json::Value = resp.json().await.expect("a JSON error body");
            (status, body, retry)
        }
    };
    let zstd = |b: &[u8]| zstd::bulk::compress(b, 3).unwrap();
    let long = "x".repeat(65);
    let cases: Vec<(&str, Vec<u8>, Option<&str>, &str)> = vec![
        ("t1", noise(40 << 10), None, "body_too_large"),
        // 20 KiB that do not compress and 580 KiB that do: a plausible ratio, too big.
        (
            "t2",
            zstd(&[noise(20 << 10), vec![0u8; 580 << 10]].concat()),
            Some("zstd"),
            "decompressed_too_large",
        ),
        (
            "t3",
            zstd(&vec![0u8; 1 << 20]),
            Some("zstd"),
            "decompression_ratio",
        ),
        ("t4", batch(series(11, vec![])), None, "too_many_series"),
        (
            "t5",
            batch(series(
                1,
                (0..5).map(|i| label(&format!("l{i}"), "v")).collect(),
            )),
            None,
            "too_many_labels",
        ),
        (
            "t6",
            batch(series(1, vec![label(&"n".repeat(33), "v")])),
            None,
            "label_name_too_long",
        ),
        (
            "t7",
            batch(series(1, vec![label("l", &long)])),
            None,
            "label_value_too_long",
        ),
    ];
    for (tenant, body, encoding, code) in cases {
        let (status, err, _) = send(tenant, body, encoding).await;
        assert_eq!(status, 413, "{code}: {err}");
        assert_eq!(err["code"], code, "{err}");
        assert!(
            err["error"].as_str().unwrap().contains("limits.") || code == "body_too_large",
            "the message names the setting: {err}"
        );
    }

    // The token bucket: a burst of 3, then 429 with Retry-After, per tenant.
    let key = server
        .store
        .create_scoped_key("busy", Scope::Ingest, "")
        .unwrap();
    let mut statuses = Vec::new();
    let mut last = None;
    for seq in 1..=5u64 {
        let body = TelemetryBatch {
            resource: Some(Resource {
                agent_instance_id: "agent".into(),
                ..Default::default()
            }),
            sequence: seq,
            ..Default::default()
        }
        .encode_to_vec();
        let resp = client
            .post(&url)
            .bearer_auth(&key)
            .body(body)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        last = Some((retry, resp.json::<serde_json::Value>().await.unwrap()));
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    let (retry, err) = last.unwrap();
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After: {retry:?}");
    assert_eq!(err["code"], "rate_limited");
    // Another tenant is not slowed by this one.
    let (status, _, _) = send("calm", batch(series(1, vec![])), None).await;
    assert_eq!(status, 202);

    // Each refusal is counted by reason.
    let metrics = client
        .get(format!("https://{}/metrics", server.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, n) in [
        ("body_too_large", 1),
        ("decompressed_too_large", 1),
        ("decompression_ratio", 1),
        ("too_many_series", 1),
        ("too_many_labels", 1),
        ("label_name_too_long", 1),
        ("label_value_too_long", 1),
        ("rate_limited", 2),
    ] {
        let line = format!("foresight_requests_rejected_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_queries_refuses_no_batch() {
    // A batch queue of eight: when queries shared it, the 32 readers' waiting queries
    // kept it full and agents got 503s (eight, not fewer, so that a machine busy with
    // something else does not stall the evaluator for a queue's worth of batches).
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        ServeConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().to_path_buf(),
            builtin_rules: false,
            limits: Limits {
                queue_capacity: 8,
                ..Limits::default()
            },
            ..ServeConfig::default()
        },
        None,
    )
    .await
    .unwrap();
    let client = common::client(&server.fingerprint);
    let read = server
        .store
        .create_scoped_key("flood", Scope::Read, "")
        .unwrap();
    let ingest = server
        .store
        .create_scoped_key("flood", Scope::Ingest, "")
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut readers = Vec::new();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..32 {
        let (client, key, stop, answered) =
            (client.clone(), read.clone(), stop.clone(), answered.clone());
        let url = format!(
            "https://{}/api/v1/query?query=count_over_time(m0[1h])",
            server.addr
        );
        readers.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                if let Ok(r) = client.get(&url).bearer_auth(&key).send().await
                    && r.status().is_success()
                {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    // The readers are at it before the first batch.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while answered.load(std::sync::atomic::Ordering::Relaxed) < 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the readers never got answers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let url = format!("https://{}/v1/telemetry", server.addr);
    let mut refused = Vec::new();
    for seq in 1..=200u64 {
        let body = TelemetryBatch {
            resource: Some(Resource {
                agent_instance_id: "agent".into(),
                ..Default::default()
            }),
            sequence: seq,
            series: series(5, vec![label("cluster", "c")]),
            ..Default::default()
        }
        .encode_to_vec();
        let status = client
            .post(&url)
            .bearer_auth(&ingest)
            .body(body)
            .send()
            .await
            .unwrap()
            .status();
        if !status.is_success() {
            refused.push((seq, status));
        }
    }
    stop.cancel();
    for r in readers {
        r.await.unwrap();
    }
    let queries = answered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        refused.is_empty(),
        "refused beside {queries} queries: {refused:?}"
    );
    assert!(
        queries >= 200,
        "the flood went on: {queries} queries answered"
    );
    server.shutdown(std::time::Duration::from_secs(5)).await;
}
