//! Rule files are operator input: any text must load or give an error naming the
//! problem, never a panic. Loaded rules are also evaluated once on an empty store, so
//! that whatever the parser accepts the evaluator survives.
#![no_main]

use foresight_rules::{RuleEngine, SeriesStore, load_str};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(groups) = load_str("fuzz.yml", text) {
        let mut engine = RuleEngine::new(groups, Default::default());
        let mut store = SeriesStore::new(3_600_000);
        let _ = engine.evaluate(&mut store, 1_700_000_000_000, "fuzz");
    }
});
