//! The durability audit: acknowledged records are identified by leader epoch and offset,
//! and every leader change must account for them.
//!
//! Per partition the agent remembers the leader epoch, leader and ISR it last saw (from
//! a Metadata request of the second client) and the highest high watermark seen under
//! that epoch. When a later cycle shows a new leader with a higher epoch, it asks the new
//! leader for the end offset of the previous epoch (OffsetForLeaderEpoch, the check a
//! follower makes before it truncates): an end offset below the high watermark seen
//! under that epoch means acknowledged records are gone. A new leader that was not in
//! the last ISR seen is an unclean election, whatever it lost. A clean election that
//! lost nothing is no finding.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use foresight_proto::v1::ClusterSnapshot;
use futures_util::future::join_all;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::{Client, ProtocolError};

/// The series a finding becomes (valued at the offsets lost).
pub const METRIC_NAME: &str = "kafka_partition_acknowledged_offsets_lost";

/// Cycles a pending check is retried while the new leader cannot answer yet.
const TRIES: u8 = 10;

/// Acknowledged records a leader change did not keep, or an unclean election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The epoch whose records were acknowledged, and its leader.
    pub previous_epoch: i32,
    /// The previous epoch's leader.
    pub previous_leader: i32,
    /// The new leader's epoch.
    pub epoch: i32,
    /// The new leader.
    pub leader: i32,
    /// The highest high watermark seen under the previous epoch.
    pub high_watermark_seen: i64,
    /// Where the new leader says the previous epoch ends.
    pub end_offset: i64,
    /// `high_watermark_seen - end_offset`, at least 0.
    pub offsets_lost: i64,
    /// Whether the new leader was in the last ISR seen.
    pub clean: bool,
}

#[derive(Debug, Clone)]
struct Led {
    topic_id: [u8; 16],
    epoch: i32,
    leader: i32,
    isr: Vec<i32>,
    hw_max: i64,
    /// The epoch before this one, while its end has not been checked.
    pending: Option<(Box<Led>, u8)>,
}

/// A check to make: the partition, its previous epoch, its current one.
type Ask = ((String, i32), Led, Led);

/// What the audit remembers between cycles.
#[derive(Default)]
pub struct Audit {
    led: Mutex<HashMap<(String, i32), Led>>,
}

impl Audit {
    /// Compares this cycle's leaders and epochs with the last ones, and checks the end
    /// of each epoch that ended.
    ///
    /// # Errors
    /// [`ProtocolError`] when the Metadata request fails; a new leader that cannot
    /// answer yet is asked again next cycle.
    pub async fn check(
        &self,
        client: &Client,
        snap: &ClusterSnapshot,
    ) -> Result<Vec<Loss>, ProtocolError> {
        let md = client
            .send_any(
                &MetadataRequest::default()
                    .with_topics(None)
                    .with_allow_auto_topic_creation(false),
            )
            .await?;
        let hw: HashMap<(&str, i32), i64> = snap
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter_map(move |p| Some(((t.name.as_str(), p.id), p.high_watermark?)))
            })
            .collect();
        // (new leader) -> checks to ask it.
        let mut asks: BTreeMap<i32, Vec<Ask>> = BTreeMap::new();
        {
            let mut led = self.led.lock().expect("audit lock is never poisoned");
            for t in &md.topics {
                let Some(name) = &t.name else { continue };
                if t.error_code != 0 {
                    continue;
                }
                let name = name.0.to_string();
                for p in &t.partitions {
                    let leader = p.leader_id.0;
                    if p.error_code != 0 && leader < 0 {
                        continue;
                    }
                    if leader < 0 {
                        // Offline: the next leader is compared with the last one.
                        continue;
                    }
                    let key = (name.clone(), p.partition_index);
                    let seen = hw.get(&(name.as_str(), p.partition_index)).copied();
                    let now = Led {
                        topic_id: *t.topic_id.as_bytes(),
                        epoch: p.leader_epoch,
                        leader,
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        hw_max: seen.unwrap_or(-1),
                        pending: None,
                    };
                    match led.get_mut(&key) {
                        Some(prev) if prev.topic_id == now.topic_id && now.epoch == prev.epoch => {
                            prev.hw_max = prev.hw_max.max(now.hw_max);
                            prev.isr = now.isr;
                            if let Some((before, tries)) = prev.pending.take()
                                && tries > 0
                            {
                                asks.entry(leader).or_default().push((
                                    key.clone(),
                                    *before.clone(),
                                    prev.clone(),
                                ));
                                prev.pending = Some((before, tries - 1));
                            }
                        }
                        Some(prev) if prev.topic_id == now.topic_id && now.epoch > prev.epoch => {
                            let mut before = prev.clone();
                            before.pending = None;
                            let mut next = now;
                            next.pending = Some((Box::new(before.clone()), TRIES - 1));
                            asks.entry(leader).or_default().push((
                                key.clone(),
                                before,
                                next.clone(),
                            ));
                            *prev = next;
                        }
                        // New, recreated (another topic id) or an older epoch from a
                        // lagging broker's metadata: start afresh.
                        _ => {
                            led.insert(key, now);
                        }
                    }
                }
            }
        }
        let checks = asks.into_iter().map(|(leader, items)| async move {
            let mut topics: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
            for ((topic, partition), before, now) in &items {
                topics.entry(topic.as_str()).or_default().push(
                    OffsetForLeaderPartition::default()
                        .with_partition(*partition)
                        .with_current_leader_epoch(now.epoch)
                        .with_leader_epoch(before.epoch),
                );
            }
            let request = OffsetForLeaderEpochRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            OffsetForLeaderTopic::default()
                                .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            (items, client.send_to(leader, &request).await)
        });
        let mut losses = Vec::new();
        let mut settled = Vec::new();
        for (items, answer) in join_all(checks).await {
            let Ok(r) = answer else { continue };
            for t in &r.topics {
                for p in &t.partitions {
                    let key = (t.topic.0.to_string(), p.partition);
                    let Some((_, before, now)) = items.iter().find(|(k, ..)| *k == key) else {
                        continue;
                    };
                    if p.error_code != 0 || p.end_offset < 0 {
                        continue;
                    }
                    settled.push(key.clone());
                    let lost = (before.hw_max - p.end_offset).max(0);
                    let clean = before.isr.contains(&now.leader);
                    if (lost > 0 && before.hw_max >= 0) || !clean {
                        losses.push(Loss {
                            topic: key.0,
                            partition: key.1,
                            previous_epoch: before.epoch,
                            previous_leader: before.leader,
                            epoch: now.epoch,
                            leader: now.leader,
                            high_watermark_seen: before.hw_max,
                            end_offset: p.end_offset,
                            offsets_lost: lost,
                            clean,
                        });
                    }
                }
            }
        }
        let mut led = self.led.lock().expect("audit lock is never poisoned");
        for key in settled {
            if let Some(l) = led.get_mut(&key) {
                l.pending = None;
            }
        }
        Ok(losses)
    }
}
