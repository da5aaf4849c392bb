//! The schema and its numbered migrations.

use rusqlite::Connection;

use super::Error;
#[cfg(test)]
use super::Store;

/// Version 1: every table, as `IF NOT EXISTS`, so that a file from before versions were
/// numbered gains the tables it lacks.
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

/// Schema changes after version 1, each applied once, in order, in one transaction that
/// also sets `PRAGMA user_version` to its number. Append only: a released migration is
/// never edited (the file on an operator's disk already ran it).
const MIGRATIONS: &[(u32, &str)] = &[(
    2,
    // The web console's sessions and one-time sign-in links, each tied to the API key
    // it was opened with, so that revoking the key ends them.
    "CREATE TABLE console_sessions (
        token_hash TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL REFERENCES api_keys(key_hash),
        kind TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );
    CREATE INDEX console_sessions_expiry ON console_sessions (expires_at_ms);",
)];

/// The schema version this build writes.
pub const VERSION: u32 = 1 + MIGRATIONS.len() as u32;

/// Brings a file of any earlier version (or a new one) to [`VERSION`].
///
/// # Errors
/// [`Error::Schema`] for a file written by a newer build; [`Error::Sqlite`] otherwise.
pub(super) fn migrate(conn: &Connection) -> Result<(), Error> {
    let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > VERSION {
        return Err(Error::Schema(format!(
            "foresight.db is at schema version {version}; this build knows versions up to {VERSION}: run the newer foresight, or restore a backup"
        )));
    }
    if version < 1 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)?;
        before_versions(&tx)?;
        tx.pragma_update(None, "user_version", 1)?;
        tx.commit()?;
    }
    for (n, sql) in MIGRATIONS {
        if *n > version.max(1) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", n)?;
            tx.commit()?;
        }
    }
    Ok(())
}

/// Version 1 for files written before schema versions were numbered: the columns such
/// files may lack are found by looking (the only place that looks).
fn before_versions(conn: &Connection) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_before_versions_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("foresight.db");
        {
            // A key table as the first releases wrote it: no scope, no name, no version.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE tenants (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at_ms INTEGER NOT NULL);
                 CREATE TABLE api_keys (key_hash TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id), prefix TEXT NOT NULL, created_at_ms INTEGER NOT NULL, revoked_at_ms INTEGER);
                 INSERT INTO tenants VALUES (1, 'acme', 0);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO api_keys VALUES (?1, 1, ?2, 0, NULL)",
                rusqlite::params![crate::store::hash_key("fsk_old"), "fsk_old"],
            )
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        // The old key still works, with everything its tenant allows.
        let principal = store.authenticate_key("fsk_old").unwrap().unwrap();
        assert_eq!(
            principal,
            crate::store::Principal::Tenant {
                id: 1,
                name: "acme".into(),
                scope: crate::store::Scope::Admin
            }
        );
        let version = |store: &Store| -> u32 {
            store
                .conn()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&store), VERSION);
        drop(store);
        // Reopening changes nothing.
        assert_eq!(version(&Store::open(dir.path()).unwrap()), VERSION);

        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer foresight"), "{err}");
    }
}
