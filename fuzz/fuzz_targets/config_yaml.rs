//! Config files are operator input: `foresight serve`'s YAML and an Alertmanager
//! configuration must load or give an error, never a panic.
#![no_main]

use foresight_ingest::ServeConfig;
use foresight_notifier::config::NotifyConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mut cfg) = serde_saphyr::from_str::<ServeConfig>(text) {
        // Validation would read the named Alertmanager file: not the fuzzer's business.
        cfg.alertmanager_config = None;
        let _ = cfg.validate();
    }
    let _ = NotifyConfig::from_yaml(text);
});
