//! One request to a receiver's HTTP API, and what its answer means for the outbox:
//! success, a retry (transport errors, 408, 429, 5xx, honouring `Retry-After`), or a
//! permanent failure that keeps the receiver's own words.

use std::time::Duration;

use crate::DeliveryError;

/// A request: the receiver's name (for errors), method, URL, headers and JSON body.
pub(crate) struct Request<'a> {
    pub receiver: &'a str,
    pub method: reqwest::Method,
    pub url: &'a str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// Whether the URL is a secret (a webhook URL carrying its token): transport errors
    /// then leave it out.
    pub secret_url: bool,
}

/// An acknowledged request's answer body.
pub(crate) struct Answer {
    pub body: String,
}

/// Sends `r` once with `client`. `explain` turns an error answer's body into the
/// receiver's message (its API's error fields), when it can.
pub(crate) async fn send(
    client: &reqwest::Client,
    r: Request<'_>,
    explain: impl Fn(&str) -> Option<String>,
) -> Result<Answer, DeliveryError> {
    let mut req = client
        .request(r.method, r.url)
        .timeout(r.timeout)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("foresight/", env!("CARGO_PKG_VERSION")),
        )
        .body(r.body);
    for (k, v) in r.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| DeliveryError::Unreachable {
        receiver: r.receiver.to_string(),
        message: if r.secret_url {
            foresight_proto::error_chain(&e.without_url())
        } else {
            foresight_proto::error_chain(&e)
        },
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, jiff::Timestamp::now()));
    let body = resp.text().await.unwrap_or_default();
    if (200..300).contains(&status) {
        return Ok(Answer { body });
    }
    let message = explain(&body).unwrap_or_else(|| body.chars().take(300).collect());
    Err(DeliveryError::http(
        r.receiver,
        status,
        message,
        retry_after,
    ))
}

/// A `Retry-After` value (seconds or an HTTP date) as a wait from `now`.
pub fn retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(at.duration_since(now).try_into().unwrap_or(Duration::ZERO))
}

/// `s` cut to at most `max` characters, as the receivers' APIs count them.
pub(crate) fn truncate(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => {
            let mut t = s[..i].to_string();
            t.pop();
            t.push('…');
            t
        }
        None => s,
    }
}

/// Alertmanager's `Key.Hash()`: the SHA-256 of the group key, in hex, which PagerDuty
/// (`dedup_key`) and Opsgenie (`alias`) use to tie a resolution to its incident.
pub fn key_hash(group_key: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(group_key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now: jiff::Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 10:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Mon, 07 Dec 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate("héllo".into(), 10), "héllo");
        assert_eq!(truncate("héllo wörld".into(), 5), "héll…");
        assert_eq!(truncate("héllo".into(), 5).chars().count(), 5);
    }

    #[test]
    fn key_hash_is_alertmanagers() {
        // sha256("") — the hash of the bytes, hex encoded, as Go's %x prints it.
        assert_eq!(
            key_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
