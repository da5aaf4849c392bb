//! The shared state of cluster mode in PostgreSQL: the same contracts as the SQLite
//! [`Store`](super::Store), for several nodes at once. Calls block, as the SQLite
//! store's do (async callers use `spawn_blocking`), on connections from an r2d2 pool.
//!
//! Migrations are numbered as SQLite's are, recorded in `foresight_schema`, and run
//! under a transaction-scoped advisory lock, so that nodes starting together migrate
//! once. So far: tenants and keys ([`TenantStore`]) and the notifier's state
//! ([`OutboxStore`]: outbox entries claimed with `FOR UPDATE SKIP LOCKED` and a lease).

use foresight_proto::now_ms;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use subtle::ConstantTimeEq;

use foresight_notifier::StoreError;
use foresight_notifier::group::LogEntry;
use foresight_notifier::outbox::{NewNotification, OutboxStore, PendingNotification};
use foresight_notifier::silence::Silence;
use foresight_notifier::subscription::Subscription;

use super::alerts::{AlertStateStore, HistoryEntry};
use super::silences::{SilenceStore, matchers_json, new_silence_id, with_matchers};
use super::tenants::{TenantStore, key_id, new_key};
use super::{Error, KeyInfo, Principal, Scope, TenantInfo, hash_key, join, split};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// Schema changes, each applied once in order; append only.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE tenants (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE api_keys (
        key_hash TEXT PRIMARY KEY,
        tenant_id BIGINT NOT NULL REFERENCES tenants(id),
        prefix TEXT NOT NULL,
        scope TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    );
    CREATE INDEX api_keys_prefix ON api_keys (prefix);
    CREATE TABLE operator_keys (
        key_hash TEXT PRIMARY KEY,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        created_at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT
    );
    CREATE INDEX operator_keys_prefix ON operator_keys (prefix);",
    ),
    (
        2,
        // The notifier's state. `claimed_until_ms` is a delivery lease: a node that takes
        // an entry holds it that long, so that two nodes never send it at once, and one
        // that dies mid-send leaves it to another after the lease (same idempotency key).
        "CREATE TABLE outbox (
        id BIGSERIAL PRIMARY KEY,
        tenant TEXT NOT NULL,
        receiver TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        body BYTEA NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at_ms BIGINT NOT NULL,
        claimed_until_ms BIGINT NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at_ms BIGINT NOT NULL,
        delivered_at_ms BIGINT
    );
    CREATE INDEX outbox_due ON outbox (status, next_attempt_at_ms);
    CREATE TABLE notification_log (
        tenant TEXT NOT NULL,
        group_key TEXT NOT NULL,
        integration TEXT NOT NULL,
        firing TEXT NOT NULL,
        resolved TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (tenant, group_key, integration)
    );
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        matchers TEXT NOT NULL,
        starts_at_ms BIGINT NOT NULL,
        ends_at_ms BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX silences_tenant ON silences (tenant, ends_at_ms);
    CREATE TABLE subscriptions (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        filters TEXT NOT NULL,
        failing_since_ms BIGINT,
        disabled_reason TEXT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX subscriptions_tenant ON subscriptions (tenant);
    CREATE TABLE slack_threads (
        tenant TEXT NOT NULL,
        integration TEXT NOT NULL,
        group_key TEXT NOT NULL,
        ts TEXT NOT NULL,
        PRIMARY KEY (tenant, integration, group_key)
    );",
    ),
    (
        3,
        // The evaluators' state: alert states per tenant and telemetry partition (the
        // evaluator that takes a partition over takes exactly its alerts), their
        // history, and the nodes of the service.
        "CREATE TABLE alert_states (
        tenant TEXT NOT NULL,
        part INTEGER NOT NULL,
        states TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        PRIMARY KEY (tenant, part)
    );
    CREATE TABLE alert_history (
        id BIGSERIAL PRIMARY KEY,
        tenant TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        alertname TEXT NOT NULL,
        labels TEXT NOT NULL,
        state TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    );
    CREATE INDEX alert_history_tenant ON alert_history (tenant, at_ms);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        roles TEXT NOT NULL,
        address TEXT NOT NULL,
        partitions TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        seen_at_ms BIGINT NOT NULL
    );",
    ),
    (
        4,
        // Where the other nodes reach this one's API, pinned by its certificate.
        "ALTER TABLE nodes ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';",
    ),
    (
        5,
        // The durability ledger, written by the evaluator that owns the cluster.
        "CREATE TABLE durability_events (
        tenant TEXT NOT NULL,
        cluster TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        topic TEXT NOT NULL,
        partition BIGINT NOT NULL,
        previous_epoch BIGINT NOT NULL,
        epoch BIGINT NOT NULL,
        check_name TEXT NOT NULL,
        offsets_lost BIGINT NOT NULL,
        clean BOOLEAN NOT NULL,
        message TEXT NOT NULL,
        UNIQUE (tenant, cluster, topic, partition, previous_epoch, epoch, check_name)
    );
    CREATE INDEX durability_events_cluster ON durability_events (tenant, cluster, at_ms);",
    ),
];

/// How long a node holds an outbox entry it took, by default: longer than any send may
/// take (see [`PgStore::with_delivery_lease`]).
pub const DELIVERY_LEASE_MS: i64 = 60_000;

/// Any number, the same on every node: the key of the migration lock.
const MIGRATION_LOCK: i64 = 0x666f_7265_7369_6768;

/// The schema version this build writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

fn pg(e: postgres::Error) -> Error {
    Error::Postgres(e.to_string())
}

/// Shared state in PostgreSQL.
pub struct PgStore {
    /// Always `Some` but in `drop`, which hands it to a thread of its own.
    pool: Option<Pool>,
    /// How long a claimed outbox entry is this node's.
    lease_ms: i64,
}

impl Drop for PgStore {
    /// The synchronous client closes its connections by blocking on a runtime of its
    /// own, which panics on a tokio thread: the last handle may well be dropped on one.
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(pool));
        }
    }
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host:port/db`) with a pool of at most
    /// `connections`, and brings the schema to [`VERSION`].
    ///
    /// # Errors
    /// [`Error::Postgres`] when the server does not answer or the URL is wrong;
    /// [`Error::Schema`] for a database written by a newer build.
    pub fn connect(url: &str, connections: u32) -> Result<PgStore, Error> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| Error::Postgres(format!("{url}: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(connections.max(1))
            .connection_timeout(std::time::Duration::from_secs(3))
            .build(manager)
            .map_err(|e| Error::Postgres(e.to_string()))?;
        let store = PgStore {
            pool: Some(pool),
            lease_ms: DELIVERY_LEASE_MS,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Holds each claimed outbox entry for `lease_ms` (longer than the longest
    /// receiver timeout, or a slow send is sent again by another node).
    pub fn with_delivery_lease(mut self, lease_ms: i64) -> Self {
        self.lease_ms = lease_ms.max(1);
        self
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, Error> {
        self.pool
            .as_ref()
            .ok_or_else(|| Error::Postgres("the store is closing".into()))?
            .get()
            .map_err(|e| Error::Postgres(format!("no connection to PostgreSQL: {e}")))
    }

    fn migrate(&self) -> Result<(), Error> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS foresight_schema (version INTEGER NOT NULL)")
            .map_err(pg)?;
        let version: i32 = tx
            .query_opt("SELECT max(version) FROM foresight_schema", &[])
            .map_err(pg)?
            .and_then(|r| r.get::<_, Option<i32>>(0))
            .unwrap_or(0);
        if version > VERSION {
            return Err(Error::Schema(format!(
                "the PostgreSQL database is at schema version {version}; this build knows versions up to {VERSION}: run the newer foresight"
            )));
        }
        for (n, sql) in MIGRATIONS {
            if *n > version {
                tx.batch_execute(sql).map_err(pg)?;
                tx.execute("INSERT INTO foresight_schema (version) VALUES ($1)", &[n])
                    .map_err(pg)?;
            }
        }
        tx.commit().map_err(pg)
    }

    /// The schema version of the database.
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub fn version(&self) -> Result<i32, Error> {
        let mut c = self.conn()?;
        let row = c
            .query_one("SELECT max(version) FROM foresight_schema", &[])
            .map_err(pg)?;
        Ok(row.get::<_, Option<i32>>(0).unwrap_or(0))
    }
}

impl TenantStore for PgStore {
    fn ensure_tenant(&self, name: &str) -> Result<i64, Error> {
        let mut c = self.conn()?;
        c.execute(
            "INSERT INTO tenants (name, created_at_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &now_ms()],
        )
        .map_err(pg)?;
        let row = c
            .query_one("SELECT id FROM tenants WHERE name = $1", &[&name])
            .map_err(pg)?;
        Ok(row.get(0))
    }

    fn create_scoped_key(&self, tenant: &str, scope: Scope, name: &str) -> Result<String, Error> {
        let tenant_id = self.ensure_tenant(tenant)?;
        let key = new_key();
        self.conn()?
            .execute(
                "INSERT INTO api_keys (key_hash, tenant_id, prefix, created_at_ms, scope, name)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &hash_key(&key),
                    &tenant_id,
                    &key_id(&key),
                    &now_ms(),
                    &scope.as_str(),
                    &name,
                ],
            )
            .map_err(pg)?;
        Ok(key)
    }

    fn create_operator_key(&self, name: &str) -> Result<String, Error> {
        let key = new_key();
        self.conn()?
            .execute(
                "INSERT INTO operator_keys (key_hash, prefix, name, created_at_ms) VALUES ($1, $2, $3, $4)",
                &[&hash_key(&key), &key_id(&key), &name, &now_ms()],
            )
            .map_err(pg)?;
        Ok(key)
    }

    fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, Error> {
        let hash = hash_key(key);
        let id = key_id(key);
        let mut c = self.conn()?;
        let mut found = None;
        for r in c
            .query(
                "SELECT k.key_hash, t.id, t.name, k.scope FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                 WHERE k.prefix = $1 AND k.revoked_at_ms IS NULL",
                &[&id],
            )
            .map_err(pg)?
        {
            let stored: String = r.get(0);
            if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(Principal::Tenant {
                    id: r.get(1),
                    name: r.get(2),
                    scope: r.get::<_, String>(3).parse().unwrap_or(Scope::Read),
                });
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        for r in c
            .query(
                "SELECT key_hash FROM operator_keys WHERE prefix = $1 AND revoked_at_ms IS NULL",
                &[&id],
            )
            .map_err(pg)?
        {
            let stored: String = r.get(0);
            if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(Principal::Operator);
            }
        }
        Ok(found)
    }

    fn tenants(&self) -> Result<Vec<TenantInfo>, Error> {
        let rows = self
            .conn()?
            .query(
                "SELECT t.name, t.created_at_ms,
                        (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND k.revoked_at_ms IS NULL)
                 FROM tenants t ORDER BY t.name",
                &[],
            )
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| TenantInfo {
                name: r.get(0),
                created_at_ms: r.get(1),
                active_keys: r.get(2),
            })
            .collect())
    }

    fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        let mut c = self.conn()?;
        let rows = match tenant {
            Some(t) => {
                if c.query_opt("SELECT id FROM tenants WHERE name = $1", &[&t])
                    .map_err(pg)?
                    .is_none()
                {
                    return Err(Error::NotFound(format!("tenant {t}")));
                }
                c.query(
                    "SELECT k.prefix, t.name, k.scope, k.name, k.created_at_ms, k.revoked_at_ms
                     FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                     WHERE t.name = $1 ORDER BY k.created_at_ms, k.prefix",
                    &[&t],
                )
                .map_err(pg)?
            }
            None => c
                .query(
                    "SELECT prefix, NULL::TEXT, 'operator', name, created_at_ms, revoked_at_ms
                     FROM operator_keys ORDER BY created_at_ms, prefix",
                    &[],
                )
                .map_err(pg)?,
        };
        Ok(rows
            .iter()
            .map(|r| KeyInfo {
                id: r.get(0),
                tenant: r.get(1),
                scope: r.get(2),
                name: r.get(3),
                created_at_ms: r.get(4),
                revoked_at_ms: r.get(5),
            })
            .collect())
    }

    fn tenant_id(&self, name: &str) -> Result<i64, Error> {
        self.conn()?
            .query_opt("SELECT id FROM tenants WHERE name = $1", &[&name])
            .map_err(pg)?
            .map(|r| r.get(0))
            .ok_or_else(|| Error::NotFound(format!("tenant {name}")))
    }

    fn revoke_key(&self, tenant: Option<&str>, id: &str) -> Result<(), Error> {
        let mut c = self.conn()?;
        let n = match tenant {
            Some(t) => c
                .execute(
                    "UPDATE api_keys SET revoked_at_ms = $3
                     WHERE prefix = $2 AND revoked_at_ms IS NULL
                       AND tenant_id = (SELECT id FROM tenants WHERE name = $1)",
                    &[&t, &id, &now_ms()],
                )
                .map_err(pg)?,
            None => c
                .execute(
                    "UPDATE operator_keys SET revoked_at_ms = $2 WHERE prefix = $1 AND revoked_at_ms IS NULL",
                    &[&id, &now_ms()],
                )
                .map_err(pg)?,
        };
        if n == 0 {
            return Err(Error::NotFound(format!("key {id}")));
        }
        Ok(())
    }
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("PostgreSQL: {e}"))
}

fn subscription_from_row(r: &postgres::Row) -> Subscription {
    let filters: String = r.get(4);
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
    Subscription {
        id: r.get(0),
        tenant: r.get(1),
        url: r.get(2),
        secret: r.get(3),
        categories: list("category"),
        severities: list("severity"),
        clusters: list("cluster"),
        failing_since_ms: r.get(5),
        disabled_reason: r.get(6),
        created_at_ms: r.get(7),
    }
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, tenant, url, secret, filters, failing_since_ms, disabled_reason, created_at_ms";

impl PgStore {
    fn outbox_conn(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, StoreError> {
        self.conn().map_err(store_err)
    }

    /// Stores a new subscription (its id and secret already generated).
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub fn create_subscription(&self, s: &Subscription) -> Result<(), Error> {
        let filters = serde_json::json!({
            "category": s.categories, "severity": s.severities, "cluster": s.clusters,
        });
        self.conn()?
            .execute(
                "INSERT INTO subscriptions (id, tenant, url, secret, filters, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&s.id, &s.tenant, &s.url, &s.secret, &filters.to_string(), &s.created_at_ms],
            )
            .map_err(pg)?;
        Ok(())
    }

    /// Deletes a subscription of `tenant`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none; [`Error::Postgres`].
    pub fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let n = self
            .conn()?
            .execute(
                "DELETE FROM subscriptions WHERE id = $1 AND tenant = $2",
                &[&id, &tenant],
            )
            .map_err(pg)?;
        if n == 0 {
            return Err(Error::NotFound(format!("subscription {id}")));
        }
        Ok(())
    }

    /// Outbox rows of `tenant` whose `column` (`receiver` or `status`) is `value`,
    /// newest first.
    fn outbox_rows(
        &self,
        column: &'static str,
        tenant: &str,
        value: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error> {
        Ok(self
            .conn()?
            .query(
                &format!(
                    "SELECT id, receiver, status, attempts, COALESCE(last_error, ''), created_at_ms FROM outbox
                     WHERE tenant = $1 AND {column} = $2 ORDER BY id DESC LIMIT $3"
                ),
                &[&tenant, &value, &(limit as i64)],
            )
            .map_err(pg)?
            .iter()
            .map(|r| super::Delivery {
                id: r.get(0),
                receiver: r.get(1),
                status: r.get(2),
                attempts: r.get::<_, i32>(3).max(0) as u32,
                last_error: r.get(4),
                created_at_ms: r.get(5),
            })
            .collect())
    }

    /// Outbox entries by status, all tenants.
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub fn outbox_counts(&self) -> Result<std::collections::HashMap<String, i64>, Error> {
        Ok(self
            .conn()?
            .query("SELECT status, count(*) FROM outbox GROUP BY status", &[])
            .map_err(pg)?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
}

impl OutboxStore for PgStore {
    fn enqueue(&self, n: &NewNotification) -> Result<bool, StoreError> {
        let changed = self
            .outbox_conn()?
            .execute(
                "INSERT INTO outbox (tenant, receiver, idempotency_key, body, next_attempt_at_ms, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (idempotency_key) DO NOTHING",
                &[&n.tenant, &n.receiver, &n.idempotency_key, &n.body, &n.created_at_ms],
            )
            .map_err(store_err)?;
        Ok(changed == 1)
    }

    /// Claims the due entries for this node: rows another node holds (locked now, or
    /// leased and not yet expired) are skipped.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<PendingNotification>, StoreError> {
        let rows = self
            .outbox_conn()?
            .query(
                "UPDATE outbox SET claimed_until_ms = $1 + $3
                 WHERE id IN (
                     SELECT id FROM outbox
                     WHERE status = 'pending' AND next_attempt_at_ms <= $1 AND claimed_until_ms <= $1
                     ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING id, tenant, receiver, idempotency_key, body, created_at_ms, attempts",
                &[&now_ms, &(limit as i64), &self.lease_ms],
            )
            .map_err(store_err)?;
        let mut out: Vec<PendingNotification> = rows
            .iter()
            .map(|r| PendingNotification {
                id: r.get(0),
                notification: NewNotification {
                    tenant: r.get(1),
                    receiver: r.get(2),
                    idempotency_key: r.get(3),
                    body: r.get(4),
                    created_at_ms: r.get(5),
                },
                attempts: r.get::<_, i32>(6).max(0) as u32,
            })
            .collect();
        out.sort_by_key(|p| p.id);
        Ok(out)
    }

    fn mark_delivered(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        self.outbox_conn()?
            .execute(
                "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at_ms = $2,
                     last_error = NULL, claimed_until_ms = 0 WHERE id = $1",
                &[&id, &now_ms],
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
        let mut c = self.outbox_conn()?;
        match next_attempt_ms {
            Some(next) => c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at_ms = $3,
                     claimed_until_ms = 0 WHERE id = $1",
                &[&id, &error, &next],
            ),
            None => c.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, status = 'dead',
                     claimed_until_ms = 0 WHERE id = $1",
                &[&id, &error],
            ),
        }
        .map_err(store_err)?;
        Ok(())
    }

    fn subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, StoreError> {
        Ok(self
            .outbox_conn()?
            .query(
                &format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant = $1 ORDER BY created_at_ms"),
                &[&tenant],
            )
            .map_err(store_err)?
            .iter()
            .map(subscription_from_row)
            .collect())
    }

    fn subscription(&self, tenant: &str, id: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self
            .outbox_conn()?
            .query_opt(
                &format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant = $1 AND id = $2"
                ),
                &[&tenant, &id],
            )
            .map_err(store_err)?
            .as_ref()
            .map(subscription_from_row))
    }

    fn subscription_result(
        &self,
        tenant: &str,
        id: &str,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut c = self.outbox_conn()?;
        match error {
            None => c.execute(
                "UPDATE subscriptions SET failing_since_ms = NULL WHERE id = $1 AND tenant = $2",
                &[&id, &tenant],
            ),
            Some(e) => c.execute(
                "UPDATE subscriptions SET
                   failing_since_ms = COALESCE(failing_since_ms, $3),
                   disabled_reason = CASE WHEN COALESCE(failing_since_ms, $3) <= $3 - $4
                       THEN 'failing for a day; last error: ' || $5 ELSE disabled_reason END
                 WHERE id = $1 AND tenant = $2",
                &[
                    &id,
                    &tenant,
                    &now_ms,
                    &foresight_notifier::subscription::DISABLE_AFTER_MS,
                    &e,
                ],
            ),
        }
        .map_err(store_err)?;
        Ok(())
    }

    fn postpone(&self, id: i64, next_attempt_ms: i64) -> Result<(), StoreError> {
        self.outbox_conn()?
            .execute(
                "UPDATE outbox SET next_attempt_at_ms = $2, claimed_until_ms = 0 WHERE id = $1",
                &[&id, &next_attempt_ms],
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
        let mut c = self.outbox_conn()?;
        let mut tx = c.transaction().map_err(store_err)?;
        let changed = tx
            .execute(
                "INSERT INTO outbox (tenant, receiver, idempotency_key, body, next_attempt_at_ms, created_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (idempotency_key) DO NOTHING",
                &[&n.tenant, &n.receiver, &n.idempotency_key, &n.body, &n.created_at_ms],
            )
            .map_err(store_err)?;
        tx.execute(
            "INSERT INTO notification_log (tenant, group_key, integration, firing, resolved, at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, group_key, integration) DO UPDATE SET firing = $4, resolved = $5, at_ms = $6",
            &[
                &n.tenant,
                &group_key,
                &n.receiver,
                &join(&log.firing),
                &join(&log.resolved),
                &log.at_ms,
            ],
        )
        .map_err(store_err)?;
        tx.commit().map_err(store_err)?;
        Ok(changed == 1)
    }

    fn notification_log(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, String, LogEntry)>, StoreError> {
        Ok(self
            .outbox_conn()?
            .query(
                "SELECT group_key, integration, firing, resolved, at_ms FROM notification_log WHERE tenant = $1",
                &[&tenant],
            )
            .map_err(store_err)?
            .iter()
            .map(|r| {
                let firing: String = r.get(2);
                let resolved: String = r.get(3);
                (
                    r.get(0),
                    r.get(1),
                    LogEntry {
                        firing: split(&firing),
                        resolved: split(&resolved),
                        at_ms: r.get(4),
                    },
                )
            })
            .collect())
    }

    fn silences(&self, tenant: &str) -> Result<Vec<Silence>, StoreError> {
        Ok(self
            .outbox_conn()?
            .query(
                "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms
                 FROM silences WHERE tenant = $1 AND ends_at_ms > $2",
                &[&tenant, &now_ms()],
            )
            .map_err(store_err)?
            .iter()
            .map(silence_row)
            .collect())
    }

    fn thread(
        &self,
        tenant: &str,
        integration: &str,
        group_key: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .outbox_conn()?
            .query_opt(
                "SELECT ts FROM slack_threads WHERE tenant = $1 AND integration = $2 AND group_key = $3",
                &[&tenant, &integration, &group_key],
            )
            .map_err(store_err)?
            .map(|r| r.get(0)))
    }

    fn set_thread(
        &self,
        tenant: &str,
        integration: &str,
        group_key: &str,
        ts: &str,
    ) -> Result<(), StoreError> {
        self.outbox_conn()?
            .execute(
                "INSERT INTO slack_threads (tenant, integration, group_key, ts) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, integration, group_key) DO UPDATE SET ts = $4",
                &[&tenant, &integration, &group_key, &ts],
            )
            .map_err(store_err)?;
        Ok(())
    }
}

fn silence_row(r: &postgres::Row) -> Silence {
    with_matchers((
        Silence {
            id: r.get(0),
            matchers: Vec::new(),
            starts_at_ms: r.get(2),
            ends_at_ms: r.get(3),
            created_by: r.get(4),
            comment: r.get(5),
            updated_at_ms: r.get(6),
        },
        r.get(1),
    ))
}

impl SilenceStore for PgStore {
    fn put_silence(&self, tenant: &str, s: &Silence) -> Result<String, Error> {
        let json = matchers_json(s);
        let mut c = self.conn()?;
        if !s.id.is_empty() {
            let changed = c
                .execute(
                    "UPDATE silences SET matchers = $3, starts_at_ms = $4, ends_at_ms = $5, created_by = $6,
                         comment = $7, updated_at_ms = $8
                     WHERE id = $1 AND tenant = $2",
                    &[&s.id, &tenant, &json, &s.starts_at_ms, &s.ends_at_ms, &s.created_by, &s.comment, &now_ms()],
                )
                .map_err(pg)?;
            if changed == 0 {
                return Err(Error::NotFound(format!("silence {}", s.id)));
            }
            return Ok(s.id.clone());
        }
        let id = new_silence_id();
        c.execute(
            "INSERT INTO silences (id, tenant, matchers, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[&id, &tenant, &json, &s.starts_at_ms, &s.ends_at_ms, &s.created_by, &s.comment, &now_ms()],
        )
        .map_err(pg)?;
        Ok(id)
    }

    fn list_silences(&self, tenant: &str) -> Result<Vec<Silence>, Error> {
        Ok(self
            .conn()?
            .query(
                "SELECT id, matchers, starts_at_ms, ends_at_ms, created_by, comment, updated_at_ms
                 FROM silences WHERE tenant = $1 ORDER BY updated_at_ms DESC",
                &[&tenant],
            )
            .map_err(pg)?
            .iter()
            .map(silence_row)
            .collect())
    }

    fn expire_silence(&self, tenant: &str, id: &str) -> Result<(), Error> {
        let now = now_ms();
        let changed = self
            .conn()?
            .execute(
                "UPDATE silences SET ends_at_ms = LEAST(ends_at_ms, $3), starts_at_ms = LEAST(starts_at_ms, $3),
                     updated_at_ms = $3
                 WHERE id = $1 AND tenant = $2",
                &[&id, &tenant, &now],
            )
            .map_err(pg)?;
        if changed == 0 {
            return Err(Error::NotFound(format!("silence {id}")));
        }
        Ok(())
    }
}

impl AlertStateStore for PgStore {
    fn load_alert_states(
        &self,
        partitions: Option<&[i32]>,
    ) -> Result<Vec<(String, String)>, Error> {
        let mut c = self.conn()?;
        let rows = match partitions {
            Some(parts) => c.query(
                "SELECT tenant, states FROM alert_states WHERE part = ANY($1) ORDER BY tenant, part",
                &[&parts],
            ),
            None => c.query("SELECT tenant, states FROM alert_states ORDER BY tenant, part", &[]),
        }
        .map_err(pg)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn store_alert_states(
        &self,
        states: &[(String, i32, String)],
        transitions: &[HistoryEntry],
        at_ms: i64,
    ) -> Result<(), Error> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(pg)?;
        for (tenant, part, json) in states {
            tx.execute(
                "INSERT INTO alert_states (tenant, part, states, at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (tenant, part) DO UPDATE SET states = excluded.states, at_ms = excluded.at_ms",
                &[tenant, part, json, &at_ms],
            )
            .map_err(pg)?;
        }
        for h in transitions {
            tx.execute(
                "INSERT INTO alert_history (tenant, fingerprint, alertname, labels, state, at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &h.tenant,
                    &h.fingerprint,
                    &h.alertname,
                    &serde_json::to_string(&h.labels).unwrap_or_default(),
                    &h.state,
                    &h.at_ms,
                ],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)
    }

    fn replay_batches(&self, _: i64, _: &mut dyn FnMut(&str, &[u8])) -> Result<usize, Error> {
        Ok(0)
    }

    fn prune_before(
        &self,
        _batches_before_ms: i64,
        history_before_ms: i64,
        _now_ms: i64,
    ) -> Result<(usize, usize, usize), Error> {
        let mut c = self.conn()?;
        let history = c
            .execute(
                "DELETE FROM alert_history WHERE at_ms < $1",
                &[&history_before_ms],
            )
            .map_err(pg)?;
        let outbox = c
            .execute(
                "DELETE FROM outbox WHERE status IN ('delivered', 'dead') AND created_at_ms < $1",
                &[&history_before_ms],
            )
            .map_err(pg)?;
        Ok((0, history as usize, outbox as usize))
    }
}

/// A node of the service as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// Where its API listens.
    pub address: String,
    /// The telemetry partitions its evaluator owns.
    pub partitions: Vec<i32>,
    /// When it started, Unix ms.
    pub started_at_ms: i64,
    /// Its last heartbeat, Unix ms.
    pub seen_at_ms: i64,
    /// The SHA-256 fingerprint of its API's certificate, which the other nodes pin.
    pub fingerprint: String,
}

impl PgStore {
    /// Records this node's heartbeat: its roles, address and partitions.
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub fn heartbeat(&self, node: &NodeInfo) -> Result<(), Error> {
        self.conn()?
            .execute(
                "INSERT INTO nodes (node_id, roles, address, partitions, started_at_ms, seen_at_ms, fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (node_id) DO UPDATE SET roles = excluded.roles, address = excluded.address,
                     partitions = excluded.partitions, started_at_ms = excluded.started_at_ms,
                     seen_at_ms = excluded.seen_at_ms, fingerprint = excluded.fingerprint",
                &[
                    &node.node_id,
                    &node.roles.join(","),
                    &node.address,
                    &serde_json::to_string(&node.partitions).unwrap_or_default(),
                    &node.started_at_ms,
                    &node.seen_at_ms,
                    &node.fingerprint,
                ],
            )
            .map_err(pg)?;
        Ok(())
    }

    /// Every node that ever reported, by id.
    ///
    /// # Errors
    /// [`Error::Postgres`].
    pub fn nodes(&self) -> Result<Vec<NodeInfo>, Error> {
        Ok(self
            .conn()?
            .query(
                "SELECT node_id, roles, address, partitions, started_at_ms, seen_at_ms, fingerprint FROM nodes ORDER BY node_id",
                &[],
            )
            .map_err(pg)?
            .iter()
            .map(|r| NodeInfo {
                node_id: r.get(0),
                roles: r
                    .get::<_, String>(1)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                address: r.get(2),
                partitions: serde_json::from_str(&r.get::<_, String>(3)).unwrap_or_default(),
                started_at_ms: r.get(4),
                seen_at_ms: r.get(5),
                fingerprint: r.get(6),
            })
            .collect())
    }
}

impl super::subscriptions::SubscriptionStore for PgStore {
    fn create_subscription(&self, s: &Subscription) -> Result<(), Error> {
        PgStore::create_subscription(self, s)
    }
    fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), Error> {
        PgStore::delete_subscription(self, tenant, id)
    }
    fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, Error> {
        OutboxStore::subscriptions(self, tenant).map_err(|e| Error::Outbox(e.0))
    }
    fn get_subscription(&self, tenant: &str, id: &str) -> Result<Option<Subscription>, Error> {
        OutboxStore::subscription(self, tenant, id).map_err(|e| Error::Outbox(e.0))
    }
    fn receiver_deliveries(
        &self,
        tenant: &str,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error> {
        self.outbox_rows("receiver", tenant, receiver, limit)
    }
    fn status_deliveries(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error> {
        self.outbox_rows("status", tenant, status, limit)
    }
}

impl super::durability::HistoryStore for PgStore {
    fn history(
        &self,
        tenant: &str,
        alertname: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, Error> {
        Ok(self
            .conn()?
            .query(
                "SELECT tenant, fingerprint, alertname, labels, state, at_ms FROM alert_history
                 WHERE tenant = $1 AND at_ms >= $2 AND ($3::TEXT IS NULL OR alertname = $3)
                 ORDER BY at_ms DESC, id DESC LIMIT $4",
                &[&tenant, &since_ms, &alertname, &(limit as i64)],
            )
            .map_err(pg)?
            .iter()
            .map(|r| HistoryEntry {
                tenant: r.get(0),
                fingerprint: r.get(1),
                alertname: r.get(2),
                labels: serde_json::from_str(&r.get::<_, String>(3)).unwrap_or_default(),
                state: r.get(4),
                at_ms: r.get(5),
            })
            .collect())
    }

    fn record_durability(
        &self,
        tenant: &str,
        cluster: &str,
        events: &[foresight_proto::v1::Event],
    ) -> Result<usize, Error> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(pg)?;
        let mut n = 0;
        for d in events.iter().filter_map(super::DurabilityEvent::from_event) {
            n += tx
                .execute(
                    "INSERT INTO durability_events (tenant, cluster, at_ms, topic, partition, previous_epoch, epoch, check_name, offsets_lost, clean, message)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                    &[
                        &tenant,
                        &cluster,
                        &d.at_ms,
                        &d.topic,
                        &d.partition,
                        &d.previous_epoch,
                        &d.epoch,
                        &d.check,
                        &d.offsets_lost,
                        &d.clean,
                        &d.message,
                    ],
                )
                .map_err(pg)? as usize;
        }
        tx.commit().map_err(pg)?;
        Ok(n)
    }

    fn ledger(
        &self,
        tenant: &str,
        cluster: &str,
        now_ms: i64,
        limit: usize,
    ) -> Result<super::DurabilityLedger, Error> {
        let mut c = self.conn()?;
        let mut windows = Vec::new();
        for days in [1i64, 7, 30] {
            let since = now_ms - days * 86_400_000;
            let r = c
                .query_one(
                    "SELECT COALESCE(SUM(offsets_lost), 0)::BIGINT, COUNT(DISTINCT (topic, partition)),
                            COALESCE(SUM(CASE WHEN clean THEN 0 ELSE 1 END), 0)::BIGINT
                     FROM durability_events WHERE tenant = $1 AND cluster = $2 AND at_ms >= $3",
                    &[&tenant, &cluster, &since],
                )
                .map_err(pg)?;
            windows.push(super::LedgerWindow {
                days,
                offsets_lost: r.get(0),
                partitions_affected: r.get(1),
                unclean_elections: r.get(2),
            });
        }
        let events = c
            .query(
                "SELECT at_ms, topic, partition, previous_epoch, epoch, check_name, offsets_lost, clean, message
                 FROM durability_events WHERE tenant = $1 AND cluster = $2 ORDER BY at_ms DESC LIMIT $3",
                &[&tenant, &cluster, &(limit as i64)],
            )
            .map_err(pg)?
            .iter()
            .map(|r| super::DurabilityEvent {
                at_ms: r.get(0),
                topic: r.get(1),
                partition: r.get(2),
                previous_epoch: r.get(3),
                epoch: r.get(4),
                check: r.get(5),
                offsets_lost: r.get(6),
                clean: r.get(7),
                message: r.get(8),
            })
            .collect();
        Ok(super::DurabilityLedger { windows, events })
    }
}
