//! Durable state in one SQLite file (WAL), one module per concern: [`schema`] (tables
//! and numbered migrations), `tenants` (tenants, hashed API keys), `batches` (accepted
//! batches, deduplicated by agent instance and sequence), `alerts` (alert states and
//! history), `durability` (the durability ledger), `outbox` (the notification outbox,
//! its notification log and Slack threads), `silences`, `subscriptions` and `sessions`
//! (the web console's). [`pg`] holds cluster mode's shared state in PostgreSQL behind
//! the same contracts ([`TenantStore`], [`SilenceStore`] and the notifier's `OutboxStore` so far).
//!
//! Calls block; async callers use `spawn_blocking`.

use foresight_proto::now_ms;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use foresight_notifier::StoreError;
use rusqlite::{Connection, OpenFlags, params};
use sha2::{Digest, Sha256};

mod alerts;
mod batches;
mod durability;
mod outbox;
pub mod pg;
pub mod schema;
mod sessions;
mod silences;
mod subscriptions;
mod tenants;

pub use alerts::{AlertStateStore, HistoryEntry};
pub use batches::BatchOutcome;
pub use durability::{DurabilityEvent, DurabilityLedger, HistoryStore, LedgerWindow};
pub use outbox::Delivery;
pub use sessions::Session;
pub use silences::SilenceStore;
pub use subscriptions::SubscriptionStore;

/// The state the API reads besides tenants and keys: the SQLite [`Store`] on one node,
/// PostgreSQL in cluster mode, chosen once and handed to each part of the API state.
pub trait SharedStore: SilenceStore + SubscriptionStore + HistoryStore {}

impl<T: SilenceStore + SubscriptionStore + HistoryStore> SharedStore for T {}

pub use tenants::key_id;
pub use tenants::{
    KeyCache, KeyInfo, Principal, Scope, TenantInfo, TenantStore, valid_tenant_name,
};

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
    /// The file's schema is not one this build can use.
    #[error("store: {0}")]
    Schema(String),
    /// PostgreSQL (cluster mode's shared state) failed or did not answer.
    #[error("store: PostgreSQL: {0}")]
    Postgres(String),
}

/// The SQLite store: one writer connection, and read-only connections for the API's
/// reads (WAL lets them read while the writer writes), so that authentication and the
/// API's lists do not queue behind the evaluator's and the delivery worker's writes.
pub struct Store {
    conn: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// Read-only connections beside the writer.
const READERS: usize = 2;

/// Hashes an API key for storage and lookup. Keys are 256 random bits, so a fast hash
/// is enough: there is nothing to brute-force.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Store {
    /// Opens (creating if needed) `foresight.db` in `data_dir`.
    ///
    /// # Errors
    /// [`Error::Sqlite`] when the file cannot be opened or migrated.
    pub fn open(data_dir: &Path) -> Result<Self, Error> {
        let path = data_dir.join("foresight.db");
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        schema::migrate(&conn)?;
        // Opened after the migration, so that they see its tables.
        let readers = (0..READERS)
            .map(|_| {
                let r = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                r.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(Mutex::new(r))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Store {
            conn: Mutex::new(conn),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    /// A read-only connection: a free one, else the next in turn. Reads through it see
    /// every committed write and never wait for the writer's lock.
    pub(crate) fn read(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            match r.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
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
}

pub(super) fn store_err(e: rusqlite::Error) -> StoreError {
    StoreError(e.to_string())
}

pub(super) fn join(set: &std::collections::BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(",")
}

pub(super) fn split(s: &str) -> std::collections::BTreeSet<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

impl Store {
    /// Whether the database answers.
    ///
    /// # Errors
    /// [`Error::Sqlite`].
    pub fn ping(&self) -> Result<(), Error> {
        self.read().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foresight_notifier::outbox::{NewNotification, OutboxStore};

    #[test]
    fn authentication_does_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let key = store.create_scoped_key("acme", Scope::Read, "").unwrap();
        // The writer busy in a transaction, as under a burst of batches.
        let writer = store.conn();
        writer
            .execute_batch(
                "BEGIN IMMEDIATE; INSERT INTO tenants (name, created_at_ms) VALUES ('held', 0);",
            )
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = store.clone();
        std::thread::spawn(move || {
            let _ = tx.send(reader.authenticate_key(&key).map(|p| p.is_some()));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        writer.execute_batch("COMMIT").unwrap();
        assert!(
            matches!(answer, Ok(Ok(true))),
            "authentication waited for the writer: {answer:?}"
        );
        drop(writer);
        // What the writer committed, the readers see.
        assert!(store.tenants().unwrap().iter().any(|t| t.name == "held"));
    }

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
