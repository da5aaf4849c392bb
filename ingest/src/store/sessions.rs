//! The web console's sessions and one-time sign-in links. Only hashes of their tokens
//! are stored; each belongs to the API key it was opened with and ends when that key
//! is revoked, when it expires, or at sign-out.

use foresight_proto::now_ms;
use rusqlite::{OptionalExtension, params};

use super::{Error, Scope, Store, hash_key};

/// A live console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Tenant id.
    pub tenant_id: i64,
    /// Tenant name.
    pub tenant: String,
    /// The scope of the key it was opened with (`read` or `admin`).
    pub scope: Scope,
    /// The name of that key, for "created by".
    pub key_name: String,
    /// The token every change must carry.
    pub csrf: String,
    /// When it ends, Unix ms.
    pub expires_at_ms: i64,
}

fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Store {
    /// Opens a console session for `key` (a tenant's read or admin key) lasting `ttl_ms`;
    /// returns its token, or `None` when the key is unknown, revoked, an operator's, or
    /// of a scope that cannot read.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn create_session(&self, key: &str, ttl_ms: i64) -> Result<Option<String>, Error> {
        self.new_token(key, "session", ttl_ms)
    }

    /// A one-time sign-in link's token for `key`, valid for `ttl_ms`: what the demo
    /// prints, so that its first command ends in a signed-in browser.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn create_sign_in_link(&self, key: &str, ttl_ms: i64) -> Result<Option<String>, Error> {
        self.new_token(key, "link", ttl_ms)
    }

    fn new_token(&self, key: &str, kind: &str, ttl_ms: i64) -> Result<Option<String>, Error> {
        match self.authenticate_key(key)? {
            Some(super::Principal::Tenant { scope, .. }) if scope.allows(Scope::Read) => {
                let t = token();
                let now = now_ms();
                self.conn().execute(
                    "INSERT INTO console_sessions (token_hash, key_hash, kind, csrf, created_at_ms, expires_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![hash_key(&t), hash_key(key), kind, token(), now, now.saturating_add(ttl_ms)],
                )?;
                Ok(Some(t))
            }
            _ => Ok(None),
        }
    }

    /// Trades a sign-in link's token for a session lasting `ttl_ms`; the link is
    /// spent either way. `None` when it is unknown, spent, expired or its key revoked.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn redeem_sign_in_link(&self, link: &str, ttl_ms: i64) -> Result<Option<String>, Error> {
        let now = now_ms();
        let conn = self.conn();
        let tx = conn.unchecked_transaction()?;
        let key_hash: Option<String> = tx
            .query_row(
                "DELETE FROM console_sessions
                 WHERE token_hash = ?1 AND kind = 'link' AND expires_at_ms > ?2
                   AND key_hash IN (SELECT key_hash FROM api_keys WHERE revoked_at_ms IS NULL)
                 RETURNING key_hash",
                params![hash_key(link), now],
                |r| r.get(0),
            )
            .optional()?;
        let Some(key_hash) = key_hash else {
            tx.execute(
                "DELETE FROM console_sessions WHERE token_hash = ?1 AND kind = 'link'",
                [hash_key(link)],
            )?;
            tx.commit()?;
            return Ok(None);
        };
        let t = token();
        tx.execute(
            "INSERT INTO console_sessions (token_hash, key_hash, kind, csrf, created_at_ms, expires_at_ms)
             VALUES (?1, ?2, 'session', ?3, ?4, ?5)",
            params![hash_key(&t), key_hash, token(), now, now.saturating_add(ttl_ms)],
        )?;
        tx.commit()?;
        Ok(Some(t))
    }

    /// The live session of `token`, if any.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn session(&self, token: &str) -> Result<Option<Session>, Error> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT t.id, t.name, k.scope, k.name, s.csrf, s.expires_at_ms
             FROM console_sessions s
             JOIN api_keys k ON k.key_hash = s.key_hash
             JOIN tenants t ON t.id = k.tenant_id
             WHERE s.token_hash = ?1 AND s.kind = 'session' AND s.expires_at_ms > ?2
               AND k.revoked_at_ms IS NULL",
        )?;
        let found = stmt
            .query_row(params![hash_key(token), now_ms()], |r| {
                Ok(Session {
                    tenant_id: r.get(0)?,
                    tenant: r.get(1)?,
                    scope: r.get::<_, String>(2)?.parse().unwrap_or(Scope::Read),
                    key_name: r.get(3)?,
                    csrf: r.get(4)?,
                    expires_at_ms: r.get(5)?,
                })
            })
            .optional()?;
        Ok(found)
    }

    /// Ends the session of `token` (sign-out).
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn end_session(&self, token: &str) -> Result<(), Error> {
        self.conn().execute(
            "DELETE FROM console_sessions WHERE token_hash = ?1",
            [hash_key(token)],
        )?;
        Ok(())
    }

    /// Removes expired sessions and links; returns how many.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn prune_sessions(&self, now_ms: i64) -> Result<usize, Error> {
        Ok(self.conn().execute(
            "DELETE FROM console_sessions WHERE expires_at_ms <= ?1",
            [now_ms],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_follow_their_key_and_links_are_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let admin = store.create_key("acme").unwrap();
        let ingest = store
            .create_scoped_key("acme", Scope::Ingest, "agent")
            .unwrap();
        let operator = store.create_operator_key("ops").unwrap();
        assert_eq!(store.create_session(&ingest, 60_000).unwrap(), None);
        assert_eq!(store.create_session(&operator, 60_000).unwrap(), None);
        assert_eq!(store.create_session("fsk_nope", 60_000).unwrap(), None);

        let t = store.create_session(&admin, 60_000).unwrap().unwrap();
        let s = store.session(&t).unwrap().unwrap();
        assert_eq!((s.tenant.as_str(), s.scope), ("acme", Scope::Admin));
        assert_eq!(s.csrf.len(), 64);
        // A link is not a session, and works once.
        let link = store.create_sign_in_link(&admin, 60_000).unwrap().unwrap();
        assert_eq!(store.session(&link).unwrap(), None);
        let from_link = store.redeem_sign_in_link(&link, 60_000).unwrap().unwrap();
        assert!(store.session(&from_link).unwrap().is_some());
        assert_eq!(store.redeem_sign_in_link(&link, 60_000).unwrap(), None);
        // Sign-out ends one session; revoking the key ends the rest.
        store.end_session(&from_link).unwrap();
        assert_eq!(store.session(&from_link).unwrap(), None);
        assert!(store.session(&t).unwrap().is_some());
        store
            .revoke_key(Some("acme"), crate::store::key_id(&admin))
            .unwrap();
        assert_eq!(store.session(&t).unwrap(), None);
        // An expired session is gone and pruned.
        let short = store.create_sign_in_link(&ingest, 1).unwrap();
        assert_eq!(short, None);
        let read = store
            .create_scoped_key("acme", Scope::Read, "viewer")
            .unwrap();
        let expired = store.create_session(&read, -1).unwrap().unwrap();
        assert_eq!(store.session(&expired).unwrap(), None);
        assert_eq!(store.prune_sessions(now_ms()).unwrap(), 1);
    }
}
