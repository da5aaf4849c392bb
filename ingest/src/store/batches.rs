//! Accepted batches, deduplicated by agent instance and sequence, and their retention.

use rusqlite::params;

use super::{Error, Store};
use foresight_proto::now_ms;

/// Result of storing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Newly stored.
    Stored,
    /// Already stored earlier (a retry).
    Duplicate,
}

impl Store {
    /// Stores an accepted batch durably (committed before returning).
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn insert_batch(
        &self,
        tenant_id: i64,
        agent_instance_id: &str,
        sequence: u64,
        cluster_id: &str,
        body_zstd: &[u8],
    ) -> Result<BatchOutcome, Error> {
        let n = self.conn().execute(
            "INSERT INTO batches (tenant_id, agent_instance_id, sequence, cluster_id, received_at_ms, body_zstd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            params![tenant_id, agent_instance_id, sequence as i64, cluster_id, now_ms(), body_zstd],
        )?;
        Ok(if n == 1 {
            BatchOutcome::Stored
        } else {
            BatchOutcome::Duplicate
        })
    }

    /// The (agent instance, sequence) of a tenant's stored batches, in arrival order.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn batch_sequences(&self, tenant_id: i64) -> Result<Vec<(String, u64)>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT agent_instance_id, sequence FROM batches WHERE tenant_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([tenant_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Calls `f(tenant, body_zstd)` for every batch received at or after `since_ms`, in
    /// arrival order, without holding them all in memory.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn for_each_batch_since(
        &self,
        since_ms: i64,
        mut f: impl FnMut(&str, &[u8]),
    ) -> Result<usize, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT t.name, b.body_zstd FROM batches b JOIN tenants t ON t.id = b.tenant_id
             WHERE b.received_at_ms >= ?1 ORDER BY b.id",
        )?;
        let mut rows = stmt.query([since_ms])?;
        let mut n = 0;
        while let Some(r) = rows.next()? {
            let tenant: String = r.get(0)?;
            let body: Vec<u8> = r.get(1)?;
            f(&tenant, &body);
            n += 1;
        }
        Ok(n)
    }

    /// Deletes batches received before `batches_before_ms`, and alert history and
    /// finished (delivered or dead) outbox entries from before `history_before_ms`;
    /// returns how many of each.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn prune(
        &self,
        batches_before_ms: i64,
        history_before_ms: i64,
    ) -> Result<(usize, usize, usize), Error> {
        let conn = self.conn();
        let batches = conn.execute(
            "DELETE FROM batches WHERE received_at_ms < ?1",
            [batches_before_ms],
        )?;
        let history = conn.execute(
            "DELETE FROM alert_history WHERE at_ms < ?1",
            [history_before_ms],
        )?;
        let outbox = conn.execute(
            "DELETE FROM outbox WHERE status IN ('delivered', 'dead') AND created_at_ms < ?1",
            [history_before_ms],
        )?;
        conn.execute(
            "DELETE FROM durability_events WHERE at_ms < ?1",
            [history_before_ms],
        )?;
        Ok((batches, history, outbox))
    }

    /// Number of stored batches of a tenant.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn batch_count(&self, tenant_id: i64) -> Result<i64, Error> {
        Ok(self.read().query_row(
            "SELECT count(*) FROM batches WHERE tenant_id = ?1",
            [tenant_id],
            |r| r.get(0),
        )?)
    }
}
