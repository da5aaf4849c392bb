//! Cluster mode: any number of `foresight serve` nodes form one service on Kafka and
//! PostgreSQL.
//!
//! - [`config`]: the `cluster:` section, roles, and which partition holds a cluster.
//! - [`bus`]: the telemetry topic: created at start, produced to by ingest nodes
//!   (idempotent, `acks=all`; the 202 waits for Kafka), consumed by the evaluators'
//!   group, which replays each partition from the oldest sample the rules need.
//! - [`alerts`]: the alerts topic: evaluators send their alerts keyed by tenant, the
//!   notifier nodes' group takes each tenant's grouping into the PostgreSQL outbox.
//! - [`fanout`]: the query and clusters APIs ask every evaluator node and merge.
//! - [`nodes`]: each node's heartbeat, roles and partitions in PostgreSQL, for
//!   `foresight cluster status`.

pub mod alerts;
pub mod bus;
pub mod config;
pub mod fanout;
pub mod nodes;

use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::store::pg::{NodeInfo, PgStore};

/// How long a node trusts a key it has seen valid: a key revoked through another node
/// stops within this.
pub const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// What a node of the service shares with the others, connected at start.
pub struct Node {
    /// The `cluster:` section.
    pub config: config::ClusterConfig,
    /// This node's id.
    pub node_id: String,
    /// The shared state.
    pub pg: Arc<PgStore>,
    /// Ingest nodes' producer to the telemetry topic.
    pub bus: Option<Arc<bus::TelemetryBus>>,
    /// The telemetry topic's partition count.
    pub partitions: i32,
    /// The producer to the alerts topic (evaluated and posted alerts).
    pub alert_bus: Arc<alerts::AlertBus>,
    /// The partitions this node's evaluator owns now.
    pub owned: Arc<Mutex<Vec<i32>>>,
    started_at_ms: i64,
}

impl Node {
    /// Connects to PostgreSQL (migrating it) and Kafka (creating the telemetry topic
    /// when missing).
    ///
    /// # Errors
    /// [`Error::Store`] when PostgreSQL does not answer; [`Error::Io`] when Kafka does
    /// not.
    pub async fn connect(c: &config::ClusterConfig, listen: &str) -> Result<Node, Error> {
        let (url, size, lease) = (
            c.postgres.url.clone(),
            c.postgres.pool_size,
            c.delivery_lease_ms(),
        );
        let pg = tokio::task::spawn_blocking(move || {
            PgStore::connect(&url, size).map(|s| s.with_delivery_lease(lease))
        })
        .await
        .map_err(|e| Error::Io(e.to_string()))??;
        let topics = bus::ensure_topics(c).await?;
        let partitions = topics.telemetry;
        let alert_bus = Arc::new(alerts::AlertBus::new(c, topics.alerts)?);
        let bus = if c.runs(config::Role::Ingest) {
            Some(Arc::new(
                bus::TelemetryBus::new(c, partitions).map_err(|e| Error::Io(e.to_string()))?,
            ))
        } else {
            None
        };
        let node_id = c.node_id(listen);
        tracing::info!(node = %node_id, roles = ?c.role_names(), partitions, "Cluster node connected to Kafka and PostgreSQL.");
        Ok(Node {
            config: c.clone(),
            node_id,
            pg: Arc::new(pg),
            bus,
            partitions,
            alert_bus,
            owned: Arc::default(),
            started_at_ms: foresight_proto::now_ms(),
        })
    }

    /// Starts this node's heartbeat, naming `addr` as where its API listens (the host
    /// name when it listens on every address) and `fingerprint` as its certificate's.
    pub fn heartbeat(
        &self,
        addr: std::net::SocketAddr,
        fingerprint: String,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let address = if addr.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", addr.port())
        } else {
            addr.to_string()
        };
        nodes::spawn_heartbeat(
            self.pg.clone(),
            NodeInfo {
                node_id: self.node_id.clone(),
                roles: self
                    .config
                    .role_names()
                    .into_iter()
                    .map(String::from)
                    .collect(),
                address,
                partitions: Vec::new(),
                started_at_ms: self.started_at_ms,
                seen_at_ms: 0,
                fingerprint,
            },
            self.owned.clone(),
            cancel,
        )
    }
}
