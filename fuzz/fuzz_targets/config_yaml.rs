//! Config files are operator input: an Alertmanager configuration must load or give an
//! error, never a panic. (`foresight serve`'s own YAML is serde over the same parser and
//! is tested in the ingest crate: fuzzing it would link the service, SQLite included.)
#![no_main]

use foresight_notifier::config::NotifyConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What loads is also shown, redacted, by /api/v2/status.
    if let Ok(c) = NotifyConfig::from_yaml(text) {
        let _ = c.redacted_yaml();
    }
});
