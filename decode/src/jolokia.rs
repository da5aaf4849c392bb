//! Broker JMX metrics read from a Jolokia agent (one bulk `read` request per broker),
//! named as the jmx_exporter's usual Kafka configuration names them, so that rules do
//! not care which of the two a site runs.
//!
//! Naming, for `kafka.server:type=ReplicaManager,name=IsrShrinksPerSec`:
//! - `Value` gives `kafka_server_replicamanager_<name>`;
//! - `Count` of a `…PerSec` meter gives `…_<name without PerSec>_total`
//!   (`kafka_server_replicamanager_isrshrinks_total`);
//! - `Count` of any other meter or histogram gives `…_<name>_count_total`, as the
//!   exporter's `_count` rules (typed COUNTER) come out of jmx_exporter 1.x: so the
//!   request handlers' idle meter, `RequestHandlerAvgIdlePercent`, whose count is idle
//!   nanoseconds per handler thread, is
//!   `kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent_count_total`;
//! - `MeanRate` of a `…Percent` meter gives `…_<name without Percent>_percent`, the
//!   exporter's lifetime mean;
//! - `NNthPercentile` gives the base name with `quantile="0.NN"`;
//! - other key properties (`topic`, `request`, `listener`, …) become labels.

use std::collections::BTreeMap;

use foresight_proto::v1::Series;
use serde_json::Value;

use crate::jmx::ScrapeError;

/// The MBeans read when the config names none: what the built-in rule pack reads.
pub const DEFAULT_MBEANS: &[&str] = &[
    "kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions",
    "kafka.server:type=ReplicaManager,name=UnderMinIsrPartitionCount",
    "kafka.server:type=ReplicaManager,name=PartitionCount",
    "kafka.server:type=ReplicaManager,name=LeaderCount",
    "kafka.server:type=ReplicaManager,name=IsrShrinksPerSec",
    "kafka.server:type=ReplicaManager,name=IsrExpandsPerSec",
    "kafka.server:type=ReplicaManager,name=PartitionsWithLateTransactionsCount",
    // Confluent Server's; Apache Kafka has no such MBean (a 404, skipped).
    "kafka.server:type=ReplicaManager,name=MaxLastStableOffsetLag",
    "kafka.controller:type=KafkaController,name=ActiveControllerCount",
    "kafka.controller:type=KafkaController,name=OfflinePartitionsCount",
    "kafka.controller:type=ControllerStats,name=UncleanLeaderElectionsPerSec",
    "kafka.server:type=KafkaRequestHandlerPool,name=RequestHandlerAvgIdlePercent",
    "kafka.server:type=raft-metrics",
    "kafka.network:type=SocketServer,name=NetworkProcessorAvgIdlePercent",
    "kafka.network:type=RequestMetrics,name=TotalTimeMs,request=*",
    "kafka.log:type=LogManager,name=OfflineLogDirectoryCount",
    // Share groups (Kafka 4.x): acknowledgements by type; absent before the first.
    "kafka.server:type=ShareGroupMetrics,name=RecordAcknowledgementsPerSec,ackType=*",
    "kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec",
    "kafka.server:type=BrokerTopicMetrics,name=BytesInPerSec",
    "kafka.server:type=BrokerTopicMetrics,name=BytesOutPerSec",
];

/// The bulk request body for `mbeans`.
pub fn request_body(mbeans: &[String]) -> Value {
    Value::Array(
        mbeans
            .iter()
            .map(|m| serde_json::json!({"type": "read", "mbean": m}))
            .collect(),
    )
}

/// Series from a Jolokia bulk-read answer at `ts_ms`; `labels` (cluster, broker) go on
/// every series. An MBean the broker does not have (status 404) is skipped.
///
/// # Errors
/// [`ScrapeError::Parse`] when the body is not a Jolokia bulk answer.
pub fn parse(
    url: &str,
    body: &[u8],
    labels: &BTreeMap<String, String>,
    ts_ms: i64,
) -> Result<Vec<Series>, ScrapeError> {
    let bad = |message: String| ScrapeError::Parse {
        url: url.to_string(),
        message,
    };
    let answers: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let answers = match answers {
        Value::Array(a) => a,
        single @ Value::Object(_) => vec![single],
        _ => return Err(bad("expected a list of read answers".into())),
    };
    let mut out = Vec::new();
    for answer in &answers {
        if answer.get("status").and_then(Value::as_i64) != Some(200) {
            continue;
        }
        let Some(mbean) = answer.pointer("/request/mbean").and_then(Value::as_str) else {
            continue;
        };
        let Some(value) = answer.get("value").and_then(Value::as_object) else {
            continue;
        };
        if mbean.contains(['*', '?']) {
            // A pattern read answers with a map from each matching MBean to its values.
            for (name, attrs) in value {
                if let Some(attrs) = attrs.as_object() {
                    push_mbean(name, attrs, labels, ts_ms, &mut out);
                }
            }
        } else {
            push_mbean(mbean, value, labels, ts_ms, &mut out);
        }
    }
    Ok(out)
}

fn push_mbean(
    mbean: &str,
    attrs: &serde_json::Map<String, Value>,
    labels: &BTreeMap<String, String>,
    ts_ms: i64,
    out: &mut Vec<Series>,
) {
    let Some((domain, keys)) = mbean.split_once(':') else {
        return;
    };
    let mut props: BTreeMap<&str, &str> = BTreeMap::new();
    for kv in keys.split(',') {
        if let Some((k, v)) = kv.split_once('=') {
            props.insert(k.trim(), v.trim().trim_matches('"'));
        }
    }
    let Some(kind) = props.remove("type") else {
        return;
    };
    let Some(name) = props.remove("name") else {
        // A metrics-library bean without a `name` (`kafka.server:type=raft-metrics`):
        // one series per numeric attribute, and the `current-state` text as a label,
        // as the exporter's KRaft rules give them.
        for (attr, v) in attrs {
            let metric = format!("{}_{}_{}", sanitize(domain), sanitize(kind), sanitize(attr));
            let mut l = labels.clone();
            let value = match v {
                Value::String(text) if attr == "current-state" => {
                    l.insert("state".into(), text.clone());
                    1.0
                }
                other => match other.as_f64() {
                    Some(x) => x,
                    None => continue,
                },
            };
            out.push(foresight_proto::single_series(metric, l, ts_ms, value));
        }
        return;
    };
    let base = format!("{}_{}_{}", sanitize(domain), sanitize(kind), sanitize(name));
    let mut base_labels = labels.clone();
    for (k, v) in props {
        base_labels
            .entry(sanitize_label(k))
            .or_insert_with(|| v.to_string());
    }
    for (attr, v) in attrs {
        let Some(value) = v.as_f64() else { continue };
        let mut l = base_labels.clone();
        let metric = if attr == "Value" {
            base.clone()
        } else if attr == "Count" {
            match name.strip_suffix("PerSec") {
                Some(stem) => format!(
                    "{}_{}_{}_total",
                    sanitize(domain),
                    sanitize(kind),
                    sanitize(stem)
                ),
                None => format!("{base}_count_total"),
            }
        } else if let Some(n) = attr.strip_suffix("thPercentile") {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            l.insert("quantile".into(), format!("0.{n}"));
            base.clone()
        } else if attr == "MeanRate"
            && let Some(stem) = name.strip_suffix("Percent")
        {
            format!(
                "{}_{}_{}_percent",
                sanitize(domain),
                sanitize(kind),
                sanitize(stem)
            )
        } else {
            continue;
        };
        out.push(foresight_proto::single_series(metric, l, ts_ms, value));
    }
}

/// Lower case, with anything outside `[a-z0-9_]` as `_` (jmx_exporter's lowercaseOutputName).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn sanitize_label(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &[Series], name: &str, label: Option<(&str, &str)>) -> Option<f64> {
        s.iter()
            .find(|x| {
                x.name == name
                    && label
                        .is_none_or(|(k, v)| x.labels.iter().any(|l| l.name == k && l.value == v))
            })
            .map(|x| x.samples[0].value)
    }

    #[test]
    fn names_follow_the_jmx_exporter_kafka_configuration() {
        let body = serde_json::json!([
            {"request": {"type": "read", "mbean": "kafka.server:type=ReplicaManager,name=UnderReplicatedPartitions"},
             "value": {"Value": 3}, "status": 200},
            {"request": {"type": "read", "mbean": "kafka.server:type=ReplicaManager,name=IsrShrinksPerSec"},
             "value": {"Count": 12, "OneMinuteRate": 0.5, "RateUnit": "SECONDS"}, "status": 200},
            {"request": {"type": "read", "mbean": "kafka.network:type=RequestMetrics,name=TotalTimeMs,request=*"},
             "value": {"kafka.network:name=TotalTimeMs,request=Produce,type=RequestMetrics":
                        {"99thPercentile": 41.5, "50thPercentile": 2.0, "Count": 900}},
             "status": 200},
            {"request": {"type": "read", "mbean": "kafka.server:type=KafkaRequestHandlerPool,name=RequestHandlerAvgIdlePercent"},
             "value": {"OneMinuteRate": 0.83, "MeanRate": 0.97, "Count": 100}, "status": 200},
            {"request": {"type": "read", "mbean": "kafka.server:type=raft-metrics"},
             "value": {"current-leader": 101, "current-state": "follower"}, "status": 200},
            {"request": {"type": "read", "mbean": "kafka.server:type=ReplicaManager,name=Nope"},
             "error": "javax.management.InstanceNotFoundException", "status": 404}
        ]);
        let labels = BTreeMap::from([("broker".to_string(), "1".to_string())]);
        let s = parse("u", body.to_string().as_bytes(), &labels, 5).unwrap();
        assert_eq!(
            value(
                &s,
                "kafka_server_replicamanager_underreplicatedpartitions",
                None
            ),
            Some(3.0)
        );
        assert_eq!(
            value(&s, "kafka_server_replicamanager_isrshrinks_total", None),
            Some(12.0)
        );
        assert_eq!(
            value(
                &s,
                "kafka_network_requestmetrics_totaltimems",
                Some(("quantile", "0.99"))
            ),
            Some(41.5)
        );
        assert!(
            value(
                &s,
                "kafka_network_requestmetrics_totaltimems",
                Some(("request", "Produce"))
            )
            .is_some()
        );
        // The idle meter as the exporter names it: its count and its lifetime mean.
        assert_eq!(
            value(
                &s,
                "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent_count_total",
                None
            ),
            Some(100.0)
        );
        assert_eq!(
            value(
                &s,
                "kafka_server_kafkarequesthandlerpool_requesthandleravgidle_percent",
                None
            ),
            Some(0.97)
        );
        assert_eq!(
            value(
                &s,
                "kafka_network_requestmetrics_totaltimems_count_total",
                Some(("request", "Produce"))
            ),
            Some(900.0)
        );
        assert!(
            !s.iter()
                .any(|x| x.name
                    == "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent")
        );
        assert_eq!(
            value(&s, "kafka_server_raft_metrics_current_leader", None),
            Some(101.0)
        );
        assert_eq!(
            value(
                &s,
                "kafka_server_raft_metrics_current_state",
                Some(("state", "follower"))
            ),
            Some(1.0)
        );
        assert!(s.iter().all(|x| {
            x.labels
                .iter()
                .any(|l| l.name == "broker" && l.value == "1")
        }));
        assert!(!s.iter().any(|x| x.name.contains("nope")));
    }

    #[test]
    fn a_body_that_is_not_jolokia_is_an_error_not_a_panic() {
        let labels = BTreeMap::new();
        assert!(parse("u", b"<html>", &labels, 0).is_err());
        assert!(parse("u", b"42", &labels, 0).is_err());
        assert!(
            parse("u", b"[1, {\"status\": 200}]", &labels, 0)
                .unwrap()
                .is_empty()
        );
    }
}
