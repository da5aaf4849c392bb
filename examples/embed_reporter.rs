//! Embeds the Foresight reporter in a service's own tokio runtime, adds a series of the
//! service's own, and prints the batch it would ship.
//!
//! Run: `cargo run -p foresight-examples --example embed_reporter`
//! (against an in-process mock cluster), or set `KAFKA_BOOTSTRAP` to a real cluster.

use foresight_reporter::Reporter;
use foresight_reporter::config::{AgentConfig, KafkaConfig};
use foresight_reporter::proto::v1::{Label, Sample, Series};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Without a cluster to point at, start librdkafka's mock cluster in-process.
    let mock = match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(_) => None,
        Err(_) => {
            let m = rdkafka::mocking::MockCluster::new(1)?;
            m.create_topic("orders", 3, 1)?;
            Some(m)
        }
    };
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        mock.as_ref()
            .expect("mock started above")
            .bootstrap_servers()
    });

    let reporter = Reporter::new(AgentConfig {
        kafka: KafkaConfig {
            bootstrap_servers: bootstrap,
            cluster_name: Some("embedded".into()),
            ..KafkaConfig::default()
        },
        // No ingest URL: collect only. Set `ingest` to ship, and call `reporter.run(token)`.
        ..AgentConfig::default()
    })?;

    // The service's own metric, shipped alongside the cluster's.
    reporter.add_series([Series {
        name: "orders_service_pending_orders".into(),
        labels: vec![Label {
            name: "cluster".into(),
            value: "embedded".into(),
        }],
        samples: vec![Sample {
            timestamp_ms: 0,
            value: 42.0,
        }],
    }]);

    let batch = reporter.collect_batch().await?;
    println!("{} series, e.g.:", batch.series.len());
    for s in batch
        .series
        .iter()
        .filter(|s| s.name.contains("offline") || s.name.starts_with("orders_"))
        .take(4)
    {
        println!(
            "  {} {:?} = {}",
            s.name,
            s.labels
                .iter()
                .map(|l| format!("{}={}", l.name, l.value))
                .collect::<Vec<_>>(),
            s.samples[0].value
        );
    }
    Ok(())
}
