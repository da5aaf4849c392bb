//! Each node's heartbeat in PostgreSQL: who is in the service, with which roles, and
//! which telemetry partitions its evaluator owns (`foresight cluster status`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::pg::{NodeInfo, PgStore};

/// How often a node reports itself; a node not seen for three of these is down.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Whether a node last seen at `seen_at_ms` counts as up at `now_ms`.
pub fn is_up(seen_at_ms: i64, now_ms: i64) -> bool {
    now_ms - seen_at_ms <= 3 * HEARTBEAT.as_millis() as i64
}

/// Reports `node` every [`HEARTBEAT`], its partitions read from `owned`, until
/// `cancel`.
pub fn spawn_heartbeat(
    store: Arc<PgStore>,
    mut node: NodeInfo,
    owned: Arc<Mutex<Vec<i32>>>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            node.partitions = owned.lock().map(|o| o.clone()).unwrap_or_default();
            node.partitions.sort_unstable();
            node.seen_at_ms = foresight_proto::now_ms();
            let (s, n) = (store.clone(), node.clone());
            match tokio::task::spawn_blocking(move || s.heartbeat(&n)).await {
                Ok(Ok(())) => {
                    if failing {
                        tracing::info!("Node heartbeat recorded again.");
                    }
                    failing = false;
                }
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(error = %e, "Could not record the node's heartbeat.");
                    }
                    failing = true;
                }
                Err(_) => return,
            }
        }
    })
}
