//! librdkafka's statistics JSON (`statistics.interval.ms`) as series: what an embedding
//! service's own producers and consumers see of the cluster (request latency per broker,
//! queues, errors, consumer lag), which the brokers' metrics cannot show.

use std::collections::BTreeMap;

use foresight_proto::v1::Series;
use serde_json::Value;

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

/// Series from one statistics document at `ts_ms`, with `base` labels on each.
///
/// # Errors
/// The JSON error when `json` is not a statistics document.
pub fn series(
    json: &str,
    base: &BTreeMap<String, String>,
    ts_ms: i64,
) -> Result<Vec<Series>, serde_json::Error> {
    let doc: Value = serde_json::from_str(json)?;
    let client = doc.get("client_id").and_then(Value::as_str).unwrap_or("");
    let kind = doc.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    let mut push = |name: &str, extra: &[(&str, &str)], value: f64| {
        let mut labels = base.clone();
        labels.insert("client_id".into(), client.into());
        labels.insert("client_type".into(), kind.into());
        for (k, v) in extra {
            labels.insert((*k).into(), (*v).into());
        }
        out.push(crate::series::single(name, labels, ts_ms, value));
    };
    for key in [
        "replyq", "msg_cnt", "msg_size", "tx", "rx", "txmsgs", "rxmsgs",
    ] {
        if let Some(v) = num(&doc, key) {
            push(&format!("librdkafka_client_{key}"), &[], v);
        }
    }
    if let Some(brokers) = doc.get("brokers").and_then(Value::as_object) {
        for b in brokers.values() {
            let Some(id) = b
                .get("nodeid")
                .and_then(Value::as_i64)
                .filter(|id| *id >= 0)
            else {
                continue; // bootstrap and internal pseudo-brokers
            };
            let id = id.to_string();
            let l = [("broker", id.as_str())];
            let up = b.get("state").and_then(Value::as_str) == Some("UP");
            push("librdkafka_broker_up", &l, f64::from(u8::from(up)));
            for key in [
                "outbuf_cnt",
                "waitresp_cnt",
                "tx",
                "txerrs",
                "rx",
                "rxerrs",
                "req_timeouts",
            ] {
                if let Some(v) = num(b, key) {
                    push(&format!("librdkafka_broker_{key}"), &l, v);
                }
            }
            if let Some(rtt) = b.get("rtt") {
                for (key, name) in [("avg", "avg"), ("p99", "p99")] {
                    // Microseconds in the document.
                    if let Some(v) = num(rtt, key) {
                        push(
                            &format!("librdkafka_broker_rtt_{name}_seconds"),
                            &l,
                            v / 1e6,
                        );
                    }
                }
            }
        }
    }
    if let Some(topics) = doc.get("topics").and_then(Value::as_object) {
        for (topic, t) in topics {
            let Some(parts) = t.get("partitions").and_then(Value::as_object) else {
                continue;
            };
            for (p, pv) in parts {
                if p == "-1" {
                    continue; // the unassigned-partition placeholder
                }
                if let Some(lag) = num(pv, "consumer_lag").filter(|l| *l >= 0.0) {
                    push(
                        "librdkafka_consumer_lag",
                        &[("topic", topic.as_str()), ("partition", p.as_str())],
                        lag,
                    );
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statistics_document_becomes_series() {
        let json = r#"{"client_id":"orders","type":"consumer","replyq":0,"msg_cnt":3,
          "brokers":{"b1:9092/1":{"nodeid":1,"state":"UP","outbuf_cnt":2,"txerrs":0,
                                  "rtt":{"avg":1500,"p99":9000}},
                     "GroupCoordinator":{"nodeid":-1,"state":"UP"}},
          "topics":{"orders":{"partitions":{"0":{"consumer_lag":12},"-1":{"consumer_lag":-1}}}}}"#;
        let s = series(json, &BTreeMap::new(), 7).unwrap();
        let get = |name: &str| {
            s.iter()
                .find(|x| x.name == name)
                .map(|x| x.samples[0].value)
        };
        assert_eq!(get("librdkafka_client_msg_cnt"), Some(3.0));
        assert_eq!(get("librdkafka_broker_up"), Some(1.0));
        assert_eq!(get("librdkafka_broker_rtt_p99_seconds"), Some(0.009));
        assert_eq!(get("librdkafka_consumer_lag"), Some(12.0));
        assert_eq!(
            s.iter()
                .filter(|x| x.name == "librdkafka_broker_up")
                .count(),
            1
        );
        assert!(series("not json", &BTreeMap::new(), 0).is_err());
    }
}
