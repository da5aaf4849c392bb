//! Grafana-style queries against Foresight's `/api/v1/query_range` answer what a real
//! Prometheus (Debian's `prometheus` package) answers for the same samples: both are fed
//! one remote-write request, then asked the same range queries, series and labels.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use foresight_proto::Message;
use foresight_proto::prometheus::{Label, Sample, TimeSeries, WriteRequest};

fn series(labels: &[(&str, &str)], samples: Vec<(i64, f64)>) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .into_iter()
            .map(|(timestamp, value)| Sample { value, timestamp })
            .collect(),
    }
}

/// Ten minutes of a small Kafka cluster's metrics, every 15 s, ending near `now`:
/// counters with a reset, gauges, a histogram, and a series that stops half-way.
///
/// Samples sit 3.3 s off the queries' whole-second grid: Debian's Prometheus is 2.42,
/// whose range and lookback windows include their left edge, while Prometheus 3 (and
/// Foresight, which follows its test suite) exclude it. Off the grid, both agree.
fn data(now: i64) -> WriteRequest {
    let start = now - 600_000 + 3_300;
    let ts: Vec<i64> = (0..=40).map(|i| start + i * 15_000).collect();
    let mut out = Vec::new();
    for (topic, rate) in [("orders", 12.5), ("payments", 3.0)] {
        out.push(series(
            &[
                (
                    "__name__",
                    "kafka_server_brokertopicmetrics_messagesin_total",
                ),
                ("cluster", "prod"),
                ("topic", topic),
            ],
            ts.iter()
                .enumerate()
                .map(|(i, t)| {
                    // A broker restart at the 25th sample resets the counter.
                    let n = if i < 25 { i as f64 } else { (i - 25) as f64 };
                    (*t, n * 15.0 * rate)
                })
                .collect(),
        ));
    }
    for p in 0..3 {
        let partition = p.to_string();
        out.push(series(
            &[
                ("__name__", "kafka_log_log_size"),
                ("cluster", "prod"),
                ("topic", "orders"),
                ("partition", &partition),
            ],
            ts.iter()
                .enumerate()
                .map(|(i, t)| (*t, 1000.0 * (p + 1) as f64 + (i * i) as f64 * 3.5))
                .collect(),
        ));
    }
    out.push(series(
        &[
            ("__name__", "kafka_consumergroup_lag"),
            ("cluster", "prod"),
            ("group", "billing"),
        ],
        ts.iter()
            .take(20)
            .enumerate()
            .map(|(i, t)| (*t, (i % 7) as f64 * 10.0))
            .collect(),
    ));
    for (le, per) in [("0.01", 5.0), ("0.1", 9.0), ("1", 10.0), ("+Inf", 10.0)] {
        out.push(series(
            &[
                ("__name__", "kafka_network_request_seconds_bucket"),
                ("cluster", "prod"),
                ("le", le),
            ],
            ts.iter()
                .enumerate()
                .map(|(i, t)| (*t, i as f64 * per))
                .collect(),
        ));
    }
    WriteRequest { timeseries: out }
}

const QUERIES: &[&str] = &[
    "kafka_log_log_size",
    "sum by (topic) (rate(kafka_server_brokertopicmetrics_messagesin_total[1m]))",
    "increase(kafka_server_brokertopicmetrics_messagesin_total[5m])",
    "irate(kafka_server_brokertopicmetrics_messagesin_total[2m])",
    "max_over_time(kafka_log_log_size[2m]) - min_over_time(kafka_log_log_size[2m])",
    "deriv(kafka_log_log_size[3m])",
    "avg(kafka_log_log_size) by (cluster)",
    "topk(2, kafka_log_log_size)",
    "count(kafka_log_log_size > 1500)",
    "kafka_consumergroup_lag",
    "histogram_quantile(0.9, sum by (le) (rate(kafka_network_request_seconds_bucket[5m])))",
    "absent(kafka_controller_kafkacontroller_activecontrollercount)",
    "sum(kafka_log_log_size) / 1024",
    "1 + 2",
    "time() - 5",
];

/// A query's matrix as `labels -> [(t, value)]`.
fn matrix(v: &serde_json::Value) -> BTreeMap<String, Vec<(f64, f64)>> {
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(v["data"]["resultType"], "matrix", "{v}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let points = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_f64().unwrap(),
                        match p[1].as_str().unwrap() {
                            "+Inf" => f64::INFINITY,
                            "-Inf" => f64::NEG_INFINITY,
                            x => x.parse().unwrap(),
                        },
                    )
                })
                .collect();
            (s["metric"].to_string(), points)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_queries_answer_as_prometheus_does() {
    let dir = tempfile::tempdir().unwrap();
    // Prometheus with its remote-write receiver, on loopback.
    let prom_port = common::free_port();
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(&prom_cfg, "global:\n  scrape_interval: 1h\n").unwrap();
    let _prom = common::ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--web.enable-remote-write-receiver")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package, installed by scripts/test-deps.sh) starts"),
    );
    let prom = format!("http://127.0.0.1:{prom_port}");
    // Plain HTTP to Prometheus (reqwest wants a TLS setup all the same).
    let plain = reqwest::Client::builder()
        .use_preconfigured_tls(foresight_reporter::tls::client_config(None, None).unwrap())
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = plain.get(format!("{prom}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus not ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let server = common::start_plain_server(&dir.path().join("foresight"), "127.0.0.1:0").await;
    let key = server
        .store
        .create_scoped_key("acme", foresight_ingest::store::Scope::Admin, "grafana")
        .unwrap();
    let client = common::client(&server.fingerprint);
    let foresight = format!("https://{}", server.addr);

    // Whole seconds, as Grafana aligns them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        * 1000;
    let body = snap::raw::Encoder::new()
        .compress_vec(&data(now).encode_to_vec())
        .unwrap();
    let r = plain
        .post(format!("{prom}/api/v1/write"))
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "Prometheus refused: {r:?}");
    let r = client
        .post(format!("{foresight}/api/v1/write"))
        .bearer_auth(&key)
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    let range =
        |base: String, query: &str, start: i64, end: i64, step: &str, key: Option<String>| {
            let form = [
                ("query", query.to_string()),
                ("start", (start / 1000).to_string()),
                ("end", (end / 1000).to_string()),
                ("step", step.to_string()),
            ];
            let c = if key.is_some() {
                client.clone()
            } else {
                plain.clone()
            };
            async move {
                // Grafana POSTs a form by default.
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.iter())
                    .finish();
                let mut req = c
                    .post(format!("{base}/api/v1/query_range"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body);
                if let Some(k) = key {
                    req = req.bearer_auth(k);
                }
                req.send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap()
            }
        };

    // The samples reach the evaluator through its queue: wait until they are visible.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = range(
            foresight.clone(),
            "kafka_log_log_size",
            now - 60_000,
            now,
            "15",
            Some(key.clone()),
        )
        .await;
        if v["data"]["result"].as_array().is_some_and(|r| r.len() == 3) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "samples never visible: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut compared = 0;
    for (start, end, step) in [
        (now - 600_000, now, "15"),
        (now - 570_000, now + 120_000, "60"),
        (now - 300_000, now - 7_000, "7"),
    ] {
        for q in QUERIES {
            let p = matrix(&range(prom.clone(), q, start, end, step, None).await);
            let f = matrix(&range(foresight.clone(), q, start, end, step, Some(key.clone())).await);
            assert_eq!(
                p.keys().collect::<Vec<_>>(),
                f.keys().collect::<Vec<_>>(),
                "{q} (step {step}): series differ"
            );
            for (labels, pp) in &p {
                let fp = &f[labels];
                assert_eq!(
                    pp.iter().map(|x| x.0).collect::<Vec<_>>(),
                    fp.iter().map(|x| x.0).collect::<Vec<_>>(),
                    "{q} (step {step}) {labels}: timestamps differ"
                );
                for ((t, a), (_, b)) in pp.iter().zip(fp) {
                    assert!(
                        close(*a, *b),
                        "{q} (step {step}) {labels} at {t}: Prometheus {a}, Foresight {b}"
                    );
                }
                compared += pp.len();
            }
        }
    }
    assert!(compared > 1000, "only {compared} points compared");

    // Grafana's metric browser: label names, values, and series.
    for path in [
        "/api/v1/labels".to_string(),
        "/api/v1/label/topic/values".to_string(),
        "/api/v1/label/__name__/values".to_string(),
        "/api/v1/series?match[]=kafka_log_log_size%7Bpartition%3D~%220%7C1%22%7D".to_string(),
    ] {
        let p: serde_json::Value = plain
            .get(format!("{prom}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let f: serde_json::Value = client
            .get(format!("{foresight}{path}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let sorted = |v: &serde_json::Value| {
            let mut items: Vec<String> = v["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.to_string())
                .collect();
            items.sort();
            items
        };
        assert_eq!(sorted(&p), sorted(&f), "{path}");
    }

    // A parse error has Prometheus' error shape.
    let bad = range(
        foresight.clone(),
        "sum(",
        now - 60_000,
        now,
        "15",
        Some(key.clone()),
    )
    .await;
    assert_eq!(bad["status"], "error");
    assert_eq!(bad["errorType"], "bad_data");
}
