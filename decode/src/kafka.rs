//! A broker's answer to the agent's own Kafka client: a response header and body, at the
//! version the agent negotiated (the codecs are `kafka-protocol`'s).

use bytes::Bytes;
use kafka_protocol::messages::ResponseHeader;
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};

/// Decodes a response frame (without its length prefix) to `R` sent at `version` with
/// correlation id `correlation`. A broker's bytes are untrusted: this is what the
/// `kafka_response` fuzz target drives.
///
/// # Errors
/// What the decoder said, or a correlation id that does not answer the request.
pub fn decode_response<R: Request>(
    mut buf: Bytes,
    version: i16,
    correlation: i32,
) -> Result<R::Response, String> {
    let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
        .map_err(|e| e.to_string())?;
    if header.correlation_id != correlation {
        return Err(format!(
            "correlation id {} answers request {correlation}",
            header.correlation_id
        ));
    }
    R::Response::decode(&mut buf, version).map_err(|e| e.to_string())
}
