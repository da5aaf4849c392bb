//! Alert states (for restarts) and their transitions (for the history API).

use rusqlite::params;

use super::{Error, Store};

/// One alert state change, kept for the alert history API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistoryEntry {
    /// Tenant.
    #[serde(skip)]
    pub tenant: String,
    /// The alert's fingerprint.
    pub fingerprint: String,
    /// `alertname`.
    pub alertname: String,
    /// Every label.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

impl Store {
    /// Saves tenants' alert states (JSON) and the transitions since the last save, in one
    /// transaction.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn save_alert_states(
        &self,
        states: &[(String, String)],
        transitions: &[HistoryEntry],
        at_ms: i64,
    ) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (tenant, json) in states {
            tx.execute(
                "INSERT INTO alert_states (tenant, states, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(tenant) DO UPDATE SET states = excluded.states, at_ms = excluded.at_ms",
                params![tenant, json, at_ms],
            )?;
        }
        for h in transitions {
            tx.execute(
                "INSERT INTO alert_history (tenant, fingerprint, alertname, labels, state, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    h.tenant,
                    h.fingerprint,
                    h.alertname,
                    serde_json::to_string(&h.labels).unwrap_or_default(),
                    h.state,
                    h.at_ms
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Every tenant's saved alert states (JSON).
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn alert_states(&self) -> Result<Vec<(String, String)>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT tenant, states FROM alert_states")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A tenant's alert transitions, newest first, optionally of one alert name.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn alert_history(
        &self,
        tenant: &str,
        alertname: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT tenant, fingerprint, alertname, labels, state, at_ms FROM alert_history
             WHERE tenant = ?1 AND at_ms >= ?2 AND (?3 IS NULL OR alertname = ?3)
             ORDER BY at_ms DESC, id DESC LIMIT ?4",
        )?;
        let rows = stmt.query_map(params![tenant, since_ms, alertname, limit as i64], |r| {
            Ok(HistoryEntry {
                tenant: r.get(0)?,
                fingerprint: r.get(1)?,
                alertname: r.get(2)?,
                labels: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                state: r.get(4)?,
                at_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// What the evaluator keeps between runs and between nodes: alert states and their
/// history, and what it prunes. The SQLite [`Store`] keeps one row per tenant; in
/// cluster mode [`super::pg::PgStore`] keeps one per tenant and telemetry partition, so
/// that the evaluator that takes a partition over takes exactly its alerts.
pub trait AlertStateStore: foresight_notifier::outbox::OutboxStore + Send + Sync + 'static {
    /// Saved alert states as `(tenant, JSON)`, of the given telemetry partitions (`None`:
    /// all). A tenant may come in several rows.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn load_alert_states(&self, partitions: Option<&[i32]>)
    -> Result<Vec<(String, String)>, Error>;
    /// Saves `(tenant, partition, JSON)` rows (partition `-1` on one node) and the
    /// transitions, in one transaction.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn store_alert_states(
        &self,
        states: &[(String, i32, String)],
        transitions: &[HistoryEntry],
        at_ms: i64,
    ) -> Result<(), Error>;
    /// Replays the batches kept since `since_ms`, oldest first; returns how many. In
    /// cluster mode the telemetry topic replays them instead, and this is none.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn replay_batches(&self, since_ms: i64, f: &mut dyn FnMut(&str, &[u8]))
    -> Result<usize, Error>;
    /// Deletes batches, history and finished notifications past their retention, and
    /// expired console sessions; returns (batches, history, notifications).
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn prune_before(
        &self,
        batches_before_ms: i64,
        history_before_ms: i64,
        now_ms: i64,
    ) -> Result<(usize, usize, usize), Error>;
}

impl AlertStateStore for Store {
    fn load_alert_states(&self, _: Option<&[i32]>) -> Result<Vec<(String, String)>, Error> {
        self.alert_states()
    }

    fn store_alert_states(
        &self,
        states: &[(String, i32, String)],
        transitions: &[HistoryEntry],
        at_ms: i64,
    ) -> Result<(), Error> {
        let states: Vec<(String, String)> = states
            .iter()
            .map(|(t, _, j)| (t.clone(), j.clone()))
            .collect();
        self.save_alert_states(&states, transitions, at_ms)
    }

    fn replay_batches(
        &self,
        since_ms: i64,
        f: &mut dyn FnMut(&str, &[u8]),
    ) -> Result<usize, Error> {
        self.for_each_batch_since(since_ms, f)
    }

    fn prune_before(
        &self,
        batches_before_ms: i64,
        history_before_ms: i64,
        now_ms: i64,
    ) -> Result<(usize, usize, usize), Error> {
        let pruned = self.prune(batches_before_ms, history_before_ms)?;
        self.prune_sessions(now_ms)?;
        Ok(pruned)
    }
}
