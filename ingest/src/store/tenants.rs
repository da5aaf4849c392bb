//! Tenants and API keys: keys carry one scope (`ingest`, `read`, `admin`) within one
//! tenant; operator keys administer tenants and see no tenant's data.
//!
//! A key is `fsk_` and 64 hex digits (256 random bits). Its first 12 characters are its
//! public id; SQLite finds candidates by id and the SHA-256 of the whole key is compared
//! in constant time, so response times say nothing about stored hashes.

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::{Error, Store, hash_key};
use foresight_proto::now_ms;

/// What a key may do within its tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send telemetry (own format, OTLP, remote write) and post alerts.
    Ingest,
    /// Read: queries, alerts, clusters, silences, subscriptions, deliveries.
    Read,
    /// Everything in the tenant: reading, ingesting, silences, subscriptions, keys.
    Admin,
}

impl Scope {
    /// The scope's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a key of this scope may do what `need` allows.
    pub fn allows(self, need: Scope) -> bool {
        self == Scope::Admin || self == need
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("scope {other:?} is not one of ingest, read, admin")),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A tenant's key.
    Tenant {
        /// Tenant id.
        id: i64,
        /// Tenant name.
        name: String,
        /// The key's scope.
        scope: Scope,
    },
    /// An operator key.
    Operator,
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// Public id: the key's first 12 characters.
    pub id: String,
    /// Tenant name; `None` for operator keys.
    pub tenant: Option<String>,
    /// Scope; `"operator"` for operator keys.
    pub scope: String,
    /// Free text given at creation.
    pub name: String,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Unix ms, when revoked.
    pub revoked_at_ms: Option<i64>,
}

/// A tenant as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantInfo {
    /// Name.
    pub name: String,
    /// Unix ms.
    pub created_at_ms: i64,
    /// Keys not revoked.
    pub active_keys: i64,
}

pub(super) fn new_key() -> String {
    format!("fsk_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// A key's public id: its first 12 characters.
pub fn key_id(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

/// Tenants and keys, wherever they live: SQLite on one node ([`Store`]), PostgreSQL in
/// cluster mode ([`super::pg::PgStore`]). Both pass the same tests
/// (`ingest/tests/store_backends.rs`).
pub trait TenantStore: Send + Sync {
    /// Creates `name` if missing; returns its id.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn ensure_tenant(&self, name: &str) -> Result<i64, Error>;
    /// A new key of `scope` for `tenant` (created if new), shown once.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn create_scoped_key(&self, tenant: &str, scope: Scope, name: &str) -> Result<String, Error>;
    /// A new operator key, shown once.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn create_operator_key(&self, name: &str) -> Result<String, Error>;
    /// Who holds `key`, if it is valid and not revoked.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, Error>;
    /// Every tenant.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn tenants(&self) -> Result<Vec<TenantInfo>, Error>;
    /// A tenant's keys, or the operator keys (`None`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; the backend's [`Error`].
    fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error>;
    /// Revokes a tenant's or an operator key by id; another tenant's is not found.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the backend's [`Error`].
    fn revoke_key(&self, tenant: Option<&str>, id: &str) -> Result<(), Error>;
    /// The id of an existing tenant.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; the backend's [`Error`].
    fn tenant_id(&self, name: &str) -> Result<i64, Error>;
}

/// Answers of [`TenantStore::authenticate_key`] kept for `ttl`, so that the nodes of a
/// cluster do not ask PostgreSQL on every request: a key revoked through this node stops
/// at once, one revoked through another node within `ttl`. While the store does not
/// answer, a key seen valid stays valid. Only valid keys are kept (a
/// key created on another node works at once), by their hash, at most
/// [`KeyCache::CAPACITY`] of them.
pub struct KeyCache<T> {
    inner: T,
    ttl: std::time::Duration,
    cache: std::sync::Mutex<
        std::collections::HashMap<String, (Principal, String, std::time::Instant)>,
    >,
}

impl<T: TenantStore> KeyCache<T> {
    /// Keys kept before the cache starts over.
    pub const CAPACITY: usize = 10_000;

    /// `inner` with its valid keys kept for `ttl`.
    pub fn new(inner: T, ttl: std::time::Duration) -> Self {
        KeyCache {
            inner,
            ttl,
            cache: std::sync::Mutex::default(),
        }
    }

    fn cache(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, (Principal, String, std::time::Instant)>,
    > {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: TenantStore> TenantStore for KeyCache<T> {
    fn ensure_tenant(&self, name: &str) -> Result<i64, Error> {
        self.inner.ensure_tenant(name)
    }
    fn create_scoped_key(&self, tenant: &str, scope: Scope, name: &str) -> Result<String, Error> {
        self.inner.create_scoped_key(tenant, scope, name)
    }
    fn create_operator_key(&self, name: &str) -> Result<String, Error> {
        self.inner.create_operator_key(name)
    }
    fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, Error> {
        let hash = hash_key(key);
        if let Some((p, _, at)) = self.cache().get(&hash)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(p.clone()));
        }
        let found = match self.inner.authenticate_key(key) {
            Ok(found) => found,
            // The shared store is down: a key seen valid goes on working until it
            // answers again (nothing can be revoked meanwhile), so that agents keep
            // shipping through an outage of PostgreSQL; any other key waits for it.
            Err(e) => {
                return match self.cache().get(&hash) {
                    Some((p, _, _)) => {
                        tracing::debug!(error = %e, "Key store unreachable; a key seen valid is trusted.");
                        Ok(Some(p.clone()))
                    }
                    None => Err(e),
                };
            }
        };
        let mut cache = self.cache();
        match &found {
            Some(p) => {
                if cache.len() >= Self::CAPACITY {
                    cache.clear();
                }
                cache.insert(
                    hash,
                    (
                        p.clone(),
                        key_id(key).to_string(),
                        std::time::Instant::now(),
                    ),
                );
            }
            None => {
                cache.remove(&hash);
            }
        }
        Ok(found)
    }
    fn tenants(&self) -> Result<Vec<TenantInfo>, Error> {
        self.inner.tenants()
    }
    fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        self.inner.keys(tenant)
    }
    fn revoke_key(&self, tenant: Option<&str>, id: &str) -> Result<(), Error> {
        self.inner.revoke_key(tenant, id)?;
        self.cache().retain(|_, (_, kid, _)| kid != id);
        Ok(())
    }
    fn tenant_id(&self, name: &str) -> Result<i64, Error> {
        self.inner.tenant_id(name)
    }
}

impl<T: TenantStore + ?Sized> TenantStore for std::sync::Arc<T> {
    fn ensure_tenant(&self, name: &str) -> Result<i64, Error> {
        (**self).ensure_tenant(name)
    }
    fn create_scoped_key(&self, tenant: &str, scope: Scope, name: &str) -> Result<String, Error> {
        (**self).create_scoped_key(tenant, scope, name)
    }
    fn create_operator_key(&self, name: &str) -> Result<String, Error> {
        (**self).create_operator_key(name)
    }
    fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, Error> {
        (**self).authenticate_key(key)
    }
    fn tenants(&self) -> Result<Vec<TenantInfo>, Error> {
        (**self).tenants()
    }
    fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        (**self).keys(tenant)
    }
    fn revoke_key(&self, tenant: Option<&str>, id: &str) -> Result<(), Error> {
        (**self).revoke_key(tenant, id)
    }
    fn tenant_id(&self, name: &str) -> Result<i64, Error> {
        (**self).tenant_id(name)
    }
}

impl TenantStore for Store {
    fn ensure_tenant(&self, name: &str) -> Result<i64, Error> {
        Store::ensure_tenant(self, name)
    }
    fn create_scoped_key(&self, tenant: &str, scope: Scope, name: &str) -> Result<String, Error> {
        Store::create_scoped_key(self, tenant, scope, name)
    }
    fn create_operator_key(&self, name: &str) -> Result<String, Error> {
        Store::create_operator_key(self, name)
    }
    fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, Error> {
        Store::authenticate_key(self, key)
    }
    fn tenants(&self) -> Result<Vec<TenantInfo>, Error> {
        Store::tenants(self)
    }
    fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        Store::keys(self, tenant)
    }
    fn revoke_key(&self, tenant: Option<&str>, id: &str) -> Result<(), Error> {
        Store::revoke_key(self, tenant, id)
    }
    fn tenant_id(&self, name: &str) -> Result<i64, Error> {
        Store::tenant_id(self, name)
    }
}

/// Tenant names appear in URLs and labels: keep them plain.
pub fn valid_tenant_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// The id of an existing tenant.
fn tenant_id(conn: &rusqlite::Connection, name: &str) -> Result<i64, Error> {
    conn.query_row("SELECT id FROM tenants WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| Error::NotFound(format!("tenant {name}")))
}

fn key_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyInfo> {
    Ok(KeyInfo {
        id: r.get(0)?,
        tenant: r.get(1)?,
        scope: r.get(2)?,
        name: r.get(3)?,
        created_at_ms: r.get(4)?,
        revoked_at_ms: r.get(5)?,
    })
}

impl Store {
    /// Creates a key of `scope` for `tenant` (creating the tenant if new); returns the key,
    /// which is shown once: only its hash is stored.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn create_scoped_key(
        &self,
        tenant: &str,
        scope: Scope,
        name: &str,
    ) -> Result<String, Error> {
        let tenant_id = self.ensure_tenant(tenant)?;
        let key = new_key();
        self.conn().execute(
            "INSERT INTO api_keys (key_hash, tenant_id, prefix, created_at_ms, scope, name)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                hash_key(&key),
                tenant_id,
                key_id(&key),
                now_ms(),
                scope.as_str(),
                name
            ],
        )?;
        Ok(key)
    }

    /// An admin key for `tenant`: what a tenant's first key usually is.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn create_key(&self, tenant: &str) -> Result<String, Error> {
        self.create_scoped_key(tenant, Scope::Admin, "")
    }

    /// Creates an operator key (tenant administration only) and returns it once.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn create_operator_key(&self, name: &str) -> Result<String, Error> {
        let key = new_key();
        self.conn().execute(
            "INSERT INTO operator_keys (key_hash, prefix, name, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![hash_key(&key), key_id(&key), name, now_ms()],
        )?;
        Ok(key)
    }

    /// The id of an existing tenant.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; [`Error::Sqlite`].
    pub fn tenant_id(&self, name: &str) -> Result<i64, Error> {
        tenant_id(&self.read(), name)
    }

    /// Who holds `key`, if it is valid and not revoked.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn authenticate_key(&self, key: &str) -> Result<Option<Principal>, Error> {
        let hash = hash_key(key);
        let id = key_id(key);
        let conn = self.read();
        let mut found = None;
        let mut stmt = conn.prepare_cached(
            "SELECT k.key_hash, t.id, t.name, k.scope FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.prefix = ?1 AND k.revoked_at_ms IS NULL",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (stored, tid, name, scope) = row?;
            if bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
                let scope = scope.parse().unwrap_or(Scope::Read);
                found = Some(Principal::Tenant {
                    id: tid,
                    name,
                    scope,
                });
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        let mut stmt = conn.prepare_cached(
            "SELECT key_hash FROM operator_keys WHERE prefix = ?1 AND revoked_at_ms IS NULL",
        )?;
        let rows = stmt.query_map([id], |r| r.get::<_, String>(0))?;
        for stored in rows {
            if bool::from(stored?.as_bytes().ct_eq(hash.as_bytes())) {
                found = Some(Principal::Operator);
            }
        }
        Ok(found)
    }

    /// The tenant `(id, name)` a key belongs to, whatever its scope.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn authenticate(&self, key: &str) -> Result<Option<(i64, String)>, Error> {
        Ok(match self.authenticate_key(key)? {
            Some(Principal::Tenant { id, name, .. }) => Some((id, name)),
            _ => None,
        })
    }

    /// Every tenant.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn tenants(&self) -> Result<Vec<TenantInfo>, Error> {
        let conn = self.read();
        let mut stmt = conn.prepare(
            "SELECT t.name, t.created_at_ms,
                    (SELECT count(*) FROM api_keys k WHERE k.tenant_id = t.id AND k.revoked_at_ms IS NULL)
             FROM tenants t ORDER BY t.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(TenantInfo {
                name: r.get(0)?,
                created_at_ms: r.get(1)?,
                active_keys: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A tenant's keys (`Some(name)`), or the operator keys (`None`).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown tenant; [`Error::Sqlite`].
    pub fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyInfo>, Error> {
        let conn = self.read();
        match tenant {
            Some(t) => {
                let tid = tenant_id(&conn, t)?;
                let mut stmt = conn.prepare(
                    "SELECT k.prefix, t.name, k.scope, k.name, k.created_at_ms, k.revoked_at_ms
                     FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
                     WHERE k.tenant_id = ?1 ORDER BY k.created_at_ms, k.prefix",
                )?;
                let rows = stmt.query_map([tid], key_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
            None => {
                let mut stmt = conn.prepare(
                    "SELECT prefix, NULL, 'operator', name, created_at_ms, revoked_at_ms
                     FROM operator_keys ORDER BY created_at_ms, prefix",
                )?;
                let rows = stmt.query_map([], key_row)?;
                Ok(rows.collect::<Result<_, _>>()?)
            }
        }
    }

    /// Revokes a tenant's key (`Some(name)`) or an operator key (`None`) by id; a key of
    /// another tenant is not found.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Sqlite`].
    pub fn revoke_key(&self, tenant: Option<&str>, id: &str) -> Result<(), Error> {
        let conn = self.conn();
        let n = match tenant {
            Some(t) => conn.execute(
                "UPDATE api_keys SET revoked_at_ms = ?3
                 WHERE prefix = ?2 AND revoked_at_ms IS NULL
                   AND tenant_id = (SELECT id FROM tenants WHERE name = ?1)",
                params![t, id, now_ms()],
            )?,
            None => conn.execute(
                "UPDATE operator_keys SET revoked_at_ms = ?2 WHERE prefix = ?1 AND revoked_at_ms IS NULL",
                params![id, now_ms()],
            )?,
        };
        if n == 0 {
            return Err(Error::NotFound(format!("key {id}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_scope_and_revoke_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let read = store
            .create_scoped_key("acme", Scope::Read, "grafana")
            .unwrap();
        let other = store.create_scoped_key("globex", Scope::Admin, "").unwrap();
        let op = store.create_operator_key("ops").unwrap();
        assert_eq!(
            store.authenticate_key(&read).unwrap(),
            Some(Principal::Tenant {
                id: store.ensure_tenant("acme").unwrap(),
                name: "acme".into(),
                scope: Scope::Read
            })
        );
        assert_eq!(
            store.authenticate_key(&op).unwrap(),
            Some(Principal::Operator)
        );
        // A key differing in its last digit shares the id but not the hash.
        let mut forged = read.clone();
        forged.replace_range(
            forged.len() - 1..,
            if read.ends_with('0') { "1" } else { "0" },
        );
        assert_eq!(store.authenticate_key(&forged).unwrap(), None);
        // Another tenant cannot revoke acme's key.
        assert!(matches!(
            store.revoke_key(Some("globex"), key_id(&read)),
            Err(Error::NotFound(_))
        ));
        store.revoke_key(Some("acme"), key_id(&read)).unwrap();
        assert_eq!(store.authenticate_key(&read).unwrap(), None);
        assert!(store.authenticate_key(&other).unwrap().is_some());
        let listed = store.keys(Some("acme")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].scope, "read");
        assert_eq!(listed[0].name, "grafana");
        assert!(listed[0].revoked_at_ms.is_some());
        store.revoke_key(None, key_id(&op)).unwrap();
        assert_eq!(store.authenticate_key(&op).unwrap(), None);
    }
}
