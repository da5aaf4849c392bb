//! Eligible leader replicas (KIP-966, on by default for clusters formatted with Kafka
//! 4.1 and later) from DescribeTopicPartitions: each partition's ELR and last known ELR,
//! which the Metadata request does not carry.

use std::collections::HashMap;

use foresight_proto::v1::ClusterSnapshot;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::{DescribeTopicPartitionsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::{Client, ProtocolError, error_name};

/// Partitions a response may hold: the broker's own default limit.
const PARTITIONS_PER_RESPONSE: i32 = 2000;

/// Requests at most, a cycle: 200,000 partitions.
const MAX_PAGES: usize = 100;

/// Sets the ELR of every partition of `snap` whose topic the brokers describe. A cluster
/// with eligible leader replicas off answers without them: nothing is set then.
///
/// # Errors
/// [`ProtocolError`] when no broker answers (or none has the API: Kafka before 3.8).
pub async fn describe(client: &Client, snap: &mut ClusterSnapshot) -> Result<(), ProtocolError> {
    let topics: Vec<TopicRequest> = snap
        .topics
        .iter()
        .map(|t| {
            TopicRequest::default().with_name(TopicName(StrBytes::from_string(t.name.clone())))
        })
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    let mut elr: HashMap<(String, i32), (Vec<i32>, Vec<i32>)> = HashMap::new();
    let mut cursor: Option<Cursor> = None;
    for _ in 0..MAX_PAGES {
        let request = DescribeTopicPartitionsRequest::default()
            .with_topics(topics.clone())
            .with_response_partition_limit(PARTITIONS_PER_RESPONSE)
            .with_cursor(cursor.take());
        let r = client.send_any(&request).await?;
        for t in &r.topics {
            let Some(name) = &t.name else { continue };
            if t.error_code != 0 {
                tracing::debug!(topic = %name.as_str(), error = %error_name(t.error_code), "DescribeTopicPartitions failed for a topic.");
                continue;
            }
            for p in &t.partitions {
                // Null lists: the cluster has eligible leader replicas off.
                if let (Some(eligible), Some(last)) =
                    (&p.eligible_leader_replicas, &p.last_known_elr)
                    && p.error_code == 0
                {
                    elr.insert(
                        (name.to_string(), p.partition_index),
                        (
                            eligible.iter().map(|b| b.0).collect(),
                            last.iter().map(|b| b.0).collect(),
                        ),
                    );
                }
            }
        }
        match r.next_cursor {
            Some(next) => {
                cursor = Some(
                    Cursor::default()
                        .with_topic_name(next.topic_name)
                        .with_partition_index(next.partition_index),
                )
            }
            None => break,
        }
    }
    for t in &mut snap.topics {
        for p in &mut t.partitions {
            if let Some((eligible, last)) = elr.remove(&(t.name.clone(), p.id)) {
                p.eligible_leader_replicas = eligible;
                p.last_known_elr = last;
                p.elr_known = true;
            }
        }
    }
    Ok(())
}
