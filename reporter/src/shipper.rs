//! Uploads batches to the ingest service: protobuf, zstd, bearer key, HTTPS, with
//! capped exponential backoff and full jitter, honouring `Retry-After`.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use foresight_proto::Message;
use foresight_proto::v1::TelemetryBatch;

use crate::Error;

/// Why one upload failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShipError {
    /// No answer: connection refused, TLS failure, timeout.
    #[error("ingest unreachable: {0}")]
    Transport(String),
    /// The ingest answered with a failure status.
    #[error("ingest answered HTTP {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body (the ingest's JSON error).
        body: String,
        /// The `Retry-After` the ingest asked for.
        retry_after: Option<Duration>,
    },
}

impl ShipError {
    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ShipError::Transport(_) => true,
            ShipError::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ShipError::Status { retry_after, .. } => *retry_after,
            ShipError::Transport(_) => None,
        }
    }
}

/// zstd level of uploads: batches repeat label sets heavily; on 10,000 partitions level 9
/// ships 233 KiB where level 3 ships 305 KiB, for ~0.05 s more CPU (`benches/cycle.rs`).
const ZSTD_LEVEL: i32 = 9;

/// Sends batches to one ingest endpoint.
#[derive(Clone)]
pub struct Shipper {
    client: reqwest::Client,
    endpoint: String,
    api_key: String,
    max_attempts: usize,
    min_delay: Duration,
}

impl std::fmt::Debug for Shipper {
    // The API key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Shipper {
    /// A shipper for `base_url` (`https://host:port`) using `tls`.
    ///
    /// # Errors
    /// [`Error::Tls`] if the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        api_key: String,
        tls: rustls::ClientConfig,
        timeout: Duration,
        max_attempts: usize,
    ) -> Result<Self, Error> {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .user_agent(concat!("foresight-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Shipper {
            client,
            endpoint: format!("{}/v1/telemetry", base_url.trim_end_matches('/')),
            api_key,
            max_attempts,
            min_delay: Duration::from_millis(500),
        })
    }

    /// Encodes and compresses a batch as it goes on the wire.
    pub fn encode(batch: &TelemetryBatch) -> Vec<u8> {
        zstd::bulk::compress(&batch.encode_to_vec(), ZSTD_LEVEL)
            .expect("in-memory zstd compression does not fail")
    }

    /// Uploads once.
    ///
    /// # Errors
    /// [`ShipError`], which says whether a retry may help.
    pub async fn send_once(&self, body: &[u8]) -> Result<(), ShipError> {
        let resp = self
            .client
            .post(&self.endpoint)
            .bearer_auth(&self.api_key)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "zstd")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| ShipError::Transport(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.text().await.unwrap_or_default();
        Err(ShipError::Status {
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
            retry_after,
        })
    }

    /// Checks the endpoint and the key without storing anything: an empty body is
    /// refused as a bad batch (400) once the key is accepted, and as 401 before.
    ///
    /// # Errors
    /// [`ShipError`]: unreachable, or any answer but the expected 400.
    pub async fn probe(&self) -> Result<(), ShipError> {
        match self.send_once(&[]).await {
            Err(ShipError::Status { status: 400, .. }) => Ok(()),
            Ok(()) => Err(ShipError::Status {
                status: 200,
                body: "an empty body was accepted".into(),
                retry_after: None,
            }),
            Err(e) => Err(e),
        }
    }

    /// Uploads with retries.
    ///
    /// # Errors
    /// The last [`ShipError`] once attempts run out or the error is not retryable.
    ///
    /// # Cancel safety
    /// Cancelling may leave the batch stored by the ingest; resending it is harmless,
    /// as its `(agent_instance_id, sequence)` is stored once.
    pub async fn send(&self, batch: &TelemetryBatch) -> Result<(), ShipError> {
        let body = Self::encode(batch);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter();
        (|| self.send_once(&body))
            .retry(backoff)
            .when(ShipError::is_retryable)
            .adjust(|e, d| d.map(|d| e.retry_after().unwrap_or(d)))
            .notify(|e, d| tracing::warn!(error = %e, retry_in = ?d, "Upload failed; retrying."))
            .await
    }
}

use foresight_proto::error_chain;
