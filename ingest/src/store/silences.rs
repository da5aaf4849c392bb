//! Silences, per tenant, as Alertmanager's API v2 shapes them.

use rusqlite::params;

use super::{Error, Store};
use foresight_notifier::silence::{ApiMatcher, Silence};
use foresight_proto::now_ms;

pub(super) fn silence_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Silence, String)> {
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
pub(super) fn with_matchers((mut s, json): (Silence, String)) -> Silence {
    let api: Vec<ApiMatcher> = serde_json::from_str(&json).unwrap_or_default();
    s.matchers = api.iter().filter_map(|m| m.to_matcher().ok()).collect();
    s
}

/// Silences, wherever they live: SQLite on one node ([`Store`]), PostgreSQL in cluster
/// mode ([`super::pg::PgStore`]); `ingest/tests/store_backends.rs` checks both alike.
pub trait SilenceStore: Send + Sync {
    /// Creates a silence or, with the id of an existing one of the tenant, replaces it.
    /// Returns the id.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none; the backend's [`Error`].
    fn put_silence(&self, tenant: &str, s: &Silence) -> Result<String, Error>;
    /// Every silence of `tenant`, newest first.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn list_silences(&self, tenant: &str) -> Result<Vec<Silence>, Error>;
    /// Ends a silence of `tenant` now.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none; the backend's [`Error`].
    fn expire_silence(&self, tenant: &str, id: &str) -> Result<(), Error>;
}

impl SilenceStore for Store {
    fn put_silence(&self, tenant: &str, s: &Silence) -> Result<String, Error> {
        Store::put_silence(self, tenant, s)
    }
    fn list_silences(&self, tenant: &str) -> Result<Vec<Silence>, Error> {
        Store::list_silences(self, tenant)
    }
    fn expire_silence(&self, tenant: &str, id: &str) -> Result<(), Error> {
        Store::expire_silence(self, tenant, id)
    }
}

/// A new silence id, UUID-shaped as Alertmanager's.
pub(super) fn new_silence_id() -> String {
    let b: [u8; 16] = rand::random();
    format!(
        "{}-{}-{}-{}-{}",
        hex::encode(&b[0..4]),
        hex::encode(&b[4..6]),
        hex::encode(&b[6..8]),
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

/// The stored form of a silence's matchers.
pub(super) fn matchers_json(s: &Silence) -> String {
    let api: Vec<ApiMatcher> = s.matchers.iter().map(ApiMatcher::from_matcher).collect();
    serde_json::to_string(&api).expect("matchers serialize")
}

impl Store {
    /// Creates a silence or, with the id of an existing one of the tenant, replaces it
    /// (Alertmanager's update). Returns the id.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none; [`Error::Sqlite`].
    pub fn put_silence(&self, tenant: &str, s: &Silence) -> Result<String, Error> {
        let json = matchers_json(s);
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
        let id = new_silence_id();
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
        let conn = self.read();
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
