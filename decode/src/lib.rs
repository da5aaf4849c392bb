//! Foresight's decoders of untrusted bytes, and nothing else: this crate links neither
//! SQLite nor librdkafka, so that the fuzz targets in `fuzz/` build on the decoders alone.
//!
//! At the service, request bodies: the own format ([`decode_body`], zstd or gzip
//! protobuf), Prometheus remote write ([`decode_remote_write`], snappy protobuf) and
//! OTLP/HTTP metrics ([`decode_otlp`], protobuf or JSON). Each ends in a
//! [`TelemetryBatch`] checked against the [`DecodeLimits`], so that samples from all
//! three reach the same series store and rules. Every failure is a [`DecodeError`]
//! naming the limit or the problem and the kind of refusal, which the service maps to an
//! HTTP status in one place.
//!
//! At the agent, what brokers answer: the jmx_exporter's text format ([`jmx`]), a
//! Jolokia read ([`jolokia`]) and Kafka protocol responses ([`kafka`]).
//!
//! None of them panics on any input.

use std::io::Read;

use foresight_proto::v1::{Resource, Series, TelemetryBatch};

pub mod jmx;
pub mod jolokia;
pub mod kafka;
mod otlp;
mod remote_write;
mod telemetry;
#[cfg(test)]
mod tests;

pub use otlp::{decode_otlp, otlp_is_json};
pub use remote_write::decode_remote_write;
pub use telemetry::{decode_batch, decode_body};

/// Why a body was refused, as the API answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The body does not decode (400).
    Invalid,
    /// The body or what it holds is past a limit (413).
    TooLarge,
    /// An encoding or content type the endpoint does not speak (415).
    UnsupportedMediaType,
}

impl Refusal {
    /// The HTTP status that answers it.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Invalid => 400,
            Refusal::TooLarge => 413,
            Refusal::UnsupportedMediaType => 415,
        }
    }
}

/// A refused body: the kind of refusal, a machine-readable code naming the limit or the
/// problem, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    refusal: Refusal,
    code: &'static str,
    message: String,
}

impl DecodeError {
    /// A refusal with its code and message.
    pub fn new(refusal: Refusal, code: &'static str, message: impl Into<String>) -> Self {
        DecodeError {
            refusal,
            code,
            message: message.into(),
        }
    }

    /// What kind of refusal.
    pub fn refusal(&self) -> Refusal {
        self.refusal
    }

    /// The HTTP status that answers it.
    pub fn status(&self) -> u16 {
        self.refusal.status()
    }

    /// The machine-readable code: which limit or problem.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message for people.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The bounds a body is decoded within (the service's `limits` section holds them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest request body as sent, in bytes: any body may inflate to this much.
    pub max_body_bytes: usize,
    /// Largest body after decompression, in bytes.
    pub max_decompressed_bytes: usize,
    /// Largest ratio of decompressed to sent size for bodies that inflate past
    /// `max_body_bytes`.
    pub max_decompression_ratio: usize,
    /// Most series in one batch.
    pub max_series_per_batch: usize,
    /// Most labels on one series, its name not counted.
    pub max_labels_per_series: usize,
    /// Longest label name, in bytes.
    pub max_label_name_bytes: usize,
    /// Longest label value or series name, in bytes.
    pub max_label_value_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_body_bytes: 8 << 20,
            max_decompressed_bytes: 64 << 20,
            max_decompression_ratio: 200,
            max_series_per_batch: 200_000,
            max_labels_per_series: 64,
            max_label_name_bytes: 256,
            max_label_value_bytes: 2048,
        }
    }
}

pub(crate) fn too_large(code: &'static str, message: String) -> DecodeError {
    DecodeError::new(Refusal::TooLarge, code, message)
}

pub(crate) fn bad(code: &'static str, message: String) -> DecodeError {
    DecodeError::new(Refusal::Invalid, code, message)
}

/// How far `body` may inflate: the smaller of the size and the ratio limit. Any body may
/// inflate to `max_body_bytes`: the ratio guards against bombs, not against a quiet
/// cluster's snapshot that compresses unusually well.
pub(crate) fn inflate_limit(body_len: usize, limits: &DecodeLimits) -> (usize, bool) {
    let by_ratio = body_len
        .max(1)
        .saturating_mul(limits.max_decompression_ratio.max(1))
        .max(limits.max_body_bytes);
    if by_ratio < limits.max_decompressed_bytes {
        (by_ratio, true)
    } else {
        (limits.max_decompressed_bytes, false)
    }
}

pub(crate) fn inflated_too_far(limit: usize, by_ratio: bool, limits: &DecodeLimits) -> DecodeError {
    if by_ratio {
        too_large(
            "decompression_ratio",
            format!(
                "body inflates more than {} times its size (limits.max_decompression_ratio)",
                limits.max_decompression_ratio
            ),
        )
    } else {
        too_large(
            "decompressed_too_large",
            format!("body decompresses to more than {limit} bytes (limits.max_decompressed_bytes)"),
        )
    }
}

/// Decompresses `body` per `Content-Encoding` (identity, zstd or gzip), refusing to
/// inflate past the size or ratio limit.
///
/// # Errors
/// 415 for other encodings, 400 for corrupt bodies, 413 past a limit.
pub fn decompress(
    encoding: Option<&str>,
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<Vec<u8>, DecodeError> {
    let (limit, by_ratio) = inflate_limit(body.len(), limits);
    let mut out = Vec::new();
    let read = |r: &mut dyn Read, out: &mut Vec<u8>, name: &str| {
        r.take(limit as u64 + 1)
            .read_to_end(out)
            .map_err(|e| bad("bad_encoding", format!("{name}: {e}")))
    };
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => {
            if body.len() > limits.max_decompressed_bytes {
                return Err(inflated_too_far(
                    limits.max_decompressed_bytes,
                    false,
                    limits,
                ));
            }
            return Ok(body.to_vec());
        }
        Some("zstd") => {
            let mut d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| bad("bad_encoding", format!("zstd: {e}")))?;
            read(&mut d, &mut out, "zstd")?;
        }
        Some("gzip") => {
            read(&mut flate2::read::GzDecoder::new(body), &mut out, "gzip")?;
        }
        Some(other) => {
            return Err(DecodeError::new(
                Refusal::UnsupportedMediaType,
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not supported; use zstd, gzip or identity"),
            ));
        }
    }
    if out.len() > limit {
        return Err(inflated_too_far(limit, by_ratio, limits));
    }
    Ok(out)
}

/// Applies the per-batch and per-series limits.
///
/// # Errors
/// 413 naming the limit and the series; 400 for empty names.
pub fn check_series(series: &[Series], limits: &DecodeLimits) -> Result<(), DecodeError> {
    if series.len() > limits.max_series_per_batch {
        return Err(too_large(
            "too_many_series",
            format!(
                "series: {} exceeds the limit of {} (limits.max_series_per_batch)",
                series.len(),
                limits.max_series_per_batch
            ),
        ));
    }
    for (i, s) in series.iter().enumerate() {
        if s.name.is_empty() {
            return Err(bad(
                "invalid_batch",
                format!("series[{i}].name: must not be empty"),
            ));
        }
        if s.name.len() > limits.max_label_value_bytes {
            return Err(too_large(
                "label_value_too_long",
                format!(
                    "series[{i}].name: {} bytes; at most {} (limits.max_label_value_bytes)",
                    s.name.len(),
                    limits.max_label_value_bytes
                ),
            ));
        }
        if s.labels.len() > limits.max_labels_per_series {
            return Err(too_large(
                "too_many_labels",
                format!(
                    "series[{i}] {:?}: {} labels; at most {} (limits.max_labels_per_series)",
                    s.name,
                    s.labels.len(),
                    limits.max_labels_per_series
                ),
            ));
        }
        for l in &s.labels {
            if l.name.is_empty() {
                return Err(bad(
                    "invalid_batch",
                    format!(
                        "series[{i}].labels: a label with value {:?} has an empty name",
                        l.value
                    ),
                ));
            }
            if l.name.len() > limits.max_label_name_bytes {
                return Err(too_large(
                    "label_name_too_long",
                    format!(
                        "series[{i}] {:?}: a label name of {} bytes; at most {} (limits.max_label_name_bytes)",
                        s.name,
                        l.name.len(),
                        limits.max_label_name_bytes
                    ),
                ));
            }
            if l.value.len() > limits.max_label_value_bytes {
                return Err(too_large(
                    "label_value_too_long",
                    format!(
                        "series[{i}] {:?} label {:?}: a value of {} bytes; at most {} (limits.max_label_value_bytes)",
                        s.name,
                        l.name,
                        l.value.len(),
                        limits.max_label_value_bytes
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A batch for a push protocol without sequence numbers: each request is its own batch.
pub(crate) fn unsequenced(origin: &str, series: Vec<Series>) -> TelemetryBatch {
    let id: [u8; 8] = rand::random();
    TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: format!("{origin}/{}", hex::encode(id)),
            ..Default::default()
        }),
        sequence: 1,
        series,
        ..Default::default()
    }
}
