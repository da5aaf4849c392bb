//! The series the agent itself builds: one-sample values from its other sources, and
//! consumer lag in seconds, which needs two snapshots (the ingest derives everything
//! else a snapshot stands for, see `foresight_proto::derive`).

use std::collections::BTreeMap;

use foresight_proto::derive::{SeriesBuilder, high_watermarks};
use foresight_proto::v1::{ClusterSnapshot, Series};

pub use foresight_proto::single_series as single;

/// `kafka_consumergroup_lag_seconds{consumergroup, topic}`: how long each group would
/// take to reach today's end of the log at the rate the log grew since `prev`, the worst
/// partition of the topic. Partitions that did not grow cannot be estimated and are
/// left out (a group with lag on an idle topic is what `lag_sum` rules are for).
pub fn lag_seconds(
    prev: &ClusterSnapshot,
    cur: &ClusterSnapshot,
    base: &BTreeMap<String, String>,
    ts_ms: i64,
) -> Vec<Series> {
    let mut out = SeriesBuilder::new(base, ts_ms);
    let dt = (cur.collected_at_ms - prev.collected_at_ms) as f64 / 1000.0;
    if dt <= 0.0 {
        return out.finish();
    }
    let (before, now) = (high_watermarks(prev), high_watermarks(cur));
    for g in &cur.groups {
        let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
        for o in &g.offsets {
            let key = (o.topic.as_str(), o.partition);
            let (Some(h0), Some(h1)) = (before.get(&key), now.get(&key)) else {
                continue;
            };
            let lag = h1.lag(o.offset) as f64;
            let rate = (h1.high_watermark - h0.high_watermark) as f64 / dt;
            let secs = if lag == 0.0 {
                0.0
            } else if rate > 0.0 {
                lag / rate
            } else {
                continue;
            };
            let w = worst.entry(o.topic.as_str()).or_insert(0.0);
            *w = w.max(secs);
        }
        for (topic, secs) in worst {
            out.push(
                "kafka_consumergroup_lag_seconds",
                &[("consumergroup", &g.name), ("topic", topic)],
                secs,
            );
        }
    }
    out.finish()
}
