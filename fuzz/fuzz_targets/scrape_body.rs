//! Untrusted bytes from a broker's metrics endpoint: the jmx_exporter text format and a
//! Jolokia JSON answer must give series or an error, never a panic.
#![no_main]

use std::collections::BTreeMap;

use foresight_decode::{jmx, jolokia};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let labels = BTreeMap::from([("cluster".to_string(), "c".to_string())]);
    let _ = jolokia::parse("fuzz", data, &labels, 0);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jmx::parse("fuzz", text, &labels, 0);
    }
});
