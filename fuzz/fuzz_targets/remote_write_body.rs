//! Untrusted bytes at `POST /api/v1/write`: snappy then protobuf decoding must answer an
//! error, never panic or allocate past the limits.
#![no_main]

use foresight_ingest::config::Limits;
use foresight_ingest::decode::decode_remote_write;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    let _ = decode_remote_write(data, &limits);
});
