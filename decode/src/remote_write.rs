//! Prometheus remote write 1.0 (`POST /api/v1/write`): snappy block format, protobuf.

use foresight_proto::Message;
use foresight_proto::v1::{Label, Sample, Series, TelemetryBatch};

use crate::{
    DecodeError, DecodeLimits, bad, check_series, inflate_limit, inflated_too_far, too_large,
    unsequenced,
};

/// Decodes a Prometheus remote-write 1.0 body (snappy block format, protobuf).
///
/// # Errors
/// 400 for bodies that are not snappy or not a write request, 413 past the limits.
pub fn decode_remote_write(
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<TelemetryBatch, DecodeError> {
    let len =
        snap::raw::decompress_len(body).map_err(|e| bad("bad_encoding", format!("snappy: {e}")))?;
    let (limit, by_ratio) = inflate_limit(body.len(), limits);
    if len > limit {
        return Err(inflated_too_far(limit, by_ratio, limits));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| bad("bad_encoding", format!("snappy: {e}")))?;
    let req = foresight_proto::prometheus::WriteRequest::decode(raw.as_slice())
        .map_err(|e| bad("bad_protobuf", format!("not a remote-write request: {e}")))?;
    if req.timeseries.len() > limits.max_series_per_batch {
        return Err(too_large(
            "too_many_series",
            format!(
                "{} series; at most {} per request (limits.max_series_per_batch)",
                req.timeseries.len(),
                limits.max_series_per_batch
            ),
        ));
    }
    let series: Vec<Series> = req
        .timeseries
        .into_iter()
        .filter_map(|ts| {
            let mut name = None;
            let labels = ts
                .labels
                .into_iter()
                .filter_map(|l| {
                    if l.name == "__name__" {
                        name = Some(l.value);
                        None
                    } else {
                        Some(Label {
                            name: l.name,
                            value: l.value,
                        })
                    }
                })
                .collect();
            Some(Series {
                name: name?,
                labels,
                samples: ts
                    .samples
                    .into_iter()
                    .map(|s| Sample {
                        timestamp_ms: s.timestamp,
                        value: s.value,
                    })
                    .collect(),
            })
        })
        .collect();
    check_series(&series, limits)?;
    Ok(unsequenced("prometheus-remote-write", series))
}
