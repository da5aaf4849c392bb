//! Untrusted bytes at `POST /v1/metrics`: OTLP protobuf or JSON, compressed or not, must
//! give series or an error, never a panic or an allocation past the limits.
#![no_main]

use foresight_decode::DecodeLimits;
use foresight_decode::decode_otlp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        ..DecodeLimits::default()
    };
    let Some((mode, body)) = data.split_first() else {
        return;
    };
    let json = mode & 1 == 1;
    let encoding = match (mode >> 1) % 3 {
        0 => None,
        1 => Some("gzip"),
        _ => Some("zstd"),
    };
    let _ = decode_otlp(json, encoding, body, &limits);
});
