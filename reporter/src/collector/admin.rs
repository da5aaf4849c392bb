//! What only the Kafka protocol's admin RPCs tell, over the second client
//! ([`crate::protocol`]): the KRaft quorum (DescribeQuorum), the brokers' racks
//! (DescribeCluster), log dirs, versions and configs ([`super::cluster_facts`]), groups
//! by type ([`super::groups`]), open and hanging transactions ([`super::transactions`])
//! and the durability audit ([`super::durability`]).
//!
//! Each part fails alone: a broker that lacks an API, or a cluster that does not answer,
//! leaves that part out of the snapshot, says so once in the log, and shows as
//! `foresight_agent_protocol_up{part=…} 0`; the rest of the cycle goes on.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foresight_proto::v1::{ClusterSnapshot, Quorum, QuorumReplica};
use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{DescribeClusterRequest, DescribeQuorumRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::config::KafkaConfig;
use crate::protocol::{Client, ProtocolError, error_name};

/// The parts, as the `part` label of `foresight_agent_protocol_up` names them.
pub const PARTS: &[&str] = &[
    "quorum",
    "cluster",
    "log_dirs",
    "facts",
    "groups",
    "elr",
    "transactions",
    "durability",
];

/// Kafka's default `transaction.max.timeout.ms` (15 minutes), used until the brokers'
/// own value is read; it is also find-hanging's default.
pub const DEFAULT_MAX_TRANSACTION_TIMEOUT_MS: i64 = 900_000;

/// How often the brokers' versions and configs are read again: they change with a
/// rolling restart or an operator's hand, and DescribeConfigs of every key is the
/// largest answer a broker gives after DescribeLogDirs.
const FACTS_EVERY: Duration = Duration::from_secs(300);

/// The brokers' facts as last read, when, and which brokers were asked.
type FactsCache = (
    Option<Instant>,
    Vec<foresight_proto::v1::BrokerFacts>,
    BTreeMap<String, i32>,
    Vec<i32>,
);

/// How one part went this cycle.
#[derive(Debug, Clone)]
pub struct PartStatus {
    /// One of [`PARTS`].
    pub part: &'static str,
    /// `None` when it answered.
    pub error: Option<String>,
    /// Wall time it took.
    pub seconds: f64,
}

/// What a cycle of admin requests found besides what it put in the snapshot.
#[derive(Debug, Default)]
pub struct Findings {
    /// How each part went.
    pub parts: Vec<PartStatus>,
    /// The durability audit's findings ([`super::durability`]).
    pub losses: Vec<super::durability::Loss>,
    /// Log start offsets that advanced, explained where the audit could.
    pub moves: Vec<super::durability::Move>,
}

/// The second client and what it remembers between cycles.
pub struct AdminCollector {
    client: Option<Client>,
    /// Why there is no client (a setting it cannot honour), said once.
    disabled: Option<String>,
    facts: Mutex<FactsCache>,
    /// Whether DescribeQuorum has answered before: from then on, a cluster whose brokers
    /// cannot describe the quorum in time (they forward it to an active controller
    /// there is none of) has no leader, rather than no quorum.
    quorum_seen: std::sync::atomic::AtomicBool,
    /// The bound on the quorum request, all brokers tried included.
    timeout: Duration,
    /// `kafka.max_consumer_groups`.
    max_groups: usize,
    audit: super::durability::Audit,
    /// Per part, the error last logged, so that a failure is said once, not per cycle.
    said: Mutex<BTreeMap<&'static str, String>>,
}

impl AdminCollector {
    /// The collector for `cfg`. Settings the client cannot honour do not fail the
    /// agent: the admin parts are then off, and say why.
    pub fn new(cfg: &KafkaConfig) -> Self {
        let timeout = Duration::from_millis(cfg.request_timeout_ms);
        let (client, disabled) = match Client::new(&cfg.bootstrap_servers, &cfg.properties, timeout)
        {
            Ok(c) => (Some(c), None),
            Err(e) => {
                tracing::warn!(error = %e, "The Kafka admin requests (quorum, hanging transactions) are off.");
                (None, Some(e.to_string()))
            }
        };
        AdminCollector {
            client,
            disabled,
            facts: Mutex::new((None, Vec::new(), BTreeMap::new(), Vec::new())),
            quorum_seen: false.into(),
            audit: Default::default(),
            timeout,
            max_groups: cfg.max_consumer_groups,
            said: Mutex::new(BTreeMap::new()),
        }
    }

    /// Why the admin requests are off (a setting the client cannot honour), if they are.
    pub fn disabled(&self) -> Option<&str> {
        self.disabled.as_deref()
    }

    /// The client, for embedders and tests that ask the cluster themselves.
    pub fn client(&self) -> Option<&Client> {
        self.client.as_ref()
    }

    /// Adds the quorum, racks and open transactions to `snap`, and audits its leader
    /// changes.
    pub async fn enrich(&self, snap: &mut ClusterSnapshot, now_ms: i64) -> Findings {
        let Some(client) = &self.client else {
            let why = self.disabled.clone().unwrap_or_default();
            return Findings {
                parts: PARTS
                    .iter()
                    .map(|part| PartStatus {
                        part,
                        error: Some(why.clone()),
                        seconds: 0.0,
                    })
                    .collect(),
                ..Default::default()
            };
        };
        client.set_brokers(
            snap.brokers
                .iter()
                .map(|b| (b.id, format!("{}:{}", b.host, b.port))),
        );
        let mut out = Vec::new();
        let describe_cluster = DescribeClusterRequest::default();
        let bounded = async {
            tokio::time::timeout(self.timeout, describe_quorum(client))
                .await
                .unwrap_or_else(|_| {
                    Err(ProtocolError::NoBroker(format!(
                        "no broker described the quorum within {} ms",
                        self.timeout.as_millis()
                    )))
                })
        };
        let brokers: Vec<i32> = snap.brokers.iter().map(|b| b.id).collect();
        let (
            (quorum, quorum_secs),
            (cluster, cluster_secs),
            (dirs, dirs_secs),
            (facts, facts_secs),
            (groups, groups_secs),
        ) = tokio::join!(
            timed(bounded),
            timed(client.send_any(&describe_cluster)),
            timed(super::cluster_facts::log_dirs(client, &brokers)),
            timed(self.broker_facts(client, &brokers)),
            timed(async {
                let listed = super::groups::list(client, &brokers, self.max_groups).await?;
                Ok::<_, ProtocolError>(super::groups::describe(client, &listed).await)
            }),
        );
        out.push(self.status("quorum", quorum.as_ref().err(), quorum_secs));
        use std::sync::atomic::Ordering;
        match quorum {
            Ok(q) => {
                self.quorum_seen.store(true, Ordering::Relaxed);
                if q.leader_id >= 0 {
                    snap.controller_id = q.leader_id;
                }
                snap.quorum = Some(q);
            }
            Err(e) if !e.is_unsupported_api() && self.quorum_seen.load(Ordering::Relaxed) => {
                // Kafka's REQUEST_TIMED_OUT: asked, and no answer from a leader.
                snap.quorum = Some(Quorum {
                    leader_id: -1,
                    error_code: 7,
                    ..Default::default()
                });
            }
            Err(_) => {}
        }
        let cluster_err = match cluster {
            Ok(r) if r.error_code == 0 => {
                for b in &mut snap.brokers {
                    if let Some(d) = r.brokers.iter().find(|d| d.broker_id.0 == b.id)
                        && let Some(rack) = &d.rack
                    {
                        b.rack = rack.to_string();
                    }
                }
                None
            }
            Ok(r) => Some(format!(
                "DescribeCluster: {}",
                r.error_message
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| error_name(r.error_code))
            )),
            Err(e) => Some(e.to_string()),
        };
        out.push(self.status_msg("cluster", cluster_err, cluster_secs));
        out.push(self.status("log_dirs", dirs.as_ref().err(), dirs_secs));
        if let Ok(d) = dirs {
            snap.log_dirs = d;
        }
        out.push(self.status("facts", facts.err().as_ref(), facts_secs));
        out.push(self.status("groups", groups.as_ref().err(), groups_secs));
        if let Ok(described) = groups {
            // librdkafka's view (ListGroups and the classic DescribeGroups) gave the
            // committed offsets, which OffsetFetch serves for every protocol; its states
            // and member counts are wrong for KIP-848 groups and give way here.
            snap.groups = super::groups::with_offsets(described, &snap.groups);
        }
        let (max_timeout, broker_facts, features) = {
            let cache = self.facts.lock().expect("facts lock is never poisoned");
            let max = cache
                .1
                .iter()
                .filter_map(|f| {
                    f.configs
                        .get("transaction.max.timeout.ms")?
                        .parse::<i64>()
                        .ok()
                })
                .min()
                .unwrap_or(DEFAULT_MAX_TRANSACTION_TIMEOUT_MS);
            (max, cache.1.clone(), cache.2.clone())
        };
        snap.broker_facts = broker_facts;
        snap.finalized_features = features.into_iter().collect();
        let started = Instant::now();
        let elr = super::elr::describe(client, snap).await;
        out.push(self.status("elr", elr.as_ref().err(), started.elapsed().as_secs_f64()));
        let started = Instant::now();
        snap.transaction_max_timeout_ms = max_timeout;
        let tx = super::transactions::find(client, snap, max_timeout, now_ms).await;
        let tx_secs = started.elapsed().as_secs_f64();
        out.push(self.status("transactions", tx.as_ref().err(), tx_secs));
        if let Ok(t) = tx {
            snap.open_transactions = t;
        }
        let started = Instant::now();
        let audit = self.audit.check(client, snap, now_ms).await;
        out.push(self.status(
            "durability",
            audit.as_ref().err(),
            started.elapsed().as_secs_f64(),
        ));
        let audit = audit.unwrap_or_default();
        Findings {
            parts: out,
            losses: audit.losses,
            moves: audit.moves,
        }
    }

    fn status(&self, part: &'static str, e: Option<&ProtocolError>, seconds: f64) -> PartStatus {
        self.status_msg(part, e.map(ToString::to_string), seconds)
    }

    fn status_msg(&self, part: &'static str, error: Option<String>, seconds: f64) -> PartStatus {
        self.note(part, error.as_deref());
        PartStatus {
            part,
            error,
            seconds,
        }
    }

    /// Logs a part's failure once (and again only when the error changes), and its
    /// recovery; returns whether it logged.
    fn note(&self, part: &'static str, error: Option<&str>) -> bool {
        let mut said = self.said.lock().expect("said lock is never poisoned");
        match error {
            Some(e) if said.get(part).map(String::as_str) != Some(e) => {
                tracing::warn!(part, error = %e, "A Kafka admin request failed; that part is left out until it answers.");
                said.insert(part, e.to_string());
                true
            }
            None if said.remove(part).is_some() => {
                tracing::info!(part, "A Kafka admin request answers again.");
                true
            }
            _ => false,
        }
    }

    /// Reads the brokers' facts when [`FACTS_EVERY`] has passed (or the brokers
    /// changed); keeps the last ones when no broker answers.
    async fn broker_facts(&self, client: &Client, brokers: &[i32]) -> Result<(), ProtocolError> {
        let due = {
            let cache = self.facts.lock().expect("facts lock is never poisoned");
            cache.0.is_none_or(|t| t.elapsed() >= FACTS_EVERY) || cache.3 != brokers
        };
        if !due {
            return Ok(());
        }
        let (facts, features) = super::cluster_facts::broker_facts(client, brokers).await?;
        *self.facts.lock().expect("facts lock is never poisoned") =
            (Some(Instant::now()), facts, features, brokers.to_vec());
        Ok(())
    }
}

/// `f`'s output and the seconds it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, f64) {
    let t = Instant::now();
    let r = f.await;
    (r, t.elapsed().as_secs_f64())
}

/// DescribeQuorum of `__cluster_metadata`, which brokers forward to the active
/// controller. An error in the answer (no leader, a quorum that lost its majority) is
/// a quorum with leader -1, not a failure of the request.
///
/// # Errors
/// [`ProtocolError`] when no broker answers, or none offers DescribeQuorum.
pub async fn describe_quorum(client: &Client) -> Result<Quorum, ProtocolError> {
    let request = DescribeQuorumRequest::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)]),
    ]);
    let r = client.send_any(&request).await?;
    let no_leader = |code: i16| Quorum {
        leader_id: -1,
        error_code: i32::from(code),
        ..Default::default()
    };
    if r.error_code != 0 {
        return Ok(no_leader(r.error_code));
    }
    let Some(p) = r.topics.first().and_then(|t| t.partitions.first()) else {
        return Ok(no_leader(-1));
    };
    if p.error_code != 0 {
        return Ok(no_leader(p.error_code));
    }
    let replica =
        |s: &kafka_protocol::messages::describe_quorum_response::ReplicaState| QuorumReplica {
            id: s.replica_id.0,
            log_end_offset: s.log_end_offset,
            last_fetch_timestamp_ms: s.last_fetch_timestamp,
            last_caught_up_timestamp_ms: s.last_caught_up_timestamp,
        };
    let voters: Vec<QuorumReplica> = p.current_voters.iter().map(replica).collect();
    let leader_id = if voters.iter().any(|v| v.id == p.leader_id.0) {
        p.leader_id.0
    } else {
        -1
    };
    Ok(Quorum {
        leader_id,
        leader_epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters,
        observers: p.observers.iter().map(replica).collect(),
        error_code: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_part_is_said_once_and_its_recovery_once() {
        let a = AdminCollector::new(&KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            ..KafkaConfig::default()
        });
        let e = "127.0.0.1:1 does not offer DescribeQuorum";
        assert!(a.note("quorum", Some(e)));
        assert!(
            !a.note("quorum", Some(e)),
            "the same failure is not said again"
        );
        assert!(a.note("quorum", Some("timed out")), "a different one is");
        assert!(!a.note("cluster", None));
        assert!(a.note("quorum", None), "the recovery is said");
        assert!(!a.note("quorum", None));
    }

    #[test]
    fn settings_it_cannot_honour_turn_the_parts_off_not_the_agent() {
        let a = AdminCollector::new(&KafkaConfig {
            bootstrap_servers: "127.0.0.1:1".into(),
            properties: [
                ("sasl.mechanisms".to_string(), "GSSAPI".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ]
            .into(),
            ..KafkaConfig::default()
        });
        assert!(a.client().is_none());
        let parts = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(a.enrich(&mut ClusterSnapshot::default(), 0))
            .parts;
        assert_eq!(parts.len(), PARTS.len());
        for p in parts {
            assert!(
                p.error.as_deref().is_some_and(|e| e.contains("GSSAPI")),
                "{p:?}"
            );
        }
    }
}
