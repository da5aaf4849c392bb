//! Durable state in one SQLite file (WAL): tenants, hashed API keys, accepted batches
//! (deduplicated by agent instance and sequence), the notification outbox with its
//! notification log, silences, and Slack threads.
//!
//! Calls block; async callers use `spawn_blocking`.

use crate::now_ms;
use std::path::Path;
use std::sync::Mutex;

use foresight_notifier::StoreError;
use foresight_notifier::group::LogEntry;
use foresight_notifier::outbox::{NewNotification, OutboxStore, PendingNotification};
use foresight_notifier::silence::{ApiMatcher, Silence};
use foresight_notifier::subscription::Subscription;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// SQLite failed.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The outbox side of the store failed.
    #[error("store: {0}")]
    Outbox(String),
}

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS operator_keys (
    key_hash TEXT PRIMARY KEY,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS operator_keys_prefix ON operator_keys (prefix);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    agent_instance_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    cluster_id TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    body_zstd BLOB NOT NULL,
    UNIQUE (tenant_id, agent_instance_id, sequence)
);
CREATE INDEX IF NOT EXISTS batches_received ON batches (received_at_ms);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    receiver TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    body BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms INTEGER NOT NULL,
    last_error TEXT,
    created_at_ms INTEGER NOT NULL,
    delivered_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at_ms);
CREATE TABLE IF NOT EXISTS notification_log (
    tenant TEXT NOT NULL,
    group_key TEXT NOT NULL,
    integration TEXT NOT NULL,
    firing TEXT NOT NULL,
    resolved TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, group_key, integration)
);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    matchers TEXT NOT NULL,
    starts_at_ms INTEGER NOT NULL,
    ends_at_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    comment TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS silences_tenant ON silences (tenant, ends_at_ms);
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    filters TEXT NOT NULL,
    failing_since_ms INTEGER,
    disabled_reason TEXT,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS subscriptions_tenant ON subscriptions (tenant);
CREATE TABLE IF NOT EXISTS alert_states (
    tenant TEXT PRIMARY KEY,
    states TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_history (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    alertname TEXT NOT NULL,
    labels TEXT NOT NULL,
    state TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_history_tenant ON alert_history (tenant, at_ms);
CREATE TABLE IF NOT EXISTS durability_events (
    tenant TEXT NOT NULL,
    cluster TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    previous_epoch INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    check_name TEXT NOT NULL,
    offsets_lost INTEGER NOT NULL,
    clean INTEGER NOT NULL,
    message TEXT NOT NULL,
    UNIQUE (tenant, cluster, topic, partition, previous_epoch, epoch, check_name)
);
CREATE INDEX IF NOT EXISTS durability_events_cluster ON durability_events (tenant, cluster, at_ms);
CREATE TABLE IF NOT EXISTS slack_threads (
    tenant TEXT NOT NULL,
    integration TEXT NOT NULL,
    group_key TEXT NOT NULL,
    ts TEXT NOT NULL,
    PRIMARY KEY (tenant, integration, group_key)
);
"#;

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
    /// Which check found it: `epoch_end`, `unclean_election`, `high_watermark_regressed`.
    pub check: String,
    /// Acknowledged offsets lost.
    pub offsets_lost: i64,
    /// Whether the new leader was in the ISR.
    pub clean: bool,
    /// The agent's account of it.
    pub message: String,
}

/// Brings a file from an earlier version up to the current schema.
fn migrate(conn: &Connection) -> Result<(), Error> {
    let has = |table: &str, column: &str| -> Result<bool, Error> {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        for n in names {
            if n? == column {
                return Ok(true);
            }
        }
        Ok(false)
    };
    // Keys from before scopes could do everything in their tenant.
    if !has("api_keys", "scope")? {
        conn.execute_batch("ALTER TABLE api_keys ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin'")?;
    }
    if !has("api_keys", "name")? {
        conn.execute_batch("ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT ''")?;
    }
    conn.execute_batch("CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix)")?;
    Ok(())
}

/// Hashes an API key for storage and lookup. Keys are 256 random bits, so a fast hash
/// is enough: there is nothing to brute-force.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

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

/// Result of storing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Newly stored.
    Stored,
    /// Already stored earlier (a retry).
    Duplicate,
}

impl Store {
    /// Opens (creating if needed) `foresight.db` in `data_dir`.
    ///
    /// # Errors
    /// [`Error::Sqlite`] when the file cannot be opened or migrated.
    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let conn = Connection::open(data_dir.join("foresight.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `name` if missing; returns its id.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn ensure_tenant(&self, name: &str) -> Result<i64, Error> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO tenants (name, created_at_ms) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
            params![name, now_ms()],
        )?;
        Ok(
            conn.query_row("SELECT id FROM tenants WHERE name = ?1", [name], |r| {
                r.get(0)
            })?,
        )
    }

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
        for e in events {
            if e.kind() != foresight_proto::v1::EventKind::Durability {
                continue;
            }
            let label = |k: &str| e.labels.get(k).map(String::as_str).unwrap_or("");
            let int = |k: &str| label(k).parse::<i64>().unwrap_or(-1);
            n += tx.execute(
                "INSERT INTO durability_events (tenant, cluster, at_ms, topic, partition, previous_epoch, epoch, check_name, offsets_lost, clean, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
                params![
                    tenant,
                    cluster,
                    e.timestamp_ms,
                    label("topic"),
                    int("partition"),
                    int("previous_epoch"),
                    int("epoch"),
                    label("check"),
                    int("offsets_lost").max(0),
                    label("clean") != "false",
                    e.message
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
        let conn = self.conn();
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
        let conn = self.conn();
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

    /// Number of stored batches of a tenant.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn batch_count(&self, tenant_id: i64) -> Result<i64, Error> {
        Ok(self.conn().query_row(
            "SELECT count(*) FROM batches WHERE tenant_id = ?1",
            [tenant_id],
            |r| r.get(0),
        )?)
    }
}

fn store_err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

fn join(set: &std::collections::BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

fn split(s: &str) -> std::collections::BTreeSet<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn silence_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Silence, String)> {
    let matchers: String = r.get(1)?;
    Ok((
        Silence {
            id: r.get(0)?,
            matchers: Vec::new(),
            starts_at_ms: r.get(2)?,
            ends_at_ms: r.get(3)?,
            created_by: r.get(4)?,
            comment: r.get(5)?,
            updated_at_ms: r.get(6)?,
        },
        matchers,
    ))
}

/// Parses the stored matchers (the API's JSON form, checked when the silence was made).
fn with_matchers((mut s, json): (Silence, String)) -> Silence {
    let api: Vec<ApiMatcher> = serde_json::from_str(&json).unwrap_or_default();
    s.matchers = api.iter().filter_map(|m| m.to_matcher().ok()).collect();
    s
}

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

fn subscription_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    let filters: String = r.get(4)?;
    let f: serde_json::Value = serde_json::from_str(&filters).unwrap_or_default();
    let list = |k: &str| -> Vec<String> {
        f[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Subscription {
        id: r.get(0)?,
        tenant: r.get(1)?,
        url: r.get(2)?,
        secret: r.get(3)?,
        categories: list("category"),
        severities: list("severity"),
        clusters: list("cluster"),
        failing_since_ms: r.get(5)?,
        disabled_reason: r.get(6)?,
        created_at_ms: r.get(7)?,
    })
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, tenant, url, secret, filters, failing_since_ms, disabled_reason, created_at_ms";

impl Store {
    /// Stores a new subscription (its id and secret already generated).
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn create_subscription(&self, s: &Subscription) -> Result<(), Error> {
        let filters = serde_json::json!({
            "category": s.categories, "severity": s.severities, "cluster": s.clusters,
        });
        self.conn().execute(
            "INSERT INTO subscriptions (id, tenant, url, secret, filters, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![s.id, s.tenant, s.url, s.secret, filters.to_string(), s.created_at_ms],
        )?;
        Ok(())
    }

    /// Deletes a subscription of `tenant`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none.
    pub fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let n = self.conn().execute(
            "DELETE FROM subscriptions WHERE id = ?1 AND tenant = ?2",
            params![id, tenant],
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!("subscription {id}")));
        }
        Ok(())
    }

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

    /// Whether the database answers.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn ping(&self) -> Result<(), Error> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Outbox entries by status, all tenants.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn outbox_counts(&self) -> Result<std::collections::HashMap<String, i64>, Error> {
        let conn = self.conn();
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
        let conn = self.conn();
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

    /// Creates a silence or, with the id of an existing one of the tenant, replaces it
    /// (Alertmanager's update). Returns the id.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none; [`Error::Sqlite`].
    pub fn put_silence(&self, tenant: &str, s: &Silence) -> Result<String, Error> {
        let api: Vec<ApiMatcher> = s.matchers.iter().map(ApiMatcher::from_matcher).collect();
        let json = serde_json::to_string(&api).expect("matchers serialize");
        let conn = self.conn();
        if !s.id.is_empty() {
            let changed = conn
                .execute(
                    "UPDATE silences SET matchers = ?3, starts_at_ms = ?4, ends_at_ms = ?5, created_by = ?6, comment = ?7, updated_at_ms = ?8
                     WHERE id = ?1 AND tenant = ?2",
                    params![s.id, tenant, json, s.starts_at_ms, s.ends_at_ms, s.created_by, s.comment, now_ms()],
                )?;
            if changed == 0 {
                return Err(Error::NotFound(format!("silence {}", s.id)));
            }
            return Ok(s.id.clone());
        }
        let b: [u8; 16] = rand::random();
        let id = format!(
            "{}-{}-{}-{}-{}",
            hex::encode(&b[0..4]),
            hex::encode(&b[4..6]),
            hex::encode(&b[6..8]),
            hex::encode(&b[8..10]),
            hex::encode(&b[10..16])
        );
        conn.execute(
            "INSERT INTO silences (id, tenant, matchers, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, tenant, json, s.starts_at_ms, s.ends_at_ms, s.created_by, s.comment, now_ms()],
        )?;
        Ok(id)
    }

    /// Every silence of `tenant`, newest first.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn list_silences(&self, tenant: &str) -> Result<Vec<Silence>, Error> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms
                 FROM silences WHERE tenant = ?1 ORDER BY updated_at_ms DESC",
        )?;
        let rows = stmt.query_map(params![tenant], silence_from_row)?;
        Ok(rows
            .map(|r| r.map(with_matchers))
            .collect::<Result<_, _>>()?)
    }

    /// Ends a silence of `tenant` now.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none; [`Error::Sqlite`].
    pub fn expire_silence(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let now = now_ms();
        let changed = self
            .conn()
            .execute(
                "UPDATE silences SET ends_at_ms = MIN(ends_at_ms, ?3), starts_at_ms = MIN(starts_at_ms, ?3), updated_at_ms = ?3
                 WHERE id = ?1 AND tenant = ?2",
                params![id, tenant, now],
            )?;
        if changed == 0 {
            return Err(Error::NotFound(format!("silence {id}")));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_authenticate_their_tenant_only_and_are_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = store.create_key("acme").unwrap();
        let (_, tenant) = store.authenticate(&key).unwrap().unwrap();
        assert_eq!(tenant, "acme");
        assert!(store.authenticate("fsk_wrong").unwrap().is_none());
        let raw: i64 = store
            .conn()
            .query_row(
                "SELECT count(*) FROM api_keys WHERE key_hash = ?1",
                [&key],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(raw, 0, "the plain key must not be stored");
    }

    #[test]
    fn a_retried_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = store.ensure_tenant("acme").unwrap();
        assert_eq!(
            store.insert_batch(t, "a1", 1, "c", b"x").unwrap(),
            BatchOutcome::Stored
        );
        assert_eq!(
            store.insert_batch(t, "a1", 1, "c", b"x").unwrap(),
            BatchOutcome::Duplicate
        );
        assert_eq!(store.batch_count(t).unwrap(), 1);
    }

    #[test]
    fn pruning_keeps_what_is_inside_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = store.ensure_tenant("acme").unwrap();
        store.insert_batch(t, "a1", 1, "c", b"x").unwrap();
        store.insert_batch(t, "a1", 2, "c", b"x").unwrap();
        let entry = HistoryEntry {
            tenant: "acme".into(),
            fingerprint: "f".into(),
            alertname: "A".into(),
            labels: Default::default(),
            state: "firing".into(),
            at_ms: 1_000,
        };
        store
            .save_alert_states(
                &[],
                &[
                    entry.clone(),
                    HistoryEntry {
                        at_ms: 5_000,
                        ..entry
                    },
                ],
                5_000,
            )
            .unwrap();
        let now = now_ms();
        // Batches received now are inside a retention that began a minute ago.
        assert_eq!(store.prune(now - 60_000, 2_000).unwrap(), (0, 1, 0));
        assert_eq!(store.batch_count(t).unwrap(), 2);
        assert_eq!(store.alert_history("acme", None, 0, 10).unwrap().len(), 1);
        // ... and outside one that begins after them.
        assert_eq!(store.prune(now + 1, 2_000).unwrap(), (2, 0, 0));
        assert_eq!(store.batch_count(t).unwrap(), 0);
    }

    #[test]
    fn outbox_survives_reopen_and_dedups_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let n = NewNotification {
            tenant: "acme".into(),
            receiver: "r".into(),
            idempotency_key: "k1".into(),
            body: b"{}".to_vec(),
            created_at_ms: 10,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert!(store.enqueue(&n).unwrap());
            assert!(!store.enqueue(&n).unwrap());
        }
        let store = Store::open(dir.path()).unwrap();
        let due = store.due(10, 10).unwrap();
        assert_eq!(due.len(), 1);
        store.mark_failed(due[0].id, "boom", Some(1_000)).unwrap();
        assert!(store.due(999, 10).unwrap().is_empty());
        assert_eq!(store.due(1_000, 10).unwrap()[0].attempts, 1);
        store.mark_delivered(due[0].id, 1_001).unwrap();
        assert!(store.due(i64::MAX, 10).unwrap().is_empty());
    }
}
