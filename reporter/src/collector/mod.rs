//! Collectors: each reads one source and returns what it saw.
//!
//! - [`kafka`]: cluster metadata and offsets over the Kafka protocol.
//! - [`host`]: the broker's log dirs on this machine.
//! - [`jmx`]: broker metrics from the jmx_exporter endpoint.

pub mod host;
pub mod jmx;
pub mod kafka;
