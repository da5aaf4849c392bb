//! Decoders of untrusted request bodies: the own format (zstd or gzip protobuf),
//! Prometheus remote write (snappy protobuf) and OTLP/HTTP metrics (protobuf or JSON).
//! Each ends in a [`TelemetryBatch`] checked against the [`Limits`], so that samples from
//! all three reach the same series store and rules. Every failure is an [`ApiError`]
//! with the status to answer and a code naming the limit or the problem; none panics
//! (the fuzz targets in `fuzz/` call these functions).

use std::io::Read;

use axum::http::StatusCode;
use foresight_proto::Message;
use foresight_proto::v1::{Label, Resource, Sample, Series, TelemetryBatch};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

use foresight_rules::promql::format_value;

use crate::config::Limits;
use crate::http::ApiError;

fn too_large(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, message)
}

fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// How far `body` may inflate: the smaller of the size and the ratio limit. Any body may
/// inflate to `max_body_bytes`: the ratio guards against bombs, not against a quiet
/// cluster's snapshot that compresses unusually well.
fn inflate_limit(body_len: usize, limits: &Limits) -> (usize, bool) {
    let by_ratio = body_len
        .max(1)
        .saturating_mul(limits.max_decompression_ratio.max(1))
        .max(limits.max_body_bytes);
    if by_ratio < limits.max_decompressed_bytes {
        (by_ratio, true)
    } else {
        (limits.max_decompressed_bytes, false)
    }
}

fn inflated_too_far(limit: usize, by_ratio: bool, limits: &Limits) -> ApiError {
    if by_ratio {
        too_large(
            "decompression_ratio",
            format!(
                "body inflates more than {} times its size (limits.max_decompression_ratio)",
                limits.max_decompression_ratio
            ),
        )
    } else {
        too_large(
            "decompressed_too_large",
            format!("body decompresses to more than {limit} bytes (limits.max_decompressed_bytes)"),
        )
    }
}

/// Decompresses `body` per `Content-Encoding` (identity, zstd or gzip), refusing to
/// inflate past the size or ratio limit.
///
/// # Errors
/// 415 for other encodings, 400 for corrupt bodies, 413 past a limit.
pub fn decompress(
    encoding: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<Vec<u8>, ApiError> {
    let (limit, by_ratio) = inflate_limit(body.len(), limits);
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>, name: &str| {
        r.take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(|e| bad("bad_encoding", format!("{name}: {e}")))
    };
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            if body.len() > limits.max_decompressed_bytes {
                return Err(inflated_too_far(
                    limits.max_decompressed_bytes,
                    false,
                    limits,
                ));
            }
            return Ok(body.to_vec());
        }
        Some("zstd") => {
            let mut d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| bad("bad_encoding", format!("zstd: {e}")))?;
            read(&mut d, &mut out, "zstd")?;
        }
        Some("gzip") => {
            read(&mut flate2::read::GzDecoder::new(body), &mut out, "gzip")?;
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not supported; use zstd, gzip or identity"),
            ));
        }
    }
    if out.len() > limit {
        return Err(inflated_too_far(limit, by_ratio, limits));
    }
    Ok(out)
}

/// Decompresses and decodes an own-format body (`POST /v1/telemetry`).
///
/// # Errors
/// [`ApiError`] with the status to answer: 400, 413 or 415.
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<(TelemetryBatch, Vec<u8>), ApiError> {
    let raw = decompress(encoding, body, limits)?;
    let batch = decode_batch(&raw, limits)?;
    Ok((batch, raw))
}

/// Decodes and checks an own-format batch.
///
/// # Errors
/// 400 naming the field, 413 naming the limit.
pub fn decode_batch(raw: &[u8], limits: &Limits) -> Result<TelemetryBatch, ApiError> {
    let batch = TelemetryBatch::decode(raw).map_err(|e| {
        bad(
            "invalid_batch",
            format!("invalid TelemetryBatch protobuf: {e}"),
        )
    })?;
    let invalid = |m: &str| bad("invalid_batch", m.to_string());
    let resource = batch
        .resource
        .as_ref()
        .ok_or_else(|| invalid("resource: missing"))?;
    if resource.agent_instance_id.is_empty() {
        return Err(invalid("resource.agent_instance_id: must not be empty"));
    }
    if batch.sequence == 0 {
        return Err(invalid("sequence: must be at least 1"));
    }
    check_series(&batch.series, limits)?;
    Ok(batch)
}

/// Applies the per-batch and per-series limits.
///
/// # Errors
/// 413 naming the limit and the series; 400 for empty names.
pub fn check_series(series: &[Series], limits: &Limits) -> Result<(), ApiError> {
    if series.len() > limits.max_series_per_batch {
        return Err(too_large(
            "too_many_series",
            format!(
                "series: {} exceeds the limit of {} (limits.max_series_per_batch)",
                series.len(),
                limits.max_series_per_batch
            ),
        ));
    }
    for (i, s) in series.iter().enumerate() {
        if s.name.is_empty() {
            return Err(bad(
                "invalid_batch",
                format!("series[{i}].name: must not be empty"),
            ));
        }
        if s.name.len() > limits.max_label_value_bytes {
            return Err(too_large(
                "label_value_too_long",
                format!(
                    "series[{i}].name: {} bytes; at most {} (limits.max_label_value_bytes)",
                    s.name.len(),
                    limits.max_label_value_bytes
                ),
            ));
        }
        if s.labels.len() > limits.max_labels_per_series {
            return Err(too_large(
                "too_many_labels",
                format!(
                    "series[{i}] {:?}: {} labels; at most {} (limits.max_labels_per_series)",
                    s.name,
                    s.labels.len(),
                    limits.max_labels_per_series
                ),
            ));
        }
        for l in &s.labels {
            if l.name.is_empty() {
                return Err(bad(
                    "invalid_batch",
                    format!(
                        "series[{i}].labels: a label with value {:?} has an empty name",
                        l.value
                    ),
                ));
            }
            if l.name.len() > limits.max_label_name_bytes {
                return Err(too_large(
                    "label_name_too_long",
                    format!(
                        "series[{i}] {:?}: a label name of {} bytes; at most {} (limits.max_label_name_bytes)",
                        s.name,
                        l.name.len(),
                        limits.max_label_name_bytes
                    ),
                ));
            }
            if l.value.len() > limits.max_label_value_bytes {
                return Err(too_large(
                    "label_value_too_long",
                    format!(
                        "series[{i}] {:?} label {:?}: a value of {} bytes; at most {} (limits.max_label_value_bytes)",
                        s.name,
                        l.name,
                        l.value.len(),
                        limits.max_label_value_bytes
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A batch for a push protocol without sequence numbers: each request is its own batch.
fn unsequenced(origin: &str, series: Vec<Series>) -> TelemetryBatch {
    let id: [u8; 8] = rand::random();
    TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: format!("{origin}/{}", hex::encode(id)),
            ..Default::default()
        }),
        sequence: 1,
        series,
        ..Default::default()
    }
}

/// Decodes a Prometheus remote-write 1.0 body (snappy block format, protobuf).
///
/// # Errors
/// 400 for bodies that are not snappy or not a write request, 413 past the limits.
pub fn decode_remote_write(body: &[u8], limits: &Limits) -> Result<TelemetryBatch, ApiError> {
    let len =
        snap::raw::decompress_len(body).map_err(|e| bad("bad_encoding", format!("snappy: {e}")))?;
    let (limit, by_ratio) = inflate_limit(body.len(), limits);
    if len > limit {
        return Err(inflated_too_far(limit, by_ratio, limits));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| bad("bad_encoding", format!("snappy: {e}")))?;
    let req = foresight_proto::prometheus::WriteRequest::decode(raw.as_slice())
        .map_err(|e| bad("bad_protobuf", format!("not a remote-write request: {e}")))?;
    if req.timeseries.len() > limits.max_series_per_batch {
        return Err(too_large(
            "too_many_series",
            format!(
                "{} series; at most {} per request (limits.max_series_per_batch)",
                req.timeseries.len(),
                limits.max_series_per_batch
            ),
        ));
    }
    let series: Vec<Series> = req
        .timeseries
        .into_iter()
        .filter_map(|ts| {
            let mut name = None;
            let labels = ts
                .labels
                .into_iter()
                .filter_map(|l| {
                    if l.name == "__name__" {
                        name = Some(l.value);
                        None
                    } else {
                        Some(Label {
                            name: l.name,
                            value: l.value,
                        })
                    }
                })
                .collect();
            Some(Series {
                name: name?,
                labels,
                samples: ts
                    .samples
                    .into_iter()
                    .map(|s| Sample {
                        timestamp_ms: s.timestamp,
                        value: s.value,
                    })
                    .collect(),
            })
        })
        .collect();
    check_series(&series, limits)?;
    Ok(unsequenced("prometheus-remote-write", series))
}

/// Whether an OTLP body is JSON (`application/json`) rather than protobuf.
pub fn otlp_is_json(content_type: Option<&str>) -> Result<bool, ApiError> {
    let ct = content_type
        .unwrap_or("application/x-protobuf")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(false),
        "application/json" => Ok(true),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_content_type",
            format!(
                "Content-Type {other:?}: OTLP/HTTP is application/x-protobuf or application/json"
            ),
        )),
    }
}

/// Decodes an OTLP/HTTP metrics export (`POST /v1/metrics`), as an OpenTelemetry
/// Collector's `otlphttp` exporter sends it, into series named as Prometheus' OTLP
/// translation names them: the metric name with characters outside `[a-zA-Z0-9_:]`
/// replaced by `_`, `_total` after monotonic sums, `_bucket`/`_sum`/`_count` for
/// histograms, `quantile` series for summaries (exponential histograms: `_sum` and
/// `_count` only). `service.name` becomes `job`, `service.instance.id` `instance`; other
/// resource attributes and point attributes become labels with sanitized names.
///
/// # Errors
/// 400 for bodies that do not decode, 413 past the limits.
pub fn decode_otlp(
    json: bool,
    encoding: Option<&str>,
    body: &[u8],
    limits: &Limits,
) -> Result<TelemetryBatch, ApiError> {
    let raw = decompress(encoding, body, limits)?;
    let req: ExportMetricsServiceRequest = if json {
        serde_json::from_slice(&raw).map_err(|e| {
            bad(
                "bad_otlp",
                format!("not an OTLP metrics export (JSON): {e}"),
            )
        })?
    } else {
        ExportMetricsServiceRequest::decode(raw.as_slice()).map_err(|e| {
            bad(
                "bad_otlp",
                format!("not an OTLP metrics export (protobuf): {e}"),
            )
        })?
    };
    let mut out = Otlp {
        series: Vec::new(),
        max: limits.max_series_per_batch,
    };
    for rm in req.resource_metrics {
        let mut base = Vec::new();
        for kv in rm.resource.map(|r| r.attributes).unwrap_or_default() {
            let name = match kv.key.as_str() {
                "service.name" => "job".to_string(),
                "service.instance.id" => "instance".to_string(),
                k => sanitize_label(k),
            };
            base.push(Label {
                name,
                value: any_value_string(kv.value.as_ref()),
            });
        }
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                out.metric(&base, m)?;
            }
        }
    }
    check_series(&out.series, limits)?;
    Ok(unsequenced("otlp", out.series))
}

struct Otlp {
    series: Vec<Series>,
    max: usize,
}

fn nanos_to_ms(t: u64) -> i64 {
    (t / 1_000_000) as i64
}

/// OTLP's flag for a point that carries no value (Prometheus writes a staleness marker).
const NO_RECORDED_VALUE: u32 = 1;

impl Otlp {
    fn push(
        &mut self,
        name: String,
        base: &[Label],
        attrs: &[KeyValue],
        extra: Option<(&str, String)>,
        t_ns: u64,
        value: f64,
    ) -> Result<(), ApiError> {
        if self.series.len() >= self.max {
            return Err(too_large(
                "too_many_series",
                format!(
                    "more than {} series in one export (limits.max_series_per_batch)",
                    self.max
                ),
            ));
        }
        let mut labels: Vec<Label> = base.to_vec();
        labels.extend(attrs.iter().map(|kv| Label {
            name: sanitize_label(&kv.key),
            value: any_value_string(kv.value.as_ref()),
        }));
        if let Some((k, v)) = extra {
            labels.push(Label {
                name: k.to_string(),
                value: v,
            });
        }
        self.series.push(Series {
            name,
            labels,
            samples: vec![Sample {
                timestamp_ms: nanos_to_ms(t_ns),
                value,
            }],
        });
        Ok(())
    }

    /// The `_sum` (when known) and `_count` series of a histogram or summary point.
    fn sum_and_count(
        &mut self,
        name: &str,
        base: &[Label],
        attrs: &[KeyValue],
        t: u64,
        sum: Option<f64>,
        count: u64,
    ) -> Result<(), ApiError> {
        if let Some(sum) = sum {
            self.push(format!("{name}_sum"), base, attrs, None, t, sum)?;
        }
        self.push(format!("{name}_count"), base, attrs, None, t, count as f64)
    }

    fn metric(
        &mut self,
        base: &[Label],
        m: opentelemetry_proto::tonic::metrics::v1::Metric,
    ) -> Result<(), ApiError> {
        let name = sanitize_metric(&m.name);
        match m.data {
            Some(metric::Data::Gauge(g)) => {
                for p in g.data_points {
                    if let Some(v) = number(&p) {
                        self.push(name.clone(), base, &p.attributes, None, p.time_unix_nano, v)?;
                    }
                }
            }
            Some(metric::Data::Sum(s)) => {
                let name = if s.is_monotonic && !name.ends_with("_total") {
                    format!("{name}_total")
                } else {
                    name
                };
                for p in s.data_points {
                    if let Some(v) = number(&p) {
                        self.push(name.clone(), base, &p.attributes, None, p.time_unix_nano, v)?;
                    }
                }
            }
            Some(metric::Data::Histogram(h)) => {
                for p in h.data_points {
                    if p.flags & NO_RECORDED_VALUE != 0 {
                        continue;
                    }
                    let t = p.time_unix_nano;
                    let mut cumulative = 0u64;
                    for (i, c) in p.bucket_counts.iter().enumerate() {
                        cumulative = cumulative.saturating_add(*c);
                        let le = p
                            .explicit_bounds
                            .get(i)
                            .map(|b| format_value(*b))
                            .unwrap_or_else(|| "+Inf".into());
                        self.push(
                            format!("{name}_bucket"),
                            base,
                            &p.attributes,
                            Some(("le", le)),
                            t,
                            cumulative as f64,
                        )?;
                    }
                    self.sum_and_count(&name, base, &p.attributes, t, p.sum, p.count)?;
                }
            }
            Some(metric::Data::ExponentialHistogram(h)) => {
                for p in h.data_points {
                    if p.flags & NO_RECORDED_VALUE != 0 {
                        continue;
                    }
                    let t = p.time_unix_nano;
                    self.sum_and_count(&name, base, &p.attributes, t, p.sum, p.count)?;
                }
            }
            Some(metric::Data::Summary(s)) => {
                for p in s.data_points {
                    if p.flags & NO_RECORDED_VALUE != 0 {
                        continue;
                    }
                    let t = p.time_unix_nano;
                    for q in &p.quantile_values {
                        self.push(
                            name.clone(),
                            base,
                            &p.attributes,
                            Some(("quantile", format_value(q.quantile))),
                            t,
                            q.value,
                        )?;
                    }
                    self.sum_and_count(&name, base, &p.attributes, t, Some(p.sum), p.count)?;
                }
            }
            None => {}
        }
        Ok(())
    }
}

fn number(p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> Option<f64> {
    if p.flags & NO_RECORDED_VALUE != 0 {
        return None;
    }
    match p.value? {
        number_data_point::Value::AsDouble(v) => Some(v),
        number_data_point::Value::AsInt(v) => Some(v as f64),
    }
}

fn sanitize(s: &str, colon: bool) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn sanitize_metric(s: &str) -> String {
    sanitize(s, true)
}

fn sanitize_label(s: &str) -> String {
    sanitize(s, false)
}

fn any_value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex::encode(b),
        Some(any_value::Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| any_value_string(Some(v))).collect();
            format!("[{}]", items.join(","))
        }
        Some(any_value::Value::KvlistValue(l)) => {
            let items: Vec<String> = l
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, any_value_string(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(","))
        }
        Some(any_value::Value::StringValueStrindex(i)) => i.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum,
    };
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
        let limits = Limits::default();
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
            decode_otlp(false, Some("gzip"), &gz, &Limits::default())
                .unwrap()
                .series
                .len(),
            7
        );
        let zeros = zstd::bulk::compress(&vec![0u8; 16 << 20], 3).unwrap();
        let err = decompress(Some("zstd"), &zeros, &Limits::default()).unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.code(), "decompression_ratio");
        // Up to max_body_bytes, any ratio is fine.
        let quiet = zstd::bulk::compress(&vec![0u8; 4 << 20], 3).unwrap();
        assert_eq!(
            decompress(Some("zstd"), &quiet, &Limits::default())
                .unwrap()
                .len(),
            4 << 20
        );
        let small = Limits {
            max_decompressed_bytes: 1000,
            ..Limits::default()
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
        let err = decode_batch(&bytes[..bytes.len() - 1], &Limits::default()).unwrap_err();
        assert!(
            err.message().starts_with("invalid TelemetryBatch protobuf"),
            "{err:?}"
        );
        assert!(decode_batch(&bytes, &Limits::default()).is_ok());
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
        let limits = Limits::default();
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
                        assert!(e.status().is_client_error(), "{e:?}");
                    }
                }
            }
            if let Err(e) = decode_remote_write(&bytes, &limits) {
                assert!(e.status().is_client_error(), "{e:?}");
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
        let limits = Limits {
            max_labels_per_series: 2,
            max_label_name_bytes: 4,
            max_label_value_bytes: 8,
            ..Limits::default()
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
}
