//! The facts a support case starts from, over the second client: each broker's log dirs
//! and replica sizes (DescribeLogDirs, every cycle), and its API versions, supported and
//! finalized features (ApiVersions) and non-default configs (DescribeConfigs), read
//! every few minutes since they change only with a rolling restart or an operator.

use std::collections::BTreeMap;

use foresight_proto::facts::WATCHED_CONFIGS;
use foresight_proto::v1::{ApiRange, BrokerFacts, FeatureRange, LogDir, ReplicaSize};
use futures_util::future::join_all;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    ApiVersionsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
};
use kafka_protocol::protocol::StrBytes;

use crate::protocol::{Client, ProtocolError, error_name};

/// DescribeConfigs' config sources that are not Kafka's default: dynamic per broker,
/// dynamic cluster-wide default, and the broker's properties file.
const OVERRIDDEN: &[i8] = &[2, 3, 4];

/// Every broker's log dirs, asked in parallel. Brokers that fail are left out (and
/// named in the error when none answers).
///
/// # Errors
/// [`ProtocolError`] when no broker answers.
pub async fn log_dirs(client: &Client, brokers: &[i32]) -> Result<Vec<LogDir>, ProtocolError> {
    let request = DescribeLogDirsRequest::default().with_topics(None);
    let answers = join_all(brokers.iter().map(|b| {
        let request = &request;
        async move { (*b, client.send_to(*b, request).await) }
    }))
    .await;
    let mut out = Vec::new();
    let mut last_err = None;
    for (broker, answer) in answers {
        let r = match answer {
            Ok(r) if r.error_code == 0 => r,
            Ok(r) => {
                last_err = Some(ProtocolError::NoBroker(format!(
                    "broker {broker}: DescribeLogDirs: {}",
                    error_name(r.error_code)
                )));
                continue;
            }
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        for d in r.results {
            let mut replicas = Vec::new();
            for t in &d.topics {
                for p in &t.partitions {
                    replicas.push(ReplicaSize {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                        size_bytes: p.partition_size,
                        offset_lag: p.offset_lag,
                        is_future: p.is_future_key,
                    });
                }
            }
            out.push(LogDir {
                broker,
                path: d.log_dir.to_string(),
                total_bytes: d.total_bytes,
                usable_bytes: d.usable_bytes,
                error_code: i32::from(d.error_code),
                replicas,
            });
        }
    }
    match (out.is_empty(), last_err) {
        (true, Some(e)) if !brokers.is_empty() => Err(e),
        _ => Ok(out),
    }
}

/// Each broker's versions, features and configs, and the cluster's finalized features
/// (the highest epoch any broker reported).
///
/// # Errors
/// [`ProtocolError`] when no broker answers ApiVersions.
pub async fn broker_facts(
    client: &Client,
    brokers: &[i32],
) -> Result<(Vec<BrokerFacts>, BTreeMap<String, i32>), ProtocolError> {
    let answers = join_all(brokers.iter().map(|b| async move {
        let versions = client
            .send_to(
                *b,
                &ApiVersionsRequest::default()
                    .with_client_software_name(StrBytes::from_static_str("foresight-agent"))
                    .with_client_software_version(StrBytes::from_static_str(env!(
                        "CARGO_PKG_VERSION"
                    ))),
            )
            .await;
        let configs = client
            .send_to(
                *b,
                &DescribeConfigsRequest::default().with_resources(vec![
                    DescribeConfigsResource::default()
                        .with_resource_type(4)
                        .with_resource_name(StrBytes::from_string(b.to_string()))
                        .with_configuration_keys(None),
                ]),
            )
            .await;
        (*b, versions, configs)
    }))
    .await;
    let mut facts = Vec::new();
    let mut finalized = (-1i64, BTreeMap::new());
    let mut last_err = None;
    for (broker, versions, configs) in answers {
        let v = match versions {
            Ok(v) if v.error_code == 0 => v,
            Ok(v) => {
                last_err = Some(ProtocolError::NoBroker(format!(
                    "broker {broker}: ApiVersions: {}",
                    error_name(v.error_code)
                )));
                continue;
            }
            Err(e) => {
                last_err = Some(e);
                continue;
            }
        };
        if v.finalized_features_epoch > finalized.0 {
            finalized = (
                v.finalized_features_epoch,
                v.finalized_features
                    .iter()
                    .map(|f| (f.name.to_string(), i32::from(f.max_version_level)))
                    .collect(),
            );
        }
        let mut f = BrokerFacts {
            id: broker,
            api_versions: v
                .api_keys
                .iter()
                .map(|k| ApiRange {
                    key: i32::from(k.api_key),
                    min: i32::from(k.min_version),
                    max: i32::from(k.max_version),
                })
                .collect(),
            supported_features: v
                .supported_features
                .iter()
                .map(|s| FeatureRange {
                    name: s.name.to_string(),
                    min: i32::from(s.min_version),
                    max: i32::from(s.max_version),
                })
                .collect(),
            configs: Default::default(),
        };
        match configs {
            Ok(c) => {
                for r in c.results.iter().filter(|r| r.error_code == 0) {
                    for e in &r.configs {
                        let watched = WATCHED_CONFIGS.contains(&e.name.as_str());
                        if e.is_sensitive || !(watched || OVERRIDDEN.contains(&e.config_source)) {
                            continue;
                        }
                        if let Some(value) = &e.value {
                            f.configs.insert(e.name.to_string(), value.to_string());
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(broker, error = %e, "DescribeConfigs of a broker failed.");
            }
        }
        facts.push(f);
    }
    match (facts.is_empty(), last_err) {
        (true, Some(e)) if !brokers.is_empty() => Err(e),
        _ => Ok((facts, finalized.1)),
    }
}
