//! Broker JMX metrics from the Prometheus jmx_exporter's HTTP endpoint, in the text
//! exposition format (parsed by `prom_text_format_parser`), relabelled with `cluster` and
//! `broker` so that the pack's rules can group them.

use std::collections::BTreeMap;
use std::time::Duration;

use foresight_proto::v1::Series;

pub use foresight_decode::jmx::{ScrapeError, parse};

/// Scrapes `url` with `client`.
///
/// # Errors
/// [`ScrapeError`] when the endpoint does not answer with the text format.
pub async fn scrape(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    labels: &BTreeMap<String, String>,
    ts_ms: i64,
) -> Result<Vec<Series>, ScrapeError> {
    let body = fetch(url, client.get(url).timeout(timeout)).await?;
    parse(url, &String::from_utf8_lossy(&body), labels, ts_ms)
}

/// Sends `request` to the endpoint `url` and returns the body of a success.
///
/// # Errors
/// [`ScrapeError::Http`] for no answer or a failure status.
pub(super) async fn fetch(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<bytes::Bytes, ScrapeError> {
    let http = |message: String| ScrapeError::Http {
        url: url.to_string(),
        message,
    };
    let resp = request.send().await.map_err(|e| http(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(http(format!("HTTP {}", resp.status())));
    }
    resp.bytes().await.map_err(|e| http(e.to_string()))
}
