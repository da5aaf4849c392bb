//! Broker JMX metrics from the Prometheus jmx_exporter's HTTP endpoint, in the text
//! exposition format (parsed by `prom_text_format_parser`), relabelled with `cluster` and
//! `broker` so that the pack's rules can group them.

use std::collections::BTreeMap;

use foresight_proto::v1::Series;
use prom_text_format_parser::{Scrape, Type, ValueType};

/// One scrape failure, for the log.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No answer or a failure status.
    #[error("{url}: {message}")]
    Http {
        /// The endpoint.
        url: String,
        /// What happened.
        message: String,
    },
    /// The body is not the text exposition format.
    #[error("{url}: not the Prometheus text format: {message}")]
    Parse {
        /// The endpoint.
        url: String,
        /// The parser's complaint.
        message: String,
    },
}

/// Series from one scrape body at `ts_ms`; `labels` (cluster, broker, …) are added to
/// every series, overriding the exporter's labels of the same name.
///
/// # Errors
/// [`ScrapeError::Parse`] for a body that is not the text format.
pub fn parse(
    url: &str,
    body: &str,
    labels: &BTreeMap<String, String>,
    ts_ms: i64,
) -> Result<Vec<Series>, ScrapeError> {
    let body = strip_trailing_commas(body);
    let scrape = Scrape::parse(&body).map_err(|e| ScrapeError::Parse {
        url: url.to_string(),
        message: format!("{e:?}"),
    })?;
    let mut out = Vec::new();
    for m in scrape.metrics {
        for s in m.samples {
            let suffix = match (m.kind, s.value.value_type) {
                (Type::Histogram, ValueType::Sample) => "_bucket",
                (Type::Histogram | Type::Summary, ValueType::Sum) => "_sum",
                (Type::Histogram | Type::Summary, ValueType::Count) => "_count",
                _ => "",
            };
            // The parser keeps the number as text; an unparsable one is skipped, never
            // a panic.
            let Ok(value) = s.value.value.parse::<f64>() else {
                continue;
            };
            let mut all: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|l| (l.key.clone(), l.value.clone()))
                .collect();
            all.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            out.push(foresight_proto::single_series(
                format!("{}{suffix}", m.name),
                all,
                ts_ms,
                value,
            ));
        }
    }
    Ok(out)
}

/// The text format allows `{a="1",}`, which jmx_exporter's client library writes and
/// the parser rejects: drop a comma that closes a label set (outside quoted values).
fn strip_trailing_commas(body: &str) -> std::borrow::Cow<'_, str> {
    if !body.contains(",}") {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = String::with_capacity(body.len());
    let (mut quoted, mut escaped) = (false, false);
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            quoted = escaped || c != '"';
            escaped = !escaped && c == '\\';
        } else if c == '"' {
            quoted = true;
        } else if c == ',' && chars.peek() == Some(&'}') {
            continue;
        }
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "# HELP kafka_server_replicamanager_underreplicatedpartitions Attribute exposed for management\n# TYPE kafka_server_replicamanager_underreplicatedpartitions gauge\nkafka_server_replicamanager_underreplicatedpartitions 3.0\n# TYPE kafka_network_requestmetrics_totaltimems summary\nkafka_network_requestmetrics_totaltimems{request=\"Produce\",quantile=\"0.99\",} 812.0\nkafka_network_requestmetrics_totaltimems_count{request=\"Produce\",} 10.0\n";

    #[test]
    fn parses_jmx_exporter_output_and_adds_cluster_and_broker() {
        let labels = BTreeMap::from([
            ("cluster".to_string(), "prod".to_string()),
            ("broker".to_string(), "3".to_string()),
        ]);
        let series = parse("http://b3:7071/metrics", BODY, &labels, 5).unwrap();
        let urp = series
            .iter()
            .find(|s| s.name == "kafka_server_replicamanager_underreplicatedpartitions")
            .unwrap();
        assert_eq!(urp.samples[0].value, 3.0);
        assert!(
            urp.labels
                .iter()
                .any(|l| l.name == "broker" && l.value == "3")
        );
        let p99 = series
            .iter()
            .find(|s| {
                s.name == "kafka_network_requestmetrics_totaltimems"
                    && s.labels
                        .iter()
                        .any(|l| l.name == "quantile" && l.value == "0.99")
            })
            .unwrap();
        assert_eq!(p99.samples[0].value, 812.0);
        assert!(
            series
                .iter()
                .any(|s| s.name == "kafka_network_requestmetrics_totaltimems_count")
        );
    }

    #[test]
    fn a_comma_inside_a_value_is_kept() {
        let body = "m{a=\"x,}\",b=\"2\",} 1\n";
        let series = parse("u", body, &BTreeMap::new(), 0).unwrap();
        assert!(
            series[0]
                .labels
                .iter()
                .any(|l| l.name == "a" && l.value == "x,}")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for body in ["{{{", "metric{a=\"1\" 2", "m 1e999999x", "\u{0}\u{1}"] {
            let _ = parse("u", body, &BTreeMap::new(), 0);
        }
        assert!(parse("u", "metric{a=\"1\" 2", &BTreeMap::new(), 0).is_err());
    }
}
