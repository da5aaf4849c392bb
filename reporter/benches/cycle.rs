//! The agent's cost per collection cycle, as issue 4 budgets it: against librdkafka's
//! mock cluster of 6 brokers and 10,000 partitions (run in a child process, so that only
//! the agent's own CPU is counted), the CPU time of one collect-and-encode cycle, the
//! resident memory, and the compressed bytes a cycle ships.
//!
//! Run: `cargo bench -p foresight-reporter --bench cycle` (`CYCLE_PARTITIONS` to resize).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, KafkaConfig};
use foresight_reporter::shipper::Shipper;

/// User plus system CPU seconds of this process, from /proc (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name: utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let partitions: usize = std::env::var("CYCLE_PARTITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    if std::env::var_os("CYCLE_MOCK_CHILD").is_some() {
        // The cluster's process: 6 brokers, topics of 100 partitions, replication 3.
        let cluster = rdkafka::mocking::MockCluster::new(6).expect("mock cluster");
        for t in 0..partitions.div_ceil(100) {
            let n = 100.min(partitions - t * 100) as i32;
            cluster
                .create_topic(&format!("topic-{t}"), n, 3)
                .expect("topic");
        }
        println!("{}", cluster.bootstrap_servers());
        std::io::stdout().flush().expect("stdout");
        // Until the parent closes stdin.
        let _ = std::io::stdin().read_line(&mut String::new());
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env("CYCLE_MOCK_CHILD", "1")
        .arg("--bench")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock cluster process");
    let mut bootstrap = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut bootstrap)
        .expect("bootstrap servers");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let agent = Reporter::new(AgentConfig {
            kafka: KafkaConfig {
                bootstrap_servers: bootstrap.trim().to_string(),
                request_timeout_ms: 10_000,
                ..KafkaConfig::default()
            },
            ..AgentConfig::default()
        })
        .expect("agent");
        // A first cycle connects and warms caches; then three measured cycles.
        let first = agent.collect_batch().await.expect("collects");
        let seen: usize = first
            .snapshot
            .as_ref()
            .map(|s| s.topics.iter().map(|t| t.partitions.len()).sum())
            .unwrap_or(0);
        println!(
            "cluster: 6 brokers, {seen} partitions; {} series per batch",
            first.series.len()
        );
        for _ in 0..3 {
            let (cpu0, wall0) = (cpu_seconds(), Instant::now());
            let batch = agent.collect_batch().await.expect("collects");
            let body = Shipper::encode(&batch);
            println!(
                "cycle: {:.2} s CPU, {:.2} s wall, {:.0} KiB compressed ({} series), RSS {:.1} MiB",
                cpu_seconds() - cpu0,
                wall0.elapsed().as_secs_f64(),
                body.len() as f64 / 1024.0,
                batch.series.len(),
                rss_mib()
            );
        }
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
