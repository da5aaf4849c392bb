//! OTLP/HTTP metrics (`POST /v1/metrics`): protobuf or JSON, compressed or not.

use foresight_proto::Message;
use foresight_proto::v1::{Label, Sample, Series, TelemetryBatch};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

use foresight_rules::promql::format_value;

use crate::{
    DecodeError, DecodeLimits, Refusal, bad, check_series, decompress, too_large, unsequenced,
};

/// Whether an OTLP body is JSON (`application/json`) rather than protobuf.
pub fn otlp_is_json(content_type: Option<&str>) -> Result<bool, DecodeError> {
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
        other => Err(DecodeError::new(
            Refusal::UnsupportedMediaType,
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
    limits: &DecodeLimits,
) -> Result<TelemetryBatch, DecodeError> {
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
    ) -> Result<(), DecodeError> {
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
    ) -> Result<(), DecodeError> {
        if let Some(sum) = sum {
            self.push(format!("{name}_sum"), base, attrs, None, t, sum)?;
        }
        self.push(format!("{name}_count"), base, attrs, None, t, count as f64)
    }

    fn metric(
        &mut self,
        base: &[Label],
        m: opentelemetry_proto::tonic::metrics::v1::Metric,
    ) -> Result<(), DecodeError> {
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
