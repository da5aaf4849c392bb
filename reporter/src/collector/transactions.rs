//! Open and hanging transactions, decided as `kafka-transactions.sh find-hanging`
//! decides (Apache Kafka's `TransactionsCommand`): DescribeProducers on each partition's
//! leader; a producer whose open transaction's last write is older than the maximum
//! transaction timeout is a candidate; ListTransactions maps producer ids to
//! transactional ids; DescribeTransactions asks each candidate's coordinator. A candidate
//! whose producer id maps to no transactional id, whose transactional id its coordinator
//! does not know, or whose partition is not in its transaction is hanging: no
//! coordinator will ever write its marker, and `read_committed` consumers of the
//! partition wait for ever.
//!
//! Bounded: only partitions whose last stable offset lags their high watermark can hold
//! an open transaction, at most [`MAX_PARTITIONS`] of them, in requests of at most
//! [`BATCH`] partitions, one per leader at a time. Nothing is ever aborted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use foresight_proto::v1::{ClusterSnapshot, OpenTransaction, TransactionVerdict};
use futures_util::future::join_all;
use kafka_protocol::messages::describe_producers_request::TopicRequest;
use kafka_protocol::messages::{
    DescribeProducersRequest, DescribeTransactionsRequest, FindCoordinatorRequest,
    ListTransactionsRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::{Client, ProtocolError, error_name};

/// Partitions per DescribeProducers request, as find-hanging batches them.
pub const BATCH: usize = 500;

/// Partitions examined per cycle at most; the rest wait for a later cycle.
pub const MAX_PARTITIONS: usize = 5_000;

/// Kafka's `TRANSACTIONAL_ID_NOT_FOUND`.
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// Open transactions on the lagging partitions of `snap`, each with its verdict.
///
/// # Errors
/// [`ProtocolError`] when no leader answers DescribeProducers; a leader that fails is
/// left out (its partitions are not reported) and the rest are.
pub async fn find(
    client: &Client,
    snap: &ClusterSnapshot,
    max_timeout_ms: i64,
    now_ms: i64,
) -> Result<Vec<OpenTransaction>, ProtocolError> {
    // Lagging partitions per leader.
    let mut by_leader: BTreeMap<i32, Vec<(&str, i32)>> = BTreeMap::new();
    let mut n = 0;
    for t in &snap.topics {
        for p in &t.partitions {
            if let (Some(hw), Some(lso)) = (p.high_watermark, p.last_stable_offset)
                && lso < hw
                && p.leader >= 0
                && n < MAX_PARTITIONS
            {
                by_leader
                    .entry(p.leader)
                    .or_default()
                    .push((t.name.as_str(), p.id));
                n += 1;
            }
        }
    }
    if by_leader.is_empty() {
        return Ok(Vec::new());
    }
    let leaders = by_leader.iter().map(|(leader, partitions)| async move {
        let mut open = Vec::new();
        for chunk in partitions.chunks(BATCH) {
            let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
            for (t, p) in chunk {
                topics.entry(t).or_default().push(*p);
            }
            let request = DescribeProducersRequest::default().with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TopicRequest::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partition_indexes(ps)
                    })
                    .collect(),
            );
            let response = client.send_to(*leader, &request).await?;
            for t in response.topics {
                for p in t.partitions {
                    if p.error_code != 0 {
                        tracing::debug!(topic = %t.name.0, partition = p.partition_index, error = %error_name(p.error_code), "DescribeProducers partition error.");
                        continue;
                    }
                    for s in p.active_producers {
                        if s.current_txn_start_offset < 0 {
                            continue;
                        }
                        open.push(OpenTransaction {
                            topic: t.name.0.to_string(),
                            partition: p.partition_index,
                            producer_id: s.producer_id.0,
                            producer_epoch: s.producer_epoch,
                            coordinator_epoch: s.coordinator_epoch,
                            start_offset: s.current_txn_start_offset,
                            last_timestamp_ms: s.last_timestamp,
                            leader: *leader,
                            verdict: TransactionVerdict::Open as i32,
                            ..Default::default()
                        });
                    }
                }
            }
        }
        Ok::<_, ProtocolError>(open)
    });
    let mut open = Vec::new();
    let mut last_err = None;
    let mut answered = 0;
    for r in join_all(leaders).await {
        match r {
            Ok(o) => {
                answered += 1;
                open.extend(o);
            }
            Err(e) => last_err = Some(e),
        }
    }
    if answered == 0
        && let Some(e) = last_err
    {
        return Err(e);
    }
    if open.is_empty() {
        return Ok(open);
    }
    let ids = transactional_ids(client, open.iter().map(|o| o.producer_id).collect()).await;
    for o in &mut open {
        if let Some(id) = ids.get(&o.producer_id) {
            o.transactional_id.clone_from(id);
        }
    }
    // find-hanging's candidates: the last write older than the maximum timeout.
    let candidates: BTreeSet<String> = open
        .iter()
        .filter(|o| now_ms - o.last_timestamp_ms > max_timeout_ms && !o.transactional_id.is_empty())
        .map(|o| o.transactional_id.clone())
        .collect();
    let described = describe(client, candidates).await;
    for o in &mut open {
        if now_ms - o.last_timestamp_ms <= max_timeout_ms {
            continue;
        }
        let verdict = if o.transactional_id.is_empty() {
            TransactionVerdict::Hanging
        } else {
            match described.get(&o.transactional_id) {
                Some(Described::NotFound) => TransactionVerdict::Hanging,
                Some(Described::Found { state, partitions }) => {
                    o.coordinator_state.clone_from(state);
                    if partitions.contains(&(o.topic.clone(), o.partition)) {
                        TransactionVerdict::LongOpen
                    } else {
                        TransactionVerdict::Hanging
                    }
                }
                // The coordinator could not be asked: not called hanging on a guess.
                Some(Described::Unknown(why)) => {
                    o.coordinator_state = format!("unknown: {why}");
                    TransactionVerdict::LongOpen
                }
                None => {
                    o.coordinator_state = "unknown: not asked".into();
                    TransactionVerdict::LongOpen
                }
            }
        };
        o.verdict = verdict as i32;
    }
    Ok(open)
}

/// Producer id to transactional id, from ListTransactions on every broker (each is the
/// coordinator of some transactional ids). A broker that fails leaves its ids unknown.
async fn transactional_ids(client: &Client, pids: BTreeSet<i64>) -> HashMap<i64, String> {
    let request = ListTransactionsRequest::default()
        .with_producer_id_filters(pids.iter().map(|p| ProducerId(*p)).collect());
    let brokers = client.broker_ids();
    let answers = join_all(brokers.iter().map(|b| client.send_to(*b, &request))).await;
    let mut out = HashMap::new();
    for (b, a) in brokers.iter().zip(answers) {
        match a {
            Ok(r) if r.error_code == 0 => {
                for s in r.transaction_states {
                    if pids.contains(&s.producer_id.0) {
                        out.insert(s.producer_id.0, s.transactional_id.0.to_string());
                    }
                }
            }
            Ok(r) => {
                tracing::debug!(broker = b, error = %error_name(r.error_code), "ListTransactions failed.");
            }
            Err(e) => tracing::debug!(broker = b, error = %e, "ListTransactions failed."),
        }
    }
    out
}

enum Described {
    Found {
        state: String,
        partitions: BTreeSet<(String, i32)>,
    },
    NotFound,
    Unknown(String),
}

/// DescribeTransactions at each transactional id's coordinator (FindCoordinator v4+,
/// batched by coordinator).
async fn describe(client: &Client, ids: BTreeSet<String>) -> HashMap<String, Described> {
    let mut out = HashMap::new();
    if ids.is_empty() {
        return out;
    }
    let find = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(
            ids.iter()
                .map(|i| StrBytes::from_string(i.clone()))
                .collect(),
        );
    let coordinators = match client.send_any(&find).await {
        Ok(r) => r.coordinators,
        Err(e) => {
            for id in ids {
                out.insert(id, Described::Unknown(e.to_string()));
            }
            return out;
        }
    };
    let mut by_coordinator: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in coordinators {
        let id = c.key.to_string();
        if c.error_code != 0 {
            out.insert(id, Described::Unknown(error_name(c.error_code)));
        } else {
            by_coordinator
                .entry(format!("{}:{}", c.host.as_str(), c.port))
                .or_default()
                .push(id);
        }
    }
    let asks = by_coordinator.into_iter().map(|(addr, ids)| async move {
        let request = DescribeTransactionsRequest::default().with_transactional_ids(
            ids.iter()
                .map(|i| TransactionalId(StrBytes::from_string(i.clone())))
                .collect(),
        );
        (ids.clone(), client.send_addr(&addr, &request).await)
    });
    for (ids, answer) in join_all(asks).await {
        match answer {
            Ok(r) => {
                for s in r.transaction_states {
                    let id = s.transactional_id.0.to_string();
                    let d = match s.error_code {
                        0 => Described::Found {
                            state: s.transaction_state.to_string(),
                            partitions: s
                                .topics
                                .iter()
                                .flat_map(|t| {
                                    t.partitions.iter().map(|p| (t.topic.0.to_string(), *p))
                                })
                                .collect(),
                        },
                        TRANSACTIONAL_ID_NOT_FOUND => Described::NotFound,
                        code => Described::Unknown(error_name(code)),
                    };
                    out.insert(id, d);
                }
            }
            Err(e) => {
                for id in ids {
                    out.insert(id, Described::Unknown(e.to_string()));
                }
            }
        }
    }
    out
}
