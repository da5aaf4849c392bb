//! Load run: many agents' worth of batches against the `foresight` binary on loopback,
//! for a bounded time. Reports accepted batches and samples per second, latency
//! percentiles, the service's resident memory, and checks that every acknowledged batch
//! is in the store.
//!
//! `cargo bench -p foresight-ingest --bench load` (env: `LOAD_SECS` (default 20),
//! `LOAD_AGENTS` (default 500), `LOAD_SERIES` (series per batch, default 300),
//! `LOAD_CONCURRENCY` (requests in flight, default 32), `LOAD_TENANTS` (default 10)).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foresight_proto::Message;
use foresight_proto::v1::{Label, Resource, Sample, Series, TelemetryBatch};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One agent's batch: `series` JMX-like series of one broker, one sample each.
fn batch(agent: u64, seq: u64, series: u64) -> Vec<u8> {
    let now = now_ms();
    let b = TelemetryBatch {
        resource: Some(Resource {
            agent_instance_id: format!("agent-{agent}"),
            cluster_name: format!("cluster-{}", agent % 50),
            broker_id: Some((agent % 6) as i32),
            agent_version: "0.1.0".into(),
            ..Default::default()
        }),
        sequence: seq,
        created_at_ms: now,
        series: (0..series)
            .map(|i| Series {
                name: format!("kafka_server_metric_{}", i % 60),
                labels: vec![
                    Label {
                        name: "broker".into(),
                        value: (agent % 6).to_string(),
                    },
                    Label {
                        name: "topic".into(),
                        value: format!("topic-{}", i / 60),
                    },
                ],
                samples: vec![Sample {
                    timestamp_ms: now,
                    value: (seq * 7 + i) as f64,
                }],
            })
            .collect(),
        ..Default::default()
    };
    zstd::bulk::compress(&b.encode_to_vec(), 3).unwrap()
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let secs = env("LOAD_SECS", 20);
    let agents = env("LOAD_AGENTS", 500);
    let series = env("LOAD_SERIES", 300);
    let concurrency = env("LOAD_CONCURRENCY", 32);
    let tenants = env("LOAD_TENANTS", 10);
    let bin = env!("CARGO_BIN_EXE_foresight");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let keys: Vec<String> = (0..tenants)
        .map(|t| {
            let out = Command::new(bin)
                .args([
                    "keys",
                    "create",
                    "--tenant",
                    &format!("tenant-{t}"),
                    "--scope",
                    "ingest",
                    "--data-dir",
                ])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .collect();
    // The built-in rule pack runs, as in production; the per-tenant rate limit is off
    // (one tenant here stands for many agents).
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("FORESIGHT_LIMITS__TENANT_REQUESTS_PER_SECOND", "0")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let cert = dir.path().join("tls/cert.pem");
    let start = Instant::now();
    while !cert.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fingerprint = foresight_ingest::tls::fingerprint_of(&cert).unwrap();
    let (idle_rss, _) = rss_kib(pid);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let acked: Arc<Mutex<BTreeSet<(u64, u64)>>> = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let elapsed = rt.block_on(async {
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(
                foresight_reporter::tls::client_config(None, Some(&fingerprint)).unwrap(),
            )
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{port}/v1/telemetry");
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..concurrency {
            let (client, url, keys) = (client.clone(), url.clone(), keys.clone());
            let (acked, latencies, errors) = (acked.clone(), latencies.clone(), errors.clone());
            // Worker w speaks for the agents w, w + concurrency, ... in turn, each batch
            // with the agent's next sequence number.
            let mine: Vec<u64> = (w..agents).step_by(concurrency as usize).collect();
            tasks.push(tokio::spawn(async move {
                let mut k = 0usize;
                while Instant::now() < deadline && !mine.is_empty() {
                    let agent = mine[k % mine.len()];
                    let seq = (k / mine.len()) as u64 + 1;
                    k += 1;
                    let body = batch(agent, seq, series);
                    let key = &keys[(agent % keys.len() as u64) as usize];
                    let t0 = Instant::now();
                    let resp = client
                        .post(&url)
                        .bearer_auth(key)
                        .header("content-encoding", "zstd")
                        .body(body)
                        .send()
                        .await;
                    let took = t0.elapsed();
                    match resp {
                        Ok(r) if r.status() == 202 => {
                            latencies.lock().unwrap().push(took);
                            acked.lock().unwrap().insert((agent, seq));
                        }
                        Ok(r) => errors.lock().unwrap().push(r.status().to_string()),
                        Err(e) => errors.lock().unwrap().push(e.to_string()),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
    });
    let (rss, hwm) = rss_kib(pid);
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();

    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let acked = acked.lock().unwrap().clone();
    let store = foresight_ingest::Store::open(dir.path()).unwrap();
    let mut stored = BTreeSet::new();
    for t in 0..tenants {
        let id = store.ensure_tenant(&format!("tenant-{t}")).unwrap();
        for (agent, seq) in store.batch_sequences(id).unwrap() {
            let n: u64 = agent.trim_start_matches("agent-").parse().unwrap();
            stored.insert((n, seq));
        }
    }
    let lost = acked.difference(&stored).count();
    let errors = errors.lock().unwrap().clone();
    let secs_f = elapsed.as_secs_f64();
    println!(
        "load: {secs_f:.1} s, {agents} agents over {tenants} tenants, {series} series per batch, {concurrency} in flight"
    );
    println!(
        "  accepted: {} batches ({:.0}/s), {} samples ({:.0}/s)",
        acked.len(),
        acked.len() as f64 / secs_f,
        acked.len() as u64 * series,
        (acked.len() as u64 * series) as f64 / secs_f
    );
    println!(
        "  latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!(
        "  service RSS: {:.1} MiB idle, {:.1} MiB at the end, {:.1} MiB peak",
        idle_rss as f64 / 1024.0,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!(
        "  refused or failed: {} ({:?}); acknowledged but not stored: {lost}",
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(lost, 0, "acknowledged batches were lost");
}
