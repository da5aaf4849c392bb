//! `foresight-agent --once --print` against librdkafka's mock cluster: prints exactly
//! the batch it would ship, as JSON.

use std::process::Command;

use rdkafka::mocking::MockCluster;

#[test]
fn once_print_shows_the_batch_without_sending() {
    let cluster = MockCluster::new(2).unwrap();
    cluster.create_topic("payments", 2, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  cluster_name: mock\n  request_timeout_ms: 3000\ningest:\n  url: https://127.0.0.1:1\nlabels:\n  env: test\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
        .args(["--config", config.to_str().unwrap(), "--once", "--print"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the batch as JSON");
    assert_eq!(batch["sequence"], 1);
    assert_eq!(batch["snapshot"]["brokers"].as_array().unwrap().len(), 2);
    let series = batch["series"].as_array().unwrap();
    let lag = series
        .iter()
        .find(|s| s["name"] == "kafka_partition_last_stable_offset_lag")
        .expect("LSO lag is exported");
    let labels: Vec<(String, String)> = lag["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().into(),
                l["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        labels.contains(&("cluster".into(), "mock".into())),
        "{labels:?}"
    );
    assert!(
        labels.contains(&("env".into(), "test".into())),
        "{labels:?}"
    );
    assert!(
        labels.contains(&("topic".into(), "payments".into())),
        "{labels:?}"
    );
}

#[test]
fn a_bad_config_names_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(&config, "interval_secs: 0\ningest:\n  url: http://plain\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
        .args(["--config", config.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka.bootstrap_servers"), "{err}");
    assert!(err.contains("interval_secs"), "{err}");
    assert!(err.contains("must start with https://"), "{err}");
}
