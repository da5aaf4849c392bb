//! The durability ledger: the agents' durability events, one row per partition.

use rusqlite::params;

use super::{Error, Store};

/// A cluster's durability ledger (see [`Store::durability_ledger`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DurabilityLedger {
    /// The last 1, 7 and 30 days.
    pub windows: Vec<LedgerWindow>,
    /// The newest events, newest first.
    pub events: Vec<DurabilityEvent>,
}

/// What one window of the ledger holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LedgerWindow {
    /// The window's length.
    pub days: i64,
    /// Acknowledged offsets lost.
    pub offsets_lost: i64,
    /// Distinct partitions with an event.
    pub partitions_affected: i64,
    /// Leaders elected from outside the ISR.
    pub unclean_elections: i64,
}

/// One finding of an agent's durability audit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DurabilityEvent {
    /// When the agent found it, Unix ms.
    pub at_ms: i64,
    /// The topic (hashed when the agent hashes names).
    pub topic: String,
    /// The partition.
    pub partition: i64,
    /// The epoch whose records were acknowledged.
    pub previous_epoch: i64,
    /// The epoch of the finding.
    pub epoch: i64,
    /// Which check found it: `epoch_end`, `unclean_election`, `high_watermark_regressed`,
    /// or `eligible_leader_replica` (a clean election outside the ISR, KIP-966).
    pub check: String,
    /// Acknowledged offsets lost.
    pub offsets_lost: i64,
    /// Whether the new leader was in the ISR.
    pub clean: bool,
    /// The agent's account of it.
    pub message: String,
}

impl DurabilityEvent {
    /// The ledger's row for an agent's event, as both stores keep it; `None` for an
    /// event of another kind. A label the agent left out reads as empty, or as -1 for a
    /// number (0 for the offsets lost); `clean` unless the label says `false`.
    pub fn from_event(e: &foresight_proto::v1::Event) -> Option<Self> {
        if e.kind() != foresight_proto::v1::EventKind::Durability {
            return None;
        }
        let label = |k: &str| e.labels.get(k).cloned().unwrap_or_default();
        let int = |k: &str| label(k).parse::<i64>().unwrap_or(-1);
        Some(DurabilityEvent {
            at_ms: e.timestamp_ms,
            topic: label("topic"),
            partition: int("partition"),
            previous_epoch: int("previous_epoch"),
            epoch: int("epoch"),
            check: label("check"),
            offsets_lost: int("offsets_lost").max(0),
            clean: label("clean") != "false",
            message: e.message.clone(),
        })
    }
}

impl Store {
    /// Records a batch's durability events (the agent's audit) in the cluster's ledger.
    /// Every agent of a cluster audits it, so the same finding arrives once per agent:
    /// it is kept once (per partition, epochs and check). Returns how many were new.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn insert_durability_events(
        &self,
        tenant: &str,
        cluster: &str,
        events: &[foresight_proto::v1::Event],
    ) -> Result<usize, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 0;
        for d in events.iter().filter_map(DurabilityEvent::from_event) {
            n += tx.execute(
                "INSERT INTO durability_events (tenant, cluster, at_ms, topic, partition, previous_epoch, epoch, check_name, offsets_lost, clean, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                params![
                    tenant,
                    cluster,
                    d.at_ms,
                    d.topic,
                    d.partition,
                    d.previous_epoch,
                    d.epoch,
                    d.check,
                    d.offsets_lost,
                    d.clean,
                    d.message
                ],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// The cluster's durability ledger at `now_ms`: offsets lost and partitions
    /// affected over the last 1, 7 and 30 days, unclean elections, and the newest
    /// `limit` events.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn durability_ledger(
        &self,
        tenant: &str,
        cluster: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<DurabilityLedger, Error> {
        let conn = self.read();
        let mut windows = Vec::new();
        for days in [1i64, 7, 30] {
            let since = now_ms - days * 86_400_000;
            let (lost, partitions, unclean): (i64, i64, i64) = conn.query_row(
                "SELECT COALESCE(SUM(offsets_lost), 0), COUNT(DISTINCT topic || '\u{1f}' || partition),
                        COALESCE(SUM(CASE WHEN clean THEN 0 ELSE 1 END), 0)
                 FROM durability_events WHERE tenant = ?1 AND cluster = ?2 AND at_ms >= ?3",
                params![tenant, cluster, since],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            windows.push(LedgerWindow {
                days,
                offsets_lost: lost,
                partitions_affected: partitions,
                unclean_elections: unclean,
            });
        }
        let mut stmt = conn.prepare(
            "SELECT at_ms, topic, partition, previous_epoch, epoch, check_name, offsets_lost, clean, message
             FROM durability_events WHERE tenant = ?1 AND cluster = ?2 ORDER BY at_ms DESC LIMIT ?3",
        )?;
        let events = stmt
            .query_map(params![tenant, cluster, limit as i64], |r| {
                Ok(DurabilityEvent {
                    at_ms: r.get(0)?,
                    topic: r.get(1)?,
                    partition: r.get(2)?,
                    previous_epoch: r.get(3)?,
                    epoch: r.get(4)?,
                    check: r.get(5)?,
                    offsets_lost: r.get(6)?,
                    clean: r.get(7)?,
                    message: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DurabilityLedger { windows, events })
    }
}

/// What the API reads of a tenant's past: alert history and each cluster's durability
/// ledger. The SQLite [`Store`] on one node; in cluster mode
/// [`super::pg::PgStore`], which the evaluators write.
pub trait HistoryStore: Send + Sync {
    /// A tenant's alert transitions, newest first, optionally of one alert name.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn history(
        &self,
        tenant: &str,
        alertname: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::HistoryEntry>, Error>;
    /// Records a batch's durability events, each finding once; returns how many were new.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn record_durability(
        &self,
        tenant: &str,
        cluster: &str,
        events: &[foresight_proto::v1::Event],
    ) -> Result<usize, Error>;
    /// The cluster's durability ledger at `now_ms` with its newest `limit` events.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn ledger(
        &self,
        tenant: &str,
        cluster: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<DurabilityLedger, Error>;
}

impl HistoryStore for Store {
    fn history(
        &self,
        tenant: &str,
        alertname: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<super::HistoryEntry>, Error> {
        self.alert_history(tenant, alertname, since_ms, limit)
    }
    fn record_durability(
        &self,
        tenant: &str,
        cluster: &str,
        events: &[foresight_proto::v1::Event],
    ) -> Result<usize, Error> {
        self.insert_durability_events(tenant, cluster, events)
    }
    fn ledger(
        &self,
        tenant: &str,
        cluster: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<DurabilityLedger, Error> {
        self.durability_ledger(tenant, cluster, now_ms, limit)
    }
}
