//! The agent's own format (`POST /v1/telemetry`): zstd, gzip or identity protobuf.

use foresight_proto::Message;
use foresight_proto::v1::TelemetryBatch;

use crate::{DecodeError, DecodeLimits, bad, check_series, decompress};

/// Decompresses and decodes an own-format body (`POST /v1/telemetry`).
///
/// # Errors
/// [`DecodeError`] with the status to answer: 400, 413 or 415.
pub fn decode_body(
    encoding: Option<&str>,
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<(TelemetryBatch, Vec<u8>), DecodeError> {
    let raw = decompress(encoding, body, limits)?;
    let batch = decode_batch(&raw, limits)?;
    Ok((batch, raw))
}

/// Decodes and checks an own-format batch.
///
/// # Errors
/// 400 naming the field, 413 naming the limit.
pub fn decode_batch(raw: &[u8], limits: &DecodeLimits) -> Result<TelemetryBatch, DecodeError> {
    let batch = TelemetryBatch::decode(raw).map_err(|e| {
        bad(
            "invalid_batch",
            format!("invalid TelemetryBatch protobuf: {e}"),
        )
    })?;
    let invalid = |m: &str| bad("invalid_batch", m.to_string());
    let resource = batch
        .resource
        .as_ref()
        .ok_or_else(|| invalid("resource: missing"))?;
    if resource.agent_instance_id.is_empty() {
        return Err(invalid("resource.agent_instance_id: must not be empty"));
    }
    if batch.sequence == 0 {
        return Err(invalid("sequence: must be at least 1"));
    }
    check_series(&batch.series, limits)?;
    Ok(batch)
}
