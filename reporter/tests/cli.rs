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
            "kafka:\n  bootstrap_servers: \"{}\"\n  cluster_name: mock\n  request_timeout_ms: 3000\ningest:\n  url: https://127.0.0.1:1\nlabels:\n  env: test\nbroker_id: 1\nlog_dirs:\n  - {}\n",
            cluster.bootstrap_servers(),
            dir.path().display()
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
    let free = series
        .iter()
        .find(|s| s["name"] == "kafka_log_dir_free_bytes")
        .expect("log dir free bytes are exported");
    assert!(free["samples"][0]["value"].as_f64().unwrap() > 0.0);
    assert!(
        free["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "broker" && l["value"] == "1"),
        "{free}"
    );
    // Partition state goes as the snapshot; the ingest derives the partition series.
    let topics = batch["snapshot"]["topics"].as_array().unwrap();
    let payments = topics
        .iter()
        .find(|t| t["name"] == "payments")
        .expect("the topic is in the snapshot");
    let partitions = payments["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    for p in partitions {
        assert_eq!(p["replicas"].as_array().unwrap().len(), 2, "{p}");
        assert!(p["high_watermark"].is_i64(), "{p}");
        assert!(p["last_stable_offset"].is_i64(), "{p}");
    }
    assert_eq!(batch["resource"]["cluster_name"], "mock");
    assert_eq!(batch["resource"]["labels"]["env"], "test");
    assert!(
        !series
            .iter()
            .any(|s| s["name"] == "kafka_topic_partition_leader"),
        "snapshot-derived series are not shipped twice"
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

/// Batches in the spool, oldest first, as (agent instance, sequence).
fn spooled(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut spool = foresight_reporter::spool::Spool::open(dir, u64::MAX).unwrap();
    let mut out = Vec::new();
    // Read without consuming: reopen-and-read must not change the files.
    let n = spool.len();
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let e = entry.unwrap();
        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
    }
    drop(spool);
    spool = foresight_reporter::spool::Spool::open(copy.path(), u64::MAX).unwrap();
    while let Some(b) = spool.front() {
        let id = b.resource.map(|r| r.agent_instance_id).unwrap_or_default();
        out.push((id, b.sequence));
        spool.pop_front();
    }
    assert_eq!(out.len(), n);
    out
}

#[test]
fn sigkill_while_spooling_loses_nothing_already_spooled() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("payments", 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let config = dir.path().join("agent.yml");
    // Nothing listens on the ingest port: every batch stays in the spool.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    std::fs::write(
        &config,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  request_timeout_ms: 3000\ningest:\n  url: https://127.0.0.1:{port}\n  api_key: k\n  max_attempts: 1\n  timeout_secs: 1\ninterval_secs: 1\nspool:\n  dir: {}\n",
            cluster.bootstrap_servers(),
            spool.display()
        ),
    )
    .unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
        .args(["--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&spool).map_or(0, |d| d.count()) < 3 {
        assert!(std::time::Instant::now() < deadline, "agent did not spool");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SIGKILL: no chance to flush or clean up.
    agent.kill().unwrap();
    agent.wait().unwrap();
    let before = spooled(&spool);
    assert!(before.len() >= 3, "{before:?}");
    let seqs: Vec<u64> = before.iter().map(|b| b.1).collect();
    assert_eq!(
        seqs,
        (1..=before.len() as u64).collect::<Vec<_>>(),
        "in order"
    );

    // Restarted, it keeps what was spooled and adds its own batch after it.
    let out = Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
        .args(["--config", config.to_str().unwrap(), "--once"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("waiting in the spool"),
        "{stderr}"
    );
    let after = spooled(&spool);
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(after.len(), before.len() + 1);
    assert_ne!(after.last().unwrap().0, before[0].0, "a new agent instance");
}

#[test]
fn check_says_what_works_and_what_to_fix() {
    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = |bootstrap: &str| {
        std::fs::write(
            &config,
            format!(
                "kafka:\n  bootstrap_servers: \"{bootstrap}\"\n  request_timeout_ms: 2000\ningest:\n  url: https://127.0.0.1:{port}\n  api_key: k\n  timeout_secs: 2\n"
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = run(&cluster.bootstrap_servers());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ok   kafka: cluster"), "{stdout}");
    // The mock has no KRaft quorum: said, and not a failure.
    assert!(
        stdout.contains("ok   admin:") && stdout.contains("the quorum rules stay silent"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL ingest") && stdout.contains("Fix: check the address and port"),
        "{stdout}"
    );
    let out = run(&format!("127.0.0.1:{port}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL kafka") && stdout.contains("is reachable from this host"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jmx_exporter_metrics_are_scraped_and_labelled_with_cluster_and_broker() {
    let body = "# TYPE kafka_server_replicamanager_underreplicatedpartitions gauge\nkafka_server_replicamanager_underreplicatedpartitions 2.0\n";
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  cluster_name: mock\n  request_timeout_ms: 2000\njmx_exporter:\n  3: http://{addr}/metrics\n  4: http://{addr}/nothing-here\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let config_path = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
            .args([
                "--config",
                config_path.to_str().unwrap(),
                "--once",
                "--print",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = batch["series"].as_array().unwrap();
    let urp = series
        .iter()
        .find(|s| s["name"] == "kafka_server_replicamanager_underreplicatedpartitions")
        .expect("scraped");
    assert_eq!(urp["samples"][0]["value"], 2.0);
    let labels = urp["labels"].as_array().unwrap();
    for (k, v) in [("broker", "3"), ("cluster", "mock")] {
        assert!(
            labels.iter().any(|l| l["name"] == k && l["value"] == v),
            "{labels:?}"
        );
    }
    let failures = series
        .iter()
        .find(|s| s["name"] == "foresight_agent_scrape_failures")
        .unwrap();
    assert_eq!(failures["samples"][0]["value"], 1.0, "the 404 endpoint");
}

#[test]
fn privacy_hashes_topic_names_and_filters_metrics() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("payroll-secret", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  request_timeout_ms: 2000\nprivacy:\n  hash_names: true\n  exclude: [\"kafka_topic_partition_leader.*\"]\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let run = |key: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_foresight-agent"));
        cmd.args(["--config", config.to_str().unwrap(), "--once", "--print"]);
        match key {
            Some(k) => cmd.env("FORESIGHT_HASH_KEY", k),
            None => cmd.env_remove("FORESIGHT_HASH_KEY"),
        };
        cmd.output().unwrap()
    };
    let missing = run(None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("FORESIGHT_HASH_KEY"));

    let out = run(Some("org-key"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("payroll-secret"),
        "the name never leaves the host"
    );
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The ingest is told not to derive the excluded names.
    let excluded: Vec<&str> = batch["excluded_metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        excluded.contains(&"kafka_topic_partition_leader"),
        "{excluded:?}"
    );
    assert!(
        excluded.contains(&"kafka_topic_partition_leader_is_preferred"),
        "{excluded:?}"
    );
    assert!(!excluded.contains(&"kafka_partition_high_watermark"));
    let topic = batch["snapshot"]["topics"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(topic.starts_with("h:") && topic.len() == 18, "{topic}");
    // Same key, same hash: names stay comparable across runs and agents.
    let again = run(Some("org-key"));
    assert!(String::from_utf8_lossy(&again.stdout).contains(&topic));
}

/// A Jolokia agent's bulk read: answers the MBeans it knows, 404 for the rest, and
/// refuses anything that is not a list of reads.
async fn jolokia(axum::Json(reqs): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
    let known = serde_json::json!({
        "kafka.server:type=ReplicaManager,name=PartitionsWithLateTransactionsCount": {"Value": 2},
        "kafka.controller:type=ControllerStats,name=UncleanLeaderElectionsPerSec":
            {"Count": 7, "OneMinuteRate": 0.0},
    });
    let answers = reqs
        .as_array()
        .expect("a bulk request")
        .iter()
        .map(|r| {
            assert_eq!(r["type"], "read");
            let mbean = r["mbean"].as_str().expect("an MBean name");
            match known.get(mbean) {
                Some(v) => serde_json::json!({"request": r, "value": v, "status": 200}),
                None => serde_json::json!({"request": r, "error_type": "javax.management.InstanceNotFoundException", "status": 404}),
            }
        })
        .collect();
    axum::Json(serde_json::Value::Array(answers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jolokia_mbeans_are_read_and_named_as_the_jmx_exporter_names_them() {
    let app = axum::Router::new().route("/jolokia/", axum::routing::post(jolokia));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let cluster = MockCluster::new(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yml");
    std::fs::write(
        &config,
        format!(
            "kafka:\n  bootstrap_servers: \"{}\"\n  cluster_name: mock\n  request_timeout_ms: 2000\njolokia:\n  endpoints:\n    2: http://{addr}/jolokia/\n",
            cluster.bootstrap_servers()
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_foresight-agent"))
            .args(["--config", config.to_str().unwrap(), "--once", "--print"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let batch: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = batch["series"].as_array().unwrap();
    let get = |name: &str| {
        series
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {series:?}"))
    };
    let late = get("kafka_server_replicamanager_partitionswithlatetransactionscount");
    assert_eq!(late["samples"][0]["value"], 2.0);
    assert!(
        late["labels"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "broker" && l["value"] == "2")
    );
    assert_eq!(
        get("kafka_controller_controllerstats_uncleanleaderelections_total")["samples"][0]["value"],
        7.0
    );
    assert_eq!(
        get("foresight_agent_scrape_failures")["samples"][0]["value"],
        0.0
    );
}
