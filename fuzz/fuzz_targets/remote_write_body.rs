//! Untrusted bytes at `POST /api/v1/write`: snappy then protobuf decoding must answer an
//! error, never panic or allocate past the limits.
#![no_main]

use foresight_decode::DecodeLimits;
use foresight_decode::decode_remote_write;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_decompressed_bytes: 1 << 20,
        ..DecodeLimits::default()
    };
    let _ = decode_remote_write(data, &limits);
});
