//! TLS as the agent and the service share it: the agent's client configuration (the
//! system roots, a CA file, or a pinned certificate fingerprint) and the service's
//! certificate (configured, or self-signed once into the data dir). A crate of its own
//! so that the service does not link the agent (and librdkafka) for these.

mod client;
mod server;

pub use client::{client_config, fingerprint, parse_fingerprint};
pub use server::{ServerIdentity, fingerprint_of, load_or_generate};

/// A TLS setup failure, naming the file or setting and the problem.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(pub String);
