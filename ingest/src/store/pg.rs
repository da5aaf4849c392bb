//! The shared state of cluster mode in PostgreSQL: the same contracts as the SQLite
//! [`Store`](super::Store), for several nodes at once. Calls block, as the SQLite
//! store's do (async callers use `spawn_blocking`), on connections from an r2d2 pool.
//!
//! Migrations are numbered as SQLite's are, recorded in `foresight_schema`, and run
//! under a transaction-scoped advisory lock, so that nodes starting together migrate
//! once. So far: tenants and keys ([`TenantStore`]).

use foresight_proto::now_ms;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use subtle::ConstantTimeEq;

use super::tenants::{TenantStore, key_id, new_key};
use super::{Error, KeyInfo, Principal, Scope, TenantInfo, hash_key};

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// Schema changes, each applied once in order; append only.
const MIGRATIONS: &[(i32, &str)] = &[(
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
)];

/// Any number, the same on every node: the key of the migration lock.
const MIGRATION_LOCK: i64 = 0x666f_7265_7369_6768;

/// The schema version this build writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

fn pg(e: postgres::Error) -> Error {
    Error::Postgres(e.to_string())
}

/// Shared state in PostgreSQL.
pub struct PgStore {
    pool: Pool,
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
        let store = PgStore { pool };
        store.migrate()?;
        Ok(store)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, Error> {
        self.pool
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
