//! The crate's edge error: what stops the service from starting or a command from
//! running.

use crate::store;

/// Errors at the crate's edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration has problems; all are listed.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// TLS setup failed.
    #[error(transparent)]
    Tls(#[from] foresight_tls::TlsError),
    /// A rule file failed to load.
    #[error(transparent)]
    Rules(#[from] foresight_rules::Error),
    /// Cluster mode's Kafka clients failed.
    #[error(transparent)]
    Bus(#[from] crate::cluster::bus::BusError),
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(String),
}
