//! OTLP/HTTP metrics into Foresight, as an OpenTelemetry Collector's `otlphttp` exporter
//! sends them: an export built from the `opentelemetry-proto` types, as protobuf (gzip)
//! and as JSON, reaches the rules and fires an alert.

mod common;

use std::time::Duration;

use foresight_proto::Message;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

const RULES: &str = r#"
groups:
  - name: otel
    rules:
      - alert: ConsumerGroupLagging
        expr: kafka_consumer_group_lag > 1000
        labels: {severity: warning}
        annotations:
          summary: "group {{ $labels.group }} lags {{ $value }} on {{ $labels.topic }}"
"#;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// What the Collector's kafkametrics receiver reports for consumer group lag.
fn export(group: &str, lag: i64) -> ExportMetricsServiceRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "otelcol"), kv("cluster", "prod")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "kafka.consumer_group.lag".into(),
                    unit: "{messages}".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("group", group), kv("topic", "orders")],
                            time_unix_nano: now,
                            value: Some(number_data_point::Value::AsInt(lag)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_export_fires_a_rule_as_protobuf_and_as_json() {
    let mut receiver = common::start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), Some(RULES), Some(&receiver.url)).await;
    let key = server
        .store
        .create_scoped_key("acme", foresight_ingest::store::Scope::Ingest, "otelcol")
        .unwrap();
    let client = common::client(&server.fingerprint);
    let url = format!("https://{}/v1/metrics", server.addr);

    // Protobuf, gzip-compressed as the Collector sends it by default.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &export("billing", 5000).encode_to_vec()).unwrap();
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/x-protobuf",
        "an ExportMetricsServiceResponse"
    );
    let firing = common::wait_for(
        &mut receiver.rx,
        "ConsumerGroupLagging",
        "firing",
        Duration::from_secs(20),
    )
    .await;
    let alert = &firing["alerts"][0];
    assert_eq!(alert["labels"]["group"], "billing");
    assert_eq!(
        alert["labels"]["job"], "otelcol",
        "service.name becomes job"
    );
    assert_eq!(alert["labels"]["cluster"], "prod");
    assert_eq!(
        alert["annotations"]["summary"],
        "group billing lags 5000 on orders"
    );

    // JSON, as the exporter sends with `encoding: json`.
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&export("audit", 7000)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "{}");
    let firing = common::wait_for(
        &mut receiver.rx,
        "ConsumerGroupLagging",
        "firing",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(firing["alerts"][0]["labels"]["group"], "audit");

    // What is not an export gets a clear error.
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body("{\"resourceMetrics\": 3}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "bad_otlp");
    let resp = client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
}
