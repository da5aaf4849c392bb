//! Collectors: each reads one source and returns what it saw.
//!
//! - [`kafka`]: cluster metadata and offsets over the Kafka protocol.
//! - [`host`]: the broker's log dirs on this machine.

pub mod host;
pub mod kafka;
