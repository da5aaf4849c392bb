//! What changed from one snapshot to the next, as `events` in the batch: leader and ISR
//! changes, log start offset moves, topic config changes, brokers joining or leaving.
//! Series say how things are; events say when they changed, which is what a support
//! engineer reconstructs first after an incident.

use std::collections::{BTreeMap, HashMap};

use foresight_proto::v1::{ClusterSnapshot, Event, EventKind, Partition};

fn event(ts_ms: i64, kind: EventKind, labels: &[(&str, &str)], message: String) -> Event {
    Event {
        timestamp_ms: ts_ms,
        kind: kind as i32,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        message,
    }
}

/// The events between `prev` and `cur`, stamped `cur.collected_at_ms`. Topics or
/// partitions that appear or disappear are not events here (their series show them).
pub fn diff(prev: &ClusterSnapshot, cur: &ClusterSnapshot) -> Vec<Event> {
    let ts = cur.collected_at_ms;
    let mut out = Vec::new();
    let before: BTreeMap<i32, &str> = prev
        .brokers
        .iter()
        .map(|b| (b.id, b.host.as_str()))
        .collect();
    let after: BTreeMap<i32, &str> = cur
        .brokers
        .iter()
        .map(|b| (b.id, b.host.as_str()))
        .collect();
    for (id, host) in &after {
        if !before.contains_key(id) {
            let id = id.to_string();
            out.push(event(
                ts,
                EventKind::BrokerJoined,
                &[("broker", &id), ("host", host)],
                format!("broker {id} ({host}) joined the cluster"),
            ));
        }
    }
    for (id, host) in &before {
        if !after.contains_key(id) {
            let id = id.to_string();
            out.push(event(
                ts,
                EventKind::BrokerLeft,
                &[("broker", &id), ("host", host)],
                format!("broker {id} ({host}) left the cluster metadata"),
            ));
        }
    }
    let old_topics: HashMap<&str, _> = prev.topics.iter().map(|t| (t.name.as_str(), t)).collect();
    for t in &cur.topics {
        let Some(old) = old_topics.get(t.name.as_str()) else {
            continue;
        };
        // An empty config map means "not described this time", not "all removed".
        if !t.configs.is_empty() && !old.configs.is_empty() {
            for (k, v) in &t.configs {
                let was = old.configs.get(k).map_or("(unset)", String::as_str);
                if was != v {
                    out.push(event(
                        ts,
                        EventKind::ConfigChange,
                        &[("topic", &t.name), ("config", k)],
                        format!("topic {}: {k} changed from {was} to {v}", t.name),
                    ));
                }
            }
        }
        let old_parts: HashMap<i32, &Partition> =
            old.partitions.iter().map(|p| (p.id, p)).collect();
        for p in &t.partitions {
            let Some(o) = old_parts.get(&p.id) else {
                continue;
            };
            let pid = p.id.to_string();
            let labels = [("topic", t.name.as_str()), ("partition", pid.as_str())];
            if o.leader != p.leader {
                out.push(event(
                    ts,
                    EventKind::LeaderChange,
                    &labels,
                    format!("{}-{}: leader {} -> {}", t.name, p.id, o.leader, p.leader),
                ));
            }
            let (mut was, mut now) = (o.isr.clone(), p.isr.clone());
            was.sort_unstable();
            now.sort_unstable();
            if was != now {
                out.push(event(
                    ts,
                    EventKind::IsrChange,
                    &labels,
                    format!("{}-{}: ISR {was:?} -> {now:?}", t.name, p.id),
                ));
            }
            if let (Some(a), Some(b)) = (o.log_start_offset, p.log_start_offset)
                && a != b
            {
                out.push(event(
                    ts,
                    EventKind::LogStartOffsetMove,
                    &labels,
                    format!("{}-{}: log start offset {a} -> {b}", t.name, p.id),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use foresight_proto::v1::{Broker, Topic};

    fn snap(
        ts: i64,
        brokers: &[i32],
        leader: i32,
        isr: Vec<i32>,
        lso: i64,
        mir: &str,
    ) -> ClusterSnapshot {
        ClusterSnapshot {
            collected_at_ms: ts,
            brokers: brokers
                .iter()
                .map(|id| Broker {
                    id: *id,
                    host: format!("b{id}"),
                    ..Default::default()
                })
                .collect(),
            topics: vec![Topic {
                name: "t".into(),
                partitions: vec![Partition {
                    id: 0,
                    leader,
                    replicas: vec![1, 2],
                    isr,
                    log_start_offset: Some(lso),
                    ..Default::default()
                }],
                configs: [("min.insync.replicas".to_string(), mir.to_string())].into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn reports_each_kind_of_change_once() {
        let a = snap(1, &[1, 2], 1, vec![1, 2], 0, "2");
        assert!(diff(&a, &a).is_empty());
        let b = snap(2, &[1, 3], 2, vec![2], 10, "1");
        let kinds: Vec<EventKind> = diff(&a, &b).iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                EventKind::BrokerJoined,
                EventKind::BrokerLeft,
                EventKind::ConfigChange,
                EventKind::LeaderChange,
                EventKind::IsrChange,
                EventKind::LogStartOffsetMove,
            ]
        );
        let leader = &diff(&a, &b)[3];
        assert_eq!(leader.timestamp_ms, 2);
        assert_eq!(leader.labels["topic"], "t");
        assert_eq!(leader.message, "t-0: leader 1 -> 2");
    }
}
