//! What a receiver's API answers is outside Foresight's control: a `Retry-After` header
//! and PagerDuty's or Opsgenie's error bodies must be read or ignored, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = foresight_notifier::post::retry_after(&text, jiff::Timestamp::UNIX_EPOCH);
    let _ = foresight_notifier::post::retry_after(&text, jiff::Timestamp::MAX);
    let _ = foresight_notifier::pagerduty::explain(&text);
    let _ = foresight_notifier::opsgenie::explain(&text);
});
