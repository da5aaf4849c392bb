//! The webhook receiver: POSTs a JSON body, signed so that the receiver can tell it came
//! from this Foresight and was not replayed.
//!
//! Signature header: `X-Foresight-Signature: t=<unix seconds>,v1=<hex>`, where `<hex>` is
//! HMAC-SHA256 with the receiver's secret over `<unix seconds>.<body>`. A receiver
//! recomputes it, compares in constant time, and rejects timestamps older than a few
//! minutes. `Idempotency-Key` is the same for every retry of one notification.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::DeliveryError;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Foresight-Signature";
/// Header carrying the idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// One configured webhook.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver name, used in routes and the delivery log.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// HMAC secret; no signature header when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether to send resolved notifications (default true).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Request timeout in seconds (default 10).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_true() -> bool {
    true
}

fn default_timeout() -> u64 {
    10
}

/// Computes the signature header value for `body` at `unix_secs`.
pub fn sign(secret: &str, unix_secs: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={unix_secs},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Checks a signature header against `body`; `max_age_secs` bounds replays.
pub fn verify(secret: &str, header: &str, body: &[u8], now_secs: i64, max_age_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if (now_secs - t).abs() > max_age_secs {
        return false;
    }
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// Sends to one webhook.
#[derive(Debug, Clone)]
pub struct WebhookReceiver {
    config: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookReceiver {
    /// A receiver using `client` (which carries the TLS configuration).
    pub fn new(config: WebhookConfig, client: reqwest::Client) -> Self {
        WebhookReceiver { config, client }
    }

    /// The receiver's configuration.
    pub fn config(&self) -> &WebhookConfig {
        &self.config
    }

    /// POSTs `body` once.
    ///
    /// # Errors
    /// [`DeliveryError`], which says whether a retry may help.
    ///
    /// # Cancel safety
    /// Cancelling may leave the request delivered but unacknowledged; the outbox then
    /// retries with the same idempotency key.
    pub async fn send(
        &self,
        body: &[u8],
        idempotency_key: &str,
        now_secs: i64,
    ) -> Result<(), DeliveryError> {
        let mut headers = vec![(IDEMPOTENCY_HEADER, idempotency_key.to_string())];
        if let Some(secret) = &self.config.secret {
            headers.push((SIGNATURE_HEADER, sign(secret, now_secs, body)));
        }
        crate::post::send(
            &self.client,
            crate::post::Request {
                receiver: &self.config.name,
                method: reqwest::Method::POST,
                url: &self.config.url,
                headers,
                body: body.to_vec(),
                timeout: Duration::from_secs(self.config.timeout_secs),
                // A webhook URL often carries its token (Alertmanager keeps it secret).
                secret_url: true,
            },
            |_| None,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering_and_replay() {
        let h = sign("s3cret", 1_000, b"{}");
        assert!(verify("s3cret", &h, b"{}", 1_010, 300));
        assert!(!verify("s3cret", &h, b"{ }", 1_010, 300));
        assert!(!verify("other", &h, b"{}", 1_010, 300));
        assert!(!verify("s3cret", &h, b"{}", 2_000, 300));
    }
}
