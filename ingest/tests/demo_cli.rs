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

/// The printed sign-in link opens the console on the fault: the fleet shows the demo
/// cluster as critical and its page shows the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_signed_in_link_to_the_fault() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_foresight"))
        .arg("demo")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("foresight runs");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let (mut fingerprint, mut link) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while link.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the demo prints its console link within 60 s");
        if let Some(rest) = line.split("certificate SHA-256 ").nth(1) {
            fingerprint = Some(rest.trim_end_matches(')').to_string());
        }
        if let Some(rest) = line.strip_prefix("demo: console: ") {
            link = rest.split_whitespace().next().map(str::to_string);
        }
    }
    let link = link.unwrap();
    let base = link.split("/sign-in").next().unwrap().to_string();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(
            foresight_reporter::tls::client_config(None, fingerprint.as_deref()).unwrap(),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 303, "the link signs in");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = |path: &str| {
        let req = client
            .get(format!("{base}{path}"))
            .header("cookie", &cookie);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let fleet = page("/").await;
        if fleet.contains("sev-critical") && fleet.contains("href=\"/clusters/demo\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet does not show the fault within 2 minutes:\n{fleet}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cluster = page("/clusters/demo").await;
    assert!(
        cluster.contains("data-alertname=\"KafkaOfflinePartitions\""),
        "{cluster}"
    );
}
