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
//! lost nothing is no finding. A high watermark that stays below the highest one seen
//! for [`REGRESSED_AFTER`] cycles once the epoch's end is checked is a loss too (a new
//! leader's high watermark may lag for a moment after a clean election: that is not).
//!
//! A log start offset that advances must be explained: time retention (the leader's
//! first offset newer than `retention.ms` is at or past the new start), size retention
//! (the leader's replica was larger than `retention.bytes`), or a topic recreated under
//! the same name. The agent adds DeleteRecords where the broker's request metrics show
//! one; what is left is unexplained.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use foresight_proto::v1::ClusterSnapshot;
use futures_util::future::join_all;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, ListOffsetsRequest, MetadataRequest, OffsetForLeaderEpochRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::{Client, ProtocolError};

/// The series a finding becomes (valued at the offsets lost).
pub const METRIC_NAME: &str = "kafka_partition_acknowledged_offsets_lost";

/// The series an unexplained log start offset move becomes (valued at the offsets
/// removed).
pub const UNEXPLAINED_METRIC_NAME: &str = "kafka_partition_log_start_offset_unexplained_offsets";

/// Cycles a pending check is retried while the new leader cannot answer yet.
const TRIES: u8 = 10;

/// Cycles a high watermark must stay below the highest seen to be a loss.
pub const REGRESSED_AFTER: u8 = 3;

/// How a loss was found.
pub mod check {
    /// The new leader ends the previous epoch below its high watermark.
    pub const EPOCH_END: &str = "epoch_end";
    /// The new leader was not in the last ISR seen (whatever it lost).
    pub const UNCLEAN_ELECTION: &str = "unclean_election";
    /// The high watermark stayed below the highest seen.
    pub const HIGH_WATERMARK_REGRESSED: &str = "high_watermark_regressed";
    /// The new leader was not in the last ISR seen but among its eligible leader
    /// replicas (KIP-966): outside the ISR, and clean by design.
    pub const ELIGIBLE_LEADER_REPLICA: &str = "eligible_leader_replica";
}

/// A log start offset that advanced, with what explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader, whose request metrics may show a DeleteRecords.
    pub leader: i32,
    /// The previous log start offset.
    pub from: i64,
    /// The new one.
    pub to: i64,
    /// `retention.ms`, `retention.bytes` or `recreated`; `None` when nothing the agent
    /// asked explains it.
    pub explanation: Option<&'static str>,
}

/// What one audit cycle found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Acknowledged records gone, or an unclean election.
    pub losses: Vec<Loss>,
    /// Log start offsets that advanced.
    pub moves: Vec<Move>,
}

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
    /// Which check found it ([`check`]).
    pub check: &'static str,
}

#[derive(Debug, Clone)]
struct Led {
    topic_id: [u8; 16],
    epoch: i32,
    leader: i32,
    isr: Vec<i32>,
    /// Eligible leader replicas (KIP-966) as the snapshot had them: replicas out of the
    /// ISR that an election may pick without loss.
    elr: Vec<i32>,
    hw_max: i64,
    /// The highest high watermark seen under any epoch of this topic id, and its epoch.
    hw_best: (i64, i32),
    /// Consecutive cycles the high watermark was below `hw_best`.
    below: u8,
    /// The log start offset last seen, -1 before.
    log_start: i64,
    /// The epoch before this one, while its end has not been checked.
    pending: Option<(Box<Led>, u8)>,
}

impl Led {
    /// Follows the high watermark: a loss once it stayed below the best seen for
    /// [`REGRESSED_AFTER`] cycles, unless an epoch's end is still being checked.
    fn follow_hw(&mut self, key: &(String, i32), hw: Option<i64>) -> Option<Loss> {
        let hw = hw?;
        if hw >= self.hw_best.0 {
            self.hw_best = (hw, self.epoch);
            self.below = 0;
            return None;
        }
        if self.pending.is_some() {
            return None;
        }
        self.below += 1;
        if self.below < REGRESSED_AFTER {
            return None;
        }
        let (best, best_epoch) = self.hw_best;
        self.hw_best = (hw, self.epoch);
        self.below = 0;
        Some(Loss {
            topic: key.0.clone(),
            partition: key.1,
            previous_epoch: best_epoch,
            previous_leader: self.leader,
            epoch: self.epoch,
            leader: self.leader,
            high_watermark_seen: best,
            end_offset: hw,
            offsets_lost: best - hw,
            clean: true,
            check: check::HIGH_WATERMARK_REGRESSED,
        })
    }
}

/// A check to make: the partition, its previous epoch, its current one.
type Ask = ((String, i32), Led, Led);

/// What the audit remembers between cycles.
#[derive(Default)]
pub struct Audit {
    led: Mutex<HashMap<(String, i32), Led>>,
    /// Each partition's leader replica size in the last cycle that had log dirs.
    sizes: Mutex<HashMap<(String, i32), i64>>,
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
        now_ms: i64,
    ) -> Result<Findings, ProtocolError> {
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
        let elrs: HashMap<(&str, i32), &[i32]> = snap
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().filter(|p| p.elr_known).map(move |p| {
                    (
                        (t.name.as_str(), p.id),
                        p.eligible_leader_replicas.as_slice(),
                    )
                })
            })
            .collect();
        let starts: HashMap<(&str, i32), i64> = snap
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter_map(move |p| Some(((t.name.as_str(), p.id), p.log_start_offset?)))
            })
            .collect();
        // (new leader) -> checks to ask it.
        let mut asks: BTreeMap<i32, Vec<Ask>> = BTreeMap::new();
        let mut found = Findings::default();
        let mut moved: Vec<Move> = Vec::new();
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
                    let start = starts.get(&(name.as_str(), p.partition_index)).copied();
                    let now = Led {
                        topic_id: *t.topic_id.as_bytes(),
                        epoch: p.leader_epoch,
                        leader,
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        elr: elrs
                            .get(&(name.as_str(), p.partition_index))
                            .map(|e| e.to_vec())
                            .unwrap_or_default(),
                        hw_max: seen.unwrap_or(-1),
                        hw_best: (seen.unwrap_or(-1), p.leader_epoch),
                        below: 0,
                        log_start: start.unwrap_or(-1),
                        pending: None,
                    };
                    if let (Some(prev), Some(to)) = (led.get_mut(&key), start) {
                        if prev.log_start >= 0 && to != prev.log_start {
                            let recreated = prev.topic_id != now.topic_id;
                            if recreated || to > prev.log_start {
                                moved.push(Move {
                                    topic: name.clone(),
                                    partition: p.partition_index,
                                    leader,
                                    from: prev.log_start,
                                    to,
                                    explanation: recreated.then_some("recreated"),
                                });
                            }
                        }
                        prev.log_start = to;
                    }
                    match led.get_mut(&key) {
                        Some(prev) if prev.topic_id == now.topic_id && now.epoch == prev.epoch => {
                            prev.hw_max = prev.hw_max.max(now.hw_max);
                            prev.isr = now.isr;
                            if let Some(loss) = prev.follow_hw(&key, seen) {
                                found.losses.push(loss);
                            }
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
                            next.hw_best = before.hw_best;
                            next.log_start = before.log_start;
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
        let explain = self.explain(client, snap, moved, now_ms);
        let (answers, moves) = tokio::join!(join_all(checks), explain);
        found.moves = moves;
        let mut settled = Vec::new();
        for (items, answer) in answers {
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
                    let lost = (before.hw_max - p.end_offset).max(0);
                    // A leader from the eligible leader replicas is outside the ISR
                    // and clean: KIP-966 keeps there only replicas with every committed
                    // record. It is recorded, as an election outside the ISR.
                    let from_elr =
                        !before.isr.contains(&now.leader) && before.elr.contains(&now.leader);
                    let clean = before.isr.contains(&now.leader) || from_elr;
                    settled.push((key.clone(), (lost > 0).then_some(p.end_offset)));
                    if (lost > 0 && before.hw_max >= 0) || !clean || from_elr {
                        found.losses.push(Loss {
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
                            check: if lost > 0 {
                                check::EPOCH_END
                            } else if from_elr {
                                check::ELIGIBLE_LEADER_REPLICA
                            } else {
                                check::UNCLEAN_ELECTION
                            },
                        });
                    }
                }
            }
        }
        let mut led = self.led.lock().expect("audit lock is never poisoned");
        for (key, end) in settled {
            if let Some(l) = led.get_mut(&key) {
                l.pending = None;
                // What the loss left is the new truth, not a second loss.
                if let Some(end) = end {
                    l.hw_best = (end, l.epoch);
                }
            }
        }
        drop(led);
        if !snap.log_dirs.is_empty() {
            let leaders: HashMap<(&str, i32), i32> = snap
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .map(move |p| ((t.name.as_str(), p.id), p.leader))
                })
                .collect();
            let mut sizes = self.sizes.lock().expect("sizes lock is never poisoned");
            sizes.clear();
            for d in &snap.log_dirs {
                for r in d.replicas.iter().filter(|r| !r.is_future) {
                    if leaders.get(&(r.topic.as_str(), r.partition)) == Some(&d.broker) {
                        sizes.insert((r.topic.clone(), r.partition), r.size_bytes);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Explains each move by the topic's retention, asking the leaders for the first
    /// offset newer than `retention.ms` where time could explain it. Moves of topics
    /// whose configs the cycle lacks are dropped: they can be neither explained nor
    /// blamed.
    async fn explain(
        &self,
        client: &Client,
        snap: &ClusterSnapshot,
        moved: Vec<Move>,
        now_ms: i64,
    ) -> Vec<Move> {
        let configs: HashMap<&str, &BTreeMap<String, String>> = snap
            .topics
            .iter()
            .map(|t| (t.name.as_str(), &t.configs))
            .collect();
        let sizes = self
            .sizes
            .lock()
            .expect("sizes lock is never poisoned")
            .clone();
        let mut out = Vec::new();
        // leader -> (move index, the cutoff timestamp)
        let mut by_time: BTreeMap<i32, Vec<(usize, i64)>> = BTreeMap::new();
        for mut m in moved {
            if m.explanation.is_some() {
                out.push(m);
                continue;
            }
            let Some(c) = configs.get(m.topic.as_str()).filter(|c| !c.is_empty()) else {
                continue;
            };
            let num = |k: &str| c.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(-1);
            let deletes = c
                .get("cleanup.policy")
                .is_none_or(|p| p.split(',').any(|p| p.trim() == "delete"));
            if deletes {
                let bytes = num("retention.bytes");
                let size = sizes.get(&(m.topic.clone(), m.partition));
                if bytes >= 0 && size.is_none_or(|s| *s > bytes) {
                    m.explanation = Some("retention.bytes");
                } else if num("retention.ms") >= 0 {
                    by_time
                        .entry(m.leader)
                        .or_default()
                        .push((out.len(), now_ms - num("retention.ms")));
                }
            }
            out.push(m);
        }
        let asks = by_time.into_iter().map(|(leader, items)| {
            let request = first_offsets_after(&out, &items);
            async move { (items, client.send_to(leader, &request).await) }
        });
        for (items, answer) in join_all(asks).await {
            let Ok(r) = answer else { continue };
            for (i, _) in items {
                let m = &out[i];
                let first_newer = r
                    .topics
                    .iter()
                    .filter(|t| t.name.0.as_str() == m.topic)
                    .flat_map(|t| &t.partitions)
                    .find(|p| p.partition_index == m.partition && p.error_code == 0)
                    .map(|p| p.offset);
                // -1: no record is newer than the cutoff, so all were old enough.
                if first_newer.is_some_and(|o| o == -1 || o >= m.to) {
                    out[i].explanation = Some("retention.ms");
                }
            }
        }
        out
    }
}

/// ListOffsets by timestamp for the moves at `items`: each partition's first offset
/// whose timestamp is at or after its cutoff.
fn first_offsets_after(moves: &[Move], items: &[(usize, i64)]) -> ListOffsetsRequest {
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for (i, cutoff) in items {
        let m = &moves[*i];
        topics.entry(m.topic.as_str()).or_default().push(
            ListOffsetsPartition::default()
                .with_partition_index(m.partition)
                .with_timestamp(*cutoff),
        );
    }
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(epoch: i32, hw: i64) -> Led {
        Led {
            topic_id: [0; 16],
            epoch,
            leader: 1,
            isr: vec![1, 2],
            elr: vec![],
            hw_max: hw,
            hw_best: (hw, epoch),
            below: 0,
            log_start: 0,
            pending: None,
        }
    }

    #[test]
    fn a_high_watermark_below_the_best_is_a_loss_only_when_it_stays() {
        let key = ("t".to_string(), 0);
        let mut l = led(3, 100);
        // A moment behind, then caught up: nothing.
        assert_eq!(l.follow_hw(&key, Some(90)), None);
        assert_eq!(l.follow_hw(&key, Some(100)), None);
        assert_eq!(l.below, 0);
        // While an epoch's end is being checked, the check speaks, not this.
        l.pending = Some((Box::new(led(2, 100)), 3));
        for _ in 0..REGRESSED_AFTER + 1 {
            assert_eq!(l.follow_hw(&key, Some(93)), None);
        }
        l.pending = None;
        let mut found = None;
        for _ in 0..REGRESSED_AFTER {
            found = found.or(l.follow_hw(&key, Some(93)));
        }
        let loss = found.expect("below for REGRESSED_AFTER cycles");
        assert_eq!(
            (
                loss.offsets_lost,
                loss.high_watermark_seen,
                loss.end_offset,
                loss.check
            ),
            (7, 100, 93, check::HIGH_WATERMARK_REGRESSED)
        );
        // Said once: the lower mark is the new truth.
        for _ in 0..REGRESSED_AFTER * 2 {
            assert_eq!(l.follow_hw(&key, Some(93)), None);
        }
        assert_eq!(l.follow_hw(&key, None), None, "no reading, no judgement");
    }

    #[test]
    fn time_checks_ask_each_partition_for_its_cutoff() {
        let moves = vec![
            Move {
                topic: "a".into(),
                partition: 0,
                leader: 1,
                from: 0,
                to: 10,
                explanation: None,
            },
            Move {
                topic: "a".into(),
                partition: 3,
                leader: 1,
                from: 5,
                to: 9,
                explanation: None,
            },
        ];
        let r = first_offsets_after(&moves, &[(0, 1_000), (1, 2_000)]);
        assert_eq!(r.topics.len(), 1);
        let p: Vec<(i32, i64)> = r.topics[0]
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.timestamp))
            .collect();
        assert_eq!(p, [(0, 1_000), (3, 2_000)]);
    }
}
