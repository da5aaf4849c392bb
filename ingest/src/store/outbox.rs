//! The notification outbox, the notification log and Slack threads: the notifier's `OutboxStore` on SQLite.

use rusqlite::{OptionalExtension, params};

use super::silences::{silence_from_row, with_matchers};
use super::subscriptions::{SUBSCRIPTION_COLUMNS, subscription_from_row};
use super::{Error, Store, join, split, store_err};
use foresight_notifier::StoreError;
use foresight_notifier::group::LogEntry;
use foresight_notifier::outbox::{NewNotification, OutboxStore, PendingNotification};
use foresight_notifier::silence::Silence;
use foresight_notifier::subscription::Subscription;
use foresight_proto::now_ms;

/// One outbox entry as the API and CLI show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Outbox id.
    pub id: i64,
    /// Integration (`receiver/kind/index`).
    pub receiver: String,
    /// `pending`, `delivered` or `dead`.
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, empty when none.
    pub last_error: String,
    /// Unix ms.
    pub created_at_ms: i64,
}

impl Store {
    /// The latest `limit` deliveries to a subscription (or any integration) of `tenant`.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn deliveries(
        &self,
        tenant: &str,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, Error> {
        self.outbox_rows("receiver", tenant, receiver, limit)
    }

    /// The tenant's latest `limit` notifications to any integration, dead ones first.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn recent_deliveries(&self, tenant: &str, limit: usize) -> Result<Vec<Delivery>, Error> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT id, receiver, status, attempts, COALESCE(last_error, ''), created_at_ms FROM outbox
             WHERE tenant = ?1 ORDER BY status = 'dead' DESC, id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![tenant, limit as i64], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                receiver: r.get(1)?,
                status: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                created_at_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Outbox entries by status, all tenants.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn outbox_counts(&self) -> Result<std::collections::HashMap<String, i64>, Error> {
        let conn = self.read();
        let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM outbox GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The notifications of `tenant` that ran out of attempts, newest first.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn dead_notifications(&self, tenant: &str) -> Result<Vec<Delivery>, Error> {
        self.deliveries_by_status(tenant, "dead", usize::MAX >> 1)
    }

    /// The latest `limit` notifications of `tenant` in `status`, newest first.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn deliveries_by_status(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, Error> {
        self.outbox_rows("status", tenant, status, limit)
    }

    /// Outbox rows of `tenant` whose `column` (`receiver` or `status`) is `value`.
    fn outbox_rows(
        &self,
        column: &'static str,
        tenant: &str,
        value: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, Error> {
        let conn = self.read();
        let mut stmt = conn.prepare(&format!(
            "SELECT id, receiver, status, attempts, COALESCE(last_error, ''), created_at_ms FROM outbox
             WHERE tenant = ?1 AND {column} = ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![tenant, value, limit as i64], |r| {
            Ok(Delivery {
                id: r.get(0)?,
                receiver: r.get(1)?,
                status: r.get(2)?,
                attempts: r.get(3)?,
                last_error: r.get(4)?,
                created_at_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl OutboxStore for Store {
    fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant = ?1 ORDER BY created_at_ms"
            ))
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![tenant], subscription_from_row)
            .map_err(store_err)?;
        rows.collect::<Result<_, _>>().map_err(store_err)
    }

    fn subscription(&self, tenant: &str, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.conn()
            .query_row(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant = ?1 AND id = ?2"
                ),
                params![tenant, id],
                subscription_from_row,
            )
            .optional()
            .map_err(store_err)
    }

    fn subscription_result(
        &self,
        tenant: &str,
        id: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        match error {
            None => conn.execute(
                "UPDATE subscriptions SET failing_since_ms = NULL WHERE id = ?1 AND tenant = ?2",
                params![id, tenant],
            ),
            Some(e) => conn.execute(
                "UPDATE subscriptions SET
                   failing_since_ms = COALESCE(failing_since_ms, ?3),
                   disabled_reason = CASE WHEN COALESCE(failing_since_ms, ?3) <= ?3 - ?4
                       THEN 'failing for a day; last error: ' || ?5 ELSE disabled_reason END
                 WHERE id = ?1 AND tenant = ?2",
                params![
                    id,
                    tenant,
                    now_ms,
                    foresight_notifier::subscription::DISABLE_AFTER_MS,
                    e
                ],
            ),
        }
        .map_err(store_err)?;
        Ok(())
    }

    fn postpone(&self, id: i64, next_attempt_ms: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET next_attempt_at_ms = ?2 WHERE id = ?1",
                params![id, next_attempt_ms],
            )
            .map_err(store_err)?;
        Ok(())
    }

    fn enqueue_notified(
        &self,
        n: &NewNotification,
        group_key: &str,
        log: &LogEntry,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(store_err)?;
        let changed = tx
            .execute(
                "INSERT INTO outbox (tenant, receiver, idempotency_key, body, next_attempt_at_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(idempotency_key) DO NOTHING",
                params![n.tenant, n.receiver, n.idempotency_key, n.body, n.created_at_ms],
            )
            .map_err(store_err)?;
        tx.execute(
            "INSERT INTO notification_log (tenant, group_key, integration, firing, resolved, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(tenant, group_key, integration) DO UPDATE SET firing = ?4, resolved = ?5, at_ms = ?6",
            params![n.tenant, group_key, n.receiver, join(&log.firing), join(&log.resolved), log.at_ms],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(changed == 1)
    }

    fn notification_log(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, String, LogEntry)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT group_key, integration, firing, resolved, at_ms FROM notification_log WHERE tenant = ?1")
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![tenant], |r| {
                let firing: String = r.get(2)?;
                let resolved: String = r.get(3)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    LogEntry {
                        firing: split(&firing),
                        resolved: split(&resolved),
                        at_ms: r.get(4)?,
                    },
                ))
            })
            .map_err(store_err)?;
        rows.collect::<Result<_, _>>().map_err(store_err)
    }

    fn silences(&self, tenant: &str) -> Result<Vec<Silence>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms
                 FROM silences WHERE tenant = ?1 AND ends_at_ms > ?2",
            )
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![tenant, now_ms()], silence_from_row)
            .map_err(store_err)?;
        rows.map(|r| r.map(with_matchers))
            .collect::<Result<_, _>>()
            .map_err(store_err)
    }

    fn thread(
        &self,
        tenant: &str,
        integration: &str,
        group_key: &str,
    ) -> Result<Option<String>, StoreError> {
        self.conn()
            .query_row(
                "SELECT ts FROM slack_threads WHERE tenant = ?1 AND integration = ?2 AND group_key = ?3",
                params![tenant, integration, group_key],
                |r| r.get(0),
            )
            .optional()
            .map_err(store_err)
    }

    fn set_thread(
        &self,
        tenant: &str,
        integration: &str,
        group_key: &str,
        ts: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO slack_threads (tenant, integration, group_key, ts) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(tenant, integration, group_key) DO UPDATE SET ts = ?4",
                params![tenant, integration, group_key, ts],
            )
            .map_err(store_err)?;
        Ok(())
    }

    fn enqueue(&self, n: &NewNotification) -> Result<bool, StoreError> {
        let changed = self
            .conn()
            .execute(
                "INSERT INTO outbox (tenant, receiver, idempotency_key, body, next_attempt_at_ms, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(idempotency_key) DO NOTHING",
                params![n.tenant, n.receiver, n.idempotency_key, n.body, n.created_at_ms],
            )
            .map_err(store_err)?;
        Ok(changed == 1)
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<PendingNotification>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, tenant, receiver, idempotency_key, body, created_at_ms, attempts FROM outbox
                 WHERE status = 'pending' AND next_attempt_at_ms <= ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(store_err)?;
        let rows = stmt
            .query_map(params![now_ms, limit as i64], |r| {
                Ok(PendingNotification {
                    id: r.get(0)?,
                    notification: NewNotification {
                        tenant: r.get(1)?,
                        receiver: r.get(2)?,
                        idempotency_key: r.get(3)?,
                        body: r.get(4)?,
                        created_at_ms: r.get(5)?,
                    },
                    attempts: r.get(6)?,
                })
            })
            .map_err(store_err)?;
        rows.collect::<Result<_, _>>().map_err(store_err)
    }

    fn mark_delivered(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at_ms = ?2, last_error = NULL WHERE id = ?1",
                params![id, now_ms],
            )
            .map_err(store_err)?;
        Ok(())
    }

    fn mark_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        match next_attempt_ms {
            Some(next) => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at_ms = ?3 WHERE id = ?1",
                params![id, error, next],
            ),
            None => conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, status = 'dead' WHERE id = ?1",
                params![id, error],
            ),
        }
        .map_err(store_err)?;
        Ok(())
    }
}
