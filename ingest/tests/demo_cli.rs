//! The README's first command: `foresight demo --once` prints a delivered notification
//! as one JSON line and exits 0.

use std::process::Command;

#[test]
fn demo_once_prints_a_notification() {
    let out = Command::new(env!("CARGO_BIN_EXE_foresight"))
        .args(["demo", "--once", "--timeout", "120"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("foresight runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.lines().next().expect("one JSON line");
    let msg: serde_json::Value = serde_json::from_str(line).expect("the line is JSON");
    assert_eq!(msg["status"], "firing");
    assert_eq!(msg["commonLabels"]["alertname"], "KafkaOfflinePartitions");
    assert_eq!(msg["commonLabels"]["topic"], "payments");
    assert_eq!(msg["commonLabels"]["severity"], "critical");
}
