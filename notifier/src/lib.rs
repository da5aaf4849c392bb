//! Foresight's notification pipeline: what to send for an alert, to whom, and durably.
//!
//! - [`payload`]: Alertmanager's webhook JSON (version 4).
//! - [`webhook`]: the webhook receiver, with HMAC-SHA256 signatures.
//! - [`outbox`]: the durable outbox contract and the delivery worker with backoff.
//! - [`dispatch`]: turns alert states into outbox entries, once per state change.
//!
//! Storage is not this crate's: the outbox is a trait that `ingest` implements on its
//! store, so that this crate is testable with an in-memory one.
#![warn(missing_docs)]

pub mod dispatch;
pub mod outbox;
pub mod payload;
pub mod webhook;

pub use dispatch::Dispatcher;
pub use outbox::{DeliveryWorker, NewNotification, OutboxStore, PendingNotification};
pub use webhook::{WebhookConfig, WebhookReceiver};

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The receiver could not be reached or did not answer in time.
    #[error("receiver {receiver} unreachable: {message}")]
    Unreachable {
        /// Receiver name.
        receiver: String,
        /// The transport error.
        message: String,
    },
    /// The receiver answered with a status that is not success.
    #[error("receiver {receiver} answered HTTP {status}: {body}")]
    Status {
        /// Receiver name.
        receiver: String,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// The notification names a receiver that is not configured.
    #[error("no receiver named {0}")]
    UnknownReceiver(String),
}

impl DeliveryError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Unreachable { .. } => true,
            DeliveryError::Status { status, .. } => {
                *status == 429 || *status == 408 || *status >= 500
            }
            DeliveryError::UnknownReceiver(_) => false,
        }
    }
}

/// Errors of the outbox store.
#[derive(Debug, thiserror::Error)]
#[error("outbox store: {0}")]
pub struct StoreError(pub String);
