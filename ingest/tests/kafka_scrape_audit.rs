//! The scrape audit: every JMX series the built-in pack reads must be in a real scrape
//! of Apache Kafka 4.x and 3.9 through the jmx_exporter Java agent with Foresight's own
//! configuration (`examples/jmx_exporter/kafka.yml`), on the processes that export it,
//! read by the agent's own parser. A future Kafka or exporter rename fails here the day
//! it lands. Where the conformance data lies beside the checkout
//! (`../shared/conformance/`), the same audit also runs with the jmx_exporter project's
//! example KRaft configuration, so that the pack keeps working for users who run that;
//! on a plain clone that part says it did not run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use foresight_testkit::{Cluster, ClusterSpec, Role, Version};

/// Pack series that no Apache Kafka process exports, each with the reason.
const NOT_APACHE_KAFKA: &[(&str, &str)] = &[(
    "kafka_server_replicamanager_maxlaststableoffsetlag",
    "Confluent Server's ReplicaManager MaxLastStableOffsetLag",
)];

/// Pack series that Kafka 3.9 has no MBean for: share groups came with 4.x.
const NOT_BEFORE_4: &[&str] = &["kafka_server_sharegroupmetrics_recordacknowledgements_total"];

/// Names of which a rule reads whichever exists: jmx_exporter 1.x writes COUNTER
/// rules' `_count` names with `_total`, 0.x without.
const ALTERNATIVES: &[&[&str]] = &[&[
    "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent_count_total",
    "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent_count",
]];

/// Series the agent or the ingest make, not a JMX scrape.
fn made_by_foresight(name: &str) -> bool {
    foresight_proto::derive::METRIC_NAMES.contains(&name)
        || name.starts_with("kafka_topic_config_")
        || name.starts_with("kafka_log_dir_")
        || name == "kafka_consumergroup_lag_seconds"
        || name == foresight_reporter::collector::durability::METRIC_NAME
        || name == foresight_reporter::collector::durability::UNEXPLAINED_METRIC_NAME
}

/// The JMX series names the pack's expressions read.
fn pack_jmx_names() -> BTreeSet<String> {
    let groups =
        foresight_rules::rulefile::load_str("kafka.yml", foresight_rules::packs::KAFKA_PACK)
            .expect("the pack loads");
    let ident = regex::Regex::new(r"\bkafka_[a-z0-9_]+").unwrap();
    let mut names = BTreeSet::new();
    for g in &groups {
        for r in &g.rules {
            for m in ident.find_iter(&r.expr_text) {
                if !made_by_foresight(m.as_str()) {
                    names.insert(m.as_str().to_string());
                }
            }
        }
    }
    names
}

/// Series names per role, scraped from every node of `cluster` through the agent's
/// parser.
fn scrape(cluster: &Cluster) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut by_role: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for n in &cluster.nodes {
        let url = n.jmx_url();
        let body = foresight_testkit::scrape(&url).expect("exporter answers");
        let series = foresight_reporter::collector::jmx::parse(&url, &body, &BTreeMap::new(), 0)
            .expect("a real scrape parses");
        let role = match n.role {
            Role::Broker => "broker",
            Role::Controller => "controller",
        };
        by_role
            .entry(role)
            .or_default()
            .extend(series.into_iter().map(|s| s.name));
    }
    by_role
}

/// One controller and one broker of each version, at once, every JVM with the
/// jmx_exporter agent on `config` (and Jolokia's agent when `jolokia`).
fn start_clusters(config: &Path, jolokia: bool) -> Vec<(Version, Cluster)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = Version::ALL
            .into_iter()
            .map(|v| {
                s.spawn(move || {
                    let mut spec = ClusterSpec::new(v).nodes(1, 1);
                    spec.heap_mib = 256;
                    spec.jolokia = jolokia;
                    spec.jmx_exporter_config = config.to_path_buf();
                    (v, Cluster::start(spec).expect("cluster starts"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// What makes Foresight's configuration worth installing over the example: a scrape
/// whose size does not grow with topics and partitions.
fn per_topic_series(clusters: &[(Version, Cluster)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (version, cluster) in clusters {
        let release = version.release().unwrap();
        for n in &cluster.nodes {
            let url = n.jmx_url();
            let body = foresight_testkit::scrape(&url).expect("exporter answers");
            let series =
                foresight_reporter::collector::jmx::parse(&url, &body, &BTreeMap::new(), 0)
                    .expect("a real scrape parses");
            let kafka: Vec<_> = series
                .iter()
                .filter(|s| s.name.starts_with("kafka_"))
                .collect();
            for s in &kafka {
                if s.labels
                    .iter()
                    .any(|l| l.name == "topic" || l.name == "partition")
                {
                    problems.push(format!(
                        "Kafka {release} node {}: Foresight's configuration exports {} per topic or partition",
                        n.id, s.name
                    ));
                }
            }
            eprintln!(
                "scrape audit: Kafka {release} node {} ({:?}): {} kafka_ series with Foresight's configuration",
                n.id,
                n.role,
                kafka.len()
            );
        }
    }
    problems
}

/// The pack's JMX series that real scrapes of `clusters` lack, or have on the wrong
/// processes; `config` names the exporter configuration in the messages.
fn missing_series(
    clusters: &[(Version, Cluster)],
    wanted: &BTreeSet<String>,
    config: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (version, cluster) in clusters {
        let release = version.release().unwrap();
        let by_role = scrape(cluster);
        let all: BTreeSet<&String> = by_role.values().flatten().collect();
        for name in wanted {
            if NOT_APACHE_KAFKA.iter().any(|(n, _)| n == name) {
                assert!(
                    !all.contains(name),
                    "Kafka {release} ({config}) has {name}: it is no longer Confluent-only"
                );
                continue;
            }
            if *version == Version::Kafka39 && NOT_BEFORE_4.contains(&name.as_str()) {
                assert!(
                    !all.contains(name),
                    "Kafka {release} ({config}) has {name}: take it off NOT_BEFORE_4"
                );
                continue;
            }
            let present = match ALTERNATIVES.iter().find(|a| a.contains(&name.as_str())) {
                Some(alts) => alts.iter().any(|a| all.iter().any(|n| n == a)),
                None => all.contains(name),
            };
            if !present {
                problems.push(format!("Kafka {release} ({config}): no {name} on any node"));
            }
        }
        // KRaft facts the pack relies on: the controller gauges are on controller
        // processes only, and every node reports the quorum leader it knows.
        for name in [
            "kafka_controller_kafkacontroller_activecontrollercount",
            "kafka_controller_kafkacontroller_offlinepartitionscount",
        ] {
            if !by_role["controller"].contains(name) {
                problems.push(format!(
                    "Kafka {release} ({config}): controllers lack {name}"
                ));
            }
            if by_role["broker"].contains(name) {
                problems.push(format!("Kafka {release} ({config}): brokers have {name}"));
            }
        }
        for role in ["controller", "broker"] {
            for raft in [
                "kafka_server_raft_metrics_current_leader",
                "kafka_server_raft_metrics_high_watermark",
            ] {
                if !by_role[role].contains(raft) {
                    problems.push(format!("Kafka {release} ({config}): {role}s lack {raft}"));
                }
            }
        }
        // 3.9 introduced the KRaft unclean-election counter; both lines must have it.
        if !by_role["controller"]
            .contains("kafka_controller_controllerstats_uncleanleaderelections_total")
        {
            problems.push(format!(
                "Kafka {release} ({config}): controllers lack UncleanLeaderElectionsPerSec"
            ));
        }
    }
    problems
}

/// Differences between the agent's Jolokia collector and the exporter on the same nodes:
/// every pack series the exporter gives must come from Jolokia with the same labels.
fn jolokia_differences(clusters: &[(Version, Cluster)], wanted: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(foresight_reporter::tls::client_config(None, None).unwrap())
        .build()
        .unwrap();
    let mbeans: Vec<String> = foresight_reporter::collector::jolokia::DEFAULT_MBEANS
        .iter()
        .map(|m| m.to_string())
        .collect();
    for (version, cluster) in clusters {
        let release = version.release().unwrap();
        for n in &cluster.nodes {
            let url = n.jmx_url();
            let body = foresight_testkit::scrape(&url).unwrap();
            let exporter =
                foresight_reporter::collector::jmx::parse(&url, &body, &BTreeMap::new(), 0)
                    .unwrap();
            let jolokia_url = n.jolokia_url().unwrap();
            let jolokia = runtime
                .block_on(foresight_reporter::collector::jolokia::read(
                    &client,
                    &jolokia_url,
                    &mbeans,
                    std::time::Duration::from_secs(20),
                    &BTreeMap::new(),
                    0,
                ))
                .unwrap_or_else(|e| panic!("Jolokia on node {} of {release}: {e}", n.id));
            let key = |s: &foresight_proto::v1::Series| {
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect();
                labels.sort();
                (s.name.clone(), labels)
            };
            let from_jolokia: BTreeSet<_> = jolokia.iter().map(key).collect();
            for s in exporter.iter().filter(|s| wanted.contains(&s.name)) {
                let k = key(s);
                if !from_jolokia.contains(&k) {
                    problems.push(format!(
                        "Kafka {release} node {}: the exporter has {k:?}, Jolokia does not",
                        n.id
                    ));
                }
            }
        }
    }
    problems
}

/// The agent's second client on both lines: every admin part answers, and the quorum
/// is the one kafka-metadata-quorum describes.
fn admin_problems(clusters: &[(Version, Cluster)]) -> Vec<String> {
    let mut problems = Vec::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (version, cluster) in clusters {
        let release = version.release().unwrap();
        let agent = foresight_reporter::Reporter::new(foresight_reporter::config::AgentConfig {
            kafka: foresight_reporter::config::KafkaConfig {
                bootstrap_servers: cluster.bootstrap(),
                request_timeout_ms: 5_000,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let batch = runtime.block_on(agent.collect_batch()).unwrap();
        for part in foresight_reporter::collector::admin::PARTS {
            let up = batch.series.iter().find(|s| {
                s.name == "foresight_agent_protocol_up"
                    && s.labels
                        .iter()
                        .any(|l| l.name == "part" && l.value == *part)
            });
            if up.map(|s| s.samples[0].value) != Some(1.0) {
                problems.push(format!("Kafka {release}: admin part {part} did not answer"));
            }
        }
        let out = cluster
            .tool(
                "org.apache.kafka.tools.MetadataQuorumCommand",
                &[
                    "--bootstrap-server",
                    &cluster.bootstrap(),
                    "describe",
                    "--status",
                ],
            )
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout);
        let leader = status
            .lines()
            .find_map(|l| l.strip_prefix("LeaderId:"))
            .map(|v| v.trim().parse::<i32>().unwrap());
        let quorum = batch
            .snapshot
            .as_ref()
            .unwrap()
            .quorum
            .clone()
            .unwrap_or_default();
        if leader != Some(quorum.leader_id) {
            problems.push(format!(
                "Kafka {release}: the agent's quorum leader is {}, kafka-metadata-quorum says {status}",
                quorum.leader_id
            ));
        }
        let voters: Vec<i32> = quorum.voters.iter().map(|v| v.id).collect();
        let observers: Vec<i32> = quorum.observers.iter().map(|v| v.id).collect();
        if voters != [101] || observers != [1] {
            problems.push(format!(
                "Kafka {release}: voters {voters:?}, observers {observers:?}"
            ));
        }
    }
    problems
}
#[test]
fn every_jmx_series_the_pack_reads_is_in_real_scrapes_of_4_and_3_9_and_the_admin_requests_answer() {
    let wanted = pack_jmx_names();
    for known in [
        "kafka_server_replicamanager_underreplicatedpartitions",
        "kafka_controller_kafkacontroller_activecontrollercount",
        "kafka_server_raft_metrics_current_leader",
        "kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent_count_total",
        "kafka_network_requestmetrics_totaltimems",
    ] {
        assert!(
            wanted.contains(known),
            "the audit does not see {known} in the pack: {wanted:?}"
        );
    }
    let mut problems = Vec::new();
    {
        let clusters = start_clusters(&foresight_testkit::jmx_exporter_config(), true);
        // A topic, so that per-topic and per-partition MBeans exist on the broker.
        for (_, cluster) in &clusters {
            let out = cluster
                .tool(
                    "org.apache.kafka.tools.TopicCommand",
                    &[
                        "--bootstrap-server",
                        &cluster.bootstrap(),
                        "--create",
                        "--topic",
                        "audit",
                        "--partitions",
                        "3",
                    ],
                )
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        problems.extend(missing_series(
            &clusters,
            &wanted,
            "Foresight's configuration",
        ));
        problems.extend(per_topic_series(&clusters));
        problems.extend(jolokia_differences(&clusters, &wanted));
        problems.extend(admin_problems(&clusters));
    }
    // The example configuration many operators run, where the conformance data is.
    match foresight_testkit::upstream_jmx_exporter_config() {
        Some(config) => {
            let clusters = start_clusters(&config, false);
            problems.extend(missing_series(
                &clusters,
                &wanted,
                "the jmx_exporter example",
            ));
        }
        None => eprintln!(
            "scrape audit: the jmx_exporter project's example configuration is not beside this \
             checkout (../shared/conformance/): the audit of the pack against it did not run"
        ),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
