//! Tenants' own webhook subscriptions.

use rusqlite::params;

use super::{Error, Store};
use foresight_notifier::subscription::Subscription;

pub(super) fn subscription_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
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

pub(super) const SUBSCRIPTION_COLUMNS: &str =
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
}

/// Tenants' subscriptions and what was delivered, wherever they live: SQLite on one
/// node ([`Store`]), PostgreSQL in cluster mode ([`super::pg::PgStore`]), where the
/// notifier nodes read them.
pub trait SubscriptionStore: Send + Sync {
    /// Stores a new subscription (its id and secret already generated).
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn create_subscription(&self, s: &Subscription) -> Result<(), Error>;
    /// Deletes a subscription of `tenant`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an id of another tenant or none.
    fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), Error>;
    /// The tenant's subscriptions.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, Error>;
    /// One subscription of the tenant.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn get_subscription(&self, tenant: &str, id: &str) -> Result<Option<Subscription>, Error>;
    /// The tenant's latest `limit` notifications to `receiver`.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn receiver_deliveries(
        &self,
        tenant: &str,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error>;
    /// The tenant's latest `limit` notifications in `status`.
    ///
    /// # Errors
    /// The backend's [`Error`].
    fn status_deliveries(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error>;
}

fn outbox(e: foresight_notifier::StoreError) -> Error {
    Error::Outbox(e.0)
}

impl SubscriptionStore for Store {
    fn create_subscription(&self, s: &Subscription) -> Result<(), Error> {
        Store::create_subscription(self, s)
    }
    fn delete_subscription(&self, tenant: &str, id: &str) -> Result<(), Error> {
        Store::delete_subscription(self, tenant, id)
    }
    fn list_subscriptions(&self, tenant: &str) -> Result<Vec<Subscription>, Error> {
        foresight_notifier::OutboxStore::subscriptions(self, tenant).map_err(outbox)
    }
    fn get_subscription(&self, tenant: &str, id: &str) -> Result<Option<Subscription>, Error> {
        foresight_notifier::OutboxStore::subscription(self, tenant, id).map_err(outbox)
    }
    fn receiver_deliveries(
        &self,
        tenant: &str,
        receiver: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error> {
        self.deliveries(tenant, receiver, limit)
    }
    fn status_deliveries(
        &self,
        tenant: &str,
        status: &str,
        limit: usize,
    ) -> Result<Vec<super::Delivery>, Error> {
        self.deliveries_by_status(tenant, status, limit)
    }
}
