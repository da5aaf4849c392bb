//! Collectors: each reads one source and returns what it saw.
//!
//! - [`kafka`]: cluster metadata and offsets over the Kafka protocol.
//! - [`host`]: the broker's log dirs on this machine.
//! - [`jmx`]: broker metrics from the jmx_exporter endpoint.
//! - [`jolokia`]: broker MBeans from a Jolokia agent, named as the jmx_exporter would.

pub mod group_offsets;
pub mod host;
pub mod jmx;
pub mod jolokia;
pub mod kafka;
