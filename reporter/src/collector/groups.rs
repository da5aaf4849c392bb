//! Groups by type, each described with the RPC made for it: ListGroups (v5 gives the
//! type) on every broker, then at the broker that listed it (its coordinator)
//! DescribeGroups for a classic group, ConsumerGroupDescribe for a KIP-848 consumer
//! group and ShareGroupDescribe for a share group, whose share-partition start offsets
//! and lags come from DescribeShareGroupOffsets (the lag from v1, Kafka 4.2).
//!
//! The classic DescribeGroups answers for a KIP-848 group with `GROUP_ID_NOT_FOUND`,
//! which librdkafka's group list passes on as a `Dead` group without members: a busy
//! group would look abandoned. Here an error is the group's error, kept in
//! [`ConsumerGroup::error`], and never a state or a member count.

use std::collections::{BTreeMap, BTreeSet};

use foresight_proto::v1::{ConsumerGroup, GroupMember, GroupOffset};
use futures_util::future::join_all;
use kafka_protocol::messages::consumer_group_describe_response::Assignment;
use kafka_protocol::messages::describe_share_group_offsets_request::DescribeShareGroupOffsetsRequestGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, DescribeGroupsRequest, DescribeShareGroupOffsetsRequest, GroupId,
    ListGroupsRequest, ShareGroupDescribeRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::{Client, ProtocolError, error_name};

/// A group as ListGroups lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The broker that listed it: its coordinator.
    pub coordinator: i32,
    /// Its id.
    pub name: String,
    /// `classic`, `consumer`, `share` or `streams` (`classic` from a broker older than
    /// ListGroups v5, which has no other kind).
    pub protocol: String,
    /// The embedded protocol of a classic group (`consumer`, `connect`, …).
    pub protocol_type: String,
    /// The state ListGroups v4+ gives; empty before.
    pub state: String,
}

/// Whether Foresight reports a listed group: every consumer, share and streams group,
/// and the classic groups of consumers (not, say, Connect's workers).
fn is_reported(g: &Listed) -> bool {
    match g.protocol.as_str() {
        "classic" => g.protocol_type == "consumer" || g.protocol_type.is_empty(),
        _ => true,
    }
}

/// Every group the brokers coordinate, at most `limit` of those reported (by name), from
/// ListGroups on each of `brokers`.
///
/// # Errors
/// The first broker's error when no broker answered.
pub async fn list(
    client: &Client,
    brokers: &[i32],
    limit: usize,
) -> Result<Vec<Listed>, ProtocolError> {
    let request = ListGroupsRequest::default();
    let answers = join_all(brokers.iter().map(|b| client.send_to(*b, &request))).await;
    let mut out = Vec::new();
    let mut first_error = None;
    let mut answered = false;
    for (broker, answer) in brokers.iter().zip(answers) {
        match answer {
            Ok(r) if r.error_code == 0 => {
                answered = true;
                out.extend(r.groups.into_iter().map(|g| Listed {
                    coordinator: *broker,
                    name: g.group_id.0.to_string(),
                    protocol: match g.group_type.as_str() {
                        "" => "classic".to_string(),
                        t => t.to_ascii_lowercase(),
                    },
                    protocol_type: g.protocol_type.to_string(),
                    state: g.group_state.to_string(),
                }));
            }
            Ok(r) => {
                // A coordinator still loading its groups: they are back next cycle.
                tracing::debug!(broker, error = %error_name(r.error_code), "ListGroups failed.");
                first_error.get_or_insert(ProtocolError::NoBroker(format!(
                    "ListGroups on broker {broker}: {}",
                    error_name(r.error_code)
                )));
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "ListGroups failed.");
                first_error.get_or_insert(e);
            }
        }
    }
    if !answered {
        return Err(first_error
            .unwrap_or_else(|| ProtocolError::NoBroker("no broker to list groups on".into())));
    }
    out.retain(is_reported);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    // A group moving between coordinators can be listed twice for a moment.
    out.dedup_by(|a, b| a.name == b.name);
    if out.len() > limit {
        tracing::warn!(
            limit,
            "More consumer groups than kafka.max_consumer_groups; the rest left out."
        );
        out.truncate(limit);
    }
    Ok(out)
}

/// Describes each of `listed` at its coordinator with the RPC of its type. A group whose
/// coordinator fails (or a type this agent cannot describe) keeps ListGroups' state,
/// with the reason in `error`.
pub async fn describe(client: &Client, listed: &[Listed]) -> Vec<ConsumerGroup> {
    let mut batches: BTreeMap<(i32, &str), Vec<&Listed>> = BTreeMap::new();
    for g in listed {
        batches
            .entry((g.coordinator, g.protocol.as_str()))
            .or_default()
            .push(g);
    }
    let asks = batches
        .into_iter()
        .map(|((broker, protocol), groups)| async move {
            let ids: Vec<GroupId> = groups
                .iter()
                .map(|g| GroupId(StrBytes::from_string(g.name.clone())))
                .collect();
            let described = match protocol {
                "classic" => classic(client, broker, ids).await,
                "consumer" => consumer(client, broker, ids).await,
                "share" => share(client, broker, ids).await,
                other => Err(format!(
                    "{other} groups are not described by this agent yet"
                )),
            };
            (groups, described)
        });
    let mut out = Vec::new();
    for (groups, described) in join_all(asks).await {
        match described {
            Ok(mut by_name) => {
                for g in groups {
                    let d = by_name.remove(&g.name).unwrap_or_else(|| ConsumerGroup {
                        error: "its coordinator did not describe it".into(),
                        ..Default::default()
                    });
                    out.push(finish(g, d));
                }
            }
            Err(e) => {
                for g in groups {
                    let d = ConsumerGroup {
                        error: e.clone(),
                        ..Default::default()
                    };
                    out.push(finish(g, d));
                }
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `described` named and typed as `listed`, with ListGroups' state where the describe
/// failed.
fn finish(listed: &Listed, mut described: ConsumerGroup) -> ConsumerGroup {
    described.name = listed.name.clone();
    described.protocol = listed.protocol.clone();
    if !described.error.is_empty() {
        described.state = listed.state.clone();
        described.members = 0;
        described.member_details.clear();
    }
    described
}

/// A group its coordinator could not describe: Kafka's error name, and its message
/// where it sent one.
fn failed(code: i16, message: Option<&StrBytes>) -> ConsumerGroup {
    let error = match message.map(|m| m.as_str()).filter(|m| !m.is_empty()) {
        Some(m) => format!("{}: {m}", error_name(code)),
        None => error_name(code),
    };
    ConsumerGroup {
        error,
        ..Default::default()
    }
}

/// A consumer or share group as its coordinator described it.
fn described(
    state: &StrBytes,
    group_epoch: i32,
    assignment_epoch: i32,
    member_details: Vec<GroupMember>,
) -> ConsumerGroup {
    ConsumerGroup {
        state: state.to_string(),
        members: member_details.len() as i32,
        group_epoch,
        assignment_epoch,
        member_details,
        ..Default::default()
    }
}

type Described = Result<BTreeMap<String, ConsumerGroup>, String>;

/// `request` to `broker`; a failure is every group's error, as a message.
async fn ask<R: kafka_protocol::protocol::Request>(
    client: &Client,
    broker: i32,
    request: &R,
) -> Result<R::Response, String> {
    client
        .send_to(broker, request)
        .await
        .map_err(|e| e.to_string())
}

async fn classic(client: &Client, broker: i32, ids: Vec<GroupId>) -> Described {
    let r = ask(
        client,
        broker,
        &DescribeGroupsRequest::default().with_groups(ids),
    )
    .await?;
    Ok(r.groups
        .into_iter()
        .map(|g| {
            let name = g.group_id.0.to_string();
            let d = match g.error_code {
                0 => ConsumerGroup {
                    state: g.group_state.to_string(),
                    members: g.members.len() as i32,
                    ..Default::default()
                },
                code => failed(code, g.error_message.as_ref()),
            };
            (name, d)
        })
        .collect())
}

/// The partitions of an assignment, by topic id.
fn partitions(a: &Assignment) -> BTreeSet<(u128, i32)> {
    a.topic_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.topic_id.as_u128(), *p)))
        .collect()
}

async fn consumer(client: &Client, broker: i32, ids: Vec<GroupId>) -> Described {
    let r = ask(
        client,
        broker,
        &ConsumerGroupDescribeRequest::default().with_group_ids(ids),
    )
    .await?;
    Ok(r.groups
        .into_iter()
        .map(|g| {
            let name = g.group_id.0.to_string();
            if g.error_code != 0 {
                return (name, failed(g.error_code, g.error_message.as_ref()));
            }
            let member_details: Vec<GroupMember> = g
                .members
                .iter()
                .map(|m| {
                    let assigned = partitions(&m.assignment);
                    GroupMember {
                        member_id: m.member_id.to_string(),
                        client_id: m.client_id.to_string(),
                        client_host: m.client_host.to_string(),
                        member_epoch: m.member_epoch,
                        reconciled: m.member_epoch == g.assignment_epoch
                            && assigned == partitions(&m.target_assignment),
                        partitions: assigned.len() as i32,
                    }
                })
                .collect();
            let group = described(
                &g.group_state,
                g.group_epoch,
                g.assignment_epoch,
                member_details,
            );
            (name, group)
        })
        .collect())
}

async fn share(client: &Client, broker: i32, ids: Vec<GroupId>) -> Described {
    let names: Vec<String> = ids.iter().map(|i| i.0.to_string()).collect();
    let r = ask(
        client,
        broker,
        &ShareGroupDescribeRequest::default().with_group_ids(ids),
    )
    .await?;
    // The offsets are the group's backlog: without them a share group is still
    // described, its lag unknown (the reason logged once a cycle at debug).
    let mut offsets = share_offsets(client, broker, &names)
        .await
        .unwrap_or_else(|e| {
            tracing::debug!(broker, error = %e, "DescribeShareGroupOffsets failed.");
            BTreeMap::new()
        });
    let mut described: BTreeMap<String, ConsumerGroup> = r
        .groups
        .into_iter()
        .map(|g| {
            let name = g.group_id.0.to_string();
            if g.error_code != 0 {
                return (name, failed(g.error_code, g.error_message.as_ref()));
            }
            let member_details: Vec<GroupMember> = g
                .members
                .iter()
                .map(|m| GroupMember {
                    member_id: m.member_id.to_string(),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    member_epoch: m.member_epoch,
                    // Share groups assign without revocation: no target to reach.
                    reconciled: true,
                    partitions: m
                        .assignment
                        .topic_partitions
                        .iter()
                        .map(|t| t.partitions.len() as i32)
                        .sum(),
                })
                .collect();
            let group = described(
                &g.group_state,
                g.group_epoch,
                g.assignment_epoch,
                member_details,
            );
            (name, group)
        })
        .collect();
    for (name, g) in &mut described {
        if let Some(o) = offsets.remove(name) {
            g.offsets = o;
        }
    }
    Ok(described)
}

/// The share-partition start offsets of `groups` (share groups coordinated by
/// `broker`), with the coordinator's lag where it gives one (v1). A partition not yet
/// initialized (no record delivered to the group) or in error is left out.
async fn share_offsets(
    client: &Client,
    broker: i32,
    groups: &[String],
) -> Result<BTreeMap<String, Vec<GroupOffset>>, ProtocolError> {
    let request = DescribeShareGroupOffsetsRequest::default().with_groups(
        groups
            .iter()
            .map(|g| {
                // No topics: every topic the group has offsets for.
                DescribeShareGroupOffsetsRequestGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(g.clone())))
                    .with_topics(None)
            })
            .collect(),
    );
    let r = client.send_to(broker, &request).await?;
    let mut out = BTreeMap::new();
    for g in r.groups {
        if g.error_code != 0 {
            tracing::debug!(group = %g.group_id.as_str(), error = %error_name(g.error_code), "DescribeShareGroupOffsets failed for a group.");
            continue;
        }
        let offsets: Vec<GroupOffset> = g
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .filter(|p| p.error_code == 0 && p.start_offset >= 0)
                    .map(|p| GroupOffset {
                        topic: t.topic_name.0.to_string(),
                        partition: p.partition_index,
                        offset: p.start_offset,
                        lag: (p.lag >= 0).then_some(p.lag),
                    })
            })
            .collect();
        out.insert(g.group_id.to_string(), offsets);
    }
    Ok(out)
}

/// `described` with each group's committed offsets taken from `committed` (librdkafka's
/// OffsetFetch, which serves classic and consumer groups alike), by name.
pub fn with_offsets(
    mut described: Vec<ConsumerGroup>,
    committed: &[ConsumerGroup],
) -> Vec<ConsumerGroup> {
    let offsets: BTreeMap<&str, &ConsumerGroup> =
        committed.iter().map(|g| (g.name.as_str(), g)).collect();
    for g in &mut described {
        // A share group's offsets are its share-partition start offsets, already here.
        if let Some(c) = offsets.get(g.name.as_str())
            && g.protocol != "share"
        {
            g.offsets = c.offsets.clone();
        }
    }
    described
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(protocol: &str, protocol_type: &str) -> Listed {
        Listed {
            coordinator: 1,
            name: "g".into(),
            protocol: protocol.into(),
            protocol_type: protocol_type.into(),
            state: "Stable".into(),
        }
    }

    #[test]
    fn consumer_share_and_classic_consumer_groups_are_reported_connect_workers_not() {
        assert!(is_reported(&listed("consumer", "consumer")));
        assert!(is_reported(&listed("share", "share")));
        assert!(is_reported(&listed("classic", "consumer")));
        assert!(is_reported(&listed("classic", "")));
        assert!(!is_reported(&listed("classic", "connect")));
    }

    #[test]
    fn a_group_that_could_not_be_described_keeps_its_listed_state_and_no_members() {
        let d = ConsumerGroup {
            error: "GroupIdNotFound".into(),
            members: 3,
            ..Default::default()
        };
        let g = finish(&listed("consumer", "consumer"), d);
        assert_eq!(g.state, "Stable");
        assert_eq!(g.members, 0);
        assert_eq!(g.protocol, "consumer");
        assert_eq!(g.error, "GroupIdNotFound");
    }
}
