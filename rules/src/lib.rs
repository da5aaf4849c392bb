//! Foresight's rule engine: Prometheus-format rule files evaluated over an in-memory
//! series store, producing alerts as `foresight_proto::v1::Alert`.
//!
//! - [`store`]: the per-tenant series store the evaluator reads.
//! - [`promql`]: the PromQL evaluator (parsing by `promql-parser`).
//! - [`rulefile`]: rule-file loading and validation.
//! - [`template`]: annotation and label templates.
//! - [`alerting`]: rule groups in evaluation and the alert state machine.
//! - [`packs`]: the built-in Kafka rule pack.
//! - [`unittest`]: rule unit tests in promtool's `test rules` format.
//!
//! Pure computation: this crate opens no sockets and reads only files it is handed.
#![warn(missing_docs)]

pub mod alerting;
pub mod packs;
pub mod promql;
pub mod rulefile;
pub mod store;
pub use foresight_template as template;
pub mod unittest;

pub use alerting::{Evaluation, RuleEngine, RuleHealth, SavedAlert};
pub use rulefile::{Group, Rule, load_file, load_str};
pub use store::{Labels, SeriesStore};

/// Errors at the crate's edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A rule file has problems; all of them are listed.
    #[error("{file}: {}", problems.join(&format!("\n{file}: ")))]
    Load {
        /// The file.
        file: String,
        /// Every problem found.
        problems: Vec<String>,
    },
}
