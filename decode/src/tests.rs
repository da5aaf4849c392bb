//! The decoders against good, bad and hostile bodies.

use super::*;
use crate::otlp::*;
use foresight_proto::Message;
use foresight_proto::v1::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
    Sum,
};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource as OtelResource;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn export() -> ExportMetricsServiceRequest {
    let point = |v: i64| NumberDataPoint {
        attributes: vec![kv("topic", "orders")],
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsInt(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(OtelResource {
                attributes: vec![kv("service.name", "kafka"), kv("kafka.cluster", "prod")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "kafka.partition.replicas_in_sync".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point(2)],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "kafka.messages".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![point(10)],
                            is_monotonic: true,
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "request.latency".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: vec![HistogramDataPoint {
                                time_unix_nano: 1_700_000_000_000_000_000,
                                count: 3,
                                sum: Some(0.7),
                                bucket_counts: vec![1, 2, 0],
                                explicit_bounds: vec![0.1, 0.5],
                                ..Default::default()
                            }],
                            aggregation_temporality: 2,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn names(b: &TelemetryBatch) -> Vec<String> {
    b.series
        .iter()
        .map(|s| {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect();
            format!("{}{{{}}} {}", s.name, labels.join(","), s.samples[0].value)
        })
        .collect()
}

#[test]
fn otlp_protobuf_and_json_decode_to_the_same_series() {
    let req = export();
    let limits = DecodeLimits::default();
    let from_pb = decode_otlp(false, None, &req.encode_to_vec(), &limits).unwrap();
    let json = serde_json::to_vec(&req).unwrap();
    let from_json = decode_otlp(true, None, &json, &limits).unwrap();
    assert_eq!(names(&from_pb), names(&from_json));
    assert_eq!(
        names(&from_pb),
        [
            "kafka_partition_replicas_in_sync{job=kafka,kafka_cluster=prod,topic=orders} 2",
            "kafka_messages_total{job=kafka,kafka_cluster=prod,topic=orders} 10",
            "request_latency_bucket{job=kafka,kafka_cluster=prod,le=0.1} 1",
            "request_latency_bucket{job=kafka,kafka_cluster=prod,le=0.5} 3",
            "request_latency_bucket{job=kafka,kafka_cluster=prod,le=+Inf} 3",
            "request_latency_sum{job=kafka,kafka_cluster=prod} 0.7",
            "request_latency_count{job=kafka,kafka_cluster=prod} 3",
        ]
    );
    assert_eq!(from_pb.series[0].samples[0].timestamp_ms, 1_700_000_000_000);
    // The JSON encoding's 64-bit integers are strings, as OTLP/JSON specifies.
    assert!(
        String::from_utf8(json)
            .unwrap()
            .contains("\"1700000000000000000\"")
    );
}

#[test]
fn gzip_bodies_decode_and_ratio_bombs_stop() {
    use std::io::Write;
    let raw = export().encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(
        decode_otlp(false, Some("gzip"), &gz, &DecodeLimits::default())
            .unwrap()
            .series
            .len(),
        7
    );
    let zeros = zstd::bulk::compress(&vec![0u8; 16 << 20], 3).unwrap();
    let err = decompress(Some("zstd"), &zeros, &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.status(), 413);
    assert_eq!(err.code(), "decompression_ratio");
    // Up to max_body_bytes, any ratio is fine.
    let quiet = zstd::bulk::compress(&vec![0u8; 4 << 20], 3).unwrap();
    assert_eq!(
        decompress(Some("zstd"), &quiet, &DecodeLimits::default())
            .unwrap()
            .len(),
        4 << 20
    );
    let small = DecodeLimits {
        max_decompressed_bytes: 1000,
        ..DecodeLimits::default()
    };
    let err = decompress(Some("zstd"), &zeros, &small).unwrap_err();
    assert_eq!(err.code(), "decompressed_too_large");
}

#[test]
fn truncated_protobuf_is_named() {
    let batch = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: "a".into(),
            ..Default::default()
        }),
        sequence: 1,
        series: vec![Series {
            name: "x".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let bytes = batch.encode_to_vec();
    let err = decode_batch(&bytes[..bytes.len() - 1], &DecodeLimits::default()).unwrap_err();
    assert!(
        err.message().starts_with("invalid TelemetryBatch protobuf"),
        "{err:?}"
    );
    assert!(decode_batch(&bytes, &DecodeLimits::default()).is_ok());
}

#[test]
fn arbitrary_bytes_never_panic_the_decoders() {
    // A deterministic smoke run of what fuzz/ explores at length: mutations and
    // truncations of valid bodies, in every encoding and protocol.
    let valid = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: "a".into(),
            ..Default::default()
        }),
        sequence: 7,
        series: vec![Series {
            name: "x".into(),
            labels: vec![Label {
                name: "l".into(),
                value: "v".into(),
            }],
            samples: vec![Sample {
                timestamp_ms: 1,
                value: 2.0,
            }],
        }],
        ..Default::default()
    }
    .encode_to_vec();
    let zstd_valid = zstd::bulk::compress(&valid, 3).unwrap();
    let otlp = export().encode_to_vec();
    let otlp_json = serde_json::to_vec(&export()).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let limits = DecodeLimits::default();
    for i in 0..20_000 {
        let base = [&valid, &zstd_valid, &otlp, &otlp_json][i % 4];
        let mut bytes = base.clone();
        for _ in 0..(next() % 4) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        bytes.truncate(1 + (next() as usize) % bytes.len());
        for enc in [None, Some("zstd"), Some("gzip"), Some("br")] {
            for r in [
                decode_body(enc, &bytes, &limits).map(|_| ()),
                decode_otlp(i % 4 == 3, enc, &bytes, &limits).map(|_| ()),
            ] {
                if let Err(e) = r {
                    assert!((400..500).contains(&e.status()), "{e:?}");
                }
            }
        }
        if let Err(e) = decode_remote_write(&bytes, &limits) {
            assert!((400..500).contains(&e.status()), "{e:?}");
        }
    }
}

#[test]
fn label_limits_name_the_limit() {
    let series = |labels: Vec<Label>| {
        vec![Series {
            name: "m".into(),
            labels,
            samples: vec![],
        }]
    };
    let limits = DecodeLimits {
        max_labels_per_series: 2,
        max_label_name_bytes: 4,
        max_label_value_bytes: 8,
        ..DecodeLimits::default()
    };
    let l = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let code = |s: Vec<Series>| check_series(&s, &limits).unwrap_err().code();
    assert_eq!(
        code(series(vec![l("a", "1"), l("b", "2"), l("c", "3")])),
        "too_many_labels"
    );
    assert_eq!(code(series(vec![l("abcde", "1")])), "label_name_too_long");
    assert_eq!(
        code(series(vec![l("a", "123456789")])),
        "label_value_too_long"
    );
    assert!(check_series(&series(vec![l("abcd", "12345678")]), &limits).is_ok());
}
