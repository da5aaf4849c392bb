//! Untrusted bytes at `POST /v1/telemetry`: decompression and protobuf decoding must
//! answer an error, never panic or allocate past the limits.
#![no_main]

use foresight_decode::DecodeLimits;
use foresight_decode::decode_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits { max_decompressed_bytes: 1 << 20, ..DecodeLimits::default() };
    let (encoding, body) = match data.split_first() {
        Some((0, rest)) => (Some("zstd"), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let _ = decode_body(encoding, body, &limits);
});
