//! Collectors: each reads one source and returns what it saw.
//!
//! - [`kafka`]: cluster metadata and offsets over the Kafka protocol.

pub mod kafka;
