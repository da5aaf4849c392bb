//! `foresight-agent check`: does the configuration work, and if not, what to change.

use std::time::Duration;

use crate::config::AgentConfig;
use crate::shipper::{ShipError, Shipper};

/// One verdict of a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What was checked: `config`, `kafka`, `admin` or `ingest`.
    pub what: &'static str,
    /// Whether it works.
    pub ok: bool,
    /// What was found, and for a failure what to do about it.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{verdict} {}: {}", self.what, self.message)
    }
}

fn finding(what: &'static str, ok: bool, message: String) -> Finding {
    Finding { what, ok, message }
}

/// Checks `config` (already parsed): reaches the cluster, and the ingest with the key.
pub async fn run(config: &AgentConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(problems) = config.validate() {
        for p in problems {
            out.push(finding("config", false, p));
        }
        return out;
    }
    out.push(finding("config", true, "valid".into()));
    out.push(check_kafka(config).await);
    out.push(check_admin(config).await);
    if config.ingest.url.is_empty() {
        out.push(finding(
            "ingest",
            false,
            "no ingest.url: set it to the https:// address `foresight serve` listens on".into(),
        ));
    } else {
        out.push(check_ingest(config).await);
    }
    out
}

async fn check_kafka(config: &AgentConfig) -> Finding {
    let collector = match crate::collector::kafka::KafkaCollector::new(&config.kafka) {
        Ok(c) => c,
        Err(e) => {
            return finding(
                "kafka",
                false,
                format!("{e}. Fix: check kafka.properties against librdkafka's CONFIGURATION.md"),
            );
        }
    };
    let servers = config.kafka.bootstrap_servers.clone();
    match tokio::task::spawn_blocking(move || collector.collect(0)).await {
        Ok(Ok(s)) => finding(
            "kafka",
            true,
            format!(
                "cluster {:?}: {} brokers, {} topics",
                s.cluster_id,
                s.brokers.len(),
                s.topics.len()
            ),
        ),
        Ok(Err(e)) => finding(
            "kafka",
            false,
            format!(
                "{e}. Fix: check that {servers} is reachable from this host (firewall, DNS), and \
                 that kafka.properties has the listener's security.protocol and credentials"
            ),
        ),
        Err(e) => finding("kafka", false, format!("collector failed: {e}")),
    }
}

/// The second client's settings and the cluster's answer to DescribeQuorum.
async fn check_admin(config: &AgentConfig) -> Finding {
    if !config.kafka.admin_requests {
        return finding("admin", true, "off (kafka.admin_requests: false)".into());
    }
    let admin = crate::collector::admin::AdminCollector::new(&config.kafka);
    let Some(client) = admin.client() else {
        let why = admin.disabled().unwrap_or_default();
        return finding(
            "admin",
            false,
            format!(
                "{why}. The rest of the agent works; the quorum and hanging-transaction \
                 checks stay off. Fix: use a setting listed in the README, or set \
                 kafka.admin_requests: false"
            ),
        );
    };
    match crate::collector::admin::describe_quorum(client).await {
        Ok(q) if q.leader_id >= 0 => finding(
            "admin",
            true,
            format!(
                "DescribeQuorum: leader {} (epoch {}), {} voters, {} observers",
                q.leader_id,
                q.leader_epoch,
                q.voters.len(),
                q.observers.len()
            ),
        ),
        Ok(q) => finding(
            "admin",
            false,
            format!(
                "DescribeQuorum: the quorum has no leader ({}). Fix: check the controllers \
                 (kafka-metadata-quorum.sh describe --status)",
                crate::protocol::error_name(q.error_code as i16)
            ),
        ),
        Err(e) if e.is_unsupported_api() => finding(
            "admin",
            true,
            format!("{e}: a ZooKeeper-mode or old cluster, so the quorum rules stay silent"),
        ),
        Err(e) => finding(
            "admin",
            false,
            format!(
                "{e}. Fix: the second client connects with the same bootstrap servers and \
                 kafka.properties as librdkafka; check the listener's security.protocol \
                 and credentials"
            ),
        ),
    }
}

async fn check_ingest(config: &AgentConfig) -> Finding {
    let key = match config.api_key() {
        Ok(k) => k,
        Err(e) => return finding("ingest", false, format!("{e}")),
    };
    let tls = match crate::tls::client_config(
        config.ingest.ca_file.as_deref(),
        config.ingest.pinned_sha256.as_deref(),
    ) {
        Ok(t) => t,
        Err(e) => {
            return finding(
                "ingest",
                false,
                format!("{e}. Fix: check ingest.ca_file or ingest.pinned_sha256"),
            );
        }
    };
    let shipper = match Shipper::new(
        &config.ingest.url,
        key,
        tls,
        Duration::from_secs(config.ingest.timeout_secs),
        1,
    ) {
        Ok(s) => s,
        Err(e) => return finding("ingest", false, e.to_string()),
    };
    let url = &config.ingest.url;
    match shipper.probe().await {
        Ok(()) => finding("ingest", true, format!("{url} accepts the API key")),
        Err(ShipError::Status { status: 401, .. }) => finding(
            "ingest",
            false,
            format!(
                "{url} does not know the API key. Fix: create one with `foresight keys create \
                 --tenant <name>` and put it in ingest.api_key_file"
            ),
        ),
        Err(ShipError::Status { status, body, .. }) => finding(
            "ingest",
            false,
            format!("{url} answered {status}: {body}. Fix: is this URL a Foresight ingest?"),
        ),
        Err(ShipError::Transport(e)) => finding(
            "ingest",
            false,
            format!(
                "{url}: {e}. Fix: check the address and port, the firewall, and that the \
                 certificate matches ingest.pinned_sha256 (printed by `foresight serve`) or \
                 ingest.ca_file"
            ),
        ),
    }
}
