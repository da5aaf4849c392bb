//! The built-in pack and its tests pass in real promtool (Debian's `prometheus`
//! package; `scripts/test-deps.sh` installs it), not only in Foresight.

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> (bool, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs");
    let out = Command::new(std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into()))
        .args(args)
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); run scripts/test-deps.sh to install it")
        });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn promtool_accepts_the_pack() {
    let (ok, out) = promtool(&["check", "rules", "kafka.yml"]);
    assert!(ok, "{out}");
}

#[test]
fn promtool_passes_the_pack_tests() {
    let (ok, out) = promtool(&["test", "rules", "kafka.test.yml"]);
    assert!(ok, "{out}");
}
