//! Broker JMX metrics read from a Jolokia agent (one bulk `read` request per broker),
//! named as the jmx_exporter's usual Kafka configuration names them, so that rules do
//! not care which of the two a site runs.
//!
//! Naming, for `kafka.server:type=ReplicaManager,name=IsrShrinksPerSec`:
//! - `Value` gives `kafka_server_replicamanager_<name>`;
//! - `Count` of a `…PerSec` meter gives `…_<name without PerSec>_total`
//!   (`kafka_server_replicamanager_isrshrinks_total`);
//! - `Count` of any other meter or histogram gives `…_<name>_count_total`, as the
//!   exporter's `_count` rules (typed COUNTER) come out of jmx_exporter 1.x: so the
//!   request handlers' idle meter, `RequestHandlerAvgIdlePercent`, whose count is idle
//!   nanoseconds per handler thread, is
//!   `kafka_server_kafkarequesthandlerpool_requesthandleravgidlepercent_count_total`;
//! - `MeanRate` of a `…Percent` meter gives `…_<name without Percent>_percent`, the
//!   exporter's lifetime mean;
//! - `NNthPercentile` gives the base name with `quantile="0.NN"`;
//! - other key properties (`topic`, `request`, `listener`, …) become labels.

use std::collections::BTreeMap;
use std::time::Duration;

use foresight_proto::v1::Series;

pub use foresight_decode::jmx::ScrapeError;
pub use foresight_decode::jolokia::{DEFAULT_MBEANS, parse, request_body};

/// Reads `mbeans` from the Jolokia agent at `url` with `client`.
///
/// # Errors
/// [`ScrapeError`] when the agent does not answer, or not as Jolokia.
pub async fn read(
    client: &reqwest::Client,
    url: &str,
    mbeans: &[String],
    timeout: Duration,
    labels: &BTreeMap<String, String>,
    ts_ms: i64,
) -> Result<Vec<Series>, ScrapeError> {
    let request = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(request_body(mbeans).to_string());
    let body = super::jmx::fetch(url, request).await?;
    parse(url, &body, labels, ts_ms)
}
