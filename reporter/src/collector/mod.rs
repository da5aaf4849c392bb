//! Collectors: each reads one source and returns what it saw.
//!
//! - [`kafka`]: cluster metadata and offsets over the Kafka protocol (librdkafka).
//! - [`admin`]: the quorum, racks and transactions over the second client.
//! - [`cluster_facts`]: log dirs, versions, features and broker configs.
//! - [`durability`]: leader changes checked against the epochs' end offsets.
//! - [`elr`]: eligible leader replicas (KIP-966) of every partition.
//! - [`groups`]: consumer, share and classic groups, each described with its own RPC.
//! - [`transactions`]: open and hanging transactions, as find-hanging finds them.
//! - [`host`]: the broker's log dirs on this machine.
//! - [`jmx`]: broker metrics from the jmx_exporter endpoint.
//! - [`jolokia`]: broker MBeans from a Jolokia agent, named as the jmx_exporter would.

pub mod admin;
pub mod cluster_facts;
pub mod durability;
pub mod elr;
pub mod group_offsets;
pub mod groups;
pub mod host;
pub mod jmx;
pub mod jolokia;
pub mod kafka;
pub mod transactions;
