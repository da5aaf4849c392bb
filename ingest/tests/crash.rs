//! The service killed with SIGKILL while agents send and an alert is pending, then
//! restarted on the same data directory: every acknowledged batch is in the store, the
//! pending `for` continues from its original start, and no notification is sent twice.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foresight_proto::Message;
use foresight_proto::v1::{Label, Resource, Sample, Series, TelemetryBatch};

const RULES: &str = r#"
groups:
- name: crash
  rules:
  - alert: AlreadyFiring
    expr: test_other > 0
  - alert: Stuck
    expr: test_value > 0
    for: 8s
"#;

/// The service process; killed when dropped, so that a failing test leaves none behind.
fn start(bin: &str, config: &Path) -> common::ChildGuard {
    common::ChildGuard(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("foresight starts"),
    )
}

fn batch(agent: &str, seq: u64) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let series = |name: &str| Series {
        name: name.into(),
        labels: vec![Label {
            name: "agent".into(),
            value: agent.into(),
        }],
        samples: vec![Sample {
            timestamp_ms: now,
            value: 1.0,
        }],
    };
    let b = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: agent.into(),
            cluster_name: "prod".into(),
            ..Default::default()
        }),
        sequence: seq,
        created_at_ms: now,
        // Only the first agent's samples make alerts: one alert per rule.
        series: if agent == "agent-0" {
            vec![series("test_value"), series("test_other")]
        } else {
            vec![series("unrelated")]
        },
        ..Default::default()
    };
    zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_batch_no_pending_for_and_sends_nothing_twice() {
    let bin = env!("CARGO_BIN_EXE_foresight");
    let data = tempfile::tempdir().unwrap();
    let mut receiver = common::start_receiver().await;
    let port = common::free_port();
    let rules = data.path().join("rules.yml");
    std::fs::write(&rules, RULES).unwrap();
    let config = data.path().join("foresight.yml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\ndata_dir: {}\nevaluation_interval: 500ms\nbuiltin_rules: false\nrule_files: [{}]\nwebhooks:\n- {{name: hook, url: \"{}\", secret: {}}}\n",
            data.path().join("data").display(),
            rules.display(),
            receiver.url,
            common::SECRET,
        ),
    )
    .unwrap();
    let out = Command::new(bin)
        .args([
            "keys", "create", "--tenant", "acme", "--scope", "ingest", "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut child = start(bin, &config);
    // The certificate is generated at the first start and kept in the data dir.
    let cert = data.path().join("data/tls/cert.pem");
    let url = format!("https://127.0.0.1:{port}/v1/telemetry");
    let fingerprint = common::fingerprint_when_ready(&cert, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = common::client(&fingerprint);

    // Three agents send a batch every 100 ms; each retries its sequence until it is
    // acknowledged, as the real agent does.
    let acked: Arc<Mutex<BTreeSet<(String, u64)>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut agents = Vec::new();
    for a in 0..3 {
        let (client, url, key, acked, stop) = (
            client.clone(),
            url.clone(),
            key.clone(),
            acked.clone(),
            stop.clone(),
        );
        agents.push(tokio::spawn(async move {
            let agent = format!("agent-{a}");
            let mut seq = 1;
            while !stop.is_cancelled() {
                let sent = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-encoding", "zstd")
                    .timeout(Duration::from_secs(2))
                    .body(batch(&agent, seq))
                    .send()
                    .await;
                if matches!(&sent, Ok(r) if r.status() == 202) {
                    acked.lock().unwrap().insert((agent.clone(), seq));
                    seq += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    // AlreadyFiring is notified; Stuck is pending. Kill in the middle of its `for`.
    let first = common::wait_for(
        &mut receiver.rx,
        "AlreadyFiring",
        "firing",
        Duration::from_secs(30),
    )
    .await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    child.kill();
    let killed_at = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let restarted = Instant::now();
    let mut child = start(bin, &config);

    // Stuck fires 8 s after it became pending, before the kill: not 8 s after the restart.
    let stuck =
        common::wait_for(&mut receiver.rx, "Stuck", "firing", Duration::from_secs(30)).await;
    let fired_after_restart = restarted.elapsed();
    assert!(
        fired_after_restart < Duration::from_secs(6),
        "Stuck fired {fired_after_restart:?} after the restart: its pending time started over (pending since {:?} before the kill)",
        restarted - started
    );
    let starts_at: jiff::Timestamp = stuck["alerts"][0]["startsAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        starts_at < jiff::Timestamp::try_from(killed_at).unwrap(),
        "Stuck's startsAt {starts_at} is after the kill"
    );

    // Keep sending a while, then stop and look at everything that arrived.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    for a in agents {
        a.await.unwrap();
    }
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    *counts
        .entry(("AlreadyFiring".into(), "firing".into()))
        .or_default() += 1;
    *counts.entry(("Stuck".into(), "firing".into())).or_default() += 1;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), receiver.rx.recv()).await
    {
        *counts
            .entry((
                msg["commonLabels"]["alertname"]
                    .as_str()
                    .unwrap_or("")
                    .into(),
                msg["status"].as_str().unwrap_or("").into(),
            ))
            .or_default() += 1;
    }
    assert_eq!(
        counts,
        HashMap::from([
            (("AlreadyFiring".into(), "firing".into()), 1),
            (("Stuck".into(), "firing".into()), 1)
        ]),
        "each alert is notified once, across the restart (first: {first})"
    );

    child.kill();
    let store = foresight_ingest::Store::open(&data.path().join("data")).unwrap();
    let tenant = store.ensure_tenant("acme").unwrap();
    let stored: BTreeSet<(String, u64)> =
        store.batch_sequences(tenant).unwrap().into_iter().collect();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 30,
        "only {} batches acknowledged",
        acked.len()
    );
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
}
