//! Load run: many agents' worth of batches against the `foresight` binary on loopback,
//! for a bounded time. Reports accepted batches and samples per second, latency
//! percentiles, the service's resident memory, and checks that every acknowledged batch
//! is in the store.
//!
//! `cargo bench -p foresight-ingest --bench load` (env: `LOAD_SECS` (default 20),
//! `LOAD_AGENTS` (default 500), `LOAD_SERIES` (series per batch, default 300),
//! `LOAD_CONCURRENCY` (requests in flight, default 32), `LOAD_TENANTS` (default 10),
//! `LOAD_MODE`: `single` (default), `cluster` or `both`).
//!
//! `cluster` runs the same load against one `foresight serve` node in cluster mode on a
//! real Kafka (one controller, three brokers, `foresight-testkit`) and a real
//! PostgreSQL, all on this machine, and checks the acknowledged batches against the
//! telemetry topic instead of SQLite: what the Kafka and PostgreSQL path costs per batch
//! beside the single process. `both` runs one then the other and prints the ratios.

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

/// What one run measured.
struct Run {
    batches_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    end_rss_mib: f64,
}

fn main() {
    let mode = std::env::var("LOAD_MODE").unwrap_or_else(|_| "single".into());
    let single = matches!(mode.as_str(), "single" | "both").then(|| run(None));
    let cluster = matches!(mode.as_str(), "cluster" | "both").then(|| {
        let kafka = foresight_testkit::Cluster::start(
            foresight_testkit::ClusterSpec::new(foresight_testkit::Version::Kafka4).nodes(1, 3),
        )
        .expect("a real Kafka cluster starts");
        let pg = foresight_testkit::postgres::Postgres::start().expect("PostgreSQL starts");
        run(Some((kafka.bootstrap(), pg.url())))
    });
    if let (Some(s), Some(c)) = (single, cluster) {
        println!(
            "cluster / single: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x, service RSS {:.2}x",
            c.batches_per_s / s.batches_per_s,
            c.p50_ms / s.p50_ms,
            c.p99_ms / s.p99_ms,
            c.end_rss_mib / s.end_rss_mib,
        );
    }
}

/// One load run against a fresh service: one process on SQLite, or one cluster-mode
/// node on `(Kafka bootstrap, PostgreSQL URL)`.
fn run(cluster: Option<(String, String)>) -> Run {
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
    let config = dir.path().join("foresight.yml");
    let topic = "foresight.telemetry.load";
    std::fs::write(
        &config,
        match &cluster {
            Some((kafka, pg)) => format!(
                "data_dir: {}\ncluster:\n  node_id: load\n  kafka: {{bootstrap_servers: \"{kafka}\"}}\n  topics: {{telemetry: {topic}, telemetry_partitions: 6, replication_factor: 3}}\n  postgres: {{url: \"{pg}\"}}\n",
                dir.path().display()
            ),
            None => format!("data_dir: {}\n", dir.path().display()),
        },
    )
    .unwrap();
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
                    "--config",
                ])
                .arg(&config)
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
            "--config",
        ])
        .arg(&config)
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
    let stored = match &cluster {
        Some((kafka, _)) => in_topic(kafka, topic),
        None => {
            let store = foresight_ingest::Store::open(dir.path()).unwrap();
            let mut stored = BTreeSet::new();
            for t in 0..tenants {
                let id = store.ensure_tenant(&format!("tenant-{t}")).unwrap();
                for (agent, seq) in store.batch_sequences(id).unwrap() {
                    let n: u64 = agent.trim_start_matches("agent-").parse().unwrap();
                    stored.insert((n, seq));
                }
            }
            stored
        }
    };
    let lost = acked.difference(&stored).count();
    let errors = errors.lock().unwrap().clone();
    let secs_f = elapsed.as_secs_f64();
    println!(
        "load ({}): {secs_f:.1} s, {agents} agents over {tenants} tenants, {series} series per batch, {concurrency} in flight",
        if cluster.is_some() {
            "cluster mode: Kafka and PostgreSQL"
        } else {
            "one process, SQLite"
        }
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
    Run {
        batches_per_s: acked.len() as f64 / secs_f,
        p50_ms: pct(0.50).as_secs_f64() * 1e3,
        p99_ms: pct(0.99).as_secs_f64() * 1e3,
        end_rss_mib: rss as f64 / 1024.0,
    }
}

/// Every (agent number, sequence) in the telemetry topic.
fn in_topic(bootstrap: &str, topic: &str) -> BTreeSet<(u64, u64)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "load-oracle")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let mut quiet = 0;
    while quiet < 10 {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                quiet = 0;
                let Some(h) = m.headers() else { continue };
                let get = |name: &str| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).to_string())
                        .unwrap_or_default()
                };
                if let (Ok(agent), Ok(seq)) = (
                    get("instance").trim_start_matches("agent-").parse::<u64>(),
                    get("sequence").parse::<u64>(),
                ) {
                    seen.insert((agent, seq));
                }
            }
            _ => quiet += 1,
        }
    }
    seen
}
